"""Toy counterfactual methods with known outputs, for writer / comparison / FID tests."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cflight.methods import functional as Fn
from cflight.methods.base import CounterfactualMethod
from cflight.types import ClassTarget, CounterfactualOutput


class ScaleMethod(CounterfactualMethod):
    """``x_cf = factor · x`` (``factor = 1``: the counterfactual is the original itself)."""

    def __init__(self, factor: float = 1.0, max_batch_size: int | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size)
        self.factor = factor
        self.calls = 0

    def run(self, x: Tensor, target: ClassTarget, model: nn.Module, index: Tensor,
            pred: Tensor) -> CounterfactualOutput:
        self.calls += 1
        x_cf = x * self.factor
        with torch.no_grad():
            pred_cf = model(x_cf)
        p = Fn.class_probability(pred_cf, target.classes)
        success = Fn.threshold_reached(p, target.threshold, target.direction)
        steps = torch.full((x.shape[0],), int(100 * (1 - self.factor)), dtype=torch.long)
        return CounterfactualOutput(x_cf, pred, pred_cf, success, steps,
                                    extras={"factor": torch.full_like(p, self.factor)})


class SlowScaleMethod(ScaleMethod):
    """:class:`ScaleMethod` that sleeps ``delay`` seconds per chunk: a job slow enough to interrupt."""

    def __init__(self, factor: float = 1.0, delay: float = 0.5, max_batch_size: int | None = None) -> None:
        super().__init__(factor, max_batch_size)
        self.delay = delay

    def run(self, x: Tensor, target: ClassTarget, model: nn.Module, index: Tensor,
            pred: Tensor) -> CounterfactualOutput:
        import time

        time.sleep(self.delay)
        return super().run(x, target, model, index, pred)
