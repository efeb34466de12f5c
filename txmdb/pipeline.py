"""Out-of-core TXM-XANES analysis of one stack: edge map → particles → gradient statistics.

The analysis has two public phases, so that a scheduler can run them where it likes:

1. **Edge phase** — :func:`extract_edges` is the pure per-slab step (read slab
   ``[start, stop)`` of the stack along its first spatial axis, run the edge kernel);
   :func:`edge_slabs` is the local loop over all slabs, which reads the next slab in a
   background thread into reused buffers while the kernel works on the current one.
2. **Statistics phase** — :func:`statistics_from_edge_map`: particles, depth profiles,
   edge histograms and the gradient statistics for every binning factor, from the edge
   map in memory (160 MB in float64 for a 20-million-voxel scan). The gradient vectors
   come from a ``vectors_fn``, by default
   :func:`~txmdb.analysis.gradient.map_gradient_vectors` (halo-padded slabs in this
   process); :mod:`txmdb.catalog.distributed` passes one that runs the same slabs on
   Dask workers.

:func:`analyze_stack` chains the two (either phase can be fed from elsewhere:
``edge_source``, ``vectors_fn``) and writes the edge map, jump map, validity mask and
particle label map into one results HDF5 file — through
:func:`~txmdb.io.files.atomic_output`, so a failure leaves no file behind. The stack is
never read whole.

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
    /registration_shifts float64 (n_energy, ndim)   only when a registration was applied
    /white_line_ev, /white_line_height  float32 (spatial)   with a white-line window (DESIGN §11)
    /fractions float32 (k, spatial), attr references (JSON names in order); /rfactor float32
               (spatial)   with LCF references; all NaN where masked, computed in the edge pass
    attrs: txmdb_version, layout, source, voxel_size_nm (NaN if unknown), gradient_unit,
           parameters (JSON), n_particles

Registered analysis (DESIGN §10): with ``options.registration`` every slab is read from the
registered stack (:func:`txmdb.io.hdf5.read_slab` with shifts: the integer part of each
shift moves that energy's read window, the fractional part is interpolated with a halo,
voxels whose source leaves the field of view at any energy are NaN and so masked). The
maps are in the reference energy's frame, and do not depend on the slab size.
"""

from __future__ import annotations

