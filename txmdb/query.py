"""Cross-sample queries. Every function returns a long, tidy pandas DataFrame.

Statistics come from the latest finished analysis of each scan unless ``analysis`` names one;
only finished (``done``) analyses give statistics, also when named. Queries that ask for
``status`` show running and failed analyses too.

Each query declares the filters it honours (:data:`QUERIES`, names from
:data:`txmdb.vocabulary.FILTERS`); a filter it does not declare raises
:class:`~txmdb.errors.FilterError` instead of being ignored. Filters of several values bind
with SQL ``IN``.

A query that is one statement returns it (:class:`_Statement`) to :func:`declares`' wrapper,
which runs it as a DataFrame; ``QUERY.rows(catalog, **filters)`` runs it as :class:`Rows`
instead (the web pages: a DataFrame cost more than the statement).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from txmdb.errors import FilterError
from txmdb.vocabulary import DEFAULT_MAP, FILTERS, MAX_CYCLE_NUMBER, Filter

if TYPE_CHECKING:
    from sqlalchemy import Select


class _OnFirstUse:
    """A module imported on first attribute access.

    The CLI imports this module at start-up for :data:`QUERIES` alone, and ``txmdb --help``
    must not pay for pandas and SQLAlchemy (tests/test_cli_help.py).
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


pd = _OnFirstUse("pandas")
sa = _OnFirstUse("sqlalchemy")
orm = _OnFirstUse("sqlalchemy.orm")
m = _OnFirstUse("txmdb.db.models")


@dataclass(frozen=True)
class Query:
    """One query: its table name (``txmdb query NAME``), function, filters and parameters.

    ``parameters`` are the query's own arguments that are not filters (``retention``'s
    ``cycle``): :class:`txmdb.vocabulary.Filter` objects with ``multiple=False``.
    """

    name: str
    function: Callable
    filters: tuple[str, ...]
    parameters: tuple = ()

    @property
    def summary(self) -> str:
        return (self.function.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")

    def check(self, values: dict) -> None:
        """Raise FilterError for a filter given a value that this query does not declare."""
        own = set(self.filters) | {p.name for p in self.parameters}
        for key, value in values.items():
            if key in own:
                continue
            known = FILTERS.get(key)
            if known is None or known.given(value):
                raise FilterError(key, f"query {self.name} has no filter {key!r} "
                                       f"(its filters: {', '.join(self.filters) or 'none'})")


#: Every query, by its table name, in the order the CLI lists them.
QUERIES: dict[str, Query] = {}

# Filter sets shared by families of queries.
_SCAN_FILTERS = ("sample", "morphology", "state", "scan")
_STATISTICS_FILTERS = (*_SCAN_FILTERS, "analysis", "particle", "map")
_SCAN_LEVEL_FILTERS = (*_STATISTICS_FILTERS, "scan_level")
_BINNED_FILTERS = (*_SCAN_LEVEL_FILTERS, "bin")
_CELL_FILTERS = ("sample", "cell", "morphology", "run")


def declares(name: str, filters: Sequence[str], parameters: Sequence = ()):
    """Register the decorated function as query ``name`` honouring ``filters`` only."""
    unknown = set(filters) - set(FILTERS)
    if unknown:  # programming error: a filter the vocabulary does not know
        raise AssertionError(f"query {name}: unknown filters {sorted(unknown)}")

    def register(function: Callable) -> Callable:
        def run(catalog, values: dict):
            spec.check(values)
            # Filters left at "no filter" are dropped, so the function's defaults apply.
            return function(catalog, **{k: v for k, v in values.items() if k not in FILTERS or FILTERS[k].given(v)})

        @functools.wraps(function)
        def checked(catalog, **values) -> pd.DataFrame:
            result = run(catalog, values)
            return result.frame(catalog) if isinstance(result, _Statement) else result

        def rows(catalog, **values) -> Rows:
            """The query's :class:`Rows` (a query of one statement; the others are computed in pandas)."""
            # told by the function's declared return type, before anything is computed
            result = run(catalog, values) if one_statement else None
            if not isinstance(result, _Statement):  # programming error
                raise TypeError(f"query {name} is computed in pandas: it has no rows")
            return result.rows(catalog)

        one_statement = function.__annotations__.get("return") in ("_Statement", _Statement)
        spec = Query(name, checked, tuple(filters), tuple(parameters))
        QUERIES[name] = spec
        checked.query, checked.rows = spec, rows
        return checked

    return register


@dataclass(frozen=True)
class Rows:
    """A query's rows as the database driver gives them (SQL NULL is None), without a DataFrame.

    ``keys``: the column names; ``rows``: a tuple-like row each; ``integers``: the columns
    :meth:`frame` makes nullable integers (Int64).
    """

    keys: tuple[str, ...]
    rows: list
    integers: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, key: str) -> list:
        i = self.keys.index(key)
        return [row[i] for row in self.rows]

    def records(self) -> list[dict]:
        return [dict(zip(self.keys, row)) for row in self.rows]

    def where(self, key: str, value) -> Rows:
        """The rows whose column ``key`` equals ``value``."""
        i = self.keys.index(key)
        return Rows(self.keys, [row for row in self.rows if row[i] == value], self.integers)

    def frame(self) -> pd.DataFrame:
        keys, rows, integers = list(self.keys), self.rows, self.integers
        if not rows:
            frame = pd.DataFrame(columns=keys)  # object columns, so merges on empty results still work
            for key in integers:
                frame[key] = frame[key].astype("Int64")
            return frame
        # Column by column, so list-valued cells (JSON columns) stay single objects; the integer
        # columns made Int64 at once (an object column converted after cost 0.3-1.5 ms a frame).
        # Without ``columns=`` when the names are distinct (the dict keeps their order): pandas then
        # skips a reindex of the dict, 0.1-0.8 ms of each frame's ~0.5-4 ms (docs/performance.md).
        columns = {key: list(values) for key, values in zip(keys, zip(*rows))}
        for key in integers:
            columns[key] = pd.array(columns[key], dtype="Int64")
        return pd.DataFrame(columns) if len(columns) == len(keys) else pd.DataFrame(columns, columns=keys)


