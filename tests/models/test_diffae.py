"""Diff-AE network: shapes, the unchanged unconditional UNet, DDIM inversion invariants (spec §5.3), gradients."""
import pytest
import torch

from cflight.models.generative.diffae import DiffAE, LatentProbe
from cflight.models.generative.diffusion import GaussianDiffusion
from cflight.models.generative.training_schedule import TrainingSchedule
from cflight.models.generative.unet import UNet
from cflight.models.registry import build_net, load_net, net_kind
from cflight.validation import BadInputError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(in_channels=3, image_size=8, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), head_channels=8, z_dim=6)


def _tiny(dtype=torch.float64, seed=0, scale=0.05) -> DiffAE:
    """An untrained DiffAE whose zero-initialised convolutions are randomised, so ε̂ depends on x, t, z."""
    torch.manual_seed(seed)
    net = DiffAE(**TINY)
    for name, p in net.named_parameters():
        if p.ndim == 4 and p.abs().max() == 0:
            torch.nn.init.normal_(p, std=scale)
    return net.to(dtype).eval()


def _images(n=2, dtype=torch.float64, seed=1):
    # inside [0.2, 0.8], so clipping x̂0 to [−1, 1] stays inactive for a near-identity denoiser
    return 0.2 + 0.6 * torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_shapes_range_and_registry():
    assert net_kind("diffae") == "denoiser" and net_kind("diffae_probe") == "descriptor"
    net = build_net("diffae", **TINY).eval()
    x = torch.rand(3, 3, 8, 8)
    z = net.encode(x)
    assert z.shape == (3, 6)
    d = GaussianDiffusion(100)
    x_t = net.encode_stochastic(x, z, d, steps=5)
    assert x_t.shape == x.shape
    out = net.decode(torch.randn(3, 3, 8, 8) * 3, z, d, steps=5)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert net(x, torch.tensor([3.0, 50.0, 99.0]), z).shape == x.shape  # the denoiser contract


def test_unconditional_unet_unchanged_against_stored_reference():
    """Outputs and state-dict keys of the shipped MNIST DDPM, recorded before ``cond_dim`` existed."""
    ref = torch.load("tests/models/data/mnist_ddpm_reference.pt", weights_only=True)
    net = load_net("checkpoints/mnist_ddpm.pt", "denoiser")
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(ref["seed"]))
    with torch.no_grad():
        out = net(x, ref["t"])
    # float32 kernels differ between CPUs by a few ulp (2.4e-6 on outputs of magnitude ~3 on an AMD EPYC,
    # against the machine that recorded them); any change of the architecture moves outputs by O(1)
    torch.testing.assert_close(out, ref["out"], rtol=1e-5, atol=1e-5)
    assert list(net.state_dict()) == ref["keys"]
    assert not any("cond_emb" in k for k in UNet(model_channels=8, head_channels=8).state_dict())
    with pytest.raises(ValueError, match="cond given"):
        net(x, ref["t"], torch.zeros(2, 4))


def test_semantic_code_conditions_the_unet():
    net = _tiny(torch.float32, scale=0.2)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 10.0])
    z = torch.randn(1, 6).expand(2, 6).clone()
    a = net(x, t, z)
    b = net(x, t, torch.cat([z[:1], z[1:] + 1]))
    torch.testing.assert_close(a[0], b[0])
    assert (a[1] - b[1]).abs().max() > 1e-4
    with pytest.raises(BadInputError, match="conditional: pass z_sem"):
        net(x, t)
    with pytest.raises(ValueError, match="cond must have shape"):
        net.unet(x, t, torch.zeros(2, 5))


