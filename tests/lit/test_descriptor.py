"""DescriptorModule on shapes: image and latent descriptor models train and report per-descriptor metrics."""
import pytest
import torch
from lightning.pytorch import Trainer

from cflight.data import ShapesDataModule
from cflight.lit.descriptor import DescriptorModule
from cflight.models.generative import ConvVAE
from cflight.models.registry import load_net

NAMES = ["shape_circle", "shape_square", "shape_triangle", "colour_red", "colour_green", "colour_blue",
         "size", "pos_x", "pos_y", "rotation", "background", "marker"]
BINARY = [True] * 6 + [False] * 5 + [True]


def _fit(module, tmp_path, steps=15):
    dm = ShapesDataModule(n_train=256, n_val=64, n_test=64, batch_size=32, marker_class=1)
    trainer = Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), limit_val_batches=2)
    trainer.fit(module, dm)
    return trainer


def test_image_descriptors_train_and_roundtrip(tmp_path):
    module = DescriptorModule("image_descriptors", {"names": NAMES, "binary": BINARY, "in_channels": 3,
                                                    "image_size": 32, "width": 8})
    trainer = _fit(module, tmp_path)
    logged = trainer.callback_metrics
    assert "val/acc/shape_circle" in logged and "val/r2/size" in logged
    trainer.save_checkpoint(tmp_path / "d.ckpt")
    net = load_net(str(tmp_path / "d.ckpt"), "descriptor")
    x = torch.rand(2, 3, 32, 32)
    module.net.eval()
    torch.testing.assert_close(net(x), module.net(x))
    assert ((net(x)[:, :6] >= 0) & (net(x)[:, :6] <= 1)).all()


def test_latent_descriptors_use_frozen_encoder(tmp_path):
    vae = ConvVAE(latent_dim=8, in_channels=3, image_size=32)
    before = [p.clone() for p in vae.parameters()]
    module = DescriptorModule("latent_descriptors", {"latent_dim": 8, "names": NAMES, "binary": BINARY},
                              space="latent", encoder=vae)
    _fit(module, tmp_path, steps=5)
    assert all(torch.equal(a, b) for a, b in zip(before, vae.parameters()))


def test_errors():
    with pytest.raises(ValueError, match="space"):
        DescriptorModule(space="pixels")
    with pytest.raises(ValueError, match="encoder"):
        DescriptorModule("latent_descriptors", {"latent_dim": 8, "names": ["a"]}, space="latent")


def test_descriptor_count_mismatch_is_clear():
    module = DescriptorModule("image_descriptors", {"names": ["a", "b"], "in_channels": 3, "image_size": 32})
    with pytest.raises(ValueError, match="the data has 3 descriptors, the model predicts 2"):
        module.loss(torch.zeros(4, 2), torch.zeros(4, 3))


def _heads(**kwargs):
    spec = {"latent_dim": 4, "names": ["a", "size"], "binary": [True, False]}
    vae = ConvVAE(latent_dim=4, in_channels=3, image_size=32)
    return DescriptorModule("latent_descriptors", spec, space="latent", encoder=vae, **kwargs)


def test_continuous_std_standardises_the_mse():
    module = _heads(continuous_std={"size": 0.1}, continuous_weight=0.5)
    logits = torch.tensor([[0.0, 0.3], [0.0, 0.1]])
    y = torch.tensor([[1.0, 0.2], [0.0, 0.2]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :1], y[:, :1])
    # errors ±0.1 in units of std 0.1 → a standardised MSE of 1, weighted 0.5
    torch.testing.assert_close(module.loss(logits, y), bce + 0.5)
    torch.testing.assert_close(_heads().loss(logits, y), bce + 0.01)  # defaults: the plain MSE


@pytest.mark.parametrize("std, message", [
    ({"a": 0.1}, "not continuous"), ({"nope": 0.1}, "not continuous"), ({"size": 0.0}, "must be > 0")])
def test_bad_continuous_std(std, message):
    with pytest.raises(ValueError, match=message):
        _heads(continuous_std=std)
