"""The attacker's pass on the results store (issue 9 §4; /work/notes/attack9.md F2, F3, F8, F9),
each case on SQLite and PostgreSQL:

- F2: two catalogues never share a store: the store carries its catalogue's id, and another
  catalogue's writes, checks and repairs are refused, by default stores included; a store
  made before stores were marked is marked only when every file in it is this catalogue's.
- F3: a row whose path is wrong is pointed back at the file of its id (same SHA-256); a file
  whose id has a row is never removed.
- F8: rows naming FIFOs, devices, folders, link loops or paths through a file give one line
  each and are never read; impossible pids in temporary names are no process.
- F9: only whole temporary names are temporaries; a store folder that links out of the
  store is reported and never written, renamed or deleted into.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import DATA

GOLDEN = DATA / "golden" / "rod96_2d.h5"
CYCLER = DATA / "cycling" / "batterydata" / "p492-13-raw.csv"
NI_FOIL = DATA / "xas" / "ni_metal_rt.xdi"
NAME = "0123456789ab"        # the random part of a temporary's name


@pytest.fixture
def other_url(db_url, tmp_path, request):
    """A second, empty catalogue on the same backend as ``db_url``."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    from tests.conftest import _fresh_pg_url, as_catalogue_owner

    url, drop = _fresh_pg_url(request.getfixturevalue("pg_server"))
    try:
        yield as_catalogue_owner(url)
    finally:
        drop()


def _runner(url: str, store: Path | None):
    """The CLI against catalogue ``url`` and ``--store store`` (None: the default store)."""
    from typer.testing import CliRunner

    from txmdb.cli.main import app

    def run(*args):
        head = ["--db", url] + (["--store", str(store)] if store is not None else [])
        return CliRunner().invoke(app, [*head, *map(str, args)])

    run.url, run.store = url, store
    return run


