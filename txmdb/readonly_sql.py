"""``query sql``: run one user query on the catalogue; it cannot write, by construction, and it is bounded.

Nothing here parses SQL to decide what is safe; the database engines decide.

SQLite: the file is opened ``mode=ro`` with ``PRAGMA query_only``, an authorizer denies every
action but reading, the driver prepares exactly one statement, and a progress handler and a
watchdog thread stop the statement at the time limit. Neither can stop one function call
midway, so values are short (:data:`~txmdb.vocabulary.SQLITE_MAX_VALUE_BYTES`): the costliest
call (``trim(X, Y)``, quadratic) then ends within a second.

PostgreSQL: a guard function installed by :func:`ensure_reporting_role` runs the query. The
session
 1. refuses superusers and members of the server-file and signal roles;
 2. opens a ``READ ONLY`` transaction, always rolled back, with a server-side statement timeout,
    a dead-client check and keepalives;
 3. switches to the reporting role (``SET LOCAL ROLE``), a NOLOGIN role with SELECT only, on
    this catalogue only (roles are cluster-wide: each catalogue has its own);
 4. sends the query in one protocol ``Parse`` (the extended protocol): the server refuses
    stacked statements (``cannot insert multiple commands into a prepared statement``) and
    utility statements (``COMMIT``, ``SET ROLE``, ``DO``…) return no rows, so they are refused
    without running;
 5. runs it inside the guard: a ``STABLE SECURITY DEFINER`` function owned by the reporting
    role. ``STABLE`` lets only plain queries run (no DML, no ``FOR UPDATE``, no utility
    command). ``SECURITY DEFINER`` forbids changing ``role`` inside it, which closes
    ``set_config('role', 'none', …)``: without it the query could return to the session user
    and signal that user's sessions. The reporting role cannot log in, so no session exists
    whose role it could signal. The guard stops at the row cap and at a byte cap.
Rows come back through a server-side cursor in batches.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from txmdb.errors import TxmdbError

if TYPE_CHECKING:
    import pandas as pd

from txmdb.vocabulary import (  # noqa: F401  (the CLI's defaults, re-exported)
    DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, MAX_RESULT_BYTES, MAX_ROLE_NAME_BYTES, MAX_SQL_ROWS, MAX_TIMEOUT_S,
    REPORTING_ROLE_PREFIX, SQLITE_MAX_PATTERN_BYTES, SQLITE_MAX_VALUE_BYTES,
)
from txmdb.vocabulary import PRIVATE_TABLES

GUARD_FUNCTION = "txmdb_reporting_query"
# Roles that reach beyond the database (files, programs) or into other sessions.
FORBIDDEN_ROLES = ("pg_execute_server_program", "pg_write_server_files", "pg_read_server_files", "pg_signal_backend")
# PostgreSQL rows arrive in batches (one round trip each; the guard has sized them already).
# SQLite makes a row when it is fetched: one at a time, so the byte cap holds before the next.
_PG_BATCH_ROWS = 1000
_SQLITE_PROGRESS_STEPS = 1000

# One row per FETCH (a FOR loop would read ten ahead): the byte cap stops a query whose rows
# grow, before the next, larger row is made. Sizes are of the row's text, as the client
# receives it: pg_column_size would count a value read from a table compressed (100 MB of
# repeated text is 1 MB stored).
_GUARD_BODY = """
DECLARE
  c refcursor;
  r record;
  n bigint := 0;
  size bigint := 0;
BEGIN
  OPEN c NO SCROLL FOR EXECUTE query;
  LOOP
    FETCH c INTO r;
    EXIT WHEN NOT FOUND;
    size := size + octet_length(r::text);
    IF size > max_bytes THEN
      RAISE EXCEPTION 'the result is larger than % bytes; select fewer rows or columns', max_bytes
        USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN NEXT r;
    n := n + 1;
    EXIT WHEN n >= max_rows;
  END LOOP;
  CLOSE c;
