"""Speed options (DESIGN.md §5): autocast, channels_last, compile, checkpointing for generative networks, and
channels_last for the explained model (:func:`to_channels_last`).

:func:`accelerate` wraps a decoder / generator / denoiser so that its ``forward``, ``decode`` and ``encode``
run with the chosen :class:`Acceleration`, while everything around them stays as it was:

* **precision** ``"bf16"`` / ``"16"``: the network's ops run under ``torch.autocast``; its floating outputs
  are cast back to the dtype of its inputs (fp32), so optimisation variables, losses, the diffusion
  schedule arithmetic and the explained model stay in fp32 (autocast covers the network call only).
* **channels_last**: weights (at wrap time) and 4-D inputs (per call) in ``torch.channels_last``; outputs are
  returned in the standard layout so callers may ``view`` them.
* **compile**: ``torch.compile`` of each wrapped call (mode and backend configurable).
* **checkpoint_chain**: ``torch.utils.checkpoint`` (``use_reentrant=False``) around every call made with
  gradients, so a differentiated chain of UNet calls (AC-RE's R_τ, DVCE's guidance) keeps only each call's
  inputs instead of its activations, at the price of recomputing each call's forward in each backward pass
  (DVCE, with one backward per guidance term, pays that once per term).

All options off (the default) means no wrapper at all: :func:`accelerate` returns the network itself.

The explained model is never wrapped (its outputs, gradients and evaluation counts are the method's
business): :func:`to_channels_last` converts its weights in place, which changes no value, only the memory
order in which convolutions read them (and so the summation order: relative differences ~1e-7). On a CPU,
oneDNN then runs its convolutions in NHWC without a reorder per call (``benchmarks/channels_last.py``
measures each shipped network).
"""
from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cflight.validation import BadInputError

PRECISIONS: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Acceleration:
    """Speed options for a method's generative networks (all off by default: fp32, as trained).

    Args:
        precision: ``"32"`` (off), ``"bf16"`` or ``"16"`` (fp16): autocast dtype of the network's forward.
        channels_last: ``torch.channels_last`` memory format for weights and 4-D inputs.
        compile: ``False``; ``True`` (``torch.compile``'s default mode) or a mode name (``"max-autotune"``,
            ``"reduce-overhead"`` — CUDA graphs, only for fixed batch shapes —, ...).
        compile_backend: ``torch.compile`` backend; ``"inductor"`` generates kernels (needs a C++ compiler
            on CPU), ``"eager"`` only traces (fast to start: for tests and debugging).
        checkpoint_chain: gradient checkpointing of every network call made with gradients.
    """

    precision: str | int = "32"
    channels_last: bool = False
    compile: bool | str = False
    compile_backend: str = "inductor"
    checkpoint_chain: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", str(self.precision))  # YAML `precision: 32` is an int
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.compile, str) and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be true/false or a mode in {COMPILE_MODES}, got {self.compile!r}")
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise ValueError(f"compile_backend must be a backend name, got {self.compile_backend!r}")

    @property
    def enabled(self) -> bool:
        """Whether any option is on (otherwise networks are used unwrapped)."""
        return (self.precision != "32" or self.channels_last or self.compile is not False
                or self.checkpoint_chain)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (``None`` for fp32)."""
        return PRECISIONS[self.precision]

    @property
    def compile_mode(self) -> str | None:
        return None if isinstance(self.compile, bool) else self.compile

    def check_device(self, device: torch.device | str) -> None:
        """Raise one clear ``ValueError`` if an option cannot run on ``device`` (before any work starts)."""
        device = torch.device(device)
        if self.dtype is not None:
            _check_autocast(device.type, self.dtype, self.precision)
        if self.compile is not False and self.compile_backend == "inductor" and device.type == "cpu":
            if not (os.environ.get("CXX") or any(shutil.which(c) for c in ("g++", "clang++", "c++"))):
                raise ValueError("compile with the inductor backend on CPU needs a C++ compiler (none "
                                 "found): install one, set compile_backend: eager, or turn compile off")


def _check_autocast(device_type: str, dtype: torch.dtype, name: str) -> None:
    if device_type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError("precision 'bf16' needs a GPU with bfloat16 support: use precision '16' or '32'")
    # torch disables autocast with a warning where a device/dtype pair is unsupported (fp16 on an old CPU
    # build, a device without autocast): turn that silent fp32 run into an error.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autocast(device_type, dtype=dtype):
                ok = torch.is_autocast_enabled(device_type)
        except RuntimeError as err:
            ok, caught = False, [warnings.WarningMessage(str(err), RuntimeWarning, "", 0)]
    if not ok:
        why = str(caught[0].message).splitlines()[0] if caught else "autocast unavailable"
        raise ValueError(f"precision {name!r} cannot run on device {device_type!r} ({why}); "
                         "use precision '32'")


def _first_float(args: tuple, kwargs: dict) -> Tensor | None:
    for a in (*args, *kwargs.values()):
        if isinstance(a, Tensor) and a.is_floating_point():
            return a
    return None


def _device(args: tuple, kwargs: dict, net: nn.Module) -> torch.device:
    """The device of the first tensor argument, else of the network's first parameter or buffer."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, Tensor):
            return a.device
    for t in (*net.parameters(), *net.buffers()):
        return t.device
    return torch.device("cpu")


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to every tensor in nested tuples / lists / dicts (named tuples keep their type)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_map_tensors(o, fn) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


def _channels_last(t: Tensor) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t


