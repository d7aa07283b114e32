"""Throughput and peak GPU memory of the generative-network speed options, for LatentAttack and DVCE.

Each option of :class:`cflight.models.acceleration.Acceleration` alone and combined (bf16, fp16,
channels_last, torch.compile, gradient checkpointing) at a few batch sizes, on the shipped MNIST checkpoints:

* LatentAttack: ``checkpoints/mnist_vae.pt`` explaining ``checkpoints/mnist_classifier.pt`` (the
  ``configs/explain/latent_attack_mnist.yaml`` settings, lr 0.1, τ 0.5, ``--latent-steps`` at most). Samples
  stop when they reach the target, so the work per image can change with the precision: ``sample_steps_per_s``
  (Adam steps of all samples per second) is reported beside ``images_per_s``.
* DVCE: ``checkpoints/mnist_ddpm.pt`` guided by ``checkpoints/mnist_robust.pt`` (as
  ``configs/explain/dvce_mnist.yaml``: 100 respaced steps, late start 50, λ_c 0.2): 50 reverse steps per image.

Targets: each image's second most likely class at p > 0.5. Inputs: MNIST test images when available offline,
else uniform noise (noted in the output). Per (method, option, batch size): the first call (``first_call_s``,
compile time included) is not timed; then ``--repeats`` timed calls, the fastest kept. Peak memory is
``torch.cuda.max_memory_allocated`` during a timed call, above what was allocated before it
(``peak_mem_mib``), and in total (``peak_mem_total_mib``). Quality against fp32 at the same batch size:
``max_abs_diff_vs_fp32`` / ``mean_abs_diff_vs_fp32`` of the counterfactuals, ``success_rate``.

Writes ``benchmarks/results/gpu_options.json`` (the exact command, git commit, machine, settings, rows),
rewritten after each measured option so a run cut short keeps what it measured (``complete: false``). Needs a
CUDA GPU: without one it says so in one line and writes nothing. ``--device cpu --smoke`` checks the script
with tiny settings (compile with the ``eager`` backend) and writes only where ``--out`` says (do not commit it).

    python benchmarks/gpu_options.py [--methods latent_attack dvce] [--options fp32 bf16 ...]
                                     [--batch-sizes 64 256 1024] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.provenance import provenance  # noqa: E402
from cflight.methods import DVCE, LatentAttack  # noqa: E402
from cflight.models.acceleration import Acceleration
from cflight.models.registry import load_net  # noqa: E402
from cflight.types import ClassTarget  # noqa: E402

OPTIONS: dict[str, dict] = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "16"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "checkpoint": {"checkpoint_chain": True},
    "bf16+channels_last+compile": {"precision": "bf16", "channels_last": True, "compile": True},
    "all": {"precision": "bf16", "channels_last": True, "compile": True, "checkpoint_chain": True},
}
OUT = "benchmarks/results/gpu_options.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["latent_attack", "dvce"],
                    choices=["latent_attack", "dvce"])
    ap.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latent-steps", type=int, default=1000, help="LatentAttack max_steps")
    ap.add_argument("--dvce-respacing", default="100")
    ap.add_argument("--dvce-skip", type=int, default=50)
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny settings to check the script (any device)")
    ap.add_argument("--out", default=None, help=f"result file (default {OUT}; none with --smoke)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch_sizes, args.repeats, args.latent_steps = [2], 1, 3
        args.dvce_respacing, args.dvce_skip, args.compile_backend = "100", 98, "eager"
    elif args.out is None:
        args.out = OUT
    return args


def load_images(n: int) -> tuple[torch.Tensor, str]:
    try:
        from cflight.data import MNISTDataModule

        dm = MNISTDataModule(root="data", batch_size=n, predict_limit=n, morphometrics=False)
        dm.setup("predict")
        x = next(iter(dm.predict_dataloader()))["image"]
        if x.shape[0] == n:
            return x, "MNIST test images"
    except (FileNotFoundError, ValueError, OSError, RuntimeError):
        pass
    noise = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return noise, "uniform noise (no offline MNIST)"


def build(method: str, options: Acceleration, args: argparse.Namespace) -> tuple[torch.nn.Module, ...]:
    """``(method, explained model)`` on the shipped checkpoints, on the CPU."""
    if method == "latent_attack":
        return (LatentAttack("checkpoints/mnist_vae.pt", lr=0.1, max_steps=args.latent_steps,
                             acceleration=options),
                load_net("checkpoints/mnist_classifier.pt", "classifier"))
    return (DVCE("checkpoints/mnist_ddpm.pt", None, timestep_respacing=args.dvce_respacing,
                 skip_timesteps=args.dvce_skip, classifier_lambda=0.2, distance_lambda=0.15,
                 acceleration=options),
            load_net("checkpoints/mnist_robust.pt", "classifier"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method, model, x, index, repeats: int, device: torch.device) -> tuple[dict, object]:
    """Untimed first call, then the fastest of ``repeats`` timed calls and its peak memory."""
    with torch.no_grad():
        pred = model(x)
    target = ClassTarget(pred.argsort(1, descending=True)[:, 1], 0.5)  # the second most likely class
    sync(device)
    t0 = time.perf_counter()
    out = method(x, target, model, index=index, pred=pred)
    sync(device)
    first = time.perf_counter() - t0
    times, peaks, totals = [], [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            resting = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        out = method(x, target, model, index=index, pred=pred)
        sync(device)
        times.append(time.perf_counter() - t0)
        if device.type == "cuda":
            totals.append(torch.cuda.max_memory_allocated(device))
            peaks.append(totals[-1] - resting)
    best = min(times)
    n = x.shape[0]
    row = {"seconds": round(best, 4), "first_call_s": round(first, 3), "images_per_s": round(n / best, 2),
           "sample_steps_per_s": round(float(out.steps.sum()) / best, 1),
           "mean_steps": float(out.steps.float().mean()), "success_rate": float(out.success.float().mean()),
           "all_seconds": [round(t, 4) for t in times]}
    if peaks:
        row["peak_mem_mib"] = round(max(peaks) / 2**20, 1)
        row["peak_mem_total_mib"] = round(max(totals) / 2**20, 1)
    return row, out


def write(result: dict, path: str | None) -> None:
    if path is None:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_options.py needs a CUDA GPU (none found; nothing written). "
                         "Check the script with --device cpu --smoke.")
    images, source = load_images(max(args.batch_sizes))
    names = ["fp32", *[o for o in args.options if o != "fp32"]]  # fp32 always, first: the reference
    result = {
        **provenance(__file__, argv, device), "inputs": source, "complete": False,
        "settings": {"batch_sizes": args.batch_sizes, "repeats": args.repeats,
                     "latent_steps": args.latent_steps,
                     "dvce_respacing": args.dvce_respacing, "dvce_skip": args.dvce_skip,
                     "compile_backend": args.compile_backend, "smoke": args.smoke,
                     # fp32 convolutions may use TF32 on NVIDIA GPUs (PyTorch's default for cuDNN)
                     "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                     "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32},
        "options": {name: asdict(Acceleration(**OPTIONS[name], compile_backend=args.compile_backend))
                    for name in names},
        "rows": [],
    }
    for name in args.methods:
        reference: dict[int, tuple[torch.Tensor, float]] = {}  # fp32 counterfactuals, seconds per batch size
        for option in names:
            torch._dynamo.reset()  # each option compiles afresh (and stays under dynamo's recompile limit)
            options = Acceleration(**OPTIONS[option], compile_backend=args.compile_backend)
            method, model = build(name, options, args)
            method, model = method.to(device), model.to(device).eval().requires_grad_(False)
            for bs in args.batch_sizes:
                x, index = images[:bs].to(device), torch.arange(bs, device=device)
                row, out = measure(method, model, x, index, args.repeats, device)
                x_cf = out.x_cf.float().cpu()
                if option == "fp32":
                    reference[bs] = (x_cf, row["seconds"])
                diff = (x_cf - reference[bs][0]).abs()
                row = {"method": name, "option": option, "batch_size": bs, **row,
                       "speedup_vs_fp32": round(reference[bs][1] / row["seconds"], 3),
                       "max_abs_diff_vs_fp32": float(diff.max()), "mean_abs_diff_vs_fp32": float(diff.mean())}
                result["rows"].append(row)
                print(json.dumps({k: row.get(k) for k in ("method", "option", "batch_size", "images_per_s",
                                                            "speedup_vs_fp32", "peak_mem_mib",
                                                            "max_abs_diff_vs_fp32")}), flush=True)
            write(result, args.out)
            del method, model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result["complete"] = True
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
