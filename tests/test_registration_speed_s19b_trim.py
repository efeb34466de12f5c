"""Registration speed, session 19b: the background trim restores glibc's trim threshold itself.

Restored at the estimate's end, the threshold let the caller's next ``free`` at the heap's
top trim the heap on the caller's thread (40-55 ms closing the HDF5 file at 272³); now the
background thread trims first, then restores it, and only when no other estimate is
keeping its freed memory meanwhile.
"""

from __future__ import annotations

import threading
import time

import numpy as np

import txmdb.analysis._memory as memory
import txmdb.analysis.registration as reg

SIZE = 200 << 20                    # below the estimate's mmap threshold: from the heap


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def _trims_done(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(t.name == "txmdb-trim" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "txmdb-trim" for t in threading.enumerate())


def _returned_on_free() -> int:
    """Bytes handed back to the kernel when a fresh block is freed, from its peak (the block
    may reuse freed heap pages already resident, so RSS can grow by less than SIZE)."""
    block = np.ones(SIZE // 8)
    peak = _rss_bytes()
    del block
    return peak - _rss_bytes()


def test_an_estimate_still_running_keeps_its_memory_after_another_ones_trim():
    assert memory._glibc() is not None
    _trims_done()
    assert memory._kept._users == 0
    outer = reg._freed_memory_kept()
    outer.__enter__()
    try:
        with reg._freed_memory_kept():
            assert memory._kept._users == 2
        assert memory._kept._users == 1
        _trims_done()
        # the other estimate's trim did not restore the steady threshold under this one
        assert _returned_on_free() < 0.1 * SIZE
    finally:
        outer.__exit__(None, None, None)
    _trims_done()
    assert memory._kept._users == 0
    # steady again: a freed block at the top of the heap goes back to the kernel
    assert _returned_on_free() > 0.9 * SIZE


def test_the_estimate_and_the_analysis_share_one_switch():
    """One process-wide owner of glibc's thresholds: an estimate leaving while an analysis
    (a job thread of the web server) still runs does not restore them under it."""
    assert reg._freed_memory_kept is memory.freed_memory_kept
    _trims_done()
    with memory.freed_memory_kept():
        with reg._freed_memory_kept():
            assert memory._kept._users == 2
        _trims_done()
        assert _returned_on_free() < 0.1 * SIZE
    _trims_done()
    assert memory._kept._users == 0
    assert _returned_on_free() > 0.9 * SIZE
