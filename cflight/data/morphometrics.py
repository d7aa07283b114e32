"""Morphometric descriptors of a stroke image (digits, clothing silhouettes), computed from pixels.

A simplified take on Morpho-MNIST's measurements, vectorised over a batch:

- ``area``: fraction of pixels above ``threshold``;
- ``thickness``: mean stroke width in pixels, ``2·area_px / perimeter_px`` (perimeter counted as 4-neighbour
  foreground/background edges, so a stroke of length L and width w gives ≈ 2L + 2w);
- ``slant``: shear angle in radians from intensity-weighted moments, ``atan(-cov(x, y) / var(y))``, positive
  when the top leans right (image rows grow downwards);
- ``width`` / ``height``: bounding box of the thresholded foreground, as fractions of the image width/height;
- ``holes``: the number of background regions enclosed by the foreground (4-connected, at least
  ``min_hole_px`` pixels), a topological measure: 0 for "1", 1 for "0"/"6"/"9", 2 for a closed "8".
"""

from __future__ import annotations

import torch
from einops import reduce
from torch import Tensor

MORPHOMETRIC_NAMES: list[str] = ["area", "thickness", "slant", "width", "height", "holes"]


def morphometrics(images: Tensor, threshold: float = 0.5, min_hole_px: int = 2) -> Tensor:
    """Descriptors ``[B, 6]`` (order of ``MORPHOMETRIC_NAMES``) of bright-on-dark images ``[B, C, H, W]`` or
    a single ``[C, H, W]`` image (then ``[6]``). Channels are averaged; an empty image gives zeros."""
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

    ys = torch.arange(h, dtype=torch.float32, device=x.device).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32, device=x.device).view(1, 1, w)
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
    holes = count_holes(mask, min_hole_px).float()
    out = torch.stack([area_px / (h * w), thickness, slant, width, height, holes], dim=1)
    return out[0] if single else out


def _extent(occupied: Tensor) -> Tensor:
    """Length of the span from the first to the last True entry per row of ``[B, N]`` (0 when none)."""
    n = occupied.shape[1]
    idx = torch.arange(n, device=occupied.device).expand_as(occupied)
    first = torch.where(occupied, idx, n).amin(dim=1)
    last = torch.where(occupied, idx, -1).amax(dim=1)
    return (last - first + 1).clamp(min=0).float()


def _shift_max(x: Tensor) -> Tensor:
    """Max of each pixel and its 4 neighbours (zero outside), ``[B, H, W]``."""
    p = torch.nn.functional.pad(x, (1, 1, 1, 1))
    return torch.stack([x, p[:, :-2, 1:-1], p[:, 2:, 1:-1], p[:, 1:-1, :-2], p[:, 1:-1, 2:]]).amax(0)


def count_holes(foreground: Tensor, min_px: int = 1) -> Tensor:
    """Number of 4-connected background components not touching the border, of at least ``min_px`` pixels.

    ``foreground`` ``[B, H, W]`` bool → ``[B]`` long. Vectorised label propagation: every enclosed background
    pixel starts with its own id and repeatedly takes the largest id among its enclosed 4-neighbours, so each
    component ends with one id (its largest pixel index).
    """
    b, h, w = foreground.shape
    background = ~foreground
    # background reachable from the border: flood fill by repeated 4-neighbour dilation inside the background
    border = torch.zeros_like(background)
    border[:, 0, :] = border[:, -1, :] = True
    border[:, :, 0] = border[:, :, -1] = True
    outside = background & border
    while True:
        grown = (_shift_max(outside.float()) > 0) & background
        if torch.equal(grown, outside):
            break
        outside = grown
    enclosed = background & ~outside
    ids = torch.arange(1, h * w + 1, dtype=torch.float32, device=foreground.device).view(1, h, w).expand(b, h, w)
    label = torch.where(enclosed, ids, torch.zeros_like(ids))
    while True:
        grown = torch.where(enclosed, _shift_max(label), label)
        if torch.equal(grown, label):
            break
        label = grown
    flat = label.long().flatten(1)  # 0 = not a hole
    sizes = torch.zeros(b, h * w + 1, dtype=torch.long, device=flat.device).scatter_add_(1, flat, torch.ones_like(flat))
    sizes[:, 0] = 0
    return (sizes >= max(min_px, 1)).sum(1)
