"""Registrations of a scan's energy stack: estimate, check, record and look up (DESIGN §10).

A registration gives every energy ``e`` of a scan a translation ``s_e`` (voxels, ``(z, y, x)``
or ``(y, x)``), ``s_ref = 0``, meaning the sample had moved by ``s_e`` at that energy:
``registered_e(x) = raw_e(x + s_e)``. :func:`register_scan` estimates it with
:func:`txmdb.analysis.registration.estimate_shifts` on the scan's file, read through the
layout recorded at ingest, as absorbance (raw layouts through their flats and darks), one
energy's window at a time: the working set is bounded whatever the stack's size.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from sqlalchemy import select

from txmdb import __version__
from txmdb.catalog._records import finite_or_none, jsonable
from txmdb.catalog.txm import get_scan, open_scan_stack, record_identity
from txmdb.db.models import Registration, RegistrationShift, TXMScan
from txmdb.errors import InputError, NotFoundError, ParameterError, TxmdbError, input_errors
from txmdb.vocabulary import (
    MAX_CATALOGUE_INT, REGISTRATION_ENERGY_TOLERANCE_EV, REGISTRATION_MAX_SHIFT_FRACTION, REGISTRATION_MAX_SHIFT_LIMIT,
    REGISTRATION_MIN_ROI_VOXELS, REGISTRATION_REFERENCE_FRACTION,
)

#: ``registrations.method`` of :func:`register_scan` (docs/registration.md describes it).
METHOD = "joint-template-fixed-pattern-gauss-newton"

AXES = ("z", "y", "x")


def register_scan(
    catalog,
    scan_id: int,
    *,
    reference_energy_ev: float | None = None,
    max_shift: float | None = None,
    roi: Sequence | None = None,
    accept_poor: bool = False,
    verify_input: bool = False,
) -> Registration:
    """Estimate one sub-voxel translation per energy of a scan and record it.

    Parameters
    ----------
    catalog : Catalog
    scan_id : int
    reference_energy_ev : float, optional
        The energy whose shift is zero; it must be one of the stack's (within
        ``REGISTRATION_ENERGY_TOLERANCE_EV``). Default: :func:`default_reference_index`.
    max_shift : float, optional
        Largest shift searched and accepted per axis, voxels. Default a quarter of the
        smallest field-of-view dimension; at most half of it.
    roi : sequence, optional
        Region the estimate uses, one ``(start, stop)`` pair (either may be None) or
        ``slice`` per spatial axis; default the whole field of view.
    accept_poor : bool
        Store the registration even when some energies cannot be registered.
    verify_input : bool
        Hash the scan's file in full even when its identity is the one recorded when its
        SHA-256 was last computed and matched (by default that SHA-256 is trusted then).

    Returns
    -------
    Registration
        With its ``shifts`` loaded, committed.

    Raises
    ------
    InputError
        A scan of one energy, a file changed since ingest (SHA-256), an energy whose values
        are all NaN; nothing is stored.
    ParameterError
        A reference energy not in the stack, a maximum shift above half the field of view,
        a region outside it. Nothing is stored.
    TxmdbError
        Energies that cannot be registered (quality below ``QUALITY_THRESHOLD`` or a shift
        beyond ``max_shift``), unless ``accept_poor``: the first six named in the message,
        then how many more. Nothing is stored.
    """
    t0 = time.perf_counter()
    # cheap checks first: hashing a large file takes a while
    reference, max_shift, box = check_registration(catalog, scan_id, reference_energy_ev=reference_energy_ev,
                                                   max_shift=max_shift, roi=roi)
    scan, shifts, quality, identity = _estimate_checked(catalog, scan_id, reference, max_shift, box,
                                                        verify_input=verify_input)
    from txmdb.analysis.registration import QUALITY_THRESHOLD

    poor = poor_energies(shifts, quality, max_shift, QUALITY_THRESHOLD)
    if poor and not accept_poor:
        raise TxmdbError(_poor_message(scan, shifts, quality, poor, max_shift, QUALITY_THRESHOLD))

    parameters = {
        "reference_energy_ev": reference_energy_ev,
        "max_shift_vox": max_shift,
        "roi": None if box is None else [[s.start, s.stop] for s in box],
        "quality_threshold": QUALITY_THRESHOLD,
        "poor_energy_indices": poor,
        "estimate": _kernel_defaults(),
    }
    registration = Registration(
        scan_id=scan.id, method=METHOD, parameters=jsonable(parameters), reference_index=reference,
        reference_energy_ev=float(scan.energies_ev[reference]), max_shift_vox=float(max_shift),
        accepted_poor=bool(poor), txmdb_version=__version__, input_sha256=scan.file_sha256,
    )
    registration.shifts = [
        RegistrationShift(energy_index=e, energy_ev=float(scan.energies_ev[e]),
                          shift_z=float(s[0]) if len(s) == 3 else None, shift_y=float(s[-2]),
                          shift_x=float(s[-1]), quality=finite_or_none(q))
        for e, (s, q) in enumerate(zip(shifts, quality))
    ]
    registration.elapsed_s = time.perf_counter() - t0
    with catalog.session() as session:
        session.add(registration)
        if identity is not None:
            record_identity(session, scan.id, identity)
        session.flush()
    return registration


def check_registration(catalog, scan_id: int, *, reference_energy_ev: float | None = None,
                       max_shift: float | None = None, roi: Sequence | None = None):
    """The checks of :func:`register_scan` that need only the scan's row (not its file), also run
    when a registration job is queued; returns (reference index, max_shift, region slices)."""
    with catalog.session() as session:
        scan = get_scan(session, scan_id)
    if scan.n_energies < 2:
        raise InputError(scan.file_path, f"scan {scan.id} has one energy ({scan.energies_ev[0]:g} eV); "
                                         f"a registration needs at least two")
    spatial = tuple(scan.shape[1:])
    return reference_index(scan, reference_energy_ev), check_max_shift(spatial, max_shift), roi_slices(spatial, roi)


def default_reference_index(energies_ev: Sequence[float]) -> int:
    """The stack's energy nearest ``REGISTRATION_REFERENCE_FRACTION`` of its energy range.

    A post-edge energy for a K-edge XANES scan (txmdb.vocabulary says why); found from the
    energies alone, before any data is read.
    """
    lo, hi = energies_ev[0], energies_ev[-1]
    target = lo + REGISTRATION_REFERENCE_FRACTION * (hi - lo)
    return min(range(len(energies_ev)), key=lambda i: abs(energies_ev[i] - target))


def reference_index(scan: TXMScan, reference_energy_ev: float | None) -> int:
    """Index of the reference energy in the scan's sorted energies (default or requested)."""
    energies = scan.energies_ev
    if reference_energy_ev is None:
        return default_reference_index(energies)
    nearest = min(range(len(energies)), key=lambda i: abs(energies[i] - reference_energy_ev))
    if not abs(energies[nearest] - reference_energy_ev) <= REGISTRATION_ENERGY_TOLERANCE_EV:
        raise ParameterError("reference_energy_ev", f"reference energy {reference_energy_ev:g} eV is not in the "
                             f"stack of scan {scan.id} ({len(energies)} energies, {energies[0]:g}–{energies[-1]:g} "
                             f"eV; nearest {energies[nearest]:g} eV)")
    return nearest


