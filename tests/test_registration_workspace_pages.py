"""The registration estimate's fresh memory: numpy's huge-page marking switched off while
it runs (its page faults were most of the estimate's system time), the numbers unchanged."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import txmdb.analysis.registration as reg
from txmdb.synthetic.drift import ALL_DIFFICULTIES, drifted_stack

_switch = np._core.multiarray._set_madvise_hugepage


def _state() -> bool:
    """numpy's huge-page marking, read without changing it."""
    was = _switch(False)
    _switch(was)
    return was


@pytest.mark.parametrize("was", [True, False])
def test_huge_pages_off_inside_and_restored_after_even_on_error(was):
    _switch(was)
    try:
        with pytest.raises(RuntimeError):
            with reg._no_huge_pages():
                assert _switch(False) is False                  # off inside (and left off)
                raise RuntimeError("boom")
        assert _switch(was) is was                              # as it was before
    finally:
        _switch(True)


def _estimate(d, shape, max_shift):
    return reg.estimate_shifts(lambda i, w: reg.read_window(d.stack, i, w), d.stack.shape[0], d.reference_index,
                               shape=shape, max_shift=max_shift)


@pytest.mark.parametrize("shape, max_shift", [((56, 60, 64), 8.0), ((150, 160), 20.0)], ids=["3d", "2d"])
def test_estimate_without_huge_pages_gives_the_same_bits_and_again_in_the_same_process(monkeypatch, shape,
                                                                                       max_shift):
    d = drifted_stack(shape, n_energies=12, seed=5, max_drift=4.0, **ALL_DIFFICULTIES)
    seen = []
    real = reg._refine

    def spy(*args, **kwargs):
        seen.append(_state())                                   # the state the refinement ran in
        return real(*args, **kwargs)
    monkeypatch.setattr(reg, "_refine", spy)
    _switch(True)
    first = _estimate(d, shape, max_shift)
    assert seen == [False] and _state() is True                 # off while it ran, on again after
    second = _estimate(d, shape, max_shift)                     # a second estimate, same process
    monkeypatch.setattr(reg, "_no_huge_pages", contextlib.nullcontext)
    marked = _estimate(d, shape, max_shift)                     # arrays marked for huge pages
    for got in (second, marked):
        assert np.array_equal(got[0], first[0]) and np.array_equal(got[1], first[1])
    assert np.abs(first[0] - d.shifts).max() < 0.5              # and it did register the stack
