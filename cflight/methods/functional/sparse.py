"""l_p geometry in image space: the exact LMO over ``B_p(x, ε) ∩ [0,1]^d``, projections onto ball ∩ box,
steepest-ascent directions, and the Auto-Frank-Wolfe / APGD / PGD loops (spec dvce_svce.md §3.2–3.3).

Everything is per sample: tensors have the batch dimension first, a radius is a scalar or ``[B]``, and a
batch gives the same numbers as a loop over its rows. The optimisation loops are model-free: they take a
``loss_grad(z) -> (loss [B], grad like z, aux)`` callable (``aux`` is any ``[B, ...]`` tensor or ``None``,
e.g. the model output, kept for the returned iterate so nothing is evaluated twice) and *maximise* the loss.

What is implemented (all exact; solved in float64 for float64 inputs, otherwise in float32 with float64
sums, and returned in the input's dtype):

* :func:`lp_box_lmo`: ``argmax ⟨w, δ⟩ s.t. ‖δ‖_p ≤ ε, 0 ≤ x+δ ≤ 1`` for any ``p > 1`` by the KKT form
  ``δ_i = sign(w_i)·min(u_i, τ·|w_i|^{1/(p−1)})`` (``u`` = box capacity along ``sign w``); the scale ``τ`` is
  found by sorting the per-coordinate saturation thresholds and solving the one segment where the norm
  constraint becomes tight (spec §3.2; equivalent to the reference's binary search over the sorted split).
* :func:`project_l2_box`: the Euclidean projection onto ``B_2(x, ε) ∩ [0,1]^d``, which is
  ``clip(x + t·(z − x), 0, 1)`` for the ``t ∈ (0, 1]`` making the norm tight — the same sorted solve with
  ``p = 2``. (AutoAttack's APGD-l2 instead rescales then clips, a feasible but not nearest point.)
* :func:`project_l1_box`: the Euclidean projection onto ``B_1(x, ε) ∩ [0,1]^d`` (Croce & Hein 2021, "Mind
  the box"): ``δ_i = sign(d_i)·min(max(|d_i| − λ, 0), u_i)``, soft-thresholding then clipping to the box,
  with ``λ ≥ 0`` found exactly from the sorted breakpoints of the piecewise-linear ``Σ_i δ_i(λ)``.
* :func:`project_linf_box`: coordinate-wise clipping (exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = ["NORMS", "AFWResult", "afw", "apgd", "checkpoint_iterations", "lp_box_lmo", "lp_norm", "pgd",
           "project_l1_box", "project_l2_box", "project_linf_box", "project_lp_box", "random_start",
           "steepest_ascent", "transfer_radius"]

NORMS = ("linf", "l2", "l1")
LossGrad = Callable[[Tensor], tuple[Tensor, Tensor, Tensor | None]]


# ----------------------------------------------------------------------------------------------- helpers
def _radius(eps: float | Tensor, b: int, ref: Tensor) -> Tensor:
    """``eps`` as a float64 ``[B]`` tensor on ``ref``'s device (scalar broadcast)."""
    e = torch.as_tensor(eps, dtype=torch.float64, device=ref.device).reshape(-1)
    if e.numel() == 1:
        e = e.expand(b)
    if e.numel() != b:
        raise ValueError(f"eps has {e.numel()} entries for a batch of {b}")
    if bool((e < 0).any()) or not bool(torch.isfinite(e).all()):
        raise ValueError("eps must be finite and >= 0")
    return e


def _rows(t: Tensor, like: Tensor) -> Tensor:
    """A ``[B]`` tensor reshaped to broadcast against ``like`` ``[B, ...]``."""
    return t.reshape(-1, *([1] * (like.ndim - 1)))


def lp_norm(v: Tensor, p: float) -> Tensor:
    """Per-sample ``‖v‖_p`` over all non-batch dimensions → ``[B]`` (``p = inf`` allowed)."""
    return torch.linalg.vector_norm(v.flatten(1), ord=p, dim=1)