def _lab(run):
    for args in (["init"], ["sample", "add", "S"], ["cell", "add", "C", "--sample", "S", "--active-mass-mg", "10"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
    return run


def _rows(url: str, statement: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement))
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _catalogue_id(url: str) -> str:
    [(value,)] = _rows(url, "SELECT uuid FROM catalogue_identity")
    return value


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lines(result) -> list[str]:
    return result.stdout.strip().splitlines()


def _errors(result) -> list[str]:
    return result.stderr.strip().splitlines()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _analysed(run) -> str:
    scan = run("txm", "ingest", GOLDEN, "--sample", "S")
    assert scan.exit_code == 0, scan.output
    scan_id = _lines(scan)[-1]
    assert run("txm", "analyze", scan_id, "--bin", "1").exit_code == 0
    return scan_id


# --------------------------------------------------------------------------- F2: one store, one catalogue


def test_another_catalogues_store_is_neither_written_nor_checked(cell_lab, other_url, tmp_path):
    from txmdb.store import MARK

    mine, store = cell_lab, Path(cell_lab.store)
    assert mine("cycling", "ingest", CYCLER, "--cell", "C").exit_code == 0
    mine_id = _catalogue_id(mine.url)
    assert (store / MARK).read_text() == f"txmdb results store of catalogue {mine_id}\n"
    before = _snapshot(store)

    other = _lab(_runner(other_url, store))
    scan = other("txm", "ingest", GOLDEN, "--sample", "S")
    assert scan.exit_code == 0, scan.output          # a scan keeps nothing in the store
    assert _catalogue_id(other_url) != mine_id
    refusal = (f"error: store {store} belongs to another catalogue (id {mine_id}); "
               "give --store a folder of this catalogue's own")
    for args in (["cycling", "ingest", CYCLER, "--cell", "C"], ["xas", "ingest", NI_FOIL, "--sample", "S", "--edge", "Ni-K"],
                 ["txm", "analyze", _lines(scan)[-1], "--bin", "1"], ["db", "check"], ["db", "check", "--repair"]):
        result = other(*args)
        assert result.exit_code == 1 and _errors(result) == [refusal], (args, result.output)
    assert _snapshot(store) == before
    assert _rows(other_url, "SELECT (SELECT count(*) FROM cycling_runs), (SELECT count(*) FROM xas_measurements), "
                            "(SELECT count(*) FROM analyses)") == [(0, 0, 0)]

    own = _runner(other_url, tmp_path / "other-store")
    assert own("cycling", "ingest", CYCLER, "--cell", "C").exit_code == 0
    assert own("db", "check").exit_code == 0
    assert mine("db", "check").exit_code == 0
    assert _snapshot(store) == before


def test_default_stores_of_two_catalogues_are_not_shared(db_url, other_url, tmp_path, monkeypatch):
    """Two SQLite files in one folder share txmdb-store/ beside them, every PostgreSQL
    catalogue $CWD/txmdb-store: the first to write owns it, the second is told to give --store."""
    monkeypatch.delenv("TXMDB_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    if db_url.startswith("sqlite"):
        first_url, second_url = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    else:
        first_url, second_url = db_url, other_url
    first, second = _lab(_runner(first_url, None)), _lab(_runner(second_url, None))
    default = tmp_path.resolve() / "txmdb-store"
    assert first("cycling", "ingest", CYCLER, "--cell", "C").exit_code == 0
    records = default / "cycling" / "1.parquet"
    kept = records.read_bytes()
    refused = second("cycling", "ingest", CYCLER, "--cell", "C")
    assert refused.exit_code == 1
    assert _errors(refused) == [f"error: store {default} belongs to another catalogue (id {_catalogue_id(first_url)}); "
                                "give --store a folder of this catalogue's own"]
    assert second("db", "check", "--repair").exit_code == 1
    assert records.read_bytes() == kept
    assert first("db", "check").exit_code == 0


def test_an_unmarked_store_is_marked_only_when_its_files_are_this_catalogues(cell_lab):
    """A store from before stores were marked: writes wait for db check --repair, which marks it
    only when the rows account for every file in it (by name and SHA-256)."""
    from txmdb.store import MARK

    lab, store = cell_lab, Path(cell_lab.store)
    assert lab("cycling", "ingest", CYCLER, "--cell", "C").exit_code == 0
    (store / MARK).unlink()
    refused = lab("xas", "ingest", NI_FOIL, "--sample", "S", "--edge", "Ni-K")
    assert refused.exit_code == 1
    assert _errors(refused) == [
        f"error: store {store} holds files but no owner mark (it was made before txmdb marked its stores): run "
        "'txmdb db check --repair' to mark it as this catalogue's, or give --store a folder of this catalogue's own"]
    assert _rows(lab.url, "SELECT count(*) FROM xas_measurements") == [(0,)]

    stray = store / "cycling" / "7.parquet"          # perhaps another catalogue's
    shutil.copy(store / "cycling" / "1.parquet", stray)
    before = _snapshot(store)
    for args in (["db", "check"], ["db", "check", "--repair"]):
        result = lab(*args)
        assert result.exit_code == 1
        assert _errors(result) == [
            f"error: store {store} has no owner mark and this catalogue's rows do not account for 1 of its entries "
            "(first cycling/7.parquet: orphan file: no row names it); if another catalogue uses it, give --store a "
            "folder of this catalogue's own, else settle them by hand"]
    assert _snapshot(store) == before

    stray.unlink()
    check = lab("db", "check")
    assert check.exit_code == 1
    assert _lines(check)[1:] == [
        f"problem: store {store}: no owner mark yet, and every file in it is this catalogue's "
        "(--repair: marked as this catalogue's)",
        "1 problem (1 settled by --repair); checked 1 store file, 1 source"]
    repair = lab("db", "check", "--repair")
    assert repair.exit_code == 0, repair.output
    assert _lines(repair)[1:] == [
        f"repaired: store {store}: no owner mark yet, and every file in it is this catalogue's: "
        "marked as this catalogue's",
        "ok: 1 repaired; checked 1 store file, 1 source"]
    assert (store / MARK).read_text() == f"txmdb results store of catalogue {_catalogue_id(lab.url)}\n"
    assert lab("xas", "ingest", NI_FOIL, "--sample", "S", "--edge", "Ni-K").exit_code == 0
    assert lab("db", "check").exit_code == 0


def test_every_catalogue_gets_its_id_at_upgrade(catalog):
    """Migration 0005 gives a new catalogue and an upgraded one alike its id."""
    from txmdb.db.migrate import downgrade, upgrade

    url = catalog.engine.url.render_as_string(hide_password=False)
    first = _catalogue_id(url)
    assert str(uuid.UUID(first)) == first
    downgrade(catalog.engine, "0004")
    assert "catalogue_identity" not in sa.inspect(catalog.engine).get_table_names()
    with catalog.engine.begin() as conn:  # the 0004 schema's own columns (today's models have more)
        conn.execute(sa.text("INSERT INTO samples (name, meta, created_at) VALUES ('from-before', '{}', :now)"),
                     {"now": dt.datetime.now(dt.timezone.utc)})
    upgrade(catalog.engine)
    [(upgraded, n)] = _rows(url, "SELECT min(uuid), count(*) FROM catalogue_identity")
    assert n == 1 and str(uuid.UUID(upgraded)) == upgraded and upgraded != first
    assert _rows(url, "SELECT name FROM samples") == [("from-before",)]


# --------------------------------------------------------------------------- F3: rows with a wrong path


def test_a_row_naming_a_wrong_path_is_pointed_at_its_file(cell_lab):
    lab = cell_lab
    assert lab("cycling", "ingest", CYCLER, "--cell", "C").exit_code == 0
    _analysed(lab)
    store = Path(lab.store).resolve()
    results, records = store / "analyses" / "1.h5", store / "cycling" / "1.parquet"
    _rows(lab.url, "UPDATE analyses SET results_path = results_path || '.moved'")
    _rows(lab.url, "UPDATE cycling_runs SET records_path = records_path || 'X'")
    before = _snapshot(store)

    check = lab("db", "check", "--no-sources")
    assert check.exit_code == 1
    expected = [
        (f"analysis 1: it names {results}.moved, but its file is 1.h5, with the SHA-256 it records",
         f"row re-pointed to {results}"),
        (f"cycling run 1: it names {records}X, but its file is 1.parquet, with the SHA-256 it records",
         f"row re-pointed to {records}")]
    assert _lines(check)[1:] == [f"problem: {what} (--repair: {fix})" for what, fix in expected] + [
        "2 problems (2 settled by --repair); checked 0 store files, 0 sources"]
    for _ in range(2):                               # the attacker repaired twice: the second deleted
        repair = lab("db", "check", "--repair", "--no-sources")
        assert repair.exit_code == 0, repair.output
        assert _snapshot(store) == before
    assert _lines(repair)[1:] == ["ok: checked 2 store files, 0 sources"]
    assert _rows(lab.url, "SELECT status, results_path FROM analyses") == [("done", str(results))]
    assert _rows(lab.url, "SELECT records_path FROM cycling_runs") == [(str(records),)]
    assert lab("db", "check").exit_code == 0


def test_a_file_whose_id_has_a_row_is_never_removed(cell_lab):
    lab = cell_lab
    _analysed(lab)
    results = Path(lab.store) / "analyses" / "1.h5"
    kept = results.read_bytes()
    _rows(lab.url, "UPDATE analyses SET status = 'failed', error = 'marked failed by hand'")
    for args in (["db", "check", "--no-sources"], ["db", "check", "--repair", "--no-sources"]):
        result = lab(*args)
        assert result.exit_code == 1
        assert _lines(result)[1:] == [
            "problem: analyses/1.h5: analysis 1 is failed, but this file has its id: kept; move it out of the "
            "store if it is not wanted",
            "1 problem (1 needs you); checked 0 store files, 0 sources"]
    assert results.read_bytes() == kept


# --------------------------------------------------------------------------- F8: odd paths, odd pids


def _check_in_a_process(lab, *args) -> subprocess.CompletedProcess:
    """db check in a child process: a check that hangs fails the test instead of stopping it."""
    env = {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}
    return subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--db", lab.url, "--store", str(lab.store),
                           "db", "check", *args], env=env, capture_output=True, text=True, timeout=120)


