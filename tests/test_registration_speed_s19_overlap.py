"""Registration speed, session 19: the memory's return off the estimate's path, and compiled passes.

- the working images of a coarse window (one plane per block) are each energy's own
  band-pass (against one written out with scipy.ndimage);
- ``_freed_memory_kept()`` (the analyses' ``_memory.freed_memory_kept``) still hands the freed memory back, from
  a thread other than the caller's;
- the Gaussian's last axis, run a tile of lines at a time, is still scipy's bit for bit;
- the registered images less their pattern and offset (one compiled pass) are numpy's.
"""

from __future__ import annotations

import threading
import time

import numpy as np

import txmdb.analysis._memory as memory
import txmdb.analysis.registration as reg


def test_working_images_of_a_coarse_window_are_each_energy_band_passed_on_its_own():
    """Against a band-pass written out here with scipy.ndimage (float64): the window's
    middle plane of each block of 3, 3 x 3 block means over the finite voxels, smoothed
    (σ = 1), zero mean and unit variance, less its own smoothing (σ = 4)."""
    from scipy import ndimage

    rng = np.random.default_rng(8)
    stack = rng.standard_normal((6, 30, 26, 28)).astype(np.float32)
    stack[1, 2, 3, 4] = np.nan                      # in energy 1's first block: left out of its mean
    window = reg.Window((1, 0, 2), (29, 26, 26), 3, 1)
    J = reg._working_images(lambda i, w: reg.read_window(stack, i, w), 6, window, (1.0, 4.0))
    assert J.shape == (6, 9, 8, 8) and J.dtype == np.float32
    for i in range(6):
        planes = stack[i, 2:29:3, 0:24, 2:26].astype(np.float64)          # z = 2, 5, ..., 26
        binned = np.nanmean(planes.reshape(9, 8, 3, 8, 3), axis=(2, 4))
        smooth = ndimage.gaussian_filter(binned, 1.0, mode="nearest")
        smooth = (smooth - smooth.mean()) / smooth.std()
        expected = smooth - ndimage.gaussian_filter(smooth, 4.0, mode="nearest")
        np.testing.assert_allclose(J[i], expected, rtol=0, atol=2e-5, err_msg=f"energy {i}")
    assert not np.allclose(J[0], J[1], atol=0.1)                       # each energy its own


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def test_memory_is_returned_by_the_background_trim(monkeypatch):
    """The trim runs on a thread of its own (not the caller's), and the memory goes back."""
    assert memory._glibc() is not None
    real, trimmed_on = memory._trim, []

    def recorded() -> None:
        trimmed_on.append(threading.get_ident())
        real()

    monkeypatch.setattr(memory, "_trim", recorded)
    size = 200 << 20
    # Measured from the peak, not from before the block: the block may reuse freed heap
    # pages already resident (earlier tests in this worker), so its growth can be < size.
    with reg._freed_memory_kept():
        block = np.ones(size // 8)
        peak = _rss_bytes()
        del block
        assert peak - _rss_bytes() < 0.1 * size                        # kept while inside
    deadline = time.monotonic() + 10
    while peak - _rss_bytes() < 0.9 * size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert peak - _rss_bytes() >= 0.9 * size                           # handed back after
    for thread in [t for t in threading.enumerate() if t.name == "txmdb-trim"]:
        thread.join(10)
    assert len(trimmed_on) == 1 and trimmed_on[0] != threading.get_ident()


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
