"""Review of the trusted SHA-256's surface (file identity, migration 0009), on SQLite and
PostgreSQL where a catalogue is used:

- ``txm analyze --scheduler ADDR --verify-input`` is refused in one line (the workers take no
  full hash), as ``--queue --verify-input`` is;
- a FIFO put at a scan's path fails ``txm register`` and ``txm export`` in one line, exit 1,
  without hanging (the open of a FIFO with no writer used to block);
- :class:`~txmdb.io.files.KnownHash` and :class:`~txmdb.io.files.BackgroundHash` do not open a
  FIFO and close their descriptor when the rest of their setup fails.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.test_attack_identity import _ingested
from tests.test_cli_txm import GOLDEN
from tests.test_identity_hash_analyze import _identity, settled_pool
from tests.test_map_statistics import _count
from tests.test_single_read_cli import lab  # noqa: F401 - fixtures
from txmdb.io import files


@pytest.fixture(scope="module")
def settled(tmp_path_factory):
    """Settled copies of the gzip stack and of a drifted one (:func:`settled_pool`), one per
    test and backend."""
    from txmdb.synthetic.drift import make_drifted, write_drifted_stack

    folder = tmp_path_factory.mktemp("review").resolve()
    write_drifted_stack(folder / "drift.h5", make_drifted((40, 48), n_energies=8, seed=1, max_drift=3.0))
    return settled_pool(folder, {"gzip": (GOLDEN / "rod96_2d.h5", 2), "drift": (folder / "drift.h5", 4)})


def _within(seconds: float, call):
    """``call()``'s result, from a thread that must end within ``seconds`` (a blocking open fails
    the test instead of hanging it)."""
    out = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return out[0]


def _fifo_at(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_scheduler_with_verify_input_is_refused_in_one_line(lab):
    result = lab("txm", "analyze", "1", "--scheduler", "tcp://127.0.0.1:1", "--verify-input")
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == ("error: --verify-input hashes the file here: it is not sent to a scheduler; "
                             "run without --scheduler\n")
    assert _count(lab, "analyses") == 0


@pytest.mark.parametrize("verify", [False, True])
def test_register_with_a_fifo_at_the_path_fails_in_one_line(lab, settled, verify):
    path, scan, recorded = _ingested(lab, settled("drift"))
    _fifo_at(path)
    args = ["--verify-input"] if verify else []
    result = _within(60, lambda: lab("txm", "register", str(scan), "--accept-poor", *args))
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == f"error: {path}: cannot read: not a regular file\n"
    assert _count(lab, "registrations") == 0 and _count(lab, "registration_shifts") == 0
    assert _identity(lab, scan) == recorded


def test_export_with_a_fifo_at_the_path_fails_in_one_line(lab, settled, tmp_path):
    path, scan, recorded = _ingested(lab, settled("gzip"))
    _fifo_at(path)
    out = tmp_path / "stack.h5"
    result = _within(60, lambda: lab("txm", "export", str(scan), "-o", out))
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == f"error: {path}: cannot read: not a regular file\n"
    assert not out.exists() and list(tmp_path.glob("*.partial")) == []
    assert _identity(lab, scan) == recorded


def test_known_hash_does_not_trust_or_open_a_fifo(tmp_path):
    fifo = tmp_path / "scan.h5"
    os.mkfifo(fifo)
    recorded = files.identity_text(files.file_identity(os.stat(fifo)))
    before = _open_descriptors()
    assert _within(10, lambda: files.KnownHash.if_unchanged(fifo, ("a" * 64, recorded))) is None
    assert _open_descriptors() == before


def test_background_hash_of_a_fifo_fails_at_result_without_blocking(tmp_path):
    fifo = tmp_path / "scan.h5"
    os.mkfifo(fifo)
    hashing = _within(10, lambda: files.BackgroundHash(fifo))
    with pytest.raises(OSError, match="not a regular file"):
        hashing.result()
    assert hashing.source == str(fifo) and hashing.identity is None
    hashing.cancel()


def test_background_hash_of_a_regular_file_reads_it_blocking(tmp_path):
    path = tmp_path / "scan.h5"
    path.write_bytes(b"x" * (5 << 20))
    hashing = files.BackgroundHash(path)
    try:
        assert os.get_blocking(hashing._fh.fileno())
        assert hashing.result() == files.sha256_file(path)
    finally:
        hashing.cancel()


def test_known_hash_closes_its_descriptor_when_fstat_fails(tmp_path, monkeypatch):
    path = tmp_path / "scan.h5"
    path.write_bytes(b"x")
    recorded = files.identity_text(files.file_identity(os.stat(path)))
    opened = []
    real_open, real_fstat = files.open_regular, os.fstat

    def recording_open(p):
        opened.append(real_open(p))
        return opened[-1]

    def failing_fstat(fd):
        if opened and fd == opened[-1]:
            raise OSError(5, "Input/output error")
        return real_fstat(fd)

    monkeypatch.setattr(files, "open_regular", recording_open)
    monkeypatch.setattr(files.os, "fstat", failing_fstat)
    with pytest.raises(OSError, match="Input/output error"):
        files.KnownHash.if_unchanged(path, ("a" * 64, recorded))
    monkeypatch.undo()
    with pytest.raises(OSError):
        os.fstat(opened[0])                 # closed


def test_background_hash_closes_its_file_when_the_thread_cannot_start(tmp_path, monkeypatch):
    path = tmp_path / "scan.h5"
    path.write_bytes(b"x")

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    def descriptors_of_the_file() -> list[str]:
        # only this file's: other tests' threads (trims, hashes) open and close their own meanwhile
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == os.path.realpath(path):
                    found.append(fd)
            except OSError:
                pass
        return found

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        files.BackgroundHash(path)
    monkeypatch.undo()
    assert descriptors_of_the_file() == []


def test_still_same_sees_a_rename_over_the_path(tmp_path):
    path, other = tmp_path / "a.h5", tmp_path / "b.h5"
    path.write_bytes(b"a")
    other.write_bytes(b"b")
    fd = os.open(path, os.O_RDONLY)
    try:
        identity = files.file_identity(os.fstat(fd))
        assert files.still_same(fd, path, identity)
        os.replace(other, path)
        assert not files.still_same(fd, path, identity)
        assert not files.still_same(None, path, identity)
    finally:
        os.close(fd)
