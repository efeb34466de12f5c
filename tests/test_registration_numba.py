"""The registration estimate's faster paths give the numbers of the plain numpy ones (issue 10 item 7).

Compiled stencil (txmdb.analysis._registration_numba) against the numpy stencil on the
edge-padded array, bit for bit; the sort-based median against np.median; the Gram-product
second template against the explicit residual matrix.
"""

from __future__ import annotations

import numpy as np
import pytest

import txmdb.analysis.registration as reg


def _numpy_path(monkeypatch):
    monkeypatch.setattr(reg, "_numba", lambda: None)


def _both_paths(monkeypatch, fn, cases):
    """``(case, compiled result, numpy result)`` for each case (arguments of ``fn``)."""
    compiled = [fn(*case) for case in cases]
    _numpy_path(monkeypatch)
    return [(case, got, fn(*case)) for case, got in zip(cases, compiled)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_translate_is_the_numpy_translate_bit_for_bit(monkeypatch, dtype):
    assert reg._numba() is not None
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(60):
        nd = int(rng.integers(2, 4))
        shape = tuple(int(n) for n in rng.integers(1, 13, nd))
        shift = rng.uniform(-15, 15, nd) * rng.integers(0, 2, nd)      # whole, fractional, beyond the field
        cases.append((rng.standard_normal(shape).astype(dtype), shift, int(rng.choice([1, 3]))))
    for (a, s, order), got, want in _both_paths(monkeypatch, reg._translate, cases):
        assert got.dtype == want.dtype and got.shape == a.shape
        assert np.array_equal(got, want), (a.shape, s, order)


def test_compiled_apply_shift_slab_is_the_numpy_one_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(4)
    cases = []
    for _ in range(80):
        nd = int(rng.integers(2, 4))
        shape = tuple(int(n) for n in rng.integers(2, 12, nd))
        start = [int(rng.integers(0, n)) for n in shape]
        stop = [int(rng.integers(a + 1, n + 1)) for a, n in zip(start, shape)]
        shift = rng.uniform(-14, 14, nd)
        order = int(rng.choice([1, 3]))
        plan = reg.read_plan(shift, start, stop, shape, order=order)
        block = rng.standard_normal(shape).astype(rng.choice([np.float32, np.float64]))[plan.source]
        cases.append((block, plan))

    def run():
        out = []
        for block, plan in cases:
            into = np.full(plan.out_shape, -7.0, dtype=np.float32)
            returned = reg.apply_shift_slab(block, plan, out=into)
            assert returned is into
            out.append((reg.apply_shift_slab(block, plan), into))
        return out

    compiled = run()
    _numpy_path(monkeypatch)
    for (got, got_into), (want, want_into) in zip(compiled, run()):
        assert got.dtype == want.dtype
        assert np.array_equal(got, want, equal_nan=True)
        assert np.array_equal(got_into, want_into, equal_nan=True)
        assert np.isnan(got).any() == np.isnan(want).any()


@pytest.mark.parametrize("n", [1, 2, 3, 8, 59, 60])
def test_sorted_median_is_numpy_median(n):
    rng = np.random.default_rng(n)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((n, 3000)) * 10.0 ** rng.uniform(-3, 3, 3000)).astype(dtype)
        x[:, :300] = np.round(x[:, :300])                              # ties
        got = reg._sorted_median(x)
        assert got.dtype == np.median(x, axis=0).dtype
        assert np.array_equal(got, np.median(x, axis=0))
        assert np.array_equal(reg._median0(x.reshape(n, 30, 100)), np.median(x, axis=0).reshape(30, 100))


