"""Target policies: which outcome each image's counterfactual should reach (DESIGN.md §3)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from cflight.types import LABEL, ClassTarget
from cflight.validation import BadInputError


def _check_threshold(threshold: float, name: str = "threshold") -> float:
    if not 0 < threshold < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {threshold}")
    return float(threshold)


class TargetPolicy(ABC):
    """Maps the explained model's logits on a batch to a target and a mask of images to explain."""

    @abstractmethod
    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[ClassTarget, Tensor]:
        """Args: ``logits`` ``[B, K]``, the dict batch. Returns ``(target, keep [B] bool)``."""


class FixedClass(TargetPolicy):
    """Every image toward ``target_class`` (images already predicted as it are skipped).

    Args:
        target_class: class index; for a binary (one-logit) model 1 is the positive class.
        threshold: τ on the target probability (0.5 = the paper's digit→digit edits, 0.75 its fixes).
    """

    def __init__(self, target_class: int, threshold: float = 0.5) -> None:
        if target_class < 0:
            raise ValueError(f"target_class must be >= 0, got {target_class}")
        self.target_class, self.threshold = target_class, _check_threshold(threshold)

    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[ClassTarget, Tensor]:
        classes = torch.full((logits.shape[0],), self.target_class, dtype=torch.long, device=logits.device)
        if logits.shape[1] == 1:
            keep = (logits[:, 0] > 0).long() != classes
        else:
            keep = logits.argmax(1) != classes
        return ClassTarget(classes, self.threshold), keep


class SecondMostLikely(TargetPolicy):
    """Toward the class the model ranks second (multiclass models), to probability above ``threshold``."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = _check_threshold(threshold)

    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[ClassTarget, Tensor]:
        if logits.shape[1] < 2:
            raise BadInputError("SecondMostLikely needs a multiclass model, this one has one logit; use "
                                "target_policy cflight.targets.FlipBinary (or FixedClass) for a binary model")
        classes = logits.topk(2, dim=1).indices[:, 1]
        return ClassTarget(classes, self.threshold), torch.ones_like(classes, dtype=torch.bool)


class TrueLabel(TargetPolicy):
    """Toward the true label ("counterfactual fix", spec §1.3); by default only misclassified images."""

    def __init__(self, threshold: float = 0.75, only_misclassified: bool = True) -> None:
        self.threshold, self.only_misclassified = _check_threshold(threshold), only_misclassified

    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[ClassTarget, Tensor]:
        if LABEL not in batch:
            raise BadInputError("TrueLabel needs batches with a 'label' key, this dataset has no labels; "
                                "give the data labels (e.g. label_column) or use another target_policy")
        labels = batch[LABEL].to(logits.device).long()
        pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
        keep = pred != labels if self.only_misclassified else torch.ones_like(labels, dtype=torch.bool)
        return ClassTarget(labels, self.threshold), keep


class FlipBinary(TargetPolicy):
    """The reference CelebA rule (spec §1.3): increase to ``p > 0.75`` if ``p < 0.5``, else decrease to ``p < 0.25``."""

    def __init__(self, increase_threshold: float = 0.75, decrease_threshold: float = 0.25) -> None:
        self.up = _check_threshold(increase_threshold, "increase_threshold")
        self.down = _check_threshold(decrease_threshold, "decrease_threshold")

    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[ClassTarget, Tensor]:
        if logits.shape[1] != 1:
            raise BadInputError(f"FlipBinary needs a one-logit model, this one has {logits.shape[1]} "
                                "outputs; use target_policy cflight.targets.SecondMostLikely or FixedClass for "
                                "a multiclass model")
        p = torch.sigmoid(logits[:, 0])
        direction = torch.where(p < 0.5, 1, -1)
        threshold = torch.where(p < 0.5, self.up, self.down).float()
        classes = torch.ones_like(direction)
        return ClassTarget(classes, threshold, direction), torch.ones_like(classes, dtype=torch.bool)
