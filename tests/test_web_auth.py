"""Accounts, sessions, tokens and the web application's defences, against a real ``txmdb serve``
process on SQLite and PostgreSQL (and the ``txmdb user`` commands in-process).

The served catalogue holds a sample whose name, morphology and meta are markup, and accounts
of each role; the last test reads the server's whole log for every password used.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from tests.conftest import BACKENDS
from tests.web_server import inline_scripts, served_catalogue

HOSTILE = {"name": "<img src=x onerror=alert(1)>", "morphology": "<b>rod</b>", "meta": "<script>alert(2)</script>"}
WRONG_PASSWORD = "not-the-password-7431"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    with served_catalogue(request, tmp_path_factory, request.param) as served:
        for args in (["sample", "add", HOSTILE["name"], "--morphology", HOSTILE["morphology"],
                      "--meta", f"note={HOSTILE['meta']}"],
                     ["cell", "add", "C1", "--sample", HOSTILE["name"], "--active-mass-mg", "5"],
                     # a recent record of it, so the dashboard names it whichever test runs first
                     ["xrd", "add", "--sample", HOSTILE["name"], "--i003-i104", "1.1"]):
            done = served.cli(*args)
            assert done.returncode == 0, done.stderr
        for role in ("viewer", "editor", "admin"):
            served.add_account(role)
        served.add_account("editor", "victim")
        served.add_account("viewer", "leaver")
        served.add_account("viewer", "expiring", token_days=1)
        served.server = served.start()
        served.typed_passwords = [WRONG_PASSWORD]
        yield served


def _client(site, account=None, **options):
    return site.client(site.server, account, **options)


def _csrf(page) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


def login(client, name: str, password: str, next: str = "/"):
    """Sign in through the login form (taking its CSRF token first)."""
    token = _csrf(client.get("/login"))
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token, "next": next})


def _signed_in(site, name: str):
    client = _client(site)
    answer = login(client, name, site.accounts[name].password)
    assert answer.status_code == 303, answer.text
    return client


def _json_error(answer, status: int, *words: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    assert answer.json()["status"] == status and "Traceback" not in answer.text
    for word in words:
        assert word in answer.json()["error"], answer.json()


# ----------------------------------------------------------------------------- anonymous
@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/query/samples"), ("GET", "/api/v1/samples"), ("GET", "/api/v1/scans/1"),
    ("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/no-such-thing"), ("POST", "/api/v1/cycling"),
    ("POST", "/api/v1/scans/1/analyses"), ("GET", "/api/v1/scans/1/slice.png"),
])
def test_the_api_without_credentials_is_401(site, method, path):
    with _client(site) as client:
        answer = client.request(method, path)
    _json_error(answer, 401, "sign in first")
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/", "/samples", "/scans/1", "/sql", "/upload", "/query/theta?bin=1",
                                  "/no-such-page"])
def test_pages_without_credentials_redirect_to_login(site, path):
    with _client(site) as client:
        answer = client.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=" + quote(path, safe="")
    assert answer.content == b""


def test_health_login_and_static_assets_are_public(site):
    with _client(site) as client:
        assert client.get("/api/v1/health").json()["status"] == "ok"
        page = client.get("/login")
        assert page.status_code == 200
        for field in ('name="username"', 'name="password"', 'name="csrf_token"'):
            assert field in page.text
        assert client.get("/static/css/txmdb.css").status_code == 200
        assert client.get("/static/js/plots.js").headers["content-type"].startswith(("text/javascript",
                                                                                     "application/javascript"))
        assert client.get("/static/%2e%2e/pages.py").status_code == 404  # no way out of the static folder
    assert "/setup?token=" not in site.server.log()  # accounts exist: no setup link


# ----------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("header", ["Bearer txmdb_" + "A" * 43, "Bearer nonsense", "Bearer", "Basic dmlld2VyOng=",
                                    "bearer txmdb_"])
def test_bad_tokens_are_401(site, header):
    with _client(site) as client:
        _json_error(client.get("/api/v1/samples", headers={"Authorization": header}), 401)


def test_a_token_reads_and_is_checked_by_its_keyed_hash(site):
    import hashlib
    import hmac

    import sqlalchemy as sa

    with _client(site, "viewer") as client:
        assert client.get("/api/v1/samples").json()["items"][0]["sample"] == HOSTILE["name"]
    token = site.accounts["viewer"].token
    engine = sa.create_engine(site.url)
    with engine.connect() as conn:
        key = bytes.fromhex(conn.execute(sa.text("SELECT key_hex FROM web_key")).scalar_one())
        hashes = conn.execute(sa.text("SELECT t.token_hash FROM api_tokens t JOIN users u ON u.id = t.user_id "
                                      "WHERE u.name = 'viewer'")).scalars().all()
    engine.dispose()
    assert hashes == [hmac.new(key, b"token\0" + token.encode(), hashlib.sha256).hexdigest()]
    assert token not in hashes[0]


def test_an_expired_token_is_401(site):
    import sqlalchemy as sa

    with _client(site, "expiring") as client:
        assert client.get("/api/v1/samples").status_code == 200
        engine = sa.create_engine(site.url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE api_tokens SET expires_at = :t WHERE user_id = "
                                 "(SELECT id FROM users WHERE name = 'expiring')"),
                         {"t": "2020-01-01 00:00:00+00:00"})
        engine.dispose()
        _json_error(client.get("/api/v1/samples"), 401, "invalid, expired or revoked API token")


def test_a_disabled_account_loses_its_tokens_and_sessions_at_once(site):
    browser = _signed_in(site, "leaver")
    assert browser.get("/").status_code == 200
    with _client(site, "leaver") as client:
        assert client.get("/api/v1/samples").status_code == 200
        done = site.cli("user", "disable", "leaver")
        assert (done.returncode, done.stdout) == (0, "account leaver disabled\n")
        _json_error(client.get("/api/v1/samples"), 401)
    assert browser.get("/").status_code == 303
    again = login(browser, "leaver", site.accounts["leaver"].password)
    assert again.status_code == 401 and "wrong account name or password" in again.text
    browser.close()


# ----------------------------------------------------------------------------- roles
@pytest.mark.parametrize("path,options", [
    ("/api/v1/cycling", {"files": {"file": ("c.csv", b"a,b\n1,2\n")}, "data": {"cell": "C1"}}),
    ("/api/v1/xas", {"files": {"file": ("s.xdi", b"1 2\n")}, "data": {"sample": "x", "edge": "Ni-K"}}),
    ("/api/v1/xrd", {"data": {"sample": "x", "i003_i104": "1.2"}}),
    ("/api/v1/scans/1/analyses", {"json": {}}),
])
def test_a_viewers_write_is_403(site, path, options):
    with _client(site, "viewer") as client:
        _json_error(client.post(path, **options), 403, "needs the editor role", "'viewer' is a viewer")


def test_editor_pages_refuse_viewers(site):
    viewer, editor = _signed_in(site, "viewer"), _signed_in(site, "editor")
    for path in ("/sql", "/upload"):
        refused = viewer.get(path)
        assert refused.status_code == 403 and "needs the editor role" in refused.text
        assert editor.get(path).status_code == 200
    viewer.close()
    editor.close()


# ----------------------------------------------------------------------------- sessions
def test_login_sets_a_strict_session_cookie_and_logout_ends_it(site):
    client = _client(site)
    answer = login(client, "editor", site.accounts["editor"].password, next="/samples")
    assert answer.status_code == 303 and answer.headers["location"] == "/samples"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("txmdb_session=")
    for flag in ("HttpOnly", "SameSite=lax", "Path=/", "Max-Age=43200"):
        assert flag in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    secret = client.cookies["txmdb_session"]
    page = client.get("/samples")
    assert page.status_code == 200 and "editor" in page.text
    # Logging out needs the page's CSRF token; afterwards the old cookie opens nothing.
    assert client.post("/logout").status_code == 403
    assert client.get("/samples").status_code == 200
    out = client.post("/logout", data={"csrf_token": _csrf(page)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    with _client(site) as other:
        other.cookies.set("txmdb_session", secret)
        assert other.get("/samples").status_code == 303
    client.close()


def test_open_redirects_are_refused(site):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "/login"):
        with _client(site) as client:
            answer = login(client, "viewer", site.accounts["viewer"].password, next=target)
            assert answer.status_code == 303 and answer.headers["location"] == "/", target


def test_behind_an_https_proxy_cookies_are_secure(site):
    https = {"X-Forwarded-Proto": "https"}  # from 127.0.0.1, which --forwarded-allow-ips trusts by default
    with _client(site, headers=https) as client:
        page = client.get("/login")
        assert page.headers["strict-transport-security"] == "max-age=31536000"
        answer = client.post("/login", data={"username": "viewer", "password": site.accounts["viewer"].password,
                                             "csrf_token": _csrf(page)},
                             cookies={"txmdb_csrf": page.cookies["txmdb_csrf"]})
        assert answer.status_code == 303, answer.text
        assert "Secure" in answer.headers["set-cookie"] and "HttpOnly" in answer.headers["set-cookie"]


def test_form_posts_without_their_csrf_token_are_403(site):
    with _client(site) as client:
        client.get("/login")
        password = site.accounts["editor"].password
        for data in ({"username": "editor", "password": password},
                     {"username": "editor", "password": password, "csrf_token": "0" * 64}):
            refused = client.post("/login", data=data)
            assert refused.status_code == 403 and "CSRF" in refused.text
    with _client(site) as fresh:  # no CSRF cookie at all, a token copied from another browser
        other = _client(site)
        stolen = _csrf(other.get("/login"))
        refused = fresh.post("/login", data={"username": "editor", "password": password, "csrf_token": stolen})
        assert refused.status_code == 403
        other.close()
    editor = _signed_in(site, "editor")
    token = _csrf(editor.get("/upload"))
    refused = editor.post("/sql", data={"statement": "SELECT 1"})
    assert refused.status_code == 403
    assert editor.post("/sql", data={"statement": "SELECT 1 AS one", "csrf_token": token}).status_code == 200
    # The API, called by the browser's session (not a token), needs the token too.
    xrd = {"sample": HOSTILE["name"], "i003_i104": "1.25"}
    _json_error(editor.post("/api/v1/xrd", data=xrd), 403, "CSRF")
    _json_error(editor.post("/api/v1/xrd", data=xrd, headers={"X-CSRF-Token": "f" * 64}), 403, "CSRF")
    assert editor.post("/api/v1/xrd", data={**xrd, "csrf_token": token}).status_code == 201
    assert editor.post("/api/v1/xrd", data=xrd, headers={"X-CSRF-Token": token}).status_code == 201
    # Another session's token is no token for this one.
    viewer_token = _csrf(_signed_in(site, "viewer").get("/"))
    _json_error(editor.post("/api/v1/xrd", data=xrd, headers={"X-CSRF-Token": viewer_token}), 403, "CSRF")
    editor.close()


def test_failed_logins_are_rate_limited_per_account(site):
    password = site.accounts["victim"].password
    with _client(site) as client:
        for _ in range(5):
            answer = login(client, "victim", WRONG_PASSWORD)
            assert answer.status_code == 401 and "wrong account name or password" in answer.text
            assert WRONG_PASSWORD not in answer.text
        blocked = login(client, "victim", password)
        assert blocked.status_code == 429 and "too many failed sign-ins" in blocked.text
        assert 0 < int(blocked.headers["retry-after"]) <= 15 * 60
        assert login(client, "admin", site.accounts["admin"].password).status_code == 303  # others still can


# ----------------------------------------------------------------------------- pages
def test_markup_in_names_is_escaped_and_pages_carry_a_strict_csp(site):
    editor = _signed_in(site, "editor")
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    for path in ("/", "/samples", "/samples/" + quote(HOSTILE["name"], safe=""), "/query/samples",
                 "/samples/" + quote("<script>alert(3)</script>", safe="")):
        page = editor.get(path)
        assert page.status_code in (200, 404), (path, page.status_code)
        assert "<img src=x" not in page.text and "<script>alert" not in page.text and "<b>rod" not in page.text
        if page.status_code == 200:
            assert escaped in page.text, path
        csp = page.headers["content-security-policy"]
        scripts = re.search(r"script-src ([^;]*)", csp).group(1)
        assert scripts.split() == ["'self'"] and "unsafe" not in scripts
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
        assert inline_scripts(page.text) == [], path
    editor.close()


def test_public_read_lets_anonymous_visitors_read_only(site):
    server = site.start("--public-read")
    with site.client(server) as anonymous:
        assert anonymous.get("/api/v1/query/samples", params={"format": "csv"}).status_code == 200
        assert anonymous.get("/samples").status_code == 200
        _json_error(anonymous.post("/api/v1/xrd", data={"sample": "x", "i003_i104": "1"}), 401)
        assert anonymous.get("/sql").status_code == 401
    with site.client(server, "viewer") as viewer:
        _json_error(viewer.post("/api/v1/xrd", data={"sample": "x", "i003_i104": "1"}), 403)


def test_first_start_prints_a_one_time_admin_link(request, tmp_path_factory, site):
    with served_catalogue(request, tmp_path_factory, site.backend) as empty:
        server = empty.start()
        links = re.findall(r"http://\S+/setup\?token=(\S+)", server.log())
        assert len(links) == 1, server.log()
        with empty.client(server) as client:
            assert client.get("/setup", params={"token": "guess"}).status_code == 404
            form = client.get("/setup", params={"token": links[0]})
            assert form.status_code == 200
            post = {"token": links[0], "username": "boss", "password": "boss-password-1", "csrf_token": _csrf(form)}
            assert client.post("/setup", data={**post, "csrf_token": "0" * 64}).status_code == 403
            made = client.post("/setup", data=post)
            assert made.status_code == 303 and made.headers["location"] == "/"
            assert client.get("/samples").status_code == 200  # signed in as the new admin
            assert client.get("/setup", params={"token": links[0]}).status_code == 404  # once only
        with empty.client(server) as stranger:
            again = {**post, "username": "boss2", "csrf_token": _csrf(stranger.get("/login"))}
            assert stranger.post("/setup", data=again).status_code == 404
        listed = empty.cli("user", "list", "--format", "csv").stdout.splitlines()
        assert [line.split(",")[:3] for line in listed] == [["name", "role", "disabled"], ["boss", "admin", "False"]]
        site.typed_passwords.append("boss-password-1")
        assert "boss-password-1" not in server.log()


def test_passwords_and_tokens_never_reach_the_log_or_pages(site):
    """Last: every password typed in this module (right and wrong) and every token."""
    log = "\n".join(server.log() for server in site.servers)
    assert "POST /login" in log  # the log does record requests
    secrets = [a.password for a in site.accounts.values()] + [a.token for a in site.accounts.values()]
    for secret in secrets + site.typed_passwords:
        assert secret not in log
    listed = site.cli("user", "list")
    assert listed.returncode == 0 and "argon2" not in listed.stdout
    for secret in secrets:
        assert secret not in listed.stdout


# ----------------------------------------------------------------------------- the CLI
def test_user_commands(cli):
    import hashlib
    import hmac

    import sqlalchemy as sa

    assert cli("init").exit_code == 0
    added = cli("user", "add", "alice", "--role", "editor", "--password-stdin", input="alice-password\n")
    assert (added.exit_code, added.output) == (0, "account alice added as editor (id 1)\n")
    prompted = cli("user", "add", "bob", "--role", "viewer", input="bob-password-9\nbob-password-9\n")
    assert prompted.exit_code == 0 and prompted.output.splitlines()[-1] == "account bob added as viewer (id 2)"
    assert "bob-password-9" not in prompted.output  # the prompt does not echo
    for args, input, code, line in [
        (["user", "add", "alice", "--role", "viewer", "--password-stdin"], "another-password\n", 1,
         "error: account 'alice' exists already"),
        (["user", "add", "bad name", "--role", "viewer", "--password-stdin"], "another-password\n", 1,
         "error: account name 'bad name': use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or "
         "digit"),
        (["user", "add", "carol", "--role", "viewer", "--password-stdin"], "short\n", 1,
         "error: the password must have 10 to 1024 characters"),
        (["user", "token", "nobody"], None, 1, "error: no account named 'nobody'"),
        (["user", "disable", "nobody"], None, 1, "error: no account named 'nobody'"),
    ]:
        done = cli(*args, input=input)
        assert (done.exit_code, done.output.splitlines()[-1]) == (code, line), done.output
    for args in (["user", "add", "dave", "--role", "owner", "--password-stdin"],
                 ["user", "token", "alice", "--expires-days", "0"]):
        assert cli(*args, input="dave-password-1\n").exit_code == 2
    issued = cli("user", "token", "alice", "--expires-days", "30")
    assert issued.exit_code == 0
    lines = issued.output.splitlines()
    assert lines[0] == ("API token of account alice (expires in 30 days); send it as "
                        "'Authorization: Bearer TOKEN':")
    token = lines[-1]
    assert re.fullmatch(r"txmdb_[A-Za-z0-9_-]{43}", token)
    engine = sa.create_engine(cli.url)
    with engine.connect() as conn:
        key = bytes.fromhex(conn.execute(sa.text("SELECT key_hex FROM web_key")).scalar_one())
        stored = conn.execute(sa.text("SELECT token_hash FROM api_tokens")).scalars().all()
        digests = conn.execute(sa.text("SELECT password_hash FROM users ORDER BY id")).scalars().all()
    engine.dispose()
    assert stored == [hmac.new(key, b"token\0" + token.encode(), hashlib.sha256).hexdigest()]
    assert all(d.startswith("$argon2id$") for d in digests) and len(digests) == 2  # carol was not added
    listed = cli("user", "list", "--format", "csv")
    rows = [line.split(",") for line in listed.output.splitlines()]
    assert rows[0] == ["name", "role", "disabled", "created_at", "created_by", "api_tokens"]
    assert [(r[0], r[1], r[2], r[5]) for r in rows[1:]] == [("alice", "editor", "False", "1"),
                                                             ("bob", "viewer", "False", "0")]
    assert cli("user", "disable", "alice").output == "account alice disabled\n"
    assert cli("user", "token", "alice").output == "error: account 'alice' is disabled\n"
    assert cli("user", "list", "--format", "csv").output.splitlines()[1].split(",")[2] == "True"
    # disabling deleted the token: enabled again, alice has none (and the old one stays dead)
    assert cli("user", "list", "--format", "csv").output.splitlines()[1].split(",")[5] == "0"
    assert cli("user", "enable", "alice").output == "account alice enabled\n"
    assert cli("user", "list", "--format", "csv").output.splitlines()[1].split(",")[2:6:3] == ["False", "0"]
    # another role, another password; each refused for a missing account or a bad value
    assert cli("user", "role", "alice", "admin").output == "account alice is now admin\n"
    assert cli("user", "list", "--format", "csv").output.splitlines()[1].split(",")[1] == "admin"
    assert cli("user", "password", "alice", "--password-stdin", input="alice-new-password\n").output == \
        "password of account alice set\n"
    engine = sa.create_engine(cli.url)
    with engine.connect() as conn:
        changed = conn.execute(sa.text("SELECT password_hash FROM users WHERE name = 'alice'")).scalar_one()
    engine.dispose()
    from argon2 import PasswordHasher

    assert changed != digests[0] and PasswordHasher().verify(changed, "alice-new-password")
    for args, input, code, line in [
        (["user", "enable", "nobody"], None, 1, "error: no account named 'nobody'"),
        (["user", "role", "nobody", "viewer"], None, 1, "error: no account named 'nobody'"),
        (["user", "password", "nobody", "--password-stdin"], "nobody-password\n", 1,
         "error: no account named 'nobody'"),
        (["user", "password", "alice", "--password-stdin"], "short\n", 1,
         "error: the password must have 10 to 1024 characters"),
    ]:
        done = cli(*args, input=input)
        assert (done.exit_code, done.output.splitlines()[-1]) == (code, line), done.output
    assert cli("user", "role", "alice", "owner").exit_code == 2


def test_the_sql_console_never_reads_account_tables(cli):
    assert cli("init").exit_code == 0
    assert cli("user", "add", "alice", "--role", "admin", "--password-stdin", input="alice-password\n").exit_code == 0
    assert cli("user", "token", "alice").exit_code == 0
    # PostgreSQL: the reporting role was made before the schema (migration 0008 revoked what its
    # default privileges gave), and made again after it (db reporting-role grants all but these).
    for again in ([], ["db", "reporting-role"]) if cli.url.startswith("postgresql") else ([],):
        if again:
            assert cli(*again).exit_code == 0
        for statement in ("SELECT password_hash FROM users", "SELECT token_hash FROM api_tokens",
                          "SELECT key_hex FROM web_key", "SELECT * FROM sessions",
                          "SELECT username FROM login_attempts",
                          "SELECT s.name FROM samples s JOIN users u ON u.name = s.name"):
            done = cli("query", "sql", statement)
            assert done.exit_code == 1 and done.output.startswith("error: query sql: "), (statement, done.output)
            assert "argon2" not in done.output
    assert cli("query", "sql", "SELECT count(*) AS n FROM samples", "--format", "csv").output == "n\n0\n"


def test_every_write_records_who_made_it(cli):
    import getpass

    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    assert cli("cell", "add", "C", "--sample", "S", "--active-mass-mg", "5").exit_code == 0
    shown = cli("query", "sql", "SELECT (SELECT created_by FROM samples) AS s, (SELECT created_by FROM cells) AS c",
                "--format", "csv")
    assert shown.output == f"s,c\nos:{getpass.getuser()},os:{getpass.getuser()}\n"


def test_under_a_root_path_links_redirects_and_cookies_keep_the_prefix(site):
    server = site.start("--root-path", "/txmdb")
    # The proxy strips /txmdb before passing the request on, as Caddy's handle_path and nginx's
    # proxy_pass with a trailing slash do.
    with site.client(server) as client:
        assert client.get("/api/v1/health").status_code == 200
        answer = client.get("/samples")
        assert answer.status_code == 303 and answer.headers["location"] == "/txmdb/login?next=%2Fsamples"
        page = client.get("/login")
        assert 'action="/txmdb/login"' in page.text and 'href="/txmdb/static/css/txmdb.css"' in page.text
        assert "Path=/txmdb" in page.headers["set-cookie"]
        # The browser sends /txmdb cookies to /txmdb/login, which reaches the server as /login.
        signed = client.post("/login", data={"username": "viewer", "password": site.accounts["viewer"].password,
                                             "csrf_token": _csrf(page), "next": "/samples"},
                             cookies={"txmdb_csrf": page.cookies["txmdb_csrf"]})
        assert signed.status_code == 303 and signed.headers["location"] == "/txmdb/samples"
        assert "Path=/txmdb" in signed.headers["set-cookie"]
    assert site.cli("sample", "add", "under-prefix").returncode == 0
    with site.client(server, "editor") as editor:
        answer = editor.post("/api/v1/xrd", data={"sample": "under-prefix", "i003_i104": "1.25"})
        assert answer.status_code == 201, answer.text
        assert answer.headers["location"] == "/txmdb/api/v1/query/xrd?sample=under-prefix"


# ----------------------------------------------------------------------------- menu by role
@pytest.mark.parametrize("role, offered", [
    ("viewer", ["/", "/samples", "/compare", "/query/scans", "/jobs", "/harvest"]),
    ("editor", ["/", "/samples", "/compare", "/query/scans", "/sql", "/jobs", "/harvest", "/upload"]),
    ("admin", ["/", "/samples", "/compare", "/query/scans", "/sql", "/jobs", "/harvest", "/upload"]),
])
def test_the_menu_offers_only_the_pages_the_account_may_open(site, role, offered):
    """A viewer was offered SQL and Upload, which then answered 403 (session 27's review)."""
    client = _signed_in(site, role)
    page = client.get("/")
    assert page.status_code == 200
    nav = re.search(r"<nav>(.*?)</nav>", page.text, re.S).group(1)
    assert re.findall(r'<a href="([^"]+)"', nav) == offered
    for path in offered:
        assert client.get(path).status_code == 200, path
    for path in {"/sql", "/upload"} - set(offered):       # what is not offered is refused
        assert client.get(path).status_code == 403, path
    client.close()
