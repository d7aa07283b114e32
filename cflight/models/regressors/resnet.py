"""The Squares regressor of Ha & Bender: torchvision ResNet-18 adapted to 64² inputs (spec §2.5)."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from cflight.models.classifiers.base import Normalize, as_size
from cflight.models.registry import register_net


@register_net("squares_resnet18", kind="regressor")
class SquaresResNet18(nn.Module):
    """ResNet-18 with ``conv1 = Conv(C→64, k4, s1, p2)`` (small images) and ``fc = Linear(512→1)``.

    As ``scripts/train/train_resnet_square.py`` (latent_and_regression §2.5): trained from scratch, no output
    bound (the head is linear). The reference fed ``ToTensor()`` images straight in; cflight normalises with
    ``mean``/``std`` (0.5/0.5 by default: [0, 1] → [−1, 1]) inside ``forward``, a documented deviation that
    only rescales the first layer's input. Input ``[B, C, H, W]`` in [0, 1]; output ``[B, 1]``.

    :param in_channels: image channels.
    :param image_size: ``H`` or ``(H, W)`` (informational: the network is fully convolutional + avg pool).
    :param mean: per-channel (or scalar) mean subtracted inside ``forward``.
    :param std: per-channel (or scalar) std divided by inside ``forward``.
    :param pretrained: start from torchvision's ImageNet weights (downloads; only when asked). conv1 and
        fc are replaced either way.
    """

    num_outputs = 1

    def __init__(self, in_channels: int = 3, image_size: int | Sequence[int] = 64,
                 mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5,
                 pretrained: bool = False) -> None:
        from torchvision.models import ResNet18_Weights, resnet18  # lazy: registering must stay cheap

        super().__init__()
        self.in_channels, self.image_size = in_channels, as_size(image_size)
        self.normalize = Normalize(mean, std, in_channels)
        net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if pretrained else None)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=4, stride=1, padding=2, bias=False)
        net.fc = nn.Identity()  # the head lives in self.head, so freeze_backbone can tell it apart
        self.backbone = net
        self.head = nn.Linear(512, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(self.normalize(x)))
