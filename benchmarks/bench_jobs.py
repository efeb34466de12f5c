"""Durable jobs (DESIGN §12): throughput of 1 and 2 workers, pick-up latency, idle cost.

1. Throughput: N small synthetic scans queued (``txm analyze --queue``-equivalent), then W real
   ``txmdb worker --once`` processes started together; wall time until they all exit, and the
   jobs each worker took.
2. Pick-up latency: one idle worker; a job queued every 2 s; the time from a job's
   ``created_at`` to its ``started_at`` (the worker looks every WORKER_POLL_S).
3. Idle cost: that worker left alone: CPU share over the window and resident memory.

    python benchmarks/bench_jobs.py [--pg] [--scans 20] [--idle 20]

``--pg`` runs on a throwaway PostgreSQL server (tests/pg_server.py), else on SQLite.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.pg_server

ENV = {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}


def worker(url: str, store: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "txmdb.cli.main", "--db", url, "--store", str(store), "worker",
                             *args], env=ENV, stderr=subprocess.PIPE, text=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--idle", type=float, default=20.0, help="idle window, s")
    args = parser.parse_args()

    from tests.test_jobs import make_scans
    from txmdb import jobs
    from txmdb.catalog import open_catalog
    from txmdb.db.migrate import upgrade

    server = None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.pg:
            from tests.pg_server import PostgresServer

            server = PostgresServer().start()
            url = server.create_database("bench_jobs")
        else:
            url = f"sqlite:///{root / 'catalogue.db'}"
        try:
            store = root / "store"
            catalog = open_catalog(url, store, check=False)
            upgrade(catalog.engine)
            scans = make_scans(catalog, root, args.scans)
            print(f"backend {'postgresql' if args.pg else 'sqlite'}; {len(scans)} scans of 24 × 12 × 32 × 32")
            for n_workers in (1, 2):
                for scan in scans:
                    jobs.enqueue(catalog, "analyze", {"bin": "1,2"}, scan_id=scan)
                t0 = time.perf_counter()
                procs = [worker(url, store, "--once") for _ in range(n_workers)]
                logs = [p.communicate()[1] for p in procs]
                wall = time.perf_counter() - t0
                taken = [log.count(" job.done ") for log in logs]
                print(f"{n_workers} worker(s): {len(scans)} analyses in {wall:.1f} s "
                      f"({len(scans) / wall:.2f} jobs/s, start-up included); jobs per worker {taken}")
            idle = worker(url, store)
            time.sleep(3)  # started
            waits = []
            for scan in scans[:5]:
                job_id = jobs.enqueue(catalog, "analyze", {"bin": "1"}, scan_id=scan)
                while jobs.get_job(catalog, job_id).status in ("queued", "running"):
                    time.sleep(0.05)
                job = jobs.get_job(catalog, job_id)
                waits.append((job.started_at - job.created_at).total_seconds())
                time.sleep(2)
            print(f"pick-up latency (created → started), 5 jobs: mean {sum(waits) / len(waits):.2f} s, "
                  f"max {max(waits):.2f} s")
            c0, t0 = cpu_seconds(idle.pid), time.perf_counter()
            time.sleep(args.idle)
            share = (cpu_seconds(idle.pid) - c0) / (time.perf_counter() - t0)
            print(f"idle worker over {args.idle:g} s: {100 * share:.1f} % of one core, RSS {rss_mb(idle.pid):.0f} MB")
            idle.terminate()
            idle.communicate(timeout=60)
            catalog.engine.dispose()
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
