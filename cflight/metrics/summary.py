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

SUMMED = ("valid", "success", "steps", "l1", "l2")


class CounterfactualSummary(Metric):
    """Per method: validity, success rate, mean steps and mean l1 / l2 distance over all rows.

    Args:
        num_methods: M (a :class:`~cflight.methods.MethodComparison` has several; one otherwise).
    """

    full_state_update = False

    def __init__(self, num_methods: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_methods = num_methods
        self.add_state("sums", torch.zeros(num_methods, len(SUMMED), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("max_target", torch.full((), -1.0, dtype=torch.float64), dist_reduce_fx="max")

    def update(self, columns: list[dict[str, Tensor]], target_class: Tensor) -> None:
        """``columns[m]`` holds method m's ``[B]`` ``valid, success, steps, l1, l2``; ``target_class`` ``[B]``."""
        if len(columns) != self.num_methods:
            raise ValueError(f"expected columns of {self.num_methods} methods, got {len(columns)}")
        rows = torch.stack([torch.stack([c[k].to(self.sums).reshape(-1) for k in SUMMED], 1).sum(0) for c in columns])
        self.sums += rows
        self.n += target_class.numel()
        if target_class.numel():
            self.max_target = torch.maximum(self.max_target, target_class.max().to(self.max_target))

    def compute(self) -> dict[str, Tensor]:
        """``n``, ``max_target`` and the ``[M]`` means ``validity, success_rate, mean_steps, mean_l1, mean_l2``."""
        mean = self.sums / self.n.clamp_min(1)
        names = ("validity", "success_rate", "mean_steps", "mean_l1", "mean_l2")
        return {"n": self.n, "max_target": self.max_target, **{k: mean[:, j] for j, k in enumerate(names)}}


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
