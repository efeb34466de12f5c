"""An attacker's pass in session 26: the holes found, each closed and pinned here.

- ``--encoding rot13`` (or ``base64``, ``zlib_codec``): Python looks these codecs up, so the
  name passed the check, and decoding then raised LookupError: a traceback from ``cycling
  ingest``, and a harvest rule with that encoding was accepted and failed on every file.
- ``watch --check`` printed a traceback for a watched file whose name is not UTF-8 (the
  watcher itself skips it with a warning), and approved a folder inside the store that the
  watcher then refused to watch.
- A sample whose name holds a line break had no page: the route's ``path`` parameter stops
  at one (a bare 404), and ``sample add`` printed the line break as it is (a forged line).
- A queued analysis took ``min_particle_voxels`` of 2**70 (the command line refuses it).
"""

from __future__ import annotations

import html
import os
import shutil
from urllib.parse import quote

import pytest
from markupsafe import escape

from tests.conftest import BACKENDS, DATA
from tests.test_hostile_cycling import P492, _refused, lab  # noqa: F401 - the fixture
from tests.web_server import served_catalogue
from txmdb.errors import InputError, TxmdbError
from txmdb.harvest.rules import load_rules
from txmdb.io.cycling import text_codec
from txmdb.options import analysis_request


@pytest.mark.parametrize("name, problem", [
    ("rot13", "'rot13' is not a text encoding"),
    ("base64", "'base64' is not a text encoding"),
    ("zlib_codec", "'zlib_codec' is not a text encoding"),
    ("klingon", "unknown text encoding 'klingon'"),
    ("utf\x00-8", "unknown text encoding 'utf\\x00-8'"),
    ("undefined", "'undefined' is not a text encoding"),      # a codec that refuses every byte
])
def test_a_codec_that_is_not_a_text_encoding_is_refused(name, problem):
    with pytest.raises(ValueError) as refused:
        text_codec(name)
    assert str(refused.value) == problem


def test_text_encodings_are_their_codecs():
    assert [text_codec(n) for n in ("cp1252", "Latin-1", "GB18030", "utf_8_sig")] == [
        "cp1252", "iso8859-1", "gb18030", "utf-8-sig"]


def test_cycling_ingest_refuses_a_codec_that_is_not_text(lab, tmp_path):  # noqa: F811 - the fixture
    path = tmp_path / "run.csv"
    shutil.copy(P492, path)
    _refused(lab, path, "'rot13' is not a text encoding", "--encoding", "rot13")
    _refused(lab, path, "'base64' is not a text encoding", "--encoding", "base64")
    # a text codec that fails without a byte position on Python < 3.13 (UnicodeError, not
    # UnicodeDecodeError); 3.13 gives the position: one line either way
    result = lab("cycling", "ingest", path, "--cell", "C4", "--encoding", "punycode")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: {path}: not punycode text (")
    assert result.stderr.endswith("); name the file's encoding with --encoding\n")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("encoding, problem", [
    ("rot13", "'rot13' is not a text encoding"),
    ("nosuch", "unknown text encoding 'nosuch'"),
])
def test_a_rules_file_with_a_codec_that_is_not_text_is_refused(tmp_path, encoding, problem):
    rules = tmp_path / "rules.toml"
    rules.write_text(f"[[rule]]\nfolder='a'\nglob='*.csv'\nkind='cycling'\nset={{cell='C', encoding='{encoding}'}}\n")
    with pytest.raises(InputError) as refused:
        load_rules(rules)
    assert str(refused.value) == f"{rules}: rule 1: set: encoding: {problem}"


def test_a_rules_file_keeps_a_text_encoding_as_written(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rule]]\nfolder='a'\nglob='*.csv'\nkind='cycling'\nset={cell='C', encoding='Latin-1'}\n")
    assert load_rules(rules).rules[0].values == {"cell": "C", "encoding": "Latin-1"}


XAS_RULE = """[[rule]]
folder = "{folder}"
glob = "*.txt"
kind = "xas"
pattern = '(?P<sample>[^_]+)__(?P<state>.+)\\.txt'
set = {{ edge = "Ni-K" }}
"""


