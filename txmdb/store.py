"""The results store: one owner for its layout, its write-then-commit protocol, its errors and
the hash-checked reading of its files (DESIGN §2, §8).

Layout
------
``<root>/<folder>/<id><suffix>`` for each record that keeps a file here (:data:`KINDS`): ids
and fixed names only, never user strings. A file on its way in is a *temporary*: a dot-file
``.tmp.<host tag>.<pid>.<id or "new">.<random><suffix>`` (writers may put their own scratch
files beside it, with that name inside theirs), so ``db check`` can tell which process
writes it and whether that process still runs. Only the names a writer makes, matched
whole, are temporaries; every entry of a store folder that is not a regular file (a link, a
FIFO, a folder) is reported, never read, renamed or removed, and a store folder that is a
link out of its place is left alone.

Owner
-----
A store belongs to one catalogue: ``<root>/.txmdb-store`` names the catalogue's id (table
``catalogue_identity``), written before the store's first file. Writing to, checking or
repairing a store marked for another catalogue is refused, so two catalogues never share
file names (ids start at 1 in each) nor delete each other's files as orphans. A store
without a mark that already holds files (made before stores were marked) is marked by
``txmdb db check --repair`` only when every file in it is one this catalogue's rows account
for — by name and SHA-256 —, and a write is refused until then: a file the catalogue cannot
account for may be another catalogue's, and the mark would hand it to this one's repair.

Protocol
--------
One sequence for every store file, its steps named in :data:`STEPS` (the crash tests kill
the process after each one):

``begun``
    Records with a status (analyses) only: the row is committed as ``running`` with the
    host and pid of its process; its id names the temporary.
``written``
    The file is complete under its temporary name.
``synced``
    It is fsynced and hashed.
``committed``
    The rows naming its final path and SHA-256 are committed in one transaction (an
    analysis becomes ``done``).
``renamed``
    The temporary has its final name and the folder is fsynced.

Any exception before ``committed`` — a full disk, a bad input, KeyboardInterrupt — removes
the temporary and marks a status row ``failed`` with the error text. A SIGKILL leaves
nothing that ``txmdb db check`` cannot name and ``--repair`` cannot settle:

- after ``begun``: a ``running`` row whose process is gone → marked ``failed``;
- after ``written`` / ``synced``: a temporary no live process owns → removed;
- after ``committed``: a row whose file is still under its temporary name → renamed into
  place ("rolled forward": the row is right and the bytes are the ones its hash names);
- after ``renamed``: nothing, the record is complete.

The commit comes before the rename because a new record's id, and so its file's final
name, exists only inside its transaction: renaming first left a final-named file without a
row whenever the process died before the commit.

Ingest records (cycling runs, XAS spectra) have no status column. Such a record is complete
the moment it is committed — its store file is derived from the source file and named by
the hash in its row — so a crash can only leave a committed row whose file still carries its
temporary name, which ``--repair`` rolls forward, or a temporary without a row, which it
removes. A status would add a half-made state that every query of cycles and spectra, and
every get-or-create by the source's SHA-256, would then have to step around, and tell a
user nothing: a failed ingest is a one-line error and the file can simply be ingested again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import itertools
import os
import re
import socket
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from txmdb.errors import StoreError, StoreFileError, StoreFileTaken, StoreOwnerError

STEPS = ("begun", "written", "synced", "committed", "renamed")

_STORE_ERRNO = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large (file size limit reached)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EIO: "input/output error",
}


@dataclass(frozen=True)
class Kind:
    """A kind of record that keeps one file in the store, and the columns that name it.

    A kind with ``status`` has the columns ``status`` (running | done | failed), ``error``,
    ``host``, ``pid``, ``started_at`` and ``finished_at``; its row is committed first.
    """

    noun: str
    folder: str
    suffix: str
    model: str              # class name in txmdb.db.models
    path_column: str
    sha_column: str
    status: bool = False

    @property
    def steps(self) -> tuple[str, ...]:
        """The protocol steps a file of this kind goes through."""
        return STEPS if self.status else STEPS[1:]

    def table(self):
        from txmdb.db import models

        return getattr(models, self.model)


ANALYSES = Kind("analysis", "analyses", ".h5", "Analysis", "results_path", "results_sha256", status=True)
CYCLING = Kind("cycling run", "cycling", ".parquet", "CyclingRun", "records_path", "records_sha256")
XAS = Kind("XAS measurement", "xas", ".parquet", "XASMeasurement", "spectrum_path", "spectrum_sha256")
KINDS = (ANALYSES, CYCLING, XAS)

HOST = socket.gethostname()


def host_tag(host: str) -> str:
    """Eight hex digits naming a host in temporary file names (a host name is no file name)."""
    return hashlib.sha256(host.encode()).hexdigest()[:8]


# A temporary's whole name (see Layout): ``.tmp.<host tag>.<pid>.<id or new>.<12 hex><suffix>``,
# bare, or inside a writer's scratch name: HDF5's room probe (``.room-`` before it) or
# atomic_output's mkstemp file (``.`` before it, ``.<8 chars>.partial`` after it).
_TEMP = re.compile(r"(?P<pre>|\.room-|\.)\.tmp\.(?P<host>[0-9a-f]{8})\.(?P<pid>[0-9]+)\.(?P<id>[1-9][0-9]*|new)"
                   r"\.[0-9a-f]{12}(?P<suffix>\.[a-z0-9]+)(?P<post>|\.[a-z0-9_]{8}\.partial)")

# The owner mark: the store's first file, naming the catalogue it belongs to.
MARK = ".txmdb-store"
_MARK_TEXT = re.compile(r"txmdb results store of catalogue ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\n")


def describe_os_error(exc: OSError) -> str:
    """The reason of an OSError in words; h5py and pyarrow bury the errno in their message."""
    code = exc.errno
    if code is None:
        found = re.search(r"errno\s*[=:]?\s*(\d+)", str(exc), flags=re.IGNORECASE)
        code = int(found.group(1)) if found else None
    if code in _STORE_ERRNO:
        return _STORE_ERRNO[code]
    if code is not None:
        return os.strerror(code).lower()
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def failure_text(exc: BaseException | str) -> str:
    """What a failed record's ``error`` column says about ``exc``: one line, control characters escaped."""
    from txmdb.errors import TxmdbError
    from txmdb.textsafe import visible

    if isinstance(exc, str):
        text = exc
    elif isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    elif isinstance(exc, SystemExit):
        text = f"interrupted (exit {exc.code})"
    elif isinstance(exc, GeneratorExit):
        text = "cancelled"
    elif isinstance(exc, TxmdbError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    # Escaped, not cut at a line break: a file name may hold one, and the reason follows it.
    return (visible(text.strip()) or type(exc).__name__)[:2000]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_synced(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) holding ``data``, flushed to the disk."""
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """The results store at ``root``, writing its rows through ``engine``."""

    def __init__(self, root: str | os.PathLike, engine=None):
        self.root = Path(root)
        self.engine = engine
        self._catalogue_id: str | None = None

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def session(self):
        from txmdb.db.session import session_scope

        return session_scope(self.engine)

    # ------------------------------------------------------------------ owner
    def catalogue_id(self) -> str:
        """The id of the catalogue this store object writes for (its ``catalogue_identity`` row)."""
        if self._catalogue_id is None:
            from sqlalchemy import select

            from txmdb.db.models import CatalogueIdentity

            with self.session() as session:
                self._catalogue_id = session.scalar(select(CatalogueIdentity.uuid))
            if self._catalogue_id is None:
                raise StoreOwnerError("the catalogue has lost its id (table catalogue_identity is empty), so "
                                      f"it cannot tell whether the store {self.root} is its own")
        return self._catalogue_id

    def owner(self) -> str | None:
        """The id the store's owner mark names; None for a store without one.

        Raises :class:`StoreOwnerError` when the mark names another catalogue, or is no
        txmdb mark.
        """
        refuse = "give --store a folder of this catalogue's own"
        try:
            text = _read_regular(self.root / MARK, limit=4096).decode("ascii")
        except FileNotFoundError:
            return None
        except (OSError, RuntimeError) as exc:
            raise StoreOwnerError(f"store {self.root}: its owner mark {MARK} {_file_problem(exc)}; {refuse}") from None
        except UnicodeDecodeError:
            text = ""
        found = _MARK_TEXT.fullmatch(text)
        if found is None:
            raise StoreOwnerError(f"store {self.root}: {MARK} is not a txmdb owner mark; {refuse}")
        if found.group(1) != self.catalogue_id():
            raise StoreOwnerError(f"store {self.root} belongs to another catalogue (id {found.group(1)}); {refuse}")
        return found.group(1)

    def holds_files(self) -> bool:
        """Whether any store folder has an entry (a folder that is not one counts as empty)."""
        for kind in KINDS:
            try:
                with os.scandir(self.root / kind.folder) as entries:
                    if next(entries, None) is not None:
                        return True
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                return True
        return False

    def mark(self) -> None:
        """Write the owner mark naming this catalogue, unless one is there; then it must name it.

        The mark is made whole under a scratch name and hard-linked into place, which fails
        if a mark appeared meanwhile: two catalogues marking one new store cannot both win.
        Any failure is a :class:`StoreOwnerError`: nothing may be written or repaired then.
        """
        mine = self.catalogue_id()
        try:
            with self.writing():
                self.root.mkdir(parents=True, exist_ok=True)
                text = f"txmdb results store of catalogue {mine}\n".encode("ascii")
                scratch = self.root / f"{MARK}.{uuid.uuid4().hex[:12]}"
                try:
                    _write_synced(scratch, text)
                    os.link(scratch, self.root / MARK)
                except FileExistsError:
                    pass
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                        raise
                    # No hard links on this file system (some network shares): create it
                    # exclusively in place; a reader that comes in between finds it empty.
                    with contextlib.suppress(FileExistsError):
                        _write_synced(self.root / MARK, text)
                finally:
                    scratch.unlink(missing_ok=True)
                _fsync(self.root)
        except StoreError as exc:
            raise StoreOwnerError(str(exc)) from None
        if self.owner() is None:
            raise StoreOwnerError(f"store {self.root}: its owner mark {MARK} vanished while it was written")

    def claim(self, kind: Kind) -> None:
        """Before a ``kind`` file is written: the store is this catalogue's (marked now if it
        is new) and ``kind``'s folder is its own, not a link out of the store."""
        if self.owner() is None:
            if self.holds_files():
                raise StoreOwnerError(
                    f"store {self.root} holds files but no owner mark (it was made before txmdb marked its stores): "
                    "run 'txmdb db check --repair' to mark it as this catalogue's, or give --store a folder of "
                    "this catalogue's own")
            self.mark()
        if (problem := _folder_problem(self, kind)) is not None:
            raise StoreOwnerError(f"store folder {self.root / kind.folder} {problem}")

    # ------------------------------------------------------------------ layout
    def path(self, kind: Kind, record_id: int) -> Path:
        """The final, absolute name of the file of record ``record_id``."""
        return self.root.resolve() / kind.folder / f"{int(record_id)}{kind.suffix}"

    def temp_path(self, kind: Kind, record_id: int | None = None) -> Path:
        """A fresh temporary name in ``kind``'s folder, saying which process writes it."""
        owner = "new" if record_id is None else str(int(record_id))
        name = f".tmp.{host_tag(HOST)}.{os.getpid()}.{owner}.{uuid.uuid4().hex[:12]}{kind.suffix}"
        return self.root.resolve() / kind.folder / name

    # ------------------------------------------------------------------ errors
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Turn an ``OSError`` while writing store files (disk full, size limit, read-only
        mount…) into one :class:`StoreError` naming the store and the problem."""
        try:
            yield
        except OSError as exc:
            raise StoreError(f"cannot write to the store {self.root}: {describe_os_error(exc)}") from None
        except RuntimeError as exc:
            # HDF5 reports a failed write while closing a file as RuntimeError ("Can't
            # decrement id ref count (file write failed: … errno = 27 …)").
            if "write failed" not in str(exc):
                raise
            reason = describe_os_error(OSError(str(exc)))
            del exc
            import gc

            gc.collect()
            raise StoreError(f"cannot write to the store {self.root}: {reason}") from None

    # ------------------------------------------------------------------ protocol
    def step(self, name: str, kind: Kind) -> None:
        """Protocol step ``name`` (one of :data:`STEPS`) of a ``kind`` file has just completed.

        Does nothing; a hook the crash tests replace to kill the process exactly there.
        """

    def begin(self, kind: Kind, row=None) -> "Put":
        """Start a file of ``kind``: for a kind with a status, commit ``row`` as ``running``."""
        self.claim(kind)
        record_id = None
        if kind.status:
            row.status, row.host, row.pid, row.started_at = "running", HOST, os.getpid(), _now()
            with self.session() as session:
                session.add(row)
                session.flush()
                record_id = row.id
            self.step("begun", kind)
        put = Put(self, kind, record_id)
        if record_id is not None and (taken := _taken(self.path(kind, record_id), kind)) is not None:
            put.withdraw()              # before any work: the row it began is gone again
            raise StoreFileTaken(taken)
        try:
            with self.writing():
                put.temp.parent.mkdir(parents=True, exist_ok=True)
        except BaseException as exc:
            put.abort(exc)
            raise
        return put

    @contextlib.contextmanager
    def put(self, kind: Kind, row=None) -> Iterator["Put"]:
        """One file through the protocol: write ``put.temp`` in the block, then ``put.commit(fill)``.

        An exception in the block (OSError as :class:`StoreError`) removes the temporary and
        marks a status row failed; after the commit nothing is undone.
        """
        put = self.begin(kind, row)
        try:
            with self.writing():
                yield put
            if put.state != "committed":
                raise RuntimeError("the store file was written but never committed")
        except BaseException as exc:
            put.abort(exc)
            raise

    def fail(self, kind: Kind, record_id: int, error: str, *, was: str = "running") -> bool:
        """Mark a status row failed with ``error``, if it is still ``was``; True if it was.

        A run that ends now gets ``finished_at``; a done row whose file went missing keeps
        the time it finished (it is marked done again, as it was, once the file is back)."""
        from sqlalchemy import update

        model = kind.table()
        values = {"status": "failed", "error": error}
        if was == "running":
            values["finished_at"] = _now()
        with self.session() as session:
            done = session.execute(update(model).where(model.id == record_id, model.status == was).values(**values))
            return done.rowcount == 1

    # ------------------------------------------------------------------ reading
    def verified(self, path: str | os.PathLike | None, sha256: str | None) -> Path:
        """``path`` after checking it is there and has the SHA-256 its row recorded."""
        if not path:
            raise StoreFileError(path, "is missing")
        try:
            actual = sha256_regular(Path(path))
        except FileNotFoundError:
            raise StoreFileError(path, "is missing") from None
        except (OSError, RuntimeError) as exc:
            raise StoreFileError(path, _file_problem(exc)) from None
        if actual != sha256:
            raise StoreFileError(path, "changed since it was recorded (SHA-256 differs)")
        return Path(path)

    def open_hdf5(self, path, sha256):
        """A results HDF5 file opened read-only after its hash check (use it in a ``with``)."""
        import h5py

        return h5py.File(self.verified(path, sha256), "r")

    def read_parquet(self, path, sha256, columns: list[str] | None = None):
        """A stored table (cycling records, spectra) as a DataFrame, after its hash check."""
        import pandas as pd

        return pd.read_parquet(self.verified(path, sha256), columns=columns)

    # ------------------------------------------------------------------ audit
    def audit(self, *, stale_after_s: float, forget_missing: bool = False) -> "Audit":
        """Every row against its file, every file against its row (see :class:`Audit`).

        Refused (:class:`StoreOwnerError`) for another catalogue's store, and for a store
        without an owner mark holding entries the rows do not account for; an unmarked store
        whose files all are this catalogue's gets a finding that ``--repair`` marks it.
        """
        owner = self.owner()
        audit = Audit()
        for kind in KINDS:
            _audit_kind(self, kind, audit, stale_after_s, forget_missing)
        elsewhere = [f for f in audit.findings if f.problem.endswith(_CHECK_STORE)]
        if not self.root.exists() and elsewhere:
            # a mistyped --store (or the default one, when the files are elsewhere): one line, not one per row
            first = elsewhere[0]
            audit.findings = [Finding(f"store {self.root}", f"does not exist: check --store ({len(elsewhere)} "
                                      f"records name store files; first {first.subject}: {first.problem})",
                                      foreign=True)] + [f for f in audit.findings if f not in elsewhere]
            return audit
        if owner is None and self.holds_files():
            foreign = [f for f in audit.findings if f.foreign]
            if foreign:
                raise StoreOwnerError(
                    f"store {self.root} has no owner mark and this catalogue's rows do not account for "
                    f"{len(foreign)} of its entries (first {foreign[0].subject}: {foreign[0].problem}); if another "
                    "catalogue uses it, give --store a folder of this catalogue's own, else settle them by hand")
            audit.findings.insert(0, Finding(f"store {self.root}", "no owner mark yet, and every file in it is "
                                             "this catalogue's", "marked as this catalogue's", self.mark))
        return audit


class Put:
    """One store file on its way in; made by :meth:`Store.begin` or :meth:`Store.put`."""

    def __init__(self, store: Store, kind: Kind, record_id: int | None):
        self.store, self.kind, self.record_id = store, kind, record_id
        self.temp = store.temp_path(kind, record_id)
        self.state = "open"
        self._ahead = None                  # the temporary's hash begun by hash_ahead()

    def hash_ahead(self) -> None:
        """The temporary is complete: hash it in a thread while the writer finishes its own work
        (an analysis waits for its input's hash check), for :meth:`commit` to take — only if
        the file is still the one hashed (:func:`txmdb.io.files.file_identity`), else it hashes
        the file again itself."""
        from txmdb.io.files import BackgroundHash

        self._ahead = BackgroundHash(self.temp, low_priority=False)

    def _sha256(self) -> str:
        """The temporary's SHA-256: the one :meth:`hash_ahead` began, if it holds, else computed now."""
        from txmdb.io.files import file_identity, sha256_file

        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            try:
                digest = ahead.result()
            except OSError:
                digest = None           # hashed again below, where its error counts
            finally:
                ahead.cancel()          # closes the file it kept open
            if digest is not None and ahead.identity == file_identity(os.stat(self.temp)):
                return digest
        return sha256_file(self.temp)

    def _cancel_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.cancel()

    def commit(self, fill: Callable):
        """Sync and hash the written temporary, commit the rows naming it, give it its final name.

        ``fill(session, row)`` completes ``row`` (the status row; None for an ingest record,
        which ``fill`` adds) and returns the record the file belongs to, flushed. The store
        then sets its path, SHA-256 and status, commits, and renames the file.
        """
        store, kind = self.store, self.kind
        store.step("written", kind)
        with store.writing():
            _fsync(self.temp)
            _fsync(self.temp.parent)
            sha256 = self._sha256()
        store.step("synced", kind)
        try:
            with store.session() as session:
                row = session.get(kind.table(), self.record_id) if self.record_id is not None else None
                record = fill(session, row)
                session.flush()
                final = store.path(kind, record.id)
                if (taken := _taken(final, kind)) is not None:
                    raise StoreFileTaken(taken)
                setattr(record, kind.path_column, str(final))
                setattr(record, kind.sha_column, sha256)
                if kind.status:
                    record.status, record.finished_at, record.error = "done", _now(), None
                session.flush()
        except StoreFileTaken:
            self.withdraw()             # nothing recorded: an ingest rolled back, a begun row deleted
            raise
        self.state = "committed"
        store.step("committed", kind)
        try:
            with store.writing():
                os.replace(self.temp, final)
                _fsync(final.parent)
        except StoreError as exc:
            raise StoreError(f"{exc}; {kind.noun} {record.id} is recorded and its file waits under "
                             f"{self.temp.name}: run 'txmdb db check --repair'") from None
        store.step("renamed", kind)
        return record

    def _discard(self) -> bool:
        """End an open attempt and remove its temporary; False if it had already ended."""
        if self.state != "open":
            return False
        self.state = "aborted"
        self._cancel_ahead()
        with contextlib.suppress(OSError):
            self.temp.unlink(missing_ok=True)
        return True

    def withdraw(self) -> None:
        """Give up before the commit and forget the attempt: remove the temporary, delete a
        status row still ``running`` (a refused input, not a failure worth keeping). A crash
        in between leaves a ``running`` row that ``txmdb db check`` settles as usual."""
        from sqlalchemy import delete

        if not self._discard():
            return
        if self.record_id is not None:
            model = self.kind.table()
            with self.store.session() as session:
                session.execute(delete(model).where(model.id == self.record_id, model.status == "running"))

    def abort(self, reason: BaseException | str) -> None:
        """Give up before the commit: remove the temporary, mark a status row failed."""
        if not self._discard():
            return
        if self.record_id is not None:
            # The original error matters more than a failed update: the row then stays
            # 'running' and db check finds it stale.
            with contextlib.suppress(Exception):
                self.store.fail(self.kind, self.record_id, failure_text(reason))


# ---------------------------------------------------------------------- liveness


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None where /proc cannot say; -1 if a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":
            return -1.0
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


# Linux never gives a process a pid above PID_MAX_LIMIT (2**22).
_PID_LIMIT = 2 ** 22


def process_alive(pid: int, since: float) -> bool:
    """Whether the process ``pid`` of this host that was running at ``since`` still runs.

    A pid taken over by a process started after ``since`` is not it (btime has 1 s steps);
    a pid no process can have (0 or less would even signal a process group) is no process.
    """
    if not 0 < pid <= _PID_LIMIT:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _process_start(pid)
    if started is not None and started < 0:
        return False
    return started is None or started <= since + 2.0


def owner_alive(host: str, pid: int | None, since: float, stale_after_s: float, *, tag: bool = False) -> bool:
    """Whether the writer ``pid`` on ``host`` (a host tag with ``tag``) may still be at work.

    On this host its process answers; another host's process cannot be asked, so its work
    counts as alive until ``stale_after_s`` seconds after ``since``.
    """
    here = host_tag(HOST) if tag else HOST
    if host == here and pid is not None:
        return process_alive(int(pid), since)
    return time.time() - since < stale_after_s


def _epoch(value: dt.datetime | None) -> float:
    if value is None:
        return 0.0
    if value.tzinfo is None:      # SQLite gives naive datetimes; txmdb writes UTC
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


# ---------------------------------------------------------------------- files


class _NotRegular(OSError):
    """Something other than a regular file is where a file should be."""

    def __init__(self, what: str):
        super().__init__(f"is {what}, not a regular file")


_KINDS_OF_ENTRY = ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a named pipe"),
                   (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def _what(mode: int) -> str:
    return next((name for test, name in _KINDS_OF_ENTRY if test(mode)), "an unknown kind of entry")


def _open_regular(path: Path) -> int:
    """A descriptor for reading the regular file at ``path``, itself no link.

    Anything else is refused before a byte is read: a FIFO blocks its reader forever and a
    device (``/dev/zero``) never ends. The open neither blocks nor follows a link, so an
    entry swapped between the check and the open is refused too.
    """
    mode = os.lstat(path).st_mode
    if stat.S_ISREG(mode):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return fd
        os.close(fd)
    raise _NotRegular(_what(mode))


def _read_regular(path: Path, *, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file at ``path``."""
    with open(_open_regular(path), "rb") as fh:
        return fh.read(limit)


def _resolved(path: Path) -> Path | None:
    """``path`` with every link followed; None for a loop of links."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def sha256_regular(path: str | os.PathLike) -> str:
    """SHA-256 of the regular file ``path`` names (links followed), read in chunks.

    Raises FileNotFoundError when nothing is there, another OSError (worded by
    :func:`_file_problem`) for a link loop, a path through a file, or anything that is not
    a regular file.
    """
    from txmdb.io.files import sha256_file

    where = _resolved(Path(path))
    if where is None:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
    return sha256_file(_open_regular(where))


def _sha256_or_none(path: Path) -> str | None:
    """The SHA-256 of a regular file; None when there is none to read (a writer may rename it meanwhile)."""
    try:
        return sha256_regular(path)
    except OSError:
        return None


def _file_problem(exc: BaseException) -> str:
    """Why a file could not be hashed, in words that follow its name."""
    if isinstance(exc, _NotRegular):
        return str(exc)
    code = getattr(exc, "errno", None)
    if isinstance(exc, RuntimeError) or code == errno.ELOOP:
        return "cannot be read: its path is a loop of symbolic links"
    if code == errno.ENOTDIR:
        return "cannot be read: a part of its path is a file, not a folder"
    return f"cannot be read: {describe_os_error(exc)}"


def _folder_problem(store: Store, kind: Kind) -> str | None:
    """What is wrong with ``kind``'s folder in the store, if it is a link out of its place."""
    folder = store.root / kind.folder
    if not os.path.lexists(folder):
        return None
    root, where = _resolved(store.root), _resolved(folder)
    if root is None or where != root / kind.folder:
        return f"links to {where or 'a loop of symbolic links'}, out of its place in the store"
    return None


@contextlib.contextmanager
def _opened_folder(home: Path | str, *, within: int | None = None) -> Iterator[int]:
    """The store folder ``home`` itself (``within`` the open folder of that fd, if given): one
    swapped for a link since the audit is not opened."""
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=within)
    try:
        yield fd
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- audit


@dataclass
class Finding:
    """One problem: what it concerns, what is wrong, and what ``--repair`` does about it.

    ``foreign`` marks an entry of the store the catalogue's rows do not account for: it may
    be another catalogue's, so a store holding one is not marked as this catalogue's.
    """

    subject: str
    problem: str
    fix: str | None = None
    action: Callable[[], None] | None = field(default=None, repr=False)
    repaired: bool = False
    foreign: bool = False

    def line(self) -> str:
        if self.repaired:
            return f"repaired: {self.subject}: {self.problem}: {self.fix}"
        hint = f" (--repair: {self.fix})" if self.fix else ""
        return f"problem: {self.subject}: {self.problem}{hint}"


@dataclass
class Audit:
    findings: list[Finding] = field(default_factory=list)
    files: int = 0           # store files checked against their rows
    in_progress: int = 0     # records and temporaries a live process is writing

    def add(self, *args, **kwargs) -> None:
        self.findings.append(Finding(*args, **kwargs))


@dataclass
class _Temp:
    path: Path
    host: str
    pid: int
    owner: str               # record id or "new"
    mtime: float
    scratch: bool            # a writer's own scratch file, not the temporary itself


def _listing(home: Path, kind: Kind):
    """Final files by id, temporaries, and entries that are neither (links, folders, FIFOs,
    names txmdb does not make), from the folder's own entries: no link is followed."""
    finals: dict[int, Path] = {}
    temps: list[_Temp] = []
    others: list[Path] = []
    try:
        with os.scandir(home) as found:
            entries = sorted(found, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return finals, temps, others
    final_name = re.compile(rf"[1-9][0-9]*{re.escape(kind.suffix)}")
    for entry in entries:
        path = home / entry.name
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode):
            others.append(path)
        elif final_name.fullmatch(entry.name):
            finals[int(entry.name[:-len(kind.suffix)])] = path
        elif (temp := _TEMP.fullmatch(entry.name)) and temp["suffix"] == kind.suffix and (
                (temp["pre"] == ".") == bool(temp["post"])):
            temps.append(_Temp(path, temp["host"], int(temp["pid"]), temp["id"], info.st_mtime, scratch=bool(temp["pre"])))
        else:
            others.append(path)
    return finals, temps, others


#: how a finding about a file where the store is not ends (a store missing altogether gathers them)
_CHECK_STORE = "check --store"


def _not_in_store(path: Path, where: Path | None, home: Path, root: Path) -> str:
    """Why a row's file is not looked at: it is not an entry of its store folder."""
    if where is None:
        return f"its file {path} is a loop of symbolic links; it is not read"
    if path.parent == home:
        return f"its file {path} links out of the store, to {where}; it is not read"
    if where.is_relative_to(home.parent):
        return f"its file {path} is not a file of the store folder {home}; it is not read"
    return f"its file {path} lies outside the store {root}: {_CHECK_STORE}"


def _audit_kind(store: Store, kind: Kind, audit: Audit, stale_after_s: float, forget_missing: bool = False) -> None:
    from sqlalchemy import select

    model = kind.table()
    folder = store.root / kind.folder
    home = (_resolved(store.root) or store.root) / kind.folder
    finals, temps, others = {}, [], []
    if (problem := _folder_problem(store, kind)) is not None:
        audit.add(f"{kind.folder}/", f"{problem}; nothing in it is checked or repaired: move its files back into "
                                     "the store, or give --store", foreign=True)
    else:
        try:
            finals, temps, others = _listing(home, kind)
        except OSError as exc:
            audit.add(f"{kind.folder}/", f"cannot be listed: {describe_os_error(exc)}", foreign=True)
    columns = [model.id, getattr(model, kind.path_column).label("path"), getattr(model, kind.sha_column).label("sha")]
    if kind.status:
        columns += [model.status, model.host, model.pid, model.started_at, model.error]
    else:
        columns += [model.file_path, model.file_sha256]
    with store.session() as session:
        rows = session.execute(select(*columns).order_by(model.id)).all()
    by_id = {row.id: row for row in rows}
    claimed: set[Path] = set()

    def temp_alive(temp: _Temp) -> bool:
        return owner_alive(temp.host, temp.pid, temp.mtime, stale_after_s, tag=True)

    def own_file(row, subject: str, names: str) -> bool:
        """Whether the store's file of ``row``'s id, unclaimed, has the SHA-256 the row records:
        then the row is to be re-pointed at it (``names``: the finding up to "the SHA-256 it
        records", ``{name}`` the file's name)."""
        canonical = finals.get(row.id)
        if canonical is None or canonical in claimed or _sha256_or_none(canonical) != row.sha:
            return False
        claimed.add(canonical)
        audit.add(subject, names.format(name=canonical.name) + " the SHA-256 it records",
                  f"row re-pointed to {canonical}", _bind(_repoint, store, kind, row.id, row.path, canonical))
        return True

    for row in rows:
        subject = f"{kind.noun} {row.id}"
        if kind.status:
            if row.status == "running":
                since = _epoch(row.started_at)
                if owner_alive(row.host, row.pid, since, stale_after_s):
                    audit.in_progress += 1
                    claimed.update(t.path for t in temps if t.owner == str(row.id))
                    continue
                where = f"host {row.host}, pid {row.pid}" if row.host else "an unknown process"
                audit.add(subject, f"running since {_when(row.started_at)} on {where}, which is gone",
                          "marked failed (interrupted)",
                          _bind(store.fail, kind, row.id, "interrupted: its process ended without a result"))
                continue
            if row.status != "done":
                continue
        if not row.path:
            audit.add(subject, "no file recorded")
            continue
        path = Path(row.path)
        where = _resolved(path)
        if where is None or where.parent != home:
            # Never read: a row may name /dev/zero, a FIFO or another catalogue's file.
            # a store copied or restored elsewhere (rows keep absolute paths): its own file is the one
            if where is not None and path.parent != home and own_file(row, subject, f"it names {path}, outside the "
                                                                      f"store, but the store's {kind.folder}/{{name}} has"):
                continue
            audit.add(subject, _not_in_store(path, where, home, store.root))
            claimed.add(path)        # a link in the folder: this line says all about it
            continue
        try:
            actual = sha256_regular(where)
        except FileNotFoundError:
            actual = None
        except OSError as exc:
            claimed.add(where)
            audit.add(subject, f"its file {path} {_file_problem(exc)}", foreign=True)
            continue
        if actual is not None:
            claimed.add(where)
            audit.files += 1
            if actual != row.sha:
                audit.add(subject, f"{path} changed since it was recorded (SHA-256 differs); "
                                   "restore it or re-run what wrote it", foreign=True)
            continue
        owner = str(row.id) if kind.status else "new"
        pending = [t for t in temps if t.owner == owner and not t.scratch and t.path not in claimed]
        match = next((t for t in pending if _sha256_or_none(t.path) == row.sha), None)
        if match is not None:
            claimed.add(match.path)
            if temp_alive(match):
                audit.in_progress += 1
            else:
                audit.add(subject, f"its file is still under its temporary name {match.path.name}",
                          f"renamed to {where.name}", _bind(_roll_forward, home, match.path.name, where.name))
            continue
        if own_file(row, subject, f"it names {path}, but its file is {{name}}, with"):
            pass                # the row's path is wrong (edited, corrupted), not its file: follow the file
        elif not home.is_dir():
            audit.add(subject, f"its file {path} is missing, and so is the folder {folder}: {_CHECK_STORE}")
        elif kind.status:
            audit.add(subject, f"its file {path} is missing (restore it from a backup: the check then marks it "
                               "done again)", "marked failed (results file missing)",
                      _bind(store.fail, kind, row.id, f"{_MISSING_RESULTS}: {path}", was="done"))
        elif _source_intact(row.file_path, row.file_sha256):
            if forget_missing:
                audit.add(subject, f"its file {path} is missing", f"record removed; ingest {row.file_path} again",
                          _bind(_delete_row, store, kind, row.id))
            else:
                # a record may be named elsewhere (an analysis' reference spectra): never removed unasked
                audit.add(subject, f"its file {path} is missing: restore it from a backup, or remove the record "
                                   f"with --repair --forget-missing and ingest {row.file_path} again")
        else:
            audit.add(subject, f"its file {path} is missing and its source {row.file_path} is gone or changed")

    for record_id, path in finals.items():
        if path in claimed:
            continue
        row = by_id.get(record_id)
        subject = f"{kind.folder}/{path.name}"
        if row is None:
            audit.add(subject, "orphan file: no row names it", f"moved to {LOST_AND_FOUND}/{kind.folder}/",
                      _bind(_set_aside, store.root, kind.folder, path.name), foreign=True)
        elif (kind.status and row.status == "failed" and (row.error or "").startswith(_MISSING_RESULTS)
              and row.path and _resolved(Path(row.path)) == path and _sha256_or_none(path) == row.sha):
            audit.files += 1
            audit.add(f"{kind.noun} {record_id}", f"was marked failed for its missing file, and {path} is back "
                                                  "with the SHA-256 it records", "marked done again",
                      _bind(_done_again, store, kind, record_id))
        elif row.path and _resolved(Path(row.path)) != path and (not kind.status or row.status == "done"):
            audit.add(subject, f"{kind.noun} {record_id} names another file, {row.path}; check --store", foreign=True)
        else:
            # Its id has a row, which may want it back: never removed.
            state = f"is {row.status}" if kind.status else "records no file"
            audit.add(subject, f"{kind.noun} {record_id} {state}, but this file has its id: kept; move it out of "
                               "the store if it is not wanted", foreign=True)

    for temp in temps:
        if temp.path in claimed:
            continue
        subject = f"{kind.folder}/{temp.path.name}"
        if temp_alive(temp):
            audit.in_progress += 1
            continue
        audit.add(subject, f"temporary file left by a crash (writer pid {temp.pid} is gone)", "removed",
                  _bind(_remove, home, temp.path.name), foreign=True)

    for path in others:
        if path in claimed:
            continue
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        what = "" if stat.S_ISREG(mode) else f"{_what(mode)}, "
        audit.add(f"{kind.folder}/{path.name}", f"{what}not a file txmdb writes; move it out of the store",
                  foreign=True)


def _when(value: dt.datetime | None) -> str:
    return "an unknown time" if value is None else dt.datetime.fromtimestamp(
        _epoch(value), dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bind(function, *args, **kwargs) -> Callable[[], None]:
    return lambda: function(*args, **kwargs)


def _regular_entry(folder_fd: int, name: str) -> bool:
    """Whether ``name`` is an entry of the open folder (False: gone); a non-regular one raises."""
    try:
        mode = os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        raise _NotRegular(_what(mode))
    return True


def _remove(home: Path, name: str) -> None:
    """Remove the regular file ``name`` of the store folder ``home``, never through a link."""
    with _opened_folder(home) as fd:
        if _regular_entry(fd, name):
            os.unlink(name, dir_fd=fd)


#: what a refused write says of the file in its way (the harvester retries such files)
TAKEN = "already exists, and no record of this catalogue names it"


def _taken(final: Path, kind: Kind) -> str | None:
    """Why a new record's file cannot go to ``final``, or None: ids are given again after a
    database is restored from an older backup than the store, and the file there may hold
    the only copy of a newer result."""
    try:
        mode = os.lstat(final).st_mode
    except OSError:                     # nothing there (or no folder yet): the write itself reports its trouble
        return None
    if not stat.S_ISREG(mode):
        return f"{final} is {_what(mode)}, not a file txmdb writes: move it out of the store; nothing is recorded"
    return (f"{final} {TAKEN} (a database restored from an older backup than the store?): nothing is "
            f"recorded; 'txmdb db check --repair' moves it to {LOST_AND_FOUND}/{kind.folder}/")


#: the store's folder for the files ``db check --repair`` finds no row for: set aside, never
#: removed (after a database is restored from an older backup they are the newer results)
LOST_AND_FOUND = "lost+found"


def _set_aside(root: Path, folder: str, name: str) -> None:
    """Move the regular file ``name`` of the store folder ``folder`` into ``lost+found/folder/``
    (``name.1``, ``name.2``… beside one of that name), never through a link."""
    top = _resolved(root) or root
    with _opened_folder(top / folder) as fd, _opened_folder(top) as root_fd, \
            _opened_inside(root_fd, LOST_AND_FOUND) as found_fd, _opened_inside(found_fd, folder) as into:
        if not _regular_entry(fd, name):
            return
        # a hard link never replaces a name (a rename would): the next free name, then unlink
        for n in itertools.count():
            try:
                os.link(name, f"{name}.{n}" if n else name, src_dir_fd=fd, dst_dir_fd=into, follow_symlinks=False)
                break
            except FileExistsError:
                continue
        os.fsync(into)
        os.unlink(name, dir_fd=fd)
        os.fsync(fd)


@contextlib.contextmanager
def _opened_inside(parent_fd: int, name: str) -> Iterator[int]:
    """The folder ``name`` of the open folder ``parent_fd``, made if missing; a link there is not followed."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, dir_fd=parent_fd)
    with _opened_folder(name, within=parent_fd) as fd:
        yield fd


def _roll_forward(home: Path, temp: str, final: str) -> None:
    with _opened_folder(home) as fd:
        os.replace(temp, final, src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)


def _repoint(store: Store, kind: Kind, record_id: int, was: str, path: Path) -> None:
    """Make the row name ``path``, if it still names ``was``."""
    from sqlalchemy import update

    model = kind.table()
    with store.session() as session:
        session.execute(update(model).where(model.id == record_id, getattr(model, kind.path_column) == was)
                        .values({kind.path_column: str(path)}))


#: the error of a status row ``db check --repair`` marked failed for its missing file
_MISSING_RESULTS = "results file missing"


def _done_again(store: Store, kind: Kind, record_id: int) -> None:
    """A row failed for its missing file, whose file is back: done, as it was."""
    from sqlalchemy import update

    model = kind.table()
    with store.session() as session:
        session.execute(update(model).where(model.id == record_id, model.status == "failed",
                                            model.error.startswith(_MISSING_RESULTS))
                        .values(status="done", error=None))


def _delete_row(store: Store, kind: Kind, record_id: int) -> None:
    with store.session() as session:
        record = session.get(kind.table(), record_id)
        if record is not None:
            session.delete(record)


def _source_intact(path: str | None, sha256: str | None) -> bool:
    """Whether an ingested source is still where it was, unchanged (so it can be ingested again)."""
    return bool(path) and _sha256_or_none(Path(path)) == sha256
