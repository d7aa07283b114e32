"""The README's "Your own images" flow, timed from a clean checkout on a folder exported from Fashion-MNIST.

Exports Fashion-MNIST's sandal, sneaker and ankle boot (classes 5, 7, 9; the first ``--per-class`` training
images of each, default 1000) from the Debian package's idx files as 28×28 grey PNGs in class sub-folders
(``sandal/``, ``sneaker/``, ``ankle_boot/``), then runs the README's four commands as they are written there:

    cflight fit     -c configs/folder/data.yaml -c configs/folder/classifier.yaml
    cflight fit     -c configs/folder/data.yaml -c configs/folder/oracle.yaml
    cflight fit     -c configs/folder/data.yaml -c configs/folder/vae.yaml
    cflight predict -c configs/folder/data.yaml -c configs/folder/explain.yaml

each as a subprocess of this venv's ``cflight`` (``OMP_NUM_THREADS=1``, ``WANDB_MODE=offline``), adding only
``--data.init_args.root <folder>`` and the overrides that send every output path the configs name
(``trainer.default_root_dir``, the logger's ``save_dir``, the checkpoint ``dirpath``, explain.yaml's three
checkpoint paths and the writer's ``output_dir``) into the work directory instead of the repository's
``outputs/``. Recorded per step: wall seconds (start-up included), the 1/5/15-minute load average before and
after; per model the best validation score (the checkpoint explain.yaml reads) and the last epoch's validation
metrics (the progress bar's, 3 significant digits); for the explanation metrics.json's figures.

    .venv/bin/python benchmarks/own_data_flow.py            # 3 × 1000 images, the configs' epochs (~9 min)
    .venv/bin/python benchmarks/own_data_flow.py --quick    # 3 × 30 images, 1 epoch each (~1 min)

Writes ``benchmarks/results/own_data_flow.json`` (``--out`` elsewhere; ``--quick`` only with ``--out``).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.provenance import ROOT, provenance  # noqa: E402

SOURCE = "/usr/share/datasets/fashion-mnist"  # Debian's fashion-mnist package (idx format, gzipped)
CLASSES = {5: "sandal", 7: "sneaker", 9: "ankle_boot"}  # Fashion-MNIST label → sub-folder name
MODELS = ("classifier", "oracle", "vae")
STEPS = (*MODELS, "explain")
METRIC_KEYS = ("n", "validity", "oracle_validity", "median_steps", "seconds")
# the repository paths the configs write to (and W&B's / Lightning's defaults): none may change during a run
REPO_OUTPUTS = ("outputs/folder", "outputs/explain/folder", "outputs/wandb", "wandb", "lightning_logs")
QUICK_PER_CLASS = 30
QUICK_MAX_STEPS = 100  # a 1-epoch classifier may never reach τ 0.9: cap the search, not the image count


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format; ``.gz`` or plain) as a uint8 array of the shape its header gives."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {data[:4].hex()}); pass an "
                         f"idx1/idx3-ubyte file such as train-images-idx3-ubyte.gz")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} = {int(np.prod(shape))} bytes but "
                         f"{len(data) - offset} follow; the file is truncated or not idx")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def export_folder(images_path: str | Path, labels_path: str | Path, out: str | Path, per_class: int,
                  classes: dict[int, str] = CLASSES) -> dict[str, int]:
    """The first ``per_class`` images (N, H, W) of each label in ``classes`` as grey PNGs in
    ``out/<name>/<name>_<j>.png``, pixel values unchanged; returns the count per sub-folder."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{images_path} {images.shape} and {labels_path} {labels.shape} are not N images "
                         f"(N, H, W) with N labels; pass an idx3 images file and its idx1 labels file")
    counts = {}
    for label, name in classes.items():
        rows = np.flatnonzero(labels == label)[:per_class]
        if len(rows) < per_class:
            raise ValueError(f"label {label} ({name}) has {len(rows)} images in {labels_path}, fewer than "
                             f"--per-class {per_class}; lower --per-class")
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=False)  # a folder from an earlier run is never reused
        for j, i in enumerate(rows):
            Image.fromarray(images[i], "L").save(folder / f"{name}_{j:04d}.png")
        counts[name] = len(rows)
    return counts