def test_check_lists_a_file_whose_name_is_not_utf8_as_the_watcher_skips_it(cli, tmp_path):
    watched = tmp_path / "w"
    watched.mkdir()
    spectrum = next((DATA / "xas").rglob("*.txt"))
    shutil.copy(spectrum, watched / "rod__pristine.txt")
    shutil.copy(spectrum, os.fsdecode(os.fsencode(watched) + b"/rod__\xff.txt"))
    rules = tmp_path / "rules.toml"
    rules.write_text(XAS_RULE.format(folder="w"))
    result = cli("watch", "--check", rules, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert result.output.splitlines()[1:] == [
        "rule,kind,file,action,values,jobs",
        "1,xas,rod__pristine.txt,ingest,edge=Ni-K sample=rod state=pristine,",
        "1,xas,rod__\\xff.txt,ignore (the path is not valid UTF-8: rename the file to be harvested),,",
    ]


def test_check_skips_the_store_inside_a_watched_folder_as_the_watcher_does(cli, tmp_path):
    assert cli("init").exit_code == 0
    (cli.store / "xas").mkdir(parents=True, exist_ok=True)
    spectrum = next((DATA / "xas").rglob("*.txt"))
    shutil.copy(spectrum, cli.store / "xas" / "rod__stored.txt")
    shutil.copy(spectrum, tmp_path / "rod__pristine.txt")
    rules = tmp_path / "rules.toml"
    rules.write_text(XAS_RULE.format(folder="."))             # tmp_path: the store is inside it
    result = cli("watch", "--check", rules, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == [
        "rule,kind,file,action,values,jobs",
        # (the catalogue has no sample 'rod': what the watcher would record for it)
        "1,xas,rod__pristine.txt,fail: no sample named 'rod'; see 'txmdb sample list',edge=Ni-K sample=rod "
        "state=pristine,",
    ]


def test_check_prints_a_rules_file_name_on_its_line(cli, tmp_path):
    rules = tmp_path / "\nok: all good\n.toml"
    rules.write_text(XAS_RULE.format(folder="w"))
    result = cli("watch", "--check", rules)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith(f"{tmp_path}/\\nok: all good\\n.toml: 1 rule, settle 5 s; ")


@pytest.mark.parametrize("inside", ["store", "store/xas", "store/xas/..", "link"])
def test_check_refuses_a_folder_in_the_store_as_the_watcher_does(cli, tmp_path, inside):
    assert cli("init").exit_code == 0
    (cli.store / "xas").mkdir(parents=True, exist_ok=True)
    (tmp_path / "link").symlink_to(cli.store)
    rules = tmp_path / "rules.toml"
    rules.write_text(XAS_RULE.format(folder=inside))
    expected = (f"error: {os.path.normpath(tmp_path / inside)}: a watched folder inside the store {cli.store.resolve()} "
                f"(its own results would be harvested): watch the instruments' folders\n")
    for mode in ("--check", "--once"):
        result = cli("watch", mode, rules)
        assert (result.exit_code, result.output) == (1, expected), mode


def test_a_name_with_a_line_break_is_printed_on_one_line(cli):
    assert cli("init").exit_code == 0
    result = cli("sample", "add", "line1\nline2")
    assert (result.exit_code, result.output) == (0, "sample line1\\nline2 added (id 1)\n")
    result = cli("sample", "list", "--format", "json")
    assert '"line1\\nline2"' in result.output            # stored as given


@pytest.mark.parametrize("value", [2**31, 2**70, -1])
def test_a_queued_analysis_takes_the_command_lines_particle_minimum_only(value):
    with pytest.raises(TxmdbError) as refused:
        analysis_request({"min_particle_voxels": value})
    assert str(refused.value) == f"--min-particle-voxels must be between 0 and 2147483647, got {value}"
    assert analysis_request({"min_particle_voxels": 2**31 - 1})[0].min_particle_voxels == 2**31 - 1


NAMES = ["line1\nline2", 'evil"\r\nSet-Cookie: x=1']


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    with served_catalogue(request, tmp_path_factory, request.param) as served:
        for name in NAMES:
            done = served.cli("sample", "add", name)
            assert done.returncode == 0, done.stderr
        served.server = served.start("--public-read")
        yield served


@pytest.mark.parametrize("name", NAMES)
def test_a_sample_whose_name_holds_a_line_break_has_its_page(site, name):
    with site.client(site.server) as client:
        listing = client.get("/samples")
        link = f'href="/samples/{quote(name, safe="")}"'
        assert html.escape(link, quote=False) in listing.text or link in listing.text
        page = client.get(f"/samples/{quote(name, safe='')}")
        assert page.status_code == 200, page.text[:300]
        assert str(escape(name)) in page.text
        assert "Set-Cookie" not in page.headers


def test_an_unknown_sample_with_a_line_break_says_so(site):
    with site.client(site.server) as client:
        page = client.get("/samples/" + quote("no\nsuch", safe=""))
    assert page.status_code == 404
    assert "no sample named &#39;no\\nsuch&#39;; see the samples page" in page.text


def test_an_output_check_never_turns_a_catalogue_problem_into_a_traceback(tmp_path):
    """``-o`` onto an existing file asks the catalogue whether the file is an ingested one: a
    file that is no database (or an uninitialised one) gave SQLAlchemy's traceback there."""
    from typer.testing import CliRunner

    from txmdb.cli.main import app

    garbage = tmp_path / "notadb.db"
    garbage.write_text("garbage\n")
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    rules = tmp_path / "rules.toml"
    rules.write_text(XAS_RULE.format(folder="w"))
    base = ["--db", f"sqlite:///{garbage}", "--store", str(tmp_path / "st")]
    runner = CliRunner()
    listed = runner.invoke(app, [*base, "user", "list", "-o", str(out)])
    assert listed.exit_code == 1 and "Traceback" not in listed.output
    assert listed.output.startswith("error: ") and listed.output.count("\n") == 1
    checked = runner.invoke(app, [*base, "watch", "--check", str(rules), "--format", "csv", "-o", str(out)])
    assert checked.exit_code == 0, checked.output
    assert out.read_text().startswith("rule,kind,file,action,values,jobs")
    assert garbage.read_text() == "garbage\n"


def test_an_output_check_on_an_uninitialised_catalogue_leaves_the_error_to_the_command(cli, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    rules = tmp_path / "rules.toml"
    rules.write_text(XAS_RULE.format(folder="w"))
    listed = cli("user", "list", "-o", out)
    # the command's own message (SQLite: no such file; PostgreSQL: an empty database)
    assert listed.exit_code == 1 and listed.output.count("\n") == 1, listed.output
    assert listed.output.startswith("error: ") and "run 'txmdb init'" in listed.output
    assert out.read_text() == "old\n"
    checked = cli("watch", "--check", rules, "--format", "csv", "-o", out)
    assert checked.exit_code == 0, checked.output
    assert out.read_text().startswith("rule,kind,file,action,values,jobs")
