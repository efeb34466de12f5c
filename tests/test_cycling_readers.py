"""Cycler readers: cross-checks against files and summaries written by others, and bad input."""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from txmdb.analysis.cycling import cycle_metrics
from txmdb.errors import InputError
from txmdb.io.cycling import (
    RECORD_COLUMNS,
    TruncatedFileWarning,
    detect_format,
    parse_column_map,
    read_cycler_file,
)
from tests.conftest import DATA

CYCLING = DATA / "cycling"
NDAX = CYCLING / "neware-ndax"
NEWARE_CSV = CYCLING / "neware-csv" / "nw_regular_export_ife_example.csv"
P492_RAW = CYCLING / "batterydata" / "p492-13-raw.csv"
P492_SUMMARY = CYCLING / "batterydata" / "p492-13-summary.csv"


REL = 0.005  # the cross-check tolerance: 0.5 %


def _close(ours, theirs, rel=REL, atol=0.0):
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    scale = np.maximum(np.abs(theirs), atol / rel if rel else 0)
    return np.all(np.abs(ours - theirs) <= rel * scale + atol)


# --------------------------------------------------------------------------- Neware binary

GOLDEN = sorted(
    p for p in NDAX.glob("*.nd*")
    if p.with_suffix(".parquet").exists() and p.name not in ("empty.ndax",
                                                             "Unit27_Example_Corrupt.ndax")
)


def _charge_led_cycles(step_types: pd.Series) -> np.ndarray:
    """The golden's cycle numbers renumbered by our rule: a charge after a discharge starts
    a cycle (computed here from the golden's own step names, independently of fastnda)."""
    names = step_types.astype(str).str.lower()
    code = np.where(names.str.contains("dchg"), -1.0,
                    np.where(names.str.contains("chg"), 1.0, np.nan))
    active = pd.Series(code).ffill().to_numpy()
    prev = np.r_[np.nan, active[:-1]]
    return 1 + np.cumsum((code == 1) & (prev == -1))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_neware_binary_matches_golden_parquet(path):
    golden = pd.read_parquet(path.with_suffix(".parquet"))
    rec = read_cycler_file(path)
    frame = rec.frame
    assert rec.file_format == path.suffix[1:]
    assert rec.has_capacity
    assert list(frame.columns) == RECORD_COLUMNS
    assert len(frame) == len(golden)
    assert _close(frame["voltage_v"], golden["Voltage(mV)"] / 1e3, atol=1e-4)
    assert _close(frame["current_a"], golden["Current(uA)"] / 1e6, atol=1e-6)
    # Golden capacity is per step and unsigned (mA·s); ours per step, split by direction.
    ours_q = frame["charge_capacity_ah"] + frame["discharge_capacity_ah"]
    active = frame["step_type"].astype(str).ne("rest").to_numpy()
    assert _close(ours_q[active], golden["Capacity(mAs)"][active] / 3.6e6, atol=1e-7)
    assert np.all(ours_q[~active] == 0)
    ours_e = frame["charge_energy_wh"] + frame["discharge_energy_wh"]
    assert _close(ours_e[active], golden["Energy(mWs)"][active] / 3.6e6, atol=1e-6)
    assert _close(frame["time_s"], golden["Total Time"], atol=1e-3)
    assert np.array_equal(frame["cycle"].to_numpy(), _charge_led_cycles(golden["Step Type"]))
    # Where the cycler's own loops are charge-led the numbers are the cycler's own.
    if path.name in ("46_1_5_60_bts16.ndax", "TESTCELL0001-Test_Data_Collection_Ndc17.ndax",
                     "nda_v22.nda", "21_10_7_85.ndax"):
        assert np.array_equal(frame["cycle"].to_numpy(), golden["Cycle Index"].to_numpy())


def test_neware_binary_facts_from_sources():
    big = read_cycler_file(NDAX / "nw4-120-1-6-53.ndax").frame
    assert len(big) == 18_700 and big["cycle"].nunique() == 160
    assert big["voltage_v"].min() > 1.6 and big["voltage_v"].max() < 5.01
    cell = read_cycler_file(NDAX / "TESTCELL0001-B2-2025-M50T_NewareNDA_Investigation.ndax")
    assert len(cell.frame) == 77_745 and cell.frame["cycle"].nunique() == 8


