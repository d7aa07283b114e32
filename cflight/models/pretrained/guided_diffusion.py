"""Load OpenAI guided-diffusion checkpoints (and DDPMs trained with its code: DiME, ACE) as cflight denoisers.

``load_guided_diffusion(path, preset=..., **flags)`` takes the ``MODEL_FLAGS`` of the file's README with the
names of guided-diffusion's ``script_util.create_model`` / ``create_gaussian_diffusion`` flags. Flags left
out take the values of ``script_util.model_and_diffusion_defaults()`` — what the official scripts parse a
``MODEL_FLAGS`` string against — which differ from ``create_model``'s own keyword defaults in
``num_heads`` (4, not 1), ``use_scale_shift_norm`` (True, not False) and ``attention_resolutions`` ("16,8",
not "16"), and give ``image_size`` 64, ``num_channels`` 128, ``num_res_blocks`` 2.

The network is an :class:`~cflight.models.pretrained.adm_unet.ADMUNet` in eval mode, ``net(x, t[, y=labels])``
in diffusion space, carrying ``net.training_schedule`` (T = ``diffusion_steps``, ``noise_schedule``,
learned-range variance iff ``learn_sigma``), so DVCE / ACE / AC-RE take it unchanged. ``use_fp16=True`` (the
published flags) loads the fp32 weights and then casts the torso's convolutions to float16, as the official
sampling scripts do (``model.convert_to_fp16()``); pass ``use_fp16=False`` for an all-fp32 network (CPU runs,
or exact gradients). Files saved in fp16 load too (values are cast into the parameters).
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from cflight.models.generative.diffusion import SCHEDULES
from cflight.models.generative.training_schedule import TrainingSchedule
from cflight.models.pretrained.adm_unet import ADMUNet
from cflight.models.pretrained.published import missing
from cflight.models.registry import register_net, state_dict_mismatch
from cflight.validation import BadInputError

__all__ = ["MODEL_DEFAULTS", "DIFFUSION_DEFAULTS", "PRESETS", "GuidedDiffusionFile", "build_adm_unet",
           "load_guided_diffusion", "resolve_flags"]

NUM_CLASSES = 1000  # class_cond networks are ImageNet's
MODEL_DEFAULTS: dict[str, Any] = dict(
    image_size=64, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
    num_head_channels=-1, attention_resolutions="16,8", channel_mult="", dropout=0.0, class_cond=False,
    use_checkpoint=False, use_scale_shift_norm=True, resblock_updown=False, use_fp16=False,
    use_new_attention_order=False, learn_sigma=False)
DIFFUSION_DEFAULTS: dict[str, Any] = dict(
    diffusion_steps=1000, noise_schedule="linear", timestep_respacing="", use_kl=False, predict_xstart=False,
    rescale_timesteps=False, rescale_learned_sigmas=False)
# flags that only choose the sampler's respacing or the training loss: accepted, no effect on the network
_NO_EFFECT = ("timestep_respacing", "use_kl", "rescale_learned_sigmas")

_ADM256 = dict(attention_resolutions="32,16,8", diffusion_steps=1000, image_size=256, learn_sigma=True,
               noise_schedule="linear", num_channels=256, num_head_channels=64, num_res_blocks=2,
               resblock_updown=True, use_fp16=True, use_scale_shift_norm=True)
_CELEBA = dict(attention_resolutions="32,16,8", class_cond=False, diffusion_steps=500, learn_sigma=True,
               noise_schedule="linear", num_channels=128, num_res_blocks=2, resblock_updown=True,
               use_fp16=True, use_scale_shift_norm=True)
PRESETS: dict[str, dict[str, Any]] = {
    # openai/guided-diffusion README, "256x256 model (unconditional)": 256x256_diffusion_uncond.pt (DVCE, ACE)
    "imagenet256_uncond": {**_ADM256, "class_cond": False},
    # openai/guided-diffusion README, "256x256 model": 256x256_diffusion.pt
    "imagenet256_cond": {**_ADM256, "class_cond": True},
    # guillaumejs2403/DiME celeba-train.sh, test.sh and the README's sampling flags (the README's training
    # snippet says num_head_channels 64 instead of num_heads 4: same tensors, other heads; the scripts win)
    "celeba128_dime": {**_CELEBA, "image_size": 128, "num_heads": 4},
    # guillaumejs2403/ACE scripts/celebahq-attack.sh (its MODEL_FLAGS + --image_size 256)
    "celebahq256_ace": {**_CELEBA, "image_size": 256, "num_head_channels": 64},
}
_DERIVED_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4),
                 64: (1, 2, 3, 4)}  # create_model's channel_mult="" 


def resolve_flags(preset: str | None = None, **flags: Any) -> dict[str, Any]:
    """All model and diffusion flags: defaults, then the preset, then ``flags`` (one-line error for unknown
    names or presets and for flags that change what the network predicts)."""
    if preset is not None and preset not in PRESETS:
        raise BadInputError(f"unknown guided-diffusion preset {preset!r}; expected one of {sorted(PRESETS)} "
                            "or no preset and the file's flags")
    unknown = sorted(set(flags) - set(MODEL_DEFAULTS) - set(DIFFUSION_DEFAULTS))
    if unknown:
        raise BadInputError(f"unknown guided-diffusion flag(s) {unknown}; accepted: "
                            f"{sorted({**MODEL_DEFAULTS, **DIFFUSION_DEFAULTS})}")
    out = {**MODEL_DEFAULTS, **DIFFUSION_DEFAULTS, **(PRESETS[preset] if preset else {}), **flags}
    for name in ("predict_xstart", "rescale_timesteps"):
        if out[name]:
            raise BadInputError(f"{name}=True is not supported: cflight's samplers expect an ε-prediction "
                                "network called with the original timesteps (the published ADM, DiME and ACE "
                                "files use the default False)")
    if out["noise_schedule"] not in SCHEDULES:
        raise BadInputError(f"noise_schedule must be one of {SCHEDULES}, got {out['noise_schedule']!r}")
    return out


def _ints(spec: Any) -> tuple[int, ...]:
    """``"32,16,8"`` / ``32`` / ``(32, 16)`` → a tuple of ints."""
    if isinstance(spec, str):
        return tuple(int(s) for s in spec.split(",") if s.strip())
    return tuple(int(s) for s in (spec if isinstance(spec, (list, tuple)) else [spec]))


def unet_kwargs(flags: dict[str, Any]) -> dict[str, Any]:
    """``create_model``'s translation of the flags into :class:`ADMUNet` arguments."""
    size = int(flags["image_size"])
    if flags["channel_mult"] in ("", None, ()):
        if size not in _DERIVED_MULT:
            raise BadInputError(f"channel_mult='' is derived only for image_size in {sorted(_DERIVED_MULT)}, "
                                f"got {size}; pass channel_mult (e.g. '1,2,2')")
        mult: tuple[float, ...] = _DERIVED_MULT[size]
    else:
        mult = _ints(flags["channel_mult"])
    return dict(image_size=size, in_channels=3, model_channels=int(flags["num_channels"]),
                out_channels=6 if flags["learn_sigma"] else 3, num_res_blocks=int(flags["num_res_blocks"]),
                attention_resolutions=tuple(size // r for r in _ints(flags["attention_resolutions"])),
                dropout=float(flags["dropout"]), channel_mult=mult,
                num_classes=NUM_CLASSES if flags["class_cond"] else None,
                use_checkpoint=bool(flags["use_checkpoint"]), use_fp16=bool(flags["use_fp16"]),
                num_heads=int(flags["num_heads"]), num_head_channels=int(flags["num_head_channels"]),
                num_heads_upsample=int(flags["num_heads_upsample"]),
                use_scale_shift_norm=bool(flags["use_scale_shift_norm"]),
                resblock_updown=bool(flags["resblock_updown"]),
                use_new_attention_order=bool(flags["use_new_attention_order"]))


def training_schedule(flags: dict[str, Any]) -> TrainingSchedule:
    return TrainingSchedule(int(flags["diffusion_steps"]), str(flags["noise_schedule"]),
                            "learned_range" if flags["learn_sigma"] else "fixed")


@register_net("adm_unet", kind="denoiser")
def build_adm_unet(preset: str | None = None, **flags: Any) -> ADMUNet:
    """An untrained :class:`ADMUNet` from guided-diffusion flags (the ``net_kwargs`` of an exported
    ``"adm_unet"``), with its ``training_schedule`` and its full ``flags``."""
    full = resolve_flags(preset, **flags)
    net = ADMUNet(**unet_kwargs(full))
    net.training_schedule = training_schedule(full)
    net.flags = full
    return net


def _hint(state: dict[str, Tensor]) -> str:
    """What the file's tensors say about the flags it was trained with."""
    seen = []
    w = state.get("time_embed.0.weight")
    if isinstance(w, Tensor) and w.ndim == 2:
        seen.append(f"num_channels={w.shape[1]}")
    w = state.get("out.2.weight")
    if isinstance(w, Tensor) and w.ndim == 4:
        seen.append(f"learn_sigma={w.shape[0] == 6}")
    seen.append(f"class_cond={'label_emb.weight' in state}")
    seen.append(f"resblock_updown={not any(k.endswith('.op.weight') for k in state)}")
    return ", ".join(seen)


def _describe(preset: str | None, flags: dict[str, Any]) -> str:
    given = ", ".join(f"{k}={v!r}" for k, v in flags.items())
    if preset:
        return f"preset {preset!r}" + (f" with {given}" if given else "")
    return f"flags {{{given}}}" if given else "the default flags"


def _read_state(path: str, map_location: str | torch.device) -> dict[str, Tensor]:
    """The plain state dict of a guided-diffusion file (``module.`` dropped), with one-line errors."""
    if not os.path.isfile(path):
        raise missing(path, "guided-diffusion file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise BadInputError(f"guided-diffusion file {path!r} could not be read as a state dict: "
                            f"{type(err).__name__} (truncated, damaged or not a torch file)") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise BadInputError(f"guided-diffusion file {path!r} is not a plain state dict of tensors (holds a "
                            f"{type(state).__name__}); pass the .pt file the official code saved")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _check_fits(net: ADMUNet, state: dict[str, Tensor], path: str, preset: str | None,
                flags: dict[str, Any]) -> None:
    mismatch = state_dict_mismatch(net.state_dict(), state, unexpected="unexpected")
    if mismatch:
        raise BadInputError(
            f"guided-diffusion file {path!r} does not fit the ADM UNet of {_describe(preset, flags)}: "
            f"{mismatch}; the file's tensors say {_hint(state)}; pass the flags the "
            "file was trained with (its README's MODEL_FLAGS), e.g. preset='imagenet256_uncond' for "
            "256x256_diffusion_uncond.pt, 'celeba128_dime' or 'celebahq256_ace'")


def load_guided_diffusion(path: str, preset: str | None = None, map_location: str | torch.device = "cpu",
                          **flags: Any) -> ADMUNet:
    """The ADM UNet of a guided-diffusion state-dict file, strictly loaded, in eval mode.

    Args:
        path: a plain state dict saved by guided-diffusion's training code (``torch.load(weights_only=True)``;
            a ``module.`` prefix from DDP is removed).
        preset: one of :data:`PRESETS` (``"imagenet256_uncond"`` for ``256x256_diffusion_uncond.pt``,
            ``"celeba128_dime"``, ``"celebahq256_ace"``, ``"imagenet256_cond"``); ``flags`` override it.
        map_location: where the weights are loaded.
        **flags: guided-diffusion flags (``image_size``, ``num_channels``, ``learn_sigma``,
            ``diffusion_steps``, ...).

    Raises one line (:class:`~cflight.validation.BadInputError`) naming the file and the expected flags when
    the file is missing (with where to get a known published file) or unreadable or its tensors do not fit
    the flags (with what the file's tensors say).
    """
    full = resolve_flags(preset, **flags)
    state = _read_state(path, map_location)
    with torch.device("meta"):  # shapes first: no memory, no random init of a network that will not fit
        net = build_adm_unet(**full)
    _check_fits(net, state, path, preset, flags)
    net.to_empty(device=map_location)  # every tensor is overwritten by the file's (the net has no buffers)
    net.load_state_dict(state, strict=True)
    return net.eval()


class GuidedDiffusionFile(ADMUNet):
    """:func:`load_guided_diffusion` as a class, for YAML configs (``denoiser: {class_path:
    cflight.models.pretrained.GuidedDiffusionFile, init_args: {path: ..., preset: imagenet256_uncond}}``).

    :param path: the guided-diffusion ``.pt`` file.
    :param preset: one of :data:`PRESETS`, or ``None`` and all flags in ``flags``.
    :param flags: guided-diffusion flags overriding the preset (e.g. ``{use_fp16: false}`` for CPU runs).
    """

    def __init__(self, path: str, preset: str | None = None, flags: dict[str, Any] | None = None) -> None:
        flags = dict(flags or {})
        full = resolve_flags(preset, **flags)
        state = _read_state(path, "cpu")
        with torch.device("meta"):
            super().__init__(**unet_kwargs(full))
        _check_fits(self, state, path, preset, flags)
        self.to_empty(device="cpu")
        self.load_state_dict(state, strict=True)
        self.training_schedule = training_schedule(full)
        self.flags, self.path = full, path
        self.eval()
