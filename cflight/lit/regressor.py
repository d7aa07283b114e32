"""Training a cflight image regressor: MSE, AdamW, MSE/MAE torchmetrics (spec latent_and_regression §2.5)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanAbsoluteError, MeanSquaredError, MinMetric

from cflight.lit._nets import attach_net, warm_start
from cflight.validation import BadInputError


class RegressorModule(LightningModule):
    """Trains a regressor network (``[B, 1]`` outputs) on dict batches ``{"image", "target", "index"}``.

    Defaults are Ha & Bender's (spec §2.5): ``torch.nn.MSELoss`` on the scalar target, AdamW, lr 1e-5 (their
    Squares ResNet-18; their age regressor used 1e-4), AdamW's default weight decay 0.01. ``flips`` applies
    their random horizontal/vertical flips to training batches (the squares target is flip-invariant). ``train|val|test/mse`` and ``/mae`` are torchmetrics states, reduced across
    processes at epoch end.

    Regressor vs. oracle (§2.5, §2.9.4): the regressor under explanation may be a frozen pretrained backbone
    with a new linear head (``freeze_backbone=True``); the *oracle* is trained independently — another seed
    and a full fine-tune (``freeze_backbone=False``, the default). ``init_weights`` warm-starts ``net`` from
    an exported file or checkpoint of the same architecture (e.g. a pretrained regressor to fine-tune).

    :param net: registered regressor name (``"regressor_cnn"``, ``"squares_resnet18"``, ``"regressor_timm"``)
        or a module returning ``[B, 1]``.
    :param net_kwargs: constructor arguments of a named network.
    :param lr: AdamW learning rate.
    :param weight_decay: AdamW weight decay.
    :param freeze_backbone: train only ``net.head`` (the network must have a ``head`` submodule); the rest is
        kept in eval mode too, so its BatchNorm statistics do not move.
    :param init_weights: path of a regressor file/checkpoint whose weights initialise ``net``.
    :param flips: ``"none"``, ``"h"`` or ``"hv"``: each training image is flipped with probability 1/2 per
        axis (``"h"``: RandomHorizontalFlip, the age regressor; ``"hv"``: the Squares ResNet-18).
    """

    def __init__(self, net: str | nn.Module = "regressor_cnn", net_kwargs: dict[str, Any] | None = None,
                 lr: float = 1e-5, weight_decay: float = 0.01, freeze_backbone: bool = False,
                 init_weights: str | None = None, flips: str = "none") -> None:
        super().__init__()
        if not lr > 0:
            raise BadInputError(f"lr must be > 0, got {lr!r}")
        if weight_decay < 0:
            raise BadInputError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if flips not in ("none", "h", "hv"):
            raise BadInputError(f"flips must be 'none', 'h' or 'hv', got {flips!r}")
        self.save_hyperparameters(ignore=["net"])
        self.net = attach_net(self, net, net_kwargs, "regressor")
        if init_weights is not None:
            warm_start(self.net, init_weights, "regressor")
        if freeze_backbone:
            head = getattr(self.net, "head", None)
            if not isinstance(head, nn.Module):
                raise BadInputError(f"freeze_backbone needs a network with a 'head' submodule; "
                                    f"{type(self.net).__name__} has none")
            self.net.requires_grad_(False)
            head.requires_grad_(True)
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_mse", MeanSquaredError())
            setattr(self, f"{stage}_mae", MeanAbsoluteError())
        self.train_min, self.train_max = MinMetric(), MaxMetric()
        self.target_range: tuple[float, float] | None = None  # (min, max) of the training targets

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """A frozen backbone stays in eval mode (BatchNorm statistics and dropout fixed: a true linear probe).

        Per batch, since Lightning restores each submodule's own mode around validation.
        """
        if self.hparams.freeze_backbone:
            self.net.eval()
            self.net.head.train()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    @staticmethod
    def loss(pred: Tensor, target: Tensor) -> Tensor:
        """``MSELoss`` (batch mean) of ``pred`` ``[B, 1]`` against ``target`` ``[B]`` or ``[B, 1]``."""
        if pred.ndim != 2 or pred.shape[1] != 1:
            raise BadInputError(f"a regressor must output [B, 1], got {tuple(pred.shape)}")
        return F.mse_loss(pred.squeeze(1), target.reshape(-1).to(pred.dtype))

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        if "target" not in batch:
            raise BadInputError(f"RegressorModule needs batches with a 'target' value; got keys "
                                f"{sorted(batch)}")
        x = batch["image"]
        if stage == "train" and self.hparams.flips != "none":
            x = self._flip(x)
        pred = self(x)
        target = batch["target"].reshape(-1).to(pred.dtype)
        loss = self.loss(pred, target)
        mse, mae = getattr(self, f"{stage}_mse"), getattr(self, f"{stage}_mae")
        mse(pred.detach().squeeze(1), target)
        mae(pred.detach().squeeze(1), target)
        self.log(f"{stage}/mse", mse, on_step=False, on_epoch=True, prog_bar=stage != "train")
        self.log(f"{stage}/mae", mae, on_step=False, on_epoch=True, prog_bar=True)
        if stage == "train":
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _flip(self, x: Tensor) -> Tensor:
        """Random per-image flips of ``x`` ``[B, C, H, W]`` (on its device, from the global seeded generator)."""
        dims = [3] if self.hparams.flips == "h" else [3, 2]
        for dim in dims:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(dim), x)
        return x

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if "target" in batch:  # the range of values the regressor is trained on (explanation jobs check targets)
            t = batch["target"].detach().reshape(-1).float()
            self.train_min(t)
            self.train_max(t)
        return self._step(batch, "train")

    def on_train_epoch_end(self) -> None:
        # reduced over every process (torchmetrics' sync, on the module's device): all ranks call compute()
        if self.train_min.update_called:
            self.target_range = (float(self.train_min.compute()), float(self.train_max.compute()))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.target_range is not None:
            checkpoint["target_range"] = list(self.target_range)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("target_range") is not None:
            self.target_range = tuple(float(v) for v in checkpoint["target_range"])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"index": batch["index"].cpu(), "prediction": self(batch["image"]).cpu()}

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
