"""``benchmarks/gpu_options.py``: one line and no file without a GPU; ``--device cpu --smoke`` runs end to end."""
import importlib.util
import json

import pytest
import torch


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_options", "benchmarks/gpu_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_gpu_one_line_and_nothing_written(tmp_path):
    out = tmp_path / "gpu_options.json"
    with pytest.raises(SystemExit) as exc:
        _load_benchmark().main(["--out", str(out), "--batch-sizes", "2"])
    message = str(exc.value.code)
    assert "needs a CUDA GPU" in message and "\n" not in message
    assert not out.exists()


def test_smoke_on_cpu(tmp_path, one_thread):
    out = tmp_path / "gpu_options.json"
    bench = _load_benchmark()
    result = bench.main(["--device", "cpu", "--smoke", "--options", "bf16", "all", "--out", str(out)])
    saved = json.load(open(out))
    assert saved["complete"] and saved["rows"] == result["rows"]
    assert saved["command"].endswith("benchmarks/gpu_options.py --device cpu --smoke --options bf16 all "
                                     f"--out {out}")
    assert {"commit", "dirty"} <= set(saved["git"]) and saved["machine"]["torch"] == torch.__version__
    rows = {(r["method"], r["option"]): r for r in saved["rows"]}
    assert set(rows) == {(m, o) for m in ("latent_attack", "dvce") for o in ("fp32", "bf16", "all")}
    assert saved["options"]["all"] == {"precision": "bf16", "channels_last": True, "compile": True,
                                       "compile_backend": "eager", "checkpoint_chain": True}
    for (method, option), row in rows.items():
        assert row["images_per_s"] > 0 and row["batch_size"] == 2 and 0 <= row["success_rate"] <= 1
        if option == "fp32":
            assert row["max_abs_diff_vs_fp32"] == 0 and row["speedup_vs_fp32"] == 1
        else:  # low precision changes the numbers a little, not into garbage
            assert 0 < row["max_abs_diff_vs_fp32"] < 0.25
    assert rows[("dvce", "fp32")]["mean_steps"] == 2  # respacing 100, skip 98
    assert "peak_mem_mib" not in rows[("dvce", "fp32")]  # CUDA only
