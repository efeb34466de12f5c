"""A file ingested again with other facts is refused, not silently kept as it was (session 27).

Re-ingesting the same file (the same SHA-256) returns its existing record: that is how a
harvester or a script can run twice. But a re-ingest that names another state, voxel size,
edge, mode, depth, window, cut-off, reference cycle or wavelength reported "already in the
catalogue", exit 0, and kept the first ingest's values: the user was told it worked. Now each
such value, when given, must be the one recorded: else one line naming it, exit 1, nothing
changed. A value not given is not compared. Both backends.
"""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa

from tests.conftest import DATA
from tests.test_hostile_cycling import P492, catalogue_state

XDI = DATA / "xas" / "ni_metal_rt.xdi"
NIO = DATA / "xas" / "ref_NiO.txt"


@pytest.fixture
def lab(cli, tmp_path):
    assert cli("init").exit_code == 0
    for sample in ("S", "T"):
        assert cli("sample", "add", sample).exit_code == 0
    assert cli("cell", "add", "C1", "--sample", "S", "--active-mass-mg", "10").exit_code == 0
    return cli


@pytest.fixture
def stack(tmp_path):
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    energies = energy_grid(24)
    edge, _ = particle_field((12, 12, 12), kind="rod", seed=1)
    path = tmp_path / "scan.h5"
    write_stack(path, SyntheticStack(edge, energies, noise=0.01), energies, layout="dxchange", voxel_size_nm=30)
    return path


TABLES = ("txm_scans", "xas_measurements", "cycling_runs", "cycles", "xrd_results")


def _ok(cli, *args) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _refused(cli, path, problem: str, *args) -> None:
    before = catalogue_state(cli, TABLES)
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: {path}: {problem}\n"
    assert catalogue_state(cli, TABLES) == before


