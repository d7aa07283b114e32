"""Train, evaluate and export the shipped MNIST networks, and record them in checkpoints/manifest.yaml.

    .venv/bin/python scripts/train_shipped.py classifier   # cflight fit -c configs/train/classifier_mnist.yaml
    .venv/bin/python scripts/train_shipped.py vae          # cflight fit -c configs/train/vae_mnist.yaml
    .venv/bin/python scripts/train_shipped.py gan          # cflight fit -c configs/train/gan_mnist.yaml
    .venv/bin/python scripts/train_shipped.py robust       # cflight fit -c configs/train/robust_mnist.yaml
    .venv/bin/python scripts/train_shipped.py ddpm         # cflight fit -c configs/train/ddpm_mnist.yaml
    .venv/bin/python scripts/train_shipped.py oracle       # cflight fit -c configs/train/oracle_mnist.yaml
    .venv/bin/python scripts/train_shipped.py squares_regressor  # cflight fit -c configs/train/regressor_squares.yaml
    .venv/bin/python scripts/train_shipped.py squares_oracle     # cflight fit -c configs/train/oracle_squares.yaml
    .venv/bin/python scripts/train_shipped.py squares_ddpm       # cflight fit -c configs/train/ddpm_squares.yaml
    .venv/bin/python scripts/train_shipped.py squares_diffae     # cflight fit -c configs/train/diffae_squares.yaml
    .venv/bin/python scripts/train_shipped.py all
    mkdir -p outputs/warm && cp checkpoints/mnist_ddpm.pt outputs/warm/                # continue from a copy of
    .venv/bin/python scripts/train_shipped.py ddpm --set trainer.max_steps=6000 \
        --set model.init_args.init_weights=outputs/warm/mnist_ddpm.pt                 # the shipped file

Each job runs ``cflight fit`` on its YAML config (in this process), takes the best checkpoint (by the
validation metric), exports its network to ``checkpoints/<file>`` (no optimiser state), evaluates the
*exported file* on the MNIST test set and writes sha256, command, network and metrics to
``checkpoints/manifest.yaml``. Metrics: classifier — test accuracy; VAE — per-pixel MSE of the
reconstruction from the posterior mean; GAN — encoder reconstruction MSE, projection MSE (GANManifold) and
FID of samples; robust — clean and PGD-20 (l2, ε of its config) accuracy, and the ECE temperature fitted on
the validation split (the exported file is the calibrated ``TemperatureWrapper``); DDPM — FID of DDIM-50
samples; squares regressor/oracle — MSE and MAE on the squares test split and on the 630-image mirror grid
(spec latent_and_regression §2.6); squares DDPM — AC-RE's chain reconstruction ``R_τ(x)`` (respacing 50,
τ = 5, the Square script's) of 256 test images: pixel MAE and the shipped regressor's and oracle's |Δŷ|; squares Diff-AE — DDIM-20 inversion + DDIM-20
decoding of 256 test images (pixel MAE, inner-square red error) and how far another image's z_sem moves the
inner red with this image's x_T (does the semantic code steer what the regressor reads?). FIDs use the penultimate features of the shipped classifier against the 10 000 test images
(reference: the FID of 10 000 training images is reported beside them).
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
from cflight.metrics import FrechetDistance  # noqa: E402
from cflight.models.registry import export_calibrated, load_net  # noqa: E402

JOBS = {
    "classifier": ("configs/train/classifier_mnist.yaml", "checkpoints/mnist_classifier.pt", "classifier"),
    "vae": ("configs/train/vae_mnist.yaml", "checkpoints/mnist_vae.pt", "generator"),
    "gan": ("configs/train/gan_mnist.yaml", "checkpoints/mnist_gan.pt", "generator"),
    "robust": ("configs/train/robust_mnist.yaml", "checkpoints/mnist_robust.pt", "classifier"),
    "oracle": ("configs/train/oracle_mnist.yaml", "checkpoints/mnist_oracle.pt", "classifier"),
    "ddpm": ("configs/train/ddpm_mnist.yaml", "checkpoints/mnist_ddpm.pt", "denoiser"),
    "squares_regressor": ("configs/train/regressor_squares.yaml", "checkpoints/squares_regressor.pt", "regressor"),
    "squares_oracle": ("configs/train/oracle_squares.yaml", "checkpoints/squares_oracle.pt", "regressor"),
    "squares_ddpm": ("configs/train/ddpm_squares.yaml", "checkpoints/squares_ddpm.pt", "denoiser"),
    "squares_diffae": ("configs/train/diffae_squares.yaml", "checkpoints/squares_diffae.pt", "denoiser"),
}
FID_NET = "checkpoints/mnist_classifier.pt"
FID_SAMPLES = 2000


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_loader(root: str = "data", split: str = "test", batch_size: int = 500):
    dm = MNISTDataModule(root=root, batch_size=batch_size, morphometrics=False)
    dm.setup("test" if split == "test" else "fit")
    return dm.test_dataloader() if split == "test" else dm.val_dataloader()


def fid_of(samples: torch.Tensor, root: str = "data") -> dict[str, float]:
    """FID of ``samples`` vs the test set, and of as many training images vs the test set (reference)."""
    fid, ref = FrechetDistance(load_net(FID_NET, "classifier")), FrechetDistance(load_net(FID_NET, "classifier"))
    for batch in test_loader(root):
        fid.update(batch["image"], real=True)
        ref.update(batch["image"], real=True)
    fid.update(samples, real=False)
    dm = MNISTDataModule(root=root, batch_size=samples.shape[0], morphometrics=False)
    dm.setup("fit")
    ref.update(next(iter(dm.train_dataloader()))["image"], real=False)
    return {"fid_samples_vs_test": float(fid.compute()), "fid_train_vs_test_reference": float(ref.compute()),
            "fid_samples": samples.shape[0], "fid_features": f"penultimate layer of {FID_NET}"}


def evaluate_gan(path: str) -> dict[str, float]:
    from cflight.models.generative import GANManifold

    gan = load_net(path, expected_kind="generator")
    sq_err = total = 0.0
    with torch.no_grad():
        for batch in test_loader():
            x = batch["image"]
            sq_err += float((gan.decode(gan.encode(x)) - x).pow(2).sum())
            total += x.numel()
        samples = gan.decode(torch.randn(FID_SAMPLES, gan.latent_dim, generator=torch.Generator().manual_seed(0)))
    x = next(iter(test_loader(batch_size=256)))["image"]
    manifold = GANManifold(gan, feature_net=FID_NET, steps=100, n_candidates=4)
    proj = float((manifold.decode(manifold.encode(x)) - x).pow(2).mean())
    return {"test_encoder_recon_mse": sq_err / total, "test_projection_mse": proj,
            "projection": "GANManifold(steps=100, n_candidates=4, feature_net=mnist_classifier), 256 test images",
            **fid_of(samples)}


def evaluate_robust(path: str, config: dict) -> dict[str, float]:
    """Clean accuracy (10 000 test images), PGD-20 accuracy (first 1000) and the ECE temperature (validation)."""
    from cflight.lit import AdversarialTrainingModule
    from cflight.models.classifiers import fit_temperature

    kw = dict(config["model"]["init_args"])
    module = AdversarialTrainingModule(**{**kw, "eval_steps": 20})
    module.net.load_state_dict(load_net(path, expected_kind="classifier").state_dict())
    module.eval()
    correct = robust = n_robust = total = 0
    for batch in test_loader():
        x, y = batch["image"], batch["label"]
        with torch.no_grad():
            correct += int((module.net(x).argmax(1) == y).sum())
        total += x.shape[0]
        if n_robust < 1000:
            x_adv = module.attack(x, y, 20, None, index=batch["index"])
            with torch.no_grad():
                robust += int((module.net(x_adv).argmax(1) == y).sum())
            n_robust += x.shape[0]
    logits, labels = [], []
    with torch.no_grad():
        for batch in test_loader(split="val"):
            logits.append(module.net(batch["image"]))
            labels.append(batch["label"])
    temperature = fit_temperature(torch.cat(logits), torch.cat(labels))
    return {"test_accuracy": correct / total, "test_images": total, "pgd_accuracy": robust / n_robust,
            "pgd_images": n_robust, "pgd": f"l2 eps={kw['attack_eps']}, 20 steps of 2.5*eps/20, random start",
            "temperature": temperature}


def evaluate_ddpm(path: str) -> dict[str, float]:
    from cflight.models.generative.diffusion import GaussianDiffusion

    net = load_net(path, expected_kind="denoiser")
    diffusion = GaussianDiffusion(1000, "linear").respaced("ddim50")
    gen = torch.Generator().manual_seed(0)
    chunks = []
    with torch.no_grad():
        for _ in range(FID_SAMPLES // 500):
            x = torch.randn((500, 1, 28, 28), generator=gen)
            chunks.append((diffusion.ddim_sample(net, x, clip_denoised=True) + 1) / 2)
    return {"sampler": "DDIM 50 steps (eta 0)", **fid_of(torch.cat(chunks).clamp(0, 1))}


@torch.no_grad()
def evaluate_regressor(path: str, config: dict) -> dict[str, float]:
    """MSE/MAE of a squares regressor file on its config's test split and on both mirror grids (§2.6)."""
    from torch.utils.data import ConcatDataset, DataLoader

    from cflight.data import SquaresDataModule
    from cflight.data.squares import SquaresDataset

    net = load_net(path, expected_kind="regressor")
    data = {k: v for k, v in config["data"]["init_args"].items() if k in ("n_test", "noise_std", "seed")}
    dm = SquaresDataModule(**data, batch_size=500)
    dm.setup("test")
    seed = int(data.get("seed", 0))
    grid = ConcatDataset([SquaresDataset(None, seed, "test", d) for d in ("grid_lower", "grid_upper")])
    out = {}
    for name, loader in (("test", dm.test_dataloader()), ("grid", DataLoader(grid, batch_size=315))):
        err = torch.cat([net(b["image"]).squeeze(1) - b["target"].float() for b in loader])
        out.update({f"{name}_mae": float(err.abs().mean()), f"{name}_mse": float(err.pow(2).mean()),
                    f"{name}_images": err.numel()})
    return out


