"""Synthetic cathode half-cell cycling records whose per-cycle metrics follow given curves.

A cell is described by a :class:`HalfCellSpec`: C-rate (1C = 200 mA/g by default), voltage
window, active mass, and the discharge capacity (mAh/g) and onset discharge voltage of each
cycle, fading from a start to an end value (linear or exponential) between the reference
cycle and the last cycle. Each cycle is CC charge to the upper cut-off (+ optional CV hold
until the current falls to ``cv_cutoff_c_rate``), rest, CC discharge to the lower cut-off,
rest. Voltage curves have the usual layered-oxide look: a steep start, a sloping plateau and
a steep end.

The records are constructed so that reading them back and applying
:func:`txmdb.analysis.cycling.cycle_metrics` returns the curves to rounding: discharge
currents are constant (the trapezoid integral is exact), CV capacities are defined as the
trapezoid integral of the sampled current, and the first record of each discharge step sits
exactly at the onset voltage.

:data:`ROD_NMC` and :data:`GRAVEL_NMC` reproduce Xu et al., Nat. Commun. 2020 (C/5,
2.5–4.5 V): rod-NMC 209.3 → 197.4 mAh/g over 100 cycles (94.3 % of cycle 2), onset
4.46 → 4.43 V; gravel-NMC 207.8 → 186.3 mAh/g (89.7 %), onset 4.45 → 4.37 V.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from txmdb.io.files import atomic_output

NAMINGS = ("bdf", "arbin")
FADES = ("linear", "exponential")

# Column names written per naming convention.
_BDF_COLUMNS = {
    "time_s": "test_time_second",
    "voltage_v": "voltage_volt",
    "current_a": "current_ampere",
    "cycle": "cycle_count",
    "step": "step_count",
}
_ARBIN_COLUMNS = {
    "time_s": "Test_Time_s",
    "voltage_v": "Voltage_V",
    "current_a": "Current_A",
    "cycle": "Cycle_Index",
    "step": "Step_Index",
    "charge_capacity_ah": "Charge_Capacity_Ah",
    "discharge_capacity_ah": "Discharge_Capacity_Ah",
    "charge_energy_wh": "Charge_Energy_Wh",
    "discharge_energy_wh": "Discharge_Energy_Wh",
}


@dataclass(frozen=True)
class HalfCellSpec:
    """Protocol and target curves of a synthetic cathode half cell.

    Capacities are per gram of active material; the discharge capacity and onset voltage of
    cycle ``n`` follow :func:`curve` from ``*_start`` at ``reference_cycle`` to ``*_end`` at
    ``n_cycles`` (cycles before the reference repeat the start value).
    """

    name: str
    capacity_start_mah_g: float
    capacity_end_mah_g: float
    onset_start_v: float
    onset_end_v: float
    n_cycles: int = 100
    fade: str = "linear"
    reference_cycle: int = 2
    active_mass_g: float = 0.005
    c_rate: float = 0.2
    one_c_ma_g: float = 200.0
    lower_cutoff_v: float = 2.5
    upper_cutoff_v: float = 4.5
    cv: bool = False
    cv_cutoff_c_rate: float = 0.05
    cv_fraction: float = 0.04
    rest_s: float = 600.0
    first_cycle_ce: float = 0.88
    ce: float = 0.995
    records_per_step: int = 100


ROD_NMC = HalfCellSpec("rod-NMC", 209.3, 197.4, 4.46, 4.43)
GRAVEL_NMC = HalfCellSpec("gravel-NMC", 207.8, 186.3, 4.45, 4.37)


def curve(start: float, end: float, *, n_cycles: int, reference_cycle: int = 2,
          fade: str = "linear") -> np.ndarray:
    """Values for cycles 1…``n_cycles``: ``start`` up to the reference, then to ``end``.

    ``fade="linear"`` interpolates linearly, ``"exponential"`` geometrically (constant
    fractional fade per cycle; start and end must have the same sign).
    """
    if fade not in FADES:
        raise ValueError(f"fade must be one of {FADES}, got {fade!r}")
    if n_cycles <= reference_cycle:
        raise ValueError("n_cycles must exceed the reference cycle")
    cycles = np.arange(1, n_cycles + 1)
    x = np.clip((cycles - reference_cycle) / (n_cycles - reference_cycle), 0.0, 1.0)
    if fade == "linear":
        return start + (end - start) * x
    return start * (end / start) ** x


def target_curves(spec: HalfCellSpec) -> pd.DataFrame:
    """Per-cycle targets: ``cycle, discharge_capacity_mah_g, charge_capacity_mah_g,
    onset_discharge_voltage_v``."""
    kw = dict(n_cycles=spec.n_cycles, reference_cycle=spec.reference_cycle, fade=spec.fade)
    q_dis = curve(spec.capacity_start_mah_g, spec.capacity_end_mah_g, **kw)
    onset = curve(spec.onset_start_v, spec.onset_end_v, **kw)
    ce = np.full(spec.n_cycles, spec.ce)
    ce[0] = spec.first_cycle_ce
    return pd.DataFrame({
        "cycle": np.arange(1, spec.n_cycles + 1),
        "discharge_capacity_mah_g": q_dis,
        "charge_capacity_mah_g": q_dis / ce,
        "onset_discharge_voltage_v": onset,
    })


def _shape(x: np.ndarray, weights: tuple[float, float, float], k0: float, k1: float) -> np.ndarray:
    """Monotone 0→1 over x∈[0,1]: steep start (scale k0), linear middle, steep end (k1)."""
    w0, w1, w2 = weights
    start = (1 - np.exp(-x / k0)) / (1 - np.exp(-1 / k0))
    end = (np.exp((x - 1) / k1) - np.exp(-1 / k1)) / (1 - np.exp(-1 / k1))
    return w0 * start + w1 * x + w2 * end


def _cumtrapz(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.r_[0.0, np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(t))]


def generate_records(spec: HalfCellSpec, *, records_per_step: int | None = None) -> pd.DataFrame:
    """Records of the whole test (``txmdb.io.cycling.RECORD_COLUMNS``; capacities/energies
    per step, Ah and Wh).

    Parameters
    ----------
    spec : HalfCellSpec
        The cell and its target curves.
    records_per_step : int, optional
        Records per step (default ``spec.records_per_step``); raise it for dense output.
    """
    n = int(records_per_step or spec.records_per_step)
    if n < 3:
        raise ValueError("records_per_step must be at least 3")
    targets = target_curves(spec)
    mass = spec.active_mass_g
    i_cc = spec.c_rate * spec.one_c_ma_g * mass * 1e-3  # A
    i_cv_end = spec.cv_cutoff_c_rate * spec.one_c_ma_g * mass * 1e-3
    x = np.linspace(0.0, 1.0, n)
    v_lo, v_hi = spec.lower_cutoff_v, spec.upper_cutoff_v
    v_relaxed_low = v_lo + 0.35 * (v_hi - v_lo)  # open-circuit voltage after discharge
    ir = 0.01  # V, ohmic jump when the current switches on

    chunks: list[dict[str, np.ndarray]] = []
    t0 = 0.0

    def add(kind: str, cycle: int, t: np.ndarray, v: np.ndarray, i: np.ndarray) -> None:
        nonlocal t0
        q = _cumtrapz(np.abs(i), t) / 3600.0
        e = _cumtrapz(np.abs(i) * v, t) / 3600.0
        zero = np.zeros_like(t)
        chunks.append({
            "time_s": t0 + t, "voltage_v": v, "current_a": i,
            "cycle": np.full(t.size, cycle), "step_type": np.full(t.size, kind),
            "charge_capacity_ah": q if kind == "charge" else zero,
            "discharge_capacity_ah": q if kind == "discharge" else zero,
            "charge_energy_wh": e if kind == "charge" else zero,
            "discharge_energy_wh": e if kind == "discharge" else zero,
        })
        t0 += float(t[-1])

    for row in targets.itertuples(index=False):
        cycle = int(row.cycle)
        q_chg = row.charge_capacity_mah_g * mass * 1e-3 * 3600.0  # A·s
        q_dis = row.discharge_capacity_mah_g * mass * 1e-3 * 3600.0
        onset = row.onset_discharge_voltage_v

        # CV hold: exponential current decay; its capacity is the trapezoid of the samples.
        q_cv = 0.0
        if spec.cv:
            tau = spec.cv_fraction * q_chg / (i_cc - i_cv_end)
            t_cv = np.linspace(0.0, tau * np.log(i_cc / i_cv_end), n)
            i_cv = i_cc * np.exp(-t_cv / tau)
            q_cv = float(_cumtrapz(i_cv, t_cv)[-1])
        # CC charge from the relaxed low voltage to the upper cut-off.
        t_cc = x * (q_chg - q_cv) / i_cc
        v_start = v_relaxed_low + ir
        add("charge", cycle, t_cc,
            v_start + (v_hi - v_start) * _shape(x, (0.40, 0.40, 0.20), 0.04, 0.06),
            np.full(n, i_cc))
        if spec.cv:
            add("charge", cycle, t_cv, np.full(n, v_hi), i_cv)
        # Rest: relaxes from the cut-off to just above the onset (the ohmic jump follows).
        t_rest = x * spec.rest_s
        relax = 1 - np.exp(-t_rest / (spec.rest_s / 5))
        relax /= relax[-1]
        add("rest", cycle, t_rest, v_hi - (v_hi - (onset + ir)) * relax, np.zeros(n))
        # CC discharge from the onset voltage (first record, exact) to the lower cut-off.
        add("discharge", cycle, x * q_dis / i_cc,
            onset - (onset - v_lo) * _shape(x, (0.15, 0.45, 0.40), 0.03, 0.05),
            np.full(n, -i_cc))
        # Rest after discharge: recovers towards the open-circuit voltage.
        add("rest", cycle, t_rest, v_lo + (v_relaxed_low - v_lo) * relax, np.zeros(n))

    frame = pd.DataFrame({k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]})
    frame.insert(4, "step", np.repeat(np.arange(1, len(chunks) + 1), n))
    return frame


def write_cycling_csv(
    spec: HalfCellSpec,
    path: str | os.PathLike,
    *,
    naming: str = "bdf",
    records_per_step: int | None = None,
) -> Path:
    """Write a synthetic cell's records as a plain CSV (atomically).

    Parameters
    ----------
    spec : HalfCellSpec
        The cell and its target curves.
    path : path-like
        Output file.
    naming : {"bdf", "arbin"}
        ``"bdf"``: Battery Data Format names (``test_time_second, voltage_volt,
        current_ampere, cycle_count, step_count``; no capacity columns, so readers integrate
        current). ``"arbin"``: Arbin names with the cycler's capacity and energy columns,
        cumulative within each cycle as Arbin writes them.
    records_per_step : int, optional
        Records per step (default ``spec.records_per_step``).

    Returns
    -------
    pathlib.Path
    """
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")
    frame = generate_records(spec, records_per_step=records_per_step)
    if naming == "bdf":
        out = frame[list(_BDF_COLUMNS)].rename(columns=_BDF_COLUMNS)
    else:
        out = frame[list(_ARBIN_COLUMNS)].copy()
        # Per-step values → cumulative within the cycle: add the totals of earlier steps.
        last = out.groupby("step", sort=False).tail(1)
        for col in ("charge_capacity_ah", "discharge_capacity_ah", "charge_energy_wh",
                    "discharge_energy_wh"):
            step_totals = last.set_index("step")[col]
            earlier = step_totals.groupby(last.set_index("step")["cycle"]).cumsum() - step_totals
            out[col] = out[col].to_numpy() + earlier.reindex(out["step"]).to_numpy()
        # Arbin's Step_Index is the program step, repeating every cycle.
        first_step = out.groupby("cycle")["step"].transform("min")
        out["step"] = out["step"] - first_step + 1
        out = out.rename(columns=_ARBIN_COLUMNS)
    with atomic_output(path) as tmp:
        out.to_csv(tmp, index=False, float_format="%.10g")
    return Path(path)


def with_overrides(spec: HalfCellSpec, **changes) -> HalfCellSpec:
    """A copy of ``spec`` with some fields changed (e.g. ``cv=True``, ``n_cycles=10``)."""
    return replace(spec, **changes)
