"""The speed benchmarks' floors are replayed from the run's own calls, and their reports say how they were made."""
import importlib.util
import json

import pytest
import torch
from torch import nn

from benchmarks.floors import ActiveRows, replay_floor
from cflight.data import mnist as mnist_module

needs_mnist = pytest.mark.skipif(mnist_module.offline_source("mnist") is None, reason="offline MNIST absent")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, f"benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_active_rows_counts_rows_and_each_backward_pass():
    net = nn.Linear(3, 2)
    rows = ActiveRows(net)
    x = torch.randn(5, 3, requires_grad=True)
    out = net(x)
    torch.autograd.grad(out[:, 0].sum(), x, retain_graph=True)
    torch.autograd.grad(out[:, 1].sum(), x)  # a second vector-Jacobian product through the same forward
    with torch.no_grad():
        net(x[:2])
    net(x[:4].detach())  # parameters require grad, but no backward follows
    assert rows.calls == [(5, 2), (2, 0), (4, 0)]
    rows.remove()
    net(x)
    assert len(rows.calls) == 3


def test_replay_floor_charges_every_recorded_call_and_times_each_batch_once():
    seen = []
    report = replay_floor([(8, 1), (8, 1), (5, 1), (5, 0)], lambda rows, b: seen.append((rows, b)), 2,
                          torch.device("cpu"))
    assert sorted(set(seen)) == [(5, 0), (5, 1), (8, 1)] and len(seen) == 3 * (2 + 1)  # reps + warm-up each
    assert report["passes"] == 4 and report["rows"] == 26 and report["distinct_batches"] == 3
    assert report["seconds"] >= 0 and report["cpu_seconds"] >= 0


@needs_mnist
def test_latent_attack_speed_replays_its_own_active_sets(tmp_path):
    out = tmp_path / "la.json"
    report = _load("latent_attack_speed").main(["--n", "6", "--loop-n", "2", "--repeats", "1", "--out", str(out)])
    saved = json.load(open(out))
    assert saved["git"]["commit"] and saved["machine"]["cpu_count"] >= 1
    assert saved["command"].startswith(".venv/bin/python benchmarks/latent_attack_speed.py --n 6")
    active = report["active_rows_per_iteration"]
    assert active[0] == 6 and all(a >= b for a, b in zip(active, active[1:]))  # finished samples leave
    assert report["iterations"] == len(active) and report["floor_seconds"] > 0
    ev = report["evaluations_per_image"]["classifier"]
    assert ev["forward"] == pytest.approx(sum(active) / 6) and ev["backward"] <= ev["forward"]


@needs_mnist
def test_svce_speed_uses_the_shipped_robust_model_and_its_config(tmp_path):
    report = _load("svce_speed").main(["--n", "3", "--repeats", "1", "--out", str(tmp_path / "s.json")])
    assert report["model"] == "checkpoints/mnist_robust.pt" and report["settings"]["eps"] == 6.0
    off, on = report["runs"]
    assert not off["early_stop"] and on["early_stop"]
    assert off["evaluations_per_image"]["model"]["backward"] >= on["evaluations_per_image"]["model"]["backward"]


@needs_mnist
def test_dvce_speed_counts_denoiser_backward_passes(tmp_path):
    report = _load("dvce_speed").main(["--n", "1", "--repeats", "1", "--respacing", "10", "--skip", "7",
                                       "--out", str(tmp_path / "d.json")])
    for key, terms in (("guided", 2), ("cone", 3)):  # class term(s) + the distance through the denoiser
        r = report[key]
        ev = r["evaluations_per_image_one_pass"]["denoiser"]
        assert ev["forward"] == r["reverse_steps"] == 3 and ev["backward"] == terms * 3
        assert r["evaluations_per_image_two_pass"]["denoiser"]["forward"] == 6
        assert r["max_abs_diff_one_vs_two_pass"] == 0.0 and r["seconds"]["floor"] > 0
