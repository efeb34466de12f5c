"""Registration speed, session 19: the estimate's reads and transforms, the same numbers.

- ``_rfftn`` / ``_irfftn_at`` (pocketfft without the zero padding's lines, and only the
  inverse's outputs the bounded search reads) equal ``scipy.fft.rfftn`` / ``irfftn`` bit for bit;
- the estimate's module imports neither ``scipy.fft`` (until its first transform) nor ``scipy.ndimage``;
- ``_ContiguousView`` (``os.preadv`` from a contiguous stack) gives h5py's boxes, and a file
  cut short under it is a one-line error;
- ``txm register`` of a contiguous stack (read by ``_ContiguousView``) and of the same stack
  chunked (read by h5py) store the same shifts and qualities, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from scipy import fft as sfft

from tests.test_register_cli import _ingest, _registered, _rows
import txmdb.analysis.registration as reg
from txmdb.catalog.registration import _ContiguousView, _direct_view
from txmdb.errors import InputError
from txmdb.io.hdf5 import AbsorbanceView, open_stack
from txmdb.synthetic.drift import make_drifted, write_drifted_stack


@pytest.mark.parametrize("seed", range(6))
def test_pruned_transforms_equal_scipy_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    for trial in range(25):
        shape = tuple(int(v) for v in rng.integers(9, 60, 2 + trial % 2))
        m = int(rng.integers(1, 12))
        r = int(rng.integers(1, m + 1))
        size = [sfft.next_fast_len(n + m + 1, real=True) for n in shape]
        dtype = (np.float32, np.float64)[trial % 3 == 0]
        a, b = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
        workers = 1 + trial % 2
        spectra = [sfft.rfftn(x, size, workers=workers) for x in (a, b)]
        for x, expected in zip((a, b), spectra):
            got = reg._rfftn(x, size, workers)
            assert got.dtype == expected.dtype and np.array_equal(got, expected)
        product = np.conj(spectra[0]) * spectra[1]
        centre = rng.integers(-(m - r), m - r + 1, len(shape))
        idx = [np.arange(c - r, c + r + 1) for c in centre]
        expected = sfft.irfftn(product, size, workers=workers)[np.ix_(*[i % n for i, n in zip(idx, size)])]
        got = reg._irfftn_at(product, size, idx, workers)
        assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_the_estimate_module_does_not_import_scipy_fft_or_ndimage():
    code = ("import sys, txmdb.analysis.registration as r; r._numba(); "
            "print(sorted(m for m in sys.modules if m.startswith(('scipy.fft', 'scipy.ndimage', "
            "'scipy.special')))); print(r._fft().__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "scipy.fft"]


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """A 3-D and a 2-D drifted stack, each contiguous and chunked (the same values)."""
    folder = tmp_path_factory.mktemp("s19reads").resolve()
    out = {}
    for name, shape in (("3d", (56, 60, 64)), ("2d", (40, 48))):
        phantom = make_drifted(shape, n_energies=8, seed=3, max_drift=3.0)
        for layout, kwargs in (("contiguous", {}), ("chunked", {"chunks": True})):
            path = folder / f"{name}_{layout}.h5"
            write_drifted_stack(path, phantom, **kwargs)
            out[name, layout] = path
    return out


@pytest.mark.parametrize("name", ["3d", "2d"])
def test_contiguous_view_reads_what_h5py_reads(stacks, name):
    path = stacks[name, "contiguous"]
    info = open_stack(path)
    rng = np.random.default_rng(0)
    with h5py.File(path, "r") as f, _direct_view(info, f) as direct:
        assert isinstance(direct, _ContiguousView)
        plain = AbsorbanceView(info, f)
        spatial = info.spatial_shape
        for _ in range(40):
            e = int(rng.integers(0, info.shape[0]))
            box = []
            for k, n in enumerate(spatial):
                lo = int(rng.integers(0, n - 1))
                hi = int(rng.integers(lo + 1, n + 1))
                box.append(slice(lo, hi, int(rng.integers(1, 5)) if k == 0 else None))
            box[-1] = slice(0, spatial[-1]) if rng.random() < 0.3 else box[-1]
            key = (e, *box)
            got, expected = direct[key], plain[key]
            assert got.dtype == expected.dtype and np.array_equal(got, expected, equal_nan=True)
    with h5py.File(stacks[name, "chunked"], "r") as f, _direct_view(open_stack(stacks[name, "chunked"]), f) as none:
        assert none is None                          # chunked: h5py reads it


def test_a_file_cut_under_the_view_is_one_line(stacks, tmp_path):
    path = tmp_path / "cut.h5"
    path.write_bytes(stacks["3d", "contiguous"].read_bytes())
    info = open_stack(path)
    with h5py.File(path, "r") as f, _direct_view(info, f) as direct:
        assert direct[0, 0:4, 0:8, 0:8].shape == (4, 8, 8)
        os.truncate(path, f[info.data_path].id.get_offset() + 1000)
        with pytest.raises(InputError) as caught:
            direct[7, 50:56, 0:60, 0:64]
    assert str(caught.value) == (f"{path}: cannot read '/exchange/data' energy 7: the file ends before its data; "
                                 f"truncated?")


@pytest.mark.parametrize("name", ["3d", "2d"])
def test_register_contiguous_and_chunked_store_the_same_shifts(cli, stacks, name):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    rows = {}
    for layout in ("contiguous", "chunked"):
        scan = _ingest(cli, stacks[name, layout])
        rows[layout] = _rows(cli, _registered(cli, scan))
    keys = ["energy_index", "shift_z", "shift_y", "shift_x", "quality"]
    assert len(rows["contiguous"]) == 8
    assert [[r[k] for k in keys] for r in rows["contiguous"]] == [[r[k] for k in keys] for r in rows["chunked"]]
    assert any(abs(r["shift_x"]) > 0.5 for r in rows["contiguous"])
