"""Valence-gradient vectors and θ statistics on constructed fields with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from txmdb.analysis.gradient import (
    GRADIENT_TABLES,
    PHI_EDGES,
    bin_edge_map,
    block_centroids,
    gradient_statistics,
    gradient_vectors,
    map_gradient_vectors,
    tangential_reference,
    theta_edges,
    theta_reference,
    u_histogram_edges,
)
from txmdb.analysis.particles import label_particles


def _vectors(edge, valid, f=1, d=None, min_voxels=10):
    labels, n = label_particles(valid, min_voxels=min_voxels)
    binned, blabels = bin_edge_map(edge, labels, f)
    centroids = block_centroids(blabels, n)
    step = f * d if d else f
    return map_gradient_vectors(binned, blabels, centroids, step=step), n


def _ball(n=42, r=18.0, ndim=3):
    # n = 42: the centre (20.5) is also the centre of the f = 2 and f = 3 block grids
    grid = np.mgrid[(slice(0, n),) * ndim].astype(float)
    c = (n - 1) / 2.0
    r2 = sum((g - c) ** 2 for g in grid)
    return grid, c, r2, r2 <= r * r


@pytest.mark.parametrize("ndim", [2, 3])
def test_radial_field_gives_0_or_180_degrees(ndim):
    # E = ±r² around the (symmetric) particle's centre: central differences are exact,
    # u is exactly along ±(p − O)
    _, _, r2, valid = _ball(ndim=ndim)
    for sign, expected in ((+1, 180.0), (-1, 0.0)):
        edge = np.where(valid, 8339.0 + sign * 0.002 * r2, np.nan)
        for f in (1, 2, 3):
            vec, _ = _vectors(edge, valid, f=f)
            assert len(vec) > 50
            np.testing.assert_allclose(vec.theta_deg, expected, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_tangential_field_gives_90_degrees(ndim):
    # E depends only on the azimuth around the centre axis; a hollow cylinder keeps the
    # finite-difference error (O(1/ρ²)) small
    grid, c, _, _ = _ball(ndim=ndim)
    y, x = grid[-2], grid[-1]
    rho = np.hypot(y - c, x - c)
    valid = (rho >= 8) & (rho <= 18)
    if ndim == 3:
        valid &= (grid[0] >= 2) & (grid[0] <= 38)
    edge = np.where(valid, 8339.0 + (x - c) / np.maximum(rho, 1e-9), np.nan)
    vec, _ = _vectors(edge, valid)
    assert len(vec) > (500 if ndim == 2 else 10000)
    assert np.abs(vec.theta_deg - 90.0).max() < 1.5


@pytest.mark.parametrize("ndim", [2, 3])
def test_isotropic_random_field_follows_the_reference(ndim):
    # White noise: the central-difference components are i.i.d. Gaussians, so the
    # direction of u is isotropic and θ follows the random reference exactly in
    # expectation. Neighbouring vectors share voxels; the tolerance allows for that
    # with an effective sample of N/4 and 5 standard deviations per bin.
    rng = np.random.default_rng(7)
    size = 64 if ndim == 3 else 400
    _, _, r2, valid = _ball(n=size, r=size / 2 - 1, ndim=ndim)
    edge = np.where(valid, 8339.0 + rng.normal(size=valid.shape), np.nan)
    labels, n = label_particles(valid)
    binned, blabels = bin_edge_map(edge, labels, 1)
    vec = map_gradient_vectors(binned, blabels, block_centroids(blabels, n), step=1.0)
    tables = gradient_statistics(vec, n_particles=n, bin_factor=1, ndim=ndim,
                                 u_edges=np.zeros(0))
    th = tables["theta_histograms"]
    scan = th[th["particle"].isna() & ~th["weighted"]]
    p, ref = scan["probability"].to_numpy(), scan["reference"].to_numpy()
    n_eff = len(vec) / 4
    tol = 5 * np.sqrt(ref * (1 - ref) / n_eff) + 1e-12
    assert np.all(np.abs(p - ref) <= tol), np.max(np.abs(p - ref) / tol)
    summary = tables["gradient_summaries"].iloc[0]
    assert summary["tangential_excess"] == pytest.approx(1.0, abs=0.05)
    assert summary["kl_divergence"] < 0.01


def test_binning_on_a_known_array():
    edge = np.arange(5 * 7 * 8, dtype=np.float64).reshape(5, 7, 8)
    labels = np.ones(edge.shape, dtype=np.int32)
    labels[0, 0, 0] = 0  # invalidates block (0, 0, 0) only
    binned, blabels = bin_edge_map(edge, labels, 2)
    assert binned.shape == blabels.shape == (2, 3, 4)  # trailing partial blocks dropped
    expected = edge[:4, :6, :8].reshape(2, 2, 3, 2, 4, 2).mean(axis=(1, 3, 5))
    assert np.isnan(binned[0, 0, 0]) and blabels[0, 0, 0] == 0
    np.testing.assert_allclose(binned.ravel()[1:], expected.ravel()[1:])
    assert (blabels.ravel()[1:] == 1).all()
    # 2D, f = 3, NaN elsewhere in the edge map does not matter where labels say valid
    img = np.arange(7 * 9, dtype=np.float64).reshape(7, 9)
    lab = np.ones(img.shape, dtype=np.int32)
    b2, l2 = bin_edge_map(img, lab, 3)
    np.testing.assert_allclose(b2, img[:6, :9].reshape(2, 3, 3, 3).mean(axis=(1, 3)))
    # f = 1 is the map itself
    b1, l1 = bin_edge_map(edge, labels, 1)
    assert b1 is edge


def test_block_centroid_and_label_of_binned_particles():
    valid = np.zeros((12, 12, 12), dtype=bool)
    valid[0:6, 0:6, 0:6] = True
    valid[7:12, 7:12, 7:12] = True  # 5³: with f = 2 only 2³ whole blocks at 8..11
    labels, n = label_particles(valid, min_voxels=10)
    _, blabels = bin_edge_map(np.zeros(valid.shape), labels, 2)
    assert n == 2
    assert (blabels[:3, :3, :3] == 1).all()
    assert (blabels[4:, 4:, 4:] == 2).all() and (blabels[3] == 0).all()
    np.testing.assert_allclose(block_centroids(blabels, n)[1:], [[1, 1, 1], [4.5, 4.5, 4.5]])


@pytest.mark.parametrize("ndim", [2, 3])
def test_units_scale_with_voxel_size_and_bin_factor(ndim):
    # E = a·x: |u| = a / d in eV/nm at every binning factor, a in eV/voxel without d
    shape = (30,) * ndim
    grid = np.indices(shape, dtype=float)
    a = 0.01
    edge = 8339.0 + a * grid[-1]
    valid = np.ones(shape, dtype=bool)
    for f in (1, 2, 3):
        vec, _ = _vectors(edge, valid, f=f, d=30.0)
        np.testing.assert_allclose(vec.u, a / 30.0, rtol=1e-9)
        vec, _ = _vectors(edge, valid, f=f, d=None)
        np.testing.assert_allclose(vec.u, a, rtol=1e-9)


def test_kernel_needs_neighbours_on_every_axis_and_drops_zero_vectors():
    edge = np.full((5, 5), 8339.0)
    edge[2, 3] = 8340.0
    labels = np.ones((5, 5), dtype=np.int32)
    labels[1, 1] = 0
    centroids = np.array([[np.nan, np.nan], [2.0, 2.0]])
    vec = gradient_vectors(edge, labels, centroids, step=1.0)
    # Candidates: the interior 3x3 minus (1,1) and the two whose neighbour it is, (1,2)
    # and (2,1). (2,2): v = 0 and (2,3): u = 0 are dropped; (3,1), (3,2) see a flat E.
    # Left: (1,3) with u = (0.5, 0), v = (1, -1) and (3,3) with u = (-0.5, 0),
    # v = (-1, -1): both at 45°.
    assert len(vec) == 2
    np.testing.assert_allclose(vec.theta_deg, 45.0)
    np.testing.assert_allclose(vec.u, 0.5)
    np.testing.assert_array_equal(vec.particle, [1, 1])


def test_slabs_give_the_same_vectors_as_the_whole_map():
    rng = np.random.default_rng(3)
    _, _, r2, valid = _ball(n=40, r=17)
    edge = np.where(valid, 8339.0 + rng.normal(size=valid.shape), np.nan)
    labels, n = label_particles(valid)
    for f in (1, 2, 3):
        binned, blabels = bin_edge_map(edge, labels, f)
        cen = block_centroids(blabels, n)
        whole = gradient_vectors(binned, blabels, cen, step=f * 30.0)
        for slab in (1, 7 * binned.shape[1] * binned.shape[2], 10**9):
            parts = map_gradient_vectors(binned, blabels, cen, step=f * 30.0, slab_voxels=slab)
            np.testing.assert_array_equal(parts.particle, whole.particle)
            np.testing.assert_array_equal(parts.theta_deg, whole.theta_deg)
            np.testing.assert_array_equal(parts.u, whole.u)


def test_reference_and_edges():
    e = theta_edges(36)
    assert e[1] == 5.0 and e[-1] == 180.0
    assert theta_reference(e, 3).sum() == pytest.approx(1.0)
    assert theta_reference(e, 2) == pytest.approx(np.full(36, 1 / 36))
    assert tangential_reference(3) == pytest.approx(np.cos(np.radians(80)))
    assert tangential_reference(2) == pytest.approx(20 / 180)
    u = np.linspace(0, 1, 1001)
    edges = u_histogram_edges(u, u_max=2.0, n_bins=10)
    assert edges[0] == 0 and edges[-2] == pytest.approx(0.99) and edges[-1] == 2.0
    assert u_histogram_edges(np.zeros(0)).size == 0


def test_statistics_per_particle_and_scan():
    rng = np.random.default_rng(11)
    m = 5000
    from txmdb.analysis.gradient import GradientVectors

    vec = GradientVectors(particle=rng.integers(1, 4, m).astype(np.int32),
                          theta_deg=rng.uniform(0, 180, m), u=rng.exponential(0.02, m))
    vec.particle[vec.particle == 3] = 2  # particle 3 has no vectors
    u_edges = u_histogram_edges(vec.u, n_bins=20)
    t = gradient_statistics(vec, n_particles=3, bin_factor=2, ndim=3, u_edges=u_edges,
                            voxel_size_nm=30.0)
    for name, cols in GRADIENT_TABLES.items():
        assert list(t[name].columns) == list(cols)
    s = t["gradient_summaries"].set_index(t["gradient_summaries"]["particle"].fillna(0))
    assert s.loc[0, "n_vectors"] == m and s.loc[3, "n_vectors"] == 0
    assert np.isnan(s.loc[3, "mean_u"]) and np.isnan(s.loc[3, "tangential_excess"])
    assert s.loc[0, "voxel_size_nm"] == 60.0
    assert s.loc[1, "mean_u"] == pytest.approx(vec.u[vec.particle == 1].mean())
    th = vec.theta_deg
    band = (th >= 80) & (th < 100)
    assert s.loc[0, "tangential_excess"] == pytest.approx(band.mean() / np.cos(np.radians(80)))
    assert s.loc[0, "tangential_excess_weighted"] == pytest.approx(
        vec.u[band].sum() / vec.u.sum() / np.cos(np.radians(80)))
    p = np.histogram(th, theta_edges(36))[0] / m
    ref = theta_reference(theta_edges(36), 3)
    assert s.loc[0, "kl_divergence"] == pytest.approx(np.sum(p[p > 0] * np.log(p[p > 0] / ref[p > 0])))
    # θ histograms only for groups with vectors, both plain and weighted
    th_tab = t["theta_histograms"]
    assert set(th_tab["particle"].fillna(0)) == {0, 1, 2}
    np.testing.assert_allclose(th_tab.groupby([th_tab["particle"].fillna(0), "weighted"])["probability"].sum(), 1.0)
    # vector size: n/mean/median/p90 per folded group against numpy
    vs = t["vector_size_stats"]
    phi = np.minimum(th, 180 - th)
    for part in (0, 1, 2):
        rows = vs[vs["particle"].fillna(0) == part]
        sel = np.ones(m, bool) if part == 0 else vec.particle == part
        for (_, row), lo in zip(rows.iterrows(), PHI_EDGES[:-1]):
            g = sel & (phi >= lo) & ((phi < lo + 10) | (lo == 80))
            assert row["n"] == g.sum()
            assert row["median_u"] == pytest.approx(np.median(vec.u[g]))
            assert row["p90_u"] == pytest.approx(np.percentile(vec.u[g], 90))
            assert row["mean_u"] == pytest.approx(vec.u[g].mean())
    # |u| histograms: shared edges, counts add up per group
    vh = t["vector_size_histograms"]
    assert vh.groupby(vh["particle"].fillna(0))["count"].sum().tolist() == [m, (vec.particle == 1).sum(),
                                                                          (vec.particle == 2).sum(), 0]
    np.testing.assert_array_equal(np.unique(vh["u_lo"]), u_edges[:-1])
    # mean |u| against θ
    ut = t["u_theta_profiles"]
    scan = ut[ut["particle"].isna()]
    assert scan["n"].sum() == m
    assert np.nansum(scan["n"] * scan["mean_u"]) == pytest.approx(vec.u.sum())


def test_rod_like_gradient_field_gives_tangential_excess():
    # Grains radially aligned: E varies along rings (across grains), not along rays.
    # A field constant along rays from the centre (azimuth and polar angle only) with
    # some radial noise: tangential excess well above 1.
    rng = np.random.default_rng(5)
    grid, c, r2, valid = _ball(n=48, r=22)
    z, y, x = grid
    r = np.sqrt(r2) + 1e-9
    field = np.sin(3 * np.arctan2(y - c, x - c)) + np.cos(4 * np.arccos((z - c) / r))
    edge = np.where(valid, 8339.0 + field + 0.02 * rng.normal(size=valid.shape), np.nan)
    labels, n = label_particles(valid)
    for f in (1, 2):
        binned, blabels = bin_edge_map(edge, labels, f)
        vec = map_gradient_vectors(binned, blabels, block_centroids(blabels, n), step=f)
        t = gradient_statistics(vec, n_particles=n, bin_factor=f, ndim=3, u_edges=np.zeros(0))
        assert t["gradient_summaries"]["tangential_excess"].iloc[0] > 2.0
