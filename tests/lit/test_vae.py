"""VAEModule: the Sobel edge term, the loss composition, training, image logging, checkpoints."""
import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from cflight.lit import VAEModule, export_checkpoint
from cflight.lit.vae import kl_divergence, sobel_edges, vae_loss
from cflight.models.registry import load_net


def test_sobel_constant_image_is_zero_with_finite_gradient():
    x = torch.full((2, 3, 8, 8), 0.7, requires_grad=True)
    e = sobel_edges(x)
    assert e.shape == x.shape and e.abs().max() < 1e-6
    e.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_sobel_step_edge():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4:] = 1.0
    e = sobel_edges(x)[0, 0]
    assert (e[:, 3:5] > 0).all()  # the two columns beside the step
    assert torch.equal(e[:, :2], torch.zeros(8, 2)) and torch.equal(e[:, 6:], torch.zeros(8, 2))
    torch.testing.assert_close(e[:, 3], torch.full((8,), 4.0))  # unnormalised kernel: 1+2+1
    xt = x.transpose(2, 3)
    torch.testing.assert_close(sobel_edges(xt)[0, 0], e.T)


def test_loss_composition():
    g = torch.Generator().manual_seed(0)
    x, x_rec = torch.rand(4, 1, 8, 8, generator=g), torch.rand(4, 1, 8, 8, generator=g)
    mu, logvar = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    t = vae_loss(x, x_rec, mu, logvar)  # reference defaults: 1, 0.2, 4, 0
    mse, l1 = ((x - x_rec) ** 2).mean(), (x - x_rec).abs().mean()
    torch.testing.assert_close(t["loss"], mse + 0.2 * sobel_edges(x_rec).mean() + 4 * l1)
    assert t["kl"] > 0  # reported, but not part of the loss
    t2 = vae_loss(x, x_rec, mu, logvar, kl_weight=0.5)
    torch.testing.assert_close(t2["loss"], t["loss"] + 0.5 * t2["kl"])
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)) == 0


class Digits(Dataset):
    """Smooth random 28×28 blobs in [0, 1] as dict samples."""

    def __init__(self, n: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        low = torch.rand(n, 1, 7, 7, generator=g)
        self.x = torch.nn.functional.interpolate(low, size=28, mode="bilinear", align_corners=False)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": 0, "index": i}


def _loader(n=32, seed=0):
    return DataLoader(Digits(n, seed), batch_size=16)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    module = VAEModule(net_kwargs={"latent_dim": 8}, lr=3e-3)
    opt = module.configure_optimizers()
    x = next(iter(_loader()))["image"]
    noise = torch.randn(16, 8)
    losses = []
    for _ in range(25):
        loss = module._loss_terms(x, *module(x, noise))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


class ImageRecorder(CSVLogger):
    """A logger that supports ``log_image`` (like W&B) and records what it receives."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.images: dict[str, list] = {}

    def log_image(self, key, images, step=None, **kwargs):
        self.images.setdefault(key, []).extend(images)


def test_fit_logs_metrics_images_and_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    module = VAEModule(net_kwargs={"latent_dim": 8}, kl_weight=0.01, num_logged_images=4)
    logger = ImageRecorder(str(tmp_path / "logs"))
    ckpt_cb = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="val/recon_mse", filename="best")
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=logger, callbacks=[ckpt_cb],
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, _loader(), _loader(16, seed=1))
    assert {"val/recon_mse", "val/loss", "val/kl", "train/loss_epoch"} <= set(trainer.callback_metrics)
    recon, samples = logger.images["val/reconstructions"], logger.images["val/samples"]
    assert len(recon) == 2  # one per validation epoch, none for the sanity check
    assert recon[0].dtype == np.uint8 and recon[0].shape == (2 * 29 + 1, 4 * 29 + 1, 3)
    assert samples[0].shape == (28 + 2, 4 * 29 + 1, 3)
    (res,) = trainer.test(module, _loader(16, seed=2), verbose=False)
    assert res["test/recon_mse"] > 0

    best = ckpt_cb.best_model_path
    module.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    module.eval()
    z = torch.randn(3, 8)
    with torch.no_grad():
        expected = module.net.decode(z)
        torch.testing.assert_close(load_net(best, expected_kind="generator").decode(z), expected)
        out = str(tmp_path / "vae.pt")
        export_checkpoint(best, out)
        torch.testing.assert_close(load_net(out, expected_kind="generator").decode(z), expected)
    with pytest.raises(ValueError, match="holds a generator"):
        load_net(out, expected_kind="classifier")


def test_fast_dev_run_without_image_logger(tmp_path):
    module = VAEModule(net_kwargs={"latent_dim": 4})
    trainer = Trainer(accelerator="cpu", fast_dev_run=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, _loader(16), _loader(16))
    with pytest.raises(ValueError, match="is a classifier, expected a generator"):
        VAEModule("mnist_cnn")
