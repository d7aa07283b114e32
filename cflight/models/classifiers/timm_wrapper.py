"""Any timm model as a cflight classifier: [0, 1] images in, normalisation inside ``forward``, logits out."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from torch import Tensor, nn

from cflight.models.classifiers.base import Normalize, as_size


class TimmClassifier(nn.Module):
    """``timm.create_model(model_name, pretrained=..., num_classes=..., in_chans=...)`` behind a normaliser.

    Registered through the registry's ``timm:<model_name>`` prefix (``build_net("timm:resnet18",
    num_classes=2)``). Nothing is downloaded unless ``pretrained=True`` is passed explicitly.

    :param model_name: a timm model name (``timm.list_models()``).
    :param num_classes: number of logits (1 for a binary model).
    :param in_channels: image channels (timm's ``in_chans``).
    :param image_size: ``H`` or ``(H, W)`` of the inputs. It is passed to timm as ``img_size`` when the
        model accepts one (ViTs and other fixed-size models); convolutional models ignore it.
    :param mean: per-channel (or scalar) normalisation mean; ``None`` takes the model's pretrained config
        (ImageNet statistics, averaged over channels when ``in_channels != 3``).
    :param std: as ``mean``.
    :param pretrained: load timm's pretrained weights (downloads; only when asked).
    :param timm_kwargs: further keyword arguments of ``timm.create_model`` (``drop_rate``, …).
    """

    def __init__(self, model_name: str, num_classes: int = 10, in_channels: int = 3,
                 image_size: int | Sequence[int] = 224, mean: float | Sequence[float] | None = None,
                 std: float | Sequence[float] | None = None, pretrained: bool = False,
                 **timm_kwargs: Any) -> None:
        super().__init__()
        self.model_name = model_name
        self.in_channels, self.image_size, self.num_classes = in_channels, as_size(image_size), num_classes
        kwargs = dict(pretrained=pretrained, num_classes=num_classes, in_chans=in_channels, **timm_kwargs)
        try:
            self.model = timm.create_model(model_name, img_size=self.image_size, **kwargs)
        except TypeError as err:  # models without a fixed input size do not take img_size
            if "img_size" not in str(err) or "img_size" in timm_kwargs:
                raise
            self.model = timm.create_model(model_name, **kwargs)
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        self.normalize = Normalize(self._default(mean, cfg.get("mean", 0.5), in_channels),
                                   self._default(std, cfg.get("std", 0.5), in_channels), in_channels)

    @staticmethod
    def _default(value: Any, cfg_value: Any, channels: int) -> Any:
        if value is not None:
            return value
        stats = torch.as_tensor(cfg_value, dtype=torch.float32).flatten()
        return stats.tolist() if stats.numel() == channels else float(stats.mean())

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))
