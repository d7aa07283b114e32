"""SVCE: sparse visual counterfactual explanations in an l_p ball (p = 1.5) found with Auto-Frank-Wolfe.

Boreiko, Augustin, Croce, Berens, Hein, "Sparse Visual Counterfactual Explanations in Image Space"
(arXiv 2205.07972, 2022); semantics of the official code ``SVCEs_code`` (``AFWAttack``, ``maxlin``), as
restated in spec dvce_svce.md §3.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from cflight.methods import functional as Fn
from cflight.methods.base import CounterfactualMethod
from cflight.rng import Stream, per_sample_normal
from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget

Target = ClassTarget | RegressionTarget
PIXEL_OBJECTIVES = ("log_conf", "ce")


def pixel_objective(out: Tensor, target: Target, objective: str = "log_conf",
                    pred: Tensor | None = None) -> Tensor:
    """Per-sample quantity the pixel-space methods *maximise* (``[B]``).

    Class targets: ``"log_conf"`` = ``d·log p(k | x̂)`` (the log-confidence of SVCE/DVCE, spec §1.3; ``d`` the
    target's direction, so ``d = −1`` pushes ``p(k)`` down); ``"ce"`` = the untargeted cross-entropy of the
    class predicted on the clean image (``pred.argmax``; for one logit, its side), the classic adversarial
    example. Regression targets: ``−(f(x̂) − y*)²`` whatever ``objective`` is.
    """
    if isinstance(target, RegressionTarget):
        return -(out[:, 0] - target.value) ** 2
    if objective == "log_conf":
        return target.direction.to(out.dtype) * Fn.class_score(out, target.classes, "log_prob")
    if objective == "ce":
        if pred is None:
            raise ValueError("the 'ce' objective needs the model's prediction on the clean images")
        label = (pred[:, 0] > 0).long() if pred.shape[1] == 1 else pred.argmax(1)
        return -Fn.class_score(out, label, "log_prob")
    raise ValueError(f"unknown objective {objective!r}; expected one of {PIXEL_OBJECTIVES}")


reached = Fn.target_reached  # (the name the pixel methods have used)


def make_loss_grad(model: nn.Module, target: Target, objective: str = "log_conf",
                   pred: Tensor | None = None) -> Callable[..., tuple[Tensor, Tensor, Tensor]]:
    """``z -> (objective [B], ∇_z objective, model output)`` with one forward and one backward of ``model``.

    Only the input gradient is formed: autograd skips the weight gradients of a ``model`` whose parameters
    still require grad, and nothing accumulates in their ``.grad``. ``loss_grad(z, rows)`` scores ``z`` against
    the targets (and clean predictions) of batch rows ``rows`` — the early-stopping form of the loops.
    """

    def loss_grad(z: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        z = z.detach().requires_grad_(True)
        out = model(z)
        tgt, prd = target, pred
        if rows is not None:  # the early-stopping form: the targets of the active rows
            tgt, prd = target.select(rows), None if pred is None else pred[rows]
        loss = pixel_objective(out, tgt, objective, prd)
        (grad,) = torch.autograd.grad(loss.sum(), z)
        return loss.detach(), grad, out.detach()

    return loss_grad


def restart_noise(x: Tensor, seed: int, index: Tensor, restart: int) -> Tensor:
    """``ξ ~ N(0, I)`` like ``x`` for restart ``restart`` of each sample, from ``(seed, index)`` (stream
    ``RANDOM_START``, the restart as the step), generated on ``x``'s device."""
    return per_sample_normal(tuple(x.shape[1:]), seed, index, stream=Stream.RANDOM_START, step=restart,
                             device=x.device, dtype=x.dtype)


def keep_better(best: Any, res: Any, fields: tuple[str, ...] = ("x", "aux", "loss")) -> Any:
    """Per sample, the restart with the higher ``loss``: ``fields`` of ``best`` take ``res``'s values where
    ``res.loss > best.loss`` (ties keep the earlier restart); ``best is None`` returns ``res``."""
    if best is None:
        return res
    better = res.loss > best.loss
    for name in fields:
        old = getattr(best, name)
        setattr(best, name, torch.where(better.view(-1, *[1] * (old.ndim - 1)), getattr(res, name), old))
    return best


def make_stop(target: Target) -> Fn.StopFn:
    """Early stopping of the pixel-space loops: ``(model output [A], rows [A]) -> [A] bool``, the rows'
    outputs reach their targets (:func:`reached`: ``threshold_reached``, regression ``|f − y*| ≤ tol``)."""
    return lambda out, rows: reached(out, target.select(rows))


Restart = Callable[..., Any]  # (x, index, loss_grad, stop, restart number) -> AFWResult


def run_restarts(x: Tensor, index: Tensor, loss_grad: Callable[..., Any], stop: Fn.StopFn | None,
                 restarts: int, restart: Restart, fields: tuple[str, ...]) -> tuple[Any, Tensor]:
    """Best of ``restarts`` runs per sample; ``restart(x, index, loss_grad, stop, r)`` runs restart ``r``.

    Without ``stop`` every restart runs on the whole batch and the higher loss wins (:func:`keep_better`).
    With it a row that stopped is finished: later restarts run only on the rows no restart has stopped yet,
    and a row takes a restart's outcome if it stopped there or its loss is higher. Returns ``(best, steps
    [B])``: the per-sample outcome (``fields`` of an :class:`~cflight.methods.functional.AFWResult`) and the
    iterations each row ran over all restarts.
    """
    steps = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    best = None
    for r in range(restarts):
        if best is None or stop is None:
            res = restart(x, index, loss_grad, stop, r)
            steps += res.steps
            best = keep_better(best, res, fields)
            continue
        rows = (~best.stopped).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        res = restart(x[rows], index[rows], lambda z, ids: loss_grad(z, rows[ids]),
                      lambda out, ids: stop(out, rows[ids]), r)
        steps[rows] += res.steps
        take = res.stopped | (res.loss > best.loss[rows])
        for name in (*fields, "stopped"):
            merged = getattr(best, name).clone()
            merged[rows[take]] = getattr(res, name)[take]
            setattr(best, name, merged)
    return best, steps


class SparseAFW(CounterfactualMethod):
    """SVCE: maximise ``log p_T(k | x̂)`` over ``‖x̂ − x‖_p ≤ ε, x̂ ∈ [0,1]^d`` with Auto-Frank-Wolfe.

    The explained model is used as passed: wrap it in
    :class:`cflight.models.classifiers.TemperatureWrapper` to get the temperature-scaled ``p_T`` of the
    paper (T matters: it changes the gradient direction, spec §1.2). Each sample starts at a random point
    of the boundary, ``x₀ = x + LMO(x, ξ)`` with ``ξ ~ N(0, I)`` drawn from ``(seed, index, restart)``, and
    runs all ``steps`` AFW iterations (:func:`cflight.methods.functional.afw`: exact LMO of spec §3.2,
    APGD checkpoints, best-loss iterate). By default there is no per-sample early stopping — the reference
    has none; the returned image is the best-loss iterate, and ``success`` says whether the model's output on
    it reaches the target (``threshold_reached``; regression: ``|f − y*| ≤ tol``). ``steps`` reports
    ``steps × restarts`` iterations; ``extras``: ``loss`` (best objective), ``loss0`` (at ``x₀``),
    ``distance`` (``‖x_cf − x‖_p``). With ``early_stop=True`` a sample is frozen at the first iterate
    (``x₀`` included) whose model output reaches the target: that iterate is returned, later iterations
    and restarts skip it (only unfinished samples are evaluated), and ``steps`` counts the iterations it
    ran. For the ``log_conf`` objective that iterate is also the best so far (the objective is monotone in
    ``p(k)``); the reference would go on raising ``p(k)`` and moving the image further from ``x``.

    Objective: class targets ``d·log p(k)`` (``d = −1`` lowers ``p(k)``); regression ``−(f − y*)²``.

    Args:
        eps: radius ε. Paper/code default 50 for l1.5 at ImageNet 224² (75, 100 also used; CIFAR-10: 6).
            Carrying a radius to another resolution (spec §5.2 item 6): at a fixed per-pixel budget
            ``ε_new = ε_old·(d_new/d_old)^{1/p}`` (:func:`cflight.methods.functional.transfer_radius`), e.g.
            50 at 3·224² → ≈ 1.56 at MNIST 28²; then calibrate by the confidence the VCEs reach.
        p: the norm, ``p > 1``; default 1.5.
        steps: AFW iterations N; default 75.
        step_rule: ``"v1"`` (default: the SVCE paper's code, η = 0.75 halved at a reduction) or ``"v2"``
            (the DVCE repo's 2023 version, η_i = α/(√i + 2), α = 2, ×0.75 at a reduction); spec §8 asks to
            pick one explicitly: v1 matches the paper.
        restarts: R, runs per sample with fresh random starts, best kept; default 1.
        momentum: β of the gradient momentum; default 0 (the released code never forwards its 0.9).
        rho: checkpoint oscillation constant; default 0.75.
        random_init: start on the boundary (default) or at ``x`` itself.
        early_stop: freeze each sample once it reaches its target (default ``False``: the reference).

    Reference quirk (spec §3.3): at the first checkpoint the reference compares the first loss with a still
    zero row (always "no increase" for log-probabilities ≤ 0); here the first step simply has no predecessor
    and counts as no increase — identical for these losses, and defined for any loss.

    Not implemented: v2's side effect of doubling the model's temperature when a gradient vanishes (it
    mutates the model object across batches, spec §8), and v2's two-model cone option.
    """

    def __init__(self, eps: float = 50.0, p: float = 1.5, steps: int = 75, step_rule: str = "v1",
                 restarts: int = 1, momentum: float = 0.0, rho: float = 0.75, random_init: bool = True,
                 early_stop: bool = False, max_batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__(max_batch_size=max_batch_size, seed=seed)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not p > 1:
            raise ValueError(f"p must be > 1 (the LMO needs a strictly convex ball), got {p}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if step_rule not in ("v1", "v2"):
            raise ValueError(f"step_rule must be 'v1' or 'v2', got {step_rule!r}")
        if restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {restarts}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        self.eps, self.p, self.steps, self.step_rule = float(eps), float(p), int(steps), step_rule
        self.restarts, self.momentum, self.rho, self.random_init = int(restarts), float(momentum), float(rho), random_init
        self.early_stop = bool(early_stop)

    def run(self, x: Tensor, target: Target, model: nn.Module, index: Tensor, pred: Tensor) -> CounterfactualOutput:
        loss_grad = make_loss_grad(model, target, "log_conf", pred)

        def restart(x: Tensor, index: Tensor, loss_grad: Fn.LossGrad, stop: Fn.StopFn | None,
                    r: int) -> Fn.AFWResult:
            xi = None
            if self.random_init:
                xi = restart_noise(x, self.seed, index, r)
            return Fn.afw(x, loss_grad, self.eps, self.p, self.steps, self.step_rule, rho=self.rho,
                          momentum=self.momentum, init_dir=xi, stop=stop)

        stop = make_stop(target) if self.early_stop else None
        best, steps = run_restarts(x, index, loss_grad, stop, self.restarts, restart,
                                   ("x", "aux", "loss", "loss0"))
        assert best is not None and best.aux is not None
        return CounterfactualOutput(
            x_cf=best.x, pred=pred, pred_cf=best.aux, success=reached(best.aux, target), steps=steps,
            extras={"loss": best.loss, "loss0": best.loss0, "distance": Fn.lp_norm(best.x - x, self.p)},
        )
