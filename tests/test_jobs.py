"""Durable jobs (txmdb.jobs, DESIGN §12): queueing, claiming, leases, cancel/retry, the CLI, the event log.

Every database test runs on SQLite and PostgreSQL; workers are real ``txmdb worker`` processes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from txmdb import jobs
from txmdb.errors import NotFoundError, TxmdbError
from txmdb.options import ANALYZE_OPTIONS
from tests.test_secrets import pw_db, pw_server  # noqa: F401  (fixtures)
from txmdb.eventlog import EventLog

LEASE_S = 1.0


# ------------------------------------------------------------------------------- helpers
def make_scans(catalog, folder: Path, n: int, *, shape=(12, 32, 32), n_energies: int = 24, sample: str = "rod"):
    """``n`` small synthetic tomograms (distinct files) ingested under ``sample``; their scan ids."""
    from txmdb.catalog.samples import add_sample
    from txmdb.catalog.txm import ingest_scan
    from txmdb.errors import DuplicateError
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    try:
        with catalog.session() as session:
            add_sample(session, sample)
    except DuplicateError:
        pass
    energies = energy_grid(n_energies)
    ids = []
    for seed in range(n):
        edge, _ = particle_field(shape, kind="rod", seed=seed)
        path = folder / f"{sample}_{seed}_{'x'.join(map(str, shape))}.h5"
        write_stack(path, SyntheticStack(edge, energies, noise=0.01, seed=seed), energies, layout="dxchange",
                    voxel_size_nm=30)
        ids.append(ingest_scan(catalog, path, sample=sample)[0].id)
    return ids


def worker_command(url: str, store: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "txmdb.cli.main", "--db", url, "--store", str(store), "worker", *args]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}


def rows(catalog, sql: str) -> list[tuple]:
    with catalog.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def wait_for(predicate, timeout: float = 60.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not reached within {timeout} s")


# ------------------------------------------------------------------------------- queueing
def test_enqueue_stores_the_full_options_and_refuses_bad_ones(catalog, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    job_id = jobs.enqueue(catalog, "analyze", {"bin": [1, 2], "theta-bins": 18, "min_jump": 1}, scan_id=scan)
    job = jobs.get_job(catalog, job_id)
    assert (job.kind, job.status, job.attempts, job.scan_id) == ("analyze", "queued", 0, scan)
    # every option of txm analyze is stored, the given ones as given (TOML-ish types made the CLI's)
    assert set(job.parameters) == set(ANALYZE_OPTIONS)
    assert {k: job.parameters[k] for k in ("element", "bin", "min_jump", "theta_bins", "workers", "registration")} \
        == {"element": "Ni", "bin": "1,2", "min_jump": 1.0, "theta_bins": 18, "workers": None, "registration": None}
    assert job.parameters == {name: default for name, (_, default) in ANALYZE_OPTIONS.items()} | {
        "bin": "1,2", "min_jump": 1.0, "theta_bins": 18}
    assert job.created_by and job.created_by.startswith("os:")
    assert jobs.get_job(catalog, jobs.enqueue(catalog, "register", None, scan_id=scan,
                                              created_by="alice")).created_by == "alice"
    bad = [
        (("analyze", {"bins": "1"}), "unknown analyze option 'bins'"),
        (("analyze", {"bin": "0,1"}), "--bin '0,1': binning factors must be whole numbers from 1 to 16"),
        (("analyze", {"pre": "8400:8300"}), "--pre '8400:8300': expected LO:HI in eV with LO < HI"),
        (("analyze", {"theta_bins": "36"}), "analyze option theta_bins: expected int, got '36'"),
        (("analyze", {"registration": "7"}), "no registration"),
        (("register", {"roi": "0:4"}), None),  # a bad region is the service's to refuse, at run time
        (("register", {"accept_poor": "yes"}), "register option accept_poor: expected bool, got 'yes'"),
        (("transmogrify", {}), "unknown job kind 'transmogrify': expected analyze or register"),
    ]
    for (kind, parameters), message in bad:
        if message is None:
            continue
        with pytest.raises(TxmdbError) as info:
            jobs.enqueue(catalog, kind, parameters, scan_id=scan)
        assert message in str(info.value)
    with pytest.raises(NotFoundError, match="no TXM scan with id 999"):
        jobs.enqueue(catalog, "analyze", {}, scan_id=999)
    with pytest.raises(NotFoundError, match="no job with id 555 to wait for"):
        jobs.enqueue(catalog, "analyze", {}, scan_id=scan, after=555)
    assert rows(catalog, "SELECT id FROM jobs ORDER BY id") == [(job_id,), (job_id + 1,)]


# ------------------------------------------------------------------------------- claiming
def test_a_jobs_kernel_threads(catalog, tmp_path):
    """A worker's kernel threads (txmdb worker --threads) run an analysis whose job gives no
    workers; a job's own workers stands; on a Dask cluster the tasks keep one thread each."""
    scan, = make_scans(catalog, tmp_path, 1)
    bare = jobs.get_job(catalog, jobs.enqueue(catalog, "analyze", {"bin": "1"}, scan_id=scan))
    own = jobs.get_job(catalog, jobs.enqueue(catalog, "analyze", {"bin": "1", "workers": 1}, scan_id=scan))
    assert jobs.job_analysis(catalog, bare, kernel_threads=3)[0].workers == 3
    assert jobs.job_analysis(catalog, own, kernel_threads=3)[0].workers == 1
    assert jobs.job_analysis(catalog, bare)[0].workers is None                      # one per core
    assert jobs.job_analysis(catalog, bare, scheduler="tcp://sched:8786", kernel_threads=3)[0].workers is None


