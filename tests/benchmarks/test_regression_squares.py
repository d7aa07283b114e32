"""``benchmarks/regression_squares.py`` on tiny stand-ins (a Gaussian toy DDPM, a small 64² Diff-AE, a linear
regressor): the mirror images, every per-method figure, the counted evaluations, the written report."""
import importlib.util
import json

import pytest
import torch

from cflight.methods import ACRE, DiffAERE
from cflight.models.generative import DiffAE
from cflight.targets import SquaresMirror
from tests.helpers import LinearRegressor
from tests.methods.test_dvce import GaussianDenoiser

pytestmark = pytest.mark.usefixtures("one_thread")
KEYS = {"n", "success", "mae", "oracle_success", "oracle_mae", "background_mae", "median_steps",
        "seconds_per_image", "evaluations_per_image", "inner_red_success", "inner_red_mae", "inner_red_change"}


class FarRegressor(LinearRegressor):
    """Values in (1.5, 1.6): out of reach of every mirror target (all in [0, 1]) for a few steps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.5 + 0.1 * super().forward(x)


def _load():
    spec = importlib.util.spec_from_file_location("regression_squares", "benchmarks/regression_squares.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _acre() -> ACRE:
    return ACRE(GaussianDenoiser(s=0.4, channels=3, size=64, learn_sigma=True), num_timesteps=1000,
                schedule="linear", timestep_respacing="50", sampling_time_fraction=0.1, step_size=2 / 255,
                max_iterations=2, dilation=5, stochastic=False, early_stop=False)


def _diffae() -> DiffAERE:
    torch.manual_seed(0)
    net = DiffAE(in_channels=3, image_size=64, model_channels=8, channel_mult=(1, 1), num_res_blocks=1,
                 attention_resolutions=(), head_channels=8, z_dim=4).eval()
    return DiffAERE(net, num_timesteps=1000, schedule="linear", max_steps=2, decode_steps=2, encode_steps=2)


def test_mirror_images_take_both_grids_evenly():
    data = _load().mirror_images(6)
    assert data["image"].shape == (6, 3, 64, 64) and data["upper"].tolist() == [False] * 3 + [True] * 3
    assert data["index"].tolist() == [0, 157, 314] * 2
    assert bool((data["target"][:3] < 0.5).all()) and bool((data["target"][3:] >= 0.5).all())
    assert data["mask"].flatten(1).sum(1).tolist() == [64.0] * 6  # the 8×8 inner square


def test_run_method_gives_every_figure_and_counts_each_network():
    bench = _load()
    data, f, g = bench.mirror_images(4), FarRegressor(3, 64, seed=1), LinearRegressor(3, 64, seed=2)
    acre = bench.run_method(_acre(), f, g, SquaresMirror(), data, batch=2)
    s = acre["summary"]
    assert KEYS | {"attack_success"} <= set(s) and s["n"] == 4 and len(acre["rows"]) == 4
    ev = s["evaluations_per_image"]
    # early_stop off: 2 PGD iterations, each τ = 5 UNet calls differentiated, one regressor backward each
    assert ev["denoiser"]["backward"] == 10 and ev["regressor"]["backward"] == 2
    assert ev["denoiser"]["forward"] in (10, 15)  # + τ for the inpainting pass unless the image is kept whole
    assert s["success"] == 0 and s["mae"] > 0.5
    assert s["median_steps"] == 2 and s["background_mae"] > 0 and 0 <= s["oracle_success"] <= 1
    want = sum(abs(r["oracle_cf_prediction"] - r["target"]) for r in acre["rows"]) / 4
    assert s["oracle_mae"] == pytest.approx(want)

    dae = bench.run_method(_diffae(), f, None, SquaresMirror(), data, batch=4)
    s = dae["summary"]
    assert KEYS <= set(s) and s["n"] == 4 and s["oracle_success"] != s["oracle_success"]  # no oracle: NaN
    assert not any(r["success"] for r in dae["rows"]), "the toy targets must be out of reach"
    ev = s["evaluations_per_image"]
    # 2 inversion steps, 3 decodes of 2 steps (2 with grad, the last without); one encoder call
    assert ev["diffae_unet"] == {"forward": 8.0, "backward": 4.0} and ev["diffae_encoder"]["forward"] == 1
    assert "Diff" not in bench.table({"AC-RE": acre["summary"]}) and "| AC-RE | 4 |" in bench.table(
        {"AC-RE": acre["summary"]})


def test_main_writes_the_report(tmp_path, monkeypatch):
    bench = _load()
    nets = {"f.pt": LinearRegressor(3, 64, seed=1), "g.pt": LinearRegressor(3, 64, seed=2)}
    methods = {"a.yaml": _acre(), "d.yaml": _diffae()}
    monkeypatch.setattr(bench, "read_config", lambda path: {
        "config": path, "method_spec": {"class_path": "builtins.object"}, "model": "f.pt", "oracle": "g.pt",
        "policy": SquaresMirror()})
    monkeypatch.setattr(bench, "_instantiate", lambda spec: methods.pop(next(iter(methods))))
    monkeypatch.setattr(bench, "load_net", lambda path: nets[path])
    out = tmp_path / "r.json"
    report = bench.main(["--acre-config", "a.yaml", "--diffae-config", "d.yaml", "--n", "2", "--batch", "2",
                         "--no-gallery", "--out", str(out)])
    saved = json.load(open(out))
    assert set(saved["methods"]) == {"AC-RE", "Diff-AE-RE"} and saved["methods"] == json.loads(
        json.dumps(report["methods"]))
    assert "--n 2" in saved["command"] and saved["git"]["commit"] and saved["machine"]["threads"] >= 1
    for s in saved["methods"].values():
        assert KEYS <= set(s) and s["n"] == 2
