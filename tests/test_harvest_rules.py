"""Watch rules (txmdb.harvest.rules, DESIGN §12): parsing, every kind of bad rules file, ``watch --check``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import DATA
from txmdb.errors import InputError
from txmdb.harvest.rules import load_rules
from txmdb.options import ANALYZE_OPTIONS

DESIGN_EXAMPLE = """\
settle_seconds = 5
[[rule]]
folder  = "fxi"
glob    = "*.h5"
kind    = "txm"
pattern = '(?P<sample>[^_]+)_(?P<state>[^_]+)_\\d+\\.h5'
set     = { voxel_nm = 30 }
register = true
analyze = true
analysis = { bin = "1,2,3" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_design_example_parses_with_folder_relative_to_the_rules_file(tmp_path):
    rules = load_rules(write(tmp_path, DESIGN_EXAMPLE))
    assert rules.settle_seconds == 5.0
    (rule,) = rules.rules
    assert rule.folder == tmp_path / "fxi"
    assert (rule.kind, rule.glob, rule.label, rule.register, rule.analyze) == ("txm", "*.h5", "1", True, True)
    assert rule.analysis == {"bin": "1,2,3"}
    scan = tmp_path / "fxi" / "day1" / "rod_charged_003.h5"
    assert rule.watches(scan)
    assert rule.values_for(scan) == {"voxel_nm": 30.0, "sample": "rod", "state": "charged"}
    assert rule.values_for(tmp_path / "fxi" / "rod-no-state.h5") is None  # ignored: the name does not match
    assert not rule.watches(tmp_path / "fxi" / "rod_charged_003.txt")
    assert not rule.watches(tmp_path / "elsewhere" / "rod_charged_003.h5")


def test_values_from_the_name_are_converted_and_checked(tmp_path):
    rules = load_rules(write(tmp_path, """
[[rule]]
name = "beamline"
folder = "/data/txm"
glob = "*.h5"
kind = "txm"
pattern = '(?P<sample>[a-z]+)_(?P<voxel_nm>[^_]+)nm\\.h5'
[[rule]]
folder = "/data/xas"
glob = "*.xdi"
kind = "xas"
pattern = '(?P<sample>[^_]+)_(?P<state>[^_]+)?\\.xdi'
set = { edge = "Ni-K", mode = "transmission", pre = "8200:8320" }
"""))
    txm, xas = rules.rules
    assert txm.values_for(Path("/data/txm/rod_31.5nm.h5")) == {"sample": "rod", "voxel_nm": 31.5}
    with pytest.raises(InputError) as bad:
        txm.values_for(Path("/data/txm/rod_xnm.h5"))
    assert str(bad.value) == "/data/txm/rod_xnm.h5: rule beamline: voxel_nm from the file name: expected a number, got 'x'"
    # an optional group that did not take part leaves its option out
    assert xas.values_for(Path("/data/xas/NiO_.xdi")) == {"edge": "Ni-K", "mode": "transmission", "pre": "8200:8320",
                                                          "sample": "NiO"}
    assert rules.rule_for(Path("/data/xas/a/b/NiO_x.xdi")) is xas
    assert rules.rule_for(Path("/data/other/NiO_x.xdi")) is None


BAD_RULES = [
    ("settle = 5\n[[rule]]\nfolder='a'\nglob='*'\nkind='txm'\nset={sample='s'}\n",
     "unknown key 'settle' (known: settle_seconds, rule)"),
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='txm'\nset={sample='s'}\nanalyse=true\n",
     "rule 1: unknown key 'analyse' (known: name, folder, glob, kind, pattern, set, register, analyze, analysis)"),
    ("[[rule]]\nname='c'\nfolder='a'\nglob='*'\nkind='cycling'\nset={cell='C', cel='D'}\n",
     "rule c: set: unknown key 'cel' (known: cell, format, columns, upper_cutoff, reference_cycle, encoding)"),
    ("[[rule]]\nname='fxi'\nfolder='a'\nglob='*.h5'\nkind='txm'\npattern='(?P<sample>[^_+'\n",
     "rule fxi: bad regular expression '(?P<sample>[^_+': unterminated character set at position 11"),
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='txm'\npattern='(?P<sampel>.+)'\n",
     "rule 1: pattern group 'sampel' is not an option of txm files (options: sample, state, layout, data, energy, "
     "voxel_nm)"),
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='cycling'\n",
     "rule 1: cycling files need cell: give it in set or as a named group of pattern"),
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='xas'\nset={sample='s', edge='Ni-M'}\n",
     "rule 1: set: edge: 'Ni-M' is not one of Ni-K, Ni-L3"),
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='tem'\nset={sample='s'}\n",
     "rule 1: kind 'tem' is not one of cycling, xas, xrd, txm"),
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='xas'\nset={sample='s', edge='Ni-K'}\nanalyze=true\n",
     "rule 1: analyze is for txm rules only"),
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='txm'\nset={sample='s'}\nanalyze=true\nanalysis={bins='1'}\n",
     f"rule 1: analysis: unknown key 'bins' (known: {', '.join(ANALYZE_OPTIONS)})"),  # txm analyze's options
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='txm'\nset={sample='s'}\nanalyze=true\nanalysis={bin='1,99'}\n",
     "rule 1: analysis: --bin '1,99': binning factors must be whole numbers from 1 to 16"),
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='txm'\nset={sample='s', voxel_nm='thirty'}\n",
     "rule 1: set: voxel_nm: expected a number, got 'thirty'"),
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='xas'\nset={sample='s', edge='Ni-K', pre='8320:8200'}\n",
     "rule 1: set: pre: '8320:8200': expected LO:HI in eV with LO < HI"),
    ("[[rule]]\nfolder='a'\nkind='txm'\nset={sample='s'}\n", "rule 1: glob is required (text)"),
    ("settle_seconds = -1\n[[rule]]\nfolder='a'\nglob='*'\nkind='txm'\nset={sample='s'}\n",
     "settle_seconds -1: expected seconds from 0 to 86400"),
    ("settle_seconds = 1\n", "no rules: add at least one [[rule]] with folder, glob and kind"),
    # a typed whole number is read as everywhere else (session 24: '+1_0' was 10), in the catalogue's range
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='cycling'\nset={cell='C', reference_cycle='+1_0'}\n",
     "rule 1: set: reference_cycle: expected a whole number, got '+1_0'"),
    ("[[rule]]\nfolder='a'\nglob='*'\nkind='cycling'\nset={cell='C', reference_cycle=3000000000}\n",
     "rule 1: set: reference_cycle: 3000000000 is not between 1 and 2147483647"),
    ("[[rule]\n", None),  # not TOML: the parser's own message follows the file name
]


