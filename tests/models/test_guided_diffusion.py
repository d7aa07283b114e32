"""The guided-diffusion ADM UNet loader: the official parameter layout (enumerated here from the official
constructor, independently of cflight's module), strict loading and its one-line errors, the parts against
their closed forms, fp16, and DVCE / ACE running on a loaded file unchanged."""
import math

import pytest
import torch

from cflight.methods import ACE, DVCE
from cflight.models import load_guided_diffusion
from cflight.models.generative.training_schedule import TrainingSchedule
from cflight.models.pretrained.adm_unet import AttentionBlock, ResBlock, qkv_attention, timestep_embedding
from cflight.models.pretrained.guided_diffusion import PRESETS, build_adm_unet
from cflight.models.registry import export_net, load_net
from cflight.types import ClassTarget
from cflight.validation import BadInputError, MissingInputError
from tests.helpers import LinearClassifier

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
            num_head_channels=16, learn_sigma=True, resblock_updown=True, use_scale_shift_norm=True,
            diffusion_steps=100, noise_schedule="linear")


def official_layout(image_size, num_channels, num_res_blocks, mult, attention, learn_sigma, class_cond,
                    scale_shift, updown):
    """{name: shape} of guided-diffusion's ``create_model`` state dict, following the loops of
    ``UNetModel.__init__`` (unet.py) by hand; ``attention`` holds image sizes as in the flags."""
    shapes, emb = {}, 4 * num_channels
    ds_attn = {image_size // r for r in attention}

    def layer(name, out, *rest):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out, *rest), (out,)

    def res(name, cin, cout):
        layer(f"{name}.in_layers.0", cin)
        layer(f"{name}.in_layers.2", cout, cin, 3, 3)
        layer(f"{name}.emb_layers.1", 2 * cout if scale_shift else cout, emb)
        layer(f"{name}.out_layers.0", cout)
        layer(f"{name}.out_layers.3", cout, cout, 3, 3)
        if cin != cout:
            layer(f"{name}.skip_connection", cout, cin, 1, 1)

    def attn(name, c):
        layer(f"{name}.norm", c)
        layer(f"{name}.qkv", 3 * c, c, 1)
        layer(f"{name}.proj_out", c, c, 1)

    layer("time_embed.0", emb, num_channels)
    layer("time_embed.2", emb, emb)
    if class_cond:
        shapes["label_emb.weight"] = (1000, emb)
    ch = first = int(mult[0] * num_channels)
    layer("input_blocks.0.0", ch, 3, 3, 3)
    chans, ds, n = [ch], 1, 1
    for level, m in enumerate(mult):
        for _ in range(num_res_blocks):
            res(f"input_blocks.{n}.0", ch, int(m * num_channels))
            ch = int(m * num_channels)
            if ds in ds_attn:
                attn(f"input_blocks.{n}.1", ch)
            chans.append(ch)
            n += 1
        if level < len(mult) - 1:
            if updown:
                res(f"input_blocks.{n}.0", ch, ch)
            else:
                layer(f"input_blocks.{n}.0.op", ch, ch, 3, 3)
            chans.append(ch)
            ds, n = 2 * ds, n + 1
    res("middle_block.0", ch, ch)
    attn("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    n = 0
    for level in reversed(range(len(mult))):
        for i in range(num_res_blocks + 1):
            res(f"output_blocks.{n}.0", ch + chans.pop(), int(mult[level] * num_channels))
            ch, k = int(mult[level] * num_channels), 1
            if ds in ds_attn:
                attn(f"output_blocks.{n}.1", ch)
                k = 2
            if level and i == num_res_blocks:
                if updown:
                    res(f"output_blocks.{n}.{k}", ch, ch)
                else:
                    layer(f"output_blocks.{n}.{k}.conv", ch, ch, 3, 3)
                ds //= 2
            n += 1
    layer("out.0", ch)
    layer("out.2", 6 if learn_sigma else 3, first, 3, 3)
    return shapes


def tiny_layout(**over):
    f = {**TINY, **over}
    return official_layout(32, 32, 1, (1, 2), (16,), f["learn_sigma"], f.get("class_cond", False), True,
                           f["resblock_updown"])


def random_file(tmp_path, name="adm.pt", dtype=torch.float32, **over):
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(s, generator=g) * 0.1).to(dtype) for k, s in tiny_layout(**over).items()}
    path = tmp_path / name
    torch.save(state, path)
    return str(path), state


