"""A regression benchmark (configs/benchmark/squares_regression.yaml): its table from constructed metrics, its
plots, the one-task check, and a tiny ``cflight benchmark`` run of the squares config (4 images, few steps)."""
import csv
import json
import os
import time

import pytest
import yaml
from PIL import Image

from cflight.benchmark.plots import plot_all
from cflight.benchmark.runner import check_one_task, load_config
from cflight.benchmark.table import (
    COLUMNS, REGRESSION_COLUMNS, TABLE_NOTES, markdown_table, table_rows, write_tables)
from cflight.cli import main
from cflight.validation import BadInputError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "benchmark", "squares_regression.yaml")


@pytest.fixture
def at_root(monkeypatch):
    """The config's checkpoint paths are relative to the repository root, as ``cflight`` runs them."""
    monkeypatch.chdir(ROOT)


def _jobs():
    """Two regression jobs' metrics.json as the runner leaves them (with ``task`` and ``tolerance``)."""
    return {
        "acre": {"task": "regression", "tolerance": 0.05, "n": 16, "validity": 0.9375, "success_rate": 1.0,
                 "mae_to_target": 0.0286, "oracle_validity": 0.1875, "oracle_mae": 0.0946, "mean_l1": 443.08,
                 "mean_l2": 5.0488, "mean_linf": 0.276, "sparsity": 0.992, "background_mae": 0.0355,
                 "seconds_per_image": 3.6836, "evaluations_per_image_total": 183.75, "peak_memory_mb": 2037.0},
        "pgd_l2": {"task": "regression", "tolerance": 0.05, "n": 16, "validity": 0.8125, "mae_to_target": 0.0328,
                   "oracle_validity": 0.0, "oracle_mae": 0.2318, "mean_l1": 327.81, "mean_l2": 3.989,
                   "mean_linf": 0.32, "sparsity": 0.962, "background_mae": 0.0264},  # no cost figures
    }


def test_regression_rows_take_success_mae_and_oracle_columns_from_their_keys():
    rows = table_rows(_jobs())
    assert [r["method"] for r in rows] == ["acre", "pgd_l2"]
    acre, pgd = rows
    # success is the job's validity (judged on the returned image), not the method's own success_rate
    assert acre["success"] == 0.9375 and acre["mae"] == 0.0286 and acre["oracle_success"] == 0.1875
    assert acre["oracle_mae"] == 0.0946 and acre["background_mae"] == 0.0355 and acre["l2"] == 5.0488
    assert acre["evaluations_per_image"] == 183.75 and acre["delta"] == 0.05
    assert pgd["seconds_per_image"] is None and pgd["oracle_success"] == 0.0
    # no classification column, and no realism column no job computed
    assert not {"validity", "oracle_validity", "fid", "kid", "mnac", "lpips"} & set(acre)
    assert set(acre) == {"method", "delta", *[c for c, _, _, _ in REGRESSION_COLUMNS]} - {"fid", "kid", "mnac", "lpips"}


def test_regression_markdown_names_delta_and_explains_the_columns():
    text = markdown_table(table_rows(_jobs()))
    lines = text.splitlines()
    assert lines[0] == ("| method | n | success (δ 0.05) | MAE | oracle success | oracle MAE | l1 | l2 | l∞ | sparsity "
                        "| background MAE | s / image | evaluations / image | peak MB |")
    assert "validity" not in lines[0] and "FID" not in lines[0] and "MNAC" not in lines[0]
    acre = next(ln for ln in lines if ln.startswith("| acre"))
    assert acre == ("| acre | 16 | 0.938 | 0.0286 | 0.188 | 0.0946 | 443.08 | 5.049 | 0.276 | 0.992 | 0.0355 | 3.6836 "
                    "| 183.8 | 2037 |")
    pgd = next(ln for ln in lines if ln.startswith("| pgd_l2"))
    assert pgd.count("—") == 3  # s / image, evaluations / image, peak MB
    notes = [ln for ln in lines if ln.startswith("- ")]
    assert notes[0].startswith("- success: share of counterfactuals") and "|ŷ' − ỹ| ≤ δ" in notes[0]
    assert any(n.startswith("- MAE: mean |ŷ' − ỹ|") for n in notes)
    assert any(n.startswith("- background MAE:") for n in notes)
    assert not any("FID" in n or "MNAC" in n or n.startswith("- validity") for n in notes)


def test_a_realism_column_appears_where_a_job_has_it():
    jobs = _jobs()
    jobs["acre"]["fid_successful"] = 12.5
    rows = table_rows(jobs)
    assert rows[0]["fid"] == 12.5 and rows[1]["fid"] is None and "kid" not in rows[0]
    text = markdown_table(rows)
    assert "| FID (within δ) |" in text.splitlines()[0] and "| 12.50 |" in text
    assert any(ln.startswith("- FID / KID (within δ)") for ln in text.splitlines())


def test_different_deltas_are_not_claimed_in_the_header():
    jobs = _jobs()
    jobs["pgd_l2"]["tolerance"] = 0.1
    assert markdown_table(table_rows(jobs)).splitlines()[0].startswith("| method | n | success | MAE |")


def test_a_job_without_the_runners_task_is_regression_by_its_mae():
    jobs = {k: {m: v for m, v in job.items() if m not in ("task", "tolerance")} for k, job in _jobs().items()}
    rows = table_rows(jobs)
    assert rows[0]["mae"] == 0.0286 and rows[0]["delta"] is None
    assert markdown_table(rows).splitlines()[0].startswith("| method | n | success | MAE |")


