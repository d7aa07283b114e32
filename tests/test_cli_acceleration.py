"""Acceleration options switched on from a YAML explain config, run through ``cflight predict`` in-process."""
import pytest
import torch
import yaml

from cflight.cli import main
from tests.helpers import LinearDecoder, tiny_config

CONFIG = "tests/configs/explain_accelerated_tiny.yaml"


class AutocastRecordingDecoder(LinearDecoder):
    """A :class:`LinearDecoder` that records, per ``decode``, the autocast state and the latent's dtype."""

    calls: list[dict] = []

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        AutocastRecordingDecoder.calls.append({
            "autocast": torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"),
            "z_dtype": z.dtype,
            # a decode during a backward pass is checkpointing's recomputation (private but long-stable API)
            "in_backward": torch._C._current_graph_task_id() != -1,
        })
        return super().decode(z)


def _config(tmp_path, **replace):
    return tiny_config(CONFIG, tmp_path, **replace)


def test_options_from_yaml_reach_the_generator(tmp_path):
    AutocastRecordingDecoder.calls.clear()
    main(["predict", "-c", _config(tmp_path)])
    calls = AutocastRecordingDecoder.calls
    assert calls and all(c["autocast"] == torch.bfloat16 for c in calls)
    assert all(c["z_dtype"] == torch.float32 for c in calls)  # the optimised latents stay fp32
    assert any(c["in_backward"] for c in calls)  # checkpoint_chain recomputed the decoder
    saved = yaml.safe_load(open(tmp_path / "job" / "config.yaml"))
    options = saved["model"]["init_args"]["method"]["init_args"]["acceleration"]
    assert options == {"precision": "bf16", "channels_last": True, "compile": False,
                       "compile_backend": "inductor", "checkpoint_chain": True}
    assert (tmp_path / "job" / "results.csv").is_file()


def test_bad_option_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "-c", _config(tmp_path, **{"precision: bf16": "precision: fp8"})])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cflight: error:") and "precision must be one of" in err[-1]
