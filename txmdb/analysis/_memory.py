"""How the analyses' fresh memory is paged (one implementation for every step that needs it)."""
from __future__ import annotations

import contextlib
import functools
import gc
import threading

import numpy as np


class _Switch:
    """A process-wide switch held off while any thread is inside :meth:`off`: overlapping
    blocks are counted, so the state found by the first comes back only when the last
    leaves (not when the first does, which would turn it on under the others or leave
    it off for good)."""

    def __init__(self, turn_off, restore):
        self._turn_off, self._restore = turn_off, restore      # turn_off() returns what restore() takes
        self._lock = threading.Lock()
        self._users = 0
        self._was = None

    @contextlib.contextmanager
    def off(self):
        with self._lock:
            if self._users == 0:
                self._was = self._turn_off()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._restore(self._was)


_set_madvise = getattr(np._core.multiarray, "_set_madvise_hugepage", None)
_huge_pages = _Switch(lambda: _set_madvise(False), lambda was: _set_madvise(was))


@contextlib.contextmanager
def no_huge_pages():
    """numpy's arrays of 4 MiB and more not marked for transparent huge pages while the
    block runs (numpy's ``madvise(MADV_HUGEPAGE)``, restored as it was afterwards, also
    on an exception); usable as a decorator.

    Where the kernel's THP ``defrag`` setting is ``madvise`` (its default), the first
    touch of a marked range compacts memory to find 2 MiB pages, in the process's own
    system time, and a full page cache makes that slow: the registration estimate at 272³
    spent 0.95-1.6 of its 5.6-6.0 CPU s there, against 0.4-0.6 with 4 KiB pages (five
    times the faults, each far cheaper); the whole analysis with every map ~0.8 of ~7
    (docs/performance.md). The numbers computed are the same: only the page size differs.

    The switch is numpy's, for the whole process. The web server and the worker run
    analyses in threads: arrays other threads make meanwhile are not marked either, which
    changes nothing but their page size, and overlapping blocks are counted, so the
    marking comes back only when the last of them leaves (not when the first does, which
    would turn it on under the others or leave it off for good)."""
    if _set_madvise is None:  # pragma: no cover - a numpy without the switch
        yield
        return
    with _huge_pages.off():
        yield


def _gc_off() -> bool:
    was = gc.isenabled()
    gc.disable()
    return was


_cyclic_gc = _Switch(_gc_off, lambda was: gc.enable() if was else None)


@contextlib.contextmanager
def no_cyclic_gc():
    """Python's cyclic garbage collector paused while the block runs (the registration
    estimate: its thousands of small objects (futures, tuples, slices) triggered full
    collections that walked every object numba and scipy had loaded, ~3 % of the estimate's
    CPU at 272³; it makes no reference cycles that would need it). Process-wide like
    :func:`no_huge_pages`, and counted the same way: collection resumes, if it was on,
    when the last overlapping block leaves."""
    with _cyclic_gc.off():
        yield


#: glibc's ``mallopt`` parameters; the steady state its dynamic thresholds reach in a numpy
#: process (mmap above 32 MiB, trim above twice that), restored afterwards; and while kept
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_STEADY_MMAP, _STEADY_TRIM = 32 << 20, 64 << 20
_KEPT_MMAP, _KEPT_TRIM = 256 << 20, 1 << 30


@functools.cache
def _glibc():
    """The C library when it is glibc (has ``mallopt`` and ``malloc_trim``), else None."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None
    return libc


def _keep() -> None:
    libc = _glibc()
    libc.mallopt(_M_MMAP_THRESHOLD, _KEPT_MMAP)
    libc.mallopt(_M_TRIM_THRESHOLD, _KEPT_TRIM)


def _give_back(_) -> None:
    _glibc().mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP)
    # returning ~1 GB takes tens of ms: not on the caller's way (its next steps need not
    # wait); the trim threshold stays high until then, else the caller's next free at the
    # heap's top would trim the heap on its own thread
    threading.Thread(target=_trim, name="txmdb-trim", daemon=True).start()


def _trim() -> None:
    """Return the free memory to the kernel, then glibc's steady trim threshold unless a
    block keeps its freed memory again meanwhile."""
    libc = _glibc()
    libc.malloc_trim(0)
    with _kept._lock:
        if _kept._users == 0:
            libc.mallopt(_M_TRIM_THRESHOLD, _STEADY_TRIM)


_kept = _Switch(_keep, _give_back)


@contextlib.contextmanager
def freed_memory_kept():
    """glibc's allocator keeps the memory the block frees for the block's next arrays
    (usable as a decorator; elsewhere than glibc a no-op).

    By default glibc maps every allocation above 32 MiB afresh and unmaps it when freed,
    so each large array is page-faulted and zeroed by the kernel again: the whole analysis
    at 272³ took ~530 k page faults (2 GB) for ~1.2 GB of peak memory, its slab buffers,
    maps and statistics' temporaries one after the other. On this project's virtual
    machine a fresh page costs several times more when the page cache is full (the
    kernel reclaims first). While the block runs, allocations up to 256 MiB come from the
    heap and what is freed stays there for the next ones (the edge pass' slab buffers
    become the statistics' arrays); afterwards the thresholds go back to glibc's steady
    state and the free memory is returned (``malloc_trim``, in a thread of its own).
    The registration estimate runs under the same switch (one owner of the thresholds).
    Only the main heap keeps memory this way: glibc's per-thread heaps map allocations
    above 64 MiB afresh whatever the threshold. Process-wide and counted like
    :func:`no_huge_pages`. The numbers computed are the same: an array from the heap holds
    old bytes where a fresh one held zeros, and no analysis reads memory it has not
    written (``np.empty`` is never assumed zero; tests compare the results)."""
    if _glibc() is None:  # pragma: no cover - not glibc
        yield
        return
    with _kept.off():
        yield
