"""Reference spectra, white-line and LCF maps through the CLI, on SQLite and PostgreSQL.

``xas ingest --reference``, ``txm analyze --white-line/--lcf`` and their results file; bad
input (unknown or repeated reference, a reference that does not cover the fit window, a
white-line window with fewer than 4 energies, identical or linearly dependent references)
is one line, exit status 1, and nothing stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.interpolate import make_interp_spline

from tests.conftest import DATA
from txmdb.synthetic.tomogram import energy_grid, write_stack

XAS = DATA / "xas"
E = energy_grid(60)
PRE, POST = 8320.0, 8370.0          # the Ni preset's pre-edge end and post-edge start
SHAPE = (10, 14, 14)


def _rows(cli, sql: str) -> list[dict]:
    result = cli("query", "sql", sql, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _count(cli, table: str) -> int:
    return _rows(cli, f"SELECT count(*) AS n FROM {table}")[0]["n"]


def _store_files(cli) -> list[Path]:
    store = Path(cli.store)
    return sorted(p for p in store.rglob("*") if p.is_file()) if store.exists() else []


def _read(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """(energy eV, mu) of a two-column keV reference file of the test data."""
    table = np.loadtxt(file)
    return table[:, 0] * 1000.0, table[:, 1]


def _normalised(energy, mu) -> np.ndarray:
    """A reference on the stack grid (not-a-knot spline), normalised with np.polyfit lines."""
    on_grid = make_interp_spline(energy, mu, k=3)(E)
    pre, post = E <= PRE, E >= POST
    line_pre = np.polyval(np.polyfit(E[pre], on_grid[pre], 1), E)
    line_post = np.polyval(np.polyfit(E[post], on_grid[post], 1), E)
    return (on_grid - line_pre) / (line_post - line_pre)


def _write_reference(path: Path, energy_ev, mu) -> Path:
    np.savetxt(path, np.column_stack([np.asarray(energy_ev) / 1000.0, mu]), fmt="%.6f")
    return path


@pytest.fixture
def lab(cli, tmp_path):
    """A catalogue with the two measured Ni references and a scan mixing them.

    The scan is a ball whose voxels hold ``f·NiO + (1 − f)·LiNiO2`` (the references
    normalised on the stack's energies), with ``f`` rising along x; outside the ball the
    absorbance is flat (no edge, masked).
    """
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "mix").exit_code == 0
    for name in ("NiO", "LiNiO2"):
        result = cli("xas", "ingest", XAS / f"ref_{name}.txt", "--reference", name, "--edge", "Ni-K")
        assert result.exit_code == 0, result.output
    z, y, x = np.indices(SHAPE)
    inside = (z - 4.5) ** 2 + (y - 6.5) ** 2 + (x - 6.5) ** 2 < 5.5 ** 2
    f = x / (SHAPE[2] - 1.0)
    norm = {name: _normalised(*_read(XAS / f"ref_{name}.txt")) for name in ("NiO", "LiNiO2")}
    mix = f[None] * norm["NiO"][:, None, None, None] + (1 - f[None]) * norm["LiNiO2"][:, None, None, None]
    mu = np.where(inside[None], 0.2 + 1.3 * mix, 0.05).astype(np.float32)
    stack = tmp_path / "mix.h5"
    write_stack(stack, mu, E, voxel_size_nm=25.0)
    result = cli("txm", "ingest", stack, "--sample", "mix")
    assert result.exit_code == 0, result.output
    cli.scan = result.stdout.strip().splitlines()[-1]
    cli.stack, cli.mu, cli.inside, cli.fraction = stack, mu, inside, np.where(inside, f, np.nan)
    cli.tmp = tmp_path
    return cli


def _analyze(lab, *args):
    return lab("txm", "analyze", lab.scan, "--min-particle-voxels", "10", "--bin", "1", *args)


def _results(lab, analysis_id: int) -> Path:
    row = _rows(lab, f"SELECT results_path FROM analyses WHERE id = {analysis_id}")[0]
    return Path(row["results_path"])


# ----------------------------------------------------------------------------- references
def test_reference_ingest_records_a_spectrum_of_no_sample(cli, tmp_path):
    assert cli("init").exit_code == 0
    file = XAS / "ref_NiO.txt"
    first = cli("xas", "ingest", file, "--reference", "NiO", "--edge", "Ni-K")
    assert first.exit_code == 0, first.output
    lines = first.stdout.strip().splitlines()
    assert lines[0].startswith(f"ingested: {file} — reference NiO, edge 83")
    assert lines[0].endswith("eV (derivative)")
    rows = _rows(cli, "SELECT id, sample_id, reference_name, edge, spectrum_path FROM xas_measurements")
    assert rows == [{"id": int(lines[1]), "sample_id": None, "reference_name": "NiO", "edge": "Ni-K",
                     "spectrum_path": rows[0]["spectrum_path"]}]
    assert Path(rows[0]["spectrum_path"]).is_file()
    # the raw mu is kept: the stored points are the file's, in eV
    import pandas as pd

    stored = pd.read_parquet(rows[0]["spectrum_path"])
    energy, mu = _read(file)
    np.testing.assert_allclose(stored["energy_ev"], energy)
    np.testing.assert_allclose(stored["mu"], mu)

    again = cli("xas", "ingest", file, "--reference", "NiO", "--edge", "Ni-K")
    assert again.exit_code == 0
    assert again.stdout.strip().splitlines() == [lines[0].replace("ingested:", "already in the catalogue:"),
                                                 lines[1]]
    files = _store_files(cli)
    taken = cli("xas", "ingest", XAS / "ref_LiNiO2.txt", "--reference", "NiO", "--edge", "Ni-K")
    assert taken.exit_code == 1
    assert taken.output == (f"error: reference 'NiO' exists already (XAS measurement {lines[1]}, from {file}); "
                            f"{XAS / 'ref_LiNiO2.txt'} is another file\n")
    neither = cli("xas", "ingest", XAS / "ref_LiNiO2.txt", "--edge", "Ni-K")
    assert neither.exit_code == 1
    assert neither.output == ("error: --sample, --reference: a spectrum is a sample's or a named reference: "
                              "give one of the two\n")
    comma = cli("xas", "ingest", XAS / "ref_LiNiO2.txt", "--reference", "Ni,O", "--edge", "Ni-K")
    assert comma.exit_code == 1
    assert comma.output == ("error: --reference: reference name 'Ni,O' must be at most 100 characters without "
                            "commas or control characters\n")
    assert _count(cli, "xas_measurements") == 1
    assert _store_files(cli) == files


def test_migration_0006_references_down_and_up_with_data(db_url):
    """0006 makes sample_id nullable beside a unique reference_name; its downgrade removes the
    reference rows (the older schema has no place for them) and keeps the samples' spectra."""
    import sqlalchemy as sa

    from txmdb.db import migrate
    from txmdb.db.engine import make_engine

    engine = make_engine(db_url)
    migrate.upgrade(engine, "0006")
    def row(f: str) -> str:
        return f"'Ni-K', 'transmission', 100, '{{}}', 'x', 'x', '/data/{f}', 1, '{f}', CURRENT_TIMESTAMP"

    columns = ("edge, mode, n_points, parameters, spectrum_path, spectrum_sha256, file_path, file_size_bytes, "
               "file_sha256, ingested_at")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO samples (id, name, meta, created_at) VALUES (1, 'S', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(sa.text(f"INSERT INTO xas_measurements (sample_id, {columns}) VALUES (1, {row('a')})"))
        conn.execute(sa.text(f"INSERT INTO xas_measurements (reference_name, {columns}) "
                             f"VALUES ('NiO', {row('b')})"))
    for bad in (f"(sample_id, reference_name, {columns}) VALUES (1, 'X', {row('c')})",   # both
                f"({columns}) VALUES ({row('d')})",                                       # neither
                f"(reference_name, {columns}) VALUES ('NiO', {row('e')})"):               # name taken
        with pytest.raises(sa.exc.IntegrityError):
            with engine.begin() as conn:
                conn.execute(sa.text(f"INSERT INTO xas_measurements {bad}"))
    migrate.downgrade(engine, "0005")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT sample_id, file_sha256 FROM xas_measurements")).all() == [(1, "a")]
    assert "reference_name" not in {c["name"] for c in sa.inspect(engine).get_columns("xas_measurements")}
    migrate.upgrade(engine, "0006")
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO xas_measurements (reference_name, {columns}) "
                             f"VALUES ('NiO', {row('b')})"))
        assert conn.execute(sa.text("SELECT count(*) FROM xas_measurements")).scalar() == 2
    engine.dispose()


