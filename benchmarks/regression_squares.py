"""AC-RE and Diff-AE-RE on the squares "mirror" experiment with the shipped pieces (Ha & Bender 2025, spec
latent_and_regression §2.2–2.4, §2.7).

Each method is built from its explain config (``--acre-config``, ``--diffae-config``: the method, the
explained regressor, the oracle and the :class:`~cflight.targets.SquaresMirror` target as ``cflight predict``
runs them) and explains ``--n`` images of the 315-image mirror grids, half from ``grid_lower`` and half from
``grid_upper`` (evenly spaced indices, so every position, inner colour and background level occurs), each
toward its mirrored inner red (``ỹ = y ± 128/255``, δ from the config: 0.05). Recorded per method:

* ``n``; ``success`` (|f(x') − ỹ| ≤ δ on the returned image), ``mae`` (mean |f(x') − ỹ|), ``oracle_success``
  and ``oracle_mae`` (the same with the independently trained oracle g), ``background_mae`` (mean |x' − x|
  outside the inner square's mask, the paper's sparsity measure on Square), ``median_steps``;
* the ground truth of the change (spec §2.7 ``success_rate_latent``): ``inner_red_success`` / ``inner_red_mae``
  (the mean red inside the mask of x' against ỹ) and ``inner_red_change`` (mean |red(x') − red(x)|);
* cost: ``seconds_per_image`` (wall, inside the method) and ``evaluations_per_image`` — forward and backward
  passes (batch rows) of every network, counted by :class:`~cflight.metrics.cost.EvaluationCounter`;
* AC-RE also ``attack_success``: the reference's own flag (some attack-phase prediction f(R_τ(x')) reached,
  spec §2.7), next to ``success`` judged on the final image.

One several-values gallery (``--gallery-config``, the paper's README figure: one image toward 0.1 … 0.8 with
the mean difference per target) is made by ``cflight predict`` on that config and copied next to the JSON.
Written to ``benchmarks/results/regression_squares.json`` with the command, the git commit and the machine.

    .venv/bin/python benchmarks/regression_squares.py [--n 64] [--batch 16] [--no-gallery]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

import torch
import yaml
from torch import Tensor, nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.provenance import provenance  # noqa: E402
from cflight.data.squares import GRID_SIZE, SquaresDataset  # noqa: E402
from cflight.metrics.cost import EvaluationCounter  # noqa: E402
from cflight.models.registry import load_net  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
METHOD_NAMES = {"ACRE": "AC-RE", "DiffAERE": "Diff-AE-RE"}


def _instantiate(spec: dict[str, Any]) -> Any:
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**dict(spec.get("init_args") or {}))


def read_config(path: str) -> dict[str, Any]:
    """The method (built), explained model and oracle paths and target policy (built) of an explain YAML."""
    with open(path) as f:
        init = yaml.safe_load(f)["model"]["init_args"]
    return {"config": os.path.relpath(os.path.abspath(path), ROOT), "method_spec": init["method"],
            "model": init["model"], "oracle": init.get("oracle"), "policy": _instantiate(init["target_policy"])}


def mirror_images(n: int, dataset_seed: int = 0) -> dict[str, Tensor]:
    """``n`` mirror-grid images: ``n − n//2`` of ``grid_lower`` and ``n//2`` of ``grid_upper``, evenly spaced
    indices of each; ``{"image" [n, 3, 64, 64], "mask" [n, 1, 64, 64], "target" [n], "index" [n]}`` and the
    design of each row (``"upper"`` bool)."""
    rows = []
    for design, k in (("grid_lower", n - n // 2), ("grid_upper", n // 2)):
        if k > GRID_SIZE:
            raise ValueError(f"--n must be at most {2 * GRID_SIZE}, got {n}")
        ds = SquaresDataset(seed=dataset_seed, split="test", design=design)
        idx = torch.linspace(0, GRID_SIZE - 1, k).round().long().tolist() if k > 1 else [0] * k
        rows += [(ds[i], design == "grid_upper") for i in idx]
    return {"image": torch.stack([r["image"] for r, _ in rows]), "mask": torch.stack([r["mask"] for r, _ in rows]),
            "target": torch.tensor([r["target"] for r, _ in rows], dtype=torch.float64),
            "index": torch.tensor([r["index"] for r, _ in rows]), "upper": torch.tensor([u for _, u in rows])}


def generative_networks(method: nn.Module) -> dict[str, nn.Module]:
    """The generative networks a method evaluates, by name (what the cost counts besides the regressor)."""
    if hasattr(method, "denoiser"):
        return {"denoiser": method.denoiser}
    if hasattr(method, "diffae"):
        return {"diffae_unet": method.diffae.unet, "diffae_encoder": method.diffae.encoder}
    raise TypeError(f"no generative network known for {type(method).__name__}")


def inner_red(x: Tensor, mask: Tensor) -> Tensor:
    """Mean red ``[B]`` inside the inner-square mask (the ground truth of the regression target)."""
    return (x[:, 0] * mask[:, 0]).flatten(1).sum(1) / mask[:, 0].flatten(1).sum(1)


def background_mae(x: Tensor, x_cf: Tensor, mask: Tensor) -> Tensor:
    """Mean |x' − x| ``[B]`` outside the mask, over pixels and channels (as ``ExplainModule``'s column)."""
    outside = (1 - mask).expand_as(x)
    return ((x_cf - x).abs() * outside).flatten(1).sum(1) / outside.flatten(1).sum(1).clamp_min(1)


def run_method(method: nn.Module, model: nn.Module, oracle: nn.Module | None, policy: Any,
               data: dict[str, Tensor], batch: int) -> dict[str, Any]:
    """Explain every image of ``data`` in batches; the per-method figures and per-image rows."""
    nets = {"regressor": model, **generative_networks(method)}
    counter = EvaluationCounter(nets)
    rows: list[dict[str, Any]] = []
    n = len(data["index"])
    for start in range(0, n, batch):
        sl = slice(start, min(start + batch, n))
        x, mask, index = data["image"][sl], data["mask"][sl], data["index"][sl]
        with torch.no_grad():
            pred = model(x)
        target, _ = policy(pred, {"target": data["target"][sl]})
        with counter:
            out = method(x, target, model, index=index, pred=pred)
        with torch.no_grad():
            g = oracle(out.x_cf)[:, 0] if oracle is not None else None
        red0, red1 = inner_red(x, mask), inner_red(out.x_cf, mask)
        bg = background_mae(x, out.x_cf, mask)
        attack = out.extras.get("attack_reached") if out.extras else None
        for b in range(x.shape[0]):
            row = {"index": int(index[b]), "upper": bool(data["upper"][sl][b]), "y": float(data["target"][sl][b]),
                   "target": float(target.value[b]), "prediction": float(pred[b, 0]),
                   "cf_prediction": float(out.pred_cf[b, 0]), "success": bool(out.success[b]),
                   "steps": int(out.steps[b]), "background_mae": float(bg[b]), "inner_red": float(red0[b]),
                   "cf_inner_red": float(red1[b])}
            if g is not None:
                row["oracle_cf_prediction"] = float(g[b])
            if attack is not None:
                row["attack_success"] = bool(attack[b])
            rows.append(row)
        print(f"  {type(method).__name__}: {len(rows)}/{n} images, success so far "
              f"{sum(r['success'] for r in rows) / len(rows):.3f}", flush=True)
    return {"summary": summarise(rows, float(target.tolerance), counter.summary(n)), "rows": rows}


def summarise(rows: list[dict[str, Any]], tol: float, cost: dict[str, Any]) -> dict[str, Any]:
    """The per-method figures of the module docstring from per-image rows and the counter's summary."""
    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else float("nan")

    err = [abs(r["cf_prediction"] - r["target"]) for r in rows]
    red_err = [abs(r["cf_inner_red"] - r["target"]) for r in rows]
    out: dict[str, Any] = {
        "n": len(rows), "delta": tol,
        "success": mean([float(r["success"]) for r in rows]), "mae": mean(err),
        "oracle_success": float("nan"), "oracle_mae": float("nan"),
        "background_mae": mean([r["background_mae"] for r in rows]),
        "median_steps": statistics.median(r["steps"] for r in rows),
        "inner_red_success": mean([float(e <= tol) for e in red_err]), "inner_red_mae": mean(red_err),
        "inner_red_change": mean([abs(r["cf_inner_red"] - r["inner_red"]) for r in rows]),
        "seconds_per_image": cost["seconds_per_image"], "evaluations_per_image": cost["evaluations_per_image"],
        "peak_memory_mb": cost["peak_memory_mb"],
    }
    if all("oracle_cf_prediction" in r for r in rows):
        g_err = [abs(r["oracle_cf_prediction"] - r["target"]) for r in rows]
        out.update(oracle_success=mean([float(e <= tol) for e in g_err]), oracle_mae=mean(g_err))
    if all("attack_success" in r for r in rows):
        out["attack_success"] = mean([float(r["attack_success"]) for r in rows])
    return out


