"""Attacks on the spectral surfaces of issue 11 (DESIGN §11): reference names and files, --lcf,
--gradient-map, --map filters, txm export --map destinations, damaged results files and
--clusters beyond the valid voxels. Every CLI test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.test_spectral_cli import (  # noqa: F401  (lab is a fixture)
    XAS, _analyze, _count, _read, _results, _rows, _store_files, _write_reference, lab,
)
from tests.test_spectral_cli import E as _E
from txmdb.io.maps import map_shape, maps_in, read_map
from txmdb.errors import InputError


def _one_line(result, line: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.output == f"error: {line}\n"


def _nothing_analysed(lab) -> None:
    assert _count(lab, "analyses") == 0
    assert not [p for p in _store_files(lab) if "analyses" in p.parts]


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- reference names
HOSTILE_NAMES = ["<b>NiO</b>", "Ni:O", "Ni/O\\x", "it's \"NiO\"", "NiО", "nio"]   # "NiО": a Cyrillic О


def test_hostile_reference_names_round_trip_through_lcf_maps_and_queries(lab):
    """Markup, colons, slashes, quotes, a look-alike and another case are names like any: each
    is its own reference, its own fraction:NAME map, filterable and exported."""
    energy, mu = _read(XAS / "ref_NiO.txt")
    for k, name in enumerate(HOSTILE_NAMES):
        # a scaled NiO: another file, the same normalised spectrum
        file = _write_reference(lab.tmp / f"hostile{k}.txt", energy, mu * (1.5 + k))
        result = lab("xas", "ingest", file, "--reference", name, "--edge", "Ni-K")
        assert result.exit_code == 0, result.output
    assert sorted(r["reference_name"] for r in _rows(lab, "SELECT reference_name FROM xas_measurements")) == \
        sorted(["NiO", "LiNiO2", *HOSTILE_NAMES])
    assert _analyze(lab, "--lcf", "NiO,LiNiO2").exit_code == 0
    plain = read_map(_results(lab, 1), "fraction:NiO")
    for k, name in enumerate(HOSTILE_NAMES, start=2):
        result = _analyze(lab, "--lcf", f"{name},LiNiO2", "--gradient-map", f"edge,fraction:{name}")
        assert result.exit_code == 0, result.output
        results = _results(lab, k)
        assert maps_in(results) == ("edge", "white_line", "white_line_height", f"fraction:{name}",
                                    "fraction:LiNiO2", "rfactor")
        np.testing.assert_allclose(read_map(results, f"fraction:{name}"), plain, atol=1e-4, equal_nan=True)
        rows = json.loads(lab("query", "gradient", "--map", f"fraction:{name}", "--format", "json").stdout)
        assert rows and {r["map"] for r in rows} == {f"fraction:{name}"}
        assert {r["gradient_unit"] for r in rows} == {"1/nm"}
    out = lab.tmp / "hostile.h5"
    result = lab("txm", "export", lab.scan, "--map", f"fraction:{HOSTILE_NAMES[1]}", "-o", out)
    assert result.exit_code == 1      # the latest analysis has fraction:nio, not fraction:Ni:O
    assert "map 'fraction:Ni:O' does not exist in this analysis" in result.output
    assert lab("txm", "export", lab.scan, "--map", "fraction:nio", "-o", out).exit_code == 0
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["map"][()], read_map(_results(lab, 1 + len(HOSTILE_NAMES)), "fraction:nio"))
        assert f["map"].attrs["txmdb_map"] == "fraction:nio"


@pytest.mark.parametrize("name, line", [
    ("a,b", "--reference: reference name 'a,b' must be at most 100 characters without commas or control characters"),
    ("a\nb", "--reference: reference name 'a\\nb' must be at most 100 characters without commas or control "
             "characters"),
    ("", "--reference: a reference spectrum needs a non-empty name"),
    (" \t", "--reference: a reference spectrum needs a non-empty name"),
    ("x" * 101, f"--reference: reference name '{'x' * 101}' must be at most 100 characters without commas or "
                "control characters"),
], ids=["comma", "newline", "empty", "blank", "long"])
def test_unusable_reference_names_are_one_line_and_store_nothing(lab, name, line):
    before = _store_files(lab)
    _one_line(lab("xas", "ingest", XAS / "ref_NiO.txt", "--reference", name, "--edge", "Ni-K"), line)
    assert _count(lab, "xas_measurements") == 2 and _store_files(lab) == before


# ----------------------------------------------------------------------------- reference files
def test_hostile_reference_files(lab):
    energy, mu = _read(XAS / "ref_NiO.txt")
    bad = {}
    for label, value in (("nan", np.nan), ("inf", np.inf)):
        m = mu.copy()
        m[50] = value
        bad[label] = (_write_reference(lab.tmp / f"{label}.txt", energy, m), f"line 51: μ is {label} (NaN or inf)")
    twice = energy.copy()
    twice[60] = twice[59]
    bad["dup"] = (_write_reference(lab.tmp / "dup.txt", twice, mu),
                  f"duplicate energy {twice[59]:g} eV at lines 60 and 61")
    bad["one"] = (_write_reference(lab.tmp / "one.txt", energy[:1], mu[:1]), "too few points: 1 rows, need at least 5")
    before = _store_files(lab)
    for label, (file, problem) in bad.items():
        _one_line(lab("xas", "ingest", file, "--reference", label, "--edge", "Ni-K"), f"{file}: {problem}")
    assert _count(lab, "xas_measurements") == 2 and _store_files(lab) == before
    # reversed rows and energies in eV instead of keV are the same spectrum: the same fractions
    _write_reference(lab.tmp / "reversed.txt", energy[::-1], mu[::-1] * 2.0)
    np.savetxt(lab.tmp / "in_ev.txt", np.column_stack([energy, mu * 3.0]), fmt="%.6f")
    for name, file in (("reversed", "reversed.txt"), ("in_ev", "in_ev.txt")):
        assert lab("xas", "ingest", lab.tmp / file, "--reference", name, "--edge", "Ni-K").exit_code == 0
    for name in ("NiO", "reversed", "in_ev"):
        assert _analyze(lab, "--lcf", f"{name},LiNiO2").exit_code == 0
    maps = [read_map(_results(lab, k), f"fraction:{name}") for k, name in enumerate(("NiO", "reversed", "in_ev"), 1)]
    np.testing.assert_allclose(maps[1], maps[0], atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(maps[2], maps[0], atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("damage", ["changed", "deleted"])
def test_lcf_refuses_a_reference_whose_store_file_changed_or_went(lab, damage):
    path = Path(_rows(lab, "SELECT spectrum_path FROM xas_measurements WHERE reference_name = 'NiO'")[0]
                ["spectrum_path"])
    if damage == "changed":
        os.chmod(path, 0o644)
        data = path.read_bytes()
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        problem = "changed since it was recorded (SHA-256 differs)"
    else:
        path.unlink()
        problem = "is missing"
    _one_line(_analyze(lab, "--lcf", "NiO,LiNiO2"), f"store file {path} {problem}")
    _nothing_analysed(lab)


# ----------------------------------------------------------------------------- --gradient-map, --map
def test_gradient_map_garbage_is_one_line_and_stores_nothing(lab):
    maps = "edge, white_line, white_line_height, fraction:NAME, rfactor, cluster"
    _one_line(_analyze(lab, "--gradient-map", "fraction:"), f"map: map 'fraction:' does not exist; maps: {maps}")
    _one_line(_analyze(lab, "--gradient-map", "edge,edgy"), f"map: map 'edgy' does not exist; maps: {maps}")
    _one_line(_analyze(lab, "--lcf", "NiO,LiNiO2", "--gradient-map", "fraction:nio"),
              "gradient_maps: map 'fraction:nio' is not computed by this analysis; its maps: edge, white_line, "
              "white_line_height, fraction:NiO, fraction:LiNiO2, rfactor")
    _one_line(_analyze(lab, "--clusters", "2", "--gradient-map", "cluster"),
              "map: map 'cluster' holds labels: it has no gradient")
    _nothing_analysed(lab)
    # the same map twice is computed once
    assert _analyze(lab, "--gradient-map", "edge, edge ,edge").exit_code == 0
    rows = json.loads(lab("query", "gradient", "--format", "json").stdout)
    assert rows and {r["map"] for r in rows} == {"edge"}
    keys = [tuple(v for k, v in r.items() if k != "map" and not k.startswith(("mean", "median", "p90", "n_")))
            for r in rows]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("value", ["fraction:", "zz", "a\x00b", "fraction:\t"])
def test_map_filter_garbage_is_one_line(lab, value):
    result = lab("query", "gradient", "--map", value)
    _one_line(result, f"--map: map {value!r} does not exist; maps: edge, white_line, white_line_height, "
                      "fraction:NAME, rfactor, cluster")
    assert _count(lab, "analyses") == 0


# ----------------------------------------------------------------------------- txm export --map
def test_map_export_never_replaces_a_scans_raw_stack(lab):
    """Renaming an exported map onto the scan's own file destroyed the raw stack (fixed)."""
    assert _analyze(lab).exit_code == 0
    stack_sha = _sha(lab.stack)
    _one_line(lab("txm", "export", lab.scan, "--map", "edge", "-o", lab.stack),
              f"{lab.stack}: is the file of TXM scan {lab.scan}; give another file to write")
    link = lab.tmp / "link.h5"
    link.symlink_to(lab.stack)
    _one_line(lab("txm", "export", lab.scan, "--map", "edge", "-o", link),
              f"{link}: is the file of TXM scan {lab.scan}; give another file to write")
    assert _sha(lab.stack) == stack_sha and link.is_symlink()
    results = _results(lab, 1)
    _one_line(lab("txm", "export", lab.scan, "--map", "edge", "-o", results),
              f"{results}: is inside the catalogue's results store {lab.store}; write outside it")
    # another scan's file: the stack export is refused as well
    second = lab.tmp / "second.h5"
    shutil.copy(lab.stack, second)
    os.utime(second)
    with h5py.File(second, "a") as f:
        f.attrs["copy"] = 1                                    # other bytes: another scan
    other = lab("txm", "ingest", second, "--sample", "mix").stdout.strip().splitlines()[-1]
    second_sha = _sha(second)
    for args in (["--map", "edge"], []):
        _one_line(lab("txm", "export", lab.scan, *args, "-o", second),
                  f"{second}: is the file of TXM scan {other}; give another file to write")
    assert _sha(second) == second_sha and _sha(lab.stack) == stack_sha


