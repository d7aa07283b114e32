"""Auto-Frank-Wolfe over ``B_p(x, ε) ∩ [0,1]^d`` (SVCE, spec dvce_svce.md §3.3, ``AFWAttack``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cflight.methods.functional.ascent import (
    AFWResult, LossGrad, StopFn, _ActiveSet, _Best, _no_trace_with_stop, _select, _stack_trace)
from cflight.methods.functional.lp_geometry import _lmo_point, _radius, _rows
from cflight.methods.functional.step_checkpoints import _Checkpoints

__all__ = ["afw"]


def afw(x: Tensor, loss_grad: LossGrad, eps: float | Tensor, p: float = 1.5, steps: int = 75,
        step_rule: str = "v1", eta0: float = 0.75, alpha0: float = 2.0, rho: float = 0.75,
        momentum: float = 0.0, init_dir: Tensor | None = None, record: bool = False,
        stop: StopFn | None = None) -> AFWResult:
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
        stop: per-sample early stopping (:mod:`~cflight.methods.functional.ascent`): a row whose iterate
            ``x_i`` satisfies ``stop`` is returned as ``x_i`` after ``i`` iterations, and no longer evaluated.
            ``None`` (default, the reference): every row runs all ``steps`` iterations.
    """
    if step_rule not in ("v1", "v2"):
        raise ValueError(f"step_rule must be 'v1' or 'v2', got {step_rule!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    _no_trace_with_stop(record, stop)
    x = x.detach()
    eps64 = _radius(eps, x.shape[0], x)
    x_cur = x if init_dir is None else _lmo_point(x, init_dir, eps64, p)
    active = _ActiveSet(x.shape[0], x.device, loss_grad, stop)
    loss, g, aux = active.evaluate(x_cur)
    loss0 = loss.clone()
    keep = active.check(0, x_cur, loss, aux)
    if keep is not None:
        x, eps64, x_cur, g, loss = x[keep], eps64[keep], x_cur[keep], g[keep], loss[keep]
        aux = None if aux is None else aux[keep]
    best = _Best(x_cur, loss, g, aux)
    ctrl = _Checkpoints(steps, loss, rho)
    scale = torch.full_like(loss, eta0 if step_rule == "v1" else alpha0)
    trace: dict[str, list[Tensor]] = {"loss": [], "loss_best": [], "step": [], "reduced": [], "iterates": []}
    if record:
        trace["iterates"].append(x_cur.clone())
    m = g
    for i in range(steps):
        if active.empty:
            break
        m = g if (i == 0 or momentum == 0) else momentum * m + (1 - momentum) * g
        s = _lmo_point(x, m, eps64, p)  # LMO around the original x
        eta = scale if step_rule == "v1" else scale / (math.sqrt(i) + 2)
        x_cur = torch.lerp(x_cur, s, _rows(eta, x_cur).to(x.dtype)).clamp_(0, 1)
        loss, g, aux = active.evaluate(x_cur)
        best.update(x_cur, loss, g, aux)
        keep = active.check(i + 1, x_cur, loss, aux)
        if keep is not None:  # rows that reached leave; the rest carry on as if alone
            x, eps64, x_cur, g, m, scale, loss = (t[keep] for t in (x, eps64, x_cur, g, m, scale, loss))
            best.keep(keep)
            ctrl.keep(keep)
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
    return active.result(best.x, best.loss, best.aux, loss0, steps, _stack_trace(trace) if record else {})
