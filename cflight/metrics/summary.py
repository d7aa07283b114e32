"""Reducible summaries of an explanation job's rows (sums and counts summed across processes).

Each process updates these with its share of the finished shards; ``compute()`` sums the states across
processes (torchmetrics' ``dist_reduce_fx="sum"``), so every process gets the single-process value and no
process ever holds more than one shard. States live on the metric's device: under NCCL that must be the
GPU (move the metric with ``.to(module.device)`` before updating).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

class CounterfactualSummary(Metric):
    """Per method and column: the mean of a per-row value over all rows where it is defined (finite).

    ``columns`` name the per-row values (``valid``, ``success``, ``steps``, ``l1``, ``l2``, and e.g.
    ``abs_error``, ``oracle_valid``, ``background_mae``); a column a row does not have (missing from the
    update, or NaN) does not count toward its mean, so optional columns need no special case on any process.

    Args:
        columns: the column names, the same on every process.
        num_methods: M (a :class:`~cflight.methods.MethodComparison` has several; one otherwise).
    """

    full_state_update = False

    def __init__(self, columns: list[str], num_methods: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.columns, self.num_methods = list(columns), num_methods
        shape = (num_methods, len(self.columns))
        self.add_state("sums", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("max_target", torch.full((), -1.0, dtype=torch.float64), dist_reduce_fx="max")

    def update(self, columns: list[dict[str, Tensor]], target_class: Tensor) -> None:
        """``columns[m]`` holds method m's ``[B]`` values by column name; ``target_class`` ``[B]``."""
        if len(columns) != self.num_methods:
            raise ValueError(f"expected columns of {self.num_methods} methods, got {len(columns)}")
        b = target_class.numel()
        for m, given in enumerate(columns):
            for c, name in enumerate(self.columns):
                if name not in given:
                    continue
                v = given[name].to(self.sums).reshape(-1)
                ok = torch.isfinite(v)
                self.sums[m, c] += torch.where(ok, v, torch.zeros_like(v)).sum()
                self.counts[m, c] += ok.sum()
        self.n += b
        if b:
            self.max_target = torch.maximum(self.max_target, target_class.max().to(self.max_target))

    def compute(self) -> dict[str, Tensor]:
        """``n``, ``max_target`` and ``mean`` ``[M, C]`` (NaN where a column had no value)."""
        mean = self.sums / self.counts
        return {"n": self.n, "max_target": self.max_target, "mean": mean.reshape(self.num_methods, len(self.columns))}


class DescriptorMoments(Metric):
    """Mean and population standard deviation of ``[B, K]`` descriptor values over all rows."""

    full_state_update = False

    def __init__(self, num_descriptors: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("s1", torch.zeros(num_descriptors, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("s2", torch.zeros(num_descriptors, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor) -> None:
        v = values.to(self.s1)
        self.s1 += v.sum(0)
        self.s2 += (v * v).sum(0)
        self.n += v.shape[0]

    def compute(self) -> dict[str, Tensor]:
        n = self.n.clamp_min(1)
        mean = self.s1 / n
        var = (self.s2 / n - mean * mean).clamp_min(0)
        return {"n": self.n, "mean": mean, "std": var.sqrt()}


class DifferenceMeans(Metric):
    """Mean signed change ``x' − x`` ``[S, C, H, W]`` per target slot (an image explained toward S values).

    One map per target value: where, on average over the explained images, the counterfactuals toward that
    value changed the image (Ha & Bender 2025's per-target mean-difference heat maps).
    """

    full_state_update = False

    def __init__(self, num_slots: int, shape: tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sums", torch.zeros(num_slots, *shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(num_slots, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, change: Tensor, slot: Tensor) -> None:
        """``change`` ``[B, C, H, W]``, ``slot`` ``[B]`` long."""
        slot = slot.long().to(self.counts.device)
        self.sums.index_add_(0, slot, change.to(self.sums))
        self.counts.index_add_(0, slot, torch.ones_like(slot, dtype=self.counts.dtype))

    def compute(self) -> dict[str, Tensor]:
        return {"mean": self.sums / self.counts.clamp_min(1).reshape(-1, *[1] * (self.sums.ndim - 1)),
                "counts": self.counts}
