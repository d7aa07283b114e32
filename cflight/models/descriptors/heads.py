"""Descriptor models: predict human-readable descriptors from latents (the paper's cheap path) or images.

Both return ``[B, K]``: probabilities for binary descriptors, values for continuous ones, so a local
attribution ``a(x_cf) − a(x)`` is a change of probability or of value (Goldwasser & Hooker 2025, §1.6).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from cflight.models.registry import register_net


class _DescriptorOutput(nn.Module):
    """Shared output handling: ``logits()`` raw, ``forward()`` with a sigmoid on binary descriptors."""

    names: list[str]

    def _init_output(self, names: Sequence[str], binary: Sequence[bool] | None) -> None:
        if not names:
            raise ValueError("descriptor names must not be empty")
        binary = [True] * len(names) if binary is None else list(binary)
        if len(binary) != len(names):
            raise ValueError(f"binary has {len(binary)} entries for {len(names)} descriptor names")
        self.names = list(names)
        self.register_buffer("binary", torch.tensor(binary, dtype=torch.bool), persistent=False)

    def logits(self, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, inputs: Tensor) -> Tensor:
        out = self.logits(inputs)
        return torch.where(self.binary, torch.sigmoid(out), out)


@register_net("latent_descriptors", kind="descriptor")
class LatentDescriptorHeads(_DescriptorOutput):
    """One logistic head per binary descriptor and one linear head per continuous one on a latent ``[B, D]``."""

    def __init__(self, latent_dim: int, names: Sequence[str], binary: Sequence[bool] | None = None) -> None:
        super().__init__()
        self._init_output(names, binary)
        self.latent_dim = latent_dim
        self.linear = nn.Linear(latent_dim, len(self.names))

    def logits(self, z: Tensor) -> Tensor:
        return self.linear(z)


@register_net("image_descriptors", kind="descriptor")
class ImageDescriptorCNN(_DescriptorOutput):
    """A small CNN predicting all descriptors from an image ``[B, C, H, W]`` in [0, 1].

    ``global_pool="avg"`` (default) or ``"max"`` pools the last feature map to one vector, so any image size
    works; ``None`` flattens it (``2·width·H/4·W/4`` features, size fixed by ``image_size``), which keeps
    where things are: descriptors such as position or size are then read far more accurately.
    """

    def __init__(self, names: Sequence[str], binary: Sequence[bool] | None = None, in_channels: int = 1,
                 image_size: int | tuple[int, int] = 28, width: int = 32,
                 global_pool: str | None = "avg") -> None:
        super().__init__()
        if global_pool not in ("avg", "max", None):
            raise ValueError(f"global_pool must be 'avg', 'max' or None, got {global_pool!r}")
        self._init_output(names, binary)
        self.in_channels = in_channels
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        h, w = self.image_size
        if global_pool is None and (h % 4 or w % 4):
            raise ValueError(f"global_pool=None needs an image size divisible by 4, got {self.image_size}")
        pool = {"avg": nn.AdaptiveAvgPool2d(1), "max": nn.AdaptiveMaxPool2d(1), None: nn.Identity()}
        # the same layer indices for every pool, so existing checkpoints still load
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), pool[global_pool],
        )
        features = 2 * width * (1 if global_pool else (h // 4) * (w // 4))
        self.head = nn.Linear(features, len(self.names))

    def logits(self, x: Tensor) -> Tensor:
        return self.head(rearrange(self.features(x), "b c h w -> b (c h w)"))
