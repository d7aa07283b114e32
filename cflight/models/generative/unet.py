"""An ADM-style ε-prediction UNet (Dhariwal & Nichol 2021), small enough for MNIST on a CPU.

Sinusoidal timestep embedding → MLP; residual blocks with scale-shift GroupNorm conditioning
(``GN(h)·(1 + s) + b``); multi-head self-attention at chosen feature-map sizes; strided-conv downsampling
and nearest upsampling (to the skip's size, so odd sizes such as 28 → 14 → 7 work); zero-initialised
output convolutions, so an untrained network predicts ε̂ = 0.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from cflight.models.classifiers.base import as_size
from cflight.models.registry import register_net


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[cos(t·f_k), sin(t·f_k)]`` with f_k = max_period^(−k/half) → ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """``x + conv(drop(SiLU(GN(conv(SiLU(GN(x))))·(1+s)+b)))`` with ``(s, b)`` from the time embedding.

    ``emb_dim=None``: no time input (the Diff-AE semantic encoder's blocks). ``cond_dim``: a per-channel
    semantic scale after the time scale-shift, ``h ← (GN(h)·(1+s_t)+b_t)·(1+s_z)`` with ``s_z =
    Linear(SiLU(z_sem))`` (Preechakul et al. 2022, ``model/blocks.py::apply_conditions``, time first, scale
    bias 1); without it the block has no ``cond_emb`` parameters, so unconditional state dicts are unchanged.
    """

    def __init__(self, channels: int, out_channels: int, emb_dim: int | None, dropout: float, groups: int,
                 cond_dim: int | None = None) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(_norm(channels, groups), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb = None if emb_dim is None else nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.cond_emb = None if cond_dim is None else nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, out_channels))
        self.out_norm = _norm(out_channels, groups)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout),
                                        _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor | None, cond: Tensor | None = None) -> Tensor:
        h = self.out_norm(self.in_layers(x))
        if self.emb is not None:
            scale, shift = rearrange(self.emb(emb), "b (two c) -> two b c 1 1", two=2)
            h = h * (1 + scale) + shift
        if self.cond_emb is not None:
            if cond is None:
                raise ValueError("this block is conditioned on z_sem (cond_dim set) but got cond=None")
            h = h * (1 + rearrange(self.cond_emb(cond), "b c -> b c 1 1"))
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual, zero-initialised projection."""

    def __init__(self, channels: int, head_channels: int, groups: int) -> None:
        super().__init__()
        head_channels = min(head_channels, channels)
        if channels % head_channels:
            raise ValueError(f"attention channels {channels} not divisible by head_channels {head_channels}")
        self.heads = channels // head_channels
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h, w = x.shape[-2:]
        qkv = self.qkv(self.norm(x))
        q, k, v = rearrange(qkv, "b (three n d) h w -> three b n (h w) d", three=3, n=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(out, "b n (h w) d -> b (n d) h w", h=h, w=w))


class Down(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Up(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class _Stage(nn.ModuleList):
    """A sequence of blocks that all take ``(x, emb)``; residual blocks also get the semantic ``cond``."""

    def forward(self, x: Tensor, emb: Tensor | None, cond: Tensor | None = None) -> Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, emb, cond) if isinstance(block, ResBlock) else block(x, emb)
        return x


@register_net("unet", kind="denoiser")
class UNet(nn.Module):
    """ε-prediction UNet: ``forward(x, t) -> [B, C or 2C, H, W]``.

    ``x`` is in diffusion space [−1, 1] and ``t`` ``[B]`` holds the *original* timesteps (floats allowed).
    With ``learn_sigma`` the output has ``2C`` channels: ε̂ and the variance interpolation ``v`` of the
    learned-range parameterisation (see :class:`~cflight.models.generative.diffusion.GaussianDiffusion`).

    :param in_channels: image channels C.
    :param image_size: ``H`` or ``(H, W)`` (any size; downsampling rounds up).
    :param model_channels: channels of the first level.
    :param channel_mult: channel multiplier per level; ``len - 1`` downsamplings.
    :param num_res_blocks: residual blocks per level (the decoder has one more, as ADM).
    :param attention_resolutions: feature-map sizes (pixels, e.g. ``(7,)`` for 28² MNIST) with attention.
    :param head_channels: channels per attention head (one head where a level has fewer channels).
    :param dropout: dropout in the residual blocks.
    :param learn_sigma: also predict the variance interpolation (2C output channels).
    :param norm_groups: GroupNorm groups (gcd with the channel count).
    :param cond_dim: size D of a semantic code ``cond`` ``[B, D]`` that scales every residual block after the
        time scale-shift (Diff-AE's conditional decoder, :class:`~cflight.models.generative.diffae.DiffAE`);
        ``None`` (default): unconditional, with the same parameters and outputs as before the option existed.
    """

    def __init__(self, in_channels: int = 1, image_size: int | Sequence[int] = 28, model_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (7,), head_channels: int = 32, dropout: float = 0.0,
                 learn_sigma: bool = True, norm_groups: int = 32, cond_dim: int | None = None) -> None:
        super().__init__()
        if in_channels < 1 or model_channels < 1 or num_res_blocks < 1 or not channel_mult:
            raise ValueError("need in_channels, model_channels, num_res_blocks >= 1 and a non-empty "
                             "channel_mult")
        if any(m < 1 for m in channel_mult) or not 0 <= dropout < 1:
            raise ValueError(f"channel_mult entries must be >= 1 and 0 <= dropout < 1, got {channel_mult}, "
                             f"{dropout}")
        self.in_channels, self.image_size = in_channels, as_size(image_size)
        self.learn_sigma, self.model_channels = bool(learn_sigma), model_channels
        if cond_dim is not None and cond_dim < 1:
            raise ValueError(f"cond_dim must be >= 1 or None, got {cond_dim}")
        self.cond_dim = cond_dim
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        self.input_conv = nn.Conv2d(in_channels, model_channels, 3, padding=1)

        res, ch = min(self.image_size), model_channels
        skips, seen, level_res = [ch], [], []
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            level_res.append(res)
            for _ in range(num_res_blocks):
                stage = _Stage([ResBlock(ch, model_channels * mult, emb_dim, dropout, norm_groups, cond_dim)])
                ch = model_channels * mult
                if res in attention_resolutions:
                    stage.append(Attention(ch, head_channels, norm_groups))
                    seen.append(res)
                self.down.append(stage)
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(_Stage([Down(ch)]))
                skips.append(ch)
                res = (res + 1) // 2
        missing = sorted(set(attention_resolutions) - set(seen))
        if missing:
            raise ValueError(f"attention_resolutions {missing} never occur; feature-map sizes are reached by "
                             f"halving {min(self.image_size)} {len(channel_mult) - 1} times")
        self.middle = _Stage([ResBlock(ch, ch, emb_dim, dropout, norm_groups, cond_dim),
                              Attention(ch, head_channels, norm_groups),
                              ResBlock(ch, ch, emb_dim, dropout, norm_groups, cond_dim)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                block = ResBlock(ch + skips.pop(), model_channels * mult, emb_dim, dropout, norm_groups,
                                 cond_dim)
                stage = _Stage([block])
                ch = model_channels * mult
                if level_res[level] in attention_resolutions:
                    stage.append(Attention(ch, head_channels, norm_groups))
                self.up.append(stage)
            if level:
                self.upsample[str(len(self.up) - 1)] = Up(ch)
        self.out = nn.Sequential(_norm(ch, norm_groups), nn.SiLU(),
                                 _zero(nn.Conv2d(ch, self.out_channels, 3, padding=1)))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """``x`` ``[B, C, H, W]``, ``t`` ``[B]`` or scalar, ``cond`` ``[B, D]`` (only with ``cond_dim``)."""
        if (cond is None) != (self.cond_dim is None):
            raise ValueError(f"UNet(cond_dim={self.cond_dim}) called with cond "
                             f"{'missing' if cond is None else 'given'}")
        if cond is not None and tuple(cond.shape) != (x.shape[0], self.cond_dim):
            raise ValueError(f"cond must have shape [{x.shape[0]}, {self.cond_dim}], got {tuple(cond.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(x.dtype))
        h = self.input_conv(x)
        hs = [h]
        for stage in self.down:
            h = stage(h, emb, cond)
            hs.append(h)
        h = self.middle(h, emb, cond)
        for i, stage in enumerate(self.up):
            h = stage(torch.cat([h, hs.pop()], dim=1), emb, cond)
            if str(i) in self.upsample:
                h = self.upsample[str(i)](h, tuple(hs[-1].shape[-2:]))
        return self.out(h)
