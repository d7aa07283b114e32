"""benchmarks/shapes_ground_truth.py and shapes_matrix.py: the ranking helpers, the matrix's measures on
constructed inputs, the task pool and a quick end-to-end run of both."""
import dataclasses
import json
import math

import pytest
import torch

from benchmarks import shapes_ground_truth as sgt
from benchmarks import shapes_matrix as sm
from benchmarks.task_pool import Task, run_tasks

NAMES = ["shape_circle", "shape_square", "colour_red", "size", "marker"]


def _entry(target, scores):
    top = sorted(zip(NAMES, scores), key=lambda t: -abs(t[1]))
    return {"target": target, "direction": "increase", "n": 3, "top": top}


def test_rank_of_takes_the_best_descriptor_with_the_prefix():
    entry = _entry("circle", [0.1, -0.5, 0.9, 0.2, 0.05])
    assert sgt.rank_of(entry, "shape_") == 2  # colour_red first, then shape_square (|−0.5|)
    assert sgt.rank_of(entry, "marker") == 5
    assert sgt.rank_of(entry, "size") == 3


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


def test_spread_over_seeds():
    assert sgt.spread([3, 1, 2]) == {"per_seed": [3, 1, 2], "min": 1, "max": 3, "median": 2}
    assert sgt.spread([4, None, 1, 2]) == {"per_seed": [4, None, 1, 2], "min": 1, "max": 4, "median": 2}
    assert sgt.spread([1, 2])["median"] == 1.5 and sgt.spread([None])["median"] is None


def test_matrix_cells_change_one_thing_each():
    assert sm.cell_data("shape/base") == {"marker_position": "top_left", "marker_shape": "cross",
                                          "marker_class": 0, "marker_prob": 0.9, "label_factor": "shape"}
    assert sm.cell_data("size/class")["marker_class"] == 1  # the last of two size classes
    assert sm.cell_data("colour/class")["marker_class"] == 2
    assert sm.cell_data("colour/corner")["marker_position"] == "bottom_right"
    assert sm.cell_data("shape/frequency")["marker_prob"] == 0.6
    assert len(sm.cells(sgt.Settings())) == 15
    with pytest.raises(ValueError, match="unknown matrix cells"):
        sm.cells(dataclasses.replace(sgt.Settings(), matrix_cells=("shape/nowhere",)))


def test_shortcut_norm_is_the_markers_closed_form():
    """A white 5 x 5 cross (9 pixels) on grey background b changes 3 x 9 values by 1 − b each: l2 = √27 (1 − b),
    l1.5 = 27^(2/3) (1 − b) (the shapes never reach the marker's corner)."""
    s = dataclasses.replace(sgt.Settings(), n_test=60)
    ds = sm.dataset("shape/base", s)
    gaps = [1 - f.background for f in map(ds.factors, range(60)) if ds.label(f) != 0 and not f.marker]
    norms = sm.shortcut_norms("shape/base", s)
    assert norms["n"] == len(gaps)
    assert norms["l2"] == pytest.approx(math.sqrt(27) * sum(gaps) / len(gaps), abs=1e-3)
    assert norms["l1_5"] == pytest.approx(27 ** (2 / 3) * sum(gaps) / len(gaps), abs=1e-3)
    square = sm.shortcut_norms("shape/marker_shape", s)  # 25 pixels
    assert square["l2"] == pytest.approx(math.sqrt(75) * sum(gaps) / len(gaps), abs=1e-3)


def test_marker_mass():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, :2] = True  # 2 of 16 pixels
    x = torch.zeros(3, 2, 4, 4)
    inside, uniform, nothing = x.clone(), x + 0.3, x.clone()
    inside[0, :, 0, 0] = 0.5
    mass = sm.marker_mass(torch.stack([inside[0], uniform[1], nothing[2]]), x, mask)
    assert mass.tolist() == pytest.approx([1.0, 2 / 16, 0.0])


def _double(v):
    return 2 * v


def _add(a, b):
    return a + b


def test_task_pool_runs_in_dependency_order():
    tasks = [Task("d", _add, lambda r: (r["b"], r["c"]), ("b", "c")), Task("a", _double, lambda r: (1,)),
             Task("b", _double, lambda r: (r["a"],), ("a",)), Task("c", _add, lambda r: (r["a"], 10), ("a",))]
    results, timeline = run_tasks(tasks, workers=2, log=lambda line: None)
    assert results == {"a": 2, "b": 4, "c": 12, "d": 16}
    assert timeline["d"]["start"] >= max(timeline["b"]["end"], timeline["c"]["end"])
    with pytest.raises(ValueError, match="no task provides"):
        run_tasks([Task("x", _double, lambda r: (1,), ("y",))], workers=1)
    with pytest.raises(ValueError, match="dependency cycle"):
        run_tasks([Task("x", _double, lambda r: (1,), ("y",)), Task("y", _double, lambda r: (1,), ("x",))],
                  workers=1)


