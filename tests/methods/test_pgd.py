"""PGD / APGD pixel-space baselines in l∞, l2, l1 (with the [0,1] box)."""
import math

import pytest
import torch

from cflight.methods import APGD, PGD
from cflight.methods import functional as Fn
from cflight.types import ClassTarget, RegressionTarget
from tests.methods.test_svce import TinyMLP, TinyRegressor, _x

P = {"linf": math.inf, "l2": 2, "l1": 1}
EPS = {"linf": 0.05, "l2": 0.5, "l1": 2.0}


@pytest.mark.parametrize("cls", [PGD, APGD])
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_stays_in_ball_and_box_under_no_grad(cls, norm):
    model, x = TinyMLP(), _x()
    target = ClassTarget(torch.full((5,), 2), 0.9)
    kw = {"random_start": False} if cls is PGD else {}  # from a random start 12 sparse l1 steps may not recover
    with torch.no_grad():
        out = cls(eps=EPS[norm], norm=norm, steps=12, **kw)(x, target, model)
    assert (out.x_cf >= 0).all() and (out.x_cf <= 1).all()
    assert (Fn.lp_norm(out.x_cf - x, P[norm]) <= EPS[norm] * (1 + 1e-6)).all()
    torch.testing.assert_close(out.pred_cf, model(out.x_cf).detach())
    p0 = Fn.class_probability(model(x), target.classes)
    p1 = Fn.class_probability(out.pred_cf, target.classes)
    assert (p1 > p0).all()
    assert torch.equal(out.success, p1 > 0.9)
    assert (out.steps == 12).all()


@pytest.mark.parametrize("cls", [PGD, APGD])
def test_batch_equals_loop(cls):
    model, x = TinyMLP(), _x(4)
    target = ClassTarget(torch.tensor([0, 1, 2, 1]), 0.9)
    index = torch.tensor([7, 3, 9, 1])
    method = cls(eps=0.5, norm="l2", steps=10, seed=1)
    out = method(x, target, model, index)
    for i in range(4):
        one = method(x[i:i + 1], target.select(torch.tensor([i])), model, index[i:i + 1])
        torch.testing.assert_close(one.x_cf[0], out.x_cf[i], rtol=1e-9, atol=1e-12)


def test_ce_objective_leaves_the_predicted_class():
    model, x = TinyMLP(), _x()
    pred = model(x).argmax(1)
    target = ClassTarget(pred, 0.5, direction=-torch.ones(5, dtype=torch.long))
    out = APGD(eps=3.0, norm="l2", steps=30, objective="ce")(x, target, model)
    p0 = Fn.class_probability(model(x), pred)
    p1 = Fn.class_probability(out.pred_cf, pred)
    assert (p1 < p0).all()


def test_pgd_last_iterate_and_regression():
    model, x = TinyRegressor(), _x()
    y0 = model(x)[:, 0].detach()
    target = RegressionTarget(y0 - 0.3, 0.02)
    out = PGD(eps=1.0, norm="l2", steps=10, keep_best=False, random_start=False)(x, target, model)
    torch.testing.assert_close(out.pred_cf, model(out.x_cf).detach())
    assert ((out.pred_cf[:, 0] - target.value).abs() < 0.3).all()
    with pytest.raises(ValueError, match="keep_best"):
        PGD(eps=1.0, keep_best=False, restarts=2)(x, target, model)


def test_default_radii_per_norm():
    assert PGD(norm="l2").eps == 12.0 and APGD(norm="l1").eps == 400.0 and PGD(norm="linf").eps == 4 / 255


@pytest.mark.parametrize("cls", [PGD, APGD])
@pytest.mark.parametrize("kwargs,match", [
    ({"norm": "l3"}, "unknown norm"), ({"eps": 0.0}, "eps"), ({"eps": -0.1}, "eps"), ({"steps": -2}, "steps"),
    ({"objective": "prob"}, "objective"), ({"restarts": 0}, "restarts"),
])
def test_invalid_config(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_invalid_pgd_and_apgd_specific():
    with pytest.raises(ValueError, match="step_size"):
        PGD(eps=1.0, step_size=0.0)
    with pytest.raises(ValueError, match="l1_sparsity"):
        PGD(eps=1.0, l1_sparsity=0.0)
    with pytest.raises(ValueError, match="rho"):
        APGD(eps=1.0, rho=1.5)
