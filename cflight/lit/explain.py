"""ExplainModule: an explanation job as a Lightning ``predict`` loop (DESIGN.md §3 "Lightning wiring")."""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from cflight.attribution.global_attribution import GLOBAL_ROWS, global_rows
from cflight.attribution.local import descriptor_change
from cflight.lit.results import SUMMARY_COLUMNS, method_key
from cflight.lit.shards import SLOT
from cflight.methods import functional as Fn
from cflight.methods.base import CounterfactualMethod
from cflight.methods.compare import MethodComparison
from cflight.metrics.cost import EvaluationCounter, find_networks
from cflight.metrics.distances import image_distances
from cflight.models.acceleration import channels_last_errors, to_channels_last
from cflight.models.registry import load_net
from cflight.targets import RECONSTRUCTION_LOGITS, FixedClass, SecondMostLikely, TargetPolicy
from cflight.types import IMAGE, INDEX, LABEL, MASK, READABLE, CounterfactualOutput, RegressionTarget, Target
from cflight.validation import check_images, check_model_input, check_target_range, outside_target_range


class ExplainModule(LightningModule):
    """Runs a counterfactual method over every predict batch: target policy → method → checks.

    ``predict_step`` returns a dict of detached CPU tensors, one row per explained image, that
    :class:`~cflight.lit.writer.CounterfactualWriter` stores as a shard. Images whose dataset index is in
    ``skip_indices`` (set by the writer from finished shards) are not recomputed. Rows whose batch key
    ``readable`` is False (a file the dataset could not decode; its image is a placeholder) are dropped before
    any check and their dataset indices returned as ``"unreadable"`` (``[n]`` long; the only key when no row
    was readable), so one bad file among thousands does not stop the job.

    Descriptor attributions (Goldwasser & Hooker 2025, §1.6): with ``descriptors`` set, each row also holds
    ``descriptor_delta = a(after) − a(before)`` ``[K]``. In ``"latent"`` space the descriptor model reads the
    method's latents (the paper's cheap path: ``a(z_cf) − a(z0)``, each counterfactual with its own original);
    in ``"image"`` space it reads the starting image (the reconstruction for latent methods, else the original)
    and the counterfactual, so any method can be attributed.

    Args:
        method: the counterfactual method (holds its own generative networks).
        model: the explained classifier, as a module or the path of a cflight checkpoint.
        target_policy: how targets are chosen (default: second most likely class, τ = 0.5).
        class_names: optional names for captions and tables.
        descriptors: a descriptor model (module or checkpoint path), e.g. latent logistic heads or
            :class:`~cflight.models.descriptors.MorphometricDescriptors`.
        descriptor_space: ``"latent"`` or ``"image"``.
        descriptor_names: names of the K descriptors (default: the model's ``names`` attribute).
        standardize_descriptors: rank global attributions by change ÷ the descriptor's standard deviation over
            the explained originals (for continuous descriptors with different units, e.g. morphometrics).
        oracle: an independently trained model of the same task (other seed or architecture; module or
            checkpoint path): each row also records whether it calls the counterfactual the target class
            (``oracle_valid``: its predicted class, :func:`~cflight.methods.functional.decision_reached`, not
            the search's threshold τ; for a regressor |ŷ − ỹ| ≤ δ, its prediction and error), which tells real
            changes from ones only the explained model sees.
        reconstruction_filter: explain only images whose reconstruction ``G(E(x))`` (the method's
            :meth:`reconstruct`, e.g. :class:`~cflight.methods.LatentAttack`) the model still classifies as
            ``"prediction"`` (its class on ``x``) or ``"label"`` (the true label: the paper's MNIST failure
            analysis, spec §1.3, together with :class:`~cflight.targets.TrueLabel`); ``None`` (default): all.
            A latent attack cannot explain a decision its generator does not reproduce.
        global_rows: which rows enter the global attribution (``global_include`` column,
            :func:`~cflight.attribution.global_rows`): ``"valid"`` (default: valid counterfactuals without a
            zero gradient), ``"nonzero_grad"`` (the reference's rule) or ``"all"``.
        channels_last: convert the explained model's and the oracle's 4-D weights to ``torch.channels_last``
            in place (:func:`~cflight.models.acceleration.to_channels_last`): the same values, convolutions
            in NHWC (on a CPU the shipped CNNs' forward + backward ≈ 1.5× faster,
            ``benchmarks/results/channels_last.json``). Off by default: a network that calls ``.view`` on its
            activations then fails (one line naming the fix). Not part of the job's fingerprint.

    Skipped rows (the policy's ``keep`` is False, the reconstruction filter drops them, or a regression target
    the policy derived for the image lies outside the model's ``target_range``) never reach the
    method nor the writer; :attr:`skipped` counts them per reason on this process and
    :meth:`skipped_counts` sums them over processes (logged as ``explain/skipped/<reason>`` at the end).

    Cost (:meth:`cost_summary`): each method call runs inside an :class:`~cflight.metrics.EvaluationCounter`
    over the explained model (``"model"``) and every network the method holds (:meth:`cost_networks`: its
    generator, denoiser, robust model …; the oracle, descriptor model and the job's own scoring passes are
    not part of the method and not counted), so the writer reports network evaluations, time and peak
    memory per explained row.

    Regressors: with a regression policy (:class:`~cflight.targets.FixedValue`,
    :class:`~cflight.targets.SquaresMirror`, :class:`~cflight.targets.SeveralValues`) ``model`` is a
    regressor and each row holds ``prediction`` ŷ, ``target_value`` ỹ, ``tolerance`` δ, ``prediction_cf`` ŷ'
    and ``abs_error`` |ŷ' − ỹ|; a policy with several targets per image gives one row per (index,
    ``target_slot``).

    With a :class:`~cflight.methods.MethodComparison` as ``method`` the row's main keys hold the primary
    method's result and each other method's ``x_cf, logits_cf, success, steps, valid, l1, l2`` are stored
    under ``"<name>/<key>"``; descriptor attributions describe the primary method.
    """

    def __init__(self, method: CounterfactualMethod, model: nn.Module | str,
                 target_policy: TargetPolicy | None = None, class_names: list[str] | None = None,
                 descriptors: nn.Module | str | None = None, descriptor_space: str = "image",
                 descriptor_names: list[str] | None = None, standardize_descriptors: bool = False,
                 oracle: nn.Module | str | None = None, reconstruction_filter: str | None = None,
                 global_rows: str = "valid", channels_last: bool = False) -> None:
        super().__init__()
        self.target_policy = target_policy or SecondMostLikely()
        kind = "regressor" if self.task == "regression" else "classifier"
        if isinstance(model, str):
            model = load_net(model, expected_kind=kind)
        if isinstance(oracle, str):
            oracle = load_net(oracle, expected_kind=kind)
        if isinstance(descriptors, str):
            descriptors = load_net(descriptors, expected_kind="descriptor")
        if descriptor_space not in ("latent", "image"):
            raise ValueError(f"descriptor_space must be 'latent' or 'image', got {descriptor_space!r}")
        self.method = method
        self.model = model.eval().requires_grad_(False)
        self.oracle = None if oracle is None else oracle.eval().requires_grad_(False)
        self.channels_last = bool(channels_last)
        for net in (self.model, self.oracle) if self.channels_last else ():
            if net is not None:
                to_channels_last(net)
        n = getattr(model, "num_classes", None)
        if isinstance(self.target_policy, FixedClass) and isinstance(n, int) and n >= 1 \
                and self.target_policy.target_class >= max(n, 2):
            raise ValueError(f"unknown target_class {self.target_policy.target_class}: the model has "
                             f"{max(n, 2)} classes (0..{max(n, 2) - 1}); choose a target_class in that range")
        used = set(getattr(self.target_policy, "target_classes", ()))
        if isinstance(n, int) and n >= 1 and used and max(used) >= max(n, 2):
            raise ValueError(f"target class {max(used)} of {type(self.target_policy).__name__} is unknown: the "
                             f"model has {max(n, 2)} classes (0..{max(n, 2) - 1}); choose targets in that range")
        if reconstruction_filter not in (None, "prediction", "label"):
            raise ValueError("reconstruction_filter must be None, 'prediction' or 'label', got "
                             f"{reconstruction_filter!r}")
        if reconstruction_filter is not None and not callable(getattr(method, "reconstruct", None)):
            raise ValueError(f"reconstruction_filter needs a method with a generator reconstruction (reconstruct(x, "
                             f"index), e.g. LatentAttack); {type(method).__name__} has none: drop the filter")
        if self.task == "regression" and reconstruction_filter is not None:
            raise ValueError("reconstruction_filter compares classes; a regression job has none: drop the filter")
        if global_rows not in GLOBAL_ROWS:
            raise ValueError(f"global_rows must be one of {GLOBAL_ROWS}, got {global_rows!r}")
        self.reconstruction_filter, self.global_rows = reconstruction_filter, global_rows
        self.skipped: dict[str, int] = {}
        self.class_names = class_names
        self.descriptors = descriptors.eval().requires_grad_(False) if descriptors is not None else None
        self.descriptor_space = descriptor_space
        names = descriptor_names or (list(getattr(descriptors, "names", [])) if descriptors is not None else [])
        if descriptors is not None and not names:
            raise ValueError("descriptor_names are needed: the descriptor model has no `names` attribute")
        self.descriptor_names = names
        self.standardize_descriptors = standardize_descriptors
        # With a MethodComparison every row also holds each other method's results under "<name>/<key>";
        # the writer reads these names (primary first) for per-method columns, metrics and FID.
        self.method_names = method.names if isinstance(method, MethodComparison) else []
        self.skip_indices: set[int] = set()
        self._cost: EvaluationCounter | None = None
        self._cost_rows = 0
        self.save_hyperparameters(ignore=["method", "model", "target_policy", "descriptors", "oracle"])

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``, as the target policy says."""
        return getattr(self.target_policy, "task", "classification")

    @property
    def summary_columns(self) -> list[str]:
        """The per-row columns the writer averages into metrics.json."""
        return list(SUMMARY_COLUMNS[self.task])

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def on_predict_start(self) -> None:
        if torch.is_inference_mode_enabled():
            raise RuntimeError("explanations need gradients: build the Trainer with inference_mode=False")
        self.model.eval()
        self.method.eval()
        self._check_static_targets()
        self.skipped = {}
        self._cost, self._cost_rows = EvaluationCounter(self.cost_networks(), device=self.device), 0

    def _check_static_targets(self) -> None:
        """A policy's fixed regression values (``FixedValue``, ``SeveralValues``, ``LabelValues``) against the
        regressor's trained range, before any image is explained."""
        policy = self.target_policy
        if getattr(policy, "task", "") != "regression":
            return
        values = getattr(policy, "values", None)
        values = list(values.values()) if isinstance(values, dict) else list(values or [])
        if getattr(policy, "value", None) is not None:
            values.append(policy.value)
        if values:
            check_target_range(torch.tensor(values, dtype=torch.float32), self.model,
                               float(getattr(policy, "tolerance", 0.0)))

    def on_predict_end(self) -> None:
        counts = self.skipped_counts()
        if counts and self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                logger.log_metrics({f"explain/skipped/{k}": float(v) for k, v in counts.items()})
            print("cflight: not explained: " + ", ".join(f"{v} ({SKIP_REASONS[k]})" for k, v in counts.items()))

    def skipped_counts(self) -> dict[str, int]:
        """Rows skipped per reason, summed over every process (collective under DDP: every rank calls it)."""
        reasons = list(SKIP_REASONS)
        local = torch.tensor([float(self.skipped.get(r, 0)) for r in reasons], device=self.device)
        strategy = getattr(getattr(self, "_trainer", None), "strategy", None)
        total = strategy.reduce(local, reduce_op="sum") if strategy is not None else local
        return {r: int(v) for r, v in zip(reasons, total.tolist()) if v}

    def cost_networks(self) -> dict[str, nn.Module]:
        """The networks a method call evaluates, by name: ``"model"`` (the explained one) and the method's own
        (:func:`~cflight.metrics.cost.find_networks`; a comparison's under ``"<method name>.<network>"``)."""
        nets = {"model": self.model}
        if isinstance(self.method, MethodComparison):
            for name, m in zip(self.method.names, self.method.methods):
                nets.update(find_networks(m, f"{name}."))
        else:
            nets.update(find_networks(self.method))
        return nets

    def cost_summary(self) -> dict[str, Any]:
        """This run's method cost summed over every process (collective under DDP: every rank calls it).

        ``rows`` explained here, ``method_seconds`` (summed over processes), ``counts`` ``{network:
        {forward_calls, forward_samples, backward_calls, backward_samples}}``, ``peak_memory_mb`` (the largest
        of any process) and ``peak_memory_source`` (``"cuda_max_memory_allocated"`` on a GPU, else
        ``"process_max_rss"``: the whole process's peak resident memory, an upper bound)."""
        counter = self._cost or EvaluationCounter(self.cost_networks(), device=self.device)
        names = list(counter.counts)
        fields = ("forward_calls", "forward_samples", "backward_calls", "backward_samples")
        # one float64 vector per process on the module's device: NCCL rejects CPU tensors
        local = torch.tensor([float(self._cost_rows), counter.seconds,
                              *[float(getattr(counter.counts[n], f)) for n in names for f in fields]],
                             dtype=torch.float64, device=self.device)
        peak = torch.tensor(counter.peak_memory_mb, dtype=torch.float64, device=self.device)
        strategy = getattr(getattr(self, "_trainer", None), "strategy", None)
        if strategy is not None:
            local, peak = strategy.reduce(local, reduce_op="sum"), strategy.reduce(peak, reduce_op="max")
        values = local.tolist()
        counts = {n: {f: int(values[2 + 4 * i + j]) for j, f in enumerate(fields)} for i, n in enumerate(names)}
        return {"rows": int(values[0]), "method_seconds": float(values[1]), "counts": counts,
                "peak_memory_mb": float(peak), "peak_memory_source": counter.memory_source}

    def _skip(self, reason: str, rows: Tensor) -> None:
        n = int(rows.sum())
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + n

    @torch.no_grad()
    def _reconstruction_logits(self, x: Tensor, index: Tensor) -> Tensor | None:
        """The model on the method's starting image ``[B, K]`` where the policy or the filter needs it; for a
        method without a reconstruction (pixel methods start from ``x``) that is ``f(x)``: ``None``."""
        wanted = self.reconstruction_filter is not None or getattr(self.target_policy, "uses_reconstruction", False)
        reconstruct = getattr(self.method, "reconstruct", None)
        if not wanted or not callable(reconstruct):
            return None
        return self.model(reconstruct(x, index))

    def _faithful(self, logits: Tensor, recon_logits: Tensor | None, sub: dict[str, Any]) -> Tensor | None:
        """``[B]`` bool: the reconstruction keeps the class the filter asks for (``None``: no filter)."""
        if self.reconstruction_filter is None or recon_logits is None:
            return None
        if self.reconstruction_filter == "label":
            if LABEL not in sub:
                raise ValueError("reconstruction_filter='label' needs batches with a 'label' key; use "
                                 "reconstruction_filter='prediction' or give the data labels")
            wanted = sub[LABEL].to(logits.device).long()
        else:
            wanted = _classes(logits)
        return _classes(recon_logits) == wanted

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0, dataloader_idx: int = 0) -> dict[str, Tensor] | None:
        index = batch[INDEX].long()
        todo = torch.tensor([int(i) not in self.skip_indices for i in index.tolist()], dtype=torch.bool)
        unreadable = None
        if READABLE in batch:
            readable = torch.as_tensor(batch[READABLE]).bool().reshape(-1).cpu()
            unreadable = index.cpu()[todo & ~readable]
            todo &= readable
        unread = {} if unreadable is None or not len(unreadable) else {"unreadable": unreadable}
        if not bool(todo.any()):
            return unread or None
        rows = todo.nonzero().squeeze(1).to(index.device)
        x, index = batch[IMAGE][rows], index[rows]
        check_images(x, index=index)
        check_model_input(x, self.model)
        with torch.no_grad(), channels_last_errors("the explained model", self.channels_last):
            logits = self.model(x)  # the method's own calls run the same layers: a layout error shows here
        sub = {k: v[rows] for k, v in batch.items() if isinstance(v, Tensor)}
        recon_logits = self._reconstruction_logits(x, index)
        if recon_logits is not None:
            sub[RECONSTRUCTION_LOGITS] = recon_logits
        target, keep = self.target_policy(logits, sub)
        beyond = None  # targets a policy derives per image (the configured values were checked at the start)
        if isinstance(target, RegressionTarget):
            beyond = outside_target_range(target.value, self.model, target.tolerance)
        faithful = self._faithful(logits, recon_logits, sub)
        k = self.target_policy.targets_per_image
        if k > 1:  # each image toward each of its k targets: rows image-major, keyed by (index, slot)
            x, index, logits = (t.repeat_interleave(k, dim=0) for t in (x, index, logits))
            sub = {key: v.repeat_interleave(k, dim=0) for key, v in sub.items()}
            faithful = None if faithful is None else faithful.repeat_interleave(k)
        keep = keep.to(index.device)
        self._skip("policy", ~keep)
        if beyond is not None:  # counted among the rows the policy kept: that image alone is not explained
            beyond = beyond.to(keep.device) & keep
            self._skip("target_out_of_range", beyond)
            keep = keep & ~beyond
        if faithful is not None:  # counted among the rows the policy kept
            faithful = faithful.to(keep.device)
            self._skip("unfaithful_reconstruction", keep & ~faithful)
            keep = keep & faithful
        if not bool(keep.any()):
            return unread or None
        sel = keep.nonzero().squeeze(1)
        x, index, logits, target = x[sel], index[sel], logits[sel], target.select(sel)
        sub = {key: v[sel] for key, v in sub.items()}
        if self._cost is None:  # predict_step called outside a predict loop
            self._cost = EvaluationCounter(self.cost_networks(), device=self.device)
        with self._cost:
            out = self.method(x, target, self.model, index=index, pred=logits)
        self._cost_rows += len(index)
        mask = sub.get(MASK)
        result = {"index": index, "image": x, "logits": logits, **self._target_columns(logits, target),
                  **self._score(out, x, target, mask)}
        if k > 1:
            result[SLOT] = sel.to(index.device) % k
        for name, other in out.comparisons.items():
            result.update({method_key(name, c): v for c, v in self._score(other, x, target, mask).items()})
        if LABEL in sub:
            result["label"] = sub[LABEL].long()
        if out.latent is not None:
            result["latent"] = out.latent
        for key, value in out.extras.items():
            if isinstance(value, Tensor) and value.shape[:1] == index.shape:
                result[key] = value
        if self.descriptors is not None:
            result.update(self._describe(x, out))
            result["global_include"] = global_rows(result["valid"], out.extras.get("zero_grad"), self.global_rows)
        return {**{k: v.detach().cpu() for k, v in result.items()}, **unread}

    @staticmethod
    def _target_columns(pred: Tensor, target: Target) -> dict[str, Tensor]:
        """What each row was asked to reach. Regression rows also get ``target_class`` 0 and the direction of
        the change (sign of ỹ − ŷ), so descriptor attributions aggregate them per direction."""
        if isinstance(target, RegressionTarget):
            tol = torch.as_tensor(target.tolerance, dtype=torch.float32, device=pred.device).expand(len(target))
            return {"prediction": pred[:, 0], "target_value": target.value, "tolerance": tol.clone(),
                    "abs_error_before": (pred[:, 0] - target.value).abs(),
                    "target_class": torch.zeros(len(target), dtype=torch.long, device=pred.device),
                    "direction": torch.where(target.value >= pred[:, 0], 1, -1)}
        return {"target_class": target.classes, "direction": target.direction,
                "threshold": torch.as_tensor(target.threshold, dtype=torch.float32).expand(len(target)).clone()}

    @torch.no_grad()
    def _score(self, out: CounterfactualOutput, x: Tensor, target: Target, mask: Tensor | None = None) -> dict[str, Tensor]:
        """A method's counterfactuals ``[B, C, H, W]`` with the explained model's output on them, validity and
        distances to the originals ``x``, each ``[B]``. The returned image is scored again because validity
        is what a user of the saved image would see (a method may judge success on another tensor).

        With an ``oracle`` (an independently trained model) also its verdict on the same image; for a regressor
        ``abs_error`` |ŷ' − ỹ| and, where the data has a ``mask``, ``background_mae``: the mean absolute change
        outside it (squares: everything but the inner square, i.e. change that the target did not need).
        """
        x_cf = out.x_cf.detach()
        pred_cf = self.model(x_cf)
        scores = {"x_cf": out.x_cf, "logits_cf": pred_cf, "success": out.success, "steps": out.steps,
                  "valid": Fn.target_reached(pred_cf, target),
                  "l1": Fn.l1_distance(out.x_cf, x), "l2": Fn.l2_distance(out.x_cf, x)}
        # l1.5 (SVCE's threat model), l∞ and the share of changed pixel positions (sparsity), per row
        extra = image_distances(x.detach().float(), x_cf.float())
        scores.update(l1_5=extra["l1_5"], linf=extra["linf"], changed_fraction=extra["changed_fraction"])
        with channels_last_errors("the oracle", self.channels_last):
            oracle = None if self.oracle is None else self.oracle(x_cf)
        if oracle is not None:
            scores["oracle_valid"] = Fn.decision_reached(oracle, target)  # its decision, not the search's τ
        if isinstance(target, RegressionTarget):
            scores.update(prediction_cf=pred_cf[:, 0], abs_error=(pred_cf[:, 0] - target.value).abs())
            if oracle is not None:
                scores.update(oracle_prediction_cf=oracle[:, 0], oracle_abs_error=(oracle[:, 0] - target.value).abs())
        if mask is not None:
            outside = (1 - mask.to(x.dtype)).expand_as(x)
            scores["background_mae"] = ((x_cf - x).abs() * outside).flatten(1).sum(1) / outside.flatten(1).sum(1).clamp_min(1)
        return scores

    @torch.no_grad()
    def _describe(self, x: Tensor, out: CounterfactualOutput) -> dict[str, Tensor]:
        """Descriptor values before/after (``[B, K]``) in the chosen space."""
        if self.descriptor_space == "latent":
            z0 = out.extras.get("latent0")
            if out.latent is None or z0 is None:
                raise ValueError(f"{type(self.method).__name__} returns no latents: use descriptor_space='image'")
            before, after = self.descriptors(z0), self.descriptors(out.latent)
        else:
            # A latent method's counterfactual is compared with the reconstruction, so the change it made is
            # not mixed with the generator's reconstruction error; other methods start from x itself.
            start = out.extras.get("reconstruction", x)
            before, after = self.descriptors(start), self.descriptors(out.x_cf)
        if before.shape[1] != len(self.descriptor_names):
            raise ValueError(f"descriptor model gives {before.shape[1]} values for {len(self.descriptor_names)} names")
        return {"descriptors_before": before, "descriptor_delta": descriptor_change(before, after)}


SKIP_REASONS = {  # reason → why those rows were not explained (the job's closing line)
    "policy": "the target policy skipped them, e.g. already at the target or no pair for their class",
    "unfaithful_reconstruction": "the reconstruction is classified otherwise, reconstruction_filter",
    "target_out_of_range": "their regression target is outside the model's training range",
}


def _classes(logits: Tensor) -> Tensor:
    """The class of each row ``[B]`` (a one-logit model: ``logit > 0``)."""
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
