"""Training a cflight (V)AE with the reference's reconstruction + edge loss and an optional KL term."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric

from cflight.lit._images import log_grid
from cflight.lit._nets import attach_net
from cflight.rng import Stream, per_sample_normal

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_edges(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-channel Sobel gradient magnitude ``sqrt(gx² + gy²)`` of ``[B, C, H, W]``, same shape.

    Unnormalised 3×3 Sobel kernels, replicate padding (so a constant image, borders included, has zero
    edges). ``sqrt(g² + eps) − sqrt(eps)`` keeps the gradient finite where the image is flat.
    """
    c = x.shape[1]
    kx = _SOBEL_X.to(dtype=x.dtype, device=x.device)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1).repeat(c, 1, 1, 1)  # [2C, 1, 3, 3]: (gx, gy) per channel
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, groups=c)
    gx, gy = g[:, 0::2], g[:, 1::2]
    eps_t = torch.tensor(eps, dtype=x.dtype, device=x.device)
    return torch.sqrt(gx.square() + gy.square() + eps_t) - eps_t.sqrt()


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, exp(logvar)) ‖ N(0, I))`` summed over latent dimensions, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=1)).mean()


def vae_loss(x: Tensor, x_rec: Tensor, mu: Tensor, logvar: Tensor, mse_weight: float = 1.0,
             edge_weight: float = 0.2, l1_weight: float = 4.0, kl_weight: float = 0.0) -> dict[str, Tensor]:
    """The weighted loss and its terms (``loss``, ``mse``, ``edge``, ``l1``, ``kl``).

    ``mse``/``l1`` are per-pixel means, ``edge`` the mean Sobel magnitude of ``x_rec``, ``kl`` per sample
    (summed over latents). With ``kl_weight == 0`` the KL term is not part of the loss (nor its graph).
    """
    terms = {"mse": F.mse_loss(x_rec, x), "edge": sobel_edges(x_rec).mean(), "l1": F.l1_loss(x_rec, x),
             "kl": kl_divergence(mu, logvar)}
    loss = mse_weight * terms["mse"] + edge_weight * terms["edge"] + l1_weight * terms["l1"]
    if kl_weight:
        loss = loss + kl_weight * terms["kl"]
    else:
        terms["kl"] = terms["kl"].detach()
    return {"loss": loss, **terms}


class VAEModule(LightningModule):
    """Trains a generator with ``encode``/``decode``/``forward(x, noise) -> (x_rec, mu, logvar)``.

    Loss ``mse_weight·MSE + edge_weight·mean Sobel magnitude(x_rec) + l1_weight·L1 + kl_weight·KL``. The
    defaults ``(1, 0.2, 4, 0)`` and Adam 1e-3 are Goldwasser & Hooker's MNIST autoencoder
    (``mnist_autoencoder.ipynb``, 3 epochs, batch 64): **no KL term**, so it is a stochastic autoencoder
    whose latent prior is not N(0, I). ``kl_weight > 0`` makes it a proper VAE (then random samples from
    the prior are meaningful). Unlike the reference, inputs are not normalised (see ``ConvVAE``).

    Training reparameterises with fresh noise; validation and test reconstruct from the posterior mean
    (deterministic metrics: ``val/recon_mse``, ``test/recon_mse``, ``val/loss``, …). At the end of each
    validation epoch, a logger with ``log_image`` (W&B) receives a grid of originals over reconstructions
    and a grid of decoded prior samples; other loggers are skipped.

    :param net: registered generator name (``"conv_vae"``) or a module.
    :param net_kwargs: constructor arguments of a named network.
    :param lr: Adam learning rate.
    :param mse_weight: weight of the per-pixel MSE.
    :param edge_weight: weight of the output's mean Sobel edge magnitude.
    :param l1_weight: weight of the per-pixel L1.
    :param kl_weight: weight of the KL divergence to N(0, I) (per sample, summed over latents).
    :param num_logged_images: images per logged grid (0 disables image logging).
    """

    def __init__(self, net: str | nn.Module = "conv_vae", net_kwargs: dict[str, Any] | None = None,
                 lr: float = 1e-3, mse_weight: float = 1.0, edge_weight: float = 0.2, l1_weight: float = 4.0,
                 kl_weight: float = 0.0, num_logged_images: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = attach_net(self, net, net_kwargs, "generator")
        for stage in ("val", "test"):
            for name in ("loss", "recon_mse", "l1", "edge", "kl"):
                setattr(self, f"{stage}_{name}", MeanMetric())
        self._val_images: Tensor | None = None

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        return self.net(x, noise)

    def _loss_terms(self, x: Tensor, x_rec: Tensor, mu: Tensor, logvar: Tensor) -> dict[str, Tensor]:
        hp = self.hparams
        return vae_loss(x, x_rec, mu, logvar, hp.mse_weight, hp.edge_weight, hp.l1_weight, hp.kl_weight)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x = batch["image"]
        terms = self._loss_terms(x, *self(x))
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True, on_epoch=True)
        return terms["loss"]

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        x = batch["image"]
        mu, logvar = self.net.encode(x)
        x_rec = self.net.decode(mu)  # posterior mean: deterministic metrics
        terms = self._loss_terms(x, x_rec, mu, logvar)
        terms["recon_mse"] = terms.pop("mse")
        n = x.shape[0]
        for name, value in terms.items():
            metric = getattr(self, f"{stage}_{name}")
            metric(value.detach(), weight=n)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "recon_mse")
        return x_rec

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x_rec = self._eval_step(batch, "val")
        if batch_idx == 0 and self.hparams.num_logged_images > 0:
            k = self.hparams.num_logged_images
            self._val_images = torch.cat([batch["image"][:k], x_rec[:k]]).detach()

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        images, self._val_images = self._val_images, None
        if images is None or not any(callable(getattr(lg, "log_image", None)) for lg in self.loggers):
            return
        k = images.shape[0] // 2
        log_grid(self, "val/reconstructions", images, k, "top: originals, bottom: reconstructions (posterior mean)")
        grid = torch.arange(k, device=self.device)  # fixed prior samples, drawn on the device
        z = per_sample_normal((self.net.latent_dim,), 0, grid, stream=Stream.FIXED_SAMPLES)
        with torch.no_grad():
            log_grid(self, "val/samples", self.net.decode(z), k, "decoded z ~ N(0, I)")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
