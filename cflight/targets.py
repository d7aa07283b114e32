"""Target policies: which outcome each image's counterfactual should reach (DESIGN.md §3)."""
from __future__ import annotations

import csv as csvlib
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from cflight.types import INDEX, LABEL, TARGET, ClassTarget, RegressionTarget, Target, predicted_class
from cflight.validation import BadInputError

# Batch key ExplainModule adds for policies with ``uses_reconstruction``: the explained model's logits on the
# method's starting image (the generator's reconstruction G(E(x)) for latent methods) ``[B, K]``.
RECONSTRUCTION_LOGITS = "reconstruction_logits"


def _check_threshold(threshold: float, name: str = "threshold") -> float:
    if not 0 < threshold < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {threshold}")
    return float(threshold)


class TargetPolicy(ABC):
    """Maps the explained model's outputs on a batch to a target and a mask of images to explain.

    A policy with ``targets_per_image = k > 1`` gives ``k`` targets per image, image-major (rows ``b·k … b·k +
    k − 1`` are image ``b``'s): the explanation job explains each image toward each, one result row per
    (dataset index, target slot).
    """

    targets_per_image: int = 1
    task: str = "classification"  # or "regression": the policy gives RegressionTargets for a regressor
    # True: the policy reads ``batch[RECONSTRUCTION_LOGITS]`` (ExplainModule computes it only then)
    uses_reconstruction: bool = False

    @abstractmethod
    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[Target, Tensor]:
        """Args: ``logits`` ``[B, K]`` (a regressor's ``[B, 1]`` values), the dict batch.
        Returns ``(target, keep)`` with ``B · targets_per_image`` entries each (``keep`` bool)."""


def _check_tolerance(tolerance: float) -> float:
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    return float(tolerance)


def _regressor_output(values: Tensor, policy: str) -> Tensor:
    if values.ndim != 2 or values.shape[1] != 1:
        raise BadInputError(f"{policy} needs a regressor (one output per image), this model gives "
                            f"{values.shape[1] if values.ndim == 2 else tuple(values.shape)} outputs; use a class "
                            "policy (SecondMostLikely, FixedClass, TrueLabel) for a classifier")
    return values[:, 0]


class FixedValue(TargetPolicy):
    """Every image toward the regression value ``value``, reached when ``|f(x) − value| ≤ tolerance``
    (Ha & Bender 2025, spec §2.2: δ = 0.05); images already within it are skipped."""

    task = "regression"

    def __init__(self, value: float, tolerance: float = 0.05) -> None:
        self.value, self.tolerance = float(value), _check_tolerance(tolerance)

    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[RegressionTarget, Tensor]:
        y = _regressor_output(logits, "FixedValue")
        value = torch.full_like(y, self.value, dtype=torch.float32)
        return RegressionTarget(value, self.tolerance), (y - value).abs() > self.tolerance


class SquaresMirror(TargetPolicy):
    """The squares "mirror" experiment (spec §2.2): the inner square's red ``y`` (the dataset's ``target``)
    moves to the other half of [0, 1]: ``y255 = cast(255·y)``, ``ỹ = (y255 + 128)/255`` if ``y255 ≤ 127``,
    else ``(y255 − 128)/255``.

    ``cast="truncate"`` is the reference's (a truncating ``uint8``; float error can turn 127.0 into 126);
    ``"round"`` is the documented deviation that avoids it.
    """

    task = "regression"

    def __init__(self, tolerance: float = 0.05, cast: str = "truncate") -> None:
        if cast not in ("truncate", "round"):
            raise ValueError(f"cast must be 'truncate' or 'round', got {cast!r}")
        self.tolerance, self.cast = _check_tolerance(tolerance), cast

    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[RegressionTarget, Tensor]:
        _regressor_output(logits, "SquaresMirror")
        if TARGET not in batch:
            raise BadInputError("SquaresMirror needs batches with a 'target' key (the squares dataset's red "
                                "value); use cflight.data.SquaresDataModule or another target_policy")
        y = torch.as_tensor(batch[TARGET], dtype=torch.float64, device=logits.device) * 255
        y255 = y.floor() if self.cast == "truncate" else y.round()
        value = torch.where(y255 <= 127, y255 + 128, y255 - 128) / 255
        return RegressionTarget(value.float(), self.tolerance), torch.ones_like(value, dtype=torch.bool)


