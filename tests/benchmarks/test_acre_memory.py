"""``benchmarks/acre_memory.py`` on a tiny UNet runs end to end and writes its report."""
import importlib.util
import json


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("acre_memory", "benchmarks/acre_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_writes_report(tmp_path):
    out = tmp_path / "acre_memory.json"
    report = _load_benchmark().main(["--size", "8", "--channels", "32", "--batch", "1", "--repeats", "1",
                                     "--out", str(out)])
    saved = json.load(open(out))
    assert saved == json.loads(json.dumps(report)) and "--size 8" in saved["command"] and saved["commit"]
    off, on = saved["off"], saved["on"]
    assert not off["checkpoint_chain"] and on["checkpoint_chain"]
    assert off["grad_abs_sum"] == on["grad_abs_sum"] > 0  # the same gradient either way
    assert off["graph_saved_mb"] > 10 * on["graph_saved_mb"]  # checkpointing keeps only each call's inputs
    assert saved["machine"]["device"] == "cpu" and "rss_increase_mb" in off
