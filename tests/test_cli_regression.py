"""Regression targets from YAML through ``cflight predict``, for every method whose math allows them."""
import json

import pytest

from cflight.cli import main
from tests.helpers import tiny_config

CONFIG = "tests/configs/explain_regression_tiny.yaml"
METHODS = {
    "LatentAttack": "{class_path: cflight.methods.LatentAttack, init_args: {generator: {class_path: "
                    "tests.helpers.LinearDecoder}, lr: 0.05, max_steps: 200}}",
    "SparseAFW": "{class_path: cflight.methods.SparseAFW, init_args: {eps: 3.0, steps: 30, early_stop: true}}",
    "PGD": "{class_path: cflight.methods.PGD, init_args: {eps: 2.0, steps: 40, step_size: 0.1, random_start: false}}",
    "APGD": "{class_path: cflight.methods.APGD, init_args: {eps: 2.0, steps: 30}}",
    "ACRE": "{class_path: cflight.methods.ACRE, init_args: {denoiser: {class_path: tests.methods.test_dvce."
            "GaussianDenoiser, init_args: {learn_sigma: true}}, max_iterations: 20, step_size: 0.02, dilation: 1}}",
    "DiffAERE": "{class_path: cflight.methods.DiffAERE, init_args: {diffae: {class_path: tests.helpers.TinyDiffAE}, "
                "num_timesteps: 100, schedule: linear, decode_steps: 4, encode_steps: 5, lr: 0.05, max_steps: 30}}",
    "DVCE": "{class_path: cflight.methods.DVCE, init_args: {denoiser: {class_path: tests.methods.test_dvce."
            "GaussianDenoiser, init_args: {mu: 0.0, s: 0.5}}, timestep_respacing: '20', skip_timesteps: 10, "
            "cone_angle: null, classifier_lambda: 1.0}}",
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_regression_target_from_yaml(tmp_path, method):
    main(["predict", "-c", tiny_config(CONFIG, tmp_path, METHOD=METHODS[method])])
    metrics = json.load(open(tmp_path / "job" / "metrics.json"))
    assert metrics["n"] == 8
    for key in ("validity", "mae_to_target", "mae_to_target_before", "oracle_mae", "oracle_validity"):
        assert key in metrics, key
    assert metrics["mae_to_target"] < metrics["mae_to_target_before"], metrics  # moved toward the target