class SeveralValues(TargetPolicy):
    """Each image toward each of ``values`` (the paper's "granular reference values", spec §2.2:
    0.1, 0.2, 0.4, 0.6, 0.8): ``len(values)`` result rows per image, keyed by (dataset index, target slot).
    Targets an image already reaches are skipped."""

    task = "regression"

    def __init__(self, values: list[float] = (0.1, 0.2, 0.4, 0.6, 0.8), tolerance: float = 0.05) -> None:
        if not len(values):
            raise ValueError("values must hold at least one target value")
        self.values, self.tolerance = [float(v) for v in values], _check_tolerance(tolerance)
        self.targets_per_image = len(self.values)

    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[RegressionTarget, Tensor]:
        y = _regressor_output(logits, "SeveralValues")
        values = torch.tensor(self.values, dtype=torch.float32, device=logits.device).repeat(len(y))
        y = y.repeat_interleave(len(self.values))
        return RegressionTarget(values, self.tolerance), (y - values).abs() > self.tolerance


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
    """The reference CelebA rule (spec §1.3): increase to ``p > 0.75`` if ``p < 0.5``, else decrease to ``p < 0.25``.

    Args:
        increase_threshold, decrease_threshold: τ when increasing / decreasing.
        direction_from: which prediction ``p`` decides the direction. ``"reconstruction"`` (default, the
            reference's ``generate_cfs.py``: ``p = σ(f(G(E(x))))``) reads the method's starting image, which
            is the generator's reconstruction for latent methods and ``x`` itself for pixel methods;
            ``"original"`` reads ``f(x)``. With ``"original"`` a latent attack can "succeed" in 0 steps: when
            the reconstruction already lies beyond τ, the counterfactual is just the reconstruction.
    """

    def __init__(self, increase_threshold: float = 0.75, decrease_threshold: float = 0.25,
                 direction_from: str = "reconstruction") -> None:
        self.up = _check_threshold(increase_threshold, "increase_threshold")
        self.down = _check_threshold(decrease_threshold, "decrease_threshold")
        if direction_from not in ("reconstruction", "original"):
            raise ValueError(f"direction_from must be 'reconstruction' or 'original', got {direction_from!r}")
        self.direction_from = direction_from
        self.uses_reconstruction = direction_from == "reconstruction"

    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[ClassTarget, Tensor]:
        if logits.shape[1] != 1:
            raise BadInputError(f"FlipBinary needs a one-logit model, this one has {logits.shape[1]} "
                                "outputs; use target_policy cflight.targets.SecondMostLikely or FixedClass for "
                                "a multiclass model")
        deciding = batch.get(RECONSTRUCTION_LOGITS, logits) if self.uses_reconstruction else logits
        p = torch.sigmoid(deciding.to(logits.device)[:, 0])
        direction = torch.where(p < 0.5, 1, -1)
        threshold = torch.where(p < 0.5, self.up, self.down).float()
        classes = torch.ones_like(direction)
        return ClassTarget(classes, threshold, direction), torch.ones_like(classes, dtype=torch.bool)


def _check_class(value: int, what: str) -> int:
    if int(value) != value or value < 0:
        raise ValueError(f"{what} must be a class index >= 0, got {value!r}")
    return int(value)


class PairTargets(TargetPolicy):
    """Fixed (source → target) class pairs, e.g. the paper's digit→digit edits (spec §1.7: 4→9, 8→9, 1→7,
    9→7, 5→6, 0→8, 3→2, at τ = 0.5).

    An image whose source class has a pair is explained toward that pair's target; every other image is
    skipped (not explained, no result row), and so is one the model already predicts as its target.

    Args:
        pairs: ``[[source, target], …]``; each source at most once, ``source != target``.
        by: what the source is: ``"label"`` (default, as the reference notebook, which picks images by their
            true label) or ``"prediction"`` (the explained model's class on ``x``).
        threshold: τ on the target probability.
    """

    def __init__(self, pairs: Sequence[Sequence[int]], by: str = "label", threshold: float = 0.5) -> None:
        if by not in ("label", "prediction"):
            raise ValueError(f"by must be 'label' or 'prediction', got {by!r}")
        if not len(pairs):
            raise ValueError("pairs must hold at least one [source, target] pair")
        mapping: dict[int, int] = {}
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"each pair must be [source, target], got {list(pair)!r}")
            src, tgt = _check_class(pair[0], "a pair's source"), _check_class(pair[1], "a pair's target")
            if src == tgt:
                raise ValueError(f"pair [{src}, {tgt}] has the same source and target; drop it")
            if src in mapping:
                raise ValueError(f"source {src} appears in two pairs; give each source one target "
                                 "(or use cflight.targets.IndexTargets for per-image targets)")
            mapping[src] = tgt
        self.pairs, self.by, self.threshold = mapping, by, _check_threshold(threshold)

    @property
    def target_classes(self) -> set[int]:
        """Every class this policy may ask for (ExplainModule checks them against the model)."""
        return set(self.pairs.values())

    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[ClassTarget, Tensor]:
        pred = predicted_class(logits)
        if self.by == "label":
            if LABEL not in batch:
                raise BadInputError("PairTargets(by='label') needs batches with a 'label' key, this dataset has "
                                    "no labels; use by='prediction' or give the data labels")
            source = torch.as_tensor(batch[LABEL]).to(logits.device).long()
        else:
            source = pred
        target = torch.tensor([self.pairs.get(int(c), -1) for c in source.tolist()], dtype=torch.long,
                              device=logits.device)
        keep = (target >= 0) & (pred != target)
        return ClassTarget(target.clamp(min=0), self.threshold), keep


