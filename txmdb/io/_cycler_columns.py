"""Column recognition for cycler CSV files: known header names and units read from names.

Private helper of :mod:`txmdb.io.cycling`. A header name is compared in a normalised form
(lower case, letters and digits only), so ``Current(A)``, ``Current_A`` and ``current a``
are one name. Units are read from the name itself (``Current(mA)``, ``Capacity_mAh``) so a
file in milli-units needs no extra option.
"""

from __future__ import annotations

import re

from txmdb.errors import InputError

# Canonical keys a reader fills (``RECORD_COLUMNS`` plus the two single-column variants a
# cycler may write instead of separate charge/discharge columns: a net or unsigned capacity
# and energy whose direction follows from the step).
CANONICAL_KEYS = (
    "time_s",
    "voltage_v",
    "current_a",
    "cycle",
    "step",
    "step_type",
    "charge_capacity_ah",
    "discharge_capacity_ah",
    "charge_energy_wh",
    "discharge_energy_wh",
    "capacity_ah",
    "energy_wh",
)

REQUIRED_KEYS = ("time_s", "voltage_v", "current_a")

# Known header names, normalised, in order of preference. Battery Data Format
# (machine-readable names) first, then Arbin / batterydata.energy.gov, then common variants.
ALIASES: dict[str, tuple[str, ...]] = {
    "time_s": (
        "testtimesecond", "testtimes", "times", "testtime", "totaltimes", "totaltime",
        "timesecond", "time",
    ),
    "voltage_v": ("voltagevolt", "voltagev", "voltage", "voltagemv", "ecellv", "ewev"),
    "current_a": ("currentampere", "currenta", "current", "currentma", "ima"),
    "cycle": ("cyclecount", "cycleindex", "cycle", "cyclenumber", "cyclenum"),
    "step": ("stepcount", "stepindex", "stepid", "step", "stepnumber"),
    "step_type": ("steptype", "stepname", "state"),
    "charge_capacity_ah": (
        "chargecapacityah", "chargecapacity", "chargingcapacityah", "chargecapacitymah",
    ),
    "discharge_capacity_ah": (
        "dischargecapacityah", "dischargecapacity", "dischargingcapacityah",
        "dischargecapacitymah",
    ),
    "charge_energy_wh": ("chargeenergywh", "chargeenergy", "chargingenergywh", "chargeenergymwh"),
    "discharge_energy_wh": (
        "dischargeenergywh", "dischargeenergy", "dischargingenergywh", "dischargeenergymwh",
    ),
    "capacity_ah": ("stepnetcapacityah", "capacityah", "capacity", "capacitymah"),
    "energy_wh": ("stepnetenergywh", "energywh", "energy", "energymwh"),
}

# Unit tokens per quantity → factor to the canonical unit (s, V, A, Ah, Wh).
_UNITS: dict[str, dict[str, float]] = {
    "time_s": {"ms": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "h": 3600.0,
               "hr": 3600.0, "hour": 3600.0},
    "voltage_v": {"mv": 1e-3, "v": 1.0, "volt": 1.0},
    "current_a": {"ua": 1e-6, "µa": 1e-6, "μa": 1e-6, "ma": 1e-3, "a": 1.0, "ampere": 1.0},
    "capacity": {"uah": 1e-6, "µah": 1e-6, "mah": 1e-3, "ah": 1.0, "mas": 1e-3 / 3600,
                 "as": 1 / 3600, "c": 1 / 3600},
    "energy": {"uwh": 1e-6, "mwh": 1e-3, "wh": 1.0, "mws": 1e-3 / 3600, "ws": 1 / 3600,
               "j": 1 / 3600},
}
# How an error names a quantity and its units.
_QUANTITY_WORD = {"time_s": "time", "voltage_v": "voltage", "current_a": "current",
                  "capacity": "capacity", "energy": "energy"}
