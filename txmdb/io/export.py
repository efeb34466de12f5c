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

__all__ = ["sandbox_data_path", "write_sandbox_stack"]

_GROUP = "/registration_results/reg_results"


def sandbox_data_path(ndim: int) -> str:
    """``…/registered_xanes3D`` or ``…/registered_xanes2D``."""
    return f"{_GROUP}/registered_xanes{int(ndim)}D"


def write_sandbox_stack(info, path: str | os.PathLike, *, registration=None, slab_size: int | None = None,
                        attrs: dict | None = None,
                        progress: Callable[[int, int], None] | None = None) -> Path:
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
    return path
