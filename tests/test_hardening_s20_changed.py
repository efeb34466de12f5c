"""`txm analyze` of a gzip stack with one byte changed inside a compressed chunk after ingest,
its size and modification time put back, on SQLite and PostgreSQL: h5py's read of that chunk
fails before the SHA-256 check ends, and the check decides the message — "the file changed
since scan N was ingested", one line, exit 1, nothing stored. A file damaged *before* ingest
(the hash matches) keeps its read error."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import h5py
import pytest

from tests.test_cli_txm import GOLDEN
from tests.test_map_statistics import _count, _json, _one_line_error
from tests.test_single_read_cli import chunked_rod  # noqa: F401 - fixture

GZIP = GOLDEN / "rod96_2d.h5"


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    return cli


def _flip_inside_chunk(path: Path, chunk: int = 0) -> None:
    """One byte in the middle of compressed chunk ``chunk`` inverted, size and mtime kept."""
    with h5py.File(path, "r") as f:
        ds = f["/exchange/data"]
        assert ds.compression == "gzip"
        info = ds.id.get_chunk_info(chunk)
    before = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _ingest(lab, path: Path) -> str:
    result = lab("txm", "ingest", path, "--sample", "rod", "--voxel-nm", "30")
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def _scan_row(lab, scan: str) -> dict:
    return _json(lab, "query", "sql", f"SELECT file_sha256, file_size_bytes, file_identity FROM txm_scans "
                                      f"WHERE id = {int(scan)}")[0]


def _nothing_stored(lab, scan: str, row: dict, problem: str) -> None:
    """One failed analysis naming ``problem``, no statistics, no results file; the scan's row as it was."""
    (analysis,) = _json(lab, "query", "analyses")
    assert analysis["status"] == "failed" and problem in analysis["error"]
    assert analysis["results_path"] is None
    for table in ("gradient_summaries", "map_summaries", "particles", "depth_profiles", "theta_histograms"):
        assert _count(lab, table) == 0
    assert [p for p in Path(lab.store).rglob("*.h5")] == []
    assert _scan_row(lab, scan) == row


@pytest.mark.parametrize("recorded", [False, True], ids=["hashed", "identity-recorded"])
@pytest.mark.parametrize("verify", [(), ("--verify-input",)], ids=["default", "verify-input"])
def test_a_byte_changed_in_a_gzip_chunk_is_reported_as_the_change(lab, tmp_path, recorded, verify):
    path = (tmp_path / "scan.h5").resolve()
    shutil.copyfile(GZIP, path)
    if recorded:                                # old enough times: ingest records the identity
        old = time.time_ns() - 10_000_000_000
        os.utime(path, ns=(old, old))
        time.sleep(2.3)                         # the copy's change time too (SETTLED_NS)
    scan = _ingest(lab, path)
    row = _scan_row(lab, scan)
    assert (row["file_identity"] is not None) == recorded
    _flip_inside_chunk(path)
    result = lab("txm", "analyze", scan, *verify)
    # before: "<path>: cannot read '/exchange/data' slab 0:96 (Can't synchronously read data); ..."
    _one_line_error(result, f"{path}: the file changed since scan {scan} was ingested (SHA-256 differs)")
    assert "cannot read" not in result.output and "Traceback" not in result.output
    _nothing_stored(lab, scan, row, "SHA-256 differs")


def test_a_file_damaged_before_ingest_keeps_its_read_error(lab, tmp_path):
    """The hash decides: the damaged bytes are the ingested ones, so the read error is the
    problem to report, not a change."""
    path = (tmp_path / "damaged.h5").resolve()
    shutil.copyfile(GZIP, path)
    _flip_inside_chunk(path)                    # chunk 0: not the one ingest's finite check reads
    scan = _ingest(lab, path)
    row = _scan_row(lab, scan)
    result = lab("txm", "analyze", scan)
    _one_line_error(result, f"{path}: cannot read '/exchange/data' slab 0:96")
    assert "changed since" not in result.output
    _nothing_stored(lab, scan, row, "cannot read")


def test_register_of_a_byte_changed_in_a_gzip_chunk_reports_the_change(lab, tmp_path):
    """`txm register` decides the same way, through the same place (change_wins)."""
    path = (tmp_path / "scan.h5").resolve()
    shutil.copyfile(GZIP, path)
    scan = _ingest(lab, path)
    row = _scan_row(lab, scan)
    _flip_inside_chunk(path, chunk=5)
    result = lab("txm", "register", scan, "--accept-poor")
    _one_line_error(result, f"{path}: the file changed since scan {scan} was ingested (SHA-256 differs)")
    assert _count(lab, "registrations") == 0 and _count(lab, "analyses") == 0
    assert _scan_row(lab, scan) == row


def test_a_file_truncated_under_the_single_read_is_reported_as_the_change(lab, chunked_rod, tmp_path, monkeypatch):
    """Attacker's pass: an uncompressed chunked stack is read and hashed by one single read; cut
    to half its size once that read has begun, the read fails and the single read has no digest
    to give. The file it read is then hashed whole: the change is reported, not the read error."""
    from txmdb.io import single_read

    path = (tmp_path / "scan.h5").resolve()
    shutil.copyfile(chunked_rod, path)
    scan = _ingest(lab, path)
    row = _scan_row(lab, scan)
    started = single_read.SingleRead.slabs

    def truncated_then_read(self):
        os.truncate(path, os.stat(path).st_size // 2)
        return started(self)

    monkeypatch.setattr(single_read.SingleRead, "slabs", truncated_then_read)
    result = lab("txm", "analyze", scan)
    # before: "<path>: cannot read '/exchange/data' slab 0:40 (file ends at byte ...); truncated or corrupt file?"
    _one_line_error(result, f"{path}: the file changed since scan {scan} was ingested (SHA-256 differs)")
    _nothing_stored(lab, scan, row, "SHA-256 differs")
