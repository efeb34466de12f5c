"""Cycling runs: read a cycler file, keep its records in the store, its per-cycle metrics in the catalogue."""

from __future__ import annotations

import math
import os

from sqlalchemy import select

from txmdb.catalog._records import existing_by_sha, file_provenance, frame_records, record_with_store_file
from txmdb.catalog.samples import active_mass_g, get_cell
from txmdb.db.models import Cycle, CyclingRun
from txmdb.errors import InputError, ParameterError, input_errors
from txmdb.store import CYCLING
from txmdb.vocabulary import MAX_CYCLE_NUMBER


def ingest_cycling(
    catalog,
    path: str | os.PathLike,
    *,
    cell: str,
    file_format: str = "auto",
    columns: dict[str, str] | None = None,
    encoding: str | None = None,
    upper_cutoff_v: float | None = None,
    reference_cycle: int | None = None,
    source_name: str | None = None,
) -> tuple[CyclingRun, bool]:
    """Ingest one cycler file for ``cell``; the same file again returns the existing run.

    ``reference_cycle``: the cycle retention is reckoned from (default 2). ``upper_cutoff_v``:
    default the cell's. Given again for a file already ingested, either must be what its run
    records (an InputError otherwise). ``source_name``: the file's own name when ``path`` is a
    copy (a web upload's), default the path's base name (:func:`~txmdb.catalog._records.file_provenance`)."""
    from txmdb.analysis.cycling import cycle_metrics
    from txmdb.io.cycling import read_cycler_file, require_cycling

    recorded = {"upper_cutoff_v": upper_cutoff_v, "reference_cycle": reference_cycle}
    reference_cycle = 2 if reference_cycle is None else reference_cycle
    if not 1 <= reference_cycle <= MAX_CYCLE_NUMBER:
        raise ParameterError("reference_cycle", f"reference cycle {reference_cycle} is not a cycle number "
                                                f"(cycles count from 1 to {MAX_CYCLE_NUMBER})")
    if upper_cutoff_v is not None and not (math.isfinite(upper_cutoff_v) and upper_cutoff_v > 0):
        raise ParameterError("upper_cutoff_v", f"upper cut-off {upper_cutoff_v} V is not a positive voltage")
    provenance = file_provenance(path, name=source_name)
    with catalog.session() as session:
        owner = get_cell(session, cell)
        mass_g = active_mass_g(owner)
        cutoff = upper_cutoff_v if upper_cutoff_v is not None else owner.upper_cutoff_v
        convention = owner.ce_convention
        cell_id = owner.id
    if mass_g is None:
        raise InputError(path, f"cell {cell!r} has no active mass, so mAh/g cannot be computed")
    found = existing_by_sha(catalog, CyclingRun, provenance["file_sha256"], owner=("cell_id", cell_id),
                            recorded=recorded, source=path)
    if found is not None:
        return found, False

    records = read_cycler_file(path, file_format=file_format, columns=columns, encoding=encoding)
    require_cycling(records, path)
    with input_errors(path):
        metrics = cycle_metrics(records.frame, active_mass_g=mass_g, upper_cutoff_v=cutoff, ce_convention=convention)
    if metrics.empty:
        raise InputError(path, "no complete cycle found in the records")

    def create(session) -> CyclingRun:
        run = CyclingRun(
            cell_id=cell_id, file_format=records.file_format, n_records=len(records.frame), n_cycles=len(metrics),
            upper_cutoff_v=cutoff, reference_cycle=reference_cycle, records_path="", records_sha256="",
            column_map=dict(records.column_map), **provenance,
        )
        session.add(run)
        session.flush()
        session.execute(Cycle.__table__.insert(), frame_records(metrics, run_id=run.id))
        return run

    return record_with_store_file(
        catalog, CYCLING, provenance["file_sha256"], write=lambda temp: records.frame.to_parquet(temp, index=False),
        create=create, owner=("cell_id", cell_id), recorded=recorded, source=path,
    )


def runs_of_cell(session, cell_id: int) -> list[CyclingRun]:
    return list(session.scalars(select(CyclingRun).where(CyclingRun.cell_id == cell_id).order_by(CyclingRun.id)))
