"""Acceleration options on tiny networks: autocast, channels_last, checkpointing, compile, device checks."""
import copy

import pytest
import torch
from torch._dynamo import register_backend

from cflight.models import acceleration as acc
from cflight.models.acceleration import Acceleration, AcceleratedNet, accelerate
from cflight.models.generative.diffusion import GaussianDiffusion, to_diffusion
from cflight.models.generative.unet import UNet
from cflight.models.generative.vae import ConvVAE
from tests.helpers import LinearClassifier, LinearDecoder

pytestmark = pytest.mark.usefixtures("one_thread")

GRAPHS: list = []


@register_backend
def cflight_recording(gm, example_inputs):
    """A torch.compile backend that runs the traced graph as is and records that it was traced."""
    GRAPHS.append(gm)
    return gm.forward


def tiny_unet(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(1, 8, 8, (1, 2), 1, (4,), 8)
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().max() == 0:  # zero-initialised outputs would hide every difference
                p.normal_(0, 0.1)
    return net.eval()


def _inputs(n: int = 3):
    return torch.randn(n, 1, 8, 8), torch.tensor([3.0, 500.0, 900.0])[:n]


def _dtypes_seen(net, module_type=torch.nn.Conv2d):
    seen = []
    for m in net.modules():
        if isinstance(m, module_type):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_all_off_is_no_wrapper():
    net = tiny_unet()
    for options in (None, Acceleration(), Acceleration(precision=32, compile_backend="eager")):
        assert accelerate(net, options) is net
    assert not Acceleration().enabled and Acceleration(checkpoint_chain=True).enabled


@pytest.mark.parametrize("kwargs, match", [
    ({"precision": "8"}, "precision must be one of"),
    ({"precision": "fp64"}, "precision must be one of"),
    ({"compile": "fastest"}, "compile must be"),
    ({"compile_backend": ""}, "compile_backend"),
])
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Acceleration(**kwargs)


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("16", torch.float16), (16, torch.float16)])
def test_autocast_outputs_fp32_and_close(precision, dtype):
    net = tiny_unet()
    x, t = _inputs()
    xg = x.clone().requires_grad_(True)
    ref = net(xg, t)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), xg)
    fast = accelerate(copy.deepcopy(net), Acceleration(precision=precision))
    seen = _dtypes_seen(fast)
    xf = x.clone().requires_grad_(True)
    out = fast(xf, t)
    (g,) = torch.autograd.grad(out.square().sum(), xf)
    assert seen and set(seen) == {dtype}  # the convolutions really ran in low precision ...
    assert out.dtype == torch.float32 and g.dtype == torch.float32  # ... the caller sees fp32
    assert not torch.equal(out, ref)
    # loose, relative to the output's scale: rounding passes, a wrong or garbage network does not
    scale = float(ref.abs().max())
    torch.testing.assert_close(out, ref, rtol=0, atol=0.05 * scale)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=0.1 * float(g_ref.abs().max()))
    assert (out - tiny_unet(seed=1)(x, t)).abs().max() > 0.05 * scale  # another network is not "close"


def test_autocast_encode_decode_tuples_stay_fp32():
    vae = ConvVAE(latent_dim=8).eval()
    fast = accelerate(copy.deepcopy(vae), Acceleration(precision="bf16"))
    x = torch.rand(2, 1, 28, 28)
    mu, logvar = fast.encode(x)
    mu_ref, _ = vae.encode(x)
    assert mu.dtype == logvar.dtype == torch.float32
    torch.testing.assert_close(mu, mu_ref, rtol=0, atol=0.05 * float(mu_ref.abs().max()))
    z = mu.detach().requires_grad_(True)
    img = fast.decode(z)
    (g,) = torch.autograd.grad(img.sum(), z)
    assert img.dtype == g.dtype == z.dtype == torch.float32
    torch.testing.assert_close(img, vae.decode(z), rtol=0, atol=0.02)
    assert (fast.latent_dim, fast.in_channels, fast.image_size) == (8, 1, (28, 28))  # read through


def test_channels_last_equals_default():
    net = tiny_unet()
    x, t = _inputs()
    xg = x.clone().requires_grad_(True)
    ref = net(xg, t)
    (g_ref,) = torch.autograd.grad(ref.sum(), xg)
    fast = accelerate(copy.deepcopy(net), Acceleration(channels_last=True))
    assert fast.net.input_conv.weight.is_contiguous(memory_format=torch.channels_last)
    xf = x.clone().requires_grad_(True)
    out = fast(xf, t)
    (g,) = torch.autograd.grad(out.sum(), xf)
    assert out.is_contiguous()  # standard layout for the caller
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(g, g_ref)


