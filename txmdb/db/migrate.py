"""Schema migrations run from code: the Alembic config is built here, not read from an ini file."""

from __future__ import annotations

from importlib import resources

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from txmdb.db.engine import describe_db_error
from txmdb.errors import DatabaseError


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
    """The revision the database is at; None for a database without txmdb's schema."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseError(describe_db_error(engine, exc)) from None


def _run(engine: Engine, command_name: str, revision: str) -> None:
    from alembic import command
    from alembic.util.exc import CommandError

    try:
        with engine.begin() as connection:
            getattr(command, command_name)(alembic_config(connection), revision)
    except CommandError as exc:
        raise DatabaseError(f"cannot {command_name} to {revision!r}: {exc}") from None
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseError(describe_db_error(engine, exc)) from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade to ``revision`` (idempotent at head). Refuses a database newer than this txmdb."""
    current = current_revision(engine)
    if current is not None and not _known(current):
        raise DatabaseError(_newer_message(current))
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
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