def several_values_gallery(config: str, dest: str) -> tuple[list[str], dict[str, Any]]:
    """Run ``cflight predict -c config`` into a fresh temporary directory (no shards of an earlier run are
    resumed) and copy its ``gallery.png`` (and ``difference_by_target.png``, as ``…_difference.png``) to
    ``dest``; the copied paths and the job's headline metrics."""
    cli = os.path.join(os.path.dirname(sys.executable), "cflight")
    copied = []
    with tempfile.TemporaryDirectory(prefix="regression_squares_") as tmp:
        out_dir = os.path.join(tmp, "job")
        subprocess.run([cli, "predict", "-c", config, f"--trainer.callbacks.init_args.output_dir={out_dir}",
                        f"--trainer.logger.init_args.save_dir={tmp}", "--trainer.enable_progress_bar=false"],
                       cwd=ROOT, check=True)
        for name, suffix in (("gallery.png", ""), ("difference_by_target.png", "_difference")):
            src = os.path.join(out_dir, name)
            if os.path.exists(src):
                path = dest.replace(".png", f"{suffix}.png")
                shutil.copyfile(src, path)
                copied.append(os.path.relpath(path, ROOT))
        with open(os.path.join(out_dir, "metrics.json")) as f:
            metrics = json.load(f)
    keep = ("n", "validity", "mae_to_target", "mae_to_target_before", "oracle_validity", "oracle_mae",
            "background_mae", "median_steps", "method_seconds_per_image")
    return copied, {k: metrics[k] for k in keep if k in metrics}


