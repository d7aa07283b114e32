"""Pure math of AC-RE / ACE (Ha & Bender 2025; Jeanneret et al. 2023), spec latent_and_regression.md §2.3, §3.2.

The signed l∞ PGD step, the per-sample objectives and distance penalty, and the change mask (normalised,
dilated, thresholded) that decides which pixels the inpainting pass keeps from the original.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cflight.methods.functional.core import class_score

__all__ = ["acre_class_loss", "change_mask", "dilate_mask", "distance_penalty", "keep_region",
           "regression_loss", "signed_step"]


def signed_step(x_adv: Tensor, grad: Tensor, x: Tensor, step_size: float, epsilon: float,
                moving: Tensor | None = None) -> Tensor:
    """``clamp(proj_{‖·−x‖∞≤ε}(x' − α·sign(g)), 0, 1)`` (spec §2.3 lines 5–6), all ``[B, C, H, W]``.

    ``moving`` ``[B]`` bool: rows where it is False are returned unchanged (no step, no projection). A zero
    gradient entry moves nothing (``sign(0) = 0``), so every pixel moves by exactly 0 or ±α before clamping.
    """
    new = x_adv - step_size * grad.sign()
    new = torch.minimum(torch.maximum(new, x - epsilon), x + epsilon).clamp(0, 1)
    if moving is None:
        return new
    return torch.where(moving.reshape(-1, *([1] * (x.ndim - 1))), new, x_adv)


def regression_loss(out: Tensor, value: Tensor) -> Tensor:
    """``(ŷ − ỹ)²`` per sample ``[B]`` from regressor outputs ``[B, 1]`` (the summands of ``MSELoss``, §2.2)."""
    return (out[:, 0] - value.to(out.dtype)) ** 2


def acre_class_loss(logits: Tensor, classes: Tensor, direction: Tensor) -> Tensor:
    """ACE's classification loss per sample ``[B]`` (spec §3.2): ``BCEWithLogits`` for one logit, ``CE`` else.

    One logit: the label is ``classes`` when ``direction = +1`` and its complement when −1 (the binary
    target ``1 − pred`` of ACE). ``K ≥ 2`` logits: ``−d·log p(c)`` (``d = +1`` is CE toward ``c``; ``d = −1``
    pushes ``p(c)`` down, which ACE's targeted code does not have).
    """
    if logits.shape[1] == 1:
        label = torch.where(direction > 0, classes, 1 - classes)
        return -class_score(logits, label, "log_prob")  # = BCEWithLogits(logit, label), stable form
    return -direction.to(logits.dtype) * class_score(logits, classes, "log_prob")


def distance_penalty(x: Tensor, x_adv: Tensor, l1: float, l2: float) -> Tensor:
    """``λ1·‖x − x'‖₁ + λ2·‖x − x'‖₂`` per sample ``[B]`` (spec §2.3 line 4; 0 when both λ are 0).

    ``vector_norm``'s backward at ``x' = x`` (the first iteration) is 0, not NaN.
    """
    d = (x_adv - x).flatten(1)
    total = x_adv.new_zeros(x.shape[0])
    if l1:
        total = total + l1 * d.abs().sum(1)
    if l2:
        total = total + l2 * torch.linalg.vector_norm(d, ord=2, dim=1)
    return total


def change_mask(x: Tensor, pe: Tensor) -> Tensor:
    """``M = Σ_c |x − pe| / max_pixels`` per image, ``[B, 1, H, W]`` in [0, 1] (spec §2.3 line 10).

    NaN guard (spec §2.9 quirk 2): where ``pe == x`` everywhere the reference divides 0 by 0; here such an
    image gets ``M ≡ 0`` — the whole image counts as unchanged, so the inpainting pass returns ``x``.
    """
    m = (x - pe).abs().sum(1, keepdim=True)
    peak = m.flatten(1).amax(1).reshape(-1, 1, 1, 1)
    return torch.where(peak > 0, m / peak.clamp(min=torch.finfo(m.dtype).tiny), torch.zeros_like(m))


def dilate_mask(mask: Tensor, kernel: int) -> Tensor:
    """Max-pool dilation, ``kernel`` odd, stride 1, padding ``(k − 1)/2`` (spec §2.3 line 11): same shape."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"dilation kernel must be an odd int >= 1, got {kernel}")
    return F.max_pool2d(mask, kernel, stride=1, padding=(kernel - 1) // 2)


def keep_region(dilated: Tensor, gamma: float) -> Tensor:
    """``B = 1[M_d < γ]`` (spec §2.3 line 12), bool: True = pixel kept from the original."""
    return dilated < gamma
