"""Every error is one line, exit status 1, on SQLite and PostgreSQL: and it leaves nothing behind.

Issue 9 §7: ``-o`` into a missing folder, onto a folder or onto ``/dev/full`` (every command
that has ``-o``); ``report compare -o FOLDER`` and ``--png-dir`` naming a file; input files
whose names are not UTF-8 (every ingest command); a malformed ``--scheduler``. Each case
asserts the exact line, that no traceback is printed, that the catalogue's rows are the
same as before and that no file or folder was left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DATA

CYCLER_CSV = DATA / "cycling" / "neware-csv" / "nw_regular_export_ife_example.csv"
XDI = DATA / "xas" / "ni_metal_rt.xdi"
PATTERN = DATA / "xas" / "ref_NiO.txt"
TOMOGRAM = DATA / "golden" / "rod96_2d.h5"
FULL = "/dev/full"


# --------------------------------------------------------------------------- helpers


def catalogue_rows(url: str) -> dict[str, list]:
    """Every row of every table, in a fixed order: equal before and after means nothing was written."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            return {t: [tuple(map(repr, row)) for row in conn.execute(sa.text(f'SELECT * FROM "{t}" ORDER BY 1'))]
                    for t in tables}
    finally:
        engine.dispose()


def files_under(root: Path) -> list[str]:
    """Every file and folder under ``root`` but the SQLite catalogue's own files."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith("catalogue.db"))


def assert_one_line_error(result, expected: str) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.stderr.splitlines() == [f"error: {expected}"], result.stderr
    assert result.stdout == "", result.stdout


def check_refused(cli, tmp_path: Path, args, expected: str) -> None:
    """Run ``args``: one error line ``expected``, and neither the catalogue nor the folder changed."""
    rows, files = catalogue_rows(cli.url), files_under(tmp_path)
    assert_one_line_error(cli(*args), expected)
    assert catalogue_rows(cli.url) == rows
    assert files_under(tmp_path) == files


@pytest.fixture
def lab(cli):
    """A catalogue with a sample, a cell and a TXM scan (id 1), so every -o command has rows to write."""
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    assert cli("cell", "add", "C", "--sample", "S", "--active-mass-mg", "10").exit_code == 0
    scan = cli("txm", "ingest", TOMOGRAM, "--sample", "S", "--voxel-nm", "30")
    assert scan.exit_code == 0, scan.output
    assert scan.stdout.splitlines()[-1] == "1"
    return cli


# Arguments the commands with -o need besides it; a new such command with required
# arguments fails test_every_output_command_is_covered until it is listed here.
REQUIRED = {
    "sample show": ["S"], "cell show": ["C"], "txm show": ["1"], "query retention": ["--cycle", "2"],
    "query sql": ["SELECT name FROM samples"], "report compare": ["S"], "txm export": ["1"],
    "watch": ["--check", str(DATA / "harvest" / "check-rules.toml")],
}


def output_commands() -> list[tuple[str, list[str]]]:
    """Every command with an -o option (walked from the CLI itself), with its required arguments."""
    import typer.main

    from txmdb.cli.main import app

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        elif any("-o" in p.opts for p in command.params):
            yield " ".join(path), command

    return [(name, REQUIRED.get(name, [])) for name, command in walk(typer.main.get_command(app), [])]


# Commands that write a table (-f/-o); the report and the HDF5 export have tests of their own.
TABLE_COMMANDS = [(name, args) for name, args in output_commands() if name not in ("report compare", "txm export")]


def test_every_output_command_is_covered():
    import typer.main

    from txmdb.cli.main import app

    names = [name for name, _ in output_commands()]
    assert {"query samples", "query sql", "sample list", "txm show", "report compare"} <= set(names)
    root = typer.main.get_command(app)
    for name in names:
        command = root
        for part in name.split():
            command = command.commands[part]
        required = [p.name for p in command.params if p.required]
        assert not required or name in REQUIRED, f"{name} needs {required}: add them to REQUIRED"


# --------------------------------------------------------------------------- -o of the table commands


def test_export_destinations_are_one_line(lab, tmp_path):
    """txm export writes HDF5 under a temporary name: devices, folders and missing folders are refused."""
    plain = tmp_path / "plain.txt"
    plain.write_text("keep me\n")
    cases = {
        tmp_path / "no-such-folder" / "x.h5": f"{tmp_path / 'no-such-folder' / 'x.h5'}: folder {tmp_path / 'no-such-folder'} does not exist",
        tmp_path: f"{tmp_path}: is a folder; give the name of a file to write",
        plain / "x.h5": f"{plain / 'x.h5'}: {plain} is not a folder",
        Path(FULL): f"{FULL}: is not a regular file; an HDF5 file is written under a temporary name and renamed",
    }
    for target, line in cases.items():
        check_refused(lab, tmp_path, ["txm", "export", "1", "-o", target], line)
    assert plain.read_text() == "keep me\n"


def test_output_into_a_missing_folder(lab, tmp_path):
    for name, args in TABLE_COMMANDS:
        target = tmp_path / "no-such-folder" / "out.csv"
        check_refused(lab, tmp_path, [*name.split(), *args, "-f", "csv", "-o", target],
                      f"{target}: folder {target.parent} does not exist")


def test_output_onto_a_folder(lab, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    for name, args in TABLE_COMMANDS:
        check_refused(lab, tmp_path, [*name.split(), *args, "-o", folder],
                      f"{folder}: is a folder; give the name of a file to write")


def test_output_inside_a_file(lab, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("keep me\n")
    for name, args in TABLE_COMMANDS:
        check_refused(lab, tmp_path, [*name.split(), *args, "-o", plain / "out.csv"],
                      f"{plain / 'out.csv'}: {plain} is not a folder")
    assert plain.read_text() == "keep me\n"


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "parquet"])
def test_output_onto_a_full_device(lab, tmp_path, fmt):
    before = sorted(os.listdir("/dev"))
    for name, args in TABLE_COMMANDS:
        check_refused(lab, tmp_path, [*name.split(), *args, "-f", fmt, "-o", FULL],
                      f"{FULL}: cannot write: No space left on device")
    assert sorted(os.listdir("/dev")) == before, "no temporary file beside the device"


def test_output_still_writes_files_devices_and_links(lab, tmp_path):
    """The checks refuse only what cannot work: a file, /dev/stdout and a link to a file are written."""
    out = tmp_path / "samples.csv"
    assert lab("query", "samples", "-f", "csv", "-o", out).exit_code == 0
    assert out.read_text().splitlines()[1].startswith("S,")
    assert lab("query", "samples", "-o", "/dev/null").exit_code == 0
    # /dev/stdout of a real process whose stdout is a pipe: written through, not renamed onto.
    device = subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--db", lab.url, "--store", str(lab.store),
                             "query", "samples", "-f", "csv", "-o", "/dev/stdout"], capture_output=True, text=True)
    assert device.returncode == 0 and device.stdout.splitlines()[1].startswith("S,"), device.stderr
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert lab("query", "cells", "-f", "csv", "-o", link).exit_code == 0
    assert link.is_symlink() and real.read_text().splitlines()[1].startswith("C,")
    assert not list(tmp_path.rglob("*.partial"))


# --------------------------------------------------------------------------- report compare


@pytest.fixture
def report_lab(cli, catalog, tmp_path):
    from tests.test_report import populate

    populate(catalog, tmp_path / "data")
    return cli


def test_report_onto_a_folder(report_lab, tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    check_refused(report_lab, tmp_path, ["report", "compare", "rod-NMC", "-o", folder],
                  f"{folder}: is a folder; give the name of a file to write")


def test_report_png_dir_is_a_file(report_lab, tmp_path):
    plain = tmp_path / "figures.png"
    plain.write_bytes(b"not a folder")
    out = tmp_path / "report.html"
    check_refused(report_lab, tmp_path, ["report", "compare", "rod-NMC", "-o", out, "--png-dir", plain],
                  f"{plain}: is not a folder; give a folder to write into")
    check_refused(report_lab, tmp_path, ["report", "compare", "rod-NMC", "-o", out, "--png-dir", plain / "sub"],
                  f"{plain / 'sub'}: {plain} is not a folder")
    check_refused(report_lab, tmp_path, ["report", "compare", "rod-NMC", "-o", plain / "report.html"],
                  f"{plain / 'report.html'}: {plain} is not a folder")


def test_report_onto_a_full_device_leaves_no_folder(report_lab, tmp_path):
    pngs = tmp_path / "new" / "figures"
    check_refused(report_lab, tmp_path, ["report", "compare", "rod-NMC", "-o", FULL, "--png-dir", pngs],
                  f"{FULL}: cannot write: No space left on device")
    assert not (tmp_path / "new").exists()


def test_report_failing_on_one_png_writes_nothing(report_lab, tmp_path):
    """The HTML is complete before the PNGs fail: it is still not written, nor any PNG."""
    pngs = tmp_path / "figures"
    (pngs / "cycling.png").mkdir(parents=True)  # a folder where a figure must go
    out = tmp_path / "out" / "report.html"
    check_refused(report_lab, tmp_path, ["report", "compare", "rod-NMC", "-o", out, "--png-dir", pngs],
                  f"{pngs / 'cycling.png'}: is a folder; give the name of a file to write")
    assert not out.parent.exists() and os.listdir(pngs) == ["cycling.png"]


def test_report_makes_the_folders_it_is_given(report_lab, tmp_path):
    out = tmp_path / "a" / "b" / "report.html"
    pngs = tmp_path / "c" / "figures"
    result = report_lab("report", "compare", "rod-NMC", "-o", out, "--png-dir", pngs)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(out.resolve())]
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert (pngs / "cycling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.rglob("*.partial"))


# --------------------------------------------------------------------------- file names that are not UTF-8


def _non_utf8_copy(source: Path, folder: Path, name: bytes) -> str:
    """A copy of ``source`` under a name with bytes that are not UTF-8, as Python shows it (surrogateescape)."""
    target = os.path.join(os.fsencode(folder), name)
    shutil.copyfile(source, target)
    return os.fsdecode(target)


NOT_UTF8 = ("the file's path is not valid UTF-8 (undecodable bytes shown as \\xNN); the catalogue keeps paths "
            "as text: rename the file or its folder to a UTF-8 name")

INGESTS = {
    "cycling": (CYCLER_CSV, b"caf\xe9.csv", ["cycling", "ingest", "{}", "--cell", "C"]),
    "xas": (XDI, b"\xff.xdi", ["xas", "ingest", "{}", "--sample", "S", "--edge", "Ni-K"]),
    "xrd": (PATTERN, b"caf\xe9-xrd.txt", ["xrd", "add", "--sample", "S", "--pattern", "{}", "--wavelength", "1.5406"]),
    "txm": (TOMOGRAM, b"\xff.h5", ["txm", "ingest", "{}", "--sample", "S", "--voxel-nm", "30"]),
}


@pytest.mark.parametrize("kind", list(INGESTS))
def test_non_utf8_file_name_is_refused_by_every_ingest(lab, tmp_path, kind):
    source, name, args = INGESTS[kind]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    path = _non_utf8_copy(source, inputs, name)
    shown = str(inputs) + "/" + name.decode("ascii", "backslashreplace")
    check_refused(lab, tmp_path, [path if a == "{}" else a for a in args], f"{shown}: {NOT_UTF8}")


def test_non_utf8_folder_name_is_refused(lab, tmp_path):
    folder = os.path.join(os.fsencode(tmp_path), b"lab-\xe9t\xe9")
    os.mkdir(folder)
    path = _non_utf8_copy(CYCLER_CSV, Path(os.fsdecode(folder)), b"ok.csv")
    check_refused(lab, tmp_path, ["cycling", "ingest", path, "--cell", "C"],
                  f"{tmp_path}/lab-\\xe9t\\xe9/ok.csv: {NOT_UTF8}")


def test_non_utf8_file_name_in_a_real_process(lab, tmp_path):
    """Through the real argv and stderr (not the test runner): the same one line."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    path = _non_utf8_copy(TOMOGRAM, inputs, b"\xff.h5")
    rows = catalogue_rows(lab.url)
    done = subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--db", lab.url, "--store", str(lab.store),
                           "txm", "ingest", os.fsencode(path), "--sample", "S"], capture_output=True)
    assert done.returncode == 1
    assert done.stdout == b""
    assert done.stderr.decode("ascii").splitlines() == [f"error: {inputs}/\\xff.h5: {NOT_UTF8}"]
    assert catalogue_rows(lab.url) == rows


# --------------------------------------------------------------------------- --scheduler


@pytest.mark.parametrize("address", ["garbage", "", " ", "tcp://", "tcp://host:notaport", "tcp://localhost:99999",
                                     "tcp://:8786", "http://example.org:80", "inproc://x", "tcp://[::1", "\x1b[2J"])
def test_malformed_scheduler_is_one_line_at_once(lab, tmp_path, address):
    t0 = time.perf_counter()
    check_refused(lab, tmp_path, ["txm", "analyze", "1", "--scheduler", address],
                  f"Dask scheduler address {address!r} is malformed: expected tcp://host:port, "
                  "e.g. tcp://10.0.0.5:8786")
    assert time.perf_counter() - t0 < 5, "refused before any connection attempt (which waits 10 s)"
