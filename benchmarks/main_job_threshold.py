"""Which stopping threshold τ makes the main job's counterfactuals ones an independent model believes?

Runs the README's main job (``configs/explain/latent_attack_mnist.yaml``: Counterfactual Attacks through the
shipped VAE's latent on 256 MNIST test images, toward each image's second most likely class) through the
``cflight predict`` CLI at several τ and method seeds, each into a fresh directory, and records per run the
explained model's validity, the oracle validity (``checkpoints/mnist_oracle.pt``, trained with another seed
and width: its predicted class is the target), median steps, distances and seconds. The paper's τ = 0.5 is one
of the settings; the config's default is the one this benchmark supports.

    .venv/bin/python benchmarks/main_job_threshold.py                       # τ 0.5 0.9 0.99 0.999 × seeds 0 1 2
    .venv/bin/python benchmarks/main_job_threshold.py --thresholds 0.999 0.9999 --seeds 0

Writes ``benchmarks/results/main_job_threshold.json``. Seconds are wall time of each job on this machine,
including its start-up; they vary with the machine's load (recorded under ``machine``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.provenance import ROOT, provenance  # noqa: E402

CONFIG = "configs/explain/latent_attack_mnist.yaml"
KEYS = ("n", "validity", "oracle_validity", "median_steps", "mean_l1", "mean_l2", "seconds")


def run_job(threshold: float, seed: int, out_dir: str, limit: int | None = None) -> dict:
    """One main job at ``threshold`` and method ``seed`` into ``out_dir``; its metrics.json figures."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "cflight.cli", "predict", "-c", CONFIG,
           f"--model.init_args.target_policy.init_args.threshold={threshold}",
           f"--model.init_args.method.init_args.seed={seed}",
           f"--trainer.callbacks.init_args.output_dir={out_dir}", f"--trainer.logger.init_args.save_dir={out_dir}",
           "--trainer.enable_progress_bar=false"]
    if limit is not None:
        cmd += [f"--data.init_args.predict_limit={limit}", f"--data.init_args.batch_size={limit}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    metrics = json.load(open(os.path.join(out_dir, "metrics.json")))
    return {k: metrics[k] for k in KEYS if k in metrics}


def spread(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.9, 0.99, 0.999])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--limit", type=int, default=None, help="images per job (default: the config's 256)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "main_job_threshold.json"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tau in args.thresholds:
            runs = [run_job(tau, s, os.path.join(tmp, f"t{tau}_s{s}"), args.limit) for s in args.seeds]
            rows.append({"threshold": tau, "runs": [{"seed": s, **r} for s, r in zip(args.seeds, runs)],
                         **{k: spread(runs, k) for k in ("validity", "oracle_validity", "median_steps", "mean_l1",
                                                          "seconds")}})
            print(f"τ={tau}: validity {rows[-1]['validity']['mean']:.3f}, oracle validity "
                  f"{rows[-1]['oracle_validity']['mean']:.3f} [{rows[-1]['oracle_validity']['min']:.3f}, "
                  f"{rows[-1]['oracle_validity']['max']:.3f}]", flush=True)
    result = {"benchmark": "main_job_threshold", "config": CONFIG,
              "note": "oracle_validity: the oracle's predicted class is the target (its decision, not τ); "
                      "the config's default τ was chosen from this sweep (seeds 0, 1, 2 of the method)",
              "rows": rows, **provenance(__file__, argv)}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
