"""``shapes``: a procedural dataset of one coloured shape per image with known generative factors.

Every image is a pure function of ``(seed, split, index)`` (a per-index ``numpy`` generator seeded from that
triple), so any length is free and results never depend on batch order or worker count. The factors are
exposed as ground-truth ``descriptors``: one-hot shape and colour, size, position, rotation, background
brightness and, when enabled, a planted spurious ``marker`` (a small cross or patch in a corner that
appears mostly in one class) for spurious-feature experiments. Given several marker positions or shapes, each
marked image draws one of them uniformly: generative models trained on such data can paint every variant, so
one generator serves shortcut experiments with markers in different corners or of different shapes.

Rendering uses signed-distance functions with one-pixel anti-aliasing. ``size`` is the radius of the circle
with the same area as the shape (as a fraction of the image side), so foreground area ≈ π·size² for every
shape kind.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from cflight.data import _checks

SHAPES = ["circle", "square", "triangle", "ring"]
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.75, 0.15),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.85, 0.1),
    "magenta": (0.85, 0.15, 0.8),
    "cyan": (0.1, 0.8, 0.85),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}
SPLITS = {"train": 0, "val": 1, "test": 2}
CORNERS = ["top_left", "top_right", "bottom_left", "bottom_right"]
MARKER_SHAPES = ["cross", "square"]
SIZE_CLASSES = ["small", "large"]
# circumradius of each shape relative to its equal-area radius, and its rotational symmetry order (0: none)
_EXTENT = {
    "circle": 1.0,
    "square": math.sqrt(math.pi / 2),
    "triangle": math.sqrt(4 * math.pi / 3**1.5),
    "ring": 1 / math.sqrt(0.75),
}
_SYMMETRY = {"circle": 0, "square": 4, "triangle": 3, "ring": 0}
FACTORS = ["size", "pos_x", "pos_y", "rotation", "background"]


@dataclass(frozen=True)
class ShapeFactors:
    """The generative factors of one image (positions are pixel centres, in pixels)."""

    shape: int
    colour: int
    size: float
    cx: float
    cy: float
    rotation: float  # fraction of the shape's symmetry period, in [0, 1); 0 for circles and rings
    background: float
    marker: bool
    marker_position: int = 0  # index into the dataset's marker positions (one unless several are given)
    marker_shape: int = 0  # index into the dataset's marker shapes


def _options(name: str, value: str | Sequence[str], options: list[str]) -> list[str]:
    """One option or a non-empty list of distinct options, as a list."""
    values = [value] if isinstance(value, str) else list(value)
    if not values or len(set(values)) != len(values) or any(v not in options for v in values):
        raise ValueError(f"{name} must be one of {options} or a list of distinct ones, got {value!r}")
    return values


def _sdf(kind: str, px: np.ndarray, py: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) of shape ``kind`` with equal-area radius ``radius``; ``px``
    is rightwards and ``py`` upwards from the centre, already rotated into the shape's frame."""
    if kind == "circle":
        return np.hypot(px, py) - radius
    if kind == "square":
        half = radius * math.sqrt(math.pi) / 2
        qx, qy = np.abs(px) - half, np.abs(py) - half
        return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    if kind == "triangle":  # equilateral, centroid at the origin, pointing up
        half_side = radius * math.sqrt(math.pi / math.sqrt(3))
        k = math.sqrt(3.0)
        x, y = np.abs(px) - half_side, py + half_side / k
        fold = x + k * y > 0
        x, y = np.where(fold, (x - k * y) / 2, x), np.where(fold, (-k * x - y) / 2, y)
        x = x - np.clip(x, -2 * half_side, 0)
        return -np.hypot(x, y) * np.sign(y)
    outer = radius / math.sqrt(0.75)  # ring: inner radius half the outer one
    return np.abs(np.hypot(px, py) - 0.75 * outer) - 0.25 * outer


