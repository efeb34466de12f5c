"""The registered read, session 19: two threads, and preadv of whole planes for contiguous stacks.

``read_slab(..., shifts=...)`` reads and shifts the energies on two threads; a contiguous
stack stored as its working dtype is read by ``os.preadv`` in whole planes
(``txmdb.io.contiguous``), the plan widened to them. Checked here against a reference built
independently of that path (h5py boxes through
:func:`txmdb.analysis.registration.registered_slab`, the invalid voxels NaN at every
energy), bit for bit, for 3-D and 2-D stacks, contiguous and chunked, energies sorted or
not, shifts that leave the field of view; and that the read goes through the path passed
(``/proc/self/fd/N``) and that a file cut short is a one-line error.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from txmdb.analysis.registration import registered_slab, valid_box
from txmdb.catalog.registration import _ContiguousView, _direct_view
from txmdb.errors import InputError
from txmdb.io.contiguous import ContiguousView, direct_view
from txmdb.io.hdf5 import iter_slabs, open_stack, read_slab
from txmdb.synthetic.drift import make_drifted, write_drifted_stack

SHAPES = {"3d": (23, 26, 30), "2d": (31, 37)}


def _shifts(ndim: int, n: int, seed: int) -> np.ndarray:
    """Fractions, whole voxels, both signs; one energy beyond the field of view on axis 0."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-4.5, 4.5, (n, ndim))
    s[1] = np.round(s[1])                       # whole voxels: no halo on any axis
    s[2, 0] = 40.0                              # every voxel's source outside: all NaN
    s[-1] = 0.0
    return s


def _reference(path, info, shifts, start, stop) -> np.ndarray:
    """h5py boxes, shifted one energy at a time, in sorted-energy order, NaN outside the valid box."""
    spatial = tuple(info.spatial_shape)
    with h5py.File(path, "r") as f:
        ds = f[info.data_path][...][info.order]
    window = (stop,) + spatial[1:]
    ref = registered_slab(ds, shifts, (start,) + (0,) * (len(spatial) - 1), window)
    lo, hi = valid_box(shifts, spatial)
    keep = np.zeros(ref.shape[1:], dtype=bool)
    keep[(slice(max(lo[0] - start, 0), max(hi[0] - start, 0)),)
         + tuple(slice(a, b) for a, b in zip(lo[1:], hi[1:]))] = True
    ref[:, ~keep] = np.nan
    return ref


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """Per dimension: contiguous, chunked, and contiguous with the energies stored out of order."""
    folder = tmp_path_factory.mktemp("s19regread").resolve()
    out = {}
    for name, shape in SHAPES.items():
        phantom = make_drifted(shape, n_energies=7, seed=5, max_drift=3.0)
        for layout, kwargs in (("contiguous", {}), ("chunked", {"chunks": True})):
            out[name, layout] = folder / f"{name}_{layout}.h5"
            write_drifted_stack(out[name, layout], phantom, **kwargs)
        with h5py.File(out[name, "contiguous"], "r") as f:
            data, energy = f["exchange/data"][...], f["exchange/energy"][...]
        perm = np.array([3, 0, 6, 1, 5, 2, 4])
        out[name, "unsorted"] = folder / f"{name}_unsorted.h5"
        with h5py.File(out[name, "unsorted"], "w") as f:
            f["exchange/data"] = data[perm]
            f["exchange/energy"] = energy[perm]
    return out


@pytest.mark.parametrize("layout", ["contiguous", "chunked", "unsorted"])
@pytest.mark.parametrize("name", ["3d", "2d"])
def test_registered_slabs_equal_the_reference_bit_for_bit(stacks, name, layout):
    path = stacks[name, layout]
    info = open_stack(path)
    with h5py.File(path, "r") as f, direct_view(info, f) as direct:
        assert (direct is None) == (layout == "chunked")
    assert info.sorted == (layout != "unsorted")
    shifts = _shifts(info.ndim, info.shape[0], seed=len(name) + len(layout))
    n = info.n_slices
    whole = _reference(path, info, shifts, 0, n)
    assert np.isnan(whole).all() and whole.dtype == np.float32   # the energy beyond the field of view
    shifts[2, 0] = 2.25
    whole = _reference(path, info, shifts, 0, n)
    assert 0 < np.isnan(whole[0]).mean() < 0.9
    for slab in (1, 4, 7, n):
        got = np.concatenate([mu.copy() for _, _, mu in iter_slabs(info, slab, prefetch=True, shifts=shifts)], axis=1)
        assert got.dtype == whole.dtype and np.array_equal(got, whole, equal_nan=True), slab
    got = read_slab(info, 5, 9, shifts=shifts)
    assert np.array_equal(got, _reference(path, info, shifts, 5, 9), equal_nan=True)


@pytest.mark.parametrize("name", ["3d", "2d"])
def test_contiguous_and_chunked_registered_reads_are_identical(stacks, name):
    shifts = _shifts(len(SHAPES[name]), 7, seed=11)
    shifts[2, 0] = -1.5
    reads = [read_slab(open_stack(stacks[name, layout]), 0, SHAPES[name][0], shifts=shifts)
             for layout in ("contiguous", "chunked")]
    assert np.array_equal(*reads, equal_nan=True)
    assert np.isfinite(reads[0]).mean() > 0.3


