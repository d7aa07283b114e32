"""Assembling an explanation job's shards into results.csv, metrics.json and gallery rows (pure I/O + math)."""
from __future__ import annotations

import csv
import glob
import json
import os
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from cflight.methods import functional as Fn
from cflight.viz.gallery import GalleryRow, difference_map

SHARD_GLOB = "shard-*.pt"


def method_key(name: str, key: str) -> str:
    """Shard/record key of a compared (non-primary) method's value, e.g. ``"robust/x_cf"``."""
    return f"{name}/{key}"


def _key(name: str | None, key: str) -> str:
    """The record key of ``key`` for method ``name`` (``None``: the primary method, stored unprefixed)."""
    return key if name is None else method_key(name, key)


def read_shard_indices(shard_dir: str) -> set[int]:
    """Dataset indices held by the finished shards in ``shard_dir`` (partial ``.tmp`` files are ignored)."""
    done: set[int] = set()
    for path in glob.glob(os.path.join(shard_dir, SHARD_GLOB)):
        done.update(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["index"].tolist())
    return done


def load_records(shard_dir: str) -> dict[str, Tensor]:
    """All shards concatenated, one row per dataset index, sorted by index."""
    shards = [torch.load(p, map_location="cpu", weights_only=True) for p in sorted(glob.glob(os.path.join(shard_dir, SHARD_GLOB)))]
    if not shards:
        return {}
    keys = set.intersection(*(set(s) for s in shards))
    records = {k: torch.cat([s[k] for s in shards]) for k in keys}
    index = records["index"]
    order = torch.argsort(index, stable=True)
    keep = torch.ones_like(index, dtype=torch.bool)
    sorted_index = index[order]
    keep[1:] = sorted_index[1:] != sorted_index[:-1]  # a rerun may have rewritten an index: keep one row
    return {k: v[order][keep] for k, v in records.items()}


def load_rank_records(shard_dir: str, rank: int, world_size: int, keys: Sequence[str]) -> dict[str, Tensor]:
    """This process's share of the records (only ``keys``), for metrics reduced across processes.

    Process ``rank`` reads shard files ``rank, rank + world_size, …`` (sorted by name); an index found in
    several shards counts once, in the first such file — the row :func:`load_records` keeps — so the shares
    partition the records whatever the number of processes.
    """
    paths = sorted(glob.glob(os.path.join(shard_dir, SHARD_GLOB)))
    seen: set[int] = set()
    parts: list[dict[str, Tensor]] = []
    for i, path in enumerate(paths):
        shard = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        first = []
        for j, idx in enumerate(shard["index"].tolist()):
            if idx not in seen:
                seen.add(idx)
                first.append(j)
        if i % world_size == rank and first:
            rows = torch.tensor(first)
            parts.append({k: shard[k][rows] for k in keys})
    if not parts:
        return {}
    return {k: torch.cat([p[k] for p in parts]) for k in keys}


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
    return cols if name is None else {method_key(name, c): v for c, v in cols.items()}


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)


def summary_metrics(records: dict[str, Tensor], seconds: float, computed: int,
                    methods: Sequence[str] = ()) -> dict[str, Any]:
    """The job's metrics.json: ``n``, ``validity``, ``success_rate``, ``median_steps``, ``mean_l1``, ``mean_l2``…

    With compared ``methods`` (primary first) also ``primary`` and ``methods: {name: {validity, success_rate,
    median_steps, mean_steps, mean_l1, mean_l2}}``; the top-level values are the primary's.
    """
    n = len(records.get("index", []))
    if n == 0:
        return {"n": 0, "validity": None, "seconds": seconds}
    metrics = {"n": n, **_method_metrics(records, None), "seconds": round(seconds, 3),
               "computed_this_run": computed,
               "seconds_per_image": round(seconds / computed, 5) if computed else None}
    if methods:
        metrics["primary"] = methods[0]
        metrics["methods"] = {name: _method_metrics(records, None if k == 0 else name)
                              for k, name in enumerate(methods)}
    return metrics


def _method_metrics(records: dict[str, Tensor], name: str | None) -> dict[str, float]:
    """Validity, success rate, steps and mean distances of one method (``None``: the primary)."""
    steps = records[_key(name, "steps")].tolist()
    return {
        "validity": float(records[_key(name, "valid")].float().mean()),
        "success_rate": float(records[_key(name, "success")].float().mean()),
        "median_steps": float(statistics.median(steps)),
        "mean_steps": float(sum(steps) / len(steps)),
        "mean_l1": float(records[_key(name, "l1")].mean()),
        "mean_l2": float(records[_key(name, "l2")].mean()),
    }