def table(methods: dict[str, dict[str, Any]]) -> str:
    """A markdown table of the per-method summaries."""
    head = ("| method | n | success (δ 0.05) | MAE | oracle success | oracle MAE | background MAE | inner-red change "
            "| median steps | s / image | UNet fwd / bwd per image |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for name, s in methods.items():
        ev = s["evaluations_per_image"]
        unet = ev.get("denoiser") or ev.get("diffae_unet") or {"forward": float("nan"), "backward": float("nan")}
        lines.append(f"| {name} | {s['n']} | {s['success']:.3f} | {s['mae']:.4f} | {s['oracle_success']:.3f} | "
                     f"{s['oracle_mae']:.4f} | {s['background_mae']:.4f} | {s['inner_red_change']:.4f} | "
                     f"{s['median_steps']:g} | {s['seconds_per_image']:.2f} | {unet['forward']:.0f} / "
                     f"{unet['backward']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acre-config", default="configs/explain/acre_squares.yaml")
    ap.add_argument("--diffae-config", default="configs/explain/diffae_re_squares.yaml")
    ap.add_argument("--gallery-config", default="configs/explain/diffae_re_squares_several_values.yaml")
    ap.add_argument("--n", type=int, default=64, help="mirror images per method (half lower, half upper grid)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--methods", nargs="+", default=["acre", "diffae"], choices=["acre", "diffae"])
    ap.add_argument("--no-gallery", action="store_true", help="skip the several-values gallery")
    ap.add_argument("--out", default=os.path.join(RESULTS, "regression_squares.json"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    data = mirror_images(args.n)
    report: dict[str, Any] = {**provenance(__file__, argv), "settings": {
        "n": args.n, "batch": args.batch, "images": "evenly spaced indices of grid_lower and grid_upper",
        "configs": {}}, "methods": {}, "per_image": {}}
    for key in args.methods:
        cfg = read_config(getattr(args, f"{key}_config"))
        method = _instantiate(cfg["method_spec"])
        model = load_net(cfg["model"]).eval().requires_grad_(False)
        oracle = load_net(cfg["oracle"]).eval().requires_grad_(False) if cfg["oracle"] else None
        name = METHOD_NAMES.get(type(method).__name__, type(method).__name__)
        print(f"{name}: {cfg['config']}", flush=True)
        res = run_method(method, model, oracle, cfg["policy"], data, args.batch)
        report["settings"]["configs"][name] = {"config": cfg["config"], "model": cfg["model"],
                                               "oracle": cfg["oracle"], "method": cfg["method_spec"]}
        report["methods"][name], report["per_image"][name] = res["summary"], res["rows"]
    report["table"] = table(report["methods"])
    print(report["table"], flush=True)
    if not args.no_gallery:
        dest = args.out.replace(".json", "_several_values.png")
        files, metrics = several_values_gallery(args.gallery_config, dest)
        report["several_values_gallery"] = {"config": args.gallery_config, "files": files, "metrics": metrics}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {os.path.relpath(os.path.abspath(args.out), ROOT)}", flush=True)
    return report


if __name__ == "__main__":
    main()
