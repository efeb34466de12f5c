"""Engines for the catalogue: URL resolution, SQLite pragmas, error translation."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from txmdb.errors import DatabaseError

DEFAULT_URL = "sqlite:///txmdb.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Connections an engine keeps for reuse (and as many again opened and closed beyond them). A
#: process opens only as many as it uses at once; a web server's request threads (up to 40 per
#: process) use ~10 at once under 20 busy clients, and with SQLAlchemy's default of 5 kept it
#: opened and closed a PostgreSQL connection (a new server process) for one request in five.
POOL_SIZE = 20


# A scheme txmdb knows, at the start of the text: with it, the text is a URL, never a path.
_KNOWN_SCHEME = re.compile(r"(?P<backend>postgres(?:ql)?|sqlite)(?:\+[\w.-]*)?:", re.IGNORECASE)
# Query parameters whose values are secrets (libpq's password and sslpassword, and kin).
_SECRET_KEY = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
# The same inside a value or a driver's message: libpq reads a conninfo string in ?dbname=
# ("x password=…", a value in quotes or up to a space; a closing '"' of the message kept), or a
# URL with user:password@. Either may also come back quoted in the server's error.
_SECRET_SETTING = re.compile(r"(?P<key>[\w-]*(?:pass|pwd|secret|token)[\w-]*\s*=\s*)"
                             r"(?P<value>'(?:[^'\\]|\\.)*'?|\S+?(?=\"?(?:\s|$)))", re.IGNORECASE)
_USERINFO_SECRET = re.compile(r"(?P<key>://[^\s/:@]*:)(?P<value>[^\s@]*)(?=@)")
_EXPECTED = {
    "postgresql": "postgresql://[USER@]HOST[:PORT]/DB or postgresql:///?service=NAME",
    "sqlite": "sqlite:///FILE or a plain file path",
}
_PASSWORD_HINT = (
    "; percent-encode @ : / ? # % in a password (@ as %40), "
    "or keep it out of the URL with PGPASSWORD, ~/.pgpass or a service file"
)


def resolve_url(url: str | None = None) -> URL:
    """The catalogue URL from ``url``, ``$TXMDB_URL`` or the default; a bare path means SQLite.

    ``postgresql://`` and ``postgresql+DRIVER://`` URLs get the installed psycopg 3 driver.
    A malformed URL raises a DatabaseError that never repeats the URL (it may hold a password).
    """
    text = url or os.environ.get("TXMDB_URL") or DEFAULT_URL
    known = _KNOWN_SCHEME.match(text)
    if known and not text.startswith("//", known.end()):
        # e.g. postgresql:/u:pw@host/db: a URL with a slash missing, not a file to create.
        raise _malformed(known["backend"], "the scheme must be followed by '//'")
    if known is None and "://" not in text:
        # URL.create, not "sqlite:///" + path: a '?' or '#' in a folder name is part of the path.
        return URL.create("sqlite", database=str(Path(text).expanduser().resolve()))
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError):
        raise _malformed(known["backend"] if known else None, "it cannot be parsed") from None
    if parsed.get_backend_name() in ("postgresql", "postgres"):
        # Any postgresql+DRIVER URL (psycopg2, asyncpg…) from another tool runs on psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.host and "@" in parsed.host:
            raise _malformed("postgresql", "more than one '@' before the host")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseError(f"unsupported database {safe_url(parsed)}: use sqlite:///FILE or postgresql://…")
    if parsed.get_backend_name() == "sqlite" and parsed.query:
        # ?mode=…&uri=true would open another file (named with the '?') or drop read-only mode;
        # other keys only make the driver warn. txmdb sets how the file is opened itself.
        raise DatabaseError("sqlite URL with query parameters: txmdb takes none (it opens the file itself); "
                            "give sqlite:///FILE, or the plain path when the file's name holds a '?'")
    return parsed


def _malformed(backend: str | None, problem: str) -> DatabaseError:
    """One line saying the URL is malformed and what is expected, without the URL itself."""
    backend = "postgresql" if backend and backend.lower().startswith("postgres") else (backend or "").lower()
    expected = _EXPECTED.get(backend) or " or ".join(_EXPECTED.values())
    kind = f"{backend} URL" if backend else "database URL"
    hint = "" if backend == "sqlite" else _PASSWORD_HINT
    return DatabaseError(f"malformed {kind} ({problem}): expected {expected}{hint}")


def safe_url(url: URL | str) -> str:
    """The URL as text with every secret hidden: the password, secret query values such as
    ``?password=`` or ``sslpassword=``, and anything before an ``@`` that landed in the host.

    Every URL txmdb prints or writes goes through here.
    """
    if isinstance(url, str):
        try:
            url = make_url(url)
        except (ArgumentError, ValueError):
            return "<malformed URL>"
    url = url.set(query={k: ("***" if _SECRET_KEY.search(k) else _mask_values(v)) for k, v in url.query.items()})
    if url.host and "@" in url.host:
        url = url.set(host="***@" + url.host.rsplit("@", 1)[1])
    # The renderer percent-encodes query values; show the mask as written.
    return url.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def mask_secrets(text: str) -> str:
    """``text`` with every ``password=…`` (and kin) and every ``user:password@`` in it masked."""
    for pattern in (_SECRET_SETTING, _USERINFO_SECRET):
        text = pattern.sub(lambda match: match["key"] + "***", text)
    return text


def _mask_values(value: str | tuple) -> str | tuple:
    """A query value (or a repeated key's values) with the secrets inside them masked."""
    return mask_secrets(value) if isinstance(value, str) else tuple(map(mask_secrets, value))


def url_secrets(url: URL) -> list[str]:
    """The secret strings in ``url`` (password, secret query values), to scrub from driver messages."""
    found = [url.password] if url.password else []
    for key, value in url.query.items():
        values = [value] if isinstance(value, str) else list(value)
        if _SECRET_KEY.search(key):
            found.extend(values)
        for text in values:  # a password inside another value (?dbname=x password=…)
            found.extend(m["value"].strip("'") for p in (_SECRET_SETTING, _USERINFO_SECRET) for m in p.finditer(text))
    if url.host and "@" in url.host:
        found.append(url.host.rsplit("@", 1)[0])
    return [secret for secret in found if secret]


def missing_sqlite_file(url: URL) -> Path | None:
    """The SQLite file ``url`` names, if it does not exist (connecting would create it)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database)
    return None if path.exists() else path.resolve()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers work during a write; the busy timeout makes writers wait, not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str | URL | None = None, *, read_only: bool = False) -> Engine:
    """An engine for the catalogue; ``read_only`` opens SQLite read-only (``mode=ro``)."""
    from sqlalchemy import create_engine

    parsed = url if isinstance(url, URL) else resolve_url(url)
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            folder = Path(database).parent
            if not folder.is_dir():
                raise DatabaseError(f"cannot open {safe_url(parsed)}: folder {folder} does not exist")
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": 10}
    if parsed.get_backend_name() != "sqlite" or parsed.database not in (None, "", ":memory:"):
        kwargs.update(pool_size=POOL_SIZE, max_overflow=POOL_SIZE)
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ArgumentError) as exc:
        raise DatabaseError(f"invalid database URL {safe_url(parsed)}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if read_only:
            event.listen(engine, "do_connect", _open_read_only)
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class _SharedReads:
    """The one connection of a :func:`shared_reads` block (opened on first use)."""

    def __init__(self, engine: Engine):
        self.engine, self.connection, self.lock = engine, None, threading.Lock()


_SHARED_READS: ContextVar[_SharedReads | None] = ContextVar("txmdb_shared_reads", default=None)


def _reading(engine: Engine) -> Connection:
    """A pooled connection for reading. On PostgreSQL it runs in autocommit: no BEGIN and no
    ROLLBACK round trips around each statement, and psycopg keeps its prepared statements
    (it forgets them at every ROLLBACK, so pooled connections never reused a plan)."""
    connection = engine.connect()
    if engine.dialect.name == "postgresql":
        connection.execution_options(isolation_level="AUTOCOMMIT")
    return connection


@contextlib.contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A connection to run read-only statements on: the :func:`shared_reads` block's if this
    code runs inside one for ``engine``, else one of its own. Each statement sees the data
    committed when it starts (no snapshot spans statements). A failure to reach the database
    is a DatabaseError, as in a session."""
    from sqlalchemy.exc import OperationalError

    shared = _SHARED_READS.get()
    try:
        if shared is not None and shared.engine is engine and shared.lock.acquire(blocking=False):
            try:
                if shared.connection is None:
                    shared.connection = _reading(engine)
                yield shared.connection
            except BaseException:
                # A failed statement may have spoilt the connection: the next read takes another.
                if shared.connection is not None:
                    shared.connection.close()
                    shared.connection = None
                raise
            finally:
                shared.lock.release()
            return
        with _reading(engine) as connection:
            yield connection
    except OperationalError as exc:
        raise DatabaseError(describe_db_error(engine, exc, doing="database error on")) from None


@contextlib.contextmanager
def shared_reads(engine: Engine) -> Iterator[None]:
    """Every :func:`read_connection` of ``engine`` inside this block (this thread, or a task
    that copied its context) uses one connection: one checkout and one liveness ping for a
    page's several queries instead of one each."""
    if _SHARED_READS.get() is not None:
        yield
        return
    shared = _SharedReads(engine)
    token = _SHARED_READS.set(shared)
    try:
        yield
    finally:
        _SHARED_READS.reset(token)
        if shared.connection is not None:
            shared.connection.close()


def _open_read_only(_dialect, _record, cargs, cparams) -> None:
    # A file: URI with mode=ro makes writes impossible at the SQLite level. The path is
    # percent-encoded: a raw '?', '#' or '%' in a folder name would end the path early and
    # silently drop mode=ro. The engine's URL stays the plain one, for messages.
    if cargs[0] != ":memory:":
        cargs[0] = f"file:{quote(str(Path(cargs[0]).resolve()))}?mode=ro"
        cparams["uri"] = True


def describe_db_error(engine: Engine, exc: BaseException, *, doing: str = "cannot connect to") -> str:
    """One line naming the database and the first line of the driver's reason, secrets hidden."""
    reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    first = reason[0] if reason else type(exc).__name__
    for secret in url_secrets(engine.url):
        first = first.replace(secret, "***")
    return f"{doing} {safe_url(engine.url)}: {mask_secrets(first)}"
