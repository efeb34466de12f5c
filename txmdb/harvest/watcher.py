"""The watcher: finds the rules' files, waits until each is complete, ingests it, records what happened.

Two ways of finding files (DESIGN §12):

- events: a watchdog Observer (inotify on Linux) reports each change at once; the folders are
  still walked at start, when a folder comes back, and every HARVEST_RESCAN_S as a safety net;
- polling (``poll`` seconds): the folders are walked every ``poll`` seconds, for network shares
  (NFS, SMB), which deliver no inotify events.

Either way a file becomes a *candidate* when its size or mtime differs from what
harvested_files records; it is read once its size and mtime have not changed for the rules'
``settle_seconds`` and it opens cleanly (txmdb.harvest.complete). One thread does all the
reading and writing (the observer's thread only notes paths), so a stop request (SIGTERM) is
honoured between files: the file being ingested is finished first.

Restarts: harvested_files is the memory. A file whose row says ingested, failed or ignored at
its current size and mtime is not read again; a waiting one is; a failed one that changed is
retried; an ingested one that changed (another SHA-256) is flagged ``changed_after_ingest`` and
never re-ingested; a file that failed because its sample or cell does not exist is retried
every HARVEST_RETRY_S once that name exists. A watcher killed mid-ingest re-reads the file on
restart, and the catalogue's services return the record already made of that SHA-256.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from txmdb.errors import TxmdbError
from txmdb.harvest.complete import incomplete_reason
from txmdb.harvest.ingest import missing_reference
from txmdb.harvest.ingester import Ingester, IngestFailed
from txmdb.harvest.record import Seen, load_seen, save
from txmdb.harvest.rules import Rule, Rules
from txmdb.store import TAKEN
from txmdb.textsafe import utf8_problem
from txmdb.vocabulary import HARVEST_RESCAN_S, HARVEST_RETRY_S

#: Seconds between the watched folders' existence checks (a folder unmounted or recreated).
FOLDER_CHECK_S = 1.0
#: Without --poll, a folder the observer cannot watch (inotify's watch limit) is walked this often.
UNWATCHED_WALK_S = 10.0


@dataclass
class Candidate:
    """A file changing or settling: its last stat, since when it has been unchanged."""

    rule: Rule
    size: int
    mtime: float
    since: float
    reason: str | None = None  # why it was not complete at its last check


def refuse_folders_in_store(rules, store) -> None:
    """TxmdbError naming the first watched folder of ``rules`` that is the results store
    ``store`` or inside it (through links too): its own results would be harvested."""
    store = Path(os.path.realpath(store))
    for folder in rules.folders:
        if Path(os.path.realpath(folder)).is_relative_to(store):
            raise TxmdbError(f"{folder}: a watched folder inside the store {store} (its own results "
                             f"would be harvested): watch the instruments' folders")


class Watcher:
    """Watches ``rules``' folders and harvests their files into ``catalog``.

    ``log(event, level, **fields)`` receives one call per event (an EventLog's ``event``).
    ``poll``: seconds between walks of the folders, None for inotify events. ``once``: walk
    the folders once, ingest what is complete, and return.
    """

    def __init__(self, catalog, rules: Rules, *, log: Callable[..., None], poll: float | None = None,
                 once: bool = False) -> None:
        self.catalog = catalog
        self.rules = rules
        self.log = log
        self.poll = poll
        self.once = once
        self.seen: dict[str, Seen] = {}
        self.candidates: dict[str, Candidate] = {}
        self._noted: set[str] = set()  # paths the observer reported since the last look
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._observer = None
        self._watches: dict[Path, object] = {}
        self._folders: dict[Path, tuple[int, int] | None] = {}
        self._unwatched: set[Path] = set()  # folders the observer could not watch: walked instead
        self._unnamable: set[str] = set()  # paths not valid UTF-8, logged once
        # the store's own files (results, copies) are never harvested, even under a watched folder
        self._store = Path(os.path.realpath(catalog.store.root))
        # files are read in a child process (txmdb.harvest.ingester): this one stays small
        self.ingester = Ingester(catalog.engine.url.render_as_string(hide_password=False), catalog.store.root)

    # ------------------------------------------------------------------------------ control
    @property
    def observer_name(self) -> str:
        return "one walk (--once)" if self.once else "polling" if self.poll is not None else "inotify"

    def stop(self) -> None:
        """Ask the watcher to stop after the file it is reading (safe from a signal handler)."""
        self._stopping = True
        # woken from a thread: a handler may run while this thread holds the event's (plain) lock
        threading.Thread(target=self._wake.set, daemon=True).start()

    def note(self, path: str) -> None:
        """A file or folder changed (the observer's thread): looked at by the main loop."""
        with self._lock:
            self._noted.add(path)
        self._wake.set()

    def run(self) -> None:
        settle = self.rules.settle_seconds
        refuse_folders_in_store(self.rules, self._store)
        self.log("watch.start", "info", observer=self.observer_name, poll=self.poll, settle_seconds=settle,
                 rules=str(self.rules.path), folders=[str(f) for f in self.rules.folders])
        self.seen = load_seen(self.catalog)
        if self.poll is None and not self.once:
            self._start_observer()
        try:
            self._loop(settle)
        finally:
            self.ingester.close()
            if self._observer is not None:
                self._observer.stop()
                self._observer.join(timeout=5)
        self.log("watch.stop", "info", candidates=len(self.candidates))

    def _loop(self, settle: float) -> None:
        tick = max(0.05, min(0.5, settle / 4 if settle else 0.1))
        next_walk = next_folder_check = next_retry = 0.0
        while not self._stopping:
            now = time.monotonic()
            if now >= next_folder_check:
                self._check_folders()
                next_folder_check = now + FOLDER_CHECK_S
            if now >= next_walk:
                for folder in self.rules.folders:
                    self._walk(folder)
                # events: a safety-net walk, more often while a folder could not be watched
                next_walk = now + (self.poll if self.poll is not None
                                   else UNWATCHED_WALK_S if self._unwatched else HARVEST_RESCAN_S)
            if now >= next_retry:
                self._retry_missing_references()
                next_retry = now + HARVEST_RETRY_S
            self._look_at_noted()
            self._settle(settle)
            self.ingester.stop_if_idle()
            if self.once and not self.candidates:
                return
            self._wake.wait(tick)
            self._wake.clear()

    # ------------------------------------------------------------------------------ finding
    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.event_type in ("opened", "closed_no_write"):
                    return
                # a folder's own "modified" comes with every file made in it: the file's event says it
                if event.is_directory and event.event_type not in ("created", "moved"):
                    return
                watcher.note(os.fsdecode(getattr(event, "dest_path", "") or event.src_path))

        self._handler = Handler()
        self._observer = Observer()
        self._observer.start()

    def _check_folders(self) -> None:
        """Notice a watched folder that disappeared or came back (a remount, a recreated folder)."""
        for folder in self.rules.folders:
            try:
                st = os.stat(folder)
                identity = (st.st_dev, st.st_ino)
            except OSError:
                identity = None
            before = self._folders.get(folder, "unknown")
            if identity == before:
                continue
            self._folders[folder] = identity
            if identity is None:
                self.log("folder.missing", "warning", folder=str(folder))
                self._unwatch(folder)
                continue
            if before != "unknown":
                self.log("folder.back", "info", folder=str(folder))
            self._unwatch(folder)
            if self._observer is not None:
                try:
                    self._watches[folder] = self._observer.schedule(self._handler, str(folder), recursive=True)
                except OSError as exc:  # e.g. the inotify watch limit (fs.inotify.max_user_watches)
                    self._unwatched.add(folder)
                    self.log("folder.unwatchable", "error", folder=str(folder), error=exc.strerror or str(exc),
                             fallback=f"walked every {UNWATCHED_WALK_S:g} s")
                else:
                    self._unwatched.discard(folder)
            if before != "unknown":
                self._walk(folder)  # files that arrived while it was away

    def _unwatch(self, folder: Path) -> None:
        watch = self._watches.pop(folder, None)
        if watch is not None:
            try:
                self._observer.unschedule(watch)
            except (KeyError, OSError):  # the kernel dropped it with the folder
                pass

    def _walk(self, folder: Path) -> None:
        for path in _files_under(folder, skip=self._store):
            self._consider(path)

    def _in_store(self, path: str) -> bool:
        return Path(os.path.realpath(path)).is_relative_to(self._store)

    def _look_at_noted(self) -> None:
        with self._lock:
            noted, self._noted = self._noted, set()
        for path in noted:
            if self._in_store(path):
                continue
            # a folder moved in, or made and filled before it was watched (a link to one is not followed)
            if os.path.isdir(path) and not os.path.islink(path):
                self._walk(Path(path))
            else:
                self._consider(path)

    def _consider(self, path: str) -> None:
        """A file that may have changed: a candidate if its stat differs from what is recorded."""
        rule = self.rules.rule_for(Path(path))
        if rule is None:
            return
        if utf8_problem(path):  # the catalogue cannot store its path: said once, never read
            if path not in self._unnamable:
                self._unnamable.add(path)
                self.log("file.unstorable_name", "warning", path=path, rule=rule.label,
                         error="the path is not valid UTF-8: rename the file to be harvested")
            return
        try:
            st = os.lstat(path)  # a symbolic link is not followed: it may point out of the folder
        except OSError:
            self.candidates.pop(path, None)
            return
        seen = self.seen.get(path)
        if _is_link(st):
            if seen is None or seen.status != "ignored":
                self.candidates.pop(path, None)
                self._record(path, rule, "ignored", st.st_size, st.st_mtime, event="file.ignored",
                             error="a symbolic link: links are not followed (harvest the file itself)")
            return
        if not _is_regular(st):
            return
        if seen is not None and seen.status != "waiting" and seen.same_stat(st.st_size, st.st_mtime):
            return
        if _ignored(rule, path):  # its name does not match the pattern: nothing to read, however it changes
            if seen is None or seen.status != "ignored":
                self.candidates.pop(path, None)
                self._record(path, rule, "ignored", st.st_size, st.st_mtime, event="file.ignored",
                             error=f"name does not match the pattern of rule {rule.label}")
            return
        candidate = self.candidates.get(path)
        if candidate is not None and (candidate.size, candidate.mtime) == (st.st_size, st.st_mtime):
            return
        self.candidates[path] = Candidate(rule, st.st_size, st.st_mtime, time.monotonic())
        self.ingester.warm()  # its imports while the file settles
        if seen is None:
            self._record(path, rule, "waiting", st.st_size, st.st_mtime, event="file.seen")

    # ----------------------------------------------------------------------------- settling
    def _settle(self, settle: float) -> None:
        now = time.monotonic()
        for path, candidate in list(self.candidates.items()):
            if self._stopping:
                return
            try:
                st = os.stat(path)
            except OSError:
                del self.candidates[path]
                self.log("file.vanished", "warning", path=path)
                if (seen := self.seen.get(path)) is None or seen.status != "ingested":
                    # its row stays waiting, saying why: a file of the same name later is read afresh
                    self._record(path, candidate.rule, "waiting", candidate.size, candidate.mtime,
                                 error="vanished before it was read")
                continue
            if (st.st_size, st.st_mtime) != (candidate.size, candidate.mtime):
                self.candidates[path] = Candidate(candidate.rule, st.st_size, st.st_mtime, now)
                continue
            if now - candidate.since < settle:
                continue
            try:
                reason = incomplete_reason(path, hdf5=self._hdf5_reason)
            except IngestFailed as exc:  # the HDF5 library died opening it
                del self.candidates[path]
                self._failed(path, candidate.rule, st.st_size, st.st_mtime, str(exc))
                continue
            if reason is not None:
                if reason != candidate.reason:
                    self.log("file.incomplete", "info", path=path, reason=reason)
                    self._record(path, candidate.rule, "waiting", st.st_size, st.st_mtime, error=reason)
                candidate.reason, candidate.since = reason, now
                if self.once:
                    del self.candidates[path]
                continue
            del self.candidates[path]
            self._harvest(path, candidate.rule, st.st_size, st.st_mtime)

    def _hdf5_reason(self, path) -> str | None:
        return self.ingester.call({"op": "complete", "path": str(path)})["reason"]

    def _retry_missing_references(self) -> None:
        """Files that failed for want of their sample or cell: candidates again once it exists;
        and those a store file in the way refused (until ``db check --repair`` sets it aside)."""
        for path, seen in list(self.seen.items()):
            waiting = seen.missing_reference or TAKEN in (seen.error or "")
            if seen.status != "failed" or not waiting or path in self.candidates:
                continue
            rule = self.rules.rule_for(Path(path))
            try:
                values = rule.values_for(Path(path)) if rule is not None else None
            except TxmdbError:
                continue
            if values is None or missing_reference(self.catalog, rule.kind, values) is not None:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            self.log("file.retry", "info", path=path, reason="its sample or cell exists now" if seen.missing_reference
                     else "a store file was in the way of its record")
            self.candidates[path] = Candidate(rule, st.st_size, st.st_mtime, float("-inf"))

    # ----------------------------------------------------------------------------- harvesting
    def _harvest(self, path: str, rule: Rule, size: int, mtime: float) -> None:
        """Read one complete file: ingest it, or flag it, or record why not."""
        seen = self.seen.get(path)
        if seen is not None and seen.status == "ingested":
            self._changed_after_ingest(path, rule, seen, size, mtime)
            return
        try:
            values = rule.values_for(Path(path))
        except TxmdbError as exc:
            self._failed(path, rule, size, mtime, str(exc))
            return
        # before the file is hashed and read: a missing cell costs one lookup, now and at each retry
        if (missing := missing_reference(self.catalog, rule.kind, values)) is not None:
            self._failed(path, rule, size, mtime, missing, missing=True)
            return
        try:
            result = self.ingester.call({"op": "ingest", "kind": rule.kind, "path": path, "folder": str(rule.folder),
                                         "values": values,
                                         "register": rule.register, "analyze": rule.analyze,
                                         "analysis": rule.analysis, "created_by": f"watch:{rule.label}"})
        except IngestFailed as exc:
            self._failed(path, rule, size, mtime, str(exc), missing=exc.missing)
            return
        error = None
        if result.get("changed_while_read"):
            # replaced or rewritten while the service read it: what was recorded may not be these bytes
            self._record(path, rule, "ingested", size, mtime, sha256=result["sha256"],
                         record_kind=result["record_kind"], record_id=result["record_id"], changed_after_ingest=True,
                         error="changed while it was read: its record may not match the file",
                         event="file.changed_while_read", level="warning", created=result["created"])
            return
        if result["jobs_error"]:
            error = f"ingested, but its jobs were not queued: {result['jobs_error']}"
            self.log("jobs.failed", "error", path=path, error=result["jobs_error"])
        self._record(path, rule, "ingested", size, mtime, sha256=result["sha256"], record_kind=result["record_kind"],
                     record_id=result["record_id"], error=error, event="file.ingested", created=result["created"],
                     jobs=result["jobs"] or None)

    def _changed_after_ingest(self, path: str, rule: Rule, seen: Seen, size: int, mtime: float) -> None:
        from txmdb.io.files import sha256_file

        try:
            sha = sha256_file(path)
        except OSError:
            return
        changed = sha != seen.sha256
        self._record(path, rule, "ingested", size, mtime, sha256=sha, quiet=not changed,
                     **({"changed_after_ingest": True, "event": "file.changed_after_ingest",
                         "level": "warning"} if changed else {}))

    def _failed(self, path: str, rule: Rule, size: int, mtime: float, error: str, *, missing: bool = False) -> None:
        from txmdb.io.files import sha256_file

        try:
            sha = sha256_file(path)
        except OSError:
            sha = None
        self._record(path, rule, "failed", size, mtime, sha256=sha, error=error, missing_reference=missing,
                     event="file.failed", level="warning")

    def _record(self, path: str, rule: Rule, status: str, size: int, mtime: float, *, event: str | None = None,
                level: str = "info", quiet: bool = False, created: bool | None = None, jobs=None, **fields) -> None:
        """Write the file's row, keep its copy, and log the event."""
        fields.setdefault("error", None)
        if status != "failed":
            fields.setdefault("missing_reference", False)
        save(self.catalog, path, rule=rule.label, kind=rule.kind, status=status, size_bytes=size, mtime=mtime,
             **fields)
        previous = self.seen.get(path)
        self.seen[path] = Seen(status, size, mtime, fields.get("sha256", previous.sha256 if previous else None),
                               fields.get("missing_reference", False), fields["error"])
        if event and not quiet:
            self.log(event, level, path=path, rule=rule.label, kind=rule.kind, status=status,
                     record=f"{fields['record_kind']}:{fields['record_id']}" if fields.get("record_kind") else None,
                     created=created, jobs=jobs, error=fields["error"])


def _files_under(folder: Path, *, skip: Path | None = None) -> Iterator[str]:
    """Every regular file below ``folder`` (symbolic links to folders not followed), none under the
    folder ``skip`` (the store)."""
    try:
        st = os.stat(skip) if skip is not None else None
        skipped = (st.st_dev, st.st_ino) if st else None
    except OSError:
        skipped = None
    stack = [str(folder)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            # inode first: free from scandir, the device only when it matches
                            if not (skipped and entry.inode() == skipped[1]
                                    and entry.stat(follow_symlinks=False).st_dev == skipped[0]):
                                stack.append(entry.path)
                        elif entry.is_file():
                            yield entry.path
                    except OSError:
                        continue
        except OSError:  # gone or unreadable (a share unmounted): the folder check reports it
            continue


def _is_link(st) -> bool:
    import stat

    return stat.S_ISLNK(st.st_mode)


def _is_regular(st) -> bool:
    import stat

    return stat.S_ISREG(st.st_mode)


def _ignored(rule: Rule, path: str) -> bool:
    try:
        return rule.values_for(Path(path)) is None
    except TxmdbError:
        return False
