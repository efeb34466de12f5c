"""The contiguous stacks' direct reads (``txmdb.io.contiguous``) after review (session 19).

- the bytes are read through a copy of h5py's own descriptor of the open file, not the path
  opened again: a file renamed over the path in the middle of an iteration is not read, and
  a FIFO put at the path does not block the read;
- the data set is walked as ``open_stack`` walks it (no link out of the file) and must have
  the shape opened: otherwise no view (h5py reads);
- one positional read may return less than asked (Linux caps it at 0x7ffff000 bytes, FUSE and
  NFS stop early): :func:`txmdb.io.files.pread_exact` reads on, and only the end of the file is
  "truncated".
"""

from __future__ import annotations

import os
import shutil
import threading

import h5py
import numpy as np
import pytest

from txmdb.io.contiguous import direct_view
from txmdb.io.files import pread_exact
from txmdb.io.hdf5 import iter_slabs, open_stack, read_slab
from txmdb.synthetic.drift import make_drifted, write_drifted_stack


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """The same drifted phantom (23 x 26 x 30, 7 energies) stored contiguous and chunked."""
    folder = tmp_path_factory.mktemp("s19review").resolve()
    phantom = make_drifted((23, 26, 30), n_energies=7, seed=5, max_drift=3.0)
    out = {}
    for layout, kwargs in (("contiguous", {}), ("chunked", {"chunks": True})):
        out[layout] = folder / f"{layout}.h5"
        write_drifted_stack(out[layout], phantom, **kwargs)
    return out


def _shifts() -> np.ndarray:
    s = np.random.default_rng(4).uniform(-2.5, 2.5, (7, 3))
    s[-1] = 0.0
    return s


def _sevens(src, dst) -> None:
    """A copy of ``src`` with every value of the stack 7 (the data set at the same offset)."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        f["exchange/data"][...] = 7.0


@pytest.mark.parametrize("prefetch", [False, True])
def test_a_file_renamed_over_the_path_mid_iteration_is_not_read(stacks, tmp_path, prefetch):
    path = tmp_path / "scan.h5"
    shutil.copyfile(stacks["contiguous"], path)
    _sevens(stacks["contiguous"], tmp_path / "other.h5")
    info = open_stack(path)
    shifts = _shifts()
    with h5py.File(path, "r") as f, direct_view(info, f) as direct:
        assert direct is not None                   # the direct reads are the ones checked
    # the chunked copy: read by h5py, never by the direct reads
    expected = read_slab(open_stack(stacks["chunked"]), 0, info.n_slices, shifts=shifts)
    got = []
    for start, _, mu in iter_slabs(info, 4, prefetch=prefetch, shifts=shifts):
        got.append(mu.copy())
        if start == 0:
            os.replace(tmp_path / "other.h5", path)
    assert len(got) == 6 and not (tmp_path / "other.h5").exists()
    got = np.concatenate(got, axis=1)
    assert np.isfinite(got).mean() > 0.3
    assert np.array_equal(got, expected, equal_nan=True)
    # the name's file is the other one now
    assert np.allclose(read_slab(open_stack(path), 0, 4), 7.0)


def test_a_fifo_put_at_the_path_does_not_block_the_read(stacks, tmp_path):
    path = tmp_path / "scan.h5"
    shutil.copyfile(stacks["contiguous"], path)
    info = open_stack(path)
    shifts = _shifts()
    expected = read_slab(info, 0, 8, shifts=shifts)
    done: dict = {}

    def read(f) -> None:
        try:
            done["mu"] = read_slab(info, 0, 8, h5file=f, shifts=shifts)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            done["error"] = exc

    with h5py.File(path, "r") as f:
        os.mkfifo(tmp_path / "fifo")
        os.replace(tmp_path / "fifo", path)
        thread = threading.Thread(target=read, args=(f,), daemon=True)
        thread.start()
        thread.join(30)
        blocked = thread.is_alive()
        if blocked:                                 # opening the FIFO: a writer lets it go
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(30)
    assert not blocked
    assert "error" not in done and np.array_equal(done["mu"], expected, equal_nan=True)


def test_a_data_set_of_another_shape_gets_no_view(stacks, tmp_path):
    info = open_stack(stacks["contiguous"])
    with h5py.File(tmp_path / "bigger.h5", "w") as f:
        f.create_dataset("exchange/data", data=np.zeros((7, 24, 26, 30), np.float32))
    with h5py.File(tmp_path / "bigger.h5", "r") as f:
        assert f["exchange/data"].id.get_offset() is not None      # contiguous, float32: the shape differs
        with direct_view(info, f) as direct:
            assert direct is None
    with h5py.File(stacks["contiguous"], "r") as f, direct_view(info, f) as direct:
        assert direct is not None and direct.shape == tuple(info.shape)


def test_a_data_set_behind_an_external_link_gets_no_view(stacks, tmp_path):
    """Its offset is one in the other file: never read from this file's descriptor."""
    info = open_stack(stacks["contiguous"])
    with h5py.File(tmp_path / "linked.h5", "w") as f:
        f.create_group("exchange")["data"] = h5py.ExternalLink(str(stacks["contiguous"]), "/exchange/data")
    with h5py.File(tmp_path / "linked.h5", "r") as f:
        assert f["exchange/data"].shape == tuple(info.shape)      # h5py itself follows it
        with direct_view(info, f) as direct:
            assert direct is None


def _short_reads(monkeypatch, most: int) -> list:
    """``os.preadv`` returning at most ``most`` bytes per call (as FUSE or NFS may); its offsets."""
    real, offsets = os.preadv, []

    def short(fd, buffers, offset, *flags):
        offsets.append(offset)
        return real(fd, [memoryview(buffers[0])[:most]], offset, *flags)

    monkeypatch.setattr(os, "preadv", short)
    return offsets


def test_short_reads_of_the_direct_view_are_read_on(stacks, monkeypatch):
    info = open_stack(stacks["contiguous"])
    shifts = _shifts()
    expected = read_slab(info, 0, info.n_slices, shifts=shifts)
    offsets = _short_reads(monkeypatch, 4096)
    got = read_slab(info, 0, info.n_slices, shifts=shifts)
    monkeypatch.undo()
    assert len(offsets) > 7 * 5                      # each energy's planes in many short reads
    assert np.array_equal(got, expected, equal_nan=True)


def test_pread_exact_reads_on_after_short_reads_and_stops_at_the_end(tmp_path, monkeypatch):
    data = bytes(range(256)) * 40
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        offsets = _short_reads(monkeypatch, 1000)
        buf = bytearray(5000)
        assert pread_exact(fd, memoryview(buf), 100) == 5000 and bytes(buf) == data[100:5100]
        assert offsets == [100, 1100, 2100, 3100, 4100]
        buf = bytearray(3000)
        assert pread_exact(fd, memoryview(buf), 9000) == 1240 and bytes(buf[:1240]) == data[9000:]
        assert pread_exact(fd, memoryview(bytearray(10)), len(data) + 5) == 0
    finally:
        os.close(fd)
