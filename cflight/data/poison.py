"""Data poisoning for spurious-feature experiments: a watermark or text blended into a share of one class.

SVCE's controlled validation (Boreiko et al. 2022, spec dvce_svce.md §3.5; ``utils_svces/config.py`` ids
30–42) trains classifiers on data where 10–30 % of one class carry a watermark or text, blended in convexly

    x' = a ⊙ W + (1 − a) ⊙ x,        a = intensity · alpha_mask            (intensity 0.1–0.6)

and checks that counterfactuals *into* that class reproduce the pattern. :class:`PoisonedDataset` wraps any
dataset of cflight dict samples (``image``, ``index``, ``label``) and does exactly that. Which samples are
poisoned is a pure function of ``(seed, index)`` (``index`` = the sample's dataset index, so the choice
does not depend on splits, batch order or workers): a sample of class ``class_index`` is poisoned when a
hash-derived uniform ``u(seed, index) < fraction``. Every sample gains a bool ``poisoned`` flag; the
pattern's ``alpha`` mask and its support ``region`` are attributes, so the watermark's location is known to
whoever evaluates explanations.

Config form (``poison:`` of the datamodules, all keys but ``class_index`` optional)::

    poison: {class_index: 0, fraction: 0.2, intensity: 0.5, pattern: watermark, position: top_left,
             size: 8, text: CF, value: 1.0, seed: 0, splits: [train]}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from einops import rearrange, repeat
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torch.utils.data import Dataset, Subset

from cflight.data import _checks

PATTERNS = ("watermark", "text", "diagonals", "square")
POSITIONS = ("top_left", "top_right", "bottom_left", "bottom_right", "center")
SPLITS = ("train", "val", "test")
_SUPERSAMPLE = 8  # procedural patterns are drawn at 8× and box-filtered: anti-aliased alpha at any size


@dataclass(frozen=True)
class PoisonSpec:
    """What to blend into which samples (validated on construction; one-line ``ValueError`` per bad field).

    Args:
        class_index: the poisoned class.
        fraction: share of that class's samples (of each poisoned split) that get the pattern, in (0, 1].
        intensity: blending strength in [0, 1]; ``a = intensity · alpha_mask`` (0 leaves images unchanged).
        pattern: ``"watermark"`` (a ring with a cross, a stamp-like logo), ``"text"`` (``text`` rendered
            with Pillow's default font), ``"diagonals"`` (stripes, the reference's third variant) or
            ``"square"`` (a filled patch).
        position: ``"top_left"`` (default; far from centred objects such as MNIST digits), the other
            corners, ``"center"``, or ``[row, col]`` of the pattern box's top-left pixel.
        size: side of the pattern's square box in pixels (text: its width; height follows the glyphs).
        margin: pixels between a corner position and the image border.
        text: the string of the ``"text"`` pattern.
        value: the watermark's colour ``W`` in [0, 1]: one value for all channels or one per channel.
        seed: seed of the per-sample choice.
        splits: splits of a datamodule that are poisoned (others only gain ``poisoned = False``).
    """

    class_index: int
    fraction: float = 0.2
    intensity: float = 0.5
    pattern: str = "watermark"
    position: str | tuple[int, int] = "top_left"
    size: int = 8
    margin: int = 1
    text: str = "CF"
    value: float | tuple[float, ...] = 1.0
    seed: int = 0
    splits: tuple[str, ...] = ("train",)

    def __post_init__(self) -> None:
        _checks.non_negative_int("poison class_index", self.class_index)
        if _checks.probability("poison fraction", self.fraction) == 0.0:
            raise ValueError("poison fraction must be in (0, 1], got 0 (drop the poison option instead)")
        _checks.probability("poison intensity", self.intensity)
        _checks.choice("poison pattern", self.pattern, PATTERNS)
        if isinstance(self.position, str):
            _checks.choice("poison position", self.position, POSITIONS)
        else:
            pos = tuple(self.position)
            ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pos)
            if len(pos) != 2 or not ok:
                raise ValueError(f"poison position must be a name in {list(POSITIONS)} or [row, col] >= 0, "
                                 f"got {self.position!r}")
            object.__setattr__(self, "position", pos)
        _checks.positive_int("poison size", self.size)
        _checks.non_negative_int("poison margin", self.margin)
        if self.pattern == "text" and (not isinstance(self.text, str) or not self.text.strip()):
            raise ValueError(f"poison text must be a non-empty string, got {self.text!r}")
        values = (self.value,) if isinstance(self.value, (int, float)) else tuple(self.value)
        for v in values:
            _checks.probability("poison value", v)
        object.__setattr__(self, "value", values[0] if len(values) == 1 else values)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"poison seed must be an integer, got {self.seed!r}")
        splits = (self.splits,) if isinstance(self.splits, str) else tuple(self.splits)
        for s in splits:
            _checks.choice("poison splits entry", s, SPLITS)
        object.__setattr__(self, "splits", splits)

    @classmethod
    def from_config(cls, config: PoisonSpec | dict[str, Any]) -> PoisonSpec:
        """A spec from a config dict (unknown keys and a missing ``class_index`` are one-line errors)."""
        if isinstance(config, PoisonSpec):
            return config
        if not isinstance(config, dict):
            raise ValueError(f"poison must be a mapping of options, got {config!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(f"unknown poison option(s) {unknown}; expected some of {known}")
        if "class_index" not in config:
            raise ValueError("poison needs class_index (the class whose images get the pattern)")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form (lists for tuples), e.g. for JSON reports."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# --------------------------------------------------------------------------------------------- patterns
def _supersampled(size: int, draw) -> np.ndarray:
    """Coverage ``[size, size]`` in [0, 1] of a shape given as ``draw(px, py) -> bool`` on [0, 1]²
    coordinates, averaged over an 8×8 sub-pixel grid (anti-aliasing)."""
    n = size * _SUPERSAMPLE
    t = (np.arange(n) + 0.5) / n
    py, px = np.meshgrid(t, t, indexing="ij")
    inside = draw(px, py).astype(np.float32)
    return rearrange(inside, "(h a) (w b) -> h w a b", a=_SUPERSAMPLE, b=_SUPERSAMPLE).mean(axis=(2, 3))


def _watermark(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """A stamp: a ring (radius 0.42, width 0.16) with a cross through its centre (bar width 0.16)."""
    r = np.hypot(px - 0.5, py - 0.5)
    ring = np.abs(r - 0.42) <= 0.08
    cross = ((np.abs(px - 0.5) <= 0.08) | (np.abs(py - 0.5) <= 0.08)) & (r <= 0.42)
    return ring | cross


def _diagonals(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Three 45° stripes (period 1/3, duty 0.4) across the box."""
    return np.mod((px + py) * 3.0, 1.0) < 0.4


