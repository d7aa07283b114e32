"""The ADM UNet of OpenAI's guided-diffusion (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image
Synthesis", arXiv 2105.05233), module for module.

The module tree and parameter names are those of ``guided_diffusion/unet.py::UNetModel`` (2-D only), so a
published state dict loads with ``load_state_dict(strict=True)``; the arithmetic is the same too: sinusoidal
timestep embedding (cos first, max period 10⁴), GroupNorm(32) computed in float32, residual blocks with
optional scale-shift norm and resampling inside the block (``resblock_updown``), attention over the pixels
with q and k each scaled by ``ch^(−1/4)`` and a float32 softmax, heads split before q/k/v (the legacy order)
unless ``use_new_attention_order``. (Where the official code rounds to float32, float64 inputs here stay
float64, for exact tests; float16 and float32 give the official numbers.) Only the memory trick differs:
``use_checkpoint`` uses ``torch.utils.checkpoint`` (the official attention blocks always checkpoint; that
changes no number).

fp16 (:meth:`ADMUNet.convert_to_fp16`, the official ``convert_to_fp16``): the convolutions of the input,
middle and output blocks are cast to float16 and the torso runs in float16; the time embedding, the
residual blocks' embedding projections, every GroupNorm and the output head stay float32 (the output is cast
back to the input's dtype before the head). The torso's dtype is read from its first convolution, so a
network cast with ``.double()`` runs entirely in float64.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cflight.models.generative.unet import timestep_embedding  # the same sinusoidal embedding as ADM's

__all__ = ["ADMUNet", "AttentionBlock", "GroupNorm32", "ResBlock", "qkv_attention", "timestep_embedding"]


class GroupNorm32(nn.GroupNorm):
    """``GroupNorm(32, C)`` computed in (at least) float32 and returned in the input's dtype (float64 stays
    float64; the official code would round it to float32)."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        w, b = self.weight.to(dtype), self.bias.to(dtype)
        return F.group_norm(x.to(dtype), self.num_groups, w, b, self.eps).to(x.dtype)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Upsample(nn.Module):
    """Nearest ×2, then a 3×3 convolution (``conv``) when ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class Downsample(nn.Module):
    """Stride-2 3×3 convolution (``op``) when ``use_conv``, else 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """``skip(x) + out_layers(h)``, ``h = in_layers(x)`` conditioned on the embedding ``emb`` ``[B, E]``.

    Scale-shift norm: ``h ← GN(h)·(1 + s) + b`` with ``(s, b) = emb_layers(emb)``; else
    ``h ← h + emb_layers(emb)`` before ``out_layers``. ``up`` / ``down``: nearest ×2 / average-pool ÷2 of
    both paths between the first norm-activation and the first convolution.
    ``x`` ``[B, C, H, W]`` → ``[B, C_out, H', W']``.
    """

    def __init__(self, channels: int, out_channels: int, emb_channels: int, dropout: float,
                 use_scale_shift_norm: bool, use_checkpoint: bool = False, up: bool = False,
                 down: bool = False) -> None:
        super().__init__()
        self.use_scale_shift_norm, self.use_checkpoint = use_scale_shift_norm, use_checkpoint
        self.updown = up or down
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        if up or down:
            resample = Upsample if up else Downsample
            self.h_upd, self.x_upd = resample(channels, False), resample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            h = self.in_layers[-1](self.h_upd(self.in_layers[:-1](x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


def qkv_attention(qkv: Tensor, heads: int, legacy: bool = True) -> Tensor:
    """Multi-head attention of ``qkv`` ``[B, 3·H·d, T]`` → ``[B, H·d, T]``.

    ``legacy``: channels laid out per head as ``(q, k, v)`` (``QKVAttentionLegacy``); else ``q | k | v``, each
    split into heads (``QKVAttention``). q and k are each scaled by ``d^(−1/4)`` before the product (stable in
    fp16) and the softmax over keys runs in (at least) float32.
    """
    b, width, length = qkv.shape
    if width % (3 * heads):
        raise ValueError(f"qkv width {width} not divisible by 3 * heads = {3 * heads}")
    d = width // (3 * heads)
    if legacy:
        q, k, v = qkv.reshape(b * heads, 3 * d, length).split(d, dim=1)
    else:
        q, k, v = (z.reshape(b * heads, d, length) for z in qkv.chunk(3, dim=1))
    scale = 1 / math.sqrt(math.sqrt(d))
    weight = torch.einsum("nct,ncs->nts", q * scale, k * scale)
    at_least_fp32 = torch.promote_types(weight.dtype, torch.float32)
    weight = torch.softmax(weight.to(at_least_fp32), dim=-1).to(weight.dtype)
    return torch.einsum("nts,ncs->nct", weight, v).reshape(b, heads * d, length)


class AttentionBlock(nn.Module):
    """Residual self-attention over the pixels: ``x + proj_out(attn(qkv(GN(x))))``, 1-D convolutions over
    the flattened ``H·W`` positions. Heads: ``channels // num_head_channels``, or ``num_heads`` when
    ``num_head_channels == -1``."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_checkpoint: bool = False, use_new_attention_order: bool = False) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"attention channels {channels} not divisible by num_head_channels "
                                 f"{num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.use_checkpoint, self.legacy = use_checkpoint, not use_new_attention_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        h = self.proj_out(qkv_attention(self.qkv(self.norm(flat)), self.num_heads, self.legacy))
        return (flat + h).reshape(b, c, *spatial)


class TimestepSequential(nn.Sequential):
    """Runs its layers in order; residual blocks also get the embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ADMUNet(nn.Module):
    """guided-diffusion's ``UNetModel`` (2-D): ``forward(x, timesteps, y=None) -> [B, out_channels, H, W]``.

    ``x`` ``[B, C, H, W]`` in diffusion space [−1, 1], ``timesteps`` ``[B]`` (or a scalar) the original
    timesteps (floats allowed), ``y`` ``[B]`` class labels iff ``num_classes``. With ``out_channels = 2C``
    the output is (ε̂, v), v the learned-range variance interpolation (what
    :class:`~cflight.models.generative.diffusion.GaussianDiffusion` reads).

    ``attention_resolutions`` are *downsample rates* (``create_model`` converts image sizes with
    ``image_size // res``); ``channel_mult`` may hold fractions (512²: 0.5). ``num_heads_upsample = −1``:
    ``num_heads``. ``conv_resample``: learned up/down-sampling convolutions (when not ``resblock_updown``).
    """

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, attention_resolutions: Sequence[int], dropout: float = 0.0,
                 channel_mult: Sequence[float] = (1, 2, 4, 8), conv_resample: bool = True,
                 num_classes: int | None = None, use_checkpoint: bool = False, use_fp16: bool = False,
                 num_heads: int = 1, num_head_channels: int = -1, num_heads_upsample: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 use_new_attention_order: bool = False) -> None:
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.model_channels, self.num_classes = model_channels, num_classes
        self.learn_sigma = out_channels == 2 * in_channels
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        def res(cin: int, cout: int, **updown: bool) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout, use_scale_shift_norm, use_checkpoint, **updown)

        def attn(c: int, heads: int) -> AttentionBlock:
            return AttentionBlock(c, heads, num_head_channels, use_checkpoint, use_new_attention_order)

        ch = first = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(TimestepSequential(down))
                skips.append(ch)
                ds *= 2
        self.middle_block = TimestepSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(),
                                 _zero(nn.Conv2d(first, out_channels, 3, padding=1)))
        if use_fp16:
            self.convert_to_fp16()

    def _torso(self) -> list[nn.Module]:
        return [self.input_blocks, self.middle_block, self.output_blocks]

    def _cast_torso(self, dtype: torch.dtype) -> None:
        for part in self._torso():
            for m in part.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    m.to(dtype)

    def convert_to_fp16(self) -> "ADMUNet":
        """Cast the torso's convolutions to float16 (the official ``convert_to_fp16``)."""
        self._cast_torso(torch.float16)
        return self

    def convert_to_fp32(self) -> "ADMUNet":
        """Undo :meth:`convert_to_fp16`."""
        self._cast_torso(torch.float32)
        return self

    @property
    def torso_dtype(self) -> torch.dtype:
        """dtype the input, middle and output blocks run in (float16 after :meth:`convert_to_fp16`)."""
        return self.input_blocks[0][0].weight.dtype

    def forward(self, x: Tensor, timesteps: Tensor | float, y: Tensor | None = None) -> Tensor:
        """``x`` ``[B, C, H, W]``, ``timesteps`` ``[B]`` or scalar, ``y`` ``[B]`` long
        → ``[B, out_channels, H, W]``."""
        if (y is None) != (self.num_classes is None):
            raise ValueError("pass class labels y if and only if the network is class-conditional "
                             f"(num_classes={self.num_classes})")
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(self.time_embed[0].weight.dtype))
        if y is not None:
            if tuple(y.shape) != (x.shape[0],):
                raise ValueError(f"y must have shape [{x.shape[0]}], got {tuple(y.shape)}")
            emb = emb + self.label_emb(y)
        h, skips = x.to(self.torso_dtype), []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))