def check_max_shift(spatial: Sequence[int], max_shift: float | None) -> float:
    """The largest shift, voxels: the default, or the requested one if the field of view allows it."""
    smallest = min(spatial)
    if max_shift is None:
        return REGISTRATION_MAX_SHIFT_FRACTION * smallest
    field = "×".join(map(str, spatial))
    if not (math.isfinite(max_shift) and max_shift > 0):
        raise ParameterError("max_shift", f"maximum shift {max_shift:g} voxels is not a positive number")
    limit = REGISTRATION_MAX_SHIFT_LIMIT * smallest
    if max_shift > limit:
        raise ParameterError("max_shift", f"maximum shift {max_shift:g} voxels is larger than half the field of "
                             f"view {field} ({limit:g} voxels)")
    return float(max_shift)


def roi_slices(spatial: Sequence[int], roi: Sequence | None) -> Optional[tuple[slice, ...]]:
    """The region of interest as one slice per axis, checked against the field of view."""
    if roi is None:
        return None
    field = "×".join(map(str, spatial))
    axes = AXES[-len(spatial):]
    if len(roi) != len(spatial):
        raise ParameterError("roi", f"region of interest has {len(roi)} axes; the field of view {field} has "
                             f"{len(spatial)} ({', '.join(axes)})")
    out = []
    for axis, part, n in zip(axes, roi, spatial):
        lo, hi = (part.start, part.stop) if isinstance(part, slice) else part
        lo, hi = 0 if lo is None else int(lo), n if hi is None else int(hi)
        if not 0 <= lo < hi <= n:
            raise ParameterError("roi", f"region of interest {axis} {lo}:{hi} is not inside the field of view "
                                 f"{field} (0:{n})")
        if hi - lo < REGISTRATION_MIN_ROI_VOXELS:
            raise ParameterError("roi", f"region of interest {axis} {lo}:{hi} spans {hi - lo} voxels; the estimate "
                                 f"needs at least {REGISTRATION_MIN_ROI_VOXELS}")
        out.append(slice(lo, hi))
    return tuple(out)


