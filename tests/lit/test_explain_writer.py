"""ExplainModule + CounterfactualWriter on tiny models: outputs, resume, atomicity, errors."""
import csv
import json
import os

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.methods import LatentAttack
from cflight.targets import FixedClass, SecondMostLikely, TrueLabel
from tests.helpers import LinearClassifier, LinearDecoder, TinyDicts


class CountingAttack(LatentAttack):
    """Records every dataset index it is asked to explain."""

    seen: list[int] = []

    def run(self, x, target, model, index, pred):
        CountingAttack.seen.extend(index.tolist())
        return super().run(x, target, model, index, pred)


def _trainer(tmp_path, writer, **kw):
    return Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, callbacks=[writer],
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path), **kw)


def _module(method_cls=LatentAttack, policy=None):
    method = method_cls(LinearDecoder(), lr=0.05, max_steps=300)
    return ExplainModule(method, LinearClassifier(num_classes=3), target_policy=policy or SecondMostLikely())


def test_predict_writes_all_outputs(tmp_path):
    out = tmp_path / "job"
    writer = CounterfactualWriter(str(out), gallery_size=4)
    _trainer(tmp_path, writer).predict(_module(), DataLoader(TinyDicts(10), batch_size=4), return_predictions=False)
    for name in ["results.csv", "metrics.json", "gallery.png", "gallery.html"]:
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [int(r["index"]) for r in rows] == list(range(10))
    metrics = json.load(open(out / "metrics.json"))
    for key in ["n", "validity", "median_steps", "mean_l2", "mean_l1", "seconds"]:
        assert key in metrics
    assert metrics["n"] == 10
    # validity is re-scored from the saved image: it must agree with the csv's columns
    assert metrics["validity"] == pytest.approx(sum(r["valid"] == "True" for r in rows) / 10)
    html = (out / "gallery.html").read_text()
    assert html.count("<tr>") == 1 + 10 and "data:image/png;base64" in html  # every image, not the gallery's 4
    assert '<th class="s" title="click to sort">valid</th>' in html


def test_rerun_skips_finished_shards(tmp_path):
    out = tmp_path / "job"
    loader = DataLoader(TinyDicts(10), batch_size=3)
    CountingAttack.seen = []
    _trainer(tmp_path, CounterfactualWriter(str(out)), limit_predict_batches=2).predict(
        _module(CountingAttack), loader, return_predictions=False)
    assert sorted(CountingAttack.seen) == list(range(6))
    first = {p: os.path.getmtime(out / "shards" / p) for p in os.listdir(out / "shards")}
    CountingAttack.seen = []
    _trainer(tmp_path, CounterfactualWriter(str(out))).predict(_module(CountingAttack), loader, return_predictions=False)
    assert sorted(CountingAttack.seen) == [6, 7, 8, 9], "finished images were recomputed"
    for p, t in first.items():
        assert os.path.getmtime(out / "shards" / p) == t
    assert json.load(open(out / "metrics.json"))["n"] == 10


def test_partial_shard_is_ignored(tmp_path):
    out = tmp_path / "job"
    os.makedirs(out / "shards")
    (out / "shards" / "shard-000000000-000000002-3-deadbeef.pt.0.tmp").write_bytes(b"partial")
    _trainer(tmp_path, CounterfactualWriter(str(out))).predict(_module(), DataLoader(TinyDicts(4), batch_size=4),
                                                              return_predictions=False)
    assert not list((out / "shards").glob("*.tmp"))
    assert json.load(open(out / "metrics.json"))["n"] == 4


def test_policies_select_images(tmp_path):
    out = tmp_path / "job"
    clf = LinearClassifier(num_classes=3)
    data = TinyDicts(10)
    preds = clf(data.x).argmax(1)
    module = ExplainModule(LatentAttack(LinearDecoder(), lr=0.05, max_steps=50), clf, target_policy=TrueLabel(0.6))
    _trainer(tmp_path, CounterfactualWriter(str(out))).predict(module, DataLoader(data, batch_size=5), return_predictions=False)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {int(r["index"]) for r in rows} == set((preds != data.labels).nonzero().squeeze(1).tolist())
    assert all(r["target"] == r["label"] for r in rows)


def test_fixed_class_policy_skips_images_already_in_class():
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    target, keep = FixedClass(1)(logits, {})
    assert keep.tolist() == [True, False] and target.classes.tolist() == [1, 1]


def test_inference_mode_gives_clear_error(tmp_path):
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=True, logger=False, enable_progress_bar=False,
                      callbacks=[CounterfactualWriter(str(tmp_path / "job"))])
    with pytest.raises(RuntimeError, match="inference_mode=False"):
        trainer.predict(_module(), DataLoader(TinyDicts(2), batch_size=2))


def test_bad_images_in_batch_fail_before_work(tmp_path):
    class Bad(TinyDicts):
        def __getitem__(self, i):
            d = super().__getitem__(i)
            d["image"] = d["image"] * 255
            return d

    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _trainer(tmp_path, CounterfactualWriter(str(tmp_path / "job"))).predict(_module(), DataLoader(Bad(2), batch_size=2))


