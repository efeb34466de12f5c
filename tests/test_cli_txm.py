"""TXM through the CLI on SQLite and PostgreSQL: golden numbers out of the catalogue, bad files, kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import DATA

GOLDEN = DATA / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


def _count(cli, table: str) -> int:
    return json.loads(cli("query", "sql", f"SELECT count(*) AS n FROM {table}", "--format", "json").stdout)[0]["n"]


def _store_files(cli) -> list[Path]:
    store = Path(cli.store)
    return sorted(p for p in store.rglob("*") if p.is_file()) if store.exists() else []


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod", "--morphology", "rod").exit_code == 0
    return cli


def _golden_args(case: str) -> list[str]:
    p = EXPECTED[case]["parameters"]
    window = lambda w: f"{w[0]}:{w[1]}"  # noqa: E731
    return ["--pre", window(p["pre_edge_ev"]), "--post", window(p["post_edge_ev"]), "--edge",
            window(p["edge_window_ev"]), "--min-jump", str(p["min_jump"]), "--snr", str(p["snr"]),
            "--theta-bins", str(p["theta_bins"]), "--bin", "1,2,3"]


@pytest.mark.parametrize("case", ["rod40", "rod96_2d"])
def test_golden_statistics_come_back_from_the_catalogue(lab, case):
    expected = EXPECTED[case]
    ingest = lab("txm", "ingest", GOLDEN / expected["file"], "--sample", "rod", "--state", "charged",
                 "--voxel-nm", str(expected["voxel_size_nm"]))
    assert ingest.exit_code == 0, ingest.output
    scan_id = ingest.stdout.strip().splitlines()[-1]
    assert scan_id.isdigit()
    result = lab("txm", "analyze", scan_id, *_golden_args(case))
    assert result.exit_code == 0, result.output

    scans = json.loads(lab("query", "scans", "--format", "json").stdout)
    assert scans[0]["n_valid_voxels"] <= expected["edge_map"]["valid_voxels"]
    assert scans[0]["voxel_size_nm"] == expected["voxel_size_nm"]

    theta = json.loads(lab("query", "theta", "--scan-level", "--format", "json").stdout)
    assert set(theta[0]) >= {"sample", "scan_id", "analysis_id", "particle", "bin_factor", "weighted", "theta_lo",
                             "theta_hi", "probability", "reference"}
    grad = json.loads(lab("query", "gradient", "--scan-level", "--format", "json").stdout)
    for factor, numbers in expected["binning"].items():
        f = int(factor)
        for weighted, key in ((False, "theta_probability"), (True, "theta_probability_weighted")):
            rows = sorted((r for r in theta if r["bin_factor"] == f and r["weighted"] == weighted),
                          key=lambda r: r["theta_lo"])
            assert [r["theta_lo"] for r in rows] == [5.0 * i for i in range(36)]
            np.testing.assert_allclose([r["probability"] for r in rows], numbers[key], atol=1e-6)
            np.testing.assert_allclose([r["reference"] for r in rows], numbers["reference"], atol=1e-6)
        (summary,) = [r for r in grad if r["bin_factor"] == f]
        assert summary["n_vectors"] == numbers["n_vectors"]
        assert summary["mean_u"] == pytest.approx(numbers["mean_u_ev_per_nm"], rel=1e-6)
        assert summary["gradient_unit"] == "eV/nm" and summary["map"] == "edge"
        assert summary["tangential_excess"] == pytest.approx(numbers["tangential_excess"], rel=1e-6)
        if "tangential_excess_weighted" in numbers:
            assert summary["tangential_excess_weighted"] == pytest.approx(numbers["tangential_excess_weighted"],
                                                                          rel=1e-6)

    shown = lab("txm", "show", scan_id)
    assert shown.exit_code == 0 and "gradient summary" in shown.stdout
    for table in ("vector-size", "edge-histogram", "depth-profile", "particles", "u-theta"):
        out = lab("query", table, "--format", "json")
        assert out.exit_code == 0, (table, out.output)
        assert json.loads(out.stdout), table


def test_reingest_returns_the_same_scan(lab):
    first = lab("txm", "ingest", GOLDEN / "rod96_2d.h5", "--sample", "rod")
    again = lab("txm", "ingest", GOLDEN / "rod96_2d.h5", "--sample", "rod")
    assert first.stdout.strip().splitlines()[-1] == again.stdout.strip().splitlines()[-1]
    assert _count(lab, "txm_scans") == 1


def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {}
    files["not hdf5"] = tmp / "text.h5"
    files["not hdf5"].write_text("this is not HDF5\n")
    files["truncated"] = tmp / "truncated.h5"
    files["truncated"].write_bytes((GOLDEN / "rod96_2d.h5").read_bytes()[:200_000])
    energies = np.linspace(8280, 8420, 20)
    good = np.ones((20, 4, 4, 4), "float32")

    def write(name, **datasets):
        path = tmp / f"{name.replace(' ', '_')}.h5"
        with h5py.File(path, "w") as f:
            for key, value in datasets.items():
                f[key] = value
        files[name] = path

    write("missing energy", **{"/exchange/data": good})
    write("no layout", **{"/foo/bar": good})
    write("wrong rank", **{"/exchange/data": np.ones((20, 4), "float32"), "/exchange/energy": energies})
    write("energy count", **{"/exchange/data": good, "/exchange/energy": energies[:-1]})
    dup = energies.copy()
    dup[3] = dup[2]
    write("duplicate energies", **{"/exchange/data": good, "/exchange/energy": dup})
    write("no finite voxel", **{"/exchange/data": np.full((20, 4, 4, 4), np.nan, "float32"), "/exchange/energy": energies})
    files["no such file"] = tmp / "absent.h5"
    return files


@pytest.mark.parametrize("case", ["not hdf5", "truncated", "missing energy", "no layout", "wrong rank",
                                  "energy count", "duplicate energies", "no finite voxel", "no such file"])
def test_bad_tomograms(lab, tmp_path, case):
    path = _bad_files(tmp_path)[case]
    before = (_count(lab, "txm_scans"), _store_files(lab))
    result = lab("txm", "ingest", path, "--sample", "rod")
    assert result.exit_code == 1, (case, result.output)
    assert path.name in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert (_count(lab, "txm_scans"), _store_files(lab)) == before


@pytest.mark.parametrize("args", [["--pre", "8320"], ["--edge", "8365:8325"], ["--bin", "0"], ["--bin", "a"],
                                  ["--pre", "8319:8320"], ["--theta-bins", "1"]])
def test_bad_analysis_options(lab, args):
    scan_id = lab("txm", "ingest", GOLDEN / "rod96_2d.h5", "--sample", "rod").stdout.strip().splitlines()[-1]
    before = (_count(lab, "analyses"), _store_files(lab))
    result = lab("txm", "analyze", scan_id, *args)
    assert result.exit_code == 1, (args, result.output)
    assert "Traceback" not in result.output
    assert (_count(lab, "analyses"), _store_files(lab)) == before


def test_unknown_scan(lab):
    result = lab("txm", "analyze", "999")
    assert result.exit_code == 1 and "999" in result.stderr


def test_killed_analysis_is_repaired_and_rerun_succeeds(lab, tmp_path):
    """SIGKILL in the middle of an analysis: its row stays 'running', no results file under a final
    name; db check --repair marks it failed; a rerun works (every step: tests/test_crash.py)."""
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    energies = energy_grid(40)
    edge, _ = particle_field((64, 64, 64), kind="rod", seed=3)
    path = tmp_path / "big.h5"
    write_stack(path, SyntheticStack(edge, energies, noise=0.01), energies, layout="dxchange", voxel_size_nm=30)
    scan_id = lab("txm", "ingest", path, "--sample", "rod").stdout.strip().splitlines()[-1]
    env = {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}
    proc = subprocess.Popen([sys.executable, "-m", "txmdb.cli.main", "--db", lab.url, "--store", str(lab.store),
                             "txm", "analyze", scan_id], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill once the temporary results file exists: the analysis is under way.
    deadline = time.monotonic() + 60
    analyses = Path(lab.store) / "analyses"
    while time.monotonic() < deadline and not (analyses.exists() and any(analyses.glob(".*tmp.*"))):
        time.sleep(0.02)
    assert proc.poll() is None, "the analysis finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _count(lab, "analyses WHERE status = 'running'") == 1
    assert not [p for p in _store_files(lab) if not p.name.startswith(".")]
    assert lab("db", "check", "--repair").exit_code == 0
    assert _count(lab, "analyses WHERE status = 'failed'") == 1
    rerun = lab("txm", "analyze", scan_id)
    assert rerun.exit_code == 0, rerun.output
    assert _count(lab, "analyses WHERE status = 'done'") == 1
    finals = [p for p in _store_files(lab) if p.suffix == ".h5" and not p.name.startswith(".")]
    assert len(finals) == 1


def test_default_windows_are_recorded_on_both_backends(lab):
    """The Ni preset's open window ends (≤ 8320, ≥ 8370 eV) are stored as JSON every backend accepts."""
    scan_id = lab("txm", "ingest", GOLDEN / "rod96_2d.h5", "--sample", "rod").stdout.strip().splitlines()[-1]
    result = lab("txm", "analyze", scan_id, "--bin", "1")
    assert result.exit_code == 0, result.output
    rows = json.loads(lab("query", "sql", "SELECT parameters FROM analyses", "--format", "json").stdout)
    params = rows[0]["parameters"]
    params = json.loads(params) if isinstance(params, str) else params
    assert params["edge"]["pre"] == ["-inf", 8320.0]
    assert params["edge"]["post"] == [8370.0, "inf"]
    assert params["bin_factors"] == [1]


def test_open_edge_window_is_refused_and_no_particles_is_reported(lab):
    scan_id = lab("txm", "ingest", GOLDEN / "rod96_2d.h5", "--sample", "rod").stdout.strip().splitlines()[-1]
    refused = lab("txm", "analyze", scan_id, "--edge", "8325:")
    assert refused.exit_code == 1 and "both ends" in refused.stderr
    empty = lab("txm", "analyze", scan_id, "--bin", "1", "--min-particle-voxels", "1000000")
    assert empty.exit_code == 0, empty.output
    assert "0 particles" in empty.stdout and "n/a" in empty.stdout


def test_same_tomogram_under_another_sample_is_refused(lab):
    assert lab("sample", "add", "gravel").exit_code == 0
    assert lab("txm", "ingest", GOLDEN / "rod96_2d.h5", "--sample", "rod").exit_code == 0
    result = lab("txm", "ingest", GOLDEN / "rod96_2d.h5", "--sample", "gravel")
    assert result.exit_code == 1
    assert "rod96_2d.h5" in result.stderr and "another sample" in result.stderr
    assert _count(lab, "txm_scans") == 1
