"""A particle larger than the fine window (session 29, docs/registration.md).

The demo's rod-like particle (radius 45 in 100³) holds the 48³ full-resolution window
wholly inside it, where nothing stays the same across the edge; the fit then followed the
grains' valence pattern, up to 2 voxels off. The fine level now reads a window twice as
wide, binned by 2, that holds the particle's outline; a field of several small particles
keeps the full-resolution window.
"""

from __future__ import annotations

import numpy as np

from txmdb.analysis.registration import QUALITY_THRESHOLD, estimate_shifts, read_window
from txmdb.demo import DEMO_MATRIX, SAMPLES
from txmdb.synthetic.drift import ALL_DIFFICULTIES, make_drifted
from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field


def _estimate(stack: np.ndarray, reference: int):
    windows = []

    def read(i, window):
        windows.append(window)
        return read_window(stack, i, window)

    shifts, quality = estimate_shifts(read, stack.shape[0], reference, shape=stack.shape[1:],
                                      max_shift=min(stack.shape[1:]) / 4)
    return shifts, quality, windows[-1]


def _demo_rod(size: int, drift: int, n_energies: int, seed: int):
    """The demo's rod-like particle field, cropped per energy by whole-voxel shifts
    (the truth is exact): ``registered_e(x) = raw_e(x + s_e)``."""
    energies = energy_grid(n_energies)
    reference = int(np.searchsorted(energies, 8370.0))
    big = (size + 2 * drift,) * 3
    edge_map, _ = particle_field(big, kind="rod", seed=seed, **SAMPLES["rod-NMC"]["field"])
    full = SyntheticStack(edge_map, energies, noise=0.01, matrix=DEMO_MATRIX, seed=seed).slab(0, big[0])
    rng = np.random.default_rng(seed)
    truth = rng.integers(-drift, drift + 1, size=(n_energies, 3))
    truth[reference] = 0
    stack = np.stack([full[(e,) + tuple(slice(drift - truth[e, d], drift - truth[e, d] + size) for d in range(3))]
                      for e in range(n_energies)]).astype(np.float32)
    return stack, reference, truth


def test_a_particle_larger_than_the_window_registers_on_its_outline():
    stack, reference, truth = _demo_rod(100, 3, 40, seed=1)
    shifts, quality, window = _estimate(stack, reference)
    assert window.bin == 2                                       # the outline's window
    assert all(b - a > 90 for a, b in zip(window.start, window.stop))
    err = np.abs(shifts - truth)
    # before: up to 10 voxels off on this stack (59 of 60 energies wrong at 60 energies)
    assert float(np.sqrt((err ** 2).mean())) < 0.3
    wrong = err.max(axis=1) > 0.5
    # none that is wrong goes unflagged by more than a voxel
    assert not (err.max(axis=1) > 1.0)[quality >= QUALITY_THRESHOLD].any()
    assert wrong.sum() <= 4


def test_the_demo_rod_without_drift_is_within_a_third_of_a_voxel():
    stack, reference, truth = _demo_rod(100, 0, 40, seed=1)
    shifts, quality, window = _estimate(stack, reference)
    assert window.bin == 2
    assert float(np.abs(shifts).max()) < 0.35                    # before: 1.7 voxels
    assert (quality >= QUALITY_THRESHOLD).all()


def test_several_small_particles_keep_the_full_resolution_window():
    phantom = make_drifted((96,) * 3, n_energies=24, n_particles=3, seed=1, **ALL_DIFFICULTIES)
    shifts, quality, window = _estimate(phantom.render(), phantom.reference_index)
    assert window.bin == 1
    assert max(b - a for a, b in zip(window.start, window.stop)) < 96
    assert float(np.abs(shifts - phantom.shifts).max()) < 0.5
