"""Jinja2 pages: one environment, autoescaped, and :func:`render` for every HTML response.

Every template gets ``request``, ``user`` (the signed-in :class:`~txmdb.accounts.Account`, or
None when public reading lets an anonymous visitor in), ``csrf_token`` (the value every form
posts back in a hidden ``csrf_token`` field), ``public_read``, ``root_path`` (also ``root``),
``status_code``, ``menu`` (the pages this visitor may open), and two URL
helpers that keep the server's ``--root-path``: ``url('/samples')`` and
``static_url('app.css')``. The Content-Security-Policy allows no inline script: data for
scripts goes in ``data-`` attributes or a ``<script type="application/json">`` block
(``|tojson``), code in files under /static.
"""

from __future__ import annotations

import functools
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape


@functools.cache
def environment() -> Environment:
    """The templates of txmdb.web (autoescape on for every template, whatever its suffix),
    with the filter ``path_segment``."""
    env = Environment(
        loader=PackageLoader("txmdb.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["path_segment"] = path_segment
    return env


def path_segment(name) -> str:
    """``name`` as one segment of a URL path: every reserved character quoted, ``/`` too
    (Jinja's ``urlencode`` keeps ``/``: a sample named ``../sql`` linked to another page)."""
    return quote(str(name), safe="")


def root_path(request) -> str:
    """The prefix the server lives under (``--root-path``), without a trailing slash."""
    return (request.scope.get("root_path") or "").rstrip("/")


def url(request, path: str) -> str:
    """``path`` (absolute inside the application) as the browser must ask for it."""
    return root_path(request) + path


#: The menu: (path, label, the least role its page needs; pages.py's ``Viewer``/``Editor``)
NAV = (("/", "Dashboard", "viewer"), ("/samples", "Samples", "viewer"), ("/compare", "Compare", "viewer"),
       ("/query/scans", "Query", "viewer"), ("/sql", "SQL", "editor"), ("/jobs", "Jobs", "viewer"),
       ("/harvest", "Harvest", "viewer"), ("/upload", "Upload", "editor"))


def menu(user) -> list[tuple[str, str]]:
    """The menu entries ``user`` (None: an anonymous reader) may open: a page that would
    answer 403 is not offered."""
    return [(path, label) for path, label, role in NAV
            if (user.can(role) if user is not None else role == "viewer")]


def render(request, template: str, status_code: int = 200, headers: dict | None = None, **context):
    """The HTML response of ``template`` with ``context`` and the names every page has."""
    from fastapi.responses import HTMLResponse

    from txmdb.web.auth import csrf_token

    names = {
        "request": request,
        "user": getattr(request.state, "user", None),
        "menu": menu(getattr(request.state, "user", None)),
        "csrf_token": csrf_token(request),
        "public_read": request.app.state.settings.public_read,
        "root_path": root_path(request),
        "root": root_path(request),
        "status_code": status_code,
        "url": lambda path: url(request, path),
        "static_url": lambda name: url(request, "/static/" + quote(name)),
        **context,
    }
    html = environment().get_template(template).render(names)
    return HTMLResponse(html, status_code=status_code, headers=headers)


#: column-name endings and the unit each carries, for the labels a reader sees
_UNITS = (("_ev", "eV"), ("_nm", "nm"), ("_um", "µm"), ("_mg", "mg"), ("_v", "V"), ("_pct", "%"),
          ("_angstrom", "Å"), ("_mah_g", "mAh/g"))
#: words a scientist writes otherwise than a column name does
_WORDS = {"ni": "Ni", "mn": "Mn", "co": "Co", "sha256": "SHA-256", "xas": "XAS", "xrd": "XRD", "txm": "TXM",
          "ndim": "dimensions", "n": "number of"}


def field_label(name: str) -> str:
    """The label of a catalogue column on a page: ``energy_min_ev`` → ``energy min (eV)``,
    ``ni_fraction`` → ``Ni fraction``, ``file_sha256`` → ``file SHA-256`` (the column keeps its
    name in tables, CSV and the API)."""
    unit = next(((suffix, u) for suffix, u in _UNITS if name.endswith(suffix) and len(name) > len(suffix)), None)
    stem = name[:-len(unit[0])] if unit else name
    words = " ".join(_WORDS.get(word, word) for word in stem.split("_"))
    return f"{words} ({unit[1]})" if unit else words
