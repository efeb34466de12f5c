"""``txm register`` and ``query registrations`` on SQLite and PostgreSQL (issue 10, DESIGN §10).

- migration 0004 up and down with data present;
- drifted stacks with exact sub-voxel truth (txmdb.synthetic.drift, every difficulty of the
  issue), 2-D and 3-D, in each of the three layouts (FXI raw counts with flats and darks):
  the shifts that come back out of the catalogue meet the issue's targets;
- a golden case whose shifts are set by hand and confirmed by a brute-force search on the
  analytic phantom, independently of the implementation;
- an energy that cannot be registered is named and nothing is stored unless accepted;
- every bad input is one line, exit status 1, and no row.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import sqlalchemy as sa

from tests.conftest import insert_raw_scan

from tests.test_cli_txm import _count
from txmdb.analysis.registration import QUALITY_THRESHOLD
from txmdb.synthetic.drift import ALL_DIFFICULTIES, make_drifted, write_drifted_stack
from txmdb.synthetic.tomogram import write_stack

COLUMNS = ["sample", "state", "scan_id", "registration_id", "energy_index", "energy_ev", "shift_z", "shift_y",
           "shift_x", "quality"]
LAYOUTS = ["dxchange", "txm-sandbox", "fxi"]
# Every difficulty at once; 3-D fields of 64³ (smaller ones leave too little common region
# for ±8-voxel drift, docs/registration.md), 2-D of 112×128 (not square: axes cannot swap).
# A seed per case, so each layout meets another drift.
SHAPES = {2: (112, 128), 3: (64, 64, 64)}
N_ENERGIES = {2: 30, 3: 24}
SEEDS = {("dxchange", 2): 2, ("txm-sandbox", 2): 3, ("fxi", 2): 0,
         ("dxchange", 3): 2, ("txm-sandbox", 3): 5, ("fxi", 3): 1}
RMS_TARGET, MAX_TARGET = 0.15, 0.5       # voxels, per axis, with every difficulty (issue 10)


def _sql(cli, statement: str) -> list[dict]:
    result = cli("query", "sql", statement, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _ingest(cli, path: Path) -> str:
    result = cli("txm", "ingest", path, "--sample", "S", "--state", "charged")
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()[-1]


def _registered(cli, *args: str) -> int:
    """Run txm register; its registration id, alone on the last line."""
    result = cli("txm", "register", *args)
    assert result.exit_code == 0, result.output
    last = result.stdout.splitlines()[-1]
    assert last.isdigit(), result.stdout
    return int(last)


def _rows(cli, registration_id: int) -> list[dict]:
    result = cli("query", "registrations", "--registration", str(registration_id), "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _shifts(rows: list[dict], ndim: int) -> np.ndarray:
    axes = ["shift_z", "shift_y", "shift_x"][-ndim:]
    return np.array([[r[a] for a in axes] for r in rows], dtype=float)


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    return cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The stacks, written once: (layout, ndim) → (path, phantom), and the special cases."""
    root = tmp_path_factory.mktemp("drifted").resolve()
    out = {}
    for ndim, shape in SHAPES.items():
        for layout in LAYOUTS:
            phantom = make_drifted(shape, n_energies=N_ENERGIES[ndim], seed=SEEDS[(layout, ndim)], **ALL_DIFFICULTIES)
            path = root / f"{layout}-{ndim}d.h5"
            write_drifted_stack(path, phantom, layout=layout)
            out[(layout, ndim)] = path, phantom
    return root, out


# --------------------------------------------------------------------------------- migration

def test_migration_0004_up_and_down_with_data(db_url):
    from txmdb.db import migrate
    from txmdb.db.engine import make_engine

    engine = make_engine(db_url)
    migrate.upgrade(engine, "0003")
    with engine.begin() as conn:
        insert_raw_scan(conn, shape="[2, 4, 4]")
        conn.execute(sa.text(
            "INSERT INTO analyses (id, scan_id, status, parameters, txmdb_version, input_sha256, started_at, "
            "timings_s, gradient_unit) VALUES (1, 1, 'done', '{}', 't', :sha, '2026-01-01', '{}', 'eV/nm')"),
            {"sha": "a" * 64})
    migrate.upgrade(engine)
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT registration_id FROM analyses")).all() == [(None,)]
        conn.execute(sa.text(
            "INSERT INTO registrations (id, scan_id, method, parameters, reference_index, reference_energy_ev, "
            "max_shift_vox, accepted_poor, txmdb_version, input_sha256, created_at) "
            "VALUES (1, 1, 'm', '{}', 1, 8400, 1, false, 't', :sha, '2026-01-01')"), {"sha": "a" * 64})
        conn.execute(sa.text(
            "INSERT INTO registration_shifts (registration_id, energy_index, energy_ev, shift_y, shift_x, quality) "
            "VALUES (1, 0, 8300, 0.5, -1.25, 0.9), (1, 1, 8400, 0, 0, 1)"))
        conn.execute(sa.text("UPDATE analyses SET registration_id = 1"))
    # an analysis keeps its registration: deleting it is refused
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM registrations"))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE analyses SET registration_id = NULL"))
        conn.execute(sa.text("DELETE FROM registrations"))      # its shifts go with it
        assert conn.execute(sa.text("SELECT count(*) FROM registration_shifts")).scalar() == 0
    migrate.downgrade(engine, "0003")
    names = set(sa.inspect(engine).get_table_names())
    assert {"registrations", "registration_shifts"}.isdisjoint(names)
    assert "registration_id" not in {c["name"] for c in sa.inspect(engine).get_columns("analyses")}
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT id, status FROM analyses")).all() == [(1, "done")]
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()


