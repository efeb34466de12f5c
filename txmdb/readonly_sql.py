"""``query sql``: run one user query on the catalogue; it cannot write, by construction, and it is bounded.

Nothing here parses SQL to decide what is safe; the database engines decide.

SQLite: the file is opened ``mode=ro`` with ``PRAGMA query_only``, an authorizer denies every
action but reading, the driver prepares exactly one statement, and a progress handler stops
the statement at the time limit.

PostgreSQL: a guard function installed by :func:`ensure_reporting_role` runs the query. The
session
 1. refuses superusers and members of the server-file and signal roles;
 2. opens a ``READ ONLY`` transaction, always rolled back, with a server-side statement timeout,
    a dead-client check and keepalives;
 3. switches to the reporting role (``SET LOCAL ROLE``), a NOLOGIN role with SELECT only;
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

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from txmdb.errors import TxmdbError

if TYPE_CHECKING:
    import pandas as pd

from txmdb.vocabulary import (  # noqa: F401  (the CLI's defaults, re-exported)
    DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, MAX_RESULT_BYTES, REPORTING_ROLE, SQLITE_MAX_VALUE_BYTES,
)

GUARD_FUNCTION = "txmdb_reporting_query"
# Roles that reach beyond the database (files, programs) or into other sessions.
FORBIDDEN_ROLES = ("pg_execute_server_program", "pg_write_server_files", "pg_read_server_files", "pg_signal_backend")
_BATCH_ROWS = 1000
_SQLITE_PROGRESS_STEPS = 1000

# One row per FETCH (a FOR loop would read ten ahead): the byte cap stops a query whose rows
# grow, before the next, larger row is made.
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
    size := size + pg_column_size(r);
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
                     max_rows: int = DEFAULT_MAX_ROWS) -> SqlResult:
    """Run one read-only query against the catalogue at ``url``; at most ``max_rows`` rows.

    Raises TxmdbError (one line) for anything the database refuses or that fails, and
    :class:`QueryTimeout` when the statement runs longer than ``timeout`` seconds.
    """
    import pandas as pd
    from sqlalchemy.engine import URL

    from txmdb.db.engine import resolve_url

    if not timeout > 0:
        raise TxmdbError(f"query sql: time limit {timeout} s is not positive")
    if max_rows < 1:
        raise TxmdbError(f"query sql: row cap {max_rows} is not a positive number of rows")
    if "\x00" in text:
        raise TxmdbError("query sql: the statement holds a NUL character")
    resolved = url if isinstance(url, URL) else resolve_url(url)
    run = _run_sqlite if resolved.get_backend_name() == "sqlite" else _run_postgresql
    with _driver_connection(resolved, read_only=True) as connection:
        names, rows, cut = run(connection, text, timeout, max_rows)
    return SqlResult(pd.DataFrame(rows, columns=_unique_names(names)), cut)


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


def _timeout_error(timeout: float) -> QueryTimeout:
    return QueryTimeout(f"query sql: stopped at the time limit of {timeout:g} s")


def _collect(fetchmany, max_rows: int, size_of) -> tuple[list, bool]:
    """Up to ``max_rows`` rows in batches (never all at once); True if more were there."""
    rows: list = []
    size = 0
    while len(rows) <= max_rows:
        batch = fetchmany(min(_BATCH_ROWS, max_rows + 1 - len(rows)))
        if not batch:
            break
        size += sum(map(size_of, batch))
        if size > MAX_RESULT_BYTES:
            raise TxmdbError(f"query sql: the result is larger than {MAX_RESULT_BYTES} bytes; select fewer rows or columns")
        rows.extend(batch)
    cut = len(rows) > max_rows
    return rows[:max_rows], cut


# --------------------------------------------------------------------------- SQLite


def _sqlite_authorizer(action, _arg1, arg2, *_rest) -> int:
    import sqlite3

    if action == sqlite3.SQLITE_FUNCTION and arg2 in ("load_extension", "fts3_tokenizer"):
        return sqlite3.SQLITE_DENY
    allowed = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
    return sqlite3.SQLITE_OK if action in allowed else sqlite3.SQLITE_DENY


def _sqlite_row_size(row) -> int:
    return sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row)


def _run_sqlite(con, text: str, timeout: float, max_rows: int):
    import sqlite3

    # Three locks, each enough: mode=ro (the engine), query_only, and an authorizer for reading only.
    con.execute("PRAGMA query_only = ON")
    con.set_authorizer(_sqlite_authorizer)
    length_limit = con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, SQLITE_MAX_VALUE_BYTES)
    deadline = time.monotonic() + timeout
    con.set_progress_handler(lambda: int(time.monotonic() > deadline), _SQLITE_PROGRESS_STEPS)
    try:
        # The driver prepares one statement and refuses a second ("one statement at a time").
        cursor = con.execute(text)
        if cursor.description is None:
            raise TxmdbError("query sql: the statement returns no rows (only queries run here)")
        names = [d[0] for d in cursor.description]
        rows, cut = _collect(cursor.fetchmany, max_rows, _sqlite_row_size)
        return names, [tuple(r) for r in rows], cut
    except sqlite3.Error as exc:
        if time.monotonic() > deadline and "interrupt" in str(exc):
            raise _timeout_error(timeout) from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if reason in ("not authorized", "authorization denied"):
            reason += ": query sql only reads"
        raise TxmdbError(f"query sql: {reason}") from None
    finally:
        con.rollback()
        con.set_progress_handler(None, 0)
        con.set_authorizer(None)
        con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, length_limit)


# --------------------------------------------------------------------------- PostgreSQL


def _run_postgresql(pg, text: str, timeout: float, max_rows: int):
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
        return names, *_fetch(pg, guard, text, types, max_rows)
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
         WHERE c.oid = to_regclass(quote_ident(current_schema()) || '.alembic_version'))
FROM pg_roles r WHERE r.rolname = session_user
"""

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
       p.proconfig = ARRAY['search_path=pg_catalog, ' || quote_ident(current_schema()) || ', pg_temp']
FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner JOIN pg_language l ON l.oid = p.prolang
WHERE p.oid = to_regprocedure(quote_ident(current_schema()) || '.' || %(name)s || '(text,bigint,bigint)')
"""


def _reporting_guard(cur) -> _Guard:
    """The guard function and its role, after checking the session and the role may run user SQL."""
    cur.execute(_CHECK_SESSION, {"forbidden": list(FORBIDDEN_ROLES)})
    user, superuser, forbidden, schema, owner = cur.fetchone()
    # PostgreSQL 16 tells membership from the right to SET ROLE.
    switch = "SET" if cur.connection.info.server_version >= 160000 else "MEMBER"
    cur.execute(_CHECK_GUARD, {"name": GUARD_FUNCTION, "switch": switch})
    found = cur.fetchone()
    role = found[0] if found else REPORTING_ROLE
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
    _, secdef, volatility, body, language, login, powers, member_of, can_write, can_switch, path_ok = found
    problem = (
        "can log in" if login else
        "has superuser or role-creating powers" if powers else
        "is a member of other roles" if member_of else
        "can write catalogue tables" if can_write else
        f"has a changed {GUARD_FUNCTION} function"
        if (secdef, volatility, body, language, path_ok) != (True, "s", _GUARD_BODY, "plpgsql", True)
        else None
    )
    if problem:
        raise TxmdbError(f'query sql refused: the reporting role "{role}" {problem}; '
                         f'run `txmdb db reporting-role {role}` again')
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


def _fetch(pg, guard: _Guard, text: str, types: list[str], max_rows: int) -> tuple[list, bool]:
    """The guard's rows through a server-side cursor, in batches; one more than the cap says it cut."""
    from psycopg import sql

    # Columns are named c1, c2… here: user names may repeat, which a column list refuses.
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(f"c{i}"), sql.SQL(t))
                                 for i, t in enumerate(types, 1))
    call = sql.SQL("SELECT * FROM {}.{}(%s, %s, %s) AS t({})").format(
        sql.Identifier(guard.schema), sql.Identifier(GUARD_FUNCTION), columns)
    with pg.cursor(name="txmdb_query_sql") as cur:
        cur.execute(call, [text, max_rows + 1, MAX_RESULT_BYTES])
        # The guard caps bytes on the server; rows are counted, not sized, here.
        return _collect(cur.fetchmany, max_rows, lambda _row: 0)


# --------------------------------------------------------------------------- the reporting role


