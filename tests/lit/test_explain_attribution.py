"""Descriptor attributions inside the explanation job: per-image changes, global summary, chart."""
import csv
import json

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.utils.data import DataLoader

from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.lit.shards import read_rows
from cflight.methods import LatentAttack
from cflight.models.descriptors import LatentDescriptorHeads
from tests.helpers import LinearClassifier, LinearDecoder, TinyDicts


class PixelMeans(nn.Module):
    """Image descriptors: mean brightness of the top and bottom halves."""

    names = ["top", "bottom"]

    def forward(self, x):
        return torch.stack([x[:, :, :2].mean((1, 2, 3)), x[:, :, 2:].mean((1, 2, 3))], dim=1)


def _run(tmp_path, max_steps=200, **kw):
    gen = LinearDecoder()
    module = ExplainModule(LatentAttack(gen, lr=0.05, max_steps=max_steps), LinearClassifier(num_classes=3), **kw)
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[CounterfactualWriter(str(tmp_path / "job"), image_format="float32")])
    trainer.predict(module, DataLoader(TinyDicts(8), batch_size=3), return_predictions=False)
    return tmp_path / "job", gen


@pytest.mark.parametrize("standardize", [False, True])
def test_image_space_attribution_outputs(tmp_path, standardize):
    job, _ = _run(tmp_path, descriptors=PixelMeans(), standardize_descriptors=standardize)
    summary = json.load(open(job / "global_attribution.json"))
    included = int(_rows(job)["global_include"].sum())  # the default rule: the valid counterfactuals
    assert included == 8 and summary["n"] == included
    assert {e["descriptor"] for e in summary["overall"]} == {"top", "bottom"}
    assert summary["standardized"] is standardize
    assert (job / "global_attribution.png").stat().st_size > 0
    rows = list(csv.DictReader(open(job / "results.csv")))
    assert all(r["top_changes"].count(";") == 1 for r in rows)
    # each row's change is its own counterfactual minus its own starting point
    shards = sorted((job / "shards").glob("*.pt"))
    rec = read_rows(str(shards[0]))
    expected = PixelMeans()(rec["x_cf"]) - PixelMeans()(rec["reconstruction"])  # latent method: from its reconstruction
    torch.testing.assert_close(rec["descriptor_delta"], expected)


def test_latent_space_attribution_uses_latents(tmp_path):
    heads = LatentDescriptorHeads(4, ["a", "b", "c"])
    job, _ = _run(tmp_path, descriptors=heads, descriptor_space="latent")
    rec = read_rows(str(sorted((job / "shards").glob("*.pt"))[0]))
    torch.testing.assert_close(rec["descriptor_delta"], heads(rec["latent"]) - heads(rec["latent0"]))
    assert json.load(open(job / "global_attribution.json"))["overall"]


def test_descriptor_errors():
    with pytest.raises(ValueError, match="descriptor_space"):
        ExplainModule(LatentAttack(LinearDecoder()), LinearClassifier(), descriptors=PixelMeans(), descriptor_space="pixel")
    with pytest.raises(ValueError, match="descriptor_names"):
        ExplainModule(LatentAttack(LinearDecoder()), LinearClassifier(), descriptors=nn.Identity())


def _rows(job):
    recs = [read_rows(str(p)) for p in sorted((job / "shards").glob("*.pt"))]
    return {k: torch.cat([r[k] for r in recs]) for k in recs[0]}


@pytest.mark.parametrize("rule", ["valid", "nonzero_grad", "all"])
def test_global_include_column_follows_the_rule(tmp_path, rule):
    from cflight.attribution import global_rows

    job, _ = _run(tmp_path, descriptors=PixelMeans(), global_rows=rule)
    rec = _rows(job)
    assert torch.equal(rec["global_include"], global_rows(rec["valid"], rec["zero_grad"], rule))
    if rule == "all":
        assert rec["global_include"].all()


def test_global_attribution_counts_only_the_included_rows(tmp_path):
    # 70 steps: some targets are not reached, so the default rule ("valid") leaves rows out and "all" does not
    means = {}
    for rule in ("valid", "all"):
        job, _ = _run(tmp_path / rule, max_steps=70, descriptors=PixelMeans(), global_rows=rule)
        rec, summary = _rows(job), json.load(open(job / "global_attribution.json"))
        assert summary["n"] == int(rec["global_include"].sum()), rule
        include = rec["global_include"]
        signed = (PixelMeans()(rec["x_cf"]) - PixelMeans()(rec["reconstruction"])) * rec["direction"][:, None]
        expected = signed[include].double().mean(0)
        got = {e["descriptor"]: e["score"] for e in summary["overall"]}
        assert [got["top"], got["bottom"]] == pytest.approx(expected.tolist(), abs=1e-4), rule
        means[rule] = summary["n"]
    assert means["all"] == 8 > means["valid"] > 0


