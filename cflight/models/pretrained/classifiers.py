"""Published ImageNet classifiers behind cflight's contract (images in [0, 1] ``[B, 3, H, W]`` → logits).

* **robustness library** (Engstrom et al. 2019, ``MadryLab/robustness``; the robust ResNet-50s of DVCE / SVCE):
  ``robustness/model_utils.py`` saves ``{"model": AttackerModel.state_dict(), "optimizer", "epoch", ...}`` of a
  DataParallel ``AttackerModel`` (``robustness/attacker.py``): keys ``module.model.*`` (the network),
  ``module.attacker.model.*`` (the same network again, for the attacker) and
  ``module.normalizer.new_mean/new_std`` (``robustness/tools/helpers.py::InputNormalize``, ``[3, 1, 1]``, which
  clamps to [0, 1] before normalising). Its ImageNet ResNets (``robustness/imagenet_models/resnet.py``) have
  torchvision's module names.
* **RobustBench** (``robustbench/model_zoo/imagenet.py``): ``normalize_model(torchvision resnet50(), mu,
  sigma)`` = ``nn.Sequential(normalize=ImageNormalizer, model=resnet)``
  (``architectures/utils_architectures.py``): keys ``normalize.mean/std`` ``[1, 3, 1, 1]`` and ``model.*``;
  its downloaded files hold the bare ResNet (``robustbench/utils.py::load_model`` adds ``model.``).
* **torchvision ResNet state dicts** (e.g. DVCE/SVCE's Madry+FT ``ep_3.pt``, loaded there into
  ``normalize_model(resnet50)``): ImageNet statistics.

All become :class:`TorchvisionResNet` (registered ``torchvision_resnet``); the torchvision architecture
(resnet18 … wide_resnet101_2) and the number of classes are read off the tensors. timm weight files need the
model name: :func:`load_timm_classifier`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torchvision
from torch import Tensor, nn

from cflight.models.classifiers.base import Normalize, as_size
from cflight.models.classifiers.timm_wrapper import ResizeCrop, TimmClassifier
from cflight.models.pretrained.published import Published, load_into, read_checkpoint, unwrap_state_dict
from cflight.models.registry import register_net
from cflight.validation import BadInputError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# (blocks per stage, bottleneck blocks, channels of layer1.0.conv1) -> torchvision builder
RESNET_ARCHS = {((2, 2, 2, 2), False, 64): "resnet18", ((3, 4, 6, 3), False, 64): "resnet34",
          ((3, 4, 6, 3), True, 64): "resnet50", ((3, 4, 23, 3), True, 64): "resnet101",
          ((3, 8, 36, 3), True, 64): "resnet152", ((3, 4, 6, 3), True, 128): "wide_resnet50_2",
          ((3, 4, 23, 3), True, 128): "wide_resnet101_2"}

ROBUSTNESS = "a robustness-library checkpoint (keys 'module.model.*', 'module.normalizer.new_mean/new_std')"
ROBUSTBENCH = "a RobustBench ImageNet model state dict (keys 'normalize.mean/std', 'model.*')"
ROBUSTBENCH_BARE = "a RobustBench ImageNet ResNet state dict (keys 'model.*'; ImageNet statistics)"
TORCHVISION = ("a torchvision ResNet state dict (keys 'conv1.weight', 'layer1.0.*', 'fc.weight'; ImageNet "
               "statistics)")
_FIX = "pass the unmodified published file (a robustness-library .pt, a RobustBench model or a torchvision ResNet)"


@register_net("torchvision_resnet", kind="classifier")
class TorchvisionResNet(nn.Module):
    """A torchvision ResNet behind an input normaliser: ``model(normalize(clamp?(resize?(x))))``.

    The state dict is the ResNet's under ``model.`` (RobustBench's layout without its normaliser buffers: the
    statistics are constructor arguments). Random weights (``weights=None``); load published ones with
    :func:`load_robust_resnet` or ``load_net``.

    :param arch: torchvision builder name (``resnet50``, ``wide_resnet50_2``, …).
    :param num_classes: logits (1000 for ImageNet).
    :param mean: per-channel normalisation mean (ImageNet's by default).
    :param std: per-channel normalisation std.
    :param clamp: clamp the input to [0, 1] first, as the robustness library's ``InputNormalize`` does.
    :param resize_to: resize inputs of any size to this size first (DVCE/SVCE: 224, bicubic); ``None``: none
        (ResNets pool globally, so any size runs).
    :param interpolation: ``"bicubic"`` or ``"bilinear"`` for ``resize_to``.
    """

    def __init__(self, arch: str = "resnet50", num_classes: int = 1000,
                 mean: float | Sequence[float] = IMAGENET_MEAN, std: float | Sequence[float] = IMAGENET_STD,
                 clamp: bool = False, resize_to: int | Sequence[int] | None = None,
                 interpolation: str = "bicubic") -> None:
        super().__init__()
        if arch not in RESNET_ARCHS.values():
            raise ValueError(f"arch must be one of {sorted(set(RESNET_ARCHS.values()))}, got {arch!r}")
        self.arch, self.clamp = arch, clamp
        self.in_channels, self.num_classes = 3, num_classes
        self.image_size = as_size(224 if resize_to is None else resize_to)
        self.resize: nn.Module = nn.Identity() if resize_to is None else ResizeCrop(resize_to, interpolation)
        self.normalize = Normalize(mean, std, 3)
        self.model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Images in [0, 1] ``[B, 3, H, W]`` → logits ``[B, num_classes]``."""
        x = self.resize(x)
        if self.clamp:
            x = x.clamp(0, 1)
        return self.model(self.normalize(x))


def resnet_arch(state: Mapping[str, Tensor]) -> str | None:
    """The torchvision ResNet whose module tree ``state`` (bare ResNet keys) has, or ``None``."""
    first = state.get("layer1.0.conv1.weight")
    if "conv1.weight" not in state or "fc.weight" not in state or first is None:
        return None
    blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    return RESNET_ARCHS.get((blocks, "layer1.0.conv3.weight" in state, int(first.shape[0])))


def _stats(value: Tensor | None, default: Sequence[float]) -> list[float]:
    return list(default) if value is None else [float(v) for v in value.flatten()]


def _build(net_state: dict[str, Tensor], prefix: str, layout: str, path: str, mean: Sequence[float],
           std: Sequence[float], clamp: bool, **kwargs: Any) -> TorchvisionResNet:
    arch = resnet_arch(net_state)
    if arch is None:
        raise BadInputError(f"checkpoint {path!r} was read as {layout} but its network is none of torchvision's "
                            f"ResNets ({', '.join(sorted(set(RESNET_ARCHS.values())))}); {_FIX}")
    net = TorchvisionResNet(arch, int(net_state["fc.weight"].shape[0]), mean, std, clamp, **kwargs)
    state = {f"model.{k}": v for k, v in net_state.items()}
    return load_into(net, state, path, layout, _FIX, lambda k: prefix + k.removeprefix("model."))


def identify(state: Mapping[str, Tensor], **kwargs: Any) -> Published | None:
    """The published ResNet layout of ``state`` (``module.`` already dropped), or the CelebA-HQ DenseNets'
    (:mod:`cflight.models.pretrained.celebahq`), or ``None``.

    ``kwargs`` (``resize_to``, ``interpolation``, ``clamp``) go to :class:`TorchvisionResNet`; ``clamp=None``
    keeps the file's library's choice."""
    from cflight.models.pretrained import celebahq

    densenet = celebahq.identify(state)
    if densenet is not None:
        return densenet
    keys = list(state)
    clamp = kwargs.pop("clamp", None)
    if any(k.startswith(("normalizer.", "attacker.")) for k in keys):
        net = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        mean = _stats(state.get("normalizer.new_mean"), IMAGENET_MEAN)
        std = _stats(state.get("normalizer.new_std"), IMAGENET_STD)
        return Published("classifier", ROBUSTNESS, lambda path: _build(net, "module.model.", ROBUSTNESS, path,
                                                                         mean, std, clamp is not False, **kwargs))
    if "normalize.mean" in state or (keys and all(k.startswith("model.") for k in keys)):
        net = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        layout = ROBUSTBENCH if "normalize.mean" in state else ROBUSTBENCH_BARE
        mean = _stats(state.get("normalize.mean"), IMAGENET_MEAN)
        std = _stats(state.get("normalize.std"), IMAGENET_STD)
        return Published("classifier", layout, lambda path: _build(net, "model.", layout, path, mean, std,
                                                                     bool(clamp), **kwargs))
    if "conv1.weight" in state and "fc.weight" in state and any(k.startswith("layer1.") for k in keys):
        plain = dict(state)
        return Published("classifier", TORCHVISION, lambda path: _build(plain, "", TORCHVISION, path,
                                                                          IMAGENET_MEAN, IMAGENET_STD, bool(clamp),
                                                                          **kwargs))
    return None


def load_robust_resnet(path: str, resize_to: int | Sequence[int] | None = None, interpolation: str = "bicubic",
                       clamp: bool | None = None) -> TorchvisionResNet:
    """A robustness-library / RobustBench / torchvision ResNet file as :class:`TorchvisionResNet`, in eval mode.

    :param resize_to: resize inputs first (the DVCE/SVCE classifier wrapper: 224, bicubic); ``None``: no resize.
    :param interpolation: for ``resize_to``.
    :param clamp: clamp inputs to [0, 1] before normalising; ``None``: as the file's library did (robustness
        library: yes; RobustBench, torchvision: no).
    """
    state = unwrap_state_dict(read_checkpoint(path))
    found = identify(state, resize_to=resize_to, interpolation=interpolation, clamp=clamp) if state else None
    if found is None:
        raise BadInputError(f"checkpoint {path!r} is neither {ROBUSTNESS} nor {ROBUSTBENCH} nor {TORCHVISION}; "
                            f"{_FIX}")
    return found.build(path)


def load_timm_classifier(path: str, model_name: str, preprocess: str = "model", crop: bool = False,
                         antialias: bool = False, **kwargs: Any) -> TimmClassifier:
    """A timm weight file (the user's; nothing is downloaded) as a :class:`TimmClassifier`, in eval mode.

    The file is a plain ``timm.create_model(model_name).state_dict()`` (or a timm training checkpoint's
    ``"state_dict"``, or a ``TimmClassifier`` state dict); ``num_classes`` is read off the classifier head.
    ``preprocess="model"`` (default) resizes / normalises inside ``forward`` as the model's pretrained config
    says (see :class:`TimmClassifier`); ``kwargs`` go to :class:`TimmClassifier`.
    """
    state = unwrap_state_dict(read_checkpoint(path), keys=("state_dict", "model"))
    layout = f"a timm {model_name!r} state dict"
    if state is None:
        raise BadInputError(f"checkpoint {path!r} holds no state dict (expected {layout}); pass the file written "
                            "by torch.save(model.state_dict())")
    if all(k.startswith("model.") for k in state):  # a TimmClassifier's own state dict
        state = {k.removeprefix("model."): v for k, v in state.items()}
    if not timm.is_model(model_name):
        raise BadInputError(f"timm has no model {model_name!r} (for checkpoint {path!r}); pick a name from "
                            "timm.list_models()")
    try:
        head = timm.models.get_pretrained_cfg_value(model_name, "classifier")
    except RuntimeError:  # a model without a pretrained config: give num_classes explicitly
        head = None
    head = head[0] if isinstance(head, (list, tuple)) else head
    if head and f"{head}.weight" in state:
        kwargs.setdefault("num_classes", int(state[f"{head}.weight"].shape[0]))
    kwargs.setdefault("num_classes", 1000)
    net = TimmClassifier(model_name, preprocess=preprocess, crop=crop, antialias=antialias, **kwargs)
    fix = f"pass the weight file of timm's {model_name!r}, or the model_name it was saved from"
    return load_into(net, {f"model.{k}": v for k, v in state.items()}, path, layout, fix,
                     lambda k: k.removeprefix("model."))


class _LoadedClassifier(nn.Module):
    """A loaded classifier behind a class with simple init arguments (YAML configs); exposes the loaded
    network's ``in_channels`` and ``num_classes`` but no ``image_size``: these networks resize their input
    or pool globally, so any image size runs (DVCE's 256² images reach a 224² classifier)."""

    def _hold(self, net: nn.Module) -> None:
        self.net = net
        for attr in ("in_channels", "num_classes"):
            if hasattr(net, attr):
                setattr(self, attr, getattr(net, attr))
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        """Images in [0, 1] ``[B, 3, H, W]`` → logits ``[B, num_classes]``."""
        return self.net(x)


class RobustResNetFile(_LoadedClassifier):
    """:func:`load_robust_resnet` as a class, for YAML configs (``model: {class_path:
    cflight.models.pretrained.RobustResNetFile, init_args: {path: ..., resize_to: 224}}``); arguments as
    :func:`load_robust_resnet`'s."""

    def __init__(self, path: str, resize_to: int | Sequence[int] | None = None, interpolation: str = "bicubic",
                 clamp: bool | None = None) -> None:
        super().__init__()
        self.path = path
        self._hold(load_robust_resnet(path, resize_to, interpolation, clamp))


class TimmClassifierFile(_LoadedClassifier):
    """:func:`load_timm_classifier` as a class, for YAML configs; ``image_size`` (optional) replaces the
    model's input size in its preprocessing (reduced-size tests)."""

    def __init__(self, path: str, model_name: str, preprocess: str = "model", crop: bool = False,
                 antialias: bool = False, image_size: int | None = None) -> None:
        super().__init__()
        self.path = path
        kwargs = {} if image_size is None else {"image_size": image_size}
        self._hold(load_timm_classifier(path, model_name, preprocess, crop, antialias, **kwargs))
