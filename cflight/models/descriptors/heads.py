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
    """A small CNN predicting all descriptors from an image ``[B, C, H, W]`` in [0, 1]."""

    def __init__(self, names: Sequence[str], binary: Sequence[bool] | None = None, in_channels: int = 1,
                 image_size: int | tuple[int, int] = 28, width: int = 32) -> None:
        super().__init__()
        self._init_output(names, binary)
        self.in_channels = in_channels
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(2 * width, len(self.names))

    def logits(self, x: Tensor) -> Tensor:
        return self.head(rearrange(self.features(x), "b c 1 1 -> b c"))
