"""Is a file complete? Its writer may still be at it even when its size has not changed for a while.

A file whose size and mtime have settled must also open cleanly: an HDF5 file its writer still
holds open is locked (HDF5's file locking) or, on a file system without locks, cut short of the
end its superblock declares; a ZIP (.ndax) has its central directory last; a text file (CSV,
XDI, a two-column spectrum or pattern) ends with a line break and its last row is as wide as the
one before it. Each check reads only the file's head or tail.
"""

from __future__ import annotations

import os
from pathlib import Path

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
#: Bytes read from a text file's end: enough for the last two rows of any cycler export.
_TAIL_BYTES = 64 << 10


def incomplete_reason(path: str | os.PathLike, *, hdf5=None) -> str | None:
    """None when ``path`` opens cleanly as a finished file, else why it is not complete yet.

    ``hdf5(path)``: the check of an HDF5 file (default: open it here with h5py); the watcher
    passes its ingest process's, so h5py stays out of the long-running process.
    """
    import stat

    path = Path(path)
    try:
        # never blocks (a pipe put in the file's place) nor follows a link put there
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return "not a regular file"
            head = fh.read(8)
            if not head:
                return "empty"
            if head == _HDF5_SIGNATURE:
                return (hdf5 or hdf5_reason)(path)
            if head.startswith(_ZIP_SIGNATURE):
                return _zip_reason(path)
            if b"\0" in head:
                return None  # another binary format (.nda): the settle time is all there is to go by
            return _text_reason(fh)
    except OSError as exc:
        return f"cannot read: {exc.strerror}"


def hdf5_reason(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r"):
            return None
    except BlockingIOError:
        return "open for writing (HDF5 file lock held)"
    except OSError as exc:
        return f"does not open as HDF5 yet: {exc}"


def _zip_reason(path: Path) -> str | None:
    import zipfile

    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError) as exc:
        return f"does not open as a ZIP archive yet: {exc}"


def _text_reason(fh) -> str | None:
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - _TAIL_BYTES))
    tail = fh.read()
    if not tail.endswith((b"\n", b"\r")):
        return "last line is cut (no line break at the end)"
    rows = [line for line in tail.splitlines() if line.strip()]
    if len(rows) >= 2 and _width(rows[-1]) < _width(rows[-2]):
        return "last row is shorter than the one before it (cut)"
    return None


def _width(row: bytes) -> int:
    """Fields of a row: by its delimiter (comma, tab or semicolon), else by white space."""
    for delimiter in (b",", b"\t", b";"):
        if delimiter in row:
            return row.count(delimiter) + 1
    return len(row.split())
