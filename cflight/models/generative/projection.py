"""Projection of real images into a GAN's latent space (Counterfactual Attacks, spec §1.4).

The paper projects CelebA photos into StyleGAN3's W space by optimising a latent against LPIPS-VGG features.
Offline, the feature loss here uses a project-trained network (any cflight classifier): the activations of
its convolutions, unit-normalised over channels as LPIPS does, plus a pixel MSE term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cflight.models.acceleration import Acceleration, accelerate
from cflight.models.registry import load_net
from cflight.rng import Stream, per_sample_normal


class FeatureDistance(nn.Module):
    """``Σ_layers mean((φ_l(x)/‖φ_l(x)‖_c − φ_l(y)/‖φ_l(y)‖_c)²)`` per sample over a network's conv outputs.

    Args:
        net: a frozen network; forward hooks collect the output of every ``nn.Conv2d`` (the LPIPS recipe of
            per-layer channel normalisation, without learned layer weights).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self._layers = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        if not self._layers:
            raise ValueError(f"{type(net).__name__} has no Conv2d layers to take features from")

    def features(self, x: Tensor) -> list[Tensor]:
        feats: list[Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: feats.append(out)) for m in self._layers]
        try:
            self.net(x)
        finally:
            for h in hooks:
                h.remove()
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-8) for f in feats]

    def forward(self, x: Tensor, target_feats: list[Tensor]) -> Tensor:
        """Distance ``[B]`` between ``x`` and precomputed target features."""
        return sum((a - b).pow(2).flatten(1).mean(1) for a, b in zip(self.features(x), target_feats))


class GANManifold(nn.Module):
    """A GAN as a latent-method generator: ``decode`` is the generator, ``encode`` projects by optimisation.

    Projection (spec §1.4, adapted): ``n_candidates`` latents per image (drawn from ``(seed, index)``, plus
    the encoder's estimate when the GAN has one) are each scored *separately* by the loss (the reference
    summed the scores of a round and so always kept its first sample; a documented deviation), the best one
    initialises AdamW (lr 0.1, β (0.9, 0.999), the reference's) for ``steps`` iterations on
    ``feature_weight · FeatureDistance + pixel_weight · MSE``; the iterate with the lowest loss is returned.

    Args:
        gan: a :class:`~cflight.models.generative.gan.GANLatentModel` or its checkpoint path.
        feature_net: a project-trained network for the feature loss (module or classifier checkpoint path);
            ``None`` uses the pixel loss alone.
        steps: optimisation steps (the reference called its projector with 500).
        n_candidates: random initial candidates per image.
    """

    def __init__(self, gan: nn.Module | str, feature_net: nn.Module | str | None = None, steps: int = 500,
                 lr: float = 0.1, n_candidates: int = 16, pixel_weight: float = 1.0, feature_weight: float = 1.0,
                 use_encoder: bool = True, seed: int = 0) -> None:
        super().__init__()
        if isinstance(gan, str):
            gan = load_net(gan, expected_kind="generator")
        if isinstance(feature_net, str):
            feature_net = load_net(feature_net, expected_kind="classifier")
        if steps < 0 or n_candidates < 0 or lr <= 0:
            raise ValueError("steps and n_candidates must be >= 0 and lr > 0")
        if n_candidates == 0 and not (use_encoder and getattr(gan, "encoder", None) is not None):
            raise ValueError("n_candidates = 0 needs a GAN with an encoder")
        self.gan = gan.eval().requires_grad_(False)
        self.features = FeatureDistance(feature_net) if feature_net is not None else None
        self.steps, self.lr, self.n_candidates = steps, lr, n_candidates
        self.pixel_weight, self.feature_weight = pixel_weight, feature_weight
        self.use_encoder, self.seed = use_encoder, seed
        self.latent_dim, self.in_channels, self.image_size = gan.latent_dim, gan.in_channels, gan.image_size

    def decode(self, z: Tensor) -> Tensor:
        return self.gan.decode(z)

    def apply_acceleration(self, options: Acceleration) -> None:
        """Apply a method's speed options to the GAN only (:func:`~cflight.models.acceleration.accelerate`):
        the projection's latents, AdamW, losses and feature network stay fp32."""
        self.gan = accelerate(self.gan, options)

    def loss(self, z: Tensor, x: Tensor, target_feats: list[Tensor] | None) -> Tensor:
        """Per-sample projection loss ``[B]``."""
        x_hat = self.gan.decode(z)
        loss = self.pixel_weight * (x_hat - x).pow(2).flatten(1).mean(1)
        if self.features is not None and target_feats is not None:
            loss = loss + self.feature_weight * self.features(x_hat, target_feats)
        return loss

    def encode(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """Project images ``[B, C, H, W]`` → latents ``[B, D]``; ``index`` seeds the candidates per sample."""
        if index is None:
            index = torch.arange(x.shape[0], device=x.device)
        with torch.enable_grad():
            self.gan.eval()
            target_feats = None
            if self.features is not None:
                with torch.no_grad():
                    target_feats = self.features.features(x)
            z = self._best_candidate(x, index, target_feats)
            return self._optimise(z, x, target_feats)

    @torch.no_grad()
    def _best_candidate(self, x: Tensor, index: Tensor, feats: list[Tensor] | None) -> Tensor:
        b, d = x.shape[0], self.latent_dim
        cands = []
        if self.n_candidates:
            noise = per_sample_normal((self.n_candidates, d), self.seed, index, stream=Stream.PROJECTION,
                                      device=x.device, dtype=x.dtype)
            cands += list(noise.unbind(1))
        if self.use_encoder and getattr(self.gan, "encoder", None) is not None:
            cands.append(self.gan.encode(x))
        scores = torch.stack([self.loss(c, x, feats) for c in cands], dim=1)  # [B, n]: each scored on its own
        best = scores.argmin(1)
        return torch.stack(cands, dim=1)[torch.arange(b, device=x.device), best]

    def _optimise(self, z0: Tensor, x: Tensor, feats: list[Tensor] | None) -> Tensor:
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.AdamW([z], lr=self.lr, betas=(0.9, 0.999))
        best_z, best_loss = z0.clone(), self.loss(z0, x, feats).detach()
        for _ in range(self.steps):
            loss = self.loss(z, x, feats)
            improved = loss.detach() < best_loss
            best_loss = torch.where(improved, loss.detach(), best_loss)
            best_z[improved] = z.detach()[improved]
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # samples are independent: the sum gives each its own gradient
            opt.step()
        final = self.loss(z.detach(), x, feats)
        improved = final < best_loss
        best_z[improved] = z.detach()[improved]
        return best_z
