"""What every ``benchmarks/results/*.json`` records about how it was made: the command, the commit, the machine."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

import torch

from cflight.benchmark.runner import machine_info

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
    """:func:`cflight.benchmark.runner.machine_info` (one record of the machine for every result)."""
    return machine_info(device)


def command(script: str, argv: Sequence[str] | None = None) -> str:
    """The command line that reproduces a run from the repository root (``argv`` defaults to ``sys.argv``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join([".venv/bin/python", os.path.relpath(os.path.abspath(script), ROOT), *args])


def provenance(script: str, argv: Sequence[str] | None = None, device: torch.device | str | None = None) -> dict:
    """``{"command", "git", "machine"}`` for a results file."""
    return {"command": command(script, argv), "git": git_state(), "machine": machine(device)}
