"""The ASGI application of ``txmdb serve``: pages, /api/v1, static assets, one gate for all.

:func:`create_app` takes the catalogue (:class:`txmdb.catalog.Catalog`, the object every CLI
command opens: engine and results store) and returns a FastAPI application:

- ``/static/*``: txmdb's own scripts, styles and fonts (no CDN), public;
- ``/login``, ``/logout``, ``/setup`` (:mod:`txmdb.web.auth`);
- ``/api/v1/*`` (:mod:`txmdb.web.api`), OpenAPI at ``/api/v1/openapi.json``;
- the pages (:mod:`txmdb.web.pages`, an ``APIRouter`` named ``router``).

A request whose ``Host`` is not one of the server's names is refused first (DNS rebinding;
:func:`allowed_hosts`). A middleware identifies every request once (bearer token or session cookie), refuses
anonymous requests outside :data:`txmdb.web.auth.PUBLIC_PATHS` unless ``public_read``, and
sets the security headers. Errors are JSON under /api (``{"error": ..., "status": ...}``)
and a page elsewhere; never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from txmdb.vocabulary import MAX_UPLOAD_BYTES

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("txmdb.web")

#: No inline script anywhere (DESIGN §12); styles may be inline (plotting libraries set them).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass
class WebSettings:
    """How this server answers (``txmdb serve``'s options)."""

    public_read: bool = False
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    # the Host names answered ("*": any); see allowed_hosts()
    allowed_hosts: tuple[str, ...] = ("*",)
    # SHA-256 of the one-time setup link's token; None once used, or when accounts exist.
    setup_token_hash: Optional[str] = None


#: the names a server bound to a loopback address answers to with ``--public-read`` and no ``--allowed-hosts``
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def allowed_hosts(bind_host: str, public_read: bool, names: Optional[str]) -> tuple[str, ...]:
    """The ``Host`` names ``txmdb serve`` answers to.

    ``names`` (``--allowed-hosts``, comma-separated; ``*`` any, ``*.example.org`` a domain;
    an IPv6 address in brackets, as in the URL) when given. Otherwise any name, unless
    ``public_read``: a page of another site whose name the attacker points at this server's
    address (DNS rebinding) is same-origin for the browser of a lab member who opens it, and
    could read what anonymous visitors read. Then a server bound to a loopback address answers
    to :data:`LOOPBACK_NAMES` only, and any other one needs the names given (TxmdbError): they
    are the names browsers use, which the server cannot know.
    """
    from txmdb.errors import TxmdbError

    if names is not None:
        hosts = tuple(_bracketed(n.strip().lower()) for n in names.split(",") if n.strip())
        bad = [n for n in hosts if "*" in n[1:] or (n.startswith("*") and n != "*" and not n.startswith("*."))
               or any(c in n for c in "/@ ")]
        if not hosts or bad:
            raise TxmdbError(f"--allowed-hosts {names!r}: expected host names like lab.example.org,localhost "
                             "('*' for any, '*.example.org' for a domain)")
        return hosts
    if not public_read:
        return ("*",)
    if _bracketed(bind_host.strip("[]").lower()) in LOOPBACK_NAMES or bind_host.startswith("127."):
        return LOOPBACK_NAMES
    raise TxmdbError(f"--public-read on {bind_host} needs --allowed-hosts: the names browsers reach this server by "
                     "(e.g. lab.example.org); otherwise another site could read the catalogue through a lab "
                     "member's browser (DNS rebinding). '*' answers any name")


def _bracketed(name: str) -> str:
    """An IPv6 address as a Host header carries it (``[::1]``); other names as they are."""
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


def create_app(context, *, public_read: bool = False, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               setup_token: Optional[str] = None, hosts: Sequence[str] = ("*",)) -> FastAPI:
    """The web application over catalogue ``context`` (engine and store; kept as ``app.state.catalog``),
    answering requests for the ``Host`` names ``hosts`` (:func:`allowed_hosts`)."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from txmdb import __version__
    from txmdb.web import api, auth

    app = FastAPI(title="txmdb", version=__version__, description="The lab's TXM-XANES catalogue (DESIGN §12).",
                  openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None, lifespan=_lifespan)
    app.state.catalog = context
    _hide_secrets_in_access_log()
    app.state.settings = WebSettings(public_read=public_read, max_upload_bytes=max_upload_bytes,
                                     setup_token_hash=auth.setup_token_hash(setup_token) if setup_token else None,
                                     allowed_hosts=tuple(hosts))
    app.add_middleware(BodyLimit)  # inside the gate: credentials first, then the size
    _add_gate(app)
    # outermost: a request for another name is refused before anything reads it
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts), www_redirect=False)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    app.include_router(auth.router)
    app.include_router(api.router, prefix="/api/v1")
    try:
        from txmdb.web import pages
    except ModuleNotFoundError as exc:  # the pages are optional; an error inside them is not
        if exc.name != "txmdb.web.pages":
            raise
    else:
        app.include_router(pages.router)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app):
    settle_heap()
    yield


#: What requests import on first use (query frames, tables, templates): imported before the heap settles.
_REQUEST_MODULES = ("numpy", "pandas", "pyarrow", "sqlalchemy.orm", "txmdb.db.models", "txmdb.query", "txmdb.tables",
                    "txmdb.textsafe", "txmdb.io.maps", "txmdb.web.pages")


def settle_heap() -> None:
    """Load what requests use, then take every object alive now out of the garbage collector's
    scans (``gc.freeze``), once, as a server starts.

    A request of a few thousand rows allocates tens of thousands of objects, which sets off a
    full collection every 10-30 such requests; each walked the server's ~160,000 long-lived
    objects (modules, classes, caches): ~4 CPU ms per 3,600-row theta answer on average
    (docs/performance.md). Objects made before serving live as long as the process.
    """
    import gc
    import importlib

    from txmdb.web.templating import environment

    for name in _REQUEST_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional module (pyarrow)
            pass
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # the ORM's mapper set-up, else done by the first query
    templates = environment()
    for name in templates.list_templates():
        templates.get_template(name)
    gc.collect()
    gc.freeze()


class _SecretsHidden(logging.Filter):
    """Access-log lines without the value of a secret sent in a query string: a token pasted into
    a URL (refused, but uvicorn logs the URL first) or the one-time setup link's."""

    SECRET = re.compile(r"([?&](?:token|access_token|api_key|password)=)[^&\s]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.SECRET.sub(r"\1[hidden]", a) if isinstance(a, str) else a for a in record.args)
        return True


def _hide_secrets_in_access_log() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _SecretsHidden) for f in logger.filters):
        logger.addFilter(_SecretsHidden())


