"""``txm export SCAN --map NAME -o FILE`` (issue 11 item 5): .h5 and .tif read back (tifffile, with
the voxel size in the resolution tags and ImageJ's metadata), NaN where masked, the analysis'
parameters; one-line refusals. SQLite and PostgreSQL through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from tests.test_map_statistics import EXPECTED, _json, _one_line_error, analysed  # noqa: F401 (fixture)

VOXEL_NM = EXPECTED["rod40"]["voxel_size_nm"]


def _results(cli) -> tuple[dict, np.ndarray]:
    (analysis,) = _json(cli, "query", "analyses")
    with h5py.File(analysis["results_path"], "r") as f:
        return analysis, f["edge_ev"][()]


def test_export_edge_map_as_hdf5(analysed, tmp_path):
    cli, scan = analysed
    analysis, edge = _results(cli)
    out = tmp_path / "edge.h5"
    result = cli("txm", "export", str(scan), "--map", "edge", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == (f"scan {scan}: map edge of analysis {analysis['analysis_id']} "
                                                      f"written to {out}")
    with h5py.File(out, "r") as f:
        assert list(f) == ["map"]
        data = f["map"]
        assert data.dtype == np.float32 and data.shape == edge.shape
        np.testing.assert_array_equal(data[()], edge)
        assert np.isnan(data[()]).any() and np.isfinite(data[()]).any()       # NaN where masked
        attrs = dict(data.attrs)
    assert attrs["voxel_size_nm"] == VOXEL_NM
    assert attrs["txmdb_map"] == "edge" and attrs["txmdb_unit"] == "eV"
    assert attrs["txmdb_scan_id"] == scan and attrs["txmdb_analysis_id"] == analysis["analysis_id"]
    parameters = json.loads(attrs["txmdb_parameters"])
    assert parameters["bin_factors"] == [1, 2] and parameters["gradient_maps"] == ["edge"]
    assert parameters["edge"]["edge"] == EXPECTED["rod40"]["parameters"]["edge_window_ev"]


def test_export_white_line_map_as_hdf5_and_tiff(analysed, tmp_path):
    cli, scan = analysed
    analysis, _ = _results(cli)
    with h5py.File(analysis["results_path"], "r") as f:
        white = f["white_line_ev"][()]
    for out in (tmp_path / "w.h5", tmp_path / "w.tif"):
        assert cli("txm", "export", str(scan), "--map", "white_line", "-o", out).exit_code == 0
    with h5py.File(tmp_path / "w.h5", "r") as f:
        np.testing.assert_array_equal(f["map"][()], white)
        assert f["map"].attrs["txmdb_unit"] == "eV"
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "w.tif"), white)
    assert np.isnan(white).any() and np.isfinite(white).any()


@pytest.mark.parametrize("suffix", [".tif", ".tiff"])
def test_export_edge_map_as_imagej_tiff(analysed, tmp_path, suffix):
    cli, scan = analysed
    analysis, edge = _results(cli)
    out = tmp_path / f"edge{suffix}"
    assert cli("txm", "export", str(scan), "--map", "edge", "-o", out).exit_code == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej
        assert len(tif.pages) == edge.shape[0]                # one page per z slice
        data = tif.asarray()
        page = tif.pages[0]
        assert page.dtype == np.float32
        x_res, y_res = page.tags["XResolution"].value, page.tags["YResolution"].value
        meta = tif.imagej_metadata
        axes = tif.series[0].axes
    np.testing.assert_array_equal(data, edge)                  # NaN where masked, bit for bit
    # pixels per unit (nm): 1 / voxel size, in both resolution tags; ImageJ's unit and z spacing
    assert x_res[0] / x_res[1] == pytest.approx(1 / VOXEL_NM) and y_res == x_res
    assert meta["unit"] == "nm" and meta["spacing"] == pytest.approx(VOXEL_NM)
    assert meta["slices"] == edge.shape[0] and axes == "ZYX"
    assert f"txmdb_analysis_id = {analysis['analysis_id']}" in meta["Info"]


def test_export_refusals_are_one_line_and_write_nothing(analysed, tmp_path):
    cli, scan = analysed
    out = tmp_path / "m.h5"
    registered = cli("txm", "export", str(scan), "--map", "edge", "--registered", "-o", out)
    _one_line_error(registered, "--map writes a map of an analysis")
    assert "--registered applies to the stack export only" in registered.output
    _one_line_error(cli("txm", "export", str(scan), "--map", "edges", "-o", out),
                    "map 'edges' does not exist; maps: edge, white_line, white_line_height, fraction:NAME, rfactor, "
                    "cluster")
    _one_line_error(cli("txm", "export", str(scan), "--map", "rfactor", "-o", out),
                    "map 'rfactor' does not exist in this analysis; its maps: edge, white_line, white_line_height")
    _one_line_error(cli("txm", "export", str(scan), "--map", "fraction:NiO", "-o", tmp_path / "m.tif"),
                    "map 'fraction:NiO' does not exist in this analysis; its maps: edge, white_line, "
                    "white_line_height")
    _one_line_error(cli("txm", "export", str(scan), "--map", "edge", "-o", tmp_path / "m.png"),
                    "a map is written as .h5 or .hdf5 or .tif or .tiff; the name ends in .png")
    _one_line_error(cli("txm", "export", str(scan), "--map", "edge", "-o", tmp_path / "no" / "m.h5"),
                    "does not exist")
    _one_line_error(cli("txm", "export", "999", "--map", "edge", "-o", out), "no TXM scan with id 999")
    assert sorted(p.name for p in Path(tmp_path).iterdir() if p.suffix in (".h5", ".tif", ".png")) == []


def test_export_of_a_scan_without_analysis_is_refused(cli, tmp_path):
    from tests.test_map_statistics import GOLDEN

    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    ingest = cli("txm", "ingest", GOLDEN / EXPECTED["rod40"]["file"], "--sample", "rod")
    scan = ingest.stdout.strip().splitlines()[-1]
    _one_line_error(cli("txm", "export", scan, "--map", "edge", "-o", tmp_path / "m.h5"),
                    f"scan {scan} has no finished analysis; run 'txmdb txm analyze {scan}' first")
    assert not (tmp_path / "m.h5").exists()


def test_export_a_map_of_an_earlier_analysis(analysed, tmp_path):
    """--analysis ID reaches an earlier analysis' maps (a re-run without them made it unreachable)."""
    cli, scan = analysed
    (first,) = _json(cli, "query", "analyses")
    rerun = cli("txm", "analyze", str(scan), "--bin", "1", "--white-line", "none")
    assert rerun.exit_code == 0, rerun.output
    _one_line_error(cli("txm", "export", str(scan), "--map", "white_line", "-o", tmp_path / "latest.h5"),
                    "map 'white_line' does not exist in this analysis; its maps: edge")
    out = tmp_path / "first.h5"
    result = cli("txm", "export", str(scan), "--map", "white_line", "--analysis", str(first["analysis_id"]), "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (f"scan {scan}: map white_line of analysis {first['analysis_id']} "
                                              f"written to {out}")
    with h5py.File(first["results_path"], "r") as f, h5py.File(out, "r") as g:
        np.testing.assert_array_equal(g["map"][()], f["white_line_ev"][()])
        assert g["map"].attrs["txmdb_analysis_id"] == first["analysis_id"]
    _one_line_error(cli("txm", "export", str(scan), "--map", "edge", "--analysis", "999", "-o", tmp_path / "x.h5"),
                    f"scan {scan} has no finished analysis 999; see 'txmdb txm show {scan}'")
    stack = cli("txm", "export", str(scan), "--analysis", str(first["analysis_id"]), "-o", tmp_path / "s.h5")
    assert stack.exit_code == 2
    assert stack.stderr == ("error: --analysis ID chooses the analysis of --map NAME; the stack export has none "
                            "(see 'txmdb txm export --help')\n")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "s.h5").exists()
