"""The diffusion a denoiser was trained with, carried inside its exported file and checked by the methods.

An ε-prediction network is only meaningful under the schedule it was trained on: sampling a 1000-step
``linear`` denoiser with a ``cosine`` schedule (or another T) gives wrong noise levels at every step, and
nothing crashes. So :func:`cflight.lit.export_checkpoint` writes ``metadata["diffusion"] = {num_timesteps,
schedule, variance}``, :func:`cflight.models.registry.load_net` attaches it to the network as
``training_schedule``, and methods that walk a chain (DVCE, AC-RE) take their ``num_timesteps`` / ``schedule``
from it (or refuse, in one line, values that contradict it) through :func:`resolve_schedule`.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from cflight.validation import BadInputError

VARIANCES = ("learned_range", "fixed")
DEFAULT_T, DEFAULT_SCHEDULE = 1000, "linear"  # ADM / DVCE's diffusion, assumed for files without a record


@dataclass(frozen=True)
class TrainingSchedule:
    """``num_timesteps`` T, β ``schedule`` (``"linear"`` / ``"cosine"``) and ``variance`` (``"learned_range"``:
    the network outputs 2C channels, improved-DDPM's hybrid loss; ``"fixed"``: ε only)."""

    num_timesteps: int
    schedule: str
    variance: str

    def __post_init__(self) -> None:
        if self.variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {self.variance!r}")

    def as_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Any) -> "TrainingSchedule | None":
        """The schedule of a file's ``metadata["diffusion"]`` (``None`` when absent or malformed)."""
        try:
            return cls(int(record["num_timesteps"]), str(record["schedule"]), str(record["variance"]))
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def from_hparams(cls, hparams: Any) -> "TrainingSchedule | None":
        """The schedule of a :class:`~cflight.lit.DDPMModule`'s hyper-parameters (``None`` for other modules)."""
        if not isinstance(hparams, dict) or "num_timesteps" not in hparams or "schedule" not in hparams:
            return None
        learned = bool((hparams.get("net_kwargs") or {}).get("learn_sigma", False))
        return cls(int(hparams["num_timesteps"]), str(hparams["schedule"]), "learned_range" if learned else "fixed")


def resolve_schedule(denoiser: nn.Module, num_timesteps: int | None, schedule: str | None,
                     method: str) -> tuple[int, str]:
    """``(T, schedule)`` for ``method`` to use with ``denoiser``.

    ``None`` takes the value the denoiser was trained with (its ``training_schedule``); a value given
    explicitly must agree with it, else one :class:`~cflight.validation.BadInputError` line names both. A
    denoiser without a record (a module built in Python, or a file exported by an older cflight) gets the
    values given, or ADM's 1000-step ``linear`` schedule with a warning when none are.
    """
    trained: TrainingSchedule | None = getattr(denoiser, "training_schedule", None)
    if trained is None:
        if num_timesteps is None or schedule is None:
            if getattr(denoiser, "training_schedule_unknown", False):
                warnings.warn(f"{method}: the denoiser file records no training schedule (exported by an older "
                              f"cflight); assuming T={num_timesteps or DEFAULT_T} "
                              f"{schedule or DEFAULT_SCHEDULE!r}: re-export it with cflight.lit.export_checkpoint "
                              "to have it checked", stacklevel=3)
        return num_timesteps or DEFAULT_T, schedule or DEFAULT_SCHEDULE
    given = {"num_timesteps": num_timesteps, "schedule": schedule}
    wrong = [f"{k}={v!r}" for k, v in given.items() if v is not None and v != getattr(trained, k)]
    if wrong:
        raise BadInputError(
            f"{method}: the denoiser was trained with a {trained.num_timesteps}-step {trained.schedule!r} schedule, "
            f"not {', '.join(wrong)}; leave num_timesteps and schedule unset (they are read from the denoiser "
            "file) or use a denoiser trained with that schedule")
    return trained.num_timesteps, trained.schedule