# ------------------------------------------------------------------------ recovered shifts

@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_recovers_the_drift_of_every_layout(lab, files, layout, ndim):
    path, phantom = files[1][(layout, ndim)]
    scan = _ingest(lab, path)
    # 2-D: the phantom's own reference named; 3-D: the default reference
    args = ["--reference-energy", f"{phantom.energies_ev[phantom.reference_index]:.4f}"] if ndim == 2 else []
    registration_id = _registered(lab, scan, *args)
    rows = _rows(lab, registration_id)
    assert rows and all(list(r) == COLUMNS for r in rows)
    assert [r["energy_index"] for r in rows] == list(range(N_ENERGIES[ndim]))
    np.testing.assert_allclose([r["energy_ev"] for r in rows], phantom.energies_ev)
    assert {(r["sample"], r["state"], r["scan_id"]) for r in rows} == {("S", "charged", int(scan))}
    if ndim == 2:
        assert all(r["shift_z"] is None for r in rows)
    (record,) = _sql(lab, "SELECT scan_id, reference_index, reference_energy_ev, accepted_poor, max_shift_vox, "
                          "input_sha256 FROM registrations")
    ref = record["reference_index"]
    if ndim == 2:
        assert ref == phantom.reference_index
    assert record["reference_energy_ev"] == pytest.approx(phantom.energies_ev[ref])
    assert record["max_shift_vox"] == min(SHAPES[ndim]) / 4
    assert not record["accepted_poor"]
    truth = phantom.shifts - phantom.shifts[ref]
    error = _shifts(rows, ndim) - truth
    assert np.abs(error[ref]).max() == 0.0
    rms = np.sqrt((error ** 2).mean(axis=0))
    assert rms.max() <= RMS_TARGET and np.abs(error).max() <= MAX_TARGET, (rms, np.abs(error).max())
    assert min(r["quality"] for r in rows) >= QUALITY_THRESHOLD


# --------------------------------------------------------------------------------- golden

# A smooth analytic phantom (Gaussian blobs: y, x, sigma, amplitude) on a 72×88 field, ten
# energies whose shifts are whole voxels plus eighths, chosen by hand; gains and offsets
# change between energies as across an edge.
GOLDEN_SHAPE = (72, 88)
GOLDEN_BLOBS = [(20.0, 25.0, 3.0, 1.0), (45.0, 60.0, 4.5, 0.8), (30.0, 50.0, 2.0, -0.5), (52.0, 30.0, 2.5, 0.7),
                (36.0, 40.0, 6.0, 0.6), (25.0, 70.0, 1.6, 0.9)]
GOLDEN_ENERGIES = np.arange(8300.0, 8400.0, 10.0)
GOLDEN_REFERENCE = 7                     # 8370 eV
GOLDEN_SHIFTS = np.array([(3.25, -2.5), (2.75, -1.125), (1.5, 0.375), (-0.25, 1.0), (-1.625, 2.25), (4.0, -3.0),
                          (0.5, 0.5), (0.0, 0.0), (-2.375, -0.875), (-3.0, 1.75)])
GOLDEN_GAIN = np.array([0.3, 0.32, 0.35, 0.5, 0.8, 1.0, 1.05, 1.0, 0.98, 0.95])
GOLDEN_OFFSET = np.linspace(0.1, 0.0, 10)


def _golden_phantom(shift) -> np.ndarray:
    """The phantom moved by ``shift``: its value at x is P(x − shift)."""
    y, x = np.indices(GOLDEN_SHAPE, dtype=float)
    return sum(a * np.exp(-((y - cy - shift[0]) ** 2 + (x - cx - shift[1]) ** 2) / (2 * s * s))
               for cy, cx, s, a in GOLDEN_BLOBS)


def _golden_stack() -> np.ndarray:
    return np.stack([g * _golden_phantom(s) + o for s, g, o in zip(GOLDEN_SHIFTS, GOLDEN_GAIN, GOLDEN_OFFSET)])