def _estimate_checked(catalog, scan_id: int, reference: int, max_shift: float, roi, *, verify_input: bool = False):
    """The scan, :func:`_estimate` on its file and the file identity to record
    (:func:`~txmdb.catalog.txm.new_identity`), while a background thread checks that the
    file is the one ingested (SHA-256, as ``analyze_scan`` does): run first, the hash
    of a large stack cost a third of the estimate's time; at normal priority, so that it
    shares the cores with the estimate's threads instead of running after them. A
    changed file is reported before anything else, also when it made opening or
    estimating fail; nothing is stored before the check. A file whose identity is the one
    recorded is not hashed (unless ``verify_input``): its identity is checked again at the end."""
    from txmdb.catalog.integrity import change_wins
    from txmdb.catalog.txm import _hash_result, check_stack, check_unchanged, known_hash, named_as_scan, new_identity
    from txmdb.io.files import BackgroundHash, KnownHash
    with catalog.session() as session:
        scan = get_scan(session, scan_id)
    known = None if verify_input else known_hash(scan)
    hashing = KnownHash.if_unchanged(scan.file_path, known) or BackgroundHash(scan.file_path, low_priority=False)
    try:
        with change_wins(scan, hashing):            # a changed file's failure reported as the change
            # the stack only: prepare_scan's analysis checks import the pipeline (pandas)
            info = open_scan_stack(scan)
            # h5py reads the file checked or hashed, as in analyze_scan
            from dataclasses import replace
            from pathlib import Path

            info = replace(info, path=Path(hashing.source))
            with named_as_scan(scan, info):         # the stack's read errors too
                shifts, quality = _estimate(info, reference, max_shift, roi)
        check_unchanged(scan, _hash_result(scan, hashing))
        check_stack(scan, info)
        return scan, shifts, quality, new_identity(scan, hashing)
    finally:
        hashing.cancel()


def _estimate(info, reference: int, max_shift: float, roi):
    """Shifts and qualities from the file, read as absorbance one energy's window at a time
    (errors name ``info.path``: :func:`~txmdb.catalog.txm.named_as_scan` renames a descriptor's)."""
    import numpy as np

    from txmdb.analysis.registration import estimate_shifts, read_window
    from txmdb.io.hdf5 import AbsorbanceView, _open

    def read(i: int, window) -> np.ndarray:
        image = read_window(view, i, window)
        # named by its energy here: the kernel knows indices only
        if not np.isfinite(image).any():
            raise ValueError(f"energy {info.energies_ev[i]:g} eV (index {i}) is NaN or infinite throughout "
                             f"the region registered")
        return image

    with _open(info.path) as f, input_errors(info.path), _direct_view(info, f) as direct:
        view = direct or AbsorbanceView(info, f)
        return estimate_shifts(read, len(info.energies_ev), reference, shape=info.spatial_shape,
                               max_shift=max_shift, roi=roi)


# one implementation, in txmdb.io (the registered read uses it too); the names kept here
from txmdb.io.contiguous import ContiguousView as _ContiguousView, direct_view as _direct_view  # noqa: E402,F401


def _kernel_defaults() -> dict:
    """The estimate's own settings (band, iterations, interpolation …), recorded with the registration."""
    from txmdb.analysis.registration import estimate_shifts

    return {name: p.default for name, p in inspect.signature(estimate_shifts).parameters.items()
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and name != "roi"}


def poor_energies(shifts, quality, max_shift: float, threshold: float) -> list[int]:
    """Indices of the energies that cannot be registered: quality below ``threshold`` (or
    undefined), or a shift beyond ``max_shift`` on some axis."""
    return [e for e, (s, q) in enumerate(zip(shifts, quality))
            if not q >= threshold or max(abs(float(v)) for v in s) > max_shift]