def test_map_export_destinations_follow_the_stack_export(lab):
    assert _analyze(lab, "--lcf", "NiO,LiNiO2").exit_code == 0
    t = lab.tmp
    plain = t / "plain.h5"
    plain.write_text("keep me\n")
    folder = t / "folder.h5"
    folder.mkdir()
    full = t / "full.tif"
    full.symlink_to("/dev/full")
    cases = {
        t / "none" / "m.h5": f"{t / 'none' / 'm.h5'}: folder {t / 'none'} does not exist",
        folder: f"{folder}: is a folder; give the name of a file to write",
        plain / "m.h5": f"{plain / 'm.h5'}: {plain} is not a folder",
        Path("/dev/full"): "/dev/full: a map is written as .h5 or .hdf5 or .tif or .tiff; the name ends in nothing",
        full: f"{full}: is not a regular file; a map is written under a temporary name and renamed",
        t / "m.h5.png": f"{t / 'm.h5.png'}: a map is written as .h5 or .hdf5 or .tif or .tiff; the name ends in .png",
    }
    for target, line in cases.items():
        _one_line(lab("txm", "export", lab.scan, "--map", "rfactor", "-o", target), line)
    assert plain.read_text() == "keep me\n" and not list(t.glob("*.partial")) and not list(t.glob(".*tmp*"))
    # an existing file is replaced, as the stack export replaces it; a link is replaced by the file
    for target in (plain, t / "UPPER.TIF"):
        assert lab("txm", "export", lab.scan, "--map", "rfactor", "-o", target).exit_code == 0
    with h5py.File(plain, "r") as f:
        np.testing.assert_array_equal(f["map"][()], read_map(_results(lab, 1), "rfactor"))


