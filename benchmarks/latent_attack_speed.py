"""Batched LatentAttack vs the reference's one-image-at-a-time loop, and vs the cost floor.

Writes ``benchmarks/results/latent_attack_speed.json``:
  images_per_s_batched, images_per_s_loop, speedup_vs_loop, overhead_vs_floor
where overhead_vs_floor = batched wall time ÷ (loop iterations run × time of one decoder + classifier forward
and backward at the full batch). The loop is the reference notebook's: ``torch.optim.Adam`` on one latent,
probability checked before each update. Both start from the same latents.

    .venv/bin/python benchmarks/latent_attack_speed.py [--n 256] [--loop-n 32] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from cflight.data import MNISTDataModule
from cflight.methods import LatentAttack
from cflight.models.registry import load_net
from cflight.targets import SecondMostLikely


def reference_loop(gen, clf, z0, classes, threshold, lr, max_steps):
    """The reference notebook's attack, one image at a time (spec §1.3). Returns steps per image."""
    steps = []
    for b in range(z0.shape[0]):
        z = z0[b:b + 1].clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        k = 0
        for k in range(max_steps):
            p = torch.softmax(clf(gen.decode(z)), dim=1)[0, classes[b]]
            if p > threshold:
                break
            opt.zero_grad()
            (-p).backward()
            opt.step()
        else:
            k = max_steps
        steps.append(k)
    return steps


def floor_time(gen, clf, z, classes, reps):
    """Median seconds of one decoder + classifier forward and backward (w.r.t. z) at this batch size."""
    times = []
    for _ in range(reps + 2):
        zz = z.clone().requires_grad_(True)
        t0 = time.perf_counter()
        p = torch.softmax(clf(gen.decode(zz)), dim=1).gather(1, classes[:, None]).sum()
        torch.autograd.grad(p, zz)
        if z.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classifier", default="checkpoints/mnist_classifier.pt")
    ap.add_argument("--vae", default="checkpoints/mnist_vae.pt")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--loop-n", type=int, default=32, help="images timed in the one-at-a-time loop")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--max-steps", type=int, default=1000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/latent_attack_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    dm = MNISTDataModule(root="data", batch_size=args.n, predict_limit=args.n)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    x, index = batch["image"].to(dev), batch["index"].to(dev)
    clf = load_net(args.classifier, "classifier").to(dev).requires_grad_(False)
    gen = load_net(args.vae, "generator").to(dev).requires_grad_(False)
    with torch.no_grad():
        logits = clf(x)
    target, _ = SecondMostLikely(args.threshold)(logits, batch)
    method = LatentAttack(gen, lr=args.lr, max_steps=args.max_steps).to(dev)

    method(x[:8], target.select(torch.arange(8)), clf, index=index[:8])  # warm-up
    t0 = time.perf_counter()
    out = method(x, target, clf, index=index, pred=logits)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    batched = time.perf_counter() - t0
    iterations = int(out.steps.max()) + 1  # every loop iteration evaluates once; the last one only checks

    with torch.no_grad():
        z0 = method.initial_latent(x, index)
    floor = floor_time(gen, clf, z0, target.classes.to(dev), reps=10)

    m = min(args.loop_n, args.n)
    t0 = time.perf_counter()
    loop_steps = reference_loop(gen, clf, z0[:m], target.classes[:m].tolist(), args.threshold, args.lr, args.max_steps)
    loop = time.perf_counter() - t0

    result = {
        "n": args.n, "loop_n": m, "device": str(dev), "threads": args.threads, "platform": platform.processor() or platform.machine(),
        "lr": args.lr, "threshold": args.threshold, "max_steps": args.max_steps,
        "batched_seconds": round(batched, 4), "loop_seconds": round(loop, 4),
        "images_per_s_batched": round(args.n / batched, 3), "images_per_s_loop": round(m / loop, 3),
        "speedup_vs_loop": round((args.n / batched) / (m / loop), 3),
        "iterations": iterations, "floor_seconds_per_iteration": round(floor, 6),
        "overhead_vs_floor": round(batched / (iterations * floor), 4),
        "success_rate": float(out.success.float().mean()),
        "median_steps": float(out.steps.float().median()),
        "steps_agree_with_loop": float(sum(int(a) == b for a, b in zip(out.steps[:m].tolist(), loop_steps)) / m),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
