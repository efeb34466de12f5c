"""The built wheel works on its own: installed into a fresh venv, ``txmdb init`` finds its migrations."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(PROJECT)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = out.glob("txmdb-*.whl")
    return wheel


def test_wheel_has_no_generic_top_level_names(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"txmdb"}
    assert "txmdb/migrations/env.py" in names
    assert any(n.startswith("txmdb/migrations/versions/0001") for n in names)
    assert "txmdb/cli/main.py" in names
    assert "txmdb/report/templates/report.html" in names


def test_wheel_in_fresh_venv_runs_init(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # Dependencies come from this test environment (no network needed); txmdb itself only from the wheel.
    site = Path(sysconfig.get_paths()["purelib"])
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(f"{site}\n")
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TXMDB_URL", "TXMDB_STORE")}
    txmdb = env_dir / "bin" / "txmdb"
    located = subprocess.run([py, "-c", "import txmdb.migrations as m; print(m.__file__)"], cwd=work, env=env,
                             check=True, capture_output=True, text=True).stdout
    assert str(env_dir) in located
    for _ in range(2):
        result = subprocess.run([txmdb, "init"], cwd=work, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert (work / "txmdb.db").exists()
    result = subprocess.run([txmdb, "sample", "add", "s1"], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
