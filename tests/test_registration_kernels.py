"""Energy-stack registration kernels (issue 10, DESIGN §10) against exact synthetic truth.

Pure kernels only: no catalogue, no CLI. The synthetic stacks of
``txmdb.synthetic.drift`` render every energy with the particles moved analytically, so the
true sub-voxel shifts are known exactly.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy import ndimage as ndi

from txmdb.analysis.edge import PRESETS, EdgeKernel
from txmdb.analysis.registration import (QUALITY_THRESHOLD, Window, apply_shift_slab, estimate_shifts,
                                         integer_shifts, read_plan, read_window, registered_slab,
                                         valid_box, valid_mask)
from txmdb.synthetic.drift import ALL_DIFFICULTIES, drifted_stack, make_drifted, write_drifted_stack


def _reader(stack):
    return lambda i, window: read_window(stack, i, window)


def _estimate(d, **kwargs):
    shape = d.stack.shape[1:]
    kwargs.setdefault("max_shift", min(shape) / 4)
    return estimate_shifts(_reader(d.stack), d.stack.shape[0], d.reference_index, shape=shape, **kwargs)


def _mid_edge(energies_ev):
    return (energies_ev > 8335.0) & (energies_ev < 8342.0)


def _rms_max(est, truth):
    err = est - truth
    return np.sqrt((err ** 2).mean(axis=0)), np.abs(err).max()


def assert_meets_targets(est, d, difficulties: str):
    """Issue 10's accuracy targets (≤ 0.1 voxel rms per axis on a clean stack; ≤ 0.15 rms and
    0.5 worst with every difficulty), a clean stack's worst also within 0.15 here, and the
    reference energy exactly 0."""
    rms, worst = _rms_max(est, d.shifts)
    assert np.all(est[d.reference_index] == 0)
    if difficulties == "clean":
        assert rms.max() < 0.1 and worst < 0.15
    else:
        assert rms.max() < 0.15 and worst < 0.5
    return rms


# --- the synthetic truth ------------------------------------------------------------------

def test_drifted_phantom_truth():
    ph = make_drifted((20, 24, 24), n_energies=12, noise=0.01, fixed_pattern=True, jumps=True, seed=3)
    assert ph.shifts.shape == (12, 3) and np.all(ph.shifts[ph.reference_index] == 0)
    assert np.abs(ph.shifts).max() <= 8.0 + 1e-12
    # noise and fixed pattern drawn per slice: any slab partition renders the same stack
    np.testing.assert_array_equal(ph.render(), np.concatenate([ph.slab(0, 7), ph.slab(7, 20)], axis=1))
    # the particle is moved analytically: an integer shift equals a voxel shift exactly
    # (up to the background line, which does not move)
    e = np.array([8400.0, 8400.0])
    moved = make_drifted((30, 30), energies_ev=e, reference_index=0, shifts=[[0, 0], [0, 2.0]]).render()
    np.testing.assert_allclose(moved[1][:, 2:], moved[0][:, :-2], atol=1e-6)


def test_truth_edge_map_is_the_edge_of_the_undrifted_stack():
    # every energy rendered at s = 0: the half-height edge of each spectrum is the truth map
    energies = drifted_stack((8, 8), n_energies=60).energies_ev
    ph = make_drifted((28, 28), energies_ev=energies, shifts=np.zeros((60, 2)), contrast_change=True, seed=4)
    edge, mask = ph.edge_truth()
    res = EdgeKernel(energies, PRESETS["Ni"])(ph.render())
    both = mask & res.valid
    assert both.sum() > 0.9 * mask.sum()
    assert np.abs(res.edge_ev[both] - edge[both]).max() < 0.05


def test_writer_streams_data_exchange(tmp_path):
    ph = make_drifted((10, 16, 16), n_energies=6, noise=0.01, seed=1)
    path = tmp_path / "drift.h5"
    write_drifted_stack(path, ph, voxel_size_nm=30.0, slab_size=3)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["/exchange/data"][...], ph.render())
        np.testing.assert_array_equal(f["/exchange/energy"][...], ph.energies_ev)
        assert f["/exchange/data"].attrs["voxel_size_nm"] == 30.0


# --- estimation against an obviously correct reference ------------------------------------

def _brute_force(ref, mov, reach):
    """Integer search of the mean squared difference over the overlap, then a parabola per axis."""
    def cost(d):
        sl_r = tuple(slice(max(0, k), n + min(0, k)) for k, n in zip(d, ref.shape))
        sl_m = tuple(slice(max(0, -k), n + min(0, -k)) for k, n in zip(d, ref.shape))
        # mov(x) = ref(x - d)  ->  compare ref[x] with mov[x + d]
        return float(((ref[sl_r] - mov[sl_m]) ** 2).mean())
    grid = range(-reach, reach + 1)
    best = min(((cost((dy, dx)), (dy, dx)) for dy in grid for dx in grid))[1]
    out = []
    for axis in range(2):
        lo, hi = list(best), list(best)
        lo[axis] -= 1
        hi[axis] += 1
        c_lo, c0, c_hi = cost(tuple(lo)), cost(best), cost(tuple(hi))
        out.append(best[axis] + 0.5 * (c_lo - c_hi) / (c_lo - 2 * c0 + c_hi))
    # cost compares ref[x] with mov[x + d]: the minimising d is minus the sample's move
    return -np.array(out)


def test_agrees_with_brute_force_reference():
    d = drifted_stack((40, 40), n_energies=8, max_drift=3.0, seed=7)
    est, quality = _estimate(d, max_shift=8)
    smooth = [ndi.gaussian_filter(x.astype(np.float64), 1.0) for x in d.stack]
    brute = np.stack([_brute_force(smooth[d.reference_index], smooth[e], 5) for e in range(8)])
    assert np.abs(brute - d.shifts).max() < 0.2        # the reference is right...
    assert np.abs(est - brute).max() < 0.2             # ...and so is the kernel
    # 0.08: with only 8 energies the median template fits the mid-edge energy less well
    # than the mean did (0.068 against 0.006 voxel; docs/registration.md)
    assert np.abs(est - d.shifts).max() < 0.08
    assert np.all(quality > QUALITY_THRESHOLD)


@pytest.mark.parametrize("difficulties", ["clean", "all"])
def test_accuracy_2d(difficulties):
    kw = ALL_DIFFICULTIES if difficulties == "all" else {}
    d = drifted_stack((160, 160), n_energies=40, seed=2, **kw)
    est, quality = _estimate(d)
    rms = assert_meets_targets(est, d, difficulties)
    assert np.all(quality > QUALITY_THRESHOLD)
    # whole-voxel alignment cannot beat its rounding error (~0.29 voxel rms)
    whole = integer_shifts(_reader(d.stack), 40, d.reference_index, shape=(160, 160), max_shift=40)
    assert _rms_max(whole, d.shifts)[0].min() > 2 * rms.max()


@pytest.mark.parametrize("difficulties", ["clean", "all"])
def test_accuracy_3d_two_levels(difficulties):
    # 64³ read binned by 2 at the coarse level, then a 40³ full-resolution window
    kw = ALL_DIFFICULTIES if difficulties == "all" else {}
    d = drifted_stack((64, 64, 64), n_energies=30, seed=3, **kw)
    est, quality = _estimate(d, coarse_voxels=32 ** 3, fine_voxels=40 ** 3)
    assert_meets_targets(est, d, difficulties)
    if difficulties == "clean":
        assert np.all(quality > QUALITY_THRESHOLD)
    else:
        # with 4.4 eV steps through the edge, the energy in its middle (particles with
        # inverted contrast) looks like no other energy: flagged, though registered
        assert np.all((quality > QUALITY_THRESHOLD) | _mid_edge(d.energies_ev))


def test_unregistrable_energies_have_low_quality():
    d = drifted_stack((120, 120), n_energies=16, seed=1, noise=0.02, contrast_change=True)
    stack = d.stack.copy()
    stack[3] = np.random.default_rng(0).normal(0.3, 0.05, stack[3].shape)   # no sample at all
    stack[9] = 0.25                                                          # a constant frame
    est, quality = estimate_shifts(_reader(stack), 16, d.reference_index, shape=(120, 120), max_shift=30)
    bad = quality < QUALITY_THRESHOLD
    assert quality[3] == 0 and quality[9] == 0                 # no sample detected
    others = np.ones(16, bool)
    others[[3, 9]] = False
    assert not np.any(bad & others & ~_mid_edge(d.energies_ev))
    assert np.abs(est[others] - d.shifts[others]).max() < 0.2


def test_nan_voxels_are_tolerated():
    d = drifted_stack((80, 80), n_energies=8, seed=5, max_drift=4.0)
    stack = d.stack.copy()
    stack[2, :5] = np.nan
    est, quality = estimate_shifts(_reader(stack), 8, d.reference_index, shape=(80, 80), max_shift=20)
    clean, _ = _estimate(d, max_shift=20)
    assert np.abs(est - clean).max() < 0.01
    assert _rms_max(est, d.shifts)[0].max() < 0.1 and np.all(quality > QUALITY_THRESHOLD)


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("case, message", [
    ("one energy", "at least two energies"),
    ("all nan", "energy index 1: every value is NaN"),
    ("reference", "reference energy index 5 is not in the stack"),
    ("max shift", "larger than half the field of view"),
    ("roi", "at least 8 voxels"),
])
def test_bad_input(case, message):
    stack = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    n, ref, max_shift, roi = 3, 0, 8.0, None
    if case == "one energy":
        n = 1
    elif case == "all nan":
        stack[1] = np.nan
    elif case == "reference":
        ref = 5
    elif case == "max shift":
        max_shift = 16.5
    else:
        roi = (slice(0, 4), slice(0, 32))
    with pytest.raises(ValueError, match=message):
        estimate_shifts(_reader(stack), n, ref, shape=(32, 32), max_shift=max_shift, roi=roi)


# --- application ------------------------------------------------------------------------------

SHIFTS = np.array([[0.0, 0.0, 0.0], [1.3, -2.7, 0.5], [-3.0, 2.25, -0.999], [0.5, 0.0, 7.2]])


@pytest.mark.parametrize("order", [1, 3])
def test_registered_slabs_do_not_depend_on_slab_size(order):
    stack = np.random.default_rng(1).random((4, 21, 17, 15)).astype(np.float32)
    whole = registered_slab(stack, SHIFTS, (0, 0, 0), (21, 17, 15), order=order)
    assert whole.dtype == np.float32
    for size in (1, 4, 7):
        parts = np.concatenate([registered_slab(stack, SHIFTS, (a, 0, 0), (min(a + size, 21), 17, 15), order=order)
                                for a in range(0, 21, size)], axis=1)
        np.testing.assert_array_equal(parts, whole)                    # bit for bit, NaNs included
    # a box cut in every axis is the same voxels too
    box = registered_slab(stack, SHIFTS, (5, 3, 2), (12, 15, 9), order=order)
    np.testing.assert_array_equal(box, whole[:, 5:12, 3:15, 2:9])


def test_linear_is_scipy_ndimage_shift():
    stack = np.random.default_rng(2).random((4, 12, 11, 10))
    reg = registered_slab(stack, SHIFTS, (0, 0, 0), (12, 11, 10), order=1)
    for e in range(4):
        expected = ndi.shift(stack[e], -SHIFTS[e], order=1, mode="nearest")   # raw(x + s)
        finite = np.isfinite(reg[e])
        np.testing.assert_allclose(reg[e][finite], expected[finite], rtol=0, atol=1e-12)


def test_validity_at_the_borders():
    # x valid iff 0 <= x + s_e <= N - 1 for every energy
    shifts = np.array([[0.0], [2.5], [-1.0]])
    assert valid_box(shifts, (10,)) == ((1,), (7,))
    np.testing.assert_array_equal(valid_mask(shifts, (10,)), (np.arange(10) >= 1) & (np.arange(10) < 7))
    row = np.arange(10, dtype=np.float64)[None].repeat(3, 0)
    reg = registered_slab(row, shifts, (0,), (10,), order=1)
    np.testing.assert_array_equal(np.isfinite(reg[1]), np.arange(10) < 7)      # 6 + 2.5 = 8.5 ok, 7 + 2.5 > 9
    np.testing.assert_array_equal(np.isfinite(reg[2]), np.arange(10) >= 1)     # exact integer: x = 9 -> 8 ok
    np.testing.assert_allclose(reg[1][:7], np.arange(7) + 2.5)
    np.testing.assert_array_equal(np.isfinite(reg).all(axis=0), valid_mask(shifts, (10,)))
    # a window wholly outside the field of view reads a border voxel and is all NaN
    plan = read_plan([20.0], (0,), (4,), (10,))
    assert np.isnan(apply_shift_slab(row[0][plan.source], plan)).all()
    # 3-D: the valid box of the stack is where every energy is finite
    stack = np.random.default_rng(3).random((4, 12, 11, 10)).astype(np.float32)
    reg = registered_slab(stack, SHIFTS, (0, 0, 0), (12, 11, 10), order=3)
    np.testing.assert_array_equal(np.isfinite(reg).all(axis=0), valid_mask(SHIFTS, (12, 11, 10)))


def test_true_shifts_register_the_phantom():
    # registered_e(x) = raw_e(x + s_e): applying the true shifts undoes the drift
    ph = make_drifted((24, 32, 32), n_energies=6, seed=6, max_drift=4.0)
    still = make_drifted((24, 32, 32), n_energies=6, seed=6, max_drift=4.0,
                         shifts=np.zeros_like(ph.shifts))
    # same phantom: the particles are placed from the drift's extent, so place them alike
    still._particles = ph._particles
    reg = registered_slab(ph.render(), ph.shifts, (0, 0, 0), (24, 32, 32), order=3)
    ok = valid_mask(ph.shifts, (24, 32, 32))
    err = np.abs(reg[:, ok] - still.render()[:, ok])
    assert err.max() < 0.12 and err.mean() < 0.002
    wrong = registered_slab(ph.render(), -ph.shifts, (0, 0, 0), (24, 32, 32), order=3)
    ok_w = valid_mask(-ph.shifts, (24, 32, 32))
    assert np.abs(wrong[:, ok_w] - still.render()[:, ok_w]).mean() > 10 * err.mean()


def test_read_window_bins_slab_by_slab():
    stack = np.random.default_rng(4).random((2, 13, 9, 8)).astype(np.float32)
    w = Window((1, 0, 2), (13, 9, 8), 3)
    got = read_window(stack, 1, w, slab_bytes=1)      # one block of slices per read
    expected = stack[1, 1:13, 0:9, 2:8].reshape(4, 3, 3, 3, 2, 3).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got.shape == w.shape == (4, 3, 2)


def test_binning_ignores_nan_voxels():
    # one NaN voxel must not blank its coarse bin; a wholly NaN block stays NaN
    stack = np.random.default_rng(5).random((1, 4, 4, 4)).astype(np.float32)
    stack[0, 0, 0, 0] = np.nan
    stack[0, 2:4, 2:4, 2:4] = np.nan
    got = read_window(stack, 0, Window((0, 0, 0), (4, 4, 4), 2))
    assert np.isfinite(got[0, 0, 0]) and np.isnan(got[1, 1, 1])
    np.testing.assert_allclose(got[0, 0, 0], np.nanmean(stack[0, :2, :2, :2]), rtol=1e-6)
    assert np.isfinite(np.delete(got.ravel(), 7)).all()


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_accuracy_2d_several_seeds(seed):
    # every difficulty, the 2-D size `txm register` tests use; 48³ fields at ±5 voxels
    # still fail on some seeds (docs/registration.md, "Multi-seed robustness")
    d = drifted_stack((112, 128), n_energies=30, seed=seed, **ALL_DIFFICULTIES)
    est, quality = _estimate(d)
    rms, worst = _rms_max(est, d.shifts)
    assert rms.max() < 0.15 and worst < 0.5
    assert np.all((quality > QUALITY_THRESHOLD) | _mid_edge(d.energies_ev))


def _stack_48(seed):
    return drifted_stack((48, 48, 48), n_energies=24, seed=seed, max_drift=5.0, **ALL_DIFFICULTIES)


def test_fixed_pattern_does_not_pull_the_pre_edge_group():
    # seed 0: correlated against the reference image alone, the rings pulled the ten
    # pre-edge energies 1-2.5 voxels towards zero; the leave-one-out median start does not
    d = _stack_48(0)
    est, quality = _estimate(d)
    rms, worst = _rms_max(est, d.shifts)
    err = np.abs(est - d.shifts).max(axis=1)
    assert worst < 0.8 and rms.max() < 0.15
    assert err[d.energies_ev < 8335.0].max() < 0.5
    # what is left wrong (the mid-edge energy, 0.66 voxel) is flagged
    assert np.all(quality[err > 0.5] < QUALITY_THRESHOLD)


def test_a_group_misregistered_together_is_pulled_back():
    # seed 4: with a mean template the ten pre-edge energies went 1-2.6 voxels wrong
    # together and vouched for each other; the median template of the refinement does
    # not follow a minority (docs/registration.md)
    d = _stack_48(4)
    est, quality = _estimate(d)
    rms, worst = _rms_max(est, d.shifts)
    err = np.abs(est - d.shifts).max(axis=1)
    assert rms.max() < 0.15 and worst < 0.5
    flagged = quality < QUALITY_THRESHOLD
    assert not np.any(flagged & (err < 0.3))          # nothing well registered is flagged
