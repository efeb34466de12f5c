"""Who is asking, and may they: credentials, roles, CSRF, and the login, logout and setup routes.

Credentials (checked once per request by the application's gate, :func:`identify`):

- ``Authorization: Bearer TOKEN``: an API token (``txmdb user token``), checked by its keyed
  hash (:mod:`txmdb.accounts`). A request with a bad token is refused even with a cookie.
- the ``txmdb_session`` cookie of a signed-in browser (HttpOnly, SameSite=Lax, Secure when
  the request came over HTTPS, scoped to the root path).

Without ``--public-read`` only :data:`PUBLIC_PATHS` answer anonymous requests: the API says
401, pages redirect to /login. With it anonymous visitors read as viewers; writing still
needs an account of the right role.

CSRF: every form carries ``csrf_token`` (the templates' ``csrf_token``), the HMAC of the
session's secret (or, before sign-in, of a random ``txmdb_csrf`` cookie) under the
catalogue's web key. A form post without it, or with another session's, is a 403. Requests
with a bearer token carry no ambient credential and need none.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import weakref
from typing import Optional
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from txmdb.accounts import Account
from txmdb.vocabulary import ROLES, SESSION_HOURS

SESSION_COOKIE = "txmdb_session"
ANONYMOUS_CSRF_COOKIE = "txmdb_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: Paths that answer without credentials (prefixes end with "/").
PUBLIC_PATHS = ("/api/v1/health", "/login", "/setup", "/static/")

router = APIRouter(include_in_schema=False)


# ----------------------------------------------------------------------------- identification
def relative_path(request) -> str:
    """The request's path inside the application (without ``--root-path``)."""
    path, root = request.scope["path"], (request.scope.get("root_path") or "").rstrip("/")
    return (path[len(root):] or "/") if root and path.startswith(root) else path


def is_public(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC_PATHS)


def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def bearer_token(request) -> Optional[str]:
    """The token of an ``Authorization: Bearer`` header; "" for another scheme; None without one."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def identify(request) -> Optional[Account]:
    """The account of the request's credentials, stored on ``request.state``.

    Sets ``request.state.user`` (None: anonymous), ``request.state.by_token`` and
    ``request.state.session_secret``; raises a 401 for a bearer token that is unknown,
    expired or of a disabled account (a bad token never falls back to the cookie).
    """
    from txmdb.accounts import account_for_session, account_for_token

    catalog = request.app.state.catalog
    request.state.user, request.state.by_token, request.state.session_secret = None, False, None
    token = bearer_token(request)
    if token is not None:
        account = await run_in_threadpool(account_for_token, catalog, token) if token else None
        if account is None:
            raise HTTPException(401, "invalid, expired or revoked API token", {"WWW-Authenticate": "Bearer"})
        request.state.user, request.state.by_token = account, True
        return account
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        account = await run_in_threadpool(account_for_session, catalog, secret)
        if account is not None:
            request.state.user, request.state.session_secret = account, secret
    return request.state.user


# ----------------------------------------------------------------------------- dependencies
def current_user(request: Request) -> Optional[Account]:
    """The signed-in account; None for an anonymous visitor (only possible with --public-read)."""
    return getattr(request.state, "user", None)


def require_role(role: str):
    """A dependency: the signed-in account if it has ``role``'s rights, else 401/403.

    An anonymous visitor passes ``require_role("viewer")`` only with ``--public-read``.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def dependency(request: Request) -> Optional[Account]:
        user = current_user(request)
        if user is None:
            if role == "viewer" and request.app.state.settings.public_read:
                return None
            raise HTTPException(401, "sign in first", {"WWW-Authenticate": "Bearer"})
        if not user.can(role):
            raise HTTPException(403, f"this needs the {role} role; account {user.name!r} is a {user.role}")
        return user

    dependency.__name__ = f"require_{role}"
    return dependency