def test_the_read_goes_through_the_descriptor_path(stacks, tmp_path):
    path = tmp_path / "scan.h5"
    path.write_bytes(stacks["3d", "contiguous"].read_bytes())
    fd = os.open(path, os.O_RDONLY)
    try:
        info = open_stack(f"/proc/self/fd/{fd}")
        shifts = _shifts(3, 7, seed=2)
        shifts[2, 0] = 0.5
        expected = read_slab(info, 0, 10, shifts=shifts)
        # the name now holds other values: the descriptor's file (moved away) is still the one read
        os.rename(path, tmp_path / "moved.h5")
        path.write_bytes(stacks["3d", "contiguous"].read_bytes())
        with h5py.File(path, "r+") as f:
            f["exchange/data"][...] = 7.0
        got = read_slab(info, 0, 10, shifts=shifts)
        assert np.array_equal(got, expected, equal_nan=True) and not np.isin(got, [7.0]).any()
        renamed = read_slab(open_stack(path), 0, 10, shifts=shifts)[np.isfinite(got)]
        assert renamed.size > 1000 and np.allclose(renamed, 7.0, rtol=1e-6)     # the name's file
    finally:
        os.close(fd)


def test_a_file_cut_short_is_one_line(stacks, tmp_path):
    path = tmp_path / "cut.h5"
    path.write_bytes(stacks["3d", "contiguous"].read_bytes())
    info = open_stack(path)
    shifts = _shifts(3, 7, seed=3)
    with h5py.File(path, "r") as f:               # open before the cut, as iter_slabs keeps it
        assert read_slab(info, 0, 4, h5file=f, shifts=shifts).shape == (7, 4, 26, 30)
        os.truncate(path, f[info.data_path].id.get_offset() + 5 * 23 * 26 * 30 * 4)   # energies 5, 6 cut
        with pytest.raises(InputError) as caught:
            read_slab(info, 0, 23, h5file=f, shifts=shifts)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: cannot read '/exchange/data' energy ")
    assert message.endswith("the file ends before its data; truncated?")
    with pytest.raises(InputError) as caught:     # opened after the cut: HDF5 sees it first
        read_slab(info, 0, 4, shifts=shifts)
    assert str(caught.value) == f"{path}: truncated HDF5 file (incomplete copy or download?)"


def test_the_view_keeps_its_names_in_the_catalogue_module():
    assert _ContiguousView is ContiguousView and _direct_view is direct_view


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("ndim", [2, 3])
def test_whole_planes_plan_gives_the_box_plans_numbers(order, ndim):
    from txmdb.analysis.registration import apply_shift_slab, read_plan
    from txmdb.io.hdf5 import _whole_planes

    rng = np.random.default_rng(order * 10 + ndim)
    spatial = (17, 19, 23)[-ndim:]
    raw = rng.standard_normal(spatial).astype(np.float32)
    for _ in range(60):
        shift = rng.uniform(-7, 7, ndim) * (rng.random(ndim) < 0.9)
        shift[rng.random(ndim) < 0.15] = rng.choice([-30.0, 30.0])    # the window wholly outside
        start = int(rng.integers(0, spatial[0] - 1))
        stop = int(rng.integers(start + 1, spatial[0] + 1))
        lo, hi = (start,) + (0,) * (ndim - 1), (stop,) + spatial[1:]
        plan = read_plan(shift, lo, hi, spatial, order=order)
        wide = _whole_planes(plan, spatial)
        assert wide.source[1:] == tuple(slice(0, n) for n in spatial[1:]) and wide.source[0] == plan.source[0]
        expected = apply_shift_slab(raw[plan.source], plan)
        got = apply_shift_slab(raw[wide.source], wide)
        assert np.array_equal(got, expected, equal_nan=True), (shift, start, stop)


def test_registered_cubic_reads_equal_the_reference(stacks):
    path = stacks["3d", "contiguous"]
    info = open_stack(path)
    shifts = _shifts(3, 7, seed=4)
    shifts[2, 0] = -2.75
    got = np.concatenate([mu.copy() for _, _, mu in iter_slabs(info, 5, prefetch=True, shifts=shifts, order=3)],
                         axis=1)
    with h5py.File(path, "r") as f:
        ref = registered_slab(f[info.data_path], shifts, (0, 0, 0), info.spatial_shape, order=3)
    from txmdb.io.hdf5 import _mask_outside

    _mask_outside(ref, shifts, tuple(info.spatial_shape), (0, 0, 0))
    assert np.array_equal(got, ref, equal_nan=True) and 0.2 < np.isfinite(got).mean() < 1


def test_two_threads_take_each_index_once_and_pass_errors_on():
    import threading

    from txmdb.io.hdf5 import _on_two_threads

    seen = []

    def run(items):
        for i in items:
            seen.append(i)

    _on_two_threads(run, 200)
    assert sorted(seen) == list(range(200))
    finished = []

    def failing(items):
        for i in items:
            if i == 3:
                raise OSError("boom")
        finished.append(threading.get_ident())

    with pytest.raises(OSError, match="boom"):
        _on_two_threads(failing, 50)
    assert len(finished) == 1                     # the other thread had finished when it raised
