"""The web pages (DESIGN §12): dashboard, samples, scans, compare, query, SQL, jobs, harvest, upload.

Every table of catalogue data comes from the same query functions as ``txmdb query``
(:data:`txmdb.query.QUERIES`; jobs from :func:`txmdb.jobs.list_jobs`, as ``txmdb jobs``) and every
filter form is built from their declarations (:data:`txmdb.vocabulary.FILTERS`); only the
dashboard's counts and newest rows are read directly. Plot data travel in ``data-plot`` attributes (JSON, escaped by
Jinja's autoescape); the scripts are static files, so the Content-Security-Policy can forbid
inline scripts.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
from typing import Callable, Iterable
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.convertors import PathConvertor, register_url_convertor

from txmdb.errors import NotFoundError, TxmdbError
from txmdb.query import QUERIES
from txmdb.vocabulary import FILTERS, SPACES, whole_number
from txmdb.web.api import Whole
from txmdb.web.auth import Editor, Viewer
from txmdb.web.templating import field_label, path_segment

router = APIRouter(include_in_schema=False)


class _AnyText(PathConvertor):
    """A path parameter that takes any text, line breaks too (a name may hold them: the
    ``path`` convertor's ``.*`` stops at one, and such a sample's page answered a bare 404)."""

    regex = "(?s:.*)"


register_url_convertor("text", _AnyText())

#: Rows a page shows of a table; the downloads have all of them.
PAGE_ROWS = 500
#: Rows the SQL console asks for (the CLI's --max-rows, smaller: a page, not a file).
SQL_PAGE_ROWS = 1000
#: Bytes of result the SQL console takes (the CLI's 256 MB made a page of ~1 GB of HTML, ~4.5 GB of
#: the server's memory per request: blobs are shown as text four times their size).
SQL_PAGE_BYTES = 8 << 20
#: Values the SQL console shows at most (however small: a page of 1000 rows of 2000 empty strings
#: took ~700 MB of the server's memory within the byte cap).
SQL_PAGE_CELLS = 100_000
#: SQL console statements a server process runs at once: each may hold a thread of the pool every
#: request is served by for the whole time limit (45 at once from one editor held every other
#: request for 28 s).
SQL_AT_ONCE = 4
#: ... and per account, so that one editor (or one stuck browser tab) leaves room for the others.
SQL_AT_ONCE_PER_ACCOUNT = 2


class _SqlSlots:
    """Statements running now, in all and per account (taken and given back on the event loop)."""

    def __init__(self, total: int, per_account: int):
        self.total, self.per_account = total, per_account
        self.running: dict[str, int] = {}

    def take(self, account: str) -> str | None:
        """None when a slot was taken for ``account``, else why not."""
        if sum(self.running.values()) >= self.total:
            return f"the SQL console runs {self.total} statements at a time, and that many are running"
        if self.running.get(account, 0) >= self.per_account:
            return f"the SQL console runs {self.per_account} statements of one account at a time"
        self.running[account] = self.running.get(account, 0) + 1
        return None

    def give_back(self, account: str) -> None:
        left = self.running[account] - 1
        if left:
            self.running[account] = left
        else:
            del self.running[account]


_SQL_SLOTS = _SqlSlots(SQL_AT_ONCE, SQL_AT_ONCE_PER_ACCOUNT)

# Axis names of a map's spatial axes, as the slice endpoint takes them.
SPATIAL_AXES = {3: ("z", "y", "x"), 2: ("y", "x")}


# --------------------------------------------------------------------------- plumbing


def _catalog(request: Request):
    return request.app.state.catalog


def _one_connection(page):
    """The page's queries share one database connection: one pool checkout and liveness ping
    for the page, not one per query (on PostgreSQL each is a round trip to the server)."""
    @functools.wraps(page)
    def reading(**arguments):
        from txmdb.db.engine import shared_reads

        with shared_reads(_catalog(arguments["request"]).engine):
            return page(**arguments)
    return reading


def _root(request: Request) -> str:
    from txmdb.web.templating import root_path

    return root_path(request)


def _page(request: Request, template: str, *, active: str | None = None, status_code: int = 200, **context):
    """A page; ``render`` adds the user, the CSRF token of its forms and the root path. Its ``error``
    (a domain error's message) in a browser's words, as error pages have them (app.error_response)."""
    from txmdb.web.advice import for_browser
    from txmdb.web.templating import render

    if context.get("error"):
        context["error"] = for_browser(context["error"]).text
    return render(request, template, status_code=status_code, active=active, **context)


# --------------------------------------------------------------------------- tables


def _text(value) -> str:
    """A cell as text: numbers to six significant figures, nothing for missing values (None, NaN, NA, NaT)."""
    import pandas as pd

    from txmdb.textsafe import visible

    if value is None or (not isinstance(value, (dict, list, str)) and pd.isna(value) is True):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, (dict, list)):
        return visible(json.dumps(value, ensure_ascii=False))
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if hasattr(value, "item"):  # numpy scalars
        return _text(value.item())
    return visible(str(value))


#: A button in the last column of a table: its label, and the URL a row's button posts to (None: no button).
RowAction = tuple[str, Callable[[dict], str | None]]


def table(frame, *, links: dict[str, Callable[[dict], str | None]] | None = None, status: Iterable[str] = (),
          limit: int = PAGE_ROWS, empty: str | None = None, action: RowAction | None = None) -> dict:
    """A DataFrame as the rows of ``_macros.data_table``: text cells, links where ``links`` say, and
    ``action``'s button where it gives a URL."""
    from pandas.api.types import is_numeric_dtype

    columns = list(frame.columns)
    # From the dtypes, not frame[c] (a Series made per column: ~1 % of a page's CPU).
    numeric = {c for c, dtype in zip(columns, frame.dtypes) if is_numeric_dtype(dtype) and dtype != bool}
    records = frame.head(limit).to_dict("records") if not frame.empty else ()  # (to_dict costs even then)
    shown = _table(columns, numeric, records, len(frame), links, status, empty)
    return _with_action(shown, records, action) if action else shown


def _with_action(shown: dict, records, action: RowAction) -> dict:
    """``shown`` with a last column of ``action``'s buttons (a cell's ``post``: the URL its form posts to)."""
    label, post = action
    shown["columns"].append(label)
    for row, record in zip(shown["rows"], records):
        url = post(record)
        row.append({"text": label if url else "", "post": url})
    return shown


def rows_table(rows, *, drop: Iterable[str] = (), status: Iterable[str] = (), limit: int = PAGE_ROWS,
               empty: str | None = None) -> dict:
    """A query's :class:`~txmdb.query.Rows` (without the columns ``drop``) as :func:`table` shows the
    same rows as a DataFrame: the same texts and number columns, without making one."""
    dropped = set(drop)
    keep = [i for i, key in enumerate(rows.keys) if key not in dropped]
    columns = [rows.keys[i] for i in keep]
    shown = [dict.fromkeys(columns) for _ in rows.rows[:limit]]
    numeric = set()
    for i, key in zip(keep, columns):
        is_numeric, as_float = _frame_column(rows.rows, i, key in rows.integers)
        if is_numeric:
            numeric.add(key)
        for record, row in zip(shown, rows.rows):
            value = row[i]
            record[key] = float(value) if as_float and value is not None else value
    return _table(columns, numeric, shown, len(rows), None, status, empty)


def _frame_column(rows, i: int, integer: bool) -> tuple[bool, bool]:
    """Whether column ``i`` of ``rows`` is numeric in a DataFrame, and whether its numbers are floats
    there: pandas makes whole numbers beside a NULL or a fractional number a float column (the page
    then shows 1234567 as 1.23457e+06). ``integer``: made Int64, numeric, whole numbers kept."""
    if integer:
        return True, False
    kinds = {type(row[i]) for row in rows}
    null = type(None) in kinds
    kinds.discard(type(None))
    if not kinds or not kinds <= {int, float}:  # bool is no int here: bool and object columns are not numeric
        return False, False
    return True, null or float in kinds


def _table(columns: list[str], numeric: set[str], records: Iterable[dict], total: int,
           links: dict[str, Callable[[dict], str | None]] | None, status: Iterable[str], empty: str | None) -> dict:
    """The first rows of a table (``records``: column name to value) as text cells."""
    links = links or {}
    status = set(status)
    rows = []
    for record in records:
        row = []
        for c in columns:
            text = _text(record[c])
            href = links[c](record) if c in links and text else None
            row.append({"text": text, "href": href, "num": c in numeric, "status": c in status and bool(text)})
        rows.append(row)
    return {"columns": columns, "rows": rows, "total": total, "empty": empty}


# --------------------------------------------------------------------------- dashboard


def _newest(catalog, model, *, statuses: Iterable[str] = (), limit: int = 10):
    """The newest rows of ``model``'s table (by id), optionally of some statuses only."""
    import pandas as pd
    import sqlalchemy as sa

    from txmdb.db.engine import read_connection

    stmt = sa.select(model.__table__).order_by(model.id.desc()).limit(limit)
    if statuses:
        stmt = stmt.where(model.status.in_(list(statuses)))
    with read_connection(catalog.engine) as conn:
        result = conn.execute(stmt)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _jobs(catalog, statuses: Iterable[str] = (), limit: int = PAGE_ROWS):
    """The newest jobs, as ``txmdb jobs`` lists them (txmdb.jobs.list_jobs), newest first."""
    from txmdb.jobs import list_jobs

    return list_jobs(catalog, list(statuses) or None).iloc[::-1].head(limit)


def _counts(catalog) -> list[tuple[str, int, str | None]]:
    import sqlalchemy as sa

    from txmdb.db import models as m

    things = [("samples", m.Sample, "/samples"), ("cells", m.Cell, "/query/cells"),
              ("cycling runs", m.CyclingRun, "/query/cycles"), ("XAS spectra", m.XASMeasurement, "/query/xas"),
              ("XRD results", m.XRDResult, "/query/xrd"), ("TXM scans", m.TXMScan, "/query/scans"),
              ("analyses", m.Analysis, "/query/analyses"), ("particles", m.Particle, "/query/particles")]
    with catalog.session() as session:
        return [(label, session.scalar(sa.select(sa.func.count()).select_from(model)), href)
                for label, model, href in things]


def _recent_ingests(catalog, limit: int = 12):
    """The newest ingested files of every kind, newest first."""
    import pandas as pd
    import sqlalchemy as sa

    from txmdb.db import models as m

    kinds = [("cycling", m.CyclingRun, m.Cell.name, m.CyclingRun.cell_id == m.Cell.id, m.CyclingRun.ingested_at),
             ("XAS", m.XASMeasurement, m.Sample.name, m.XASMeasurement.sample_id == m.Sample.id,
              m.XASMeasurement.ingested_at),
             ("TXM", m.TXMScan, m.Sample.name, m.TXMScan.sample_id == m.Sample.id, m.TXMScan.ingested_at),
             ("XRD", m.XRDResult, m.Sample.name, m.XRDResult.sample_id == m.Sample.id, m.XRDResult.created_at)]
    rows = []
    with catalog.session() as session:
        for kind, model, owner, join, when in kinds:
            stmt = (sa.select(model.id, owner, model.source_name, model.file_path, when)
                    .join_from(model, owner.class_, join))
            newest = stmt.order_by(when.desc(), model.id.desc()).limit(limit)
            for id_, name, source, path, at in session.execute(newest):
                rows.append({"when": at, "kind": kind, "id": id_, "of": name, "source_name": source, "file": path})
    frame = pd.DataFrame(rows, columns=["when", "kind", "id", "of", "source_name", "file"])
    if not frame.empty:
        frame["sort"] = pd.to_datetime(frame["when"], utc=True)
        frame = frame.sort_values("sort", ascending=False).drop(columns="sort").head(limit)
    return frame


def _ingest_link(root: str):
    def link(row: dict) -> str | None:
        if row["kind"] == "TXM":
            return f"{root}/scans/{row['id']}"
        return None
    return link


@router.get("/", response_class=HTMLResponse)
@_one_connection
def dashboard(request: Request, user=Viewer):
    from txmdb.db import models as m

    catalog, root = _catalog(request), _root(request)
    analyses = _newest(catalog, m.Analysis).rename(columns={"id": "analysis_id"})
    jobs = _jobs(catalog, limit=10)
    harvest = _newest(catalog, m.HarvestedFile, statuses=["failed"])
    return _page(
        request, "dashboard.html", active="/", counts=_counts(catalog),
        ingests=table(_recent_ingests(catalog), links={"of": _sample_or_cell_link(root), "id": _ingest_link(root)},
                      empty="Nothing ingested yet."),
        jobs=table(jobs, status=["status"], links={"scan_id": lambda r: f"{root}/scans/{r['scan_id']}"},
                   empty="No jobs."),
        harvest=table(harvest, status=["status"], empty="No failed harvests."),
        analyses=table(analyses[["analysis_id", "scan_id", "status", "started_at", "finished_at", "n_particles",
                                 "mean_edge_ev", "error"]],
                       links={"scan_id": lambda r: f"{root}/scans/{r['scan_id']}"}, status=["status"],
                       empty="No analyses yet."),
    )


def _sample_or_cell_link(root: str):
    def link(row: dict) -> str | None:
        return None if row["kind"] == "cycling" else f"{root}/samples/{path_segment(row['of'])}"
    return link




# --------------------------------------------------------------------------- samples


_SAMPLE_FORM = ("q", "morphology", "material", "ni_min", "ni_max", "mn_min", "mn_max", "co_min", "co_max", "meta")


def _fraction(form: dict, key: str) -> float | None:
    text = form.get(key, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise TxmdbError(f"{key}: {text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise TxmdbError(f"{key}: {text} is not a fraction between 0 and 1")
    return value


def _fraction_range(form: dict, element: str) -> tuple[float | None, float | None]:
    """The form's lowest and highest fraction of ``element``; a minimum above the maximum would
    match no sample, so it is refused rather than answered with an empty table."""
    low_key, high_key = f"{element}_min", f"{element}_max"
    low, high = _fraction(form, low_key), _fraction(form, high_key)
    if low is not None and high is not None and low > high:
        raise TxmdbError(f"{low_key} {form[low_key].strip()} is above {high_key} {form[high_key].strip()}")
    return low, high


def search_samples(frame, form: dict):
    """The rows of ``query.samples`` that match the search form (name, material, composition, meta)."""
    keep = frame.index == frame.index
    if form.get("q", "").strip():
        keep &= frame["sample"].str.contains(form["q"].strip(), case=False, regex=False)
    if form.get("material", "").strip():
        keep &= frame["material"].fillna("").str.contains(form["material"].strip(), case=False, regex=False)
    for element in ("ni", "mn", "co"):
        low, high = _fraction_range(form, element)
        column = frame[f"{element}_fraction"].astype(float)
        if low is not None:
            keep &= column >= low
        if high is not None:
            keep &= column <= high
    meta = form.get("meta", "").strip()
    if meta:
        key, sep, value = meta.partition("=")
        key, value = key.strip(), value.strip()
        if not key:
            raise TxmdbError(f"meta: {meta!r} names no key; write key=value or key")
        keep &= frame["meta"].map(lambda d: isinstance(d, dict) and key in d
                                  and (not sep or str(d[key]).casefold() == value.casefold()))
    return frame[keep]


@router.get("/samples", response_class=HTMLResponse)
@_one_connection
def samples_page(request: Request, user=Viewer):
    from txmdb import query

    catalog, root = _catalog(request), _root(request)
    form = {key: request.query_params.get(key, "") for key in _SAMPLE_FORM}
    everything = query.samples(catalog)
    morphologies = sorted({m for m in everything["morphology"].dropna()})
    error = None
    try:
        found = search_samples(query.samples(catalog, morphology=form["morphology"] or None), form)
    except TxmdbError as exc:
        error, found = str(exc), everything.iloc[0:0]
    shown = found.drop(columns=["source"], errors="ignore")
    return _page(request, "samples.html", active="/samples", status_code=422 if error else 200, form=form,
                 morphologies=morphologies, error=error,
                 table=table(shown, links={"sample": lambda r: f"{root}/samples/{path_segment(r['sample'])}"},
                             empty="No sample matches."))


def _series(frame, x: str, y: str, label: str, **extra) -> dict:
    """One plot series of two columns of ``frame``."""
    return _points(frame[x].astype(float), frame[y].astype(float), label, **extra)


def _points(x, y, label: str, **extra) -> dict:
    """One plot series of two arrays; non-finite values become gaps (JSON has no NaN)."""
    import numpy as np

    def finite(values):
        return [v if math.isfinite(v) else None for v in np.asarray(values, dtype=float).tolist()]

    return {"label": label, "x": finite(x), "y": finite(y), **extra}


def cycling_plots(cycles) -> list[dict]:
    """Capacity, retention and voltage drop against cycle, one series per cycling run."""
    from txmdb.analysis.cycling import retention_curve

    capacity, retention, drop = [], [], []
    several = cycles.groupby("cell")["run_id"].nunique().max() > 1 if not cycles.empty else False
    for (cell, run_id), run in cycles.sort_values("cycle").groupby(["cell", "run_id"], sort=True):
        label = f"{cell} run {run_id}" if several else str(cell)
        capacity.append(_series(run, "cycle", "discharge_capacity_mah_g", label))
        try:
            pct = retention_curve(run, reference_cycle=int(run["reference_cycle"].iloc[0])).to_numpy()
        except ValueError:  # no reference cycle in this run: no retention curve
            pct = None
        if pct is not None:
            retention.append(_series(run.assign(retention_pct=pct), "cycle", "retention_pct", label))
        drop.append(_series(run, "cycle", "voltage_drop_v", label))
    cycle_axis = {"label": "Cycle", "unit": "no."}
    return [
        {"id": "capacity", "title": "Discharge capacity", "x": cycle_axis,
         "y": {"label": "Discharge capacity", "unit": "mAh g⁻¹"}, "series": capacity},
        {"id": "retention", "title": "Capacity retention (against the reference cycle)", "x": cycle_axis,
         "y": {"label": "Retention", "unit": "%"}, "series": retention},
        {"id": "voltage-drop", "title": "Voltage drop (upper cut-off − onset discharge voltage)", "x": cycle_axis,
         "y": {"label": "Voltage drop", "unit": "V"}, "series": drop},
    ]


#: The sample page's cycling overview, one row per cycling run (retention and voltage drop at its last cycle).
CYCLING_OVERVIEW = ("cell", "run_id", "source_name", "n_cycles", "first_discharge_capacity_mah_g", "last_cycle",
                    "reference_cycle", "retention_pct", "voltage_drop_v")


def cycling_overview(cycles, sources: dict[int, str | None]) -> dict:
    """Per cycling run (``cycles``: query.cycles' frame, None when there are none): the name of its
    cycler file (``sources``: :func:`run_sources`), its number of cycles, the discharge capacity of its
    first cycle, and retention and voltage drop at its last cycle, the retention against the run's
    reference cycle as ``txmdb query retention`` reads it."""
    from txmdb.query import Rows

    runs = cycles.sort_values("cycle").groupby(["cell", "run_id"], sort=True) if cycles is not None else ()
    return rows_table(Rows(CYCLING_OVERVIEW, [_run_overview(cell, run_id, sources.get(run_id), run)
                                              for (cell, run_id), run in runs]),
                      empty="No cycling data of this sample's cells.")


def run_sources(catalog, cycles) -> dict[int, str | None]:
    """The source name of each cycling run in ``cycles`` (query.cycles' frame or None), by run id:
    query.cycles has a row per cycle, the name is the run's."""
    import sqlalchemy as sa

    from txmdb.db.engine import read_connection
    from txmdb.db.models import CyclingRun

    if cycles is None:
        return {}
    ids = [int(i) for i in cycles["run_id"].unique()]
    with read_connection(catalog.engine) as connection:
        return dict(connection.execute(sa.select(CyclingRun.id, CyclingRun.source_name).where(CyclingRun.id.in_(ids)))
                    .all())


def _run_overview(cell, run_id, source_name, run) -> tuple:
    """One row of :func:`cycling_overview` (``run``: its cycles, in order), in Python's numbers:
    rows_table takes int and float columns as numbers, numpy's not."""
    from txmdb.analysis.cycling import retention_curve

    first, last = run.iloc[0], run.iloc[-1]
    reference = int(last["reference_cycle"])
    try:
        retention = float(retention_curve(run, reference_cycle=reference).iloc[-1])
    except ValueError:  # the run has not reached its reference cycle, or it has no discharge there
        retention = None
    return (cell, int(run_id), source_name, len(run), _number(first["discharge_capacity_mah_g"]), int(last["cycle"]),
            reference, retention, _number(last["voltage_drop_v"]))


def _number(value) -> float | None:
    """A float of a frame's cell, None for a missing one."""
    return None if value is None or math.isnan(value) else float(value)


def xas_plots(catalog, xas) -> tuple[list[dict], list[str]]:
    """Normalised spectra overlaid, one plot per edge and mode kind; notes for unreadable spectra.

    ``xas``: query.xas' :class:`~txmdb.query.Rows`.
    """
    import sqlalchemy as sa

    from txmdb.db.engine import read_connection
    from txmdb.db.models import XASMeasurement
    from txmdb.errors import StoreFileError

    if not xas.rows:
        return [], []
    ids = xas.column("measurement_id")
    with read_connection(catalog.engine) as connection:
        files = {i: (p, s) for i, p, s in connection.execute(
            sa.select(XASMeasurement.id, XASMeasurement.spectrum_path, XASMeasurement.spectrum_sha256)
            .where(XASMeasurement.id.in_(ids)))}
    plots: dict[tuple[str, str], dict] = {}
    notes = []
    for row in xas.records():
        path, sha256 = files[row["measurement_id"]]
        try:
            data = catalog.store.read_parquet(path, sha256, columns=["energy_ev", "normalized"])
        except StoreFileError as exc:
            notes.append(f"The spectrum of XAS measurement {row['measurement_id']} {exc.problem}.")
            continue
        data = data.sort_values("energy_ev").drop_duplicates("energy_ev")
        group = (row["edge"], "") if row["edge"].upper().endswith("-K") else (row["edge"], row["mode"])
        title = f"{group[0]} {group[1]}".strip()
        plot = plots.setdefault(group, {"id": f"xas-{len(plots)}", "title": f"{title} spectra",
                                        "x": {"label": "Energy", "unit": "eV"},
                                        "y": {"label": "Normalised absorbance", "unit": "a.u."}, "series": []})
        label = " · ".join(str(v) for v in (row["state"], row["mode"], f"#{row['measurement_id']}") if v)
        plot["series"].append(_series(data, "energy_ev", "normalized", label))
    return list(plots.values()), notes


def _thumbnail(root: str, row: dict) -> str | None:
    """The central z slice of the scan's edge map, from the slice endpoint (None: not analysed)."""
    if row.get("analysis_id") is None or _text(row.get("analysis_id")) == "":
        return None
    spatial = _spatial_shape(row["shape"])
    axis = SPATIAL_AXES.get(len(spatial), ("z",))[0]
    # What urlencode gives for a letter and a whole number (it cost ~5 % of a sample page of 100 scans).
    return f"{root}/api/v1/scans/{row['scan_id']}/slice.png?map=edge&axis={axis}&index={spatial[0] // 2}"


def _spatial_shape(shape) -> list[int]:
    """The spatial axes of a scan from query.scans' shape text ('60×100×100': energies first)."""
    sizes = [int(s) for s in str(shape).split("×")] if shape else []
    return sizes[1:]


@router.get("/samples/{name:text}", response_class=HTMLResponse)
@_one_connection
def sample_page(request: Request, name: str, user=Viewer):
    from txmdb import query

    catalog, root = _catalog(request), _root(request)
    # Rows, not DataFrames, where the page only shows them (frames cost more than the statements).
    info = query.samples.rows(catalog, sample=[name])
    if not info.rows:
        raise NotFoundError(f"no sample named {name!r}; see the samples page")
    fields = [(field_label(k), _text(v)) for k, v in info.records()[0].items() if k != "sample"]
    cycles = query.cycles.rows(catalog, sample=[name])
    runs = cycles.frame() if cycles.rows else None  # one frame for the overview and the plots
    xas = query.xas.rows(catalog, sample=[name])
    spectra, notes = xas_plots(catalog, xas)
    scan_cards = [{"id": r["scan_id"], "state": r["state"], "shape": r["shape"],
                   "mean_edge_ev": _text(r["mean_edge_ev"]), "thumbnail": _thumbnail(root, r)}
                  for r in query.scans.rows(catalog, sample=[name]).records()]
    return _page(
        request, "sample.html", active="/samples", sample={"name": name, "fields": fields},
        cells=table(query.cells(catalog, sample=[name]).drop(columns=["sample"]), empty="No cells of this sample."),
        cycling=cycling_overview(runs, run_sources(catalog, runs)),
        cycling_plots=cycling_plots(runs) if runs is not None else [],
        xas=rows_table(xas, drop=["sample"], empty="No XAS measurements of this sample."),
        xas_plots=spectra, xas_notes=notes,
        xrd=rows_table(query.xrd.rows(catalog, sample=[name]), drop=["sample"], empty="No XRD results of this sample."),
        scans=scan_cards,
    )


# --------------------------------------------------------------------------- scans


def _edge_rows(rows):
    """The edge map's rows of a per-map statistics table (:class:`~txmdb.query.Rows`)."""
    return rows.where("map", "edge")


def _floats(rows, key: str):
    """Column ``key`` of ``rows`` as a float array (NULL: NaN)."""
    import numpy as np

    return np.array(rows.column(key), dtype=float)


def edge_plots(histogram, depth) -> list[dict]:
    """The edge-energy distribution of the voxels and the edge energy against depth (whole scan)."""
    import numpy as np

    plots = []
    histogram, depth = _edge_rows(histogram), _edge_rows(depth)
    if histogram.rows:
        lo, hi = _floats(histogram, "edge_lo_ev"), _floats(histogram, "edge_hi_ev")
        order = np.argsort(lo, kind="stable")  # (the query's order already)
        lo, hi, probability = lo[order], hi[order], _floats(histogram, "probability")[order]
        width = float(hi[0] - lo[0])
        plots.append({"id": "edge-histogram", "title": "Edge energy of the voxels", "x": {"label": "Edge energy",
                      "unit": "eV"}, "y": {"label": "Probability", "unit": f"per {width:g} eV bin"},
                      "series": [_points((lo + hi) / 2, probability, "voxels")]})
    if depth.rows:
        in_nm = not np.isnan(_floats(depth, "depth_lo_nm")).any()
        lo, hi, unit = ("depth_lo_nm", "depth_hi_nm", "nm") if in_nm else ("depth_lo_vox", "depth_hi_vox", "voxels")
        lo, hi = _floats(depth, lo), _floats(depth, hi)
        order = np.argsort(lo, kind="stable")
        plots.append({"id": "depth-profile", "title": "Edge energy against depth below the surface",
                      "x": {"label": "Depth", "unit": unit}, "y": {"label": "Mean edge energy", "unit": "eV"},
                      "series": [_points((lo[order] + hi[order]) / 2, _floats(depth, "mean_edge_ev")[order], "mean")],
                      "points": True})
    return plots


def gradient_plots(theta, vector_size) -> list[dict]:
    """Per binning factor: θ probability (with the sin θ reference) and |u| per folded θ group (edge map)."""
    return _theta_plots(_edge_rows(theta)) + _vector_size_plots(_edge_rows(vector_size))


def _by_factor(rows, order: str):
    """(binning factor, row positions sorted by column ``order``) for each factor, ascending.

    numpy on positions: pandas' groupby, sort and copies of these few hundred rows cost
    ~5 CPU ms per scan page.
    """
    import numpy as np

    factors, key = np.array(rows.column("bin_factor")), _floats(rows, order)
    for factor in np.unique(factors):
        positions = np.flatnonzero(factors == factor)
        yield factor, positions[np.argsort(key[positions], kind="stable")]


def _theta_plots(theta) -> list[dict]:
    import numpy as np

    column = {c: _floats(theta, c) for c in ("theta_lo", "theta_hi", "probability", "reference")}
    weighted = np.array(theta.column("weighted"), dtype=bool)
    plots = []
    for factor, rows in _by_factor(theta, "theta_lo"):
        centre, flags = (column["theta_lo"][rows] + column["theta_hi"][rows]) / 2, weighted[rows]
        probability, reference = column["probability"][rows], column["reference"][rows]
        series = [_points(centre[flags == flag], probability[flags == flag], "|u|-weighted" if flag else "unweighted")
                  for flag in np.unique(flags)]
        shown = ~flags if (~flags).any() else np.ones_like(flags)
        series.append(_points(centre[shown], reference[shown], "sin θ (random)", dash=True))
        plots.append({"id": f"theta-f{factor}", "title": f"θ distribution, binning factor {factor}",
                      "x": {"label": "θ", "unit": "°"}, "y": {"label": "Probability", "unit": "per 5° bin"},
                      "series": series})
    return plots


def _vector_size_plots(vector_size) -> list[dict]:
    column = {c: _floats(vector_size, c) for c in ("phi_lo", "phi_hi", "mean_u", "median_u", "p90_u")}
    units = vector_size.column("gradient_unit")
    plots = []
    for factor, rows in _by_factor(vector_size, "phi_lo"):
        centre = (column["phi_lo"][rows] + column["phi_hi"][rows]) / 2
        series = [_points(centre, column["mean_u"][rows], "mean |u|"),
                  _points(centre, column["median_u"][rows], "median |u|"),
                  _points(centre, column["p90_u"][rows], "90th percentile |u|", dash=True)]
        # eV/nm, or eV/voxel for a scan of unknown voxel size (the query's gradient_unit says which).
        unit = str(units[rows[0]])
        plots.append({"id": f"vector-size-f{factor}", "title": f"Vector size |u|, binning factor {factor}",
                      "x": {"label": "Folded θ group centre", "unit": "°"}, "y": {"label": "|u|", "unit": unit},
                      "series": series, "points": True})
    return plots


@router.get("/scans/{scan_id}", response_class=HTMLResponse)
@_one_connection
def scan_page(request: Request, scan_id: Whole, user=Viewer):
    from txmdb import query

    catalog, root = _catalog(request), _root(request)
    # Rows, not DataFrames: making the page's eight frames cost more than its statements.
    rows = query.scans.rows(catalog, scan=[scan_id])
    if not rows.rows:
        raise NotFoundError(f"no TXM scan with id {scan_id}")
    row = rows.records()[0]
    metadata_keys = ["sample", "morphology", "state", "layout", "ndim", "shape", "n_energies", "energy_min_ev",
                     "energy_max_ev", "voxel_size_nm", "n_valid_voxels", "n_particles", "mean_edge_ev",
                     "std_edge_ev", "latest_status"]
    provenance_keys = ["source_name", "file_path", "file_sha256", "analysis_id", "registration_id"]
    analyses = query.analyses.rows(catalog, scan=[scan_id])
    registrations = query.registrations.rows(catalog, scan=[scan_id])
    spatial = _spatial_shape(row["shape"])
    viewer, note = None, "Not analysed yet: the maps appear once an analysis of this scan has run."
    if row["analysis_id"] is not None:
        axes = SPATIAL_AXES.get(len(spatial))
        if axes is None:
            note = f"This scan has {len(spatial)} spatial axes; the viewer shows 2-D and 3-D maps."
        else:
            viewer = {"url": f"{root}/api/v1/scans/{scan_id}/slice.png", "maps_url": f"{root}/api/v1/scans/{scan_id}/maps",
                      "axes": [_viewer_axis(axes, spatial, i) for i in range(len(axes))]}
            if len(axes) == 2:  # one image: the whole 2-D map, no slider
                viewer["axes"] = [viewer["axes"][0]]
    # The statistics of the analysis the scan row shows (its latest finished one): named, so each
    # query need not find every scan's latest analysis first.
    latest = {"scan": [scan_id], "analysis": None if row["analysis_id"] is None else [row["analysis_id"]]}
    theta = query.theta.rows(catalog, scan_level=True, **latest)
    vector_size = query.vector_size.rows(catalog, scan_level=True, **latest)
    return _page(
        request, "scan.html", active="/samples", viewer=viewer, viewer_note=note,
        scan={"id": scan_id, "sample": row["sample"], "state": row["state"],
              "metadata": [(field_label(k), _text(row[k])) for k in metadata_keys],
              "provenance": [(field_label(k), _text(row[k])) for k in provenance_keys]},
        analyses=rows_table(analyses, drop=["scan_id"], status=["status"], empty="No analyses of this scan."),
        registrations=_registration_table(registrations),
        gradient_plots=gradient_plots(theta, vector_size),
        edge_plots=edge_plots(query.edge_histogram.rows(catalog, scan_level=True, **latest),
                              query.depth_profile.rows(catalog, scan_level=True, **latest)),
        particles=rows_table(query.particles.rows(catalog, **latest), drop=["sample", "state", "scan_id"],
                             empty="No particles (not analysed yet)."),
    )


def _viewer_axis(axes: tuple[str, ...], spatial: list[int], i: int) -> dict:
    """One slider of the viewer: the slice across axis i, its image the other two axes."""
    others = [spatial[j] for j in range(len(spatial)) if j != i] or [1, 1]
    return {"name": axes[i], "size": spatial[i], "index": spatial[i] // 2, "height": others[0],
            "width": others[-1]}


def _registration_table(registrations) -> dict:
    """One row per registration: energies and the largest shift per axis (the page's overview)."""
    import pandas as pd

    from txmdb.query import Rows

    empty = "No registrations of this scan."
    if not registrations.rows:
        return rows_table(Rows(("registration_id", "n_energies", "max_abs_shift_z", "max_abs_shift_y",
                                "max_abs_shift_x", "min_quality"), []), empty=empty)
    grouped = registrations.frame().groupby("registration_id", sort=True)
    out = pd.DataFrame({
        "n_energies": grouped["energy_index"].count(),
        **{f"max_abs_shift_{a}": grouped[f"shift_{a}"].apply(lambda s: s.astype(float).abs().max())
           for a in ("z", "y", "x")},
        "min_quality": grouped["quality"].min(),
    })
    return table(out.reset_index(), empty=empty)


# --------------------------------------------------------------------------- query tables


def _form_fields(spec, params) -> list[dict]:
    """The filter form of one query, from its declarations (parameters first, as the CLI lists them)."""
    fields = []
    for f in (*spec.parameters, *(FILTERS[name] for name in spec.filters)):
        given = [v for v in params.getlist(f.name) if v != ""]
        field = {"name": f.name, "label": f.flags[0].split("/")[0].lstrip("-"), "help": f.help,
                 "required": f.default is ..., "value": given[0] if given else ""}
        if f.type is bool and f.default is None:
            no = f.flags[0].split("/")[-1].lstrip("-")
            field.update(kind="bool3", true_text=field["label"], false_text=no)
        elif f.type is bool:
            field.update(kind="flag", value=bool(given) and given[0].lower() in ("true", "1", "on", "yes"))
        else:
            field.update(kind="text", value=",".join(given) if f.type is int else (given[0] if given else ""),
                         placeholder="N[,N…]" if f.type is int and f.multiple else
                         ("" if f.default in (None, ...) else str(f.default)))
        fields.append(field)
    return fields


def query_values(spec, given: list[tuple[str, str]]) -> dict:
    """The form's values as the query function takes them, parsed as the API parses its query string."""
    from txmdb.errors import FilterError
    from txmdb.web.api import _filter_values

    declared = {f.name: f for f in (*spec.parameters, *(FILTERS[name] for name in spec.filters))}
    values: dict = {}
    for key, text in given:
        f = declared.get(key)
        if f is None:
            raise FilterError(key, f"query {spec.name} has no filter {key!r} "
                                   f"(its filters: {', '.join(spec.filters) or 'none'})")
        if f.multiple:
            values.setdefault(key, []).append(text)
        elif f.type is bool:
            values[key] = text.lower() in ("true", "1", "yes", "on")
        else:
            values[key] = text
    return _filter_values(spec, values)


def _given_params(params) -> list[tuple[str, str]]:
    """The query string without empty fields (an empty form field means no filter)."""
    return [(key, value) for key, value in params.multi_items() if value != ""]


@router.get("/query", response_class=HTMLResponse)
def query_index(request: Request, user=Viewer):
    return RedirectResponse(f"{_root(request)}/query/{next(iter(QUERIES))}", status_code=303)


@router.get("/query/{table_name}", response_class=HTMLResponse)
@_one_connection
def query_page(request: Request, table_name: str, user=Viewer):
    spec = QUERIES.get(table_name)
    if spec is None:
        raise NotFoundError(f"no query table {table_name!r}; the tables: {', '.join(QUERIES)}")
    given = _given_params(request.query_params)
    form = _form_fields(spec, request.query_params)
    error, result, status_code = None, None, 200
    required = [f["label"] for f in form if f["required"] and not f["value"]]
    if required:
        error, status_code = f"give --{', --'.join(required)} to see this table", 200
    else:
        try:
            result = spec.function(_catalog(request), **query_values(spec, given))
        except TxmdbError as exc:
            error, status_code = str(exc), 422
    api = f"{_root(request)}/api/v1/query/{table_name}"
    downloads = {fmt: f"{api}?{urlencode([*given, ('format', fmt)])}" for fmt in ("csv", "json", "parquet")}
    return _page(request, "query.html", active="/query/scans", status_code=status_code, tables=list(QUERIES),
                 table_name=table_name, summary=spec.summary, form=form, error=error, downloads=downloads,
                 table=table(result, links=_query_links(_root(request))) if result is not None else None)


def _query_links(root: str) -> dict:
    """Links from query tables to the sample and scan pages."""
    return {"sample": lambda r: f"{root}/samples/{path_segment(r['sample'])}",
            "scan_id": lambda r: f"{root}/scans/{r['scan_id']}"}


# --------------------------------------------------------------------------- SQL console


@router.get("/sql", response_class=HTMLResponse)
def sql_form(request: Request, user=Editor):
    return _sql_page(request, statement="SELECT name, morphology FROM samples ORDER BY name")


@router.post("/sql", response_class=HTMLResponse)
async def sql_run(request: Request, user=Editor):
    from fastapi.concurrency import run_in_threadpool

    from txmdb.web.auth import check_csrf

    form = await request.form()
    check_csrf(request, form.get("csrf_token"))
    statement = str(form.get("statement") or "")
    refused = _SQL_SLOTS.take(user.name)
    if refused:
        return _sql_page(request, statement=statement, status_code=429,
                         error=f"{refused}; send it again when one has ended")
    try:
        return await run_in_threadpool(_sql_result, request, statement)
    finally:
        _SQL_SLOTS.give_back(user.name)


def _sql_result(request: Request, statement: str):
    from txmdb.readonly_sql import QueryTimeout, run_readonly_sql

    if not statement.strip():
        return _sql_page(request, statement=statement, error="write one SELECT statement", status_code=422)
    try:
        result = run_readonly_sql(_catalog(request).engine.url, statement, max_rows=SQL_PAGE_ROWS,
                                  max_bytes=SQL_PAGE_BYTES, max_cells=SQL_PAGE_CELLS)
    except QueryTimeout as exc:
        return _sql_page(request, statement=statement, error=str(exc), status_code=422)
    except TxmdbError as exc:
        return _sql_page(request, statement=statement, error=str(exc), status_code=422)
    return _sql_page(request, statement=statement, cut=result.cut, shown=len(result.frame),
                     result=table(result.frame, limit=SQL_PAGE_ROWS, empty="The statement returned no rows."))


def _sql_page(request: Request, *, statement: str, result=None, error=None, cut=False, shown=0, status_code=200):
    from txmdb.vocabulary import DEFAULT_TIMEOUT_S

    return _page(request, "sql.html", active="/sql", status_code=status_code, statement=statement, error=error,
                 cut=cut, shown=shown, table=result, timeout=f"{DEFAULT_TIMEOUT_S:g}", max_rows=SQL_PAGE_ROWS,
                 max_cells=SQL_PAGE_CELLS)


# --------------------------------------------------------------------------- jobs and harvest


def _statuses(request: Request, known: Iterable[str]) -> list[str]:
    """The status filter of the jobs and harvest pages (comma-separated), each a known status."""
    given = [x.strip() for x in request.query_params.get("status", "").split(",") if x.strip()]
    unknown = [x for x in given if x not in known]
    if unknown:
        raise TxmdbError(f"status: unknown {', '.join(map(repr, unknown))}; expected {', '.join(known)}")
    return given


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, user=Viewer):
    return _jobs_page(request, user)


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
def cancel_job(request: Request, job_id: Whole, csrf_token: str = Form(""), user=Editor):
    """The jobs page's cancel button: ``txmdb jobs cancel JOB_ID``, then the jobs page saying how it went."""
    from txmdb.errors import StateError
    from txmdb.jobs import cancel
    from txmdb.web.auth import check_csrf

    check_csrf(request, csrf_token)
    try:
        cancel(_catalog(request), job_id)
    except StateError as exc:  # finished meanwhile (or cancelled twice): the CLI's line, not an error page
        return _jobs_page(request, user, error=str(exc), status_code=409)
    return _jobs_page(request, user, message=f"job {job_id} cancelled")


def _jobs_page(request: Request, user, *, message: str | None = None, error: str | None = None,
               status_code: int = 200):
    from txmdb.vocabulary import JOB_STATUSES

    root, statuses = _root(request), _statuses(request, JOB_STATUSES)
    frame = _jobs(_catalog(request), statuses)
    return _page(request, "log.html", active="/jobs", status_code=status_code, heading="Jobs",
                 status=",".join(statuses), statuses=JOB_STATUSES, table_id="jobs", message=message, error=error,
                 table=table(frame, status=["status"], links={"scan_id": lambda r: f"{root}/scans/{r['scan_id']}"},
                             empty="No jobs.", action=_cancel_action(root, user)))


def _cancel_action(root: str, user) -> RowAction | None:
    """The cancel button of the jobs a signed-in editor may cancel (the route checks again)."""
    from txmdb.jobs import CANCELLABLE

    if user is None or not user.can("editor"):
        return None
    return "Cancel", lambda r: f"{root}/jobs/{r['job_id']}/cancel" if r["status"] in CANCELLABLE else None


@router.get("/harvest", response_class=HTMLResponse)
def harvest_page(request: Request, user=Viewer):
    from txmdb.db.models import HarvestedFile
    from txmdb.vocabulary import HARVEST_STATUSES

    statuses = _statuses(request, HARVEST_STATUSES)
    frame = _newest(_catalog(request), HarvestedFile, statuses=statuses, limit=PAGE_ROWS)
    return _page(request, "log.html", active="/harvest", heading="Harvest log", status=",".join(statuses),
                 statuses=HARVEST_STATUSES, table_id="harvest",
                 table=table(frame, status=["status"], empty="Nothing harvested yet."))


# --------------------------------------------------------------------------- compare


def _report_choice(request: Request) -> tuple[list[str], list[str], int]:
    """The samples, states (none: every state) and cycle the compare form asks for (cycle 100 unless given)."""
    chosen = [s for s in request.query_params.getlist("sample") if s.strip()]
    states = [s for s in request.query_params.getlist("state") if s.strip()]
    text = request.query_params.get("cycle", "")
    text = text if text.strip(SPACES) else "100"
    try:
        cycle = whole_number(text, low=1)
    except ValueError as exc:
        raise TxmdbError(f"cycle: {exc}") from None
    return chosen, states, cycle


@router.get("/compare", response_class=HTMLResponse)
@_one_connection
def compare_page(request: Request, user=Viewer):
    from txmdb import query
    from txmdb.report.html import chosen_states, report_states

    info = query.samples(_catalog(request))
    samples = [(r["sample"], r["morphology"]) for r in info.to_dict("records")]
    error, report_url, chosen, states, available, cycle = None, None, [], [], [], 100
    try:
        chosen, states, cycle = _report_choice(request)
    except TxmdbError as exc:
        error = str(exc)
    unknown = sorted(set(chosen) - set(info["sample"]))
    if unknown:
        error = f"no sample named {', '.join(map(repr, unknown))}"
    elif chosen:
        # The state checkboxes are the chosen samples' states; the report checks them the same way.
        available = report_states(_catalog(request), chosen)
        try:
            states = chosen_states(states, available, chosen)
        except TxmdbError as exc:
            error = error or str(exc)
    if chosen and error is None:
        report_url = f"{_root(request)}/compare/report?" + urlencode([*(("sample", s) for s in chosen),
                                                                       *(("state", s) for s in states),
                                                                       ("cycle", cycle)])
    return _page(request, "compare.html", active="/compare", status_code=422 if error else 200, samples=samples,
                 chosen=chosen, states=available, chosen_states=states, cycle=cycle, error=error,
                 report_url=report_url)


@router.get("/compare/report")
def compare_report(request: Request, user=Viewer):
    """The comparison report (txmdb.report), whole: shown in the compare page's frame, or downloaded."""
    import tempfile
    from pathlib import Path

    from txmdb.report import build_report

    chosen, states, cycle = _report_choice(request)
    with tempfile.TemporaryDirectory(prefix="txmdb-report-") as folder:
        path = build_report(_catalog(request), chosen, output=Path(folder) / "report.html", cycle=cycle,
                            states=states)
        html = path.read_bytes()
    headers = {
        # The compare page frames this report (same origin); it has no script at all.
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                   "frame-ancestors 'self'",
        "X-Frame-Options": "SAMEORIGIN",
    }
    if request.query_params.get("download"):
        name = "txmdb-compare-" + "-".join([*chosen, *states]) + ".html"
        # ASCII in filename= (a header is Latin-1: a sample named in Cyrillic made this a 500),
        # the real name, when it differs, in filename* (RFC 6266), which browsers prefer
        safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in name)
        real = "" if safe == name else f"; filename*=UTF-8''{path_segment(name)}"
        headers["Content-Disposition"] = f'attachment; filename="{safe}"{real}'
    return Response(html, media_type="text/html; charset=utf-8", headers=headers)


# --------------------------------------------------------------------------- upload


@router.get("/upload", response_class=HTMLResponse)
def upload_page(request: Request, user=Editor):
    """The upload forms; they post to the API (/api/v1/cycling, /xas, /xrd), which checks and stores the files."""
    from txmdb import query
    from txmdb.vocabulary import EDGES, MODES

    catalog = _catalog(request)
    return _page(request, "upload.html", active="/upload", cells=list(query.cells(catalog)["cell"]),
                 samples=list(query.samples(catalog)["sample"]), edges=EDGES, modes=MODES,
                 max_mb=f"{request.app.state.settings.max_upload_bytes / (1 << 20):g}")
