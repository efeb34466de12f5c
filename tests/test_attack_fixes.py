"""The holes an attacker's pass found after issue 9 (notes: attack9 F10, F11, F13, F14), closed.

- F10: every non-number cell of a table is escaped (a ``meta`` dict's keys and values too), and
  CSV printed to a terminal escapes control characters; a pipe or a file stays faithful.
- F11: out-of-range whole numbers in filters, query parameters and scan ids are a one-line usage
  error (exit 2) or "no such scan" (exit 1), never a traceback; ``--bin " , ,"`` is no filter at all.
- F13: a ``sqlite:`` URL with query parameters is refused in one line and creates no file.
- F14: a password inside ``?dbname=``/``?options=`` is masked, in the URL and the server's
  message; a FIFO or a device given as input is "not a regular file"; ``-o`` into a FIFO that
  nobody reads fails at once; a symbolic link planted in a sticky shared folder is not
  followed; HDF5 stacks of array or enum elements are refused.

Database-backed tests run on SQLite and PostgreSQL (the ``cli``/``db_url`` fixtures).
"""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
import tty
from pathlib import Path
from urllib.parse import quote

import h5py
import numpy as np
import pytest

from tests.test_hostile import TABLES, _listing, lab  # noqa: F401 - lab is a fixture
from tests.test_hostile_hdf5 import _counts
from tests.test_output_safety import EVIL, EVIL_SHOWN, acting_characters
from txmdb.vocabulary import MAX_BIN_FACTOR, MIN_BIN_FACTOR

BIG = "99999999999999999999999"
MAX_INT = 2**31 - 1


