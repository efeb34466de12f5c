"""An attacker's pass over ``txmdb serve`` (session 22), against real server processes on SQLite
and PostgreSQL: the holes found, each closed and pinned here.

- Any request could send a body as large as an upload (256 MB): an anonymous post to /login
  had its form parsed into memory before anything looked at it (eight at once: 1.7 GB of the
  server's memory). Now only an editor's request to an upload route gets the upload limit;
  every other body is refused past 1 MB while it streams.
- The SQL console took the CLI's 256 MB of result and showed it as text: one editor's
  statement made a 936 MB page and 4.5 GB of server memory.
- Logins sent at once were all let past the rate limit while the first were still being
  checked (31 of 60 wrong passwords checked against a limit of 5).
- The query pages read '²' or 5,000 digits as a whole number (a 500), and the compare report's
  download named a Cyrillic sample in a header (a 500).
"""

from __future__ import annotations

import asyncio
import html
import re
import socket
from urllib.parse import quote, urlsplit

import pytest

from tests.conftest import BACKENDS
from tests.web_server import served_catalogue

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CYRILLIC = "Образец-7"


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    with served_catalogue(request, tmp_path_factory, request.param) as served:
        for args in (["sample", "add", CYRILLIC], ["sample", "add", "plain"],
                     ["cell", "add", "C1", "--sample", "plain", "--active-mass-mg", "5"]):
            done = served.cli(*args)
            assert done.returncode == 0, done.stderr
        for role in ("viewer", "editor"):
            served.add_account(role)
        served.add_account("editor", "guessed")
        served.add_account("editor", "second")
        served.server = served.start("--max-upload-mb", "4")
        yield served


def _csrf(page) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text[:300]
    return found.group(1)


def _signed_in(site, name: str):
    client = site.client(site.server)
    headers = {"X-Forwarded-For": "198.51.100.22"}
    token = _csrf(client.get("/login", headers=headers))
    answer = client.post("/login", data={"username": name, "password": site.accounts[name].password,
                                         "csrf_token": token}, headers=headers)
    assert answer.status_code == 303, answer.text
    return client


