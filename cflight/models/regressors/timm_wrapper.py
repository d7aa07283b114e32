"""Any timm model as a cflight regressor (one output, normalisation inside ``forward``)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from cflight.models.classifiers.base import as_size
from cflight.models.classifiers.timm_wrapper import TimmClassifier
from cflight.models.registry import register_net


@register_net("regressor_timm", kind="regressor")
class TimmRegressor(nn.Module):
    """``timm.create_model(model_name, num_classes=0)`` features → ``Linear(→1)``; [0, 1] in, ``[B, 1]`` out.

    Registered as ``"regressor_timm"`` (``build_net("regressor_timm", model_name="resnet18")``); the
    ``timm:`` prefix stays the classifier's. Nothing is downloaded unless ``pretrained=True``. A frozen
    pretrained backbone with a new linear head is the spec's CelebA-HQ age regressor recipe, the full
    fine-tune its oracle (latent_and_regression §2.5; ``RegressorModule(freeze_backbone=...)``).

    :param model_name: a timm model name.
    :param in_channels: image channels.
    :param image_size: ``H`` or ``(H, W)`` (passed to timm as ``img_size`` where the model takes one).
    :param mean: normalisation mean; ``None`` takes the model's pretrained config.
    :param std: as ``mean``.
    :param pretrained: load timm's pretrained weights (downloads; only when asked).
    :param timm_kwargs: further keyword arguments of ``timm.create_model``.
    """

    num_outputs = 1

    def __init__(self, model_name: str = "resnet18", in_channels: int = 3,
                 image_size: int | Sequence[int] = 64,
                 mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
                 pretrained: bool = False, **timm_kwargs: Any) -> None:
        super().__init__()
        self.model_name = model_name
        self.in_channels, self.image_size = in_channels, as_size(image_size)
        # num_classes=0: timm returns pooled features, so the 1-unit head is ours (and freezable apart)
        features = TimmClassifier(model_name, num_classes=0, in_channels=in_channels, image_size=image_size,
                                  mean=mean, std=std, pretrained=pretrained, **timm_kwargs)
        self.normalize, self.backbone = features.normalize, features.model
        self.head = nn.Linear(int(self.backbone.num_features), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(self.normalize(x)))
