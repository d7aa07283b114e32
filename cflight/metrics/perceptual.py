"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), v0.1,
from weight files the user supplies (nothing is downloaded, DESIGN.md §3).

Faithful to the reference ``lpips`` package (github.com/richzhang/PerceptualSimilarity, ``lpips/lpips.py``):
images in [0, 1] go to [-1, 1], then through its ``ScalingLayer`` ``(x − shift) / scale``; a torchvision
AlexNet / VGG16 ``features`` stack is read out after each of five ReLUs; every feature map is unit-normalised
over channels (``f / (‖f‖₂ + 1e-10)``), the two images' maps are subtracted and squared, weighted per channel by
the learned 1×1 conv ``lin{k}`` (no bias), averaged over positions and summed over layers:

    d(x, y) = Σ_k mean_{h,w} Σ_c w_{k,c} (f̂_k(x) − f̂_k(y))²_{c,h,w}

Two files: the torchvision ImageNet weights of the backbone (``alexnet-owt-7be5be79.pth`` /
``vgg16-397923af.pth``, the ones ``lpips`` itself loads) and the lpips linear layers
(``lpips/weights/v0.1/{alex,vgg}.pth``, keys ``lin{k}.model.1.weight`` ``[1, C_k, 1, 1]``).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from einops import reduce
from torch import Tensor, nn
from torchmetrics import Metric

from cflight.models.pretrained.published import read_checkpoint, unwrap_state_dict
from cflight.models.registry import state_dict_mismatch
from cflight.validation import BadInputError, MissingInputError, check_images

LPIPS_REPO = "github.com/richzhang/PerceptualSimilarity"
# ScalingLayer of lpips v0.1: the ImageNet mean/std expressed for inputs in [-1, 1]
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # lpips.normalize_tensor


@dataclass(frozen=True)
class Backbone:
    """A torchvision ``features`` stack read out at the ends of ``cuts`` (exclusive indices, lpips'
    ``pretrained_networks.py`` slices), with ``channels`` per read-out and the smallest image side it takes."""

    build: Callable[[], nn.Sequential]  # the torchvision model's ``features``, on the meta device
    cuts: tuple[int, ...]
    channels: tuple[int, ...]
    min_size: int
    file: str  # the torchvision weight file and where it is published
    url: str


def _tv_features(name: str) -> Callable[[], nn.Sequential]:
    def build() -> nn.Sequential:
        import torchvision.models as tvm

        with torch.device("meta"):  # no memory, no init: the file's tensors are assigned on load
            return getattr(tvm, name)(weights=None).features
    return build


