"""A stop request stays asked (session 22): ``txmdb worker``'s SIGTERM handler sets
``STOP_REQUESTED`` besides raising SystemExit, and the worker looks at it before each claim and
waits on it between looks. In CI a SIGTERMed worker polled on for 9 minutes: its SystemExit had
been raised inside a finaliser, where Python only prints an exception. In session 23's CI the
SystemExit came inside SQLAlchemy's pool ping, which replaced it with psycopg's "can't change
'autocommit' now" while unwinding: the worker exited 1 with a traceback. An error escaping while
a stop is asked is that stop. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import threading
import time

import pytest

from tests.test_jobs import make_scans, rows
from txmdb import jobs
from txmdb.eventlog import EventLog


def test_a_stop_asked_while_polling_ends_the_worker_at_once(catalog):
    stop = threading.Event()
    stream = io.StringIO()
    threading.Timer(0.3, stop.set).start()            # a SIGTERM whose SystemExit went nowhere
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        jobs.run_worker(catalog, lease_s=600, poll_s=30, stop=stop, log=EventLog(stream), name="polling:1")
    assert exited.value.code == 143 and time.monotonic() - t0 < 10   # not after the 30 s poll
    assert stream.getvalue().splitlines()[-1].split(" ")[2:4] == ["worker.stopped", "worker=polling:1"]


def test_a_stop_asked_before_a_claim_leaves_the_job_queued(catalog, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    job_id = jobs.enqueue(catalog, "analyze", {"bin": "1"}, scan_id=scan)
    stop = threading.Event()
    stop.set()
    with pytest.raises(SystemExit):
        jobs.run_worker(catalog, lease_s=600, stop=stop, log=EventLog(io.StringIO()), name="stopped:2")
    assert rows(catalog, f"SELECT status, attempts, worker FROM jobs WHERE id = {job_id}") == [("queued", 0, None)]


def test_the_sigterm_handler_asks_the_worker_to_stop():
    import signal

    from txmdb.cli import main
    from txmdb.cli._common import STOP_REQUESTED

    STOP_REQUESTED.clear()
    try:
        with pytest.raises(SystemExit) as exited:
            main._terminated(signal.SIGTERM, None)
        assert exited.value.code == 143 and STOP_REQUESTED.is_set()
    finally:
        STOP_REQUESTED.clear()


def _replacing_the_stop(stop: threading.Event):
    """``expire_leases`` as when the SIGTERM lands inside a library that replaces its SystemExit."""
    def expire(catalog, log):
        stop.set()                                     # what the handler does first
        raise RuntimeError("can't change 'autocommit' now: connection in transaction status ACTIVE")
    return expire


def test_an_error_that_replaced_the_stops_exit_is_still_a_stop(catalog, monkeypatch):
    stop = threading.Event()
    stream = io.StringIO()
    monkeypatch.setattr(jobs, "expire_leases", _replacing_the_stop(stop))
    with pytest.raises(SystemExit) as exited:
        jobs.run_worker(catalog, lease_s=600, stop=stop, log=EventLog(stream), name="replaced:3")
    assert exited.value.code == 143
    events = [line.split(" ")[1:3] for line in stream.getvalue().splitlines()]
    assert events[-2:] == [["warning", "worker.stop_interrupted"], ["info", "worker.stopped"]], stream.getvalue()
    assert "reason=stopped" in stream.getvalue().splitlines()[-1]


def test_the_same_error_without_a_stop_is_not_hidden(catalog, monkeypatch):
    def expire(catalog, log):
        raise RuntimeError("a real bug")
    monkeypatch.setattr(jobs, "expire_leases", expire)
    with pytest.raises(RuntimeError, match="a real bug"):
        jobs.run_worker(catalog, lease_s=600, stop=threading.Event(), log=EventLog(io.StringIO()), name="bug:4")
