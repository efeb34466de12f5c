"""The web's words for what the catalogue and the CLI name otherwise: column labels of table headers
(txmdb.web.templating.field_label) and errors' advice (txmdb.web.advice.for_browser). In-process."""

from __future__ import annotations

import pytest

from txmdb.web.advice import ASK, for_browser
from txmdb.web.templating import field_label


@pytest.mark.parametrize("name,label", [
    ("energy_min_ev", "energy min (eV)"),
    ("first_discharge_capacity_mah_g", "first discharge capacity (mAh/g)"),
    ("discharge_capacity_mah", "discharge capacity (mAh)"),
    ("charge_energy_mwh", "charge energy (mWh)"),
    ("active_mass_g", "active mass (g)"),
    ("active_mass_mg", "active mass (mg)"),
    ("loading_mg_cm2", "loading (mg/cm²)"),
    ("area_cm2", "area (cm²)"),
    ("retention_pct", "retention (%)"),
    ("voltage_drop_v", "voltage drop (V)"),
    ("depth_um", "depth (µm)"),
    ("depth_lo_nm", "depth from (nm)"),
    ("depth_hi_vox", "depth to (voxels)"),
    ("wavelength_angstrom", "wavelength (Å)"),
    ("duration_s", "duration (s)"),
    ("size_bytes", "size (bytes)"),
    ("n_valid_voxels", "number of valid voxels"),
    ("n", "count"),
    ("run_id", "run ID"),
    ("theta_lo", "θ from"),
    ("p90_u", "p90 |u|"),
    ("i003_i104", "I(003)/I(104)"),
    ("ni_fraction", "Ni fraction"),
    ("file_sha256", "file SHA-256"),
    # a unit ending alone is a name, not a unit
    ("s", "s"), ("v", "v"), ("n_scans", "number of scans"),
])
def test_column_labels_carry_words_and_units(name, label):
    assert field_label(name) == label


@pytest.mark.parametrize("message,text,link", [
    ("no sample named 'x'; see 'txmdb sample list'", "no sample named 'x'; see the samples page",
     ("the samples page", "/samples")),
    ("no cell named 'c'; see 'txmdb cell list'", "no cell named 'c'; see the cells table",
     ("the cells table", "/query/cells")),
    ("no job with id 4; see 'txmdb jobs'", "no job with id 4; see the jobs page", ("the jobs page", "/jobs")),
    ("no TXM scan with id 9; see 'txmdb query scans'", "no TXM scan with id 9; see the scans table",
     ("the scans table", "/query/scans")),
    ("scan 3 has no finished analysis 7; see 'txmdb txm show 3'",
     "scan 3 has no finished analysis 7; see the page of scan 3",
     ("the page of scan 3", "/scans/3")),
    ("scan 3 has no finished analysis; run 'txmdb txm analyze 3' first",
     "scan 3 has no finished analysis; an editor can queue an analysis on the page of scan 3",
     ("the page of scan 3", "/scans/3")),
    # commands no page does: whom to ask
    ("database has no txmdb catalogue; run 'txmdb init' to create it", f"database has no txmdb catalogue; {ASK}", None),
    ("query sql needs the reporting role: run `txmdb db reporting-role` once, as the catalogue owner",
     f"query sql needs the reporting role: {ASK}", None),
    ("scan 3 has no registration; run 'txmdb txm register 3' first", f"scan 3 has no registration; {ASK}", None),
    # advice with a quoted name after the command is left as it is (a name is the user's text)
    ('query sql runs queries as the reporting role "r", which "u" is not a member of: connect as the catalogue '
     'owner, or run `txmdb db reporting-role r` as "u"',
     'query sql runs queries as the reporting role "r", which "u" is not a member of: connect as the catalogue '
     'owner, or run `txmdb db reporting-role r` as "u"', None),
    # (session 29 attack) typed text that holds advice is not advice: the error stays as it was
    ("bin: \"'txmdb txm analyze 1'\" is not a whole number from 1 to 16",
     "bin: \"'txmdb txm analyze 1'\" is not a whole number from 1 to 16", None),
    ("bin: \"x; see 'txmdb jobs'\" is not a whole number from 1 to 16",
     "bin: \"x; see 'txmdb jobs'\" is not a whole number from 1 to 16", None),
    ("bin: 'x; see `txmdb jobs` to x' is not a whole number from 1 to 16",
     "bin: 'x; see `txmdb jobs` to x' is not a whole number from 1 to 16", None),
    ("no sample named \"a: 'txmdb txm show 7'\"", "no sample named \"a: 'txmdb txm show 7'\"", None),
    ("no sample named \"a: see 'txmdb txm show 7'\"", "no sample named \"a: see 'txmdb txm show 7'\"", None),
    # only the last clause is advice: a name that looks like a command is the name
    ("no sample named \"'txmdb jobs'; x\"; see 'txmdb sample list'",
     "no sample named \"'txmdb jobs'; x\"; see the samples page", ("the samples page", "/samples")),
    ("no sample named \"'txmdb jobs'\"", "no sample named \"'txmdb jobs'\"", None),
    ("job 4 is done: only queued or running jobs can be cancelled",
     "job 4 is done: only queued or running jobs can be cancelled", None),
])
def test_errors_advise_pages_not_commands(message, text, link):
    advice = for_browser(message)
    assert (advice.text, advice.link) == (text, link)
