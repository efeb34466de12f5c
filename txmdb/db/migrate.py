"""Schema migrations run from code: the Alembic config is built here, not read from an ini file."""

from __future__ import annotations

from contextlib import contextmanager
from importlib import resources

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from txmdb.db.engine import describe_db_error, missing_sqlite_file
from txmdb.errors import DatabaseError

# Key of the PostgreSQL advisory lock that serialises concurrent migrations ("txmdb" in ASCII).
_MIGRATION_LOCK_KEY = 0x74786D6462


def alembic_config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("txmdb.migrations")))
    config.attributes["connection"] = connection
    return config


def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return _script().get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database without txmdb's schema.

    A SQLite file that does not exist is not created by asking.
    """
    from alembic.runtime.migration import MigrationContext

    if missing_sqlite_file(engine.url):
        return None
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseError(describe_db_error(engine, exc)) from None


def _run(engine: Engine, command_name: str, revision: str) -> None:
    from alembic import command
    from alembic.util.exc import CommandError

    try:
        with engine.connect() as connection, _foreign_keys_off(connection):
            with connection.begin():
                _lock_for_migration(connection)
                getattr(command, command_name)(alembic_config(connection), revision)
                _check_foreign_keys(connection)
    except CommandError as exc:
        raise DatabaseError(f"cannot {command_name} to {revision!r}: {exc}") from None
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseError(describe_db_error(engine, exc, doing=f"cannot {command_name}")) from None


@contextmanager
def _foreign_keys_off(connection):
    """On SQLite, no foreign-key enforcement while the migration runs, on again after.

    A batch operation copies a table and drops the old one; with enforcement on, that drop
    deletes (or refuses for) every row referring to it, e.g. a sample's XAS rows. SQLite
    ignores the pragma inside a transaction, so it is set before the migration's one.
    """
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()  # ends SQLAlchemy's autobegun transaction; pysqlite sent no BEGIN
    try:
        yield
    finally:
        if sqlite:
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def _check_foreign_keys(connection) -> None:
    """Refuse (the migration rolls back) if the copied tables left a reference without its row."""
    if connection.dialect.name != "sqlite":
        return  # PostgreSQL enforces its constraints on every statement of the migration
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise DatabaseError(f"migration left {len(broken)} broken references (e.g. {table} row {rowid} "
                            f"refers to a missing {parent} row); nothing was changed")


def _lock_for_migration(connection) -> None:
    """Make concurrent migrations (three ``txmdb init`` at once) wait for each other.

    Alembic reads the current revision inside this transaction, after the lock, so a
    migration that waited finds the schema at head and does nothing.
    """
    if connection.dialect.name == "postgresql":
        # Held until the transaction ends; the DDL commits with it.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
    elif connection.dialect.name == "sqlite":
        # pysqlite opens no transaction before DDL; take the write lock now (the busy
        # timeout makes the others wait for it) so the DDL is one transaction.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade to ``revision`` (idempotent at head). Refuses a database newer than this txmdb."""
    current = current_revision(engine)
    if current is not None and not _known(current):
        raise DatabaseError(_newer_message(current))
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade to ``revision``. Never creates a catalogue that does not exist."""
    _refuse_missing(engine)
    current = current_revision(engine)
    if current is not None and not _known(current):
        raise DatabaseError(_newer_message(current))
    _run(engine, "downgrade", revision)


def _known(revision: str) -> bool:
    from alembic.util.exc import CommandError

    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


def _newer_message(current: str) -> str:
    return (
        f"database schema revision {current} is newer than this txmdb (head {head_revision()}); "
        "upgrade txmdb to use this database"
    )


def check_database(engine: Engine) -> str:
    """Raise a DatabaseError naming the command to run unless the database is at head."""
    _refuse_missing(engine)
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return current
    if current is None:
        raise DatabaseError("database has no txmdb catalogue; run 'txmdb init' to create it")
    if not _known(current):
        raise DatabaseError(_newer_message(current))
    raise DatabaseError(
        f"database schema is at revision {current}, this txmdb needs {head}; run 'txmdb db upgrade'"
    )


def _refuse_missing(engine: Engine) -> None:
    """Only ``txmdb init`` and ``txmdb db upgrade`` create a SQLite catalogue."""
    if missing := missing_sqlite_file(engine.url):
        raise DatabaseError(f"catalogue {missing} does not exist; run 'txmdb init' to create it")
