"""Secrets are never printed (issue 9 §3): every password form in a URL is masked in what txmdb
prints or writes, a malformed URL is one line without its secret, and PGPASSWORD, ~/.pgpass and
libpq service files work, so a lab never needs a password in a URL.

The passwords are tested against a real PostgreSQL role that must authenticate with
scram-sha-256 (tests/pg_server.py puts its pg_hba.conf line before the trust lines).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.pg_server import PASSWORD_ROLE, PostgresServer
from txmdb.db.migrate import head_revision

# '@' and '%' must be percent-encoded in a URL: the password tests encoding as well as masking.
PASSWORD = "pw-Z8q@L%ab"
WRONG = "wr0ng-K7v@M%cd"


def _fragments(password: str) -> tuple[str, ...]:
    """Every piece of ``password`` that would betray it: whole, encoded, and either side of its '@'."""
    before, _, after = password.partition("@")
    return password, quote(password, safe=""), before, after, quote(after, safe="")


def assert_no_secret(text: str, password: str = PASSWORD) -> None:
    for piece in _fragments(password):
        assert piece not in text, f"{piece!r} printed in {text!r}"


def one_error_line(stdout: str, stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stdout + stderr
    return lines[0]


# --------------------------------------------------------------------------- a role that needs a password


@pytest.fixture(scope="module")
def pw_server(request):
    """A server where PASSWORD_ROLE has PASSWORD and must give it; an external server's
    pg_hba.conf is not ours to change, so then a private one is started."""
    import psycopg
    from psycopg import sql

    server = request.getfixturevalue("pg_server")
    own = PostgresServer().start() if isinstance(server, str) else None
    server = own or server
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [PASSWORD_ROLE]).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(PASSWORD_ROLE),
                                                                           sql.Literal(PASSWORD)))
    yield server
    if own:
        own.stop()


@pytest.fixture
def pw_db(pw_server):
    """A fresh database owned by PASSWORD_ROLE: (server, database name)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = f"host=127.0.0.1 port={pw_server.port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER {PASSWORD_ROLE}')
    yield pw_server, name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _base(server, name: str) -> str:
    return f"127.0.0.1:{server.port}/{name}"


