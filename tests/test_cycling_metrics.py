"""Per-cycle metrics and retention on hand-built record tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from txmdb.analysis.cycling import CYCLE_COLUMNS, cycle_metrics, retention
from txmdb.io.cycling import RECORD_COLUMNS


def _step(kind, t0, seconds, current, v0, v1, *, n=11):
    t = np.linspace(0.0, seconds, n)
    v = np.linspace(v0, v1, n)
    return dict(time_s=t0 + t, voltage_v=v, current_a=np.full(n, current),
                step_type=np.full(n, kind))


def _records(steps_by_cycle, *, with_capacity=False):
    """Record table from [(cycle, [step dicts])]; capacity NaN unless asked for."""
    parts, step_no = [], 0
    for cycle, steps in steps_by_cycle:
        for s in steps:
            step_no += 1
            part = pd.DataFrame(s)
            part["cycle"] = cycle
            part["step"] = step_no
            parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    for col in RECORD_COLUMNS[6:]:
        frame[col] = np.nan
    if with_capacity:
        for kind in ("charge", "discharge"):
            mask = frame["step_type"] == kind
            dt = frame.groupby("step")["time_s"].transform(lambda t: t - t.iloc[0])
            frame[f"{kind}_capacity_ah"] = np.where(mask, dt * frame["current_a"].abs() / 3600, 0)
    frame["step_type"] = pd.Categorical(frame["step_type"],
                                        categories=["charge", "discharge", "rest"])
    return frame[RECORD_COLUMNS]


def _two_cycles():
    # Cycle: 1 h charge at +1 mA from 3.5→4.5 V (mean 4.0), CV 0.5 h at 0.2 mA and 4.5 V,
    # rest, 1 h discharge at −1 mA 4.3→3.3 V (mean 3.8), rest.
    out, t = [], 0.0
    for cycle, onset in ((1, 4.3), (2, 4.25)):
        steps = [
            _step("charge", t, 3600, 1e-3, 3.5, 4.5),
            _step("charge", t + 3600, 1800, 2e-4, 4.5, 4.5),
            _step("rest", t + 5400, 600, 0.0, 4.45, 4.35),
            _step("discharge", t + 6000, 3600, -1e-3, onset, onset - 1.0),
            _step("rest", t + 9600, 600, 0.0, 3.4, 3.5),
        ]
        out.append((cycle, steps))
        t += 10200
    return out


def test_known_cycle_values():
    m = cycle_metrics(_records(_two_cycles()), active_mass_g=0.005, upper_cutoff_v=None)
    assert list(m.columns) == CYCLE_COLUMNS
    assert list(m["cycle"]) == [1, 2]
    c1 = m.iloc[0]
    assert c1["charge_capacity_mah"] == pytest.approx(1.0 + 0.1)  # CV counts toward charge
    assert c1["discharge_capacity_mah"] == pytest.approx(1.0)
    assert c1["charge_capacity_mah_g"] == pytest.approx(1.1 / 0.005)
    assert c1["discharge_capacity_mah_g"] == pytest.approx(200.0)
    assert c1["coulombic_efficiency_pct"] == pytest.approx(100 / 1.1)
    assert c1["charge_energy_mwh"] == pytest.approx(4.0 + 0.45)
    assert c1["discharge_energy_mwh"] == pytest.approx(3.8)
    assert c1["mean_charge_voltage_v"] == pytest.approx(4.45 / 1.1)
    assert c1["mean_discharge_voltage_v"] == pytest.approx(3.8)
    assert c1["delta_v"] == pytest.approx(4.45 / 1.1 - 3.8)
    assert c1["onset_discharge_voltage_v"] == pytest.approx(4.3)
    assert c1["voltage_drop_v"] == pytest.approx(4.5 - 4.3)  # highest charge voltage
    assert c1["end_charge_voltage_v"] == pytest.approx(4.5)
    assert c1["end_discharge_voltage_v"] == pytest.approx(3.3)
    assert c1["duration_s"] == pytest.approx(10200)
    assert m.iloc[1]["onset_discharge_voltage_v"] == pytest.approx(4.25)


def test_ce_convention_cutoff_and_mass():
    records = _records(_two_cycles())
    m = cycle_metrics(records, active_mass_g=None, upper_cutoff_v=4.6,
                      ce_convention="charge/discharge")
    assert m["coulombic_efficiency_pct"].iloc[0] == pytest.approx(110.0)
    assert m["voltage_drop_v"].tolist() == pytest.approx([0.3, 0.35])
    assert m["charge_capacity_mah_g"].isna().all() and m["discharge_capacity_mah_g"].isna().all()
    with pytest.raises(ValueError, match="unknown convention"):
        cycle_metrics(records, active_mass_g=None, upper_cutoff_v=None, ce_convention="ratio")
    with pytest.raises(ValueError, match="positive"):
        cycle_metrics(records, active_mass_g=-1.0, upper_cutoff_v=None)


def test_rest_current_never_counts():
    cycles = _two_cycles()
    cycles[0][1][2]["current_a"][:] = 5e-4  # a "rest" step with a (bogus) current
    m = cycle_metrics(_records(cycles), active_mass_g=None, upper_cutoff_v=None)
    assert m["charge_capacity_mah"].iloc[0] == pytest.approx(1.1)


def test_cycler_capacity_preferred_over_integration():
    records = _records(_two_cycles(), with_capacity=True)
    # Halve the recorded current: integration would change, the cycler's counters do not.
    records["current_a"] *= 0.5
    m = cycle_metrics(records, active_mass_g=None, upper_cutoff_v=None)
    assert m["discharge_capacity_mah"].tolist() == pytest.approx([1.0, 1.0])
    assert m["charge_capacity_mah"].tolist() == pytest.approx([1.1, 1.1])


def test_cycle_with_discharge_only():
    t = 0.0
    steps = [(1, [_step("rest", t, 60, 0.0, 3.6, 3.6),
                  _step("discharge", 60, 3600, -1e-3, 3.6, 3.0)]),
             (2, [_step("charge", 3660, 3600, 1e-3, 3.0, 4.2),
                  _step("discharge", 7260, 3600, -1e-3, 4.1, 3.0)])]
    m = cycle_metrics(_records(steps), active_mass_g=None, upper_cutoff_v=None)
    first = m.iloc[0]
    assert np.isnan(first["charge_capacity_mah"]) and first["discharge_capacity_mah"] == pytest.approx(1)
    assert np.isnan(first["coulombic_efficiency_pct"]) and np.isnan(first["mean_charge_voltage_v"])
    assert np.isnan(first["voltage_drop_v"]) and np.isnan(first["end_charge_voltage_v"])
    assert m.iloc[1]["coulombic_efficiency_pct"] == pytest.approx(100)


def test_empty_records():
    empty = pd.DataFrame({c: [] for c in RECORD_COLUMNS})
    with pytest.raises(ValueError, match="no records"):
        cycle_metrics(empty, active_mass_g=None, upper_cutoff_v=None)


def _cycle_table(capacities, mass=True):
    q = np.asarray(capacities, float)
    return pd.DataFrame({"cycle": np.arange(1, len(q) + 1), "discharge_capacity_mah": q * 0.005,
                         "discharge_capacity_mah_g": q if mass else np.nan})


def test_retention_and_cycles_to_thresholds():
    q = [180, 200, 199, 192, 185, 170, 150]  # cycle 2 = reference
    r = retention(_cycle_table(q), cycle=6)
    assert r["reference_capacity_mah_g"] == 200 and r["capacity_mah_g"] == 170
    assert r["retention_pct"] == pytest.approx(85.0)
    assert (r["cycles_to_95"], r["cycles_to_90"], r["cycles_to_80"]) == (5, 6, 7)
    never = retention(_cycle_table([200, 200, 199]), cycle=3)
    assert never["cycles_to_95"] is None and never["cycles_to_80"] is None
    # Cycle 1 (before the reference) below the thresholds does not count.
    assert retention(_cycle_table([100, 200, 199]), cycle=3)["cycles_to_80"] is None
    ref3 = retention(_cycle_table(q), cycle=6, reference_cycle=3)
    assert ref3["retention_pct"] == pytest.approx(100 * 170 / 199)


def test_retention_without_mass_uses_mah():
    r = retention(_cycle_table([180, 200, 190], mass=False), cycle=3)
    assert r["retention_pct"] == pytest.approx(95.0) and np.isnan(r["capacity_mah_g"])


def test_retention_missing_cycles():
    with pytest.raises(ValueError, match="cycle 9 is not in the data"):
        retention(_cycle_table([200, 200]), cycle=9)
    with pytest.raises(ValueError, match="reference cycle"):
        retention(_cycle_table([200]), cycle=1)
    with pytest.raises(ValueError, match="no discharge capacity"):
        retention(_cycle_table([200, 0, 100]), cycle=3)


def test_unfinished_last_cycle_does_not_count_as_capacity_loss():
    steps = [(c, [_step("charge", 7200 * (c - 1), 3600, 1e-3, 3.0, 4.2),
                  _step("discharge", 7200 * (c - 1) + 3600, 3600, -1e-3, 4.1, 3.0)]) for c in (1, 2, 3)]
    steps.append((4, [_step("charge", 7200 * 3, 1800, 1e-3, 3.0, 4.0)]))  # the test stopped mid-charge
    m = cycle_metrics(_records(steps), active_mass_g=0.001, upper_cutoff_v=4.2)
    assert np.isnan(m.iloc[3]["discharge_capacity_mah"])
    result = retention(m, cycle=3, reference_cycle=2)
    assert result["retention_pct"] == pytest.approx(100)
    assert result["cycles_to_95"] is None and result["cycles_to_80"] is None