def test_quick_run_end_to_end(tmp_path):
    torch.set_num_threads(1)
    result = sgt.run(sgt.QUICK, tmp_path, matrix=True, workers=2)
    json.dumps(result)  # the result files are plain JSON
    base = result["base"]
    for key in ("shape_rank_vae", "shape_rank_gan", "marker_rank_vae", "marker_rank_gan"):
        assert len(base[key]["per_seed"]) == len(sgt.QUICK.seeds)
        assert all(v is None or 1 <= v <= 12 for v in base[key]["per_seed"])
    for seed in map(str, sgt.QUICK.seeds):
        for part in ("shape", "marker", "marker_long"):
            for name in (f"{part}_vae", f"{part}_gan"):
                stats = base["per_seed"][seed]["explanations"][name]
                assert 0 < stats["n_explained"] <= sgt.QUICK.n_explain
                assert set(stats["ranks"]) == {"image_std", "image_raw", "latent_std"}
        assert 0.0 <= base["per_seed"][seed]["marker_reliance_of_spurious_classifier"] <= 1.0
    assert set(base["training_shared"]) == {"vae", "gan", "descriptors", "heads_vae", "heads_gan"}
    assert 0 < base["base_done_seconds"] <= base["seconds"]
    matrix = result["matrix"]
    assert set(matrix["cells"]) == set(sgt.QUICK.matrix_cells)
    for cell in matrix["cells"].values():
        assert 0.0 <= cell["reliance"] <= 1.0 and cell["shortcut_norm"]["l2"] > 0
        assert set(cell["methods"]) == set(sm.METHODS)
        for m, r in cell["methods"].items():
            assert 0 < r["n_explained"] <= sgt.QUICK.matrix_n_explain
            assert (r["eps"] is None) == (m not in sm.PIXEL_BALL)
        assert 0.0 <= cell["robust_model"]["val"]["val/robust_acc"] <= 1.0 and cell["robust_model"]["temperature"] > 0
        assert 0.0 <= cell["robust_model"]["reliance"] <= 1.0  # the robust model's own, for svce/apgd_robust
    assert matrix["dvce"]["skip"] == sgt.QUICK.dvce_skip and matrix["dvce"]["ddpm"]["seconds"] > 0
    assert "| shape/base |" in sm.markdown(matrix)


def test_matrix_methods_are_checked_and_select_the_shared_models():
    assert sm.check_methods(["dvce", "svce"]) == ("svce", "dvce")  # the matrix's order
    with pytest.raises(ValueError, match=r"unknown matrix methods \['dcve'\]; the methods are"):
        sm.check_methods(["dcve"])
    only = dataclasses.replace(sgt.QUICK, matrix_methods=("pgd", "dvce"))
    assert sm.shared_models(only) == {"descriptors"}
    assert sm.shared_models(sgt.Settings()) == {"descriptors", "vae", "gan"}
    keys = [t.key for t in sm.tasks(only, None, [])]
    assert keys[0] == "ddpm" and "matrix/shape/base/robust" in keys and "matrix/shape/base/latent_vae" not in keys
    plain = [t.key for t in sm.tasks(dataclasses.replace(sgt.QUICK, matrix_methods=("pgd",)), None, [])]
    assert "ddpm" not in plain and not any(k.endswith("/robust") for k in plain)
    on_robust = {t.key: t for t in sm.tasks(dataclasses.replace(sgt.QUICK, matrix_methods=("svce_robust",)), None, [])}
    assert "ddpm" not in on_robust and "matrix/shape/base/robust_reliance" in on_robust
    task = on_robust["matrix/shape/base/svce_robust"]
    assert "matrix/shape/base/robust" in task.deps
    r = {"matrix/shape/base/classifier": {"checkpoint": "clf.pt"}, "matrix/shape/base/robust": {"checkpoint": "rob.pt"},
         "matrix/shape/base/reliance": {"shortcut_norm": {"l1_5": 1.0, "l2": 1.0}}, "descriptors": {"checkpoint": "d"}}
    assert task.args(r)[2]["classifier"] == "rob.pt"  # SVCE explains the robust model itself


