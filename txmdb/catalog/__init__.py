"""The catalogue: an engine, a results store and the services that read and write them."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from txmdb.db.engine import make_engine, resolve_url
from txmdb.db.migrate import check_database
from txmdb.db.session import session_scope
from txmdb.errors import StoreError

_STORE_ERRNO = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large (file size limit reached)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EIO: "input/output error",
}


def default_store(url) -> Path:
    """``$TXMDB_STORE``, else ``txmdb-store/`` beside a SQLite file, else in the working directory."""
    if env := os.environ.get("TXMDB_STORE"):
        return Path(env)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).resolve().parent / "txmdb-store"
    return Path.cwd() / "txmdb-store"


@dataclass
class Catalog:
    engine: Engine
    store: Path

    def session(self):
        return session_scope(self.engine)

    def store_path(self, *parts: str | int) -> Path:
        """A path inside the store built from ids and fixed names only, never user strings."""
        return self.store.joinpath(*(str(p) for p in parts))

    @contextlib.contextmanager
    def writing_store(self):
        """Turn an ``OSError`` while writing store files (disk full, size limit, read-only
        mount…) into one :class:`StoreError` naming the store and the problem."""
        try:
            yield
        except OSError as exc:
            raise StoreError(f"cannot write to the store {self.store}: {describe_os_error(exc)}") from None
        except RuntimeError as exc:
            # HDF5 reports a failed write while closing a file as RuntimeError ("Can't
            # decrement id ref count (file write failed: … errno = 27 …)").
            if "write failed" not in str(exc):
                raise
            reason = describe_os_error(OSError(str(exc)))
            del exc
            import gc

            gc.collect()
            raise StoreError(f"cannot write to the store {self.store}: {reason}") from None


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


def open_catalog(url: str | None = None, store: str | os.PathLike | None = None, *, check: bool = True) -> Catalog:
    """Open the catalogue at ``url``; with ``check`` it must be at the current schema head."""
    resolved = resolve_url(url)
    engine = make_engine(resolved)
    if check:
        check_database(engine)
    return Catalog(engine=engine, store=Path(store) if store else default_store(resolved))