import collections
import itertools
import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from txmdb.analysis._memory import freed_memory_kept, no_huge_pages
from txmdb.analysis.edge import EdgeKernel, EdgeParameters, EdgeResult
from txmdb.analysis.gradient import (
    GradientVectors,
    bin_edge_map,
    bin_labels,
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
from txmdb.analysis.spectral import SpectralKernel, white_line_projector
from txmdb.io.maps import gradient_unit as map_gradient_unit
from txmdb.io.maps import ResultMaps, map_summaries, parse_map_list
from txmdb.db.models import STATISTICS_TABLES, data_columns
from txmdb.errors import InputError, ParameterError, RefusedInput
from txmdb.io.files import BackgroundSync, atomic_output, check_room

__all__ = ["AnalysisOptions", "AnalysisOutputs", "AppliedRegistration", "EdgeStatistics", "analyze_stack",
           "analysis_parameters", "default_slab", "edge_kernel", "edge_slabs", "extract_edges",
           "slab_bounds", "statistics_from_edge_map", "table_records", "TABLE_NAMES"]

# The catalogue's statistics tables, in the order they are written (declared in the models).
TABLE_NAMES = tuple(STATISTICS_TABLES)

# Bytes of stack per slab, in its working dtype (StackInfo.dtype_work). Two slabs are in
# memory (the one being computed and the one being read); larger slabs gain nothing once
# a slab is ~100x the kernel's block.
_SLAB_BYTES = 128 << 20

VectorsFn = Callable[[np.ndarray, np.ndarray, np.ndarray, float], GradientVectors]

#: Names of the interpolation orders of a registration's fractional shifts (as recorded).
INTERPOLATIONS = {1: "linear", 3: "cubic"}


@dataclass(frozen=True)
class AppliedRegistration:
    """A registration applied while the stack is read (DESIGN §10).

    Attributes
    ----------
    shifts : ndarray, shape (n_energy, ndim)
        ``s_e`` per energy in ascending-energy order, voxels:
        ``registered_e(x) = mu_e(x + s_e)``.
    registration_id : int, optional
        The catalogue's registration, recorded with the analysis.
    order : {1, 3}
        Interpolation of the fractional parts: linear (the default; the same numbers as
        ``scipy.ndimage.shift(order=1)``) or Keys cubic.
    """

    shifts: np.ndarray
    registration_id: int | None = None
    order: int = 1

    def __post_init__(self) -> None:
        if self.order not in INTERPOLATIONS:
            raise ValueError(f"interpolation order must be 1 (linear) or 3 (cubic), got {self.order}")

    def parameters(self) -> dict[str, Any]:
        """What an analysis records of it (the shifts are the registration's own rows)."""
        return {"registration_id": self.registration_id, "interpolation": INTERPOLATIONS[self.order]}


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
        Slices of the first spatial axis per slab read; default ~128 MB of stack,
        a whole number of HDF5 chunks. Results do not depend on it.
    workers : int, optional
        Threads computing the edge kernel (and the maps) on blocks of the current slab (one
        more thread always reads the next slab meanwhile); None: one per core this process
        may use. Results do not depend on it.
    registration : AppliedRegistration, optional
        Read the registered stack (slab by slab, never copied); ``None`` reads it as it is.
    gradient_maps : tuple of str
        Maps whose gradient statistics are computed (``edge``, ``white_line``,
        ``fraction:NAME``…, :mod:`txmdb.io.maps`); each must be one this analysis
        computes.
    clusters : int, optional
        k of the phase clusters (:mod:`txmdb.analysis.clusters`): k-means on the normalised
        edge window, ``/cluster`` label map and the ``cluster_spectra``/``pca_variance``
        tables; None: no clusters. The sample is gathered in the edge pass; the labels take
        one more read of the stack (two with another ``edge_source``, e.g. on Dask).
    white_line : (float, float), optional
        White-line window W in eV (DESIGN §11); None: no white-line maps.
    white_line_optional : bool
        W is a preset rather than asked for: a stack with fewer than 4 energies in it gets
        no white-line maps instead of an error (:func:`settle_spectral`).
    lcf : tuple of txmdb.catalog.spectroscopy.ReferenceSpectrum
        References of the linear combination fit, in map order; empty: no LCF.
    lcf_window : (float, float), optional
        Fit window F in eV; required with ``lcf``.
    The white line and the LCF are computed in the edge pass (:mod:`txmdb.analysis.spectral`).

    Notes
    -----
    There is no precision option: the edge kernel gives float64-exact results from
    float32 stacks at about float32 cost (see :mod:`txmdb.analysis.edge`); float64
    stacks and absorbance from raw images are read and computed in float64.
    """

    params: EdgeParameters
    bin_factors: tuple[int, ...] = (1, 2, 3)
    theta_bins: int = 36
    min_particle_voxels: int | None = None
    slab_size: int | None = None
    workers: int | None = None
    registration: AppliedRegistration | None = None
    gradient_maps: tuple[str, ...] = ("edge",)
    clusters: int | None = None
    white_line: tuple[float, float] | None = None
    white_line_optional: bool = False
    lcf: tuple = ()
    lcf_window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self.lcf = tuple(self.lcf)
        if self.lcf and self.lcf_window is None:
            raise ValueError("a linear combination fit needs a fit window")
        if self.clusters is not None and self.clusters < 1:
            raise ValueError(f"the number of clusters must be at least 1, got {self.clusters}")
        self.gradient_maps = parse_map_list(self.gradient_maps)
        for name in self.gradient_maps:
            map_gradient_unit(name, None)         # a label map has no gradient
        not_computed = [name for name in self.gradient_maps if name not in self.computed_maps()]
        if not_computed:
            raise ParameterError("gradient_maps", f"map {not_computed[0]!r} is not computed by this analysis; "
                                                  f"its maps: {', '.join(self.computed_maps())}")
        self.bin_factors = tuple(int(f) for f in self.bin_factors)
        if not self.bin_factors or min(self.bin_factors) < 1:
            raise ValueError(f"binning factors must be integers >= 1, got {self.bin_factors}")
        if len(set(self.bin_factors)) != len(self.bin_factors):
            raise ValueError(f"binning factors repeat: {self.bin_factors}")
        if self.theta_bins < 1:
            raise ValueError(f"theta bins must be >= 1, got {self.theta_bins}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.slab_size is not None and self.slab_size < 1:
            raise ValueError(f"slab size must be >= 1, got {self.slab_size}")

    def computed_maps(self) -> tuple[str, ...]:
        """Names of the maps this analysis computes (txmdb.io.maps), in results-file order."""
        names = ["edge"]
        if self.white_line is not None:
            names += ["white_line", "white_line_height"]
        names += [f"fraction:{reference.name}" for reference in self.lcf]
        if self.lcf:
            names.append("rfactor")
        if getattr(self, "clusters", None):
            names.append("cluster")
        return tuple(names)


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
        ``gradient``, ``map_summaries`` (the three overlap: threads), ``statistics`` (the
        three together), ``write`` and ``total``.
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
        "voxel_size_nm": voxel_size_nm,
        "registration": options.registration.parameters() if options.registration else None,
        "gradient_maps": list(options.gradient_maps),
        "clusters": None if not options.clusters else {"k": options.clusters, **cluster_parameters()},
        "white_line": None if options.white_line is None else list(options.white_line),
        "lcf": None if not options.lcf else {
            "references": [{"name": r.name, "measurement_id": r.measurement_id} for r in options.lcf],
            "window": list(options.lcf_window)},
    }


def table_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a statistics table as dicts of plain Python values, ``None`` for NA/NaN."""
    cols = {}
    for name in table.columns:
        col = table[name]
        if isinstance(col.dtype, pd.Int64Dtype):
            cols[name] = [None if v is pd.NA else int(v) for v in col.array]
        elif col.dtype == bool or not pd.api.types.is_numeric_dtype(col.dtype):  # flags, map names, units
            cols[name] = col.tolist()
        elif np.issubdtype(col.dtype, np.integer):
            cols[name] = col.astype(np.int64).tolist()
        else:
            cols[name] = [None if v != v else float(v) for v in col.tolist()]
    return [dict(zip(cols, values)) for values in zip(*cols.values())]


# --------------------------------------------------------------------------- edge phase
def edge_kernel(info, params: EdgeParameters) -> EdgeKernel:
    """The edge kernel for ``info``'s energies; window problems become InputError."""
    try:
        return EdgeKernel(info.energies_ev, params)
    except ValueError as exc:
        raise InputError(info.path, str(exc)) from None


def slab_bounds(info, slab_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering the first spatial axis in slabs of ``slab_size``."""
    return [(s, min(s + slab_size, info.n_slices)) for s in range(0, info.n_slices, slab_size)]


def default_slab(info) -> int:
    """Default slices per slab: ~128 MB, a whole number of HDF5 chunks."""
    from txmdb.io.hdf5 import default_slab_size

    return default_slab_size(info, target_bytes=_SLAB_BYTES)


def extract_edges(info, params: EdgeParameters, start: int, stop: int, *,
                  kernel: EdgeKernel | None = None,
                  registration: AppliedRegistration | None = None,
                  spectral: SpectralKernel | None = None) -> EdgeResult:
    """The edge phase of one slab: read ``[start, stop)`` and run the edge kernel.

    Pure per slab (opens the file itself, no shared state): the unit a Dask worker runs.

    Parameters
    ----------
    info : txmdb.io.hdf5.StackInfo
    params : EdgeParameters
    start, stop : int
        Range along the first spatial axis.
    kernel : EdgeKernel, optional
        A kernel already built for ``info`` and ``params``.
    registration : AppliedRegistration, optional
        Read the slab of the registered stack (``[start, stop)`` in the reference frame).
    spectral : SpectralKernel, optional
        Also compute the spectral maps (:func:`spectral_kernel`) in the same pass.

    Returns
    -------
    EdgeResult
        Arrays of shape ``(stop - start, ...)``; an ``EdgeMaps`` with ``spectral``.
    """
    from txmdb.io.hdf5 import read_slab

    mu = read_slab(info, start, stop, **registered_read(registration))
    if spectral is not None:
        return spectral.with_edges(mu)
    kernel = kernel or edge_kernel(info, params)
    return kernel(mu)


def edge_slabs(info, params: EdgeParameters, *, slab_size: int | None = None,
               workers: int | None = None,
               registration: AppliedRegistration | None = None,
               on_slab: Callable[[int, int, np.ndarray, EdgeResult], None] | None = None,
               spectral: SpectralKernel | None = None,
               reader=None,
               reuse_maps: bool | int = False,
               ) -> Iterator[tuple[int, int, EdgeResult]]:
    """The edge phase in this process: ``(start, stop, EdgeResult)`` in slab order.

    A background thread reads the next slab (into one of two reused buffers) while the
    kernel runs on the current one with ``workers`` threads (None: one per usable core); h5py releases the GIL while
    HDF5 copies the data, so reading and computing overlap. With a ``registration`` that
    thread also interpolates the registered slab, the energies shared with one helper thread. ``on_slab(start, stop, mu, result)``, if
    given, sees each slab's absorbance before the next one is read (the clusters' sample).
    With ``spectral`` the results are ``EdgeMaps``: the spectral maps from the same pass.
    ``reader``: a :class:`txmdb.io.single_read.SingleRead` of this stack in these slabs
    (unregistered), which reads the slabs instead of h5py and hashes the file on the way.
    ``reuse_maps``: the spectral maps as float32 in sets of buffers reused in turn
    (:class:`~txmdb.analysis.spectral.MapBuffers`; no fresh maps and no float32 copy per
    slab): ``True`` (or 1), one set every slab overwrites, for a consumer done with a slab's
    maps before it asks for the next slab; ``n``, n sets, for one done with them before it
    asks for the n-th slab after (:class:`EdgePhaseWriter` writes them from its own thread).
    """
    from txmdb.analysis._threads import kernel_threads
    from txmdb.io.hdf5 import iter_slabs

    kernel = edge_kernel(info, params)
    workers = kernel_threads(workers)
    slab_size = slab_size or default_slab(info)
    if reader is not None and registration is None and reader.slab_size == slab_size:
        slabs = reader.slabs()
    else:
        slabs = iter_slabs(info, slab_size, prefetch=True, **registered_read(registration))
    sets = [spectral.map_buffers(np.float32) for _ in range(int(reuse_maps))] if spectral is not None else []
    for i, (start, stop, mu) in enumerate(slabs):
        result = (kernel(mu, threads=workers) if spectral is None
                  else spectral.with_edges(mu, threads=workers, out=sets[i % len(sets)] if sets else None))
        if on_slab is not None:
            on_slab(start, stop, mu, result)
        yield start, stop, result


def input_hash(info, options: AnalysisOptions, path, *, known: tuple[str, str | None] | None = None):
    """The SHA-256 check of an analysis' input file, started: taken from the edge pass' own
    read of the stack when that can be one sequential read of the file
    (:class:`~txmdb.io.single_read.SingleRead`, then also to be passed to
    :func:`analyze_stack` as ``reader``), else a second read in a background thread
    (:class:`~txmdb.io.files.BackgroundHash`). All give ``result()``, ``cancel()``,
    ``promote()``, ``identity``, ``started_ns``, ``elapsed_s`` and ``waited_s``.

    ``known``: (SHA-256, identity text) the catalogue recorded for the file. While the file's
    identity is that one, its SHA-256 is trusted, not computed: the single read then reads the
    slabs only, or a :class:`~txmdb.io.files.KnownHash` stands for the hash; either checks the
    identity again at ``result()``.
    """
    from txmdb.io.files import BackgroundHash, KnownHash
    from txmdb.io.single_read import SingleRead

    if options.registration is None:
        reader = SingleRead.open(info, options.slab_size or default_slab(info), known=known)
        if reader is not None:
            return reader
    return KnownHash.if_unchanged(path, known) or BackgroundHash(path)


def settle_spectral(info, options: AnalysisOptions) -> AnalysisOptions:
    """``options`` without an optional (preset) white-line window this stack has too few
    energies in; otherwise ``options`` itself."""
    if options.white_line is None or not options.white_line_optional:
        return options
    try:
        white_line_projector(np.asarray(info.energies_ev, dtype=np.float64), options.white_line)
    except ValueError:
        return dataclasses.replace(options, white_line=None, white_line_optional=False)
    return options


def spectral_kernel(info, options: AnalysisOptions) -> SpectralKernel | None:
    """The white-line/LCF kernel of ``options`` on ``info``'s energies; None without either.

    Raises
    ------
    InputError
        A white-line window with fewer than 4 energies, a reference that does not cover
        the energies it is used on or is linearly dependent on the others (naming it).
    """
    if options.white_line is None and not options.lcf:
        return None
    try:
        return SpectralKernel(info.energies_ev, options.params, white_line=options.white_line,
                              references={r.name: (r.energy_ev, r.mu) for r in options.lcf},
                              lcf_window=options.lcf_window)
    except ValueError as exc:
        raise InputError(info.path, str(exc)) from None


class DirectMaps:
    """The edge pass' maps in the results file, written slab by slab with ``os.pwrite`` at their
    place in the file rather than through h5py.

    h5py runs every call under one global lock, so a map write through it waited for the
    background read of the next slab to finish (and the read for the write): per slab the
    write came on top of the read. Here each map is a contiguous data set whose space HDF5
    allocates at creation and never fills, and a slab's rows are one ``pwrite`` of its bytes
    (GIL released, no h5py lock); HDF5 reads them back like any other data (the same bytes).
    """

    def __init__(self, out, path):
        self._out = out
        self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        self._sets: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}

    def create(self, name: str, shape: tuple[int, ...], dtype) -> Any:
        """An empty contiguous data set ``name``, its space allocated now, never filled."""
        import h5py

        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        dataset = self._out.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl)
        self._sets[name] = (dataset.id.get_offset(), np.dtype(dtype), tuple(shape))
        return dataset

    def write(self, name: str, start: int, values: np.ndarray, *, row: int | None = None) -> None:
        """Slices ``[start, start + len(values))`` of the first spatial axis of map ``name``
        (of its ``row``-th map, for a stack of maps such as the fractions)."""
        offset, dtype, shape = self._sets[name]
        spatial = shape if row is None else shape[1:]
        data = np.ascontiguousarray(values, dtype=dtype)
        if data.shape[1:] != spatial[1:] or not 0 <= start <= spatial[0] - len(data):
            raise ValueError(f"slab of shape {data.shape} at {start} does not fit map {name} {shape}")
        if row is not None:
            offset += row * math.prod(spatial) * dtype.itemsize
        view = memoryview(data).cast("B")
        where = offset + start * math.prod(spatial[1:]) * dtype.itemsize
        while view:                                   # a write may be cut short (signals, > 2 GB)
            done = os.pwrite(self._fd, view, where)
            view, where = view[done:], where + done

    def close(self) -> None:
        os.close(self._fd)


def spectral_datasets(maps: DirectMaps, spectral: SpectralKernel | None,
                      spatial: tuple[int, ...]) -> dict[str, tuple[str, int | None]]:
    """Empty float32 data sets of the spectral maps in the results file of ``maps``: by map
    name, the data set and row (the fractions are one stack of maps) that map is written to."""
    if spectral is None:
        return {}
    places: dict[str, tuple[str, int | None]] = {}
    if spectral.white_line is not None:
        for name, dataset in (("white_line", "white_line_ev"), ("white_line_height", "white_line_height")):
            maps.create(dataset, spatial, np.float32)
            places[name] = (dataset, None)
    if spectral.names:
        fractions = maps.create("fractions", (len(spectral.names), *spatial), np.float32)
        fractions.attrs["references"] = json.dumps(list(spectral.names))
        places.update({f"fraction:{name}": ("fractions", row) for row, name in enumerate(spectral.names)})
        maps.create("rfactor", spatial, np.float32)
        places["rfactor"] = ("rfactor", None)
    return places


def write_spectral(maps: DirectMaps, places: dict[str, tuple[str, int | None]], start: int,
                   result: EdgeResult) -> None:
    """One slab's spectral maps (``result.maps``) to their places (:func:`spectral_datasets`);
    each reference's fraction is one contiguous write, no stacked copy."""
    for name, (dataset, row) in places.items():
        maps.write(dataset, start, result.maps[name], row=row)


# The edge phase's own maps in the results file, with their stored dtypes.
EDGE_DATASETS = (("edge_ev", np.float32), ("jump", np.float32), ("valid", bool))


class EdgePhaseWriter:
    """The edge phase's output, slab by slab: the float64 edge map in memory (``edge``) and
    ``edge_ev``, ``jump``, ``valid`` and the spectral maps (:func:`spectral_datasets`) in the
    results file (:class:`DirectMaps`; ``places``: each spectral map's data set and row).
    One implementation for :func:`analyze_stack` and ``benchmarks/bench_spectral.py``.

    A thread of its own does the work behind the kernel: the copy into ``edge``, the
    float64 → float32 conversions and the ``pwrite`` of each slab's maps into the page cache
    (0.15-0.5 CPU-s at 272³ with white line and LCF: the operating system's allocation of
    580 MB of page cache, dearer when its free memory is cold or the page cache full) run
    beside the next slabs' kernel instead of between two slabs on the kernel's thread. Up
    to two slabs wait to be written (a slow write does not stall the kernel at once);
    :meth:`write` first waits for older ones (re-raising their error), so a slab's maps must
    stay intact until the second :meth:`write` after its own returns: ``MAP_SETS`` sets of
    reused map buffers (``edge_slabs(reuse_maps=EdgePhaseWriter.MAP_SETS)``; fewer, and
    :meth:`write` raises ValueError). Use it as a context manager; leaving it waits for the
    last write (and re-raises its error unless another one is on its way out).
    """

    #: sets of map buffers a producer reusing them must cycle through; at least 2 (one
    #: being filled, one queued): write() waits until MAP_SETS - 2 slabs are left queued
    MAP_SETS = 3

    def __init__(self, out, path, spatial: tuple[int, ...], spectral: SpectralKernel | None):
        from concurrent.futures import ThreadPoolExecutor

        self.edge = np.empty(spatial, dtype=np.float64)
        self._direct = DirectMaps(out, path)
        try:
            for name, dtype in EDGE_DATASETS:
                self._direct.create(name, spatial, dtype)
            self.places = spectral_datasets(self._direct, spectral, spatial)
        except BaseException:
            self._direct.close()
            raise
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="txmdb-write")
        self._pending: list = []                     # writes queued, oldest first
        # the maps of the last MAP_SETS - 1 slabs: their writes may still be queued
        self._recent: collections.deque = collections.deque(maxlen=self.MAP_SETS - 1)

    def write(self, start: int, result: EdgeResult) -> None:
        """Queue slab ``[start, start + len)``'s results once at most ``MAP_SETS - 2`` slabs
        are still to be written: the buffers the kernel fills next are free. ValueError if
        its maps are in buffers of one of the ``MAP_SETS - 1`` slabs before it (fewer sets
        reused: that slab's maps may have been overwritten before their write), whether or
        not that write is done yet, so the mistake does not depend on the writer's speed."""
        maps = [a for a in getattr(result, "maps", {}).values() if isinstance(a, np.ndarray)]
        if any(np.may_share_memory(a, b) for kept in self._recent for b in kept for a in maps):
            raise ValueError(f"slab {start}'s maps are in the buffers of one of the {self.MAP_SETS - 1} slabs before "
                             f"it, whose writes may still be queued: reuse EdgePhaseWriter.MAP_SETS "
                             f"({self.MAP_SETS}) sets of map buffers")
        self._wait(self.MAP_SETS - 2)
        self._pending.append(self._pool.submit(self._write_now, start, result))
        self._recent.append(maps)

    def _write_now(self, start: int, result: EdgeResult) -> None:
        self.edge[start:start + len(result.edge_ev)] = result.edge_ev
        write_spectral(self._direct, self.places, start, result)
        for name, _ in EDGE_DATASETS:
            self._direct.write(name, start, getattr(result, name))

    def _wait(self, left: int = 0) -> None:
        while len(self._pending) > left:
            self._pending.pop(0).result()

    def __enter__(self) -> "EdgePhaseWriter":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if kind is None:
                self._wait()
        finally:
            self._pool.shutdown(wait=True)            # no write left on the descriptor closed next
            self._direct.close()


