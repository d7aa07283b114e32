"""Proximity of counterfactuals to their originals: l_p distances and the share of changed pixels.

Convention (the one of ``results.csv``, :func:`cflight.methods.functional.l1_distance`): a distance is the
*unnormalised* l_p norm of the change ``d = x' − x`` over all ``C·H·W`` values of one image in [0, 1],
``‖d‖_p = (Σ_i |d_i|^p)^{1/p}``, and the metric averages it over images. So ``l1`` grows with the image size
(divide by ``C·H·W`` for a per-value mean); ``l∞`` is the largest single change. l1.5 is the threat model of
SVCE (Boreiko et al. 2022); l1 and l∞ are what ACE (Jeanneret et al. 2023) reports beside FID.
"""
from __future__ import annotations

from typing import Any

import torch
from einops import reduce
from torch import Tensor
from torchmetrics import Metric

DISTANCE_KEYS = ("l1", "l1_5", "l2", "linf", "changed_fraction")
# ~2.5 of 255 grey levels: above 8-bit rounding (0.5/255) and the sub-visible noise a diffusion re-denoising
# leaves on untouched pixels, below any change a viewer sees. A project choice; no paper fixes it.
DEFAULT_CHANGE_THRESHOLD = 0.01


def changed_fraction(x: Tensor, x_cf: Tensor, threshold: float = DEFAULT_CHANGE_THRESHOLD) -> Tensor:
    """Share of pixel *positions* changed, ``[B]``: ``mean_{h,w} 1[max_c |x'_{chw} − x_{chw}| > threshold]``.

    A position counts once however many channels changed (lower is sparser). ``x``, ``x_cf``: ``[B, C, H, W]``.
    """
    change = reduce((x_cf - x).abs(), "b c h w -> b h w", "max")
    return (change > threshold).flatten(1).to(x.dtype).mean(1)


def image_distances(x: Tensor, x_cf: Tensor, threshold: float = DEFAULT_CHANGE_THRESHOLD) -> dict[str, Tensor]:
    """Per-image ``l1``, ``l1_5``, ``l2``, ``linf`` (unnormalised norms of ``x' − x`` over ``C·H·W``) and
    ``changed_fraction`` (:func:`changed_fraction`), each ``[B]``, for ``x``, ``x_cf`` ``[B, C, H, W]``."""
    if x.shape != x_cf.shape or x.ndim != 4:
        raise ValueError(f"expected two [B, C, H, W] batches of one shape, got {tuple(x.shape)} and "
                         f"{tuple(x_cf.shape)}")
    d = (x_cf - x).flatten(1)
    norms = {key: torch.linalg.vector_norm(d, ord=p, dim=1)
             for key, p in (("l1", 1.0), ("l1_5", 1.5), ("l2", 2.0), ("linf", float("inf")))}
    return {**norms, "changed_fraction": changed_fraction(x, x_cf, threshold)}


class ImageDistances(Metric):
    """Mean over images of :func:`image_distances`: ``l1``, ``l1_5``, ``l2``, ``linf``, ``changed_fraction``.

    ``update(x [B, C, H, W], x_cf [B, C, H, W])``; ``compute()`` → those keys (scalars, NaN before any image)
    and ``n``. States are float64 sums summed across processes (``dist_reduce_fx="sum"``).

    Args:
        threshold: the change above which a pixel position counts as changed (default 0.01, see module).
    """

    full_state_update = False

    def __init__(self, threshold: float = DEFAULT_CHANGE_THRESHOLD, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.threshold = float(threshold)
        self.add_state("sums", torch.zeros(len(DISTANCE_KEYS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: Tensor, x_cf: Tensor) -> None:
        values = image_distances(x.detach(), x_cf.detach(), self.threshold)
        self.sums += torch.stack([values[k].to(self.sums).sum() for k in DISTANCE_KEYS])
        self.n += x.shape[0]

    def compute(self) -> dict[str, Tensor]:
        mean = self.sums / self.n
        return {**{k: mean[i] for i, k in enumerate(DISTANCE_KEYS)}, "n": self.n}