@torch.no_grad()
def evaluate_squares_ddpm(path: str, n: int = 256) -> dict[str, float]:
    """How faithfully AC-RE's chain ``R_τ`` (Square script: respacing 50, τ = 5) reconstructs test images."""
    from cflight.data.squares import SquaresDataset
    from cflight.methods import ACRE

    acre = ACRE(path, timestep_respacing="50", sampling_time_fraction=0.1)
    data = SquaresDataset(n, 0, "test")
    x = torch.stack([data[i]["image"] for i in range(n)])
    recon = torch.cat([acre.chain(x[i:i + 64], torch.arange(i, min(i + 64, n)), 0) for i in range(0, n, 64)])
    recon = recon.clamp(0, 1)
    out = {"chain": "AC-RE R_tau, respacing 50, tau 5 (t <= 100 of 1000), stochastic, seed 0",
           "chain_pixel_mae": float((recon - x).abs().mean()), "chain_images": n}
    for name in ("regressor", "oracle"):
        net = load_net(f"checkpoints/squares_{name}.pt", expected_kind="regressor")
        out[f"chain_{name}_abs_change"] = float((net(recon) - net(x)).abs().mean())
    return out


@torch.no_grad()
def evaluate_squares_diffae(path: str, n: int = 256) -> dict[str, float]:
    """Diff-AE reconstruction (inversion 20, decoding 20) and the control its z_sem has over the inner red."""
    from cflight.data.squares import SquaresDataset
    from cflight.models.generative.diffusion import GaussianDiffusion

    net = load_net(path, expected_kind="denoiser")
    diffusion = GaussianDiffusion(net.training_schedule.num_timesteps, net.training_schedule.schedule)
    data = SquaresDataset(n, 0, "test")
    x = torch.stack([data[i]["image"] for i in range(n)])
    mask = torch.stack([data[i]["mask"] for i in range(n)])

    def red(im: torch.Tensor) -> torch.Tensor:  # mean red of the inner square, pixel units
        return 255 * (im[:, :1] * mask).sum((1, 2, 3)) / mask.sum((1, 2, 3))

    z = torch.cat([net.encode(x[i:i + 64]) for i in range(0, n, 64)])
    x_T = torch.cat([net.encode_stochastic(x[i:i + 64], z[i:i + 64], diffusion, 20) for i in range(0, n, 64)])
    recon = torch.cat([net.decode(x_T[i:i + 64], z[i:i + 64], diffusion, 20) for i in range(0, n, 64)])
    swapped = torch.cat([net.decode(x_T[i:i + 64], z.roll(1, 0)[i:i + 64], diffusion, 20) for i in range(0, n, 64)])
    moved, between = (red(swapped) - red(x)).abs().mean(), (red(x).roll(1, 0) - red(x)).abs().mean()
    return {"recon": "DDIM-20 inversion + DDIM-20 decoding", "recon_pixel_mae": float((recon - x).abs().mean()),
            "recon_inner_red_mae_255": float((red(recon) - red(x)).abs().mean()), "recon_images": n,
            "swap_inner_red_moved_255": float(moved), "swap_inner_red_between_255": float(between),
            "swap_red_control": float(moved / between)}


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


