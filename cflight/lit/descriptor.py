"""Training descriptor models on latents (the paper's cheap path) or on images (any method's path)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric

from cflight.lit._nets import attach_net
from cflight.models.registry import load_net


class DescriptorModule(LightningModule):
    """Fits one descriptor model to a dataset's ``descriptors`` ``[B, K]`` (Goldwasser & Hooker 2025, §1.6.2).

    ``space="latent"``: the network reads ``encoder.encode(x)`` (the posterior mean of a VAE, or a GAN's
    encoder), computed on the fly with the frozen ``encoder``: the paper's logistic regressions on latents
    (here trained by Adam with BCE; its L2 penalty is ``weight_decay``). ``space="image"``: a CNN on images.
    Binary descriptors use BCE-with-logits, continuous ones MSE. Held-out accuracy (binary) and R²
    (continuous) are logged per descriptor as ``val/acc/<name>`` and ``val/r2/<name>`` (and ``test/...``).

    Continuous descriptors in small units (a size spread over 0.03) add almost nothing to a plain MSE and are
    then barely learned; ``continuous_std`` divides each one's error by its spread, so every factor weighs
    alike, and ``continuous_weight`` balances the standardised MSE against the BCE. The network still
    predicts natural units.

    :param net: ``"latent_descriptors"`` (needs ``latent_dim``), ``"image_descriptors"`` or a module with
        ``names``, ``binary`` and ``logits()``.
    :param encoder: generator with ``encode`` (module or checkpoint path), required for ``space="latent"``.
    :param continuous_std: ``{name: std}`` of continuous descriptors (unlisted ones: 1).
    :param continuous_weight: weight of the (standardised) MSE term.
    """

    def __init__(self, net: str | nn.Module = "image_descriptors", net_kwargs: dict[str, Any] | None = None,
                 space: str = "image", encoder: nn.Module | str | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.0, continuous_std: dict[str, float] | None = None,
                 continuous_weight: float = 1.0) -> None:
        super().__init__()
        if space not in ("latent", "image"):
            raise ValueError(f"space must be 'latent' or 'image', got {space!r}")
        if continuous_weight < 0:
            raise ValueError(f"continuous_weight must be >= 0, got {continuous_weight}")
        self.save_hyperparameters(ignore=["net", "encoder"])
        self.net = attach_net(self, net, net_kwargs, "descriptor")
        if space == "latent":
            if encoder is None:
                raise ValueError("space='latent' needs an encoder (a generator with encode())")
            encoder = load_net(encoder, expected_kind="generator") if isinstance(encoder, str) else encoder
            self.encoder = encoder.eval().requires_grad_(False)
        else:
            self.encoder = None
        self.names = list(self.net.names)
        binary = self.net.binary.cpu()
        self.register_buffer("is_binary", binary.clone(), persistent=False)
        self.register_buffer("target_std", self._target_std(continuous_std or {}, binary), persistent=False)
        for stage in ("val", "test"):
            setattr(self, f"{stage}_loss", MeanMetric())
        self._sums: dict[str, Tensor] = {}

    def train(self, mode: bool = True) -> "DescriptorModule":
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()  # frozen: its BatchNorm/dropout stay in inference mode
        return self

    def inputs(self, x: Tensor) -> Tensor:
        if self.encoder is None:
            return x
        with torch.no_grad():
            enc = self.encoder.encode(x)
        return enc if isinstance(enc, Tensor) else enc[0]

    def _target_std(self, std: dict[str, float], binary: Tensor) -> Tensor:
        """``[K]`` divisors of the continuous descriptors' errors (1 for binary and unlisted ones)."""
        out = torch.ones(len(self.names))
        for name, value in std.items():
            if name not in self.names or bool(binary[self.names.index(name)]):
                raise ValueError(f"continuous_std names a descriptor that is not continuous: {name!r}")
            if not value > 0:
                raise ValueError(f"continuous_std[{name!r}] must be > 0, got {value}")
            out[self.names.index(name)] = float(value)
        return out

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        if y.shape[1] != len(self.names):
            raise ValueError(f"the data has {y.shape[1]} descriptors, the model predicts {len(self.names)} ({self.names})")
        b = self.is_binary
        bce = F.binary_cross_entropy_with_logits(logits[:, b], y[:, b]) if b.any() else logits.new_zeros(())
        std = self.target_std[~b]
        mse = F.mse_loss(logits[:, ~b] / std, y[:, ~b] / std) if (~b).any() else logits.new_zeros(())
        return bce + self.hparams.continuous_weight * mse

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(self.net.logits(self.inputs(batch["image"])), batch["descriptors"].float())
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        y = batch["descriptors"].float()
        logits = self.net.logits(self.inputs(batch["image"]))
        getattr(self, f"{stage}_loss")(self.loss(logits, y), weight=y.shape[0])
        pred = torch.where(self.is_binary, (logits > 0).float(), logits)
        stats = torch.stack([(pred == y).float().sum(0), ((pred - y) ** 2).sum(0),
                             y.sum(0), (y**2).sum(0), torch.full_like(y[0], y.shape[0])])
        self._sums[stage] = self._sums.get(stage, torch.zeros_like(stats)) + stats.double()

    def _eval_end(self, stage: str) -> None:
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), prog_bar=True)
        # Every process takes part in the reduce, also one that had no batch (else the others would wait for it
        # forever), and on the module's device (NCCL rejects CPU tensors).
        sums = self._sums.pop(stage, None)
        if sums is None:
            sums = torch.zeros(5, len(self.names), dtype=torch.float64, device=self.device)
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        correct, sse, s, ss, n = sums
        if not bool((n > 0).all()):
            return
        acc = correct / n
        var = ss / n - (s / n) ** 2
        r2 = 1 - (sse / n) / var.clamp_min(1e-12)
        for i, name in enumerate(self.names):
            key = f"{stage}/acc/{name}" if bool(self.is_binary[i]) else f"{stage}/r2/{name}"
            self.log(key, float(acc[i] if bool(self.is_binary[i]) else r2[i]))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