def _chain(net, x: torch.Tensor, diffusion: GaussianDiffusion, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """AC-RE's R_τ (spec latent_and_regression §2.3) over ``steps`` UNet calls, kept in the graph."""
    u = diffusion.q_sample(to_diffusion(x), steps - 1, noise[0])
    for t in range(steps - 1, -1, -1):
        eps, v = diffusion.model_output(net, u, t)
        u = diffusion.p_sample_step(diffusion.p_mean_variance(u, t, eps, v), t, noise[t])
    return (u + 1) / 2


@pytest.mark.parametrize("steps", [2, 3])
def test_checkpoint_chain_same_gradients(steps):
    net = tiny_unet()
    diffusion = GaussianDiffusion(100, "linear", respacing="10")
    clf = LinearClassifier(num_classes=3, size=8)
    x, noise = torch.rand(2, 1, 8, 8), torch.randn(steps, 2, 1, 8, 8)

    def grads(model, plain):
        calls = []
        plain.input_conv.register_forward_hook(lambda *_: calls.append(1))
        xg = x.clone().requires_grad_(True)
        loss = clf(_chain(model, xg, diffusion, noise, steps)).log_softmax(1)[:, 1].sum()
        plain.zero_grad(set_to_none=True)
        loss.backward()
        return xg.grad, [p.grad for p in plain.parameters()], len(calls)

    g_ref, p_ref, calls_ref = grads(net, net)
    twin = copy.deepcopy(net)
    g, p, calls = grads(accelerate(twin, Acceleration(checkpoint_chain=True)), twin)
    torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-9)
    for a, b in zip(p, p_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    assert calls_ref == steps and calls == 2 * steps  # activations were recomputed in the backward pass


def test_checkpoint_skipped_without_gradients():
    net = tiny_unet().requires_grad_(False)
    fast = accelerate(net, Acceleration(checkpoint_chain=True))
    calls = []
    net.input_conv.register_forward_hook(lambda *_: calls.append(1))
    x, t = _inputs()
    with torch.no_grad():
        fast(x, t)
    fast(x, t)  # grad mode on, but nothing requires grad
    assert list(fast._calls) == [("forward", False)] and len(calls) == 2


def test_compile_traces_and_matches():
    GRAPHS.clear()
    net = tiny_unet()
    x, t = _inputs()
    options = Acceleration(precision="bf16", channels_last=True, checkpoint_chain=True, compile=True,
                           compile_backend="cflight_recording")
    fast = accelerate(copy.deepcopy(net), options)
    eager = accelerate(copy.deepcopy(net), Acceleration(precision="bf16", channels_last=True,
                                                        checkpoint_chain=True))
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, ref = fast(xa, t), eager(xb, t)
    out.square().sum().backward()
    ref.square().sum().backward()
    assert GRAPHS, "torch.compile never traced the network"
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-3, atol=1e-3)
    torch._dynamo.reset()


def test_copy_uses_its_own_network():
    fast = accelerate(LinearDecoder(), Acceleration(precision="bf16"))
    z = torch.randn(2, 4)
    before = fast.decode(z)
    twin = copy.deepcopy(fast)
    with torch.no_grad():
        twin.net.dec.bias.add_(10.0)
    torch.testing.assert_close(fast.decode(z), before)
    assert (twin.decode(z) - before).abs().max() > 0.1


def test_rewrap_replaces_options():
    dec = LinearDecoder()
    once = accelerate(dec, Acceleration(precision="bf16"))
    twice = accelerate(once, Acceleration(channels_last=True))
    assert isinstance(twice, AcceleratedNet) and twice.net is dec and twice.options.precision == "32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unsupported_device_is_one_clear_error():
    with pytest.raises(ValueError, match="precision '16' cannot run on device 'cuda'"):
        Acceleration(precision="16").check_device("cuda")
    with pytest.raises(ValueError, match="cannot run on device 'meta'"):
        Acceleration(precision="bf16").check_device("meta")
    Acceleration(precision="bf16").check_device("cpu")


def test_unsupported_cpu_autocast_fails_before_the_network_runs(monkeypatch):
    monkeypatch.setattr(acc.torch, "is_autocast_enabled", lambda *_: False)  # as a torch without it
    dec = LinearDecoder()
    calls = []
    dec.dec.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match="precision 'bf16' cannot run on device 'cpu'"):
        accelerate(dec, Acceleration(precision="bf16")).decode(torch.randn(2, 4))
    assert not calls


def test_inductor_without_compiler_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(acc.shutil, "which", lambda _: None)
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler"):
        Acceleration(compile=True).check_device("cpu")
    Acceleration(compile=True, compile_backend="eager").check_device("cpu")


class _ViewDecoder(torch.nn.Module):
    """Conv(2→3) on 2×4×4 latent maps, flattened with ``.view``: fine in the default layout, not in
    channels_last."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, z):
        h = self.conv(z)
        return h.view(h.shape[0], -1)


def test_to_channels_last_keeps_values_and_the_weights_digest():
    from cflight.lit.fingerprint import weights_digest

    net = tiny_unet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    digest = weights_digest(net)
    assert acc.to_channels_last(net) is net  # in place
    assert net.input_conv.weight.is_contiguous(memory_format=torch.channels_last)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert weights_digest(net) == digest
    dec = acc.to_channels_last(_ViewDecoder())
    assert not dec.conv.weight.is_contiguous()  # 2 input channels: the layouts differ


def test_channels_last_errors_names_the_fix_and_passes_other_errors():
    z = torch.randn(2, 2, 4, 4)
    dec = acc.to_channels_last(_ViewDecoder())
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        dec(z)  # what torch says, without the context
    with pytest.raises(acc.BadInputError) as err:
        with acc.channels_last_errors("the explained model"):
            dec(z)
    assert "\n" not in str(err.value) and "channels_last: false" in str(err.value)
    with pytest.raises(RuntimeError, match="view size") as raw:  # disabled: torch's own error, unchanged
        with acc.channels_last_errors("the explained model", enabled=False):
            dec(z)
    assert not isinstance(raw.value, acc.BadInputError)
    with pytest.raises(RuntimeError, match="^other$"):
        with acc.channels_last_errors("the explained model"):
            raise RuntimeError("other")
    assert _ViewDecoder()(z).shape == (2, 48)  # the default layout runs it


def test_accelerated_channels_last_view_error_is_one_line():
    fast = AcceleratedNet(_ViewDecoder(), Acceleration(channels_last=True))
    with pytest.raises(acc.BadInputError, match="^_ViewDecoder \\(acceleration\\) calls .view"):
        fast(torch.randn(2, 2, 4, 4))
