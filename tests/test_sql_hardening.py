"""``query sql`` cannot write, by construction, and cannot exhaust the server (issue 9 §2).

Every string of the issue and the other tricks below run through the real CLI on SQLite and on
a real PostgreSQL server: each fails with one line (exit 1) or returns rows, and afterwards the
catalogue is byte-for-byte (SQLite: the file and its WAL) or row-for-row (PostgreSQL: every
table and sequence) what it was. On PostgreSQL the catalogue belongs to a login role without
superuser rights and query sql runs as the reporting role `txmdb db reporting-role` set up
(tests/conftest.py), as in a lab.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import PG_OWNER
from txmdb.readonly_sql import GUARD_FUNCTION, default_reporting_role

NOTE_CUT = "note: the result was cut at {} rows (--max-rows)"
UPDATE = "UPDATE samples SET notes = 'x' WHERE id = 1"

# (statement, expected on SQLite, expected on PostgreSQL): "error" is exit 1 with one line,
# "rows" is exit 0 with rows, None is either (it depends on the engine, never a write).
# {tmp} is the test's folder: nothing may appear there.
COMMON = [
    # The strings: a splitter missed these; the engines refuse stacked statements.
    (f"SELECT E'\\''; COMMIT; {UPDATE}; SELECT 'y'", "error", "error"),
    (f"SELECT E'\\\\''; COMMIT; {UPDATE}; SELECT 'y'", "error", "error"),
    (f"SELECT $a1$;$a1$; COMMIT; {UPDATE}", "error", "error"),
    (f"SELECT 1 AS x$a$; COMMIT; {UPDATE}; SELECT $a$ AS y", "error", "error"),
    (f"SELECT 1; COMMIT; {UPDATE}", "error", "error"),
    (f"COMMIT; {UPDATE}", "error", "error"),
    (f"ROLLBACK; {UPDATE}", "error", "error"),
    (f"END; {UPDATE}", "error", "error"),
    # Other quoting: nested comments, U&'' strings, ';' in comments, quotes and identifiers.
    (f"SELECT 1 /* /* */ ; */; {UPDATE}", "error", "error"),
    (f"SELECT U&'\\0027'; {UPDATE}", "error", "error"),
    (f"SELECT 'a'';'; {UPDATE}", "error", "error"),
    (f'SELECT 1 AS "a"";"; {UPDATE}', "error", "error"),
    (f"SELECT 1 -- ; {UPDATE}", "rows", "rows"),
    (f"SELECT 1 AS a /* ; {UPDATE} */", "rows", "rows"),
    (f"SELECT ';' AS a, 'b;' AS \"c;\"; -- ; {UPDATE}", "rows", "rows"),
    (f"SELECT $a1$ ; {UPDATE} $a1$ AS s", "error", "rows"),
    ("SELECT U&'d\\0061t\\+000061' AS s", "error", "rows"),
    ("SELECT E'\\'' AS s", "error", "rows"),
    # Transaction and session control: never run.
    ("BEGIN", "error", "error"),
    ("COMMIT", "error", "error"),
    ("ROLLBACK", "error", "error"),
    ("SET ROLE txmdb_owner", "error", "error"),
    ("RESET ROLE", "error", "error"),
    ("SET SESSION AUTHORIZATION postgres", "error", "error"),
    ("SET default_transaction_read_only = off", "error", "error"),
    ("SET TRANSACTION READ WRITE", "error", "error"),
    (f"DO $$BEGIN {UPDATE}; END$$", "error", "error"),
    (f"PREPARE p AS {UPDATE}", "error", "error"),
    ("EXECUTE p", "error", "error"),
    ("DEALLOCATE ALL", "error", "error"),
    ("SELECT set_config('default_transaction_read_only', 'off', false) AS v", "error", "rows"),
    ("SELECT set_config('transaction_read_only', 'off', true) AS v", "error", "error"),
    ("SELECT set_config('role', 'none', true) AS v", "error", "error"),
    ("SELECT set_config('session_authorization', 'postgres', true) AS v", "error", "error"),
    # Writes, direct and through functions.
    ("INSERT INTO samples (name, meta, created_at) VALUES ('evil', '{}', '2020-01-01') RETURNING id", "error", "error"),
    ("UPDATE samples SET notes = 'x' RETURNING id", "error", "error"),
    ("WITH gone AS (DELETE FROM samples RETURNING *) SELECT * FROM gone", "error", "error"),
    ("EXPLAIN ANALYZE DELETE FROM samples", "error", "error"),
    ("EXPLAIN DELETE FROM samples", "error", "error"),
    ("DELETE FROM samples", "error", "error"),
    ("DROP TABLE samples", "error", "error"),
    ("ALTER TABLE samples ADD COLUMN evil integer", "error", "error"),
    ("CREATE TABLE evil (a integer)", "error", "error"),
    ("CREATE TEMP TABLE evil AS SELECT 1", "error", "error"),
    ("CREATE VIEW evil AS SELECT 1", "error", "error"),
    ("SELECT * FROM samples FOR UPDATE", "error", "error"),
    ("SELECT * FROM samples FOR SHARE", "error", "error"),
    ("SELECT nextval('samples_id_seq')", "error", "error"),
    ("SELECT setval('samples_id_seq', 100)", "error", "error"),
    ("SELECT lo_import('/etc/passwd')", "error", "error"),
    # PostgreSQL lets any role create a large object, even in a read-only transaction: it lives
    # in the transaction that is rolled back (the snapshot counts large objects).
    ("SELECT lo_create(0)", "error", None),
    ("SELECT lo_from_bytea(0, 'x')", "error", None),
    ("SELECT lo_export(1, '{tmp}/pwned')", "error", "error"),
    ("SELECT pg_try_advisory_lock(1) AS locked", "error", "rows"),
    ("SELECT pg_advisory_xact_lock(2)::text AS locked", "error", "rows"),
    ("SELECT pg_advisory_lock(3)", "error", "error"),
    ("SELECT query_to_xml('UPDATE samples SET notes = ''x''', true, false, '')", "error", "error"),
    ("COPY (SELECT 1) TO PROGRAM 'touch {tmp}/pwned'", "error", "error"),
    ("COPY samples TO '{tmp}/pwned'", "error", "error"),
    ("SELECT pg_read_file('/etc/passwd')", "error", "error"),
    ("SELECT pg_reload_conf()", "error", "error"),
    ("SELECT pg_rotate_logfile()", "error", "error"),
    ("SELECT pg_notify('c', 'x')", "error", "error"),
    ("SELECT * FROM pg_authid", "error", "error"),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "error", "error"),
    ("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()", "error", "error"),
    ("SELECT set_config('role', 'none', true), pg_terminate_backend(pid) FROM pg_stat_activity", "error", "error"),
    ("TRUNCATE samples", "error", "error"),
    ("LOCK TABLE samples", "error", "error"),
    ("VACUUM", "error", "error"),
    ("ANALYZE", "error", "error"),
    ("CHECKPOINT", "error", "error"),
    ("DISCARD ALL", "error", "error"),
    ("LISTEN c", "error", "error"),
    ("NOTIFY c", "error", "error"),
    ("GRANT ALL ON samples TO PUBLIC", "error", "error"),
    ("CREATE ROLE evil SUPERUSER", "error", "error"),
    ("ALTER ROLE CURRENT_USER LOGIN", "error", "error"),
    # Reading is fine.
    ("SELECT * FROM samples;", "rows", "rows"),
    ("VALUES (1)", "rows", "rows"),
    ("TABLE samples", "error", "rows"),
    ("SELECT pg_sleep(60)", "error", "error"),
]
SQLITE_ONLY = [
    ("ATTACH DATABASE '{tmp}/evil.db' AS evil", "error"),
    ("SELECT 1; ATTACH DATABASE '{tmp}/evil.db' AS evil", "error"),
    ("DETACH DATABASE main", "error"),
    ("PRAGMA query_only = OFF", "error"),
    ("PRAGMA writable_schema = ON", "error"),
    ("PRAGMA journal_mode = DELETE", "error"),
    ("PRAGMA user_version = 7", "error"),
    ("PRAGMA wal_checkpoint(TRUNCATE)", "error"),
    ("VACUUM INTO '{tmp}/evil.db'", "error"),
    ("REINDEX", "error"),
    ("SELECT load_extension('{tmp}/evil')", "error"),
    ("SELECT writefile('{tmp}/evil.db', 'x')", "error"),
    ("SELECT fts3_tokenizer('simple')", "error"),
    ("BEGIN IMMEDIATE", "error"),
    ("SAVEPOINT a", "error"),
    ("CREATE TEMP TRIGGER t AFTER INSERT ON samples BEGIN SELECT 1; END", "error"),
    ("REPLACE INTO samples (id, name, meta, created_at) VALUES (1, 'evil', '{}', '2020-01-01')", "error"),
]


# --------------------------------------------------------------------------- helpers


def _backend(cli) -> str:
    return "sqlite" if cli.url.startswith("sqlite") else "postgresql"


def _pg(url: str, **kwargs):
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
                           **kwargs)


def _admin_url(request, url: str) -> str:
    """The same database as ``url``, as the test server's superuser."""
    from sqlalchemy.engine import make_url

    server = request.getfixturevalue("pg_server")
    admin = make_url(server if isinstance(server, str) else server.url)
    return make_url(url).set(username=admin.username, password=admin.password).render_as_string(hide_password=False)


