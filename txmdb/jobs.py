"""Durable jobs (DESIGN §12): analyses and registrations queued in the catalogue, run by workers.

A job is a row of ``jobs`` (:class:`txmdb.db.models.Job`). :func:`enqueue` adds it
``queued``; a worker (:func:`run_worker`, ``txmdb worker``) takes the oldest ready one with
:func:`claim` and holds a *lease* on it: ``lease_expires_at``, renewed by a background
thread every third of the lease while the job runs. Claiming is one ``UPDATE … WHERE id =
(SELECT … LIMIT 1)``: on PostgreSQL the inner select is ``FOR UPDATE SKIP LOCKED``, so
workers never wait for nor take each other's job; SQLite runs one writer at a time, so the
same statement is atomic there (and RETURNING says which row it took).

A worker that dies stops renewing: once its lease has passed, the next worker that looks
(:func:`expire_leases`) queues the job again — ``running`` with a lease in the past is
what ``txmdb jobs`` shows as stale until then — and marks the dead worker's ``running``
analysis of it failed; after ``max_attempts`` starts the job is failed instead. A job
the worker gives back (SIGTERM, Ctrl-C: :func:`release`) is queued again without the
attempt counting. ``cancel`` of a running job reaches its worker at its next renewal; an
analysis then stops at its next unit of work (slab, binning factor), never in the middle of
one (an exception thrown into arbitrary code could leave an import or a compiled kernel
half made for the worker's next job); a registration runs to its end, and is not the job's.

Jobs run the library's own services: :func:`txmdb.catalog.txm.analyze_scan` (or the Dask
cluster's :func:`txmdb.catalog.distributed.analyze_on_cluster`) and
:func:`txmdb.catalog.registration.register_scan`, with options parsed by
:mod:`txmdb.options` exactly as ``txm analyze`` / ``txm register`` parse theirs.

Clocks: on PostgreSQL leases are reckoned by the server's clock (workers on several hosts
agree), on SQLite by the one host's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import aliased

from txmdb.db.actor import acting_as, current_actor
from txmdb.db.models import Job, Timestamp
from txmdb.errors import DatabaseError, NotFoundError, StateError, TxmdbError
from txmdb.eventlog import EventLog
from txmdb.vocabulary import (
    DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS, JOB_KINDS, JOB_STATUSES, MAX_CATALOGUE_INT, MIN_LEASE_S, WORKER_POLL_S,
)

#: A job in one of these states is over: cancel has nothing to stop, retry may queue it again.
FINISHED = ("done", "failed", "cancelled")
#: Longest lease: a dead worker's job waits this long before it is retried (and a lease is a
#: datetime step: 1e300 s overflows).
MAX_LEASE_S = 86400.0
#: Most worker processes one ``txmdb worker`` starts (each imports the analysis stack: ~100 MB).
MAX_CONCURRENCY = 64


def check_worker_options(*, concurrency: int = 1, lease_s: float = DEFAULT_LEASE_S) -> None:
    """Refuse a ``--concurrency`` or ``--lease`` out of bounds, in one line."""
    if concurrency < 1:
        raise TxmdbError(f"--concurrency must be at least 1, got {concurrency}")
    if concurrency > MAX_CONCURRENCY:
        raise TxmdbError(f"--concurrency must be at most {MAX_CONCURRENCY}, got {concurrency}")
    if not lease_s >= MIN_LEASE_S:  # NaN too
        raise TxmdbError(f"--lease must be at least {MIN_LEASE_S:g} s, got {lease_s:g}")
    if lease_s > MAX_LEASE_S:
        raise TxmdbError(f"--lease must be at most {MAX_LEASE_S:g} s (a day), got {lease_s:g}")


class LeaseLost(BaseException):
    """Raised between two units of a job's work when the job was cancelled or taken over meanwhile.

    A BaseException, like KeyboardInterrupt: the job's work unwinds through every cleanup
    (its analysis is marked failed, its temporary removed) and is not caught as an error.
    """


def worker_name() -> str:
    """``host:pid`` of this process: what ``jobs.worker`` and the analyses it runs record."""
    from txmdb.store import HOST

    return f"{HOST}:{os.getpid()}"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _now(catalog):
    """The time leases are reckoned by, as a SQL value: the server's on PostgreSQL, ours on SQLite."""
    if catalog.engine.dialect.name == "postgresql":
        return func.statement_timestamp(type_=Timestamp)
    return _utcnow()


