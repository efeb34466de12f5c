"""The connection layer (issue 9 §7): URLs of other drivers, a missing catalogue on a read
command, catalogue folders with URL-special characters, and concurrent ``txmdb init`` —
each on SQLite and PostgreSQL through real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from txmdb.db.migrate import head_revision

XAS_FILE = Path(__file__).resolve().parent / "data" / "xas" / "ni_metal_rt.xdi"


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}


def txmdb(db, *args, store: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    options = ["--db", str(db)] + (["--store", str(store)] if store else [])
    return subprocess.run([sys.executable, "-m", "txmdb.cli.main", *options, *map(str, args)],
                          capture_output=True, text=True, env=_env(), cwd=cwd, timeout=120)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _shown(url) -> str:
    from txmdb.db.engine import resolve_url, safe_url

    return safe_url(resolve_url(str(url)))


def _versions(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(sa.text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- URLs of other drivers


def _other_driver(db_url: str) -> str:
    """The same database under the driver name another tool would write."""
    scheme, rest = db_url.split("://", 1)
    return ("postgresql+psycopg2" if scheme.startswith("postgresql") else "sqlite+pysqlite") + "://" + rest


def test_a_url_for_another_driver_runs_on_the_installed_one(db_url, tmp_path):
    url = _other_driver(db_url)
    init = txmdb(url, "init", store=tmp_path / "store")
    assert init.returncode == 0, init.stderr
    assert init.stdout.splitlines() == [f"catalogue {_shown(url)} is at schema {head_revision()}"]
    assert txmdb(url, "sample", "add", "rod-NMC", store=tmp_path / "store").returncode == 0
    listed = txmdb(db_url, "sample", "list", "--format", "csv", store=tmp_path / "store")
    assert listed.stdout.splitlines()[1].startswith("rod-NMC,")


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg", "pg8000"])
def test_unreachable_postgresql_url_of_any_driver_is_one_line(driver):
    result = txmdb(f"postgresql+{driver}://lab@127.0.0.1:1/catalogue", "sample", "list")
    line = one_error_line(result)
    assert line.startswith("error: cannot connect to postgresql+psycopg://lab@127.0.0.1:1/catalogue: ")
    assert "Connection refused" in line


# --------------------------------------------------------------------------- a missing catalogue


READ_COMMANDS = [
    ("sample", "list"),
    ("query", "samples"),
    ("query", "sql", "SELECT 1 AS one"),
    ("db", "check"),
    ("db", "downgrade", "base", "--yes"),
    ("report", "compare", "rod-NMC", "-o", "report.html"),
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_read_command_never_creates_a_sqlite_catalogue(tmp_path, command):
    work = tmp_path / "work"
    work.mkdir()
    result = txmdb("missing.db", *command, cwd=work)
    assert one_error_line(result) == (
        f"error: catalogue {work / 'missing.db'} does not exist; run 'txmdb init' to create it")
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("create", [("init",), ("db", "upgrade")])
def test_init_and_db_upgrade_create_the_sqlite_catalogue(tmp_path, create):
    assert txmdb("cat.db", "db", "current", cwd=tmp_path).stdout == "base (empty)\n"
    assert not (tmp_path / "cat.db").exists(), "asking for the revision creates nothing"
    assert txmdb("cat.db", *create, cwd=tmp_path).returncode == 0
    assert txmdb("cat.db", "sample", "list", cwd=tmp_path).stdout == "(no rows)\n"


def test_read_command_on_a_postgresql_database_without_a_catalogue(db_url, tmp_path):
    """The PostgreSQL side: an empty database says to run init; a missing one is one line."""
    if db_url.startswith("sqlite"):
        db_url = str(tmp_path / "fresh.db")
        expected = f"error: catalogue {tmp_path / 'fresh.db'} does not exist; run 'txmdb init' to create it"
    else:
        expected = "error: database has no txmdb catalogue; run 'txmdb init' to create it"
    for command in READ_COMMANDS[:4]:
        assert one_error_line(txmdb(db_url, *command, cwd=tmp_path)) == expected, command
    if not db_url.startswith("postgresql"):
        assert not (tmp_path / "fresh.db").exists()
        return
    gone = db_url.rsplit("/", 1)[0] + "/no_such_catalogue"
    line = one_error_line(txmdb(gone, "sample", "list"))
    assert line.startswith(f"error: cannot connect to {_shown(gone)}: ")
    assert 'database "no_such_catalogue" does not exist' in line


# --------------------------------------------------------------------------- folders named like URL syntax


FOLDERS = ["a#b", "a?b", "a%20b", "Müller δ-lab"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_catalogue_and_store_in_folders_named_like_url_syntax(db_url, tmp_path, folder):
    """SQLite: the catalogue file lives there (as a path and as a URL); PostgreSQL: the store."""
    base = tmp_path / folder
    base.mkdir()
    sqlite = db_url.startswith("sqlite")
    database = base / "cat.db"
    urls = [database, _shown(database)] if sqlite else [db_url]
    store = base / "store"
    for url in urls:
        assert txmdb(url, "init", store=store).returncode == 0
    if sqlite:
        # The file is where it was named, not at a path cut short at '#', '?' or '%'.
        assert database.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == [folder]
    assert txmdb(urls[-1], "sample", "add", "NMC", store=store).returncode == 0
    ingest = txmdb(urls[0], "xas", "ingest", XAS_FILE, "--sample", "NMC", "--edge", "Ni-K", store=store)
    assert ingest.returncode == 0, ingest.stderr
    assert list(store.rglob("*.parquet")), "the store file is inside the folder"
    rows = txmdb(urls[-1], "query", "xas", "--format", "json", store=store)
    assert [row["sample"] for row in json.loads(rows.stdout)] == ["NMC"]
    if sqlite:
        # query sql opens the file read-only through a file: URI, where '#' and '?' are syntax.
        rows = txmdb(urls[0], "query", "sql", "SELECT count(*) AS n FROM xas_measurements", "--format", "json")
        assert rows.returncode == 0, rows.stderr
        assert json.loads(rows.stdout) == [{"n": 1}]


@pytest.mark.parametrize("folder", FOLDERS)
def test_read_only_engine_stays_read_only_in_such_folders(db_url, tmp_path, folder):
    from txmdb.db.engine import make_engine

    base = tmp_path / folder
    base.mkdir()
    # As a URL, so the database text holds the raw '#', '?' or '%' of the folder's name.
    url = _shown(base / "cat.db") if db_url.startswith("sqlite") else db_url
    assert txmdb(url, "init").returncode == 0
    engine = make_engine(url, read_only=True)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn = conn.execution_options(postgresql_readonly=True)
            with conn.begin():
                assert conn.execute(sa.text("SELECT count(*) FROM samples")).scalar() == 0
            with pytest.raises(sa.exc.DBAPIError, match="read-only|readonly"):
                with conn.begin():
                    conn.execute(sa.text("CREATE TABLE intruder (a INTEGER)"))
    finally:
        engine.dispose()
    assert txmdb(url, "sample", "list").stdout == "(no rows)\n"
    assert [p.name for p in tmp_path.iterdir()] == [folder], "no other file was opened or created"


# --------------------------------------------------------------------------- concurrent init


def test_three_concurrent_inits_on_a_fresh_catalogue_all_succeed(db_url, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "txmdb.cli.main", "--db", db_url, "init"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
             for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _out, err in outputs]
    expected = f"catalogue {_shown(db_url)} is at schema {head_revision()}\n"
    assert [out for out, _err in outputs] == [expected] * 3
    assert _versions(db_url) == [head_revision()]
    assert txmdb(db_url, "db", "check").returncode == 0
