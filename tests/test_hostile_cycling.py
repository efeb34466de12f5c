"""Cycler files that used to give silent nonsense, through ``txmdb cycling ingest`` on SQLite and PostgreSQL.

Issue 9 §6 and §9: European decimal commas, impossible cycle numbers, files without a charge or
discharge step, ZIP bombs dressed as ``.ndax``, Windows-1252 exports and unit tokens that were
not understood. Each bad file is refused with one exact line and exit status 1, and leaves the
catalogue and the store as they were; each good variant ingests to the original's cycles.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.conftest import DATA

P492 = DATA / "cycling" / "batterydata" / "p492-13-raw.csv"
NEWARE_CSV = DATA / "cycling" / "neware-csv" / "nw_regular_export_ife_example.csv"
NDAX = DATA / "cycling" / "neware-ndax"
MAX_CYCLE = 2**31 - 1


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    for cell in ("C1", "C2", "C3", "C4"):
        assert cli("cell", "add", cell, "--sample", "S", "--active-mass-mg", "10").exit_code == 0
    return cli


def catalogue_state(cli, tables: tuple[str, ...] = ("cycling_runs", "cycles")) -> tuple:
    """Row counts of ``tables`` and the store's listing (sizes included)."""
    engine = sa.create_engine(cli.url)
    try:
        with engine.connect() as conn:
            counts = tuple(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables)
    finally:
        engine.dispose()
    store = Path(cli.store)
    files = sorted(f"{p.relative_to(store)}:{p.stat().st_size}" for p in store.rglob("*") if p.is_file()) \
        if store.exists() else []
    return counts, files


def _cycles(cli, run_id: str) -> pd.DataFrame:
    engine = sa.create_engine(cli.url)
    try:
        return pd.read_sql(sa.text("SELECT cycle, charge_capacity_mah, discharge_capacity_mah FROM cycles "
                                   "WHERE run_id = :r ORDER BY cycle"), engine, params={"r": int(run_id)})
    finally:
        engine.dispose()


def _ingest(cli, path: Path, cell: str, *extra: str) -> str:
    result = cli("cycling", "ingest", path, "--cell", cell, *extra)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def _refused(cli, path: Path, problem: str, *extra: str, cell: str = "C4") -> None:
    """Exit 1, exactly ``error: PATH: PROBLEM`` on stderr, nothing changed."""
    before = catalogue_state(cli)
    result = cli("cycling", "ingest", path, "--cell", cell, *extra)
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: {path}: {problem}\n"
    assert "Traceback" not in result.output
    assert catalogue_state(cli) == before


def _same_cycles(ours: pd.DataFrame, original: pd.DataFrame) -> None:
    assert len(ours) == len(original) > 1
    assert ours["cycle"].tolist() == original["cycle"].tolist()
    for col in ("charge_capacity_mah", "discharge_capacity_mah"):
        pd.testing.assert_series_equal(ours[col], original[col], rtol=1e-12, check_exact=False)


# --------------------------------------------------------------------------- European exports


def _european(text: str, *, sep: str, quote: bool, header_lines: int = 1) -> str:
    """The text as a European-locale export: decimal commas, ``sep`` between cells."""
    out = []
    for i, line in enumerate(text.splitlines()):
        cells = line.split(",")
        if i >= header_lines:
            cells = [c.replace(".", ",") for c in cells]
            if quote:
                cells = [f'"{c}"' if "," in c else c for c in cells]
        out.append(sep.join(cells))
    return "\n".join(out) + "\n"


def test_european_exports_read_as_the_original(lab, tmp_path):
    original = _cycles(lab, _ingest(lab, P492, "C1"))
    semicolons = tmp_path / "p492_semicolon.csv"
    semicolons.write_text(_european(P492.read_text(), sep=";", quote=False))
    quoted = tmp_path / "p492_quoted.csv"
    quoted.write_text(_european(P492.read_text(), sep=",", quote=True))
    assert '1;1;1,002;0;0;0;3,27191577' in semicolons.read_text()
    assert '1,1,"1,002",0,0,0,"3,27191577"' in quoted.read_text()
    _same_cycles(_cycles(lab, _ingest(lab, semicolons, "C2")), original)
    _same_cycles(_cycles(lab, _ingest(lab, quoted, "C3")), original)


def test_european_neware_export_reads_as_the_original(lab, tmp_path):
    original = _cycles(lab, _ingest(lab, NEWARE_CSV, "C1"))
    european = tmp_path / "neware_semicolon.csv"
    european.write_text(_european(NEWARE_CSV.read_text(), sep=";", quote=False, header_lines=3))
    assert ";;1;00:00:00;00:00:00;0,00000;4,3185;" in european.read_text()
    quoted = tmp_path / "neware_quoted.csv"
    quoted.write_text(_european(NEWARE_CSV.read_text(), sep=",", quote=True, header_lines=3))
    _same_cycles(_cycles(lab, _ingest(lab, european, "C2")), original)
    _same_cycles(_cycles(lab, _ingest(lab, quoted, "C3")), original)


