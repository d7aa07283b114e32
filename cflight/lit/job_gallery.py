"""An explanation job's galleries from its shards: the chosen cards (gallery.png), every row (gallery.html)
and the W&B examples table, all built while :class:`~cflight.lit.CounterfactualWriter` streams the rows.

Images are read per shard through a small cache (:class:`ShardImages`), so the HTML pages, written in index
order, hold a few shards' images at a time, never the job's.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cflight.lit import results as R
from cflight.lit.assembly import ShardPlan, kept_rows
from cflight.lit.selection import SELECT_KEYS, choose_gallery
from cflight.viz.gallery import GalleryRow, difference_map, to_uint8
from cflight.viz.html import HtmlGallery

HTML_BATCH = 64  # rows turned into HTML cards at a time


@dataclass(frozen=True)
class GalleryKind:
    """What kind of job the cards are for: compared ``methods`` (primary first), a regressor, and the
    ``values`` of a policy explaining each image toward several values (one card per image)."""

    methods: tuple[str, ...] = ()
    regression: bool = False
    values: tuple[float, ...] = ()

    @property
    def several_targets(self) -> bool:
        return self.regression and len(self.values) > 1

    @property
    def task(self) -> str:
        return "regression" if self.regression else "classification"

    def image_keys(self) -> list[str]:
        return ["image", "reconstruction", "x_cf", *[R.method_key(n, "x_cf") for n in self.methods[1:]]]

    def cards(self, records: dict[str, Tensor], rows: list[dict[str, Any]]) -> tuple[list[GalleryRow], list[str]]:
        """The rows' cards and their panels' column names (:mod:`cflight.lit.results`)."""
        if self.several_targets:
            return R.several_targets_gallery_rows(records, rows, self.values)
        if self.regression:
            return R.regression_gallery_rows(records, rows, len(rows))
        return R.gallery_rows(records, rows, len(rows), self.methods)


def choose(plan: ShardPlan, kind: GalleryKind, n: int) -> list[int]:
    """Row keys of the ``n`` gallery images (:mod:`cflight.lit.selection`), in reading order; one cheap pass
    over the shards' small columns."""
    shards = [i for i, k in enumerate(plan.keep) if len(k)]
    records = (kept_rows(plan, i, SELECT_KEYS) for i in shards)
    return choose_gallery(records, [plan.kept_keys[i] for i in shards], n, kind.task, kind.several_targets)


class ShardImages:
    """The image columns of the shards read last (``size`` of them), by (shard, kept position)."""

    def __init__(self, plan: ShardPlan, keys: Sequence[str], size: int = 8) -> None:
        self.plan, self.keys, self.size = plan, list(keys), size
        self._cache: OrderedDict[int, dict[str, Tensor]] = OrderedDict()

    def row(self, i: int, j: int) -> dict[str, Tensor]:
        if i not in self._cache:
            self._cache[i] = kept_rows(self.plan, i, self.keys)
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(i)
        return {k: v[j] for k, v in self._cache[i].items()}


def stack(items: Sequence[tuple[dict[str, Any], dict[str, Tensor]]]) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """``[(row, images)]`` → batched image records and the rows."""
    records = {k: torch.stack([imgs[k] for _, imgs in items]) for k in (items[0][1] if items else {})}
    return records, [row for row, _ in items]


@dataclass
class HtmlRows:
    """Feeds rows (in index order) to an :class:`HtmlGallery` in batches, never splitting one image's rows."""

    page: HtmlGallery
    kind: GalleryKind
    _items: list[tuple[dict[str, Any], dict[str, Tensor]]] = field(default_factory=list)

    def add(self, row: dict[str, Any], images: dict[str, Tensor]) -> None:
        if len(self._items) >= HTML_BATCH and (not self.kind.several_targets
                                                or row["index"] != self._items[-1][0]["index"]):
            self.flush()
        self._items.append((row, images))

    def flush(self) -> None:
        if not self._items:
            return
        cards, columns = self.kind.cards(*stack(self._items))
        self.page.columns = columns
        for card in cards:
            self.page.add(card)
        self._items = []


def examples(items: Sequence[tuple[dict[str, Any], dict[str, Tensor]]]) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """The W&B examples table's rows: each row's numbers with its original, counterfactual and difference as
    uint8 arrays (the difference from the reconstruction where a latent method has one)."""
    out = []
    for row, imgs in items:
        start = imgs.get("reconstruction", imgs["image"])
        out.append((row, {"original": to_uint8(imgs["image"]), "counterfactual": to_uint8(imgs["x_cf"]),
                          "difference": to_uint8(difference_map(start, imgs["x_cf"]))}))
    return out
