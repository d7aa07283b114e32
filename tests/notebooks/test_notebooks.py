"""The tutorial notebooks: stored without outputs, importing only cflight (plus torch / matplotlib / the
standard library), and each executed top to bottom through a real Jupyter kernel (nbclient) running this
Python, on the tiny settings a notebook switches to when ``CFLIGHT_NOTEBOOK_SMOKE=1`` (a user opening it sees
the full ones)."""
from __future__ import annotations

import ast
import glob
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
EXPECTED = {"quickstart.ipynb", "dvce.ipynb", "svce_spurious.ipynb", "regression.ipynb", "own_data.ipynb"}
ALLOWED_IMPORTS = {"cflight", "torch", "matplotlib"} | set(sys.stdlib_module_names)
CELL_TIMEOUT_S = 300
# Notebooks that draw figures: each must leave at least one inline PNG.
PLOTS = {"dvce.ipynb", "svce_spurious.ipynb", "regression.ipynb", "own_data.ipynb", "quickstart.ipynb"}

ids = os.path.basename


def _code_cells(path: str) -> list[dict]:
    with open(path) as f:
        return [c for c in json.load(f)["cells"] if c["cell_type"] == "code"]


def test_there_are_the_notebooks() -> None:
    assert {os.path.basename(p) for p in NOTEBOOKS} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_committed_without_outputs(path: str) -> None:
    """Commit-ready: valid nbformat 4, no outputs, no execution counts (strip them before committing)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{ids(path)} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{ids(path)} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_imports_only_cflight(path: str) -> None:
    for i, cell in enumerate(_code_cells(path)):
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] in ALLOWED_IMPORTS, f"{ids(path)} cell {i} imports {name}"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory) -> str:
    """A ``python3`` kernel spec whose argv is this interpreter, first on JUPYTER_PATH (so no user- or
    system-wide ``python3`` spec can shadow it); returns the JUPYTER_PATH value."""
    path = tmp_path_factory.mktemp("jupyter")
    spec_dir = path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "cflight test kernel", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return str(path)


def _tiny_squares_models(folder) -> dict[str, str]:
    """A random, tiny ε-prediction UNet and Diff-AE for 64² RGB squares, exported to ``folder``: they exercise
    the regression notebook's AC-RE and Diff-AE-RE cells whether or not the shipped files exist (the numbers
    mean nothing). Returns the notebook's environment variables pointing at them."""
    from cflight.models.registry import build_net, export_net

    common = {"in_channels": 3, "image_size": 64, "model_channels": 8, "channel_mult": [1, 2],
              "num_res_blocks": 1, "attention_resolutions": []}
    env = {}
    models = (("CFLIGHT_SQUARES_DDPM", "unet", {**common, "learn_sigma": True}, "learned_range"),
              ("CFLIGHT_SQUARES_DIFFAE", "diffae", {**common, "z_dim": 8}, "fixed"))
    for var, name, kwargs, variance in models:
        path = str(folder / f"tiny_{name}.pt")
        # the diffusion record export_checkpoint writes
        record = {"num_timesteps": 1000, "schedule": "linear", "variance": variance}
        export_net(name, kwargs, build_net(name, **kwargs).state_dict(), path, {"diffusion": record})
        env[var] = path
    return env


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_runs_in_a_kernel(path: str, kernel_env: str, monkeypatch, tmp_path) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", kernel_env)
    monkeypatch.setenv("CFLIGHT_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the figures
    if ids(path) == "regression.ipynb":
        for var, value in _tiny_squares_models(tmp_path).items():
            monkeypatch.setenv(var, value)

    nb = nbformat.read(path, as_version=4)
    probe = "import sys\nprint(sys.executable)"  # which interpreter the kernel runs
    nb.cells.insert(0, nbformat.v4.new_code_cell(probe))
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": NOTEBOOK_DIR}})  # cwd: notebooks/, as in Jupyter
    client.execute()

    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert os.path.realpath(printed) == os.path.realpath(sys.executable)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if ids(path) in PLOTS:
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{ids(path)} drew no inline figure"
