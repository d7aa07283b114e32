"""Morphometrics as an image-space descriptor model: exact measurements instead of a learned predictor."""
from __future__ import annotations

from torch import Tensor, nn

from cflight.data.morphometrics import MORPHOMETRIC_NAMES, morphometrics
from cflight.models.registry import register_net


@register_net("morphometrics", kind="descriptor")
class MorphometricDescriptors(nn.Module):
    """``[B, C, H, W]`` in [0, 1] → ``[B, 6]`` morphometrics (area, thickness, slant, width, height, holes).

    Measured from pixels (see :mod:`cflight.data.morphometrics`), so attributions of MNIST-like
    counterfactuals need no trained descriptor model. Not differentiable (thresholded); used for scoring.
    """

    def __init__(self, threshold: float = 0.5, min_hole_px: int = 2) -> None:
        super().__init__()
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
        self.threshold, self.min_hole_px = threshold, min_hole_px
        self.names = list(MORPHOMETRIC_NAMES)

    def forward(self, x: Tensor) -> Tensor:
        return morphometrics(x, self.threshold, self.min_hole_px).to(x.device)
