"""Registered image regressors: [B, 1] out, [0, 1] in (normalised inside forward), the spec's ResNet-18."""
import pytest
import torch
from torch import nn

from cflight.models.registry import build_net, list_nets, net_kind

NETS = [("regressor_cnn", {"widths": [4, 8]}), ("squares_resnet18", {}),
        ("regressor_timm", {"model_name": "resnet10t"})]


def test_registered_as_regressors():
    assert {"regressor_cnn", "squares_resnet18", "regressor_timm"} <= set(list_nets("regressor"))
    assert all(net_kind(name) == "regressor" for name, _ in NETS)


@pytest.mark.parametrize("name,kwargs", NETS)
def test_output_shape_and_input_gradient(name, kwargs):
    torch.manual_seed(0)
    net = build_net(name, **kwargs).eval()
    x = torch.rand(3, 3, 64, 64, requires_grad=True)
    y = net(x)
    assert y.shape == (3, 1) and torch.isfinite(y).all()
    y.sum().backward()  # the counterfactual methods differentiate the regressor w.r.t. its input
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name,kwargs", NETS)
def test_normalisation_is_inside_forward(name, kwargs):
    """A [0, 1] image through the default network = (x − 0.5)/0.5 through the same weights unnormalised."""
    torch.manual_seed(0)
    net = build_net(name, **kwargs, mean=0.5, std=0.5).eval()
    plain = build_net(name, **kwargs, mean=0.0, std=1.0).eval()
    plain.load_state_dict(net.state_dict())  # the statistics are not in the state dict
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain((x - 0.5) / 0.5))
        assert not torch.allclose(net(x), plain(x))


def test_squares_resnet18_is_the_spec_variant():
    """Spec §2.5: conv1 = Conv(3→64, k4, s1, p2), fc → Linear(512→1), from scratch (no pretrained weights)."""
    net = build_net("squares_resnet18")
    conv1 = net.backbone.conv1
    assert (conv1.in_channels, conv1.out_channels) == (3, 64)
    assert (conv1.kernel_size, conv1.stride, conv1.padding) == ((4, 4), (1, 1), (2, 2))
    assert isinstance(net.head, nn.Linear) and (net.head.in_features, net.head.out_features) == (512, 1)
    # no sigmoid: the head's output is the prediction, so the output is not bounded to [0, 1]
    with torch.no_grad():
        net.head.bias.fill_(5.0)
        net.head.weight.zero_()
    assert torch.allclose(net(torch.rand(1, 3, 64, 64)), torch.tensor([[5.0]]))


def test_cnn_other_sizes_and_bad_sizes():
    net = build_net("regressor_cnn", in_channels=1, image_size=28, widths=[4, 8])
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 1)
    with pytest.raises(ValueError, match="divisible by 8"):
        build_net("regressor_cnn", image_size=28, widths=[4, 8, 16])
    with pytest.raises(ValueError, match="at least one conv width"):
        build_net("regressor_cnn", widths=[])
