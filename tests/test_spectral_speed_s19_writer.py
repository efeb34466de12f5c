"""The edge phase's writer (pipeline.EdgePhaseWriter, session 19): each slab's maps written from a
thread of its own up to two slabs behind the kernel, from three sets of reused map buffers; the same
file as the kernel's maps of the whole stack, a failed write reported and nothing left, and
the benchmark's pass runs through the same writer."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.test_pipeline_direct_maps import F, PARAMS, W, _reference
from txmdb.analysis.spectral import SpectralKernel
from txmdb.io.hdf5 import open_stack, read_slab
from txmdb.pipeline import AnalysisOptions, DirectMaps, EdgePhaseWriter, analyze_stack, edge_slabs
from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

REFS = (_reference("NiO", 1), _reference("LiNiO2", 2))


def _stack(tmp_path, shape=(11, 20, 20)):
    edge, _ = particle_field(shape, kind="rod", n_particles=1, seed=5, radius=6.0)
    write_stack(tmp_path / "s.h5", SyntheticStack(edge, energy_grid(60), noise=0.01, seed=5), energy_grid(60),
                voxel_size_nm=30.0)
    info = open_stack(tmp_path / "s.h5")
    kernel = SpectralKernel(info.energies_ev, PARAMS, white_line=W, lcf_window=F,
                            references={r.name: (r.energy_ev, r.mu) for r in REFS})
    return info, kernel


def test_two_map_sets_alternate_and_each_slab_keeps_its_maps_until_the_slab_after_next(tmp_path):
    """reuse_maps=2: slab i's maps are intact (the whole stack's, rounded once to float32) while
    slab i + 1 is computed, and slabs i and i + 2 share buffers, i and i + 1 do not."""
    info, kernel = _stack(tmp_path)
    whole = kernel.with_edges(read_slab(info, 0, info.n_slices))
    seen = []
    for start, stop, res in edge_slabs(info, PARAMS, slab_size=3, spectral=kernel, reuse_maps=2):
        seen.append((start, stop, res))
        for s0, s1, kept in seen[-2:]:              # this slab's and the one before, still intact
            for name in kernel.map_names:
                assert kept.maps[name].dtype == np.float32
                np.testing.assert_array_equal(kept.maps[name].view(np.uint32),
                                              whole.maps[name][s0:s1].astype(np.float32).view(np.uint32),
                                              err_msg=f"{name} of slab {s0} at slab {start}")
    assert [s for s, _, _ in seen] == [0, 3, 6, 9]
    maps = [r.maps["white_line"] for _, _, r in seen]
    assert np.shares_memory(maps[0], maps[2]) and np.shares_memory(maps[1], maps[3])
    assert not np.shares_memory(maps[0], maps[1])
    assert np.isfinite(whole.maps["white_line"]).any()


def test_writer_file_and_edge_map_equal_the_kernels_whole_stack(tmp_path):
    """EdgePhaseWriter alone, fed slab by slab (slabs of 4, the last of 3): the float64 edge map it
    keeps and every data set of the file are the whole stack's kernel results."""
    info, kernel = _stack(tmp_path)
    whole = kernel.with_edges(read_slab(info, 0, info.n_slices))
    spatial = tuple(info.spatial_shape)
    with h5py.File(tmp_path / "r.h5", "w") as out:
        with EdgePhaseWriter(out, tmp_path / "r.h5", spatial, kernel) as writer:
            for start, _, res in edge_slabs(info, PARAMS, slab_size=4, spectral=kernel,
                                            reuse_maps=EdgePhaseWriter.MAP_SETS):
                writer.write(start, res)
    np.testing.assert_array_equal(writer.edge, whole.edge_ev)
    assert writer.edge.dtype == np.float64
    with h5py.File(tmp_path / "r.h5") as f:
        np.testing.assert_array_equal(f["edge_ev"][...], whole.edge_ev.astype(np.float32))
        np.testing.assert_array_equal(f["jump"][...], whole.jump.astype(np.float32))
        np.testing.assert_array_equal(f["valid"][...], whole.valid)
        np.testing.assert_array_equal(f["white_line_ev"][...], whole.maps["white_line"].astype(np.float32))
        np.testing.assert_array_equal(f["rfactor"][...], whole.maps["rfactor"].astype(np.float32))
        for row, name in enumerate(("NiO", "LiNiO2")):
            np.testing.assert_array_equal(f["fractions"][row], whole.maps[f"fraction:{name}"].astype(np.float32))


