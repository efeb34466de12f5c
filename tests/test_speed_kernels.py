"""The compiled statistics passes (txmdb.analysis._stats_numba, _summary_numba) give the numpy
paths' numbers bit for bit: particles, depth profiles, edge histograms, binning, gradient vectors
and their statistics, quantiles, and the whole statistics phase (issue 11 item 7)."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from txmdb.analysis import gradient, particles
from txmdb.analysis.edge import edge_parameters
from txmdb.io import maps as maps_module
from txmdb.pipeline import AnalysisOptions, statistics_from_edge_map


def _numpy_paths(monkeypatch) -> None:
    """Every statistics kernel takes its numpy path, as without numba."""
    for module, name in ((particles, "_compiled_stats"), (particles, "_compiled_sums"), (particles, "_compiled_edt"),
                         (gradient, "_compiled_stats"), (gradient, "_compiled_sums"), (maps_module, "_compiled_summary")):
        monkeypatch.setattr(module, name, lambda: None)


def _blobs(shape, seed=0, dtype=np.float64):
    """A map of several particles (smoothed noise above a threshold, specks included) with edge
    energies that vary smoothly and noisily, NaN outside."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=shape), 3.5)
    valid = field > 0.01
    grids = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    edge = 8340.0 + 0.03 * sum(grids) + rng.normal(0, 0.2, shape)
    return np.where(valid, edge, np.nan).astype(dtype)


def _same(a, b) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _same_tables(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for column in a.columns:
        assert a[column].dtype == b[column].dtype, column
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize("shape", [(60, 67, 76), (151, 170)])
def test_particle_kernels_equal_the_numpy_paths(shape, monkeypatch):
    edge = _blobs(shape)
    min_voxels = 30 if len(shape) == 3 else 20
    results = []
    for plain in (False, True):
        if plain:
            _numpy_paths(monkeypatch)
        labels, n = particles.label_particles(np.isfinite(edge), min_voxels=min_voxels)
        moments = particles.particle_moments(labels, n, edge)
        depth = particles.depth_map(labels, n)
        hist_edges = particles.edge_histogram_edges(np.linspace(8300, 8400, 41), (8325, 8365))
        results.append((labels, n, moments,
                        particles.depth_profiles(labels, n, edge, depth, voxel_size_nm=25.0),
                        particles.edge_histograms(labels, n, edge, hist_edges)))
    (labels, n, moments, depth, hist), (labels0, n0, moments0, depth0, hist0) = results
    assert n == n0 >= 3 and (labels > 0).sum() < np.isfinite(edge).sum()     # specks dropped
    _same(labels, labels0)
    for a, b in zip(moments, moments0):
        _same(a, b)
    _same_tables(depth, depth0)
    _same_tables(hist, hist0)
    one = labels == 2
    assert moments[2][2] == pytest.approx(edge[one].mean(), rel=1e-14)
    assert moments[3][2] == pytest.approx(edge[one].std(), rel=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(60, 67, 76), (151, 170)])
def test_binning_and_gradient_kernels_equal_the_numpy_paths(shape, dtype, monkeypatch):
    edge = _blobs(shape, seed=3, dtype=dtype)
    labels, n = particles.label_particles(np.isfinite(edge), min_voxels=20)
    compiled = {}
    for plain in (False, True):
        if plain:
            _numpy_paths(monkeypatch)
        out = {}
        for f in (1, 2, 3):
            binned, blabels = gradient.bin_edge_map(edge, labels, f)
            centroids = gradient.block_centroids(gradient.bin_labels(labels, f), n)
            out[f] = (binned, blabels, gradient.map_gradient_vectors(binned, blabels, centroids, step=f * 25.0,
                                                                     slab_voxels=700))
        u_edges = gradient.u_histogram_edges(out[1][2].u, u_max=max(float(v[2].u.max()) for v in out.values()))
        for f, (_, _, vectors) in out.items():
            out[f] += (gradient.gradient_statistics(vectors, n_particles=n, bin_factor=f, ndim=len(shape),
                                                    u_edges=u_edges, voxel_size_nm=25.0),)
        compiled[plain] = out
    for f in (1, 2, 3):
        (binned, blabels, vectors, tables), (binned0, blabels0, vectors0, tables0) = compiled[False][f], compiled[True][f]
        _same(binned, binned0)
        _same(blabels, blabels0)
        assert len(vectors) == len(vectors0) > 100
        _same(vectors.particle, vectors0.particle)
        _same(vectors.theta_deg, vectors0.theta_deg)
        _same(vectors.u, vectors0.u)
        for name in tables:
            _same_tables(tables[name], tables0[name])


