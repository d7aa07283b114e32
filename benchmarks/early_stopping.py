"""What per-sample early stopping (``early_stop=True``) saves for SVCE, DVCE, PGD and APGD on MNIST.

Each method runs with ``early_stop`` off (the reference: every sample runs every iteration) and on (a sample
is frozen at the first iterate that reaches its target, and later iterations evaluate only the others), on
the first ``--n`` MNIST test images (DVCE: ``--dvce-n``), each pushed to the explained model's second most
likely class at the config's threshold:

* ``SVCE``: ``configs/explain/svce_mnist.yaml`` (SparseAFW, l1.5 ε = 6, 75 AFW steps, robust CNN);
* ``DVCE``: ``configs/explain/dvce_mnist.yaml`` (shipped DDPM, 50 reverse steps, the robust CNN guides alone);
* ``PGD`` / ``APGD``: l2, the methods' default steps (PGD 20, APGD 75) and random start, on the shipped
  robust classifier (ε = ``--eps-robust`` 4, the spurious-detection benchmark's APGD-l2 radius) and the plain
  one (ε = ``--eps-plain`` 1.5: at 4 it flips within about one step), threshold 0.5.

Both runs of a seed use the same inputs and seed and alternate, so load from other jobs hits both alike.
Recorded per run: wall and process-CPU seconds; evaluations *counted* with forward hooks — rows through
the explained model's forward and rows of backward passes through its output (DVCE also the denoiser's) —
validity (fraction reaching the target, judged on the returned image), mean distances to the original
(l1, l2, the method's own norm; over all images and over the valid ones), the mean iterations used. The
summary gives, per method, the mean over seeds with the spread (min, max) and the ratios on/off. Written
to ``benchmarks/results/early_stopping.json`` with the command, the git commit and the machine.

    .venv/bin/python benchmarks/early_stopping.py [--n 64] [--dvce-n 64] [--seeds 0 1 2] [--dvce-seeds 1 2]
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import yaml
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.provenance import provenance  # noqa: E402
from cflight.methods import APGD, PGD  # noqa: E402
from cflight.methods import functional as Fn  # noqa: E402
from cflight.models.registry import load_net  # noqa: E402
from cflight.targets import SecondMostLikely  # noqa: E402
from cflight.types import ClassTarget  # noqa: E402


class EvalCounter:
    """Rows a network evaluates: forward passes, and backward passes through its output (hooks)."""

    def __init__(self, net: nn.Module) -> None:
        self.forward = self.backward = 0
        net.register_forward_hook(self._forward)

    def _forward(self, module: nn.Module, args: Any, output: Tensor) -> None:
        self.forward += output.shape[0]
        if output.requires_grad:  # fires once per backward pass that reaches this output
            output.register_hook(self._backward)

    def _backward(self, grad: Tensor) -> None:
        self.backward += grad.shape[0]

    def reset(self) -> None:
        self.forward = self.backward = 0


def read_config(path: str) -> dict[str, Any]:
    """The explained model, the method's class and arguments and the target threshold of an explain YAML."""
    with open(path) as f:
        init = yaml.safe_load(f)["model"]["init_args"]
    module, _, name = init["method"]["class_path"].rpartition(".")
    return {"config": path, "model": init["model"], "cls": getattr(importlib.import_module(module), name),
            "init_args": dict(init["method"]["init_args"]),
            "threshold": init["target_policy"]["init_args"]["threshold"]}


