"""Integration: the squares regression explain configs run through ``cflight predict`` on the shipped files
(checkpoints/squares_*.pt), on 2 mirror images with few steps: outputs written, the regression columns there,
the predictions moved toward the mirrored targets."""
from __future__ import annotations

import csv
import json
import os

import pytest

from cflight.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACRE = "--model.init_args.method.init_args.max_iterations=8"
DIFFAE = "--model.init_args.method.init_args.max_steps=8"


def _predict(config: str, steps: str, tmp_path, limit: int = 2) -> tuple[dict, list[dict]]:
    out = tmp_path / "job"
    main(["predict", "-c", config, steps, f"--data.init_args.predict_limit={limit}", "--data.init_args.batch_size=5",
          f"--trainer.callbacks.init_args.output_dir={out}", f"--trainer.logger.init_args.save_dir={tmp_path}",
          "--trainer.enable_progress_bar=false"])
    for name in ("gallery.png", "results.csv", "metrics.json"):
        assert (out / name).is_file(), name
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    return json.load(open(out / "metrics.json")), rows


@pytest.mark.parametrize("config, steps", [("configs/explain/acre_squares.yaml", ACRE),
                                           ("configs/explain/diffae_re_squares.yaml", DIFFAE)])
def test_mirror_config_on_the_shipped_files(config, steps, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the config's relative checkpoint paths
    metrics, rows = _predict(config, steps, tmp_path)
    assert metrics["n"] == 2 and len(rows) == 2
    for key in ("validity", "mae_to_target", "oracle_validity", "oracle_mae", "background_mae"):
        assert key in metrics, key
    assert metrics["mae_to_target"] < metrics["mae_to_target_before"], metrics  # moved toward ỹ
    assert 0 < metrics["background_mae"] < 0.5
    for r in rows:  # the mirror target: the other half of [0, 1]
        assert abs(float(r["target"]) - float(r["prediction"])) > 0.3, r


def test_several_values_diffae_config_writes_the_gallery_and_heat_map(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    metrics, rows = _predict("configs/explain/diffae_re_squares_several_values.yaml",
                             "--model.init_args.method.init_args.max_steps=2", tmp_path, limit=1)
    assert 1 <= len(rows) <= 5 and {float(r["target"]) for r in rows} <= {0.1, 0.2, 0.4, 0.6, 0.8}
    assert (tmp_path / "job" / "difference_by_target.png").is_file()
