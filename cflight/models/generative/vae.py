"""The convolutional (V)AE of Goldwasser & Hooker's MNIST experiments (spec §1.5)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from cflight.models.classifiers.base import as_size
from cflight.models.registry import register_net


@register_net("conv_vae", kind="generator")
class ConvVAE(nn.Module):
    """Conv encoder → (μ, log σ²) → reparameterised ``z`` → conv decoder with a sigmoid output.

    Encoder ``Conv(C→16, k3 s2 p1)-LReLU(0.2)-Conv(16→32, k3 s2 p1)-LReLU-Conv(32→64, k3 s2 p1)-LReLU-
    Flatten(1024)`` and two ``Linear(1024→latent_dim)`` heads; decoder ``Linear(latent_dim→1024)-
    Unflatten(64, 4, 4)-ConvT(64→32, k3 s2 p1 op1)-LReLU-ConvT(32→16, k3 s2 p1 op1)-LReLU-ConvT(16→C)-
    Sigmoid``. The last transposed conv is the reference's ``k2 s2 p2`` (16→28) for ``image_size=28``
    and ``k2 s2 p0`` (16→32) for ``image_size=32``; the encoder is the same for both (→ 4×4).

    **Deviation from the reference:** the reference normalised the encoder's inputs with MNIST's
    ``(0.1307, 0.3081)`` while its decoder emits [0, 1], so a reconstruction could never equal its target.
    Here both the input and the output are images in [0, 1] (cflight's convention).

    Whether this is a VAE or a stochastic autoencoder depends on the training loss: the reference trained
    it without a KL term (see :class:`cflight.lit.VAEModule`).

    :param latent_dim: size of ``z`` (64 in the reference).
    :param in_channels: image channels.
    :param image_size: 28 or 32 (an int or a square ``(H, W)``).
    """

    def __init__(self, latent_dim: int = 64, in_channels: int = 1, image_size: int | Sequence[int] = 28) -> None:
        super().__init__()
        size = as_size(image_size)
        if size not in ((28, 28), (32, 32)):
            raise ValueError(f"conv_vae supports 28×28 and 32×32 images, got {size}")
        self.latent_dim, self.in_channels, self.image_size = latent_dim, in_channels, size
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        )
        self.fc_mu = nn.Linear(1024, latent_dim)
        self.fc_logvar = nn.Linear(1024, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, 1024)
        last_padding = 2 if size == (28, 28) else 0
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(16, in_channels, 2, stride=2, padding=last_padding), nn.Sigmoid(),
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images in [0, 1] ``[B, C, H, W]`` → ``(mu, logvar)``, each ``[B, latent_dim]``."""
        h = rearrange(self.encoder(x), "b c h w -> b (c h w)")
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        """Latents ``[B, latent_dim]`` → images in [0, 1] ``[B, C, H, W]``."""
        h = rearrange(self.fc_dec(z), "b (c h w) -> b c h w", c=64, h=4, w=4)
        return self.decoder(h)

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, noise: Tensor | None = None) -> Tensor:
        """``z = mu + exp(logvar / 2) · noise``, with fresh standard normal noise when ``noise`` is None."""
        if noise is None:
            noise = torch.randn_like(mu)
        elif noise.shape != mu.shape:
            raise ValueError(f"noise must have shape {tuple(mu.shape)}, got {tuple(noise.shape)}")
        return mu + torch.exp(0.5 * logvar) * noise

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_rec, mu, logvar)``. ``noise`` (``[B, latent_dim]`` standard normal) makes the sample
        deterministic; ``torch.zeros_like(mu)`` reconstructs from the posterior mean."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar, noise)), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``n`` latents drawn from the standard normal prior (meaningful when trained with KL > 0)."""
        device = self.fc_dec.weight.device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.decode(z)
