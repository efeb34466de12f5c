"""Registration estimate after review (session 19): the compiled removal of the fixed pattern
(float32 in one pass) is taken only for a float32 pattern; another type goes numpy's way, as
before the compiled pass, with numpy's numbers."""

from __future__ import annotations

import numpy as np

import txmdb.analysis.registration as reg


def test_a_float64_pattern_is_removed_by_numpy_with_numpys_numbers():
    assert reg._numba() is not None                  # else the compiled pass is never taken anyway
    rng = np.random.default_rng(21)
    shape = (26, 31, 29)
    J = (rng.standard_normal((4,) + shape) * 3).astype(np.float32)
    F = rng.standard_normal(shape) * 1.3              # float64
    s = rng.uniform(-4, 4, (4, 3))
    c, b = rng.uniform(-2, 2, 4), rng.uniform(-1, 1, 4)
    box = ((5, 5, 5), tuple(n - 6 for n in shape))
    got = reg._registered(J, s, 3, box, c, b, F)
    size = tuple(h - l for l, h in zip(*box))
    for e in range(4):
        expected = reg._translate(J[e] - np.float32(c[e]) * F - np.float32(b[e]), s[e], 3, box=box,
                                  out=np.empty(size, np.float32))
        assert np.array_equal(got[e], expected), e
