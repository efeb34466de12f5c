"""File helpers shared by every reader and writer: streaming hashes and atomic outputs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

_CHUNK = 4 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read as a stream of 4 MiB chunks (never whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_room(path: str | os.PathLike, *, n_bytes: int) -> None:
    """Fail early, with a plain OSError, when ``n_bytes`` cannot be written beside ``path``.

    HDF5 reports a write that fails half-way (disk full, file-size limit) only when the file
    is closed, and then crashes the interpreter at exit; reserving the file's size in a
    scratch file (``.room-<name>``, removed again) first turns that into an ordinary, clean
    error before anything is written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    probe = path.with_name(f".room-{path.name}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, max(n_bytes, 1))
        finally:
            os.close(fd)
    finally:
        probe.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A failure (or a killed process) never leaves a partial file under the final name.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, final)
    except BaseException:
        _detach_writers(tmp_path)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _detach_writers(path: Path) -> None:
    """Point this process's descriptors still open on ``path`` at /dev/null.

    A writer whose write failed (HDF5 on a full disk or past RLIMIT_FSIZE) may keep its
    file open and retry the flush when its objects are freed or at exit, where HDF5 then
    crashes (SIGSEGV). The file is being discarded anyway; with its descriptor on /dev/null
    those late writes succeed and the library closes quietly. Linux (/proc) only.
    """
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return
    target = os.path.realpath(path)
    for entry in fd_dir.iterdir():
        try:
            if os.readlink(entry) != target:
                continue
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, int(entry.name))
            finally:
                os.close(null)
        except (OSError, ValueError):
            continue
