"""configs/explain/latent_attack_mnist_paper.yaml end to end through the CLI, on random weights in the published
layouts (the real files are the user's, from jeremy-goldwasser/counterfactual-attacks)."""
import csv
import json

import pytest
import torch

from cflight.cli import main
from cflight.data.mnist import find_idx_files
from cflight.lit.shards import read_rows
from cflight.viz.progression import progression_strip
from tests.models.test_pretrained_counterfactual_attacks import classifier_state, vae_state

CONFIG = "configs/explain/latent_attack_mnist_paper.yaml"
PAPER_EDITS = {89: 9, 137: 9, 3: 7, 4: 7, 100: 6, 34: 8, 30: 2}  # the notebook's (source, target, k-th image)
SOURCES = {89: 4, 137: 8, 3: 1, 4: 9, 100: 5, 34: 0, 30: 3}  # the training labels of those images


@pytest.mark.skipif(find_idx_files("data", "mnist", "train") is None, reason="MNIST not installed")
def test_paper_config_runs_on_published_layouts(tmp_path):
    clf, vae = tmp_path / "mnist_classifier_weights.pth", tmp_path / "mnist_autoencoder_weights.pth"
    torch.save(classifier_state(), clf)
    torch.save(vae_state(), vae)
    out = tmp_path / "job"
    main(["predict", "-c", CONFIG, f"--model.init_args.model={clf}",
          f"--model.init_args.method.init_args.generator={vae}",
          "--model.init_args.method.init_args.max_steps=20", "--model.init_args.method.init_args.snapshot_every=5",
          f"--trainer.callbacks.init_args.output_dir={out}", f"--trainer.logger.init_args.save_dir={tmp_path}",
          "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu"])
    rows = list(csv.DictReader(open(out / "results.csv")))
    # only the paper's seven images, each toward its own target (random weights may already predict one)
    assert rows and {int(r["index"]): int(r["target"]) for r in rows}.items() <= PAPER_EDITS.items()
    assert all(int(r["label"]) == SOURCES[int(r["index"])] for r in rows)  # 4→9 is a 4, …
    assert json.load(open(out / "metrics.json"))["n"] == len(rows)
    rec = read_rows(str(sorted((out / "shards").glob("*.pt"))[0]))
    assert rec["snapshots"].shape[1:] == (20 // 5 + 1, 1, 28, 28) and rec["snapshot_steps"].shape[1] == 5
    assert rec["global_include"].dtype == torch.bool
    # stored as uint8 images like the other image columns (read back as k / 255)
    levels = rec["snapshots"] * 255
    assert rec["snapshots"].dtype == torch.float32 and (levels - levels.round()).abs().max() < 1e-4
    grid = progression_strip(rec["snapshots"].float(), rec["snapshot_steps"], str(tmp_path / "progression.png"))
    assert grid.ndim == 3 and (tmp_path / "progression.png").stat().st_size > 0
    # the job draws the paper's progression figure itself, for the gallery's images
    from PIL import Image
    drawn = Image.open(out / "progression.png")
    assert drawn.height >= len(rows) * 84 and drawn.width >= 6 * 84
