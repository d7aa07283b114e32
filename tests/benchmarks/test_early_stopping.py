"""``benchmarks/early_stopping.py`` on a few images runs end to end and writes its report."""
import importlib.util
import json

import pytest

from cflight.data import mnist as mnist_module


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("early_stopping", "benchmarks/early_stopping.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(mnist_module.offline_source("mnist") is None, reason="offline MNIST absent")
def test_small_run_writes_report(tmp_path):
    out = tmp_path / "early_stopping.json"
    report = _load_benchmark().main(["--n", "4", "--dvce-n", "2", "--seeds", "0", "--dvce-seeds", "1",
                                     "--out", str(out)])
    saved = json.load(open(out))
    assert saved["results"].keys() == report["results"].keys() == {
        "SVCE", "PGD_robust", "PGD_plain", "APGD_robust", "APGD_plain", "DVCE"}
    assert saved["git"]["commit"] and saved["machine"]["cpu_count"] >= 1 and "--dvce-n 2" in saved["command"]
    for name, res in saved["results"].items():
        (run,) = res["runs"]
        for mode in ("off", "on"):
            assert 0 <= run[mode]["validity"] <= 1 and run[mode]["wall_s"] > 0
        net = "denoiser" if name == "DVCE" else "model"  # the network whose passes early stopping saves
        assert run["on"][f"{net}_forward_rows"] <= run["off"][f"{net}_forward_rows"]
        assert run["on"][f"{net}_backward_rows"] <= run["off"][f"{net}_backward_rows"]
        assert run["on"]["mean_steps"] <= run["off"]["mean_steps"] == run["off"]["max_steps"]
    dvce = saved["results"]["DVCE"]["runs"][0]["off"]
    assert dvce["denoiser_forward_rows"] == 2 * 50 and dvce["denoiser_backward_rows"] == 2 * 2 * 50  # 2 images
