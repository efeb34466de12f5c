"""The results store (txmdb/store.py) on SQLite and PostgreSQL: layout, protocol order, error
translation, failures recorded, liveness of running analyses, hash-checked reads, and
statistics that come from finished analyses only.

Nothing is mocked: real ingests and analyses of the small golden stack and cycler file write
real files; a failure is a real exception raised from inside the running pipeline.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import DATA

GOLDEN = DATA / "golden" / "rod96_2d.h5"
CYCLER = DATA / "cycling" / "batterydata" / "p492-13-raw.csv"
NI_FOIL = DATA / "xas" / "ni_metal_rt.xdi"


@pytest.fixture
def lab(catalog):
    from txmdb.catalog.samples import add_cell, add_sample

    with catalog.session() as session:
        add_sample(session, "S")
        session.flush()
        add_cell(session, "C", sample="S", active_mass_mg=10.0, upper_cutoff_v=4.5)
    return catalog


@pytest.fixture
def scan_id(lab) -> int:
    from txmdb.catalog.txm import ingest_scan

    scan, _ = ingest_scan(lab, GOLDEN, sample="S")
    return scan.id


def _options(*factors: int):
    from txmdb.analysis.edge import edge_parameters
    from txmdb.pipeline import AnalysisOptions

    return AnalysisOptions(params=edge_parameters("Ni"), bin_factors=factors or (1,))


def _store_files(store) -> list[str]:
    """The store's files but its owner mark."""
    from txmdb.store import MARK

    root = Path(store.root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p != root / MARK) if root.exists() else []


def _analysis_rows(catalog) -> list[tuple]:
    from txmdb.db.models import Analysis

    with catalog.session() as session:
        return [tuple(r) for r in session.execute(
            sa.select(Analysis.id, Analysis.status, Analysis.error, Analysis.results_path).order_by(Analysis.id))]