def test_imagenet256_uncond_has_the_official_layout_and_552_814_086_parameters():
    expected = official_layout(256, 256, 2, (1, 1, 2, 2, 4, 4), (32, 16, 8), True, False, True, True)
    with torch.device("meta"):
        net = build_adm_unet(preset="imagenet256_uncond")
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == expected and len(got) == 566
    assert sum(math.prod(s) for s in expected.values()) == 552_814_086  # 256x256_diffusion_uncond.pt
    assert sum(p.numel() for p in net.parameters()) == 552_814_086
    assert net.training_schedule == TrainingSchedule(1000, "linear", "learned_range")
    heads = [m.num_heads for m in net.modules() if isinstance(m, AttentionBlock)]
    assert heads[0] == 512 // 64 and max(heads) == 1024 // 64  # num_head_channels=64; first attention at 32²


@pytest.mark.parametrize("preset,args", [
    ("celeba128_dime", (128, 128, 2, (1, 1, 2, 3, 4), (32, 16, 8), True, False, True, True)),
    ("celebahq256_ace", (256, 128, 2, (1, 1, 2, 2, 4, 4), (32, 16, 8), True, False, True, True)),
    ("imagenet256_cond", (256, 256, 2, (1, 1, 2, 2, 4, 4), (32, 16, 8), True, True, True, True))])
def test_other_presets_have_the_official_layout(preset, args):
    with torch.device("meta"):
        net = build_adm_unet(preset=preset)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == official_layout(*args)
    assert net.training_schedule.num_timesteps == PRESETS[preset]["diffusion_steps"]


def test_conv_resampling_layout_and_derived_channel_mult():
    with torch.device("meta"):
        net = build_adm_unet(image_size=64, num_channels=32, num_res_blocks=1, resblock_updown=False,
                             attention_resolutions="16,8", learn_sigma=False, class_cond=True)
    expected = official_layout(64, 32, 1, (1, 2, 3, 4), (16, 8), False, True, True, False)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected


def test_strict_load_of_an_official_layout_file_and_forward(tmp_path):
    path, state = random_file(tmp_path)
    net = load_guided_diffusion(path, **TINY)
    assert not net.training and net.in_channels == 3 and net.image_size == 32
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    assert net.training_schedule == TrainingSchedule(100, "linear", "learned_range")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = net(x, torch.tensor([3.0, 97.0]))
    assert out.shape == (2, 6, 32, 32) and out.dtype == torch.float32 and bool(out.isfinite().all())
    assert torch.equal(net(x, 5.0), net(x, torch.tensor([5.0, 5.0])))  # a scalar t is broadcast
    module_prefixed = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in state.items()}, module_prefixed)
    assert torch.equal(load_guided_diffusion(str(module_prefixed), **TINY)(x, 5.0), net(x, 5.0))


