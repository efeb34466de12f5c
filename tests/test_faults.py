"""Real faults on SQLite and PostgreSQL: a connection lost mid-transaction, a full store disk.

Nothing here is mocked: PostgreSQL backends are really terminated (``pg_terminate_backend``),
SQLite really runs out of disk (its file on a tiny tmpfs), the store really fills up (a
tmpfs mount; where mounting is not permitted, a file-size limit ``RLIMIT_FSIZE`` in a
subprocess). The promise (DESIGN §6, §8): exit status 1, one line ``error: …`` naming the
database or the store and the problem, no traceback, the catalogue as it was and no file
left under a final name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import DATA

GOLDEN = DATA / "golden"
NI_FOIL = DATA / "xas" / "ni_metal_rt.xdi"


def _is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def _count(cli, table: str) -> int:
    out = cli("query", "sql", f"SELECT count(*) AS n FROM {table}", "--format", "json")
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)[0]["n"]


def _files(root: Path) -> list[str]:
    """The store's files but its owner mark (written before its first file, kept)."""
    from txmdb.store import MARK

    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p != root / MARK) if root.exists() else []


def _assert_one_clean_line(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "2m"):
    """A tiny tmpfs at ``folder``; skips nothing — returns False when mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)
    try:
        yield done.returncode == 0
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a ballast file into ``folder`` until its file system has no space left."""
    ballast = folder / f"ballast-{uuid.uuid4().hex[:6]}"
    try:
        with open(ballast, "wb", buffering=0) as fh:
            while True:
                fh.write(b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    ballast.touch()
    return ballast


# --------------------------------------------------------------------------- database connection lost


def test_connection_lost_mid_transaction_rolls_back(catalog, tmp_path):
    """Rows flushed, then the connection dies before the commit: DatabaseError, nothing persisted."""
    from txmdb.db.models import Sample
    from txmdb.errors import DatabaseError

    url = catalog.engine.url
    if url.get_backend_name() == "postgresql":
        killer = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with pytest.raises(DatabaseError) as caught:
            with catalog.session() as session:
                session.add_all([Sample(name=f"lost-{i}") for i in range(20)])
                session.flush()
                pid = session.scalar(sa.text("SELECT pg_backend_pid()"))
                with killer.connect() as conn:
                    assert conn.scalar(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        killer.dispose()
    else:
        # SQLite: the database file's disk fills up under the transaction (a real SQLITE_FULL).
        from txmdb.catalog import open_catalog
        from txmdb.db.migrate import upgrade

        mount = tmp_path / "dbdisk"
        with tmpfs(mount, "8m") as mounted:
            assert mounted, "cannot mount a tmpfs here"
            small = open_catalog(f"sqlite:///{mount / 'cat.db'}", tmp_path / "store", check=False)
            upgrade(small.engine)
            with small.session() as session:
                session.add(Sample(name="kept"))
            ballast = fill(mount)
            with pytest.raises(DatabaseError) as caught:
                with small.session() as session:
                    session.add_all([Sample(name=f"lost-{i}", notes="x" * 2000) for i in range(2000)])
                    session.flush()
            ballast.unlink()
            with small.session() as session:
                assert session.scalar(sa.select(sa.func.count()).select_from(Sample)) == 1
                assert session.scalar(sa.text("PRAGMA integrity_check")) == "ok"
            small.engine.dispose()
            catalog = None
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "database error" in message
    assert url.password is None or url.password not in message
    if catalog is not None:
        # the pool replaces the dead connection; nothing of the transaction is there
        with catalog.session() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Sample)) == 0


@pytest.fixture
def lab(cell_lab):
    return cell_lab


@pytest.fixture
def cycling_csv(tmp_path) -> Path:
    from txmdb.synthetic.cycling import ROD_NMC, write_cycling_csv

    return write_cycling_csv(ROD_NMC, tmp_path / "cell.csv", naming="bdf", records_per_step=10)


