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

Hostile files fail fast, before any data is read (limits in :mod:`txmdb.vocabulary`):

- paths are resolved link by link, inside the file only: an external link is refused, a
  soft-link loop is named, and no path walks more than ``MAX_PATH_DEPTH`` groups;
- a data set whose bytes live elsewhere (external raw storage, or a virtual data set,
  even one whose sources are in the same file) is refused with a hint to make a
  self-contained copy, since the file's SHA-256 is what vouches for the analysed data;
  this runs at ingest and again whenever an analysis re-opens the file;
- every data set that is read must store what it declares: a contiguous one all its
  bytes, a chunked one every chunk of its grid (a missing chunk would read back as fill
  value: a few-KB file could declare terabytes), at most ``MAX_EXPANSION`` declared bytes
  per stored byte, chunks of at most ``MAX_CHUNK_BYTES``, and HDF5 filters this HDF5 can
  decode; work and memory therefore grow with the file's real size, never its claims;
- energies (and flat frames) are at most ``MAX_ENERGIES``, one slice along the slab axis
  at most ``MAX_SLICE_VALUES`` values, attributes at most ``MAX_ATTRIBUTE_VALUES``, and a
  voxel size lies between ``VOXEL_NM_MIN`` and ``VOXEL_NM_MAX`` nm.
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
from txmdb.vocabulary import (
    FINITE_SCAN_BYTES, FINITE_SCAN_CHUNKS, MAX_ATTRIBUTE_BYTES, MAX_ATTRIBUTE_VALUES, MAX_CHUNK_BYTES, MAX_ENERGIES,
    MAX_EXPANSION, MAX_PATH_DEPTH, MAX_SLICE_VALUES, MAX_SOFT_LINKS, VOXEL_NM_MAX, VOXEL_NM_MIN,
)

__all__ = ["StackInfo", "LAYOUTS", "open_stack", "read_slab", "iter_slabs", "default_slab_size", "registration_shifts",
           "voxel_size_problem", "AbsorbanceView"]

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


_SELF_CONTAINED = ("make a self-contained copy (e.g. `h5repack --merge -l CONTI IN OUT` copies linked, "
                   "external and virtual data into OUT) and ingest that")


def _lookup(f: h5py.File, path: Path, name: str):
    """The object at ``name``, following hard and soft links inside the file only; None if absent.

    Walked one link at a time instead of letting HDF5 resolve the path: an external link
    (whose object lives in another file, outside the SHA-256 that identifies this one) is
    refused rather than followed, and a soft-link loop is named rather than ending in
    HDF5's RuntimeError. Hard-link cycles are harmless: only the named path is walked.
    """
    pending = [part for part in name.split("/") if part not in ("", ".")]
    group, hops, steps = f, 0, 0
    while pending:
        steps += 1
        if steps > MAX_PATH_DEPTH:
            raise InputError(path, f"{name!r} is more than {MAX_PATH_DEPTH} groups deep")
        part = pending.pop(0)
        if not isinstance(group, h5py.Group):
            return None                              # a data set has no members
        try:
            link = group.get(part, getlink=True)
        except (KeyError, ValueError, RuntimeError, OSError, TypeError):
            raise InputError(path, f"cannot resolve {name!r} (corrupt link?)") from None
        if link is None:
            return None
        if isinstance(link, h5py.SoftLink):
            hops += 1
            if hops > MAX_SOFT_LINKS:
                raise InputError(path, f"{name!r}: soft links form a loop (more than {MAX_SOFT_LINKS} "
                                       f"followed)")
            if link.path.startswith("/"):
                group = f
            pending = [part for part in link.path.split("/") if part not in ("", ".")] + pending
            continue
        if isinstance(link, h5py.ExternalLink):
            raise InputError(path, f"{name!r} is an external link to {link.path!r} in {link.filename}: its "
                                   f"bytes live outside this file; {_SELF_CONTAINED}")
        if not isinstance(link, h5py.HardLink):
            raise InputError(path, f"{name!r} is a user-defined link, which txmdb does not follow; "
                                   f"{_SELF_CONTAINED}")
        try:
            group = group[part]
        except (KeyError, ValueError, RuntimeError, OSError, TypeError):
            raise InputError(path, f"cannot open {name!r} (corrupt object header?)") from None
    return group


