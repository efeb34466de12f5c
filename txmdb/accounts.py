"""Web accounts, API tokens, browser sessions and the login rate limit (DESIGN §12).

Passwords are hashed with Argon2 (argon2-cffi): slow on purpose, checked once per sign-in.
API tokens and session cookies are long random secrets (256 bits), so a fast keyed hash is
enough to store them: HMAC-SHA-256 under the catalogue's web key (table ``web_key``, one
random key made by migration 0008). Checking one costs microseconds and one indexed row
lookup. The key lives in the catalogue, not in a file of the store, so every server sharing
the catalogue checks the same tokens; the SQL console never reads it nor any other table of
:data:`~txmdb.vocabulary.PRIVATE_TABLES`.

The CLI's ``txmdb user …`` and the web application both call these functions; nothing here
imports the web stack.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import weakref
from dataclasses import dataclass

from txmdb.errors import DuplicateError, NotFoundError, ParameterError, TxmdbError
from txmdb.vocabulary import (
    LOGIN_WINDOW_MINUTES, MAX_FAILED_LOGINS_PER_ADDRESS, MAX_FAILED_LOGINS_PER_NAME, MAX_PASSWORD_CHARS,
    MAX_TOKEN_DAYS, MIN_PASSWORD_CHARS, ROLES, SESSION_HOURS, USER_NAME_PATTERN,
)

#: Token prefix: says what a leaked string is (secret scanners match on it).
TOKEN_PREFIX = "txmdb_"

_KEYS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # engine -> web key bytes


@dataclass(frozen=True)
class Account:
    """A signed-in account as the web application sees it (no hash, no secret)."""

    id: int
    name: str
    role: str

    def can(self, role: str) -> bool:
        """Whether this account has ``role``'s rights (admin ⊃ editor ⊃ viewer)."""
        return ROLES.index(self.role) >= ROLES.index(role)


class LoginRefused(TxmdbError):
    """Too many failed sign-ins for this name or address: try again after ``retry_after_s``."""

    def __init__(self, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(f"too many failed sign-ins; try again in {max(1, retry_after_s // 60)} minutes")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite gives back naive datetimes (stored as UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


# ----------------------------------------------------------------------------- keyed hashes
def web_key(catalog) -> bytes:
    """The catalogue's HMAC key (read once per engine)."""
    key = _KEYS.get(catalog.engine)
    if key is None:
        from sqlalchemy import select

        from txmdb.db.models import WebKey

        with catalog.session() as session:
            text = session.scalar(select(WebKey.key_hex))
        if not text:
            raise TxmdbError("the catalogue has no web key (table web_key is empty); run 'txmdb db check'")
        key = _KEYS[catalog.engine] = bytes.fromhex(text)
    return key


def keyed_hash(key: bytes, secret: str, purpose: str) -> str:
    """HMAC-SHA-256 of ``secret`` for ``purpose`` ("token", "session", "csrf"), hex."""
    return hmac.new(key, f"{purpose}\0{secret}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------- accounts
def check_user_name(name: str) -> str:
    if not isinstance(name, str) or re.fullmatch(USER_NAME_PATTERN, name) is None:
        raise ParameterError("name", f"account name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
                                     "starting with a letter or digit")
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        # The password itself is never part of a message.
        raise ParameterError("password", f"the password must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} "
                                         "characters")
    return password


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ParameterError("role", f"role {role!r}: expected one of {', '.join(ROLES)}")
    return role


def add_user(catalog, name: str, role: str, password: str) -> int:
    """Create account ``name`` with ``role``; returns its id. The password is stored as Argon2 only."""
    from sqlalchemy import select

    from txmdb.db.models import User

    check_user_name(name)
    _check_role(role)
    digest = _hasher().hash(check_password(password))
    with catalog.session() as session:
        if session.scalar(select(User.id).where(User.name == name)) is not None:
            raise DuplicateError(f"account {name!r} exists already")
        user = User(name=name, role=role, password_hash=digest, disabled=False)
        session.add(user)
        session.flush()
        return user.id


def _user(session, name: str):
    from sqlalchemy import select

    from txmdb.db.models import User

    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFoundError(f"no account named {name!r}")
    return user


def check_account(catalog, name: str) -> None:
    """NotFoundError unless account ``name`` exists (before a command asks for a password)."""
    with catalog.session() as session:
        _user(session, name)


def count_users(catalog) -> int:
    from sqlalchemy import func, select

    from txmdb.db.models import User

    with catalog.session() as session:
        return session.scalar(select(func.count(User.id)))


def list_users(catalog):
    """Accounts as a table: name, role, disabled, created_at, created_by, live API tokens."""
    import pandas as pd
    from sqlalchemy import func, or_, select

    from txmdb.db.models import ApiToken, User

    live = (select(ApiToken.user_id, func.count(ApiToken.id).label("n"))
            .where(or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > _now()))
            .group_by(ApiToken.user_id).subquery())
    stmt = (select(User.name, User.role, User.disabled, User.created_at, User.created_by,
                   func.coalesce(live.c.n, 0).label("api_tokens"))
            .outerjoin(live, live.c.user_id == User.id).order_by(User.name))
    with catalog.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    columns = ["name", "role", "disabled", "created_at", "created_by", "api_tokens"]
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def _end_sessions(session, user_id: int) -> None:
    """Sign the account out of every browser (its next request asks it to sign in again)."""
    from sqlalchemy import delete

    from txmdb.db.models import WebSession

    session.execute(delete(WebSession).where(WebSession.user_id == user_id))


def disable_user(catalog, name: str) -> None:
    """Account ``name`` can no longer sign in; its sessions end and its API tokens are deleted
    now (enabled again, it starts with none)."""
    from sqlalchemy import delete

    from txmdb.db.models import ApiToken

    with catalog.session() as session:
        user = _user(session, name)
        user.disabled = True
        _end_sessions(session, user.id)
        session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))


