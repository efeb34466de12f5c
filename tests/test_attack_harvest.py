"""The watcher attacked as a hostile user of a shared folder would (issue 12), and XAS reference rules.

Every catalogue test runs ``txmdb watch`` as a real process against SQLite and PostgreSQL
(the ``lab`` fixture of tests/test_harvest.py: samples S1, S2, cells C1, C2) and reads the
catalogue back.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import DATA, PROJECT
from tests.test_harvest import ENV, P492, XDI, Watch, lab, prefix, rows, run_once, wait_for  # noqa: F401 - lab
from txmdb.errors import InputError
from txmdb.harvest.complete import incomplete_reason
from txmdb.harvest.rules import load_rules

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warning|error) [a-z_.]+( |$)")


def write_rules(tmp_path: Path, text: str) -> Path:
    rules = tmp_path / "rules.toml"
    rules.write_text("settle_seconds = 0\n" + text)
    return rules


def rule(folder: str, glob: str, kind: str, pattern: str | None = None, fixed: str | None = None) -> str:
    """One [[rule]] table (pattern in a TOML literal string, fixed values an inline table's body)."""
    return (f'[[rule]]\nfolder = "{folder}"\nglob = "{glob}"\nkind = "{kind}"\n'
            + (f"pattern = '{pattern}'\n" if pattern else "") + (f"set = {{ {fixed} }}\n" if fixed else ""))


def watch_once(lab, tmp_path, rules: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--db", lab.url, "--store", str(tmp_path / "store"),
                           "watch", str(rules), "--once", *options], env=ENV, cwd=PROJECT, capture_output=True,
                          text=True, timeout=120)


def sql(lab, statement: str) -> list[tuple]:
    with lab.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(statement))]


def cycling_runs(lab) -> list[tuple]:
    return sql(lab, "SELECT file_path, n_records FROM cycling_runs ORDER BY id")


# ------------------------------------------------------------------------ XAS reference rules
XAS_RULE = rule("w", "*", "xas", r"(?:ref_(?P<reference>[A-Za-z0-9]+)|(?P<sample>S\d+)_(?P<state>\w+))\.(?:xdi|txt)",
                'edge = "Ni-K"')


def test_xas_rule_records_named_references_and_sample_spectra(lab, tmp_path):
    """A pattern's reference group records a named reference spectrum (no sample), as
    'txmdb xas ingest --reference' does; its sample group a sample's spectrum."""
    (tmp_path / "w").mkdir()
    shutil.copy(DATA / "xas" / "ref_NiO.txt", tmp_path / "w" / "ref_NiO.txt")
    shutil.copy(XDI, tmp_path / "w" / "S1_pristine.xdi")
    rules = write_rules(tmp_path, XAS_RULE)
    events = run_once(lab, tmp_path, rules)
    assert sorted(e[0] for e in events if e[0].startswith("file.")) == ["file.ingested"] * 2 + ["file.seen"] * 2
    got = sql(lab, "SELECT x.reference_name, s.name, x.state, x.edge FROM xas_measurements x "
                   "LEFT JOIN samples s ON s.id = x.sample_id ORDER BY x.id")
    assert sorted(got, key=str) == sorted([("NiO", None, None, "Ni-K"), (None, "S1", "pristine", "Ni-K")], key=str)
    assert {name: row["status"] for name, row in rows(lab).items()} == {"ref_NiO.txt": "ingested",
                                                                        "S1_pristine.xdi": "ingested"}
    # the reference is usable as one by name, as the CLI's would be
    from txmdb.catalog.spectroscopy import load_references

    assert [r.name for r in load_references(lab, ["NiO"], edge="Ni-K")] == ["NiO"]