END
"""


class QueryTimeout(TxmdbError):
    """The statement ran longer than its time limit."""


@dataclass(frozen=True)
class SqlResult:
    """The rows of one query (repeated column names numbered), and whether the row cap cut them."""

    frame: "pd.DataFrame"
    cut: bool


@dataclass(frozen=True)
class ReportingRole:
    """What :func:`ensure_reporting_role` set up."""

    name: str
    schema: str
    tables: int
    owner: str
    members: tuple[str, ...]


def _unique_names(names: list[str]) -> list[str]:
    """``SELECT *`` over a join repeats names (``id``); number the repeats: id, id_2, …"""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def run_readonly_sql(url, text: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                     max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int | None = None,
                     max_cells: int | None = None) -> SqlResult:
    """Run one read-only query against the catalogue at ``url``; at most ``max_rows`` rows and
    ``max_bytes`` bytes (default :data:`~txmdb.vocabulary.MAX_RESULT_BYTES`); with ``max_cells``,
    no more rows than hold that many values (cut there, as at ``max_rows``).

    Raises TxmdbError (one line) for anything the database refuses or that fails, and
    :class:`QueryTimeout` when the statement runs longer than ``timeout`` seconds.
    """
    import pandas as pd
    from sqlalchemy.engine import URL

    from txmdb.db.engine import resolve_url

    if not 0 < timeout <= MAX_TIMEOUT_S:  # NaN fails this too
        raise TxmdbError(f"query sql: time limit {timeout} s is not between 0 and {MAX_TIMEOUT_S:g} s")
    if not 1 <= max_rows <= MAX_SQL_ROWS:
        raise TxmdbError(f"query sql: row cap {max_rows} is not between 1 and {MAX_SQL_ROWS} rows")
    for name, cap in (("byte", max_bytes), ("value", max_cells)):
        if cap is not None and not cap >= 1:  # a cap of 0 would cut every row: an empty page that looks like a result
            raise TxmdbError(f"query sql: {name} cap {cap} is below 1")
    if "\x00" in text:
        raise TxmdbError("query sql: the statement holds a NUL character")
    max_bytes = MAX_RESULT_BYTES if max_bytes is None else min(max_bytes, MAX_RESULT_BYTES)
    resolved = url if isinstance(url, URL) else resolve_url(url)
    run = _run_sqlite if resolved.get_backend_name() == "sqlite" else _run_postgresql
    try:
        with _driver_connection(resolved, read_only=True) as connection:
            names, rows, cut = run(connection, text, timeout, max_rows, max_bytes, max_cells)
        return SqlResult(pd.DataFrame(rows, columns=_unique_names(names)), cut)
    except MemoryError:
        raise TxmdbError(OUT_OF_MEMORY) from None


@contextmanager
def _driver_connection(url, *, read_only: bool):
    """The driver's own connection (sqlite3 or psycopg) to the catalogue at ``url``, closed after."""
    from sqlalchemy.exc import DBAPIError

    from txmdb.db.engine import describe_db_error, make_engine

    engine = make_engine(url, read_only=read_only)
    try:
        try:
            raw = engine.raw_connection()
        except DBAPIError as exc:
            raise TxmdbError(describe_db_error(engine, exc)) from None
        try:
            yield raw.driver_connection
        finally:
            raw.close()
    finally:
        engine.dispose()


OUT_OF_MEMORY = "query sql: out of memory for the result; select fewer rows or columns"


def _timeout_error(timeout: float) -> QueryTimeout:
    return QueryTimeout(f"query sql: stopped at the time limit of {timeout:g} s")


def _value_size(value) -> int:
    """Bytes a fetched value counts against the cap: text and blobs by length, the rest as text."""
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        return len(value)
    if value is None or isinstance(value, (bool, int, float)):
        return 8
    return len(str(value))  # decimals, dates, JSON documents, arrays


def _collect(fetchmany, max_rows: int, batch_rows: int, max_bytes: int,
             max_cells: int | None = None) -> tuple[list, bool]:
    """Up to ``max_rows`` rows of ``max_bytes`` (and ``max_cells`` values), ``batch_rows`` at a time
    (never all at once); True if more were there.

    Every value costs memory and a table cell however few bytes it holds (a page of 1000 rows
    of 2000 empty strings took ~700 MB of a server's memory): ``max_cells`` bounds those.

    Each row is sized before it is kept, so the rows never hold more than the cap and one row.
    """
    rows: list = []
    size = 0
    while len(rows) <= max_rows:
        batch = fetchmany(min(batch_rows, max_rows + 1 - len(rows)))
        if not batch:
            break
        for row in batch:
            if max_cells is not None and (len(rows) + 1) * len(row) > max_cells:
                return rows, True
            size += sum(map(_value_size, row))
            if size > max_bytes:
                raise TxmdbError(f"query sql: the result is larger than {max_bytes} bytes; "
                                 f"select fewer rows or columns")
            rows.append(row)
    cut = len(rows) > max_rows
    return rows[:max_rows], cut


