"""Attribute-level metrics from an *oracle* attribute model's outputs on originals and counterfactuals:
MNAC (mean number of attributes changed) and CD (correlation difference), as DiME/ACE compute them
(`guillaumejs2403/ACE/compute_MNAC.py`, `compute_CD.py`; spec §2.7, §3.1–3.2). The metrics take the oracle's
outputs ``[B, K]``; the caller runs the oracle.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


def attributes_changed(before: Tensor, after: Tensor, threshold: float = 0.5, std: Tensor | None = None,
                       std_threshold: float = 0.5) -> Tensor:
    """``[B, K]`` bool: which attributes changed between ``before`` and ``after`` (``[B, K]`` each).

    Binary attributes (``std`` None): the decision at ``threshold`` flips, ``1[a > τ] ≠ 1[a' > τ]`` (ACE/STEEX:
    oracle probabilities at 0.5; pass ``threshold=0`` for logits). Continuous descriptors (e.g. MNIST
    morphometrics): ``|a' − a| > std_threshold · std_k`` with ``std`` ``[K]`` the descriptors' spread over the
    data (e.g. :class:`~cflight.metrics.summary.DescriptorMoments`); 0.5·std is a project choice, no paper
    defines MNAC for continuous descriptors.
    """
    if before.shape != after.shape or before.ndim != 2:
        raise ValueError(f"expected two [B, K] tensors of one shape, got {tuple(before.shape)}, "
                         f"{tuple(after.shape)}")
    if std is None:
        return (before > threshold) != (after > threshold)
    return (after - before).abs() > std_threshold * std.to(before)


class MNAC(Metric):
    """MNAC = mean_i Σ_k changed_ik (:func:`attributes_changed`) over the counterfactuals given (ACE averages
    over its successful ones), plus the per-attribute change rate ``[K]``.

    ACE counts all K oracle attributes, the query attribute included; ``ignore`` drops attribute indices (e.g.
    the query, to count only the collateral changes). ``update(before [B, K], after [B, K])``; ``compute()`` →
    ``mnac``, ``change_rate`` ``[K]``, ``n``. States: float64 sums (``"sum"``).
    """

    full_state_update = False

    def __init__(self, num_attributes: int, threshold: float = 0.5, std: Tensor | None = None,
                 std_threshold: float = 0.5, ignore: tuple[int, ...] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold, self.std_threshold = threshold, std_threshold
        if std is not None:
            std = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
            if std.numel() != num_attributes:
                raise ValueError(f"std has {std.numel()} values for {num_attributes} attributes")
            self.register_buffer("std", std)
        else:
            self.std = None
        keep = torch.ones(num_attributes, dtype=torch.float64)
        keep[list(ignore)] = 0
        self.register_buffer("keep", keep)
        self.add_state("changed", torch.zeros(num_attributes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, before: Tensor, after: Tensor) -> None:
        changed = attributes_changed(before.detach(), after.detach(), self.threshold, self.std, self.std_threshold)
        self.changed += changed.to(self.changed).sum(0)
        self.n += before.shape[0]

    def compute(self) -> dict[str, Tensor]:
        rate = self.changed / self.n
        return {"mnac": (rate * self.keep).sum(), "change_rate": rate, "n": self.n}


def pearson_from_sums(n: Tensor, s: Tensor, ss: Tensor, sq: Tensor, ssq: Tensor, cross: Tensor) -> Tensor:
    """Pearson correlation of each column ``k`` with a query column from running sums: ``s = Σv_k``,
    ``ss = Σv_k²``, ``sq = Σq``, ``ssq = Σq²``, ``cross = Σ q v_k`` over ``n`` rows → ``[K]``; 0 where either
    variance is 0 (ACE replaces ``np.corrcoef``'s NaN by 0)."""
    cov = n * cross - s * sq
    var = (n * ss - s * s) * (n * ssq - sq * sq)
    ok = var > 0
    return torch.where(ok, cov / var.clamp_min(1e-300).sqrt(), torch.zeros_like(cov))


class QueryCorrelation(Metric):
    """Streaming Pearson correlation of every column of ``[B, K]`` values with column ``query`` → ``[K]``.

    The data side of CD: ACE correlates the query label with each of the 40 CelebA labels over the training
    partition (labels in {0, 1}); update with those labels and pass ``compute()`` to
    :class:`CorrelationDifference`. States: float64 sums (``"sum"``).
    """

    full_state_update = False

    def __init__(self, num_attributes: int, query: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 <= query < num_attributes:
            raise ValueError(f"query {query} is not one of the {num_attributes} attributes")
        self.query = query
        for name in ("s", "ss", "cross"):
            self.add_state(name, torch.zeros(num_attributes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor) -> None:
        v = values.detach().to(self.s)
        self.s += v.sum(0)
        self.ss += (v * v).sum(0)
        self.cross += (v * v[:, self.query : self.query + 1]).sum(0)
        self.n += v.shape[0]

    def compute(self) -> Tensor:
        q = self.query
        return pearson_from_sums(self.n, self.s, self.ss, self.s[q], self.ss[q], self.cross)


class CorrelationDifference(QueryCorrelation):
    """CD (DiME/ACE, `compute_CD.py`): ``Σ_k |corr_cf(Δq, Δa_k) − corr_data(q, a_k)|``.

    ``Δa = 1[a(x') > τ] − 1[a(x) > τ]`` are the oracle's binarised attribute changes ``[B, K]`` (``q`` the query
    attribute, the one the classifier explains), ``corr_cf`` their Pearson correlation over the counterfactuals
    (0 where undefined) and ``corr_data`` ``[K]`` the correlation of the labels over the data (a
    :class:`QueryCorrelation` result). Lower is better: the counterfactuals change attributes together as the
    data does. All K attributes are summed, the query included, as ACE does.

    ``update(before [B, K], after [B, K])``; ``compute()`` → ``cd``, ``cf_correlation`` ``[K]``, ``n``.
    """

    def __init__(self, data_correlation: Tensor, query: int, threshold: float = 0.5, **kwargs: Any) -> None:
        data_correlation = torch.as_tensor(data_correlation, dtype=torch.float64).reshape(-1)
        super().__init__(data_correlation.numel(), query, **kwargs)
        self.threshold = threshold
        self.register_buffer("data_correlation", data_correlation)

    def update(self, before: Tensor, after: Tensor) -> None:  # type: ignore[override]
        if before.shape != after.shape or before.ndim != 2:
            raise ValueError(f"expected two [B, K] tensors of one shape, got {tuple(before.shape)}, "
                             f"{tuple(after.shape)}")
        super().update((after > self.threshold).to(self.s) - (before > self.threshold).to(self.s))

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        corr = super().compute()
        return {"cd": (corr - self.data_correlation).abs().sum(), "cf_correlation": corr, "n": self.n}