def transfer_radius(eps: float, p: float, d_old: int, d_new: int) -> float:
    """Carry an l_p radius to another input dimension at a fixed per-pixel budget (spec §5.2 item 6).

    ``ε_new = ε_old·(d_new/d_old)^{1/p}`` (``p = inf``: unchanged). Example: SVCE's ImageNet l1.5 radius 50
    at ``d = 3·224²`` gives ≈ 1.56 at MNIST's ``d = 28²``. A heuristic: calibrate by the confidence reached.
    """
    if p <= 0:
        raise ValueError(f"p must be > 0, got {p}")
    if d_old < 1 or d_new < 1:
        raise ValueError(f"dimensions must be >= 1, got {d_old}, {d_new}")
    return float(eps) if math.isinf(p) else float(eps) * (d_new / d_old) ** (1.0 / p)


def _pow(t: Tensor, e: float) -> Tensor:
    """``t ** e`` for ``t ≥ 0`` with cheap paths for the exponents of p ∈ {1.5, 2, 3} (pow is slow on CPU)."""
    if e == 1:
        return t
    if e == 2:
        return t * t
    if e == 3:
        return t * t * t
    if e == 1.5:
        return t * t.sqrt()
    if e == 0.5:
        return t.sqrt()
    return t.pow(e)


def _sort_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise ``(sorted values, permutation)`` of a non-negative finite ``[B, d]`` tensor.

    The sort is the LMO's dominant cost. On CPU, ``torch.sort`` is several times slower than numpy, and a
    numpy argsort slows down on the many ties (zeros) of image thresholds; for float32 the row index is packed
    into the low bits of an int64 key built from the float's bit pattern (monotone for non-negative floats),
    so a plain, vectorised value sort gives both the sorted values and the permutation. On GPU: ``torch.sort``.
    """
    if t.device.type != "cpu":
        return torch.sort(t, dim=1)
    n = t.shape[1]
    if t.dtype == torch.float32 and n > 1:
        bits = max(1, (n - 1).bit_length())
        key = (t.contiguous().view(torch.int32).to(torch.int64) << bits) | torch.arange(n)
        key = torch.from_numpy(np.sort(key.numpy(), axis=1))
        order = key & ((1 << bits) - 1)
        return (key >> bits).to(torch.int32).view(torch.float32), order
    order = torch.from_numpy(np.argsort(t.detach().numpy(), axis=1))
    return t.gather(1, order), order


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float64 inputs are solved in float64, anything else in float32 (sums always accumulate in float64)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _saturating_scale(up: Tensor, cp: Tensor, eps_p: Tensor) -> Tensor:
    """The ``T = τ^p ≥ 0`` with ``Σ_i min(u_i, τ c_i)^p = ε^p`` per row (``+inf`` where ``Σ u^p ≤ ε^p``).

    Works in "power space": ``up = u^p``, ``cp = c^p`` (``[B, d]``, non-negative, finite) and
    ``eps_p = ε^p`` (float64 ``[B]``), so ``g(T) = Σ_i min(up_i, T·cp_i)``, continuous and
    non-decreasing, with coordinate ``i`` saturating at ``T_i = up_i / cp_i``. With the thresholds sorted,
    ``g`` at the ``k``-th is the saturated prefix ``Σ_{j≤k} up_j`` plus ``T_k·Σ_{j>k} cp_j``; the count of
    thresholds with ``g ≤ ε^p`` is the number of saturated coordinates, and on that segment
    ``T = (ε^p − Σ_sat up) / Σ_free cp`` exactly.
    """
    b, n = up.shape
    # cp = 0 (no ascent direction, or c underflowed) gives a huge finite threshold: never saturating, and
    # contributing nothing to the free sums; up = 0 gives threshold 0: saturated at zero from the start.
    thr = up / cp.clamp_min(torch.finfo(cp.dtype).tiny)
    thr_s, order = _sort_rows(thr)
    thr_s = thr_s.double()
    sat = up.gather(1, order).cumsum(1, dtype=torch.float64)  # Σ_{j ≤ k} up_j
    suffix = cp.gather(1, order).flip(1).cumsum(1, dtype=torch.float64).flip(1)  # Σ_{j ≥ k} cp_j (no cancellation)
    free_after = torch.cat([suffix[:, 1:], suffix.new_zeros(b, 1)], dim=1)  # Σ_{j > k} cp_j
    g = sat + thr_s * free_after
    corner = sat[:, -1] <= eps_p  # Σ u^p ≤ ε^p: the whole box corner fits
    k = (g <= eps_p[:, None]).sum(1)  # saturated coordinates (a prefix: g is non-decreasing along the sort)
    s_sat = torch.where(k > 0, sat.gather(1, (k - 1).clamp_min(0)[:, None]).squeeze(1), torch.zeros_like(eps_p))
    c_free = torch.where(k < n, suffix.gather(1, k.clamp_max(n - 1)[:, None]).squeeze(1), torch.zeros_like(eps_p))
    t = (eps_p - s_sat).clamp_min(0) / c_free.clamp_min(torch.finfo(torch.float64).tiny)
    t = torch.where(c_free > 0, t, torch.zeros_like(t))
    return torch.where(corner, torch.full_like(t, math.inf), t)


def _capacity(x: Tensor, sign: Tensor) -> Tensor:
    """Box capacity ``u`` along ``sign`` ∈ {−1, 0, 1}: ``1 − x`` (up), ``x`` (down), 0 (no direction).

    Arithmetic rather than ``torch.where`` (bool kernels are several times slower on CPU):
    ``|s|·(½ + s(½ − x))``."""
    return ((0.5 - x) * sign + 0.5).mul_(sign.abs()).clamp_min_(0)


def _point(x: Tensor, delta: Tensor) -> Tensor:
    """``clip(x + δ, 0, 1)`` for a flat ``[B, d]`` step ``δ``, in ``x``'s shape and dtype."""
    return (x + delta.to(x.dtype).reshape(x.shape)).clamp(0, 1)