def _rows(catalog, stmt: Select, params: dict | None = None, integers: Sequence[str] = ()) -> Rows:
    from txmdb.db.engine import read_connection

    with read_connection(catalog.engine) as conn:
        result = conn.execute(stmt, params)
        return Rows(tuple(result.keys()), result.fetchall(), tuple(integers))


def _frame(catalog, stmt: Select, params: dict | None = None, *, integers: Sequence[str] = ()) -> pd.DataFrame:
    """The rows of ``stmt`` (``params`` bound); columns ``integers`` as nullable integers (Int64)."""
    return _rows(catalog, stmt, params, integers).frame()


@dataclass(frozen=True)
class _Statement:
    """A query of one statement: ``stmt`` with ``params`` bound, the columns ``integers`` of its
    DataFrame nullable integers, and ``convert``: (column, function) pairs applied to each value."""

    stmt: Select
    params: dict
    integers: tuple[str, ...] = ()
    convert: tuple = ()

    def frame(self, catalog) -> pd.DataFrame:
        frame = _frame(catalog, self.stmt, self.params, integers=self.integers)
        for key, function in self.convert:
            frame[key] = frame[key].map(function)
        return frame

    def rows(self, catalog) -> Rows:
        rows = _rows(catalog, self.stmt, self.params, self.integers)
        for key, function in self.convert:
            i = rows.keys.index(key)
            rows = Rows(rows.keys, [(*row[:i], function(row[i]), *row[i + 1:]) for row in rows.rows], rows.integers)
        return rows


@functools.cache  # statements are immutable: build the alias once (its column proxies cost ~1 ms a time)
def _is_latest():
    """The analysis is the newest 'done' one of its scan.

    A correlated lookup, one probe of ``ix_analyses_scan_status_id`` per candidate row, so the
    filters on samples and scans drive the query. (``id IN (newest of every scan)`` made
    SQLite walk all 10,000 ids for each scan of a sample: 0.2-0.3 s instead of milliseconds.)
    """
    newer = orm.aliased(m.Analysis)
    return m.Analysis.id == (
        sa.select(sa.func.max(newer.id))
        .where(newer.scan_id == m.Analysis.scan_id, newer.status == "done")
        .scalar_subquery()
    )


# Statements built once per shape of filters (which are given), their values bound at execution:
# building a statement and its cache key cost ~0.4 ms a query, a third of a small query's CPU.
# ``column IN (:name)`` with an expanding parameter is the SQL a literal list gives.
def _in(column, name: str):
    return column.in_(sa.bindparam(name, expanding=True, type_=column.type))


def _bound(**values) -> dict:
    """The filters given (a value, not None or empty) as the parameters ``f_NAME`` of :func:`_where_bound`."""
    return {f"f_{k}": _morphologies(v) if k == "morphology" else _as_list(v) for k, v in values.items() if v}