def mnist_test(n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` MNIST test images ``[n, 1, 28, 28]`` and their dataset indices."""
    from cflight.data import MNISTDataModule

    dm = MNISTDataModule(root="data", batch_size=n, predict_limit=n, morphometrics=False)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    return batch["image"], batch["index"]


def distances(x: Tensor, x_cf: Tensor, p: float, valid: Tensor) -> dict[str, float]:
    d = x_cf - x
    out: dict[str, float] = {}
    for name, q in (("l1", 1.0), ("l2", 2.0), ("lp", p)):
        v = Fn.lp_norm(d, q)
        out[f"mean_{name}"] = float(v.mean())
        out[f"mean_{name}_valid"] = float(v[valid].mean()) if bool(valid.any()) else math.nan
    return out


def run_once(method: nn.Module, x: Tensor, index: Tensor, target: ClassTarget, model: nn.Module, pred: Tensor,
             counters: dict[str, EvalCounter], p: float) -> dict[str, Any]:
    for c in counters.values():
        c.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    out = method(x, target, model, index=index, pred=pred)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    valid = out.success
    rec = {"wall_s": wall, "cpu_s": cpu, "validity": float(valid.float().mean()),
           "mean_steps": float(out.steps.float().mean()), "max_steps": int(out.steps.max()),
           **distances(x, out.x_cf, p, valid)}
    for name, c in counters.items():
        rec[f"{name}_forward_rows"], rec[f"{name}_backward_rows"] = c.forward, c.backward
    return rec


def spread(values: list[float]) -> dict[str, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return {"mean": math.nan, "min": math.nan, "max": math.nan}
    return {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: mean (min, max) over seeds for off and on, and of the per-seed ratio on/off."""
    keys = [k for k in runs[0]["off"] if isinstance(runs[0]["off"][k], (int, float))]
    out: dict[str, Any] = {"off": {}, "on": {}, "ratio_on_off": {}}
    for k in keys:
        for mode in ("off", "on"):
            out[mode][k] = spread([float(r[mode][k]) for r in runs])
        if k.endswith(("_s", "_rows")) or k == "mean_steps":
            ratios = [r["on"][k] / r["off"][k] if r["off"][k] else math.nan for r in runs]
            out["ratio_on_off"][k] = spread(ratios)
    return out


def benchmark(label: str, make: Callable[[bool, int], nn.Module], model: nn.Module, x: Tensor, index: Tensor,
              threshold: float, seeds: list[int], counters: dict[str, EvalCounter], p: float,
              settings: dict[str, Any]) -> dict[str, Any]:
    with torch.no_grad():
        pred = model(x)
    target, _ = SecondMostLikely(threshold)(pred, {})
    warm = torch.arange(2)
    make(False, seeds[0])(x[warm], target.select(warm), model, index=index[warm], pred=pred[warm])  # warm-up
    runs = []
    for seed in seeds:
        rec = {"seed": seed}
        for mode in ("off", "on"):  # alternate: shared-machine load hits both alike
            rec[mode] = run_once(make(mode == "on", seed), x, index, target, model, pred, counters, p)
        runs.append(rec)
        off, on = rec["off"], rec["on"]
        print(f"{label} seed {seed}: wall {off['wall_s']:.2f}s -> {on['wall_s']:.2f}s, model forward rows "
              f"{off['model_forward_rows']} -> {on['model_forward_rows']}, validity {off['validity']:.3f} -> "
              f"{on['validity']:.3f}, mean l2 {off['mean_l2']:.3f} -> {on['mean_l2']:.3f}", flush=True)
    return {"settings": settings, "n_images": x.shape[0], "seeds": seeds, "runs": runs,
            "summary": summarise(runs)}


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """Per method: the savings (ratios on/off, mean over seeds with min, max) and quality off → on."""
    out = {}
    for name, res in results.items():
        s = res["summary"]
        net = "denoiser" if "denoiser_forward_rows" in s["off"] else "model"  # the dominant network
        out[name] = {
            "wall_ratio": s["ratio_on_off"]["wall_s"], "cpu_ratio": s["ratio_on_off"]["cpu_s"],
            f"{net}_forward_rows_ratio": s["ratio_on_off"][f"{net}_forward_rows"],
            f"{net}_backward_rows_ratio": s["ratio_on_off"][f"{net}_backward_rows"],
            "mean_steps": {m: s[m]["mean_steps"]["mean"] for m in ("off", "on")},
            "validity": {m: s[m]["validity"]["mean"] for m in ("off", "on")},
            "mean_l1": {m: s[m]["mean_l1"]["mean"] for m in ("off", "on")},
            "mean_l2": {m: s[m]["mean_l2"]["mean"] for m in ("off", "on")},
        }
    return out


def table(head: dict[str, Any]) -> str:
    """A markdown table of :func:`headline`."""
    rows = ["| method | wall on/off | fwd rows on/off | bwd rows on/off | steps off → on | validity off → on "
            "| mean l2 off → on |", "|---|---|---|---|---|---|---|"]
    for name, h in head.items():
        fwd = next(v for k, v in h.items() if k.endswith("forward_rows_ratio"))
        bwd = next(v for k, v in h.items() if k.endswith("backward_rows_ratio"))
        rows.append(f"| {name} | {h['wall_ratio']['mean']:.3f} ({h['wall_ratio']['min']:.3f}–"
                    f"{h['wall_ratio']['max']:.3f}) | {fwd['mean']:.3f} | {bwd['mean']:.3f} | "
                    f"{h['mean_steps']['off']:.1f} → {h['mean_steps']['on']:.1f} | "
                    f"{h['validity']['off']:.3f} → {h['validity']['on']:.3f} | "
                    f"{h['mean_l2']['off']:.3f} → {h['mean_l2']['on']:.3f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--svce-config", default="configs/explain/svce_mnist.yaml")
    ap.add_argument("--dvce-config", default="configs/explain/dvce_mnist.yaml")
    ap.add_argument("--robust", default="checkpoints/mnist_robust.pt")
    ap.add_argument("--plain", default="checkpoints/mnist_classifier.pt")
    ap.add_argument("--n", type=int, default=64, help="images for SVCE / PGD / APGD")
    ap.add_argument("--dvce-n", type=int, default=64, help="images for DVCE (the slow one)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dvce-seeds", type=int, nargs="+", default=[1, 2], help="DVCE's config seed is 1")
    ap.add_argument("--eps-robust", type=float, default=4.0, help="l2 radius of PGD / APGD, robust model")
    ap.add_argument("--eps-plain", type=float, default=1.5, help="l2 radius of PGD / APGD, plain model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", nargs="+", default=["SVCE", "PGD", "APGD", "DVCE"])
    ap.add_argument("--out", default="benchmarks/results/early_stopping.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    x_all, index_all = mnist_test(max(args.n, args.dvce_n))
    x, index = x_all[:args.n], index_all[:args.n]
    results: dict[str, Any] = {}

    if "SVCE" in args.methods:
        cfg = read_config(args.svce_config)
        model = load_net(cfg["model"]).eval().requires_grad_(False)
        counters = {"model": EvalCounter(model)}
        init = {k: v for k, v in cfg["init_args"].items() if k not in ("seed", "early_stop")}
        results["SVCE"] = benchmark(
            "SVCE", lambda es, seed: cfg["cls"](**init, seed=seed, early_stop=es), model, x, index,
            cfg["threshold"], args.seeds, counters, init.get("p", 1.5),
            {"config": cfg["config"], "model": cfg["model"], "method": cfg["cls"].__name__, **init})

    for cls, name in ((PGD, "PGD"), (APGD, "APGD")):
        if name not in args.methods:
            continue
        for kind, path, eps in (("robust", args.robust, args.eps_robust),
                                ("plain", args.plain, args.eps_plain)):
            model = load_net(path).eval().requires_grad_(False)
            counters = {"model": EvalCounter(model)}

            def make(es: bool, seed: int, cls: type = cls, eps: float = eps) -> nn.Module:
                return cls(eps=eps, norm="l2", seed=seed, early_stop=es)

            results[f"{name}_{kind}"] = benchmark(
                f"{name}_{kind}", make, model, x, index, 0.5, args.seeds, counters, 2.0,
                {"model": path, "method": name, "norm": "l2", "eps": eps,
                 "steps": cls(eps=1.0).steps, "threshold": 0.5, "target": "SecondMostLikely"})

    if "DVCE" in args.methods:
        cfg = read_config(args.dvce_config)
        model = load_net(cfg["model"]).eval().requires_grad_(False)
        denoiser = load_net(cfg["init_args"]["denoiser"], expected_kind="denoiser")
        counters = {"model": EvalCounter(model), "denoiser": EvalCounter(denoiser)}
        init = {k: v for k, v in cfg["init_args"].items() if k not in ("seed", "early_stop", "denoiser")}
        results["DVCE"] = benchmark(  # every run shares the loaded denoiser (and its counting hook)
            "DVCE", lambda es, seed: cfg["cls"](denoiser=denoiser, **init, seed=seed, early_stop=es), model,
            x_all[:args.dvce_n], index_all[:args.dvce_n], cfg["threshold"], args.dvce_seeds, counters,
            init.get("distance_p", 1.0),
            {"config": cfg["config"], "model": cfg["model"], "method": "DVCE",
             "denoiser": cfg["init_args"]["denoiser"], **init})

    report = {
        **provenance(__file__, argv),
        "total_wall_s": time.perf_counter() - t_start,
        "notes": ("off = reference (every sample runs every iteration); on = early_stop=True. *_rows: "
                  "rows through the network's forward / backward passes, counted by hooks. ratio_on_off < 1 "
                  "is the saving. DVCE 'on' adds one no-grad forward of the explained model per step and "
                  "active sample (the check on the clamped x̂0); its images are the x̂0 of the step that "
                  "reached, blurrier the earlier it stopped (no FID here)."),
        "headline": headline(results),
        "results": results,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(table(report["headline"]))
    print(f"wrote {args.out} in {report['total_wall_s']:.0f}s")
    return report


if __name__ == "__main__":
    main()