# --------------------------------------------------------------------------- SQLite


def _sqlite_authorizer(action, arg1, arg2, *_rest) -> int:
    import sqlite3

    if action == sqlite3.SQLITE_FUNCTION and arg2 in ("load_extension", "fts3_tokenizer"):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_READ and arg1 in PRIVATE_TABLES:  # password and token hashes, the web key
        return sqlite3.SQLITE_DENY
    allowed = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
    return sqlite3.SQLITE_OK if action in allowed else sqlite3.SQLITE_DENY


# What the engine says when a limit of query sql stops a statement, and which limit it is.
_SQLITE_LIMIT_REASONS = {
    "string or blob too big": f"no value may be longer than {SQLITE_MAX_VALUE_BYTES} bytes here",
    "LIKE or GLOB pattern too complex": f"a pattern may be at most {SQLITE_MAX_PATTERN_BYTES} bytes here",
}


def _run_sqlite(con, text: str, timeout: float, max_rows: int, max_bytes: int, max_cells: int | None):
    import sqlite3

    # Three locks, each enough: mode=ro (the engine), query_only, and an authorizer for reading only.
    con.execute("PRAGMA query_only = ON")
    con.set_authorizer(_sqlite_authorizer)
    limits = {sqlite3.SQLITE_LIMIT_LENGTH: SQLITE_MAX_VALUE_BYTES,
              sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: SQLITE_MAX_PATTERN_BYTES}
    saved = {limit: con.setlimit(limit, value) for limit, value in limits.items()}
    deadline = time.monotonic() + timeout
    con.set_progress_handler(lambda: int(time.monotonic() > deadline), _SQLITE_PROGRESS_STEPS)
    # The progress handler runs every so many engine steps; the watchdog interrupts at the
    # deadline whatever the engine is doing, fetching included. A function call runs to its end
    # either way: the value limit keeps the longest short.
    fired = threading.Event()
    watchdog = threading.Timer(timeout, lambda: (fired.set(), con.interrupt()))
    watchdog.daemon = True
    watchdog.start()
    try:
        # The driver prepares one statement and refuses a second ("one statement at a time").
        cursor = con.execute(text)
        if cursor.description is None:
            raise TxmdbError("query sql: the statement returns no rows (only queries run here)")
        names = [d[0] for d in cursor.description]
        rows, cut = _collect(cursor.fetchmany, max_rows, 1, max_bytes, max_cells)
        return names, [tuple(r) for r in rows], cut
    except sqlite3.Error as exc:
        if "interrupt" in str(exc) and (fired.is_set() or time.monotonic() > deadline):
            raise _timeout_error(timeout) from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if reason in ("not authorized", "authorization denied"):
            reason += ": query sql only reads"
        elif reason in _SQLITE_LIMIT_REASONS:
            reason += f": {_SQLITE_LIMIT_REASONS[reason]}"
        raise TxmdbError(f"query sql: {reason}") from None
    finally:
        watchdog.cancel()
        watchdog.join()  # never interrupt the connection once it is handed back
        con.rollback()
        con.set_progress_handler(None, 0)
        con.set_authorizer(None)
        for limit, value in saved.items():
            con.setlimit(limit, value)


# --------------------------------------------------------------------------- PostgreSQL


def _run_postgresql(pg, text: str, timeout: float, max_rows: int, max_bytes: int, max_cells: int | None):
    import psycopg
    from psycopg import sql

    pg.rollback()
    pg.read_only = True  # psycopg opens the transaction with BEGIN READ ONLY
    try:
        with pg.cursor() as cur:
            _set_limits(cur, timeout)
            guard = _reporting_guard(cur)
            cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(guard.role)))
            names, types = _describe(pg, cur, text)
        return names, *_fetch(pg, guard, text, types, max_rows, max_bytes, max_cells)
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.errors.QueryCanceled) and "statement timeout" in str(exc):
            raise _timeout_error(timeout) from None
        raise TxmdbError(f"query sql: {_pg_reason(exc)}") from None
    finally:
        if not pg.closed:
            pg.rollback()
            pg.read_only = False