def test_rows_naming_what_is_no_store_file_get_one_line_and_are_not_read(cell_lab, tmp_path):
    from txmdb.catalog import open_catalog
    from txmdb.errors import StoreFileError

    lab = cell_lab
    assert lab("cycling", "ingest", CYCLER, "--cell", "C").exit_code == 0
    _analysed(lab)
    store = Path(lab.store).resolve()
    folder = store / "analyses"
    fifo, pipe, loop = tmp_path / "fifo", folder / "pipe.h5", folder / "loop.h5"
    os.mkfifo(fifo)
    # Named outside the store folder, and the store's own file of that id has the row's SHA-256:
    # the row is re-pointed at that file (a store restored elsewhere looks so; session 27), and
    # what the row named is never opened
    for named in ("/dev/zero", str(fifo), "/etc/passwd/x", f"{folder}/1.h5/x"):
        _rows(lab.url, f"UPDATE analyses SET results_path = '{named}'")
        check = _check_in_a_process(lab, "--repair", "--no-sources")
        assert check.returncode == 0 and "Traceback" not in check.stderr, check.stderr
        assert check.stdout.strip().splitlines()[1:] == [
            f"repaired: analysis 1: it names {named}, outside the store, but the store's analyses/1.h5 has the "
            f"SHA-256 it records: row re-pointed to {folder}/1.h5",
            "ok: 1 repaired; checked 2 store files, 0 sources"], named
        assert _rows(lab.url, "SELECT results_path FROM analyses") == [(f"{folder}/1.h5",)]
    cases = {
        str(pipe): "is a named pipe, not a regular file",
        str(loop): "is a loop of symbolic links; it is not read",
    }
    for named, problem in cases.items():
        for entry in (pipe, loop):               # in the store folder only while a row names it
            if os.path.lexists(entry):
                entry.unlink()
        if named == str(pipe):
            os.mkfifo(pipe)
        elif named == str(loop):
            loop.symlink_to("loop.h5")
        _rows(lab.url, f"UPDATE analyses SET results_path = '{named}'")
        check = _check_in_a_process(lab, "--repair", "--no-sources")
        assert check.returncode == 1 and "Traceback" not in check.stderr, check.stderr
        lines = check.stdout.strip().splitlines()
        assert lines[1:] == [
            f"problem: analysis 1: its file {named} {problem}",
            f"problem: analyses/1.h5: analysis 1 names another file, {named}; check --store",
            "2 problems (2 need you); checked 1 store file, 0 sources"], named
    assert _rows(lab.url, "SELECT status FROM analyses") == [("done",)]

    catalog = open_catalog(lab.url, lab.store)
    try:
        for named, problem in ((fifo, "is a named pipe, not a regular file"),
                               ("/dev/zero", "is a device, not a regular file"),
                               (loop, "cannot be read: its path is a loop of symbolic links"),
                               ("/etc/passwd/x", "cannot be read: a part of its path is a file, not a folder")):
            with pytest.raises(StoreFileError) as caught:
                catalog.store.verified(named, "0" * 64)
            assert caught.value.problem == problem
    finally:
        catalog.engine.dispose()


