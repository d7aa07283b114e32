"""Cost accounting of a counterfactual method: network evaluations, wall time and peak memory (DESIGN.md §5:
the cost floor of a method is its unavoidable forward and backward passes).

:class:`EvaluationCounter` is model-agnostic: it hooks the ``forward`` of each named network and counts its
calls and the batch rows (samples) they process; for every call whose output takes part in autograd it also
hooks the output tensors, so the backward through that call is counted when a gradient reaches its output —
whether the graph comes from the image input (a counterfactual search on frozen networks, where
``register_full_backward_hook`` sees no input that requires grad) or from the parameters (training).
One backward through a call counts once, however many of its outputs receive gradients (also when the
backward runs after the block: the hook lives on the graph built inside it). A call re-run by gradient
checkpointing counts as a forward again (it is paid again).

How an explanation job would wrap a method call (``ExplainModule.predict_step``)::

    counter = EvaluationCounter({"model": self.model, "denoiser": self.method.unet})  # once, in __init__
    with counter:                                  # per batch; counts accumulate over the job
        out = self.method(x, target, self.model, index=index, pred=logits)
    ...
    cost = counter.summary(num_images=n_explained)  # at the end (per process; sum the counts across ranks)
"""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves


@dataclass
class Evaluations:
    """Counts of one network: calls and samples (batch rows) of its forward and backward passes."""

    forward_calls: int = 0
    forward_samples: int = 0
    backward_calls: int = 0
    backward_samples: int = 0


def _rows(args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> int:
    """Batch rows of a call: the leading size of its first tensor input (else of its first tensor output)."""
    for leaf in (*tree_leaves((args, kwargs)), *tree_leaves(output)):
        if isinstance(leaf, Tensor) and leaf.ndim > 0:
            return int(leaf.shape[0])
    return 1


def _rss_peak_mb() -> float:
    """The process's peak resident set size so far (``getrusage``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


class EvaluationCounter:
    """Context manager counting the forward/backward passes of ``networks`` (by name) inside its blocks.

    Re-entering accumulates (counts and seconds); :meth:`reset` clears. Peak memory: on CUDA the largest
    ``torch.cuda.max_memory_allocated`` over the blocks (peak stats are reset on entry); on the CPU the
    process's peak RSS (it cannot be reset, so it is an upper bound of the blocks' peak).

    Args:
        networks: name → module; a module listed under two names is counted under both.
        device: where memory is measured; default the device of the first network's first parameter.
    """

    def __init__(self, networks: dict[str, nn.Module], device: torch.device | str | None = None) -> None:
        self.networks = dict(networks)
        if device is None:
            params = [p for net in self.networks.values() for p in net.parameters()]
            device = params[0].device if params else "cpu"
        self.device = torch.device(device)
        self._handles: list[Any] = []
        self.reset()

    def reset(self) -> None:
        self.counts = {name: Evaluations() for name in self.networks}
        self.seconds = 0.0
        self.peak_memory_mb = 0.0

    def _forward_hook(self, name: str):
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            c, rows = self.counts[name], _rows(args, kwargs, output)
            c.forward_calls += 1
            c.forward_samples += rows
            outs = [t for t in tree_leaves(output) if isinstance(t, Tensor) and t.requires_grad]
            if not outs or not torch.is_grad_enabled():
                return

            def on_backward(_grads: Any) -> None:
                c.backward_calls += 1
                c.backward_samples += rows

            # mode="any": fires once per backward pass that reaches any of the outputs
            torch.autograd.graph.register_multi_grad_hook(outs, on_backward, mode="any")

        return hook

    def __enter__(self) -> "EvaluationCounter":
        if self._handles:
            raise RuntimeError("EvaluationCounter is already active")
        self._handles = [net.register_forward_hook(self._forward_hook(name), with_kwargs=True)
                         for name, net in self.networks.items()]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = _rss_peak_mb()
        self.seconds += time.perf_counter() - self._start
        self.peak_memory_mb = max(self.peak_memory_mb, peak)
        for h in self._handles:
            h.remove()
        self._handles = []

    def summary(self, num_images: int) -> dict[str, Any]:
        """``{"seconds", "seconds_per_image", "evaluations_per_image": {name: {"forward", "backward"}}`` (samples
        per image), ``"calls": {name: {"forward", "backward"}}``, ``"peak_memory_mb", "num_images"}``."""
        n = max(int(num_images), 1)
        return {
            "seconds": self.seconds, "seconds_per_image": self.seconds / n,
            "evaluations_per_image": {k: {"forward": c.forward_samples / n, "backward": c.backward_samples / n}
                                      for k, c in self.counts.items()},
            "calls": {k: {"forward": c.forward_calls, "backward": c.backward_calls}
                      for k, c in self.counts.items()},
            "peak_memory_mb": self.peak_memory_mb, "num_images": int(num_images),
        }