def _dataset(f: h5py.File, path: Path, name: str, what: str) -> h5py.Dataset:
    """The data set at ``name``, whose bytes are in this file (not yet checked: their amount)."""
    obj = _lookup(f, path, name)
    if obj is None:
        raise InputError(path, f"missing {what} data set {name!r}")
    if not isinstance(obj, h5py.Dataset):
        kind = "a group" if isinstance(obj, h5py.Group) else "a named data type"
        raise InputError(path, f"{what} {name!r} is {kind}, not a data set")
    _require_inside(obj, path, what)
    return obj


def _require_inside(ds: h5py.Dataset, path: Path, what: str) -> None:
    """Refuse a data set whose bytes live outside the file: external raw storage or virtual.

    Virtual data sets are refused even when their sources are in this file: their bytes
    are then another data set's, whose own storage would need the same checks, and no
    tomogram writer produces them.
    """
    try:
        external, virtual = ds.external, ds.is_virtual
    except (OSError, RuntimeError, ValueError, TypeError):
        raise InputError(path, f"{what} {ds.name!r} cannot be read (corrupt object header?)") from None
    if external:
        raise InputError(path, f"{what} {ds.name!r} keeps its bytes in {external[0][0]!r}, outside this "
                               f"file; {_SELF_CONTAINED}")
    if virtual:
        raise InputError(path, f"{what} {ds.name!r} is a virtual data set (its bytes live in other data "
                               f"sets or files); {_SELF_CONTAINED}")


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:,} bytes"


