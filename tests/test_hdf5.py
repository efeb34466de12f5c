"""Tomogram readers (DESIGN §4): layouts, energies, overrides, voxel size, bad inputs."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from txmdb.errors import InputError
from txmdb.io.hdf5 import default_slab_size, iter_slabs, open_stack, read_slab
from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack
from tests.conftest import DATA

E = energy_grid(30, dense=(8330.0, 8350.0))


def _stack(shape, seed=0):
    edge, _ = particle_field(shape, kind="gravel", seed=seed, voxel_sigma_ev=0.0)
    return SyntheticStack(edge, E, noise=0.01, seed=seed)


@pytest.mark.parametrize("layout", ["dxchange", "txm-sandbox", "fxi"])
@pytest.mark.parametrize("shape", [(12, 16, 18), (16, 18)])
def test_layout_round_trip(tmp_path, layout, shape):
    st = _stack(shape)
    path = tmp_path / "s.h5"
    write_stack(path, st, E, layout=layout, voxel_size_nm=25.0,
                chunks=(5, *(4,) * len(shape)))
    info = open_stack(path)
    assert info.layout == layout and info.ndim == len(shape)
    assert info.shape == (E.size, *shape) and info.voxel_size_nm == 25.0
    np.testing.assert_allclose(info.energies_ev, E)      # keV layouts converted
    expect = np.asarray(st)
    got = np.concatenate([s for _, _, s in iter_slabs(info, 5)], axis=1)
    # raw images (fxi) become absorbance in float64: no rounding before the edge kernel
    assert got.dtype == (np.float64 if layout == "fxi" else np.float32) == info.dtype_work
    # fxi: absorbance goes through counts and back
    np.testing.assert_allclose(got, expect, atol=1e-5 if layout == "fxi" else 0)


def test_shuffled_energies_are_sorted_with_the_stack(tmp_path):
    st = _stack((10, 12))
    perm = np.random.default_rng(1).permutation(E.size)
    path = tmp_path / "shuffled.h5"
    write_stack(path, st, E, layout="dxchange", energy_order=perm)
    with h5py.File(path) as f:
        assert not np.all(np.diff(f["/exchange/energy"][()]) > 0)
    info = open_stack(path)
    np.testing.assert_array_equal(info.energies_ev, E)
    np.testing.assert_array_equal(read_slab(info, 2, 7), np.asarray(st)[:, 2:7])


def _write(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name.replace("__", "/")] = value
    return path


def test_kev_and_overrides(tmp_path):
    data = np.random.default_rng(0).random((E.size, 4, 5)).astype("f4")
    path = _write(tmp_path / "custom.h5", my__stack=data, my__kev=E / 1000)
    with pytest.raises(InputError, match="no known tomogram layout"):
        open_stack(path)
    info = open_stack(path, data="/my/stack", energy="/my/kev", voxel_nm=12.5)
    np.testing.assert_allclose(info.energies_ev, E)
    assert info.voxel_size_nm == 12.5
    np.testing.assert_array_equal(read_slab(info, 0, 4), data)


def test_voxel_size_attributes(tmp_path):
    data = np.ones((E.size, 3, 4), "f4")
    path = _write(tmp_path / "a.h5", exchange__data=data, exchange__energy=E)
    assert open_stack(path).voxel_size_nm is None
    with h5py.File(path, "a") as f:
        f.attrs["pixel_size"] = 0.03
        f.attrs["units"] = "um"
    assert open_stack(path).voxel_size_nm == pytest.approx(30.0)
    with h5py.File(path, "a") as f:
        f["/exchange/data"].attrs["pixel_size_nm"] = 40.0
    assert open_stack(path).voxel_size_nm == 40.0                 # data set wins over file


def test_dxchange_white_dark(tmp_path):
    mu = np.random.default_rng(0).uniform(0.1, 2, (E.size, 3, 4)).astype("f4")
    white = np.full((2, 3, 4), 1000.0, "f4")
    dark = np.full((1, 3, 4), 10.0, "f4")
    counts = (990.0 * np.exp(-mu) + 10.0).astype("f4")
    path = _write(tmp_path / "raw.h5", exchange__data=counts, exchange__energy=E,
                  exchange__data_white=white, exchange__data_dark=dark)
    info = open_stack(path)
    assert info.white_path == "/exchange/data_white" and info.dark_path == "/exchange/data_dark"
    np.testing.assert_allclose(read_slab(info, 0, 3), mu, atol=1e-5)


def test_slab_size_aligned_to_chunks(tmp_path):
    path = tmp_path / "c.h5"
    write_stack(path, _stack((40, 20, 20)), E, chunks=(E.size, 6, 20, 20))
    info = open_stack(path)
    assert info.chunks == (E.size, 6, 20, 20)
    n = default_slab_size(info, target_bytes=4 * E.size * 400 * 15)
    assert n == 12                                       # 15 slices -> two whole chunks
    assert default_slab_size(info, target_bytes=1) == 6  # never below one chunk
    assert default_slab_size(info, target_bytes=1 << 40) == 40


# ---------------------------------------------------------------------- bad inputs
def _assert_input_error(path, match, **kw):
    with pytest.raises(InputError, match=match) as exc:
        open_stack(path, **kw)
    assert str(path) in str(exc.value)          # one line naming the file
    assert "\n" not in str(exc.value)


def test_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("this is not HDF5\n" * 100)
    _assert_input_error(path, "not a readable HDF5 file")
    _assert_input_error(tmp_path / "missing.h5", "file not found")


def test_truncated(tmp_path):
    src = tmp_path / "full.h5"
    write_stack(src, _stack((10, 12, 14)), E)
    raw = src.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated|not a readable|cannot read") as exc:
        open_stack(cut)
    assert str(cut) in str(exc.value)


def test_missing_dataset(tmp_path):
    path = _write(tmp_path / "m.h5", exchange__data=np.ones((E.size, 3, 4), "f4"))
    _assert_input_error(path, "missing energy data set '/exchange/energy'")
    _assert_input_error(path, "missing stack data set '/nope'", data="/nope", energy="/x")


def test_wrong_rank(tmp_path):
    path = _write(tmp_path / "r.h5", exchange__data=np.ones((E.size, 5), "f4"),
                  exchange__energy=E)
    _assert_input_error(path, "rank 2")


def test_energy_count_mismatch(tmp_path):
    path = _write(tmp_path / "n.h5", exchange__data=np.ones((E.size, 3, 4), "f4"),
                  exchange__energy=E[:-1])
    _assert_input_error(path, f"{E.size - 1} energies .* {E.size} images")


def test_duplicate_and_nonfinite_energies(tmp_path):
    dup = E.copy()
    dup[5] = dup[6]
    path = _write(tmp_path / "d.h5", exchange__data=np.ones((E.size, 3, 4), "f4"),
                  exchange__energy=dup)
    _assert_input_error(path, "duplicate energy")
    bad = E.copy()
    bad[3] = np.nan
    path = _write(tmp_path / "f.h5", exchange__data=np.ones((E.size, 3, 4), "f4"),
                  exchange__energy=bad)
    _assert_input_error(path, "NaN or inf")


def test_no_finite_voxel(tmp_path):
    data = np.full((E.size, 6, 4, 4), np.nan, "f4")
    data[3] = 1.0                                # finite at one energy only: still bad
    path = _write(tmp_path / "nan.h5", exchange__data=data, exchange__energy=E)
    _assert_input_error(path, "no voxel with a finite spectrum")
    data[:, 5, 3, 3] = 1.0                       # one good voxel in the last slice is enough
    path = _write(tmp_path / "one.h5", exchange__data=data, exchange__energy=E)
    assert open_stack(path).shape == data.shape


def test_golden_file_opens():
    info = open_stack(DATA / "golden" / "rod40.h5")
    assert info.layout == "dxchange" and info.voxel_size_nm == 30.0
    assert info.shape == (52, 40, 40, 40) and info.chunks == (13, 10, 10, 10)


@pytest.mark.parametrize("layout", ["dxchange", "fxi"])
def test_prefetch_and_out_buffer_read_the_same(tmp_path, layout):
    # shuffled energies + per-energy flats (fxi): read straight into sorted places
    st = _stack((11, 6, 7))
    perm = np.random.default_rng(2).permutation(E.size)
    path = tmp_path / "s.h5"
    write_stack(path, st, E, layout=layout, energy_order=perm, chunks=(5, 4, 4, 4))
    info = open_stack(path)
    assert not info.sorted
    expect = np.asarray(st)
    plain = np.concatenate([s for _, _, s in iter_slabs(info, 4)], axis=1)
    # prefetch reuses two buffers: copy each slab before asking for the next
    pre = [(a, b, s.copy()) for a, b, s in iter_slabs(info, 4, prefetch=True)]
    assert [(a, b) for a, b, _ in pre] == [(0, 4), (4, 8), (8, 11)]
    np.testing.assert_array_equal(np.concatenate([s for *_, s in pre], axis=1), plain)
    np.testing.assert_allclose(plain, expect, atol=1e-5 if layout == "fxi" else 0)
    buf = np.full((E.size, 3, 6, 7), np.nan, info.dtype_work)
    assert read_slab(info, 2, 5, out=buf) is buf
    np.testing.assert_array_equal(buf, plain[:, 2:5])
    with pytest.raises(ValueError, match="C-contiguous float"):
        read_slab(info, 2, 6, out=buf)


def test_float64_stacks_are_read_in_float64(tmp_path):
    # a float64 stack keeps its precision up to the edge kernel (float64-exact edges)
    data = np.random.default_rng(0).random((E.size, 3, 4, 5))
    path = _write(tmp_path / "f64.h5", exchange__data=data, exchange__energy=E)
    info = open_stack(path)
    assert info.dtype_work == np.float64
    np.testing.assert_array_equal(read_slab(info, 0, 3), data)
    for dtype, work in (("f4", np.float32), ("u2", np.float32), ("i4", np.float64), ("f2", np.float32)):
        path = _write(tmp_path / f"{dtype}.h5", exchange__data=(data * 100).astype(dtype), exchange__energy=E)
        assert open_stack(path).dtype_work == work, dtype
        assert read_slab(open_stack(path), 0, 2).dtype == work