def txmdb(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "txmdb.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env, **kwargs)


def on_terminal(*args: str) -> str:
    """What ``txmdb ARGS`` prints when its standard output is a terminal (a pseudo-terminal here)."""
    master, slave = pty.openpty()
    tty.setraw(slave)  # no "\n" -> "\r\n" from the line discipline: the bytes as txmdb wrote them
    with subprocess.Popen([sys.executable, "-m", "txmdb.cli.main", *map(str, args)], stdout=slave,
                          stderr=subprocess.PIPE) as process:
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert process.wait(timeout=120) == 0, process.stderr.read()
    os.close(master)
    return out.decode("utf-8")


# --------------------------------------------------------------------------- F10: what reaches a terminal


@pytest.fixture
def hostile_meta(cli):
    """A catalogue whose sample x has a ``meta`` key and value that would act on a terminal, and a sample EVIL."""
    assert cli("init").exit_code == 0
    added = cli("sample", "add", "x", "--meta", "k\x1b[2J=v\u202e\x07")
    assert added.exit_code == 0, added.output
    assert cli("sample", "add", EVIL).exit_code == 0
    return cli


@pytest.mark.parametrize("command", [["sample", "list"], ["query", "samples"], ["sample", "show", "x"]])
def test_table_escapes_the_keys_and_values_of_meta(hostile_meta, command):
    result = hostile_meta(*command)
    assert result.exit_code == 0, result.output
    assert not acting_characters(result.stdout), sorted(acting_characters(result.stdout))
    # meta is shown as JSON text (session 27): JSON escapes the controls, txmdb the bidi override
    assert "k\\u001b[2J" in result.stdout and "v\\u202e\\u0007" in result.stdout


def test_csv_on_a_terminal_is_escaped_and_faithful_in_a_pipe(hostile_meta):
    base = ("--db", hostile_meta.url, "--store", hostile_meta.store)
    shown = on_terminal(*base, "sample", "list", "-f", "csv")
    assert not acting_characters(shown.replace("\r\n", "\n")), sorted(acting_characters(shown))
    assert EVIL_SHOWN in shown and "k\\u001b[2J" in shown
    piped = subprocess.run([sys.executable, "-m", "txmdb.cli.main", *map(str, base), "sample", "list", "-f", "csv"],
                           capture_output=True, timeout=120)  # bytes: text mode would turn its "\r" into "\n"
    assert piped.returncode == 0 and EVIL in piped.stdout.decode(), "a pipe gets the stored text as it is"
    as_json = on_terminal(*base, "sample", "list", "-f", "json")
    assert not acting_characters(as_json)
    assert sorted(row["sample"] for row in json.loads(as_json)) == sorted([EVIL, "x"])


def test_txm_show_and_usage_errors_escape_names(lab, tmp_path):
    path = tmp_path / f"scan{EVIL}.h5"
    with h5py.File(path, "w") as f:
        f["/exchange/data"] = np.random.default_rng(0).uniform(0.1, 2.0, (4, 3, 4, 5)).astype("f4")
        f["/exchange/energy"] = np.linspace(8300.0, 8400.0, 4)
    assert lab("txm", "ingest", path, "--sample", "S").exit_code == 0
    shown = lab("txm", "show", "1")
    assert shown.exit_code == 0, shown.output
    assert not acting_characters(shown.stdout) and f"scan{EVIL_SHOWN}.h5" in shown.stdout
    usage = lab("query", "samples", f"--x{EVIL}")
    assert usage.exit_code == 2
    assert not acting_characters(usage.stderr.rstrip("\n")) and len(usage.stderr.splitlines()) == 1


# --------------------------------------------------------------------------- F11: numbers out of range


def _range_error(option: str, value: str, query: str, low: int = 0, high: int = MAX_INT) -> str:
    return (f"error: Invalid value for '{option}': {value!r} is not a whole number from {low} to {high} "
            f"(see 'txmdb query {query} --help')")


@pytest.mark.parametrize("args, line", [
    (["query", "theta", "--bin", BIG], _range_error("--bin", BIG, "theta", MIN_BIN_FACTOR, MAX_BIN_FACTOR)),
    (["query", "theta", "--bin", f"2,{MAX_INT + 1}"],
     _range_error("--bin", str(MAX_INT + 1), "theta", MIN_BIN_FACTOR, MAX_BIN_FACTOR)),
    # binning factors are 1 to 16: 0 or 17 matched nothing and printed an empty table
    (["query", "theta", "--bin", "0"], _range_error("--bin", "0", "theta", MIN_BIN_FACTOR, MAX_BIN_FACTOR)),
    (["query", "gradient", "--bin", "1,17"], _range_error("--bin", "17", "gradient", MIN_BIN_FACTOR, MAX_BIN_FACTOR)),
    (["query", "scans", "--scan", BIG], _range_error("--scan", BIG, "scans")),
    (["query", "scans", "--scan", "-1"], _range_error("--scan", "-1", "scans")),
    (["query", "particles", "--particle", BIG], _range_error("--particle", BIG, "particles")),
    (["query", "cycles", "--cycle", BIG], _range_error("--cycle", BIG, "cycles")),
    (["query", "theta", "--bin", " , ,"],
     "error: Invalid value for '--bin': ' , ,' holds no number; give N or N,N,… (see 'txmdb query theta --help')"),
    (["query", "retention", "--cycle", "99999999999999999999", "--reference", "-1"],
     _range_error("--cycle", "99999999999999999999", "retention")),
    (["query", "retention", "--cycle", "5", "--reference", "-1"],
     _range_error("--reference", "-1", "retention", 1)),
    # reference cycle 0 was taken for "the run's own"
    (["query", "summary", "--reference", "0"], _range_error("--reference", "0", "summary", 1)),
])
def test_out_of_range_filters_are_usage_errors(lab, args, line):
    result = lab(*args)
    assert (result.exit_code, result.stderr.splitlines(), result.stdout) == (2, [line], ""), result.output


@pytest.mark.parametrize("args", [["query", "theta", "--bin", f"{MIN_BIN_FACTOR},{MAX_BIN_FACTOR}"],
                                  ["query", "scans", "--scan", "0"],
                                  ["query", "retention", "--cycle", str(MAX_INT), "--reference", "1"]])
def test_filters_at_the_ends_of_the_range_work(lab, args):
    result = lab(*args)
    assert (result.exit_code, result.stdout) == (0, "(no rows)\n"), result.output


@pytest.mark.parametrize("command", [["txm", "show"], ["txm", "analyze"]])
@pytest.mark.parametrize("scan_id", [BIG, str(MAX_INT + 1)])
def test_scan_id_out_of_range_is_refused_in_one_line(lab, command, scan_id):
    """An id the catalogue cannot hold is read as the filters read it (it was 'no such scan')."""
    result = lab(*command, scan_id)
    assert (result.exit_code, result.stdout) == (2, ""), result.output
    assert result.stderr == (f"error: Invalid value for 'SCAN_ID': {scan_id!r} is not a whole number from 0 to "
                             f"{MAX_INT} (see 'txmdb {' '.join(command)} --help')\n")


@pytest.mark.parametrize("command", [["txm", "show"], ["txm", "analyze"]])
def test_scan_id_at_the_end_of_the_range_is_no_such_scan(lab, command):
    result = lab(*command, str(MAX_INT))
    assert (result.exit_code, result.stderr) == (1, f"error: no TXM scan with id {MAX_INT}; see 'txmdb query scans'\n")


# --------------------------------------------------------------------------- F13: sqlite URLs with a query


@pytest.mark.parametrize("query", ["?mode=rw&uri=true", "?mode=rwc", "?foo=1"])
@pytest.mark.parametrize("command", [["query", "sql", "SELECT count(*) FROM samples"], ["sample", "list"]])
def test_sqlite_url_with_query_parameters_is_refused(tmp_path, query, command):
    folder = tmp_path / "lab"
    folder.mkdir()
    assert txmdb("--db", folder / "s1.db", "init").returncode == 0
    before = (folder / "s1.db").read_bytes(), sorted(p.name for p in folder.iterdir())
    result = txmdb("--db", f"sqlite:///{folder / 's1.db'}{query}", *command)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("error: sqlite URL with query parameters: txmdb takes none (it opens the file itself); "
                             "give sqlite:///FILE, or the plain path when the file's name holds a '?'\n")
    assert ((folder / "s1.db").read_bytes(), sorted(p.name for p in folder.iterdir())) == before


# --------------------------------------------------------------------------- F14: secrets inside other values

SECRET = "Zq8-secret-Wv3"


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u@h/db?dbname=x%20password%3D{pw}", "postgresql+psycopg://u@h/db?dbname=x+password%3D***"),
    ("postgresql://u@h/db?dbname=x%20sslpassword%3D%27a%20{pw}%27%20port%3D1",
     "postgresql+psycopg://u@h/db?dbname=x+sslpassword%3D***+port%3D1"),
    ("postgresql://u@h/db?options=-c%20password%3D{pw}", "postgresql+psycopg://u@h/db?options=-c+password%3D***"),
    ("postgresql://u@h/db?dbname=postgresql%3A%2F%2Fu%3A{pw}%40h%2Fdb",
     "postgresql+psycopg://u@h/db?dbname=postgresql%3A%2F%2Fu%3A***%40h%2Fdb"),
])
def test_safe_url_masks_a_password_inside_another_value(url, shown):
    from txmdb.db.engine import resolve_url, safe_url

    assert safe_url(resolve_url(url.format(pw=SECRET))) == shown


