"""Registered analysis (issue 10, DESIGN §10): registrations applied out of core while the stack
is read, recorded with the analysis, exported in the TXM_Sandbox layout, drawn in the report.

Stacks come from :mod:`txmdb.synthetic.drift`: every energy rendered with the particle moved by
an exactly known sub-voxel shift, so the truth edge map of the reference frame is exact.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage as ndi

from txmdb.analysis.edge import edge_parameters
from txmdb.io.hdf5 import open_stack, read_slab
from txmdb.pipeline import AppliedRegistration, edge_slabs
from txmdb.synthetic.drift import make_drifted, write_drifted_stack
from txmdb.synthetic.tomogram import write_stack

from tests.test_distributed import _tables as catalog_tables

PARAMS = edge_parameters("Ni")
LAYOUTS = ("dxchange", "txm-sandbox", "fxi")
SANDBOX = "/registration_results/reg_results"


def _phantom(shape, *, seed=3, n_energies=40, max_drift=6.0, **kwargs):
    return make_drifted(shape, n_energies=n_energies, max_drift=max_drift, seed=seed, **kwargs)


def _write(path: Path, phantom, layout="dxchange") -> Path:
    write_drifted_stack(path, phantom, layout=layout, voxel_size_nm=30.0)
    return path


def _edge_map(info, registration=None, slab_size=None) -> np.ndarray:
    out = np.full(info.spatial_shape, np.nan)
    for start, stop, result in edge_slabs(info, PARAMS, slab_size=slab_size or info.n_slices,
                                          registration=registration):
        out[start:stop] = result.edge_ev
    return out


def _rms(edge: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """rms error (eV) over the truth's particle voxels the map has, and the fraction it has."""
    have = mask & np.isfinite(edge)
    return float(np.sqrt(np.mean((edge[have] - truth[have]) ** 2))), have.sum() / mask.sum()


def _hand_box(shifts: np.ndarray, shape) -> tuple[list[int], list[int]]:
    """Voxels x with 0 <= x + s_e <= N - 1 at every energy, per axis [lo, hi) (written out here)."""
    lo = [max(0, max(math.ceil(-s) for s in shifts[:, k])) for k in range(len(shape))]
    hi = [min(n, min(math.floor(n - 1 - s) + 1 for s in shifts[:, k])) for k, n in enumerate(shape)]
    return lo, hi


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("ndim", [2, 3])
def test_registered_read_is_the_shifted_absorbance_and_masks_the_field_of_view(tmp_path, ndim):
    """Against scipy's linear shift of every energy; NaN exactly where some energy's source is outside."""
    rng = np.random.default_rng(0)
    shape = (12, 14, 16) if ndim == 3 else (20, 22)
    stack = rng.uniform(0.5, 1.5, size=(5, *shape)).astype(np.float32)
    shifts = np.array([[0.0] * ndim, [1.25, -2.5, 3.75][:ndim], [-0.5, 0.3, -1.0][:ndim],
                       [2.0, 0.0, -3.0][:ndim], [0.75, 1.5, 0.25][:ndim]])
    write_stack(tmp_path / "s.h5", stack, np.linspace(8300, 8400, 5))
    info = open_stack(tmp_path / "s.h5")
    got = read_slab(info, 0, shape[0], shifts=shifts)
    lo, hi = _hand_box(shifts, shape)
    inside = tuple(slice(a, b) for a, b in zip(lo, hi))
    mask = np.zeros(shape, bool)
    mask[inside] = True
    assert np.isnan(got[:, ~mask]).all(), "outside the box: NaN at every energy"
    assert np.isfinite(got[:, mask]).all()
    for e in range(5):
        expected = ndi.shift(stack[e].astype(np.float64), -shifts[e], order=1, mode="nearest")
        np.testing.assert_allclose(got[e][inside], expected[inside], rtol=0, atol=2e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(20, 32, 32), (48, 48)], ids=["3d", "2d"])
