"""Pure math of methods/functional.py, without models."""
import pytest
import torch

from cflight.methods import functional as Fn


def test_class_probability_multiclass_and_binary():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    p = Fn.class_probability(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(p, logits.softmax(1)[[0, 1], [0, 1]])
    b = torch.tensor([[1.5], [-0.5]])
    torch.testing.assert_close(Fn.class_probability(b, torch.tensor([1, 0])), torch.tensor([torch.sigmoid(torch.tensor(1.5)), 1 - torch.sigmoid(torch.tensor(-0.5))]))


@pytest.mark.parametrize("n_classes", [4, 1])
def test_scores_are_monotone_transforms_of_probability(n_classes):
    # float64 so the naive reference log(p / (1 − p)) is exact enough at p ≈ 1 (it is the imprecise side).
    g = torch.Generator().manual_seed(n_classes)
    logits = torch.randn(5, n_classes, generator=g, dtype=torch.float64) * 3
    logits[0, 0] = 12.0  # a saturated probability, where float32 log-odds from p would lose digits
    classes = torch.randint(0, max(n_classes, 2), (5,), generator=g)
    p = Fn.class_probability(logits, classes)
    torch.testing.assert_close(Fn.class_score(logits, classes, "log_prob"), p.log(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(Fn.class_score(logits, classes, "logit"), (p / (1 - p)).log(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="objective"):
        Fn.class_score(logits, classes, "hinge")


def test_threshold_is_strict_and_directional():
    p = torch.tensor([0.5, 0.6, 0.5, 0.4])
    d = torch.tensor([1, 1, -1, -1])
    assert Fn.threshold_reached(p, 0.5, d).tolist() == [False, True, False, True]


def test_per_sample_normal_depends_only_on_seed_and_index():
    a = Fn.per_sample_normal((3,), seed=1, index=torch.tensor([5, 9]))
    b = Fn.per_sample_normal((3,), seed=1, index=torch.tensor([9, 7, 5]))
    torch.testing.assert_close(a[0], b[2])
    torch.testing.assert_close(a[1], b[0])
    c = Fn.per_sample_normal((3,), seed=2, index=torch.tensor([5]))
    assert not torch.equal(a[0], c[0])
    assert Fn.per_sample_normal((3,), 0, torch.tensor([], dtype=torch.long)).shape == (0, 3)


def test_distances():
    x = torch.zeros(2, 1, 2, 2)
    y = torch.ones(2, 1, 2, 2)
    assert Fn.l1_distance(x, y).tolist() == [4.0, 4.0]
    assert Fn.l2_distance(x, y).tolist() == [2.0, 2.0]


def test_target_reached_for_class_and_regression_targets():
    from cflight.types import ClassTarget, RegressionTarget

    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert Fn.target_reached(logits, ClassTarget(torch.tensor([0, 0]), 0.5)).tolist() == [True, False]
    down = ClassTarget(torch.tensor([0, 0]), 0.5, torch.tensor([-1, -1]))
    assert Fn.target_reached(logits, down).tolist() == [False, True]
    values = torch.tensor([[0.30], [0.36], [0.24]])
    assert Fn.target_reached(values, RegressionTarget(torch.full((3,), 0.3), 0.05)).tolist() == [True, False, False]
