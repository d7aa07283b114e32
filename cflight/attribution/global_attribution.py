"""Global explanations: sign-adjusted means of local attributions (spec §1.6.4), reduced across processes."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from cflight.attribution.local import top_k


GLOBAL_ROWS = ("valid", "nonzero_grad", "all")


def global_rows(valid: Tensor, zero_grad: Tensor | None = None, rule: str = "valid") -> Tensor:
    """Which rows enter the global mean (spec §1.6.4), ``[B]`` bool.

    Args:
        valid: ``[B]`` bool, the counterfactual reaches its target on the explained model.
        zero_grad: ``[B]`` bool, the latent attack stopped on an exactly zero gradient (``None``: none did).
        rule: ``"valid"`` (default): valid counterfactuals only, as the paper aggregates its counterfactuals
            and the README promises; ``"nonzero_grad"``: every row but the zero-gradient ones, the reference's
            rule (``generate_counterfactual`` returns ``None`` for them, so they never enter its mean);
            ``"all"``: every row (a zero-gradient sample then adds zero change and counts once).
    """
    if rule not in GLOBAL_ROWS:
        raise ValueError(f"global_rows must be one of {GLOBAL_ROWS}, got {rule!r}")
    keep = torch.ones_like(valid, dtype=torch.bool)
    if rule == "valid":
        keep = valid.bool()
    if rule != "all" and zero_grad is not None:
        keep = keep & ~zero_grad.to(keep.device).bool()
    return keep


class GlobalAttribution(Metric):
    """``S = (1/N) Σ_i d_i · s_i`` overall, per (target class, direction) and per (source → target) pair.

    Only the rows ``update`` is told to include count (:func:`global_rows`: valid counterfactuals by
    default). ``d_i = +1`` when the counterfactual pushed the target probability up, ``−1`` when down, so a positive
    ``S_k`` means "moving toward the target increases descriptor k". Sums and counts are states with
    ``dist_reduce_fx="sum"``, so the value on N processes equals the single-process value.

    Args:
        num_descriptors: K.
        num_classes: C, for the per-class and per-pair breakdowns (2 for a one-logit model).
    """

    full_state_update = False

    def __init__(self, num_descriptors: int, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_descriptors < 1 or num_classes < 1:
            raise ValueError("num_descriptors and num_classes must be >= 1")
        k, c = num_descriptors, num_classes
        self.num_descriptors, self.num_classes = k, c
        self.add_state("total", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("by_target", torch.zeros(c, 2, k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("by_target_count", torch.zeros(c, 2, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("by_pair", torch.zeros(c, c, k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("by_pair_count", torch.zeros(c, c, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: Tensor, direction: Tensor, source: Tensor, target: Tensor,
               include: Tensor | None = None) -> None:
        """Args: ``scores`` ``[B, K]`` local attributions, ``direction`` ``[B]`` ±1, ``source``/``target`` ``[B]``
        classes, ``include`` ``[B]`` bool: rows to aggregate (:func:`global_rows`; ``None``: all)."""
        if scores.ndim != 2 or scores.shape[1] != self.num_descriptors:
            raise ValueError(f"scores must be [B, {self.num_descriptors}], got {tuple(scores.shape)}")
        if include is not None:
            include = include.to(scores.device).bool().reshape(-1)
            if include.shape[0] != scores.shape[0]:
                raise ValueError(f"include must be [B] = [{scores.shape[0]}], got {tuple(include.shape)}")
            scores, direction, source, target = (t[include.to(t.device)] for t in (scores, direction, source, target))
        signed = scores.double() * direction.double()[:, None]
        d = (direction < 0).long()  # 0: increase, 1: decrease
        self.total += signed.sum(0)
        self.count += signed.shape[0]
        self.by_target.index_put_((target, d), signed, accumulate=True)
        self.by_target_count.index_put_((target, d), torch.ones_like(signed[:, 0]), accumulate=True)
        self.by_pair.index_put_((source, target), signed, accumulate=True)
        self.by_pair_count.index_put_((source, target), torch.ones_like(signed[:, 0]), accumulate=True)

    def compute(self) -> dict[str, Tensor]:
        """``overall [K]``, ``by_target [C, 2, K]``, ``by_pair [C, C, K]`` means (NaN where no sample)."""
        return {
            "overall": self.total / self.count,
            "by_target": self.by_target / self.by_target_count[..., None],
            "by_pair": self.by_pair / self.by_pair_count[..., None],
            "count": self.count, "by_target_count": self.by_target_count, "by_pair_count": self.by_pair_count,
        }


def summarise(result: dict[str, Tensor], names: Sequence[str], class_names: Sequence[str] | None = None,
              k: int = 5) -> dict[str, Any]:
    """A JSON-ready summary: every descriptor ranked by ``|S|`` overall, top ``k`` per target and per pair."""
    cname = (lambda c: class_names[c]) if class_names else str
    out: dict[str, Any] = {
        "n": int(result["count"]),
        "overall": [{"descriptor": n, "score": v} for n, v in top_k(result["overall"].float(), names, len(names))],
        "by_target": [], "by_pair": [],
    }
    for c in range(result["by_target"].shape[0]):
        for d, label in ((0, "increase"), (1, "decrease")):
            n = int(result["by_target_count"][c, d])
            if n:
                out["by_target"].append({"target": cname(c), "direction": label, "n": n,
                                         "top": top_k(result["by_target"][c, d].float(), names, k)})
    for s in range(result["by_pair"].shape[0]):
        for t in range(result["by_pair"].shape[1]):
            n = int(result["by_pair_count"][s, t])
            if n:
                out["by_pair"].append({"source": cname(s), "target": cname(t), "n": n,
                                       "top": top_k(result["by_pair"][s, t].float(), names, k)})
    return out