def test_a_failed_write_in_the_writer_thread_fails_the_analysis_and_leaves_no_file(tmp_path, monkeypatch):
    """A write that fails in the writer's thread (here the third pwrite of slab 1's maps) is
    raised by analyze_stack, and no results file is left; an earlier file stays as it was."""
    info, _ = _stack(tmp_path)
    real = DirectMaps.write
    calls = {"n": 0, "threads": set()}

    def failing(self, name, start, values, **kwargs):
        import threading

        calls["threads"].add(threading.current_thread().name)
        if start > 0:
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(28, "No space left on device")
        return real(self, name, start, values, **kwargs)

    monkeypatch.setattr(DirectMaps, "write", failing)
    target = tmp_path / "out" / "r.h5"
    target.parent.mkdir()
    options = AnalysisOptions(params=PARAMS, slab_size=4, white_line=W, lcf=REFS, lcf_window=F)
    with pytest.raises(OSError, match="No space left"):
        analyze_stack(info, options, results_path=target)
    assert list(target.parent.iterdir()) == []
    assert calls["threads"] and all(name.startswith("txmdb-write") for name in calls["threads"])
    target.write_bytes(b"previous")
    calls["n"] = 0
    with pytest.raises(OSError):
        analyze_stack(info, options, results_path=target)
    assert target.read_bytes() == b"previous" and list(target.parent.iterdir()) == [target]


def test_benchmark_pass_writes_through_the_writer_for_both_kinds(tmp_path):
    """bench_spectral's pass (both kinds, file and no sink) on a small stack of the benchmark's
    energies: the valid voxels are the edge kernel's, and the results file is gone afterwards."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        import bench_spectral
    finally:
        sys.path.pop(0)
    info, kernel = _stack(tmp_path, shape=(9, 24, 24))
    expected = int(kernel.edge(read_slab(info, 0, info.n_slices)).valid.sum())
    for kind in ("edge", "spectral", "spectral-fresh"):
        for sink in ("file", "none"):
            got = bench_spectral.measure_pass(tmp_path / "s.h5", kind, 1, sink)
            assert got["valid"] == expected > 0, (kind, sink)
            assert got["voxels"] == 9 * 24 * 24
            if kind != "edge" and sink == "file":
                assert 0 < got["white_line_found"] <= expected
                assert 0.0 <= got["mean_fraction_NiO"] <= 1.0
            assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"], (kind, sink)


def test_a_writer_lagging_behind_the_kernel_still_writes_each_slabs_own_maps(tmp_path, monkeypatch):
    """Writes slowed down (the writer's thread sleeps before each one) so that the kernel runs
    ahead until the queue is full: the file is still the whole stack's maps, slab for slab
    (no slab's buffers overwritten by a later slab before they were written)."""
    import time

    info, kernel = _stack(tmp_path, shape=(13, 20, 20))
    whole = kernel.with_edges(read_slab(info, 0, info.n_slices))
    real = DirectMaps.write
    queued = []

    def slow(self, name, start, values, **kwargs):
        time.sleep(0.01)
        return real(self, name, start, values, **kwargs)

    monkeypatch.setattr(DirectMaps, "write", slow)
    real_write = EdgePhaseWriter.write

    def counting(self, start, result):
        queued.append(len(self._pending))
        return real_write(self, start, result)

    monkeypatch.setattr(EdgePhaseWriter, "write", counting)
    with h5py.File(tmp_path / "r.h5", "w") as out:
        with EdgePhaseWriter(out, tmp_path / "r.h5", tuple(info.spatial_shape), kernel) as writer:
            for start, _, res in edge_slabs(info, PARAMS, slab_size=2, spectral=kernel,
                                            reuse_maps=EdgePhaseWriter.MAP_SETS):
                writer.write(start, res)
    assert max(queued) == EdgePhaseWriter.MAP_SETS - 1    # the kernel did run ahead of the writes
    with h5py.File(tmp_path / "r.h5") as f:
        for dataset, name in (("white_line_ev", "white_line"), ("white_line_height", "white_line_height"),
                              ("rfactor", "rfactor")):
            np.testing.assert_array_equal(f[dataset][...], whole.maps[name].astype(np.float32), err_msg=name)
        for row, name in enumerate(("NiO", "LiNiO2")):
            np.testing.assert_array_equal(f["fractions"][row], whole.maps[f"fraction:{name}"].astype(np.float32))
        np.testing.assert_array_equal(f["edge_ev"][...], whole.edge_ev.astype(np.float32))
    np.testing.assert_array_equal(writer.edge, whole.edge_ev)
