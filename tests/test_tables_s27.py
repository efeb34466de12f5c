"""Query tables as a user reads them (session 27's review), both backends.

- ``-o rows.csv`` without ``--format`` wrote the aligned terminal table into a .csv file; now
  the extension names the format, and a ``--format`` that contradicts it is refused.
- A JSON column (a sample's ``meta``, a job's parameters) came out as Python's repr in CSV and
  the table (single quotes); now as JSON text.
- ``query summary`` printed counts as 1.0 and NaN, and counted cells that never reached the
  cycle its figures are read at.
- ``query xas`` left out the named reference spectra (no sample): the inputs of ``--lcf``
  were reachable by raw SQL only.
"""

from __future__ import annotations

import csv
import io
import json

import pandas as pd

from tests.conftest import DATA
from tests.test_hostile_cycling import P492

NIO = DATA / "xas" / "ref_NiO.txt"
XDI = DATA / "xas" / "ni_metal_rt.xdi"


def _ok(cli, *args):
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result


def test_the_output_file_extension_names_the_format(cli, tmp_path):
    _ok(cli, "init")
    _ok(cli, "sample", "add", "A", "--meta", "batch=7")
    for name in ("rows.csv", "ROWS.CSV"):
        _ok(cli, "query", "samples", "-o", tmp_path / name)
        assert (tmp_path / name).read_text().splitlines()[0].startswith("sample,material,morphology,")
    _ok(cli, "query", "samples", "-o", tmp_path / "rows.json")
    assert json.loads((tmp_path / "rows.json").read_text())[0]["sample"] == "A"
    _ok(cli, "query", "samples", "-o", tmp_path / "rows.parquet")
    assert pd.read_parquet(tmp_path / "rows.parquet")["sample"].tolist() == ["A"]
    _ok(cli, "query", "samples", "-o", tmp_path / "rows.txt")
    assert (tmp_path / "rows.txt").read_text().split()[:2] == ["sample", "material"]
    # given explicitly and agreeing, or for an extension that names no format: as asked
    _ok(cli, "query", "samples", "-f", "csv", "-o", tmp_path / "agree.csv")
    _ok(cli, "query", "samples", "-f", "json", "-o", tmp_path / "rows.out")
    assert json.loads((tmp_path / "rows.out").read_text())[0]["sample"] == "A"


def test_a_format_that_contradicts_the_extension_is_refused(cli, tmp_path):
    """A usage error at parsing, in either order of the options (before a long query runs)."""
    _ok(cli, "init")
    target = tmp_path / "rows.json"
    for args in (("-f", "csv", "-o", target), ("-o", target, "-f", "csv")):
        for command in (("query", "samples"), ("query", "sql", "SELECT 1 AS one"), ("user", "list")):
            result = cli(*command, *args)
            assert result.exit_code == 2, result.output
            assert result.stderr == (f"error: {target}: a .json file, but --format csv; leave --format out or make "
                                     f"the two agree (see 'txmdb {' '.join(command[:2] if command[0] == 'query' else command)} --help')\n")
            assert not target.exists()


def test_json_columns_are_json_text_in_csv_and_the_table(cli):
    _ok(cli, "init")
    _ok(cli, "sample", "add", "A", "--meta", "batch=7", "--meta", 'note=say "hi"')
    rows = list(csv.DictReader(io.StringIO(_ok(cli, "query", "samples", "-f", "csv").stdout)))
    assert json.loads(rows[0]["meta"]) == {"batch": "7", "note": 'say "hi"'}
    table = _ok(cli, "query", "samples").stdout
    assert '{"batch": "7", "note": "say \\"hi\\""}' in table and "{'batch'" not in table


def test_summary_counts_are_whole_numbers_of_cells_that_reached_the_cycle(cli, tmp_path):
    _ok(cli, "init")
    for sample in ("S", "T"):
        _ok(cli, "sample", "add", sample)
    for cell in ("C1", "C2"):
        _ok(cli, "cell", "add", cell, "--sample", "S", "--active-mass-mg", "10")
    _ok(cli, "cycling", "ingest", P492, "--cell", "C1")
    cycles = json.loads(_ok(cli, "query", "cycles", "--cell", "C1", "-f", "json").stdout)
    last = max(row["cycle"] for row in cycles)
    for cycle, cells in ((4, 1), (last + 1, 0)):
        rows = {r["sample"]: r for r in json.loads(_ok(cli, "query", "summary", "--cycle", str(cycle), "-f", "json").stdout)}
        assert rows["S"]["n_cells"] == cells and rows["T"]["n_cells"] == 0      # C2 has no run: not counted
        assert rows["S"]["n_scans"] == 0 and rows["T"]["n_scans"] == 0
        assert (rows["S"]["retention_pct"] is None) == (cells == 0)
    text = _ok(cli, "query", "summary", "--cycle", "4", "-f", "csv").stdout
    assert list(csv.DictReader(io.StringIO(text)))[0]["n_cells"] == "1"
    # a second cycler file of the same cell: still one cell
    second = tmp_path / "second.csv"
    second.write_bytes(P492.read_bytes() + b"\n")
    _ok(cli, "cycling", "ingest", second, "--cell", "C1")
    rows = {r["sample"]: r for r in json.loads(_ok(cli, "query", "summary", "--cycle", "4", "-f", "json").stdout)}
    assert rows["S"]["n_cells"] == 1


def test_query_xas_lists_the_reference_spectra_last(cli):
    _ok(cli, "init")
    _ok(cli, "sample", "add", "S")
    _ok(cli, "xas", "ingest", NIO, "--reference", "NiO", "--edge", "Ni-K")
    _ok(cli, "xas", "ingest", XDI, "--sample", "S", "--edge", "Ni-K")
    rows = json.loads(_ok(cli, "query", "xas", "-f", "json").stdout)
    assert [(r["sample"], r["reference"], r["measurement_id"]) for r in rows] == [("S", None, 2), (None, "NiO", 1)]
    assert rows[1]["edge_energy_ev"] > 8330
    assert [r["measurement_id"] for r in json.loads(_ok(cli, "query", "xas", "--sample", "S", "-f", "json").stdout)] == [2]


def test_the_reports_retention_table_keeps_the_cycles_to_columns_it_names():
    """The caption says "cycles to 95/90/80 %": a column empty in every row (never reached)
    stays, with a dash, instead of vanishing as other empty columns do."""
    from txmdb.report.html import Section

    frame = pd.DataFrame({"cell": ["C1", "C2"], "retention_pct": [96.0, 91.5],
                          "cycles_to_95": pd.array([None, 40], dtype="Int64"),
                          "cycles_to_80": pd.array([None, None], dtype="Int64"),
                          "notes": [None, None]})
    section = Section("cycling", "Cycling")
    section.table("Retention and cycles to 95/90/80 %.", frame, keep=("cycles_to_95", "cycles_to_90", "cycles_to_80"))
    section.table("Without keep.", frame)
    kept, plain = (t.html for t in section.tables)
    assert "<th>cycles_to_80</th>" in kept and "<th>notes</th>" not in kept and "–" in kept
    assert "<th>cycles_to_80</th>" not in plain and "<th>cycles_to_95</th>" in plain