def _pg_reason(exc) -> str:
    """The server's one-line message (no DETAIL or CONTEXT lines), or the driver's first line."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    lines = str(exc).strip().splitlines()
    return primary or (lines[0] if lines else type(exc).__name__)


def _set_limits(cur, timeout: float) -> None:
    """Server-side limits for this transaction only: time, idle time, and a dead client.

    A query can change settings for the rest of its transaction, but not the timeout of its
    own statement: the server arms that when the statement starts.
    """
    ms = max(1, int(timeout * 1000))
    # The name shows in pg_stat_activity, so an admin sees which sessions are query sql.
    cur.execute("SELECT set_config('application_name', 'txmdb query sql', true),"
                " set_config('statement_timeout', %s, true),"
                " set_config('lock_timeout', %s, true),"
                " set_config('idle_in_transaction_session_timeout', %s, true),"
                " set_config('tcp_keepalives_idle', '10', true),"
                " set_config('tcp_keepalives_interval', '5', true),"
                " set_config('tcp_keepalives_count', '3', true)", [str(ms), str(ms), str(ms)])
    if cur.connection.info.server_version >= 140000:
        # The server polls the socket while the statement runs and stops it once the client is gone.
        cur.execute("SELECT set_config('client_connection_check_interval', '1000', true)")


@dataclass(frozen=True)
class _Guard:
    schema: str
    role: str


_CHECK_SESSION = """
SELECT session_user::text, r.rolsuper OR current_setting('is_superuser') = 'on',
       array(SELECT d FROM unnest(%(forbidden)s::text[]) AS d
             WHERE CASE WHEN to_regrole(d) IS NULL THEN false
                        ELSE pg_has_role(session_user, d, 'MEMBER') OR pg_has_role(current_user, d, 'MEMBER') END),
       current_schema(),
       (SELECT pg_get_userbyid(c.relowner) FROM pg_class c
         WHERE c.oid = to_regclass(quote_ident(current_schema()) || '.alembic_version')),
       current_database()::text
