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

from cflight.validation import BadInputError, MissingInputError

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


def export_calibrated(net: nn.Module, net_name: str, net_kwargs: dict[str, Any], temperature: float, path: str,
                      metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write classifier ``net`` (registered as ``net_name`` with ``net_kwargs``) wrapped in
    ``TemperatureWrapper(net, T)`` as a plain weight file that loads as a classifier with calibrated
    probabilities (``logits / T``); returns the wrapper's ``net_kwargs``."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state["temperature"] = torch.tensor(float(temperature))
    wrapped = {"net": net_name, "net_kwargs": dict(net_kwargs), "temperature": float(temperature)}
    export_net("temperature", wrapped, state, path, metadata)
    return wrapped


def state_dict_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                        name: Callable[[str], str] | None = None, unexpected: str = "unexpected tensors",
                        expected: str = "network") -> str | None:
    """How ``state`` fails to fit a network whose state dict is ``own``, for a one-line error (``None`` if it
    fits): counts of missing, unexpected and differently shaped tensors, each with a first example
    (``name`` maps a network key to the file's, ``unexpected``/``expected`` word the message)."""
    name = name or (lambda k: k)
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    parts = [f"{len(missing)} missing tensors (e.g. {name(missing[0])!r})" if missing else "",
             f"{len(extra)} {unexpected} (e.g. {name(extra[0])!r})" if extra else "",
             f"{len(shapes)} of other shapes (e.g. {name(shapes[0])!r}: file {tuple(state[shapes[0]].shape)}, "
             f"{expected} {tuple(own[shapes[0]].shape)})" if shapes else ""]
    return ", ".join(p for p in parts if p) or None


