"""l_p geometry in image space: the exact LMO over ``B_p(x, ε) ∩ [0,1]^d``, projections onto ball ∩ box,
steepest-ascent directions and random starts (spec dvce_svce.md §3.2).

Everything is per sample: tensors have the batch dimension first, a radius is a scalar or ``[B]``, and a
batch gives the same numbers as a loop over its rows.

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
* :class:`BallBox`: one run's set ``B_norm(x, ε) ∩ [0,1]^d``, projecting with what all steps share computed
  once.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from cflight.methods.functional.row_sort import _sort_rows

__all__ = ["NORMS", "NORM_P", "BallBox", "lp_box_lmo", "lp_norm", "project_l1_box", "project_l2_box",
           "project_linf_box", "project_lp_box", "random_start", "steepest_ascent", "transfer_radius"]

NORMS = ("linf", "l2", "l1")
NORM_P = {"linf": math.inf, "l2": 2.0, "l1": 1.0}  # each norm's p, for lp_norm


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


def _sum64(v: Tensor) -> Tensor:
    """Row sums ``[B]`` of ``[B, d]`` in float64: ``v.double().sum(1)``, the same to the bit as ``v.sum(1,
    dtype=torch.float64)`` and about twice as fast on CPU (one vectorised cast, then a float64 reduction)."""
    return v.double().sum(1)


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
def _linf_bounds(x: Tensor, eps64: Tensor) -> tuple[Tensor, Tensor]:
    """``[max(x − ε, 0), min(x + ε, 1)]`` per coordinate: ``{‖z − x‖_∞ ≤ ε} ∩ [0,1]^d`` (clipping to
    ``[x − ε, x + ε]`` then to ``[0, 1]`` is clipping to their intersection, which holds ``x``); ``eps64``
    float64 ``[B]``."""
    e = _rows(eps64.to(x.dtype), x)
    return (x - e).clamp_min(0), (x + e).clamp_max(1)


def project_linf_box(z: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
    """Projection of ``z`` onto ``{‖z − x‖_∞ ≤ ε} ∩ [0,1]^d`` (exact: coordinate-wise clipping)."""
    return torch.clamp(z, *_linf_bounds(x, _radius(eps, x.shape[0], x)))


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

    KKT: the projection is ``clip(x + t·(z − x), 0, 1)`` with ``t = 1`` when that point, the box's own
    projection ``clip(z)``, is inside the ball, else the ``t < 1`` putting it on the sphere;
    ``‖clip(x + t d) − x‖`` is the sorted-threshold function of :func:`lp_box_lmo` with ``p = 2``, solved
    exactly by :func:`_l2_scale`. For ``t ≤ 1`` coordinate ``i`` moves ``min(t|d_i|, u_i) = min(t|d_i|,
    |clip(z)_i − x_i|)`` (``u`` the box capacity along ``sign(d_i)``), so the saturation levels are those of
    the box step ``clip(z) − x`` and the rows inside the ball, most of a PGD run's early steps, cost a clamp
    and a norm.
    """
    return _project_l2_box(z, x, _radius(eps, x.shape[0], x))


def _project_l2_box(z: Tensor, x: Tensor, eps64: Tensor) -> Tensor:
    """:func:`project_l2_box` for a radius already validated (float64 ``[B]``, as :class:`BallBox` holds
    it)."""
    b = x.shape[0]
    cdt = _compute_dtype(x)
    eps_p = eps64.square()
    xf, zf = x.reshape(b, -1).to(cdt), z.reshape(b, -1).to(cdt)
    p = zf.clamp(0, 1)
    box = p - xf  # the box's projection as a step: sign(d)·min(|d|, u)
    up = box * box
    up_sum = _sum64(up)
    out = (up_sum > eps_p).nonzero().squeeze(1)  # clip(z) outside the ball: t < 1
    if out.numel() == b:  # every row (PGD's later steps): no row copies
        t = _l2_scale(p, zf, xf, box, up, eps_p, up_sum).sqrt().clamp_max(1.0).to(cdt)
        p = torch.lerp(xf, zf, t[:, None]).clamp_(0, 1)
    elif out.numel():
        xo, zo = _pick(xf, out), _pick(zf, out)
        t = _l2_scale(_pick(p, out), zo, xo, _pick(box, out), _pick(up, out), _pick(eps_p, out),
                      _pick(up_sum, out)).sqrt().clamp_max(1.0)
        p.index_copy_(0, out, torch.lerp(xo, zo, t.to(cdt)[:, None]).clamp_(0, 1))
    return p.reshape(x.shape).to(x.dtype)


def _pick(t: Tensor, i: Tensor) -> Tensor:
    """``t[i]`` along the first dimension as ``index_select``: several times faster on CPU than advanced
    indexing for the few thousand entries of a projection's gathers."""
    return t.index_select(0, i)