def test_a_file_that_does_not_fit_the_flags_is_one_line(tmp_path):
    path, _ = random_file(tmp_path)
    with pytest.raises(BadInputError) as err:
        load_guided_diffusion(path, **{**TINY, "learn_sigma": False})
    msg = str(err.value)
    assert "\n" not in msg and path in msg
    assert "'out.2.weight': file (6, 32, 3, 3), network (3, 32, 3, 3)" in msg
    assert "learn_sigma=True" in msg and "preset='imagenet256_uncond'" in msg
    with pytest.raises(BadInputError, match=r"1 unexpected \(e.g. 'label_emb.weight'\).*class_cond=True"):
        load_guided_diffusion(random_file(tmp_path, "cc.pt", class_cond=True)[0], **TINY)
    with pytest.raises(BadInputError, match=r"preset 'imagenet256_uncond' with use_fp16=False: .* missing "
                                            r"tensors.*num_channels=32") as err:
        load_guided_diffusion(path, preset="imagenet256_uncond", use_fp16=False)
    assert "\n" not in str(err.value)


def test_bad_paths_presets_and_flags_are_one_line(tmp_path):
    with pytest.raises(MissingInputError, match="not found"):
        load_guided_diffusion(str(tmp_path / "none.pt"), **TINY)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(BadInputError, match="could not be read"):
        load_guided_diffusion(str(tmp_path / "junk.pt"), **TINY)
    with pytest.raises(BadInputError, match="unknown guided-diffusion preset 'imagenet'"):
        load_guided_diffusion(str(tmp_path / "junk.pt"), preset="imagenet")
    with pytest.raises(BadInputError, match=r"unknown guided-diffusion flag\(s\) \['num_chanels'\]"):
        load_guided_diffusion(str(tmp_path / "junk.pt"), num_chanels=32)
    with pytest.raises(BadInputError, match="predict_xstart=True is not supported"):
        load_guided_diffusion(str(tmp_path / "junk.pt"), **TINY, predict_xstart=True)


def test_fp16_loads_fp32_and_fp16_files_and_casts_the_torso_only(tmp_path):
    x, t = torch.rand(1, 3, 32, 32) * 2 - 1, torch.tensor([40.0])
    ref = load_guided_diffusion(random_file(tmp_path)[0], **TINY)(x, t)
    for dtype in (torch.float32, torch.float16):
        path = random_file(tmp_path, f"{dtype}.pt", dtype)[0]
        net = load_guided_diffusion(path, **{**TINY, "use_fp16": True})
        sd = net.state_dict()
        assert sd["input_blocks.1.0.in_layers.2.weight"].dtype == torch.float16
        assert sd["middle_block.1.qkv.weight"].dtype == torch.float16
        for fp32 in ("input_blocks.1.0.in_layers.0.weight", "input_blocks.1.0.emb_layers.1.weight",
                     "time_embed.0.weight", "out.2.weight"):
            assert sd[fp32].dtype == torch.float32
        out = net(x, t)
        assert out.dtype == torch.float32 and float((out - ref).abs().max() / ref.abs().max()) < 2e-2


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    emb = timestep_embedding(t, 8).double()
    k = torch.arange(4, dtype=F64)
    args = t.double()[:, None] * torch.exp(-math.log(10000) * k / 4)[None]
    assert torch.allclose(emb, torch.cat([args.cos(), args.sin()], 1), rtol=0, atol=1e-4)  # float32 args
    assert emb[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]  # cos first


@pytest.mark.parametrize("legacy", [True, False])
def test_qkv_attention_against_a_naive_loop(legacy):
    b, heads, d, n = 2, 3, 4, 5
    qkv = torch.randn(b, 3 * heads * d, n, dtype=F64)
    out = torch.empty(b, heads * d, n, dtype=F64)
    for i in range(b):
        for h in range(heads):
            if legacy:  # per head [q; k; v]
                blk = qkv[i, h * 3 * d:(h + 1) * 3 * d]
                q, k, v = blk[:d], blk[d:2 * d], blk[2 * d:]
            else:  # [q of all heads; k ...; v ...]
                q, k, v = (qkv[i, j * heads * d + h * d:j * heads * d + (h + 1) * d] for j in range(3))
            w = torch.softmax(q.T @ k / math.sqrt(d), dim=-1)  # [n queries, n keys]
            out[i, h * d:(h + 1) * d] = v @ w.T
    assert torch.allclose(qkv_attention(qkv, heads, legacy), out, rtol=0, atol=1e-12)