def _snapshot(cli) -> dict:
    """SQLite: the SHA-256 of the catalogue file and of its WAL (if any). PostgreSQL: every row of
    every table, every sequence, every relation and function of the schema, large objects and roles."""
    if _backend(cli) == "sqlite":
        gc.collect()  # engines of earlier in-process commands close their files (and checkpoint)
        path = Path(cli.url.removeprefix("sqlite:///"))
        # A read-only reader of a WAL catalogue may leave an empty -wal behind (only a writer
        # may delete it): no frames, the same as no file. Any frame counts.
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in (path, path.with_name(path.name + "-wal")) if p.exists() and p.stat().st_size}
    out: dict = {}
    with _pg(cli.url) as conn:
        relations = conn.execute("SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                 " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
                                 " ORDER BY 1").fetchall()
        out["relations"] = relations
        for name, kind in relations:
            if kind == "r":
                out[name] = sorted(r[0] for r in conn.execute(f'SELECT to_jsonb(t)::text FROM "{name}" t'))
            elif kind == "S":
                out[name] = conn.execute(f'SELECT last_value, is_called FROM "{name}"').fetchone()
        out["functions"] = conn.execute("SELECT p.oid::regprocedure::text, md5(p.prosrc), p.proowner::regrole::text,"
                                        " p.prosecdef, p.proconfig FROM pg_proc p JOIN pg_namespace n"
                                        " ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1").fetchall()
        out["large objects"] = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
        out["roles"] = conn.execute("SELECT rolname, rolsuper, rolcanlogin, rolcreaterole FROM pg_roles"
                                    " WHERE rolname NOT LIKE 'pg\\_%' ORDER BY 1").fetchall()
    return out


