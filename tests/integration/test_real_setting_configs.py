"""The five real-setting configs (configs/explain/imagenet_*.yaml, celebahq_*.yaml) run one counterfactual
batch end to end through ``cflight predict`` on the CPU at a reduced size: the published layouts with random
values (a guided-diffusion UNet of the config's preset with reduced image_size / channels through the config's
``flags``, a robustness-library ResNet-18 layout for Madry+FT, a tiny timm model for ConvNeXt-L, the STEEX
DenseNet-121 and Ha & Bender's regressor layouts), two images of a tiny data folder laid out as the real ones,
few steps. With the files absent each config stops with one line naming the first missing file and where to get
it, and leaves no output directory."""
import csv
import json
import os

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image

from cflight.cli import main
from cflight.data.celebahq import ATTRIBUTES_FILE, IMAGE_FOLDER, MAPPING_FILE
from cflight.models.pretrained.guided_diffusion import build_adm_unet

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "explain")
SIZE = 32
UNET = dict(image_size=SIZE, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
            num_head_channels=16, use_fp16=False)
FLAGS = "--model.init_args.method.init_args.denoiser.init_args.flags=" + json.dumps(UNET)
COMMON = ["--trainer.logger=false", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
          f"--data.init_args.image_size={SIZE}", "--data.init_args.batch_size=2", "--data.init_args.predict_limit=2"]
DVCE_FAST = ["--model.init_args.method.init_args.timestep_respacing=20",
             "--model.init_args.method.init_args.skip_timesteps=15"]
RESNET_SIZE = f"--model.init_args.model.init_args.net.init_args.resize_to={SIZE}"
ACE_FAST = ["--model.init_args.method.init_args.max_iterations=2", "--model.init_args.method.init_args.dilation=3"]


