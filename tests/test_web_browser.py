"""The web pages in a real browser: headless Chromium (Debian's, as tests/test_report_browser.py)
against a real ``txmdb serve`` process, on SQLite and PostgreSQL.

One demo-like catalogue per backend (txmdb.demo.populate_demo on small tomograms), built once
for the module, with a viewer and an editor account. Screenshots of every page go to
``test-artifacts/web-<backend>-<page>.png`` for a human to look at.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, _drop_reporting_role, _fresh_pg_url, as_catalogue_owner
from tests.test_report_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

TXMDB = Path(sys.executable).with_name("txmdb")
PASSWORD = {"viewer": "viewer-password-1", "editor": "editor-password-1"}
# A sample whose name, morphology and meta are markup: every page must show them as text.
HOSTILE = {"name": "<img src=x onerror=alert(1)>", "morphology": "<b>rod</b>", "meta": "<script>alert(2)</script>"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(site, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(TXMDB), "--db", site["url"], "--store", str(site["store"]), *args], input=input,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    """A served demo-like catalogue: {'url', 'store', 'base', 'backend', 'raw'}."""
    from txmdb.catalog import open_catalog
    from txmdb.db.migrate import upgrade
    from txmdb.demo import populate_demo

    root = tmp_path_factory.mktemp(f"web-{request.param}")
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'catalogue.db'}"
    else:
        server = request.getfixturevalue("pg_server")
        admin_url, drop = _fresh_pg_url(server)
        url = as_catalogue_owner(admin_url)
    store = root / "store"
    catalog = open_catalog(url, store, check=False)
    upgrade(catalog.engine)
    populate_demo(catalog, root / "raw", size=32, n_energies=40, echo=lambda _: None)
    catalog.engine.dispose()
    site = {"url": url, "store": store, "backend": request.param, "raw": root / "raw"}
    added = _cli(site, "sample", "add", HOSTILE["name"], "--morphology", HOSTILE["morphology"],
                 "--meta", f"note={HOSTILE['meta']}")
    assert added.returncode == 0, added.stderr
    # A harvest that fails (a cycler export without its columns), for the dashboard and the harvest log.
    (root / "incoming").mkdir()
    (root / "incoming" / "R1_broken.csv").write_text("this,is\nnot,cycling\n")
    (root / "rules.toml").write_text('settle_seconds = 0\n[[rule]]\nfolder = "incoming"\nglob = "*.csv"\n'
                                     "kind = \"cycling\"\npattern = '(?P<cell>[A-Z]+\\d+)_.*\\.csv'\n")
    watched = _cli(site, "watch", str(root / "rules.toml"), "--once")
    assert watched.returncode == 0 and "file.failed" in watched.stderr, watched.stderr
    for role, password in PASSWORD.items():
        added = _cli(site, "user", "add", role, "--role", role, "--password-stdin", input=password + "\n")
        assert added.returncode == 0, added.stderr

    port = _free_port()
    log = open(root / "serve.log", "w")
    process = subprocess.Popen([str(TXMDB), "--db", url, "--store", str(store), "serve", "--port", str(port),
                                "--max-upload-mb", "1"],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/api/v1/health", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert process.poll() is None, (root / "serve.log").read_text()
                assert time.monotonic() < deadline, "txmdb serve did not answer within 60 s"
                time.sleep(0.2)
        yield {**site, "base": base}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        if drop is not None:
            drop()
            _drop_reporting_role(request.getfixturevalue("pg_server"), admin_url)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.exists(), (f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium, "
                               "or 'make system') to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Visit:
    """A browser context signed in as one account, recording every console error and failed request."""

    def __init__(self, browser, site, role: str | None):
        self.site, self.problems = site, []
        # Pages asked for on purpose with a 4xx answer: Chromium logs the page's own status as a console error.
        self.refused: set[str] = set()
        self.context = browser.new_context(viewport={"width": 1300, "height": 900}, accept_downloads=True)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"{self.page.url}: page error: {exc}"))
        self.page.on("requestfailed", lambda req: self.problems.append(f"request failed: {req.url}"))
        if role is not None:
            self.login(role, PASSWORD[role])

    def _console(self, msg) -> None:
        if msg.type not in ("error", "warning"):
            return
        if self.page.url in self.refused and msg.text.startswith("Failed to load resource: the server responded "
                                                                 "with a status of 4"):
            return
        self.problems.append(f"{self.page.url}: console {msg.type}: {msg.text}")

    def refuse(self, path: str) -> None:
        """Expect a 4xx status for the page at ``path`` (a message in the page, no other problem)."""
        self.refused.add(self.site["base"] + path)

    def login(self, name: str, password: str) -> None:
        self.goto("/login")
        self.page.fill("input[name=username]", name)
        self.page.fill("input[name=password]", password)
        with self.page.expect_navigation():
            self.page.click("form.login button[type=submit], .login button[type=submit]")

    def goto(self, path: str):
        response = self.page.goto(self.site["base"] + path, wait_until="networkidle")
        return response

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"web-{self.site['backend']}-{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, site):
    opened = []

    def open_as(role):
        v = Visit(browser, site, role)
        opened.append(v)
        return v

    yield open_as
    for v in opened:
        v.close()


def _scan_ids(site) -> list[int]:
    out = _cli(site, "query", "scans", "--format", "csv")
    assert out.returncode == 0, out.stderr
    return [int(line.split(",")[3]) for line in out.stdout.splitlines()[1:]]


def test_login_browse_to_a_scan_and_move_the_slice(visit, site):
    v = visit(None)
    v.goto("/")
    assert v.page.url.startswith(site["base"] + "/login"), "an anonymous visitor is sent to the login form"
    v.shot("login")
    v.login("viewer", PASSWORD["viewer"])
    assert v.page.url == site["base"] + "/", v.page.url
    assert v.page.locator("header .who").inner_text().startswith("viewer")
    v.page.wait_for_load_state("networkidle")
    v.shot("dashboard")
    assert v.page.locator(".counts .count").first.inner_text().strip().startswith("3")  # three samples
    assert "R1_broken.csv" in v.page.locator("#failed-harvests").inner_text()

    # Dashboard → samples → the rod sample → its scan.
    v.page.click("header nav >> text=Samples")
    v.page.wait_for_load_state("networkidle")
    v.page.click("#samples >> text=rod-NMC")
    v.page.wait_for_load_state("networkidle")
    assert v.page.locator("h1").inner_text() == "Sample rod-NMC"
    # Interactive plots: uPlot drew a canvas in each, with units on the axes.
    assert v.page.locator("#cycling-plots .uplot").count() == 3
    assert v.page.locator("#xas-plots .uplot").count() >= 1
    v.shot("sample")
    axes = v.page.eval_on_selector_all(".plot[data-plot]", "ps => ps.map(p => JSON.parse(p.dataset.plot))"
                                                           ".map(s => [s.x.unit, s.y.unit])")
    assert len(axes) >= 4 and all(x and y for x, y in axes), axes  # units on every axis
    # Hover shows the values with their units; a drag zooms in.
    over = v.page.locator("#cycling-plots .plot").first.locator(".u-over")
    box = over.bounding_box()
    over.hover(position={"x": box["width"] / 2, "y": box["height"] / 2})
    legend = v.page.locator("#cycling-plots .plot").first.locator(".u-legend").inner_text()
    assert "mAh g⁻¹" in legend and "no." in legend, legend
    span = "el => el.plot.scales.x.max - el.plot.scales.x.min"
    plot = v.page.locator("#cycling-plots .plot").first
    wide = plot.evaluate(span)
    v.page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    v.page.mouse.down()
    v.page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=5)
    v.page.mouse.up()
    assert plot.evaluate(span) < wide / 2, "dragging across the plot did not zoom in"
    thumbs = v.page.locator("#scans img")
    assert thumbs.count() == 1
    thumbs.first.scroll_into_view_if_needed()  # thumbnails load lazily
    v.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbs.first.element_handle())
    v.page.click("#scans a")
    v.page.wait_for_load_state("networkidle")
    assert v.page.url.startswith(site["base"] + "/scans/")
    v.shot("scan")

    # The slice slider: the image changes with the index.
    figure = v.page.locator("#slice-viewer figure[data-axis=z]")
    image = figure.locator("img")
    v.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    before_src, before_png = image.get_attribute("data-src"), image.screenshot()
    assert "index=16" in before_src
    low, high = (v.page.locator(f"#slice-viewer .colourbar .{end}").inner_text() for end in ("low", "high"))
    assert 8200 < float(low) < float(high) < 8500, (low, high)  # the edge map's shared scale, eV
    with v.page.expect_response(lambda r: "/slice.png" in r.url and "index=3" in r.url) as answer:
        figure.locator("input[type=range]").fill("3")
    assert answer.value.status == 200
    v.page.wait_for_function("img => (img.getAttribute('data-src') || '').includes('index=3') && img.complete "
                             "&& img.naturalWidth > 0", arg=image.element_handle())
    assert image.get_attribute("data-src") != before_src
    assert figure.locator(".index").inner_text() == "3"
    assert image.screenshot() != before_png, "the slice image did not change with the slider"
    # The colour scale is the map's, not the slice's: it stays as the slice moves.
    assert v.page.locator("#slice-viewer .colourbar .low").inner_text() == low
    assert v.page.locator("#gradient-plots .uplot").count() >= 2
    assert v.page.locator("#edge-plots .uplot").count() == 2  # edge-energy histogram and depth profile
    assert v.page.locator("#particles tbody tr").count() >= 1

    # Log out: the session ends, and the pages send the browser to the login form again.
    v.page.click("header .who button[type=submit]")
    v.page.wait_for_url(site["base"] + "/login")
    v.goto("/samples")
    assert v.page.url.startswith(site["base"] + "/login?next="), v.page.url
    assert not v.problems, v.problems


def test_every_page_without_console_errors(visit, site):
    v = visit("editor")
    scan = _scan_ids(site)[0]
    pages = {"dashboard": "/", "samples": "/samples?morphology=rod", "sample": "/samples/gravel-NMC",
             "scan": f"/scans/{scan}", "query": "/query/theta?bin=2&scan_level=true", "jobs": "/jobs",
             "harvest": "/harvest", "sql": "/sql", "upload": "/upload", "compare": "/compare",
             "unknown-scan": "/scans/999999"}
    # An editor queues an analysis from the scan page; the jobs page lists it.
    v.goto(f"/scans/{scan}")
    v.page.click("#queue-analysis button[type=submit]")
    v.page.locator("#queue-analysis .result.success").wait_for(timeout=30_000)
    assert "job_id" in v.page.locator("#queue-analysis .result").inner_text()
    v.goto("/jobs")
    assert "queued" in v.page.locator("#jobs tbody").inner_text()
    v.goto("/harvest?status=failed")
    assert "R1_broken.csv" in v.page.locator("#harvest tbody").inner_text()
    v.refuse("/scans/999999")
    v.refuse("/sql")  # the refused write below
    for name, path in pages.items():
        response = v.goto(path)
        assert response.status == (404 if name == "unknown-scan" else 200), (path, response.status)
        v.shot(name)
    # An unknown id is a page saying so, not a traceback (Chromium logs the page's own 404 status).
    assert "no TXM scan with id 999999" in v.page.locator(".error").inner_text()
    assert not v.problems, v.problems

    # Compare: pick both samples; the report shows in the page and downloads whole.
    v.goto("/compare")
    v.page.check("input[name=sample][value=rod-NMC]")
    v.page.check("input[name=sample][value=gravel-NMC]")
    v.page.click("#compare-form button[type=submit]")
    v.page.wait_for_load_state("networkidle")
    frame = v.page.frame_locator("#report")
    assert "rod-NMC" in frame.locator("h1").first.inner_text(timeout=120_000)
    v.shot("compare-report")
    with v.page.expect_download(timeout=120_000) as download:
        v.page.click("#download-report")
    html = Path(download.value.path()).read_text()
    assert html.startswith("<!doctype html>") or html.lower().startswith("<!doctype html>")
    assert "gravel-NMC" in html and "<script" not in html
    # Then one of their states: the framed report says so (tests/test_web_compare.py checks its content).
    v.page.check("input[name=state][value=pristine]")
    v.page.click("#compare-form button[type=submit]")
    v.page.wait_for_load_state("networkidle")
    assert "States: pristine only" in v.page.frame_locator("#report").locator("#states").inner_text(timeout=120_000)
    v.shot("compare-report-state")

    # SQL console (editors): one read-only statement, its rows in the page; a write is refused.
    v.goto("/sql")
    v.page.fill("#statement", "SELECT name FROM samples WHERE name LIKE '%NMC' ORDER BY name")
    v.page.click("#sql-form button[type=submit]")
    v.page.wait_for_load_state("networkidle")
    assert v.page.locator("#sql-result tbody td").all_inner_texts() == ["gravel-NMC", "rod-NMC"]
    v.page.fill("#statement", "DELETE FROM samples")
    v.page.click("#sql-form button[type=submit]")
    v.page.wait_for_load_state("networkidle")
    assert v.page.locator(".error").count() == 1
    assert len(_cli(site, "query", "samples", "--format", "csv").stdout.splitlines()) == 1 + 3
    v.shot("sql-result")
    # The console's form without its CSRF token is refused (403), whatever the role.
    status = v.page.evaluate("""async () => {
        const form = new URLSearchParams({statement: "SELECT 1"});
        const r = await fetch("/sql", {method: "POST", body: form});
        return r.status; }""")
    assert status == 403
    assert not v.problems, v.problems


def test_query_download_is_the_cli_csv(visit, site):
    v = visit("viewer")
    v.goto("/query/cycles?sample=rod-NMC&cycle=1,2,50")
    assert v.page.locator("#query-table tbody tr").count() == 3
    v.shot("query-cycles")
    with v.page.expect_download() as download:
        v.page.click("#download-csv")
    downloaded = Path(download.value.path()).read_bytes()
    cli = subprocess.run([str(TXMDB), "--db", site["url"], "--store", str(site["store"]), "query", "cycles",
                          "--sample", "rod-NMC", "--cycle", "1,2,50", "--format", "csv"], capture_output=True,
                         timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert downloaded == cli.stdout
    # A malformed filter is a message in the page, not a traceback.
    v.refuse("/query/cycles?cycle=abc")
    response = v.goto("/query/cycles?cycle=abc")
    assert response.status == 422
    assert "abc" in v.page.locator(".error").inner_text()
    assert not v.problems, v.problems


def test_editor_uploads_a_cycler_file_and_the_cli_sees_it(visit, site, tmp_path):
    from dataclasses import replace

    from txmdb.synthetic.cycling import ROD_NMC, write_cycling_csv

    # Another run of cell R1 (a different file: fewer records per step).
    path = write_cycling_csv(replace(ROD_NMC, n_cycles=12), tmp_path / "R1-second.csv", records_per_step=12)
    before = _cli(site, "query", "cycles", "--cell", "R1", "--format", "csv").stdout.splitlines()
    v = visit("editor")
    v.goto("/upload")
    form = v.page.locator("#upload-cycling")
    form.locator("select[name=cell]").select_option("R1")
    form.locator("input[name=file]").set_input_files(str(path))
    form.locator("button[type=submit]").click()
    result = form.locator(".result.success")
    result.wait_for(timeout=60_000)
    v.shot("upload-done")
    after = _cli(site, "query", "cycles", "--cell", "R1", "--format", "csv").stdout.splitlines()
    assert len(after) == len(before) + 12
    runs = {line.split(",")[2] for line in after[1:]}
    assert len(runs) == 2
    # The new run records who uploaded it.
    who = _cli(site, "query", "sql", "SELECT created_by FROM cycling_runs ORDER BY id DESC LIMIT 1", "--format", "csv")
    assert who.stdout.splitlines() == ["created_by", "editor"], (who.stdout, who.stderr)

    # The same file again is the same run, as in the CLI: the page says so and nothing is added.
    form.locator("select[name=cell]").select_option("R1")
    form.locator("input[name=file]").set_input_files(str(path))
    form.locator("button[type=submit]").click()
    v.page.wait_for_function("() => document.querySelector('#upload-cycling .result.success') && "
                             "document.querySelector('#upload-cycling .result').textContent.startsWith('Already')")
    assert len(_cli(site, "query", "cycles", "--cell", "R1", "--format", "csv").stdout.splitlines()) == len(after)

    # A file of the wrong type is a message in the page, and nothing is stored.
    wrong = tmp_path / "not-a-cycler-file.csv"
    wrong.write_text("this,is\nnot,cycling\n")
    form.locator("input[name=file]").set_input_files(str(wrong))
    form.locator("button[type=submit]").click()
    form.locator(".result.error").wait_for(timeout=60_000)
    assert "not-a-cycler-file.csv" in form.locator(".result.error").inner_text()
    assert len(_cli(site, "query", "cycles", "--cell", "R1", "--format", "csv").stdout.splitlines()) == len(after)
    # An XAS spectrum too, for the sample page's overlay.
    from txmdb.synthetic.spectra import ni_k_edge_spectrum, write_columns

    spectrum = tmp_path / "rod-NiK-discharged.txt"
    write_columns(spectrum, list(ni_k_edge_spectrum(8342.0, noise=0.002, seed=9)), names=("energy", "mu"))
    xas = v.page.locator("#upload-xas")
    xas.locator("select[name=sample]").select_option("rod-NMC")
    xas.locator("select[name=edge]").select_option("Ni-K")
    xas.locator("select[name=mode]").select_option("transmission")
    xas.locator("input[name=state]").fill("discharged")
    xas.locator("input[name=file]").set_input_files(str(spectrum))
    xas.locator("button[type=submit]").click()
    xas.locator(".result").filter(has_not_text="Uploading").wait_for(timeout=60_000)
    assert "Stored" in xas.locator(".result").inner_text(), xas.locator(".result").inner_text()
    rows = _cli(site, "query", "xas", "--sample", "rod-NMC", "--state", "discharged", "--format", "csv")
    assert len(rows.stdout.splitlines()) == 2, rows.stdout

    # A file beyond the server's limit (--max-upload-mb 1) is refused in the page, nothing stored.
    large = tmp_path / "large.csv"
    large.write_bytes(path.read_bytes() * (2 * (1 << 20) // path.stat().st_size + 1))
    form.locator("input[name=file]").set_input_files(str(large))
    form.locator("button[type=submit]").click()
    v.page.wait_for_function("() => document.querySelector('#upload-cycling .result.error') && "
                             "document.querySelector('#upload-cycling .result').textContent.includes('too large')")
    assert len(_cli(site, "query", "cycles", "--cell", "R1", "--format", "csv").stdout.splitlines()) == len(after)
    assert not [f for f in (site["store"] / "uploads").iterdir() if f.name.startswith(".tmp")]
    # Chromium logs the refused uploads' 4xx statuses; nothing else may go wrong.
    problems = [p for p in v.problems if "the server responded with a status of 4" not in p]
    assert not problems, problems


def test_viewer_is_refused_writes(visit, site):
    v = visit("viewer")
    for path in ("/upload", "/sql"):
        response = v.goto(path)
        assert response.status == 403, path
        assert "editor" in v.page.locator(".error").inner_text()
    v.shot("refused")
    # A viewer's write through the API, with the session's CSRF token, is refused too.
    v.goto("/")
    token = v.page.locator("header .who input[name=csrf_token]").get_attribute("value")
    status = v.page.evaluate(
        """async ([token]) => {
             const form = new FormData();
             form.append("csrf_token", token);
             form.append("cell", "R1");
             form.append("file", new Blob(["cycle,voltage\\n1,4.2\\n"]), "x.csv");
             const r = await fetch("/api/v1/cycling", {method: "POST", body: form});
             return r.status;
           }""", [token])
    assert status == 403


def test_names_notes_and_meta_are_shown_as_text(visit, site):
    from urllib.parse import quote

    v = visit("viewer")
    dialogs = []
    v.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    v.goto("/samples")
    cells = v.page.locator("#samples tbody tr").all_inner_texts()
    assert any(HOSTILE["name"] in row and HOSTILE["morphology"] in row and HOSTILE["meta"] in row for row in cells)
    v.page.click(f"#samples a:text-is('{HOSTILE['name']}')")
    v.page.wait_for_load_state("networkidle")
    assert v.page.locator("h1").inner_text() == f"Sample {HOSTILE['name']}"
    v.shot("hostile-sample")
    for path in ("/query/samples", "/compare", f"/samples?q={quote(HOSTILE['name'])}"):
        v.goto(path)
        assert HOSTILE["name"] in v.page.locator("main").inner_text(), path
    assert v.page.locator("main img[src=x], main b, main script").count() == 0
    assert not dialogs, dialogs
    assert not v.problems, v.problems