@pytest.mark.parametrize("text, problem", [
    ('set = { edge = "Ni-K", sample = "S1", reference = "NiO" }', "xas files take one of sample or reference, not both"),
    ('set = { edge = "Ni-K" }', "xas files need sample or reference: give one in set or as a named group of pattern"),
    ('pattern = \'(?P<reference>\\w+)\\.xdi\'\nset = { edge = "Ni-K", sample = "S1" }',
     "xas files take one of sample or reference, not both"),
])
def test_xas_rule_needs_exactly_one_of_sample_or_reference(tmp_path, text, problem):
    rules = write_rules(tmp_path, f'[[rule]]\nfolder = "w"\nglob = "*.xdi"\nkind = "xas"\n{text}\n')
    with pytest.raises(InputError) as exc:
        load_rules(rules)
    assert str(exc.value) == f"{rules}: rule 1: {problem}"


def test_xas_file_name_giving_neither_sample_nor_reference_fails(tmp_path):
    rules = load_rules(write_rules(tmp_path, '[[rule]]\nfolder = "w"\nglob = "*.xdi"\nkind = "xas"\n'
                                             'pattern = \'(?:(?P<sample>S\\d+)|(?P<reference>R\\w+))?_x\\.xdi\'\n'
                                             'set = { edge = "Ni-K" }\n'))
    rule = rules.rules[0]
    assert rule.values_for(tmp_path / "w" / "S1_x.xdi") == {"edge": "Ni-K", "sample": "S1"}
    assert rule.values_for(tmp_path / "w" / "RNiO_x.xdi") == {"edge": "Ni-K", "reference": "RNiO"}
    with pytest.raises(InputError) as exc:
        rule.values_for(tmp_path / "w" / "_x.xdi")
    assert str(exc.value).endswith("rule 1: the file name gives none of sample or reference; exactly one is needed")


# ------------------------------------------------------------------------ links, pipes, devices
CYC_RULE = rule("w", "*.csv", "cycling", r"(?P<cell>C\d+)_(?s:.*)\.csv")


def test_links_pipes_and_folders_named_like_files_are_never_read(lab, tmp_path):
    """Links out of the folder (/etc/passwd, another user's data), link loops, a FIFO, a folder
    named like a data file, a link to a folder: nothing read, nothing blocks; links recorded as ignored."""
    w, other = tmp_path / "w", tmp_path / "other"
    w.mkdir()
    other.mkdir()
    shutil.copy(P492, other / "C1_secret.csv")
    (w / "C1_passwd.csv").symlink_to("/etc/passwd")
    (w / "C1_steal.csv").symlink_to(other / "C1_secret.csv")
    (w / "C1_loop.csv").symlink_to(w / "C1_loop2.csv")
    (w / "C1_loop2.csv").symlink_to(w / "C1_loop.csv")
    os.mkfifo(w / "C1_fifo.csv")
    (w / "C1_folder.csv").mkdir()
    (w / "linked").symlink_to(other)
    os.link(other / "C1_secret.csv", w / "C1_hard.csv")  # a hard link is the file itself: read as any file
    rules = write_rules(tmp_path, CYC_RULE)
    events = run_once(lab, tmp_path, rules)
    recorded = {name: (row["status"], row["error"]) for name, row in rows(lab).items()}
    link = ("ignored", "a symbolic link: links are not followed (harvest the file itself)")
    assert recorded == {"C1_passwd.csv": link, "C1_steal.csv": link, "C1_hard.csv": ("ingested", None)}
    assert cycling_runs(lab) == [(str(w / "C1_hard.csv"), 2021)]
    assert [e[0] for e in events].count("file.ingested") == 1

    # the same arriving while the watcher runs on events; then a real file is still harvested
    watch = Watch(lab.url, tmp_path / "store", rules, tmp_path / "watch.log", "--log-json")
    watch.start()
    try:
        wait_for(lambda: any('"watch.start"' in line for line in watch.lines()), 60, "the watcher's start", watch)
        os.mkfifo(w / "C2_fifo2.csv")
        (w / "linked2").symlink_to(other)  # a folder link made while watched: not walked
        (w / "C2_late.csv").symlink_to(other / "C1_secret.csv")
        time.sleep(1.5)
        prefix(P492, 600, w / "C2_real.csv")
        wait_for(lambda: rows(lab).get("C2_real.csv", {}).get("status") == "ingested", 60, "C2_real.csv", watch)
        assert watch.terminate() == 0
    finally:
        if watch.proc.poll() is None:
            watch.kill()
    recorded = rows(lab)
    assert recorded["C2_late.csv"]["status"] == "ignored" and "C2_fifo2.csv" not in recorded
    assert not any("linked" in name for name in recorded) and not any("secret" in p for p, _ in cycling_runs(lab))
    assert [n for _, n in cycling_runs(lab)] == [2021, 599]
    # --log-json: one JSON object per line, and never the catalogue's password
    password = sa.engine.make_url(lab.url).password
    for line in watch.lines():
        json.loads(line)
        assert not password or password not in line


