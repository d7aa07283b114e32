"""Process memory figures for the memory benchmarks (Linux ``/proc``; ``None`` elsewhere)."""
from __future__ import annotations


def status_mb(field: str) -> float | None:
    """A memory figure of this process from ``/proc/self/status`` (``VmRSS``, ``VmHWM``, …) in MiB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0), so a later ``status_mb("VmHWM")`` is the peak since."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
