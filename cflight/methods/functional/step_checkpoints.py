"""The APGD step-size checkpoints shared by APGD and Auto-Frank-Wolfe (Croce & Hein 2020; spec
dvce_svce.md §3.3)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["checkpoint_iterations"]


def checkpoint_iterations(n_iter: int) -> list[int]:
    """0-based iterations at which the APGD/AFW step-size checkpoints fire (spec §3.3).

    ``k₀ = max(⌊0.22N⌋, 1)``, then the period shrinks by ``max(⌊0.03N⌋, 1)`` down to ``max(⌊0.06N⌋, 1)``.
    For ``N = 75``: 15, 29, 41, 51, 59, 65, 69, 73.
    """
    k, k_min, decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    out, i = [], k - 1
    while i < n_iter:
        out.append(i)
        k = max(k - decr, k_min)
        i += k
    return out


class _Checkpoints:
    """The APGD rule that flags samples for a step-size reduction (Croce & Hein 2020, spec §3.3 lines 12–17).

    At a checkpoint with period ``k``: ``osc`` = at most ``ρ·k`` of the last ``k`` steps increased the loss;
    ``stall`` = the previous checkpoint did not reduce and the best loss has not improved since. The first
    recorded loss has no predecessor and counts as "no increase" — the reference compares it with a still
    zero row, always false for its non-positive log-confidence losses (a harmless quirk, spec §3.3).
    """

    def __init__(self, n_iter: int, loss_best: Tensor, rho: float) -> None:
        self.k = max(int(0.22 * n_iter), 1)
        self.k_min, self.decr = max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
        self.rho, self.counter = rho, 0
        self.reduced_last = torch.ones_like(loss_best, dtype=torch.bool)
        self.best_last = loss_best.clone()
        self.losses: list[Tensor] = []

    def step(self, loss: Tensor, loss_best: Tensor) -> Tensor | None:
        """Record one iteration's loss; at a checkpoint return the ``[B]`` bool reduce mask, else ``None``."""
        self.losses.append(loss)
        self.counter += 1
        if self.counter < self.k:
            return None
        i, k = len(self.losses) - 1, self.k
        ups = torch.zeros_like(loss)
        for j in range(i - k + 1, i + 1):
            if j >= 1:
                ups = ups + (self.losses[j] > self.losses[j - 1]).to(loss.dtype)
        osc = ups <= self.rho * k
        stall = ~self.reduced_last & (self.best_last >= loss_best)
        reduce = osc | stall
        self.reduced_last, self.best_last = reduce, loss_best.clone()
        self.k = max(self.k - self.decr, self.k_min)
        self.counter = 0
        return reduce

    def keep(self, rows: Tensor) -> None:
        """Drop the rows where the ``[B]`` bool ``rows`` is false (early stopping); the schedule is global."""
        self.losses = [loss[rows] for loss in self.losses]
        self.reduced_last, self.best_last = self.reduced_last[rows], self.best_last[rows]