#: How ``txmdb serve --workers N`` hands its settings to the worker processes it starts.
SETTINGS_VARIABLE = "TXMDB_WEB_SETTINGS"


def app_from_environment() -> FastAPI:
    """The application of one ``txmdb serve --workers N`` process: the catalogue from
    ``TXMDB_URL``/``TXMDB_STORE``, the settings from :data:`SETTINGS_VARIABLE` (JSON)."""
    import json
    import os

    from txmdb.catalog import open_catalog

    settings = json.loads(os.environ.get(SETTINGS_VARIABLE, "{}"))
    app = create_app(open_catalog(), public_read=bool(settings.get("public_read")),
                     max_upload_bytes=int(settings.get("max_upload_bytes", MAX_UPLOAD_BYTES)),
                     hosts=tuple(settings.get("allowed_hosts", ("*",))))
    app.state.settings.setup_token_hash = settings.get("setup_token_hash")
    return app


def _add_gate(app: FastAPI) -> None:
    app.add_middleware(Gate)


class Gate:
    """Identify every request once, refuse anonymous ones outside the public paths (unless
    ``--public-read``), and set the security headers and the cookies decided while handling it.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) runs the
    application in a task of its own and relays every message through a stream, which cost more
    CPU per request than many answers take to compute.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from fastapi import HTTPException
        from starlette.requests import Request

        from txmdb.errors import TxmdbError
        from txmdb.web.auth import identify, is_api, is_public, login_redirect, relative_path, set_cookies

        request = Request(scope, receive)
        path = relative_path(request)
        if not (path == "/api/v1/health" or path.startswith("/static/")):
            refusal = None
            try:
                user = await identify(request)
            except HTTPException as exc:
                refusal = error_response(request, exc.status_code, exc.detail, exc.headers)
            except TxmdbError as exc:  # the catalogue cannot be reached
                refusal = error_response(request, 503, str(exc))
            else:
                if user is None and not scope["app"].state.settings.public_read and not is_public(path):
                    refusal = (error_response(request, 401, "sign in first: send 'Authorization: Bearer TOKEN' "
                                                            "(txmdb user token NAME)", {"WWW-Authenticate": "Bearer"})
                               if is_api(path) else login_redirect(request))
            if refusal is not None:
                return await _security_headers(request, refusal)(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                started = _Started(message)
                set_cookies(request, started)
                _security_headers(request, started)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Started:
    """The headers of an answer on its way (its ASGI start message), edited as a Response's are."""

    set_cookie = Response.set_cookie  # uses raw_headers alone

    def __init__(self, message):
        self.headers = MutableHeaders(scope=message)
        self.raw_headers = self.headers.raw


def _security_headers(request, response):
    from txmdb.web.auth import relative_path, secure

    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if secure(request):
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if not relative_path(request).startswith("/static/"):
        # Pages and answers hold catalogue data: no shared cache keeps them.
        response.headers.setdefault("Cache-Control", "no-store")
    return response


