"""The watcher's ingest process: reads files (HDF5 checks, ingests, job queueing) in a child process.

Why a child: the watcher runs for months over thousands of files and, idle, should cost little.
Ingesting needs numpy, pandas, h5py and the analysis modules (~100 MB more); the child holds
them only while there is work, and leaves after HARVEST_INGESTER_IDLE_S without any. It is
started as soon as a file appears, so its imports overlap the file's settle time. A file that
crashes its reader (a hostile HDF5 file, a segfault in a C library) takes down the child, not the
watcher: the file is recorded as failed and the next one gets a fresh child.

The child ignores SIGTERM and SIGINT (systemd and Ctrl-C signal the whole group): the watcher
decides when it stops, after the file under way. It dies with the watcher (PR_SET_PDEATHSIG),
so a killed watcher leaves no reader behind.

Protocol: one JSON object per line each way over the child's stdin/stdout. The first line to
the child names the catalogue and store; then requests ``{"op": "ingest" | "complete", ...}``,
each answered by ``{"ok": {...}}`` or ``{"error": {"type": ..., "message": ...}}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from txmdb.errors import TxmdbError
from txmdb.vocabulary import HARVEST_INGESTER_IDLE_S


class IngestFailed(TxmdbError):
    """What the child reported for a file: its one-line error, and whether a sample or cell was missing."""

    def __init__(self, message: str, *, missing: bool = False):
        self.missing = missing
        super().__init__(message)


class Ingester:
    """The parent's handle on the child: started on demand, stopped when idle or at the end."""

    def __init__(self, url: str, store: str | os.PathLike, *, idle_s: float = HARVEST_INGESTER_IDLE_S):
        self.config = {"url": url, "store": str(store), "parent": os.getpid()}
        self.idle_s = idle_s
        self.proc: subprocess.Popen | None = None
        self.last_used = 0.0

    def warm(self) -> None:
        """Start the child if it is not running (its imports then overlap the settle time)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen([sys.executable, "-m", "txmdb.harvest.ingester"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1)
        self.proc.stdin.write(json.dumps(self.config) + "\n")
        self.proc.stdin.flush()
        self.last_used = time.monotonic()

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its answer; IngestFailed on the child's error or death."""
        self.warm()
        self.last_used = time.monotonic()
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        self.last_used = time.monotonic()
        if not line:
            code = self.proc.wait()
            self.proc = None
            how = f"signal {-code}" if code < 0 else f"exit status {code}"
            raise IngestFailed(f"{request.get('path')}: the ingest process died reading it ({how})")
        answer = json.loads(line)
        if "error" in answer:
            error = answer["error"]
            raise IngestFailed(error["message"], missing=error["type"] == "NotFoundError")
        return answer["ok"]

    def stop_if_idle(self) -> None:
        if self.proc is not None and time.monotonic() - self.last_used > self.idle_s:
            self.close()

    def close(self) -> None:
        """Let the child go: end of its input, then it exits."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------- the child
def _serve() -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = json.loads(sys.stdin.readline() or "null")
    if not config:
        return
    _die_with(config["parent"])
    from txmdb.catalog import open_catalog

    _preload()
    catalog = open_catalog(config["url"], config["store"], check=False)
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever a library prints must not break the protocol
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = {"ok": _OPS[request["op"]](catalog, request)}
        except TxmdbError as exc:
            answer = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        except OSError as exc:  # the file went away or became unreadable while it was read
            answer = {"error": {"type": "OSError", "message": f"{request.get('path')}: cannot read: "
                                                              f"{exc.strerror or exc}"}}
        except Exception as exc:  # a reader's bug must not stop the harvest: the file is failed with it
            answer = {"error": {"type": type(exc).__name__,
                                "message": f"{request.get('path')}: {type(exc).__name__}: {exc}"}}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def _preload() -> None:
    """The readers' and services' imports, done while the file that woke the child settles."""
    import h5py  # noqa: F401

    import txmdb.catalog.cycling  # noqa: F401
    import txmdb.catalog.spectroscopy  # noqa: F401
    import txmdb.catalog.txm  # noqa: F401
    import txmdb.io.cycling  # noqa: F401
    import txmdb.jobs  # noqa: F401


def _die_with(parent: int) -> None:
    """SIGKILL this process when the watcher dies (Linux); exit now if it already has."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        raise SystemExit(0)


def _ingest(catalog, request: dict) -> dict:
    from txmdb.harvest.ingest import ingest_file, queue_jobs

    path = Path(request["path"])
    before = _identity(path, request.get("folder"))
    result = ingest_file(catalog, request["kind"], path, request["values"])
    answer = {"record_kind": result.record_kind, "record_id": result.record_id, "sha256": result.sha256,
              "created": result.created, "jobs": [], "jobs_error": None,
              "changed_while_read": _identity(path, None, missing_ok=True) != before}
    if result.record_kind == "txm_scans" and (request["register"] or request["analyze"]):
        try:
            answer["jobs"] = queue_jobs(catalog, result.record_id, register=request["register"],
                                        analyze=request["analyze"], analysis=request["analysis"],
                                        created_by=request["created_by"])
        except TxmdbError as exc:
            answer["jobs_error"] = str(exc)
    return answer


def _identity(path: Path, folder: str | None, *, missing_ok: bool = False):
    """What tells the file at ``path`` apart from one put in its place or rewritten (the change
    time, which no writer sets back); an InputError when it is not a regular file of ``folder``.

    A hostile user of a shared folder may swap the file, or a folder on its path, for a link
    to data of someone else's between the watcher's look and this read.
    """
    import stat

    from txmdb.errors import InputError

    try:
        st = os.lstat(path)
    except OSError as exc:
        if missing_ok:
            return None
        raise InputError(path, f"cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(path, "not a regular file (links, pipes and devices are not read)")
    if folder is not None and not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder)):
        raise InputError(path, "its folder is a link out of the watched folder: not read")
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _complete(_catalog, request: dict) -> dict:
    from txmdb.harvest.complete import incomplete_reason

    return {"reason": incomplete_reason(request["path"])}


_OPS = {"ingest": _ingest, "complete": _complete}

if __name__ == "__main__":
    _serve()