def _column(cli, sql: str):
    engine = sa.create_engine(cli.url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar_one()
    finally:
        engine.dispose()


def test_a_scan_ingested_again_with_another_state_or_voxel_size_is_refused(lab, stack):
    _ok(lab, "txm", "ingest", stack, "--sample", "S", "--state", "exported")
    _refused(lab, stack, "this file is already in the catalogue as TXM scan 1 with state 'exported', not "
                         "'pristine'; a file is recorded once, as its first ingest gave it",
             "txm", "ingest", stack, "--sample", "S", "--state", "pristine")
    _refused(lab, stack, "this file is already in the catalogue as TXM scan 1 with voxel size (nm) 30.0, not "
                         "10.0; a file is recorded once, as its first ingest gave it",
             "txm", "ingest", stack, "--sample", "S", "--voxel-nm", "10")
    _refused(lab, stack, "this file is already in the catalogue as TXM scan 1 of another sample; it cannot "
                         "belong to two", "txm", "ingest", stack, "--sample", "T")
    # what was recorded, or nothing said: the existing scan, as before
    for extra in ((), ("--state", "exported"), ("--voxel-nm", "30"), ("--layout", "dxchange"),
                  ("--data", "/exchange/data")):
        out = _ok(lab, "txm", "ingest", stack, "--sample", "S", *extra)
        assert out.startswith(f"already in the catalogue: {stack} (") and out.endswith("\n1\n")
    assert _column(lab, "SELECT state FROM txm_scans WHERE id = 1") == "exported"


def test_a_scan_ingested_again_with_another_layout_is_refused(lab, stack, tmp_path):
    _ok(lab, "txm", "ingest", stack, "--sample", "S")
    _refused(lab, stack, "this file is already in the catalogue as TXM scan 1 with layout 'dxchange', not "
                         "'txm-sandbox'; a file is recorded once, as its first ingest gave it",
             "txm", "ingest", stack, "--sample", "S", "--layout", "txm-sandbox", "--data", "/exchange/data",
             "--energy", "/exchange/energy")


def test_a_spectrum_ingested_again_with_another_edge_mode_state_or_window_is_refused(lab):
    _ok(lab, "xas", "ingest", XDI, "--sample", "S", "--edge", "Ni-K", "--state", "pristine")
    for field, options in (("edge 'Ni-K', not 'Ni-L3'", ("--edge", "Ni-L3")),
                           ("mode 'transmission', not 'fluorescence'", ("--edge", "Ni-K", "--mode", "fluorescence")),
                           ("state 'pristine', not 'charged'", ("--edge", "Ni-K", "--state", "charged")),
                           ("probing depth (µm) None, not 2.0", ("--edge", "Ni-K", "--depth-um", "2")),
                           ("pre window (eV) -inf:8320.0, not 8150.0:8300.0", ("--edge", "Ni-K", "--pre", "8150:8300"))):
        _refused(lab, XDI, f"this file is already in the catalogue as XAS measurement 1 with {field}; a file is "
                           "recorded once, as its first ingest gave it", "xas", "ingest", XDI, "--sample", "S", *options)
    out = _ok(lab, "xas", "ingest", XDI, "--sample", "S", "--edge", "Ni-K", "--mode", "transmission")
    assert out.startswith(f"already in the catalogue: {XDI} — edge ")


def test_a_spectrum_ingested_with_windows_is_found_again_without_them(lab, tmp_path):
    """Windows not asked for again are not compared: the same command without --pre, or a harvest
    rule without windows, finds the record (session 27's review)."""
    _ok(lab, "xas", "ingest", XDI, "--sample", "S", "--edge", "Ni-K", "--pre", "8150:8300", "--min-jump", "0.1")
    for extra in ((), ("--pre", "8150:8300"), ("--post", "8370:")):
        assert _ok(lab, "xas", "ingest", XDI, "--sample", "S", "--edge", "Ni-K", *extra).startswith(
            "already in the catalogue")
    _refused(lab, XDI, "this file is already in the catalogue as XAS measurement 1 with minimum edge jump 0.1, not "
                       "0.2; a file is recorded once, as its first ingest gave it",
             "xas", "ingest", XDI, "--sample", "S", "--edge", "Ni-K", "--min-jump", "0.2")
    from txmdb.catalog import open_catalog
    from txmdb.harvest.ingest import _xas

    catalog = open_catalog(lab.url, lab.store)
    try:
        record, created = _xas(catalog, XDI, {"sample": "S", "edge": "Ni-K"})
    finally:
        catalog.engine.dispose()
    assert (record.id, created) == (1, False)


def test_a_reference_spectrum_ingested_again_for_a_sample_names_the_reference(lab):
    _ok(lab, "xas", "ingest", NIO, "--reference", "NiO", "--edge", "Ni-K")
    _refused(lab, NIO, "this file is already in the catalogue as XAS measurement 1 of the reference spectrum "
                       "'NiO'; it cannot belong to two",
             "xas", "ingest", NIO, "--sample", "S", "--edge", "Ni-K")
    _ok(lab, "xas", "ingest", XDI, "--sample", "S", "--edge", "Ni-K")
    _refused(lab, XDI, "this file is already in the catalogue as XAS measurement 2 of a sample; it cannot belong "
                       "to two", "xas", "ingest", XDI, "--reference", "Ni-foil", "--edge", "Ni-K")


def test_a_cycler_file_ingested_again_with_another_cutoff_or_reference_cycle_is_refused(lab, tmp_path):
    path = tmp_path / "run.csv"
    shutil.copy(P492, path)
    _ok(lab, "cycling", "ingest", path, "--cell", "C1", "--upper-cutoff", "4.3")
    prefix = "this file is already in the catalogue as cycling run 1 with "
    _refused(lab, path, prefix + "upper cut-off (V) 4.3, not 4.5; a file is recorded once, as its first ingest "
                                 "gave it", "cycling", "ingest", path, "--cell", "C1", "--upper-cutoff", "4.5")
    _refused(lab, path, prefix + "reference cycle 2, not 3; a file is recorded once, as its first ingest gave it",
             "cycling", "ingest", path, "--cell", "C1", "--reference-cycle", "3")
    for extra in ((), ("--reference-cycle", "2"), ("--upper-cutoff", "4.3")):
        assert _ok(lab, "cycling", "ingest", path, "--cell", "C1", *extra).startswith("already in the catalogue")


def test_a_new_cycler_file_keeps_the_default_reference_cycle(lab, tmp_path):
    path = tmp_path / "run.csv"
    shutil.copy(P492, path)
    _ok(lab, "cycling", "ingest", path, "--cell", "C1")
    assert _column(lab, "SELECT reference_cycle FROM cycling_runs WHERE id = 1") == 2


def test_a_pattern_added_again_with_another_wavelength_or_state_is_refused(lab, tmp_path):
    from txmdb.synthetic.spectra import layered_xrd_pattern, write_columns

    tt, intensity = layered_xrd_pattern(wavelength_angstrom=1.5406, i003_i104=1.7)
    pattern = tmp_path / "pattern.xy"
    write_columns(pattern, [tt, intensity], names=("2theta", "intensity"))
    _ok(lab, "xrd", "add", "--sample", "S", "--pattern", pattern, "--wavelength", "1.5406", "--state", "pristine")
    prefix = "this file is already in the catalogue as XRD result 1 with "
    _refused(lab, pattern, prefix + "wavelength (Å) 1.5406, not 0.7093; a file is recorded once, as its first "
                                    "ingest gave it",
             "xrd", "add", "--sample", "S", "--pattern", pattern, "--wavelength", "0.7093")
    _refused(lab, pattern, prefix + "state 'pristine', not 'cycled'; a file is recorded once, as its first ingest "
                                    "gave it",
             "xrd", "add", "--sample", "S", "--pattern", pattern, "--wavelength", "1.5406", "--state", "cycled")
    _ok(lab, "xrd", "add", "--sample", "S", "--pattern", pattern, "--wavelength", "1.5406")