FROM pg_roles r WHERE r.rolname = session_user
"""


def _beyond_catalogue(role: str, guard: str) -> str:
    """SQL for where role ``role`` (an oid expression) holds rights or owns objects beyond
    reading the current schema and owning its guard function ``guard`` (an oid expression,
    may be NULL): an array of places, such as ``database "x"`` or ``schema "y"``.

    pg_shdepend records, cluster-wide, every object a role owns and every grant it holds.
    Memberships are checked on their own.
    """
    return f"""ARRAY(SELECT DISTINCT place FROM (
  SELECT CASE
    WHEN d.dbid = 0 AND d.classid = 'pg_database'::regclass AND d.objid = db.oid THEN NULL
    WHEN d.dbid = 0 AND d.classid = 'pg_database'::regclass
      THEN 'database ' || quote_ident((SELECT datname FROM pg_database WHERE oid = d.objid))
    WHEN d.dbid = 0 THEN 'the cluster (a tablespace or setting)'
    WHEN d.dbid <> db.oid THEN 'database ' || quote_ident((SELECT datname FROM pg_database WHERE oid = d.dbid))
    WHEN d.deptype = 'o' AND d.classid = 'pg_proc'::regclass AND d.objid = {guard} THEN NULL
    WHEN n.nspname = current_schema() AND d.deptype <> 'o' THEN NULL
    WHEN n.nspname = current_schema() THEN 'objects it owns in schema ' || quote_ident(n.nspname)
    WHEN n.nspname IS NOT NULL THEN 'schema ' || quote_ident(n.nspname)
    ELSE 'database ' || quote_ident(db.datname) || ' outside its schemas'
  END AS place
  FROM pg_shdepend d
  JOIN pg_database db ON db.datname = current_database()
  LEFT JOIN pg_namespace n ON n.oid = CASE d.classid
      WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = d.objid)
      WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = d.objid)
      WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = d.objid)
      WHEN 'pg_namespace'::regclass THEN d.objid
      WHEN 'pg_default_acl'::regclass THEN (SELECT defaclnamespace FROM pg_default_acl WHERE oid = d.objid)
    END
  WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = {role}) AS places
 WHERE place IS NOT NULL ORDER BY 1)"""


_CHECK_GUARD = """
SELECT r.rolname::text, p.prosecdef, p.provolatile, p.prosrc, l.lanname,
       r.rolcanlogin, r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls,
       EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid),
       EXISTS (SELECT 1 FROM pg_class c
                WHERE c.relnamespace = p.pronamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
                  AND (c.relowner = r.oid
                       OR CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(r.oid, c.oid, 'USAGE,UPDATE')
                               ELSE has_table_privilege(r.oid, c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')
                          END)),
       pg_has_role(session_user, r.oid, %(switch)s),
       p.proconfig = ARRAY['search_path=pg_catalog, ' || quote_ident(current_schema()) || ', pg_temp'],
       """ + _beyond_catalogue("r.oid", "p.oid") + """
FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner JOIN pg_language l ON l.oid = p.prolang
WHERE p.oid = to_regprocedure(quote_ident(current_schema()) || '.' || %(name)s || '(text,bigint,bigint)')
"""


def _reporting_guard(cur) -> _Guard:
    """The guard function and its role, after checking the session and the role may run user SQL."""
    cur.execute(_CHECK_SESSION, {"forbidden": list(FORBIDDEN_ROLES)})
    user, superuser, forbidden, schema, owner, database = cur.fetchone()
    # PostgreSQL 16 tells membership from the right to SET ROLE.
    switch = "SET" if cur.connection.info.server_version >= 160000 else "MEMBER"
    cur.execute(_CHECK_GUARD, {"name": GUARD_FUNCTION, "switch": switch})
    found = cur.fetchone()
    role = found[0] if found else default_reporting_role(database, schema or "public")
    use = (f'connect as the catalogue owner "{owner}"' if owner and owner != user
           else "connect as the catalogue owner, or another role without these rights")
    if superuser:
        raise TxmdbError(f'query sql will not run as "{user}", a superuser: {use}; '
                         f'queries then run as the reporting role "{role}"')
    if forbidden:
        raise TxmdbError(f'query sql will not run as "{user}", a member of {", ".join(forbidden)}: {use}; '
                         f'queries then run as the reporting role "{role}"')
    if schema is None:
        raise TxmdbError("query sql: the session has no current schema (check search_path)")
    if found is None:
        raise TxmdbError(f'query sql needs the reporting role: run `txmdb db reporting-role` once, as the '
                         f'catalogue owner or a database admin (no {schema}.{GUARD_FUNCTION} here)')
    _, secdef, volatility, body, language, login, powers, member_of, can_write, can_switch, path_ok, beyond = found
    again = f"run `txmdb db reporting-role {role}` again"
    problem, remedy = (
        ("can log in", f"an admin must make it NOLOGIN (txmdb never changes a role that can log in), then {again}")
        if login else
        ("has superuser or role-creating powers", again) if powers else
        ("is a member of other roles", again) if member_of else
        ("can write catalogue tables", again) if can_write else
        (f"has rights beyond reading this catalogue ({', '.join(beyond)})",
         "give the catalogue a role of its own: run `txmdb db reporting-role NAME` with a new NAME") if beyond else
        (f"has a changed {GUARD_FUNCTION} function", again)
        if (secdef, volatility, body, language, path_ok) != (True, "s", _GUARD_BODY, "plpgsql", True)
        else (None, None)
    )
    if problem:
        raise TxmdbError(f'query sql refused: the reporting role "{role}" {problem}; {remedy}')
    if not can_switch:
        raise TxmdbError(f'query sql runs queries as the reporting role "{role}", which "{user}" is not a member of: '
                         f'connect as the catalogue owner, or run `txmdb db reporting-role {role}` as "{user}"')
    return _Guard(schema, role)


def _describe(pg, cur, text: str) -> tuple[list[str], list[str]]:
    """The query's column names and types, from a protocol Parse + Describe: nothing runs.

    The extended protocol carries one statement: the server refuses a second one here.
    """
    import psycopg
    from psycopg import pq

    encoding = pg.info.encoding
    prepared = pg.pgconn.prepare(b"", text.encode(encoding))
    if prepared.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(prepared, encoding=encoding)
    described = pg.pgconn.describe_prepared(b"")
    if described.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(described, encoding=encoding)
    if described.nfields == 0:
        raise TxmdbError("query sql: the statement returns no rows (only queries run here)")
    names = [described.fname(i).decode(encoding) for i in range(described.nfields)]
    oids = [described.ftype(i) for i in range(described.nfields)]
    cur.execute("SELECT format_type(u.o, NULL), t.typtype = 'p' AND u.o <> 'record'::regtype"
                " FROM unnest(%s::oid[]) WITH ORDINALITY AS u(o, i) JOIN pg_type t ON t.oid = u.o ORDER BY u.i", [oids])
    types = cur.fetchall()
    for name, (type_name, pseudo) in zip(names, types):
        if pseudo:
            raise TxmdbError(f"query sql: column {name!r} is of type {type_name}, which no result can hold; "
                             f"cast it, e.g. to text")
    return names, [t for t, _ in types]


def _fetch(pg, guard: _Guard, text: str, types: list[str], max_rows: int, max_bytes: int,
           max_cells: int | None) -> tuple[list, bool]:
    """The guard's rows through a server-side cursor, in batches; one more than the cap says it cut."""
    from psycopg import sql

    # Columns are named c1, c2… here: user names may repeat, which a column list refuses.
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(f"c{i}"), sql.SQL(t))
                                 for i, t in enumerate(types, 1))
    call = sql.SQL("SELECT * FROM {}.{}(%s, %s, %s) AS t({})").format(
        sql.Identifier(guard.schema), sql.Identifier(GUARD_FUNCTION), columns)
    with pg.cursor(name="txmdb_query_sql") as cur:
        cur.execute(call, [text, max_rows + 1, max_bytes])
        # The guard caps bytes on the server; the client counts them again, as it receives them.
        return _collect(cur.fetchmany, max_rows, _PG_BATCH_ROWS, max_bytes, max_cells)


