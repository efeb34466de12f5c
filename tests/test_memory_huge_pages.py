"""numpy's huge-page marking off while an analysis runs (its fresh maps faulted with memory
compaction were ~0.8 CPU-s of system time at 272³), restored after, the results unchanged."""
from __future__ import annotations

import threading

import h5py
import numpy as np
import pandas as pd
import pytest

import txmdb.analysis.registration as reg
from txmdb.analysis._memory import no_huge_pages
from txmdb.db.models import STATISTICS_TABLES
from txmdb.pipeline import AnalysisOptions, analyze_stack
from tests.test_pipeline import PARAMS, _stack

_switch = np._core.multiarray._set_madvise_hugepage


def _state() -> bool:
    """numpy's huge-page marking, read without changing it."""
    was = _switch(False)
    _switch(was)
    return was


@pytest.fixture
def marking():
    """numpy's default (marking on) again after each test, whatever it left."""
    yield
    _switch(True)


@pytest.mark.parametrize("was", [True, False])
def test_off_inside_and_restored_after_even_on_error(marking, was):
    _switch(was)
    with pytest.raises(RuntimeError):
        with no_huge_pages():
            assert _state() is False
            raise RuntimeError("boom")
    assert _state() is was


def test_overlapping_threads_restore_it_only_when_the_last_leaves(marking):
    _switch(True)
    entered, release = threading.Event(), threading.Event()
    seen = []

    def other():
        with no_huge_pages():
            entered.set()
            release.wait(10)
            seen.append(_state())                   # still off after the first left

    with no_huge_pages():
        thread = threading.Thread(target=other)
        thread.start()
        assert entered.wait(10)
    assert _state() is False                        # the other thread is still inside
    release.set()
    thread.join(10)
    assert seen == [False] and _state() is True     # back on once both left


def test_registration_uses_the_same_switch():
    assert reg._no_huge_pages is no_huge_pages


def _analysis(stack, path, states):
    run = analyze_stack if states is None else analyze_stack.__wrapped__   # undecorated: marking as it is
    seen = []
    out = run(stack, AnalysisOptions(params=PARAMS, slab_size=8), results_path=path,
              progress=lambda done, total: seen.append(_state()))
    return out, seen


def test_analysis_runs_without_huge_pages_and_gives_the_same_bits(marking, tmp_path):
    # slabs of 8 × 96 × 96 × 52 float32 (15 MB): arrays numpy marks when the switch is on
    stack = _stack(tmp_path / "s.h5", (24, 96, 96), n_particles=2, radius=9.0)
    _switch(True)
    off, seen_off = _analysis(stack, tmp_path / "off.h5", None)
    assert set(seen_off) == {False} and _state() is True          # off throughout, on again after
    on, seen_on = _analysis(stack, tmp_path / "on.h5", True)
    assert set(seen_on) == {True}                                 # the comparison ran with marking
    assert off.n_particles == 2
    for name in STATISTICS_TABLES:
        pd.testing.assert_frame_equal(off.tables[name], on.tables[name], check_exact=True, obj=name)
    with h5py.File(tmp_path / "off.h5") as a, h5py.File(tmp_path / "on.h5") as b:
        names = [k for k in a if isinstance(a[k], h5py.Dataset)]
        assert {"edge_ev", "jump", "valid", "labels"} <= set(names) and set(names) == set(b)
        for name in names:
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)


def test_a_failed_analysis_restores_the_marking(marking, tmp_path):
    stack = _stack(tmp_path / "s.h5", (6, 20, 20))
    _switch(True)

    def fail(done, total):
        raise RuntimeError("stop")
    with pytest.raises(RuntimeError, match="stop"):
        analyze_stack(stack, AnalysisOptions(params=PARAMS), results_path=tmp_path / "r.h5", progress=fail)
    assert _state() is True and not (tmp_path / "r.h5").exists()
