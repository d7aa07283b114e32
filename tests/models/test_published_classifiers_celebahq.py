"""The CelebA-HQ networks of ACE / AC-RE from random state dicts of the published layouts (STEEX's decision
DenseNet-121 as ACE loads it, Ha & Bender's DenseNetRegression Lightning checkpoint), strictly loaded and
compared with the reference computation; the YAML wrappers; the published-file table's missing-file hints."""
import re

import pytest
import torch
import torchvision

from cflight.models.pretrained import (PUBLISHED_FILES, DecisionDenseNetFile, DenseNetRegressorFile,
                                       GuidedDiffusionFile, RobustResNetFile, TimmClassifierFile, download_hint,
                                       load_decision_densenet, load_densenet_regressor)
from cflight.models.pretrained.guided_diffusion import build_adm_unet
from cflight.models.registry import load_net
from cflight.validation import BadInputError, MissingInputError

pytestmark = pytest.mark.usefixtures("one_thread")


def random_densenet(seed: int) -> torch.nn.Module:
    """torchvision's DenseNet-121 with random weights and BatchNorm statistics, classifier removed (STEEX's)."""
    torch.manual_seed(seed)
    net = torchvision.models.densenet121(weights=None)
    net.classifier = torch.nn.Identity()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def steex(tmp_path_factory):
    """``{"model_state_dict": DecisionDensenetModel(3).state_dict(), ...}`` (STEEX checkpoint.tar)."""
    densenet, head = random_densenet(0), torch.nn.Linear(1024, 3)
    state = {f"feat_extract.feat_extract.{k}": v for k, v in densenet.state_dict().items()}
    state.update({"classifier.weight": head.weight.detach(), "classifier.bias": head.bias.detach()})
    path = tmp_path_factory.mktemp("steex") / "checkpoint.tar"
    torch.save({"model_state_dict": state, "epoch": 7, "optimizer_state_dict": {}}, path)
    return path, densenet, head, state


def reference_logits(densenet, head, x):
    with torch.no_grad():  # ACE: Normalizer(classifier, [0.5]*3, [0.5]*3), DecisionDensenetModel.forward
        return head(densenet((x - 0.5) / 0.5))


@pytest.mark.parametrize("attribute,row", [("Male", 0), ("Smiling", 1), ("Young", 2), (1, 1)])
def test_decision_densenet_strict_and_exact(steex, attribute, row):
    path, densenet, head, _ = steex
    net = load_decision_densenet(str(path), attribute)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 1) and net.num_classes == 1 and not net.training
    assert torch.allclose(out, reference_logits(densenet, head, x)[:, row:row + 1], atol=1e-5)


def test_decision_densenet_file_wrapper_load_net_and_legacy_names(steex, tmp_path):
    path, densenet, head, state = steex
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    wrapped = DecisionDenseNetFile(str(path), "Young")
    with torch.no_grad():
        assert torch.allclose(wrapped(x), reference_logits(densenet, head, x)[:, 2:], atol=1e-5)
    every = load_net(str(path), expected_kind="classifier")  # recognised by its keys: all three logits
    with torch.no_grad():
        assert torch.allclose(every(x), reference_logits(densenet, head, x), atol=1e-5)
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}
    assert legacy.keys() != state.keys()
    torch.save({"model_state_dict": legacy}, tmp_path / "old.tar")
    with torch.no_grad():
        assert torch.allclose(load_decision_densenet(str(tmp_path / "old.tar"), "Smiling")(x),
                              reference_logits(densenet, head, x)[:, 1:2], atol=1e-5)


def test_decision_densenet_errors(steex, tmp_path):
    path, _, _, state = steex
    with pytest.raises(BadInputError, match="attribute 'Smile' is not an output .*'Male', 'Smiling', 'Young'"):
        load_decision_densenet(str(path), "Smile")
    broken = dict(state)
    broken.pop("feat_extract.feat_extract.features.norm5.weight")
    torch.save({"model_state_dict": broken}, tmp_path / "broken.tar")
    with pytest.raises(BadInputError, match="read as the STEEX DenseNet-121 .*1 missing tensors"):
        load_decision_densenet(str(tmp_path / "broken.tar"))
    with pytest.raises(MissingInputError, match="celebahq_decision_densenet.tar' not found; it is STEEX"):
        DecisionDenseNetFile(str(tmp_path / "checkpoints" / "published" / "celebahq_decision_densenet.tar"))