def ensure_reporting_role(url, name: str = REPORTING_ROLE) -> ReportingRole:
    """Create or update the read-only reporting role of the PostgreSQL catalogue at ``url``.

    The role cannot log in and holds USAGE on the catalogue's schema, SELECT on its tables
    (and, through default privileges, on the tables the catalogue owner creates later), and
    nothing else. It owns the guard function query sql runs queries through, and the
    catalogue owner (and the user running this, unless a superuser) become its members so
    that they can switch to it. Idempotent; one transaction.
    """
    from sqlalchemy.engine import URL

    from txmdb.db.engine import resolve_url

    resolved = url if isinstance(url, URL) else resolve_url(url)
    if resolved.get_backend_name() != "postgresql":
        raise TxmdbError("db reporting-role is for PostgreSQL catalogues; on SQLite query sql opens the file "
                         "read-only and needs no role")
    if not name or name.lower().startswith("pg_"):
        raise TxmdbError(f"reporting role name {name!r} is empty or reserved (pg_…)")
    with _driver_connection(resolved, read_only=False) as connection:
        return _setup_role(connection, name)


def _setup_role(pg, name: str) -> ReportingRole:
    import psycopg

    pg.rollback()
    try:
        with pg.transaction(), pg.cursor() as cur:
            return _grant_reading(cur, name)
    except psycopg.Error as exc:
        raise TxmdbError(f'db reporting-role "{name}": {_pg_reason(exc)}') from None


def _grant_reading(cur, name: str) -> ReportingRole:
    from psycopg import sql

    cur.execute("SELECT current_user::text, current_schema(), r.rolsuper, pg_get_userbyid(d.datdba),"
                " (SELECT pg_get_userbyid(c.relowner) FROM pg_class c"
                "   WHERE c.oid = to_regclass(quote_ident(current_schema()) || '.alembic_version'))"
                " FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()")
    me, schema, superuser, db_owner, catalogue_owner = cur.fetchone()
    if schema is None:
        raise TxmdbError("db reporting-role: the session has no current schema (check search_path)")
    owner = catalogue_owner or (db_owner if superuser else me)
    if name in (me, owner):
        raise TxmdbError(f'db reporting-role: the reporting role must not be "{name}", which '
                         f'{"runs this command" if name == me else "owns the catalogue"}')
    role, s = sql.Identifier(name), sql.Identifier(schema)
    run = lambda statement, *args: cur.execute(sql.SQL(statement).format(*args))  # noqa: E731
    cur.execute("SELECT rolsuper, rolcanlogin, rolinherit, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
                " FROM pg_roles WHERE rolname = %s", [name])
    attributes = cur.fetchone()
    if attributes is None:
        run("CREATE ROLE {} NOLOGIN NOINHERIT", role)
    else:
        # Only the attributes that differ: changing some of them at all needs a superuser.
        wanted = ("NOSUPERUSER", "NOLOGIN", "NOINHERIT", "NOCREATEROLE", "NOCREATEDB", "NOREPLICATION", "NOBYPASSRLS")
        change = [word for word, has in zip(wanted, attributes) if has]
        if change:
            run("ALTER ROLE {} " + " ".join(change), role)
        # It reads as itself only: no membership lends it another role's rights.
        cur.execute("SELECT pg_get_userbyid(m.roleid) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
                    " WHERE r.rolname = %s", [name])
        for (granted,) in cur.fetchall():
            run("REVOKE {} FROM {}", sql.Identifier(granted), role)
    for statement in ("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}", "REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}",
                      "REVOKE ALL ON ALL ROUTINES IN SCHEMA {} FROM {}", "REVOKE ALL ON SCHEMA {} FROM {}"):
        run(statement, s, role)
    run("REVOKE ALL ON DATABASE {} FROM {}", sql.Identifier(cur.connection.info.dbname), role)
    run("GRANT USAGE ON SCHEMA {} TO {}", s, role)
    run("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}", s, role)
    run("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}",
        sql.Identifier(owner), s, role)
    members = tuple(dict.fromkeys([owner] + ([] if superuser else [me])))
    # PostgreSQL 16 grants a role's creator membership without SET and INHERIT: ask for both.
    options = " WITH INHERIT TRUE, SET TRUE" if cur.connection.info.server_version >= 160000 else ""
    for member in members:
        run("GRANT {} TO {}" + options, role, sql.Identifier(member))
    _install_guard(cur, schema, name)
    cur.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm') AND has_table_privilege(%s, c.oid, 'SELECT')",
                [schema, name])
    return ReportingRole(name, schema, cur.fetchone()[0], owner, members)


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
