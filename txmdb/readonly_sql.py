"""``query sql``: run one user SELECT on the catalogue, read-only by construction on both backends.

SQLite: the file is opened with ``mode=ro`` and an authorizer denies everything but reading
(no ATTACH, no PRAGMA writes). PostgreSQL: the statement runs inside a READ ONLY transaction
that is always rolled back, and stacked statements are refused before anything is sent, so
no ``COMMIT; …`` can leave that transaction.
"""

from __future__ import annotations

import re

import pandas as pd

from txmdb.errors import TxmdbError

_TOKEN = re.compile(
    r"""
    (?P<single>'(?:[^']|'')*')        |
    (?P<double>"(?:[^"]|"")*")        |
    (?P<line>--[^\n]*)                |
    (?P<block>/\*.*?\*/)              |
    (?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$) |
    (?P<semi>;)                       |
    (?P<other>[^'"\-/;$]+|.)
    """,
    re.VERBOSE | re.DOTALL,
)


def single_statement(text: str) -> str:
    """The statement without a trailing ';'; a TxmdbError if ``text`` holds more than one."""
    body = text.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    if not body:
        raise TxmdbError("query sql: empty statement")
    for match in _TOKEN.finditer(body):
        if match.lastgroup == "semi":
            raise TxmdbError("query sql runs one statement; remove the ';' between statements")
    return body


def _sqlite_authorizer(action, *_args) -> int:
    import sqlite3

    allowed = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
    return sqlite3.SQLITE_OK if action in allowed else sqlite3.SQLITE_DENY


def _unique_names(names: list[str]) -> list[str]:
    """``SELECT *`` over a join repeats names (``id``); number the repeats: id, id_2, …"""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def run_readonly_sql(url, text: str, *, max_rows: int | None = None) -> pd.DataFrame:
    """Run one read-only statement against the catalogue at ``url``; return its rows."""
    from sqlalchemy import event, text as sql_text
    from sqlalchemy.exc import DBAPIError

    from txmdb.db.engine import make_engine, resolve_url

    statement = single_statement(text)
    resolved = resolve_url(url) if not hasattr(url, "get_backend_name") else url
    engine = make_engine(resolved, read_only=True)
    if resolved.get_backend_name() == "sqlite":
        @event.listens_for(engine, "connect")
        def _deny_writes(dbapi_connection, _record):
            dbapi_connection.set_authorizer(_sqlite_authorizer)
    try:
        with engine.connect() as conn:
            if resolved.get_backend_name() == "postgresql":
                conn = conn.execution_options(postgresql_readonly=True)
            trans = conn.begin()
            try:
                result = conn.execute(sql_text(statement).execution_options(no_parameters=True))
                if not result.returns_rows:
                    raise TxmdbError("query sql: the statement returns no rows (only queries are allowed)")
                rows = result.fetchmany(max_rows) if max_rows else result.fetchall()
                frame = pd.DataFrame(rows, columns=_unique_names(list(result.keys())))
            finally:
                trans.rollback()
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise TxmdbError(f"query sql refused or failed: {reason}") from None
    finally:
        engine.dispose()
    return frame