class WrittenMaps(ResultMaps):
    """The maps of the results file being written (:class:`~txmdb.io.maps.ResultMaps`), and
    :meth:`read_into` a caller's buffer for the float32 maps the edge pass wrote."""

    def __init__(self, out, places: dict[str, tuple[str, int | None]]):
        super().__init__(out)
        self._out, self._places = out, places

    def read_into(self, name: str, buffer: np.ndarray) -> np.ndarray:
        """Map ``name``, as ``self[name]`` gives it: in ``buffer`` (float32, the map's shape)
        when the edge pass wrote it (:func:`spectral_datasets`), else a new array."""
        if name not in self._places:
            return self[name]
        dataset, row = self._places[name]
        self._out[dataset].read_direct(buffer, None if row is None else np.s_[row])
        return buffer


def registered_read(registration: AppliedRegistration | None) -> dict[str, Any]:
    """Keywords of :func:`txmdb.io.hdf5.read_slab` for the registered (or the plain) read."""
    if registration is None:
        return {}
    return {"shifts": registration.shifts, "order": registration.order}


# --------------------------------------------------------------------------- statistics phase
@dataclass
class EdgeStatistics:
    """What :func:`statistics_from_edge_map` returns.

    Attributes
    ----------
    tables : dict of str to DataFrame
        One per key of ``STATISTICS_TABLES``.
    labels : ndarray of int32
        Particle label map, 0 outside particles.
    n_particles, n_valid_voxels : int
    mean_edge_ev, std_edge_ev : float
        Over the voxels of all particles (NaN without particles).
    timings_s : dict of str to float
        Wall time of ``particles`` (labels, moments, and the particle tables in their
        thread), ``gradient``, ``map_summaries`` (in its thread), and of the whole phase,
        ``statistics``.
    """

    tables: dict[str, pd.DataFrame]
    labels: np.ndarray
    n_particles: int
    n_valid_voxels: int
    mean_edge_ev: float
    std_edge_ev: float
    timings_s: dict[str, float]


