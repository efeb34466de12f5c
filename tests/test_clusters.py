"""Phase clusters (DESIGN §11, txm analyze --clusters K): k-means on the normalised edge window, out of core.

Against straightforward computations: the adjusted Rand index on a three-phase stack of
known labels, labels and tables that do not depend on the slab size, each cluster's size
and mean spectrum recomputed from the label map with plain numpy normalisation, the PCA
table against scikit-learn on the same sample, the seeded sample against a plain sort of
the keys; bad K through the CLI on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from txmdb.analysis.clusters import NO_CLUSTER, SEED, SpectraSample, edge_window, sample_keys
from txmdb.analysis.edge import EdgeKernel, edge_parameters
from txmdb.io.hdf5 import open_stack
from txmdb.pipeline import AnalysisOptions, analyze_stack
from txmdb.synthetic.tomogram import energy_grid, three_phase_stack, write_stack

PARAMS = edge_parameters("Ni")
ENERGIES = energy_grid(60)


@pytest.fixture(scope="module")
def three_phases(tmp_path_factory):
    """A 3-D ball of three concentric phases (noise 0.01 of a unit jump) on disk, and its truth."""
    stack, truth = three_phase_stack((18, 22, 20), ENERGIES, noise=0.01, seed=3)
    path = tmp_path_factory.mktemp("clusters") / "three.h5"
    write_stack(path, stack, ENERGIES, voxel_size_nm=30.0)
    return path, truth, np.asarray(stack, dtype=np.float64)


def _analyze(path: Path, out: Path, k: int = 3, slab_size: int | None = None):
    info = open_stack(path)
    options = AnalysisOptions(params=PARAMS, bin_factors=(1,), clusters=k, slab_size=slab_size)
    outputs = analyze_stack(info, options, results_path=out)
    with h5py.File(out, "r") as f:
        return outputs, f["cluster"][()], np.isfinite(f["edge_ev"][()])


def _plain_norm(mu: np.ndarray) -> np.ndarray:
    """norm(E) of DESIGN §5 with numpy's polyfit lines, per voxel: (n_energy, n_voxel)."""
    e = ENERGIES
    mu = mu.reshape(mu.shape[0], -1)
    pre, post = e <= PARAMS.pre[1], e >= PARAMS.post[0]
    a_pre = np.polyfit(e[pre], mu[pre], 1)          # (2, n): slope, intercept
    a_post = np.polyfit(e[post], mu[post], 1)
    line = lambda c: c[0][None, :] * e[:, None] + c[1][None, :]  # noqa: E731
    return (mu - line(a_pre)) / (line(a_post) - line(a_pre))


def test_three_phases_are_found(three_phases, tmp_path):
    path, truth, _ = three_phases
    outputs, labels, valid = _analyze(path, tmp_path / "r.h5")
    inside = truth["inside"]
    assert np.array_equal(valid, inside)                       # every particle voxel has an edge
    assert np.all(labels[~valid] == NO_CLUSTER) and np.all(labels[valid] >= 0)
    assert adjusted_rand_score(truth["labels"][inside], labels[inside]) >= 0.95
    # clusters numbered by their mean over the edge window, descending: here the core (earliest edge) first
    assert np.array_equal(np.unique(labels[inside]), [0, 1, 2])
    for phase in range(3):
        assert np.bincount(labels[truth["labels"] == phase]).argmax() == phase
    assert set(outputs.tables) >= {"cluster_spectra", "pca_variance"}


def test_labels_and_tables_do_not_depend_on_the_slab_size(three_phases, tmp_path):
    path, _, _ = three_phases
    runs = [_analyze(path, tmp_path / f"r{s}.h5", slab_size=s) for s in (1, 3, 7, 18)]
    first_out, first_labels, _ = runs[0]
    for outputs, labels, _ in runs[1:]:
        assert np.array_equal(labels, first_labels)
        for name in ("cluster_spectra", "pca_variance"):
            a, b = outputs.tables[name], first_out.tables[name]
            assert list(a.columns) == list(b.columns)
            np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=0, atol=1e-12)