def cflight_executable() -> list[str]:
    """This venv's ``cflight`` console script (pyproject: ``cflight = "cflight.cli:main"``), else
    ``python -m cflight.cli``."""
    script = Path(sys.executable).parent / "cflight"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cflight.cli"]


def readme_command(step: str) -> list[str]:
    """The README's command for ``step`` (a model's ``fit`` or the explanation's ``predict``)."""
    verb, config = ("predict", "explain") if step == "explain" else ("fit", step)
    return [verb, "-c", "configs/folder/data.yaml", "-c", f"configs/folder/{config}.yaml"]


def output_overrides(step: str, work: Path) -> list[str]:
    """Every output path the configs name, moved from ``outputs/`` to ``work/outputs/`` (same layout)."""
    out = work / "outputs"
    if step == "explain":
        ckpt = {m: str(out / "folder" / m / "checkpoints" / "best.ckpt") for m in MODELS}
        job = str(out / "explain" / "folder")
        return ["--trainer.logger.init_args.save_dir", job, "--trainer.callbacks.init_args.output_dir", job,
                "--model.init_args.model", ckpt["classifier"], "--model.init_args.oracle", ckpt["oracle"],
                "--model.init_args.method.init_args.generator", ckpt["vae"]]
    run = str(out / "folder" / step)
    return ["--trainer.default_root_dir", run, "--trainer.logger.init_args.save_dir", run,
            "--trainer.callbacks.init_args.dirpath", str(out / "folder" / step / "checkpoints")]


def quick_overrides(step: str) -> list[str]:
    """``--quick``: 1 epoch per model, a capped search for the explanation."""
    if step == "explain":
        return ["--model.init_args.method.init_args.max_steps", str(QUICK_MAX_STEPS)]
    return ["--trainer.max_epochs", "1"]


def final_validation(log: str) -> dict[str, float]:
    """The last value of each ``val/...`` metric in a fit's progress bar (the last epoch's validation)."""
    return {key: float(value) for key, value in re.findall(r"(val/[\w/]+)=([-+0-9.eE]+)", log)}


