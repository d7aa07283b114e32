"""Cost accounting of explanation jobs: known forward/backward counts reach metrics.json; resumed jobs say
what their counts cover; the module's skip counts are reduced into metrics.json."""
import json

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.methods import functional as Fn
from cflight.methods.base import CounterfactualMethod
from cflight.types import CounterfactualOutput
from tests.helpers import LinearClassifier, LinearDecoder, TinyDicts

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 3  # decoder + model forwards per chunk; the first STEPS - 1 are differentiated


class CountedSteps(CounterfactualMethod):
    """Per chunk: STEPS decodes of a latent through the model, a backward through the first STEPS - 1, then one
    decode and one model forward of the result without a graph."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = LinearDecoder()

    def run(self, x, target, model, index, pred):
        z = torch.zeros(x.shape[0], 4, requires_grad=True)
        for i in range(STEPS):
            logits = model(self.generator.decode(z))
            if i < STEPS - 1:
                (g,) = torch.autograd.grad(logits.sum(), z)
                z = (z - 0.1 * g).detach().requires_grad_(True)
        x_cf = self.generator.decode(z).detach()  # a final forward without a graph
        with torch.no_grad():
            pred_cf = model(x_cf)
        success = Fn.target_reached(pred_cf, target)
        return CounterfactualOutput(x_cf, pred, pred_cf, success, torch.full((x.shape[0],), STEPS))


def _job(out, n=10, batch_size=4, limit=None, **writer_kw):
    module = ExplainModule(CountedSteps(), LinearClassifier(num_classes=3))
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_predict_batches=limit,
                      callbacks=[CounterfactualWriter(str(out), gallery_size=2, **writer_kw)])
    trainer.predict(module, DataLoader(TinyDicts(n), batch_size=batch_size), return_predictions=False)
    return module, json.load(open(out / "metrics.json"))


def test_known_counts_reach_metrics_json(tmp_path):
    module, metrics = _job(tmp_path / "job", n=10, batch_size=4)  # chunks of 4, 4, 2
    assert set(module.cost_networks()) == {"model", "generator"}
    assert metrics["cost_rows"] == 10
    per = metrics["evaluations_per_image"]
    # every row: STEPS + 1 forwards of both networks (the last one scores the result), STEPS - 1 backwards
    assert per["model"] == {"forward": STEPS + 1, "backward": STEPS - 1}
    assert per["generator"] == {"forward": STEPS + 1, "backward": STEPS - 1}
    assert metrics["evaluation_calls"]["model"] == {"forward": 3 * (STEPS + 1), "backward": 3 * (STEPS - 1)}
    assert metrics["evaluations_per_image_total"] == pytest.approx(2 * (STEPS + 1) + 2 * (STEPS - 1))
    assert metrics["peak_memory_source"] in ("process_peak_rss_in_blocks", "process_max_rss")
    assert metrics["peak_memory_mb"] > 0
    assert 0 < metrics["method_seconds_per_image"] <= metrics["seconds_per_image"]
    assert "this run" in metrics["cost_covers"] and "peak_memory_source" in metrics["cost_note"]


def test_resumed_job_counts_only_what_it_computed(tmp_path):
    out = tmp_path / "job"
    _job(out, n=10, batch_size=4, limit=1)  # interrupted after one batch: 4 rows
    _, metrics = _job(out, n=10, batch_size=4)  # resumed: the other 6
    assert metrics["n"] == 10 and metrics["computed_this_run"] == 6 and metrics["cost_rows"] == 6
    assert metrics["evaluation_calls"]["model"]["forward"] == 2 * (STEPS + 1)  # chunks of 4 (2 of them left) and 2


def test_cost_counts_are_reduced_through_the_strategy(tmp_path):
    # the counts go through strategy.reduce as one tensor on the module's device (NCCL rejects CPU tensors)
    module, _ = _job(tmp_path / "job", n=4, batch_size=4)
    seen = []

    class Recording:
        def reduce(self, t, reduce_op="sum"):
            seen.append((t.device, reduce_op))
            return t * 2 if reduce_op == "sum" else t

    module._trainer = type("T", (), {"strategy": Recording()})()
    cost = module.cost_summary()
    assert cost["rows"] == 8 and cost["counts"]["model"]["forward_calls"] == 2 * (STEPS + 1)  # two "processes"
    assert seen == [(module.device, "sum"), (module.device, "max")]


def test_skipped_rows_in_metrics_json(tmp_path):
    from cflight.targets import FixedClass

    clf = LinearClassifier(num_classes=3)
    x = TinyDicts(8).x
    with torch.no_grad():  # centred logits W·(x − ½), so the random images fall in different classes
        clf.fc.bias.copy_(-clf.fc.weight.sum(1) * 0.5)
    already = int((clf(x).argmax(1) == 2).sum())
    assert 0 < already < 8  # some images are already of class 2: the policy skips them
    module = ExplainModule(CountedSteps(), clf, target_policy=FixedClass(2))
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[CounterfactualWriter(str(tmp_path / "job"))])
    trainer.predict(module, DataLoader(TinyDicts(8), batch_size=3), return_predictions=False)
    metrics = json.load(open(tmp_path / "job" / "metrics.json"))
    assert metrics["skipped"] == {"policy": already} and metrics["n"] == 8 - already


def test_distances_and_sparsity_in_metrics_json(tmp_path):
    from cflight.metrics import image_distances

    from cflight.lit.shards import read_rows

    _, metrics = _job(tmp_path / "job", n=6, batch_size=6, image_format="float32")

    rec = read_rows(str(next((tmp_path / "job" / "shards").glob("*.pt"))))
    expected = image_distances(rec["image"], rec["x_cf"])  # float images: recomputed from the shard
    for key, name in (("l1_5", "mean_l1_5"), ("linf", "mean_linf"), ("changed_fraction", "sparsity")):
        assert metrics[name] == pytest.approx(float(expected[key].mean()), rel=1e-5), key
    assert "sparsity" in metrics["distance_note"]
