"""Threads of the compiled passes (private): how many a pass runs on by default."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

#: cgroup v2's CPU limit of this process' container ("max 100000": none; "200000 100000": 2 cores)
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, or fewer under a container's CPU
    quota (cgroup v2 ``cpu.max``); at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                          # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _quota_cores(CGROUP_CPU_MAX) or cores))


def _quota_cores(path: Path) -> int | None:
    """Whole cores a cgroup v2 ``cpu.max`` allows (rounded up), None without a quota or file."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def kernel_threads(requested: int | None) -> int:
    """``requested`` kernel threads, or None: one per usable core, at most MAX_ANALYSIS_WORKERS."""
    from txmdb.vocabulary import MAX_ANALYSIS_WORKERS

    return int(requested) if requested is not None else min(usable_cores(), MAX_ANALYSIS_WORKERS)


@contextmanager
def numba_threads(threads: int):
    """numba's thread count set to ``threads`` (capped at its pool) for the block, then restored.
    The blocks of a pass are split evenly between them (numba's OpenMP layer)."""
    import numba

    saved = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(saved)