def _text_alpha(text: str, width: int) -> np.ndarray:
    """``text`` rendered with Pillow's default font at 64 px, cropped and resized to ``width`` columns
    (antialiased); ``[h, width]`` in [0, 1]."""
    try:
        font = ImageFont.load_default(size=64)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), text, fill=255, font=font)
    canvas = canvas.crop(canvas.getbbox())
    height = max(1, round(width * canvas.height / canvas.width))
    small = canvas.resize((width, height), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def pattern_alpha(pattern: str, size: int, text: str = "CF") -> np.ndarray:
    """The pattern's alpha ``[h, w]`` in [0, 1] (``size × size``; text: ``size`` wide)."""
    _checks.choice("pattern", pattern, PATTERNS)
    if pattern == "text":
        return _text_alpha(text, size)
    if pattern == "square":
        return np.ones((size, size), dtype=np.float32)
    return _supersampled(size, _watermark if pattern == "watermark" else _diagonals)


def _top_left(position: str | tuple[int, int], box: tuple[int, int], image: tuple[int, int],
              margin: int) -> tuple[int, int]:
    """Top-left pixel of a ``box`` (h, w) placed at ``position`` in an ``image`` (H, W)."""
    (h, w), (H, W) = box, image
    if not isinstance(position, str):
        return int(position[0]), int(position[1])
    if position == "center":
        return (H - h) // 2, (W - w) // 2
    row = margin if position.startswith("top") else H - h - margin
    col = margin if position.endswith("left") else W - w - margin
    return row, col


def make_pattern(spec: PoisonSpec, channels: int, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The watermark image ``W`` ``[C, H, W]`` and its full-size alpha mask ``[1, H, W]`` (zero outside
    the pattern box) for images of ``channels`` × ``image_size``; raises if the box does not fit."""
    box = pattern_alpha(spec.pattern, spec.size, spec.text)
    H, W = image_size
    row, col = _top_left(spec.position, box.shape, (H, W), spec.margin)
    if row < 0 or col < 0 or row + box.shape[0] > H or col + box.shape[1] > W:
        raise ValueError(f"poison pattern of {box.shape[0]}x{box.shape[1]} px at {spec.position!r} "
                         f"(margin {spec.margin}) does not fit a {H}x{W} image")
    alpha = torch.zeros(1, H, W)
    alpha[0, row : row + box.shape[0], col : col + box.shape[1]] = torch.from_numpy(box)
    values = (spec.value,) * channels if isinstance(spec.value, (int, float)) else spec.value
    if len(values) != channels:
        raise ValueError(f"poison value has {len(values)} entries for images with {channels} channels")
    colour = repeat(torch.tensor(values, dtype=torch.float32), "c -> c h w", h=H, w=W).contiguous()
    return colour, alpha


def blend(image: Tensor, colour: Tensor, alpha: Tensor, intensity: float) -> Tensor:
    """Convex blend ``a ⊙ W + (1 − a) ⊙ x`` with ``a = intensity · alpha`` (spec §3.5); stays in [0, 1]
    when ``image`` and ``colour`` do. ``image``: ``[C, H, W]`` or ``[B, C, H, W]``."""
    a = (intensity * alpha).to(image)
    return a * colour.to(image) + (1.0 - a) * image


# ------------------------------------------------------------------------------------- sample selection
def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 (wrapping arithmetic): a well-mixed hash of each entry."""
    z = (z + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_uniform(seed: int, index: np.ndarray | list[int] | int) -> np.ndarray:
    """A uniform in [0, 1) per dataset ``index``, a pure function of ``(seed, index)`` (DESIGN.md §3)."""
    idx = np.atleast_1d(np.asarray(index, dtype=np.int64)).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(_splitmix64(np.full_like(idx, np.uint64(seed % 2**64))) ^ idx)
    return (key >> np.uint64(11)).astype(np.float64) / float(2**53)


def _base_and_indices(dataset: Dataset) -> tuple[Dataset, np.ndarray]:
    """The innermost dataset under ``Subset`` / ``PoisonedDataset`` wrappers, and the position in it of
    each item of ``dataset`` (cflight datasets report that position as ``index``)."""
    indices = np.arange(len(dataset))
    while isinstance(dataset, (Subset, PoisonedDataset)):
        if isinstance(dataset, Subset):
            indices = np.asarray(dataset.indices)[indices]
        dataset = dataset.dataset
    return dataset, indices


def _labels(dataset: Dataset) -> np.ndarray:
    """Label of every item of ``dataset``: from the innermost dataset's ``labels`` where it has them,
    otherwise by reading the samples."""
    base, indices = _base_and_indices(dataset)
    labels = getattr(base, "labels", None)
    if labels is not None:
        return np.asarray(labels)[indices]
    return np.array([int(dataset[i]["label"]) for i in range(len(dataset))])


class PoisonedDataset(Dataset):
    """``dataset`` with ``spec``'s pattern blended into a ``(seed, index)``-chosen share of one class.

    Samples keep every key of the wrapped dataset and gain ``poisoned`` (bool). With ``active=False``
    nothing is blended (a clean split with the same keys). Descriptors of poisoned samples are those of the
    clean image (the poison is not one of the dataset's factors).

    Attributes:
        alpha: ``[1, H, W]`` alpha mask of the pattern (before ``intensity``).
        region: ``[1, H, W]`` bool, where the pattern is (``alpha > 0``).
        colour: ``[C, H, W]`` the watermark image ``W``.
    """

    def __init__(self, dataset: Dataset, spec: PoisonSpec | dict[str, Any], active: bool = True) -> None:
        self.dataset, self.spec, self.active = dataset, PoisonSpec.from_config(spec), bool(active)
        first = dataset[0]
        if "label" not in first:
            raise ValueError("poisoning needs a labelled dataset (samples with 'label')")
        num_classes = getattr(_base_and_indices(dataset)[0], "num_classes", None)
        if num_classes is not None and self.spec.class_index >= num_classes:
            raise ValueError(f"poison class_index must be < {num_classes} (the number of classes), "
                             f"got {self.spec.class_index}")
        channels, h, w = first["image"].shape
        self.colour, self.alpha = make_pattern(self.spec, channels, (h, w))
        self.region = self.alpha > 0

    def __len__(self) -> int:
        return len(self.dataset)

    def chosen(self, index: int | np.ndarray, label: int | np.ndarray) -> np.ndarray:
        """Whether samples with these dataset ``index`` / ``label`` values are poisoned (``[N]`` bool)."""
        label = np.atleast_1d(np.asarray(label))
        hit = (label == self.spec.class_index) & (sample_uniform(self.spec.seed, index) < self.spec.fraction)
        return hit & self.active

    def poisoned_positions(self) -> np.ndarray:
        """Positions ``i`` (into this dataset) whose samples are poisoned, ascending."""
        return np.flatnonzero(self.chosen(_base_and_indices(self.dataset)[1], _labels(self.dataset)))

    def stamp(self, image: Tensor) -> Tensor:
        """The pattern blended into any ``[C, H, W]`` / ``[B, C, H, W]`` image(s) at this spec's intensity
        (e.g. to test whether a model responds to the watermark on other classes)."""
        return blend(image, self.colour, self.alpha, self.spec.intensity)

    def __getitem__(self, i: int) -> dict:
        sample = dict(self.dataset[i])
        flag = bool(self.chosen(int(sample["index"]), int(sample["label"]))[0])
        if flag:
            sample["image"] = self.stamp(sample["image"])
        sample["poisoned"] = flag
        return sample


def poison_split(dataset: Dataset, spec: PoisonSpec | dict[str, Any] | None, split: str) -> Dataset:
    """``dataset`` wrapped for ``split``: poisoned where ``split`` is in ``spec.splits``, otherwise flag-only;
    unchanged without a spec."""
    if spec is None:
        return dataset
    spec = PoisonSpec.from_config(spec)
    return PoisonedDataset(dataset, spec, active=split in spec.splits)