def test_sample_read_apart_from_the_edge_pass_gives_the_same_clusters(three_phases, tmp_path):
    # another edge source (as Dask's): the sample comes from a read of its own
    from txmdb.pipeline import edge_slabs

    path, _, _ = three_phases
    info = open_stack(path)
    options = AnalysisOptions(params=PARAMS, bin_factors=(1,), clusters=3, slab_size=5)
    ticks = []
    apart = analyze_stack(info, options, results_path=tmp_path / "apart.h5",
                          edge_source=lambda i, p, s: edge_slabs(i, p, slab_size=s),
                          progress=lambda done, total: ticks.append((done, total)))
    local, labels, _ = _analyze(path, tmp_path / "local.h5", slab_size=5)
    with h5py.File(tmp_path / "apart.h5", "r") as f:
        np.testing.assert_array_equal(f["cluster"][()], labels)
    for name in ("cluster_spectra", "pca_variance"):
        np.testing.assert_array_equal(apart.tables[name].to_numpy(float), local.tables[name].to_numpy(float))
    # 4 slabs: edge pass, sample pass, label pass, particles, one binning factor
    assert ticks[-1] == (3 * 4 + 2, 3 * 4 + 2)


def test_sizes_and_mean_spectra_match_the_label_map(three_phases, tmp_path):
    path, _, mu = three_phases
    outputs, labels, valid = _analyze(path, tmp_path / "r.h5", k=4)
    table = outputs.tables["cluster_spectra"]
    window = (ENERGIES >= PARAMS.edge[0]) & (ENERGIES <= PARAMS.edge[1])
    norm = _plain_norm(mu)[window]                              # (n_window, n_voxel)
    flat = labels.reshape(-1)
    assert sorted(table["cluster"].unique()) == [0, 1, 2, 3]
    for cluster, rows in table.groupby("cluster"):
        members = flat == cluster
        assert (rows["n_voxels"] == members.sum()).all() and members.sum() > 0
        np.testing.assert_array_equal(rows["energy_ev"], ENERGIES[window])
        np.testing.assert_array_equal(rows["energy_index"], np.flatnonzero(window))
        np.testing.assert_allclose(rows["mean_norm"], norm[:, members].mean(axis=1), rtol=0, atol=1e-9)
    assert table.groupby("cluster")["n_voxels"].first().sum() == valid.sum()


def test_pca_table_is_sklearns_on_the_same_sample(three_phases, tmp_path):
    path, _, mu = three_phases
    outputs, _, valid = _analyze(path, tmp_path / "r.h5")
    # fewer valid voxels than the sample's bound: the sample is every valid voxel
    window = (ENERGIES >= PARAMS.edge[0]) & (ENERGIES <= PARAMS.edge[1])
    spectra = _plain_norm(mu)[window][:, valid.reshape(-1)].T
    expected = PCA(random_state=SEED).fit(spectra).explained_variance_ratio_
    table = outputs.tables["pca_variance"]
    assert list(table["component"]) == list(range(1, window.sum() + 1))
    np.testing.assert_allclose(table["explained_variance_ratio"], expected, rtol=1e-6, atol=1e-12)
    assert table["explained_variance_ratio"].iloc[0] > 0.5       # three phases: one strong component


@pytest.mark.parametrize("slab", [1, 4, 18])
def test_sample_is_the_smallest_keys_whatever_the_slabs(three_phases, slab):
    _, truth, mu = three_phases
    kernel = EdgeKernel(ENERGIES, PARAMS)
    window = edge_window(ENERGIES, PARAMS)
    valid = kernel(mu).valid
    sample = SpectraSample(kernel, window, size=500, seed=7)
    per_slice = valid[0].size
    for start in range(0, valid.shape[0], slab):
        sample.add(mu[:, start:start + slab], valid[start:start + slab], start * per_slice)
    index, spectra = sample.result()
    candidates = np.flatnonzero(valid.reshape(-1))
    expected = np.sort(candidates[np.argsort(sample_keys(candidates, 7))[:500]])
    np.testing.assert_array_equal(index, expected)
    norm = _plain_norm(mu)[(ENERGIES >= PARAMS.edge[0]) & (ENERGIES <= PARAMS.edge[1])]
    np.testing.assert_allclose(spectra, norm[:, expected].T, rtol=0, atol=1e-9)


def test_keys_are_distinct_and_seeded():
    idx = np.arange(200_000)
    keys = sample_keys(idx, 0)
    assert np.unique(keys).size == idx.size
    assert not np.array_equal(keys, sample_keys(idx, 1))


# ------------------------------------------------------------------------------ through the CLI
def _count(cli, table: str) -> int:
    return json.loads(cli("query", "sql", f"SELECT count(*) AS n FROM {table}", "--format", "json").stdout)[0]["n"]


