"""Rows, metrics and gallery rows of an explanation job, from the records of one shard at a time (pure functions).

Streaming over the shards is :mod:`cflight.lit.assembly`'s job; these functions see a dict of ``[N, ...]`` tensors.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from cflight.viz.gallery import GalleryRow, difference_map

def method_key(name: str, key: str) -> str:
    """Shard/record key of a compared (non-primary) method's value, e.g. ``"robust/x_cf"``."""
    return f"{name}/{key}"


def _key(name: str | None, key: str) -> str:
    """The record key of ``key`` for method ``name`` (``None``: the primary method, stored unprefixed)."""
    return key if name is None else method_key(name, key)


def _name(c: int, class_names: Sequence[str] | None) -> str:
    return class_names[c] if class_names and 0 <= c < len(class_names) else str(c)


def _probs(logits: Tensor) -> Tensor:
    """``[N, K]`` class probabilities; a one-logit model becomes ``[1 − p, p]``."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return logits.softmax(dim=1)


def results_rows(records: dict[str, Tensor], class_names: Sequence[str] | None = None,
                 methods: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One dict per explained image (the columns of results.csv).

    ``methods``: the compared methods' names, primary first (``ExplainModule.method_names``); each method
    after the primary adds ``<name>/cf_prediction``, ``<name>/cf_target_prob``, ``<name>/valid``, … columns.
    """
    if not records:
        return []
    probs = _probs(records["logits"])
    others = list(methods[1:])
    probs_cf = {name: _probs(records[_key(name, "logits_cf")]) for name in [None, *others]}
    target = records["target_class"]
    rows = []
    for i in range(len(records["index"])):
        t = int(target[i])
        pred = int(probs[i].argmax())
        row = {
            "index": int(records["index"][i]),
            "label": _name(int(records["label"][i]), class_names) if "label" in records else "",
            "prediction": _name(pred, class_names), "prediction_prob": round(float(probs[i, pred]), 6),
            "target": _name(t, class_names), "direction": int(records["direction"][i]),
            "threshold": round(float(records["threshold"][i]), 6),
            "target_prob": round(float(probs[i, t]), 6),
        }
        for name in [None, *others]:
            row.update(_cf_columns(records, probs_cf[name], i, t, name, class_names))
        rows.append(row)
    return rows


def add_paths(rows: list[dict[str, Any]], paths: Sequence[str] | None) -> list[dict[str, Any]]:
    """``rows`` with a ``path`` column after ``index``: ``paths[index]`` (a folder dataset's file paths relative
    to its root, :attr:`cflight.data.FolderDataModule.sample_paths`); unchanged without ``paths``."""
    if not paths:
        return rows
    return [{"index": row["index"], "path": paths[row["index"]] if 0 <= row["index"] < len(paths) else "",
             **{k: v for k, v in row.items() if k != "index"}} for row in rows]


