"""Crash consistency on SQLite and PostgreSQL: SIGKILL at every step of the store's protocol.

Each case runs the real CLI in a subprocess whose ``Store.step`` hook kills the process
(SIGKILL, no cleanup of any kind) right after the named step of :data:`txmdb.store.STEPS`.
Afterwards ``txmdb db check`` is clean, or names each problem and ``--repair`` makes it
clean; then the same command runs again and the catalogue and the store agree.

Then ``db check`` against damage a person or a disk does: a changed or vanished source, a
tampered result, an orphan file, a stray file, a store given at the wrong path — each
reported, and ``--repair`` never touching good data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA

GOLDEN = DATA / "golden" / "rod96_2d.h5"
CYCLER = DATA / "cycling" / "batterydata" / "p492-13-raw.csv"
NI_FOIL = DATA / "xas" / "ni_metal_rt.xdi"

# Runs the CLI with the protocol step sys.argv[1] turned into a SIGKILL of the process.
_KILL_AT = """
import os, signal, sys
import txmdb.store

KILL_AT, SIGNAL, sys.argv = sys.argv[1], int(sys.argv[2]), ["txmdb", *sys.argv[3:]]

def step(self, name, kind):
    if name == KILL_AT:
        os.kill(os.getpid(), SIGNAL)

txmdb.store.Store.step = step
from txmdb.cli.main import main
main()
"""


def _sql(cli, statement: str) -> list[dict]:
    out = cli("query", "sql", statement, "--format", "json")
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def _store_files(cli) -> list[str]:
    """The store's files but its owner mark."""
    from txmdb.store import MARK

    root = Path(cli.store)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p != root / MARK) if root.exists() else []


def _lines(result) -> list[str]:
    return result.stdout.strip().splitlines()


def _kill_at(cli, step: str, *args, signum: int = signal.SIGKILL) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}
    return subprocess.run([sys.executable, "-c", _KILL_AT, step, str(int(signum)), "--db", cli.url,
                           "--store", str(cli.store), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def lab(cell_lab):
    return cell_lab


def _command(lab, kind: str) -> tuple[list, str]:
    """The store-writing command of ``kind`` and the table it fills."""
    if kind == "txm":
        scan = lab("txm", "ingest", GOLDEN, "--sample", "S")
        assert scan.exit_code == 0, scan.output
        return ["txm", "analyze", _lines(scan)[-1], "--bin", "1"], "analyses"
    if kind == "cycling":
        return ["cycling", "ingest", CYCLER, "--cell", "C"], "cycling_runs"
    return ["xas", "ingest", NI_FOIL, "--sample", "S", "--edge", "Ni-K"], "xas_measurements"


# What `db check` says right after a kill at each step (each problem is one --repair settles).
_AFTER_KILL = {
    "begun": ["running since", "which is gone (--repair: marked failed (interrupted))"],
    "written": ["temporary file left by a crash", "(--repair: removed)"],
    "synced": ["temporary file left by a crash", "(--repair: removed)"],
    "committed": ["its file is still under its temporary name", "(--repair: renamed to "],
    "renamed": [],
}
_CASES = [(kind, step) for kind, steps in (("cycling", "written synced committed renamed"),
                                           ("xas", "written synced committed renamed"),
                                           ("txm", "begun written synced committed renamed"))
          for step in steps.split()]


def test_cases_cover_every_step_of_the_protocol():
    from txmdb.store import ANALYSES, CYCLING, XAS

    for kind, store_kind in (("cycling", CYCLING), ("xas", XAS), ("txm", ANALYSES)):
        assert [step for k, step in _CASES if k == kind] == list(store_kind.steps)


@pytest.mark.parametrize("kind, step", _CASES, ids=[f"{k}-{s}" for k, s in _CASES])
def test_kill_at_every_step(lab, kind, step):
    args, table = _command(lab, kind)
    killed = _kill_at(lab, step, *args)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])

    check = lab("db", "check", "--no-sources")
    lines = _lines(check)
    assert lines[0].startswith("ok: schema at ")
    problems = [line for line in lines[1:-1]]
    if step == "renamed":
        assert check.exit_code == 0 and problems == [], check.output
        assert lines[-1].startswith("ok: checked ")
    else:
        assert check.exit_code == 1, check.output
        assert problems and all(line.startswith("problem: ") and "(--repair: " in line for line in problems)
        if kind == "txm" and step in ("written", "synced"):
            expected = _AFTER_KILL["begun"][:1] + _AFTER_KILL[step][:1]   # a stale row and its temporary
        else:
            expected = _AFTER_KILL[step][:1]
        assert [next(needle for needle in expected if needle in line) for line in problems] == expected, problems
        assert lines[-1].startswith(f"{len(problems)} problem") and "settled by --repair" in lines[-1]

        repair = lab("db", "check", "--repair", "--no-sources")
        assert repair.exit_code == 0, repair.output
        assert [line.split(": ", 1)[0] for line in _lines(repair)[1:-1]] == ["repaired"] * len(problems)
        assert _lines(repair)[-1].startswith(f"ok: {len(problems)} repaired; checked ")
    clean = lab("db", "check", "--no-sources")
    assert clean.exit_code == 0 and len(_lines(clean)) == 2, clean.output

    # What the kill left is settled: an ingest's row exists only if it committed; an
    # analysis is done, or failed with the reason.
    rows = _sql(lab, f"SELECT * FROM {table} ORDER BY id")
    if kind == "txm":
        status = "failed" if step in ("begun", "written", "synced") else "done"
        assert [(r["status"], r["error"]) for r in rows] == [
            (status, "interrupted: its process ended without a result" if status == "failed" else None)]
    else:
        assert len(rows) == (1 if step in ("committed", "renamed") else 0)

    again = lab(*args)
    assert again.exit_code == 0, again.output
    if kind != "txm":
        assert _lines(again)[0].startswith("already in the catalogue" if rows else "ingested")
    path_column = {"txm": "results_path", "cycling": "records_path", "xas": "spectrum_path"}[kind]
    named = _sql(lab, f"SELECT id, {path_column} AS path FROM {table} WHERE {path_column} IS NOT NULL ORDER BY id")
    folder = {"txm": "analyses", "cycling": "cycling", "xas": "xas"}[kind]
    assert _store_files(lab) == sorted(f"{folder}/{Path(r['path']).name}" for r in named)
    assert all(Path(r["path"]).name == f"{r['id']}{Path(r['path']).suffix}" for r in named)
    final = lab("db", "check")
    assert final.exit_code == 0 and len(_lines(final)) == 2, final.output


