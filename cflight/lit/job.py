"""An explanation job's output directory: checks before work, resume compatibility, corrupt shards, clean-up.

``job.json`` records the fingerprint and description of the job whose shards the directory holds
(:mod:`cflight.lit.fingerprint`), so a rerun with other settings is refused with the settings that differ.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import time
from typing import Any

from cflight.lit.fingerprint import differences
from cflight.lit.shards import CorruptShard, ShardInfo, quarantine, scan, shard_paths, verify
from cflight.validation import BadInputError

JOB_FILE = "job.json"


class JobMismatch(BadInputError):
    """The output directory holds shards of another job (other weights, hyper-parameters, data or seed)."""


class OutputDirError(BadInputError, OSError):
    """The output directory cannot be written (a file is in the way, no permission, disk nearly full)."""


class JobDirectory:
    """The files of one explanation job under ``path`` (``shards/``, ``job.json``, ``config.yaml``, outputs).

    Args:
        path: the output directory.
        min_free_mb: :meth:`check_writable` refuses to start with less free space than this.
    """

    def __init__(self, path: str, min_free_mb: float = 64.0) -> None:
        self.path = path
        self.shard_dir = os.path.join(path, "shards")
        self.min_free_mb = min_free_mb
        # Whether a failed run may delete the directory: only when this run made it.
        self.preexisting = os.path.isdir(path) and bool(os.listdir(path))
        self.description: dict[str, Any] | None = None
        self._job_file_written = False

    # ---------------------------------------------------------------------------------- before any work
    def check_writable(self) -> None:
        """One clear error when the directory cannot be created or written, or the disk is (nearly) full."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise OutputDirError(f"output_dir {self.path!r} is a file, not a directory: remove it or choose "
                                 "another output_dir")
        ancestor = os.path.abspath(self.path)
        while not os.path.exists(ancestor):
            ancestor = os.path.dirname(ancestor)
        if not os.path.isdir(ancestor):
            raise OutputDirError(f"output_dir {self.path!r} cannot be created: {ancestor!r} is a file; remove it "
                                 "or choose another output_dir")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise OutputDirError(f"output_dir {self.path!r} cannot be written: no write permission on "
                                 f"{ancestor!r}; choose another output_dir")
        free_mb = shutil.disk_usage(ancestor).free / 2**20
        if free_mb < self.min_free_mb:
            raise OutputDirError(f"only {free_mb:.0f} MB free on the filesystem of output_dir {self.path!r} "
                                 f"(min_free_mb={self.min_free_mb:g}): free space or choose another output_dir")

    # ------------------------------------------------------------------------------------------- resume
    def _job_record(self) -> dict[str, Any] | None:
        path = os.path.join(self.path, JOB_FILE)
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # damaged job.json: the shards' own fingerprints still decide
            return None

    def check_compatible(self, fingerprint: str, description: dict[str, Any]) -> None:
        """Refuse (one line) when the directory holds another job's results."""
        record = self._job_record()
        fix = (f"use a new output_dir, delete {self.path!r}, or set on_mismatch: new on the CounterfactualWriter "
               "to write to a fresh directory beside it")
        if record is not None and record.get("fingerprint") != fingerprint:
            diff = "; ".join(differences(record.get("description", {}), description))
            raise JobMismatch(f"output_dir {self.path!r} holds the results of another job ({diff}): {fix}")
        for info in scan(self.shard_dir):
            if isinstance(info, ShardInfo) and info.fingerprint != fingerprint:
                raise JobMismatch(f"output_dir {self.path!r} holds shards of another job (fingerprint "
                                  f"{info.fingerprint}, this job {fingerprint}): {fix}")

    def compatible_with(self, fingerprint: str) -> bool:
        try:
            self.check_compatible(fingerprint, {})
        except JobMismatch:
            return False
        return True

    def first_compatible(self, fingerprint: str) -> "JobDirectory":
        """This directory, or the first ``<path>-<k>`` that is new or holds this same job."""
        k, candidate = 0, self
        while not candidate.compatible_with(fingerprint):
            k += 1
            candidate = JobDirectory(f"{self.path}-{k}", self.min_free_mb)
        if k:
            print(f"cflight: {self.path!r} holds another job; writing to {candidate.path!r}")
        return candidate

    def remove_stale_temp(self) -> None:
        """Delete temp files a killed run left (never a finished shard: those have their final name)."""
        for path in glob.glob(os.path.join(self.shard_dir, "*.tmp")):
            os.remove(path)

    def set_aside_corrupt(self) -> list[tuple[str, str]]:
        """Verify every shard fully; move corrupt ones to ``shards/corrupt/``. Returns ``(path, reason)`` pairs."""
        moved = []
        for path in shard_paths(self.shard_dir):
            try:
                verify(path)
            except CorruptShard as err:
                quarantine(path)
                moved.append((path, str(err).split(": ", 1)[-1]))
        return moved

    def infos(self) -> list[ShardInfo]:
        """The readable shards' indices (a shard that cannot be read is left out: its images count as missing)."""
        return [info for info in scan(self.shard_dir) if isinstance(info, ShardInfo)]

    def done_indices(self) -> set[int]:
        """Dataset indices a rerun need not compute: explained, or recorded as unreadable."""
        done: set[int] = set()
        for info in self.infos():
            done.update(info.index.tolist())
            done.update(info.unreadable.tolist())
        return done

    # ------------------------------------------------------------------------------------------- writes
    def create(self, config_text: str | None, is_global_zero: bool, fingerprint: str) -> None:
        """Make the directories; rank 0 writes ``job.json`` (and ``config.yaml``) once per run."""
        os.makedirs(self.shard_dir, exist_ok=True)
        if not is_global_zero or self._job_file_written:
            return
        record = self._job_record() or {"fingerprint": fingerprint, "description": self.description,
                                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": 0}
        record["runs"] = int(record.get("runs", 0)) + 1
        _write_text(os.path.join(self.path, JOB_FILE), json.dumps(record, indent=2, default=str))
        if config_text is not None:
            _write_text(os.path.join(self.path, "config.yaml"), config_text)
        self._job_file_written = True

    def remove_if_empty(self) -> None:
        """After a failure: delete the directory if this run created it and no shard was finished."""
        if self.preexisting or not os.path.isdir(self.path) or shard_paths(self.shard_dir):
            return
        shutil.rmtree(self.path, ignore_errors=True)


def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
