"""The single read without its hash (the file's SHA-256 known and its identity unchanged) and
:class:`txmdb.io.files.KnownHash`: the same slabs bit for bit, no hash thread, no bytes read
outside the chunks, and a file written to or replaced meanwhile still noticed."""

from __future__ import annotations

import os
import threading

import pytest

from tests.test_single_read_reader import CHUNKS, _read_all, _same_as_h5py, _sha, _stack, write_stack
from txmdb.io.files import KnownHash, file_identity, identity_text
from txmdb.io.hdf5 import open_stack
from txmdb.io.single_read import SingleRead

#: stands for the catalogue's SHA-256: the known read must hand back this, not compute one
KNOWN = "ab" * 32


@pytest.fixture
def stack(tmp_path):
    return write_stack(tmp_path / "s.h5", _stack(), CHUNKS, gaps=True)


def _known(path) -> tuple[str, str]:
    return KNOWN, identity_text(file_identity(os.stat(path)))


@pytest.mark.parametrize("slab_size", [4, 12, 64])
def test_a_known_read_gives_the_same_slabs_and_hashes_nothing(stack, slab_size, monkeypatch):
    info = open_stack(stack)
    preads = []
    pread = os.preadv

    def counted(fd, buffers, offset):
        preads.append((offset, sum(len(b) for b in buffers)))
        return pread(fd, buffers, offset)

    hashing = SingleRead.open(info, slab_size)
    try:
        hashed = _read_all(hashing)
        assert hashing.result() == _sha(stack) and not hashing.known
    finally:
        hashing.cancel()
    monkeypatch.setattr(os, "preadv", counted)
    reader = SingleRead.open(info, slab_size, known=_known(stack))
    try:
        assert reader.known and reader.started_ns is None
        slabs = _read_all(reader)
        assert not any(t.name == "txmdb-sha256" for t in threading.enumerate())
        assert reader.result() == KNOWN
    finally:
        reader.cancel()
    assert reader.identity is not None and reader.hash_cpu_s == 0.0 and reader.reread_bytes == 0
    for (a, b, slab), (a2, b2, slab2) in zip(slabs, hashed, strict=True):
        assert (a, b) == (a2, b2) and slab.tobytes() == slab2.tobytes()
    _same_as_h5py(info, slabs)
    # only chunk bytes (and the gaps inside a block of chunks): less than the whole file
    assert 0 < sum(n for _, n in preads) < os.path.getsize(stack)


def test_a_known_read_of_another_identity_hashes(stack):
    info = open_stack(stack)
    sha, recorded = _known(stack)
    os.utime(stack, ns=(1, 1))                       # the times moved: not the identity recorded
    reader = SingleRead.open(info, 8, known=(sha, recorded))
    try:
        assert not reader.known
        _read_all(reader)
        assert reader.result() == _sha(stack)
    finally:
        reader.cancel()


def test_a_file_written_to_during_a_known_read_loses_its_identity(stack):
    info = open_stack(stack)
    reader = SingleRead.open(info, 8, known=_known(stack))
    try:
        for i, _slab in enumerate(reader.slabs()):
            if i == 0:
                with open(stack, "r+b") as fh:     # the same bytes again: only the times move
                    fh.seek(-1, os.SEEK_END)
                    last = fh.read(1)
                    fh.seek(-1, os.SEEK_END)
                    fh.write(last)
        assert reader.result() == KNOWN and reader.identity is None
    finally:
        reader.cancel()


def test_known_hash_trusts_only_the_identity_recorded(stack, tmp_path):
    assert KnownHash.if_unchanged(stack, None) is None
    assert KnownHash.if_unchanged(stack, (KNOWN, None)) is None
    assert KnownHash.if_unchanged(stack, (KNOWN, "1:2:3:4:5")) is None
    assert KnownHash.if_unchanged(tmp_path / "absent.h5", (KNOWN, "1:2:3:4:5")) is None
    known = KnownHash.if_unchanged(stack, _known(stack))
    assert known.result() == KNOWN and known.identity is not None
    assert (known.elapsed_s, known.waited_s, known.started_ns) == (0.0, 0.0, None)
    replacement = tmp_path / "new.h5"
    replacement.write_bytes(stack.read_bytes())
    os.replace(replacement, stack)                   # same bytes, another file
    assert known.result() == KNOWN and known.identity is None
    os.unlink(stack)
    again = KnownHash(stack, KNOWN, (0, 0, 0, 0, 0))
    with pytest.raises(FileNotFoundError):
        again.result()
