"""Morphometrics as an image-space descriptor model: exact measurements instead of a learned predictor."""
from __future__ import annotations

from torch import Tensor, nn

from cflight.data.morphometrics import MORPHOMETRIC_NAMES, morphometrics
from cflight.models.registry import register_net


@register_net("morphometrics", kind="descriptor")
class MorphometricDescriptors(nn.Module):
    """``[B, C, H, W]`` in [0, 1] → ``[B, 7]`` morphometrics (area, length, thickness, slant, width, height,
    holes), measured as Morpho-MNIST does (Castro et al. 2019; see :mod:`cflight.data.morphometrics`).

    Measured from pixels, so attributions of MNIST-like counterfactuals need no trained descriptor model, and
    they are the very values the datasets' ``descriptors`` hold (the same function), so a descriptor network
    trained on those (:class:`~cflight.models.descriptors.ImageDescriptorCNN`, the differentiable stand-in)
    learns these definitions. Not differentiable (thresholded, skeletonised; computed on the CPU, about
    20 ms an image at ``scale=4``); used for scoring.

    Args:
        threshold: relative binarisation threshold (0.5: half-way between the image's min and max).
        min_hole_px: smallest enclosed region counted as a hole, in original pixels.
        scale: upscaling factor before measuring (Morpho-MNIST: 4).
    """

    def __init__(self, threshold: float = 0.5, min_hole_px: float = 2.0, scale: int = 4) -> None:
        super().__init__()
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
        self.threshold, self.min_hole_px, self.scale = threshold, min_hole_px, int(scale)
        self.names = list(MORPHOMETRIC_NAMES)

    def forward(self, x: Tensor) -> Tensor:
        return morphometrics(x, self.threshold, self.min_hole_px, self.scale).to(x.device)
