"""The official Diff-AE checkpoint loader: the parameter layout of ``BeatGANsAutoencModel`` (enumerated here
from the official constructor, independently of cflight's module), strict loading of Lightning-style files
and its one-line errors, the blocks and the whole forward against hand-written float64 references of the
official math, and Diff-AE-RE running on a loaded network unchanged."""
import math

import pytest
import torch
import torch.nn.functional as F

from cflight.methods import DiffAERE
from cflight.models import load_official_diffae
from cflight.models.generative import DiffAE
from cflight.models.pretrained import diffae_official
from cflight.models.pretrained.diffae_official import (PRESETS, AttentionBlock, ResBlock, build_official_diffae,
                                                       identify)
from cflight.models.registry import export_net, load_net
from cflight.types import RegressionTarget
from cflight.validation import BadInputError, MissingInputError
from tests.helpers import LinearRegressor

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")

# reduced size: 16 channels (GroupNorm with min(32, 16) = 16 groups; 32 where skips are concatenated),
# attention at 16 px, one res block per level
TINY = dict(image_size=32, model_channels=16, channel_mult=(1, 1), enc_channel_mult=(1, 1, 2), num_res_blocks=1,
            enc_num_res_blocks=1, embed_channels=24, enc_out_channels=24)


# ---------------------------------------------------------------------------- the official layout, by hand
def official_plan(image_size, model_channels, channel_mult, enc_channel_mult, num_res_blocks=2,
                  enc_num_res_blocks=2, embed_channels=512, enc_out_channels=512, attention=(16,), in_ch=3,
                  out_ch=3):
    """``({name: shape}, plan)`` of the official autoencoder (``templates.py`` configs: resblock_updown,
    resnet_two_cond, one attention head), following ``BeatGANsUNetModel.__init__``,
    ``BeatGANsAutoencModel.__init__`` and ``BeatGANsEncoderModel.__init__`` by hand. ``plan`` lists the
    blocks (kind, name, in, out, flags) in the order the official forward runs them."""
    shapes, emb = {}, embed_channels

    def layer(name, out, *rest):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out, *rest), (out,)

    def res(name, cin, cout, cond=True):
        layer(f"{name}.in_layers.0", cin)
        layer(f"{name}.in_layers.2", cout, cin, 3, 3)
        if cond:  # ResBlock(use_condition): emb_layers, cond_emb_layers (two_cond), out_layers
            layer(f"{name}.emb_layers.1", 2 * cout, emb)
            layer(f"{name}.cond_emb_layers.1", cout, emb)  # cond_emb_channels = resnet_cond_channels or emb
            layer(f"{name}.out_layers.0", cout)
            layer(f"{name}.out_layers.3", cout, cout, 3, 3)
        if cin != cout:
            layer(f"{name}.skip_connection", cout, cin, 1, 1)

    def attn(name, c):
        layer(f"{name}.norm", c)
        layer(f"{name}.qkv", 3 * c, c, 1)
        layer(f"{name}.proj_out", c, c, 1)

    def blocks(prefix, mult, nrb, cond, plan):
        ch = int(mult[0] * model_channels)
        layer(f"{prefix}input_blocks.0.0", ch, in_ch, 3, 3)
        plan.append([("conv", f"{prefix}input_blocks.0.0", in_ch, ch, {})])
        n, resolution, chans = 1, image_size, [[ch]] + [[] for _ in mult[1:]]
        for level, m in enumerate(mult):
            for _ in range(nrb):
                cout = int(m * model_channels)
                res(f"{prefix}input_blocks.{n}.0", ch, cout, cond)
                step = [("res", f"{prefix}input_blocks.{n}.0", ch, cout, {})]
                ch = cout
                if resolution in attention:
                    attn(f"{prefix}input_blocks.{n}.1", ch)
                    step.append(("attn", f"{prefix}input_blocks.{n}.1", ch, ch, {}))
                plan.append(step)
                chans[level].append(ch)
                n += 1
            if level != len(mult) - 1:
                resolution //= 2
                res(f"{prefix}input_blocks.{n}.0", ch, ch, cond)
                plan.append([("res", f"{prefix}input_blocks.{n}.0", ch, ch, {"down": True})])
                chans[level + 1].append(ch)
                n += 1
        res(f"{prefix}middle_block.0", ch, ch, cond)
        attn(f"{prefix}middle_block.1", ch)
        res(f"{prefix}middle_block.2", ch, ch, cond)
        plan.append([("res", f"{prefix}middle_block.0", ch, ch, {}), ("attn", f"{prefix}middle_block.1", ch, ch, {}),
                     ("res", f"{prefix}middle_block.2", ch, ch, {})])
        return ch, resolution, chans

    # decoder UNet (the base class's time_embed is replaced by TimeStyleSeperateEmbed)
    layer("time_embed.time_embed.0", emb, model_channels)
    layer("time_embed.time_embed.2", emb, emb)
    down: list = []
    ch, resolution, chans = blocks("", channel_mult, num_res_blocks, True, down)
    up, n = [], 0
    for level, m in reversed(list(enumerate(channel_mult))):
        for i in range(num_res_blocks + 1):
            skip = chans[level].pop()
            cout = int(model_channels * m)
            res(f"output_blocks.{n}.0", ch + skip, cout)
            step = [("res", f"output_blocks.{n}.0", ch + skip, cout, {"lateral": True})]
            ch = cout
            j = 1
            if resolution in attention:
                attn(f"output_blocks.{n}.{j}", ch)
                step.append(("attn", f"output_blocks.{n}.{j}", ch, ch, {}))
                j += 1
            if level and i == num_res_blocks:
                resolution *= 2
                res(f"output_blocks.{n}.{j}", ch, ch)
                step.append(("res", f"output_blocks.{n}.{j}", ch, ch, {"up": True}))
            up.append(step)
            n += 1
    layer("out.0", ch)
    layer("out.2", out_ch, int(channel_mult[0] * model_channels), 3, 3)
    # semantic encoder (use_time_condition=False: residual blocks without emb / out layers)
    enc: list = []
    ch, _, _ = blocks("encoder.", enc_channel_mult, enc_num_res_blocks, False, enc)
    layer("encoder.out.0", ch)
    layer("encoder.out.3", enc_out_channels, ch, 1, 1)
    return shapes, {"down": down, "up": up, "enc": enc}


