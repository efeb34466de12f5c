"""What every command shares: the catalogue from the global options, and table output."""

from __future__ import annotations

import datetime
import numbers
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from txmdb.options import parse_window  # noqa: F401  (the commands' window parser, shared with jobs)
from txmdb.vocabulary import OutputFormat


class CommandGroup(TyperGroup):
    """A command group whose commands' ParameterErrors name their options.

    Catalogue services name the parameter of a bad value by its keyword (``voxel_nm``);
    the command that passed it knows its option (``--voxel-nm``): the group looks it up in
    the command that failed and keeps it on the error (``options``) for the line printed.
    """

    def invoke(self, ctx):
        from txmdb.errors import ParameterError

        try:
            return super().invoke(ctx)
        except ParameterError as exc:
            command = self.commands.get(ctx.invoked_subcommand or "")
            # A subgroup is not the command that took the value: leave the error to it.
            if not getattr(exc, "options", None) and command is not None and not hasattr(command, "commands"):
                flags = {p.name: p.opts[0] for p in command.params if p.opts}
                exc.options = [flags.get(name, name) for name in exc.parameters]
            raise


def error_line(exc) -> str:
    """The text of a TxmdbError, after the options of its parameters when a CommandGroup found them."""
    options = getattr(exc, "options", None)
    return f"{', '.join(options)}: {exc}" if options else str(exc)


# Values the table and CSV formats show as they are: numbers (Decimal, numpy and bool too) and dates.
_NOT_TEXT = (numbers.Number, datetime.date, datetime.time, datetime.timedelta)

FormatOption = typer.Option(OutputFormat.table, "--format", "-f", help="Output format of the table.")
OutputOption = typer.Option(None, "--output", "-o",
                            help="Write the table to this file instead of the terminal (its folder must exist).")


def catalog(ctx: typer.Context, *, check: bool = True):
    """The catalogue named by the global --db/--store options (or their environment variables)."""
    from txmdb.catalog import open_catalog

    root = ctx.find_root()
    obj = root.obj or {}
    return open_catalog(obj.get("db"), obj.get("store"), check=check)


def emit_table(frame, fmt: OutputFormat = OutputFormat.table, output: Optional[Path] = None) -> None:
    """Print or write a pandas DataFrame in the chosen format.

    Stored text is shown safely (:mod:`txmdb.textsafe`): the table format escapes control
    characters, CSV cells cannot start a spreadsheet formula; JSON and parquet are faithful.
    CSV printed to a terminal has its control characters escaped too (JSON is ASCII already);
    in a file or a pipe it stays faithful. With ``output`` the file is written whole or not at all.
    """
    from txmdb.errors import TxmdbError

    if output is not None:
        from txmdb.io.outputs import check_file_destination

        check_file_destination(output)
    if fmt is OutputFormat.parquet:
        if output is None:
            raise TxmdbError("--format parquet needs -o FILE")
        import io

        buffer = io.BytesIO()
        frame.assign(**{c: _parquet_text(frame[c]) for c in frame.columns if frame[c].dtype == object}
                     ).to_parquet(buffer, index=False)
        data = buffer.getvalue()
    else:
        text = _table_text(frame, fmt, terminal=output is None and sys.stdout.isatty())
        if output is None:
            sys.stdout.write(text)
            return
        data = text.encode("utf-8")
    from txmdb.io.outputs import write_files

    write_files({Path(output): data})


def _table_text(frame, fmt: OutputFormat, *, terminal: bool = False) -> str:
    """The frame as CSV, JSON or an aligned text table (``terminal``: for a terminal to show)."""
    from txmdb.textsafe import spreadsheet_cell, visible

    if fmt is OutputFormat.csv:
        cells = (_map_text(frame, lambda text: visible(spreadsheet_cell(text)), objects=True) if terminal
                 else _map_text(frame, spreadsheet_cell))
        text = cells.to_csv(index=False, lineterminator="\n")
        # Python's csv quotes a cell for the characters of the line terminator only: a "\r" in a
        # cell, which readers take for a line break, is quoted only with RFC 4180's "\r\n" line ends.
        return cells.to_csv(index=False, lineterminator="\r\n") if "\r" in text else text
    if fmt is OutputFormat.json:
        import json

        # Round-trip through json: pandas escapes "/" and we want plain text (ASCII, so no
        # control character reaches a terminal either).
        return json.dumps(json.loads(frame.to_json(orient="records", date_format="iso")), indent=1) + "\n"
    return ("(no rows)" if frame.empty else _map_text(frame, visible, objects=True).to_string(index=False)) + "\n"


def _map_text(frame, function, *, objects: bool = False):
    """``function`` applied to every text cell and text column name; numbers and dates untouched.

    With ``objects`` it is applied to the text of every other value too (a JSON ``meta`` dict,
    a list): their keys and items are stored text as well.
    """
    from pandas.api.types import is_string_dtype

    def cell(value):
        if isinstance(value, str):
            return function(value)
        if objects and value is not None and not isinstance(value, _NOT_TEXT):
            return function(str(value))
        return value

    out = frame.copy()
    for i, dtype in enumerate(frame.dtypes):
        if is_string_dtype(dtype):  # object columns too: they may hold text beside other values
            out.isetitem(i, frame.iloc[:, i].map(cell))
    out.columns = [function(c) if isinstance(c, str) else c for c in frame.columns]
    return out


def field_value_table(row):
    """One record (a one-row DataFrame) as a two-column field/value listing."""
    return row.T.reset_index().set_axis(["field", "value"], axis=1)


def _parquet_text(column):
    """Parquet columns need one type: JSON values become JSON text, mixed columns plain text."""
    import json

    values = column.dropna()
    if values.map(type).nunique() > 1 or values.map(lambda v: isinstance(v, (dict, list))).any():
        return column.map(lambda v: None if v is None else
                          json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))
    return column


def echo(message: str) -> None:
    """Print a message; names it quotes cannot act on the terminal (their own line breaks stay)."""
    from txmdb.textsafe import visible

    typer.echo(visible(message, keep="\n"))
