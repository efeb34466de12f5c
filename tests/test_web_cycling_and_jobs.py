"""The sample page's cycling overview, the jobs page's cancel button, table headers in words and units
(downloads keeping the column names) and errors naming pages instead of commands, against a real
``txmdb serve`` process on SQLite and PostgreSQL.

The served catalogue is the demo's plus a sample whose name and cells' names are markup, two cycler
files of tests/data/cycling ingested into its cells, and accounts of each role.
"""

from __future__ import annotations

import csv
import html
import io
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import BACKENDS
from tests.web_server import served_catalogue

CYCLING = Path(__file__).parent / "data" / "cycling"
SAMPLE = "<b>NMC</b> & co"
#: cell → its cycler file and what the overview shows of it: cycles, first-cycle discharge (mAh/g at
#: 5 mg), last cycle, reference cycle, retention there (%), voltage drop there (V)
CELLS = {
    "<i>C1</i>": (CYCLING / "neware-ndax" / "nw4-120-6-1-36.ndax", ["5", "7660.48", "5", "2", "100.085", "0.051712"]),
    "C2 <script>x</script>": (CYCLING / "batterydata" / "p492-13-raw.csv",
                              ["9", "143.904", "9", "2", "87.4513", "0.0437934"]),
}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    with served_catalogue(request, tmp_path_factory, request.param, populate=True) as served:
        _cli(served, "sample", "add", SAMPLE)
        served.runs = {}
        for cell, (path, _) in CELLS.items():
            _cli(served, "cell", "add", cell, "--sample", SAMPLE, "--active-mass-mg", "5")
            served.runs[cell] = int(_cli(served, "cycling", "ingest", str(path), "--cell", cell).splitlines()[-1])
        _cli(served, "cell", "add", "C3", "--sample", SAMPLE, "--active-mass-mg", "5")  # a cell not cycled yet
        for role in ("viewer", "editor", "admin"):
            served.add_account(role)
        served.server = served.start()
        yield served


def _cli(site, *args: str) -> str:
    done = site.cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _signed_in(site, name: str):
    client = site.client(site.server)
    token = _csrf(client.get("/login"))
    answer = client.post("/login", data={"username": name, "password": site.accounts[name].password,
                                         "csrf_token": token, "next": "/"})
    assert answer.status_code == 303, answer.text
    return client


def _csrf(page) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


class Table(HTMLParser):
    """The column names (each header's ``data-column``), header labels and cell texts of the table ``id``
    of a page, and per row the URL its button's form posts to (None: no button)."""

    def __init__(self, text: str, id: str):
        super().__init__()
        self.id, self.columns, self.labels, rows = id, [], [], []
        self._inside, self._cell, self._rows = False, None, rows
        self.feed(text)
        # (the header's row has no td)
        self.rows, self.posts = [r for r, _ in rows if r], [p for r, p in rows if r]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == self.id:
            self._inside = True
        elif self._inside and tag == "tr":
            self._rows.append(([], None))
        elif self._inside and tag == "th":
            self.columns.append(attrs["data-column"])
            self._cell = self.labels
            self._cell.append("")
        elif self._inside and tag == "td":
            self._cell = self._rows[-1][0]
            self._cell.append("")
        elif self._inside and tag == "form":
            self._rows[-1] = (self._rows[-1][0], attrs["action"])

    def handle_endtag(self, tag):
        if tag == "table":
            self._inside = False
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[-1] += data


# ----------------------------------------------------------------------------- the sample page
def test_the_sample_page_shows_each_cycling_run_of_its_cells(site):
    with site.client(site.server, "viewer") as client:
        page = client.get(f"/samples/{quote(SAMPLE, safe='')}")
        assert page.status_code == 200, page.text
        table = Table(page.text, "cycling")
        assert table.columns == ["cell", "run_id", "source_name", "n_cycles", "first_discharge_capacity_mah_g",
                                 "last_cycle", "reference_cycle", "retention_pct", "voltage_drop_v"]
        # The headers a reader sees: words and units (the names stay for scripts and downloads).
        assert table.labels == ["cell", "run ID", "source name", "number of cycles",
                                "first discharge capacity (mAh/g)", "last cycle", "reference cycle", "retention (%)",
                                "voltage drop (V)"]
        # each run by the name of its cycler file (a command's ingest: the file's base name)
        assert table.rows == [[cell, str(site.runs[cell]), path.name, *shown]
                              for cell, (path, shown) in sorted(CELLS.items())]
        # The names are text: escaped, never markup of the page.
        for cell in CELLS:
            assert cell not in page.text
        assert "&lt;script&gt;x&lt;/script&gt;" in page.text
    # Retention as `txmdb query retention` reads it at the same cycle.
    for cell, (_, shown) in CELLS.items():
        text = _cli(site, "query", "retention", "--cycle", shown[2], "--cell", cell, "--format", "csv")
        row, = csv.DictReader(io.StringIO(text))
        assert f"{float(row['retention_pct']):.6g}" == shown[4]


