"""The golden cases of tests/data/golden: an independent implementation's numbers (DESIGN §5).

Every number is reproduced: n vectors exactly, θ probabilities to the 8 decimals of the
json, mean |u| and tangential excess to ~1e-9 relative — from the float32 stacks as they
are on disk (the kernel's results are float64-exact), whatever the slabs and threads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from txmdb.analysis.edge import EdgeKernel, edge_parameters
from txmdb.analysis.gradient import (
    bin_edge_map,
    block_centroids,
    gradient_statistics,
    map_gradient_vectors,
    u_histogram_edges,
)
from txmdb.analysis.particles import label_particles
from txmdb.io.hdf5 import open_stack, read_slab
from txmdb.pipeline import AnalysisOptions, analyze_stack
from tests.conftest import DATA

GOLDEN = DATA / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
CASES = ["rod40", "rod96_2d"]
# the json rounds probabilities to 8 decimals
P_ATOL = 1e-8 + 5e-9



def _params(case: str):
    p = EXPECTED[case]["parameters"]
    return edge_parameters("Ni", pre=p["pre_edge_ev"], post=p["post_edge_ev"], edge=p["edge_window_ev"],
                           min_jump=p["min_jump"], snr=p["snr"])


def _info(case: str):
    return open_stack(GOLDEN / EXPECTED[case]["file"], voxel_nm=EXPECTED[case]["voxel_size_nm"])


@pytest.fixture(scope="module", params=CASES)
def case(request):
    """Edge map of the case from the edge kernel, on the float32 stack as stored."""
    name = request.param
    info = _info(name)
    mu = read_slab(info, 0, info.n_slices)
    assert mu.dtype == np.float32
    edge = EdgeKernel(info.energies_ev, _params(name))(mu).edge_ev
    return name, info, edge


def _scan_theta(tables, f):
    th = tables["theta_histograms"]
    th = th[th["particle"].isna() & (th["bin_factor"] == f)]
    plain, weighted = th[~th["weighted"]], th[th["weighted"]]
    return plain["probability"].to_numpy(), weighted["probability"].to_numpy(), plain["reference"].to_numpy()


def _check_binning(case_name, tables, *, p_atol=P_ATOL, rtol=1e-9, n_exact=True):
    summaries = tables["gradient_summaries"]
    for f_key, exp in EXPECTED[case_name]["binning"].items():
        f = int(f_key)
        row = summaries[summaries["particle"].isna() & (summaries["bin_factor"] == f)].iloc[0]
        if n_exact:
            assert row["n_vectors"] == exp["n_vectors"], f
        assert row["mean_u"] == pytest.approx(exp["mean_u_ev_per_nm"], rel=rtol), f
        assert row["tangential_excess"] == pytest.approx(exp["tangential_excess"], rel=rtol), f
        if "tangential_excess_weighted" in exp:
            assert row["tangential_excess_weighted"] == pytest.approx(exp["tangential_excess_weighted"], rel=rtol), f
        p, pw, ref = _scan_theta(tables, f)
        np.testing.assert_allclose(p, exp["theta_probability"], rtol=0, atol=p_atol, err_msg=f"f={f}")
        np.testing.assert_allclose(pw, exp["theta_probability_weighted"], rtol=0, atol=p_atol, err_msg=f"f={f}")
        np.testing.assert_allclose(ref, exp["reference"], rtol=0, atol=P_ATOL, err_msg=f"f={f}")
        # one particle per file: the particle rows equal the scan rows
        part = summaries[(summaries["particle"] == 1) & (summaries["bin_factor"] == f)].iloc[0]
        assert part["n_vectors"] == row["n_vectors"]
        assert part["tangential_excess"] == row["tangential_excess"]


def test_edge_map_statistics(case):
    name, _, edge = case
    exp = EXPECTED[name]["edge_map"]
    values = edge[np.isfinite(edge)]
    assert values.size == exp["valid_voxels"]
    assert values.mean() == pytest.approx(exp["mean_ev"], abs=1e-9)
    assert values.std() == pytest.approx(exp["std_ev"], abs=1e-9)  # population std
    if "min_ev" in exp:
        assert values.min() == pytest.approx(exp["min_ev"], abs=1e-9)
        assert values.max() == pytest.approx(exp["max_ev"], abs=1e-9)
    for key, value in exp.items():
        if key.startswith("voxel_"):
            z, y, x = (int(v) for v in key.split("_")[1:4])
            assert edge[z, y, x] == pytest.approx(value, abs=1e-9)


def test_gradient_kernels_reproduce_golden(case):
    name, info, edge = case
    labels, n = label_particles(np.isfinite(edge))
    assert n == 1
    d = EXPECTED[name]["voxel_size_nm"]
    vectors = {}
    for f in (1, 2, 3):
        binned, blabels = bin_edge_map(edge, labels, f)
        vectors[f] = map_gradient_vectors(binned, blabels, block_centroids(blabels, n), step=f * d)
    u_edges = u_histogram_edges(vectors[1].u, u_max=max(v.u.max() for v in vectors.values()))
    tables = {}
    for f, vec in vectors.items():
        for key, table in gradient_statistics(vec, n_particles=n, bin_factor=f, ndim=edge.ndim,
                                              u_edges=u_edges, theta_bins=36, voxel_size_nm=d).items():
            tables.setdefault(key, []).append(table)
    import pandas as pd

    _check_binning(name, {k: pd.concat(v, ignore_index=True) for k, v in tables.items()})


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("slab_size, workers", [(9, 1), (None, 2)])
def test_pipeline_reproduces_golden(name, slab_size, workers, tmp_path):
    out = analyze_stack(_info(name), AnalysisOptions(params=_params(name), slab_size=slab_size,
                                                     workers=workers),
                        results_path=tmp_path / "r.h5")
    exp = EXPECTED[name]["edge_map"]
    assert out.n_valid_voxels == exp["valid_voxels"] and out.n_particles == 1
    assert out.mean_edge_ev == pytest.approx(exp["mean_ev"], abs=1e-9)
    assert out.std_edge_ev == pytest.approx(exp["std_ev"], abs=1e-9)
    assert out.gradient_unit == "eV/nm"
    assert set(out.tables["gradient_summaries"]["gradient_unit"]) == {"eV/nm"}
    assert set(out.tables["gradient_summaries"]["map"]) == {"edge"}
    _check_binning(name, out.tables)