# ----------------------------------------------------------------------------- analysis
def test_analyze_with_lcf_writes_fraction_rfactor_and_white_line_maps(lab):
    result = _analyze(lab, "--lcf", "NiO,LiNiO2")
    assert result.exit_code == 0, result.output
    analysis = _rows(lab, "SELECT id, parameters FROM analyses")[0]
    parameters = json.loads(analysis["parameters"]) if isinstance(analysis["parameters"], str) \
        else analysis["parameters"]
    ids = {r["reference_name"]: r["id"] for r in _rows(lab, "SELECT id, reference_name FROM xas_measurements")}
    assert parameters["white_line"] == [8345.0, 8358.0]
    assert parameters["lcf"] == {"references": [{"name": "NiO", "measurement_id": ids["NiO"]},
                                                {"name": "LiNiO2", "measurement_id": ids["LiNiO2"]}],
                                 "window": [8325.0, 8375.0]}
    with h5py.File(_results(lab, analysis["id"]), "r") as out:
        assert json.loads(out["fractions"].attrs["references"]) == ["NiO", "LiNiO2"]
        fractions = out["fractions"][...]
        rfactor, white_line, height = out["rfactor"][...], out["white_line_ev"][...], out["white_line_height"][...]
        valid = out["valid"][...]
        for name in ("fractions", "rfactor", "white_line_ev", "white_line_height"):
            assert out[name].dtype == np.float32, name
    assert fractions.shape == (2, *SHAPE)
    np.testing.assert_array_equal(valid, lab.inside)
    for values in (fractions[0], fractions[1], rfactor, white_line, height):
        assert np.isnan(values[~valid]).all()
        assert np.isfinite(values[valid]).all()
    # the references themselves, measured: fractions of the mixture within 1 %
    np.testing.assert_allclose(fractions[0][valid], lab.fraction[valid], atol=0.01)
    np.testing.assert_allclose(fractions[0] + fractions[1], np.where(valid, 1.0, np.nan), atol=1e-6)
    assert rfactor[valid].max() < 1e-3
    assert np.all((white_line[valid] > 8345.0) & (white_line[valid] < 8358.0))

    # the same numbers as the kernel on the stack (float32 storage)
    from txmdb.analysis.edge import edge_parameters
    from txmdb.analysis.spectral import SpectralKernel

    refs = {name: _read(XAS / f"ref_{name}.txt") for name in ("NiO", "LiNiO2")}
    maps = SpectralKernel(E, edge_parameters("Ni"), white_line=(8345.0, 8358.0), references=refs,
                          lcf_window=(8325.0, 8375.0))(lab.mu)
    np.testing.assert_array_equal(fractions[0], maps["fraction:NiO"].astype(np.float32))
    np.testing.assert_array_equal(white_line, maps["white_line"].astype(np.float32))
    np.testing.assert_array_equal(rfactor, maps["rfactor"].astype(np.float32))

    summaries = json.loads(lab("query", "maps", "--scan-level", "--format", "json").stdout)
    by_map = {row["map"]: row for row in summaries}
    assert set(by_map) == {"edge", "white_line", "white_line_height", "fraction:NiO", "fraction:LiNiO2", "rfactor"}
    assert by_map["fraction:NiO"]["n_valid"] == int(valid.sum())
    assert by_map["fraction:NiO"]["mean"] == pytest.approx(float(np.mean(fractions[0][valid])), abs=1e-6)


