"""The catalogue: an engine, a results store and the services that read and write them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from txmdb.db.engine import make_engine, resolve_url
from txmdb.db.migrate import check_database
from txmdb.db.session import session_scope
from txmdb.store import Store


def default_store(url) -> Path:
    """``$TXMDB_STORE``, else ``txmdb-store/`` beside a SQLite file, else in the working directory."""
    if env := os.environ.get("TXMDB_STORE"):
        return Path(env)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).resolve().parent / "txmdb-store"
    return Path.cwd() / "txmdb-store"


@dataclass
class Catalog:
    """The context every service takes: the catalogue's engine and its results store."""

    engine: Engine
    store: Store

    def session(self):
        return session_scope(self.engine)


def open_catalog(url: str | None = None, store: str | os.PathLike | None = None, *, check: bool = True) -> Catalog:
    """Open the catalogue at ``url``; with ``check`` it must be at the current schema head."""
    resolved = resolve_url(url)
    engine = make_engine(resolved)
    if check:
        check_database(engine)
    return Catalog(engine=engine, store=Store(store_path(url, store), engine))


def store_path(url: str | None, store: str | os.PathLike | None = None) -> Path:
    """The results store of the catalogue at ``url`` (as :func:`open_catalog` takes it):
    ``store``, else :func:`default_store`."""
    return Path(store) if store else default_store(resolve_url(url))


def catalogue_file_problem(output: str | os.PathLike, url, store: str | os.PathLike) -> str | None:
    """Why a file written at ``output`` would replace one the catalogue at ``url`` owns, or None:
    its SQLite database (or that database's journal), or anything in its results ``store``.
    ``output`` is followed through links, as the writers follow them (``txmdb.io.outputs``)."""
    where = Path(os.path.realpath(output))
    url = resolve_url(url) if url is None or isinstance(url, str) else url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        database = os.path.realpath(url.database)
        if str(where) in {database, *(database + end for end in ("-wal", "-shm", "-journal"))}:
            return "is the catalogue's database; give another file to write"
    if where.is_relative_to(os.path.realpath(store)):
        return f"is inside the catalogue's results store {store}; write outside it"
    return None


def refuse_catalogue_file(catalog, output: Path) -> None:
    """InputError when ``output`` is a file the catalogue owns (its database, anything in its
    store: :func:`catalogue_file_problem`) or an ingested file of a scan, run,
    spectrum or XRD result: a file written onto it would replace what rows and hashes describe."""
    from sqlalchemy import select

    from txmdb.db.models import INGESTED_FILES
    from txmdb.errors import InputError

    problem = catalogue_file_problem(output, catalog.engine.url, catalog.store.root)
    if problem is not None:
        raise InputError(output, problem)
    if not output.exists():
        return
    where = str(output.resolve())
    with catalog.session() as session:
        for model, noun in INGESTED_FILES:
            found = session.scalar(select(model.id).where(model.file_path == where).limit(1))
            if found is not None:
                raise InputError(output, f"is the file of {noun} {found}; give another file to write")
