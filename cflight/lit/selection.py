"""Which explained images the gallery shows: a spread over (source → target) groups and over success and failure.

The first images by index would often show one class only (a folder's split is ordered by class), and only
successes. Instead the rows are grouped — a classifier's by (class of the original, target class), a
regressor's by (target slot, direction of the change) — and picked round-robin over the groups, largest
first, each pick from the outcome (success / failure) picked less so far. Within a group and outcome rows go
in index order, so the choice is deterministic and does not depend on how the shards were written. Only small
per-row columns are read (:data:`SELECT_KEYS`), one shard at a time.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from cflight.lit.shards import SLOT, SLOTS

# Per-row columns the choice needs (a shard lacking one, e.g. target_slot, is fine).
SELECT_KEYS = ["logits", "target_class", "valid", "success", "direction", SLOT]
_GROUP = 2**20  # classes or slots a group id tells apart


def row_groups(records: dict[str, Tensor], task: str = "classification") -> tuple[Tensor, Tensor]:
    """Each row's group id ``[N]`` (long) and outcome ``[N]`` (bool: the saved counterfactual is valid)."""
    n = len(next(iter(records.values()))) if records else 0
    ok = records.get("valid", records.get("success", torch.zeros(n, dtype=torch.bool))).bool()
    if task == "regression":
        slot = records.get(SLOT, torch.zeros(n, dtype=torch.long)).long()
        direction = records.get("direction", torch.ones(n, dtype=torch.long)).long()
        return slot * 2 + (direction > 0).long(), ok
    logits = records["logits"]
    source = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    return source * _GROUP + records["target_class"].long(), ok


def per_image(keys: Tensor, groups: Tensor, ok: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rows of an image explained toward several targets as one unit: its first key, its first row's group,
    and success when every target was reached."""
    image = keys // SLOTS
    unique, inverse = torch.unique(image, return_inverse=True)
    all_ok = torch.ones(len(unique), dtype=torch.long).scatter_reduce(0, inverse, ok.long(), "amin").bool()
    first = torch.full((len(unique),), len(keys), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(keys)), "amin")
    return keys[first], torch.zeros(len(unique), dtype=torch.long), all_ok


def balanced_choice(keys: Tensor, groups: Tensor, ok: Tensor, n: int) -> Tensor:
    """Up to ``n`` of ``keys`` spread over ``groups`` and balanced between ``ok`` and not; sorted for reading
    (by group, successes first, then key)."""
    if n <= 0 or not len(keys):
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(keys)
    pools: dict[int, tuple[list[int], list[int]]] = {}
    for key, group, good in zip(keys[order].tolist(), groups[order].tolist(), ok[order].tolist()):
        pool = pools.setdefault(group, ([], []))[0 if good else 1]
        if len(pool) < n:  # no group ever gives more than n
            pool.append(key)
    ranked = sorted(pools, key=lambda g: (-sum(map(len, pools[g])), g))
    picked: list[tuple[int, int, int]] = []
    taken = [0, 0]  # successes, failures picked so far
    depth = [[0, 0] for _ in ranked]
    while len(picked) < n and any(depth[r][s] < len(pools[g][s]) for r, g in enumerate(ranked) for s in (0, 1)):
        for r, g in enumerate(ranked):
            if len(picked) == n:
                break
            want = 0 if taken[0] <= taken[1] else 1
            for side in (want, 1 - want):
                if depth[r][side] < len(pools[g][side]):
                    picked.append((g, side, pools[g][side][depth[r][side]]))
                    depth[r][side] += 1
                    taken[side] += 1
                    break
    return torch.tensor([k for _, _, k in sorted(picked)], dtype=torch.long)


def choose_gallery(shards: Iterable[dict[str, Tensor]], keys: Iterable[Tensor], n: int,
                   task: str = "classification", several_targets: bool = False) -> list[int]:
    """The row keys the gallery shows, in reading order, from each shard's :data:`SELECT_KEYS` records and
    row keys.

    ``several_targets``: each image was explained toward several values; the gallery shows whole images (all
    their rows), ``n`` of them.
    """
    all_keys, all_groups, all_ok = [], [], []
    for records, k in zip(shards, keys):
        g, ok = row_groups(records, task)
        all_keys.append(k.long())
        all_groups.append(g)
        all_ok.append(ok)
    if not all_keys or n <= 0:
        return []
    k, g, ok = torch.cat(all_keys), torch.cat(all_groups), torch.cat(all_ok)
    if not several_targets:
        return balanced_choice(k, g, ok, n).tolist()
    first, g1, ok1 = per_image(k, g, ok)
    rank = {int(image): r for r, image in enumerate((balanced_choice(first, g1, ok1, n) // SLOTS).tolist())}
    return sorted((key for key in k.tolist() if key // SLOTS in rank), key=lambda key: (rank[key // SLOTS], key))
