"""TXM scans and their analyses: ingest, analyse, store statistics."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Iterable

from sqlalchemy import select

from txmdb import __version__
from txmdb.catalog._records import file_provenance, finite_or_none, frame_records, get_or_create, jsonable
from txmdb.catalog.samples import get_sample
from txmdb.db.models import STATISTICS_TABLES, Analysis, TXMScan
from txmdb.errors import InputError, NotFoundError, ParameterError, RefusedInput, input_errors
from txmdb.io.files import KnownHash
from txmdb.store import ANALYSES

#: ``registration`` of :func:`analyze_scan`: apply the scan's newest registration, if it has one
#: (``None``: read the stack as it is; an id: that registration, which must be the scan's).
LATEST = "latest"


def ingest_scan(
    catalog,
    path: str | os.PathLike,
    *,
    sample: str,
    state: str | None = None,
    layout: str = "auto",
    data: str | None = None,
    energy: str | None = None,
    voxel_nm: float | None = None,
) -> tuple[TXMScan, bool]:
    """Validate an HDF5 tomogram and record it; the same file again returns the existing scan."""
    from txmdb.io.hdf5 import open_stack, voxel_size_problem

    # before hashing the file: 1e-320 nm or 1 km are mistakes, not sizes (bounds: txmdb.vocabulary)
    if voxel_nm is not None and (problem := voxel_size_problem(voxel_nm)):
        raise InputError(path, problem)
    # the identity of the bytes hashed, so that the scan's analyses can trust the SHA-256 (DESIGN §8)
    provenance = file_provenance(path, identity=True)
    with catalog.session() as session:
        sample_id = get_sample(session, sample).id
    info = open_stack(path, layout=layout, data=data, energy=energy, voxel_nm=voxel_nm)

    def create(session):
        scan = TXMScan(
            sample_id=sample_id, state=state, layout=info.layout, data_path=info.data_path,
            energy_path=info.energy_path, white_path=info.white_path, dark_path=info.dark_path,
            ndim=info.ndim, shape=list(info.shape), dtype=str(info.dtype), n_energies=len(info.energies_ev),
            energy_min_ev=float(info.energies_ev[0]), energy_max_ev=float(info.energies_ev[-1]),
            energies_ev=[float(e) for e in info.energies_ev], voxel_size_nm=info.voxel_size_nm, **provenance,
        )
        session.add(scan)
        return scan

    # what the user asked for again must be what the scan records: a re-ingest is no way to change it
    recorded = {"state": state, "voxel_size_nm": voxel_nm, "layout": None if layout == "auto" else info.layout,
                "data_path": data and info.data_path, "energy_path": energy and info.energy_path}
    return get_or_create(catalog, TXMScan, provenance["file_sha256"], create, owner=("sample_id", sample_id),
                         recorded=recorded, source=path)


def get_scan(session, scan_id: int) -> TXMScan:
    from txmdb.vocabulary import MAX_CATALOGUE_INT

    # An id beyond the id column's range is no scan (asked of SQLite, it would overflow the binding).
    scan = session.get(TXMScan, scan_id) if 0 <= scan_id <= MAX_CATALOGUE_INT else None
    if scan is None:
        raise NotFoundError(f"no TXM scan with id {scan_id}; see 'txmdb query scans'")
    return scan


def all_scan_ids(catalog) -> list[int]:
    with catalog.session() as session:
        return list(session.scalars(select(TXMScan.id).order_by(TXMScan.id)))


def open_scan_stack(scan: TXMScan):
    """Re-open the scan's file with the layout recorded at ingest; it must be unchanged."""
    from txmdb.io.hdf5 import open_stack

    path = Path(scan.file_path)
    if not path.is_file():
        raise InputError(path, f"the file of scan {scan.id} is no longer there")
    return open_stack(path, layout=scan.layout, data=scan.data_path, energy=scan.energy_path, voxel_nm=scan.voxel_size_nm)