def _local_vectors(binned: np.ndarray, labels: np.ndarray, centroids: np.ndarray,
                   step: float) -> GradientVectors:
    return map_gradient_vectors(binned, labels, centroids, step=step)


def _labelled(table_name: str, table: pd.DataFrame, map_name: str, unit: str | None = None) -> pd.DataFrame:
    """A kernel's table with the map it is of (and the unit of its |u| values), in the model's column order."""
    table = table.assign(map=map_name)
    columns = data_columns(STATISTICS_TABLES[table_name])
    if "gradient_unit" in columns:
        table["gradient_unit"] = unit
    return table[list(columns)]


def _map_gradient_statistics(values: np.ndarray, labels: np.ndarray, centroids: dict[int, np.ndarray], n: int,
                             options: AnalysisOptions, *, ndim: int, d: float | None, vectors_fn: VectorsFn,
                             tick: Callable[[], None]) -> Iterator[tuple[str, pd.DataFrame]]:
    """DESIGN §5 gradient statistics of one map, every binning factor: ``(table name, table)``."""
    vectors = {}
    for f in options.bin_factors:
        binned, blabels = bin_edge_map(values, labels, f)
        vectors[f] = vectors_fn(binned, blabels, centroids[f], f * d if d else float(f))
        del binned, blabels
        tick()
    # |u| bins shared by the whole analysis of this map: from the finest factor's vectors
    finest = vectors[min(options.bin_factors)]
    u_max = max((float(v.u.max()) for v in vectors.values() if len(v)), default=None)
    u_edges = u_histogram_edges(finest.u, u_max=u_max)
    for f in options.bin_factors:
        stats = gradient_statistics(vectors.pop(f), n_particles=n, bin_factor=f, ndim=ndim,
                                    u_edges=u_edges, theta_bins=options.theta_bins, voxel_size_nm=d)
        yield from stats.items()


