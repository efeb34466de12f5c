"""Queued analyses get the foreground run's stack checks at enqueue (txmdb.jobs.enqueue): the CLI's
--queue, the web API and the watcher all refuse a white-line window the stack cannot serve, and
nothing is queued."""

from __future__ import annotations

import json

import pytest

from tests.conftest import BACKENDS
from tests.web_server import served_catalogue

# Far above the Ni K edge: none of the stack's energies (8280–8420 eV) lie in it.
OUT_OF_STACK = "9000:9100"


def _count(cli, table: str) -> int:
    return json.loads(cli("query", "sql", f"SELECT count(*) AS n FROM {table}", "--format", "json").stdout)[0]["n"]


def _stack(path):
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    energies = energy_grid(30)
    edge, _ = particle_field((16, 16, 16), kind="rod", seed=1)
    write_stack(path, SyntheticStack(edge, energies, noise=0.01), energies, layout="dxchange", voxel_size_nm=30)
    return path


@pytest.fixture
def scan_lab(cli, tmp_path):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    ingest = cli("txm", "ingest", _stack(tmp_path / "rod.h5"), "--sample", "rod")
    assert ingest.exit_code == 0, ingest.output
    cli.scan_id = ingest.stdout.strip().splitlines()[-1]
    return cli


def test_cli_queue_refuses_a_window_the_stack_cannot_serve(scan_lab):
    refused = scan_lab("txm", "analyze", scan_lab.scan_id, "--white-line", OUT_OF_STACK, "--queue")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: ") and "9000" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert _count(scan_lab, "jobs") == 0
    queued = scan_lab("txm", "analyze", scan_lab.scan_id, "--queue")
    assert queued.exit_code == 0 and queued.stdout.strip().isdigit()
    assert _count(scan_lab, "jobs") == 1


def test_watcher_ingests_the_file_and_records_the_refused_analysis(cli, tmp_path):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    folder = tmp_path / "incoming"
    folder.mkdir()
    _stack(folder / "rod_scan.h5")
    rules = tmp_path / "rules.toml"
    rules.write_text(f"settle_seconds = 0\n[[rule]]\nfolder = '{folder}'\nglob = '*.h5'\nkind = 'txm'\n"
                     f"set = {{sample = 'rod', voxel_nm = 30}}\nanalyze = true\n"
                     f"analysis = {{white_line = '{OUT_OF_STACK}'}}\n")
    result = cli("watch", str(rules), "--once")
    assert result.exit_code == 0, result.output
    rows = json.loads(cli("query", "sql", "SELECT status, record_kind, error FROM harvested_files",
                          "--format", "json").stdout)
    assert len(rows) == 1
    assert rows[0]["status"] == "ingested" and rows[0]["record_kind"] == "txm_scans"
    assert rows[0]["error"].startswith("ingested, but its jobs were not queued: ")
    assert "9000" in rows[0]["error"]
    assert _count(cli, "txm_scans") == 1
    assert _count(cli, "jobs") == 0


@pytest.fixture(scope="module", params=BACKENDS)
def web(request, tmp_path_factory):
    with served_catalogue(request, tmp_path_factory, request.param, populate=True) as served:
        served.add_account("editor")
        served.server = served.start()
        yield served


def test_api_refuses_a_window_the_stack_cannot_serve(web):
    with web.client(web.server, "editor") as client:
        scans = client.get("/api/v1/query/scans").json()
        scan = scans[0]["scan_id"]
        before = client.get("/api/v1/jobs").json()["items"]
        answer = client.post(f"/api/v1/scans/{scan}/analyses", json={"white_line": OUT_OF_STACK})
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        body = answer.json()
        assert set(body) == {"error", "status"} and "9000" in body["error"]
        assert client.get("/api/v1/jobs").json()["items"] == before
        fine = client.post(f"/api/v1/scans/{scan}/analyses", json={})
        assert fine.status_code == 202, fine.text


def test_enqueue_register_refuses_what_register_scan_refuses_before_reading(scan_lab):
    from txmdb import jobs
    from txmdb.catalog import open_catalog
    from txmdb.errors import TxmdbError

    catalog = open_catalog(scan_lab.url, scan_lab.store)
    try:
        with pytest.raises(TxmdbError, match="7000"):
            jobs.enqueue(catalog, "register", {"reference_energy": 7000}, scan_id=int(scan_lab.scan_id))
        with pytest.raises(TxmdbError, match="max"):
            jobs.enqueue(catalog, "register", {"max_shift": 1000}, scan_id=int(scan_lab.scan_id))
        assert _count(scan_lab, "jobs") == 0
        assert jobs.enqueue(catalog, "register", {}, scan_id=int(scan_lab.scan_id)) > 0
        assert _count(scan_lab, "jobs") == 1
    finally:
        catalog.engine.dispose()