def _morphologies(values) -> list:
    """A morphology filter's values as given and as samples keep them since session 27 (stripped,
    lower case): ``--morphology Rod`` finds "rod", and a catalogue's older "Rod" still as typed.
    (Not SQL's ``lower()`` of the column: SQLite folds ASCII letters only.)"""
    given = _as_list(values)
    return list(dict.fromkeys([*given, *(str(v).strip().lower() for v in given)]))


def _where_bound(stmt: Select, given: frozenset, *filters) -> Select:
    """Add ``column IN (:f_NAME)`` for every ``(column, NAME)`` whose parameter is in ``given``
    (the values bound at execution)."""
    for column, name in filters:
        if f"f_{name}" in given:
            stmt = stmt.where(_in(column, f"f_{name}"))
    return stmt


def _scan_params(*, sample=None, morphology=None, state=None, scan=None) -> dict:
    return _bound(sample=sample, morphology=morphology, state=state, scan=scan)


def _where_scan(stmt: Select, given: frozenset) -> Select:
    """The scan filters (``given``: :func:`_scan_params`' names)."""
    return _where_bound(stmt, given, (m.Sample.name, "sample"), (m.Sample.morphology, "morphology"),
                        (m.TXMScan.state, "state"), (m.TXMScan.id, "scan"))


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def _map_names(values) -> list[str]:
    """Map filter values as canonical map names; a name that is no map is an error, not an empty table."""
    from txmdb.io.maps import parse_map

    return [parse_map(v).name for v in _as_list(values)]


def _stats(model, *, analysis=None, bin=None, weighted=None, particle=None, scan_level=False,
           map=None, default_map: str | None = DEFAULT_MAP, order: Sequence[str] = (), **filters) -> _Statement:
    """Rows of a statistics table (the model's columns) with sample, scan and analysis beside them.

    Only the filters the calling query declares reach here, so each applies to ``model``.
    Rows are of the maps ``map`` names, else of ``default_map`` (None: every map).
    """
    params = _bound(analysis=analysis, bin=bin, particle=particle)
    if map or default_map:
        params["f_map"] = _map_names(map or default_map)
    params.update(_scan_params(**filters))
    stmt = _stats_select(model, tuple(order), frozenset(params), None if weighted is None else bool(weighted),
                         bool(scan_level))
    return _Statement(stmt, params, ("particle",))


@functools.cache  # one statement per table, order and shape of filters (a few dozen in use)
def _stats_select(model, order: tuple[str, ...], given: frozenset, weighted: bool | None, scan_level: bool) -> Select:
    """:func:`_stats`' statement; ``given``: the names of the filter parameters it binds."""
    stmt = _of_analyses(model, given)
    if "f_bin" in given:
        stmt = stmt.where(_in(model.bin_factor, "f_bin"))
    if weighted is not None:
        stmt = stmt.where(model.weighted.is_(weighted))
    if scan_level:
        stmt = stmt.where(model.particle.is_(None))
    if "f_particle" in given:
        stmt = stmt.where(_in(model.particle, "f_particle"))
    if "f_map" in given:
        stmt = stmt.where(_in(model.map, "f_map"))
    # Scan rows first, then each particle's; then ``order`` and the row id.
    return _where_scan(stmt, given).order_by(
        m.Sample.name, m.TXMScan.id, m.Analysis.id, model.map, model.particle.is_not(None), model.particle,
        *(getattr(model, c) for c in order), model.id)


@declares("theta", (*_BINNED_FILTERS, "weighted"))
def theta(catalog, **filters) -> _Statement:
    """θ histograms (probability and sin θ reference per 5° bin), per scan and particle."""
    return _stats(m.ThetaHistogram, order=["bin_factor", "weighted", "theta_lo"], **filters)


@declares("vector-size", _BINNED_FILTERS)
def vector_size(catalog, **filters) -> _Statement:
    """|u| statistics (n, mean, median, p90) in the nine folded θ groups."""
    return _stats(m.VectorSizeStat, order=["bin_factor", "phi_lo"], **filters)


@declares("vector-size-histogram", _BINNED_FILTERS)
def vector_size_histogram(catalog, **filters) -> _Statement:
    """Histograms of |u| per folded θ group."""
    return _stats(m.VectorSizeHistogram, order=["bin_factor", "phi_lo", "u_lo"], **filters)


@declares("u-theta", _BINNED_FILTERS)
def u_theta(catalog, **filters) -> _Statement:
    """Mean |u| against θ."""
    return _stats(m.UThetaProfile, order=["bin_factor", "theta_lo"], **filters)


