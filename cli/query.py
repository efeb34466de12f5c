"""``txmdb query …``: long, tidy tables across samples, cells, cycles and scans.

Each table's command is built from its query's declaration (:data:`txmdb.query.QUERIES`):
it has an option for every filter the query honours and no other, so ``--help`` lists
exactly those, and an option of another table is a usage error (one line, exit status 2)
rather than a filter silently ignored.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import List, Optional

import typer

from txmdb.cli._common import (
    CommandGroup, FormatOption, OutputFormat, OutputOption, UsageError, catalog, emit_table, number_parser,
    shown_as_written, whole_option,
)
from txmdb.query import QUERIES
from txmdb.vocabulary import (
    DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, FILTERS, MAX_SQL_ROWS, MAX_TIMEOUT_S, Filter,
)

# Every spelling of every filter option ("--weighted" and "--unweighted" alike).
_FLAGS = {flag: f for f in FILTERS.values() for spelling in f.flags for flag in spelling.split("/")}


class _QueryGroup(CommandGroup):
    """A filter a query command does not have, named with the filters it does have (other usage
    errors are the main group's one line)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            name = ctx.invoked_subcommand
            spec = QUERIES.get(name)
            flag = getattr(exc, "option_name", None)
            if spec is None or flag not in _FLAGS or _FLAGS[flag].name in spec.filters:
                raise
            own = [FILTERS[f].flags[0] for f in spec.filters]
            # name and flag are from QUERIES and FILTERS, never typed: nothing to escape
            typer.echo(f"error: query {name} does not filter by {flag}; its filters: {', '.join(own) or 'none'}",
                       err=True)
            raise typer.Exit(2) from None


app = typer.Typer(cls=_QueryGroup, help="Query across samples, cells, cycles and scans.", no_args_is_help=True)


def _parameter(f: Filter) -> inspect.Parameter:
    """The typer option of one filter or query parameter."""
    shown = shown_as_written(f.help)
    if f.type is bool:
        annotation = Optional[bool] if f.default is None else bool
        option = typer.Option(f.default, *f.flags, help=shown)
    elif f.multiple and f.type is int:
        annotation = Optional[List[str]]
        option = typer.Option(None, *f.flags, parser=number_parser(f.read), metavar="N[,N…]", help=shown)
    elif f.multiple:
        annotation = Optional[List[str]]
        option = typer.Option(None, *f.flags, help=shown)
    elif f.type is int:
        annotation = str if f.default is not None else Optional[str]
        option = typer.Option(f.default, *f.flags, parser=number_parser(f.read), metavar="N", help=shown)
    else:
        annotation = f.type if f.default is not None else Optional[f.type]
        option = typer.Option(f.default, *f.flags, help=shown)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def table_command(name: str, doc: str | None = None):
    """A command printing query ``name``'s table, with an option for each filter it declares."""
    spec = QUERIES[name]
    numeric = {f for f in spec.filters if FILTERS[f].multiple and FILTERS[f].type is int}

    def command(ctx, fmt, output, **values) -> None:
        # Repeated options of numeric filters arrive as one list per occurrence.
        for key in numeric & values.keys():
            values[key] = [n for part in values[key] for n in part] if values[key] else None
        emit_table(spec.function(catalog(ctx), **values), fmt, output)

    keyword = inspect.Parameter.KEYWORD_ONLY
    command.__signature__ = inspect.Signature([
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *(_parameter(p) for p in spec.parameters),
        *(_parameter(FILTERS[f]) for f in spec.filters),
        inspect.Parameter("fmt", keyword, default=FormatOption, annotation=Optional[OutputFormat]),
        inspect.Parameter("output", keyword, default=OutputOption, annotation=Optional[Path]),
    ])
    command.__doc__ = doc or spec.summary
    command.__name__ = name.replace("-", "_")
    return command


for _name in QUERIES:
    app.command(_name)(table_command(_name))


def _seconds(value: float) -> float:
    if math.isnan(value):  # a range lets NaN through: no comparison with it is true
        raise typer.BadParameter("nan is not a number of seconds")
    return value


@app.command("sql")
def sql(ctx: typer.Context, statement: str = typer.Argument(..., help="One SELECT statement."),
        timeout: float = typer.Option(DEFAULT_TIMEOUT_S, "--timeout", min=0.001, max=MAX_TIMEOUT_S,
                                      callback=_seconds, metavar="SECONDS",
                                      help="Stop the statement after this long (on the server, for PostgreSQL)."),
        max_rows: int = whole_option(DEFAULT_MAX_ROWS, "--max-rows", low=1, high=MAX_SQL_ROWS, metavar="N",
                                     help="Return at most N rows; a note on stderr says when more were cut."),
        fmt: Optional[OutputFormat] = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """Run one read-only SQL query on the catalogue: it can never write, and it is bounded in time and rows.

    On PostgreSQL it runs as the read-only reporting role (see `txmdb db reporting-role`).
    """
    from txmdb.errors import TxmdbError
    from txmdb.readonly_sql import QueryTimeout, run_readonly_sql

    cat = catalog(ctx)
    try:
        result = run_readonly_sql(cat.engine.url, statement, timeout=timeout, max_rows=max_rows)
    except QueryTimeout as exc:
        raise TxmdbError(f"{exc} (--timeout)") from None
    try:
        emit_table(result.frame, fmt, output)
    except MemoryError:
        from txmdb.readonly_sql import OUT_OF_MEMORY

        raise TxmdbError(f"{OUT_OF_MEMORY} (--max-rows)") from None
    if result.cut:
        typer.echo(f"note: the result was cut at {max_rows} rows (--max-rows)", err=True)