BACKBONES: dict[str, Backbone] = {
    # relu1 .. relu5 of AlexNet (features[1, 4, 7, 9, 11]); two 3×3/2 max-pools before relu3 need ≥ 31 px
    "alex": Backbone(_tv_features("alexnet"), (2, 5, 8, 10, 12), (64, 192, 384, 256, 256), 31,
                     "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of VGG16 (features[3, 8, 15, 22, 29]), after four 2×2 pools
    "vgg": Backbone(_tv_features("vgg16"), (4, 9, 16, 23, 30), (64, 128, 256, 512, 512), 16,
                    "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}


def _read(path: str | Path, what: str, hint: str) -> dict[str, Tensor]:
    path = str(path)
    if not os.path.isfile(path):
        raise MissingInputError(f"{what} {path!r} not found; get it from {hint} (nothing is downloaded)")
    state = unwrap_state_dict(read_checkpoint(path))
    if state is None:
        raise BadInputError(f"{what} {path!r} holds no state dict of tensors; give {hint}")
    return state


class LPIPSNetwork(nn.Module):
    """LPIPS v0.1 distance network: ``forward(x [B, C, H, W], y [B, C, H, W]) -> [B]``, images in [0, 1]
    (``C`` = 1 or 3; grey images are repeated to RGB), differentiable in the images, weights frozen.

    Args:
        backbone: ``"alex"`` (lpips' default) or ``"vgg"``.
        backbone_weights: the torchvision state dict file of the backbone (``alexnet-owt-7be5be79.pth``,
            ``vgg16-397923af.pth``); its ``features.*`` tensors are loaded strictly, ``classifier.*`` ignored.
        lpips_weights: lpips' linear-layer file ``weights/v0.1/<backbone>.pth`` (exactly ``lin0..lin4``).
    """

    def __init__(self, backbone: str, backbone_weights: str | Path, lpips_weights: str | Path) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise BadInputError(f"unknown LPIPS backbone {backbone!r}; use one of {sorted(BACKBONES)}")
        spec = BACKBONES[backbone]
        self.backbone, self.min_size = backbone, spec.min_size
        features = spec.build()
        own = {f"features.{k}": v for k, v in features.state_dict().items()}
        state = _read(backbone_weights, f"{backbone} backbone weights", f"{spec.url} (torchvision's {spec.file})")
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}  # the unused head
        bad = state_dict_mismatch(own, state, expected="torchvision")
        if bad:
            raise BadInputError(f"{backbone_weights!r} is not a torchvision {backbone} state dict "
                                f"(expected {spec.file}'s features.* tensors): {bad}")
        features.load_state_dict({k.removeprefix("features."): v.float() for k, v in state.items()}, assign=True)
        self.slices = nn.ModuleList(features[a:b] for a, b in zip((0, *spec.cuts[:-1]), spec.cuts))

        lins = {f"lin{k}.model.1.weight": torch.empty(1, c, 1, 1) for k, c in enumerate(spec.channels)}
        lin_file = f"{LPIPS_REPO} lpips/weights/v0.1/{backbone}.pth (also in the pip package lpips)"
        lin_state = _read(lpips_weights, f"LPIPS {backbone} linear weights", lin_file)
        bad = state_dict_mismatch(lins, lin_state, expected="lpips")
        if bad:
            raise BadInputError(f"{lpips_weights!r} is not the lpips v0.1 {backbone} linear-layer file (expected "
                                f"lin0..lin{len(lins) - 1}.model.1.weight of shapes [1, C, 1, 1], C = "
                                f"{list(spec.channels)}): {bad}")
        # [L] per-channel weights, a list since channel counts differ per layer
        self.weights = nn.ParameterList(lin_state[k].float().flatten() for k in lins)
        self.eval().requires_grad_(False)

    def features(self, x: Tensor) -> list[Tensor]:
        """Unit-normalised feature maps ``[B, C_k, H_k, W_k]`` of images ``[B, 3, H, W]`` in [0, 1]."""
        # the constants in the images' own precision (a float32 buffer cast to float64 would round them)
        shift, scale = (torch.tensor(c, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1) for c in (SHIFT, SCALE))
        h = ((2 * x - 1) - shift) / scale
        out = []
        for block in self.slices:
            h = block(h)
            out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + EPS))
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] not in (1, 3):
            raise BadInputError(f"LPIPS needs two [B, 1 or 3, H, W] batches of one shape, got {tuple(x.shape)} "
                                f"and {tuple(y.shape)}")
        if min(x.shape[-2:]) < self.min_size:
            raise BadInputError(f"images of {tuple(x.shape[-2:])} px are too small for the LPIPS {self.backbone} "
                                f"backbone (needs >= {self.min_size} px a side); resize them or use another")
        dtype = self.weights[0].dtype
        x, y = (t.to(dtype).expand(-1, 3, -1, -1) for t in (x, y))  # grey → RGB, as the reference expects
        total = x.new_zeros(x.shape[0])
        for fx, fy, w in zip(self.features(x), self.features(y), self.weights):
            # lin_k, a 1×1 conv to one channel without bias, = a weighted sum over channels; then the spatial mean
            total = total + reduce(torch.einsum("bchw,c->bhw", (fx - fy).pow(2), w), "b h w -> b", "mean")
        return total


def lpips_distance(net: LPIPSNetwork, x: Tensor, y: Tensor) -> Tensor:
    """Per-row LPIPS ``[B]`` between images ``x`` and ``y`` ``[B, C, H, W]`` in [0, 1] (0 for identical rows)."""
    return net(x, y)


def lpips_network(backbone: str = "alex", backbone_weights: str | Path | None = None,
                  lpips_weights: str | Path | None = None) -> LPIPSNetwork | None:
    """An :class:`LPIPSNetwork`, or ``None`` with a one-line warning that LPIPS is skipped when neither weight
    file is given (nothing is downloaded). Giving only one of the two files is an error."""
    if backbone_weights is None and lpips_weights is None:
        warnings.warn("LPIPS skipped: no backbone_weights / lpips_weights given (nothing is downloaded; see "
                      "cflight.metrics.perceptual for the two files)", stacklevel=2)
        return None
    if backbone_weights is None or lpips_weights is None:
        spec = BACKBONES.get(backbone)
        need = ("backbone_weights", spec.url if spec else "torchvision") if backbone_weights is None else \
            ("lpips_weights", f"{LPIPS_REPO} lpips/weights/v0.1/{backbone}.pth")
        raise BadInputError(f"LPIPS needs both weight files: give {need[0]} too (get it from {need[1]})")
    return LPIPSNetwork(backbone, backbone_weights, lpips_weights)


class LPIPS(Metric):
    """Mean LPIPS between originals and counterfactuals (lower: perceptually closer), over images.

    ``update(x [B, C, H, W], x_cf [B, C, H, W])`` (images in [0, 1]); ``compute()`` → the mean (NaN before any
    image). States: a float64 sum and count, summed across processes. Per-row values: :func:`lpips_distance`.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, net: LPIPSNetwork, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = net
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, x: Tensor, x_cf: Tensor) -> None:
        check_images(x, "originals")
        check_images(x_cf, "counterfactuals")
        with torch.no_grad():
            d = lpips_distance(self.net, x.detach(), x_cf.detach())
        self.total += d.double().sum()
        self.n += d.shape[0]

    def compute(self) -> Tensor:
        return self.total / self.n
