"""Web pages and filtered API queries under 20 concurrent clients (DESIGN §7, §12: p95 < 300 ms),
a 272³ map slice as PNG (< 150 ms), and the cost of checking an API token.

Serves a 10,000-analysis catalogue built as ``bench_query.py`` builds its own (on first use:
SQLite in benchmarks/out/web-bench.db, or the empty PostgreSQL database given as the first
argument) with a real
``txmdb serve`` process, and a second small catalogue whose one analysis holds a 272³ edge
map. Clients are threads with their own HTTP connection, on the same machine as the server.

    python benchmarks/bench_web.py                      # SQLite
    python benchmarks/bench_web.py postgresql://…/db    # PostgreSQL
    TXMDB_BENCH_WORKERS=1 python benchmarks/bench_web.py   # server processes [default: the cores]
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

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


def load(base: str, token: str, paths: list[tuple[str, str]], clients: int, seconds: float) -> dict[str, list]:
    """``clients`` threads asking for random ``paths`` (label, path) for ``seconds``; latencies by label."""
    import httpx

    times: dict[str, list] = {label: [] for label, _ in paths}
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            while time.monotonic() < stop:
                label, path = rng.choice(paths)
                path = path.format(sample=f"S{rng.randrange(100):03d}", scan=rng.randrange(1, 10_001))
                t0 = time.perf_counter()
                answer = http.get(path)
                elapsed = time.perf_counter() - t0
                if answer.status_code != 200:
                    errors.append(f"{path}: {answer.status_code} {answer.text[:200]}")
                times[label].append(elapsed)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
    return times


def report(times: dict[str, list], seconds: float) -> None:
    total = sum(len(v) for v in times.values())
    print(f"  {'request':<58} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for label, values in times.items():
        v = np.array(values) * 1000
        print(f"  {label:<58} {len(v):>6} {np.percentile(v, 50):8.1f} {np.percentile(v, 95):8.1f} {v.max():8.1f}")
    every = np.concatenate([np.array(v) for v in times.values()]) * 1000
    print(f"  {'all':<58} {total:>6} {np.percentile(every, 50):8.1f} {np.percentile(every, 95):8.1f} "
          f"{every.max():8.1f}   ({total / seconds:.0f} requests/s)")


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


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{OUT / 'web-bench.db'}"
    catalog = bench_query.built_catalog(url, OUT / "web-bench-store")
    token = token_for(catalog)
    print(f"catalogue: {catalog.engine.url.render_as_string(hide_password=True)}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
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
        load(base, token, paths, 2, 3)  # warm up
        print("one client (each request's own time), 10 s:")
        report(load(base, token, paths, 1, 10), 10)
        print(f"{CLIENTS} concurrent clients, {SECONDS} s:")
        report(load(base, token, paths, CLIENTS, SECONDS), SECONDS)
    finally:
        process.terminate()
        process.wait()

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
        report(load(base, slice_token, paths, 1, 10), 10)
        print(f"slices, {CLIENTS} concurrent clients:")
        report(load(base, slice_token, paths, CLIENTS, 10), 10)
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
