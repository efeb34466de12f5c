"""Cycler files → one normalised record table.

Formats (one reader each, chosen by :func:`detect_format` from the content, not the name):

``ndax`` / ``nda``
    Neware binary files, read with the ``fastnda`` library. Cycles are numbered the way
    fastnda numbers them by default: a new cycle starts at a charge step that follows a
    discharge step. (Neware's own cycle index counts loops of the test program, which may
    hold several charge/discharge pairs — ``nw4-120-1-6-53.ndax`` has 150 such loops but 160
    charge/discharge pairs — so it cannot pair a charge with its discharge.)
``neware-csv``
    Neware BTS "regular" CSV export with its cycle, step and record rows
    (:mod:`txmdb.io._neware_csv`); the export's own cycle numbers are kept.
``csv``
    Plain CSV with Battery Data Format names (``test_time_second, voltage_volt,
    current_ampere, cycle_count``) or Arbin / batterydata.energy.gov names (``Cycle_Index,
    Test_Time_s`` or ``Time_s, Current_A, Voltage_V, Charge_Capacity_Ah, ...``); any other
    header is mapped with ``columns`` (see :func:`parse_column_map`). Units written in a
    header (``Current(mA)``, ``Capacity_mAh``) are converted.

The record table (:data:`RECORD_COLUMNS`) is the same for every format:

* ``time_s`` test time in s; ``voltage_v`` V; ``current_a`` A, **positive = charge** (a file
  with the opposite convention is detected from its step types or capacity columns and its
  sign flipped);
* ``cycle`` cycle number; ``step`` running number of the step (1, 2, … in file order; a new
  step starts wherever the file's step, step type or cycle changes, or — for files without
  steps — wherever the current changes between charging, discharging and resting);
* ``step_type`` ``"charge"``, ``"discharge"`` or ``"rest"``: the cycler's own step type
  (CC, CV, CCCV, CP … charge all count as charge) or, where the file has none or an
  unclassifiable one (pulse, IR …), the sign of the step's mean current;
* ``charge_capacity_ah`` … ``discharge_energy_wh``: capacity and energy passed **since the
  start of the step** (≥ 0), from the cycler's own columns whatever their scope in the file
  (per step, cumulative per cycle or over the test — resets are recognised). NaN when the
  file has no such column; the analysis then integrates current over time.

Text: UTF-8, GB18030 or Windows-1252, told apart by :func:`text_encoding` (or named with
``encoding=``). A plain CSV's cells may be separated by commas, semicolons or tabs, and its
decimal mark may be a comma (European exports: ``3,85`` between semicolons, or ``"3,85"``
quoted between commas); a comma-separated file with unquoted decimal commas is ambiguous
and refused. A unit written in a column name must be understood (``Current(µA)``), never
taken as 1. Cycle numbers must be whole numbers from 0 to ``MAX_CYCLE_NUMBER``. A ``.ndax``
archive is checked against ``MAX_NDAX_UNPACKED_BYTES`` and ``MAX_NDAX_RATIO``
(:mod:`txmdb.vocabulary`) before fastnda unpacks it (ZIP bombs). :func:`require_cycling`
refuses records without one complete charge or discharge step (ingest calls it).

Truncated files: a final CSV line cut short (fewer cells than the header) is dropped with a
:class:`TruncatedFileWarning` and the rest is read — a user loses one record, not the file.
(A final line cut inside its last cell still parses and cannot be told apart.) A file with
no complete record, a malformed line elsewhere, non-numeric values, missing needed columns,
and empty or damaged Neware files (fastnda reporting an error) raise
:class:`~txmdb.errors.InputError` naming the file and the problem.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import logging
import os
import re
import struct
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from txmdb.errors import InputError
from txmdb.io._cycler_columns import (
    CANONICAL_KEYS,
    REQUIRED_KEYS,
    column_factors,
    match_columns,
)
from txmdb.textsafe import visible
from txmdb.vocabulary import (
    MAX_CYCLE_NUMBER,
    MAX_CYCLER_FILE_BYTES,
    MAX_NDAX_RATIO,
    MAX_NDAX_UNPACKED_BYTES,
    NDAX_RATIO_FLOOR_BYTES,
)
from txmdb.vocabulary import AUTO, CYCLER_FORMATS, STEP_TYPES

# The record frame's columns: the canonical keys without the single-column variants.
RECORD_COLUMNS = [key for key in CANONICAL_KEYS if key not in ("capacity_ah", "energy_wh")]

FORMATS = (AUTO, *CYCLER_FORMATS)

_NDA_MAGIC = b"NEWARE"
_ZIP_MAGIC = b"PK\x03\x04"
_SNIFF_BYTES = 64 << 10
# A step whose mean |current| is below this fraction of the file's largest |current| rests.
_REST_FRACTION = 1e-3

# Text encodings of cycler exports, in the order tried: UTF-8 (BOM allowed), GB18030 (Neware
# on Chinese Windows), Windows-1252 (Western Windows). A header with a Windows-1252 "µ" or
# "°" right before a unit letter ("µA", "°C") is read as Windows-1252 first: GB18030 decodes
# those byte pairs too, as Chinese characters ("Current(µA)" → "Current(礎)").
_ENCODINGS = ("utf-8-sig", "gb18030", "cp1252")
_CP1252_UNIT_SYMBOL = re.compile(rb"(?<![\x81-\xfe])[\xb0\xb5][A-Za-z]")  # not a GB18030 trail byte
# A decimal number written with a comma (European locales), and one written with a point.
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+(?:[eE][+-]?\d+)?$")
_DECIMAL_POINT = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?$")
# Cell separators a plain CSV may use (the header line decides).
_SEPARATORS = (",", ";", "\t")


class TruncatedFileWarning(UserWarning):
    """A cut-short final line of a cycler file was dropped."""


@dataclass
class CyclerRecords:
    """A cycler file read into the normalised record table.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per record, columns :data:`RECORD_COLUMNS` (see the module docstring).
    file_format : str
        The format read: ``"ndax"``, ``"nda"``, ``"neware-csv"`` or ``"csv"``.
    column_map : dict[str, str]
        Record column → the file's column (or field) it came from.
    has_capacity : bool
        True when the capacities come from the cycler's own columns, False when they are
        NaN and must be integrated from current and time.
    """

    frame: pd.DataFrame
    file_format: str
    column_map: dict[str, str] = field(default_factory=dict)
    has_capacity: bool = False


# --------------------------------------------------------------------------- public API


def parse_column_map(text: str) -> dict[str, str]:
    """Parse a ``--columns`` option: ``"voltage_v=Volt,current_a=Amp"`` → dict.

    Keys are record columns (:data:`RECORD_COLUMNS`) or ``capacity_ah`` / ``energy_wh`` for
    a single net or unsigned capacity / energy column whose direction follows from the step.
    Values are column names of the file (a unit in the name, e.g. ``I(mA)``, is converted).

    Raises
    ------
    InputError
        On an item without ``=``, an empty name, an unknown key or a key given twice.
    """
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        key, sep, column = (s.strip() for s in item.partition("="))
        if not sep or not key or not column:
            raise InputError("--columns", f"expected KEY=COLUMN, got {item!r}")
        if key not in CANONICAL_KEYS:
            raise InputError(
                "--columns", f"unknown key {key!r} (known: {', '.join(CANONICAL_KEYS)})"
            )
        if key in mapping:
            raise InputError("--columns", f"key {key!r} given twice")
        mapping[key] = column
    if not mapping:
        raise InputError("--columns", "no KEY=COLUMN pairs given")
    return mapping


def detect_format(path: str | os.PathLike, *, encoding: str | None = None) -> str:
    """Format of a cycler file from its content: ``ndax``, ``nda``, ``neware-csv`` or ``csv``.

    ``encoding`` is the text encoding of a CSV (default: see :func:`text_encoding`).

    Raises
    ------
    InputError
        When the file is missing, empty, or binary without a Neware signature.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror or exc}") from None
    if not head:
        raise InputError(path, "empty file")
    if head.startswith(_NDA_MAGIC):
        return "nda"
    if head.startswith(_ZIP_MAGIC):
        if zipfile.is_zipfile(path):
            with contextlib.suppress(zipfile.BadZipFile), zipfile.ZipFile(path) as zf:
                if "data.ndc" in zf.namelist():
                    return "ndax"
        raise InputError(path, "a ZIP archive that is not a Neware .ndax file (no data.ndc)")
    if b"\x00" in head:
        raise InputError(path, "binary content: not a Neware file and not a CSV text file")
    from txmdb.io._neware_csv import looks_like_neware_csv

    text = _decode(head, path, text_encoding(head, path, encoding), partial=True)
    return "neware-csv" if looks_like_neware_csv(text.splitlines()[:3]) else "csv"


