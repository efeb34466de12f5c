"""Web pages and filtered API queries under 20 concurrent clients (DESIGN §7, §12: p95 < 300 ms),
a 272³ map slice as PNG (< 150 ms), and the cost of checking an API token.

Serves a 10,000-analysis catalogue built as ``bench_query.py`` builds its own (on first use:
SQLite in benchmarks/out/web-bench.db, or the empty PostgreSQL database given as the first
argument) with a real
``txmdb serve`` process, and a second small catalogue whose one analysis holds a 272³ edge
map. Each client is a process of its own (20 clients: 20 browsers, not 20 threads sharing one
interpreter lock in the measuring process) holding one keep-alive HTTP/1.1 connection on a raw
socket, so the measuring side costs little CPU; the clients run on the same cores as the server,
and each run says how the machine's CPU was shared: the server's CPU per request (its processes'
/proc times), the clients', and the rest of the machine's.

    python benchmarks/bench_web.py                      # SQLite
    python benchmarks/bench_web.py postgresql://…/db    # PostgreSQL
    python benchmarks/bench_web.py URL --seconds 10 --only mixed   # a shorter run of the 20 clients alone
    TXMDB_BENCH_WORKERS=1 python benchmarks/bench_web.py   # server processes [default: the cores]
    TXMDB_BENCH_CLIENT_PROCESSES=5 python benchmarks/bench_web.py   # client processes [default: one per client]
"""

from __future__ import annotations

import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_query  # noqa: E402  (the 10,000-analysis catalogue)

from txmdb.catalog import open_catalog  # noqa: E402
from txmdb.db import models as m  # noqa: E402
from txmdb.db.migrate import upgrade  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
TXMDB = Path(sys.executable).with_name("txmdb")
CLIENTS, SECONDS = 20, 20
WORKERS = int(os.environ.get("TXMDB_BENCH_WORKERS", os.cpu_count() or 1))  # server processes
CLIENT_PROCESSES = int(os.environ.get("TXMDB_BENCH_CLIENT_PROCESSES", CLIENTS))  # the clients' processes
TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # unit of the CPU times in /proc
SLICE_SIZE = 272


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_for(catalog, name: str = "bench") -> str:
    """A viewer account's fresh API token (the account made on first use)."""
    from txmdb.accounts import add_user, count_users, issue_token
    from txmdb.errors import DuplicateError

    try:
        add_user(catalog, name, "viewer", "bench-password-1")
    except DuplicateError:
        pass
    assert count_users(catalog) >= 1
    return issue_token(catalog, name)


