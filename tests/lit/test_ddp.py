"""An explanation job gives the same results on 1 and on 2 processes (DESIGN.md §6), via ddp_spawn on CPU."""
import csv

import pytest
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.methods import LatentAttack
from tests.helpers import LinearClassifier, LinearDecoder, TinyDicts


def _run(out, devices, strategy="auto"):
    module = ExplainModule(LatentAttack(LinearDecoder(), lr=0.05, max_steps=200, seed=3), LinearClassifier(num_classes=3))
    trainer = Trainer(accelerator="cpu", devices=devices, strategy=strategy, inference_mode=False, logger=False,
                      callbacks=[CounterfactualWriter(str(out))], enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(module, DataLoader(TinyDicts(11), batch_size=3), return_predictions=False)
    return list(csv.DictReader(open(out / "results.csv")))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_processes_match_one(tmp_path):
    one = _run(tmp_path / "one", 1)
    two = _run(tmp_path / "two", 2, "ddp_spawn")
    assert [r["index"] for r in two] == [str(i) for i in range(11)]
    for a, b in zip(one, two):
        for key in ["prediction", "target", "cf_prediction", "valid", "steps"]:
            assert a[key] == b[key], (key, a, b)
        assert float(a["l2"]) == pytest.approx(float(b["l2"]), abs=1e-4)
