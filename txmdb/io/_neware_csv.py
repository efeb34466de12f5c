"""Neware BTS "regular" CSV export: three interleaved tables in one file.

Private helper of :mod:`txmdb.io.cycling`. The export writes three header lines, then
interleaves the tables:

* cycle rows — first cell non-empty (``Cycle Index, Chg. Cap.(Ah), ...``);
* step rows — one leading empty cell (``,Step Index, Step Number, Step Type, ...``);
* record rows — two leading empty cells (``,,DataPoint, Time, Total Time, Current(A), ...``).

Every record belongs to the step row above it, every step to the cycle row above it. The
first cycle row is written on the same line as its first step row (the step's cells follow
the cycle's cells without the leading empty cell), so a cycle line longer than the cycle
header carries a step row too. Times are ``H:MM:SS`` (hours may exceed 24). The file is ASCII
or, from Chinese-locale installations, GB18030 (``℃`` in temperature headers).

European-locale exports write decimal commas: with ``;`` between cells, or with ``,``
between cells and the decimal-comma numbers quoted (``"4,3185"``). Both are read as the
plain export (:func:`as_plain_export`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from txmdb.errors import InputError
from txmdb.io._cycler_columns import column_factors, normalise_name

# Normalised first cells of the three header lines.
_CYCLE_HEADER = "cycleindex"
_STEP_HEADER = "stepindex"
_RECORD_HEADER = "datapoint"
# A quoted decimal-comma number of a comma-separated European export: "4,3185".
_QUOTED_DECIMAL_COMMA = re.compile(r'"([+-]?\d*),(\d+(?:[eE][+-]?\d+)?)"')


@dataclass
class NewareTables:
    """The three tables of an export: raw strings, columns named as in the file."""

    cycles: pd.DataFrame
    steps: pd.DataFrame
    records: pd.DataFrame


def looks_like_neware_csv(first_lines: list[str]) -> bool:
    """True when the first three lines are the cycle, step and record headers."""
    if len(first_lines) < 3:
        return False
    sep = ";" if first_lines[0].count(";") > first_lines[0].count(",") else ","
    heads = [line.split(sep) for line in first_lines[:3]]
    return (
        normalise_name(heads[0][0]) == _CYCLE_HEADER
        and len(heads[1]) > 1 and heads[1][0] == "" and normalise_name(heads[1][1]) == _STEP_HEADER
        and len(heads[2]) > 2 and heads[2][:2] == ["", ""]
        and normalise_name(heads[2][2]) == _RECORD_HEADER
    )


def parse_hms(values: pd.Series) -> np.ndarray:
    """Seconds from ``H:MM:SS[.f]`` strings (hours unbounded) or plain numbers; NaN if neither."""
    text = values.astype(str).str.strip()
    if not text.str.contains(":", regex=False).any():
        return pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    # pandas' C parser with ':' as the separator splits and converts a million cells in a
    # fraction of the time of str.split.
    parts = pd.read_csv(io.StringIO("\n".join(text.tolist())), sep=":", header=None,
                        dtype=float, on_bad_lines="error", engine="c") \
        if len(text) else pd.DataFrame()
    numbers = parts.to_numpy(dtype=float)
    # H:MM:SS → weights 3600, 60, 1 (a malformed cell gives NaN through the product).
    weights = 60.0 ** np.arange(numbers.shape[1])[::-1]
    return numbers @ weights


def as_plain_export(text: str, source) -> str:
    """The export's text with ``,`` between cells and ``.`` as the decimal mark.

    A ``;``-separated export has its decimal commas turned into points, then its
    semicolons into commas (its cells hold numbers, times, dates and step names, none of
    which has a comma of its own). A comma-separated export loses the quotes around its
    decimal-comma numbers.
    """
    first = text.split("\n", 1)[0]
    if first.count(";") > first.count(","):
        if '"' in text:
            raise InputError(source, "quoted cells in a ';'-separated Neware export "
                             "(export it again without quotes)")
        return text.replace(",", ".").replace(";", ",")
    if '"' in text:
        return _QUOTED_DECIMAL_COMMA.sub(r"\1.\2", text)
    return text


def split_tables(text: str, source, *, record_stems: tuple[str, ...] | None = None) -> NewareTables:
    """Split the export's text into its cycle, step and record tables (strings).

    ``record_stems`` limits the parsed record columns to those whose normalised name starts
    with one of the stems (parsing all ~20 columns of a million records costs seconds).
    """
    lines = text.splitlines()
    if len(lines) < 3:
        raise InputError(source, "Neware CSV export without its three header lines")
    cycle_header = lines[0].split(",")
    step_header = lines[1].split(",")[1:]
    record_header = lines[2].split(",")[2:]
    n_cycle = len(cycle_header)

    body = pd.Series(lines[3:], dtype="string")
    # Row kind from the leading empty cells, vectorised (no Python loop over records).
    kinds = np.where(body.str.startswith(",,"), 2, np.where(body.str.startswith(","), 1, 0))
    idx = np.arange(len(body))
    cycle_lines, step_lines = [], []
    for i in idx[kinds == 0]:  # one per cycle
        if not body.iloc[i].strip():
            continue
        cells = body.iloc[i].split(",")
        cycle_lines.append((i, cells[:n_cycle]))
        if len(cells) > n_cycle:  # the first cycle row carries its first step row
            step_lines.append((i, cells[n_cycle:]))
    for i in idx[kinds == 1]:  # one per step
        step_lines.append((i, body.iloc[i].split(",")[1:]))
    step_lines.sort(key=lambda item: item[0])

    record_pos = idx[kinds == 2]
    if record_pos.size == 0:
        raise InputError(source, "no records (no record rows under the three headers)")
    record_text = "\n".join(body[kinds == 2].str.slice(2).tolist())
    try:
        records = pd.read_csv(
            io.StringIO(record_text), header=None, names=record_header,
            dtype={c: str for c in record_header if normalise_name(c).startswith("totaltime")},
            usecols=None if record_stems is None
            else (lambda c: normalise_name(c).startswith(record_stems)),
            keep_default_na=False, on_bad_lines="error", engine="c",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(source, f"unreadable record rows: {str(exc).splitlines()[0]}") from None

    steps = pd.DataFrame([cells[: len(step_header)] for _, cells in step_lines])
    steps = steps.reindex(columns=range(len(step_header)))
    steps.columns = step_header
    cycles = pd.DataFrame([cells for _, cells in cycle_lines]).reindex(columns=range(n_cycle))
    cycles.columns = cycle_header

    # Each record belongs to the last step line and the last cycle line above it.
    step_pos = np.array([i for i, _ in step_lines], dtype=np.int64)
    cycle_pos = np.array([i for i, _ in cycle_lines], dtype=np.int64)
    step_of = np.searchsorted(step_pos, record_pos, side="right") - 1
    cycle_of = np.searchsorted(cycle_pos, record_pos, side="right") - 1
    if (step_of < 0).any() or (cycle_of < 0).any():
        raise InputError(source, "record rows before the first cycle or step row")
    records["_step_row"] = step_of
    records["_cycle_row"] = cycle_of
    steps["_cycle_row"] = np.searchsorted(cycle_pos, step_pos, side="right") - 1
    return NewareTables(cycles=cycles, steps=steps, records=records)


_RECORD_STEMS = ("totaltime", "voltage", "current", "capacity", "energy")


def _find(columns, *names: str) -> str | None:
    norm = {normalise_name(c): c for c in columns}
    for name in names:
        if name in norm:
            return norm[name]
    # Units vary (Current(A) / Current(mA)): accept a name that starts with the stem.
    for name in names:
        for key, col in norm.items():
            if key.startswith(name):
                return col
    return None


def read_neware_csv(text: str, source) -> tuple[pd.DataFrame, dict[str, str]]:
    """Records of a Neware export as canonical raw columns (see ``txmdb.io.cycling``).

    Returns the frame (``time_s, voltage_v, current_a, cycle, step, step_type,
    capacity_ah, energy_wh``; capacity and energy are per step, unsigned) and the column map.
    """
    tables = split_tables(as_plain_export(text, source), source, record_stems=_RECORD_STEMS)
    rec, steps, cycles = tables.records, tables.steps, tables.cycles
    cols = {
        "time_s": _find(rec.columns, "totaltime"),
        "voltage_v": _find(rec.columns, "voltage"),
        "current_a": _find(rec.columns, "current"),
        "capacity_ah": _find(rec.columns, "capacity"),
        "energy_wh": _find(rec.columns, "energy"),
    }
    missing = [k for k in ("time_s", "voltage_v", "current_a") if cols[k] is None]
    if missing:
        raise InputError(source, f"Neware CSV record rows lack columns for {', '.join(missing)}")
    factors = column_factors(source, {k: c for k, c in cols.items() if c is not None})
    out = pd.DataFrame(index=rec.index)
    try:
        out["time_s"] = parse_hms(rec[cols["time_s"]])
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(source, f"unreadable {cols['time_s']!r} values (expected H:MM:SS): "
                         f"{str(exc).splitlines()[0]}") from None
    for key in ("voltage_v", "current_a", "capacity_ah", "energy_wh"):
        if cols[key] is None:
            continue
        cells = rec[cols[key]]
        if cells.dtype.kind in "fiub":
            out[key] = cells.to_numpy(dtype=float) * factors[key]
            continue
        # As text: a cell of 400 digits is a Python int that to_numeric cannot convert.
        values = pd.to_numeric(cells.astype("string"), errors="coerce").astype(float).to_numpy()
        bad = np.isnan(values) & cells.notna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                source, f"non-numeric value {rec[cols[key]].iloc[row]!r} in column "
                f"{cols[key]!r} (record {row + 1})",
            )
        out[key] = values * factors[key]

    step_type_col = _find(steps.columns, "steptype")
    step_number_col = _find(steps.columns, "stepnumber", "stepindex")
    cycle_col = cycles.columns[0]
    step_row = rec["_step_row"].to_numpy()
    out["step"] = pd.to_numeric(steps[step_number_col], errors="coerce").to_numpy()[step_row] \
        if step_number_col else step_row + 1
    out["step_type"] = steps[step_type_col].to_numpy()[step_row] if step_type_col else None
    out["cycle"] = pd.to_numeric(cycles[cycle_col], errors="coerce").to_numpy()[
        rec["_cycle_row"].to_numpy()
    ]
    column_map = {k: v for k, v in cols.items() if v is not None}
    column_map.update(step="Step Number (step rows)", step_type="Step Type (step rows)",
                      cycle="Cycle Index (cycle rows)")
    return out, column_map