def test_slab_size_does_not_change_the_registered_edge_map(tmp_path, layout, shape):
    ph = _phantom(shape, n_energies=30, max_drift=4.0, seed=1, noise=0.01)
    info = open_stack(_write(tmp_path / "d.h5", ph, layout))
    registration = AppliedRegistration(ph.shifts)
    whole = _edge_map(info, registration)
    for slab in (1, 3, 7):
        np.testing.assert_array_equal(_edge_map(info, registration, slab), whole)
    assert np.isfinite(whole).sum() > 0.9 * ph.edge_truth()[1].sum()
    if layout == "fxi":
        # raw counts: absorbance first (lab frame, with its flats), then the shift — the same
        # maps as the shifted absorbance stack, to float32 rounding
        plain = _edge_map(open_stack(_write(tmp_path / "a.h5", ph, "dxchange")), registration)
        np.testing.assert_array_equal(np.isfinite(plain), np.isfinite(whole))
        np.testing.assert_allclose(whole, plain, rtol=0, atol=2e-3)


@pytest.mark.parametrize("shape", [(48, 48, 48), (96, 96)], ids=["3d", "2d"])
def test_registered_analysis_recovers_the_truth(tmp_path, shape):
    """±6-voxel drift: unregistered, every spectrum mixes neighbours; registered, close to undrifted."""
    ph = _phantom(shape)
    truth, mask = ph.edge_truth()
    still = _phantom(shape)                       # the same particles, never moved
    still.shifts[:] = 0.0
    drifted = open_stack(_write(tmp_path / "d.h5", ph))
    undrifted = _rms(_edge_map(open_stack(_write(tmp_path / "u.h5", still))), truth, mask)
    unregistered = _rms(_edge_map(drifted), truth, mask)
    registered = _rms(_edge_map(drifted, AppliedRegistration(ph.shifts)), truth, mask)
    assert undrifted[0] < 0.12 and unregistered[0] > 5.0
    assert registered[0] < 0.2 and registered[0] < undrifted[0] + 0.1, (undrifted, registered)
    # the voxels the undrifted map has (the edge-blurred surface loses a few), less the drifted border
    assert registered[1] > undrifted[1] - 0.02 and unregistered[1] < registered[1] - 0.1, (undrifted, registered)


def test_a_registration_that_does_not_fit_the_stack_is_refused(tmp_path):
    from txmdb.pipeline import AnalysisOptions, analyze_stack

    ph = _phantom((40, 40), n_energies=12)
    info = open_stack(_write(tmp_path / "d.h5", ph))
    for bad in (ph.shifts[:-1], ph.shifts[:, :1], np.where(ph.shifts == 0, np.nan, ph.shifts)):
        with pytest.raises(ValueError, match="registration"):
            analyze_stack(info, AnalysisOptions(params=PARAMS, registration=AppliedRegistration(bad)),
                          results_path=tmp_path / "r.h5")
    assert not (tmp_path / "r.h5").exists()
    with pytest.raises(ValueError, match="interpolation order"):
        AppliedRegistration(ph.shifts, order=2)


# --------------------------------------------------------------------------- catalogue and CLI


