"""A one-sided valence gradient in the drifted phantom (session 28, docs/registration.md).

A particle charged from one side lights up on that side first as the energy climbs
through the edge; an intensity-based registration can read that as a move. The drift
phantom's ``valence_tilt`` adds such a gradient; with the particle's energy-invariant
texture in the fine window, the estimate stays within issue 10's targets.
"""

from __future__ import annotations

import numpy as np
import pytest

from txmdb.analysis.registration import QUALITY_THRESHOLD, estimate_shifts, read_window
from txmdb.synthetic.drift import ALL_DIFFICULTIES, drifted_stack, make_drifted


def test_tilt_zero_leaves_the_stack_unchanged():
    plain = drifted_stack((24, 26), n_energies=8, seed=4, **ALL_DIFFICULTIES)
    zero = drifted_stack((24, 26), n_energies=8, seed=4, valence_tilt=0.0, **ALL_DIFFICULTIES)
    assert np.array_equal(plain.stack, zero.stack)


def test_tilt_raises_the_edge_energy_along_one_direction_and_keeps_the_rest_of_the_seed():
    plain = make_drifted((40, 44), n_energies=6, seed=2)
    tilted = make_drifted((40, 44), n_energies=6, seed=2, valence_tilt=3.0)
    assert np.array_equal(plain.shifts, tilted.shifts)            # the drift is the seed's own
    edge0, mask = plain.edge_truth()
    edge1, _ = tilted.edge_truth()
    diff = (edge1 - edge0)[mask]
    (p,) = tilted._particles
    direction = p.edge_tilt / np.linalg.norm(p.edge_tilt)
    assert np.linalg.norm(p.edge_tilt) == pytest.approx(3.0)
    # linear in the position along the direction: +3 eV one radius towards it
    yy, xx = np.nonzero(mask)
    along = ((yy - p.centre[0]) * direction[0] + (xx - p.centre[1]) * direction[1]) / p.radius
    np.testing.assert_allclose(diff, 3.0 * along, atol=1e-9)
    assert diff.max() > 2.0 and diff.min() < -2.0


@pytest.mark.parametrize("seed", [0, 1])
def test_a_four_ev_one_sided_gradient_meets_the_targets(seed):
    d = drifted_stack((64, 64, 64), n_energies=40, seed=seed, max_drift=5.0, valence_tilt=4.0, **ALL_DIFFICULTIES)
    shape = d.stack.shape[1:]
    est, quality = estimate_shifts(lambda i, w: read_window(d.stack, i, w), d.stack.shape[0], d.reference_index,
                                   shape=shape, max_shift=min(shape) / 4)
    err = est - d.shifts
    rms, worst = np.sqrt((err ** 2).mean(axis=0)), np.abs(err).max(axis=1)
    assert rms.max() < 0.15 and worst.max() < 0.5, (rms, worst.max())
    assert not np.any((worst > 0.5) & (quality >= QUALITY_THRESHOLD))
