"""Distances and changed fraction on a hand-made change."""
from __future__ import annotations

import math

import pytest
import torch

from cflight.metrics import ImageDistances, changed_fraction, image_distances
from tests.metrics._merge import assert_merge_matches


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    # C=2, H=W=2: position (0,0) changes by +0.5 / −0.5 in the two channels, (1,1) by 0.005 in channel 0
    x = torch.full((1, 2, 2, 2), 0.5, dtype=torch.float64)
    x_cf = x.clone()
    x_cf[0, 0, 0, 0] += 0.5
    x_cf[0, 1, 0, 0] -= 0.5
    x_cf[0, 0, 1, 1] += 0.005
    return x, x_cf


def test_known_change_gives_known_distances() -> None:
    x, x_cf = _pair()
    d = image_distances(x, x_cf)
    assert d["l1"].item() == pytest.approx(1.005)
    assert d["l1_5"].item() == pytest.approx((2 * 0.5**1.5 + 0.005**1.5) ** (1 / 1.5))
    assert d["l2"].item() == pytest.approx(math.sqrt(0.5 + 0.005**2))
    assert d["linf"].item() == pytest.approx(0.5)
    # one of four positions exceeds 0.01 (the 0.005 change does not); with threshold 0.001 two do
    assert d["changed_fraction"].item() == pytest.approx(0.25)
    assert changed_fraction(x, x_cf, threshold=0.001).item() == pytest.approx(0.5)


def test_metric_averages_images_and_merges() -> None:
    x, x_cf = _pair()
    m = ImageDistances()
    m.update(torch.cat([x, x]), torch.cat([x_cf, x]))  # second image unchanged
    out = m.compute()
    assert out["l1"].item() == pytest.approx(1.005 / 2)
    assert out["changed_fraction"].item() == pytest.approx(0.125)
    assert out["n"].item() == 2
    xs, cfs = torch.rand(6, 3, 4, 4), torch.rand(6, 3, 4, 4)
    assert_merge_matches(ImageDistances, [(xs[i : i + 2], cfs[i : i + 2]) for i in range(0, 6, 2)], split=1)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="one shape"):
        image_distances(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))
