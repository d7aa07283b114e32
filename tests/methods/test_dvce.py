"""DVCE: the spec's pseudocode (§2.6), sampler invariants (§7 items 20–27), one pass == two passes, errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cflight.methods import DVCE
from cflight.methods import functional as Fn
from cflight.models.generative.diffusion import GaussianDiffusion
from cflight.models.generative.unet import UNet
from cflight.rng import Stream, per_sample_normal
from cflight.types import ClassTarget, RegressionTarget
from tests.helpers import LinearClassifier

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


class GaussianDenoiser(nn.Module):
    """The exact ε̂ = E[ε | x_t] for data x0 ~ N(mu, s²·I) in diffusion space (a perfect toy DDPM)."""

    def __init__(self, mu: float = 0.0, s: float = 0.5, channels: int = 1, size: int = 4,
                 learn_sigma: bool = False) -> None:
        super().__init__()
        self.mu, self.s, self.learn_sigma = mu, s, learn_sigma
        self.in_channels, self.image_size = channels, (size, size)
        self.register_buffer("abar", GaussianDiffusion(1000).alphas_cumprod)
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append((x.detach().clone(), t.detach().clone()))
        a = self.abar[t.long()].to(x.dtype).reshape(-1, 1, 1, 1)
        eps = (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)
        return torch.cat([eps, torch.zeros_like(eps)], 1) if self.learn_sigma else eps


class ConstantEps(nn.Module):
    """ε̂ ≡ c: then x̂0 = x_t/√ᾱ − c·√(1/ᾱ − 1) and ∇_{x_t} = ∇_{x̂0}/√ᾱ (spec §7 item 25)."""

    def __init__(self, c: float = 0.3, channels: int = 1, size: int = 4) -> None:
        super().__init__()
        self.c, self.in_channels, self.image_size = c, channels, (size, size)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.c)


class Recording(nn.Module):
    """Wraps a model and records every input it is given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []
        self.in_channels, self.image_size = model.in_channels, model.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


