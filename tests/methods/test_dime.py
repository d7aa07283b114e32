"""DiME: the spec's pseudocode (§3.1) line by line, and its invariants (§5.4): s = 0 and λ = 0 is unguided
sampling, the shift is −Σ⊙(g_cls + g_dst) exactly, τ(τ+1)/2 denoiser calls per scale, only unflipped
samples are retried."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cflight.methods import DiME
from cflight.methods import functional as Fn
from cflight.models.generative.diffusion import GaussianDiffusion
from cflight.rng import Stream, per_sample_normal
from cflight.types import ClassTarget, RegressionTarget
from tests.helpers import LinearClassifier, LinearRegressor
from tests.methods.test_dvce import GaussianDenoiser

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int, size: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=F64)


def method(denoiser: nn.Module | None = None, **kw) -> DiME:
    """A DiME on the exact Gaussian denoiser: 20 respaced steps, τ = 4, one scale."""
    args = dict(num_timesteps=1000, schedule="linear", timestep_respacing="20", start_step=4, scales=(2.0,),
                l1_lambda=0.05, perceptual_lambda=0.0)
    args.update(kw)
    return DiME(denoiser or GaussianDenoiser(learn_sigma=True).double(), **args)


def noise(m: DiME, shape, index, stream, step):
    return per_sample_normal(shape, m.seed, index, stream=stream, step=step, dtype=F64)


def reference_dime(m: DiME, x, target, f, index, scale_number=0, scale=None):
    """Spec §3.1 for one scale, line by line (diffusion space; the same per-sample noise draws)."""
    d, net, tau = m.diffusion, m.denoiser, m.start_step
    scale = m.scales[scale_number] if scale is None else scale
    shape = tuple(x.shape[1:])
    x0 = 2 * x - 1
    z = d.q_sample(x0, tau, noise(m, shape, index, Stream.DIME_START, 0))  # noise at τ …
    x_hat = x0
    for t in range(tau - 1, -1, -1):  # … denoising from τ − 1
        step = scale_number * tau + t
        eps, v = d.model_output(net, z, t)
        pmv = d.p_mean_variance(z, t, eps, v, clip_denoised=True)
        abar = d.alphas_cumprod[t].item()
        xh = x_hat.detach().requires_grad_(True)
        logits = f((xh + 1) / 2)
        l_cls = -(target.direction.to(F64) * Fn.class_score(logits, target.classes, m.objective)).sum()
        g_cls = torch.autograd.grad(scale * l_cls, xh)[0] / abar ** 0.5
        zg = z.detach().requires_grad_(True)
        g_dst = torch.autograd.grad(m.l1_lambda * (zg - x0).abs().sum(), zg)[0]
        mean = pmv.mean - pmv.variance * (g_cls + g_dst)
        eps_t = noise(m, shape, index, Stream.DIME_STEP, step) if t > 0 else torch.zeros_like(z)
        z = (mean + (0.5 * pmv.log_variance).exp() * eps_t).detach()
        if t > 0:  # unguided ancestral sampling from z down to 0
            x_hat = z
            with torch.no_grad():
                for i in range(t - 1, -1, -1):
                    eps_i = noise(m, shape, index, Stream.DIME_CLEAN, step * tau + i)
                    x_hat, _ = d.p_sample(net, x_hat, i, eps_i, clip_denoised=True)
    return ((z + 1) / 2).clamp(0, 1)


def test_one_scale_matches_the_spec_pseudocode():
    m = method()
    f = LinearClassifier(3).double()
    x, index = images(3), torch.tensor([4, 0, 9])
    target = ClassTarget(torch.tensor([1, 2, 0]), 0.99)  # out of reach: one chain for all
    out = m(x, target, f, index=index)
    torch.testing.assert_close(out.x_cf, reference_dime(m, x, target, f, index), rtol=0, atol=1e-12)
    assert out.steps.tolist() == [4, 4, 4] and out.extras["scale"].tolist() == [2.0, 2.0, 2.0]


def test_logit_objective_and_decreasing_binary_target_follow_the_pseudocode():
    m = method(objective="logit")
    f = LinearClassifier(1).double()
    x, index = images(2), torch.arange(2)
    target = ClassTarget(torch.tensor([1, 1]), 0.999, direction=torch.tensor([1, -1]))
    torch.testing.assert_close(m(x, target, f, index=index).x_cf, reference_dime(m, x, target, f, index),
                               rtol=0, atol=1e-12)


def test_zero_scale_and_lambdas_is_unguided_sampling_under_the_same_noise():
    """Spec §5.4 item 1: with s = 0 and λ = 0 the guided chain is plain DDPM sampling from z_τ."""
    m = method(scales=(0.0,), l1_lambda=0.0)
    f, x, index = LinearClassifier(3).double(), images(2), torch.tensor([3, 7])
    d, shape = m.diffusion, (1, 4, 4)
    z = d.q_sample(2 * x - 1, 4, noise(m, shape, index, Stream.DIME_START, 0))
    with torch.no_grad():
        for t in range(3, -1, -1):
            eps_t = noise(m, shape, index, Stream.DIME_STEP, t) if t > 0 else torch.zeros_like(z)
            z, _ = d.p_sample(m.denoiser, z, t, eps_t, clip_denoised=True)
    out = m(x, ClassTarget(torch.tensor([0, 1]), 0.999), f, index=index)
    torch.testing.assert_close(out.x_cf, ((z + 1) / 2).clamp(0, 1), rtol=0, atol=1e-12)


def test_shift_is_minus_sigma_times_the_closed_form_gradients(monkeypatch):
    """Spec §5.4 item 2. One logit f = w·img, objective logit, class 1: L = −s·w·(x̂ + 1)/2, so
    g_cls = −s·w/(2√ᾱ_t); the l1 term gives g_dst = λ1·sign(z − x0)."""
    m = method(objective="logit", scales=(3.0,), l1_lambda=0.2)
    f = LinearClassifier(1).double()
    w = f.fc.weight.detach().reshape(1, 1, 4, 4)
    shifts, zs = [], []
    original = GaussianDiffusion.p_sample_step

    def spy(self, out, t, noise, shift=None):
        if shift is not None:
            shifts.append(shift.detach().clone())
            zs.append(zs_in[-1])
        return original(self, out, t, noise, shift)

    zs_in = []
    original_guidance = DiME.guidance

    def record(self, z, *args, **kwargs):
        zs_in.append(z.detach().clone())
        return original_guidance(self, z, *args, **kwargs)

    monkeypatch.setattr(GaussianDiffusion, "p_sample_step", spy)
    monkeypatch.setattr(DiME, "guidance", record)
    x = images(2)
    m(x, ClassTarget(torch.tensor([1, 1]), 0.999), f, index=torch.arange(2))
    assert len(shifts) == 4
    for t, (shift, z) in zip(range(3, -1, -1), zip(shifts, zs)):
        abar = m.diffusion.alphas_cumprod[t].item()
        expected = -(-3.0 * w / (2 * abar ** 0.5) + 0.2 * torch.sign(z - (2 * x - 1)))
        torch.testing.assert_close(shift, expected, rtol=0, atol=1e-12)


class Counting(nn.Module):
    """A denoiser wrapper that counts forward rows."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.rows, self.in_channels, self.image_size = net, [], net.in_channels, net.image_size

    def forward(self, x, t):
        self.rows.append(x.shape[0])
        return self.net(x, t)