def _status_of_declared(site, path: str, length: int, headers: str = "") -> tuple[int, bytes]:
    """The answer to a request that declares ``length`` bytes of body and sends none of them."""
    parts = urlsplit(site.server.base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  f"Content-Length: {length}\r\n{headers}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:  # a server that waits for the body times this out
            data += s.recv(1 << 16)
        length = int(re.search(rb"content-length: (\d+)", data, re.I).group(1))
        while len(data.partition(b"\r\n\r\n")[2]) < length:
            data += s.recv(1 << 16)
    return int(data.split()[1]), data


# ----------------------------------------------------------------------------- request bodies
def test_only_an_editors_upload_may_send_more_than_a_megabyte(site):
    editor = f"Authorization: Bearer {site.accounts['editor'].token}\r\n"
    viewer = f"Authorization: Bearer {site.accounts['viewer'].token}\r\n"
    # Refused at once from the declared length, before a byte of the body is read (the server
    # waited for 3 MB of login form: it was within the upload limit).
    # (Anonymous requests outside the public paths are refused by the gate first: 401 or 303.)
    for path, headers, expected in (("/login", "", 413), ("/setup", "", 413), ("/logout", "", 303),
                                    ("/logout", editor, 413), ("/login", editor, 413), ("/sql", editor, 413),
                                    ("/api/v1/scans/1/analyses", editor, 413), ("/api/v1/cycling", viewer, 413),
                                    ("/api/v1/xrd", "", 401)):
        status, data = _status_of_declared(site, path, 3 << 20, headers)  # within the upload limit
        assert status == expected, (path, data[:300])
        if status == 413:
            assert b"at most 1048576 bytes here" in data, data
    status, data = _status_of_declared(site, "/api/v1/cycling", 200 << 20, editor)
    assert status == 413 and b"the upload limit is 4194304 bytes" in data

    # A streamed form of two 900 kB fields: refused when it passes 1 MB (it was parsed, then a 403).
    def fields():
        for name in ("a", "b"):
            yield f"{name}=".encode()
            for _ in range(9):
                yield b"x" * 100_000
            yield b"&"

    with site.client(site.server) as anonymous:
        answer = anonymous.post("/login", content=fields(), headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 413, answer.text
    # An editor's upload of 2 MB is still taken (a 2 MB cycler table).
    table = b"time_s,voltage_v,current_a\n" + b"".join(b"%d,3.7,0.001\n" % i for i in range(170_000))
    assert 1 << 20 < len(table) < 4 << 20
    with site.client(site.server, "editor") as client:
        answer = client.post("/api/v1/cycling", data={"cell": "C1"}, files={"file": ("big.csv", table)})
        assert answer.status_code not in (413, 500), answer.text
        # with a trailing slash the router redirects it to the route (it was a 413 first)
        answer = client.post("/api/v1/cycling/", data={"cell": "C1"}, files={"file": ("big.csv", table)})
        assert answer.status_code == 307, answer.text


def test_the_upload_paths_are_the_routes_that_take_a_file():
    from txmdb.web.app import UPLOAD_PATHS, create_app

    class NoCatalogue:
        engine = None

    spec = create_app(NoCatalogue()).openapi()
    taking_files = {path for path, operations in spec["paths"].items() for op in operations.values()
                    if "multipart/form-data" in op.get("requestBody", {}).get("content", {})}
    assert taking_files == set(UPLOAD_PATHS)


# ----------------------------------------------------------------------------- the SQL console
def _wide_rows(backend: str, rows: int) -> str:
    """``rows`` rows of one 60,000-character text each, in the backend's own SQL."""
    value = "replace(hex(zeroblob(15000)), '0', 'ab')" if backend == "sqlite" else "repeat('ab', 30000)"
    return (f"WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {rows}) "
            f"SELECT i, {value} AS wide FROM r")


def test_the_sql_console_takes_a_page_of_bytes_not_the_clis_256_mb(site):
    from txmdb.web.pages import SQL_PAGE_BYTES

    editor = _signed_in(site, "editor")
    try:
        token = _csrf(editor.get("/sql"))
        too_much = editor.post("/sql", data={"statement": _wide_rows(site.backend, 500), "csrf_token": token})
        assert too_much.status_code == 422, too_much.status_code
        assert f"the result is larger than {SQL_PAGE_BYTES} bytes" in too_much.text
        assert len(too_much.content) < 100_000
        shown = editor.post("/sql", data={"statement": _wide_rows(site.backend, 100), "csrf_token": token})
        assert shown.status_code == 200 and ">100<" in shown.text and "ab" * 30000 in shown.text
    finally:
        editor.close()
    # The command line keeps its own cap: the same 30 MB are a file there.
    done = site.cli("query", "sql", _wide_rows(site.backend, 500), "--format", "csv")
    assert done.returncode == 0 and len(done.stdout) > 29_000_000, done.stderr


def test_the_sql_console_shows_a_bounded_number_of_values(site):
    # 1000 rows of 500 small values passed the byte cap and took hundreds of MB of the server's memory
    from txmdb.web.pages import SQL_PAGE_CELLS

    columns = ", ".join(f"i AS c{k}" for k in range(500))
    statement = (f"WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1000) "
                 f"SELECT {columns} FROM r")
    editor = _signed_in(site, "editor")
    try:
        page = editor.post("/sql", data={"statement": statement, "csrf_token": _csrf(editor.get("/sql"))})
    finally:
        editor.close()
    kept = SQL_PAGE_CELLS // 500
    assert page.status_code == 200, page.text[:300]
    assert f"The result was cut at {kept} rows" in page.text
    assert f">{kept}<" in page.text and f">{kept + 1}<" not in page.text
    # the command line is not bound by the page's cap
    done = site.cli("query", "sql", statement, "--format", "csv")
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 1001, done.stderr


FOREVER = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"


def _console(site, name: str) -> tuple[str, dict]:
    """A signed-in account's CSRF token and cookies for posting to the SQL console."""
    client = _signed_in(site, name)
    token, cookies = _csrf(client.get("/sql")), dict(client.cookies)
    client.close()
    return token, cookies


def test_the_sql_console_runs_a_few_statements_at_once_and_the_server_serves_the_rest(site):
    import time

    import httpx

    from txmdb.web.pages import SQL_AT_ONCE, SQL_AT_ONCE_PER_ACCOUNT

    assert SQL_AT_ONCE == 2 * SQL_AT_ONCE_PER_ACCOUNT      # two accounts fill the console
    consoles = [_console(site, name) for name in ("editor", "second")]

    async def flood() -> tuple[list, float]:
        clients = [httpx.AsyncClient(base_url=site.server.base, timeout=120, cookies=cookies)
                   for _, cookies in consoles]
        statements = [asyncio.create_task(client.post("/sql", data={"statement": FOREVER, "csrf_token": token}))
                      for client, (token, _) in zip(clients, consoles)
                      for _ in range(SQL_AT_ONCE_PER_ACCOUNT + 20)]   # more than the server's pool of threads
        await asyncio.sleep(3)
        async with httpx.AsyncClient(base_url=site.server.base, timeout=120) as other:
            started = time.monotonic()
            answer = await other.get("/api/v1/samples", headers={
                "Authorization": f"Bearer {site.accounts['viewer'].token}"})
            waited = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        done = [await s for s in statements]
        for client in clients:
            await client.aclose()
        return done, waited

    answers, waited = asyncio.run(flood())
    assert waited < 5, f"a viewer's request waited {waited:.1f} s behind the SQL console"
    codes = [a.status_code for a in answers]
    assert codes.count(422) == SQL_AT_ONCE and codes.count(429) == 40, codes
    assert all("time limit" in a.text for a in answers if a.status_code == 422)
    assert all(f"runs {SQL_AT_ONCE_PER_ACCOUNT} statements of one account at a time" in a.text
               or f"runs {SQL_AT_ONCE} statements at a time" in a.text for a in answers if a.status_code == 429)


def test_one_account_cannot_take_the_whole_sql_console(site):
    import httpx

    from txmdb.web.pages import SQL_AT_ONCE_PER_ACCOUNT

    (token, cookies), (other_token, other_cookies) = _console(site, "editor"), _console(site, "second")

    async def flood_then_ask() -> tuple[list, httpx.Response]:
        async with httpx.AsyncClient(base_url=site.server.base, timeout=120, cookies=cookies) as client:
            statements = [asyncio.create_task(client.post("/sql", data={"statement": FOREVER, "csrf_token": token}))
                          for _ in range(SQL_AT_ONCE_PER_ACCOUNT + 6)]
            await asyncio.sleep(2)
            async with httpx.AsyncClient(base_url=site.server.base, timeout=120, cookies=other_cookies) as other:
                answer = await other.post("/sql", data={"statement": "SELECT name FROM samples ORDER BY name",
                                                        "csrf_token": other_token})
            return [await s for s in statements], answer

    answers, answer = asyncio.run(flood_then_ask())
    assert answer.status_code == 200 and "plain" in answer.text, answer.text[:500]
    codes = [a.status_code for a in answers]
    assert codes.count(422) == SQL_AT_ONCE_PER_ACCOUNT and codes.count(429) == 6, codes
    assert all(f"runs {SQL_AT_ONCE_PER_ACCOUNT} statements of one account at a time" in a.text
               for a in answers if a.status_code == 429)


# ----------------------------------------------------------------------------- the login rate limit
def test_logins_sent_at_once_check_no_more_passwords_than_the_limit(site):
    import httpx
    import sqlalchemy as sa

    from txmdb.catalog import open_catalog
    from txmdb.vocabulary import MAX_FAILED_LOGINS_PER_NAME

    address = {"X-Forwarded-For": "203.0.113.222"}

    async def burst(n: int) -> list[int]:
        async with httpx.AsyncClient(base_url=site.server.base, timeout=120, headers=address) as client:
            token = _csrf(await client.get("/login"))
            answers = await asyncio.gather(*(client.post("/login", data={
                "username": "guessed", "password": f"wrong-password-{i}", "csrf_token": token}) for i in range(n)))
        return [a.status_code for a in answers]

    codes = asyncio.run(burst(30))
    assert codes.count(401) == MAX_FAILED_LOGINS_PER_NAME and codes.count(429) == 30 - MAX_FAILED_LOGINS_PER_NAME, codes
    catalog = open_catalog(site.url, site.store, check=False)
    try:
        with catalog.engine.connect() as conn:
            recorded = conn.execute(sa.text("SELECT succeeded, count(*) FROM login_attempts WHERE username = 'guessed' "
                                            "GROUP BY succeeded")).all()
        assert [(bool(s), n) for s, n in recorded] == [(False, MAX_FAILED_LOGINS_PER_NAME)]
        # The owner, from elsewhere, still signs in; the try is recorded as a success.
        with site.client(site.server, headers={"X-Forwarded-For": "203.0.113.223"}) as owner:
            token = _csrf(owner.get("/login"))
            answer = owner.post("/login", data={"username": "guessed", "password": site.accounts["guessed"].password,
                                                "csrf_token": token})
        assert answer.status_code == 303, answer.text
        with catalog.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM login_attempts WHERE username = 'guessed' "
                                        "AND succeeded")).scalar() == 1
    finally:
        catalog.engine.dispose()


