"""Batch-size scaling: images/s and peak memory of each method as its batch grows (issue 13, item 4).

Every (method, batch size) runs in a fresh child process, so its peak memory is its own: the child loads the
shipped networks and the images, records its resident memory (RSS) before the method's first call, explains
``--n`` MNIST test images (toward the second most likely class, p > 0.5) in batches of the given size, and
reports wall time, images/s, counted network evaluations per image
(:class:`~cflight.metrics.cost.EvaluationCounter`: forward and backward of every network) and the peak RSS
above that baseline (Linux ``VmHWM``, reset before the method runs; on a GPU ``torch.cuda.max_memory_allocated``).
The same ``--n`` images for every batch size, so images/s compare like with like (a last short batch included).

Methods, at their shipped configs' settings: ``latent_attack`` (VAE latent, lr 0.1, ≤ 1000 steps),
``svce`` (l1.5 ε 6, 75 AFW steps, robust model), ``pgd_l2`` (ε 3, 20 steps), ``dvce`` (robust model guiding,
100-step respacing from step 50: 50 reverse steps; fewer images, it is ~100× slower per image).

    .venv/bin/python benchmarks/batch_scaling.py                    # all four methods, batch 1 … 256
    .venv/bin/python benchmarks/batch_scaling.py --methods pgd_l2 --batches 1 16 --n 32

Writes ``benchmarks/results/batch_scaling.json`` and ``batch_scaling.png`` (images/s and peak MB vs batch).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.provenance import provenance  # noqa: E402

BATCHES = (1, 4, 16, 64, 256)
IMAGES = {"latent_attack": 256, "svce": 256, "pgd_l2": 256, "dvce": 16}  # images per measurement


def build(name: str):
    """``(method, explained model)`` of one benchmark setting, from the shipped files."""
    from cflight.methods import DVCE, PGD, LatentAttack, SparseAFW
    from cflight.models.registry import load_net

    if name == "latent_attack":
        return (LatentAttack(load_net("checkpoints/mnist_vae.pt", "generator"), lr=0.1, max_steps=1000, seed=0),
                load_net("checkpoints/mnist_classifier.pt", "classifier"))
    robust = load_net("checkpoints/mnist_robust.pt", "classifier")
    if name == "svce":
        return SparseAFW(eps=6.0, p=1.5, steps=75, step_rule="v1", restarts=1, seed=0), robust
    if name == "pgd_l2":
        return PGD(eps=3.0, norm="l2", steps=20), load_net("checkpoints/mnist_classifier.pt", "classifier")
    if name == "dvce":
        return (DVCE("checkpoints/mnist_ddpm.pt", robust_model=None, timestep_respacing="100", skip_timesteps=50,
                     classifier_lambda=0.2, distance_lambda=0.15, seed=1), robust)
    raise SystemExit(f"unknown method {name!r}; choose from {', '.join(IMAGES)}")


def _rss_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> bool:
    try:  # Linux ≥ 4.0: writing 5 resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(name: str, batch: int, n: int) -> dict:
    """One measurement (run in its own process by :func:`main`)."""
    from cflight.data import MNISTDataModule
    from cflight.metrics.cost import EvaluationCounter, find_networks
    from cflight.types import ClassTarget

    torch.manual_seed(0)
    method, model = build(name)
    model = model.eval().requires_grad_(False)
    dm = MNISTDataModule(root="data", batch_size=n, predict_limit=n, morphometrics=False)
    dm.setup("predict")
    x = next(iter(dm.predict_dataloader()))["image"]
    with torch.no_grad():
        target = ClassTarget(model(x).topk(2, dim=1).indices[:, 1], 0.5)
    nets = {"model": model, **find_networks(method)}
    counter = EvaluationCounter(nets)
    method(x[:1], target.select(torch.arange(1)), model, index=torch.arange(1))  # warm-up (lazy init)
    baseline = _rss_mb("VmRSS")
    resettable = _reset_peak_rss()
    success, start = 0, time.perf_counter()
    with counter:
        for lo in range(0, n, batch):
            rows = torch.arange(lo, min(lo + batch, n))
            out = method(x[rows], target.select(rows), model, index=rows)
            success += int(out.success.sum())
    seconds = time.perf_counter() - start
    cost = counter.summary(num_images=n)
    return {"method": name, "batch": batch, "n": n, "seconds": round(seconds, 3),
            "images_per_s": round(n / seconds, 3), "validity": success / n,
            "evaluations_per_image": cost.get("evaluations_per_image", cost),
            "peak_rss_above_baseline_mb": round(_rss_mb("VmHWM") - baseline, 1) if resettable else None,
            "baseline_rss_mb": round(baseline, 1),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2)}  # other jobs on the machine move the times


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(IMAGES))
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    ap.add_argument("--n", type=int, default=None, help="images per measurement (default: per method)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "batch_scaling.json"))
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "BATCH", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), int(args.child[2]))))
        return {}
    runs = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for name in args.methods:
        n = args.n or IMAGES[name]
        for batch in args.batches:
            if batch > n:
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads),
                   "--child", name, str(batch), str(n)]
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{name} batch {batch}: {proc.stderr[-1500:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = runs[-1]
            print(f"{name:14s} batch {batch:4d}: {r['images_per_s']:8.2f} images/s, "
                  f"peak +{r['peak_rss_above_baseline_mb']} MB", flush=True)
    result = {"benchmark": "batch_scaling", **provenance(__file__, argv),
              "memory": "peak resident memory (VmHWM, reset before the method's calls) above the RSS before them",
              "runs": runs}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    if runs:
        plot(runs, os.path.splitext(args.out)[0] + ".png")
    return result


def plot(runs: list[dict], path: str) -> str:
    """Images/s (left) and peak MB above baseline (right) against batch size, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == name]
        a.plot([r["batch"] for r in rs], [r["images_per_s"] for r in rs], marker="o", label=name)
        mem = [(r["batch"], r["peak_rss_above_baseline_mb"]) for r in rs if r["peak_rss_above_baseline_mb"] is not None]
        if mem:
            b.plot(*zip(*mem), marker="o", label=name)
    for ax, ylabel in ((a, "images / s"), (b, "peak memory above baseline (MB)")):
        ax.set(xscale="log", xlabel="batch size", ylabel=ylabel)
        # memory can be 0 MB above the baseline (nothing new allocated): linear below 1 MB, log above
        ax.set_yscale("log" if ax is a else "symlog", **({} if ax is a else {"linthresh": 1.0}))
        if ax is b:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Batch-size scaling on the CPU (1 thread)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
