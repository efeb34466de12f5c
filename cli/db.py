"""``txmdb init`` and ``txmdb db …``: create, upgrade, downgrade and check the schema."""

from __future__ import annotations


from typing import Optional

import typer

from txmdb.cli._common import UsageError, UsageGroup, catalog, echo

app = typer.Typer(cls=UsageGroup, help="Inspect and migrate the catalogue schema.", no_args_is_help=True)


def init(ctx: typer.Context) -> None:
    """Create the catalogue, or upgrade it to the current schema (safe to run again)."""
    from txmdb.db.engine import safe_url
    from txmdb.db.migrate import head_revision, upgrade

    cat = catalog(ctx, check=False)
    upgrade(cat.engine, "head")
    echo(f"catalogue {safe_url(cat.engine.url)} is at schema {head_revision()}")


@app.command("upgrade")
def upgrade_cmd(ctx: typer.Context, revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    from txmdb.db.migrate import current_revision, upgrade

    cat = catalog(ctx, check=False)
    upgrade(cat.engine, revision)
    echo(f"schema at {current_revision(cat.engine)}")


@app.command("downgrade")
def downgrade_cmd(ctx: typer.Context, revision: str = typer.Argument(..., help="Target revision, or 'base'."),
                  yes: bool = typer.Option(False, "--yes", help="Drop what later revisions added, with its rows.")
                  ) -> None:
    """Downgrade the schema to REVISION ('base' removes every table).

    A downgrade drops the tables, columns and rows that later revisions added (accounts, jobs,
    harvested files, reference spectra, spectral maps…): back up the catalogue first.
    """
    from txmdb.db.migrate import current_revision, downgrade

    if not yes:
        raise UsageError(f"a downgrade to {revision} drops the tables, columns and rows later revisions added; "
                         "back up the catalogue, then give --yes", ctx)
    cat = catalog(ctx, check=False)
    downgrade(cat.engine, revision)
    echo(f"schema at {current_revision(cat.engine) or 'base'}")


@app.command("current")
def current_cmd(ctx: typer.Context) -> None:
    """Print the schema revision of the catalogue."""
    from txmdb.db.migrate import current_revision

    cat = catalog(ctx, check=False)
    echo(current_revision(cat.engine) or "base (empty)")


@app.command("reporting-role")
def reporting_role_cmd(ctx: typer.Context,
                       name: Optional[str] = typer.Argument(
                           None, show_default=False,
                           help="Name of the reporting role (default: txmdb_reader_<database>, and "
                                "_<schema> outside schema public).")) -> None:
    """Create or update the read-only role `query sql` runs as (PostgreSQL; safe to run again).

    The role cannot log in and may only SELECT the catalogue's tables, today's and future
    ones. Each catalogue has its own. The catalogue owner becomes a member so it can switch
    to it. An existing role is refused unless it is this catalogue's reporting role. Run it
    as the catalogue owner if that role may create roles (CREATEROLE), otherwise as a
    database admin.
    """
    from txmdb.readonly_sql import ensure_reporting_role

    cat = catalog(ctx, check=False)
    role = ensure_reporting_role(cat.engine.url, name)
    members = ", ".join(f'"{m}"' for m in role.members)
    echo(f'reporting role "{role.name}": SELECT on {role.tables} tables in schema "{role.schema}" and on the '
         f'tables "{role.owner}" creates there later; members: {members}; query sql runs as it')


@app.command("check")
def check_cmd(
    ctx: typer.Context,
    repair: bool = typer.Option(False, "--repair", help="Settle what a crash left: remove temporary files, move "
                                "files no row names to the store's lost+found/, rename a committed file into place; "
                                "mark analyses whose process is gone, or whose file is missing, failed (done again "
                                "once the file is back); point a row whose path is wrong at its file; mark a store "
                                "from before store marks as this catalogue's. Never deletes a recorded result, a "
                                "file, or a source file; refused on another catalogue's store."),
    forget_missing: bool = typer.Option(False, "--forget-missing",
                                        help="With --repair: remove the cycling runs and XAS records whose stored "
                                             "file is missing while their source is intact, so that the source can "
                                             "be ingested again (else: restore the file from a backup)."),
    stale_hours: float = typer.Option(24.0, "--stale-hours", min=0.0,
                                      help="A 'running' analysis of another host counts as killed after this "
                                           "many hours (on this host its process is asked)."),
    sources: bool = typer.Option(True, "--sources/--no-sources",
                                 help="Re-hash every ingested file (slow for large tomograms)."),
) -> None:
    """Check the schema, the store against the rows (files, SHA-256, leftovers) and the ingested files.

    One line per problem and a summary; exit 1 while problems remain.
    """
    from txmdb.catalog.integrity import check_catalog
    from txmdb.db.migrate import check_database

    if forget_missing and not repair:
        raise UsageError("--forget-missing removes records only with --repair", ctx)
    cat = catalog(ctx, check=False)
    echo(f"ok: schema at {check_database(cat.engine)}")
    report = check_catalog(cat, repair=repair, stale_hours=stale_hours, sources=sources, forget_missing=forget_missing)
    for finding in report.findings:
        echo(finding.line())
    echo(report.summary())
    if report.problems:
        raise typer.Exit(1)