def text_codec(name: str) -> str:
    """The codec ``name`` stands for (``--encoding``, a harvest rule's ``encoding``), if it
    decodes bytes to text; ValueError otherwise: an unknown name, or a codec such as
    ``rot13``, ``base64`` or ``zlib_codec`` that Python looks up but that is not a text
    encoding (decoding with it raised LookupError)."""
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):     # ValueError: a NUL in the name
        raise ValueError(f"unknown text encoding {name!r}") from None
    if not getattr(info, "_is_text_encoding", True) or info.name == "undefined":
        raise ValueError(f"{name!r} is not a text encoding")
    return info.name


def text_encoding(head: bytes, source, requested: str | None = None) -> str:
    """The encoding of a cycler text file, from its first bytes ``head``.

    ``requested`` (``--encoding``) wins when it is a known codec. Otherwise UTF-8 (with or
    without a byte-order mark), then GB18030, then Windows-1252 — but Windows-1252 before
    GB18030 when the header lines hold a Windows-1252 ``µ`` or ``°`` right before a unit
    letter, which GB18030 would turn into Chinese characters.

    Raises
    ------
    InputError
        An unknown ``requested`` codec, or bytes none of the three encodings decode.
    """
    if requested:
        try:
            return text_codec(requested)
        except ValueError as exc:
            raise InputError(source, str(exc)) from None
    order = list(_ENCODINGS)
    if _CP1252_UNIT_SYMBOL.search(b"\n".join(head.splitlines()[:3])):
        order.remove("cp1252")
        order.insert(1, "cp1252")
    for encoding in order:
        try:
            _decode(head, source, encoding, partial=True)
        except InputError:
            continue
        return encoding
    raise InputError(source, "not a text file (neither UTF-8, GB18030 nor Windows-1252; "
                     "name its encoding with --encoding)")