def test_unquoted_decimal_commas_in_a_comma_separated_file_are_refused(lab, tmp_path):
    path = tmp_path / "p492_ambiguous.csv"
    text = _european(P492.read_text(), sep=",", quote=False)
    path.write_text(text)
    n_cells = len(text.splitlines()[1].split(","))
    assert n_cells > 28
    _refused(lab, path, f"line 2 has {n_cells} cells but the header has 28: decimal commas in a "
                        "comma-separated file? Export with ';' between cells, or with '.' as the decimal mark")


def test_mixed_decimal_marks_are_refused(lab, tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("Time_s;Voltage_V;Current_A;Cycle_Index\n0;3,2;0,001;1\n1;3.3;0,001;1\n2;3,4;0,001;1\n")
    _refused(lab, path, "mixes decimal commas ('3,2' in 'Voltage_V') and decimal points ('3.3' in 'Voltage_V')")


# --------------------------------------------------------------------------- cycle numbers


@pytest.mark.parametrize(("cell", "shown"), [
    ("inf", "inf"), ("-inf", "-inf"), ("nan", "missing"), ("", "missing"), ("1.5", "1.5"), ("-1", "-1"),
    ("1e12", "1000000000000"), (str(MAX_CYCLE + 1), str(MAX_CYCLE + 1)),
])
def test_impossible_cycle_numbers_are_refused(lab, tmp_path, cell, shown):
    lines = P492.read_text().splitlines()
    cells = lines[40].split(",")
    cells[0] = cell  # Cycle_Index
    lines[40] = ",".join(cells)
    path = tmp_path / "bad_cycle.csv"
    path.write_text("\n".join(lines) + "\n")
    _refused(lab, path, f"cycle number {shown} in column 'Cycle_Index' (line 41) is not a whole number "
                        f"from 0 to {MAX_CYCLE}")


# --------------------------------------------------------------------------- nothing to measure


def test_a_file_without_a_charge_or_discharge_step_is_refused(lab, tmp_path):
    one = tmp_path / "one_record.csv"
    one.write_text("test_time_second,voltage_volt,current_ampere,cycle_count\n0,3.2,0,1\n")
    _refused(lab, one, "no complete charge or discharge step (1 record, zero current throughout)")
    # A real Neware file of a single rest step.
    _refused(lab, NDAX / "21_10_7_85.ndax", "no complete charge or discharge step (141 records, zero current "
                                            "throughout)")
    # One charging record between rests is no complete step either.
    blip = tmp_path / "blip.csv"
    blip.write_text("test_time_second,voltage_volt,current_ampere\n0,3.2,0\n1,3.2,0.001\n2,3.2,0\n")
    _refused(lab, blip, "no complete charge or discharge step (3 records)")


# --------------------------------------------------------------------------- encodings and units


def _current_table(current_name: str, factor: float) -> str:
    raw = pd.read_csv(P492)
    table = pd.DataFrame({"Time_s": raw["Time_s"], "Voltage_V": raw["Voltage_V"],
                          current_name: raw["Current_A"] * factor, "Cycle_Index": raw["Cycle_Index"],
                          "Cell_Temperature(°C)": raw["Cell_Temperature_C"]})
    return table.to_csv(index=False)


def test_windows_1252_export_is_read_as_windows_1252(lab, tmp_path):
    reference = tmp_path / "amperes.csv"
    reference.write_text(_current_table("Current_A", 1.0), encoding="utf-8")
    western = tmp_path / "microamperes_cp1252.csv"
    western.write_bytes(_current_table("Current(µA)", 1e6).encode("cp1252"))
    assert b"Current(\xb5A)" in western.read_bytes()
    # Read as GB18030 the µ turns into a Chinese character: its unit is not understood.
    _refused(lab, western, "unit '礎' of column 'Current(礎)' is not understood as a current unit "
                           "(known: µA, uA, mA, A)", "--encoding", "gb18030")
    _refused(lab, western, "unknown text encoding 'klingon'", "--encoding", "klingon")
    original = _cycles(lab, _ingest(lab, reference, "C1"))
    _same_cycles(_cycles(lab, _ingest(lab, western, "C2")), original)


def test_explicit_encoding_option_reads_the_file(lab, tmp_path):
    original = _cycles(lab, _ingest(lab, P492, "C1"))
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(P492.read_text().replace("Temp2", "Température").encode("latin-1"))
    _same_cycles(_cycles(lab, _ingest(lab, latin, "C2", "--encoding", "latin-1")), original)


def test_gb18030_neware_export_still_reads(lab, tmp_path):
    original = _cycles(lab, _ingest(lab, NEWARE_CSV, "C1"))
    chinese = tmp_path / "neware_gb18030.csv"
    chinese.write_bytes(NEWARE_CSV.read_text().replace("(?)", "(℃)").encode("gb18030"))
    assert "℃".encode("gb18030") in chinese.read_bytes()
    _same_cycles(_cycles(lab, _ingest(lab, chinese, "C2")), original)


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("Current_A", "Current(kA)", "unit 'kA' of column 'Current(kA)' is not understood as a current unit "
                                 "(known: µA, uA, mA, A)"),
    ("Charge_Capacity_Ah", "Charge_Capacity(mAh/g)", "unit 'mAh/g' of column 'Charge_Capacity(mAh/g)' is not "
     "understood as a capacity unit (known: µAh, uAh, mAh, Ah, mAs, As, C)"),
])
def test_a_unit_that_is_not_understood_is_refused(lab, tmp_path, old, new, problem):
    path = tmp_path / "odd_unit.csv"
    text = P492.read_text()
    path.write_text(text.replace(old, new, 1))
    _refused(lab, path, problem)


