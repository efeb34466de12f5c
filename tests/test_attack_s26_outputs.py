"""Session 26's attacker pass, part two: outputs that replaced files the catalogue owns, and a
stack whose values overflowed the registration's working images. Every CLI test runs on
SQLite and PostgreSQL.

- ``txm export -o`` onto the SQLite catalogue wrote an HDF5 file over it (every row lost), and
  onto an analysis' results file (its SHA-256 no longer matched), both reporting success;
  ``query … -o`` and ``report compare -o`` could do the same. Now every output refuses the
  catalogue's database (and its journal) and anything in its store.
- ``txm register`` of a stack near float32's largest printed numpy warnings and "cannot
  convert float NaN to integer".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from tests.test_spectral_cli import _analyze, lab  # noqa: F401 - the fixture
from txmdb.synthetic.tomogram import write_stack


# ----------------------------------------------------------------------------- outputs the catalogue owns
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _store_listing(store: Path) -> dict:
    return {p.relative_to(store).as_posix(): _digest(p) for p in sorted(store.rglob("*")) if p.is_file()}


def test_no_output_replaces_the_catalogue_or_its_store(lab):  # noqa: F811 - the fixture
    """``txm export -o`` onto the SQLite catalogue wrote an HDF5 file over it (every row lost)
    and onto an analysis' results file (its SHA-256 no longer matched), both reporting success."""
    assert _analyze(lab).exit_code == 0
    store = lab.store.resolve()
    results = next(store.rglob("*.h5"))
    link = lab.tmp / "to-store"
    link.symlink_to(store)
    targets = {results: f"is inside the catalogue's results store {lab.store}; write outside it",
               link / "x.h5": f"is inside the catalogue's results store {lab.store}; write outside it",
               store / "new.csv": f"is inside the catalogue's results store {lab.store}; write outside it"}
    if lab.url.startswith("sqlite"):
        database = Path(lab.url.removeprefix("sqlite:///"))
        for name in (database, Path(f"{database}-wal"), Path(f"{database}-journal")):
            targets[name] = "is the catalogue's database; give another file to write"
    before = _store_listing(store), _rows(lab)
    for target, problem in targets.items():
        for args in (["txm", "export", lab.scan], ["txm", "export", lab.scan, "--map", "edge"],
                     ["query", "samples"], ["report", "compare", "mix"]):
            if args[0] == "txm" and target.suffix not in ((".h5",) if "--map" in args else (".h5", ".db")):
                continue                      # a map's suffix is checked first
            result = lab(*args, "-o", target)
            assert (result.exit_code, result.output) == (1, f"error: {target}: {problem}\n"), args
    result = lab("report", "compare", "mix", "-o", lab.tmp / "r.html", "--png-dir", store / "png")
    assert (result.exit_code, result.output) == (1, f"error: {store / 'png'}: is inside the catalogue's results "
                                                    f"store {lab.store}; write outside it\n")
    # a figure's name in --png-dir that links to the database or into the store
    plain = lab.tmp / "png-plain"
    assert lab("report", "compare", "mix", "-o", lab.tmp / "plain.html", "--png-dir", plain).exit_code == 0
    figure = sorted(p.name for p in plain.iterdir())[0]
    png = lab.tmp / "png"
    png.mkdir()
    (png / figure).symlink_to(database if lab.url.startswith("sqlite") else store / "new.png")
    result = lab("report", "compare", "mix", "-o", lab.tmp / "r.html", "--png-dir", png)
    assert result.exit_code == 1 and result.output.startswith(f"error: {png / figure}: is "), result.output
    assert not (lab.tmp / "r.html").exists()
    assert (_store_listing(store), _rows(lab)) == before
    assert lab("db", "check").exit_code == 0


def test_a_table_never_replaces_an_ingested_file(lab, tmp_path):  # noqa: F811 - the fixture
    """``sample list -o`` onto an ingested spectrum replaced it (``db check --sources`` then
    reported it changed); any -o now refuses an ingested file, as txm export does."""
    from tests.test_spectral_cli import XAS

    spectrum = tmp_path / "spectrum.txt"
    spectrum.write_bytes((XAS / "ref_NiO.txt").read_bytes() + b"\n")
    result = lab("xas", "ingest", spectrum, "--reference", "NiO_copy", "--edge", "Ni-K")
    assert result.exit_code == 0, result.output
    record = result.stdout.strip().splitlines()[-1]
    digest = _digest(spectrum)
    for args in (["sample", "list"], ["query", "samples"], ["query", "scans"]):
        result = lab(*args, "--format", "csv", "-o", spectrum)
        assert (result.exit_code, result.output) == (
            1, f"error: {spectrum}: is the file of XAS measurement {record}; give another file to write\n"), args
    assert _digest(spectrum) == digest
    assert lab("sample", "list", "--format", "csv", "-o", tmp_path / "elsewhere.csv").exit_code == 0


def _rows(lab) -> dict:
    engine = sa.create_engine(lab.url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                    for t in ("samples", "txm_scans", "analyses", "xas_measurements")}
    finally:
        engine.dispose()


