"""Side-by-side comparison jobs: per-method columns in results.csv, metrics and FID, gallery columns (CLI)."""
import csv
import json

import pytest
import torch

from cflight.cli import main

CONFIG = "tests/configs/explain_compare_tiny.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_two_toy_methods_side_by_side(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(open(CONFIG).read().replace("OUTPUT_DIR", str(tmp_path / "job")))
    main(["predict", "-c", str(config)])
    job = tmp_path / "job"

    metrics = json.load(open(job / "metrics.json"))
    assert metrics["primary"] == "darker" and list(metrics["methods"]) == ["darker", "same"]
    darker, same = metrics["methods"]["darker"], metrics["methods"]["same"]
    for key in ["validity", "success_rate", "mean_l1", "mean_l2", "median_steps", "fid"]:
        assert key in darker and key in same, key
    assert darker["mean_l1"] == metrics["mean_l1"] > 0 and darker["fid"] == metrics["fid"] > 0
    assert same["mean_l1"] == 0 and same["fid"] == pytest.approx(0, abs=1e-5)

    rows = list(csv.DictReader(open(job / "results.csv")))
    assert len(rows) == 8
    for col in ["cf_prediction", "cf_target_prob", "valid", "l1", "l2", "steps"]:
        assert col in rows[0] and f"same/{col}" in rows[0], col
    assert all(float(r["same/l1"]) == 0 and r["same/cf_target_prob"] == r["target_prob"] for r in rows)
    assert metrics["methods"]["same"]["validity"] == sum(r["same/valid"] == "True" for r in rows) / 8

    page = (job / "gallery.html").read_text()
    header = "".join(f"<th>{c}</th>" for c in ["image", "original", "darker", "same", "Δ darker", "Δ same"])
    assert header in page and page.count("<img") == 8 * 5  # 3 rows × (original + 2 methods + 2 differences)
    assert "methods/same/fid" in page  # per-method metrics listed above the table
    assert (job / "gallery.png").stat().st_size > 0
    assert "FID" in capsys.readouterr().out