@pytest.mark.parametrize("tau", [1, 2, 5])
def test_denoiser_calls_per_scale_are_tau_tau_plus_one_over_two(tau):
    """Spec §5.4 item 3 (and no backward pass through the denoiser)."""
    net = Counting(GaussianDenoiser(learn_sigma=True).double())
    m = method(denoiser=net, start_step=tau, scales=(0.5, 1.0))
    f, x = LinearClassifier(3).double(), images(3)
    with torch.no_grad():
        target = ClassTarget(f(x).argmin(1), 0.999)  # the least likely class: no sample flips
    out = m(x, target, f, index=torch.arange(3))
    assert not Fn.decision_reached(out.pred_cf, target).any()
    assert m.denoiser_calls_per_scale == tau * (tau + 1) // 2
    assert net.rows == [3] * (2 * m.denoiser_calls_per_scale)  # both scales run on all 3


def test_only_unflipped_samples_are_retried_and_flipped_ones_keep_their_first_counterfactual():
    """Spec §5.4 item 4, with per-sample noise: a sample flipped by the first scale has the result of a run
    with that scale alone; the next scale runs on the others only."""
    f = LinearClassifier(3).double()
    x, index = images(6, seed=3), torch.arange(6)
    with torch.no_grad():
        target_classes = f(x).topk(2, 1).indices[:, 1]  # the second most likely class
    target = ClassTarget(target_classes, 0.34)
    net = Counting(GaussianDenoiser(learn_sigma=True).double())
    first = method(denoiser=net, scales=(6.0,))(x, target, f, index=index)
    flipped = Fn.decision_reached(first.pred_cf, target)
    assert 0 < int(flipped.sum()) < 6, "the test needs some samples flipped by the first scale and some not"
    net.rows.clear()
    both = method(denoiser=net, scales=(6.0, 20.0))(x, target, f, index=index)
    torch.testing.assert_close(both.x_cf[flipped], first.x_cf[flipped], rtol=0, atol=0)
    assert both.extras["scale"][flipped].eq(6.0).all() and both.extras["scale"][~flipped].eq(20.0).all()
    calls = method().denoiser_calls_per_scale
    assert net.rows == [6] * calls + [int((~flipped).sum())] * calls


