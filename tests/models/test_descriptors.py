"""Descriptor heads: output kinds, registry round trip, errors."""
import pytest
import torch

from cflight.models.descriptors import ImageDescriptorCNN, LatentDescriptorHeads
from cflight.models.registry import export_net, load_net


def test_latent_heads_probabilities_and_values():
    heads = LatentDescriptorHeads(6, ["thick", "area"], binary=[True, False])
    with torch.no_grad():
        heads.linear.weight.fill_(2.0)
    out = heads(torch.ones(3, 6))
    assert out.shape == (3, 2)
    assert ((out[:, 0] > 0) & (out[:, 0] < 1)).all()
    torch.testing.assert_close(out[:, 1], heads.logits(torch.ones(3, 6))[:, 1])


def test_image_descriptor_cnn_shapes_and_roundtrip(tmp_path):
    net = ImageDescriptorCNN(["a", "b", "c"], in_channels=3, image_size=32, width=4).eval()
    x = torch.rand(2, 3, 32, 32)
    path = str(tmp_path / "d.pt")
    export_net("image_descriptors", {"names": ["a", "b", "c"], "in_channels": 3, "image_size": 32, "width": 4},
               net.state_dict(), path)
    torch.testing.assert_close(load_net(path, "descriptor")(x), net(x))


def test_bad_descriptor_specs():
    with pytest.raises(ValueError, match="empty"):
        LatentDescriptorHeads(4, [])
    with pytest.raises(ValueError, match="binary has 1 entries"):
        LatentDescriptorHeads(4, ["a", "b"], binary=[True])


@pytest.mark.parametrize("pool, n_features", [("avg", 8), ("max", 8), (None, 8 * 8 * 8)])
def test_image_descriptor_cnn_global_pool(pool, n_features):
    net = ImageDescriptorCNN(["a", "b"], in_channels=3, image_size=32, width=4, global_pool=pool).eval()
    assert net.head.in_features == n_features and net(torch.rand(2, 3, 32, 32)).shape == (2, 2)
    # the layers with weights keep their names for every pool (older checkpoints still load)
    default = ImageDescriptorCNN(["a", "b"], in_channels=3, image_size=32, width=4)
    def conv_keys(m):
        return {k for k in m.state_dict() if "head" not in k}

    assert conv_keys(net) == conv_keys(default)


def test_image_descriptor_cnn_bad_pool():
    with pytest.raises(ValueError, match="global_pool"):
        ImageDescriptorCNN(["a"], global_pool="mean")
    with pytest.raises(ValueError, match="divisible by 4"):
        ImageDescriptorCNN(["a"], image_size=30, global_pool=None)
