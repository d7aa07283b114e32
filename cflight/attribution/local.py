"""Local (per-counterfactual) descriptor attributions (Goldwasser & Hooker 2025, spec §1.6.3)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def descriptor_change(before: Tensor, after: Tensor) -> Tensor:
    """Signed change ``s = a(after) − a(before)`` of every descriptor prediction, ``[B, K]``.

    For probability descriptors ``s_k ∈ (−1, 1)``; antisymmetric by construction.
    """
    if before.shape != after.shape:
        raise ValueError(f"descriptor predictions differ in shape: {tuple(before.shape)} vs {tuple(after.shape)}")
    return after - before


@torch.no_grad()
def latent_attribution(descriptors: nn.Module, z0: Tensor, z_cf: Tensor) -> Tensor:
    """Attribution in latent space, exactly as the paper: descriptor heads on ``z0`` and ``z_cf`` → ``[B, K]``.

    Each counterfactual is compared with its own original latent (the reference notebook's stale-index bug,
    which compared every counterfactual with one fixed original, does not exist here).
    """
    return descriptor_change(descriptors(z0), descriptors(z_cf))


@torch.no_grad()
def image_attribution(descriptors: nn.Module, x: Tensor, x_cf: Tensor) -> Tensor:
    """Attribution in image space, for any method: an image descriptor model on ``x`` and ``x_cf`` → ``[B, K]``."""
    return descriptor_change(descriptors(x), descriptors(x_cf))


def top_k(scores: Tensor, names: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` descriptors with the largest ``|score|``, with their signed values, largest first."""
    if scores.ndim != 1 or scores.numel() != len(names):
        raise ValueError(f"scores must be a [K] vector matching {len(names)} names, got {tuple(scores.shape)}")
    order = torch.argsort(scores.abs(), descending=True, stable=True)[:k]
    return [(names[i], float(scores[i])) for i in order.tolist()]