# --------------------------------------------------------------------------- the reporting role


def default_reporting_role(database: str, schema: str) -> str:
    """The reporting role of the catalogue in ``schema`` of ``database``: ``txmdb_reader_<database>``,
    then ``_<schema>`` unless the schema is public. A name longer than PostgreSQL's 63 bytes
    is cut and ends in a hash of both, so two long names still differ.
    """
    import hashlib

    name = f"{REPORTING_ROLE_PREFIX}_{database}" + ("" if schema == "public" else f"_{schema}")
    if len(name.encode()) <= MAX_ROLE_NAME_BYTES:
        return name
    digest = hashlib.sha256(f"{database}\0{schema}".encode()).hexdigest()[:8]
    return name.encode()[:MAX_ROLE_NAME_BYTES - 9].decode(errors="ignore") + "_" + digest


def _role_mark(database: str, schema: str) -> str:
    """The comment on a reporting role naming its catalogue: how txmdb knows a role is its own."""
    return _ROLE_MARK + json.dumps({"database": database, "schema": schema})


_ROLE_MARK = "txmdb reporting role of "


def _marked_catalogue(comment: str | None) -> str | None:
    """The catalogue a role's comment marks it for, in words; None for a comment of no txmdb role."""
    try:
        place = json.loads(comment.removeprefix(_ROLE_MARK)) if comment and comment.startswith(_ROLE_MARK) else None
        return f'database "{place["database"]}", schema "{place["schema"]}"'
    except (ValueError, TypeError, KeyError):
        return None


def ensure_reporting_role(url, name: str | None = None) -> ReportingRole:
    """Create or update the read-only reporting role of the PostgreSQL catalogue at ``url``.

    The role cannot log in and holds USAGE on the catalogue's schema, SELECT on its tables
    (and, through default privileges, on the tables the catalogue owner creates later), and
    nothing else. It owns the guard function query sql runs queries through, and the
    catalogue owner (and the user running this, unless a superuser) become its members so
    that they can switch to it. Idempotent; one transaction.

    ``name`` defaults to :func:`default_reporting_role`: roles are cluster-wide, and each
    catalogue has its own. An existing role is taken over only when it is this catalogue's
    reporting role (marked so by its comment, or owning the guard function here), cannot log
    in, is no superuser, and has no rights or members beyond this catalogue; nothing changes
    otherwise. The catalogue's earlier reporting role, if another, loses its rights here.
    """
    from sqlalchemy.engine import URL

    from txmdb.db.engine import resolve_url

    resolved = url if isinstance(url, URL) else resolve_url(url)
    if resolved.get_backend_name() != "postgresql":
        raise TxmdbError("db reporting-role is for PostgreSQL catalogues; on SQLite query sql opens the file "
                         "read-only and needs no role")
    if name is not None:
        _check_role_name(name)
    with _driver_connection(resolved, read_only=False) as connection:
        return _setup_role(connection, name)


