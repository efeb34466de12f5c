"""The HTTP API under /api/v1 (DESIGN §12), over the same library functions as the CLI.

- ``GET /health``: no sign-in needed; ``GET /docs``: this API as a page (``/openapi.json``).
- ``GET /query/{table}``: every ``txmdb query`` table, one route each, built from its query's
  declaration (:data:`txmdb.query.QUERIES`) as the CLI builds its commands: the same filters
  by the same names (repeatable where the CLI's are; numbers also as ``1,2,3``), an unknown
  one is a 422. ``format=csv`` answers :func:`txmdb.tables.table_text`, the CLI's bytes.
- ``GET /samples``, ``/scans``, ``/jobs``: lists with ``limit``/``offset``;
  ``GET /scans/{id}``, ``/scans/{id}/maps``, ``/scans/{id}/slice.png``, ``/jobs/{id}``.
- ``POST /cycling``, ``/xas``, ``/xrd``: uploads through the CLI's catalogue services (editors); the
  record keeps the name the file was sent with as its ``source_name`` (shown, never a path).
- ``POST /scans/{id}/analyses``: queue an analysis job (editors), 202; ``POST /jobs/{id}/cancel``:
  cancel a queued or running one (editors), as ``txmdb jobs cancel``.

Ids appear in paths only as integers; files are named by their SHA-256, never by a user's
string. Errors are ``{"error": ..., "status": ...}`` (:mod:`txmdb.web.app`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
from urllib.parse import urlencode
from typing import Annotated, Any, List, Literal, Optional

from fastapi import APIRouter, Body, Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BeforeValidator, Field

from txmdb.query import QUERIES
from txmdb.vocabulary import (
    DEFAULT_PAGE_ROWS, FILTERS, MAX_CATALOGUE_INT, MAX_CYCLE_NUMBER, MAX_PAGE_ROWS, JOB_STATUSES, Filter, whole_number,
)
from txmdb.web.auth import csrf_protect, require_role

router = APIRouter()

Viewer = Depends(require_role("viewer"))
#: Writes: an editor, and from a browser its CSRF token (header X-CSRF-Token or form field csrf_token).
EDITOR_WRITE = [Depends(require_role("editor")), Depends(csrf_protect)]

TableFormat = Literal["json", "csv", "parquet"]
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json", "parquet": "application/vnd.apache.parquet"}


# Parameter declarations are objects FastAPI completes per route: a fresh one for each use.
def _typed_whole(value, low: int = 0, high: int = MAX_CATALOGUE_INT):
    return whole_number(value, low, high) if isinstance(value, str) else value


def _whole_in(low: int, high: int):
    """An id, a count or an index from ``low`` to ``high`` in a URL or a form, read by whole_number
    as the CLI and the filters read numbers (pydantic's int alone takes '+1', '1_000' and '1.0').
    Used in Annotated with its Path/Query/Form: FastAPI drops the validator of a Path given as a
    default, and the range before the validator is the OpenAPI schema's minimum and maximum."""
    return Annotated[int, Field(ge=low, le=high),
                     BeforeValidator(functools.partial(_typed_whole, low=low, high=high))]


#: a whole number from 0 to MAX_CATALOGUE_INT (a page's id: the catalogue then says whether it exists)
Whole = Annotated[int, BeforeValidator(_typed_whole)]
Id = _whole_in(1, MAX_CATALOGUE_INT)
Index = _whole_in(0, MAX_CATALOGUE_INT)
RecordId = Annotated[Id, Path(description="A record's id.")]
Limit = Annotated[_whole_in(1, MAX_PAGE_ROWS), Query(description="Rows per page.")]
Offset = Annotated[Index, Query(description="Rows to skip.")]


def _catalog(request: Request):
    return request.app.state.catalog


def _user_name(request: Request) -> Optional[str]:
    user = getattr(request.state, "user", None)
    return user.name if user is not None else None


@router.get("/docs", tags=["service"], dependencies=[Viewer], response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    """This API's documentation as a page, from its OpenAPI description (no script, no CDN)."""
    from txmdb.web.templating import render

    return render(request, "api_docs.html", spec=request.app.openapi())


@router.get("/health", tags=["service"])
async def health(request: Request) -> dict:
    """``{"status": "ok", "schema": REVISION}``: the server runs and its catalogue answers (no sign-in needed)."""
    from txmdb.db.migrate import current_revision

    return {"status": "ok", "schema": await run_in_threadpool(current_revision, _catalog(request).engine)}


# ----------------------------------------------------------------------------- query tables
def _query_parameter(f: Filter) -> inspect.Parameter:
    """The query parameter of one filter or query parameter, typed as the CLI's option is."""
    if f.type is bool:
        annotation, default = Optional[bool], Query(None if f.default is None else f.default, description=f.help)
    elif f.multiple:
        # Numbers stay text here so "1,2" parses as the CLI's does (txmdb.vocabulary.Filter.read).
        annotation, default = Optional[List[str]], Query(None, description=f.help)
    elif f.type is int:
        # Text here too, read by txmdb.vocabulary.whole_number as the CLI and the pages read it
        # (pydantic's int would take '+1', '1_000' and ' 7 ').
        required = f.default is ...
        annotation = str if required else Optional[str]
        default = Query(... if required else f.default,
                        description=f"{f.help} A whole number from {f.low} to {f.high}.")
    else:
        annotation, default = Optional[f.type], Query(f.default, description=f.help)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _filter_values(spec, values: dict) -> dict:
    """The query parameters as the query function takes them (numbers parsed, empties dropped)."""
    from txmdb.errors import FilterError

    declared = {f.name: f for f in (*spec.parameters, *(FILTERS[n] for n in spec.filters))}
    out = {}
    for name, value in values.items():
        f = declared.get(name)
        try:
            if f is not None and f.multiple:
                value = [v for v in value if v != ""] if value else None
                if value and f.type is int:
                    value = [n for text in value for n in f.read(text)]
            elif f is not None and f.type is int and isinstance(value, str):
                value = f.read(value)
        except ValueError as exc:
            raise FilterError(name, f"{name}: {exc}") from None
        out[name] = value
    return out


def _refuse_unknown(request: Request, spec, known: set) -> None:
    """A query parameter the table does not declare is a 422, never a filter silently ignored."""
    from txmdb.errors import FilterError

    for key in request.query_params:
        if key not in known:
            raise FilterError(key, f"query {spec.name} has no filter {key!r} "
                                   f"(its filters: {', '.join(spec.filters) or 'none'})")


def table_response(frame, fmt: str, name: str) -> Response:
    """A query table in ``fmt``: exactly the bytes ``txmdb query NAME --format FMT -o FILE`` writes."""
    from txmdb.tables import parquet_bytes, table_json, table_text

    # JSON on one line (the same values as the CLI's indented JSON, written ten times faster).
    data = (parquet_bytes(frame) if fmt == "parquet" else table_json(frame).encode("ascii") if fmt == "json"
            else table_text(frame, fmt).encode("utf-8"))
    headers = {"Content-Disposition": f'attachment; filename="{name}.{fmt}"'} if fmt != "json" else None
    return Response(data, media_type=MEDIA_TYPES[fmt], headers=headers)


def _query_route(name: str):
    """The endpoint of query table ``name``, with a query parameter per declared filter."""
    spec = QUERIES[name]
    declared = [*spec.parameters, *(FILTERS[f] for f in spec.filters)]
    known = {f.name for f in declared} | {"format"}

    def answer(catalog, values: dict, format: str) -> Response:
        return table_response(spec.function(catalog, **values), format, name)

    async def endpoint(request: Request, format: TableFormat = "json", **values) -> Response:
        _refuse_unknown(request, spec, known)
        # The query and its text in one trip to the thread pool (each trip wakes a thread and the loop).
        return await run_in_threadpool(answer, _catalog(request), _filter_values(spec, values), format)

    keyword = inspect.Parameter.KEYWORD_ONLY
    endpoint.__signature__ = inspect.Signature([
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        *(_query_parameter(f) for f in declared),
        inspect.Parameter("format", keyword, default=Query("json", description="Table format."),
                          annotation=TableFormat),
    ])
    endpoint.__name__ = "query_" + name.replace("-", "_")
    endpoint.__doc__ = (f"`txmdb query {name}`: {spec.summary}\n\nFilters as the CLI's options; "
                        "an unknown one is a 422. With format=csv the body is the CLI's, byte for byte.")
    return endpoint


for _name in QUERIES:
    router.add_api_route(f"/query/{_name}", _query_route(_name), methods=["GET"], tags=["query"],
                         dependencies=[Viewer], response_class=Response,
                         responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}})


