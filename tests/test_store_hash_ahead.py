"""Put.hash_ahead: the store takes a temporary's SHA-256 computed in a thread before the commit
only while the file is the one hashed; a file written to after that is hashed again, so the
recorded SHA-256 is always the final file's (SQLite and PostgreSQL, real store files)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.test_store import _analysis_rows, _options, lab, scan_id  # noqa: F401 - fixtures


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()




@pytest.mark.parametrize("changed", [False, True])
def test_a_file_hashed_ahead_records_the_final_files_sha256(lab, scan_id, changed, monkeypatch):  # noqa: F811
    from txmdb.catalog.txm import analyze_scan
    from txmdb.store import Put

    appended = {}
    hash_ahead = Put.hash_ahead

    def then_append(self):
        hash_ahead(self)
        if changed:        # written to after the hash began: its digest must not be used
            self._ahead.result()
            with open(self.temp, "ab") as fh:
                fh.write(b"\0" * 4096)
            appended["size"] = os.path.getsize(self.temp)

    monkeypatch.setattr(Put, "hash_ahead", then_append)
    analysis = analyze_scan(lab, scan_id, _options())
    assert analysis.status == "done"
    assert analysis.results_sha256 == _sha(analysis.results_path)
    if changed:
        assert os.path.getsize(analysis.results_path) == appended["size"]


def test_a_changed_input_fails_with_the_results_file_hashed_ahead(lab, scan_id, tmp_path):  # noqa: F811
    """The input's check still decides: a stack changed since ingest fails the analysis, its
    results file (hashed ahead) is removed and nothing is recorded done."""
    import shutil

    from txmdb.catalog.txm import analyze_scan
    from txmdb.db.models import TXMScan
    from txmdb.errors import InputError

    copy = tmp_path / "stack.h5"
    with lab.session() as session:
        scan = session.get(TXMScan, scan_id)
        shutil.copyfile(scan.file_path, copy)
        scan.file_path = str(copy)
    with open(copy, "r+b") as fh:              # one byte of the file's end, not of the data read
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 1]))
    with pytest.raises(InputError, match="SHA-256 differs"):
        analyze_scan(lab, scan_id, _options())
    rows = _analysis_rows(lab)
    assert [r[1] for r in rows] == ["failed"] and rows[0][3] is None
    store_files = [p for p in Path(lab.store.root).rglob("*.h5")]
    assert store_files == []