@declares("gradient", _BINNED_FILTERS)
def gradient_summary(catalog, **filters) -> _Statement:
    """Per scan/particle and binning factor: n vectors, mean |u|, tangential excess, KL divergence."""
    return _stats(m.GradientSummary, order=["bin_factor"], **filters)


@declares("edge-histogram", _SCAN_LEVEL_FILTERS)
def edge_histogram(catalog, **filters) -> _Statement:
    """Edge-energy histograms per scan and particle."""
    return _stats(m.EdgeHistogram, order=["edge_lo_ev"], **filters)


@declares("depth-profile", _SCAN_LEVEL_FILTERS)
def depth_profile(catalog, **filters) -> _Statement:
    """Edge energy against depth below the particle surface."""
    return _stats(m.DepthProfile, order=["depth_lo_vox"], **filters)


# Particles are defined once, from the edge map's validity: they are of no other map.
@declares("particles", tuple(f for f in _STATISTICS_FILTERS if f != "map"))
def particles(catalog, **filters) -> _Statement:
    """Particles: size, centroid, equivalent radius, edge-energy mean and spread."""
    return _stats(m.Particle, **filters)


def _of_analyses(model, given: frozenset) -> Select:
    """The model's columns with sample, state, scan and analysis beside them, of the analyses asked for.

    Parameter ``f_analysis`` in ``given``: those analyses (finished ones only); else the latest
    finished one of each scan.
    """
    if "f_analysis" in given:
        return _joined(model).where(_in(m.Analysis.id, "f_analysis"), m.Analysis.status == "done")
    return _latest_of(model)


@functools.cache  # statements are immutable: the joins are built once per table (~0.1 ms a time)
def _joined(model) -> Select:
    return (
        sa.select(m.Sample.name.label("sample"), m.TXMScan.state.label("state"), m.TXMScan.id.label("scan_id"),
                  m.Analysis.id.label("analysis_id"), *(getattr(model, c) for c in m.data_columns(model)))
        .join(m.Analysis, m.Analysis.id == model.analysis_id)
        .join(m.TXMScan, m.TXMScan.id == m.Analysis.scan_id)
        .join(m.Sample, m.Sample.id == m.TXMScan.sample_id)
    )


@functools.cache
def _latest_of(model) -> Select:
    return _joined(model).where(_is_latest())


def _analysis_rows(model, *, analysis=None, order: Sequence[str] = (), **filters) -> _Statement:
    """Rows of a per-analysis table without particles (the model's columns), sample, scan and analysis beside."""
    params = {**_bound(analysis=analysis), **_scan_params(**filters)}
    return _Statement(_analysis_rows_select(model, tuple(order), frozenset(params)), params)


@functools.cache
def _analysis_rows_select(model, order: tuple[str, ...], given: frozenset) -> Select:
    return _where_scan(_of_analyses(model, given), given).order_by(
        m.Sample.name, m.TXMScan.id, m.Analysis.id, *(getattr(model, c) for c in order))


@declares("clusters", (*_SCAN_FILTERS, "analysis"))
def clusters(catalog, **filters) -> _Statement:
    """Phase clusters (txm analyze --clusters): each cluster's size and mean normalised spectrum over the edge window.

    One row per cluster and energy: ``n_voxels`` voxels carry the label ``cluster`` (as in the
    results file's ``/cluster`` map); ``mean_norm`` is their mean normalised absorbance.
    """
    return _analysis_rows(m.ClusterSpectrum, order=["cluster", "energy_index"], **filters)


@declares("pca", (*_SCAN_FILTERS, "analysis"))
def pca(catalog, **filters) -> _Statement:
    """PCA of the spectra the phase clusters were fitted on: explained-variance ratio per component."""
    return _analysis_rows(m.PCAVariance, order=["component"], **filters)


@declares("maps", _SCAN_LEVEL_FILTERS)
def maps(catalog, **filters) -> _Statement:
    """Per analysis, map and particle (empty: whole scan): n_valid, mean, std, p05, p50, p95 of the map's values.

    Over the particle voxels where the map is valid; every map of the analysis unless --map
    names some.
    """
    return _stats(m.MapSummary, default_map=None, **filters)


@declares("scans", (*_SCAN_FILTERS, "status"))
def scans(catalog, *, sample=None, morphology=None, state=None, scan=None, status=None) -> _Statement:
    """TXM scans with their latest finished analysis (if any), and the status of their newest one.

    ``registration_id`` is the registration that analysis applied (NULL: none).
    ``latest_status`` is running or failed when a newer analysis than the one shown is under
    way or failed; ``status`` filters on it.
    """
    params = {**_scan_params(sample=sample, morphology=morphology, state=state, scan=scan), **_bound(status=status)}
    return _Statement(_scans_filtered(frozenset(params)), params, ("analysis_id", "registration_id"),
                      (("shape", _shape_text),))


