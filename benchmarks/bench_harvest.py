"""The watcher's latency and idle cost (DESIGN §12, issue 12 item 8).

1. Latency: from the moment a 1,000-record cycler CSV is complete in a watched folder (renamed
   into it whole) to its cycling run being visible in the catalogue. Goal: ≤ settle time + 1 s
   with inotify events; polling finds the file up to one walk later.
2. Idle: a watcher over 10,000 existing files, all already recorded in harvested_files (a
   harvest that has run before), left alone: CPU over a quiet window and resident memory.
   Goal: < 5 % of one core, < 100 MB RSS (the watcher process; its ingest process is started
   only when a file appears, and leaves after a minute without work).

Both with inotify events and with ``--poll``, each watcher a real ``txmdb watch`` process on a
SQLite catalogue in a temporary folder.

    python benchmarks/bench_harvest.py [--settle 2] [--files 10000] [--idle 30] [--poll 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}
RULES = """settle_seconds = {settle}
[[rule]]
folder = "watched"
glob = "*.csv"
kind = "cycling"
pattern = '(?P<cell>C\\d+)_.*\\.csv'
"""


def catalogue(root: Path, cells: int):
    from txmdb.catalog import open_catalog
    from txmdb.catalog.samples import add_cell, add_sample
    from txmdb.db.migrate import upgrade

    cat = open_catalog(f"sqlite:///{root / 'c.db'}", root / "store", check=False)
    upgrade(cat.engine)
    with cat.session() as session:
        add_sample(session, "S")
        for i in range(cells):
            add_cell(session, f"C{i}", sample="S", active_mass_mg=5)
    return cat


def watcher(root: Path, *options: str) -> tuple[subprocess.Popen, Path]:
    log = root / f"watch-{time.monotonic_ns()}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "txmdb.cli.main", "--db", f"sqlite:///{root / 'c.db'}",
                                 "--store", str(root / "store"), "watch", str(root / "rules.toml"), *options],
                                env=ENV, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 60
    while "watch.start" not in log.read_text():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"the watcher did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return proc, log


def latency(root: Path, options: list[str], rounds: int) -> list[float]:
    """Seconds from a complete file's arrival to its record, ``rounds`` files in a row."""
    from sqlalchemy import func, select

    from txmdb.db.models import CyclingRun
    from txmdb.synthetic.cycling import ROD_NMC, with_overrides, write_cycling_csv

    cat = catalogue(root, rounds)
    (root / "watched").mkdir()
    proc, _ = watcher(root, *options)
    times = []
    try:
        time.sleep(1.0)  # the first walk is done
        for i in range(rounds):
            staged = root / f"staged{i}.csv"
            write_cycling_csv(with_overrides(ROD_NMC, n_cycles=5, ce=0.995 - 0.001 * i), staged, records_per_step=50)
            target = root / "watched" / f"C{i}_run.csv"
            os.replace(staged, target)  # complete at this instant
            start = time.monotonic()
            while True:
                with cat.session() as s:
                    if s.scalar(select(func.count()).select_from(CyclingRun)) == i + 1:
                        break
                time.sleep(0.02)
            times.append(time.monotonic() - start)
            with cat.session() as s:
                records = s.scalar(select(CyclingRun.n_records).order_by(CyclingRun.id.desc()).limit(1))
            print(f"  file {i}: {records} records, visible after {times[-1]:.2f} s")
    finally:
        proc.terminate()
        proc.wait(30)
    return times


def idle(root: Path, options: list[str], files: int, window: float) -> tuple[float, float, float]:
    """CPU % of one core over ``window`` s, and RSS / peak RSS in MB, of a watcher over ``files``
    recorded files."""
    from txmdb.db.models import HarvestedFile

    cat = catalogue(root, 1)
    watched = root / "watched"
    rows = []
    now = dt.datetime.now(dt.timezone.utc)
    for i in range(files):
        folder = watched / f"d{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"C0_{i:05d}.csv"
        path.write_text(f"time_s,voltage_v,current_a\n{i},3.7,0.001\n")
        st = path.stat()
        rows.append(dict(path=str(path), rule="1", kind="cycling", status="ingested", size_bytes=st.st_size,
                         mtime=st.st_mtime, sha256="0" * 64, missing_reference=False, changed_after_ingest=False,
                         record_kind="cycling_runs", record_id=i + 1, first_seen=now, updated=now))
    with cat.engine.begin() as conn:
        conn.execute(HarvestedFile.__table__.insert(), rows)
    proc, log = watcher(root, *options)
    try:
        time.sleep(5)  # start-up walk done
        before = _cpu_seconds(proc.pid)
        time.sleep(window)
        used = _cpu_seconds(proc.pid) - before
        rss, peak = _rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    events = [line for line in log.read_text().splitlines() if " file." in line]
    if events:
        print(f"  unexpected events while idle: {events[:3]}")
    return 100 * used / window, rss, peak


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return (int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, options in (("inotify", []), (f"--poll {args.poll:g}", ["--poll", str(args.poll)])):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "rules.toml").write_text(RULES.format(settle=args.settle))
            bound = args.settle + 1 + (args.poll if options else 0)  # polling: found up to a walk later
            print(f"{name}: latency, settle {args.settle:g} s (goal ≤ {bound:g} s)")
            times = latency(root, options, args.rounds)
            print(f"  worst {max(times):.2f} s, best {min(times):.2f} s")
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "rules.toml").write_text(RULES.format(settle=args.settle))
            cpu, rss, peak = idle(root, options, args.files, args.idle)
            print(f"{name}: idle over {args.files} recorded files for {args.idle:g} s: CPU {cpu:.2f} % of one core, "
                  f"RSS {rss:.0f} MB (peak {peak:.0f} MB)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
