"""An outsider's and a malicious viewer's or editor's attacks on ``txmdb serve`` (issue 13),
against real server processes on SQLite and PostgreSQL.

Each test is one attack: credentials around the gate in every spelling of every route, the
session's life (fixation, logout, expiry), cookie flags behind untrusted proxies, CSRF on
cookie-authenticated API posts, the login rate limit as a lock-out weapon and its bypass by
forged ``X-Forwarded-For``, tokens outside the header, role escalation, markup in every
stored string, hostile uploads, slice and query garbage, the SQL console under the CLI's
hardening statements, open redirects, secrets in logs, and a fuzzer over the OpenAPI spec.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import random
import re
import socket
import zipfile
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from tests.conftest import BACKENDS
from tests.web_server import inline_scripts, served_catalogue
from txmdb.web.advice import ASK

XSS = "<script>alert(13)</script>"
IMG = "<img src=x onerror=alert(14)>"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PUBLIC_PAGES = ("/api/v1/health", "/login")


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    """The demo's catalogue plus markup in every free-text field, accounts of each role, and a server."""
    with served_catalogue(request, tmp_path_factory, request.param, populate=True) as served:
        for args in (["sample", "add", IMG, "--morphology", "<b>m</b>", "--notes", XSS, "--meta", f"{XSS}={IMG}"],
                     ["cell", "add", XSS, "--sample", IMG, "--active-mass-mg", "5"]):
            done = served.cli(*args)
            assert done.returncode == 0, done.stderr
        for role in ("viewer", "editor", "admin"):
            served.add_account(role)
        served.add_account("admin", "boss")
        served.add_account("editor", "target")
        _hostile_jobs_and_harvest(served)
        served.server = served.start("--max-upload-mb", "1")
        yield served


def _catalog(site):
    from txmdb.catalog import open_catalog

    return open_catalog(site.url, site.store, check=False)


def _hostile_jobs_and_harvest(site) -> None:
    from txmdb.db.models import HarvestedFile, Job

    catalog = _catalog(site)
    with catalog.session() as session:
        session.add(Job(kind="analyze", parameters={XSS: IMG}, scan_id=1, status="failed", error=XSS + IMG,
                        created_by="editor"))
        session.add(HarvestedFile(path=f"/data/{XSS}/{IMG}.csv", rule=IMG, kind="cycling", status="failed",
                                  error=XSS))
    catalog.engine.dispose()


def _client(site, account=None, server=None, **options):
    return site.client(server or site.server, account, **options)


def _csrf(page) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text[:300]
    return found.group(1)


def _address() -> str:
    """A TEST-NET address of its own for each sign-in, so one test's failures never limit another's."""
    return f"198.51.100.{random.randrange(1, 255)}"


def login(client, name: str, password: str, *, address: str | None = None, next: str = "/"):
    headers = {"X-Forwarded-For": address or _address()}
    token = _csrf(client.get("/login", headers=headers))
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token, "next": next},
                       headers=headers)


def _signed_in(site, name: str, server=None):
    client = _client(site, server=server)
    answer = login(client, name, site.accounts[name].password)
    assert answer.status_code == 303, answer.text
    return client