def statistics_from_edge_map(edge_ev: np.ndarray, options: AnalysisOptions, *,
                             energies_ev: np.ndarray, voxel_size_nm: float | None,
                             vectors_fn: VectorsFn | None = None,
                             tick: Callable[[], None] | None = None,
                             maps: Mapping[str, np.ndarray] | None = None,
                             on_labels: Callable[[np.ndarray], None] | None = None) -> EdgeStatistics:
    """The statistics phase: particles, depth profiles, edge and gradient statistics, map summaries.

    Particles are defined once, from the edge map's validity. The gradient statistics of
    DESIGN §5 are computed on each of ``options.gradient_maps``: on a map other than the
    edge, a voxel (or block) counts only if it is in a particle and the map is finite there;
    the particle centroids ``O`` stay those of the particles' blocks, whatever the map.
    Every statistics row is labelled with its map, and the |u| rows with the map's gradient
    unit (:func:`txmdb.io.maps.gradient_unit`). The ``map_summaries`` table covers
    the edge map and every map of ``maps``.

    Parameters
    ----------
    edge_ev : ndarray of float64, shape (z, y, x) or (y, x)
        Edge map, NaN where masked (from the edge phase).
    options : AnalysisOptions
    energies_ev : ndarray
        The stack's energies (bins of the edge histograms).
    voxel_size_nm : float, optional
        ``d``; ``None`` gives gradients in eV/voxel.
    vectors_fn : callable, optional
        ``vectors_fn(binned_ev, binned_labels, centroids, step) -> GradientVectors`` for
        a whole binned map, in C order; default
        :func:`~txmdb.analysis.gradient.map_gradient_vectors` in this process.
    tick : callable, optional
        Called after the particle step and after each map and binning factor.
    maps : mapping of str to ndarray, optional
        The analysis' other maps by name (NaN where masked), e.g.
        :class:`txmdb.io.maps.ResultMaps` of the results file being written; read
        one at a time.
    on_labels : callable, optional
        Called with the particle label map (``EdgeStatistics.labels``, final, not to be
        written to) as soon as it is known, before the rest of the phase.

    Returns
    -------
    EdgeStatistics
    """
    from concurrent.futures import ThreadPoolExecutor

    tick = tick or (lambda: None)
    vectors_fn = vectors_fn or _local_vectors
    d = voxel_size_nm
    ndim = edge_ev.ndim
    timings: dict[str, float] = {}
    t_start = t0 = time.perf_counter()
    labels, n = label_particles(np.isfinite(edge_ev), min_voxels=options.min_particle_voxels)
    if on_labels is not None:
        on_labels(labels)
    moments = particle_moments(labels, n, edge_ev)
    count, _, mean, std = moments
    t_labels = time.perf_counter() - t0
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLE_NAMES}
    maps = {} if maps is None else maps
    named = itertools.chain([("edge", edge_ev)], _one_at_a_time(maps, edge_ev.shape))
    # The particle tables and the map summaries run in two threads beside the gradients here:
    # their compiled kernels release the GIL, so the three share the cores (each table is
    # filled by one of them, in its own order).
    with ThreadPoolExecutor(2, thread_name_prefix="statistics") as pool:
        particle_part = pool.submit(_timed, _particle_tables, labels, n, edge_ev, moments, options.params.edge,
                                    energies_ev=energies_ev, voxel_size_nm=d)
        summary_part = pool.submit(_timed, map_summaries, labels, n, named, known={"edge": (count, mean, std)})
        t0 = time.perf_counter()
        centroids = {}
        for f in options.bin_factors:              # O of every particle: its blocks, whatever the map
            # (f = 1: the particle centroids of the moments above)
            centroids[f] = moments[1] if f == 1 else block_centroids(bin_labels(labels, f), n)
        for name in options.gradient_maps:
            values = edge_ev if name == "edge" else maps[name]
            # a voxel counts where it is in a particle and the map has a value
            map_labels = labels if name == "edge" else np.where(np.isfinite(values), labels, 0)
            unit = map_gradient_unit(name, d)
            for table_name, table in _map_gradient_statistics(values, map_labels, centroids, n, options,
                                                              ndim=ndim, d=d, vectors_fn=vectors_fn, tick=tick):
                tables[table_name].append(_labelled(table_name, table, name, unit))
            del values, map_labels
        timings["gradient"] = time.perf_counter() - t0
        particle_tables, timings["particles"] = particle_part.result()
        timings["particles"] += t_labels
        for table_name, table in particle_tables.items():
            tables[table_name].append(_labelled(table_name, table, "edge"))
        tick()
        summaries, timings["map_summaries"] = summary_part.result()
        tables["map_summaries"].append(summaries)
    timings["statistics"] = time.perf_counter() - t_start
    return EdgeStatistics(
        tables={name: pd.concat(parts, ignore_index=True) for name, parts in tables.items()},
        labels=labels, n_particles=int(n), n_valid_voxels=int(count[0]),
        mean_edge_ev=float(mean[0]), std_edge_ev=float(std[0]), timings_s=timings)


