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
    with the filters ``path_segment`` and ``field_label``."""
    env = Environment(
        loader=PackageLoader("txmdb.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["path_segment"] = path_segment
    env.filters["field_label"] = field_label
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


#: column-name endings and the unit each carries, for the labels a reader sees (the longest ending
#: that fits wins: ``_mah_g`` before ``_g``, ``_mg_cm2`` before ``_cm2``)
_UNITS = {"_ev": "eV", "_nm": "nm", "_um": "µm", "_angstrom": "Å", "_vox": "voxels", "_mg": "mg", "_g": "g",
          "_mah_g": "mAh/g", "_mah": "mAh", "_mwh": "mWh", "_cm2": "cm²", "_mg_cm2": "mg/cm²", "_v": "V",
          "_pct": "%", "_s": "s", "_bytes": "bytes"}
#: words a scientist writes otherwise than a column name does
_WORDS = {"ni": "Ni", "mn": "Mn", "co": "Co", "sha256": "SHA-256", "xas": "XAS", "xrd": "XRD", "txm": "TXM",
          "ndim": "dimensions", "n": "number of", "id": "ID", "pid": "PID", "kl": "KL", "ce": "CE", "e0": "E0",
          "l3": "L3", "theta": "θ", "phi": "φ", "u": "|u|", "lo": "from", "hi": "to", "mtime": "modified"}
#: whole names no word-by-word reading fits (a lone ``n`` is a count, not "number of")
_NAMES = {"n": "count", "i003_i104": "I(003)/I(104)"}


@functools.lru_cache(maxsize=1024)  # a table's header labels are asked for on every page it is shown on
def field_label(name: str) -> str:
    """The label of a catalogue column on a page: ``energy_min_ev`` → ``energy min (eV)``,
    ``ni_fraction`` → ``Ni fraction``, ``file_sha256`` → ``file SHA-256`` (CSV, JSON, the API and
    the CLI keep the column's name; a page's table header keeps it in ``data-column``)."""
    if name in _NAMES:
        return _NAMES[name]
    suffix = max((s for s in _UNITS if name.endswith(s) and len(name) > len(s)), key=len, default=None)
    stem = name[:-len(suffix)] if suffix else name
    words = " ".join(_WORDS.get(word, word) for word in stem.split("_"))
    return f"{words} ({_UNITS[suffix]})" if suffix else words
