"""Generic image descriptors on constructed images whose values are known by hand."""
import pytest
import torch

from cflight.models.descriptors import GenericImageDescriptors
from cflight.models.registry import build_net, net_kind


def values(x, **kwargs):
    d = GenericImageDescriptors(channels=x.shape[1], **kwargs)
    return dict(zip(d.names, d(x)[0].tolist()))


def test_flat_image():
    v = values(torch.full((1, 1, 5, 5), 0.25))
    assert v["mean_intensity"] == pytest.approx(0.25) and v["contrast"] == pytest.approx(0.0, abs=1e-7)
    assert v["gradient"] == pytest.approx(0.0) and v["area"] == 0.0
    assert v["centre_x"] == pytest.approx(0.5) and v["centre_y"] == pytest.approx(0.5)
    # uniform mass on a 5x5 grid of coordinates 0, .25, .5, .75, 1: E[dx²] = E[dy²] = 0.125
    assert v["spread"] == pytest.approx(0.5)


def test_half_bright_step_edge():
    x = torch.zeros(1, 1, 4, 4)
    x[..., 2:] = 1.0  # right half white: one vertical edge
    v = values(x)
    assert v["mean_intensity"] == pytest.approx(0.5) and v["contrast"] == pytest.approx(0.5)
    assert v["gradient"] == pytest.approx(1 / 3)  # one of three column differences is 1, rows are flat
    assert v["area"] == pytest.approx(0.5)
    assert v["centre_x"] == pytest.approx((2 / 3 + 1) / 2) and v["centre_y"] == pytest.approx(0.5)


def test_single_pixel_position_and_spread():
    x = torch.zeros(1, 1, 3, 5)
    x[0, 0, 0, 4] = 1.0  # top-right corner
    v = values(x)
    assert (v["centre_x"], v["centre_y"]) == pytest.approx((1.0, 0.0))
    assert v["spread"] == pytest.approx(0.0, abs=1e-6) and v["area"] == pytest.approx(1 / 15)
    assert v["gradient"] == pytest.approx(1 / 12 + 1 / 10)  # 1 of 12 horizontal, 1 of 10 vertical pairs


def test_black_image_and_threshold():
    v = values(torch.zeros(2, 1, 4, 4))
    assert (v["centre_x"], v["centre_y"], v["spread"], v["mean_intensity"]) == (0.5, 0.5, 0.0, 0.0)
    x = torch.full((1, 1, 2, 2), 0.4)
    assert values(x)["area"] == 0.0 and values(x, threshold=0.3)["area"] == 1.0


def test_rgb_channel_means_and_batch():
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0] = 0.9  # red image
    x[1, 2] = 0.3  # blue image
    d = GenericImageDescriptors(channels=3)
    assert d.names[-3:] == ["mean_red", "mean_green", "mean_blue"] and len(d.names) == 10
    out = d(x)
    assert out.shape == (2, 10)
    assert out[0, -3:].tolist() == pytest.approx([0.9, 0.0, 0.0])
    assert out[1, -3:].tolist() == pytest.approx([0, 0, 0.3])
    assert out[0, 0] == pytest.approx(0.3)  # grey = mean over channels


def test_differentiable_and_registered():
    x = torch.rand(2, 1, 6, 6, requires_grad=True)
    GenericImageDescriptors()(x)[:, :6].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert net_kind("generic_image") == "descriptor"
    assert build_net("generic_image").names[0] == "mean_intensity"


def test_bad_input():
    with pytest.raises(ValueError, match="channels must be 1"):
        GenericImageDescriptors(channels=2)
    with pytest.raises(ValueError, match=r"expects \[B, 1, H, W\].*set channels"):
        GenericImageDescriptors()(torch.zeros(1, 3, 4, 4))
