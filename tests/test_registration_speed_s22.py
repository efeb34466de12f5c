"""Registration speed, session 22 (issue 10, item 7; docs/registration.md): the fine level's
leave-one-out round on its images binned by two when the coarse bin is four or more (a
middle level of the pyramid), the fine images themselves below that.

- below the threshold ``_fine_restart`` is the full-resolution round, bit for bit;
- above it the binned round lands within the Gauss-Newton steps' reach of the truth, and
  of the full-resolution round;
- three-level estimates (coarse bin 4 and 6, 3-D and 2-D) meet issue 10's accuracy targets,
  clean and with every difficulty combined.
"""

from __future__ import annotations

import numpy as np
import pytest

import txmdb.analysis.registration as reg
from txmdb.synthetic.drift import ALL_DIFFICULTIES, drifted_stack

from tests.test_registration_kernels import _mid_edge, _reader, assert_meets_targets




@pytest.fixture(scope="module")
def drifted():
    return drifted_stack((72, 72, 72), n_energies=20, seed=5, max_drift=6.0, **ALL_DIFFICULTIES)


def _fine_images(d, pad: int = 10):
    """The working images of a centred full-resolution window, and the truth as a start."""
    n = d.stack.shape[0]
    window = reg.Window((pad,) * 3, tuple(k - pad for k in d.stack.shape[1:]), 1)
    return reg._working_images(_reader(d.stack), n, window, reg._DEFAULT_BAND)


@pytest.mark.parametrize("f", [1, 2, 3])
def test_below_the_threshold_the_round_is_the_full_resolution_one(drifted, f):
    J = _fine_images(drifted)
    start = np.round(drifted.shifts)
    np.testing.assert_array_equal(reg._fine_restart(J, start, drifted.reference_index, f),
                                  reg._restart(J, start, drifted.reference_index, f + 1, 1))


@pytest.mark.parametrize("f", [4, 6])
def test_the_binned_round_brings_every_energy_within_reach(drifted, f):
    J = _fine_images(drifted)
    # a coarse start off by up to ~f/2 voxels on every axis, as a binned level leaves it
    rng = np.random.default_rng(f)
    start = drifted.shifts + rng.uniform(-f / 2, f / 2, drifted.shifts.shape)
    start -= start[drifted.reference_index]
    binned = reg._fine_restart(J, start, drifted.reference_index, f)
    full = reg._restart(J, start, drifted.reference_index, f + 1, 1)
    assert binned[drifted.reference_index].tolist() == [0.0, 0.0, 0.0]
    sample = ~_mid_edge(drifted.energies_ev)
    # the Gauss-Newton steps start from here: within a voxel of the truth and of the
    # full-resolution round (the start was up to f/2 off)
    assert np.abs(binned - drifted.shifts)[sample].max() < 1.0
    assert np.abs(binned - full)[sample].max() < 1.0
    assert np.abs(start - drifted.shifts)[sample].max() > 1.0


@pytest.mark.parametrize("difficulties", ["clean", "all"])
@pytest.mark.parametrize("shape, coarse, fine", [((96, 96, 96), 24 ** 3, 40 ** 3), ((120, 120, 120), 20 ** 3, 40 ** 3),
                                                 ((336, 336), 84 ** 2, 160 ** 2)],
                         ids=["3d-bin4", "3d-bin6", "2d-bin4"])
def test_three_levels_meet_the_accuracy_targets(shape, coarse, fine, difficulties):
    kw = ALL_DIFFICULTIES if difficulties == "all" else {}
    d = drifted_stack(shape, n_energies=24, seed=11, max_drift=8.0, **kw)
    n = d.stack.shape[0]
    f = int(np.ceil((np.prod(shape) / coarse) ** (1 / len(shape)) - 1e-9))
    assert f >= 2 * reg._RESTART_BIN                          # the binned round runs
    est, quality = reg.estimate_shifts(_reader(d.stack), n, d.reference_index, shape=shape,
                                       max_shift=min(shape) / 4, coarse_voxels=coarse, fine_voxels=fine)
    assert_meets_targets(est, d, difficulties)
    assert np.all((quality > reg.QUALITY_THRESHOLD) | _mid_edge(d.energies_ev))