def test_right_passwords_sent_at_once_all_sign_in(site):
    # (counting each try as a failure before its check refused 3 of 8 right passwords sent at once)
    import httpx

    async def burst(n: int) -> list[int]:
        async with httpx.AsyncClient(base_url=site.server.base, timeout=120,
                                     headers={"X-Forwarded-For": "203.0.113.224"}) as client:
            token = _csrf(await client.get("/login"))
            answers = await asyncio.gather(*(client.post("/login", data={
                "username": "editor", "password": site.accounts["editor"].password, "csrf_token": token})
                for _ in range(n)))
        return [a.status_code for a in answers]

    assert asyncio.run(burst(8)) == [303] * 8


# ----------------------------------------------------------------------------- 500s from odd text
@pytest.mark.parametrize("query, low", [("retention?cycle=%C2%B2", 0), ("summary?reference=" + "9" * 5000, 1),
                                        ("summary?cycle=%D9%A1%D9%A0", 0), ("retention?cycle=1%C2%B2", 0)])
def test_a_query_pages_number_field_takes_ascii_digits_only(site, query, low):
    with site.client(site.server, "viewer") as client:
        page = client.get("/query/" + query)
        assert page.status_code == 422 and f"is not a whole number from {low} to" in page.text, page.status_code
        assert client.get("/query/summary?cycle=%20100").status_code == 200