def test_resblock_scale_shift_closed_form():
    block = ResBlock(32, 64, 16, 0.0, use_scale_shift_norm=True).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, emb = torch.randn(2, 32, 4, 4, dtype=F64), torch.randn(2, 16, dtype=F64)

    def gn(h, norm):
        g = h.reshape(2, 32, -1)
        g = (g - g.mean(-1, keepdim=True)) / (g.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        return g.reshape(h.shape) * norm.weight[:, None, None] + norm.bias[:, None, None]

    conv = torch.nn.functional.conv2d
    h = conv(torch.nn.functional.silu(gn(x, block.in_layers[0])), block.in_layers[2].weight,
             block.in_layers[2].bias, padding=1)
    lin = block.emb_layers[1]
    scale, shift = (torch.nn.functional.silu(emb) @ lin.weight.T + lin.bias).chunk(2, dim=1)
    h = gn(h, block.out_layers[0]) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    h = conv(torch.nn.functional.silu(h), block.out_layers[3].weight, block.out_layers[3].bias, padding=1)
    skip = conv(x, block.skip_connection.weight, block.skip_connection.bias)
    assert torch.allclose(block(x, emb), skip + h, rtol=0, atol=1e-10)


def test_class_conditional_forward_needs_y(tmp_path):
    net = load_guided_diffusion(random_file(tmp_path, class_cond=True)[0], **TINY, class_cond=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    a = net(x, torch.tensor([10.0, 10.0]), y=torch.tensor([0, 999]))
    b = net(x, torch.tensor([10.0, 10.0]), y=torch.tensor([0, 0]))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="class-conditional"):
        net(x, torch.tensor([10.0, 10.0]))


def test_export_and_load_net_round_trip(tmp_path):
    net = load_guided_diffusion(random_file(tmp_path)[0], **TINY)
    path = str(tmp_path / "exported.pt")
    meta = {"diffusion": net.training_schedule.as_record()}
    export_net("adm_unet", net.flags, net.state_dict(), path, meta)
    back = load_net(path, expected_kind="denoiser")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(back(x, 7.0), net(x, 7.0)) and back.training_schedule == net.training_schedule


def test_dvce_and_ace_run_on_a_loaded_file(tmp_path):
    net = load_guided_diffusion(random_file(tmp_path)[0], **TINY)
    clf = LinearClassifier(num_classes=3, channels=3, size=32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    target = ClassTarget(torch.tensor([1, 2]))
    out = DVCE(net, timestep_respacing="4", skip_timesteps=2, cone_angle=None)(x, target, clf)
    assert out.x_cf.shape == x.shape and bool(out.x_cf.isfinite().all()) and not torch.equal(out.x_cf, x)
    ace = ACE(net, timestep_respacing="5", sampling_time_fraction=0.4, max_iterations=1, dilation=1)
    out = ace(x, target, clf)
    assert out.x_cf.shape == x.shape and bool(out.x_cf.isfinite().all())
    with pytest.raises(BadInputError, match="trained with a 100-step 'linear' schedule"):
        DVCE(net, num_timesteps=1000)


def test_forward_equals_the_official_code_when_installed():
    """Only where the official code is importable (PyPI ``guided-diffusion-sdk``, not a dependency)."""
    script_util = pytest.importorskip("guided_diffusion.script_util")
    flags = {k: v for k, v in TINY.items() if k not in ("diffusion_steps", "noise_schedule")}
    ref = script_util.create_model(**flags, num_heads=4).eval()
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.1)
    net = build_adm_unet(**flags)
    net.load_state_dict(ref.state_dict(), strict=True)
    x, t = torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([0.0, 77.0])
    with torch.no_grad():
        assert torch.allclose(net(x, t), ref(x, t), rtol=0, atol=1e-6)