def _raw(base: str, target: str, method: str = "GET", headers: str = "") -> tuple[int, dict, bytes]:
    """A request line sent as is (no client normalises ``..``, ``//`` or ``%2e``)."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    with socket.create_connection((host, port), timeout=60) as s:
        length = "" if "content-length" in headers.lower() else "Content-Length: 0\r\n"
        s.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{length}{headers}\r\n".encode())
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, body


def _routes() -> list[tuple[str, list[str]]]:
    """Every route of the application as (path, methods), included routers walked."""
    from txmdb.web.app import create_app

    def walk(routes, prefix=""):
        for r in routes:
            if hasattr(r, "original_router"):  # FastAPI's included router
                yield from walk(r.original_router.routes, prefix + r.include_context.prefix)
            elif hasattr(r, "path"):
                yield prefix + r.path, sorted(getattr(r, "methods", None) or ["GET"])

    class NoCatalogue:
        engine = None

    found = list(walk(create_app(NoCatalogue()).routes))
    assert len(found) > 40 and ("/sql", ["POST"]) in found, found
    return found


def _concrete(path: str) -> str:
    return re.sub(r"\{name:path\}", "NMC-rod", re.sub(r"\{(scan_id|job_id)\}", "1", re.sub(
        r"\{(table|table_name)\}", "samples", path)))


def _spellings(path: str) -> list[str]:
    bare = path.lstrip("/")
    return [path, path + "/", "/" + path, path.replace("/", "//"), path.replace("/", "/./"), path + "?x=1",
            path + ";x", path + "%00", path.replace("/", "%2F"), path.replace("a", "%61", 1), path.upper(),
            "/static/.." + path, "/static/%2e%2e" + path, "/static/..%2f" + bare, "/static/css/../.." + path,
            "/api/v1/health/.." + path, "/api/v1/health/../.." + path, "/api/v1/health" + path,
            "/login/.." + path, "/login/%2e%2e" + path, "/login" + path, "/setup" + path, "/static" + path,
            "http://x" + path]


def _public_answer(status: int, headers: dict, body: bytes) -> bool:
    """What an anonymous request may get: health, the login form, a static asset."""
    kind = headers.get("content-type", "")
    if body.startswith(b'{"status":"ok","schema"'):
        return True
    if kind.startswith("text/html") and b'name="password"' in body and b"<table" not in body:
        return True
    return kind.startswith(("text/css", "text/javascript", "application/javascript"))


# ----------------------------------------------------------------------------- the gate
@pytest.mark.parametrize("root", ["", "/txmdb"])
def test_no_route_answers_anonymous_requests_in_any_spelling(site, root):
    server = site.server if not root else site.start("--root-path", root)
    seen = 0
    for route, methods in _routes():
        path = _concrete(route)
        targets = [root + s for s in _spellings(path)]
        if root:  # the prefix left out, doubled or glued on
            targets += [path, root + root + path, root + "x" + path, root + "/.." + path, root + "%2F" + path.lstrip("/")]
        for target in targets:
            for method in sorted({"GET", "HEAD", "OPTIONS", "POST", *methods}):
                status, headers, body = _raw(server.base, target, method)
                seen += 1
                assert status < 500, (method, target, status, body[:300])
                assert "content-security-policy" in headers, (method, target, status)
                if 200 <= status < 300:
                    assert _public_answer(status, headers, body), (method, target, status, body[:200])
                if status == 401 and method != "HEAD":
                    assert body.startswith(b'{"error"'), (method, target, body[:200])
                if status in (302, 303, 307):
                    location = headers["location"]
                    assert location.startswith(root + "/") and not location.startswith("//"), (target, location)
    assert seen > 4000


def test_static_files_stay_inside_their_folder(site):
    for target in ("/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/auth.py", "/static/..%5capp.py",
                   "/static/css/../../templates/base.html", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
                   "/static/css/..%2f..%2f..%2f__init__.py"):
        status, headers, body = _raw(site.server.base, target)
        assert status == 404 and b"import" not in body and b"{%" not in body, (target, status, body[:100])
        assert "content-security-policy" in headers
    status, headers, _ = _raw(site.server.base, "/static/css/txmdb.css")
    assert status == 200 and "content-security-policy" in headers


# ----------------------------------------------------------------------------- sessions and cookies
def _expire_sessions(site) -> None:
    import sqlalchemy as sa

    catalog = _catalog(site)
    with catalog.engine.begin() as conn:
        conn.execute(sa.text("UPDATE sessions SET expires_at = :t"), {"t": dt.datetime(2001, 1, 1)})
    catalog.engine.dispose()


def test_a_planted_cookie_is_never_adopted_and_logout_and_expiry_end_sessions_server_side(site):
    planted = "attacker-chosen-session-value-0123456789abcdef"
    with _client(site, cookies={"txmdb_session": planted}) as client:
        assert client.get("/samples").status_code == 303  # an unknown cookie is no session
        signed = login(client, "viewer", site.accounts["viewer"].password)
        assert signed.status_code == 303
        cookie = re.search(r"txmdb_session=([^;]+)", signed.headers["set-cookie"]).group(1)
        assert cookie != planted and len(cookie) >= 40
        flags = signed.headers["set-cookie"].lower()
        assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags and "path=/" in flags
    with _client(site, cookies={"txmdb_session": planted}) as attacker:
        assert attacker.get("/samples").status_code == 303
    with _client(site, cookies={"txmdb_session": cookie}) as victim:
        assert victim.get("/samples").status_code == 200
        token = _csrf(victim.get("/samples"))
        assert victim.post("/logout", data={"csrf_token": token}).status_code == 303
    with _client(site, cookies={"txmdb_session": cookie}) as replay:  # the old cookie, kept by a thief
        assert replay.get("/samples").status_code == 303
        assert replay.get("/api/v1/query/samples").status_code == 401
    later = _signed_in(site, "viewer")
    assert later.get("/samples").status_code == 200
    _expire_sessions(site)
    assert later.get("/samples").status_code == 303
    assert later.get("/api/v1/query/samples").status_code == 401
    later.close()


def test_x_forwarded_proto_from_an_untrusted_peer_makes_no_secure_cookie(site):
    server = site.start("--forwarded-allow-ips", "192.0.2.1")
    with _client(site, server=server, headers={"X-Forwarded-Proto": "https"}) as client:
        token = _csrf(client.get("/login"))
        answer = client.post("/login", data={"username": "viewer", "password": site.accounts["viewer"].password,
                                             "csrf_token": token})
        assert answer.status_code == 303
        assert "secure" not in answer.headers["set-cookie"].lower()
        assert "strict-transport-security" not in answer.headers


# ----------------------------------------------------------------------------- CSRF
def test_cookie_authenticated_api_posts_need_this_sessions_csrf_token(site):
    editor, viewer = _signed_in(site, "editor"), _signed_in(site, "viewer")
    own, others = _csrf(editor.get("/upload")), _csrf(viewer.get("/samples"))
    with _client(site) as stranger:
        anonymous = _csrf(stranger.get("/login"))
        anonymous_cookie = stranger.cookies["txmdb_csrf"]
    jobs_before = len(_client(site, "viewer").get("/api/v1/jobs").json()["items"])
    forged = [
        dict(json={"bin": "1"}),  # fetch() from another site cannot add the header
        dict(content=b'{"bin": "1"}', headers={"Content-Type": "text/plain"}),  # a cross-site form's JSON
        dict(data={"bin": "1"}),
        dict(data={"csrf_token": ""}),
        dict(data={"csrf_token": others}),
        dict(data={"csrf_token": "0" * 64}),
        dict(json={}, headers={"X-CSRF-Token": others}),
        dict(json={}, headers={"X-CSRF-Token": anonymous}),
        dict(json={}, headers={"X-CSRF-Token": anonymous}, cookies={"txmdb_csrf": anonymous_cookie}),
        dict(content=b"csrf_token=" + own.encode(), headers={"Content-Type": "text/form"}),
        dict(content=b'{"csrf_token": "' + own.encode() + b'"}', headers={"Content-Type": "application/json"}),
    ]
    for options in forged:
        answer = editor.post("/api/v1/scans/1/analyses", **options)
        assert answer.status_code in (403, 422), (options, answer.status_code, answer.text)
        if answer.status_code == 403:
            assert "CSRF" in answer.json()["error"]
    for path in ("/api/v1/cycling", "/api/v1/xas", "/api/v1/xrd"):
        answer = editor.post(path, data={"sample": IMG, "cell": XSS, "edge": "Ni-K", "i003_i104": "1.2",
                                         "csrf_token": others}, files={"file": ("a.csv", b"1,2\n")})
        assert answer.status_code == 403 and "CSRF" in answer.json()["error"], (path, answer.text)
    assert editor.post("/sql", data={"statement": "SELECT 1", "csrf_token": others}).status_code == 403
    assert editor.post("/logout", data={"csrf_token": others}).status_code == 403
    assert editor.get("/samples").status_code == 200  # not logged out by a forged post
    assert len(_client(site, "viewer").get("/api/v1/jobs").json()["items"]) == jobs_before
    accepted = editor.post("/api/v1/scans/1/analyses", json={}, headers={"X-CSRF-Token": own})
    assert accepted.status_code == 202, accepted.text
    editor.close()
    viewer.close()


# ----------------------------------------------------------------------------- login rate limit
def test_failures_from_elsewhere_never_lock_the_admin_out(site):
    attacker, admin = "203.0.113.66", "203.0.113.7"
    with _client(site) as client:
        for _ in range(8):
            answer = login(client, "boss", "not-the-password-1", address=attacker)
            assert answer.status_code in (401, 429)
        blocked = login(client, "boss", site.accounts["boss"].password, address=attacker)
        assert blocked.status_code == 429 and 0 < int(blocked.headers["retry-after"]) <= 15 * 60
        # The attacker's own address is closed to that name; the admin's is not.
        assert login(client, "boss", site.accounts["boss"].password, address=admin).status_code == 303


def test_forged_forwarded_for_does_not_reset_the_limit(site):
    # A trusted proxy appends the peer's address: the client's own X-Forwarded-For entries are ignored.
    real = "203.0.113.99"
    with _client(site) as client:
        for n in range(5):
            assert login(client, "target", "wrong-password-1", address=f"10.9.9.{n}, {real}").status_code == 401
        assert login(client, "target", site.accounts["target"].password,
                     address=f"10.9.9.77, {real}").status_code == 429
    # Straight from a peer that is no trusted proxy, the header counts for nothing at all.
    server = site.start("--forwarded-allow-ips", "192.0.2.1")
    with _client(site, server=server) as client:
        for n in range(5):
            assert login(client, "admin", "wrong-password-2", address=f"10.8.8.{n}").status_code == 401
        assert login(client, "admin", site.accounts["admin"].password, address="10.8.8.200").status_code == 429


# ----------------------------------------------------------------------------- tokens and roles
def test_tokens_only_in_the_header_and_only_their_hmac_stored(site):
    import sqlalchemy as sa

    token = site.accounts["viewer"].token
    for options in (dict(params={"token": token}), dict(params={"access_token": token}),
                    dict(cookies={"txmdb_session": token}), dict(headers={"Authorization": f"Token {token}"}),
                    dict(headers={"Authorization": f"Bearer {token}x"}), dict(headers={"Authorization": "Bearer " + token[:-1]}),
                    dict(headers={"Authorization": f"Bearer {token.upper()}"}),
                    dict(headers={"Authorization": "Bearer " + "txmdb_" + "x" * 5000})):
        with _client(site, **options) as client:
            assert client.get("/api/v1/query/samples").status_code == 401, options
    catalog = _catalog(site)
    with catalog.engine.connect() as conn:
        stored = [str(v) for row in conn.execute(sa.text("SELECT * FROM api_tokens")) for v in row]
        sessions = [str(v) for row in conn.execute(sa.text("SELECT * FROM sessions")) for v in row]
    catalog.engine.dispose()
    assert stored and not any(a.token in v or a.token.removeprefix("txmdb_") in v
                              for a in site.accounts.values() for v in stored)
    assert all(not v.startswith("txmdb_") for v in stored + sessions)


@pytest.mark.parametrize("account", ["viewer", "viewer-session"])
def test_a_viewer_cannot_write_by_any_door(site, account):
    if account == "viewer":
        client, csrf = _client(site, "viewer"), {}
    else:
        client = _signed_in(site, "viewer")
        csrf = {"csrf_token": _csrf(client.get("/samples"))}
    headers = {"X-CSRF-Token": csrf["csrf_token"]} if csrf else {}
    try:
        writes = [("/api/v1/cycling", dict(data={"cell": XSS, **csrf}, files={"file": ("a.csv", b"t,v\n")})),
                  ("/api/v1/xas", dict(data={"sample": IMG, "edge": "Ni-K", **csrf}, files={"file": ("a.xdi", b"1 2")})),
                  ("/api/v1/xrd", dict(data={"sample": IMG, "i003_i104": "1.3", **csrf})),
                  ("/api/v1/scans/1/analyses", dict(json={}, headers=headers)),
                  ("/sql", dict(data={"statement": "SELECT 1", **csrf}))]
        for path, options in writes:
            answer = client.post(path, **options)
            assert answer.status_code == 403 and "editor" in answer.text, (path, answer.status_code, answer.text)
        for path in ("/sql", "/upload"):
            assert client.get(path).status_code == 403
    finally:
        client.close()
    # No route manages accounts over HTTP: an editor (or anyone) has nothing to escalate with.
    assert not [p for p, _ in _routes() if "user" in p or "token" in p or "admin" in p]


# ----------------------------------------------------------------------------- markup everywhere
def _assert_inert(page, path: str) -> None:
    assert page.status_code < 500, (path, page.status_code)
    for raw in (XSS, IMG, "<b>m</b>"):
        assert raw not in page.text, (path, raw)
    assert inline_scripts(page.text) == [], path
    csp = page.headers["content-security-policy"]
    # Pages allow their own script files only; the framed compare report allows no script at all.
    assert "script-src 'self';" in csp or ("default-src 'none'" in csp and "script-src" not in csp), path


def test_markup_in_every_stored_string_is_shown_as_text(site):
    from txmdb.query import QUERIES

    editor = _signed_in(site, "editor")
    pages = ["/", "/samples", "/samples/" + quote(IMG, safe=""), "/jobs", "/harvest", "/jobs?status=failed",
             "/harvest?status=failed", "/compare", "/compare?" + "sample=" + quote(IMG, safe=""),
             "/compare/report?sample=" + quote(IMG, safe=""), "/upload",
             "/samples?q=" + quote(XSS), "/samples?meta=" + quote(XSS), "/samples?ni_min=" + quote(XSS),
             "/query/samples?sample=" + quote(XSS), "/query/" + quote(XSS, safe=""), "/scans/1?x=" + quote(XSS),
             "/samples/" + quote(XSS, safe=""), "/jobs?status=" + quote(XSS), "/compare?cycle=" + quote(XSS),
             "/" + quote(XSS, safe="")]
    pages += [f"/query/{name}" for name in QUERIES]
    escaped = 0
    for path in pages:
        page = editor.get(path)
        _assert_inert(page, path)
        escaped += "&lt;script&gt;alert(13)" in page.text
    assert escaped >= 6  # the strings are there, as text
    for statement in (f"SELECT '{XSS}' AS \"{IMG}\"", f"SELECT notes, meta FROM samples", f"SELECT '{IMG}' FROM nowhere_{0}",
                      XSS):
        page = editor.post("/sql", data={"statement": statement, "csrf_token": _csrf(editor.get("/sql"))})
        _assert_inert(page, statement)
    editor.close()


# ----------------------------------------------------------------------------- uploads
def _store_files(site) -> set[str]:
    return {str(p.relative_to(site.store)) for p in site.store.rglob("*") if p.is_file()}


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.ndc", b"\0" * (200 << 20))  # 200 MB of zeros in about 200 kB
    return buffer.getvalue()


def test_hostile_uploads_are_refused_in_one_json_line_and_leave_nothing(site, tmp_path):
    before, outside = _store_files(site), set(site.root.iterdir())
    cases = [
        ("cycling", {"file": ("../../../../evil.ndax", _zip_bomb())}, {"cell": XSS}),
        ("cycling", {"file": (f"../{IMG}.csv", b"\x89PNG\r\n\x1a\n" + b"\0" * 100)}, {"cell": XSS}),
        ("cycling", {"file": ("/etc/passwd", b"root:x:0:0::/root:/bin/sh\n")}, {"cell": XSS}),
        ("xas", {"file": ("..\\..\\evil.xdi", b"not a spectrum")}, {"sample": IMG, "edge": "Ni-K"}),
        ("xas", {"file": ("a.xdi", b"1 2\n")}, {"sample": IMG, "edge": "../../etc"}),
        ("xrd", {"file": ("x.xy", b"garbage")}, {"sample": IMG, "wavelength": "nan"}),
        ("cycling", {}, {"cell": XSS}),
    ]
    with _client(site, "editor") as editor:
        for kind, files, data in cases:
            answer = editor.post(f"/api/v1/{kind}", files=files or None, data=data)
            assert 400 <= answer.status_code < 500, (kind, files and next(iter(files.values()))[0], answer.text)
            body = answer.json()
            assert set(body) == {"error", "status"} and "\n" not in body["error"] and str(site.store) not in body["error"]
        # A thousand form fields, then a thousand files: refused or ignored, never a 500.
        many = editor.post("/api/v1/xrd", data={f"f{i}": "x" for i in range(1500)} | {"sample": IMG})
        assert 400 <= many.status_code < 500, many.text
        parts = [("file", (f"{i}.csv", b"x")) for i in range(1200)]
        assert 400 <= editor.post("/api/v1/cycling", files=parts, data={"cell": XSS}).status_code < 500
        # A declared length beyond the limit is refused before a byte of it is read.
        status, _, body = _raw(site.server.base, "/api/v1/cycling", "POST",
                               f"Authorization: Bearer {site.accounts['editor'].token}\r\n"
                               "Content-Type: multipart/form-data; boundary=z\r\nContent-Length: 99999999999\r\n")
    assert status == 413 and b"upload limit" in body
    assert _store_files(site) == before and set(site.root.iterdir()) == outside


def test_a_slow_upload_does_not_stall_the_server(site):
    import httpx

    host, port = urlsplit(site.server.base).hostname, urlsplit(site.server.base).port
    with socket.create_connection((host, port), timeout=30) as slow:
        slow.sendall(f"POST /api/v1/cycling HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     f"{site.accounts['editor'].token}\r\nContent-Type: multipart/form-data; boundary=z\r\n"
                     "Content-Length: 5000\r\n\r\n--z\r\n".encode())
        answer = httpx.get(site.server.base + "/api/v1/health", timeout=10)
        assert answer.status_code == 200


# ----------------------------------------------------------------------------- slices and queries
@pytest.mark.parametrize("params,status", [
    ({"map": "../../../../etc/passwd"}, 422), ({"map": "fraction:../../x"}, 404), ({"map": "edge/../x"}, 422),
    ({"map": "cluster", "axis": "x"}, 404), ({"map": "\0"}, 422), ({"map": "a" * 201}, 422),
    ({"axis": "w"}, 422), ({"axis": ""}, 422), ({"index": -1}, 422), ({"index": 10 ** 30}, 422),
    ({"index": "1e3"}, 422), ({"index": "NaN"}, 422), ({"index": 16}, 422), ({"analysis": 0}, 422),
    ({"analysis": 99999}, 404), ({"map": "edge", "axis": "y", "index": 15}, 200),
])
def test_slice_garbage_is_a_json_error_without_server_paths(site, params, status):
    with _client(site, "viewer") as client:
        answer = client.get("/api/v1/scans/1/slice.png", params=params)
    assert answer.status_code == status, answer.text
    if status != 200:
        assert answer.json()["status"] == status and str(site.store) not in answer.text and ".h5" not in answer.text


def test_a_missing_results_file_is_a_503_not_a_traceback(site):
    with _client(site, "viewer") as client:
        maps = client.get("/api/v1/scans/2/maps").json()
        path = Path(site.store) / "analyses" / f"{maps['analysis_id']}.h5"
        moved = path.with_name(path.name + ".away")
        path.rename(moved)
        try:
            for url in ("/api/v1/scans/2/maps", "/api/v1/scans/2/slice.png"):
                answer = client.get(url)
                assert answer.status_code == 503, answer.text
                # a browser's reader is told whom to ask; the administrator finds the command in the log
                error = answer.json()["error"]
                assert error.endswith(ASK) and "txmdb " not in error and str(site.store) not in answer.text
        finally:
            moved.rename(path)
    assert "Traceback" not in site.server.log() and "run 'txmdb db check' to see why" in site.server.log()


def test_query_api_garbage(site):
    with _client(site, "viewer") as client:
        for params in ({"sample": "x' OR '1'='1"}, {"sample": "%"}, {"sample": "_"}, {"sample": "\\"},
                       {"sample": "'; DROP TABLE samples; --"}):
            answer = client.get("/api/v1/query/samples", params=params)
            assert answer.status_code == 200 and answer.json() == [], (params, answer.text)
        for path in ("/api/v1/query/samples", "/api/v1/query/xrd", "/api/v1/query/theta"):
            # SQLite compares a NUL like any character; PostgreSQL cannot hold one: a 422 then.
            answer = client.get(path, params={"sample": "a\0b"})
            assert (answer.status_code, answer.json()) == (200, []) or (
                answer.status_code == 422 and "NUL" in answer.json()["error"]), (path, answer.text)
        for path, params in (("/api/v1/query/samples", {"nope": "1"}), ("/api/v1/query/theta", {"scan": "1;drop"}),
                             ("/api/v1/query/theta", {"scan": str(10 ** 40)}), ("/api/v1/query/theta", {"format": "xml"}),
                             ("/api/v1/samples", {"limit": 10 ** 9}), ("/api/v1/samples", {"offset": 10 ** 19}),
                             ("/api/v1/samples", {"limit": -1}), ("/api/v1/jobs", {"status": XSS}),
                             ("/api/v1/query/samples", {"format": "csv'"})):
            answer = client.get(path, params=params)
            assert answer.status_code == 422 and set(answer.json()) == {"error", "status"}, (path, params, answer.text)
        assert client.get("/api/v1/query/samples").json()  # the table is still there


# ----------------------------------------------------------------------------- the SQL console
def _rows_of_every_table(site) -> dict:
    """Every catalogue table's rows (not the web's own tables, which sign-ins change), sequences on PostgreSQL."""
    import sqlalchemy as sa

    from txmdb.vocabulary import PRIVATE_TABLES

    catalog = _catalog(site)
    out = {}
    with catalog.engine.connect() as conn:
        for name in sorted(sa.inspect(conn).get_table_names()):
            if name not in PRIVATE_TABLES:
                out[name] = sorted(map(repr, conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()))
        if site.backend == "postgresql":
            out["roles"] = conn.execute(sa.text("SELECT rolname, rolsuper, rolcanlogin FROM pg_roles "
                                                "WHERE rolname NOT LIKE 'pg\\_%' ORDER BY 1")).all()
            out["objects"] = conn.execute(sa.text("SELECT count(*) FROM pg_class")).all()
    catalog.engine.dispose()
    return out


def test_the_sql_console_takes_the_cli_hardening_statements_and_changes_nothing(site, tmp_path):
    from tests.test_sql_hardening import COMMON, SQLITE_ONLY

    statements = [s for s, *_ in COMMON if "pg_sleep" not in s]
    statements += [s for s, _ in SQLITE_ONLY] if site.backend == "sqlite" else []
    statements += ["SELECT * FROM users", "SELECT * FROM api_tokens", "SELECT * FROM web_key", "SELECT * FROM sessions",
                   "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i FROM n"]
    before = _rows_of_every_table(site)
    editor = _signed_in(site, "editor")
    token = _csrf(editor.get("/sql"))
    for statement in statements:
        statement = statement.replace("{tmp}", str(tmp_path))
        page = editor.post("/sql", data={"statement": statement, "csrf_token": token})
        assert page.status_code in (200, 422), (statement, page.status_code, page.text[-500:])
        assert "Traceback" not in page.text and "internal error" not in page.text, statement
        if statement.startswith("SELECT * FROM") and statement.split()[-1] in ("users", "api_tokens", "web_key",
                                                                              "sessions"):
            assert page.status_code == 422, statement
        if "RECURSIVE" in statement:
            assert page.status_code == 200 and ">1000<" in page.text and ">1001<" not in page.text
    editor.close()
    assert list(tmp_path.iterdir()) == []
    assert _rows_of_every_table(site) == before


# ----------------------------------------------------------------------------- redirects and secrets
@pytest.mark.parametrize("target", ["//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example",
                                    "https://evil.example/", "http:evil.example", "/%2F%2Fevil.example",
                                    "/\t/evil.example", "/ /evil.example", "javascript:alert(1)", "evil.example",
                                    "/%09/evil.example", "/.//evil.example", " //evil.example", "/login?next=//evil"])
def test_login_next_never_leaves_the_site(site, target):
    with _client(site) as client:
        answer = login(client, "viewer", site.accounts["viewer"].password, next=target)
    assert answer.status_code == 303
    location = answer.headers["location"]
    parts = urlsplit(location)
    # As a browser reads the header: a path of this site (it decodes no %2F, %09 or %5C there).
    assert not parts.scheme and not parts.netloc and location.startswith("/"), location
    assert location[1:2] not in ("/", "\\") and not re.search(r"[\x00-\x20\\]", location), location


def test_no_password_or_token_in_the_log_or_pages(site):
    from sqlalchemy.engine import make_url

    secrets = [a.password for a in site.accounts.values()] + [a.token for a in site.accounts.values()]
    servers = [site.server]
    if site.backend == "postgresql":  # a catalogue URL with a password (the test server trusts the role)
        secrets.append("db-url-secret-8812")
        with_password = make_url(site.url).set(password=secrets[-1]).render_as_string(hide_password=False)
        other = dataclasses.replace(site, url=with_password, servers=[])
        servers += [other.start(), other.start("--workers", "2")]
        site.servers += other.servers
    for server in servers:
        with _client(site, server=server) as client:
            assert login(client, "viewer", "wrong-password-xyz").status_code == 401
            assert client.get("/api/v1/query/samples", params={"sample": "a\0b"}).status_code in (401, 422)
        with _client(site, "viewer", server=server) as client:
            assert client.get("/api/v1/query/samples", params={"sample": "a\0b"}).status_code in (200, 422)
            assert client.get("/api/v1/scans/999999/slice.png").status_code == 404
    editor = _signed_in(site, "editor")
    texts = [editor.get(p).text for p in ("/", "/samples", "/sql", "/upload", "/jobs", "/harvest", "/query/samples")]
    texts.append(editor.post("/sql", data={"statement": "SELECT current_setting('is_superuser')",
                                           "csrf_token": _csrf(editor.get("/sql"))}).text)
    with _client(site) as client:
        texts.append(login(client, "viewer", site.accounts["admin"].password).text)  # a wrong password echoed?
        # A token pasted into a URL is refused, and the access log shows the URL without it.
        assert client.get("/api/v1/query/samples", params={"token": site.accounts["viewer"].token}).status_code == 401
    editor.close()
    logs = "".join(server.log() for server in site.servers)
    assert "token=[hidden]" in logs
    for secret in secrets:
        assert secret not in logs, "a secret reached the server log"
        assert not any(secret in text for text in texts), "a secret reached a page"


# ----------------------------------------------------------------------------- fuzzing from the OpenAPI spec
def _fuzz_value(rng: random.Random, schema: dict):
    hostile = ["", " ", "0", "-1", "1e309", "NaN", "inf", "9" * 40, "1,2,,3", ",", "'", '"', ";", "--", "%",
               "../../etc/passwd", XSS, "\0", "\u202e", "ü" * 300, "a" * 5000, "true", "null", "[]", "{}",
               "1 OR 1=1", "fraction:", "fraction:../x", "cluster", "edge", "z", "y", "x", "1", "2", "3"]
    if schema.get("enum") and rng.random() < 0.3:
        return rng.choice(schema["enum"])
    return rng.choice(hostile)


def test_a_fuzzer_over_the_openapi_spec_gets_no_500(site):
    rng = random.Random(13)
    with _client(site, "editor") as client:
        spec = client.get("/api/v1/openapi.json").json()
        requests = 0
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                parameters = operation.get("parameters", [])
                for _ in range(12):
                    concrete, query = path, {}
                    for p in parameters:
                        schema = p.get("schema", {})
                        options = [schema] + schema.get("anyOf", [])
                        value = _fuzz_value(rng, rng.choice(options))
                        if p["in"] == "path":
                            concrete = concrete.replace("{" + p["name"] + "}", quote(value, safe="") or "1")
                        elif rng.random() < 0.7:
                            query[p["name"]] = value
                    if rng.random() < 0.2:
                        query[rng.choice(["zz", "format", "limit", "__proto__"])] = _fuzz_value(rng, {})
                    body = {}
                    if method == "post":
                        body = rng.choice([dict(json={"bin": _fuzz_value(rng, {}), "maps": [XSS]}),
                                           dict(data={"sample": _fuzz_value(rng, {}), "cell": _fuzz_value(rng, {}),
                                                      "edge": _fuzz_value(rng, {}), "i003_i104": _fuzz_value(rng, {})},
                                                files={"file": (_fuzz_value(rng, {}) + ".csv", b"a,b\n1,2\n")}),
                                           dict(content=b"\xff\xfe" * 10, headers={"Content-Type": "application/json"})])
                    answer = client.request(method.upper(), concrete, params=query, **body)
                    requests += 1
                    assert answer.status_code < 500, (method, concrete, query, answer.status_code, answer.text[:300])
                    if answer.status_code >= 400:
                        assert set(answer.json()) == {"error", "status"}, (method, concrete, answer.text[:300])
        assert requests >= 300
    assert "Traceback" not in site.server.log() and "unexpected error" not in site.server.log()


def test_a_nul_character_in_any_field_is_bad_input_not_a_500(site):
    editor = _signed_in(site, "editor")
    for path in ("/samples/a%00b", "/query/samples?sample=a%00b", "/query/theta?sample=a%00b",
                 "/compare?sample=a%00b", "/samples?q=a%00b&material=%00&meta=%00", "/jobs?status=%00"):
        page = editor.get(path)
        assert page.status_code == 200 or 400 <= page.status_code < 500, (path, page.status_code)
        _assert_inert(page, path)
    with _client(site) as client:
        assert 400 <= login(client, "a\0b", "a\0password-b").status_code < 500
    with _client(site, "editor") as api:
        for path, data in (("/api/v1/cycling", {"cell": "a\0b"}), ("/api/v1/xas", {"sample": "a\0b", "edge": "Ni-K"}),
                           ("/api/v1/xrd", {"sample": "a\0b", "state": "\0", "i003_i104": "1.2"})):
            answer = api.post(path, data=data, files={"file": ("a.csv", b"t,v\n1,2\n")} if "xrd" not in path else None)
            assert 400 <= answer.status_code < 500, (path, answer.text)
    editor.close()
    assert "unexpected error" not in site.server.log()


def test_the_setup_link_dies_once_any_account_exists(request, tmp_path_factory, site):
    with served_catalogue(request, tmp_path_factory, site.backend) as empty:
        server = empty.start()
        link = re.findall(r"/setup\?token=(\S+)", server.log())
        assert len(link) == 1
        with empty.client(server) as client:
            for guess in ("", "x", link[0][:-1], link[0] + "x", link[0].upper(), "%00"):
                assert client.get("/setup", params={"token": guess}).status_code == 404, guess
            form = _csrf(client.get("/setup", params={"token": link[0]}))
            empty.add_account("admin", "first")  # made with the CLI while the link is still unused
            assert client.get("/setup", params={"token": link[0]}).status_code == 404
            answer = client.post("/setup", data={"token": link[0], "username": "intruder",
                                                 "password": "intruder-password-1", "csrf_token": form})
            assert answer.status_code == 404 and "txmdb_session" not in answer.headers.get("set-cookie", "")
        listed = empty.cli("user", "list", "--format", "csv").stdout
        assert "intruder" not in listed and "first" in listed
        assert f"token={link[0]}" not in server.log().split("Ctrl-C", 1)[1].split("\n", 3)[-1]


def test_a_record_named_with_line_breaks_gets_an_encoded_location(site):
    name = "evil\r\nX-Injected: 1&format=csv#x"
    assert site.cli("sample", "add", name).returncode == 0
    with _client(site, "editor") as editor:
        answer = editor.post("/api/v1/xrd", data={"sample": name, "i003_i104": "1.25"})
        assert answer.status_code == 201, answer.text
        assert "x-injected" not in answer.headers
        location = answer.headers["location"]
        assert "\r" not in location and "\n" not in location and " " not in location
        rows = editor.get(location).json()
    assert [r["sample"] for r in rows] == [name] and rows[0]["i003_i104"] == 1.25
