"""Regression counterfactual metrics of Ha & Bender 2025 (spec §2.2, §2.7: `diff_cf_ir/metrics.py`,
`scripts/metrics/run_metrics.py`), streaming and reducible across processes.

With explained regressor f, oracle regressor g (trained independently), target ỹ and tolerance δ:

- ``success_rate``       mean 1[|f(x') − ỹ| ≤ δ]         (their ``success_rate``)
- ``mae_to_target``      mean |f(x') − ỹ|                 (``y_final_confidence``)
- ``mae_before``         mean |f(x) − ỹ|                  (``y_initial_confidence``; needs ``pred``)
- ``oracle_success_rate`` mean 1[|g(x') − ỹ| ≤ δ]         (``success_rate_oracle``)
- ``oracle_mae_to_target`` mean |g(x') − ỹ|              (``y_final_confidence_oracle``)
- ``oracle_model_gap``   mean |g(x') − f(x')|             (``y_final_pred_oracle_mae``)

Outputs are ``[B]`` or ``[B, 1]``; a column whose input was not given in an update does not count toward
its mean (NaN when never given).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from cflight.types import RegressionTarget

REGRESSION_KEYS = ("success_rate", "mae_to_target", "mae_before", "oracle_success_rate", "oracle_mae_to_target",
                   "oracle_model_gap")


def _values(v: Tensor, b: int, name: str) -> Tensor:
    v = v.detach().float()
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.shape != (b,):
        raise ValueError(f"{name} must be [B] or [B, 1] with B = {b}, got {tuple(v.shape)}")
    return v


def regression_columns(pred_cf: Tensor, target: RegressionTarget, pred: Tensor | None = None,
                       oracle_cf: Tensor | None = None) -> dict[str, Tensor]:
    """The per-row values ``[B]`` behind :data:`REGRESSION_KEYS` (only those the given inputs define)."""
    b = len(target)
    y_cf = _values(pred_cf, b, "pred_cf")
    value = target.value.to(y_cf)
    tol = torch.as_tensor(target.tolerance, dtype=y_cf.dtype, device=y_cf.device)
    err = (y_cf - value).abs()
    cols = {"success_rate": (err <= tol).to(y_cf), "mae_to_target": err}
    if pred is not None:
        cols["mae_before"] = (_values(pred, b, "pred") - value).abs()
    if oracle_cf is not None:
        g = _values(oracle_cf, b, "oracle_cf")
        cols.update(oracle_success_rate=((g - value).abs() <= tol).to(y_cf), oracle_mae_to_target=(g - value).abs(),
                    oracle_model_gap=(g - y_cf).abs())
    return cols


class RegressionSuccess(Metric):
    """Means of :func:`regression_columns` over all updated rows (see the module for the formulas).

    ``update(pred_cf, target: RegressionTarget, pred=None, oracle_cf=None)`` with ``[B]``/``[B, 1]`` outputs of
    f on x', f on x, and the oracle g on x'. ``compute()`` → the six means and ``n``. States: float64 sums and
    counts, summed across processes.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sums", torch.zeros(len(REGRESSION_KEYS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(len(REGRESSION_KEYS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred_cf: Tensor, target: RegressionTarget, pred: Tensor | None = None,
               oracle_cf: Tensor | None = None) -> None:
        if not isinstance(target, RegressionTarget):
            raise TypeError(f"RegressionSuccess needs a RegressionTarget, got {type(target).__name__}")
        cols = regression_columns(pred_cf, target.to(pred_cf.device), pred, oracle_cf)
        for i, key in enumerate(REGRESSION_KEYS):
            if key in cols:
                self.sums[i] += cols[key].to(self.sums).sum()
                self.counts[i] += cols[key].numel()
        self.n += len(target)

    def compute(self) -> dict[str, Tensor]:
        mean = self.sums / self.counts
        return {**{k: mean[i] for i, k in enumerate(REGRESSION_KEYS)}, "n": self.n}