def test_second_template_from_gram_products_matches_the_residual_matrix():
    rng = np.random.default_rng(5)
    n, shape = 12, (9, 10, 11)
    mean = rng.standard_normal(shape)
    a = rng.uniform(0.3, 2.0, n)
    mode = rng.standard_normal(shape)
    regs = (a[:, None, None, None] * mean + rng.uniform(-1, 1, n)[:, None, None, None] * mode
            + 0.05 * rng.standard_normal((n,) + shape)).astype(np.float32)
    got = reg._second_template(regs, a, mean)
    # the explicit form: residual matrix, gradient directions projected out, leading direction
    basis = []
    for g in np.gradient(mean):
        g = g.ravel().copy()
        for q in basis:
            g -= (q @ g) * q
        basis.append(g / np.linalg.norm(g))
    R = np.stack([r.ravel() - a[e] * mean.ravel() for e, r in enumerate(regs)])
    for q in basis:
        R -= np.outer(R @ q, q)
    want = np.linalg.eigh(R @ R.T)[1][:, -1] @ R
    want = want / np.linalg.norm(want) * np.linalg.norm(mean)
    sign = np.sign(got.ravel() @ want)                                 # an eigenvector's sign is arbitrary
    assert sign != 0
    np.testing.assert_allclose(sign * got.ravel(), want, rtol=0, atol=1e-9 * np.abs(want).max())
    assert abs(abs(got.ravel() @ mode.ravel()) / (np.linalg.norm(got) * np.linalg.norm(mode))) > 0.9


def test_compiled_gaussian_is_scipys_bit_for_bit(monkeypatch):
    from scipy import ndimage

    rng = np.random.default_rng(6)
    for _ in range(25):
        nd = int(rng.integers(2, 4))
        shape = tuple(int(n) for n in rng.integers(1, 30, nd))
        img = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-2, 2)).astype(np.float32)
        for sigma in (1.0, 4.0, 0.7):
            got = reg._gaussian(img, sigma)
            assert got.dtype == np.float32
            assert np.array_equal(got, ndimage.gaussian_filter(img, sigma, mode="nearest")), (shape, sigma)
    _numpy_path(monkeypatch)
    img = rng.standard_normal((5, 6, 7)).astype(np.float32)
    assert np.array_equal(reg._gaussian(img, 4.0), ndimage.gaussian_filter(img, 4.0, mode="nearest"))


@pytest.mark.parametrize("compiled", [True, False])
def test_registered_stack_over_a_box_is_the_cropped_whole(monkeypatch, compiled):
    if not compiled:
        _numpy_path(monkeypatch)
    rng = np.random.default_rng(7)
    J = rng.standard_normal((5, 14, 15, 16)).astype(np.float32)
    F = rng.standard_normal((14, 15, 16)).astype(np.float32)
    s = rng.uniform(-3, 3, (5, 3))
    c, b = rng.uniform(-1, 1, 5), rng.uniform(-1, 1, 5)
    box = ((2, 3, 1), (11, 13, 14))
    sl = tuple(slice(l, h) for l, h in zip(*box))
    got = reg._registered(J, s, 3, box, c, b, F)
    for e in range(5):
        whole = reg._translate(J[e] - np.float32(c[e]) * F - np.float32(b[e]), s[e], 3)
        assert np.array_equal(got[e], whole[sl])
    plain = reg._registered(J, s, 1)
    for e in range(5):
        assert np.array_equal(plain[e], reg._translate(J[e], s[e], 1))


def test_compiled_block_mean_is_the_numpy_one(monkeypatch):
    rng = np.random.default_rng(8)
    cases = []
    for _ in range(120):
        nd = int(rng.integers(2, 4))
        fs = tuple(int(v) for v in rng.integers(1, 7, nd))
        shape = tuple(int(g * rng.integers(1, 5) + rng.integers(0, 3)) for g in fs)
        a = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3)).astype(rng.choice([np.float32, np.float64]))
        if rng.random() < 0.3:                                          # NaN: the finite voxels' mean
            a.flat[int(rng.integers(0, a.size))] = np.nan
        cases.append((a, fs))
    for (a, fs), got, want in _both_paths(monkeypatch, reg._bin, cases):
        assert got.dtype == want.dtype == np.float32 or all(f == 1 for f in fs)
        assert np.array_equal(got, want, equal_nan=True), (a.shape, fs)