# ----------------------------------------------------------------------------- CSRF
def _csrf_secret(request) -> str:
    """What the request's CSRF token is bound to: its session, else its anonymous CSRF cookie."""
    secret = getattr(request.state, "session_secret", None)
    if secret:
        return "session:" + secret
    anonymous = getattr(request.state, "new_csrf_cookie", None) or request.cookies.get(ANONYMOUS_CSRF_COOKIE)
    if not anonymous or len(anonymous) > 100:
        # The gate sets this cookie on the response (set_cookies) so the form can post back.
        anonymous = request.state.new_csrf_cookie = secrets.token_urlsafe(32)
    return "anonymous:" + anonymous


def csrf_token(request) -> str:
    """The CSRF token of forms in this request's pages."""
    from txmdb.accounts import keyed_hash, web_key

    return keyed_hash(web_key(request.app.state.catalog), _csrf_secret(request), "csrf")


def check_csrf(request, form_token: Optional[str]) -> None:
    """403 unless ``form_token`` is this session's CSRF token (bearer-token requests need none)."""
    if getattr(request.state, "by_token", False):
        return
    if getattr(request.state, "session_secret", None) is None and not request.cookies.get(ANONYMOUS_CSRF_COOKIE):
        raise HTTPException(403, "missing CSRF cookie: reload the form and send it again")
    expected = csrf_token(request)
    if not form_token or not hmac.compare_digest(expected.encode(), str(form_token).encode()):
        raise HTTPException(403, "missing or wrong CSRF token: reload the form and send it again")


async def csrf_protect(request: Request) -> None:
    """A dependency for writes from browsers: the token of the ``X-CSRF-Token`` header or the
    ``csrf_token`` form field must match (requests with a bearer token need neither)."""
    if getattr(request.state, "by_token", False):
        return
    token = request.headers.get(CSRF_HEADER)
    if token is None and "form" in (request.headers.get("content-type") or ""):
        token = (await request.form()).get(CSRF_FIELD)
    check_csrf(request, token if isinstance(token, str) else None)


# ----------------------------------------------------------------------------- cookies
def secure(request) -> bool:
    """HTTPS as the browser sees it (uvicorn applies X-Forwarded-Proto from trusted proxies)."""
    return request.url.scheme == "https"


def _cookie_path(request) -> str:
    from txmdb.web.templating import root_path

    return root_path(request) or "/"


def set_cookies(request, response) -> None:
    """Cookies decided while handling the request (the anonymous CSRF cookie)."""
    value = getattr(request.state, "new_csrf_cookie", None)
    if value:
        response.set_cookie(ANONYMOUS_CSRF_COOKIE, value, httponly=True, samesite="lax", secure=secure(request),
                            path=_cookie_path(request))


def _set_session_cookie(request, response, secret: str) -> None:
    response.set_cookie(SESSION_COOKIE, secret, max_age=SESSION_HOURS * 3600, httponly=True, samesite="lax",
                        secure=secure(request), path=_cookie_path(request))


