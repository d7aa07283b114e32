"""APGD (Croce & Hein 2020; l1: "Mind the box", 2021) over ``B_norm(x, ε) ∩ [0,1]^d``."""

from __future__ import annotations

import torch
from torch import Tensor

from cflight.methods.functional.ascent import (
    AFWResult, LossGrad, StopFn, _ActiveSet, _Best, _no_trace_with_stop, _select, _stack_trace)
from cflight.methods.functional.lp_geometry import NORMS, BallBox, _rows, steepest_ascent
from cflight.methods.functional.step_checkpoints import _Checkpoints

__all__ = ["apgd"]


def apgd(x: Tensor, loss_grad: LossGrad, eps: float | Tensor, norm: str = "l2", steps: int = 100,
         rho: float = 0.75, momentum: float = 0.75, x_init: Tensor | None = None,
         record: bool = False, stop: StopFn | None = None) -> AFWResult:
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
    ``stop``: per-sample early stopping as :func:`~cflight.methods.functional.afw` (default ``None``: off).
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    _no_trace_with_stop(record, stop)
    x = x.detach()
    b, n_fts = x.shape[0], x[0].numel()
    ball = BallBox(x, eps, norm)
    x_cur = x.clone() if x_init is None else x_init.detach().clone()
    active = _ActiveSet(b, x.device, loss_grad, stop)
    loss, g, aux = active.evaluate(x_cur)
    loss0 = loss.clone()
    keep = active.check(0, x_cur, loss, aux)
    if keep is not None:
        x, ball, x_cur, g, loss = x[keep], ball.keep(keep), x_cur[keep], g[keep], loss[keep]
        aux = None if aux is None else aux[keep]
        b = x.shape[0]
    best = _Best(x_cur, loss, g, aux)
    base = (1.0 if norm == "l1" else 2.0) * ball.eps.to(x.dtype)
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
        if active.empty:
            break
        direction = steepest_ascent(g, norm, sparsity)
        z = ball.project(x_cur + _rows(eta, x) * direction)
        if not l1 and i > 0:
            z = ball.project(x_cur + momentum * (z - x_cur) + (1 - momentum) * (x_cur - x_prev))
        x_prev, x_cur = x_cur, z
        loss, g, aux = active.evaluate(x_cur)
        best.update(x_cur, loss, g, aux)
        keep = active.check(i + 1, x_cur, loss, aux)
        if keep is not None:  # rows that reached leave; the rest carry on as if alone
            x, x_cur, x_prev, g, loss, base, eta, sparsity, sp_old = (
                t[keep] for t in (x, x_cur, x_prev, g, loss, base, eta, sparsity, sp_old))
            ball = ball.keep(keep)
            best.keep(keep)
            ctrl.keep(keep)
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
    return active.result(best.x, best.loss, best.aux, loss0, steps, _stack_trace(trace) if record else {})
