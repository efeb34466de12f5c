"""``edge_slabs(reuse_maps=True)``: the spectral maps of each slab as float32 in one set of reused
buffers, as ``txm analyze`` writes them, against the fresh float64 maps of the default path."""

from __future__ import annotations

import numpy as np

from tests.test_pipeline_direct_maps import F, PARAMS, W, _reference
from txmdb.analysis.spectral import SpectralKernel
from txmdb.io.hdf5 import open_stack, read_slab
from txmdb.pipeline import edge_slabs
from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack


def _stack(tmp_path):
    edge, _ = particle_field((11, 20, 20), kind="rod", n_particles=1, seed=5, radius=6.0)
    write_stack(tmp_path / "s.h5", SyntheticStack(edge, energy_grid(60), noise=0.01, seed=5), energy_grid(60),
                voxel_size_nm=30.0)
    info = open_stack(tmp_path / "s.h5")
    refs = (_reference("NiO", 1), _reference("LiNiO2", 2))
    kernel = SpectralKernel(info.energies_ev, PARAMS, white_line=W, lcf_window=F,
                            references={r.name: (r.energy_ev, r.mu) for r in refs})
    return info, kernel


def test_reused_float32_maps_are_each_slabs_own_and_the_default_path_does_not_alias(tmp_path):
    """Slabs of 4 slices (the last of 3): consumed slab by slab, the reused maps are float32
    and bit for bit the whole stack's float64 maps rounded; they live in the same buffers from
    slab to slab. The default path's maps, kept past the next slab, stay float64 and intact."""
    info, kernel = _stack(tmp_path)
    whole = kernel.with_edges(read_slab(info, 0, info.n_slices))
    starts, first = [], None
    for start, stop, res in edge_slabs(info, PARAMS, slab_size=4, spectral=kernel, reuse_maps=True):
        starts.append(start)
        np.testing.assert_array_equal(res.edge_ev, whole.edge_ev[start:stop])
        for name in kernel.map_names:
            values = res.maps[name]
            assert values.dtype == np.float32, name
            np.testing.assert_array_equal(values.view(np.uint32),
                                          whole.maps[name][start:stop].astype(np.float32).view(np.uint32),
                                          err_msg=f"{name} at {start}")
        first = first or res.maps
        assert all(np.shares_memory(res.maps[name], first[name]) for name in kernel.map_names)
    assert starts == [0, 4, 8]
    kept = list(edge_slabs(info, PARAMS, slab_size=4, spectral=kernel))
    for start, stop, res in kept:
        for name in kernel.map_names:
            assert res.maps[name].dtype == np.float64
            np.testing.assert_array_equal(res.maps[name], whole.maps[name][start:stop], err_msg=name)
    assert not any(np.shares_memory(kept[0][2].maps[name], kept[1][2].maps[name]) for name in kernel.map_names)
    assert np.isfinite(whole.maps["white_line"]).any() and np.isnan(whole.maps["white_line"]).any()