def _json(cli, *args):
    result = cli(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _last_line(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr


def _tables(url: str, store: Path, analysis_id: int) -> dict:
    """Every statistics table of an analysis as sorted rows (ids stripped)."""
    from txmdb.catalog import open_catalog

    catalog = open_catalog(url, store)
    try:
        return catalog_tables(catalog, analysis_id)
    finally:
        catalog.engine.dispose()


def _results_edge(row: dict) -> np.ndarray:
    with h5py.File(row["results_path"], "r") as f:
        return f["edge_ev"][...].astype(np.float64)


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    return cli


@pytest.mark.parametrize("layout, shape", [("dxchange", (40, 44, 44)), ("fxi", (96, 96)), ("txm-sandbox", (96, 96))],
                         ids=["dxchange-3d", "fxi-2d", "sandbox-2d"])
def test_register_analyze_export_round_trip(lab, tmp_path, layout, shape):
    ph = _phantom(shape, noise=0.005)
    truth, mask = ph.edge_truth()
    source = _write(tmp_path / f"drift-{layout}.h5", ph, layout)
    scan = _last_line(lab("txm", "ingest", source, "--sample", "S"))
    # the phantom's reference energy: the registered frame is the truth's
    reference = f"{ph.energies_ev[ph.reference_index]:.6f}"
    registration = _last_line(lab("txm", "register", scan, "--reference-energy", reference))

    registered = lab("txm", "analyze", scan, "--bin", "1,2")
    assert f"analysis 1 done (registration {registration}) — " in _last_line(registered)
    plain = lab("txm", "analyze", scan, "--bin", "1,2", "--registration", "none")
    assert "analysis 2 done — " in _last_line(plain)
    rows = _json(lab, "query", "analyses")
    assert [r["registration_id"] for r in rows] == [int(registration), None]
    params = _json(lab, "query", "sql", "SELECT parameters FROM analyses ORDER BY id")
    params = [json.loads(p["parameters"]) if isinstance(p["parameters"], str) else p["parameters"] for p in params]
    assert params[0]["registration"] == {"registration_id": int(registration), "interpolation": "linear"}
    assert params[1]["registration"] is None
    # the estimated shifts, applied: far closer to the truth than the stack as it is
    good, covered = _rms(_results_edge(rows[0]), truth, mask)
    bad, _ = _rms(_results_edge(rows[1]), truth, mask)
    assert good < 0.3 and bad > 5 * good and covered > 0.93, (good, bad, covered)
    with h5py.File(rows[0]["results_path"], "r") as f:
        np.testing.assert_allclose(f["registration_shifts"][...], ph.shifts, atol=0.2)

    out = tmp_path / "out" / "registered.h5"
    out.parent.mkdir()
    exported = lab("txm", "export", scan, "-o", out, "--registered")
    assert _last_line(exported) == f"scan {scan}: stack (registered by registration {registration}) written to {out}"
    assert [p.name for p in out.parent.iterdir()] == ["registered.h5"], "no temporary left"
    work = np.float64 if layout == "fxi" else np.float32     # raw counts: absorbance in float64
    with h5py.File(out, "r") as f:
        data = f[f"{SANDBOX}/registered_xanes{len(shape)}D"]
        assert data.shape == (len(ph.energies_ev), *shape) and data.dtype == work
        assert data.attrs["voxel_size_nm"] == 30.0 and data.attrs["txmdb_registration_id"] == int(registration)
        np.testing.assert_allclose(f[f"{SANDBOX}/eng_list"][...], ph.energies_ev / 1000, rtol=1e-15)

    # the export, analysed as it is, gives the registered analysis of the original
    copy = _last_line(lab("txm", "ingest", out, "--sample", "S"))
    assert copy != scan
    again = lab("txm", "analyze", copy, "--bin", "1,2", "--registration", "none")
    assert "analysis 3 done — " in _last_line(again)
    rows = _json(lab, "query", "analyses")
    for key in ("n_valid_voxels", "n_particles", "mean_edge_ev", "std_edge_ev"):
        assert rows[2][key] == rows[0][key], key
    assert _tables(lab.url, lab.store, 3) == _tables(lab.url, lab.store, 1)
    np.testing.assert_array_equal(_results_edge(rows[2]), _results_edge(rows[0]))


def test_registration_choice_show_query_and_report(lab, tmp_path):
    first = _last_line(lab("txm", "ingest", _write(tmp_path / "a.h5", _phantom((64, 64), seed=5)), "--sample", "S"))
    other = _last_line(lab("txm", "ingest", _write(tmp_path / "b.h5", _phantom((64, 64), seed=6)), "--sample", "S"))
    reg_1 = _last_line(lab("txm", "register", first))
    count = lambda: _json(lab, "query", "sql", "SELECT count(*) AS n FROM analyses")[0]["n"]  # noqa: E731

    _one_line_error(lab("txm", "analyze", other, "--registration", reg_1),
                    f"--registration: registration {reg_1} belongs to scan {first}, not to scan {other}")
    # refused before the first scan is analysed
    _one_line_error(lab("txm", "analyze", first, other, "--registration", reg_1), "belongs to scan")
    _one_line_error(lab("txm", "analyze", first, "--registration", "abc"),
                    "--registration 'abc': expected a registration id or none")
    _one_line_error(lab("txm", "analyze", first, "--registration", "99"), "no registration with id 99")
    assert count() == 0

    # the default follows the newest registration; an explicit id picks an older one
    reg_2 = _last_line(lab("txm", "register", first, "--reference-energy", "8300"))
    assert reg_2 != reg_1
    assert f"(registration {reg_2})" in _last_line(lab("txm", "analyze", first, "--bin", "1"))
    assert f"(registration {reg_1})" in _last_line(lab("txm", "analyze", first, "--bin", "1", "--registration", reg_1))
    assert "(registration" not in _last_line(lab("txm", "analyze", other, "--bin", "1"))
    assert [r["registration_id"] for r in _json(lab, "query", "analyses")] == [int(reg_2), int(reg_1), None]
    scans = {str(r["scan_id"]): r["registration_id"] for r in _json(lab, "query", "scans")}
    assert scans == {first: int(reg_1), other: None}

    shown = lab("txm", "show", first)
    assert shown.exit_code == 0, shown.output
    header = shown.stdout.split("analyses:")[1].strip().splitlines()[0].split()
    assert header[:3] == ["analysis_id", "status", "registration_id"]

    from txmdb.catalog import open_catalog
    from txmdb.report import build_report

    catalog = open_catalog(lab.url, lab.store)
    try:
        page = build_report(catalog, ["S"], output=tmp_path / "report.html", png_dir=tmp_path / "png").read_text()
    finally:
        catalog.engine.dispose()
    assert 'id="fig-registration_shifts"' in page
    alt = page.split('id="fig-registration_shifts"')[1].split('alt="')[1].split('"')[0]
    assert alt.endswith("Axes: energy (eV); shift along y (voxels); shift along x (voxels).")
    assert (tmp_path / "png" / "registration_shifts.png").read_bytes()[:4] == b"\x89PNG"


def test_export_refuses_bad_destinations_in_one_line(lab, tmp_path):
    source = _write(tmp_path / "d.h5", _phantom((40, 40), n_energies=12))
    scan = _last_line(lab("txm", "ingest", source, "--sample", "S"))
    before = sorted(tmp_path.iterdir())
    _one_line_error(lab("txm", "export", scan, "-o", tmp_path), "is a folder")
    _one_line_error(lab("txm", "export", scan, "-o", tmp_path / "no" / "x.h5"), "does not exist")
    _one_line_error(lab("txm", "export", scan, "-o", source), f"is the file of TXM scan {scan}")
    _one_line_error(lab("txm", "export", scan, "-o", "/dev/null"), "is not a regular file")
    _one_line_error(lab("txm", "export", scan, "-o", tmp_path / "x.h5", "--registered"),
                    f"scan {scan} has no registration; run 'txmdb txm register {scan}' first")
    _one_line_error(lab("txm", "export", "99", "-o", tmp_path / "x.h5"), "no TXM scan with id 99")
    assert sorted(tmp_path.iterdir()) == before
    # as it is: the absorbance, energies ascending
    assert lab("txm", "export", scan, "-o", tmp_path / "plain.h5").exit_code == 0
    with h5py.File(tmp_path / "plain.h5", "r") as f, h5py.File(source, "r") as g:
        np.testing.assert_array_equal(f[f"{SANDBOX}/registered_xanes2D"][...], g["/exchange/data"][...])


# --------------------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


def test_dask_workers_read_registered_slabs(catalog, cluster, tmp_path, monkeypatch):
    """Split into slabs or whole on a worker: the registration travels with the tasks."""
    from txmdb.catalog import distributed
    from txmdb.catalog.registration import register_scan
    from txmdb.catalog.samples import add_sample
    from txmdb.catalog.txm import analyze_scan, ingest_scan
    from txmdb.pipeline import AnalysisOptions

    with catalog.session() as session:
        add_sample(session, "S")
    scan, _ = ingest_scan(catalog, _write(tmp_path / "d.h5", _phantom((24, 40, 40), n_energies=30)), sample="S")
    registration = register_scan(catalog, scan.id)
    options = AnalysisOptions(params=PARAMS, bin_factors=(1, 2), slab_size=5)
    serial = analyze_scan(catalog, scan.id, options)
    split = distributed.analyze_scan_distributed(catalog, scan.id, options, scheduler=cluster.scheduler_address)
    whole, = distributed.analyze_scans_distributed(catalog, [scan.id], options, scheduler=cluster.scheduler_address)
    plain = analyze_scan(catalog, scan.id, options, registration=None)
    assert [a.registration_id for a in (serial, split, whole, plain)] == [registration.id] * 3 + [None]
    reference = catalog_tables(catalog, serial.id)
    assert catalog_tables(catalog, split.id) == reference and catalog_tables(catalog, whole.id) == reference
    assert catalog_tables(catalog, plain.id) != reference
