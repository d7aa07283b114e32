"""Shared value types: targets, method outputs and batch keys.

Images are ``[B, C, H, W]`` floats in ``[0, 1]`` at every public API (DESIGN.md §3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# Keys of the dict batches every cflight dataset yields.
IMAGE = "image"
INDEX = "index"
LABEL = "label"
TARGET = "target"
DESCRIPTORS = "descriptors"
MASK = "mask"  # [1, H, W] pixels of the explained factor (squares: the inner square), where a dataset has one
# bool: False for a sample whose file could not be read (its image is a placeholder); absent means readable.
READABLE = "readable"


@dataclass
class ClassTarget:
    """Target of a classification counterfactual.

    Args:
        classes: ``[B]`` long, the class whose probability is pushed. For a binary model (one logit) this
            is 1 for "positive" (the sigmoid probability) and the direction says which way to push it.
        threshold: probability threshold τ; a scalar or ``[B]``. Reached when ``p > τ`` (direction +1)
            or ``p < τ`` (direction −1), strict as in the reference code (spec §1.3 line 6).
        direction: ``[B]`` of ±1 (increase / decrease); defaults to all +1.
    """

    classes: Tensor
    threshold: float | Tensor = 0.5
    direction: Tensor | None = None

    def __post_init__(self) -> None:
        self.classes = torch.as_tensor(self.classes, dtype=torch.long).reshape(-1)
        if self.direction is None:
            self.direction = torch.ones_like(self.classes)
        self.direction = torch.as_tensor(self.direction, dtype=torch.long, device=self.classes.device).reshape(-1)
        if self.direction.shape != self.classes.shape:
            raise ValueError(f"direction has shape {tuple(self.direction.shape)}, classes {tuple(self.classes.shape)}")
        if not bool(((self.direction == 1) | (self.direction == -1)).all()):
            raise ValueError("direction must contain only +1 (increase) or -1 (decrease)")
        thr = torch.as_tensor(self.threshold, dtype=torch.float32)
        if bool(((thr <= 0) | (thr >= 1)).any()):
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {self.threshold}")

    def __len__(self) -> int:
        return int(self.classes.numel())

    def select(self, rows: Tensor) -> "ClassTarget":
        """The target restricted to ``rows`` (a long index or bool mask)."""
        thr = self.threshold
        if isinstance(thr, Tensor) and thr.ndim > 0:
            thr = thr[rows]
        return ClassTarget(self.classes[rows], thr, self.direction[rows])

    def to(self, device: torch.device | str) -> "ClassTarget":
        thr = self.threshold.to(device) if isinstance(self.threshold, Tensor) else self.threshold
        return ClassTarget(self.classes.to(device), thr, self.direction.to(device))


@dataclass
class RegressionTarget:
    """Target of a regression counterfactual: reach ``|f(x) − value| ≤ tolerance``.

    Args:
        value: ``[B]`` target values.
        tolerance: δ, a scalar or ``[B]``.
    """

    value: Tensor
    tolerance: float | Tensor = 0.05

    def __post_init__(self) -> None:
        self.value = torch.as_tensor(self.value, dtype=torch.float32).reshape(-1)
        if bool((torch.as_tensor(self.tolerance) < 0).any()):
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")

    def __len__(self) -> int:
        return int(self.value.numel())

    def select(self, rows: Tensor) -> "RegressionTarget":
        tol = self.tolerance
        if isinstance(tol, Tensor) and tol.ndim > 0:
            tol = tol[rows]
        return RegressionTarget(self.value[rows], tol)

    def to(self, device: torch.device | str) -> "RegressionTarget":
        tol = self.tolerance.to(device) if isinstance(self.tolerance, Tensor) else self.tolerance
        return RegressionTarget(self.value.to(device), tol)


Target = ClassTarget | RegressionTarget


def predicted_class(outputs: Tensor) -> Tensor:
    """``[B]`` long: ``argmax`` of ``[B, K]`` logits, or ``1[logit > 0]`` for a binary model (``K = 1``)."""
    return (outputs[:, 0] > 0).long() if outputs.shape[1] == 1 else outputs.argmax(1)


@dataclass
class CounterfactualOutput:
    """What every counterfactual method returns.

    Attributes:
        x_cf: ``[B, C, H, W]`` counterfactual images in [0, 1].
        pred: ``[B, K]`` model output (logits, or values for a regressor) on the input images.
        pred_cf: ``[B, K]`` model output on ``x_cf``.
        success: ``[B]`` bool, the target was reached by ``x_cf``.
        steps: ``[B]`` long, optimisation updates applied to each sample.
        latent: ``[B, D]`` final latent code, for latent-space methods.
        extras: method-specific per-sample tensors (e.g. ``reconstruction``, ``latent0``, ``zero_grad``).
        comparisons: results of other methods on the same images, targets and indices, by method name
            (filled by :class:`~cflight.methods.MethodComparison`; the fields above are its primary method's).
    """

    x_cf: Tensor
    pred: Tensor
    pred_cf: Tensor
    success: Tensor
    steps: Tensor
    latent: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    comparisons: dict[str, "CounterfactualOutput"] = field(default_factory=dict)

    def detach_cpu(self) -> "CounterfactualOutput":
        def conv(v: Any) -> Any:
            return v.detach().cpu() if isinstance(v, Tensor) else v

        return CounterfactualOutput(
            conv(self.x_cf), conv(self.pred), conv(self.pred_cf), conv(self.success), conv(self.steps),
            conv(self.latent), {k: conv(v) for k, v in self.extras.items()},
            {name: out.detach_cpu() for name, out in self.comparisons.items()},
        )

    @staticmethod
    def cat(outputs: list["CounterfactualOutput"]) -> "CounterfactualOutput":
        """Concatenate chunked outputs along the batch dimension."""
        first = outputs[0]

        def cat_opt(vals: list[Any]) -> Any:
            return None if vals[0] is None else torch.cat(vals)

        extras = {
            k: torch.cat([o.extras[k] for o in outputs]) if isinstance(v, Tensor) else v
            for k, v in first.extras.items()
        }
        return CounterfactualOutput(
            torch.cat([o.x_cf for o in outputs]), torch.cat([o.pred for o in outputs]),
            torch.cat([o.pred_cf for o in outputs]), torch.cat([o.success for o in outputs]),
            torch.cat([o.steps for o in outputs]), cat_opt([o.latent for o in outputs]), extras,
            {name: CounterfactualOutput.cat([o.comparisons[name] for o in outputs]) for name in first.comparisons},
        )
