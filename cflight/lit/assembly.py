"""Streaming over an explanation job's shards: which rows count, who reads what, and rows in index order.

Nothing here holds more than a few shards at once. A :class:`ShardPlan` is built from the shards' indices
only (no images): an index found in several shards (a rerun rewrote it) counts once, in the first shard in
name order, on every process alike. Process ``rank`` of ``world_size`` reads the shards ``rank, rank +
world_size, …`` for the reduced metrics; rank 0 alone walks all rows in index order for ``results.csv``
(:func:`rows_in_index_order`), which keeps open only the shards whose index ranges overlap.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cflight.lit.shards import ShardInfo, read_rows


@dataclass
class ShardPlan:
    """The finished shards of a job and, for each, the positions of the rows that count."""

    paths: list[str]
    keep: list[Tensor]          # [n_i] long positions of the kept rows of shard i
    kept_keys: list[Tensor]    # [n_i] their row keys (dataset index · 2^16 + target slot, shards.row_key)
    unreadable: Tensor          # sorted unique indices of images skipped as unreadable

    @property
    def n_rows(self) -> int:
        return sum(len(k) for k in self.keep)

    def keys(self) -> Tensor:
        """All kept row keys, sorted ``[N]`` (:func:`~cflight.lit.shards.row_key`: by index, then target slot)."""
        if not self.kept_keys:
            return torch.zeros(0, dtype=torch.long)
        return torch.cat(self.kept_keys).sort().values

    def share(self, rank: int, world_size: int) -> list[int]:
        """The shard numbers process ``rank`` reads (they partition the shards whatever the world size)."""
        return [i for i in range(len(self.paths)) if i % world_size == rank and len(self.keep[i])]


def make_plan(infos: Sequence[ShardInfo]) -> ShardPlan:
    """Deduplicate rows across shards (first shard in name order wins) from their keys alone."""
    seen: set[int] = set()
    explained: set[int] = set()
    paths, keep, kept_keys, unreadable = [], [], [], set()
    for info in sorted(infos, key=lambda s: s.path):
        rows = []
        for j, key in enumerate(info.key.tolist()):
            if key not in seen:
                seen.add(key)
                rows.append(j)
        explained.update(info.index.tolist())
        unreadable.update(info.unreadable.tolist())
        pos = torch.tensor(rows, dtype=torch.long)
        paths.append(info.path)
        keep.append(pos)
        kept_keys.append(info.key[pos] if rows else torch.zeros(0, dtype=torch.long))
    unread = torch.tensor(sorted(unreadable - explained), dtype=torch.long)
    return ShardPlan(paths, keep, kept_keys, unread)


def kept_rows(plan: ShardPlan, i: int, keys: Sequence[str], rows: Tensor | None = None) -> dict[str, Tensor]:
    """The kept rows of shard ``i`` (or the subset ``rows`` of its kept positions), only ``keys``."""
    records = read_rows(plan.paths[i], keys)
    pos = plan.keep[i] if rows is None else plan.keep[i][rows]
    return {k: v[pos] for k, v in records.items()}


def iter_share(plan: ShardPlan, keys: Sequence[str], rank: int = 0, world_size: int = 1) -> Iterator[dict[str, Tensor]]:
    """This process's share of the rows, one shard at a time."""
    for i in plan.share(rank, world_size):
        yield kept_rows(plan, i, keys)


def rows_in_index_order(plan: ShardPlan, load: Callable[[int], list[Any]]) -> Iterator[Any]:
    """Items of every kept row in key order (dataset index, then target slot); ``load(i)`` gives shard ``i``'s.

    ``load(i)`` returns one item per kept row of shard ``i``, in the order of ``plan.keep[i]``. Shards are
    opened in order of their smallest index, and a row is released as soon as no unopened shard can hold a
    smaller index, so only shards whose index ranges overlap are in memory together (a sequential or
    distributed sampler: about one per process; a shuffled one: all rows' small items, never their images).
    """
    order = sorted((int(k.min()), i) for i, k in enumerate(plan.kept_keys) if len(k))
    heap: list[tuple[int, int, int, Any]] = []
    for n, (first, i) in enumerate(order):
        while heap and heap[0][0] < first:
            yield heapq.heappop(heap)[3]
        for j, (idx, item) in enumerate(zip(plan.kept_keys[i].tolist(), load(i))):
            heapq.heappush(heap, (idx, n, j, item))
    while heap:
        yield heapq.heappop(heap)[3]
