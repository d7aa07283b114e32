"""Training a DCGAN (+ optional encoder) with manual optimisation, non-saturating loss, R1 and an EMA generator."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor

from cflight.lit._images import log_grid
from cflight.models.generative.gan import DCGANDiscriminator, GANLatentModel
from cflight.rng import Stream, per_sample_normal


def r1_penalty(d_real: Tensor, x_real: Tensor) -> Tensor:
    """``mean_b ‖∇_x D(x_b)‖²`` on real images (Mescheder et al. 2018); ``x_real`` must require grad."""
    (grad,) = torch.autograd.grad(d_real.sum(), x_real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def warmup_decay(decay: float, num_updates: int) -> float:
    """``min(decay, (1 + n)/(10 + n))`` after ``n`` updates: the EMA follows the network early on instead of
    keeping its random initialisation (with decay 0.999 over a 1000-step run, 37 % of the average would
    still be the initial weights)."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, online: torch.nn.Module, decay: float) -> None:
    """``θ_ema ← decay·θ_ema + (1 − decay)·θ``; buffers (BatchNorm statistics) are copied."""
    for p_ema, p in zip(ema.parameters(), online.parameters()):
        p_ema.lerp_(p, 1 - decay)
    for b_ema, b in zip(ema.buffers(), online.buffers()):
        b_ema.copy_(b)


class GANModule(LightningModule):
    """DCGAN training on dict batches; ``self.net`` (a ``GANLatentModel``: EMA generator + encoder) is what
    checkpoints export and :func:`~cflight.models.registry.load_net` rebuilds.

    Per batch: a discriminator step (non-saturating softplus loss; R1 with weight ``r1_gamma / 2`` every
    ``r1_every`` steps, lazily scaled), a generator step, an encoder step (``‖E(G(z)) − z‖² +
    ‖G_ema(E(x)) − x‖²`` for initialising projection), then the EMA update. Validation logs the encoder's
    reconstruction MSE (``val/recon_mse``) and sample grids from the EMA generator.

    :param net_kwargs: ``GANLatentModel`` arguments (latent_dim, channels, image_size, width, encoder).
    :param ema_warmup: use ``min(ema_decay, (1 + n)/(10 + n))`` after ``n`` updates (short runs need it).
    :param discriminator_width: channels of the discriminator's first conv (default: the generator's
        ``width``). The DCGAN discriminator is ~20× cheaper than its generator at equal width, and a weak
        critic lets the generator settle on blobs; a wider one is the cheap fix.
    """

    def __init__(self, net_kwargs: dict[str, Any] | None = None, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
                 r1_gamma: float = 0.0, r1_every: int = 4, ema_decay: float = 0.999, encoder_lr: float = 1e-3,
                 num_logged_images: int = 32, ema_warmup: bool = True,
                 discriminator_width: int | None = None) -> None:
        super().__init__()
        if r1_gamma < 0 or r1_every < 1 or not 0 <= ema_decay < 1:
            raise ValueError("need r1_gamma >= 0, r1_every >= 1 and 0 <= ema_decay < 1")
        if discriminator_width is not None and discriminator_width < 1:
            raise ValueError(f"discriminator_width must be >= 1, got {discriminator_width}")
        self.save_hyperparameters()
        self.hparams["net"] = "dcgan"
        self.hparams["net_kwargs"] = dict(net_kwargs or {})
        self.automatic_optimization = False
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))  # resumes with the checkpoint
        self.net = GANLatentModel(**self.hparams.net_kwargs)  # generator here is the EMA copy
        self.net.generator.requires_grad_(False)
        self.generator = copy.deepcopy(self.net.generator).requires_grad_(True)
        n = self.net
        d_width = discriminator_width or self.hparams.net_kwargs.get("width", 32)
        self.discriminator = DCGANDiscriminator(n.in_channels, n.image_size, d_width)

    def forward(self, z: Tensor) -> Tensor:
        return self.net.decode(z)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        opts = self.optimizers()
        opt_g, opt_d = opts[0], opts[1]
        self.net.generator.eval()  # the EMA copy is only evaluated; its BN statistics come from ema_update
        x = batch["image"]
        z = torch.randn(x.shape[0], self.net.latent_dim, device=x.device)

        # discriminator
        self.toggle_optimizer(opt_d)
        do_r1 = self.hparams.r1_gamma > 0 and self.global_step % self.hparams.r1_every == 0
        x_real = x.detach().requires_grad_(do_r1)
        d_real = self.discriminator(x_real)
        d_fake = self.discriminator(self.generator(z).detach())
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        if do_r1:
            loss_d = loss_d + self.hparams.r1_gamma / 2 * self.hparams.r1_every * r1_penalty(d_real, x_real)
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        # generator (non-saturating)
        self.toggle_optimizer(opt_g)
        loss_g = F.softplus(-self.discriminator(self.generator(z))).mean()
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        decay = self.hparams.ema_decay
        if self.hparams.ema_warmup:
            decay = warmup_decay(decay, int(self.ema_updates))
        ema_update(self.net.generator, self.generator, decay)
        self.ema_updates += 1

        logs = {"train/loss_d": loss_d.detach(), "train/loss_g": loss_g.detach(),
                "train/d_real": d_real.detach().mean(), "train/d_fake": d_fake.detach().mean()}
        if self.net.encoder is not None:
            opt_e = opts[2]
            with torch.no_grad():
                fake = self.net.generator(z)
            loss_e = F.mse_loss(self.net.encoder(fake), z) + F.mse_loss(self.net.generator(self.net.encoder(x)), x)
            opt_e.zero_grad()
            self.manual_backward(loss_e)
            opt_e.step()
            logs["train/loss_e"] = loss_e.detach()
        self.log_dict(logs, on_step=True, on_epoch=True, prog_bar=True)

    def _eval(self, batch: dict[str, Tensor], stage: str) -> None:
        if self.net.encoder is None:
            return
        x = batch["image"]
        mse = F.mse_loss(self.net.decode(self.net.encode(x)), x)
        self.log(f"{stage}/recon_mse", mse, on_epoch=True, prog_bar=True, batch_size=x.shape[0])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval(batch, "test")

    def on_validation_epoch_end(self) -> None:
        k = self.hparams.num_logged_images
        if k:
            grid = torch.arange(k, device=self.device)  # fixed z, drawn on the device
            z = per_sample_normal((self.net.latent_dim,), 0, grid, stream=Stream.FIXED_SAMPLES)
            with torch.no_grad():
                log_grid(self, "val/samples", self.net.decode(z), nrow=8, caption="EMA generator, fixed z")

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        opts = [torch.optim.Adam(self.generator.parameters(), lr=hp.lr, betas=tuple(hp.betas)),
                torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr, betas=tuple(hp.betas))]
        if self.net.encoder is not None:
            opts.append(torch.optim.Adam(self.net.encoder.parameters(), lr=hp.encoder_lr))
        return opts