def _one_at_a_time(maps: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, map)`` of the maps other than the edge, for a consumer done with each before
    it asks for the next (the map summaries): read into one float32 buffer when ``maps``
    can (:class:`WrittenMaps`), made here on the caller's thread. Read whole on the
    summaries' thread, each map was a fresh mapping of glibc's per-thread heap (> 64 MiB at
    272³), page-faulted and unmapped again; the buffer comes from the caller's kept heap
    (:func:`~txmdb.analysis._memory.freed_memory_kept`), once."""
    names = [name for name in maps if name != "edge"]
    read_into = getattr(maps, "read_into", None)
    buffer = np.empty(shape, np.float32) if read_into is not None and names else None

    def each():
        for name in names:
            yield name, maps[name] if buffer is None else read_into(name, buffer)
    return each()


def _timed(fn: Callable, *args, **kwargs) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and the seconds it took."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def _particle_tables(labels: np.ndarray, n: int, edge_ev: np.ndarray, moments: tuple, edge_window: tuple[float, float],
                     *, energies_ev: np.ndarray, voxel_size_nm: float | None) -> dict[str, pd.DataFrame]:
    """The ``particles``, ``depth_profiles`` and ``edge_histograms`` tables of the edge map."""
    depth = depth_map(labels, n)
    return {
        "particles": particle_table(labels, n, edge_ev, voxel_size_nm=voxel_size_nm, moments=moments),
        "depth_profiles": depth_profiles(labels, n, edge_ev, depth, voxel_size_nm=voxel_size_nm),
        "edge_histograms": edge_histograms(labels, n, edge_ev, edge_histogram_edges(energies_ev, edge_window)),
    }


# --------------------------------------------------------------------------- clusters
def cluster_parameters() -> dict[str, Any]:
    """What an analysis with clusters records beyond k: the sample's bound and seed."""
    from txmdb.analysis.clusters import MAX_SAMPLE, N_INIT, SEED

    return {"max_sample": MAX_SAMPLE, "seed": SEED, "n_init": N_INIT, "window": "edge"}