def test_a_pipe_put_in_a_files_place_does_not_block_the_completeness_check(tmp_path):
    fifo = tmp_path / "C1_x.csv"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert incomplete_reason(fifo) == "not a regular file"
    link = tmp_path / "C1_link.csv"
    link.symlink_to(P492)
    assert incomplete_reason(link).startswith("cannot read: ")  # O_NOFOLLOW: the link is not opened
    assert time.monotonic() - started < 5


def test_a_file_swapped_under_the_reader_is_told_apart(tmp_path):
    """The ingest process's identity of a file: a replaced or rewritten file (its mtime set back)
    differs; a link, or a folder link out of the watched folder, is refused."""
    from txmdb.harvest.ingester import _identity

    w = tmp_path / "w"
    w.mkdir()
    target = w / "C1_a.csv"
    target.write_text("a,b\n1,2\n")
    first = _identity(target, str(w))
    stat = target.stat()
    time.sleep(0.02)
    replacement = w / "new.csv"
    replacement.write_text("a,b\n3,4\n")
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, target)
    assert _identity(target, str(w)) != first
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "C1_b.csv").write_text("a,b\n1,2\n")
    (w / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="its folder is a link out of the watched folder: not read"):
        _identity(w / "sub" / "C1_b.csv", str(w))
    (w / "C1_l.csv").symlink_to(target)
    with pytest.raises(InputError, match=r"not a regular file \(links, pipes and devices are not read\)"):
        _identity(w / "C1_l.csv", str(w))


# ------------------------------------------------------------------------ hostile names and values
def test_hostile_file_names_are_stored_as_data_one_log_line_each(lab, tmp_path):
    """Names with a line break, ANSI escapes, HTML, SQL; a name that is not UTF-8 (which the
    catalogue cannot store: said once, and the watcher goes on); a 255-byte name."""
    (tmp_path / "w").mkdir()
    w = tmp_path / "w"
    names = ["C1_a\nfake 2026-01-01T00:00:00.000Z info file.ingested.csv", "C1_\x1b[31mred\x1b[0m.csv",
             "C1_<img src=x onerror=alert(1)>.csv", "C1_'; DROP TABLE samples; --.csv", "C1_" + "x" * 248 + ".csv"]
    for i, name in enumerate(names):
        prefix(P492, 100 + 50 * i, w / name)
    os.close(os.open(os.fsencode(w) + b"/C1_bad\xff.csv", os.O_CREAT | os.O_WRONLY))
    rules = write_rules(tmp_path, CYC_RULE + rule("x", "*.xdi", "xas", r"(?P<sample>S\d+)_(?P<state>.+)\.xdi",
                                                  'edge = "Ni-K"'))
    (tmp_path / "x").mkdir()
    state = "<img src=x onerror=alert(1)>'; DROP TABLE samples; --"
    shutil.copy(XDI, tmp_path / "x" / f"S1_{state}.xdi")
    for options in ((), ("--log-json",)):
        done = watch_once(lab, tmp_path, rules, *options)
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        password = sa.engine.make_url(lab.url).password
        assert not password or password not in done.stderr
        if options:
            events = [json.loads(line)["event"] for line in lines]
        else:
            assert all(LINE.match(line) for line in lines), lines
            events = [line.split(" ")[2] for line in lines]
        assert events.count("file.unstorable_name") == 1
        assert events.count("file.ingested") == (6 if not options else 0)
    assert {name for name in rows(lab)} == {*names, f"S1_{state}.xdi"}
    assert all(row["status"] == "ingested" for row in rows(lab).values())
    assert sorted(n for _, n in cycling_runs(lab)) == [99, 149, 199, 249, 299]
    assert sql(lab, "SELECT state FROM xas_measurements") == [(state,)]
    assert sql(lab, "SELECT count(*) FROM samples") == [(2,)]  # still there, untouched


