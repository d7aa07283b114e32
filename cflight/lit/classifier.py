"""Training a cflight classifier: cross-entropy (or BCE for one logit), Adam, accuracy with torchmetrics."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from cflight.lit._nets import attach_net


class ClassifierModule(LightningModule):
    """Trains a classifier network on dict batches ``{"image", "label", "index"}``.

    The network is ``self.net``; with a registry name, ``net`` and ``net_kwargs`` go into the
    hyper-parameters so :func:`cflight.models.registry.load_net` rebuilds it from the checkpoint alone.
    ``num_classes=1`` networks are binary (BCE-with-logits on the 0/1 label).

    The reference MNIST classifier (spec §1.5) is ``net="mnist_cnn"`` trained 1 epoch with Adam 1e-3 and
    plain cross-entropy — the defaults here.

    :param net: registered classifier name (``"mnist_cnn"``, ``"simple_cnn"``, ``"timm:<name>"``) or a module.
    :param net_kwargs: constructor arguments of a named network.
    :param lr: Adam learning rate.
    :param weight_decay: Adam's (L2) weight decay.
    :param label_smoothing: cross-entropy label smoothing (multiclass only).
    :param scheduler: ``None`` or ``"cosine"`` (cosine annealing over ``trainer.max_epochs``, per epoch).
    """

    def __init__(self, net: str | nn.Module = "mnist_cnn", net_kwargs: dict[str, Any] | None = None,
                 lr: float = 1e-3, weight_decay: float = 0.0, label_smoothing: float = 0.0,
                 scheduler: str | None = None) -> None:
        super().__init__()
        if scheduler not in (None, "cosine"):
            raise ValueError(f"scheduler must be None or 'cosine', got {scheduler!r}")
        self.save_hyperparameters(ignore=["net"])
        self.net = attach_net(self, net, net_kwargs, "classifier")
        self.num_classes = int(getattr(self.net, "num_classes", 0) or 0)
        if self.num_classes < 1:
            raise ValueError("the classifier network must expose num_classes >= 1")
        self.binary = self.num_classes == 1
        for stage in ("train", "val", "test"):
            acc = BinaryAccuracy() if self.binary else MulticlassAccuracy(self.num_classes, average="micro")
            setattr(self, f"{stage}_acc", acc)
            setattr(self, f"{stage}_loss", MeanMetric())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def loss(self, logits: Tensor, label: Tensor) -> Tensor:
        if self.binary:
            return F.binary_cross_entropy_with_logits(logits.squeeze(1), label.float())
        return F.cross_entropy(logits, label.long(), label_smoothing=self.hparams.label_smoothing)

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self(batch["image"])
        label = batch["label"]
        loss = self.loss(logits, label)
        preds = logits.squeeze(1) if self.binary else logits
        acc, mean_loss = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_loss")
        acc(preds.detach(), label.long())
        mean_loss(loss.detach(), weight=label.shape[0])
        on_step = stage == "train"
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=not on_step)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if on_step:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        logits = self(batch["image"])
        probs = torch.sigmoid(logits) if self.binary else logits.softmax(dim=1)
        return {"index": batch["index"].cpu(), "logits": logits.cpu(), "probs": probs.cpu()}

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler is None:
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(self.trainer.max_epochs or 1)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
