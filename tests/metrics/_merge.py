"""Shared check: a metric updated on two halves and merged equals one updated on everything (what DDP does)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torchmetrics import Metric


def assert_merge_matches(make: Callable[[], Metric], updates: list[tuple[Any, ...]], split: int) -> None:
    full, a, b = make(), make(), make()
    for i, args in enumerate(updates):
        full.update(*args)
        (a if i < split else b).update(*args)
    a.merge_state(b)
    _assert_close(a.compute(), full.compute())


def _assert_close(x: Any, y: Any) -> None:
    if isinstance(x, dict):
        assert x.keys() == y.keys()
        for k in x:
            _assert_close(x[k], y[k])
    elif isinstance(x, torch.Tensor):
        assert torch.allclose(x.double(), torch.as_tensor(y).double(), rtol=1e-6, atol=1e-9, equal_nan=True), (x, y)
    else:
        assert x == y
