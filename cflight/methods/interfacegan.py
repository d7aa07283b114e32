"""InterFaceGAN-style closed-form latent edit, the baseline of Counterfactual Attacks (spec §1.6.6)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cflight.methods.base import CounterfactualMethod
from cflight.methods.functional import class_probability, threshold_reached
from cflight.models.acceleration import Acceleration
from cflight.models.registry import load_net
from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget
from cflight.validation import check_model_input


def closed_form_step(w: Tensor, beta: Tensor, bias: Tensor, p_star: Tensor) -> Tensor:
    """Move ``w`` ``[B, D]`` along ``β`` ``[B, D]`` so that ``σ(β·w' + b) = p*`` exactly.

    ``w' = w + η β`` with ``η = (logit(p*) − logit(p)) / ‖β‖²`` (Shen et al. 2020; spec §1.6.6).
    """
    logit_p = (w * beta).sum(1) + bias
    eta = (torch.logit(p_star) - logit_p) / (beta * beta).sum(1)
    return w + eta[:, None] * beta


class InterFaceGANEdit(CounterfactualMethod):
    """Closed-form edit along the normal of a latent logistic regression of the explained label.

    ``label_head`` is a linear layer on the latent (``Linear(D, C)``, one logistic per class, or
    ``Linear(D, 1)`` for a binary label) fit to the explained model's labels. For a target class ``c`` with
    threshold τ and direction d, the latent moves to where the head's probability equals ``τ + d·margin``
    (the paper's p* = 0.75 / 0.25 come from :class:`~cflight.targets.FlipBinary`). One decode, no search:
    whether the explained model agrees is what ``success`` reports. Each label uses its own head row (the
    reference notebook reused one regression for every label; that bug is not replicated).

    Args:
        generator: ``encode``/``decode`` as for :class:`~cflight.methods.LatentAttack` (or a checkpoint path).
        label_head: ``nn.Linear`` on the latent.
        margin: added beyond τ in the target direction (p* = τ + d·margin).
        acceleration: speed options for the generator (:class:`~cflight.models.acceleration.Acceleration`).
    """

    def __init__(self, generator: nn.Module | str, label_head: nn.Linear, margin: float = 0.0,
                 max_batch_size: int | None = None, seed: int = 0,
                 acceleration: Acceleration | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, seed=seed, acceleration=acceleration)
        if isinstance(generator, str):
            generator = load_net(generator, expected_kind="generator")
        if not 0 <= margin < 0.5:
            raise ValueError(f"margin must lie in [0, 0.5), got {margin}")
        self.generator = self.accelerate(generator.requires_grad_(False))
        self.label_head = label_head.requires_grad_(False)
        self.margin = margin

    def check_inputs(self, x: Tensor) -> None:
        check_model_input(x, self.generator, name="generator")

    def run(self, x: Tensor, target: ClassTarget | RegressionTarget, model: nn.Module, index: Tensor,
            pred: Tensor) -> CounterfactualOutput:
        if not isinstance(target, ClassTarget):
            raise TypeError("InterFaceGANEdit needs a ClassTarget (a logistic label direction)")
        with torch.no_grad():
            enc = self.generator.encode(x)
            w = enc if isinstance(enc, Tensor) else enc[0]  # the mean: the closed form is deterministic
            weight, bias = self.label_head.weight, self.label_head.bias
            if weight.shape[0] == 1:
                beta = weight.expand(w.shape[0], -1)
                b = bias.expand(w.shape[0])
                sign = torch.where(target.classes == 1, 1.0, -1.0).to(w)
                beta, b = beta * sign[:, None], b * sign
            else:
                beta, b = weight[target.classes], bias[target.classes]
            thr = torch.as_tensor(target.threshold, dtype=w.dtype, device=w.device).expand(w.shape[0])
            p_star = (thr + target.direction.to(w.dtype) * self.margin).clamp(1e-6, 1 - 1e-6)
            w_cf = closed_form_step(w, beta, b, p_star)
            x_cf = self.generator.decode(w_cf)
            recon = self.generator.decode(w)
            pred_cf = model(x_cf)
            success = threshold_reached(class_probability(pred_cf, target.classes), target.threshold, target.direction)
        return CounterfactualOutput(x_cf, pred, pred_cf, success, torch.zeros_like(index), latent=w_cf,
                                    extras={"reconstruction": recon, "latent0": w})
