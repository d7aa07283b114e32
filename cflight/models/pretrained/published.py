"""Shared pieces of the published-weight loaders: unwrapping a torch file's state dict, loading a renamed state
dict into a cflight network with a one-line error naming the file and the layout it was taken for, and the
table of published files (:data:`PUBLISHED_FILES`) whose absence is reported with where to get them."""
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
class PublishedFile:
    """A file of the papers' settings that the user supplies: what it is and where to get it."""

    what: str
    source: str


_GD = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
_STEEX = "https://github.com/valeoai/STEEX/releases (checkpoints_decision_densenet.tar.gz, celebamaskhq/)"
# Known file / folder names (the last path component, as the configs under configs/explain/ name them) → what
# they are and where the user gets them. Nothing is downloaded: the hint goes into the missing-file error.
PUBLISHED_FILES: dict[str, PublishedFile] = {
    "256x256_diffusion_uncond.pt": PublishedFile(
        "OpenAI guided-diffusion ImageNet 256x256 unconditional DDPM (DVCE)", _GD + "256x256_diffusion_uncond.pt"),
    "256x256_diffusion.pt": PublishedFile(
        "OpenAI guided-diffusion ImageNet 256x256 class-conditional DDPM", _GD + "256x256_diffusion.pt"),
    "madry_ft_ep_3.pt": PublishedFile(
        "DVCE/SVCE's Madry+FT robust ResNet-50 (the ep_3.pt of MadryFT.zip, renamed)",
        "the Google-Drive link 'MadryFT.zip' in github.com/valentyn1boreiko/DVCEs README (unzip, take "
        "Madry_l2_improved/checkpoint/ep_3.pt)"),
    "imagenet_l2_3_0.pt": PublishedFile(
        "robustness-library ImageNet ResNet-50, l2 eps 3.0",
        "github.com/MadryLab/robustness README, 'ImageNet L2-norm (ResNet50)' eps 3.0"),
    "convnext_large.fb_in22k_ft_in1k.bin": PublishedFile(
        "timm ConvNeXt-L in22k-ft-1k weights (DVCE's cone model, id 31)",
        "https://huggingface.co/timm/convnext_large.fb_in22k_ft_in1k (pytorch_model.bin or model.safetensors, "
        "renamed)"),
    "swin_large_patch4_window7_224.ms_in22k_ft_in1k.bin": PublishedFile(
        "timm Swin-L 224 weights (DVCE's cone model, id 30)",
        "https://huggingface.co/timm/swin_large_patch4_window7_224.ms_in22k_ft_in1k (pytorch_model.bin, "
        "renamed)"),
    "celebahq-ddpm.pt": PublishedFile(
        "ACE's CelebA-HQ 256 DDPM", "the 'CelebaA HQ / Diffusion Model' Google-Drive link in "
        "github.com/guillaumejs2403/ACE README"),
    "celeba-ddpm.pt": PublishedFile(
        "DiME's CelebA 128 DDPM", "the 'CelebA Models / Diffusion Model' link in github.com/guillaumejs2403/ACE "
        "README (DiME's model)"),
    "celebahq_decision_densenet.tar": PublishedFile(
        "STEEX CelebA-HQ DenseNet-121 decision model (ACE's classifier; celebamaskhq/checkpoint.tar, renamed)",
        _STEEX),
    "celebahq_oracle.tar": PublishedFile(
        "STEEX CelebA-HQ oracle attribute classifier (checkpoints_oracle_attribute.tar.gz, "
        "celebamaskhq/checkpoint.tar, renamed)", "https://github.com/valeoai/STEEX/releases"),
    "celebahq_age_densenet.ckpt": PublishedFile(
        "Ha & Bender's CelebA-HQ age regressor (DenseNetRegression Lightning checkpoint; weights not released)",
        "train it with scripts/train/4_train_regressors.sh of "
        "github.com/DevinTDHa/Diffusion-Counterfactuals-for-Image-Regressors (IMDB-WIKI-clean, from the STEEX "
        "DenseNet), or give a cflight regressor checkpoint"),
    "imagenet": PublishedFile(
        "the ImageNet (ILSVRC2012) validation images in class subfolders (val/n01440764/*.JPEG)",
        "https://image-net.org/download (ILSVRC2012_img_val.tar; sort into wnid folders, or keep it flat with "
        "LOC_val_solution.csv from Kaggle's imagenet-object-localization-challenge)"),
    "celebahq": PublishedFile(
        "CelebA-HQ from CelebAMask-HQ (CelebA-HQ-img/, CelebAMask-HQ-attribute-anno.txt, "
        "CelebA-HQ-to-CelebA-mapping.txt) plus CelebA's list_eval_partition.txt",
        "github.com/switchablenorms/CelebAMask-HQ and https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),
}


def download_hint(path: str) -> str:
    """``"; it is <what>: get it from <source>"`` for a known published file or data folder (matched on any
    component of ``path``, so ``data/imagenet/val`` names the ImageNet folder), else ``""``."""
    parts = [p for p in os.path.normpath(str(path)).split(os.sep) if p]
    for part in reversed(parts):
        known = PUBLISHED_FILES.get(part)
        if known is not None:
            return f"; it is {known.what}: get it from {known.source}"
    return ""


def missing(path: str, what: str = "file") -> MissingInputError:
    """The one-line error for a missing published file or folder ``path``: names it and where to get it."""
    hint = download_hint(path) or f"; check the path, relative to {os.getcwd()!r}"
    return MissingInputError(f"{what} {str(path)!r} not found{hint}")


@dataclass(frozen=True)
class Published:
    """A recognised published layout: the network kind, a short description, and how to build it from the file."""

    kind: str
    layout: str
    build: Callable[[str], nn.Module]  # path (for messages) -> network in eval mode


def read_checkpoint(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (a ``.safetensors`` file: ``safetensors``), with
    cflight's one-line errors (a missing published file names where to get it)."""
    if not os.path.isfile(path):
        raise missing(path, "checkpoint")
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # damaged file, or a pickle of arbitrary objects
        raise BadInputError(f"checkpoint {path!r} could not be read with weights_only=True: {type(err).__name__} "
                            "(truncated, damaged, not a torch file or holding non-tensor objects); copy it again"
                            ) from None


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) and isinstance(v, Tensor)
                                                          for k, v in obj.items())


def unwrap_state_dict(ckpt: Any, keys: tuple[str, ...] = ("model", "state_dict", "model_state_dict")
                      ) -> dict[str, Tensor] | None:
    """The tensors of a torch file: ``ckpt[k]`` for the first ``k`` in ``keys`` holding a state dict (training
    checkpoints: the robustness library's ``"model"``, RobustBench's / timm's / Lightning's ``"state_dict"``,
    STEEX's ``"model_state_dict"``), else ``ckpt``
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