def _reader(cli) -> str:
    """The reporting role of the test's PostgreSQL catalogue (each catalogue has its own)."""
    from sqlalchemy.engine import make_url

    return default_reporting_role(make_url(cli.url).database, "public")


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def lab(cli):
    """A catalogue with two samples and a cell."""
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod-NMC", "--morphology", "rod", "--notes", "original").exit_code == 0
    assert cli("sample", "add", "gravel-NMC", "--morphology", "gravel").exit_code == 0
    assert cli("cell", "add", "C1", "--sample", "rod-NMC", "--active-mass-mg", "3").exit_code == 0
    return cli


# --------------------------------------------------------------------------- nothing writes


def test_hostile_statements_fail_in_one_line_or_read_and_change_nothing(lab, tmp_path):
    backend = _backend(lab)
    cases = [(sql, expected[0 if backend == "sqlite" else 1]) for sql, *expected in COMMON]
    if backend == "sqlite":
        cases += SQLITE_ONLY
    before = _snapshot(lab)
    wrong = []
    for statement, expected in cases:
        result = lab("query", "sql", statement.replace("{tmp}", str(tmp_path)), "--format", "json")
        outcome = "rows" if result.exit_code == 0 else "error"
        if outcome == "error":
            _one_error_line(result)
            assert result.stderr.startswith("error: query sql"), (statement, result.stderr)
        else:
            assert isinstance(json.loads(result.stdout), list)
        if expected is not None and outcome != expected:
            wrong.append((statement, expected, result.output))
    assert wrong == []
    assert _snapshot(lab) == before
    assert not list(tmp_path.glob("pwned*")) and not list(tmp_path.glob("evil*"))
    rows = json.loads(lab("query", "sql", "SELECT notes FROM samples WHERE id = 1", "--format", "json").stdout)
    assert rows == [{"notes": "original"}]