# ------------------------------------------------------------------------ rules: ReDoS, folders
@pytest.mark.parametrize("pattern", ["(?P<cell>C\\d+)(a+)+$", "(?:\\w+_)+(?P<cell>C\\d+)\\.csv", "(?P<cell>(C*)*)"])
def test_catastrophic_backtracking_patterns_are_refused(tmp_path, pattern):
    rules = write_rules(tmp_path, f"[[rule]]\nfolder = 'w'\nglob = '*'\nkind = 'cycling'\npattern = '{pattern}'\n")
    started = time.monotonic()
    with pytest.raises(InputError) as exc:
        load_rules(rules)
    assert str(exc.value) == (f"{rules}: rule 1: pattern {pattern!r} repeats a repetition (like (a+)+): some file "
                              f"names would take it years to match; repeat a character class, or make the inner "
                              f"repetition possessive (a++) or atomic ((?>a+))")
    assert time.monotonic() - started < 2


def test_possessive_and_plain_patterns_stay_allowed_and_fast(tmp_path):
    rules = write_rules(tmp_path, "[[rule]]\nfolder = 'w'\nglob = '*'\nkind = 'cycling'\n"
                                  "pattern = '(?:[a-z]++_)+(?P<cell>C\\d+)\\.csv'\n")
    rule = load_rules(rules).rules[0]
    started = time.monotonic()
    assert rule.values_for(tmp_path / "w" / ("a_" * 100 + "C1.csv")) == {"cell": "C1"}
    assert rule.values_for(tmp_path / "w" / ("a_" * 120 + "!")) is None
    assert time.monotonic() - started < 1


def test_whole_file_system_and_store_folders_are_refused(lab, tmp_path):
    rules = write_rules(tmp_path, "[[rule]]\nfolder = '/'\nglob = '*.csv'\nkind = 'cycling'\nset = { cell = 'C1' }\n")
    with pytest.raises(InputError, match="rule 1: folder '/' is the whole file system: name the instruments' folder"):
        load_rules(rules)
    store = tmp_path / "store"
    (store / "inbox").mkdir(parents=True)
    rules = write_rules(tmp_path, "[[rule]]\nfolder = 'store/inbox'\nglob = '*.csv'\nkind = 'cycling'\n"
                                  "set = { cell = 'C1' }\n")
    done = watch_once(lab, tmp_path, rules)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (f"error: {store / 'inbox'}: a watched folder inside the store "
                                            f"{os.path.realpath(store)} (its own results would be harvested): "
                                            f"watch the instruments' folders")
    assert rows(lab) == {}


def test_the_store_under_a_watched_folder_is_not_harvested(lab, tmp_path):
    """A rule watching the folder that holds the store: the store's files (here one put there as
    bait) are never read, the instruments' are."""
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    prefix(P492, 300, store / "C1_bait.csv")
    prefix(P492, 400, tmp_path / "C1_real.csv")
    rules = write_rules(tmp_path, "[[rule]]\nfolder = '.'\nglob = '*.csv'\nkind = 'cycling'\n"
                                  "pattern = '(?P<cell>C\\d+)_\\w+\\.csv'\n")
    run_once(lab, tmp_path, rules)
    assert list(rows(lab)) == ["C1_real.csv"]
    assert [n for _, n in cycling_runs(lab)] == [399]


