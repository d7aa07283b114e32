"""The fingerprint of an explanation job: what makes two runs "the same job" for resuming.

A shard is only reused by a run whose results for that image would be the same: same explained model,
generative and descriptor weights (hashed from the loaded state dicts, so a retrained file at the same path
is a different job), same method and target-policy hyper-parameters and seed, same dataset and numeric
precision. What does not change a row's result is left out on purpose: batch size, number of devices and
nodes, strategy, the number of images (a job may be extended), gallery size, logging.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

_SCALARS = (bool, int, float, str, type(None))
# Module mode, resume state, a subset's (extendable) indices, and what changes speed but not results: chunk
# size and the GPU options other than precision (a job started without torch.compile may resume with it).
_SKIP = {"training", "skip_indices", "indices", "max_batch_size", "channels_last", "compile", "compile_backend",
         "checkpoint_chain"}
_MAX_LIST = 64


def _scalar_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) <= _MAX_LIST and all(isinstance(e, _SCALARS) for e in v)


def _init_parameters(cls: type) -> set[str]:
    """Names of the constructor parameters of ``cls`` and its bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            names.update(inspect.signature(init).parameters)
        except (TypeError, ValueError):
            continue
    return names - {"self", "args", "kwargs"}


def settings(obj: Any, prefix: str = "", seen: set[int] | None = None) -> dict[str, Any]:
    """Flat ``{"method.lr": 0.1, "method.__class__": "cflight.methods.LatentAttack", …}`` of an object tree.

    The hyper-parameters of ``obj``: attributes named like one of its constructor's parameters (so run-time
    counters and caches are not), when they are scalars, short lists of scalars or small tensors; and,
    recursively, the same of its sub-modules and of attributes that are objects (target policies). Weights
    are not here (see :func:`weights_digest`).
    """
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return {}
    seen.add(id(obj))
    out: dict[str, Any] = {f"{prefix}__class__": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    params = _init_parameters(type(obj))
    attrs = {k: v for k, v in vars(obj).items() if k in params} if hasattr(obj, "__dict__") else {}
    if isinstance(obj, nn.Module):
        attrs.update(obj.named_children())
    for name in sorted(attrs):
        value = attrs[name]
        if name.startswith("_") or name in _SKIP or inspect.isroutine(value) or inspect.isclass(value):
            continue  # (objects with __call__, e.g. target policies, are settings)
        key = f"{prefix}{name}"
        if isinstance(value, _SCALARS):
            out[key] = value
        elif _scalar_list(value):
            out[key] = list(value)
        elif isinstance(value, torch.Tensor) and value.numel() <= _MAX_LIST:
            out[key] = value.detach().cpu().flatten().tolist()
        elif isinstance(value, torch.dtype):
            out[key] = str(value)
        elif hasattr(value, "__dict__") and type(value).__module__.split(".")[0] not in ("torch", "lightning",
                                                                                        "builtins"):
            out.update(settings(value, f"{key}.", seen))
        elif isinstance(value, nn.Module):
            # torch's own layers: their configuration is in the state dict's names and shapes already
            builtin = type(value).__module__.startswith("torch.")
            out.update({f"{key}.__class__": type(value).__qualname__} if builtin else settings(value, f"{key}.", seen))
    return out


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and values), 16 hex digits."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def describe_job(module: nn.Module, dataset: Any = None, precision: str | None = None) -> dict[str, Any]:
    """Everything the fingerprint covers, JSON-ready: ``settings``, ``weights``, ``data``, ``precision``."""
    return {
        "settings": settings(module),
        "weights": {name: weights_digest(child) for name, child in module.named_children()},
        "data": settings(dataset) if dataset is not None else {},
        "precision": precision,
    }


def fingerprint(description: dict[str, Any]) -> str:
    """SHA-256 (16 hex digits) of the canonical JSON of a job description."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> list[str]:
    """Human-readable differences between two descriptions, e.g. ``"settings.method.lr: 0.1 → 0.2"``."""
    diffs: list[str] = []
    for part in sorted(set(old) | set(new)):
        a, b = old.get(part), new.get(part)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    diffs.append(f"{part}.{key}: {a.get(key, '—')} → {b.get(key, '—')}")
        elif a != b:
            diffs.append(f"{part}: {a} → {b}")
    more = f" (and {len(diffs) - limit} more)" if len(diffs) > limit else ""
    return diffs[:limit] + ([more.strip()] if more else [])


def first_dataset(loaders: Iterable[Any] | Any) -> Any:
    """The dataset of the first predict dataloader (``None`` when there is none)."""
    if loaders is None:
        return None
    if not isinstance(loaders, (list, tuple)):
        loaders = [loaders]
    for loader in loaders:
        return getattr(loader, "dataset", None)
    return None