def read_cycler_file(
    path: str | os.PathLike,
    *,
    file_format: str = "auto",
    columns: dict[str, str] | None = None,
    encoding: str | None = None,
) -> CyclerRecords:
    """Read a cycler file into the normalised record table.

    Parameters
    ----------
    path : path-like
        The cycler file.
    file_format : {"auto", "ndax", "nda", "neware-csv", "csv"}
        ``"auto"`` decides from the content (:func:`detect_format`).
    columns : dict, optional
        Record column → file column, overriding the recognised names (plain CSV only);
        see :func:`parse_column_map`.
    encoding : str, optional
        Text encoding of a CSV file; by default it is read from the bytes
        (:func:`text_encoding`).

    Returns
    -------
    CyclerRecords

    Raises
    ------
    InputError
        Naming the file and the problem: unreadable, damaged or empty files, missing or
        non-numeric columns, an unknown format or column key.
    """
    path = Path(path)
    if file_format not in FORMATS:
        raise InputError(path, f"unknown format {file_format!r} (known: {', '.join(FORMATS)})")
    _check_file_size(path)
    detected = detect_format(path, encoding=encoding)
    fmt = detected if file_format == "auto" else file_format
    if columns:
        unknown = sorted(set(columns) - set(CANONICAL_KEYS))
        if unknown:
            raise InputError(path, f"unknown column key(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(CANONICAL_KEYS)})")
        if fmt != "csv":
            raise InputError(path, f"column mapping applies to plain CSV, not {fmt} files")

    if fmt in ("ndax", "nda"):
        if detected not in ("ndax", "nda"):
            raise InputError(path, f"not a Neware {fmt} file (content looks like {detected})")
        raw, column_map, scope = _read_neware_binary(path, detected)
    elif fmt == "neware-csv":
        from txmdb.io._neware_csv import read_neware_csv

        text = _read_text(path, encoding)
        raw, column_map = read_neware_csv(text, path)
        scope = "step"
    else:
        if detected in ("ndax", "nda"):
            raise InputError(path, f"a Neware {detected} file, not a CSV")
        raw, column_map = _read_plain_csv(path, columns, encoding)
        scope = "running"
    frame, has_capacity = _normalise(raw, path, capacity_scope=scope, column_map=column_map,
                                     row_name=_ROW_NAMES[fmt])
    return CyclerRecords(frame=frame, file_format=fmt, column_map=column_map,
                         has_capacity=has_capacity)


def require_cycling(records: CyclerRecords, source) -> None:
    """Refuse records without one complete charge or discharge step.

    A complete step has two or more records over a positive time. A file of rests only
    (or of one record) has no cycle to measure: ingesting it would record a cycle of NaNs.

    Raises
    ------
    InputError
        Naming ``source``, the record count and, when so, that the current is zero throughout.
    """
    frame = records.frame
    steps = frame.groupby("step", sort=False).agg(
        kind=("step_type", "first"), n=("time_s", "size"), t0=("time_s", "first"),
        t1=("time_s", "last"),
    )
    complete = (steps["kind"].astype(str) != "rest") & (steps["n"] > 1) & (steps["t1"] > steps["t0"])
    if complete.any():
        return
    n = len(frame)
    detail = ", zero current throughout" if not frame["current_a"].any() else ""
    raise InputError(source, f"no complete charge or discharge step ({n} record"
                     f"{'' if n == 1 else 's'}{detail})")


# --------------------------------------------------------------------------- readers


