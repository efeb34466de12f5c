"""The ``txmdb`` command. Parses, calls txmdb, prints; heavy imports live inside commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from txmdb.cli import db as db_cli
from txmdb.cli import demo as demo_cli
from txmdb.cli import measure as measure_cli
from txmdb.cli import query as query_cli
from txmdb.cli import report as report_cli
from txmdb.cli import txm as txm_cli
from txmdb.cli import sample as sample_cli
from txmdb.cli import worker as worker_cli
from txmdb.cli import watch as watch_cli
from txmdb.cli import serve as serve_cli
from txmdb.cli import user as user_cli
from txmdb.cli._common import STOP_REQUESTED, CommandGroup, NoArgsIsHelp, UsageError, error_line, usage_line


class _CatalogueGroup(CommandGroup):
    """Turns domain errors into one line on stderr and exit status 1 (2 for a filter a query
    does not have), and usage errors into one line and exit status 2, for every command."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:                    # txmdb's own options (--db, --store)
            _usage_exit(exc)

    def invoke(self, ctx):
        from txmdb.errors import FilterError, TxmdbError
        from txmdb.textsafe import visible

        try:
            return super().invoke(ctx)
        except TxmdbError as exc:
            # One line whatever names it quotes: their control characters and undecodable bytes escaped.
            typer.echo(f"error: {visible(error_line(exc))}", err=True)
            raise typer.Exit(2 if isinstance(exc, FilterError) else 1) from None
        except UsageError as exc:
            _usage_exit(exc)


def _usage_exit(exc) -> None:
    if isinstance(exc, NoArgsIsHelp):                # a bare group: its help, as asked
        raise exc
    typer.echo(usage_line(exc), err=True)
    raise typer.Exit(2) from None


app = typer.Typer(
    cls=_CatalogueGroup,
    help="txmdb: catalogue and TXM-XANES valence analysis for battery-materials X-ray studies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global_options(
    ctx: typer.Context,
    db: Optional[str] = typer.Option(None, "--db", envvar="TXMDB_URL", help="Catalogue URL or SQLite file \\[default: sqlite:///txmdb.db]."),
    store: Optional[Path] = typer.Option(None, "--store", envvar="TXMDB_STORE", help="Results store folder \\[default: txmdb-store/ beside a SQLite file]."),
) -> None:
    ctx.obj = {"db": db, "store": store}


app.command("init")(db_cli.init)
app.add_typer(db_cli.app, name="db")
app.command("demo")(demo_cli.demo)
app.add_typer(sample_cli.sample_app, name="sample")
app.add_typer(sample_cli.cell_app, name="cell")
app.add_typer(measure_cli.cycling_app, name="cycling")
app.add_typer(measure_cli.xas_app, name="xas")
app.add_typer(measure_cli.xrd_app, name="xrd")
app.add_typer(txm_cli.app, name="txm")
app.add_typer(query_cli.app, name="query")
app.add_typer(report_cli.app, name="report")
app.command("worker")(worker_cli.worker)
app.add_typer(worker_cli.jobs_app, name="jobs")
app.command("watch")(watch_cli.watch)
app.command("serve")(serve_cli.serve)
app.add_typer(user_cli.app, name="user")


def _terminated(signum, _frame) -> None:
    # SIGTERM (a scheduler's kill, systemd stop) unwinds like Ctrl-C, so a running analysis is
    # recorded as failed and its temporary file removed, instead of staying "running".
    STOP_REQUESTED.set()
    raise SystemExit(128 + signum)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    app()


if __name__ == "__main__":
    main()
