"""Counter-based per-sample random numbers, generated on the tensor's device (DESIGN.md §3 "Randomness").

Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3", SC'11) in
vectorised torch integer ops: int64 tensors hold 32-bit words, and the 32×32→64-bit multiply is split into
16-bit halves of the counter word so no partial product leaves int64.

Layout (one 128-bit counter per 4-word block of a row, 64-bit key):

    key      = (seed mod 2^32, seed >> 32)                 the 64-bit job seed
    counter0 = element block j of the row                  32 bits
    counter1 = stream << 24 | step                         8 + 24 bits
    counter2 = dataset index, low 32 bits
    counter3 = dataset index, high 32 bits                 (int64 two's complement: all 64 bits)

Row ``b`` of a draw is therefore a pure function of ``(seed, stream, index[b], step)``: it does not depend on
the batch, its order, its size or the number of processes. Distinct purposes use distinct :class:`Stream` ids
(listed here so no two users of one job seed share counters); the step is an explicit counter word instead
of being mixed into the seed. Nothing is created on the CPU when the target device is not the CPU: the
counters are built with ``arange`` on the device and the key and constants are Python ints.

Elements: block ``j`` gives elements ``2j, 2j + 1`` of the flattened row — uniforms ``u1`` from words (0, 1),
``u2`` from words (2, 3); normals ``√(−2 ln u1)·(cos, sin)(2π u2)`` (Box–Muller). An ``index`` living on
another device is moved to ``device`` (B integers) before anything is drawn.

Precision: uniforms take 53 bits (two words) and Box–Muller runs in float64, then the result is cast to the
requested dtype. On devices without float64 (Apple ``mps``) uniforms take 24 bits of one word and the math
runs in float32 (so numbers there differ from CPU/CUDA ones).
"""
from __future__ import annotations

import math
from enum import IntEnum

import torch
from einops import rearrange
from torch import Tensor

__all__ = ["Stream", "per_sample_normal", "per_sample_randint", "per_sample_uniform", "philox4x32"]

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox4x32 multipliers (Random123 PHILOX_M4x32_0/1)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments (golden ratio, sqrt(3) − 1)
STREAM_BITS, STEP_BITS = 8, 24


class Stream(IntEnum):
    """Stream ids of the package's random draws, one per purpose (0 is the unassigned default)."""

    LATENT_INIT = 1  # LatentAttack: reparameterised initial latent
    RANDOM_START = 2  # PGD / SVCE random start; step = restart number
    DIFFUSION_START = 3  # DVCE: noise of the late start q(x_t | x_0)
    DIFFUSION_STEP = 4  # DVCE: ancestral noise; step = respaced timestep
    AUGMENT = 5  # DVCE: augmentation uniforms of the explained model; step = respaced timestep
    AUGMENT_ROBUST = 6  # ... of the robust model
    PROJECTION = 7  # GANManifold: initial latent candidates
    EVAL_TIMESTEP = 8  # DDPMModule evaluation: timesteps
    EVAL_NOISE = 9  # DDPMModule evaluation: ε
    EVAL_ATTACK = 10  # AdversarialTrainingModule evaluation: PGD random start
    FIXED_SAMPLES = 11  # VAE/GAN logged sample grids: prior samples, index = grid position
    ACRE_CHAIN = 12  # AC-RE / ACE: noise of R_τ; step = iteration·(τ + 1) + (0: start, 1 + t: step t)
    ACRE_INPAINT = 13  # ... inpainting pass; step 0: start, 1 + t: known region, 1 + τ + t: step t
    SFID_FOLD = 14  # sFID: fold of an image in split ``step``
    KID_CAP = 15  # KID: priority of an image for the bounded feature store
    KID_SUBSET = 16  # KID: subset draws
    DIME_START = 17  # DiME: noise of z_τ = q(x_τ | x_0)
    DIME_STEP = 18  # DiME: guided chain noise; step = scale number·τ + t
    DIME_CLEAN = 19  # DiME: clean-estimate chain noise; step = (scale number·τ + t)·τ + t'


def _mulhilo(a: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """``(hi, lo)`` 32-bit words of ``a·m`` for 32-bit words ``a`` (int64) and a 32-bit constant ``m``.

    ``a = a_hi·2^16 + a_lo``: both partial products stay below 2^48 and their recombination below 2^49.
    In-place on fresh temporaries: allocation dominates these elementwise kernels on the CPU.
    """
    p = (a >> 16).mul_(m)
    q = (a & 0xFFFF).mul_(m)
    s = (p & 0xFFFF).bitwise_left_shift_(16).add_(q)  # a·m = (p >> 16)·2^32 + s
    return p.bitwise_right_shift_(16).add_(s >> 32), s.bitwise_and_(_MASK32)


def philox4x32(counter: tuple[Tensor | int, Tensor | int, Tensor | int, Tensor | int], key: tuple[int, int],
               rounds: int = 10) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32-``rounds`` of broadcastable 32-bit counter words (int64 tensors; ``c1``, ``c3`` may be
    ints) → 4 words.

    Random123's ``philox4x32_R``: a round maps ``(c0, c1, c2, c3)`` to ``(hi(M1·c2) ^ c1 ^ k0, lo(M1·c2),
    hi(M0·c0) ^ c3 ^ k1, lo(M0·c0))``; the key is bumped by the Weyl constants between rounds.
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3  # type: ignore[return-value]


