"""Pages from query rows, not DataFrames (docs/performance.md, "Scan page without DataFrames
(session 19)"), on SQLite and PostgreSQL.

- every query of one statement gives, as ``QUERY.rows``, the values of its DataFrame; the
  queries computed in pandas have no rows;
- :func:`txmdb.web.pages.rows_table` shows rows as :func:`txmdb.web.pages.table` shows the same
  rows as a DataFrame: the same texts (whole numbers beside a NULL are floats there, 1.23457e+07)
  and the same number columns;
- the scan page's plots are those the pandas code of session 18 drew, and every table shows.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re

import pandas as pd
import pytest
import sqlalchemy as sa

from txmdb import query
from txmdb.db import models as m
from txmdb.web import pages

NAME = "<b>S&amp;</b>"


def _fill(catalog) -> dict:
    """A sample with an analysed scan (statistics of two maps, unsorted bins, NULLs, a registration,
    a failed and a running analysis after the finished one) and a scan never analysed."""
    with catalog.session() as s:
        sample = m.Sample(name=NAME, morphology="rod", meta={"note": "<i>x</i>"})
        s.add(sample)
        s.flush()
        scans = []
        for state in ("pristine", None):
            scan = m.TXMScan(sample_id=sample.id, state=state, layout="dxchange", data_path="/d", energy_path="/e",
                             ndim=3, shape=[4, 3, 5, 6], dtype="float32", n_energies=4, energy_min_ev=8300.0,
                             energy_max_ev=8400.0, energies_ev=[], voxel_size_nm=30.0, file_path=f"/{state}.h5",
                             file_size_bytes=1, file_sha256=str(state).ljust(64, "0"))
            s.add(scan)
            s.flush()
            scans.append(scan.id)
        done = m.Analysis(scan_id=scans[0], status="done", parameters={"bins": [1, 2]}, txmdb_version="t",
                          input_sha256="0" * 64, timings_s={}, n_valid_voxels=12_345_678, n_particles=2,
                          mean_edge_ev=8340.25, started_at=dt.datetime(2026, 1, 2, 3, 4, 5))
        s.add(done)
        s.flush()
        for status, error in (("failed", "<script>boom</script>"), ("running", None)):
            s.add(m.Analysis(scan_id=scans[0], status=status, parameters={}, txmdb_version="t", input_sha256="0" * 64,
                             timings_s={}, error=error, pid=4321 if status == "running" else None))
        for map_name, offset in (("white_line", 100.0), ("edge", 0.0)):
            s.add_all([m.ThetaHistogram(analysis_id=done.id, particle=particle, map=map_name, bin_factor=factor,
                                        weighted=weighted, theta_lo=lo, theta_hi=lo + 5.0,
                                        probability=(lo + factor + offset) / 97 + weighted / 7, reference=lo / 90)
                       for particle in (None, 1) for factor in (2, 1) for weighted in (True, False)
                       for lo in (10.0, 0.0, 5.0)])
            s.add_all([m.VectorSizeStat(analysis_id=done.id, particle=None, map=map_name, bin_factor=factor, phi_lo=lo,
                                        phi_hi=lo + 10.0, n=7, mean_u=None if lo == 10.0 else lo / 3 + offset,
                                        median_u=lo / 4, p90_u=lo / 2 + factor, gradient_unit="eV/nm")
                       for factor in (1, 3) for lo in (10.0, 0.0, 20.0)])
            s.add_all([m.EdgeHistogram(analysis_id=done.id, particle=None, map=map_name, edge_lo_ev=lo,
                                       edge_hi_ev=lo + 0.5, count=3, probability=(lo - 8330) / 1000 + offset)
                       for lo in (8335.0, 8330.0, 8330.5)])
            s.add_all([m.DepthProfile(analysis_id=done.id, particle=None, map=map_name, depth_lo_vox=lo,
                                      depth_hi_vox=lo + 1, depth_lo_nm=lo * 30, depth_hi_nm=lo * 30 + 30, n_voxels=9,
                                      mean_edge_ev=8340 + lo / 3 + offset, std_edge_ev=0.5)
                       for lo in (2.0, 0.0, 1.0)])
        s.add_all([m.Particle(analysis_id=done.id, particle=p, map="edge", n_voxels=2_000_000 * p,
                              centroid_z=None if p == 1 else 1.5, centroid_y=2.0, centroid_x=3.0,
                              equivalent_radius_vox=4.0 + p, equivalent_radius_nm=None, mean_edge_ev=8341.0 + p,
                              std_edge_ev=0.25) for p in (1, 2)])
        registration = m.Registration(scan_id=scans[0], method="pcc", parameters={}, reference_index=1,
                                      reference_energy_ev=8310.0, max_shift_vox=2.0, txmdb_version="t",
                                      input_sha256="1" * 64)
        s.add(registration)
        s.flush()
        s.add_all([m.RegistrationShift(registration_id=registration.id, energy_index=e, energy_ev=8300.0 + e,
                                       shift_z=None if e % 2 else -0.5 * e, shift_y=0.25 * e, shift_x=-1.5,
                                       quality=None if e == 1 else 0.9 - e / 10) for e in range(4)])
    return {"scans": scans, "analysis": done.id}


def _values(frame: pd.DataFrame) -> list[list]:
    """A frame's cells with every missing value as None."""
    return [[None if not isinstance(v, (list, dict)) and pd.isna(v) is True else v for v in row]
            for row in frame.astype(object).values.tolist()]