# ------------------------------------------------------------------------ size bombs, hostile HDF5
def test_hostile_hdf5_and_zip_bombs_fail_through_the_watcher(lab, tmp_path, bombs):
    """The readers' own checks apply to harvested files: external links, external storage
    (/etc/passwd) and virtual data sets in HDF5, a 3 GiB .ndax ZIP bomb."""
    from tests.test_hostile_hdf5 import _build

    fxi, cyc = tmp_path / "fxi", tmp_path / "cyc"
    expected = {}
    for case in ("external link", "external storage /etc/passwd", "virtual, other file"):
        path, _, line = _build(case, fxi)
        expected[path.name] = line.removeprefix("error: ")
    cyc.mkdir()
    shutil.copy(bombs["bomb"], cyc / "C1_bomb.ndax")
    rules = write_rules(tmp_path, rule("fxi", "*.h5", "txm", r"(?P<state>elink|passwd|vds)\.h5", 'sample = "S1"')
                        + rule("cyc", "*.ndax", "cycling", r"(?P<cell>C\d+)_\w+\.ndax"))
    run_once(lab, tmp_path, rules)
    recorded = rows(lab)
    for name, error in expected.items():
        assert (recorded[name]["status"], recorded[name]["error"]) == ("failed", error)
    assert recorded["C1_bomb.ndax"]["status"] == "failed"
    assert "refused as a likely ZIP bomb" in recorded["C1_bomb.ndax"]["error"]
    assert sql(lab, "SELECT count(*) FROM txm_scans") == [(0,)] and cycling_runs(lab) == []


# ------------------------------------------------------------------------ operations
@pytest.mark.parametrize("poll", ["0", "-1", "nan", "inf"])
def test_poll_outside_its_range_is_refused(lab, tmp_path, poll):
    (tmp_path / "w").mkdir()
    rules = write_rules(tmp_path, CYC_RULE)
    done = subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--db", lab.url, "--store", str(tmp_path / "store"),
                           "watch", str(rules), "--poll", poll], env=ENV, cwd=PROJECT, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, f"error: --poll {float(poll):g}: expected seconds from 0.1 to 86400\n")
    assert rows(lab) == {}


