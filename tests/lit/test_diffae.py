"""DiffAEModule (`cflight fit` on tiny squares, export → load_net keeps the schedule) and the z_sem linear probe."""
import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, Dataset

from cflight.cli import main
from cflight.lit import DiffAEModule, DiffAEProbeModule, export_checkpoint
from cflight.models.generative.diffae import DiffAE, LatentProbe
from cflight.models.generative.diffusion import GaussianDiffusion
from cflight.models.generative.training_schedule import TrainingSchedule
from cflight.models.registry import load_net
from tests.helpers import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"in_channels": 3, "image_size": 8, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_resolutions": [4], "head_channels": 8, "z_dim": 6}


def test_fit_via_cli_then_export_and_load_keep_the_schedule(tmp_path):
    out = str(tmp_path / "run")
    config = tiny_config("configs/train/diffae_squares.yaml", tmp_path, **{
        "outputs/train/diffae_squares": out, "max_steps: 5000": "max_steps: 3", "val_check_interval: 1000":
        "val_check_interval: 3", "limit_val_batches: 4": "limit_val_batches: 1", "n_train: 16000": "n_train: 12",
        "n_val: 256": "n_val: 4", "n_test: 256": "n_test: 4", "batch_size: 24": "batch_size: 4",
        "model_channels: 16": "model_channels: 8", "channel_mult: [1, 2, 2, 2]": "channel_mult: [1, 2]",
        "attention_resolutions: [16]": "attention_resolutions: []", "num_timesteps: 1000": "num_timesteps: 100",
        "encode_steps: 20": "encode_steps: 4", "decode_steps: 20": "decode_steps: 4",
        "num_logged_images: 8": "num_logged_images: 2", "z_dim: 64": "z_dim: 8"})
    main(["fit", "-c", config, "--trainer.logger=false", "--trainer.enable_progress_bar=false"])
    ckpt = f"{out}/checkpoints/best.ckpt"
    info = export_checkpoint(ckpt, str(tmp_path / "diffae.pt"))
    assert info["net"] == "diffae" and info["kind"] == "denoiser"
    net = load_net(str(tmp_path / "diffae.pt"), "denoiser")
    assert isinstance(net, DiffAE) and net.image_size == (64, 64) and net.z_dim == 8
    assert net.training_schedule == TrainingSchedule(100, "linear", "fixed")
    assert load_net(ckpt, "denoiser").training_schedule == net.training_schedule
    trained = DiffAEModule.load_from_checkpoint(ckpt).net.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in net.state_dict().items())  # the EMA weights
    x = torch.rand(1, 3, 64, 64)
    recon = net.reconstruct(x, GaussianDiffusion(100), 4, 4)
    assert recon.shape == x.shape and torch.isfinite(recon).all()
    # the probe config on the exported file
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    config = tiny_config("configs/train/diffae_squares_probe.yaml", probe_dir, **{
        "outputs/train/diffae_squares/checkpoints/best.ckpt": str(tmp_path / "diffae.pt"),
        "outputs/train/diffae_squares_probe": str(probe_dir / "run"), "max_epochs: 2": "max_epochs: 1",
        "n_train: 4000": "n_train: 8", "n_val: 512": "n_val: 4", "n_test: 512": "n_test: 4",
        "batch_size: 64": "batch_size: 4", "stats_batches: 50": "stats_batches: 1"})
    main(["fit", "-c", config, "--trainer.enable_progress_bar=false"])
    export_checkpoint(str(probe_dir / "run/checkpoints/best.ckpt"), str(probe_dir / "probe.pt"))
    probe = load_net(str(probe_dir / "probe.pt"), "descriptor")
    assert isinstance(probe, LatentProbe) and probe.z_dim == 8 and probe.z_std.ne(1).all()


def _randomised(module: DiffAEModule) -> DiffAEModule:
    """Randomise zero-initialised convolutions: with ε̂ ≡ 0 no gradient reaches the encoder yet."""
    for p in module.online.parameters():
        if p.ndim == 4 and p.abs().max() == 0:
            torch.nn.init.normal_(p, std=0.05)
    return module


