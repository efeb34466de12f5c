"""The compare page with states, against a real ``txmdb serve`` process, on SQLite and PostgreSQL.

The demo's catalogue (16³ tomograms): both samples have pristine and charged-4.5V spectra,
charged-4.5V TXM scans and a pristine XRD result. The page offers the chosen samples' states
as checkboxes; with one ticked, the framed report is restricted to it, and its download is the
same HTML, which is also what ``txmdb report compare … --state S`` writes.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from tests.conftest import BACKENDS
from tests.test_report_states import SAMPLES, ReportPage, without_time
from tests.web_server import served_catalogue


@pytest.fixture(scope="module", params=BACKENDS)
def lab(request, tmp_path_factory):
    with served_catalogue(request, tmp_path_factory, request.param, populate=True) as served:
        served.add_account("viewer")
        served.server = served.start()
        yield served


class ComparePage(HTMLParser):
    """The compare page's state checkboxes (value → ticked), report frame, download link and error."""

    def __init__(self, text: str):
        super().__init__()
        self.states: dict[str, bool] = {}
        self.frame = self.download = None
        self.error = ""
        self._in_error = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("name") == "state":
            self.states[attrs["value"]] = "checked" in attrs
        elif tag == "iframe" and attrs.get("id") == "report":
            self.frame = attrs["src"]
        elif tag == "a" and attrs.get("id") == "download-report":
            self.download = attrs["href"]
        elif tag == "div" and attrs.get("class") == "error":
            self._in_error = True

    def handle_endtag(self, tag):
        if tag == "div":
            self._in_error = False

    def handle_data(self, data):
        if self._in_error:
            self.error += data


def _get(lab, path: str, params=None):
    with lab.client(lab.server, "viewer") as client:
        return client.get(path, params=params)


def _compare(lab, *pairs: tuple[str, str], status: int = 200) -> ComparePage:
    answer = _get(lab, "/compare", params=list(pairs))
    assert answer.status_code == status, answer.text
    return ComparePage(answer.text)


def test_the_state_checkboxes_are_the_chosen_samples_states(lab):
    none = _compare(lab)
    assert none.states == {} and none.frame is None
    both = _compare(lab, *(("sample", s) for s in SAMPLES))
    assert both.states == {"charged-4.5V": False, "pristine": False}
    assert "state=" not in both.frame
    assert _compare(lab, ("sample", "rod-NMC"), ("state", "pristine")).states == {"charged-4.5V": False,
                                                                                   "pristine": True}


def test_a_state_gives_the_restricted_report_and_its_download_is_the_same_html(lab):
    page = _compare(lab, *(("sample", s) for s in SAMPLES), ("state", "pristine"))
    assert page.states == {"charged-4.5V": False, "pristine": True}
    assert page.download == page.frame + "&download=1"

    framed = _get(lab, page.frame)
    assert framed.status_code == 200 and framed.headers["content-type"] == "text/html; charset=utf-8"
    report = ReportPage(framed.text)
    pristine = [str(r["measurement_id"]) for r in json.loads(
        lab.cli("query", "xas", "--state", "pristine", "--format", "json").stdout)]
    assert len(pristine) == 2
    assert report.states.startswith("States: pristine only ")
    assert sorted(report.column("xas", "measurement_id")) == sorted(pristine)
    assert set(report.column("xas", "state")) == {"pristine"}
    assert report.column("xrd", "state") == ["pristine", "pristine"]
    assert "No TXM scans for these samples in state pristine." in report.notes["txm"]

    downloaded = _get(lab, page.download)
    assert downloaded.status_code == 200
    assert downloaded.headers["content-disposition"] == \
        'attachment; filename="txmdb-compare-rod-NMC-gravel-NMC-pristine.html"'
    assert without_time(downloaded.text) == without_time(framed.text)
    # One implementation: the CLI writes the same report for the same choice.
    out = lab.root / "cli-report.html"
    written = lab.cli("report", "compare", *SAMPLES, "--state", "pristine", "-o", str(out))
    assert written.returncode == 0, written.stderr
    assert without_time(out.read_text(encoding="utf-8")) == without_time(downloaded.text)

    charged = ReportPage(_get(lab, "/compare/report", [*(("sample", s) for s in SAMPLES),
                                                       ("state", "charged-4.5V")]).text)
    assert set(charged.column("xas", "state")) == {"charged-4.5V"}
    assert charged.notes["xrd"] == ["No XRD results for these samples in state charged-4.5V."]
    assert set(charged.column("txm", "state", table=0)) == {"charged-4.5V"}


def test_a_state_of_none_of_the_samples_is_a_message_not_a_report(lab):
    expected = ("no scan, XAS spectrum or XRD result of rod-NMC is in state 'nope' "
                "(their states: charged-4.5V, pristine)")
    page = _compare(lab, ("sample", "rod-NMC"), ("state", "nope"), status=422)
    assert page.error.strip() == expected and page.frame is None and page.download is None
    assert page.states == {"charged-4.5V": False, "pristine": False}
    answer = _get(lab, "/compare/report", [("sample", "rod-NMC"), ("state", "nope")])
    assert answer.status_code == 422
    assert expected.replace("'", "&#39;") in answer.text and "Traceback" not in answer.text
