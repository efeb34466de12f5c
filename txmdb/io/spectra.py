"""Readers for 1-D X-ray data: XAS spectra (XDI, plain text) and XRD patterns (plain text).

One parser per file format:

* **XDI** (``# XDI/1.0`` first line; the XAS Data Interchange format): the header's
  ``# Column.N: name [unit]`` lines name the columns, ``# Namespace.tag: value`` lines
  are kept as metadata, ``# ///`` starts the free-text comments and ``#----`` ends them.
* **Plain text** tables of two or more numeric columns separated by white space, commas
  or semicolons. Lines starting with ``#``, ``!``, ``%`` or ``;`` are comments; the last
  comment line before the data, or one non-numeric line at the top, may name the columns.

Both XAS formats give a :class:`Spectrum`; a plain-text 2θ–intensity table gives a
:class:`Pattern` through the same table parser.

Choice of μ(E), following XDI semantics (column names are case-insensitive):

1. a ``mutrans``, ``mufluor``, ``normtrans`` or ``normfluor`` column (or, in plain text,
   ``mu``/``xmu``/``norm``) is used as it is;
2. else ``i0`` and ``itrans`` give μ = ln(I0/It) (transmission);
3. else ``i0`` and ``ifluor`` give μ = If/I0 (fluorescence, or an electron yield).

A plain-text file without column names is read as (energy, μ) when it has two columns
and as (energy, I0, It) when it has three; wider unnamed tables need ``columns=``.

Energy units come from the header where it states them: an XDI ``# Column.N: energy eV``
(or ``keV``) line, or a plain-text column name such as ``energy(keV)`` or ``energy_ev``.
Otherwise the energies are eV, unless they are all below 100 and bracket the edge's
energy in keV (``edge="Ni-K"``: 8.333; without an edge, any edge txmdb knows), when they
are keV and multiplied by 1000. So a keV K-edge table is read in eV, and an eV-scale
M-edge scan (Ni M ≈ 68 eV, values 50–90) stays in eV. (The TXM stacks' own rule, any
energy below 100 is keV, is the HDF5 readers'.) Energy order: a scan that runs strictly upward is kept, one that runs strictly
downward is reversed (some monochromators scan down), and a scan that changes direction,
or repeats an energy, is refused — a reversal means two scans spliced together or a
corrupted file, and silently sorting it would interleave them. Every problem raises
:class:`~txmdb.errors.InputError` naming the file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from txmdb.errors import InputError

#: Fewest data rows a spectrum or pattern may have. Five is the least that leaves a
#: pre-edge line, an edge and a post-edge line (or a peak and its two flanks).
MIN_POINTS = 5

#: Energies whose largest value is below this may be keV: when they bracket the edge.
KEV_THRESHOLD = 100.0

#: h·c in eV·Å, for the monochromator angle → energy conversion of XDI ``angle`` columns.
HC_EV_ANGSTROM = 12398.419843320026

_COMMENT_CHARS = ("#", "!", "%", ";")
_SPLIT = re.compile(r"[,;\s]+")
_XDI_FIELD = re.compile(r"^\s*([A-Za-z][\w-]*)\.([\w-]+)\s*:\s*(.*?)\s*$")

# Column roles and the names that mean them (lower case). XDI's own names come first.
_ENERGY_NAMES = (
    "energy",
    "e",
    "energy_ev",
    "energy(ev)",
    "energy_kev",
    "energy(kev)",
    "ev",
    "kev",
    "eng",
)
_MU_NAMES = (
    "mutrans",
    "mufluor",
    "normtrans",
    "normfluor",
    "mu",
    "xmu",
    "norm",
    "absorption",
    "mu_norm",
)
_I0_NAMES = ("i0",)
_ITRANS_NAMES = ("itrans", "it", "i1", "i_t")
_IFLUOR_NAMES = ("ifluor", "if", "fluor", "ifl", "tey", "fy")
_TWO_THETA_NAMES = ("2theta", "two_theta", "twotheta", "2th", "tth", "2-theta", "2θ", "angle")
_INTENSITY_NAMES = ("intensity", "i", "counts", "yobs", "iobs", "int", "y")
_ROLES = ("energy", "mu", "i0", "itrans", "ifluor")


@dataclass(frozen=True)
class Spectrum:
    """An XAS spectrum as read from its file.

    Attributes
    ----------
    energy_ev : numpy.ndarray
        Photon energies in eV, strictly increasing, shape (n,).
    mu : numpy.ndarray
        Absorption μ(E) (dimensionless; arbitrary scale) at each energy, shape (n,).
    metadata : dict
        What the file said about itself: ``format`` (``"xdi"`` or ``"text"``), ``fields``
        (XDI ``Namespace.tag`` values), ``comments`` (free text), ``energy_unit`` (as read:
        ``"eV"``, ``"keV"`` or ``"deg"``), ``mu_expression`` (how μ was obtained, e.g.
        ``"ln(i0/itrans)"``), ``mode`` (``"transmission"``, ``"fluorescence"`` or None when
        the columns do not say), ``reversed`` (True when the scan ran downward) and
        ``n_points``.
    source_columns : dict
        Role → column name used (``energy`` and ``mu``, or ``i0`` with ``itrans``/``ifluor``).
    source : str
        The path that was read.
    """

    energy_ev: np.ndarray
    mu: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    source_columns: dict[str, str] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class Pattern:
    """A powder-diffraction pattern as read from its file.

    Attributes
    ----------
    two_theta_deg : numpy.ndarray
        Scattering angles 2θ in degrees, strictly increasing, shape (n,).
    intensity : numpy.ndarray
        Intensity (counts or arbitrary units) at each angle, shape (n,).
    metadata : dict
        ``format``, ``comments``, ``reversed``, ``n_points`` and, when a header line such
        as ``# wavelength: 1.5406`` gives it, ``wavelength_angstrom``.
    source_columns : dict
        Role (``two_theta``, ``intensity``) → column name used.
    source : str
        The path that was read.
    """

    two_theta_deg: np.ndarray
    intensity: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    source_columns: dict[str, str] = field(default_factory=dict)
    source: str = ""


@dataclass
class _Table:
    """Numeric rows of a text file with the header facts around them."""

    names: list[str] | None  # column names (lower case), None when the file has none
    units: list[str | None]
    data: np.ndarray  # (n_rows, n_columns), float64
    line_numbers: np.ndarray  # 1-based line of each row, for error messages
    comments: list[str]
    fields: dict[str, str]
    fmt: str


# --------------------------------------------------------------------------- public API


def read_spectrum(
    path: str | os.PathLike, *, columns: Mapping[str, int | str] | None = None,
    edge: str | None = None,
) -> Spectrum:
    """Read an XAS spectrum from an XDI file or a plain-text table.

    Parameters
    ----------
    path : str or os.PathLike
        The file. XDI is recognised by its ``# XDI/`` first line, whatever the suffix.
    columns : mapping, optional
        Override of the automatic column choice: role → column, where a role is
        ``"energy"``, ``"mu"``, ``"i0"``, ``"itrans"`` or ``"ifluor"`` and a column is a
        name from the header or a column number counted from 1 (as XDI's ``Column.N``).
        Give ``energy`` and either ``mu``, or ``i0`` with ``itrans`` (μ = ln(I0/It)), or
        ``i0`` with ``ifluor`` (μ = If/I0). Example: ``{"energy": 1, "mu": 3}``.
    edge : str, optional
        The edge measured (``"Ni-K"``, ``"Ni-L3"``): energies without a stated unit are
        keV only when they bracket this edge's energy in keV (see the module docstring).

    Returns
    -------
    Spectrum
        Energies in eV (strictly increasing) and μ(E).

    Raises
    ------
    InputError
        Empty, binary or non-numeric file; fewer than two columns; unknown or ambiguous
        columns; NaN/inf energies or μ; non-positive I0/It for ln(I0/It); duplicate
        energies; a scan that changes direction; fewer than :data:`MIN_POINTS` rows.
    """
    table = _read_table(path)
    roles = _choose_xas_columns(path, table, columns)
    data, lines = table.data, table.line_numbers

    energy = data[:, roles["energy"]].copy()
    energy_name = _column_label(table, roles["energy"])
    energy_unit = (table.units[roles["energy"]] or "").strip() or None
    energy, energy_unit_read = _energy_to_ev(path, table, energy, energy_unit, energy_name, lines,
                                             _edge_energies_ev(path, edge))

    mu, expression, mode = _compute_mu(path, table, roles, lines)
    energy, mu, reversed_ = _ordered(path, energy, [mu], lines, what="energy", unit="eV")
    mu = mu[0]

    source_columns = {role: _column_label(table, idx) for role, idx in roles.items()}
    metadata = {
        "format": table.fmt,
        "fields": dict(table.fields),
        "comments": list(table.comments),
        "energy_unit": energy_unit_read,
        "mu_expression": expression,
        "mode": mode,
        "reversed": reversed_,
        "n_points": int(energy.size),
    }
    return Spectrum(
        energy_ev=energy, mu=mu, metadata=metadata, source_columns=source_columns, source=str(path)
    )


def read_pattern(path: str | os.PathLike, *, columns: Mapping[str, int | str] | None = None) -> Pattern:
    """Read a 2θ–intensity powder-diffraction pattern from a plain-text table.

    Parameters
    ----------
    path : str or os.PathLike
        The file: two or more columns, 2θ (degrees) first and intensity second unless
        the header names them (``2theta``/``tth``/``angle`` and ``intensity``/``counts``/
        ``yobs``). A third column (e.g. the σ of an ``.xye`` file) is ignored.
    columns : mapping, optional
        Role (``"two_theta"``, ``"intensity"``) → column name or number counted from 1.

    Returns
    -------
    Pattern
        2θ in degrees (strictly increasing) and intensities.

    Raises
    ------
    InputError
        The same bad inputs as :func:`read_spectrum` (with 2θ in place of energy), and
        2θ outside (0°, 180°).
    """
    table = _read_table(path)
    n_col = table.data.shape[1]
    chosen: dict[str, int] = {}
    if columns:
        for role, col in columns.items():
            if role not in ("two_theta", "intensity"):
                raise InputError(path, f"unknown column role {role!r} (use two_theta, intensity)")
            chosen[role] = _resolve_column(path, table, col)
    for role, names, default in (("two_theta", _TWO_THETA_NAMES, 0), ("intensity", _INTENSITY_NAMES, 1)):
        if role not in chosen:
            found = _find_name(table, names)
            chosen[role] = found if found is not None else default
    if chosen["two_theta"] == chosen["intensity"] or max(chosen.values()) >= n_col:
        raise InputError(path, "cannot tell the 2θ and intensity columns apart; give columns=")
    lines = table.line_numbers
    tth = table.data[:, chosen["two_theta"]].copy()
    inten = table.data[:, chosen["intensity"]].copy()
    _require_finite(path, tth, lines, "2θ")
    _require_finite(path, inten, lines, "intensity")
    if np.any(tth <= 0) or np.any(tth >= 180):
        raise InputError(
            path, "2θ values must lie between 0° and 180° (is the first column 2θ in degrees?)"
        )
    tth, (inten,), reversed_ = _ordered(path, tth, [inten], lines, what="2θ", unit="°")
    metadata: dict[str, Any] = {
        "format": table.fmt,
        "comments": list(table.comments),
        "reversed": reversed_,
        "n_points": int(tth.size),
    }
    wavelength = _wavelength_from_header(table)
    if wavelength is not None:
        metadata["wavelength_angstrom"] = wavelength
    return Pattern(
        two_theta_deg=tth,
        intensity=inten,
        metadata=metadata,
        source_columns={role: _column_label(table, idx) for role, idx in chosen.items()},
        source=str(path),
    )


# ------------------------------------------------------------------------ table parsing


def _read_table(path: str | os.PathLike) -> _Table:
    """Parse a text file into numeric rows; XDI or plain text by the first line."""
    from txmdb.vocabulary import MAX_SPECTRUM_FILE_BYTES

    p = Path(path)
    try:
        with open(p, "rb") as fh:  # one byte past the limit tells a file too large without reading it all
            raw = fh.read(MAX_SPECTRUM_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
    if len(raw) > MAX_SPECTRUM_FILE_BYTES:
        raise InputError(path, f"more than {MAX_SPECTRUM_FILE_BYTES >> 20} MiB, too large for a spectrum or "
                               "pattern text file")
    if not raw.strip():
        raise InputError(path, "empty file")
    if b"\x00" in raw[:8192]:
        raise InputError(path, "binary file, not a text spectrum or pattern")
    text = raw.decode("utf-8-sig", errors="replace")  # a byte-order mark is not content
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    if re.match(r"^\s*#\s*XDI/", first, flags=re.IGNORECASE):
        return _parse_xdi(path, lines)
    return _parse_plain(path, lines)


def _parse_number(token: str) -> float:
    # Fortran-style exponents (1.0D-03) appear in old beamline files.
    return float(token.replace("D", "E").replace("d", "e"))


def _parse_row(path, token_line: str, lineno: int) -> list[float]:
    tokens = [t for t in _SPLIT.split(token_line.strip()) if t]
    try:
        return [_parse_number(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        raise InputError(path, f"line {lineno}: non-numeric value {bad[:40]!r}") from None


def _is_number(token: str) -> bool:
    try:
        _parse_number(token)
        return True
    except ValueError:
        return False


def _collect_rows(path, numbered: list[tuple[int, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Numeric rows (all the same width, at least two columns) and their line numbers."""
    rows: list[list[float]] = []
    linenos: list[int] = []
    for lineno, line in numbered:
        rows.append(_parse_row(path, line, lineno))
        linenos.append(lineno)
    if not rows:
        raise InputError(path, "no data rows")
    width = len(rows[0])
    for row, lineno in zip(rows, linenos, strict=True):
        if len(row) != width:
            raise InputError(
                path, f"line {lineno}: {len(row)} columns where the first data row has {width}"
            )
    if width < 2:
        raise InputError(path, "only one column; need at least two (x and y)")
    return np.asarray(rows, dtype=np.float64), np.asarray(linenos)


def _parse_xdi(path, lines: list[str]) -> _Table:
    fields: dict[str, str] = {}
    comments: list[str] = []
    column_defs: dict[int, tuple[str, str | None]] = {}
    label_line: str | None = None
    data_lines: list[tuple[int, str]] = []
    in_comments = False
    after_rule = False
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if data_lines:
                continue  # a trailing comment after the data says nothing about the columns
            body = stripped.lstrip("#").strip()
            if lineno == 1 or re.match(r"^XDI/", body, flags=re.IGNORECASE):
                fields["XDI.version"] = body
                continue
            if body.startswith("///"):
                in_comments = True
                continue
            if re.match(r"^-{3,}", body):
                in_comments, after_rule = False, True
                continue
            if after_rule:
                label_line = body  # the column-label line between "#----" and the data
                continue
            match = _XDI_FIELD.match(body)
            if match and not in_comments:
                namespace, tag, value = match.groups()
                key = f"{namespace}.{tag}"
                fields[key] = value
                if namespace.lower() == "column" and tag.isdigit():
                    parts = value.split()
                    if parts:
                        column_defs[int(tag)] = (parts[0].lower(), parts[1] if len(parts) > 1 else None)
                continue
            comments.append(body)
            continue
        data_lines.append((lineno, line))
    data, linenos = _collect_rows(path, data_lines)
    n_col = data.shape[1]
    names: list[str] | None
    units: list[str | None] = [None] * n_col
    if column_defs:
        if max(column_defs) > n_col:
            raise InputError(
                path, f"header defines Column.{max(column_defs)} but the data have {n_col} columns"
            )
        names = [column_defs.get(i + 1, (f"column{i + 1}", None))[0] for i in range(n_col)]
        units = [column_defs.get(i + 1, ("", None))[1] for i in range(n_col)]
    elif label_line and len(label_line.split()) == n_col:
        names = [t.lower() for t in label_line.split()]
    else:
        names = None
    return _Table(names, units, data, linenos, comments, fields, "xdi")


def _parse_plain(path, lines: list[str]) -> _Table:
    comments: list[str] = []
    last_comment: str | None = None
    header_line: str | None = None
    data_lines: list[tuple[int, str]] = []
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(_COMMENT_CHARS):
            if not data_lines:
                body = stripped.lstrip("".join(_COMMENT_CHARS)).strip()
                comments.append(body)
                last_comment = body
            continue
        if not data_lines and header_line is None and not _is_number(_SPLIT.split(stripped)[0]):
            header_line = stripped  # one non-numeric line above the data names the columns
            continue
        data_lines.append((lineno, line))
    if not data_lines and header_line is not None:
        raise InputError(path, f"non-numeric content, no data rows (first line {header_line[:40]!r})")
    data, linenos = _collect_rows(path, data_lines)
    n_col = data.shape[1]
    names = None
    for candidate in (header_line, last_comment):
        if candidate:
            tokens = [t.lower() for t in _SPLIT.split(candidate) if t]
            if len(tokens) == n_col and not any(_is_number(t) for t in tokens):
                names = tokens
                break
    return _Table(names, [None] * n_col, data, linenos, comments, {}, "text")


# ------------------------------------------------------------------- column semantics


def _find_name(table: _Table, candidates: tuple[str, ...]) -> int | None:
    if not table.names:
        return None
    for name in candidates:  # candidate order is the priority order
        if name in table.names:
            return table.names.index(name)
    return None


def _column_label(table: _Table, idx: int) -> str:
    return table.names[idx] if table.names else f"column{idx + 1}"


def _resolve_column(path, table: _Table, col: int | str) -> int:
    n_col = table.data.shape[1]
    if isinstance(col, (int, np.integer)) and not isinstance(col, bool):
        if not 1 <= col <= n_col:
            raise InputError(
                path, f"column {col} does not exist (the file has {n_col}; numbers count from 1)"
            )
        return int(col) - 1
    text = str(col).strip()
    if text.isdigit():
        return _resolve_column(path, table, int(text))
    if table.names and text.lower() in table.names:
        return table.names.index(text.lower())
    known = ", ".join(table.names) if table.names else "none (the file has no column names)"
    raise InputError(path, f"no column named {text!r}; columns: {known}")


def _choose_xas_columns(path, table: _Table, columns: Mapping[str, int | str] | None) -> dict[str, int]:
    n_col = table.data.shape[1]
    if columns:
        roles = {}
        for role, col in columns.items():
            if role not in _ROLES:
                raise InputError(path, f"unknown column role {role!r} (use {', '.join(_ROLES)})")
            roles[role] = _resolve_column(path, table, col)
        if "energy" not in roles:
            found = _find_name(table, _ENERGY_NAMES)
            roles["energy"] = 0 if found is None else found
        if not ("mu" in roles or ("i0" in roles and ("itrans" in roles or "ifluor" in roles))):
            raise InputError(path, "columns= must give mu, or i0 with itrans or ifluor")
        return roles

    energy = _find_name(table, _ENERGY_NAMES)
    if energy is None and table.names and "angle" in table.names and table.fmt == "xdi":
        energy = table.names.index("angle")
    mu = _find_name(table, _MU_NAMES)
    i0 = _find_name(table, _I0_NAMES)
    itrans = _find_name(table, _ITRANS_NAMES)
    ifluor = _find_name(table, _IFLUOR_NAMES)
    if table.names and energy is not None:
        if mu is not None:
            return {"energy": energy, "mu": mu}
        if i0 is not None and itrans is not None:
            return {"energy": energy, "i0": i0, "itrans": itrans}
        if i0 is not None and ifluor is not None:
            return {"energy": energy, "i0": i0, "ifluor": ifluor}
        if n_col == 2:
            return {"energy": energy, "mu": 1 - energy}
        raise InputError(
            path, f"cannot tell which column is μ among {', '.join(table.names)}; give columns="
        )
    if table.fmt == "xdi":
        raise InputError(path, "XDI header names no energy column; give columns=")
    # Unnamed plain text: DESIGN §4's two layouts.
    if n_col == 2:
        return {"energy": 0, "mu": 1}
    if n_col == 3:
        return {"energy": 0, "i0": 1, "itrans": 2}
    raise InputError(
        path, f"{n_col} unnamed columns: cannot tell (energy, μ) from (energy, I0, It); give columns="
    )


def _edge_energies_ev(path, edge: str | None) -> tuple[float, ...]:
    """Energy (eV) of ``edge``, or of every edge txmdb knows when it is None."""
    from txmdb.vocabulary import K_EDGE_EV, L3_EDGE_EV, edge_kind

    tables = {"K": K_EDGE_EV, "L3": L3_EDGE_EV}
    if edge is None:
        return tuple(e for table in tables.values() for e in table.values())
    element = edge.strip().partition("-")[0].capitalize()
    energy = tables[edge_kind(edge)].get(element)
    if energy is None:
        raise InputError(path, f"no tabulated energy for edge {edge!r}")
    return (energy,)


# A unit at the end of an energy column's name: "energy(kev)", "energy_ev", "kev".
_NAME_UNIT = re.compile(r"(?:^|[^a-z])(kev|ev)[^a-z]*$")


def _energy_to_ev(path, table, energy, unit, name, lines, edges_ev) -> tuple[np.ndarray, str]:
    _require_finite(path, energy, lines, "energy")
    unit_l = (unit or "").lower()
    if not unit_l and (named := _NAME_UNIT.search(name or "")):
        unit_l = named.group(1)
    if name == "angle" or unit_l.startswith("deg"):
        d_text = table.fields.get("Mono.d_spacing")
        if not d_text:
            raise InputError(path, "angle column without Mono.d_spacing: cannot convert to energy")
        try:
            d_spacing = float(d_text.split()[0])
        except ValueError:
            raise InputError(path, f"Mono.d_spacing {d_text!r} is not a number") from None
        # Bragg's law for the monochromator: E = hc / (2 d sin θ).
        return HC_EV_ANGSTROM / (2.0 * d_spacing * np.sin(np.radians(energy))), "deg"
    if unit_l == "kev":
        return np.round(energy * 1000.0, 6), "keV"  # drop float noise of the ×1000 (8.205 keV → 8205 eV)
    if unit_l == "ev":
        return energy, "eV"
    if unit_l:
        raise InputError(path, f"energy unit {unit!r} of column {name!r} is not understood "
                         "(eV, keV, or deg for a monochromator angle)")
    low, high = float(np.min(energy)), float(np.max(energy))
    if high < KEV_THRESHOLD and any(low <= e / 1000.0 <= high for e in edges_ev):
        return np.round(energy * 1000.0, 6), "keV"  # drop float noise of the ×1000 (8.205 keV → 8205 eV)
    return energy, "eV"


def _compute_mu(path, table: _Table, roles: dict[str, int], lines) -> tuple[np.ndarray, str, str | None]:
    data = table.data
    if "mu" in roles:
        mu = data[:, roles["mu"]].copy()
        name = _column_label(table, roles["mu"])
        _require_finite(path, mu, lines, "μ")
        mode = "transmission" if "trans" in name else "fluorescence" if "fluor" in name else None
        return mu, name, mode
    i0 = data[:, roles["i0"]]
    _require_finite(path, i0, lines, "I0")
    if "itrans" in roles:
        it = data[:, roles["itrans"]]
        _require_finite(path, it, lines, "It")
        bad = np.nonzero((i0 <= 0) | (it <= 0))[0]
        if bad.size:
            row = int(lines[bad[0]])
            raise InputError(path, f"line {row}: I0 and It must be positive for μ = ln(I0/It)")
        names = (_column_label(table, roles["i0"]), _column_label(table, roles["itrans"]))
        return np.log(i0 / it), f"ln({names[0]}/{names[1]})", "transmission"
    ifl = data[:, roles["ifluor"]]
    _require_finite(path, ifl, lines, "If")
    bad = np.nonzero(i0 == 0)[0]
    if bad.size:
        raise InputError(path, f"line {int(lines[bad[0]])}: I0 is zero, cannot form If/I0")
    names = (_column_label(table, roles["ifluor"]), _column_label(table, roles["i0"]))
    return ifl / i0, f"{names[0]}/{names[1]}", "fluorescence"


def _require_finite(path, values: np.ndarray, lines: np.ndarray, what: str) -> None:
    bad = np.nonzero(~np.isfinite(values))[0]
    if bad.size:
        raise InputError(path, f"line {int(lines[bad[0]])}: {what} is {float(values[bad[0]])!r} (NaN or inf)")


def _ordered(path, x: np.ndarray, ys: list[np.ndarray], lines: np.ndarray, *, what: str, unit: str):
    """Return ``x`` strictly increasing with ``ys`` in step, or raise.

    A strictly decreasing scan is reversed; repeated values and direction changes are
    refused (see the module docstring for why sorting is not done).
    """
    if x.size < MIN_POINTS:
        raise InputError(path, f"too few points: {x.size} rows, need at least {MIN_POINTS}")
    with np.errstate(over="ignore"):  # near-overflow values give ±inf steps: still ordered
        step = np.diff(x)
    dup = np.nonzero(step == 0)[0]
    if dup.size:
        i = int(dup[0])
        raise InputError(
            path, f"duplicate {what} {x[i]:g} {unit} at lines {int(lines[i])} and {int(lines[i + 1])}"
        )
    reversed_ = False
    if np.all(step < 0):
        x = x[::-1].copy()
        ys = [y[::-1].copy() for y in ys]
        reversed_ = True
    elif not np.all(step > 0):
        # Name the first row where the direction flips against the scan's main direction.
        main = 1.0 if np.sum(step > 0) >= np.sum(step < 0) else -1.0
        i = int(np.nonzero(np.sign(step) != main)[0][0])
        raise InputError(
            path,
            f"{what} values are not monotonic: the scan changes direction at line {int(lines[i + 1])} "
            f"({x[i]:g} → {x[i + 1]:g} {unit})",
        )
    return x, ys, reversed_


def _wavelength_from_header(table: _Table) -> float | None:
    for text in table.comments:
        match = re.search(
            r"(?:wavelength|lambda|λ)\s*[:=]?\s*([0-9]*\.?[0-9]+)", text, flags=re.IGNORECASE
        )
        if match:
            value = float(match.group(1))
            if 0.05 < value < 5 and math.isfinite(value):  # Å; anything else is not a wavelength
                return value
    return None
