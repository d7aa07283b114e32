"""The ``cflight`` command on tiny YAML configs."""
import json

import pytest

from cflight.cli import main
from tests.helpers import tiny_config

CONFIG = "tests/configs/explain_tiny.yaml"


def _config(tmp_path, **replace):
    return tiny_config(CONFIG, tmp_path, **replace)


def test_predict_runs_explanation_job(tmp_path, capsys):
    main(["predict", "-c", _config(tmp_path)])
    job = tmp_path / "job"
    for name in ["config.yaml", "results.csv", "metrics.json", "gallery.png", "gallery.html"]:
        assert (job / name).is_file(), name
    assert json.load(open(job / "metrics.json"))["n"] == 8
    assert str(job) in capsys.readouterr().out  # the job says where its outputs are


def test_predict_inference_mode_is_off_by_default(tmp_path):
    text = open(_config(tmp_path)).read().replace("  devices: 1\n", "  devices: 1\n  inference_mode: true\n")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(RuntimeError, match="inference_mode=False"):
        main(["predict", "-c", str(tmp_path / "bad.yaml")])


CLASSIFIER = "model:\n      class_path: tests.helpers.LinearClassifier\n      init_args: {num_classes: 3}"


@pytest.mark.parametrize("old, new, message", [
    (CLASSIFIER, "model: nothing/here.pt", "checkpoint 'nothing/here.pt' not found"),
    ("lr: 0.05", "lr: -1", "lr must be > 0"),
    ("threshold: 0.5}", "threshold: 2.0}", "threshold must lie strictly between 0 and 1"),
    ("max_steps: 200", "max_steps: -3", "max_steps must be >= 0"),
])
def test_bad_config_is_one_line_error(tmp_path, capsys, old, new, message):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "-c", _config(tmp_path, **{old: new})])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("cflight: error:")
    assert not (tmp_path / "job" / "results.csv").exists()


def test_wrong_kind_of_checkpoint(tmp_path, capsys):
    from cflight.models.registry import export_net

    path = tmp_path / "gen.pt"
    export_net("conv_vae", {}, {}, str(path))
    with pytest.raises(SystemExit):
        main(["predict", "-c", _config(tmp_path, **{CLASSIFIER: f"model: {path}"})])
    assert "holds a generator" in capsys.readouterr().err


def test_unparseable_value_fails(tmp_path):
    with pytest.raises(SystemExit):
        main(["predict", "-c", _config(tmp_path, **{"max_steps: 200": "max_steps: many"})])


def test_lightning_product_tips_are_not_printed(capsys) -> None:
    """Lightning's "💡 Tip: install litlogger" lines are advertisements in a job's output; main() drops them."""
    import logging

    from cflight.cli import _quiet_lightning_tips
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    _quiet_lightning_tips()
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)
    try:
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing litlogger")
        rank_zero_info("GPU available: False")
    finally:
        log.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["GPU available: False"]
