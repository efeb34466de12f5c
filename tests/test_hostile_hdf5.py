"""Hostile HDF5 tomograms through ``txmdb txm ingest``, on SQLite and PostgreSQL (issue 9 §5, §7).

Each file below is refused from what it declares, before any of its data is read: one
line ``error: FILE: PROBLEM``, exit status 1, the catalogue and the store exactly as they
were. A child process runs them all and measures what they cost: well under a second
each, and a peak RSS that stays far below what the files claim (a few-KB file declares up
to 75 GiB; before, it ended in a MemoryError, or in 47 s scanning 200,000 fill-value slices).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import sqlalchemy as sa

from tests.test_hostile import TABLES, _listing, lab  # noqa: F401 - lab is a fixture

STACK, ENERGY, WHITE = "/exchange/data", "/exchange/energy", "/exchange/data_white"
E = np.linspace(8300.0, 8400.0, 8)
E2 = np.array([8300.0, 8400.0])
HINT = ("make a self-contained copy (e.g. `h5repack --merge -l CONTI IN OUT` copies linked, external and "
        "virtual data into OUT) and ingest that")
VOXEL_RANGE = "is outside 0.01 nm – 1 mm"


def _absorbance(shape=(E.size, 3, 4, 5)) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.1, 2.0, shape).astype("f4")


def _valid(f: h5py.File, data: str = STACK) -> None:
    f[data] = _absorbance()
    f[ENERGY] = E


# --------------------------------------------------------------------------- the hostile files

@dataclass
class Case:
    """A hostile file: its name, how to write it, and the problem its one error line states.

    ``write(f, folder)`` fills the open file and may return values that ``problem`` (a
    ``str.format`` template, given ``folder`` too) quotes; ``damage(path)`` then edits its bytes.
    """

    file: str
    write: Callable[[h5py.File, Path], dict | None]
    problem: str
    args: tuple[str, ...] = ()
    libver: str | None = None
    damage: Callable[[Path], None] | None = None


def _all(*writers):
    """One writer running ``writers`` in turn; their returned values merged."""
    def write(f, folder):
        values = {}
        for writer in writers:
            values.update(writer(f, folder) or {})
        return values
    return write


def _sets(**datasets):
    """A writer creating data sets from values, or from ``create_dataset`` keywords (a dict)."""
    def write(f, folder):
        for name, spec in datasets.items():
            if isinstance(spec, dict):
                f.create_dataset(name, **spec)
            else:
                f[name] = spec
    return write


def _valid_writer(f, folder):
    _valid(f)


def _links(**links):
    """A writer adding links: a link object, or a function of the file giving the object to hard-link."""
    def write(f, folder):
        for name, target in links.items():
            f[name] = target(f) if callable(target) else target
    return write


def _double_gzip(f, folder):
    """Deflate applied twice: 32 MiB of NaN in under 1 KB."""
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_chunk((2, 1, 512, 512))
    plist.set_deflate(9)
    plist.set_deflate(9)
    space = h5py.h5s.create_simple((2, 16, 512, 512))
    ds = h5py.Dataset(h5py.h5d.create(f.require_group("exchange").id, b"data", h5py.h5t.IEEE_F32LE, space, plist))
    for i in range(16):
        ds[:, i] = np.nan
    return {"stored": ds.id.get_storage_size()}


def _huge_slice(f, folder):
    """Every chunk really stored (gzip of zeros, ~1000:1), but one slice holds more than MAX_SLICE_VALUES."""
    chunk = (2, 1, 1024, 1024)
    packed = zlib.compress(np.zeros(chunk, "f4").tobytes(), 9)
    ds = f.create_dataset(STACK, shape=(2, 1, 16384, 16385), dtype="f4", chunks=chunk, compression="gzip")
    for y in range(0, 16384, 1024):
        for x in range(0, 16385, 1024):
            ds.id.write_direct_chunk((0, 0, y, x), packed)


def _half_written(f, folder):
    ds = f.create_dataset(STACK, shape=(E.size, 10, 4, 4), dtype="f4", chunks=(E.size, 1, 4, 4))
    ds[:, :5] = _absorbance((E.size, 5, 4, 4))


def _external_link(link: str, target: str, content: dict):
    """The object at ``link`` is ``target`` in elsewhere.h5, which holds ``content`` (path: value)."""
    def write(f, folder):
        with h5py.File(folder / "elsewhere.h5", "w") as other:
            other.update(content)
        f[link] = h5py.ExternalLink(str(folder / "elsewhere.h5"), target)
    return write


def _external_flat(f, folder):
    (folder / "flat.raw").write_bytes(np.full((1, 3, 4, 5), 1000.0, "f4").tobytes())
    f.create_dataset(WHITE, shape=(1, 3, 4, 5), dtype="f4", external=[(str(folder / "flat.raw"), 0, 240)])


def _virtual(source_file: str):
    """The stack is a virtual data set over /raw in ``source_file`` ("." is this file)."""
    def write(f, folder):
        if source_file == ".":
            f["/raw"] = _absorbance()
        else:
            with h5py.File(folder / source_file, "w") as other:
                other["/raw"] = _absorbance()
        layout = h5py.VirtualLayout(shape=(E.size, 3, 4, 5), dtype="f4")
        layout[:] = h5py.VirtualSource(source_file, "/raw", shape=(E.size, 3, 4, 5))
        f.create_virtual_dataset(STACK, layout)
    return write


def _unknown_filter(path: Path) -> None:
    """The lzf pipeline message patched to filter id 305, which no plugin provides."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"lzf\x00")
    assert raw.count(b"lzf\x00") == 1 and struct.unpack("<H", raw[at - 8:at - 6])[0] == 32000
    raw[at - 8:at - 6] = struct.pack("<H", 305)
    raw[at:at + 3] = b"xyz"
    path.write_bytes(raw)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1500])


