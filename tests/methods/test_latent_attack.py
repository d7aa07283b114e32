"""Invariants of Counterfactual Attacks (spec latent_and_regression.md §5.1 items 1–6)."""
import pytest
import torch

from cflight.methods import LatentAttack
from cflight.methods import functional as Fn
from cflight.types import ClassTarget, RegressionTarget
from tests.helpers import ConstantClassifier, LinearClassifier, LinearDecoder, images


@pytest.fixture
def setup():
    torch.manual_seed(0)
    return LinearDecoder(), LinearClassifier(num_classes=3), images(6)


def test_zero_steps_equals_reconstruction(setup):
    gen, clf, x = setup
    out = LatentAttack(gen, max_steps=0)(x, ClassTarget(torch.full((6,), 2), 0.99), clf)
    assert torch.equal(out.latent, out.extras["latent0"])
    assert torch.equal(out.x_cf, gen.decode(out.extras["latent0"]))
    assert torch.equal(out.x_cf, out.extras["reconstruction"])
    assert (out.steps == 0).all()


def test_check_before_update_keeps_z0(setup):
    gen, clf, x = setup
    method = LatentAttack(gen, max_steps=500, latent_init="mean")
    p0 = Fn.class_probability(clf(gen.decode(gen.encode(x)[0])), torch.zeros(6, dtype=torch.long))
    thr = float(p0.min()) - 1e-3  # already exceeded by every sample
    out = method(x, ClassTarget(torch.zeros(6, dtype=torch.long), thr), clf)
    assert torch.equal(out.latent, out.extras["latent0"])
    assert (out.steps == 0).all() and out.success.all()


def test_first_adam_step_is_sign_of_gradient(setup):
    gen, clf, x = setup
    target = ClassTarget(torch.full((6,), 1), 0.999)
    out = LatentAttack(gen, lr=0.01, max_steps=1, latent_init="mean")(x, target, clf)
    z0 = out.extras["latent0"].clone().requires_grad_(True)
    loss = -Fn.class_probability(clf(gen.decode(z0)), target.classes).sum()
    (g,) = torch.autograd.grad(loss, z0)
    torch.testing.assert_close(out.latent - z0.detach(), -0.01 * g.sign(), atol=1e-6, rtol=0)