def _later(catalog, seconds: float):
    return _now(catalog) + dt.timedelta(seconds=seconds)


def _check_id(job_id: int) -> int:
    if not 0 <= int(job_id) <= MAX_CATALOGUE_INT:
        raise NotFoundError(f"no job with id {job_id}; see 'txmdb jobs'")
    return int(job_id)


def get_job(catalog, job_id: int) -> Job:
    """The job ``job_id`` (detached), or NotFoundError."""
    with catalog.session() as session:
        job = session.get(Job, _check_id(job_id))
        if job is None:
            raise NotFoundError(f"no job with id {job_id}; see 'txmdb jobs'")
        return job


# --------------------------------------------------------------------------------- queueing
def check_parameters(kind: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The full, checked parameters of a ``kind`` job (see :mod:`txmdb.options`); one-line errors."""
    from txmdb.options import analysis_request, option_values, registration_request

    if kind not in JOB_KINDS:
        raise TxmdbError(f"unknown job kind {kind!r}: expected {' or '.join(JOB_KINDS)}")
    values = option_values(kind, parameters)
    (analysis_request if kind == "analyze" else registration_request)(values)  # every value parses
    return values


def enqueue(catalog, kind: str, parameters: Mapping[str, Any] | None = None, *, scan_id: int,
            created_by: str | None = None, after: int | None = None,
            max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """Queue a ``kind`` job (``analyze`` | ``register``) of scan ``scan_id``; returns its id.

    Parameters
    ----------
    parameters : mapping, optional
        The options of ``txm analyze`` / ``txm register`` by name (:mod:`txmdb.options`);
        missing ones take the command's defaults, and the full set is stored.
    created_by : str, optional
        Who asked (the web app's account); default the acting user of :mod:`txmdb.db.actor`.
    after : int, optional
        A job that must be done first (a registration before the analysis that applies it);
        if it fails or is cancelled, this one fails.

    Raises
    ------
    TxmdbError
        An unknown kind or option, a bad value, a scan or job that does not exist, or a
        registration id that is not the scan's; nothing is queued.
    """
    from txmdb.catalog.txm import get_scan

    values = check_parameters(kind, parameters)
    if not 1 <= max_attempts <= 100:
        raise TxmdbError(f"max_attempts must be between 1 and 100, got {max_attempts}")
    if kind == "analyze":
        _check_analysis(catalog, scan_id, values)
    else:
        from txmdb.catalog.registration import check_registration
        from txmdb.options import registration_request

        asked = registration_request(values)  # the row's checks; the file is read by the worker
        check_registration(catalog, scan_id, reference_energy_ev=asked["reference_energy_ev"],
                           max_shift=asked["max_shift"], roi=asked["roi"])
    with catalog.session() as session:
        get_scan(session, scan_id)
        if after is not None and session.get(Job, _check_id(after)) is None:
            raise NotFoundError(f"no job with id {after} to wait for; see 'txmdb jobs'")
        job = Job(kind=kind, parameters=values, scan_id=scan_id, after_job_id=after, status="queued", attempts=0,
                  max_attempts=max_attempts, created_by=created_by if created_by is not None else current_actor())
        session.add(job)
        session.flush()
        return job.id


def _check_analysis(catalog, scan_id: int, values: Mapping[str, Any]) -> None:
    """Refuse now what the worker would refuse on reading the stack (a white-line window its energies
    cannot serve, another scan's registration): the checks of a foreground ``txm analyze``, without
    hashing the file (the worker does that)."""
    from txmdb.catalog.txm import prepare_analysis
    from txmdb.options import analysis_request

    options, registration = analysis_request(values, catalog=catalog)
    prepare_analysis(catalog, scan_id, options, registration=registration, verify_hash=False)


# --------------------------------------------------------------------------------- claiming
def claim(catalog, worker: str, *, lease_s: float = DEFAULT_LEASE_S) -> Job | None:
    """Take the oldest ready job for ``worker`` (``host:pid``), under a lease of ``lease_s``.

    Ready: queued, and any job it waits for is done. Returns the job (detached, ``running``,
    its attempt counted) or None when no job is ready. Never the job of another worker:
    see the module docstring for how the backends guarantee it.
    """
    candidate, prior = aliased(Job), aliased(Job)
    oldest = (select(candidate.id)
              .where(candidate.status == "queued",
                     or_(candidate.after_job_id.is_(None),
                         exists().where(prior.id == candidate.after_job_id, prior.status == "done")))
              .order_by(candidate.id).limit(1))
    with catalog.session() as session:
        if session.execute(oldest).first() is None:
            return None  # an idle worker's look: a read, no write lock (SQLite has one for everyone)
    ready = oldest.with_for_update(skip_locked=True, of=candidate).scalar_subquery()  # SQLite: no FOR UPDATE
    now = _now(catalog)
    statement = (update(Job).where(Job.id == ready, Job.status == "queued")
                 .values(status="running", worker=worker, attempts=Job.attempts + 1, started_at=now,
                         lease_expires_at=_later(catalog, lease_s), finished_at=None, error=None, result=None)
                 .returning(Job.id)
                 .execution_options(synchronize_session=False))
    with catalog.session() as session:
        job_id = session.execute(statement).scalar_one_or_none()
        return None if job_id is None else session.get(Job, job_id)


def renew(catalog, job_id: int, worker: str, *, lease_s: float = DEFAULT_LEASE_S) -> bool:
    """Extend ``worker``'s lease on its running job; False if the job is no longer its (cancelled, taken)."""
    return _update_own(catalog, job_id, worker, lease_expires_at=_later(catalog, lease_s))


def finish(catalog, job_id: int, worker: str, *, result: Mapping[str, Any] | None = None,
           error: str | None = None) -> bool:
    """Record the end of ``worker``'s job: done with ``result``, or failed with ``error`` (one line)."""
    return _update_own(catalog, job_id, worker, status="failed" if error else "done", result=dict(result or {}) or None,
                       error=error, finished_at=_now(catalog), lease_expires_at=None)


def release(catalog, job_id: int | None, worker: str) -> bool:
    """Give ``worker``'s job back to the queue (the worker stops): its attempt does not count.

    ``job_id`` None: whichever job ``worker`` holds (stopped between its claim and the job's start).
    """
    return _update_own(catalog, job_id, worker, status="queued", attempts=Job.attempts - 1, lease_expires_at=None,
                       started_at=None)


def requeue(catalog, job_id: int, worker: str, error: str) -> bool:
    """After an error that may pass (the database went away): queued again, failed after its last attempt."""
    with catalog.session() as session:
        job = session.get(Job, job_id)
        last = job is not None and job.attempts >= job.max_attempts
    if last:
        return finish(catalog, job_id, worker, error=error)
    return _update_own(catalog, job_id, worker, status="queued", error=error, lease_expires_at=None)


def _update_own(catalog, job_id: int | None, worker: str, **values) -> bool:
    """Update job ``job_id`` (None: any) if it is still ``worker``'s running job; whether it was."""
    mine = [Job.worker == worker, Job.status == "running"] + ([] if job_id is None else [Job.id == job_id])
    statement = (update(Job).where(*mine)
                 .values(**values).execution_options(synchronize_session=False))
    with catalog.session() as session:
        return session.execute(statement).rowcount == 1


def expire_leases(catalog, log: EventLog | None = None) -> list[tuple[int, str]]:
    """Queue again every running job whose lease has passed (failed after its last attempt).

    The lost worker's ``running`` analysis of the job's scan is marked failed (its process is
    gone, or cut off: nothing will commit it). Jobs waiting for a job that failed or was
    cancelled fail too. Returns (job id, new status) of each job changed.
    """
    changed = []
    now = _now(catalog)
    with catalog.session() as session:
        stale = session.execute(select(Job.id, Job.worker, Job.scan_id, Job.attempts, Job.max_attempts,
                                       Job.lease_expires_at)
                                .where(Job.status == "running", Job.lease_expires_at < now)).all()
    for job_id, worker, scan_id, attempts, max_attempts, expired in stale:
        final = attempts >= max_attempts
        error = (f"worker {worker} stopped renewing its lease (attempt {attempts} of {max_attempts})"
                 + ("" if not final else "; no attempts left"))
        statement = (update(Job).where(Job.id == job_id, Job.status == "running", Job.worker == worker,
                                       Job.lease_expires_at < now)
                     .values(status="failed" if final else "queued", error=error, lease_expires_at=None,
                             finished_at=now if final else None)
                     .execution_options(synchronize_session=False))
        with catalog.session() as session:
            if session.execute(statement).rowcount != 1:
                continue  # another worker settled it first
        _fail_lost_analyses(catalog, scan_id, worker, f"worker {worker} lost: lease of job {job_id} expired")
        changed.append((job_id, "failed" if final else "queued"))
        if log is not None:
            log.warning("job.lease_expired", job=job_id, worker=worker, expired_at=expired,
                        now_status="failed" if final else "queued", attempts=attempts)
    changed.extend(_fail_orphans(catalog, log))
    return changed


def _fail_lost_analyses(catalog, scan_id: int, worker: str, error: str) -> None:
    from txmdb.db.models import Analysis
    from txmdb.store import ANALYSES

    host, _, pid = worker.rpartition(":")
    if not pid.isdigit():
        return
    with catalog.session() as session:
        ids = session.scalars(select(Analysis.id).where(Analysis.scan_id == scan_id, Analysis.status == "running",
                                                        Analysis.host == host, Analysis.pid == int(pid))).all()
    for analysis_id in ids:
        catalog.store.fail(ANALYSES, analysis_id, error)


def _fail_orphans(catalog, log: EventLog | None) -> list[tuple[int, str]]:
    """Fail queued jobs whose prerequisite failed or was cancelled (they would wait forever)."""
    prior = aliased(Job)
    with catalog.session() as session:
        orphans = session.execute(select(Job.id, prior.id, prior.status).join(prior, prior.id == Job.after_job_id)
                                  .where(Job.status == "queued", prior.status.in_(("failed", "cancelled")))).all()
    changed = []
    for job_id, prior_id, prior_status in orphans:
        error = f"job {prior_id} it waits for is {prior_status}"
        statement = (update(Job).where(Job.id == job_id, Job.status == "queued")
                     .values(status="failed", error=error, finished_at=_now(catalog))
                     .execution_options(synchronize_session=False))
        with catalog.session() as session:
            if session.execute(statement).rowcount == 1:
                changed.append((job_id, "failed"))
                if log is not None:
                    log.warning("job.failed", job=job_id, error=error)
    return changed


# --------------------------------------------------------------------------- cancel, retry
#: The states a job can be cancelled in (the web's jobs page offers a cancel button for them).
CANCELLABLE = ("queued", "running")


def cancel(catalog, job_id: int) -> Job:
    """Cancel a queued or running job (a running one stops at its worker's next lease renewal)."""
    return _change(catalog, job_id, CANCELLABLE, "cancelled", status="cancelled",
                   finished_at=_now(catalog), lease_expires_at=None)


def retry(catalog, job_id: int) -> Job:
    """Queue a failed or cancelled job again, its attempts from zero."""
    return _change(catalog, job_id, ("failed", "cancelled"), "retried", status="queued", attempts=0, error=None,
                   result=None, started_at=None, finished_at=None, lease_expires_at=None)


def _change(catalog, job_id: int, allowed: tuple[str, ...], verb: str, **values) -> Job:
    """Set ``values`` on the job if it is in one of the ``allowed`` states, else say it cannot be ``verb``."""
    job = get_job(catalog, job_id)
    statement = (update(Job).where(Job.id == job.id, Job.status.in_(allowed)).values(**values)
                 .execution_options(synchronize_session=False))
    with catalog.session() as session:
        changed = session.execute(statement).rowcount == 1
    if not changed:
        status = get_job(catalog, job_id).status
        raise StateError(f"job {job_id} is {status}: only {' or '.join(allowed)} jobs can be {verb}")
    return get_job(catalog, job_id)


# ---------------------------------------------------------------------------------- listing
JOB_COLUMNS = ("job_id", "kind", "scan_id", "status", "stale", "attempts", "max_attempts", "worker",
               "lease_expires_at", "created_at", "started_at", "finished_at", "result", "error", "created_by",
               "after_job_id", "parameters")


def list_jobs(catalog, status: str | Iterable[str] | None = None, *, scan: int | None = None):
    """Jobs, oldest first, as a DataFrame of :data:`JOB_COLUMNS`.

    ``stale``: running, but its lease has passed (its worker is gone; the next worker that
    looks queues it again).
    """
    import pandas as pd

    statuses = [status] if isinstance(status, str) else list(status or [])
    for s in statuses:
        if s not in JOB_STATUSES:
            raise TxmdbError(f"unknown job status {s!r}: expected one of {', '.join(JOB_STATUSES)}")
    query = select(Job).order_by(Job.id)
    if statuses:
        query = query.where(Job.status.in_(statuses))
    if scan is not None:
        if not 0 <= scan <= MAX_CATALOGUE_INT:  # SQLite cannot even bind a larger one
            raise TxmdbError(f"--scan {scan}: not in the range 0 to {MAX_CATALOGUE_INT}")
        query = query.where(Job.scan_id == scan)
    with catalog.session() as session:
        jobs = session.scalars(query).all()
    now = _utcnow()
    rows = [{"job_id": j.id, "kind": j.kind, "scan_id": j.scan_id, "status": j.status,
             "stale": j.status == "running" and j.lease_expires_at is not None and _aware(j.lease_expires_at) < now,
             "attempts": j.attempts, "max_attempts": j.max_attempts, "worker": j.worker,
             "lease_expires_at": _aware(j.lease_expires_at), "created_at": _aware(j.created_at),
             "started_at": _aware(j.started_at), "finished_at": _aware(j.finished_at), "result": j.result,
             "error": j.error, "created_by": j.created_by, "after_job_id": j.after_job_id,
             "parameters": j.parameters} for j in jobs]
    return pd.DataFrame(rows, columns=list(JOB_COLUMNS))


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite gives naive datetimes; txmdb writes UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


# ---------------------------------------------------------------------------------- running
def execute(catalog, job: Job, *, scheduler: str | None = None, progress=None,
            kernel_threads: int | None = None) -> dict[str, Any]:
    """Run ``job``'s work through the library's services; returns what it made (its ``result``).

    ``progress(done, total)`` is called between units of an analysis run here (it may raise to stop it).
    ``kernel_threads``: an analysis' kernel threads when its job gives no ``workers`` (None: one per core).
    """
    from txmdb.options import registration_request

    if job.kind == "analyze":
        options, registration = job_analysis(catalog, job, scheduler=scheduler, kernel_threads=kernel_threads)
        if scheduler:
            from txmdb.catalog.distributed import analyze_on_cluster

            analysis = list(analyze_on_cluster(catalog, [job.scan_id], options, scheduler=scheduler,
                                               registration=registration))[0]
        else:
            from txmdb.catalog.txm import analyze_scan

            analysis = analyze_scan(catalog, job.scan_id, options, registration=registration, progress=progress)
        return {"analysis_id": analysis.id}
    if job.kind == "register":
        from txmdb.catalog.registration import register_scan

        return {"registration_id": register_scan(catalog, job.scan_id, **registration_request(job.parameters)).id}
    raise TxmdbError(f"job {job.id}: unknown kind {job.kind!r}")


def job_analysis(catalog, job: Job, *, scheduler: str | None = None, kernel_threads: int | None = None):
    """An analyze job's (AnalysisOptions, registration): its options, and ``kernel_threads`` when
    it gives no ``workers`` and runs here (on a Dask cluster each task keeps one thread)."""
    from dataclasses import replace

    from txmdb.options import analysis_request

    options, registration = analysis_request(job.parameters, catalog=catalog)
    if options.workers is None and kernel_threads is not None and not scheduler:
        options = replace(options, workers=kernel_threads)
    return options, registration


class _Lease:
    """Renews a job's lease every third of ``lease_s`` in a thread and notes when the job is no
    longer the worker's (cancelled, or taken after missed renewals); :meth:`check` then raises
    LeaseLost, at a point of the work's choosing (its progress callback)."""

    def __init__(self, catalog, job: Job, worker: str, lease_s: float, log: EventLog,
                 stop: threading.Event | None = None):
        self.catalog, self.job, self.worker, self.lease_s, self.log = catalog, job, worker, lease_s, log
        self.stop_requested = stop
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job.id}", daemon=True)

    def __enter__(self) -> "_Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def check(self, _done: int = 0, _total: int = 0) -> None:
        """Stop the job's work (LeaseLost) if the job is no longer this worker's, and give it
        back (SystemExit) once the worker was asked to stop: a SIGTERM's own SystemExit is lost
        when it lands in a finaliser (an import's lock), and the job then ran to its end."""
        if self.lost:
            raise LeaseLost("the job was cancelled or taken over by another worker")
        if self.stop_requested is not None and self.stop_requested.is_set():
            raise SystemExit(128 + signal.SIGTERM)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                mine = renew(self.catalog, self.job.id, self.worker, lease_s=self.lease_s)
            except Exception as exc:  # the database away for a moment: try again at the next tick
                self.log.warning("job.lease_renewal_failed", job=self.job.id, error=_one_line(exc))
                continue
            if not mine:
                self.lost = True
                return


def _one_line(exc: BaseException) -> str:
    """The job's ``error`` (and its log field): one line, no password (the row is read by the web app)."""
    from txmdb.db.engine import mask_secrets
    from txmdb.store import failure_text

    return mask_secrets(failure_text(exc))


@dataclass
class WorkerStats:
    """What :func:`run_worker` did: jobs done, failed, given back and lost."""

    done: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0


def run_one(catalog, job: Job, worker: str, *, lease_s: float = DEFAULT_LEASE_S, scheduler: str | None = None,
            log: EventLog | None = None, stats: WorkerStats | None = None, kernel_threads: int | None = None,
            stop: threading.Event | None = None) -> str:
    """Run a claimed job to its end under its lease; returns done, failed, queued, released or lost.

    SystemExit (SIGTERM) and KeyboardInterrupt give the job back (:func:`release`) and propagate;
    so does ``stop``, set, at the job's next progress check.
    """
    log = log or EventLog()
    stats = stats if stats is not None else WorkerStats()
    t0 = time.perf_counter()
    log.info("job.started", job=job.id, kind=job.kind, scan=job.scan_id, attempt=job.attempts, worker=worker)
    try:
        # rows the job writes (its analysis) are created by whoever queued it
        with _Lease(catalog, job, worker, lease_s, log, stop) as lease, acting_as(job.created_by):
            result = execute(catalog, job, scheduler=scheduler, progress=lease.check, kernel_threads=kernel_threads)
    except LeaseLost:
        stats.lost += 1
        log.warning("job.lost", job=job.id, worker=worker, reason="cancelled or taken over; its work stopped")
        return "lost"
    except (SystemExit, KeyboardInterrupt) as exc:
        given_back = _quietly(release, catalog, job.id, worker)
        # a signal inside the analysis' own failure handling left its row running, and a job given
        # back is never seen by expire_leases: this process ends, so its running analysis is lost
        _quietly(_fail_lost_analyses, catalog, job.scan_id, worker, f"worker {worker} stopped during job {job.id}")
        stats.released += 1
        log.info("job.released", job=job.id, worker=worker, reason=_one_line(exc), requeued=bool(given_back))
        raise
    except DatabaseError as exc:
        error = _one_line(exc)
        _quietly(requeue, catalog, job.id, worker, error)
        stats.failed += 1
        log.error("job.error", job=job.id, worker=worker, error=error, seconds=round(time.perf_counter() - t0, 3))
        return "queued"
    except Exception as exc:
        error = _one_line(exc)
        if _cluster_away(exc):  # the cluster's trouble, not the job's: it waits in the queue, its attempt not counted
            given_back = _quietly(release, catalog, job.id, worker)
            stats.released += 1
            log.error("job.released", job=job.id, worker=worker, reason=error, requeued=bool(given_back))
            return "released"
        finish(catalog, job.id, worker, error=error)
        stats.failed += 1
        log.error("job.failed", job=job.id, kind=job.kind, scan=job.scan_id, error=error,
                  seconds=round(time.perf_counter() - t0, 3))
        return "failed"
    if lease.lost or not finish(catalog, job.id, worker, result=result):
        stats.lost += 1
        log.warning("job.lost", job=job.id, worker=worker, reason="cancelled or taken over before it finished",
                    **result)
        return "lost"
    stats.done += 1
    log.info("job.done", job=job.id, kind=job.kind, scan=job.scan_id, seconds=round(time.perf_counter() - t0, 3),
             **result)
    return "done"


def _cluster_away(exc: BaseException) -> bool:
    """Whether ``exc`` says the Dask scheduler did not answer (nothing of the job ran)."""
    import sys

    distributed = sys.modules.get("txmdb.catalog.distributed")  # only a --scheduler worker imported it
    return distributed is not None and isinstance(exc, distributed.SchedulerUnreachable)


def _quietly(function, *args) -> bool:
    """``function(*args)``, False if the database cannot be reached (the lease then runs out instead)."""
    try:
        return bool(function(*args))
    except Exception:
        return False


def run_worker(catalog, *, lease_s: float = DEFAULT_LEASE_S, scheduler: str | None = None, once: bool = False,
               log: EventLog | None = None, poll_s: float = WORKER_POLL_S, name: str | None = None,
               stop: threading.Event | None = None, kernel_threads: int | None = None) -> WorkerStats:
    """Claim and run jobs one at a time until stopped (SIGTERM, Ctrl-C), or with ``once`` until none is ready.

    ``stop``: set by the SIGTERM handler as well as its SystemExit. The worker looks at it before
    each claim and waits on it between looks, so a stop whose SystemExit was lost still ends the
    worker (raised inside a finaliser, an exception is only printed: a SIGTERMed worker then
    polled on, once for 9 minutes, until it was signalled again).

    Each look first settles expired leases (:func:`expire_leases`). A database that cannot be
    reached is logged and tried again after ``poll_s``; the worker keeps running.
    """
    check_worker_options(lease_s=lease_s)
    log = log or EventLog()
    name = name or worker_name()
    stats = WorkerStats()
    from txmdb.db.engine import safe_url

    log.info("worker.started", worker=name, db=safe_url(catalog.engine.url), store=str(catalog.store.root),
             lease_s=lease_s, scheduler=scheduler, once=once, threads=kernel_threads)
    reason = "no job left" if once else "stopped"
    stop = stop if stop is not None else threading.Event()
    try:
        while True:
            if stop.is_set():
                raise SystemExit(128 + signal.SIGTERM)  # asked to stop: as if its SystemExit had come here
            try:
                expire_leases(catalog, log)
                job = claim(catalog, name, lease_s=lease_s)
            except DatabaseError as exc:
                log.error("worker.database_error", worker=name, error=_one_line(exc))
                stop.wait(poll_s)
                continue
            if job is None:
                if once:
                    break
                stop.wait(poll_s)
                continue
            try:
                outcome = run_one(catalog, job, name, lease_s=lease_s, scheduler=scheduler, log=log, stats=stats,
                                  kernel_threads=kernel_threads, stop=stop)
            except DatabaseError as exc:  # recording the end failed: the lease lapses, the job is retried
                log.error("worker.database_error", worker=name, job=job.id, error=_one_line(exc))
                stop.wait(poll_s)
                continue
            if outcome == "released":  # its scheduler did not answer: look again later (--once: stop here)
                if once:
                    reason = "the Dask scheduler did not answer"
                    break
                stop.wait(poll_s)
    except BaseException as exc:
        asked = isinstance(exc, (SystemExit, KeyboardInterrupt))
        if not (asked or stop.is_set()):
            raise
        reason = _one_line(exc) if asked else "stopped"
        _quietly(release, catalog, None, name)  # a job claimed just before the signal, not yet started
        if asked:
            raise
        # the stop's SystemExit, raised by the signal inside a library that then raised its own
        # error while unwinding it (SQLAlchemy's pool ping restoring autocommit, in CI): a stop
        log.warning("worker.stop_interrupted", worker=name, error=_one_line(exc))
        raise SystemExit(128 + signal.SIGTERM) from exc
    finally:
        log.info("worker.stopped", worker=name, reason=reason, done=stats.done, failed=stats.failed,
                 released=stats.released, lost=stats.lost)
    return stats


def supervise(command: list[str], concurrency: int, *, env: Mapping[str, str] | None = None,
              log: EventLog | None = None, restart: bool = True, restart_delay_s: float = 5.0) -> int:
    """Run ``concurrency`` copies of the one-job-at-a-time worker ``command``; returns when they end.

    With ``restart`` a copy that exits is started again after ``restart_delay_s``. SIGTERM
    (SystemExit) or Ctrl-C is passed on as SIGTERM to every copy, which gives its job back,
    and waited for. Copies die with this process (Linux parent-death signal).
    """
    import subprocess

    log = log or EventLog()
    children: list[subprocess.Popen | None] = [None] * concurrency
    started_at = [0.0] * concurrency

    def start(i: int) -> None:
        children[i] = subprocess.Popen(command, env=dict(env) if env is not None else None,
                                       preexec_fn=_die_with_parent)
        started_at[i] = time.monotonic()
        log.info("worker.child_started", child=i + 1, pid=children[i].pid)

    try:
        for i in range(concurrency):
            start(i)
        while any(c is not None for c in children):
            time.sleep(0.2)
            for i, child in enumerate(children):
                if child is None or child.poll() is None:
                    continue
                log.info("worker.child_exited", child=i + 1, pid=child.pid, status=child.returncode)
                children[i] = None
                if restart and time.monotonic() - started_at[i] >= restart_delay_s:
                    start(i)
                elif restart:
                    time.sleep(restart_delay_s)
                    start(i)
        return 0
    finally:
        running = [c for c in children if c is not None and c.poll() is None]
        for child in running:
            child.send_signal(signal.SIGTERM)
        for child in running:
            with contextlib.suppress(Exception):
                child.wait()


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM it when its parent dies (PR_SET_PDEATHSIG, Linux only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
