"""Acceleration options through the methods: off is unchanged, fp32 latents and outputs, same results."""
import copy

import pytest
import torch

from cflight.methods import DVCE, InterFaceGANEdit, LatentAttack
from cflight.models.acceleration import Acceleration, AcceleratedNet
from cflight.models.generative.gan import GANLatentModel
from cflight.models.generative.projection import GANManifold
from cflight.models.generative.unet import UNet
from cflight.types import ClassTarget
from tests.helpers import LinearClassifier, LinearDecoder, images

pytestmark = pytest.mark.usefixtures("one_thread")

OFF = Acceleration(compile_backend="eager")  # every switch off: must be today's code path
EXACT = [Acceleration(channels_last=True), Acceleration(checkpoint_chain=True)]
LOW = [Acceleration(precision="bf16"), Acceleration(precision="16"),
       Acceleration(precision="bf16", channels_last=True, checkpoint_chain=True)]


def tiny_unet() -> UNet:
    torch.manual_seed(0)
    net = UNet(1, 4, 8, (1, 2), 1, (2,), 8)
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.05)
    return net.eval()


def _latent_attack(acceleration):
    gen, clf, x = LinearDecoder(), LinearClassifier(num_classes=3), images(6)
    # an unreachable threshold: every sample takes all 8 steps, so runs compare step for step
    target = ClassTarget(torch.full((6,), 2), 0.999)
    method = LatentAttack(copy.deepcopy(gen), lr=0.05, max_steps=8, acceleration=acceleration)
    return method, method(x, target, clf)


def _dvce(acceleration):
    clf = LinearClassifier(num_classes=3, size=4)
    method = DVCE(tiny_unet(), num_timesteps=100, timestep_respacing="10", skip_timesteps=7,
                  classifier_lambda=1.0, acceleration=acceleration)
    x = images(4)
    return method, method(x, ClassTarget(torch.full((4,), 1), 0.5), clf)


@pytest.mark.parametrize("run", [_latent_attack, _dvce])
def test_off_is_unchanged(run):
    plain, ref = run(None)
    off, out = run(OFF)
    for method in (plain, off):
        nets = [m for m in method.modules() if isinstance(m, AcceleratedNet)]
        assert not nets  # no wrapper: the very same code path as without the option
    assert list(plain.state_dict()) == list(off.state_dict())
    for a, b in [(out.x_cf, ref.x_cf), (out.pred_cf, ref.pred_cf), (out.steps, ref.steps)]:
        assert torch.equal(a, b)


@pytest.mark.parametrize("run", [_latent_attack, _dvce])
@pytest.mark.parametrize("options", EXACT, ids=["channels_last", "checkpoint"])
def test_exact_options_same_results(run, options):
    _, ref = run(None)
    method, out = run(options)
    assert any(isinstance(m, AcceleratedNet) for m in method.modules())
    torch.testing.assert_close(out.x_cf, ref.x_cf)
    torch.testing.assert_close(out.pred_cf, ref.pred_cf)


@pytest.mark.parametrize("run", [_latent_attack, _dvce])
@pytest.mark.parametrize("options", LOW, ids=["bf16", "fp16", "bf16+cl+ckpt"])
def test_low_precision_keeps_fp32_and_stays_close(run, options):
    _, ref = run(None)
    method, out = run(options)
    assert out.x_cf.dtype == out.pred_cf.dtype == torch.float32
    if out.latent is not None:  # the optimisation variable and its start stay fp32
        assert out.latent.dtype == out.extras["latent0"].dtype == torch.float32
    assert not torch.equal(out.x_cf, ref.x_cf)  # the network really ran in low precision
    torch.testing.assert_close(out.x_cf, ref.x_cf, rtol=0, atol=0.02)
    assert (out.x_cf - images(out.x_cf.shape[0], seed=9)).abs().max() > 0.2  # garbage is not "close"


def test_low_precision_runs_inside_the_generator_only():
    seen = []
    gen = LinearDecoder()
    gen.dec.register_forward_hook(lambda _m, _i, o: seen.append(o.dtype))
    clf = LinearClassifier(num_classes=3)
    clf.fc.register_forward_hook(lambda _m, _i, o: seen.append(("clf", o.dtype)))
    method = LatentAttack(gen, max_steps=2, acceleration=Acceleration(precision="bf16"))
    method(images(3), ClassTarget(torch.full((3,), 2), 0.999), clf)
    assert torch.bfloat16 in seen and ("clf", torch.float32) in seen
    assert ("clf", torch.bfloat16) not in seen  # the explained model and the loss stay fp32


def test_interfacegan_generator_is_accelerated():
    gen = LinearDecoder()
    plain = InterFaceGANEdit(copy.deepcopy(gen), torch.nn.Linear(4, 3))
    fast = InterFaceGANEdit(copy.deepcopy(gen), plain.label_head, acceleration=Acceleration(precision="bf16"))
    assert isinstance(fast.generator, AcceleratedNet) and not isinstance(plain.generator, AcceleratedNet)
    target, clf, x = ClassTarget(torch.full((4,), 1), 0.6), LinearClassifier(num_classes=3), images(4)
    a, b = plain(x, target, clf), fast(x, target, clf)
    assert b.x_cf.dtype == torch.float32
    torch.testing.assert_close(b.x_cf, a.x_cf, rtol=0, atol=0.05)


def test_gan_projection_accelerates_the_gan_only():
    torch.manual_seed(0)
    gan = GANLatentModel(latent_dim=8, channels=1, image_size=28, width=4, encoder=True).eval()
    manifold = GANManifold(gan, None, steps=3, n_candidates=2)
    seen = []
    gan.generator.fc[0].register_forward_hook(lambda _m, _i, o: seen.append(o.dtype))
    clf = LinearClassifier(num_classes=3, size=28)
    x = gan.decode(torch.randn(2, 8)).detach()
    seen.clear()
    method = LatentAttack(manifold, max_steps=3, acceleration=Acceleration(precision="bf16"))
    out = method(x, ClassTarget(torch.full((2,), 1), 0.999), clf, index=torch.arange(2))
    assert method.generator is manifold and isinstance(manifold.gan, AcceleratedNet)
    assert manifold.gan.net is gan and set(seen) == {torch.bfloat16}
    assert out.latent.dtype == out.extras["latent0"].dtype == out.x_cf.dtype == torch.float32
    assert torch.isfinite(out.x_cf).all()