def test_classification_benchmarks_keep_their_columns_and_notes():
    jobs = {"pgd": {"n": 4, "validity": 0.5, "mean_l2": 1.0, "task": "classification"}}
    rows = table_rows(jobs)
    assert set(rows[0]) == {"method", *[c for c, _, _, _ in COLUMNS]}
    text = markdown_table(rows)
    assert text.splitlines()[0].startswith("| method | n | validity | oracle validity")
    assert text.endswith("\n".join(f"- {n}" for n in TABLE_NOTES) + "\n")


def test_mixed_tasks_are_one_line_errors():
    jobs = {**_jobs(), "dvce": {"n": 4, "validity": 1.0, "task": "classification"}}
    with pytest.raises(BadInputError, match="mixes classification and regression"):
        table_rows(jobs)


def test_regression_files_hold_the_regression_rows(tmp_path):
    paths = write_tables(str(tmp_path), _jobs(), {"command": "cflight benchmark -c x.yaml"})
    rows = list(csv.DictReader(open(paths["table.csv"])))
    assert list(rows[0]) == ["method", *[c for c, _, _, _ in REGRESSION_COLUMNS
                                         if c not in ("fid", "kid", "mnac", "lpips")], "delta"]
    assert rows[0]["mae"] == "0.0286" and rows[0]["delta"] == "0.05" and rows[1]["peak_memory_mb"] == ""
    results = json.load(open(paths["results.json"]))
    assert results["task"] == "regression" and results["table"][1]["oracle_mae"] == pytest.approx(0.2318)


def test_regression_plots_are_success_and_mae_against_l2(tmp_path):
    made = plot_all(table_rows(_jobs()), str(tmp_path))
    assert sorted(made) == ["mae_vs_l2", "success_vs_l2", "time_per_image"]
    for path in made.values():
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] > 100
    assert not (tmp_path / "validity_vs_l2.png").exists() and not (tmp_path / "fid_vs_l2.png").exists()


def test_the_squares_config_is_one_regression_task_with_delta_005():
    tasks = check_one_task(load_config(CONFIG))
    assert list(tasks) == ["acre", "diffae_re", "dime", "svce", "pgd_l2", "apgd_l2"]
    assert all(t == {"task": "regression", "tolerance": 0.05} for t in tasks.values())


def test_a_config_mixing_tasks_fails_before_any_job(tmp_path, capsys):
    raw = yaml.safe_load(open(CONFIG))
    raw["methods"][1]["module"] = {"target_policy": {"class_path": "cflight.targets.SecondMostLikely"}}
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(BadInputError, match="mix classification and regression"):
        check_one_task(load_config(str(path)))
    with pytest.raises(SystemExit):  # the CLI: one line, before the first job's directory exists
        main(["benchmark", "-c", str(path), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert "'diffae_re': 'classification'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


# the tiny run's steps per method (init_args key → value); every method of the config must be here and every
# key in its init_args, so an edit of the config cannot leave its full length in this test
TINY_STEPS = {
    "acre": {"max_iterations": 2},
    "diffae_re": {"max_steps": 2, "encode_steps": 4, "decode_steps": 2},
    "dime": {"start_step": 2, "scales": [500.0]},
    "svce": {"steps": 3},
    "pgd_l2": {"steps": 2},
    "apgd_l2": {"steps": 3},
}


def _tiny_squares_config(tmp_path) -> str:
    raw = yaml.safe_load(open(CONFIG))
    assert [m["name"] for m in raw["methods"]] == list(TINY_STEPS), "update TINY_STEPS to the config's methods"
    for m in raw["methods"]:
        args = m["method"]["init_args"]
        missing = set(TINY_STEPS[m["name"]]) - set(args)
        assert not missing, f"{m['name']}: {missing} not in the config's init_args; update TINY_STEPS"
        args.update(TINY_STEPS[m["name"]])
    raw.pop("wandb", None)  # W&B logging is test_runner's; here the regression table
    raw["writer"]["gallery_size"] = 2
    path = tmp_path / "squares_tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


@pytest.mark.usefixtures("one_thread", "at_root")
def test_tiny_squares_benchmark_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = _tiny_squares_config(tmp_path)
    out = tmp_path / "bench"
    start = time.perf_counter()
    main(["benchmark", "-c", config, "--limit", "4", "--output_dir", str(out)])
    assert time.perf_counter() - start < 60
    results = json.load(open(out / "results.json"))
    assert results["task"] == "regression" and results["command"].endswith("--limit 4 --output_dir " + str(out))
    assert [r["method"] for r in results["table"]] == list(TINY_STEPS)
    for row in results["table"]:  # each row: its job's own results.csv, aggregated
        per_image = list(csv.DictReader(open(out / row["method"] / "results.csv")))
        assert row["n"] == len(per_image) == 4 and row["delta"] == 0.05
        assert row["success"] == pytest.approx(sum(r["valid"] == "True" for r in per_image) / 4)
        assert row["mae"] == pytest.approx(sum(float(r["error"]) for r in per_image) / 4, abs=1e-5)
        assert row["oracle_mae"] == pytest.approx(sum(float(r["oracle_error"]) for r in per_image) / 4, abs=1e-5)
        assert row["background_mae"] == pytest.approx(sum(float(r["background_mae"]) for r in per_image) / 4,
                                                      abs=1e-5)
        assert row["evaluations_per_image"] > 0 and row["seconds_per_image"] > 0
    table = (out / "table.md").read_text()
    assert table.splitlines()[0].startswith("| method | n | success (δ 0.05) | MAE | oracle success | oracle MAE |")
    assert "validity" not in table.splitlines()[0] and table in capsys.readouterr().out
    for name in ("table.csv", "success_vs_l2.png", "mae_vs_l2.png", "time_per_image.png"):
        assert (out / name).is_file(), name
    assert not (out / "validity_vs_l2.png").exists()
