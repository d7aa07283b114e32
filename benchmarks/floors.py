"""Cost floors replayed from a run's own active-set sizes.

A method that computes only unfinished samples pays, at iteration ``i``, the network evaluations of the
``a_i`` samples still active. Its floor is ``Σ_i T(a_i)``, with ``T(a)`` the time of one forward *and*
backward pass of every network it differentiates at batch ``a`` (forward only where the run took no
gradient), measured in isolation. ``a_i`` is read from the run itself by a forward hook, so the floor uses
exactly the run's step counts; a ratio ``method / floor`` below 1 would mean the floor is wrong. Where an
algorithm needs several vector-Jacobian products through one forward (DVCE normalises each guidance term on
its own, so each needs its own backward through the denoiser), the floor charges each of them.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class ActiveRows:
    """Per forward call of ``net``: its rows and how many backward passes went through its output (``calls``)."""

    def __init__(self, net: nn.Module) -> None:
        self._calls: list[list] = []
        self.handle = net.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        call = [int(output.shape[0]), 0]
        self._calls.append(call)
        if output.requires_grad:  # fires once per backward pass that reaches this output
            output.register_hook(lambda grad, call=call: call.__setitem__(1, call[1] + 1))

    @property
    def calls(self) -> list[tuple[int, int]]:
        return [(rows, backward) for rows, backward in self._calls]

    def reset(self) -> None:
        self._calls.clear()

    def remove(self) -> None:
        self.handle.remove()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_times(fn: Callable[[], Any], reps: int, device: torch.device, warmup: int = 1) -> tuple[float, float]:
    """Median wall seconds and median process-CPU seconds of ``fn()`` over ``reps`` runs after ``warmup``.

    With one thread on a CPU, process time is nearly independent of other jobs on the machine; wall time
    is what a user waits (and the only meaningful one on a GPU)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def replay_floor(calls: list[tuple[int, int]], one_pass: Callable[[int, int], Any], reps: int,
                 device: torch.device) -> dict:
    """``Σ T(rows, backwards)`` over the recorded calls; ``one_pass(rows, backwards)`` runs every network
    once at that batch (forward, plus the backward passes the algorithm needs when ``backwards > 0``). Each
    distinct ``(rows, backwards)`` is timed ``reps`` times."""
    cost = {key: median_times(lambda key=key: one_pass(*key), reps, device) for key in sorted(set(calls))}
    return {"seconds": sum(cost[c][0] for c in calls), "cpu_seconds": sum(cost[c][1] for c in calls),
            "passes": len(calls), "rows": sum(rows for rows, _ in calls), "distinct_batches": len(cost)}
