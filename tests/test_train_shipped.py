"""scripts/train_shipped.py and checkpoints/manifest.yaml: a recorded command reproduces its file (issue 13:
a warm start from the very file the command overwrites would, rerun, continue the new file instead)."""
from __future__ import annotations

import importlib.util
import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    spec = importlib.util.spec_from_file_location("train_shipped", os.path.join(ROOT, "scripts", "train_shipped.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_warm_start_from_the_file_the_job_writes_is_refused_before_training(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    script = _script()
    with pytest.raises(SystemExit, match="is the file this job writes; copy it first"):
        script.run_job("ddpm", overrides=["model.init_args.init_weights=checkpoints/mnist_ddpm.pt"])


def test_no_manifest_command_warm_starts_from_its_own_output() -> None:
    files = yaml.safe_load(open(os.path.join(ROOT, "checkpoints", "manifest.yaml")))["files"]
    for name, entry in files.items():
        own = f"checkpoints/{name}"
        assert f"init_weights={own}" not in entry.get("command", "").replace(" ", ""), name
        warm = (entry.get("warm_start") or {}).get("init_weights", "")
        assert not warm.startswith(own), name
