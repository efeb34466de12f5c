"""The harvested_files table: every file the watcher saw, what it was when read, what became of it.

The watcher keeps a copy of each row in memory (:class:`Seen`) to compare a file's stat with,
and writes a row at each change of state, so a restart picks up exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from txmdb.db.models import HarvestedFile


@dataclass
class Seen:
    """What the catalogue records of one file (the fields the watcher decides by)."""

    status: str
    size_bytes: int | None
    mtime: float | None
    sha256: str | None = None
    missing_reference: bool = False
    error: str | None = None

    def same_stat(self, size: int, mtime: float) -> bool:
        return self.size_bytes == size and self.mtime == mtime


def load_seen(catalog) -> dict[str, Seen]:
    """Every recorded file by path."""
    columns = (HarvestedFile.path, HarvestedFile.status, HarvestedFile.size_bytes, HarvestedFile.mtime,
               HarvestedFile.sha256, HarvestedFile.missing_reference, HarvestedFile.error)
    with catalog.session() as session:
        return {path: Seen(*rest) for path, *rest in session.execute(select(*columns))}


def save(catalog, path: str, *, rule: str, kind: str, **fields) -> None:
    """Insert or update the row of ``path`` with ``fields`` (HarvestedFile columns).

    Another watcher of the same folder may insert the row between this one's look and insert
    (path is unique): the loser updates the winner's row instead of stopping.
    """
    from txmdb.errors import DuplicateError

    for last in (False, True):
        try:
            with catalog.session() as session:
                row = session.scalar(select(HarvestedFile).where(HarvestedFile.path == path))
                if row is None:
                    row = HarvestedFile(path=path, rule=rule, kind=kind, missing_reference=False,
                                        changed_after_ingest=False)
                    session.add(row)
                row.rule, row.kind = rule, kind
                for key, value in fields.items():
                    setattr(row, key, value)
            return
        except DuplicateError:  # the session's translation of the unique path's IntegrityError
            if last:
                raise


def harvested(catalog, *, status: str | None = None) -> list[dict]:
    """The recorded files (optionally of one status), oldest first, as plain dicts."""
    query = select(HarvestedFile).order_by(HarvestedFile.id)
    if status is not None:
        query = query.where(HarvestedFile.status == status)
    with catalog.session() as session:
        return [{c.name: getattr(row, c.name) for c in HarvestedFile.__table__.columns}
                for row in session.scalars(query)]
