"""``txmdb report compare … --state S``: a report restricted to some states, on SQLite and PostgreSQL.

The catalogue is the demo's (txmdb.demo.populate_demo on 16³ tomograms): both samples have a
pristine and a charged-4.5V Ni K-edge spectrum, charged-4.5V L3 spectra and TXM scans, and a
pristine XRD result. The report's tables are read back from its HTML and compared with what
``txmdb query`` lists for the same states.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

SAMPLES = ("rod-NMC", "gravel-NMC")
GENERATED = re.compile(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")


class ReportPage(HTMLParser):
    """What the assertions read of a report: its states line, and per section its notes,
    figure ids and tables (header and rows of cell texts)."""

    def __init__(self, text: str):
        super().__init__()
        self.states = ""
        self.notes: dict[str, list[str]] = {}
        self.figures: dict[str, list[str]] = {}
        self.tables: dict[str, list[dict]] = {}
        self._section = None
        self._into, self._kind = None, None    # the list whose last string the text goes to, and what it is
        self._row = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs.get("id")
        elif tag == "p" and attrs.get("id") == "states":
            self._into, self._kind = [""], "states"
        elif tag == "p" and attrs.get("class") == "note":
            self.notes.setdefault(self._section, []).append("")
            self._into, self._kind = self.notes[self._section], "note"
        elif tag == "figure":
            self.figures.setdefault(self._section, []).append(attrs.get("id", "")[len("fig-"):])
        elif tag == "table":
            self.tables.setdefault(self._section, []).append({"header": [], "rows": []})
        elif tag == "tr":
            self._row = []
        elif tag in ("th", "td") and self._row is not None:
            self._row.append("")
            self._into, self._kind = self._row, "cell"

    def handle_endtag(self, tag):
        if tag == "p" and self._into is not None and self._kind in ("states", "note"):
            if self._kind == "states":
                self.states = " ".join(self._into[0].split())
            self._into = None
        elif tag in ("th", "td"):
            self._into = None
        elif tag == "tr" and self._row is not None:
            table = self.tables[self._section][-1]
            if not table["header"]:
                table["header"] = self._row
            else:
                table["rows"].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._into is not None:
            self._into[-1] += data

    def column(self, section: str, name: str, table: int = -1) -> list[str]:
        """One column of a section's table (the last one unless ``table`` says), as text."""
        found = self.tables[section][table]
        index = found["header"].index(name)
        return [row[index].strip() for row in found["rows"]]


def without_time(html: str) -> str:
    """The report without its one generation time (reports built a minute apart differ only there)."""
    assert len(GENERATED.findall(html)) == 1
    return GENERATED.sub("Generated (time)", html)


@pytest.fixture
def demo(cli, catalog, tmp_path):
    from txmdb.demo import populate_demo

    populate_demo(catalog, tmp_path / "raw", size=16, n_energies=30, echo=lambda _: None)
    return cli


def listed(cli, table: str, column: str, *filters: str) -> list[str]:
    """A column of ``txmdb query TABLE FILTERS --format json``, as the report prints it."""
    result = cli("query", table, *filters, "--format", "json")
    assert result.exit_code == 0, result.output
    return [str(row[column]) for row in json.loads(result.stdout)]


def report(cli, out: Path, *options: str) -> ReportPage:
    result = cli("report", "compare", *SAMPLES, *options, "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(out.resolve())]
    return ReportPage(out.read_text(encoding="utf-8"))


def test_report_of_one_state_shows_its_scans_and_spectra_only(demo, tmp_path):
    xas_ids = {state: listed(demo, "xas", "measurement_id", "--state", state) for state in ("pristine", "charged-4.5V")}
    scan_ids = listed(demo, "scans", "scan_id", "--state", "charged-4.5V")
    assert len(xas_ids["pristine"]) == 2 and len(xas_ids["charged-4.5V"]) == 6 and len(scan_ids) == 2
    assert listed(demo, "scans", "scan_id", "--state", "pristine") == []

    pristine = report(demo, tmp_path / "pristine.html", "--state", "pristine")
    assert pristine.states.startswith("States: pristine only ")
    assert sorted(pristine.column("xas", "measurement_id")) == sorted(xas_ids["pristine"])
    assert set(pristine.column("xas", "state")) == {"pristine"}
    assert pristine.column("xrd", "state") == ["pristine", "pristine"]
    assert pristine.column("xrd", "i003_i104") == ["1.92", "1.63"]
    assert "No TXM scans for these samples in state pristine." in pristine.notes["txm"]
    assert "No L3-edge spectra for these samples in state pristine." in pristine.notes["xas"]
    assert pristine.notes["summary"] == ["No summary row for these samples in state pristine: none of their TXM "
                                         "scans is in these states."]
    assert "txm" not in pristine.tables and "summary" not in pristine.tables and "txm" not in pristine.figures and "theta" not in pristine.figures
    assert pristine.figures["xas"] == ["xas_k_edge"]
    assert pristine.figures["cycling"] == ["cycling"]  # cells have no state: cycling stays whole

    charged = report(demo, tmp_path / "charged.html", "--state", "charged-4.5V", "--state", "charged-4.5V")
    assert charged.states.startswith("States: charged-4.5V only ")
    assert sorted(charged.column("xas", "measurement_id")) == sorted(xas_ids["charged-4.5V"])
    assert set(charged.column("xas", "state")) == {"charged-4.5V"}
    assert "xrd" not in charged.tables
    assert charged.notes["xrd"] == ["No XRD results for these samples in state charged-4.5V."]
    assert sorted(charged.column("txm", "scan_id", table=0)) == sorted(scan_ids)
    assert set(charged.column("txm", "state", table=0)) == {"charged-4.5V"}
    assert charged.column("summary", "state") == ["charged-4.5V", "charged-4.5V"]
    assert "valence_maps" in charged.figures["txm"] and "theta" in charged.figures["theta"]

    both = report(demo, tmp_path / "all.html")
    assert both.states == "States: all."
    assert sorted(both.column("xas", "measurement_id")) == sorted(xas_ids["pristine"] + xas_ids["charged-4.5V"])
    assert sorted(both.column("txm", "scan_id", table=0)) == sorted(scan_ids) and len(both.column("xrd", "xrd_id")) == 2
    # The same states named both ways give the same report.
    every = report(demo, tmp_path / "every.html", "--state", "pristine", "--state", "charged-4.5V")
    assert sorted(every.column("xas", "measurement_id")) == sorted(both.column("xas", "measurement_id"))
    assert sorted(every.column("txm", "scan_id", table=0)) == sorted(scan_ids)


def test_a_state_of_none_of_the_samples_is_refused(demo, tmp_path):
    out = tmp_path / "nope" / "report.html"
    result = demo("report", "compare", *SAMPLES, "--state", "pristine", "--state", "nope", "-o", out)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: --state: no scan, XAS spectrum or XRD result of rod-NMC, gravel-NMC is in state 'nope' "
        "(their states: charged-4.5V, pristine)"]
    assert result.stdout == ""
    assert not out.parent.exists()