def _key(seed: int) -> tuple[int, int]:
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")
    return seed & _MASK32, seed >> 32


def _has_float64(device: torch.device) -> bool:
    return device.type != "mps"


def _uniform_blocks(seed: int, index: Tensor, stream: int, step: int, n_blocks: int, wide: bool) -> Tensor:
    """Uniforms in (0, 1] ``[B, n_blocks, k]``: ``k = 2`` of 53 bits (float64) or, not ``wide``, 4 of 24
    bits (float32), from the Philox blocks ``j < n_blocks`` of each row."""
    stream, step = int(stream), int(step)
    if not 0 <= stream < 2**STREAM_BITS or not 0 <= step < 2**STEP_BITS:
        raise ValueError(f"stream must be in [0, {2**STREAM_BITS}) and step in [0, {2**STEP_BITS}), "
                         f"got {stream}, {step}")
    if n_blocks > 2**32:
        raise ValueError(f"a row needs {n_blocks} Philox blocks, more than the 2^32 of one counter word")
    idx = index.to(torch.int64)[:, None]
    block = torch.arange(n_blocks, dtype=torch.int64, device=index.device)
    w = philox4x32((block, stream << STEP_BITS | step, idx & _MASK32, (idx >> 32) & _MASK32), _key(seed))
    w = [wi.expand(idx.shape[0], n_blocks) for wi in w]  # early words broadcast to rows or blocks only
    if wide:
        pairs = [(w[0] << 21) | (w[1] >> 11), (w[2] << 21) | (w[3] >> 11)]  # 53 bits each
        return (torch.stack(pairs, -1) + 1).to(torch.float64) * 2.0**-53
    return (torch.stack([wi >> 8 for wi in w], -1) + 1).to(torch.float32) * 2.0**-24


def _draw(kind: str, shape: tuple[int, ...], seed: int, index: Tensor, stream: int, step: int,
          device: torch.device | str | None, dtype: torch.dtype) -> Tensor:
    if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
        raise TypeError(f"index must be an integer tensor, got {index.dtype}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be floating point, got {dtype}")
    device = index.device if device is None else torch.device(device)
    index = index.reshape(-1).to(device)
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    wide = _has_float64(device)
    k = 2 if wide else 4  # values per block
    u = _uniform_blocks(seed, index, stream, step, -(-n // k), wide)  # [B, n_blocks, k]
    if kind == "normal":  # Box–Muller on consecutive pairs (u1, u2)
        u1, u2 = u[..., 0::2], u[..., 1::2]
        r, theta = (-2.0 * u1.log()).sqrt(), (2.0 * math.pi) * u2
        u = torch.stack([r * theta.cos(), r * theta.sin()], -1)
    values = rearrange(u, "b n ... -> b (n ...)")[:, :n]
    return values.reshape(index.shape[0], *shape).to(dtype)


def per_sample_normal(shape: tuple[int, ...], seed: int, index: Tensor, *, stream: int = 0, step: int = 0,
                      device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normals ``[B, *shape]``; row ``b`` depends only on ``(seed, stream, index[b], step)``.

    Args:
        shape: per-sample shape. seed: 64-bit job seed in ``[0, 2^64)``, the Philox key.
        index: ``[B]`` integer dataset indices (any 64-bit values). stream: a :class:`Stream` id, ``< 2^8``.
        step: iteration / restart counter, ``< 2^24``. device: where to generate (default ``index.device``).
        dtype: of the result (computed in float64 where the device has it).
    """
    return _draw("normal", shape, seed, index, stream, step, device, dtype)


def per_sample_uniform(shape: tuple[int, ...], seed: int, index: Tensor, *, stream: int = 0, step: int = 0,
                       device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
                       ) -> Tensor:
    """U(0, 1] draws ``[B, *shape]``; row ``b`` depends only on ``(seed, stream, index[b], step)``.

    Arguments as :func:`per_sample_normal`. Values are multiples of 2^-53 in (0, 1]; a cast to a narrower
    dtype can round the largest ones to 1. The same arguments give the uniforms the normals are made of, so
    normals and uniforms of one purpose need different streams.
    """
    return _draw("uniform", shape, seed, index, stream, step, device, dtype)


def per_sample_randint(high: int, shape: tuple[int, ...], seed: int, index: Tensor, *, stream: int = 0,
                       step: int = 0, device: torch.device | str | None = None) -> Tensor:
    """Integers uniform in ``[0, high)``, int64 ``[B, *shape]``: ``⌈u·high⌉ − 1`` of the uniforms of
    :func:`per_sample_uniform` (53-bit ``u`` in (0, 1], so the bias is below ``high·2^-53``; 24-bit ``u``
    without float64)."""
    if not 1 <= high <= 2**32:
        raise ValueError(f"high must be in [1, 2^32], got {high}")
    dev = index.device if device is None else torch.device(device)
    dtype = torch.float64 if _has_float64(dev) else torch.float32
    u = _draw("uniform", shape, seed, index, stream, step, dev, dtype)
    return (u * high).ceil().long().sub_(1).clamp_(0, high - 1)
