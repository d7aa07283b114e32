"""Gallery cards of a classification job (cflight.lit.results.gallery_rows): title, captions, oracle verdict."""
from __future__ import annotations

import torch

from cflight.lit.results import gallery_rows


def _row(valid: bool, **extra) -> dict:
    return {"index": 3, "label": 7, "prediction": 7, "prediction_prob": 0.98, "target": 9, "target_prob": 0.01,
            "cf_prediction": 9 if valid else 7, "cf_target_prob": 0.97 if valid else 0.2, "valid": valid,
            "l1": 12.5, "steps": 40, **extra}


def test_card_title_carries_the_oracles_verdict_when_the_job_has_one() -> None:
    records = {"image": torch.zeros(3, 1, 4, 4), "x_cf": torch.ones(3, 1, 4, 4)}
    rows = [_row(True, oracle_valid=True), _row(True, oracle_valid=False), _row(False)]
    cards, columns = gallery_rows(records, rows, 3)
    assert columns == ["original", "counterfactual", "difference"]
    assert cards[0].title == "7 → 9  p(9) 0.97 ✓  oracle ✓"
    assert cards[1].title.endswith("✓  oracle ✗") and cards[1].ok  # valid for the model, not for the oracle
    assert "oracle" not in cards[2].title and not cards[2].ok     # a job without an oracle says nothing of it
    assert cards[0].captions[-1] == "l1 12.5\n40 steps"
