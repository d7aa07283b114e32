"""CounterfactualWriter: durable per-rank shards keyed by dataset index, resumable, assembled by streaming."""
from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor, nn

from cflight.attribution.global_attribution import GlobalAttribution, summarise
from cflight.lit import job_gallery as G
from cflight.lit import results as R
from cflight.lit.assembly import ShardPlan, iter_share, kept_rows, make_plan, rows_in_index_order
from cflight.lit.fingerprint import describe_job, fingerprint, first_dataset
from cflight.lit.job import JobDirectory, JobMismatch
from cflight.lit.job_gallery import GalleryKind
from cflight.lit.loggers import log_explanation, run_hint
from cflight.lit.progress import install_progress_bar
from cflight.lit.shards import IMAGE_KEYS, SLOT, UNREADABLE, row_shapes, shard_name, write_shard
from cflight.metrics import LPIPS, MNAC, FrechetDistance, KernelDistance, PenultimateFeatures, lpips_network
from cflight.metrics.summary import CounterfactualSummary, DescriptorMoments, DifferenceMeans
from cflight.models.registry import load_net
from cflight.types import IMAGE, predicted_class
from cflight.validation import check_model_input
from cflight.viz.attribution import attribution_bar_chart
from cflight.viz.gallery import GalleryRow, difference_map, render_png, render_png_pages, to_uint8
from cflight.viz.html import HtmlGallery
from cflight.viz.progression import progression_strip

__all__ = ["CounterfactualWriter", "JobMismatch", "shard_name"]

FID_BATCH = 256  # images per feature-network forward when computing FID
WANDB_TABLE_ROWS = 10_000  # rows of results.csv also logged as a W&B table (the csv has them all)
FID_NOTE = ("fid: Frechet distance between the fid_feature_net penultimate features of the fid_n counterfactuals "
            "and of the same fid_n explained originals (not a held-out set, not Inception features: compare only "
            "runs with the same feature net and n). With few images (n not much larger than the feature "
            "dimension) it is biased upward and noisy.")
FID_PROTOCOL = ("fid_successful, kid_successful: ACE's protocol (Jeanneret et al. 2023): real = all fid_n explained "
                "originals, counterfactuals = the fid_successful_n valid ones, in fid_feature_net's penultimate "
                "features; KID as torchmetrics' KernelInceptionDistance (cubic kernel, kid_subsets subsets of "
                "min(1000, set sizes)) in the same features. Compare only runs with the same feature net and n.")
MNAC_PROTOCOL = ("mnac: mean number of the mnac_attributes model's attributes that differ between an explained "
                 "original and its counterfactual, over the mnac_n valid counterfactuals (ACE's protocol, all "
                 "attributes counted); {rule}. mnac_change_rate: the share of those counterfactuals changing each.")
MNAC_STD_RULE = ("continuous attributes count as changed when |a(x') - a(x)| > {t:g} x their standard deviation "
                 "over the explained originals (a project choice: no paper defines MNAC for continuous descriptors)")
MNAC_BINARY_RULE = "an attribute counts as changed when its decision at {t:g} flips"
DISTANCE_NOTE = ("mean_l1, mean_l1_5, mean_l2, mean_linf: unnormalised l_p norms of x' - x over all C*H*W values "
                 "of an image in [0, 1], averaged over rows; sparsity: the mean share of pixel positions whose "
                 "largest channel change exceeds 0.01 (lower is sparser; cflight.metrics.changed_fraction).")
LPIPS_NOTE = ("mean_lpips: LPIPS v0.1 (Zhang et al. 2018) between each explained original and its counterfactual, "
              "averaged over rows (lower: perceptually closer), with the lpips_backbone features and linear "
              "weights the user gave (cflight.metrics.LPIPS).")
COST_NOTE = ("seconds_per_image: the job's wall time (first batch to last shard) / images computed in this run. "
             "method_seconds_per_image: time inside the method's calls, summed over processes, / the rows they "
             "explained (cost_rows). evaluations_per_image: batch rows through each network's forward (a call of "
             "forward, decode or encode) and backward per explained row, inside the method's calls only (not the "
             "job's scoring of the results, nor the oracle, descriptor or feature nets); evaluation_calls: the "
             "calls themselves. peak_memory_mb: see peak_memory_source (cuda_max_memory_allocated on a GPU; on "
             "the CPU process_peak_rss_in_blocks, the whole process's resident memory with its peak reset when "
             "each method call starts (Linux), or process_max_rss, its peak since the process started, an upper "
             "bound). All cover only the rows "
             "computed in this run (cost_covers), not rows resumed from earlier shards.")


