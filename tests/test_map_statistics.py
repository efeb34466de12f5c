"""Statistics on any map (issue 11 items 4, 5): gradient statistics of white-line and fraction maps
against a plain loop implementation of DESIGN §5, units, map summaries against numpy on the
results file, the ``--map`` filter, ``query maps``, unknown maps, and migration 0006 with data.
SQLite and PostgreSQL through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import sqlalchemy as sa

from tests.conftest import DATA, insert_raw_scan
from txmdb.analysis.edge import edge_parameters
from txmdb.io.maps import gradient_unit, maps_in, parse_map, read_map
from txmdb.errors import InputError, ParameterError
from txmdb.pipeline import AnalysisOptions, statistics_from_edge_map

GOLDEN = DATA / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
PARAMS = edge_parameters("Ni")
MAPS_COLUMNS = ["sample", "state", "scan_id", "analysis_id", "particle", "map", "n_valid", "mean", "std",
                "p05", "p50", "p95"]


# ------------------------------------------------------------------ a plain reference of DESIGN §5
def _reference_vectors(values, labels, f, step):
    """(particle, θ, |u|) of every kept vector, by loops over blocks: bin (all voxels of a block in
    one particle and finite), centroid O of each particle's blocks (edge validity: ``labels``),
    central differences where both neighbours on every axis are valid."""
    shape = tuple(s // f for s in values.shape)
    binned = np.full(shape, np.nan)
    valid_block = np.zeros(shape, bool)
    particle_block = np.zeros(shape, int)
    for idx in np.ndindex(*shape):
        sl = tuple(slice(i * f, (i + 1) * f) for i in idx)
        lab, val = labels[sl], values[sl]
        if (lab > 0).all():
            particle_block[idx] = lab.flat[0]
            if np.isfinite(val).all():
                valid_block[idx] = True
                binned[idx] = val.astype(np.float64).mean()
    centroids = {p: np.argwhere(particle_block == p).mean(axis=0) for p in np.unique(particle_block) if p}
    out = []
    for idx in np.ndindex(*shape):
        if not valid_block[idx] or any(i == 0 or i == n - 1 for i, n in zip(idx, shape)):
            continue
        u = []
        ok = True
        for a in range(len(shape)):
            lo, hi = list(idx), list(idx)
            lo[a] -= 1
            hi[a] += 1
            if not (valid_block[tuple(lo)] and valid_block[tuple(hi)]):
                ok = False
                break
            u.append((binned[tuple(hi)] - binned[tuple(lo)]) / (2 * step))
        if not ok:
            continue
        u = np.array(u)
        p = particle_block[idx]
        v = centroids[p] - np.array(idx)
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        if nu == 0 or nv == 0:
            continue
        theta = math.degrees(math.acos(max(-1.0, min(1.0, float(u @ v) / (nu * nv)))))
        out.append((p, theta, nu))
    return out


def _reference_summary(vectors, ndim):
    theta = np.array([t for _, t, _ in vectors])
    u = np.array([x for _, _, x in vectors])
    band = (theta >= 80) & (theta < 100)
    ref = (math.cos(math.radians(80)) - math.cos(math.radians(100))) / 2 if ndim == 3 else 20 / 180
    return {"n_vectors": len(vectors), "mean_u": u.mean(), "tangential_excess": band.mean() / ref,
            "tangential_excess_weighted": u[band].sum() / u.sum() / ref}


def _two_particles():
    """Edge map with two particles; a white-line map with holes inside them; a fraction map."""
    z, y, x = np.mgrid[0:18, 0:22, 0:28].astype(float)
    labels_truth = np.zeros(z.shape, int)
    first = (z - 8) ** 2 + (y - 7) ** 2 + (x - 7) ** 2 <= 36
    second = (z - 9) ** 2 + (y - 14) ** 2 + (x - 20) ** 2 <= 30
    labels_truth[first], labels_truth[second] = 1, 2
    rng = np.random.default_rng(5)
    edge = np.where(labels_truth > 0, 8340.0 + 0.05 * z + 0.02 * x + rng.normal(0, 0.01, z.shape), np.nan)
    white = (8352.0 + 0.1 * np.hypot(y - 7, x - 7) + rng.normal(0, 0.02, z.shape)).astype(np.float32)
    white[labels_truth == 0] = np.nan
    white[8, 5:9, 5:9] = np.nan                                # no interior maximum there
    fraction = np.clip(0.5 + 0.03 * (z - 9) + rng.normal(0, 0.01, z.shape), 0, 1).astype(np.float32)
    fraction[labels_truth == 0] = np.nan
    return edge, {"white_line": white, "fraction:NiO": fraction}


@pytest.mark.parametrize("voxel_nm", [25.0, None])
def test_statistics_on_white_line_and_fraction_maps_match_a_plain_computation(voxel_nm):
    edge, maps = _two_particles()
    options = AnalysisOptions(params=PARAMS, bin_factors=(1, 2), min_particle_voxels=50)
    # the statistics phase given these maps (the white-line and LCF kernels are tested apart)
    options.gradient_maps = ("edge", "white_line", "fraction:NiO")
    stats = statistics_from_edge_map(edge, options, energies_ev=np.linspace(8300, 8400, 30),
                                     voxel_size_nm=voxel_nm, maps=maps)
    assert stats.n_particles == 2
    summaries = stats.tables["gradient_summaries"]
    per = "nm" if voxel_nm else "voxel"
    units = {"edge": f"eV/{per}", "white_line": f"eV/{per}", "fraction:NiO": f"1/{per}"}
    for name, values in (("edge", edge), *maps.items()):
        assert gradient_unit(name, voxel_nm) == units[name]
        for f in (1, 2):
            rows = summaries[(summaries["map"] == name) & (summaries["bin_factor"] == f)]
            scan = rows[rows["particle"].isna()].iloc[0]
            assert scan["gradient_unit"] == units[name]
            vectors = _reference_vectors(values, stats.labels, f, f * (voxel_nm or 1.0))
            expected = _reference_summary(vectors, 3)
            assert scan["n_vectors"] == expected["n_vectors"] > 10, (name, f)
            for key in ("mean_u", "tangential_excess", "tangential_excess_weighted"):
                assert scan[key] == pytest.approx(expected[key], rel=1e-9), (name, f, key)
            one = rows[rows["particle"] == 1].iloc[0]
            assert one["n_vectors"] == sum(1 for p, _, _ in vectors if p == 1)
        vs = stats.tables["vector_size_stats"]
        vs = vs[(vs["map"] == name) & (vs["bin_factor"] == 1) & vs["particle"].isna()]
        assert set(vs["gradient_unit"]) == {units[name]}
        vectors = _reference_vectors(values, stats.labels, 1, voxel_nm or 1.0)
        phi = np.array([min(t, 180 - t) for _, t, _ in vectors])
        u = np.array([x for _, _, x in vectors])
        for row in vs.itertuples():
            g = (phi >= row.phi_lo) & (phi < row.phi_hi) if row.phi_hi < 90 else phi >= row.phi_lo
            assert row.n == g.sum()
            if g.any():
                assert row.median_u == pytest.approx(np.median(u[g]), rel=1e-9)
                assert row.p90_u == pytest.approx(np.percentile(u[g], 90), rel=1e-9)
    # the white line's holes cost vectors the edge map has
    n = {m: summaries[(summaries["map"] == m) & summaries["particle"].isna() & (summaries["bin_factor"] == 1)]
         ["n_vectors"].iloc[0] for m in ("edge", "white_line")}
    assert n["white_line"] < n["edge"]
    # particles, depth and edge histograms are the edge map's; every table says which map
    for table in ("particles", "depth_profiles", "edge_histograms"):
        assert set(stats.tables[table]["map"]) == {"edge"}
    assert set(stats.tables["theta_histograms"]["map"]) == {"edge", "white_line", "fraction:NiO"}


@pytest.mark.parametrize("compiled", [True, False])
def test_map_summaries_match_numpy(compiled, monkeypatch):
    from txmdb.io import maps as maps_module

    if not compiled:  # the numpy path, taken without numba
        monkeypatch.setattr(maps_module, "_compiled_summary", lambda: None)
    edge, maps = _two_particles()
    options = AnalysisOptions(params=PARAMS, bin_factors=(1,), min_particle_voxels=50)
    stats = statistics_from_edge_map(edge, options, energies_ev=np.linspace(8300, 8400, 30), voxel_size_nm=20.0,
                                     maps=maps)
    table = stats.tables["map_summaries"]
    assert list(table.columns) == MAPS_COLUMNS[4:]
    assert list(dict.fromkeys(table["map"])) == ["edge", "white_line", "fraction:NiO"]
    for name, values in (("edge", edge), *maps.items()):
        for particle in (None, 1, 2):
            inside = stats.labels > 0 if particle is None else stats.labels == particle
            v = values[inside & np.isfinite(values)].astype(np.float64)
            rows = table[(table["map"] == name)
                         & (table["particle"].isna() if particle is None else table["particle"] == particle)]
            (row,) = rows.itertuples()
            assert row.n_valid == v.size > 0
            assert row.mean == pytest.approx(v.mean(), rel=1e-12)
            assert row.std == pytest.approx(v.std(), rel=1e-9)
            for column, q in (("p05", 5), ("p50", 50), ("p95", 95)):
                assert getattr(row, column) == pytest.approx(np.percentile(v, q), rel=1e-12)


# ------------------------------------------------------------------ names, units, reading maps
def test_map_names_units_and_unknown_names():
    assert parse_map("edge").dataset == "edge_ev" and parse_map("edge").unit == "eV"
    assert parse_map(" fraction:LiNiO2 ").name == "fraction:LiNiO2"
    assert parse_map("cluster").unit == "label" and parse_map("rfactor").unit == "dimensionless"
    assert gradient_unit("white_line_height", 10.0) == "1/nm"
    with pytest.raises(ParameterError, match=r"^map 'edges' does not exist; maps: edge, white_line, "
                                             r"white_line_height, fraction:NAME, rfactor, cluster$"):
        parse_map("edges")
    with pytest.raises(ParameterError, match="fraction:"):
        parse_map("fraction:")
    with pytest.raises(ParameterError, match="'cluster' holds labels: it has no gradient"):
        gradient_unit("cluster", 10.0)
    with pytest.raises(ParameterError, match="'white_line' is not computed by this analysis; its maps: edge"):
        AnalysisOptions(params=PARAMS, gradient_maps=("edge", "white_line"))


def test_read_map_whole_slice_and_missing(tmp_path):
    path = tmp_path / "r.h5"
    rng = np.random.default_rng(0)
    edge = rng.random((4, 5, 6)).astype(np.float32)
    edge[1, 2, 3] = np.nan
    fractions = rng.random((2, 4, 5, 6)).astype(np.float32)
    cluster = rng.integers(-1, 3, (4, 5, 6)).astype(np.int16)
    with h5py.File(path, "w") as f:
        f["edge_ev"] = edge
        f["fractions"] = fractions
        f["fractions"].attrs["references"] = json.dumps(["NiO", "LiNiO2"])
        f["rfactor"] = fractions[0]
        f["cluster"] = cluster
    assert maps_in(path) == ("edge", "fraction:NiO", "fraction:LiNiO2", "rfactor", "cluster")
    np.testing.assert_array_equal(read_map(path, "edge"), edge)
    np.testing.assert_array_equal(read_map(path, "fraction:LiNiO2", 2), fractions[1, 2])
    np.testing.assert_array_equal(read_map(path, "fraction:NiO", 3, axis=2), fractions[0, :, :, 3])
    labels = read_map(path, "cluster")
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(labels), cluster < 0)
    np.testing.assert_array_equal(labels[cluster >= 0], cluster[cluster >= 0])
    with pytest.raises(InputError, match=r"map 'white_line' does not exist in this analysis; its maps: edge, "
                                         r"fraction:NiO, fraction:LiNiO2, rfactor, cluster$"):
        read_map(path, "white_line")
    with pytest.raises(InputError, match="has 4 slices along axis 0; no slice 4"):
        read_map(path, "edge", 4)


# ------------------------------------------------------------------ through the CLI
def _json(cli, *args):
    result = cli(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.output


def _count(cli, table: str) -> int:
    return _json(cli, "query", "sql", f"SELECT count(*) AS n FROM {table}")[0]["n"]


@pytest.fixture
def analysed(cli):
    """The golden rod40 stack ingested and analysed (edge map, f = 1, 2)."""
    case = EXPECTED["rod40"]
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    ingest = cli("txm", "ingest", GOLDEN / case["file"], "--sample", "rod", "--state", "charged",
                 "--voxel-nm", str(case["voxel_size_nm"]))
    assert ingest.exit_code == 0, ingest.output
    scan = ingest.stdout.strip().splitlines()[-1]
    p = case["parameters"]
    window = lambda w: f"{w[0]}:{w[1]}"  # noqa: E731
    result = cli("txm", "analyze", scan, "--pre", window(p["pre_edge_ev"]), "--post", window(p["post_edge_ev"]),
                 "--edge", window(p["edge_window_ev"]), "--min-jump", str(p["min_jump"]), "--snr", str(p["snr"]),
                 "--bin", "1,2")
    assert result.exit_code == 0, result.output
    return cli, int(scan)


def test_query_maps_columns_and_values_from_the_results_file(analysed):
    cli, scan = analysed
    rows = _json(cli, "query", "maps")
    assert rows and all(list(r) == MAPS_COLUMNS for r in rows)
    (analysis,) = _json(cli, "query", "analyses")
    path = analysis["results_path"]
    with h5py.File(path, "r") as f:
        labels = f["labels"][()]
    names = maps_in(path)
    assert names[0] == "edge" and "white_line" in names         # the Ni preset's white line by default
    assert sorted({r["map"] for r in rows}) == sorted(names)
    for name in names:
        values = read_map(path, name).astype(np.float64)
        by_particle = {r["particle"]: r for r in rows if r["map"] == name}
        assert set(by_particle) == {None, *range(1, int(labels.max()) + 1)}
        # the edge map's statistics are of the float64 map, the file holds float32
        tolerance = {"abs": 2e-3} if name == "edge" else {"rel": 1e-9, "abs": 1e-9}    # JSON: 10 decimals
        for particle, row in by_particle.items():
            v = values[(labels > 0 if particle is None else labels == particle) & np.isfinite(values)]
            assert row["scan_id"] == scan and row["sample"] == "rod" and row["state"] == "charged"
            assert row["n_valid"] == v.size > 0, name
            assert row["mean"] == pytest.approx(v.mean(), **tolerance), name
            assert row["std"] == pytest.approx(v.std(), **tolerance), name
            for column, q in (("p05", 5), ("p50", 50), ("p95", 95)):
                assert row[column] == pytest.approx(np.percentile(v, q), **tolerance), (name, column)
    scan_rows = _json(cli, "query", "maps", "--scan-level")
    assert [r["map"] for r in scan_rows] == sorted(names) and all(r["particle"] is None for r in scan_rows)
    only = _json(cli, "query", "maps", "--map", "white_line")
    assert only and {r["map"] for r in only} == {"white_line"}
    assert _json(cli, "query", "maps", "--map", "fraction:NiO") == []


def test_statistics_queries_say_map_and_gradient_unit(analysed):
    cli, _ = analysed
    grad = _json(cli, "query", "gradient", "--scan-level")
    assert [(r["map"], r["bin_factor"], r["gradient_unit"]) for r in grad] == [("edge", 1, "eV/nm"),
                                                                               ("edge", 2, "eV/nm")]
    assert grad == _json(cli, "query", "gradient", "--scan-level", "--map", "edge")
    assert {"mean_u", "gradient_unit"} <= set(grad[0]) and "mean_u_ev_per_nm" not in grad[0]
    sizes = _json(cli, "query", "vector-size", "--scan-level", "--bin", "1")
    assert {"mean_u", "median_u", "p90_u", "gradient_unit"} <= set(sizes[0])
    hist = _json(cli, "query", "vector-size-histogram", "--scan-level", "--bin", "1")
    assert {"u_lo", "u_hi", "gradient_unit"} <= set(hist[0])
    assert _json(cli, "query", "theta", "--map", "white_line") == []
    for table in ("gradient", "theta", "maps", "edge-histogram"):
        _one_line_error(cli("query", table, "--map", "edges"), "map 'edges' does not exist; maps: edge, white_line")
    usage = cli("query", "particles", "--map", "edge")
    assert usage.exit_code == 2 and "query particles does not filter by --map" in usage.output


def test_a_gradient_map_not_computed_or_unknown_is_refused_before_any_work(analysed):
    cli, scan = analysed
    before = _count(cli, "analyses")
    _one_line_error(cli("txm", "analyze", str(scan), "--white-line", "none", "--gradient-map", "edge,white_line"),
                    "map 'white_line' is not computed by this analysis; its maps: edge")
    _one_line_error(cli("txm", "analyze", str(scan), "--gradient-map", "fraction:NiO"),
                    "map 'fraction:NiO' is not computed by this analysis")
    _one_line_error(cli("txm", "analyze", str(scan), "--gradient-map", "edge,whiteline"),
                    "map 'whiteline' does not exist; maps: edge, white_line, white_line_height, fraction:NAME")
    _one_line_error(cli("txm", "analyze", str(scan), "--gradient-map", "cluster"),
                    "map 'cluster' holds labels: it has no gradient")
    assert _count(cli, "analyses") == before


# ------------------------------------------------------------------ migration 0006 with data
def test_migration_0006_upgrades_and_downgrades_statistics_with_data(db_url):
    from txmdb.db import migrate
    from txmdb.db.engine import make_engine

    engine = make_engine(db_url)
    migrate.upgrade(engine, "0005")
    with engine.begin() as conn:
        insert_raw_scan(conn, shape="[2,4,4,4]")
        for analysis, unit in ((1, "eV/nm"), (2, "eV/voxel")):
            conn.execute(sa.text(
                "INSERT INTO analyses (id, scan_id, status, parameters, txmdb_version, input_sha256, started_at, "
                "timings_s, gradient_unit) VALUES (:id, 1, 'done', '{}', 't', :sha, '2026-01-01', '{}', :unit)"),
                {"id": analysis, "sha": "a" * 64, "unit": unit})
            conn.execute(sa.text(
                "INSERT INTO gradient_summaries (analysis_id, bin_factor, n_vectors, mean_u_ev_per_nm) "
                "VALUES (:id, 1, 10, :u)"), {"id": analysis, "u": 0.25 * analysis})
            conn.execute(sa.text(
                "INSERT INTO vector_size_histograms (analysis_id, bin_factor, phi_lo, phi_hi, u_lo_ev_per_nm, "
                "u_hi_ev_per_nm, count) VALUES (:id, 1, 0, 10, 0.5, 0.75, 3)"), {"id": analysis})
            conn.execute(sa.text(
                "INSERT INTO theta_histograms (analysis_id, bin_factor, weighted, theta_lo, theta_hi, probability, "
                "reference) VALUES (:id, 1, false, 0, 5, 0.1, 0.1)"), {"id": analysis})
    migrate.upgrade(engine, "0006")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT analysis_id, map, mean_u, gradient_unit FROM gradient_summaries "
                                    "ORDER BY analysis_id")).all()
        assert [tuple(r) for r in rows] == [(1, "edge", 0.25, "eV/nm"), (2, "edge", 0.5, "eV/voxel")]
        rows = conn.execute(sa.text("SELECT map, u_lo, u_hi, gradient_unit FROM vector_size_histograms "
                                    "ORDER BY analysis_id")).all()
        assert [tuple(r) for r in rows] == [("edge", 0.5, 0.75, "eV/nm"), ("edge", 0.5, 0.75, "eV/voxel")]
        assert conn.execute(sa.text("SELECT DISTINCT map FROM theta_histograms")).scalars().all() == ["edge"]
        assert conn.execute(sa.text("SELECT count(*) FROM map_summaries")).scalar() == 0
        columns = {c["name"] for c in sa.inspect(conn).get_columns("vector_size_stats")}
        assert {"map", "mean_u", "median_u", "p90_u", "gradient_unit"} <= columns
        assert not any(c.endswith("_ev_per_nm") for c in columns)
    with engine.begin() as conn:   # a row of another map, which the older schema cannot hold
        conn.execute(sa.text("INSERT INTO gradient_summaries (analysis_id, map, bin_factor, n_vectors, mean_u, "
                             "gradient_unit) VALUES (1, 'white_line', 1, 5, 0.1, 'eV/nm')"))
    migrate.downgrade(engine, "0005")
    inspector = sa.inspect(engine)
    assert "map_summaries" not in inspector.get_table_names()
    columns = {c["name"] for c in inspector.get_columns("gradient_summaries")}
    assert "mean_u_ev_per_nm" in columns and not {"map", "mean_u", "gradient_unit"} & columns
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT analysis_id, mean_u_ev_per_nm FROM gradient_summaries "
                                    "ORDER BY analysis_id")).all()
        assert [tuple(r) for r in rows] == [(1, 0.25), (2, 0.5)]
        rows = conn.execute(sa.text("SELECT u_lo_ev_per_nm, u_hi_ev_per_nm FROM vector_size_histograms")).all()
        assert [tuple(r) for r in rows] == [(0.5, 0.75)] * 2
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()


# ------------------------------------------------------------------ the hash check runs beside the analysis
def test_a_file_changed_since_ingest_fails_the_analysis_and_records_no_statistics(cli, tmp_path):
    import shutil

    path = tmp_path / "changed.h5"
    shutil.copy(GOLDEN / EXPECTED["rod40"]["file"], path)
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    scan = cli("txm", "ingest", path, "--sample", "rod").stdout.strip().splitlines()[-1]
    with h5py.File(path, "r+") as f:
        data = next(f[k] for k in ("exchange/data", "img_xanes") if k in f)
        data[0, 0, 0, 0] += 1.0
    _one_line_error(cli("txm", "analyze", scan),
                    f"{path.resolve()}: the file changed since scan {scan} was ingested (SHA-256 differs)")
    (analysis,) = _json(cli, "query", "analyses")
    assert analysis["status"] == "failed" and "SHA-256 differs" in analysis["error"]
    assert analysis["results_path"] is None
    for table in ("gradient_summaries", "map_summaries", "particles"):
        assert _count(cli, table) == 0


@pytest.mark.parametrize("shape", [(40, 36, 30), (60, 50)])
def test_compiled_depth_map_equals_scipys_bit_for_bit(shape, monkeypatch):
    from scipy import ndimage as ndi

    from txmdb.analysis import particles

    rng = np.random.default_rng(2)
    valid = ndi.binary_dilation(rng.random(shape) > (0.9995 if len(shape) == 3 else 0.995), iterations=3)
    valid[(slice(0, 6),) * len(shape)] = True                 # a particle that fills its clipped box
    labels, n = particles.label_particles(valid, min_voxels=5)
    assert n > 3
    full = np.ones(shape[:-1] + (7,), np.int32)               # fills the field: depth from its faces
    compiled, compiled_full = particles.depth_map(labels, n), particles.depth_map(full, 1)
    monkeypatch.setattr(particles, "_compiled_edt", lambda: None)
    np.testing.assert_array_equal(compiled, particles.depth_map(labels, n))
    np.testing.assert_array_equal(compiled_full, particles.depth_map(full, 1))
    assert compiled_full.min() == 1 and compiled_full.max() > 1
    for lab in range(1, n + 1):                                 # the definition, particle by particle
        box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, size))
                    for s, size in zip(ndi.find_objects(labels)[lab - 1], shape))
        inside = labels[box] == lab
        if inside.all():
            continue
        expected = ndi.distance_transform_edt(inside).astype(np.float32)
        np.testing.assert_allclose(compiled[box][inside], expected[inside], rtol=1e-6)


def test_chunked_stack_is_read_through_a_cache_that_holds_its_chunks(tmp_path):
    from txmdb.io.hdf5 import _stack_dataset, open_stack, read_slab
    from txmdb.synthetic.tomogram import write_stack

    rng = np.random.default_rng(4)
    energies = np.linspace(8250.0, 8450.0, 40)
    stack = rng.random((40, 20, 70, 66)).astype(np.float32)
    path = tmp_path / "chunked.h5"
    write_stack(path, stack, energies, chunks=(40, 8, 32, 32))     # 1.3 MB chunks: above the 1 MB default
    info = open_stack(path)
    with h5py.File(path, "r") as f:
        nslots, nbytes, w0 = _stack_dataset(f, info).id.get_access_plist().get_chunk_cache()
        assert nbytes == 2 * 40 * 8 * 32 * 32 * 4 and w0 == 1.0
        for start, stop in ((0, 8), (3, 17), (16, 20)):
            np.testing.assert_array_equal(read_slab(info, start, stop, h5file=f), stack[:, start:stop])


def test_gradient_statistics_of_white_line_and_fraction_maps_through_the_cli(cli, tmp_path):
    """--gradient-map on the maps of a real analysis (a ball whose white line moves from centre to
    surface): the rows against the plain reference on the results file's own maps (the
    statistics of a map other than the edge are of its stored values)."""
    from txmdb.synthetic.tomogram import energy_grid, white_line_stack, write_stack

    energies = energy_grid(60)
    stack, _ = white_line_stack((26, 26, 26), energies, noise=0.002, seed=3)
    path = tmp_path / "ball.h5"
    write_stack(path, stack, energies, voxel_size_nm=25.0)
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    for name in ("NiO", "LiNiO2"):
        result = cli("xas", "ingest", DATA / "xas" / f"ref_{name}.txt", "--reference", name, "--edge", "Ni-K")
        assert result.exit_code == 0, result.output
    scan = cli("txm", "ingest", path, "--sample", "rod").stdout.strip().splitlines()[-1]
    result = cli("txm", "analyze", scan, "--bin", "1,2", "--lcf", "NiO,LiNiO2",
                 "--gradient-map", "edge,white_line,fraction:NiO")
    assert result.exit_code == 0, result.output
    rows = _json(cli, "query", "gradient", "--scan-level", "--map", "white_line", "--map", "fraction:NiO")
    assert [(r["map"], r["bin_factor"], r["gradient_unit"]) for r in rows] == [
        ("fraction:NiO", 1, "1/nm"), ("fraction:NiO", 2, "1/nm"), ("white_line", 1, "eV/nm"), ("white_line", 2, "eV/nm")]
    (analysis,) = _json(cli, "query", "analyses")
    with h5py.File(analysis["results_path"], "r") as f:
        labels = f["labels"][()]
    for row in rows:
        values = read_map(analysis["results_path"], row["map"])
        f = row["bin_factor"]
        expected = _reference_summary(_reference_vectors(values, labels, f, f * 25.0), 3)
        assert row["n_vectors"] == expected["n_vectors"] > 100, row
        for key in ("mean_u", "tangential_excess", "tangential_excess_weighted"):
            assert row[key] == pytest.approx(expected[key], rel=1e-8, abs=1e-9), (row["map"], f, key)  # JSON: 10 dp
    # the white line moves outwards with the radius: its gradient is radial, not tangential
    white = next(r for r in rows if r["map"] == "white_line" and r["bin_factor"] == 1)
    assert white["tangential_excess"] < 0.5
    assert len(_json(cli, "query", "theta", "--scan-level", "--map", "fraction:NiO")) == 2 * 2 * 36
    assert _json(cli, "query", "theta", "--map", "fraction:LiNiO2") == []     # not asked for


@pytest.mark.parametrize("shape", [(30, 40, 50), (60, 70)])
def test_compiled_label_centroids_equal_the_numpy_path(shape, monkeypatch):
    from txmdb.analysis import particles

    labels = np.random.default_rng(1).integers(0, 6, shape).astype(np.int32)
    labels[labels == 3] = 0                                     # a label without voxels
    compiled = particles.label_centroids(labels, 5)
    monkeypatch.setattr(particles, "_compiled_sums", lambda: None)
    plain = particles.label_centroids(labels, 5)
    np.testing.assert_array_equal(compiled[0], plain[0])
    np.testing.assert_array_equal(compiled[1], plain[1])        # NaN for label 3 in both
    assert compiled[0][3] == 0 and np.isnan(compiled[1][3]).all()
    idx = np.argwhere(labels == 2)
    np.testing.assert_allclose(compiled[1][2], idx.mean(axis=0), rtol=1e-15)