def _dead_pid() -> int:
    """The pid of a process of this host that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------- layout and errors


def test_layout_is_ids_and_fixed_names(catalog):
    from txmdb.store import ANALYSES, CYCLING, HOST, XAS, host_tag

    root = Path(catalog.store.root).resolve()
    assert catalog.store.path(ANALYSES, 7) == root / "analyses" / "7.h5"
    assert catalog.store.path(CYCLING, 3) == root / "cycling" / "3.parquet"
    assert catalog.store.path(XAS, 12) == root / "xas" / "12.parquet"
    temp = catalog.store.temp_path(ANALYSES, 7)
    assert temp.parent == root / "analyses" and temp.suffix == ".h5"
    tag = host_tag(HOST)
    assert len(tag) == 8 and tag != host_tag(HOST + "x")
    assert temp.name.startswith(f".tmp.{tag}.{os.getpid()}.7.")
    assert catalog.store.temp_path(CYCLING).name.startswith(f".tmp.{tag}.{os.getpid()}.new.")
    assert os.fspath(catalog.store) == str(catalog.store.root)


@pytest.mark.parametrize("raised, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    (OSError(errno.EFBIG, "File too large"), "file too large (file size limit reached)"),
    (OSError("Unable to synchronously write (errno = 122, error message = 'Disk quota exceeded')"),
     "disk quota exceeded"),
    (RuntimeError("Can't decrement id ref count (file write failed: time = x, errno = 27, ...)"),
     "file too large (file size limit reached)"),
])
def test_write_errors_become_one_store_error(catalog, raised, reason):
    from txmdb.errors import StoreError

    with pytest.raises(StoreError) as caught:
        with catalog.store.writing():
            raise raised
    assert str(caught.value) == f"cannot write to the store {catalog.store.root}: {reason}"


def test_other_runtime_errors_are_not_store_errors(catalog):
    with pytest.raises(RuntimeError, match="unrelated"):
        with catalog.store.writing():
            raise RuntimeError("unrelated")


# --------------------------------------------------------------------------- the protocol, step by step


def _watch_steps(catalog, monkeypatch) -> list[tuple]:
    """Record each protocol step with what the catalogue and the store hold at that moment."""
    from txmdb.store import Store

    seen = []

    def step(self, name, kind):
        model = kind.table()
        with catalog.session() as session:
            rows = session.execute(sa.select(model.id, getattr(model, kind.path_column))).all()
            status = session.scalars(sa.select(model.status)).all() if kind.status else None
        folder = Path(self.root) / kind.folder
        names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        seen.append((name, kind.folder, len(rows), status, [n.startswith(".tmp.") for n in names]))

    monkeypatch.setattr(Store, "step", step)
    return seen


def test_ingest_commits_before_the_rename(lab, monkeypatch):
    from txmdb.catalog.cycling import ingest_cycling

    seen = _watch_steps(lab, monkeypatch)
    run, created = ingest_cycling(lab, CYCLER, cell="C")
    assert created
    assert seen == [
        ("written", "cycling", 0, None, [True]),
        ("synced", "cycling", 0, None, [True]),
        ("committed", "cycling", 1, None, [True]),     # the row first, the file still temporary
        ("renamed", "cycling", 1, None, [False]),
    ]
    assert _store_files(lab.store) == [f"cycling/{run.id}.parquet"]
    assert run.records_path == str(Path(lab.store.root).resolve() / "cycling" / f"{run.id}.parquet")
    assert hashlib.sha256(Path(run.records_path).read_bytes()).hexdigest() == run.records_sha256


def test_analysis_is_running_first_then_done(lab, scan_id, monkeypatch):
    from txmdb.catalog.txm import analyze_scan

    seen = _watch_steps(lab, monkeypatch)
    analysis = analyze_scan(lab, scan_id, _options())
    assert [s[0] for s in seen] == ["begun", "written", "synced", "committed", "renamed"]
    assert seen[0][3] == ["running"] and seen[0][4] == []       # row running, nothing written yet
    assert seen[2][3] == ["running"] and seen[2][4] == [True]
    assert seen[3][3] == ["done"] and seen[3][4] == [True]      # done and named, file still temporary
    assert seen[4][3] == ["done"] and seen[4][4] == [False]
    assert analysis.status == "done" and analysis.error is None
    assert Path(analysis.results_path).name == f"{analysis.id}.h5"
    assert hashlib.sha256(Path(analysis.results_path).read_bytes()).hexdigest() == analysis.results_sha256


# --------------------------------------------------------------------------- failures are recorded


@pytest.mark.parametrize("raised, expected", [
    (KeyboardInterrupt(), "interrupted"),
    (RuntimeError("the beam dumped"), "RuntimeError: the beam dumped"),
])
def test_a_failed_analysis_is_recorded_with_its_error(lab, scan_id, raised, expected):
    """An exception from inside the running pipeline: the row says failed and why, nothing in the store."""
    from txmdb import query
    from txmdb.catalog.txm import analyze_scan

    def progress(done, total):
        if done == 2:
            raise raised

    with pytest.raises(type(raised)):
        analyze_scan(lab, scan_id, _options(1, 2), progress=progress)
    [(analysis_id, status, error, path)] = _analysis_rows(lab)
    assert (status, error, path) == ("failed", expected, None)
    assert _store_files(lab.store) == []
    assert query.gradient_summary(lab, scan=scan_id).empty
    # the catalogue goes on: the same analysis again works
    again = analyze_scan(lab, scan_id, _options(1, 2))
    assert again.status == "done" and again.id != analysis_id
    assert _store_files(lab.store) == [f"analyses/{again.id}.h5"]


def test_a_store_error_is_recorded(lab, scan_id, tmp_path):
    """The store cannot be written (a file where its folder should be): one StoreError, a failed row."""
    from txmdb.catalog import open_catalog
    from txmdb.catalog.txm import analyze_scan
    from txmdb.errors import StoreError

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "analyses").write_text("not a folder")
    other = open_catalog(lab.engine.url.render_as_string(hide_password=False), blocked)
    try:
        with pytest.raises(StoreError) as caught:
            analyze_scan(other, scan_id, _options())
    finally:
        other.engine.dispose()
    assert str(caught.value).startswith(f"cannot write to the store {blocked}: ")
    [(_id, status, error, _path)] = _analysis_rows(lab)
    assert status == "failed" and error == str(caught.value)


def test_refused_options_record_nothing(lab, scan_id):
    """A window the stack cannot serve is a usage error before the analysis starts, not a failure."""
    from txmdb.analysis.edge import edge_parameters
    from txmdb.catalog.txm import analyze_scan
    from txmdb.errors import InputError
    from txmdb.pipeline import AnalysisOptions

    options = AnalysisOptions(params=edge_parameters("Ni", pre=(8319.0, 8320.0)), bin_factors=(1,))
    with pytest.raises(InputError):
        analyze_scan(lab, scan_id, options)
    assert _analysis_rows(lab) == [] and _store_files(lab.store) == []


# --------------------------------------------------------------------------- running, stale, killed


def _running(catalog, scan_id: int, *, host: str, pid: int, hours_ago: float) -> int:
    from txmdb.db.models import Analysis

    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours_ago)
    with catalog.session() as session:
        row = Analysis(scan_id=scan_id, status="running", txmdb_version="t", input_sha256="0" * 64, host=host,
                       pid=pid, started_at=started)
        session.add(row)
        session.flush()
        return row.id


def test_running_analyses_are_stale_only_when_their_process_is_gone(lab, scan_id):
    from txmdb.catalog.integrity import check_catalog
    from txmdb.store import HOST

    alive_here = _running(lab, scan_id, host=HOST, pid=os.getpid(), hours_ago=0.0)
    dead_here = _running(lab, scan_id, host=HOST, pid=_dead_pid(), hours_ago=0.01)
    # pid 1 runs here, but it started after this analysis began: it is not that analysis' process
    reused_here = _running(lab, scan_id, host=HOST, pid=1, hours_ago=24 * 365 * 20)
    young_elsewhere = _running(lab, scan_id, host="beamline-7", pid=4242, hours_ago=2)
    old_elsewhere = _running(lab, scan_id, host="beamline-7", pid=4242, hours_ago=30)

    report = check_catalog(lab, stale_hours=24, sources=False)
    stale = sorted(int(f.subject.split()[-1]) for f in report.problems)
    assert stale == [dead_here, reused_here, old_elsewhere]
    assert all("which is gone" in f.problem and f.fix == "marked failed (interrupted)" for f in report.problems)
    assert report.in_progress == 2
    assert check_catalog(lab, stale_hours=1, sources=False).in_progress == 1   # another host: its age decides

    repaired = check_catalog(lab, repair=True, stale_hours=24, sources=False)
    assert not repaired.problems and len(repaired.findings) == 3
    rows = {r[0]: r[1:3] for r in _analysis_rows(lab)}
    assert rows[alive_here] == ("running", None) and rows[young_elsewhere] == ("running", None)
    for analysis_id in (dead_here, reused_here, old_elsewhere):
        assert rows[analysis_id] == ("failed", "interrupted: its process ended without a result")


# --------------------------------------------------------------------------- hash-checked reads


def test_reads_are_hash_checked(lab):
    from txmdb.catalog.cycling import ingest_cycling
    from txmdb.errors import StoreFileError

    run, _ = ingest_cycling(lab, CYCLER, cell="C")
    frame = lab.store.read_parquet(run.records_path, run.records_sha256, columns=["voltage_v"])
    assert list(frame.columns) == ["voltage_v"] and len(frame) == run.n_records
    with pytest.raises(StoreFileError) as caught:
        lab.store.read_parquet(run.records_path, "0" * 64)
    assert caught.value.problem == "changed since it was recorded (SHA-256 differs)"
    Path(run.records_path).unlink()
    with pytest.raises(StoreFileError) as caught:
        lab.store.read_parquet(run.records_path, run.records_sha256)
    assert str(caught.value) == f"store file {run.records_path} is missing"


def test_report_notes_a_tampered_spectrum_and_results_file(lab, scan_id, tmp_path):
    from txmdb.catalog.spectroscopy import ingest_xas
    from txmdb.catalog.txm import analyze_scan
    from txmdb.report import build_report

    measurement, _ = ingest_xas(lab, NI_FOIL, sample="S", edge="Ni-K")
    analysis = analyze_scan(lab, scan_id, _options())
    for path in (measurement.spectrum_path, analysis.results_path):
        with open(path, "r+b") as fh:        # same size, one byte different
            fh.seek(os.path.getsize(path) // 2)
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ 0xFF]))
    text = build_report(lab, ["S"], output=tmp_path / "r.html").read_text()
    assert (f"The spectrum of XAS measurement {measurement.id} changed since it was recorded "
            f"(SHA-256 differs) ({measurement.spectrum_path}).") in text
    assert (f"No valence map for scan {scan_id}: its results file changed since it was recorded "
            f"(SHA-256 differs) ({analysis.results_path}).") in text


# --------------------------------------------------------------------------- status in queries


def test_statistics_come_from_done_analyses_only(lab, scan_id):
    """A done analysis whose file was lost is marked failed by --repair; from then on every
    statistics query leaves its rows out, and queries that ask for status show it."""
    from txmdb import query
    from txmdb.catalog.integrity import check_catalog
    from txmdb.catalog.txm import analyze_scan

    first = analyze_scan(lab, scan_id, _options(1))
    second = analyze_scan(lab, scan_id, _options(1, 2))
    statistics = [query.theta, query.vector_size, query.vector_size_histogram, query.u_theta,
                  query.gradient_summary, query.edge_histogram, query.depth_profile, query.particles]
    for function in statistics:
        assert set(function(lab)["analysis_id"]) == {second.id}, function.__name__
    assert query.scans(lab)["analysis_id"].tolist() == [second.id]

    Path(second.results_path).unlink()
    report = check_catalog(lab, repair=True, sources=False)
    assert [f.line() for f in report.findings] == [
        f"repaired: analysis {second.id}: its file {second.results_path} is missing (restore it from a backup: the "
        "check then marks it done again): marked failed (results file missing)"]
    for function in statistics:
        frame = function(lab)
        assert set(frame["analysis_id"]) == {first.id}, function.__name__
        assert function(lab, analysis=[second.id]).empty, function.__name__
    assert 2 not in set(query.theta(lab, analysis=[first.id, second.id])["bin_factor"])
    summary = query.summary(lab)
    assert summary["mean_edge_ev"].tolist() == [pytest.approx(first.mean_edge_ev)]
    assert "mean_u_f2" not in summary.columns        # only the failed analysis had f = 2

    scans = query.scans(lab)
    assert scans["analysis_id"].tolist() == [first.id] and scans["latest_status"].tolist() == ["failed"]
    failed = query.analyses(lab, status=["failed"])
    assert failed["analysis_id"].tolist() == [second.id]
    assert failed["error"].tolist() == [f"results file missing: {second.results_path}"]
    assert query.analyses(lab, status=["done"])["analysis_id"].tolist() == [first.id]
    assert query.scans(lab, status=["done"]).empty
    assert query.scans(lab, status=["failed"])["scan_id"].tolist() == [scan_id]