def enable_user(catalog, name: str) -> None:
    """Account ``name`` can sign in again (its old sessions and API tokens stay ended)."""
    with catalog.session() as session:
        _user(session, name).disabled = False


def set_role(catalog, name: str, role: str) -> None:
    """Account ``name`` gets ``role``; its sessions end, so that no page keeps the old role's menu."""
    _check_role(role)
    with catalog.session() as session:
        user = _user(session, name)
        user.role = role
        _end_sessions(session, user.id)


def set_password(catalog, name: str, password: str) -> None:
    """A new password for account ``name`` (Argon2 only); its sessions end."""
    digest = _hasher().hash(check_password(password))
    with catalog.session() as session:
        user = _user(session, name)
        user.password_hash = digest
        _end_sessions(session, user.id)


def issue_token(catalog, name: str, expires_days: int | None = None) -> str:
    """A new API token of account ``name`` (shown once: only its keyed hash is stored)."""
    from txmdb.db.models import ApiToken

    if expires_days is not None and not 1 <= expires_days <= MAX_TOKEN_DAYS:
        raise ParameterError("expires_days", f"{expires_days} days: expected 1 to {MAX_TOKEN_DAYS}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = web_key(catalog)
    with catalog.session() as session:
        user = _user(session, name)
        if user.disabled:
            raise TxmdbError(f"account {name!r} is disabled")
        expires = None if expires_days is None else _now() + dt.timedelta(days=expires_days)
        session.add(ApiToken(user_id=user.id, token_hash=keyed_hash(key, token, "token"), expires_at=expires))
    return token


def _live_account(engine, model, column, digest: str):
    """The enabled account owning the unexpired row of ``model`` whose ``column`` is ``digest``.

    One statement on a reading connection (no ORM session, no transaction around it): it runs
    before every request."""
    from sqlalchemy import or_, select

    from txmdb.db.engine import read_connection
    from txmdb.db.models import User

    expiry = model.expires_at
    with read_connection(engine) as connection:
        row = connection.execute(
            select(User.id, User.name, User.role)
            .join(model, model.user_id == User.id)
            .where(column == digest, User.disabled.is_(False),
                   or_(expiry.is_(None), expiry > _now()))
        ).first()
    return None if row is None else Account(*row)


def account_for_token(catalog, token: str) -> Account | None:
    """The account an ``Authorization: Bearer`` token belongs to; None if unknown, expired or disabled."""
    from txmdb.db.models import ApiToken

    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = keyed_hash(web_key(catalog), token, "token")
    return _live_account(catalog.engine, ApiToken, ApiToken.token_hash, digest)


# ----------------------------------------------------------------------------- sessions
def open_session(catalog, account: Account) -> str:
    """Start a browser session of ``account``; returns the cookie's secret."""
    from txmdb.db.models import WebSession

    secret = secrets.token_urlsafe(32)
    with catalog.session() as session:
        session.add(WebSession(user_id=account.id, session_hash=keyed_hash(web_key(catalog), secret, "session"),
                               expires_at=_now() + dt.timedelta(hours=SESSION_HOURS)))
    return secret


def account_for_session(catalog, secret: str) -> Account | None:
    """The account of a session cookie; None if unknown, expired, logged out or disabled."""
    from txmdb.db.models import WebSession

    if not secret or len(secret) > 200:
        return None
    digest = keyed_hash(web_key(catalog), secret, "session")
    return _live_account(catalog.engine, WebSession, WebSession.session_hash, digest)


def close_session(catalog, secret: str) -> None:
    """Log out: the session's row goes (expired sessions of anyone go with it)."""
    from sqlalchemy import delete, or_

    from txmdb.db.models import WebSession

    digest = keyed_hash(web_key(catalog), secret, "session")
    with catalog.session() as session:
        session.execute(delete(WebSession).where(or_(WebSession.session_hash == digest,
                                                     WebSession.expires_at < _now())))


# ----------------------------------------------------------------------------- sign-in
_DUMMY: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY:
        _DUMMY.append(_hasher().hash(secrets.token_urlsafe(16)))
    return _DUMMY[0]


def sign_in(catalog, name: str, password: str, remote: str) -> Account | None:
    """The account ``name`` if ``password`` is its own; None otherwise.

    Every try is recorded; with too many failures for the name from this address, or from
    the address for any name, within :data:`~txmdb.vocabulary.LOGIN_WINDOW_MINUTES` it raises
    :class:`LoginRefused` before any password is checked. The name's count is per address so
    that failures sent from elsewhere cannot keep its owner (the admin) out for good.
    """
    from argon2.exceptions import InvalidHashError, VerificationError
    from sqlalchemy import func, select

    from txmdb.db.models import LoginAttempt, User

    name = name[:200]
    remote = (remote or "unknown")[:100]
    since = _now() - dt.timedelta(minutes=LOGIN_WINDOW_MINUTES)
    with catalog.session() as session:
        from_here = LoginAttempt.remote == remote
        for which, limit in ((from_here & (LoginAttempt.username == name), MAX_FAILED_LOGINS_PER_NAME),
                             (from_here, MAX_FAILED_LOGINS_PER_ADDRESS)):
            failed, first = session.execute(
                select(func.count(LoginAttempt.id), func.min(LoginAttempt.attempted_at))
                .where(which, LoginAttempt.attempted_at > since, LoginAttempt.succeeded.is_(False))
            ).one()
            if failed >= limit:
                wait = _aware(first) + dt.timedelta(minutes=LOGIN_WINDOW_MINUTES) - _now()
                raise LoginRefused(int(wait.total_seconds()) + 1)
        user = session.scalar(select(User).where(User.name == name))
    account = None
    if len(password) <= MAX_PASSWORD_CHARS:
        # An unknown or disabled name costs one Argon2 check too: the answer's time tells nothing.
        digest = user.password_hash if user is not None else _dummy_hash()
        try:
            _hasher().verify(digest, password)
            if user is not None and not user.disabled:
                account = Account(user.id, user.name, user.role)
        except (VerificationError, InvalidHashError):
            pass
    with catalog.session() as session:
        session.add(LoginAttempt(username=name, remote=remote, succeeded=account is not None))
    return account
