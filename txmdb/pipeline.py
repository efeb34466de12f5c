"""Out-of-core TXM-XANES analysis of one stack: edge map → particles → gradient statistics.

:func:`analyze_stack` reads the stack slab by slab along its first spatial axis (never
whole), runs the edge kernel on each slab and writes the edge map, jump map, validity
mask and particle label map into one results HDF5 file — through
:func:`~txmdb.io.files.atomic_output`, so a failure leaves no file behind. The edge map
of even a 20-million-voxel scan is small (160 MB in float64), so the particle and
gradient steps work on it in memory, the gradient kernel in halo-padded slabs of the
binned map (the same kernel a Dask worker would run on its slab).

It returns the statistics tables of DESIGN §5 as pandas DataFrames, one per key of
:data:`txmdb.db.models.STATISTICS_TABLES`, with exactly that model's columns minus ``id``
and ``analysis_id``. ``particle`` is a nullable ``Int64`` column (``<NA>`` = whole scan)
and missing float values are NaN; :func:`table_records` turns a table into plain Python
rows with ``None`` for both, ready for a bulk insert.

Results file layout (``results_path``)::

    /edge_ev   float32 (spatial)   half-height edge energy, eV, NaN where masked
    /jump      float32 (spatial)   edge jump J
    /valid     bool    (spatial)   edge-kernel validity (before particle filtering)
    /labels    int32   (spatial)   particle label, 0 outside particles
    /energies_ev float64 (n_energy)
    attrs: txmdb_version, layout, source, voxel_size_nm (NaN if unknown), gradient_unit,
           parameters (JSON), n_particles
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd

from txmdb.analysis.edge import EdgeKernel, EdgeParameters
from txmdb.analysis.gradient import (
    bin_edge_map,
    block_centroids,
    gradient_statistics,
    map_gradient_vectors,
    u_histogram_edges,
)
from txmdb.analysis.particles import (
    depth_map,
    depth_profiles,
    edge_histogram_edges,
    edge_histograms,
    label_particles,
    particle_moments,
    particle_table,
)
from txmdb.errors import InputError
from txmdb.io.files import atomic_output

__all__ = ["AnalysisOptions", "AnalysisOutputs", "analyze_stack", "analysis_parameters",
           "table_records", "TABLE_NAMES"]

TABLE_NAMES = ("particles", "edge_histograms", "depth_profiles", "theta_histograms",
               "gradient_summaries", "vector_size_stats", "vector_size_histograms",
               "u_theta_profiles")

# Bytes of float32 stack held per slab in flight; several slabs are in flight with
# workers > 1, so the default slab shrinks with the number of workers.
_SLAB_BYTES = 192 << 20


@dataclass
class AnalysisOptions:
    """Parameters of one analysis (all stored with it in the catalogue).

    Attributes
    ----------
    params : EdgeParameters
        Energy windows and masking thresholds of the edge kernel.
    bin_factors : tuple of int
        Binning factors ``f`` of the gradient statistics.
    theta_bins : int
        θ bins over 0–180° (36 → 5°).
    min_particle_voxels : int, optional
        Smallest particle; default 1000 voxels in 3D, 100 in 2D.
    slab_size : int, optional
        Slices of the first spatial axis per slab read; default ~192 MB of float32 stack
        divided among the workers. Results do not depend on it.
    workers : int
        Slabs processed concurrently by the edge step (threads: h5py reads are serialised
        by its global lock, but the kernel's BLAS and numexpr work releases the GIL, so
        one slab is read while others are computed).
    precision : {"float32", "float64"}
        Arithmetic of the edge kernel. float32 (default) is faster and its edge energies
        differ from float64 ones by a few µeV; float64 reproduces the independent
        reference implementation (``shared/golden``) bit for bit in θ counts.
    """

    params: EdgeParameters
    bin_factors: tuple[int, ...] = (1, 2, 3)
    theta_bins: int = 36
    min_particle_voxels: int | None = None
    slab_size: int | None = None
    workers: int = 1
    precision: Literal["float32", "float64"] = "float32"

    def __post_init__(self) -> None:
        self.bin_factors = tuple(int(f) for f in self.bin_factors)
        if not self.bin_factors or min(self.bin_factors) < 1:
            raise ValueError(f"binning factors must be integers >= 1, got {self.bin_factors}")
        if len(set(self.bin_factors)) != len(self.bin_factors):
            raise ValueError(f"binning factors repeat: {self.bin_factors}")
        if self.theta_bins < 1:
            raise ValueError(f"theta bins must be >= 1, got {self.theta_bins}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.slab_size is not None and self.slab_size < 1:
            raise ValueError(f"slab size must be >= 1, got {self.slab_size}")
        if self.precision not in ("float32", "float64"):
            raise ValueError(f"precision is float32 or float64, got {self.precision!r}")


@dataclass
class AnalysisOutputs:
    """What :func:`analyze_stack` returns.

    Attributes
    ----------
    tables : dict of str to DataFrame
        One per key of ``STATISTICS_TABLES`` (see the module docstring).
    n_valid_voxels : int
        Voxels in particles (valid edge energy and in a component of at least
        ``min_particle_voxels``); ``mean_edge_ev``/``std_edge_ev`` (population std) are
        over the same voxels.
    n_particles : int
    mean_edge_ev, std_edge_ev : float
        NaN when there is no particle.
    gradient_unit : str
        ``"eV/nm"``, or ``"eV/voxel"`` when the voxel size is unknown.
    timings_s : dict of str to float
        Wall time of the steps ``edge`` (read + kernel + write), ``particles``,
        ``gradient``, ``write`` and ``total``.
    """

    tables: dict[str, pd.DataFrame]
    n_valid_voxels: int
    n_particles: int
    mean_edge_ev: float
    std_edge_ev: float
    gradient_unit: str
    timings_s: dict[str, float] = field(default_factory=dict)


def analysis_parameters(options: AnalysisOptions, *, voxel_size_nm: float | None) -> dict[str, Any]:
    """The full parameter set of an analysis as JSON-able dict (for ``Analysis.parameters``)."""
    return {
        "edge": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options.params).items()},
        "bin_factors": list(options.bin_factors),
        "theta_bins": options.theta_bins,
        "min_particle_voxels": options.min_particle_voxels,
        "precision": options.precision,
        "voxel_size_nm": voxel_size_nm,
    }


def table_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a statistics table as dicts of plain Python values, ``None`` for NA/NaN."""
    cols = {}
    for name in table.columns:
        col = table[name]
        if isinstance(col.dtype, pd.Int64Dtype):
            cols[name] = [None if v is pd.NA else int(v) for v in col.array]
        elif col.dtype == bool:
            cols[name] = col.tolist()
        elif np.issubdtype(col.dtype, np.integer):
            cols[name] = col.astype(np.int64).tolist()
        else:
            cols[name] = [None if v != v else float(v) for v in col.tolist()]
    return [dict(zip(cols, values)) for values in zip(*cols.values())]


