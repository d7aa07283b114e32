"""A small CNN regressor for small images (tests, CPU-sized shipped models)."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from cflight.models.classifiers.base import Normalize, as_size, conv_pool_stack
from cflight.models.registry import register_net


@register_net("regressor_cnn", kind="regressor")
class CNNRegressor(nn.Module):
    """``Conv3×3 [-BN] -ReLU -MaxPool2`` per entry of ``widths``, global average pool, ``Linear(→1)``.

    Input ``[B, C, H, W]`` in [0, 1] (normalised inside ``forward``); output ``[B, 1]``, unbounded like the
    spec's regressors (latent_and_regression §2.5: a plain linear head, no sigmoid), so the MSE gradient
    does not vanish near 0 and 1.

    :param in_channels: image channels.
    :param image_size: ``H`` or ``(H, W)``; must be divisible by ``2**len(widths)``.
    :param widths: output channels of the conv blocks.
    :param batch_norm: BatchNorm after every conv.
    :param mean: per-channel (or scalar) mean subtracted inside ``forward``.
    :param std: per-channel (or scalar) std divided by inside ``forward``.
    """

    num_outputs = 1

    def __init__(self, in_channels: int = 3, image_size: int | Sequence[int] = 64,
                 widths: Sequence[int] = (16, 32, 64), batch_norm: bool = True,
                 mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5) -> None:
        super().__init__()
        self.in_channels, self.image_size = in_channels, as_size(image_size)
        stack, channels = conv_pool_stack("regressor_cnn", in_channels, self.image_size, widths, batch_norm)
        self.normalize = Normalize(mean, std, in_channels)
        self.backbone = stack
        self.head = nn.Linear(channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(self.normalize(x)).mean(dim=(2, 3)))
