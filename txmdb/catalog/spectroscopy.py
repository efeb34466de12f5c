"""XAS measurements and XRD results of samples."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from txmdb.catalog._records import (
    existing_by_sha, file_provenance, finite_or_none, get_or_create, jsonable, record_with_store_file,
)
from txmdb.catalog.samples import get_sample
from txmdb.db.models import XASMeasurement, XRDResult
from txmdb.errors import DuplicateError, InputError, NotFoundError, ParameterError, input_errors
from txmdb.store import XAS
from txmdb.vocabulary import MODES_BY_KIND, edge_kind



def xas_parameters(edge: str, *, pre=None, post=None, edge_window=None, min_jump=None, background=None, low=None,
                   high=None):
    """The analysis parameters of ``edge`` ("Ni-K", "Ni-L3", …): its preset with any window overridden.

    K edges: the TXM kernel's windows (min_jump 0 by default: a bulk spectrum's scale is arbitrary).
    """
    import dataclasses

    from txmdb.analysis.xas import edge_preset
    from txmdb.options import non_negative

    non_negative(min_jump, "--min-jump")
    try:
        preset = edge_preset(edge)
    except ValueError as exc:
        raise ParameterError("edge", str(exc)) from None
    if edge_kind(edge) == "K":
        changes = dict(pre=pre, post=post, edge=edge_window, min_jump=0.0 if min_jump is None else min_jump)
    else:
        changes = dict(background=background, low=low, high=high)
    return dataclasses.replace(preset, **{k: v for k, v in changes.items() if v is not None})


def ingest_xas(
    catalog,
    path: str | os.PathLike,
    *,
    sample: str | None = None,
    edge: str,
    mode: str | None = None,
    state: str | None = None,
    depth_um: float | None = None,
    params=None,
    reference: str | None = None,
    source_name: str | None = None,
) -> tuple[XASMeasurement, bool]:
    """Read a spectrum, find its edge (K) or L3 ratio (L3), keep the normalised spectrum in the store.

    The spectrum is a ``sample``'s, or the named ``reference`` spectrum (LCF, DESIGN §11),
    which belongs to no sample: exactly one of the two. ``source_name``: the file's own name
    when ``path`` is a copy (a web upload's), default the path's base name.
    """
    import dataclasses

    from txmdb.analysis import xas
    from txmdb.io.spectra import read_spectrum

    if (sample is None) == (reference is None):
        raise ParameterError(("sample", "reference"), "a spectrum is a sample's or a named reference: "
                                                      "give one of the two")
    preset = xas_parameters(edge)
    params = params or preset
    modes = MODES_BY_KIND[edge_kind(edge)]
    # the windows asked for other than the preset's: compared one by one with the record's
    defaults = jsonable(dataclasses.asdict(preset))
    windows = {f"parameters.{key}": value for key, value in jsonable(dataclasses.asdict(params)).items()
               if value != defaults[key]}
    recorded = {"edge": edge, "mode": mode, "state": state, "depth_um": depth_um, **windows}
    mode = mode or modes[0]
    if mode not in modes:
        raise ParameterError("mode", f"mode {mode!r} does not fit edge {edge}; use one of {', '.join(modes)}")
    if depth_um is not None and not (math.isfinite(depth_um) and depth_um >= 0):
        raise ParameterError("depth_um", f"probing depth {depth_um} µm is not a depth (≥ 0)")
    if reference is not None:
        reference = reference_name(reference)
    provenance = file_provenance(path, name=source_name)
    if reference is None:
        with catalog.session() as session:
            owner = ("sample_id", get_sample(session, sample).id)
    else:
        owner = ("reference_name", reference)
    found = existing_by_sha(catalog, XASMeasurement, provenance["file_sha256"], owner=owner, recorded=recorded,
                            source=path)
    if found is not None:
        return found, False
    if reference is not None:
        _check_reference_free(catalog, reference, source=path)

    spectrum = read_spectrum(path, edge=edge)
    fields: dict = {}
    with input_errors(path):
        if edge_kind(edge) == "K":
            result = xas.k_edge(spectrum.energy_ev, spectrum.mu, params=params)
            if not result.valid:
                raise InputError(path, "no half-height crossing of the edge in the edge window "
                                       f"{params.edge[0]:g}–{params.edge[1]:g} eV (or the edge jump is too small)")
            fields = dict(edge_energy_ev=float(result.edge_energy_ev), e0_derivative_ev=finite_or_none(result.e0_derivative_ev),
                          edge_jump=finite_or_none(result.edge_jump))
        else:
            result = xas.l3_ratio(spectrum.energy_ev, spectrum.mu, background=params.background, low=params.low,
                                  high=params.high)
            fields = dict(l3_ratio=finite_or_none(result.ratio))
    normalized = result.normalized
    parameters = jsonable(dataclasses.asdict(params))

    def create(session) -> XASMeasurement:
        record = XASMeasurement(
            **{owner[0]: owner[1]}, edge=edge, mode=mode, state=state, depth_um=depth_um, n_points=len(spectrum.energy_ev),
            parameters=parameters, spectrum_path="", spectrum_sha256="", **fields, **provenance,
        )
        session.add(record)
        session.flush()
        return record

    table = pd.DataFrame({"energy_ev": spectrum.energy_ev, "mu": spectrum.mu, "normalized": normalized})
    return record_with_store_file(
        catalog, XAS, provenance["file_sha256"], write=lambda temp: table.to_parquet(temp, index=False),
        create=create, owner=owner, recorded=recorded, source=path,
    )


def reference_name(name: str) -> str:
    """A reference spectrum's name, checked: it names a map (``fraction:NAME``) and is listed
    in ``--lcf NAME,NAME``, so no commas, no control characters, at most 100 characters."""
    name = name.strip()
    if not name:
        raise ParameterError("reference", "a reference spectrum needs a non-empty name")
    if "," in name or any(ord(c) < 32 or ord(c) == 127 for c in name) or len(name) > 100:
        raise ParameterError("reference", f"reference name {name!r} must be at most 100 characters without commas "
                                          "or control characters")
    return name


def _check_reference_free(catalog, name: str, *, source) -> None:
    """DuplicateError when another file already holds the reference name ``name``."""
    from sqlalchemy import select

    with catalog.session() as session:
        taken = session.scalar(select(XASMeasurement).where(XASMeasurement.reference_name == name))
        if taken is not None:
            raise DuplicateError(f"reference {name!r} exists already (XAS measurement {taken.id}, from "
                                 f"{taken.file_path}); {source} is another file")


@dataclass(frozen=True)
class ReferenceSpectrum:
    """A named reference spectrum as LCF takes it: its own points, raw μ."""

    name: str
    measurement_id: int
    energy_ev: np.ndarray
    mu: np.ndarray


def load_references(catalog, names, *, edge: str) -> tuple[ReferenceSpectrum, ...]:
    """The reference spectra ``names`` (in that order) with their stored points (hash-checked).

    Raises
    ------
    ParameterError
        A name given twice.
    NotFoundError
        No reference of that name.
    InputError
        A reference measured at another edge than ``edge``.
    """
    from sqlalchemy import select

    names = [reference_name(n) for n in names]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ParameterError("lcf", f"reference {twice!r} is listed twice")
    with catalog.session() as session:
        rows = {r.reference_name: r for r in session.scalars(
            select(XASMeasurement).where(XASMeasurement.reference_name.in_(names)))}
    loaded = []
    for name in names:
        row = rows.get(name)
        if row is None:
            raise NotFoundError(f"no reference spectrum named {name!r}; record one with "
                                f"'txmdb xas ingest FILE --reference {name} --edge {edge}'")
        if row.edge != edge:
            raise InputError(row.file_path, f"reference {name!r} is a {row.edge} spectrum, not {edge}")
        table = catalog.store.read_parquet(row.spectrum_path, row.spectrum_sha256, columns=["energy_ev", "mu"])
        loaded.append(ReferenceSpectrum(name, row.id, table["energy_ev"].to_numpy(np.float64),
                                        table["mu"].to_numpy(np.float64)))
    return tuple(loaded)


def add_xrd(
    catalog,
    *,
    sample: str,
    state: str | None = None,
    i003_i104: float | None = None,
    a_angstrom: float | None = None,
    c_angstrom: float | None = None,
    pattern: str | os.PathLike | None = None,
    wavelength_angstrom: float | None = None,
    source_name: str | None = None,
) -> XRDResult:
    """Record XRD values, or compute the (003)/(104) ratio from a 2θ–intensity pattern.

    ``source_name``: the pattern file's own name when ``pattern`` is a copy (a web upload's),
    default its base name."""
    from txmdb.analysis.xrd import i003_i104_ratio

    if (i003_i104 is None) == (pattern is None):
        raise ParameterError(("i003_i104", "pattern"), "give either an (003)/(104) ratio or a pattern to compute it "
                                                       "from, not both or neither")
    for name, what, value in (("i003_i104", "(003)/(104) ratio", i003_i104), ("a_angstrom", "a", a_angstrom),
                              ("c_angstrom", "c", c_angstrom), ("wavelength_angstrom", "wavelength",
                                                                wavelength_angstrom)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ParameterError(name, f"{what} {value} is not a positive number")
    provenance: dict = {}
    parameters: dict = {}
    with catalog.session() as session:
        sample_id = get_sample(session, sample).id
    recorded = {"state": state, "wavelength_angstrom": wavelength_angstrom, "a_angstrom": a_angstrom,
                "c_angstrom": c_angstrom}
    if pattern is not None:
        from txmdb.io.spectra import read_pattern

        if wavelength_angstrom is None:
            # the file's path left out: a web upload's is the server's copy
            raise ParameterError("wavelength_angstrom", "a pattern needs the X-ray wavelength (Å) it was measured at")
        provenance = file_provenance(pattern, name=source_name)
        # known: its record, before the pattern is read at what may be another wavelength
        found = existing_by_sha(catalog, XRDResult, provenance["file_sha256"], owner=("sample_id", sample_id),
                                recorded=recorded, source=pattern)
        if found is not None:
            return found
        data = read_pattern(pattern)
        with input_errors(pattern):
            i003_i104 = float(i003_i104_ratio(data.two_theta_deg, data.intensity, wavelength_angstrom=wavelength_angstrom))
        if not math.isfinite(i003_i104):
            raise InputError(pattern, "the (003)/(104) ratio could not be computed from this pattern")
        parameters = {"method": "integrated intensity after linear background"}

    def create(session) -> XRDResult:
        record = XRDResult(sample_id=sample_id, state=state, i003_i104=i003_i104, a_angstrom=a_angstrom,
                           c_angstrom=c_angstrom, wavelength_angstrom=wavelength_angstrom, parameters=parameters,
                           **provenance)
        session.add(record)
        return record

    if pattern is None:  # values typed in: nothing to deduplicate
        with catalog.session() as session:
            record = create(session)
            session.flush()
            return record
    return get_or_create(catalog, XRDResult, provenance["file_sha256"], create, owner=("sample_id", sample_id),
                         recorded=recorded, source=pattern)[0]
