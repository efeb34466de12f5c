"""The single read of a chunked stack (txmdb.io.single_read): the file's SHA-256 and the slabs
from one sequential read, bit-identical to h5py's slabs; every other layout and every
implausible chunk index falls back to the h5py path."""

from __future__ import annotations

import hashlib
import os
import struct
import threading

import h5py
import numpy as np
import pytest

from txmdb.errors import InputError
from txmdb.io.hdf5 import iter_slabs, open_stack, read_slab
from txmdb.io.single_read import ENV, SingleRead, single_read_plan

SHAPE = (12, 20, 26, 30)                       # energies, z, y, x: edge chunks are partial
CHUNKS = (12, 4, 8, 16)


def _stack(shape=SHAPE, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.normal(1.0, 0.5, shape).astype(np.float64)
    data[(slice(None), 3, 5, 7)[:len(shape)]] = np.nan   # a voxel without a spectrum, as real stacks have
    return data


def write_stack(path, data, chunks, *, dtype="<f4", rows="forward", gaps=False, energies=None, **create):
    """A dxchange stack whose chunks are written row by row along z, in ``rows`` order
    ("forward", "reverse"); ``gaps``: another data set's bytes written between rows."""
    n_e = data.shape[0]
    with h5py.File(path, "w", rdcc_nbytes=0) as f:    # each chunk placed as it is written
        ds = f.create_dataset("/exchange/data", shape=data.shape, dtype=dtype, chunks=chunks, **create)
        starts = list(range(0, data.shape[1], chunks[1]))
        for i, z in enumerate(starts[::-1] if rows == "reverse" else starts):
            ds[:, z:z + chunks[1]] = data[:, z:z + chunks[1]].astype(dtype)
            if gaps:
                f[f"/extra/gap{i}"] = np.full(1000 + 37 * i, i, dtype=np.uint8)
        f["/exchange/energy"] = np.linspace(8300.0, 8400.0, n_e) if energies is None else energies
    return path


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _read_all(reader: SingleRead) -> list[tuple[int, int, np.ndarray]]:
    return [(a, b, slab.copy()) for a, b, slab in reader.slabs()]


def _same_as_h5py(info, slabs) -> None:
    for a, b, slab in slabs:
        expected = read_slab(info, a, b)
        assert slab.dtype == expected.dtype == info.dtype_work
        # bit for bit (NaN included)
        np.testing.assert_array_equal(slab.view(f"u{slab.itemsize}"), expected.view(f"u{slab.itemsize}"))


def _check_single_read(path, slab_size: int) -> list[tuple[int, int, np.ndarray]]:
    """The single read of ``path`` in slabs of ``slab_size``: h5py's slabs bit for bit, and
    the file's SHA-256; its slabs."""
    info = open_stack(path)
    reader = SingleRead.open(info, slab_size)
    assert reader is not None, single_read_plan(info, slab_size, os.path.getsize(path))
    try:
        slabs = _read_all(reader)
        assert reader.result() == _sha(path)
    finally:
        reader.cancel()
    _same_as_h5py(info, slabs)
    assert reader.identity is not None and reader.read_cpu_s > 0
    return slabs


@pytest.mark.parametrize("slab_size", [4, 8, 12, 20, 64])
def test_slabs_and_digest_equal_h5py_and_hashlib(tmp_path, slab_size):
    slabs = _check_single_read(write_stack(tmp_path / "s.h5", _stack(), CHUNKS, gaps=True), slab_size)
    assert [(a, b) for a, b, _ in slabs] == [(a, min(a + slab_size, 20)) for a in range(0, 20, slab_size)]


@pytest.mark.parametrize("dtype", ["<f4", "<u2", "<i2", "<f8", ">f8", ">i4", "<u1"])
def test_other_stored_types_are_converted_exactly(tmp_path, dtype):
    data = _stack()
    if dtype[1] in "iu":                      # whole numbers, none out of the type's range
        data = np.clip(np.nan_to_num(data) * 100, 0, 255).round()
    _check_single_read(write_stack(tmp_path / "t.h5", data, CHUNKS, dtype=dtype), 8)


def test_chunks_split_along_energy_and_a_2d_stack(tmp_path):
    _check_single_read(write_stack(tmp_path / "e.h5", _stack(), (5, 4, 8, 16)), 8)
    _check_single_read(write_stack(tmp_path / "2d.h5", _stack((12, 30, 22)), (12, 8, 8)), 16)


@pytest.mark.parametrize("case, reason", [
    ("slab not whole rows", "not whole rows"),
    ("reverse rows", "not in the file row by row"),
    ("gzip", "filtered"),
    ("shuffle", "filtered"),
    ("contiguous", "not chunked"),
    ("unsorted energies", "out of order"),
    ("int64", "not read as raw numbers"),
    (">f4", "not read as raw numbers"),       # widened to float64: HDF5 and numpy differ on NaN
    ("missing chunk", None),                  # refused by open_stack already
])
def test_other_layouts_fall_back(tmp_path, case, reason):
    path, data, slab_size = tmp_path / "f.h5", _stack(), 8
    kwargs = {}
    if case == "slab not whole rows":
        slab_size = 6
    elif case == "reverse rows":
        kwargs = {"rows": "reverse"}
    elif case in ("gzip", "shuffle"):
        kwargs = {"compression": "gzip"} if case == "gzip" else {"shuffle": True}
    elif case == "unsorted energies":
        kwargs = {"energies": np.linspace(8300.0, 8400.0, 12)[::-1].copy()}
    elif case == "int64":
        kwargs = {"dtype": "<i8"}
        data = np.nan_to_num(data).round()
    elif case == ">f4":
        kwargs = {"dtype": ">f4"}
    if case == "contiguous":
        with h5py.File(path, "w") as f:
            f["/exchange/data"] = data.astype(np.float32)
            f["/exchange/energy"] = np.linspace(8300.0, 8400.0, 12)
    elif case == "missing chunk":
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("/exchange/data", shape=data.shape, dtype="<f4", chunks=CHUNKS)
            ds[:, :8] = data[:, :8]
            f["/exchange/energy"] = np.linspace(8300.0, 8400.0, 12)
        with pytest.raises(InputError, match="stores only"):
            open_stack(path)
        return
    else:
        write_stack(path, data, CHUNKS, **kwargs)
    info = open_stack(path)
    assert reason in single_read_plan(info, slab_size, os.path.getsize(path))
    assert SingleRead.open(info, slab_size) is None


def test_switched_off_by_the_environment(tmp_path, monkeypatch):
    path = write_stack(tmp_path / "s.h5", _stack(), CHUNKS)
    info = open_stack(path)
    monkeypatch.setenv(ENV, "0")
    assert SingleRead.open(info, 8) is None
    monkeypatch.setenv(ENV, "1")
    reader = SingleRead.open(info, 8)
    assert reader is not None
    reader.cancel()


def _patch_chunk_address(path, chunk_offset: tuple, new_address: int) -> None:
    """Point the chunk index entry of ``chunk_offset`` at ``new_address`` (a v1 B-tree: no checksum)."""
    with h5py.File(path, "r") as f:
        info = f["/exchange/data"].id.get_chunk_info_by_coord(chunk_offset)
    raw = bytearray(path.read_bytes())
    old = struct.pack("<Q", info.byte_offset)
    assert raw.count(old) == 1
    at = raw.find(old)
    raw[at:at + 8] = struct.pack("<Q", new_address)
    path.write_bytes(bytes(raw))


def test_overlapping_chunk_entries_fall_back(tmp_path):
    path = write_stack(tmp_path / "o.h5", _stack(), CHUNKS)
    with h5py.File(path, "r") as f:
        other = f["/exchange/data"].id.get_chunk_info_by_coord((0, 16, 8, 0)).byte_offset
    _patch_chunk_address(path, (0, 0, 0, 0), other + 100)
    info = open_stack(path)
    assert single_read_plan(info, 8, os.path.getsize(path)) == "chunks overlap"
    assert SingleRead.open(info, 8) is None
    for _ in iter_slabs(info, 8):             # h5py reads what the index says, as before
        pass


def test_chunk_entry_outside_the_file_falls_back_and_fails_in_one_line(tmp_path):
    path = write_stack(tmp_path / "x.h5", _stack(), CHUNKS)
    _patch_chunk_address(path, (0, 0, 0, 0), os.path.getsize(path) + 4096)
    info = open_stack(path)
    assert single_read_plan(info, 8, os.path.getsize(path)) == "a chunk lies outside the file"
    assert SingleRead.open(info, 8) is None
    with pytest.raises(InputError) as err:
        for _ in iter_slabs(info, 8):
            pass
    assert str(err.value).startswith(f"{path}: cannot read '/exchange/data' slab 0:8")
    assert "\n" not in str(err.value)


def test_result_without_slabs_hashes_the_file(tmp_path):
    path = write_stack(tmp_path / "h.h5", _stack(), CHUNKS, gaps=True)
    reader = SingleRead.open(open_stack(path), 8)
    try:
        assert reader.result() == _sha(path)
    finally:
        reader.cancel()
    reader.cancel()                           # twice: nothing left to do


def test_file_written_while_read_changes_digest_and_identity(tmp_path):
    path = write_stack(tmp_path / "w.h5", _stack(), CHUNKS)
    before = _sha(path)
    info = open_stack(path)
    reader = SingleRead.open(info, 4)
    try:
        slabs = reader.slabs()
        next(slabs)
        with h5py.File(path, "r") as f:      # the last row's first chunk: not read yet
            at = f["/exchange/data"].id.get_chunk_info_by_coord((0, 16, 0, 0)).byte_offset
        with open(path, "r+b") as fh:
            fh.seek(at + 10)
            fh.write(b"\x7f\x7f")
        for _ in slabs:
            pass
        digest = reader.result()
    finally:
        reader.cancel()
    assert digest == _sha(path) != before
    assert reader.identity is None


def test_file_truncated_while_read_fails_in_one_line(tmp_path):
    path = write_stack(tmp_path / "cut.h5", _stack(), CHUNKS)
    info = open_stack(path)
    reader = SingleRead.open(info, 4)
    try:
        slabs = reader.slabs()
        next(slabs)
        with h5py.File(path, "r") as f:
            at = f["/exchange/data"].id.get_chunk_info_by_coord((0, 12, 0, 0)).byte_offset
        os.truncate(path, at + 100)
        with pytest.raises(InputError) as err:
            for _ in slabs:
                pass
        with pytest.raises(InputError):
            reader.result()
    finally:
        reader.cancel()
    message = str(err.value)
    assert message.startswith(f"{path}: cannot read '/exchange/data' slab ") and "truncated" in message
    assert "\n" not in message


def test_stopping_early_ends_the_threads(tmp_path):
    path = write_stack(tmp_path / "s.h5", _stack(), CHUNKS)
    before = threading.active_count()
    reader = SingleRead.open(open_stack(path), 4)
    slabs = reader.slabs()
    next(slabs)
    slabs.close()                             # the caller's error: the generator is closed
    with pytest.raises(RuntimeError, match="stopped before the end"):
        reader.result()
    reader.cancel()
    assert threading.active_count() == before
    with pytest.raises(OSError):
        os.fstat(reader._fd)                  # closed


@pytest.mark.parametrize("blocks", [1, 2])
def test_a_hash_lagging_behind_reads_the_bytes_again(tmp_path, monkeypatch, blocks):
    """With no block free for the hash (1: the reader's own) every block is read again by the
    hash; with 2, some are: the digest is the file's either way."""
    from txmdb.io import single_read

    monkeypatch.setattr(single_read, "_BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(single_read, "_BLOCKS", blocks)
    path = write_stack(tmp_path / "lag.h5", _stack(), CHUNKS, gaps=True)
    info = open_stack(path)
    reader = SingleRead.open(info, 4)
    try:
        _same_as_h5py(info, _read_all(reader))
        assert reader.result() == _sha(path)
    finally:
        reader.cancel()
    if blocks == 1:
        assert reader.reread_bytes == os.path.getsize(path)


def test_promote_while_slabs_are_held_goes_on_with_the_same_digest(tmp_path):
    """promote() in the middle of the read (the caller holding a slab, the reader waiting for
    it) neither waits for the read nor changes the digest; the hash thread runs at normal
    priority afterwards."""
    path = write_stack(tmp_path / "p.h5", _stack(), CHUNKS, gaps=True)
    info = open_stack(path)
    reader = SingleRead.open(info, 4)
    try:
        slabs = reader.slabs()
        held = [next(slabs), next(slabs)]
        low = reader._hasher
        reader.promote()
        assert reader._hasher is not low and not low.is_alive()   # the rest of the file is still to come
        reader.promote()                      # once is enough
        rest = [(a, b, s.copy()) for a, b, s in slabs]
        assert reader.result() == _sha(path)
    finally:
        reader.cancel()
    assert [a for a, _, _ in held] + [a for a, _, _ in rest] == [0, 4, 8, 12, 16]


@pytest.mark.parametrize("block_bytes", [5000, 1])
def test_chunks_read_in_pieces_of_planes(tmp_path, monkeypatch, block_bytes):
    """Blocks smaller than a chunk: each chunk in pieces of whole planes (two per piece; one
    per block when a plane is larger than the block), an energy chunk past the last energy
    included."""
    from txmdb.io import single_read

    monkeypatch.setattr(single_read, "_BLOCK_BYTES", block_bytes)
    path = write_stack(tmp_path / "p.h5", _stack(), (5, 4, 8, 16), gaps=True)
    plan = single_read_plan(open_stack(path), 8, os.path.getsize(path))
    pieces = [shape[0] for _, _, reads in plan.slabs for read in reads for _, shape, _, _ in read.chunks]
    assert set(pieces) == ({2, 1} if block_bytes == 5000 else {1})
    _check_single_read(path, 8)
    _check_single_read(write_stack(tmp_path / "q.h5", _stack(), CHUNKS), 12)


def test_cancel_after_the_read_does_not_wait_for_the_hash(tmp_path, monkeypatch):
    """An analysis failing after the edge pass cancels: the hash thread stops at its next
    block instead of hashing (and reading again) the rest of the file."""
    import types

    from txmdb.io import single_read

    gate = threading.Event()

    class HeldSha:                            # the hash waits at its first block until the gate opens
        def __init__(self):
            self._h = hashlib.sha256()

        def update(self, data):
            gate.wait()
            self._h.update(data)

        def hexdigest(self):
            return self._h.hexdigest()

    monkeypatch.setattr(single_read, "hashlib", types.SimpleNamespace(sha256=HeldSha))
    monkeypatch.setattr(single_read, "_BLOCK_BYTES", 4096)
    monkeypatch.setattr(single_read, "_BLOCKS", 1)         # every block left for the hash to read again
    path = write_stack(tmp_path / "c.h5", _stack(), CHUNKS)
    reader = SingleRead.open(open_stack(path), 8)
    for _ in reader.slabs():
        pass
    threading.Timer(0.2, gate.set).start()    # after cancel() has asked the threads to stop
    reader.cancel()
    assert reader._digest is None and not reader._hasher.is_alive()
    assert reader.reread_bytes <= 4096        # at most the block it was hashing
