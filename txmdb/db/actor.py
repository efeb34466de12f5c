"""Who is writing: the ``created_by`` of every row a write creates (DESIGN §12).

The web application names its signed-in account for the duration of a request
(:func:`acting_as`); anything else that writes (the CLI, a script) is recorded as its
operating-system login, ``os:<login>``, so a web account (letters, digits, ``._-``) and a
shell user can never be taken for one another. NULL when neither is known.
"""

from __future__ import annotations

import contextlib
import contextvars
import getpass
from typing import Iterator, Optional

_ACTOR: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("txmdb_actor", default=None)


def current_actor() -> Optional[str]:
    """The ``created_by`` of a row written now (the column default of every written table)."""
    actor = _ACTOR.get()
    if actor is not None:
        return actor
    try:
        return f"os:{getpass.getuser()}"
    except Exception:  # no USER variable and no passwd entry (some containers): unknown
        return None


@contextlib.contextmanager
def acting_as(name: Optional[str]) -> Iterator[None]:
    """Rows written inside are created by ``name`` (a web account; None: the OS login)."""
    token = _ACTOR.set(name)
    try:
        yield
    finally:
        _ACTOR.reset(token)
