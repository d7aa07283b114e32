"""The training schedule a denoiser file records, and how methods resolve theirs from it."""
import warnings

import pytest
import torch

from cflight.models.generative.training_schedule import TrainingSchedule, resolve_schedule
from cflight.models.registry import build_net, export_net, load_net
from cflight.validation import BadInputError

NET = {"in_channels": 1, "image_size": 8, "model_channels": 8, "channel_mult": [1], "num_res_blocks": 1,
       "attention_resolutions": [], "head_channels": 8}


def _file(tmp_path, diffusion=None):
    path = tmp_path / "den.pt"
    meta = {} if diffusion is None else {"diffusion": diffusion}
    export_net("unet", NET, build_net("unet", **NET).state_dict(), str(path), meta)
    return str(path)


def test_record_round_trips_and_malformed_records_are_none():
    s = TrainingSchedule(250, "cosine", "fixed")
    assert TrainingSchedule.from_record(s.as_record()) == s
    assert TrainingSchedule.from_record({"num_timesteps": 10}) is None and TrainingSchedule.from_record(None) is None
    with pytest.raises(ValueError, match="variance"):
        TrainingSchedule(10, "linear", "learned")


def test_method_takes_the_file_schedule_and_refuses_a_contradiction(tmp_path):
    net = load_net(_file(tmp_path, TrainingSchedule(250, "cosine", "fixed").as_record()), "denoiser")
    assert resolve_schedule(net, None, None, "AC-RE") == (250, "cosine")
    assert resolve_schedule(net, 250, "cosine", "AC-RE") == (250, "cosine")
    with pytest.raises(BadInputError, match=r"^AC-RE: the denoiser was trained with a 250-step 'cosine' schedule, "
                                            r"not num_timesteps=1000, schedule='linear'"):
        resolve_schedule(net, 1000, "linear", "AC-RE")


def test_a_file_without_a_record_warns_and_uses_the_adm_default(tmp_path):
    net = load_net(_file(tmp_path), "denoiser")
    with pytest.warns(UserWarning, match="records no training schedule"):
        assert resolve_schedule(net, None, None, "DVCE") == (1000, "linear")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicit values: nothing to warn about
        assert resolve_schedule(net, 100, "cosine", "DVCE") == (100, "cosine")
    # a module built in Python has no file to disagree with: the values given, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_schedule(torch.nn.Identity(), None, None, "DVCE") == (1000, "linear")


def test_shipped_denoiser_records_its_schedule():
    net = load_net("checkpoints/mnist_ddpm.pt", "denoiser")
    assert net.training_schedule == TrainingSchedule(1000, "linear", "learned_range")
