"""The synthetic tomogram's particles absorb below the edge too (``SyntheticStack(matrix=…)``):
a real particle shows at every energy, which the demo's stacks need to be registered at all
(without it, 29 of 60 pre-edge energies held no sample and ``txm register`` refused them)."""

from __future__ import annotations

import numpy as np

from txmdb.analysis.edge import EdgeKernel, edge_parameters
from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field


def test_the_matrix_shows_below_the_edge_and_leaves_the_edge_map_as_it_is():
    energies = energy_grid(40)
    edge, _ = particle_field((16, 16, 16), kind="rod", seed=2)
    plain = SyntheticStack(edge, energies, noise=0.0).slab(0, 16)
    matrix = SyntheticStack(edge, energies, noise=0.0, matrix=0.3).slab(0, 16)
    inside = ~np.isnan(edge)
    assert inside.any() and (~inside).any()
    difference = matrix - plain
    np.testing.assert_allclose(difference[:, inside], 0.3, atol=1e-6)      # at every energy, below the edge too
    assert np.array_equal(difference[:, ~inside], np.zeros_like(difference[:, ~inside]))
    assert (matrix[0][inside] > matrix[0][~inside].max()).all()             # the first (pre-edge) image shows it
    kernel = EdgeKernel(energies, edge_parameters("Ni"))
    a, b = kernel(plain), kernel(matrix)
    assert np.array_equal(a.valid, b.valid)
    np.testing.assert_allclose(b.edge_ev[b.valid], a.edge_ev[a.valid], atol=1e-3)   # a constant offset: the same edge
