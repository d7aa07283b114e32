"""Morpho-MNIST's morphometrics (Castro et al. 2019) against closed forms and the released values."""
import math

import numpy as np
import pytest
import torch

from cflight.data import MORPHOMETRIC_NAMES, morphometrics
from cflight.data.mnist import find_idx_files
from cflight.data.morphometrics import deslanted_extent, intensity_moments, skeleton_length, upscale
from cflight.models.descriptors import MorphometricDescriptors


def _m(img: torch.Tensor) -> dict[str, float]:
    return dict(zip(MORPHOMETRIC_NAMES, morphometrics(img).tolist()))


def _bar(length: int, thick: int, shear: float = 0.0, top: int = 4) -> torch.Tensor:
    """A vertical bar ``thick`` px wide, ``length`` px tall; with ``shear`` its top moves right by
    ``shear`` px per row (antialiased by the covered fraction of each pixel)."""
    img = torch.zeros(1, 28, 28)
    for r in range(top, top + length):
        left = 8 + shear * (top + length - 1 - r)
        for c in range(28):
            img[0, r, c] = max(0.0, min(c + 1, left + thick) - max(c, left))
    return img


def test_pure_helpers():
    line = np.zeros((7, 7), bool)
    line[3, 1:6] = True
    assert skeleton_length(line) == pytest.approx(4)  # 5 pixels, 4 unit steps
    assert skeleton_length(np.eye(5, dtype=bool)) == pytest.approx(4 * math.sqrt(2))
    img = np.zeros((9, 9))
    img[2:7, 3:6] = 1
    mx, my, u20, u11, u02 = intensity_moments(img)
    assert (mx, my, u11) == (pytest.approx(4), pytest.approx(4), pytest.approx(0))
    assert u02 == pytest.approx(2) and u20 == pytest.approx(2 / 3)  # variances of 5 and 3 consecutive integers
    box = np.zeros((40, 40))
    for r in range(10, 30):  # a box 6 wide, sheared by 0.5 px per row
        box[r, int(10 + 0.5 * (r - 10)):int(10 + 0.5 * (r - 10)) + 6] = 1
    w, h = deslanted_extent(box, 0.5, 19.5)  # 98 % of the mass: 0.98 · 20 rows; 6 px (+ the stair steps)
    assert w == pytest.approx(6, abs=1) and h == pytest.approx(0.98 * 20, abs=1e-6)
    assert deslanted_extent(box, -0.5, 19.5)[0] > 20  # sheared the wrong way: the box looks 6 + 20·0.5·2 wide
    assert upscale(np.array([[0.0, 1.0]]), scale=1).tolist() == [[0, 255]]


@pytest.mark.parametrize("thick", [3, 5])
def test_straight_bar_closed_forms(thick):
    long, short = _m(_bar(24, thick)), _m(_bar(8, thick))
    assert long["area"] == pytest.approx(24 * thick, rel=0.02)
    assert long["thickness"] == pytest.approx(thick, abs=0.3)  # 2 · distance to the edge on the centre line
    # the medial axis is the centre line (L − w) plus short end branches; 16 px more bar, about 16 more skeleton
    # (the 4x-upscaled skeleton zig-zags a little, so a bit more)
    assert 24 - thick <= long["length"] <= 24 + 2 * thick
    assert 0.9 <= (long["length"] - short["length"]) / 16 <= 1.3
    assert long["height"] == pytest.approx(0.98 * 24, abs=0.3) and long["slant"] == pytest.approx(0, abs=1e-6)
    assert long["holes"] == 0
    # a horizontal bar is the vertical one transposed: the same measurements, width and height swapped
    flat = _m(_bar(24, thick).transpose(1, 2))
    assert flat["width"] == pytest.approx(long["height"], abs=0.02)
    assert flat["height"] == pytest.approx(long["width"], abs=0.02)


def test_slanted_bar_has_upright_width():
    upright, slanted = _m(_bar(20, 3)), _m(_bar(20, 3, shear=0.4))
    assert slanted["slant"] == pytest.approx(math.atan(0.4), abs=0.02)  # top leans right: positive
    assert _m(_bar(20, 3, shear=0.4).flip(-1))["slant"] == pytest.approx(-math.atan(0.4), abs=0.02)
    assert slanted["width"] == pytest.approx(upright["width"], abs=0.3)  # slant-corrected, not 3 + 0.4·19
    assert slanted["height"] == pytest.approx(upright["height"], abs=0.1)
    assert slanted["length"] == pytest.approx(upright["length"] * math.hypot(1, 0.4), rel=0.15)
    assert slanted["area"] == pytest.approx(upright["area"], rel=0.02)


def test_ring_has_one_hole():
    ring = torch.zeros(1, 28, 28)
    ring[0, 4:18, 8:22] = 1
    ring[0, 6:16, 10:20] = 0  # a 14 × 14 square ring, 2 px thick
    m = _m(ring)
    assert m["holes"] == 1 and m["area"] == pytest.approx(14 * 14 - 10 * 10, rel=0.02)
    assert m["thickness"] == pytest.approx(2, abs=0.2)
    assert m["width"] == pytest.approx(m["height"], abs=0.02) and m["slant"] == pytest.approx(0, abs=1e-6)
    assert m["length"] == pytest.approx(4 * 12, rel=0.15)  # the centre line of the ring


def test_empty_deterministic_and_descriptor_model():
    assert torch.equal(morphometrics(torch.zeros(2, 1, 28, 28)), torch.zeros(2, len(MORPHOMETRIC_NAMES)))
    bar = _bar(20, 3, shear=0.3)
    assert torch.equal(morphometrics(bar), morphometrics(bar))  # medial-axis ties broken with a fixed seed
    model = MorphometricDescriptors()
    assert model.names == MORPHOMETRIC_NAMES and torch.equal(model(bar[None])[0], morphometrics(bar))
    with pytest.raises(ValueError, match="scale"):
        morphometrics(bar, scale=0)


@pytest.mark.skipif(find_idx_files("data", "mnist", "train") is None, reason="MNIST not installed")
def test_matches_released_morpho_mnist_values():
    """Morpho-MNIST's ``original/train-morpho.csv`` row 0 (as quoted in its tests/test_measure.py)."""
    from cflight.data import MNIST

    got = _m(MNIST("data", split="train", morphometrics=False)[0]["image"])
    released = dict(area=107.3125, length=50.2665, thickness=2.46066, slant=0.231074, width=14.5396, height=19.8491)
    tolerance = dict(area=0.005, length=0.07, thickness=0.03, slant=0.005, width=0.005, height=0.005)
    for name, value in released.items():
        assert got[name] == pytest.approx(value, rel=tolerance[name]), name