def test_ffhq256_autoenc_has_the_official_layout_and_168_492_291_parameters():
    with torch.device("meta"):
        net = build_official_diffae("ffhq256_autoenc")
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected, _ = official_plan(256, 128, (1, 1, 2, 2, 4, 4), (1, 1, 2, 2, 4, 4, 4))
    assert own == expected  # every name and shape, nothing more
    total = sum(math.prod(s) for s in expected.values())
    assert total == 168_492_291 == sum(p.numel() for p in net.parameters())
    assert sum(math.prod(s) for k, s in expected.items() if k.startswith("encoder.")) == 30_150_400
    assert len(expected) == 706 and not list(net.buffers())


@pytest.mark.parametrize("preset, args", [("ffhq128_autoenc", (128, 128, (1, 1, 2, 3, 4), (1, 1, 2, 3, 4, 4))),
                                          ("celeba64d2c_autoenc", (64, 64, (1, 2, 4, 8), (1, 2, 4, 8, 8)))])
def test_other_presets_have_the_official_layout(preset, args):
    with torch.device("meta"):
        net = build_official_diffae(preset)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == official_plan(*args)[0]


def test_conv_resampling_layout():
    """``resblock_updown=False``: ``Downsample`` (``op``, strided conv) and ``Upsample`` (``conv``) blocks."""
    net = build_official_diffae(None, **TINY, resblock_updown=False).eval()
    keys = set(net.state_dict())
    assert {"input_blocks.2.0.op.weight", "output_blocks.1.2.conv.weight", "encoder.input_blocks.2.0.op.weight",
            "encoder.input_blocks.4.0.op.weight"} <= keys
    assert not any(".h_upd" in k or "input_blocks.2.0.in_layers" in k for k in keys)
    x = torch.randn(1, 3, 32, 32)
    assert net(x, torch.tensor([3]), net.encoder(x)).shape == (1, 3, 32, 32)