def _brute_force_shift(image: np.ndarray) -> tuple[float, float]:
    """argmin over shifts of the least-squares misfit of gain · P(x − s) + offset: whole voxels
    within ±6, then eighths within ±1 of the best."""
    def misfit(shift) -> float:
        design = np.stack([_golden_phantom(shift).ravel(), np.ones(image.size)], axis=1)
        coef, *_ = np.linalg.lstsq(design, image.ravel(), rcond=None)
        residual = image.ravel() - design @ coef
        return float(residual @ residual)

    whole = min(((a, b) for a in range(-6, 7) for b in range(-6, 7)), key=misfit)
    return min(((whole[0] + a / 8, whole[1] + b / 8) for a in range(-8, 9) for b in range(-8, 9)), key=misfit)


@pytest.fixture(scope="module")
def golden_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("golden").resolve() / "golden.h5"
    write_stack(path, _golden_stack().astype(np.float32), GOLDEN_ENERGIES, layout="dxchange")
    return path


def test_golden_shifts_are_the_brute_force_optimum(golden_file):
    with h5py.File(golden_file) as f:
        stack = f["/exchange/data"][()].astype(float)
    found = np.array([_brute_force_shift(image) for image in stack])
    np.testing.assert_array_equal(found, GOLDEN_SHIFTS)


def test_golden_drifted_case(lab, golden_file):
    scan = _ingest(lab, golden_file)
    registration_id = _registered(lab, scan, "--reference-energy", "8370")
    rows = _rows(lab, registration_id)
    shifts = _shifts(rows, 2)
    assert np.abs(shifts - GOLDEN_SHIFTS).max() <= 0.05, shifts - GOLDEN_SHIFTS
    assert shifts[GOLDEN_REFERENCE].tolist() == [0.0, 0.0]
    assert all(r["shift_z"] is None for r in rows)


# ------------------------------------------------------------------ unregistrable energies

BLANK = 5          # an energy whose image holds no sample: background and noise only


@pytest.fixture(scope="module")
def blank_file(tmp_path_factory) -> tuple[Path, float]:
    phantom = make_drifted(SHAPES[2], n_energies=N_ENERGIES[2], seed=3, max_drift=6.0)
    path = tmp_path_factory.mktemp("blank").resolve() / "blank.h5"
    write_drifted_stack(path, phantom)
    with h5py.File(path, "r+") as f:
        noise = np.random.default_rng(7).normal(0.2, 0.03, size=SHAPES[2])
        f["/exchange/data"][BLANK] = noise.astype(np.float32)
    return path, float(phantom.energies_ev[BLANK])


def test_unregistrable_energy_is_named_and_stored_only_when_accepted(lab, blank_file):
    path, energy = blank_file
    scan = _ingest(lab, path)
    refused = lab("txm", "register", scan)
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert refused.stderr == (
        f"error: scan {scan}: 1 of 30 energies cannot be registered (quality below 0.17 or shift "
        f"beyond 28 voxels): {energy:g} eV (quality 0.00); nothing stored (--accept-poor stores it anyway)\n")
    assert _count(lab, "registrations") == 0 and _count(lab, "registration_shifts") == 0

    accepted = lab("txm", "register", scan, "--accept-poor")
    assert accepted.exit_code == 0, accepted.output
    lines = accepted.stdout.splitlines()
    assert f"accepted although these energies cannot be registered: {energy:g} eV" in lines
    registration_id = int(lines[-1])
    rows = _rows(lab, registration_id)
    poor = [r["energy_index"] for r in rows if r["quality"] < QUALITY_THRESHOLD]
    assert poor == [BLANK]
    assert _sql(lab, "SELECT accepted_poor FROM registrations")[0]["accepted_poor"] in (True, 1)

    show = lab("txm", "show", scan)
    assert show.exit_code == 0, show.output
    listing = show.stdout.split("registrations:\n", 1)[1].splitlines()
    assert listing[0].split() == ["registration_id", "created_at", "reference_energy_ev", "max_abs_shift_vox",
                                  "min_quality", "accepted_poor"]
    assert listing[1].split()[0] == str(registration_id) and listing[1].split()[-1] == "True"


# ------------------------------------------------------------------------------ bad input

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad").resolve()
    one = root / "one-energy.h5"
    write_drifted_stack(one, make_drifted((40, 48), n_energies=1, seed=1))
    # NaN at energy 3 everywhere but a corner: ingest finds finite spectra there; the
    # region registered (--roi) holds none at that energy
    nan = root / "nan-energy.h5"
    phantom = make_drifted((40, 48), n_energies=8, seed=1, max_drift=3.0)
    write_drifted_stack(nan, phantom)
    with h5py.File(nan, "r+") as f:
        image = np.full((40, 48), np.nan, dtype=np.float32)
        image[:4, :4] = 0.2
        f["/exchange/data"][3] = image
    plain = root / "plain.h5"
    write_drifted_stack(plain, phantom)
    return {"one": one, "nan": (nan, phantom.energies_ev[3]), "plain": (plain, phantom.energies_ev)}


