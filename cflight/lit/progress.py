"""The progress bar of an explanation job: images explained, successes so far and the running validity.

``predict_step`` cannot ``self.log``; the bar reads each batch's outputs (``ExplainModule.predict_step``'s
rows: ``index``, ``valid``) in ``on_predict_batch_end``. The counts are this process's (rank 0's bar is the
one shown); metrics.json has the reduced values. :class:`~cflight.lit.CounterfactualWriter` installs the bar
in place of Lightning's default one, so a job needs no config for it.
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar


class ExplainCounts:
    """Running counts over predict outputs: images, (image, target) rows, valid rows; ``resumed``: images an
    earlier run finished (skipped now)."""

    def __init__(self, resumed: int = 0) -> None:
        self.images = self.rows = self.valid = 0
        self.resumed = resumed

    def update(self, outputs: Any) -> None:
        if not isinstance(outputs, dict) or "index" not in outputs:
            return  # a batch of finished (resumed) or skipped images
        self.rows += len(outputs["index"])
        self.images += len(torch.unique(outputs["index"]))
        if "valid" in outputs:
            self.valid += int(outputs["valid"].sum())

    def postfix(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resumed": self.resumed} if self.resumed else {}
        out["images"] = self.images
        if self.rows != self.images:
            out["targets"] = self.rows
        out["valid"] = self.valid
        out["validity"] = f"{self.valid / self.rows:.3f}" if self.rows else "-"
        return out


class ExplainProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar whose predict bar also shows :class:`ExplainCounts`."""

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.counts = ExplainCounts()

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        # the writer (an earlier callback) has already set the finished images to skip
        self.counts = ExplainCounts(len(getattr(pl_module, "skip_indices", ()) or ()))

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self.counts.update(outputs)
        if self._predict_progress_bar is not None:
            self.predict_progress_bar.set_postfix(self.counts.postfix(), refresh=False)  # super() refreshes
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)


def install_progress_bar(trainer: Trainer, pl_module: LightningModule, stage: str) -> ExplainProgressBar | None:
    """Replace the Trainer's default tqdm bar (exactly :class:`TQDMProgressBar`, as Lightning adds it) by an
    :class:`ExplainProgressBar` with the same settings; a bar the user chose, or none, is left alone."""
    for k, cb in enumerate(trainer.callbacks):
        if type(cb) is TQDMProgressBar:
            bar = ExplainProgressBar(cb.refresh_rate, cb.process_position, cb._leave)
            if not cb.is_enabled:
                bar.disable()
            trainer.callbacks[k] = bar  # in place: Lightning may be iterating over this list
            bar.setup(trainer, pl_module, stage)
            return bar
        if isinstance(cb, ExplainProgressBar):
            return cb
    return None
