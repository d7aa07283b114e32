"""Registry of cflight networks and checkpoint loading.

A network is registered under a name with a *kind* (``classifier``, ``regressor``, ``generator``,
``descriptor``). LightningModules store ``net`` (the name) and ``net_kwargs`` in their hyper-parameters, so a
checkpoint can rebuild its network without the LightningModule: :func:`load_net` reads either a Lightning
checkpoint or an exported weight file (:func:`export_net`), both with ``weights_only=True``.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_REGISTRY: dict[str, tuple[str, Callable[..., nn.Module]]] = {}
KINDS = ("classifier", "regressor", "generator", "descriptor", "discriminator", "encoder", "denoiser")


def register_net(name: str, kind: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a network builder (a class or a function) under ``name``."""
    if kind not in KINDS:
        raise ValueError(f"unknown network kind {kind!r}; expected one of {KINDS}")

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = (kind, builder)
        return builder

    return deco


def list_nets(kind: str | None = None) -> list[str]:
    _ensure_builtin()
    return sorted(n for n, (k, _) in _REGISTRY.items() if kind is None or k == kind)


def net_kind(name: str) -> str:
    _ensure_builtin()
    if name.startswith("timm:"):
        return "classifier"
    if name not in _REGISTRY:
        raise KeyError(f"unknown network {name!r}; registered: {', '.join(list_nets())}")
    return _REGISTRY[name][0]


def build_net(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network; ``timm:<model>`` builds a timm classifier with ``pretrained=False``."""
    _ensure_builtin()
    if name.startswith("timm:"):
        from cflight.models.classifiers.timm_wrapper import TimmClassifier

        return TimmClassifier(model_name=name.removeprefix("timm:"), **kwargs)
    net_kind(name)
    return _REGISTRY[name][1](**kwargs)


def export_net(net_name: str, net_kwargs: dict[str, Any], state_dict: dict[str, torch.Tensor], path: str,
               metadata: dict[str, Any] | None = None) -> None:
    """Write a plain weight file (loadable with ``weights_only=True``), atomically."""
    payload = {"cflight_net": net_name, "net_kwargs": dict(net_kwargs), "state_dict": state_dict,
               "metadata": dict(metadata or {})}
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_net(path: str, expected_kind: str | None = None, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a network from a Lightning checkpoint or an exported weight file, in eval mode.

    Raises one-line errors naming the file for a missing file, an unreadable file, a checkpoint without a
    cflight network, or a network of the wrong kind.
    """
    what = f"a cflight {expected_kind} checkpoint" if expected_kind else "a cflight checkpoint"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} not found (expected {what})")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file, pickle of arbitrary objects, not a torch file
        raise ValueError(f"checkpoint {path!r} could not be read as {what}: {type(err).__name__}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path!r} is not {what}")
    if "cflight_net" in ckpt:
        name, kwargs, state = ckpt["cflight_net"], ckpt["net_kwargs"], ckpt["state_dict"]
    elif isinstance(ckpt.get("hyper_parameters"), dict) and isinstance(ckpt["hyper_parameters"].get("net"), str):
        hp = ckpt["hyper_parameters"]
        name, kwargs = hp["net"], dict(hp.get("net_kwargs") or {})
        state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    else:
        raise ValueError(f"checkpoint {path!r} holds no cflight network (expected {what})")
    try:
        kind = net_kind(name)
    except KeyError as err:
        raise ValueError(f"checkpoint {path!r}: {err.args[0]}") from None
    if expected_kind is not None and kind != expected_kind:
        raise ValueError(f"checkpoint {path!r} holds a {kind} ({name!r}), expected a {expected_kind}")
    net = build_net(name, **kwargs)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"checkpoint {path!r} does not fit network {name!r}: {first}") from None
    return net.eval()


def _ensure_builtin() -> None:
    """Import the modules that register cflight's own networks (idempotent)."""
    import cflight.models.classifiers  # noqa: F401
    import cflight.models.descriptors  # noqa: F401
    import cflight.models.generative  # noqa: F401