# ----------------------------------------------------------------------------- damaged results files
def _damaged_copy(lab, tmp: Path, damage) -> Path:
    assert _analyze(lab, "--lcf", "NiO,LiNiO2").exit_code == 0
    copy = tmp / "damaged.h5"
    shutil.copy(_results(lab, 1), copy)
    os.chmod(copy, 0o644)
    with h5py.File(copy, "a") as f:
        damage(f)
    return copy


def _set_refs(text):
    def damage(f):
        f["fractions"].attrs["references"] = text
    return damage


def _reshape(name, shape):
    def damage(f):
        attrs = dict(f[name].attrs)
        del f[name]
        f.create_dataset(name, data=np.zeros(shape, np.float32)).attrs.update(attrs)
    return damage


def _as_group(name):
    def damage(f):
        del f[name]
        f.create_group(name)
    return damage


REFS = "the 'references' attribute of /fractions is not a JSON list of distinct reference names"


@pytest.mark.parametrize("damage, name, problem", [
    (_set_refs("not json"), "fraction:NiO", REFS),
    (_set_refs("<script>alert(1)</script>"), "edge", REFS),
    (_set_refs('{"NiO": 1}'), "fraction:NiO", REFS),
    (_set_refs('["NiO", "NiO"]'), "fraction:NiO", REFS),
    (_set_refs('[1, 2]'), "rfactor", REFS),
    (_reshape("fractions", (3, 10, 14, 14)), "fraction:LiNiO2",
     "data set /fractions of map 'fraction:LiNiO2' is not a numeric map of 2 or 3 axes with one row per reference"),
    (_reshape("edge_ev", (7,)), "edge", "data set /edge_ev of map 'edge' is not a numeric map of 2 or 3 axes"),
    (_as_group("rfactor"), "rfactor", "data set /rfactor of map 'rfactor' is not a numeric map of 2 or 3 axes"),
], ids=["not-json", "markup", "object", "twice", "numbers", "rows", "1-d", "group"])
def test_damaged_results_file_is_one_input_error_naming_it(lab, tmp_path, damage, name, problem):
    """What the web slice and the report read (read_map, map_shape): an InputError whose source
    is the file, which the slice route turns into its 404 line and the CLI into one line."""
    copy = _damaged_copy(lab, tmp_path, damage)
    for read in (lambda f: read_map(f, name, 0), lambda f: map_shape(f, name), lambda f: read_map(f, name)):
        with h5py.File(copy, "r") as f, pytest.raises(InputError) as caught:
            read(f)
        assert (caught.value.source, caught.value.problem) == (str(copy), problem)