def test_ndax_cell_starting_charged_then_discharging():
    """nw4-120-6-1-36 starts near the top (4.13 V): a short top-up charge, then discharge."""
    frame = read_cycler_file(NDAX / "nw4-120-6-1-36.ndax").frame
    m = cycle_metrics(frame, active_mass_g=None, upper_cutoff_v=4.2)
    assert list(m["cycle"]) == [1, 2, 3, 4, 5]
    first = m.iloc[0]
    assert first["charge_capacity_mah"] < 5 < 38 < first["discharge_capacity_mah"] < 39
    assert first["coulombic_efficiency_pct"] > 500  # true to the definition, flagged by size
    assert m["coulombic_efficiency_pct"].iloc[1:].between(99.5, 101).all()
    # CV steps count toward charge: CC alone is ~33.3 mAh, CC+CV ~37.8 mAh.
    assert m["charge_capacity_mah"].iloc[1:].between(37.5, 38.2).all()
    assert m["end_discharge_voltage_v"].between(2.74, 2.76).all()
    assert np.allclose(m["voltage_drop_v"], 4.2 - m["onset_discharge_voltage_v"])


def test_cell_starting_with_a_discharge_has_no_first_cycle_ce():
    frame = read_cycler_file(NDAX / "TESTCELL0001-B2-2025-M50T_NewareNDA_Investigation.ndax").frame
    m = cycle_metrics(frame, active_mass_g=None, upper_cutoff_v=None)
    first = m.iloc[0]
    assert np.isnan(first["charge_capacity_mah"]) and first["discharge_capacity_mah"] > 1000
    assert np.isnan(first["coulombic_efficiency_pct"]) and np.isnan(first["voltage_drop_v"])
    assert m["coulombic_efficiency_pct"].iloc[1:].between(98, 100.5).all()


# --------------------------------------------------------------------------- Neware CSV


def _neware_tables(path):
    """Cycle and step rows of the export, parsed here with the csv module alone."""
    cycles, steps = [], []
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    cycle_header, step_header = rows[0], rows[1][1:]
    for row in rows[3:]:
        if row[0]:
            cycles.append(dict(zip(cycle_header, row[: len(cycle_header)])))
            if len(row) > len(cycle_header):
                steps.append(dict(zip(step_header, row[len(cycle_header):]), cycle=row[0]))
        elif row[1]:
            steps.append(dict(zip(step_header, row[1:]), cycle=cycles[-1]["Cycle Index"]))
    return pd.DataFrame(cycles), pd.DataFrame(steps)


def test_neware_csv_capacities_match_its_cycle_rows():
    rec = read_cycler_file(NEWARE_CSV)
    assert rec.file_format == "neware-csv" and rec.has_capacity
    m = cycle_metrics(rec.frame, active_mass_g=None, upper_cutoff_v=None)
    cycles, _ = _neware_tables(NEWARE_CSV)
    assert list(m["cycle"]) == cycles["Cycle Index"].astype(int).tolist()
    assert _close(m["charge_capacity_mah"], cycles["Chg. Cap.(Ah)"].astype(float) * 1e3)
    assert _close(m["discharge_capacity_mah"], cycles["DChg. Cap.(Ah)"].astype(float) * 1e3)
    assert _close(m["coulombic_efficiency_pct"], cycles["Chg.-DChg. Eff(%)"].astype(float))
    assert _close(m["charge_energy_mwh"], cycles["Chg. Energy(Wh)"].astype(float) * 1e3)
    assert _close(m["discharge_energy_mwh"], cycles["DChg. Energy(Wh)"].astype(float) * 1e3)
    # SOURCES.md: first cycle row Chg. Cap. 0.02256 Ah, DChg. Cap. 0.33067 Ah.
    assert m["charge_capacity_mah"].iloc[0] == pytest.approx(22.56, abs=0.01)
    assert m["discharge_capacity_mah"].iloc[0] == pytest.approx(330.67, abs=0.01)


