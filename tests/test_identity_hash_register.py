"""`txm register` trusts a scan's SHA-256 while its file identity is the one recorded when it
was last hashed and matched; ``--verify-input`` hashes it in full; a change that keeps the
modification time is still refused; a full hash that matches records the identity (SQLite
and PostgreSQL)."""

from __future__ import annotations

import os
import re
import time

import pytest
import sqlalchemy as sa

from tests.test_identity_hash_analyze import (  # noqa: F401 - fixtures
    _flip_last_byte_keeping_times, _identity, file_hashes, settled_pool,
)
from tests.test_register_cli import _ingest, _refused, _registered, lab  # noqa: F401 - fixture
from txmdb.io.files import SETTLED_NS, file_identity, identity_text
from txmdb.synthetic.drift import make_drifted, write_drifted_stack


@pytest.fixture(scope="module")
def settled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("settled_drift").resolve()
    source = folder / "source.h5"
    write_drifted_stack(source, make_drifted((40, 48), n_energies=8, seed=1, max_drift=3.0))
    return settled_pool(folder, {"drift": (source, 6)})


def _shifts(cli, registration_id: int) -> list[tuple]:
    engine = sa.create_engine(cli.url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT energy_index, shift_y, shift_x, quality FROM registration_shifts "
                                        "WHERE registration_id = :id ORDER BY energy_index"),
                                {"id": registration_id}).all()
    finally:
        engine.dispose()


def _register(cli, scan: str, *args: str) -> tuple[int, list[str]]:
    """txm register's registration id and its output lines, the elapsed time left out."""
    result = cli("txm", "register", scan, *args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[-1].isdigit(), result.stdout
    assert re.fullmatch(rf"scan {scan}: 8 energies registered to \d+(\.\d+)? eV \(\d+\.\d s\)", lines[0]), lines[0]
    assert lines[1].startswith("largest |shift| (voxels): y ")
    return int(lines[-1]), [re.sub(r"\(\d+\.\d s\)$", "(… s)", lines[0]), lines[1]]


def test_register_trusts_an_unchanged_identity_and_verify_input_hashes(lab, settled, file_hashes):
    path = settled("drift")
    scan = _ingest(lab, path)
    assert _identity(lab, int(scan)) == identity_text(file_identity(os.stat(path)))

    trusted, trusted_lines = _register(lab, scan)
    assert path not in file_hashes["background"]
    verified, verified_lines = _register(lab, scan, "--verify-input")
    assert file_hashes["background"].count(path) == 1
    assert (trusted, verified) == (1, 2) and trusted_lines == verified_lines
    assert _shifts(lab, trusted) == _shifts(lab, verified) and len(_shifts(lab, trusted)) == 8
    engine = sa.create_engine(lab.url)
    try:
        with engine.connect() as conn:
            shas = conn.execute(sa.text("SELECT DISTINCT r.input_sha256 = s.file_sha256 FROM registrations r "
                                        "JOIN txm_scans s ON s.id = r.scan_id")).scalars().all()
    finally:
        engine.dispose()
    assert shas == [True]


def test_register_catches_a_change_that_kept_the_modification_time(lab, settled):
    path = settled("drift")
    scan = _ingest(lab, path)
    recorded = _identity(lab, int(scan))
    _flip_last_byte_keeping_times(path)
    _refused(lab, [scan], f"{path}: the file changed since scan {scan} was ingested (SHA-256 differs)")
    assert _identity(lab, int(scan)) == recorded


def test_register_hashes_a_racy_scan_in_full_then_records_it(lab, settled, file_hashes):
    path = settled("drift")
    past = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(past, past))          # the change time is now: too recent to trust at ingest
    scan = _ingest(lab, path)
    assert _identity(lab, int(scan)) is None
    time.sleep(SETTLED_NS / 1e9 + 0.3)
    assert _registered(lab, scan) == 1
    assert file_hashes["background"].count(path) == 1
    assert _identity(lab, int(scan)) == identity_text(file_identity(os.stat(path)))
    assert _registered(lab, scan) == 2
    assert file_hashes["background"].count(path) == 1
