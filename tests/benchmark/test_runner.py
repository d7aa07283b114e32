"""``cflight benchmark`` end to end on a tiny config (2 methods, 4 images, linear stand-ins), and its errors."""
import json
import time

import pytest

from cflight.benchmark.runner import load_config
from cflight.cli import main
from cflight.validation import BadInputError
from tests.helpers import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = "tests/configs/benchmark_tiny.yaml"


def test_tiny_benchmark_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = tiny_config(TINY, tmp_path)
    start = time.perf_counter()
    main(["benchmark", "-c", config])
    assert time.perf_counter() - start < 60
    out = tmp_path / "job"
    for name in ("table.md", "table.csv", "results.json", "validity_vs_l2.png", "fid_vs_l2.png",
                 "time_per_image.png"):
        assert (out / name).is_file(), name
    results = json.load(open(out / "results.json"))
    assert [r["method"] for r in results["table"]] == ["latent_attack", "pgd"]
    assert results["command"] == f"cflight benchmark -c {config}" and results["git"]["commit"]
    assert results["machine"]["cpu_count"] and results["config"]["methods"][1]["name"] == "pgd"
    for name, metrics in results["methods"].items():  # each job: its own directory, the shared images
        assert (out / name / "metrics.json").is_file() and metrics["n"] == 4
        assert metrics["cost_rows"] == 4 and metrics["evaluations_per_image"]["model"]["forward"] > 0
        for key in ("oracle_validity", "sparsity", "fid_successful", "mnac", "seconds_per_image"):
            assert key in metrics, (name, key)
    pgd = results["methods"]["pgd"]
    # PGD-5 with keep_best (functional.pgd): N + 1 = 6 evaluations (x0 … x5); the last one's gradient would go
    # unused (issue 13), so x5 takes a forward only: 6 forwards, 5 backwards
    assert pgd["evaluations_per_image"]["model"] == {"forward": 6.0, "backward": 5.0}
    assert "generator" in results["methods"]["latent_attack"]["evaluations_per_image"]
    assert "| latent_attack |" in capsys.readouterr().out
    assert results["wall_seconds"] > 0


def test_rerun_starts_each_job_afresh(tmp_path):
    config = tiny_config(TINY, tmp_path, **{"n: 4": "n: 2"})
    main(["benchmark", "-c", config, "--output_dir", str(tmp_path / "again")])
    main(["benchmark", "-c", config, "--output_dir", str(tmp_path / "again")])  # not a resume: cost of all rows
    results = json.load(open(tmp_path / "again" / "results.json"))
    assert all(m["computed_this_run"] == 2 and m["cost_rows"] == 2 for m in results["methods"].values())


@pytest.mark.parametrize("text, message", [
    ("output_dir: x\nmethods: []\n", "'data' is missing"),
    ("data: {class_path: a.B}\nmodule: {model: m}\nmethods: [{name: a}]\n", "needs 'name' and 'method'"),
    ("data: {class_path: a.B}\nmodule: {model: m}\nmethods: [{name: a, method: {}}, {name: a, method: {}}]\n",
     "unique"),
    ("data: {class_path: a.B}\nmodule: {model: m}\nmethods: [{name: a, method: {}}]\ntypo: 1\n", "unknown key"),
    ("data: [unclosed\n", "not valid YAML"),
])
def test_bad_configs_are_one_line(tmp_path, text, message):
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError, match=message):
        load_config(str(path))


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["benchmark", "-c", str(tmp_path / "missing.yaml")])
    assert err.value.code == 2
    assert capsys.readouterr().err.startswith("cflight: error: benchmark config")
    bad = tiny_config(TINY, tmp_path, **{"steps: 5": "steps: 5, nonsense: 1"})
    with pytest.raises(SystemExit):
        main(["benchmark", "-c", bad])
    line = capsys.readouterr().err.strip()
    assert line.startswith("cflight: error: PGD:") and "nonsense" in line and "\n" not in line


def test_table_and_plots_logged_to_an_offline_wandb_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = tiny_config(TINY, tmp_path, **{"n: 4": "n: 2"})
    with open(config, "a") as f:
        f.write("wandb: {project: cflight-test, name: tiny}\n")
    main(["benchmark", "-c", config])
    runs = list((tmp_path / "job" / "wandb").glob("wandb/offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert "W&B run tiny (offline)" in capsys.readouterr().out


def test_mnist_config_builds_every_method_on_the_shipped_checkpoints(monkeypatch):
    import os

    from cflight.benchmark.runner import instantiate
    from cflight.methods.base import CounterfactualMethod

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    monkeypatch.chdir(root)
    if not os.path.isfile("checkpoints/mnist_ddpm.pt"):
        pytest.skip("the shipped checkpoints are not installed (scripts/setup.sh)")
    cfg = load_config("configs/benchmark/mnist_all_methods.yaml")
    assert cfg.data["init_args"]["predict_limit"] == 128
    names = [m["name"] for m in cfg.methods]
    assert names == ["latent_attack_vae", "latent_attack_gan", "dvce_cone", "dime", "svce", "pgd_l2", "apgd_l2"]
    for entry in cfg.methods:
        assert isinstance(instantiate(entry["method"]), CounterfactualMethod), entry["name"]
    assert cfg.module["model"] == "checkpoints/mnist_classifier.pt" and cfg.module["oracle"] == "checkpoints/mnist_oracle.pt"