class _LogCollector(logging.Handler):
    """Collects fastnda's log records instead of letting them print tracebacks."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _captured_fastnda_log():
    logger = logging.getLogger("fastnda")
    handler = _LogCollector()
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate


def _read_neware_binary(path: Path, fmt: str) -> tuple[pd.DataFrame, dict[str, str], str]:
    """Neware ``.nda``/``.ndax`` through fastnda; its logged errors mean a damaged file."""
    if fmt == "ndax":
        _check_ndax_archive(path)
    import fastnda

    with contextlib.ExitStack() as stack:
        source = path
        if path.suffix.lower() != f".{fmt}":
            # fastnda picks its parser by suffix; give it a correctly named link.
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            source = tmp / f"data.{fmt}"
            try:
                source.symlink_to(path.resolve())
            except OSError:
                import shutil

                shutil.copyfile(path, source)
        logs = stack.enter_context(_captured_fastnda_log())
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                df = fastnda.read(source)
        except Exception as exc:  # fastnda raises many types on damaged files
            raise InputError(path, f"damaged Neware {fmt} file ({type(exc).__name__}: {exc})") \
                from None
    errors = [r for r in logs if r.levelno >= logging.ERROR]
    if errors:
        raise InputError(path, f"damaged Neware {fmt} file: {errors[0].getMessage()}")
    for rec in logs:
        warnings.warn(f"{path}: {rec.getMessage()}", stacklevel=3)
    for w in caught:
        if "fastnda" in w.filename or w.category.__module__.startswith("fastnda"):
            warnings.warn(f"{path}: {w.message}", stacklevel=3)
        else:  # not about the file (e.g. a garbage-collected connection): pass it on as it was
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if df.height == 0:
        raise InputError(path, "no records")

    def col(name: str, factor: float = 1.0) -> np.ndarray:
        return df.get_column(name).cast(float).to_numpy() * factor

    raw = pd.DataFrame({
        "time_s": col("total_time_s"),
        "voltage_v": col("voltage_V"),
        "current_a": col("current_mA", 1e-3),
        "cycle": df.get_column("cycle_count").to_numpy(),
        "step": df.get_column("step_count").to_numpy(),
        "step_type": df.get_column("step_type").cast(str).to_numpy(),
        "capacity_ah": col("capacity_mAh", 1e-3),
        "energy_wh": col("energy_mWh", 1e-3),
    })
    column_map = {
        "time_s": "total_time_s", "voltage_v": "voltage_V", "current_a": "current_mA",
        "cycle": "cycle_count (fastnda, cycle_mode='chg')", "step": "step_count",
        "step_type": "step_type", "capacity_ah": "capacity_mAh", "energy_wh": "energy_mWh",
    }
    return raw, column_map, "step"


def _check_ndax_archive(path: Path) -> None:
    """Refuse a ``.ndax`` ZIP that would unpack to more than the limits, before fastnda unpacks it.

    fastnda reads each member whole (``ZipFile.read``), and Python's zipfile then inflates
    the member's whole stream in one call, whatever size the directory declares. So the
    directory's sizes are checked against :data:`MAX_NDAX_UNPACKED_BYTES` and
    :data:`MAX_NDAX_RATIO` first, and each deflated stream is then inflated here, 1 MiB at
    a time and thrown away, to prove it holds no more than its entry declares.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(path, f"damaged Neware ndax file ({exc})") from None
    unpacked = sum(info.file_size for info in infos)
    packed = sum(info.compress_size for info in infos)
    if unpacked > NDAX_RATIO_FLOOR_BYTES and unpacked > MAX_NDAX_RATIO * max(packed, 1):
        raise InputError(
            path, f"ZIP directory declares {_size(unpacked)} unpacked from {_size(packed)} "
            f"({unpacked / max(packed, 1):.0f}×, more than the {MAX_NDAX_RATIO}× a Neware file "
            "compresses): refused as a likely ZIP bomb",
        )
    if unpacked > MAX_NDAX_UNPACKED_BYTES:
        raise InputError(path, f"ZIP directory declares {_size(unpacked)} unpacked, more than "
                         f"the {_size(MAX_NDAX_UNPACKED_BYTES)} limit for a .ndax file")
    with open(path, "rb") as fh:
        for info in infos:
            if info.flag_bits & 0x1:
                raise InputError(path, f"ZIP member {info.filename!r} is encrypted")
            if info.compress_type == zipfile.ZIP_DEFLATED:
                _check_deflated_member(fh, info, path)
            elif info.compress_type != zipfile.ZIP_STORED:
                # bzip2 and lzma members are inflated without any output bound by zipfile.
                raise InputError(path, f"ZIP member {info.filename!r} uses compression method "
                                 f"{info.compress_type}; Neware .ndax files use deflate")


