"""Diffusion autoencoder (Preechakul et al., CVPR 2022; spec latent_and_regression §3.3, §2.4).

A semantic encoder maps an image to ``z_sem`` ``[B, D]``; a UNet ``ε_θ(x_t, t, z_sem)`` conditioned on time
(scale-shift) and on ``z_sem`` (a per-channel scale after it) is a DDIM decoder. The *stochastic subcode*
``x_T`` is the deterministic DDIM inversion of the image given ``z_sem``; ``decode(x_T, z_sem)`` renders it
back. Sampling and inversion are :class:`~cflight.models.generative.diffusion.GaussianDiffusion`'s
(model/scheduler split, style_anchors §2): this module only supplies the conditioned denoiser.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from cflight.models.classifiers.base import as_size
from cflight.models.descriptors.heads import _DescriptorOutput
from cflight.models.generative.diffusion import GaussianDiffusion, to_diffusion
from cflight.models.generative.unet import Attention, Down, ResBlock, UNet, _norm
from cflight.models.registry import register_net
from cflight.validation import BadInputError, check_images


class SemanticEncoder(nn.Module):
    """Half-UNet without time input → ``z_sem`` ``[B, z_dim]`` (Diff-AE ``BeatGANsEncoderModel``).

    Conv, ``num_res_blocks`` residual blocks per level (attention at ``attention_resolutions``), strided-conv
    downsampling, then GroupNorm-SiLU-global-average-pool and a 1×1 conv (the official "adaptivenonzero"
    pool). Input: diffusion space [−1, 1], ``[B, C, H, W]``.
    """

    def __init__(self, in_channels: int, image_size: int | Sequence[int], model_channels: int,
                 channel_mult: Sequence[int], num_res_blocks: int, attention_resolutions: Sequence[int],
                 head_channels: int, dropout: float, norm_groups: int, z_dim: int) -> None:
        super().__init__()
        res, ch = min(as_size(image_size)), model_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1)]
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(ch, model_channels * mult, None, dropout, norm_groups))
                ch = model_channels * mult
                if res in attention_resolutions:
                    layers.append(Attention(ch, head_channels, norm_groups))
            if level != len(channel_mult) - 1:
                layers.append(Down(ch))
                res = (res + 1) // 2
        self.blocks = nn.ModuleList(layers)
        self.out = nn.Sequential(_norm(ch, norm_groups), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Conv2d(ch, z_dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for block in self.blocks:
            h = block(h, None) if isinstance(block, (ResBlock, Attention, Down)) else block(h)
        return rearrange(self.out(h), "b d 1 1 -> b d")


def _respacing(steps: int | str) -> str:
    """Diff-AE's DDIM spacing: ``N`` steps → ``"ddimN"`` (stride s with ``len(range(0, T, s)) == N``, §2.4)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, str)):
        raise BadInputError(f"steps must be a positive int or a respacing string, got {steps!r}")
    if isinstance(steps, int):
        if steps < 1:
            raise BadInputError(f"steps must be >= 1, got {steps}")
        return f"ddim{steps}"
    return steps


