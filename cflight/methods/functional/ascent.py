"""What the ascent loops (:mod:`~cflight.methods.functional.frank_wolfe`, :mod:`~.auto_pgd`,
:mod:`~.projected_gradient`) share: the ``loss_grad`` contract, the result record, the best-iterate tracker
and the active set of per-sample early stopping.

The loops are model-free: they take a ``loss_grad(z) -> (loss [B], grad like z, aux)`` callable (``aux`` is
any ``[B, ...]`` tensor or ``None``, e.g. the model output, kept for the returned iterate so nothing is
evaluated twice) and *maximise* the loss.

Early stopping (optional ``stop``, off by default): ``stop(aux, rows) -> [A] bool`` says which of the active
iterates reached their goal (e.g. the target class probability); ``rows`` ``[A]`` are their batch rows. A
row that reached leaves the loop: its outcome is that iterate, and every later iteration runs on the
remaining rows only. With ``stop`` the loops call ``loss_grad(z, rows)``, so a ``loss_grad`` bound to
per-sample targets can select them. Every per-sample rule of the loops (steps, checkpoints, momentum) is
row-wise, so a row's trajectory does not depend on which other rows are still active.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from cflight.methods.functional.lp_geometry import _rows

__all__ = ["AFWResult", "LossGrad", "LossOnly", "StopFn"]

LossGrad = Callable[..., tuple[Tensor, Tensor, Tensor | None]]  # (z) or, with early stopping, (z, rows)
StopFn = Callable[[Tensor, Tensor], Tensor]  # (aux [A, ...], batch rows [A]) -> reached [A] bool
# (z) or (z, rows) -> (loss [B], aux): the loss of a LossGrad without its gradient (one forward, no backward)
LossOnly = Callable[..., tuple[Tensor, Tensor | None]]


@dataclass
class AFWResult:
    """Outcome of :func:`afw` / :func:`apgd` / :func:`pgd` (per sample, batch first).

    ``x``: the best-loss iterate (or the last, for ``pgd(keep_best=False)``; with early stopping, for a row
    that stopped, the iterate that reached); ``loss``: its loss; ``aux``: the ``aux`` that ``loss_grad``
    returned for it; ``loss0``: the loss at the starting point; ``trace``: with ``record=True``,
    per-iteration ``loss``, ``loss_best``, ``step`` (the step size used), ``reduced`` (bool, a checkpoint
    reduced the step) as ``[N, B]`` tensors and ``iterates`` ``[N + 1, B, ...]``; ``steps`` ``[B]`` long: the
    iterations each row ran (``N`` without early stopping); ``stopped`` ``[B]`` bool: the row stopped early.
    """

    x: Tensor
    loss: Tensor
    aux: Tensor | None
    loss0: Tensor
    trace: dict[str, Tensor] = field(default_factory=dict)
    steps: Tensor | None = None
    stopped: Tensor | None = None


class _Best:
    """Per-sample best-loss tracker (strict improvement, as the reference)."""

    def __init__(self, x: Tensor, loss: Tensor, grad: Tensor | None, aux: Tensor | None) -> None:
        self.x, self.loss = x.clone(), loss.clone()
        self.grad = None if grad is None else grad.clone()
        self.aux = None if aux is None else aux.clone()

    def update(self, x: Tensor, loss: Tensor, grad: Tensor | None, aux: Tensor | None) -> None:
        """Take ``x`` (and its loss, gradient, aux) where ``loss`` is strictly higher; ``grad=None`` (an
        evaluation without gradient, whose caller never reads :attr:`grad`) leaves :attr:`grad` as it is."""
        better = loss > self.loss
        self.loss = torch.where(better, loss, self.loss)
        self.x = _select(better, x, self.x)
        if grad is not None and self.grad is not None:
            self.grad = _select(better, grad, self.grad)
        if aux is not None and self.aux is not None:
            self.aux = _select(better, aux, self.aux)

    def keep(self, rows: Tensor) -> None:
        """Drop the rows where the ``[B]`` bool ``rows`` is false (they left the active set)."""
        self.x, self.loss = self.x[rows], self.loss[rows]
        self.grad = None if self.grad is None else self.grad[rows]
        self.aux = None if self.aux is None else self.aux[rows]


def _select(rows: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Rows of ``a`` where ``rows`` ``[B]`` is true, else of ``b``: an exact ``lerp`` with 0/1 weights (much
    faster than a broadcast ``torch.where`` on CPU; ``lerp(b, a, 1) == a`` and ``lerp(b, a, 0) == b``)."""
    return torch.lerp(b, a, _rows(rows, a).to(a.dtype))


