"""Pixel-space adversarial baselines: PGD and APGD in l∞, l2 and l1 (with the [0,1] box).

The "adversarial examples" the VCE papers contrast with (DESIGN.md §1): the same objective as SVCE
(log-confidence of the target class) optimised in an l_p ball around the image, without any generative
prior. Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks" (ICLR 2018); Croce &
Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks"
(ICML 2020, APGD) and "Mind the box: l1-APGD for sparse adversarial attacks" (ICCV 2021, APGD-l1).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cflight.methods import functional as Fn
from cflight.methods.base import CounterfactualMethod
from cflight.methods.svce import (
    PIXEL_OBJECTIVES, make_loss_grad, make_stop, pixel_objective, reached, restart_noise, run_restarts)
from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget

Target = ClassTarget | RegressionTarget

# SVCE's comparison radii at ImageNet 224² (spec §3.1: l1 400, l2 12) and the Madry l∞ ImageNet model's 4/255.
DEFAULT_EPS = {"linf": 4 / 255, "l2": 12.0, "l1": 400.0}


def make_loss(model: nn.Module, target: Target, objective: str = "log_conf",
              pred: Tensor | None = None) -> Fn.LossOnly:
    """``z -> (objective [B], model output)``: :func:`~cflight.methods.svce.make_loss_grad` without the
    gradient (one forward, no graph); ``(z, rows)`` scores the targets of batch rows ``rows``."""

    def loss_only(z: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        tgt, prd = target, pred
        if rows is not None:
            tgt, prd = target.select(rows), None if pred is None else pred[rows]
        with torch.no_grad():
            out = model(z.detach())
            return pixel_objective(out, tgt, objective, prd), out

    return loss_only


class _PixelAttack(CounterfactualMethod):
    """Shared validation and output assembly of :class:`PGD` and :class:`APGD`."""

    def __init__(self, eps: float | None, norm: str, steps: int, objective: str, random_start: bool,
                 restarts: int, max_batch_size: int | None, seed: int, early_stop: bool = False) -> None:
        super().__init__(max_batch_size=max_batch_size, seed=seed)
        if norm not in Fn.NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {Fn.NORMS}")
        eps = DEFAULT_EPS[norm] if eps is None else eps
        if not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be finite and > 0, got {eps}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if objective not in PIXEL_OBJECTIVES:
            raise ValueError(f"objective must be one of {PIXEL_OBJECTIVES}, got {objective!r}")
        if restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {restarts}")
        self.eps, self.norm, self.steps, self.objective = float(eps), norm, int(steps), objective
        self.random_start, self.restarts = bool(random_start), int(restarts)
        self.early_stop = bool(early_stop)

    def _attack(self, x: Tensor, loss_grad, x_init: Tensor | None,
                stop: Fn.StopFn | None = None) -> Fn.AFWResult:
        raise NotImplementedError

    def run(self, x: Tensor, target: Target, model: nn.Module, index: Tensor, pred: Tensor) -> CounterfactualOutput:
        loss_grad = make_loss_grad(model, target, self.objective, pred)
        self._loss_only = make_loss(model, target, self.objective, pred)

        def restart(x: Tensor, index: Tensor, loss_grad: Fn.LossGrad, stop: Fn.StopFn | None,
                    r: int) -> Fn.AFWResult:
            x_init = None
            if self.random_start:
                x_init = Fn.random_start(x, restart_noise(x, self.seed, index, r), self.eps, self.norm)
            res = self._attack(x, loss_grad, x_init, stop)
            if res.aux is None:  # PGD returning its last iterate: one forward for the output
                with torch.no_grad():
                    res.aux = model(res.x)
            return res

        stop = make_stop(target) if self.early_stop else None
        best, steps = run_restarts(x, index, loss_grad, stop, self.restarts, restart, ("x", "aux", "loss"))
        assert best is not None and best.aux is not None
        return CounterfactualOutput(
            x_cf=best.x, pred=pred, pred_cf=best.aux, success=reached(best.aux, target), steps=steps,
            extras={"loss": best.loss, "distance": Fn.lp_norm(best.x - x, Fn.NORM_P[self.norm])},
        )


class PGD(_PixelAttack):
    """Projected gradient ascent in an l∞ / l2 / l1 ball ∩ [0,1] box (Madry et al. 2018).

    ``x_{i+1} = P(x_i + η·dir(∇ objective))`` with ``dir`` the steepest-ascent direction of the norm
    (``sign`` for l∞, normalised gradient for l2, SLIDE's sparse sign of the top ``l1_sparsity`` fraction for
    l1, Tramèr & Boneh 2019) and ``P`` the exact projection onto ball ∩ box
    (:mod:`cflight.methods.functional.lp_geometry`). By default no early stopping: all ``steps`` run.
    ``early_stop=True`` freezes a sample at the first evaluated iterate (the start included) whose output
    reaches the target: it is returned, no longer evaluated, and ``steps`` counts the steps it took.

    Objective (``objective``): ``"log_conf"`` maximises ``d·log p(k)`` of the target class (SVCE's loss);
    ``"ce"`` the untargeted cross-entropy of the class predicted on the clean image. Regression targets use
    ``−(f − y*)²``. ``success``: the model's output on ``x_cf`` reaches the target (``threshold_reached``).

    Args:
        eps: radius; default per norm: SVCE's ImageNet-224² comparison radii l2 12 and l1 400 (spec §3.1),
            l∞ 4/255 (the Madry ImageNet l∞ model). Carrying a radius to another resolution (spec §5.2 item
            6): ``ε_new = ε_old·(d_new/d_old)^{1/p}`` (l∞ unchanged; :func:`~cflight.methods.functional.transfer_radius`),
            e.g. l2 12 at 3·224² → ≈ 0.87 at MNIST 28².
        norm: ``"linf"``, ``"l2"`` (default) or ``"l1"``.
        steps: iterations; default 20 (PGD-20, a common evaluation setting).
        step_size: η; default ``2.5·ε/steps`` (the robustness library's rule).
        random_start: start at a random point of the ball (default) or at ``x``.
        keep_best: return the best-objective iterate (default; one extra forward of the last iterate, without
            backward unless ``early_stop``) rather than the last one.
        l1_sparsity: fraction of coordinates moved per l1 step; default 0.01 (SLIDE's 99th percentile).
        restarts: independent random restarts, the best kept; default 1 (with ``early_stop``, a later
            restart runs only on the samples no earlier one brought to the target).
        early_stop: freeze each sample once it reaches its target (default ``False``: all steps run).
    """

    def __init__(self, eps: float | None = None, norm: str = "l2", steps: int = 20, step_size: float | None = None,
                 random_start: bool = True, objective: str = "log_conf", keep_best: bool = True,
                 l1_sparsity: float = 0.01, restarts: int = 1, early_stop: bool = False,
                 max_batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__(eps, norm, steps, objective, random_start, restarts, max_batch_size, seed, early_stop)
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if not 0 < l1_sparsity <= 1:
            raise ValueError(f"l1_sparsity must be in (0, 1], got {l1_sparsity}")
        self.step_size, self.keep_best, self.l1_sparsity = step_size, bool(keep_best), float(l1_sparsity)

    def _attack(self, x: Tensor, loss_grad, x_init: Tensor | None,
                stop: Fn.StopFn | None = None) -> Fn.AFWResult:
        # with early stopping a later restart remaps the rows of loss_grad (run_restarts); loss_only would
        # need the same remap, so the gradient-free last evaluation is used only without it
        return Fn.pgd(x, loss_grad, self.eps, self.norm, self.steps, self.step_size, x_init, self.keep_best,
                      self.l1_sparsity, stop=stop, loss_only=self._loss_only if stop is None else None)

    def run(self, x: Tensor, target: Target, model: nn.Module, index: Tensor, pred: Tensor) -> CounterfactualOutput:
        if not self.keep_best and self.restarts > 1:
            raise ValueError("restarts > 1 needs keep_best=True (the restarts are compared by their loss)")
        return super().run(x, target, model, index, pred)


class APGD(_PixelAttack):
    """Auto-PGD in an l∞ / l2 / l1 ball ∩ [0,1] box (Croce & Hein 2020; l1: Croce & Hein 2021).

    Step size ``2ε`` (l1: ``ε``) adapted at the APGD checkpoints, momentum 0.75 (none for l1), l1's adaptive
    sparsity; returns the best-objective iterate — see :func:`cflight.methods.functional.apgd` for the exact
    rules. Projections are exact Euclidean projections onto ball ∩ box (AutoAttack's l2 rescales then clips).
    Random start as AutoAttack (:func:`~cflight.methods.functional.random_start`), drawn from
    ``(seed, index, restart)``. By default no early stopping; ``early_stop`` as :class:`PGD`. Objective and
    ``success`` as :class:`PGD`.

    Args:
        eps: radius; default per norm as :class:`PGD` (SVCE's comparisons: l1 400, l2 12 at ImageNet 224²).
        norm: ``"linf"``, ``"l2"`` (default) or ``"l1"``.
        steps: iterations; default 75 (SVCE's comparison runs; AutoAttack uses 100).
        rho: checkpoint oscillation constant, 0.75; ``momentum``: 0.75.
        restarts: default 1.
        early_stop: freeze each sample once it reaches its target (default ``False``: all steps run).
    """

    def __init__(self, eps: float | None = None, norm: str = "l2", steps: int = 75, rho: float = 0.75,
                 momentum: float = 0.75, objective: str = "log_conf", restarts: int = 1, random_start: bool = True,
                 early_stop: bool = False, max_batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__(eps, norm, steps, objective, random_start, restarts, max_batch_size, seed, early_stop)
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.rho, self.momentum = float(rho), float(momentum)

    def _attack(self, x: Tensor, loss_grad, x_init: Tensor | None,
                stop: Fn.StopFn | None = None) -> Fn.AFWResult:
        return Fn.apgd(x, loss_grad, self.eps, self.norm, self.steps, self.rho, self.momentum, x_init,
                       stop=stop)
