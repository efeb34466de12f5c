"""``txm export``: a scan's stack, registered or as it is, as a TXM_Sandbox file (DESIGN §6, §10),
or one map of its latest analysis as HDF5 or TIFF (§11)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from txmdb.catalog import refuse_catalogue_file
from txmdb.catalog.txm import LATEST, named_as_scan, prepare_scan, resolve_registration
from txmdb.errors import InputError, TxmdbError, input_errors


def _still_as_checked(scan, hashing) -> None:
    """InputError when the file read through ``hashing.source`` was written to since it was
    checked (its descriptor's identity, so a rename over the path meanwhile is no change to
    the bytes exported): a trusted SHA-256 vouches only for an unchanged file."""
    from txmdb.io.files import file_identity

    try:
        same = file_identity(os.stat(hashing.source)) == hashing.identity
    except OSError as exc:
        raise InputError(scan.file_path, f"cannot read: {exc.strerror or exc}") from None
    if not same:
        raise InputError(scan.file_path, "the file was written to while it was exported; export it again")


def export_scan(catalog, scan_id: int, output: str | os.PathLike, *, registered: bool = False,
                progress: Callable[[int, int], None] | None = None):
    """Stream scan ``scan_id``'s stack into ``output`` in the TXM_Sandbox layout.

    Parameters
    ----------
    catalog : Catalog
    scan_id : int
    output : path-like
        HDF5 file to write; replaced atomically, nothing left on failure.
    registered : bool
        Apply the scan's latest registration while reading (DESIGN §10).
    progress : callable, optional
        ``progress(done, total)`` per slab.

    Returns
    -------
    txmdb.pipeline.AppliedRegistration or None
        The registration applied.

    Raises
    ------
    InputError
        ``output`` cannot be written (a folder, a missing folder, the scan's own file, a
        device, no space…), or the scan's file changed since ingest or cannot be read.
    TxmdbError
        ``registered`` and the scan has no registration.
    """
    from txmdb.io.export import write_sandbox_stack
    from txmdb.io.outputs import check_file_destination
    from txmdb.store import describe_os_error

    output = Path(output)
    check_file_destination(output)                    # before the file is hashed
    if output.exists() and not output.is_file():
        raise InputError(output, "is not a regular file; an HDF5 file is written under a temporary name and "
                                 "renamed")
    applied = resolve_registration(catalog, scan_id, LATEST) if registered else None
    if registered and applied is None:
        raise TxmdbError(f"scan {scan_id} has no registration; run 'txmdb txm register {scan_id}' first")
    # read through the descriptor checked, not the path (a folder renamed over it meanwhile)
    scan, info, hashing = prepare_scan(catalog, scan_id, hold=True)
    try:
        if output.exists() and os.path.samefile(output, scan.file_path):
            raise InputError(output, f"is the file of TXM scan {scan_id}; give another file to write")
        refuse_catalogue_file(catalog, output)
        attrs = {"txmdb_scan_id": scan.id, "txmdb_source": scan.file_path, "txmdb_source_sha256": scan.file_sha256}
        if applied is not None:
            attrs.update({f"txmdb_{key}": value for key, value in applied.parameters().items()})
        try:
            with input_errors(scan.file_path), named_as_scan(scan, info):
                # the file read (through the descriptor checked) not written to meanwhile, else
                # nothing is left under ``output``
                write_sandbox_stack(info, output, registration=applied, attrs=attrs, progress=progress,
                                    before_commit=lambda: _still_as_checked(scan, hashing))
        except OSError as exc:
            raise InputError(output, f"cannot write: {describe_os_error(exc)}") from None
    finally:
        hashing.cancel()
    return applied


def export_map(catalog, scan_id: int, name: str, output: str | os.PathLike, *, analysis_id: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> int:
    """Write map ``name`` of scan ``scan_id``'s latest finished analysis (or of its finished
    analysis ``analysis_id``) into ``output`` (DESIGN §11).

    ``.h5``: data set ``/map``; ``.tif``: an ImageJ float32 stack (:func:`txmdb.io.export.write_map`);
    NaN where masked, with the voxel size and the analysis' parameters.

    Returns
    -------
    int
        The analysis the map is of.

    Raises
    ------
    ParameterError
        ``name`` is no map name.
    NotFoundError
        No such scan, it has no finished analysis, or ``analysis_id`` is none of its finished ones.
    InputError
        ``output`` cannot be written or has another suffix than .h5/.hdf5/.tif/.tiff, the
        analysis has no map ``name`` (the message lists its maps), or its results file changed.
    """
    import json

    from sqlalchemy import select

    from txmdb.io.maps import map_shape, parse_map
    from txmdb.catalog.txm import get_scan
    from txmdb.db.models import Analysis
    from txmdb.errors import NotFoundError, StoreFileError
    from txmdb.io.export import map_format, write_map
    from txmdb.io.outputs import check_file_destination
    from txmdb.store import describe_os_error
    from txmdb.vocabulary import MAX_CATALOGUE_INT

    spec = parse_map(name)
    output = Path(output)
    with input_errors(output):
        map_format(output)
    check_file_destination(output)
    if output.exists() and not output.is_file():
        raise InputError(output, "is not a regular file; a map is written under a temporary name and renamed")
    with catalog.session() as session:
        scan = get_scan(session, scan_id)
        finished = select(Analysis).where(Analysis.scan_id == scan_id, Analysis.status == "done")
        if analysis_id is not None:
            analysis = session.scalar(finished.where(Analysis.id == analysis_id)) \
                if 0 <= analysis_id <= MAX_CATALOGUE_INT else None
            if analysis is None:
                raise NotFoundError(f"scan {scan_id} has no finished analysis {analysis_id}; see "
                                    f"'txmdb txm show {scan_id}'")
        else:
            analysis = session.scalar(finished.order_by(Analysis.id.desc()).limit(1))
        if analysis is None:
            raise NotFoundError(f"scan {scan_id} has no finished analysis; run 'txmdb txm analyze {scan_id}' first")
        voxel = scan.voxel_size_nm
        attrs = {"txmdb_scan_id": scan.id, "txmdb_analysis_id": analysis.id, "txmdb_map": spec.name,
                 "txmdb_unit": spec.unit, "txmdb_parameters": json.dumps(analysis.parameters),
                 "txmdb_source_sha256": scan.file_sha256}
        results_path, results_sha256 = analysis.results_path, analysis.results_sha256
    refuse_catalogue_file(catalog, output)
    try:
        results = catalog.store.open_hdf5(results_path, results_sha256)
    except StoreFileError as exc:
        raise InputError(results_path, f"the results file of analysis {attrs['txmdb_analysis_id']} {exc.problem}") \
            from None
    with results:
        map_shape(results, spec.name)                     # a map the analysis lacks: before any file
        try:
            write_map(results, spec.name, output, voxel_size_nm=voxel, attrs=attrs, progress=progress)
        except OSError as exc:
            raise InputError(output, f"cannot write: {describe_os_error(exc)}") from None
    return attrs["txmdb_analysis_id"]
