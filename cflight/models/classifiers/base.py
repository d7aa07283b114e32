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
