"""Turning a Lightning training checkpoint into a small exported weight file (no optimiser state)."""
from __future__ import annotations

import os
from typing import Any

import torch

from cflight.models.generative.training_schedule import TrainingSchedule
from cflight.models.registry import export_net, net_kind


def export_checkpoint(ckpt_path: str, out_path: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a cflight Lightning checkpoint (``weights_only=True``) and write its ``net.`` weights with
    :func:`cflight.models.registry.export_net`. Returns ``{"net", "net_kwargs", "kind", "num_params"}``.

    Raises ``FileNotFoundError`` for a missing file and a one-line ``ValueError`` for a checkpoint that
    holds no registered network (e.g. one trained with ``net`` given as a module instead of a name).
    """
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(f"checkpoint {ckpt_path!r} not found (expected a cflight Lightning checkpoint)")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint {ckpt_path!r} could not be read: {type(err).__name__}") from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or not isinstance(hp.get("net"), str) or "state_dict" not in ckpt:
        raise ValueError(f"checkpoint {ckpt_path!r} holds no registered cflight network (hyper-parameter 'net')")
    name, kwargs = hp["net"], dict(hp.get("net_kwargs") or {})
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    if not state:
        raise ValueError(f"checkpoint {ckpt_path!r} has no 'net.' weights")
    meta = {"source_checkpoint": os.path.basename(ckpt_path), "epoch": ckpt.get("epoch"),
            "global_step": ckpt.get("global_step"), **dict(metadata or {})}
    trained = TrainingSchedule.from_hparams(hp) if net_kind(name) == "denoiser" else None
    if trained is not None:  # the diffusion the denoiser belongs to travels with it (checked by DVCE, AC-RE)
        meta["diffusion"] = trained.as_record()
    if ckpt.get("target_range") is not None:  # a regressor's training-target range (checked by explanation jobs)
        meta["target_range"] = [float(v) for v in ckpt["target_range"]]
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    export_net(name, kwargs, state, out_path, meta)
    return {"net": name, "net_kwargs": kwargs, "kind": net_kind(name),
            "num_params": sum(v.numel() for v in state.values())}
