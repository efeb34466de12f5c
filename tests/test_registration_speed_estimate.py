"""The registration estimate's cut (issue 10 item 7, docs/registration.md "Estimate cut").

The leave-one-out rounds stop once settled, and agree with the full rounds to the
settling tolerance; the quality is measured at the final shifts without another template pass, and still
separates registered from unregistrable energies; the cyclic garbage collector is paused
only while the estimate runs.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import txmdb.analysis.registration as reg
from txmdb.synthetic.drift import ALL_DIFFICULTIES, drifted_stack


def _working(d):
    shape = d.stack.shape[1:]
    window = reg.Window((0,) * len(shape), shape, 1)
    return reg._working_images(lambda i, w: reg.read_window(d.stack, i, w), d.stack.shape[0], window,
                               reg._DEFAULT_BAND)


def test_settled_restart_stops_early_and_agrees_with_every_round(monkeypatch):
    d = drifted_stack((96, 96), n_energies=16, seed=4, max_drift=6.0, **ALL_DIFFICULTIES)
    J = _working(d)
    start = reg._start(J, d.reference_index, 25.0, rounds=0)
    rounds = []
    real = reg._loo_median_template

    def counted(regs):
        rounds.append(1)
        return real(regs)
    monkeypatch.setattr(reg, "_loo_median_template", counted)
    early = reg._restart(J, start, d.reference_index, reg._RESTART_REACH, 6)
    n_early, settled = len(rounds), reg._RESTART_SETTLED
    monkeypatch.setattr(reg, "_RESTART_SETTLED", 0.0)
    rounds.clear()
    full = reg._restart(J, start, d.reference_index, reg._RESTART_REACH, 6)
    assert len(rounds) == 6 and n_early < 6
    assert np.abs(early - full).max() < settled
    assert np.abs(early - d.shifts).max() < 1.5                       # a start, within the refinement's reach


@pytest.mark.parametrize("was_enabled", [True, False])
def test_garbage_collector_paused_during_the_estimate_only(monkeypatch, was_enabled):
    d = drifted_stack((64, 64), n_energies=6, seed=1, max_drift=3.0)
    seen = []
    real = reg._refine

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)
    monkeypatch.setattr(reg, "_refine", spy)
    (gc.enable if was_enabled else gc.disable)()
    try:
        reg.estimate_shifts(lambda i, w: reg.read_window(d.stack, i, w), 6, d.reference_index, shape=(64, 64),
                            max_shift=16)
        assert seen == [False]
        assert gc.isenabled() is was_enabled
    finally:
        gc.enable()


def test_quality_at_the_final_shifts_flags_only_the_unregistrable_energy():
    d = drifted_stack((120, 120), n_energies=16, seed=2, max_drift=5.0, **ALL_DIFFICULTIES)
    stack = d.stack.copy()
    stack[5] = np.random.default_rng(0).normal(0.3, 0.05, stack[5].shape)   # no sample at all
    shifts, quality = reg.estimate_shifts(lambda i, w: reg.read_window(stack, i, w), 16, d.reference_index,
                                          shape=(120, 120), max_shift=30)
    assert quality[5] < reg.QUALITY_THRESHOLD
    good = np.delete(np.arange(16), 5)
    err = np.abs(shifts[good] - d.shifts[good]).max(axis=1)
    assert err.max() < 0.5
    assert np.all(quality[good][err < 0.3] >= reg.QUALITY_THRESHOLD)


@pytest.mark.parametrize("shape", [(30, 31, 33), (40, 37)], ids=["3d", "2d"])
@pytest.mark.parametrize("order", [1, 3])
def test_pattern_removed_only_where_the_stencil_reads_gives_the_same_images(monkeypatch, shape, order):
    rng = np.random.default_rng(order)
    n = 7
    J = rng.standard_normal((n,) + shape).astype(np.float32)
    F = rng.standard_normal(shape).astype(np.float32)
    s = rng.uniform(-9, 9, (n, len(shape)))
    s[1], s[2], s[3], s[4] = 0, np.round(s[2]), 40, -40           # whole voxels, and beyond the field
    c, b = rng.uniform(0, 2, n), rng.uniform(-1, 1, n)
    box = (tuple(3 for _ in shape), tuple(k - 5 for k in shape))
    cropped = reg._registered(J, s, order, box, c, b, F)
    assert reg._source_box(box, s[1], order, shape)[0] != [0] * len(shape)     # a real crop
    monkeypatch.setattr(reg, "_numba", lambda: None)                   # the whole-grid numpy path
    whole = reg._registered(J, s, order, box, c, b, F)
    assert np.array_equal(cropped, whole)
    expected = [reg._translate(J[e] - np.float32(c[e]) * F - np.float32(b[e]), s[e], order)[reg._box_slices(*box)]
                for e in range(n)]
    assert np.array_equal(cropped, np.stack(expected))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 127, 128, 129, 1000, 4097, 100003])
def test_compiled_pairwise_sum_is_numpys_sum(n):
    x = np.random.default_rng(n).standard_normal(n) * 1e3
    assert reg._numba().pairwise_sum(x, 0, n) == np.add.reduce(x)


@pytest.mark.parametrize("shape", [(53, 52, 58), (40, 45), (2, 2, 2), (3, 200), (129, 131)])
def test_compiled_residual_spreads_are_numpys_variances(monkeypatch, shape):
    r = np.random.default_rng(len(shape)).standard_normal(shape).cumsum(axis=-1) * 37.0
    got = reg._residual_spreads(r)
    grads = np.gradient(r)
    assert got == (float(r.var()), float(np.mean([g.var() for g in grads])))
    monkeypatch.setattr(reg, "_numba", lambda: None)
    assert reg._residual_spreads(r) == got
