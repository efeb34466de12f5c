"""Migrations and the database layer, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from txmdb.catalog import open_catalog
from txmdb.catalog.samples import add_cell, add_sample
from txmdb.db import migrate
from txmdb.db.engine import make_engine, resolve_url, safe_url
from txmdb.db.models import Base, Sample
from txmdb.errors import DatabaseError, DuplicateError


def test_one_head():
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(migrate.alembic_config()).get_heads()
    assert len(heads) == 1


def test_upgrade_from_empty_creates_every_table(db_url):
    engine = make_engine(db_url)
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    tables = set(sa.inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    engine.dispose()


def test_init_is_idempotent(db_url):
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    migrate.upgrade(engine)
    assert migrate.check_database(engine) == migrate.head_revision()
    engine.dispose()


def test_models_match_migrations(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_to_base_and_back_with_data(db_url, tmp_path):
    cat = open_catalog(db_url, tmp_path / "store", check=False)
    migrate.upgrade(cat.engine)
    with cat.session() as s:
        add_sample(s, "rod-NMC", morphology="rod")
    migrate.downgrade(cat.engine, "base")
    assert migrate.current_revision(cat.engine) is None
    assert "samples" not in sa.inspect(cat.engine).get_table_names()
    migrate.upgrade(cat.engine)
    with cat.session() as s:
        add_sample(s, "rod-NMC", morphology="rod")
        assert s.scalar(sa.select(sa.func.count()).select_from(Sample)) == 1
    cat.engine.dispose()


def test_out_of_date_database_names_the_command(db_url):
    engine = make_engine(db_url)
    with pytest.raises(DatabaseError, match="txmdb init"):
        migrate.check_database(engine)
    engine.dispose()


def test_newer_schema_is_refused(db_url):
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    with pytest.raises(DatabaseError, match="newer than this txmdb"):
        migrate.check_database(engine)
    with pytest.raises(DatabaseError, match="newer than this txmdb"):
        migrate.upgrade(engine)
    engine.dispose()


def test_sqlite_pragmas(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()


def test_bare_path_means_sqlite(tmp_path):
    url = resolve_url(str(tmp_path / "cat.db"))
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(tmp_path / "cat.db")


def test_password_never_shown():
    url = resolve_url("postgresql://alice:s3cret@db.example:5432/lab")
    assert "s3cret" not in safe_url(url)
    assert url.drivername == "postgresql+psycopg"


@pytest.mark.parametrize("bad", ["mysql://x@y/z", "postgresql://:::bad", "notadb://"])
def test_invalid_url(bad):
    with pytest.raises(DatabaseError):
        make_engine(bad)


def test_session_rolls_back_on_error(catalog):
    with pytest.raises(DuplicateError):
        with catalog.session() as s:
            add_sample(s, "a")
            add_sample(s, "a")
    with catalog.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Sample)) == 0


def test_foreign_keys_enforced(catalog):
    from txmdb.db.models import Cell

    with pytest.raises(DuplicateError):  # IntegrityError → domain error
        with catalog.session() as s:
            s.add(Cell(name="orphan", sample_id=999))
            s.flush()


def test_active_mass_from_loading(catalog):
    from txmdb.catalog.samples import active_mass_g

    with catalog.session() as s:
        add_sample(s, "x")
        cell = add_cell(s, "c", sample="x", loading_mg_cm2=10.0, area_cm2=1.5, active_fraction=0.9)
        assert active_mass_g(cell) == pytest.approx(0.0135)
