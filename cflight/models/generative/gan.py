"""DCGAN-style generator and discriminator for 28², 32² and 64² images (Radford et al. 2016)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from cflight.models.classifiers.base import as_size
from cflight.models.registry import register_net

# Spatial size of the first feature map and the number of ×2 upsamplings for each supported image size.
_PLAN = {(28, 28): (7, 2), (32, 32): (4, 3), (64, 64): (4, 4)}


def _plan(image_size: int | Sequence[int]) -> tuple[tuple[int, int], int, int]:
    size = as_size(image_size)
    if size not in _PLAN:
        raise ValueError(f"DCGAN supports 28×28, 32×32 and 64×64 images, got {size}")
    start, ups = _PLAN[size]
    return size, start, ups


@register_net("dcgan_generator", kind="generator")
class DCGANGenerator(nn.Module):
    """``z`` ``[B, latent_dim]`` → image in [0, 1] via a linear layer and ×2 transposed-conv blocks (BN, ReLU).

    The generator protocol of the latent methods: ``decode(z)``; ``encode`` is provided by a projection
    (:class:`cflight.models.generative.projection.GANManifold`), not by the generator itself.

    :param latent_dim: size of ``z``.
    :param out_channels: image channels.
    :param image_size: 28, 32 or 64.
    :param width: channels of the last block; earlier blocks double it.
    """

    def __init__(self, latent_dim: int = 64, out_channels: int = 1, image_size: int | Sequence[int] = 28,
                 width: int = 32) -> None:
        super().__init__()
        size, start, ups = _plan(image_size)
        self.latent_dim, self.in_channels, self.image_size = latent_dim, out_channels, size
        ch = [width * 2 ** (ups - i) for i in range(ups + 1)]  # e.g. [128, 64, 32] for two upsamplings
        self._start, self._c0 = start, ch[0]
        self.fc = nn.Sequential(nn.Linear(latent_dim, ch[0] * start * start), nn.BatchNorm1d(ch[0] * start * start), nn.ReLU())
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            blocks += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Sequential(nn.Conv2d(ch[-1], out_channels, 3, padding=1), nn.Sigmoid())

    def decode(self, z: Tensor) -> Tensor:
        h = rearrange(self.fc(z), "b (c h w) -> b c h w", c=self._c0, h=self._start, w=self._start)
        return self.to_image(self.blocks(h))

    def forward(self, z: Tensor) -> Tensor:
        return self.decode(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.fc[0].weight.device)
        return self.decode(z)


@register_net("dcgan_discriminator", kind="discriminator")
class DCGANDiscriminator(nn.Module):
    """Image in [0, 1] → one real/fake logit: stride-2 convs with LeakyReLU(0.2), no normalisation
    (so the R1 penalty is per sample)."""

    def __init__(self, in_channels: int = 1, image_size: int | Sequence[int] = 28, width: int = 32) -> None:
        super().__init__()
        size, _, ups = _plan(image_size)
        self.in_channels, self.image_size, self.num_classes = in_channels, size, 1
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(ups):
            layers += [nn.Conv2d(c, width * 2**i, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = width * 2**i
        self.features = nn.Sequential(*layers)
        side = size[0] // 2**ups
        self.head = nn.Linear(c * side * side, 1)

    def forward(self, x: Tensor) -> Tensor:
        # 2x - 1: the discriminator sees images centred on zero, as in DCGAN
        return self.head(rearrange(self.features(2 * x - 1), "b c h w -> b (c h w)"))


@register_net("conv_encoder", kind="encoder")
class ConvEncoder(nn.Module):
    """Image → latent ``[B, latent_dim]``: an encoder trained to initialise GAN projection."""

    def __init__(self, latent_dim: int = 64, in_channels: int = 1, image_size: int | Sequence[int] = 28,
                 width: int = 32) -> None:
        super().__init__()
        self.latent_dim, self.in_channels, self.image_size = latent_dim, in_channels, as_size(image_size)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, 1, 1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(2),
        )
        self.fc = nn.Linear(16 * width, latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(rearrange(self.net(2 * x - 1), "b c h w -> b (c h w)"))


@register_net("dcgan", kind="generator")
class GANLatentModel(nn.Module):
    """A trained GAN generator (the EMA weights) with an optional encoder, in the latent-method protocol.

    ``decode(z)`` is the generator; ``encode(x)`` is the encoder's estimate of ``z`` (the fast path). For the
    paper's optimisation-based projection wrap it in
    :class:`~cflight.models.generative.projection.GANManifold`.
    """

    def __init__(self, latent_dim: int = 64, channels: int = 1, image_size: int | Sequence[int] = 28,
                 width: int = 32, encoder: bool = True) -> None:
        super().__init__()
        self.generator = DCGANGenerator(latent_dim, channels, image_size, width)
        self.encoder = ConvEncoder(latent_dim, channels, image_size, width) if encoder else None
        self.latent_dim, self.in_channels, self.image_size = latent_dim, channels, self.generator.image_size

    def decode(self, z: Tensor) -> Tensor:
        return self.generator.decode(z)

    def encode(self, x: Tensor) -> Tensor:
        if self.encoder is None:
            raise RuntimeError("this GAN has no encoder: wrap it in GANManifold to project images by optimisation")
        return self.encoder(x)

    def forward(self, z: Tensor) -> Tensor:
        return self.decode(z)
