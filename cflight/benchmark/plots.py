"""The benchmark's trade-off plots (matplotlib PNGs): validity vs l2, realism (FID) vs l2, time per image;
for a regression benchmark (rows with ``mae``, :func:`~cflight.benchmark.table.table_rows`) success within δ
vs l2 and MAE to the target vs l2 (each with the oracle's beside it) instead of validity vs l2."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def _points(rows: Sequence[Mapping[str, Any]], x: str, y: str) -> list[tuple[str, float, float]]:
    return [(r["method"], float(r[x]), float(r[y])) for r in rows if r.get(x) is not None and r.get(y) is not None]


def _label_side(px: float, xs: Sequence[float]) -> tuple[int, str]:
    """``(x offset in points, horizontal alignment)`` of a point's label: to the right of the point, except in
    the right quarter of the points' x range, where a name would run into the frame, to its left."""
    lo, hi = min(xs), max(xs)
    return (-5, "right") if hi > lo and px >= hi - 0.25 * (hi - lo) else (5, "left")


def scatter(rows: Sequence[Mapping[str, Any]], x: str, y: str, xlabel: str, ylabel: str, title: str,
            path: str, y2: str | None = None, y2_label: str | None = None) -> str | None:
    """One labelled point per method with both values; ``None`` (no file) when no method has both.

    With ``y2`` (e.g. the oracle's validity beside the explained model's) each method also gets a hollow
    marker at its ``y2`` value, joined to its ``y`` point: the gap is what only the explained model sees.
    """
    points = _points(rows, x, y)
    if not points:
        return None
    second = {name: py for name, _, py in _points(rows, x, y2)} if y2 else {}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    order = {name: k for k, (name, _, _) in enumerate(sorted(points, key=lambda p: p[1]))}  # by distance
    for name, px, py in points:
        k = order[name]
        dot = ax.scatter([px], [py], s=40, label=None)
        if name in second:
            colour = dot.get_facecolor()[0]
            ax.plot([px, px], [py, second[name]], color=colour, lw=0.8, alpha=0.6)
            ax.scatter([px], [second[name]], s=40, facecolors="none", edgecolors=[colour])
        # alternate label offsets: methods at the same distance (e.g. l2 budgets) do not overprint
        dx, ha = _label_side(px, [p[1] for p in points])
        ax.annotate(name, (px, py), textcoords="offset points", xytext=(dx, (4, -11, 14)[k % 3]), ha=ha,
                    fontsize=8)
    if second:
        ax.scatter([], [], s=40, c="grey", label=ylabel)
        ax.scatter([], [], s=40, facecolors="none", edgecolors="grey", label=y2_label or y2)
        ax.legend(fontsize=8, loc="best")
    ax.set(xlabel=xlabel, ylabel=ylabel if not second else f"{ylabel} / {y2_label or y2}", title=title)
    ax.margins(x=0.1, y=0.1)  # room for the labels above the top points and beside the outermost ones
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Any, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def time_bars(rows: Sequence[Mapping[str, Any]], path: str) -> str | None:
    """Seconds per image per method (horizontal bars, log scale when they span > 2 decades)."""
    points = [(r["method"], float(r["seconds_per_image"])) for r in rows if r.get("seconds_per_image") is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(points) + 1.5))
    names, values = zip(*points)
    ax.barh(range(len(values)), values)
    ax.set_yticks(range(len(values)), names, fontsize=8)
    ax.invert_yaxis()
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 100:
        ax.set_xscale("log")
    ax.set(xlabel="seconds per image (job wall time)", title="Time per image")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_all(rows: Sequence[Mapping[str, Any]], output_dir: str) -> dict[str, str]:
    """``validity_vs_l2.png`` (regression rows: ``success_vs_l2.png`` and ``mae_vs_l2.png``), ``fid_vs_l2.png``
    and ``time_per_image.png`` in ``output_dir`` (each where some method has the values); returns the written
    paths by name."""
    os.makedirs(output_dir, exist_ok=True)
    path = {name: os.path.join(output_dir, f"{name}.png") for name in
            ("validity_vs_l2", "success_vs_l2", "mae_vs_l2", "fid_vs_l2", "time_per_image")}
    if rows and "mae" in rows[0]:  # regression: reaching within δ, and how close the prediction came
        made = {
            "success_vs_l2": scatter(rows, "l2", "success", "mean l2 distance", "success (within δ)",
                                     "Success vs distance", path["success_vs_l2"], y2="oracle_success",
                                     y2_label="oracle success"),
            "mae_vs_l2": scatter(rows, "l2", "mae", "mean l2 distance", "MAE to the target",
                                 "Error to the target vs distance", path["mae_vs_l2"], y2="oracle_mae",
                                 y2_label="oracle MAE"),
        }
        fid_label = "FID of counterfactuals within δ"
    else:
        made = {"validity_vs_l2": scatter(rows, "l2", "validity", "mean l2 distance", "validity",
                                          "Validity vs distance", path["validity_vs_l2"],
                                          y2="oracle_validity", y2_label="oracle validity")}
        fid_label = "FID of valid counterfactuals"
    made["fid_vs_l2"] = scatter(rows, "l2", "fid", "mean l2 distance", fid_label, "Realism vs distance",
                                path["fid_vs_l2"])
    made["time_per_image"] = time_bars(rows, path["time_per_image"])
    return {k: v for k, v in made.items() if v is not None}
