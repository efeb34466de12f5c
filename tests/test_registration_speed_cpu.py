"""The registration estimate's CPU cut (issue 10 item 7): the same shifts, bit for bit.

Every compiled path added here (leave-one-out median template, the fit's residual, the
central differences of the fit and of the quality's standard error, the fixed pattern's
NaN-aware median) gives the numbers of the numpy path it replaces, and the whole
estimate run on them equals the whole estimate run without numba, on drifted stacks with
every difficulty, 2-D and two-level 3-D, within issue 10's targets. The estimate's
allocator policy keeps freed memory while it runs and returns it afterwards; under it the
register command records exactly the estimate of its file (energies shuffled on disk), on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

import txmdb.analysis._memory as _memory
import txmdb.analysis.registration as reg
from txmdb.synthetic.drift import ALL_DIFFICULTIES, drifted_stack, make_drifted, write_drifted_stack


def _numpy_path(monkeypatch):
    monkeypatch.setattr(reg, "_numba", lambda: None)


def _estimate(d):
    shape = d.stack.shape[1:]
    return reg.estimate_shifts(lambda i, w: reg.read_window(d.stack, i, w), d.stack.shape[0], d.reference_index,
                               shape=shape, max_shift=min(shape) / 4)


@pytest.mark.parametrize("shape, n_energies, drift, seed", [((112, 128), 30, 8.0, 1), ((64, 64, 64), 12, 5.0, 1)],
                         ids=["2d", "3d-two-levels"])
def test_compiled_estimate_is_the_numpy_estimate_bit_for_bit(monkeypatch, shape, n_energies, drift, seed):
    assert reg._numba() is not None
    d = drifted_stack(shape, n_energies=n_energies, seed=seed, max_drift=drift, **ALL_DIFFICULTIES)
    shifts, quality = _estimate(d)
    _numpy_path(monkeypatch)
    want_shifts, want_quality = _estimate(d)
    assert np.array_equal(shifts, want_shifts) and np.array_equal(quality, want_quality)
    err = shifts - d.shifts
    assert np.sqrt((err ** 2).mean(axis=0)).max() < 0.15 and np.abs(err).max() < 0.5
    assert quality.min() >= reg.QUALITY_THRESHOLD


@pytest.mark.parametrize("n", [2, 3, 4, 5, 24, 59, 60])
def test_compiled_leave_one_out_median_is_the_median_of_the_others(monkeypatch, n):
    rng = np.random.default_rng(n)
    regs = rng.standard_normal((n, 6, 7, 9)).astype(np.float32)
    regs[:, :2] = np.round(regs[:, :2])                               # ties
    template = reg._loo_median_template(regs)
    got = [template(e) for e in range(n)]
    _numpy_path(monkeypatch)
    numpy_template = reg._loo_median_template(regs)
    for e in range(n):
        want = numpy_template(e)
        assert got[e].dtype == want.dtype and got[e].shape == want.shape
        assert np.array_equal(got[e], want)
        assert np.array_equal(got[e], np.median(np.delete(regs, e, axis=0), axis=0).astype(np.float32))


@pytest.mark.parametrize("n", [1, 2, 3, 8, 23, 60])
def test_compiled_fixed_pattern_median_is_the_numpy_one(monkeypatch, n):
    rng = np.random.default_rng(10 + n)
    x = (rng.standard_normal((n, 4000)) * 10.0 ** rng.uniform(-3, 3, 4000)).astype(np.float32)
    x[:, :400] = np.round(x[:, :400])
    missing = rng.random(x.shape) < 0.3                                # energies whose box misses a voxel
    missing[:, 1000:2500] = False                                      # every energy there
    missing[:, 2500:2600] = True                                       # none
    x[missing] = np.nan
    got = reg._median_pattern(x.reshape(n, 40, 100))
    _numpy_path(monkeypatch)
    want = reg._median_pattern(x.reshape(n, 40, 100))
    assert got.dtype == want.dtype == np.float32
    assert np.array_equal(got, want)
    assert np.all(got.reshape(-1)[2500:2600] == 0)
    seen = ~np.isnan(x).all(axis=0)                                     # by some energy
    assert np.all(got.reshape(-1)[~seen] == 0)
    np.testing.assert_allclose(got.reshape(-1)[seen], np.nanmedian(x[:, seen], axis=0), rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 23, 24, 60])
def test_columns_sorted_as_rows_are_numpys_sort(n):
    rng = np.random.default_rng(20 + n)
    x = (rng.standard_normal((n, 3000)) * 10.0 ** rng.uniform(-3, 3, 3000)).astype(np.float32)
    x[:, :300] = np.round(x[:, :300])                                  # ties
    x[:, 300:400] = rng.choice([-0.0, 0.0], (n, 100)).astype(np.float32)  # signed zeros
    x[:, 400:410] = np.float32(1.4e-45) * rng.integers(-2, 3, (n, 10))     # subnormals
    x[rng.random(x.shape) < 0.1] = np.nan
    view = x[:, 7:2900]                                                 # a view, as the threads pass
    part = reg._columns_sorted(view)
    want = np.sort(view, axis=0).T
    assert part.flags.c_contiguous and part.dtype == np.float32
    assert np.array_equal(part, want, equal_nan=True) and np.array_equal(np.signbit(part), np.signbit(want))


def _fit_case(rng, shape, K):
    n = 6
    J = rng.standard_normal((n,) + shape).astype(np.float32)
    templates = [rng.standard_normal(shape).astype(np.float32) for _ in range(K)]
    F = rng.standard_normal(shape).astype(np.float32)
    s = rng.uniform(-2.5, 2.5, (n, len(shape)))
    s[0] = 0
    box = tuple(4 for _ in shape), tuple(k - 4 for k in shape)
    coef = rng.uniform(0.5, 1.5, (n, K))
    return J, s, templates, F, box, coef


@pytest.mark.parametrize("shape", [(23, 27), (15, 17, 19)], ids=["2d", "3d"])
@pytest.mark.parametrize("K", [1, 2])
@pytest.mark.parametrize("gauss_newton, with_pattern", [(False, True), (True, True), (True, False)])
def test_compiled_fit_is_the_numpy_fit(monkeypatch, shape, K, gauss_newton, with_pattern):
    rng = np.random.default_rng(len(shape) * 10 + K)
    J, s, templates, F, box, coef = _fit_case(rng, shape, K)

    def fit():
        return reg._fit(J, s, templates, F, box, 3, with_pattern=with_pattern, gauss_newton=gauss_newton,
                        coef=coef)

    got = fit()
    _numpy_path(monkeypatch)
    want = fit()
    for g, w in zip(got, want):
        assert np.array_equal(g, w, equal_nan=True)
    a, c, b, step, resid = got
    assert np.isnan(resid).any() and np.isfinite(resid).any()           # NaN outside each box only
    assert not gauss_newton or np.abs(step).max() > 0


@pytest.mark.parametrize("shape", [(30, 33), (14, 16, 18)], ids=["2d", "3d"])
def test_compiled_standard_error_is_the_numpy_one(monkeypatch, shape):
    rng = np.random.default_rng(7)
    other = rng.standard_normal(shape).cumsum(axis=-1)                # smooth along x: a gradient to fit
    reg_image = np.roll(other, 1, axis=-1) * 0.8 + 0.05 * rng.standard_normal(shape)
    got = reg._shift_error(reg_image, other)
    _numpy_path(monkeypatch)
    want = reg._shift_error(reg_image, other)
    assert got == want
    assert np.isfinite(got[0]) and got[1] > reg.MIN_DETECTION


def test_working_images_are_each_energy_band_passed_on_its_own():
    rng = np.random.default_rng(3)
    stack = rng.standard_normal((5, 20, 22, 24)).astype(np.float32)
    stack[2, 3, 4, 5] = np.nan                                          # filled with the median
    window = reg.Window((2, 1, 0), (18, 21, 24), 2)
    J = reg._working_images(lambda i, w: reg.read_window(stack, i, w), 5, window, (1.0, 4.0))
    assert J.shape == (5,) + window.shape and J.dtype == np.float32
    for i in range(5):
        smooth = reg._prepare(reg.read_window(stack, i, window), 1.0, i)
        assert np.array_equal(J[i], smooth - reg._gaussian(smooth, 4.0))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def test_freed_memory_is_kept_during_the_estimate_and_returned_after():
    assert _memory._glibc() is not None                                 # Linux: glibc
    size = 200 << 20
    # From the block's peak: it may reuse freed heap pages already resident, so RSS can
    # grow by less than its size.
    with reg._freed_memory_kept():
        block = np.ones(size // 8)                                       # from the heap, touched
        peak = _rss_bytes()
        del block
        assert peak - _rss_bytes() < 0.1 * size                          # freed, still held for reuse
    deadline = time.monotonic() + 10                                     # trimmed on a thread of its own
    while peak - _rss_bytes() <= 0.9 * size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert peak - _rss_bytes() > 0.9 * size                              # handed back on the way out


# ------------------------------------------------------------------ the register command

def _stack_file(tmp_path, name, **kwargs):
    phantom = make_drifted((40, 44, 48), n_energies=8, seed=4, max_drift=3.0, **ALL_DIFFICULTIES)
    path = tmp_path / name
    write_drifted_stack(path, phantom, **kwargs)
    return path


def test_register_scan_records_the_estimate_of_its_file(catalog, tmp_path):
    from txmdb.catalog.registration import default_reference_index, register_scan, shift_array
    from txmdb.catalog.samples import add_sample
    from txmdb.catalog.txm import ingest_scan
    from txmdb.io.hdf5 import AbsorbanceView, open_stack
    from txmdb.vocabulary import REGISTRATION_MAX_SHIFT_FRACTION

    path = _stack_file(tmp_path, "scan.h5", energy_order=np.array([3, 0, 7, 1, 6, 2, 5, 4]))
    with catalog.session() as session:
        add_sample(session, "S")
    scan, _ = ingest_scan(catalog, path, sample="S")
    registration = register_scan(catalog, scan.id, accept_poor=True)     # a mid-edge energy is flagged
    info = open_stack(path)
    reference = default_reference_index(list(info.energies_ev))
    with h5py.File(path, "r") as f:
        view = AbsorbanceView(info, f)
        want, quality = reg.estimate_shifts(lambda i, w: reg.read_window(view, i, w), 8, reference,
                                            shape=info.spatial_shape,
                                            max_shift=REGISTRATION_MAX_SHIFT_FRACTION * min(info.spatial_shape))
    assert registration.reference_index == reference
    assert np.array_equal(shift_array(registration), want)
    stored = [r.quality for r in sorted(registration.shifts, key=lambda r: r.energy_index)]
    assert np.array_equal(np.array(stored, dtype=np.float64), quality)
