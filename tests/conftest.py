"""Fixtures: every database test runs on SQLite and on a real PostgreSQL server started here."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.pg_server import PostgresServer

# CI runs the property tests on a fixed sequence of examples, so a run is reproducible;
# locally hypothesis explores (and remembers failures in .hypothesis/).
from hypothesis import settings as _hypothesis_settings

_hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")

PROJECT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the whole run (``TXMDB_TEST_PG_URL`` names an external one)."""
    external = os.environ.get("TXMDB_TEST_PG_URL")
    if external:
        yield external
        return
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


def _fresh_pg_url(server) -> tuple[str, callable]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    if isinstance(server, str):
        import sqlalchemy as sa

        engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        base = sa.engine.make_url(server)

        def drop():
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            engine.dispose()

        return base.set(database=name).render_as_string(hide_password=False), drop
    return server.create_database(name), lambda: server.drop_database(name)


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """An empty catalogue database URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalogue.db'}"
        return
    server = request.getfixturevalue("pg_server")
    url, drop = _fresh_pg_url(server)
    try:
        yield as_catalogue_owner(url)
    finally:
        drop()
        _drop_reporting_role(server, url)


# A lab's catalogue belongs to a login role without superuser rights (docs/deployment.md), and
# query sql refuses superusers: the tests' catalogues belong to this role, and the reporting
# role query sql runs as is set up the lab's way, with `txmdb db reporting-role`.
PG_OWNER = "txmdb_owner"


def as_catalogue_owner(admin_url: str) -> str:
    """Give the database of ``admin_url`` (a superuser's) to PG_OWNER; its URL, reporting role ready."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    from txmdb.readonly_sql import ensure_reporting_role

    admin = make_url(admin_url)
    conninfo = psycopg.conninfo.make_conninfo(host=admin.host, port=admin.port, user=admin.username,
                                              password=admin.password, dbname=admin.database)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [PG_OWNER]).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                sql.Identifier(PG_OWNER), sql.Literal(admin.password)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(admin.database),
                                                                      sql.Identifier(PG_OWNER)))
    owner_url = admin.set(username=PG_OWNER).render_as_string(hide_password=False)
    ensure_reporting_role(owner_url)
    return owner_url


def _drop_reporting_role(server, admin_url: str) -> None:
    """Roles are cluster-wide and outlive their database: drop the catalogue's own reporting role."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    from txmdb.readonly_sql import default_reporting_role

    base = make_url(server if isinstance(server, str) else server.url)
    conninfo = psycopg.conninfo.make_conninfo(host=base.host, port=base.port, user=base.username,
                                              password=base.password, dbname=base.database)
    role = default_reporting_role(make_url(admin_url).database, "public")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def catalog(db_url, tmp_path):
    """A catalogue at schema head with its own store folder."""
    from txmdb.catalog import open_catalog
    from txmdb.db.migrate import upgrade

    cat = open_catalog(db_url, tmp_path / "store", check=False)
    upgrade(cat.engine)
    yield cat
    cat.engine.dispose()


@pytest.fixture
def cli(db_url, tmp_path):
    """Run the txmdb CLI in-process against the test catalogue; returns the click Result."""
    from typer.testing import CliRunner

    from txmdb.cli.main import app

    runner = CliRunner()
    store = tmp_path / "store"

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, ["--db", db_url, "--store", str(store), *map(str, args)], input=input)

    run.url = db_url
    run.store = store
    return run


@pytest.fixture
def cell_lab(cli):
    """A fresh catalogue holding sample S and cell C (10 mg active mass, 4.5 V upper cut-off)."""
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    assert cli("cell", "add", "C", "--sample", "S", "--active-mass-mg", "10", "--upper-cutoff-v", "4.5").exit_code == 0
    return cli


def insert_raw_scan(conn, *, shape: str) -> None:
    """Sample 1 and TXM scan 1 by plain SQL: the columns every schema since 0001 has (migration tests)."""
    import sqlalchemy as sa

    conn.execute(sa.text("INSERT INTO samples (id, name, meta, created_at) VALUES (1, 'S', '{}', '2026-01-01')"))
    conn.execute(sa.text(
        "INSERT INTO txm_scans (id, sample_id, layout, data_path, energy_path, ndim, shape, dtype, n_energies, "
        "energy_min_ev, energy_max_ev, energies_ev, file_path, file_size_bytes, file_sha256, ingested_at) "
        "VALUES (1, 1, 'dxchange', '/d', '/e', :ndim, :shape, 'float32', 2, 8300, 8400, '[8300, 8400]', "
        "'f.h5', 1, :sha, '2026-01-01')"), {"sha": "a" * 64, "shape": shape, "ndim": shape.count(",")})