def to_channels_last(net: nn.Module) -> nn.Module:
    """``net`` itself, its 4-D parameters and buffers converted in place to ``torch.channels_last``.

    Values are unchanged (:func:`~cflight.lit.fingerprint.weights_digest` reads them in logical order, so a
    job's fingerprint is too); a convolution given such weights returns channels_last activations whatever
    the layout of its input. A network that calls ``.view`` on those activations fails:
    :func:`channels_last_errors` turns that into one line naming the fix.
    """
    return net.to(memory_format=torch.channels_last)


# torch's message when .view meets a tensor whose strides the requested shape cannot express
_VIEW_ERROR = "view size is not compatible with input tensor's size and stride"


@contextmanager
def channels_last_errors(name: str, enabled: bool = True) -> Iterator[None]:
    """Re-raise the ``.view`` error of a network run in channels_last (``enabled``) as one
    :class:`~cflight.validation.BadInputError` line naming ``name`` and the two fixes."""
    try:
        yield
    except RuntimeError as err:
        if not enabled or _VIEW_ERROR not in str(err):
            raise
        raise BadInputError(f"{name} calls .view on a channels_last activation (Tensor.view: {_VIEW_ERROR}); "
                            "set channels_last: false, or use .reshape / torch.flatten in the network"
                            ) from None


class AcceleratedNet(nn.Module):
    """``net`` with :class:`Acceleration` options applied to its ``forward`` / ``decode`` / ``encode``.

    Other attributes (``in_channels``, ``image_size``, ``latent_dim``, ``encoder``, ...) read through to
    ``net``, so checks and methods use the wrapper like the network. The wrapped network is the submodule
    ``net`` (state-dict keys gain a ``net.`` prefix); ``channels_last`` converts its weights in place.
    """

    def __init__(self, net: nn.Module, options: Acceleration) -> None:
        super().__init__()
        self.net = net
        self.options = options
        self._calls: dict[tuple[str, bool], Callable[..., Any]] = {}
        self._checked: set[str] = set()  # device types the options were checked on
        if options.channels_last:
            net.to(memory_format=torch.channels_last)  # 4-D weights only; others are left as they are

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            net = self.__dict__.get("_modules", {}).get("net")
            if net is None:
                raise
            return getattr(net, name)

    def __getstate__(self) -> dict[str, Any]:
        # compiled callables are bound to this instance's network: a copy builds its own
        state = self.__dict__.copy()
        state["_calls"] = {}
        return state

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("forward", args, kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("decode", args, kwargs)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("encode", args, kwargs)

    def _build(self, name: str, with_checkpoint: bool) -> Callable[..., Any]:
        inner = getattr(self.net, name)
        dtype = self.options.dtype

        def run(*args: Any, **kwargs: Any) -> Any:
            if dtype is None:
                return inner(*args, **kwargs)
            with torch.autocast(_device(args, kwargs, self.net).type, dtype=dtype):
                return inner(*args, **kwargs)

        fn = run
        if with_checkpoint:  # autocast inside the checkpointed function: the recomputation casts alike
            def fn(*args: Any, **kwargs: Any) -> Any:
                return checkpoint(run, *args, use_reentrant=False, **kwargs)
        if self.options.compile is not False:
            fn = torch.compile(fn, mode=self.options.compile_mode, backend=self.options.compile_backend)
        return fn

    def _needs_graph(self, args: tuple, kwargs: dict) -> bool:
        if not torch.is_grad_enabled():
            return False
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        return any(t.requires_grad for t in tensors) or any(p.requires_grad for p in self.net.parameters())

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        device = _device(args, kwargs, self.net)
        if device.type not in self._checked:  # a clear error here, not a silent fp32 run or a deep crash
            self.options.check_device(device)
            self._checked.add(device.type)
        ref = _first_float(args, kwargs)
        out_dtype = ref.dtype if ref is not None else torch.float32
        if self.options.channels_last:
            args, kwargs = _map_tensors(args, _channels_last), _map_tensors(kwargs, _channels_last)
        key = (name, self.options.checkpoint_chain and self._needs_graph(args, kwargs))
        if key not in self._calls:
            self._calls[key] = self._build(*key)
        with channels_last_errors(f"{type(self.net).__name__} (acceleration)", self.options.channels_last):
            out = self._calls[key](*args, **kwargs)

        def restore(t: Tensor) -> Tensor:
            if t.is_floating_point() and t.dtype != out_dtype and t.dtype in (torch.float16, torch.bfloat16):
                t = t.to(out_dtype)
            return t.contiguous() if self.options.channels_last and t.ndim == 4 else t

        return _map_tensors(out, restore)


def accelerate(net: nn.Module, options: Acceleration | None) -> nn.Module:
    """``net`` with ``options`` applied; ``net`` itself when no option is on.

    A composite generative module (e.g. :class:`~cflight.models.generative.projection.GANManifold`, whose
    ``encode`` is an optimisation) applies the options to its own networks through an
    ``apply_acceleration(options)`` method and is returned as it is; its losses and latents stay fp32.
    An :class:`AcceleratedNet` is re-wrapped with the new options (never nested).
    """
    if options is None or not options.enabled:
        return net
    if isinstance(net, AcceleratedNet):
        net = net.net
    hook = getattr(net, "apply_acceleration", None)
    if callable(hook):
        hook(options)
        return net
    return AcceleratedNet(net, options)


__all__ = ["COMPILE_MODES", "PRECISIONS", "Acceleration", "AcceleratedNet", "accelerate",
           "channels_last_errors", "to_channels_last"]
