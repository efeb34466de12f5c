"""File helpers shared by every reader and writer: streaming hashes and atomic outputs."""

from __future__ import annotations

import contextlib
import hashlib
import errno
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterator

_CHUNK = 4 << 20


#: a file's modification and change times must be this much older than the start of its hash
#: for its identity to be recorded (git's "racy clean" rule): a write in the same timestamp tick
#: as the hash, after it, would leave the identity as it was. 2 s covers the coarsest common
#: timestamps (FAT's mtime) and small clock differences with a network file server.
SETTLED_NS = 2_000_000_000


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read as a stream of 4 MiB chunks (never whole)."""
    return sha256_file_identity(path)[0]


def sha256_file_identity(path: str | os.PathLike) -> tuple[str, str | None]:
    """SHA-256 of a file (as :func:`sha256_file`) and the :func:`identity_text` of the bytes
    hashed, for the catalogue to trust later: the identity of the same open descriptor before
    and after the hash, if equal and :func:`settled_identity`; else None."""
    started_ns = time.time_ns()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        before = file_identity(os.fstat(fh.fileno()))
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
        same = file_identity(os.fstat(fh.fileno())) == before
    return digest.hexdigest(), settled_identity(before if same else None, started_ns)


def file_identity(info: os.stat_result) -> tuple:
    """What changes when a file is replaced or written to: inode, size, modification and change times."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def identity_text(identity: tuple) -> str:
    """:func:`file_identity` as the catalogue keeps it (``txm_scans.file_identity``): ``dev:ino:size:mtime_ns:ctime_ns``."""
    return ":".join(str(int(v)) for v in identity)


def settled_identity(identity: tuple | None, started_ns: int | None) -> str | None:
    """:func:`identity_text` of a file hashed from ``started_ns`` (``time.time_ns()``) on, when
    it may be trusted later: its modification and change times at least ``SETTLED_NS`` before
    the hash began. None when the identity is unknown (changed while hashed) or too recent:
    the next command then hashes the file in full."""
    if identity is None or started_ns is None:
        return None
    if max(identity[3], identity[4]) > started_ns - SETTLED_NS:
        return None
    return identity_text(identity)


def descriptor_path(fd: int | None, path: str | os.PathLike) -> str:
    """A path naming the file open as ``fd``, for other readers of it (h5py): on Linux
    ``/proc/self/fd/N``, through the descriptor, so a folder renamed over ``path`` and back
    meanwhile cannot hand them another file; elsewhere, or without ``fd``, ``path``. Valid
    while ``fd`` is open."""
    own = f"/proc/self/fd/{fd}"
    return own if fd is not None and os.path.exists(own) else str(path)


def open_regular(path: str | os.PathLike) -> int:
    """A read-only descriptor of ``path``, which must be a regular file: opened without
    blocking, so that a FIFO put at the path (no writer) cannot hang the command; OSError
    otherwise (the descriptor closed)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def pread_exact(fd: int, view, at: int) -> int:
    """Read ``len(view)`` bytes at offset ``at`` of ``fd`` into ``view`` (a writable byte
    memoryview); the bytes read, fewer only at the end of the file. One ``preadv`` may
    return less than asked without the file ending (Linux caps a read at 0x7ffff000 bytes;
    FUSE and NFS may stop early), so it is repeated until full or a read returns 0."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], at + done)
        if n == 0:
            break
        done += n
    return done


def still_same(fd: int | None, path: str | os.PathLike, identity: tuple) -> bool:
    """Whether the file open as ``fd`` (if given) and the file ``path`` names both still have
    ``identity``: neither written to nor another file renamed over the path (the end-of-command
    check of a trusted SHA-256)."""
    return ((fd is None or file_identity(os.fstat(fd)) == identity)
            and file_identity(os.stat(path)) == identity)


