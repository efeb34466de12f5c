"""A harvested file into the catalogue: the same catalogue services the ingest commands call.

A rule's values carry the commands' option names (txmdb.harvest.rules); this module hands them
to ``ingest_cycling``, ``ingest_xas``, ``add_xrd`` or ``ingest_scan`` under their keywords, and
queues a txm rule's registration and analysis as jobs (txmdb.jobs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txmdb.errors import NotFoundError


@dataclass(frozen=True)
class Ingested:
    """The record a file became: its table and id, its file's SHA-256, and whether it is new."""

    record_kind: str
    record_id: int
    sha256: str
    created: bool


def ingest_file(catalog, kind: str, path: Path, values: dict[str, Any]) -> Ingested:
    """Ingest ``path`` as a ``kind`` file with the rule's ``values``; the services' errors pass through."""
    record, created = _INGEST[kind](catalog, path, values)
    return Ingested(type(record).__tablename__, record.id, record.file_sha256, created)


def unrecorded(catalog, values: dict[str, Any]) -> str | None:
    """Why a file with these values would fail for a sample or cell the catalogue does not
    have (the services' own message), or None: what ``watch --check`` shows for it."""
    from txmdb.catalog.samples import get_cell, get_sample

    with catalog.session() as session:
        for key, get in (("sample", get_sample), ("cell", get_cell)):
            if values.get(key) is not None:
                try:
                    get(session, str(values[key]))
                except NotFoundError as exc:
                    return str(exc)
    return None


def _cycling(catalog, path: Path, v: dict):
    from txmdb.catalog.cycling import ingest_cycling
    from txmdb.io.cycling import parse_column_map

    return ingest_cycling(catalog, path, cell=v["cell"], file_format=v.get("format", "auto"),
                          columns=parse_column_map(v["columns"]) if v.get("columns") else None,
                          encoding=v.get("encoding"), upper_cutoff_v=v.get("upper_cutoff"),
                          reference_cycle=v.get("reference_cycle"))


def _xas(catalog, path: Path, v: dict):
    from txmdb.catalog.spectroscopy import ingest_xas, xas_parameters
    from txmdb.options import parse_window

    def window(key, open_ends=True):
        return parse_window(v.get(key), key, open_ends=open_ends)

    params = xas_parameters(v["edge"], pre=window("pre"), post=window("post"),
                            edge_window=window("edge_window", False), min_jump=v.get("min_jump"),
                            background=window("background", False), low=window("l3_low", False),
                            high=window("l3_high", False))
    return ingest_xas(catalog, path, sample=v.get("sample"), reference=v.get("reference"), edge=v["edge"],
                      mode=v.get("mode"), state=v.get("state"), depth_um=v.get("depth_um"), params=params)


def _xrd(catalog, path: Path, v: dict):
    from sqlalchemy import select

    from txmdb.catalog.spectroscopy import add_xrd
    from txmdb.db.models import XRDResult
    from txmdb.io.files import sha256_file

    # add_xrd returns the existing record of a known pattern without saying so: ask first.
    with catalog.session() as session:
        known = session.scalar(select(XRDResult.id).where(XRDResult.file_sha256 == sha256_file(path)))
    record = add_xrd(catalog, sample=v["sample"], state=v.get("state"), pattern=path,
                     wavelength_angstrom=v["wavelength"], a_angstrom=v.get("a"), c_angstrom=v.get("c"))
    return record, known is None


def _txm(catalog, path: Path, v: dict):
    from txmdb.catalog.txm import ingest_scan

    return ingest_scan(catalog, path, sample=v["sample"], state=v.get("state"), layout=v.get("layout", "auto"),
                       data=v.get("data"), energy=v.get("energy"), voxel_nm=v.get("voxel_nm"))


_INGEST = {"cycling": _cycling, "xas": _xas, "xrd": _xrd, "txm": _txm}


def missing_reference(catalog, kind: str, values: dict[str, Any]) -> str | None:
    """The error of the sample or cell ``values`` name when it does not exist, else None
    (None too for a named reference spectrum, which belongs to no sample).

    One name lookup: the watcher asks this before retrying a file that failed for want of
    its sample or cell, without reading the file again.
    """
    from txmdb.catalog.samples import get_cell, get_sample

    try:
        with catalog.session() as session:
            if kind == "cycling":
                get_cell(session, values["cell"])
            elif "sample" in values:
                get_sample(session, values["sample"])
    except NotFoundError as exc:
        return str(exc)
    return None


def queue_jobs(catalog, scan_id: int, *, register: bool, analyze: bool, analysis: dict[str, Any],
               created_by: str | None = None) -> list[int]:
    """Queue a txm rule's registration and analysis of a scan (registration first); the jobs' ids.

    A kind of job the scan has already (queued by an earlier run that stopped before it recorded
    the file as ingested, or by hand) is not queued again.
    """
    from sqlalchemy import select

    from txmdb.db.models import Job
    from txmdb.jobs import enqueue

    wanted = [kind for kind, asked in (("register", register), ("analyze", analyze)) if asked]
    if not wanted:
        return []
    with catalog.session() as session:
        existing = dict(session.execute(select(Job.kind, Job.id).where(Job.scan_id == scan_id,
                                                                       Job.kind.in_(wanted))).all())
    ids = []
    for kind in wanted:
        if kind in existing:
            ids.append(existing[kind])
            continue
        parameters = analysis if kind == "analyze" else {}
        # the analysis waits for the registration it applies (the scan's latest, by default)
        after = ids[0] if kind == "analyze" and register else None
        ids.append(enqueue(catalog, kind, parameters, scan_id=scan_id, created_by=created_by, after=after))
    return ids
