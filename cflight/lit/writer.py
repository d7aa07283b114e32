"""CounterfactualWriter: atomic per-rank shards keyed by dataset index, resumable, assembled on rank 0."""
from __future__ import annotations

import glob
import os
import time
import zlib
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from cflight.lit import results as R
from cflight.viz.attribution import attribution_bar_chart
from cflight.viz.gallery import render_html, render_png


def shard_name(index: Tensor) -> str:
    """A name fixed by the set of dataset indices in the shard (so a rerun finds the same file)."""
    idx = index.long().sort().values
    crc = zlib.crc32(idx.numpy().tobytes())
    return f"shard-{int(idx[0]):09d}-{int(idx[-1]):09d}-{len(idx)}-{crc:08x}.pt"


class CounterfactualWriter(BasePredictionWriter):
    """Writes each predict batch's results to ``<output_dir>/shards/`` and assembles the job's outputs.

    Every rank writes its own shards (temp file + rename, so a partial shard is never visible under its
    final name). At setup the finished shards are read and their indices handed to the module as
    ``skip_indices``, so an interrupted job rerun into the same directory recomputes nothing finished.
    After the loop, rank 0 writes ``results.csv``, ``metrics.json``, ``gallery.png`` and ``gallery.html``
    and logs them to every attached logger (W&B: gallery image, results table, metrics).

    Args:
        output_dir: the job's output directory.
        gallery_size: images shown in the gallery (the first ones by dataset index).
    """

    def __init__(self, output_dir: str = "outputs/explain", gallery_size: int = 16) -> None:
        super().__init__(write_interval="batch")
        if gallery_size < 0:
            raise ValueError(f"gallery_size must be >= 0, got {gallery_size}")
        self.output_dir = output_dir
        self.gallery_size = gallery_size
        self.shard_dir = os.path.join(output_dir, "shards")
        self._start = 0.0
        self._computed = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        os.makedirs(self.shard_dir, exist_ok=True)
        if trainer.is_global_zero:
            for stale in glob.glob(os.path.join(self.shard_dir, "*.tmp")):
                os.remove(stale)  # left by a killed run; never a finished shard
        done = R.read_shard_indices(self.shard_dir)
        if hasattr(pl_module, "skip_indices"):
            pl_module.skip_indices = done

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start, self._computed = time.perf_counter(), 0

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        if not prediction:
            return
        path = os.path.join(self.shard_dir, shard_name(prediction["index"]))
        tmp = f"{path}.{trainer.global_rank}.tmp"
        torch.save(prediction, tmp)
        os.replace(tmp, path)
        self._computed += len(prediction["index"])

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        computed = int(trainer.strategy.reduce(torch.tensor(float(self._computed)), reduce_op="sum"))
        trainer.strategy.barrier("cflight-writer")
        if trainer.is_global_zero:
            self.assemble(trainer, getattr(pl_module, "class_names", None), seconds, computed,
                          getattr(pl_module, "descriptor_names", None), getattr(pl_module, "standardize_descriptors", False))
        trainer.strategy.barrier("cflight-writer-done")

    def assemble(self, trainer: Trainer | None, class_names: list[str] | None, seconds: float, computed: int,
                 names: list[str] | None = None, standardize: bool = False) -> dict[str, Any]:
        """Write the job's outputs from all finished shards; returns the metrics."""
        records = R.load_records(self.shard_dir)
        rows = R.results_rows(records, class_names)
        metrics = R.summary_metrics(records, seconds, computed)
        summary, chart = None, None
        if names and "descriptor_delta" in records:
            scores = R.descriptor_scores(records, standardize)
            R.add_top_changes(rows, scores, names)
            summary = R.global_attribution(records, scores, names, class_names)
            summary["standardized"] = standardize
            R.write_json(summary, os.path.join(self.output_dir, "global_attribution.json"))
            chart = attribution_bar_chart(summary, os.path.join(self.output_dir, "global_attribution.png"),
                                          title="Global attribution" + (" (change / std)" if standardize else ""))
        R.write_csv(rows, os.path.join(self.output_dir, "results.csv"))
        R.write_json(metrics, os.path.join(self.output_dir, "metrics.json"))
        gallery, columns = R.gallery_rows(records, rows, self.gallery_size)
        array = render_png(gallery, columns, os.path.join(self.output_dir, "gallery.png")) if gallery else None
        render_html(gallery, columns, os.path.join(self.output_dir, "gallery.html"),
                    notes=[f"{k}: {v}" for k, v in metrics.items()])
        if trainer is not None:
            self._log(trainer, metrics, rows, array, chart)
        out = os.path.abspath(self.output_dir)
        extra = ", global_attribution.json|png" if summary else ""
        print(f"cflight: explained {metrics['n']} images (validity {metrics.get('validity')}); outputs in {out}/ "
              f"(results.csv, metrics.json, gallery.png, gallery.html{extra})")
        return metrics

    @staticmethod
    def _log(trainer: Trainer, metrics: dict[str, Any], rows: list[dict[str, Any]], gallery: Any, chart: Any) -> None:
        numeric = {f"explain/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for logger in trainer.loggers:
            logger.log_metrics(numeric)
            if isinstance(logger, WandbLogger):
                if gallery is not None:
                    logger.log_image(key="explain/gallery", images=[gallery], caption=["original | ... | difference"])
                if chart is not None:
                    logger.log_image(key="explain/global_attribution", images=[chart], caption=["signed mean change"])
                if rows:
                    logger.log_table(key="explain/results", columns=list(rows[0]), data=[list(r.values()) for r in rows])