def _refused(cli, args, line: str) -> None:
    result = cli("txm", "register", *args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == f"error: {line}\n"
    assert "Traceback" not in result.output
    assert _count(cli, "registrations") == 0 and _count(cli, "registration_shifts") == 0


def test_a_scan_of_one_energy(lab, bad_files):
    scan = _ingest(lab, bad_files["one"])
    _refused(lab, [scan], f"{bad_files['one']}: scan {scan} has one energy (8280 eV); a registration needs at "
                          f"least two")


def test_an_all_nan_energy(lab, bad_files):
    path, energy = bad_files["nan"]
    scan = _ingest(lab, path)
    _refused(lab, [scan, "--roi", "8:,8:"],
             f"{path}: energy {energy:g} eV (index 3) is NaN or infinite throughout the region registered")


def test_a_reference_energy_not_in_the_stack(lab, bad_files):
    path, energies = bad_files["plain"]
    scan = _ingest(lab, path)
    _refused(lab, [scan, "--reference-energy", "8333"],
             f"--reference-energy: reference energy 8333 eV is not in the stack of scan {scan} (8 energies, "
             f"8280–8420 eV; nearest {energies[np.abs(energies - 8333).argmin()]:g} eV)")


def test_a_max_shift_beyond_half_the_field(lab, bad_files):
    path, _ = bad_files["plain"]
    scan = _ingest(lab, path)
    _refused(lab, [scan, "--max-shift", "20.5"],
             "--max-shift: maximum shift 20.5 voxels is larger than half the field of view 40×48 (20 voxels)")


def test_a_file_changed_since_ingest(lab, bad_files, tmp_path):
    path = tmp_path / "changed.h5"
    shutil.copy(bad_files["plain"][0], path)
    scan = _ingest(lab, path)
    with h5py.File(path, "r+") as f:
        f["/exchange/data"][0, 0, 0] += 1.0
    _refused(lab, [scan], f"{path.resolve()}: the file changed since scan {scan} was ingested (SHA-256 differs)")


@pytest.mark.parametrize("args, line", [
    (["99"], "no TXM scan with id 99; see 'txmdb query scans'"),
    (["1", "--roi", "0:40"], "--roi: region of interest has 1 axes; the field of view 40×48 has 2 (y, x)"),
    (["1", "--roi", "0:40,40:60"], "--roi: region of interest x 40:60 is not inside the field of view 40×48 (0:48)"),
    (["1", "--roi", "a:b,:"], "--roi 'a:b,:': expected Z0:Z1,Y0:Y1,X0:X1 (2-D: Y0:Y1,X0:X1) in voxels, "
                              "e.g. 0:64,:,10:90"),
    (["1", "--max-shift", "0"], "--max-shift: maximum shift 0 voxels is not a positive number"),
])
def test_other_refusals(lab, bad_files, args, line):
    assert _ingest(lab, bad_files["plain"][0]) == "1"
    _refused(lab, args, line)


def test_a_refusal_of_many_energies_names_the_first_six_on_one_line(lab, tmp_path):
    """29 unregistrable energies made a line of ~1,500 characters; now six, then how many more."""
    phantom = make_drifted(SHAPES[2], n_energies=N_ENERGIES[2], seed=3, max_drift=6.0)
    path = tmp_path / "blanks.h5"
    write_drifted_stack(path, phantom)
    blanks = list(range(2, 11))
    with h5py.File(path, "r+") as f:
        for e in blanks:
            f["/exchange/data"][e] = np.random.default_rng(e).normal(0.2, 0.03, size=SHAPES[2]).astype(np.float32)
    scan = _ingest(lab, path)
    refused = lab("txm", "register", scan)
    assert refused.exit_code == 1 and refused.stdout == ""
    line = refused.stderr
    assert line.count("\n") == 1 and len(line) < 400
    assert line.startswith(f"error: scan {scan}: {len(blanks)} of {N_ENERGIES[2]} energies cannot be registered (")
    named = line.split("voxels): ", 1)[1].split("; nothing stored")[0].split(", ")
    assert [n.split(" eV")[0] for n in named[:6]] == [f"{phantom.energies_ev[e]:g}" for e in blanks[:6]]
    assert named[6:] == [f"and {len(blanks) - 6} more"]
    assert line.endswith("; nothing stored (--accept-poor stores it anyway)\n")
    assert _count(lab, "registrations") == 0