def cluster_sample(info, options: AnalysisOptions):
    """An empty seeded sample of normalised edge windows for ``options.clusters`` (filled slab by slab)."""
    from txmdb.analysis.clusters import SEED, SpectraSample, edge_window

    return SpectraSample(edge_kernel(info, options.params), edge_window(info.energies_ev, options.params), seed=SEED)


def cluster_map(info, options: AnalysisOptions, edge_ev: np.ndarray, out, *, slab_size: int,
                tick: Callable[[], None] = lambda: None, sample=None) -> dict[str, pd.DataFrame]:
    """Phase clusters of the valid voxels (DESIGN §11): ``/cluster`` in ``out`` and two tables.

    The seeded sample of valid voxels' normalised edge windows is ``sample`` when the edge
    pass gathered it (:func:`analyze_stack` in this process), else one read of the stack
    gathers it here. Then one more read, slab by slab (registered when the analysis is),
    labels every valid voxel with its nearest k-means centre, writing ``/cluster`` (int16,
    -1 where masked) as it goes. Valid: the voxels with an edge energy.

    Returns
    -------
    dict of str to DataFrame
        ``cluster_spectra`` and ``pca_variance`` (:func:`txmdb.analysis.clusters.cluster_tables`).

    Raises
    ------
    RefusedInput
        More clusters than valid voxels (with a finite normalised window): nothing is kept.
    """
    from txmdb.analysis.clusters import NO_CLUSTER, SEED, ClusterAssigner, cluster_tables, fit_clusters
    from txmdb.io.hdf5 import iter_slabs

    read = registered_read(options.registration)
    per_slice = int(np.prod(edge_ev.shape[1:]))
    if sample is None:
        sample = cluster_sample(info, options)
        for start, stop, mu in iter_slabs(info, slab_size, prefetch=True, **read):
            sample.add(mu, np.isfinite(edge_ev[start:stop]), start * per_slice)
            tick()
    k = int(options.clusters)
    spectra = sample.result()[1]
    if len(spectra) < k:
        raise RefusedInput(info.path, f"{k} clusters asked for, but only {len(spectra)} voxel"
                                    f"{'s have' if len(spectra) != 1 else ' has'} a valid spectrum")
    model = fit_clusters(spectra, k, seed=SEED)
    del spectra
    assign = ClusterAssigner(sample.kernel, sample.window, model)
    labels = out.create_dataset("cluster", shape=edge_ev.shape, dtype=np.int16, fillvalue=NO_CLUSTER)
    for start, stop, mu in iter_slabs(info, slab_size, prefetch=True, **read):
        labels[start:stop] = assign(mu, np.isfinite(edge_ev[start:stop]))
        tick()
    return cluster_tables(model, assign, info.energies_ev)


# --------------------------------------------------------------------------- whole analysis
EdgeSource = Callable[[Any, EdgeParameters, int], Iterable[tuple[int, int, EdgeResult]]]


