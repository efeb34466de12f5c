"""One vocabulary for the CLI and the library; errors raised where they belong (issue 9 §8).

- txmdb.vocabulary (and the query declarations the CLI builds on) import nothing heavy;
- the CLI's choices and the library's lists are the vocabulary's;
- pure kernels raise ValueError, the catalogue names the file once;
- catalogue services name values, the CLI adds its own option names.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tests.conftest import PROJECT
from txmdb import vocabulary as v
from txmdb.errors import ParameterError, TxmdbError

HEAVY = {"numpy", "pandas", "sqlalchemy", "h5py", "scipy", "matplotlib", "numexpr", "alembic", "dask"}


@pytest.mark.parametrize("module", ["txmdb.vocabulary", "txmdb.query"])
def test_import_is_light(module):
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    assert not loaded & HEAVY, sorted(loaded & HEAVY)


def _option(*path: str, name: str):
    from txmdb.cli.main import app

    command = typer.main.get_command(app)
    for part in path:
        command = command.commands[part]
    (param,) = [p for p in command.params if p.name == name]
    return param


@pytest.mark.parametrize("path, name, expected", [
    (("txm", "ingest"), "layout", (v.AUTO, *v.LAYOUTS)),
    (("txm", "analyze"), "element", v.ELEMENTS),
    (("cycling", "ingest"), "file_format", (v.AUTO, *v.CYCLER_FORMATS)),
    (("xas", "ingest"), "edge", v.EDGES),
    (("xas", "ingest"), "mode", v.MODES),
    (("cell", "add"), "ce_convention", v.CE_CONVENTIONS),
    (("query", "theta"), "fmt", v.OUTPUT_FORMATS),
    (("sample", "list"), "fmt", v.OUTPUT_FORMATS),
])
def test_cli_choices_are_the_vocabulary(path, name, expected):
    # typer completes an option with its choices
    assert tuple(c.value for c in _option(*path, name=name).shell_complete(None, "")) == expected


def test_library_lists_are_the_vocabulary():
    from txmdb.analysis import cycling, edge, xas
    from txmdb.io import cycling as cycler_files
    from txmdb.io import hdf5

    assert tuple(hdf5.LAYOUTS) == v.LAYOUTS
    assert tuple(edge.PRESETS) == v.ELEMENTS
    assert tuple(xas.EDGE_PRESETS) == v.EDGES
    assert xas.MODES is v.MODES_BY_KIND
    assert cycler_files.FORMATS == (v.AUTO, *v.CYCLER_FORMATS)
    assert cycler_files.STEP_TYPES is v.STEP_TYPES
    assert cycling.CE_CONVENTIONS is v.CE_CONVENTIONS
    assert v.edge_kind("Ni-L3") == "L3" and v.edge_kind("Co-K") == "K"


def test_no_vocabulary_defined_twice():
    # Choice enums, formats, conventions and modes are declared in txmdb/vocabulary.py only
    # (io/hdf5.py's LAYOUTS maps each vocabulary layout to its data-set paths: checked above).
    pattern = re.compile(r"class \w+\((str, )?enum\.Enum\)|^(CE_CONVENTIONS|FORMATS|STEP_TYPES|MODES|EDGES)"
                         r"\b[^=]*= *[({]\s*\"", re.M)
    offenders = [str(p.relative_to(PROJECT)) for p in [*PROJECT.glob("cli/*.py"), *PROJECT.glob("txmdb/**/*.py")]
                 if p.name != "vocabulary.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_statistics_columns_declared_once_in_the_models():
    from txmdb.analysis import cycling, gradient, particles
    from txmdb.analysis._frames import ROW_LABELS
    from txmdb.db import models as m

    def kernel_columns(model):  # the model's, less the labels the pipeline adds to each row (map, unit)
        return tuple(c for c in m.data_columns(model) if c not in ROW_LABELS)

    assert "map" in m.data_columns(m.Particle) and "gradient_unit" in m.data_columns(m.VectorSizeStat)
    assert particles.PARTICLE_COLUMNS == kernel_columns(m.Particle)
    assert particles.DEPTH_COLUMNS == kernel_columns(m.DepthProfile)
    assert particles.EDGE_HISTOGRAM_COLUMNS == kernel_columns(m.EdgeHistogram)
    assert {k: gradient.GRADIENT_TABLES[k] for k in gradient.GRADIENT_TABLES} == {
        k: kernel_columns(m.STATISTICS_TABLES[k]) for k in gradient.GRADIENT_TABLES}
    assert cycling.CYCLE_COLUMNS == list(m.data_columns(m.Cycle))
    # No literal column list of a statistics table left in the kernels or the queries.
    for path in ("txmdb/analysis/particles.py", "txmdb/analysis/gradient.py", "txmdb/analysis/cycling.py",
                 "txmdb/query.py"):
        assert '"tangential_excess_weighted",' not in (PROJECT / path).read_text()
        assert '"equivalent_radius_vox",' not in (PROJECT / path).read_text()
        assert '"coulombic_efficiency_pct",' not in (PROJECT / path).read_text()


def test_kernels_raise_value_error_never_txmdb_errors():
    import numpy as np

    from txmdb.analysis.cycling import cycle_metrics, retention
    from txmdb.analysis.xas import k_edge
    from txmdb.synthetic.spectra import ni_k_edge_spectrum

    for path in (PROJECT / "txmdb" / "analysis").glob("*.py"):
        assert not re.search(r"^\s*(from txmdb\.errors|import txmdb\.errors)", path.read_text(), re.M), path.name
    energy, mu = ni_k_edge_spectrum(8342.0)
    keep = energy >= 8320.0  # one energy left in the pre-edge window
    calls = [
        lambda: k_edge(energy[keep], mu[keep]),
        lambda: cycle_metrics(_one_record(), active_mass_g=None, upper_cutoff_v=None, ce_convention="ratio"),
        lambda: retention(_one_record().assign(discharge_capacity_mah=1.0, discharge_capacity_mah_g=np.nan),
                          cycle=7),
    ]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        assert not isinstance(info.value, TxmdbError)


def _one_record():
    import pandas as pd

    return pd.DataFrame({"cycle": [1], "step": [1], "step_type": ["charge"], "time_s": [0.0], "voltage_v": [3.5],
                         "current_a": [0.001]})


def test_services_name_values_not_options(catalog):
    from txmdb.catalog.cycling import ingest_cycling
    from txmdb.catalog.samples import add_cell, add_sample
    from txmdb.catalog.spectroscopy import add_xrd, ingest_xas

    with catalog.session() as s:
        add_sample(s, "S")
    calls = {
        ("active_mass_mg",): lambda s: add_cell(s, "C", sample="S", active_mass_mg=-2.0),
        ("ni_fraction",): lambda s: add_sample(s, "T", ni_fraction=1.5),
        ("ce_convention",): lambda s: add_cell(s, "C", sample="S", active_mass_mg=2.0, ce_convention="ratio"),
        ("active_mass_mg", "loading_mg_cm2", "area_cm2", "active_fraction"):
            lambda s: add_cell(s, "C", sample="S", loading_mg_cm2=8.0),
        ("reference_cycle",): lambda s: ingest_cycling(catalog, "run.csv", cell="C", reference_cycle=0),
        ("upper_cutoff_v",): lambda s: ingest_cycling(catalog, "run.csv", cell="C", upper_cutoff_v=float("nan")),
        ("i003_i104",): lambda s: add_xrd(catalog, sample="S", i003_i104=-1.0),
        ("mode",): lambda s: ingest_xas(catalog, "x.xdi", sample="S", edge="Ni-K", mode="TEY"),
        ("depth_um",): lambda s: ingest_xas(catalog, "x.xdi", sample="S", edge="Ni-K", depth_um=-1.0),
    }
    for parameters, call in calls.items():
        with catalog.session() as s, pytest.raises(ParameterError) as info:
            call(s)
        assert info.value.parameters == parameters
        assert "--" not in str(info.value), str(info.value)
    with catalog.session() as s:
        from txmdb.db.models import Cell, Sample

        assert s.query(Sample).count() == 1 and s.query(Cell).count() == 0


@pytest.mark.parametrize("args, line", [
    (["cell", "add", "C9", "--sample", "S", "--active-mass-mg", "-2"],
     "error: --active-mass-mg: active mass -2.0 mg is not a positive number"),
    (["sample", "add", "T", "--ni", "1.5"], "error: --ni: Ni fraction 1.5 is not a fraction between 0 and 1"),
    (["cell", "add", "C9", "--sample", "S", "--loading-mg-cm2", "8"],
     "error: --active-mass-mg, --loading-mg-cm2, --area-cm2, --active-fraction: cell 'C9' needs its active mass, "
     "or its loading, area and active fraction"),
    (["cycling", "ingest", "run.csv", "--cell", "C", "--reference-cycle", "0"],
     "error: --reference-cycle: reference cycle 0 is not a cycle number (cycles count from 1 to 2147483647)"),
    (["cycling", "ingest", "run.csv", "--cell", "C", "--upper-cutoff", "-4"],
     "error: --upper-cutoff: upper cut-off -4.0 V is not a positive voltage"),
    (["xrd", "add", "--sample", "S", "--i003-i104", "-1"],
     "error: --i003-i104: (003)/(104) ratio -1.0 is not a positive number"),
    (["xrd", "add", "--sample", "S", "--i003-i104", "1", "--a", "0"], "error: --a: a 0.0 is not a positive number"),
    (["xas", "ingest", "x.xdi", "--sample", "S", "--edge", "Ni-K", "--mode", "TEY"],
     "error: --mode: mode 'TEY' does not fit edge Ni-K; use one of transmission, fluorescence"),
])
def test_cli_adds_its_options_to_service_errors(cli, args, line):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr == line + "\n"
    rows = cli("query", "sql", "SELECT (SELECT count(*) FROM samples) AS s, (SELECT count(*) FROM cells) AS c, "
                              "(SELECT count(*) FROM xrd_results) AS x", "--format", "csv")
    assert rows.stdout.splitlines()[1] == "1,0,0"


def test_kernel_error_is_translated_once_naming_the_file(cli, tmp_path):
    from txmdb.analysis.xrd import CU_KALPHA1_ANGSTROM
    from txmdb.synthetic.spectra import layered_xrd_pattern, write_columns

    tt, intensity = layered_xrd_pattern(wavelength_angstrom=CU_KALPHA1_ANGSTROM, d_range_angstrom=(2.3, 6.0))
    pattern = tmp_path / "no104.xy"
    write_columns(pattern, [tt, intensity], names=["2theta", "intensity"])
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    result = cli("xrd", "add", "--sample", "S", "--pattern", pattern, "--wavelength", str(CU_KALPHA1_ANGSTROM))
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {pattern}: (104) reflection"), line
    assert Path(pattern).exists()