def _attrs(**attrs):
    def write(f, folder):
        f[STACK].attrs.update(attrs)
    return _all(_valid_writer, write)


def _with_valid(*writers):
    return _all(_valid_writer, *writers)


def _paths(data: str, energy: str = ENERGY) -> tuple[str, ...]:
    return ("--data", data, "--energy", energy)


def _voxel_option(value: str) -> Case:
    return Case(f"voxel-{value}.h5", _valid_writer, f"voxel size {float(value)} nm {VOXEL_RANGE}", ("--voxel-nm", value))


def _stack_dtype(name: str, data, dtype: str) -> Case:
    return Case(name, _sets(**{STACK: data, ENERGY: E2}), f"stack '{STACK}' has non-numeric dtype {dtype}")


def _energy_dtype(name: str, energies: dict, dtype: str) -> Case:
    return Case(name, _sets(**{STACK: _absorbance((2, 3, 4)), ENERGY: energies}),
                f"energies '{ENERGY}' are not numbers (HDF5 type {dtype})")


UNWRITTEN = "(never written, or a crafted file)"
MISSING = "(an interrupted write, or a crafted file)"
LOOP = "soft links form a loop (more than 16 followed)"
DEEP = "/exchange/" + "loop/" * 300 + "data"
ONE_VALUE = "a voxel size or its unit is one value"
OUTSIDE = "its bytes live outside this file"
LIST_ENERGIES = {"shape": (10**10,), "dtype": "f8", "chunks": (10**6,)}

