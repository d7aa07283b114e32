"""DCGAN networks and projection into the latent (spec §1.4)."""
import pytest
import torch

from cflight.methods import LatentAttack
from cflight.models.generative.gan import DCGANDiscriminator, DCGANGenerator, GANLatentModel
from cflight.models.generative.projection import FeatureDistance, GANManifold
from cflight.types import ClassTarget
from tests.helpers import LinearClassifier


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3), (64, 3)])
def test_shapes_and_range(size, channels):
    g = DCGANGenerator(latent_dim=8, out_channels=channels, image_size=size, width=4).eval()
    x = g(torch.randn(2, 8))
    assert x.shape == (2, channels, size, size) and x.min() >= 0 and x.max() <= 1
    assert DCGANDiscriminator(channels, size, width=4)(x).shape == (2, 1)


def test_unsupported_size():
    with pytest.raises(ValueError, match="28×28, 32×32 and 64×64"):
        DCGANGenerator(image_size=48)


class TinyConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 28 * 28, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _gan():
    torch.manual_seed(0)
    return GANLatentModel(latent_dim=8, channels=1, image_size=28, width=4, encoder=True).eval()


def test_projection_lowers_reconstruction_error():
    gan = _gan()
    x = gan.decode(torch.randn(3, 8)).detach()  # images on the manifold: projection can find them
    index = torch.arange(3)
    start = GANManifold(gan, TinyConvNet(), steps=0, n_candidates=4)
    proj = GANManifold(gan, TinyConvNet(), steps=60, n_candidates=4)
    err0 = (start.decode(start.encode(x, index)) - x).pow(2).flatten(1).mean(1)
    err1 = (proj.decode(proj.encode(x, index)) - x).pow(2).flatten(1).mean(1)
    assert (err1 <= err0 + 1e-7).all() and (err1 < err0).any()


def test_candidates_scored_separately_and_deterministic():
    gan = _gan()
    x = gan.decode(torch.randn(2, 8)).detach()
    m = GANManifold(gan, None, steps=0, n_candidates=8, use_encoder=False, seed=1)
    a, b = m.encode(x, torch.tensor([5, 6])), m.encode(x[1:], torch.tensor([6]))
    torch.testing.assert_close(a[1:], b)  # per-sample from (seed, index), whatever the batch


def test_feature_distance_zero_on_identical_and_needs_convs():
    fd = FeatureDistance(TinyConvNet())
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(fd(x, fd.features(x)), torch.zeros(2))
    with pytest.raises(ValueError, match="no Conv2d"):
        FeatureDistance(torch.nn.Linear(3, 3))


def test_latent_attack_runs_unchanged_over_gan():
    gan = _gan()
    manifold = GANManifold(gan, TinyConvNet(), steps=5, n_candidates=2)
    clf = LinearClassifier(num_classes=3, size=28)
    x = gan.decode(torch.randn(4, 8)).detach()
    logits = clf(x)
    target = ClassTarget(logits.topk(2, 1).indices[:, 1], 0.5)
    out = LatentAttack(manifold, lr=0.1, max_steps=200)(x, target, clf, index=torch.arange(4))
    torch.testing.assert_close(out.x_cf, gan.decode(out.latent), atol=1e-6, rtol=0)
    assert out.success.float().mean() >= 0.5
