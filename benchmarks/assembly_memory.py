"""Peak resident memory of assembling an explanation job's outputs, for jobs of growing size.

For each size, synthetic 64² RGB records (original and counterfactual images, logits of 10 classes, the
scalar columns, 6 descriptors) are written as shards of 256 by the project's own shard writer, then a fresh
Python process assembles them exactly as rank 0 of a job does (:meth:`CounterfactualWriter.reduce` with FID
features and standardised descriptor attributions, then :meth:`CounterfactualWriter.assemble`: results.csv,
metrics.json, global attribution, gallery) and reports its peak resident set size (``ru_maxrss``). A process
that only imports cflight and builds the writer is measured the same way, as the baseline. Streaming assembly
keeps the peak independent of the number of records (the issue's bound: the 20 000-record job may use at
most 1.5× the 2 000-record one).

    .venv/bin/python benchmarks/assembly_memory.py [--sizes 2000 20000] [--workdir /tmp/cflight-assembly]

Writes ``benchmarks/results/assembly_memory.json`` (command, git commit, machine, per-size peak and time).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.memory_probe import reset_peak, status_mb  # noqa: E402
SIZE, CLASSES, K, SHARD = 64, 10, 6, 256
NAMES = [f"d{k}" for k in range(K)]


def _feature_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def write_records(shard_dir: str, n: int) -> None:
    from cflight.lit.shards import shard_name, write_shard

    os.makedirs(shard_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for start in range(0, n, SHARD):
        b = min(SHARD, n - start)
        index = torch.arange(start, start + b)
        image = torch.rand(b, 3, SIZE, SIZE, generator=gen)
        rows = {
            "index": index, "image": image, "x_cf": (image + 0.1 * torch.randn(b, 3, SIZE, SIZE, generator=gen)).clamp(0, 1),
            "logits": torch.randn(b, CLASSES, generator=gen), "logits_cf": torch.randn(b, CLASSES, generator=gen),
            "target_class": torch.randint(CLASSES, (b,), generator=gen), "threshold": torch.full((b,), 0.5),
            "direction": torch.ones(b, dtype=torch.long), "label": torch.randint(CLASSES, (b,), generator=gen),
            "success": torch.rand(b, generator=gen) > 0.2, "valid": torch.rand(b, generator=gen) > 0.2,
            "steps": torch.randint(1, 200, (b,), generator=gen), "l1": torch.rand(b, generator=gen) * 100,
            "l2": torch.rand(b, generator=gen) * 10, "descriptors_before": torch.randn(b, K, generator=gen),
            "descriptor_delta": torch.randn(b, K, generator=gen),
        }
        write_shard(os.path.join(shard_dir, shard_name(index)), rows, "synthetic")


def assemble(out_dir: str, baseline: bool) -> dict:
    """Run in a fresh process: assemble ``out_dir`` like rank 0 of a 1-process job; report peak RSS."""
    from cflight.lit import CounterfactualWriter
    from cflight.lit.assembly import make_plan

    writer = CounterfactualWriter(out_dir, gallery_size=16, fid_feature_net=_feature_net())
    before_mb = _mb(status_mb("VmRSS"))
    reset_peak()
    t0 = time.perf_counter()
    if not baseline:
        module = SimpleNamespace(method_names=[], descriptor_names=NAMES, class_names=None,
                                 standardize_descriptors=True)
        plan = make_plan(writer.job.infos())
        reduced = writer.reduce(plan, module, 0, 1, torch.device("cpu"))
        metrics = writer.assemble(plan, reduced, module, seconds=0.0, computed=0)
        assert metrics["n"] == plan.n_rows
    seconds = time.perf_counter() - t0
    peak_mb = _mb(status_mb("VmHWM"))  # since the reset: the peak of the assembly itself
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_assembly_mb": before_mb, "peak_rss_during_assembly_mb": peak_mb,
            "assembly_increase_mb": round(peak_mb - before_mb, 1) if peak_mb and before_mb else None,
            "seconds": round(seconds, 2)}


def _child(out_dir: str, baseline: bool) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--assemble", out_dir] + (["--baseline"] if baseline else [])
    env = {**os.environ, "PYTHONPATH": ROOT, "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mb(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _ratio(results: list[dict], key: str) -> float | None:
    a, b = results[0].get(key), results[-1].get(key)
    return round(b / a, 3) if a and b else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--workdir", default=None, help="where the synthetic shards go (default: a temp dir, removed)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "assembly_memory.json"))
    ap.add_argument("--assemble", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.assemble:
        print(json.dumps(assemble(args.assemble, args.baseline)))
        return
    work = args.workdir or tempfile.mkdtemp(prefix="cflight-assembly-")
    results = []
    try:
        for n in args.sizes:
            out = os.path.join(work, f"job-{n}")
            shutil.rmtree(out, ignore_errors=True)
            write_records(os.path.join(out, "shards"), n)
            shard_mb = sum(os.path.getsize(os.path.join(out, "shards", f)) for f in os.listdir(os.path.join(out, "shards")))
            run = _child(out, baseline=False)
            results.append({"records": n, "shards_mb": round(shard_mb / 2**20, 1),
                            "records_in_memory_float32_mb": round(n * 2 * 3 * SIZE * SIZE * 4 / 2**20, 1), **run})
            print(results[-1], flush=True)
        baseline = _child(os.path.join(work, "baseline"), baseline=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "cflight", "benchmarks"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    report = {
        "benchmark": "assembly_memory",
        "command": "python benchmarks/assembly_memory.py " + " ".join(sys.argv[1:]),
        "commit": commit + ("+uncommitted" if dirty else ""),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "threads": 1},
        "record": f"64x64 RGB original + counterfactual (uint8 in shards), {CLASSES} logits, {K} descriptors",
        "baseline": {"what": "import cflight + build the writer, no assembly", **baseline},
        "results": results,
        "ratio_largest_to_smallest": round(results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"], 3),
        "ratio_largest_to_smallest_during_assembly": _ratio(results, "peak_rss_during_assembly_mb"),
        "bound": "the largest job may use at most 1.5x the smallest's peak",
        "note": ("peak_rss_mb is the whole process (ru_maxrss, imports of torch/lightning included); "
                 "peak_rss_during_assembly_mb is VmHWM after resetting it just before the assembly (Linux "
                 "clear_refs), assembly_increase_mb its growth over the RSS before; records_in_memory_float32_mb "
                 "is what holding every record's two images in memory would take"),
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: report[k] for k in ("results", "ratio_largest_to_smallest")}, indent=2))


if __name__ == "__main__":
    main()
