"""GaussianDiffusion: schedules, respacing maps, q/posterior algebra, samplers, DDIM inversion, losses."""
import math

import pytest
import torch

from cflight.models.generative.diffusion import (GaussianDiffusion, cosine_betas, discretized_gaussian_log_likelihood,
                                                 from_diffusion, linear_betas, space_timesteps, to_diffusion)
from cflight.models.generative.unet import UNet

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet(learn_sigma: bool = False, seed: int = 0) -> UNet:
    """A 1×8×8 UNet whose zero-initialised output layer is randomised, so ε̂ depends on x and t."""
    torch.manual_seed(seed)
    net = UNet(1, 8, 8, (1, 2), 1, (4,), 8, learn_sigma=learn_sigma).double().eval()
    for p in net.out.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return net.requires_grad_(False)


# ---------------------------------------------------------------- schedules and respacing

def test_linear_and_cosine_schedules():
    b = linear_betas(1000)
    assert b.dtype == F64 and len(b) == 1000
    assert math.isclose(b[0], 1e-4) and math.isclose(b[-1], 0.02)
    b500 = linear_betas(500)  # ADM scales the range by 1000/T
    assert math.isclose(b500[0], 2e-4) and math.isclose(b500[-1], 0.04)
    c = cosine_betas(1000)
    abar = torch.cumprod(1 - c, 0)
    assert (c > 0).all() and (c <= 0.999).all() and (abar[1:] < abar[:-1]).all()
    expected = math.cos((1 / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    assert math.isclose(abar[0], expected, rel_tol=1e-12)


def test_space_timesteps_reference_examples():
    kept = space_timesteps(1000, "200")
    assert len(kept) == 200 and kept[:4] == [0, 5, 10, 15] and kept[-3:] == [989, 994, 999]
    assert space_timesteps(500, "25")[:5] == [0, 21, 42, 62, 83]  # DiME/ACE, latent_and_regression §5.2
    assert space_timesteps(1000, 50)[4] == 82
    assert space_timesteps(1000, "ddim10") == list(range(0, 1000, 100))
    assert space_timesteps(1000, "ddim20") == list(range(0, 1000, 50))
    sections = space_timesteps(300, "10,15,20")
    assert len(sections) == 45
    assert [sum(lo <= t < lo + 100 for t in sections) for lo in (0, 100, 200)] == [10, 15, 20]
    assert space_timesteps(10, "10") == list(range(10))


@pytest.mark.parametrize("spec", ["abc", "ddimx", "0", "ddim999", "2000", "-3"])
def test_space_timesteps_bad_specs_are_value_errors(spec):
    with pytest.raises(ValueError):
        space_timesteps(1000, spec)


def test_respacing_keeps_alpha_bar_and_late_start_numbers():
    base, resp = GaussianDiffusion(1000), GaussianDiffusion(1000, respacing="200")
    assert resp.num_steps == 200 and resp.num_timesteps == 1000
    torch.testing.assert_close(resp.alphas_cumprod, base.alphas_cumprod[resp.timestep_map], rtol=1e-12, atol=0)
    # spec §2.2: respaced index 99 is original t = 497 with sqrt(abar) ≈ 0.283 and sqrt(1 - abar) ≈ 0.959
    assert int(resp.timestep_map[99]) == 497
    assert abs(float(resp.sqrt_alphas_cumprod[99]) - 0.283) < 5e-4
    assert abs(float(resp.sqrt_one_minus_alphas_cumprod[99]) - 0.959) < 5e-4
    ace = GaussianDiffusion(500, respacing="25")  # latent_and_regression §2: t = 83 of 500, sqrt(abar) ≈ 0.863
    assert int(ace.timestep_map[4]) == 83 and abs(float(ace.sqrt_alphas_cumprod[4]) - 0.863) < 5e-4
    again = base.respaced("200")
    torch.testing.assert_close(again.betas, resp.betas)
    torch.testing.assert_close(resp.model_timesteps(torch.tensor([0, 99, 199])), torch.tensor([0.0, 497.0, 999.0]))


def test_schedule_stays_float64_under_dtype_casts():
    d = GaussianDiffusion(100).half()
    assert d.alphas_cumprod.dtype == F64 and d.timestep_map.dtype == torch.long
    x = torch.zeros(2, 1, 2, 2, dtype=torch.float16)
    assert d.q_sample(x, 5, x).dtype == torch.float16


def test_config_and_index_errors():
    with pytest.raises(ValueError, match="schedule"):
        GaussianDiffusion(1000, "quadratic")
    with pytest.raises(ValueError, match="fixed_variance"):
        GaussianDiffusion(fixed_variance="medium")
    with pytest.raises(ValueError, match="num_timesteps"):
        GaussianDiffusion(0)
    with pytest.raises(ValueError, match="betas"):
        GaussianDiffusion(10)  # the scaled linear schedule reaches beta = 2
    d = GaussianDiffusion(100)
    x = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ValueError, match="out of range"):
        d.q_sample(x, 100, x)
    with pytest.raises(ValueError, match="shape"):
        d.q_sample(x, torch.tensor([1, 2, 3]), x)


# ---------------------------------------------------------------- forward process and posterior

def test_q_sample_moments_and_pred_x0_inverts_it():
    d = GaussianDiffusion(1000, respacing="200")
    x0 = torch.full((20000, 1, 1, 1), 0.4, dtype=F64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    xt = d.q_sample(x0, 99, noise)
    sa, s1 = float(d.sqrt_alphas_cumprod[99]), float(d.sqrt_one_minus_alphas_cumprod[99])
    assert abs(float(xt.mean()) - sa * 0.4) < 4 * s1 / math.sqrt(20000)
    assert abs(float(xt.std()) - s1) < 0.02
    torch.testing.assert_close(d.predict_x0(xt, 99, noise), x0)
    torch.testing.assert_close(d.predict_eps(xt, 99, x0), noise)


def test_posterior_matches_bayes_and_true_eps_gives_it():
    """q(x_{t-1} | x_t, x0) by Gaussian conditioning of the scalar forward process."""
    d = GaussianDiffusion(1000, respacing="50")
    t = 20
    abar, abar_prev = float(d.alphas_cumprod[t]), float(d.alphas_cumprod[t - 1])
    alpha = abar / abar_prev
    x0, xt = torch.tensor([[[[0.3]]]], dtype=F64), torch.tensor([[[[-0.7]]]], dtype=F64)
    # prior x_{t-1} ~ N(sqrt(abar_prev) x0, 1 - abar_prev); likelihood x_t ~ N(sqrt(alpha) x_{t-1}, 1 - alpha)
    prec = 1 / (1 - abar_prev) + alpha / (1 - alpha)
    mean = (math.sqrt(abar_prev) * 0.3 / (1 - abar_prev) + math.sqrt(alpha) * -0.7 / (1 - alpha)) / prec
    m, v, _ = d.q_posterior(x0, xt, t)
    assert math.isclose(float(m), mean, rel_tol=1e-10) and math.isclose(float(v), 1 / prec, rel_tol=1e-10)
    eps = d.predict_eps(xt, t, x0)
    out = d.p_mean_variance(xt, t, eps)
    torch.testing.assert_close(out.mean, m)
    torch.testing.assert_close(out.pred_x0, x0)


def test_variances_fixed_and_learned_range():
    small, large = GaussianDiffusion(100), GaussianDiffusion(100, fixed_variance="large")
    xt, eps = torch.zeros(3, 1, 2, 2, dtype=F64), torch.zeros(3, 1, 2, 2, dtype=F64)
    t = torch.tensor([0, 5, 99])
    out_s, out_l = small.p_mean_variance(xt, t, eps), large.p_mean_variance(xt, t, eps)
    pv = small.posterior_variance
    torch.testing.assert_close(out_s.variance[:, 0, 0, 0], torch.stack([pv[1], pv[5], pv[99]]))
    torch.testing.assert_close(out_l.variance[:, 0, 0, 0], torch.stack([pv[1], small.betas[5], small.betas[99]]))
    v = torch.ones_like(xt)  # v = +1: beta_t;  v = -1: the clipped posterior variance
    torch.testing.assert_close(small.p_mean_variance(xt, t, eps, v).variance[:, 0, 0, 0], small.betas[t])
    torch.testing.assert_close(small.p_mean_variance(xt, t, eps, -v).variance, out_s.variance.expand_as(xt))


# ---------------------------------------------------------------- reverse process

def test_p_sample_adds_no_noise_at_t0_and_is_stateless():
    d = GaussianDiffusion(1000, respacing="20")
    net = tiny_unet(learn_sigma=True)
    x = torch.rand(2, 1, 8, 8, dtype=F64) * 2 - 1
    z = torch.randn_like(x)
    a0, p0 = d.p_sample(net, x, 0, z)
    b0, _ = d.p_sample(net, x, 0, 5 * z)
    torch.testing.assert_close(a0, b0)
    torch.testing.assert_close(a0, p0)  # at t = 0 the mean is x̂0 (c1 = 1, c2 = 0)
    a5, _ = d.p_sample(net, x, 5, z)
    d.p_sample(net, torch.randn_like(x), 12, z)  # an unrelated call in between changes nothing
    torch.testing.assert_close(d.p_sample(net, x, 5, z)[0], a5)
    shift = torch.randn_like(x)
    eps, v = d.model_output(net, x, 5)
    out = d.p_mean_variance(x, 5, eps, v)
    guided = d.p_sample(net, x, 5, z, cond_fn=lambda *_: shift)[0]
    torch.testing.assert_close(guided - a5, out.variance * shift)  # the mean shift is Σ ⊙ g


def test_ddpm_and_ddim_sampling_are_seeded():
    d = GaussianDiffusion(1000, respacing="10")
    net = tiny_unet(learn_sigma=True)
    x = torch.randn(2, 1, 8, 8, dtype=F64)
    a = d.ddpm_sample(net, x, generator=torch.Generator().manual_seed(1))
    b = d.ddpm_sample(net, x, generator=torch.Generator().manual_seed(1))
    c = d.ddpm_sample(net, x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.abs().max() <= 1
    torch.testing.assert_close(d.ddim_sample(net, x), d.ddim_sample(net, x))


def test_ddim_eta1_variance_is_posterior_variance():
    d = GaussianDiffusion(1000, respacing="50")
    x, eps = torch.zeros(1, 1, 1, 1, dtype=F64), torch.zeros(1, 1, 1, 1, dtype=F64)
    for t in (1, 10, 49):
        a, _ = d.ddim_step(x, t, eps, eta=1.0, noise=torch.ones_like(x))
        b, _ = d.ddim_step(x, t, eps, eta=1.0, noise=torch.zeros_like(x))
        torch.testing.assert_close((a - b).square().squeeze(), d.posterior_variance[t])
    with pytest.raises(ValueError, match="noise"):
        d.ddim_step(x, 3, eps, eta=0.5)


def test_ddim_inversion_consistency_shrinks_with_steps():
    net = tiny_unet()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64) * 2 - 1
    errors = []
    for steps in (6, 24, 96):
        d = GaussianDiffusion(1000, respacing=steps)
        t_end = steps // 2 - 1  # half way: original t ≈ 500
        z = d.ddim_invert(net, x, t_end)
        assert (z - x).abs().max() > 0.1  # it did encode
        errors.append(float((d.ddim_sample(net, z, t_end) - x).abs().max()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3
    d = GaussianDiffusion(1000, respacing=20)
    mismatch = GaussianDiffusion(1000, respacing=10)  # encode with 20 steps, decode with 10 (Diff-AE's quirk)
    z = d.ddim_invert(net, x)
    assert (mismatch.ddim_sample(net, z) - x).abs().max() > (d.ddim_sample(net, z) - x).abs().max()


# ---------------------------------------------------------------- training losses

def test_training_losses_hybrid_with_stop_gradient():
    d = GaussianDiffusion(100)
    net = tiny_unet(learn_sigma=True).requires_grad_(True)
    x0 = torch.rand(4, 1, 8, 8, dtype=F64) * 2 - 1
    t, noise = torch.tensor([0, 3, 50, 99]), torch.randn(4, 1, 8, 8, dtype=F64)
    terms = d.training_losses(net, x0, t, noise)
    assert set(terms) == {"loss", "mse", "vb"} and terms["loss"].shape == (4,)
    assert (terms["vb"] >= -1e-9).all()
    torch.testing.assert_close(terms["loss"], terms["mse"] + 0.001 * 100 * terms["vb"])
    # the vb term trains only the variance channel: its gradient w.r.t. ε̂ is zero
    out = net(d.q_sample(x0, t, noise), d.model_timesteps(t)).detach().requires_grad_(True)
    vb = d.training_losses(lambda *_: out, x0, t, noise)["vb"].sum()
    (grad,) = torch.autograd.grad(vb, out)
    assert grad[:, :1].abs().max() == 0 and grad[:, 1:].abs().max() > 0


def test_training_losses_perfect_predictor_and_fixed_variance():
    d = GaussianDiffusion(100)
    x0 = torch.rand(3, 1, 4, 4, dtype=F64) * 2 - 1
    noise, t = torch.randn_like(x0), torch.tensor([1, 10, 99])
    perfect = lambda xt, tt: noise  # noqa: E731  (ε-prediction equal to the true noise)
    terms = d.training_losses(perfect, x0, t, noise)
    assert terms["mse"].abs().max() == 0 and torch.equal(terms["loss"], terms["mse"])
    assert not terms["vb"].requires_grad
    # t = 0 uses the discretised decoder NLL; it is larger for a wrong mean
    good = discretized_gaussian_log_likelihood(x0, x0, torch.full_like(x0, -3.0))
    bad = discretized_gaussian_log_likelihood(x0, x0 + 0.3, torch.full_like(x0, -3.0))
    assert (good <= 0).all() and good.sum() > bad.sum()


def test_image_maps():
    x = torch.tensor([0.0, 0.25, 1.0])
    torch.testing.assert_close(to_diffusion(x), torch.tensor([-1.0, -0.5, 1.0]))
    torch.testing.assert_close(from_diffusion(torch.tensor([-2.0, 0.0, 3.0])), torch.tensor([0.0, 0.5, 1.0]))