def test_guidance_moves_the_target_probability_up():
    f = LinearClassifier(3).double()
    x, index = images(8, seed=5), torch.arange(8)
    with torch.no_grad():
        classes = f(x).argmin(1)
    target = ClassTarget(classes, 0.999)
    guided = method(scales=(20.0,))(x, target, f, index=index)
    unguided = method(scales=(0.0,))(x, target, f, index=index)
    p = lambda out: torch.softmax(out.pred_cf, 1).gather(1, classes[:, None]).mean()  # noqa: E731
    assert p(guided) > p(unguided) + 0.05


def test_regression_target_descends_the_squared_error():
    reg = LinearRegressor().double()
    x, index = images(4, seed=2), torch.arange(4)
    with torch.no_grad():
        y = reg(x)[:, 0]
    target = RegressionTarget((y + 0.3).clamp(max=0.95), 0.01)
    guided = method(scales=(30.0,))(x, target, reg, index=index)
    unguided = method(scales=(0.0,))(x, target, reg, index=index)
    err = lambda out: (out.pred_cf[:, 0] - target.value.to(F64)).abs().mean()  # noqa: E731
    assert err(guided) < err(unguided)


def test_perceptual_term_uses_the_feature_network_at_the_clean_estimate():
    feats = nn.Conv2d(1, 2, 3, padding=1).double().requires_grad_(False)
    calls = []
    feats.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].requires_grad))
    m = method(perceptual=feats, perceptual_lambda=5.0, scales=(0.0,), l1_lambda=0.0)
    x = images(2)
    out = m(x, ClassTarget(torch.tensor([0, 1]), 0.999), LinearClassifier(3).double(), index=torch.arange(2))
    plain = method(scales=(0.0,), l1_lambda=0.0)(x, ClassTarget(torch.tensor([0, 1]), 0.999),
                                                  LinearClassifier(3).double(), index=torch.arange(2))
    assert calls.count(True) == 4 and calls.count(False) == 1  # x̂ per step (with a graph), x once
    assert not torch.equal(out.x_cf, plain.x_cf)


def test_results_do_not_depend_on_batch_composition():
    f = LinearClassifier(3).double()
    x, index = images(4, seed=1), torch.tensor([10, 11, 12, 13])
    target = ClassTarget(torch.tensor([0, 1, 2, 0]), 0.999)
    m = method(scales=(3.0,))
    whole = m(x, target, f, index=index)
    part = m(x[2:], target.select(torch.tensor([2, 3])), f, index=index[2:])
    torch.testing.assert_close(part.x_cf, whole.x_cf[2:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(start_step=0), "start_step must be"),
    (dict(start_step=20), "start_step must be"),
    (dict(scales=()), "scales must be"),
    (dict(scales=(1.0, -1.0)), "scales must be"),
    (dict(l1_lambda=-0.1), "must be >= 0"),
    (dict(objective="prob"), "objective must be one of"),
])
def test_bad_configuration_is_a_one_line_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        method(**kwargs)
