"""Several ``txmdb worker`` processes on one catalogue (DESIGN §12): no job taken twice, a killed
worker's job finished by another after its lease, SIGTERM gives the running job back."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest

from tests.test_jobs import clean_env, make_scans, rows, wait_for, worker_command
from txmdb import jobs

LEASE = "2"

on_postgresql = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def start_worker(cli, *args: str) -> subprocess.Popen:
    return subprocess.Popen(worker_command(cli.url, cli.store, *args), env=clean_env(), stderr=subprocess.PIPE,
                            text=True)


def worker_of(catalog, job_id: int) -> str | None:
    """The worker holding ``job_id`` once its analysis is under way (its row 'running')."""
    held = rows(catalog, f"SELECT j.worker FROM jobs j JOIN analyses a ON a.scan_id = j.scan_id "
                         f"WHERE j.id = {job_id} AND j.status = 'running' AND a.status = 'running'")
    return held[0][0] if held else None


def stop(proc: subprocess.Popen) -> str:
    """SIGTERM a worker; its log once it has exited (status 0: a requested stop)."""
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return stderr


@on_postgresql
def test_two_workers_process_20_analyses_each_exactly_once(catalog, cli, tmp_path):
    scans = make_scans(catalog, tmp_path, 20)
    job_ids = [jobs.enqueue(catalog, "analyze", {"bin": "1,2"}, scan_id=s) for s in scans]
    procs = [start_worker(cli, "--once", "--lease", LEASE) for _ in range(2)]
    logs = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        logs.append(stderr)
    listed = jobs.list_jobs(catalog)
    assert list(listed["job_id"]) == job_ids
    assert set(listed["status"]) == {"done"} and set(listed["attempts"]) == {1}
    # one analysis row per job, each of its own scan, each the job's result
    analyses = rows(catalog, "SELECT id, scan_id, status FROM analyses ORDER BY scan_id")
    assert [(scan, status) for _, scan, status in analyses] == [(s, "done") for s in scans]
    assert sorted(r["analysis_id"] for r in listed["result"]) == sorted(a for a, _, _ in analyses)
    # each job done once, by one of the two workers, and both took part
    done = [re.findall(r" job\.done job=(\d+) ", log) for log in logs]
    assert sorted(int(j) for d in done for j in d) == job_ids
    assert all(done), "one worker took no job: they did not run side by side"
    names = [re.search(r"worker\.started worker=(\S+)", log).group(1) for log in logs]
    assert set(listed["worker"]) == set(names) and len(set(names)) == 2


@on_postgresql
def test_a_killed_workers_job_is_finished_by_the_other_after_its_lease(catalog, cli, tmp_path):
    big, = make_scans(catalog, tmp_path, 1, shape=(96, 96, 96), n_energies=40, sample="big")
    small = make_scans(catalog, tmp_path, 3)
    big_job = jobs.enqueue(catalog, "analyze", {}, scan_id=big)
    small_jobs = [jobs.enqueue(catalog, "analyze", {}, scan_id=s) for s in small]
    first = start_worker(cli, "--lease", LEASE)
    second = None
    try:
        lost = wait_for(lambda: worker_of(catalog, big_job), timeout=120)
        assert lost.endswith(f":{first.pid}")
        second = start_worker(cli, "--lease", LEASE)
        first.send_signal(signal.SIGKILL)  # mid-job: its analysis is running
        first.wait(timeout=30)
        # visibly stale until the other worker's next look after the lease has passed
        wait_for(lambda: jobs.get_job(catalog, big_job).status == "done", timeout=180)
        wait_for(lambda: all(jobs.get_job(catalog, j).status == "done" for j in small_jobs), timeout=60)
        log = stop(second)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    job = jobs.get_job(catalog, big_job)
    assert job.attempts == 2 and job.worker.endswith(f":{second.pid}") and job.error is None
    analyses = rows(catalog, f"SELECT id, status, error FROM analyses WHERE scan_id = {big} ORDER BY id")
    assert [(status, error) for _, status, error in analyses] == [
        ("failed", f"worker {lost} lost: lease of job {big_job} expired"), ("done", None)]
    assert job.result == {"analysis_id": analyses[1][0]}
    assert f"job.lease_expired job={big_job} worker={lost}" in log
    assert f"job.done job={big_job} " in log
    # every small job once, by the surviving worker or before the kill
    assert rows(catalog, "SELECT count(*) FROM analyses WHERE status = 'done'") == [(4,)]


def test_sigterm_gives_the_running_job_back(catalog, cli, tmp_path):
    """SIGTERM mid-job: the worker stops its analysis (marked failed), queues the job again without
    counting the attempt, and exits 0; another worker then runs it to done."""
    big, = make_scans(catalog, tmp_path, 1, shape=(96, 96, 96), n_energies=40, sample="big")
    job_id = jobs.enqueue(catalog, "analyze", {}, scan_id=big)
    proc = start_worker(cli, "--lease", LEASE)
    try:
        wait_for(lambda: worker_of(catalog, job_id), timeout=120)
        log = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"job.released job={job_id} " in log
    assert log.splitlines()[-1].split()[2] == "worker.stopped"
    job = jobs.get_job(catalog, job_id)
    assert (job.status, job.attempts, job.lease_expires_at) == ("queued", 0, None)
    assert rows(catalog, f"SELECT status, error FROM analyses WHERE scan_id = {big}") == [
        ("failed", f"interrupted (exit {128 + signal.SIGTERM})")]
    rerun = subprocess.run(worker_command(cli.url, cli.store, "--once"), env=clean_env(), capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    job = jobs.get_job(catalog, job_id)
    assert (job.status, job.attempts) == ("done", 1)
    assert rows(catalog, f"SELECT status FROM analyses WHERE scan_id = {big} ORDER BY id") == [("failed",), ("done",)]


@on_postgresql
def test_concurrency_runs_several_worker_processes(catalog, cli, tmp_path):
    """--concurrency 2: two worker processes, each its own host:pid, sharing the queue; --once ends both."""
    scans = make_scans(catalog, tmp_path, 8)
    job_ids = [jobs.enqueue(catalog, "analyze", {"bin": "1"}, scan_id=s) for s in scans]
    proc = subprocess.run(worker_command(cli.url, cli.store, "--once", "--concurrency", "2", "--lease", LEASE),
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    listed = jobs.list_jobs(catalog)
    assert list(listed["job_id"]) == job_ids and set(listed["status"]) == {"done"}
    children = re.findall(r"worker\.child_started child=\d pid=(\d+)", proc.stderr)
    assert len(children) == 2
    assert {w.rsplit(":", 1)[1] for w in listed["worker"]} <= set(children)
    assert proc.stderr.count("worker.stopped") == 2


def test_concurrent_workers_share_the_cores_and_threads_are_given_on(catalog, cli, tmp_path):
    """--concurrency N: each process' analyses get the cores ÷ N kernel threads (not every core
    each), and --threads K overrides that (session 25; what a job then runs with:
    tests/test_jobs.py::test_a_jobs_kernel_threads)."""
    from txmdb.analysis._threads import usable_cores

    scans = make_scans(catalog, tmp_path, 3)
    job_ids = [jobs.enqueue(catalog, "analyze", {"bin": "1"}, scan_id=s) for s in scans[:2]]
    job_ids.append(jobs.enqueue(catalog, "analyze", {"bin": "1", "workers": 1}, scan_id=scans[2]))
    proc = subprocess.run(worker_command(cli.url, cli.store, "--once", "--concurrency", "2", "--lease", LEASE),
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert set(jobs.list_jobs(catalog)["status"]) == {"done"}
    started = re.findall(r"worker\.started .*? threads=(\d+)", proc.stderr)
    assert started == [str(max(1, min(64, usable_cores() // 2)))] * 2, proc.stderr
    alone = subprocess.run(worker_command(cli.url, cli.store, "--once", "--threads", "3"), env=clean_env(),
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr
    assert re.findall(r"worker\.started .*? threads=(\d+)", alone.stderr) == ["3"]


@on_postgresql
def test_sigterm_of_a_concurrent_worker_gives_every_running_job_back(catalog, cli, tmp_path):
    """--concurrency 2 stopped by SIGTERM: the parent passes it on, each child gives its job back, exit 0.

    The analyses the jobs write are created by whoever queued them.
    """
    bigs = make_scans(catalog, tmp_path, 2, shape=(96, 96, 96), n_energies=40, sample="big")
    job_ids = [jobs.enqueue(catalog, "analyze", {}, scan_id=s, created_by="alice") for s in bigs]
    proc = start_worker(cli, "--concurrency", "2", "--lease", LEASE)
    try:
        wait_for(lambda: all(worker_of(catalog, j) for j in job_ids), timeout=120)
        log = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sorted(int(j) for j in re.findall(r"job\.released job=(\d+) ", log)) == job_ids
    assert log.count("worker.stopped") == 2
    assert [(j.status, j.attempts) for j in map(lambda i: jobs.get_job(catalog, i), job_ids)] == [("queued", 0)] * 2
    assert rows(catalog, "SELECT status, created_by FROM analyses") == [("failed", "alice")] * 2