@pytest.fixture
def clean_env(tmp_path):
    """The environment of a txmdb process that finds no credentials but the ones a test gives."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TXMDB_"))}
    env["HOME"] = str(home)  # no ~/.pgpass, no ~/.pg_service.conf of whoever runs the tests
    return env


def txmdb(env: dict, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "txmdb.cli.main", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


# --------------------------------------------------------------------------- passwords inside the URL


URL_FORMS = {
    # name: (URL template with {pw} percent-encoded and {base} = host:port/db, what safe_url shows)
    "userinfo": ("postgresql://{role}:{pw}@{base}", "postgresql+psycopg://{role}:***@{base}"),
    "query": ("postgresql://{role}@{base}?password={pw}", "postgresql+psycopg://{role}@{base}?password=***"),
    "query-after-other": ("postgresql://{role}@{base}?sslmode=disable&password={pw}",
                          "postgresql+psycopg://{role}@{base}?password=***&sslmode=disable"),
    "psycopg2-driver": ("postgresql+psycopg2://{role}:{pw}@{base}", "postgresql+psycopg://{role}:***@{base}"),
}


@pytest.mark.parametrize("form", URL_FORMS)
def test_password_in_url_is_masked_in_init_and_read_output(pw_db, clean_env, form):
    server, name = pw_db
    template, shown = URL_FORMS[form]
    url = template.format(role=PASSWORD_ROLE, pw=quote(PASSWORD, safe=""), base=_base(server, name))
    masked = shown.format(role=PASSWORD_ROLE, base=_base(server, name))

    init = txmdb(clean_env, "--db", url, "init")
    assert init.returncode == 0, init.stderr
    assert init.stdout.splitlines() == [f"catalogue {masked} is at schema {head_revision()}"]
    assert_no_secret(init.stdout + init.stderr)
    listed = txmdb(clean_env, "--db", url, "sample", "list")
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "(no rows)\n", "")

    wrong = txmdb(clean_env, "--db", url.replace(quote(PASSWORD, safe=""), quote(WRONG, safe="")), "sample", "list")
    assert wrong.returncode == 1
    line = one_error_line(wrong.stdout, wrong.stderr)
    assert line.startswith(f"error: cannot connect to {masked}: ")
    assert f'password authentication failed for user "{PASSWORD_ROLE}"' in line
    assert_no_secret(wrong.stdout + wrong.stderr, WRONG)


@pytest.mark.parametrize("query, shown", [
    ("", ""),
    # sslpassword unlocks a client key; it is no login password, and it is a secret.
    ("?sslmode=disable&sslpassword={pw}", "?sslmode=disable&sslpassword=***"),
])
def test_without_a_password_the_role_is_refused(pw_db, clean_env, query, shown):
    server, name = pw_db
    url = f"postgresql://{PASSWORD_ROLE}@{_base(server, name)}" + query.format(pw=quote(PASSWORD, safe=""))
    result = txmdb(clean_env, "--db", url, "init")
    assert result.returncode == 1
    line = one_error_line(result.stdout, result.stderr)
    assert line.startswith(f"error: cannot connect to postgresql+psycopg://{PASSWORD_ROLE}@{_base(server, name)}"
                           f"{shown}: ")
    assert "no password supplied" in line
    assert_no_secret(result.stdout + result.stderr)


MALFORMED = {
    # name: (URL template, the problem the line names)
    "one-slash": ("postgresql:/{role}:{pw}@127.0.0.1:{port}/lab", "the scheme must be followed by '//'"),
    "no-slash": ("postgres:{role}:{pw}@127.0.0.1:{port}/lab", "the scheme must be followed by '//'"),
    "one-slash-driver": ("postgresql+psycopg2:/{role}:{pw}@127.0.0.1/lab", "the scheme must be followed by '//'"),
    "unencoded-at": ("postgresql://{role}:{raw}@127.0.0.1:{port}/lab", "more than one '@' before the host"),
    "no-at": ("postgresql://{role}:{pw}/lab", "it cannot be parsed"),
}


@pytest.mark.parametrize("form", MALFORMED)
@pytest.mark.parametrize("command", [("init",), ("sample", "list")])
def test_malformed_url_is_one_line_without_its_secret(tmp_path, clean_env, form, command):
    template, problem = MALFORMED[form]
    url = template.format(role=PASSWORD_ROLE, pw=quote(PASSWORD, safe=""), raw=PASSWORD, port=5432)
    work = tmp_path / "work"
    work.mkdir()
    result = txmdb(clean_env, "--db", url, *command, cwd=work)
    assert result.returncode == 1
    line = one_error_line(result.stdout, result.stderr)
    assert line.startswith(f"error: malformed postgresql URL ({problem}): expected postgresql://")
    assert "%40" in line  # how to write an '@' of a password
    assert result.stdout == ""
    assert_no_secret(result.stdout + result.stderr)
    assert list(work.iterdir()) == [], "a URL is never taken for a SQLite file to create"


def test_the_issue_example_with_an_unencoded_at(clean_env, tmp_path):
    result = txmdb(clean_env, "--db", "postgresql://u:p@ss@host/db", "sample", "list", cwd=tmp_path)
    line = one_error_line(result.stdout, result.stderr)
    assert result.returncode == 1 and "more than one '@'" in line
    assert "ss@host" not in line and "p@ss" not in line


def test_sqlite_url_with_a_slash_missing_is_malformed(clean_env, tmp_path):
    work = tmp_path / "work"
    (work / "lab").mkdir(parents=True)
    result = txmdb(clean_env, "--db", "sqlite:/lab/cat.db", "init", cwd=work)
    assert result.returncode == 1
    assert one_error_line(result.stdout, result.stderr) == (
        "error: malformed sqlite URL (the scheme must be followed by '//'): expected sqlite:///FILE or a plain file path")
    assert [p.name for p in work.rglob("*")] == ["lab"]


@pytest.mark.parametrize("url, shown", [
    ("postgresql://alice:{pw}@db.example:5432/lab", "postgresql+psycopg://alice:***@db.example:5432/lab"),
    ("postgresql://alice@db.example/lab?password={pw}&application_name=x",
     "postgresql+psycopg://alice@db.example/lab?application_name=x&password=***"),
    ("postgresql://alice@db.example/lab?sslpassword={pw}&sslmode=require",
     "postgresql+psycopg://alice@db.example/lab?sslmode=require&sslpassword=***"),
    ("postgresql:///?service=lab", "postgresql+psycopg:///?service=lab"),
])
def test_safe_url_masks_every_password_form(url, shown):
    from txmdb.db.engine import resolve_url, safe_url

    text = safe_url(resolve_url(url.format(pw=quote(PASSWORD, safe=""))))
    assert text == shown
    assert_no_secret(text)


def test_safe_url_masks_text_it_cannot_trust():
    from txmdb.db.engine import safe_url

    assert safe_url(f"postgresql://u:{PASSWORD}@host/db") == "postgresql://u:***@***@host/db"
    assert safe_url(f"postgresql://u:{quote(PASSWORD, safe='')}@h/db?password=x") == "postgresql://u:***@h/db?password=***"
    assert safe_url("postgresql://u:x@h:port/db") == "<malformed URL>"


# --------------------------------------------------------------------------- the report footer


def test_report_footer_hides_a_query_password(pw_db, clean_env, tmp_path):
    server, name = pw_db
    url = f"postgresql://{PASSWORD_ROLE}@{_base(server, name)}?password={quote(PASSWORD, safe='')}"
    for args in (("init",), ("sample", "add", "rod-NMC", "--morphology", "rod")):
        assert txmdb(clean_env, "--db", url, "--store", tmp_path / "store", *args).returncode == 0
    out = tmp_path / "report.html"
    result = txmdb(clean_env, "--db", url, "--store", tmp_path / "store", "report", "compare", "rod-NMC", "-o", out)
    assert result.returncode == 0, result.stderr
    assert_no_secret(result.stdout + result.stderr)
    html = out.read_text(encoding="utf-8")
    assert f"from postgresql+psycopg://{PASSWORD_ROLE}@{_base(server, name)}?password=***." in html
    assert_no_secret(html)


def test_report_footer_names_a_sqlite_catalogue(clean_env, tmp_path):
    from txmdb.db.engine import resolve_url, safe_url

    database = tmp_path / "lab #1?" / "cat.db"
    database.parent.mkdir()
    for args in (("init",), ("sample", "add", "rod-NMC")):
        assert txmdb(clean_env, "--db", database, *args).returncode == 0
    out = tmp_path / "report.html"
    assert txmdb(clean_env, "--db", database, "report", "compare", "rod-NMC", "-o", out).returncode == 0
    shown = safe_url(resolve_url(str(database)))
    assert f"from {shown}." in out.read_text(encoding="utf-8")
    assert resolve_url(shown).database == str(database)  # the footer names the file, even with '#' and '?'


# --------------------------------------------------------------------------- libpq finds the password


def _init_and_use(env: dict, url: str) -> None:
    init = txmdb(env, "--db", url, "init")
    assert init.returncode == 0, init.stderr
    assert_no_secret(init.stdout + init.stderr)
    assert txmdb(env, "--db", url, "sample", "add", "rod-NMC").returncode == 0
    listed = txmdb(env, "--db", url, "sample", "list", "--format", "csv")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].startswith("rod-NMC,")
    assert_no_secret(listed.stdout + listed.stderr)


def test_pgpassword(pw_db, clean_env):
    server, name = pw_db
    _init_and_use({**clean_env, "PGPASSWORD": PASSWORD}, f"postgresql://{PASSWORD_ROLE}@{_base(server, name)}")


def _pgpass_line(server, name: str) -> str:
    return f"127.0.0.1:{server.port}:{name}:{PASSWORD_ROLE}:{PASSWORD}\n"


def test_pgpassfile(pw_db, clean_env, tmp_path):
    server, name = pw_db
    passfile = tmp_path / "lab.pgpass"
    passfile.write_text(_pgpass_line(server, name))
    passfile.chmod(0o600)  # libpq ignores a password file others can read
    _init_and_use({**clean_env, "PGPASSFILE": str(passfile)}, f"postgresql://{PASSWORD_ROLE}@{_base(server, name)}")


def test_home_pgpass_with_a_host_less_url(pw_db, clean_env):
    server, name = pw_db
    passfile = Path(clean_env["HOME"]) / ".pgpass"
    passfile.write_text(_pgpass_line(server, name))
    passfile.chmod(0o600)
    # No host, port or user in the URL: libpq takes them from PGHOST, PGPORT and PGUSER.
    env = {**clean_env, "PGHOST": "127.0.0.1", "PGPORT": str(server.port), "PGUSER": PASSWORD_ROLE}
    _init_and_use(env, f"postgresql:///{name}")


@pytest.mark.parametrize("password_in", ["service file", "pgpass"])
def test_service_file(pw_db, clean_env, tmp_path, password_in):
    server, name = pw_db
    services = tmp_path / "pg_service.conf"
    settings = f"[lab]\nhost=127.0.0.1\nport={server.port}\ndbname={name}\nuser={PASSWORD_ROLE}\n"
    env = {**clean_env, "PGSERVICEFILE": str(services)}
    if password_in == "service file":
        settings += f"password={PASSWORD}\n"
    else:
        passfile = tmp_path / "lab.pgpass"
        passfile.write_text(_pgpass_line(server, name))
        passfile.chmod(0o600)
        env["PGPASSFILE"] = str(passfile)
    services.write_text(settings)
    init = txmdb(env, "--db", "postgresql:///?service=lab", "init")
    assert init.stdout.splitlines() == [f"catalogue postgresql+psycopg:///?service=lab is at schema {head_revision()}"]
    _init_and_use(env, "postgresql:///?service=lab")
    # The same through TXMDB_URL, as a lab would set it once.
    listed = txmdb({**env, "TXMDB_URL": "postgresql:///?service=lab"}, "sample", "list", "--format", "csv")
    assert listed.returncode == 0 and "rod-NMC" in listed.stdout