def _random_bn(net):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _jpeg(path, seed, w=48, h=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A project folder with checkpoints/published/* (published layouts, random values) and data/*."""
    root = tmp_path_factory.mktemp("real")
    pub = root / "checkpoints" / "published"
    pub.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(build_adm_unet("imagenet256_uncond", **UNET).state_dict(), pub / "256x256_diffusion_uncond.pt")
    torch.save(build_adm_unet("celebahq256_ace", **UNET).state_dict(), pub / "celebahq-ddpm.pt")
    resnet = _random_bn(torchvision.models.resnet18(weights=None)).state_dict()  # robustness-library layout
    torch.save({"model": {f"module.model.{k}": v for k, v in resnet.items()}
                | {f"module.attacker.model.{k}": v for k, v in resnet.items()}
                | {"module.normalizer.new_mean": torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1),
                   "module.normalizer.new_std": torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)},
                "epoch": 3}, pub / "madry_ft_ep_3.pt")
    torch.save(timm.create_model("resnet10t", num_classes=1000).state_dict(),
               pub / "convnext_large.fb_in22k_ft_in1k.bin")
    densenet = torchvision.models.densenet121(weights=None)
    densenet.classifier = torch.nn.Identity()
    features = _random_bn(densenet).state_dict()
    torch.save({"model_state_dict": {f"feat_extract.feat_extract.{k}": v for k, v in features.items()}
                | {"classifier.weight": torch.randn(3, 1024) * 0.05, "classifier.bias": torch.zeros(3)}},
               pub / "celebahq_decision_densenet.tar")
    torch.save({"state_dict": {"model.mu": torch.full((1, 3, 1, 1), 0.5), "model.sigma": torch.full((1, 3, 1, 1), 0.5)}
                | {f"model.classifier.0.feat_extract.{k}": v for k, v in features.items()}
                | {"model.classifier.1.weight": torch.randn(1, 1024) * 0.01, "model.classifier.1.bias": torch.zeros(1)},
                "hyper_parameters": {"weights_path": None, "full_finetune": False}},
               pub / "celebahq_age_densenet.ckpt")
    val = root / "data" / "imagenet" / "val"
    _jpeg(val / "n02391049" / "ILSVRC2012_val_00000001.JPEG", 0)  # zebra
    _jpeg(val / "n02389026" / "ILSVRC2012_val_00000002.JPEG", 1)  # sorrel
    _jpeg(val / "n01440764" / "ILSVRC2012_val_00000003.JPEG", 2)  # tench: not in a pair, filtered out
    hq = root / "data" / "celebahq"
    for k in range(3):
        _jpeg(hq / IMAGE_FOLDER / f"{k}.jpg", 10 + k, 64, 64)
    (hq / ATTRIBUTES_FILE).write_text("3\nMale Smiling Young\n0.jpg 1 -1 1\n1.jpg -1 1 -1\n2.jpg 1 1 1\n")
    (hq / MAPPING_FILE).write_text("idx orig_idx orig_file\n0 4 000005.jpg\n1 0 000001.jpg\n2 9 000010.jpg\n")
    (hq / "list_eval_partition.txt").write_text("000001.jpg 2\n000005.jpg 2\n000010.jpg 0\n")
    return root


RUNS = {
    "imagenet_dvce": [FLAGS, RESNET_SIZE, *DVCE_FAST],
    "imagenet_dvce_cone": [FLAGS, *DVCE_FAST, "--model.init_args.model.init_args.net.init_args.model_name=resnet10t",
                           f"--model.init_args.model.init_args.net.init_args.image_size={SIZE}",
                           "--model.init_args.method.init_args.robust_model.init_args.net.init_args.resize_to=32"],
    "imagenet_svce": ["--model.init_args.method.init_args.steps=3", "--model.init_args.method.init_args.eps=2.0"],
    "celebahq_ace": [FLAGS, *ACE_FAST],
    "celebahq_acre": [FLAGS, *ACE_FAST],
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_config_runs_one_batch_at_reduced_size(name, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    main(["predict", "-c", os.path.join(CONFIGS, f"{name}.yaml"), *COMMON, *RUNS[name]])
    out = workdir / "outputs" / "explain" / name
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and json.loads((out / "metrics.json").read_text())["n"] == 2
    column = {k: [row[k] for row in rows] for k in ("index", "label", "prediction", "target")}
    if name.startswith("imagenet"):  # sorrel (val index 1) → zebra, zebra (2) → sorrel; the tench is filtered out
        assert column["index"] == ["1", "2"] and column["label"] == ["339", "340"]
        assert column["target"] == ["340", "339"]
    else:  # the two test-partition images 0.jpg, 1.jpg (2.jpg's original is in the train partition)
        assert column["index"] == ["0", "1"]
    if name == "celebahq_ace":  # Smiling: toward the other decision
        assert column["label"] == ["0", "1"]
        assert [int(t) for t in column["target"]] == [1 - int(p) for p in column["prediction"]]
    if name == "celebahq_acre":  # Young → 0.8, not Young → 0.1
        assert column["label"] == ["1", "0"] and [float(t) for t in column["target"]] == [0.8, 0.1]


@pytest.mark.parametrize("name,first", [
    ("imagenet_dvce", "256x256_diffusion_uncond.pt' not found; it is OpenAI guided-diffusion"),
    ("imagenet_dvce_cone", "256x256_diffusion_uncond.pt' not found; it is OpenAI guided-diffusion"),
    ("imagenet_svce", "madry_ft_ep_3.pt' not found; it is DVCE/SVCE's Madry+FT"),
    ("celebahq_ace", "celebahq-ddpm.pt' not found; it is ACE's CelebA-HQ 256 DDPM"),
    ("celebahq_acre", "celebahq-ddpm.pt' not found; it is ACE's CelebA-HQ 256 DDPM"),
])
def test_missing_files_stop_with_one_line(name, first, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["predict", "-c", os.path.join(CONFIGS, f"{name}.yaml")])
    assert exc.value.code != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("cflight: error:") and first in err[0], err
    assert "get it from" in err[0]
    assert list(tmp_path.iterdir()) == []  # no output (or W&B) directory left


def test_missing_data_is_named_too(workdir, tmp_path, monkeypatch, capsys):
    (tmp_path / "checkpoints").symlink_to(workdir / "checkpoints")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["predict", "-c", os.path.join(CONFIGS, "imagenet_svce.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert "data/imagenet/val' not found; it is the ImageNet" in err[-1] and "image-net.org" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]
