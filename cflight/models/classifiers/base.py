"""Shared pieces of cflight classifiers: size parsing and normalisation inside ``forward``."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``28`` or ``(28, 28)`` → ``(28, 28)``."""
    if isinstance(image_size, int):
        return (image_size, image_size)
    size = tuple(int(s) for s in image_size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; a scalar mean/std applies to every channel.

    The statistics are non-persistent buffers: they follow ``.to(device)`` but are rebuilt from the
    network's constructor arguments rather than stored in weight files.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float], channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", self._stat(mean, channels, "mean"), persistent=False)
        self.register_buffer("std", self._stat(std, channels, "std"), persistent=False)
        if bool((self.std <= 0).any()):
            raise ValueError(f"std must be positive, got {std!r}")

    @staticmethod
    def _stat(value: float | Sequence[float], channels: int, name: str) -> Tensor:
        t = torch.as_tensor(value, dtype=torch.float32).flatten()
        if t.numel() == 1:
            t = t.expand(channels)
        if t.numel() != channels:
            raise ValueError(f"{name} has {t.numel()} values for {channels} input channels")
        return t.reshape(1, channels, 1, 1).clone()

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def conv_pool_stack(name: str, in_channels: int, image_size: tuple[int, int], widths: Sequence[int],
                    batch_norm: bool) -> tuple[nn.Sequential, int]:
    """``[Conv3×3 (+ BN) + ReLU + MaxPool2]`` per width, and its output channels; the image size must be
    divisible by ``2^len(widths)`` (one line naming network ``name`` otherwise)."""
    if not widths:
        raise ValueError(f"{name} needs at least one conv width")
    factor = 2 ** len(widths)
    if image_size[0] % factor or image_size[1] % factor:
        raise ValueError(f"{name} with {len(widths)} blocks needs an image size divisible by {factor}, "
                         f"got {image_size}")
    layers: list[nn.Module] = []
    channels = in_channels
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm)]
        layers += [nn.BatchNorm2d(width)] if batch_norm else []
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*layers), channels