def test_rows_of_every_query_of_one_statement_are_its_frames_values(catalog):
    ids = _fill(catalog)
    seen = 0
    for name, spec in query.QUERIES.items():
        needs = {p.name: 2 for p in spec.parameters if p.default is ...}
        if name in ("cells", "retention", "summary"):  # computed in pandas
            with pytest.raises(TypeError, match=f"query {name} is computed in pandas"):
                spec.function.rows(catalog, **needs)
            continue
        for filters in ({}, {"scan": [ids["scans"][0]]} if "scan" in spec.filters else {"sample": [NAME]}):
            frame, rows = spec.function(catalog, **filters, **needs), spec.function.rows(catalog, **filters, **needs)
            assert rows.keys == tuple(frame.columns), name
            assert [list(r) for r in rows.rows] == _values(frame), (name, filters)
            seen += len(rows)
    assert seen > 80
    assert query.scans.rows(catalog, scan=ids["scans"]).column("shape") == ["4×3×5×6", "4×3×5×6"]
    assert query.analyses.rows(catalog, scan=[ids["scans"][0]]).integers == ("registration_id",)


def test_a_filter_the_query_does_not_declare_is_refused_by_rows_too(catalog):
    from txmdb.errors import FilterError

    with pytest.raises(FilterError, match="query analyses has no filter 'sample'"):
        query.analyses.rows(catalog, sample=["x"])


TABLES = [("analyses", {"scan": 0}, ["scan_id"]), ("particles", {"scan": 0}, ["sample", "state", "scan_id"]),
          ("scans", {}, []), ("theta", {"scan": 0}, ["sample"]), ("vector-size", {}, []),
          ("registrations", {}, ["sample"]), ("samples", {}, []), ("depth-profile", {"scan": 1}, [])]


@pytest.mark.parametrize("name, filters, drop", TABLES)
def test_rows_table_is_the_table_of_the_frame(catalog, name, filters, drop):
    """Query rows shown as their DataFrame was shown (texts, number columns, status cells), on
    the values each backend's driver gives."""
    ids = _fill(catalog)
    function = query.QUERIES[name].function
    filters = {k: [ids["scans"][v]] for k, v in filters.items()}
    expected = pages.table(function(catalog, **filters).drop(columns=drop), status=["status"], limit=7)
    got = pages.rows_table(function.rows(catalog, **filters), drop=drop, status=["status"], limit=7)
    assert got == expected
    assert filters or got["rows"]