def _check_deflated_member(fh, info: zipfile.ZipInfo, path: Path) -> None:
    """Inflate one member's stream in bounded steps; refuse it past its declared size."""
    import zlib

    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) < 30 or local[:4] != _ZIP_MAGIC:
        raise InputError(path, f"damaged Neware ndax file (no local header for {info.filename!r})")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    fh.seek(info.header_offset + 30 + name_len + extra_len)
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    left, produced, step = info.compress_size, 0, 1 << 20
    try:
        while left > 0 and not inflate.eof:
            data = fh.read(min(step, left))
            if not data:
                break
            left -= len(data)
            while data and not inflate.eof:
                produced += len(inflate.decompress(data, step))
                if produced > info.file_size:
                    raise InputError(
                        path, f"ZIP member {info.filename!r} inflates to more than the "
                        f"{_size(info.file_size)} its directory entry declares: refused",
                    )
                data = inflate.unconsumed_tail
    except zlib.error as exc:
        raise InputError(path, f"damaged Neware ndax file ({info.filename}: {exc})") from None


def _check_file_size(path: Path) -> None:
    """Refuse a file larger than MAX_CYCLER_FILE_BYTES before anything reads it into memory."""
    try:
        size = path.stat().st_size
    except OSError:
        return  # detect_format's open names the problem
    if size > MAX_CYCLER_FILE_BYTES:
        raise InputError(path, f"{_size(size)}, more than the {_size(MAX_CYCLER_FILE_BYTES)} limit for a cycler file")


def _size(n_bytes: int) -> str:
    """Byte count for a message: ``3.0 GiB``, ``2.9 MiB``, ``812 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"


def _decode(data: bytes, source, encoding: str, *, partial: bool = False) -> str:
    """Text of ``data`` in ``encoding``; a sniffed prefix may end inside a character."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        if partial and exc.start >= len(data) - 4:
            with contextlib.suppress(UnicodeDecodeError):
                return data[: exc.start].decode(encoding)
        raise InputError(source, f"not {encoding} text (byte {exc.start}); name the file's "
                         "encoding with --encoding") from None
    except UnicodeError as exc:    # codecs such as punycode fail without a byte position
        raise InputError(source, f"not {encoding} text ({visible(str(exc))}); name the file's encoding "
                         "with --encoding") from None


def _read_text(path: Path, encoding: str | None = None) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise InputError(path, "binary content: not a CSV text file")
    return _decode(data, path, text_encoding(data[:_SNIFF_BYTES], path, encoding))


@dataclass
class _LineCells:
    """Cell counts of a CSV's lines: the first line with too many cells, and the last line's."""

    first_overlong: tuple[int, int] | None  # (line number, cells)
    last: int


def _count_cells(path: Path, sep: str, n_header: int) -> _LineCells:
    """Cells per line of the whole file, counted on its bytes in blocks (bounded memory).

    Separators inside double quotes do not count. Lines end at LF, CRLF or a lone CR.
    pandas, asked for some columns only, silently ignores extra cells, so a comma-separated
    file with decimal commas would be read shifted; this finds such lines.
    """
    sep_byte, block_size = ord(sep), 8 << 20
    first_overlong, last, line_base, quoted, carry = None, 0, 1, 0, b""
    with open(path, "rb") as fh:
        while True:
            block = fh.read(block_size)
            data = carry + block
            if not data:
                break
            if block:  # keep a partial last line for the next block
                cut = (data.rfind(b"\n") + 1) or (data.rfind(b"\r") + 1)
                data, carry = data[:cut], data[cut:]
                if not data:
                    continue
            else:
                carry = b""
            arr = np.frombuffer(data, dtype=np.uint8)
            ends = np.flatnonzero(arr == 10)
            if b"\r" in data:
                cr = np.flatnonzero(arr == 13)
                ends = np.union1d(ends, cr[arr[np.minimum(cr + 1, arr.size - 1)] != 10])
            seps = np.flatnonzero(arr == sep_byte)
            if b'"' in data:
                quotes = np.flatnonzero(arr == 34)
                seps = seps[(np.searchsorted(quotes, seps) + quoted) % 2 == 0]
                quoted = (quoted + quotes.size) % 2
            # Separators before each line end → separators per line (the last: after the last end).
            cells = np.diff(np.r_[0, np.searchsorted(seps, ends), seps.size]) + 1
            last_content = _last_content(data)  # blank trailing lines do not count
            if last_content >= 0:
                last = int(cells[np.searchsorted(ends, last_content)])
            over = np.flatnonzero(cells > n_header)
            if first_overlong is None and over.size:
                first_overlong = (line_base + int(over[0]), int(cells[over[0]]))
            line_base += ends.size
            if not block:
                break
    return _LineCells(first_overlong, last)


def _last_content(data: bytes) -> int:
    """Index of the last byte that is not white space, or -1 (strips a short tail first:
    stripping a whole block copies it)."""
    tail = data[-4096:].rstrip()
    if tail:
        return len(data) - min(len(data), 4096) + len(tail) - 1
    return len(data.rstrip()) - 1 if len(data) > 4096 else -1