def test_claim_takes_the_oldest_ready_job_once(catalog, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    first, second = (jobs.enqueue(catalog, "analyze", {}, scan_id=scan) for _ in range(2))
    a = jobs.claim(catalog, "host:1", lease_s=60)
    b = jobs.claim(catalog, "host:2", lease_s=60)
    assert (a.id, a.status, a.worker, a.attempts) == (first, "running", "host:1", 1)
    assert (b.id, b.worker) == (second, "host:2")
    assert jobs.claim(catalog, "host:3") is None
    assert jobs.renew(catalog, a.id, "host:1", lease_s=60)
    assert not jobs.renew(catalog, a.id, "host:2", lease_s=60)  # not its job
    assert not jobs.finish(catalog, a.id, "host:2", result={"analysis_id": 1})
    assert jobs.finish(catalog, a.id, "host:1", result={"analysis_id": 1})
    assert jobs.finish(catalog, b.id, "host:2", error="scan file gone")
    done, failed = jobs.get_job(catalog, a.id), jobs.get_job(catalog, b.id)
    assert (done.status, done.result, done.error, done.lease_expires_at) == ("done", {"analysis_id": 1}, None, None)
    assert (failed.status, failed.error) == ("failed", "scan file gone")
    assert not jobs.renew(catalog, a.id, "host:1")  # over: no lease to renew


def test_a_job_waits_for_the_one_it_is_after_and_fails_with_it(catalog, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    register = jobs.enqueue(catalog, "register", {}, scan_id=scan)
    analyze = jobs.enqueue(catalog, "analyze", {}, scan_id=scan, after=register)
    taken = jobs.claim(catalog, "w:1")
    assert taken.id == register
    assert jobs.claim(catalog, "w:2") is None  # its prerequisite is not done yet
    jobs.finish(catalog, register, "w:1", result={"registration_id": 1})
    assert jobs.claim(catalog, "w:2").id == analyze
    # a second pair whose registration fails: the analysis fails with it, it never runs
    register2 = jobs.enqueue(catalog, "register", {}, scan_id=scan)
    analyze2 = jobs.enqueue(catalog, "analyze", {}, scan_id=scan, after=register2)
    jobs.claim(catalog, "w:3")
    jobs.finish(catalog, register2, "w:3", error="poor registration")
    assert jobs.expire_leases(catalog) == [(analyze2, "failed")]
    assert jobs.get_job(catalog, analyze2).error == f"job {register2} it waits for is failed"
    assert jobs.claim(catalog, "w:4") is None


def test_an_expired_lease_is_retried_then_failed_after_the_last_attempt(catalog, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    job_id = jobs.enqueue(catalog, "analyze", {}, scan_id=scan, max_attempts=2)
    jobs.claim(catalog, "lost:1", lease_s=LEASE_S)
    assert jobs.expire_leases(catalog) == []  # lease still running
    listed = jobs.list_jobs(catalog)
    assert listed.loc[0, "status"] == "running" and not listed.loc[0, "stale"]
    time.sleep(LEASE_S + 0.3)
    assert bool(jobs.list_jobs(catalog).loc[0, "stale"])  # visibly stale before anyone looks
    assert jobs.expire_leases(catalog) == [(job_id, "queued")]
    job = jobs.get_job(catalog, job_id)
    assert (job.status, job.attempts, job.worker) == ("queued", 1, "lost:1")
    assert job.error == "worker lost:1 stopped renewing its lease (attempt 1 of 2)"
    assert not jobs.finish(catalog, job_id, "lost:1", result={})  # the lost worker cannot finish it now
    again = jobs.claim(catalog, "lost:2", lease_s=LEASE_S)
    assert (again.id, again.attempts, again.error) == (job_id, 2, None)
    time.sleep(LEASE_S + 0.3)
    assert jobs.expire_leases(catalog) == [(job_id, "failed")]
    job = jobs.get_job(catalog, job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert job.error == "worker lost:2 stopped renewing its lease (attempt 2 of 2); no attempts left"
    assert jobs.claim(catalog, "lost:3") is None


def test_release_gives_the_job_back_without_counting_the_attempt(catalog, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    job_id = jobs.enqueue(catalog, "analyze", {}, scan_id=scan)
    jobs.claim(catalog, "w:1")
    assert not jobs.release(catalog, job_id, "w:2")
    assert jobs.release(catalog, job_id, "w:1")
    job = jobs.get_job(catalog, job_id)
    assert (job.status, job.attempts, job.lease_expires_at, job.started_at) == ("queued", 0, None, None)
    assert jobs.claim(catalog, "w:2").attempts == 1


def test_cancel_and_retry(catalog, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    queued, running = (jobs.enqueue(catalog, "analyze", {}, scan_id=scan) for _ in range(2))
    assert jobs.cancel(catalog, queued).status == "cancelled"
    # the claim skips the cancelled job
    assert jobs.claim(catalog, "w:1").id == running
    assert jobs.cancel(catalog, running).status == "cancelled"
    assert not jobs.renew(catalog, running, "w:1")  # how the worker learns of it
    assert not jobs.finish(catalog, running, "w:1", result={"analysis_id": 3})
    with pytest.raises(TxmdbError, match=f"^job {queued} is cancelled: only queued or running jobs can be cancelled$"):
        jobs.cancel(catalog, queued)
    retried = jobs.retry(catalog, running)
    assert (retried.status, retried.attempts, retried.error, retried.finished_at) == ("queued", 0, None, None)
    with pytest.raises(TxmdbError, match=f"^job {running} is queued: only failed or cancelled jobs can be retried$"):
        jobs.retry(catalog, running)
    with pytest.raises(NotFoundError, match="no job with id 424242"):
        jobs.cancel(catalog, 424242)
    with pytest.raises(NotFoundError, match="no job with id 99999999999"):
        jobs.retry(catalog, 99999999999)
    assert sorted(jobs.list_jobs(catalog, "cancelled")["job_id"]) == [queued]
    assert sorted(jobs.list_jobs(catalog, ["queued", "cancelled"])["job_id"]) == [queued, running]
    with pytest.raises(TxmdbError, match="unknown job status 'paused'"):
        jobs.list_jobs(catalog, "paused")


# --------------------------------------------------------------------------------- running
def test_one_worker_runs_queued_analyses_to_done(catalog, cli, tmp_path):
    """`txm analyze --queue` queues one job per scan; `txmdb worker --once` (a real process) runs them.

    The analyses equal the foreground ones of the same options, each job made one analysis row.
    """
    scans = make_scans(catalog, tmp_path, 3)
    queued = cli("txm", "analyze", *map(str, scans), "--bin", "1,2", "--queue")
    assert queued.exit_code == 0, queued.output
    job_ids = [int(line) for line in queued.stdout.split()]
    assert len(job_ids) == 3
    assert rows(catalog, "SELECT scan_id, kind, status FROM jobs ORDER BY id") == [(s, "analyze", "queued") for s in scans]
    assert rows(catalog, "SELECT count(*) FROM analyses") == [(0,)]
    proc = subprocess.run(worker_command(cli.url, cli.store, "--once", "--lease", "5"), env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    done = jobs.list_jobs(catalog)
    assert list(done["status"]) == ["done"] * 3 and list(done["attempts"]) == [1] * 3
    analyses = rows(catalog, "SELECT id, scan_id, status FROM analyses ORDER BY id")
    assert [(scan, status) for _, scan, status in analyses] == [(s, "done") for s in scans]
    assert [r["analysis_id"] for r in done["result"]] == [a for a, _, _ in analyses]
    events = [line.split()[2] for line in proc.stderr.splitlines()]
    assert events == ["worker.started"] + ["job.started", "job.done"] * 3 + ["worker.stopped"]
    # the job ran what the foreground command runs with the same options
    fore = cli("txm", "analyze", str(scans[0]), "--bin", "1,2")
    assert fore.exit_code == 0, fore.output
    means = rows(catalog, f"SELECT mean_edge_ev, n_valid_voxels FROM analyses WHERE scan_id = {scans[0]} ORDER BY id")
    assert means[0] == means[1]
    params = rows(catalog, f"SELECT parameters FROM analyses WHERE scan_id = {scans[0]} ORDER BY id")
    assert [json.loads(p) if isinstance(p, str) else p for p, in params][0] == \
        [json.loads(p) if isinstance(p, str) else p for p, in params][1]


def test_a_failed_job_records_its_one_line_error(catalog, cli, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    job_id = jobs.enqueue(catalog, "analyze", {}, scan_id=scan)
    path = rows(catalog, f"SELECT file_path FROM txm_scans WHERE id = {scan}")[0][0]
    with open(path, "r+b") as fh:  # the file changes after its ingest
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    proc = subprocess.run(worker_command(cli.url, cli.store, "--once"), env=clean_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    job = jobs.get_job(catalog, job_id)
    assert job.status == "failed" and job.result is None
    assert job.error == f"{path}: the file changed since scan {scan} was ingested (SHA-256 differs)"
    assert f'job.failed job={job_id} kind=analyze scan={scan} error=' in proc.stderr


def test_cancelling_a_running_job_stops_its_worker_work(catalog, cli, tmp_path):
    """The worker learns of the cancel at its next renewal, stops the analysis (marked failed), goes on."""
    # 160³ voxels (the per-voxel phases set the time) of 24 energies (a smaller file than 128³ × 40):
    # at 128³ the analysis once ended between its 'running' row being seen and the cancel
    slow, quick = make_scans(catalog, tmp_path, 1, shape=(160, 160, 160), sample="big") + \
        make_scans(catalog, tmp_path, 1)
    slow_job = jobs.enqueue(catalog, "analyze", {}, scan_id=slow)
    quick_job = jobs.enqueue(catalog, "analyze", {}, scan_id=quick)
    proc = subprocess.Popen(worker_command(cli.url, cli.store, "--once", "--lease", "1.5"), env=clean_env(),
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: rows(catalog, "SELECT count(*) FROM analyses WHERE status = 'running'")[0][0] == 1)
        result = cli("jobs", "cancel", str(slow_job))
        assert (result.exit_code, result.stdout) == (0, f"job {slow_job} cancelled\n"), result.output
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert f"job.lost job={slow_job}" in stderr
    assert jobs.get_job(catalog, slow_job).status == "cancelled"
    assert jobs.get_job(catalog, quick_job).status == "done", stderr
    stopped = rows(catalog, f"SELECT status, error FROM analyses WHERE scan_id = {slow}")
    assert stopped == [("failed", "LeaseLost: the job was cancelled or taken over by another worker")]


# -------------------------------------------------------------------------------------- CLI
def test_jobs_cli_lists_cancels_and_retries(catalog, cli, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    first = jobs.enqueue(catalog, "analyze", {}, scan_id=scan)
    second = jobs.enqueue(catalog, "register", {"max_shift": 2}, scan_id=scan)
    listed = cli("jobs", "--format", "csv")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0] == ",".join(jobs.JOB_COLUMNS)
    assert [line.split(",")[:5] for line in lines[1:]] == [[str(first), "analyze", str(scan), "queued", "False"],
                                                          [str(second), "register", str(scan), "queued", "False"]]
    assert cli("jobs", "cancel", str(second)).stdout == f"job {second} cancelled\n"
    only = json.loads(cli("jobs", "--status", "cancelled", "-f", "json").stdout)
    assert [(j["job_id"], j["status"], j["parameters"]["max_shift"]) for j in only] == [(second, "cancelled", 2.0)]
    out = tmp_path / "jobs.json"
    assert cli("jobs", "--status", "queued", "--status", "cancelled", "-f", "json", "-o", str(out)).exit_code == 0
    assert [j["job_id"] for j in json.loads(out.read_text())] == [first, second]
    again = cli("jobs", "cancel", str(second))
    assert (again.exit_code, again.stderr) == (
        1, f"error: job {second} is cancelled: only queued or running jobs can be cancelled\n")
    assert cli("jobs", "retry", str(second)).stdout == f"job {second} queued again\n"
    missing = cli("jobs", "retry", "77")
    assert (missing.exit_code, missing.stderr) == (1, "error: no job with id 77; see 'txmdb jobs'\n")
    table = cli("jobs", "--scan", str(scan))
    assert table.exit_code == 0 and table.stdout.splitlines()[0].split()[:4] == ["job_id", "kind", "scan_id", "status"]
    assert cli("jobs", "--status", "paused").exit_code == 2
    assert rows(catalog, "SELECT status FROM jobs ORDER BY id") == [("queued",), ("queued",)]


def test_txm_analyze_queue_refuses_bad_options_and_queues_nothing(catalog, cli, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    bad = cli("txm", "analyze", str(scan), "--bin", "0", "--queue")
    assert (bad.exit_code, bad.stderr) == (1, "error: --bin '0': binning factors must be whole numbers from 1 to 16\n")
    missing = cli("txm", "analyze", str(scan), "404", "--queue")
    assert (missing.exit_code, missing.stderr) == (1, "error: no TXM scan with id 404; see 'txmdb query scans'\n")
    cluster = cli("txm", "analyze", str(scan), "--queue", "--scheduler", "tcp://127.0.0.1:1")
    assert cluster.exit_code == 1
    assert cluster.stderr == "error: --scheduler is the worker's with --queue: give it to 'txmdb worker'\n"
    assert rows(catalog, "SELECT count(*) FROM jobs") == [(0,)]


def test_worker_refuses_bad_options(cli):
    assert cli("init").exit_code == 0
    lease = cli("worker", "--lease", "0.1")
    assert (lease.exit_code, lease.stderr) == (1, "error: --lease must be at least 1 s, got 0.1\n")
    many = cli("worker", "--concurrency", "0")
    assert (many.exit_code, many.stderr) == (1, "error: --concurrency must be at least 1, got 0\n")


# -------------------------------------------------------------------------------- event log
def test_event_log_lines_split_back_into_fields_and_hide_passwords():
    out = io.StringIO()
    log = EventLog(out)
    log.info("worker.started", worker="vm:12", db="postgresql://lab:s3cret@db.example/txm", once=True, lease_s=60.0,
             scheduler=None)
    log.error("job.failed", job=3, error='/data/a b.h5: bad "chunk" password=hunter2\nsecond line')
    first, second = out.getvalue().splitlines()
    stamp, level, event, *fields = first.split(" ")
    assert (level, event) == ("info", "worker.started") and stamp.endswith("Z") and "T" in stamp
    assert fields == ["worker=vm:12", "db=postgresql://lab:***@db.example/txm", "once=true", "lease_s=60"]
    assert second.split(" ", 3)[1:3] == ["error", "job.failed"]
    error = second.split(" error=", 1)[1]
    assert json.loads(error) == '/data/a b.h5: bad "chunk" password=***\nsecond line'
    assert "s3cret" not in out.getvalue() and "hunter2" not in out.getvalue()

    out = io.StringIO()
    EventLog(out, json=True).warning("job.lease_expired", job=4, worker="h:1", url="postgresql://u:pw@h/db")
    record = json.loads(out.getvalue())
    assert record["level"] == "warning" and record["event"] == "job.lease_expired"
    assert (record["job"], record["worker"], record["url"]) == (4, "h:1", "postgresql://u:***@h/db")
    assert out.getvalue().count("\n") == 1


def test_worker_log_never_shows_the_password(pw_db, tmp_path):
    """The worker's start line names its catalogue without the password of its URL."""
    from urllib.parse import quote

    from tests.pg_server import PASSWORD_ROLE
    from tests.test_secrets import PASSWORD, assert_no_secret

    server, name = pw_db
    url = f"postgresql://{PASSWORD_ROLE}:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}/{name}"
    env = clean_env()
    init = subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--db", url, "init"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    proc = subprocess.run(worker_command(url, tmp_path / "store", "--once", "--log-json"), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [e["event"] for e in events] == ["worker.started", "worker.stopped"]
    assert events[0]["db"] == f"postgresql+psycopg://{PASSWORD_ROLE}:***@127.0.0.1:{server.port}/{name}"
    assert_no_secret(proc.stderr)


def test_worker_runs_analyses_on_a_dask_scheduler(catalog, cli, tmp_path):
    """`txmdb worker --scheduler`: the job's analysis runs on the cluster and equals the local one."""
    from dask.distributed import LocalCluster

    scan, = make_scans(catalog, tmp_path, 1)
    job_id = jobs.enqueue(catalog, "analyze", {"bin": "1,2"}, scan_id=scan)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        proc = subprocess.run(worker_command(cli.url, cli.store, "--once", "--scheduler", cluster.scheduler_address),
                              env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    job = jobs.get_job(catalog, job_id)
    assert job.status == "done", job.error
    assert f"scheduler={cluster.scheduler_address}" in proc.stderr.splitlines()[0]
    local = cli("txm", "analyze", str(scan), "--bin", "1,2")
    assert local.exit_code == 0, local.output
    cluster_row, local_row = rows(catalog, "SELECT id, n_valid_voxels, mean_edge_ev FROM analyses ORDER BY id")
    assert cluster_row[0] == job.result["analysis_id"]
    assert cluster_row[1:] == local_row[1:]