def test_quantile_kernels_equal_numpy_partition(monkeypatch):
    rng = np.random.default_rng(5)
    qs = (0.05, 0.5, 0.9, 0.95)
    # ties, a crowded bin (most values near 0, a far outlier) and a group without values
    values = np.concatenate([rng.normal(size=5000), np.zeros(4000), rng.random(20000) * 1e-9, [1e9]])
    keys = rng.integers(0, 7, values.size)
    keys[keys == 4] = 5
    compiled = gradient._group_quantiles(keys, values, 7, qs)
    monkeypatch.setattr(gradient, "_compiled_sums", lambda: None)
    plain = gradient._group_quantiles(keys, values, 7, qs)
    _same(compiled, plain)
    assert np.isnan(compiled[:, 4]).all()
    np.testing.assert_allclose(compiled[:, 2], np.quantile(values[keys == 2], qs), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("shape", [(54, 61, 70), (140, 160)])
def test_statistics_phase_is_the_same_with_and_without_compiled_kernels(shape, monkeypatch):
    edge = _blobs(shape, seed=7)
    white = (edge + 12.0 + np.random.default_rng(8).normal(0, 0.1, shape)).astype(np.float32)
    white[::7] = np.nan                       # a map with holes of its own inside the particles
    maps = {"white_line": white}
    options = AnalysisOptions(params=edge_parameters("Ni"), min_particle_voxels=25,
                              gradient_maps=("edge", "white_line"), white_line=(8345.0, 8358.0))
    runs = []
    for plain in (False, True):
        if plain:
            _numpy_paths(monkeypatch)
        runs.append(statistics_from_edge_map(edge, options, energies_ev=np.linspace(8300, 8400, 41),
                                             voxel_size_nm=30.0, maps=maps))
    fast, plain = runs
    assert fast.n_particles == plain.n_particles >= 3
    _same(fast.labels, plain.labels)
    assert set(fast.tables) == set(plain.tables)
    for name in fast.tables:
        _same_tables(fast.tables[name], plain.tables[name])


def _chunked_stack(path, data):
    from txmdb.synthetic.tomogram import energy_grid

    with h5py.File(path, "w") as f:
        f.create_dataset("exchange/data", data=data, chunks=(data.shape[0], 2, 4, 4))
        f["exchange/energy"] = energy_grid(data.shape[0], dense=(8330.0, 8350.0))
    return path


def test_finite_voxel_check_of_a_chunked_stack(tmp_path):
    """The middle chunk decides a usual chunked stack in one read; a stack whose middle chunk is
    all NaN is still searched slab by slab, and an all-NaN one still refused."""
    from txmdb.errors import InputError
    from txmdb.io.hdf5 import open_stack

    data = np.full((30, 10, 12, 12), np.nan, "f4")
    with pytest.raises(InputError, match="no voxel with a finite spectrum"):
        open_stack(_chunked_stack(tmp_path / "nan.h5", data))
    data[:, 0, 0, 0] = 1.0                        # outside the middle chunk only
    assert open_stack(_chunked_stack(tmp_path / "corner.h5", data)).chunks == (30, 2, 4, 4)
    data[:, 0, 0, 0] = np.nan
    data[:, 5, 6, 7] = 1.0                        # inside the middle chunk only
    assert open_stack(_chunked_stack(tmp_path / "middle.h5", data)).shape == data.shape
    data[3, 5, 6, 7] = np.nan                     # NaN at one energy: not a finite spectrum
    with pytest.raises(InputError, match="no voxel with a finite spectrum"):
        open_stack(_chunked_stack(tmp_path / "partial.h5", data))


@pytest.mark.parametrize("edges", [np.linspace(0, 180, 37), np.arange(0.0, 91.0, 10.0),
                                   np.append(np.linspace(0, 3.3, 41), 50.0), np.arange(33280, 33461) * 0.25,
                                   np.array([0.0, 0.0, 1.0, 1.0, 2.0]), np.array([1.0, 2.0])])
def test_grid_bins_are_numpys_searchsorted_bins(edges):
    from txmdb.analysis import _stats_numba

    rng = np.random.default_rng(2)
    values = np.concatenate([rng.uniform(edges[0] - 5, edges[-1] + 5, 20000), edges, np.nextafter(edges, -np.inf),
                             np.nextafter(edges, np.inf), [np.nan, np.inf, -np.inf]])
    counts = _stats_numba.label_histograms(np.ones(values.size, np.int32), values, edges, 1)[1]
    expected = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, edges.size - 2)
    _same(counts, np.bincount(expected, minlength=edges.size - 1))


def test_background_sync_flushes_and_reports_its_error(tmp_path):
    from txmdb.io.files import BackgroundSync

    path = tmp_path / "written.bin"
    path.write_bytes(b"x" * 4096)
    BackgroundSync(path).wait()                   # flushed: no error
    missing = BackgroundSync(tmp_path / "gone.bin")
    with pytest.raises(FileNotFoundError):
        missing.wait()
    missing.wait(check=False)                     # joined, error not raised


def test_promoted_hash_goes_on_with_the_same_digest(tmp_path):
    """BackgroundHash.promote hands the digest to a normal-priority thread: the same SHA-256
    whenever it is called (before, during, after the read), and a change is still found."""
    import os
    import threading

    from txmdb.io.files import BackgroundHash, sha256_file

    path = tmp_path / "stack.bin"
    path.write_bytes(np.random.default_rng(4).integers(0, 256, 9 << 20, dtype=np.uint8).tobytes())
    expected = sha256_file(path)
    for delay_s in (0.0, 0.002, 0.02, 1.0):
        hashing = BackgroundHash(path)
        threading.Event().wait(delay_s)
        hashing.promote()
        hashing.promote()                         # once is enough; again does nothing
        assert hashing.result() == expected
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0
    paused = BackgroundHash(path)
    paused._pause.set()                           # paused, never taken up: cancel closes its file
    paused._thread.join()
    paused.cancel()
    assert paused._state is None
    with path.open("r+b") as fh:                  # one byte changed: another digest
        fh.seek(5 << 20)
        fh.write(b"\x00" if fh.read(1) != b"\x00" else b"\x01")
    hashing = BackgroundHash(path)
    hashing.promote()
    assert hashing.result() == sha256_file(path) != expected