_UNIT_NAMES = {"time_s": ("ms", "s", "min", "h"), "voltage_v": ("mV", "V"),
               "current_a": ("µA", "uA", "mA", "A"),
               "capacity": ("µAh", "uAh", "mAh", "Ah", "mAs", "As", "C"),
               "energy": ("uWh", "mWh", "Wh", "mWs", "Ws", "J")}


def normalise_name(name: str) -> str:
    """Header name reduced to lower-case letters and digits, for matching."""
    return re.sub(r"[^0-9a-zµμ]", "", str(name).lower())


def _quantity(key: str) -> str | None:
    if key.endswith("capacity_ah"):
        return "capacity"
    if key.endswith("energy_wh"):
        return "energy"
    return key if key in _UNITS else None


# A unit the name states explicitly: its last bracketed group, or what follows a slash
# ("Current(mA)", "Current [mA]", "Ecell/V", "Current / A"). Such a unit must be known.
_EXPLICIT_UNIT = re.compile(r"(?:\(([^()]*)\)|\[([^\[\]]*)\]|/\s*([^/()\[\]]+?))\s*$")


def unit_factor(key: str, column: str) -> float:
    """Factor converting ``column`` (a header name) to the canonical unit of ``key``.

    A unit stated in brackets or after a slash (``Current(mA)``, ``Ewe/V``) must be one
    of the quantity's units; otherwise the unit is the last unit-like token of the name
    (``Capacity_mAh``, ``currentma``). A name without any unit is taken as already
    canonical: ``Current(mA)`` → 1e-3, ``Voltage_V`` → 1, ``Voltage`` → 1.

    Raises
    ------
    ValueError
        When the name states a unit that is not a unit of the quantity (``Current(礎)``,
        a mis-decoded ``µA``; ``Capacity(mAh/g)``): a silent factor of 1 would be wrong
        by orders of magnitude.
    """
    quantity = _quantity(key)
    if quantity is None:
        return 1.0
    units = _UNITS[quantity]
    explicit = _EXPLICIT_UNIT.search(str(column))
    if explicit is not None:
        stated = next(g for g in explicit.groups() if g is not None)
        token = re.sub(r"[\s·.*]", "", stated.lower())
        if token in units:
            return units[token]
        raise ValueError(
            f"unit {stated.strip()!r} of column {str(column)!r} is not understood as a "
            f"{_QUANTITY_WORD[quantity]} unit (known: {', '.join(_UNIT_NAMES[quantity])})"
        )
    for token in reversed(re.findall(r"[a-zµμ]+", str(column).lower())):
        if token in units:
            return units[token]
    # Glued names such as "currentma" or "chargecapacitymah": try the longest unit suffix.
    flat = normalise_name(column)
    for unit in sorted(units, key=len, reverse=True):
        if len(unit) > 1 and flat.endswith(unit):
            return units[unit]
    return 1.0


def column_factors(source, found: dict[str, str]) -> dict[str, float]:
    """Unit factor of every matched column (key → file column), or one ``InputError``."""
    try:
        return {key: unit_factor(key, column) for key, column in found.items()}
    except ValueError as exc:
        raise InputError(source, str(exc)) from None


def match_columns(header: list[str]) -> dict[str, str]:
    """Map canonical keys to the header's columns by the known names (first match wins).

    A name with a bracketed or slashed unit also matches by its name without the unit
    (``Current(µA)`` as ``current``); :func:`unit_factor` then reads, or refuses, the unit.
    """
    by_norm: dict[str, str] = {}
    for col in header:
        by_norm.setdefault(normalise_name(col), col)
    for col in header:
        by_norm.setdefault(normalise_name(_EXPLICIT_UNIT.sub("", str(col))), col)
    found: dict[str, str] = {}
    used: set[str] = set()
    for key, names in ALIASES.items():
        for name in names:
            col = by_norm.get(name)
            if col is not None and col not in used:
                found[key] = col
                used.add(col)
                break
    return found
