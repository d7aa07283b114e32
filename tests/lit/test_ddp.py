"""Explanation jobs on 2 processes (ddp_spawn, gloo on CPU) equal 1-process runs, and collectives would
survive NCCL: every tensor a collective gets is on the module's device and was not made on the default
device (tests/ddp_support.py)."""
import csv
import json
import os
import time

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader

from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.methods import LatentAttack, MethodComparison
from tests.ddp_support import CollectiveDeviceGuard, _DefaultDeviceTracker
from tests.helpers import LinearClassifier, LinearDecoder, TinyDicts
from tests.toy_methods import ScaleMethod

N, BATCH = 13, 3  # rank 0 gets 7 images (3 batches), rank 1 gets 6 (2 batches): uneven batch counts


class PixelMeans(nn.Module):
    """Image descriptors: mean brightness of the top and bottom halves."""

    names = ["top", "bottom"]

    def forward(self, x):
        return torch.stack([x[:, :, :2].mean((1, 2, 3)), x[:, :, 2:].mean((1, 2, 3))], dim=1)


def _run(out, devices, strategy="auto", callbacks=()):
    # A comparison (primary: the attack) with FID and standardised descriptor attributions: every reduced
    # metric of the writer (summary, descriptor moments, global attribution, FID moments) takes part.
    method = MethodComparison({"attack": LatentAttack(LinearDecoder(), lr=0.05, max_steps=200, seed=3),
                               "half": ScaleMethod(0.5)})
    module = ExplainModule(method, LinearClassifier(num_classes=3), descriptors=PixelMeans(),
                           standardize_descriptors=True)
    writer = CounterfactualWriter(str(out), fid_feature_net=LinearClassifier(num_classes=3))
    trainer = Trainer(accelerator="cpu", devices=devices, strategy=strategy, inference_mode=False, logger=False,
                      callbacks=[*callbacks, writer], enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(module, DataLoader(TinyDicts(N), batch_size=BATCH), return_predictions=False)
    return (list(csv.DictReader(open(out / "results.csv"))), json.load(open(out / "metrics.json")),
            json.load(open(out / "global_attribution.json")))


def _close(a, b, path=""):
    """Recursive equality of JSON values, floats to 1e-6 relative."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            # times and memory differ between runs; evaluation counts depend on how rows are batched (an
            # active-set method's last evaluations), so they are compared below, summed over the ranks
            if k not in ("seconds", "seconds_per_image", "computed_this_run", "method_seconds_per_image",
                         "peak_memory_mb", "evaluations_per_image", "evaluations_per_image_total",
                         "evaluation_calls"):
                _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-8), path
    else:
        assert a == b, path


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_match_one_and_collectives_are_on_the_device(tmp_path):
    one, m_one, g_one = _run(tmp_path / "one", 1)
    guard = tmp_path / "guard"
    guard.mkdir()
    two, m_two, g_two = _run(tmp_path / "two", 2, "ddp_spawn", [CollectiveDeviceGuard(str(guard))])
    assert not list(guard.iterdir()), [p.read_text() for p in guard.iterdir()]
    indices = [int(r["index"]) for r in two]
    assert indices == list(range(N)), "every image exactly once, in index order"
    assert len(list((tmp_path / "two" / "shards").glob("*.pt"))) == 5  # 3 + 2 batches
    for a, b in zip(one, two):
        for key in ["prediction", "target", "cf_prediction", "valid", "steps", "half/cf_prediction", "top_changes"]:
            assert a[key] == b[key], (key, a, b)
        assert float(a["l2"]) == pytest.approx(float(b["l2"]), abs=1e-4)
    assert m_two["fid_n"] == N and m_two["fid"] > 0
    _close(m_one, m_two)
    _close(g_one, g_two)
    # every rank's evaluations are in the sum: the same rows, the same counts up to the batching of the last steps
    assert m_two["cost_rows"] == m_one["cost_rows"] == N
    for net, per in m_one["evaluations_per_image"].items():
        for way in ("forward", "backward"):
            assert m_two["evaluations_per_image"][net][way] == pytest.approx(per[way], rel=0.02), (net, way)
    assert m_two["evaluation_calls"]["model"]["forward"] > 0
    # the global mean covers the valid rows (global_rows="valid"; no zero gradients with these stand-ins)
    valid = sum(r["valid"] == "True" for r in two)
    assert 0 < valid and g_two["n"] == valid and g_two["standardized"] is True


class _CpuCollective(Callback):
    """The bug the guard exists for: a count reduced as a CPU tensor (what the writer used to do)."""

    def on_predict_end(self, trainer, pl_module):
        trainer.strategy.reduce(torch.tensor(1.0), reduce_op="sum")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_guard_catches_a_cpu_tensor_in_a_collective(tmp_path):
    guard = tmp_path / "guard"
    guard.mkdir()
    with pytest.raises(Exception):
        _run(tmp_path / "job", 2, "ddp_spawn", [CollectiveDeviceGuard(str(guard)), _CpuCollective()])
    found = "".join(p.read_text() for p in guard.iterdir())
    assert "all_reduce got a tensor () on cpu made without a device" in found


def test_tracker_flags_tensors_made_without_a_device():
    with _DefaultDeviceTracker():
        bare, placed = torch.tensor(1.0), torch.zeros(2, device="cpu")
        moved = torch.ones(2).to("cpu")
        derived = torch.as_tensor(placed)
    assert getattr(bare, "_cflight_default_device", False)
    assert not getattr(placed, "_cflight_default_device", False)
    assert not getattr(moved, "_cflight_default_device", False)
    assert not getattr(derived, "_cflight_default_device", False)


class _FailOnRank1(ScaleMethod):
    def run(self, x, target, model, index, pred):
        if dist.is_initialized() and dist.get_rank() == 1:
            raise RuntimeError("rank 1 cannot explain this batch")
        time.sleep(0.2)
        return super().run(x, target, model, index, pred)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_failing_rank_ends_the_job_promptly_with_its_error(tmp_path):
    module = ExplainModule(_FailOnRank1(0.5), LinearClassifier(num_classes=3))
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", inference_mode=False, logger=False,
                      callbacks=[CounterfactualWriter(str(tmp_path / "job"))], enable_progress_bar=False)
    start = time.perf_counter()
    with pytest.raises(Exception, match="rank 1 cannot explain this batch"):
        trainer.predict(module, DataLoader(TinyDicts(40), batch_size=2), return_predictions=False)
    assert time.perf_counter() - start < 120, "the other rank waited for a collective timeout"
    assert not os.path.exists(tmp_path / "job" / "results.csv")


def _run_regression(out, devices, strategy="auto", callbacks=()):
    from cflight.methods import PGD
    from cflight.targets import SeveralValues
    from tests.helpers import LinearRegressor

    module = ExplainModule(PGD(eps=4.0, norm="l2", steps=30, step_size=0.1, random_start=False, early_stop=True),
                           LinearRegressor(), target_policy=SeveralValues([0.2, 0.8]), oracle=LinearRegressor(seed=4))
    trainer = Trainer(accelerator="cpu", devices=devices, strategy=strategy, inference_mode=False, logger=False,
                      callbacks=[*callbacks, CounterfactualWriter(str(out))], enable_progress_bar=False,
                      enable_model_summary=False)
    trainer.predict(module, DataLoader(TinyDicts(N), batch_size=BATCH), return_predictions=False)
    return list(csv.DictReader(open(out / "results.csv"))), json.load(open(out / "metrics.json"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_regression_job_with_several_values_on_two_processes(tmp_path):
    one, m_one = _run_regression(tmp_path / "one", 1)
    guard = tmp_path / "guard"
    guard.mkdir()
    two, m_two = _run_regression(tmp_path / "two", 2, "ddp_spawn", [CollectiveDeviceGuard(str(guard))])
    assert not list(guard.iterdir()), [p.read_text() for p in guard.iterdir()]
    assert [(r["index"], r["target_slot"]) for r in two] == [(r["index"], r["target_slot"]) for r in one]
    assert len({(r["index"], r["target_slot"]) for r in two}) == len(two)  # no duplicates
    for a, b in zip(one, two):
        assert a["valid"] == b["valid"] and a["steps"] == b["steps"]
        assert float(a["cf_prediction"]) == pytest.approx(float(b["cf_prediction"]), abs=1e-5)
    _close(m_one, m_two)
    assert (tmp_path / "two" / "difference_by_target.png").is_file()