def test_a_sample_without_cycling_says_so(site):
    _cli(site, "sample", "add", "uncycled")
    with site.client(site.server, "viewer") as client:
        page = client.get("/samples/uncycled")
    assert page.status_code == 200 and 'id="cycling"' not in page.text
    assert "No cycling data of this sample&#39;s cells." in page.text


# ----------------------------------------------------------------------------- cancelling jobs
def _scan_id(site) -> int:
    with site.client(site.server, "viewer") as client:
        return client.get("/api/v1/scans").json()["items"][0]["scan_id"]


def _queued_job(site) -> int:
    with site.client(site.server, "editor") as client:
        answer = client.post(f"/api/v1/scans/{_scan_id(site)}/analyses", json={})
    assert answer.status_code == 202, answer.text
    return answer.json()["job_id"]


def _done_job(site) -> int:
    from txmdb.catalog import open_catalog
    from txmdb.db.models import Job

    catalog = open_catalog(site.url, site.store, check=False)
    with catalog.session() as session:
        job = Job(kind="analyze", parameters={}, scan_id=_scan_id(site), status="done", created_by="editor")
        session.add(job)
        session.flush()
        job_id = job.id
    catalog.engine.dispose()
    return job_id


def _status(site, job_id: int) -> str:
    with site.client(site.server, "viewer") as client:
        return client.get(f"/api/v1/jobs/{job_id}").json()["status"]


def _button_of(page, job_id: int) -> str | None:
    """The URL the cancel button of job ``job_id``'s row posts to (None: no button)."""
    table = Table(page.text, "jobs")
    rows = dict(zip((row[0] for row in table.rows), table.posts))
    assert str(job_id) in rows, table.rows
    return rows[str(job_id)]


def test_an_editor_cancels_a_queued_job_from_the_jobs_page(site):
    queued, done = _queued_job(site), _done_job(site)
    editor = _signed_in(site, "editor")
    page = editor.get("/jobs")
    assert _button_of(page, queued) == f"/jobs/{queued}/cancel"
    assert _button_of(page, done) is None  # nothing to cancel
    answer = editor.post(f"/jobs/{queued}/cancel", data={"csrf_token": _csrf(page)})
    assert answer.status_code == 200, answer.text
    assert "job " + str(queued) + " cancelled" in answer.text and _button_of(answer, queued) is None
    assert _status(site, queued) == "cancelled"
    editor.close()


def test_cancelling_a_finished_job_is_one_line_not_a_traceback(site):
    done = _done_job(site)
    editor = _signed_in(site, "editor")
    token = _csrf(editor.get("/jobs"))
    message = f"job {done} is done: only queued or running jobs can be cancelled"
    answer = editor.post(f"/jobs/{done}/cancel", data={"csrf_token": token})
    assert answer.status_code == 409 and message in answer.text and "Traceback" not in answer.text
    assert Table(answer.text, "jobs").rows  # the jobs page, with the message above it
    missing = editor.post("/jobs/424242/cancel", data={"csrf_token": token})
    assert missing.status_code == 404 and "no job with id 424242" in missing.text
    editor.close()
    with site.client(site.server, "editor") as client:
        refused = client.post(f"/api/v1/jobs/{done}/cancel")
    assert refused.status_code == 409 and refused.json() == {"error": message, "status": 409}
    assert _status(site, done) == "done"


def test_the_api_cancels_as_the_cli_does(site):
    queued = _queued_job(site)
    with site.client(site.server, "editor") as client:
        answer = client.post(f"/api/v1/jobs/{queued}/cancel")
        assert answer.status_code == 200, answer.text
        assert answer.json()["job_id"] == queued and answer.json()["status"] == "cancelled"
        assert client.post("/api/v1/jobs/424242/cancel").status_code == 404
        assert client.post("/api/v1/jobs/1_0/cancel").status_code == 422


def test_a_viewer_gets_no_button_and_a_403(site):
    queued = _queued_job(site)
    viewer = _signed_in(site, "viewer")
    page = viewer.get("/jobs")
    assert _button_of(page, queued) is None and "/cancel" not in page.text
    refused = viewer.post(f"/jobs/{queued}/cancel", data={"csrf_token": _csrf(page)})
    assert refused.status_code == 403 and "needs the editor role" in refused.text
    refused = viewer.post(f"/api/v1/jobs/{queued}/cancel", headers={"X-CSRF-Token": _csrf(page)})
    assert refused.status_code == 403 and "needs the editor role" in refused.json()["error"]
    viewer.close()
    with site.client(site.server, "viewer") as client:
        assert client.post(f"/api/v1/jobs/{queued}/cancel").status_code == 403
    assert _status(site, queued) == "queued"