@pytest.mark.parametrize("path, words", [("/scans/+1", "'+1' is not a whole number from 0 to"),
                                         ("/scans/1_0", "'1_0' is not a whole number from 0 to"),
                                         ("/compare?sample=a&cycle=%2B100", "cycle: '+100' is not a whole number from 1 to"),
                                         ("/compare?sample=a&cycle=0", "cycle: '0' is not a whole number from 1 to"),
                                         ("/compare?sample=a&cycle=%1F100", "cycle: '\\x1f100' is not a whole number"),
                                         ("/query/scans?scan=%1F1", "'\\x1f1' is not a whole number from 0 to")])
def test_the_pages_ids_and_cycles_take_ascii_digits_only(site, path, words):
    """As the query pages' fields (session 24: /scans/+1 was scan 1's page, the compare form took int())."""
    with site.client(site.server, "viewer") as client:
        page = client.get(path)
        assert page.status_code == 422 and words in html.unescape(page.text), (page.status_code, page.text[:300])


def test_the_report_of_a_sample_named_in_cyrillic_downloads(site):
    with site.client(site.server, "viewer") as client:
        answer = client.get(f"/compare/report?sample={quote(CYRILLIC)}&download=1")
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["content-disposition"] == ("attachment; filename=\"txmdb-compare-_______-7.html\"; "
                                                     "filename*=UTF-8''txmdb-compare-" + quote(CYRILLIC) + ".html")
    assert "unexpected error" not in site.server.log()


def test_the_scan_page_links_its_sample_as_one_path_segment(site, tmp_path):
    # Jinja's urlencode keeps '/': a sample named '../sql' linked its scan page to /sql
    from txmdb.synthetic.drift import make_drifted, write_drifted_stack

    name = "../sql?x=1#y"
    path = tmp_path / "scan.h5"
    write_drifted_stack(path, make_drifted((8, 12, 12), n_energies=4, seed=3))
    for args in (["sample", "add", name], ["txm", "ingest", str(path), "--sample", name]):
        done = site.cli(*args)
        assert done.returncode == 0, done.stderr
    scan_id = int(done.stdout.split()[-1])
    with site.client(site.server, "viewer") as client:
        page = client.get(f"/scans/{scan_id}")
        assert page.status_code == 200, page.text[:300]
        assert 'href="/samples/..%2Fsql%3Fx%3D1%23y"' in page.text
        assert client.get("/samples/..%2Fsql%3Fx%3D1%23y").status_code == 200