def test_zero_gradient_rows_leave_the_global_mean(tmp_path):
    from tests.helpers import ConstantClassifier

    module = ExplainModule(LatentAttack(LinearDecoder(), max_steps=5), ConstantClassifier([0.0, 1.0, 2.0]),
                           descriptors=PixelMeans(), global_rows="nonzero_grad")
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[CounterfactualWriter(str(tmp_path / "job"))])
    trainer.predict(module, DataLoader(TinyDicts(4), batch_size=4), return_predictions=False)
    rec = _rows(tmp_path / "job")
    assert rec["zero_grad"].all() and not rec["global_include"].any()  # the reference returns None for them


@pytest.mark.parametrize("rule", ["prediction", "label"])
def test_reconstruction_filter_drops_unfaithful_rows(tmp_path, rule, capsys):
    gen, clf = LinearDecoder(), LinearClassifier(num_classes=3)
    with torch.no_grad():  # centred logits W·(x − ½), so the random images fall in different classes
        clf.fc.bias.copy_(-clf.fc.weight.sum(1) * 0.5)
    data = TinyDicts(12)
    method = LatentAttack(gen, lr=0.05, max_steps=20)
    x, index = data.x, torch.arange(12)
    recon_class = clf(method.reconstruct(x, index)).argmax(1)
    wanted = clf(x).argmax(1) if rule == "prediction" else data.labels
    faithful = recon_class == wanted
    assert 0 < int(faithful.sum()) < 12  # the stand-ins make both kinds
    module = ExplainModule(method, clf, reconstruction_filter=rule)
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[CounterfactualWriter(str(tmp_path / "job"))])
    trainer.predict(module, DataLoader(data, batch_size=5), return_predictions=False)
    assert sorted(_rows(tmp_path / "job")["index"].tolist()) == faithful.nonzero().squeeze(1).tolist()
    assert module.skipped_counts() == {"unfaithful_reconstruction": int((~faithful).sum())}
    assert "reconstruction_filter" in capsys.readouterr().out
    assert json.load(open(tmp_path / "job" / "metrics.json"))["n"] == int(faithful.sum())


def test_binary_direction_decided_on_the_reconstruction(tmp_path):
    from cflight.targets import FlipBinary

    gen, clf = LinearDecoder(), LinearClassifier(num_classes=1)
    with torch.no_grad():
        clf.fc.bias.copy_(-clf.fc.weight.sum(1) * 0.5)
    method = LatentAttack(gen, lr=0.05, max_steps=20)
    x = TinyDicts(8).x
    p_recon = torch.sigmoid(clf(method.reconstruct(x, torch.arange(8)))[:, 0])
    for source in ("reconstruction", "original"):
        module = ExplainModule(method, clf, target_policy=FlipBinary(direction_from=source))
        out = module.predict_step({"image": x, "index": torch.arange(8)})
        p = p_recon if source == "reconstruction" else torch.sigmoid(clf(x)[:, 0])
        assert out["direction"].tolist() == torch.where(p < 0.5, 1, -1).tolist()
    assert ((p_recon < 0.5) != (torch.sigmoid(clf(x)[:, 0]) < 0.5)).any()  # the two rules differ here


def test_filter_and_policy_errors():
    from cflight.methods import PGD  # a pixel method: no reconstruction
    from cflight.targets import PairTargets

    with pytest.raises(ValueError, match="reconstruction_filter"):
        ExplainModule(LatentAttack(LinearDecoder()), LinearClassifier(), reconstruction_filter="yes")
    with pytest.raises(ValueError, match="has none"):
        ExplainModule(PGD(), LinearClassifier(), reconstruction_filter="prediction")
    with pytest.raises(ValueError, match="global_rows"):
        ExplainModule(LatentAttack(LinearDecoder()), LinearClassifier(), global_rows="some")
    with pytest.raises(ValueError, match="target class 7"):
        ExplainModule(LatentAttack(LinearDecoder()), LinearClassifier(num_classes=3),
                      target_policy=PairTargets([[0, 7]]))