def regression_rows(records: dict[str, Tensor], methods: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One dict per explained (image, target value) of a regressor (the columns of results.csv).

    ``prediction`` ŷ, ``target`` ỹ, ``tolerance`` δ, ``error_before`` |ŷ − ỹ|; per method ``cf_prediction``
    ŷ', ``error`` |ŷ' − ỹ|, ``success``, ``valid`` (``error ≤ δ`` on the saved image), ``steps``, ``l1``,
    ``l2`` and, where the job has them, ``oracle_cf_prediction``, ``oracle_error``, ``oracle_valid`` and
    ``background_mae`` (mean |x' − x| outside the dataset's mask). Compared methods' columns are prefixed.
    """
    if not records:
        return []
    rows = []
    for i in range(len(records["index"])):
        row = {"index": int(records["index"][i]), "target_slot": int(records["target_slot"][i])
               if "target_slot" in records else 0,
               "label": int(records["label"][i]) if "label" in records else "",
               "prediction": _r(records["prediction"][i]), "target": _r(records["target_value"][i]),
               "tolerance": _r(records["tolerance"][i]), "error_before": _r(records["abs_error_before"][i])}
        for name in [None, *methods[1:]]:
            cols = {"cf_prediction": "prediction_cf", "error": "abs_error", "success": "success", "valid": "valid",
                    "steps": "steps", "l1": "l1", "l2": "l2", "oracle_cf_prediction": "oracle_prediction_cf",
                    "oracle_error": "oracle_abs_error", "oracle_valid": "oracle_valid",
                    "background_mae": "background_mae"}
            for col, key in cols.items():
                if _key(name, key) in records:
                    v = records[_key(name, key)][i]
                    row[col if name is None else method_key(name, col)] = (
                        bool(v) if v.dtype == torch.bool else int(v) if col == "steps" else _r(v))
        rows.append(row)
    return rows


def _r(v: Tensor) -> float:
    return round(float(v), 6)


def _cf_columns(records: dict[str, Tensor], probs_cf: Tensor, i: int, t: int, name: str | None,
                class_names: Sequence[str] | None) -> dict[str, Any]:
    """Row ``i``'s counterfactual columns for method ``name`` (``None``: the primary, unprefixed)."""
    pred_cf = int(probs_cf[i].argmax())
    cols = {
        "cf_prediction": _name(pred_cf, class_names), "cf_target_prob": round(float(probs_cf[i, t]), 6),
        "success": bool(records[_key(name, "success")][i]), "valid": bool(records[_key(name, "valid")][i]),
        "steps": int(records[_key(name, "steps")][i]),
        "l1": round(float(records[_key(name, "l1")][i]), 6), "l2": round(float(records[_key(name, "l2")][i]), 6),
    }
    if _key(name, "oracle_valid") in records:  # an independent model's verdict on the same image
        cols["oracle_valid"] = bool(records[_key(name, "oracle_valid")][i])
    return cols if name is None else {method_key(name, c): v for c, v in cols.items()}


class CsvRows:
    """``results.csv`` written row by row (the header from the first row), atomically on :meth:`close`."""

    def __init__(self, path: str) -> None:
        self.path, self.tmp = path, f"{path}.tmp"
        self._file = open(self.tmp, "w", newline="")
        self._writer: csv.DictWriter | None = None

    def write(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row))
            self._writer.writeheader()
        self._writer.writerow(row)

    def close(self) -> None:
        self._file.close()
        os.replace(self.tmp, self.path)


# Per-row columns averaged into metrics.json (name in metrics.json), by task; a column a row lacks is skipped.
METRIC_NAMES = {"valid": "validity", "success": "success_rate", "steps": "mean_steps", "l1": "mean_l1",
                "l2": "mean_l2", "oracle_valid": "oracle_validity", "abs_error": "mae_to_target",
                "abs_error_before": "mae_to_target_before", "oracle_abs_error": "oracle_mae",
                "background_mae": "background_mae", "l1_5": "mean_l1_5", "linf": "mean_linf",
                "changed_fraction": "sparsity"}
DISTANCE_COLUMNS = ["l1_5", "linf", "changed_fraction"]  # cflight.metrics.image_distances, per row
SUMMARY_COLUMNS = {
    "classification": ["valid", "success", "steps", "l1", "l2", "oracle_valid", *DISTANCE_COLUMNS],
    "regression": ["valid", "success", "steps", "l1", "l2", "abs_error", "abs_error_before", "oracle_valid",
                   "oracle_abs_error", "background_mae", *DISTANCE_COLUMNS],
}


def method_columns(records: dict[str, Tensor], methods: Sequence[str], columns: Sequence[str]) -> list[dict[str, Tensor]]:
    """Each method's per-row ``columns`` present in ``records`` (primary first), for :class:`CounterfactualSummary`."""
    names = [None, *methods[1:]]
    return [{k: records[_key(name, k)] for k in columns if _key(name, k) in records} for name in names]


