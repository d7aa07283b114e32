"""The reference conv VAE: shapes, [0, 1] outputs, deterministic noise, registry round trip."""
import pytest
import torch

from cflight.models.generative import ConvVAE
from cflight.models.registry import build_net, export_net, load_net


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_shapes_and_range(size, channels):
    vae = ConvVAE(latent_dim=8, in_channels=channels, image_size=size)
    assert (vae.latent_dim, vae.in_channels, vae.image_size) == (8, channels, (size, size))
    x = torch.rand(3, channels, size, size)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 8)
    out = vae.decode(torch.randn(3, 8) * 10)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    x_rec, mu2, _ = vae(x)
    assert x_rec.shape == x.shape
    torch.testing.assert_close(mu2, mu)
    assert vae.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, channels, size, size)


def test_reference_layout():
    vae = ConvVAE()
    assert vae.latent_dim == 64 and vae.fc_mu.in_features == 1024
    last = vae.decoder[-2]
    assert (last.kernel_size, last.stride, last.padding) == ((2, 2), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="28×28 and 32×32"):
        ConvVAE(image_size=64)


def test_noise_controls_the_sample():
    vae = ConvVAE(latent_dim=4)
    x = torch.rand(2, 1, 28, 28)
    noise = torch.randn(2, 4)
    torch.testing.assert_close(vae(x, noise)[0], vae(x, noise)[0])
    mu, _ = vae.encode(x)
    torch.testing.assert_close(vae(x, torch.zeros(2, 4))[0], vae.decode(mu))
    assert not torch.allclose(vae(x, noise)[0], vae(x, -noise)[0])
    with pytest.raises(ValueError, match="noise must have shape"):
        vae(x, torch.zeros(2, 5))


def test_registry_round_trip(tmp_path):
    kwargs = {"latent_dim": 6}
    vae = build_net("conv_vae", **kwargs).eval()
    path = str(tmp_path / "v.pt")
    export_net("conv_vae", kwargs, vae.state_dict(), path)
    loaded = load_net(path, expected_kind="generator")
    z = torch.randn(2, 6)
    torch.testing.assert_close(loaded.decode(z), vae.decode(z))
    with pytest.raises(ValueError, match="expected a classifier"):
        load_net(path, expected_kind="classifier")