def load_net(path: str, expected_kind: str | None = None, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a network from a Lightning checkpoint or an exported weight file, in eval mode.

    A plain state dict is recognised by its keys when it is one of the published layouts
    (:data:`PUBLISHED_LAYOUTS`: robustness-library / RobustBench / torchvision ResNets, see
    :mod:`cflight.models.pretrained.classifiers`; the Counterfactual Attacks MNIST files, see
    :mod:`cflight.models.pretrained.counterfactual_attacks`), built with the loaders' faithful defaults.

    Raises one-line errors naming the file for a missing file, an unreadable file, a checkpoint without a
    cflight network, or a network of the wrong kind.
    """
    what = f"a cflight {expected_kind} checkpoint" if expected_kind else "a cflight checkpoint"
    fix = ("export one with cflight.lit.export_checkpoint (Lightning checkpoints) or "
           "cflight.models.registry.export_net")
    if os.path.isdir(path):
        raise MissingInputError(f"checkpoint {path!r} is a directory (expected {what} file); give the "
                                "file's path")
    if not os.path.isfile(path):
        raise MissingInputError(f"checkpoint {path!r} not found (expected {what}); check the path, relative "
                                f"to {os.getcwd()!r}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file, pickle of arbitrary objects, not a torch file
        raise BadInputError(f"checkpoint {path!r} could not be read as {what}: {type(err).__name__} "
                            "(truncated, damaged or not a torch file); copy or export it again") from None
    if not isinstance(ckpt, dict):
        raise BadInputError(f"checkpoint {path!r} is not {what} (it holds a {type(ckpt).__name__}); {fix}")
    hp = ckpt.get("hyper_parameters")
    if "cflight_net" in ckpt:
        name, kwargs, state = ckpt["cflight_net"], ckpt.get("net_kwargs") or {}, ckpt.get("state_dict")
    elif isinstance(hp, dict) and isinstance(hp.get("net"), str):
        name, kwargs = hp["net"], dict(hp.get("net_kwargs") or {})
        state = {k.removeprefix("net."): v for k, v in (ckpt.get("state_dict") or {}).items()
                 if k.startswith("net.")}
    else:  # a plain state dict: one of the published layouts cflight knows by their keys, or nothing
        published = _identify_published(ckpt)
        if published is None:
            raise BadInputError(f"checkpoint {path!r} holds no cflight network (expected {what}; a plain state "
                                f"dict does not say which network it belongs to, and its keys match none of the "
                                f"published layouts: {PUBLISHED_LAYOUTS}); {fix}, or load a timm weight file "
                                "with cflight.models.pretrained.load_timm_classifier(path, model_name)")
        if expected_kind is not None and published.kind != expected_kind:
            raise BadInputError(f"checkpoint {path!r} holds a {published.kind} ({published.layout}), expected a "
                                f"{expected_kind}; pass a {expected_kind} checkpoint here")
        net = published.build(path)
        return net.to(map_location) if isinstance(map_location, (str, torch.device)) else net
    try:
        kind = net_kind(name)
    except KeyError as err:
        raise BadInputError(f"checkpoint {path!r}: {err.args[0]}") from None
    if expected_kind is not None and kind != expected_kind:
        raise BadInputError(f"checkpoint {path!r} holds a {kind} ({name!r}), expected a {expected_kind}; "
                            f"pass a {expected_kind} checkpoint here")
    if not isinstance(state, dict):
        raise BadInputError(f"checkpoint {path!r} holds no weights for network {name!r}; {fix}")
    try:
        net = build_net(name, **kwargs)
    except (TypeError, ValueError) as err:
        raise BadInputError(f"checkpoint {path!r}: network {name!r} cannot be built from its net_kwargs "
                            f"{dict(kwargs)}: {str(err).splitlines()[0]}; export it again with net_kwargs "
                            "this version of the network accepts") from None
    mismatch = state_dict_mismatch(net.state_dict(), state)
    if mismatch:
        raise BadInputError(f"checkpoint {path!r} does not fit network {name!r} built from its net_kwargs: "
                            f"{mismatch}; export it again from the run that trained it")
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise BadInputError(f"checkpoint {path!r} does not fit network {name!r}: {first}") from None
    if kind == "denoiser":
        _attach_training_schedule(net, ckpt, hp)
    if kind == "regressor":  # the range of targets it was trained on: an exported file's metadata or a fit checkpoint
        trained_range = (ckpt.get("metadata") or {}).get("target_range") or ckpt.get("target_range")
        if trained_range is not None:
            net.target_range = (float(trained_range[0]), float(trained_range[1]))
    return net.eval()


PUBLISHED_LAYOUTS = ("robustness-library checkpoint ('module.model.*'), RobustBench ImageNet ResNet ('model.*', "
                     "'normalize.*'), torchvision ResNet ('conv1.weight', 'layer1.*', 'fc.weight'), Counterfactual "
                     "Attacks MNIST classifier ('network.*') or VAE ('encoder_conv.*', 'decoder_net.*'), official "
                     "Diff-AE last.ckpt ('ema_model.time_embed.time_embed.*', 'ema_model.encoder.*'), ACE's CelebA-HQ "
                     "DenseNet-121 attribute classifier and Ha & Bender's DenseNet regressor ('feat_extract.*')")


def _identify_published(ckpt: dict[str, Any]) -> Any:
    """The :class:`~cflight.models.pretrained.published.Published` layout of a plain state dict, or ``None``."""
    from cflight.models.pretrained import classifiers, counterfactual_attacks, diffae_official
    from cflight.models.pretrained.published import unwrap_state_dict

    state = unwrap_state_dict(ckpt)
    if state is None:
        return None
    return (diffae_official.identify(state) or counterfactual_attacks.identify(state)
            or classifiers.identify(state))


def _attach_training_schedule(net: nn.Module, ckpt: dict[str, Any], hp: Any) -> None:
    """A denoiser carries the diffusion it was trained with (``net.training_schedule``), for the methods to check."""
    from cflight.models.generative.training_schedule import TrainingSchedule

    if "cflight_net" in ckpt:
        trained = TrainingSchedule.from_record((ckpt.get("metadata") or {}).get("diffusion"))
    else:  # a Lightning checkpoint of a DDPMModule
        trained = TrainingSchedule.from_hparams(hp)
    if trained is None:
        net.training_schedule_unknown = True
    else:
        net.training_schedule = trained


def _ensure_builtin() -> None:
    """Import the modules that register cflight's own networks (idempotent)."""
    import cflight.models.classifiers  # noqa: F401
    import cflight.models.descriptors  # noqa: F401
    import cflight.models.generative  # noqa: F401
    import cflight.models.regressors  # noqa: F401
    import cflight.models.pretrained.classifiers  # noqa: F401  (torchvision_resnet)
    import cflight.models.pretrained.counterfactual_attacks  # noqa: F401  (counterfactual_attacks_vae)
    import cflight.models.pretrained.guided_diffusion  # noqa: F401  (adm_unet)
    import cflight.models.pretrained.diffae_official  # noqa: F401  (diffae_official)
