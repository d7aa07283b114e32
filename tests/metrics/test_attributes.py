"""MNAC and CD on constructed oracle attributes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cflight.metrics import MNAC, CorrelationDifference, QueryCorrelation, attributes_changed
from tests.metrics._merge import assert_merge_matches


def test_mnac_binary_attributes() -> None:
    before = torch.tensor([[0.9, 0.1, 0.6], [0.2, 0.2, 0.2]])
    after = torch.tensor([[0.1, 0.2, 0.7], [0.8, 0.9, 0.1]])
    m = MNAC(3)
    m.update(before, after)  # row 0 flips attribute 0, row 1 attributes 0 and 1
    out = m.compute()
    assert out["mnac"].item() == pytest.approx(1.5)
    assert out["change_rate"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    ignoring = MNAC(3, ignore=(0,))
    ignoring.update(before, after)
    assert ignoring.compute()["mnac"].item() == pytest.approx(0.5)
    assert_merge_matches(lambda: MNAC(3), [(before[:1], after[:1]), (before[1:], after[1:])], split=1)


def test_mnac_continuous_descriptors_use_std_units() -> None:
    before, after = torch.zeros(2, 2), torch.tensor([[0.6, 0.9], [0.4, 1.1]])
    std = torch.tensor([1.0, 2.0])  # a change counts when |Δ| > 0.5·std: 0.5 and 1.0
    assert attributes_changed(before, after, std=std).tolist() == [[True, False], [False, True]]
    m = MNAC(2, std=std)
    m.update(before, after)
    assert m.compute()["mnac"].item() == pytest.approx(1.0)


def _probs(delta: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Oracle probabilities before/after whose binarised change is ``delta`` (+1: 0.2→0.8, −1: 0.8→0.2)."""
    d = torch.tensor(delta, dtype=torch.float32)
    before = torch.where(d > 0, 0.2, torch.where(d < 0, 0.8, 0.3))
    after = torch.where(d > 0, 0.8, torch.where(d < 0, 0.2, 0.3))
    return before, after


def test_cd_on_a_constructed_case() -> None:
    # Δq = [1, −1, 1, −1]; Δa1 = [1, −1, 0, 0] and Δa2 = [0, 0, 1, −1]: corr 2/√8 each; a3 never changes: corr 0
    before, after = _probs([[1, 1, 0, 0], [-1, -1, 0, 0], [1, 0, 1, 0], [-1, 0, -1, 0]])
    data = torch.tensor([1.0, 0.5, 0.0, -0.25])
    m = CorrelationDifference(data, query=0)
    m.update(before[:2], after[:2])
    m.update(before[2:], after[2:])
    out = m.compute()
    r = 2 / math.sqrt(8)
    assert out["cf_correlation"].tolist() == pytest.approx([1.0, r, r, 0.0])
    assert out["cd"].item() == pytest.approx(abs(r - 0.5) + r + 0.25)
    assert_merge_matches(lambda: CorrelationDifference(data, query=0), [(before[:1], after[:1]),
                                                                        (before[1:], after[1:])], split=1)


def test_query_correlation_matches_numpy() -> None:
    labels = (torch.rand(50, 4) > 0.5).float()
    labels[:, 2] = labels[:, 1]  # perfectly correlated column
    m = QueryCorrelation(4, query=1)
    for chunk in labels.split(16):
        m.update(chunk)
    expected = [np.corrcoef(labels[:, 1].numpy(), labels[:, k].numpy())[0, 1] for k in range(4)]
    assert m.compute().tolist() == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="query 4"):
        QueryCorrelation(4, query=4)
