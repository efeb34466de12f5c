"""``txmdb db check``: the catalogue against its store and its sources, and the repair of what
a crash left (the store's protocol, :mod:`txmdb.store`, says what each crash leaves).

A repair removes only what no row needs — temporaries and files whose id has no row —, moves
a committed file still under its temporary name into place, points a row whose path is wrong
at the file of its id when that file has the row's SHA-256, and marks analyses whose process
is gone ``failed``. It never deletes a file whose id has a row, nor a source file, nor
anything through a link; a changed or missing source, or a store file whose hash differs, is
reported for a person. A store that belongs to another catalogue is neither checked nor
repaired (:mod:`txmdb.store`, Owner).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from txmdb.errors import StoreOwnerError, TxmdbError
from txmdb.store import Audit, Finding

# Hours a 'running' analysis (or a temporary file) of another host counts as at work: its
# process cannot be asked from here. On this host the process itself answers.
STALE_HOURS = 24.0


@dataclass
class CheckReport:
    findings: list[Finding] = field(default_factory=list)
    store_files: int = 0
    sources: int = 0
    in_progress: int = 0

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.repaired]

    def summary(self) -> str:
        """One line: what was checked, what was repaired, what is left and who can settle it."""
        repaired = len(self.findings) - len(self.problems)
        checked = f"checked {self.store_files} store files, {self.sources} sources" + (
            f" ({self.in_progress} writes in progress)" if self.in_progress else "")
        done = f"{repaired} repaired; " if repaired else ""
        if not self.problems:
            return f"ok: {done}{checked}"
        fixable = sum(f.action is not None for f in self.problems)
        kinds = ([f"{fixable} settled by --repair"] if fixable else []) + (
            [f"{len(self.problems) - fixable} need you"] if len(self.problems) > fixable else [])
        return f"{_plural(len(self.problems), 'problem')} ({', '.join(kinds)}); {done}{checked}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def check_catalog(catalog, *, repair: bool = False, stale_hours: float = STALE_HOURS,
                  sources: bool = True) -> CheckReport:
    """Audit the store against the rows and (with ``sources``) the ingested files against
    their SHA-256; with ``repair``, settle what a crash left and audit again."""
    audit = catalog.store.audit(stale_after_s=stale_hours * 3600)
    report = CheckReport()
    if repair and any(f.action for f in audit.findings):
        for finding in audit.findings:
            if finding.action is not None:
                try:
                    finding.action()
                except StoreOwnerError:
                    raise           # the store is not (or no longer) this catalogue's: repair nothing
                except (OSError, TxmdbError) as exc:
                    report.findings.append(Finding(finding.subject, f"repair failed: {exc}"))
                    continue
                finding.repaired = True
                report.findings.append(finding)
        audit = catalog.store.audit(stale_after_s=stale_hours * 3600)
    report.findings += audit.findings
    report.store_files, report.in_progress = audit.files, audit.in_progress
    if sources:
        source_audit = check_sources(catalog)
        report.findings += source_audit.findings
        report.sources = source_audit.files
    return report


def check_sources(catalog) -> Audit:
    """Every ingested file still at its path with its recorded SHA-256 (reported, never repaired)."""
    from sqlalchemy import select

    from txmdb.db import models as m
    from txmdb.store import sha256_regular

    audit = Audit()
    for model, noun in ((m.TXMScan, "TXM scan"), (m.CyclingRun, "cycling run"), (m.XASMeasurement, "XAS measurement"),
                        (m.XRDResult, "XRD result")):
        with catalog.session() as session:
            rows = session.execute(select(model.id, model.file_path, model.file_size_bytes, model.file_sha256)
                                   .where(model.file_path.is_not(None)).order_by(model.id)).all()
        for row in rows:
            audit.files += 1
            path = Path(row.file_path)
            subject = f"{noun} {row.id}"
            try:
                if not path.is_file():
                    audit.add(subject, f"source {path} is missing")
                elif path.stat().st_size != row.file_size_bytes or sha256_regular(path) != row.file_sha256:
                    audit.add(subject, f"source {path} changed since it was ingested (SHA-256 differs)")
            except OSError as exc:
                audit.add(subject, f"source {path} cannot be read: {exc.strerror or exc}")
    return audit
