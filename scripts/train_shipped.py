"""Train, evaluate and export the two shipped MNIST networks, and record them in checkpoints/manifest.yaml.

    .venv/bin/python scripts/train_shipped.py classifier   # cflight fit -c configs/train/classifier_mnist.yaml
    .venv/bin/python scripts/train_shipped.py vae          # cflight fit -c configs/train/vae_mnist.yaml
    .venv/bin/python scripts/train_shipped.py all

Each job runs ``cflight fit`` on its YAML config (in this process), takes the best checkpoint (by the
validation metric), exports its network to ``checkpoints/<file>`` (no optimiser state), evaluates the
*exported file* on the full MNIST test set (classifier: accuracy; VAE: per-pixel MSE of the reconstruction
from the posterior mean) and writes sha256, command, network and metric to ``checkpoints/manifest.yaml``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cflight.cli import main as cflight_main  # noqa: E402
from cflight.data import MNISTDataModule  # noqa: E402
from cflight.lit import export_checkpoint  # noqa: E402
from cflight.models.registry import load_net  # noqa: E402

JOBS = {
    "classifier": ("configs/train/classifier_mnist.yaml", "checkpoints/mnist_classifier.pt", "classifier"),
    "vae": ("configs/train/vae_mnist.yaml", "checkpoints/mnist_vae.pt", "generator"),
}


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def evaluate(path: str, kind: str, root: str = "data") -> dict[str, float]:
    """Test accuracy of a classifier or test reconstruction MSE (posterior mean) of a VAE file."""
    net = load_net(path, expected_kind=kind)
    dm = MNISTDataModule(root=root, batch_size=500, morphometrics=False)
    dm.setup("test")
    correct = total = 0
    sq_err = 0.0
    for batch in dm.test_dataloader():
        x, y = batch["image"], batch["label"]
        if kind == "classifier":
            correct += int((net(x).argmax(1) == y).sum())
        else:
            mu, _ = net.encode(x)
            sq_err += float(((net.decode(mu) - x) ** 2).sum())
        total += x.shape[0]
    if kind == "classifier":
        return {"test_accuracy": correct / total, "test_images": total}
    return {"test_recon_mse": sq_err / (total * 28 * 28), "test_images": total}


def run_job(name: str) -> dict:
    config, out, kind = JOBS[name]
    with open(os.path.join(ROOT, config)) as f:
        cfg = yaml.safe_load(f)
    ckpt_dir = next(cb["init_args"]["dirpath"] for cb in cfg["trainer"]["callbacks"]
                    if cb["class_path"].endswith("ModelCheckpoint"))
    best = os.path.join(ckpt_dir, "best.ckpt")
    for stale in (best, os.path.join(ckpt_dir, "last.ckpt")):  # ModelCheckpoint would version, not replace
        if os.path.exists(stale):
            os.remove(stale)
    fit_args = ["fit", "-c", config, "--trainer.enable_progress_bar=false"]
    start = time.time()
    cflight_main(fit_args)
    train_s = time.time() - start
    info = export_checkpoint(best, out, {"config": config})
    metrics = evaluate(out, kind)
    export_checkpoint(best, out, {"config": config, **metrics})  # again, with the measured metric
    entry = {
        "sha256": sha256(out),
        "bytes": os.path.getsize(out),
        "command": f".venv/bin/python scripts/train_shipped.py {name}",
        "equivalent_to": f"cflight {' '.join(fit_args)}; export_checkpoint('{best}', '{out}')",
        "config": config,
        "net": info["net"],
        "net_kwargs": info["net_kwargs"],
        "kind": info["kind"],
        "num_params": info["num_params"],
        "epochs": cfg["trainer"]["max_epochs"],
        "train_seconds": round(train_s, 1),
        "torch_threads": torch.get_num_threads(),
        "metrics": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()},
    }
    print(f"{out}: {entry['metrics']}", flush=True)
    return entry


def update_manifest(entries: dict[str, dict], path: str = "checkpoints/manifest.yaml") -> None:
    manifest = {}
    if os.path.exists(path):
        with open(path) as f:
            manifest = yaml.safe_load(f) or {}
    manifest.setdefault("files", {}).update(entries)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write("# Shipped weight files: plain state dicts loadable with cflight.models.registry.load_net\n"
                "# (torch.load(weights_only=True)); written by scripts/train_shipped.py.\n")
        yaml.safe_dump(manifest, f, sort_keys=False)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=[*JOBS, "all"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.chdir(ROOT)
    torch.set_num_threads(args.threads)
    os.makedirs("checkpoints", exist_ok=True)
    for name in JOBS if args.job == "all" else [args.job]:
        update_manifest({os.path.basename(JOBS[name][1]): run_job(name)})


if __name__ == "__main__":
    main()
