"""A stop request stays asked (session 22): ``txmdb worker``'s SIGTERM handler sets
``STOP_REQUESTED`` besides raising SystemExit, and the worker looks at it before each claim and
waits on it between looks. In CI a SIGTERMed worker polled on for 9 minutes: its SystemExit had
been raised inside a finaliser, where Python only prints an exception. On SQLite and PostgreSQL.
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
