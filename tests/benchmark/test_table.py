"""The benchmark's table from constructed metrics: rows, markdown, csv and results.json."""
import csv
import json

import pytest

from cflight.benchmark.table import COLUMNS, markdown_table, table_rows, write_tables


def _jobs():
    return {
        "fast": {"n": 4, "validity": 0.5, "oracle_validity": 0.25, "mean_l1": 1.5, "mean_l2": 0.75,
                 "sparsity": 0.1, "fid_successful": 3.0, "mnac": 1.25, "seconds_per_image": 0.01,
                 "evaluations_per_image_total": 42.0, "peak_memory_mb": 100.0},
        "partial": {"n": 4, "validity": 1.0, "mean_l1": 2.0, "mean_l2": 1.0},  # no oracle, FID or cost
    }


def test_rows_take_each_column_from_its_metrics_key():
    rows = table_rows(_jobs())
    assert [r["method"] for r in rows] == ["fast", "partial"]
    assert rows[0]["l2"] == 0.75 and rows[0]["fid"] == 3.0 and rows[0]["evaluations_per_image"] == 42.0
    assert rows[1]["oracle_validity"] is None and rows[1]["fid"] is None
    assert set(rows[0]) == {"method", *[c for c, _, _, _ in COLUMNS]}


def test_markdown_has_one_line_per_method_and_dashes_for_missing_values():
    text = markdown_table(table_rows(_jobs()))
    lines = text.splitlines()
    assert lines[0].startswith("| method | n | validity | oracle validity")
    fast = next(ln for ln in lines if ln.startswith("| fast"))
    assert "| 0.500 |" in fast and "| 3.00 |" in fast and "| 42.0 |" in fast
    partial = next(ln for ln in lines if ln.startswith("| partial"))
    assert partial.count("—") == len(COLUMNS) - 4  # n, validity, l1, l2 known
    assert any("ACE's protocol" in ln for ln in lines)


def test_files_hold_the_rows_the_provenance_and_the_config(tmp_path):
    prov = {"command": "cflight benchmark -c x.yaml", "git": {"commit": "abc", "dirty": False},
            "machine": {"cpu_count": 2}}
    paths = write_tables(str(tmp_path), _jobs(), prov, config={"methods": [{"name": "fast"}]},
                         extra={"wall_seconds": 1.5})
    rows = list(csv.DictReader(open(paths["table.csv"])))
    assert [r["method"] for r in rows] == ["fast", "partial"]
    assert rows[0]["fid"] == "3.0" and rows[1]["fid"] == ""
    results = json.load(open(paths["results.json"]))
    assert results["command"] == prov["command"] and results["git"]["commit"] == "abc"
    assert results["machine"] == {"cpu_count": 2} and results["config"]["methods"][0]["name"] == "fast"
    assert results["wall_seconds"] == 1.5 and results["methods"]["partial"]["mean_l1"] == 2.0
    assert results["table"][0]["validity"] == pytest.approx(0.5)
    assert open(paths["table.md"]).read() == markdown_table(table_rows(_jobs()))