# --------------------------------------------------------------------------- .ndax ZIP bombs


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _deflated_zeros(mib: int) -> bytes:
    """A raw deflate stream of ``mib`` MiB of zeros, built without compressing them all."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)  # self-contained: repeatable
    return block * mib + c.flush()


def _write_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> None:
    """A ZIP of deflated members (name, stream, CRC-32, declared size), written by hand."""
    out, central = bytearray(), bytearray()
    for name, data, crc, size in members:
        offset, raw_name = len(out), name.encode()
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), size, len(raw_name), 0)
        out += raw_name + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(data), size,
                               len(raw_name), 0, 0, 0, 0, 0, offset) + raw_name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    """A real .ndax with its data.ndc replaced by 3 GiB of zeros (3 MB packed), declared honestly or as 64 KiB."""
    folder = tmp_path_factory.mktemp("bombs")
    members = []
    with zipfile.ZipFile(NDAX / "nw4-120-6-1-36.ndax") as zf:
        for info in zf.infolist():
            if info.filename != "data.ndc":
                data = zf.read(info)
                members.append((info.filename, _raw_deflate(data), zlib.crc32(data), len(data)))
    mib = 3 * 1024
    stream = _deflated_zeros(mib)
    crc = 0
    zeros = bytes(1 << 20)
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    paths = {"bomb": folder / "bomb.ndax", "liar": folder / "liar.ndax", "lzma": folder / "lzma.ndax"}
    _write_zip(paths["bomb"], [*members, ("data.ndc", stream, crc, mib << 20)])
    _write_zip(paths["liar"], [*members, ("data.ndc", stream, crc, 64 << 10)])
    with zipfile.ZipFile(NDAX / "nw4-120-6-1-36.ndax") as src, \
            zipfile.ZipFile(paths["lzma"], "w", compression=zipfile.ZIP_LZMA) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return paths


_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr, "seconds": time.perf_counter() - start,
                  "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _ingest_measured(cli, path: Path) -> dict:
    """Run the real CLI in a child process; its exit status, stderr, wall time and peak RSS."""
    command = [sys.executable, "-m", "txmdb.cli.main", "--db", cli.url, "--store", str(cli.store),
               "cycling", "ingest", str(path), "--cell", "C4"]
    out = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_ndax_zip_bombs_are_refused_in_bounded_memory(lab, bombs):
    with zipfile.ZipFile(bombs["bomb"]) as zf:
        unpacked = sum(i.file_size for i in zf.infolist())
        packed = sum(i.compress_size for i in zf.infolist())
    assert unpacked > 3 << 30 and packed < 4 << 20 and bombs["bomb"].stat().st_size < 4 << 20
    expected = {
        "bomb": f"ZIP directory declares {unpacked / 2**30:.1f} GiB unpacked from {packed / 2**20:.1f} MiB "
                f"({unpacked / packed:.0f}×, more than the 100× a Neware file compresses): refused as a likely "
                "ZIP bomb",
        "liar": "ZIP member 'data.ndc' inflates to more than the 64.0 KiB its directory entry declares: refused",
        "lzma": "ZIP member 'EditStep.xml' uses compression method 14; Neware .ndax files use deflate",
    }
    before = catalogue_state(lab)
    for name, problem in expected.items():
        run = _ingest_measured(lab, bombs[name])
        assert run["rc"] == 1, run
        assert run["stderr"] == f"error: {bombs[name]}: {problem}\n"
        # Unbounded, fastnda inflates 2–3 GiB (4.4 GB peak); refused, the process stays near its
        # start-up size (~190 MB with pandas, SQLAlchemy and the catalogue loaded).
        assert run["peak_mb"] < 300, run
        assert run["seconds"] < 60, run
    assert catalogue_state(lab) == before


def test_a_real_ndax_still_passes_the_archive_checks(lab):
    run_id = _ingest(lab, NDAX / "TESTCELL0001-B2-2025-M50T_NewareNDA_Investigation.ndax", "C1")
    assert len(_cycles(lab, run_id)) == 8


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(lab, tmp_path):
    """A many-GB CSV would need several times its size in memory: refused from its size alone."""
    from txmdb.vocabulary import MAX_CYCLER_FILE_BYTES

    path = tmp_path / "huge.csv"
    with open(path, "wb") as fh:  # sparse: the header, then a hole up to one byte past the limit
        fh.write(P492.read_bytes()[:4096])
        fh.truncate(MAX_CYCLER_FILE_BYTES + 1)
    _refused(lab, path, "2.0 GiB, more than the 2.0 GiB limit for a cycler file")
