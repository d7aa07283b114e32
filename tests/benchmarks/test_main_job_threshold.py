"""benchmarks/main_job_threshold.py on 4 images, one τ, one seed: every figure recorded with its provenance."""
from __future__ import annotations

import json

from benchmarks.main_job_threshold import main


def test_threshold_sweep_records_each_run(tmp_path) -> None:
    out = tmp_path / "sweep.json"
    main(["--thresholds", "0.5", "--seeds", "0", "--limit", "4", "--out", str(out)])
    result = json.load(open(out))
    (row,) = result["rows"]
    assert row["threshold"] == 0.5 and row["runs"][0]["n"] == 4
    assert 0 <= row["oracle_validity"]["min"] <= row["oracle_validity"]["max"] <= 1
    assert "--limit 4" in result["command"] and result["git"]["commit"] and result["machine"]["cpu_count"]
