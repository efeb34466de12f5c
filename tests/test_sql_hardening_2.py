"""``query sql`` and ``db reporting-role`` against the attacker's second pass (notes/attack9.md).

F1: `db reporting-role NAME` took over any existing role (a user's login, a superuser's powers,
its rights in other databases). F4/F5: the byte cap let gigabytes into memory (SQLite sized a
1000-row batch after fetching it; PostgreSQL counted compressed sizes). F6: one SQLite function
call outran --timeout by minutes. F7: one cluster-wide reporting role served every catalogue, so
one catalogue's users read another's. F11: --timeout inf / --max-rows 2^63 gave tracebacks or
the server's wording. F12: the admin's part (temp_file_limit) and the timeout cap documented.

Every database test runs through the real CLI on SQLite and/or a real PostgreSQL server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import PG_OWNER, PROJECT
from tests.test_sql_hardening import (
    _admin_url, _as, _invoke, _one_error_line, _peak_memory_run, _pg, _reader, _snapshot,
)
from txmdb.readonly_sql import GUARD_FUNCTION, default_reporting_role
from txmdb.vocabulary import (
    MAX_RESULT_BYTES, MAX_ROLE_NAME_BYTES, MAX_SQL_ROWS, MAX_TIMEOUT_S, SQLITE_MAX_PATTERN_BYTES,
    SQLITE_MAX_VALUE_BYTES,
)

postgresql_only = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod-NMC", "--morphology", "rod", "--notes", "original").exit_code == 0
    return cli


def _backend(cli) -> str:
    return "sqlite" if cli.url.startswith("sqlite") else "postgresql"


# --------------------------------------------------------------------------- F11: option bounds


@pytest.mark.parametrize("option, value, problem", [
    ("--timeout", "inf", f"less than or equal to {MAX_TIMEOUT_S:g}"),
    ("--timeout", "1e400", f"less than or equal to {MAX_TIMEOUT_S:g}"),
    ("--timeout", "nan", None),
    ("--timeout", "-inf", "greater than or equal to 0.001"),
    ("--timeout", str(MAX_TIMEOUT_S + 1), f"less than or equal to {MAX_TIMEOUT_S:g}"),
    ("--max-rows", "9223372036854775807", f"is not a whole number from 1 to {MAX_SQL_ROWS}"),
    ("--max-rows", str(MAX_SQL_ROWS + 1), f"is not a whole number from 1 to {MAX_SQL_ROWS}"),
    ("--max-rows", "0", f"is not a whole number from 1 to {MAX_SQL_ROWS}"),
    ("--max-rows", "+1_0", f"is not a whole number from 1 to {MAX_SQL_ROWS}"),
])
def test_out_of_range_limits_are_one_line_usage_errors(lab, option, value, problem):
    result = lab("query", "sql", "SELECT 1 AS one", option, value)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: Invalid value for '{option}': "), result.stderr
    assert problem is None or problem in lines[0], lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


def test_the_largest_limits_run(lab):
    result = lab("query", "sql", "SELECT 1 AS one", "--timeout", f"{MAX_TIMEOUT_S:g}", "--max-rows", str(MAX_SQL_ROWS),
                 "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"one": 1}]


@pytest.mark.parametrize("limits, line", [
    ({"timeout": float("nan")}, f"query sql: time limit nan s is not between 0 and {MAX_TIMEOUT_S:g} s"),
    ({"timeout": float("inf")}, f"query sql: time limit inf s is not between 0 and {MAX_TIMEOUT_S:g} s"),
    ({"max_rows": 2**63 - 1}, f"query sql: row cap {2**63 - 1} is not between 1 and {MAX_SQL_ROWS} rows"),
    ({"max_bytes": 0}, "query sql: byte cap 0 is below 1"),
    ({"max_bytes": -5}, "query sql: byte cap -5 is below 1"),
    ({"max_cells": 0}, "query sql: value cap 0 is below 1"),
    ({"max_cells": float("nan")}, "query sql: value cap nan is below 1"),
    ({"max_bytes": 0.5}, "query sql: byte cap 0.5 is below 1"),
])
def test_the_library_checks_the_same_bounds(lab, limits, line):
    from txmdb.errors import TxmdbError
    from txmdb.readonly_sql import run_readonly_sql

    with pytest.raises(TxmdbError) as caught:
        run_readonly_sql(lab.url, "SELECT 1 AS one", **limits)
    assert str(caught.value) == line


# --------------------------------------------------------------------------- F4: bytes counted per row


def test_the_byte_cap_stops_before_the_next_row_not_after_a_batch(lab):
    # 1000 rows of ~1 MB (16 values of 60 kB): 1 GB, all in one fetch batch before the fix.
    if _backend(lab) == "sqlite":
        wide = ", ".join(f"zeroblob(60000) AS b{i}" for i in range(16))
        statement = f"WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1000) SELECT {wide} FROM r"
    else:
        statement = "SELECT repeat('y', 960000) AS b FROM generate_series(1, 1000)"
    proc, peak_kb = _peak_memory_run(lab.url, "query", "sql", statement, "--format", "csv")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (f"error: query sql: the result is larger than {MAX_RESULT_BYTES} bytes; "
                           f"select fewer rows or columns\n")
    assert peak_kb < 700_000  # the cap (256 MiB), one row and the interpreter; a batch was 1 GB more


@sqlite_only
def test_running_out_of_memory_is_one_line(lab):
    # The address space of the process is capped a little above what `SELECT 1` needs; a
    # 240 MB result (under the byte cap) cannot fit, wherever it runs out.
    code = ("import resource, sys\n"
            "limit = int(sys.argv[1])\n"
            "if limit: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
            "from txmdb.cli.main import app\n"
            "sys.argv = ['txmdb', *sys.argv[2:]]\n"
            "try:\n    app()\n"
            "finally:\n"
            "    peak = [l for l in open('/proc/self/status') if l.startswith('VmPeak:')][0].split()[1]\n"
            "    print('peak', peak, file=sys.stderr)\n")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}

    def run(limit: int, statement: str):
        proc = subprocess.run([sys.executable, "-c", code, str(limit), "--db", lab.url, "query", "sql", statement,
                               "--format", "csv"], capture_output=True, text=True, env=env, timeout=120)
        *lines, peak = proc.stderr.splitlines()
        return proc.returncode, lines, int(peak.split()[1]) * 1024

    code_small, lines_small, baseline = run(0, "SELECT 1 AS one")
    assert (code_small, lines_small) == (0, [])
    big = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 4000) "
           "SELECT printf('%.*c', 60000, 'y') AS s FROM r")
    returncode, lines, _ = run(baseline + (100 << 20), big)
    assert returncode == 1, lines
    assert len(lines) == 1 and lines[0].startswith("error: query sql: out of memory"), lines


# --------------------------------------------------------------------------- F5: uncompressed bytes


@postgresql_only
def test_postgresql_counts_the_bytes_the_client_receives_not_the_stored_ones(lab, monkeypatch):
    import txmdb.readonly_sql as readonly_sql

    # 200 kB of one letter is stored compressed in ~2 kB: 50 rows of it counted ~0.1 MB.
    with _pg(lab.url) as conn:
        conn.execute("UPDATE samples SET notes = repeat('a', 200000) WHERE name = 'rod-NMC'")
        conn.commit()
        assert conn.execute("SELECT pg_column_size(notes) < 10000 FROM samples WHERE name = 'rod-NMC'").fetchone()[0]
    statement = "SELECT notes FROM samples, generate_series(1, 50) WHERE name = 'rod-NMC'"
    monkeypatch.setattr(readonly_sql, "MAX_RESULT_BYTES", 2_000_000)
    assert _one_error_line(lab("query", "sql", statement)) == (
        "error: query sql: the result is larger than 2000000 bytes; select fewer rows or columns")
    # The server's guard itself counts them (not only the client), before it makes the next row.
    role = _reader(lab)
    with _pg(lab.url) as conn:
        conn.execute(f"SET ROLE {role}")
        with pytest.raises(Exception) as caught:
            conn.execute(f"SELECT * FROM {GUARD_FUNCTION}(%s, 100, 2000000) AS t(c text)", [statement]).fetchall()
    assert "the result is larger than 2000000 bytes" in str(caught.value)
    assert len(json.loads(lab("query", "sql", statement, "--max-rows", "5", "--format", "json").stdout)) == 5


# --------------------------------------------------------------------------- F6: one costly call


def _costly_calls() -> list[str]:
    """Function calls whose cost grows with length squared (or pattern × text), at the limits."""
    text = SQLITE_MAX_VALUE_BYTES - 64
    # trim(X, Y) compares every character of X with every character listed in Y; Y's list of
    # characters takes 12 bytes each of the value limit.
    listed = SQLITE_MAX_VALUE_BYTES // 12 - 20
    return [
        # The attacker's call: 27 s with a 1 s limit before.
        "SELECT instr(printf('%.*c', 2000000, 'a'), printf('%.*c', 1000000, 'a') || 'b') AS i",
        f"SELECT instr(printf('%.*c', {text}, 'a'), printf('%.*c', {text // 2}, 'a') || 'b') AS i",
        f"SELECT length(replace(printf('%.*c', {text}, 'a'), printf('%.*c', {text // 2}, 'a') || 'b', 'x')) AS n",
        f"SELECT length(trim(printf('%.*c', {text}, 'a'), printf('%.*c', {listed}, 'b') || 'a')) AS n",
        f"SELECT printf('%.*c', {text}, 'a') LIKE '%' || printf('%.*c', {SQLITE_MAX_PATTERN_BYTES - 3}, 'a') || 'b%' AS l",
        f"SELECT printf('%.*c', {text}, 'a') GLOB '*' || printf('%.*c', {SQLITE_MAX_PATTERN_BYTES - 3}, 'a') || 'b*' AS g",
        # A 50,000-byte pattern over a 1 MB text: 39 s before.
        "SELECT printf('%.*c', 1000000, 'a') LIKE '%' || printf('%.*c', 49990, 'a') || 'b%' AS l",
    ]


@sqlite_only
@pytest.mark.parametrize("statement", _costly_calls())
def test_the_time_limit_holds_against_one_costly_function_call(lab, statement):
    started = time.monotonic()
    result = lab("query", "sql", statement, "--timeout", "1")
    elapsed = time.monotonic() - started
    if result.exit_code:
        assert _one_error_line(result).startswith("error: query sql: "), result.stderr
    assert elapsed < 1 + 2.5, (statement[:60], elapsed)


@sqlite_only
def test_values_beyond_the_sqlite_limit_name_it(lab):
    assert _one_error_line(lab("query", "sql", f"SELECT zeroblob({SQLITE_MAX_VALUE_BYTES + 1}) AS b")) == (
        f"error: query sql: string or blob too big: no value may be longer than {SQLITE_MAX_VALUE_BYTES} bytes here")
    pattern = "x" * (SQLITE_MAX_PATTERN_BYTES + 1)
    assert _one_error_line(lab("query", "sql", f"SELECT name LIKE '{pattern}' AS l FROM samples")) == (
        f"error: query sql: LIKE or GLOB pattern too complex: a pattern may be at most {SQLITE_MAX_PATTERN_BYTES} "
        f"bytes here")
    # At the limit it reads.
    at = lab("query", "sql", f"SELECT length(zeroblob({SQLITE_MAX_VALUE_BYTES})) AS n", "--format", "json")
    assert json.loads(at.stdout) == [{"n": SQLITE_MAX_VALUE_BYTES}]


# --------------------------------------------------------------------------- F1: never someone else's role


def _role_state(url: str, role: str):
    """Everything about ``role`` the command could change: attributes, comment, memberships, rights here."""
    with _pg(url) as conn:
        return conn.execute(
            "SELECT r.rolsuper, r.rolcanlogin, r.rolinherit, r.rolcreaterole, r.rolcreatedb,"
            " shobj_description(r.oid, 'pg_authid'),"
            " ARRAY(SELECT roleid::regrole::text FROM pg_auth_members WHERE member = r.oid ORDER BY 1),"
            " ARRAY(SELECT member::regrole::text FROM pg_auth_members WHERE roleid = r.oid ORDER BY 1),"
            " has_schema_privilege(r.oid, 'public', 'USAGE'), has_table_privilege(r.oid, 'samples', 'SELECT')"
            " FROM pg_roles r WHERE r.rolname = %s", [role]).fetchone()


@postgresql_only
@pytest.mark.parametrize("kind, create, as_admin, problem", [
    ("user", "CREATE ROLE {r} LOGIN PASSWORD 'rpw'", False,
     "can log in (txmdb never changes a role that can log in or is a superuser); choose another name"),
    ("user, by an admin", "CREATE ROLE {r} LOGIN", True,
     "can log in (txmdb never changes a role that can log in or is a superuser); choose another name"),
    ("superuser", "CREATE ROLE {r} SUPERUSER LOGIN", True,
     "is a superuser (txmdb never changes a role that can log in or is a superuser); choose another name"),
    ("group", "CREATE ROLE {r} NOLOGIN IN ROLE pg_read_all_stats", True,
     "is not this catalogue's reporting role; choose another name"),
])
def test_an_existing_role_that_is_not_the_catalogues_is_never_taken_over(lab, request, kind, create, as_admin, problem):
    role = f"t_f1_{kind.split(',')[0]}_{os.getpid()}"
    admin = _admin_url(request, lab.url)
    with _pg(admin, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(create.format(r=role))
    try:
        before = _role_state(lab.url, role)
        guard_before = _snapshot(lab)["functions"]
        result = _invoke(admin if as_admin else lab.url, lab.store, "db", "reporting-role", role)
        assert _one_error_line(result) == f'error: db reporting-role: role "{role}" already exists and {problem}'
        assert _role_state(lab.url, role) == before
        assert _snapshot(lab)["functions"] == guard_before  # the catalogue keeps its own role
        with _pg(lab.url) as conn:  # the owner gained nothing of it
            assert conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [PG_OWNER, role]).fetchone() == (False,)
    finally:
        with _pg(admin, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


@postgresql_only
def test_a_users_database_stays_out_of_the_owners_reach(lab, request):
    # The attacker's "bob": a login role with a database of its own.
    from sqlalchemy.engine import make_url

    bob = f"t_bob_{os.getpid()}"
    admin = _admin_url(request, lab.url)
    admin_postgres = make_url(admin).set(database="postgres").render_as_string(hide_password=False)
    with _pg(admin_postgres, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {bob}")
        conn.execute(f"DROP ROLE IF EXISTS {bob}")
        conn.execute(f"CREATE ROLE {bob} LOGIN")
        conn.execute(f"CREATE DATABASE {bob} OWNER {bob}")
    bob_url = make_url(lab.url).set(username=bob, password=None, database=bob).render_as_string(hide_password=False)
    try:
        with _pg(bob_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE secret (a text)")
        line = _one_error_line(_invoke(admin, lab.store, "db", "reporting-role", bob))
        assert line.startswith(f'error: db reporting-role: role "{bob}" already exists and can log in')
        owner_in_bob = make_url(bob_url).set(username=PG_OWNER).render_as_string(hide_password=False)
        with _pg(owner_in_bob, autocommit=True) as conn:
            with pytest.raises(Exception, match="permission denied for table secret"):
                conn.execute("SELECT * FROM secret")
            with pytest.raises(Exception, match="must be owner of table secret"):
                conn.execute("DROP TABLE secret")
        with _pg(bob_url) as conn:  # bob still logs in
            assert conn.execute("SELECT count(*) FROM secret").fetchone() == (0,)
    finally:
        with _pg(admin_postgres, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {bob} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {bob}")


@postgresql_only
@pytest.mark.parametrize("length", [MAX_ROLE_NAME_BYTES + 1, 100])
def test_a_role_name_postgresql_would_cut_is_refused(lab, length):
    for name in ("r" * length, PG_OWNER + "x" * (length - len(PG_OWNER)), "é" * (length // 2 + 1)):
        assert _one_error_line(lab("db", "reporting-role", name)) == (
            f"error: reporting role name {name!r} is longer than {MAX_ROLE_NAME_BYTES} bytes, which PostgreSQL "
            f"would cut short")
        with _pg(lab.url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s",
                                [name.encode()[:MAX_ROLE_NAME_BYTES].decode(errors="ignore")]).fetchone() == (0,)


@postgresql_only
def test_a_role_name_of_63_bytes_is_the_role_made(lab, request):
    name = f"t{os.getpid()}".ljust(MAX_ROLE_NAME_BYTES, "r")
    try:
        result = lab("db", "reporting-role", name)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f'reporting role "{name}": SELECT on ')
        who = lab("query", "sql", "SELECT current_user AS who", "--format", "json")
        assert json.loads(who.stdout) == [{"who": name}]
    finally:
        with _pg(_admin_url(request, lab.url), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {name}; DROP ROLE {name}")


def _both_refuse(lab, role: str, at_query: str, at_setup: str) -> None:
    """query sql and `db reporting-role` (no name: the catalogue's own role) each refuse ``role``."""
    assert _one_error_line(lab("query", "sql", "SELECT 1 AS one")) == (
        f'error: query sql refused: the reporting role "{role}" {at_query}')
    assert _one_error_line(lab("db", "reporting-role")) == (
        f'error: db reporting-role: role "{role}" already exists and {at_setup}')


@postgresql_only
def test_a_reporting_role_that_can_log_in_is_left_to_an_admin(lab, request):
    role = _reader(lab)
    with _pg(lab.url, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {role} LOGIN")
    _both_refuse(lab, role,
                 "can log in; an admin must make it NOLOGIN (txmdb never changes a role that can log in), then run "
                 f"`txmdb db reporting-role {role}` again",
                 "can log in (txmdb never changes a role that can log in or is a superuser); an admin can run "
                 f'ALTER ROLE "{role}" NOSUPERUSER NOLOGIN, then this again, or choose another name')
    with _pg(_admin_url(request, lab.url), autocommit=True) as conn:
        assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [role]).fetchone() == (True,)
        conn.execute(f"ALTER ROLE {role} NOLOGIN")
    assert lab("db", "reporting-role").exit_code == 0
    assert json.loads(lab("query", "sql", "SELECT 1 AS one", "--format", "json").stdout) == [{"one": 1}]


# --------------------------------------------------------------------------- F7: a role per catalogue


def test_default_reporting_role_names_differ_per_catalogue_and_fit():
    assert default_reporting_role("txmdb", "public") == "txmdb_reader_txmdb"
    assert default_reporting_role("cat", "s2") == "txmdb_reader_cat_s2"
    long_names = {default_reporting_role("lab" * 30, schema) for schema in ("public", "a", "b")}
    assert len(long_names) == 3
    assert all(len(n.encode()) <= MAX_ROLE_NAME_BYTES for n in long_names)
    cut = default_reporting_role("é" * 40, "public")
    assert len(cut.encode()) <= MAX_ROLE_NAME_BYTES and cut.startswith("txmdb_reader_é")


def _url_with_schema(url: str, schema: str, user: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    if user:
        u = u.set(username=user, password=None)
    return u.render_as_string(hide_password=False)


def _b_role(lab) -> str:
    from sqlalchemy.engine import make_url

    return default_reporting_role(make_url(lab.url).database, "s2")


@postgresql_only
def test_each_catalogue_reads_through_a_role_of_its_own(lab, request):
    # The attacker's setup: catalogue B in schema s2 of the same database, another owner; each
    # catalogue's reporting role set up with the plain command.
    admin = _admin_url(request, lab.url)
    owner2 = f"t_owner2_{os.getpid()}"
    with _pg(admin, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {owner2}")
        conn.execute(f"CREATE ROLE {owner2} LOGIN")
        conn.execute(f"CREATE SCHEMA s2 AUTHORIZATION {owner2}")
    b_url = _url_with_schema(lab.url, "s2", owner2)
    try:
        assert _invoke(b_url, lab.store, "init").exit_code == 0
        assert _invoke(b_url, lab.store, "sample", "add", "labB-secret", "--notes", "B's private notes").exit_code == 0
        set_up = _invoke(_url_with_schema(admin, "s2"), lab.store, "db", "reporting-role")
        assert set_up.exit_code == 0, set_up.output
        b_role = _b_role(lab)
        assert set_up.stdout.startswith(f'reporting role "{b_role}": SELECT on ')
        again = lab("db", "reporting-role")
        assert again.stdout.startswith(f'reporting role "{_reader(lab)}": SELECT on '), again.output
        # A reads its own catalogue, not B's; B reads its own.
        assert _one_error_line(lab("query", "sql", "SELECT name, notes FROM s2.samples")) == (
            "error: query sql: permission denied for schema s2")
        own = lab("query", "sql", "SELECT current_user AS who, name FROM samples", "--format", "json")
        assert json.loads(own.stdout) == [{"who": _reader(lab), "name": "rod-NMC"}]
        theirs = _invoke(b_url, lab.store, "query", "sql", "SELECT current_user AS who, name FROM samples",
                         "--format", "json")
        assert json.loads(theirs.stdout) == [{"who": b_role, "name": "labB-secret"}]
        assert _one_error_line(_invoke(b_url, lab.store, "query", "sql", "SELECT name FROM public.samples")) == (
            "error: query sql: permission denied for table samples")
        # Nor can A's owner borrow B's role.
        with _pg(lab.url) as conn:
            assert conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [PG_OWNER, b_role]).fetchone() == (False,)
    finally:
        with _pg(admin, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS s2 CASCADE")
            conn.execute(f"DROP OWNED BY {owner2}")
            conn.execute(f'DROP ROLE IF EXISTS "{_b_role(lab)}"')
            conn.execute(f"DROP ROLE {owner2}")


@postgresql_only
def test_a_reporting_role_with_rights_beyond_its_catalogue_is_refused(lab, request):
    role = _reader(lab)
    admin = _admin_url(request, lab.url)
    with _pg(admin, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA other")
        conn.execute("CREATE TABLE other.private (a text)")
        conn.execute(f"GRANT USAGE ON SCHEMA other TO {role}")
        conn.execute(f"GRANT SELECT ON other.private TO {role}")
    _both_refuse(lab, role,
                 "has rights beyond reading this catalogue (schema other); give the catalogue a role of its own: "
                 "run `txmdb db reporting-role NAME` with a new NAME",
                 "has rights beyond reading this catalogue (schema other); choose another name")
    fresh = f"t_fresh_{os.getpid()}"
    try:
        moved = lab("db", "reporting-role", fresh)
        assert moved.exit_code == 0, moved.output
        who = lab("query", "sql", "SELECT current_user AS who", "--format", "json")
        assert json.loads(who.stdout) == [{"who": fresh}]
        with _pg(lab.url) as conn:  # the role it replaced reads this catalogue no more
            # (USAGE on schema public comes with PUBLIC: the grant to the role itself is gone.)
            assert conn.execute("SELECT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a"
                                "               WHERE n.nspname = 'public' AND a.grantee = %s::regrole),"
                                " has_table_privilege(%s, 'samples', 'SELECT')", [role, role]).fetchone() == (False, False)
            conn.execute("CREATE TABLE later (a integer)")  # nor the tables made later
            assert conn.execute("SELECT has_table_privilege(%s, 'later', 'SELECT'),"
                                " has_table_privilege(%s, 'later', 'SELECT')", [role, fresh]).fetchone() == (False, True)
            conn.rollback()
    finally:
        with _pg(admin, autocommit=True) as conn:
            conn.execute("DROP SCHEMA other CASCADE")
            conn.execute(f"DROP OWNED BY {fresh}; DROP ROLE {fresh}")


@postgresql_only
def test_the_reporting_role_of_another_catalogue_is_refused_by_name(lab, request):
    from sqlalchemy.engine import make_url

    other = default_reporting_role("elsewhere", "public")
    with _pg(_admin_url(request, lab.url), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {other}")
        conn.execute(f"CREATE ROLE {other} NOLOGIN")
        conn.execute(f"""COMMENT ON ROLE {other} IS 'txmdb reporting role of {{"database": "elsewhere", "schema": "public"}}'""")
    try:
        assert _one_error_line(lab("db", "reporting-role", other)) == (
            f'error: db reporting-role: role "{other}" already exists and is the reporting role of database '
            f'"elsewhere", schema "public"; choose another name')
        # The catalogue's own role says whose it is.
        with _pg(lab.url) as conn:
            comment = conn.execute("SELECT shobj_description(%s::regrole, 'pg_authid')", [_reader(lab)]).fetchone()[0]
        database = make_url(lab.url).database
        assert comment == f'txmdb reporting role of {{"database": "{database}", "schema": "public"}}'
    finally:
        with _pg(_admin_url(request, lab.url), autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {other}")


# --------------------------------------------------------------------------- F12: what the admin sets


def test_deployment_docs_give_the_admin_their_part():
    text = " ".join((PROJECT / "docs" / "deployment.md").read_text().split())
    assert "ALTER DATABASE txmdb SET temp_file_limit" in text
    assert f"`--timeout` is at most {MAX_TIMEOUT_S:g} s" in text
    assert "pg_advisory_lock" in text and "txmdb init" in text
    assert "txmdb_reader_<database>" in text