CASES = {
    # 2.7 KB declaring a 2×1×100000×100000 float32 stack (was: MemoryError)
    "declared stack 2x1x1e5x1e5": Case(
        "declared.h5", _sets(**{STACK: {"shape": (2, 1, 100_000, 100_000), "dtype": "f4"}, ENERGY: E2}),
        f"stack '{STACK}' declares 74.5 GiB but the file stores 0 bytes of it {UNWRITTEN}"),
    # a few KB declaring ~15 GiB of finite fill value (was: accepted)
    "declared 15 GiB": Case(
        "fifteen.h5", _sets(**{STACK: {"shape": (2, 2000, 1000, 1000), "dtype": "f4"}, ENERGY: E2}),
        f"stack '{STACK}' declares 14.9 GiB but the file stores 0 bytes of it {UNWRITTEN}"),
    # a 10^10-element energy list (was: MemoryError)
    "declared 1e10 energies": Case(
        "energies.h5", _sets(**{STACK: _absorbance((2, 3, 4)), ENERGY: LIST_ENERGIES}),
        f"10000000000 energies in '{ENERGY}' but the stack has 2 images along its first axis"),
    "declared 1e10 energies and images": Case(
        "energies-stack.h5",
        _sets(**{STACK: {"shape": (10**10, 1, 1), "dtype": "f4", "chunks": (10**6, 1, 1)}, ENERGY: LIST_ENERGIES}),
        f"stack '{STACK}' declares 37.3 GiB in 10,000 chunks but the file stores only 0 of them {MISSING}"),
    "20000 energies": Case(
        "many.h5", _sets(**{STACK: np.ones((20_000, 1, 2), "f4"), ENERGY: np.linspace(8000.0, 9000.0, 20_000)}),
        f"stack '{STACK}' has 20,000 images along its energy axis, more than the 10,000 txmdb accepts"),
    # 3 KB of 200,000 all-NaN slices (was: 47 s scanning fill value)
    "200000 NaN slices": Case(
        "nan-slices.h5", _sets(**{STACK: {"shape": (2, 200_000, 64, 64), "dtype": "f4", "chunks": (2, 1, 64, 64),
                                          "fillvalue": np.nan}, ENERGY: E2}),
        f"stack '{STACK}' declares 6.1 GiB in 200,000 chunks but the file stores only 0 of them {MISSING}"),
    "half the chunks": Case(
        "partial.h5", _all(_half_written, _sets(**{ENERGY: E})),
        f"stack '{STACK}' declares 5,120 bytes in 10 chunks but the file stores only 5 of them {MISSING}"),
    "double gzip bomb": Case(
        "bomb.h5", _all(_double_gzip, _sets(**{ENERGY: E2})),
        f"stack '{STACK}' declares 32 MiB stored in {{stored:,}} bytes, more than 2048:1 (compression of real "
        f"data stays far below; a decompression bomb?)"),
    "2 GiB chunks": Case(
        "chunks.h5", _sets(**{STACK: {"shape": (2, 8, 8192, 8192), "dtype": "f4", "chunks": (2, 4, 8192, 8192)},
                              ENERGY: E2}),
        f"stack '{STACK}' has chunks of 2 GiB (2, 4, 8192, 8192), more than the 1 GiB txmdb decompresses at once"),
    "slice above the limit": Case(
        "slice.h5", _all(_huge_slice, _sets(**{ENERGY: E2})),
        f"one slice of stack '{STACK}' (2, 1, 16384, 16385) holds 536,903,680 values, more than the "
        f"536,870,912 txmdb reads at once"),
    "1e9 flat frames": Case(
        "flats.h5", _with_valid(_sets(**{WHITE: {"shape": (10**9, 3, 4, 5), "dtype": "f4", "chunks": (1000, 3, 4, 5)}})),
        f"flat-field '{WHITE}' has 1,000,000,000 frames; expected 1 to 10,000"),
    # a soft link to a soft link back to it (was: RuntimeError)
    "soft-link loop": Case(
        "loop.h5", _all(_sets(**{ENERGY: E}), _links(**{STACK: h5py.SoftLink("/exchange/x"),
                                                         "/exchange/x": h5py.SoftLink(STACK)})),
        f"'{STACK}': {LOOP}"),
    "group soft-link loop": Case(
        "group-loop.h5", _with_valid(_links(a=h5py.SoftLink("/a/b"))), f"'/a/data': {LOOP}", _paths("/a/data")),
    "hard-link cycle walked deep": Case(
        "deep.h5", _with_valid(_links(**{"/exchange/loop": lambda f: f["/exchange"]})),
        f"'{DEEP}' is more than 256 groups deep", _paths(DEEP)),
    "external link": Case(
        "elink.h5", _all(_sets(**{ENERGY: E}), _external_link(STACK, "/data", {"/data": _absorbance()})),
        f"'{STACK}' is an external link to '/data' in {{folder}}/elsewhere.h5: {OUTSIDE}; {HINT}"),
    "external link group": Case(
        "elink-group.h5", _all(_sets(**{STACK: _absorbance()}), _external_link("/ext", "/g", {"/g/energy": E})),
        f"'/ext/energy' is an external link to '/g' in {{folder}}/elsewhere.h5: {OUTSIDE}; {HINT}",
        _paths(STACK, "/ext/energy")),
    "external storage /etc/passwd": Case(
        "passwd.h5", _sets(**{STACK: {"shape": (2, 2, 8), "dtype": "u1", "external": [("/etc/passwd", 0, 32)]},
                              ENERGY: E2}),
        f"stack '{STACK}' keeps its bytes in '/etc/passwd', outside this file; {HINT}"),
    "external flat field": Case(
        "ext-flat.h5", _with_valid(_external_flat),
        f"flat-field '{WHITE}' keeps its bytes in '{{folder}}/flat.raw', outside this file; {HINT}"),
    "virtual, other file": Case(
        "vds.h5", _all(_virtual("vds-source.h5"), _sets(**{ENERGY: E})),
        f"stack '{STACK}' is a virtual data set (its bytes live in other data sets or files); {HINT}"),
    # refused too: its source's storage would need the same checks, and no tomogram writer makes one
    "virtual, same file": Case(
        "vds-self.h5", _all(_virtual("."), _sets(**{ENERGY: E})),
        f"stack '{STACK}' is a virtual data set (its bytes live in other data sets or files); {HINT}"),
    "unknown filter": Case(
        "filter.h5", _sets(**{STACK: {"data": _absorbance(), "compression": "lzf"}, ENERGY: E}),
        f"stack '{STACK}' needs HDF5 filter 305 ('xyz'), which this HDF5 cannot decode; install its plugin "
        f"(HDF5_PLUGIN_PATH) or store the data without it",
        libver="earliest", damage=_unknown_filter),          # version-1 headers: no checksums to mend
    # attributes are sized before they are read (dense storage: libver latest)
    "voxel attribute of 1e6 values": Case(
        "attr.h5", _attrs(voxel_size_nm=np.zeros(10**6)),
        f"attribute 'voxel_size_nm' of '{STACK}' holds 1,000,000 values in 8,000,000 bytes; {ONE_VALUE}",
        libver="latest"),
    "unit attribute of 1e5 values": Case(
        "unit.h5", _attrs(pixel_size=30.0, units=np.array([b"um"] * 100_000)),
        f"attribute 'units' of '{STACK}' holds 100,000 values in 200,000 bytes; {ONE_VALUE}", libver="latest"),
    "string data": _stack_dtype("text.h5", np.full((2, 3, 4), b"1.0"), "|S3"),
    "compound data": _stack_dtype("compound.h5", np.zeros((2, 3, 4), [("a", "f4"), ("b", "i2")]),
                                  "[('a', '<f4'), ('b', '<i2')]"),
    "energies as strings": _energy_dtype("energy-text.h5", {"data": np.array([b"8300.0 eV", b"8400.0 eV"])}, "|S9"),
    "energies as vlen strings": _energy_dtype("energy-vlen.h5", {"data": ["8300", "8400"],
                                                                 "dtype": h5py.string_dtype()}, "object"),
    "0-length axis": Case(
        "empty.h5", _sets(**{STACK: {"shape": (2, 0, 4), "dtype": "f4"}, ENERGY: E2}),
        f"stack '{STACK}' is empty (2, 0, 4)"),
    "null dataspace": Case(
        "null.h5", _sets(**{STACK: h5py.Empty("f4"), ENERGY: E2}),
        f"stack '{STACK}' has rank 0 None; expected (n_energy, y, x) or (n_energy, z, y, x)"),
    "truncated": Case("truncated.h5", _valid_writer, "truncated HDF5 file (incomplete copy or download?)",
                      damage=_truncate),
    "--data at a group": Case("group.h5", _valid_writer, "stack '/exchange' is a group, not a data set",
                              _paths("/exchange")),
    "--data at the root": Case("root.h5", _valid_writer, "stack '/' is a group, not a data set", _paths("/")),
    "--energy at a named type": Case(
        "type.h5", _with_valid(_links(**{"/types/float": np.dtype("f4")})),
        "energy '/types/float' is a named data type, not a data set", _paths(STACK, "/types/float")),
    "--data at a dangling link": Case(
        "dangling.h5", _with_valid(_links(**{"/exchange/dangling": h5py.SoftLink("/nowhere")})),
        "missing stack data set '/exchange/dangling'", _paths("/exchange/dangling")),
    "--voxel-nm 1e-320": _voxel_option("1e-320"),
    "--voxel-nm 0.005": _voxel_option("0.005"),
    "--voxel-nm 2e6": _voxel_option("2e6"),
    "voxel_size_nm attribute 1e-320": Case(
        "voxel-attr.h5", _attrs(voxel_size_nm=1e-320),
        f"attribute 'voxel_size_nm' of '{STACK}': voxel size 1e-320 nm {VOXEL_RANGE}"),
    "pixel size 30 m": Case(
        "pixel-m.h5", _attrs(pixel_size=30.0, units="m"),
        f"attribute 'pixel_size' of '{STACK}': voxel size 30000000000.0 nm {VOXEL_RANGE}"),
}