# ----------------------------------------------------------------------------- host names
def _read_by_host(server_client, name: str):
    return server_client.get("/api/v1/query/samples", params={"format": "csv"}, headers={"Host": name})


@pytest.mark.parametrize("workers", ["1", "2"])
def test_public_read_answers_only_the_servers_own_host_names(site, workers):
    # DNS rebinding: evil.example pointed at this server's address is same-origin for the
    # browser of a lab member who opens a page of it, and could read what anonymous visitors read
    server = site.start("--public-read", "--workers", workers)
    with site.client(server) as anonymous:
        assert "plain" in _read_by_host(anonymous, urlsplit(server.base).netloc).text
        for name in ("localhost", "LOCALHOST:8000", "[::1]:8000"):
            assert _read_by_host(anonymous, name).status_code == 200, name
        for name in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example"):
            answer = _read_by_host(anonymous, name)
            assert answer.status_code == 400 and "plain" not in answer.text, name
    # (127.0.0.1 too: the test harness asks it whether it is up)
    named = site.start("--public-read", "--allowed-hosts", "lab.example.org,*.beamline.example,127.0.0.1",
                       "--workers", workers)
    with site.client(named) as anonymous:
        for name in ("lab.example.org", "txm.beamline.example:443"):
            assert "plain" in _read_by_host(anonymous, name).text, name
        for name in ("localhost", "example.org", "beamline.example.evil", "evil.example"):
            assert _read_by_host(anonymous, name).status_code == 400, name


def test_without_public_read_any_host_name_still_reaches_the_login(site):
    # nothing is readable without credentials, and a proxy may pass its own Host ($host)
    with site.client(site.server) as anonymous:
        assert _read_by_host(anonymous, "lab.example.org").status_code == 401
        assert anonymous.get("/login", headers={"Host": "lab.example.org"}).status_code == 200


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0", "--public-read"], "error: --public-read on 0.0.0.0 needs --allowed-hosts: the names browsers"),
    (["--allowed-hosts", "lab.example.org/x"], "error: --allowed-hosts 'lab.example.org/x': expected host names"),
    (["--allowed-hosts", "lab.*.org"], "error: --allowed-hosts 'lab.*.org': expected host names"),
    (["--allowed-hosts", " , "], "error: --allowed-hosts ' , ': expected host names"),
])
def test_the_host_names_are_checked_before_the_server_starts(site, args, message):
    done = site.cli("serve", "--port", "1", *args)
    assert done.returncode == 1 and done.stderr.startswith(message), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""


@pytest.mark.parametrize("name", [".", "..", " .. "])
def test_a_sample_cannot_be_named_dot_or_dot_dot(site, name):
    # /samples/.. is /: no quoting keeps a browser from resolving it
    done = site.cli("sample", "add", name)
    assert done.returncode == 1 and done.stderr == f"error: a sample cannot be named {name.strip()!r}\n", done.stderr
    assert name.strip() not in site.cli("sample", "list").stdout.split()


def test_the_job_apis_documented_example_is_taken():
    # the API's own description showed {"maps": ...}, an option txm analyze does not have
    import json

    from txmdb.options import analysis_request
    from txmdb.web.app import create_app

    class NoCatalogue:
        engine = None

    def texts(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from texts(value)
        elif isinstance(node, list):
            for value in node:
                yield from texts(value)
        elif isinstance(node, str):
            yield node

    spec = create_app(NoCatalogue()).openapi()["paths"]["/api/v1/scans/{scan_id}/analyses"]["post"]
    described = [t for t in texts(spec) if "Options of `txm analyze`" in t]
    assert len(described) == 1, described
    example = json.loads(re.search(r"e\.g\. (\{[^}]*\})", described[0]).group(1))
    options, _ = analysis_request(example)
    assert options.bin_factors == (1, 2, 3) and options.gradient_maps == ("edge",)
