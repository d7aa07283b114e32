"""COUT on linear models over a 2-pixel image, where the insertion curve is computable by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cflight.metrics import COUT, cout_scores, insertion_curves
from cflight.metrics.cout import curve_area, insertion_fractions, insertion_rank
from tests.metrics._merge import assert_merge_matches


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def _linear(weight: list[list[float]], bias: list[float]) -> nn.Module:
    lin = nn.Linear(2, len(bias))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight))
        lin.bias.copy_(torch.tensor(bias))
    return nn.Sequential(nn.Flatten(), lin)


X = torch.zeros(1, 1, 1, 2)
X_CF = torch.tensor([[[[1.0, 0.5]]]])  # pixel 0 changes most: inserted first


def test_binary_linear_model_by_hand() -> None:
    model = _linear([[2.0, 4.0]], [-1.0])  # path logits −1, 1, 3; source = prediction on x = class 0
    fractions, p_src, p_tgt = insertion_curves(model, X, X_CF)
    assert fractions.tolist() == [0.0, 0.5, 1.0]
    assert p_src[0].tolist() == pytest.approx([_sig(1), _sig(-1), _sig(-3)])
    assert p_tgt[0].tolist() == pytest.approx([_sig(-1), _sig(1), _sig(3)])
    auc = lambda c: 0.5 * (c[0] / 2 + c[1] + c[2] / 2)  # noqa: E731
    expected = auc([_sig(-1), _sig(1), _sig(3)]) - auc([_sig(1), _sig(-1), _sig(-3)])
    assert cout_scores(model, X, X_CF).item() == pytest.approx(expected, rel=1e-6)


def test_multiclass_linear_model_by_hand() -> None:
    model = _linear([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]], [1.0, 0.0, 0.0])
    # path logits (1,0,0), (1,2,0), (1,2,1); source 0 (its prediction), target 2

    def soft(z: list[float]) -> list[float]:
        e = [math.exp(v) for v in z]
        return [v / sum(e) for v in e]

    path = [soft([1, 0, 0]), soft([1, 2, 0]), soft([1, 2, 1])]
    auc = lambda k: 0.5 * (path[0][k] / 2 + path[1][k] + path[2][k] / 2)  # noqa: E731
    got = cout_scores(model, X, X_CF, target=torch.tensor([2]))
    assert got.item() == pytest.approx(auc(2) - auc(0), rel=1e-6)
    with pytest.raises(ValueError, match="target classes"):
        cout_scores(model, X, X_CF)


def test_ranks_steps_and_area_weightings() -> None:
    x, x_cf = torch.zeros(1, 2, 1, 3), torch.tensor([[[[0.1, 0.3, 0.0]], [[0.1, 0.0, 0.0]]]])
    assert insertion_rank(x, x_cf).tolist() == [[1, 0, 2]]  # Σ_c|Δ| = 0.2, 0.3, 0 (ties keep position order)
    step, counts = insertion_fractions(5, num_steps=2)
    assert step == 2 and counts == [0, 2, 4, 5]
    ones, fr = torch.ones(1, 4, dtype=torch.float64), torch.tensor(counts, dtype=torch.float64) / 5
    assert curve_area(ones, fr, "ace").item() == pytest.approx(1.2)  # ACE weighs the last, short step as full
    assert curve_area(ones, fr, "trapezoid").item() == pytest.approx(1.0)


def test_cout_metric_averages_and_merges() -> None:
    m = COUT()
    m.update(torch.tensor([0.5, -0.1]))
    m.update(torch.tensor([0.2]))
    assert m.compute().item() == pytest.approx(0.2)
    assert_merge_matches(COUT, [(torch.rand(3),), (torch.rand(2),)], split=1)
