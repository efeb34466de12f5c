"""Samples and cells: create, read, list."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from txmdb.db.models import Cell, Sample
from txmdb.errors import DuplicateError, NotFoundError, TxmdbError

SAMPLE_FIELDS = ("material", "morphology", "orientation", "ni_fraction", "mn_fraction", "co_fraction", "source", "notes")
CELL_FIELDS = (
    "active_mass_mg", "loading_mg_cm2", "area_cm2", "active_fraction", "electrolyte", "cell_format",
    "ce_convention", "upper_cutoff_v", "lower_cutoff_v", "notes",
)
CE_CONVENTIONS = ("discharge/charge", "charge/discharge")


def parse_meta(items: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` → dict. Values stay strings; a key may not repeat."""
    meta: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TxmdbError(f"malformed --meta {item!r}: expected KEY=VALUE")
        if key in meta:
            raise TxmdbError(f"--meta key {key!r} given twice")
        meta[key] = value.strip()
    return meta


def add_sample(session: Session, name: str, *, meta: dict[str, Any] | None = None, **fields: Any) -> Sample:
    name = name.strip()
    if not name:
        raise TxmdbError("a sample needs a non-empty name")
    if session.scalar(select(Sample.id).where(Sample.name == name)) is not None:
        raise DuplicateError(f"sample {name!r} exists already")
    for key in ("ni_fraction", "mn_fraction", "co_fraction"):
        value = fields.get(key)
        if value is not None and not (0 <= value <= 1):
            raise TxmdbError(f"--{key.split('_')[0]} must be a fraction between 0 and 1, got {value}")
    unknown = set(fields) - set(SAMPLE_FIELDS)
    if unknown:
        raise TypeError(f"unknown sample fields {sorted(unknown)}")
    sample = Sample(name=name, meta=meta or {}, **fields)
    session.add(sample)
    session.flush()
    return sample


def get_sample(session: Session, name: str) -> Sample:
    sample = session.scalar(select(Sample).where(Sample.name == name))
    if sample is None:
        raise NotFoundError(f"no sample named {name!r}; see 'txmdb sample list'")
    return sample


def active_mass_g(cell: Cell) -> float | None:
    """Active mass in grams: given directly, or loading × area × active fraction."""
    if cell.active_mass_mg is not None:
        return cell.active_mass_mg / 1000.0
    if None not in (cell.loading_mg_cm2, cell.area_cm2, cell.active_fraction):
        return cell.loading_mg_cm2 * cell.area_cm2 * cell.active_fraction / 1000.0
    return None


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise TxmdbError(f"--{name.replace('_', '-')} must be a positive number, got {value}")


def add_cell(session: Session, name: str, *, sample: str, **fields: Any) -> Cell:
    name = name.strip()
    if not name:
        raise TxmdbError("a cell needs a non-empty name")
    owner = get_sample(session, sample)
    if session.scalar(select(Cell.id).where(Cell.name == name)) is not None:
        raise DuplicateError(f"cell {name!r} exists already")
    unknown = set(fields) - set(CELL_FIELDS)
    if unknown:
        raise TypeError(f"unknown cell fields {sorted(unknown)}")
    for key in ("active_mass_mg", "loading_mg_cm2", "area_cm2", "upper_cutoff_v", "lower_cutoff_v"):
        _positive(key, fields.get(key))
    fraction = fields.get("active_fraction")
    if fraction is not None and not (0 < fraction <= 1):
        raise TxmdbError(f"--active-fraction must be in (0, 1], got {fraction}")
    loading = [fields.get(k) for k in ("loading_mg_cm2", "area_cm2", "active_fraction")]
    if fields.get("active_mass_mg") is None and None in loading:
        # mAh/g needs the active mass; DESIGN makes one of the two forms mandatory.
        raise TxmdbError("give --active-mass-mg, or all of --loading-mg-cm2, --area-cm2 and --active-fraction")
    if fields.get("ce_convention") is None:
        fields.pop("ce_convention", None)
    elif fields["ce_convention"] not in CE_CONVENTIONS:
        raise TxmdbError(f"--ce-convention must be one of {', '.join(CE_CONVENTIONS)}")
    cell = Cell(name=name, sample=owner, **fields)
    session.add(cell)
    session.flush()
    return cell


def get_cell(session: Session, name: str) -> Cell:
    cell = session.scalar(select(Cell).where(Cell.name == name))
    if cell is None:
        raise NotFoundError(f"no cell named {name!r}; see 'txmdb cell list'")
    return cell


def samples_frame(session: Session, *, morphology: str | None = None) -> pd.DataFrame:
    query = select(Sample).order_by(Sample.name)
    if morphology:
        query = query.where(Sample.morphology == morphology)
    rows = [
        {"sample": s.name, **{f: getattr(s, f) for f in SAMPLE_FIELDS}, "meta": s.meta, "created_at": s.created_at}
        for s in session.scalars(query)
    ]
    return pd.DataFrame(rows, columns=["sample", *SAMPLE_FIELDS, "meta", "created_at"])


def cells_frame(session: Session, *, sample: str | None = None) -> pd.DataFrame:
    query = select(Cell).join(Sample).order_by(Cell.name)
    if sample:
        query = query.where(Sample.name == sample)
    columns = ["cell", "sample", *CELL_FIELDS, "active_mass_g"]
    rows = [
        {"cell": c.name, "sample": c.sample.name, **{f: getattr(c, f) for f in CELL_FIELDS}, "active_mass_g": active_mass_g(c)}
        for c in session.scalars(query)
    ]
    return pd.DataFrame(rows, columns=columns)
