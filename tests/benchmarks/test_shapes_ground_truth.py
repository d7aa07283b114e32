"""benchmarks/shapes_ground_truth.py: the ranking helpers and a quick end-to-end run."""
import json

import pytest
import torch

from benchmarks import shapes_ground_truth as sgt

NAMES = ["shape_circle", "shape_square", "colour_red", "size", "marker"]


def _entry(target, scores):
    top = sorted(zip(NAMES, scores), key=lambda t: -abs(t[1]))
    return {"target": target, "direction": "increase", "n": 3, "top": top}


def test_rank_of_takes_the_best_descriptor_with_the_prefix():
    entry = _entry("circle", [0.1, -0.5, 0.9, 0.2, 0.05])
    assert sgt.rank_of(entry, "shape_") == 2  # colour_red first, then shape_square (|−0.5|)
    assert sgt.rank_of(entry, "marker") == 5


def test_rank_summary_reports_the_worst_target():
    by_target = [_entry("circle", [0.9, -0.4, 0.1, 0.0, 0.0]), _entry("square", [-0.1, 0.2, 0.5, 0.0, 0.0])]
    summary = sgt.rank_summary(by_target, "shape")
    assert summary["rank"] == 2 and [t["rank"] for t in summary["targets"]] == [1, 2]
    assert sgt.rank_summary([], "marker") == {"rank": None, "targets": []}


def test_global_ranking_uses_valid_faithful_counterfactuals_only():
    rows = {"valid": torch.tensor([True, False, True]), "faithful": torch.tensor([True, True, False]),
            "direction": torch.tensor([1, 1, 1]), "logits": torch.tensor([[0.0, 1.0]] * 3),
            "target_class": torch.tensor([0, 0, 0])}
    scores = torch.zeros(3, 5, dtype=torch.float64)
    scores[0, 4], scores[0, 0] = 0.8, 0.1  # the only counted row: marker first
    scores[1, 0] = scores[2, 0] = 5.0  # not valid / reconstruction not faithful
    (entry,) = sgt.global_ranking(scores, rows, NAMES, ["circle", "square"])
    assert entry["n"] == 1 and entry["top"][0][0] == "marker"


def test_descriptor_std_is_the_ground_truth_spread():
    std = sgt.descriptor_std(sgt.Settings(std_samples=2000), sgt.TRAIN["descriptors"])
    assert std.shape == (12,)
    assert std[-1] == pytest.approx(0.5, abs=0.03)  # the marker is on half of the images
    assert std[0] == pytest.approx((1 / 3 * 2 / 3) ** 0.5, abs=0.03)  # one shape of three


def test_quick_run_end_to_end(tmp_path):
    torch.set_num_threads(1)
    result = sgt.run(sgt.QUICK, tmp_path, reuse=False)
    json.dumps(result)  # the result file is plain JSON
    for key in ("shape_rank_vae", "shape_rank_gan", "marker_rank_vae", "marker_rank_gan"):
        assert result[key] is None or 1 <= result[key] <= 12
    for part in ("shape", "marker", "marker_long"):
        for name in (f"{part}_vae", f"{part}_gan"):
            stats = result["explanations"][name]
            assert 0 < stats["n_explained"] <= sgt.QUICK.n_explain
            assert set(stats["ranks"]) == {"image_std", "image_raw", "latent_std"}
    assert set(result["training"]) >= {"classifier", "classifier_marker", "vae", "gan", "descriptors",
                                       "heads_vae", "heads_gan", "classifier_marker_long"}
    assert 0.0 <= result["marker_reliance_of_spurious_classifier"] <= 1.0
    assert set(result["control_longer_trained_spurious_classifier"]) >= {"marker_reliance", "marker_rank_vae"}