def _shape_text(shape):
    """A scan's shape as text: 60×100×100."""
    return "×".join(map(str, shape)) if isinstance(shape, list) else shape


@functools.cache  # one statement per shape of filters
def _scans_filtered(given: frozenset) -> Select:
    stmt, latest_status = _scans_select()
    if "f_status" in given:
        stmt = stmt.where(_in(latest_status, "f_status"))
    return _where_scan(stmt, given)


@functools.cache  # built once: its four aliases of analyses cost more to build than the query takes
def _scans_select() -> tuple[Select, sa.ColumnElement]:
    """query.scans' statement before its filters, and its latest_status column (to filter on)."""
    # Correlated max(id) per scan on ix_analyses_scan_status_id, so the filters on samples and
    # scans drive the query (a GROUP BY over all analyses cost 40-70 ms per page on 10,000).
    def newest_id(done: bool):
        newer = orm.aliased(m.Analysis)
        stmt = sa.select(sa.func.max(newer.id)).where(newer.scan_id == m.TXMScan.id)
        return (stmt.where(newer.status == "done") if done else stmt).correlate(m.TXMScan).scalar_subquery()

    attempt = orm.aliased(m.Analysis)
    # A scalar subquery, not a third join: PostgreSQL planned that join as a hash over every
    # analysis (1.5 of the 1.9 ms of a sample's scans); this is two index probes per scan.
    latest_status = (sa.select(attempt.status).where(attempt.id == newest_id(done=False))
                     .correlate(m.TXMScan).scalar_subquery())
    a = orm.aliased(m.Analysis)
    stmt = (
        sa.select(
            m.Sample.name.label("sample"), m.Sample.morphology, m.TXMScan.state, m.TXMScan.id.label("scan_id"),
            m.TXMScan.layout, m.TXMScan.ndim, m.TXMScan.shape, m.TXMScan.n_energies, m.TXMScan.energy_min_ev,
            m.TXMScan.energy_max_ev, m.TXMScan.voxel_size_nm, m.TXMScan.source_name, m.TXMScan.file_path,
            m.TXMScan.file_sha256,
            a.id.label("analysis_id"), a.registration_id, a.n_valid_voxels, a.n_particles, a.mean_edge_ev,
            a.std_edge_ev, latest_status.label("latest_status"),
        )
        .join(m.Sample, m.Sample.id == m.TXMScan.sample_id)
        .outerjoin(a, a.id == newest_id(done=True))
        .order_by(m.Sample.name, m.TXMScan.id)
    )
    return stmt, latest_status


@declares("analyses", ("scan", "status"))
def analyses(catalog, *, scan=None, status=None) -> _Statement:
    """Analyses of TXM scans: status (and error), the registration applied (NULL: none), version,
    times, results file and its SHA-256."""
    params = _bound(scan=scan, status=status)
    return _Statement(_analyses_select(frozenset(params)), params, ("registration_id",))


@functools.cache  # one statement per shape of filters (as every query's below)
def _analyses_select(given: frozenset) -> Select:
    stmt = sa.select(
        m.Analysis.id.label("analysis_id"), m.Analysis.scan_id, m.Analysis.status, m.Analysis.registration_id,
        m.Analysis.txmdb_version,
        m.Analysis.started_at, m.Analysis.finished_at, m.Analysis.n_valid_voxels, m.Analysis.n_particles,
        m.Analysis.mean_edge_ev, m.Analysis.std_edge_ev, m.Analysis.gradient_unit, m.Analysis.results_path,
        m.Analysis.results_sha256, m.Analysis.host, m.Analysis.pid, m.Analysis.error,
    ).order_by(m.Analysis.id)
    return _where_bound(stmt, given, (m.Analysis.scan_id, "scan"), (m.Analysis.status, "status"))


@declares("registrations", ("sample", "scan", "registration"))
def registrations(catalog, *, sample=None, scan=None, registration=None) -> _Statement:
    """Energy-stack registrations: per energy the shift s_e (voxels; shift_z empty in 2-D) and its quality.

    DESIGN §10: the sample had moved by s_e at that energy, registered_e(x) = raw_e(x + s_e).
    """
    params = _bound(sample=sample, scan=scan, registration=registration)
    return _Statement(_registrations_select(frozenset(params)), params)