@pytest.mark.parametrize("scale", [1e37, 1e-25], ids=["huge", "tiny"])
def test_a_stack_far_from_unit_scale_registers_like_its_scaled_copy(cli, tmp_path, scale):
    """Values near float32's largest overflowed the working images' sums (NaN shifts, numpy
    warnings on stderr, 'cannot convert float NaN to integer'); tiny ones underflowed their
    squares (std 0: every energy refused). Scaled first, the stack registers as the same
    stack at 1 does."""
    from txmdb.synthetic.drift import drifted_stack

    drift = drifted_stack((24, 24), n_energies=20, max_drift=3.0, seed=1)
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    shifts = []
    for name, factor in (("plain", 1.0), ("scaled", scale)):
        path = tmp_path / f"{name}.h5"
        write_stack(path, (drift.stack * factor).astype(np.float32), drift.energies_ev)
        scan = cli("txm", "ingest", path, "--sample", "S").stdout.strip().splitlines()[-1]
        result = cli("txm", "register", scan, "--accept-poor")
        assert result.exit_code == 0 and result.stderr == "", result.output
        shifts.append(cli("query", "registrations", "--scan", scan, "--format", "json").stdout)
    plain, scaled = (np.array([[r["shift_y"], r["shift_x"]] for r in json.loads(s)]) for s in shifts)
    np.testing.assert_allclose(scaled, plain, atol=0.02)


def test_a_stack_at_float32s_largest_is_refused_by_its_quality_in_one_line(cli, tmp_path):
    """Half the field at float32's largest: scaled, its working images are finite (no numpy
    warnings, no NaN shift), and the energies are refused by the quality gate as unregistrable."""
    from txmdb.synthetic.drift import drifted_stack

    drift = drifted_stack((24, 24), n_energies=12, max_drift=3.0, seed=2)
    stack = drift.stack.astype(np.float32)
    stack[:, :, :6] = np.finfo(np.float32).max
    path = tmp_path / "max.h5"
    write_stack(path, stack, drift.energies_ev)
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    scan = cli("txm", "ingest", path, "--sample", "S").stdout.strip().splitlines()[-1]
    result = cli("txm", "register", scan)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert "Warning" not in result.output and "NaN" not in result.output
    assert "cannot be registered (quality below" in result.output
    assert cli("query", "registrations", "--format", "csv").stdout.strip().count("\n") == 0


# ----------------------------------------------------------------------------- a white line from bunched energies
def test_a_white_line_window_of_bunched_energies_is_refused(lab):  # noqa: F811 - the fixture
    """Four energies 1e-11 eV apart met "at least 4 energies in the window", and every voxel's
    white line came out at the window's centre (any cubic fits four equal abscissae)."""
    from scipy.special import erf

    from tests.test_spectral_cli import E

    energies = np.concatenate([E[E < 8345.0], 8350.0 + 1e-11 * np.arange(4), E[E > 8358.0]])
    mu = 0.2 + 0.5 * (1 + erf((energies - 8340.0) / 1.5))
    stack = lab.tmp / "bunched.h5"
    write_stack(stack, np.broadcast_to(mu[:, None, None, None], (len(energies), 4, 6, 6)).astype(np.float32),
                energies, voxel_size_nm=25.0)
    scan = lab("txm", "ingest", stack, "--sample", "mix").stdout.strip().splitlines()[-1]
    before = _rows(lab)
    result = lab("txm", "analyze", scan, "--white-line", "8345:8358", "--min-particle-voxels", "1")
    assert (result.exit_code, result.output) == (
        1, f"error: {stack}: white-line window 8345..8358 eV: its 4 energies are too close together for a "
           "cubic over it; give a window whose energies spread across it\n")
    assert _rows(lab) == before
    # the same window on the evenly spaced grid of the lab's own stack is fitted as before
    assert _analyze(lab, "--white-line", "8345:8358").exit_code == 0


# ----------------------------------------------------------------------------- demo --out
def test_demo_never_wipes_a_store_that_is_not_a_previous_demos(cli, tmp_path):
    """``demo --out DIR`` replaces DIR/store: given a lab's folder it deleted the lab's store."""
    assert cli("init").exit_code == 0
    lab_store = tmp_path / "store"
    (lab_store / "analyses").mkdir(parents=True)
    (lab_store / "analyses" / "1.h5").write_bytes(b"results")
    result = cli("demo", "--out", tmp_path, "--size", "24")
    assert (result.exit_code, result.output) == (
        1, f"error: {lab_store}: a results store that is not a previous demo's (the demo replaces it); "
           "give --out a folder of its own\n")
    assert (lab_store / "analyses" / "1.h5").read_bytes() == b"results"
    assert not (tmp_path / "demo.db").exists()


def test_demo_never_wipes_a_folder_named_store_that_is_not_txmdbs(tmp_path):
    from txmdb.demo import _refuse_other_store
    from txmdb.errors import TxmdbError

    store = tmp_path / "store"
    _refuse_other_store(store, tmp_path / "demo.db")           # none: nothing to replace
    store.mkdir()
    _refuse_other_store(store, tmp_path / "demo.db")           # empty
    (store / "notes.txt").write_text("mine")
    with pytest.raises(TxmdbError, match="a results store that is not a previous demo's"):
        _refuse_other_store(store, tmp_path / "demo.db")
    (tmp_path / "file").write_text("x")
    with pytest.raises(TxmdbError):
        _refuse_other_store(tmp_path / "file", tmp_path / "demo.db")
