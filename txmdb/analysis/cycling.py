"""Per-cycle metrics and capacity retention from a normalised cycler record table.

Definitions (DESIGN §5), for each cycle of the record table of
:func:`txmdb.io.cycling.read_cycler_file`:

* charge / discharge capacity — sum over the cycle's charge (CC, CV, CCCV …) / discharge
  steps of the capacity passed in the step: the cycler's own value at the step's last
  record, or, where the file has none, the trapezoid integral of current over time within
  the step. Rest steps count toward neither. mAh/g = mAh / active mass (NaN without a mass).
* coulombic efficiency — discharge/charge × 100 of the same cycle (``"charge/discharge"``
  for the inverse); NaN when the denominator is zero (a cycle that has only a discharge,
  e.g. the first cycle of a cell that starts discharged).
* energies — like capacities, with ∫V·I dt; mean charge / discharge voltage = energy /
  capacity; ΔV = mean charge − mean discharge voltage.
* onset discharge voltage — voltage of the first record of the cycle's first discharge step.
* voltage drop — upper cut-off − onset discharge voltage. The upper cut-off is the
  ``upper_cutoff_v`` argument (the protocol's value, preferred); without it, the highest
  voltage recorded in the cycle's charge steps (for CC and CC-CV protocols that is the
  cut-off the cycler stopped at, within its voltage resolution).
* end charge / discharge voltage — last record of the cycle's last charge / discharge step.
* duration — time from the cycle's first to its last record.

Retention(N) = Q_dis(N) / Q_dis(reference) × 100 (:func:`retention`).

Everything is vectorised over records (``numpy`` reductions per step, then a small groupby
over steps), so a million records take well under a second.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from txmdb.db.models import Cycle, data_columns
from txmdb.vocabulary import CE_CONVENTIONS

#: Columns of the per-cycle table: the catalogue's ``cycles`` table declares them.
CYCLE_COLUMNS = list(data_columns(Cycle))
RETENTION_THRESHOLDS = (95, 90, 80)


def _step_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per step: cycle, type, first/last time and voltage, capacity and energy."""
    step = records["step"].to_numpy()
    if len(step) == 0:
        raise ValueError("no records")
    starts = np.r_[True, step[1:] != step[:-1]]
    first = np.flatnonzero(starts)
    last = np.r_[first[1:] - 1, len(step) - 1]
    seg = np.cumsum(starts) - 1

    t = records["time_s"].to_numpy(dtype=float)
    v = records["voltage_v"].to_numpy(dtype=float)
    i = records["current_a"].to_numpy(dtype=float)

    # Trapezoid within each step (the interval into a step's first record belongs to no
    # step); negative time steps (clock resets) count as zero.
    dt = np.r_[0.0, np.clip(np.diff(t), 0.0, None)]
    dt[first] = 0.0
    i_mid = np.r_[0.0, 0.5 * (i[1:] + i[:-1])]
    p = v * i
    p_mid = np.r_[0.0, 0.5 * (p[1:] + p[:-1])]
    n_seg = len(first)
    q_int = np.bincount(seg, weights=i_mid * dt, minlength=n_seg) / 3600.0
    e_int = np.bincount(seg, weights=p_mid * dt, minlength=n_seg) / 3600.0

    steps = pd.DataFrame({
        "cycle": records["cycle"].to_numpy()[first],
        "kind": records["step_type"].iloc[first].astype(str).to_numpy(),
        "t_first": t[first],
        "t_last": t[last],
        "v_first": v[first],
        "v_last": v[last],
        "v_max": np.maximum.reduceat(v, first),
    })
    charge = steps["kind"].to_numpy() == "charge"
    discharge = steps["kind"].to_numpy() == "discharge"
    sign = np.where(charge, 1.0, np.where(discharge, -1.0, 0.0))
    for quantity, integral in (("capacity_ah", q_int), ("energy_wh", e_int)):
        own_chg = records[f"charge_{quantity}"].to_numpy(dtype=float)[last]
        own_dis = records[f"discharge_{quantity}"].to_numpy(dtype=float)[last]
        own = np.where(charge, own_chg, np.where(discharge, own_dis, 0.0))
        # The cycler's value where it has one, else the integral (signed into the direction).
        steps[quantity] = np.where(np.isnan(own), sign * integral, own)
    return steps


