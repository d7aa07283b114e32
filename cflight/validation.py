"""Input checks that run before any work starts (DESIGN.md §6); each failure is a one-line ValueError."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cflight.types import ClassTarget, RegressionTarget


def check_images(x: Tensor, name: str = "images") -> None:
    """``x`` must be a float ``[B, C, H, W]`` tensor with finite values in [0, 1]."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape [B, C, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point in [0, 1], got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contain NaN or Inf values")
    lo, hi = float(x.min()), float(x.max()) if x.numel() else (0.0, 0.0)
    if lo < 0 or hi > 1:
        raise ValueError(f"{name} must lie in [0, 1] (cflight's image convention), got range [{lo:.3g}, {hi:.3g}]")


def _size(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def check_model_input(x: Tensor, model: nn.Module, name: str = "model") -> None:
    """Compare ``x`` with the ``in_channels`` / ``image_size`` a cflight network declares (when it does)."""
    channels = getattr(model, "in_channels", None)
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} expects {channels}-channel images, got {x.shape[1]} channels")
    size = getattr(model, "image_size", None)
    if size is not None and tuple(x.shape[2:]) != _size(size):
        raise ValueError(f"{name} expects images of size {_size(size)}, got {tuple(x.shape[2:])}")


def check_target(target: ClassTarget | RegressionTarget, pred: Tensor) -> None:
    """The target must match the batch and the model's output ``pred`` ``[B, K]``."""
    if len(target) != pred.shape[0]:
        raise ValueError(f"target has {len(target)} entries for a batch of {pred.shape[0]} images")
    if isinstance(target, ClassTarget):
        n = max(pred.shape[1], 2)
        bad = (target.classes < 0) | (target.classes >= n)
        if bool(bad.any()):
            cls = int(target.classes[bad][0])
            raise ValueError(f"unknown class index {cls}: the model has {n} classes (0..{n - 1})")
    elif isinstance(target, RegressionTarget):
        if not bool(torch.isfinite(target.value).all()):
            raise ValueError("regression target values must be finite")
    else:
        raise TypeError(f"target must be a ClassTarget or RegressionTarget, got {type(target).__name__}")