def test_impossible_pids_are_no_process(cell_lab):
    from txmdb.store import HOST, host_tag, process_alive

    now = time.time()
    assert process_alive(os.getpid(), now)
    assert not any(process_alive(pid, now) for pid in (0, -1, -os.getpid(), 2 ** 22 + 1, 10 ** 30))

    lab = cell_lab
    assert lab("cycling", "ingest", CYCLER, "--cell", "C").exit_code == 0
    folder = Path(lab.store) / "cycling"
    pids = ["99999999999999999999999", "0", str(2 ** 22 + 1)]
    names = {f".tmp.{host_tag(HOST)}.{pid}.new.{NAME}.parquet": pid for pid in pids}
    for name in names:
        (folder / name).write_bytes(b"half a file")
    check = _check_in_a_process(lab, "--no-sources")
    assert check.returncode == 1 and "Traceback" not in check.stderr, check.stderr
    assert check.stdout.strip().splitlines()[1:-1] == [
        f"problem: cycling/{name}: temporary file left by a crash (writer pid {names[name]} is gone) "
        "(--repair: removed)" for name in sorted(names)]
    assert lab("db", "check", "--repair").exit_code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["1.parquet"]


# --------------------------------------------------------------------------- F9: names and links


def test_only_whole_temporary_names_are_temporaries(cell_lab):
    from txmdb.store import HOST, host_tag

    lab = cell_lab
    assert lab("cycling", "ingest", CYCLER, "--cell", "C").exit_code == 0
    folder = Path(lab.store) / "cycling"
    core = f".tmp.{host_tag(HOST)}.{_dead_pid()}.new.{NAME}.parquet"
    writers = [core, f".room-{core}", f".{core}.ab_cd123.partial"]      # the temporary and its scratch files
    users = [f".notes{core}", f"{core}.bak", f".{core}", f"{core}.ab_cd123.partial", core.replace(NAME, "abc"),
             core.replace(".parquet", ".h5"), core.replace(".new.", ".007x.")]
    for name in writers + users:
        (folder / name).write_text("someone's bytes")
    check = lab("db", "check", "--no-sources")
    assert check.exit_code == 1
    pid = core.split(".")[3]
    assert _lines(check)[1:-1] == [
        f"problem: cycling/{name}: temporary file left by a crash (writer pid {pid} is gone) (--repair: removed)"
        for name in sorted(writers)] + [
        f"problem: cycling/{name}: not a file txmdb writes; move it out of the store" for name in sorted(users)]
    repair = lab("db", "check", "--repair", "--no-sources")
    assert repair.exit_code == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(["1.parquet", *users])


