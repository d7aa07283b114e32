"""UNet: shapes, zero-initialised output, time conditioning, attention placement, registry, config errors."""
import math

import pytest
import torch

from cflight.models.generative.unet import Attention, UNet, timestep_embedding
from cflight.models.registry import build_net, net_kind


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_output(net: UNet) -> UNet:
    for p in net.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return net


@pytest.mark.parametrize("kwargs, size", [
    ({"in_channels": 1, "image_size": 28, "model_channels": 8, "channel_mult": (1, 2, 2), "num_res_blocks": 1,
      "attention_resolutions": (7,), "head_channels": 8}, 28),  # odd sizes: 28 → 14 → 7
    ({"in_channels": 3, "image_size": 12, "model_channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1,
      "attention_resolutions": (), "learn_sigma": False}, 12),
    ({"in_channels": 3, "image_size": 10, "model_channels": 8, "channel_mult": (1, 1, 2), "num_res_blocks": 1,
      "attention_resolutions": (3,), "head_channels": 4}, 10),  # 10 → 5 → 3 and back
])
def test_shapes_and_zero_initialised_output(kwargs, size):
    net = UNet(**kwargs)
    x = torch.randn(2, kwargs["in_channels"], size, size)
    out = net(x, torch.tensor([3.0, 700.0]))
    assert out.shape == (2, net.out_channels, size, size)
    assert net.out_channels == kwargs["in_channels"] * (2 if kwargs.get("learn_sigma", True) else 1)
    assert out.abs().max() == 0  # untrained: ε̂ = 0
    _randomise_output(net)
    assert net(x, torch.tensor(5.0)).abs().max() > 0  # scalar t broadcasts


def test_time_conditioning_and_input_gradient():
    net = _randomise_output(UNet(1, 8, 8, (1, 2), 1, (4,), 8)).eval()
    for block in net.modules():  # zero-initialised residual convs would hide the time embedding
        if hasattr(block, "out_layers"):
            torch.nn.init.normal_(block.out_layers[-1].weight, std=0.1)
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    a, b = net(x, torch.tensor([10.0, 10.0])), net(x, torch.tensor([10.0, 900.0]))
    torch.testing.assert_close(a[0], b[0])
    assert (a[1] - b[1]).abs().max() > 1e-4
    (g,) = torch.autograd.grad(a.sum(), x)
    assert g.abs().max() > 0 and torch.isfinite(g).all()


def test_timestep_embedding_values():
    emb = timestep_embedding(torch.tensor([0.0, 2.0]), 6)
    freqs = [10000 ** (-k / 3) for k in range(3)]
    expected = [math.cos(2 * f) for f in freqs] + [math.sin(2 * f) for f in freqs]
    torch.testing.assert_close(emb[1], torch.tensor(expected))
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    assert timestep_embedding(torch.tensor([1.0]), 7).shape == (1, 7)


def test_mnist_config_size_and_attention_placement():
    net = UNet()  # the MNIST default: 28², 32 channels, mults (1, 2, 2), attention at 7²
    n = sum(p.numel() for p in net.parameters())
    assert 1_000_000 <= n <= 2_000_000
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
             for m in net.modules() if isinstance(m, Attention)]
    net(torch.rand(1, 1, 28, 28), torch.tensor([1.0]))
    for h in hooks:
        h.remove()
    assert sizes and set(sizes) == {7}


def test_registered_as_denoiser_and_config_errors():
    assert net_kind("unet") == "denoiser"
    net = build_net("unet", in_channels=1, image_size=8, model_channels=8, channel_mult=[1], num_res_blocks=1,
                    attention_resolutions=[], learn_sigma=False)
    assert isinstance(net, UNet) and net.image_size == (8, 8) and net.in_channels == 1
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNet(image_size=28, attention_resolutions=(8,))
    with pytest.raises(ValueError, match="channel_mult"):
        UNet(channel_mult=())
    with pytest.raises(ValueError, match="head_channels"):
        UNet(model_channels=12, head_channels=16)
    with pytest.raises(ValueError, match="dropout"):
        UNet(dropout=1.5)
