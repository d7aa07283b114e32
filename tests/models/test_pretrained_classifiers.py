"""Published ImageNet classifiers: robustness-library / RobustBench / torchvision ResNet files (random weights in
their layouts) through load_net and load_robust_resnet, timm weight files with the model's preprocessing, and
temperature scaling of a loaded classifier."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision

from cflight.models.classifiers import TemperatureWrapper, TimmClassifier, fit_temperature
from cflight.models.pretrained import TorchvisionResNet, load_robust_resnet, load_timm_classifier
from cflight.models.pretrained.classifiers import IMAGENET_MEAN, IMAGENET_STD, RESNET_ARCHS, resnet_arch
from cflight.models.registry import export_net, load_net
from cflight.validation import BadInputError


def random_resnet(arch: str = "resnet18", num_classes: int = 1000, seed: int = 0) -> torch.nn.Module:
    """A torchvision ResNet with random weights and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return net.eval()


def reference(net: torch.nn.Module, x: torch.Tensor, mean, std, clamp: bool = False) -> torch.Tensor:
    x = x.clamp(0, 1) if clamp else x
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return net((x - m) / s)


def robustness_checkpoint(net: torch.nn.Module, mean, std) -> dict:
    """``{"model": DataParallel(AttackerModel).state_dict(), ...}`` (robustness/model_utils.py, attacker.py):
    the attacker holds the same network, so its tensors are the same objects (stored once)."""
    sd = net.state_dict()
    stats = {"new_mean": torch.tensor(mean).view(3, 1, 1), "new_std": torch.tensor(std).view(3, 1, 1)}
    model = {f"module.normalizer.{k}": v for k, v in stats.items()}
    model |= {f"module.model.{k}": v for k, v in sd.items()}
    model |= {f"module.attacker.normalize.{k}": v for k, v in stats.items()}
    model |= {f"module.attacker.model.{k}": v for k, v in sd.items()}
    return {"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
            "schedule": None, "epoch": 90}


def _save(tmp_path, obj, name: str) -> str:
    path = str(tmp_path / name)
    torch.save(obj, path)
    return path


def test_robustness_library_resnet50_checkpoint(tmp_path):
    net = random_resnet("resnet50", seed=1)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)  # from the file, not ImageNet's
    path = _save(tmp_path, robustness_checkpoint(net, mean, std), "imagenet_l2_3_0.pt")
    loaded = load_net(path, "classifier")
    assert isinstance(loaded, TorchvisionResNet) and loaded.arch == "resnet50" and loaded.clamp
    assert not loaded.training and loaded.num_classes == 1000
    x = torch.rand(2, 3, 32, 32) * 1.2 - 0.1  # out of [0, 1]: the robustness library clamps first
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(net, x, mean, std, clamp=True), rtol=1e-4, atol=1e-4)


def test_robustbench_state_dict_with_normaliser(tmp_path):
    net = random_resnet("resnet18", num_classes=10, seed=2)
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.2, 0.2)
    # robustbench normalize_model(resnet, mean, std).state_dict()
    state = {"normalize.mean": torch.tensor(mean).view(1, 3, 1, 1),
             "normalize.std": torch.tensor(std).view(1, 3, 1, 1)}
    state |= {f"model.{k}": v for k, v in net.state_dict().items()}
    loaded = load_net(_save(tmp_path, state, "Salman2020Do_R18.pt"), "classifier")
    assert (loaded.arch, loaded.num_classes, loaded.clamp) == ("resnet18", 10, False)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(net, x, mean, std), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("wrap", ["robustbench_download", "torchvision"])
def test_bare_resnet_files_get_imagenet_statistics(tmp_path, wrap):
    net = random_resnet("resnet18", seed=3)
    sd = net.state_dict()
    if wrap == "robustbench_download":  # {"state_dict": DataParallel keys}, RobustBench adds "model." itself
        obj = {"state_dict": {f"module.model.{k}": v for k, v in sd.items()}}
    else:  # e.g. DVCE/SVCE's Madry+FT ep_3.pt: a plain torchvision state dict
        obj = sd
    loaded = load_net(_save(tmp_path, obj, "ep_3.pt"), "classifier")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(net, x, IMAGENET_MEAN, IMAGENET_STD), rtol=1e-4, atol=1e-4)


def test_explicit_loader_resizes_like_the_papers_wrapper(tmp_path):
    net = random_resnet("resnet18", seed=4)
    path = _save(tmp_path, net.state_dict(), "resnet.pt")
    loaded = load_robust_resnet(path, resize_to=64)
    x = torch.rand(1, 3, 48, 48, requires_grad=True)
    out = loaded(x)
    resized = F.interpolate(x.detach(), size=(64, 64), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out.detach(), reference(net, resized, IMAGENET_MEAN, IMAGENET_STD), rtol=1e-4,
                               atol=1e-4)
    out[0, 3].backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0  # differentiable for the CF methods


@pytest.mark.parametrize("arch", sorted(set(RESNET_ARCHS.values())))
def test_architecture_is_read_off_the_tensors(arch):
    with torch.device("meta"):
        state = getattr(torchvision.models, arch)(weights=None).state_dict()
    assert resnet_arch(state) == arch


