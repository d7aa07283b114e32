"""COUT, the counterfactual transition score (Khorram & Fuxin 2022, "Cycle-consistent counterfactuals by latent
transformations"), as ACE evaluates it (`guillaumejs2403/ACE/eval_utils/cout_metrics.py`, spec §3.2).

Pixel positions are ranked by the change ``Σ_c |x'_c − x_c|`` (most changed first) and inserted from x' into x
in ``T = ⌈HW/s⌉`` groups of ``s = max(1, ⌊HW/num_steps⌋)`` positions (ACE: ``num_steps = 50``):
``x^(t) = m_t ⊙ x' + (1 − m_t) ⊙ x``, ``m_t`` the first ``min(t·s, HW)`` positions, ``t = 0 … T``. Along the
path the model gives ``p_src(t)`` (the source class) and ``p_tgt(t)`` (the target class), and

    COUT = AUC(p_tgt) − AUC(p_src) ∈ [−1, 1],  AUC(p) = (s/HW)·[p(0)/2 + Σ_{t=1}^{T−1} p(t) + p(T)/2]

(``weighting="ace"``: every interval weighs ``s/HW``, also a shorter last one; ``"trapezoid"``: the trapezoid
rule on the inserted fractions ``min(t·s, HW)/HW``; both agree when ``s`` divides ``HW``). High COUT: the
model's belief moves from source to target early and smoothly along the changes the counterfactual made.

Binary models (one logit, ACE's ``binary`` mode): the source is the prediction on x (``logit > 0``),
``p_src = σ(±logit)`` its probability and ``p_tgt = 1 − p_src``. Multiclass: softmax of the given classes.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from einops import rearrange, reduce
from torch import Tensor
from torchmetrics import Metric

from cflight.methods.functional.core import class_probability


def insertion_rank(x: Tensor, x_cf: Tensor) -> Tensor:
    """``[B, H·W]`` long: each pixel position's rank by ``Σ_c |x'_c − x_c|`` (0 = most changed; ties by
    position, a stable sort, so the path is deterministic)."""
    change = reduce((x_cf - x).abs(), "b c h w -> b (h w)", "sum")
    order = torch.sort(change, dim=1, descending=True, stable=True).indices
    return torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=x.device).expand_as(order))


def insertion_fractions(num_positions: int, num_steps: int = 50) -> tuple[int, list[int]]:
    """``(s, [min(t·s, HW) for t = 0 … T])``: the group size and the number of inserted positions per point."""
    step = max(1, num_positions // num_steps)
    return step, [min(t * step, num_positions) for t in range(math.ceil(num_positions / step) + 1)]


@torch.no_grad()
def insertion_curves(model: Callable[[Tensor], Tensor], x: Tensor, x_cf: Tensor, target: Tensor | None = None,
                     source: Tensor | None = None, num_steps: int = 50) -> tuple[Tensor, Tensor, Tensor]:
    """The insertion path's probabilities: ``(inserted [T+1] fractions, p_src [B, T+1], p_tgt [B, T+1])``.

    ``x``, ``x_cf`` ``[B, C, H, W]``; ``model`` maps images to ``[B, K]`` logits. ``target`` ``[B]`` (needed for
    ``K ≥ 2``; ignored for ``K = 1``); ``source`` ``[B]`` defaults to the prediction on ``x``. One forward of
    ``B`` images per point (``T + 1 ≈ num_steps + 1`` forwards).
    """
    if x.shape != x_cf.shape or x.ndim != 4:
        raise ValueError(f"expected two [B, C, H, W] batches of one shape, got {tuple(x.shape)}, "
                         f"{tuple(x_cf.shape)}")
    rank = rearrange(insertion_rank(x, x_cf), "b (h w) -> b 1 h w", h=x.shape[2])
    step, counts = insertion_fractions(rank.shape[2] * rank.shape[3], num_steps)
    p_src, p_tgt = [], []
    for t, k in enumerate(counts):
        mask = (rank < k).to(x.dtype)
        logits = model(mask * x_cf + (1 - mask) * x)
        if t == 0:
            binary = logits.shape[1] == 1
            if source is None:
                source = (logits[:, 0] > 0).long() if binary else logits.argmax(1)
            if binary:
                target = 1 - source
            elif target is None:
                raise ValueError("a multiclass model needs the target classes")
        p_src.append(class_probability(logits, source))
        p_tgt.append(class_probability(logits, target))
    fractions = torch.tensor(counts, dtype=torch.float64, device=x.device) / counts[-1]
    return fractions, torch.stack(p_src, 1), torch.stack(p_tgt, 1)


def curve_area(curve: Tensor, fractions: Tensor, weighting: str = "ace") -> Tensor:
    """Area under ``[B, T+1]`` curves at inserted ``fractions`` ``[T+1]`` → ``[B]`` (see the module)."""
    if weighting == "ace":
        width = fractions[1] - fractions[0]  # s/HW
        return width * (curve[:, 0] / 2 + curve[:, 1:-1].sum(1) + curve[:, -1] / 2)
    if weighting == "trapezoid":
        return torch.trapezoid(curve, fractions.to(curve), dim=1)
    raise ValueError(f"weighting must be 'ace' or 'trapezoid', got {weighting!r}")


def cout_scores(model: Callable[[Tensor], Tensor], x: Tensor, x_cf: Tensor, target: Tensor | None = None,
                source: Tensor | None = None, num_steps: int = 50, weighting: str = "ace") -> Tensor:
    """Per-image COUT ``[B]`` = AUC(p_tgt) − AUC(p_src) along the insertion path (see the module)."""
    fractions, p_src, p_tgt = insertion_curves(model, x, x_cf, target, source, num_steps)
    area = curve_area(p_tgt.double(), fractions, weighting) - curve_area(p_src.double(), fractions, weighting)
    return area.to(x.dtype)


class COUT(Metric):
    """Mean of per-image COUT scores (:func:`cout_scores`) — the metric does not run the model.

    ``update(scores [B])``; ``compute()`` → the mean (NaN before any score). States: float64 sum and count.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: Tensor) -> None:
        self.total += scores.detach().to(self.total).sum()
        self.n += scores.numel()

    def compute(self) -> Tensor:
        return self.total / self.n