# 4 KiB pages for its fresh maps and buffers: huge ones cost ~0.8 CPU-s of memory compaction
# per 272³ analysis; and the memory it frees kept for its next arrays, not page-faulted
# afresh (txmdb.analysis._memory; docs/performance.md)
@no_huge_pages()
@freed_memory_kept()
def analyze_stack(info, options: AnalysisOptions, *, results_path: Path,
                  progress: Callable[[int, int], None] | None = None,
                  edge_source: EdgeSource | None = None,
                  vectors_fn: VectorsFn | None = None,
                  after_read: Callable[[], None] | None = None,
                  reader=None, named: str | os.PathLike | None = None) -> AnalysisOutputs:
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
    edge_source : callable, optional
        ``edge_source(info, params, slab_size)`` yielding ``(start, stop, EdgeResult)``
        for the slabs of :func:`slab_bounds` (any order), read with
        ``options.registration``; default :func:`edge_slabs` in this process.
    vectors_fn : callable, optional
        Gradient vectors of a binned map (see :func:`statistics_from_edge_map`).
    after_read : callable, optional
        Called once the stack has been read for the last time (edge pass, clusters),
        before the statistics: e.g. :meth:`txmdb.io.files.BackgroundHash.promote`.
    reader : txmdb.io.single_read.SingleRead, optional
        The edge pass reads its slabs from this single read of the file (:func:`input_hash`).
    named : path, optional
        The file's name recorded as the results' ``source`` when ``info.path`` reads it
        through a descriptor (``/proc/self/fd/N``); default ``info.path``.

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
    spatial = tuple(info.spatial_shape)
    d = info.voxel_size_nm if info.voxel_size_nm and math.isfinite(info.voxel_size_nm) else None
    gradient_unit = "eV/nm" if d else "eV/voxel"
    edge_kernel(info, options.params)             # window errors before any file exists
    options = settle_spectral(info, options)
    spectral = spectral_kernel(info, options)     # and reference errors
    if options.registration is not None:          # shape errors too
        from txmdb.io.hdf5 import registration_shifts

        registration_shifts(info, options.registration.shifts)
    slab_size = options.slab_size or default_slab(info)
    # the clusters' sample: gathered during a local edge pass, else by a read pass of its own
    sample = cluster_sample(info, options) if options.clusters and edge_source is None else None
    if edge_source is None:
        def edge_source(info, params, slab_size):
            return edge_slabs(info, params, slab_size=slab_size, workers=options.workers,
                              registration=options.registration,
                              on_slab=None if sample is None else sample.add_slab, spectral=spectral,
                              reader=reader, reuse_maps=EdgePhaseWriter.MAP_SETS)     # written below
    total_units = len(slab_bounds(info, slab_size)) + 1 + len(options.bin_factors) * len(options.gradient_maps)
    if options.clusters:                          # labels, and the sample when not in the edge pass
        total_units += (1 if sample is not None else 2) * len(slab_bounds(info, slab_size))
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total_units)

    from concurrent.futures import ThreadPoolExecutor

    import h5py

    from txmdb import __version__

    results_path = Path(results_path)
    # edge map, jump, mask and labels: <= 13 bytes per voxel; spectral maps 4 bytes each
    n_spectral = 0 if spectral is None else len(spectral.map_names)
    check_room(results_path, n_bytes=(13 + 4 * n_spectral) * int(np.prod(spatial)))
    with atomic_output(results_path) as tmp:
        with h5py.File(tmp, "w") as out:
            t0 = time.perf_counter()
            with EdgePhaseWriter(out, tmp, spatial, spectral) as writer:
                for start, stop, res in edge_source(info, options.params, slab_size):
                    writer.write(start, res)
                    tick()
            edge = writer.edge
            t_edge = time.perf_counter() - t0
            t0 = time.perf_counter()
            cluster_tables = cluster_map(info, options, edge, out, slab_size=slab_size, tick=tick,
                                         sample=sample) if options.clusters else {}
            t_clusters = time.perf_counter() - t0
            # the maps written so far (~700 MB for 20 M voxels with white line and LCF) go to
            # the disk while the statistics run, instead of in the store's fsync at the end
            syncing = BackgroundSync(tmp)
            if after_read is not None:
                after_read()
            # the label map (lzf, ~0.1 s at 272³) written by a thread of its own as soon as it is
            # known, while the statistics run, instead of after them
            labels_written = []
            with ThreadPoolExecutor(1, thread_name_prefix="txmdb-labels") as labels_pool:
                try:
                    stats = statistics_from_edge_map(
                        edge, options, energies_ev=info.energies_ev, voxel_size_nm=d, vectors_fn=vectors_fn,
                        tick=tick, maps=WrittenMaps(out, writer.places),
                        on_labels=lambda labels: labels_written.append(labels_pool.submit(
                            out.create_dataset, "labels", data=labels, chunks=True, compression="lzf")))
                except BaseException:
                    syncing.wait(check=False)     # the statistics' error is the one to report
                    raise                         # (the pool's exit waits for the labels' write)
            syncing.wait()
            del edge

            t0 = time.perf_counter()
            labels_written[0].result()
            out.create_dataset("energies_ev", data=np.asarray(info.energies_ev, dtype=np.float64))
            if options.registration is not None:
                out.create_dataset("registration_shifts", data=np.asarray(options.registration.shifts))
            out.attrs["txmdb_version"] = __version__
            out.attrs["source"] = str(info.path if named is None else named)
            out.attrs["layout"] = info.layout
            out.attrs["voxel_size_nm"] = d if d else np.nan
            out.attrs["gradient_unit"] = gradient_unit
            out.attrs["n_particles"] = stats.n_particles
            out.attrs["parameters"] = json.dumps(analysis_parameters(options, voxel_size_nm=d))
        t_write = time.perf_counter() - t0

    timings = {"edge": t_edge, **({"clusters": t_clusters} if options.clusters else {}), **stats.timings_s, "write": t_write,
               "total": time.perf_counter() - t_start}
    return AnalysisOutputs(
        tables={**stats.tables, **cluster_tables}, n_valid_voxels=stats.n_valid_voxels, n_particles=stats.n_particles,
        mean_edge_ev=stats.mean_edge_ev, std_edge_ev=stats.std_edge_ev,
        gradient_unit=gradient_unit, timings_s=timings)
