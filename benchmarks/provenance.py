"""What every ``benchmarks/results/*.json`` records about how it was made: the command, the commit, the machine."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence

import torch

from cflight.benchmark.runner import cpu_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_state() -> dict:
    """``{"commit", "dirty"}`` of the checkout (dirty: tracked files other than ``benchmarks/results/``, the
    outputs themselves, differ from the commit: a run that rewrites one result must not mark the next one)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".",
                                                                 ":(exclude)benchmarks/results"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown (no git repository)", "dirty": None}


def machine(device: torch.device | str | None = None) -> dict:
    """CPU (model and the SIMD level torch's kernels use: two machines of one platform can train a network to
    different floats), threads, torch and (on a GPU) the device's name and memory."""
    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
    return info


def command(script: str, argv: Sequence[str] | None = None) -> str:
    """The command line that reproduces a run from the repository root (``argv`` defaults to ``sys.argv``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join([".venv/bin/python", os.path.relpath(os.path.abspath(script), ROOT), *args])


def provenance(script: str, argv: Sequence[str] | None = None, device: torch.device | str | None = None) -> dict:
    """``{"command", "git", "machine"}`` for a results file."""
    return {"command": command(script, argv), "git": git_state(), "machine": machine(device)}