def test_policy_threshold_validation():
    with pytest.raises(ValueError, match="threshold"):
        SecondMostLikely(threshold=1.0)
    with pytest.raises(ValueError, match="gallery_size"):
        CounterfactualWriter("x", gallery_size=-1)


def test_save_images_writes_browsable_pngs(tmp_path):
    from PIL import Image

    out = tmp_path / "job"
    _trainer(tmp_path, CounterfactualWriter(str(out), save_images=True)).predict(
        _module(), DataLoader(TinyDicts(5), batch_size=2), return_predictions=False)
    names = sorted(p.name for p in (out / "images").iterdir())
    assert "000000004_original.png" in names and "000000004_counterfactual.png" in names
    assert "000000000_reconstruction.png" in names  # a latent method's starting point too
    img = Image.open(out / "images" / "000000002_original.png")
    assert img.size == (4, 4)
    x = TinyDicts(5).x[2, 0]
    assert abs(np.asarray(img)[..., 0] / 255.0 - x.numpy()).max() <= 0.5 / 255 + 1e-6


def test_gallery_spreads_over_groups_and_outcomes():
    from cflight.lit.selection import balanced_choice

    keys = torch.arange(20)
    groups = torch.tensor([0] * 12 + [1] * 6 + [2] * 2)  # ordered by group, as a class-sorted folder is
    ok = torch.tensor([True] * 10 + [False] * 2 + [True] * 6 + [False, True])
    chosen = balanced_choice(keys, groups, ok, 6)
    picked_groups = groups[chosen].tolist()
    assert set(picked_groups) == {0, 1, 2}  # not the first 6 indices, all of group 0
    assert (~ok[chosen]).sum() >= 2  # the failures are shown too
    assert picked_groups == sorted(picked_groups)  # reading order: by group
    assert torch.equal(balanced_choice(keys.flip(0), groups.flip(0), ok.flip(0), 6), chosen)  # order-free
    assert len(balanced_choice(keys, groups, ok, 50)) == 20


def test_gallery_of_several_targets_shows_whole_images():
    from cflight.lit.selection import choose_gallery
    from cflight.lit.shards import SLOTS

    keys = torch.tensor([i * SLOTS + s for i in range(6) for s in range(3)])
    valid = torch.tensor([i != 4 for i in range(6) for _ in range(3)])
    records = {"valid": valid, "target_slot": keys % SLOTS, "direction": torch.ones(18, dtype=torch.long)}
    chosen = choose_gallery([records], [keys], 2, task="regression", several_targets=True)
    images = sorted({k // SLOTS for k in chosen})
    assert len(chosen) == 6 and len(images) == 2 and 4 in images  # every target of 2 images, a failure among them


class HalfMeans(torch.nn.Module):
    names = ["top", "bottom"]

    def forward(self, x):
        return torch.stack([x[:, :, :2].mean((1, 2, 3)), x[:, :, 2:].mean((1, 2, 3))], dim=1)


def test_wandb_offline_run_gets_tables_with_images_summary_and_chart(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # where offline artifacts are staged
    from cflight.lit import AutoWandbLogger

    logger = AutoWandbLogger(project="cflight-test", save_dir=str(tmp_path / "wandb"), name="tiny")
    writer = CounterfactualWriter(str(tmp_path / "job"), gallery_size=3)
    module = ExplainModule(LatentAttack(LinearDecoder(), lr=0.05, max_steps=50), LinearClassifier(num_classes=3),
                           target_policy=SecondMostLikely(), descriptors=HalfMeans())
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=logger, callbacks=[writer],
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.predict(module, DataLoader(TinyDicts(6), batch_size=3), return_predictions=False)
    run = logger.experiment
    assert run.summary["explain/n"] == 6 and "explain/validity" in run.summary.keys()
    run.finish()
    files = tmp_path / "wandb" / "wandb"
    (run_dir,) = list(files.glob("offline-run-*"))
    tables = {p.name.split("_")[0]: p for p in (run_dir / "files" / "media" / "table" / "explain").glob("*.table.json")}
    assert {"examples", "results", "global"} <= set(tables)
    examples = json.load(open(tables["examples"]))
    assert examples["columns"][:3] == ["original", "counterfactual", "difference"] and len(examples["data"]) == 3
    assert "valid" in examples["columns"] and "l1" in examples["columns"]
    # The images of a table travel in its run_table artifact, staged offline for `wandb sync`.
    staged = [json.load(open(p)) for p in (tmp_path / "wandb-data").rglob("*")
              if p.is_file() and open(p, "rb").read(1) == b"{"]
    tables = [t for t in staged if t.get("_type") == "table" and t["columns"][:1] == ["original"]]
    assert tables and all(cell["_type"] == "image-file" for t in tables for row in t["data"] for cell in row[:3])
    assert list((run_dir / "files" / "media" / "images" / "explain").glob("gallery_*.png"))
