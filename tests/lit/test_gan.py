"""GANModule: a training smoke run, EMA, R1 and checkpoint round trip."""
import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from cflight.lit.gan import GANModule, ema_update, r1_penalty
from cflight.models.registry import load_net
from tests.helpers import Squares


def test_training_smoke_and_checkpoint_roundtrip(tmp_path):
    module = GANModule(net_kwargs={"latent_dim": 8, "width": 4}, r1_gamma=1.0, r1_every=2, ema_decay=0.9)
    before = [p.clone() for p in module.net.generator.parameters()]
    trainer = Trainer(accelerator="cpu", max_steps=6, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), limit_val_batches=1)
    loader = DataLoader(Squares(32, size=28, side=6, low=4, high=20), batch_size=8)
    trainer.fit(module, loader, loader)
    after = list(module.net.generator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "EMA generator never moved"
    path = tmp_path / "gan.ckpt"
    trainer.save_checkpoint(path)
    net = load_net(str(path), "generator")
    z = torch.randn(3, 8)
    module.net.eval()
    torch.testing.assert_close(net.decode(z), module.net.decode(z))
    assert net.encode(torch.rand(2, 1, 28, 28)).shape == (2, 8)


def test_ema_update_and_r1():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    w = a.weight.clone()
    ema_update(a, b, decay=0.75)
    torch.testing.assert_close(a.weight, 0.75 * w + 0.25 * b.weight)
    x = torch.rand(4, 3, requires_grad=True)
    d = (x * torch.tensor([1.0, 2.0, 0.0])).sum(1)
    torch.testing.assert_close(r1_penalty(d, x), torch.tensor(5.0))


def test_ema_warmup_follows_the_network_early_and_caps_at_the_decay() -> None:
    from cflight.lit.gan import warmup_decay

    assert warmup_decay(0.999, 0) == pytest.approx(0.1)
    assert warmup_decay(0.999, 90) == pytest.approx(0.91)
    assert warmup_decay(0.999, 10**6) == 0.999
    assert all(warmup_decay(0.999, n) <= warmup_decay(0.999, n + 1) for n in range(200))


def test_discriminator_width_is_separate_from_the_generator_and_checked():
    module = GANModule(net_kwargs={"latent_dim": 8, "width": 4}, discriminator_width=12)
    assert module.discriminator.features[0].out_channels == 12
    assert module.generator.to_image[0].in_channels == 4  # the generator keeps its own width
    assert GANModule(net_kwargs={"latent_dim": 8, "width": 4}).discriminator.features[0].out_channels == 4
    with pytest.raises(ValueError, match="discriminator_width"):
        GANModule(net_kwargs={"latent_dim": 8, "width": 4}, discriminator_width=0)
