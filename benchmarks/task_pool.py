"""A dependency-ordered pool of benchmark tasks on a few worker processes.

A benchmark that trains several models and explains with each of them has one long task (e.g. a GAN: half an
hour on one CPU core) and many short ones. Running them on ``workers`` processes, each task as soon as the
tasks it needs have finished and a worker is free, in the order given (earlier = more urgent), keeps every core
busy without hand-written phases. Tasks are top-level functions (spawned processes pickle them); their
arguments are built in the parent from the results of the tasks they depend on.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Task:
    """``fn(*args(results))`` once every key in ``deps`` has a result; its result is stored under ``key``."""

    key: str
    fn: Callable[..., Any]
    args: Callable[[dict[str, Any]], tuple] = lambda results: ()
    deps: Sequence[str] = field(default_factory=tuple)


def quiet_process(threads: int) -> None:
    """``threads`` torch threads, offline W&B / hub, no UserWarning / DeprecationWarning and Lightning's info
    logging off: each worker's set-up (the same for every task), and the parent's."""
    import logging
    import warnings

    import torch

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_SILENT", "true")
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_tasks(tasks: Sequence[Task], workers: int = 2, threads: int = 1, log: Callable[[str], None] = print,
              dump_dir: str | os.PathLike | None = None) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Run ``tasks``; returns ``(results, timeline)`` with each task's start and end in seconds from the start.
    ``dump_dir``: also write each result as it arrives to ``<dump_dir>/<key with / as __>.json`` (to follow a
    long run; results that are not JSON are skipped there).

    Raises ``ValueError`` for a dependency no task provides and re-raises the first task's exception."""
    keys = {t.key for t in tasks}
    missing = {d for t in tasks for d in t.deps if d not in keys}
    if missing:
        raise ValueError(f"tasks depend on {sorted(missing)}, which no task provides")
    results: dict[str, Any] = {}
    timeline: dict[str, dict[str, float]] = {}
    pending = list(tasks)
    running: dict[Future, tuple[Task, float]] = {}
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")  # fork after torch threads exist can deadlock
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=quiet_process, initargs=(threads,)) as pool:
        while pending or running:
            for task in list(pending):  # the first ready tasks in the given order, one per free worker
                if len(running) >= workers:
                    break
                if all(d in results for d in task.deps):
                    pending.remove(task)
                    running[pool.submit(task.fn, *task.args(results))] = (task, time.perf_counter() - t0)
            if not running:
                raise ValueError(f"tasks {[t.key for t in pending]} wait on each other (a dependency cycle)")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task, start = running.pop(future)
                results[task.key] = future.result()  # a failed task stops the run with its own error
                end = time.perf_counter() - t0
                timeline[task.key] = {"start": round(start, 1), "end": round(end, 1)}
                log(f"[{end / 60:5.1f} min] {task.key} ({end - start:.0f} s)")
                if dump_dir is not None:
                    os.makedirs(dump_dir, exist_ok=True)
                    try:
                        text = json.dumps(results[task.key], indent=1, default=str)
                    except (TypeError, ValueError):
                        continue
                    with open(os.path.join(dump_dir, task.key.replace("/", "__") + ".json"), "w") as f:
                        f.write(text)
    return results, timeline
