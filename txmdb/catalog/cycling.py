"""Cycling runs: read a cycler file, keep its records in the store, its per-cycle metrics in the catalogue."""

from __future__ import annotations

import os
import uuid

from sqlalchemy import select

from txmdb.catalog._records import commit_with_file, existing_by_sha, file_provenance, frame_records
from txmdb.catalog.samples import active_mass_g, get_cell
from txmdb.db.models import Cycle, CyclingRun
from txmdb.errors import DuplicateError, InputError


def ingest_cycling(
    catalog,
    path: str | os.PathLike,
    *,
    cell: str,
    file_format: str = "auto",
    columns: dict[str, str] | None = None,
    upper_cutoff_v: float | None = None,
    reference_cycle: int = 2,
) -> tuple[CyclingRun, bool]:
    """Ingest one cycler file for ``cell``; the same file again returns the existing run."""
    from txmdb.analysis.cycling import cycle_metrics
    from txmdb.io.cycling import read_cycler_file

    if reference_cycle < 1:
        raise InputError(path, f"--reference-cycle must be at least 1, got {reference_cycle}")
    if upper_cutoff_v is not None and not upper_cutoff_v > 0:
        raise InputError(path, f"--upper-cutoff must be a positive voltage, got {upper_cutoff_v}")
    provenance = file_provenance(path)
    with catalog.session() as session:
        owner = get_cell(session, cell)
        mass_g = active_mass_g(owner)
        cutoff = upper_cutoff_v if upper_cutoff_v is not None else owner.upper_cutoff_v
        convention = owner.ce_convention
        cell_id = owner.id
    if mass_g is None:
        raise InputError(path, f"cell {cell!r} has no active mass, so mAh/g cannot be computed")
    found = existing_by_sha(catalog, CyclingRun, provenance["file_sha256"])
    if found is not None:
        return found, False

    records = read_cycler_file(path, file_format=file_format, columns=columns)
    metrics = cycle_metrics(records.frame, active_mass_g=mass_g, upper_cutoff_v=cutoff, ce_convention=convention)
    if metrics.empty:
        raise InputError(path, "no complete cycle found in the records")

    folder = catalog.store_path("cycling")
    pending = folder / f".pending-{uuid.uuid4().hex}.parquet"
    try:
        with catalog.writing_store():
            folder.mkdir(parents=True, exist_ok=True)
            records.frame.to_parquet(pending, index=False)
        from txmdb.io.files import sha256_file

        with catalog.session() as session:
            run = CyclingRun(
                cell_id=cell_id, file_format=records.file_format, n_records=len(records.frame),
                n_cycles=len(metrics), upper_cutoff_v=cutoff, reference_cycle=reference_cycle,
                records_path="", records_sha256=sha256_file(pending), column_map=dict(records.column_map),
                **provenance,
            )
            session.add(run)
            session.flush()
            final = catalog.store_path("cycling", f"{run.id}.parquet")
            run.records_path = str(final.resolve())
            session.execute(Cycle.__table__.insert(), frame_records(metrics, run_id=run.id))
            session.flush()
            commit_with_file(session, pending, final)
            return run, True
    except DuplicateError:
        # Another writer ingested the same file at the same moment: its run stands.
        found = existing_by_sha(catalog, CyclingRun, provenance["file_sha256"])
        if found is None:
            raise
        return found, False
    finally:
        pending.unlink(missing_ok=True)


def runs_of_cell(session, cell_id: int) -> list[CyclingRun]:
    return list(session.scalars(select(CyclingRun).where(CyclingRun.cell_id == cell_id).order_by(CyclingRun.id)))
