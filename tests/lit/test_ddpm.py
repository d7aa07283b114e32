"""DDPMModule: a few training steps, EMA export, checkpoint → load_net("denoiser") → DVCE, sample grids, config."""
import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

from cflight.lit import DDPMModule, export_checkpoint
from cflight.methods import DVCE
from cflight.models.generative.training_schedule import TrainingSchedule
from cflight.models.registry import load_net
from cflight.types import ClassTarget
from cflight.validation import BadInputError
from tests.helpers import LinearClassifier, Squares

NET_KWARGS = {"in_channels": 1, "image_size": 8, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
              "attention_resolutions": [4], "head_channels": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


class ImageLogger(Logger):
    """A logger that takes images (like W&B) and keeps them."""

    def __init__(self):
        super().__init__()
        self.images = []

    name, version = "images", 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_image(self, key, images, step=None, caption=None):
        self.images.append((key, images[0].shape, caption))


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_training_ema_checkpoint_and_dvce(tmp_path, learn_sigma):
    module = DDPMModule(net_kwargs={**NET_KWARGS, "learn_sigma": learn_sigma}, num_timesteps=100, lr=1e-3,
                        ema_decay=0.5, num_logged_images=4, sample_respacing="ddim5", sample_method="ddim")
    ema_before = [p.clone() for p in module.net.parameters()]
    logger = ImageLogger()
    trainer = Trainer(accelerator="cpu", max_steps=4, logger=logger, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                      limit_val_batches=1, num_sanity_val_steps=0)
    loader = DataLoader(Squares(16, size=8, side=3, low=0, high=5), batch_size=8)
    trainer.fit(module, loader, loader)
    assert trainer.global_step == 4
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, module.net.parameters())), "EMA never moved"
    assert any(not torch.equal(a, b) for a, b in zip(module.online.parameters(), module.net.parameters()))
    assert not any(p.requires_grad for p in module.net.parameters())
    assert torch.isfinite(torch.tensor(float(trainer.callback_metrics["val/loss"])))
    assert [k for k, *_ in logger.images] == ["val/samples"] * 2 and logger.images[0][1][2] == 3  # uint8 HWC

    path = tmp_path / "ddpm.ckpt"
    trainer.save_checkpoint(path)
    net = load_net(str(path), "denoiser")
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3.0, 90.0])
    module.net.eval()
    torch.testing.assert_close(net(x, t), module.net(x, t))  # the exported weights are the EMA ones
    assert net.out_channels == (2 if learn_sigma else 1)
    with pytest.raises(ValueError, match="expected a classifier"):
        load_net(str(path), "classifier")
    method = DVCE(str(path), num_timesteps=100, timestep_respacing="10", skip_timesteps=7)
    out = method(torch.rand(2, 1, 8, 8), ClassTarget(torch.tensor([0, 1])), LinearClassifier(2, 1, 8))
    assert out.x_cf.shape == (2, 1, 8, 8) and out.steps.tolist() == [3, 3]

    # the training schedule travels with the denoiser (Lightning checkpoint and exported file) and is checked
    variance = "learned_range" if learn_sigma else "fixed"
    exported = tmp_path / "ddpm.pt"
    export_checkpoint(str(path), str(exported))
    for source in (path, exported):
        assert load_net(str(source), "denoiser").training_schedule == TrainingSchedule(100, "linear", variance)
        assert DVCE(str(source), timestep_respacing="10", skip_timesteps=7).diffusion.num_timesteps == 100
        with pytest.raises(BadInputError) as err:
            DVCE(str(source), schedule="cosine", timestep_respacing="10", skip_timesteps=7)
        message = str(err.value)
        assert len(message.splitlines()) == 1
        assert "trained with a 100-step 'linear' schedule, not schedule='cosine'" in message
        assert "leave num_timesteps and schedule unset" in message
        with pytest.raises(BadInputError, match="not num_timesteps=1000"):
            DVCE(str(source), num_timesteps=1000)


def test_validation_losses_do_not_depend_on_the_batch_size(tmp_path):
    # t and ε of each sample come from its dataset index: batches of 2 and 3 give the same epoch means
    module = DDPMModule(net_kwargs={**NET_KWARGS, "learn_sigma": True}, num_timesteps=100, num_logged_images=0)
    data = Squares(6, size=8, side=3, low=0, high=5)
    results = []
    for batch_size in (2, 3):
        trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                          default_root_dir=str(tmp_path))
        results.append(trainer.validate(module, DataLoader(data, batch_size=batch_size), verbose=False)[0])
    for key in ("val/loss", "val/mse", "val/vb"):
        assert results[0][key] == pytest.approx(results[1][key], rel=1e-5, abs=1e-7), key
    x, index = torch.stack([data[i]["image"] for i in range(6)]), torch.arange(6)
    with torch.no_grad():
        assert module._losses(module.net, x, index + 1)["mse"] != module._losses(module.net, x, index)["mse"]


def test_sample_is_seeded_and_in_range():
    module = DDPMModule(net_kwargs=NET_KWARGS, num_timesteps=100, sample_respacing="5")
    a, b = module.sample(3, (1, 8, 8), seed=1), module.sample(3, (1, 8, 8), seed=1)
    assert torch.equal(a, b) and a.shape == (3, 1, 8, 8) and a.min() >= 0 and a.max() <= 1


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": 0.0}, "lr"), ({"ema_decay": 1.0}, "ema_decay"), ({"sample_method": "euler"}, "sample_method"),
    ({"sample_respacing": "ddim7x"}, "respacing"), ({"schedule": "sqrt"}, "schedule"), ({"net": "conv_vae"}, "denoiser"),
])
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DDPMModule(**{"net_kwargs": NET_KWARGS if "net" not in kwargs else None, "num_timesteps": 100, **kwargs})


def test_mnist_config_builds_the_module():
    with open("configs/train/ddpm_mnist.yaml") as f:
        cfg = yaml.safe_load(f)
    assert cfg["model"]["class_path"] == "cflight.lit.DDPMModule"
    assert cfg["data"]["class_path"] == "cflight.data.MNISTDataModule" and cfg["data"]["init_args"]["batch_size"] == 64
    module = DDPMModule(**cfg["model"]["init_args"])
    n = sum(p.numel() for p in module.net.parameters())
    assert 1_000_000 <= n <= 2_000_000 and module.net.learn_sigma


def test_warm_start_copies_weights_into_both_copies(tmp_path):
    source = DDPMModule(net_kwargs=NET_KWARGS, num_timesteps=100)  # random weights unlike any later module's
    path = tmp_path / "source.ckpt"
    torch.save({"hyper_parameters": {"net": "unet", "net_kwargs": NET_KWARGS},
                "state_dict": {f"net.{k}": v for k, v in source.net.state_dict().items()}}, path)
    warm = DDPMModule(net_kwargs=NET_KWARGS, num_timesteps=100, init_weights=str(path))
    for a, b, c in zip(source.net.state_dict().values(), warm.net.state_dict().values(),
                       warm.online.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert all(p.requires_grad for p in warm.online.parameters())
    # A different architecture is a clear error naming the file, not a silent partial load.
    with pytest.raises(ValueError, match="does not fit"):
        DDPMModule(net_kwargs={**NET_KWARGS, "model_channels": 16}, num_timesteps=100, init_weights=str(path))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        DDPMModule(net_kwargs=NET_KWARGS, num_timesteps=100, init_weights=str(tmp_path / "missing.pt"))
