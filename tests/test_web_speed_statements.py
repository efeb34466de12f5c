"""Cheaper query statements and frames (docs/performance.md, "Server CPU per request"), on SQLite and PostgreSQL.

- each query's statement is built once per shape of filters (which filters are given), the
  values bound at execution: every call gets its own values' rows, and each filter still
  filters as before;
- :func:`txmdb.query._frame` makes nullable integer columns at once: the same Int64 columns the
  conversion after construction gave, for empty results and repeated column names too;
- the API's lists are encoded in the worker thread: the same bytes FastAPI's encoder gave.
"""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest
import sqlalchemy as sa

from txmdb import query
from txmdb.db import models as m
from txmdb.vocabulary import MAX_CATALOGUE_INT

# Stored text that is awkward in every format: HTML, quotes, non-ASCII, a formula, a slash.
NAMES = ("A", "<b>B&amp;</b>", 'Q"uote\'s', "Ünï/çødé ✓", "=1+1")


def _fill(catalog) -> dict:
    """Samples (awkward names) with scans of three states, analyses (some failed) and θ histograms
    of two maps, two binning factors, weighted and not, scan level and one particle."""
    ids = {}
    with catalog.session() as s:
        for i, name in enumerate(NAMES):
            sample = m.Sample(name=name, morphology=("rod", "gravel")[i % 2], meta={"note": name, "n": [i, None]})
            s.add(sample)
            s.flush()
            for state in ("pristine", "cycled", "aged")[: 1 + i % 3]:
                scan = m.TXMScan(sample_id=sample.id, state=state, layout="dxchange", data_path="/d",
                                 energy_path="/e", ndim=3, shape=[4, 2, 2, 2], dtype="float32", n_energies=4,
                                 energy_min_ev=8300.0, energy_max_ev=8400.0, energies_ev=[],
                                 file_path=f"/{i}{state}.h5", file_size_bytes=1, file_sha256=f"{i}{state}".ljust(64, "0"))
                s.add(scan)
                s.flush()
                for status in ("done", "failed", "done")[: 1 + (i + len(state)) % 3]:
                    analysis = m.Analysis(scan_id=scan.id, status=status, parameters={}, txmdb_version="t",
                                          input_sha256="0" * 64, timings_s={}, mean_edge_ev=8340.5)
                    s.add(analysis)
                    s.flush()
                    ids.setdefault("analyses", []).append(analysis.id)
                    s.add_all([m.ThetaHistogram(analysis_id=analysis.id, particle=particle, map=map_name,
                                                bin_factor=factor, weighted=weighted, theta_lo=lo, theta_hi=lo + 5.0,
                                                probability=(lo + factor) / 100 + 1 / 3, reference=0.1)
                               for particle in (None, 1) for map_name in ("edge", "white_line")
                               for factor in (1, 2) for weighted in (False, True) for lo in (0.0, 5.0)])
    return ids


VALUES = {"sample": [NAMES[1], NAMES[3]], "morphology": ["gravel"], "state": ["cycled", "aged"], "bin": [2],
          "weighted": True, "scan_level": True, "particle": [1], "map": ["white_line"], "status": ["done"]}


def _keep(frame, name, value):
    """The rows of ``frame`` a filter keeps, by pandas instead of SQL."""
    column = {"sample": "sample", "morphology": "morphology", "state": "state", "bin": "bin_factor",
              "weighted": "weighted", "particle": "particle", "map": "map", "status": "latest_status"}
    if name == "scan_level":
        return frame[frame["particle"].isna()]
    if name == "weighted":
        return frame[frame["weighted"] == value]
    return frame[frame[column[name]].isin(value)]


@pytest.mark.parametrize("table", ["theta", "scans"])
def test_every_filter_shape_keeps_the_rows_pandas_keeps(catalog, table):
    """Each shape of filters (a statement built once and reused) gives the rows of filtering the
    whole table in pandas, and asking again with other values of the same shape gives theirs."""
    _fill(catalog)
    spec = query.QUERIES[table]
    names = [n for n in VALUES if n in spec.filters]
    everything = spec.function(catalog, map=["edge", "white_line"]) if table == "theta" else spec.function(catalog)
    if table == "theta":  # the morphology filter's column
        everything = everything.merge(query.samples(catalog)[["sample", "morphology"]], on="sample", how="left")
    assert len(everything) > (20 if table == "theta" else 5)
    seen = 0
    for size in range(len(names) + 1):
        for combo in itertools.combinations(names, size):
            given = {n: VALUES[n] for n in combo}
            if table == "theta" and "map" not in given:
                given["map"] = ["edge", "white_line"]
            expected = everything
            for name, value in given.items():
                expected = _keep(expected, name, value)
            got = spec.function(catalog, **given)
            key = ["scan_id", "particle", "map", "bin_factor", "weighted", "theta_lo"] if table == "theta" else ["scan_id"]
            assert got[key].astype(str).values.tolist() == expected[key].astype(str).values.tolist(), combo
            seen += len(got)
    assert seen > len(everything)
    # The same shape, other values: other rows (nothing of the first call's values kept).
    first = spec.function(catalog, sample=[NAMES[0]])
    second = spec.function(catalog, sample=[NAMES[2], NAMES[4]])
    assert set(first["sample"]) == {NAMES[0]} and set(second["sample"]) == {NAMES[2], NAMES[4]}


def test_the_statement_of_a_shape_is_built_once(catalog):
    _fill(catalog)
    query._xas_select.cache_clear()
    for name in NAMES:
        query.xas(catalog, sample=[name])
    query.xas(catalog, sample=NAMES[:2], state="cycled")
    assert query._xas_select.cache_info().misses == 2 and query._xas_select.cache_info().hits == len(NAMES) - 1