def _csv_separator(header_line: str) -> str:
    """The header line's cell separator: the most frequent of comma, semicolon and tab."""
    counts = {sep: len(next(csv.reader([header_line], delimiter=sep), [])) for sep in _SEPARATORS}
    return max(_SEPARATORS, key=lambda sep: counts[sep])  # ties: the first, a comma


def _decimal_mark(path: Path, sample: list[str], sep: str, columns: list[int],
                  names: list[str]) -> str:
    """``"."`` or ``","``: how the numeric columns of the sampled lines write decimals."""
    comma, point = None, None
    try:
        rows = list(csv.reader(sample, delimiter=sep))
    except csv.Error:
        rows = []  # pandas reports what is wrong with such lines
    for row in rows:
        for i in columns:
            cell = row[i].strip() if i < len(row) else ""
            if comma is None and _DECIMAL_COMMA.match(cell):
                comma = (names[i], cell)
            elif point is None and _DECIMAL_POINT.match(cell):
                point = (names[i], cell)
    if comma and point:
        raise InputError(path, f"mixes decimal commas ({comma[1]!r} in {comma[0]!r}) and "
                         f"decimal points ({point[1]!r} in {point[0]!r})")
    return "," if comma else "."


def _read_plain_csv(path: Path, columns: dict[str, str] | None,
                    encoding: str | None = None) -> tuple[pd.DataFrame, dict]:
    """A plain CSV with recognised or user-mapped column names → canonical raw columns.

    The cell separator (comma, semicolon or tab) comes from the header line and the
    decimal mark (point or comma, e.g. ``3,85`` in European exports, quoted when the
    separator is a comma too) from the first lines' numbers. A comma-separated file whose
    decimal commas are not quoted is ambiguous and refused.
    """
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise InputError(path, "binary content: not a CSV text file")
    encoding = text_encoding(head, path, encoding)
    head_lines = _decode(head, path, encoding, partial=True).splitlines()
    # A file of blank lines or only a byte-order mark has no header line at all.
    header_line = next(iter(head_lines), "")
    sep = _csv_separator(header_line)
    try:
        header = list(pd.read_csv(io.StringIO(header_line), sep=sep, nrows=0,
                                  skipinitialspace=True).columns)
    except pd.errors.EmptyDataError:
        raise InputError(path, "empty CSV (no header)") from None
    if len(header) < 2:
        raise InputError(path, "not a comma-, semicolon- or tab-separated table "
                         "(fewer than two columns)")
    found = match_columns(header)
    if columns:
        absent = [c for c in columns.values() if c not in header]
        if absent:
            raise InputError(path, f"column(s) {', '.join(map(repr, absent))} not in the file")
        found.update(columns)
    missing = [k for k in REQUIRED_KEYS if k not in found]
    if missing:
        raise InputError(
            path, f"missing needed column(s) for {', '.join(missing)} (map them with "
            f"--columns KEY=COLUMN; header: {', '.join(header[:12])})",
        )
    factors = column_factors(path, {k: c for k, c in found.items() if k != "step_type"})

    lines = _count_cells(path, sep, len(header))
    if lines.first_overlong is not None:
        line, n_cells = lines.first_overlong
        hint = (": decimal commas in a comma-separated file? Export with ';' between cells, "
                "or with '.' as the decimal mark") if sep == "," else ""
        raise InputError(path, f"line {line} has {n_cells} cells but the header has "
                         f"{len(header)}{hint}")
    numeric = sorted({header.index(c) for k, c in found.items() if k != "step_type"})
    # The sniffed block's last line may be cut; it is not needed to tell the decimal mark.
    decimal = _decimal_mark(path, head_lines[1:-1] if len(head) == _SNIFF_BYTES else head_lines[1:],
                            sep, numeric, header)

    # Only the mapped columns are parsed (wide Arbin exports carry dozens more); pandas'
    # C parser converts numbers directly, garbage is located afterwards.
    usecols = sorted(set(found.values()), key=header.index)
    try:
        table = pd.read_csv(path, usecols=usecols, sep=sep, decimal=decimal, encoding=encoding,
                            skipinitialspace=True,
                            dtype={found["step_type"]: str} if "step_type" in found else None,
                            engine="c", low_memory=False)
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not {encoding} text (byte {exc.start}); name the file's "
                         "encoding with --encoding") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(path, f"damaged CSV: {str(exc).splitlines()[0]}") from None
    if len(table) and lines.last < len(header):
        warnings.warn(f"{path}: dropped a truncated final line", TruncatedFileWarning,
                      stacklevel=3)
        table = table.iloc[:-1]
    if len(table) == 0:
        raise InputError(path, "no records (header only)")

    raw = pd.DataFrame(index=table.index)
    for key, column in found.items():
        cells = table[column]
        if key == "step_type":
            raw[key] = cells.to_numpy(dtype=object)
            continue
        if cells.dtype.kind not in "fiub":
            # As text: a cell of 400 digits is a Python int that to_numeric cannot convert.
            values = pd.to_numeric(cells.astype("string"), errors="coerce").astype(float)
            garbage = values.isna() & cells.notna()
            if garbage.any():
                row = int(np.flatnonzero(garbage.to_numpy())[0])
                raise InputError(
                    path, f"non-numeric value {cells.iloc[row]!r} in column {column!r} "
                    f"(line {table.index[row] + 2})",
                )
            cells = values
        raw[key] = cells.to_numpy(dtype=float) * factors[key]
    return raw.reset_index(drop=True), dict(found)


