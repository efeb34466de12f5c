"""Registration speed, session 21 (issue 10, item 7; docs/registration.md): the same numbers
with fewer fresh pages.

- the coarse level of a contiguous stack is binned plane by plane straight from the read
  buffer (``ContiguousView.plane_rows``): ``read_window`` gives what it gives from the same
  values held in memory, for boxes off the origin, partial blocks, every bin and a NaN
  voxel (the usual path then);
- the per-voxel medians over energies, sorted in blocks of columns, are the whole stack's
  (``_template``'s gain-scaled median, the fixed pattern's NaN median, the leave-one-out
  medians), across several blocks and a partial last one;
- the standard error's float64 images, converted once by the threads, give the products of
  the float32 ones.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import txmdb.analysis.registration as reg
from txmdb.io.contiguous import ContiguousView, direct_view
from txmdb.io.hdf5 import open_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A contiguous float32 stack, a NaN voxel in energy 2 (in plane 20: read by every window below)."""
    rng = np.random.default_rng(21)
    data = (rng.standard_normal((3, 40, 37, 45)) * 2 + 5).astype(np.float32)
    data[2, 20, 20, 12] = np.nan
    path = tmp_path_factory.mktemp("s21").resolve() / "stack.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/exchange/data", data=data)
        f.create_dataset("/exchange/energy", data=np.array([8300.0, 8340.0, 8380.0]))
    return path, data


@pytest.mark.parametrize("window", [reg.Window((0, 0, 0), (40, 37, 45), 6, 1),
                                    reg.Window((3, 5, 2), (38, 36, 44), 4, 1),
                                    reg.Window((1, 2, 9), (40, 37, 45), 3, 1),
                                    reg.Window((0, 0, 0), (40, 37, 45), 2, 1)],
                         ids=["bin6", "bin4-box", "bin3-box", "bin2"])
def test_coarse_planes_from_the_file_are_binned_as_in_memory(stack, window):
    path, data = stack
    info = open_stack(path)
    with h5py.File(path, "r") as f, direct_view(info, f) as view:
        assert isinstance(view, ContiguousView)
        for e in range(data.shape[0]):
            got = reg.read_window(view, e, window)
            want = reg.read_window(data, e, window)
            assert got.dtype == np.float32 and got.shape == window.shape
            assert got.tobytes() == want.tobytes()
        # the NaN voxel's bin is the mean of its block's finite voxels (the usual path's count)
        assert np.isfinite(reg.read_window(view, 2, window)).all()


def test_plane_rows_are_the_planes_box(stack):
    path, data = stack
    info = open_stack(path)
    with h5py.File(path, "r") as f, direct_view(info, f) as view:
        into = np.full(40 * 45, -1.0, dtype=np.float32)
        rows = view.plane_rows(1, 17, ((3, 33), (4, 41)), into)
        assert rows.shape == (30, 45) and rows.flags.c_contiguous and np.shares_memory(rows, into)
        assert np.array_equal(rows[:, :37], data[1, 17, 3:33, 4:41])


@pytest.mark.parametrize("columns", [1, 4000, 4001, 9000])
def test_medians_in_blocks_of_columns_are_the_whole_stacks(monkeypatch, columns):
    rng = np.random.default_rng(columns)
    n = 11
    regs = rng.standard_normal((n, columns)).astype(np.float32)
    gains = rng.uniform(0.5, 2.0, n)
    resid = regs.copy()
    resid[rng.random(resid.shape) < 0.2] = np.nan
    resid[:, 0] = np.nan                               # a voxel no energy covers

    def results():
        box = ((0,), (columns,))
        zero = np.zeros(n)
        template = reg._template(regs, np.zeros((n, 1)), gains, zero, zero, np.zeros(columns, np.float32), box,
                                 1)[0]
        loo = reg._loo_median_template(regs)
        return template, reg._median_pattern(resid), [loo(e) for e in range(n)]

    blocked = results()
    monkeypatch.setattr(reg, "_SORT_COLUMNS", 10 ** 9)    # one block per thread: the whole columns
    whole = results()
    assert blocked[0].tobytes() == whole[0].tobytes()
    assert blocked[1].tobytes() == whole[1].tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(blocked[2], whole[2]))
    # and the medians are numpy's
    scaled = regs / gains.astype(np.float32)[:, None]
    assert np.array_equal(whole[0], np.median(scaled, axis=0).astype(np.float32))
    with pytest.warns(RuntimeWarning, match="All-NaN"):
        assert np.array_equal(whole[1], np.nan_to_num(np.nanmedian(resid, axis=0)).astype(np.float32))


@pytest.mark.parametrize("shape", [(60, 7, 9, 11), (5, 40, 41), (3, 1)])
def test_images_widened_once_give_the_products_of_the_float32_ones(shape):
    # the standard error's products take the float64 images made once by the threads: the
    # values numpy's own cast gives, so the same weighted sums to the bit
    rng = np.random.default_rng(len(shape))
    regs = rng.standard_normal(shape).astype(np.float32)
    weights = rng.uniform(0.1, 2.0, shape[0])
    wide = reg._widened(regs)
    assert wide.dtype == np.float64 and wide.shape == regs.shape
    assert wide.tobytes() == regs.astype(np.float64).tobytes()
    assert np.tensordot(weights, wide, axes=1).tobytes() == np.tensordot(weights, regs, axes=1).tobytes()
    near = [0, shape[0] - 1]
    assert (np.tensordot(weights[near], wide[near], axes=1).tobytes()
            == np.tensordot(weights[near], regs[near], axes=1).tobytes())