@register_net("diffae", kind="denoiser")
class DiffAE(nn.Module):
    """Semantic encoder + conditional ε-prediction UNet.

    Kind ``"denoiser"``: it is an ε_θ trained under one diffusion schedule, so its exported file carries that
    schedule and :func:`~cflight.models.registry.load_net` attaches it (``training_schedule``), checked here
    against the ``diffusion`` passed in. ``forward(x_t, t, z_sem)`` is the denoiser contract
    (:meth:`GaussianDiffusion.model_output` passes ``model_kwargs={"z_sem": z}``); it refuses ``z_sem=None``,
    so unconditional methods (DVCE, AC-RE) fail in one line instead of sampling garbage.

    Public images are in [0, 1] ``[B, C, H, W]``. The paper's FFHQ-256 model: 512-d ``z_sem``, T = 1000
    linear β, ε-MSE; Square-64: net_ch 64, ch_mult (1, 2, 4, 8), encoder ch_mult (1, 2, 4, 8, 8), attention
    at 16 (spec §2.5). Defaults here are CPU-sized.

    :param in_channels: image channels C.
    :param image_size: ``H`` or ``(H, W)``.
    :param model_channels: UNet (and encoder) base width.
    :param channel_mult: UNet channel multipliers.
    :param num_res_blocks: residual blocks per level (UNet and encoder).
    :param attention_resolutions: feature-map sizes with attention (UNet).
    :param head_channels: channels per attention head.
    :param dropout: dropout in the UNet's residual blocks.
    :param norm_groups: GroupNorm groups.
    :param z_dim: size D of ``z_sem`` (512 in the paper).
    :param enc_channel_mult: encoder channel multipliers (default: ``channel_mult``).
    :param enc_attention_resolutions: encoder attention sizes (default: ``attention_resolutions``).
    """

    def __init__(self, in_channels: int = 3, image_size: int | Sequence[int] = 64, model_channels: int = 16,
                 channel_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 1,
                 attention_resolutions: Sequence[int] = (16,), head_channels: int = 32, dropout: float = 0.0,
                 norm_groups: int = 32, z_dim: int = 64, enc_channel_mult: Sequence[int] | None = None,
                 enc_attention_resolutions: Sequence[int] | None = None) -> None:
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {z_dim}")
        self.in_channels, self.image_size, self.z_dim = in_channels, as_size(image_size), z_dim
        self.unet = UNet(in_channels, image_size, model_channels, channel_mult, num_res_blocks,
                         attention_resolutions, head_channels, dropout, learn_sigma=False, norm_groups=norm_groups,
                         cond_dim=z_dim)
        self.encoder = SemanticEncoder(
            in_channels, image_size, model_channels, tuple(enc_channel_mult or channel_mult), num_res_blocks,
            tuple(attention_resolutions if enc_attention_resolutions is None else enc_attention_resolutions),
            head_channels, 0.0, norm_groups, z_dim)

    # ------------------------------------------------------------------ denoiser contract
    def forward(self, x: Tensor, t: Tensor, z_sem: Tensor | None = None) -> Tensor:
        """ε̂ ``[B, C, H, W]`` at diffusion-space ``x`` and original timesteps ``t`` ``[B]``, given ``z_sem``."""
        if z_sem is None:
            raise BadInputError("the diffae denoiser is conditional: pass z_sem (model_kwargs={'z_sem': "
                                "net.encode(x)}); use an unconditional 'unet' denoiser for DVCE / AC-RE")
        return self.unet(x, t, z_sem)

    # ------------------------------------------------------------------ autoencoder API
    def _check_images(self, x: Tensor, what: str, unit_range: bool = True) -> None:
        if unit_range:
            check_images(x, what)
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != self.image_size:
            raise BadInputError(f"{what} must be [B, {self.in_channels}, {self.image_size[0]}, "
                                f"{self.image_size[1]}], got {list(x.shape)}")

    def _check_z(self, z_sem: Tensor, batch: int) -> None:
        if tuple(z_sem.shape) != (batch, self.z_dim):
            raise BadInputError(f"z_sem must be [{batch}, {self.z_dim}], got {list(z_sem.shape)}")

    def _sampler(self, diffusion: GaussianDiffusion, steps: int | str) -> GaussianDiffusion:
        trained = getattr(self, "training_schedule", None)
        if trained is not None and (diffusion.num_timesteps, diffusion.schedule) != (
                trained.num_timesteps, trained.schedule):
            raise BadInputError(f"DiffAE was trained with a {trained.num_timesteps}-step {trained.schedule!r} "
                                f"schedule, got a {diffusion.num_timesteps}-step {diffusion.schedule!r} diffusion")
        try:
            return diffusion.respaced(_respacing(steps))
        except ValueError as err:
            raise BadInputError(f"DiffAE: {err}") from None

    def encode(self, x: Tensor) -> Tensor:
        """Semantic code ``z_sem`` ``[B, D]`` of images ``x`` ``[B, C, H, W]`` in [0, 1]."""
        self._check_images(x, "x")
        return self.encoder(to_diffusion(x))

    def encode_stochastic(self, x: Tensor, z_sem: Tensor, diffusion: GaussianDiffusion,
                          steps: int | str = 20, clip_denoised: bool = True) -> Tensor:
        """Stochastic subcode ``x_T`` ``[B, C, H, W]`` (diffusion space) by deterministic DDIM inversion.

        ``x`` in [0, 1]; ``steps`` DDIM steps (``N`` → ``"ddimN"``; the paper's eval sampler has 20, its
        manipulation notebook 250); x̂0 clipped to [−1, 1] as the official ``ddim_reverse_sample_loop``.
        Deviation (documented): step ``i`` goes from ᾱ_{i−1} (ᾱ_{−1} = 1) to ᾱ_i with ε̂(x, τ_i), ending at
        the noise level :meth:`decode` starts from (the pair is exact for a denoiser that ignores ``x``); the
        official loop treats ``x`` as being at ᾱ_{τ_0} and ends at ᾱ = 0 (``alphas_cumprod_next`` padded
        with 0), which is not decode's inverse even then. For T = 1000 linear both ends differ little
        (1 − ᾱ_0 = 1e-4, ᾱ_950 ≈ 1e-4). Deterministic: the same inputs give the same ``x_T``.
        """
        self._check_images(x, "x")
        self._check_z(z_sem, x.shape[0])
        sampler = self._sampler(diffusion, steps)
        return sampler.ddim_invert(self, to_diffusion(x), clip_denoised=clip_denoised,
                                   model_kwargs={"z_sem": z_sem})

    def decode(self, x_T: Tensor, z_sem: Tensor, diffusion: GaussianDiffusion, steps: int | str = 20,
               clip_denoised: bool = True) -> Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] from ``x_T`` and ``z_sem`` by ``steps`` DDIM steps (η = 0).

        The official ``render``: x̂0 clipped to [−1, 1] each step, output ``(x + 1)/2``. Differentiable
        through every UNet call when grad is enabled (Diff-AE-RE backpropagates to ``z_sem``, §2.4); the
        final [0, 1] clamp is straight-through (value clipped, gradient unchanged), as Diff-AE-RE's
        ``x'.data`` clip.
        """
        self._check_images(x_T, "x_T", unit_range=False)
        self._check_z(z_sem, x_T.shape[0])
        sampler = self._sampler(diffusion, steps)
        x = (sampler.ddim_sample(self, x_T, clip_denoised=clip_denoised, model_kwargs={"z_sem": z_sem}) + 1) / 2
        return x + (x.clamp(0, 1) - x).detach()

    @torch.no_grad()
    def reconstruct(self, x: Tensor, diffusion: GaussianDiffusion, encode_steps: int | str = 20,
                    decode_steps: int | str = 20) -> Tensor:
        """``decode(encode_stochastic(x, encode(x)), encode(x))`` in [0, 1], without grad."""
        z = self.encode(x)
        return self.decode(self.encode_stochastic(x, z, diffusion, encode_steps), z, diffusion, decode_steps)


@register_net("diffae_probe", kind="descriptor")
class LatentProbe(_DescriptorOutput):
    """Linear probe on z-normalised ``z_sem``: ``logits = W·(z − μ)/σ + b`` ``[B, K]`` (Diff-AE's latent
    classifier, ``experiment_classifier.py``: 512 → 40 on CelebA-HQ attributes, BCE).

    ``μ``, ``σ`` ``[D]`` are the training set's ``z_sem`` statistics (buffers, saved with the weights). A
    descriptor model (kind ``"descriptor"``): logistic heads for binary outputs, linear for continuous ones;
    :meth:`manipulate` is the paper's edit along a head's direction.
    """

    def __init__(self, z_dim: int, names: Sequence[str] = ("label",), binary: Sequence[bool] | None = None) -> None:
        super().__init__()
        self._init_output(names, binary)
        self.z_dim = z_dim
        self.linear = nn.Linear(z_dim, len(self.names))
        self.register_buffer("z_mean", torch.zeros(z_dim))
        self.register_buffer("z_std", torch.ones(z_dim))

    def normalise(self, z: Tensor) -> Tensor:
        return (z - self.z_mean) / self.z_std

    def denormalise(self, u: Tensor) -> Tensor:
        return u * self.z_std + self.z_mean

    def logits(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise BadInputError(f"the probe reads z_sem [B, {self.z_dim}], got {list(z.shape)}")
        return self.linear(self.normalise(z))

    def manipulate(self, z: Tensor, name: str, alpha: float) -> Tensor:
        """``denorm(norm(z) + α·√D·w/‖w‖)``, ``w`` the head of ``name`` (paper: α = 0.3); ``[B, D]``."""
        if name not in self.names:
            raise BadInputError(f"unknown probe output {name!r}; this probe predicts {self.names}")
        w = self.linear.weight[self.names.index(name)]
        return self.denormalise(self.normalise(z) + alpha * self.z_dim ** 0.5 * w / w.norm())


__all__ = ["DiffAE", "LatentProbe", "SemanticEncoder"]
