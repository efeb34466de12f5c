"""How the analyses' fresh memory is paged (one implementation for every step that needs it)."""
from __future__ import annotations

import contextlib
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
