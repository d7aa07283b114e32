"""Integration: the shipped checkpoints are what the manifest says, and the main job works on them.

Runs on the real files in ``checkpoints/`` and offline MNIST (``scripts/setup.sh`` installs both); the
explanation job here is the README's main job on 32 images instead of 256.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
import yaml

from cflight.cli import main
from cflight.data import MNISTDataModule
from cflight.models.registry import load_net

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFEST = os.path.join(ROOT, "checkpoints", "manifest.yaml")
FILES = yaml.safe_load(open(MANIFEST))["files"]

pytestmark = pytest.mark.slow


def _sha256(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def mnist_test() -> dict[str, torch.Tensor]:
    dm = MNISTDataModule(root=os.path.join(ROOT, "data"), batch_size=1000, morphometrics=False)
    dm.setup("test")
    return next(iter(dm.test_dataloader()))


@pytest.mark.parametrize("name", sorted(FILES))
def test_file_matches_manifest_and_loads_as_its_kind(name: str) -> None:
    entry, path = FILES[name], os.path.join(ROOT, "checkpoints", name)
    assert _sha256(path) == entry["sha256"], f"{name} differs from its manifest entry"
    net = load_net(path, expected_kind=entry["kind"])
    assert not net.training
    assert sum(v.numel() for v in net.state_dict().values()) == entry["num_params"]  # parameters + buffers
    with pytest.raises(ValueError, match="expected"):
        load_net(path, expected_kind="descriptor")  # a wrong kind is refused, naming the file


@torch.no_grad()
def test_classifiers_reach_their_reported_accuracy(mnist_test) -> None:
    x, y = mnist_test["image"], mnist_test["label"]
    for name, entry in FILES.items():
        if entry["kind"] != "classifier":
            continue
        acc = float((load_net(os.path.join(ROOT, "checkpoints", name), "classifier")(x).argmax(1) == y).float().mean())
        # 1000 images vs the reported 10 000: allow sampling noise, not a different network
        assert acc >= entry["metrics"]["test_accuracy"] - 0.03, (name, acc)


@torch.no_grad()
def test_vae_reconstructs_test_digits(mnist_test) -> None:
    vae = load_net(os.path.join(ROOT, "checkpoints", "mnist_vae.pt"), "generator")
    x = mnist_test["image"][:500]
    mse = float((vae.decode(vae.encode(x)[0]) - x).pow(2).mean())
    assert mse <= 2 * FILES["mnist_vae.pt"]["metrics"]["test_recon_mse"]


def test_main_job_on_shipped_checkpoints(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)  # the config's relative paths (checkpoints/, data/)
    out = tmp_path / "job"
    main(["predict", "-c", "configs/explain/latent_attack_mnist.yaml",
          "--data.init_args.predict_limit=32", "--data.init_args.batch_size=32",
          f"--trainer.callbacks.init_args.output_dir={out}", f"--trainer.logger.init_args.save_dir={tmp_path}",
          "--trainer.enable_progress_bar=false"])
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["n"] == 32 and metrics["validity"] >= 0.9
    # the default τ = 0.999 makes counterfactuals an independently trained model also calls the target class
    # (0.94 over the 256 images of the job; at the paper's τ = 0.5: 0.20)
    assert metrics["oracle_validity"] >= 0.8, metrics
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 33
    summary = json.load(open(out / "global_attribution.json"))
    from cflight.lit.shards import read_rows

    include = torch.cat([read_rows(str(p), ["global_include"])["global_include"] for p in (out / "shards").glob("*.pt")])
    # the global mean covers the rows ExplainModule(global_rows="valid") marked: valid, without a zero gradient
    assert len(include) == 32 and summary["n"] == int(include.sum()) >= 0.9 * 32
    ranked = [d["descriptor"] for d in summary["overall"]]  # every morphometric descriptor, ranked
    assert {"area", "thickness", "slant", "width", "height", "holes"} <= set(ranked)
    scores = [abs(d["score"]) for d in summary["overall"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    for name in ["gallery.png", "gallery.html", "global_attribution.png", "config.yaml"]:
        assert (out / name).is_file(), name
    printed = capsys.readouterr().out
    assert str(out) in printed
    assert f"oracle validity {metrics['oracle_validity']:.3f}" in printed  # the end summary, beside validity


@pytest.mark.parametrize("config, limit, min_validity", [
    ("configs/explain/svce_mnist.yaml", 16, 0.8),
    ("configs/explain/dvce_cone_mnist.yaml", 8, 0.75),
    ("configs/explain/latent_attack_gan_mnist.yaml", 8, 0.75),
    ("configs/explain/dime_mnist.yaml", 8, 0.75),
])
def test_explain_config_on_shipped_checkpoints(config, limit, min_validity, tmp_path, monkeypatch) -> None:
    """Each shipped explain config, on its first ``limit`` images: outputs written, most targets reached."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "job"
    main(["predict", "-c", config, f"--data.init_args.predict_limit={limit}", f"--data.init_args.batch_size={limit}",
          f"--trainer.callbacks.init_args.output_dir={out}", f"--trainer.logger.init_args.save_dir={tmp_path}",
          "--trainer.enable_progress_bar=false"])
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["n"] == limit and metrics["validity"] >= min_validity, metrics
    assert metrics["mean_l1"] > 0 and (out / "gallery.png").is_file()


def test_several_values_config_on_the_shipped_regressor(tmp_path, monkeypatch) -> None:
    """The squares regression job: each of 8 images toward 5 values, with the oracle's verdict."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "job"
    main(["predict", "-c", "configs/explain/svce_squares_several_values.yaml", "--data.init_args.predict_limit=8",
          f"--trainer.callbacks.init_args.output_dir={out}", f"--trainer.logger.init_args.save_dir={tmp_path}",
          "--trainer.enable_progress_bar=false"])
    metrics = json.load(open(out / "metrics.json"))
    assert 8 <= metrics["n"] <= 40 and metrics["validity"] >= 0.9, metrics  # targets already within δ are skipped
    assert metrics["mae_to_target"] < 0.05 < metrics["mae_to_target_before"]
    for key in ("oracle_validity", "oracle_mae", "background_mae"):
        assert key in metrics, key
    for name in ("gallery.png", "difference_by_target.png", "results.csv"):
        assert (out / name).is_file(), name


def test_shipped_regressor_refuses_targets_outside_its_training_range(tmp_path, monkeypatch, capsys) -> None:
    """The shipped squares regressor records the range of its training targets ([0, 1]); a job asking for
    a value beyond it (by more than δ) stops with one line naming the value and the range, writing nothing."""
    reg = load_net(os.path.join(ROOT, "checkpoints", "squares_regressor.pt"), "regressor")
    assert reg.target_range == (0.0, 1.0)
    monkeypatch.chdir(ROOT)
    out = tmp_path / "job"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["predict", "-c", "configs/explain/svce_squares_several_values.yaml",
              "--model.init_args.target_policy.init_args.values=[0.4, 1.2]",
              "--data.init_args.predict_limit=2", f"--trainer.callbacks.init_args.output_dir={out}",
              f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    assert exc.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("cflight: error: regression target 1.2 lies outside the range"), line
    assert "[0, 1]" in line, line
    assert not out.exists() or not os.listdir(out)