def test_a_store_folder_linking_out_is_never_repaired_into(cell_lab, tmp_path):
    from txmdb.store import HOST, host_tag

    lab = cell_lab
    assert lab("xas", "ingest", NI_FOIL, "--sample", "S", "--edge", "Ni-K").exit_code == 0
    store = Path(lab.store).resolve()
    elsewhere = tmp_path / "other-disk" / "xas"
    elsewhere.parent.mkdir()
    shutil.move(store / "xas", elsewhere)
    (store / "xas").symlink_to(elsewhere)            # an admin moved xas/ to another disk
    (elsewhere / "3.parquet").write_text("not txmdb's")
    (elsewhere / f".tmp.{host_tag(HOST)}.{_dead_pid()}.new.{NAME}.parquet").write_text("not txmdb's")
    before = _snapshot(elsewhere)

    repair = lab("db", "check", "--repair", "--no-sources")
    assert repair.exit_code == 1
    assert _lines(repair)[1:] == [
        f"problem: xas/: links to {elsewhere}, out of its place in the store; nothing in it is checked or repaired: "
        "move its files back into the store, or give --store",
        f"problem: XAS measurement 1: its file {store}/xas/1.parquet links out of the store, to "
        f"{elsewhere}/1.parquet; it is not read",
        "2 problems (2 need you); checked 0 store files, 0 sources"]
    assert _snapshot(elsewhere) == before and (store / "xas").is_symlink()

    # nothing is written through such a link either: the analysis is refused before it starts
    scan = lab("txm", "ingest", GOLDEN, "--sample", "S")
    target = tmp_path / "other-disk" / "analyses"
    target.mkdir()
    (store / "analyses").symlink_to(target)
    refused = lab("txm", "analyze", _lines(scan)[-1], "--bin", "1")
    assert refused.exit_code == 1
    assert _errors(refused) == [f"error: store folder {lab.store}/analyses links to {target}, out of its place in "
                                "the store"]
    assert list(target.iterdir()) == [] and _rows(lab.url, "SELECT count(*) FROM analyses") == [(0,)]


def test_a_store_given_through_a_link_is_the_store(cell_lab, tmp_path):
    """A link to the whole store (a mount point, say) is that store: checked and written as usual."""
    lab = cell_lab
    assert lab("cycling", "ingest", CYCLER, "--cell", "C").exit_code == 0
    link = tmp_path / "store-link"
    link.symlink_to(Path(lab.store))
    through = _runner(lab.url, link)
    assert through("xas", "ingest", NI_FOIL, "--sample", "S", "--edge", "Ni-K").exit_code == 0
    assert (Path(lab.store) / "xas" / "1.parquet").is_file()
    check = through("db", "check")
    assert check.exit_code == 0 and _lines(check)[1] == "ok: checked 2 store files, 2 sources", check.output
