"""SparseAFW (SVCE) as a counterfactual method: semantics of spec dvce_svce.md §3 on tiny models."""
import pytest
import torch
from torch import nn

from cflight.methods import SparseAFW
from cflight.methods import functional as Fn
from cflight.models.classifiers import TemperatureWrapper
from cflight.types import ClassTarget, RegressionTarget
from tests.helpers import LinearClassifier, images


class TinyMLP(nn.Module):
    """A nonlinear 1×6×6 classifier (float64 for exact batch/loop comparisons)."""

    def __init__(self, k: int = 3, seed: int = 0, dtype=torch.float64) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.in_channels, self.image_size, self.num_classes = 1, (6, 6), k
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Tanh(), nn.Linear(16, k)).to(dtype)

    def forward(self, x):
        return self.net(x)


class TinyRegressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.in_channels, self.image_size = 1, (6, 6)
        self.fc = nn.Linear(36, 1).double()

    def forward(self, x):
        return self.fc(x.flatten(1))


def _x(n=5, seed=0):
    return torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_runs_under_no_grad_and_reaches_target():
    model, x = TinyMLP(), _x()
    target = ClassTarget(torch.full((5,), 2), 0.5)
    with torch.no_grad():
        out = SparseAFW(eps=3.0, steps=30)(x, target, model)
    assert out.x_cf.shape == x.shape and not out.x_cf.requires_grad
    assert (out.x_cf >= 0).all() and (out.x_cf <= 1).all()
    assert (Fn.lp_norm(out.x_cf - x, 1.5) <= 3.0 * (1 + 1e-6)).all()
    torch.testing.assert_close(out.pred_cf, model(out.x_cf).detach())
    p = Fn.class_probability(out.pred_cf, target.classes)
    assert torch.equal(out.success, p > 0.5)
    assert out.success.any()
    assert (out.steps == 30).all()
    torch.testing.assert_close(out.extras["loss"], p.log())
    assert (out.extras["loss"] >= out.extras["loss0"]).all()
    torch.testing.assert_close(out.extras["distance"], Fn.lp_norm(out.x_cf - x, 1.5))


def test_log_confidence_increases_over_the_clean_image():
    model, x = TinyMLP(), _x()
    target = ClassTarget(torch.tensor([0, 1, 2, 0, 1]), 0.99)
    out = SparseAFW(eps=1.0, steps=20)(x, target, model)
    p0 = Fn.class_probability(model(x), target.classes)
    p1 = Fn.class_probability(out.pred_cf, target.classes)
    assert (p1 > p0).all()


def test_direction_minus_one_lowers_the_class():
    model, x = TinyMLP(), _x()
    target = ClassTarget(torch.zeros(5, dtype=torch.long), 0.1, direction=-torch.ones(5, dtype=torch.long))
    out = SparseAFW(eps=1.0, steps=20)(x, target, model)
    assert (Fn.class_probability(out.pred_cf, target.classes) < Fn.class_probability(model(x), target.classes)).all()


def test_batch_equals_loop_and_seeded():
    model, x = TinyMLP(), _x(6)
    target = ClassTarget(torch.tensor([0, 1, 2, 0, 1, 2]), 0.9)
    index = torch.arange(10, 16)
    method = SparseAFW(eps=1.5, steps=25, seed=3)
    out = method(x, target, model, index)
    for i in range(6):
        one = method(x[i:i + 1], target.select(torch.tensor([i])), model, index[i:i + 1])
        torch.testing.assert_close(one.x_cf[0], out.x_cf[i], rtol=1e-9, atol=1e-12)
    chunked = SparseAFW(eps=1.5, steps=25, seed=3, max_batch_size=4)(x, target, model, index)
    torch.testing.assert_close(chunked.x_cf, out.x_cf, rtol=1e-9, atol=1e-12)
    other = SparseAFW(eps=1.5, steps=25, seed=4)(x, target, model, index)
    assert not torch.equal(other.x_cf, out.x_cf)


def test_restarts_never_worse_and_v2_rule():
    model, x = TinyMLP(), _x()
    target = ClassTarget(torch.full((5,), 1), 0.9)
    one = SparseAFW(eps=1.0, steps=15)(x, target, model)
    three = SparseAFW(eps=1.0, steps=15, restarts=3)(x, target, model)
    assert (three.extras["loss"] >= one.extras["loss"]).all()
    assert (three.steps == 45).all()
    v2 = SparseAFW(eps=1.0, steps=15, step_rule="v2")(x, target, model)
    assert (Fn.lp_norm(v2.x_cf - x, 1.5) <= 1.0 + 1e-6).all()


def test_temperature_changes_the_explanation():
    """T changes the gradient direction of log p_T (spec §1.2), so the VCE differs."""
    model, x = TinyMLP(), _x()
    target = ClassTarget(torch.full((5,), 2), 0.9)
    a = SparseAFW(eps=1.0, steps=10)(x, target, model)
    b = SparseAFW(eps=1.0, steps=10)(x, target, TemperatureWrapper(model, 0.3))
    assert not torch.allclose(a.x_cf, b.x_cf)
    torch.testing.assert_close(b.pred_cf, model(b.x_cf).detach() / 0.3)


def test_regression_target_squared_error():
    model, x = TinyRegressor(), _x()
    y0 = model(x)[:, 0].detach()
    target = RegressionTarget(y0 + 0.5, tolerance=0.05)
    out = SparseAFW(eps=2.0, steps=30)(x, target, model)
    err0, err1 = (y0 - target.value).abs(), (out.pred_cf[:, 0] - target.value).abs()
    assert (err1 < err0).all()
    assert torch.equal(out.success, err1 <= 0.05)
    torch.testing.assert_close(out.extras["loss"], -(err1**2))


def test_float32_image_model():
    clf, x = LinearClassifier(num_classes=3), images(4)
    out = SparseAFW(eps=1.0, steps=10)(x, ClassTarget(torch.full((4,), 1), 0.5), clf)
    assert out.x_cf.dtype == torch.float32
    assert (Fn.lp_norm(out.x_cf - x, 1.5) <= 1.0 * (1 + 1e-5)).all()


@pytest.mark.parametrize("kwargs,match", [
    ({"p": 1.0}, "p must be > 1"), ({"p": 0.5}, "p must be > 1"), ({"eps": 0.0}, "eps must be > 0"),
    ({"eps": -1.0}, "eps must be > 0"), ({"steps": -1}, "steps"), ({"step_rule": "v3"}, "step_rule"),
    ({"restarts": 0}, "restarts"), ({"momentum": 1.0}, "momentum"), ({"rho": 0.0}, "rho"),
])
def test_invalid_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseAFW(**kwargs)


def test_keep_better_takes_the_higher_loss_per_sample() -> None:
    from types import SimpleNamespace

    from cflight.methods.svce import keep_better

    a = SimpleNamespace(x=torch.zeros(3, 1, 2, 2), aux=torch.zeros(3, 4), loss=torch.tensor([1.0, 2.0, 3.0]))
    b = SimpleNamespace(x=torch.ones(3, 1, 2, 2), aux=torch.ones(3, 4), loss=torch.tensor([2.0, 2.0, 1.0]))
    assert keep_better(None, a) is a
    best = keep_better(a, b)
    assert best.loss.tolist() == [2.0, 2.0, 3.0]  # a tie keeps the earlier restart
    assert best.x[:, 0, 0, 0].tolist() == [1.0, 0.0, 0.0] and best.aux[:, 0].tolist() == [1.0, 0.0, 0.0]
