"""Cycling, XAS and XRD through the CLI on SQLite and PostgreSQL: real files, bad files, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DATA

NDAX = DATA / "cycling" / "neware-ndax"
NEWARE_CSV = DATA / "cycling" / "neware-csv" / "nw_regular_export_ife_example.csv"
BATTERYDATA = DATA / "cycling" / "batterydata" / "p492-13-raw.csv"
NI_FOIL = DATA / "xas" / "ni_metal_rt.xdi"


def _count(cli, table: str) -> int:
    out = cli("query", "sql", f"SELECT count(*) AS n FROM {table}", "--format", "json")
    return json.loads(out.stdout)[0]["n"]


def _store_files(cli) -> list[Path]:
    return sorted(p for p in Path(cli.store).rglob("*") if p.is_file()) if Path(cli.store).exists() else []


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "NMC", "--morphology", "rod").exit_code == 0
    assert cli("cell", "add", "C1", "--sample", "NMC", "--active-mass-mg", "10", "--upper-cutoff-v", "4.2").exit_code == 0
    return cli


def test_ingest_ndax_and_reingest(lab):
    first = lab("cycling", "ingest", NDAX / "nw4-120-6-1-36.ndax", "--cell", "C1")
    assert first.exit_code == 0, first.output
    run_id = first.stdout.strip().splitlines()[-1]
    again = lab("cycling", "ingest", NDAX / "nw4-120-6-1-36.ndax", "--cell", "C1")
    assert again.exit_code == 0 and again.stdout.strip().splitlines()[-1] == run_id
    assert "already" in again.stdout
    assert _count(lab, "cycling_runs") == 1
    cycles = json.loads(lab("query", "cycles", "--cell", "C1", "--format", "json").stdout)
    assert len(cycles) >= 4
    for row in cycles:
        assert row["sample"] == "NMC" and row["cell"] == "C1"
        if row["discharge_capacity_mah"]:
            assert row["discharge_capacity_mah_g"] == pytest.approx(row["discharge_capacity_mah"] / 0.010)
    parquet = [p for p in _store_files(lab) if p.suffix == ".parquet"]
    assert len(parquet) == 1


# (21_10_7_85.ndax is a single rest step: refused, see test_hostile_cycling.py.)
@pytest.mark.parametrize("name", ["46_1_5_60_bts16.ndax", "nda_v22.nda", "nw4-120-1-6-53.ndax"])
def test_ingest_real_neware_files(lab, name):
    result = lab("cycling", "ingest", NDAX / name, "--cell", "C1")
    assert result.exit_code == 0, result.output
    assert _count(lab, "cycles") > 0


def test_ingest_neware_csv_and_batterydata(lab):
    assert lab("cycling", "ingest", NEWARE_CSV, "--cell", "C1").exit_code == 0
    assert lab("cell", "add", "C2", "--sample", "NMC", "--active-mass-mg", "5").exit_code == 0
    assert lab("cycling", "ingest", BATTERYDATA, "--cell", "C2").exit_code == 0
    rows = json.loads(lab("query", "cycles", "--cell", "C2", "--format", "json").stdout)
    assert len(rows) > 1


def _bad_cycler_files(tmp: Path) -> dict[str, Path]:
    lines = NEWARE_CSV.read_bytes().splitlines(keepends=True)
    truncated = tmp / "truncated.csv"
    truncated.write_bytes(b"".join(lines[:2]))
    missing = tmp / "missing_columns.csv"
    missing.write_text("time_s,temperature_c\n0,25\n1,25\n2,25\n")
    garbage = tmp / "garbage.csv"
    garbage.write_bytes(bytes(range(256)) * 20)
    return {
        "empty ndax": NDAX / "empty.ndax",
        "corrupt ndax": NDAX / "Unit27_Example_Corrupt.ndax",
        "truncated csv": truncated,
        "missing columns": missing,
        "binary garbage": garbage,
        "no such file": tmp / "nope.ndax",
    }


@pytest.mark.parametrize("case", ["empty ndax", "corrupt ndax", "truncated csv", "missing columns",
                                  "binary garbage", "no such file"])
def test_bad_cycler_files(lab, tmp_path, case):
    path = _bad_cycler_files(tmp_path)[case]
    before = (_count(lab, "cycling_runs"), _count(lab, "cycles"), _store_files(lab))
    result = lab("cycling", "ingest", path, "--cell", "C1")
    assert result.exit_code == 1, (case, result.output)
    assert path.name in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert (_count(lab, "cycling_runs"), _count(lab, "cycles"), _store_files(lab)) == before


def test_bad_columns_option(lab):
    result = lab("cycling", "ingest", BATTERYDATA, "--cell", "C1", "--columns", "voltage_v")
    assert result.exit_code == 1
    assert "Traceback" not in result.output


def test_cell_without_active_mass_is_refused(lab):
    from txmdb.catalog import open_catalog
    from txmdb.db.models import Cell, Sample
    from sqlalchemy import select

    cat = open_catalog(lab.url, lab.store)
    with cat.session() as s:
        s.add(Cell(name="nomass", sample_id=s.scalar(select(Sample.id))))
    cat.engine.dispose()
    result = lab("cycling", "ingest", NDAX / "21_10_7_85.ndax", "--cell", "nomass")
    assert result.exit_code == 1
    assert "active mass" in result.stderr and "21_10_7_85.ndax" in result.stderr
    assert _count(lab, "cycling_runs") == 0


def test_xas_ni_foil(lab):
    result = lab("xas", "ingest", NI_FOIL, "--sample", "NMC", "--edge", "Ni-K", "--state", "reference")
    assert result.exit_code == 0, result.output
    rows = json.loads(lab("query", "xas", "--format", "json").stdout)
    assert len(rows) == 1
    assert rows[0]["edge_energy_ev"] == pytest.approx(8339.0, abs=0.05)
    assert rows[0]["e0_derivative_ev"] == pytest.approx(8331.5, abs=0.5)
    assert set(rows[0]) >= {"sample", "measurement_id", "edge", "mode", "state", "edge_energy_ev", "e0_derivative_ev",
                            "l3_ratio", "depth_um"}
    again = lab("xas", "ingest", NI_FOIL, "--sample", "NMC", "--edge", "Ni-K")
    assert again.stdout.strip().splitlines()[-1] == result.stdout.strip().splitlines()[-1]


def test_xas_bad_inputs(lab, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    one_col = tmp_path / "one.txt"
    one_col.write_text("\n".join(str(8300 + i) for i in range(50)))
    few_pre = tmp_path / "fewpre.txt"
    few_pre.write_text("\n".join(f"{8319 + i} {0.1 * i}" for i in range(80)))
    unsorted = tmp_path / "unsorted.txt"
    unsorted.write_text("\n".join(f"{e} 1.0" for e in [8300, 8310, 8305, 8320, 8330, 8340, 8350]))
    before = (_count(lab, "xas_measurements"), _store_files(lab))
    for path in (empty, one_col, few_pre, unsorted):
        result = lab("xas", "ingest", path, "--sample", "NMC", "--edge", "Ni-K")
        assert result.exit_code == 1, (path.name, result.output)
        assert path.name in result.stderr
        assert "Traceback" not in result.output
    wrong_mode = lab("xas", "ingest", NI_FOIL, "--sample", "NMC", "--edge", "Ni-K", "--mode", "TEY")
    assert wrong_mode.exit_code == 1
    assert (_count(lab, "xas_measurements"), _store_files(lab)) == before


def test_xrd_values_and_errors(lab):
    assert lab("xrd", "add", "--sample", "NMC", "--i003-i104", "1.8", "--a", "2.87", "--c", "14.2").exit_code == 0
    rows = json.loads(lab("query", "xrd", "--format", "json").stdout)
    assert rows[0]["i003_i104"] == 1.8 and rows[0]["c_angstrom"] == 14.2
    assert lab("xrd", "add", "--sample", "NMC", "--i003-i104", "-1").exit_code == 1
    assert lab("xrd", "add", "--sample", "NMC").exit_code == 1
    assert lab("xrd", "add", "--sample", "nobody", "--i003-i104", "1").exit_code == 1
    assert _count(lab, "xrd_results") == 1


def test_paper_cells_through_the_cli(lab, tmp_path):
    """Synthetic cells that follow Xu et al. 2020 come back through ingest + query as the paper says."""
    from txmdb.synthetic.cycling import GRAVEL_NMC, ROD_NMC, write_cycling_csv

    expected = {"rod-NMC": (94.3, 4.46, 4.43), "gravel-NMC": (89.7, 4.45, 4.37)}
    for spec, naming in ((ROD_NMC, "bdf"), (GRAVEL_NMC, "arbin")):
        assert lab("sample", "add", spec.name).exit_code == 0
        mass_mg = str(spec.active_mass_g * 1000)
        assert lab("cell", "add", f"{spec.name}-1", "--sample", spec.name, "--active-mass-mg", mass_mg,
                   "--upper-cutoff-v", "4.5").exit_code == 0
        path = write_cycling_csv(spec, tmp_path / f"{spec.name}.csv", naming=naming, records_per_step=20)
        result = lab("cycling", "ingest", path, "--cell", f"{spec.name}-1")
        assert result.exit_code == 0, result.output
    rows = json.loads(lab("query", "retention", "--cycle", "100", "--sample", "rod-NMC", "--sample", "gravel-NMC",
                          "--format", "json").stdout)
    assert [r["sample"] for r in rows] == ["gravel-NMC", "rod-NMC"]
    for row in rows:
        assert set(row) >= {"sample", "cell", "reference_cycle", "cycle", "reference_capacity_mah_g", "capacity_mah_g",
                            "retention_pct", "cycles_to_95", "cycles_to_90", "cycles_to_80"}
        assert round(row["retention_pct"], 1) == expected[row["sample"]][0]
        assert row["reference_cycle"] == 2
    cycles = json.loads(lab("query", "cycles", "--cycle", "2", "--cycle", "100", "--format", "json").stdout)
    for row in cycles:
        _, onset_start, onset_end = expected[row["sample"]]
        onset = onset_start if row["cycle"] == 2 else onset_end
        assert row["onset_discharge_voltage_v"] == pytest.approx(onset, abs=1e-6)
        assert row["voltage_drop_v"] == pytest.approx(4.5 - onset, abs=1e-6)
        assert row["coulombic_efficiency_pct"] == pytest.approx(99.5, abs=1e-3)


def test_xrd_pattern_twice_is_one_record(lab, tmp_path):
    from txmdb.synthetic.spectra import layered_xrd_pattern, write_columns

    tt, intensity = layered_xrd_pattern(wavelength_angstrom=1.5406, i003_i104=1.7)
    pattern = tmp_path / "pattern.xy"
    write_columns(pattern, [tt, intensity], names=("2theta", "intensity"))
    for _ in range(2):
        result = lab("xrd", "add", "--sample", "NMC", "--pattern", pattern, "--wavelength", "1.5406")
        assert result.exit_code == 0, result.output
    rows = json.loads(lab("query", "xrd", "--format", "json").stdout)
    assert len(rows) == 1
    assert rows[0]["i003_i104"] == pytest.approx(1.7, rel=0.03)  # Lorentzian tails beyond the windows: ~2 % high


def test_same_file_under_another_owner_is_refused(lab):
    assert lab("sample", "add", "other").exit_code == 0
    assert lab("cell", "add", "C2", "--sample", "other", "--active-mass-mg", "5").exit_code == 0
    assert lab("xas", "ingest", NI_FOIL, "--sample", "NMC", "--edge", "Ni-K").exit_code == 0
    assert lab("cycling", "ingest", NDAX / "46_1_5_60_bts16.ndax", "--cell", "C1").exit_code == 0
    before = (_count(lab, "xas_measurements"), _count(lab, "cycling_runs"), _store_files(lab))
    for args in (["xas", "ingest", NI_FOIL, "--sample", "other", "--edge", "Ni-K"],
                 ["cycling", "ingest", NDAX / "46_1_5_60_bts16.ndax", "--cell", "C2"]):
        result = lab(*args)
        assert result.exit_code == 1, result.output
        assert "already in the catalogue" in result.stderr and "another" in result.stderr
    assert (_count(lab, "xas_measurements"), _count(lab, "cycling_runs"), _store_files(lab)) == before


def test_xas_windows_are_options(lab, tmp_path):
    from txmdb.synthetic.spectra import ni_l3_spectrum, write_columns

    narrow = lab("xas", "ingest", NI_FOIL, "--sample", "NMC", "--edge", "Ni-K", "--pre", "8200:8310",
                 "--edge-window", "8330:8350")
    assert narrow.exit_code == 0, narrow.output
    rows = json.loads(lab("query", "sql", "SELECT parameters FROM xas_measurements", "--format", "json").stdout)
    params = rows[0]["parameters"]
    params = json.loads(params) if isinstance(params, str) else params
    assert params["pre"] == [8200.0, 8310.0] and params["edge"] == [8330.0, 8350.0]
    energy, y = ni_l3_spectrum(high_peak=0.6, low_peak=1.0)
    l3 = tmp_path / "l3.txt"
    write_columns(l3, [energy, y], names=("energy", "mu"))
    result = lab("xas", "ingest", l3, "--sample", "NMC", "--edge", "Ni-L3", "--mode", "FY", "--background", "844:849")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(lab("query", "xas", "--edge", "Ni-L3", "--format", "json").stdout)
    assert row["mode"] == "FY" and row["l3_ratio"] == pytest.approx(0.6, rel=0.02)
    bad = lab("xas", "ingest", l3, "--sample", "NMC", "--edge", "Ni-L3", "--l3-low", "853:")
    assert bad.exit_code == 1


def test_a_commands_ingest_keeps_the_files_base_name(lab, tmp_path):
    """source_name, shown beside file_path by the queries that show it: the base name of the path
    ingested (a symbolic link by its own name: the name the lab member gave); typed-in XRD values have none."""
    from txmdb.synthetic.spectra import layered_xrd_pattern, write_columns

    spectrum = tmp_path / "ni foil <rt>.xdi"
    spectrum.symlink_to(NI_FOIL)
    tt, intensity = layered_xrd_pattern(wavelength_angstrom=1.5406, i003_i104=1.7)
    pattern = tmp_path / "pattern.xy"
    write_columns(pattern, [tt, intensity], names=("2theta", "intensity"))
    assert lab("xas", "ingest", spectrum, "--sample", "NMC", "--edge", "Ni-K").exit_code == 0
    assert lab("xrd", "add", "--sample", "NMC", "--pattern", pattern, "--wavelength", "1.5406").exit_code == 0
    assert lab("xrd", "add", "--sample", "NMC", "--i003-i104", "1.8").exit_code == 0
    assert lab("cycling", "ingest", NDAX / "46_1_5_60_bts16.ndax", "--cell", "C1").exit_code == 0
    (xas,) = json.loads(lab("query", "xas", "--format", "json").stdout)
    assert (xas["source_name"], xas["file_path"]) == (spectrum.name, str(NI_FOIL.resolve()))
    xrd = json.loads(lab("query", "xrd", "--format", "json").stdout)
    assert [(r["source_name"], r["file_path"]) for r in xrd] == [("pattern.xy", str(pattern.resolve())), (None, None)]
    runs = lab("query", "sql", "SELECT source_name FROM cycling_runs", "--format", "csv").stdout
    assert runs.splitlines() == ["source_name", "46_1_5_60_bts16.ndax"]
    # the terminal table has the column too, beside the path
    table = lab("query", "xas").stdout.splitlines()
    assert "source_name" in table[0] and spectrum.name in table[-1]


@pytest.mark.parametrize("sent,kept", [
    ("run 7.csv", "run 7.csv"),
    ("../../etc/passwd.csv", "passwd.csv"),
    ("lab\\run 7\\cell.ndax", "cell.ndax"),
    ("/abs/olute/", None),
    ("..", None),
    ("<img src=x onerror=alert(1)>.csv", "<img src=x onerror=alert(1)>.csv"),  # text: every page escapes it
    ("é" * 255, "é" * 255),
])
def test_a_sent_file_name_is_one_files_name(sent, kept):
    """The service parameter a web upload's name goes through (txmdb.catalog._records.source_name)."""
    from txmdb.catalog._records import source_name

    assert source_name(sent) == kept


@pytest.mark.parametrize("sent,words", [
    ("run\x1b[2J.csv", "control or format characters"),
    ("a\nb.csv", "control or format characters"),
    ("invoice\u202etxt.exe", "control or format characters"),
    ("caf\udce9.csv", "not valid UTF-8"),
    ("x" * 252 + ".csv", "longer than 255 characters"),
])
def test_a_sent_file_name_that_would_act_or_cannot_be_kept_is_refused(sent, words):
    from txmdb.catalog._records import source_name
    from txmdb.errors import ParameterError

    with pytest.raises(ParameterError, match=words) as refused:
        source_name(sent)
    assert refused.value.parameters == ("source_name",)
    assert "\x1b" not in str(refused.value) and "\u202e" not in str(refused.value)  # quoted escaped
