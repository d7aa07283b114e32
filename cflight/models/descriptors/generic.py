"""Generic image descriptors: measurements that mean something on any image, not only on digits."""
from __future__ import annotations

import torch
from einops import reduce
from torch import Tensor, nn

from cflight.models.registry import register_net

GENERIC_NAMES = ["mean_intensity", "contrast", "gradient", "centre_x", "centre_y", "spread", "area"]
CHANNEL_NAMES = ["mean_red", "mean_green", "mean_blue"]


@register_net("generic_image", kind="descriptor")
class GenericImageDescriptors(nn.Module):
    """``[B, C, H, W]`` in [0, 1] → ``[B, K]`` generic measurements of each image (C = ``channels``, 1 or 3).

    Measured on the grey image ``g`` (the mean over channels), each a number a person can check by eye:

    * ``mean_intensity``: mean of ``g`` (overall brightness).
    * ``contrast``: standard deviation of ``g`` over the pixels.
    * ``gradient``: mean absolute difference between horizontally neighbouring pixels plus the same for
      vertically neighbouring ones (edge density; 0 on a flat image, larger with more or sharper edges).
    * ``centre_x``, ``centre_y``: intensity-weighted centre of mass in [0, 1] (0 = left / top column / row,
      1 = right / bottom); 0.5 for an all-black image.
    * ``spread``: intensity-weighted root-mean-square distance of the pixels from that centre, in units of the
      image side (how far the bright content reaches out).
    * ``area``: share of pixels with ``g > threshold`` (the "ink" or object area on a dark background).

    With ``channels=3`` also ``mean_red``, ``mean_green``, ``mean_blue`` (per-channel means). All but
    ``area`` are differentiable. Unlike :class:`~cflight.models.descriptors.MorphometricDescriptors` (stroke
    thickness, slant, holes: digit measurements), these make no assumption about what the images show, so
    they suit own-data jobs (``configs/folder/explain.yaml``); attributions read as "the counterfactual is
    brighter / has more edges / moved its mass left", standardised by their spread over the explained images.

    Args:
        channels: channels of the images (1 grey, 3 RGB; RGB adds the per-channel means).
        threshold: grey level above which a pixel counts toward ``area``.
    """

    def __init__(self, channels: int = 1, threshold: float = 0.5) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
        self.channels, self.threshold = int(channels), float(threshold)
        self.names = GENERIC_NAMES + (CHANNEL_NAMES if channels == 3 else [])

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"GenericImageDescriptors(channels={self.channels}) expects [B, {self.channels}, "
                             f"H, W] images, got shape {tuple(x.shape)}; set channels to the images' channel "
                             "count")
        b, _, h, w = x.shape
        g = reduce(x.float(), "b c h w -> b h w", "mean")
        mean = reduce(g, "b h w -> b", "mean")
        contrast = g.flatten(1).std(dim=1, unbiased=False)
        dx = (g[:, :, 1:] - g[:, :, :-1]).abs().flatten(1).mean(1) if w > 1 else g.new_zeros(b)
        dy = (g[:, 1:, :] - g[:, :-1, :]).abs().flatten(1).mean(1) if h > 1 else g.new_zeros(b)
        # pixel coordinates in [0, 1]; the centre of mass of an all-black image is the image centre
        ys = torch.linspace(0, 1, h, device=x.device).view(1, h, 1) if h > 1 else g.new_full((1, 1, 1), 0.5)
        xs = torch.linspace(0, 1, w, device=x.device).view(1, 1, w) if w > 1 else g.new_full((1, 1, 1), 0.5)
        mass = g.flatten(1).sum(1)
        empty = mass <= 0
        weights = torch.where(empty.view(b, 1, 1), torch.ones_like(g), g)
        total = weights.flatten(1).sum(1)
        cx = (weights * xs).flatten(1).sum(1) / total
        cy = (weights * ys).flatten(1).sum(1) / total
        dist2 = (xs - cx.view(b, 1, 1)) ** 2 + (ys - cy.view(b, 1, 1)) ** 2
        spread = torch.where(empty, g.new_zeros(b), ((g * dist2).flatten(1).sum(1) / total).sqrt())
        area = (g > self.threshold).float().flatten(1).mean(1)
        columns = [mean, contrast, dx + dy, cx, cy, spread, area]
        if self.channels == 3:
            columns += list(reduce(x.float(), "b c h w -> c b", "mean"))
        return torch.stack(columns, dim=1)
