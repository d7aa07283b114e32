"""Pure math shared by the counterfactual methods; every function here is unit-tested without models."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["OBJECTIVES", "adam_step", "class_probability", "class_score", "l1_distance", "l2_distance",
           "per_sample_normal", "sample_seed", "threshold_reached"]

OBJECTIVES = ("prob", "logit", "log_prob")


def class_probability(logits: Tensor, classes: Tensor) -> Tensor:
    """Probability of ``classes`` under ``logits``.

    Args:
        logits: ``[B, K]``; ``K == 1`` is a binary model (sigmoid), otherwise softmax.
        classes: ``[B]`` long; for a binary model 1 is the positive class and 0 its complement.
    Returns:
        ``[B]`` probabilities.
    """
    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits[:, 0])
        return torch.where(classes == 1, p1, 1 - p1)
    return logits.softmax(dim=1).gather(1, classes[:, None]).squeeze(1)


def class_score(logits: Tensor, classes: Tensor, objective: str = "prob") -> Tensor:
    """The quantity a classification counterfactual pushes, per sample ``[B]``.

    ``prob``: the raw probability (Counterfactual Attacks, spec §1.3 line 7); ``log_prob``: log-probability;
    ``logit``: log-odds ``log p − log(1 − p)``, computed stably from the logits.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")
    if objective == "prob":
        return class_probability(logits, classes)
    if logits.shape[1] == 1:
        z = torch.where(classes == 1, logits[:, 0], -logits[:, 0])
        return F.logsigmoid(z) if objective == "log_prob" else z
    own = logits.gather(1, classes[:, None]).squeeze(1)
    if objective == "log_prob":
        return own - logits.logsumexp(dim=1)
    others = logits.scatter(1, classes[:, None], float("-inf"))
    return own - others.logsumexp(dim=1)


def threshold_reached(p: Tensor, threshold: float | Tensor, direction: Tensor) -> Tensor:
    """``p > τ`` where ``direction == +1`` and ``p < τ`` where ``direction == −1`` (strict, spec §1.3 line 6)."""
    thr = torch.as_tensor(threshold, dtype=p.dtype, device=p.device)
    return torch.where(direction > 0, p > thr, p < thr)


def adam_step(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int, lr: float,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam update (Kingma & Ba 2015), numerically as ``torch.optim.Adam`` without weight decay.

    Functional so that rows of a batch can be updated selectively (per-sample early stopping) without the
    frozen rows' moments moving, which ``torch.optim.Adam`` would do even with a zero gradient.

    Args:
        param, grad, exp_avg, exp_avg_sq: same shape; ``step`` is the 1-based count of this update.
    Returns:
        ``(param, exp_avg, exp_avg_sq)`` after the update (new tensors).
    """
    beta1, beta2 = betas
    exp_avg = exp_avg * beta1 + grad * (1 - beta1)
    exp_avg_sq = exp_avg_sq * beta2 + grad * grad * (1 - beta2)
    bias1 = 1 - beta1**step
    bias2_sqrt = math.sqrt(1 - beta2**step)
    denom = exp_avg_sq.sqrt() / bias2_sqrt + eps
    return param - (lr / bias1) * exp_avg / denom, exp_avg, exp_avg_sq


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for one sample, derived from the job seed and the dataset index (DESIGN.md §3)."""
    return (int(seed) * 0x9E3779B97F4A7C15 + int(index) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (2**63 - 1)


def per_sample_normal(shape: tuple[int, ...], seed: int, index: Tensor, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard-normal noise ``[B, *shape]`` where row ``b`` depends only on ``(seed, index[b])``.

    Results therefore do not depend on batch size, batch composition or the number of processes.
    """
    rows = []
    for i in index.tolist():
        gen = torch.Generator().manual_seed(sample_seed(seed, i))
        rows.append(torch.randn(shape, generator=gen, dtype=dtype))
    return torch.stack(rows).to(device) if rows else torch.empty((0, *shape), dtype=dtype, device=device)


def l1_distance(x: Tensor, y: Tensor) -> Tensor:
    """Per-image l1 distance ``Σ|x − y|`` over ``C, H, W`` → ``[B]``."""
    return (x - y).abs().flatten(1).sum(1)


def l2_distance(x: Tensor, y: Tensor) -> Tensor:
    """Per-image l2 distance ``‖x − y‖₂`` over ``C, H, W`` → ``[B]``."""
    return (x - y).flatten(1).norm(dim=1)
