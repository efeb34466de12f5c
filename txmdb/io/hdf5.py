"""TXM-XANES tomogram readers: HDF5 layouts, energy handling, slab-wise reads (DESIGN §4).

A stack is absorbance of shape ``(n_energy, [z,] y, x)`` plus its energy list. Three
layouts are recognised automatically (``data``/``energy`` override the paths):

========== ================================================ ==============================
layout     data set                                         energies
========== ================================================ ==============================
dxchange   ``/exchange/data`` (+ ``data_white``/``data_dark``) ``/exchange/energy``
txm-sandbox ``/registration_results/reg_results/registered_xanes3D`` (or ``…2D``)
                                                            ``…/reg_results/eng_list``
fxi        ``/img_xanes`` raw counts, ``/img_bkg``, ``/img_dark`` ``/X_eng``
========== ================================================ ==============================

Raw transmission images (fxi, dxchange with white/dark) become absorbance
``-ln((I - dark) / (white - dark))``. Energies below 100 are keV. The stack is never read
whole: :func:`read_slab` reads ``ds[:, z0:z1]`` (one hyperslab along the first spatial
axis) in the stack's working dtype (:attr:`StackInfo.dtype_work`: float32 for stored
float32 absorbance, float64 for float64 stacks and for absorbance computed from raw
images, so no precision is lost before the edge kernel) straight into its place
(energies out of order are read image by image into their sorted positions), optionally
into a reused buffer; :func:`iter_slabs` can prefetch the next slab in a background
thread. Every problem with a file raises
:class:`~txmdb.errors.InputError` naming the file and the problem.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numexpr as ne
import numpy as np

from txmdb.errors import InputError

__all__ = ["StackInfo", "LAYOUTS", "open_stack", "read_slab", "iter_slabs", "default_slab_size"]

_SANDBOX = "/registration_results/reg_results"

# layout -> (data candidates, energy path, white path, dark path); first existing data wins
LAYOUTS: dict[str, tuple[tuple[str, ...], str, str | None, str | None]] = {
    "dxchange": (("/exchange/data",), "/exchange/energy", "/exchange/data_white",
                 "/exchange/data_dark"),
    "txm-sandbox": ((f"{_SANDBOX}/registered_xanes3D", f"{_SANDBOX}/registered_xanes2D"),
                    f"{_SANDBOX}/eng_list", None, None),
    "fxi": (("/img_xanes",), "/X_eng", "/img_bkg", "/img_dark"),
}

# Attribute names holding the voxel size, in nm unless a unit attribute says otherwise.
_VOXEL_ATTRS = ("voxel_size_nm", "pixel_size_nm", "voxel_nm", "pixel_nm", "voxel_size",
                "pixel_size", "voxel_size_um", "pixel_size_um")
_UNIT_TO_NM = {"nm": 1.0, "um": 1e3, "µm": 1e3, "micron": 1e3, "microns": 1e3, "mm": 1e6,
               "m": 1e9}


@dataclass
class StackInfo:
    """What :func:`open_stack` learnt about a tomogram file; cheap, holds no voxel data.

    Attributes
    ----------
    path : Path
        The HDF5 file.
    layout : str
        ``"dxchange"``, ``"txm-sandbox"`` or ``"fxi"``.
    data_path, energy_path : str
        Data sets of the stack and of its energies.
    white_path, dark_path : str or None
        Flat-field and dark images of raw transmission data (absorbance computed on read).
    shape : tuple of int
        ``(n_energy, [z,] y, x)`` as on disk.
    dtype : str
        On-disk dtype of the stack.
    ndim : int
        Spatial dimensions, 2 or 3.
    energies_ev : ndarray, shape (n_energy,)
        Strictly increasing energies in eV.
    order : ndarray of int, shape (n_energy,)
        Permutation sorting the on-disk energy axis (``energies_ev = raw[order]``).
    voxel_size_nm : float or None
        Voxel edge length in nm, if known.
    """

    path: Path
    layout: str
    data_path: str
    energy_path: str
    white_path: str | None
    dark_path: str | None
    shape: tuple[int, ...]
    dtype: str
    ndim: int
    energies_ev: np.ndarray
    order: np.ndarray
    voxel_size_nm: float | None
    chunks: tuple[int, ...] | None = None    # HDF5 chunk shape of the stack, if chunked

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``([z,] y, x)``."""
        return self.shape[1:]

    @property
    def n_slices(self) -> int:
        """Length of the first spatial axis, the one slabs are cut along."""
        return self.shape[1]

    @property
    def dtype_work(self) -> np.dtype:
        """dtype slabs are read in: float32 when that holds the stored values exactly
        (float32/float16 absorbance, integers up to 16 bits), else float64 (float64 or
        wide-integer stacks, and absorbance computed from raw images with flats)."""
        exact32 = np.dtype(self.dtype) in (np.dtype(t) for t in (
            np.float32, np.float16, np.int8, np.uint8, np.int16, np.uint16))
        return np.dtype(np.float32 if exact32 and self.white_path is None else np.float64)

    @property
    def sorted(self) -> bool:
        """True when the on-disk energy axis is already ascending (no reorder needed)."""
        return bool(np.all(self.order == np.arange(self.order.size)))


