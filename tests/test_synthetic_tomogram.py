"""Synthetic rod/gravel tomograms: fields, spectra with known edges, θ anisotropy."""

from __future__ import annotations

import numpy as np
import pytest

from txmdb.analysis.edge import PRESETS, EdgeKernel
from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field


def test_energy_grid():
    e = energy_grid()
    assert e.size == 60 and e[0] == 8280 and e[-1] == 8420
    assert np.all(np.diff(e) > 0)
    assert np.diff(e)[(e[:-1] > 8326) & (e[:-1] < 8364)].max() < 1.1   # dense edge
    assert energy_grid(52).size == 52


@pytest.mark.parametrize("kind", ["rod", "gravel"])
def test_field_is_reproducible_and_bounded(kind):
    a, mask = particle_field((40, 40, 40), kind=kind, seed=5)
    b, _ = particle_field((40, 40, 40), kind=kind, seed=5)
    np.testing.assert_array_equal(a, b)
    assert mask.sum() > 0.3 * mask.size and np.array_equal(mask, ~np.isnan(a))
    c, _ = particle_field((40, 40, 40), kind=kind, seed=6)
    assert not np.array_equal(np.isnan(a) | (a == c), np.ones_like(mask))


def test_surface_to_bulk_gradient():
    edge, mask = particle_field((64, 64), kind="gravel", seed=0, grain_sigma_ev=0,
                                grain_ramp_ev=0, voxel_sigma_ev=0, radius=30)
    centre = np.argwhere(mask).mean(axis=0)
    r = np.linalg.norm(np.indices(mask.shape).transpose(1, 2, 0) - centre, axis=-1)
    inner = np.nanmean(edge[r < 5])
    outer = np.nanmean(edge[(r > 26) & mask])
    assert 8335.5 < inner < 8337.5 and 8340.5 < outer < 8342.1


def test_several_particles():
    _, mask = particle_field((30, 80, 80), n_particles=3, seed=2)
    from scipy import ndimage
    _, n = ndimage.label(mask)
    assert n == 3


@pytest.mark.parametrize("profile", ["erf", "arctan"])
def test_stack_edges_match_the_map(profile):
    edge, mask = particle_field((24, 24, 24), kind="rod", seed=1, voxel_sigma_ev=0.3)
    e = energy_grid()
    st = SyntheticStack(edge, e, profile=profile, width_ev=1.5)
    res = EdgeKernel(e, PRESETS["Ni"])(np.asarray(st))
    assert np.array_equal(res.valid, mask)               # background: no jump -> masked
    err = np.abs(res.edge_ev[mask] - edge[mask])
    # erf: exact lines, interpolation error only; arctan: slow tails bend the lines
    assert err.max() < (0.05 if profile == "erf" else 0.6)


def test_slabs_independent_of_partition():
    edge, _ = particle_field((10, 12, 12), seed=3)
    st = SyntheticStack(edge, energy_grid(), noise=0.02, seed=9)
    whole = st.slab(0, 10)
    np.testing.assert_array_equal(np.concatenate([st.slab(0, 3), st.slab(3, 10)], axis=1), whole)
    assert whole.dtype == np.float32 and whole.shape == (60, 10, 12, 12)


def _tangential_excess(edge: np.ndarray, f: int) -> float:
    """Crude DESIGN §5 θ statistic on an edge map: P(80-100°)/P_ref(80-100°)."""
    nd = edge.ndim
    shp = tuple(s // f for s in edge.shape)
    blocks = edge[tuple(slice(0, s * f) for s in shp)].reshape(sum(((s, f) for s in shp), ()))
    b = blocks.mean(axis=tuple(range(1, 2 * nd, 2)))          # NaN block = invalid
    valid = ~np.isnan(b)
    ok = valid.copy()
    grads = []
    for ax in range(nd):
        grads.append((np.roll(b, -1, ax) - np.roll(b, 1, ax)) / 2)
        ok &= np.roll(valid, -1, ax) & np.roll(valid, 1, ax)
    u = np.stack([g[ok] for g in grads], axis=1)
    v = np.argwhere(valid).mean(axis=0) - np.argwhere(ok)
    nu, nv = np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)
    keep = (nu > 0) & (nv > 0)
    cos = (u * v).sum(axis=1)[keep] / (nu[keep] * nv[keep])
    theta = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    p = np.mean((theta >= 80) & (theta < 100))
    ref = (np.cos(np.radians(80)) - np.cos(np.radians(100))) / 2 if nd == 3 else 20 / 180
    return p / ref


def test_theta_statistics_rod_vs_gravel_2d():
    rod = [_tangential_excess(particle_field((160, 160), kind="rod", seed=3)[0], f) for f in (1, 2, 3)]
    gravel = [_tangential_excess(particle_field((160, 160), kind="gravel", seed=3)[0], f)
              for f in (1, 2, 3)]
    assert 1 < rod[0] < rod[1] < rod[2] and rod[2] > 1.5
    assert all(0.8 < g < 1.25 for g in gravel)


def test_theta_statistics_rod_vs_gravel_3d():
    rod = [_tangential_excess(particle_field((96,) * 3, kind="rod", seed=3)[0], f) for f in (1, 2, 3)]
    gravel = [_tangential_excess(particle_field((96,) * 3, kind="gravel", seed=3)[0], f)
              for f in (1, 2, 3)]
    assert 1 < rod[0] < rod[1] < rod[2] and rod[2] > 1.5
    assert all(0.75 < g < 1.25 for g in gravel)
