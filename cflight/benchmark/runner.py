"""Run several counterfactual methods as explanation jobs on the same images, models and targets.

    cflight benchmark -c configs/benchmark/mnist_all_methods.yaml
    cflight benchmark -c configs/benchmark/squares_regression.yaml   # regressors: success within δ, MAE

A benchmark config (YAML) names what every job shares and what differs::

    output_dir: outputs/benchmark/<name>   # each method's job in <output_dir>/<method name>/
    seed_everything: 0                     # re-seeded before every job
    trainer: {accelerator: cpu, devices: 1}
    data: {class_path: ..., init_args: ...}           # the images (one datamodule per job, same settings)
    module: {model: ..., oracle: ..., target_policy: ...}   # ExplainModule arguments every job shares
    writer: {fid_feature_net: ..., mnac_attributes: ...}  # CounterfactualWriter arguments every job shares
    methods:                                # in table order
      - name: pgd
        method: {class_path: cflight.methods.PGD, init_args: {...}}
        module: {...}                       # optional per-method overrides (e.g. another explained model)
        data: {...}                         # optional init_args overrides (e.g. a smaller batch)
    wandb: {project: cflight, name: <name>}   # optional: log the table and plots (offline without credentials)

Each job is a Lightning ``predict`` with a :class:`~cflight.lit.CounterfactualWriter`, exactly as
``cflight predict`` runs it; ``fresh: true`` (default) removes an earlier job's directory of that method first,
so its cost figures cover all its images (a resumed job's cost covers only what it computed).

The target policy says the benchmark's task (``task``: ``SquaresMirror``, ``FixedValue``… are regression
ones); every job must share it (checked before the first job runs). A regression benchmark's table and plots
are :mod:`~cflight.benchmark.table`'s regression columns (success within the policy's δ, MAE, the oracle's of
both), so each job's metrics get ``task`` and, for regression, ``tolerance`` (δ) from its policy.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from cflight.benchmark.plots import plot_all
from cflight.benchmark.table import DELTA_KEY, markdown_table, table_rows, write_tables
from cflight.validation import BadInputError, MissingInputError

TOP_KEYS = {"output_dir", "seed_everything", "trainer", "data", "module", "writer", "methods", "wandb", "fresh"}
METHOD_KEYS = {"name", "method", "module", "data", "writer"}


@dataclass
class BenchmarkConfig:
    """A parsed benchmark config (see the module docstring); ``source``: the file it came from."""

    output_dir: str
    data: dict[str, Any]
    module: dict[str, Any]
    methods: list[dict[str, Any]]
    trainer: dict[str, Any] = field(default_factory=dict)
    writer: dict[str, Any] = field(default_factory=dict)
    seed_everything: int = 0
    wandb: dict[str, Any] | None = None
    fresh: bool = True
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def load_config(path: str, output_dir: str | None = None, limit: int | None = None) -> BenchmarkConfig:
    """Read and check a benchmark config; ``output_dir`` / ``limit`` (images: the datamodule's
    ``predict_limit``) override the file's. Problems are one-line :class:`~cflight.validation.BadInputError`s."""
    if not os.path.isfile(path):
        raise MissingInputError(f"benchmark config {path!r} not found; give the path of a YAML file (e.g. "
                                "configs/benchmark/mnist_all_methods.yaml)")
    try:
        raw = yaml.safe_load(open(path)) or {}
    except yaml.YAMLError as err:
        raise BadInputError(f"benchmark config {path} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(raw, dict):
        raise BadInputError(f"benchmark config {path} must be a mapping with keys {sorted(TOP_KEYS)}")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise BadInputError(f"benchmark config {path}: unknown key(s) {sorted(unknown)}; the keys are {sorted(TOP_KEYS)}")
    for key in ("data", "module", "methods"):
        if not raw.get(key):
            raise BadInputError(f"benchmark config {path}: {key!r} is missing; see cflight/benchmark/runner.py")
    methods = raw["methods"]
    if not isinstance(methods, list) or not all(isinstance(m, dict) for m in methods):
        raise BadInputError(f"benchmark config {path}: 'methods' must be a list of {{name, method}} mappings")
    names = []
    for k, m in enumerate(methods):
        if set(m) - METHOD_KEYS or "name" not in m or "method" not in m:
            raise BadInputError(f"benchmark config {path}: methods[{k}] needs 'name' and 'method' (and may have "
                                f"{sorted(METHOD_KEYS - {'name', 'method'})}), got {sorted(m)}")
        if not str(m["name"]).replace("_", "").replace("-", "").isalnum():
            raise BadInputError(f"benchmark config {path}: method name {m['name']!r} must be letters, digits, _ or -")
        names.append(str(m["name"]))
    if len(set(names)) != len(names):
        raise BadInputError(f"benchmark config {path}: method names must be unique, got {names}")
    data = dict(raw["data"])
    if limit is not None:
        data["init_args"] = {**data.get("init_args", {}), "predict_limit": int(limit)}
    return BenchmarkConfig(output_dir=output_dir or raw.get("output_dir") or "outputs/benchmark", data=data,
                           module=dict(raw["module"]), methods=methods, trainer=dict(raw.get("trainer") or {}),
                           writer=dict(raw.get("writer") or {}), seed_everything=int(raw.get("seed_everything", 0)),
                           wandb=raw.get("wandb"), fresh=bool(raw.get("fresh", True)), source=path, raw=raw)


def instantiate(spec: Any) -> Any:
    """Build ``{class_path, init_args}`` mappings (nested anywhere) into objects; other values stay as they are."""
    if isinstance(spec, list):
        return [instantiate(v) for v in spec]
    if not isinstance(spec, dict):
        return spec
    if "class_path" not in spec:
        return {k: instantiate(v) for k, v in spec.items()}
    module_name, _, name = str(spec["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise BadInputError(f"unknown class_path {spec['class_path']!r} in the benchmark config; check its "
                            "spelling") from err
    kwargs = {k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, FileNotFoundError) as err:  # a bad argument or a missing checkpoint
        if isinstance(err, BadInputError):
            raise
        line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise BadInputError(f"{name}: {line}; fix its init_args in the benchmark config") from err


def _merged(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**base, **(override or {})}


def _data_spec(cfg: BenchmarkConfig, entry: Mapping[str, Any]) -> dict[str, Any]:
    spec = dict(cfg.data)
    spec["init_args"] = _merged(spec.get("init_args", {}), entry.get("data"))
    return spec


def _build(cls: type, *args: Any, **kwargs: Any) -> Any:
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError, FileNotFoundError) as err:
        if isinstance(err, BadInputError):
            raise
        line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise BadInputError(f"{cls.__name__}: {line}; fix the benchmark config's module/writer settings") from err


def method_task(cfg: BenchmarkConfig, entry: Mapping[str, Any]) -> dict[str, Any]:
    """``{"task": "classification" | "regression"}`` of a method's job, as its target policy says (the
    ExplainModule's default, SecondMostLikely, is a classification one), with regression's ``tolerance`` δ."""
    spec = _merged(cfg.module, entry.get("module")).get("target_policy")
    policy = instantiate(spec) if spec is not None else None
    task = str(getattr(policy, "task", "classification"))
    out: dict[str, Any] = {"task": task}
    if task == "regression" and getattr(policy, "tolerance", None) is not None:
        out[DELTA_KEY] = float(policy.tolerance)
    return out


def check_one_task(cfg: BenchmarkConfig) -> dict[str, dict[str, Any]]:
    """Each method's :func:`method_task` by name; jobs of different tasks are one-line
    :class:`~cflight.validation.BadInputError` before any job runs (one table compares one task)."""
    tasks = {str(entry["name"]): method_task(cfg, entry) for entry in cfg.methods}
    kinds = {name: t["task"] for name, t in tasks.items()}
    if len(set(kinds.values())) > 1:
        raise BadInputError(f"benchmark config {cfg.source}: its methods' target policies mix classification and "
                            f"regression ({kinds}); one table compares one task: give every method the same "
                            "kind of target_policy or split the config")
    return tasks


def run_job(cfg: BenchmarkConfig, entry: Mapping[str, Any]) -> dict[str, Any]:
    """One method's explanation job into ``<output_dir>/<name>/``; returns its metrics.json."""
    from lightning.pytorch import Trainer, seed_everything

    from cflight.lit import CounterfactualWriter, ExplainModule
    from cflight.lit.results import write_json

    out = os.path.join(cfg.output_dir, str(entry["name"]))
    if cfg.fresh and os.path.isdir(out) and (os.path.isdir(os.path.join(out, "shards"))
                                             or os.path.isfile(os.path.join(out, "metrics.json"))):
        shutil.rmtree(out)  # an earlier run of this benchmark's job: its cost would cover only new rows
    seed_everything(cfg.seed_everything, verbose=False)
    module = _build(ExplainModule, method=instantiate(entry["method"]),
                    **instantiate(_merged(cfg.module, entry.get("module"))))
    writer = _build(CounterfactualWriter, out, **instantiate(_merged(cfg.writer, entry.get("writer"))))
    trainer_kw = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False,
                  **cfg.trainer, "logger": False, "inference_mode": False}
    trainer = Trainer(callbacks=[writer], **trainer_kw)
    datamodule = instantiate(_data_spec(cfg, entry))
    trainer.predict(module, datamodule=datamodule, return_predictions=False)
    trainer.strategy.barrier("cflight-benchmark-job")
    metrics = json.load(open(os.path.join(writer.output_dir, "metrics.json")))
    if trainer.is_global_zero:
        write_json({"method": entry["method"], "module": _merged(cfg.module, entry.get("module")),
                    "data": _data_spec(cfg, entry)}, os.path.join(writer.output_dir, "benchmark_job.json"))
    metrics["_is_global_zero"] = trainer.is_global_zero
    return metrics


