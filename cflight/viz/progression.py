"""The progression of latent counterfactuals: one row per image, one column per snapshot (pure functions).

The paper's MNIST progression figure (Goldwasser & Hooker 2025, spec latent_and_regression.md §1.7) shows
one counterfactual every 50 Adam steps; :class:`~cflight.methods.LatentAttack` with ``snapshot_every=50``
returns exactly those images in ``extras["snapshots"]`` ``[B, S, C, H, W]`` and their steps in
``extras["snapshot_steps"]`` ``[B, S]``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from cflight.viz.gallery import to_uint8

LABEL_PX = 14  # height of the caption band above each cell


def columns_to_show(n_snapshots: int, max_columns: int | None) -> list[int]:
    """Snapshot slots to draw: all, or ``max_columns`` evenly spaced ones that keep the first and the last."""
    if max_columns is None or n_snapshots <= max_columns:
        return list(range(n_snapshots))
    if max_columns < 2:
        raise ValueError(f"max_columns must be >= 2 (first and last snapshot), got {max_columns}")
    return sorted({round(i * (n_snapshots - 1) / (max_columns - 1)) for i in range(max_columns)})


def progression_strip(snapshots: Tensor, steps: Tensor | None = None, path: str | None = None,
                      captions: Sequence[str] | None = None, max_images: int = 4, max_columns: int | None = 12,
                      cell: int = 84) -> np.ndarray:
    """Render snapshots ``[N, S, C, H, W]`` in [0, 1] as a grid, rows = images, columns = steps.

    Args:
        snapshots: ``extras["snapshots"]`` of :class:`~cflight.methods.LatentAttack` (or any ``[N, S, C, H, W]``).
        steps: ``[N, S]`` step of each snapshot (``extras["snapshot_steps"]``), printed above each cell;
            a cell that repeats a stopped sample's final image is marked ``(stop)``.
        path: where to write the PNG (folders are created); ``None``: only return the array.
        captions: one text per image, printed left of its row (e.g. ``"4 → 9"``).
        max_images: at most this many rows (the first ones).
        max_columns: at most this many columns, evenly spaced, first and last kept (``None``: all).
        cell: side of each drawn image in pixels (nearest-neighbour upscaling).

    Returns: the grid ``[rows·(cell + 14), (columns + 1)·cell, 3]`` uint8 (the first column holds captions).
    """
    if snapshots.ndim != 5:
        raise ValueError(f"snapshots must be [N, S, C, H, W], got {tuple(snapshots.shape)}; pass "
                         "extras['snapshots'] of LatentAttack(snapshot_every=k)")
    if steps is not None and tuple(steps.shape) != tuple(snapshots.shape[:2]):
        raise ValueError(f"steps must be [N, S] = {tuple(snapshots.shape[:2])}, got {tuple(steps.shape)}")
    n = min(len(snapshots), max_images)
    if n == 0:
        raise ValueError("no snapshots to draw: the batch is empty")
    cols = columns_to_show(snapshots.shape[1], max_columns)
    band = cell + LABEL_PX
    canvas = Image.new("RGB", ((len(cols) + 1) * cell, n * band), "white")
    draw = ImageDraw.Draw(canvas)
    for r in range(n):
        y = r * band
        if captions is not None and r < len(captions):
            draw.text((4, y + LABEL_PX + cell // 2 - 6), str(captions[r]), fill="black")
        for c, s in enumerate(cols):
            tile = Image.fromarray(to_uint8(snapshots[r, s])).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, ((c + 1) * cell, y + LABEL_PX))
            if steps is not None:
                step = int(steps[r, s])
                stopped = s > 0 and int(steps[r, s - 1]) == step
                draw.text(((c + 1) * cell + 2, y + 1), f"{step}" + (" (stop)" if stopped else ""), fill="black")
    grid = np.asarray(canvas)
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        canvas.save(path)
    return grid


def progression_from_output(extras: dict[str, Tensor], path: str | None = None, **kwargs) -> np.ndarray:
    """:func:`progression_strip` of a method output's ``extras`` (``snapshots`` and ``snapshot_steps``)."""
    if "snapshots" not in extras:
        raise ValueError("the output has no snapshots: run LatentAttack with snapshot_every=k (e.g. 50)")
    steps = extras.get("snapshot_steps")
    steps = None if steps is None else torch.as_tensor(steps).cpu()
    return progression_strip(extras["snapshots"].detach().cpu(), steps, path, **kwargs)
