"""One sequential read of a chunked stack's file: the slabs of an analysis and the file's SHA-256
from the same bytes.

An analysis checks the SHA-256 of its input against the catalogue's. With h5py reading the
slabs and :class:`~txmdb.io.files.BackgroundHash` hashing the file beside it, every byte is
read twice, once through HDF5's chunk machinery. For the common layout — a chunked stack
without filters, every chunk stored, the chunks in the file row of chunks by row of chunks
along the slab axis — :class:`SingleRead` instead reads the file once, front to back, with
``os.preadv`` into a few reused blocks: the chunks' bytes are copied from each block into
the slab buffers, and a hash thread feeds every block (metadata gaps, chunks, tail) to one
SHA-256. The hash thread starts at the lowest CPU priority, filling the gaps the reader and
the caller leave, and never holds the reader up: when no block is free (the hash lags),
the reader keeps its block and the hash later reads those bytes again from the page cache
itself. :meth:`SingleRead.promote` moves the rest of the hash to normal priority (as
:meth:`~txmdb.io.files.BackgroundHash.promote` does) once the caller's work has no gaps left.

    reader = SingleRead.open(info, slab_size)        # None: use iter_slabs and BackgroundHash
    try:
        for start, stop, slab in reader.slabs():     # as iter_slabs(..., prefetch=True) yields
            ...
        reader.promote()                             # optional: the rest of the hash at normal priority
        digest = reader.result()                     # sha256 of the whole file (hex)
    finally:
        reader.cancel()                              # stops and joins the threads, closes the file

The slabs are those :func:`txmdb.io.hdf5.read_slab` gives, bit for bit (the on-disk values,
converted exactly to the working dtype). The chunk index is read through the read's own
descriptor (Linux), with links out of the file refused, so it is that of the bytes read. Every
chunk entry comes from the file, so it is checked before it is trusted: inside the file, exactly one unfiltered chunk's bytes, no two
overlapping, each grid position once, filter mask 0; anything else, and any other layout,
returns None from :meth:`SingleRead.open` and the caller keeps the h5py path (which then
reports a damaged file in its one line). ``TXMDB_SINGLE_READ=0`` in the environment always
returns None (tests and benchmarks compare the two paths).

When the file's SHA-256 is already known and its identity is the one recorded with it
(``SingleRead.open(..., known=(sha256, identity))``, see :class:`txmdb.io.files.KnownHash`),
the read is the slabs' reader only: no hash thread, no reads of the bytes between or after
the chunks, the same slabs bit for bit; :meth:`SingleRead.result` checks the identity again.
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from txmdb.io.files import descriptor_path, file_identity, identity_text, open_regular, pread_exact, still_same

__all__ = ["SingleRead", "single_read_plan", "ENV"]

#: environment variable: "0" turns the single read off
ENV = "TXMDB_SINGLE_READ"

#: bytes per read: chunks are read in pieces of whole planes (energies) of about this size, so
#: that the block is still in the caches when it is copied into the slab and hashed (blocks
#: of whole 17.7 MB chunks cost the hash ~20 % more CPU); a larger plane is a block of its own
_BLOCK_BYTES = 2 << 20
#: chunks larger than this (the blocks in flight hold a few) are read by h5py
_MAX_CHUNK_BYTES = 64 << 20
#: more chunk entries than this are read by h5py (the plan holds a few objects per chunk)
_MAX_CHUNKS = 1 << 16
#: blocks in flight: the reader's, and those waiting for the hash or being hashed
_BLOCKS = 8


@dataclass
class _Read:
    """One ``preadv`` of ``size`` bytes at ``offset``: its pieces of chunks (whole planes along
    the chunk's first axis) as (byte offset in the block, piece shape, place in the slab, part
    of the piece inside the stack)."""

    offset: int
    size: int
    chunks: list[tuple[int, tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]] = field(default_factory=list)


@dataclass
class _Plan:
    disk_dtype: np.dtype
    chunk_shape: tuple[int, ...]
    block_bytes: int
    slabs: list[tuple[int, int, list[_Read]]]     # (start, stop, reads) in file order
    tail: list[_Read]                              # the bytes after the last chunk


def _exact_dtype(ds, work: np.dtype) -> np.dtype | None:
    """The numpy dtype of the data set's stored bytes, when numpy reads them exactly as HDF5
    would (same HDF5 type, a conversion to ``work`` that is exact); else None."""
    import h5py

    dtype = ds.dtype
    # integers convert exactly; floats only to their own width (HDF5 and numpy widen NaN
    # payloads differently)
    exact = dtype.itemsize == work.itemsize if dtype.kind == "f" else dtype.kind in "iu" and dtype.itemsize <= 4
    if not exact or dtype.itemsize > work.itemsize:
        return None
    try:
        same = ds.id.get_type().equal(h5py.h5t.py_create(dtype))
    except (TypeError, ValueError, RuntimeError):
        return None
    return dtype if same else None


def _chunk_entries(ds, n_chunks: int) -> list[tuple[tuple[int, ...], int, int, int]]:
    """(logical offset, byte offset, size, filter mask) of every stored chunk."""
    entries = []
    if hasattr(ds.id, "chunk_iter"):
        ds.id.chunk_iter(lambda c: entries.append((c.chunk_offset, c.byte_offset, c.size, c.filter_mask)))
    else:
        for i in range(n_chunks):
            c = ds.id.get_chunk_info(i)
            entries.append((c.chunk_offset, c.byte_offset, c.size, c.filter_mask))
    return entries


def single_read_plan(info, slab_size: int, file_size: int, *, source: str | None = None) -> _Plan | str:
    """The reads of :class:`SingleRead` for ``info``'s stack in slabs of ``slab_size``, or why
    it cannot be read that way (a short reason).

    ``file_size`` is the size of the file as it is open for the read: every chunk must lie
    inside it. ``source``: where to open that very file (``/proc/self/fd/N`` of the read's
    descriptor), so that the chunk index is the one of the bytes read; default ``info.path``.
    """
    import h5py

    from txmdb.errors import InputError
    from txmdb.io.hdf5 import _lookup

    if info.chunks is None:
        return "not chunked"
    if info.white_path is not None:
        return "raw images with flat fields"
    if not info.sorted:
        return "energies out of order"
    n = info.n_slices
    rows = info.chunks[1]
    if slab_size < n and slab_size % rows:
        return f"slabs of {slab_size} slices are not whole rows of {rows}-slice chunks"
    try:
        with h5py.File(source or info.path, "r") as f:
            # walked as open_stack does: a link out of this file (whose chunk offsets would be
            # those of another file) is refused, never followed
            ds = _lookup(f, Path(info.path), info.data_path)
            if not isinstance(ds, h5py.Dataset):
                return "the data set is not the one opened"
            plist = ds.id.get_create_plist()
            if plist.get_layout() != h5py.h5d.CHUNKED or tuple(ds.shape) != tuple(info.shape):
                return "the data set is not the one opened"
            if plist.get_nfilters():
                return "filtered (compressed) chunks"
            disk = _exact_dtype(ds, info.dtype_work)
            if disk is None:
                return f"stored type {ds.dtype} is not read as raw numbers"
            chunk_shape = tuple(ds.chunks)
            grid = math.prod(-(-s // c) for s, c in zip(ds.shape, chunk_shape))
            n_chunks = ds.id.get_num_chunks()
            if n_chunks != grid:
                return f"{n_chunks} chunks stored of {grid}"
            if grid > _MAX_CHUNKS:
                return f"{grid} chunks, more than {_MAX_CHUNKS}"
            chunk_bytes = math.prod(chunk_shape) * disk.itemsize
            if chunk_bytes > _MAX_CHUNK_BYTES:
                return f"chunks of {chunk_bytes} bytes"
            entries = _chunk_entries(ds, n_chunks)
    except (InputError, OSError, RuntimeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        return f"chunk index unreadable ({type(exc).__name__})"
    return _plan(info.shape, chunk_shape, disk, entries, file_size, slab_size) if len(entries) == grid \
        else f"{len(entries)} chunk entries of {grid}"


def _plan(shape: tuple[int, ...], chunk_shape: tuple[int, ...], disk: np.dtype, entries, file_size: int,
          slab_size: int) -> _Plan | str:
    """Check the chunk entries and lay out the reads, slab by slab in file order."""
    chunk_bytes = math.prod(chunk_shape) * disk.itemsize
    seen = set()
    for coords, offset, size, mask in entries:
        if mask or size != chunk_bytes:
            return "a chunk is filtered or of another size"
        if offset is None or not 0 <= offset <= file_size - size:
            return "a chunk lies outside the file"
        if len(coords) != len(shape) or any(c % k or not 0 <= c < s for c, k, s in zip(coords, chunk_shape, shape)):
            return "a chunk is off the grid"
        seen.add(tuple(coords))
    if len(seen) != len(entries):
        return "two entries for one chunk"
    entries = sorted(entries, key=lambda e: e[1])
    for (_, a, _, _), (_, b, _, _) in zip(entries, entries[1:]):
        if b < a + chunk_bytes:
            return "chunks overlap"
    rows = [e[0][1] // chunk_shape[1] for e in entries]
    if any(b < a for a, b in zip(rows, rows[1:])):
        return "chunks are not in the file row by row"
    plane = math.prod(chunk_shape[1:]) * disk.itemsize
    block = max(_BLOCK_BYTES, plane)
    planes = block // plane                          # per piece
    n = shape[1]
    slabs, pos, i = [], 0, 0
    for start in range(0, n, slab_size):
        stop = min(start + slab_size, n)
        reads: list[_Read] = []
        while i < len(entries) and entries[i][0][1] < stop:
            coords, offset = entries[i][0], entries[i][1]
            rest = (slice(coords[1] - start, min(coords[1] + chunk_shape[1], stop) - start),
                    *(slice(c, min(c + k, s)) for c, k, s in zip(coords[2:], chunk_shape[2:], shape[2:])))
            for p0 in range(0, min(chunk_shape[0], shape[0] - coords[0]), planes):
                p1 = min(p0 + planes, chunk_shape[0])
                at, size = offset + p0 * plane, (p1 - p0) * plane
                place = (slice(coords[0] + p0, min(coords[0] + p1, shape[0])), *rest)
                part = tuple(slice(0, p.stop - p.start) for p in place)
                if reads and reads[-1].chunks and at + size - reads[-1].offset <= block:
                    last = reads[-1]                 # same block, with the gap before it
                else:
                    pos = _gaps(reads, pos, at, block, keep=size)
                    last = _Read(pos, 0)
                    reads.append(last)
                last.chunks.append((at - last.offset, (p1 - p0, *chunk_shape[1:]), place, part))
                last.size = at + size - last.offset
                pos = at + size
            i += 1
        slabs.append((start, stop, reads))
    tail: list[_Read] = []
    _gaps(tail, pos, file_size, block)
    return _Plan(disk, chunk_shape, block, slabs, tail)


def _gaps(reads: list[_Read], pos: int, end: int, block: int, keep: int = 0) -> int:
    """Append reads of the bytes from ``pos`` to ``end`` (hashed, not copied), a block at a
    time, until what is left fits in one block with the ``keep`` bytes of the chunk that
    follows (its read then starts there); returns where that is. ``keep=0``: all of them."""
    while pos < end and (keep == 0 or end - pos + keep > block):
        n = min(block, end - pos)
        reads.append(_Read(pos, n))
        pos += n
    return pos


class SingleRead:
    """Slabs of a chunked stack and the SHA-256 of its whole file, from one sequential read.

    Made by :meth:`open` (None when the stack cannot be read this way). The interface of
    :class:`~txmdb.io.files.BackgroundHash` — :meth:`result`, :meth:`cancel`, :meth:`promote`,
    ``identity``, ``elapsed_s``, ``waited_s`` — plus :meth:`slabs`. Without :meth:`slabs`
    (or before it), :meth:`result` reads the file for the hash alone. ``read_cpu_s``,
    ``hash_cpu_s`` and ``reread_bytes`` say what the threads cost. Opened with a ``known``
    SHA-256 that holds (:meth:`open`), it is only the slabs' reader: ``known`` is True and
    :meth:`result` hashes nothing.
    """

    def __init__(self, info, slab_size: int, plan: _Plan, fd: int, identity: tuple, low_priority: bool = True,
                 known_sha256: str | None = None, started_ns: int | None = None):
        self.info = info
        self.slab_size = slab_size
        self._plan = plan
        self._fd = fd
        #: a path to the very file read, for the caller's other reads of it (h5py: the clusters' pass)
        self.source = descriptor_path(fd, info.path)
        self._low_priority = low_priority
        #: :func:`file_identity` of the file, the same before and after the read; None if it changed
        self.identity: tuple | None = identity
        #: the file's SHA-256 is known (the catalogue's, for an unchanged identity): no hash thread,
        #: no reads of bytes outside the chunks
        self.known = known_sha256 is not None
        self._digest: str | None = known_sha256
        #: ``time.time_ns()`` when the hash began (:func:`txmdb.io.files.settled_identity`); None when not hashed
        self.started_ns = None if self.known else started_ns
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._promoted = threading.Event()
        self._state = None                               # the digest, handed to the promoted thread
        self._blocks: queue.Queue = queue.Queue()        # free blocks
        self._hash_queue: queue.Queue = queue.Queue()    # (block or None, offset, size); None at the end
        self._free_slabs: queue.Queue = queue.Queue()    # slab buffers the caller gave back
        self._ready: queue.Queue = queue.Queue()         # slab buffers read, or an error
        self._reader: threading.Thread | None = None
        self._hasher: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self._closed = False
        #: seconds from open to the digest, and that result() waited for it
        self.elapsed_s = self.waited_s = 0.0
        #: CPU seconds of the reading thread (reads and copies into slabs) and of the hash threads
        self.read_cpu_s = self.hash_cpu_s = 0.0
        #: bytes the hash read again because it lagged behind the reader
        self.reread_bytes = 0

    @classmethod
    def open(cls, info, slab_size: int, *, low_priority: bool = True,
             known: tuple[str, str] | None = None) -> "SingleRead | None":
        """A single read of ``info``'s file in slabs of ``slab_size``, or None (see the module).

        ``low_priority``: the hash thread starts at the lowest CPU priority, as
        :class:`~txmdb.io.files.BackgroundHash` does, until :meth:`promote`.
        ``known``: (SHA-256, :func:`~txmdb.io.files.identity_text`) recorded for the file; when
        the descriptor opened here has that identity, the file is read for the slabs only (no
        hash, no bytes outside the chunks) and :meth:`result` gives that SHA-256.
        """
        if os.environ.get(ENV, "1") == "0":
            return None
        started_ns = time.time_ns()
        try:
            fd = open_regular(info.path)
        except OSError:
            return None                              # the h5py path names the problem
        try:
            identity = file_identity(os.fstat(fd))
            # the index read through this descriptor: a path renamed over and back meanwhile
            # cannot give the plan of another file (Linux; elsewhere the identity check below)
            plan = single_read_plan(info, slab_size, identity[2], source=descriptor_path(fd, info.path))
            # the plan must describe the file open here: not replaced or written to meanwhile
            if not isinstance(plan, str) and still_same(None, info.path, identity):
                trusted = known is not None and identity_text(identity) == known[1]
                return cls(info, slab_size, plan, fd, identity, low_priority,
                           known_sha256=known[0] if trusted else None, started_ns=started_ns)
        except OSError:
            pass                                     # gone meanwhile: the h5py path names it
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None

    # ------------------------------------------------------------------ threads
    def _start(self, copy: bool) -> None:
        if self.known:                                  # the reader's one block, no hash thread
            self._blocks.put(np.empty(self._plan.block_bytes, dtype=np.uint8))
            self._reader = threading.Thread(target=self._read, args=(copy,), name="txmdb-read", daemon=True)
            self._reader.start()
            return
        for _ in range(_BLOCKS):
            self._blocks.put(np.empty(self._plan.block_bytes, dtype=np.uint8))
        self._hasher = threading.Thread(target=self._hash, args=(self._low_priority,), name="txmdb-sha256",
                                        daemon=True)
        self._reader = threading.Thread(target=self._read, args=(copy,), name="txmdb-read", daemon=True)
        self._hasher.start()
        self._reader.start()

    def _hash(self, low_priority: bool) -> None:
        """SHA-256 of the reader's blocks in file order; the bytes of a block the reader could
        not hand over (the hash lagged) are read again here."""
        t0 = time.thread_time()
        try:  # Linux: niceness per thread; elsewhere the hash runs at normal priority
            if low_priority:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        digest = self._state or hashlib.sha256()
        self._state = None
        scratch = None
        try:
            while True:
                if low_priority and self._promoted.is_set():
                    self._state = digest             # promote() goes on with it
                    return
                if (item := self._hash_queue.get()) is None or self._stop.is_set():
                    break                            # the end, or cancel(): no digest then
                if item is _WAKE:
                    continue
                block, offset, size = item
                if block is not None:
                    digest.update(block[:size])      # hashlib releases the GIL on large buffers
                    self._blocks.put(block)
                    continue
                scratch = scratch if scratch is not None else np.empty(min(size, 4 << 20), dtype=np.uint8)
                self.reread_bytes += size
                for at in range(offset, offset + size, scratch.size):
                    n = min(scratch.size, offset + size - at)
                    if pread_exact(self._fd, memoryview(scratch)[:n], at) != n:
                        raise OSError(f"file ends before byte {at + n} (truncated while read?)")
                    digest.update(scratch[:n])
            if not self._stop.is_set() and self._error is None:
                self._digest = digest.hexdigest()
                if file_identity(os.fstat(self._fd)) != self.identity:
                    self.identity = None             # written to while it was read
                self.elapsed_s = time.perf_counter() - self._t0
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._error = self._error or exc
        finally:
            self.hash_cpu_s += time.thread_time() - t0
            if self._state is None:
                _drain(self._blocks)                 # the reader is done: free the blocks

    def _read(self, copy: bool) -> None:
        from txmdb.io.hdf5 import _read_error

        plan, info = self._plan, self.info
        block = self._blocks.get()
        try:
            for start, stop, reads in plan.slabs:
                out = None
                if copy:
                    if (buf := self._free_slabs.get()) is None:
                        return
                    out = buf.reshape(-1)[:info.shape[0] * (stop - start) * math.prod(info.shape[2:])]
                    out = out.reshape(info.shape[0], stop - start, *info.shape[2:])
                try:
                    for read in reads:
                        if self._stop.is_set():
                            return
                        if self.known and not read.chunks:
                            continue                 # bytes between chunks: only the hash wanted them
                        block = self._pass(read, block, out)
                except OSError as exc:
                    raise _read_error(info, start, stop, exc) from None
                if copy:
                    self._ready.put(buf)
            for read in () if self.known else plan.tail:
                block = self._pass(read, block, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by slabs() / result()
            self._error = exc
            self._ready.put(exc)
        finally:
            self._hash_queue.put(None)
            self.read_cpu_s = time.thread_time()

    def _pass(self, read: _Read, block: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """Read one block, hand it to the hash, copy its chunks into ``out``; the block to read
        the next one into.

        The reader never waits for the hash: when no free block is left (the hash, at low
        priority, lags behind), it keeps its block and the hash reads those bytes again later.
        """
        if (done := pread_exact(self._fd, memoryview(block)[:read.size], read.offset)) < read.size:
            raise OSError(f"file ends at byte {read.offset + done} (truncated while read?)")
        if self.known:
            fresh = block                            # no hash to hand it to: read the next one into it
        else:
            fresh = None
            try:
                fresh = self._blocks.get_nowait()
            except queue.Empty:
                pass
            self._hash_queue.put((block if fresh is not None else None, read.offset, read.size))
        if out is not None:
            disk = self._plan.disk_dtype
            for at, shape, place, part in read.chunks:
                out[place] = np.frombuffer(block, dtype=disk, count=math.prod(shape), offset=at).reshape(shape)[part]
        return block if fresh is None else fresh

    # ------------------------------------------------------------------ interface
    def slabs(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(start, stop, slab)`` as ``iter_slabs(info, slab_size, prefetch=True)`` does:
        the next slab is read meanwhile, and **a slab is valid only until the next one is
        requested**. Once per reader."""
        if self._reader is not None:
            raise RuntimeError("the stack's single read has already started")
        info = self.info
        full = (info.shape[0], min(self.slab_size, info.n_slices), *info.shape[2:])
        for _ in range(2):
            self._free_slabs.put(np.empty(full, dtype=info.dtype_work))
        self._start(copy=True)
        finished = False
        try:
            for start, stop, _reads in self._plan.slabs:
                item = self._ready.get()
                if isinstance(item, BaseException):
                    raise item
                n = info.shape[0] * (stop - start) * math.prod(info.shape[2:])
                yield start, stop, item.reshape(-1)[:n].reshape(info.shape[0], stop - start, *info.shape[2:])
                self._free_slabs.put(item)
            finished = True
            _drain(self._free_slabs)                 # the slabs are read: free their buffers now
        finally:
            if not finished:
                self._halt()

    def promote(self) -> None:
        """Run the rest of the hash at the caller's priority (as
        :meth:`txmdb.io.files.BackgroundHash.promote`): the low-priority thread stops at its
        next block and a thread started here goes on with the same digest."""
        if not self._low_priority or self._hasher is None or self._promoted.is_set():
            return
        self._promoted.set()
        self._hash_queue.put(_WAKE)              # if it waits for the reader's next block
        self._hasher.join()
        if self._state is not None:
            self._hasher = threading.Thread(target=self._hash, args=(False,), name="txmdb-sha256", daemon=True)
            self._hasher.start()

    def result(self) -> str:
        """The file's SHA-256 (hex); the read's error (InputError, OSError), if it failed."""
        t0 = time.perf_counter()
        if self.known:
            return self._known_result(t0)
        if self._reader is None:
            self._start(copy=False)
        self._reader.join()
        self.promote()
        self._hasher.join()
        self.waited_s = time.perf_counter() - t0
        if self._error is not None:
            raise self._error
        if self._digest is None:
            raise RuntimeError("the stack's single read was stopped before the end of the file")
        return self._digest

    def _known_result(self, t0: float) -> str:
        """The known SHA-256 once the slabs (if any) are read; ``identity`` None if the file is no
        longer the one opened (written to, or another file renamed over its path)."""
        if self._reader is not None:
            self._reader.join()
        self.waited_s = time.perf_counter() - t0
        if self._error is not None:
            raise self._error
        if not still_same(self._fd, self.info.path, self.identity):
            self.identity = None
        return self._digest

    def _halt(self) -> None:
        """Stop the threads where they are and wait for them."""
        self._stop.set()
        self._free_slabs.put(None)
        for thread in (self._reader, self._hasher):
            if thread is not None:
                thread.join()
        self._state = None
        for q in (self._blocks, self._free_slabs):
            _drain(q)

    def cancel(self) -> None:
        """Stop reading and hashing; close the file. Safe to call more than once."""
        if self._closed:
            return
        self._halt()
        self._closed = True
        os.close(self._fd)


#: wakes the low-priority hash thread up for promote()
_WAKE = object()


def _drain(q: queue.Queue) -> None:
    """Empty ``q`` (its buffers are freed once nothing else holds them)."""
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
