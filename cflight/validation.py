"""Input checks that run before any work starts (DESIGN.md §6); each failure is a one-line
:class:`BadInputError` that names the problem and the fix (the ``cflight`` command prints it as one line, also
when it happens inside a running job)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cflight.types import ClassTarget, RegressionTarget


class BadInputError(ValueError):
    """Bad input found by cflight's own checks (images, targets, data files, checkpoints): the message is one
    line naming the problem and the fix. A ``ValueError``, so ``except ValueError`` still catches it."""


class MissingInputError(BadInputError, FileNotFoundError):
    """A file or folder cflight needs is missing or empty (also a ``FileNotFoundError``)."""


def _where(x: Tensor, bad: Tensor, index: Tensor | None) -> str:
    """`` (first at dataset index i)`` for the first image with a ``bad`` value (``index``: the rows' dataset
    indices; without it the batch row is named)."""
    rows = bad.flatten(1).any(1).nonzero()
    if not len(rows):
        return ""
    row = int(rows[0])
    i = int(index[row]) if index is not None and len(index) == x.shape[0] else row
    return f" (first at {'dataset index' if index is not None else 'batch row'} {i})"


def check_images(x: Tensor, name: str = "images", index: Tensor | None = None) -> None:
    """``x`` must be a float ``[B, C, H, W]`` tensor with finite values in [0, 1]; ``index`` (the dataset
    indices of the rows) lets the message name the first offending image."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise BadInputError(f"{name} must have shape [B, C, H, W], got {tuple(x.shape)}; add the missing "
                            "batch or channel dimension (x[None] for one image, x[:, None] for grey images)")
    if not x.is_floating_point():
        raise BadInputError(f"{name} must be floating point in [0, 1], got dtype {x.dtype}; convert them "
                            "(e.g. uint8 pixels: x.float() / 255)")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        raise BadInputError(f"{name} contain NaN or Inf values{_where(x, ~finite, index)}; images must be "
                            "finite floats in [0, 1]: fix the data or the transform that produced them")
    lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
    if lo < 0 or hi > 1:
        raise BadInputError(
            f"{name} must lie in [0, 1] (cflight's image convention), got range [{lo:.3g}, {hi:.3g}]"
            f"{_where(x, (x < 0) | (x > 1), index)}; scale them to [0, 1] (uint8 pixels / 255, undo any "
            "mean/std normalisation: cflight's classifiers normalise inside forward)")


def _size(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def check_model_input(x: Tensor, model: nn.Module, name: str = "model") -> None:
    """Compare ``x`` with the ``in_channels`` / ``image_size`` a cflight network declares (when it does)."""
    channels = getattr(model, "in_channels", None)
    if channels is not None and x.shape[1] != channels:
        raise BadInputError(f"{name} expects {channels}-channel images, got {x.shape[1]} channels; convert "
                            f"the data to {channels} channels (e.g. the datamodule's channels: {channels}) "
                            f"or use a {name} for {x.shape[1]}-channel images")
    size = getattr(model, "image_size", None)
    if size is not None and tuple(x.shape[2:]) != _size(size):
        h, w = _size(size)
        raise BadInputError(f"{name} expects images of size {_size(size)}, got {tuple(x.shape[2:])}; resize "
                            f"the data to {h}×{w} (e.g. the datamodule's image_size: {h}) or use a {name} "
                            f"for {x.shape[2]}×{x.shape[3]} images")


def check_target(target: ClassTarget | RegressionTarget, pred: Tensor) -> None:
    """The target must match the batch and the model's output ``pred`` ``[B, K]``."""
    if len(target) != pred.shape[0]:
        raise BadInputError(f"target has {len(target)} entries for a batch of {pred.shape[0]} images; give "
                            "one target per image")
    if isinstance(target, ClassTarget):
        n = max(pred.shape[1], 2)
        bad = (target.classes < 0) | (target.classes >= n)
        if bool(bad.any()):
            cls = int(target.classes[bad][0])
            raise BadInputError(f"unknown class index {cls}: the model has {n} classes (0..{n - 1}); "
                                f"choose a target class in 0..{n - 1}")
    elif isinstance(target, RegressionTarget):
        if pred.ndim != 2 or pred.shape[1] != 1:
            outputs = pred.shape[1] if pred.ndim == 2 else tuple(pred.shape[1:])
            raise BadInputError(f"a RegressionTarget needs a model with one output (a regressor), this model "
                                f"gives {outputs} outputs; use a ClassTarget for a classifier")
        if not bool(torch.isfinite(target.value).all()):
            raise BadInputError("regression target values must be finite; replace NaN/Inf target values")
    else:
        raise TypeError(f"target must be a ClassTarget or RegressionTarget, got {type(target).__name__}")


def outside_target_range(values: Tensor, model: nn.Module, tolerance: float | Tensor = 0.0) -> Tensor:
    """``[N]`` bool: the regression targets ``values`` lying outside ``model.target_range`` (the range of its
    training targets) by more than ``tolerance`` (δ, a scalar or ``[N]``). All false for a model without a
    recorded range; non-finite values are never flagged."""
    v = values.detach().reshape(-1).float()
    trained = getattr(model, "target_range", None)
    if trained is None:
        return torch.zeros_like(v, dtype=torch.bool)
    tol = torch.as_tensor(tolerance, dtype=v.dtype, device=v.device).reshape(-1)
    lo, hi = float(trained[0]), float(trained[1])
    return torch.isfinite(v) & ((v < lo - tol) | (v > hi + tol))


def check_target_range(values: Tensor, model: nn.Module, tolerance: float = 0.0, name: str = "model") -> None:
    """Refuse regression targets outside the range of targets ``model`` was trained on.

    A regressor records ``target_range = (min, max)`` of its training targets (``RegressorModule``; kept in
    exported files' metadata). A counterfactual toward a value it never saw asks where the regressor
    extrapolates: its answer there says nothing about the data, so a job whose configured values lie outside
    refuses (one line) before any work instead of warning; per-image targets a policy derives are checked by
    :func:`outside_target_range` and those images skipped. Models without a recorded range (published files,
    older exports) are not checked.
    """
    bad = outside_target_range(values, model, tolerance)
    if bool(bad.any()):
        lo, hi = (float(v) for v in model.target_range)
        value = float(values.detach().reshape(-1).float()[bad][0])
        raise BadInputError(f"regression target {value:.4g} lies outside the range the {name} was "
                            f"trained on [{lo:.4g}, {hi:.4g}] (± tolerance {tolerance:.3g}); choose target values "
                            "inside it: beyond it the regressor extrapolates")