@functools.cache
def _registrations_select(given: frozenset) -> Select:
    stmt = (
        sa.select(m.Sample.name.label("sample"), m.TXMScan.state, m.TXMScan.id.label("scan_id"),
                  m.Registration.id.label("registration_id"), m.RegistrationShift.energy_index,
                  m.RegistrationShift.energy_ev, m.RegistrationShift.shift_z, m.RegistrationShift.shift_y,
                  m.RegistrationShift.shift_x, m.RegistrationShift.quality)
        .join(m.Registration, m.Registration.id == m.RegistrationShift.registration_id)
        .join(m.TXMScan, m.TXMScan.id == m.Registration.scan_id)
        .join(m.Sample, m.Sample.id == m.TXMScan.sample_id)
        .order_by(m.Sample.name, m.TXMScan.id, m.Registration.id, m.RegistrationShift.energy_index)
    )
    return _where_bound(stmt, given, (m.Sample.name, "sample"), (m.TXMScan.id, "scan"),
                        (m.Registration.id, "registration"))


def _where_cells(stmt: Select, given: frozenset) -> Select:
    """The filters of the cell queries (``given``: :func:`_bound`'s names)."""
    return _where_bound(stmt, given, (m.Sample.name, "sample"), (m.Cell.name, "cell"),
                        (m.Sample.morphology, "morphology"))


@declares("cycles", (*_CELL_FILTERS, "cycle"))
def cycles(catalog, *, sample=None, cell=None, morphology=None, cycle=None, run=None) -> _Statement:
    """Per-cycle capacities, efficiency, energies, voltages and voltage drop of every cycling run."""
    params = _bound(cycle=cycle, run=run, sample=sample, cell=cell, morphology=morphology)
    return _Statement(_cycles_select(frozenset(params)), params)


@functools.cache
def _cycles_select(given: frozenset) -> Select:
    stmt = (
        sa.select(m.Sample.name.label("sample"), m.Cell.name.label("cell"), m.CyclingRun.id.label("run_id"),
                  *(getattr(m.Cycle, c) for c in m.data_columns(m.Cycle)), m.CyclingRun.reference_cycle)
        .join(m.CyclingRun, m.CyclingRun.id == m.Cycle.run_id)
        .join(m.Cell, m.Cell.id == m.CyclingRun.cell_id)
        .join(m.Sample, m.Sample.id == m.Cell.sample_id)
        .order_by(m.Sample.name, m.Cell.name, m.CyclingRun.id, m.Cycle.cycle)
    )
    return _where_cells(_where_bound(stmt, given, (m.Cycle.cycle, "cycle"), (m.CyclingRun.id, "run")), given)


RETENTION_COLUMNS = ["sample", "cell", "run_id", "reference_cycle", "cycle", "reference_capacity_mah_g", "capacity_mah_g",
                     "retention_pct", "cycles_to_95", "cycles_to_90", "cycles_to_80"]


# Cycles count from 1 here as ingest's reference cycle does: 0 would be taken for "the run's".
_REFERENCE = Filter("reference", ("--reference",), int, "Reference cycle [default: the run's, normally 2].",
                    multiple=False, low=1, high=MAX_CYCLE_NUMBER)


@declares("retention", _CELL_FILTERS, parameters=(
    Filter("cycle", ("--cycle",), int, "Cycle whose retention to report.", multiple=False, default=...),
    _REFERENCE))
def retention(catalog, *, cycle: int, reference: int | None = None, **filters) -> pd.DataFrame:
    """Capacity retention at a cycle, and cycles to 95/90/80 %.

    Retention at ``cycle`` is against the reference cycle (default: the run's, normally 2).
    """
    from txmdb.analysis.cycling import retention as retention_of

    frame = cycles(catalog, **filters)
    rows = []
    for (sample, cell, run_id), group in frame.groupby(["sample", "cell", "run_id"], sort=True):
        ref = reference or int(group["reference_cycle"].iloc[0])
        try:
            result = retention_of(group, cycle=cycle, reference_cycle=ref)
        except ValueError:
            # This cell has not reached the cycle (or its reference): no figures, not a failed query.
            result = {}
        result = {k: v for k, v in result.items() if k not in ("cycle", "reference_cycle")}
        rows.append({"sample": sample, "cell": cell, "run_id": run_id, "reference_cycle": ref, "cycle": cycle, **result})
    out = pd.DataFrame(rows, columns=RETENTION_COLUMNS)
    for col in ("cycles_to_95", "cycles_to_90", "cycles_to_80"):
        out[col] = out[col].astype("Int64")
    return out