@router.get("/query/{table}", tags=["query"], dependencies=[Viewer], include_in_schema=False)
async def unknown_table(table: str):
    from txmdb.errors import NotFoundError

    raise NotFoundError(f"no query table {table!r}; tables: {', '.join(QUERIES)}")


# ----------------------------------------------------------------------------- lists
def _records(frame) -> list[dict]:
    """Rows as JSON values (dates ISO 8601, NaN null), as ``--format json`` gives them."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def _page(frame, limit: int, offset: int) -> dict:
    return {"items": _records(frame.iloc[offset:offset + limit]), "total": len(frame), "limit": limit,
            "offset": offset}


def _page_response(frame, limit: int, offset: int) -> JSONResponse:
    """:func:`_page` as the response FastAPI would make of it, made here in the worker thread:
    its values are JSON's already, so FastAPI's encoder (a walk of every value on the event
    loop) would return them unchanged."""
    return JSONResponse(_page(frame, limit, offset))


def _list_route(table: str, summary: str):
    """A paginated list over query ``table``, with its filters."""
    spec = QUERIES[table]
    declared = [FILTERS[f] for f in spec.filters]
    known = {f.name for f in declared} | {"limit", "offset"}

    def answer(catalog, values: dict, limit: int, offset: int) -> JSONResponse:
        return _page_response(spec.function(catalog, **values), limit, offset)

    async def endpoint(request: Request, limit: int, offset: int, **values) -> JSONResponse:
        _refuse_unknown(request, spec, known)
        return await run_in_threadpool(answer, _catalog(request), _filter_values(spec, values), limit, offset)

    keyword = inspect.Parameter.KEYWORD_ONLY
    endpoint.__signature__ = inspect.Signature([
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        *(_query_parameter(f) for f in declared),
        inspect.Parameter("limit", keyword, default=DEFAULT_PAGE_ROWS, annotation=Limit),
        inspect.Parameter("offset", keyword, default=0, annotation=Offset),
    ])
    endpoint.__name__ = f"list_{table}"
    endpoint.__doc__ = summary + " `{items, total, limit, offset}`; items as `txmdb query " + table + " --format json`."
    return endpoint


router.add_api_route("/samples", _list_route("samples", "Samples, a page at a time."), methods=["GET"],
                     tags=["records"], dependencies=[Viewer])
router.add_api_route("/scans", _list_route("scans", "TXM scans with their latest analysis, a page at a time."),
                     methods=["GET"], tags=["records"], dependencies=[Viewer])


@router.get("/jobs", tags=["jobs"], dependencies=[Viewer])
async def list_jobs(request: Request, status: Optional[List[Literal[JOB_STATUSES]]] = Query(None),  # type: ignore[valid-type]
                    scan: Annotated[Optional[Id], Query()] = None,
                    limit: Limit = DEFAULT_PAGE_ROWS, offset: Offset = 0) -> dict:
    """Durable jobs (`txmdb jobs`), oldest first, a page at a time."""
    from txmdb.jobs import list_jobs as jobs

    _refuse_unknown_plain(request, {"status", "scan", "limit", "offset"})
    frame = await run_in_threadpool(jobs, _catalog(request), status, scan=scan)
    return await run_in_threadpool(_page, frame, limit, offset)


@router.get("/jobs/{job_id}", tags=["jobs"], dependencies=[Viewer])
async def get_job(request: Request, job_id: RecordId) -> dict:
    """One job: its status, attempts, result or error."""
    return await run_in_threadpool(_job_record, _catalog(request), job_id)


def _job_record(catalog, job_id: int) -> dict:
    """The job as ``txmdb jobs`` lists it (NotFoundError for an unknown id)."""
    from txmdb.jobs import get_job as one, list_jobs as jobs

    frame = jobs(catalog, scan=one(catalog, job_id).scan_id)
    return _records(frame[frame["job_id"] == job_id])[0]


def _refuse_unknown_plain(request: Request, known: set) -> None:
    from txmdb.errors import FilterError

    for key in request.query_params:
        if key not in known:
            raise FilterError(key, f"unknown query parameter {key!r} (expected: {', '.join(sorted(known))})")


@router.get("/scans/{scan_id}", tags=["records"], dependencies=[Viewer])
async def get_scan(request: Request, scan_id: RecordId) -> dict:
    """One scan, as a row of `txmdb query scans`."""
    from txmdb.errors import NotFoundError

    frame = await run_in_threadpool(QUERIES["scans"].function, _catalog(request), scan=[scan_id])
    if frame.empty:
        raise NotFoundError(f"no TXM scan with id {scan_id}")
    return _records(frame)[0]


# ----------------------------------------------------------------------------- maps and slices
def _results_of(catalog, scan_id: int, analysis: Optional[int]):
    """(analysis id, results path) of the scan's latest finished analysis, or of ``analysis``."""
    from sqlalchemy import select

    from txmdb.db.models import Analysis, TXMScan
    from txmdb.errors import NotFoundError

    with catalog.session() as session:
        if session.get(TXMScan, scan_id) is None:
            raise NotFoundError(f"no TXM scan with id {scan_id}")
        stmt = select(Analysis.id, Analysis.results_path).where(Analysis.scan_id == scan_id,
                                                                Analysis.status == "done")
        if analysis is not None:
            stmt = stmt.where(Analysis.id == analysis)
        row = session.execute(stmt.order_by(Analysis.id.desc()).limit(1)).first()
    if row is None or not row.results_path:
        raise NotFoundError(f"analysis {analysis} is not a finished analysis of scan {scan_id}" if analysis
                            else f"scan {scan_id} has no finished analysis yet (txm analyze {scan_id})")
    return row.id, row.results_path