def tiny_unet(size: int = 8) -> UNet:
    torch.manual_seed(0)
    net = UNet(1, size, 8, (1, 2), 1, (size // 2,), 8, learn_sigma=True).double().eval()
    for p in net.out.parameters():
        nn.init.normal_(p, std=0.05)
    return net


def images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=F64)


def start_noise(m: DVCE, shape, index, dtype=torch.float32):
    """The method's late-start noise: stream DIFFUSION_START of :mod:`cflight.rng`."""
    return per_sample_normal(shape, m.seed, index, stream=Stream.DIFFUSION_START, dtype=dtype)


def step_noise(m: DVCE, shape, index, t, dtype=torch.float32):
    """The method's ancestral noise at respaced step ``t``: stream DIFFUSION_STEP."""
    return per_sample_normal(shape, m.seed, index, stream=Stream.DIFFUSION_STEP, step=t, dtype=dtype)


def reference_dvce(m: DVCE, x, classes, f_n, f_r, index):
    """Spec §2.6 line by line: two denoiser forwards per step, batch-mean losses, F.l1_loss, inline cone."""
    d, net = m.diffusion, m.denoiser
    x0 = 2 * x - 1
    k = d.num_steps - m.skip_timesteps
    z = start_noise(m, tuple(x.shape[1:]), index, dtype=x.dtype)
    xt = d.q_sample(x0, k - 1, z)
    rows = torch.arange(len(x))
    for i in range(k - 1, -1, -1):
        with torch.no_grad():
            out = net(xt, d.model_timesteps(torch.full((len(x),), i)))
        eps, v = out[:, :1], out[:, 1:]
        pmv = d.p_mean_variance(xt, i, eps, v)
        xg = xt.detach().requires_grad_(True)
        eps_g = net(xg, d.model_timesteps(torch.full((len(x),), i)))[:, :1]
        x0g = d.predict_x0(xg, i, eps_g)

        def grad_of(model):
            logp = F.log_softmax(model((x0g + 1) / 2), dim=1)[rows, classes].mean()
            return torch.autograd.grad(logp, xg, retain_graph=True)[0].flatten(1)

        if f_r is not None and m.cone_angle is not None:
            g_r, g_n = grad_of(f_r), grad_of(f_n)
            theta = torch.arccos((g_r * g_n).sum(1) / (g_r.norm(dim=1) * g_n.norm(dim=1)))
            n_hat = g_n / g_n.norm(dim=1, keepdim=True)
            u = g_r - (g_r * n_hat).sum(1, keepdim=True) * n_hat
            u_hat = u / u.norm(dim=1, keepdim=True)
            inside = theta[:, None] <= math.radians(m.cone_angle)
            g_c = torch.where(inside, n_hat, n_hat + math.tan(math.radians(m.cone_angle)) * u_hat)
        else:
            g_c = grad_of(f_r if f_r is not None else f_n)
        if m.denoise_dist_input:
            g_d = torch.autograd.grad(F.l1_loss(x0g, x0), xg)[0].flatten(1)
        else:
            g_d = torch.sign(x0g - x0).detach().flatten(1)
        s = eps.flatten(1).norm(dim=1, keepdim=True)
        g = s * (m.classifier_lambda * g_c / g_c.norm(dim=1, keepdim=True)
                 - m.distance_lambda * g_d / g_d.norm(dim=1, keepdim=True))
        mean = pmv.mean + pmv.variance * g.reshape(x.shape)
        z = step_noise(m, tuple(x.shape[1:]), index, i, dtype=x.dtype)
        xt = (mean + (i > 0) * (0.5 * pmv.log_variance).exp() * z).detach()
        last = pmv.pred_x0
    return ((last + 1) / 2).clamp(0, 1)


@pytest.mark.parametrize("robust, cone, dist_through", [(False, 30.0, True), (True, 30.0, False), (True, None, True)])
def test_matches_the_reference_pseudocode(robust, cone, dist_through):
    net, x = tiny_unet(), images(3)
    f_n = LinearClassifier(3, 1, 8, seed=1).double()
    f_r = LinearClassifier(3, 1, 8, seed=2).double() if robust else None
    m = DVCE(net, f_r, timestep_respacing="20", skip_timesteps=15, classifier_lambda=0.3, distance_lambda=0.2,
             cone_angle=cone, denoise_dist_input=dist_through)
    classes, index = torch.tensor([0, 1, 2]), torch.tensor([5, 0, 9])
    out = m(x, ClassTarget(classes), f_n, index=index)
    ref = reference_dvce(m, x, classes, f_n, f_r, index)
    torch.testing.assert_close(out.x_cf, ref, rtol=0, atol=1e-12)
    assert out.steps.tolist() == [5, 5, 5]
    assert ("cone_theta" in out.extras) == (robust and cone is not None)


def test_one_forward_per_step_equals_two_pass_form():
    net, x = tiny_unet(), images(2)
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    f_n, f_r = LinearClassifier(3, 1, 8, seed=1).double(), LinearClassifier(3, 1, 8, seed=2).double()
    outs = {}
    for two_pass in (False, True):
        calls.clear()
        m = DVCE(net, f_r, timestep_respacing="20", skip_timesteps=14, aug_num=3, two_pass=two_pass)
        outs[two_pass] = m(x, ClassTarget(torch.tensor([2, 0])), f_n)
        assert len(calls) == 6 * (2 if two_pass else 1)
    assert torch.equal(outs[False].x_cf, outs[True].x_cf)
    assert torch.equal(outs[False].extras["cone_theta"], outs[True].extras["cone_theta"])


def test_late_start_bookkeeping():
    den = GaussianDenoiser()
    m = DVCE(den, classifier_lambda=0.0, distance_lambda=0.0)  # reference defaults: 200 respaced, skip 100
    x = torch.full((400, 1, 4, 4), 0.75)

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop

    hook = den.register_forward_hook(stop)
    with pytest.raises(Stop):
        m(x, ClassTarget(torch.zeros(400, dtype=torch.long)), LinearClassifier(2, 1, 4))
    hook.remove()
    xt, t = den.inputs[0]
    assert m.num_reverse_steps == 100 and t.unique().tolist() == [497.0]
    sa, s1 = math.sqrt(float(den.abar[497])), math.sqrt(1 - float(den.abar[497]))
    assert abs(sa - 0.283) < 5e-4 and abs(s1 - 0.959) < 5e-4
    assert abs(float(xt.mean()) - sa * 0.5) < 4 * s1 / math.sqrt(xt.numel())  # q(x_t | x0) mean √ᾱ·(2x − 1)
    assert abs(float(xt.std()) - s1) < 0.03
    den.inputs.clear()
    m(x[:2], ClassTarget(torch.zeros(2, dtype=torch.long)), LinearClassifier(2, 1, 4))
    ts = [int(t[0]) for _, t in den.inputs]
    assert len(ts) == 100 and ts[0] == 497 and ts[-1] == 0 and ts == sorted(ts, reverse=True)


def test_zero_steps_returns_the_input_and_one_step_adds_no_noise():
    den, x = GaussianDenoiser(), images(3, 4).float()
    target, clf = ClassTarget(torch.tensor([0, 1, 0])), LinearClassifier(2, 1, 4)
    out = DVCE(den, timestep_respacing="10", skip_timesteps=10)(x, target, clf)
    assert torch.equal(out.x_cf, x) and out.steps.tolist() == [0, 0, 0] and not den.inputs
    m = DVCE(den, timestep_respacing="10", skip_timesteps=9, classifier_lambda=0.0, distance_lambda=0.0)
    index = torch.arange(3)
    out = m(x, target, clf, index=index)
    z = start_noise(m, (1, 4, 4), index)
    d = m.diffusion
    x1 = d.q_sample(2 * x - 1, 0, z)
    expected = ((d.predict_x0(x1, 0, den(x1, d.model_timesteps(torch.zeros(3, dtype=torch.long)))) + 1) / 2)
    torch.testing.assert_close(out.x_cf, expected.clamp(0, 1))


def test_unguided_is_a_seeded_sdedit_reconstruction():
    den, x = GaussianDenoiser(learn_sigma=True), images(2, 4)
    target, clf, index = ClassTarget(torch.tensor([0, 1])), LinearClassifier(2, 1, 4).double(), torch.tensor([3, 8])
    m = DVCE(den, timestep_respacing="20", skip_timesteps=10, classifier_lambda=0.0, distance_lambda=0.0)
    out = m(x, target, clf, index=index)
    d = m.diffusion
    xt = d.q_sample(2 * x - 1, 9, start_noise(m, (1, 4, 4), index, dtype=F64))
    for i in range(9, -1, -1):
        xt, pred_x0 = d.p_sample(den, xt, i, step_noise(m, (1, 4, 4), index, i, dtype=F64))
    torch.testing.assert_close(out.x_cf, ((pred_x0 + 1) / 2).clamp(0, 1))
    assert torch.equal(m(x, target, clf, index=index).x_cf, out.x_cf)
    m.seed = 2
    assert not torch.equal(m(x, target, clf, index=index).x_cf, out.x_cf)


def test_classifier_sees_the_unclamped_denoised_estimate():
    den, x = ConstantEps(c=2.0), images(2, 4)
    clf = Recording(LinearClassifier(1, 1, 4).double())
    m = DVCE(den, timestep_respacing="10", skip_timesteps=7)
    index = torch.arange(2)
    m(x, ClassTarget(torch.ones(2, dtype=torch.long)), clf, index=index)
    d = m.diffusion
    xt = d.q_sample(2 * x - 1, 2, start_noise(m, (1, 4, 4), index, dtype=F64))
    torch.testing.assert_close(clf.inputs[1], (d.predict_x0(xt, 2, torch.full_like(xt, 2.0)) + 1) / 2)
    assert clf.inputs[1].min() < 0 or clf.inputs[1].max() > 1  # not clamped (ε̂ = 2 throws x̂0 far out)


def test_guidance_goes_through_the_denoiser_and_is_rescaled():
    den, x = ConstantEps(c=0.3), images(2, 4)
    clf = LinearClassifier(1, 1, 4).double()
    w = clf.fc.weight.detach()[0].reshape(1, 4, 4)
    target = ClassTarget(torch.ones(2, dtype=torch.long))
    m = DVCE(den, timestep_respacing="10", skip_timesteps=5, classifier_lambda=0.1, distance_lambda=0.15)
    x0, xt = 2 * x - 1, torch.randn(2, 1, 4, 4, dtype=F64)
    g, out, theta = m.guidance(xt, 4, x0, target, clf, torch.arange(2))
    s = torch.full((1, 4, 4), 0.3).norm()
    x0_hat = m.diffusion.predict_x0(xt, 4, torch.full_like(xt, 0.3))
    sign = torch.sign(x0_hat - x0)
    expected = s * (0.1 * w / w.norm() - 0.15 * sign / sign.flatten(1).norm(dim=1)[:, None, None, None])
    torch.testing.assert_close(g, expected)
    assert theta is None
    torch.testing.assert_close(out.pred_x0, x0_hat)


def test_cone_with_orthogonal_gradients_makes_alpha_with_the_explained_one():
    den = ConstantEps(c=0.3)
    f_n, f_r = LinearClassifier(1, 1, 4).double(), LinearClassifier(1, 1, 4).double()
    with torch.no_grad():
        f_n.fc.weight.zero_()
        f_r.fc.weight.zero_()
        f_n.fc.weight[0, :8] = 1.0
        f_r.fc.weight[0, 8:] = 1.0
    m = DVCE(den, f_r, timestep_respacing="10", skip_timesteps=5, classifier_lambda=0.1, distance_lambda=0.0)
    target, xt = ClassTarget(torch.ones(3, dtype=torch.long)), torch.randn(3, 1, 4, 4, dtype=F64)
    g, _, theta = m.guidance(xt, 4, xt, target, f_n, torch.arange(3))
    torch.testing.assert_close(theta, torch.full((3,), 90.0, dtype=F64))
    cos = (g.flatten(1) @ f_n.fc.weight[0]) / (g.flatten(1).norm(dim=1) * f_n.fc.weight.norm())
    torch.testing.assert_close(torch.rad2deg(torch.arccos(cos)), torch.full((3,), 30.0, dtype=F64))
    out = m(images(3, 4), target, f_n)
    torch.testing.assert_close(out.extras["cone_theta"], torch.full((3,), 90.0, dtype=F64))
    assert out.extras["cone_inside"].abs().max() == 0


def test_guidance_raises_the_target_probability_over_the_chain():
    den = GaussianDenoiser(mu=0.0, s=0.4, learn_sigma=True)
    clf = Recording(LinearClassifier(3, 1, 4, seed=3).double())
    x, classes = images(8, 4, seed=1), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    kwargs = dict(timestep_respacing="50", skip_timesteps=25, distance_lambda=0.0)
    guided = DVCE(den, classifier_lambda=1.0, **kwargs)(x, ClassTarget(classes), clf)
    with torch.no_grad():  # the classifier's view of x̂0 at each of the 25 steps
        probs = torch.stack([F.softmax(clf.model(i), 1)[torch.arange(8), classes] for i in clf.inputs[1:-1]]).mean(1)
    assert probs[-1] > probs[0] + 0.3 and probs[-6:].mean() > probs[6:12].mean() > probs[:6].mean()
    plain = DVCE(den, classifier_lambda=0.0, **kwargs)(x, ClassTarget(classes), clf)
    p_g = F.softmax(guided.pred_cf, 1)[torch.arange(8), classes]
    p_0 = F.softmax(plain.pred_cf, 1)[torch.arange(8), classes]
    assert (p_g > p_0).all() and guided.success.sum() > plain.success.sum()
    assert guided.x_cf.min() >= 0 and guided.x_cf.max() <= 1 and guided.x_cf.shape == x.shape


def test_distance_term_keeps_the_result_closer():
    den, x = GaussianDenoiser(s=0.4), images(8, 4, seed=2)
    clf, target = LinearClassifier(3, 1, 4, seed=3).double(), ClassTarget(torch.arange(8) % 3)
    kwargs = dict(timestep_respacing="50", skip_timesteps=20, classifier_lambda=0.1)
    far = DVCE(den, distance_lambda=0.0, **kwargs)(x, target, clf)
    near = DVCE(den, distance_lambda=1.0, **kwargs)(x, target, clf)
    assert Fn.l1_distance(near.x_cf, x).mean() < 0.8 * Fn.l1_distance(far.x_cf, x).mean()


def test_regression_target_and_decreasing_binary_target():
    den, x = GaussianDenoiser(s=0.4), images(4, 4, seed=3)
    reg = LinearClassifier(1, 1, 4, seed=4).double()
    with torch.no_grad():
        start = reg(x)[:, 0]
    target = RegressionTarget(start + 3.0, tolerance=0.5)
    kwargs = dict(timestep_respacing="50", skip_timesteps=25, distance_lambda=0.0)
    out = DVCE(den, classifier_lambda=0.5, **kwargs)(x, target, reg)
    plain = DVCE(den, classifier_lambda=0.0, **kwargs)(x, target, reg)
    err, err0 = (out.pred_cf[:, 0] - target.value).abs(), (plain.pred_cf[:, 0] - target.value).abs()
    assert (err < err0).all()
    torch.testing.assert_close(out.success, err <= 0.5)
    down = ClassTarget(torch.ones(4, dtype=torch.long), 0.5, direction=-torch.ones(4, dtype=torch.long))
    dec = DVCE(den, classifier_lambda=0.5, **kwargs)(x, down, reg)
    assert (torch.sigmoid(dec.pred_cf[:, 0]) < torch.sigmoid(plain.pred_cf[:, 0])).all()


def test_results_do_not_depend_on_batch_composition():
    den, x = GaussianDenoiser(learn_sigma=True), images(4, 4)
    f_n, f_r = LinearClassifier(3, 1, 4, seed=1).double(), LinearClassifier(3, 1, 4, seed=2).double()
    m = DVCE(den, f_r, timestep_respacing="20", skip_timesteps=14, aug_num=3)
    target, index = ClassTarget(torch.tensor([0, 1, 2, 1])), torch.tensor([10, 11, 12, 13])
    full = m(x, target, f_n, index=index)
    part = m(x[[3, 1]], target.select(torch.tensor([3, 1])), f_n, index=index[[3, 1]])
    torch.testing.assert_close(part.x_cf, full.x_cf[[3, 1]], rtol=0, atol=1e-12)
    m.max_batch_size = 3
    torch.testing.assert_close(m(x, target, f_n, index=index).x_cf, full.x_cf, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"skip_timesteps": 201}, "skip_timesteps"),
    ({"skip_timesteps": -1}, "skip_timesteps"),
    ({"classifier_lambda": -0.1}, "lambda"),
    ({"distance_p": 0.5}, "distance_p"),
    ({"cone_angle": 90.0}, "cone_angle"),
    ({"aug_num": 0}, "aug_num"),
    ({"timestep_respacing": "fast"}, "respacing"),
    ({"schedule": "sigmoid"}, "schedule"),
    ({"fixed_variance": "tiny"}, "fixed_variance"),
])
def test_bad_configuration_is_a_one_line_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        DVCE(GaussianDenoiser(), **kwargs)
    assert "\n" not in str(info.value)


