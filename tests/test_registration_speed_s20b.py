"""Registration speed, session 20 second pass (issue 10, item 7; docs/registration.md):
the compiled Gaussian's last axis in tiles of 512 lines instead of 32. The tile only
groups lines; every value's sum is the same, so the filter must still be
``scipy.ndimage.gaussian_filter(…, mode="nearest")`` bit for bit, whatever the number of
lines (fewer than a tile, a multiple of it, a partial last tile)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import txmdb.analysis.registration as reg
from txmdb.analysis import _registration_numba as kernels


@pytest.mark.parametrize("shape", [(7, 9, 11), (16, 32, 40), (16, 64, 20), (23, 45, 61), (73, 72, 78),
                                   (600, 37), (1024, 19), (5, 3000)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_gaussian_in_512_line_tiles_is_scipys(shape, sigma):
    rng = np.random.default_rng(sum(shape))
    img = (rng.standard_normal(shape) * 3 + rng.uniform(-5, 5)).astype(np.float32)
    got = reg._gaussian(img, sigma)
    want = ndimage.gaussian_filter(img, sigma, mode="nearest")
    assert got.dtype == np.float32 and got.shape == img.shape
    assert np.array_equal(got, want)


@pytest.mark.parametrize("n_lines", [1, 511, 512, 513, 1500])
def test_last_axis_pass_is_the_plain_symmetric_sum(n_lines):
    # each output: x_i w_0 + Σ_{d=r..1} (x_{i-d} + x_{i+d}) w_d in float64, edges repeated,
    # rounded to float32 once (the reference written out line by line)
    rng = np.random.default_rng(n_lines)
    n, fw = 13, np.array([0.4, 0.25, 0.05, 0.0001])
    a = rng.standard_normal((n_lines, n, 1)).astype(np.float32)
    out = np.full_like(a, np.nan)
    kernels.smooth_axis(a, out, fw)
    r = len(fw) - 1
    x = a[:, :, 0].astype(np.float64)
    ext = np.concatenate([np.repeat(x[:, :1], r, axis=1), x, np.repeat(x[:, -1:], r, axis=1)], axis=1)
    want = x * fw[0]
    for d in range(r, 0, -1):
        want = want + (ext[:, r - d:r - d + n] + ext[:, r + d:r + d + n]) * fw[d]
    assert np.array_equal(out[:, :, 0], want.astype(np.float32))
