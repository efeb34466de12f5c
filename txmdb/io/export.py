"""Write a stack, registered or as it is, in the TXM_Sandbox layout, slab by slab (DESIGN §4, §10).

The TXM_Sandbox layout is what NSLS-II FXI users carry on with in other tools::

    /registration_results/reg_results/registered_xanes3D   (n_energy, z, y, x)   or …2D (n_energy, y, x)
    /registration_results/reg_results/eng_list            (n_energy,)  keV, ascending

The stack is absorbance in the reader's working dtype (float32 for float32 stacks, float64
for absorbance computed from raw images), so that reading the file back gives exactly the
values the analysis of the original reads: an analysis of the export without a
registration equals the registered analysis of the original. Registered voxels whose
source lies outside the field of view at any energy are NaN at every energy. The voxel
size is the data set's ``voxel_size_nm`` attribute; ``txmdb_*`` attributes say where the
stack came from.

The file is written under a temporary name beside the destination and renamed when
complete (:func:`txmdb.io.files.atomic_output`); the space it needs is reserved first, so a
full disk fails before any work, with nothing left behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["sandbox_data_path", "write_sandbox_stack", "MAP_FORMATS", "map_format", "write_map"]

_GROUP = "/registration_results/reg_results"


def sandbox_data_path(ndim: int) -> str:
    """``…/registered_xanes3D`` or ``…/registered_xanes2D``."""
    return f"{_GROUP}/registered_xanes{int(ndim)}D"


def write_sandbox_stack(info, path: str | os.PathLike, *, registration=None, slab_size: int | None = None,
                        attrs: dict | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        before_commit: Callable[[], None] | None = None) -> Path:
    """Stream ``info``'s stack (registered with ``registration``) into a TXM_Sandbox file.

    Parameters
    ----------
    info : txmdb.io.hdf5.StackInfo
        The stack to read.
    path : path-like
        File to write (replaced atomically; nothing is left under its name on failure).
    registration : txmdb.pipeline.AppliedRegistration, optional
        Shifts applied while reading (:func:`txmdb.io.hdf5.read_slab`); None: the stack as
        it is (absorbance, energies ascending).
    slab_size : int, optional
        Slices per slab read and written; default the analysis' (~128 MB).
    attrs : dict, optional
        Extra attributes of the data set (provenance).
    progress : callable, optional
        ``progress(done, total)`` after each slab.
    before_commit : callable, optional
        Called once the file is written, before it is renamed onto ``path``: what it
        raises leaves nothing under ``path`` (the caller's last check of its input).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        The file cannot be written (no space, no permission…).
    """
    import h5py

    from txmdb.io.files import atomic_output, check_room
    from txmdb.io.hdf5 import iter_slabs
    from txmdb.pipeline import default_slab, registered_read, slab_bounds

    path = Path(path)
    dtype = info.dtype_work
    shape = tuple(info.shape)
    slab_size = slab_size or default_slab(info)
    total = len(slab_bounds(info, slab_size))
    check_room(path, n_bytes=int(np.prod(shape)) * dtype.itemsize)
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset(sandbox_data_path(info.ndim), shape=shape, dtype=dtype)
            f.create_dataset(f"{_GROUP}/eng_list", data=np.asarray(info.energies_ev, dtype=np.float64) / 1000.0)
            if info.voxel_size_nm:
                ds.attrs["voxel_size_nm"] = float(info.voxel_size_nm)
            for key, value in (attrs or {}).items():
                ds.attrs[key] = value
            slabs = iter_slabs(info, slab_size, prefetch=True, **registered_read(registration))
            for done, (start, stop, slab) in enumerate(slabs, 1):
                ds[:, start:stop] = slab
                if progress is not None:
                    progress(done, total)
        if before_commit is not None:
            before_commit()
    return path


# ------------------------------------------------------------------------------ one map (§11)
#: Suffixes of ``txm export --map`` files and the format each writes.
MAP_FORMATS = {".h5": "hdf5", ".hdf5": "hdf5", ".tif": "tiff", ".tiff": "tiff"}
#: Slices of a map read and written at a time (a 2048² float32 slice is 16 MB).
_MAP_SLAB_BYTES = 64 << 20


def map_format(path: str | os.PathLike) -> str:
    """``hdf5`` or ``tiff`` from the file name's suffix; ValueError for another."""
    suffix = Path(path).suffix.lower()
    if suffix not in MAP_FORMATS:
        raise ValueError(f"a map is written as {' or '.join(MAP_FORMATS)}; the name ends in {suffix or 'nothing'}")
    return MAP_FORMATS[suffix]


def write_map(results, name: str, path: str | os.PathLike, *, voxel_size_nm: float | None,
              attrs: dict | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """Stream map ``name`` of an open results file into ``path`` (HDF5 or TIFF by its suffix).

    - ``.h5``/``.hdf5``: data set ``/map``, float32, NaN where masked, attributes
      ``voxel_size_nm`` (NaN if unknown) and ``attrs`` (e.g. the analysis parameters as JSON);
    - ``.tif``/``.tiff``: an ImageJ hyperstack of float32 pages (one per slice along the first
      axis; one page for a 2-D map), NaN where masked, with the voxel size in the resolution
      tags (pixels per nm) and in ImageJ's ``unit``/``spacing``; ``attrs`` in its Info.

    Written slab by slab under a temporary name, renamed when complete; room is reserved first.

    Parameters
    ----------
    results : h5py.File
        The analysis' results file, open.
    name : str
        A map name (:mod:`txmdb.io.maps`).
    path : path-like
    voxel_size_nm : float, optional
    attrs : dict, optional
    progress : callable, optional
        ``progress(done, total)`` after each slab.

    Returns
    -------
    Path
    """
    from txmdb.io.maps import map_shape, map_slabs
    from txmdb.io.files import atomic_output, check_room

    path = Path(path)
    fmt = map_format(path)
    shape = map_shape(results, name)
    plane = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    rows = max(1, _MAP_SLAB_BYTES // (4 * plane))
    total = -(-shape[0] // rows)
    check_room(path, n_bytes=4 * int(np.prod(shape)))

    def slabs():
        for done, (start, stop, block) in enumerate(map_slabs(results, name, rows), 1):
            yield start, stop, block
            if progress is not None:
                progress(done, total)

    with atomic_output(path) as tmp:
        if fmt == "hdf5":
            _map_hdf5(tmp, shape, slabs(), voxel_size_nm=voxel_size_nm, attrs=attrs or {})
        else:
            _map_tiff(tmp, shape, slabs(), voxel_size_nm=voxel_size_nm, attrs=attrs or {})
    return path


def _map_hdf5(path: Path, shape, slabs, *, voxel_size_nm, attrs: dict) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        ds = f.create_dataset("map", shape=shape, dtype=np.float32)
        ds.attrs["voxel_size_nm"] = float(voxel_size_nm) if voxel_size_nm else np.nan
        for key, value in attrs.items():
            ds.attrs[key] = value
        for start, stop, block in slabs:
            ds[start:stop] = block


def _map_tiff(path: Path, shape, slabs, *, voxel_size_nm, attrs: dict) -> None:
    import tifffile

    metadata: dict = {"axes": "ZYX" if len(shape) == 3 else "YX",
                      "Info": "\n".join(f"{k} = {v}" for k, v in attrs.items())}
    extra: dict = {}
    if voxel_size_nm:
        # ImageJ reads the unit and z spacing from its description, other readers the
        # resolution tags: pixels per unit (the TIFF unit itself cannot say nm).
        metadata.update({"unit": "nm", "spacing": float(voxel_size_nm)} if len(shape) == 3 else {"unit": "nm"})
        extra["resolution"] = (1.0 / float(voxel_size_nm), 1.0 / float(voxel_size_nm))

    def pages():
        for _, _, block in slabs:
            if len(shape) == 2:
                yield block
            else:
                yield from block

    with tifffile.TiffWriter(path, imagej=True) as tif:
        tif.write(pages(), shape=shape, dtype=np.float32, metadata=metadata, **extra)
