"""Registration speed, session 22 (issue 10, item 7; docs/registration.md): the fine level's
leave-one-out round on its images binned by two when the coarse bin is four or more (a
middle level of the pyramid), the fine images themselves below that.

- below the threshold ``_fine_restart`` is the full-resolution round, bit for bit;
- above it the round is the full-resolution one on the images binned by two, bit for bit,
  and lands within the Gauss-Newton steps' reach of the truth and of the full-resolution
  round;
- ``estimate_shifts`` takes the binned round at a coarse bin of four or more (the round's
  images are half the fine window), not below;
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
    """The working images of a centred full-resolution window."""
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
    # a coarse start off by up to f/2 voxels per axis before the reference's own error is
    # taken off (up to f after), as a binned level leaves it
    rng = np.random.default_rng(f)
    start = drifted.shifts + rng.uniform(-f / 2, f / 2, drifted.shifts.shape)
    start -= start[drifted.reference_index]
    binned = reg._fine_restart(J, start, drifted.reference_index, f)
    half = np.stack([reg._bin(J[e], 2) for e in range(J.shape[0])])
    np.testing.assert_array_equal(binned, reg._restart(half, start / 2, drifted.reference_index,
                                                       (f + 1) / 2 + 1, 1) * 2)
    full = reg._restart(J, start, drifted.reference_index, f + 1, 1)
    assert not np.array_equal(binned, full)
    assert binned[drifted.reference_index].tolist() == [0.0, 0.0, 0.0]
    sample = ~_mid_edge(drifted.energies_ev)
    # the Gauss-Newton steps start from here (they converge from 1.5 voxels off): within a
    # voxel of the truth and of the full-resolution round
    assert np.abs(binned - drifted.shifts)[sample].max() < 1.0
    assert np.abs(binned - full)[sample].max() < 1.0


@pytest.mark.parametrize("difficulties", ["clean", "all"])
@pytest.mark.parametrize("shape, coarse, fine", [((96, 96, 96), 24 ** 3, 40 ** 3), ((120, 120, 120), 20 ** 3, 40 ** 3),
                                                 ((336, 336), 84 ** 2, 160 ** 2)],
                         ids=["3d-bin4", "3d-bin6", "2d-bin4"])
def test_three_levels_meet_the_accuracy_targets(shape, coarse, fine, difficulties, monkeypatch):
    kw = ALL_DIFFICULTIES if difficulties == "all" else {}
    d = drifted_stack(shape, n_energies=24, seed=11, max_drift=8.0, **kw)
    n = d.stack.shape[0]
    f = int(np.ceil((np.prod(shape) / coarse) ** (1 / len(shape)) - 1e-9))
    assert f >= 2 * reg._RESTART_BIN
    est, quality = _estimate_seeing_the_rounds(monkeypatch, d, coarse, fine)
    # the fine round on the fine window (the refinement's images) binned by 2
    assert _rounds[-1] == tuple(n // 2 for n in _refined[-1])
    assert_meets_targets(est, d, difficulties)
    assert np.all((quality > reg.QUALITY_THRESHOLD) | _mid_edge(d.energies_ev))


#: the image shape of each leave-one-out round and of the refinement an estimate ran, in order
_rounds: list = []
_refined: list = []


def _estimate_seeing_the_rounds(monkeypatch, d, coarse, fine):
    _rounds.clear()
    _refined.clear()
    for name, shapes in (("_restart", _rounds), ("_refine", _refined)):
        monkeypatch.setattr(reg, name, _recording(getattr(reg, name), shapes))
    shape = d.stack.shape[1:]
    return reg.estimate_shifts(_reader(d.stack), d.stack.shape[0], d.reference_index, shape=shape,
                               max_shift=min(shape) / 4, coarse_voxels=coarse, fine_voxels=fine)


def _recording(fn, shapes: list):
    def recorded(J, *args, **kwargs):
        shapes.append(J.shape[1:])
        return fn(J, *args, **kwargs)
    return recorded


def test_below_bin_four_the_estimate_rounds_at_full_resolution(monkeypatch):
    d = drifted_stack((64, 64, 64), n_energies=12, seed=2, max_drift=4.0, **ALL_DIFFICULTIES)
    est, _ = _estimate_seeing_the_rounds(monkeypatch, d, 22 ** 3, 36 ** 3)     # coarse bin 3
    assert _rounds[-1] == _refined[-1] and min(_rounds[-1]) >= 36               # the fine window itself
    assert_meets_targets(est, d, "all")