# ---------------------------------------------------------------------------- files
def random_state(seed=0, **cfg):
    """A random state dict of the official layout (no zero-initialised layers: every input matters)."""
    shapes, _ = official_plan(cfg["image_size"], cfg["model_channels"], cfg["channel_mult"], cfg["enc_channel_mult"],
                              cfg["num_res_blocks"], cfg["enc_num_res_blocks"], cfg["embed_channels"],
                              cfg["enc_out_channels"])
    g = torch.Generator().manual_seed(seed)
    # GroupNorm weights (the only 1-D weights) around 1, everything else around 0
    return {k: (len(s) == 1 and k.endswith("weight")) + 0.1 * torch.randn(s, generator=g) for k, s in shapes.items()}


def lightning_file(tmp_path, name="last.ckpt", latent=False):
    """A file laid out as the official LitModel's Lightning checkpoint (raw and EMA copies, ``x_T``)."""
    raw, ema = random_state(0, **TINY), random_state(1, **TINY)
    state = {**{f"model.{k}": v for k, v in raw.items()}, **{f"ema_model.{k}": v for k, v in ema.items()},
             "x_T": torch.randn(4, 3, 32, 32)}
    if latent:  # the "_latent" checkpoints: a latent DPM and the z_sem statistics
        state.update({"ema_model.latent_net.layers.0.weight": torch.randn(8, 24), "conds_mean": torch.zeros(1, 24),
                      "conds_std": torch.ones(1, 24)})
    path = tmp_path / name
    torch.save({"state_dict": state, "global_step": 7, "epoch": 0, "hyper_parameters": {"img_size": 32}}, path)
    return str(path), raw, ema


def test_strict_load_of_a_lightning_checkpoint_ema_by_default(tmp_path):
    path, raw, ema = lightning_file(tmp_path)
    net = load_official_diffae(path, None, **TINY)
    assert isinstance(net, DiffAE) and not net.training
    assert all(torch.equal(v, ema[k]) for k, v in net.state_dict().items()) and net.state_dict().keys() == ema.keys()
    net_raw = load_official_diffae(path, None, use_ema=False, **TINY)
    assert all(torch.equal(v, raw[k]) for k, v in net_raw.state_dict().items())
    rec = net.training_schedule
    assert (rec.num_timesteps, rec.schedule, rec.variance) == (1000, "linear", "fixed")
    # the latent-DPM variant and a bare state dict saved from ema_model load the same autoencoder
    latent_path, _, _ = lightning_file(tmp_path, "latent.ckpt", latent=True)
    assert all(torch.equal(v, ema[k]) for k, v in load_official_diffae(latent_path, None, **TINY).state_dict().items())
    torch.save(ema, tmp_path / "ema.pt")
    assert all(torch.equal(v, ema[k]) for k, v in load_official_diffae(str(tmp_path / "ema.pt"), None,
                                                                       **TINY).state_dict().items())


