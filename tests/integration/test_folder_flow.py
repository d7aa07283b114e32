"""The README's own-data flow (configs/folder/) through the CLI on a tiny generated folder: fit the
classifier, the oracle and the VAE, then explain, changing only the folder path of configs/folder/data.yaml."""
import csv
import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from cflight.cli import main
from cflight.models.descriptors.generic import GENERIC_NAMES

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "configs" / "folder"
CLASSES = ["bags", "boots", "shirts"]  # sorted: the class order of the folder
# tiny settings on top of the configs (epochs, search steps, no progress bars); the configs' W&B loggers stay
# (disabled below): Lightning warns about log_every_n_steps only when a logger is attached
QUIET = ["--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu",
         "--data.init_args.batch_size", "8"]


def make_folder(root: Path, per_class: int = 12) -> None:
    """3 classes of 28×28 grey PNGs: a bright blob whose position tells the class, plus noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            cx, cy = 6 + 8 * k + rng.integers(-2, 3), 14 + rng.integers(-4, 5)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 18.0)
            img = np.clip(blob + 0.1 * rng.random((28, 28)), 0, 1)
            Image.fromarray((img * 255).astype(np.uint8), "L").save(root / name / f"{name}_{j:02d}.png")


def test_folder_flow_one_path(tmp_path, monkeypatch, one_thread):
    images = tmp_path / "my images"
    make_folder(images)
    text = (FOLDER / "data.yaml").read_text()
    changed = text.replace("root: data/own_images", f"root: {images}")
    assert sum(a != b for a, b in zip(text.splitlines(), changed.splitlines())) == 1  # one path, nothing else
    data = tmp_path / "data.yaml"
    data.write_text(changed)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)  # the configs' outputs/ and checkpoints are relative to the working directory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for model in ("classifier", "oracle", "vae"):
            main(["fit", "-c", str(data), "-c", str(FOLDER / f"{model}.yaml"), *QUIET,
                  "--trainer.max_epochs", "1"])
            assert (tmp_path / "outputs" / "folder" / model / "checkpoints" / "best.ckpt").is_file(), model
        main(["predict", "-c", str(data), "-c", str(FOLDER / "explain.yaml"), *QUIET,
              "--model.init_args.method.init_args.max_steps", "10",
              "--model.init_args.global_rows", "all"])  # 10 steps may reach no target: aggregate every row
    interval = [str(w.message) for w in caught if "log_every_n_steps" in str(w.message)]
    assert not interval, interval

    job = tmp_path / "outputs" / "explain" / "folder"
    for name in ("results.csv", "metrics.json", "gallery.png", "gallery.html", "global_attribution.json",
                 "global_attribution.png"):
        assert (job / name).is_file(), name
    with open(job / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # 10 % of 36 images held out for testing
    assert list(rows[0])[:2] == ["index", "path"]
    for row in rows:  # each row names its file (relative to the folder) and the folder's class names
        assert (images / row["path"]).is_file() and row["path"].split("/")[0] == row["label"]
        assert {row["label"], row["prediction"], row["target"]} <= set(CLASSES)
    metrics = json.loads((job / "metrics.json").read_text())
    assert {"validity", "oracle_validity"} <= set(metrics)
    attribution = json.loads((job / "global_attribution.json").read_text())
    text = json.dumps(attribution)
    assert all(name in text for name in GENERIC_NAMES) and "holes" not in text and "slant" not in text
    assert any(name in text for name in CLASSES) and "thickness" not in text