def test_matrix_only_run_trains_only_what_its_methods_need(tmp_path):
    torch.set_num_threads(1)
    s = dataclasses.replace(sgt.QUICK, matrix_methods=("pgd",), matrix_cells=("size/corner",), matrix_seeds=(0, 1))
    result = sgt.run(s, tmp_path, matrix_only=True, workers=1)
    assert result["base"] is None and result["matrix"]["methods"] == ["pgd"]
    assert set(result["matrix"]["timeline"]) == {f"{pre}/size/corner/{t}" for pre in ("matrix", "matrix/seed_1")
                                                 for t in ("classifier", "reliance", "pgd")}
    assert (tmp_path / "cell_size_corner.ckpt").exists() and (tmp_path / "cell_size_corner_seed1.ckpt").exists()
    m = result["matrix"]
    assert m["seeds"] == [0, 1] and set(m["per_seed"]) == {"1"}
    sp = m["spread"]["size/corner"]
    assert sp["reliance"]["per_seed"] == [m["cells"]["size/corner"]["reliance"],
                                          m["per_seed"]["1"]["size/corner"]["reliance"]]
    assert sp["methods"]["pgd"]["validity"]["per_seed"][1] == m["per_seed"]["1"]["size/corner"]["methods"]["pgd"]["validity"]
    assert result["matrix"]["dvce"].startswith("not run")
    assert not (tmp_path / "vae.ckpt").exists() and (tmp_path / "descriptors.ckpt").exists()


def test_seed_spread_and_its_table():
    """Two seeds' tables give per-cell medians and ranges; the markdown shows 'median (min–max)'."""
    def table(rel, cause, marker, mass, valid):
        return {"shape/base": {"reliance": rel, "methods": {"svce": {
            "validity": valid, "cause_rank": cause, "marker_rank": marker, "marker_mass": mass}}}}
    tables = [table(0.9, 1, 3, 0.1, 1.0), table(1.0, 1, 1, 0.3, 0.5)]
    sp = sm.seed_spread(tables, ("svce",))["shape/base"]
    assert sp["reliance"] == {"per_seed": [0.9, 1.0], "min": 0.9, "max": 1.0, "median": 0.95}
    assert sp["methods"]["svce"]["marker_rank"]["median"] == 2 and sp["methods"]["svce"]["cause_rank"]["min"] == 1
    md = sm.markdown({"methods": ["svce"], "cells": tables[0], "spread": sm.seed_spread(tables, ("svce",))})
    assert "| shape/base | 0.95 (0.90–1.00) | 1 / 2 (1–3) / 0.20 (0.10–0.30) (v 0.75 (0.50–1.00)) |" in md
    none = sm.seed_spread([table(0.5, None, None, None, 0.0)] * 2, ("svce",))["shape/base"]["methods"]["svce"]
    assert none["marker_rank"]["median"] is None and "— / —" in sm.markdown(
        {"methods": ["svce"], "cells": tables[0], "spread": {"shape/base": {"reliance": sp["reliance"], "methods": {"svce": none}}}})


def test_matrix_seed_tasks_are_keyed_per_seed():
    s = dataclasses.replace(sgt.QUICK, matrix_methods=("svce_robust",), matrix_seeds=(3, 5))
    tasks = {t.key: t for t in sm.tasks(s, None, [])}
    assert "matrix/shape/base/svce_robust" in tasks and "matrix/seed_5/shape/base/svce_robust" in tasks
    assert "matrix/seed_5/shape/base/robust" in tasks["matrix/seed_5/shape/base/svce_robust"].deps
    r = {"matrix/seed_5/shape/base/classifier": {"checkpoint": "c.pt"},
         "matrix/seed_5/shape/base/robust": {"checkpoint": "r5.pt"},
         "matrix/seed_5/shape/base/reliance": {"shortcut_norm": {"l1_5": 1.0, "l2": 1.0}}}
    args = tasks["matrix/seed_5/shape/base/svce_robust"].args(r)
    assert args[2]["classifier"] == "r5.pt" and args[-1] == 5  # the seed's robust model, explained with that seed
    assert tasks["matrix/seed_5/shape/base/robust"].args(r)[-1] == 5


@pytest.mark.parametrize("args, message", [
    (["--matrix-only", "--matrix-seeds", "0", "0"], "--matrix-seeds: give distinct seeds, got [0, 0]"),
    (["--matrix-only", "--matrix-methods", "dcve"], "unknown matrix methods ['dcve']; the methods are"),
])
def test_cli_rejects_bad_matrix_arguments_in_one_line(args, message):
    """Bad --matrix-* arguments end before anything trains: exit 2 and one line naming the problem."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "benchmarks/shapes_ground_truth.py", *args], cwd=sgt.ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("shapes_ground_truth.py: error:")