def test_stacked_statements_are_refused_by_the_engine_itself(lab):
    if _backend(lab) == "postgresql":  # the server, parsing one protocol message
        for stacked in ("SELECT 1; SELECT 2", f"SELECT E'\\''; COMMIT; {UPDATE}; SELECT 'y'"):
            line = _one_error_line(lab("query", "sql", stacked))
            assert line == "error: query sql: cannot insert multiple commands into a prepared statement"
    else:  # the driver, preparing one statement
        line = _one_error_line(lab("query", "sql", f"SELECT 1; COMMIT; {UPDATE}"))
        assert line == "error: query sql: You can only execute one statement at a time."


def test_a_statement_that_returns_no_rows_does_not_run(lab):
    assert _one_error_line(lab("query", "sql", "COMMIT")) == (
        "error: query sql: the statement returns no rows (only queries run here)"
        if _backend(lab) == "postgresql" else "error: query sql: not authorized: query sql only reads")


def test_repeated_column_names_are_numbered_and_rows_keep_their_types(lab):
    result = lab("query", "sql", "SELECT s.id, c.id, s.name, c.name, c.active_mass_mg FROM samples s "
                 "JOIN cells c ON c.sample_id = s.id", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"id": 1, "id_2": 1, "name": "rod-NMC", "name_2": "C1", "active_mass_mg": 3.0}]


# --------------------------------------------------------------------------- limits


