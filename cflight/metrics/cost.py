"""Cost accounting of a counterfactual method: network evaluations, wall time and peak memory (DESIGN.md §5:
the cost floor of a method is its unavoidable forward and backward passes).

:class:`EvaluationCounter` is model-agnostic: it hooks the ``forward`` of each named network and counts its
calls and the batch rows (samples) they process; for every call whose output takes part in autograd it also
hooks the output tensors, so the backward through that call is counted when a gradient reaches its output —
whether the graph comes from the image input (a counterfactual search on frozen networks, where
``register_full_backward_hook`` sees no input that requires grad) or from the parameters (training).
Generators are evaluated through ``decode``/``encode`` rather than ``forward``, so those calls are counted
too (the block replaces them on the instance while it is active).
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
    """The process's peak resident set size: Linux's ``VmHWM`` (since the last :func:`_reset_rss_peak`), else
    ``getrusage``'s peak since the process started (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _reset_rss_peak() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux ≥ 4.0: ``5`` into ``/proc/self/clear_refs``);
    False where that is not possible (the peak then counts from the process's start)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_MISSING = object()
# How a method evaluates a network: its forward, or a generator's decode / encode (a VAE decoder is never
# called as forward). One call of any of them is one evaluation of that network.
ENTRY_POINTS = ("forward", "decode", "encode")


def _network_like(module: nn.Module) -> bool:
    """A module that is a network in its own right: a generator (``decode``/``encode``) or a classifier."""
    return any(callable(getattr(module, a, None)) for a in ("decode", "encode")) or hasattr(module, "num_classes")


def find_networks(module: nn.Module, prefix: str = "") -> dict[str, nn.Module]:
    """The networks inside ``module`` (e.g. a counterfactual method), by dotted attribute path.

    Each child with parameters is one network, except a *wrapper* of several networks (two or more children
    with parameters, at least one of them a generator or classifier, e.g. a GAN projection holding the GAN
    and a feature net), whose networks are listed instead. Modules without parameters (a diffusion schedule)
    are left out. Model-agnostic: nothing here knows a method.
    """
    found: dict[str, nn.Module] = {}
    for name, child in module.named_children():
        if next(child.parameters(), None) is None:
            continue
        path = f"{prefix}{name}"
        inner = [c for _, c in child.named_children() if next(c.parameters(), None) is not None]
        if len(inner) >= 2 and any(_network_like(c) for c in inner):
            found.update(find_networks(child, f"{path}."))
        else:
            found[path] = child
    return found


class EvaluationCounter:
    """Context manager counting the forward/backward passes of ``networks`` (by name) inside its blocks.

    An evaluation is one call of a network's ``forward``, ``decode`` or ``encode`` (``entry_points``; calls
    nested inside one evaluation of the same network count once), while the block is active.

    Re-entering accumulates (counts and seconds); :meth:`reset` clears. Peak memory: on CUDA the largest
    ``torch.cuda.max_memory_allocated`` over the blocks (peak stats are reset on entry); on the CPU the
    process's peak RSS, reset on entry where Linux allows (``/proc/self/clear_refs``), else since the process
    started (an upper bound of the blocks' peak); :attr:`memory_source` says which.

    Args:
        networks: name → module; a module listed under two names is counted under both.
        device: where memory is measured; default the device of the first network's first parameter.
    """

    def __init__(self, networks: dict[str, nn.Module], device: torch.device | str | None = None,
                 entry_points: tuple[str, ...] = ENTRY_POINTS) -> None:
        self.networks = dict(networks)
        if device is None:
            params = [p for net in self.networks.values() for p in net.parameters()]
            device = params[0].device if params else "cpu"
        self.device = torch.device(device)
        self.entry_points = tuple(entry_points)
        self._patched: list[tuple[nn.Module, str, Any]] = []
        self._depth: dict[str, int] = {}
        self._rss_reset: bool | None = None  # None: not measured yet
        self.reset()

    def reset(self) -> None:
        self.counts = {name: Evaluations() for name in self.networks}
        self.seconds = 0.0
        self.peak_memory_mb = 0.0

    def _counted(self, name: str, call: Any) -> Any:
        """``call`` (a network's bound ``forward``/``decode``/``encode``) counting its evaluations under ``name``.

        A call made while the same network is already being evaluated (``forward`` calling ``decode``) is
        part of that evaluation and not counted again."""
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._depth[name]:
                return call(*args, **kwargs)
            self._depth[name] += 1
            try:
                output = call(*args, **kwargs)
            finally:
                self._depth[name] -= 1
            self._record(name, args, kwargs, output)
            return output

        return wrapper

    def _record(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
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

    def __enter__(self) -> "EvaluationCounter":
        if self._patched:
            raise RuntimeError("EvaluationCounter is already active")
        self._depth = {name: 0 for name in self.networks}
        for name, net in self.networks.items():
            for entry in self.entry_points:
                call = getattr(net, entry, None)
                if not callable(call):
                    continue
                saved = net.__dict__.get(entry, _MISSING)  # an instance attribute of that name (rare) is restored
                # an instance attribute shadows the class's method: nn.Module.__call__ looks up self.forward
                object.__setattr__(net, entry, self._counted(name, call))
                self._patched.append((net, entry, saved))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:  # so one job's peak is not an earlier job's in the same process (a benchmark runs several)
            self._rss_reset = _reset_rss_peak() and self._rss_reset is not False
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
        for net, entry, saved in reversed(self._patched):
            if saved is _MISSING:
                object.__delattr__(net, entry)
            else:
                object.__setattr__(net, entry, saved)
        self._patched = []

    @property
    def memory_source(self) -> str:
        """What :attr:`peak_memory_mb` measures: ``"cuda_max_memory_allocated"`` (largest over the blocks),
        ``"process_peak_rss_in_blocks"`` (the whole process's resident memory, its peak reset on entering each
        block: Linux) or ``"process_max_rss"`` (the process's peak since it started, an upper bound)."""
        if self.device.type == "cuda":
            return "cuda_max_memory_allocated"
        return "process_peak_rss_in_blocks" if self._rss_reset else "process_max_rss"

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