def test_analysis_filter_takes_finished_analyses_only(catalog):
    ids = _fill(catalog)
    frame = query.theta(catalog, analysis=ids["analyses"], map=["edge"])
    with catalog.session() as s:
        done = set(s.scalars(sa.select(m.Analysis.id).where(m.Analysis.status == "done")))
    assert set(frame["analysis_id"]) == done and done < set(ids["analyses"])
    latest = query.theta(catalog, map=["edge"])
    assert set(latest["analysis_id"]) < done  # one per scan, the newest finished


def _old_frame(keys, rows, integers):
    """The frame as _frame made it before: objects inferred, then the integer columns converted."""
    if not rows:
        frame = pd.DataFrame(columns=keys)
    else:
        frame = pd.DataFrame({key: list(values) for key, values in zip(keys, zip(*rows))}, columns=keys)
    for key in integers:
        frame[key] = frame[key].astype("Int64")
    return frame


@pytest.mark.parametrize("values", [[None, None], [1, None, MAX_CATALOGUE_INT], [0, 7], []])
def test_integer_columns_are_the_int64_columns_of_before(catalog, values):
    """Nullable integers made at once equal the old conversion (every id fits in a float exactly)."""
    rows = [(v, f"<i>{i}</i>", i / 3) for i, v in enumerate(values)]
    if rows:
        stmt = sa.union_all(*(sa.select(sa.literal(v, sa.Integer).label("n"), sa.literal(t).label("t"),
                                        sa.literal(f, sa.Float).label("f")) for v, t, f in rows))
    else:
        stmt = sa.select(sa.literal(1, sa.Integer).label("n"), sa.literal("x").label("t"),
                         sa.literal(1.0, sa.Float).label("f")).where(sa.false())
    got = query._frame(catalog, stmt, integers=["n"])
    expected = _old_frame(["n", "t", "f"], rows, ["n"])
    pd.testing.assert_frame_equal(got, expected)
    assert str(got["n"].dtype) == "Int64"
    assert got.to_csv(index=False) == expected.to_csv(index=False)
    assert got.to_json(orient="records") == expected.to_json(orient="records")


def test_repeated_column_names_keep_the_frame_of_before(catalog):
    stmt = sa.select(sa.literal(1, sa.Integer).label("x"), sa.literal("a").label("x"), sa.literal(2.5).label("y"))
    got = query._frame(catalog, stmt)
    pd.testing.assert_frame_equal(got, _old_frame(["x", "x", "y"], [(1, "a", 2.5)], []))


def test_api_lists_are_the_bytes_fastapis_encoder_gave(catalog):
    """/api/v1/samples and /scans, now encoded in the worker thread: byte for byte what FastAPI's
    jsonable_encoder and JSONResponse made of the same page (awkward names, nested meta, NaN)."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.testclient import TestClient

    from txmdb.web.api import _page
    from txmdb.web.app import create_app

    _fill(catalog)
    client = TestClient(create_app(catalog, public_read=True), raise_server_exceptions=False)
    for path, table, limit, offset in (("/api/v1/samples?limit=3&offset=1", "samples", 3, 1),
                                       ("/api/v1/scans?limit=50", "scans", 50, 0),
                                       ("/api/v1/scans?morphology=gravel&limit=2&offset=1", "scans", 2, 1)):
        filters = {"morphology": ["gravel"]} if "morphology" in path else {}
        page = _page(query.QUERIES[table].function(catalog, **filters), limit, offset)
        before = json.dumps(jsonable_encoder(page), ensure_ascii=False, allow_nan=False, indent=None,
                            separators=(",", ":")).encode("utf-8")
        answer = client.get(path)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert answer.content == before
        assert any(name in answer.text for name in NAMES[1:])


def test_api_query_answers_are_the_clis_bytes_after_one_trip(catalog):
    """The query and its text now run in one call on the worker thread: CSV still the CLI's
    table_text, JSON still table_json, for awkward names."""
    from fastapi.testclient import TestClient

    from txmdb.tables import table_json, table_text
    from txmdb.web.app import create_app

    _fill(catalog)
    client = TestClient(create_app(catalog, public_read=True), raise_server_exceptions=False)
    frame = query.theta(catalog, sample=list(NAMES[1:4]), bin=[2])
    csv = client.get("/api/v1/query/theta", params=[("sample", n) for n in NAMES[1:4]] + [("bin", "2"),
                                                                                       ("format", "csv")])
    assert csv.status_code == 200 and csv.content == table_text(frame, "csv").encode("utf-8")
    js = client.get("/api/v1/query/theta", params=[("sample", n) for n in NAMES[1:4]] + [("bin", "2")])
    assert js.status_code == 200 and js.content == table_json(frame).encode("ascii")
    assert set(frame["sample"]) == set(NAMES[1:4])


@pytest.mark.parametrize("shape", ["60×100×101×99", "60×40×51", "30×7"])
def test_thumbnail_links_are_urlencodes(shape):
    """The sample page's thumbnail links, now written out, are what urlencode wrote."""
    from urllib.parse import urlencode

    from txmdb.web.pages import SPATIAL_AXES, _spatial_shape, _thumbnail

    spatial = _spatial_shape(shape)
    row = {"analysis_id": 12, "scan_id": 345, "shape": shape}
    expected = "/txmdb/api/v1/scans/345/slice.png?" + urlencode(
        {"map": "edge", "axis": SPATIAL_AXES.get(len(spatial), ("z",))[0], "index": spatial[0] // 2})
    assert _thumbnail("/txmdb", row) == expected
    assert _thumbnail("", {**row, "analysis_id": None}) is None
    assert _thumbnail("", {**row, "analysis_id": pd.NA}) is None
