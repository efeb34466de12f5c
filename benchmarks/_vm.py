"""The memory state of this project's benchmark machine, set before each measured child process.

The machine is a Firecracker virtual machine whose balloon device reports free memory to
the host (``virtio_balloon`` free page reporting): memory that stays free for a few seconds
goes back to the host, and the first touch of such a page is a host fault. Writing 448 MB
to a new file took 0.95-1.2 s of system time when nothing had been freed for 8 s, against
0.09-0.3 s right after another process freed 1-2 GB (``python benchmarks/_vm.py``). Every
fresh page of an analysis (its arrays, the page cache of its results file) may pay that
toll, so a figure depends on what the machine did seconds before the run: the "memory
states" of docs/performance.md. The dearest state measured is a page cache holding every
benchmark file (~3 GB left free): the edge pass then took 2.3-2.6 CPU-s against 1.6 with
10 GB free. Each benchmark can set the state before each child:

- ``full``: the files of ``benchmarks/out`` read into the page cache until less than
  :data:`FULL_FREE_BYTES` are free (or all are read), then nothing freed for
  :data:`COLD_SECONDS`: the child's fresh pages are the host's (this VM after a day's work);
- ``cold``: nothing freed for :data:`COLD_SECONDS` before the child starts;
- ``warm``: :data:`WARM_BYTES` touched and freed by another process just before the child
  starts, so that its fresh pages are ones the guest still holds (a machine without free
  page reporting, such as a workstation or a bare-metal server, is always in this state);
- ``as-is``: nothing done (whatever the previous run left).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

STATES = ("as-is", "cold", "warm", "full")
COLD_SECONDS = 8.0
WARM_BYTES = 2 << 30
FULL_FREE_BYTES = 4 << 30
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def settle(state: str, cached: str | os.PathLike | None = None) -> None:
    """Put the machine's free memory in ``state`` (one of :data:`STATES`) right before a child
    runs; ``cached``: a file the child reads from the page cache, read again after a ``full``
    fill (which may have evicted some of it)."""
    if state == "full":
        _fill_page_cache()
        if cached is not None:
            _read(cached)
        time.sleep(COLD_SECONDS)
    elif state == "cold":
        time.sleep(COLD_SECONDS)
    elif state == "warm":
        # touched and freed by a process of its own: touched here, the pages would count in
        # the peak RSS every child inherits from this process at its start (exec keeps it)
        subprocess.run([sys.executable, "-c", f"bytearray({WARM_BYTES})"], check=True)
    elif state != "as-is":
        raise SystemExit(f"--memory {state}: one of {', '.join(STATES)}")


def _free_bytes() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemFree:"):
                return int(line.split()[1]) * 1024
    return 0


def _fill_page_cache() -> None:
    """Read the benchmark files into the page cache, largest first, until little is free
    (checked every 64 MB, so that the page cache is not made to evict)."""
    files = [os.path.join(OUT, name) for name in os.listdir(OUT)]
    for path in sorted((p for p in files if os.path.isfile(p)), key=os.path.getsize, reverse=True):
        if not _read(path, until_free=FULL_FREE_BYTES):
            return


def _read(path, until_free: int = 0) -> bool:
    """Read ``path`` through the page cache; False once fewer than ``until_free`` bytes are free."""
    buffer = bytearray(1 << 20)                   # small: the children inherit this process' peak RSS
    with open(path, "rb", buffering=0) as fh:
        done = 0
        while fh.readinto(buffer):
            done += len(buffer)
            if until_free and done % (64 << 20) == 0 and _free_bytes() < until_free:
                return False
    return True


def _probe(megabytes: int = 448) -> dict:
    """System seconds of writing ``megabytes`` to a new file in the cold and the warm state."""
    import resource

    path = os.path.join(OUT, f"vm_probe_{os.getpid()}.bin")
    chunk = b"\1" * (64 << 20)
    out = {}
    for state in ("cold", "warm"):
        settle(state)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            for at in range(0, megabytes << 20, len(chunk)):
                os.pwrite(fd, chunk, at)
        finally:
            os.close(fd)
            os.unlink(path)
        out[f"{state}_system_s"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_stime - before, 3)
    return out


if __name__ == "__main__":
    import json

    os.makedirs(OUT, exist_ok=True)
    print(json.dumps({"write_mb": 448, **_probe()}))
