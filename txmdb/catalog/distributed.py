"""Analyses on a Dask cluster: workers read the HDF5 files from shared storage and run the
same pipeline; the client writes the results to the catalogue (one transaction per scan)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Iterator

from txmdb.catalog.txm import pending_results_path, prepare_scan, record_analysis
from txmdb.errors import InputError, TxmdbError


def _analyze_on_worker(info, options, pending: str):
    """Runs on a worker: the whole pipeline for one scan, results file into the shared store."""
    from txmdb.pipeline import analyze_stack

    t0 = time.perf_counter()
    outputs = analyze_stack(info, options, results_path=Path(pending))
    return outputs, time.perf_counter() - t0


def connect(scheduler: str):
    """A Dask client for ``scheduler`` (tcp://host:port), or a one-line error."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise TxmdbError("--scheduler needs Dask: pip install 'txmdb[distributed]'") from None
    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise TxmdbError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None


def analyze_scans_distributed(catalog, scan_ids: list[int], options, *, scheduler: str) -> Iterator:
    """Analyse many scans at once on the cluster; yields each Analysis as it is recorded."""
    from dask.distributed import as_completed

    prepared = [prepare_scan(catalog, scan_id) for scan_id in scan_ids]
    with connect(scheduler) as client:
        futures = {}
        for scan, info in prepared:
            pending = pending_results_path(catalog)
            pending.parent.mkdir(parents=True, exist_ok=True)
            started = dt.datetime.now(dt.timezone.utc)
            future = client.submit(_analyze_on_worker, info, options, str(pending), pure=False)
            futures[future] = (scan, pending, started)
        try:
            for future in as_completed(futures):
                scan, pending, started = futures[future]
                try:
                    with catalog.writing_store():   # a worker's OSError writing the results file
                        outputs, elapsed = future.result()
                except ValueError as exc:
                    raise InputError(scan.file_path, str(exc)) from None
                try:
                    yield record_analysis(catalog, scan, options, outputs, pending, started=started, elapsed=elapsed)
                finally:
                    pending.unlink(missing_ok=True)
        finally:
            for future, (_scan, pending, _started) in futures.items():
                future.cancel()
                pending.unlink(missing_ok=True)