def test_results_file_changed_in_the_store_is_refused_by_export(lab):
    assert _analyze(lab).exit_code == 0
    results = _results(lab, 1)
    os.chmod(results, 0o644)
    with h5py.File(results, "a") as f:
        f["edge_ev"].attrs["tampered"] = 1
    out = lab.tmp / "m.tif"
    _one_line(lab("txm", "export", lab.scan, "--map", "edge", "-o", out),
              f"{results}: the results file of analysis 1 changed since it was recorded (SHA-256 differs)")
    assert not out.exists()


# ----------------------------------------------------------------------------- --clusters
def test_more_clusters_than_valid_voxels_stores_nothing_also_on_dask(lab):
    """The refusal comes once the data are read; the running row and its temporary are withdrawn."""
    from dask.distributed import LocalCluster

    from txmdb.synthetic.tomogram import write_stack

    # three voxels keep their edge, the others are flat (masked)
    mu = np.where(np.arange(lab.inside.size).reshape(lab.inside.shape)[None] <
                  np.flatnonzero(lab.inside)[3], lab.mu, np.float32(0.05))
    few = lab.tmp / "few.h5"
    write_stack(few, mu, _E, voxel_size_nm=25.0)
    lab.scan = lab("txm", "ingest", few, "--sample", "mix").stdout.strip().splitlines()[-1]
    valid = 3
    line = f"{few}: {valid + 1} clusters asked for, but only {valid} voxels have a valid spectrum"
    _one_line(_analyze(lab, "--clusters", str(valid + 1)), line)
    _nothing_analysed(lab)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        _one_line(_analyze(lab, "--clusters", str(valid + 1), "--scheduler", cluster.scheduler_address), line)
    _nothing_analysed(lab)
    assert _count(lab, "cluster_spectra") == 0 and _count(lab, "pca_variance") == 0


def test_report_escapes_a_reference_name_with_markup(lab):
    energy, mu = _read(XAS / "ref_NiO.txt")
    file = _write_reference(lab.tmp / "markup.txt", energy, mu * 2.0)
    assert lab("xas", "ingest", file, "--reference", "<b id=evil>x</b>", "--edge", "Ni-K").exit_code == 0
    assert _analyze(lab, "--lcf", "<b id=evil>x</b>,LiNiO2", "--clusters", "2").exit_code == 0
    out = lab.tmp / "report.html"
    result = lab("report", "compare", "mix", "-o", out)
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "<b id=evil>" not in html and "&lt;b id=evil&gt;x&lt;/b&gt;" in html