class CounterfactualWriter(BasePredictionWriter):
    """Writes each predict batch's results to ``<output_dir>/shards/`` and assembles the job's outputs.

    **Shards.** Every rank writes its own shards durably (temp file, fsync, rename), images as uint8, each
    tensor with a CRC-32 and the job's fingerprint (:mod:`cflight.lit.fingerprint`: weights, method and
    policy hyper-parameters, seed, dataset, precision — not batch size or device count). A rerun into the
    same directory recomputes only the missing images; a rerun of *another* job there is refused with one
    line (``on_mismatch="error"``) or goes to the first free ``<output_dir>-<k>`` (``"new"``). A corrupt
    shard (truncated, damaged) is moved to ``shards/corrupt/`` and its images are recomputed.

    **Assembly** streams the shards (never all records in memory): every process reduces its share into
    torchmetrics states on the module's device (validity, distances, descriptor moments, global
    attribution, FID features), then rank 0 walks the rows in index order for ``results.csv`` and
    ``gallery.html`` (every row with its numbers, sortable; pages under ``gallery_html/`` for big jobs) and
    writes ``metrics.json``, ``gallery.png`` (``gallery_size`` cards in a grid, chosen across source → target
    groups and successes / failures by a first pass over the small columns, :mod:`cflight.lit.selection`),
    ``global_attribution.json|png`` and ``unreadable.csv`` (images skipped because their files could not be
    read), and logs them to every attached logger (W&B: the gallery, a table of examples with their images,
    the results table, the attribution as a bar chart, metrics as run summary values).

    **Progress.** For ``predict`` the writer swaps Lightning's default tqdm bar for an
    :class:`~cflight.lit.progress.ExplainProgressBar` (images done, valid so far, running validity); the job
    ends with a short summary: validity, median steps, where the outputs and the W&B run are.

    With ``fid_feature_net`` set, metrics.json also gets ``fid``: the Fréchet distance (Heusel et al. 2017)
    between the counterfactuals and the **explained originals** in that network's penultimate features
    (:class:`~cflight.metrics.FrechetDistance`). It measures how far the counterfactuals drift from the
    images they came from; with the few images of a typical job it is biased upward and noisy (``fid_note``
    says so). With a :class:`~cflight.methods.MethodComparison` every method gets ``methods.<name>.fid``.

    A job that fails before its first shard leaves nothing behind: the output directory is removed if this
    run created it.

    Args:
        output_dir: the job's output directory (on a filesystem every node sees, for multi-node jobs).
        gallery_size: images shown in ``gallery.png`` (pages of at most 60 cards: ``gallery_2.png`` …).
        fid_feature_net: a classifier (module, or path of a cflight checkpoint) for FID; ``None``: no FID.
        image_format: ``"uint8"`` (default) or ``"float32"`` storage of images in shards.
        save_images: also write each original and counterfactual as PNG under ``images/`` (browsable).
        on_mismatch: ``"error"`` or ``"new"`` when ``output_dir`` holds another job's shards.
        min_free_mb: refuse to start when the output filesystem has less free space than this.
        mnac_attributes: an oracle attribute / descriptor model (module or descriptor checkpoint path, e.g.
            :class:`~cflight.models.descriptors.MorphometricDescriptors` on MNIST) for ``mnac``
            (:class:`~cflight.metrics.MNAC`); ``None``: no MNAC.
        mnac_threshold: binary attributes (probabilities): changed when the decision at this value flips;
            ``None`` (default): continuous attributes, see ``mnac_std_threshold``.
        mnac_std_threshold: continuous attributes count as changed above this many standard deviations (over
            the explained originals).
        kid_subsets: KID subsets (with ``fid_feature_net``).
        lpips: ``{backbone, backbone_weights, lpips_weights}`` (:func:`~cflight.metrics.lpips_network`) or an
            :class:`~cflight.metrics.LPIPSNetwork` for ``mean_lpips``; ``None`` or no weight files: no LPIPS.

    metrics.json also holds the method's cost (:meth:`ExplainModule.cost_summary
    <cflight.lit.ExplainModule.cost_summary>`: ``evaluations_per_image``, ``method_seconds_per_image``,
    ``peak_memory_mb``, see ``cost_note``), ``skipped`` rows per reason and the protocols of its metrics.
    """

    def __init__(self, output_dir: str = "outputs/explain", gallery_size: int = 16,
                 fid_feature_net: nn.Module | str | None = None, image_format: str = "uint8",
                 save_images: bool = False, on_mismatch: str = "error", min_free_mb: float = 64.0,
                 mnac_attributes: nn.Module | str | None = None, mnac_threshold: float | None = None,
                 mnac_std_threshold: float = 0.5, kid_subsets: int = 100,
                 lpips: nn.Module | dict[str, str] | None = None) -> None:
        super().__init__(write_interval="batch")
        if gallery_size < 0:
            raise ValueError(f"gallery_size must be >= 0, got {gallery_size}")
        if image_format not in ("uint8", "float32"):
            raise ValueError(f"image_format must be 'uint8' or 'float32', got {image_format!r}")
        if on_mismatch not in ("error", "new"):
            raise ValueError(f"on_mismatch must be 'error' or 'new', got {on_mismatch!r}")
        self.job = JobDirectory(output_dir, min_free_mb=min_free_mb)
        self.gallery_size = gallery_size
        self.image_dtype = torch.uint8 if image_format == "uint8" else torch.float32
        self.save_images = save_images
        self.on_mismatch = on_mismatch
        self.config_text: str | None = None  # the resolved CLI config, set by the CLI; saved as config.yaml
        self.fid_source: str | None = None  # what metrics.json names as the feature net
        if isinstance(fid_feature_net, str):
            self.fid_source, fid_feature_net = fid_feature_net, load_net(fid_feature_net, expected_kind="classifier")
        elif fid_feature_net is not None:
            self.fid_source = type(fid_feature_net).__name__
        self.fid_features = None if fid_feature_net is None else PenultimateFeatures(fid_feature_net)
        self.mnac_source: str | None = None
        if isinstance(mnac_attributes, str):
            self.mnac_source, mnac_attributes = mnac_attributes, load_net(mnac_attributes, expected_kind="descriptor")
        elif mnac_attributes is not None:
            self.mnac_source = type(mnac_attributes).__name__
        self.mnac_attributes = None if mnac_attributes is None else mnac_attributes.eval().requires_grad_(False)
        if mnac_std_threshold < 0 or kid_subsets < 1:
            raise ValueError(f"mnac_std_threshold must be >= 0 and kid_subsets >= 1, got {mnac_std_threshold}, "
                             f"{kid_subsets}")
        self.mnac_threshold, self.mnac_std_threshold, self.kid_subsets = mnac_threshold, mnac_std_threshold, kid_subsets
        if isinstance(lpips, dict) and set(lpips) - {"backbone", "backbone_weights", "lpips_weights"}:
            raise ValueError(f"lpips takes the keys backbone, backbone_weights, lpips_weights; got {sorted(lpips)}")
        self.lpips_net = lpips_network(**lpips) if isinstance(lpips, dict) else lpips
        self._fid_checked = False
        self._start = 0.0
        self._computed = 0
        self._fingerprint = ""

    @property
    def output_dir(self) -> str:
        return self.job.path

    @property
    def shard_dir(self) -> str:
        return self.job.shard_dir

    # ------------------------------------------------------------------------------------------ lifecycle
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.job.check_writable()  # before any work: an unwritable or full output filesystem
        if stage == "predict":  # images done, successes and running validity in Lightning's default bar
            install_progress_bar(trainer, pl_module, stage)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start, self._computed, self._fid_checked = time.perf_counter(), 0, False
        description = describe_job(pl_module, first_dataset(trainer.predict_dataloaders), str(trainer.precision))
        self._fingerprint = fingerprint(description)
        if self.on_mismatch == "new":
            self.job = self.job.first_compatible(self._fingerprint)
        self.job.check_compatible(self._fingerprint, description)  # every rank: the same verdict, no hang
        if trainer.is_global_zero:
            self.job.remove_stale_temp()
            for path, reason in self.job.set_aside_corrupt():
                print(f"cflight: shard {os.path.basename(path)} is corrupt ({reason}); moved to shards/corrupt/, "
                      "its images are recomputed")
        trainer.strategy.barrier("cflight-writer-scan")
        self.job.description = description
        if hasattr(pl_module, "skip_indices"):
            pl_module.skip_indices = self.job.done_indices()

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
        rows = {k: v for k, v in prediction.items() if k != UNREADABLE}
        unreadable = prediction.get(UNREADABLE)
        index = rows.get("index", torch.zeros(0, dtype=torch.long))
        every = index if unreadable is None else torch.cat([index, unreadable.long()])
        if not len(every):
            return
        self.job.create(self.config_text, is_global_zero=trainer.is_global_zero, fingerprint=self._fingerprint)
        write_shard(os.path.join(self.shard_dir, shard_name(every)), rows, self._fingerprint, unreadable,
                    self.image_dtype, suffix=f".{trainer.global_rank}")
        if self.save_images and len(index):
            self._save_pngs(rows)
        self._computed += len(every)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero:
            self.job.remove_if_empty()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        device = pl_module.device
        # Collectives take tensors on the module's device: NCCL rejects CPU tensors.
        count = torch.tensor(float(self._computed), device=device)
        computed = int(trainer.strategy.reduce(count, reduce_op="sum"))
        # collectives (every rank, in this order): this run's method cost and the rows the module skipped
        cost = pl_module.cost_summary() if callable(getattr(pl_module, "cost_summary", None)) else None
        skipped = pl_module.skipped_counts() if callable(getattr(pl_module, "skipped_counts", None)) else None
        trainer.strategy.barrier("cflight-writer")
        plan = make_plan(self.job.infos())
        reduced = self.reduce(plan, pl_module, trainer.global_rank, trainer.world_size, device)
        reduced.update(cost=cost, skipped=skipped)
        if trainer.is_global_zero:
            self.job.create(self.config_text, is_global_zero=True, fingerprint=self._fingerprint)
            self.assemble(plan, reduced, pl_module, seconds, computed, trainer)
        trainer.strategy.barrier("cflight-writer-done")

    # ------------------------------------------------------------------------------------------- reduce
    def reduce(self, plan: ShardPlan, pl_module: LightningModule, rank: int, world_size: int,
               device: torch.device) -> dict[str, Any]:
        """Every process reduces its share of the rows into metrics; each returns the same values.

        Collective: under DDP every process must call this, with the same ``plan``.
        """
        methods = list(getattr(pl_module, "method_names", []))
        names = list(getattr(pl_module, "descriptor_names", []) or [])
        columns = list(getattr(pl_module, "summary_columns", R.SUMMARY_COLUMNS["classification"]))
        summary = CounterfactualSummary(columns, max(len(methods), 1)).to(device)
        moments = DescriptorMoments(len(names)).to(device) if names else None
        fid_keys = {None: "x_cf", **{name: R.method_key(name, "x_cf") for name in methods[1:]}}
        valid_keys = {None: "valid", **{name: R.method_key(name, "valid") for name in methods[1:]}}
        extractor = self.fid_features.to(device) if self.fid_features is not None else None
        given = None if extractor is None else _GivenFeatures(extractor.num_features)
        # per method: FID of all counterfactuals, and ACE's FID/KID of the valid ones (real: all originals)
        fids = ({m: FrechetDistance(given, penultimate=False).to(device) for m in fid_keys} if given else {})
        fids_ok = ({m: FrechetDistance(given, penultimate=False).to(device) for m in fid_keys} if given else {})
        kids = ({m: KernelDistance(given, subsets=self.kid_subsets, penultimate=False).to(device) for m in fid_keys}
                if given else {})
        attrs = self.mnac_attributes.to(device) if self.mnac_attributes is not None else None
        attr_cache: list[tuple[Tensor, dict[str | None, Tensor], dict[str | None, Tensor]]] = []
        keys = ["target_class", *[R.method_key(n, k) if i else k for i, n in enumerate(methods or [None])
                                  for k in columns]]
        keys += ["descriptors_before"] if names else []
        keys += [IMAGE, "index", *fid_keys.values(), *valid_keys.values()] if fids or attrs is not None else []
        for records in iter_share(plan, keys, rank, world_size):
            summary.update(R.method_columns(records, methods, columns), records["target_class"])
            if moments is not None:
                moments.update(records["descriptors_before"])
            for start in range(0, len(records["target_class"]) if fids else 0, FID_BATCH):
                part = slice(start, start + FID_BATCH)
                real = extractor(records[IMAGE][part].to(device))
                index = records["index"][part].to(device)
                for m, key in fid_keys.items():
                    fake = extractor(records[key][part].to(device))
                    ok = records[valid_keys[m]][part].to(device).bool()
                    fids[m].update(real, real=True)
                    fids[m].update(fake, real=False)
                    fids_ok[m].update(real, real=True)
                    fids_ok[m].update(fake[ok], real=False)
                    kids[m].update(real, real=True, index=index)
                    kids[m].update(fake[ok], real=False, index=index[ok])
            if attrs is not None:  # small [N, K] values, kept until the originals' spread is known
                with torch.no_grad():
                    before = attrs(records[IMAGE].to(device)).double()
                    after = {m: attrs(records[key].to(device)).double() for m, key in fid_keys.items()}
                attr_cache.append((before, after, {m: records[k].to(device).bool() for m, k in valid_keys.items()}))
        out: dict[str, Any] = {"summary": _quiet_compute(summary), "fid": {m: _compute_fid(f) for m, f in fids.items()},
                               "fid_successful": {m: _compute_fid(f) for m, f in fids_ok.items()},
                               "kid_successful": {m: _compute_kid(k) for m, k in kids.items()}}
        if attrs is not None:
            out["mnac"] = self._mnac(attr_cache, list(fid_keys), device)
        if self.lpips_net is not None:
            out["lpips"] = self._lpips(plan, fid_keys, rank, world_size, device)
        slots = int(getattr(getattr(pl_module, "target_policy", None), "targets_per_image", 1))
        if slots > 1 and plan.n_rows:
            out["difference_by_target"] = self._difference_by_target(plan, slots, rank, world_size, device)
        if moments is not None:
            stats = _quiet_compute(moments)
            standardize = getattr(pl_module, "standardize_descriptors", False) and int(stats["n"]) > 1
            out["std"] = stats["std"].cpu() if standardize else None
            out["attribution"] = self._attribution(plan, names, out["std"], int(out["summary"]["max_target"]),
                                                   rank, world_size, device, getattr(pl_module, "task", ""))
        return out

    def _mnac(self, cache: list[tuple[Tensor, dict[str | None, Tensor], dict[str | None, Tensor]]],
              methods: list[str | None], device: torch.device) -> dict[str | None, dict[str, Any]]:
        """MNAC of each method over its valid rows (collective: the originals' spread, then the counts)."""
        local = cache[0][0].shape[1] if cache else 0
        # a process without rows learns K from the others: every process builds states of one shape
        width = max(int(_reduce_max(torch.tensor(float(local), device=device))), 1)
        spread = DescriptorMoments(width).to(device)
        for before, _, _ in cache:
            spread.update(before)
        std = _quiet_compute(spread)["std"].cpu() if self.mnac_threshold is None else None
        threshold = 0.5 if self.mnac_threshold is None else self.mnac_threshold
        out: dict[str | None, dict[str, Any]] = {}
        for m in methods:
            metric = MNAC(width, threshold=threshold, std=std, std_threshold=self.mnac_std_threshold).to(device)
            for before, after, ok in cache:
                metric.update(before[ok[m]], after[m][ok[m]])
            result = _quiet_compute(metric)
            n = int(result["n"])
            out[m] = {"mnac": float(result["mnac"]) if n else None, "n": n,
                      "change_rate": [round(float(v), 6) for v in result["change_rate"]] if n else None}
        return out

    def _lpips(self, plan: ShardPlan, cf_keys: dict[str | None, str], rank: int, world_size: int,
               device: torch.device) -> dict[str | None, float | None]:
        """Mean LPIPS of each method's counterfactuals to their originals (collective: its own pass over the
        shards, then every process computes the summed states)."""
        net = self.lpips_net.to(device)
        metrics = {m: LPIPS(net).to(device) for m in cf_keys}
        for records in iter_share(plan, [IMAGE, *cf_keys.values()], rank, world_size):
            for start in range(0, len(records[IMAGE]), FID_BATCH):
                part = slice(start, start + FID_BATCH)
                for m, key in cf_keys.items():
                    metrics[m].update(records[IMAGE][part].to(device), records[key][part].to(device))
        values = {m: float(_quiet_compute(metric)) for m, metric in metrics.items()}
        return {m: v if v == v else None for m, v in values.items()}  # NaN (no rows) → null

    @staticmethod
    def _difference_by_target(plan: ShardPlan, slots: int, rank: int, world_size: int,
                              device: torch.device) -> dict[str, Tensor]:
        """The mean change ``x' − x`` per target slot, reduced across processes (collective)."""
        first = next(i for i, k in enumerate(plan.keep) if len(k))
        metric = DifferenceMeans(slots, row_shapes(plan.paths[first])["image"][1:]).to(device)
        for records in iter_share(plan, ["image", "x_cf", SLOT], rank, world_size):
            metric.update((records["x_cf"] - records["image"]).to(device), records[SLOT].to(device))
        return {k: v.cpu() for k, v in _quiet_compute(metric).items()}

    @staticmethod
    def _attribution(plan: ShardPlan, names: Sequence[str], std: Tensor | None, max_target: int, rank: int,
                     world_size: int, device: torch.device, task: str = "") -> dict[str, Tensor] | None:
        """The global attribution (spec §1.6.4) reduced across processes (collective). A regressor's rows have
        no classes: they aggregate overall and per direction of the change (increase / decrease)."""
        width = kept_rows(plan, 0, ["logits"])["logits"].shape[1] if plan.n_rows else 1
        metric = GlobalAttribution(len(names), max(width, 2, max_target + 1)).to(device)
        keys = ["descriptor_delta", "direction", "logits", "target_class", "global_include"]
        for records in iter_share(plan, keys, rank, world_size):
            target = records["target_class"].long()
            source = torch.zeros_like(target) if task == "regression" else predicted_class(records["logits"])
            include = records.get("global_include")  # ExplainModule(global_rows=...): the rows that count
            metric.update(R.descriptor_scores(records, std).to(device), records["direction"].to(device),
                          source.to(device), target.to(device), None if include is None else include.to(device))
        result = _quiet_compute(metric)
        return {k: v.cpu() for k, v in result.items()} if plan.n_rows else None

    # ---------------------------------------------------------------------------------------- assemble
    def assemble(self, plan: ShardPlan, reduced: dict[str, Any], pl_module: LightningModule, seconds: float,
                 computed: int, trainer: Trainer | None = None) -> dict[str, Any]:
        """Rank 0: write the job's outputs from the plan and the reduced metrics; returns the metrics."""
        methods = list(getattr(pl_module, "method_names", []))
        class_names = getattr(pl_module, "class_names", None)
        names = list(getattr(pl_module, "descriptor_names", []) or [])
        out_dir = self.output_dir
        regression = getattr(pl_module, "task", "") == "regression"
        values = list(getattr(getattr(pl_module, "target_policy", None), "values", []) or [])
        kind = GalleryKind(tuple(methods), regression, tuple(values))
        chosen = G.choose(plan, kind, self.gallery_size)  # across classes/targets and outcomes, reading order
        gallery_keys = set(chosen)
        images = G.ShardImages(plan, kind.image_keys())
        html = HtmlGallery(os.path.join(out_dir, "gallery.html"), [], title=f"cflight: {os.path.basename(out_dir)}")
        html_rows = G.HtmlRows(html, kind)
        gallery: dict[int, tuple[dict[str, Any], dict[str, Tensor]]] = {}
        where: dict[int, tuple[int, int]] = {}  # gallery row → (shard, kept position)
        scalar_keys = self._scalar_keys(plan)

        def load(i: int) -> list[tuple[int, dict[str, Any], int, int]]:
            records = kept_rows(plan, i, scalar_keys)
            rows = R.regression_rows(records, methods) if regression else R.results_rows(records, class_names, methods)
            rows = R.add_paths(rows, getattr(pl_module, "sample_paths", None))  # folder data: file per row
            if names and "descriptor_delta" in records:
                for row, text in zip(rows, R.top_changes(R.descriptor_scores(records, reduced.get("std")), names)):
                    row["top_changes"] = text
            return [(key, row, i, j) for j, (key, row) in enumerate(zip(plan.kept_keys[i].tolist(), rows))]

        csv = R.CsvRows(os.path.join(out_dir, "results.csv"))
        steps: list[list[int]] = [[] for _ in (methods or [None])]
        table: list[dict[str, Any]] = []
        table_rows = WANDB_TABLE_ROWS if trainer is not None and trainer.loggers else 0
        n_images, last = 0, None  # distinct images (a row is an (image, target) pair)
        for key, row, i, j in rows_in_index_order(plan, load):
            csv.write(row)
            n_images, last = n_images + (row["index"] != last), row["index"]
            imgs = images.row(i, j)
            html_rows.add(row, imgs)
            if key in gallery_keys:  # a copy: a view would keep its whole shard's images alive
                gallery[key] = (row, {k: v.clone() for k, v in imgs.items()})
                where[key] = (i, j)
            for m, name in enumerate(methods or [None]):
                steps[m].append(row[R.method_key(name, "steps") if m else "steps"])
            if len(table) < table_rows:
                table.append(row)
        csv.close()
        html_rows.flush()
        medians = [float(statistics.median(s)) if s else 0.0 for s in steps]
        summary = reduced["summary"] if plan.n_rows else None
        columns = list(getattr(pl_module, "summary_columns", R.SUMMARY_COLUMNS["classification"]))
        metrics = R.summary_metrics(summary, columns, medians, seconds, computed, methods)
        metrics.update(fingerprint=self._fingerprint, unreadable=int(len(plan.unreadable)))
        if "sparsity" in metrics:
            metrics["distance_note"] = DISTANCE_NOTE
        if reduced.get("skipped") is not None:
            metrics["skipped"] = dict(reduced["skipped"])
        if reduced.get("cost") is not None:
            metrics.update(cost_metrics(reduced["cost"]))
        if self.fid_features is not None and metrics["n"]:
            self._add_fid(metrics, reduced, methods)
        if reduced.get("mnac") is not None and metrics["n"]:
            self._add_mnac(metrics, reduced["mnac"], methods)
        if reduced.get("lpips") is not None and metrics["n"]:
            metrics.update(mean_lpips=reduced["lpips"][None], lpips_note=LPIPS_NOTE,
                           lpips_backbone=getattr(self.lpips_net, "backbone", None))
            for k, name in enumerate(methods):
                metrics["methods"][name]["mean_lpips"] = reduced["lpips"][None if k == 0 else name]
        summary_json, chart = None, None
        if reduced.get("attribution") is not None:
            summary_json = summarise(reduced["attribution"], names, class_names)
            summary_json["standardized"] = reduced.get("std") is not None
            R.write_json(summary_json, os.path.join(out_dir, "global_attribution.json"))
            title = "Global attribution" + (" (change / std)" if summary_json["standardized"] else "")
            chart = attribution_bar_chart(summary_json, os.path.join(out_dir, "global_attribution.png"), title=title)
        heat = None
        if reduced.get("difference_by_target") is not None:
            heat = self._render_difference_by_target(reduced["difference_by_target"], values,
                                                     os.path.join(out_dir, "difference_by_target.png"))
        if len(plan.unreadable):
            csv_unread = R.CsvRows(os.path.join(out_dir, "unreadable.csv"))
            for idx in plan.unreadable.tolist():
                csv_unread.write({"index": idx})
            csv_unread.close()
        R.write_json(metrics, os.path.join(out_dir, "metrics.json"))
        picked = [gallery[k] for k in chosen if k in gallery]
        g_rows, g_columns = kind.cards(*G.stack(picked)) if picked else ([], [])
        header = self._gallery_header(metrics, g_rows, kind, n_images)
        pages = render_png_pages(g_rows, g_columns, os.path.join(out_dir, "gallery.png"), header) if g_rows else []
        progression = self._progression(plan, [where[k] for k in chosen if k in where],
                                        os.path.join(out_dir, "progression.png"),
                                        [f"{r.get('prediction')} → {r.get('target')}" for r, _ in picked])
        html.notes = [f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in _flatten(metrics).items()]
        html_files = html.close()
        if trainer is not None:
            self._log(trainer, metrics, table, pages, chart, heat, G.examples(picked), summary_json)
        extra = ", global_attribution.json|png" if summary_json else ""
        extra += f", unreadable.csv ({len(plan.unreadable)} images skipped)" if len(plan.unreadable) else ""
        extra += ", difference_by_target.png" if heat is not None else ""
        extra += ", progression.png" if progression else ""
        self._print_summary(metrics, out_dir, extra, len(pages), len(html_files) - 1, trainer, n_images)
        return metrics

    @staticmethod
    def _progression(plan: ShardPlan, places: Sequence[tuple[int, int]], path: str,
                     captions: Sequence[str] = ()) -> bool:
        """``progression.png`` of the gallery's rows when the method kept snapshots (``LatentAttack(
        snapshot_every=k)``: the paper's progression figure, one row per image, one column per k steps)."""
        if not places or "snapshots" not in row_shapes(plan.paths[places[0][0]]):
            return False
        snaps, steps = [], []
        for i, j in places:
            rec = kept_rows(plan, i, ["snapshots", "snapshot_steps"], rows=torch.tensor([j]))
            snaps.append(rec["snapshots"][0])
            steps.append(rec["snapshot_steps"][0] if "snapshot_steps" in rec else None)
        # batches of the job ran to different step counts: a shorter row repeats its final snapshot (it had stopped)
        width = max(len(s) for s in snaps)
        stacked = torch.stack([torch.cat([s, s[-1:].expand(width - len(s), *s.shape[1:])]) for s in snaps])
        step_t = None
        if all(s is not None for s in steps):
            step_t = torch.stack([torch.cat([s, s[-1:].expand(width - len(s))]) for s in steps])
        progression_strip(stacked, step_t, path=path, captions=captions, max_images=len(places))
        return True

    @staticmethod
    def _scalar_keys(plan: ShardPlan) -> list[str]:
        """Keys of the per-row values results.csv is made of (not images, latents or other arrays)."""
        first = next((i for i, k in enumerate(plan.keep) if len(k)), None)
        if first is None:
            return []
        return [k for k, shape in row_shapes(plan.paths[first]).items() if len(shape) <= 2]

    def _add_fid(self, metrics: dict[str, Any], reduced: dict[str, Any], methods: Sequence[str]) -> None:
        fid, ok, kid = reduced["fid"], reduced["fid_successful"], reduced["kid_successful"]

        def realism(m: str | None, validity: float | None, n: int) -> dict[str, Any]:
            k = kid[m] or {}
            return {"fid_successful": ok[m], "fid_successful_n": int(round((validity or 0.0) * n)),
                    "kid_successful": k.get("kid"), "kid_successful_std": k.get("kid_std")}

        metrics.update(fid=fid[None], fid_n=metrics["n"], fid_feature_net=self.fid_source, fid_note=FID_NOTE,
                       **realism(None, metrics.get("validity"), metrics["n"]), kid_subsets=self.kid_subsets,
                       fid_protocol=FID_PROTOCOL)
        for k, name in enumerate(methods):
            m = None if k == 0 else name
            metrics["methods"][name].update(fid=fid[m], **realism(m, metrics["methods"][name].get("validity"),
                                                                   metrics["n"]))

    def _add_mnac(self, metrics: dict[str, Any], mnac: dict[str | None, dict[str, Any]], methods: Sequence[str]) -> None:
        rule = (MNAC_STD_RULE.format(t=self.mnac_std_threshold) if self.mnac_threshold is None
                else MNAC_BINARY_RULE.format(t=self.mnac_threshold))
        names = list(getattr(self.mnac_attributes, "names", []) or [])
        metrics.update(mnac=mnac[None]["mnac"], mnac_n=mnac[None]["n"], mnac_attributes=self.mnac_source,
                       mnac_change_rate=(dict(zip(names, mnac[None]["change_rate"])) if names and
                                         mnac[None]["change_rate"] else mnac[None]["change_rate"]),
                       mnac_protocol=MNAC_PROTOCOL.format(rule=rule))
        for k, name in enumerate(methods):
            m = mnac[None if k == 0 else name]
            metrics["methods"][name].update(mnac=m["mnac"], mnac_n=m["n"])

    def _save_pngs(self, rows: dict[str, Tensor]) -> None:
        from PIL import Image

        folder = os.path.join(self.output_dir, "images")
        os.makedirs(folder, exist_ok=True)
        for key, value in rows.items():
            if key.rsplit("/", 1)[-1] not in IMAGE_KEYS or value.ndim != 4:
                continue
            label = {"image": "original", "x_cf": "counterfactual"}.get(key, key.replace("/", "_"))
            for idx, img in zip(rows["index"].tolist(), value):
                Image.fromarray(to_uint8(img)).save(os.path.join(folder, f"{idx:09d}_{label}.png"))

    @staticmethod
    def _render_difference_by_target(diff: dict[str, Tensor], values: Sequence[float], path: str) -> Any:
        """One heat map per target value: the mean change toward it (red brighter, blue darker)."""
        mean, counts = diff["mean"], diff["counts"]
        panels = [difference_map(torch.zeros_like(m), m.float()) for m in mean]
        caps = [f"ỹ = {values[s]:g}" if s < len(values) else f"target {s}" for s in range(len(mean))]
        caps = [f"{c} (n {int(n)})" for c, n in zip(caps, counts.tolist())]
        row = GalleryRow(panels, caps, title="mean x' − x")
        return render_png([row], [f"toward {c.split(' (')[0]}" for c in caps], path)

    @staticmethod
    def _gallery_header(metrics: dict[str, Any], cards: Sequence[GalleryRow], kind: GalleryKind,
                        n_images: int) -> str:
        """Two lines over gallery.png: what the cards are, the job's headline numbers and the colour key."""
        what = "images, each toward several values" if kind.several_targets else "counterfactuals"
        total = n_images if kind.several_targets else metrics["n"]
        spread = "target values" if kind.regression else "source → target classes"
        reached = sum(bool(c.ok) for c in cards)
        head = (f"{len(cards)} of {total} {what}, spread over {spread} and outcomes "
                f"({reached} reached, {len(cards) - reached} not)")
        numbers = [f"validity {metrics['validity']:.3f}" if metrics.get("validity") is not None else "",
                   f"median steps {metrics['median_steps']:g}" if "median_steps" in metrics else ""]
        key = "difference: red = brighter, blue = darker; ✓ target reached, ✗ not"
        return "  ·  ".join([head, *(n for n in numbers if n)]) + "\n" + key

    @staticmethod
    def _print_summary(metrics: dict[str, Any], out_dir: str, extra: str, png_pages: int, html_pages: int,
                       trainer: Trainer | None, n_images: int) -> None:
        """The job's last words: headline numbers, where its outputs are and where its W&B run is."""
        validity = f"{metrics['validity']:.3f}" if metrics.get("validity") is not None else None
        fid = f", FID {metrics['fid']:.3g} vs the originals" if metrics.get("fid") is not None else ""
        oracle = (f", oracle validity {metrics['oracle_validity']:.3f}"
                  if isinstance(metrics.get("oracle_validity"), float) else "")
        steps = f", median steps {metrics['median_steps']:g}" if "median_steps" in metrics else ""
        pages = f" ({png_pages} pages)" if png_pages > 1 else ""
        html_note = f" (index of {html_pages} pages in gallery_html/)" if html_pages else ""
        what = f"{n_images} images toward {metrics['n']} targets" if n_images != metrics["n"] else f"{metrics['n']} images"
        lines = [f"cflight: explained {what} (validity {validity}{oracle}{steps}{fid})",
                 f"  outputs in {os.path.abspath(out_dir)}/ (results.csv, metrics.json, gallery.png{pages}, "
                 f"gallery.html{html_note}{extra})"]
        for logger in trainer.loggers if trainer is not None else []:
            if isinstance(logger, WandbLogger):
                lines.append("  " + run_hint(logger))
        bar = trainer.progress_bar_callback if trainer is not None else None
        if getattr(bar, "_predict_progress_bar", None) is not None:
            bar.predict_progress_bar.close()  # its last line first, then the summary on lines of its own
        print("\n".join(lines))

    @staticmethod
    def _log(trainer: Trainer, metrics: dict[str, Any], rows: list[dict[str, Any]], pages: list[Any], chart: Any,
             heat: Any = None, examples: list[Any] | None = None, attribution: dict[str, Any] | None = None) -> None:
        numeric = {f"explain/{k}": float(v) for k, v in _flatten(metrics).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for logger in trainer.loggers:
            logger.log_metrics(numeric)
            if isinstance(logger, WandbLogger):
                figures = {}
                if chart is not None:
                    figures["explain/global_attribution"] = (chart, "signed mean change")
                if heat is not None:
                    figures["explain/difference_by_target"] = (heat, "mean x' - x per target")
                log_explanation(logger, numeric, pages, examples or [], rows, attribution, figures)


class _GivenFeatures(nn.Identity):
    """Identity "feature net" for FrechetDistance: the writer extracts features once and shares them."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features


def _quiet_compute(metric: Any) -> Any:
    """``metric.compute()`` (synchronised across processes) without the warning of a process that had no rows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*before the ``update`` method")
        return metric.compute()


def _compute_fid(metric: FrechetDistance) -> float | None:
    try:
        return max(float(_quiet_compute(metric)), 0.0)  # ≥ 0 exactly; identical sets give round-off of ±1e-8
    except ValueError:  # < 2 images on a side; the reduced counts agree on every process
        return None


def _compute_kid(metric: KernelDistance) -> dict[str, float] | None:
    try:
        result = _quiet_compute(metric)
    except ValueError:  # < 2 images on a side (every process sees the same reduced sizes)
        return None
    return {"kid": float(result["kid"]), "kid_std": float(result["kid_std"]), "subset_size": int(result["subset_size"])}


def _reduce_max(value: Tensor) -> Tensor:
    """The largest ``value`` over all processes (a collective when torch.distributed runs; else itself)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        value = value.clone()
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return value


def cost_metrics(cost: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's cost keys from :meth:`ExplainModule.cost_summary` (per explained row of this run)."""
    rows = int(cost["rows"])

    def per(v: float) -> float | None:
        return round(v / rows, 6) if rows else None

    counts = cost["counts"]
    per_image = {name: {"forward": per(c["forward_samples"]), "backward": per(c["backward_samples"])}
                 for name, c in counts.items()}
    total = sum(c["forward_samples"] + c["backward_samples"] for c in counts.values())
    return {"cost_rows": rows, "cost_covers": "rows computed in this run only (computed_this_run), not rows "
            "resumed from earlier shards", "method_seconds_per_image": per(cost["method_seconds"]),
            "evaluations_per_image": per_image, "evaluations_per_image_total": per(total),
            "evaluation_calls": {name: {"forward": c["forward_calls"], "backward": c["backward_calls"]}
                                 for name, c in counts.items()},
            "peak_memory_mb": round(float(cost["peak_memory_mb"]), 1), "peak_memory_source": cost["peak_memory_source"],
            "cost_note": COST_NOTE}


def _flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"methods": {"a": {"validity": 1}}}`` → ``{"methods/a/validity": 1}``."""
    flat: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}/"))
        else:
            flat[f"{prefix}{k}"] = v
    return flat