def test_rows_table_keeps_the_frames_number_columns_and_floats(catalog):
    """Whole numbers beside a NULL or a fraction are floats in a DataFrame (so 1.23457e+07 on the
    page); booleans, NULL-only, text, time and JSON columns are no number columns."""
    columns = ("big", "mixed", "whole", "flag", "blank", "text", "id")
    rows = [(12_345_678, 1, 5, True, None, "<b>", 3), (None, 2.5, 6, None, None, None, None)]
    selects = [sa.select(*(sa.literal(v, t).label(c) for v, t, c in zip(row, (
        sa.Integer, sa.Float, sa.Integer, sa.Boolean, sa.Integer, sa.String, sa.Integer), columns))) for row in rows]
    stmt = sa.union_all(*selects).subquery()
    statement = sa.select(*stmt.c).order_by(stmt.c.whole)
    got = pages.rows_table(query._rows(catalog, statement, integers=["id"]))
    assert got == pages.table(query._frame(catalog, statement, integers=["id"]))
    texts = [[cell["text"] for cell in row] for row in got["rows"]]
    assert texts == [["1.23457e+07", "1", "5", "yes", "", "<b>", "3"], ["", "2.5", "6", "", "", "", ""]]
    assert [cell["num"] for cell in got["rows"][0]] == [True, True, True, False, False, False, True]
    analyses = query.QUERIES["analyses"].function
    _fill(catalog)
    assert pages.rows_table(analyses.rows(catalog)) == pages.table(analyses(catalog))


def _old_by_factor(frame, order):
    import numpy as np

    factors, key = frame["bin_factor"].to_numpy(), frame[order].astype(float).to_numpy()
    for factor in np.unique(factors):
        rows = np.flatnonzero(factors == factor)
        yield factor, rows[np.argsort(key[rows], kind="stable")]


def _old_plots(theta, vector_size, histogram, depth) -> list[dict]:
    """The scan page's plots as session 18's pandas code drew them from the query frames."""
    import numpy as np

    theta, vector_size = theta[theta["map"] == "edge"], vector_size[vector_size["map"] == "edge"]
    histogram, depth = histogram[histogram["map"] == "edge"], depth[depth["map"] == "edge"]
    series = pages._series
    plots = []
    rows = histogram.sort_values("edge_lo_ev")
    rows = rows.assign(edge=(rows["edge_lo_ev"] + rows["edge_hi_ev"]) / 2)
    width = float((rows["edge_hi_ev"] - rows["edge_lo_ev"]).iloc[0])
    plots.append({"id": "edge-histogram", "title": "Edge energy of the voxels", "x": {"label": "Edge energy",
                  "unit": "eV"}, "y": {"label": "Probability", "unit": f"per {width:g} eV bin"},
                  "series": [series(rows, "edge", "probability", "voxels")]})
    rows = depth.sort_values("depth_lo_nm")
    rows = rows.assign(depth=(rows["depth_lo_nm"] + rows["depth_hi_nm"]) / 2)
    plots.append({"id": "depth-profile", "title": "Edge energy against depth below the surface",
                  "x": {"label": "Depth", "unit": "nm"}, "y": {"label": "Mean edge energy", "unit": "eV"},
                  "series": [series(rows, "depth", "mean_edge_ev", "mean")], "points": True})
    column = {c: theta[c].astype(float).to_numpy() for c in ("theta_lo", "theta_hi", "probability", "reference")}
    weighted = theta["weighted"].astype(bool).to_numpy()
    for factor, rows in _old_by_factor(theta, "theta_lo"):
        centre, flags = (column["theta_lo"][rows] + column["theta_hi"][rows]) / 2, weighted[rows]
        probability, reference = column["probability"][rows], column["reference"][rows]
        lines = [pages._points(centre[flags == flag], probability[flags == flag],
                               "|u|-weighted" if flag else "unweighted") for flag in np.unique(flags)]
        shown = ~flags if (~flags).any() else np.ones_like(flags)
        lines.append(pages._points(centre[shown], reference[shown], "sin θ (random)", dash=True))
        plots.append({"id": f"theta-f{factor}", "title": f"θ distribution, binning factor {factor}",
                      "x": {"label": "θ", "unit": "°"}, "y": {"label": "Probability", "unit": "per 5° bin"},
                      "series": lines})
    column = {c: vector_size[c].astype(float).to_numpy() for c in ("phi_lo", "phi_hi", "mean_u", "median_u", "p90_u")}
    units = vector_size["gradient_unit"].to_numpy()
    for factor, rows in _old_by_factor(vector_size, "phi_lo"):
        centre = (column["phi_lo"][rows] + column["phi_hi"][rows]) / 2
        lines = [pages._points(centre, column["mean_u"][rows], "mean |u|"),
                 pages._points(centre, column["median_u"][rows], "median |u|"),
                 pages._points(centre, column["p90_u"][rows], "90th percentile |u|", dash=True)]
        plots.append({"id": f"vector-size-f{factor}", "title": f"Vector size |u|, binning factor {factor}",
                      "x": {"label": "Folded θ group centre", "unit": "°"}, "y": {"label": "|u|", "unit": str(units[rows[0]])},
                      "series": lines, "points": True})
    return plots


