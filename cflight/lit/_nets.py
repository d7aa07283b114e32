"""Building a LightningModule's network from a registry name (shared by the training modules)."""
from __future__ import annotations

from typing import Any

from torch import nn

from cflight.models.registry import build_net, load_net, net_kind


def resolve_net(net: str | nn.Module, net_kwargs: dict[str, Any] | None, kind: str) -> nn.Module:
    """``net`` as a registry name (built with ``net_kwargs``) or a ready module (``net_kwargs`` must be empty)."""
    if isinstance(net, nn.Module):
        if net_kwargs:
            raise ValueError("net_kwargs are only used with a registered network name, not with a module")
        return net
    if not isinstance(net, str):
        raise TypeError(f"net must be a registered network name or an nn.Module, got {type(net).__name__}")
    try:
        found = net_kind(net)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    if found != kind:
        raise ValueError(f"network {net!r} is a {found}, expected a {kind}")
    return build_net(net, **dict(net_kwargs or {}))


def attach_net(module: Any, net: str | nn.Module, net_kwargs: dict[str, Any] | None, kind: str) -> nn.Module:
    """:func:`resolve_net`; with a registry name, also records ``net`` and ``net_kwargs`` (as
    :func:`stored_kwargs`) in ``module.hparams`` (a LightningModule after ``save_hyperparameters``), so
    :func:`cflight.models.registry.load_net` rebuilds the network from the checkpoint alone."""
    built = resolve_net(net, net_kwargs, kind)
    if isinstance(net, str):
        module.hparams["net"] = net
        module.hparams["net_kwargs"] = stored_kwargs(net_kwargs)
    return built


def stored_kwargs(net_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``net_kwargs`` as stored in a checkpoint: without ``pretrained`` (the trained weights are in the
    checkpoint, so rebuilding it must not download anything)."""
    return {k: v for k, v in dict(net_kwargs or {}).items() if k != "pretrained"}


def warm_start(net: nn.Module, path: str, kind: str) -> None:
    """Copy the weights of the ``kind`` network saved at ``path`` into ``net`` (same architecture).

    Raises a one-line error naming the file when its network's parameters do not fit ``net``.
    """
    saved = load_net(path, kind).state_dict()
    own = net.state_dict()
    wrong = sorted(k for k in own.keys() | saved.keys() if k not in own or k not in saved
                   or own[k].shape != saved[k].shape)
    if wrong:
        raise ValueError(f"init_weights {path!r} does not fit this network ({len(wrong)} mismatched tensors, "
                         f"e.g. {wrong[0]!r}): build it with the same net_kwargs")
    net.load_state_dict(saved)
