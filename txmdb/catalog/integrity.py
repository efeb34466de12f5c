"""``txmdb db check``: the catalogue against its store and its sources, and the repair of what
a crash left (the store's protocol, :mod:`txmdb.store`, says what each crash leaves). Also the
source checks of a command under way: :func:`change_wins` (a failure of a changed file is
reported as the change) and :class:`CheckedFile` (a Dask worker reads the file the client checked).

A repair removes only what no row needs — temporaries and files whose id has no row —, moves
a committed file still under its temporary name into place, points a row whose path is wrong
at the file of its id when that file has the row's SHA-256, and marks analyses whose process
is gone ``failed``. It never deletes a file whose id has a row, nor a source file, nor
anything through a link; a changed or missing source, or a store file whose hash differs, is
reported for a person. A store that belongs to another catalogue is neither checked nor
repaired (:mod:`txmdb.store`, Owner).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from txmdb.errors import InputError, StoreOwnerError, TxmdbError
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
        checked = f"checked {_plural(self.store_files, 'store file')}, {_plural(self.sources, 'source')}" + (
            f" ({self.in_progress} writes in progress)" if self.in_progress else "")
        done = f"{repaired} repaired; " if repaired else ""
        if not self.problems:
            return f"ok: {done}{checked}"
        fixable = sum(f.action is not None for f in self.problems)
        kinds = ([f"{fixable} settled by --repair"] if fixable else []) + (
            [f"{len(self.problems) - fixable} need{'s' if len(self.problems) - fixable == 1 else ''} you"]
            if len(self.problems) > fixable else [])
        return f"{_plural(len(self.problems), 'problem')} ({', '.join(kinds)}); {done}{checked}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def check_catalog(catalog, *, repair: bool = False, stale_hours: float = STALE_HOURS,
                  sources: bool = True, forget_missing: bool = False) -> CheckReport:
    """Audit the store against the rows and (with ``sources``) the ingested files against
    their SHA-256; with ``repair``, settle what a crash left and audit again; with
    ``forget_missing`` too, remove the ingest records whose stored file is missing while their
    source is intact (else they are reported: restore the file)."""
    audit = catalog.store.audit(stale_after_s=stale_hours * 3600, forget_missing=forget_missing)
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
        audit = catalog.store.audit(stale_after_s=stale_hours * 3600, forget_missing=forget_missing)
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
    for model, noun in m.INGESTED_FILES:
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


@contextlib.contextmanager
def change_wins(scan, check, errors: type[Exception] | tuple[type[Exception], ...] = Exception):
    """An error while the scan's file is read or used — a read error (InputError), a kernel's
    ValueError — reported as the file's change when ``check`` (the command's check of the file:
    a hash under way, a known hash) shows it is no longer the file ingested: a byte changed
    inside a compressed chunk fails the read before the hash's result is asked. The error stands
    when the check finds the ingested bytes (a file damaged before it was ingested) or cannot
    tell. ``check`` None: no check, the error stands. ``errors``: the errors a change may explain.
    The one place this is decided."""
    try:
        yield
    except errors:
        if check is not None:
            raise_if_changed(scan, check)
        raise


def raise_if_changed(scan, check) -> None:
    """The InputError of :func:`txmdb.catalog.txm.check_unchanged` (SHA-256 differs), of a file
    written to while read, or of a hash that could not read the file, if ``check`` says so;
    nothing when the file is the one ingested or a single read's failure leaves no way to tell."""
    from txmdb.catalog.txm import _hash_result, check_unchanged
    from txmdb.io.files import open_regular, sha256_file

    check.promote()                 # the rest of a low-priority hash at normal priority: it is waited for
    try:
        check.result()
    except OSError:
        pass                        # the hash's own read (or open: a FIFO) failed: _hash_result words it
    except (TxmdbError, RuntimeError):
        # a single read hashes what it reads and stopped with the failed read (a file truncated
        # under it): the file it read, hashed whole now (opened as a regular file only: never blocks)
        try:
            digest = sha256_file(open_regular(check.source))
        except OSError:
            return                  # cannot tell: the error stands
        check_unchanged(scan, digest)
        return
    check_unchanged(scan, _hash_result(scan, check))


@dataclass(frozen=True)
class CheckedFile:
    """The scan file an analysis checked (its SHA-256 matched, or its unchanged identity vouched
    for it), for readers that open its path themselves later: Dask workers. Each opens it through
    :meth:`reading`, which refuses a file that is not the one checked — another renamed over the
    path, or this one rewritten — with the non-Dask path's own check
    (:meth:`txmdb.io.files.KnownHash.if_unchanged` on the identity of the descriptor checked).

    Has the attributes of a scan that :func:`txmdb.catalog.txm.check_unchanged` reads, and pickles.
    """

    file_path: str
    id: int
    file_sha256: str
    #: :func:`txmdb.io.files.file_identity` of the descriptor the check read
    identity: tuple
    #: the kernel the identity was taken on: a device number means nothing on another (NFS)
    kernel: str

    @classmethod
    def of(cls, scan, check) -> "CheckedFile":
        """The file ``check`` (:func:`txmdb.catalog.txm.prepare_scan`'s, held) vouched for."""
        return cls(str(scan.file_path), scan.id, scan.file_sha256, tuple(check.identity), _kernel())

    @contextlib.contextmanager
    def reading(self, info):
        """``info`` reading the checked file through a descriptor opened here (errors naming the
        descriptor name the file); InputError if the path names another file now, or if the file
        was written to (or renamed over) while read."""
        import dataclasses

        from txmdb.catalog.txm import _hash_result, named_as_scan
        from txmdb.io.files import KnownHash, identity_text, open_regular

        held = KnownHash.if_unchanged(self.file_path, (self.file_sha256, identity_text(self._identity_here())))
        if held is None:
            try:                    # the reason it could not be opened, if that was it
                os.close(open_regular(self.file_path))
            except OSError as exc:
                raise InputError(self.file_path, f"cannot read: {exc.strerror or exc}") from None
            raise InputError(self.file_path, f"the file changed since scan {self.id} was ingested "
                                             "(it is not the file checked when the analysis began)")
        try:
            held_info = dataclasses.replace(info, path=Path(held.source))
            # this file's read errors only: a Dask worker's, shipped back as a ValueError through
            # the client's reading, is the worker's verdict on the file it read
            with named_as_scan(self, held_info), change_wins(self, held, InputError):
                yield held_info
            _hash_result(self, held)        # written to, or renamed over, while read
        finally:
            held.cancel()

    def _identity_here(self) -> tuple:
        """The identity checked, with the device number the path's file system has here when this
        is another kernel (an NFS mount's number is each client's own; the inode, size and times
        are the server's)."""
        if _kernel() == self.kernel:
            return self.identity
        try:
            return (os.stat(self.file_path).st_dev, *self.identity[1:])
        except OSError:
            return self.identity    # the open names the problem


def _kernel() -> str:
    """This kernel's boot id (Linux; device numbers compare within one), else the host's name."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        import socket

        return socket.gethostname()
