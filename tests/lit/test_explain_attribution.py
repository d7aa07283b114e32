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


def _run(tmp_path, **kw):
    gen = LinearDecoder()
    module = ExplainModule(LatentAttack(gen, lr=0.05, max_steps=200), LinearClassifier(num_classes=3), **kw)
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[CounterfactualWriter(str(tmp_path / "job"), image_format="float32")])
    trainer.predict(module, DataLoader(TinyDicts(8), batch_size=3), return_predictions=False)
    return tmp_path / "job", gen


@pytest.mark.parametrize("standardize", [False, True])
def test_image_space_attribution_outputs(tmp_path, standardize):
    job, _ = _run(tmp_path, descriptors=PixelMeans(), standardize_descriptors=standardize)
    summary = json.load(open(job / "global_attribution.json"))
    assert summary["n"] == 8 and {e["descriptor"] for e in summary["overall"]} == {"top", "bottom"}
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
