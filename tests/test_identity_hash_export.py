"""`txm export` of a stack follows the same identity rule as analyze and register (one
`known_hash` for all): an unchanged, recorded identity is trusted without reading the file for
its hash; content changed behind a restored modification time is still refused in one line,
with no output file. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tests.test_identity_hash_analyze import (  # noqa: F401 - fixtures
    _flip_last_byte_keeping_times, _identity, _ingest, settled)
from tests.test_single_read_cli import chunked_rod, lab  # noqa: F401 - fixtures
from txmdb.io import files


@pytest.fixture
def full_hashes(monkeypatch):
    """Paths the catalogue hashed in full with ``BackgroundHash`` (the export's check)."""
    seen = []
    real = files.BackgroundHash.__init__

    def counted(self, path, **kwargs):
        seen.append(str(path))
        real(self, path, **kwargs)

    monkeypatch.setattr(files.BackgroundHash, "__init__", counted)
    return seen


def test_export_trusts_a_recorded_identity(lab, settled, full_hashes, tmp_path):
    path = settled("gzip")
    scan = _ingest(lab, path)
    assert _identity(lab, scan) is not None
    out = tmp_path / "stack.h5"
    result = lab("txm", "export", str(scan), "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"scan {scan}: stack (unregistered) written to {out}"
    assert full_hashes == []
    with h5py.File(out, "r") as fh:
        assert np.isfinite(fh["/registration_results/reg_results/registered_xanes2D"][()]).any()


def test_export_refuses_a_file_changed_behind_its_modification_time(lab, settled, full_hashes, tmp_path):
    path = settled("gzip")
    scan = _ingest(lab, path)
    _flip_last_byte_keeping_times(path)
    out = tmp_path / "stack.h5"
    result = lab("txm", "export", str(scan), "-o", out)
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: {path}: the file changed since scan {scan} was ingested (SHA-256 differs)\n"
    assert full_hashes == [str(path)]
    assert not out.exists()