def test_two_watchers_on_the_same_rules_ingest_each_file_once(lab, tmp_path):
    """Two watchers started together on the same rules and catalogue: both finish cleanly, and
    every file is one record and one harvested row."""
    w = tmp_path / "w"
    w.mkdir()
    for i in range(8):
        prefix(P492, 200 + 37 * i, w / f"C{1 + i % 2}_{i}.csv")
    rules = write_rules(tmp_path, CYC_RULE)
    command = [sys.executable, "-m", "txmdb.cli.main", "--db", lab.url, "--store", str(tmp_path / "store"),
               "watch", str(rules), "--once"]
    procs = [subprocess.Popen(command, env=ENV, cwd=PROJECT, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert sorted(n for _, n in cycling_runs(lab)) == [199 + 37 * i for i in range(8)]
    recorded = rows(lab)
    assert sorted(recorded) == sorted(f"C{1 + i % 2}_{i}.csv" for i in range(8))
    assert all(row["status"] == "ingested" and row["record_kind"] == "cycling_runs" for row in recorded.values())
    assert sql(lab, "SELECT count(*) FROM harvested_files") == [(8,)]


from tests.test_hostile_cycling import bombs  # noqa: E402,F401 - a fixture


def test_check_shows_links_and_references_as_the_watcher_takes_them(tmp_path):
    from typer.testing import CliRunner

    from txmdb.cli.main import app

    (tmp_path / "w").mkdir()
    shutil.copy(XDI, tmp_path / "w" / "S1_pristine.xdi")
    (tmp_path / "w" / "ref_NiO.txt").symlink_to(DATA / "xas" / "ref_NiO.txt")
    (tmp_path / "w" / "ref_LiNiO2.txt").write_text("8300 1\n")
    rules = write_rules(tmp_path, XAS_RULE)
    result = CliRunner().invoke(app, ["--db", f"sqlite:///{tmp_path / 'none.db'}", "watch", "--check", str(rules),
                                      "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{rules}: 1 rule, settle 0 s; no catalogue yet: samples and cells not checked",
        "rule,kind,file,action,values,jobs",
        "1,xas,S1_pristine.xdi,ingest,edge=Ni-K sample=S1 state=pristine,",
        "1,xas,ref_LiNiO2.txt,ingest,edge=Ni-K reference=LiNiO2,",
        "1,xas,ref_NiO.txt,ignore (a symbolic link: links are not followed),,",
    ]


def test_check_against_a_catalogue_takes_a_name_that_is_not_utf8(cli, tmp_path):
    """(session 29 attack) With a catalogue, a name that is not UTF-8 is still the watcher's
    'ignore' line, not a traceback from the lookup."""
    (tmp_path / "w").mkdir()
    shutil.copy(XDI, os.path.join(os.fsencode(tmp_path / "w"), b"S\xff1_pristine.xdi"))
    rules = write_rules(tmp_path, XAS_RULE)
    assert cli("init").exit_code == 0
    result = cli("watch", "--check", str(rules), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == [
        "rule,kind,file,action,values,jobs",
        "1,xas,S\\xff1_pristine.xdi,ignore (the path is not valid UTF-8: rename the file to be harvested),,"]


def test_check_reads_a_sqlite_file_that_is_no_catalogue_without_writing_it(tmp_path):
    """(session 29 attack) A --db file that is not a catalogue (empty, or another program's
    SQLite database) is read, never written: opening it as one would set its journal mode."""
    import sqlite3

    from typer.testing import CliRunner

    from txmdb.cli.main import app

    rules = write_rules(tmp_path, XAS_RULE)
    empty, other = tmp_path / "empty.db", tmp_path / "other.db"
    empty.write_bytes(b"")
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE t (x)")
    connection.close()
    for path in (empty, other):
        before = path.read_bytes()
        result = CliRunner().invoke(app, ["--db", f"sqlite:///{path}", "watch", "--check", str(rules)])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[0].endswith(f"; catalogue not opened ({path} is not a txmdb catalogue): "
                                                      "samples and cells not checked")
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(path.name)) == [path.name]


def test_rules_with_duplicate_keys_are_refused(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nfolder = "w"\nfolder = "/etc"\nglob = "*"\nkind = "xas"\n')
    with pytest.raises(InputError, match=r"not valid TOML: Cannot overwrite a value \(at line 3, column 16\)"):
        load_rules(rules)


def test_two_watchers_seeing_the_same_new_files_at_once_both_go_on(lab, tmp_path):
    """Both watchers get each new file's event at the same moment and record it together (path is
    unique): the loser takes the winner's row instead of stopping; each file one record."""
    w = tmp_path / "w"
    w.mkdir()
    rules = write_rules(tmp_path, CYC_RULE)
    watches = [Watch(lab.url, tmp_path / "store", rules, tmp_path / f"watch{i}.log") for i in range(2)]
    try:
        for watch in watches:
            watch.start()
        for watch in watches:
            wait_for(watch.started, 60, "the watcher's start", watch)
        time.sleep(0.5)
        for i in range(12):
            # written elsewhere, then moved in whole: both see a complete file at once
            prefix(P492, 200 + 13 * i, tmp_path / "tmp.csv")
            os.replace(tmp_path / "tmp.csv", w / f"C{1 + i % 2}_{i}.csv")
        wait_for(lambda: sum(row["status"] == "ingested" for row in rows(lab).values()) == 12, 90,
                 "12 ingested files", watches[0])
        assert [watch.terminate() for watch in watches] == [0, 0], [watch.lines()[-5:] for watch in watches]
    finally:
        for watch in watches:
            if watch.proc.poll() is None:
                watch.kill()
    assert sorted(n for _, n in cycling_runs(lab)) == [199 + 13 * i for i in range(12)]
    assert sql(lab, "SELECT count(*) FROM harvested_files") == [(12,)]
    assert not any("Traceback" in line for watch in watches for line in watch.lines())