def test_neware_csv_onset_voltages_match_its_step_rows():
    frame = read_cycler_file(NEWARE_CSV).frame
    m = cycle_metrics(frame, active_mass_g=None, upper_cutoff_v=None)
    _, steps = _neware_tables(NEWARE_CSV)
    dchg = steps[steps["Step Type"] == "CC DChg"]
    assert _close(m["onset_discharge_voltage_v"], dchg["Oneset Volt.(V)"].astype(float))
    assert _close(m["end_discharge_voltage_v"], dchg["End Voltage(V)"].astype(float))
    chg = steps[steps["Step Type"] == "CC Chg"]
    assert _close(m["end_charge_voltage_v"], chg["End Voltage(V)"].astype(float))
    # Step types and record counts: 81 steps, charge/discharge/rest only.
    assert frame["step"].nunique() == len(steps) == 81
    assert set(frame["step_type"].astype(str)) == {"charge", "discharge", "rest"}


# --------------------------------------------------------------------------- batterydata


def _complete_cycles(frame: pd.DataFrame) -> list[int]:
    """Cycles with one charge run and one discharge run (rests aside): the cycles where the
    publisher's Q = max of the cycler's cumulative column equals the cycle's throughput."""
    steps = frame.groupby("step").agg(cycle=("cycle", "first"), kind=("step_type", "first"))
    steps = steps[steps["kind"].astype(str) != "rest"]
    out = []
    for cycle, group in steps.groupby("cycle"):
        kinds = group["kind"].astype(str).tolist()
        runs = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
        if sorted(runs) == ["charge", "discharge"]:
            out.append(int(cycle))
    return out


def test_batterydata_raw_matches_publisher_summary():
    rec = read_cycler_file(P492_RAW)
    assert rec.file_format == "csv" and rec.has_capacity
    m = cycle_metrics(rec.frame, active_mass_g=None, upper_cutoff_v=None).set_index("cycle")
    summary = pd.read_csv(P492_SUMMARY).set_index("Cycle_Index")
    complete = _complete_cycles(rec.frame)
    assert complete == [2, 6, 9]
    s, o = summary.loc[complete], m.loc[complete]
    assert _close(o["charge_capacity_mah"], s["Q_chg"] * 1e3, rel=1e-4)
    assert _close(o["discharge_capacity_mah"], s["Q_dis"] * 1e3, rel=1e-4)
    assert _close(o["coulombic_efficiency_pct"], s["CE"] * 100, rel=1e-4)
    assert _close(o["charge_energy_mwh"], s["E_chg"] * 1e3, rel=1e-4)
    assert _close(o["discharge_energy_mwh"], s["E_dis"] * 1e3, rel=1e-4)
    assert _close(o["duration_s"], s["tsecs_cycle"], rel=1e-4)
    # The summary's DeltaV is not energy/capacity-based (nor computable from this decimated
    # raw file): ours is mean(E/Q) charge − discharge; only the sign and size agree.
    assert (o["delta_v"] > 0).all() and (o["delta_v"] < 0.5).all()


def test_column_map_and_units(tmp_path):
    """Unfamiliar names in milli-units, mapped with a --columns text, give the same metrics."""
    raw = pd.read_csv(P492_RAW)
    renamed = pd.DataFrame({
        "Zeit": raw["Time_s"], "U": raw["Voltage_V"], "I(mA)": raw["Current_A"] * 1e3,
        "Zyklus": raw["Cycle_Index"], "Schritt": raw["Step"],
        "Qc(mAh)": raw["Charge_Capacity_Ah"] * 1e3, "Qd(mAh)": raw["Discharge_Capacity_Ah"] * 1e3,
    })
    path = tmp_path / "custom.csv"
    renamed.to_csv(path, index=False)
    with pytest.raises(InputError, match="missing needed column"):
        read_cycler_file(path)
    mapping = parse_column_map("time_s=Zeit, voltage_v=U,current_a=I(mA),cycle=Zyklus,"
                               "step=Schritt,charge_capacity_ah=Qc(mAh),"
                               "discharge_capacity_ah=Qd(mAh)")
    rec = read_cycler_file(path, columns=mapping)
    ours = cycle_metrics(rec.frame, active_mass_g=None, upper_cutoff_v=None)
    ref = cycle_metrics(read_cycler_file(P492_RAW).frame, active_mass_g=None, upper_cutoff_v=None)
    cols = ["charge_capacity_mah", "discharge_capacity_mah", "onset_discharge_voltage_v"]
    assert np.allclose(ours[cols].fillna(-1), ref[cols].fillna(-1), rtol=1e-9)
    assert rec.column_map["current_a"] == "I(mA)"


