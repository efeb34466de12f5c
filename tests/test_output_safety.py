"""Names are plain text everywhere they are shown, on SQLite and PostgreSQL (issue 9 §7).

- In a terminal (tables, messages, error lines) control characters, bidi overrides and
  undecodable bytes are escaped: ``ESC [2J`` cannot clear the screen, U+202E cannot turn a
  line around.
- In CSV (stdout and ``-o``) a text cell cannot start a spreadsheet formula; numbers, and
  text that is just a number, stay as they are. JSON and parquet stay faithful.
- In the report, ``$…$`` is not read as math (``$\\undefined$`` used to stop it), and HTML
  and template syntax in names is shown, never run.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import unicodedata

import pandas as pd
import pytest

from txmdb.textsafe import spreadsheet_cell, utf8_problem, visible

EVIL = "evil\x1b[2J\r\x07\u202eabc"
EVIL_SHOWN = "evil\\x1b[2J\\r\\x07\\u202eabc"
NAMES = ["rod $x^2$", "a$b", "\\$", "$\\undefined$", "<script>alert(1)</script>", "{{7*7}}", EVIL,
         '=HYPERLINK("http://x","y")', "+cmd", "@SUM(A1)", "-2+3", "-5", "zero\u200bwidth"]
# What a spreadsheet-bound CSV holds for each name.
CSV_CELLS = {'=HYPERLINK("http://x","y")': '\'=HYPERLINK("http://x","y")', "+cmd": "'+cmd", "@SUM(A1)": "'@SUM(A1)",
             "-2+3": "'-2+3"}


def acting_characters(text: str) -> set[str]:
    """Characters a terminal would act on rather than show (line breaks of the output aside)."""
    return {c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")}


# --------------------------------------------------------------------------- txmdb.textsafe


@pytest.mark.parametrize("text, shown", [
    ("rod-NMC", "rod-NMC"),
    ("rod $x^2$", "rod $x^2$"),
    ("µ ° Ni₃ 镍 😀", "µ ° Ni₃ 镍 😀"),
    (EVIL, EVIL_SHOWN),
    ("a\nb\tc", "a\\nb\\tc"),
    ("\x00\x7f\x85\x9b", "\\x00\\x7f\\x85\\x9b"),
    ("\u2066x\u2069\u200f\ufeff\u2028", "\\u2066x\\u2069\\u200f\\ufeff\\u2028"),
    ("caf\udce9.csv", "caf\\xe9.csv"),  # a file-name byte that is not UTF-8
    ("\ud800", "\\ud800"),
    ("\U000e0041", "\\U000e0041"),
])
def test_visible_escapes_what_would_act(text, shown):
    assert visible(text) == shown
    assert not acting_characters(visible(text))


def test_visible_keeps_the_line_breaks_asked_for():
    assert visible("line 1\nline\x1b 2\n", keep="\n") == "line 1\nline\\x1b 2\n"


@pytest.mark.parametrize("cell, expected", [
    ("=1+1", "'=1+1"), ("+cmd", "'+cmd"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
    ("\rx", "'\rx"), ("\nx", "'\nx"), ("＝1+1", "'＝1+1"), ("-", "'-"), ("-inf", "'-inf"),
    ("-5", "-5"), ("+1.5e3", "+1.5e3"), ("-.5", "-.5"), ("-0.25", "-0.25"),
    ("rod", "rod"), ("a=b", "a=b"), ("", ""), ("'=x", "'=x"),
])
def test_spreadsheet_cell(cell, expected):
    assert spreadsheet_cell(cell) == expected


def test_utf8_problem():
    assert utf8_problem("café/ok.csv") is None
    assert utf8_problem("caf\udce9.csv") == "is not valid UTF-8 (undecodable bytes shown as \\xNN)"


def test_textsafe_is_standard_library_only():
    code = "import sys, txmdb.textsafe; print(sorted(m for m in ('numpy', 'pandas', 'sqlalchemy') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def named(cli):
    """A catalogue whose samples have every hostile name."""
    assert cli("init").exit_code == 0
    for name in NAMES:
        result = cli("sample", "add", "--", name)
        assert result.exit_code == 0, result.output
    return cli


def test_messages_escape_names(cli):
    assert cli("init").exit_code == 0
    added = cli("sample", "add", EVIL)
    assert added.exit_code == 0
    assert added.stdout == f"sample {EVIL_SHOWN} added (id 1)\n"
    again = cli("sample", "add", EVIL)
    assert again.exit_code == 1
    assert again.stderr == f"error: sample '{EVIL_SHOWN}' exists already\n"


def test_error_lines_escape_what_they_quote(named, tmp_path):
    target = tmp_path / "new\x1b[2J\u202e" / "out.csv"
    result = named("query", "samples", "-o", target)
    assert result.exit_code == 1
    shown = f"{tmp_path}/new\\x1b[2J\\u202e"
    assert result.stderr == f"error: {shown}/out.csv: folder {shown} does not exist\n"


@pytest.mark.parametrize("command", [["sample", "list"], ["query", "samples"], ["sample", "show", EVIL]])
def test_table_output_escapes_control_characters(named, command):
    result = named(*command)
    assert result.exit_code == 0, result.output
    assert not acting_characters(result.stdout), sorted(acting_characters(result.stdout))
    assert EVIL_SHOWN in result.stdout
    if command[1] != "show":
        assert "zero\\u200bwidth" in result.stdout and "rod $x^2$" in result.stdout


def _csv_names(text: str) -> list[str]:
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [row["sample"] for row in rows]


def test_csv_export_guards_formulas(named, tmp_path):
    expected = sorted(CSV_CELLS.get(name, name) for name in NAMES)
    printed = named("query", "samples", "-f", "csv")
    assert printed.exit_code == 0
    assert sorted(_csv_names(printed.stdout)) == expected
    out = tmp_path / "samples.csv"
    assert named("sample", "list", "-f", "csv", "-o", out).exit_code == 0
    written = out.read_bytes().decode("utf-8")  # not read_text: it would turn the "\r" in a name into "\n"
    assert sorted(_csv_names(written)) == expected
    assert EVIL in _csv_names(written), "CSV stays faithful apart from the formula guard"


def test_csv_guards_text_cells_and_headers_only(named):
    """Numbers (SQL numerics too, which arrive as Decimal on PostgreSQL) and numeric text keep their sign."""
    result = named("query", "sql", """SELECT -3 AS "=h", -1.5 AS x, '-3' AS t, '=1+1' AS f, '-1e5' AS e, """
                                    """'@x' AS a, '-x' AS m""", "-f", "csv")
    assert result.exit_code == 0, result.output
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["'=h", "x", "t", "f", "e", "a", "m"],
        ["-3", "-1.5", "-3", "'=1+1", "-1e5", "'@x", "'-x"],
    ]


def test_json_and_parquet_stay_faithful(named, tmp_path):
    printed = named("query", "samples", "-f", "json")
    assert sorted(row["sample"] for row in json.loads(printed.stdout)) == sorted(NAMES)
    assert not acting_characters(printed.stdout), "JSON escapes control characters itself"
    out = tmp_path / "samples.parquet"
    assert named("query", "samples", "-f", "parquet", "-o", out).exit_code == 0
    assert sorted(pd.read_parquet(out)["sample"]) == sorted(NAMES)


# --------------------------------------------------------------------------- the report


def test_figures_draw_names_literally():
    """``$…$`` and control characters in a name are drawn as written, whatever rcParams say."""
    import matplotlib as mpl
    from matplotlib.text import Text

    from txmdb.report import figures as fg

    with mpl.rc_context({"text.usetex": True}):  # no LaTeX here: usetex would fail on any text
        fig, axes = fg.new_figure(1, 1)
        ax = axes[0, 0]
        ax.plot([0, 1], [0, 1], label="rod $x^2$")
        ax.set_title("$\\undefined$")
        ax.set_xlabel(f"x of {EVIL}")
        fg._math_label(ax.set_ylabel(r"Ni L$_3$ (–)"))
        ax.legend()
    png = fg.png_bytes(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    texts = {t.get_text(): t for t in fig.findobj(Text) if t.get_text()}
    assert not texts["$\\undefined$"].get_parse_math() and not texts["rod $x^2$"].get_parse_math()
    assert f"x of {EVIL_SHOWN}" in texts
    assert texts[r"Ni L$_3$ (–)"].get_parse_math(), "the figures' own math labels stay math"
    assert not any(t.get_usetex() for t in texts.values())


@pytest.mark.parametrize("pair", [("rod $x^2$", "$\\undefined$"), ("a$b", "\\$"),
                                  ("<script>alert(1)</script>", "{{7*7}}"), (EVIL, '=HYPERLINK("http://x","y")')])
def test_report_with_hostile_names(cli, catalog, tmp_path, pair):
    from tests.test_report import assert_self_contained, parse, populate
    from txmdb.db import models as m

    populate(catalog, tmp_path / "data")
    with catalog.session() as s:
        for old, new in zip(["rod-NMC", "gravel-NMC"], pair):
            sample = s.query(m.Sample).filter_by(name=old).one()
            sample.name = new
            for row in s.query(m.XASMeasurement).filter_by(sample_id=sample.id):
                row.state = new  # states are labels in the spectra figures
    out = tmp_path / "report.html"
    result = cli("report", "compare", *pair, "-o", out, "--png-dir", tmp_path / "png")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}\n"
    text, page = parse(out)
    assert_self_contained(text, page)
    assert len(list((tmp_path / "png").glob("*.png"))) == len(page.images) >= 5
    assert not acting_characters(text), "no control or bidi character in the page"
    for name in pair:
        if name == EVIL:
            assert EVIL_SHOWN in text
        elif name.startswith("<script>"):
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>alert" not in text
        elif name.startswith("="):
            assert "=HYPERLINK(&#34;http://x&#34;,&#34;y&#34;)" in text or "=HYPERLINK(&quot;http://x&quot;" in text
        else:
            assert name in text, name  # {{7*7}} as written: data is never a template