@declares("xas", ("sample", "morphology", "state", "edge", "mode"))
def xas(catalog, *, sample=None, morphology=None, state=None, edge=None, mode=None) -> _Statement:
    """XAS results: half-height and derivative edge energies, L3 ratios; the named reference
    spectra (``xas ingest --reference``: no sample, ``reference`` names them) last."""
    params = _bound(state=state, edge=edge, mode=mode, sample=sample, morphology=morphology)
    return _Statement(_xas_select(frozenset(params)), params)


@functools.cache
def _xas_select(given: frozenset) -> Select:
    stmt = (
        sa.select(m.Sample.name.label("sample"), m.XASMeasurement.id.label("measurement_id"), m.XASMeasurement.edge,
               m.XASMeasurement.mode, m.XASMeasurement.state, m.XASMeasurement.edge_energy_ev,
               m.XASMeasurement.e0_derivative_ev, m.XASMeasurement.l3_ratio, m.XASMeasurement.depth_um,
               m.XASMeasurement.reference_name.label("reference"), m.XASMeasurement.edge_jump,
               m.XASMeasurement.source_name, m.XASMeasurement.file_path)
        .outerjoin(m.Sample, m.Sample.id == m.XASMeasurement.sample_id)
        .order_by(m.Sample.name.asc().nulls_last(), m.XASMeasurement.reference_name, m.XASMeasurement.edge,
                  m.XASMeasurement.id)
    )
    return _where_cells(_where_bound(stmt, given, (m.XASMeasurement.state, "state"), (m.XASMeasurement.edge, "edge"),
                                     (m.XASMeasurement.mode, "mode")), given)


@declares("xrd", ("sample", "morphology", "state"))
def xrd(catalog, *, sample=None, morphology=None, state=None) -> _Statement:
    """XRD results: (003)/(104) ratio and lattice parameters."""
    params = _bound(state=state, sample=sample, morphology=morphology)
    return _Statement(_xrd_select(frozenset(params)), params)


@functools.cache
def _xrd_select(given: frozenset) -> Select:
    stmt = (
        sa.select(m.Sample.name.label("sample"), m.XRDResult.id.label("xrd_id"), m.XRDResult.state,
               m.XRDResult.i003_i104, m.XRDResult.a_angstrom, m.XRDResult.c_angstrom,
               m.XRDResult.wavelength_angstrom, m.XRDResult.source_name, m.XRDResult.file_path)
        .join(m.Sample, m.Sample.id == m.XRDResult.sample_id)
        .order_by(m.Sample.name, m.XRDResult.id)
    )
    return _where_cells(_where_bound(stmt, given, (m.XRDResult.state, "state")), given)


@declares("samples", ("sample", "morphology"))
def samples(catalog, *, sample=None, morphology=None) -> _Statement:
    """Samples: material, morphology, orientation, composition, provenance."""
    params = _bound(sample=sample, morphology=morphology)
    return _Statement(_samples_select(frozenset(params)), params)


@functools.cache
def _samples_select(given: frozenset) -> Select:
    from txmdb.catalog.samples import SAMPLE_FIELDS

    stmt = sa.select(m.Sample.name.label("sample"), *(getattr(m.Sample, f) for f in SAMPLE_FIELDS), m.Sample.meta,
                     m.Sample.created_at).order_by(m.Sample.name)
    return _where_bound(stmt, given, (m.Sample.name, "sample"), (m.Sample.morphology, "morphology"))


@declares("cells", ("sample", "cell", "morphology"))
def cells(catalog, *, sample=None, cell=None, morphology=None) -> pd.DataFrame:
    """Cells with their active mass."""
    from txmdb.catalog.samples import CELL_FIELDS, active_mass_g
    from txmdb.db.engine import read_connection

    params = _bound(sample=sample, cell=cell, morphology=morphology)
    with read_connection(catalog.engine) as conn:
        rows = [{**c._mapping, "active_mass_g": active_mass_g(c)}
                for c in conn.execute(_cells_select(frozenset(params)), params)]
    return pd.DataFrame(rows, columns=["cell", "sample", *CELL_FIELDS, "active_mass_g"])


@functools.cache
def _cells_select(given: frozenset) -> Select:
    """One statement (an ORM session loaded each cell's sample by a query of its own)."""
    from txmdb.catalog.samples import CELL_FIELDS

    return _where_cells(sa.select(m.Cell.name.label("cell"), m.Sample.name.label("sample"),
                                  *(getattr(m.Cell, f) for f in CELL_FIELDS)).join(m.Sample).order_by(m.Cell.name),
                        given)