def summary_metrics(summary: dict[str, Tensor] | None, columns: Sequence[str], median_steps: Sequence[float],
                    seconds: float, computed: int, methods: Sequence[str] = ()) -> dict[str, Any]:
    """The job's metrics.json: ``n``, ``validity``, ``success_rate``, ``median_steps``, ``mean_l1``, ``mean_l2``…
    and, where the rows have them, ``oracle_validity``, regression's ``mae_to_target``, ``oracle_mae``,
    ``background_mae``.

    ``summary``: :meth:`CounterfactualSummary.compute` over all rows with ``columns``; ``median_steps``: each
    method's median (primary first). With compared ``methods`` (primary first) also ``primary`` and
    ``methods: {name: {...}}``; the top-level values are the primary's.
    """
    n = 0 if summary is None else int(summary["n"])
    if n == 0:
        return {"n": 0, "validity": None, "seconds": round(seconds, 3), "computed_this_run": computed}
    mean = summary["mean"].reshape(len(median_steps), len(columns))  # torchmetrics squeezes a [1, 1] to []
    per = [_method_metrics(mean[m], columns, median_steps[m]) for m in range(len(median_steps))]
    metrics = {"n": n, **per[0], "seconds": round(seconds, 3), "computed_this_run": computed,
               "seconds_per_image": round(seconds / computed, 5) if computed else None}
    if methods:
        metrics["primary"] = methods[0]
        metrics["methods"] = {name: per[k] for k, name in enumerate(methods)}
    return metrics


def _method_metrics(mean: Tensor, columns: Sequence[str], median_steps: float) -> dict[str, float]:
    """One method's means ``[C]`` by metric name (columns no row had are left out), with its median steps."""
    out = {METRIC_NAMES[c]: float(v) for c, v in zip(columns, mean.tolist()) if v == v}
    out["median_steps"] = float(median_steps)
    return out