#: Room for the form fields and multipart boundaries of an upload beside its file, and the
#: most any other request may send (a login form, a statement, a job's options).
FORM_OVERHEAD_BYTES = 1 << 20
#: The routes that take a file: only an editor's request to one gets the upload limit.
UPLOAD_PATHS = ("/api/v1/cycling", "/api/v1/xas", "/api/v1/xrd")


class BodyLimit:
    """Refuse request bodies beyond their limit with a 413 while they stream, before the form
    parser holds them in memory or spools them to disk: a declared Content-Length says so at
    once, a chunked body when it crosses the limit.

    The limit is :data:`FORM_OVERHEAD_BYTES`, plus the upload limit for an editor's request to
    an upload route: every form field is parsed into memory, so an anonymous login post as
    large as an upload held hundreds of MB of the server's memory per request.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.requests import Request

        from txmdb.web.auth import relative_path

        user = scope.get("state", {}).get("user")  # the gate identified the request
        # (a trailing slash: the router redirects the upload to the route without it)
        upload = relative_path(Request(scope)).rstrip("/") in UPLOAD_PATHS
        if upload and user is not None and user.can("editor"):
            limit = scope["app"].state.settings.max_upload_bytes + FORM_OVERHEAD_BYTES
            allowed = f"the upload limit is {limit - FORM_OVERHEAD_BYTES} bytes"
        else:
            limit, allowed = FORM_OVERHEAD_BYTES, f"at most {FORM_OVERHEAD_BYTES} bytes here"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = error_response(Request(scope), 413, f"request too large: {int(declared)} bytes, {allowed}")
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise StarletteHTTPException(413, f"request too large: {allowed}")
            return message

        return await self.app(scope, counted, send)


def error_response(request, status: int, message, headers=None):
    """A JSON error under /api, else an error page (template ``error.html`` when there is one); either in
    a browser's words (:func:`txmdb.web.advice.for_browser`: a page, not a command to run), the page
    linking to the page it names."""
    from txmdb.web.advice import for_browser
    from txmdb.web.auth import is_api, relative_path

    advice = for_browser(str(message))
    if is_api(relative_path(request)):
        return JSONResponse({"error": advice.text, "status": status}, status_code=status, headers=headers)
    from jinja2 import TemplateNotFound

    from txmdb.web.templating import render

    try:
        return render(request, "error.html", status_code=status, headers=headers, status=status, message=advice.text,
                      link=advice.link)
    except TemplateNotFound:
        from html import escape

        return HTMLResponse(f"<!doctype html><title>{status}</title><p>{escape(advice.text)}</p>",
                            status_code=status, headers=headers)


#: HTTP status of each domain error (the most specific class first).
def _status_of(exc) -> int:
    from txmdb.accounts import LoginRefused
    from txmdb.errors import DatabaseError, DuplicateError, NotFoundError, ParameterError, StateError, StoreError

    # A bad parameter value (a filter, a form field) is unprocessable; a file that cannot be used is a 400.
    for kind, status in ((NotFoundError, 404), (ParameterError, 422), (DuplicateError, 409), (StateError, 409),
                         (LoginRefused, 429), (DatabaseError, 503), (StoreError, 503)):
        if isinstance(exc, kind):
            return status
    return 400


def _validation_message(exc: RequestValidationError) -> str:
    """One line per bad field, naming where it was and what is wrong; of the value sent, at most
    what txmdb's own messages quote (:func:`txmdb.vocabulary.quoted`: 40 characters, escaped)."""
    parts = []
    for error in exc.errors():
        # ("query", "status", 0): the parameter's name, not the position of a repeated value.
        where = [str(p) for p in error.get("loc", ()) if p != "body" and not isinstance(p, int)]
        kind = {"query": "query parameter", "path": "path parameter", "header": "header"}.get(where[0] if where else "",
                                                                                             "field")
        name = ".".join(where[1:] if len(where) > 1 else where) or "request"
        # a ValueError of txmdb's own (whole_number): its message, without pydantic's prefix
        parts.append(f"{kind} {name!r}: {str(error.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts) or "invalid request"


def _add_error_handlers(app: FastAPI) -> None:
    from txmdb.errors import TxmdbError
    from txmdb.textsafe import visible

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return error_response(request, exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error_response(request, 422, _validation_message(exc))

    @app.exception_handler(TxmdbError)
    async def domain_error(request, exc):
        return error_response(request, _status_of(exc), visible(str(exc)))

    from sqlalchemy.exc import DataError

    @app.exception_handler(DataError)
    async def unstorable_value(request, exc):
        # A value the database refuses to compare or store (PostgreSQL: a NUL character in a
        # filter or form field, a number beyond its type): bad input, not a fault of the server.
        problem = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return error_response(request, 422, visible(f"a value the database cannot take: {problem}"))

    @app.exception_handler(Exception)
    async def unexpected(request, exc):
        log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__,
                  exc_info=exc)
        return error_response(request, 500, "internal error; the server log has the details")
