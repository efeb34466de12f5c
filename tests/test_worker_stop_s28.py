"""A worker asked to stop gives its job back at the job's next progress check, even when the
SIGTERM's own SystemExit was lost (raised inside a finaliser, such as an import's lock, Python
only prints it): a data manager's review, session 28. SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from tests.test_jobs import make_scans, rows
from txmdb import jobs


def test_a_stop_request_gives_the_running_job_back(catalog, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    job_id = jobs.enqueue(catalog, "analyze", {"bin": "1"}, scan_id=scan)
    job = jobs.claim(catalog, "w:1", lease_s=60)
    assert job.id == job_id
    stop = threading.Event()
    stop.set()                                  # the signal came; its SystemExit did not arrive
    stats = jobs.WorkerStats()
    with pytest.raises(SystemExit) as exited:
        jobs.run_one(catalog, job, "w:1", lease_s=60, stats=stats, stop=stop)
    assert exited.value.code == 143
    assert stats.released == 1 and stats.done == 0
    assert rows(catalog, f"SELECT status, attempts FROM jobs WHERE id = {job_id}") == [("queued", 0)]
    assert rows(catalog, "SELECT count(*) FROM analyses WHERE status IN ('running', 'done')") == [(0,)]
    # not asked to stop: the same job runs to its end
    again = jobs.claim(catalog, "w:2", lease_s=60)
    assert jobs.run_one(catalog, again, "w:2", lease_s=60, stop=threading.Event()) == "done"
    assert rows(catalog, f"SELECT status FROM jobs WHERE id = {job_id}") == [("done",)]
