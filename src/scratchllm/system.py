"""Facts about the machine this process runs on (standard library only, cheap to import)."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as ``taskset`` or a batch scheduler sets
    it), not all CPUs of the machine that ``os.cpu_count()`` reports."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