# --------------------------------------------------------------------------- edge step
def _edge_slabs(info, kernel: EdgeKernel, slab_size: int, workers: int, dtype: np.dtype):
    """Yield ``(start, stop, EdgeResult)`` in slab order.

    With ``workers > 1`` a thread pool reads and computes up to ``workers`` slabs ahead;
    results still come out in order, so they never depend on the number of workers.
    """
    import h5py

    from txmdb.io.hdf5 import read_slab

    bounds = [(s, min(s + slab_size, info.n_slices)) for s in range(0, info.n_slices, slab_size)]
    lock = threading.Lock()  # one h5py handle shared by the threads

    with h5py.File(info.path, "r") as f:
        def work(start: int, stop: int):
            with lock:
                mu = read_slab(info, start, stop, h5file=f)
            if mu.dtype != dtype:
                mu = mu.astype(dtype)
            return kernel(mu)

        if workers == 1:
            for start, stop in bounds:
                yield start, stop, work(start, stop)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="txmdb-edge") as pool:
            pending: deque = deque()
            it = iter(bounds)
            for start, stop in it:
                pending.append((start, stop, pool.submit(work, start, stop)))
                if len(pending) >= workers:
                    break
            while pending:
                start, stop, fut = pending.popleft()
                result = fut.result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((*nxt, pool.submit(work, *nxt)))
                yield start, stop, result