def _check_role_name(name: str) -> None:
    if not name or "\x00" in name or name.lower().startswith("pg_"):
        raise TxmdbError(f"reporting role name {name!r} is empty or reserved (pg_…)")
    if len(name.encode()) > MAX_ROLE_NAME_BYTES:
        raise TxmdbError(f"reporting role name {name!r} is longer than {MAX_ROLE_NAME_BYTES} bytes, "
                         f"which PostgreSQL would cut short")


def _setup_role(pg, name: str | None) -> ReportingRole:
    import psycopg

    pg.rollback()
    try:
        with pg.transaction(), pg.cursor() as cur:
            return _grant_reading(cur, name)
    except psycopg.Error as exc:
        label = f' "{name}"' if name else ""
        raise TxmdbError(f"db reporting-role{label}: {_pg_reason(exc)}") from None


_WHO = """
SELECT current_user::text, current_schema(), r.rolsuper, pg_get_userbyid(d.datdba),
       (SELECT pg_get_userbyid(c.relowner) FROM pg_class c
         WHERE c.oid = to_regclass(quote_ident(current_schema()) || '.alembic_version')),
       current_database()::text,
       (SELECT pg_get_userbyid(p.proowner) FROM pg_proc p
         WHERE p.oid = to_regprocedure(quote_ident(current_schema()) || '.' || %(guard)s || '(text,bigint,bigint)'))
FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()
"""

_EXISTING_ROLE = """
SELECT r.rolsuper, r.rolcanlogin, shobj_description(r.oid, 'pg_authid'),
       p.proowner IS NOT DISTINCT FROM r.oid,
       """ + _beyond_catalogue("r.oid", "p.oid") + """,
       ARRAY(SELECT pg_get_userbyid(m.member) FROM pg_auth_members m WHERE m.roleid = r.oid ORDER BY 1),
       r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls
FROM pg_roles r
LEFT JOIN pg_proc p ON p.oid = to_regprocedure(quote_ident(current_schema()) || '.' || %(guard)s || '(text,bigint,bigint)')
WHERE r.rolname = %(name)s
"""


def _grant_reading(cur, name: str | None) -> ReportingRole:
    from psycopg import sql

    cur.execute(_WHO, {"guard": GUARD_FUNCTION})
    me, schema, superuser, db_owner, catalogue_owner, database, previous = cur.fetchone()
    if schema is None:
        raise TxmdbError("db reporting-role: the session has no current schema (check search_path)")
    name = name or default_reporting_role(database, schema)
    owner = catalogue_owner or (db_owner if superuser else me)
    if name in (me, owner):
        raise TxmdbError(f'db reporting-role: the reporting role must not be "{name}", which '
                         f'{"runs this command" if name == me else "owns the catalogue"}')
    members = tuple(dict.fromkeys([owner] + ([] if superuser else [me])))
    role, s = sql.Identifier(name), sql.Identifier(schema)
    run = lambda statement, *args: cur.execute(sql.SQL(statement).format(*args))  # noqa: E731
    cur.execute(_EXISTING_ROLE, {"guard": GUARD_FUNCTION, "name": name})
    existing = cur.fetchone()
    if existing is None:
        run("CREATE ROLE {} NOLOGIN NOINHERIT", role)
    else:
        _refuse_foreign_role(name, existing[:6], _role_mark(database, schema), members)
        # Only the attributes that differ: changing some of them at all needs a superuser.
        wanted = ("NOINHERIT", "NOCREATEROLE", "NOCREATEDB", "NOREPLICATION", "NOBYPASSRLS")
        change = [word for word, has in zip(wanted, existing[6:]) if has]
        if change:
            run("ALTER ROLE {} " + " ".join(change), role)
        # It reads as itself only: no membership lends it another role's rights.
        cur.execute("SELECT pg_get_userbyid(m.roleid) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
                    " WHERE r.rolname = %s", [name])
        for (granted,) in cur.fetchall():
            run("REVOKE {} FROM {}", sql.Identifier(granted), role)
    run("COMMENT ON ROLE {} IS {}", role, sql.Literal(_role_mark(database, schema)))
    if previous and previous != name:
        # One reporting role per catalogue: the one it replaces reads here no more.
        _revoke_reading(run, s, sql.Identifier(previous), sql.Identifier(owner))
    _revoke_reading(run, s, role, sql.Identifier(owner))
    run("REVOKE ALL ON DATABASE {} FROM {}", sql.Identifier(database), role)
    run("GRANT USAGE ON SCHEMA {} TO {}", s, role)
    run("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}", s, role)
    # Never the web accounts' hashes and key (migration 0008 revokes them from roles made before it).
    cur.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = ANY(%s)", [schema, list(PRIVATE_TABLES)])
    for (table,) in cur.fetchall():
        run("REVOKE ALL ON TABLE {}.{} FROM {}", s, sql.Identifier(table), role)
    run("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}",
        sql.Identifier(owner), s, role)
    # PostgreSQL 16 grants a role's creator membership without SET and INHERIT: ask for both.
    options = " WITH INHERIT TRUE, SET TRUE" if cur.connection.info.server_version >= 160000 else ""
    for member in members:
        run("GRANT {} TO {}" + options, role, sql.Identifier(member))
    _install_guard(cur, schema, name)
    cur.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm') AND has_table_privilege(%s, c.oid, 'SELECT')",
                [schema, name])
    return ReportingRole(name, schema, cur.fetchone()[0], owner, members)


