"""Any timm model as a cflight classifier: [0, 1] images in, preprocessing inside ``forward``, logits out."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cflight.models.classifiers.base import Normalize, as_size

PREPROCESS = ("normalize", "model")


class ResizeCrop(nn.Module):
    """Differentiable resize (+ optional center crop) of ``[B, C, H, W]`` images of any size to ``size``.

    Without ``crop_pct`` the image is resized to ``size`` exactly (for the square inputs of DVCE/SVCE this is
    their ``ResizeAndMeanWrapper``'s ``transforms.Resize(224, bicubic)``). With ``crop_pct`` it is timm's eval
    transform: resize to ``floor(size / crop_pct)`` (short side for ``crop_mode="center"``, both sides for
    ``"squash"``), then center-crop ``size``.

    :param size: output ``(h, w)``.
    :param interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"`` (timm's config names).
    :param crop_pct: fraction of the resized image kept by the center crop; ``None``: no crop.
    :param crop_mode: ``"center"`` or ``"squash"`` (timm's ``crop_mode``; ``"border"`` is treated as center).
    :param antialias: low-pass when shrinking (PIL-like, as timm's image pipeline); off by default like the
        tensor ``transforms.Resize`` of the papers' wrappers.
    """

    def __init__(self, size: int | Sequence[int], interpolation: str = "bicubic", crop_pct: float | None = None,
                 crop_mode: str = "center", antialias: bool = False) -> None:
        super().__init__()
        if interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"interpolation must be 'bicubic', 'bilinear' or 'nearest', got {interpolation!r}")
        if crop_pct is not None and not 0 < crop_pct:
            raise ValueError(f"crop_pct must be > 0, got {crop_pct}")
        self.size, self.interpolation = as_size(size), interpolation
        self.crop_pct, self.crop_mode = crop_pct, crop_mode
        self.antialias = antialias and interpolation != "nearest"

    def _resize(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        align = False if self.interpolation != "nearest" else None
        return F.interpolate(x, size=size, mode=self.interpolation, align_corners=align, antialias=self.antialias)

    def forward(self, x: Tensor) -> Tensor:
        if self.crop_pct is None:
            return self._resize(x, self.size)
        # crop_pct > 1 would ask for a crop larger than the image: keep the whole image then
        scale = [max(math.floor(s / self.crop_pct), s) for s in self.size]
        h, w = x.shape[-2:]
        if self.crop_mode == "squash" or scale[0] != scale[1]:
            x = self._resize(x, (scale[0], scale[1]))
        else:  # short side to scale, aspect kept (torchvision's Resize(int))
            short, long = min(h, w), max(h, w)
            other = int(scale[0] * long / short)
            x = self._resize(x, (scale[0], other) if h <= w else (other, scale[0]))
        h, w = x.shape[-2:]
        top, left = int(round((h - self.size[0]) / 2.0)), int(round((w - self.size[1]) / 2.0))
        return x[..., top:top + self.size[0], left:left + self.size[1]]

    def extra_repr(self) -> str:
        return f"size={self.size}, interpolation={self.interpolation!r}, crop_pct={self.crop_pct}"


class TimmClassifier(nn.Module):
    """``timm.create_model(model_name, pretrained=..., num_classes=..., in_chans=...)`` behind its preprocessing.

    Registered through the registry's ``timm:<model_name>`` prefix (``build_net("timm:resnet18",
    num_classes=2)``). Nothing is downloaded unless ``pretrained=True`` is passed explicitly.

    ``preprocess="normalize"`` (default): inputs of ``image_size`` are only normalised. ``preprocess="model"``:
    the model's own preprocessing from its pretrained config (``timm.data.resolve_data_config``), as the DVCE /
    SVCE ``ResizeAndMeanWrapper`` applies it: images in [0, 1] of any size are resized to the config's
    ``input_size`` with its interpolation (center-cropped with its ``crop_pct`` when ``crop=True``) and
    normalised with its mean/std; all differentiable. The state-dict layout (``model.*``) is the same in
    both modes.

    :param model_name: a timm model name (``timm.list_models()``).
    :param num_classes: number of logits (1 for a binary model).
    :param in_channels: image channels (timm's ``in_chans``).
    :param image_size: ``H`` or ``(H, W)`` the network sees; passed to timm as ``img_size`` when the model
        accepts one (ViTs and other fixed-size models); convolutional models ignore it. ``None``: 224, or with
        ``preprocess="model"`` the config's ``input_size`` (the model keeps its own ``img_size``).
    :param mean: per-channel (or scalar) normalisation mean; ``None`` takes the model's pretrained config
        (ImageNet statistics, averaged over channels when ``in_channels != 3``).
    :param std: as ``mean``.
    :param pretrained: load timm's pretrained weights (downloads; only when asked).
    :param preprocess: ``"normalize"`` or ``"model"`` (see above).
    :param crop: with ``preprocess="model"``, center-crop with the config's ``crop_pct`` (timm's eval transform).
    :param antialias: with ``preprocess="model"``, antialiased resizing (see :class:`ResizeCrop`).
    :param timm_kwargs: further keyword arguments of ``timm.create_model`` (``drop_rate``, …).
    """

    def __init__(self, model_name: str, num_classes: int = 10, in_channels: int = 3,
                 image_size: int | Sequence[int] | None = None, mean: float | Sequence[float] | None = None,
                 std: float | Sequence[float] | None = None, pretrained: bool = False,
                 preprocess: str = "normalize", crop: bool = False, antialias: bool = False,
                 **timm_kwargs: Any) -> None:
        super().__init__()
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
        self.model_name, self.preprocess_mode = model_name, preprocess
        self.in_channels, self.num_classes = in_channels, num_classes
        kwargs = dict(pretrained=pretrained, num_classes=num_classes, in_chans=in_channels, **timm_kwargs)
        if image_size is None and preprocess == "model":
            self.model = timm.create_model(model_name, **kwargs)  # the model's own input size
        else:
            self.model = self._create(model_name, as_size(224 if image_size is None else image_size), kwargs,
                                      timm_kwargs)
        if preprocess == "model":
            cfg = timm.data.resolve_data_config({}, model=self.model)
            self.image_size = as_size(cfg["input_size"][-2:] if image_size is None else image_size)
            self.resize: nn.Module = ResizeCrop(self.image_size, cfg.get("interpolation", "bicubic"),
                                                cfg.get("crop_pct") if crop else None,
                                                cfg.get("crop_mode", "center"), antialias)
        else:
            cfg = getattr(self.model, "pretrained_cfg", None) or {}
            self.image_size = as_size(224 if image_size is None else image_size)
            self.resize = nn.Identity()
        self.normalize = Normalize(self._default(mean, cfg.get("mean", 0.5), in_channels),
                                   self._default(std, cfg.get("std", 0.5), in_channels), in_channels)

    @staticmethod
    def _create(model_name: str, size: tuple[int, int], kwargs: dict[str, Any],
                timm_kwargs: dict[str, Any]) -> nn.Module:
        try:
            return timm.create_model(model_name, img_size=size, **kwargs)
        except TypeError as err:  # models without a fixed input size do not take img_size
            if "img_size" not in str(err) or "img_size" in timm_kwargs:
                raise
            return timm.create_model(model_name, **kwargs)

    @staticmethod
    def _default(value: Any, cfg_value: Any, channels: int) -> Any:
        if value is not None:
            return value
        stats = torch.as_tensor(cfg_value, dtype=torch.float32).flatten()
        return stats.tolist() if stats.numel() == channels else float(stats.mean())

    def forward(self, x: Tensor) -> Tensor:
        """Images in [0, 1] ``[B, C, H, W]`` (any ``H, W`` with ``preprocess="model"``) → logits ``[B, K]``."""
        return self.model(self.normalize(self.resize(x)))