def _require_stored(ds: h5py.Dataset, path: Path, what: str, *, fill_ok: bool = False) -> None:
    """Refuse a data set that does not hold what it declares, before reading any of it.

    Reading never costs more than the file's real size allows: every chunk present (an
    absent one reads back as fill value), no more than MAX_EXPANSION declared bytes per
    stored byte, chunks of bounded size, and only filters this HDF5 can decode.
    ``fill_ok``: the data set may be left unwritten, all fill value (a constant dark often
    is), because reading it costs no more than reading the stack beside it.
    """
    name = ds.name
    try:
        plist = ds.id.get_create_plist()
        filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]  # (code, flags, values, name)
        layout = plist.get_layout()
        stored = ds.id.get_storage_size()
        n_chunks = ds.id.get_num_chunks() if layout == h5py.h5d.CHUNKED else None
        offset = ds.id.get_offset() if layout == h5py.h5d.CONTIGUOUS else None
    except (OSError, RuntimeError, ValueError, TypeError):
        raise InputError(path, f"{what} {name!r} cannot be read (corrupt object header or chunk "
                               f"index?)") from None
    for code, _flags, _values, label in filters:
        if not h5py.h5z.filter_avail(code):
            label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            raise InputError(path, f"{what} {name!r} needs HDF5 filter {code} ({label!r}), which this HDF5 "
                                   f"cannot decode; install its plugin (HDF5_PLUGIN_PATH) or store the data "
                                   f"without it")
    declared = ds.size * ds.dtype.itemsize
    file_size = path.stat().st_size
    if layout == h5py.h5d.CHUNKED:
        chunk_bytes = math.prod(ds.chunks) * ds.dtype.itemsize
        if chunk_bytes > MAX_CHUNK_BYTES:
            raise InputError(path, f"{what} {name!r} has chunks of {_size(chunk_bytes)} {ds.chunks}, more than "
                                   f"the {_size(MAX_CHUNK_BYTES)} txmdb decompresses at once")
        grid = math.prod(-(-n // c) for n, c in zip(ds.shape, ds.chunks))
        if n_chunks < grid and not fill_ok:
            raise InputError(path, f"{what} {name!r} declares {_size(declared)} in {grid:,} chunks but the file "
                                   f"stores only {n_chunks:,} of them (an interrupted write, or a crafted file)")
        if declared > MAX_EXPANSION * stored and not (fill_ok and n_chunks < grid):
            raise InputError(path, f"{what} {name!r} declares {_size(declared)} stored in {stored:,} bytes, "
                                   f"more than {MAX_EXPANSION}:1 (compression of real data stays far below; "
                                   f"a decompression bomb?)")
        if stored > file_size:
            raise InputError(path, f"{what} {name!r} claims {_size(stored)} of chunks in a file of "
                                   f"{_size(file_size)} (truncated or corrupt)")
    elif layout == h5py.h5d.CONTIGUOUS and (offset is not None or not fill_ok):
        if stored < declared or offset is None:
            raise InputError(path, f"{what} {name!r} declares {_size(declared)} but the file stores "
                                   f"{_size(stored)} of it (never written, or a crafted file)")
        if offset + stored > file_size:
            raise InputError(path, f"{what} {name!r} lies beyond the end of the file ({_size(offset + stored)} "
                                   f"of {_size(file_size)}: truncated or corrupt)")
    # a compact data set is held in its object header, which HDF5 has read already


def _detect(f: h5py.File, path: Path) -> str:
    for layout, (data_paths, *_rest) in LAYOUTS.items():
        if any(isinstance(_lookup(f, path, p), h5py.Dataset) for p in data_paths):
            return layout
    known = "; ".join(f"{name}: {cands[0]}" for name, (cands, *_r) in LAYOUTS.items())
    raise InputError(path, f"no known tomogram layout ({known}); give the data and energy "
                           f"data set paths explicitly")


def _energies(ds: h5py.Dataset, path: Path, n_expected: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted energies in eV and the permutation that sorts them.

    Type, shape and storage are checked on the declaration; only then is the list (at most
    MAX_ENERGIES numbers, as the stack's first axis is) read.
    """
    if ds.dtype.kind not in "fiu":
        raise InputError(path, f"energies {ds.name!r} are not numbers (HDF5 type {ds.dtype})")
    shape = ds.shape or ()                       # None: an empty (null) dataspace
    # (n, 1) and (1, n) columns from MATLAB-style writers are still a list
    if len(shape) != 1 and not (len(shape) == 2 and 1 in shape):
        raise InputError(path, f"energies {ds.name!r} have shape {ds.shape}, expected a 1-D list")
    if math.prod(shape) != n_expected:
        raise InputError(path, f"{math.prod(shape)} energies in {ds.name!r} but the stack has "
                               f"{n_expected} images along its first axis")
    _require_stored(ds, path, "energy")
    try:
        raw = np.asarray(ds[()], dtype=np.float64).ravel()
    except (TypeError, ValueError, OSError):
        raise InputError(path, f"energies {ds.name!r} cannot be read as numbers") from None
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


def voxel_size_problem(nm: float) -> str | None:
    """What is wrong with a voxel size of ``nm`` nanometres, or None if it is plausible."""
    if math.isfinite(nm) and VOXEL_NM_MIN <= nm <= VOXEL_NM_MAX:
        return None
    return f"voxel size {nm} nm is outside {VOXEL_NM_MIN:g} nm – {VOXEL_NM_MAX / 1e6:g} mm"


def _small_attr(obj, name: str, path: Path):
    """Attribute ``name`` of ``obj`` if it is one value or a few (sized before it is read); None if unreadable."""
    try:
        aid = obj.attrs.get_id(name)
        count, nbytes = math.prod(aid.shape or ()), aid.get_storage_size()
    except (KeyError, OSError, RuntimeError, ValueError, TypeError):
        return None
    if count > MAX_ATTRIBUTE_VALUES or nbytes > MAX_ATTRIBUTE_BYTES:
        raise InputError(path, f"attribute {name!r} of {obj.name!r} holds {count:,} values in {nbytes:,} "
                               f"bytes; a voxel size or its unit is one value")
    try:
        return obj.attrs[name]
    except (KeyError, OSError, RuntimeError, ValueError, TypeError):
        return None


def _attr_voxel_nm(objs, path: Path) -> float | None:
    """First voxel-size attribute found on ``objs`` (data set, its parents, file), in nm.

    Zero, negative and non-numbers are "unknown" (writers put 0 when they do not know); a
    positive size outside VOXEL_NM_MIN..VOXEL_NM_MAX is refused, not guessed around.
    """
    for obj in objs:
        for name in _VOXEL_ATTRS:
            if name not in obj.attrs:
                continue
            try:
                value = float(np.asarray(_small_attr(obj, name, path)).ravel()[0])
            except (TypeError, ValueError, IndexError):
                continue
            if name.endswith("_um"):
                scale = 1e3
            elif name.endswith("_nm"):
                scale = 1.0
            else:
                unit = next((u for key in (f"{name}_unit", f"{name}_units", "units") if key in obj.attrs
                             and (u := _small_attr(obj, key, path)) is not None), "nm")
                unit = unit.decode(errors="replace") if isinstance(unit, bytes) else str(unit)
                scale = _UNIT_TO_NM.get(unit.strip().lower(), 1.0)
            if math.isfinite(value) and value > 0:
                if problem := voxel_size_problem(value * scale):
                    raise InputError(path, f"attribute {name!r} of {obj.name!r}: {problem}")
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
        dark images not matching the stack, a stack without one finite voxel; and, before
        anything is read, data outside the file (external links or storage, virtual data
        sets), data sets storing less than they declare, undecodable filters, soft-link
        loops, sizes beyond the limits of :mod:`txmdb.vocabulary`, an implausible voxel size.
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
            data = next((p for p in data_cands if isinstance(_lookup(f, path, p), h5py.Dataset)), data_cands[0])
        energy_path = energy or energy_path
        ds = _dataset(f, path, data, "stack")
        try:
            shape = ds.shape or ()               # None: an empty (null) dataspace
            readable = ds.dtype.kind in "fiu"
            labels = h5py.check_enum_dtype(ds.dtype)
        except Exception:                        # noqa: BLE001 - corrupt object header
            raise InputError(path, f"stack {data!r} cannot be read") from None
        if ds.dtype.subdtype is not None:        # an HDF5 array type: several values per voxel
            raise InputError(path, f"stack {data!r} has {ds.dtype.shape} values per element (HDF5 array of "
                                   f"{ds.dtype.base}); expected one number per voxel")
        if not readable:
            raise InputError(path, f"stack {data!r} has non-numeric dtype {ds.dtype}")
        if labels is not None:                   # an HDF5 enum: names of states, not measured values
            raise InputError(path, f"stack {data!r} holds enumerated labels (HDF5 enum of {ds.dtype}), "
                                   "not measured numbers")
        if len(shape) not in (3, 4):
            raise InputError(path, f"stack {data!r} has rank {len(shape)} {ds.shape}; expected "
                                   f"(n_energy, y, x) or (n_energy, z, y, x)")
        if min(shape) == 0:
            raise InputError(path, f"stack {data!r} is empty {shape}")
        _require_stored(ds, path, "stack")
        if shape[0] > MAX_ENERGIES:
            raise InputError(path, f"stack {data!r} has {shape[0]:,} images along its energy axis, more "
                                   f"than the {MAX_ENERGIES:,} txmdb accepts")
        energies, order = _energies(_dataset(f, path, energy_path, "energy"), path, shape[0])

        def aux(p, what):
            """Flat/dark images only belong to the layout's own data set and only if present."""
            a = None if p is None else _lookup(f, path, p)
            if not isinstance(a, h5py.Dataset):
                return None, 0
            _require_inside(a, path, what)
            if a.dtype.kind not in "fiu":
                raise InputError(path, f"{what} {p!r} has non-numeric dtype {a.dtype}")
            if a.ndim not in (ds.ndim, ds.ndim - 1) or a.shape[-(ds.ndim - 1):] != shape[1:]:
                raise InputError(path, f"{p!r} has shape {a.shape}, not matching the stack "
                                       f"{shape}")
            frames = a.shape[0] if a.ndim == ds.ndim else 1
            if not 0 < frames <= MAX_ENERGIES:
                raise InputError(path, f"{what} {p!r} has {frames:,} frames; expected 1 to {MAX_ENERGIES:,}")
            # unwritten (fill value) is fine while it costs no more to read than the stack
            _require_stored(a, path, what, fill_ok=frames <= shape[0])
            return p, frames
        white, white_frames = aux(white_path, "flat-field")
        if layout == "fxi" and white is None:
            raise InputError(path, f"missing background data set {white_path!r} for raw FXI images")
        dark, dark_frames = aux(dark_path, "dark") if white is not None else (None, 0)
        # one slice along the slab axis, with the flat frames read beside it, is read whole
        values = (shape[0] + white_frames + dark_frames) * math.prod(shape[2:])
        if values > MAX_SLICE_VALUES:
            flats = " with its flat/dark frames" if white_frames + dark_frames else ""
            raise InputError(path, f"one slice of stack {data!r} {shape} holds {values:,} values{flats}, more "
                                   f"than the {MAX_SLICE_VALUES:,} txmdb reads at once")

        if voxel_nm is None:
            parents = []
            obj = ds.parent
            while True:
                parents.append(obj)
                if obj.name == "/":
                    break
                obj = obj.parent
            voxel_nm = _attr_voxel_nm([ds, *parents], path)
        elif problem := voxel_size_problem(voxel_nm):
            raise InputError(path, problem)

        info = StackInfo(path=path, layout=layout, data_path=data, energy_path=energy_path,
                         white_path=white, dark_path=dark, shape=tuple(ds.shape),
                         dtype=str(ds.dtype), ndim=ds.ndim - 1, energies_ev=energies,
                         order=order, voxel_size_nm=voxel_nm, chunks=ds.chunks)
        if check_finite:
            _require_finite_voxel(info, f)
    return info


def _require_finite_voxel(info: StackInfo, f: h5py.File) -> None:
    """Raise unless some voxel has a finite spectrum; usually decided by the first slab read.

    Slabs are read from the middle of the stack outwards (registration leaves NaN at its
    borders), within FINITE_SCAN_BYTES and FINITE_SCAN_CHUNKS: exact for any stack that
    fits, and a larger one still undecided is accepted rather than scanned for minutes.
    """
    if _finite_in_middle_chunk(info, f):
        return
    # small slabs: a normal file answers after reading a few MB, and no slab reads more than
    # a 16th of the chunk budget (a slab of tiny chunks costs time, not memory)
    step = default_slab_size(info, target_bytes=8 << 20)
    if info.chunks:
        rows = FINITE_SCAN_CHUNKS // 16 // _chunks_touched(info, 0, 1)
        step = max(1, min(step, rows * info.chunks[1]))
    bounds = [(s, min(s + step, info.n_slices)) for s in range(0, info.n_slices, step)]
    middle = len(bounds) // 2
    order = sorted(range(len(bounds)), key=lambda i: abs(i - middle))
    spent_bytes = spent_chunks = 0
    for i in order:
        if spent_bytes >= FINITE_SCAN_BYTES or spent_chunks >= FINITE_SCAN_CHUNKS:
            return
        start, stop = bounds[i]
        slab = read_slab(info, start, stop, h5file=f)
        if np.isfinite(slab).all(axis=0).any():
            return
        spent_bytes += slab.nbytes
        spent_chunks += _chunks_touched(info, start, stop)
    raise InputError(info.path, f"stack {info.data_path!r} has no voxel with a finite "
                                f"spectrum (all NaN/inf)")


def _finite_in_middle_chunk(info: StackInfo, f: h5py.File) -> bool:
    """Whether the chunk in the middle of a chunked stack holds a voxel with a finite spectrum.

    One chunk read (17.7 MB for (60, 8, 96, 96) float32) answers for a usual chunked stack,
    where the first slab of :func:`_require_finite_voxel` reads a whole row of chunks (160 MB
    of the 272³ one, 0.5 s). False — undecided — for other stacks, raw images, energies out
    of order, or a read error (the slab scan then reports it).
    """
    if not info.chunks or not info.sorted or info.white_path is not None:
        return False
    box = tuple(slice(n // 2 // c * c, min(n // 2 // c * c + c, n)) for n, c in zip(info.shape[1:], info.chunks[1:]))
    block = np.empty((info.shape[0], *(s.stop - s.start for s in box)), dtype=info.dtype_work)
    try:
        _stack_dataset(f, info).read_direct(block, (slice(None), *box))
    except OSError:
        return False
    return bool(np.isfinite(block).all(axis=0).any())


def _chunks_touched(info: StackInfo, start: int, stop: int) -> int:
    """HDF5 chunks of the stack that slab ``[start, stop)`` reads (0 if not chunked)."""
    if not info.chunks:
        return 0
    per_row = math.prod(-(-n // c) for k, (n, c) in enumerate(zip(info.shape, info.chunks)) if k != 1)
    return ((stop - 1) // info.chunks[1] - start // info.chunks[1] + 1) * per_row


#: Largest chunk cache given to a stack's data set (twice its chunk): chunks above half this
#: are read with HDF5's default cache.
_MAX_CHUNK_CACHE = 256 << 20


def _stack_dataset(f: h5py.File, info: "StackInfo") -> h5py.Dataset:
    """The stack's data set, with a chunk cache that holds two of its chunks.

    HDF5's default cache is 1 MB: an uncompressed chunk larger than that is read piece by
    piece, one read per contiguous run of the selection (46,080 reads of 384 bytes for a
    (60, 8, 96, 96) float32 chunk), which took 6x the CPU of reading it whole into the
    cache and copying it out (measured on the 272³ × 60 stack in such chunks).
    """
    chunk_bytes = np.dtype(info.dtype).itemsize * math.prod(info.chunks) if info.chunks else 0
    if not (1 << 20) < chunk_bytes <= _MAX_CHUNK_CACHE // 2:
        return f[info.data_path]
    # opened with its own access list (an open made with f[...] first would keep the default)
    access = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    access.set_chunk_cache(101, 2 * chunk_bytes, 1.0)   # fully read chunks leave first
    return h5py.Dataset(h5py.h5d.open(f.id, info.data_path.encode(), dapl=access))


def read_slab(info: StackInfo, start: int, stop: int, *, h5file: h5py.File | None = None,
              out: np.ndarray | None = None, shifts: np.ndarray | None = None,
              order: int = 1) -> np.ndarray:
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
    shifts : ndarray, shape (n_energy, ndim), optional
        A registration (DESIGN §10), rows in ascending-energy order: read the slab of the
        *registered* stack instead (see :func:`_read_registered`), ``[start, stop)`` in
        the reference frame. A separate path: the plain read is untouched.
    order : {1, 3}
        Interpolation of the shifts' fractional parts (linear, Keys cubic).

    Returns
    -------
    ndarray of ``info.dtype_work``, shape (n_energy, stop - start, ...)
        ``out`` if given. Energies ascending (``info.energies_ev``). For raw images (fxi,
        dxchange with white/dark) ``-ln((I - dark) / (white - dark))``; non-positive
        ratios give NaN/inf, which the edge kernel masks. Registered: NaN at every energy
        for voxels whose source lies outside the field of view at any energy.
    """
    if not 0 <= start < stop <= info.n_slices:
        raise ValueError(f"slab [{start}, {stop}) outside 0..{info.n_slices}")
    if h5file is None:
        with _open(info.path) as f:
            return read_slab(info, start, stop, h5file=f, out=out, shifts=shifts, order=order)
    shape = (info.shape[0], stop - start, *info.shape[2:])
    dtype = info.dtype_work
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {dtype} array of shape {shape}")
    f = h5file
    if shifts is not None:
        return _read_registered(info, start, stop, f, out, shifts, order)
    ds = _stack_dataset(f, info)
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
        raise _read_error(info, start, stop, exc) from None
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


def _read_error(info: StackInfo, start: int, stop: int, exc: OSError) -> InputError:
    return InputError(info.path, f"cannot read {info.data_path!r} slab {start}:{stop} "
                                 f"({str(exc).split('(')[0].strip()}); truncated or corrupt file?")


def registration_shifts(info: StackInfo, shifts) -> np.ndarray:
    """``shifts`` as a float64 ``(n_energy, ndim)`` array, checked against the stack."""
    arr = np.asarray(shifts, dtype=np.float64)
    want = (info.shape[0], info.ndim)
    if arr.shape != want:
        raise ValueError(f"a registration of shape {arr.shape} does not fit the stack: one shift of "
                         f"{info.ndim} axes per energy {want} was expected")
    if not np.isfinite(arr).all():
        raise ValueError("the registration's shifts contain NaN or inf")
    return arr


def _read_registered(info: StackInfo, start: int, stop: int, f: h5py.File, out: np.ndarray,
                     shifts, order: int) -> np.ndarray:
    """Slab ``[start, stop)`` of the registered stack, ``registered_e(x) = mu_e(x + s_e)``.

    Per energy, only that energy's source box is read: the window moved by ``floor(s_e)``
    plus the interpolation halo (:func:`txmdb.analysis.registration.read_plan`); its
    fractional part is applied by the finite stencil of
    :func:`~txmdb.analysis.registration.apply_shift_slab`, so every output voxel is
    bit-identical whatever the slab partition. Absorbance stacks are read box by box into
    one reused buffer; raw images become absorbance in the lab frame first
    (:class:`AbsorbanceView`: sample, flat and dark images are all taken there), then the
    absorbance is shifted. Voxels whose source is outside the field of view at any energy
    (:func:`~txmdb.analysis.registration.valid_box`) are NaN at every energy.
    """
    from txmdb.analysis.registration import apply_shift_slab, read_plan

    shifts = registration_shifts(info, shifts)
    spatial = tuple(info.spatial_shape)
    lo = (start,) + (0,) * (info.ndim - 1)
    hi = (stop,) + spatial[1:]
    plans = [read_plan(s, lo, hi, spatial, order=order) for s in shifts]
    if info.white_path is not None:
        view = AbsorbanceView(info, f)
        for i, plan in enumerate(plans):
            apply_shift_slab(view[(i, *plan.source)], plan, out=out[i])
        return _mask_outside(out, shifts, spatial, lo)
    # absorbance on disk: each box straight into a reused buffer, as the plain read does
    # (3x faster here than a converting read through AbsorbanceView), the energies on two
    # threads: the shift is compiled and releases the GIL, and a contiguous stack is read by
    # preadv without h5py's lock, so reads and shifts run at once (one thread was the
    # registered analysis' limit: 272³ x 60, 0.65 CPU-s reading and 0.62 shifting per pass)
    from txmdb.io.contiguous import direct_view

    with direct_view(info, f) as direct:
        if direct is not None:
            plans = [_whole_planes(plan, spatial) for plan in plans]
        ds = f[info.data_path]
        sizes = [math.prod(s.stop - s.start for s in plan.source) for plan in plans]

        def run(energies) -> None:
            buffer = np.empty(max(sizes), dtype=info.dtype_work)
            for i in energies:
                plan = plans[i]
                block = buffer[:sizes[i]].reshape([s.stop - s.start for s in plan.source])
                if direct is not None:
                    direct.read_planes(i, plan.source[0].start, plan.source[0].stop, block)
                else:
                    ds.read_direct(block, (int(info.order[i]), *plan.source))
                apply_shift_slab(block, plan, out=out[i])

        try:
            _on_two_threads(run, len(plans))
        except OSError as exc:
            raise _read_error(info, start, stop, exc) from None
    return _mask_outside(out, shifts, spatial, lo)


def _whole_planes(plan, spatial: tuple[int, ...]):
    """``plan`` reading whole planes of the first axis (one run of bytes per energy in a
    contiguous stack): its box widened to the field of view on the other axes, each tap's
    index moved with it. Bit-identical: a box starts after 0 only where nothing was padded
    before it, and taps clamped to the box's end clamp to the field of view's, so every tap
    reads the same voxel."""
    import dataclasses

    first = plan.first[:1] + tuple(f + s.start for f, s in zip(plan.first[1:], plan.source[1:]))
    source = plan.source[:1] + tuple(slice(0, n) for n in spatial[1:])
    return dataclasses.replace(plan, source=source, first=first)


def _on_two_threads(run, n: int) -> None:
    """``run(items)`` here and on a helper thread, both taking ``0 .. n-1`` from one shared
    iterator (each index once; whichever thread is free takes the next, so both finish
    together); both finished on return (the first error raised)."""
    if n < 2:
        run(iter(range(n)))
        return
    from concurrent.futures import ThreadPoolExecutor

    items = iter(range(n))                       # next() on it is one atomic call under the GIL
    with ThreadPoolExecutor(1, thread_name_prefix="txmdb-read-2") as pool:
        other = pool.submit(run, items)
        run(items)                               # on an error, leaving the pool waits for other
        other.result()


def _mask_outside(out: np.ndarray, shifts: np.ndarray, spatial: tuple[int, ...], lo: tuple[int, ...]) -> np.ndarray:
    """NaN at every energy for the voxels of the window starting at ``lo`` whose source is
    outside the field of view at some energy."""
    from txmdb.analysis.registration import valid_box

    valid_lo, valid_hi = valid_box(shifts, spatial)
    for axis, (a, n, v_lo, v_hi) in enumerate(zip(lo, out.shape[1:], valid_lo, valid_hi)):
        cut = [slice(None)] * out.ndim
        cut[axis + 1] = slice(0, min(max(v_lo - a, 0), n))
        out[tuple(cut)] = np.nan
        cut[axis + 1] = slice(max(min(v_hi - a, n), 0), n)
        out[tuple(cut)] = np.nan
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


class AbsorbanceView:
    """The stack as absorbance, one energy's box at a time: ``view[e, z0:z1, y0:y1, x0:x1]``.

    ``e`` indexes the sorted energies (``info.energies_ev``); only that box of that image,
    and of its flat and dark images for raw layouts, is read. For readers that work energy
    by energy on a window (registration: ``read_window``, ``registered_slab``), where
    :func:`read_slab` would read every energy.

    Parameters
    ----------
    info : StackInfo
    h5file : h5py.File
        An open handle of ``info.path``, kept open while the view is used.
    """

    def __init__(self, info: StackInfo, h5file: h5py.File):
        self.info = info
        self.shape = info.shape
        self.ndim = len(info.shape)
        self.dtype = info.dtype_work
        self._file = h5file

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        energy, box = key[0], tuple(key[1:])
        if not isinstance(energy, (int, np.integer)):
            raise TypeError("the first index of an AbsorbanceView is one energy")
        info = self.info
        frame = int(info.order[energy])
        try:
            out = self._file[info.data_path].astype(self.dtype)[(frame, *box)]
            if info.white_path is None:
                return out
            white = self._aux(info.white_path, frame, box)
            dark = self._aux(info.dark_path, frame, box) if info.dark_path else 0.0
        except OSError as exc:
            raise InputError(info.path, f"cannot read {info.data_path!r} energy {energy} "
                                        f"({str(exc).split('(')[0].strip()}); truncated or corrupt file?") from None
        with np.errstate(all="ignore"):
            return ne.evaluate("-log((raw - dark) / (white - dark))",
                               local_dict={"raw": out, "dark": dark, "white": white}).astype(self.dtype)

    def _aux(self, path: str, frame: int, box: tuple) -> np.ndarray:
        """Flat or dark over ``box``: the energy's own frame, else the frames' mean (as :func:`_flat`)."""
        ds = self._file[path]
        read = ds.astype(np.float64)
        if ds.ndim == self.info.ndim:
            return read[box]
        if ds.shape[0] == self.info.shape[0]:
            return read[(frame, *box)]
        return read[(slice(None), *box)].mean(axis=0)


def default_slab_size(info: StackInfo, target_bytes: int = 256 << 20) -> int:
    """Number of first-axis slices per slab so that one slab is ~``target_bytes``.

    Rounded down to a whole number of HDF5 chunks along that axis (at least one chunk), so
    that no chunk is decompressed twice (unless one chunk's depth of slices exceeds both
    ``target_bytes`` and ``MAX_CHUNK_BYTES``: memory stays bounded).

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
    # whole chunks, unless chunks deep along this axis would make one slab huge
    if chunk and chunk * per_slice <= max(target_bytes, MAX_CHUNK_BYTES):
        n = max(chunk, n // chunk * chunk)
    return min(n, info.n_slices)


def iter_slabs(info: StackInfo, slab_size: int, *, h5file: h5py.File | None = None,
               prefetch: bool = False, shifts: np.ndarray | None = None,
               order: int = 1) -> Iterator[tuple[int, int, np.ndarray]]:
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
    shifts, order : optional
        Slabs of the registered stack (see :func:`read_slab`); with prefetch the
        interpolation runs in the reading thread too (and in its one helper thread: the
        energies are shared between the two).

    Yields
    ------
    start, stop : int
    slab : ndarray of ``info.dtype_work``, shape (n_energy, stop - start, ...)
    """
    if slab_size < 1:
        raise ValueError(f"slab_size must be >= 1, got {slab_size}")
    if h5file is None:
        with _open(info.path) as f:
            yield from iter_slabs(info, slab_size, h5file=f, prefetch=prefetch, shifts=shifts, order=order)
        return
    bounds = [(s, min(s + slab_size, info.n_slices)) for s in range(0, info.n_slices, slab_size)]
    if not prefetch or len(bounds) == 1:
        for start, stop in bounds:
            yield start, stop, read_slab(info, start, stop, h5file=h5file, shifts=shifts, order=order)
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
        return read_slab(info, start, stop, h5file=h5file, shifts=shifts, order=order,
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