def test_txm_show_and_queries_show_a_killed_analysis(lab):
    """Killed, it is 'running' until db check --repair; then 'failed' with the reason, in txm show."""
    args, _ = _command(lab, "txm")
    assert _kill_at(lab, "written", *args).returncode == -signal.SIGKILL
    show = lab("txm", "show", args[2])
    assert show.exit_code == 0, show.output
    row = next(line for line in show.stdout.splitlines() if line.split()[:2] == ["1", "running"])
    assert row
    assert lab("db", "check", "--repair").exit_code == 0
    show = lab("txm", "show", args[2])
    row = next(line for line in show.stdout.splitlines() if line.split()[:2] == ["1", "failed"])
    assert row.rstrip().endswith("interrupted: its process ended without a result")
    failed = json.loads(lab("query", "analyses", "--status", "failed", "--format", "json").stdout)
    assert [(a["analysis_id"], a["status"]) for a in failed] == [(1, "failed")]
    # no statistics from it: the statistics tables have no rows at all
    assert json.loads(lab("query", "theta", "--format", "json").stdout) == []


def test_a_terminated_analysis_is_recorded_as_failed(lab):
    """SIGTERM (a scheduler's kill) unwinds: the analysis is 'failed' at once, no temporary is left."""
    args, _ = _command(lab, "txm")
    stopped = _kill_at(lab, "written", *args, signum=signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "Traceback" not in stopped.stderr
    failed = json.loads(lab("query", "analyses", "--status", "failed", "--format", "json").stdout)
    assert [(a["analysis_id"], a["error"]) for a in failed] == [(1, f"interrupted (exit {128 + signal.SIGTERM})")]
    assert _store_files(lab) == []
    check = lab("db", "check")
    assert check.exit_code == 0, check.output


# --------------------------------------------------------------------------- damage db check finds


def _flip_a_byte(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_check_reports_damage_and_repair_touches_no_good_data(lab, tmp_path):
    from txmdb.store import HOST, host_tag

    sources = tmp_path / "sources"
    sources.mkdir()
    cycler, spectrum, stack = (Path(shutil.copy(p, sources / p.name)) for p in (CYCLER, NI_FOIL, GOLDEN))
    assert lab("cycling", "ingest", cycler, "--cell", "C").exit_code == 0
    assert lab("xas", "ingest", spectrum, "--sample", "S", "--edge", "Ni-K").exit_code == 0
    assert lab("txm", "ingest", stack, "--sample", "S").exit_code == 0
    assert lab("txm", "analyze", "1", "--bin", "1").exit_code == 0
    clean = lab("db", "check")
    assert clean.exit_code == 0 and _lines(clean)[1] == "ok: checked 3 store files, 3 sources", clean.output

    store = Path(lab.store)
    results = store / "analyses" / "1.h5"
    with open(cycler, "a") as fh:
        fh.write("\n")                                    # the source changed after ingest
    spectrum.rename(spectrum.with_suffix(".moved"))       # the source is gone
    _flip_a_byte(results)                                 # a result tampered with
    shutil.copy(store / "cycling" / "1.parquet", store / "cycling" / "99.parquet")   # an orphan
    proc = subprocess.Popen(["true"])
    proc.wait()
    leftover = store / "xas" / f".tmp.{host_tag(HOST)}.{proc.pid}.new.0123456789ab.parquet"
    leftover.write_bytes(b"half a spectrum")              # a temporary whose writer died
    (store / "xas" / "notes.txt").write_text("mine")      # not txmdb's

    check = lab("db", "check")
    assert check.exit_code == 1
    assert _lines(check)[1:] == [
        f"problem: analysis 1: {results.resolve()} changed since it was recorded (SHA-256 differs); "
        "restore it or re-run what wrote it",
        "problem: cycling/99.parquet: orphan file: no row names it (--repair: moved to lost+found/cycling/)",
        f"problem: xas/{leftover.name}: temporary file left by a crash (writer pid {proc.pid} is gone) "
        "(--repair: removed)",
        "problem: xas/notes.txt: not a file txmdb writes; move it out of the store",
        f"problem: cycling run 1: source {cycler.resolve()} changed since it was ingested (SHA-256 differs)",
        f"problem: XAS measurement 1: source {spectrum.resolve()} is missing",
        "6 problems (2 settled by --repair, 4 need you); checked 3 store files, 3 sources",
    ]

    before_sources = _snapshot(sources)
    before_rows = _sql(lab, "SELECT (SELECT count(*) FROM cycling_runs) AS r, (SELECT count(*) FROM cycles) AS c, "
                            "(SELECT count(*) FROM xas_measurements) AS x, (SELECT count(*) FROM theta_histograms) AS t,"
                            " (SELECT status FROM analyses WHERE id = 1) AS s")
    keep = {k: v for k, v in _snapshot(store).items() if k not in ("cycling/99.parquet", f"xas/{leftover.name}")}
    keep["lost+found/cycling/99.parquet"] = _snapshot(store)["cycling/99.parquet"]   # set aside, as it was
    repair = lab("db", "check", "--repair")
    assert repair.exit_code == 1
    assert _lines(repair)[1:3] == [
        "repaired: cycling/99.parquet: orphan file: no row names it: moved to lost+found/cycling/",
        f"repaired: xas/{leftover.name}: temporary file left by a crash (writer pid {proc.pid} is gone): removed",
    ]
    assert _lines(repair)[-1] == "4 problems (4 need you); 2 repaired; checked 3 store files, 3 sources"
    assert _snapshot(store) == keep                       # the tampered result and the stray file included
    assert _snapshot(sources) == before_sources
    assert _sql(lab, "SELECT (SELECT count(*) FROM cycling_runs) AS r, (SELECT count(*) FROM cycles) AS c, "
                     "(SELECT count(*) FROM xas_measurements) AS x, (SELECT count(*) FROM theta_histograms) AS t,"
                     " (SELECT status FROM analyses WHERE id = 1) AS s") == before_rows

    # a person settles the rest; the check is clean again
    _flip_a_byte(results)
    with open(cycler, "r+") as fh:
        fh.truncate(cycler.stat().st_size - 1)
    spectrum.with_suffix(".moved").rename(spectrum)
    (store / "xas" / "notes.txt").unlink()
    final = lab("db", "check")
    assert final.exit_code == 0, final.output


def test_a_store_at_the_wrong_path_deletes_and_fails_nothing(lab, tmp_path):
    """The store's share not mounted: every row's file looks missing; the check says so and
    --repair deletes and fails nothing. Mounted elsewhere: --repair re-points each row at the
    store's file of its id with the SHA-256 it records (session 27), and back again once the
    share is where it was; no file is touched either way."""
    from typer.testing import CliRunner

    from txmdb.cli.main import app

    def check(store, *extra):
        return CliRunner().invoke(app, ["--db", lab.url, "--store", str(store), "db", "check", *extra,
                                        "--no-sources"])

    args, _ = _command(lab, "txm")
    assert lab(*args).exit_code == 0
    assert lab(*_command(lab, "cycling")[0]).exit_code == 0
    moved = tmp_path / "mounted-elsewhere"
    Path(lab.store).rename(moved)
    files = _snapshot(moved)
    missing = check(lab.store, "--repair")
    assert missing.exit_code == 1, missing.output
    problems = _lines(missing)[1:-1]
    assert len(problems) == 1, problems           # one line for the missing folder, not one per row
    assert problems[0].startswith(f"problem: store {lab.store}: does not exist: check --store (2 records name "
                                  "store files; first ") and problems[0].endswith("check --store)")
    for store in (moved, lab.store):
        if store == lab.store:
            moved.rename(lab.store)
        repaired = check(store, "--repair")
        assert repaired.exit_code == 0, repaired.output
        assert [line.split(":")[0] for line in _lines(repaired)[1:-1]] == ["repaired", "repaired"]
        assert _lines(repaired)[-1].startswith("ok: 2 repaired; checked 2 store files")
        if store == moved:
            assert _snapshot(moved) == files
    assert _sql(lab, "SELECT status FROM analyses") == [{"status": "done"}]
    assert len(_sql(lab, "SELECT id FROM cycling_runs")) == 1
    assert lab("db", "check").exit_code == 0


def test_an_ingest_row_whose_file_is_missing_is_removed_only_when_asked(lab, tmp_path):
    """The records file is gone (no temporary either): --repair reports it (a record may be named
    elsewhere: restore the file); with --forget-missing it removes the row while its source can
    restore it, and only then; the source is ingested again."""
    source = Path(shutil.copy(CYCLER, tmp_path / "cell.csv"))
    assert lab("cycling", "ingest", source, "--cell", "C").exit_code == 0
    records = Path(lab.store) / "cycling" / "1.parquet"
    records.unlink()
    source.rename(tmp_path / "away.csv")
    refused = lab("db", "check", "--repair", "--forget-missing", "--no-sources")
    assert refused.exit_code == 1
    assert _lines(refused)[1] == (f"problem: cycling run 1: its file {records.resolve()} is missing and its source "
                                  f"{source.resolve()} is gone or changed")
    assert len(_sql(lab, "SELECT id FROM cycling_runs")) == 1

    (tmp_path / "away.csv").rename(source)
    kept = lab("db", "check", "--repair", "--no-sources")
    assert kept.exit_code == 1
    assert _lines(kept)[1] == (f"problem: cycling run 1: its file {records.resolve()} is missing: restore it from a "
                               f"backup, or remove the record with --repair --forget-missing and ingest "
                               f"{source.resolve()} again")
    assert len(_sql(lab, "SELECT id FROM cycles")) > 0
    alone = lab("db", "check", "--forget-missing")
    assert (alone.exit_code, alone.stdout) == (2, "")
    assert "--forget-missing removes records only with --repair" in alone.stderr

    repaired = lab("db", "check", "--repair", "--forget-missing", "--no-sources")
    assert repaired.exit_code == 0, repaired.output
    assert _lines(repaired)[1] == (f"repaired: cycling run 1: its file {records.resolve()} is missing: "
                                   f"record removed; ingest {source.resolve()} again")
    assert _sql(lab, "SELECT (SELECT count(*) FROM cycling_runs) AS r, (SELECT count(*) FROM cycles) AS c") == [
        {"r": 0, "c": 0}]
    assert lab("cycling", "ingest", source, "--cell", "C").exit_code == 0
    assert lab("db", "check").exit_code == 0