def test_densenet_regressor_lightning_checkpoint(tmp_path):
    densenet, head = random_densenet(3), torch.nn.Linear(1024, 1)
    # DenseNetRegression(L.LightningModule).state_dict(): self.model = Normalizer(Sequential(feat_extract, fc))
    state = {"model.mu": torch.full((1, 3, 1, 1), 0.5), "model.sigma": torch.full((1, 3, 1, 1), 0.5)}
    state.update({f"model.classifier.0.feat_extract.{k}": v for k, v in densenet.state_dict().items()})
    state.update({"model.classifier.1.weight": head.weight.detach(), "model.classifier.1.bias": head.bias.detach()})
    path = tmp_path / "regressor.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"weights_path": None, "full_finetune": False},
                "epoch": 3, "global_step": 120000}, path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    expected = reference_logits(densenet, head, x)
    for net in (load_densenet_regressor(str(path)), DenseNetRegressorFile(str(path)),
                load_net(str(path), expected_kind="regressor")):
        with torch.no_grad():
            assert net(x).shape == (2, 1) and torch.allclose(net(x), expected, atol=1e-5)
    torch.save({"fc.weight": torch.zeros(1, 2)}, tmp_path / "other.pt")
    with pytest.raises(BadInputError, match="is not Ha & Bender's DenseNetRegression"):
        load_densenet_regressor(str(tmp_path / "other.pt"))


def test_yaml_wrappers_of_resnet_timm_and_guided_diffusion(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    torch.save({"model": {f"module.model.{k}": v for k, v in resnet.state_dict().items()}
                | {f"module.attacker.model.{k}": v for k, v in resnet.state_dict().items()}
                | {"module.normalizer.new_mean": torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1),
                   "module.normalizer.new_std": torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)},
                "epoch": 3}, tmp_path / "robust.pt")
    net = RobustResNetFile(str(tmp_path / "robust.pt"), resize_to=32)
    assert net.num_classes == 1000 and not hasattr(net, "image_size")  # any input size runs: it resizes
    assert net(torch.rand(1, 3, 40, 40)).shape == (1, 1000)
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet10t", num_classes=5).state_dict(), str(tmp_path / "tiny.safetensors"))
    timm_net = TimmClassifierFile(str(tmp_path / "tiny.safetensors"), "resnet10t", image_size=32)
    assert timm_net.num_classes == 5 and timm_net(torch.rand(1, 3, 48, 48)).shape == (1, 5)
    flags = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", num_head_channels=16,
                 use_fp16=False)
    torch.save(build_adm_unet("celebahq256_ace", **flags).state_dict(), tmp_path / "ddpm.pt")
    unet = GuidedDiffusionFile(str(tmp_path / "ddpm.pt"), "celebahq256_ace", flags)
    assert unet.learn_sigma and unet.training_schedule.num_timesteps == 500 and not unet.training
    assert unet(torch.zeros(1, 3, 32, 32), torch.tensor([3])).shape == (1, 6, 32, 32)
    with pytest.raises(BadInputError, match="does not fit the ADM UNet of preset 'celebahq256_ace'"):
        GuidedDiffusionFile(str(tmp_path / "ddpm.pt"), "celebahq256_ace", {**flags, "num_channels": 64})


def test_missing_published_files_name_where_to_get_them(tmp_path):
    for name, known in PUBLISHED_FILES.items():
        hint = download_hint(f"checkpoints/published/{name}")
        assert known.what in hint and known.source in hint and "\n" not in hint
    assert download_hint("data/imagenet/val").startswith("; it is the ImageNet")
    assert download_hint("checkpoints/mine.pt") == ""
    with pytest.raises(MissingInputError, match="256x256_diffusion_uncond.pt' not found; it is OpenAI .*"
                                                "openaipublic.blob.core.windows.net"):
        GuidedDiffusionFile(str(tmp_path / "256x256_diffusion_uncond.pt"), "imagenet256_uncond")
    with pytest.raises(MissingInputError, match="madry_ft_ep_3.pt' not found; it is DVCE/SVCE's Madry"):
        RobustResNetFile(str(tmp_path / "madry_ft_ep_3.pt"))
    with pytest.raises(MissingInputError, match="mine.pt' not found; check the path"):
        RobustResNetFile(str(tmp_path / "mine.pt"))
