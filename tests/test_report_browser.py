"""The report in a real browser: headless Chromium loads it offline, without errors, every image decoded.

Never skipped: CI installs Debian's chromium (``scripts/system-deps.sh``); without it this
test fails and says so. Playwright drives the system browser and never downloads one.
A full-page screenshot is kept in ``test-artifacts/report.png`` for a human to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_report import FIGURES, populate

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture
def report(tmp_path) -> Path:
    """A full two-sample report built on a SQLite catalogue (the rendering does not depend on the backend)."""
    from txmdb.catalog import open_catalog
    from txmdb.db.migrate import upgrade
    from txmdb.report import build_report

    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalogue.db'}", tmp_path / "store", check=False)
    upgrade(catalog.engine)
    try:
        populate(catalog, tmp_path / "data")
        return build_report(catalog, ["rod-NMC", "gravel-NMC"], output=tmp_path / "report.html")
    finally:
        catalog.engine.dispose()


def load_in_chromium(report: Path, screenshot: Path) -> dict:
    """Load the report offline in headless Chromium: its problems (console, page errors, failed requests),
    requests, images (figure id, decoded, width), title and section headings; a full-page screenshot."""
    assert CHROMIUM.exists(), (f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium, "
                               "or 'make system') to run the browser test")
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                    if msg.type in ("error", "warning") else None)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(report.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => ({id: i.closest('figure').id, ok: i.complete && i.naturalWidth > 0,"
                       " width: i.naturalWidth}))")
            title = page.title()
            headings = page.eval_on_selector_all("section h2", "hs => hs.map(h => h.textContent)")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"problems": problems, "requests": requests, "images": images, "title": title, "headings": headings}


def test_report_renders_in_headless_chromium(report):
    loaded = load_in_chromium(report, ARTIFACTS / "report.png")
    problems, requests, images = loaded["problems"], loaded["requests"], loaded["images"]
    title, headings = loaded["title"], loaded["headings"]
    assert not problems, problems
    # Only the page itself and its data: URIs; nothing from the network or other files.
    assert all(url == report.as_uri() or url.startswith("data:") for url in requests), requests
    assert [i["id"] for i in images] == [f"fig-{name}" for name in FIGURES]
    assert all(i["ok"] for i in images), [i for i in images if not i["ok"]]
    assert "rod-NMC" in title and "gravel-NMC" in title
    assert "Valence-gradient orientation θ" in headings
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
