"""Validity, target confidence, flip rate and their oracle and regression variants on hand-made outputs."""
from __future__ import annotations

import math

import pytest
import torch

from cflight.metrics import OracleValidity, RegressionSuccess, Validity
from cflight.types import ClassTarget, RegressionTarget
from tests.metrics._merge import assert_merge_matches


def test_multiclass_validity_confidence_and_flips() -> None:
    logits_cf = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    logits = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    m = Validity()
    m.update(logits_cf, ClassTarget(torch.tensor([1, 1])), logits)
    out = m.compute()
    p = [math.e**2 / (math.e**2 + 2), 1 / (math.e**3 + 2)]
    assert out["validity"].item() == pytest.approx(0.5)
    assert out["target_confidence"].item() == pytest.approx(sum(p) / 2)
    assert out["flip_rate"].item() == pytest.approx(0.5)  # predictions 1 and 0 against 0 and 0


def test_binary_threshold_direction_and_missing_flips() -> None:
    m = Validity()
    # target class 0 of a one-logit model: p = 1 − σ(logit); row 0: 0.12 (not > 0.5), row 1: 0.73
    m.update(torch.tensor([[2.0], [-1.0]]), ClassTarget(torch.tensor([0, 0])))
    # direction −1 with τ = 0.3: valid when p(class 1) < 0.3: σ(−2) = 0.12 yes
    m.update(torch.tensor([[-2.0]]), ClassTarget(torch.tensor([1]), threshold=0.3, direction=torch.tensor([-1])))
    out = m.compute()
    assert out["validity"].item() == pytest.approx(2 / 3)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert out["target_confidence"].item() == pytest.approx((1 - sig(2) + 1 - sig(-1) + sig(-2)) / 3)
    assert math.isnan(out["flip_rate"].item())  # no originals given


def test_oracle_validity_and_regression_targets() -> None:
    o = OracleValidity()
    o.update(torch.tensor([[0.5], [0.9]]), RegressionTarget(torch.tensor([0.52, 0.5]), 0.05))
    out = o.compute()
    assert set(out) == {"oracle_validity", "oracle_target_confidence", "oracle_flip_rate", "oracle_n"}
    assert out["oracle_validity"].item() == pytest.approx(0.5)
    assert math.isnan(out["oracle_target_confidence"].item())


def test_regression_success_columns() -> None:
    m = RegressionSuccess()
    target = RegressionTarget(torch.tensor([0.52, 0.5]), 0.05)
    m.update(torch.tensor([[0.5], [0.9]]), target, pred=torch.tensor([0.1, 0.1]), oracle_cf=torch.tensor([0.6, 0.48]))
    out = m.compute()
    expected = {"success_rate": 0.5, "mae_to_target": 0.21, "mae_before": 0.41, "oracle_success_rate": 0.5,
                "oracle_mae_to_target": 0.05, "oracle_model_gap": 0.26}
    for k, v in expected.items():
        assert out[k].item() == pytest.approx(v, abs=1e-6), k
    m.update(torch.tensor([0.5]), RegressionTarget(torch.tensor([0.5]), 0.0))  # no oracle: its means keep 2 rows
    out = m.compute()
    assert out["success_rate"].item() == pytest.approx(2 / 3)
    assert out["oracle_mae_to_target"].item() == pytest.approx(0.05, abs=1e-6)
    with pytest.raises(TypeError, match="RegressionTarget"):
        m.update(torch.tensor([0.5]), ClassTarget(torch.tensor([0])))


def test_validity_metrics_merge() -> None:
    logits, cf = torch.randn(8, 4), torch.randn(8, 4)
    t = torch.randint(0, 4, (8,))
    ups = [(cf[i : i + 2], ClassTarget(t[i : i + 2]), logits[i : i + 2]) for i in range(0, 8, 2)]
    assert_merge_matches(Validity, ups, split=2)
    y, v = torch.rand(8), torch.rand(8)
    ups = [(y[i : i + 4], RegressionTarget(v[i : i + 4], 0.1), None, y[i : i + 4] * 0.9) for i in range(0, 8, 4)]
    assert_merge_matches(RegressionSuccess, ups, split=1)


def test_oracle_validity_is_the_oracles_decision_not_the_search_threshold() -> None:
    """At τ = 0.99 the explained model must be 99 % sure; the oracle only has to call the target class."""
    target = ClassTarget(torch.tensor([1, 1, 2]), threshold=0.99)
    # softmax rows: p(1) = 0.6 (argmax 1), p(1) ≈ 0.33 (argmax 0), p(2) = 0.999 (argmax 2)
    logits = torch.log(torch.tensor([[0.3, 0.6, 0.1], [0.34, 0.33, 0.33], [0.0005, 0.0005, 0.999]]))
    o, v = OracleValidity(), Validity()
    o.update(logits, target)
    v.update(logits, target)
    assert o.compute()["oracle_validity"].item() == pytest.approx(2 / 3)
    assert v.compute()["validity"].item() == pytest.approx(1 / 3)


def test_decision_reached_directions_and_one_logit_models() -> None:
    from cflight.methods.functional import decision_reached
    away = ClassTarget(torch.tensor([0, 0]), threshold=0.01, direction=torch.tensor([-1, -1]))
    assert decision_reached(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), away).tolist() == [False, True]
    toward_1 = ClassTarget(torch.tensor([1, 1]), threshold=0.9)
    assert decision_reached(torch.tensor([[0.1], [-0.1]]), toward_1).tolist() == [True, False]
    reg = RegressionTarget(torch.tensor([0.5]), 0.05)
    assert decision_reached(torch.tensor([[0.53]]), reg).tolist() == [True]