def prepare_scan(catalog, scan_id: int, *, verify_hash: bool = True, options=None, hold: bool = False):
    """The scan record and its re-opened stack, after checking the file is the one ingested.

    With ``options``, windows this stack cannot serve are refused here, before an analysis
    is recorded: a refused option is a usage error, not a failed analysis. With ``hold``
    (and ``verify_hash``), also the open check (:class:`~txmdb.io.files.KnownHash` or
    :class:`~txmdb.io.files.BackgroundHash`): the stack then reads the file checked through
    its descriptor (``source``), not whatever the path names later; the caller cancels it
    (:func:`named_as_scan` names the scan's file in the reads' errors).
    """
    from txmdb.io.files import BackgroundHash
    from txmdb.pipeline import edge_kernel, settle_spectral, spectral_kernel

    if hold and not verify_hash:
        raise ValueError("prepare_scan: hold=True holds the hash's descriptor; it needs verify_hash=True")
    with catalog.session() as session:
        scan = get_scan(session, scan_id)
    # an unchanged identity vouches for the SHA-256, as in analyze_scan (DESIGN §8)
    hashing = None
    if verify_hash:
        hashing = (KnownHash.if_unchanged(scan.file_path, known_hash(scan))
                   or BackgroundHash(scan.file_path, low_priority=False))
    try:
        if hashing is not None and hashing.started_ns is not None:      # hashed, not trusted
            check_unchanged(scan, _hash_result(scan, hashing))
        info = open_scan_stack(scan)
        if hashing is not None:     # the hash matched (trusted, or checked above)
            check_stack(scan, info)
        if options is not None:
            edge_kernel(info, options.params)
            spectral_kernel(info, settle_spectral(info, options))   # white-line window, references
    except BaseException:
        if hashing is not None:
            hashing.cancel()
        raise
    if not hold:
        if hashing is not None:
            hashing.cancel()
        return scan, info
    return scan, info if hashing is None else dataclasses.replace(info, path=Path(hashing.source)), hashing


def resolve_registration(catalog, scan_id: int, registration: int | str | None = LATEST):
    """The registration an analysis of ``scan_id`` applies while it reads (DESIGN §10).

    Parameters
    ----------
    registration : int, ``LATEST`` or None
        A registration id (it must be one of this scan's), the scan's newest registration
        (none if it has none), or None for the stack as it is.

    Returns
    -------
    txmdb.pipeline.AppliedRegistration or None
    """
    from txmdb.catalog.registration import get_registration, latest_registration, shift_array
    from txmdb.pipeline import AppliedRegistration

    with catalog.session() as session:
        get_scan(session, scan_id)
        if registration is None:
            return None
        if registration == LATEST:
            found = latest_registration(session, scan_id)
            if found is None:
                return None
        else:
            found = get_registration(session, int(registration))
            if found.scan_id != scan_id:
                raise ParameterError("registration", f"registration {found.id} belongs to scan {found.scan_id}, "
                                                     f"not to scan {scan_id}")
        return AppliedRegistration(shift_array(found), registration_id=found.id)


def prepare_analysis(catalog, scan_id: int, options, *, registration: int | str | None = LATEST,
                     verify_hash: bool = True, hold: bool = False):
    """:func:`prepare_scan`, and the options with the registration to apply (:func:`resolve_registration`);
    with ``hold``, :func:`prepare_scan`'s open check too, fourth (the caller cancels it)."""
    applied = resolve_registration(catalog, scan_id, registration)
    scan, info, *held = prepare_scan(catalog, scan_id, verify_hash=verify_hash, options=options, hold=hold)
    try:
        return scan, info, _applied_options(scan, info, options, applied), *held
    except BaseException:
        for check in held:
            check.cancel()
        raise


def _applied_options(scan: TXMScan, info, options, applied):
    """``options`` settled for this stack (:func:`txmdb.pipeline.settle_spectral`), with the
    registration ``applied`` after its shifts are checked against the stack."""
    from txmdb.pipeline import settle_spectral

    if applied is not None:
        from txmdb.io.hdf5 import registration_shifts

        with input_errors(scan.file_path):
            registration_shifts(info, applied.shifts)
    return dataclasses.replace(settle_spectral(info, options), registration=applied)