def analyze_stack(info, options: AnalysisOptions, *, results_path: Path,
                  progress: Callable[[int, int], None] | None = None) -> AnalysisOutputs:
    """Edge map, particles and valence-gradient statistics of one tomogram.

    Parameters
    ----------
    info : txmdb.io.hdf5.StackInfo
        The stack, from :func:`txmdb.io.hdf5.open_stack`.
    options : AnalysisOptions
    results_path : Path
        Results HDF5 file to write (replaced atomically; no file on failure).
    progress : callable, optional
        ``progress(done, total)`` after each unit of work: one per slab of the edge step,
        one for the particle step and one per binning factor.

    Returns
    -------
    AnalysisOutputs

    Raises
    ------
    InputError
        A window of ``options.params`` with too few energies of this stack, or a read
        error of the stack.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    spatial = tuple(info.spatial_shape)
    ndim = len(spatial)
    d = info.voxel_size_nm if info.voxel_size_nm and math.isfinite(info.voxel_size_nm) else None
    gradient_unit = "eV/nm" if d else "eV/voxel"
    try:
        kernel = EdgeKernel(info.energies_ev, options.params)
    except ValueError as exc:
        raise InputError(info.path, str(exc)) from None
    dtype = np.dtype(options.precision)
    slab_size = options.slab_size or max(1, _default_slab(info, options.workers))
    n_slabs = -(-info.n_slices // slab_size)
    total_units = n_slabs + 1 + len(options.bin_factors)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total_units)

    import h5py

    from txmdb import __version__

    results_path = Path(results_path)
    with atomic_output(results_path) as tmp:
        with h5py.File(tmp, "w") as out:
            # ---- edge map, slab by slab
            t0 = time.perf_counter()
            edge = np.empty(spatial, dtype=np.float64)
            d_edge = out.create_dataset("edge_ev", shape=spatial, dtype=np.float32)
            d_jump = out.create_dataset("jump", shape=spatial, dtype=np.float32)
            d_valid = out.create_dataset("valid", shape=spatial, dtype=bool)
            for start, stop, res in _edge_slabs(info, kernel, slab_size, options.workers, dtype):
                edge[start:stop] = res.edge_ev
                d_edge[start:stop] = res.edge_ev.astype(np.float32)
                d_jump[start:stop] = res.jump.astype(np.float32, copy=False)
                d_valid[start:stop] = res.valid
                tick()
            timings["edge"] = time.perf_counter() - t0

            # ---- particles
            t0 = time.perf_counter()
            labels, n = label_particles(np.isfinite(edge), min_voxels=options.min_particle_voxels)
            moments = particle_moments(labels, n, edge)
            count, _, mean, std = moments
            depth = depth_map(labels, n)
            tables: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLE_NAMES}
            tables["particles"].append(particle_table(labels, n, edge, voxel_size_nm=d, moments=moments))
            tables["depth_profiles"].append(depth_profiles(labels, n, edge, depth, voxel_size_nm=d))
            del depth
            hist_edges = edge_histogram_edges(info.energies_ev, options.params.edge)
            tables["edge_histograms"].append(edge_histograms(labels, n, edge, hist_edges))
            timings["particles"] = time.perf_counter() - t0
            tick()

            # ---- gradient statistics
            t0 = time.perf_counter()
            vectors = {}
            for f in options.bin_factors:
                binned, blabels = bin_edge_map(edge, labels, f)
                centroids = block_centroids(blabels, n)
                vectors[f] = map_gradient_vectors(binned, blabels, centroids,
                                                  step=f * d if d else float(f))
                del binned, blabels
                tick()
            # |u| bins shared by the whole analysis: from the finest factor's vectors
            finest = vectors[min(options.bin_factors)]
            u_max = max((float(v.u.max()) for v in vectors.values() if len(v)), default=None)
            u_edges = u_histogram_edges(finest.u, u_max=u_max)
            for f in options.bin_factors:
                stats = gradient_statistics(vectors[f], n_particles=n, bin_factor=f, ndim=ndim,
                                            u_edges=u_edges, theta_bins=options.theta_bins,
                                            voxel_size_nm=d)
                for name, table in stats.items():
                    tables[name].append(table)
            del vectors
            timings["gradient"] = time.perf_counter() - t0

            # ---- label map and metadata
            t0 = time.perf_counter()
            out.create_dataset("labels", data=labels, chunks=True, compression="lzf")
            out.create_dataset("energies_ev", data=np.asarray(info.energies_ev, dtype=np.float64))
            out.attrs["txmdb_version"] = __version__
            out.attrs["source"] = str(info.path)
            out.attrs["layout"] = info.layout
            out.attrs["voxel_size_nm"] = d if d else np.nan
            out.attrs["gradient_unit"] = gradient_unit
            out.attrs["n_particles"] = n
            out.attrs["parameters"] = json.dumps(analysis_parameters(options, voxel_size_nm=d))
        timings["write"] = time.perf_counter() - t0

    result_tables = {name: pd.concat(parts, ignore_index=True) for name, parts in tables.items()}
    timings["total"] = time.perf_counter() - t_start
    return AnalysisOutputs(
        tables=result_tables, n_valid_voxels=int(count[0]), n_particles=int(n),
        mean_edge_ev=float(mean[0]), std_edge_ev=float(std[0]), gradient_unit=gradient_unit,
        timings_s=timings)


def _default_slab(info, workers: int) -> int:
    from txmdb.io.hdf5 import default_slab_size

    return default_slab_size(info, target_bytes=max(_SLAB_BYTES // workers, 1 << 20))
