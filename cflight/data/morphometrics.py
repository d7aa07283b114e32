"""Morphometric descriptors of a stroke image (digits, clothing silhouettes), as Morpho-MNIST measures them.

Castro et al. 2019, "Morpho-MNIST: Quantitative Assessment and Generation of Datasets for Representation
Learning" (JMLR 20(178); code ``dccastro/Morpho-MNIST``, ``morphomnist/morpho.py`` and ``measure.py``). Every
image is first upscaled ``scale``× (default 4) with a cubic pyramid expansion and quantised to 8 bits; then

- ``area``: foreground pixels / scale², the foreground being ``hires ≥ min + threshold·(max − min)``
  (threshold 0.5: relative to the image's own range, 128 for a 0…255 digit);
- ``length``: the medial-axis skeleton's length / scale, each pair of 8-adjacent skeleton pixels counted
  once with its distance (1 along a row or column, √2 diagonally);
- ``thickness``: 2 · mean distance-to-background on the skeleton / scale (the mean stroke width);
- ``slant``: ``atan(−u11 / u02)`` in radians from the intensity moments (the horizontal shear), positive
  when the top leans right (rows grow downwards);
- ``width`` / ``height``: the sides of the slant-corrected bounding parallelogram that holds all but
  ``bound_frac`` (2 %) of the intensity mass: ``width`` along the de-slanted rows, so a slanted stroke has the
  width of the same stroke upright;
- ``holes`` (cflight's addition, not Morpho-MNIST's): background regions of the binary image not touching
  its border (4-connected) of at least ``min_hole_px`` original pixels: 0 for "1", 1 for "0", 2 for "8".

Lengths are in pixels of the original image, area in pixels². An all-zero image gives zeros. On MNIST
training image 0 the values match Morpho-MNIST's released ``train-morpho.csv`` within 0.5 % (area, slant,
width, height), 3 % (thickness) and 6 % (length): current scikit-image breaks medial-axis ties differently
from the version the release was measured with (here with a fixed seed, so results are deterministic). The
measurements use scikit-image (``transform.pyramid_expand``, ``morphology.medial_axis``, ``measure.label``)
and NumPy; they are exact, not differentiable: an image-space descriptor network trained on them
(:mod:`cflight.lit.descriptor`) is the differentiable stand-in.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage import measure, morphology, transform
from torch import Tensor

MORPHOMETRIC_NAMES: list[str] = ["area", "length", "thickness", "slant", "width", "height", "holes"]


def upscale(image: np.ndarray, scale: int = 4) -> np.ndarray:
    """``[H, W]`` intensities in [0, 1] → ``[scale·H, scale·W]`` uint8 (cubic pyramid expansion, truncated to
    8 bits as Morpho-MNIST does with its uint8 digits)."""
    img = np.asarray(image, dtype=np.float64)
    if scale > 1:
        img = transform.pyramid_expand(img, upscale=scale, order=3)
    return np.floor(255.0 * np.clip(img, 0.0, 1.0) + 1e-6).astype(np.uint8)


def binarise(hires: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Foreground ``hires ≥ min + threshold·(max − min)`` ``[H, W]`` bool (relative to the image's range)."""
    lo, hi = float(hires.min()), float(hires.max())
    return hires >= lo + (hi - lo) * threshold


def skeleton_length(skeleton: np.ndarray) -> float:
    """Length of a one-pixel-wide skeleton ``[H, W]`` bool: each 8-adjacent pair once, 1 straight, √2 diagonal."""
    s = skeleton.astype(bool)
    straight = np.sum(s[:, :-1] & s[:, 1:]) + np.sum(s[:-1, :] & s[1:, :])
    diagonal = np.sum(s[:-1, :-1] & s[1:, 1:]) + np.sum(s[:-1, 1:] & s[1:, :-1])
    return float(straight + math.sqrt(2.0) * diagonal)


def intensity_moments(img: np.ndarray) -> tuple[float, float, float, float, float]:
    """Centroid and central second moments ``(mx, my, u20, u11, u02)`` of intensities ``[H, W]`` (x = column)."""
    img = np.asarray(img, dtype=np.float64)
    total = img.sum()
    y, x = np.mgrid[: img.shape[0], : img.shape[1]]
    mx, my = (x * img).sum() / total, (y * img).sum() / total
    u20 = (x * x * img).sum() / total - mx * mx
    u11 = (x * y * img).sum() / total - mx * my
    u02 = (y * y * img).sum() / total - my * my
    return float(mx), float(my), float(u20), float(u11), float(u02)


