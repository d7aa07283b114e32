"""Every notebook's code cells run top to bottom on the shipped checkpoints (no Jupyter needed)."""
from __future__ import annotations

import glob
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path: str, monkeypatch) -> None:
    monkeypatch.chdir(os.path.dirname(path))  # as a user opening it in Jupyter
    cells = [c for c in json.load(open(path))["cells"] if c["cell_type"] == "code"]
    namespace: dict = {"__name__": "__notebook__"}
    for i, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"{os.path.basename(path)}[{i}]", "exec"), namespace)
