"""Validity of classification counterfactuals: target reached, target confidence, flip rate — by the explained
model, and by an independently trained *oracle* (the counterfactual convinces a model it was not made for).

Definitions follow the project's targets (:class:`~cflight.types.ClassTarget`): a counterfactual is *valid*
when its target-class probability passes the threshold in the asked direction (strict, as the reference code
of Counterfactual Attacks, spec §1.3; with τ = 0.5 and K = 2 this is "the prediction is the target class",
the flip rate of DiME/ACE, spec §3.1–3.2). For a :class:`~cflight.types.RegressionTarget` valid means
``|ŷ' − ỹ| ≤ δ`` (Ha & Bender 2025, spec §2.2); its other summaries are in :mod:`cflight.metrics.regression`.
The metrics take model *outputs*; they never run a network.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from cflight.methods.functional.core import class_probability, decision_reached, predicted_class, target_reached
from cflight.types import ClassTarget, Target


def flipped(outputs: Tensor, outputs_cf: Tensor) -> Tensor:
    """``[B]`` bool: the predicted class of the counterfactual differs from the original's.

    For a binary model this is the sign flip of the logit (Ha & Bender's FR on the "Young" logit, spec §2.7)."""
    return predicted_class(outputs) != predicted_class(outputs_cf)


class Validity(Metric):
    """Share of valid counterfactuals, mean target confidence and flip rate.

    - ``validity`` = mean_i 1[target reached by the outputs on x'_i]
      (:func:`~cflight.methods.functional.target_reached`);
    - ``target_confidence`` = mean_i p(target class | x'_i) (sigmoid for ``K = 1``, softmax otherwise; for a
      binary target class 0, ``1 − σ``); NaN for regression targets;
    - ``flip_rate`` = mean_i 1[pred(x'_i) ≠ pred(x_i)] over the updates that gave the originals' outputs.

    ``update(outputs_cf [B, K], target, outputs=None [B, K])``. ``compute()`` → the three means (NaN where
    nothing was counted) and ``n``, keys prefixed by :attr:`prefix`. States are float64 sums (``"sum"``).
    """

    full_state_update = False
    prefix = ""
    _keys = ("validity", "target_confidence", "flip_rate")
    reached = staticmethod(target_reached)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sums", torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, outputs_cf: Tensor, target: Target, outputs: Tensor | None = None) -> None:
        out = outputs_cf.detach().float()
        if out.ndim != 2:
            raise ValueError(f"outputs_cf must be [B, K], got {tuple(out.shape)}")
        target = target.to(out.device)
        b = out.shape[0]
        if len(target) != b:
            raise ValueError(f"target has {len(target)} rows, outputs {b}")
        self.sums[0] += self.reached(out, target).to(self.sums).sum()
        self.counts[0] += b
        if isinstance(target, ClassTarget):
            self.sums[1] += class_probability(out, target.classes).to(self.sums).sum()
            self.counts[1] += b
        if outputs is not None:
            self.sums[2] += flipped(outputs.detach().float(), out).to(self.sums).sum()
            self.counts[2] += b
        self.n += b

    def compute(self) -> dict[str, Tensor]:
        mean = self.sums / self.counts
        return {**{self.prefix + k: mean[i] for i, k in enumerate(self._keys)}, self.prefix + "n": self.n}


class OracleValidity(Validity):
    """:class:`Validity` of the *oracle's* outputs on the counterfactuals (keys ``oracle_validity``,
    ``oracle_target_confidence``, ``oracle_flip_rate``, ``oracle_n``).

    The oracle is a model trained independently of the explained one (Ha & Bender's oracle regressor, spec §2.7;
    DiME/ACE's oracle classifiers): a counterfactual valid for the model but not for the oracle exploited the
    model (an adversarial example) rather than changing the class evidence. ``update(oracle_outputs_cf, target,
    oracle_outputs=None)`` — the caller runs the oracle.

    ``oracle_validity`` is the oracle's *decision* (:func:`~cflight.methods.functional.decision_reached`: its
    predicted class is the target), not the explained model's threshold τ, which is the search's stopping rule;
    ``oracle_target_confidence`` is its mean target probability.
    """

    prefix = "oracle_"
    reached = staticmethod(decision_reached)