def _stack_trace(trace: dict[str, list[Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack(v) for k, v in trace.items() if v}


class _ActiveSet:
    """The rows of a loop still running, and the outcome of those that stopped (module docstring).

    Without ``stop`` it is inert — ``loss_grad(z)`` is called as ever and no row ever leaves — so a loop
    computes bit for bit what it computed before early stopping existed.
    """

    def __init__(self, n: int, device: torch.device, loss_grad: LossGrad, stop: StopFn | None) -> None:
        self.n, self.loss_grad, self.stop = n, loss_grad, stop
        self.ids = torch.arange(n, device=device)  # batch rows of the active iterates
        self.steps = torch.zeros(n, dtype=torch.long, device=device)
        self.stopped = torch.zeros(n, dtype=torch.bool, device=device)
        self._out: dict[str, Tensor] = {}

    @property
    def empty(self) -> bool:
        return self.stop is not None and self.ids.numel() == 0

    def evaluate(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``loss_grad`` on the active iterates ``z`` ``[A, ...]``."""
        return self.loss_grad(z) if self.stop is None else self.loss_grad(z, self.ids)

    def evaluate_loss(self, loss_only: LossOnly, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """``loss_only`` (no gradient) on the active iterates ``z`` ``[A, ...]``."""
        return loss_only(z) if self.stop is None else loss_only(z, self.ids)

    def check(self, step: int, x: Tensor, loss: Tensor, aux: Tensor | None) -> Tensor | None:
        """Rows whose evaluated iterate ``x`` (after ``step`` iterations) reached leave with it as outcome.

        Returns the ``[A]`` bool mask of the rows that stay, or ``None`` when none left (nothing to drop).
        """
        if self.stop is None:
            return None
        if aux is None:
            raise ValueError("early stopping needs loss_grad to return aux (the input of stop)")
        done = self.stop(aux, self.ids)
        if not bool(done.any()):
            return None
        self._put(self.ids[done], x[done], loss[done], aux[done], step)
        self.stopped[self.ids[done]] = True
        self.ids = self.ids[~done]
        return ~done

    def _put(self, rows: Tensor, x: Tensor, loss: Tensor, aux: Tensor | None, step: int) -> None:
        for name, v in (("x", x), ("loss", loss), ("aux", aux)):
            if v is not None:
                if name not in self._out:
                    self._out[name] = v.new_zeros((self.n, *v.shape[1:]))
                self._out[name][rows] = v
        self.steps[rows] = step

    def result(self, x: Tensor, loss: Tensor, aux: Tensor | None, loss0: Tensor, step: int,
               trace: dict[str, Tensor]) -> AFWResult:
        """The loop's outcome: rows that stopped as recorded, the active ones ``(x, loss, aux)`` after ``step``
        iterations (``aux is None``: not evaluated, then no row gets an ``aux``)."""
        if self.stop is None:
            return AFWResult(x, loss, aux, loss0, trace, self.steps.fill_(step), self.stopped)
        self._put(self.ids, x, loss, aux, step)
        out_aux = None if aux is None and self.ids.numel() else self._out.get("aux")
        return AFWResult(self._out["x"], self._out["loss"], out_aux, loss0, trace, self.steps, self.stopped)


def _no_trace_with_stop(record: bool, stop: StopFn | None) -> None:
    if record and stop is not None:
        raise ValueError("record=True and early stopping (stop) cannot be combined: the trace would be ragged")
