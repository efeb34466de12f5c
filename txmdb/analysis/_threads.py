"""Threads of the compiled passes (private): how many, and how they share a slab's blocks."""

from __future__ import annotations

import os
from contextlib import contextmanager

#: blocks of voxels a kernel thread takes at a time, the next ones going to whichever thread
#: is free: a thread sharing its core with the reader or the writer does fewer of them
#: instead of setting the pace of an even split (numba's default)
CHUNK_BLOCKS = 8


def usable_cores() -> int:
    """The cores this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                          # not on Linux
        return os.cpu_count() or 1


def kernel_threads(requested: int | None) -> int:
    """``requested`` kernel threads, or None: one per usable core, at most MAX_ANALYSIS_WORKERS."""
    from txmdb.vocabulary import MAX_ANALYSIS_WORKERS

    return int(requested) if requested is not None else min(usable_cores(), MAX_ANALYSIS_WORKERS)


@contextmanager
def numba_threads(threads: int):
    """numba's thread count set to ``threads`` (capped at its pool) and blocks shared out
    ``CHUNK_BLOCKS`` at a time for the block, then both restored."""
    import numba

    saved = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        with numba.parallel_chunksize(CHUNK_BLOCKS):
            yield
    finally:
        numba.set_num_threads(saved)