def cycle_metrics(
    records: pd.DataFrame,
    *,
    active_mass_g: float | None,
    upper_cutoff_v: float | None,
    ce_convention: str = "discharge/charge",
) -> pd.DataFrame:
    """Per-cycle metrics of a record table (definitions in the module docstring).

    Parameters
    ----------
    records : pandas.DataFrame
        Record table with :data:`txmdb.io.cycling.RECORD_COLUMNS`.
    active_mass_g : float or None
        Active mass in g for the mAh/g columns (NaN when None).
    upper_cutoff_v : float or None
        Upper voltage cut-off for the voltage drop; None uses each cycle's highest charge
        voltage.
    ce_convention : {"discharge/charge", "charge/discharge"}
        Coulombic efficiency convention (default for cathode half cells).

    Returns
    -------
    pandas.DataFrame
        One row per cycle (ascending), columns :data:`CYCLE_COLUMNS`.

    Raises
    ------
    ValueError
        For an unknown CE convention, a non-positive active mass or an empty table.
    """
    if ce_convention not in CE_CONVENTIONS:
        raise ValueError(f"unknown convention {ce_convention!r} (known: {', '.join(CE_CONVENTIONS)})")
    if active_mass_g is not None and not (active_mass_g > 0 and np.isfinite(active_mass_g)):
        raise ValueError(f"active mass {active_mass_g} g is not a positive number of grams")
    steps = _step_table(records)

    by_cycle = steps.groupby("cycle", sort=True)
    out = pd.DataFrame(index=pd.Index(sorted(steps["cycle"].unique()), name="cycle"))
    out["t_first"] = by_cycle["t_first"].min()
    out["t_last"] = by_cycle["t_last"].max()
    chg = steps[steps["kind"] == "charge"].groupby("cycle", sort=True)
    dis = steps[steps["kind"] == "discharge"].groupby("cycle", sort=True)
    # A cycle without a charge (or discharge) step has no such capacity (NaN), not 0 mAh:
    # an unfinished last cycle must not count as a cycle that lost all its capacity.
    q_chg = chg["capacity_ah"].sum().reindex(out.index)
    q_dis = dis["capacity_ah"].sum().reindex(out.index)
    e_chg = chg["energy_wh"].sum().reindex(out.index)
    e_dis = dis["energy_wh"].sum().reindex(out.index)

    result = pd.DataFrame(index=out.index)
    result["charge_capacity_mah"] = q_chg * 1e3
    result["discharge_capacity_mah"] = q_dis * 1e3
    mass = np.nan if active_mass_g is None else float(active_mass_g)
    result["charge_capacity_mah_g"] = result["charge_capacity_mah"] / mass
    result["discharge_capacity_mah_g"] = result["discharge_capacity_mah"] / mass
    num, den = (q_dis, q_chg) if ce_convention == "discharge/charge" else (q_chg, q_dis)
    result["coulombic_efficiency_pct"] = 100.0 * num / den.where(den > 0)
    result["charge_energy_mwh"] = e_chg * 1e3
    result["discharge_energy_mwh"] = e_dis * 1e3
    result["mean_charge_voltage_v"] = e_chg / q_chg.where(q_chg > 0)
    result["mean_discharge_voltage_v"] = e_dis / q_dis.where(q_dis > 0)
    result["delta_v"] = result["mean_charge_voltage_v"] - result["mean_discharge_voltage_v"]
    result["onset_discharge_voltage_v"] = dis["v_first"].first().reindex(out.index)
    cutoff = (chg["v_max"].max().reindex(out.index) if upper_cutoff_v is None
              else pd.Series(float(upper_cutoff_v), index=out.index))
    result["voltage_drop_v"] = cutoff - result["onset_discharge_voltage_v"]
    result["end_charge_voltage_v"] = chg["v_last"].last().reindex(out.index)
    result["end_discharge_voltage_v"] = dis["v_last"].last().reindex(out.index)
    result["duration_s"] = out["t_last"] - out["t_first"]
    result = result.reset_index()
    result["cycle"] = result["cycle"].astype(np.int64)
    return result[CYCLE_COLUMNS].astype({c: float for c in CYCLE_COLUMNS[1:]})