def test_opposite_sign_convention_is_normalised(tmp_path):
    raw = pd.read_csv(P492_RAW)
    raw["Current_A"] = -raw["Current_A"]
    path = tmp_path / "negative_charge.csv"
    raw.to_csv(path, index=False)
    frame = read_cycler_file(path).frame
    charging = frame["step_type"].astype(str) == "charge"
    assert (frame.loc[charging, "current_a"] >= 0).all()
    assert (frame.loc[frame["step_type"].astype(str) == "discharge", "current_a"] <= 0).all()


def test_integrates_current_when_file_has_no_capacity(tmp_path):
    frame = read_cycler_file(NEWARE_CSV).frame
    bdf = pd.DataFrame({"test_time_second": frame["time_s"], "voltage_volt": frame["voltage_v"],
                        "current_ampere": frame["current_a"], "cycle_count": frame["cycle"]})
    path = tmp_path / "bdf.csv"
    bdf.to_csv(path, index=False)
    rec = read_cycler_file(path)
    assert not rec.has_capacity and rec.frame["charge_capacity_ah"].isna().all()
    ours = cycle_metrics(rec.frame, active_mass_g=None, upper_cutoff_v=None)
    cycles, _ = _neware_tables(NEWARE_CSV)
    # 2 s records, integrated by trapezoid: within 0.5 % of the cycler's own counters.
    assert _close(ours["charge_capacity_mah"], cycles["Chg. Cap.(Ah)"].astype(float) * 1e3)
    assert _close(ours["discharge_capacity_mah"], cycles["DChg. Cap.(Ah)"].astype(float) * 1e3)


# --------------------------------------------------------------------------- detection


def test_format_detected_from_content_not_name(tmp_path):
    for source, expected in ((NDAX / "nw4-120-6-1-36.ndax", "ndax"),
                             (NDAX / "nda_v22.nda", "nda"),
                             (NEWARE_CSV, "neware-csv"), (P492_RAW, "csv")):
        link = tmp_path / f"{expected}.dat"
        os.symlink(source, link)
        assert detect_format(link) == expected
        assert read_cycler_file(link).file_format == expected


def test_explicit_format_mismatch(tmp_path):
    with pytest.raises(InputError, match="not a Neware ndax file"):
        read_cycler_file(P492_RAW, file_format="ndax")
    with pytest.raises(InputError, match="not a CSV"):
        read_cycler_file(NDAX / "nda_v22.nda", file_format="csv")
    with pytest.raises(InputError, match="unknown format"):
        read_cycler_file(P492_RAW, file_format="xlsx")


# --------------------------------------------------------------------------- bad input


def _raises_naming(path, match, **kw):
    with pytest.raises(InputError, match=match) as info:
        read_cycler_file(path, **kw)
    assert str(path) in str(info.value)
    return info.value


def test_empty_ndax():
    _raises_naming(NDAX / "empty.ndax", "no records")


def test_corrupt_ndax(caplog):
    err = _raises_naming(NDAX / "Unit27_Example_Corrupt.ndax", "damaged Neware ndax")
    assert "TestInfo.xml" in err.problem
    # fastnda's traceback is captured, not printed through logging.
    assert not [r for r in caplog.records if r.name.startswith("fastnda")]