def test_encoder_is_trained_jointly_and_val_noise_comes_from_the_index():
    torch.manual_seed(0)
    module = _randomised(DiffAEModule(net_kwargs=TINY, num_timesteps=100, num_logged_images=0))
    x = torch.rand(4, 3, 8, 8)
    module._losses(module.online, x)["loss"].backward()
    grads = [p.grad for p in module.online.encoder.parameters()]
    assert all(g is not None for g in grads) and max(g.abs().max() for g in grads) > 0
    index = torch.arange(10, 14)
    whole = module._losses(module.online, x, index)["mse"]
    halves = [module._losses(module.online, x[i:i + 2], index[i:i + 2])["mse"] for i in (0, 2)]
    torch.testing.assert_close(whole, sum(halves) / 2)  # the same t and ε per sample for any batch size


def test_bad_configuration():
    with pytest.raises(ValueError, match="drop learn_sigma"):
        DiffAEModule(net_kwargs={**TINY, "learn_sigma": True})
    with pytest.raises(ValueError, match="must be a DiffAE"):
        DiffAEModule(net="unet", net_kwargs={"model_channels": 8, "head_channels": 8})
    with pytest.raises(ValueError, match="cannot make exactly"):
        DiffAEModule(net_kwargs=TINY, num_timesteps=100, encode_steps=11)


class _ZSeparable(Dataset):
    """Random images labelled by a hyperplane in the (random, frozen) encoder's z_sem: linearly separable."""

    def __init__(self, net: DiffAE, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, 8, 8, generator=g)
        with torch.no_grad():
            z = net.encode(self.images)
        w = torch.randn(z.shape[1], generator=torch.Generator().manual_seed(99))
        score = z @ w
        self.labels = (score > score.median()).long()  # balanced classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "index": i, "label": self.labels[i]}


def test_probe_learns_a_linearly_separable_target_and_exports(tmp_path):
    torch.manual_seed(0)
    net = DiffAE(**TINY).eval()
    train, val = _ZSeparable(net, 256, 0), _ZSeparable(net, 128, 1)
    module = DiffAEProbeModule(net, names=["label"], target_key="label", lr=0.05, stats_batches=8)
    trainer = Trainer(accelerator="cpu", max_epochs=25, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(train, batch_size=32, shuffle=True), DataLoader(val, batch_size=64))
    assert float(trainer.callback_metrics["val/acc/label"]) > 0.95
    z = net.encode(val.images)
    torch.testing.assert_close(module.net.z_mean, z.mean(0), atol=0.05, rtol=0)  # train ≈ val statistics
    ckpt = trainer.checkpoint_callback.best_model_path
    export_checkpoint(ckpt, str(tmp_path / "probe.pt"))
    probe = load_net(str(tmp_path / "probe.pt"), "descriptor")
    assert isinstance(probe, LatentProbe) and probe.names == ["label"]
    torch.testing.assert_close(probe.logits(z), module.net.logits(z))
    assert not any(p.requires_grad for p in module.diffae.parameters())


class _Images(Dataset):
    def __init__(self, n: int) -> None:
        self.images = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "index": i}


def test_validation_logs_reconstruction_error_and_grid(tmp_path):
    from tests.lit.test_ddpm import ImageLogger

    module = DiffAEModule(net_kwargs=TINY, num_timesteps=100, lr=1e-3, ema_decay=0.5, num_logged_images=3,
                          encode_steps=5, decode_steps=4)
    logger = ImageLogger()
    trainer = Trainer(accelerator="cpu", max_steps=2, logger=logger, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                      limit_val_batches=1, num_sanity_val_steps=0)
    loader = DataLoader(_Images(8), batch_size=4)
    trainer.fit(module, loader, loader)
    recon = float(trainer.callback_metrics["val/recon_mse"])
    assert 0 <= recon < 0.5
    (key, shape, caption), = logger.images
    assert key == "val/reconstructions" and shape == (2 * 9 + 1, 3 * 9 + 1, 3) and "DDIM 5" in caption[0]
