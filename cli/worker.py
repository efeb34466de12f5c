"""``txmdb worker`` and ``txmdb jobs …``: run, list, cancel and retry durable jobs (DESIGN §12)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import List, Optional

import typer

from txmdb.cli._common import (
    STOP_REQUESTED, CommandGroup, FormatOption, OutputFormat, OutputOption, catalog, echo, emit_table, whole,
    terminal_table, whole_option,
)
from txmdb.vocabulary import DEFAULT_LEASE_S, MAX_ANALYSIS_WORKERS, JobStatus


def worker(
    ctx: typer.Context,
    concurrency: int = typer.Option(1, "--concurrency", "-c", parser=whole, metavar="N",
                                    help="Jobs run at once: N worker processes, one job each."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="tcp://HOST:PORT",
                                            help="Dask scheduler the analyses run on (as txm analyze --scheduler)."),
    lease: float = typer.Option(DEFAULT_LEASE_S, "--lease", metavar="SECONDS",
                                help="Lease on a running job, renewed every third of it; another worker retries "
                                     "a job whose lease has passed."),
    once: bool = typer.Option(False, "--once", help="Exit when no job is ready instead of waiting for more."),
    log_json: bool = typer.Option(False, "--log-json", help="Log events as JSON lines (default: one text line each)."),
    threads: Optional[int] = whole_option(None, "--threads", low=1, high=MAX_ANALYSIS_WORKERS, metavar="K",
                                          help="Kernel threads of each analysis whose job does not give its own "
                                               "workers \\[default: the cores ÷ --concurrency]."),
) -> None:
    """Run queued jobs (analyses, registrations) until stopped; any number of workers may share a catalogue.

    One line per event on standard error. SIGTERM: the running job goes back to the queue, exit 0.
    """
    from txmdb import jobs
    from txmdb.eventlog import EventLog

    jobs.check_worker_options(concurrency=concurrency, lease_s=lease)
    if scheduler is not None:
        from txmdb.catalog.distributed import check_scheduler_address

        check_scheduler_address(scheduler)
    log = EventLog(json=log_json)
    cat = catalog(ctx)  # checked here, once, before any worker starts
    from txmdb.analysis._threads import kernel_threads

    threads = kernel_threads(threads, share=concurrency)  # the processes share the cores, not each take them all
    try:
        if concurrency == 1:
            jobs.run_worker(cat, lease_s=lease, scheduler=scheduler, once=once, log=log, stop=STOP_REQUESTED,
                            kernel_threads=threads)
        else:
            jobs.supervise(_one_worker_command(lease, scheduler, once, log_json, threads), concurrency,
                           env=_catalogue_env(ctx), log=log, restart=not once)
    except SystemExit as exc:
        if exc.code != 128 + signal.SIGTERM:
            raise
        raise typer.Exit(0) from None  # a requested stop, done cleanly


def _one_worker_command(lease: float, scheduler: Optional[str], once: bool, log_json: bool, threads: int) -> list[str]:
    """The command of one worker process of ``--concurrency N``."""
    import sys

    return [sys.executable, "-m", "txmdb.cli.main", "worker", "--lease", repr(lease), "--threads", str(threads),
            *(["--scheduler", scheduler] if scheduler else []), *(["--once"] if once else []),
            *(["--log-json"] if log_json else [])]


def _catalogue_env(ctx: typer.Context) -> dict[str, str]:
    """This environment with the global --db/--store as TXMDB_URL/TXMDB_STORE (a password stays off argv)."""
    import os

    env = dict(os.environ)
    obj = ctx.find_root().obj or {}
    if obj.get("db"):
        env["TXMDB_URL"] = str(obj["db"])
    if obj.get("store"):
        env["TXMDB_STORE"] = str(obj["store"])
    return env


jobs_app = typer.Typer(cls=CommandGroup, invoke_without_command=True,
                       help="Durable jobs: list them (no command), cancel or retry one.")


@jobs_app.callback()
def jobs_list(
    ctx: typer.Context,
    status: Optional[List[JobStatus]] = typer.Option(None, "--status", help="Only jobs in these states (repeatable)."),
    scan: Optional[int] = typer.Option(None, "--scan", parser=whole, metavar="SCAN_ID", help="Only the jobs of this scan."),
    fmt: Optional[OutputFormat] = FormatOption,
    output: Optional[Path] = OutputOption,
) -> None:
    """Jobs, oldest first; ``stale``: running, but its worker stopped renewing its lease."""
    if ctx.invoked_subcommand is not None:
        return
    from txmdb.jobs import list_jobs

    frame = list_jobs(catalog(ctx), [s.value for s in status or []], scan=scan)
    if terminal_table(fmt, output):  # a terminal's width: parameters are in csv/json
        frame = frame[["job_id", "kind", "scan_id", "status", "stale", "attempts", "worker", "created_at",
                       "finished_at", "result", "error"]]
    emit_table(frame, fmt, output)


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: int = typer.Argument(..., parser=whole, metavar="JOB_ID", help="Job id.")) -> None:
    """Cancel a queued or running job (a running analysis stops after its slab, within a third of its lease)."""
    from txmdb.jobs import cancel

    job = cancel(catalog(ctx), job_id)
    echo(f"job {job.id} cancelled")


@jobs_app.command("retry")
def jobs_retry(ctx: typer.Context, job_id: int = typer.Argument(..., parser=whole, metavar="JOB_ID", help="Job id.")) -> None:
    """Queue a failed or cancelled job again."""
    from txmdb.jobs import retry

    job = retry(catalog(ctx), job_id)
    echo(f"job {job.id} queued again")