def read_index_targets(path: str) -> dict[int, int]:
    """``{dataset index: target class}`` from a CSV with the header ``index,target`` (one row per image)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"index target file {path!r} not found; give a CSV with the header 'index,target'")
    with open(path, newline="") as f:
        reader = csvlib.DictReader(f)
        if reader.fieldnames is None or not {"index", "target"} <= set(reader.fieldnames):
            raise BadInputError(f"{path} needs the columns 'index' and 'target', found {reader.fieldnames}")
        out: dict[int, int] = {}
        for n, row in enumerate(reader, start=2):
            try:
                index, target = int(row["index"]), int(row["target"])
            except (TypeError, ValueError):
                raise BadInputError(f"{path} line {n}: index and target must be integers, got "
                                    f"{row['index']!r}, {row['target']!r}") from None
            if index in out and out[index] != target:
                raise BadInputError(f"{path} line {n}: index {index} has two targets ({out[index]}, {target})")
            out[index] = target
    return out


class IndexTargets(TargetPolicy):
    """Explicit per-image targets ``{dataset index: target class}``: the images the paper hand-picked.

    Only the listed dataset indices are explained; every other image, and one the model already predicts as
    its target, is skipped. ``configs/explain/latent_attack_mnist_paper.yaml`` lists the reference's digit
    edits this way (the ``k``-th training image of each source digit, as the notebook selects them).

    Args:
        targets: ``{index: target}`` (YAML: a mapping), or ``None`` with ``csv``.
        csv: path of a CSV with the header ``index,target``.
        threshold: τ on the target probability.
    """

    def __init__(self, targets: Mapping[int, int] | None = None, csv: str | None = None,
                 threshold: float = 0.5) -> None:
        if (targets is None) == (csv is None):
            raise ValueError("give exactly one of targets ({index: target}) or csv (a file with index,target)")
        raw = dict(targets) if targets is not None else read_index_targets(csv)
        if not raw:
            raise ValueError("IndexTargets needs at least one index: target entry")
        self.targets = {_check_class(int(i), "an index"): _check_class(int(t), "a target") for i, t in raw.items()}
        self.csv, self.threshold = csv, _check_threshold(threshold)

    @property
    def target_classes(self) -> set[int]:
        """Every class this policy may ask for (ExplainModule checks them against the model)."""
        return set(self.targets.values())

    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[ClassTarget, Tensor]:
        index = torch.as_tensor(batch[INDEX]).reshape(-1).tolist()
        target = torch.tensor([self.targets.get(int(i), -1) for i in index], dtype=torch.long, device=logits.device)
        keep = (target >= 0) & (predicted_class(logits) != target)
        return ClassTarget(target.clamp(min=0), self.threshold), keep


class LabelValues(TargetPolicy):
    """Each image toward the regression value its label maps to, e.g. AC-RE's CelebA-HQ age targets
    (spec §2.2: ``Young = 1 → 0.8``, otherwise ``0.1``: ``values={1: 0.8, 0: 0.1}``), reached when
    ``|f(x) − value| ≤ tolerance``; images already within it, or whose label has no value, are skipped."""

    task = "regression"

    def __init__(self, values: Mapping[int, float], tolerance: float = 0.05) -> None:
        if not len(values):
            raise ValueError("values must map at least one label to a target value")
        self.values = {_check_class(int(k), "a label"): float(v) for k, v in values.items()}
        self.tolerance = _check_tolerance(tolerance)

    def __call__(self, logits: Tensor, batch: dict[str, Any]) -> tuple[RegressionTarget, Tensor]:
        y = _regressor_output(logits, "LabelValues")
        if LABEL not in batch:
            raise BadInputError("LabelValues needs batches with a 'label' key, this dataset has no labels; give "
                                "the data labels (e.g. label_column) or use FixedValue")
        labels = torch.as_tensor(batch[LABEL]).reshape(-1).tolist()
        value = torch.tensor([self.values.get(int(c), float("nan")) for c in labels], dtype=torch.float32,
                             device=logits.device)
        known = ~value.isnan()
        value = torch.where(known, value, y.detach().float())
        return RegressionTarget(value, self.tolerance), known & ((y - value).abs() > self.tolerance)