def retention_curve(cycles: pd.DataFrame, *, reference_cycle: int = 2) -> pd.Series:
    """Retention in % of every cycle: Q_dis(N) / Q_dis(reference cycle), indexed by cycle.

    mAh/g when the cell has an active mass, else mAh (the ratio is the same).

    Raises
    ------
    ValueError
        When the reference cycle is missing or has no discharge capacity.
    """
    table = cycles.set_index("cycle").sort_index() if "cycle" in cycles.columns else cycles
    if reference_cycle not in table.index:
        raise ValueError(f"reference cycle {reference_cycle} is not in the data "
                         f"(cycles {table.index.min()}–{table.index.max()})")
    specific = table["discharge_capacity_mah_g"].astype(float)
    basis = specific if specific.notna().any() else table["discharge_capacity_mah"].astype(float)
    reference = basis.loc[reference_cycle]
    if not reference > 0:
        raise ValueError(f"reference cycle {reference_cycle} has no discharge capacity")
    return 100.0 * basis / reference


def retention(cycles: pd.DataFrame, *, cycle: int, reference_cycle: int = 2) -> dict:
    """Capacity retention of ``cycle`` against ``reference_cycle``, and cycles to 95/90/80 %.

    Retention(N) = Q_dis(N) / Q_dis(reference) × 100, from the mAh/g column (the mAh column
    when no active mass is known: the ratio is the same).

    Parameters
    ----------
    cycles : pandas.DataFrame
        Output of :func:`cycle_metrics` (at least ``cycle``, ``discharge_capacity_mah``,
        ``discharge_capacity_mah_g``).
    cycle : int
        The cycle to report.
    reference_cycle : int
        The reference cycle (default 2: the first cycle after formation).

    Returns
    -------
    dict
        ``reference_cycle, cycle, reference_capacity_mah_g, capacity_mah_g, retention_pct,
        cycles_to_95, cycles_to_90, cycles_to_80``; ``cycles_to_X`` is the first cycle at or
        after the reference whose retention is below X %, None if none is.

    Raises
    ------
    ValueError
        When the cycle or the reference cycle is missing, or the reference has no discharge.
    """
    table = cycles.set_index("cycle").sort_index()
    for label, number in (("reference cycle", reference_cycle), ("cycle", cycle)):
        if number not in table.index:
            raise ValueError(f"{label} {number} is not in the data "
                             f"(cycles {table.index.min()}–{table.index.max()})")
    specific = table["discharge_capacity_mah_g"].astype(float)
    pct = retention_curve(table, reference_cycle=reference_cycle)
    after = pct.loc[reference_cycle:].dropna()
    result = {
        "reference_cycle": int(reference_cycle),
        "cycle": int(cycle),
        "reference_capacity_mah_g": float(specific.loc[reference_cycle]),
        "capacity_mah_g": float(specific.loc[cycle]),
        "retention_pct": float(pct.loc[cycle]),
    }
    for threshold in RETENTION_THRESHOLDS:
        below = after.index[(after < threshold).to_numpy()]
        result[f"cycles_to_{threshold}"] = int(below[0]) if len(below) else None
    return result
