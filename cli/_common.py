"""What every command shares: the catalogue from the global options, and table output."""

from __future__ import annotations

import functools
import re
import sys
import threading
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from txmdb.options import parse_window  # noqa: F401  (the commands' window parser, shared with jobs)
from txmdb.vocabulary import OutputFormat, whole_number

#: Set by the SIGTERM handler (txmdb.cli.main): a stop request that stays asked even where its
#: SystemExit is lost (raised in a finaliser, it is only printed); the worker looks at it.
STOP_REQUESTED = threading.Event()

#: click's UsageError, of the click typer runs on (typer 0.29 vendors its own; only this subclass of
#: it is public), and its "no arguments: show the help" (click >= 8.2; before, no exception)
UsageError = typer.BadParameter.__base__
NoArgsIsHelp = getattr(sys.modules[UsageError.__module__], "NoArgsIsHelpError", ())


class UsageGroup(TyperGroup):
    """A command group that names, on a usage error click raised without a context (an option
    missing its value), the command it was making: the main group's one line names its help."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            if exc.ctx is None and ctx.invoked_subcommand and not hasattr(exc, "command_path"):
                exc.command_path = f"{command_path(ctx)} {ctx.invoked_subcommand}"
            raise


class CommandGroup(UsageGroup):
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


#: what rich markup reads as a tag (rich.markup.escape's pattern; rich is not imported at start-up)
_RICH_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def shown_as_written(help_text: str) -> str:
    """An option's help text for typer's rich help, as written: rich markup took '[default: …]'
    for a style tag and dropped it (literal help texts here write ``\\[`` themselves)."""
    return _RICH_TAG.sub(lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", help_text)


def number_parser(parse):
    """A typer parser of a numeric argument or option by ``parse`` (:func:`txmdb.vocabulary.whole_number`
    or :func:`~txmdb.vocabulary.integer_list`), its ValueError a usage error."""
    def parser(value):
        if not isinstance(value, str):  # a default, already parsed
            return value
        try:
            return parse(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return parser


#: the parser of every id and count typed on the command line: ASCII digits only, as the API and
#: the pages read them (``int`` alone would take '+1', '1_000' and '٣')
whole = number_parser(whole_number)


def whole_option(default, *flags: str, low: int, high: int, help: str, **kwargs):
    """A typer option of the command line's own taking a whole number from ``low`` to ``high`` (as
    :data:`whole` reads it), its range in its help as click's ``min``/``max`` showed it."""
    return typer.Option(default, *flags, parser=number_parser(functools.partial(whole_number, low=low, high=high)),
                        help=f"{help} [{low}<=x<={high}]", **kwargs)