def serve(url: str, store: Path, log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _port()
    process = subprocess.Popen([str(TXMDB), "--db", url, "--store", str(store), "serve", "--port", str(port),
                                "--workers", str(WORKERS)],
                               stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/api/v1/health").status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"txmdb serve did not start; see {log}")


def slice_catalogue() -> tuple[str, Path, int]:
    """A SQLite catalogue with one scan whose finished analysis holds a 272³ edge map
    (contiguous float32, as the analysis writes it); its URL, store and scan id."""
    import h5py

    work = OUT / "web-bench-slices"
    work.mkdir(parents=True, exist_ok=True)
    results = work / f"edge-{SLICE_SIZE}.h5"
    if not results.exists():
        rng = np.random.default_rng(0)
        z, y, x = np.mgrid[:SLICE_SIZE, :SLICE_SIZE, :SLICE_SIZE].astype(np.float32) / SLICE_SIZE
        edge = (8340 + 4 * (x - 0.5) + rng.normal(0, 0.5, x.shape)).astype(np.float32)
        edge[(x - 0.5) ** 2 + (y - 0.5) ** 2 + (z - 0.5) ** 2 > 0.2] = np.nan
        with h5py.File(results, "w") as f:
            f["edge_ev"] = edge
    url = f"sqlite:///{work / 'catalogue.db'}"
    catalog = open_catalog(url, work / "store", check=False)
    upgrade(catalog.engine)
    with catalog.session() as s:
        scan = s.query(m.TXMScan).first()
        if scan is None:
            sample = m.Sample(name="slices", meta={})
            s.add(sample)
            s.flush()
            scan = m.TXMScan(sample_id=sample.id, state="x", layout="dxchange", data_path="/d", energy_path="/e",
                             ndim=3, shape=[60, SLICE_SIZE, SLICE_SIZE, SLICE_SIZE], dtype="float32",
                             n_energies=60, energy_min_ev=8280.0, energy_max_ev=8420.0, energies_ev=[],
                             voxel_size_nm=30.0, file_path=str(results), file_size_bytes=1, file_sha256="f" * 64)
            s.add(scan)
            s.flush()
            s.add(m.Analysis(scan_id=scan.id, status="done", parameters={}, txmdb_version="bench",
                             input_sha256="0" * 64, timings_s={}, results_path=str(results),
                             results_sha256="0" * 64))
        scan_id = scan.id
    catalog.engine.dispose()
    return url, work / "store", scan_id


class Connection:
    """One keep-alive HTTP/1.1 connection on a raw socket, as a browser holds one (GET only)."""

    def __init__(self, base: str, token: str):
        where = urlsplit(base)
        self.address = (where.hostname, where.port)
        self.head = f"Host: {where.netloc}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        self.sock, self.buffer = None, b""

    def get(self, path: str) -> tuple[int, bytes]:
        """Status and body of ``GET path`` (reconnecting when the server closed the connection)."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\n".encode() + self.head)
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if headers.get("transfer-encoding") == "chunked":
            body = self._chunks()
        else:
            body = self._exactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def _read(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._read()
        body, self.buffer = self.buffer[:n], self.buffer[n:]
        return body

    def _chunks(self) -> bytes:
        parts = []
        while True:
            while b"\r\n" not in self.buffer:
                self._read()
            size, self.buffer = self.buffer.split(b"\r\n", 1)
            n = int(size.split(b";")[0], 16)
            parts.append(self._exactly(n + 2)[:n])
            if n == 0:
                return b"".join(parts)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""


def _clients(base: str, token: str, paths, threads: int, seed: int, start: float, stop: float, out) -> None:
    """One client process: ``threads`` connections asking for random ``paths`` from ``start`` to ``stop``
    (time.time); sends its latencies by label, failures and CPU seconds to ``out``."""
    times: dict[str, list] = {label: [] for label, _ in paths}
    errors: list[str] = []

    def client(seed: int) -> None:
        rng, http = random.Random(seed), Connection(base, token)
        try:
            while time.time() < stop:
                label, path = rng.choice(paths)
                path = path.format(sample=f"S{rng.randrange(100):03d}", scan=rng.randrange(1, 10_001))
                t0 = time.perf_counter()
                status, body = http.get(path)
                elapsed = time.perf_counter() - t0
                if status != 200:
                    errors.append(f"{path}: {status} {body[:200]!r}")
                times[label].append(elapsed)
        finally:
            http.close()

    time.sleep(max(0.0, start - time.time()))
    cpu = time.process_time()
    workers = [threading.Thread(target=client, args=(seed * 1000 + i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    out.put((times, errors, time.process_time() - cpu))


def cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of process ``pid`` and of every live process below it (/proc), by process."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    seconds, todo = {}, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[p] = (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime
        todo.extend(children.get(p, []))
    return seconds


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of process ``pid`` and all below it, also of the children that ended (PostgreSQL's
    backends end with their connections; their time goes to the main process's cutime and cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(cpu_seconds(pid).values()) + (int(fields[13]) + int(fields[14])) * TICK_S


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every core, /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) * TICK_S  # all but idle and iowait


def load(base: str, token: str, paths: list[tuple[str, str]], clients: int, seconds: float,
         server: int | None = None, database: int | None = None) -> dict:
    """``clients`` keep-alive connections in ``min(clients, CLIENT_PROCESSES)`` processes asking for
    random ``paths`` (label, path) for ``seconds``: latencies by label, and the CPU seconds of the
    clients, of the server (process ``server`` and its workers), of the database server (process
    ``database`` and its backends, when it runs on this machine) and of the whole machine."""
    processes = max(1, min(clients, CLIENT_PROCESSES))
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    start = time.time() + 0.5 + 0.02 * processes  # every process connected and waiting
    children = [context.Process(target=_clients, args=(base, token, paths, n, i, start, start + seconds, out))
                for i, n in enumerate(shares)]
    for child in children:
        child.start()
    time.sleep(max(0.0, start - time.time()))
    server_cpu, machine = (cpu_seconds(server) if server else {}), machine_busy_seconds()
    database_cpu = tree_cpu_seconds(database) if database else None
    results = [out.get() for _ in children]
    machine = machine_busy_seconds() - machine
    if database:
        database_cpu = tree_cpu_seconds(database) - database_cpu
    # By server process (the supervisor and its workers), so an uneven share of the work shows.
    server_cpu = {p: t - server_cpu.get(p, 0.0) for p, t in cpu_seconds(server).items()} if server else None
    for child in children:
        child.join()
    times: dict[str, list] = {label: [] for label, _ in paths}
    for part, errors, _ in results:
        if errors:
            raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
        for label, values in part.items():
            times[label].extend(values)
    return {"times": times, "seconds": seconds, "clients": clients, "processes": processes,
            "client_cpu": sum(cpu for _, _, cpu in results), "server_cpu": server_cpu, "machine_cpu": machine,
            "database_cpu": database_cpu}


def report(run: dict) -> None:
    times, seconds = run["times"], run["seconds"]
    total = sum(len(v) for v in times.values())
    print(f"  {'request':<58} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for label, values in times.items():
        v = np.array(values) * 1000
        print(f"  {label:<58} {len(v):>6} {np.percentile(v, 50):8.1f} {np.percentile(v, 95):8.1f} {v.max():8.1f}")
    every = np.concatenate([np.array(v) for v in times.values()]) * 1000
    print(f"  {'all':<58} {total:>6} {np.percentile(every, 50):8.1f} {np.percentile(every, 95):8.1f} "
          f"{every.max():8.1f}   ({total / seconds:.0f} requests/s)")
    cores = os.cpu_count() or 1
    share = lambda cpu: f"{cpu / total * 1000:.1f} CPU ms/request, {cpu / seconds / cores:.0%} of {cores} cores"  # noqa: E731
    client, database = run["client_cpu"], run.get("database_cpu")
    server = sum(run["server_cpu"].values()) if run["server_cpu"] is not None else None
    other = run["machine_cpu"] - client - (server or 0.0) - (database or 0.0)
    print(f"  CPU: server {share(server) if server is not None else 'not measured'}; "
          + (f"database server {share(database)}; " if database is not None else "")
          + f"clients ({run['clients']} in {run['processes']} processes) {share(client)}; "
          f"everything else on the machine {max(other, 0.0) / seconds / cores:.0%} of {cores} cores")
    if server:
        print("  server processes' shares of its CPU: "
              + ", ".join(f"{t / server:.0%}" for t in sorted(run["server_cpu"].values(), reverse=True) if t > 0))


def server_cost(base: str, token: str, paths: list[tuple[str, str]], server: int, seconds: float,
                database: int | None = None) -> None:
    """Each kind of request alone from one client for ``seconds``: its latency and the server's (and
    the database server's) CPU per request."""
    print(f"  {'request (one client, one kind at a time)':<58} {'n':>6} {'p50 ms':>8} {'server CPU ms':>14}"
          + (f" {'database CPU ms':>16}" if database else ""))
    for label, path in paths:
        run = load(base, token, [(label, path)], 1, seconds, server, database)
        values = np.array(run["times"][label]) * 1000
        print(f"  {label:<58} {len(values):>6} {np.percentile(values, 50):8.1f} "
              f"{sum(run['server_cpu'].values()) / len(values) * 1000:14.2f}"
              + (f" {run['database_cpu'] / len(values) * 1000:16.2f}" if database else ""))


def database_pid(catalog) -> int | None:
    """The PostgreSQL server's main process when it runs on this machine (its backends are its
    children), else None (SQLite, or a server elsewhere)."""
    if catalog.engine.dialect.name != "postgresql":
        return None
    with catalog.engine.connect() as conn:
        backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    try:
        return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:  # another machine's process
        return None


def statements_per_request(catalog, token: str, paths: list[tuple[str, str]], n: int = 20) -> None:
    """Per kind of request, counted in this process over ``n`` requests (an in-process ASGI client):
    SQL statements, pool checkouts, and on PostgreSQL the round trips to the server (statements,
    a liveness ping per checkout, BEGIN and COMMIT/ROLLBACK around each transaction)."""
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from txmdb.web.app import create_app

    counts = {"statements": 0, "checkouts": 0, "transactions": 0}
    postgresql = catalog.engine.dialect.name == "postgresql"

    def statement(conn, *_):
        counts["statements"] += 1
        dbapi = conn.connection.dbapi_connection
        if postgresql and not dbapi.autocommit and dbapi.info.transaction_status == 0:  # idle: BEGIN goes first
            counts["transactions"] += 1

    def checkout(*_):
        counts["checkouts"] += 1

    event.listen(catalog.engine, "before_cursor_execute", statement)
    event.listen(catalog.engine.pool, "checkout", checkout)
    try:
        with TestClient(create_app(catalog), headers={"Authorization": f"Bearer {token}"}) as client:
            print(f"  {'request':<58} {'statements':>10} {'checkouts':>10}" + (f" {'round trips':>12}" if postgresql else ""))
            for label, path in paths:
                client.get(path.format(sample="S000", scan=1))  # warm
                for key in counts:
                    counts[key] = 0
                for i in range(n):
                    answer = client.get(path.format(sample=f"S{i * 7 % 100:03d}", scan=i * 997 % 10_000 + 1))
                    assert answer.status_code == 200, (path, answer.status_code)
                trips = counts["statements"] + counts["checkouts"] + 2 * counts["transactions"]
                print(f"  {label:<58} {counts['statements'] / n:10.1f} {counts['checkouts'] / n:10.1f}"
                      + (f" {trips / n:12.1f}" if postgresql else ""))
    finally:
        event.remove(catalog.engine, "before_cursor_execute", statement)
        event.remove(catalog.engine.pool, "checkout", checkout)


def token_check_cost(catalog, token: str) -> None:
    from argon2 import PasswordHasher

    from txmdb.accounts import account_for_token, keyed_hash, web_key

    key = web_key(catalog)
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        keyed_hash(key, token, "token")
    hmac_us = (time.perf_counter() - t0) / n * 1e6
    lookups = [time.perf_counter()]
    for _ in range(200):
        assert account_for_token(catalog, token) is not None
        lookups.append(time.perf_counter())
    lookup_ms = statistics.median(np.diff(lookups)) * 1000
    hasher = PasswordHasher()
    digest = hasher.hash("bench-password-1")
    t0 = time.perf_counter()
    for _ in range(5):
        hasher.verify(digest, "bench-password-1")
    argon_ms = (time.perf_counter() - t0) / 5 * 1000
    print(f"  token HMAC-SHA-256 {hmac_us:.1f} µs; whole check with its indexed row lookup {lookup_ms:.2f} ms; "
          f"an Argon2 verify instead {argon_ms:.0f} ms")


def arguments():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", default=f"sqlite:///{OUT / 'web-bench.db'}",
                        help="the catalogue: a SQLite URL, or an empty (first run) or already built PostgreSQL "
                             "database [default: benchmarks/out/web-bench.db, built on first use]")
    parser.add_argument("--seconds", type=float, default=SECONDS,
                        help=f"length of the {CLIENTS}-client run [default: {SECONDS}]")
    parts = ("token", "statements", "alone", "one", "mixed", "slices")
    parser.add_argument("--only", action="append", choices=parts,
                        help="run only these parts (repeatable): the token check's cost, statements per request, "
                             "each kind alone, one client, the 20 clients, the slices [default: all]")
    given = parser.parse_args()
    given.only = set(given.only or parts)
    return given


def main() -> None:
    given = arguments()
    url = given.url
    catalog = bench_query.built_catalog(url, OUT / "web-bench-store")
    token = token_for(catalog)
    database = database_pid(catalog)
    print(f"catalogue: {catalog.engine.url.render_as_string(hide_password=True)}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if "token" in given.only:
        token_check_cost(catalog, token)
    process, base = serve(url, OUT / "web-bench-store", OUT / "web-bench-serve.log")
    try:
        paths = [
            ("page /samples/{sample}", "/samples/{sample}"),
            ("page /scans/{scan}", "/scans/{scan}"),
            ("api query theta ?sample=S…&bin=2&unweighted (json)",
             "/api/v1/query/theta?sample={sample}&bin=2&weighted=false&format=json"),
            ("api query theta ?scan=N&bin=2 (csv)", "/api/v1/query/theta?scan={scan}&bin=2&format=csv"),
            ("api query gradient ?sample=S…&bin=3 (csv)", "/api/v1/query/gradient?sample={sample}&bin=3&format=csv"),
            ("api scans ?sample=S…&limit=20", "/api/v1/scans?sample={sample}&limit=20"),
        ]
        if "statements" in given.only:
            print("database statements per request (counted in this process):")
            statements_per_request(catalog, token, paths)
        load(base, token, paths, 2, 3)  # warm up
        if "alone" in given.only:
            print("each kind of request alone (its own time, and the server's CPU for it):")
            server_cost(base, token, paths, process.pid, 3, database)
        if "one" in given.only:
            print("one client (each request's own time), 10 s:")
            report(load(base, token, paths, 1, 10, process.pid, database))
        if "mixed" in given.only:
            print(f"{CLIENTS} concurrent clients, {given.seconds:g} s:")
            report(load(base, token, paths, CLIENTS, given.seconds, process.pid, database))
    finally:
        process.terminate()
        process.wait()
    if "slices" not in given.only:
        return

    slice_url, slice_store, scan = slice_catalogue()
    slice_catalog = open_catalog(slice_url, slice_store)
    slice_token = token_for(slice_catalog)
    slice_catalog.engine.dispose()
    process, base = serve(slice_url, slice_store, OUT / "web-bench-slices.log")
    try:
        middle = SLICE_SIZE // 2
        paths = [(f"slice.png {SLICE_SIZE}³ axis={axis}", f"/api/v1/scans/{scan}/slice.png?map=edge&axis={axis}&index="
                  f"{middle}") for axis in "zyx"]
        load(base, slice_token, paths, 1, 2)  # warm up
        print(f"slices of a {SLICE_SIZE}³ edge map, one client:")
        report(load(base, slice_token, paths, 1, 10, process.pid))
        print(f"slices, {CLIENTS} concurrent clients:")
        report(load(base, slice_token, paths, CLIENTS, 10, process.pid))
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