# --------------------------------------------------------------------------- normalisation


def _segment_starts(*keys: np.ndarray) -> np.ndarray:
    """Boolean mask: True where any key differs from the previous record (and at 0)."""
    n = len(keys[0])
    starts = np.zeros(n, dtype=bool)
    starts[0] = True
    for key in keys:
        starts[1:] |= key[1:] != key[:-1]
    return starts


def _classify_step_names(names: np.ndarray) -> np.ndarray:
    """Cycler step names → +1 charge, −1 discharge, 0 rest, 2 unknown (decide by current)."""
    uniques, inverse = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    codes = np.full(len(uniques), 2, dtype=np.int8)
    for i, name in enumerate(uniques):
        flat = re.sub(r"[^a-z]", "", name.lower())
        if re.search(r"dchg|dischg|discharg|^d$", flat):
            codes[i] = -1
        elif re.search(r"chg|charg|^c$", flat):
            codes[i] = 1
        elif re.search(r"rest|pause|ocv|opencircuit|relax|^r$", flat):
            codes[i] = 0
    return codes[inverse]


def _per_step_cumulative(values: np.ndarray, starts: np.ndarray, scope: str) -> np.ndarray:
    """Capacity/energy since the start of each step, from a cycler column.

    ``scope="step"``: the column already restarts at every step (Neware); magnitudes are used.
    ``scope="running"``: the column accumulates over several steps (a cycle, the test) and
    may be reset anywhere; increments are summed per step, a drop counting as a reset.
    """
    v = pd.Series(np.abs(values)).ffill().fillna(0.0).to_numpy()
    if scope == "step":
        return v
    inc = np.empty_like(v)
    inc[0] = v[0]
    inc[1:] = v[1:] - v[:-1]
    reset = inc < 0
    inc[reset] = v[reset]
    total = np.cumsum(inc)
    base = (total - inc)[starts]
    return total - np.repeat(base, np.diff(np.r_[np.flatnonzero(starts), len(v)]))


# How an error names the i-th record (0-based) of each format: a plain CSV's line (after
# its header line); the records of the others (a Neware CSV interleaves other rows).
_ROW_NAMES = {
    "csv": lambda i: f"line {i + 2}",
    "neware-csv": lambda i: f"record {i + 1}",
    "ndax": lambda i: f"record {i + 1}",
    "nda": lambda i: f"record {i + 1}",
}


def _check_cycle_numbers(cycle: pd.Series, source, column: str, row_name) -> None:
    """Cycle numbers must be whole numbers from 0 to MAX_CYCLE_NUMBER (no NaN, no inf)."""
    values = cycle.to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) \
            | (values > MAX_CYCLE_NUMBER)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    value = values[i]
    shown = "missing" if np.isnan(value) else f"{value:.15g}"
    raise InputError(source, f"cycle number {shown} in column {column!r} ({row_name(cycle.index[i])}) "
                     f"is not a whole number from 0 to {MAX_CYCLE_NUMBER}")


