"""Particles: labels, table, depth profiles and edge histograms (DESIGN §5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from txmdb.analysis.particles import (
    DEPTH_COLUMNS,
    EDGE_HISTOGRAM_COLUMNS,
    PARTICLE_COLUMNS,
    depth_map,
    depth_profiles,
    edge_histogram_edges,
    edge_histograms,
    label_particles,
    particle_table,
)


def _two_boxes() -> np.ndarray:
    valid = np.zeros((30, 40, 50), dtype=bool)
    valid[2:12, 3:20, 5:30] = True      # 10 x 17 x 25 = 4250 voxels, first in raster order
    valid[15:28, 22:38, 10:45] = True   # 13 x 16 x 35 = 7280 voxels
    valid[0, 39, 49] = True             # specks: dropped
    valid[29, 0:3, 0] = True
    return valid


def test_two_particles_get_their_own_labels_and_centroids():
    valid = _two_boxes()
    labels, n = label_particles(valid)
    assert n == 2
    assert labels.dtype == np.int32
    assert (labels[2:12, 3:20, 5:30] == 1).all() and (labels[15:28, 22:38, 10:45] == 2).all()
    edge = np.where(labels == 1, 8338.0, np.where(labels == 2, 8341.0, np.nan))
    table = particle_table(labels, n, edge, voxel_size_nm=30.0)
    assert list(table.columns) == list(PARTICLE_COLUMNS)
    assert table["particle"].tolist() == [1, 2]
    assert table["n_voxels"].tolist() == [4250, 7280]
    np.testing.assert_allclose(table[["centroid_z", "centroid_y", "centroid_x"]].to_numpy(),
                               [[6.5, 11.0, 17.0], [21.0, 29.5, 27.0]])
    np.testing.assert_allclose(table["mean_edge_ev"], [8338.0, 8341.0])
    np.testing.assert_allclose(table["std_edge_ev"], [0.0, 0.0], atol=1e-9)
    r = np.cbrt(3 * 4250 / (4 * math.pi))
    assert table["equivalent_radius_vox"].iloc[0] == pytest.approx(r)
    assert table["equivalent_radius_nm"].iloc[0] == pytest.approx(30 * r)


def test_small_components_are_dropped_and_masked():
    valid = _two_boxes()
    labels, n = label_particles(valid, min_voxels=1000)
    assert labels[0, 39, 49] == 0 and (labels[29, 0:3, 0] == 0).all()
    assert (labels > 0).sum() == 4250 + 7280
    # a threshold above the first box drops it too; the other is renumbered 1
    labels, n = label_particles(valid, min_voxels=5000)
    assert n == 1 and (labels[15:28, 22:38, 10:45] == 1).all() and (labels > 0).sum() == 7280
    # default thresholds: 1000 in 3D, 100 in 2D
    labels, n = label_particles(valid, min_voxels=None)
    assert n == 2
    img = np.zeros((40, 40), dtype=bool)
    img[2:12, 2:12] = True   # 100 pixels: kept
    img[20:29, 20:31] = True  # 99 pixels: dropped
    labels, n = label_particles(img)
    assert n == 1 and (labels > 0).sum() == 100


def test_26_versus_6_connectivity():
    valid = np.zeros((20, 20, 20), dtype=bool)
    valid[0:10, 0:10, 0:10] = True
    valid[10:20, 10:20, 10:20] = True  # touches the first cube at one corner only
    labels, n = label_particles(valid, min_voxels=10)
    assert n == 1  # 26-connectivity (the default) joins them
    labels, n = label_particles(valid, min_voxels=10, connectivity=1)
    assert n == 2  # 6-connectivity does not
    labels, n = label_particles(valid, min_voxels=10, connectivity=2)
    assert n == 2  # 18-connectivity (edges) neither
    img = np.zeros((20, 20), dtype=bool)
    img[0:10, 0:10] = True
    img[10:20, 10:20] = True
    assert label_particles(img, min_voxels=10)[1] == 1  # 8-connectivity in 2D
    assert label_particles(img, min_voxels=10, connectivity=1)[1] == 2


def test_std_is_population_std():
    labels = np.ones((1, 1, 4), dtype=np.int32)
    edge = np.array([[[1.0, 2.0, 3.0, 4.0]]]) + 8330.0
    table = particle_table(labels, 1, edge)
    assert table["std_edge_ev"].iloc[0] == pytest.approx(np.std([1, 2, 3, 4]))
    assert np.isnan(table["equivalent_radius_nm"].iloc[0])


def test_depth_map_is_the_distance_transform_of_each_particle():
    labels, n = label_particles(_two_boxes())
    depth = depth_map(labels, n)
    for k in (1, 2):
        mask = labels == k
        np.testing.assert_allclose(depth[mask], ndi.distance_transform_edt(mask)[mask], rtol=1e-6)
    assert (depth[labels == 0] == 0).all()
    # a particle that fills the field of view: measured from the box faces
    full = np.ones((9, 9, 9), dtype=np.int32)
    d = depth_map(full, 1)
    assert d.min() == 1 and d.max() == 5


def test_depth_profile_surface_to_bulk():
    # a sphere whose edge energy rises linearly with depth
    n = 41
    z, y, x = np.mgrid[:n, :n, :n]
    valid = (z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 15 ** 2
    labels, count = label_particles(valid)
    depth = depth_map(labels, count)
    edge = np.where(valid, 8335.0 + 0.5 * depth, np.nan)
    prof = depth_profiles(labels, count, edge, depth, voxel_size_nm=30.0)
    assert list(prof.columns) == list(DEPTH_COLUMNS)
    scan = prof[prof["particle"].isna()]
    part = prof[prof["particle"] == 1]
    assert scan["n_voxels"].sum() == valid.sum() == part["n_voxels"].sum()
    np.testing.assert_allclose(scan[["mean_edge_ev", "std_edge_ev"]].to_numpy(),
                               part[["mean_edge_ev", "std_edge_ev"]].to_numpy())
    assert scan["depth_lo_vox"].iloc[0] == 1.0
    assert np.all(np.diff(scan["mean_edge_ev"].to_numpy()) > 0)  # surface-to-bulk gradient
    np.testing.assert_allclose(scan["depth_hi_nm"], 30.0 * scan["depth_hi_vox"])
    # each bin's values are 8335 + 0.5·depth with depth inside [lo, lo + 1)
    assert ((scan["mean_edge_ev"] >= 8335 + 0.5 * scan["depth_lo_vox"]) &
            (scan["mean_edge_ev"] < 8335 + 0.5 * scan["depth_hi_vox"])).all()


def test_edge_histograms_cover_the_edge_window():
    energies = np.r_[8280:8330:5.0, 8330:8361:1.0, 8365:8420:5.0]
    edges = edge_histogram_edges(energies, (8325.0, 8365.0))
    assert edges[0] == 8320.0 and edges[-1] == 8365.0  # from the energy below the window
    np.testing.assert_allclose(np.diff(edges), 0.25)
    labels, n = label_particles(_two_boxes())
    rng = np.random.default_rng(1)
    edge = np.where(labels > 0, rng.uniform(8321, 8364, labels.shape), np.nan)
    hist = edge_histograms(labels, n, edge, edges)
    assert list(hist.columns) == list(EDGE_HISTOGRAM_COLUMNS)
    by = hist.groupby(hist["particle"].fillna(0))
    np.testing.assert_array_equal(by["count"].sum().to_numpy(), [4250 + 7280, 4250, 7280])
    np.testing.assert_allclose(by["probability"].sum().to_numpy(), 1.0)
    one = hist[hist["particle"] == 1]
    np.testing.assert_array_equal(one["count"], np.histogram(edge[labels == 1], edges)[0])