def _partly_clipped(p: Tensor, z: Tensor, box: Tensor, use_numpy: bool | None = None) -> Tensor:
    """Flat indices (ascending, int64) of the coordinates the box clips partly: ``clip(z)_i ≠ z_i`` (the box
    cuts the step) and ``clip(z)_i ≠ x_i`` (``box = clip(z) − x``; the step is not cut to nothing).
    ``use_numpy`` (default: on CPU): the mask and its indices from numpy, several times faster there than
    ``torch.nonzero`` (≈ 0.1 against 0.5 ms for 256 MNIST images)."""
    if use_numpy is None:
        use_numpy = p.device.type == "cpu"
    if use_numpy:
        pn, zn, bn = p.detach().numpy(), z.detach().numpy(), box.detach().numpy()
        return torch.from_numpy(np.flatnonzero((pn != zn) & (bn != 0)))
    return ((p != z) & (box != 0)).reshape(-1).nonzero().squeeze(1)


def _l2_scale(p: Tensor, z: Tensor, x: Tensor, box: Tensor, up: Tensor, eps_p: Tensor,
              up_sum: Tensor) -> Tensor:
    """The l2 projection's ``T = t²``, the root of ``g(T) = Σ_i min(up_i, T·cp_i) = ε²`` (``up = box²``,
    ``cp = (z − x)²``, ``[B, D]`` flattened, ``p = clip(z)``), solved on the partly clipped coordinates alone.

    Where the box does not cut the step, ``up_i = cp_i`` and the coordinate adds ``T·cp_i`` for ``T ≤ 1``, all
    of them together ``T·A`` with ``A = Σ up − Σ_partly up``; where it cuts the step to nothing (``up_i = 0``,
    a pixel on a face pushed outwards: in MNIST most of the background) it adds 0 for every ``T``. Only the
    few partly clipped coordinates (``0 < up_i < cp_i``, threshold ``θ_i = up_i/cp_i < 1``; ~17 of 784 per
    MNIST image in PGD-l2) decide the root, so the sorted solve of :func:`_saturating_scale` runs on them
    alone: gathered into ``[B, 1 + k]`` (``k`` the most partly clipped coordinates of a row), column 0 the
    aggregate ``(A, A)`` (threshold 1), rows padded with ``(0, 0)``, which add nothing for every ``T``. The
    same ``g``, so the same exact root, and each row's sums stay within the row (its result is its own);
    ``+inf`` where ``Σ up ≤ ε²``. Float64. (Newton's method from ``T₁ = (ε² − Σ_partly up)/A`` on the gathered
    coordinates needs about three rounds on PGD's steps and was no faster.)
    """
    b, n = up.shape
    idx = _partly_clipped(p, z, box).to(up.device)
    up_i = _pick(up.reshape(-1), idx).double()
    cp_i = (_pick(z.reshape(-1), idx) - _pick(x.reshape(-1), idx)).double().square()
    row = torch.div(idx, n, rounding_mode="floor")
    count = torch.bincount(row, minlength=b)
    k = int(count.max()) if idx.numel() else 0
    # position within the row (idx ascends, so each row's entries are contiguous), after column 0
    within = torch.arange(idx.numel(), device=up.device) - _pick(count.cumsum(0) - count, row)
    slot = row * (k + 1) + 1 + within
    up_k, cp_k = (up_sum.new_zeros(b * (k + 1)).index_copy_(0, slot, v).reshape(b, k + 1)
                  for v in (up_i, cp_i))
    free = up_sum - up_k.sum(1)  # A: Σ up over the coordinates the box leaves alone (up = cp there)
    up_k[:, 0], cp_k[:, 0] = free, free
    return _saturating_scale(up_k, cp_k, eps_p)


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
    inside = _sum64(torch.minimum(a, u)) <= eps64
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


class BallBox:
    """The feasible set ``B_norm(x, ε) ∩ [0,1]^d`` of one ascent run, for projecting onto it at every step.

    What all of a run's projections share is computed once: the radii (validated once, not per step) and, for
    l∞, the per-coordinate interval :func:`_linf_bounds`, so each l∞ projection is one clamp. l2 / l1 solve
    as :func:`project_l2_box` / :func:`project_l1_box` (l2 without validating the radii again).
    ``x`` ``[B, ...]``, ``eps`` a scalar or ``[B]``.
    """

    def __init__(self, x: Tensor, eps: float | Tensor, norm: str) -> None:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
        self.x, self.norm = x, norm
        self.eps = _radius(eps, x.shape[0], x)  # float64 [B]
        if norm == "linf":
            self.lo, self.hi = _linf_bounds(x, self.eps)

    def project(self, z: Tensor) -> Tensor:
        """The exact projection of ``z`` (like ``x``) onto the set."""
        if self.norm == "linf":
            return torch.clamp(z, self.lo, self.hi)
        if self.norm == "l2":
            return _project_l2_box(z, self.x, self.eps)
        return project_l1_box(z, self.x, self.eps)

    def keep(self, rows: Tensor) -> BallBox:
        """The set of the rows ``rows`` (a ``[B]`` bool mask or indices) alone: an active set's shrinking."""
        out = BallBox.__new__(BallBox)
        out.x, out.norm, out.eps = self.x[rows], self.norm, self.eps[rows]
        if self.norm == "linf":
            out.lo, out.hi = self.lo[rows], self.hi[rows]
        return out


def project_lp_box(z: Tensor, x: Tensor, eps: float | Tensor, norm: str) -> Tensor:
    """Projection onto ``B_norm(x, ε) ∩ [0,1]^d`` for ``norm`` in ``("linf", "l2", "l1")`` (a one-off
    :class:`BallBox`)."""
    return BallBox(x, eps, norm).project(z)


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