def test_white_line_window_option_and_none(lab):
    assert _analyze(lab, "--white-line", "none").exit_code == 0
    assert _analyze(lab, "--white-line", "8340:8360").exit_code == 0
    rows = _rows(lab, "SELECT id, parameters FROM analyses ORDER BY id")
    params = [json.loads(r["parameters"]) if isinstance(r["parameters"], str) else r["parameters"] for r in rows]
    assert [p["white_line"] for p in params] == [None, [8340.0, 8360.0]]
    assert [p["lcf"] for p in params] == [None, None]
    with h5py.File(_results(lab, rows[0]["id"]), "r") as out:
        assert not {"white_line_ev", "white_line_height", "fractions", "rfactor"} & set(out)
    with h5py.File(_results(lab, rows[1]["id"]), "r") as out:
        assert {"white_line_ev", "white_line_height"} <= set(out)
        assert not {"fractions", "rfactor"} & set(out)
        found = out["white_line_ev"][...][out["valid"][...]]
    assert np.all((found >= 8340.0) & (found <= 8360.0))


# ----------------------------------------------------------------------------- bad input
def _refused(lab, result, line: str) -> None:
    """One line, exit status 1, no analysis row and no analysis file."""
    assert result.exit_code == 1, result.output
    assert result.output == f"error: {line}\n"
    assert _count(lab, "analyses") == 0
    assert not [p for p in _store_files(lab) if "analyses" in p.parts]


