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
from cflight.methods.svce import PIXEL_OBJECTIVES, keep_better, make_loss_grad, reached, restart_seed
from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget

Target = ClassTarget | RegressionTarget

# SVCE's comparison radii at ImageNet 224² (spec §3.1: l1 400, l2 12) and the Madry l∞ ImageNet model's 4/255.
DEFAULT_EPS = {"linf": 4 / 255, "l2": 12.0, "l1": 400.0}


class _PixelAttack(CounterfactualMethod):
    """Shared validation and output assembly of :class:`PGD` and :class:`APGD`."""

    def __init__(self, eps: float | None, norm: str, steps: int, objective: str, random_start: bool,
                 restarts: int, max_batch_size: int | None, seed: int) -> None:
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

    def _attack(self, x: Tensor, loss_grad, x_init: Tensor | None) -> Fn.AFWResult:
        raise NotImplementedError

    def run(self, x: Tensor, target: Target, model: nn.Module, index: Tensor, pred: Tensor) -> CounterfactualOutput:
        loss_grad = make_loss_grad(model, target, self.objective, pred)
        best = None
        for r in range(self.restarts):
            x_init = None
            if self.random_start:
                noise = Fn.per_sample_normal(tuple(x.shape[1:]), restart_seed(self.seed, r), index.cpu(),
                                             x.device, x.dtype)
                x_init = Fn.random_start(x, noise, self.eps, self.norm)
            res = self._attack(x, loss_grad, x_init)
            if res.aux is None:  # PGD returning its last iterate: one forward for the output
                with torch.no_grad():
                    res.aux = model(res.x)
            best = keep_better(best, res)
        assert best is not None and best.aux is not None
        return CounterfactualOutput(
            x_cf=best.x, pred=pred, pred_cf=best.aux, success=reached(best.aux, target),
            steps=torch.full((x.shape[0],), self.steps * self.restarts, dtype=torch.long, device=x.device),
            extras={"loss": best.loss, "distance": Fn.lp_norm(best.x - x, {"linf": math.inf, "l2": 2, "l1": 1}[self.norm])},
        )


class PGD(_PixelAttack):
    """Projected gradient ascent in an l∞ / l2 / l1 ball ∩ [0,1] box (Madry et al. 2018).

    ``x_{i+1} = P(x_i + η·dir(∇ objective))`` with ``dir`` the steepest-ascent direction of the norm
    (``sign`` for l∞, normalised gradient for l2, SLIDE's sparse sign of the top ``l1_sparsity`` fraction for
    l1, Tramèr & Boneh 2019) and ``P`` the exact projection onto ball ∩ box
    (:mod:`cflight.methods.functional.sparse`). No early stopping: all ``steps`` run.

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
        keep_best: return the best-objective iterate (default; one extra evaluation of the last iterate)
            rather than the last one.
        l1_sparsity: fraction of coordinates moved per l1 step; default 0.01 (SLIDE's 99th percentile).
        restarts: independent random restarts, the best kept; default 1.
    """

    def __init__(self, eps: float | None = None, norm: str = "l2", steps: int = 20, step_size: float | None = None,
                 random_start: bool = True, objective: str = "log_conf", keep_best: bool = True,
                 l1_sparsity: float = 0.01, restarts: int = 1, max_batch_size: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(eps, norm, steps, objective, random_start, restarts, max_batch_size, seed)
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if not 0 < l1_sparsity <= 1:
            raise ValueError(f"l1_sparsity must be in (0, 1], got {l1_sparsity}")
        self.step_size, self.keep_best, self.l1_sparsity = step_size, bool(keep_best), float(l1_sparsity)

    def _attack(self, x: Tensor, loss_grad, x_init: Tensor | None) -> Fn.AFWResult:
        return Fn.pgd(x, loss_grad, self.eps, self.norm, self.steps, self.step_size, x_init, self.keep_best,
                      self.l1_sparsity)

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
    ``(seed, index, restart)``. No early stopping. Objective and ``success`` as :class:`PGD`.

    Args:
        eps: radius; default per norm as :class:`PGD` (SVCE's comparisons: l1 400, l2 12 at ImageNet 224²).
        norm: ``"linf"``, ``"l2"`` (default) or ``"l1"``.
        steps: iterations; default 75 (SVCE's comparison runs; AutoAttack uses 100).
        rho: checkpoint oscillation constant, 0.75; ``momentum``: 0.75.
        restarts: default 1.
    """

    def __init__(self, eps: float | None = None, norm: str = "l2", steps: int = 75, rho: float = 0.75,
                 momentum: float = 0.75, objective: str = "log_conf", restarts: int = 1, random_start: bool = True,
                 max_batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__(eps, norm, steps, objective, random_start, restarts, max_batch_size, seed)
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.rho, self.momentum = float(rho), float(momentum)

    def _attack(self, x: Tensor, loss_grad, x_init: Tensor | None) -> Fn.AFWResult:
        return Fn.apgd(x, loss_grad, self.eps, self.norm, self.steps, self.rho, self.momentum, x_init)