def _client(catalog):
    from fastapi.testclient import TestClient

    from txmdb.web.app import create_app

    return TestClient(create_app(catalog, public_read=True), raise_server_exceptions=False)


def test_scan_page_plots_are_the_pandas_plots_and_every_table_shows(catalog):
    ids = _fill(catalog)
    scan, analysis = ids["scans"][0], ids["analysis"]
    latest = {"scan": [scan], "analysis": [analysis]}
    expected = _old_plots(query.theta(catalog, scan_level=True, **latest),
                          query.vector_size(catalog, scan_level=True, **latest),
                          query.edge_histogram(catalog, scan_level=True, **latest),
                          query.depth_profile(catalog, scan_level=True, **latest))
    answer = _client(catalog).get(f"/scans/{scan}")
    assert answer.status_code == 200
    shown = [json.loads(html.unescape(spec)) for spec in re.findall(r"data-plot='([^']*)'", answer.text)]
    assert shown == expected
    assert [p["id"] for p in shown] == ["edge-histogram", "depth-profile", "theta-f1", "theta-f2",
                                        "vector-size-f1", "vector-size-f3"]
    assert shown[2]["series"][0]["x"] == [2.5, 7.5, 12.5] and None in shown[4]["series"][0]["y"]
    page = answer.text
    # The analyses table as the DataFrame showed it: 12345678 beside NULLs is a float there.
    assert "<td class=\"num\">1.23457e+07</td>" in page
    assert '<span class="status status-failed">failed</span>' in page and "&lt;script&gt;boom" in page
    assert "<script>boom" not in page
    registrations = re.search(r'<table class="data" id="registrations">.*?</table>', page, re.S).group(0)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", registrations)[1:] == ["4", "1", "0.75", "1.5", "0.6"]
    particles = re.search(r'<table class="data" id="particles">.*?</table>', page, re.S).group(0)
    assert particles.count("<tr>") == 3 and '<td class="num">4000000</td><td class="num">1.5</td>' in particles
    assert f"Scan {scan} · " in page and "&lt;b&gt;S&amp;amp;&lt;/b&gt;" in page
    # labels a scientist reads: units in brackets, not the column names' suffixes
    assert "energy min (eV)" in page and "voxel size (nm)" in page and "file SHA-256" in page
    assert "energy min ev" not in page and "voxel size nm" not in page
    never = _client(catalog).get(f"/scans/{ids['scans'][1]}")
    assert never.status_code == 200 and "Not analysed yet" in never.text and "(None)" not in never.text
    assert "No particles (not analysed yet)." in never.text and "No registrations of this scan." in never.text
    assert _client(catalog).get("/scans/987654").status_code == 404


def test_sample_page_scan_cards_and_tables(catalog):
    """The sample page from rows: a scan without a state shows none (a DataFrame made it 'nan')."""
    ids = _fill(catalog)
    answer = _client(catalog).get("/samples/" + NAME.replace("&", "%26"))
    assert answer.status_code == 200
    page = answer.text
    cards = re.findall(r"<span>Scan (\d+)([^<]*)</span>", page)
    assert cards == [(str(ids["scans"][0]), " · pristine"), (str(ids["scans"][1]), "")]
    assert "nan" not in page and "4×3×5×6 · 8340.25 eV" in page
    assert "Ni fraction" in page and "ni fraction" not in page
    assert page.count("/api/v1/scans/") == 1  # one thumbnail: the other scan is not analysed
    assert "No XAS measurements of this sample." in page and "No XRD results of this sample." in page
    assert _client(catalog).get("/samples/nobody").status_code == 404