def test_unknown_mismatching_and_wrong_kind_files_are_one_line(tmp_path):
    unknown = _save(tmp_path, {"encoder.weight": torch.zeros(2, 2)}, "x.pt")
    with pytest.raises(BadInputError, match=r"'.*x\.pt' holds no cflight network .*published layouts: "
                                            r"robustness-library checkpoint \('module\.model\.\*'\)"):
        load_net(unknown, "classifier")
    with pytest.raises(BadInputError, match=r"'.*x\.pt' is neither a robustness-library checkpoint "
                                            r"\(keys 'module\.model\.\*'.*nor a RobustBench"):
        load_robust_resnet(unknown)
    checkpoint = robustness_checkpoint(random_resnet("resnet18"), IMAGENET_MEAN, IMAGENET_STD)
    del checkpoint["model"]["module.model.layer4.1.bn2.weight"]
    broken = _save(tmp_path, checkpoint, "broken.pt")
    with pytest.raises(BadInputError) as err:
        load_net(broken, "classifier")
    message = str(err.value)
    assert "\n" not in message and "broken.pt" in message
    assert "was read as a robustness-library checkpoint" in message
    assert "1 missing tensors (e.g. 'module.model.layer4.1.bn2.weight')" in message
    good = _save(tmp_path, random_resnet("resnet18").state_dict(), "good.pt")
    with pytest.raises(BadInputError, match=r"holds a classifier \(a torchvision ResNet state dict.*expected a "
                                            r"generator"):
        load_net(good, "generator")


def test_temperature_wraps_a_loaded_published_classifier(tmp_path):
    net = random_resnet("resnet18", num_classes=10, seed=5)
    state = {"normalize.mean": torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
             "normalize.std": torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)}
    state |= {f"model.{k}": v for k, v in net.state_dict().items()}
    loaded = load_net(_save(tmp_path, state, "rb.pt"), "classifier")
    x = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        logits = loaded(x)
    t = fit_temperature(logits, logits.argmax(1).roll(1))  # any held-out labels
    wrapped = TemperatureWrapper(loaded, temperature=0.7155761)  # Madry+FT's T (spec dvce_svce.md §1.2)
    assert (wrapped.num_classes, wrapped.in_channels) == (10, 3)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), logits / 0.7155761)
    # exported by name, the calibrated published classifier loads back with load_net
    kwargs = {"net": "torchvision_resnet", "net_kwargs": {"arch": "resnet18", "num_classes": 10}, "temperature": t}
    path = str(tmp_path / "calibrated.pt")
    export_net("temperature", kwargs, TemperatureWrapper(loaded, t).state_dict(), path)
    with torch.no_grad():
        torch.testing.assert_close(load_net(path, "classifier")(x), logits / t)


def _timm_file(tmp_path, name: str = "resnet10t", num_classes: int = 7, seed: int = 0):
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    return model, _save(tmp_path, model.state_dict(), f"{name}.pth")


def test_timm_file_with_the_models_own_preprocessing(tmp_path):
    model, path = _timm_file(tmp_path)
    net = load_timm_classifier(path, "resnet10t")
    cfg = timm.data.resolve_data_config({}, model=model)  # resnet10t: 176², bicubic, crop_pct 0.875, ImageNet
    assert net.num_classes == 7 and net.image_size == tuple(cfg["input_size"][1:]) and not net.training
    m, s = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    x = torch.rand(1, 3, 60, 80, requires_grad=True)  # any size in, logits out
    out = net(x)
    size = net.image_size
    resized = F.interpolate(x.detach(), size=size, mode=cfg["interpolation"], align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(out, model((resized - m) / s), rtol=1e-4, atol=1e-4)
    out[0, 2].backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # crop=True: timm's eval transform, short side to floor(176 / 0.875) = 201, then the central 176²
    cropped = load_timm_classifier(path, "resnet10t", crop=True)
    scale = math.floor(size[0] / cfg["crop_pct"])
    big = F.interpolate(x.detach(), size=(scale, int(scale * 80 / 60)), mode="bicubic", align_corners=False)
    top, left = round((big.shape[2] - size[0]) / 2), round((big.shape[3] - size[1]) / 2)
    with torch.no_grad():
        torch.testing.assert_close(cropped(x), model((big[..., top:top + size[0], left:left + size[1]] - m) / s),
                                   rtol=1e-4, atol=1e-4)


def test_model_preprocessing_keeps_the_timm_wrapper_layout(tmp_path):
    plain = TimmClassifier("resnet10t", num_classes=3, image_size=32)
    model_mode = TimmClassifier("resnet10t", num_classes=3, preprocess="model")
    assert set(plain.state_dict()) == set(model_mode.state_dict())
    model_mode.load_state_dict(plain.state_dict())
    vit = TimmClassifier("test_vit", num_classes=2, preprocess="model").eval()  # keeps its own img_size
    assert vit.image_size == (160, 160) and vit(torch.rand(1, 3, 40, 50)).shape == (1, 2)


def test_timm_file_errors_are_one_line(tmp_path):
    _, path = _timm_file(tmp_path)
    with pytest.raises(BadInputError, match=r"timm has no model 'no_such_net'"):
        load_timm_classifier(path, "no_such_net")
    with pytest.raises(BadInputError, match=r"'.*resnet10t\.pth' was read as a timm 'test_vit' state dict but "
                                            r"does not fit it: \d+ missing tensors"):
        load_timm_classifier(path, "test_vit")
    with pytest.raises(BadInputError,
                       match=r"holds no cflight network .*load_timm_classifier\(path, model_name\)"):
        load_net(path, "classifier")  # a plain timm state dict does not say which model it is
