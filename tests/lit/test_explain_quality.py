"""Quality metrics of explanation jobs in metrics.json: ACE's FID/KID of the valid counterfactuals and MNAC
with an oracle attribute model, against direct computations on the job's own rows."""
import json

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.utils.data import DataLoader

from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.lit.shards import read_rows
from cflight.metrics import frechet_distance
from tests.helpers import LinearClassifier, TinyDicts
from tests.toy_methods import ScaleMethod

pytestmark = pytest.mark.usefixtures("one_thread")


class HalfMeans(nn.Module):
    """Two continuous attributes: mean brightness of the top and bottom halves."""

    names = ["top", "bottom"]

    def forward(self, x):
        return torch.stack([x[:, :, :2].mean((1, 2, 3)), x[:, :, 2:].mean((1, 2, 3))], dim=1)


def _job(out, factor, n=12, **writer_kw):
    clf = LinearClassifier(num_classes=3)
    with torch.no_grad():  # centred logits: the scaled images change class for some rows, not all
        clf.fc.bias.copy_(-clf.fc.weight.sum(1) * 0.5)
    writer = CounterfactualWriter(str(out), gallery_size=2, image_format="float32", **writer_kw)
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, callbacks=[writer],
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(ExplainModule(ScaleMethod(factor), clf), DataLoader(TinyDicts(n), batch_size=5),
                    return_predictions=False)
    recs = [read_rows(str(p)) for p in sorted((out / "shards").glob("*.pt"))]
    return json.load(open(out / "metrics.json")), {k: torch.cat([r[k] for r in recs]) for k in recs[0]}


def _moments(f):
    return f.double().mean(0), torch.cov(f.double().T)


def test_fid_and_kid_of_the_valid_counterfactuals_follow_ace(tmp_path):
    metrics, rec = _job(tmp_path / "job", 0.3, fid_feature_net=LinearClassifier(num_classes=3), kid_subsets=7)
    ok = rec["valid"]
    assert 2 <= int(ok.sum()) < len(ok)  # a test that can tell "valid ones" from "all"
    x, x_cf = rec["image"].flatten(1), rec["x_cf"].flatten(1)  # LinearClassifier's penultimate features: pixels
    assert metrics["fid_successful"] == pytest.approx(float(frechet_distance(*_moments(x), *_moments(x_cf[ok]))),
                                                      rel=1e-4)
    assert metrics["fid"] == pytest.approx(float(frechet_distance(*_moments(x), *_moments(x_cf))), rel=1e-4)
    assert metrics["fid_successful_n"] == int(ok.sum()) and metrics["fid_n"] == len(ok)
    from cflight.metrics import KernelDistance

    pixels = nn.Identity()
    pixels.num_features = x.shape[1]
    kid = KernelDistance(pixels, subsets=7, penultimate=False)
    kid.update(x, real=True, index=rec["index"])
    kid.update(x_cf[ok], real=False, index=rec["index"][ok])
    assert metrics["kid_successful"] == pytest.approx(float(kid.compute()["kid"]), rel=1e-4, abs=1e-7)
    assert "ACE" in metrics["fid_protocol"] and metrics["kid_subsets"] == 7


def test_mnac_counts_attribute_changes_of_valid_counterfactuals(tmp_path):
    metrics, rec = _job(tmp_path / "job", 0.3, mnac_attributes=HalfMeans())
    ok = rec["valid"]
    before, after = HalfMeans()(rec["image"]).double(), HalfMeans()(rec["x_cf"]).double()
    std = before.std(0, correction=0)  # over all explained originals
    changed = ((after - before).abs() > 0.5 * std)[ok]
    assert metrics["mnac"] == pytest.approx(float(changed.sum(1).double().mean()))
    assert metrics["mnac_n"] == int(ok.sum())
    assert metrics["mnac_change_rate"] == pytest.approx(dict(zip(["top", "bottom"], changed.double().mean(0).tolist())))
    assert "0.5" in metrics["mnac_protocol"] and metrics["mnac_attributes"] == "HalfMeans"


def test_mnac_of_binary_attributes_and_without_valid_rows(tmp_path):
    # binary rule: the attribute's decision at 0.3 flips; factor 1 changes nothing, so no row is valid
    metrics, rec = _job(tmp_path / "same", 1.0, mnac_attributes=HalfMeans(), mnac_threshold=0.3,
                        fid_feature_net=LinearClassifier(num_classes=3))
    assert not rec["valid"].any()
    assert metrics["mnac"] is None and metrics["mnac_n"] == 0 and "flips" in metrics["mnac_protocol"]
    assert metrics["fid_successful"] is None and metrics["kid_successful"] is None
    assert metrics["fid"] == pytest.approx(0.0, abs=1e-5)  # all counterfactuals are the originals
