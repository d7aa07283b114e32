"""An explanation job gives the same results on 1 and on 2 processes (DESIGN.md §6), via ddp_spawn on CPU."""
import csv
import json

import pytest
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.methods import LatentAttack, MethodComparison
from tests.helpers import LinearClassifier, LinearDecoder, TinyDicts
from tests.toy_methods import ScaleMethod


def _run(out, devices, strategy="auto"):
    # A comparison (primary: the attack) with FID: per-method FIDs need the moments summed across processes.
    method = MethodComparison({"attack": LatentAttack(LinearDecoder(), lr=0.05, max_steps=200, seed=3),
                               "half": ScaleMethod(0.5)})
    module = ExplainModule(method, LinearClassifier(num_classes=3))
    writer = CounterfactualWriter(str(out), fid_feature_net=LinearClassifier(num_classes=3))
    trainer = Trainer(accelerator="cpu", devices=devices, strategy=strategy, inference_mode=False, logger=False,
                      callbacks=[writer], enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(module, DataLoader(TinyDicts(11), batch_size=3), return_predictions=False)
    return list(csv.DictReader(open(out / "results.csv"))), json.load(open(out / "metrics.json"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_processes_match_one(tmp_path):
    one, m_one = _run(tmp_path / "one", 1)
    two, m_two = _run(tmp_path / "two", 2, "ddp_spawn")
    assert [r["index"] for r in two] == [str(i) for i in range(11)]
    for a, b in zip(one, two):
        for key in ["prediction", "target", "cf_prediction", "valid", "steps", "half/cf_prediction"]:
            assert a[key] == b[key], (key, a, b)
        assert float(a["l2"]) == pytest.approx(float(b["l2"]), abs=1e-4)
    assert m_two["fid_n"] == 11 and m_two["fid"] > 0
    for name in ["attack", "half"]:
        assert m_two["methods"][name]["fid"] == pytest.approx(m_one["methods"][name]["fid"], rel=1e-3, abs=1e-4)
