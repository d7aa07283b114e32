"""LPIPS in explanation jobs: absent unless configured, 0 for unchanged images, the direct mean otherwise."""
import json

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.utils.data import DataLoader

from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.methods import MethodComparison
from cflight.metrics import LPIPSNetwork, lpips_distance
from cflight.metrics.perceptual import BACKBONES, Backbone
from tests.helpers import LinearClassifier, TinyDicts
from tests.toy_methods import ScaleMethod

pytestmark = pytest.mark.usefixtures("one_thread")


def _features() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1),
                         nn.ReLU())


@pytest.fixture
def net(monkeypatch, tmp_path) -> LPIPSNetwork:
    """A two-layer LPIPS network with random weights (TinyDicts' images are 1×4×4)."""
    monkeypatch.setitem(BACKBONES, "tiny", Backbone(_features, (2, 5), (4, 5), 2, "tiny.pth", "nowhere"))
    torch.manual_seed(0)
    torch.save({f"features.{k}": torch.randn_like(v) for k, v in _features().state_dict().items()},
               tmp_path / "tiny.pth")
    torch.save({"lin0.model.1.weight": torch.rand(1, 4, 1, 1), "lin1.model.1.weight": torch.rand(1, 5, 1, 1)},
               tmp_path / "lin.pth")
    return LPIPSNetwork("tiny", tmp_path / "tiny.pth", tmp_path / "lin.pth")


def _run(out, factor, method=None, **writer_kw):
    writer = CounterfactualWriter(str(out), gallery_size=2, image_format="float32", **writer_kw)
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, callbacks=[writer],
                      enable_progress_bar=False, enable_model_summary=False)
    module = ExplainModule(method or ScaleMethod(factor), LinearClassifier(num_classes=3))
    trainer.predict(module, DataLoader(TinyDicts(10), batch_size=4), return_predictions=False)
    return json.load(open(out / "metrics.json"))


def test_lpips_absent_unless_configured_and_skipped_without_weights(tmp_path):
    assert "mean_lpips" not in _run(tmp_path / "a", 0.5)
    with pytest.warns(UserWarning, match="LPIPS skipped"):
        metrics = _run(tmp_path / "b", 0.5, lpips={"backbone": "alex"})
    assert "mean_lpips" not in metrics
    with pytest.raises(ValueError, match="lpips takes the keys backbone, backbone_weights, lpips_weights"):
        CounterfactualWriter(str(tmp_path / "c"), lpips={"backbone": "alex", "weights": "alex.pth"})


def test_mean_lpips_is_the_direct_mean(tmp_path, net):
    assert _run(tmp_path / "same", 1.0, lpips=net)["mean_lpips"] == 0.0
    metrics = _run(tmp_path / "half", 0.5, lpips=net)
    x = TinyDicts(10).x
    expected = float(lpips_distance(net, x, 0.5 * x).double().mean())
    assert expected > 1e-3
    assert metrics["mean_lpips"] == pytest.approx(expected, rel=1e-5)
    assert metrics["lpips_backbone"] == "tiny" and "Zhang et al. 2018" in metrics["lpips_note"]


def test_each_compared_method_gets_its_mean_lpips(tmp_path, net):
    both = MethodComparison({"same": ScaleMethod(1.0), "darker": ScaleMethod(0.5)}, primary="darker")
    metrics = _run(tmp_path / "job", 1.0, method=both, lpips=net)
    x = TinyDicts(10).x
    darker = float(lpips_distance(net, x, 0.5 * x).double().mean())
    assert metrics["mean_lpips"] == metrics["methods"]["darker"]["mean_lpips"] == pytest.approx(darker, rel=1e-5)
    assert metrics["methods"]["same"]["mean_lpips"] == 0.0