def _normalise(raw: pd.DataFrame, source, *, capacity_scope: str, column_map: dict[str, str],
               row_name) -> tuple[pd.DataFrame, bool]:
    """Canonical raw columns (any subset, see CANONICAL_KEYS) → the record table.

    ``column_map`` (key → the file's column) and ``row_name`` (record position → "line 7")
    name the place of a bad value in errors.
    """
    # Drop records without time, voltage or current (blank trailing cells, a cut last row).
    required = raw[list(REQUIRED_KEYS)].to_numpy(dtype=float)
    complete = ~np.isnan(required).any(axis=1)
    if not complete.all():
        n_bad = int((~complete).sum())
        if complete.any() and n_bad == 1 and not complete[-1]:
            warnings.warn(f"{source}: dropped an incomplete final record", TruncatedFileWarning,
                          stacklevel=3)
        elif n_bad:
            first = int(np.flatnonzero(~complete)[0])
            raise InputError(source, f"{n_bad} record(s) without time, voltage or current "
                             f"(first: record {first + 1})")
        raw = raw.loc[complete]
    if "cycle" in raw:
        _check_cycle_numbers(raw["cycle"], source, column_map.get("cycle", "cycle"), row_name)
    raw = raw.reset_index(drop=True)
    n = len(raw)
    if n == 0:
        raise InputError(source, "no records")
    if not np.isfinite(raw[list(REQUIRED_KEYS)].to_numpy(dtype=float)).all():
        raise InputError(source, "infinite time, voltage or current values")

    time = raw["time_s"].to_numpy(dtype=float)
    voltage = raw["voltage_v"].to_numpy(dtype=float)
    current = raw["current_a"].to_numpy(dtype=float)
    threshold = _REST_FRACTION * max(float(np.abs(current).max()), 1e-300)

    has_cycle = "cycle" in raw
    cycle_key = raw["cycle"].to_numpy(dtype=float) if has_cycle else np.zeros(n)
    step_key = raw["step"].to_numpy(dtype=float) if "step" in raw else None
    if "step_type" in raw and raw["step_type"].notna().all():
        named = _classify_step_names(raw["step_type"].to_numpy())
    else:
        named = None

    # Sign convention: the cycler's step names or its charge-capacity column tell which
    # current direction charges; positive is charge here.
    flip = False
    if named is not None and ((named == 1).any() or (named == -1).any()):
        flip = current[named == 1].sum() + -current[named == -1].sum() < 0
    elif "charge_capacity_ah" in raw and raw["charge_capacity_ah"].notna().any():
        q = pd.Series(raw["charge_capacity_ah"].to_numpy(dtype=float)).ffill().fillna(0.0)
        rising = np.r_[False, np.diff(q.to_numpy()) > 0]
        flip = current[rising].sum() < 0
    if flip:
        current = -current

    # Steps: contiguous runs of the file's step (and type) within a cycle; without step
    # information, runs of charging / discharging / resting current.
    sign_class = np.where(current > threshold, 1, np.where(current < -threshold, -1, 0))
    keys = [cycle_key]
    if step_key is not None:
        keys.append(step_key)
    if named is not None:
        keys.append(named)
    if step_key is None and named is None:
        keys.append(sign_class)
    starts = _segment_starts(*keys)
    seg = np.cumsum(starts) - 1
    n_seg = int(seg[-1]) + 1
    seg_len = np.bincount(seg, minlength=n_seg)
    seg_mean = np.bincount(seg, weights=current, minlength=n_seg) / seg_len
    by_current = np.where(seg_mean > threshold, 1, np.where(seg_mean < -threshold, -1, 0))
    seg_type = by_current
    if named is not None:
        seg_named = named[starts]
        seg_type = np.where(seg_named == 2, by_current, seg_named)
    rec_type = seg_type[seg]

    if has_cycle:
        cycle = raw["cycle"].to_numpy(dtype=float).astype(np.int64)
    else:
        # No cycle column: a new cycle starts at a charge step following a discharge step.
        last_active = pd.Series(np.where(seg_type == 0, np.nan, seg_type)).ffill().to_numpy()
        prev_active = np.r_[np.nan, last_active[:-1]]
        new_cycle = (seg_type == 1) & (prev_active == -1)
        cycle = (1 + np.cumsum(new_cycle))[seg]

    frame = pd.DataFrame({
        "time_s": time,
        "voltage_v": voltage,
        "current_a": current,
        "cycle": cycle,
        "step": seg + 1,
        "step_type": pd.Categorical.from_codes(
            np.select([rec_type == 1, rec_type == -1], [0, 1], 2), categories=list(STEP_TYPES)
        ),
    })

    def cumulative(key: str) -> np.ndarray | None:
        if key in raw and raw[key].notna().any():
            return _per_step_cumulative(raw[key].to_numpy(dtype=float), starts, capacity_scope)
        return None

    has_capacity = False
    for quantity, net_key in (("capacity_ah", "capacity_ah"), ("energy_wh", "energy_wh")):
        chg = cumulative(f"charge_{quantity}")
        dis = cumulative(f"discharge_{quantity}")
        if chg is None and dis is None and (net := cumulative(net_key)) is not None:
            # One column for both directions: the step's direction decides.
            chg = np.where(rec_type == 1, net, 0.0)
            dis = np.where(rec_type == -1, net, 0.0)
        nan = np.full(n, np.nan)
        frame[f"charge_{quantity}"] = nan if chg is None else chg
        frame[f"discharge_{quantity}"] = nan if dis is None else dis
        if quantity == "capacity_ah":
            has_capacity = chg is not None or dis is not None
    return frame[RECORD_COLUMNS], has_capacity
