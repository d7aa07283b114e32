"""AC-RE / ACE on tiny models: spec latent_and_regression.md §2.3 line by line and the §5.2 invariants."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cflight.cli import main
from cflight.methods import ACE, ACRE
from cflight.methods import functional as Fn
from cflight.models.acceleration import Acceleration
from cflight.models.generative.diffusion import linear_betas, space_timesteps
from cflight.rng import Stream, per_sample_normal
from cflight.types import ClassTarget, RegressionTarget
from tests.helpers import LinearClassifier, LinearRegressor, tiny_config
from tests.methods.test_dvce import GaussianDenoiser, tiny_unet

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


class Counting(nn.Module):
    """Wraps a denoiser and records the batch size and timestep of every call."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, []
        self.in_channels, self.image_size = net.in_channels, net.image_size

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], int(t[0]), torch.is_grad_enabled()))
        return self.net(x, t)


def images(n: int, size: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=F64) * 0.8 + 0.1


def regressor(size: int = 4) -> nn.Module:
    return LinearRegressor(size=size).double()


def method(cls=ACRE, **kw) -> ACRE:
    kw.setdefault("denoiser", GaussianDenoiser(s=0.4, learn_sigma=True).double())
    kw.setdefault("dilation", 1)
    kw.setdefault("step_size", 0.02)
    kw.setdefault("max_iterations", 12)
    return cls(**kw)


def far_targets(f: nn.Module, x: torch.Tensor, shift: float = 0.15, tol: float = 0.02) -> RegressionTarget:
    with torch.no_grad():
        y = f(x)[:, 0]
    return RegressionTarget(torch.where(y < 0.5, y + shift, y - shift), tol)


def mixed_targets(f: nn.Module, x: torch.Tensor) -> RegressionTarget:
    """Reachable targets (ŷ ± 0.06) for the first half of the rows, 0.99 (out of reach here) for the rest."""
    near = far_targets(f, x, shift=0.06, tol=0.03).value
    half = len(x) // 2
    return RegressionTarget(torch.cat([near[:half], torch.full((len(x) - half,), 0.99)]), 0.03)


