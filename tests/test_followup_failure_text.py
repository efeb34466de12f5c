"""A failed record's stored error is one line with its control characters escaped, not cut at a line break."""

from __future__ import annotations

import json

import h5py

from txmdb.store import failure_text


def test_failure_text_escapes_instead_of_truncating():
    text = failure_text(RuntimeError("first\nsecond\x1b[2J"))
    assert text == "RuntimeError: first\\nsecond\\x1b[2J"
    assert len(failure_text("x\n" * 5000)) == 2000


def test_analysis_of_a_file_named_with_a_newline_stores_the_reason(cli, tmp_path):
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    energies = energy_grid(40)
    edge, _ = particle_field((24, 24, 24), kind="rod", seed=3)
    path = tmp_path / "scan\nnight.h5"
    write_stack(path, SyntheticStack(edge, energies, noise=0.01), energies, layout="dxchange", voxel_size_nm=30)
    ingest = cli("txm", "ingest", path, "--sample", "rod")
    assert ingest.exit_code == 0, ingest.output
    scan_id = ingest.stdout.strip().splitlines()[-1]
    with h5py.File(path, "r+") as f:  # the file changes after ingest: the analysis must fail
        f.attrs["touched"] = 1
    result = cli("txm", "analyze", scan_id, "--bin", "1")
    assert result.exit_code == 1
    rows = json.loads(cli("query", "sql", "SELECT status, error FROM analyses", "--format", "json").stdout)
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    error = rows[0]["error"]
    assert "\n" not in error
    assert "scan\\nnight.h5" in error
    assert f"the file changed since scan {scan_id} was ingested" in error