def test_cli_connection_lost_during_ingest(lab, cycling_csv, tmp_path):
    """``cycling ingest`` whose database connection dies inside its transaction: exit 1, one line, nothing kept."""
    if _is_pg(lab.url):
        # The backend terminates itself as the run row goes in: a connection lost mid-transaction.
        engine = sa.create_engine(lab.url)
        with engine.begin() as conn:
            conn.execute(sa.text(
                "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$"))
            conn.execute(sa.text("CREATE TRIGGER die AFTER INSERT ON cycles FOR EACH STATEMENT EXECUTE FUNCTION die()"))
        engine.dispose()
        result = lab("cycling", "ingest", cycling_csv, "--cell", "C")
        line = _assert_one_clean_line(result, "database error")
        assert "terminat" in line or "closed" in line, line
    else:
        # SQLite: move the catalogue onto a full disk; the ingest's commit cannot be written.
        from typer.testing import CliRunner

        from txmdb.cli.main import app

        mount = tmp_path / "dbdisk"
        db_file = Path(sa.engine.make_url(lab.url).database)
        with tmpfs(mount, "8m") as mounted:
            assert mounted, "cannot mount a tmpfs here"
            import sqlite3

            with contextlib.closing(sqlite3.connect(db_file)) as src, \
                    contextlib.closing(sqlite3.connect(mount / "cat.db")) as dst:
                src.backup(dst)
            url = f"sqlite:///{mount / 'cat.db'}"

            def run(*args):
                return CliRunner().invoke(app, ["--db", url, "--store", str(lab.store), *map(str, args)])

            assert run("query", "sql", "SELECT 1").exit_code == 0
            ballast = fill(mount)
            result = run("cycling", "ingest", cycling_csv, "--cell", "C")
            _assert_one_clean_line(result, "database error", "full")
            ballast.unlink()
            lab.url = url
            counts = json.loads(run("query", "sql", "SELECT (SELECT count(*) FROM cycling_runs) AS r, "
                                    "(SELECT count(*) FROM cycles) AS c", "--format", "json").stdout)
            assert counts == [{"r": 0, "c": 0}]
            assert _files(Path(lab.store)) == []
            # with space again, the same command works
            assert run("cycling", "ingest", cycling_csv, "--cell", "C").exit_code == 0
        return
    assert _count(lab, "cycling_runs") == 0 and _count(lab, "cycles") == 0
    assert _files(Path(lab.store)) == []


# --------------------------------------------------------------------------- full store disk


@pytest.fixture
def full_store(db_url, tmp_path):
    """A CLI runner whose --store lies on a full tmpfs (ballast beside it, not in it)."""
    from typer.testing import CliRunner

    from txmdb.cli.main import app

    mount = tmp_path / "storedisk"
    with tmpfs(mount, "4m") as mounted:
        if not mounted:
            pytest.fail("mounting a tmpfs is not permitted here; see test_store_file_size_limit (RLIMIT_FSIZE)")
        store = mount / "store"
        store.mkdir()

        def run(*args):
            return CliRunner().invoke(app, ["--db", db_url, "--store", str(store), *map(str, args)])

        run.url, run.store, run.mount = db_url, store, mount
        yield run


def _setup(run, tmp_path) -> dict:
    assert run("init").exit_code == 0
    assert run("sample", "add", "S").exit_code == 0
    assert run("cell", "add", "C", "--sample", "S", "--active-mass-mg", "10", "--upper-cutoff-v", "4.5").exit_code == 0
    return _setup_existing(run, tmp_path)


def test_full_store_is_a_clean_error(full_store, tmp_path):
    """cycling ingest, xas ingest, txm analyze on a full store: exit 1, one line, nothing kept; then all work."""
    run = full_store
    commands = _setup(run, tmp_path)
    ballast = fill(run.mount)
    for name, (args, table) in commands.items():
        result = run(*args)
        line = _assert_one_clean_line(result, str(run.store), "no space left")
        assert name and line
        assert _count(run, table) == 0
        assert _files(run.store) == [], name   # no partial file, under a final name or any other
    ballast.unlink()
    for name, (args, table) in commands.items():
        result = run(*args)
        assert result.exit_code == 0, (name, result.output)
        assert _count(run, table) == 1


def _limited(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


# RLIMIT_FSIZE limits every file the process writes, SQLite's own -wal/-shm included, so on
# SQLite it failed at random in the catalogue instead of the store; the full-store test above
# covers the store on SQLite. Here the catalogue is PostgreSQL, whose files another process writes.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("command", ["cycling", "xas", "txm"])
def test_store_file_size_limit(lab, tmp_path, command):
    """Under RLIMIT_FSIZE (SIGXFSZ ignored) writing the store fails with EFBIG: exit 1, one line, nothing kept."""
    commands = _setup_existing(lab, tmp_path)
    args, table = commands[command]
    env = {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}
    proc = subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--db", lab.url, "--store", str(lab.store),
                           *map(str, args)], env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited(4096))
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert str(lab.store) in lines[0] and "file too large" in lines[0], lines[0]
    assert _count(lab, table) == 0
    assert _files(Path(lab.store)) == []


def _setup_existing(run, tmp_path) -> dict:
    """The three store-writing commands against the ``lab`` catalogue (sample S, cell C)."""
    scan = run("txm", "ingest", GOLDEN / "rod96_2d.h5", "--sample", "S")
    assert scan.exit_code == 0, scan.output
    from txmdb.synthetic.cycling import ROD_NMC, write_cycling_csv

    csv = write_cycling_csv(ROD_NMC, tmp_path / "cell.csv", naming="bdf", records_per_step=10)
    return {
        "cycling": (["cycling", "ingest", csv, "--cell", "C"], "cycling_runs"),
        "xas": (["xas", "ingest", NI_FOIL, "--sample", "S", "--edge", "Ni-K"], "xas_measurements"),
        # a failed analysis is recorded, as failed with its error (tests/test_store.py): never done
        "txm": (["txm", "analyze", scan.stdout.strip().splitlines()[-1], "--bin", "1"],
                "analyses WHERE status = 'done'"),
    }
