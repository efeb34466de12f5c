"""The spectral maps computed only on the runs of 16-voxel pieces that hold a valid voxel
(``_spectral_numba._next_run``/``_run_end``): every valid voxel's maps are the bits a
sweep over every voxel gives, every other voxel is NaN, whatever the mask's pattern and
the block's length; and the fused pass over a rod slab still equals the edge kernel and
the separate call."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_spectral_kernels import E, F, PARAMS, REFS, W, mixtures
from txmdb.analysis import _spectral_numba as sn
from txmdb.analysis.edge import EdgeKernel
from txmdb.analysis.spectral import SpectralKernel
from txmdb.synthetic.tomogram import SyntheticStack, particle_field


def _masks(n: int, rng) -> dict[str, np.ndarray]:
    runs = np.zeros(n, bool)
    for start in range(5, n, 300):                # runs of 40 across piece borders, gaps of 260
        runs[start:start + 40] = True
    lone = np.zeros(n, bool)
    lone[[0, 15, 16, 17, 1023, 1024, 1039, n - 1]] = True   # ends of pieces and of blocks
    return {"every": np.ones(n, bool), "none": np.zeros(n, bool), "sparse": rng.random(n) < 0.03,
            "half": rng.random(n) < 0.5, "runs": runs, "lone": lone}


@pytest.mark.parametrize("names, white_line", [(("low", "high"), W), (("low", "high", "broad"), W),
                                               (("low",), None), ((), W)])
@pytest.mark.parametrize("n", [3000, 1024 + 16 * 3 + 5])
def test_maps_of_valid_voxels_do_not_depend_on_the_mask(names, white_line, n):
    rng = np.random.default_rng(23)
    mu = mixtures(rng, ("low", "high"), n).astype(np.float32)
    kernel = SpectralKernel(E, PARAMS, white_line=white_line, references={k: REFS[k] for k in names} or None,
                            lcf_window=F if names else None)
    every = kernel(mu, np.ones(n, bool))
    assert all(np.isfinite(values).mean() > 0.5 for values in every.values())
    for label, valid in _masks(n, rng).items():
        maps = kernel(mu, valid)
        assert maps.keys() == every.keys()
        for name, values in maps.items():
            np.testing.assert_array_equal(values[valid], every[name][valid], err_msg=f"{label} {name}")
            assert np.isnan(values[~valid]).all(), (label, name)


def test_pieces_and_runs_cover_exactly_the_valid_voxels():
    rng = np.random.default_rng(5)
    for m in (1, 15, 16, 17, 100, 1024):
        for _ in range(20):
            valid = rng.random(m + 40) < rng.choice([0.01, 0.1, 0.5])
            v0 = int(rng.integers(0, 40))
            covered = np.zeros(m, bool)
            s = sn._next_run(valid, v0, m, 0)
            while s < m:
                e = sn._run_end(valid, v0, m, s)
                assert s % sn._PIECE == 0 and (e % sn._PIECE == 0 or e == m) and e > s
                covered[s:e] = True
                s = sn._next_run(valid, v0, m, e)
            block = valid[v0:v0 + m]
            assert covered[block].all()
            for p in range(0, m, sn._PIECE):            # a piece is computed iff it holds a valid voxel
                assert covered[p] == block[p:p + sn._PIECE].any()


def test_fused_pass_on_a_rod_slab_equals_the_separate_passes():
    edge_map, _ = particle_field((48, 48, 48), kind="rod", seed=3, radius=0.4 * 48)
    mu = SyntheticStack(edge_map, E, noise=0.01, seed=4).slab(20, 24)
    kernel = SpectralKernel(E, PARAMS, white_line=W, references={k: REFS[k] for k in ("low", "high")},
                            lcf_window=F)
    fused = kernel.with_edges(mu, threads=2)
    alone = EdgeKernel(E, PARAMS)(mu)
    np.testing.assert_array_equal(fused.valid, alone.valid)
    assert 0.2 < fused.valid.mean() < 0.9
    every = kernel(mu, np.ones(fused.valid.shape, bool))
    for name, values in fused.maps.items():
        np.testing.assert_array_equal(values[fused.valid], every[name][fused.valid], err_msg=name)
        assert np.isnan(values[~fused.valid]).all(), name