@pytest.fixture
def admin_url(pg_server) -> str:
    """A superuser's URL on the test server, database postgres (the tests add their own ?dbname=)."""
    from sqlalchemy.engine import make_url

    url = make_url(pg_server if isinstance(pg_server, str) else pg_server.url)
    return url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)


@pytest.mark.parametrize("query, quoted", [
    # libpq takes the whole value as the database's name; the server's error repeats it
    ("?dbname=" + quote(f"nodb_txmdb_test password={SECRET}", safe=""), 'password=***" does not exist'),
    ("?dbname=" + quote(f"postgresql://u:{SECRET}@h/db", safe=""), 'database "postgresql://u:***@h/db" does not exist'),
    ("?options=" + quote(f"-c password={SECRET}", safe=""), 'unrecognized configuration parameter "password"'),
])
def test_password_inside_dbname_or_options_is_masked_in_error_lines(admin_url, query, quoted):
    result = txmdb("--db", admin_url + query, "sample", "list")
    assert (result.returncode, result.stdout) == (1, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to postgresql+psycopg://"), result.stderr
    assert quoted in lines[0]
    assert SECRET not in result.stderr and quote(SECRET) not in result.stderr


def test_mask_secrets_in_driver_messages():
    from txmdb.db.engine import mask_secrets

    assert mask_secrets(f'FATAL:  database "x password={SECRET}" does not exist') == \
        'FATAL:  database "x password=***" does not exist'
    assert mask_secrets(f"x sslpassword = 'a \\' {SECRET}' port=5") == "x sslpassword = *** port=5"
    assert mask_secrets("password authentication failed for user \"u\"") == "password authentication failed for user \"u\""


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("command", [["cycling", "ingest", "{file}", "--cell", "C"],
                                     ["txm", "ingest", "{file}", "--sample", "S"],
                                     ["xas", "ingest", "{file}", "--sample", "S", "--edge", "Ni-K"]])
def test_ingesting_a_fifo_or_a_device_is_not_a_regular_file(lab, fifo, kind, command):
    file = str(fifo) if kind == "fifo" else kind
    before = (_counts(lab), _listing(Path(lab.store)))
    result = lab(*(part.format(file=file) for part in command))
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"error: {file}: not a regular file\n")
    assert (_counts(lab), _listing(Path(lab.store))) == before
    missing = lab(*(part.format(file=f"{fifo}.missing") for part in command))
    assert missing.stderr == f"error: {fifo}.missing: no such file\n"


