"""benchmarks/batch_scaling.py on 2 images: each (method, batch) measured in its own process, every figure
recorded with provenance, and the plot written."""
from __future__ import annotations

import json

from benchmarks.batch_scaling import main


def test_batch_scaling_records_throughput_memory_and_evaluations(tmp_path) -> None:
    out = tmp_path / "batch_scaling.json"
    main(["--methods", "pgd_l2", "--batches", "1", "2", "4", "--n", "2", "--out", str(out)])
    result = json.load(open(out))
    runs = result["runs"]
    assert [r["batch"] for r in runs] == [1, 2]  # a batch larger than the images is not run
    for r in runs:
        assert r["n"] == 2 and r["images_per_s"] > 0 and r["validity"] <= 1
        # PGD-20: 20 gradient steps (+ the final scoring forward) per image, whatever the batch
        assert r["evaluations_per_image"]["model"]["backward"] >= 20
    assert result["command"].endswith("--n 2 --out " + str(out)) and result["git"]["commit"]
    assert (tmp_path / "batch_scaling.png").stat().st_size > 0
