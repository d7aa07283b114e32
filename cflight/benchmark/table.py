"""The benchmark's table: one row per method from its job's metrics.json (pure functions, no networks).

A benchmark is a classification one (:data:`COLUMNS`) or a regression one (:data:`REGRESSION_COLUMNS`: success
within the target policy's tolerance δ, MAE to the target, the oracle's of both, background MAE; Ha & Bender
2025, spec latent_and_regression §2.7), as its jobs' target policies say (``task``, which the runner adds to
each job's metrics; without it a job with ``mae_to_target`` is a regression one).
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from cflight.validation import BadInputError

Column = tuple[str, str, str, int]  # (column, metrics.json key, header in table.md, digits)

# a key a job lacks is left empty
COLUMNS: list[Column] = [
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

# a regression job's metrics.json has ``validity`` = share with |ŷ' − ỹ| ≤ δ on the returned image
# (cflight.lit.ExplainModule._score); the realism columns (OPTIONAL_REGRESSION) appear only where some job
# computed them (a writer with fid_feature_net, mnac_attributes or lpips), not as a column of dashes
_SAME = {c[0]: c for c in COLUMNS}  # the columns a regression table shares with the classification one
REGRESSION_COLUMNS: list[Column] = [
    _SAME["n"],
    ("success", "validity", "success", 3),
    ("mae", "mae_to_target", "MAE", 4),
    ("oracle_success", "oracle_validity", "oracle success", 3),
    ("oracle_mae", "oracle_mae", "oracle MAE", 4),
    *(_SAME[k] for k in ("l1", "l2", "linf", "sparsity")),
    ("background_mae", "background_mae", "background MAE", 4),
    ("fid", "fid_successful", "FID (within δ)", 2),
    ("kid", "kid_successful", "KID (within δ)", 4),
    _SAME["mnac"],
    ("lpips", "mean_lpips", "LPIPS", 3),
    *(_SAME[k] for k in ("seconds_per_image", "evaluations_per_image", "peak_memory_mb")),
]
OPTIONAL_REGRESSION = {"fid", "kid", "mnac", "lpips"}
# the target policy's tolerance δ, added to each regression job's metrics by the runner: a csv column and the
# success header ("success (δ 0.05)"), not a column of table.md
DELTA_KEY = "tolerance"

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

# (the column whose presence brings the note, the note), in table order
REGRESSION_NOTES: list[tuple[str, str]] = [
    ("success", "success: share of counterfactuals x' whose explained-model prediction ŷ' = f(x') is within δ "
     "of the target ỹ (|ŷ' − ỹ| ≤ δ, δ the target policy's tolerance), on the returned image; oracle success: "
     "the same with the independently trained oracle's prediction g(x')."),
    ("mae", "MAE: mean |ŷ' − ỹ| over all counterfactuals, reached or not; oracle MAE: mean |g(x') − ỹ|."),
    ("l1", TABLE_NOTES[1]),
    ("background_mae", "background MAE: mean |x' − x| outside the dataset's mask (squares: everything but the "
     "inner square), over pixels and channels: change the target did not need (Ha & Bender's sparsity measure "
     "on Square)."),
    ("fid", "FID / KID (within δ): ACE's protocol — all explained originals against the counterfactuals within "
     "δ, in the feature net's penultimate features (not Inception: compare rows of this table only)."),
    ("mnac", "MNAC: mean number of oracle attributes changed, over the counterfactuals within δ."),
    ("lpips", "LPIPS: mean LPIPS distance between each original and its counterfactual (lower: perceptually "
     "closer)."),
    ("seconds_per_image", TABLE_NOTES[4]),
]


def job_task(metrics: Mapping[str, Any]) -> str:
    """``"regression"`` or ``"classification"``: the runner's ``task``, else whether the job has
    ``mae_to_target`` (only a regression job's metrics.json has it)."""
    task = metrics.get("task")
    if task is not None:
        return str(task)
    return "regression" if "mae_to_target" in metrics else "classification"


def benchmark_task(jobs: Mapping[str, Mapping[str, Any]]) -> str:
    """The task all ``jobs`` share; a mix is one-line :class:`~cflight.validation.BadInputError`."""
    tasks = {name: job_task(m) for name, m in jobs.items()}
    if len(set(tasks.values())) > 1:
        raise BadInputError(f"the benchmark mixes classification and regression jobs ({tasks}); one table "
                            "compares one task: put them in separate benchmark configs")
    return next(iter(tasks.values()), "classification")


def _value(metrics: Mapping[str, Any], key: str) -> Any:
    return metrics.get(key)


def table_columns(jobs: Mapping[str, Mapping[str, Any]]) -> list[Column]:
    """The columns of ``jobs``' table: :data:`COLUMNS`, or for a regression benchmark :data:`REGRESSION_COLUMNS`
    without the realism columns no job computed."""
    if benchmark_task(jobs) == "classification":
        return list(COLUMNS)
    return [c for c in REGRESSION_COLUMNS
            if c[0] not in OPTIONAL_REGRESSION or any(m.get(c[1]) is not None for m in jobs.values())]


def table_rows(jobs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``{method name: metrics.json}`` → one dict per method (``method`` + :func:`table_columns`), in the given
    order; a regression row also has ``delta`` (its target policy's δ, ``None`` where the job does not say)."""
    rows = []
    regression = benchmark_task(jobs) == "regression"
    columns = table_columns(jobs)
    for name, metrics in jobs.items():
        row: dict[str, Any] = {"method": name}
        for column, key, _, _ in columns:
            row[column] = _value(metrics, key)
        if regression:
            row["delta"] = metrics.get(DELTA_KEY)
        rows.append(row)
    return rows


def rows_columns(rows: Sequence[Mapping[str, Any]]) -> list[Column]:
    """The columns ``rows`` (:func:`table_rows`) were made with: a regression row has ``mae``."""
    if not rows or "mae" not in rows[0]:
        return list(COLUMNS)
    return [c for c in REGRESSION_COLUMNS if c[0] in rows[0]]


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if digits else f"{value:.0f}"
    return str(value)


def _header(column: Column, rows: Sequence[Mapping[str, Any]]) -> str:
    """A column's table.md header; regression's success names δ where every row has the same one."""
    deltas = {r.get("delta") for r in rows}
    if column[0] == "success" and len(deltas) == 1 and None not in deltas:
        return f"success (δ {next(iter(deltas)):g})"
    return column[2]


def table_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The definitions under the table: :data:`TABLE_NOTES`, or the regression notes of the shown columns."""
    if not rows or "mae" not in rows[0]:
        return list(TABLE_NOTES)
    return [note for column, note in REGRESSION_NOTES if column in rows[0]]


def markdown_table(rows: Sequence[Mapping[str, Any]], notes: Sequence[str] | None = None) -> str:
    """``rows`` (:func:`table_rows`) as a GitHub markdown table, with the columns' definitions under it
    (``notes``; default :func:`table_notes`)."""
    columns = rows_columns(rows)
    head = "| method | " + " | ".join(_header(c, rows) for c in columns) + " |"
    rule = "|---|" + "|".join("---:" for _ in columns) + "|"
    lines = [head, rule]
    for r in rows:
        lines.append(f"| {r['method']} | " + " | ".join(_fmt(r.get(c), d) for c, _, _, d in columns) + " |")
    notes = table_notes(rows) if notes is None else notes
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def write_tables(output_dir: str, jobs: Mapping[str, Mapping[str, Any]], provenance: Mapping[str, Any],
                 config: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Write ``table.md``, ``table.csv`` and ``results.json`` (the task, rows, every job's full metrics, the
    provenance: command, git commit, machine, and the config) into ``output_dir``; returns their paths by name."""
    os.makedirs(output_dir, exist_ok=True)
    rows = table_rows(jobs)
    paths = {name: os.path.join(output_dir, name) for name in ("table.md", "table.csv", "results.json")}
    with open(paths["table.md"], "w") as f:
        f.write(markdown_table(rows))
    with open(paths["table.csv"], "w", newline="") as f:
        fields = list(rows[0]) if rows else ["method", *[c for c, _, _, _ in COLUMNS]]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if v is None else v for k, v in r.items()})
    results = {**dict(provenance), "config": dict(config or {}), **dict(extra or {}),
               "task": benchmark_task(jobs), "table": rows, "methods": {name: dict(m) for name, m in jobs.items()}}
    tmp = paths["results.json"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, default=str)
    os.replace(tmp, paths["results.json"])
    return paths