class _SmoothDenoiser(torch.nn.Module):
    """A stand-in conditional ε̂(x, t, z) = 0.1·tanh(conv(x)) + cos(t/300)·Az (spec §5 "tiny stand-ins").

    An untrained UNet's ε̂ swings with x far more than a trained one's, and DDIM inversion rests on
    ε̂(x_{t−1}, t) ≈ ε̂(x_t, t): a smooth, weakly x-dependent denoiser makes that hold, as training does.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.lin = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Linear(6, 3)

    def forward(self, x, t, cond):
        shift = self.lin(cond)[:, :, None, None] * torch.cos(t / 300)[:, None, None, None]
        return 0.1 * torch.tanh(self.conv(x)) + shift


def test_inversion_then_decoding_reconstructs_and_error_shrinks_with_steps():
    """Spec §5.3.4 in float64: decode(invert(x)) with the same T ≈ x, better with more steps; 20 → 10 is worse
    than 20 → 20."""
    net, x = _tiny(), _images()
    net.unet = _SmoothDenoiser().double()
    d = GaussianDiffusion(1000)
    with torch.no_grad():
        z = net.encode(x)
        err = {}
        for enc, dec in [(10, 10), (20, 20), (100, 100), (20, 10)]:
            x_t = net.encode_stochastic(x, z, d, enc)
            err[enc, dec] = (net.decode(x_t, z, d, dec) - x).abs().max().item()
        assert (net.decode(torch.randn_like(x), z, d, 20) - x).abs().max() > 0.3  # the subcode matters
    assert err[100, 100] < err[20, 20] < err[10, 10] < 0.1
    assert err[100, 100] < 0.01
    assert err[20, 10] > 2 * err[20, 20]


def test_untrained_unet_inverts_exactly_when_it_predicts_zero():
    """With ε̂ ≡ 0 (zero-initialised output) every DDIM step is a rescaling, so inversion is exact."""
    net, x = DiffAE(**TINY).double().eval(), _images()
    d = GaussianDiffusion(1000)
    with torch.no_grad():
        z = net.encode(x)
        out = net.decode(net.encode_stochastic(x, z, d, 20), z, d, 20)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-10)


def test_encoding_and_decoding_are_deterministic():
    net, x = _tiny(torch.float32), _images(dtype=torch.float32)
    d = GaussianDiffusion(100)
    z = net.encode(x)
    a, b = net.encode_stochastic(x, z, d, 10), net.encode_stochastic(x, z, d, 10)
    assert torch.equal(a, b)
    assert torch.equal(net.decode(a, z, d, 5), net.decode(a, z, d, 5))


def test_gradient_reaches_z_through_every_decoding_step_and_clip_is_straight_through():
    net, x = _tiny(torch.float64, scale=0.3), _images()
    d = GaussianDiffusion(100)
    with torch.no_grad():
        z0 = net.encode(x)
        x_t = net.encode_stochastic(x, z0, d, 10)
    z = z0.clone().requires_grad_(True)
    out = net.decode(x_t, z, d, 4)
    (g,) = torch.autograd.grad(out.sum(), z)
    assert torch.isfinite(g).all() and g.abs().min() > 0
    assert x_t.grad is None and not x_t.requires_grad
    # the [0, 1] clamp is straight-through: the same gradient as the unclipped (x + 1)/2
    raw = (d.respaced("ddim4").ddim_sample(net, x_t, clip_denoised=True, model_kwargs={"z_sem": z}) + 1) / 2
    (g_raw,) = torch.autograd.grad(raw.sum(), z)
    torch.testing.assert_close(g, g_raw)
    # without grad tracking through the chain the gradient is lost: the test above would fail
    with torch.no_grad():
        assert not net.decode(x_t, z, d, 4).requires_grad


def test_bad_inputs_are_one_line_errors():
    net, d = _tiny(torch.float32), GaussianDiffusion(100)
    x = torch.rand(2, 3, 8, 8)
    z = net.encode(x)
    with pytest.raises(BadInputError, match=r"x must be \[B, 3, 8, 8\]"):
        net.encode(torch.rand(2, 1, 8, 8))
    with pytest.raises(BadInputError, match=r"must lie in \[0, 1\]"):
        net.encode_stochastic(2 * x - 1, z, d)
    with pytest.raises(BadInputError, match=r"z_sem must be \[2, 6\]"):
        net.encode_stochastic(x, z[:1], d)
    with pytest.raises(BadInputError, match="cannot make exactly"):
        net.decode(x, z, d, steps=11)
    with pytest.raises(BadInputError, match="steps must be >= 1"):
        net.decode(x, z, d, steps=0)
    net.training_schedule = TrainingSchedule(1000, "linear", "fixed")
    with pytest.raises(BadInputError, match="trained with a 1000-step 'linear'"):
        net.decode(x, z, d, steps=5)


def test_reverse_step_with_clipping_matches_closed_form():
    """Clipped DDIM inversion re-derives ε from the clipped x̂0 (Diff-AE's ``ddim_reverse_sample``), float64."""
    d = GaussianDiffusion(1000, respacing="ddim10")
    g = torch.Generator().manual_seed(0)
    x, eps = 2 * torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64), torch.randn(
        4, 3, 5, 5, generator=g, dtype=torch.float64)
    t = 3
    ab, ab_prev = d.alphas_cumprod[t], d.alphas_cumprod[t - 1]
    x0 = ((x - (1 - ab_prev).sqrt() * eps) / ab_prev.sqrt()).clamp(-1, 1)
    eps_c = (x - ab_prev.sqrt() * x0) / (1 - ab_prev).sqrt()
    expected = ab.sqrt() * x0 + (1 - ab).sqrt() * eps_c
    assert (x0.abs() == 1).any()  # clipping is active
    torch.testing.assert_close(d.ddim_reverse_step(x, t, eps, clip_denoised=True), expected, rtol=0, atol=1e-12)
    # unclipped and first-step behaviour unchanged
    torch.testing.assert_close(d.ddim_reverse_step(x, t, eps), ab.sqrt() * (x - (1 - ab_prev).sqrt() * eps)
                               / ab_prev.sqrt() + (1 - ab).sqrt() * eps, rtol=0, atol=1e-12)
    x_in = x.clamp(-1, 1)
    torch.testing.assert_close(d.ddim_reverse_step(x_in, 0, eps, clip_denoised=True),
                               d.ddim_reverse_step(x_in, 0, eps), rtol=0, atol=0)


def test_probe_manipulation_identity_and_step_size():
    """Spec §5.3.9: denorm(norm(z) + 0·u) = z; in normalised space the edit has L2 norm α·√D."""
    probe = LatentProbe(16, ["a", "b"])
    probe.z_mean.normal_()
    probe.z_std.uniform_(0.5, 2)
    z = torch.randn(3, 16)
    torch.testing.assert_close(probe.manipulate(z, "b", 0.0), z)
    step = probe.normalise(probe.manipulate(z, "b", 0.3)) - probe.normalise(z)
    torch.testing.assert_close(step.norm(dim=1), torch.full((3,), 0.3 * 16 ** 0.5))
    with pytest.raises(BadInputError, match="unknown probe output"):
        probe.manipulate(z, "c", 0.3)
    with pytest.raises(BadInputError, match=r"reads z_sem \[B, 16\]"):
        probe(torch.randn(3, 8))
