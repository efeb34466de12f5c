"""``txmdb watch``: harvest instrument files into the catalogue as they are written (DESIGN §12)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from txmdb.cli._common import FormatOption, OutputOption, catalog, echo, emit_table, store_root
from txmdb.vocabulary import OutputFormat


def watch(
    ctx: typer.Context,
    rules_file: Path = typer.Argument(..., metavar="RULES.toml", help="Watch rules (TOML; see docs/harvest.md)."),
    check: bool = typer.Option(False, "--check", help="Validate the rules and show which existing files each rule "
                                                      "would match and what it would record; ingest nothing."),
    poll: Optional[float] = typer.Option(None, "--poll", metavar="SECONDS",
                                         help="Walk the folders every SECONDS instead of using inotify events "
                                              "(network shares: NFS and SMB deliver no events)."),
    once: bool = typer.Option(False, "--once", help="Walk the folders once, ingest the complete files, and exit."),
    log_json: bool = typer.Option(False, "--log-json", help="Log one JSON object per line instead of text lines."),
    fmt: Optional[OutputFormat] = FormatOption,
    output: Optional[Path] = OutputOption,
) -> None:
    """Watch folders by the rules and ingest each file once it is complete; every file seen is recorded.

    Logs one line per event on standard error; SIGTERM finishes the file being read, then stops.
    """
    from txmdb.errors import TxmdbError
    from txmdb.harvest.rules import load_rules
    from txmdb.textsafe import visible

    rules = load_rules(rules_file)  # a bad rules file stops here, before the catalogue is touched
    if check:
        from txmdb.harvest.watcher import refuse_folders_in_store

        store = store_root(ctx)
        refuse_folders_in_store(rules, store)  # as the watcher would
        summary = (f"{visible(str(rules_file))}: {len(rules.rules)} rule{'s' * (len(rules.rules) != 1)}, settle "
                   f"{rules.settle_seconds:g} s")
        cat, why_not = _existing_catalog(ctx)
        if cat is None:
            summary += f"; {why_not}: samples and cells not checked"
        table = _check_table(rules, store, cat)
        if output is None:
            echo(summary)
        emit_table(table, fmt, output)
        if output is not None:  # only once the file is written: a refused -o prints its error alone
            echo(summary)
        return
    if poll is not None and not 0.1 <= poll <= 86400:
        raise TxmdbError(f"--poll {poll:g}: expected seconds from 0.1 to 86400")
    _run(catalog(ctx), rules, poll=poll, once=once, log_json=log_json)


def _run(cat, rules, *, poll, once, log_json) -> None:
    import signal
    import threading

    from txmdb.eventlog import EventLog
    from txmdb.harvest.watcher import Watcher

    log = EventLog(json=log_json)
    watcher = Watcher(cat, rules, log=log.event, poll=poll, once=once)

    def stop(signum, _frame):
        if watcher_stopping[0]:  # asked twice: stop now, the file being read is left for the next start
            raise SystemExit(128 + signum)
        watcher_stopping[0] = True
        watcher.stop()
        # logged from a thread: the handler may have interrupted this thread inside the log's lock
        threading.Thread(target=log.info, args=("watch.stopping",),
                         kwargs={"signal": signal.Signals(signum).name}).start()

    watcher_stopping = [False]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watcher.run()


def _existing_catalog(ctx):
    """The catalogue and None, when there is one to read; else None and why not
    (``--check`` never creates a SQLite file, and works without a catalogue)."""
    from txmdb.db.engine import resolve_url
    from txmdb.errors import TxmdbError
    from txmdb.textsafe import visible

    url = resolve_url((ctx.find_root().obj or {}).get("db"))
    if url.get_backend_name() == "sqlite":
        if not (url.database and Path(url.database).is_file()):
            return None, "no catalogue yet"
        # opening sets the catalogue's journal mode: a file that is not one must stay as it is
        if not _sqlite_catalogue(Path(url.database)):
            return None, f"catalogue not opened ({visible(url.database)} is not a txmdb catalogue)"
    try:
        cat = catalog(ctx)
        cat.engine.connect().close()
    except TxmdbError as exc:
        return None, f"catalogue not opened ({exc})"
    return cat, None


def _sqlite_catalogue(path: Path) -> bool:
    """Whether ``path`` is a SQLite database with txmdb's schema version table, read without writing."""
    import sqlite3

    try:
        with path.open("rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                return False
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone() is not None
        finally:
            connection.close()
    except (OSError, sqlite3.Error):
        return False


def _check_table(rules, store, cat=None):
    """One row per existing file a rule watches: what the watcher would do with it (the
    results ``store``'s own files are never harvested, as by the watcher; a file whose sample
    or cell the catalogue ``cat`` lacks would fail)."""
    import pandas as pd

    from txmdb.errors import TxmdbError
    from txmdb.harvest.ingest import unrecorded
    from txmdb.harvest.watcher import _files_under
    from txmdb.textsafe import utf8_problem, visible

    lookups: dict = {}

    def looked_up(values: dict):
        """:func:`unrecorded` once per sample and cell named (a folder's files share a few)."""
        key = (values.get("sample"), values.get("cell"))
        if key not in lookups:
            lookups[key] = unrecorded(cat, values)
        return lookups[key]

    rows = []
    for rule in rules.rules:
        if not rule.folder.is_dir():
            rows.append(dict(rule=rule.label, kind=rule.kind, file=visible(str(rule.folder)), action="folder missing",
                             values="", jobs=""))
            continue
        for path in sorted(map(Path, _files_under(rule.folder, skip=store))):
            if rules.rule_for(path) is not rule:  # an earlier rule takes it
                continue
            try:
                values = rule.values_for(path)
                action = "ingest" if values is not None else "ignore (name does not match the pattern)"
            except TxmdbError as exc:
                values, action = None, f"fail: {exc}"
            if path.is_symlink():  # as the watcher: never followed
                values, action = None, "ignore (a symbolic link: links are not followed)"
            if utf8_problem(str(path)):  # as the watcher: the catalogue cannot store the path
                values, action = None, "ignore (the path is not valid UTF-8: rename the file to be harvested)"
            # (only a file still to ingest is looked up: its values are text the catalogue can take)
            missing = looked_up(values) if cat is not None and action == "ingest" else None
            if missing is not None:
                action = f"fail: {missing}"
            jobs = ", ".join(k for k, asked in (("register", rule.register), ("analyze", rule.analyze)) if asked)
            rows.append(dict(rule=rule.label, kind=rule.kind, file=visible(path.relative_to(rule.folder).as_posix()),
                             action=action, values=" ".join(f"{k}={v}" for k, v in (values or {}).items()),
                             jobs=jobs if action == "ingest" else ""))
    return pd.DataFrame(rows, columns=["rule", "kind", "file", "action", "values", "jobs"])
