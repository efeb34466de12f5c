"""``txm export``: a scan's stack, registered or as it is, as a TXM_Sandbox file (DESIGN §6, §10)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from txmdb.catalog.txm import LATEST, prepare_scan, resolve_registration
from txmdb.errors import InputError, TxmdbError, input_errors


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
    scan, info = prepare_scan(catalog, scan_id)
    if output.exists() and os.path.samefile(output, scan.file_path):
        raise InputError(output, f"is the file of scan {scan_id}; give another file to write")
    attrs = {"txmdb_scan_id": scan.id, "txmdb_source": scan.file_path, "txmdb_source_sha256": scan.file_sha256}
    if applied is not None:
        attrs.update({f"txmdb_{key}": value for key, value in applied.parameters().items()})
    try:
        with input_errors(scan.file_path):
            write_sandbox_stack(info, output, registration=applied, attrs=attrs, progress=progress)
    except OSError as exc:
        raise InputError(output, f"cannot write: {describe_os_error(exc)}") from None
    return applied
