"""Registration estimate, session 20: the fits' normal equations summed in float64 by a
compiled Gram kernel instead of BLAS' float32 ``A @ A.T`` (issue 10, item 7;
docs/registration.md). References are plain numpy in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

import txmdb.analysis.registration as reg
from txmdb.analysis import _registration_numba as kernels


def _exact_gram(rows: np.ndarray) -> np.ndarray:
    """Σ_i r_j r_k with each product exact (float64 of float32/float64 values) and the sum
    correctly rounded (math.fsum): the reference the kernel must match to ~1e-14."""
    w = rows.astype(np.float64)
    n = len(w)
    return np.array([[math.fsum(w[j] * w[k]) for k in range(n)] for j in range(n)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, m", [(1, 1), (2, 3), (4, 17), (7, 1001), (8, 20000)])
def test_gram_kernel_is_the_float64_gram_matrix(dtype, n, m):
    rng = np.random.default_rng(n * 1000 + m)
    rows = (rng.standard_normal((n, m)) * 10.0 ** rng.uniform(-2, 2, (n, 1))).astype(dtype)
    rows[-1, : m // 2] += 3.0                                      # a row with a large mean, like the constant
    got = np.full((n, n), np.nan)
    kernels.gram(rows, got)
    want = _exact_gram(rows)
    assert np.array_equal(got, got.T)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_gram_of_float32_rows_is_more_exact_than_float32_blas():
    # the point of the kernel: float32 products summed in float32 by BLAS lose ~1e-6
    rng = np.random.default_rng(3)
    rows = (rng.standard_normal((5, 200_000)) + 2.0).astype(np.float32)
    got = np.empty((5, 5))
    kernels.gram(rows, got)
    want = _exact_gram(rows)
    blas = (rows @ rows.T).astype(np.float64)                      # (the fits' products before)
    err_kernel = np.abs(got - want).max() / np.abs(want).max()
    err_blas = np.abs(blas - want).max() / np.abs(want).max()
    assert err_kernel < 1e-13 < err_blas


@pytest.mark.parametrize("compiled", [True, False])
def test_normal_equations_are_the_float64_products(monkeypatch, compiled):
    if not compiled:
        monkeypatch.setattr(reg, "_numba", lambda: None)
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((6, 3001)).astype(np.float32)
    G, Ay = reg._normal_equations(rows)
    w = rows.astype(np.float64)
    np.testing.assert_allclose(G, w[:-1] @ w[:-1].T, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(Ay, w[:-1] @ w[-1], rtol=1e-12, atol=1e-10)
    assert G.shape == (5, 5) and Ay.shape == (5,)


def test_numpy_normal_equations_are_the_compiled_ones_bit_for_bit(monkeypatch):
    # the same summation order on both paths: an estimate without numba gives the same shifts
    rng = np.random.default_rng(6)
    cases = [(rng.standard_normal((n, m)) * 10.0 ** rng.uniform(-3, 3)).astype(dtype)
             for n, m, dtype in [(2, 1, np.float32), (3, 63, np.float32), (4, 64, np.float64), (5, 65, np.float32),
                                 (8, 10_007, np.float32), (6, 4096, np.float64)]]
    compiled = [reg._normal_equations(rows) for rows in cases]
    monkeypatch.setattr(reg, "_numba", lambda: None)
    for rows, (G, Ay) in zip(cases, compiled):
        G_np, Ay_np = reg._normal_equations(rows)
        assert np.array_equal(G, G_np) and np.array_equal(Ay, Ay_np), rows.shape
    assert kernels.GRAM_LANES == 64                                 # the numpy path's lanes


@pytest.mark.parametrize("shape", [(40, 44), (22, 24, 26)], ids=["2d", "3d"])
def test_fit_recovers_gains_pattern_and_offsets_as_lstsq_does(shape):
    # J_e = a_e T(x - s_e) + c_e F + b_e exactly: the fit's a, c, b against float64
    # least squares (numpy's lstsq) of the same columns over each energy's box
    rng = np.random.default_rng(11)
    n = 5
    T = rng.standard_normal(shape).astype(np.float32)
    F = rng.standard_normal(shape).astype(np.float32)
    s = rng.uniform(-2.0, 2.0, (n, len(shape)))
    s[0] = 0
    a_true, c_true, b_true = rng.uniform(0.5, 2, n), rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    J = np.stack([(a_true[e] * reg._translate(T, -s[e], 3) + c_true[e] * F + b_true[e]).astype(np.float32)
                  for e in range(n)])
    box = tuple(4 for _ in shape), tuple(k - 4 for k in shape)
    a, c, b, step, resid = reg._fit(J, s, [T], F, box, 3, with_pattern=True, gauss_newton=False)
    for e in range(n):
        blo, bhi = reg._lab_box(*box, s[e], shape)
        sl = tuple(slice(lo, hi) for lo, hi in zip(blo, bhi))
        moved = reg._translate(T, -s[e], 3)[sl].ravel()
        design = np.stack([moved, F[sl].ravel(), np.ones(moved.size)], axis=1).astype(np.float64)
        want, *_ = np.linalg.lstsq(design, J[e][sl].ravel().astype(np.float64), rcond=None)
        np.testing.assert_allclose([a[e, 0], c[e], b[e]], want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose([a[e, 0], c[e], b[e]], [a_true[e], c_true[e], b_true[e]], atol=1e-4)
        # the residual without the pattern term, over its gain: the pattern itself (NaN outside the box)
        scale = c[e] if abs(c[e]) > 0.2 else 1.0
        np.testing.assert_allclose(resid[e][sl], F[sl] * (c[e] / scale), atol=1e-4)
        assert np.isnan(resid[e]).sum() == resid[e].size - resid[e][sl].size


def _shift_error_reference(reg_image: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """The standard error and t-value of _shift_error's docstring, in plain float64 numpy:
    least squares of reg on (other, -∇other, 1) inside a one-voxel border, the residual
    variance times its correlation volume times diag((AᵀA)⁻¹)."""
    nd = reg_image.ndim
    inner = (slice(1, -1),) * nd
    y = reg_image[inner].ravel()
    cols = [other[inner].ravel()] + [-g[inner].ravel() for g in np.gradient(other)] + [np.ones(y.size)]
    A = np.stack(cols, axis=1)
    sol, *_ = np.linalg.lstsq(A, y, rcond=None)
    cov = np.linalg.inv(A.T @ A)
    r = (y - A @ sol).reshape(reg_image[inner].shape)
    var_r = r.var()
    var_d = np.mean([g.var() for g in np.gradient(r)])
    volume = max(1.0, (4 * math.pi * var_r / (2 * var_d)) ** (nd / 2))
    var = var_r * volume * np.diag(cov)
    se = np.sqrt(var[1:1 + nd]) / abs(sol[0])
    return float(np.sqrt(np.mean(se ** 2))), float(abs(sol[0]) / math.sqrt(var[0]))


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("shape", [(30, 33), (14, 16, 18)], ids=["2d", "3d"])
def test_shift_error_is_the_least_squares_reference(monkeypatch, compiled, shape):
    if not compiled:
        monkeypatch.setattr(reg, "_numba", lambda: None)
    rng = np.random.default_rng(9)
    other = rng.standard_normal(shape).cumsum(axis=-1)                # smooth along x: a gradient to fit
    reg_image = np.roll(other, 1, axis=-1) * 0.8 + 0.05 * rng.standard_normal(shape) + 0.3
    got = reg._shift_error(reg_image, other)
    want = _shift_error_reference(reg_image, other)
    np.testing.assert_allclose(got, want, rtol=1e-8)
    assert 0 < got[0] < 1 and got[1] > reg.MIN_DETECTION


def _stencil_reference(a: np.ndarray, bases, taps, out_shape) -> np.ndarray:
    """Axis by axis ``x[i] = Σ_k w_k x[clamp(i + base + o_k)]`` with np.take: the first tap's
    product, then each next tap's product added, in the array's dtype (shift3's contract)."""
    x = a
    for axis, (base, (offsets, weights), n_out) in enumerate(zip(bases, taps, out_shape)):
        i = np.arange(n_out)
        acc = None
        for o, w in zip(offsets, weights):
            term = np.take(x, np.clip(i + base + o, 0, x.shape[axis] - 1), axis=axis) * x.dtype.type(w)
            acc = term if acc is None else acc + term
        x = acc
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shift3_with_fused_first_axis_is_the_tap_by_tap_stencil(dtype):
    # 1, 2, 3 and 4 taps on the first axis (2 and 4: the fused plane pass), borders clamped
    rng = np.random.default_rng(12)
    for trial in range(200):
        shape = tuple(int(v) for v in rng.integers(1, 9, 3))
        out_shape = tuple(int(v) for v in rng.integers(1, 11, 3))
        a = rng.standard_normal(shape).astype(dtype)
        bases, taps, args = [], [], []
        for axis in range(3):
            k = int(rng.integers(1, 5))
            offsets = tuple(range(-1, k - 1)) if k > 2 else tuple(range(k))
            weights = tuple(float(w) for w in rng.uniform(-0.7, 1.3, k))
            base = int(rng.integers(-4, 4))
            bases.append(base)
            taps.append((offsets, weights))
            args += [base, np.array(offsets, np.int64), np.array(weights, dtype)]
        got = np.full(out_shape, np.nan, dtype)
        kernels.shift3(a, got, *args)
        want = _stencil_reference(a, bases, taps, out_shape)
        assert np.array_equal(got, want), (trial, shape, out_shape, taps)
