"""How the analyses' fresh memory is paged (one implementation for every step that needs it)."""
from __future__ import annotations

import contextlib
import threading

import numpy as np

_lock = threading.Lock()
_users = 0          # threads inside no_huge_pages() now
_was = True         # numpy's marking before the first of them entered


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
    global _users, _was
    setter = getattr(np._core.multiarray, "_set_madvise_hugepage", None)
    if setter is None:  # pragma: no cover - a numpy without the switch
        yield
        return
    with _lock:
        if _users == 0:
            _was = setter(False)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                setter(_was)
