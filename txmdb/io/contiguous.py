"""Boxes of a contiguous, uncompressed stack read by ``os.preadv``, without h5py (private).

h5py serialises every call of every thread behind one lock; a stack stored contiguous and
exactly as its working dtype (the common float32 reconstruction) can be read from its
offset in the file instead, by several threads at once: the registration estimate's
per-energy threads (:mod:`txmdb.catalog.registration`) and the registered read's two
threads (:func:`txmdb.io.hdf5.read_slab` with shifts). The bytes are read through a copy of
h5py's own descriptor of the open file (never the path opened again: a file renamed over it
meanwhile is not read), never mapped: a file cut short gives a one-line
:class:`~txmdb.errors.InputError`, not SIGBUS.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from pathlib import Path

from txmdb.errors import InputError
from txmdb.io.files import pread_exact


@contextlib.contextmanager
def direct_view(info, f):
    """A :class:`ContiguousView` of the stack when it is stored contiguous, without flats or
    darks and exactly as its working dtype (the common float32 reconstruction), else None;
    read through h5py's own descriptor of ``f``. None too for a data set not of the shape
    opened, one behind a link out of the file, or a file h5py reads by another driver."""
    import h5py
    import numpy as np

    from txmdb.io.hdf5 import _lookup
    from txmdb.io.single_read import _exact_dtype

    try:
        # walked as open_stack does: no link out of the file (any problem: h5py's read names it)
        ds = _lookup(f, Path(info.path), info.data_path)
    except InputError:
        ds = None
    if not isinstance(ds, h5py.Dataset) or tuple(ds.shape) != tuple(info.shape):
        yield None
        return
    work = np.dtype(info.dtype_work)
    plist = ds.id.get_create_plist()
    offset = ds.id.get_offset() if plist.get_layout() == h5py.h5d.CONTIGUOUS else None
    if (info.white_path is not None or offset is None or _exact_dtype(ds, work) != work
            or ds.id.get_storage_size() < ds.size * work.itemsize or (fd := _own_descriptor(f)) is None):
        yield None
        return
    try:
        yield ContiguousView(info, fd, offset, work)
    finally:
        os.close(fd)


def _own_descriptor(f) -> int | None:
    """A duplicate of the descriptor h5py reads ``f`` through (its default ``sec2`` driver),
    when that is a regular file; else None. Not ``info.path`` opened again: a file renamed
    over the path meanwhile would be read beside h5py's, and a FIFO put there would block."""
    try:
        if f.driver != "sec2":
            return None
        fd = os.dup(f.id.get_vfd_handle())
    except Exception:                       # noqa: BLE001 - any doubt: h5py reads the stack
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


class ContiguousView:
    """``view[e, z0:z1:step, y0:y1, x0:x1]``: one energy's box of a contiguous stack by
    ``os.preadv`` from its offset in the file, the values h5py reads (stored as the working
    dtype). Without h5py, which serialises every call of every thread behind one lock: the
    estimate's threads read their energies in parallel (272³: the coarse level's reads were
    a third of its wall time with one thread running). A short read is read on
    (:func:`~txmdb.io.files.pread_exact`); the end of the file before the data (the file cut
    meanwhile) is a one-line error."""

    def __init__(self, info, fd: int, offset: int, dtype):
        import numpy as np

        self.info, self.shape, self.dtype = info, tuple(info.shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self._fd, self._offset = fd, int(offset)
        # bytes per step along each axis (energy, then the spatial axes)
        self._strides = [self.dtype.itemsize * math.prod(self.shape[k + 1:]) for k in range(self.ndim)]

    def __getitem__(self, key):
        import numpy as np

        energy, first, *rest = key
        lines = range(*first.indices(self.shape[1]))
        box = [s.indices(n)[:2] for s, n in zip(rest, self.shape[2:])]      # step 1: read_window's boxes
        out = np.empty((len(lines),) + tuple(b - a for a, b in box), dtype=self.dtype)
        if out.size == 0:
            return out
        strides = self._strides[2:]
        corner = sum(a * s for (a, _), s in zip(box, strides))
        span = sum((b - 1 - a) * s for (a, b), s in zip(box, strides)) + self.dtype.itemsize
        # a box of whole rows is one run of bytes per line; otherwise the run from its first
        # to its last voxel, the box picked from it
        scratch = None if span == out[0].nbytes else np.empty(span // self.dtype.itemsize, dtype=self.dtype)
        base = self._plane_at(energy, 0) + corner
        for k, line in enumerate(lines):
            at = base + line * self._strides[1]
            if scratch is None:
                self._read(out[k], at, energy)
            else:
                self._read(scratch, at, energy)
                out[k] = np.lib.stride_tricks.as_strided(scratch, out.shape[1:], strides, writeable=False)
        return out

    def plane_rows(self, energy: int, line: int, box, into):
        """Plane ``line`` of the first spatial axis of a 3-D stack over the in-plane ``box``
        (``((y0, y1), (x0, x1))``), read as one run of bytes into ``into`` (of the view's
        dtype, the bytes are read as they are; at least ``(y1 - y0) × nx`` values, ``nx``
        the plane's row length) and returned as its C-contiguous ``(y1 - y0, nx)`` view,
        whose first ``x1 - x0`` columns are the box (the rest: the file's next voxels, or
        unread in the last row). No copy out of it: the registration's coarse level bins it
        straight from the cache."""
        (y0, y1), (x0, x1) = box
        nx = self.shape[3]
        rows = into[:(y1 - y0) * nx].reshape(y1 - y0, nx)
        run = rows.reshape(-1)[:(y1 - y0 - 1) * nx + (x1 - x0)]
        self._read(run, self._plane_at(energy, line) + (y0 * nx + x0) * self.dtype.itemsize, energy)
        return rows

    def read_planes(self, energy: int, start: int, stop: int, out) -> None:
        """Whole planes ``[start, stop)`` of the first spatial axis of sorted energy ``energy``
        into ``out`` (C-contiguous, shape ``(stop - start, ...)``): one run of bytes, one read."""
        self._read(out, self._plane_at(energy, start), energy)

    def _plane_at(self, energy: int, line: int) -> int:
        """Byte offset in the file of plane ``line`` of the first spatial axis of sorted energy ``energy``."""
        return self._offset + int(self.info.order[energy]) * self._strides[0] + line * self._strides[1]

    def _read(self, into, at: int, energy: int) -> None:
        view = memoryview(into).cast("B")
        if pread_exact(self._fd, view, at) != view.nbytes:
            raise InputError(self.info.path, f"cannot read {self.info.data_path!r} energy {energy}: the file ends "
                                             f"before its data; truncated?")