def run_job(name: str, skip_fit: bool = False, overrides: list[str] | None = None) -> dict:
    config, out, kind = JOBS[name]
    with open(os.path.join(ROOT, config)) as f:
        cfg = yaml.safe_load(f)
    ckpt_dir = next(cb["init_args"]["dirpath"] for cb in cfg["trainer"]["callbacks"]
                    if cb["class_path"].endswith("ModelCheckpoint"))
    best = os.path.join(ckpt_dir, "best.ckpt")
    overrides = [f"--{o.removeprefix('--')}" for o in overrides or []]
    fit_args = ["fit", "-c", config, "--trainer.enable_progress_bar=false", *overrides]
    warm = next((o.split("=", 1)[1] for o in overrides if o.startswith("--model.init_args.init_weights=")), None)
    lineage = None
    if warm is not None and os.path.abspath(warm) == os.path.abspath(os.path.join(ROOT, out)):
        # the recorded command would warm-start from the file it is about to replace: rerun, it continues the
        # new file, not the one this run continued (issue 13: an 8000-step model instead of the shipped one)
        raise SystemExit(f"train_shipped.py: init_weights={warm} is the file this job writes; copy it first "
                         f"(e.g. `mkdir -p outputs/warm && cp {out} outputs/warm/`) and warm-start from the copy")
    if warm is not None:  # a continued run: record what it continued from
        previous = load_manifest().get("files", {}).get(os.path.basename(out), {})
        lineage = {"init_weights": warm, "sha256": sha256(warm),
                   "total_steps_before": previous.get("total_steps", previous.get("max_steps"))}
    train_s = None
    if not skip_fit:
        for stale in (best, os.path.join(ckpt_dir, "last.ckpt")):  # ModelCheckpoint would version, not replace
            if os.path.exists(stale):
                os.remove(stale)
        start = time.time()
        cflight_main(fit_args)
        train_s = round(time.time() - start, 1)
    info = export_checkpoint(best, out, {"config": config})
    if name == "gan":
        metrics = evaluate_gan(out)
    elif name == "robust":
        metrics = evaluate_robust(out, cfg)
    elif name == "ddpm":
        metrics = evaluate_ddpm(out)
    elif kind == "regressor":
        metrics = evaluate_regressor(out, cfg)
    elif name == "squares_ddpm":
        metrics = evaluate_squares_ddpm(out)
    elif name == "squares_diffae":
        metrics = evaluate_squares_diffae(out)
    else:
        metrics = evaluate(out, kind)
    export_checkpoint(best, out, {"config": config, **metrics})  # again, with the measured metric
    if name == "robust":  # ship the calibrated model: TemperatureWrapper(net, T) loads as a classifier
        net = load_net(out, expected_kind="classifier")
        wrapped = export_calibrated(net, info["net"], info["net_kwargs"], metrics["temperature"], out,
                                    {"config": config, **metrics})
        load_net(out, expected_kind="classifier")  # the wrapped file must load
        info = {**info, "net": "temperature", "net_kwargs": wrapped,
                "num_params": sum(v.numel() for v in net.state_dict().values()) + 1}  # + T
    steps = next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("--trainer.max_steps=")),
                 cfg["trainer"].get("max_steps", -1))
    entry = {
        "sha256": sha256(out),
        "bytes": os.path.getsize(out),
        "command": " ".join([f".venv/bin/python scripts/train_shipped.py {name}",
                             *(f"--set {o.removeprefix('--')}" for o in overrides)]),
        "equivalent_to": f"cflight {' '.join(fit_args)}; export_checkpoint('{best}', '{out}')",
        "config": config,
        "net": info["net"],
        "net_kwargs": info["net_kwargs"],
        "kind": info["kind"],
        "num_params": info["num_params"],
        "epochs": cfg["trainer"]["max_epochs"],
        "max_steps": steps,
        **({"warm_start": lineage, "total_steps": (lineage["total_steps_before"] or 0) + steps} if lineage else {}),
        "train_seconds": train_s,
        "torch_threads": torch.get_num_threads(),
        "metrics": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()},
    }
    print(f"{out}: {entry['metrics']}", flush=True)
    return entry


def load_manifest(path: str = "checkpoints/manifest.yaml") -> dict:
    """The whole manifest (empty if there is none yet)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return yaml.safe_load(f) or {}


def update_manifest(entries: dict[str, dict], path: str = "checkpoints/manifest.yaml") -> None:
    manifest = load_manifest(path)
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
    parser.add_argument("--skip-fit", action="store_true", help="export and evaluate the existing best.ckpt")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a cflight fit override, e.g. trainer.max_steps=6000 or "
                             "model.init_args.init_weights=outputs/warm/mnist_ddpm.pt (continue training from a copy)")
    args = parser.parse_args()
    os.chdir(ROOT)
    torch.set_num_threads(args.threads)
    os.makedirs("checkpoints", exist_ok=True)
    for name in JOBS if args.job == "all" else [args.job]:
        update_manifest({os.path.basename(JOBS[name][1]): run_job(name, args.skip_fit, args.set)})


if __name__ == "__main__":
    main()
