"""Concurrent writers (real processes): no lost and no duplicated rows; SQLite readers work during a write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np


def _small_stack(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    energies = np.linspace(8280, 8420, 30)
    edge = 0.5 + np.arctan((energies - 8340) / 3) / np.pi
    data = edge[:, None, None, None] * np.ones((1, 6, 6, 6)) + rng.normal(0, 0.01, (30, 6, 6, 6))
    with h5py.File(path, "w") as f:
        f["/exchange/data"] = data.astype("float32")
        f["/exchange/energy"] = energies
        f["/exchange/data"].attrs["voxel_size_nm"] = 30.0
    return path


def _txmdb(url: str, store: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}
    return subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--db", url, "--store", str(store), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_eight_concurrent_ingests_of_four_files_leave_four_scans(cli, tmp_path):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    files = [_small_stack(tmp_path / f"stack{i}.h5", seed=i) for i in range(4)]
    jobs = [files[i % 4] for i in range(8)]
    # Start all eight processes before waiting for any, so their inserts race for real.
    env = {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}
    procs = [subprocess.Popen([sys.executable, "-m", "txmdb.cli.main", "--db", cli.url, "--store", str(cli.store),
                               "txm", "ingest", str(f), "--sample", "S"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for f in jobs]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outputs]
    ids = [out.strip().splitlines()[-1] for out, _err in outputs]
    # Both processes that ingested one file print the same scan id.
    for i in range(4):
        assert ids[i] == ids[i + 4]
    assert len(set(ids)) == 4
    rows = json.loads(cli("query", "sql", "SELECT count(*) AS n, count(DISTINCT file_sha256) AS files FROM txm_scans",
                          "--format", "json").stdout)
    assert rows == [{"n": 4, "files": 4}]


def test_concurrent_sample_adds_neither_lose_nor_duplicate(cli):
    assert cli("init").exit_code == 0
    names = [f"s{i % 4}" for i in range(8)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda n: _txmdb(cli.url, cli.store, "sample", "add", n), names))
    assert sorted(r.returncode for r in results) == [0] * 4 + [1] * 4
    assert all(("exists already" in r.stderr or "conflicts with an existing record" in r.stderr)
               for r in results if r.returncode == 1)
    rows = json.loads(cli("query", "sql", "SELECT count(*) AS n FROM samples", "--format", "json").stdout)
    assert rows == [{"n": 4}]


def test_sqlite_readers_work_during_a_write(tmp_path):
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    store = tmp_path / "store"
    assert _txmdb(url, store, "init").returncode == 0
    assert _txmdb(url, store, "sample", "add", "before").returncode == 0
    writer_code = (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "c.execute('BEGIN IMMEDIATE'); "
        "c.execute(\"INSERT INTO samples (name, meta, created_at) VALUES ('during', '{}', '2020-01-01')\"); "
        "print('locked', flush=True); import os; "
        "[time.sleep(0.05) for _ in range(1200) if not os.path.exists(sys.argv[2])]; c.execute('COMMIT')"
    )
    release = tmp_path / "release"
    writer = subprocess.Popen([sys.executable, "-c", writer_code, str(tmp_path / "wal.db"), str(release)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "locked"
    read = _txmdb(url, store, "sample", "list", "--format", "json")
    assert read.returncode == 0, read.stderr
    assert [r["sample"] for r in json.loads(read.stdout)] == ["before"]
    assert writer.poll() is None, "the writer should still hold its transaction while the reader reads"
    release.touch()
    assert writer.wait(timeout=30) == 0
    after = json.loads(_txmdb(url, store, "sample", "list", "--format", "json").stdout)
    assert sorted(r["sample"] for r in after) == ["before", "during"]