def _extra_reference(lab, name: str, energy, mu) -> None:
    file = _write_reference(lab.tmp / f"{name}.txt", energy, mu)
    result = lab("xas", "ingest", file, "--reference", name, "--edge", "Ni-K")
    assert result.exit_code == 0, result.output


def test_unknown_reference_is_refused(lab):
    _refused(lab, _analyze(lab, "--lcf", "NiO,Ni3O4"),
             "no reference spectrum named 'Ni3O4'; record one with "
             "'txmdb xas ingest FILE --reference Ni3O4 --edge Ni-K'")


def test_reference_listed_twice_is_refused(lab):
    _refused(lab, _analyze(lab, "--lcf", "NiO,NiO"), "--lcf: reference 'NiO' is listed twice")


def test_reference_not_covering_the_fit_window_is_refused(lab):
    energy, mu = _read(XAS / "ref_NiO.txt")
    short = energy <= 8400.0
    _extra_reference(lab, "NiO_short", energy[short], mu[short])
    _refused(lab, _analyze(lab, "--lcf", "NiO_short,LiNiO2", "--lcf-window", "8325:8410"),
             f"{lab.stack}: reference NiO_short covers 8200..8400 eV, not the fit window energies 8325..8410 eV "
             "of the stack")


def test_white_line_window_with_three_energies_is_refused(lab):
    assert len(E[(E >= 8345.0) & (E <= 8348.0)]) == 3
    _refused(lab, _analyze(lab, "--white-line", "8345:8348"),
             f"{lab.stack}: white-line window 8345..8348 eV holds 3 energies of the grid 8280..8420 eV; "
             "the cubic needs at least 4")


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (2.5, 0.3)], ids=["identical", "proportional"])
def test_dependent_references_are_refused(lab, scale, offset):
    energy, mu = _read(XAS / "ref_NiO.txt")
    _extra_reference(lab, "NiO_twin", energy, scale * mu + offset)
    _refused(lab, _analyze(lab, "--lcf", "NiO,NiO_twin"),
             f"{lab.stack}: reference NiO_twin is linearly dependent on NiO over the fit window 8325..8375 eV "
             "(identical or proportional spectra cannot be told apart)")


def test_lcf_window_without_references_is_refused(lab):
    _refused(lab, _analyze(lab, "--lcf-window", "8325:8375"),
             "--lcf-window is the fit window of --lcf NAME,NAME: give the references too")


def test_dask_slab_path_gives_the_same_maps(lab):
    """One scan on a Dask cluster is split into slabs; the spectral maps travel with the edge tasks."""
    from dask.distributed import LocalCluster

    assert _analyze(lab, "--lcf", "NiO,LiNiO2").exit_code == 0
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = _analyze(lab, "--lcf", "NiO,LiNiO2", "--scheduler", cluster.scheduler_address)
    assert result.exit_code == 0, result.output
    serial, split = (r["id"] for r in _rows(lab, "SELECT id FROM analyses ORDER BY id"))
    with h5py.File(_results(lab, serial), "r") as f, h5py.File(_results(lab, split), "r") as g:
        for name in ("white_line_ev", "white_line_height", "fractions", "rfactor"):
            np.testing.assert_array_equal(f[name][...], g[name][...])
        assert g["fractions"].attrs["references"] == f["fractions"].attrs["references"]