@declares("summary", ("sample", "morphology", "state"), parameters=(
    Filter("cycle", ("--cycle",), int, "Cycle at which retention and voltage drop are read.", multiple=False,
           default=100),
    _REFERENCE))
def summary(catalog, *, sample=None, morphology=None, state=None, cycle: int = 100,
            reference: int | None = None) -> pd.DataFrame:
    """One row per sample and state: retention and voltage drop beside edge energy, mean |u|, tangential excess.

    Its cells' retention and voltage drop at ``cycle`` stand beside its scans' mean edge
    energy, mean |u| and tangential excess for each binning factor.

    Cell figures are means over the sample's cells that reached ``cycle`` (``n_cells`` of them;
    cells carry no state, so every state of a sample shows them); scan figures are means over
    the sample's scans in that state (``n_scans``).
    """
    info = samples(catalog, sample=sample, morphology=morphology)
    keep = set(info["sample"])

    cells_at = retention(catalog, cycle=cycle, reference=reference, sample=sample, morphology=morphology)
    cell_columns = ["n_cells", "retention_pct", "capacity_mah_g", "voltage_drop_v", "onset_discharge_voltage_v"]
    if cells_at.empty:
        cell_part = pd.DataFrame(columns=cell_columns, index=pd.Index([], dtype=object, name="sample"))
    else:
        drops = cycles(catalog, sample=sample, morphology=morphology, cycle=cycle)
        per_cell = cells_at.merge(drops[["run_id", "voltage_drop_v", "onset_discharge_voltage_v"]],
                                  on="run_id", how="left")
        # (cells, not cycler files: a cell may have several runs)
        reached = per_cell["cell"].where(per_cell["capacity_mah_g"].notna())
        cell_part = per_cell.assign(reached=reached).groupby("sample").agg(
            n_cells=("reached", "nunique"), retention_pct=("retention_pct", "mean"),
            capacity_mah_g=("capacity_mah_g", "mean"), voltage_drop_v=("voltage_drop_v", "mean"),
            onset_discharge_voltage_v=("onset_discharge_voltage_v", "mean"),
        )

    scan_rows = scans(catalog, sample=sample, morphology=morphology, state=state)
    grad = gradient_summary(catalog, sample=sample, morphology=morphology, state=state, scan_level=True)
    if not scan_rows.empty:
        scan_rows["state"] = scan_rows["state"].fillna("")
        scan_part = scan_rows.groupby(["sample", "state"]).agg(
            n_scans=("scan_id", "nunique"), mean_edge_ev=("mean_edge_ev", "mean"))
    else:
        scan_part = pd.DataFrame(columns=["n_scans", "mean_edge_ev"],
                                 index=pd.MultiIndex.from_arrays([[], []], names=["sample", "state"]))
    if not grad.empty:
        grad["state"] = grad["state"].fillna("")
        wide = grad.pivot_table(index=["sample", "state"], columns="bin_factor",
                                values=["mean_u", "tangential_excess", "tangential_excess_weighted"],
                                aggfunc="mean")
        wide.columns = [f"{name}_f{factor}" for name, factor in wide.columns]
        wide = wide[sorted(wide.columns, key=lambda c: (int(c.rsplit("_f", 1)[1]), c))]
        scan_part = scan_part.join(wide, how="outer")

    rows = scan_part.reset_index()
    rows = rows[rows["sample"].isin(keep)]
    without_scans = sorted(keep - set(rows["sample"]))
    if without_scans and not state:
        rows = pd.concat([rows, pd.DataFrame({"sample": without_scans, "state": ""})], ignore_index=True)
    out = (info[["sample", "morphology", "orientation"]].merge(rows, on="sample", how="inner")
           .merge(cell_part.reset_index(), on="sample", how="left"))
    first = ["sample", "morphology", "orientation", "state", "n_cells", "retention_pct", "capacity_mah_g",
             "voltage_drop_v", "onset_discharge_voltage_v", "n_scans", "mean_edge_ev"]
    for col in first:
        if col not in out:
            out[col] = pd.NA
    out = out[first + [c for c in out.columns if c not in first]]
    out[["n_cells", "n_scans"]] = out[["n_cells", "n_scans"]].fillna(0).astype("int64")   # counts, not NaN or 1.0
    out["state"] = out["state"].replace("", pd.NA)
    return out.sort_values(["sample", "state"], na_position="first").reset_index(drop=True)
