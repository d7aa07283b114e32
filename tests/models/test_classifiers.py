"""Classifier networks: shapes, normalisation inside forward, registry round trips and errors."""
import pytest
import torch

from cflight.models.classifiers import MNISTCNN, SimpleCNN, TimmClassifier
from cflight.models.registry import build_net, export_net, list_nets, load_net


def test_registered_names():
    assert {"mnist_cnn", "simple_cnn"} <= set(list_nets("classifier"))
    assert "conv_vae" in list_nets("generator")


def test_mnist_cnn_is_the_reference_network():
    net = MNISTCNN()
    assert (net.in_channels, net.image_size, net.num_classes) == (1, (28, 28), 10)
    assert net.classifier[0].in_features == 3136 and net.classifier[0].out_features == 128
    assert sum(p.numel() for p in net.parameters()) == 421_642
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_mnist_cnn_generalises():
    net = MNISTCNN(in_channels=3, image_size=32, num_classes=1, width=8, mean=(0.5, 0.4, 0.3), std=0.2)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 1)
    with pytest.raises(ValueError, match="divisible by 4"):
        MNISTCNN(image_size=30)
    with pytest.raises(ValueError, match="2 values for 3 input channels"):
        MNISTCNN(in_channels=3, mean=(0.1, 0.2))


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3)])
@pytest.mark.parametrize("pool", ["avg", None])
def test_simple_cnn_sizes(size, channels, pool):
    net = SimpleCNN(channels, size, 4, widths=(4, 8), batch_norm=True, dropout=0.1, global_pool=pool,
                    hidden=16 if pool is None else None).eval()
    assert net(torch.rand(2, channels, size, size)).shape == (2, 4)
    assert (net.in_channels, net.image_size, net.num_classes) == (channels, (size, size), 4)


def test_simple_cnn_reference_celeba_layout():
    net = SimpleCNN(3, 64, 1, widths=(32, 64, 128), batch_norm=False, global_pool=None, hidden=512, dropout=0.3,
                    mean=0.0, std=1.0, init="reference")
    assert net.head[0].in_features == 128 * 8 * 8 and net.head[0].out_features == 512
    assert net.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 1)


@pytest.mark.parametrize("name,kwargs", [("mnist_cnn", {"width": 4}),
                                         ("simple_cnn", {"in_channels": 1, "image_size": 28, "widths": [4]})])
def test_normalisation_happens_inside_forward(name, kwargs):
    net = build_net(name, mean=0.25, std=0.5, **kwargs).eval()
    raw = build_net(name, mean=0.0, std=1.0, **kwargs).eval()
    raw.load_state_dict(net.state_dict())
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(net(x), raw((x - 0.25) / 0.5))
    assert "normalize.mean" not in net.state_dict()  # statistics come from the constructor arguments


def test_timm_wrapper_tiny_model():
    net = TimmClassifier("resnet10t", num_classes=3, in_channels=1, image_size=32).eval()
    assert (net.in_channels, net.image_size, net.num_classes) == (1, (32, 32), 3)
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    assert net.normalize.mean.numel() == 1  # ImageNet statistics averaged to one channel
    vit = build_net("timm:test_vit", num_classes=2, in_channels=3, image_size=32, mean=0.5, std=0.5).eval()
    assert vit(torch.rand(1, 3, 32, 32)).shape == (1, 2)
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(vit(x), vit.model((x - 0.5) / 0.5))


def test_timm_registry_round_trip(tmp_path):
    kwargs = {"num_classes": 2, "in_channels": 3, "image_size": 32}
    net = build_net("timm:resnet10t", **kwargs).eval()
    path = str(tmp_path / "t.pt")
    export_net("timm:resnet10t", kwargs, net.state_dict(), path)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(load_net(path, "classifier")(x), net(x))


def test_export_load_round_trip_and_errors(tmp_path):
    kwargs = {"width": 4, "hidden": 8}
    net = build_net("mnist_cnn", **kwargs).eval()
    path = str(tmp_path / "c.pt")
    export_net("mnist_cnn", kwargs, net.state_dict(), path, {"note": "test"})
    x = torch.rand(4, 1, 28, 28)
    loaded = load_net(path, expected_kind="classifier")
    assert not loaded.training
    torch.testing.assert_close(loaded(x), net(x))
    with pytest.raises(ValueError, match="holds a classifier .*expected a generator"):
        load_net(path, expected_kind="generator")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_net(str(tmp_path / "missing.pt"), expected_kind="classifier")