def new_analysis(scan: TXMScan, options) -> Analysis:
    """The row of an analysis about to run; the store commits it as ``running``."""
    from txmdb.pipeline import analysis_parameters

    applied = options.registration
    return Analysis(scan_id=scan.id, parameters=jsonable(analysis_parameters(options, voxel_size_nm=scan.voxel_size_nm)),
                    txmdb_version=__version__, input_sha256=scan.file_sha256,
                    registration_id=None if applied is None else applied.registration_id)


def analyze_scan(
    catalog,
    scan_id: int,
    options,
    *,
    registration: int | str | None = LATEST,
    progress: Callable[[int, int], None] | None = None,
    verify_hash: bool = True,
    verify_input: bool = False,
) -> Analysis:
    """Run the TXM pipeline on one scan and record it through the store's protocol.

    The analysis row is ``running`` while the pipeline writes its results file, then
    ``done`` with its statistics and file, or ``failed`` with the error (see
    :mod:`txmdb.store`; a killed process leaves it ``running`` for ``txmdb db check``).
    ``registration`` (:func:`resolve_registration`; default the scan's newest) is applied
    while the stack is read and recorded with the analysis.

    The input's SHA-256 is trusted without a hash while the file's identity is the one
    recorded when it was last hashed and matched (:func:`known_hash`); ``verify_input``
    hashes it in full regardless. A full hash that matches records the identity.
    """
    from txmdb.catalog.integrity import change_wins
    from txmdb.io.single_read import SingleRead
    from txmdb.pipeline import analyze_stack, input_hash

    t0 = time.perf_counter()
    scan, info, options = prepare_analysis(catalog, scan_id, options, registration=registration,
                                           verify_hash=False)
    # The file's SHA-256 is checked while the analysis runs, by a low-priority thread filling
    # the gaps of the edge pass (hashing the edge pass' own reads when the stack is one
    # sequential read of the file, else reading it a second time); a file changed since
    # ingest fails the analysis before anything of it is recorded as done.
    hashing = (input_hash(info, options, scan.file_path, known=None if verify_input else known_hash(scan))
               if verify_hash else None)
    if hashing is not None:
        # h5py reads the file checked or hashed, not whatever the path names by then (a folder
        # renamed over it)
        info = dataclasses.replace(info, path=Path(hashing.source))
    try:
        with catalog.store.put(ANALYSES, new_analysis(scan, options)) as put:
            try:
                # a read error of a file changed since ingest reported as the change (change_wins)
                with input_errors(scan.file_path), named_as_scan(scan, info), change_wins(scan, hashing):
                    # the hash at normal priority once the stack is read: beside the statistics'
                    # threads a nice-19 hash would be starved, then run alone at the end
                    outputs = analyze_stack(info, options, results_path=put.temp, progress=progress,
                                            after_read=None if hashing is None else hashing.promote,
                                            reader=hashing if isinstance(hashing, SingleRead) else None,
                                            named=scan.file_path)
            except RefusedInput:
                put.withdraw()
                raise
            put.hash_ahead()        # the results file's hash beside the rest of the input's
            identity = None
            if hashing is not None:
                check_unchanged(scan, _hash_result(scan, hashing))
                outputs.timings_s.update(hash=hashing.elapsed_s, hash_wait=hashing.waited_s)
                identity = new_identity(scan, hashing)
            check_stack(scan, info)
            return record_analysis(put, outputs, elapsed=time.perf_counter() - t0,
                                   scan_identity=None if identity is None else (scan.id, identity))
    finally:
        if hashing is not None:
            hashing.cancel()


@contextlib.contextmanager
def named_as_scan(scan: TXMScan, info):
    """An InputError naming ``info.path`` renamed to name the scan's file, when ``info`` reads
    it through a descriptor (``/proc/self/fd/N``, a hashing object's ``source``)."""
    try:
        yield
    except InputError as exc:
        if exc.source != str(info.path) or info.path == Path(scan.file_path):
            raise
        raise type(exc)(scan.file_path, exc.problem) from None


def _hash_result(scan: TXMScan, hashing) -> str:
    try:
        digest = hashing.result()
    except OSError as exc:
        raise InputError(scan.file_path, f"cannot read: {exc.strerror or exc}") from None
    if hashing.identity is None:
        # written to while read: the bytes analysed need not be the bytes hashed (the single
        # read's hash re-reads what it lagged behind on; h5py reads the slabs apart from it)
        raise InputError(scan.file_path, "the file was written to while it was analysed; analyse it again")
    return digest


