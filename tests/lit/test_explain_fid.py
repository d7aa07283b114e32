"""FID in explanation jobs: absent unless configured, ≈ 0 for identical sets, the direct value otherwise."""
import json

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.lit.assembly import iter_share, make_plan
from cflight.lit.shards import SLOTS, read_info, shard_name, shard_paths, write_shard
from cflight.metrics import frechet_distance
from cflight.models.registry import export_net
from tests.helpers import LinearClassifier, TinyDicts
from tests.toy_methods import ScaleMethod


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(out, factor=1.0, n=10, batch_size=4, **writer_kw):
    writer = CounterfactualWriter(str(out), gallery_size=2, **writer_kw)
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, callbacks=[writer],
                      enable_progress_bar=False, enable_model_summary=False)
    module = ExplainModule(ScaleMethod(factor), LinearClassifier(num_classes=3))
    trainer.predict(module, DataLoader(TinyDicts(n), batch_size=batch_size), return_predictions=False)
    return json.load(open(out / "metrics.json"))


def _moments(f):
    return f.double().mean(0), torch.cov(f.double().T)


def test_no_fid_unless_configured_and_mean_l1_always(tmp_path):
    metrics = _run(tmp_path / "job", factor=0.5)
    assert not any(k.startswith("fid") for k in metrics)
    assert metrics["mean_l1"] == pytest.approx(float((0.5 * TinyDicts(10).x).flatten(1).sum(1).mean()), rel=1e-5)


def test_fid_of_identical_sets_is_zero(tmp_path):
    metrics = _run(tmp_path / "job", factor=1.0, fid_feature_net=LinearClassifier(num_classes=3))
    assert metrics["fid"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["fid_n"] == 10 and "explained originals" in metrics["fid_note"] and "noisy" in metrics["fid_note"]


def test_fid_equals_the_direct_computation_whatever_the_batching(tmp_path):
    # LinearClassifier's last (only) nn.Linear reads the flattened image: its penultimate features are the pixels.
    x = TinyDicts(10).x.flatten(1)
    expected = float(frechet_distance(*_moments(x), *_moments(0.5 * x)))
    a = _run(tmp_path / "a", factor=0.5, batch_size=4, fid_feature_net=LinearClassifier(num_classes=3),
             image_format="float32")
    b = _run(tmp_path / "b", factor=0.5, batch_size=3, fid_feature_net=LinearClassifier(num_classes=3),
             image_format="float32")
    assert a["fid"] > 0.1
    assert a["fid"] == pytest.approx(expected, rel=1e-4) and b["fid"] == pytest.approx(expected, rel=1e-4)
    # the default uint8 shards: FID of the images as stored, within the quantisation of 1/255
    c = _run(tmp_path / "c", factor=0.5, batch_size=4, fid_feature_net=LinearClassifier(num_classes=3))
    q = lambda t: (t * 255).round() / 255  # noqa: E731
    assert c["fid"] == pytest.approx(float(frechet_distance(*_moments(q(x)), *_moments(q(0.5 * x)))), rel=1e-4)


def test_fid_covers_shards_of_an_earlier_run(tmp_path):
    out = tmp_path / "job"
    writer = CounterfactualWriter(str(out), fid_feature_net=LinearClassifier(num_classes=3), image_format="float32")
    module = ExplainModule(ScaleMethod(0.5), LinearClassifier(num_classes=3))
    loader = DataLoader(TinyDicts(10), batch_size=3)
    for limit in (2, None):  # interrupted after 2 batches, then resumed
        trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, callbacks=[writer],
                          limit_predict_batches=limit, enable_progress_bar=False)
        trainer.predict(module, loader, return_predictions=False)
    metrics = json.load(open(out / "metrics.json"))
    x = TinyDicts(10).x.flatten(1)
    assert metrics["fid_n"] == 10 and metrics["computed_this_run"] == 4
    assert metrics["fid"] == pytest.approx(float(frechet_distance(*_moments(x), *_moments(0.5 * x))), rel=1e-4)


def test_fid_with_one_image_is_null(tmp_path):
    metrics = _run(tmp_path / "job", factor=0.5, n=1, fid_feature_net=LinearClassifier(num_classes=3))
    assert metrics["n"] == 1 and metrics["fid"] is None


def test_rank_shares_partition_the_records(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for idx in ([0, 1, 2], [3, 4], [2, 5], [6]):  # index 2 twice: counted once, in the first shard by name
        index = torch.tensor(idx)
        write_shard(str(shards / shard_name(index)), {"index": index, "v": index.float()}, "fp")
    plan = make_plan([read_info(p) for p in shard_paths(str(shards))])
    assert (plan.keys() // SLOTS).tolist() == list(range(7))
    for world in (1, 2, 3, 5):
        got = sorted(i for r in range(world) for rec in iter_share(plan, ["index"], r, world)
                     for i in rec["index"].tolist())
        assert got == list(range(7)), world


def test_feature_net_from_a_checkpoint_and_its_errors(tmp_path):
    kwargs = {"in_channels": 1, "image_size": 4, "num_classes": 3, "width": 2, "hidden": 5}
    from cflight.models.registry import build_net

    path = tmp_path / "clf.pt"
    export_net("mnist_cnn", kwargs, build_net("mnist_cnn", **kwargs).state_dict(), str(path))
    metrics = _run(tmp_path / "job", factor=0.5, fid_feature_net=str(path))
    assert metrics["fid"] > 0 and metrics["fid_feature_net"] == str(path)

    export_net("conv_vae", {}, {}, str(tmp_path / "gen.pt"))
    with pytest.raises(ValueError, match="expected a classifier"):
        CounterfactualWriter(str(tmp_path / "x"), fid_feature_net=str(tmp_path / "gen.pt"))
    big = LinearClassifier(num_classes=3, size=8)
    with pytest.raises(ValueError, match="fid_feature_net expects images of size"):  # before any explanation
        _run(tmp_path / "bad", fid_feature_net=big)
    assert not (tmp_path / "bad" / "shards").exists() or not list((tmp_path / "bad" / "shards").iterdir())