# ------------------------------------------------------------------------------------------- LMO (§3.2)
def lp_box_lmo(x: Tensor, w: Tensor, eps: float | Tensor, p: float) -> Tensor:
    """Exact linear maximisation oracle ``argmax_δ ⟨w, δ⟩ s.t. ‖δ‖_p ≤ ε, 0 ≤ x+δ ≤ 1`` (spec §3.2).

    Args:
        x: ``[B, ...]`` points in [0, 1] (the ball's centres).
        w: ``[B, ...]`` directions (gradient or momentum).
        eps: radius, a scalar or ``[B]`` (0 gives δ = 0).
        p: the norm, ``p > 1`` (``p = inf`` is ``ε·sign(w)`` clipped to the box).
    Returns:
        ``δ`` like ``x``: sign-aligned with ``w``, zero where ``w = 0`` or the box allows no move, on the
        sphere ``‖δ‖_p = ε`` unless the whole box corner ``sign(w)⊙u`` fits inside the ball (then the corner).
    """
    return _lmo_point(x, w, eps, p) - x


def _lmo_point(x: Tensor, w: Tensor, eps: float | Tensor, p: float) -> Tensor:
    """``x + LMO(x, w)`` (the Frank-Wolfe vertex ``s``), exactly inside the box."""
    if not p > 1:
        raise ValueError(f"the LMO needs p > 1, got p={p}")
    b = x.shape[0]
    eps64 = _radius(eps, b, x)
    cdt = _compute_dtype(x)
    xf, wf = x.reshape(b, -1).to(cdt), w.reshape(b, -1).to(cdt)
    sgn = wf.sign()
    u = _capacity(xf, sgn)
    if math.isinf(p):
        return _point(x, sgn * torch.minimum(u, eps64.to(cdt)[:, None].expand_as(u)))
    # Scale invariance of the LMO: normalise by the largest |w| so |w|^{1/(p−1)} neither over- nor
    # underflows for moderate p (p close to 1 makes the exponent large). Where u = 0 the threshold is 0:
    # the coordinate is "saturated" at 0 and contributes nothing.
    a = wf.abs()
    a = a / a.amax(1, keepdim=True).clamp_min(torch.finfo(cdt).tiny)
    c = _pow(a, 1.0 / (p - 1))
    t = _saturating_scale(_pow(u, p), _pow(a, p / (p - 1)), eps64.pow(p))  # τ^p
    tau = t.clamp_max(torch.finfo(cdt).max).pow(1.0 / p).to(cdt)[:, None]
    d = torch.minimum(u, tau * c)
    corner = torch.isinf(t)
    if bool(corner.any()):  # the whole corner fits (also where c underflowed to 0 for p close to 1)
        d = torch.where(corner[:, None], u, d)
    return _point(x, sgn * d)