def best_validation(ckpt: Path) -> dict:
    """The ModelCheckpoint's monitor, best score and epoch stored in ``best.ckpt`` (what explain reads)."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    (cb,) = [v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint")]
    return {"monitor": cb["monitor"], "value": float(cb["best_model_score"]), "epoch": int(state["epoch"])}


def snapshot(paths: tuple[str, ...] = REPO_OUTPUTS) -> dict[str, tuple[int, int]]:
    """``relative path → (mtime_ns, size)`` of every file under the repository ``paths``."""
    files = {}
    for top in paths:
        for dirpath, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                full = os.path.join(dirpath, name)
                st = os.stat(full)
                files[os.path.relpath(full, ROOT)] = (st.st_mtime_ns, st.st_size)
    return files


def run_step(step: str, folder: Path, work: Path, quick: bool) -> dict:
    """One README command (+ folder root, output paths, quick settings) as a subprocess from the repository
    root; its wall seconds, load average before/after and log (``work/logs/<step>.log``)."""
    extra = ["--data.init_args.root", str(folder), *output_overrides(step, work),
             *(quick_overrides(step) if quick else [])]
    cmd = [*cflight_executable(), *readme_command(step), *extra]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "WANDB_SILENT": "true"}
    log_path = work / "logs" / f"{step}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()
    text = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"step {step} failed (exit {proc.returncode}): {shlex.join(cmd)}\n{text[-3000:]}")
    shown = [a.replace(str(work), "<workdir>") for a in extra]
    print(f"{step}: {wall:.1f} s", flush=True)
    return {"command": "cflight " + " ".join(readme_command(step)), "added": shown, "wall_s": round(wall, 2),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
            "log": text}


def run_flow(work: Path, per_class: int, quick: bool, source: str = SOURCE) -> dict:
    """Export the folder into ``work/images``, run the four steps; the results (no provenance)."""
    folder = work / "images"
    start = time.perf_counter()
    counts = export_folder(f"{source}/train-images-idx3-ubyte.gz", f"{source}/train-labels-idx1-ubyte.gz",
                           folder, per_class)
    export_s = time.perf_counter() - start
    before = snapshot()
    steps = {}
    for step in STEPS:
        result = run_step(step, folder, work, quick)
        log = result.pop("log")
        if step == "explain":
            metrics = json.loads((work / "outputs" / "explain" / "folder" / "metrics.json").read_text())
            result["metrics"] = {k: metrics[k] for k in METRIC_KEYS}
        else:
            ckpt = work / "outputs" / "folder" / step / "checkpoints" / "best.ckpt"
            result["validation"] = {"best": best_validation(ckpt), "final": final_validation(log)}
        steps[step] = result
    changed = sorted(p for p, s in snapshot().items() if before.get(p) != s)
    if changed:  # another job may have written there meanwhile; the list says what to look at
        print(f"warning: {len(changed)} files changed under the repository's {', '.join(REPO_OUTPUTS)} "
              f"during the run: {changed[:5]}", flush=True)
    return {"folder": {"source": f"{source}/train-*-idx*-ubyte.gz",
                       "classes": {v: k for k, v in CLASSES.items()}, "per_class": per_class,
                       "images": sum(counts.values()), "export_s": round(export_s, 2)},
            "steps": steps, "total_s": round(sum(s["wall_s"] for s in steps.values()), 2),
            "repository_outputs_changed": changed}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=None,
                        help=f"training images per class (default 1000; --quick: {QUICK_PER_CLASS})")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny folder, 1 epoch per model, at most {QUICK_MAX_STEPS} search steps; "
                             f"no result file unless --out")
    parser.add_argument("--workdir", default=None,
                        help="an empty or new directory for the folder and every output "
                             "(default: a temporary one)")
    parser.add_argument("--source", default=SOURCE, help="the directory of Fashion-MNIST's idx .gz files")
    parser.add_argument("--out", default=None,
                        help="result file (default: benchmarks/results/own_data_flow.json)")
    args = parser.parse_args(argv)
    per_class = args.per_class or (QUICK_PER_CLASS if args.quick else 1000)
    if per_class < 1:
        raise SystemExit(f"--per-class {per_class}: give at least 1 image per class")
    for split in ("images-idx3", "labels-idx1"):
        if not os.path.isfile(f"{args.source}/train-{split}-ubyte.gz"):
            raise SystemExit(f"{args.source}/train-{split}-ubyte.gz missing: install Debian's fashion-mnist "
                             f"package or pass --source DIR")
    if args.workdir:
        work = Path(args.workdir).resolve()
        if work.exists() and any(work.iterdir()):
            raise SystemExit(f"--workdir {work} is not empty: nothing is reused, give an empty or new "
                             f"directory")
        work.mkdir(parents=True, exist_ok=True)
        flow = run_flow(work, per_class, args.quick, args.source)
    else:
        with tempfile.TemporaryDirectory(prefix="own_data_flow_") as tmp:
            flow = run_flow(Path(tmp), per_class, args.quick, args.source)
    result = {"benchmark": "own_data_flow", "quick": args.quick,
              "note": "wall_s: each command's wall time including start-up, one thread per process; "
                      "load_before/after: the machine's 1/5/15-minute load average (other jobs included). "
                      "validation.best: the checkpoint explain.yaml reads; validation.final: the last "
                      "epoch's values from the progress bar (3 significant digits)",
              **flow, **provenance(__file__, argv)}
    m = result["steps"]["explain"]["metrics"]
    print(f"all four: {result['total_s']:.0f} s; validity {m['validity']:.2f}, oracle_validity "
          f"{m['oracle_validity']:.2f} (n {m['n']}, median steps {m['median_steps']})", flush=True)
    default = os.path.join(ROOT, "benchmarks", "results", "own_data_flow.json")
    out = args.out or (None if args.quick else default)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
