"""Values the commands accepted and should not have (session 27's review), both backends.

- ``txm analyze 1 --all`` ran every scan; ``txm analyze`` with neither was a user error (1),
  not a usage error (2).
- ``--min-jump -1`` / ``--snr -3`` silently turned the edge mask off (every voxel "valid",
  pores and noise included); ``xas ingest --min-jump -1`` likewise.
- ``--clusters 1`` asked k-means for one phase: every valid voxel.
- ``sample add --ni 0.6 --mn 0.2 --co 0.3``: fractions of the transition metals adding up to 1.1.
- ``--morphology Rod`` was a category of its own: ``query samples --morphology rod`` missed it.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.conftest import DATA

XDI = DATA / "xas" / "ni_metal_rt.xdi"


def _line(result, status: int, line: str) -> None:
    assert result.exit_code == status, result.output
    assert result.stderr == line + "\n"


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    return cli


def test_analyze_takes_scan_ids_or_all(lab):
    _line(lab("txm", "analyze", "1", "--all"), 2,
          "error: give SCAN_ID… or --all, not both (see 'txmdb txm analyze --help')")
    _line(lab("txm", "analyze"), 2, "error: give SCAN_ID… or --all (see 'txmdb txm analyze --help')")
    _line(lab("txm", "analyze", "--all"), 1, "error: no scans to analyse: the catalogue has none")


@pytest.mark.parametrize("option, value", [("--min-jump", "-1"), ("--snr", "-3"), ("--snr", "-1e-300")])
def test_analyze_refuses_a_negative_threshold(lab, option, value):
    _line(lab("txm", "analyze", "1", option, value), 1, f"error: {option} must be a number ≥ 0, got {value}")


def test_a_zero_threshold_is_a_threshold(lab):
    # 0 is allowed (no jump asked for): the command goes on to the scan, which does not exist
    _line(lab("txm", "analyze", "1", "--min-jump", "0", "--snr", "0"), 1,
          "error: no TXM scan with id 1; see 'txmdb query scans'")


def test_xas_ingest_refuses_a_negative_jump(lab):
    _line(lab("xas", "ingest", XDI, "--sample", "S", "--edge", "Ni-K", "--min-jump", "-1"), 1,
          "error: --min-jump must be a number ≥ 0, got -1")
    assert json.loads(lab("query", "xas", "-f", "json").stdout) == []


def test_one_cluster_is_refused(lab):
    _line(lab("txm", "analyze", "1", "--clusters", "1"), 1, "error: --clusters must be between 2 and 100, got 1")


def test_fractions_of_the_transition_metals_add_up_to_one_at_most(lab):
    _line(lab("sample", "add", "X", "--ni", "0.6", "--mn", "0.2", "--co", "0.3"), 1,
          "error: --ni, --mn, --co: Ni, Mn and Co fractions add up to 1.1; as fractions of the transition metals "
          "they add up to 1 at most")
    assert lab("sample", "add", "Y", "--ni", "0.6", "--mn", "0.2", "--co", "0.2").exit_code == 0
    assert lab("sample", "add", "Z", "--ni", "0.8").exit_code == 0
    names = [r["sample"] for r in json.loads(lab("query", "samples", "-f", "json").stdout)]
    assert names == ["S", "Y", "Z"]


def test_morphology_is_one_category_in_any_case(lab):
    assert lab("sample", "add", "R", "--morphology", " Rod ", "--orientation", "Radial").exit_code == 0
    rows = json.loads(lab("query", "samples", "--morphology", "ROD", "-f", "json").stdout)
    assert [(r["sample"], r["morphology"], r["orientation"]) for r in rows] == [("R", "rod", "radial")]
    # a catalogue written before: its "Éclat" is still found as typed (SQLite's lower() folds ASCII only)
    engine = sa.create_engine(lab.url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE samples SET morphology = 'Éclat' WHERE name = 'S'"))
    finally:
        engine.dispose()
    rows = json.loads(lab("query", "samples", "--morphology", "Éclat", "-f", "json").stdout)
    assert [r["sample"] for r in rows] == ["S"]
    assert lab("sample", "add", "E", "--morphology", "Éclat").exit_code == 0      # kept as "éclat"
    rows = json.loads(lab("query", "samples", "--morphology", "Éclat", "-f", "json").stdout)
    assert [(r["sample"], r["morphology"]) for r in rows] == [("E", "éclat"), ("S", "Éclat")]


def test_a_rules_file_with_a_negative_jump_is_refused_when_loaded(tmp_path):
    from txmdb.errors import InputError
    from txmdb.harvest.rules import load_rules

    rules = tmp_path / "rules.toml"
    rules.write_text("[[rule]]\nfolder='a'\nglob='*.txt'\nkind='xas'\nset={sample='S', edge='Ni-K', min_jump=-1}\n")
    with pytest.raises(InputError) as refused:
        load_rules(rules)
    assert str(refused.value) == f"{rules}: rule 1: set: min_jump: must be a number ≥ 0, got -1"
    rules.write_text("[[rule]]\nfolder='a'\nglob='*.txt'\nkind='xas'\nset={sample='S', edge='Ni-K', min_jump=0}\n")
    assert load_rules(rules)
