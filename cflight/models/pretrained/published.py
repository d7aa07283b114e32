"""Shared pieces of the published-weight loaders: unwrapping a torch file's state dict, and loading a renamed
state dict into a cflight network with a one-line error naming the file and the layout it was taken for."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from cflight.models.registry import state_dict_mismatch
from cflight.validation import BadInputError, MissingInputError

Net = TypeVar("Net", bound=nn.Module)


@dataclass(frozen=True)
class Published:
    """A recognised published layout: the network kind, a short description, and how to build it from the file."""

    kind: str
    layout: str
    build: Callable[[str], nn.Module]  # path (for messages) -> network in eval mode


def read_checkpoint(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with cflight's one-line errors."""
    if not os.path.isfile(path):
        raise MissingInputError(f"checkpoint {path!r} not found; check the path, relative to {os.getcwd()!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # damaged file, or a pickle of arbitrary objects
        raise BadInputError(f"checkpoint {path!r} could not be read with weights_only=True: {type(err).__name__} "
                            "(truncated, damaged, not a torch file or holding non-tensor objects); copy it again"
                            ) from None


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) and isinstance(v, Tensor)
                                                          for k, v in obj.items())


def unwrap_state_dict(ckpt: Any, keys: tuple[str, ...] = ("model", "state_dict")) -> dict[str, Tensor] | None:
    """The tensors of a torch file: ``ckpt[k]`` for the first ``k`` in ``keys`` holding a state dict (training
    checkpoints: the robustness library's ``"model"``, RobustBench's / timm's ``"state_dict"``), else ``ckpt``
    itself; ``None`` when neither is a state dict. A ``module.`` prefix on every key (DataParallel) is dropped."""
    if not isinstance(ckpt, Mapping):
        return None
    state = next((ckpt[k] for k in keys if k in ckpt and is_state_dict(ckpt[k])), ckpt)
    if not is_state_dict(state):
        return None
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def load_into(net: Net, state: Mapping[str, Tensor], path: str, layout: str, fix: str,
              file_name: Callable[[str], str] | None = None) -> Net:
    """Load ``state`` (keys already in ``net``'s names) into ``net`` and return it in eval mode.

    Missing, unexpected or differently shaped tensors raise one :class:`BadInputError` line naming the file,
    the ``layout`` it was read as and ``fix``; ``file_name`` turns a network name into the file's, for the
    message."""
    mismatch = state_dict_mismatch(net.state_dict(), dict(state), file_name, expected="expected")
    if mismatch:
        raise BadInputError(f"checkpoint {path!r} was read as {layout} but does not fit it: {mismatch}; {fix}")
    net.load_state_dict(dict(state))
    return net.eval()