def _open(path: Path) -> h5py.File:
    """Open read-only, turning every way an HDF5 file can be unreadable into InputError."""
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        # h5py says "file signature not found" for non-HDF5 and truncated-superblock
        # files, "truncated file" when the end of file is short of the stored EOF.
        detail = str(exc)
        if "truncated" in detail.lower():
            raise InputError(path, "truncated HDF5 file (incomplete copy or download?)") from None
        raise InputError(path, f"not a readable HDF5 file ({detail.split('(')[0].strip()})") from None


def _dataset(f: h5py.File, path: Path, name: str, what: str) -> h5py.Dataset:
    obj = f.get(name)
    if obj is None:
        raise InputError(path, f"missing {what} data set {name!r}")
    if not isinstance(obj, h5py.Dataset):
        raise InputError(path, f"{what} {name!r} is a group, not a data set")
    return obj


def _detect(f: h5py.File, path: Path) -> str:
    for layout, (data_paths, *_rest) in LAYOUTS.items():
        if any(isinstance(f.get(p), h5py.Dataset) for p in data_paths):
            return layout
    known = "; ".join(f"{name}: {cands[0]}" for name, (cands, *_r) in LAYOUTS.items())
    raise InputError(path, f"no known tomogram layout ({known}); give the data and energy "
                           f"data set paths explicitly")


