"""`txm analyze --scheduler`: a real Dask LocalCluster gives the same statistics as the serial run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SHARED

GOLDEN = SHARED / "golden"


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
