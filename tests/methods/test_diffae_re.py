"""Diff-AE-RE on a tiny diffusion autoencoder: the spec's invariants (latent_and_regression.md §5.3)."""
import pytest
import torch

from cflight.methods import DiffAERE
from cflight.methods.diffae_re import diffae_re_loss
from cflight.models.generative import DiffAE
from cflight.types import ClassTarget, RegressionTarget
from tests.helpers import LinearClassifier, LinearRegressor

TINY = dict(in_channels=3, image_size=8, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), head_channels=8, z_dim=6)
pytestmark = pytest.mark.usefixtures("one_thread")


def _net():
    torch.manual_seed(0)
    net = DiffAE(**TINY).eval()
    with torch.no_grad():  # ADM zero-initialises output layers: an untrained net would ignore z_sem entirely
        for p in net.parameters():
            if not bool(p.any()):
                p.normal_(0.0, 0.05)
    return net


def _method(net, **kw):
    kw = {"num_timesteps": 100, "schedule": "linear", "decode_steps": 4, "encode_steps": 5, "lr": 0.05, **kw}
    return DiffAERE(net, **kw)


def _x(n=4):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_zero_steps_is_the_reconstruction_exactly():
    net, x = _net(), _x()
    m = _method(net, max_steps=0)
    out = m(x, RegressionTarget(torch.full((4,), 0.9)), LinearRegressor(3, 8))
    with torch.no_grad():
        z0 = net.encode(x)
        recon = net.decode(net.encode_stochastic(x, z0, m.diffusion, 5), z0, m.diffusion, 4)
    assert torch.equal(out.x_cf, recon) and torch.equal(out.extras["reconstruction"], recon)
    assert torch.equal(out.latent, z0) and out.steps.tolist() == [0, 0, 0, 0]


def test_only_z_moves_and_the_subcode_is_fixed(monkeypatch):
    net, x = _net(), _x()
    m = _method(net, max_steps=5)
    seen = []
    real = m.decode
    monkeypatch.setattr(m, "decode", lambda x_T, z: (seen.append(x_T.detach().clone()), real(x_T, z))[1])
    out = m(x, RegressionTarget(torch.full((4,), 0.99), 0.001), LinearRegressor(3, 8))
    first = seen[0]
    assert all(torch.equal(s, first[: len(s)]) for s in seen) and not first.requires_grad
    assert not torch.equal(out.latent, out.extras["latent0"])  # z was optimised


def test_progress_toward_the_target_and_freezing():
    net, x = _net().double(), _x(6).double()  # float64: a sample run alone equals its row to round-off
    f = LinearRegressor(3, 8).double()
    with torch.no_grad():
        y0 = f(_method(net, max_steps=0)(x, RegressionTarget(torch.zeros(6)), f).x_cf)[:, 0]
    target = RegressionTarget(y0 + 0.08, tolerance=0.03)
    out = _method(net, max_steps=60)(x, target, f)
    err = (out.pred_cf[:, 0] - target.value).abs()
    assert float(err.mean()) < 0.08  # moved toward the target
    assert bool(out.success.any())
    for i in out.success.nonzero().squeeze(1).tolist():  # a frozen sample: its image and z are those at `steps`
        k = int(out.steps[i])
        alone = _method(net, max_steps=k)(x[i:i + 1], target.select(torch.tensor([i])), f)
        torch.testing.assert_close(alone.x_cf[0], out.x_cf[i], atol=1e-9, rtol=0)
        torch.testing.assert_close(alone.latent[0], out.latent[i], atol=1e-9, rtol=0)


def test_a_sample_does_not_depend_on_its_batch():
    net, x, f = _net().double(), _x(5).double(), LinearRegressor(3, 8).double()
    target = RegressionTarget(torch.full((5,), 0.7))
    full = _method(net, max_steps=4)(x, target, f)
    part = _method(net, max_steps=4)(x[2:4], target.select(torch.arange(2, 4)), f)
    torch.testing.assert_close(part.x_cf, full.x_cf[2:4], atol=1e-9, rtol=0)


def test_loss_composition():
    out, z0, z = torch.tensor([[0.3], [0.6]]), torch.zeros(2, 3), torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.5, 0.5]])
    target, x = RegressionTarget(torch.tensor([0.5, 0.5])), torch.zeros(2, 1, 2, 2)
    plain = diffae_re_loss(out, target, z, z0, x, x, 0.0, 1.0, "latent")
    torch.testing.assert_close(plain, torch.tensor([0.04, 0.01]))  # λ = 0: exactly the squared error
    l1 = diffae_re_loss(out, target, z, z0, x, x, 0.1, 1.0, "latent")
    torch.testing.assert_close(l1, plain + 0.1 * torch.tensor([3.0, 1.0]))  # per-sample ‖z0 − z‖_1
    l2 = diffae_re_loss(out, target, z, z0, x, x, 0.1, 2.0, "latent")
    torch.testing.assert_close(l2, plain + 0.1 * torch.tensor([5.0 ** 0.5, 0.5 ** 0.5]))


def test_class_targets_and_argument_errors():
    net, x = _net(), _x(2)
    out = _method(net, max_steps=3)(x, ClassTarget(torch.tensor([0, 1])), LinearClassifier(2, 3, 8))
    assert out.x_cf.shape == x.shape
    with pytest.raises(ValueError, match="lr must be > 0"):
        DiffAERE(net, lr=0)
    with pytest.raises(ValueError, match="distance_space"):
        DiffAERE(net, distance_space="pixels")
    with pytest.raises(TypeError, match="needs a diffusion autoencoder"):
        DiffAERE(torch.nn.Identity())
