"""``benchmarks/spurious_detection.py --quick`` runs end to end and writes its report and galleries."""
import importlib.util
import json

import pytest

from cflight.data import mnist as mnist_module


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("spurious_detection", "benchmarks/spurious_detection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(mnist_module.offline_source("mnist") is None, reason="offline MNIST absent")
def test_quick_run_writes_report_and_galleries(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "results"
    argv = ["--quick", "--out-dir", str(out), "--models-dir", str(tmp_path / "models")]
    report = bench.main(argv)
    saved = json.load(open(out / "spurious_detection_quick.json"))
    for method in ("SparseAFW_l1.5", "APGD_l2", "APGD_l1"):
        assert set(saved[method]) == {"poisoned", "clean"}
        assert all(v >= 0 for v in saved[method].values())
        for model in ("poisoned", "clean"):
            assert (out / f"spurious_detection_quick_{method}_{model}.png").is_file()
            assert 0 <= saved["details"][method][model]["success_rate"] <= 1
    settings = saved["settings"]
    assert settings["n_images"] == 4 and settings["steps"] == 5 and settings["poison"]["fraction"] == 0.2
    assert settings["mask_pixels"] > 0 and report["settings"] == settings
    assert {m["source"] for m in saved["models"].values()} == {"trained"}
    again = bench.main(argv)  # stored models with the same settings are reused, results identical
    assert {m["source"] for m in again["models"].values()} == {"loaded"}
    assert again["SparseAFW_l1.5"] == report["SparseAFW_l1.5"]


def test_mass_ratio():
    import torch

    bench = _load_benchmark()
    region = torch.zeros(1, 4, 4, dtype=torch.bool)
    region[0, :2, :2] = True
    delta = torch.zeros(2, 1, 4, 4)
    delta[0, 0, 0, 0] = 1.0  # inside: mean 1/4 over 4 pixels; outside: 1/12 over 12 pixels
    delta[0, 0, 3, 3] = -1.0
    delta[1, 0, 3, 3] = 2.0
    assert torch.allclose(bench.mass_ratio(delta, region), torch.tensor([3.0, 0.0]))
