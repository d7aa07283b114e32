"""CounterfactualWriter: atomic per-rank shards keyed by dataset index, resumable, assembled on rank 0."""
from __future__ import annotations

import glob
import os
import time
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor, nn

from cflight.lit import results as R
from cflight.metrics import FrechetDistance, PenultimateFeatures
from cflight.models.registry import load_net
from cflight.types import IMAGE
from cflight.validation import check_model_input
from cflight.viz.attribution import attribution_bar_chart
from cflight.viz.gallery import render_html, render_png

FID_BATCH = 256  # images per feature-network forward when computing FID
FID_NOTE = ("fid: Frechet distance between the fid_feature_net penultimate features of the fid_n counterfactuals "
            "and of the same fid_n explained originals (not a held-out set, not Inception features: compare only "
            "runs with the same feature net and n). With few images (n not much larger than the feature "
            "dimension) it is biased upward and noisy.")


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

    With ``fid_feature_net`` set, metrics.json also gets ``fid``: the Fréchet distance (Heusel et al. 2017)
    between the counterfactuals and the **explained originals** in that network's penultimate features
    (:class:`~cflight.metrics.FrechetDistance`), over every finished shard; each process extracts the
    features of its share of the shards and the metric sums the moments across processes. It measures how
    far the counterfactuals drift from the distribution of the images they came from; with the few images of
    a typical job it is biased upward and noisy (``fid_note`` says so in metrics.json), so compare it only
    between runs of the same size and feature net. With a :class:`~cflight.methods.MethodComparison` every
    method gets its own ``methods.<name>.fid`` (features of the originals are extracted once).

    Args:
        output_dir: the job's output directory.
        gallery_size: images shown in the gallery (the first ones by dataset index).
        fid_feature_net: a classifier (module, or path of a cflight classifier checkpoint) whose penultimate
            features FID is computed in, e.g. ``checkpoints/mnist_classifier.pt``; ``None``: no FID.
    """

    def __init__(self, output_dir: str = "outputs/explain", gallery_size: int = 16,
                 fid_feature_net: nn.Module | str | None = None) -> None:
        super().__init__(write_interval="batch")
        if gallery_size < 0:
            raise ValueError(f"gallery_size must be >= 0, got {gallery_size}")
        self.output_dir = output_dir
        self.gallery_size = gallery_size
        self.shard_dir = os.path.join(output_dir, "shards")
        self.fid_source: str | None = None  # what metrics.json names as the feature net
        if isinstance(fid_feature_net, str):
            self.fid_source, fid_feature_net = fid_feature_net, load_net(fid_feature_net, expected_kind="classifier")
        elif fid_feature_net is not None:
            self.fid_source = type(fid_feature_net).__name__
        self.fid_features = None if fid_feature_net is None else PenultimateFeatures(fid_feature_net)
        self._fid_checked = False
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

    def on_predict_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        # A feature net that cannot read the images fails before the first batch is explained, not at the end.
        if self.fid_features is not None and not self._fid_checked and isinstance(batch, dict) and IMAGE in batch:
            check_model_input(batch[IMAGE], self.fid_features.net, name="fid_feature_net")
            self._fid_checked = True

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
        methods = list(getattr(pl_module, "method_names", []))
        fid = None
        if self.fid_features is not None:  # collective: every process takes part
            fid = self.frechet_distances(trainer.global_rank, trainer.world_size, pl_module.device, methods)
        if trainer.is_global_zero:
            self.assemble(trainer, getattr(pl_module, "class_names", None), seconds, computed,
                          getattr(pl_module, "descriptor_names", None),
                          getattr(pl_module, "standardize_descriptors", False), methods=methods, fid=fid)
        trainer.strategy.barrier("cflight-writer-done")

    def frechet_distances(self, rank: int, world_size: int, device: torch.device | str,
                          methods: Sequence[str] = ()) -> dict[str | None, float | None]:
        """FID of each method's counterfactuals against the explained originals, over all finished shards.

        Keys: ``None`` for the primary (or only) method, then the names of ``methods[1:]``; a value is ``None``
        when a side has fewer than 2 images. Under DDP every process must call this (the metric's
        ``compute`` sums the feature moments across processes).
        """
        keys = {None: "x_cf", **{name: R.method_key(name, "x_cf") for name in methods[1:]}}
        part = R.load_rank_records(self.shard_dir, rank, world_size, [IMAGE, *keys.values()])
        extractor = self.fid_features.to(device)
        shared = _GivenFeatures(extractor.num_features)
        fids = {m: FrechetDistance(shared, penultimate=False).to(device) for m in keys}
        for start in range(0, len(part.get(IMAGE, [])), FID_BATCH):
            real = extractor(part[IMAGE][start:start + FID_BATCH].to(device))
            for m, key in keys.items():
                fids[m].update(real, real=True)
                fids[m].update(extractor(part[key][start:start + FID_BATCH].to(device)), real=False)
        return {m: _compute_fid(metric) for m, metric in fids.items()}

    def assemble(self, trainer: Trainer | None, class_names: list[str] | None, seconds: float, computed: int,
                 names: list[str] | None = None, standardize: bool = False, methods: Sequence[str] = (),
                 fid: dict[str | None, float | None] | None = None) -> dict[str, Any]:
        """Write the job's outputs from all finished shards; returns the metrics.

        ``methods``: compared method names, primary first (``ExplainModule.method_names``); ``fid``: the
        output of :meth:`frechet_distances`.
        """
        records = R.load_records(self.shard_dir)
        rows = R.results_rows(records, class_names, methods)
        metrics = R.summary_metrics(records, seconds, computed, methods)
        if fid is not None and metrics["n"]:
            self._add_fid(metrics, fid, methods)
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
        gallery, columns = R.gallery_rows(records, rows, self.gallery_size, methods)
        array = render_png(gallery, columns, os.path.join(self.output_dir, "gallery.png")) if gallery else None
        render_html(gallery, columns, os.path.join(self.output_dir, "gallery.html"),
                    notes=[f"{k}: {v}" for k, v in _flatten(metrics).items()])
        if trainer is not None:
            self._log(trainer, metrics, rows, array, chart)
        out = os.path.abspath(self.output_dir)
        extra = ", global_attribution.json|png" if summary else ""
        fid = f", FID {metrics['fid']:.3g} vs the originals" if metrics.get("fid") is not None else ""
        print(f"cflight: explained {metrics['n']} images (validity {metrics.get('validity')}{fid}); "
              f"outputs in {out}/ "
              f"(results.csv, metrics.json, gallery.png, gallery.html{extra})")
        return metrics

    def _add_fid(self, metrics: dict[str, Any], fid: dict[str | None, float | None], methods: Sequence[str]) -> None:
        metrics.update(fid=fid[None], fid_n=metrics["n"], fid_feature_net=self.fid_source, fid_note=FID_NOTE)
        for k, name in enumerate(methods):
            metrics["methods"][name]["fid"] = fid[None if k == 0 else name]

    @staticmethod
    def _log(trainer: Trainer, metrics: dict[str, Any], rows: list[dict[str, Any]], gallery: Any, chart: Any) -> None:
        numeric = {f"explain/{k}": float(v) for k, v in _flatten(metrics).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for logger in trainer.loggers:
            logger.log_metrics(numeric)
            if isinstance(logger, WandbLogger):
                if gallery is not None:
                    logger.log_image(key="explain/gallery", images=[gallery], caption=["original | ... | difference"])
                if chart is not None:
                    logger.log_image(key="explain/global_attribution", images=[chart], caption=["signed mean change"])
                if rows:
                    logger.log_table(key="explain/results", columns=list(rows[0]), data=[list(r.values()) for r in rows])


class _GivenFeatures(nn.Identity):
    """Identity "feature net" for FrechetDistance: the writer extracts features once and shares them."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features


def _compute_fid(metric: FrechetDistance) -> float | None:
    with warnings.catch_warnings():  # a process whose share of the shards was empty never called update
        warnings.filterwarnings("ignore", message=".*before the ``update`` method")
        try:
            return max(float(metric.compute()), 0.0)  # ≥ 0 exactly; identical sets give round-off of ±1e-8
        except ValueError:  # < 2 images on a side; the reduced counts agree on every process
            return None


def _flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"methods": {"a": {"validity": 1}}}`` → ``{"methods/a/validity": 1}``."""
    flat: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}/"))
        else:
            flat[f"{prefix}{k}"] = v
    return flat
