"""Projected gradient ascent (Madry et al. 2018) over ``B_norm(x, ε) ∩ [0,1]^d``; also the attack of
adversarial training (:mod:`cflight.lit.robust`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cflight.methods.functional.ascent import (
    AFWResult, LossGrad, LossOnly, StopFn, _ActiveSet, _Best, _no_trace_with_stop, _stack_trace)
from cflight.methods.functional.lp_geometry import NORMS, BallBox, _radius, _rows, steepest_ascent

__all__ = ["pgd"]


def pgd(x: Tensor, loss_grad: LossGrad, eps: float | Tensor, norm: str = "l2", steps: int = 10,
        step_size: float | Tensor | None = None, x_init: Tensor | None = None, keep_best: bool = True,
        l1_sparsity: float = 0.01, record: bool = False, stop: StopFn | None = None,
        loss_only: LossOnly | None = None) -> AFWResult:
    """Projected gradient ascent (Madry et al. 2018): ``x_{i+1} = P(x_i + η·dir(g_i))``.

    ``dir`` is :func:`steepest_ascent` (``l1``: the top ``l1_sparsity`` fraction, SLIDE of Tramèr & Boneh
    2019); ``P`` the exact projection onto ball ∩ box; ``η = step_size`` (default ``2.5ε/steps``, the
    robustness library's rule, so the boundary is reachable from any start). ``x_init``: the start (default
    ``x``). ``keep_best``: return the best-loss iterate among ``x₀…x_N`` (``N + 1`` evaluations); otherwise
    the last iterate ``x_N`` after ``N`` evaluations, itself not evaluated (``loss`` NaN, ``aux`` ``None``) —
    what adversarial training needs. ``stop``: per-sample early stopping as
    :func:`~cflight.methods.functional.afw` — a row whose evaluated iterate ``x_i`` satisfies it is returned
    as ``x_i`` after ``i`` steps (default ``None``: off). ``loss_only``: ``loss_grad``'s ``(loss, aux)``
    without the gradient (a forward, no backward); given, ``keep_best``'s last evaluation, of ``x_N``, whose
    gradient no step uses, calls it instead (``N`` backward passes instead of ``N + 1``, the same result).
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    _no_trace_with_stop(record, stop)
    x = x.detach()
    b = x.shape[0]
    ball = BallBox(x, eps, norm)
    eta = (2.5 * ball.eps / max(steps, 1) if step_size is None else _radius(step_size, b, x)).to(x.dtype)
    x_cur = x.clone() if x_init is None else x_init.detach().clone()
    trace: dict[str, list[Tensor]] = {"loss": [], "iterates": []}
    best, loss0 = None, None
    active = _ActiveSet(b, x.device, loss_grad, stop)
    if record:
        trace["iterates"].append(x_cur.clone())
    for i in range(steps + int(keep_best)):  # keep_best: one more evaluation, of the last iterate
        if i == steps and loss_only is not None:  # x_N takes no step: its gradient would go unused
            (loss, aux), g = active.evaluate_loss(loss_only, x_cur), None
        else:
            loss, g, aux = active.evaluate(x_cur)
        # the best iterate's gradient is never used (no checkpoint restarts from it, unlike APGD / AFW):
        # not tracked, which saves a clone and a select of a gradient per step
        if loss0 is None:
            loss0 = loss.clone()
            best = _Best(x_cur, loss, None, aux) if keep_best else None
        elif best is not None:  # without keep_best no iterate but the last is returned: nothing to track
            best.update(x_cur, loss, None, aux)
        if record:
            trace["loss"].append(loss.clone())
        keep = active.check(i, x_cur, loss, aux)
        if keep is not None:  # rows that reached leave; the rest carry on as if alone
            ball, eta, x_cur = ball.keep(keep), eta[keep], x_cur[keep]
            g = None if g is None else g[keep]
            if best is not None:
                best.keep(keep)
            if active.empty:
                break
        if i == steps:
            break
        if norm == "linf":  # η·sign(g) is exact (±η or 0): the fused form rounds as x + η·sign(g) does
            z = torch.addcmul(x_cur, _rows(eta, x_cur), g.sign())
        else:
            z = x_cur + _rows(eta, x_cur) * steepest_ascent(g, norm, l1_sparsity)
        x_cur = ball.project(z)
        if record:
            trace["iterates"].append(x_cur.clone())
    trace_out = _stack_trace(trace) if record else {}
    if not keep_best:
        nan = torch.full((x_cur.shape[0],), math.nan, dtype=x.dtype, device=x.device)
        loss0 = torch.full((b,), math.nan, dtype=x.dtype, device=x.device) if loss0 is None else loss0
        return active.result(x_cur, nan, None, loss0, steps, trace_out)
    return active.result(best.x, best.loss, best.aux, loss0, steps, trace_out)