def test_row_cap_cuts_in_batches_and_says_so(lab):
    endless = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT n FROM t"
    result = lab("query", "sql", endless, "--max-rows", "2500", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [r["n"] for r in json.loads(result.stdout)] == list(range(1, 2501))
    assert result.stderr == NOTE_CUT.format(2500) + "\n"
    exact = lab("query", "sql", "SELECT name FROM samples ORDER BY name", "--max-rows", "2", "--format", "json")
    assert json.loads(exact.stdout) == [{"name": "gravel-NMC"}, {"name": "rod-NMC"}] and exact.stderr == ""


def test_default_row_cap_is_100000(lab, tmp_path):
    endless = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT n FROM t"
    out = tmp_path / "rows.csv"
    result = lab("query", "sql", endless, "--format", "csv", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stderr == NOTE_CUT.format(100000) + "\n"
    assert len(out.read_text().splitlines()) == 1 + 100000


@pytest.mark.parametrize("union", ["UNION ALL", "UNION"])  # UNION also keeps every row seen, in memory
def test_timeout_stops_an_endless_statement(lab, union):
    endless = f"WITH RECURSIVE t(n) AS (SELECT 1 {union} SELECT n + 1 FROM t) SELECT count(*) AS n FROM t"
    started = time.monotonic()
    line = _one_error_line(lab("query", "sql", endless, "--timeout", "1"))
    assert line == "error: query sql: stopped at the time limit of 1 s (--timeout)"
    assert time.monotonic() - started < 8


def test_the_query_cannot_lift_its_own_timeout(lab):
    if _backend(lab) == "postgresql":
        sleeper = "SELECT set_config('statement_timeout', '0', false) AS t, pg_sleep(4)::text AS s"
    else:  # SQLite has no settings to change; a long statement stands in
        sleeper = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT max(n) FROM t"
    started = time.monotonic()
    assert _one_error_line(lab("query", "sql", sleeper, "--timeout", "1")).endswith("(--timeout)")
    assert time.monotonic() - started < 3.5


def test_result_bytes_are_capped(lab, monkeypatch):
    import txmdb.readonly_sql as readonly_sql

    monkeypatch.setattr(readonly_sql, "MAX_RESULT_BYTES", 10_000)
    def padded(width: int) -> str:  # 2 samples × 2 = 4 rows of width bytes and a name
        return f"SELECT name, '{'y' * width}' AS pad FROM samples, (SELECT 1 AS n UNION ALL SELECT 2) AS v"

    assert _one_error_line(lab("query", "sql", padded(3000))) == (
        "error: query sql: the result is larger than 10000 bytes; select fewer rows or columns")
    assert len(json.loads(lab("query", "sql", padded(30), "--format", "json").stdout)) == 4


def _peak_memory_run(url: str, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run txmdb in a fresh process; also its peak resident memory in kB (VmHWM: this process
    image only, unlike ru_maxrss, which keeps the parent's across fork and exec)."""
    code = ("import sys; from txmdb.cli.main import app; sys.argv = ['txmdb', *sys.argv[1:]]\n"
            "try:\n    app()\n"
            "finally:\n"
            "    peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
            "    print('peak', peak, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, "--db", url, *args], capture_output=True, text=True, timeout=120)
    *lines, peak = proc.stderr.splitlines()
    proc.stderr = "\n".join(lines) + ("\n" if lines else "")
    return proc, int(peak.split()[1])


def test_memory_is_bounded_by_the_cap(lab):
    # Ten million rows of 1 kB (10 GB) behind the query; the cap reads 1000 of them.
    wide = ("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 10000000) "
            "SELECT n, printf('%01000d', n) AS pad FROM t" if _backend(lab) == "sqlite" else
            "SELECT n, repeat('y', 1000) AS pad FROM generate_series(1, 10000000) AS n")
    started = time.monotonic()
    proc, peak_kb = _peak_memory_run(lab.url, "query", "sql", wide, "--max-rows", "1000", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1001
    assert proc.stderr == NOTE_CUT.format(1000) + "\n"
    assert peak_kb < 400_000  # a fetchall would hold gigabytes
    assert time.monotonic() - started < 60


def test_a_recursive_query_growing_to_gigabytes_is_stopped(lab):
    # Each step doubles a string: gigabytes within a second unless something stops it.
    growing = "WITH RECURSIVE t(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM t) SELECT length(s) AS n, s FROM t"
    started = time.monotonic()
    proc, peak_kb = _peak_memory_run(lab.url, "query", "sql", growing, "--timeout", "10")
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: query sql: "), proc.stderr
    assert peak_kb < 1_000_000
    assert time.monotonic() - started < 60


# --------------------------------------------------------------------------- PostgreSQL: who runs the query

postgresql_only = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _invoke(url: str, store, *args: str):
    from typer.testing import CliRunner

    from txmdb.cli.main import app

    return CliRunner().invoke(app, ["--db", url, "--store", str(store), *args])


def _as(url: str, user: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(username=user, password=None).render_as_string(hide_password=False)


@postgresql_only
def test_superuser_url_is_refused_even_for_copy_to_program(lab, request, tmp_path):
    admin = _admin_url(request, lab.url)
    before = _snapshot(lab)
    for statement in (f"COPY (SELECT 1) TO PROGRAM 'touch {tmp_path}/pwned'", "SELECT 1 AS one"):
        assert _one_error_line(_invoke(admin, lab.store, "query", "sql", statement)) == (
            f'error: query sql will not run as "postgres", a superuser: connect as the catalogue owner '
            f'"{PG_OWNER}"; queries then run as the reporting role "{_reader(lab)}"')
    assert not (tmp_path / "pwned").exists()
    assert _snapshot(lab) == before


@postgresql_only
@pytest.mark.parametrize("server_role", ["pg_execute_server_program", "pg_write_server_files",
                                         "pg_read_server_files", "pg_signal_backend"])
def test_roles_that_reach_outside_the_database_are_refused(lab, request, server_role):
    user = f"t_{server_role}"
    with _pg(_admin_url(request, lab.url), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {user}")
        conn.execute(f"CREATE ROLE {user} LOGIN IN ROLE {server_role}, {_reader(lab)}")
    try:
        assert _one_error_line(_invoke(_as(lab.url, user), lab.store, "query", "sql", "SELECT 1 AS one")) == (
            f'error: query sql will not run as "{user}", a member of {server_role}: connect as the catalogue owner '
            f'"{PG_OWNER}"; queries then run as the reporting role "{_reader(lab)}"')
    finally:
        with _pg(_admin_url(request, lab.url), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {user}; DROP ROLE {user}")


class _Victim:
    """A session that query sql must not be able to end: idle, or running a statement."""

    def __init__(self, url: str, *, role: str | None = None):
        self.conn = _pg(url, autocommit=True)
        if role:
            self.conn.execute(f"SET ROLE {role}")
        self.pid = self.conn.info.backend_pid

    def alive(self) -> bool:
        try:
            return self.conn.execute("SELECT 1").fetchone() == (1,)
        except Exception:
            return False


@postgresql_only
def test_query_sql_signals_no_other_session_not_even_of_its_own_role(lab, request):
    admin = _admin_url(request, lab.url)
    with _pg(admin, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS t_colleague")
        conn.execute("CREATE ROLE t_colleague LOGIN")
    victims = {
        "same login role": _Victim(lab.url),
        "same login role, switched to the reporting role": _Victim(lab.url, role=_reader(lab)),
        "another role": _Victim(_as(lab.url, "t_colleague")),
        "superuser": _Victim(admin),
    }
    sleeper = _Victim(lab.url)
    sleep_result: list = []
    thread = threading.Thread(target=lambda: sleep_result.append(
        sleeper.conn.execute("SELECT pg_sleep(6)::text").fetchone()))
    thread.start()
    time.sleep(0.5)
    pids = [v.pid for v in victims.values()] + [sleeper.pid]
    attempts = [
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = session_user",
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
        *(f"SELECT pg_terminate_backend({pid})" for pid in pids),
        *(f"SELECT pg_terminate_backend({pid}, 1000)" for pid in pids),
        f"SELECT pg_cancel_backend({sleeper.pid})",
        # Back to the session's own role first: the guard function forbids it.
        *(f"SELECT set_config('role', 'none', true) AS r, pg_terminate_backend({pid}) AS t" for pid in pids),
        f"SELECT query_to_xml('SELECT pg_terminate_backend({pids[0]})', true, false, '')",
    ]
    for statement in attempts:
        line = _one_error_line(lab("query", "sql", statement))
        assert line.startswith("error: query sql: "), line
    thread.join(10)
    assert sleep_result == [("",)]  # the sleeping statement was not cancelled
    assert {name: v.alive() for name, v in victims.items()} == dict.fromkeys(victims, True)
    assert sleeper.alive()

    # Control: the same statement from a plain session of the login role, switched to the
    # reporting role but outside the guard, does end a session: SET ROLE alone is not enough.
    target = victims["same login role"]
    with _pg(lab.url) as plain:
        plain.execute(f"SET LOCAL ROLE {_reader(lab)}")
        plain.execute(f"SELECT set_config('role', 'none', true), pg_terminate_backend({target.pid})")
        plain.rollback()
    time.sleep(0.3)
    assert not target.alive()
    for v in (*victims.values(), sleeper):
        v.conn.close()


@postgresql_only
def test_a_killed_client_takes_its_server_statement_with_it(lab):
    proc = subprocess.Popen([sys.executable, "-m", "txmdb.cli.main", "--db", lab.url, "query", "sql",
                             "SELECT pg_sleep(60)::text AS s"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'txmdb query sql' AND state = 'active'"
    with _pg(lab.url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while conn.execute(watch).fetchone()[0] == 0:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "query sql never started its statement"
            time.sleep(0.1)
        time.sleep(0.5)
        assert conn.execute(watch).fetchone()[0] == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        while conn.execute(watch).fetchone()[0]:
            assert time.monotonic() - killed < 5, "the server statement outlived its client"
            time.sleep(0.1)
    proc.stderr.close()


# --------------------------------------------------------------------------- PostgreSQL: the reporting role


def _privileges(conn, role: str) -> dict:
    """What ``role`` may do, read from the server."""
    tables = conn.execute(
        "SELECT c.relname, has_table_privilege(%(r)s, c.oid, 'SELECT'),"
        " has_table_privilege(%(r)s, c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')"
        " FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY 1",
        {"r": role}).fetchall()
    sequences = conn.execute(
        "SELECT c.relname, has_sequence_privilege(%(r)s, c.oid, 'USAGE,SELECT,UPDATE') FROM pg_class c"
        " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S' ORDER BY 1", {"r": role}).fetchall()
    attributes = conn.execute(
        "SELECT rolsuper, rolcanlogin, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,"
        " (SELECT array_agg(roleid::regrole::text) FROM pg_auth_members WHERE member = r.oid),"
        " has_schema_privilege(r.oid, 'public', 'USAGE'), has_schema_privilege(r.oid, 'public', 'CREATE'),"
        " (SELECT array_agg(member::regrole::text ORDER BY 1) FROM pg_auth_members WHERE roleid = r.oid)"
        " FROM pg_roles r WHERE rolname = %(r)s", {"r": role}).fetchone()
    functions = conn.execute(
        "SELECT p.proname, p.proowner::regrole::text, p.prosecdef, p.provolatile, p.proacl::text[]"
        " FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1").fetchall()
    return {"tables": tables, "sequences": sequences, "attributes": attributes, "functions": functions}


@postgresql_only
def test_reporting_role_command_sets_up_a_role_that_only_reads(lab):
    role = f"Lab Reader {os.getpid()}"  # quoted everywhere: capitals and a space
    with _pg(lab.url) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        conn.commit()
    first = lab("db", "reporting-role", role)
    assert first.exit_code == 0, first.output
    from txmdb.vocabulary import PRIVATE_TABLES

    with _pg(lab.url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
    tables -= len(PRIVATE_TABLES)  # the web accounts' hashes and key are never readable
    assert first.stdout == (f'reporting role "{role}": SELECT on {tables} tables in schema "public" and on the '
                            f'tables "{PG_OWNER}" creates there later; members: "{PG_OWNER}"; query sql runs as it\n')
    with _pg(lab.url) as conn:
        granted = _privileges(conn, role)
    assert {name for name, can_read, _ in granted["tables"]} >= {"samples", "cells", "analyses", "alembic_version"}
    assert all(can_read == (name not in PRIVATE_TABLES) and not can_write for name, can_read, can_write in
               granted["tables"])
    assert granted["sequences"] and not any(can for _, can in granted["sequences"])
    assert granted["attributes"] == (False, False, False, False, False, False, None, True, False, [PG_OWNER])
    assert granted["functions"] == [(GUARD_FUNCTION, f'"{role}"', True, "s", [f'"{role}"=X/"{role}"'])]

    # Idempotent: a second run changes nothing and says the same.
    again = lab("db", "reporting-role", role)
    assert again.stdout == first.stdout
    with _pg(lab.url) as conn:
        assert _privileges(conn, role) == granted
        # A table the owner creates later is readable, and only readable.
        conn.execute("CREATE TABLE later (a integer)")
        assert conn.execute("SELECT has_table_privilege(%s, 'later', 'SELECT'),"
                            " has_table_privilege(%s, 'later', 'INSERT')", [role, role]).fetchone() == (True, False)
        conn.rollback()
    result = lab("query", "sql", "SELECT current_user AS who", "--format", "json")
    assert json.loads(result.stdout) == [{"who": role}]


@postgresql_only
def test_query_sql_without_a_reporting_role_names_the_command(lab):
    with _pg(lab.url) as conn:
        conn.execute(f"DROP FUNCTION {GUARD_FUNCTION}(text, bigint, bigint)")
        conn.commit()
    assert _one_error_line(lab("query", "sql", "SELECT 1 AS one")) == (
        "error: query sql needs the reporting role: run `txmdb db reporting-role` once, as the catalogue owner "
        f"or a database admin (no public.{GUARD_FUNCTION} here)")
    assert lab("db", "reporting-role").exit_code == 0
    assert json.loads(lab("query", "sql", "SELECT 1 AS one", "--format", "json").stdout) == [{"one": 1}]


@postgresql_only
@pytest.mark.parametrize("tamper, problem", [
    (f"ALTER FUNCTION {GUARD_FUNCTION}(text, bigint, bigint) SECURITY INVOKER",
     f"has a changed {GUARD_FUNCTION} function"),
    (f"CREATE OR REPLACE FUNCTION {GUARD_FUNCTION}(query text, max_rows bigint, max_bytes bigint) RETURNS SETOF "
     "record LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS "
     "$$BEGIN RETURN QUERY EXECUTE query; END$$", f"has a changed {GUARD_FUNCTION} function"),
    ("GRANT INSERT ON samples TO {role}", "can write catalogue tables"),
    ("GRANT USAGE ON SEQUENCE samples_id_seq TO {role}", "can write catalogue tables"),
    ("GRANT pg_read_all_settings TO {role}", "is a member of other roles"),
    ("ALTER ROLE {role} CREATEDB", "has superuser or role-creating powers"),
])
def test_a_weakened_reporting_role_is_refused_until_the_command_runs_again(lab, tamper, problem):
    role = _reader(lab)
    with _pg(lab.url, autocommit=True) as conn:
        conn.execute(tamper.format(role=role))
    try:
        assert _one_error_line(lab("query", "sql", "SELECT 1 AS one")) == (
            f'error: query sql refused: the reporting role "{role}" {problem}; '
            f'run `txmdb db reporting-role {role}` again')
    finally:
        repaired = lab("db", "reporting-role")
    assert repaired.exit_code == 0, repaired.output
    assert json.loads(lab("query", "sql", "SELECT 1 AS one", "--format", "json").stdout) == [{"one": 1}]


@postgresql_only
def test_a_role_that_cannot_switch_to_the_reporting_role_is_refused(lab, request):
    with _pg(_admin_url(request, lab.url), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS t_writer")
        conn.execute("CREATE ROLE t_writer LOGIN")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO t_writer")
        conn.execute("GRANT INSERT ON samples TO t_writer")
    try:
        assert _one_error_line(_invoke(_as(lab.url, "t_writer"), lab.store, "query", "sql", "SELECT 1 AS one")) == (
            f'error: query sql runs queries as the reporting role "{_reader(lab)}", which "t_writer" is not a '
            f'member of: connect as the catalogue owner, or run `txmdb db reporting-role {_reader(lab)}` as '
            f'"t_writer"')
    finally:
        with _pg(_admin_url(request, lab.url), autocommit=True) as conn:
            conn.execute("DROP OWNED BY t_writer; DROP ROLE t_writer")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_reporting_role_on_sqlite_is_one_line(lab):
    assert _one_error_line(lab("db", "reporting-role")) == (
        "error: db reporting-role is for PostgreSQL catalogues; on SQLite query sql opens the file read-only "
        "and needs no role")


@postgresql_only
def test_a_database_admin_sets_the_role_up_for_the_catalogue_owner(lab, request):
    role = f"t_admin_reader_{os.getpid()}"
    result = _invoke(_admin_url(request, lab.url), lab.store, "db", "reporting-role", role)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(f'creates there later; members: "{PG_OWNER}"; query sql runs as it\n')
    assert result.stdout.startswith(f'reporting role "{role}": SELECT on ')
    who = lab("query", "sql", "SELECT current_user AS who, count(*) AS n FROM samples", "--format", "json")
    assert json.loads(who.stdout) == [{"who": role, "n": 2}]


@postgresql_only
def test_an_owner_that_may_not_create_roles_gets_one_line(lab, request):
    from sqlalchemy.engine import make_url

    name = f"t_nocreaterole_{os.getpid()}"
    admin = _admin_url(request, lab.url)
    with _pg(make_url(admin).set(database="postgres").render_as_string(hide_password=False),
             autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"DROP ROLE IF EXISTS {name}")
        conn.execute(f"CREATE ROLE {name} LOGIN")
        conn.execute(f"CREATE DATABASE {name} OWNER {name}")
    url = make_url(lab.url).set(username=name, database=name).render_as_string(hide_password=False)
    try:
        assert _invoke(url, lab.store, "init").exit_code == 0
        assert _one_error_line(_invoke(url, lab.store, "db", "reporting-role", f"{name}_r")) == (
            f'error: db reporting-role "{name}_r": permission denied to create role')
        assert _one_error_line(_invoke(url, lab.store, "query", "sql", "SELECT 1 AS one")).startswith(
            "error: query sql needs the reporting role: run `txmdb db reporting-role` once")
    finally:
        with _pg(make_url(admin).set(database="postgres").render_as_string(hide_password=False),
                 autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {name}")