class ShapesDataset(Dataset):
    """One shape per image with ground-truth descriptors and an optional planted spurious marker.

    Args:
        length: number of images.
        seed: dataset seed; image ``i`` depends only on ``(seed, split, i)``.
        split: "train", "val" or "test": independent random streams for the same seed.
        image_size: square side in pixels.
        channels: 3 (RGB) or 1 (luminance).
        shapes: shape kinds, a subset of ``SHAPES``; their order defines shape class indices.
        colours: colour names from ``COLOURS``; their order defines colour class indices.
        label_factor: "shape", "colour" or "size": what ``label`` is ("size": class 0 "small" below the middle
            of ``size_range``, class 1 "large" from it on).
        target_factor: optional factor ("size", "pos_x", "pos_y", "rotation", "background") returned as the
            regression ``target``.
        size_range: range of ``size`` (equal-area radius / image side).
        background_range: range of the grey background brightness.
        rotate: rotate shapes uniformly within their symmetry period.
        noise_std: std of Gaussian pixel noise (0: none).
        marker_class: class that carries the spurious marker (``None``: no marker).
        marker_prob: probability of the marker in ``marker_class``.
        marker_prob_other: probability of the marker in the other classes.
        marker_size: side of the marker's bounding square in pixels.
        marker_colour: colour name of the marker.
        marker_position: corner: "top_left", "top_right", "bottom_left" or "bottom_right", or a list of them
            (each marked image draws one uniformly).
        marker_shape: "cross" (a plus sign) or "square" (a filled patch), or a list of both (drawn uniformly).
    """

    def __init__(
        self,
        length: int = 10_000,
        seed: int = 0,
        split: str = "train",
        image_size: int = 32,
        channels: int = 3,
        shapes: list[str] | tuple[str, ...] = ("circle", "square", "triangle"),
        colours: list[str] | tuple[str, ...] = ("red", "green", "blue"),
        label_factor: str = "shape",
        target_factor: str | None = None,
        size_range: tuple[float, float] = (0.12, 0.25),
        background_range: tuple[float, float] = (0.0, 0.5),
        rotate: bool = True,
        noise_std: float = 0.0,
        marker_class: int | None = None,
        marker_prob: float = 0.9,
        marker_prob_other: float = 0.0,
        marker_size: int = 5,
        marker_colour: str = "white",
        marker_position: str | list[str] | tuple[str, ...] = "top_left",
        marker_shape: str | list[str] | tuple[str, ...] = "cross",
    ) -> None:
        self.length = _checks.non_negative_int("length", length)
        self.seed, self.split = int(seed), _checks.choice("split", split, SPLITS)
        side = _checks.positive_int("image_size", image_size)
        if side < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.shapes, self.colours = list(shapes), list(colours)
        for name, values, options in (("shapes", self.shapes, SHAPES), ("colours", self.colours, COLOURS)):
            if not values or len(set(values)) != len(values) or any(v not in options for v in values):
                raise ValueError(f"{name} must be distinct names from {list(options)}, got {values!r}")
        self.label_factor = _checks.choice("label_factor", label_factor, ["shape", "colour", "size"])
        if target_factor is not None:
            _checks.choice("target_factor", target_factor, FACTORS)
        self.target_factor = target_factor
        self.size_range = _checks.unit_range("size_range", size_range, 0.0, 0.5)
        self.background_range = _checks.unit_range("background_range", background_range)
        widest = max(_EXTENT[s] for s in self.shapes) * self.size_range[1] * side
        if 2 * widest + 2 > side:
            raise ValueError(
                f"size_range {tuple(size_range)} is too large: shapes {self.shapes} do not fit "
                f"in {side} pixels (keep max size below {(side - 2) / (2 * widest / self.size_range[1]):.3f})"
            )
        if not isinstance(noise_std, (int, float)) or noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.rotate, self.noise_std = bool(rotate), float(noise_std)
        self.image_size, self.in_channels = (side, side), channels
        self.class_names = {"shape": self.shapes, "colour": self.colours, "size": SIZE_CLASSES}[self.label_factor]
        self.num_classes = len(self.class_names)
        if marker_class is not None and not 0 <= marker_class < self.num_classes:
            raise ValueError(
                f"marker_class must be a class index in [0, {self.num_classes}), got {marker_class!r}"
            )
        self.marker_class = marker_class
        self.marker_prob = _checks.probability("marker_prob", marker_prob)
        self.marker_prob_other = _checks.probability("marker_prob_other", marker_prob_other)
        self.marker_size = _checks.positive_int("marker_size", marker_size)
        if marker_size > side // 2:
            raise ValueError(
                f"marker_size must be at most half the image size ({side // 2}), got {marker_size}"
            )
        self.marker_colour = _checks.choice("marker_colour", marker_colour, COLOURS)
        self.marker_positions = _options("marker_position", marker_position, CORNERS)
        self.marker_shapes = _options("marker_shape", marker_shape, MARKER_SHAPES)
        # the single-variant names, as before (the first variant when several are given)
        self.marker_position, self.marker_shape = self.marker_positions[0], self.marker_shapes[0]
        self.has_marker = marker_class is not None or self.marker_prob_other > 0
        self.descriptor_names = (
            [f"shape_{s}" for s in self.shapes]
            + [f"colour_{c}" for c in self.colours]
            + list(FACTORS)
            + (["marker"] if self.has_marker else [])
        )
        centres = np.arange(side, dtype=np.float64) + 0.5
        self._xs, self._ys = np.meshgrid(centres, centres)  # [H, W] pixel-centre coordinates

    def __len__(self) -> int:
        return self.length

    def factors(self, i: int) -> ShapeFactors:
        """Draw the factors of image ``i`` (the same draws in the same order for any configuration of the
        marker and noise, so switching those leaves the rest of the image unchanged)."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a shapes dataset of length {self.length}")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], i])
        shape = int(rng.integers(len(self.shapes)))
        colour = int(rng.integers(len(self.colours)))
        size = float(rng.uniform(*self.size_range))
        side = self.image_size[0]
        reach = _EXTENT[self.shapes[shape]] * size * side + 1
        cx, cy = (float(rng.uniform(reach, side - reach)) for _ in range(2))
        turn = float(rng.uniform())
        rotation = turn if self.rotate and _SYMMETRY[self.shapes[shape]] else 0.0
        background = float(rng.uniform(*self.background_range))
        u = float(rng.uniform())
        # drawn last and always, so adding marker variants leaves every other factor of every image unchanged
        position, kind = (int(v * n) for v, n in zip(rng.uniform(size=2), (len(self.marker_positions),
                                                                         len(self.marker_shapes))))
        f = ShapeFactors(shape, colour, size, cx, cy, rotation, background, False, position, kind)
        p = self.marker_prob if self.label(f) == self.marker_class else self.marker_prob_other
        return dataclasses.replace(f, marker=self.has_marker and u < p)

    def label(self, f: ShapeFactors) -> int:
        """The class of factors ``f`` (shape, colour or size class, as ``label_factor`` says)."""
        if self.label_factor == "shape":
            return f.shape
        if self.label_factor == "colour":
            return f.colour
        return int(f.size >= sum(self.size_range) / 2)

    def render(self, f: ShapeFactors, rng: np.random.Generator | None = None) -> torch.Tensor:
        """The ``[C, H, W]`` float32 image of factors ``f`` (noise from ``rng`` when ``noise_std > 0``)."""
        kind = self.shapes[f.shape]
        side = self.image_size[0]
        angle = 2 * math.pi * f.rotation / _SYMMETRY[kind] if _SYMMETRY[kind] else 0.0
        dx, dy = self._xs - f.cx, -(self._ys - f.cy)  # y up
        c, s = math.cos(angle), math.sin(angle)
        px, py = c * dx + s * dy, -s * dx + c * dy  # rotate the point by -angle
        alpha = np.clip(0.5 - _sdf(kind, px, py, f.size * side), 0.0, 1.0)[..., None]
        colour = np.asarray(COLOURS[self.colours[f.colour]])
        image = f.background * (1 - alpha) + colour * alpha  # [H, W, 3]
        if f.marker:
            image[self.marker_mask(f.marker_position, f.marker_shape)] = COLOURS[self.marker_colour]
        if self.noise_std > 0:
            image = (
                image
                + (rng or np.random.default_rng()).normal(0.0, self.noise_std, size=image.shape[:2])[
                    ..., None
                ]
            )
        image = np.clip(image, 0.0, 1.0)
        if self.in_channels == 1:
            image = image @ np.array([[0.299], [0.587], [0.114]])
        return torch.from_numpy(rearrange(image, "h w c -> c h w").astype(np.float32))

    def marker_mask(self, position: int = 0, shape: int = 0) -> np.ndarray:
        """``[H, W]`` bool: the pixels of marker variant (``marker_positions[position]``,
        ``marker_shapes[shape]``)."""
        side, m = self.image_size[0], self.marker_size
        corner = self.marker_positions[position]
        top = 1 if corner.startswith("top") else side - 1 - m
        left = 1 if corner.endswith("left") else side - 1 - m
        box = np.zeros((side, side), dtype=bool)
        if self.marker_shapes[shape] == "square":
            box[top : top + m, left : left + m] = True
        else:
            lo, hi = (m - 1) // 2, m // 2 + 1  # middle row/column (two for even sizes)
            box[top + lo : top + hi, left : left + m] = True
            box[top : top + m, left + lo : left + hi] = True
        return box

    def descriptors(self, f: ShapeFactors) -> torch.Tensor:
        """Ground-truth descriptor vector of factors ``f`` (order of ``descriptor_names``)."""
        side = self.image_size[0]
        values = np.zeros(len(self.descriptor_names), dtype=np.float32)
        values[f.shape] = 1.0
        values[len(self.shapes) + f.colour] = 1.0
        k = len(self.shapes) + len(self.colours)
        values[k : k + 5] = [f.size, f.cx / side, f.cy / side, f.rotation, f.background]
        if self.has_marker:
            values[-1] = float(f.marker)
        return torch.from_numpy(values)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        f = self.factors(i)
        noise_rng = (
            np.random.default_rng([self.seed, SPLITS[self.split], i, 1]) if self.noise_std > 0 else None
        )
        sample = {
            "image": self.render(f, noise_rng),
            "index": i,
            "label": self.label(f),
            "descriptors": self.descriptors(f),
        }
        if self.target_factor is not None:
            sample["target"] = float(sample["descriptors"][self.descriptor_names.index(self.target_factor)])
        return sample