def _build(name: str, folder: Path):
    """Write the case's file into ``folder``: its path, the CLI arguments, the one error line expected."""
    case = CASES[name]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / case.file
    with h5py.File(path, "w", **({"libver": case.libver} if case.libver else {})) as f:
        values = case.write(f, folder) or {}
    if case.damage:
        case.damage(path)
    problem = case.problem.format(folder=folder, **values)
    return path, ["txm", "ingest", str(path), "--sample", "S", *case.args], f"error: {path}: {problem}"


# --------------------------------------------------------------------------- tests

def _sql(cli, statement: str) -> list[dict]:
    """Rows read straight from the catalogue database (not through the command under test)."""
    engine = sa.create_engine(cli.url)
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.text(statement))]
    finally:
        engine.dispose()


def _counts(cli) -> dict[str, int]:
    return {t: _sql(cli, f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in TABLES}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_file_is_refused_in_one_line(lab, tmp_path, name):
    path, args, line = _build(name, tmp_path / "in")
    before = (_counts(lab), _listing(Path(lab.store)))
    result = lab(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [line]
    assert result.stdout == ""
    assert (_counts(lab), _listing(Path(lab.store))) == before


RUNNER = """
import json, resource, sys, time
from typer.testing import CliRunner
from txmdb.cli.main import app

db, store, warm_up, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
runner = CliRunner()
runner.invoke(app, ["--db", db, "--store", store, *warm_up])  # the imports, outside the timings
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
report = {"after_imports_mb": peak(), "cases": []}
for args in cases:
    start = time.perf_counter()
    result = runner.invoke(app, ["--db", db, "--store", store, *args])
    report["cases"].append({"exit": result.exit_code, "stderr": result.stderr,
                            "seconds": time.perf_counter() - start, "peak_mb": peak()})
print(json.dumps(report))
"""


def test_hostile_files_cost_little_time_and_memory(lab, tmp_path):
    """All the files in one fresh process: each refused in < 1 s, and together they grow the peak RSS
    by < 64 MB over what the imports take (the files declare up to 15 GiB and more)."""
    built = {name: _build(name, tmp_path / "in" / str(i)) for i, name in enumerate(CASES)}
    before = _counts(lab)
    warm_up = ["txm", "ingest", str(tmp_path / "missing.h5"), "--sample", "S"]
    out = subprocess.run([sys.executable, "-c", RUNNER, lab.url, str(lab.store), json.dumps(warm_up),
                          json.dumps([args for _, args, _ in built.values()])],
                         capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(out.stdout)
    for (name, (_, _, line)), case in zip(built.items(), report["cases"]):
        assert (case["exit"], case["stderr"].splitlines()) == (1, [line]), name
        assert case["seconds"] < 1.0, (name, case["seconds"])
    assert report["cases"][-1]["peak_mb"] - report["after_imports_mb"] < 64, report
    assert _counts(lab) == before


def test_awkward_but_valid_files_are_ingested(lab, tmp_path):
    """Hard-link cycles, soft links (relative too), user blocks and the boundary voxel sizes are fine."""
    folder = tmp_path / "ok"
    folder.mkdir()
    files = []
    cycle = folder / "cycle.h5"
    with h5py.File(cycle, "w") as f:
        _valid(f)
        f["/exchange/loop"] = f["/exchange"]                  # /exchange/loop/loop/... is /exchange
        f["/extra/up"] = f["/"]
    files.append((cycle, ["--data", "/exchange/loop/loop/loop/data", "--voxel-nm", "0.01"]))
    soft = folder / "soft.h5"
    with h5py.File(soft, "w") as f:
        f["/raw/stack"] = _absorbance()
        f["/raw/eng"] = E
        f["/exchange"] = h5py.SoftLink("/raw")
        f["/raw/data"] = h5py.SoftLink("stack")               # relative, inside the linked group
        f["/raw/energy"] = h5py.SoftLink("/raw/eng")
    files.append((soft, ["--voxel-nm", "1e6"]))
    block = folder / "userblock.h5"
    with h5py.File(block, "w", userblock_size=512) as f:
        _valid(f)
        f[STACK].attrs["pixel_size"] = 0.0                    # 0: "unknown", as writers mean it
    files.append((block, []))
    for path, extra in files:
        result = lab("txm", "ingest", path, "--sample", "S", *extra)
        assert result.exit_code == 0, result.output
    assert _sql(lab, "SELECT data_path, voxel_size_nm FROM txm_scans ORDER BY id") == [
        {"data_path": "/exchange/loop/loop/loop/data", "voxel_size_nm": 0.01},
        {"data_path": STACK, "voxel_size_nm": 1e6},
        {"data_path": STACK, "voxel_size_nm": None}]


def test_analysis_refuses_a_file_that_reaches_outside(lab, tmp_path):
    """The check runs again when an analysis re-opens the file (a catalogue row from an older txmdb)."""
    path = tmp_path / "two-stacks.h5"
    with h5py.File(path, "w") as f:
        _valid(f)
        f.create_dataset("/outside/data", shape=(E.size, 3, 4, 5), dtype="u1",
                         external=[("/etc/passwd", 0, E.size * 60)])
    ingested = lab("txm", "ingest", path, "--sample", "S")
    assert ingested.exit_code == 0, ingested.output
    scan_id = ingested.stdout.strip().splitlines()[-1]
    engine = sa.create_engine(lab.url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE txm_scans SET data_path = '/outside/data' WHERE id = :id"), {"id": int(scan_id)})
    engine.dispose()
    before = _listing(Path(lab.store))
    result = lab("txm", "analyze", scan_id, "--bin", "1")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"error: {path.resolve()}: stack '/outside/data' keeps its bytes in '/etc/passwd', outside this file; {HINT}"]
    # no results: nothing in the store, no finished analysis (a failed one may be recorded as such)
    assert _listing(Path(lab.store)) == before
    assert _sql(lab, "SELECT count(*) AS n FROM analyses WHERE status = 'done'") == [{"n": 0}]


def test_all_nan_stack_of_tiny_chunks_does_not_keep_ingest_busy(lab, tmp_path):
    """200,000 all-NaN slices honestly stored (16 MB of 21-byte gzip chunks): the search for a
    finite voxel stops at its budget and the stack is accepted (the analysis masks NaN), in
    well under the ~6 s a full scan costs; a small all-NaN stack is still refused."""
    path = tmp_path / "tiny-chunks.h5"
    packed = zlib.compress(np.full((2, 1, 4, 4), np.nan, "f4").tobytes())
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(STACK, shape=(2, 200_000, 4, 4), dtype="f4", chunks=(2, 1, 4, 4), compression="gzip")
        for i in range(200_000):
            ds.id.write_direct_chunk((0, i, 0, 0), packed)
        f[ENERGY] = E2
    start = time.perf_counter()
    result = lab("txm", "ingest", path, "--sample", "S")
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - start < 2.0
    small = tmp_path / "small-nan.h5"
    with h5py.File(small, "w") as f:
        f.create_dataset(STACK, data=np.full((2, 50, 4, 4), np.nan, "f4"), chunks=(2, 1, 4, 4), compression="gzip")
        f[ENERGY] = E2
    refused = lab("txm", "ingest", small, "--sample", "S")
    assert refused.stderr.splitlines() == [
        f"error: {small}: stack '{STACK}' has no voxel with a finite spectrum (all NaN/inf)"]
