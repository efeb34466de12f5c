"""Engines for the catalogue: URL resolution, SQLite pragmas, error translation."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from txmdb.errors import DatabaseError

DEFAULT_URL = "sqlite:///txmdb.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def resolve_url(url: str | None = None) -> URL:
    """The catalogue URL from ``url``, ``$TXMDB_URL`` or the default; a bare path means SQLite.

    ``postgresql://`` URLs get the psycopg 3 driver.
    """
    text = url or os.environ.get("TXMDB_URL") or DEFAULT_URL
    if "://" not in text:
        text = f"sqlite:///{Path(text).expanduser().resolve()}"
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError):
        masked = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", text)
        raise DatabaseError(f"invalid database URL {masked!r}: expected sqlite:///FILE or postgresql://USER@HOST/DB") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseError(f"unsupported database {safe_url(parsed)}: use sqlite:///FILE or postgresql://…")
    return parsed


def safe_url(url: URL | str) -> str:
    """The URL as text with any password hidden."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except (ArgumentError, ValueError):
            return "<invalid URL>"
    return url.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers work during a write; the busy timeout makes writers wait, not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str | URL | None = None, *, read_only: bool = False) -> Engine:
    """An engine for the catalogue; ``read_only`` opens SQLite read-only (``mode=ro``)."""
    from sqlalchemy import create_engine

    parsed = url if isinstance(url, URL) else resolve_url(url)
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            folder = Path(database).parent
            if not folder.is_dir():
                raise DatabaseError(f"cannot open {safe_url(parsed)}: folder {folder} does not exist")
        if read_only:
            # A file: URI with mode=ro makes writes impossible at the SQLite level.
            uri = f"file:{Path(database).resolve()}?mode=ro"
            parsed = make_url("sqlite://").set(database=uri, query={"uri": "true"})
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ArgumentError) as exc:
        raise DatabaseError(f"invalid database URL {safe_url(parsed)}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def describe_db_error(engine: Engine, exc: BaseException, *, doing: str = "cannot connect to") -> str:
    """One line naming the database (password hidden) and the first line of the driver's reason."""
    reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    first = reason[0] if reason else type(exc).__name__
    return f"{doing} {safe_url(engine.url)}: {first}"