def _colour_scale(catalog, analysis_id: int, spec, image) -> tuple[float, float]:
    """The colour range of a map, the same for every slice: its whole-scan 5th–95th percentiles
    (map_summaries), labels 0 to their largest; the slice's own range only when no summary exists."""
    import numpy as np

    summary = None
    try:
        from sqlalchemy import select

        from txmdb.db.models import MapSummary
    except ImportError:  # a catalogue without map summaries
        MapSummary = None
    if MapSummary is not None and spec.unit != "label":
        with catalog.session() as session:
            summary = session.execute(select(MapSummary.p05, MapSummary.p95).where(
                MapSummary.analysis_id == analysis_id, MapSummary.map == spec.name,
                MapSummary.particle.is_(None))).first()
    if summary is not None and summary.p05 is not None and summary.p95 is not None and summary.p95 > summary.p05:
        return float(summary.p05), float(summary.p95)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (0.0, float(finite.max())) if spec.unit == "label" else (float(finite.min()), float(finite.max()))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _png(image, lo: float, hi: float, labels: bool) -> bytes:
    """RGBA PNG of a 2-D float image: viridis over [lo, hi] (tab20 for labels), NaN transparent."""
    import io

    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    finite = np.isfinite(image)
    if labels:
        rgba = colormaps["tab20"](np.where(finite, image, 0).astype(np.int64) % 20, bytes=True)
        finite &= image > 0  # label 0: background
    else:
        rgba = colormaps["viridis"](np.clip((np.where(finite, image, lo) - lo) / (hi - lo), 0, 1), bytes=True)
    rgba[..., 3] = np.where(finite, 255, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), "RGBA").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


