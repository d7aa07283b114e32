"""Per-sample early stopping of a method's loop (DESIGN.md §3: "a sample that reached its target stops
changing"; §5: "a finished sample costs nothing further").

A loop keeps its state for the active samples only. When some reach their target it hands their outcome to
:meth:`FrozenSamples.freeze` and drops them from its state with the returned mask, so later iterations
evaluate only unfinished samples. Used by :class:`~cflight.methods.DVCE`; the pixel-space ascent loops have
the same bookkeeping inside :mod:`cflight.methods.functional.ascent`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["FrozenSamples"]


class FrozenSamples:
    """Which rows of a batch of ``n`` still run (``ids``), and the recorded outcome of those that stopped.

    ``out[name]`` ``[n, ...]`` holds each frozen row's values, ``steps`` ``[n]`` the iteration it stopped at.
    """

    def __init__(self, n: int, device: torch.device) -> None:
        self.n = n
        self.ids = torch.arange(n, device=device)  # batch rows of the active samples, in loop order
        self.steps = torch.zeros(n, dtype=torch.long, device=device)
        self.out: dict[str, Tensor] = {}

    @property
    def empty(self) -> bool:
        return self.ids.numel() == 0

    def freeze(self, done: Tensor, step: int, **values: Tensor) -> Tensor | None:
        """Record ``values`` (``[A, ...]`` each, of the active rows) of the rows where ``done`` ``[A]`` holds.

        Returns the ``[A]`` bool mask of the rows that keep running, or ``None`` when none stopped.
        """
        if not bool(done.any()):
            return None
        rows = self.ids[done]
        for name, v in values.items():
            if name not in self.out:
                self.out[name] = v.new_zeros((self.n, *v.shape[1:]))
            self.out[name][rows] = v[done]
        self.steps[rows] = step
        self.ids = self.ids[~done]
        return ~done

    def spread(self, v: Tensor) -> Tensor:
        """An active-rows tensor ``[A, ...]`` as ``[n, ...]``, NaN on the rows that stopped."""
        full = v.new_full((self.n, *v.shape[1:]), math.nan)
        full[self.ids] = v
        return full
