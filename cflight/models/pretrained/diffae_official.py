"""Load the official Diff-AE checkpoints (Preechakul et al., CVPR 2022, "Diffusion Autoencoders: Toward a
Meaningful and Decodable Representation"; github.com/phizaz/diffae) as a cflight diffusion autoencoder.

``load_official_diffae(path, preset="ffhq256_autoenc")`` reads the ``last.ckpt`` of a Diff-AE run (a Lightning
checkpoint whose ``state_dict`` holds ``model.*``, ``ema_model.*`` and the ``x_T`` buffer), takes the EMA
weights (``use_ema=False``: the raw ones) and loads them **strictly** into :class:`OfficialDiffAE`, whose
module tree reproduces the parameter names and shapes of the official ``BeatGANsAutoencModel`` (``model/
unet_autoenc.py``, ``model/unet.py``, ``model/blocks.py``) for the ``templates.py`` autoencoder configs.
The ``_latent`` checkpoints load too: their latent DPM (``latent_net.*``, ``conds_mean``/``conds_std``) samples
new ``z_sem`` and is not part of the autoencoder, so it is left out.

Why not :class:`~cflight.models.generative.DiffAE`: cflight's own Diff-AE follows the paper's description but
its architecture cannot hold these tensors. What differs:

* semantic encoder: the official encoder's residual blocks have *no* ``out_layers`` (no time input, and the
  official ``ResBlock`` drops its second norm/conv with the condition), so each is ``x + conv(SiLU(GN(x)))``;
  it has a middle block (res, attention, res) before the pool; it downsamples with residual blocks that
  average-pool (``resblock_updown``). cflight's has full two-conv blocks, no middle block, strided convs.
* decoder UNet: the official up/down-sampling are residual blocks (avg-pool / nearest inside the block,
  ``resblock_updown=True``), cflight's are strided / nearest convolutions after the stage; the official time
  MLP is ``model_channels → embed_channels (512) → 512`` (cflight: ``4·model_channels``), GroupNorm has
  ``min(32, C)`` groups (cflight: ``gcd(32, C)``), attention is one head of 1-D convolutions with q/k/v
  interleaved per head (cflight: 2-D 1×1 convolutions, ``head_channels``-wide heads, q | k | v); the parameter
  names differ throughout (``input_blocks.N.M`` / ``cond_emb_layers`` / ``time_embed.time_embed``).
* the conditioning math is the same: ``h ← (GN(h)·(1 + s_t) + b_t)·(1 + s_z)``, ``s_z = Linear(SiLU(z_sem))``.

So this module is a separate network; it subclasses :class:`DiffAE` only for the autoencoder API (``encode``,
``encode_stochastic``, ``decode``, ``reconstruct``, the schedule check) that :class:`~cflight.methods.DiffAERE`
calls, which therefore runs on it unchanged. Images are in [0, 1] at that API and ``2x − 1`` inside, as the
official ``LitModel`` feeds its networks; ``forward(x_t, t, z_sem)`` is the official
``BeatGANsAutoencModel.forward(x_t, t, cond=z_sem).pred`` and ``encoder(x)`` the official ``encoder.forward(x)``
(both in diffusion space). The samplers are cflight's: ``encode_stochastic`` keeps :class:`DiffAE`'s
documented deviation from the official ``ddim_reverse_sample_loop`` at the two ends of the chain. The diffusion
it was trained with — T = 1000, linear β, ε-prediction, fixed variance
(``fixed_large``, unused by DDIM), original (unrescaled) timesteps — is ``net.training_schedule``.

Arithmetic: GroupNorm and the attention softmax run in (at least) float32 as in the official code; float64
inputs stay float64 (for exact tests). The official code samples under fp16 autocast (``conf.fp16``); here the
network runs in the dtype it is given (float32 by default). Gradient checkpointing (``use_checkpoint``) and
the unused config branches (class labels, ``num_input_res_blocks``, external encoders) are not reproduced.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cflight.models.generative.diffae import DiffAE
from cflight.models.generative.training_schedule import TrainingSchedule
from cflight.models.generative.unet import timestep_embedding
from cflight.models.pretrained.adm_unet import Downsample, GroupNorm32, Upsample, _zero, qkv_attention
from cflight.models.pretrained.published import Published, read_checkpoint
from cflight.models.registry import register_net, state_dict_mismatch
from cflight.validation import BadInputError

__all__ = ["DEFAULTS", "PRESETS", "DiffAEEncoder", "OfficialDiffAE", "build_official_diffae", "identify",
           "load_official_diffae", "resolve_config"]

# ``config.py::TrainConfig`` defaults and ``templates.py::autoenc_base`` as they reach ``BeatGANsAutoencConfig``
# (``make_model_conf``): dropout 0.1, 2 res blocks (encoder too), resblock_updown, attention at 16 with one head,
# embed / style 512, "adaptivenonzero" pool, 3 output channels (ε, fixed variance), T = 1000 linear β.
DEFAULTS: dict[str, Any] = dict(
    in_channels=3, out_channels=3, num_res_blocks=2, enc_num_res_blocks=2, embed_channels=512,
    enc_out_channels=512, attention_resolutions=(16,), enc_attention_resolutions=None, num_heads=1,
    num_head_channels=-1, dropout=0.1, resblock_updown=True, conv_resample=True, resnet_cond_channels=None,
    num_timesteps=1000, schedule="linear")
_128 = dict(image_size=128, model_channels=128, channel_mult=(1, 1, 2, 3, 4), enc_channel_mult=(1, 1, 2, 3, 4, 4))
_64 = dict(image_size=64, model_channels=64, channel_mult=(1, 2, 4, 8), enc_channel_mult=(1, 2, 4, 8, 8))
PRESETS: dict[str, dict[str, Any]] = {
    # templates.py::ffhq256_autoenc (the "DiffAE (autoencoding only): FFHQ256" file; Ha & Bender's generator)
    "ffhq256_autoenc": dict(image_size=256, model_channels=128, channel_mult=(1, 1, 2, 2, 4, 4),
                            enc_channel_mult=(1, 1, 2, 2, 4, 4, 4)),
    # ffhq128_autoenc_base and the configs that only change data or training length (ffhq128_autoenc_72M /
    # _130M, horse128_autoenc, bedroom128_autoenc): one network layout
    "ffhq128_autoenc": _128, "horse128_autoenc": _128, "bedroom128_autoenc": _128,
    # ffhq64_autoenc / celeba64d2c_autoenc, and Ha & Bender's square64_autoenc built on it (spec §2.5)
    "ffhq64_autoenc": _64, "celeba64d2c_autoenc": _64, "square64_autoenc": _64,
}
_LATENT_KEYS = ("latent_net.", "conds_mean", "conds_std")  # the latent DPM of the "_latent" checkpoints
FIX = ("pass the preset of the templates.py config the file was trained with (e.g. preset='ffhq256_autoenc' "
       "for checkpoints/ffhq256_autoenc/last.ckpt; 'ffhq128_autoenc', 'horse128_autoenc', 'bedroom128_autoenc', "
       "'celeba64d2c_autoenc')")


def _ints(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    return tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))


def resolve_config(preset: str | None = "ffhq256_autoenc", **overrides: Any) -> dict[str, Any]:
    """The network config: :data:`DEFAULTS`, then the preset, then ``overrides`` (one-line errors for unknown
    presets or names, and for a preset-less config without ``image_size``/``model_channels``/``channel_mult``)."""
    if preset is not None and preset not in PRESETS:
        raise BadInputError(f"unknown Diff-AE preset {preset!r}; expected one of {sorted(PRESETS)} (or preset=None "
                            "with image_size, model_channels, channel_mult, enc_channel_mult)")
    accepted = set(DEFAULTS) | set(PRESETS["ffhq256_autoenc"])
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise BadInputError(f"unknown Diff-AE setting(s) {unknown}; accepted: {sorted(accepted)}")
    cfg = {**DEFAULTS, **(PRESETS[preset] if preset else {}), **overrides}
    missing = sorted(k for k in PRESETS["ffhq256_autoenc"] if k != "enc_channel_mult" and k not in cfg)
    if missing:
        raise BadInputError(f"Diff-AE config without a preset needs {missing}")
    for key in ("channel_mult", "enc_channel_mult", "attention_resolutions", "enc_attention_resolutions"):
        cfg[key] = _ints(cfg.get(key))
    cond_in = cfg["resnet_cond_channels"] or cfg["embed_channels"]
    if cond_in != cfg["enc_out_channels"]:  # the official blocks read z_sem with Linear(cond_in, ·)
        raise BadInputError(f"the decoder's z_sem layers read {cond_in} channels (resnet_cond_channels or "
                            f"embed_channels) but the encoder gives enc_out_channels={cfg['enc_out_channels']}; "
                            "make them equal (the official configs use 512 for both)")
    if cfg["schedule"] != "linear" or int(cfg["num_timesteps"]) != 1000:
        raise BadInputError(f"the official Diff-AE models were trained with T=1000 linear betas, got "
                            f"num_timesteps={cfg['num_timesteps']}, schedule={cfg['schedule']!r}")
    return cfg


class GroupNorm(GroupNorm32):
    """The official ``normalization(C)``: ``GroupNorm32(min(32, C), C)``, computed in (at least) float32."""

    def __init__(self, channels: int) -> None:
        nn.GroupNorm.__init__(self, min(32, channels), channels)


class ResBlock(nn.Module):
    """The official ``model/blocks.py::ResBlock`` (``ResBlockConfig`` with ``two_cond``, ``has_lateral``).

    ``h = in_layers(cat(x, lateral))`` (resampling ``h_upd``/``x_upd`` between its activation and its conv);
    with ``use_condition``: ``h ← out_layers[1:]((GN(h)·(1 + s_t) + b_t)·(1 + s_z))`` where ``(s_t, b_t) =
    emb_layers(emb)`` and ``s_z = cond_emb_layers(cond)`` (``apply_conditions``: time first, scale bias 1;
    ``cond`` is ignored when ``emb`` is None, as there). Without it (the encoder's blocks) there are no
    ``emb_layers``/``out_layers`` at all: ``skip(x) + in_layers(x)``. ``x`` ``[B, C, H, W]`` → ``[B, C', H', W']``.
    """

    def __init__(self, channels: int, out_channels: int, emb_channels: int | None, dropout: float,
                 use_condition: bool = True, two_cond: bool = False, cond_channels: int | None = None,
                 has_lateral: bool = False, up: bool = False, down: bool = False) -> None:
        super().__init__()
        self.use_condition, self.two_cond, self.has_lateral = use_condition, two_cond, has_lateral
        self.updown = up or down
        self.in_layers = nn.Sequential(GroupNorm(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        if self.updown:
            resample = Upsample if up else Downsample
            self.h_upd, self.x_upd = resample(channels, False), resample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        if use_condition:
            if emb_channels is None:
                raise ValueError("a conditioned ResBlock needs emb_channels")
            self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
            if two_cond:
                self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(cond_channels or emb_channels,
                                                                          out_channels))
            self.out_layers = nn.Sequential(GroupNorm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                            _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: Tensor, emb: Tensor | None = None, cond: Tensor | None = None,
                lateral: Tensor | None = None) -> Tensor:
        if self.has_lateral:
            if lateral is None:
                raise ValueError("this decoder block takes a skip connection (lateral)")
            x = torch.cat([x, lateral], dim=1)
        if self.updown:
            h = self.in_layers[-1](self.h_upd(self.in_layers[:-1](x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        if self.use_condition:
            h = self._modulated_out(h, emb, cond)
        return self.skip_connection(x) + h

    def _modulated_out(self, h: Tensor, emb: Tensor | None, cond: Tensor | None) -> Tensor:
        """``apply_conditions``: norm, the scale-shifts of the given conditions, SiLU, dropout, conv."""
        conditions = []
        if emb is not None:
            conditions.append(self.emb_layers(emb).to(h.dtype))
            if self.two_cond and cond is not None:  # the official code drops cond when emb is missing
                conditions.append(self.cond_emb_layers(cond).to(h.dtype))
        h = self.out_layers[0](h)
        channels = h.shape[1]
        for c in conditions:
            c = c[:, :, None, None]
            if c.shape[1] == 2 * channels:  # time: scale and shift
                scale, shift = c.chunk(2, dim=1)
                h = h * (1 + scale) + shift
            else:  # z_sem: scale only
                h = h * (1 + c)
        return self.out_layers[1:](h)


class AttentionBlock(nn.Module):
    """The official ``AttentionBlock``: ``x + proj_out(attn(qkv(GN(x))))`` over the flattened pixels, heads
    ``num_heads`` (or ``C // num_head_channels``), legacy q/k/v order (``QKVAttentionLegacy``)."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1) -> None:
        super().__init__()
        if num_head_channels != -1 and channels % num_head_channels:
            raise ValueError(f"attention channels {channels} not divisible by num_head_channels {num_head_channels}")
        self.num_heads = num_heads if num_head_channels == -1 else channels // num_head_channels
        self.norm = GroupNorm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        h = self.proj_out(qkv_attention(self.qkv(self.norm(flat)), self.num_heads, legacy=True))
        return (flat + h).reshape(b, c, *spatial)


class EmbedSequential(nn.Sequential):
    """``TimestepEmbedSequential``: residual blocks get ``(emb, cond, lateral)``, other layers only ``x``."""

    def forward(self, x: Tensor, emb: Tensor | None = None, cond: Tensor | None = None,  # type: ignore[override]
                lateral: Tensor | None = None) -> Tensor:
        for layer in self:
            x = layer(x, emb, cond, lateral) if isinstance(layer, ResBlock) else layer(x)
        return x


class TimeStyleSeperateEmbed(nn.Module):
    """The official time embedding of the autoencoder (``time_embed.time_embed``: Linear-SiLU-Linear); the
    semantic code passes through unchanged (its ``style`` is an identity)."""

    def __init__(self, time_channels: int, out_channels: int) -> None:
        super().__init__()
        self.time_embed = nn.Sequential(nn.Linear(time_channels, out_channels), nn.SiLU(),
                                        nn.Linear(out_channels, out_channels))

    def forward(self, t_emb: Tensor) -> Tensor:
        return self.time_embed(t_emb)


def _input_half(image_size: int, in_channels: int, model_channels: int, channel_mult: Sequence[int],
                num_res_blocks: int, attention: Sequence[int], res: Callable[..., ResBlock],
                attn: Callable[[int], AttentionBlock], resblock_updown: bool,
                conv_resample: bool) -> tuple[nn.ModuleList, EmbedSequential, list[list[int]], int, int]:
    """The half both official networks build alike (``BeatGANsUNetModel`` / ``BeatGANsEncoderModel``): the
    input conv; per level ``num_res_blocks`` blocks ``res(c_in, c_out)`` (with ``attn(c)`` where the feature
    map is ``attention`` pixels wide) and a downsampling block (``res(c, c, down=True)`` or ``Downsample``);
    then the middle block (res, attention, res). Returns ``(input_blocks, middle_block, skip channels per
    level, channels, resolution)`` at the bottom."""
    ch = int(channel_mult[0] * model_channels)
    blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
    skips: list[list[int]] = [[ch]] + [[] for _ in channel_mult[1:]]
    resolution = image_size
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
            ch = int(mult * model_channels)
            if resolution in attention:
                layers.append(attn(ch))
            blocks.append(EmbedSequential(*layers))
            skips[level].append(ch)
        if level != len(channel_mult) - 1:
            resolution //= 2
            down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
            blocks.append(EmbedSequential(down))
            skips[level + 1].append(ch)
    return blocks, EmbedSequential(res(ch, ch), attn(ch), res(ch, ch)), skips, ch, resolution


class DiffAEEncoder(nn.Module):
    """The official semantic encoder ``BeatGANsEncoderModel`` (``use_time_condition=False``, pool
    ``"adaptivenonzero"``): ``x`` ``[B, C, H, W]`` in [−1, 1] → ``z_sem`` ``[B, out_channels]``.

    Input conv; per level ``num_res_blocks`` unconditioned residual blocks (attention where the feature map is
    ``attention_resolutions`` pixels wide) and a downsampling block; a middle block (res, attention, res);
    then GroupNorm, SiLU, global average pool, 1×1 conv, flatten (``out.0`` … ``out.4``).
    """

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, attention_resolutions: Sequence[int], channel_mult: Sequence[int],
                 resblock_updown: bool = True, conv_resample: bool = True, num_heads: int = 1,
                 num_head_channels: int = -1) -> None:
        super().__init__()

        def res(cin: int, cout: int, down: bool = False) -> ResBlock:
            return ResBlock(cin, cout, None, 0.0, use_condition=False, down=down)

        self.input_blocks, self.middle_block, _, ch, _ = _input_half(
            image_size, in_channels, model_channels, channel_mult, num_res_blocks, tuple(attention_resolutions),
            res, lambda c: AttentionBlock(c, num_heads, num_head_channels), resblock_updown, conv_resample)
        self.out = nn.Sequential(GroupNorm(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                                 nn.Conv2d(ch, out_channels, 1), nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        h = x.to(torch.promote_types(x.dtype, torch.float32))  # the official encoder runs in float32
        for block in self.input_blocks:
            h = block(h)
        return self.out(self.middle_block(h).to(x.dtype))


class OfficialDiffAE(DiffAE):
    """The official ``BeatGANsAutoencModel`` (``resnet_two_cond=True``) behind cflight's :class:`DiffAE` API.

    ``forward(x_t, t, z_sem) -> ε̂`` ``[B, C, H, W]`` (diffusion space, original timesteps ``t`` ``[B]``);
    ``encoder(x)`` → ``z_sem`` (diffusion space); ``encode`` / ``encode_stochastic`` / ``decode`` take
    [0, 1] images (:class:`DiffAE`). Build it with :func:`build_official_diffae` (a preset) or from a file with
    :func:`load_official_diffae`; ``config`` holds the resolved settings (:func:`resolve_config`).
    """

    def __init__(self, image_size: int, model_channels: int, channel_mult: Sequence[int],
                 enc_channel_mult: Sequence[int] | None = None, in_channels: int = 3, out_channels: int = 3,
                 num_res_blocks: int = 2, enc_num_res_blocks: int = 2, embed_channels: int = 512,
                 enc_out_channels: int = 512, attention_resolutions: Sequence[int] = (16,),
                 enc_attention_resolutions: Sequence[int] | None = None, num_heads: int = 1,
                 num_head_channels: int = -1, dropout: float = 0.1, resblock_updown: bool = True,
                 conv_resample: bool = True, resnet_cond_channels: int | None = None, num_timesteps: int = 1000,
                 schedule: str = "linear") -> None:
        nn.Module.__init__(self)  # DiffAE's API without DiffAE's (cflight-layout) networks
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.in_channels, self.image_size, self.z_dim = in_channels, (image_size, image_size), enc_out_channels
        self.model_channels = model_channels
        self.training_schedule = TrainingSchedule(int(num_timesteps), str(schedule), "fixed")
        attention = tuple(attention_resolutions)

        def res(cin: int, cout: int, **kw: bool) -> ResBlock:
            return ResBlock(cin, cout, embed_channels, dropout, two_cond=True,
                            cond_channels=resnet_cond_channels, **kw)

        def attn(c: int) -> AttentionBlock:
            return AttentionBlock(c, num_heads, num_head_channels)

        self.time_embed = TimeStyleSeperateEmbed(model_channels, embed_channels)
        self.input_blocks, self.middle_block, skip_chans, ch, resolution = _input_half(
            image_size, in_channels, model_channels, channel_mult, num_res_blocks, attention, res, attn,
            resblock_updown, conv_resample)
        self.input_num_blocks = [len(c) for c in skip_chans]
        self.output_num_blocks = [0] * len(channel_mult)
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                skip = skip_chans[level].pop() if skip_chans[level] else 0
                layers = [res(ch + skip, int(model_channels * mult), has_lateral=skip > 0)]
                ch = int(model_channels * mult)
                if resolution in attention:
                    layers.append(attn(ch))
                if level and i == num_res_blocks:
                    resolution *= 2
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                self.output_blocks.append(EmbedSequential(*layers))
                self.output_num_blocks[level] += 1
        input_ch = int(channel_mult[0] * model_channels)
        self.out = nn.Sequential(GroupNorm(ch), nn.SiLU(), _zero(nn.Conv2d(input_ch, out_channels, 3, padding=1)))
        self.encoder = DiffAEEncoder(
            image_size, in_channels, model_channels, enc_out_channels, enc_num_res_blocks,
            tuple(enc_attention_resolutions or attention), tuple(enc_channel_mult or channel_mult),
            resblock_updown, conv_resample, num_heads, num_head_channels)

    def forward(self, x: Tensor, t: Tensor, z_sem: Tensor | None = None) -> Tensor:
        """ε̂ ``[B, C, H, W]`` at diffusion-space ``x`` and original timesteps ``t`` ``[B]`` (or a scalar),
        given ``z_sem`` ``[B, D]``: the official ``forward(x, t, cond=z_sem).pred``."""
        if z_sem is None:
            raise BadInputError("the Diff-AE denoiser is conditional: pass z_sem (model_kwargs={'z_sem': "
                                "net.encode(x)})")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        weight = self.time_embed.time_embed[0].weight
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(weight.dtype))
        hs: list[list[Tensor]] = [[] for _ in self.input_num_blocks]
        h, k = x, 0
        for level, n in enumerate(self.input_num_blocks):
            for _ in range(n):
                h = self.input_blocks[k](h, emb, z_sem)
                hs[level].append(h)
                k += 1
        h = self.middle_block(h, emb, z_sem)
        k = 0
        # the official loop: step i takes its laterals from level L−1−i, counted by output_num_blocks[i] (every
        # level has num_res_blocks + 1 blocks, so the two agree)
        for i, n in enumerate(self.output_num_blocks):
            for _ in range(n):
                lateral = hs[-i - 1].pop() if hs[-i - 1] else None
                h = self.output_blocks[k](h, emb, z_sem, lateral)
                k += 1
        return self.out(h)


@register_net("diffae_official", kind="denoiser")
def build_official_diffae(preset: str | None = "ffhq256_autoenc", **overrides: Any) -> OfficialDiffAE:
    """An untrained :class:`OfficialDiffAE` of a preset (the ``net_kwargs`` of an exported ``"diffae_official"``)."""
    return OfficialDiffAE(**resolve_config(preset, **overrides))


def _autoencoder_state(ckpt: Any, use_ema: bool) -> dict[str, Tensor] | None:
    """The autoencoder's tensors of a Diff-AE file (Lightning ``{"state_dict": {"model.*", "ema_model.*",
    "x_T"}}``, that dict itself, or an unprefixed ``BeatGANsAutoencModel`` state dict), latent DPM left out."""
    if not isinstance(ckpt, Mapping):
        return None
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        return None
    prefix = "ema_model." if use_ema else "model."
    if any(isinstance(k, str) and k.startswith(prefix) for k in state):
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    elif any(isinstance(k, str) and k.startswith(("model.", "ema_model.")) for k in state):
        return None  # the other copy only
    return {k: v for k, v in state.items() if isinstance(k, str) and not k.startswith(_LATENT_KEYS) and k != "x_T"}


def _hint(state: Mapping[str, Tensor], ckpt: Any) -> str:
    """What the file's tensors say about its config."""
    seen = []
    w = state.get("time_embed.time_embed.0.weight")
    if isinstance(w, Tensor) and w.ndim == 2:
        seen.append(f"model_channels={w.shape[1]}, embed_channels={w.shape[0]}")
    w = state.get("encoder.out.3.weight")
    if isinstance(w, Tensor) and w.ndim == 4:
        seen.append(f"z_sem size {w.shape[0]}")
    x_T = ckpt.get("state_dict", ckpt).get("x_T") if isinstance(ckpt, Mapping) else None
    if isinstance(x_T, Tensor) and x_T.ndim == 4:
        seen.append(f"image_size={x_T.shape[-1]}")
    seen.append(f"{1 + max((int(k.split('.')[1]) for k in state if k.startswith('input_blocks.')), default=-1)}"
                " input blocks")
    return ", ".join(seen)


def identify(state: Mapping[str, Tensor]) -> Published | None:
    """The official Diff-AE layout of a (Lightning ``state_dict``) mapping by its distinctive keys, with the
    preset whose tensors it fits; else ``None`` (for :func:`cflight.models.registry.load_net`)."""
    keys = set(state)
    if not any(k.endswith("time_embed.time_embed.0.weight") for k in keys) or not any(
            k.endswith("encoder.out.3.weight") for k in keys):
        return None
    own = _autoencoder_state(state, use_ema=True)
    if own is None:
        return None
    tried: list[dict[str, Any]] = []
    for preset, layout in PRESETS.items():
        if layout in tried:  # presets of one layout (ffhq128 / horse128 / bedroom128) build the same network
            continue
        tried.append(layout)
        with torch.device("meta"):
            net = build_official_diffae(preset)
        if state_dict_mismatch(net.state_dict(), own) is None:
            # built from the tensors already read (the file is not read twice)
            return Published("denoiser", f"official Diff-AE checkpoint (the {preset} layout)",
                             lambda path, preset=preset: _load(state, path, preset, True, "cpu", {}))
    return None


def load_official_diffae(path: str, preset: str | None = "ffhq256_autoenc", use_ema: bool = True,
                         map_location: str | torch.device = "cpu", **overrides: Any) -> OfficialDiffAE:
    """The Diff-AE of an official checkpoint, strictly loaded, in eval mode, float32.

    Args:
        path: the run's ``last.ckpt`` (read with ``weights_only=True``), or a state dict saved from it.
        preset: one of :data:`PRESETS` (``"ffhq256_autoenc"``: the FFHQ 256 autoencoder); ``overrides``
            (:data:`DEFAULTS` names and ``image_size``, ``model_channels``, ``channel_mult``,
            ``enc_channel_mult``) change it.
        use_ema: the EMA weights (``ema_model.*``, what the official code evaluates and Ha & Bender use) or
            the raw ones (``model.*``).
        map_location: where the network is put.

    Raises one :class:`~cflight.validation.BadInputError` line naming the file and the layout expected when the
    file is missing, unreadable, holds no Diff-AE weights or tensors that do not fit the config.
    """
    resolve_config(preset, **overrides)  # bad settings fail before the (large) file is read
    return _load(read_checkpoint(path), path, preset, use_ema, map_location, overrides)


def _load(ckpt: Any, path: str, preset: str | None, use_ema: bool, map_location: str | torch.device,
          overrides: Mapping[str, Any]) -> OfficialDiffAE:
    """:func:`load_official_diffae` on the contents ``ckpt`` of the file ``path``."""
    cfg = resolve_config(preset, **overrides)
    state = _autoencoder_state(ckpt, use_ema)
    layout = f"the official Diff-AE BeatGANsAutoencModel of {_describe(preset, overrides)}"
    if state is None:
        which = "ema_model.*" if use_ema else "model.*"
        raise BadInputError(f"checkpoint {path!r} holds no Diff-AE weights ({which} of a Lightning 'state_dict', "
                            f"expected for {layout}); pass the last.ckpt of a github.com/phizaz/diffae run")
    with torch.device("meta"):  # shapes first: no memory for a network that will not fit
        net = OfficialDiffAE(**cfg)
    mismatch = state_dict_mismatch(net.state_dict(), state, unexpected="unexpected")
    if mismatch:
        raise BadInputError(f"checkpoint {path!r} does not fit {layout}: {mismatch}; the file's tensors say "
                            f"{_hint(state, ckpt)}; {FIX}")
    net.to_empty(device=map_location)  # every tensor is overwritten by the file's (the net has no buffers)
    net.load_state_dict(state, strict=True)
    return net.float().eval()


def _describe(preset: str | None, overrides: Mapping[str, Any]) -> str:
    given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    if preset:
        return f"preset {preset!r}" + (f" with {given}" if given else "")
    return f"settings {{{given}}}"