def test_bad_inputs_are_rejected_before_any_work():
    den = GaussianDenoiser(size=4)
    m = DVCE(den, timestep_respacing="10", skip_timesteps=5)
    clf = LinearClassifier(2, 1, 4)
    with pytest.raises(ValueError, match="denoiser expects images of size"):
        m(torch.rand(1, 1, 8, 8), ClassTarget(torch.tensor([0])), LinearClassifier(2, 1, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m(torch.rand(1, 1, 4, 4) + 1, ClassTarget(torch.tensor([0])), clf)
    with pytest.raises(ValueError, match="unknown class"):
        m(torch.rand(1, 1, 4, 4), ClassTarget(torch.tensor([5])), clf)
    assert not den.inputs


def test_runs_in_the_explain_module_predict_step():
    from cflight.lit import ExplainModule

    method = DVCE(GaussianDenoiser(), LinearClassifier(3, 1, 4, seed=2), timestep_respacing="10", skip_timesteps=6)
    module = ExplainModule(method, LinearClassifier(3, 1, 4, seed=1))
    batch = {"image": images(3, 4).float(), "index": torch.tensor([4, 5, 6]), "label": torch.tensor([0, 1, 2])}
    with torch.no_grad():  # Lightning's predict loop runs without gradients; the method enables them
        row = module.predict_step(batch)
    assert row["x_cf"].shape == (3, 1, 4, 4) and row["steps"].tolist() == [4, 4, 4]
    assert row["cone_theta"].shape == (3,) and row["valid"].dtype == torch.bool
