"""Small CNN classifiers: the reference MNIST CNN and a configurable ``SimpleCNN``.

Both take images in [0, 1] ``[B, C, H, W]``, normalise inside ``forward`` and return logits
``[B, num_classes]`` (``num_classes=1``: one logit of a binary model).
"""
from __future__ import annotations

from collections.abc import Sequence

from einops import rearrange
from torch import Tensor, nn

from cflight.models.classifiers.base import Normalize, as_size, conv_pool_stack
from cflight.models.registry import register_net

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@register_net("mnist_cnn", kind="classifier")
class MNISTCNN(nn.Module):
    """The MNIST classifier of Goldwasser & Hooker's code (``mnist_autoencoder.ipynb`` cell 10).

    ``Conv(C→w, k3 p1)-ReLU-MaxPool2 → Conv(w→2w, k3 p1)-ReLU-MaxPool2 → FC(2w·H/4·W/4→hidden)-ReLU →
    FC(hidden→num_classes)``; the defaults (``w=32``, ``hidden=128``, 28×28, 10 classes) are the
    reference's 3136→128→10 network, trained there for one epoch with Adam 1e-3 (97.86 % test accuracy).

    Inputs are in [0, 1] and normalised inside ``forward`` with ``mean``/``std`` (MNIST's by default), as
    the reference normalised its training data.  Unlike the reference, whose counterfactual loop fed
    un-normalised decoder outputs to this network (a quirk, spec §1.5), cflight normalises every input, the
    counterfactuals' too; ``mean=0, std=1`` reproduces the reference's loop (a network then sees raw [0, 1]).

    :param in_channels: image channels.
    :param image_size: ``H`` or ``(H, W)``; each must be divisible by 4.
    :param num_classes: number of logits.
    :param width: channels of the first conv (the second has ``2·width``).
    :param hidden: units of the hidden fully connected layer.
    :param mean: per-channel (or scalar) mean subtracted inside ``forward``.
    :param std: per-channel (or scalar) std divided by inside ``forward``.
    """

    def __init__(self, in_channels: int = 1, image_size: int | Sequence[int] = 28, num_classes: int = 10,
                 width: int = 32, hidden: int = 128, mean: float | Sequence[float] = MNIST_MEAN,
                 std: float | Sequence[float] = MNIST_STD) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.num_classes = in_channels, as_size(image_size), num_classes
        h, w = self.image_size
        if h % 4 or w % 4:
            raise ValueError(f"mnist_cnn needs an image size divisible by 4, got {self.image_size}")
        self.normalize = Normalize(mean, std, in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(2 * width * (h // 4) * (w // 4), hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(self.normalize(x))
        return self.classifier(rearrange(h, "b c h w -> b (c h w)"))


@register_net("simple_cnn", kind="classifier")
class SimpleCNN(nn.Module):
    """A configurable small CNN: one ``Conv3×3 [-BN] -ReLU -MaxPool2`` block per entry of ``widths``.

    Head: with ``global_pool`` (``"avg"`` or ``"max"``) the features are pooled to one vector and a linear
    layer (after dropout) gives the logits, so any image size works (28², 32², 64², …); with
    ``global_pool=None`` the feature map is flattened (its size fixed by ``image_size``) into an
    ``FC(hidden)-ReLU-Dropout-FC`` head. ``SimpleCNN(3, 256, 1, widths=(32, 64, 128), batch_norm=False,
    global_pool=None, hidden=512, dropout=0.3, mean=0, std=1, init="reference")`` is the CelebA predictor of
    Goldwasser & Hooker (spec §1.5).

    :param in_channels: image channels.
    :param image_size: ``H`` or ``(H, W)``; must be divisible by ``2**len(widths)``.
    :param num_classes: number of logits (1 for a binary model).
    :param widths: output channels of the conv blocks.
    :param batch_norm: BatchNorm after every conv.
    :param dropout: dropout probability before the last linear layer.
    :param global_pool: ``"avg"``, ``"max"`` or ``None`` (flatten).
    :param hidden: hidden units of the flatten head (ignored with a global pool when ``None``; with a
        global pool and ``hidden`` set, the head is ``FC(hidden)-ReLU-Dropout-FC`` too).
    :param mean: per-channel (or scalar) mean subtracted inside ``forward``.
    :param std: per-channel (or scalar) std divided by inside ``forward``.
    :param init: ``"default"`` (PyTorch's) or ``"reference"`` (Kaiming-normal fan_out on convs and the
        hidden FC, Xavier on the last FC, zero biases).
    """

    def __init__(self, in_channels: int = 3, image_size: int | Sequence[int] = 32, num_classes: int = 10,
                 widths: Sequence[int] = (32, 64, 128), batch_norm: bool = True, dropout: float = 0.0,
                 global_pool: str | None = "avg", hidden: int | None = None,
                 mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5,
                 init: str = "default") -> None:
        super().__init__()
        self.in_channels, self.image_size, self.num_classes = in_channels, as_size(image_size), num_classes
        if global_pool not in ("avg", "max", None):
            raise ValueError(f"global_pool must be 'avg', 'max' or None, got {global_pool!r}")
        if init not in ("default", "reference"):
            raise ValueError(f"init must be 'default' or 'reference', got {init!r}")
        stack, channels = conv_pool_stack("simple_cnn", in_channels, self.image_size, widths, batch_norm)
        factor = 2 ** len(widths)
        h, w = self.image_size
        self.normalize = Normalize(mean, std, in_channels)
        self.features = stack
        self.global_pool = global_pool
        features = channels if global_pool else channels * (h // factor) * (w // factor)
        head: list[nn.Module] = []
        if hidden is None and global_pool is None:
            hidden = 512
        if hidden is not None:
            head += [nn.Linear(features, hidden), nn.ReLU()]
            features = hidden
        head += [nn.Dropout(dropout), nn.Linear(features, num_classes)]
        self.head = nn.Sequential(*head)
        if init == "reference":
            self._reference_init()

    def _reference_init(self) -> None:
        linears = [m for m in self.head if isinstance(m, nn.Linear)]
        for m in [*self.features, *linears[:-1]]:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_normal_(linears[-1].weight)
        nn.init.zeros_(linears[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(self.normalize(x))
        if self.global_pool == "avg":
            h = h.mean(dim=(2, 3))
        elif self.global_pool == "max":
            h = h.amax(dim=(2, 3))
        else:
            h = rearrange(h, "b c h w -> b (c h w)")
        return self.head(h)
