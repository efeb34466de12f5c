"""Threads of the compiled passes (private): how many a pass runs on by default."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

#: cgroup v2: the hierarchy's root, and the file naming this process' cgroup in it ("0::/PATH")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, or fewer under a CPU quota of its
    cgroup or any cgroup above it (a container's limit, systemd's ``CPUQuota=``); at least 1.
    cgroup v1 quotas are not read."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                          # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _cgroup_cores() or cores))


def _cgroup_cores() -> int | None:
    """The smallest CPU quota, in whole cores, from this process' cgroup up to the root; None: none."""
    try:
        own = next(line[3:].strip() for line in PROC_CGROUP.read_text().splitlines() if line.startswith("0::"))
    except (OSError, StopIteration, UnicodeDecodeError):
        own = "/"
    folder = CGROUP_ROOT / own.lstrip("/")
    quotas = []
    while True:
        if (quota := _quota_cores(folder / "cpu.max")) is not None:
            quotas.append(quota)
        if folder == CGROUP_ROOT or CGROUP_ROOT not in folder.parents:
            break
        folder = folder.parent
    return min(quotas, default=None)


def _quota_cores(path: Path) -> int | None:
    """Whole cores a cgroup v2 ``cpu.max`` allows (rounded up), None without a quota or file."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def kernel_threads(requested: int | None, *, share: int = 1) -> int:
    """``requested`` kernel threads, or None: the usable cores divided among ``share`` processes
    running analyses at once, at least 1 and at most MAX_ANALYSIS_WORKERS."""
    from txmdb.vocabulary import MAX_ANALYSIS_WORKERS

    if requested is not None:
        return int(requested)
    return max(1, min(usable_cores() // share, MAX_ANALYSIS_WORKERS))


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