# ------------------------------------------------------------------ R_τ against the spec's pseudocode
def reference_chain(net, x, num_timesteps, respacing, tau, noises):
    """Spec §2.3 ``R_τ`` in float64 from the raw linear schedule: noises = [q_sample ε, ε_{τ−1}, …, ε_0]."""
    kept = space_timesteps(num_timesteps, respacing)
    abar_all = torch.cumprod(1 - linear_betas(num_timesteps), 0)[kept]
    u = 2 * x - 1
    a = abar_all[tau - 1]
    u = a.sqrt() * u + (1 - a).sqrt() * noises[0]
    for j, t in enumerate(range(tau - 1, -1, -1)):
        abar, prev = abar_all[t], (abar_all[t - 1] if t > 0 else torch.tensor(1.0, dtype=F64))
        beta = 1 - abar / prev
        post = beta * (1 - prev) / (1 - abar)
        post1 = (1 - abar_all[1] / abar_all[0]) * (1 - abar_all[0]) / (1 - abar_all[1])  # ADM: t=0 uses β̃_1
        out = net(u, torch.full((len(x),), float(kept[t]), dtype=F64))
        eps, v = out[:, :1], out[:, 1:]
        x0 = ((u - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1)
        mean = beta * prev.sqrt() / (1 - abar) * x0 + (1 - prev) * (1 - beta).sqrt() / (1 - abar) * u
        frac = (v + 1) / 2
        log_var = frac * beta.log() + (1 - frac) * (post if t > 0 else post1).log()
        u = mean + (t > 0) * (0.5 * log_var).exp() * noises[1 + j]
    return (u + 1) / 2


@pytest.mark.parametrize("stochastic", [True, False])
def test_chain_matches_the_spec_pseudocode(stochastic):
    m = method(timestep_respacing="25", num_timesteps=500, stochastic=stochastic)
    x, index = images(3), torch.tensor([4, 9, 2])
    i = 3  # PGD iteration: its noise is step i·(τ+1) + (0, 1 + t) of stream ACRE_CHAIN
    draw = [per_sample_normal((1, 4, 4), m.seed, index, stream=Stream.ACRE_CHAIN, step=i * 6 + s, dtype=F64)
            for s in range(6)]
    noises = [draw[0], *[draw[1 + t] for t in range(4, -1, -1)]]
    if not stochastic:
        noises = [torch.zeros_like(n) for n in noises]
    want = reference_chain(m.denoiser, x, 500, "25", 5, noises)
    torch.testing.assert_close(m.chain(x, index, i), want, rtol=0, atol=1e-12)


def test_respacing_gives_tau_and_the_original_timesteps():
    """§5.2 item 5: τ = int(fraction·respacing); the denoiser sees 83, 62, 42, 21, 0 of 500 (82, … of 1000)."""
    for t_train, spacing, frac, want in [(500, "25", 0.2, [83, 62, 42, 21, 0]), (1000, "50", 0.1, [82, 61, 41, 20, 0])]:
        net = Counting(GaussianDenoiser(learn_sigma=True).double())
        m = method(denoiser=net, num_timesteps=t_train, timestep_respacing=spacing, sampling_time_fraction=frac)
        assert m.tau == 5
        m.chain(images(1), torch.tensor([0]), 0)
        assert [c[1] for c in net.calls] == want


def test_chain_gradient_flows_through_every_unet_call():
    """§5.2 item 8: autograd ∂ŷ/∂x' equals central differences of the deterministic chain (a tiny UNet)."""
    m = method(denoiser=tiny_unet(8), stochastic=False, timestep_respacing="25", num_timesteps=500)
    f = regressor(8)
    x, index = images(1, 8), torch.tensor([0])
    xg = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(f(m.chain(xg, index, 0)).sum(), xg)
    assert float(g.abs().max()) > 0
    h, picks = 1e-6, [(0, 0, 1, 2), (0, 0, 5, 5), (0, 0, 7, 0)]
    for p in picks:
        e = torch.zeros_like(x)
        e[p] = h
        with torch.no_grad():
            fd = (f(m.chain(x + e, index, 0)) - f(m.chain(x - e, index, 0))).item() / (2 * h)
        assert g[p].item() == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_deterministic_mode_repeats_outputs_and_gradients():
    m = method(denoiser=tiny_unet(8), stochastic=False)
    x, f = images(2, 8), regressor(8)
    runs = []
    for _ in range(2):
        xg = x.clone().requires_grad_(True)
        out = m.chain(xg, torch.tensor([0, 1]), 7)
        runs.append((out.detach(), torch.autograd.grad(f(out).sum(), xg)[0]))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    # and the noise is ignored by iteration: iteration 0 gives the same deterministic chain
    assert torch.equal(m.chain(x, torch.tensor([0, 1]), 0), runs[0][0])


# ------------------------------------------------------------------ the PGD stage
@pytest.mark.parametrize("kind", ["regression", "class", "binary"])
def test_first_step_is_minus_alpha_sign_of_the_loss_gradient(kind):
    m = method(max_iterations=1, early_stop=False, stochastic=False, inpaint=-1.0)
    x, index = images(3), torch.arange(3)
    if kind == "regression":
        f = regressor()
        target = far_targets(f, x)
        loss = lambda out: F.mse_loss(out[:, 0], target.value.double(), reduction="sum")  # noqa: E731
    else:
        f = LinearClassifier(num_classes=3 if kind == "class" else 1).double()
        target = ClassTarget(torch.tensor([2, 0, 1]) if kind == "class" else torch.tensor([1, 1, 1]),
                             direction=torch.tensor([1, 1, -1]) if kind == "binary" else None)
        if kind == "class":
            loss = lambda out: F.cross_entropy(out, target.classes, reduction="sum")  # noqa: E731
        else:
            loss = lambda out: F.binary_cross_entropy_with_logits(  # noqa: E731
                out[:, 0], torch.tensor([1.0, 1.0, 0.0], dtype=F64), reduction="sum")
    xg = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(loss(f(m.chain(xg, index, 0))), xg)
    out = m(x, target, f, index=index)
    want = (x - 0.02 * g.sign()).clamp(0, 1)
    torch.testing.assert_close(out.extras["pre_explanation"], want, rtol=0, atol=1e-15)
    assert torch.equal(out.steps, torch.ones(3, dtype=torch.long))


def test_budget_each_step_moves_pixels_by_zero_or_alpha():
    """§5.2 item 1: runs of N and N+1 iterations differ by one signed step; ‖pe − x‖∞ ≤ N·α; pe in [0, 1]."""
    x, f, index = images(4), regressor(), torch.arange(4)
    target = far_targets(f, x)
    pes = [method(max_iterations=n, early_stop=False)(x, target, f, index=index).extras["pre_explanation"]
           for n in (5, 6)]
    step = (pes[1] - pes[0]).abs()
    inside = (pes[0] > 0.02) & (pes[0] < 0.98)  # no clamp possible there
    assert float(step.max()) <= 0.02 + 1e-12
    assert bool((((step[inside] - 0.02).abs() < 1e-12) | (step[inside] == 0)).all())
    assert bool((step[inside] > 0).any())
    assert float((pes[0] - x).abs().max()) <= 5 * 0.02 + 1e-12
    assert float(pes[1].min()) >= 0 and float(pes[1].max()) <= 1


def test_early_stopped_samples_keep_the_iterate_that_reached():
    """§5.2 item 2: a sample marked successful at iteration k is never updated again: its pe is the k-step
    iterate of a run without early stopping; the others ran every iteration; only active rows are computed."""
    net = Counting(GaussianDenoiser(s=0.4, learn_sigma=True).double())
    x, f, index = images(6), regressor(), torch.arange(6) + 20
    target = mixed_targets(f, x)
    m = method(denoiser=net, max_iterations=15)
    out = m(x, target, f, index=index)
    reached = out.extras["attack_reached"]
    assert 0 < int(reached.sum()) < 6, "the toy setting must have samples that stop and samples that do not"
    assert torch.equal(out.steps[~reached], torch.full_like(out.steps[~reached], 15))
    err = (out.extras["attack_pred"][:, 0] - target.value.double()).abs()
    assert bool((err[reached] <= 0.03).all()) and bool((err[~reached] > 0.03).all())
    for s in range(6):
        k = int(out.steps[s])
        free = method(max_iterations=k, early_stop=False)(x[s:s + 1], target.select(torch.tensor([s])), f,
                                                            index=index[s:s + 1])
        assert torch.equal(out.extras["pre_explanation"][s], free.extras["pre_explanation"][0])
    sizes = [c[0] for c in net.calls if c[2]]  # calls with gradients: the PGD chain
    assert sizes[0] == 6 and sizes[-1] == int((~reached).sum()) and sizes == sorted(sizes, reverse=True)


def test_reference_extra_step_gives_one_more_update_after_success():
    x, f, index = images(6), regressor(), torch.arange(6) + 20
    target = mixed_targets(f, x)
    ours = method(max_iterations=15)(x, target, f, index=index)
    ref = method(max_iterations=15, reference_extra_step=True)(x, target, f, index=index)
    r = ours.extras["attack_reached"]
    assert torch.equal(ref.extras["attack_reached"], r) and torch.equal(ref.steps[r], ours.steps[r] + 1)
    for s in torch.nonzero(r).flatten().tolist():
        one_more = method(max_iterations=int(ref.steps[s]), early_stop=False)(
            x[s:s + 1], target.select(torch.tensor([s])), f, index=index[s:s + 1])
        assert torch.equal(ref.extras["pre_explanation"][s], one_more.extras["pre_explanation"][0])


def test_results_depend_on_seed_and_index_not_on_batch_composition():
    """§5.2 item 3 and DESIGN §3: alone, in a batch, in chunks, in another order — the same numbers."""
    x, f = images(5), regressor()
    index = torch.tensor([7, 3, 11, 0, 5])
    target = far_targets(f, x, shift=0.06, tol=0.03)
    full = method(dist_l1=0.01, dilation=3)(x, target, f, index=index)
    chunked = method(dist_l1=0.01, dilation=3, max_batch_size=2)(x, target, f, index=index)
    perm = torch.tensor([4, 2, 0, 3, 1])
    shuffled = method(dist_l1=0.01, dilation=3)(x[perm], target.select(perm), f, index=index[perm])
    alone = method(dist_l1=0.01, dilation=3)(x[2:3], target.select(torch.tensor([2])), f, index=index[2:3])
    for key in ("pre_explanation", "chain_reconstruction"):
        torch.testing.assert_close(chunked.extras[key], full.extras[key], rtol=0, atol=1e-12)
        torch.testing.assert_close(shuffled.extras[key], full.extras[key][perm], rtol=0, atol=1e-12)
    torch.testing.assert_close(chunked.x_cf, full.x_cf, rtol=0, atol=1e-12)
    torch.testing.assert_close(shuffled.x_cf, full.x_cf[perm], rtol=0, atol=1e-12)
    torch.testing.assert_close(alone.x_cf[0], full.x_cf[2], rtol=0, atol=1e-12)
    assert torch.equal(shuffled.steps, full.steps[perm]) and torch.equal(alone.steps[0], full.steps[2])
    other_seed = method(dist_l1=0.01, dilation=3, seed=1)(x, target, f, index=index)
    assert not torch.allclose(other_seed.extras["chain_reconstruction"], full.extras["chain_reconstruction"])


# ------------------------------------------------------------------ mask and inpainting
def test_zero_iterations_nan_guard_returns_the_original():
    """Quirk 2: pe == x → no NaN, mask 0, everything kept, ce = x bit for bit; steps 0."""
    x, f = images(3), regressor()
    out = method(max_iterations=0)(x, far_targets(f, x), f)
    assert torch.equal(out.x_cf, x) and torch.equal(out.extras["pre_explanation"], x)
    assert not out.extras["change_mask"].isnan().any() and not out.extras["inpaint_mask"].any()
    assert torch.equal(out.steps, torch.zeros(3, dtype=torch.long))
    assert out.extras["chain_reconstruction"].shape == x.shape


def reference_inpaint(m, x, pe, keep, index):
    """Spec §2.3 lines 13–15 written out, with the method's noise draws (stream ACRE_INPAINT)."""
    d, tau = m.diffusion, m.tau

    def z(step):
        return per_sample_normal(tuple(x.shape[1:]), m.seed, index, stream=Stream.ACRE_INPAINT, step=step, dtype=F64)

    b = keep.double()
    u = d.q_sample(2 * pe - 1, tau - 1, z(0))
    for t in range(tau - 1, -1, -1):
        u = (1 - b) * u + b * d.q_sample(2 * x - 1, t, z(1 + t))
        eps, v = d.model_output(m.denoiser, u, t)
        u = d.p_sample_step(d.p_mean_variance(u, t, eps, v, clip_denoised=True), t, z(1 + tau + t))
    return (((1 - b) * u + b * (2 * x - 1) + 1) / 2).clamp(0, 1)


class CornerRegressor(nn.Module):
    """``sigmoid(Σ of the top-left 2×2 pixels − 2)`` of a 16×16 image."""

    in_channels, image_size = 1, (16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x[:, :, :2, :2].sum((1, 2, 3)) - 2)[:, None]


class MixingDenoiser(GaussianDenoiser):
    """The Gaussian toy denoiser plus a 3×3 blur of its input: pixels influence their neighbours (so the
    kept region matters to the regenerated one), and far from the corner the PGD gradient stays 0."""

    def __init__(self) -> None:
        super().__init__(s=0.4, size=16, learn_sigma=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = super().forward(x, t)
        return out + 0.3 * torch.cat([F.avg_pool2d(x, 3, 1, 1), torch.zeros_like(x)], 1)


@pytest.mark.parametrize("gamma", [0.15, 0.5, 0.0])
def test_inpainting_keeps_unchanged_pixels_and_follows_the_pseudocode(gamma):
    """§5.2 item 7: where B = 1 the CE is x exactly; γ ≤ 0 (B ≡ 0) is a pure re-denoising of pe."""
    x, f, index = images(4, 16), CornerRegressor(), torch.arange(4) + 3
    m = method(denoiser=MixingDenoiser().double(), inpaint=gamma, dilation=3, max_iterations=6, early_stop=False)
    out = m(x, far_targets(f, x), f, index=index)
    keep = out.extras["inpaint_mask"] == 0
    want_keep = Fn.keep_region(Fn.dilate_mask(Fn.change_mask(x, out.extras["pre_explanation"]), 3), gamma)
    assert torch.equal(keep, want_keep)
    assert torch.equal(out.x_cf[keep.expand_as(x)], x[keep.expand_as(x)])
    if gamma == 0.0:
        assert not keep.any()
    else:
        assert keep.any() and not keep.all()
    want = reference_inpaint(m, x, out.extras["pre_explanation"], keep, index)
    torch.testing.assert_close(out.x_cf, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.pred_cf, f(out.x_cf), rtol=0, atol=0)
    assert torch.equal(out.success, (out.pred_cf[:, 0] - far_targets(f, x).value.double()).abs() <= 0.02)


# ------------------------------------------------------------------ checkpointing, ACE, errors, CLI
def test_checkpointed_chain_gives_the_same_gradients_and_results():
    net = tiny_unet(8)
    plain = method(denoiser=net, timestep_respacing="25", num_timesteps=500)
    ckpt = method(denoiser=net, timestep_respacing="25", num_timesteps=500,
                  acceleration=Acceleration(checkpoint_chain=True))
    x, f, index = images(2, 8), regressor(8), torch.tensor([1, 8])
    grads = []
    for m in (plain, ckpt):
        xg = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(f(m.chain(xg, index, 2)).sum(), xg)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-14)
    target = far_targets(f, x, shift=0.05)
    a, b = plain(x, target, f, index=index), ckpt(x, target, f, index=index)
    torch.testing.assert_close(b.x_cf, a.x_cf, rtol=0, atol=1e-12)
    assert torch.equal(a.steps, b.steps)


def test_checkpointing_recomputes_each_unet_call_in_the_backward():
    net = Counting(tiny_unet(8))
    m = method(denoiser=net, acceleration=Acceleration(checkpoint_chain=True))
    xg = images(1, 8).requires_grad_(True)
    out = m.chain(xg, torch.tensor([0]), 0)
    assert len(net.calls) == m.tau
    out.sum().backward()
    assert len(net.calls) == 2 * m.tau  # each call's forward ran again in the backward pass


def test_ace_defaults_and_classifier_run():
    m = ACE(GaussianDenoiser(learn_sigma=True).double(), dilation=3)
    assert (m.max_iterations, m.dist_l1, m.early_stop, m.tau, m.inpaint, m.step_size, m.seed) == (
        50, 0.001, False, 5, 0.15, 1 / 255, 4)
    a = ACRE(GaussianDenoiser())
    assert (a.max_iterations, a.early_stop, a.dilation, a.dist_l1, a.seed) == (200, True, 15, 0.0, 0)
    f, x = LinearClassifier(num_classes=3).double(), images(2)
    out = ACE(GaussianDenoiser(learn_sigma=True).double(), dilation=3, max_iterations=4)(
        x, ClassTarget(torch.tensor([1, 2])), f)
    assert torch.equal(out.steps, torch.full((2,), 4)) and out.x_cf.shape == x.shape
    with pytest.raises(ValueError, match="use ACRE for a RegressionTarget"):
        m(x, RegressionTarget(torch.tensor([0.3, 0.4])), regressor())


@pytest.mark.parametrize("kwargs, message", [
    ({"sampling_time_fraction": 0.0}, "sampling_time_fraction must be in"),
    ({"sampling_time_fraction": 0.01}, "sampling_time_fraction must be in"),
    ({"step_size": 0.0}, "step_size and epsilon must be > 0"),
    ({"epsilon": -1.0}, "step_size and epsilon must be > 0"),
    ({"max_iterations": -1}, "max_iterations must be an int >= 0"),
    ({"max_iterations": 2.5}, "max_iterations must be an int >= 0"),
    ({"dist_l1": -0.1}, "dist_l1 and dist_l2 must be >= 0"),
    ({"dilation": 4}, "dilation must be an odd int"),
    ({"dilation": 0}, "dilation must be an odd int"),
    ({"max_iterations": 3_000_000}, "max_iterations \\* \\(tau \\+ 1\\) must be < 2\\^24"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        method(**kwargs)
    assert "\n" not in str(err.value)


def test_ace_through_cflight_predict(tmp_path):
    main(["predict", "-c", tiny_config("tests/configs/explain_ace_tiny.yaml", tmp_path)])
    job = tmp_path / "job"
    assert (job / "results.csv").is_file() and (job / "metrics.json").is_file()
    import csv
    rows = list(csv.DictReader(open(job / "results.csv")))
    assert len(rows) == 8 and all(int(r["steps"]) == 5 for r in rows)
    assert math.isfinite(float(rows[0]["l1"]))


def test_bf16_autocast_keeps_the_optimised_image_fp32():
    """With ``precision: bf16`` the UNet runs under autocast, the PGD iterate and outputs stay float32."""
    net = tiny_unet(8).float()
    x, f = images(2, 8).float(), LinearRegressor(size=8)
    target = RegressionTarget(torch.tensor([0.2, 0.8]), 0.02)
    fp32 = method(denoiser=net, max_iterations=3, dilation=3)(x, target, f)
    bf16 = method(denoiser=net, max_iterations=3, dilation=3, acceleration=Acceleration(precision="bf16"))(x, target, f)
    for out in (fp32, bf16):
        assert out.x_cf.dtype == out.extras["pre_explanation"].dtype == torch.float32
        assert 0 <= float(out.x_cf.min()) and float(out.x_cf.max()) <= 1
    # bf16 rounds the UNet's outputs (8 mantissa bits): close to fp32, not equal
    assert not torch.equal(bf16.extras["chain_reconstruction"], fp32.extras["chain_reconstruction"])
    torch.testing.assert_close(bf16.extras["chain_reconstruction"], fp32.extras["chain_reconstruction"],
                               rtol=0, atol=0.05)
