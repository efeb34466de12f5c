"""Analyses on a Dask cluster (DESIGN §9): workers read the HDF5 files from shared storage
and run the pipeline's kernels; the client writes the results to the catalogue (one
transaction per scan).

Two ways to use the cluster, chosen per scan by :func:`analyze_on_cluster`:

- **many scans at once** (:func:`analyze_scans_distributed`): each scan is one task
  running the whole pipeline on a worker;
- **one scan split into slabs** (:func:`analyze_scan_distributed`): the edge phase runs
  per slab on the workers (:func:`txmdb.pipeline.extract_edges`, no halo: every voxel is
  independent), the client assembles the edge map and finds the particles, and the
  gradient kernel runs per slab of each binned map with a one-row halo on the workers.
  The workers return the gradient vectors of their slabs, which the client concatenates
  in slab order; the histograms are reduced from those on the client, because the
  vector-size medians and 90th percentiles need all vectors of a group (per-slab
  histograms do not add up to exact quantiles). The tables equal those of the
  in-process run exactly.

A scan's registration (by default its newest, as in process) travels with its tasks: the
workers read registered slabs (:func:`txmdb.io.hdf5.read_slab` with its shifts).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from txmdb.catalog.integrity import CheckedFile
from txmdb.catalog.txm import LATEST, new_analysis, prepare_analysis, record_analysis
from txmdb.errors import InputError, ParameterError, RefusedInput, TxmdbError, input_errors
from txmdb.store import ANALYSES, failure_text

__all__ = ["SPLIT_BYTES", "connect", "analyze_on_cluster", "analyze_scan_distributed",
           "analyze_scans_distributed"]

# A scan whose float32 stack is larger than this is split into slabs across the workers
# even when other scans are analysed with it: one whole-scan task would hold one worker
# for minutes while the others idle.
SPLIT_BYTES = 2 << 30

# Binned-map voxels per gradient task: big enough that the task overhead (~1 ms) and the
# halo rows are negligible, small enough to spread over the workers.
_GRADIENT_SLAB_VOXELS = 1 << 22


class _Refused(ValueError):
    """A RefusedInput shipped back from a worker (its text): the attempt leaves no record."""


def _problem(exc: Exception) -> ValueError:
    """InputError does not survive pickling (two-argument constructor): ship its text."""
    return (_Refused if isinstance(exc, RefusedInput) else ValueError)(getattr(exc, "problem", str(exc)))


def _analyze_on_worker(info, options, pending: str, checked: CheckedFile):
    """Runs on a worker: the whole pipeline for one scan, results file into the shared store;
    on the file the client checked (``checked``), else an error."""
    from dataclasses import replace

    from txmdb.pipeline import analyze_stack

    if options.workers is None:       # each of a worker's threads may run a task: one kernel thread each
        options = replace(options, workers=1)
    t0 = time.perf_counter()
    try:
        with checked.reading(info) as held:
            outputs = analyze_stack(held, options, results_path=Path(pending), named=checked.file_path)
    except InputError as exc:
        raise _problem(exc) from None
    return outputs, time.perf_counter() - t0


def _edge_task(info, params, start: int, stop: int, registration, spectral, checked: CheckedFile):
    """Runs on a worker: the edge phase of one slab (of the registered stack, with a registration;
    with the white-line/LCF maps of a spectral kernel), of the file the client checked."""
    from txmdb.pipeline import extract_edges

    try:
        with checked.reading(info) as held:
            return start, stop, extract_edges(held, params, start, stop, registration=registration, spectral=spectral)
    except InputError as exc:
        raise _problem(exc) from None


def _gradient_task(binned, labels, centroids, step: float, origin: int):
    """Runs on a worker: the gradient kernel on one halo-padded slab of a binned map."""
    from txmdb.analysis.gradient import gradient_vectors

    return gradient_vectors(binned, labels, centroids, step=step, origin=origin)


def check_scheduler_address(scheduler: str) -> None:
    """Refuse a malformed scheduler address in one line, before any scan is read.

    Dask's own parser, plus what it leaves to the connection attempt: port 99999 would time
    out after 10 s, an unknown scheme end in a traceback.
    """
    try:
        from distributed.comm.addressing import parse_address, parse_host_port
    except ImportError:
        raise ParameterError("scheduler", "running on a Dask scheduler needs Dask: pip install 'txmdb[distributed]'"
                             ) from None
    try:
        scheme, location = parse_address(scheduler)
        host, port = parse_host_port(location)
        if scheme not in ("tcp", "tls", "ws", "wss", "ucx") or not host or not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise TxmdbError(f"Dask scheduler address {scheduler!r} is malformed: expected tcp://host:port, "
                         "e.g. tcp://10.0.0.5:8786") from None


class SchedulerUnreachable(TxmdbError):
    """The scheduler did not answer: the cluster's trouble, not the scans' (a job goes back to the queue)."""


def connect(scheduler: str):
    """A Dask client for ``scheduler`` (tcp://host:port), or a one-line error."""
    check_scheduler_address(scheduler)  # and that Dask is installed
    from dask.distributed import Client

    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnreachable(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    except (ValueError, TypeError) as exc:  # e.g. tls:// without a TLS configuration
        raise TxmdbError(f"cannot use the Dask scheduler at {scheduler}: {exc}") from None


def _stack_bytes(info) -> int:
    return 4 * math.prod(info.shape)


def analyze_on_cluster(catalog, scan_ids: list[int], options, *, scheduler: str,
                       split_bytes: int = SPLIT_BYTES, registration=LATEST) -> Iterator:
    """Analyse ``scan_ids`` on the cluster; yields each Analysis as it is recorded.

    A single scan, and every scan whose float32 stack exceeds ``split_bytes``, is split
    into slabs across the workers (:func:`analyze_scan_distributed`); the other scans
    run as one task each, all at once (:func:`analyze_scans_distributed`).
    ``registration`` as :func:`txmdb.catalog.txm.analyze_scan`'s.
    """
    prepared = [_prepare(catalog, scan_id, options, registration) for scan_id in scan_ids]
    with connect(scheduler) as client:
        split = [p for p in prepared if len(prepared) == 1 or _stack_bytes(p[1]) > split_bytes]
        whole = [p for p in prepared if not any(p is s for s in split)]
        if whole:
            yield from _whole_scans(catalog, client, whole)
        for scan, info, scan_options, checked in split:
            yield _split_scan(catalog, client, scan, info, scan_options, checked)


def analyze_scan_distributed(catalog, scan_id: int, options, *, scheduler: str, registration=LATEST):
    """Analyse one scan split into slabs across the cluster's workers.

    Parameters
    ----------
    catalog
        The catalogue (the client writes the results file and the rows).
    scan_id : int
    options : txmdb.pipeline.AnalysisOptions
    scheduler : str
        Dask scheduler address; the workers must see the scan's file at its path.
    registration : int, ``LATEST`` or None
        As :func:`txmdb.catalog.txm.analyze_scan`'s.

    Returns
    -------
    txmdb.db.models.Analysis
        The same tables as :func:`txmdb.catalog.txm.analyze_scan` gives.
    """
    prepared = _prepare(catalog, scan_id, options, registration)
    with connect(scheduler) as client:
        return _split_scan(catalog, client, *prepared)


def analyze_scans_distributed(catalog, scan_ids: list[int], options, *, scheduler: str,
                              registration=LATEST) -> Iterator:
    """Analyse many scans at once, one whole-pipeline task per scan; yields each Analysis."""
    prepared = [_prepare(catalog, scan_id, options, registration) for scan_id in scan_ids]
    with connect(scheduler) as client:
        yield from _whole_scans(catalog, client, prepared)


def _whole_scans(catalog, client, prepared) -> Iterator:
    """One task per scan, all submitted at once; each analysis is recorded as its task ends.

    Every analysis is ``running`` from its submission; when one fails, or the caller stops
    iterating, the others are cancelled and recorded as failed.
    """
    from dask.distributed import as_completed

    futures = {}
    try:
        for scan, info, options, checked in prepared:
            put = catalog.store.begin(ANALYSES, new_analysis(scan, options))
            futures[client.submit(_analyze_on_worker, info, options, str(put.temp), checked, pure=False)] = (scan, put)
        for future in as_completed(futures):
            scan, put = futures[future]
            try:
                with catalog.store.writing(), input_errors(scan.file_path):
                    try:
                        outputs, elapsed = future.result()
                    except _Refused as exc:
                        put.withdraw()
                        raise RefusedInput(scan.file_path, str(exc)) from None
                analysis = record_analysis(put, outputs, elapsed=elapsed)
            except BaseException as exc:
                put.abort(exc)
                raise
            yield analysis
    except BaseException as exc:
        reason = exc if isinstance(exc, (GeneratorExit, KeyboardInterrupt)) else f"cancelled: {failure_text(exc)}"
        for _scan, put in futures.values():
            put.abort(reason)
        raise
    finally:
        for future in futures:
            future.cancel()


def _prepare(catalog, scan_id: int, options, registration):
    """:func:`prepare_analysis`, the stack at its path for the workers, and the file checked."""
    import dataclasses

    scan, info, options, check = prepare_analysis(catalog, scan_id, options, registration=registration, hold=True)
    try:
        return scan, dataclasses.replace(info, path=Path(scan.file_path)), options, CheckedFile.of(scan, check)
    finally:
        check.cancel()          # every reader opens the file again through the CheckedFile


def _split_scan(catalog, client, scan, info, options, checked: CheckedFile):
    """Edge phase per slab and gradient kernel per halo slab on the workers, the rest here (this
    process reads the file too, for the clusters, through ``checked`` as the workers do)."""
    from dask.distributed import as_completed

    from txmdb.analysis.gradient import GradientVectors
    from txmdb.pipeline import analyze_stack, slab_bounds, spectral_kernel

    futures: list = []

    def edge_source(_held, params, slab_size):
        # the shifts are a few hundred numbers, the spectral kernel's arrays a few kB: they
        # travel with every task, as the stack at its path (``_held`` is this process's descriptor)
        spectral = spectral_kernel(info, options)
        futures.extend(client.submit(_edge_task, info, params, start, stop, options.registration, spectral,
                                     checked, pure=False)
                       for start, stop in slab_bounds(info, slab_size))
        for future in as_completed(futures):
            yield future.result()
            future.release()                     # the slab is in the edge map now

    def vectors_fn(binned, labels, centroids, step):
        plane = max(1, math.prod(binned.shape[1:]))
        rows = max(1, _GRADIENT_SLAB_VOXELS // plane)
        n_rows = binned.shape[0]
        parts = []
        # hash=False: equal arrays (the centroids of two binning factors) must not share one key, which
        # the first factor's release would take from the second's tasks ("lost dependencies")
        centroids_f = client.scatter(centroids, broadcast=True, hash=False)
        for start in range(0, n_rows, rows):
            # one halo row on each side: the kernel's outermost rows get no vector
            lo, hi = max(start - 1, 0), min(start + rows + 1, n_rows)
            piece = client.scatter([np.ascontiguousarray(binned[lo:hi]),
                                    np.ascontiguousarray(labels[lo:hi])], hash=False)
            parts.append(client.submit(_gradient_task, *piece, centroids_f, step, lo, pure=False))
        futures.extend(parts)
        # slab order = C order of the whole map, as in map_gradient_vectors
        return GradientVectors.concat(client.gather(parts))

    t0 = time.perf_counter()
    with catalog.store.put(ANALYSES, new_analysis(scan, options)) as put:
        try:
            try:
                with input_errors(scan.file_path), checked.reading(info) as held:
                    outputs = analyze_stack(held, options, results_path=put.temp, edge_source=edge_source,
                                            vectors_fn=vectors_fn, named=scan.file_path)
            except RefusedInput:
                put.withdraw()
                raise
            return record_analysis(put, outputs, elapsed=time.perf_counter() - t0)
        finally:
            for future in futures:
                future.cancel()
