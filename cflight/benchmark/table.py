"""The benchmark's table: one row per method from its job's metrics.json (pure functions, no networks)."""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

# (column, metrics.json key, header in table.md, digits); a key a job lacks is left empty
COLUMNS: list[tuple[str, str, str, int]] = [
    ("n", "n", "n", 0),
    ("validity", "validity", "validity", 3),
    ("oracle_validity", "oracle_validity", "oracle validity", 3),
    ("l1", "mean_l1", "l1", 2),
    ("l2", "mean_l2", "l2", 3),
    ("linf", "mean_linf", "l∞", 3),
    ("sparsity", "sparsity", "sparsity", 3),
    ("fid", "fid_successful", "FID (valid)", 2),
    ("kid", "kid_successful", "KID (valid)", 4),
    ("mnac", "mnac", "MNAC", 2),
    ("seconds_per_image", "seconds_per_image", "s / image", 4),
    ("evaluations_per_image", "evaluations_per_image_total", "evaluations / image", 1),
    ("peak_memory_mb", "peak_memory_mb", "peak MB", 0),
]

TABLE_NOTES = [
    "validity: share of counterfactuals the explained model assigns to the target; oracle validity: the same "
    "by an independently trained oracle.",
    "l1, l2, l∞: unnormalised norms of x' − x per image (images in [0, 1]), averaged; sparsity: share of pixel "
    "positions changed by more than 0.01 (lower is sparser).",
    "FID / KID (valid): ACE's protocol — all explained originals against the valid counterfactuals, in the "
    "feature net's penultimate features (not Inception: compare rows of this table only).",
    "MNAC: mean number of oracle attributes changed, over the valid counterfactuals.",
    "s / image: the job's wall time per image; evaluations / image: forward + backward batch rows through every "
    "network the method uses, per image (per-network counts in results.json).",
]


def _value(metrics: Mapping[str, Any], key: str) -> Any:
    return metrics.get(key)


def table_rows(jobs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``{method name: metrics.json}`` → one dict per method (``method`` + :data:`COLUMNS`), in the given order."""
    rows = []
    for name, metrics in jobs.items():
        row: dict[str, Any] = {"method": name}
        for column, key, _, _ in COLUMNS:
            row[column] = _value(metrics, key)
        rows.append(row)
    return rows


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if digits else f"{value:.0f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], notes: Sequence[str] = TABLE_NOTES) -> str:
    """``rows`` (:func:`table_rows`) as a GitHub markdown table, with the columns' definitions under it."""
    head = "| method | " + " | ".join(h for _, _, h, _ in COLUMNS) + " |"
    rule = "|---|" + "|".join("---:" for _ in COLUMNS) + "|"
    lines = [head, rule]
    for r in rows:
        lines.append(f"| {r['method']} | " + " | ".join(_fmt(r.get(c), d) for c, _, _, d in COLUMNS) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def write_tables(output_dir: str, jobs: Mapping[str, Mapping[str, Any]], provenance: Mapping[str, Any],
                 config: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Write ``table.md``, ``table.csv`` and ``results.json`` (rows, every job's full metrics, the provenance:
    command, git commit, machine, and the config) into ``output_dir``; returns their paths by name."""
    os.makedirs(output_dir, exist_ok=True)
    rows = table_rows(jobs)
    paths = {name: os.path.join(output_dir, name) for name in ("table.md", "table.csv", "results.json")}
    with open(paths["table.md"], "w") as f:
        f.write(markdown_table(rows))
    with open(paths["table.csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", *[c for c, _, _, _ in COLUMNS]])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if v is None else v for k, v in r.items()})
    results = {**dict(provenance), "config": dict(config or {}), **dict(extra or {}), "table": rows,
               "methods": {name: dict(m) for name, m in jobs.items()}}
    tmp = paths["results.json"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, default=str)
    os.replace(tmp, paths["results.json"])
    return paths