def cpu_model() -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``; ``None`` elsewhere). With the SIMD level torch's kernels use
    (``torch.backends.cpu.get_cpu_capability()``) it tells two machines of one platform apart, which can train the
    same network to different floats."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """The machine a result was measured on: platform, CPU (model and the SIMD level torch's kernels use: two
    machines of one platform can train a network to different floats), threads, torch, Python and (for a CUDA
    ``device``, default: the first GPU if any) the GPU's name and memory. The one record of ``cflight
    benchmark`` and of every ``benchmarks/results/*.json``."""
    info: dict[str, Any] = {
        "platform": platform.platform(), "cpu": platform.processor() or platform.machine(), "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__, "python": platform.python_version()}
    device = torch.device(device) if device is not None else (torch.device("cuda") if torch.cuda.is_available()
                                                              else None)
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
    return info


def provenance(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"command", "git", "machine"}``: how to reproduce the run, from the repository root."""
    args = sys.argv[1:] if argv is None else list(argv)
    root = os.getcwd()

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        state: dict[str, Any] = {"commit": git("rev-parse", "HEAD"),
                                 "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        state = {"commit": "unknown (no git repository)", "dirty": None}
    machine = {**machine_info(), "load_average_1_5_15_at_end": (
        [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None)}
    return {"command": " ".join(["cflight", *args]) if args else "cflight benchmark", "git": state,
            "machine": machine}


def log_wandb(settings: Mapping[str, Any], rows: list[dict[str, Any]], plots: Mapping[str, str],
              save_dir: str) -> str:
    """The table (a W&B Table), its numbers (summary values ``benchmark/<method>/<column>``) and the plots,
    as one W&B run (offline unless ``WANDB_MODE`` / credentials say otherwise); returns a one-line hint."""
    import wandb

    from cflight.lit.loggers import AutoWandbLogger, run_hint

    kwargs = {"project": "cflight", "save_dir": os.path.join(save_dir, "wandb"), **dict(settings)}
    logger = AutoWandbLogger(**kwargs)
    columns = list(rows[0]) if rows else ["method"]
    logger.experiment.log({"benchmark/table": wandb.Table(columns=columns, data=[[r.get(c) for c in columns]
                                                                                 for r in rows]),
                           **{f"benchmark/{k}": wandb.Image(p) for k, p in plots.items()}})
    numeric = {f"benchmark/{r['method']}/{k}": float(v) for r in rows for k, v in r.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    logger.log_metrics(numeric)
    hint = run_hint(logger)
    logger.experiment.finish()
    return hint


def run_benchmark(cfg: BenchmarkConfig, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every method's job, then (rank 0) write the tables, plots and results.json and log them to W&B."""
    started = time.perf_counter()
    load_at_start = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    tasks = check_one_task(cfg)
    jobs: dict[str, dict[str, Any]] = {}
    zero = True
    for entry in cfg.methods:
        t0 = time.perf_counter()
        print(f"cflight benchmark: {entry['name']} ...", flush=True)
        metrics = run_job(cfg, entry)
        zero = metrics.pop("_is_global_zero")
        metrics["job_wall_seconds"] = round(time.perf_counter() - t0, 2)  # with loading, assembly, gallery
        metrics.update(tasks[str(entry["name"])])  # which table columns apply (and regression's δ)
        jobs[str(entry["name"])] = metrics
    total = round(time.perf_counter() - started, 1)
    out = {"jobs": jobs, "wall_seconds": total}
    if not zero:
        return out
    rows = table_rows(jobs)
    plots = plot_all(rows, cfg.output_dir)
    paths = write_tables(cfg.output_dir, jobs, provenance(argv), cfg.raw,
                         {"wall_seconds": total, "load_average_at_start": load_at_start, "config_file": cfg.source,
                          "plots": sorted(plots)})
    print(markdown_table(rows))
    lines = [f"cflight benchmark: {len(jobs)} methods in {total:.0f} s; outputs in {os.path.abspath(cfg.output_dir)}/ "
             f"({', '.join(sorted(os.path.basename(p) for p in [*paths.values(), *plots.values()]))})"]
    if cfg.wandb:
        lines.append("  " + log_wandb(cfg.wandb, rows, plots, cfg.output_dir))
    print("\n".join(lines))
    return {**out, "rows": rows, "paths": paths, "plots": plots}


def main(argv: Sequence[str]) -> None:
    """``cflight benchmark -c CONFIG [--output_dir DIR] [--limit N]`` (``argv`` without the subcommand)."""
    import argparse

    parser = argparse.ArgumentParser(prog="cflight benchmark", description="Run several counterfactual methods "
                                     "on the same images, models and targets; write one table.")
    parser.add_argument("-c", "--config", required=True, help="benchmark config (YAML), e.g. "
                        "configs/benchmark/mnist_all_methods.yaml")
    parser.add_argument("--output_dir", default=None, help="override the config's output_dir")
    parser.add_argument("--limit", type=int, default=None, help="explain only the first N images (predict_limit)")
    args = parser.parse_args(list(argv))
    cfg = load_config(args.config, args.output_dir, args.limit)
    run_benchmark(cfg, ["benchmark", *argv])