def test_truncated_csv(tmp_path):
    text = P492_RAW.read_text()
    lines = text.splitlines(keepends=True)
    # Header only: no usable records → error.
    header_only = tmp_path / "header_only.csv"
    header_only.write_text(lines[0])
    _raises_naming(header_only, "no records")
    # Cut mid-line: the partial last row is dropped with a warning, the rest is read.
    cut = tmp_path / "cut.csv"
    body = "".join(lines[:501])
    cut.write_text(body + lines[501][: len(lines[501]) // 3])
    with pytest.warns(TruncatedFileWarning, match="truncated final line"):
        rec = read_cycler_file(cut)
    assert len(rec.frame) == 500
    # Cut right after a separator: cells missing too.
    cut2 = tmp_path / "cut2.csv"
    cut2.write_text(body + lines[501].split(",")[0] + ",")
    with pytest.warns(TruncatedFileWarning):
        assert len(read_cycler_file(cut2).frame) == 500


def test_truncated_neware_csv(tmp_path):
    text = NEWARE_CSV.read_text()
    path = tmp_path / "nw_cut.csv"
    path.write_text("\n".join(text.splitlines()[:3]) + "\n")
    _raises_naming(path, "no records")


def test_neware_csv_garbage(tmp_path):
    lines = NEWARE_CSV.read_text().splitlines()
    bad_volt = list(lines)
    cells = bad_volt[20].split(",")
    cells[6] = "4.3x"
    bad_volt[20] = ",".join(cells)
    path = tmp_path / "nw_bad_voltage.csv"
    path.write_text("\n".join(bad_volt) + "\n")
    _raises_naming(path, "non-numeric value '4.3x' in column 'Voltage\\(V\\)'")
    bad_time = list(lines)
    cells = bad_time[20].split(",")
    cells[4] = "00:zz:10"
    bad_time[20] = ",".join(cells)
    path = tmp_path / "nw_bad_time.csv"
    path.write_text("\n".join(bad_time) + "\n")
    _raises_naming(path, "unreadable 'Total Time' values")


def test_csv_missing_needed_columns(tmp_path):
    path = tmp_path / "no_current.csv"
    pd.read_csv(P492_RAW).drop(columns=["Current_A"]).to_csv(path, index=False)
    _raises_naming(path, r"missing needed column\(s\) for current_a")


def test_csv_non_numeric_garbage(tmp_path):
    raw = pd.read_csv(P492_RAW).astype({"Voltage_V": object})
    raw.loc[10, "Voltage_V"] = "3.2x"
    path = tmp_path / "garbage.csv"
    raw.to_csv(path, index=False)
    _raises_naming(path, r"non-numeric value '3.2x' in column 'Voltage_V' \(line 12\)")


def test_non_csv_binary(tmp_path):
    path = tmp_path / "random.csv"
    path.write_bytes(np.random.default_rng(0).bytes(4096) + b"\x00")
    _raises_naming(path, "binary content")
    zipped = tmp_path / "archive.ndax"
    import zipfile

    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("hello.txt", "not a cycler file")
    _raises_naming(zipped, "not a Neware .ndax")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    _raises_naming(empty, "empty file")
    _raises_naming(tmp_path / "absent.csv", "cannot open")


def test_unknown_columns_key(tmp_path):
    with pytest.raises(InputError, match="unknown key 'volts'") as info:
        parse_column_map("volts=Voltage_V")
    assert info.value.source == "--columns"
    for bad in ("voltage_v", "voltage_v=", "=X", "voltage_v=A,voltage_v=B", ""):
        with pytest.raises(InputError):
            parse_column_map(bad)
    assert parse_column_map("voltage_v=U, current_a = I (mA) ") == {
        "voltage_v": "U", "current_a": "I (mA)"}
    _raises_naming(P492_RAW, "unknown column key", columns={"volts": "Voltage_V"})
    _raises_naming(P492_RAW, "not in the file", columns={"voltage_v": "Volts"})


def test_no_warnings_on_clean_files():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_cycler_file(P492_RAW)
        read_cycler_file(NEWARE_CSV)
        read_cycler_file(NDAX / "nw4-120-1-6-53.ndax")
