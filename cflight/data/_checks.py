"""Argument checks for dataset / datamodule constructors: each failure is a one-line ValueError naming the
argument (DESIGN.md §6)."""

from __future__ import annotations

from collections.abc import Iterable


def positive_int(name: str, value: int) -> int:
    """``value`` must be an integer ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def non_negative_int(name: str, value: int) -> int:
    """``value`` must be an integer ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def optional_size(name: str, value: int | None) -> int | None:
    """``None`` or a positive integer side length."""
    return None if value is None else positive_int(name, value)


def probability(name: str, value: float) -> float:
    """``value`` must lie in [0, 1]."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def unit_range(
    name: str, value: tuple[float, float] | list[float], low: float = 0.0, high: float = 1.0
) -> tuple[float, float]:
    """A ``(min, max)`` pair with ``low <= min <= max <= high``."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}") from None
    if not low <= a <= b <= high:
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {value!r}")
    return a, b


def choice(name: str, value: str, options: Iterable[str]) -> str:
    """``value`` must be one of ``options``."""
    options = list(options)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def split_count(name: str, value: int | float, total: int) -> int:
    """A split size: a fraction (``0 <= value < 1``) or an item count (``value >= 1``) of ``total``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a fraction in [0, 1) or a count >= 1, got {value!r}")
    count = int(round(value * total)) if value < 1 else int(value)
    if value >= 1 and value != int(value):
        raise ValueError(f"{name} given as a count must be an integer, got {value!r}")
    if count >= total:
        raise ValueError(f"{name}={value!r} leaves no training data out of {total} items")
    return count