def _energies(ds: h5py.Dataset, path: Path, n_expected: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted energies in eV and the permutation that sorts them."""
    try:
        raw = np.asarray(ds[()], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"energies {ds.name!r} are not numbers") from None
    if raw.ndim != 1:
        # (n, 1) and (1, n) columns from MATLAB-style writers are still a list
        if raw.ndim == 2 and 1 in raw.shape:
            raw = raw.ravel()
        else:
            raise InputError(path, f"energies {ds.name!r} have shape {raw.shape}, expected a 1-D list")
    if raw.size != n_expected:
        raise InputError(path, f"{raw.size} energies in {ds.name!r} but the stack has "
                               f"{n_expected} images along its first axis")
    if not np.all(np.isfinite(raw)):
        raise InputError(path, f"energies {ds.name!r} contain NaN or inf")
    if raw.size and np.all(raw < 100):
        raw = raw * 1000.0                       # keV -> eV (DESIGN §4)
    order = np.argsort(raw, kind="stable")
    energies = raw[order]
    dup = np.flatnonzero(np.diff(energies) <= 0)
    if dup.size:
        raise InputError(path, f"duplicate energy {energies[dup[0]]:g} eV in {ds.name!r}; "
                               f"energies must be distinct")
    return energies, order


def _attr_voxel_nm(objs) -> float | None:
    """First voxel-size attribute found on ``objs`` (data set, its parents, file), in nm."""
    for obj in objs:
        attrs = obj.attrs
        for name in _VOXEL_ATTRS:
            if name not in attrs:
                continue
            try:
                value = float(np.asarray(attrs[name]).ravel()[0])
            except (TypeError, ValueError, IndexError):
                continue
            if name.endswith("_um"):
                scale = 1e3
            elif name.endswith("_nm"):
                scale = 1.0
            else:
                unit = attrs.get(f"{name}_unit", attrs.get(f"{name}_units", attrs.get("units", "nm")))
                unit = unit.decode() if isinstance(unit, bytes) else str(unit)
                scale = _UNIT_TO_NM.get(unit.strip().lower(), 1.0)
            if math.isfinite(value) and value > 0:
                return value * scale
    return None


def open_stack(path: str | os.PathLike, *, layout: str = "auto", data: str | None = None,
               energy: str | None = None, voxel_nm: float | None = None,
               check_finite: bool = True) -> StackInfo:
    """Inspect a tomogram file: layout, shape, energies, voxel size.

    Parameters
    ----------
    path : path-like
        HDF5 file.
    layout : {"auto", "dxchange", "txm-sandbox", "fxi"}
        Layout; ``"auto"`` detects it from the data sets present.
    data, energy : str, optional
        Data set paths overriding the layout's (``--data``/``--energy``).
    voxel_nm : float, optional
        Voxel size in nm, overriding any attribute in the file.
    check_finite : bool
        Scan slabs until one voxel has a finite spectrum (normally the first slab);
        raises if the stack has none.

    Returns
    -------
    StackInfo

    Raises
    ------
    InputError
        Not HDF5, truncated, no known layout, missing data set, wrong rank, energy count
        different from the stack's first axis, duplicate or non-finite energies, flat or
        dark images not matching the stack, a stack without one finite voxel.
    """
    path = Path(path)
    with _open(path) as f:
        if layout == "auto":
            try:
                layout = _detect(f, path)
            except InputError:
                if data is None or energy is None:
                    raise
                layout = "dxchange"              # explicit paths: plain absorbance stack
        elif layout not in LAYOUTS:
            raise InputError(path, f"unknown layout {layout!r}; one of auto, {', '.join(LAYOUTS)}")
        data_cands, energy_path, white_path, dark_path = LAYOUTS[layout]
        if data is None:
            data = next((p for p in data_cands if isinstance(f.get(p), h5py.Dataset)), data_cands[0])
        energy_path = energy or energy_path
        ds = _dataset(f, path, data, "stack")
        try:
            _ = ds.shape
            readable = ds.dtype.kind in "fiu"
        except Exception:                        # noqa: BLE001 - corrupt object header
            raise InputError(path, f"stack {data!r} cannot be read") from None
        if not readable:
            raise InputError(path, f"stack {data!r} has non-numeric dtype {ds.dtype}")
        if ds.ndim not in (3, 4):
            raise InputError(path, f"stack {data!r} has rank {ds.ndim} {ds.shape}; expected "
                                   f"(n_energy, y, x) or (n_energy, z, y, x)")
        if min(ds.shape) == 0:
            raise InputError(path, f"stack {data!r} is empty {ds.shape}")
        energies, order = _energies(_dataset(f, path, energy_path, "energy"), path, ds.shape[0])

        # Flat/dark images only belong to the layout's own data set and only if present
        def aux(p):
            if p is None or not isinstance(f.get(p), h5py.Dataset):
                return None
            a = f[p]
            if a.ndim not in (ds.ndim, ds.ndim - 1) or a.shape[-(ds.ndim - 1):] != ds.shape[1:]:
                raise InputError(path, f"{p!r} has shape {a.shape}, not matching the stack "
                                       f"{ds.shape}")
            return p
        if layout == "fxi" and aux(white_path) is None:
            raise InputError(path, f"missing background data set {white_path!r} for raw FXI images")
        white = aux(white_path)
        dark = aux(dark_path) if white is not None else None

        if voxel_nm is None:
            parents = []
            obj = ds.parent
            while True:
                parents.append(obj)
                if obj.name == "/":
                    break
                obj = obj.parent
            voxel_nm = _attr_voxel_nm([ds, *parents])
        elif not (math.isfinite(voxel_nm) and voxel_nm > 0):
            raise InputError(path, f"voxel size must be a positive number of nm, got {voxel_nm}")

        info = StackInfo(path=path, layout=layout, data_path=data, energy_path=energy_path,
                         white_path=white, dark_path=dark, shape=tuple(ds.shape),
                         dtype=str(ds.dtype), ndim=ds.ndim - 1, energies_ev=energies,
                         order=order, voxel_size_nm=voxel_nm, chunks=ds.chunks)
        if check_finite:
            _require_finite_voxel(info, f)
    return info


def _require_finite_voxel(info: StackInfo, f: h5py.File) -> None:
    """Raise unless some voxel has a finite spectrum; usually decided by the first slab."""
    # small slabs: a normal file answers after reading a few MB
    step = default_slab_size(info, target_bytes=8 << 20)
    for _, _, slab in iter_slabs(info, step, h5file=f):
        if np.isfinite(slab).all(axis=0).any():
            return
    raise InputError(info.path, f"stack {info.data_path!r} has no voxel with a finite "
                                f"spectrum (all NaN/inf)")


def read_slab(info: StackInfo, start: int, stop: int, *, h5file: h5py.File | None = None,
              out: np.ndarray | None = None) -> np.ndarray:
    """Absorbance of spatial slab ``[start, stop)`` along the first spatial axis.

    Parameters
    ----------
    info : StackInfo
        From :func:`open_stack`.
    start, stop : int
        Range along the first spatial axis (z in 3D, y in 2D).
    h5file : h5py.File, optional
        An open handle of ``info.path`` (saves reopening per slab).
    out : ndarray, optional
        C-contiguous buffer of dtype ``info.dtype_work`` and shape
        ``(n_energy, stop - start, ...)`` to read into (reused between slabs: no page
        faults on a fresh array per slab).

    Returns
    -------
    ndarray of ``info.dtype_work``, shape (n_energy, stop - start, ...)
        ``out`` if given. Energies ascending (``info.energies_ev``). For raw images (fxi,
        dxchange with white/dark) ``-ln((I - dark) / (white - dark))``; non-positive
        ratios give NaN/inf, which the edge kernel masks.
    """
    if not 0 <= start < stop <= info.n_slices:
        raise ValueError(f"slab [{start}, {stop}) outside 0..{info.n_slices}")
    if h5file is None:
        with _open(info.path) as f:
            return read_slab(info, start, stop, h5file=f, out=out)
    shape = (info.shape[0], stop - start, *info.shape[2:])
    dtype = info.dtype_work
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {dtype} array of shape {shape}")
    f = h5file
    ds = f[info.data_path]
    try:
        # HDF5 converts the on-disk dtype to the working one while reading (no temporary).
        # Energies out of order are read one image at a time straight into their
        # sorted place, so no reordering copy is needed either.
        if info.sorted:
            ds.read_direct(out, np.s_[:, start:stop])
        else:
            for i, src in enumerate(info.order):
                ds.read_direct(out, np.s_[int(src), start:stop], np.s_[i])
    except OSError as exc:
        raise InputError(info.path, f"cannot read {info.data_path!r} slab {start}:{stop} "
                                    f"({str(exc).split('(')[0].strip()}); truncated or corrupt file?") from None
    if info.white_path is not None:
        white = _flat(f[info.white_path], start, stop, info)
        dark = _flat(f[info.dark_path], start, stop, info) if info.dark_path else dtype.type(0)
        if white.shape[0] > 1:                   # one flat per energy, on-disk order
            white = white[info.order]
        if np.ndim(dark) and dark.shape[0] > 1:
            dark = dark[info.order]
        # in place: the buffer becomes the absorbance
        with np.errstate(all="ignore"):
            ne.evaluate("-log((raw - dark) / (white - dark))",
                        local_dict={"raw": out, "dark": dark, "white": white}, out=out,
                        casting="unsafe")
    return out


def _flat(ds: h5py.Dataset, start: int, stop: int, info: StackInfo) -> np.ndarray:
    """White/dark images for the slab: per energy if there is one per energy, else the
    mean of the frames (an image without a frame axis is used as it is)."""
    n_spatial = info.ndim
    if ds.ndim == n_spatial:                     # a single image, no frame axis
        return ds[start:stop].astype(np.float64)[None]
    part = ds.astype(np.float64)[:, start:stop]
    if ds.shape[0] == info.shape[0]:
        return part                              # one flat per energy, on-disk order
    return part.mean(axis=0)[None]


def default_slab_size(info: StackInfo, target_bytes: int = 256 << 20) -> int:
    """Number of first-axis slices per slab so that one slab is ~``target_bytes``.

    Rounded down to a whole number of HDF5 chunks along that axis (at least one chunk), so
    that no chunk is decompressed twice.

    Parameters
    ----------
    info : StackInfo
    target_bytes : int
        Wanted size of one slab in the working dtype (the reader holds one, the kernel a few small
        per-voxel arrays besides).

    Returns
    -------
    int
        Between 1 and ``info.n_slices``.
    """
    per_slice = info.dtype_work.itemsize * info.shape[0] * int(np.prod(info.shape[2:], dtype=np.int64))
    n = max(1, int(target_bytes // max(per_slice, 1)))
    chunk = info.chunks[1] if info.chunks else None
    if chunk:
        n = max(chunk, n // chunk * chunk)
    return min(n, info.n_slices)


def iter_slabs(info: StackInfo, slab_size: int, *, h5file: h5py.File | None = None,
               prefetch: bool = False) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, slab)`` covering the first spatial axis in order.

    Parameters
    ----------
    info : StackInfo
    slab_size : int
        Slices per slab (see :func:`default_slab_size`).
    h5file : h5py.File, optional
        An open handle; otherwise the file is opened once for the whole iteration.
    prefetch : bool
        Read the next slab in a background thread while the caller works on the current
        one (h5py releases the GIL while HDF5 copies data, and numpy/BLAS work releases
        it too), into two preallocated buffers used in turn. **A slab yielded
        with prefetch is valid only until the next one is requested** (copy what must
        be kept). Without prefetch every slab is a fresh array.

    Yields
    ------
    start, stop : int
    slab : ndarray of ``info.dtype_work``, shape (n_energy, stop - start, ...)
    """
    if slab_size < 1:
        raise ValueError(f"slab_size must be >= 1, got {slab_size}")
    if h5file is None:
        with _open(info.path) as f:
            yield from iter_slabs(info, slab_size, h5file=f, prefetch=prefetch)
        return
    bounds = [(s, min(s + slab_size, info.n_slices)) for s in range(0, info.n_slices, slab_size)]
    if not prefetch or len(bounds) == 1:
        for start, stop in bounds:
            yield start, stop, read_slab(info, start, stop, h5file=h5file)
        return
    from concurrent.futures import ThreadPoolExecutor

    full = (info.shape[0], min(slab_size, info.n_slices), *info.shape[2:])
    buffers = [np.empty(full, dtype=info.dtype_work) for _ in range(2)]

    def read(i: int) -> np.ndarray:
        start, stop = bounds[i]
        buf = buffers[i % 2]
        # a shorter last slab: the leading part of the buffer, still C-contiguous
        # because the slab axis is the second one and is cut as a whole per energy
        view = buf.reshape(-1)[:info.shape[0] * (stop - start) * int(np.prod(info.shape[2:]))]
        return read_slab(info, start, stop, h5file=h5file,
                         out=view.reshape(info.shape[0], stop - start, *info.shape[2:]))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="txmdb-read") as pool:
        pending = pool.submit(read, 0)
        try:
            for i, (start, stop) in enumerate(bounds):
                slab = pending.result()
                # the other buffer is free again: the caller asked for this slab
                pending = pool.submit(read, i + 1) if i + 1 < len(bounds) else None
                yield start, stop, slab
        finally:
            if pending is not None:
                pending.cancel()
                try:
                    pending.result()             # never leave a read running on the handle
                except Exception:                # noqa: BLE001 - the caller's error wins
                    pass
