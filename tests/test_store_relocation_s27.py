"""A results store copied or restored to another path (session 27's review), both backends.

Rows keep their store files' absolute paths. After ``rsync store/ /new/disk/store/`` (docs/
deployment.md, "Backups") and ``--store /new/disk/store``, every row named a file "outside the
store" and ``db check --repair`` could not help, although each file was there under its
id-derived name with its SHA-256. Now the repair re-points each such row at the store's own
file of that id when the SHA-256 matches; what the row named is never opened.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import os
from pathlib import Path

from tests.test_store_attacks import CYCLER, NI_FOIL, _analysed, _rows


def _check(url: str, store: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}
    return subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--db", url, "--store", str(store),
                           "db", "check", *args], env=env, capture_output=True, text=True, timeout=120)


def test_a_store_restored_elsewhere_is_re_pointed_by_repair(cell_lab, tmp_path):
    lab = cell_lab
    assert lab("cycling", "ingest", CYCLER, "--cell", "C").exit_code == 0
    assert lab("xas", "ingest", NI_FOIL, "--sample", "S", "--edge", "Ni-K").exit_code == 0
    _analysed(lab)
    old = Path(lab.store).resolve()
    new = (tmp_path / "restored" / "store").resolve()
    shutil.copytree(old, new, symlinks=True)
    shutil.rmtree(old)                                    # the old disk is gone

    before = _check(lab.url, new)
    assert before.returncode == 1 and "Traceback" not in before.stderr
    assert before.stdout.strip().splitlines()[-1] == "3 problems (3 settled by --repair); checked 0 store files, 3 sources"

    repaired = _check(lab.url, new, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    lines = repaired.stdout.strip().splitlines()
    for noun, folder, suffix in (("cycling run", "cycling", ".parquet"), ("XAS measurement", "xas", ".parquet"),
                                 ("analysis", "analyses", ".h5")):
        assert (f"repaired: {noun} 1: it names {old}/{folder}/1{suffix}, outside the store, but the store's "
                f"{folder}/1{suffix} has the SHA-256 it records: row re-pointed to {new}/{folder}/1{suffix}") in lines
    assert lines[-1].startswith("ok: 3 repaired; checked 3 store files")
    assert _rows(lab.url, "SELECT results_path FROM analyses") == [(f"{new}/analyses/1.h5",)]

    again = _check(lab.url, new)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1].startswith("ok: checked 3 store files")
    # and the catalogue reads its files there: a query of the restored run's cycles, an export of the map
    assert lab("--store", str(new), "txm", "export", "1", "--map", "edge", "-o", tmp_path / "edge.h5").exit_code == 0


def test_a_row_whose_file_differs_is_not_re_pointed(cell_lab, tmp_path):
    lab = cell_lab
    assert lab("cycling", "ingest", CYCLER, "--cell", "C").exit_code == 0
    old = Path(lab.store).resolve()
    new = (tmp_path / "restored" / "store").resolve()
    shutil.copytree(old, new, symlinks=True)
    (new / "cycling" / "1.parquet").write_bytes(b"not the records")
    repaired = _check(lab.url, new, "--repair")
    assert repaired.returncode == 1
    assert f"problem: cycling run 1: its file {old}/cycling/1.parquet lies outside the store {new}: check --store" \
        in repaired.stdout.splitlines()
    assert _rows(lab.url, "SELECT records_path FROM cycling_runs") == [(f"{old}/cycling/1.parquet",)]
    # a row naming what is no file of the folder, with no matching file of its id: said, not followed
    _rows(lab.url, f"UPDATE cycling_runs SET records_path = '{new}/cycling/1.parquet/x'")
    again = _check(lab.url, new, "--repair")
    assert (f"problem: cycling run 1: its file {new}/cycling/1.parquet/x is not a file of the store folder "
            f"{new}/cycling; it is not read") in again.stdout.splitlines()
