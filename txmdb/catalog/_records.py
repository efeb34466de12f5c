"""Helpers the ingest services share: file provenance and race-free get-or-create by SHA-256."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from sqlalchemy import select

from txmdb.errors import DuplicateError, InputError, ParameterError
from txmdb.io.files import sha256_file_identity

T = TypeVar("T")


def file_provenance(path: str | os.PathLike, *, identity: bool = False, name: str | None = None) -> dict:
    """path, name, size and SHA-256 of an input file (streamed), or an InputError naming it.

    ``identity``: also ``file_identity``, the identity of the bytes hashed if it may be trusted
    later (:func:`txmdb.io.files.sha256_file_identity`), else None. ``name``: the file's own
    name when ``path`` is a copy (a web upload's, as the client sent it: :func:`source_name`);
    by default the path's base name.
    """
    from txmdb.textsafe import utf8_problem

    p = Path(path)
    if not p.is_file():
        # A FIFO or a device (/dev/zero) exists but has no fixed content to record.
        raise InputError(p, "not a regular file" if p.exists() else "no such file")
    resolved = str(p.resolve())
    # Refused rather than stored escaped: the analysis and the store check reopen this path.
    if problem := utf8_problem(resolved):
        raise InputError(p, f"the file's path {problem}; the catalogue keeps paths as text: "
                            "rename the file or its folder to a UTF-8 name")
    # A path's own base name is kept as the file system has it (as its path is; both show escaped);
    # a name sent with a copy is checked, before the hash so that a refused one costs no read.
    named = p.name if name is None else source_name(name)
    try:
        size = p.stat().st_size
        digest, known = sha256_file_identity(p)
        return {"file_path": resolved, "source_name": named,
                "file_size_bytes": size, "file_sha256": digest,
                **({"file_identity": known} if identity else {})}
    except OSError as exc:
        raise InputError(p, f"cannot read: {exc.strerror}") from None


def source_name(name: str) -> str | None:
    """A file name a client sent (an upload's), made fit to keep and show, or a ParameterError.

    Untrusted: a folder part (``../../etc/passwd.csv``, ``C:\\data\\run.csv``) is dropped, so
    what is kept is one file's name; it is shown, never opened. Refused rather than kept
    escaped, as a path is (:func:`file_provenance`): text that is not UTF-8, characters that
    act instead of showing (:func:`txmdb.textsafe.visible` would escape them: a U+202E can
    make ``x.exe`` read as ``x.csv``), and a name longer than file systems allow. None when
    nothing of a name is left.
    """
    from txmdb.db.models import SOURCE_NAME_LENGTH
    from txmdb.textsafe import utf8_problem, visible
    from txmdb.vocabulary import quoted

    base = name.replace("\\", "/").rpartition("/")[2]
    if base in ("", ".", ".."):
        return None
    problem = utf8_problem(base) or (visible(base) != base and "has control or format characters")
    if not problem and len(base) > SOURCE_NAME_LENGTH:
        problem = f"is longer than {SOURCE_NAME_LENGTH} characters"
    if problem:
        raise ParameterError("source_name", f"file name {quoted(base)} {problem}")
    return base


def existing_by_sha(catalog, model: type[T], sha256: str, *, owner: tuple[str, object] | None = None,
                    recorded: Mapping[str, object] | None = None, source=None) -> T | None:
    """The record of the file with this SHA-256, if any.

    ``owner`` (attribute, value), e.g. ``("sample_id", 3)``: the same file filed under another
    sample or cell is refused rather than silently returned as if it were this one's.
    ``recorded``: what this ingest would record (attribute → value, None: not asked for); a
    value the existing record holds otherwise is refused too, else a re-ingest that names
    another state, edge or voxel size would report success and keep the first one's.
    """
    with catalog.session() as session:
        found = session.scalar(select(model).where(model.file_sha256 == sha256))
    if found is not None:
        if owner is not None and getattr(found, owner[0]) != owner[1]:
            raise InputError(source or found.file_path, f"this file is already in the catalogue as "
                             f"{_record_name(model, found)} of {_holder(found, owner[0])}; it cannot belong to two")
        for attribute, given in (recorded or {}).items():
            kept = _recorded_value(found, attribute)
            if given is not None and not _same_value(kept, given):
                raise InputError(source or found.file_path, f"this file is already in the catalogue as "
                                 f"{_record_name(model, found)} with {_label(attribute)} {_shown(kept)}, not "
                                 f"{_shown(given)}; a file is recorded once, as its first ingest gave it")
    return found


def _recorded_value(found, attribute: str):
    """``found.attribute``, or for ``column.key`` that key of the record's JSON column (None if absent)."""
    column, _, key = attribute.partition(".")
    value = getattr(found, column)
    return (value or {}).get(key) if key else value


def _label(attribute: str) -> str:
    if attribute.startswith("parameters."):             # an analysis window: "pre window (eV)"
        name = attribute.partition(".")[2]
        return "minimum edge jump" if name == "min_jump" else f"{name.replace('_', ' ')} window (eV)"
    return _LABELS.get(attribute, attribute.replace("_", " "))


def _shown(value) -> str:
    """A recorded or asked value as the refusal shows it: a window as LO:HI."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return ":".join(str(v) for v in value)
    return repr(value)


#: How a refused re-ingest names a recorded attribute (others: the attribute's name in words).
_LABELS = {"voxel_size_nm": "voxel size (nm)", "depth_um": "probing depth (µm)", "upper_cutoff_v": "upper cut-off (V)",
           "wavelength_angstrom": "wavelength (Å)", "a_angstrom": "a (Å)", "c_angstrom": "c (Å)",
           "data_path": "data set", "energy_path": "energy data set"}


def _record_name(model, found) -> str:
    from txmdb.db.models import INGESTED_FILES

    return f"{dict(INGESTED_FILES).get(model, model.__tablename__)} {found.id}"


def _holder(found, attribute: str) -> str:
    """Whose the existing record is, as the refusal names it: a reference spectrum by name."""
    if getattr(found, "reference_name", None) is not None:
        return f"the reference spectrum {found.reference_name!r}"
    if attribute == "reference_name":
        return "a sample"
    return f"another {attribute.removesuffix('_id').removesuffix('_name')}"


def _same_value(kept, given) -> bool:
    if isinstance(kept, float) or isinstance(given, float):
        import math

        return kept is not None and math.isclose(float(kept), float(given), rel_tol=1e-9, abs_tol=0.0)
    return kept == given


def get_or_create(catalog, model: type[T], sha256: str, create: Callable[[object], T], *,
                  owner: tuple[str, object] | None = None, recorded: Mapping[str, object] | None = None,
                  source=None) -> tuple[T, bool]:
    """Return the record of this file, creating it with ``create(session)`` if it is new.

    Two writers racing on the same file both end with the one row: the loser's insert hits
    the unique constraint on the SHA-256 and it returns the winner's record.
    """
    found = existing_by_sha(catalog, model, sha256, owner=owner, recorded=recorded, source=source)
    if found is not None:
        return found, False
    try:
        with catalog.session() as session:
            record = create(session)
            session.flush()
            return record, True
    except DuplicateError:
        return _race_winner(catalog, model, sha256, owner=owner, recorded=recorded, source=source), False


def _race_winner(catalog, model: type[T], sha256: str, **owner) -> T:
    """After losing an insert race on the SHA-256, the record the other writer committed."""
    found = existing_by_sha(catalog, model, sha256, **owner)
    if found is None:
        raise DuplicateError(f"a {model.__tablename__} record of this file was refused and none exists")
    return found


def frame_records(frame, **constants) -> list[dict]:
    """DataFrame rows as plain-Python dicts (NaN → NULL, numpy scalars → Python) for bulk inserts."""
    import numpy as np

    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for row in records:
        for key, value in row.items():
            if isinstance(value, np.generic):
                row[key] = value.item()
        row.update(constants)
    return records


def record_with_store_file(catalog, kind, sha256: str, *, write: Callable[[Path], None],
                           create: Callable[[object], T], owner: tuple[str, object] | None = None,
                           recorded: Mapping[str, object] | None = None, source=None) -> tuple[T, bool]:
    """Write a store file of ``kind`` and insert the record that names it; get-or-create by SHA-256.

    ``write(temp)`` writes the file; ``create(session)`` adds the record (path and hash
    empty: the store fills them in) and any child rows, flushed. The store's protocol
    (:mod:`txmdb.store`) commits the record, then gives the file its id-derived name.
    Losing a race to another writer of the same input file (``sha256``) returns the winner's
    record.
    """
    try:
        with catalog.store.put(kind) as put:
            write(put.temp)
            return put.commit(lambda session, _row: create(session)), True
    except DuplicateError:
        return _race_winner(catalog, kind.table(), sha256, owner=owner, recorded=recorded, source=source), False


def finite_or_none(value) -> float | None:
    """A float for the catalogue: NaN/inf (no value) become NULL."""
    import math

    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def jsonable(value):
    """Plain JSON values: ±inf (open window ends) become "inf"/"-inf", NaN None — PostgreSQL's JSON
    accepts neither Infinity nor NaN."""
    import math

    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
