"""Training an ε-prediction DDPM (improved-DDPM hybrid loss) with EMA weights."""
from __future__ import annotations

import copy
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric

from cflight.lit._images import log_grid
from cflight.lit._nets import attach_net, warm_start
from cflight.lit.gan import ema_update
from cflight.models.generative.diffusion import GaussianDiffusion, from_diffusion, to_diffusion
from cflight.rng import Stream, per_sample_normal, per_sample_randint

EVAL_SEED = 0  # key of the evaluation draws: the same t and noise for a sample in every epoch


class DDPMModule(LightningModule):
    """Trains a denoiser on dict batches (``image`` in [0, 1], mapped to [−1, 1] here).

    Loss (Nichol & Dhariwal 2021): ``L_simple = ‖ε − ε̂(x_t, t)‖²`` with ``t`` uniform; if the network
    predicts a variance (``learn_sigma``, 2C output channels) the hybrid ``L_simple + λ·L_vlb`` with the
    mean stop-gradient in the VLB term (λ = 0.001). ``self.net`` holds the **EMA** weights: checkpoints
    export them and :func:`~cflight.models.registry.load_net` (kind ``"denoiser"``) rebuilds them; the
    optimised copy is ``self.online``. Validation evaluates the EMA network at timesteps/noise drawn from
    each sample's dataset index (``val/loss``, ``val/mse``, ``val/vb``: the same for any batch size or
    number of processes) and logs a grid of samples from fixed noise
    (``sample_respacing`` steps of ``sample_method``) to loggers that take images.

    Improved-DDPM's defaults: T = 1000, Adam lr 1e-4, EMA 0.9999, batch 128; schedule ``linear`` as ADM
    (the paper also uses ``cosine``). :func:`~cflight.lit.export_checkpoint` stores ``num_timesteps``,
    ``schedule`` and the variance type in the exported file, and the methods using the denoiser read and
    check them (:mod:`~cflight.models.generative.training_schedule`).

    :param net: registered denoiser name (``"unet"``) or a module.
    :param net_kwargs: constructor arguments of a named network.
    :param num_timesteps: diffusion steps T.
    :param schedule: ``"linear"`` or ``"cosine"``.
    :param lambda_vlb: weight λ of L_vlb in the hybrid loss.
    :param lr: Adam learning rate.
    :param weight_decay: AdamW weight decay (0: plain Adam).
    :param ema_decay: decay of the exported EMA weights.
    :param num_logged_images: samples per logged grid (0 disables sampling).
    :param sample_respacing: respacing of the sample grid (e.g. ``"100"``, ``"ddim50"``).
    :param sample_method: ``"ddpm"`` (ancestral) or ``"ddim"`` (η = 0).
    :param init_weights: warm start: a denoiser checkpoint (exported file or Lightning checkpoint) whose
        weights initialise both the EMA and the optimised copy; its architecture must match ``net``/``net_kwargs``.
    """

    def __init__(self, net: str | nn.Module = "unet", net_kwargs: dict[str, Any] | None = None,
                 num_timesteps: int = 1000, schedule: str = "linear", lambda_vlb: float = 0.001, lr: float = 1e-4,
                 weight_decay: float = 0.0, ema_decay: float = 0.9999, num_logged_images: int = 16,
                 sample_respacing: str = "100", sample_method: str = "ddpm",
                 init_weights: str | None = None) -> None:
        super().__init__()
        if lr <= 0 or weight_decay < 0 or lambda_vlb < 0 or not 0 <= ema_decay < 1:
            raise ValueError("need lr > 0, weight_decay >= 0, lambda_vlb >= 0 and 0 <= ema_decay < 1")
        if sample_method not in ("ddpm", "ddim"):
            raise ValueError(f"sample_method must be 'ddpm' or 'ddim', got {sample_method!r}")
        if num_logged_images < 0:
            raise ValueError(f"num_logged_images must be >= 0, got {num_logged_images}")
        self.save_hyperparameters(ignore=["net"])
        self.net = attach_net(self, net, net_kwargs, "denoiser").requires_grad_(False)  # EMA copy
        if init_weights is not None:
            warm_start(self.net, init_weights, "denoiser")
        self.online = copy.deepcopy(self.net).requires_grad_(True)
        self.diffusion = GaussianDiffusion(num_timesteps, schedule)
        self.diffusion.respaced(sample_respacing)  # invalid respacing fails here, not after an epoch
        for stage in ("val", "test"):
            for name in ("loss", "mse", "vb"):
                setattr(self, f"{stage}_{name}", MeanMetric())

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """The EMA denoiser's output at diffusion-space ``x`` and original timesteps ``t``."""
        return self.net(x, t)

    def _losses(self, net: nn.Module, x: Tensor, index: Tensor | None = None) -> dict[str, Tensor]:
        """Batch means of the loss terms; ``index`` ``[B]`` (dataset indices) draws each sample's ``t`` and
        ε from ``(EVAL_SEED, index)`` — independent of batch size and process count — else from the
        global RNG (training)."""
        x0 = to_diffusion(x)
        n, steps = x0.shape[0], self.diffusion.num_steps
        if index is None:
            t = torch.randint(0, steps, (n,), device=x0.device)
            noise = torch.randn_like(x0)
        else:
            t = per_sample_randint(steps, (), EVAL_SEED, index, stream=Stream.EVAL_TIMESTEP, device=x0.device)
            noise = per_sample_normal(tuple(x0.shape[1:]), EVAL_SEED, index, stream=Stream.EVAL_NOISE,
                                      device=x0.device, dtype=x0.dtype)
        return {k: v.mean() for k, v in self._loss_terms(net, x0, t, noise).items()}

    def _loss_terms(self, net: nn.Module, x0: Tensor, t: Tensor, noise: Tensor) -> dict[str, Tensor]:
        """Per-sample loss terms at diffusion-space ``x0``, timesteps ``t`` and noise ``ε`` (subclasses
        condition the denoiser here)."""
        return self.diffusion.training_losses(net, x0, t, noise, self.hparams.lambda_vlb)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        terms = self._losses(self.online, batch["image"])
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True, on_epoch=True,
                      prog_bar=False, batch_size=batch["image"].shape[0])
        return terms["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        ema_update(self.net, self.online, self.hparams.ema_decay)

    def _eval_step(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> None:
        terms = self._losses(self.net, batch["image"], batch["index"])
        n = batch["image"].shape[0]
        for name, value in terms.items():
            metric = getattr(self, f"{stage}_{name}")
            metric(value.detach(), weight=n)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "loss")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")
        if batch_idx == 0:
            self._sample_shape = tuple(batch["image"].shape[1:])

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    @torch.no_grad()
    def sample(self, num: int, shape: tuple[int, ...], seed: int = 0) -> Tensor:
        """``num`` images in [0, 1] from the EMA network, from seeded noise."""
        hp = self.hparams
        diffusion = self.diffusion.respaced(hp.sample_respacing)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((num, *shape), generator=gen).to(self.device)
        if hp.sample_method == "ddim":
            x = diffusion.ddim_sample(self.net, x, clip_denoised=True)
        else:
            x = diffusion.ddpm_sample(self.net, x, generator=gen, clip_denoised=True)
        return from_diffusion(x)

    def on_validation_epoch_end(self) -> None:
        k, shape = self.hparams.num_logged_images, getattr(self, "_sample_shape", None)
        takes_images = any(callable(getattr(lg, "log_image", None)) for lg in self.loggers)
        if not k or shape is None or not takes_images or self.trainer.sanity_checking:
            return
        caption = f"EMA denoiser, {self.hparams.sample_method} {self.hparams.sample_respacing} steps, fixed noise"
        log_grid(self, "val/samples", self.sample(k, shape), nrow=min(k, 8), caption=caption)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        if hp.weight_decay:
            return torch.optim.AdamW(self.online.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        return torch.optim.Adam(self.online.parameters(), lr=hp.lr)
