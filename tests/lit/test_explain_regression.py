"""Explanation jobs for a regressor: targets per image, rows keyed by (index, slot), regression metrics."""
import csv
import json

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, Subset

from cflight.data import SquaresDataset
from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.methods import PGD
from cflight.targets import SeveralValues
from tests.helpers import LinearRegressor

pytestmark = pytest.mark.usefixtures("one_thread")
N, VALUES = 6, [0.2, 0.5, 0.8]


class Recording(PGD):
    seen: list[int] = []

    def run(self, x, target, model, index, pred):
        Recording.seen.extend(index.tolist())
        return super().run(x, target, model, index, pred)


def _job(out, batch_size=4, oracle=True):
    data = Subset(SquaresDataset(N, seed=0, split="test"), range(N))
    module = ExplainModule(Recording(eps=30.0, norm="l2", steps=40, step_size=0.2, random_start=False, early_stop=True), LinearRegressor(3, 64, seed=1),
                           target_policy=SeveralValues(VALUES, tolerance=0.05),
                           oracle=LinearRegressor(3, 64, seed=2) if oracle else None)
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[CounterfactualWriter(str(out), gallery_size=6)])
    Recording.seen = []
    trainer.predict(module, DataLoader(data, batch_size=batch_size), return_predictions=False)
    return list(csv.DictReader(open(out / "results.csv"))), json.load(open(out / "metrics.json")), data


def test_each_image_toward_each_value_with_regression_columns(tmp_path):
    rows, metrics, data = _job(tmp_path / "job")
    model, oracle = LinearRegressor(3, 64, seed=1), LinearRegressor(3, 64, seed=2)
    x = torch.stack([data[i]["image"] for i in range(N)])
    y = model(x)[:, 0]
    expected = [(i, s) for i in range(N) for s, v in enumerate(VALUES) if abs(float(y[i]) - v) > 0.05]
    assert [(int(r["index"]), int(r["target_slot"])) for r in rows] == expected  # sorted by (index, slot)
    for r in rows:
        i, s = int(r["index"]), int(r["target_slot"])
        assert float(r["target"]) == pytest.approx(VALUES[s]) and float(r["prediction"]) == pytest.approx(float(y[i]), abs=1e-5)
        assert float(r["error"]) == pytest.approx(abs(float(r["cf_prediction"]) - VALUES[s]), abs=1e-5)
        assert (r["valid"] == "True") == (float(r["error"]) <= 0.05)
        assert (r["oracle_valid"] == "True") == (float(r["oracle_error"]) <= 0.05)
        assert 0 <= float(r["background_mae"]) < float(r["l1"])
    assert metrics["n"] == len(expected)
    assert metrics["validity"] == pytest.approx(sum(r["valid"] == "True" for r in rows) / len(rows))
    assert metrics["mae_to_target"] == pytest.approx(sum(float(r["error"]) for r in rows) / len(rows), rel=1e-4)
    assert metrics["oracle_mae"] == pytest.approx(sum(float(r["oracle_error"]) for r in rows) / len(rows), rel=1e-4)
    assert metrics["background_mae"] > 0 and "oracle_validity" in metrics
    assert metrics["validity"] > 0.5  # a linear regressor is easy to move: most targets are reached
    assert (tmp_path / "job" / "gallery.png").is_file()


def test_background_mae_is_the_change_outside_the_inner_square(tmp_path):
    rows, _, data = _job(tmp_path / "job", oracle=False)
    from cflight.lit.shards import read_rows

    shard = sorted((tmp_path / "job" / "shards").glob("*.pt"))[0]
    rec = read_rows(str(shard), ["index", "target_slot", "image", "x_cf", "background_mae"])
    for j in range(len(rec["index"])):
        mask = data[int(rec["index"][j])]["mask"]
        outside = (1 - mask).expand(3, -1, -1).bool()
        change = (rec["x_cf"][j] - rec["image"][j]).abs()[outside].mean()
        assert float(rec["background_mae"][j]) == pytest.approx(float(change), abs=2 / 255)  # uint8 storage


def test_rerun_resumes_and_batching_does_not_change_rows(tmp_path):
    a, _, _ = _job(tmp_path / "a", batch_size=4)
    b, _, _ = _job(tmp_path / "b", batch_size=5)
    assert [list(r) for r in a] == [list(r) for r in b]
    for ra, rb in zip(a, b):  # per-sample results: the batch only changes float round-off
        for key in ra:
            if key in ("index", "target_slot", "steps", "valid", "success", "oracle_valid"):
                assert ra[key] == rb[key], key
            else:
                assert float(ra[key]) == pytest.approx(float(rb[key]), abs=1e-4), key
    _job(tmp_path / "a", batch_size=4)
    assert Recording.seen == []


class ChannelMeans(torch.nn.Module):
    names = ["red", "green", "blue"]

    def forward(self, x):
        return x.mean((2, 3))


def test_descriptor_attribution_of_a_regressor_by_direction(tmp_path):
    data = Subset(SquaresDataset(N, seed=0, split="test"), range(N))
    module = ExplainModule(PGD(eps=30.0, norm="l2", steps=40, step_size=0.2, random_start=False, early_stop=True),
                           LinearRegressor(3, 64, seed=1), target_policy=SeveralValues([0.2, 0.8]),
                           descriptors=ChannelMeans())
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False,
                      callbacks=[CounterfactualWriter(str(tmp_path / "job"))])
    trainer.predict(module, DataLoader(data, batch_size=4), return_predictions=False)
    summary = json.load(open(tmp_path / "job" / "global_attribution.json"))
    assert summary["n"] == 2 * N
    assert {(e["direction"], e["n"]) for e in summary["by_target"]} == {("increase", N), ("decrease", N)}
    assert all(e["source"] == e["target"] == "0" for e in summary["by_pair"])  # no classes: one pair


def test_several_values_gallery_and_mean_difference_per_target(tmp_path):
    from PIL import Image

    _, _, data = _job(tmp_path / "job", oracle=False)
    job = tmp_path / "job"
    heat = Image.open(job / "difference_by_target.png")
    assert heat.width > heat.height  # one panel per target value, side by side
    gallery = Image.open(job / "gallery.png")
    assert gallery.width > 6 * 100  # original + 3 counterfactuals + 3 differences per row
    html = (job / "gallery.html").read_text()
    assert html.count("<tr>") == 1 + N  # one row per image (gallery_size 6 = every image)
    assert "→ 0.2" in html and "Δ 0.8" in html and "already within δ" in html
