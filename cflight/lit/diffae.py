"""Training a diffusion autoencoder (Preechakul et al., CVPR 2022; spec latent_and_regression §3.3)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cflight.lit._images import log_grid
from cflight.lit.ddpm import DDPMModule


class DiffAEModule(DDPMModule):
    """Trains :class:`~cflight.models.generative.diffae.DiffAE` jointly: ``z = Enc(x0)``, loss
    ``‖ε − ε̂_θ(x_t, t, z)‖²`` with ``t`` uniform (the paper's plain ε-MSE; no variance is learned, so the
    exported schedule records ``variance="fixed"``). The encoder gets its gradient through ``z``.

    Inherits :class:`~cflight.lit.DDPMModule`'s wiring: ``self.net`` holds the **EMA** weights (exported by
    :func:`~cflight.lit.export_checkpoint` with the training schedule; ``load_net(path, "denoiser")`` rebuilds
    them), ``self.online`` is optimised; ``val/loss`` (= ``val/mse``) uses each sample's ``t`` and ε drawn
    from its dataset index. At each validation end, the first ``num_logged_images`` validation images are
    reconstructed (``encode`` → ``encode_stochastic`` with ``encode_steps`` → ``decode`` with
    ``decode_steps``): ``val/recon_mse`` is logged, and originals over reconstructions go to image loggers.

    Paper values (``templates.py``): T = 1000 linear, lr 1e-4, batch 64 (Square 24), EMA 0.9999, T_eval = 20.

    :param net: ``"diffae"`` or a DiffAE module.
    :param net_kwargs: its constructor arguments.
    :param num_timesteps: T.
    :param schedule: ``"linear"`` (the paper) or ``"cosine"``.
    :param lr: Adam learning rate.
    :param weight_decay: AdamW weight decay (0: plain Adam).
    :param ema_decay: decay of the exported EMA weights.
    :param num_logged_images: validation images reconstructed per validation (0: none).
    :param encode_steps: DDIM steps of the stochastic encoding (T_enc).
    :param decode_steps: DDIM steps of decoding (T_dec).
    :param init_weights: warm start from a DiffAE checkpoint of the same architecture.
    """

    def __init__(self, net: str | nn.Module = "diffae", net_kwargs: dict[str, Any] | None = None,
                 num_timesteps: int = 1000, schedule: str = "linear", lr: float = 1e-4, weight_decay: float = 0.0,
                 ema_decay: float = 0.9999, num_logged_images: int = 8, encode_steps: int = 20,
                 decode_steps: int = 20, init_weights: str | None = None) -> None:
        if "learn_sigma" in (net_kwargs or {}):
            raise ValueError("DiffAE predicts ε only (fixed variance): drop learn_sigma from net_kwargs")
        super().__init__(net, net_kwargs, num_timesteps, schedule, 0.0, lr, weight_decay, ema_decay,
                         num_logged_images, f"ddim{decode_steps}", "ddim", init_weights)
        if not callable(getattr(self.net, "encode", None)) or not callable(getattr(self.net, "decode", None)):
            raise ValueError(f"net must be a DiffAE (with encode/decode), got {type(self.net).__name__}")
        self.diffusion.respaced(f"ddim{encode_steps}")  # invalid step counts fail here, not after an epoch
        self._val_images: Tensor | None = None

    def forward(self, x: Tensor, t: Tensor, z_sem: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """The EMA denoiser's ε̂ at diffusion-space ``x``, original timesteps ``t`` and ``z_sem``."""
        return self.net(x, t, z_sem)

    def _loss_terms(self, net: nn.Module, x0: Tensor, t: Tensor, noise: Tensor) -> dict[str, Tensor]:
        """ε-MSE of the denoiser conditioned on ``z_sem = Enc(x0)`` (the encoder is trained through it;
        ``net.encoder`` directly: the checks of ``encode`` would sync the device each step)."""
        return self.diffusion.training_losses(net, x0, t, noise, 0.0, model_kwargs={"z_sem": net.encoder(x0)})

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")
        k = self.hparams.num_logged_images
        if batch_idx == 0 and k:
            self._val_images = batch["image"][:k].detach()

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """EMA reconstruction of ``x`` in [0, 1] with ``encode_steps`` / ``decode_steps`` DDIM steps."""
        hp = self.hparams
        return self.net.reconstruct(x, self.diffusion, hp.encode_steps, hp.decode_steps)

    def on_validation_epoch_end(self) -> None:
        x, self._val_images = self._val_images, None
        if x is None or self.trainer.sanity_checking:
            return
        recon = self.reconstruct(x)
        # a mean over the first validation batch's first images; the same images every epoch
        self.log("val/recon_mse", (recon - x).pow(2).mean(), sync_dist=True)
        caption = (f"top: validation images; bottom: EMA reconstructions (DDIM {self.hparams.encode_steps} "
                   f"steps inversion, {self.hparams.decode_steps} decoding)")
        log_grid(self, "val/reconstructions", torch.cat([x, recon]), nrow=x.shape[0], caption=caption)
