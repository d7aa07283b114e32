"""The top-level Python API: re-exported names, a light ``import cflight``, and the three-line use with a
user's own classifier and generator (tiny modules defined here: no cflight checkpoint, no Lightning)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import cflight


class TinyClassifier(nn.Module):
    """A user's classifier: images in [0, 1] → 3 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyEncoder(nn.Module):
    """A user's VAE encoder: ``(mu, logvar)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return h[:, :4], h[:, 4:] - 1.0


def tiny_decoder() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))


def test_all_names_resolve() -> None:
    for name in cflight.__all__:
        assert getattr(cflight, name) is not None, name
    for name in ("LatentAttack", "DVCE", "DiME", "SparseAFW", "PGD", "APGD", "ACE", "ACRE", "DiffAERE", "ClassTarget",
                 "RegressionTarget", "CounterfactualOutput", "load_net", "load_guided_diffusion",
                 "ExplainModule", "CounterfactualWriter", "SeveralValues", "Validity", "LatentGenerator", "export_checkpoint"):
        assert name in cflight.__all__, name
    from cflight.lit import ExplainModule
    from cflight.methods import LatentAttack
    from cflight.models.registry import load_net

    assert cflight.LatentAttack is LatentAttack and cflight.ExplainModule is ExplainModule
    assert cflight.load_net is load_net
    assert cflight.lit.VAEModule is not None  # submodules are attributes too
    with pytest.raises(AttributeError):
        cflight.NoSuchThing  # noqa: B018


def test_star_import_and_dir() -> None:
    namespace: dict = {}
    exec("from cflight import *", namespace)
    assert set(cflight.__all__) <= set(namespace)
    assert set(cflight.__all__) <= set(dir(cflight))


def test_import_is_light() -> None:
    """``import cflight`` imports none of the heavy libraries (they come with the first name used)."""
    code = ("import sys, cflight; heavy = [m for m in ('torch', 'lightning', 'timm', 'wandb', "
            "'cflight.methods') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_three_lines_with_own_modules() -> None:
    """The README's three lines: own encoder/decoder wrapped by LatentGenerator, own classifier."""
    torch.manual_seed(0)
    classifier, encoder, decoder = TinyClassifier(), TinyEncoder(), tiny_decoder()
    x = torch.rand(4, 1, 8, 8)
    classes = torch.tensor([0, 1, 2, 0])

    method = cflight.LatentAttack(cflight.LatentGenerator(decode=decoder, encode=encoder), lr=0.1,
                                  max_steps=30)
    out = method(x, cflight.ClassTarget(classes, 0.5), classifier)

    assert isinstance(out, cflight.CounterfactualOutput)
    assert out.x_cf.shape == x.shape and out.pred_cf.shape == (4, 3) and out.latent.shape == (4, 4)
    assert bool(((out.x_cf >= 0) & (out.x_cf <= 1)).all())
    p = out.pred_cf.softmax(1).gather(1, classes[:, None])[:, 0]
    assert torch.equal(out.success, p > 0.5)
    assert not any(p.requires_grad for p in decoder.parameters())  # the method froze the generator


def test_generator_from_bound_methods_and_checks() -> None:
    class VAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc, self.dec = TinyEncoder(), tiny_decoder()

        def encode(self, x):
            return self.enc(x)

        def decode(self, z):
            return self.dec(z)

    vae = VAE()
    gen = cflight.LatentGenerator(decode=vae.decode, encode=vae.encode, in_channels=1, image_size=8)
    assert {id(p) for p in gen.parameters()} == {id(p) for p in vae.parameters()}  # registered, once each
    assert len(gen.state_dict()) == len(vae.state_dict())
    method = cflight.PGD(eps=0.5, steps=2)  # pixel method: no generator
    out = method(torch.rand(2, 1, 8, 8), cflight.ClassTarget([1, 2]), TinyClassifier())
    assert out.x_cf.shape == (2, 1, 8, 8)
    attack = cflight.LatentAttack(gen, max_steps=1)
    with pytest.raises(cflight.BadInputError, match="8, 8"):
        attack(torch.rand(2, 1, 6, 6), cflight.ClassTarget([1, 2]),
               nn.Sequential(nn.Flatten(), nn.LazyLinear(3)))
    with pytest.raises(RuntimeError, match="no encoder"):
        cflight.LatentGenerator(decode=tiny_decoder()).encode(torch.rand(1, 1, 8, 8))
    with pytest.raises(TypeError, match="decode must be callable"):
        cflight.LatentGenerator(decode=3)


def test_regression_target_with_own_regressor() -> None:
    regressor = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    x = torch.rand(3, 1, 8, 8)
    target = cflight.RegressionTarget([0.0, 0.5, 1.0], 0.05)
    out = cflight.APGD(eps=2.0, norm="l2", steps=10)(x, target, regressor)
    assert out.pred_cf.shape == (3, 1) and out.success.shape == (3,)


@pytest.mark.parametrize("make", [
    lambda: cflight.LatentAttack(cflight.LatentGenerator(decode=tiny_decoder(), encode=TinyEncoder()), lr=0.1,
                                 max_steps=5),  # reparameterised start drawn from (seed, index)
    lambda: cflight.PGD(eps=0.5, steps=3, random_start=True),  # random start drawn from (seed, index)
], ids=["LatentAttack", "PGD"])
def test_same_index_same_result_in_other_batches(make) -> None:
    """With dataset indices passed as ``index``, an image's counterfactual does not depend on which images
    share its batch or where it sits; with the default (positions) it does."""
    torch.manual_seed(0)
    method, model = make(), TinyClassifier()
    x = torch.rand(6, 1, 8, 8)
    target = cflight.ClassTarget(torch.tensor([0, 1, 2, 0, 1, 2]), 0.9)
    idx = torch.arange(100, 106)
    whole = method(x, target, model, index=idx)

    rows = torch.tensor([4, 1])  # another composition and order
    part = method(x[rows], target.select(rows), model, index=idx[rows])
    torch.testing.assert_close(part.x_cf, whole.x_cf[rows], rtol=0, atol=1e-6)
    assert torch.equal(part.steps, whole.steps[rows])

    # the default index numbers images by position: the same image gets other random draws
    default = method(x[rows], target.select(rows), model)
    assert not torch.allclose(default.x_cf, whole.x_cf[rows], atol=1e-6)


def test_decoder_only_generator_through_gan_projection() -> None:
    """A decoder without an encoder (a GAN) becomes a latent-method generator through GANManifold."""
    gen = cflight.LatentGenerator(decode=tiny_decoder(), latent_dim=4, in_channels=1, image_size=8)
    manifold = cflight.GANManifold(gen, steps=2, n_candidates=2)
    attack = cflight.LatentAttack(manifold, lr=0.1, max_steps=3)
    out = attack(torch.rand(2, 1, 8, 8), cflight.ClassTarget([1, 2]), TinyClassifier())
    assert out.latent.shape == (2, 4)