def _poor_message(scan, shifts, quality, poor: list[int], max_shift: float, threshold: float) -> str:
    named = []
    for e in poor:
        why = []
        if not quality[e] >= threshold:
            why.append(f"quality {quality[e]:.2f}")
        largest = max(abs(float(v)) for v in shifts[e])
        if largest > max_shift:
            why.append(f"shift {largest:.1f} voxels")
        named.append(f"{scan.energies_ev[e]:g} eV ({', '.join(why)})")
    if len(named) > _NAMED_AT_MOST:                # one line a terminal can show: the first ones
        named = named[:_NAMED_AT_MOST] + [f"and {len(named) - _NAMED_AT_MOST} more"]
    return (f"scan {scan.id}: {len(poor)} of {scan.n_energies} energies cannot be registered (quality below "
            f"{threshold:.2f} or shift beyond {max_shift:g} voxels): {', '.join(named)}; nothing stored "
            f"(--accept-poor stores it anyway)")


#: Energies a refusal names one by one before it says how many more there are
_NAMED_AT_MOST = 6


# ------------------------------------------------------------------------------ look-ups

def get_registration(session, registration_id: int) -> Registration:
    # an id beyond the id column's range is no registration (SQLite would overflow binding it)
    in_range = 0 <= registration_id <= MAX_CATALOGUE_INT
    registration = session.get(Registration, registration_id) if in_range else None
    if registration is None:
        raise NotFoundError(f"no registration with id {registration_id}; see 'txmdb query registrations'")
    return registration


def latest_registration(session, scan_id: int) -> Registration | None:
    """The scan's newest registration, or None."""
    return session.scalar(select(Registration).where(Registration.scan_id == scan_id)
                          .order_by(Registration.id.desc()).limit(1))


def shift_array(registration: Registration):
    """``s_e`` of every energy, ndarray of float64 ``(n_energy, ndim)`` in energy order (its shifts loaded)."""
    import numpy as np

    rows = sorted(registration.shifts, key=lambda r: r.energy_index)
    three_d = any(r.shift_z is not None for r in rows)
    return np.array([[r.shift_z, r.shift_y, r.shift_x] if three_d else [r.shift_y, r.shift_x] for r in rows],
                    dtype=np.float64)


@dataclass(frozen=True)
class Summary:
    """What a registration amounts to, for ``txm register`` and ``txm show``."""

    registration_id: int
    reference_energy_ev: float
    max_abs_shift_vox: dict           # per axis name
    min_quality: float | None
    min_quality_energy_ev: float | None
    accepted_poor: bool
    poor_energies_ev: tuple[float, ...]


def summarize(registration: Registration) -> Summary:
    """Largest |shift| per axis, the lowest quality and where, the energies accepted as poor."""
    rows = sorted(registration.shifts, key=lambda r: r.energy_index)
    axes = [a for a in AXES if any(getattr(r, f"shift_{a}") is not None for r in rows)]
    largest = {a: max(abs(getattr(r, f"shift_{a}")) for r in rows) for a in axes}
    rated = [r for r in rows if r.quality is not None]
    worst = min(rated, key=lambda r: r.quality) if rated else None
    poor = registration.parameters.get("poor_energy_indices") or []
    return Summary(registration.id, registration.reference_energy_ev, largest,
                   None if worst is None else worst.quality, None if worst is None else worst.energy_ev,
                   bool(registration.accepted_poor), tuple(rows[e].energy_ev for e in poor))


def scan_registrations(catalog, scan_id: int):
    """One row per registration of the scan: id, time, reference energy, largest |shift|, lowest quality."""
    import pandas as pd
    from sqlalchemy.orm import selectinload

    columns = ["registration_id", "created_at", "reference_energy_ev", "max_abs_shift_vox", "min_quality",
               "accepted_poor"]
    with catalog.session() as session:
        found = session.scalars(select(Registration).where(Registration.scan_id == scan_id)
                                .options(selectinload(Registration.shifts)).order_by(Registration.id)).all()
        rows = []
        for registration in found:
            s = summarize(registration)
            rows.append([s.registration_id, registration.created_at, s.reference_energy_ev,
                         max(s.max_abs_shift_vox.values()), s.min_quality, s.accepted_poor])
    return pd.DataFrame(rows, columns=columns)
