"""Registration speed, session 19: the memory's return off the estimate's path, and compiled passes.

- the working images of a coarse window (one plane per block) are each energy's own
  band-pass (the tiled Gaussian below included);
- ``_freed_memory_kept(trim_in_background=True)`` still hands the freed memory back;
- the Gaussian's last axis, run a tile of lines at a time, is still scipy's bit for bit;
- the registered images less their pattern and offset (one compiled pass) are numpy's.
"""

from __future__ import annotations

import time

import numpy as np

import txmdb.analysis.registration as reg


def test_working_images_of_a_coarse_window_are_each_energy_band_passed_on_its_own():
    rng = np.random.default_rng(8)
    stack = rng.standard_normal((6, 30, 26, 28)).astype(np.float32)
    stack[1, 2, 3, 4] = np.nan
    window = reg.Window((1, 0, 2), (29, 26, 26), 3, 1)
    J = reg._working_images(lambda i, w: reg.read_window(stack, i, w), 6, window, (1.0, 4.0))
    for i in range(6):
        expected = reg._highpass(reg._prepare(reg.read_window(stack, i, window), 1.0, i), 4.0)
        assert np.array_equal(J[i], expected)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def test_memory_is_returned_by_the_background_trim():
    assert reg._glibc() is not None
    size = 200 << 20
    with reg._freed_memory_kept(trim_in_background=True):
        before = _rss_bytes()
        block = np.ones(size // 8)
        del block
        kept = _rss_bytes() - before
    assert kept > 0.9 * size
    deadline = time.monotonic() + 10
    while _rss_bytes() - before > 0.1 * size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _rss_bytes() - before < 0.1 * size


def test_gaussian_of_the_estimates_window_sizes_is_scipys_bit_for_bit():
    from scipy import ndimage

    rng = np.random.default_rng(12)
    for shape in ((73, 72, 78), (45, 45, 45), (33, 1, 40), (112, 128), (1, 70)):
        img = rng.standard_normal(shape).astype(np.float32)
        for sigma in (1.0, 4.0):
            got = reg._gaussian(img, sigma)
            assert np.array_equal(got, ndimage.gaussian_filter(img, sigma, mode="nearest")), (shape, sigma)


def test_pattern_and_offset_removed_in_one_pass_are_numpys_numbers():
    rng = np.random.default_rng(13)
    for shape in ((26, 31, 29), (40, 44)):
        J = (rng.standard_normal((4,) + shape) * 3).astype(np.float32)
        F = rng.standard_normal(shape).astype(np.float32)
        s = rng.uniform(-4, 4, (4, len(shape)))
        c, b = rng.uniform(-2, 2, 4), rng.uniform(-1, 1, 4)
        lo = tuple(5 for _ in shape)
        box = (lo, tuple(n - 6 for n in shape))
        got = reg._registered(J, s, 3, box, c, b, F)
        for e in range(4):
            whole = reg._translate(J[e] - np.float32(c[e]) * F - np.float32(b[e]), s[e], 3)
            assert np.array_equal(got[e], whole[tuple(slice(l, h) for l, h in zip(*box))])
