"""A linear probe on a frozen Diff-AE's semantic code (Preechakul et al. 2022, spec latent_and_regression §3.3)."""
from __future__ import annotations

from collections.abc import Sequence
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric

from cflight.models.generative.diffae import LatentProbe
from cflight.models.registry import load_net


class DiffAEProbeModule(LightningModule):
    """Fits :class:`~cflight.models.generative.diffae.LatentProbe` on ``z_sem = diffae.encode(x)`` (frozen).

    Before the first epoch, ``z_sem``'s mean and std over ``stats_batches`` training batches (summed over
    processes) become the probe's normalisation, as the paper z-normalises with dataset statistics. Then
    binary outputs train with BCE-with-logits, continuous ones with MSE; the paper's head: Adam lr 1e-3.
    ``target_key`` picks the batch field: ``"label"`` / ``"target"`` (``[B]``) or ``"descriptors"`` (``[B, K]``).
    Logged: ``val/loss``, ``val/acc/<name>`` (binary), ``val/mse/<name>`` (continuous). Exported by
    :func:`~cflight.lit.export_checkpoint` as a ``"descriptor"`` (``load_net(path, "descriptor")``).

    :param diffae: a DiffAE module or the path of an exported / Lightning DiffAE checkpoint.
    :param names: output names (one per column of the target).
    :param binary: which outputs are binary (default: all).
    :param target_key: batch field with the targets.
    :param lr: Adam learning rate.
    :param weight_decay: L2 penalty.
    :param stats_batches: training batches for the ``z_sem`` statistics.
    """

    def __init__(self, diffae: nn.Module | str, names: Sequence[str] = ("label",),
                 binary: Sequence[bool] | None = None, target_key: str = "label", lr: float = 1e-3,
                 weight_decay: float = 0.0, stats_batches: int = 50) -> None:
        super().__init__()
        if stats_batches < 1 or lr <= 0 or weight_decay < 0:
            raise ValueError("need stats_batches >= 1, lr > 0 and weight_decay >= 0")
        self.save_hyperparameters(ignore=["diffae"])
        if isinstance(diffae, str):
            self.hparams["diffae"] = diffae
            diffae = load_net(diffae, "denoiser")
        if not callable(getattr(diffae, "encode", None)) or not hasattr(diffae, "z_dim"):
            raise ValueError(f"diffae must be a DiffAE (with encode and z_dim), got {type(diffae).__name__}")
        self.diffae = diffae.eval().requires_grad_(False)
        self.net = LatentProbe(diffae.z_dim, list(names), None if binary is None else list(binary))
        self.hparams["net"] = "diffae_probe"
        self.hparams["net_kwargs"] = {"z_dim": diffae.z_dim, "names": list(self.net.names),
                                      "binary": [bool(b) for b in self.net.binary]}
        # one weighted mean per stage for the loss and per output for its accuracy / MSE
        self.metrics = nn.ModuleDict({f"{stage}_{key}": MeanMetric() for stage in ("val", "test")
                                      for key in ["loss", *map(str, range(len(self.net.names)))]})

    def train(self, mode: bool = True) -> "DiffAEProbeModule":
        super().train(mode)
        self.diffae.eval()  # frozen
        return self

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        return self.diffae.encode(x)

    def _targets(self, batch: dict[str, Tensor]) -> Tensor:
        y = batch[self.hparams.target_key].float()
        y = y[:, None] if y.ndim == 1 else y
        if y.shape[1] != len(self.net.names):
            raise ValueError(f"batch[{self.hparams.target_key!r}] has {y.shape[1]} columns, the probe predicts "
                             f"{len(self.net.names)} ({self.net.names})")
        return y

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        b = self.net.binary
        bce = F.binary_cross_entropy_with_logits(logits[:, b], y[:, b]) if b.any() else logits.new_zeros(())
        mse = F.mse_loss(logits[:, ~b], y[:, ~b]) if (~b).any() else logits.new_zeros(())
        return bce + mse

    def on_train_start(self) -> None:
        """``z_sem`` mean/std over the first ``stats_batches`` training batches of every process."""
        sums = torch.zeros(3, self.net.z_dim, dtype=torch.float64, device=self.device)
        for i, batch in enumerate(self.trainer.train_dataloader):
            if i >= self.hparams.stats_batches:
                break
            z = self.encode(batch["image"].to(self.device)).double()
            sums += torch.stack([z.sum(0), z.pow(2).sum(0), torch.full_like(z[0], z.shape[0])])
        s, ss, n = self.trainer.strategy.reduce(sums, reduce_op="sum")
        mean = s / n.clamp(min=1)
        std = (ss / n.clamp(min=1) - mean**2).clamp(min=0).sqrt().clamp(min=1e-6)
        self.net.z_mean.copy_(mean.float())
        self.net.z_std.copy_(std.float())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(self.net.logits(self.encode(batch["image"])), self._targets(batch))
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        y = self._targets(batch)
        logits = self.net.logits(self.encode(batch["image"]))
        n = y.shape[0]
        self.metrics[f"{stage}_loss"](self.loss(logits, y), weight=n)
        self.log(f"{stage}/loss", self.metrics[f"{stage}_loss"], prog_bar=True)
        for i, name in enumerate(self.net.names):
            if bool(self.net.binary[i]):
                value, key = ((logits[:, i] > 0).float() == y[:, i]).float().mean(), f"{stage}/acc/{name}"
            else:
                value, key = (logits[:, i] - y[:, i]).pow(2).mean(), f"{stage}/mse/{name}"
            self.metrics[f"{stage}_{i}"](value, weight=n)
            self.log(key, self.metrics[f"{stage}_{i}"])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
