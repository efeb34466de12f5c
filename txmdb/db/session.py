"""Session scope: commit on success, roll back on any error, raise domain errors."""

from __future__ import annotations

import contextlib
from typing import Iterator

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from txmdb.db.engine import describe_db_error
from txmdb.errors import DatabaseError, DuplicateError, TxmdbError


@contextlib.contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A transaction: committed when the block ends, rolled back when it raises."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise DuplicateError(f"conflicts with an existing record: {str(exc.orig).splitlines()[0]}") from None
    except DataError as exc:
        # A value the backend cannot store, e.g. a NUL character in a PostgreSQL text field.
        session.rollback()
        raise TxmdbError(f"value refused by the database: {str(exc.orig).splitlines()[0]}") from None
    except OperationalError as exc:
        session.rollback()
        raise DatabaseError(describe_db_error(engine, exc, doing='database error on')) from None
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