def deslanted_extent(img: np.ndarray, shear: float, y_mid: float, bound_frac: float = 0.02) -> tuple[float, float]:
    """``(width, height)`` in pixels of ``img`` ``[H, W]``: the spans between the ``bound_frac/2`` and
    ``1 − bound_frac/2`` quantiles of the intensity mass along the de-slanted x (``x + ½ − shear·(y − y_mid)``,
    read at integer positions as Morpho-MNIST's bounding parallelogram) and along y."""
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape
    total = img.sum()
    y, x = np.mgrid[:h, :w]
    # mass strictly left of each integer position t of the de-slanted axis: a weighted CDF by sorting
    xs = (x + 0.5 - shear * (y - y_mid)).ravel()
    order = np.argsort(xs, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(img.ravel()[order])])
    locs = np.arange(w, dtype=np.float64)
    hcdf = cum[np.searchsorted(xs[order], locs, side="left")] / total
    vcdf = np.concatenate([[0.0], np.cumsum(img.sum(1))[:-1]]) / total  # mass in rows < t
    frac = bound_frac / 2
    left, right = np.interp([frac, 1 - frac], hcdf, locs)
    top, bottom = np.interp([frac, 1 - frac], vcdf, np.arange(h, dtype=np.float64))
    return float(right - left), float(bottom - top)


def count_enclosed(foreground: np.ndarray, min_px: float = 1.0) -> int:
    """Background components of ``foreground`` ``[H, W]`` bool (4-connected) that do not touch the border and
    have at least ``min_px`` pixels."""
    labels = measure.label(~foreground.astype(bool), connectivity=1)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    sizes = np.bincount(labels.ravel())
    enclosed = np.setdiff1d(np.arange(1, len(sizes)), border)
    return int(np.sum(sizes[enclosed] >= min_px))


def measure_image(image: np.ndarray, threshold: float = 0.5, scale: int = 4, bound_frac: float = 0.02,
                  min_hole_px: float = 2.0) -> np.ndarray:
    """The 7 morphometrics (order of ``MORPHOMETRIC_NAMES``) of one ``[H, W]`` image in [0, 1], float64."""
    hires = upscale(image, scale)
    if not hires.any():
        return np.zeros(len(MORPHOMETRIC_NAMES))
    binary = binarise(hires, threshold)
    # with no background pixel the distance map is undefined: count the outside of the image as background
    padded = not (~binary).any()
    fg = np.pad(binary, 1) if padded else binary
    # rng=0: scikit-image breaks ties between equally thin pixels at random; a fixed seed keeps it deterministic
    skeleton, distance = morphology.medial_axis(fg, return_distance=True, rng=0)
    if padded:
        skeleton, distance = skeleton[1:-1, 1:-1], distance[1:-1, 1:-1]
    thickness = 2.0 * float(distance[skeleton].mean()) / scale if skeleton.any() else 0.0
    _, my, _, u11, u02 = intensity_moments(hires)
    shear = u11 / u02 if u02 > 0 else 0.0
    width, height = deslanted_extent(hires, shear, my, bound_frac)
    return np.array([binary.sum() / scale**2, skeleton_length(skeleton) / scale, thickness, math.atan(-shear),
                     width / scale, height / scale, count_enclosed(binary, min_hole_px * scale**2)])


def morphometrics(images: Tensor, threshold: float = 0.5, min_hole_px: float = 2.0, scale: int = 4,
                  bound_frac: float = 0.02) -> Tensor:
    """Descriptors ``[B, 7]`` float32 (order of ``MORPHOMETRIC_NAMES``) of bright-on-dark images ``[B, C, H, W]``
    in [0, 1], or of one ``[C, H, W]`` image (then ``[7]``); channels are averaged, computed on the CPU."""
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    single = images.ndim == 3
    x = (images[None] if single else images).detach().float().mean(1).cpu().numpy()
    out = torch.tensor(np.stack([measure_image(im, threshold, int(scale), bound_frac, min_hole_px) for im in x])
                       if len(x) else np.zeros((0, len(MORPHOMETRIC_NAMES))), dtype=torch.float32)
    return out[0] if single else out
