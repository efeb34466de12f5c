"""Samples and cells: create and read (``txmdb.query`` lists them)."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from txmdb.db.models import Cell, Sample, data_columns
from txmdb.errors import DuplicateError, NotFoundError, ParameterError, TxmdbError
from txmdb.vocabulary import CE_CONVENTIONS

# The fields a user gives: the model's columns but the name and what txmdb fills in itself.
SAMPLE_FIELDS = tuple(c for c in data_columns(Sample) if c not in ("name", "meta", "created_at"))
CELL_FIELDS = tuple(c for c in data_columns(Cell) if c not in ("name", "created_at"))


def add_sample(session: Session, name: str, *, meta: dict[str, Any] | None = None, **fields: Any) -> Sample:
    name = name.strip()
    if not name:
        raise TxmdbError("a sample needs a non-empty name")
    if name in (".", ".."):
        # its page's address, /samples/.., is another page (browsers resolve %2E%2E too)
        raise TxmdbError(f"a sample cannot be named {name!r}")
    if session.scalar(select(Sample.id).where(Sample.name == name)) is not None:
        raise DuplicateError(f"sample {name!r} exists already")
    for key in ("ni_fraction", "mn_fraction", "co_fraction"):
        value = fields.get(key)
        if value is not None and not (0 <= value <= 1):
            element = key.split("_")[0].capitalize()
            raise ParameterError(key, f"{element} fraction {value} is not a fraction between 0 and 1")
    fractions = [fields.get(key) or 0.0 for key in ("ni_fraction", "mn_fraction", "co_fraction")]
    if sum(fractions) > 1 + 1e-9:
        raise ParameterError(("ni_fraction", "mn_fraction", "co_fraction"),
                             f"Ni, Mn and Co fractions add up to {sum(fractions):g}; as fractions of the "
                             "transition metals they add up to 1 at most")
    unknown = set(fields) - set(SAMPLE_FIELDS)
    if unknown:
        raise TypeError(f"unknown sample fields {sorted(unknown)}")
    for key in ("morphology", "orientation"):
        # categories a query filters and a report groups by: "Rod" and "rod" are one
        if isinstance(fields.get(key), str):
            fields[key] = fields[key].strip().lower() or None
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


# Cell fields that must be positive numbers: what they are and their unit, for the error.
_POSITIVE_CELL_FIELDS = {"active_mass_mg": ("active mass", "mg"), "loading_mg_cm2": ("loading", "mg/cm²"),
                         "area_cm2": ("area", "cm²"), "upper_cutoff_v": ("upper cut-off", "V"),
                         "lower_cutoff_v": ("lower cut-off", "V")}


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        what, unit = _POSITIVE_CELL_FIELDS[name]
        raise ParameterError(name, f"{what} {value} {unit} is not a positive number")


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
    for key in _POSITIVE_CELL_FIELDS:
        _positive(key, fields.get(key))
    fraction = fields.get("active_fraction")
    if fraction is not None and not (0 < fraction <= 1):
        raise ParameterError("active_fraction", f"active fraction {fraction} is not in (0, 1]")
    loading = ("loading_mg_cm2", "area_cm2", "active_fraction")
    if fields.get("active_mass_mg") is None and any(fields.get(k) is None for k in loading):
        # mAh/g needs the active mass; DESIGN makes one of the two forms mandatory.
        raise ParameterError(("active_mass_mg", *loading),
                             f"cell {name!r} needs its active mass, or its loading, area and active fraction")
    if fields.get("ce_convention") is None:
        fields.pop("ce_convention", None)
    elif fields["ce_convention"] not in CE_CONVENTIONS:
        raise ParameterError("ce_convention", f"CE convention {fields['ce_convention']!r} is not one of "
                                              f"{', '.join(CE_CONVENTIONS)}")
    cell = Cell(name=name, sample=owner, **fields)
    session.add(cell)
    session.flush()
    return cell


def get_cell(session: Session, name: str) -> Cell:
    cell = session.scalar(select(Cell).where(Cell.name == name))
    if cell is None:
        raise NotFoundError(f"no cell named {name!r}; see 'txmdb cell list'")
    return cell
