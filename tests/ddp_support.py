"""A callback that makes the CPU (gloo) DDP tests fail where NCCL would: a collective fed a CPU tensor.

On GPUs Lightning's DDP uses NCCL, which rejects CPU tensors; on the CPU every tensor is a CPU tensor, so a
gloo test cannot see the difference. :class:`CollectiveDeviceGuard` tracks, in each process, which tensors
were made by a factory function (``torch.tensor``, ``zeros``, ``full``, …) **without** a ``device`` and not
moved with an explicit ``.to(device)`` since: on a GPU those would be CPU tensors. Every ``torch.distributed``
collective then checks its tensors: one made that way, or one not on the module's device, raises (and is
recorded in ``<record_dir>/violations-<rank>.txt`` for the test to read).
"""
from __future__ import annotations

import functools
import os

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch.overrides import TorchFunctionMode

FACTORIES = {torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.full, torch.empty, torch.arange,
             torch.rand, torch.randn, torch.randint, torch.linspace, torch.eye}
MOVES = {torch.Tensor.to, torch.Tensor.cuda}
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce", "reduce_scatter",
               "reduce_scatter_tensor", "gather", "scatter", "all_to_all", "all_to_all_single")
_FLAG = "_cflight_default_device"


def _explicit_device(func, args, kwargs) -> bool:
    if kwargs.get("device") is not None:
        return True
    if func in MOVES:
        return any(isinstance(a, (str, torch.device, torch.Tensor)) for a in args[1:]) or func is torch.Tensor.cuda
    return False


class _DefaultDeviceTracker(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            if func in FACTORIES and not _explicit_device(func, args, kwargs) and not (
                    func is torch.as_tensor and isinstance(args[0], torch.Tensor)):
                setattr(out, _FLAG, True)
            elif func in MOVES and _explicit_device(func, args, kwargs):
                setattr(out, _FLAG, False)
        return out


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)


class CollectiveDeviceGuard(Callback):
    """Raise when a collective gets a tensor that would be on the CPU on a GPU machine (see module doc)."""

    def __init__(self, record_dir: str) -> None:
        self.record_dir = record_dir
        self._originals: dict[str, object] = {}
        self._mode: _DefaultDeviceTracker | None = None

    def setup(self, trainer, pl_module, stage):
        rank, device = trainer.global_rank, pl_module.device
        path = os.path.join(self.record_dir, f"violations-{rank}.txt")

        def wrap(name, fn):
            @functools.wraps(fn)
            def checked(*args, **kwargs):
                for t in _tensors(list(args) + list(kwargs.values())):
                    bad = getattr(t, _FLAG, False) or t.device != device
                    if bad:
                        msg = (f"{name} got a tensor {tuple(t.shape)} on {t.device} made without a device "
                               f"(module on {device}); NCCL would reject it")
                        with open(path, "a") as f:
                            f.write(msg + "\n")
                        raise RuntimeError(msg)
                return fn(*args, **kwargs)
            return checked

        for name in COLLECTIVES:
            if hasattr(dist, name):
                self._originals[name] = getattr(dist, name)
                setattr(dist, name, wrap(name, self._originals[name]))
        self._mode = _DefaultDeviceTracker()
        self._mode.__enter__()

    def teardown(self, trainer, pl_module, stage):
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        for name, fn in self._originals.items():
            setattr(dist, name, fn)
        self._originals.clear()