def safe_next(target: Optional[str]) -> str:
    """Where to go after sign-in: a path inside the application, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or is_public(target):
        return "/"
    return target


def login_redirect(request) -> RedirectResponse:
    """The redirect of an anonymous page request to the login form, coming back afterwards (to
    the page itself; after a form's POST, to the front page: a GET of the form's URL is a 405)."""
    from txmdb.web.templating import url

    if request.method not in ("GET", "HEAD"):
        return RedirectResponse(url(request, "/login"), status_code=303)
    target = relative_path(request) + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(url(request, "/login?next=" + quote(target, safe="")), status_code=303)


# ----------------------------------------------------------------------------- routes
def _login_page(request, *, error: Optional[str] = None, status_code: int = 200, next: str = "/", headers=None):
    from txmdb.web.templating import render

    return render(request, "login.html", status_code=status_code, headers=headers, error=error, next=safe_next(next))


@router.get("/login")
def login_form(request: Request, next: str = "/"):
    return _login_page(request, next=next)


#: One sign-in at a time per remote address (in this process), waited for without holding a
#: thread: the rate limit counts the address' failures before the next try is checked (tries
#: sent at once all passed the count while the first were still being checked: 31 of 60
#: checked against a limit of 5), and a right password sent twice at once is not refused.
_SIGNING_IN: "weakref.WeakValueDictionary[str, asyncio.Lock]" = weakref.WeakValueDictionary()


def _sign_in_turn(remote: str) -> asyncio.Lock:
    lock = _SIGNING_IN.get(remote)
    if lock is None:
        lock = _SIGNING_IN[remote] = asyncio.Lock()
    return lock


@router.post("/login")
async def login(request: Request, username: str = Form(""), password: str = Form(""),
                csrf_token: str = Form(""), next: str = Form("/")):
    from txmdb.accounts import LoginRefused, open_session, sign_in
    from txmdb.web.templating import url

    check_csrf(request, csrf_token)
    catalog = request.app.state.catalog
    remote = request.client.host if request.client else "unknown"
    try:
        async with _sign_in_turn(remote):
            account = await run_in_threadpool(sign_in, catalog, username, password, remote)
    except LoginRefused as exc:
        return _login_page(request, error=str(exc), status_code=429, next=next,
                           headers={"Retry-After": str(exc.retry_after_s)})
    if account is None:
        return _login_page(request, error="wrong account name or password", status_code=401, next=next)
    secret = await run_in_threadpool(open_session, catalog, account)
    response = RedirectResponse(url(request, safe_next(next)), status_code=303)
    _set_session_cookie(request, response, secret)
    return response


@router.post("/logout")
async def logout(request: Request, csrf_token: str = Form("")):
    from txmdb.accounts import close_session
    from txmdb.web.templating import url

    check_csrf(request, csrf_token)
    secret = getattr(request.state, "session_secret", None)
    if secret:
        await run_in_threadpool(close_session, request.app.state.catalog, secret)
    response = RedirectResponse(url(request, "/login"), status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request), httponly=True, samesite="lax",
                           secure=secure(request))
    return response


# The one-time link `txmdb serve` prints when the catalogue has no account yet: it opens a
# form that creates the first admin. The link's token lives only in the server's memory.
def _setup_allowed(request, token: str) -> bool:
    expected = request.app.state.settings.setup_token_hash
    return bool(expected) and hmac.compare_digest(expected, setup_token_hash(token))


@router.get("/setup")
def setup_form(request: Request, token: str = ""):
    from txmdb.accounts import count_users
    from txmdb.web.templating import render

    if not _setup_allowed(request, token):
        raise HTTPException(404, "this setup link is not valid (it works once, before any account exists)")
    if count_users(request.app.state.catalog):  # an account was made another way (`txmdb user add`)
        request.app.state.settings.setup_token_hash = None
        raise HTTPException(404, "this setup link is not valid (it works once, before any account exists)")
    return render(request, "setup.html", token=token, error=None)


@router.post("/setup")
async def setup(request: Request, token: str = Form(""), username: str = Form(""), password: str = Form(""),
                csrf_token: str = Form("")):
    from txmdb.accounts import add_user, count_users, open_session
    from txmdb.errors import TxmdbError
    from txmdb.web.templating import render, url

    check_csrf(request, csrf_token)
    catalog = request.app.state.catalog
    if not _setup_allowed(request, token) or await run_in_threadpool(count_users, catalog):
        raise HTTPException(404, "this setup link is not valid (it works once, before any account exists)")
    settings = request.app.state.settings
    kept, settings.setup_token_hash = settings.setup_token_hash, None  # one use, even when two posts race
    try:
        user_id = await run_in_threadpool(add_user, catalog, username, "admin", password)
    except TxmdbError as exc:
        settings.setup_token_hash = kept
        return render(request, "setup.html", status_code=400, token=token, error=str(exc))
    secret = await run_in_threadpool(open_session, catalog, Account(user_id, username, "admin"))
    response = RedirectResponse(url(request, "/"), status_code=303)
    _set_session_cookie(request, response, secret)
    return response


def setup_token_hash(token: str) -> str:
    """What the application keeps of a setup link's token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


Viewer = Depends(require_role("viewer"))
Editor = Depends(require_role("editor"))
Admin = Depends(require_role("admin"))