AXES = {"z": 0, "y": 1, "x": 2}


@contextlib.contextmanager
def _results_file(path: str, scan_id: int, analysis_id: int):
    """The open results file of an analysis; a missing map is a 404 and an unreadable file a 503,
    both named by scan and analysis (the store's paths are the server's business, not the page's)."""
    import h5py

    from txmdb.errors import InputError, NotFoundError, StoreError

    try:
        f = h5py.File(path, "r")
    except OSError:
        raise StoreError(f"the results file of analysis {analysis_id} (scan {scan_id}) cannot be read; "
                         "run 'txmdb db check' to see why") from None
    try:
        with f:
            yield f
    except InputError as exc:
        if exc.source != str(path):
            raise
        raise NotFoundError(f"analysis {analysis_id} of scan {scan_id}: {exc.problem}") from None


@router.get("/scans/{scan_id}/maps", tags=["maps"], dependencies=[Viewer])
async def scan_maps(request: Request, scan_id: RecordId,
                    analysis: Annotated[Optional[Id], Query()] = None) -> dict:
    """The maps of the scan's latest finished analysis (or ``analysis``): name, unit and spatial shape."""
    from txmdb.io.maps import map_shape, maps_in, parse_map

    def find():
        analysis_id, path = _results_of(_catalog(request), scan_id, analysis)
        with _results_file(path, scan_id, analysis_id) as f:
            maps = [{"name": n, "unit": parse_map(n).unit, "shape": list(map_shape(f, n))} for n in maps_in(f)]
        return {"scan_id": scan_id, "analysis_id": analysis_id, "maps": maps}

    return await run_in_threadpool(find)