class KnownHash:
    """A file's SHA-256 already known (the catalogue's), for a file whose :func:`file_identity`
    is the one recorded when that SHA-256 was last computed and matched: the interface of
    :class:`BackgroundHash` without a thread or a read.

    Made by :meth:`if_unchanged`. :meth:`result` looks at the file's identity again (the end
    of the command): a file written to or replaced meanwhile sets ``identity`` to None, as
    :class:`BackgroundHash` does for a file written to while it is hashed.
    """

    #: None: nothing was hashed here, so there is no new identity to record
    started_ns = None

    def __init__(self, path: str | os.PathLike, sha256: str, identity: tuple, fd: int | None = None):
        self._path = path
        self._digest = sha256
        self.identity: tuple | None = identity
        self.elapsed_s = self.waited_s = 0.0
        self._fd: int | None = fd
        #: a path to the very file checked, for the caller's reads (:func:`descriptor_path`)
        self.source = descriptor_path(fd, path)

    @classmethod
    def if_unchanged(cls, path: str | os.PathLike, known: tuple[str, str] | None) -> "KnownHash | None":
        """A KnownHash of ``path`` when its identity now is the one recorded with its SHA-256
        (``known``: SHA-256, :func:`identity_text`), else None."""
        if known is None or known[1] is None:
            return None
        sha256, recorded = known
        try:
            fd = open_regular(path)
        except OSError:
            return None                     # the full hash names the problem
        try:
            identity = file_identity(os.fstat(fd))
            if identity_text(identity) == recorded:
                return cls(path, sha256, identity, fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None

    def result(self) -> str:
        """The known SHA-256; ``identity`` None if the file is no longer the one it was."""
        if not still_same(self._fd, self._path, self.identity):
            self.identity = None
        return self._digest

    def promote(self) -> None:
        pass

    def cancel(self) -> None:
        """Close the file. Safe to call more than once."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class BackgroundHash:
    """SHA-256 of a file computed in a background thread at the lowest CPU priority.

    Started at once, on the file opened here and kept open until :meth:`cancel` (``source``
    names it for the caller's own reads); :meth:`result` waits for the digest, :meth:`cancel`
    stops the thread early. hashlib releases the GIL on large buffers, so the hash takes a core the caller
    leaves idle (an analysis' single-threaded statistics phase) rather than its time.
    ``low_priority=False`` keeps the normal priority: beside work that keeps every core
    busy and has nothing after it (a registration estimate), a starved hash would only
    run after the work, alone on one core.
    """

    def __init__(self, path: str | os.PathLike, *, low_priority: bool = True):
        import threading

        import time

        self._path = path
        self._low_priority = low_priority
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._state = None              # the digest, handed from the low- to the normal-priority thread
        self._digest: str | None = None
        self._error: BaseException | None = None
        #: :func:`file_identity` of the file, the same before and after the hash; None if it changed
        self.identity: tuple | None = None
        self._t0 = time.perf_counter()
        #: ``time.time_ns()`` when the hash began (:func:`settled_identity`)
        self.started_ns = time.time_ns()
        # opened here, once, and kept open until cancel(): the file hashed is the one ``source`` names
        self._fh = None
        try:
            self._fh = os.fdopen(open_regular(path), "rb")   # not a FIFO: its open would block
            self.identity = file_identity(os.fstat(self._fh.fileno()))
        except OSError as exc:
            self._error = exc               # result() raises it; readers of ``source`` name it too
        #: a path to the very file hashed, for the caller's reads (:func:`descriptor_path`)
        self.source = descriptor_path(None if self._fh is None else self._fh.fileno(), path)
        #: seconds the thread took, and that result() waited for it
        self.elapsed_s = self.waited_s = 0.0
        self._thread = threading.Thread(target=self._run, args=(low_priority,), name="sha256", daemon=True)
        try:
            self._thread.start()
        except BaseException:               # no thread to stop: the file only
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            raise

    def _run(self, low_priority: bool) -> None:
        import threading
        import time

        try:  # Linux: niceness per thread; elsewhere the hash just runs at normal priority
            if low_priority:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        fh = self._fh
        if fh is None:
            return                              # not opened: __init__ kept the error
        try:
            digest = hashlib.sha256() if self._state is None else self._state
            self._state = None
            while not self._stop.is_set():
                if low_priority and self._pause.is_set():
                    self._state = digest      # promote() goes on with it
                    return
                if not (chunk := fh.read(_CHUNK)):
                    break
                digest.update(chunk)
            self._digest = digest.hexdigest()
            if file_identity(os.fstat(fh.fileno())) != self.identity:
                self.identity = None            # written to while it was read
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._error = exc
        self.elapsed_s = time.perf_counter() - self._t0

    def promote(self) -> None:
        """Run the rest of the hash at the caller's priority.

        The low-priority thread stops at its next chunk and a thread started here — so with
        this thread's niceness: lowering a niceness again needs a privilege — goes on with
        the same digest from the same place. For when the caller's work no longer has gaps
        for a nice-19 thread to fill and the hash would otherwise run alone after it (an
        analysis' statistics phase, in threads on every core, after the stack's read).
        """
        import threading

        if not self._low_priority or self._pause.is_set():
            return
        self._pause.set()
        self._thread.join()                 # a few ms: one chunk
        if self._state is not None:
            self._thread = threading.Thread(target=self._run, args=(False,), name="sha256", daemon=True)
            self._thread.start()

    def result(self) -> str:
        """The file's SHA-256 (hex); the thread's OSError, if reading failed."""
        import time

        t0 = time.perf_counter()
        self._thread.join()
        self.waited_s = time.perf_counter() - t0
        if self._error is not None:
            raise self._error
        return self._digest

    def cancel(self) -> None:
        """Stop the hash and close the file (``source`` is no longer valid). Safe to call more than once."""
        self._stop.set()
        self._thread.join()
        self._state = None                  # paused by promote() and not taken up
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class BackgroundSync:
    """``fdatasync`` of a file being written, in a thread: what is written so far goes to the
    disk while the caller computes, so that the final fsync (the store's, at commit) finds
    little left to write.

    :meth:`wait` joins the thread and raises its OSError: a failed flush must fail the
    write, since a later fsync need not report the same lost pages again.
    """

    def __init__(self, path: str | os.PathLike):
        import threading

        self._path = path
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="fdatasync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            fd = os.open(self._path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._error = exc

    def wait(self, *, check: bool = True) -> None:
        """Wait for the flush; its OSError, if it failed (``check``)."""
        self._thread.join()
        if check and self._error is not None:
            raise self._error


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