def _refuse_foreign_role(name: str, existing: tuple, mark: str, members: tuple[str, ...]) -> None:
    """Refuse to take over an existing role that is not this catalogue's reporting role.

    Taking one over would strip a user's login or a superuser's powers and hand its rights
    (in other databases too) to the catalogue owner; a role with rights or members beyond
    this catalogue would let other catalogues' users read this one, or this one's read theirs.
    """
    superuser, login, comment, owns_guard, beyond, current_members = existing
    ours = comment == mark or owns_guard
    other = None if ours else _marked_catalogue(comment)
    strangers = [m for m in current_members if m not in members]
    problem = (
        "is a superuser" if superuser else
        "can log in" if login else
        f"is the reporting role of {other}" if other else
        "is not this catalogue's reporting role" if not ours else
        f"has rights beyond reading this catalogue ({', '.join(beyond)})" if beyond else
        "has members other than this catalogue's owner: " + ", ".join(f'"{m}"' for m in strangers)
        if strangers else None
    )
    if problem is None:
        return
    remedy = ("choose another name" if not ours or not (superuser or login) else
              f'an admin can run ALTER ROLE "{name}" NOSUPERUSER NOLOGIN, then this again, or choose another name')
    never = " (txmdb never changes a role that can log in or is a superuser)" if superuser or login else ""
    raise TxmdbError(f'db reporting-role: role "{name}" already exists and {problem}{never}; {remedy}')


def _revoke_reading(run, schema, role, owner) -> None:
    """Take from ``role`` what a reporting role holds in ``schema`` (all are sql.Identifier)."""
    for statement in ("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}", "REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}",
                      "REVOKE ALL ON ALL ROUTINES IN SCHEMA {} FROM {}", "REVOKE ALL ON SCHEMA {} FROM {}"):
        run(statement, schema, role)
    run("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE ALL ON TABLES FROM {}", owner, schema, role)


def _install_guard(cur, schema: str, name: str) -> None:
    """The guard function, owned by the reporting role, executable by it alone."""
    from psycopg import sql

    function = sql.SQL("{}.{}(text, bigint, bigint)").format(sql.Identifier(schema), sql.Identifier(GUARD_FUNCTION))
    role, s = sql.Identifier(name), sql.Identifier(schema)
    # Made afresh, so no earlier owner, grant or setting survives.
    cur.execute(sql.SQL("DROP FUNCTION IF EXISTS {}").format(function))
    # Built-ins first, then the catalogue: a catalogue object never shadows a built-in.
    cur.execute(sql.SQL("CREATE FUNCTION {}.{}(query text, max_rows bigint, max_bytes bigint)"
                        " RETURNS SETOF record LANGUAGE plpgsql STABLE SECURITY DEFINER"
                        " SET search_path = pg_catalog, {}, pg_temp AS {}")
                .format(s, sql.Identifier(GUARD_FUNCTION), s, sql.Literal(_GUARD_BODY)))
    # A new owner needs CREATE on the schema at the moment of the change only.
    cur.execute(sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(s, role))
    cur.execute(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(function, role))
    cur.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(s, role))
    cur.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(function))
    cur.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(function, role))
