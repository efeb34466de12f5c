"""Query tables as text and bytes: one implementation for the CLI and the HTTP API.

``txmdb query TABLE --format csv`` and ``GET /api/v1/query/TABLE?format=csv`` both print
:func:`table_text`, so their bytes are the same. Stored text is shown safely
(:mod:`txmdb.textsafe`): the table format escapes control characters, CSV cells cannot start
a spreadsheet formula; JSON and parquet are faithful.
"""

from __future__ import annotations

import datetime
import numbers

from txmdb.vocabulary import OutputFormat

# Values the table and CSV formats show as they are: numbers (Decimal, numpy and bool too) and dates.
_NOT_TEXT = (numbers.Number, datetime.date, datetime.time, datetime.timedelta)


def table_text(frame, fmt, *, terminal: bool = False) -> str:
    """The frame as CSV, JSON or an aligned text table (``terminal``: for a terminal to show)."""
    from txmdb.textsafe import spreadsheet_cell, visible

    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.csv:
        cells = (map_text(frame, lambda text: visible(spreadsheet_cell(text)), objects=True) if terminal
                 else map_text(frame, spreadsheet_cell, objects=True))
        text = cells.to_csv(index=False, lineterminator="\n")
        # Python's csv quotes a cell for the characters of the line terminator only: a "\r" in a
        # cell, which readers take for a line break, is quoted only with RFC 4180's "\r\n" line ends.
        return cells.to_csv(index=False, lineterminator="\r\n") if "\r" in text else text
    if fmt is OutputFormat.json:
        return table_json(frame, indent=1) + "\n"
    if frame.empty:
        return "(no rows)\n"
    return _blank_missing(map_text(frame, visible, objects=True)).to_string(index=False, na_rep="") + "\n"


def _blank_missing(frame):
    """The frame with its missing values (None, NA) as empty text, as the web pages show them, not
    as "None" and "<NA>". ``to_string(na_rep="")`` empties NaN and NaT itself; it leaves None in
    object columns and NA in Int64 ones (their numbers keep their format as Python objects)."""
    import pandas as pd

    out = frame.copy()
    for i, dtype in enumerate(frame.dtypes):
        if dtype == object or getattr(dtype, "na_value", None) is pd.NA:
            column = frame.iloc[:, i]
            missing = column.isna()
            if missing.any():
                out.isetitem(i, column.astype(object).mask(missing, ""))
    return out


def table_json(frame, *, indent: int | None = None) -> str:
    """The frame as a JSON array of records (dates ISO 8601, NaN null), ASCII.

    Round-trip through json: pandas escapes "/" and we want plain text (ASCII, so no control
    character reaches a terminal either). Without ``indent`` (the API's answers) it is
    pandas' own one line with "/" unescaped: the same values, and the round trip cost 2/3 of
    a 3,600-row answer's CPU. (Every "/" is escaped by pandas, so each "\\/" is one.)
    """
    import json

    text = frame.to_json(orient="records", date_format="iso")
    if not indent:
        return text.replace("\\/", "/")
    return json.dumps(json.loads(text), indent=indent)


def parquet_bytes(frame) -> bytes:
    """The frame as a parquet file."""
    import io

    buffer = io.BytesIO()
    frame.assign(**{c: parquet_text(frame[c]) for c in frame.columns if frame[c].dtype == object}
                 ).to_parquet(buffer, index=False)
    return buffer.getvalue()


def map_text(frame, function, *, objects: bool = False):
    """``function`` applied to every text cell and text column name; numbers and dates untouched.

    With ``objects`` it is applied to the text of every other value too: a JSON ``meta`` dict or
    a list as JSON text (their keys and items are stored text as well), anything else as ``str``.
    """
    import pandas as pd
    from pandas.api.types import is_string_dtype

    def cell(value):
        if isinstance(value, str):
            return function(value)
        if objects and value is not None and value is not pd.NA and not isinstance(value, _NOT_TEXT):
            return function(_json_text(value) if isinstance(value, (dict, list)) else str(value))
        return value

    out = frame.copy()
    for i, dtype in enumerate(frame.dtypes):
        if is_string_dtype(dtype):  # object columns too: they may hold text beside other values
            column = frame.iloc[:, i]
            try:  # names repeat down a column: each distinct value once, and a column left as it is untouched
                mapped = {value: cell(value) for value in column.unique()}
            except TypeError:  # unhashable values (JSON dicts, lists)
                out.isetitem(i, column.map(cell))
                continue
            if any(_changed(old, new) for old, new in mapped.items()):
                out.isetitem(i, column.map(cell))
    out.columns = [function(c) if isinstance(c, str) else c for c in frame.columns]
    return out


def _json_text(value) -> str:
    """A JSON value as JSON text, as a spreadsheet or a script reads it back (not Python's repr)."""
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


def _changed(old, new) -> bool:
    if new is old:
        return False
    try:
        return bool(new != old)
    except TypeError:  # pd.NA compares to NA
        return True


def parquet_text(column):
    """Parquet columns need one type: JSON values become JSON text, mixed columns plain text."""
    values = column.dropna()
    if values.map(type).nunique() > 1 or values.map(lambda v: isinstance(v, (dict, list))).any():
        return column.map(lambda v: None if v is None else _json_text(v) if isinstance(v, (dict, list)) else str(v))
    return column
