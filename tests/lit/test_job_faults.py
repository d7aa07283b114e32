"""Faults a user meets: a killed job, corrupt shards, a rerun of another job, a full or unwritable disk."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.lit.job import JobMismatch, OutputDirError
from cflight.lit.shards import read_rows
from cflight.methods import LatentAttack
from tests.helpers import LinearClassifier, LinearDecoder, TinyDicts

ROOT = Path(__file__).resolve().parents[2]


class Recording(LatentAttack):
    """Records every dataset index it is asked to explain."""

    seen: list[int] = []

    def run(self, x, target, model, index, pred):
        Recording.seen.extend(index.tolist())
        return super().run(x, target, model, index, pred)


def _job(out, lr=0.05, n=10, batch_size=3, **writer_kw):
    module = ExplainModule(Recording(LinearDecoder(), lr=lr, max_steps=100), LinearClassifier(num_classes=3))
    writer = CounterfactualWriter(str(out), **writer_kw)
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, callbacks=[writer],
                      enable_progress_bar=False, enable_model_summary=False)
    Recording.seen = []
    trainer.predict(module, DataLoader(TinyDicts(n), batch_size=batch_size), return_predictions=False)
    return writer


def _rows(out):
    return [{k: v for k, v in r.items()} for r in csv.DictReader(open(Path(out) / "results.csv"))]


def test_rerun_of_another_job_is_refused_and_loses_nothing(tmp_path):
    out = tmp_path / "job"
    _job(out)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(JobMismatch) as err:
        _job(out, lr=0.1)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "method.lr: 0.05 → 0.1" in message and "on_mismatch: new" in message
    assert Recording.seen == [], "refused before any work"
    after = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before, "the refused rerun changed the directory"


def test_on_mismatch_new_writes_beside_and_resumes_there(tmp_path):
    out = tmp_path / "job"
    _job(out)
    _job(out, lr=0.1, on_mismatch="new")
    assert json.load(open(tmp_path / "job-1" / "metrics.json"))["n"] == 10
    _job(out, lr=0.1, on_mismatch="new")  # the same other job again: found in job-1, nothing recomputed
    assert Recording.seen == [] and not (tmp_path / "job-2").exists()


def test_same_job_with_other_batch_size_resumes(tmp_path):
    out = tmp_path / "job"
    _job(out, n=6)
    _job(out, n=10, batch_size=4)  # more images, other batching: the same job, extended
    assert sorted(Recording.seen) == [6, 7, 8, 9]
    assert [int(r["index"]) for r in _rows(out)] == list(range(10))


def test_corrupt_shards_are_set_aside_and_recomputed(tmp_path, capsys):
    out = tmp_path / "job"
    _job(out)
    reference = _rows(out)
    shards = sorted((out / "shards").glob("*.pt"))
    truncated, flipped = shards[0], shards[2]
    truncated.write_bytes(truncated.read_bytes()[:100])
    data = bytearray(flipped.read_bytes())
    stored = (read_rows(str(flipped), ["x_cf"])["x_cf"] * 255).round().to(torch.uint8).numpy().tobytes()
    at = bytes(data).find(stored)
    assert at > 0
    data[at + len(stored) // 2] ^= 0xFF  # one damaged byte inside a counterfactual's pixels
    flipped.write_bytes(bytes(data))
    _job(out)
    said = capsys.readouterr().out
    assert f"shard {truncated.name} is corrupt" in said and f"shard {flipped.name} is corrupt" in said
    assert sorted(Recording.seen) == [0, 1, 2, 6, 7, 8]
    assert sorted(p.name for p in (out / "shards" / "corrupt").iterdir()) == sorted([truncated.name, flipped.name])
    assert _rows(out) == reference


def test_unwritable_or_full_output_dir_fails_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match="is a file"):
        _job(blocker)
    with pytest.raises(OutputDirError, match="cannot be created"):
        _job(blocker / "job")
    with pytest.raises(OutputDirError, match="MB free on the filesystem of output_dir .*free space or choose"):
        _job(tmp_path / "job", min_free_mb=1e12)
    assert Recording.seen == [] and not (tmp_path / "job").exists()
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputDirError, match="no write permission"):
            _job(locked / "job")


def test_disk_full_while_writing_a_shard_says_so_and_keeps_finished_shards(tmp_path, monkeypatch):
    import cflight.lit.shards as S

    out = tmp_path / "job"
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 5:  # the third shard (each shard: file + directory)
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(S.os, "fsync", fsync)
    with pytest.raises(OSError, match="disk full while writing .*finished shards are kept; free space and rerun"):
        _job(out)
    assert len(list((out / "shards").glob("*.pt"))) == 2 and not list((out / "shards").glob("*.tmp"))
    monkeypatch.setattr(S.os, "fsync", real_fsync)
    _job(out)
    assert sorted(Recording.seen) == [6, 7, 8, 9]


def test_failure_before_the_first_shard_leaves_no_directory(tmp_path):
    class Broken(LatentAttack):
        def run(self, *a, **k):
            raise RuntimeError("boom")

    module = ExplainModule(Broken(LinearDecoder()), LinearClassifier(num_classes=3))
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_progress_bar=False,
                      callbacks=[CounterfactualWriter(str(tmp_path / "job"))])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.predict(module, DataLoader(TinyDicts(4), batch_size=2), return_predictions=False)
    assert not (tmp_path / "job").exists()


SLOW_JOB = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: cflight.lit.CounterfactualWriter
      init_args: {{output_dir: {out}, gallery_size: 4}}
model:
  class_path: cflight.lit.ExplainModule
  init_args:
    model:
      class_path: tests.helpers.LinearClassifier
      init_args: {{num_classes: 3}}
    method:
      class_path: tests.toy_methods.SlowScaleMethod
      init_args: {{factor: 0.5, delay: {delay}}}
data:
  class_path: tests.helpers.TinyDataModule
  init_args: {{n: 12, batch_size: 2}}
return_predictions: false
"""


def _predict(config, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from cflight.cli import main; main()", "predict", "-c", str(config)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkilled_job_resumes_to_the_uninterrupted_result(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    (tmp_path / "k.yaml").write_text(SLOW_JOB.format(out=killed, delay=0.5))
    (tmp_path / "c.yaml").write_text(SLOW_JOB.format(out=clean, delay=0.5))
    proc = _predict(tmp_path / "k.yaml")
    deadline = time.time() + 120
    while len(list((killed / "shards").glob("*.pt"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((killed / "shards").glob("*.pt")))
    assert 2 <= done < 6, done
    assert not (killed / "results.csv").exists()
    resumed = _predict(tmp_path / "k.yaml")
    assert resumed.wait(timeout=120) == 0, resumed.stdout.read().decode()
    assert _predict(tmp_path / "c.yaml").wait(timeout=120) == 0
    m_killed, m_clean = (json.load(open(d / "metrics.json")) for d in (killed, clean))
    assert m_killed["computed_this_run"] == 12 - 2 * done, "the rerun recomputed finished shards"
    assert _rows(killed) == _rows(clean)
    for key in ("n", "validity", "mean_l1", "mean_l2", "median_steps", "fingerprint"):
        assert m_killed[key] == m_clean[key], key
