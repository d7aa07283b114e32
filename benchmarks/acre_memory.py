"""Memory of AC-RE's differentiated chain R_τ with and without gradient checkpointing (``checkpoint_chain``).

One PGD gradient ``∇_{x'} (f(R_τ(x')) − ỹ)²`` of :class:`cflight.methods.ACRE` — τ UNet calls kept in the graph
— on a small UNet (``--size``² RGB, ``--channels`` base channels, mult (1, 2, 2), 2 res blocks, attention at
8², learned Σ), batch ``--batch``, τ = 5 (respacing 25, fraction 0.2: the paper's CelebA-HQ setting). Each
setting runs in its own process so one does not inherit the other's allocator state. Recorded per setting:

* ``graph_saved_mb``: bytes of the tensors autograd holds for the backward after the forward (counted with
  ``torch.autograd.graph.saved_tensors_hooks``, each storage once) — exact and machine independent;
* ``rss_increase_mb`` (CPU): growth of the process's peak RSS (VmHWM reset just before, Linux) over the RSS
  before the gradient;
* ``cuda_peak_increase_mb`` (``--device cuda``): ``max_memory_allocated`` growth over the allocation before;
* ``seconds``: median wall time of one gradient (checkpointing recomputes each UNet forward once);
* ``grad_abs_sum``: to see that both settings give the same gradient.

Written to ``benchmarks/results/acre_memory.json`` (``acre_memory_cuda.json`` on a GPU) with the command, the
git commit and the machine.

    .venv/bin/python benchmarks/acre_memory.py [--size 32] [--channels 64] [--batch 8] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.memory_probe import reset_peak, status_mb  # noqa: E402
from cflight.methods import ACRE  # noqa: E402
from cflight.models.acceleration import Acceleration  # noqa: E402
from cflight.models.generative.unet import UNet  # noqa: E402
from cflight.types import RegressionTarget  # noqa: E402


def measure(args: argparse.Namespace, checkpoint: bool) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = UNet(3, args.size, args.channels, (1, 2, 2), 2, (8,), 32, learn_sigma=True).to(device).eval()
    m = ACRE(net, timestep_respacing="25", sampling_time_fraction=0.2,
             acceleration=Acceleration(checkpoint_chain=checkpoint)).to(device)
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * args.size**2, 1)).to(device).requires_grad_(False)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    index = torch.arange(args.batch, device=device)
    target = RegressionTarget(torch.full((args.batch,), 0.5, device=device))

    def gradient() -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        loss = m.loss(f(m.chain(xg, index, 0)), target, x, xg).sum()
        return torch.autograd.grad(loss, xg)[0]

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # the first gradient of a fresh process: freed memory is not yet cached by the allocator, so the peak
    # growth is this gradient's own
    rss_before = status_mb("VmRSS")
    reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        alloc_before = torch.cuda.memory_allocated()
    g = gradient()
    sync()
    peak = status_mb("VmHWM")
    result = {"checkpoint_chain": checkpoint, "grad_abs_sum": float(g.abs().sum())}
    if device.type == "cpu" and peak is not None and rss_before is not None:
        result["rss_increase_mb"] = round(peak - rss_before, 1)
    if device.type == "cuda":
        result["cuda_peak_increase_mb"] = round((torch.cuda.max_memory_allocated() - alloc_before) / 2**20, 1)

    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.device.type)
        seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        xg = x.clone().requires_grad_(True)
        out = m.chain(xg, index, 0)
    result["graph_saved_mb"] = round(sum(seen.values()) / 2**20, 2)
    del out, xg
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        gradient()
        sync()
        times.append(time.perf_counter() - t0)
    result["seconds"] = round(statistics.median(times), 4)
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", choices=["on", "off"], default=None, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.child:
        result = measure(args, args.child == "on")
        print(json.dumps(result))
        return result
    runs = {}
    for setting in ("off", "on"):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", setting] + argv
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ROOT})
        runs[setting] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(setting, runs[setting], flush=True)
    off, on = runs["off"], runs["on"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "cflight", "benchmarks"],
                                cwd=ROOT, capture_output=True, text=True).stdout.strip())
    ratios = {"graph_saved_off_over_on": round(off["graph_saved_mb"] / max(on["graph_saved_mb"], 1e-9), 2),
              "seconds_on_over_off": round(on["seconds"] / off["seconds"], 2)}
    for key in ("rss_increase_mb", "cuda_peak_increase_mb"):
        if key in off and key in on and on[key] > 0:
            ratios[key.replace("_mb", "") + "_off_over_on"] = round(off[key] / on[key], 2)
    report = {
        "benchmark": "acre_memory",
        "command": " ".join(["python benchmarks/acre_memory.py", *argv]),
        "commit": commit + ("+uncommitted" if dirty else ""),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "device": args.device,
                    "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
        "setting": {"unet": f"{args.size}x{args.size} RGB, {args.channels} ch, mult (1,2,2), 2 res blocks, attn 8, "
                            "learn_sigma", "batch": args.batch, "tau": 5, "what": "one PGD gradient through R_tau"},
        "off": off, "on": on, "ratios": ratios,
        "note": ("graph_saved_mb counts what autograd keeps after the forward; rss_increase_mb is the peak RSS growth "
                 "of one gradient on the CPU (allocator-dependent); CUDA figures need --device cuda on a GPU"),
    }
    default = "acre_memory_cuda.json" if args.device.startswith("cuda") else "acre_memory.json"
    out = args.out or os.path.join(ROOT, "benchmarks", "results", default)
    with open(out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(ratios))
    return report


if __name__ == "__main__":
    main()