def write_json(obj: Any, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


HIDDEN_VALUES = ("direction", "threshold", "target_slot")  # results.csv columns the HTML table leaves out


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def _tag(r: dict[str, Any]) -> str:
    """``#index · label l``: the small text beside a card's title."""
    return f"#{r['index']}" + (f" · label {r['label']}" if r.get("label", "") != "" else "")


def _values(r: dict[str, Any]) -> dict[str, Any]:
    """A row's numbers for the HTML table (results.csv's columns, less bookkeeping ones)."""
    return {k: v for k, v in r.items() if k not in HIDDEN_VALUES}


def _note(r: dict[str, Any]) -> str:
    """The top three descriptor changes on one line (a card's note), if the job measured descriptors."""
    return "Δ " + " · ".join(r["top_changes"].split("; ")[:3]) if r.get("top_changes") else ""


def gallery_rows(records: dict[str, Tensor], rows: list[dict[str, Any]], n: int,
                 methods: Sequence[str] = ()) -> tuple[list[GalleryRow], list[str]]:
    """The first ``n`` of ``rows`` as gallery cards, with their panels' column names.

    Card title: the prediction change and the target probability, e.g. ``7 → 9  p(9) 0.91 ✓``, and with an
    oracle its verdict (``oracle ✓``: it also predicts the target class).
    With compared ``methods`` (primary first): side by side, see :func:`comparison_gallery_rows`.
    """
    if methods:
        return comparison_gallery_rows(records, rows, n, methods)
    has_recon = "reconstruction" in records
    columns = ["original"] + (["reconstruction"] if has_recon else []) + ["counterfactual"]
    columns.append("Δ (cf − recon)" if has_recon else "difference")
    out = []
    for i in range(min(n, len(rows))):
        r = rows[i]
        x, x_cf = records["image"][i], records["x_cf"][i]
        start = records["reconstruction"][i] if has_recon else x
        panels = [x] + ([start] if has_recon else []) + [x_cf, difference_map(start, x_cf)]
        caps = [f"pred {r['prediction']}  {r['prediction_prob']:.2f}"]
        if has_recon:
            caps.append(f"p({r['target']}) {r['target_prob']:.2f}")
        caps.append(f"pred {r['cf_prediction']}  p({r['target']}) {r['cf_target_prob']:.2f}")
        caps.append(f"l1 {r['l1']:.1f}\n{r['steps']} steps")
        title = f"{r['prediction']} → {r['cf_prediction']}  p({r['target']}) {r['cf_target_prob']:.2f} {_mark(r['valid'])}"
        if "oracle_valid" in r:  # does an independently trained model also call it the target class?
            title += f"  oracle {_mark(r['oracle_valid'])}"
        out.append(GalleryRow(panels, caps, title=title, note=_note(r), ok=bool(r["valid"]), tag=_tag(r),
                              values=_values(r)))
    return out, columns


def regression_gallery_rows(records: dict[str, Tensor], rows: list[dict[str, Any]], n: int) -> tuple[list[GalleryRow], list[str]]:
    """Gallery cards of a regressor's job: ``original | counterfactual | difference``, titled ŷ → ŷ' (ỹ).

    Rows come in (index, target slot) order, so an image explained toward several values gets consecutive cards.
    """
    has_recon = "reconstruction" in records
    columns = ["original"] + (["reconstruction"] if has_recon else []) + ["counterfactual", "difference"]
    out = []
    for i in range(min(n, len(rows))):
        r = rows[i]
        x, x_cf = records["image"][i], records["x_cf"][i]
        start = records["reconstruction"][i] if has_recon else x
        panels = [x] + ([start] if has_recon else []) + [x_cf, difference_map(start, x_cf)]
        caps = [f"ŷ = {r['prediction']:.3f}"] + ([""] if has_recon else [])
        oracle = f"\noracle {r['oracle_cf_prediction']:.3f}" if "oracle_cf_prediction" in r else ""
        caps += [f"ŷ' = {r['cf_prediction']:.3f}{oracle}", f"l1 {r['l1']:.1f}\n{r['steps']} steps"]
        title = (f"{r['prediction']:.2f} → {r['cf_prediction']:.2f}  ỹ {r['target']:.2f}±{r['tolerance']:g} "
                 f"{_mark(r['valid'])}")
        out.append(GalleryRow(panels, caps, title=title, ok=bool(r["valid"]), tag=_tag(r), values=_values(r)))
    return out, columns


def several_targets_gallery_rows(records: dict[str, Tensor], rows: list[dict[str, Any]],
                                 values: Sequence[float]) -> tuple[list[GalleryRow], list[str]]:
    """One card per image explained toward several values: ``original | cf → v1 | … | Δ v1 | …``.

    ``records``/``rows``: the images' rows in (index, slot) order; a target the image already reached (and so
    was not explained) shows the original with a note.
    """
    columns = ["original", *[f"→ {v:g}" for v in values], *[f"Δ {v:g}" for v in values]]
    by_index: dict[int, dict[int, int]] = {}
    for j, r in enumerate(rows):
        by_index.setdefault(r["index"], {})[r["target_slot"]] = j
    out = []
    for idx, slots in by_index.items():
        j0 = next(iter(slots.values()))
        x = records["image"][j0]
        panels, caps, diffs, diff_caps = [x], [f"ŷ = {rows[j0]['prediction']:.3f}"], [], []
        numbers: dict[str, Any] = {"index": idx, "prediction": rows[j0]["prediction"]}
        for s, v in enumerate(values):
            j = slots.get(s)
            if j is None:
                panels.append(x)
                caps.append("already within δ")
                diffs.append(difference_map(x, x))
                diff_caps.append("")
                numbers.update({f"→ {v:g} ŷ'": "", f"→ {v:g} valid": "", f"→ {v:g} steps": ""})
                continue
            r = rows[j]
            panels.append(records["x_cf"][j])
            caps.append(f"ŷ' = {r['cf_prediction']:.3f} {_mark(r['valid'])}")
            diffs.append(difference_map(x, records["x_cf"][j]))
            diff_caps.append(f"l1 {r['l1']:.1f}\n{r['steps']} steps")
            numbers.update({f"→ {v:g} ŷ'": r["cf_prediction"], f"→ {v:g} valid": bool(r["valid"]),
                            f"→ {v:g} steps": r["steps"]})
        reached = sum(bool(rows[j]["valid"]) for j in slots.values())
        numbers["reached"] = reached
        title = f"ŷ {rows[j0]['prediction']:.2f}: reached {reached} of {len(slots)} targets"
        v = len(values)  # on a card: the counterfactuals on one line, each one's difference under it
        lines = [list(range(v + 1)), [None, *range(v + 1, 2 * v + 1)]]
        out.append(GalleryRow(panels + diffs, caps + diff_caps, title=title, ok=reached == len(slots),
                              tag=f"#{idx}", values=numbers, lines=lines))
    return out, columns


def comparison_gallery_rows(records: dict[str, Tensor], rows: list[dict[str, Any]], n: int,
                            methods: Sequence[str]) -> tuple[list[GalleryRow], list[str]]:
    """Side-by-side cards ``original | method 1 | … | method k | Δ method 1 | … | Δ method k``.

    Each method's panel is captioned with the explained model's class and target probability on it and
    validity; its difference map (against the original, also for latent methods) with the l1 distance and
    steps. The card counts as a success when the primary method's counterfactual is valid.
    """
    names = list(methods)
    columns = ["original", *names, *[f"Δ {name}" for name in names]]
    out = []
    for i in range(min(n, len(rows))):
        r, x = rows[i], records["image"][i]
        panels, caps, diffs, diff_caps = [x], [f"pred {r['prediction']}  {r['prediction_prob']:.2f}"], [], []
        for k, name in enumerate(names):
            key = None if k == 0 else name  # rows and records share the "<name>/<column>" keys
            x_cf = records[_key(key, "x_cf")][i]
            panels.append(x_cf)
            caps.append(f"{r[_key(key, 'cf_prediction')]}  p {r[_key(key, 'cf_target_prob')]:.2f} "
                        f"{_mark(r[_key(key, 'valid')])}")
            diffs.append(difference_map(x, x_cf))
            diff_caps.append(f"l1 {r[_key(key, 'l1')]:.1f}\n{r[_key(key, 'steps')]} steps")
        reached = "  ".join(f"{n_} {_mark(r[_key(None if k == 0 else n_, 'valid')])}" for k, n_ in enumerate(names))
        title = f"{r['prediction']} → {r['target']}:  {reached}"
        out.append(GalleryRow(panels + diffs, caps + diff_caps, title=title, note=_note(r), ok=bool(r["valid"]),
                              tag=_tag(r), values=_values(r)))
    return out, columns


def descriptor_scores(records: dict[str, Tensor], std: Tensor | None) -> Tensor:
    """Per-image descriptor changes ``[N, K]`` (float64), divided by ``std`` ``[K]`` where given and > 0.

    ``std``: each descriptor's standard deviation over all explained originals (``None``: raw changes).
    """
    delta = records["descriptor_delta"].double()
    if std is None:
        return delta
    std = std.double().to(delta.device)
    return delta / torch.where(std > 0, std, torch.ones_like(std))


def top_changes(scores: Tensor, names: Sequence[str], k: int = 5) -> list[str]:
    """Each row's ``k`` largest signed descriptor changes, as the ``top_changes`` column of results.csv."""
    from cflight.attribution.local import top_k

    return ["; ".join(f"{n} {v:+.3f}" for n, v in top_k(s.float(), names, k)) for s in scores]