# ------------------------------------------------------------------------------------------ projections
def project_linf_box(z: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
    """Projection of ``z`` onto ``{‖z − x‖_∞ ≤ ε} ∩ [0,1]^d`` (exact: coordinate-wise clipping)."""
    e = _rows(_radius(eps, x.shape[0], x).to(x.dtype), x)
    return torch.minimum(torch.maximum(z, x - e), x + e).clamp(0, 1)


def _step_in_box(z: Tensor, x: Tensor, eps: float | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For projecting ``z`` onto a ball around ``x`` ∩ box: ``(ε [B] float64, sign(d), box capacity u along
    sign(d), |d|)`` with ``d = z − x`` flattened to ``[B, D]`` in the compute dtype."""
    b = x.shape[0]
    cdt = _compute_dtype(x)
    xf, d = x.reshape(b, -1).to(cdt), (z - x).reshape(b, -1).to(cdt)
    sgn = d.sign()
    return _radius(eps, b, x), sgn, _capacity(xf, sgn), d.abs()


def project_l2_box(z: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
    """Euclidean projection of ``z`` onto ``B_2(x, ε) ∩ [0,1]^d`` (exact).

    KKT: the projection is ``clip(x + t·(z − x), 0, 1)`` with ``t = 1`` when that point is inside the ball,
    else the ``t < 1`` putting it on the sphere; ``‖clip(x + t d) − x‖`` is the sorted-threshold function of
    :func:`lp_box_lmo` with ``p = 2``, solved exactly.
    """
    eps64, sgn, u, a = _step_in_box(z, x, eps)
    t = _saturating_scale(u * u, a * a, eps64 * eps64).sqrt().clamp_max(1.0).to(a.dtype)
    return _point(x, sgn * torch.minimum(u, t[:, None] * a))


def project_l1_box(z: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
    """Euclidean projection of ``z`` onto ``B_1(x, ε) ∩ [0,1]^d`` (exact; the projection of APGD-l1).

    With ``d = z − x``: ``δ_i = sign(d_i)·clamp(|d_i| − λ, 0, u_i)``, ``u`` the box capacity along
    ``sign(d_i)`` (per coordinate the prox of ``λ|·|`` restricted to an interval is the clipped
    soft-threshold). ``λ = 0`` when ``clip(z)`` is inside the ball; otherwise ``S(λ) = Σ_i clamp(|d_i| − λ,
    0, u_i)`` is piecewise linear and non-increasing with breakpoints ``|d_i| − u_i`` (slope −1 begins) and
    ``|d_i|`` (it ends); ``S`` at the sorted breakpoints comes from cumulative sums and ``S(λ) = ε`` is solved
    on the crossing segment.
    """
    eps64, sgn, u, a = _step_in_box(z, x, eps)
    inside = torch.minimum(a, u).sum(1, dtype=torch.float64) <= eps64
    bp = torch.cat([a - u, a], dim=1)
    dslope = torch.cat([-torch.ones_like(a), torch.ones_like(a)], dim=1)
    bp, order = _sort_rows(bp + 1)  # breakpoints are ≥ −u ≥ −1: shifted to sort non-negative values
    bp = bp.double() - 1
    slope = dslope.gather(1, order).double().cumsum(1)  # slope of S right of each breakpoint
    seg = (bp[:, 1:] - bp[:, :-1]) * slope[:, :-1]
    u_sum = u.sum(1, keepdim=True, dtype=torch.float64)
    s_at = torch.cat([u_sum, u_sum + seg.cumsum(1)], dim=1)  # S(bp_j)
    j = ((s_at > eps64[:, None]).sum(1) - 1).clamp(0, bp.shape[1] - 1)  # last breakpoint with S > ε
    s_j = s_at.gather(1, j[:, None]).squeeze(1)
    sl = slope.gather(1, j[:, None]).squeeze(1)
    lam = bp.gather(1, j[:, None]).squeeze(1) + (s_j - eps64) / (-sl).clamp_min(1.0)
    lam = torch.where(inside, torch.zeros_like(lam), lam.clamp_min(0)).to(a.dtype)
    return _point(x, sgn * torch.minimum((a - lam[:, None]).clamp_min(0), u))


def project_lp_box(z: Tensor, x: Tensor, eps: float | Tensor, norm: str) -> Tensor:
    """Projection onto ``B_norm(x, ε) ∩ [0,1]^d`` for ``norm`` in ``("linf", "l2", "l1")``."""
    if norm == "linf":
        return project_linf_box(z, x, eps)
    if norm == "l2":
        return project_l2_box(z, x, eps)
    if norm == "l1":
        return project_l1_box(z, x, eps)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def steepest_ascent(g: Tensor, norm: str, sparsity: float | Tensor = 0.01) -> Tensor:
    """Unit steepest-ascent direction of ``g`` for a norm (per sample).

    ``linf``: ``sign(g)``; ``l2``: ``g/‖g‖₂``; ``l1``: the sparse direction of SLIDE / APGD-l1 — ``sign(g)`` on
    the ``⌈sparsity·d⌉`` largest ``|g_i|`` (ties at the threshold included), divided by their count (unit
    l1 norm). ``sparsity`` is a fraction in (0, 1], scalar or ``[B]``. Zero gradients give zero directions.
    """
    if norm == "linf":
        return g.sign()
    if norm == "l2":
        return g / _rows(lp_norm(g, 2), g).clamp_min(1e-12)
    if norm != "l1":
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    b = g.shape[0]
    flat = g.reshape(b, -1).abs()
    n = flat.shape[1]
    frac = torch.as_tensor(sparsity, dtype=torch.float64, device=g.device).reshape(-1).expand(b)
    # index of the threshold in ascending order: as AutoAttack's clamp((1 − topk)·n, 0, n − 1)
    idx = ((1 - frac) * n).long().clamp(0, n - 1)
    thr = flat.sort(dim=1).values.gather(1, idx[:, None])
    mask = (flat >= thr) & (flat > 0)
    sgn = g.reshape(b, -1).sign() * mask
    return (sgn / mask.sum(1, keepdim=True).clamp_min(1)).reshape(g.shape)


def random_start(x: Tensor, noise: Tensor, eps: float | Tensor, norm: str) -> Tensor:
    """APGD's random starting point from standard-normal ``noise`` (shape of ``x``), inside ball ∩ box.

    ``linf``: ``x + ε·(2Φ(noise) − 1)`` (uniform in the cube); ``l2``: ``x + ε·noise/‖noise‖`` (on the sphere);
    ``l1``: the projection of ``x + noise``; each then projected onto ball ∩ box.
    """
    e = _rows(_radius(eps, x.shape[0], x).to(x.dtype), x)
    if norm == "linf":
        z = x + e * torch.erf(noise / math.sqrt(2.0))
    elif norm == "l2":
        z = x + e * noise / _rows(lp_norm(noise, 2), x).clamp_min(1e-12)
    elif norm == "l1":
        z = x + noise
    else:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    return project_lp_box(z, x, eps, norm)


# ------------------------------------------------------------------------------ checkpoints (APGD / AFW)
def checkpoint_iterations(n_iter: int) -> list[int]:
    """0-based iterations at which the APGD/AFW step-size checkpoints fire (spec §3.3).

    ``k₀ = max(⌊0.22N⌋, 1)``, then the period shrinks by ``max(⌊0.03N⌋, 1)`` down to ``max(⌊0.06N⌋, 1)``.
    For ``N = 75``: 15, 29, 41, 51, 59, 65, 69, 73.
    """
    k, k_min, decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    out, i = [], k - 1
    while i < n_iter:
        out.append(i)
        k = max(k - decr, k_min)
        i += k
    return out


class _Checkpoints:
    """The APGD rule that flags samples for a step-size reduction (Croce & Hein 2020, spec §3.3 lines 12–17).

    At a checkpoint with period ``k``: ``osc`` = at most ``ρ·k`` of the last ``k`` steps increased the loss;
    ``stall`` = the previous checkpoint did not reduce and the best loss has not improved since. The first
    recorded loss has no predecessor and counts as "no increase" — the reference compares it with a still
    zero row, always false for its non-positive log-confidence losses (a harmless quirk, spec §3.3).
    """

    def __init__(self, n_iter: int, loss_best: Tensor, rho: float) -> None:
        self.k = max(int(0.22 * n_iter), 1)
        self.k_min, self.decr = max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
        self.rho, self.counter = rho, 0
        self.reduced_last = torch.ones_like(loss_best, dtype=torch.bool)
        self.best_last = loss_best.clone()
        self.losses: list[Tensor] = []

    def step(self, loss: Tensor, loss_best: Tensor) -> Tensor | None:
        """Record one iteration's loss; at a checkpoint return the ``[B]`` bool reduce mask, else ``None``."""
        self.losses.append(loss)
        self.counter += 1
        if self.counter < self.k:
            return None
        i, k = len(self.losses) - 1, self.k
        ups = torch.zeros_like(loss)
        for j in range(i - k + 1, i + 1):
            if j >= 1:
                ups = ups + (self.losses[j] > self.losses[j - 1]).to(loss.dtype)
        osc = ups <= self.rho * k
        stall = ~self.reduced_last & (self.best_last >= loss_best)
        reduce = osc | stall
        self.reduced_last, self.best_last = reduce, loss_best.clone()
        self.k = max(self.k - self.decr, self.k_min)
        self.counter = 0
        return reduce


@dataclass
class AFWResult:
    """Outcome of :func:`afw` / :func:`apgd` / :func:`pgd` (per sample, batch first).

    ``x``: the best-loss iterate (or the last, for ``pgd(keep_best=False)``); ``loss``: its loss; ``aux``: the
    ``aux`` that ``loss_grad`` returned for it; ``loss0``: the loss at the starting point; ``trace``: with
    ``record=True``, per-iteration ``loss``, ``loss_best``, ``step`` (the step size used), ``reduced`` (bool, a
    checkpoint reduced the step) as ``[N, B]`` tensors and ``iterates`` ``[N + 1, B, ...]``.
    """

    x: Tensor
    loss: Tensor
    aux: Tensor | None
    loss0: Tensor
    trace: dict[str, Tensor] = field(default_factory=dict)


class _Best:
    """Per-sample best-loss tracker (strict improvement, as the reference)."""

    def __init__(self, x: Tensor, loss: Tensor, grad: Tensor, aux: Tensor | None) -> None:
        self.x, self.loss, self.grad = x.clone(), loss.clone(), grad.clone()
        self.aux = None if aux is None else aux.clone()

    def update(self, x: Tensor, loss: Tensor, grad: Tensor, aux: Tensor | None) -> None:
        better = loss > self.loss
        self.loss = torch.where(better, loss, self.loss)
        self.x, self.grad = _select(better, x, self.x), _select(better, grad, self.grad)
        if aux is not None and self.aux is not None:
            self.aux = _select(better, aux, self.aux)


def _select(rows: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Rows of ``a`` where ``rows`` ``[B]`` is true, else of ``b``: an exact ``lerp`` with 0/1 weights (much
    faster than a broadcast ``torch.where`` on CPU; ``lerp(b, a, 1) == a`` and ``lerp(b, a, 0) == b``)."""
    return torch.lerp(b, a, _rows(rows, a).to(a.dtype))


def _stack_trace(trace: dict[str, list[Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack(v) for k, v in trace.items() if v}


# -------------------------------------------------------------------------------------------- AFW (§3.3)
def afw(x: Tensor, loss_grad: LossGrad, eps: float | Tensor, p: float = 1.5, steps: int = 75,
        step_rule: str = "v1", eta0: float = 0.75, alpha0: float = 2.0, rho: float = 0.75,
        momentum: float = 0.0, init_dir: Tensor | None = None, record: bool = False) -> AFWResult:
    """Auto-Frank-Wolfe over ``B_p(x, ε) ∩ [0,1]^d``, maximising ``loss`` (spec §3.3, ``AFWAttack``).

    ``x₀ = x + LMO(x, ξ)`` (``ξ = init_dir``; ``None`` starts at ``x`` itself); then for ``i = 0…N−1``:
    ``m = g`` (``i = 0``) or ``β·m + (1−β)·g``; ``s = x + LMO(x, m)`` around the *original* ``x``;
    ``x_{i+1} = x_i + η_i(s − x_i)``; record the loss; keep the best. At the APGD checkpoints
    (:func:`checkpoint_iterations`) samples that oscillate or stall reduce their step and restart from
    their best iterate and its gradient (the momentum is kept). Returns the best-loss iterate.

    Args:
        step_rule: ``"v1"`` (SVCE paper code: constant ``η = eta0 = 0.75``, halved at a reduction) or
            ``"v2"`` (DVCE repo, 2023: ``η_i = α/(√i + 2)`` with ``α = alpha0 = 2``, ``α ← 0.75α`` at a reduction).
        rho: the oscillation constant ρ; ``momentum``: β (0 in the released code).
        record: keep a per-iteration trace (and every iterate) in ``AFWResult.trace``.
    """
    if step_rule not in ("v1", "v2"):
        raise ValueError(f"step_rule must be 'v1' or 'v2', got {step_rule!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    x = x.detach()
    eps64 = _radius(eps, x.shape[0], x)
    x_cur = x if init_dir is None else _lmo_point(x, init_dir, eps64, p)
    loss, g, aux = loss_grad(x_cur)
    best, loss0 = _Best(x_cur, loss, g, aux), loss.clone()
    ctrl = _Checkpoints(steps, loss, rho)
    scale = torch.full_like(loss, eta0 if step_rule == "v1" else alpha0)
    trace: dict[str, list[Tensor]] = {"loss": [], "loss_best": [], "step": [], "reduced": [], "iterates": []}
    if record:
        trace["iterates"].append(x_cur.clone())
    m = g
    for i in range(steps):
        m = g if (i == 0 or momentum == 0) else momentum * m + (1 - momentum) * g
        s = _lmo_point(x, m, eps64, p)  # LMO around the original x
        eta = scale if step_rule == "v1" else scale / (math.sqrt(i) + 2)
        x_cur = torch.lerp(x_cur, s, _rows(eta, x_cur).to(x.dtype)).clamp_(0, 1)
        loss, g, aux = loss_grad(x_cur)
        best.update(x_cur, loss, g, aux)
        reduce = ctrl.step(loss, best.loss)
        if record:
            trace["iterates"].append(x_cur.clone())
            trace["loss"].append(loss.clone())
            trace["loss_best"].append(best.loss.clone())
            trace["step"].append(eta.clone())
            trace["reduced"].append(torch.zeros_like(loss, dtype=torch.bool) if reduce is None else reduce)
        if reduce is not None and bool(reduce.any()):
            scale = torch.where(reduce, scale * (0.5 if step_rule == "v1" else 0.75), scale)
            x_cur, g = _select(reduce, best.x, x_cur), _select(reduce, best.grad, g)
    return AFWResult(best.x, best.loss, best.aux, loss0, _stack_trace(trace) if record else {})


# ------------------------------------------------------------------------------------------------- APGD
def apgd(x: Tensor, loss_grad: LossGrad, eps: float | Tensor, norm: str = "l2", steps: int = 100,
         rho: float = 0.75, momentum: float = 0.75, x_init: Tensor | None = None,
         record: bool = False) -> AFWResult:
    """APGD (Croce & Hein 2020; l1: "Mind the box", 2021) maximising ``loss`` over ``B_norm(x, ε) ∩ box``.

    l∞ / l2: step ``η = 2ε`` per sample; ``x₁ = P(x₀ + η·dir(g₀))``; afterwards
    ``z = P(x_i + η·dir(g_i))`` and ``x_{i+1} = P(x_i + a(z − x_i) + (1 − a)(x_i − x_{i−1}))`` with
    ``a = momentum = 0.75``; at the checkpoints of :func:`checkpoint_iterations` oscillating/stalling samples
    halve ``η`` and restart from their best iterate and gradient. ``dir`` is :func:`steepest_ascent` and
    ``P`` the exact projection onto ball ∩ box.

    l1 (AutoAttack's APGD-l1 semantics): no momentum; step ``η = ε``; the direction is the sparse
    sign of the top ``s·d`` gradient entries, ``s = 0.2`` at first; every ``max(⌊0.04N⌋, 1)`` iterations
    ``s ← ‖x_best − x‖₀/(1.5 d)`` and, if the support of the best iterate shrank by more than 5 %, ``η`` is
    reset to ``ε`` and the sample restarts from its best iterate, else ``η ← η/1.5``; ``η ∈ [ε/10, ε]``.

    ``x_init`` is the starting point (already in ball ∩ box), default ``x``. Returns the best-loss iterate.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    x = x.detach()
    b, n_fts = x.shape[0], x[0].numel()
    eps64 = _radius(eps, b, x)
    x_cur = x.clone() if x_init is None else x_init.detach().clone()
    loss, g, aux = loss_grad(x_cur)
    best, loss0 = _Best(x_cur, loss, g, aux), loss.clone()
    base = (1.0 if norm == "l1" else 2.0) * eps64.to(x.dtype)
    eta = base.clone()
    l1 = norm == "l1"
    ctrl = _Checkpoints(steps, loss, rho)
    l1_period, counter = max(int(0.04 * steps), 1), 0
    sparsity = torch.full((b,), 0.2, dtype=torch.float64, device=x.device)
    sp_old = torch.full((b,), float(n_fts), dtype=torch.float64, device=x.device)
    x_prev = x_cur.clone()
    trace: dict[str, list[Tensor]] = {"loss": [], "loss_best": [], "step": [], "reduced": [], "iterates": []}
    if record:
        trace["iterates"].append(x_cur.clone())
    for i in range(steps):
        direction = steepest_ascent(g, norm, sparsity)
        z = project_lp_box(x_cur + _rows(eta, x) * direction, x, eps64, norm)
        if not l1 and i > 0:
            z = project_lp_box(x_cur + momentum * (z - x_cur) + (1 - momentum) * (x_cur - x_prev), x, eps64, norm)
        x_prev, x_cur = x_cur, z
        loss, g, aux = loss_grad(x_cur)
        best.update(x_cur, loss, g, aux)
        step_used = eta.clone()
        if l1:
            counter += 1
            reduce = None
            if counter == l1_period:
                counter = 0
                sp_cur = (best.x != x).flatten(1).sum(1).double()
                reduce = (sp_cur / sp_old) < 0.95
                sparsity = sp_cur / n_fts / 1.5
                eta = torch.where(reduce, base, eta / 1.5)
                eta = torch.minimum(torch.maximum(eta, base / 10), base)
                sp_old = sp_cur
        else:
            reduce = ctrl.step(loss, best.loss)
            if reduce is not None:
                eta = torch.where(reduce, eta / 2, eta)
        if record:
            trace["iterates"].append(x_cur.clone())
            trace["loss"].append(loss.clone())
            trace["loss_best"].append(best.loss.clone())
            trace["step"].append(step_used)
            trace["reduced"].append(torch.zeros_like(loss, dtype=torch.bool) if reduce is None else reduce)
        if reduce is not None and bool(reduce.any()):
            x_cur, g = _select(reduce, best.x, x_cur), _select(reduce, best.grad, g)
    return AFWResult(best.x, best.loss, best.aux, loss0, _stack_trace(trace) if record else {})


# -------------------------------------------------------------------------------------------------- PGD
def pgd(x: Tensor, loss_grad: LossGrad, eps: float | Tensor, norm: str = "l2", steps: int = 10,
        step_size: float | Tensor | None = None, x_init: Tensor | None = None, keep_best: bool = True,
        l1_sparsity: float = 0.01, record: bool = False) -> AFWResult:
    """Projected gradient ascent (Madry et al. 2018): ``x_{i+1} = P(x_i + η·dir(g_i))``.

    ``dir`` is :func:`steepest_ascent` (``l1``: the top ``l1_sparsity`` fraction, SLIDE of Tramèr & Boneh
    2019); ``P`` the exact projection onto ball ∩ box; ``η = step_size`` (default ``2.5ε/steps``, the
    robustness library's rule, so the boundary is reachable from any start). ``x_init``: the start (default
    ``x``). ``keep_best``: return the best-loss iterate among ``x₀…x_N`` (``N + 1`` evaluations); otherwise
    the last iterate ``x_N`` after ``N`` evaluations, itself not evaluated (``loss`` NaN, ``aux`` ``None``) —
    what adversarial training needs.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    x = x.detach()
    b = x.shape[0]
    eps64 = _radius(eps, b, x)
    eta = (2.5 * eps64 / max(steps, 1) if step_size is None else _radius(step_size, b, x)).to(x.dtype)
    x_cur = x.clone() if x_init is None else x_init.detach().clone()
    trace: dict[str, list[Tensor]] = {"loss": [], "iterates": []}
    best, loss0 = None, None
    if record:
        trace["iterates"].append(x_cur.clone())
    for i in range(steps + int(keep_best)):  # keep_best: one more evaluation, of the last iterate
        loss, g, aux = loss_grad(x_cur)
        if best is None:
            best, loss0 = _Best(x_cur, loss, g, aux), loss.clone()
        else:
            best.update(x_cur, loss, g, aux)
        if record:
            trace["loss"].append(loss.clone())
        if i == steps:
            break
        x_cur = project_lp_box(x_cur + _rows(eta, x) * steepest_ascent(g, norm, l1_sparsity), x, eps64, norm)
        if record:
            trace["iterates"].append(x_cur.clone())
    if not keep_best:
        nan = torch.full((b,), math.nan, dtype=x.dtype, device=x.device)
        return AFWResult(x_cur, nan, None, nan if loss0 is None else loss0, _stack_trace(trace) if record else {})
    return AFWResult(best.x, best.loss, best.aux, loss0, _stack_trace(trace) if record else {})
