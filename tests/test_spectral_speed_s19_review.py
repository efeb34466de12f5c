"""EdgePhaseWriter after review (session 19): maps reused in fewer than ``MAP_SETS`` sets are
refused by ``write`` (ValueError), whatever the writer's speed, instead of a slow writer
writing a later slab's maps as an earlier one's."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

from tests.test_pipeline_direct_maps import PARAMS
from tests.test_spectral_speed_s19_writer import _stack
from txmdb.io.hdf5 import read_slab
from txmdb.pipeline import EdgePhaseWriter, edge_slabs


class _SlowWriter(EdgePhaseWriter):
    """Each slab written 50 ms late: the kernel runs ahead of the writes."""

    def _write_now(self, start, result) -> None:
        time.sleep(0.05)
        super()._write_now(start, result)


@pytest.mark.parametrize(("sets", "accepted"), [(True, [0]), (2, [0, 2])])
def test_maps_in_fewer_sets_than_the_writer_needs_are_refused(tmp_path, sets, accepted):
    info, kernel = _stack(tmp_path, shape=(13, 20, 20))
    written = []
    with h5py.File(tmp_path / "r.h5", "w") as out:
        with pytest.raises(ValueError, match=r"reuse EdgePhaseWriter.MAP_SETS \(3\) sets of map buffers"):
            with _SlowWriter(out, tmp_path / "r.h5", tuple(info.spatial_shape), kernel) as writer:
                for start, _, res in edge_slabs(info, PARAMS, slab_size=2, spectral=kernel, reuse_maps=sets):
                    writer.write(start, res)
                    written.append(start)
    assert written == accepted          # refused at the first slab in a queued slab's buffers


def test_the_slow_writer_with_map_sets_writes_every_slabs_own_maps(tmp_path):
    info, kernel = _stack(tmp_path, shape=(13, 20, 20))
    whole = kernel.with_edges(read_slab(info, 0, info.n_slices))
    with h5py.File(tmp_path / "r.h5", "w") as out:
        with _SlowWriter(out, tmp_path / "r.h5", tuple(info.spatial_shape), kernel) as writer:
            for start, _, res in edge_slabs(info, PARAMS, slab_size=2, spectral=kernel,
                                            reuse_maps=EdgePhaseWriter.MAP_SETS):
                writer.write(start, res)
    with h5py.File(tmp_path / "r.h5") as f:
        np.testing.assert_array_equal(f["white_line_ev"][...], whole.maps["white_line"].astype(np.float32))
        np.testing.assert_array_equal(f["rfactor"][...], whole.maps["rfactor"].astype(np.float32))
    assert np.isfinite(whole.maps["white_line"]).any()