def _ingest(cli, path: Path) -> str:
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "phases").exit_code == 0
    result = cli("txm", "ingest", path, "--sample", "phases")
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def test_cli_clusters_queries_and_label_map(cli, three_phases):
    path, truth, _ = three_phases
    scan = _ingest(cli, path)
    result = cli("txm", "analyze", scan, "--clusters", "3", "--bin", "1")
    assert result.exit_code == 0, result.output
    spectra = json.loads(cli("query", "clusters", "--format", "json").stdout)
    n_window = int(((ENERGIES >= PARAMS.edge[0]) & (ENERGIES <= PARAMS.edge[1])).sum())
    assert len(spectra) == 3 * n_window
    assert {r["cluster"] for r in spectra} == {0, 1, 2}
    assert sum(r["n_voxels"] for r in spectra if r["energy_index"] == spectra[0]["energy_index"]) \
        == int(truth["inside"].sum())
    pca = json.loads(cli("query", "pca", "--format", "json").stdout)
    assert [r["component"] for r in pca] == list(range(1, n_window + 1))
    assert abs(sum(r["explained_variance_ratio"] for r in pca) - 1.0) < 1e-9
    assert {r["scan_id"] for r in pca} == {int(scan)}
    results = json.loads(cli("query", "analyses", "--format", "json").stdout)[0]["results_path"]
    with h5py.File(results, "r") as f:
        labels = f["cluster"][()]
    inside = truth["inside"]
    assert adjusted_rand_score(truth["labels"][inside], labels[inside]) >= 0.95
    # an analysis without --clusters has no cluster rows of its own
    assert cli("txm", "analyze", scan, "--bin", "1").exit_code == 0
    assert json.loads(cli("query", "clusters", "--format", "json").stdout) == []


@pytest.mark.parametrize("k, status, line", [
    ("0", 1, "error: --clusters must be between 2 and 100, got 0"),
    ("101", 1, "error: --clusters must be between 2 and 100, got 101"),
    # not a whole number: a usage error (session 24, as every typed number)
    ("-2", 2, "error: Invalid value for '--clusters': '-2' is not a whole number from 0 to 2147483647 "
              "(see 'txmdb txm analyze --help')"),
])
def test_cli_refuses_a_bad_number_of_clusters(cli, three_phases, k, status, line):
    path, _, _ = three_phases
    scan = _ingest(cli, path)
    result = cli("txm", "analyze", scan, "--clusters", k)
    assert result.exit_code == status
    assert result.output.strip().splitlines() == [line]
    assert _count(cli, "analyses") == 0 and _count(cli, "cluster_spectra") == 0


def test_cli_refuses_more_clusters_than_valid_voxels(cli, tmp_path):
    # a 2-D field of 6 x 6 voxels where only 3 have an edge
    stack, truth = three_phase_stack((6, 6), ENERGIES, noise=0.0)
    mu = np.asarray(stack)
    flat = np.flatnonzero(truth["inside"].reshape(-1))
    keep = np.zeros(36, bool)
    keep[flat[:3]] = True
    empty = mu[:, ~truth["inside"]][:, :1]
    mu.reshape(mu.shape[0], -1)[:, ~keep] = empty              # no edge: masked
    path = tmp_path / "three-voxels.h5"
    write_stack(path, mu, ENERGIES)
    scan = _ingest(cli, path)
    result = cli("txm", "analyze", scan, "--clusters", "4", "--bin", "1")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {path}: 4 clusters asked for, but only 3 voxels have a valid spectrum"]
    # a refused input like a bad option: nothing stored, not even a failed analysis row
    assert _count(cli, "analyses") == 0
    assert _count(cli, "cluster_spectra") == 0 and _count(cli, "pca_variance") == 0
    assert not list((Path(cli.store) / "analyses").glob("*.h5"))
    assert cli("txm", "analyze", scan, "--clusters", "3", "--bin", "1",
               "--min-particle-voxels", "1").exit_code == 0


def test_dask_slab_path_gives_the_same_clusters(cli, three_phases):
    """One scan on a Dask cluster is split into slabs (the sample then has a read pass of its own)."""
    from dask.distributed import LocalCluster

    path, _, _ = three_phases
    scan = _ingest(cli, path)
    assert cli("txm", "analyze", scan, "--clusters", "3", "--bin", "1").exit_code == 0
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = cli("txm", "analyze", scan, "--clusters", "3", "--bin", "1", "--scheduler",
                     cluster.scheduler_address)
    assert result.exit_code == 0, result.output
    serial, split = json.loads(cli("query", "analyses", "--format", "json").stdout)
    with h5py.File(serial["results_path"], "r") as f, h5py.File(split["results_path"], "r") as g:
        np.testing.assert_array_equal(f["cluster"][()], g["cluster"][()])
    for table in ("clusters", "pca"):
        rows = [json.loads(cli("query", table, "--analysis", str(a["analysis_id"]), "--format", "json").stdout)
                for a in (serial, split)]
        for row in rows[0] + rows[1]:
            row.pop("analysis_id")
        assert rows[0] == rows[1] and rows[0]