def test_a_forged_cancel_without_the_csrf_token_is_refused(site):
    queued = _queued_job(site)
    editor = _signed_in(site, "editor")
    for data in ({}, {"csrf_token": "f" * 64}):
        refused = editor.post(f"/jobs/{queued}/cancel", data=data)
        assert refused.status_code == 403 and "CSRF" in refused.text
    refused = editor.post(f"/api/v1/jobs/{queued}/cancel")  # the API called by the session, not a token
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    # Another session's token is no token for this one.
    other = _signed_in(site, "admin")
    victim_page = other.get("/jobs")
    refused = editor.post(f"/jobs/{queued}/cancel", data={"csrf_token": _csrf(victim_page)})
    assert refused.status_code == 403
    other.close()
    editor.close()
    # (session 29 attack) signed out, the form's POST goes to the sign-in page without coming
    # back to the form's URL afterwards: a GET of it would be a 405
    anonymous = site.client(site.server)
    answer = anonymous.post(f"/jobs/{queued}/cancel", data={"csrf_token": "x"}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].endswith("/login")
    page = anonymous.get(f"/jobs?status=queued", follow_redirects=False)
    assert page.headers["location"].endswith("/login?next=%2Fjobs%3Fstatus%3Dqueued")
    anonymous.close()
    assert _status(site, queued) == "queued"


# ----------------------------------------------------------------------------- headers and errors in a browser's words
def test_query_headers_are_labels_and_the_downloads_keep_the_names(site):
    with site.client(site.server, "viewer") as client:
        page = client.get("/query/cycles", params={"sample": SAMPLE})
        assert page.status_code == 200, page.text
        table = Table(page.text, "query-table")
        link = html.unescape(re.search(r'id="download-csv" href="([^"]+)"', page.text).group(1))
        download = client.get(link)
        records = client.get("/api/v1/query/cycles", params={"sample": SAMPLE}).json()
    assert {"discharge_capacity_mah_g", "coulombic_efficiency_pct", "end_charge_voltage_v"} <= set(table.columns)
    labels = dict(zip(table.columns, table.labels))
    assert labels["discharge_capacity_mah_g"] == "discharge capacity (mAh/g)"
    assert labels["coulombic_efficiency_pct"] == "coulombic efficiency (%)"
    assert labels["end_charge_voltage_v"] == "end charge voltage (V)"
    # CSV, JSON and the CLI: the column names, as before
    assert download.status_code == 200 and download.text.splitlines()[0].split(",") == table.columns
    assert list(records[0]) == table.columns
    cli = _cli(site, "query", "cycles", "--sample", SAMPLE, "--format", "csv")
    assert cli.splitlines()[0].split(",") == table.columns


def test_the_sql_console_shows_the_names_its_statement_chose(site):
    editor = _signed_in(site, "editor")
    token = _csrf(editor.get("/sql"))
    answer = editor.post("/sql", data={"statement": "SELECT name AS energy_min_ev, 1 AS n FROM samples",
                                       "csrf_token": token})
    assert answer.status_code == 200, answer.text
    table = Table(answer.text, "sql-result")
    assert table.columns == table.labels == ["energy_min_ev", "n"]
    editor.close()


#: a txmdb command in a text, as the CLI's advice quotes one
_COMMAND = re.compile(r"['`]txmdb [a-z]")


def _error_page(answer, status: int, message: str, page: str) -> None:
    """An error page with ``message`` in a browser's words, linking to the page it names, no command."""
    text = html.unescape(answer.text)
    assert answer.status_code == status and message in text, answer.text
    assert not _COMMAND.search(text), text
    assert re.search(f'<a id="error-page" href="{re.escape(page)}">', answer.text), answer.text


def test_errors_name_pages_not_commands_on_pages_and_in_the_api(site):
    editor = _signed_in(site, "editor")
    missing = editor.post("/jobs/424242/cancel", data={"csrf_token": _csrf(editor.get("/jobs"))})
    _error_page(missing, 404, "no job with id 424242; see the jobs page", "/jobs")
    editor.close()
    with site.client(site.server, "viewer") as client:
        report = client.get("/compare/report", params={"sample": "nowhere"})
        job = client.get("/api/v1/jobs/424242")
    _error_page(report, 404, "no sample named 'nowhere'; see the samples page", "/samples")
    assert job.json() == {"error": "no job with id 424242; see the jobs page", "status": 404}
    # The CLI's own words are unchanged.
    cli = site.cli("jobs", "cancel", "424242")
    assert cli.returncode == 1 and "no job with id 424242; see 'txmdb jobs'" in cli.stderr