def test_output_into_a_fifo_nobody_reads_fails_at_once(lab, fifo):
    result = subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--db", lab.url, "--store", lab.store,
                             "sample", "list", "-f", "csv", "-o", fifo], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"error: {fifo}: is a pipe that no process reads; start its reader first\n"
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # with a reader, the table goes through the pipe
    try:
        written = lab("sample", "list", "-f", "csv", "-o", fifo)
        assert written.exit_code == 0, written.output
        assert os.read(reader, 65536).decode().splitlines()[1].startswith("S,")
    finally:
        os.close(reader)


@pytest.fixture
def shared_folder(tmp_path) -> Path:
    """A world-writable sticky folder (as /tmp is) that this user does not own."""
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chown(folder, 65534, 65534)  # nobody's; the tests run as root (CI does)
    folder.chmod(0o1777)
    return folder


@pytest.mark.parametrize("owner", ["another user", "this user", "the folder's owner"])
def test_output_onto_a_symlink_in_a_shared_folder(cli, tmp_path, shared_folder, owner):
    assert cli("init").exit_code == 0 and cli("sample", "add", "S").exit_code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = shared_folder / "out.csv"
    link.symlink_to(victim)
    uid = {"another user": 12345, "this user": os.geteuid(), "the folder's owner": 65534}[owner]
    os.lchown(link, uid, uid)
    result = cli("sample", "list", "-f", "csv", "-o", link)
    if owner == "another user":  # planted: refused, the file it names untouched
        assert (result.exit_code, result.stdout) == (1, "")
        assert result.stderr == (f"error: {link}: is a symbolic link of user id 12345 in the shared folder "
                                 f"{shared_folder} (world-writable, sticky): not followed; write to another name\n")
        assert victim.read_text() == "precious\n"
    else:  # documented: the file the link names is replaced, the link stays
        assert result.exit_code == 0, result.output
        assert victim.read_text().splitlines()[1].startswith("S,")
        assert link.is_symlink()
    assert sorted(p.name for p in shared_folder.iterdir()) == ["out.csv"]
    assert stat.S_IMODE(shared_folder.stat().st_mode) == 0o1777


@pytest.mark.parametrize("dtype, problem", [
    (np.dtype(("<f4", (6,))), "has (6,) values per element (HDF5 array of float32); expected one number per voxel"),
    (h5py.enum_dtype({"empty": 0, "full": 1}, basetype="i1"),
     "holds enumerated labels (HDF5 enum of int8), not measured numbers"),
])
def test_hdf5_stack_of_array_or_enum_elements_is_refused(lab, tmp_path, dtype, problem):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/exchange/data", shape=(8, 6, 6), dtype=dtype)
        f["/exchange/data"][...] = np.ones((8, 6, 6, 6) if dtype.subdtype else (8, 6, 6), dtype.base)
        f["/exchange/energy"] = np.linspace(8300.0, 8400.0, 8)
    before = (_counts(lab), _listing(Path(lab.store)))
    result = lab("txm", "ingest", path, "--sample", "S")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"error: {path}: stack '/exchange/data' {problem}\n"
    assert (_counts(lab), _listing(Path(lab.store))) == before