def write_json(obj: Any, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def gallery_rows(records: dict[str, Tensor], rows: list[dict[str, Any]], n: int,
                 methods: Sequence[str] = ()) -> tuple[list[GalleryRow], list[str]]:
    """The first ``n`` images (by dataset index) as gallery rows, with their column names.

    With compared ``methods`` (primary first): side by side, see :func:`comparison_gallery_rows`.
    """
    if methods:
        return comparison_gallery_rows(records, rows, n, methods)
    has_recon = "reconstruction" in records
    columns = ["original"] + (["reconstruction"] if has_recon else []) + ["counterfactual"]
    columns.append("difference (cf − recon)" if has_recon else "difference")
    out = []
    for i in range(min(n, len(rows))):
        r = rows[i]
        x, x_cf = records["image"][i], records["x_cf"][i]
        start = records["reconstruction"][i] if has_recon else x
        panels = [x] + ([start] if has_recon else []) + [x_cf, difference_map(start, x_cf)]
        caps = [f"pred {r['prediction']} ({r['prediction_prob']:.2f})"]
        if has_recon:
            caps.append(f"p({r['target']}) = {r['target_prob']:.2f}")
        caps.append(f"cf {r['cf_prediction']}: p({r['target']}) = {r['cf_target_prob']:.2f}")
        caps.append(f"l1 {r['l1']:.1f}, {r['steps']} steps")
        note = "\n".join(r["top_changes"].split("; ")[:3]) if r.get("top_changes") else ""
        label = f" label {r['label']}" if r["label"] != "" else ""
        status = "ok" if r["valid"] else "not reached"
        out.append(GalleryRow(panels, caps, title=f"#{r['index']}{label} → {r['target']} ({status})", note=note))
    return out, columns


def comparison_gallery_rows(records: dict[str, Tensor], rows: list[dict[str, Any]], n: int,
                            methods: Sequence[str]) -> tuple[list[GalleryRow], list[str]]:
    """Side-by-side rows ``original | method 1 | … | method k | Δ method 1 | … | Δ method k``.

    Each method's panel is captioned with the explained model's target probability on it and validity; its
    difference map (against the original, also for latent methods) with the l1 distance and steps.
    """
    names = list(methods)
    columns = ["original", *names, *[f"Δ {name}" for name in names]]
    out = []
    for i in range(min(n, len(rows))):
        r, x = rows[i], records["image"][i]
        panels, caps, diffs, diff_caps = [x], [f"pred {r['prediction']} ({r['prediction_prob']:.2f})"], [], []
        for k, name in enumerate(names):
            key = None if k == 0 else name  # rows and records share the "<name>/<column>" keys
            x_cf = records[_key(key, "x_cf")][i]
            status = "valid" if r[_key(key, "valid")] else "not reached"
            panels.append(x_cf)
            caps.append(f"{r[_key(key, 'cf_prediction')]}: p({r['target']}) = {r[_key(key, 'cf_target_prob')]:.2f}, "
                        f"{status}")
            diffs.append(difference_map(x, x_cf))
            diff_caps.append(f"l1 {r[_key(key, 'l1')]:.1f}, {r[_key(key, 'steps')]} steps")
        note = "\n".join(r["top_changes"].split("; ")[:3]) if r.get("top_changes") else ""
        label = f" label {r['label']}" if r["label"] != "" else ""
        out.append(GalleryRow(panels + diffs, caps + diff_caps, title=f"#{r['index']}{label} → {r['target']}",
                              note=note))
    return out, columns


def descriptor_scores(records: dict[str, Tensor], standardize: bool) -> Tensor:
    """Per-image descriptor changes ``[N, K]``; standardised by each descriptor's std over the originals."""
    delta = records["descriptor_delta"].double()
    if not standardize:
        return delta
    std = records["descriptors_before"].double().std(0, unbiased=False) if delta.shape[0] > 1 else torch.ones(delta.shape[1])
    return delta / torch.where(std > 0, std, torch.ones_like(std))


def add_top_changes(rows: list[dict[str, Any]], scores: Tensor, names: Sequence[str], k: int = 5) -> None:
    """Add ``top_changes`` (the ``k`` largest signed descriptor changes) to every results row, in place."""
    from cflight.attribution.local import top_k

    for row, s in zip(rows, scores):
        row["top_changes"] = "; ".join(f"{n} {v:+.3f}" for n, v in top_k(s.float(), names, k))


def global_attribution(records: dict[str, Tensor], scores: Tensor, names: Sequence[str],
                       class_names: Sequence[str] | None, k: int = 5) -> dict[str, Any]:
    """The global explanation over all explained images (spec §1.6.4), ready for JSON."""
    from cflight.attribution.global_attribution import GlobalAttribution, summarise

    logits = records["logits"]
    source = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    target = records["target_class"].long()
    num_classes = max(logits.shape[1], 2, int(target.max()) + 1)
    metric = GlobalAttribution(len(names), num_classes)
    metric.update(scores, records["direction"], source, target)
    return summarise(metric.compute(), names, class_names, k=k)