def test_adam_step_matches_torch_adam():
    torch.manual_seed(3)
    p = torch.randn(5, 7, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.05)
    q, m, v = p.detach().clone(), torch.zeros(5, 7), torch.zeros(5, 7)
    for step in range(1, 6):
        g = torch.randn(5, 7)
        p.grad = g.clone()
        opt.step()
        q, m, v = Fn.adam_step(q, g, m, v, step, 0.05)
    torch.testing.assert_close(q, p.detach(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("direction", [1, -1])
def test_direction_monotone_and_stops_at_first_crossing(direction):
    gen, clf = LinearDecoder(latent_dim=3), LinearClassifier(num_classes=1)
    x = images(4)
    z0 = gen.encode(x)[0]
    p0 = torch.sigmoid(clf(gen.decode(z0)))[:, 0]
    thr = 0.3 if direction > 0 else 0.005  # reachable by this decoder (p0 ≈ 0.01–0.05)
    target = ClassTarget(torch.ones(4, dtype=torch.long), thr, torch.full((4,), direction))
    ps = []
    for k in range(0, 12):
        out = LatentAttack(gen, lr=0.02, max_steps=k, latent_init="mean")(x, target, clf)
        ps.append(torch.sigmoid(out.pred_cf[:, 0]))
    ps = torch.stack(ps)
    diffs = (ps[1:] - ps[:-1]) * direction
    assert (diffs >= -1e-6).all(), "probability must move in the requested direction"
    assert ((ps[-1] - p0) * direction > 0).all()
    # long run: stops at the first iterate past the threshold
    out = LatentAttack(gen, lr=0.05, max_steps=2000, latent_init="mean")(x, target, clf)
    assert out.success.all()
    for b in range(4):
        k = int(out.steps[b])
        prev = LatentAttack(gen, lr=0.05, max_steps=k - 1, latent_init="mean")(x[b:b + 1], target.select(torch.tensor([b])), clf)
        assert not bool(prev.success[0]), "an earlier iterate already crossed the threshold"


def test_manifold_membership(setup):
    gen, clf, x = setup
    out = LatentAttack(gen, lr=0.1, max_steps=50)(x, ClassTarget(torch.zeros(6, dtype=torch.long), 0.5), clf)
    # equal up to BLAS differences between batch sizes
    torch.testing.assert_close(out.x_cf, gen.decode(out.latent), atol=1e-6, rtol=0)
    assert (out.steps > 0).all()


def test_zero_gradient_reported_per_sample(setup):
    gen, _, x = setup
    clf = ConstantClassifier([0.0, 0.0, 0.0])
    out = LatentAttack(gen, max_steps=100)(x, ClassTarget(torch.zeros(6, dtype=torch.long), 0.9), clf)
    assert out.extras["zero_grad"].all()
    assert (out.steps == 0).all() and not out.success.any()
    assert torch.equal(out.latent, out.extras["latent0"])


def test_batch_equals_loop_and_chunking(setup):
    gen, clf, x = setup
    target = ClassTarget(torch.tensor([0, 1, 2, 0, 1, 2]), 0.8)
    idx = torch.arange(10, 16)
    method = LatentAttack(gen, lr=0.05, max_steps=200)
    full = method(x, target, clf, index=idx)
    for b in range(6):
        one = method(x[b:b + 1], target.select(torch.tensor([b])), clf, index=idx[b:b + 1])
        torch.testing.assert_close(one.x_cf[0], full.x_cf[b], atol=1e-6, rtol=0)
        assert int(one.steps[0]) == int(full.steps[b])
    chunked = LatentAttack(gen, lr=0.05, max_steps=200, max_batch_size=4)(x, target, clf, index=idx)
    torch.testing.assert_close(chunked.x_cf, full.x_cf, atol=1e-6, rtol=0)


def test_per_sample_seed_from_index(setup):
    gen, clf, x = setup
    t = ClassTarget(torch.zeros(6, dtype=torch.long), 0.99)
    a = LatentAttack(gen, max_steps=0, seed=1)(x, t, clf, index=torch.arange(6))
    b = LatentAttack(gen, max_steps=0, seed=1)(x, t, clf, index=torch.arange(6) + 100)
    c = LatentAttack(gen, max_steps=0, seed=1)(x, t, clf, index=torch.arange(6))
    assert torch.equal(a.latent, c.latent) and not torch.equal(a.latent, b.latent)


def test_regression_target_reaches_value():
    gen, reg = LinearDecoder(latent_dim=4), LinearClassifier(num_classes=1)
    x = images(3)
    y0 = reg(gen.decode(gen.encode(x)[0]))[:, 0].detach()
    out = LatentAttack(gen, lr=0.05, max_steps=2000, latent_init="mean")(x, RegressionTarget(y0 + 1.0, 0.05), reg)
    assert out.success.all()
    assert ((out.pred_cf[:, 0] - (y0 + 1.0)).abs() <= 0.05).all()


@pytest.mark.parametrize("objective", ["prob", "logit", "log_prob"])
def test_every_objective_reaches_target(setup, objective):
    gen, clf, x = setup
    target = ClassTarget(torch.ones(6, dtype=torch.long), 0.5)
    out = LatentAttack(gen, lr=0.05, max_steps=1000, objective=objective)(x, target, clf)
    assert out.success.all() and (out.steps > 0).all()
    assert (out.pred_cf.softmax(1)[:, 1] > 0.5).all()


def test_works_under_no_grad(setup):
    gen, clf, x = setup
    with torch.no_grad():
        out = LatentAttack(gen, lr=0.05, max_steps=50)(x, ClassTarget(torch.zeros(6, dtype=torch.long), 0.6), clf)
    assert (out.steps > 0).any()


@pytest.mark.parametrize(
    "make_x, target, match",
    [
        (lambda: images(2, channels=3), ClassTarget(torch.zeros(2, dtype=torch.long)), "channels"),
        (lambda: images(2, size=5), ClassTarget(torch.zeros(2, dtype=torch.long)), "size"),
        (lambda: images(2) * 2, ClassTarget(torch.zeros(2, dtype=torch.long)), r"\[0, 1\]"),
        (lambda: images(2).masked_fill(torch.rand(2, 1, 4, 4) > 0.5, float("nan")), ClassTarget(torch.zeros(2, dtype=torch.long)), "NaN"),
        (lambda: images(2), ClassTarget(torch.tensor([0, 7])), "unknown class index 7"),
        (lambda: images(3), ClassTarget(torch.tensor([0, 1])), "entries"),
    ],
)
def test_bad_input_clear_error(setup, make_x, target, match):
    gen, clf, _ = setup
    with pytest.raises(ValueError, match=match):
        LatentAttack(gen)(make_x(), target, clf)


@pytest.mark.parametrize("kwargs, match", [({"lr": 0}, "lr"), ({"max_steps": -1}, "max_steps"),
                                           ({"objective": "ce"}, "objective"), ({"latent_init": "x"}, "latent_init")])
def test_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LatentAttack(LinearDecoder(), **kwargs)


def test_invalid_target_values():
    with pytest.raises(ValueError, match="threshold"):
        ClassTarget(torch.zeros(2, dtype=torch.long), 1.5)
    with pytest.raises(ValueError, match="direction"):
        ClassTarget(torch.zeros(2, dtype=torch.long), 0.5, torch.tensor([1, 0]))