def test_a_file_that_does_not_fit_is_one_line_naming_file_and_layout(tmp_path):
    path, _, _ = lightning_file(tmp_path)
    with pytest.raises(BadInputError, match=r"last\.ckpt.*does not fit the official Diff-AE .*preset "
                                            r"'ffhq256_autoenc'.*missing.*model_channels=16") as err:
        load_official_diffae(path)  # the default preset is the 256² one
    assert "\n" not in str(err.value)
    torch.save({"state_dict": {"model.time_embed.time_embed.0.weight": torch.zeros(24, 16)}}, tmp_path / "raw.ckpt")
    with pytest.raises(BadInputError, match=r"raw\.ckpt.*no Diff-AE weights \(ema_model\.\*"):
        load_official_diffae(str(tmp_path / "raw.ckpt"), None, **TINY)
    torch.save({"conv1.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(BadInputError, match=r"other\.pt.*does not fit .*unexpected.*conv1\.weight"):
        load_official_diffae(str(tmp_path / "other.pt"), None, **TINY)
    with pytest.raises(MissingInputError, match="none.ckpt"):
        load_official_diffae(str(tmp_path / "none.ckpt"))
    (tmp_path / "junk.ckpt").write_bytes(b"not a torch file")
    with pytest.raises(BadInputError, match="junk.ckpt"):
        load_official_diffae(str(tmp_path / "junk.ckpt"))
    with pytest.raises(BadInputError, match="unknown Diff-AE preset 'ffhq512'"):
        load_official_diffae(path, "ffhq512")
    with pytest.raises(BadInputError, match=r"unknown Diff-AE setting\(s\) \['net_ch'\]"):
        load_official_diffae(path, net_ch=64)
    with pytest.raises(BadInputError, match="enc_out_channels=16"):
        build_official_diffae(None, **{**TINY, "enc_out_channels": 16})


def test_load_net_recognises_the_file_and_diffaere_takes_it_by_path(tmp_path, monkeypatch):
    # a real ffhq256 file by its shapes (meta tensors: identify reads keys and shapes only)
    with torch.device("meta"):
        big = build_official_diffae("ffhq256_autoenc").state_dict()
    found = identify({**{f"ema_model.{k}": v for k, v in big.items()}, **{f"model.{k}": v for k, v in big.items()}})
    assert found is not None and found.kind == "denoiser" and "ffhq256_autoenc" in found.layout
    assert identify({"conv1.weight": torch.zeros(1)}) is None
    # the plumbing on a small file: a preset of the tiny layout
    monkeypatch.setitem(diffae_official.PRESETS, "tiny", TINY)
    path, _, ema = lightning_file(tmp_path)
    net = load_net(path, expected_kind="denoiser")
    assert isinstance(net, diffae_official.OfficialDiffAE) and all(torch.equal(v, ema[k])
                                                                   for k, v in net.state_dict().items())
    with pytest.raises(BadInputError, match="holds a denoiser .*Diff-AE.*expected a classifier"):
        load_net(path, expected_kind="classifier")
    assert DiffAERE(path, max_steps=0).diffusion.num_timesteps == 1000


def test_export_round_trip_through_load_net(tmp_path):
    path, _, _ = lightning_file(tmp_path)
    net = load_official_diffae(path, None, **TINY)
    out = tmp_path / "exported.pt"
    export_net("diffae_official", {"preset": None, **net.config}, net.state_dict(), str(out),
               metadata={"diffusion": net.training_schedule.as_record()})
    back = load_net(str(out), expected_kind="denoiser")
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([10])
    z = net.encoder(x)
    assert torch.equal(back(x, t, z), net(x, t, z)) and back.training_schedule == net.training_schedule


# ---------------------------------------------------------------------------- the official math, float64
def gn(x, p, name):
    c = x.shape[1]
    return F.group_norm(x, min(32, c), p[f"{name}.weight"], p[f"{name}.bias"], 1e-5)


def ref_res(p, name, x, emb=None, cond=None, lateral=None, up=False, down=False):
    """``model/blocks.py::ResBlock._forward`` + ``apply_conditions`` written out."""
    if lateral is not None:
        x = torch.cat([x, lateral], 1)
    h = F.silu(gn(x, p, f"{name}.in_layers.0"))
    if up:
        h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
    if down:
        h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
    h = F.conv2d(h, p[f"{name}.in_layers.2.weight"], p[f"{name}.in_layers.2.bias"], padding=1)
    if f"{name}.emb_layers.1.weight" in p:
        e = F.linear(F.silu(emb), p[f"{name}.emb_layers.1.weight"], p[f"{name}.emb_layers.1.bias"])
        s_t, b_t = e[:, : h.shape[1], None, None], e[:, h.shape[1]:, None, None]
        s_z = F.linear(F.silu(cond), p[f"{name}.cond_emb_layers.1.weight"], p[f"{name}.cond_emb_layers.1.bias"])
        h = (gn(h, p, f"{name}.out_layers.0") * (1 + s_t) + b_t) * (1 + s_z[:, :, None, None])
        h = F.conv2d(F.silu(h), p[f"{name}.out_layers.3.weight"], p[f"{name}.out_layers.3.bias"], padding=1)
    skip = (F.conv2d(x, p[f"{name}.skip_connection.weight"], p[f"{name}.skip_connection.bias"])
            if f"{name}.skip_connection.weight" in p else x)
    return skip + h


def ref_attn(p, name, x, heads=1):
    """``AttentionBlock`` + ``QKVAttentionLegacy``: softmax(qᵀk/√d) per head, q/k/v interleaved per head."""
    b, c, hh, ww = x.shape
    flat = x.reshape(b, c, -1)
    qkv = F.conv1d(gn(flat, p, f"{name}.norm"), p[f"{name}.qkv.weight"], p[f"{name}.qkv.bias"])
    d = c // heads
    q, k, v = qkv.reshape(b * heads, 3 * d, -1).split(d, dim=1)
    w = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(d), dim=-1)  # [N, T, S]
    a = (v @ w.transpose(1, 2)).reshape(b, c, -1)
    return (flat + F.conv1d(a, p[f"{name}.proj_out.weight"], p[f"{name}.proj_out.bias"])).reshape(b, c, hh, ww)


def ref_timestep_embedding(t, dim):
    """``model/nn.py::timestep_embedding``: float32 (as there, whatever the network's dtype), cos first."""
    freqs = torch.exp(-math.log(10000) * torch.arange(0, dim // 2, dtype=torch.float32) / (dim // 2))
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def run_step(p, step, h, emb=None, cond=None, lateral=None):
    for kind, name, _, _, flags in step:
        if kind == "conv":
            h = F.conv2d(h, p[f"{name}.weight"], p[f"{name}.bias"], padding=1)
        elif kind == "attn":
            h = ref_attn(p, name, h)
        else:
            h = ref_res(p, name, h, emb, cond, lateral if flags.get("lateral") else None, flags.get("up", False),
                        flags.get("down", False))
    return h


def ref_forward(p, plan, x, t, z, model_channels):
    """``BeatGANsAutoencModel.forward(x, t, cond=z).pred``: skips pushed after every input step, popped (last
    first) by the decoder's lateral blocks."""
    tt = p["time_embed.time_embed.0.weight"]
    t_emb = ref_timestep_embedding(t, model_channels).to(tt.dtype)
    emb = F.linear(F.silu(F.linear(t_emb, tt, p["time_embed.time_embed.0.bias"])),
                   p["time_embed.time_embed.2.weight"], p["time_embed.time_embed.2.bias"])
    h, skips = x, []
    for step in plan["down"][:-1]:
        h = run_step(p, step, h, emb, z)
        skips.append(h)
    h = run_step(p, plan["down"][-1], h, emb, z)  # middle block
    for step in plan["up"]:
        h = run_step(p, step, h, emb, z, skips.pop())
    h = F.silu(gn(h, p, "out.0"))
    return F.conv2d(h, p["out.2.weight"], p["out.2.bias"], padding=1)


def ref_encode(p, plan, x):
    h = x
    for step in plan["enc"]:
        h = run_step(p, step, h)
    h = F.silu(gn(h, p, "encoder.out.0")).mean(dim=(2, 3), keepdim=True)
    return F.conv2d(h, p["encoder.out.3.weight"], p["encoder.out.3.bias"]).flatten(1)


def _randomised(module, seed=0):
    """Random parameters (the official zero-initialised convolutions too); GroupNorm weights around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype) + (p.ndim == 1 and name.endswith("weight")))
    return module


@pytest.mark.parametrize("kind", ["plain", "narrow", "lateral", "up", "down", "encoder", "encoder_down"])
def test_residual_block_against_the_official_math(kind):
    g = torch.Generator().manual_seed(3)
    c = 16 if kind == "narrow" else 64  # narrow: GroupNorm with min(32, 16) = 16 groups
    cin, cout = {"lateral": (96, 64), "up": (64, 64), "down": (64, 64), "encoder_down": (64, 64)}.get(kind, (c, 96))
    if kind.startswith("encoder"):
        block = ResBlock(cin, cout, None, 0.0, use_condition=False, down=kind == "encoder_down")
    else:
        block = ResBlock(cin, cout, 24, 0.3, two_cond=True, has_lateral=kind == "lateral", up=kind == "up",
                         down=kind == "down")
    block = _randomised(block).double().eval()
    assert ("out_layers.3.weight" in dict(block.named_parameters())) != kind.startswith("encoder")
    x = torch.randn(2, c, 8, 8, generator=g, dtype=F64)
    lateral = torch.randn(2, 32, 8, 8, generator=g, dtype=F64) if kind == "lateral" else None
    emb, z = torch.randn(2, 24, generator=g, dtype=F64), torch.randn(2, 24, generator=g, dtype=F64)
    p = {f"b.{k}": v.detach() for k, v in block.named_parameters()}
    out = block(x, emb, z, lateral)
    ref = ref_res(p, "b", x, emb, z, lateral, kind == "up", kind.endswith("down"))
    assert out.dtype == F64 and torch.allclose(out, ref, rtol=0, atol=1e-12)
    if not kind.startswith("encoder"):  # z_sem enters: another code, another output
        assert not torch.allclose(block(x, emb, z + 1, lateral), out)


@pytest.mark.parametrize("channels, heads", [(64, 1), (16, 1), (64, 4)])
def test_attention_block_against_the_official_math(channels, heads):
    block = _randomised(AttentionBlock(channels, num_heads=heads)).double()
    x = torch.randn(2, channels, 4, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    p = {f"a.{k}": v.detach() for k, v in block.named_parameters()}
    assert block.norm.num_groups == min(32, channels)
    assert torch.allclose(block(x), ref_attn(p, "a", x, heads), rtol=0, atol=1e-12)


def test_whole_forward_and_encoder_against_the_official_loops(tmp_path):
    path, _, _ = lightning_file(tmp_path)
    net = load_official_diffae(path, None, **TINY).double()
    _, plan = official_plan(32, 16, (1, 1), (1, 1, 2), 1, 1, 24, 24)
    p = {k: v.detach() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    x, t = torch.randn(2, 3, 32, 32, generator=g, dtype=F64), torch.tensor([0, 731])
    z = ref_encode(p, plan, x)
    assert torch.allclose(net.encoder(x), z, rtol=0, atol=1e-10)
    eps = net(x, t, z)
    ref = ref_forward(p, plan, x, t, z, 16)
    assert eps.shape == (2, 3, 32, 32) and torch.allclose(eps, ref, rtol=0, atol=1e-10)
    assert torch.allclose(net(x, t.double(), z), eps)  # float timesteps (the respaced samplers') are the same


# ---------------------------------------------------------------------------- behind cflight's interface
def test_shapes_and_the_diffae_api_in_unit_range(tmp_path):
    net = load_official_diffae(lightning_file(tmp_path)[0], None, **TINY)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    z = net.encode(x)
    assert z.shape == (2, 24) and torch.equal(z, net.encoder(2 * x - 1))  # [0, 1] at the API, [−1, 1] inside
    assert net(2 * x - 1, torch.tensor(5), z).shape == (2, 3, 32, 32)  # a scalar t is broadcast
    with pytest.raises(BadInputError, match="conditional: pass z_sem"):
        net(x, torch.tensor([1, 2]))
    with pytest.raises(BadInputError, match=r"x must be \[B, 3, 32, 32\]"):
        net.encode(torch.rand(2, 3, 16, 16))


def test_one_diffaere_batch_end_to_end_on_a_loaded_network(tmp_path):
    net = load_official_diffae(lightning_file(tmp_path)[0], None, **TINY)
    method = DiffAERE(net, max_steps=2, decode_steps=2, encode_steps=3, lr=0.05)
    assert (method.diffusion.num_timesteps, method.diffusion.schedule) == (1000, "linear")  # from the file
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    regressor = LinearRegressor(3, 32)
    out = method(x, RegressionTarget(torch.tensor([0.95, 0.05]), 0.001), regressor)
    assert out.x_cf.shape == x.shape and float(out.x_cf.min()) >= 0 and float(out.x_cf.max()) <= 1
    with torch.no_grad():
        z0 = net.encode(x)
        recon = net.decode(net.encode_stochastic(x, z0, method.diffusion, 3), z0, method.diffusion, 2)
    assert torch.equal(out.extras["reconstruction"], recon) and torch.equal(out.extras["latent0"], z0)
    assert not torch.equal(out.latent, z0) and out.steps.tolist() == [2, 2]
    with pytest.raises(BadInputError, match="trained with a 1000-step 'linear' schedule"):
        DiffAERE(net, num_timesteps=100)
