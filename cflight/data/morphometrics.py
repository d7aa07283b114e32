"""Morphometric descriptors of a stroke image (digits, clothing silhouettes), computed from pixels.

A simplified take on Morpho-MNIST's measurements, vectorised over a batch:

- ``area``: fraction of pixels above ``threshold``;
- ``thickness``: mean stroke width in pixels, ``2·area_px / perimeter_px`` (perimeter counted as 4-neighbour
  foreground/background edges, so a stroke of length L and width w gives ≈ 2L + 2w);
- ``slant``: shear angle in radians from intensity-weighted moments, ``atan(-cov(x, y) / var(y))``, positive
  when the top leans right (image rows grow downwards);
- ``width`` / ``height``: bounding box of the thresholded foreground, as fractions of the image width/height.
"""

from __future__ import annotations

import torch
from einops import reduce
from torch import Tensor

MORPHOMETRIC_NAMES: list[str] = ["area", "thickness", "slant", "width", "height"]


def morphometrics(images: Tensor, threshold: float = 0.5) -> Tensor:
    """Descriptors ``[B, 5]`` (order of ``MORPHOMETRIC_NAMES``) of bright-on-dark images ``[B, C, H, W]`` or
    a single ``[C, H, W]`` image (then ``[5]``). Channels are averaged; an empty image gives zeros."""
    single = images.ndim == 3
    x = images[None] if single else images
    x = reduce(x.float(), "b c h w -> b h w", "mean")
    b, h, w = x.shape
    mask = x > threshold
    m = mask.float()
    area_px = m.sum(dim=(1, 2))

    # perimeter: foreground/background transitions along rows and columns, outside counted as background
    padded = torch.nn.functional.pad(m, (1, 1, 1, 1))
    edges = (padded[:, 1:, :] != padded[:, :-1, :]).sum(dim=(1, 2)) + (
        padded[:, :, 1:] != padded[:, :, :-1]
    ).sum(dim=(1, 2))
    thickness = torch.where(edges > 0, 2 * area_px / edges.clamp(min=1), torch.zeros_like(area_px))

    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    weight = x.clamp(min=0)
    total = weight.sum(dim=(1, 2)).clamp(min=1e-8)
    my = (weight * ys).sum(dim=(1, 2)) / total
    mx = (weight * xs).sum(dim=(1, 2)) / total
    dy, dx = ys - my.view(b, 1, 1), xs - mx.view(b, 1, 1)
    var_y = (weight * dy * dy).sum(dim=(1, 2)) / total
    cov_xy = (weight * dx * dy).sum(dim=(1, 2)) / total
    slant = torch.where(var_y > 1e-6, torch.atan(-cov_xy / var_y.clamp(min=1e-6)), torch.zeros_like(var_y))

    rows, cols = mask.any(dim=2), mask.any(dim=1)
    height = _extent(rows) / h
    width = _extent(cols) / w
    out = torch.stack([area_px / (h * w), thickness, slant, width, height], dim=1)
    return out[0] if single else out


def _extent(occupied: Tensor) -> Tensor:
    """Length of the span from the first to the last True entry per row of ``[B, N]`` (0 when none)."""
    n = occupied.shape[1]
    idx = torch.arange(n).expand_as(occupied)
    first = torch.where(occupied, idx, n).amin(dim=1)
    last = torch.where(occupied, idx, -1).amax(dim=1)
    return (last - first + 1).clamp(min=0).float()