@pytest.mark.parametrize("text, problem", BAD_RULES, ids=[f"bad{i}" for i in range(len(BAD_RULES))])
def test_a_bad_rules_file_is_one_line_naming_the_file_and_rule(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as error:
        load_rules(path)
    message = str(error.value)
    assert "\n" not in message
    if problem is None:
        assert message.startswith(f"{path}: not valid TOML: ")
    else:
        assert message == f"{path}: {problem}"


def test_watch_does_not_start_on_a_bad_rules_file(cli, tmp_path):
    rules = write(tmp_path, "[[rule]]\nfolder='a'\nglob='*.h5'\nkind='txm'\npattern='(?P<sample>[^_+'\n")
    result = cli("watch", rules, "--once")
    assert result.exit_code == 1
    assert result.output == (f"error: {rules}: rule 1: bad regular expression '(?P<sample>[^_+': unterminated "
                             f"character set at position 11\n")
    if cli.url.startswith("sqlite"):  # the catalogue was never opened
        assert not (tmp_path / "catalogue.db").exists()


def test_check_shows_what_each_existing_file_would_become(cli, tmp_path):
    (tmp_path / "cyc" / "old").mkdir(parents=True)
    shutil.copy(DATA / "cycling" / "batterydata" / "p492-13-raw.csv", tmp_path / "cyc" / "C1_raw.csv")
    shutil.copy(DATA / "cycling" / "batterydata" / "p492-13-raw.csv", tmp_path / "cyc" / "old" / "C2_raw.csv")
    (tmp_path / "cyc" / "notes.csv").write_text("x\n")
    (tmp_path / "cyc" / "readme.txt").write_text("not a rule's file\n")
    (tmp_path / "fxi").mkdir()
    (tmp_path / "fxi" / "rod_pristine_001.h5").write_bytes(b"")
    rules = write(tmp_path, DESIGN_EXAMPLE.replace("settle_seconds = 5", "settle_seconds = 2") + """
[[rule]]
name = "cycler"
folder = "cyc"
glob = "*.csv"
kind = "cycling"
pattern = '(?P<cell>C\\d+)_raw\\.csv'
set = { reference_cycle = 3 }
[[rule]]
name = "xas"
folder = "xas"
glob = "*.xdi"
kind = "xas"
set = { sample = "NiO", edge = "Ni-K" }
""")
    if cli.url.startswith("sqlite"):  # --check never creates the catalogue, and works without it
        result = cli("watch", "--check", rules, "--format", "csv")
        assert result.output.splitlines()[0] == (f"{rules}: 3 rules, settle 2 s; no catalogue yet: samples and "
                                                 "cells not checked")
        assert result.output.splitlines()[2].startswith("1,txm,rod_pristine_001.h5,ingest,")
        assert not (tmp_path / "catalogue.db").exists()
    assert cli("init").exit_code == 0
    result = cli("watch", "--check", rules, "--format", "csv")
    assert result.exit_code == 0, result.output
    # what the watcher would record for files whose sample or cell is not there yet
    assert result.output.splitlines()[1:5] == [
        "rule,kind,file,action,values,jobs",
        "1,txm,rod_pristine_001.h5,fail: no sample named 'rod'; see 'txmdb sample list',voxel_nm=30.0 sample=rod "
        "state=pristine,",
        "cycler,cycling,C1_raw.csv,fail: no cell named 'C1'; see 'txmdb cell list',reference_cycle=3 cell=C1,",
        "cycler,cycling,notes.csv,ignore (name does not match the pattern),,",
    ]
    for add in (("sample", "add", "rod"), ("cell", "add", "C1", "--sample", "rod", "--active-mass-mg", "10"),
                ("cell", "add", "C2", "--sample", "rod", "--active-mass-mg", "10")):
        assert cli(*add).exit_code == 0
    result = cli("watch", "--check", rules, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{rules}: 3 rules, settle 2 s",
        "rule,kind,file,action,values,jobs",
        "1,txm,rod_pristine_001.h5,ingest,voxel_nm=30.0 sample=rod state=pristine,\"register, analyze\"",
        "cycler,cycling,C1_raw.csv,ingest,reference_cycle=3 cell=C1,",
        "cycler,cycling,notes.csv,ignore (name does not match the pattern),,",
        "cycler,cycling,old/C2_raw.csv,ingest,reference_cycle=3 cell=C2,",
        f"xas,xas,{tmp_path / 'xas'},folder missing,,",
    ]
    table = cli("watch", "--check", rules)
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert lines[1].split() == ["rule", "kind", "file", "action", "values", "jobs"]
    assert len(lines) == 7


def test_poll_interval_out_of_range_is_refused(cli, tmp_path):
    rules = write(tmp_path, DESIGN_EXAMPLE)
    result = cli("watch", rules, "--poll", "0")
    assert (result.exit_code, result.output) == (1, "error: --poll 0: expected seconds from 0.1 to 86400\n")