@router.get("/scans/{scan_id}/slice.png", tags=["maps"], dependencies=[Viewer], response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def slice_png(request: Request, scan_id: RecordId,
                    map: str = Query("edge", max_length=200, description="Map name, e.g. edge, white_line, "
                                                                         "fraction:NiO, cluster."),
                    axis: Literal["z", "y", "x"] = Query("z", description="Axis the slice is normal to (2-D maps: "
                                                                          "z only, index 0)."),
                    index: Annotated[Index, Query(description="Slice number along the axis.")] = 0,
                    analysis: Annotated[Optional[Id], Query(description="This analysis instead of the latest.")]
                    = None) -> Response:
    """One slice of a map as a PNG, reading only that slice of the results file.

    The colour scale is the map's, shared by all its slices (headers ``X-Scale-Min``,
    ``X-Scale-Max``, ``X-Map-Unit``); masked voxels are transparent.
    """
    from txmdb.io.maps import map_shape, parse_map, read_map
    from txmdb.errors import ParameterError

    spec = parse_map(map)

    def draw():
        catalog = _catalog(request)
        analysis_id, path = _results_of(catalog, scan_id, analysis)
        with _results_file(path, scan_id, analysis_id) as f:
            shape = map_shape(f, spec.name)
            if len(shape) == 2:  # a 2-D scan: the map is the one slice
                if axis != "z" or index != 0:
                    raise ParameterError(("axis", "index"), f"map {spec.name!r} of scan {scan_id} is 2-D: "
                                                            "only axis=z, index=0")
                image = read_map(f, spec.name)
            elif index >= shape[AXES[axis]]:
                raise ParameterError("index", f"map {spec.name!r} of scan {scan_id} has {shape[AXES[axis]]} "
                                              f"slices along {axis} (0 to {shape[AXES[axis]] - 1}); no slice {index}")
            else:
                image = read_map(f, spec.name, index, AXES[axis])
        lo, hi = _colour_scale(catalog, analysis_id, spec, image)
        return _png(image, lo, hi, spec.unit == "label"), lo, hi, analysis_id

    data, lo, hi, analysis_id = await run_in_threadpool(draw)
    return Response(data, media_type="image/png", headers={
        "X-Scale-Min": repr(lo), "X-Scale-Max": repr(hi), "X-Map-Unit": spec.unit, "X-Analysis-Id": str(analysis_id)})


# ----------------------------------------------------------------------------- uploads
def _store_upload(catalog, source, filename: Optional[str], max_bytes: int):
    """Copy an upload into ``<store>/uploads/<sha256><suffix>``, hashing and counting as it streams.

    Returns (path, new): ``new`` is False when the same bytes were uploaded before. Refused
    beyond ``max_bytes`` (413) with nothing left behind. The suffix is kept only from a fixed
    list (readers look at it); the file's name otherwise never reaches the disk.
    """
    import hashlib
    import os
    import uuid
    from pathlib import Path as FilePath

    from fastapi import HTTPException

    from txmdb.store import CYCLING
    from txmdb.vocabulary import UPLOAD_SUFFIXES

    catalog.store.claim(CYCLING)  # the store is this catalogue's (marked now if new) before anything is written
    folder = catalog.store.root.resolve() / "uploads"
    with catalog.store.writing():
        folder.mkdir(exist_ok=True)
        temp = folder / f".tmp.upload.{os.getpid()}.{uuid.uuid4().hex[:12]}"
        digest, size = hashlib.sha256(), 0
        try:
            with open(temp, "xb") as out:
                while chunk := source.read(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise HTTPException(413, f"upload too large: more than {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            suffix = FilePath(filename or "").suffix.lower()
            final = folder / (digest.hexdigest() + (suffix if suffix in UPLOAD_SUFFIXES else ""))
            new = not final.exists()
            if new:
                os.replace(temp, final)
            return final, new
        finally:
            temp.unlink(missing_ok=True)


async def _ingest_upload(request: Request, upload: UploadFile, ingest):
    """Store the upload, then ``ingest(path, name)`` as the signed-in account, ``name`` the file's
    as the client sent it (the ingest services check it: the record keeps it as its source's name);
    a new file that the ingest refuses is removed again (the catalogue and the store unchanged)."""
    from txmdb.db.actor import acting_as

    catalog, limit = _catalog(request), request.app.state.settings.max_upload_bytes

    def work():
        from txmdb.errors import InputError

        path, new = _store_upload(catalog, upload.file, upload.filename, limit)
        try:
            with acting_as(_user_name(request)):
                result = ingest(path, upload.filename)
            if new and _recorded_elsewhere(result, path):
                # the same bytes were already recorded from another file: the copy is nobody's
                with catalog.store.writing():
                    path.unlink(missing_ok=True)
            return result
        except BaseException as exc:
            if new:
                path.unlink(missing_ok=True)
            if isinstance(exc, InputError) and exc.source == str(path):
                # The uploader knows the file by its name, not by the server's copy.
                raise InputError(upload.filename or "the uploaded file", exc.problem) from None
            raise

    return await run_in_threadpool(work)


def _recorded_elsewhere(result, path) -> bool:
    """Whether an ingest's record (or ``(record, created)``) is of another file than ``path``:
    the same bytes recorded before from the file a command ingested."""
    record = result[0] if isinstance(result, tuple) else result
    recorded = getattr(record, "file_path", None)
    return recorded is not None and recorded != str(path)


def _created(request: Request, record_id: int, created: bool, key: str, location: str) -> JSONResponse:
    """201 with the new record's id, or 200 with the existing one for a file uploaded before;
    ``location`` (inside the application) under the server's ``--root-path``."""
    from txmdb.web.templating import url

    return JSONResponse({key: record_id, "created": created}, status_code=201 if created else 200,
                        headers={"Location": url(request, location)})


@router.post("/cycling", tags=["uploads"], dependencies=EDITOR_WRITE, status_code=201)
async def upload_cycling(request: Request, file: UploadFile = File(..., description="Cycler file."),
                         cell: str = Form(..., max_length=200), format: str = Form("auto", max_length=40),
                         upper_cutoff_v: Optional[float] = Form(None),
                         reference_cycle: Annotated[Optional[_whole_in(1, MAX_CYCLE_NUMBER)], Form()] = None
                         ) -> JSONResponse:
    """`txmdb cycling ingest FILE --cell CELL`: 201 `{run_id, created}`; the same file again: 200, the same run
    (400 if it names another upper cut-off or reference cycle than the run records; default 2)."""
    from txmdb.catalog.cycling import ingest_cycling

    run, created = await _ingest_upload(request, file, lambda path, name: ingest_cycling(
        _catalog(request), path, cell=cell, file_format=format, upper_cutoff_v=upper_cutoff_v,
        reference_cycle=reference_cycle, source_name=name))
    return _created(request, run.id, created, "run_id", f"/api/v1/query/cycles?run={run.id}")


@router.post("/xas", tags=["uploads"], dependencies=EDITOR_WRITE, status_code=201)
async def upload_xas(request: Request, file: UploadFile = File(..., description="XDI or (energy, μ) text."),
                     sample: str = Form(..., max_length=200), edge: str = Form(..., max_length=20),
                     mode: Optional[str] = Form(None, max_length=20), state: Optional[str] = Form(None, max_length=100),
                     depth_um: Optional[float] = Form(None)) -> JSONResponse:
    """`txmdb xas ingest FILE --sample S --edge E`: 201 `{measurement_id, created}`; the same file again: 200
    (400 if it names another edge, mode, state or depth than the record holds)."""
    from txmdb.catalog.spectroscopy import ingest_xas
    from txmdb.errors import ParameterError
    from txmdb.vocabulary import EDGES

    if edge not in EDGES:
        raise ParameterError("edge", f"edge {edge!r}: expected one of {', '.join(EDGES)}")
    record, created = await _ingest_upload(request, file, lambda path, name: ingest_xas(
        _catalog(request), path, sample=sample, edge=edge, mode=mode, state=state, depth_um=depth_um,
        source_name=name))
    return _created(request, record.id, created, "measurement_id", f"/api/v1/query/xas?{urlencode({'sample': sample})}")


@router.post("/xrd", tags=["uploads"], dependencies=EDITOR_WRITE, status_code=201)
async def upload_xrd(request: Request, sample: str = Form(..., max_length=200),
                     state: Optional[str] = Form(None, max_length=100), i003_i104: Optional[float] = Form(None),
                     a: Optional[float] = Form(None), c: Optional[float] = Form(None),
                     wavelength: Optional[float] = Form(None), file: Optional[UploadFile] = File(None)
                     ) -> JSONResponse:
    """`txmdb xrd add`: typed-in values, or a 2θ–intensity pattern file with its wavelength (Å).
    201 `{xrd_id, created}`; the same pattern file again: 200, the same record."""
    from txmdb.catalog.spectroscopy import add_xrd

    def add(pattern=None, name=None):
        return add_xrd(_catalog(request), sample=sample, state=state, i003_i104=i003_i104, a_angstrom=a,
                       c_angstrom=c, pattern=pattern, wavelength_angstrom=wavelength, source_name=name)

    if file is None or not file.filename:
        from txmdb.db.actor import acting_as

        def typed():
            with acting_as(_user_name(request)):
                return add()

        record = await run_in_threadpool(typed)
        return _created(request, record.id, True, "xrd_id", f"/api/v1/query/xrd?{urlencode({'sample': sample})}")
    existing = []

    def ingest(path, name):
        from txmdb.catalog._records import existing_by_sha
        from txmdb.db.models import XRDResult

        existing.append(existing_by_sha(_catalog(request), XRDResult, path.stem.split(".")[0]))
        return add(path, name)

    record = await _ingest_upload(request, file, ingest)
    return _created(request, record.id, existing[0] is None, "xrd_id", f"/api/v1/query/xrd?{urlencode({'sample': sample})}")


# ----------------------------------------------------------------------------- jobs
@router.post("/scans/{scan_id}/analyses", tags=["jobs"], dependencies=EDITOR_WRITE, status_code=202)
async def queue_analysis(request: Request, scan_id: RecordId,
                         parameters: Optional[dict[str, Any]] = Body(None, description=(
                             "Options of `txm analyze` by name, e.g. {\"bin\": \"1,2,3\", \"gradient_map\": \"edge\"}; "
                             "missing ones take the command's defaults."))) -> JSONResponse:
    """`txm analyze SCAN --queue`: 202 `{job_id, status}`; a worker (`txmdb worker`) runs it."""
    from txmdb.jobs import enqueue
    from txmdb.web.templating import url

    job_id = await run_in_threadpool(lambda: enqueue(_catalog(request), "analyze", parameters or {}, scan_id=scan_id,
                                                     created_by=_user_name(request)))
    return JSONResponse({"job_id": job_id, "status": "queued"}, status_code=202,
                        headers={"Location": url(request, f"/api/v1/jobs/{job_id}")})


@router.post("/jobs/{job_id}/cancel", tags=["jobs"], dependencies=EDITOR_WRITE)
async def cancel_job(request: Request, job_id: RecordId) -> dict:
    """`txmdb jobs cancel JOB_ID`: the job, cancelled (a running one stops within a third of its lease);
    409 when it is no longer queued or running."""
    from txmdb.jobs import cancel

    def work():
        cancel(_catalog(request), job_id)
        return _job_record(_catalog(request), job_id)

    return await run_in_threadpool(work)