def command_path(ctx) -> str:
    """``txmdb`` and the commands that led to ``ctx``: always ``txmdb``, whatever name the program
    was started by."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["txmdb", *reversed(names)])


def usage_line(exc) -> str:
    """A usage error in one line, naming the help of the command it came from."""
    from txmdb.textsafe import visible

    path = getattr(exc, "command_path", None) or command_path(exc.ctx)
    # click's own line breaks ("Choose from:\n\tviewer,…") are layout; what the user typed is escaped
    message = re.sub(r"\s*\n\s*", " ", exc.format_message())
    return f"error: {visible(message)} (see '{path} --help')"


def error_line(exc) -> str:
    """The text of a TxmdbError, after the options of its parameters when a CommandGroup found them."""
    options = getattr(exc, "options", None)
    return f"{', '.join(options)}: {exc}" if options else str(exc)


def _format_agrees(ctx: typer.Context, fmt, output) -> None:
    """``--format`` and ``-o``'s extension, both given, must agree: refused as a usage error at
    parsing (before a long query runs), by whichever of the two options is parsed second."""
    if fmt is not None and output is not None:
        from txmdb.errors import InputError

        try:
            table_format(fmt, output)
        except InputError as exc:
            raise UsageError(str(exc), ctx) from None


def _format_given(ctx: typer.Context, fmt):
    _format_agrees(ctx, fmt, ctx.params.get("output"))
    return fmt


FormatOption = typer.Option(None, "--format", "-f", callback=_format_given,
                            help="Output format of the table \\[default: what -o FILE's extension names (.csv, "
                                 ".json, .parquet), else table].")


def _not_the_catalogues(ctx: typer.Context, output: Optional[Path]) -> Optional[Path]:
    """``-o`` refused, before the command runs, when it names the catalogue's database, a file
    in its store, or (an existing file) an ingested one, of the catalogue the global options
    name. A SQLite catalogue that does not exist is not created for this."""
    if output is None:
        return output
    _format_agrees(ctx, ctx.params.get("fmt"), output)
    from txmdb.catalog import catalogue_file_problem, refuse_catalogue_file
    from txmdb.db.engine import resolve_url
    from txmdb.errors import DatabaseError, InputError

    url = (ctx.find_root().obj or {}).get("db")
    problem = catalogue_file_problem(output, url, store_root(ctx))
    if problem is not None:
        raise InputError(output, problem)
    resolved = resolve_url(url)
    sqlite_missing = resolved.get_backend_name() == "sqlite" and not Path(resolved.database or "").is_file()
    if Path(output).exists() and not sqlite_missing:
        from sqlalchemy.exc import SQLAlchemyError

        cat = None
        try:
            cat = catalog(ctx)
            refuse_catalogue_file(cat, Path(output))
        except (DatabaseError, SQLAlchemyError):
            pass                        # no catalogue to ask (none there, not txmdb's): the command says so itself
        finally:
            if cat is not None:
                cat.engine.dispose()
    return output


OutputOption = typer.Option(None, "--output", "-o", callback=_not_the_catalogues,
                            help="Write the table to this file instead of the terminal (its folder must exist).")


def catalog(ctx: typer.Context, *, check: bool = True):
    """The catalogue named by the global --db/--store options (or their environment variables)."""
    from txmdb.catalog import open_catalog

    root = ctx.find_root()
    obj = root.obj or {}
    return open_catalog(obj.get("db"), obj.get("store"), check=check)


def store_root(ctx: typer.Context):
    """The results store the global --db/--store options name, without opening the catalogue."""
    from txmdb.catalog import store_path

    obj = ctx.find_root().obj or {}
    return store_path(obj.get("db"), obj.get("store"))


def emit_table(frame, fmt: Optional[OutputFormat] = None, output: Optional[Path] = None) -> None:
    """Print or write a pandas DataFrame in the chosen format (None: :func:`table_format`'s).

    The text is :func:`txmdb.tables.table_text`'s (the API's too). Stored text is shown safely
    (:mod:`txmdb.textsafe`): the table format escapes control
    characters, CSV cells cannot start a spreadsheet formula; JSON and parquet are faithful.
    CSV printed to a terminal has its control characters escaped too (JSON is ASCII already);
    in a file or a pipe it stays faithful. With ``output`` the file is written whole or not at all.
    """
    from txmdb.errors import TxmdbError

    fmt = table_format(fmt, output)
    if output is not None:
        from txmdb.io.outputs import check_file_destination

        check_file_destination(output)
    if fmt is OutputFormat.parquet:
        if output is None:
            raise TxmdbError("--format parquet needs -o FILE")
        from txmdb.tables import parquet_bytes

        data = parquet_bytes(frame)
    else:
        from txmdb.tables import table_text

        text = table_text(frame, fmt, terminal=output is None and sys.stdout.isatty())
        if output is None:
            sys.stdout.write(text)
            return
        data = text.encode("utf-8")
    from txmdb.io.outputs import write_files

    write_files({Path(output): data})


#: The format a table file's extension names (``-o rows.csv`` without ``--format``).
_FORMAT_OF_SUFFIX = {".csv": OutputFormat.csv, ".json": OutputFormat.json, ".parquet": OutputFormat.parquet,
                     ".pq": OutputFormat.parquet}


def table_format(fmt: Optional[OutputFormat], output: Optional[Path]) -> OutputFormat:
    """``--format`` as given, else what ``-o``'s extension names, else the terminal table. A
    format that contradicts the extension is refused: a ``.json`` file of CSV misleads
    whoever opens it next."""
    from txmdb.errors import InputError

    suffix = Path(output).suffix.lower() if output is not None else ""
    named = _FORMAT_OF_SUFFIX.get(suffix)
    if fmt is None:
        return named or OutputFormat.table
    if named is not None and named is not fmt:
        raise InputError(output, f"a {suffix} file, but --format {fmt.value}; leave --format out or make the two agree")
    return fmt


def terminal_table(fmt: Optional[OutputFormat], output: Optional[Path]) -> bool:
    """Whether the table goes to the terminal as the aligned text table (commands that show
    more, or less, there than in a file)."""
    return output is None and table_format(fmt, None) is OutputFormat.table


def field_value_table(row):
    """One record (a one-row DataFrame) as a two-column field/value listing."""
    return row.T.reset_index().set_axis(["field", "value"], axis=1)


def echo(message: str) -> None:
    """Print a one-line message; names it quotes cannot act on the terminal or forge lines
    (a line break in one shows as ``\\n``). Leading line breaks stay: a section's blank line."""
    from txmdb.textsafe import visible

    line = message.lstrip("\n")
    typer.echo("\n" * (len(message) - len(line)) + visible(line))
