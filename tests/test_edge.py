"""Edge-energy kernel (DESIGN §5): analytic edges, masks, errors, golden data, Ni foil."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf

from txmdb.analysis.edge import PRESETS, EdgeKernel, EdgeParameters, edge_parameters
from txmdb.io.hdf5 import iter_slabs, open_stack
from tests.conftest import DATA

GOLDEN = DATA / "golden"

# Ni-K grid like the golden stacks: 5 eV pre/post, 1 eV through the edge
ENERGIES = np.concatenate([np.arange(8280.0, 8330.0, 5.0), np.arange(8330.0, 8361.0, 1.0),
                           np.arange(8365.0, 8416.0, 5.0)])


def _erf_stack(e0: np.ndarray, *, energies=ENERGIES, jump=1.0, width=2.0, noise=0.0, seed=0,
               dtype=np.float32) -> np.ndarray:
    """(n_energy, n) spectra: sloped pre-edge + erf step of half-height e0 (+ noise)."""
    e = energies[:, None]
    mu = 0.3 + 2e-3 * (e - 8280) + jump * 0.5 * (1 + erf((e - e0[None]) / width))
    mu = mu + np.random.default_rng(seed).normal(0, noise, mu.shape)
    return mu.astype(dtype)


def test_presets_and_overrides():
    ni = PRESETS["Ni"]
    assert ni.pre == (-math.inf, 8320.0) and ni.post == (8370.0, math.inf)
    assert ni.edge == (8325.0, 8365.0) and ni.min_jump == 0.1 and ni.snr == 5.0
    for el, e0 in (("Co", 7709), ("Mn", 6539), ("Fe", 7112)):
        p = PRESETS[el]
        assert p.pre[1] < e0 < p.edge[1] < p.post[0]
    p = edge_parameters("ni", edge=(8330, 8360), min_jump=0)
    assert p == EdgeParameters(ni.pre, ni.post, (8330.0, 8360.0), 0.0, 5.0)
    with pytest.raises(ValueError, match="unknown element"):
        edge_parameters("Xx")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("noise", [0.0, 0.005])
def test_known_edges(dtype, seed, noise):
    e0 = np.random.default_rng(seed).uniform(8332, 8352, 4000)
    mu = _erf_stack(e0, noise=noise, seed=seed, dtype=dtype).reshape(ENERGIES.size, 40, 100)
    res = EdgeKernel(ENERGIES, PRESETS["Ni"])(mu)
    assert res.edge_ev.shape == (40, 100) and res.valid.all()
    err = np.abs(res.edge_ev.ravel() - e0)
    # energy step is 1 eV; interpolation of an erf of width 2 eV is good to ~0.05 eV
    assert err.max() < (0.06 if noise == 0 else 0.15)
    assert np.allclose(res.jump, 1.0, atol=0.001 if noise == 0 else 0.06)
    # every result is computed in float64, whatever the input dtype
    assert res.jump.dtype == np.float64 and res.edge_ev.dtype == np.float64


def test_normalize_is_step():
    e0 = np.array([8340.0, 8345.0])
    norm = EdgeKernel(ENERGIES, PRESETS["Ni"]).normalize(_erf_stack(e0, dtype=np.float64))
    assert norm.shape == (ENERGIES.size, 2)
    expect = 0.5 * (1 + erf((ENERGIES[:, None] - e0) / 2.0))
    assert np.allclose(norm, expect, atol=1e-6)


def test_masks():
    n = 6
    e0 = np.full(n, 8340.0)
    mu = _erf_stack(e0, dtype=np.float64)
    mu[:, 0] *= 0.05                          # jump 0.05 < min_jump 0.1
    mu[3, 1] = np.nan                         # NaN in the pre-edge
    mu[-1, 2] = np.inf                        # inf in the post-edge
    mu[10:20, 3] = 0.3                        # spectrum flat at the pre-edge level in the
    mu[20:, 3] = 1.5                          #   window: crosses only at 8360/8365 -> found
    mu[:, 4] = 0.3 + 2e-3 * (ENERGIES - 8280)  # no step at all: jump 0 -> masked
    mu[:9, 5] += 0.3 * (-1.0) ** np.arange(9)  # noisy pre-edge: J=1 < 5 * sigma_pre
    res = EdgeKernel(ENERGIES, PRESETS["Ni"])(mu)
    assert res.valid.tolist() == [False, False, False, True, False, False]
    assert np.isnan(res.edge_ev[~res.valid]).all()
    assert res.sigma_pre[5] > 0.2
    # lower snr threshold accepts the noisy one
    res2 = EdgeKernel(ENERGIES, edge_parameters("Ni", snr=1))(mu)
    assert res2.valid[5]


def test_no_crossing_in_window():
    # step entirely above the window's end (norm < 0.5 up to 8365) -> masked
    e = ENERGIES
    mu = np.where(e >= 8368, 1.0, 0.0) + 0.01 * (e - 8280) * 0
    p = edge_parameters("Ni", post=(8368, math.inf), edge=(8325, 8365))
    res = EdgeKernel(e, p)(mu)
    assert not res.valid and np.isnan(res.edge_ev)


def test_decreasing_step_literal_path():
    # exact linear pre-edge (sigma 0), negative jump: passes min_jump=-10, snr skipped,
    # the step is negative everywhere -> the literal norm path must find the crossing
    mu = -0.5 * (1 + erf((ENERGIES - 8341.3) / 2.0))   # flat 0 before, -1 after the edge
    res = EdgeKernel(ENERGIES, edge_parameters("Ni", min_jump=-10))(mu)
    assert res.valid and res.sigma_pre == 0
    assert abs(float(res.edge_ev) - 8341.3) < 0.06


def test_bulk_spectrum_is_0d():
    mu = _erf_stack(np.array([8339.2]), dtype=np.float64)[:, 0]
    res = EdgeKernel(ENERGIES, PRESETS["Ni"])(mu)
    assert res.edge_ev.shape == () and res.valid.shape == ()
    assert abs(float(res.edge_ev) - 8339.2) < 0.06


def test_window_errors():
    with pytest.raises(ValueError, match="pre-edge window .* holds 1 energy"):
        EdgeKernel(ENERGIES, edge_parameters("Ni", pre=(8280, 8284)))
    with pytest.raises(ValueError, match="post-edge window .* holds 0 energies"):
        EdgeKernel(ENERGIES, edge_parameters("Ni", post=(8500, 8600)))
    with pytest.raises(ValueError, match="strictly increasing"):
        EdgeKernel(ENERGIES[::-1], PRESETS["Ni"])
    dup = np.sort(np.append(ENERGIES, 8340.0))
    with pytest.raises(ValueError, match="strictly increasing"):
        EdgeKernel(dup, PRESETS["Ni"])
    with pytest.raises(ValueError, match="energies along axis 0"):
        EdgeKernel(ENERGIES, PRESETS["Ni"])(np.zeros((5, 3)))


def test_slabwise_equals_whole(tmp_path):
    e0 = np.random.default_rng(3).uniform(8333, 8350, 12 * 9 * 7)
    mu = _erf_stack(e0, noise=0.01, seed=3).reshape(ENERGIES.size, 12, 9, 7)
    k = EdgeKernel(ENERGIES, PRESETS["Ni"])
    whole = k(mu)
    parts = [k(mu[:, a:a + 5]) for a in range(0, 12, 5)]
    # equal up to the last bits: BLAS may round a column differently with its position
    np.testing.assert_allclose(np.concatenate([p.edge_ev for p in parts]), whole.edge_ev,
                               rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([p.valid for p in parts]), whole.valid)


def _golden_params(case):
    p = case["parameters"]
    return edge_parameters("Ni", pre=tuple(p["pre_edge_ev"]), post=tuple(p["post_edge_ev"]),
                           edge=tuple(p["edge_window_ev"]), min_jump=p["min_jump"], snr=p["snr"])


@pytest.mark.parametrize("name", ["rod40", "rod96_2d"])
def test_golden_edge_map(name):
    case = json.loads((GOLDEN / "expected.json").read_text())[name]
    info = open_stack(GOLDEN / case["file"])
    assert info.voxel_size_nm == case["voxel_size_nm"] or name == "rod96_2d"
    kernel = EdgeKernel(info.energies_ev, _golden_params(case))
    edge = np.empty(info.spatial_shape)
    for a, b, slab in iter_slabs(info, 7):     # odd slab size: slab-wise must not matter
        edge[a:b] = kernel(slab).edge_ev
    valid = ~np.isnan(edge)
    em = case["edge_map"]
    assert valid.sum() == em["valid_voxels"]
    v = edge[valid]
    assert v.mean() == pytest.approx(em["mean_ev"], abs=1e-4)
    assert v.std() == pytest.approx(em["std_ev"], abs=1e-4)
    if "min_ev" in em:
        assert v.min() == pytest.approx(em["min_ev"], abs=1e-4)
        assert v.max() == pytest.approx(em["max_ev"], abs=1e-4)
        assert edge[16, 20, 20] == pytest.approx(em["voxel_16_20_20_ev"], abs=1e-4)
        assert edge[20, 8, 20] == pytest.approx(em["voxel_20_8_20_ev"], abs=1e-4)


def test_ni_foil_half_height():
    data = np.loadtxt(DATA / "xas" / "ni_metal_rt.xdi", comments="#")
    energy, mu = data[:, 0], data[:, 1]
    res = EdgeKernel(energy, edge_parameters("Ni", min_jump=0))(mu)
    assert res.valid
    assert float(res.edge_ev) == pytest.approx(8339.0, abs=0.05)
    # the default min_jump passes too (the foil's jump is ~2.5)
    assert EdgeKernel(energy, PRESETS["Ni"])(mu).valid


def test_float32_input_gives_the_float64_edges():
    # A trap for a plain float32 search: flat pre/post lines whose mid level is not a
    # float32 number, and an early edge-window point equal to mid rounded to float32 —
    # below mid in exact (float64) arithmetic, "at or above" it in float32. The float64
    # crossing is the later real step; the kernel must find that one for float32 input.
    levels = [(lo, hi) for lo in np.float32(np.arange(0.05, 0.5, 0.01)) for hi in (lo + np.float32(1.0),)
              if np.float32((np.float64(lo) + np.float64(hi)) / 2) < (np.float64(lo) + np.float64(hi)) / 2]
    lo, hi = levels[0]
    mid64 = (np.float64(lo) + np.float64(hi)) / 2
    mu = np.where(ENERGIES < 8341.5, lo, hi).astype(np.float32)
    trap = int(np.searchsorted(ENERGIES, 8330.0))
    mu[trap] = np.float32(mid64)
    assert mu[trap] < mid64                   # below mid: no crossing here in float64
    k = EdgeKernel(ENERGIES, edge_parameters("Ni", min_jump=0.5))
    exact = k(mu.astype(np.float64))
    got = k(mu)
    assert exact.valid and got.valid
    assert float(exact.edge_ev) > 8341              # the real step, not the trap
    assert float(got.edge_ev) == float(exact.edge_ev)
    # many voxels at once (one block) with noise: bit-identical to the float64 evaluation
    e0 = np.random.default_rng(7).uniform(8332, 8352, 50_000)
    mu = _erf_stack(e0, noise=0.01, seed=7)
    a, b = k(mu), k(mu.astype(np.float64))
    np.testing.assert_array_equal(a.valid, b.valid)
    np.testing.assert_allclose(a.edge_ev[a.valid], b.edge_ev[b.valid], rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.jump, b.jump, rtol=0, atol=1e-12)


def _compare_paths(kernel: EdgeKernel, mu: np.ndarray) -> int:
    """The compiled kernel (``__call__``) against the numpy path: same masks, same numbers."""
    a, b = kernel(mu), kernel._call_numpy(mu)
    np.testing.assert_array_equal(a.valid, b.valid)
    np.testing.assert_array_equal(np.isnan(a.edge_ev), ~a.valid)
    np.testing.assert_allclose(a.edge_ev[a.valid], b.edge_ev[b.valid], rtol=0, atol=1e-9)
    for name in ("jump", "sigma_pre"):
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_array_equal(np.isfinite(x), np.isfinite(y))
        np.testing.assert_allclose(x[np.isfinite(x)], y[np.isfinite(y)], rtol=1e-12, atol=1e-13)
    return int(a.valid.sum())


def test_numba_path_equals_numpy_path():
    pytest.importorskip("numba")
    from txmdb.analysis import edge as edge_mod

    assert edge_mod._numba_kernel() is not None
    rng = np.random.default_rng(11)
    strict, loose = PRESETS["Ni"], edge_parameters("Ni", snr=0, min_jump=-10)
    every = edge_parameters("Ni", snr=-1e6, min_jump=-10)   # every finite voxel searched
    for noise in (0.002, 0.05):
        mu = _erf_stack(rng.uniform(8320, 8360, 24 * 40 * 40), noise=noise, seed=3, jump=0.3)
        flat = mu.reshape(ENERGIES.size, -1)
        bad = rng.choice(flat.shape[1], 200, replace=False)
        rows = rng.integers(0, ENERGIES.size, 200)
        flat[rows[:60], bad[:60]] = np.nan
        flat[rows[60:120], bad[60:120]] = np.inf
        flat[rows[120:160], bad[120:160]] = -np.inf
        flat[rows[160:], bad[160:]] = 3e37
        mu = mu.reshape(ENERGIES.size, 24, 40, 40)
        for params in (strict, loose, every):
            k = EdgeKernel(ENERGIES, params)
            for m in (mu, mu.astype(np.float64), mu[:, :, ::3]):      # incl. a strided view
                n_valid = _compare_paths(k, m)
                assert 0 < n_valid < m[0].size
    k = EdgeKernel(ENERGIES, every)
    # decreasing steps (literal norm search), pure noise, steps that change sign
    assert _compare_paths(k, _erf_stack(rng.uniform(8320, 8360, 5000), jump=-1.0, noise=0.01)) == 5000
    _compare_paths(k, rng.normal(size=(ENERGIES.size, 5000)).astype(np.float32))
    _compare_paths(k, rng.normal(size=(ENERGIES.size, 5000)) * 0.3
                   + _erf_stack(rng.uniform(8320, 8360, 5000), jump=0.2, dtype=np.float64))
    # overlapping pre/post windows, an edge window from the first energy
    mu = _erf_stack(rng.uniform(8320, 8360, 3000), noise=0.02)
    for kw in (dict(pre=(8280, 8345), post=(8330, 8415)), dict(edge=(8200, 8340))):
        for extra in (dict(), dict(snr=-1e6, min_jump=-10)):
            assert _compare_paths(EdgeKernel(ENERGIES, edge_parameters("Ni", **kw, **extra)), mu) > 0
    # a bulk spectrum, threads, an empty slab
    assert _compare_paths(k, _erf_stack(np.array([8340.0]))[:, 0]) == 1
    mu = _erf_stack(rng.uniform(8320, 8360, 3000), noise=0.02)
    np.testing.assert_array_equal(k(mu, threads=2).edge_ev, k(mu).edge_ev)
    assert k(np.empty((ENERGIES.size, 0, 5), np.float32)).edge_ev.shape == (0, 5)