def known_hash(scan: TXMScan) -> tuple[str, str] | None:
    """(SHA-256, identity) the catalogue recorded for the scan's file, for
    :func:`txmdb.pipeline.input_hash` and :meth:`txmdb.io.files.KnownHash.if_unchanged`; None
    while no identity is recorded (the file is then hashed in full)."""
    return None if scan.file_identity is None else (scan.file_sha256, scan.file_identity)


def new_identity(scan: TXMScan, hashing) -> str | None:
    """The identity to record for the scan's file after ``hashing`` (a full hash) matched:
    :func:`txmdb.io.files.settled_identity`, if it is not the one recorded already."""
    from txmdb.io.files import settled_identity

    identity = settled_identity(hashing.identity, hashing.started_ns)
    return None if identity == scan.file_identity else identity


def record_identity(session, scan_id: int, identity: str) -> None:
    """Record ``identity`` as the scan file's, in the caller's transaction (with what the hash allowed)."""
    from sqlalchemy import update

    session.execute(update(TXMScan).where(TXMScan.id == scan_id).values(file_identity=identity))


def check_unchanged(scan: TXMScan, sha256: str) -> None:
    """InputError when ``sha256`` is not the one the scan's file had at ingest."""
    if sha256 != scan.file_sha256:
        raise InputError(scan.file_path, f"the file changed since scan {scan.id} was ingested (SHA-256 differs)")


def check_stack(scan: TXMScan, info) -> None:
    """InputError when ``info`` does not describe the stack ingested. The metadata is read by
    path, apart from the descriptor whose SHA-256 is checked (a folder renamed over the path
    and back between the opens): after the hash matched, this vouches that it is the stack's.
    A changed file fails the hash first (its message wins), where one is taken."""
    if (list(info.shape) != list(scan.shape) or str(info.dtype) != scan.dtype
            or [float(e) for e in info.energies_ev] != [float(e) for e in scan.energies_ev]):
        raise InputError(scan.file_path, f"the file changed since scan {scan.id} was ingested "
                                         f"(its stack's shape, data type or energies differ)")


def record_analysis(put, outputs, *, elapsed: float, scan_identity: tuple[int, str] | None = None) -> Analysis:
    """Commit a written analysis: its figures and statistics tables, ``done``, its file in place;
    with ``scan_identity`` (scan id, identity text), its input's identity (:func:`new_identity`)."""

    def fill(session, analysis: Analysis) -> Analysis:
        if scan_identity is not None:
            record_identity(session, *scan_identity)
        timings = dict(outputs.timings_s)
        analysis.gradient_unit = outputs.gradient_unit
        analysis.n_valid_voxels = int(outputs.n_valid_voxels)
        analysis.n_particles = int(outputs.n_particles)
        analysis.mean_edge_ev = finite_or_none(outputs.mean_edge_ev)
        analysis.std_edge_ev = finite_or_none(outputs.std_edge_ev)
        t_db = time.perf_counter()
        insert_statistics(session, analysis.id, outputs.tables)
        timings["db_write"] = time.perf_counter() - t_db
        timings["total"] = elapsed + timings["db_write"]
        analysis.timings_s = timings
        return analysis

    return put.commit(fill)


def insert_statistics(session, analysis_id: int, tables: dict) -> None:
    """Bulk-insert the pipeline's DataFrames into the statistics (and cluster) tables."""
    from txmdb.db.models import CLUSTER_TABLES

    for name, frame in tables.items():
        if frame is None or frame.empty:
            continue
        model = STATISTICS_TABLES.get(name) or CLUSTER_TABLES[name]
        session.execute(model.__table__.insert(), frame_records(frame, analysis_id=analysis_id))


def analyses_of(session, scan_ids: Iterable[int]) -> list[Analysis]:
    return list(session.scalars(select(Analysis).where(Analysis.scan_id.in_(list(scan_ids))).order_by(Analysis.id)))
