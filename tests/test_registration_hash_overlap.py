"""``txm register`` checks the file's SHA-256 while it estimates (issue 10 item 7), on SQLite and PostgreSQL.

The hash runs in a background thread beside the estimate; a file changed since ingest is
still refused in one line with nothing stored — also when the change itself makes the
estimate fail (the changed file is named, not the estimate's complaint), and the
registration of an unchanged file is stored as before.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from tests.test_cli_txm import _count
from tests.test_register_cli import _ingest, _refused, _registered
from txmdb.synthetic.drift import make_drifted, write_drifted_stack


@pytest.fixture(scope="module")
def plain_stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("overlap").resolve() / "plain.h5"
    write_drifted_stack(path, make_drifted((40, 48), n_energies=8, seed=1, max_drift=3.0))
    return path


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    return cli


def test_unchanged_file_is_registered(lab, plain_stack, tmp_path):
    path = tmp_path / "same.h5"
    shutil.copy(plain_stack, path)
    scan = _ingest(lab, path)
    assert _registered(lab, scan) == 1
    assert _count(lab, "registrations") == 1 and _count(lab, "registration_shifts") == 8


def test_change_that_breaks_the_estimate_is_reported_as_a_changed_file(lab, plain_stack, tmp_path):
    path = tmp_path / "changed.h5"
    shutil.copy(plain_stack, path)
    scan = _ingest(lab, path)
    with h5py.File(path, "r+") as f:                 # energy 3 all NaN: the estimate alone would say so
        f["/exchange/data"][3] = np.full((40, 48), np.nan, dtype=np.float32)
    _refused(lab, [scan], f"{path}: the file changed since scan {scan} was ingested (SHA-256 differs)")


def test_change_the_estimate_survives_is_refused_before_anything_is_stored(lab, plain_stack, tmp_path):
    path = tmp_path / "nudged.h5"
    shutil.copy(plain_stack, path)
    scan = _ingest(lab, path)
    with h5py.File(path, "r+") as f:
        f["/exchange/data"][0, 0, 0] += 1.0
    _refused(lab, [scan], f"{path}: the file changed since scan {scan} was ingested (SHA-256 differs)")


def test_background_hash_at_normal_priority_gives_the_digest(plain_stack):
    from txmdb.io.files import BackgroundHash, sha256_file

    assert BackgroundHash(plain_stack, low_priority=False).result() == sha256_file(plain_stack)
    assert BackgroundHash(plain_stack).result() == sha256_file(plain_stack)
