"""`txm analyze --scheduler`: a real Dask LocalCluster gives the same statistics as the serial run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA

GOLDEN = DATA / "golden"


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


def _stats(cli, scan_id: str, analysis_id: int) -> tuple[list, list]:
    theta = json.loads(cli("query", "theta", "--scan", scan_id, "--analysis", str(analysis_id), "--format", "json").stdout)
    grad = json.loads(cli("query", "gradient", "--scan", scan_id, "--analysis", str(analysis_id), "--format", "json").stdout)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "analysis_id"} for r in rows]  # noqa: E731
    return strip(theta), strip(grad)


def test_cluster_run_equals_serial_run(cli, cluster, tmp_path):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    ids = []
    for name in ("rod40.h5", "rod96_2d.h5"):
        result = cli("txm", "ingest", GOLDEN / name, "--sample", "rod", "--voxel-nm", "30")
        assert result.exit_code == 0, result.output
        ids.append(result.stdout.strip().splitlines()[-1])
    serial = cli("txm", "analyze", "--all", "--bin", "1,2")
    assert serial.exit_code == 0, serial.output
    distributed = cli("txm", "analyze", "--all", "--bin", "1,2", "--scheduler", cluster.scheduler_address)
    assert distributed.exit_code == 0, distributed.output
    analyses = json.loads(cli("query", "sql", "SELECT id, scan_id FROM analyses ORDER BY id", "--format", "json").stdout)
    assert len(analyses) == 4
    for scan_id in ids:
        first, second = [a["id"] for a in analyses if str(a["scan_id"]) == scan_id]
        assert _stats(cli, scan_id, first) == _stats(cli, scan_id, second)
        assert _stats(cli, scan_id, first)[0], "statistics were stored"


def test_unreachable_scheduler_is_one_line(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    scan = cli("txm", "ingest", GOLDEN / "rod96_2d.h5", "--sample", "rod").stdout.strip().splitlines()[-1]
    result = cli("txm", "analyze", scan, "--scheduler", "tcp://127.0.0.1:1")
    assert result.exit_code == 1
    assert "Dask scheduler" in result.stderr
    assert json.loads(cli("query", "sql", "SELECT count(*) AS n FROM analyses", "--format", "json").stdout) == [{"n": 0}]


def _tables(catalog, analysis_id: int) -> dict:
    """Every statistics table of an analysis as sorted plain rows (ids stripped)."""
    import pandas as pd

    from txmdb.db.models import STATISTICS_TABLES

    out = {}
    for name, model in STATISTICS_TABLES.items():
        frame = pd.read_sql_table(model.__tablename__, catalog.engine)
        frame = frame[frame["analysis_id"] == analysis_id].drop(columns=["id", "analysis_id"])
        out[name] = sorted(map(repr, frame.to_dict("records")))
    return out


def test_one_scan_split_into_slabs_equals_serial_run(catalog, cluster, tmp_path, monkeypatch):
    """Edge phase per slab and gradient kernel per halo slab on the workers: same tables."""
    import h5py
    import numpy as np

    from txmdb.analysis.edge import edge_parameters
    from txmdb.catalog import distributed
    from txmdb.catalog.samples import add_sample
    from txmdb.catalog.txm import analyze_scan, ingest_scan
    from txmdb.pipeline import AnalysisOptions
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    edge, _ = particle_field((30, 44, 44), kind="rod", n_particles=2, radius=9.0, seed=4)
    energies = energy_grid(52)
    path = tmp_path / "two.h5"
    write_stack(path, SyntheticStack(edge, energies, noise=0.01, seed=4), energies, voxel_size_nm=30.0)
    with catalog.session() as session:
        add_sample(session, "rod")
        session.commit()
    scan, _ = ingest_scan(catalog, path, sample="rod")
    # several edge slabs (7 slices each) and several gradient slabs per binned map
    options = AnalysisOptions(params=edge_parameters("Ni"), slab_size=7)
    monkeypatch.setattr(distributed, "_GRADIENT_SLAB_VOXELS", 44 * 44 * 4)
    serial = analyze_scan(catalog, scan.id, options)
    split = distributed.analyze_scan_distributed(catalog, scan.id, options,
                                                 scheduler=cluster.scheduler_address)
    assert split.n_particles == serial.n_particles == 2
    assert (split.n_valid_voxels, split.mean_edge_ev, split.std_edge_ev) == \
           (serial.n_valid_voxels, serial.mean_edge_ev, serial.std_edge_ev)
    a, b = _tables(catalog, serial.id), _tables(catalog, split.id)
    assert all(a.values()) and a == b
    with h5py.File(serial.results_path) as f, h5py.File(split.results_path) as g:
        for name in ("edge_ev", "jump", "valid", "labels"):
            np.testing.assert_array_equal(f[name][...], g[name][...])


def test_cli_single_scan_takes_the_slab_path(cli, cluster, monkeypatch):
    from txmdb.catalog import distributed

    calls = []
    real = distributed._split_scan
    monkeypatch.setattr(distributed, "_split_scan", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    scan = cli("txm", "ingest", GOLDEN / "rod40.h5", "--sample", "rod", "--voxel-nm", "30").stdout.strip().splitlines()[-1]
    serial = cli("txm", "analyze", scan, "--bin", "1,2")
    assert serial.exit_code == 0, serial.output
    result = cli("txm", "analyze", scan, "--bin", "1,2", "--scheduler", cluster.scheduler_address)
    assert result.exit_code == 0, result.output
    assert calls == [1]
    first, second = [a["id"] for a in json.loads(cli("query", "sql", "SELECT id FROM analyses ORDER BY id",
                                                         "--format", "json").stdout)]
    assert _stats(cli, scan, first) == _stats(cli, scan, second)
