"""The catalogue commands through the CLI, on SQLite and PostgreSQL, good and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from txmdb.db.migrate import head_revision


def _counts(url):
    import sqlalchemy as sa

    from txmdb.db.engine import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in ("samples", "cells")}
    engine.dispose()
    return counts


def test_init_twice_is_idempotent(cli):
    first = cli("init")
    second = cli("init")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert head_revision() in second.output
    assert cli("db", "check").exit_code == 0


def test_sample_round_trip(cli):
    assert cli("init").exit_code == 0
    result = cli("sample", "add", "rod-NMC", "--morphology", "rod", "--orientation", "radial",
                 "--ni", "0.6", "--mn", "0.2", "--co", "0.2", "--meta", "batch=7", "--meta", "route=hydrothermal")
    assert result.exit_code == 0, result.output
    listed = cli("sample", "list", "--format", "json")
    rows = json.loads(listed.stdout)
    assert [r["sample"] for r in rows] == ["rod-NMC"]
    assert rows[0]["meta"] == {"batch": "7", "route": "hydrothermal"}
    assert rows[0]["ni_fraction"] == 0.6
    shown = cli("sample", "show", "rod-NMC")
    assert shown.exit_code == 0 and "radial" in shown.stdout


def test_cell_add_and_list_csv(cli, tmp_path):
    cli("init")
    cli("sample", "add", "gravel-NMC")
    result = cli("cell", "add", "G1", "--sample", "gravel-NMC", "--loading-mg-cm2", "8", "--area-cm2", "1.5",
                 "--active-fraction", "0.9")
    assert result.exit_code == 0, result.output
    out = tmp_path / "cells.csv"
    assert cli("cell", "list", "--format", "csv", "-o", out).exit_code == 0
    text = out.read_text()
    assert text.splitlines()[0].startswith("cell,sample")
    assert "0.0108" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "add", "dup"], "exists already"),
        (["cell", "add", "C9", "--sample", "nobody", "--active-mass-mg", "3"], "no sample named 'nobody'"),
        (["cell", "add", "C9", "--sample", "dup", "--active-mass-mg", "0"], "positive"),
        (["cell", "add", "C9", "--sample", "dup", "--active-mass-mg", "-2"], "positive"),
        (["cell", "add", "C9", "--sample", "dup", "--loading-mg-cm2", "8"], "--area-cm2"),
        (["cell", "add", "C9", "--sample", "dup"], "--active-mass-mg"),
        (["sample", "add", "new", "--meta", "novalue"], "malformed --meta"),
        (["sample", "add", "new", "--meta", "=x"], "malformed --meta"),
        (["sample", "add", "new", "--ni", "1.5"], "fraction"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(cli, args, message):
    cli("init")
    assert cli("sample", "add", "dup").exit_code == 0
    before = _counts(cli.url)
    result = cli(*args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert _counts(cli.url) == before


def test_uninitialised_database_names_init(cli):
    result = cli("sample", "list")
    assert result.exit_code == 1
    assert "txmdb init" in result.stderr


def test_newer_schema_database(cli):
    import sqlalchemy as sa

    from txmdb.db.engine import make_engine

    cli("init")
    engine = make_engine(cli.url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    engine.dispose()
    for args in (["sample", "list"], ["init"], ["db", "check"]):
        result = cli(*args)
        assert result.exit_code == 1, args
        assert "newer than this txmdb" in result.stderr


def test_downgrade_and_upgrade_commands(cli):
    cli("init")
    refused = cli("db", "downgrade", "base")
    assert refused.exit_code == 2 and "give --yes" in refused.stderr and "base" not in cli("db", "current").stdout
    assert cli("db", "downgrade", "base", "--yes").exit_code == 0
    assert "base" in cli("db", "current").stdout
    assert cli("db", "check").exit_code == 1
    assert cli("db", "upgrade").exit_code == 0
    assert head_revision() in cli("db", "current").stdout


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "txmdb.cli.main", *args], capture_output=True, text=True, env=env)


def test_invalid_url_exit_1_no_traceback():
    result = _run("--db", "mysql://root:hunter2@x/y", "init")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert result.stderr.startswith("error:")


def test_unreachable_postgres_hides_password():
    result = _run("--db", "postgresql://lab:hunter2@127.0.0.1:1/txmdb", "sample", "list")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_sqlite_folder(tmp_path):
    result = _run("--db", str(tmp_path / "no" / "such" / "x.db"), "init")
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_usage_error_is_exit_2():
    assert _run("sample", "add").returncode == 2
    assert _run("no-such-command").returncode == 2


def test_env_var_selects_database(tmp_path):
    import os

    env = dict(os.environ, TXMDB_URL=f"sqlite:///{tmp_path / 'env.db'}")
    assert _run("init", env=env).returncode == 0
    assert (tmp_path / "env.db").exists()


def test_show_as_parquet(cli, tmp_path):
    import pandas as pd

    cli("init")
    cli("sample", "add", "rod", "--ni", "0.6", "--morphology", "rod")
    out = tmp_path / "show.parquet"
    result = cli("sample", "show", "rod", "--format", "parquet", "-o", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert dict(zip(frame["field"], frame["value"]))["ni_fraction"] == "0.6"
