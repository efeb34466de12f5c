"""Durable jobs attacked like a careless or hostile lab user (issue 12 item 5): bad options through
``txm analyze --queue``, odd job ids, tampered job rows, missing and changed scan files, racing
claims, a stop between claim and start, out-of-range worker options, an unreachable scheduler,
passwords and markup in errors. Every database test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.test_jobs import clean_env, make_scans, rows, worker_command
from tests.test_secrets import pw_db, pw_server  # noqa: F401  (fixtures)
from txmdb import jobs
from txmdb.errors import DatabaseError, TxmdbError
from txmdb.eventlog import EventLog


def scan_path(catalog, scan: int) -> str:
    return rows(catalog, f"SELECT file_path FROM txm_scans WHERE id = {scan}")[0][0]


def insert_job(catalog, parameters: str, *, scan: int, kind: str = "analyze") -> int:
    """A job row written straight into the database (as a hand edit would), parameters as raw JSON text."""
    with catalog.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO jobs (kind, parameters, scan_id, status, attempts, max_attempts, created_at) "
                             "VALUES (:kind, :parameters, :scan, 'queued', 0, 3, CURRENT_TIMESTAMP)"),
                     {"kind": kind, "parameters": parameters, "scan": scan})
        return conn.execute(sa.text("SELECT max(id) FROM jobs")).scalar_one()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------ txm analyze --queue
def test_queue_refuses_every_bad_analyze_option_before_queueing(catalog, cli, tmp_path):
    """Each bad value is one line, exit 1, and no job: also the ones only the stack can judge
    (windows without energies, a map this stack's analysis does not compute), as the foreground does."""
    scan, = make_scans(catalog, tmp_path, 1)
    path = scan_path(catalog, scan)
    bad = [
        (["--bin", "abc"], "--bin 'abc': expected binning factors like 1,2,3"),
        (["--bin", "1,99"], "--bin '1,99': binning factors must be whole numbers from 1 to 16"),
        (["--pre", "8400:8300"], "--pre '8400:8300': expected LO:HI in eV with LO < HI"),
        (["--pre", "nan:8300"], "--pre 'nan:8300': expected LO:HI in eV with LO < HI"),
        (["--pre", "1:2"], f"{path}: pre-edge window 1..2 eV holds 0 energies of the grid 8280..8420 eV; "
                           "it needs at least 2 (the whole grid lies above it: is the element, or are the "
                           "windows, those of this stack's edge?)"),
        (["--element", "Fe"], f"{path}: pre-edge window -inf..7099 eV holds 0 energies of the grid 8280..8420 eV; "
                              "it needs at least 2 (the whole grid lies above it: is the element, or are the "
                              "windows, those of this stack's edge?)"),
        (["--edge", "8300:"], "--edge '8300:': both ends are needed (the edge jump is taken at the window's centre)"),
        (["--white-line", "9000:9100"], f"{path}: white-line window 9000..9100 eV holds 0 energies of the grid "
                                        "8280..8420 eV; the cubic needs at least 4 (the whole grid lies below it: "
                                        "is the element, or are the windows, those of this stack's edge?)"),
        (["--lcf", "NiO"], "no reference spectrum named 'NiO'; record one with "
                           "'txmdb xas ingest FILE --reference NiO --edge Ni-K'"),
        (["--lcf", ","], "--lcf ',': expected reference names separated by commas, e.g. NiO,LiNiO2"),
        (["--lcf-window", "8300:8400"], "--lcf-window is the fit window of --lcf NAME,NAME: give the references too"),
        (["--registration", "abc"], "--registration 'abc': expected a registration id or none"),
        (["--registration", "-1"], "--registration '-1': expected a registration id or none"),
        (["--registration", "5"], "no registration with id 5; see 'txmdb query registrations'"),
        (["--gradient-map", "bogus"], "map: map 'bogus' does not exist; maps: edge, white_line, "
                                      "white_line_height, fraction:NAME, rfactor, cluster"),
        (["--gradient-map", "white_line"], "gradient_maps: map 'white_line' is not computed by this analysis; "
                                           "its maps: edge"),
        (["--clusters", "0"], "--clusters must be between 2 and 100, got 0"),
        (["--clusters", "101"], "--clusters must be between 2 and 100, got 101"),
        (["--theta-bins", "1"], "--theta-bins must be between 2 and 180, got 1"),
        (["--workers", "0"], "--workers must be between 1 and 64, got 0"),
        (["--workers", "65"], "--workers must be between 1 and 64, got 65"),
        (["--min-jump", "nan"], "analyze option min_jump: expected a finite number, got nan"),
        (["--snr", "inf"], "analyze option snr: expected a finite number, got inf"),
    ]
    for args, message in bad:
        result = cli("txm", "analyze", str(scan), *args, "--queue")
        assert (result.exit_code, result.stderr, result.stdout) == (1, f"error: {message}\n", ""), args
    assert rows(catalog, "SELECT count(*) FROM jobs") == [(0,)]
    # the foreground refuses the same values with the same line (one parser)
    fore = cli("txm", "analyze", str(scan), "--min-jump", "nan")
    assert (fore.exit_code, fore.stderr) == (1, "error: analyze option min_jump: expected a finite number, got nan\n")
    assert rows(catalog, "SELECT count(*) FROM analyses") == [(0,)]


def test_non_finite_numbers_are_refused_by_enqueue_on_both_backends(catalog, tmp_path):
    """NaN is no JSON: PostgreSQL refused it with a database error, SQLite stored it; now both refuse it."""
    scan, = make_scans(catalog, tmp_path, 1)
    for kind, parameters, message in [
        ("analyze", {"min_jump": float("nan")}, "analyze option min_jump: expected a finite number, got nan"),
        ("analyze", {"snr": float("-inf")}, "analyze option snr: expected a finite number, got -inf"),
        ("register", {"max_shift": float("inf")}, "register option max_shift: expected a finite number, got inf"),
        ("register", {"reference_energy": float("nan")},
         "register option reference_energy: expected a finite number, got nan"),
        ("analyze", "bin=1", "analyze options: expected a table of option names and values, got 'bin=1'"),
    ]:
        with pytest.raises(TxmdbError) as info:
            jobs.enqueue(catalog, kind, parameters, scan_id=scan)
        assert str(info.value) == message
    assert rows(catalog, "SELECT count(*) FROM jobs") == [(0,)]


# ----------------------------------------------------------------------------- cancel, retry
def test_cancel_and_retry_of_odd_ids_and_states(catalog, cli, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    done, running, failed = (jobs.enqueue(catalog, "register", {}, scan_id=scan) for _ in range(3))
    assert jobs.claim(catalog, "w:1").id == done
    jobs.finish(catalog, done, "w:1", result={"registration_id": 1})
    assert jobs.claim(catalog, "w:2").id == running
    assert jobs.claim(catalog, "w:3").id == failed
    jobs.finish(catalog, failed, "w:3", error="poor registration")
    lines = {
        ("cancel", str(done)): f"job {done} is done: only queued or running jobs can be cancelled",
        ("retry", str(done)): f"job {done} is done: only failed or cancelled jobs can be retried",
        ("retry", str(running)): f"job {running} is running: only failed or cancelled jobs can be retried",
        ("cancel", "0"): "no job with id 0; see 'txmdb jobs'",
        ("cancel", "424242"): "no job with id 424242; see 'txmdb jobs'",
        ("retry", "2147483647"): "no job with id 2147483647; see 'txmdb jobs'",
    }
    for args, message in lines.items():
        result = cli("jobs", *args)
        assert (result.exit_code, result.stderr, result.stdout) == (1, f"error: {message}\n", ""), args
    # usage errors, one line each (an id is ASCII digits up to 2³¹ - 1, as the filters read it)
    for args in (("cancel", "abc"), ("retry", "1.5"), ("retry",), ("cancel", "-1"), ("cancel", "--", "-1"),
                 ("retry", "99999999999999999999"), ("cancel", "+1")):
        result = cli("jobs", *args)
        assert result.exit_code == 2 and result.stdout == "", args
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, args
        assert result.stderr.endswith(f"(see 'txmdb jobs {args[0]} --help')\n"), args
    for scan_filter in ("99999999999999999999", "-1"):  # SQLite raised OverflowError binding the first
        result = cli("jobs", "--scan", scan_filter)
        assert (result.exit_code, result.stderr) == (2, f"error: Invalid value for '--scan': {scan_filter!r} is not a "
                                                        "whole number from 0 to 2147483647 (see 'txmdb jobs --help')\n")
    with pytest.raises(TxmdbError, match="^--scan -1: not in the range 0 to 2147483647$"):  # the library's own check
        jobs.list_jobs(catalog, [], scan=-1)
    assert cli("jobs", "--scan", "2147483647").stdout == "(no rows)\n"
    bogus = cli("jobs", "--status", "bogus")
    assert bogus.exit_code == 2 and "'bogus' is not one of 'queued'" in bogus.stderr and "--status" in bogus.stderr
    # a retry, then a second one: the second is refused and changes nothing
    assert cli("jobs", "retry", str(failed)).stdout == f"job {failed} queued again\n"
    second = cli("jobs", "retry", str(failed))
    assert (second.exit_code, second.stderr) == (
        1, f"error: job {failed} is queued: only failed or cancelled jobs can be retried\n")
    assert rows(catalog, "SELECT id, status, attempts, worker FROM jobs ORDER BY id") == [
        (done, "done", 1, "w:1"), (running, "running", 1, "w:2"), (failed, "queued", 0, "w:3")]


# ------------------------------------------------------------------- jobs that cannot run
def test_worker_fails_bad_jobs_in_one_line_and_keeps_serving(catalog, cli, tmp_path):
    """A scan file removed, a file changed since ingest, and job rows edited by hand (parameters
    that are no table of options, an unknown kind, on SQLite text that is not JSON at all): each
    job fails with its one-line error; the worker goes on to the good job after them, and
    ``txmdb jobs``, cancel and retry still read every row."""
    gone, changed, good = make_scans(catalog, tmp_path, 3)
    gone_path, changed_path = scan_path(catalog, gone), scan_path(catalog, changed)
    expected = {jobs.enqueue(catalog, "analyze", {}, scan_id=gone): None,
                jobs.enqueue(catalog, "analyze", {}, scan_id=changed):
                    f"{changed_path}: the file changed since scan {changed} was ingested (SHA-256 differs)"}
    Path(gone_path).unlink()
    with open(changed_path, "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    tampered = [('"garbage"', "analyze options: expected a table of option names and values, got 'garbage'"),
                ("[1, 2]", "analyze options: expected a table of option names and values, got '[1, 2]'"),
                ('{"theta_bins": "x"}', "analyze option theta_bins: expected int, got 'x'"),
                ('{"min_jump": 1e400}', "analyze option min_jump: expected a finite number, got inf")]
    if catalog.engine.dialect.name == "sqlite":  # PostgreSQL refuses text that is not JSON itself
        tampered.append(("not json {", "analyze options: expected a table of option names and values, "
                                       "got 'not json {'"))
    for text, error in tampered:
        expected[insert_job(catalog, text, scan=good)] = error
    expected[insert_job(catalog, "{}", scan=good, kind="bogus")] = None
    good_job = jobs.enqueue(catalog, "analyze", {"bin": "1"}, scan_id=good)

    listed = cli("jobs", "-f", "json")  # every row readable before the worker runs
    assert listed.exit_code == 0, listed.output
    assert [j["job_id"] for j in json.loads(listed.stdout)] == [*expected, good_job]
    proc = subprocess.run(worker_command(cli.url, cli.store, "--once", "--lease", "5"), env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = dict(rows(catalog, "SELECT id, error FROM jobs WHERE status = 'failed' ORDER BY id"))
    assert list(errors) == list(expected)
    for job_id, error in expected.items():
        if error is not None:
            assert errors[job_id] == error
    assert errors[list(expected)[0]].startswith(f"{gone_path}: ")
    assert errors[list(expected)[-1]] == f"job {list(expected)[-1]}: unknown kind 'bogus'"
    assert all("\n" not in e for e in errors.values())
    assert rows(catalog, f"SELECT status FROM jobs WHERE id = {good_job}") == [("done",)]
    assert proc.stderr.count(" job.failed ") == len(expected)
    assert proc.stderr.splitlines()[-1].split(" ")[2] == "worker.stopped"
    assert f"done=1 failed={len(expected)} released=0 lost=0" in proc.stderr.splitlines()[-1]
    # a hand-edited row can still be retried and cancelled
    poisoned = list(expected)[2]
    assert cli("jobs", "retry", str(poisoned)).stdout == f"job {poisoned} queued again\n"
    assert cli("jobs", "cancel", str(poisoned)).stdout == f"job {poisoned} cancelled\n"


# ------------------------------------------------------------------------------- claiming
def test_racing_claims_never_take_a_job_twice(catalog, tmp_path):
    """Eight threads, each its own worker name and connection, claim 40 jobs as fast as they can.

    The claim is one UPDATE … WHERE id = (SELECT … LIMIT 1 [FOR UPDATE SKIP LOCKED]) AND
    status = 'queued' RETURNING id: every job is taken by exactly one worker.
    """
    scan, = make_scans(catalog, tmp_path, 1)
    queued = [jobs.enqueue(catalog, "register", {}, scan_id=scan) for _ in range(40)]
    taken: dict[str, list[int]] = {}
    barrier = threading.Barrier(8)

    def claimer(name: str) -> None:
        mine = taken.setdefault(name, [])
        barrier.wait()
        while True:
            try:
                job = jobs.claim(catalog, name, lease_s=600)
            except DatabaseError:  # SQLite: the one writer was busy past its timeout; look again
                continue
            if job is None:
                return
            mine.append(job.id)

    threads = [threading.Thread(target=claimer, args=(f"race:{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    every = [job_id for ids in taken.values() for job_id in ids]
    assert sorted(every) == queued  # each once
    held = rows(catalog, "SELECT id, worker, attempts, status FROM jobs ORDER BY id")
    owner = {job_id: name for name, ids in taken.items() for job_id in ids}
    assert held == [(job_id, owner[job_id], 1, "running") for job_id in queued]


def test_a_stop_between_claim_and_start_gives_the_job_back(catalog, tmp_path):
    """SIGTERM (SystemExit) after the claim committed but before the job's work began: the job is
    queued again at once, its attempt not counted, instead of waiting out its lease."""
    scan, = make_scans(catalog, tmp_path, 1)
    job_id = jobs.enqueue(catalog, "analyze", {}, scan_id=scan)

    class StopsAtStart(io.StringIO):
        def write(self, text):
            super().write(text)
            if " job.started " in text:
                raise SystemExit(143)  # what cli.main's SIGTERM handler raises
            return len(text)

    stream = StopsAtStart()
    with pytest.raises(SystemExit):
        jobs.run_worker(catalog, lease_s=600, once=True, log=EventLog(stream), name="stopped:1")
    assert rows(catalog, f"SELECT status, attempts, lease_expires_at FROM jobs WHERE id = {job_id}") == [
        ("queued", 0, None)]
    assert stream.getvalue().splitlines()[-1].split(" ")[2:4] == ["worker.stopped", "worker=stopped:1"]


# --------------------------------------------------------------------------- worker options
def test_worker_refuses_out_of_range_options_in_one_line(cli):
    assert cli("init").exit_code == 0
    for args, message in [
        (["--lease", "0"], "--lease must be at least 1 s, got 0"),
        (["--lease", "nan"], "--lease must be at least 1 s, got nan"),
        (["--lease", "inf"], "--lease must be at most 86400 s (a day), got inf"),
        (["--lease", "1e300"], "--lease must be at most 86400 s (a day), got 1e+300"),
        (["--concurrency", "0"], "--concurrency must be at least 1, got 0"),
        (["--concurrency", "65"], "--concurrency must be at most 64, got 65"),
        (["--scheduler", "garbage"], "Dask scheduler address 'garbage' is malformed: expected tcp://host:port, "
                                     "e.g. tcp://10.0.0.5:8786"),
        (["--scheduler", "tcp://"], "Dask scheduler address 'tcp://' is malformed: expected tcp://host:port, "
                                    "e.g. tcp://10.0.0.5:8786"),
    ]:
        result = cli("worker", "--once", *args)
        assert (result.exit_code, result.stderr, result.stdout) == (1, f"error: {message}\n", ""), args
    for value in ("-3", "99999999999999999999", "+1_0"):  # not a whole number: a usage error (session 24)
        result = cli("worker", "--once", "--concurrency", value)
        assert (result.exit_code, result.stdout) == (2, ""), value
        assert result.stderr == (f"error: Invalid value for '--concurrency' / '-c': {value!r} is not a whole number "
                                 f"from 0 to 2147483647 (see 'txmdb worker --help')\n")


def test_an_unreachable_scheduler_leaves_the_queue_alone(catalog, cli, tmp_path):
    """A worker whose Dask scheduler does not answer gives the job back (attempt not counted)
    instead of failing every queued job in turn; with --once it stops there."""
    scan, = make_scans(catalog, tmp_path, 1)
    queued = [jobs.enqueue(catalog, "analyze", {}, scan_id=scan) for _ in range(3)]
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.run(worker_command(cli.url, cli.store, "--once", "--scheduler", address), env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert rows(catalog, "SELECT id, status, attempts, error FROM jobs ORDER BY id") == [
        (job_id, "queued", 0, None) for job_id in queued]
    events = [line.split(" ")[1:3] for line in proc.stderr.splitlines()]
    assert events == [["info", "worker.started"], ["info", "job.started"], ["error", "job.released"],
                      ["info", "worker.stopped"]]
    assert f'reason="cannot reach the Dask scheduler at {address}: ' in proc.stderr
    assert 'reason="the Dask scheduler did not answer"' in proc.stderr.splitlines()[-1]
    assert rows(catalog, "SELECT count(*) FROM analyses") == [(0,)]


# ------------------------------------------------------------------------ errors and secrets
@pytest.mark.parametrize("log_json", [False, True], ids=["text", "json"])
def test_no_password_in_worker_logs_or_stored_job_errors(pw_db, tmp_path, log_json):
    """A password-protected PostgreSQL catalogue: the worker's log (text and JSON) and the jobs'
    stored errors never hold the password, even where a failing job's own text carries one."""
    from urllib.parse import quote

    from tests.pg_server import PASSWORD_ROLE
    from tests.test_secrets import PASSWORD, assert_no_secret
    from txmdb.catalog import open_catalog
    from txmdb.db.migrate import upgrade

    server, name = pw_db
    url = f"postgresql://{PASSWORD_ROLE}:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}/{name}"
    env = clean_env()
    catalog = open_catalog(url, tmp_path / "store", check=False)
    upgrade(catalog.engine)
    try:
        scan, = make_scans(catalog, tmp_path, 1)
        missing = jobs.enqueue(catalog, "analyze", {}, scan_id=scan)
        Path(scan_path(catalog, scan)).unlink()  # after queueing: enqueue refuses a scan without its file
        leaky = insert_job(catalog, json.dumps({"lcf": f"x password={PASSWORD}"}), scan=scan)
        proc = subprocess.run(worker_command(url, tmp_path / "store", "--once", *(["--log-json"] if log_json else [])),
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert_no_secret(proc.stderr)
        stored = rows(catalog, "SELECT id, status, error, worker FROM jobs ORDER BY id")
    finally:
        catalog.engine.dispose()
    assert [(i, s) for i, s, _, _ in stored] == [(missing, "failed"), (leaky, "failed")]
    assert_no_secret(repr(stored))
    assert stored[1][2] == ("no reference spectrum named 'x password=*** record one with "
                            "'txmdb xas ingest FILE --reference x password=*** --edge Ni-K'")
    if log_json:
        events = [json.loads(line) for line in proc.stderr.splitlines()]
        assert [e["event"] for e in events] == ["worker.started", "job.started", "job.failed", "job.started",
                                                "job.failed", "worker.stopped"]
        assert events[0]["db"] == f"postgresql+psycopg://{PASSWORD_ROLE}:***@127.0.0.1:{server.port}/{name}"


def test_job_errors_with_newlines_escapes_and_markup_are_one_bounded_line(catalog, cli, tmp_path):
    """A job whose error text carries a line break, an ANSI escape and HTML (here an option value
    of a hand-edited row) is stored as one line of at most 2000 characters; ``txmdb jobs`` shows
    the escape escaped, and the log line stays one line."""
    scan, = make_scans(catalog, tmp_path, 1)
    hostile = "<script>alert(1)</script>\x1b[31mred\nsecond line\r\u2028" + "x" * 5000
    markup = insert_job(catalog, json.dumps({hostile: 1}), scan=scan)
    proc = subprocess.run(worker_command(cli.url, cli.store, "--once"), env=clean_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (error,), = rows(catalog, f"SELECT error FROM jobs WHERE id = {markup}")
    assert error.startswith("unknown analyze option '<script>alert(1)</script>\\x1b[31mred\\nsecond line")
    assert len(error) <= 2000 and len(error.splitlines()) == 1 and "\x1b" not in error
    failed = [line for line in proc.stderr.splitlines() if " job.failed " in line]
    assert len(failed) == 1 and "\x1b" not in proc.stderr
    table = cli("jobs")
    assert table.exit_code == 0 and "\x1b" not in table.stdout


def test_workers_killed_or_stopped_at_random_moments_lose_and_repeat_nothing(catalog, cli, tmp_path):
    """Real worker processes SIGKILLed or SIGTERMed at random moments (starting, claiming,
    running), then one worker drains the queue: every job ends done (or failed after its last
    attempt, named so), none is left running or queued, each done job's analysis is done, and
    no analysis is left running."""
    import random
    import signal
    import time

    scan, = make_scans(catalog, tmp_path, 1)
    queued = [jobs.enqueue(catalog, "analyze", {"bin": "1"}, scan_id=scan) for _ in range(10)]
    chance = random.Random(12)
    for round_ in range(6):
        proc = subprocess.Popen(worker_command(cli.url, cli.store, "--lease", "1"), env=clean_env(),
                                stderr=subprocess.DEVNULL)
        time.sleep(chance.uniform(0.5, 3.0))
        proc.send_signal(signal.SIGKILL if round_ % 2 == 0 else signal.SIGTERM)
        proc.wait(timeout=60)
    time.sleep(1.2)  # every lease of a killed worker has passed
    drain = subprocess.run(worker_command(cli.url, cli.store, "--once", "--lease", "1"), env=clean_env(),
                           capture_output=True, text=True, timeout=300)
    assert drain.returncode == 0, drain.stderr
    final = rows(catalog, "SELECT id, status, error, result FROM jobs ORDER BY id")
    assert [job_id for job_id, *_ in final] == queued
    for job_id, status, error, result in final:
        assert status in ("done", "failed"), (job_id, status)
        if status == "failed":
            assert error.endswith("; no attempts left"), error
        else:
            result = json.loads(result) if isinstance(result, str) else result
            assert rows(catalog, f"SELECT status FROM analyses WHERE id = {result['analysis_id']}") == [("done",)]
    assert rows(catalog, "SELECT count(*) FROM analyses WHERE status = 'running'") == [(0,)]
    done = [job_id for job_id, status, *_ in final if status == "done"]
    # at least once: a worker killed after its analysis was recorded but before its job was may leave one more
    assert rows(catalog, "SELECT count(*) FROM analyses WHERE status = 'done'")[0][0] >= len(done)
