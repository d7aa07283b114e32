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


def reached(out: Tensor, target: Target) -> Tensor:
    """``[B]`` bool: the model output reaches the target (``threshold_reached`` / regression tolerance)."""
    if isinstance(target, ClassTarget):
        return Fn.threshold_reached(Fn.class_probability(out, target.classes), target.threshold, target.direction)
    err = (out[:, 0] - target.value).abs()
    return err <= torch.as_tensor(target.tolerance, dtype=err.dtype, device=err.device)


def make_loss_grad(model: nn.Module, target: Target, objective: str = "log_conf",
                   pred: Tensor | None = None) -> Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]:
    """``z -> (objective [B], ∇_z objective, model output)`` with one forward and one backward of ``model``.

    Only the input gradient is formed: autograd skips the weight gradients of a ``model`` whose parameters
    still require grad, and nothing accumulates in their ``.grad``.
    """

    def loss_grad(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = z.detach().requires_grad_(True)
        out = model(z)
        loss = pixel_objective(out, target, objective, pred)
        (grad,) = torch.autograd.grad(loss.sum(), z)
        return loss.detach(), grad, out.detach()

    return loss_grad


def restart_seed(seed: int, restart: int) -> int:
    """The job seed of restart ``r`` (restart 0 uses ``seed`` itself)."""
    return seed if restart == 0 else Fn.sample_seed(seed, restart)


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


class SparseAFW(CounterfactualMethod):
    """SVCE: maximise ``log p_T(k | x̂)`` over ``‖x̂ − x‖_p ≤ ε, x̂ ∈ [0,1]^d`` with Auto-Frank-Wolfe.

    The explained model is used as passed: wrap it in
    :class:`cflight.models.classifiers.TemperatureWrapper` to get the temperature-scaled ``p_T`` of the
    paper (T matters: it changes the gradient direction, spec §1.2). Each sample starts at a random point
    of the boundary, ``x₀ = x + LMO(x, ξ)`` with ``ξ ~ N(0, I)`` drawn from ``(seed, index, restart)``, and
    runs all ``steps`` AFW iterations (:func:`cflight.methods.functional.afw`: exact LMO of spec §3.2,
    APGD checkpoints, best-loss iterate). There is no per-sample early stopping — the reference has none;
    the returned image is the best-loss iterate, and ``success`` says whether the model's output on it
    reaches the target (``threshold_reached``; regression: ``|f − y*| ≤ tol``). ``steps`` reports
    ``steps × restarts`` iterations; ``extras``: ``loss`` (best objective), ``loss0`` (at ``x₀``),
    ``distance`` (``‖x_cf − x‖_p``).

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

    Reference quirk (spec §3.3): at the first checkpoint the reference compares the first loss with a still
    zero row (always "no increase" for log-probabilities ≤ 0); here the first step simply has no predecessor
    and counts as no increase — identical for these losses, and defined for any loss.

    Not implemented: v2's side effect of doubling the model's temperature when a gradient vanishes (it
    mutates the model object across batches, spec §8), and v2's two-model cone option.
    """

    def __init__(self, eps: float = 50.0, p: float = 1.5, steps: int = 75, step_rule: str = "v1",
                 restarts: int = 1, momentum: float = 0.0, rho: float = 0.75, random_init: bool = True,
                 max_batch_size: int | None = None, seed: int = 0) -> None:
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

    def run(self, x: Tensor, target: Target, model: nn.Module, index: Tensor, pred: Tensor) -> CounterfactualOutput:
        loss_grad = make_loss_grad(model, target, "log_conf", pred)
        best = None
        for r in range(self.restarts):
            xi = None
            if self.random_init:
                xi = Fn.per_sample_normal(tuple(x.shape[1:]), restart_seed(self.seed, r), index.cpu(), x.device, x.dtype)
            res = Fn.afw(x, loss_grad, self.eps, self.p, self.steps, self.step_rule, rho=self.rho,
                         momentum=self.momentum, init_dir=xi)
            best = keep_better(best, res, ("x", "aux", "loss", "loss0"))
        assert best is not None and best.aux is not None
        return CounterfactualOutput(
            x_cf=best.x, pred=pred, pred_cf=best.aux, success=reached(best.aux, target),
            steps=torch.full((x.shape[0],), self.steps * self.restarts, dtype=torch.long, device=x.device),
            extras={"loss": best.loss, "loss0": best.loss0, "distance": Fn.lp_norm(best.x - x, self.p)},
        )
