"""``query sql`` can read but never write, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

WRITES = [
    "INSERT INTO samples (name, meta, created_at) VALUES ('evil', '{}', '2020-01-01')",
    "UPDATE samples SET name = 'evil'",
    "DELETE FROM samples",
    "DROP TABLE samples",
    "CREATE TABLE evil (a integer)",
    "ALTER TABLE samples ADD COLUMN evil integer",
    "SELECT 1; DELETE FROM samples",
    "SELECT 1; COMMIT; DELETE FROM samples",
    "WITH gone AS (DELETE FROM samples RETURNING *) SELECT * FROM gone",
]
SQLITE_ONLY = ["ATTACH DATABASE '{tmp}/evil.db' AS evil", "PRAGMA user_version = 7", "PRAGMA journal_mode = DELETE",
               "VACUUM"]
PG_ONLY = ["SELECT setval('samples_id_seq', 100)",
           "CREATE TEMP TABLE evil AS SELECT 1", "SELECT nextval('samples_id_seq')", "TRUNCATE samples"]


@pytest.fixture
def populated(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod-NMC", "--morphology", "rod").exit_code == 0
    assert cli("sample", "add", "gravel-NMC", "--morphology", "gravel").exit_code == 0
    return cli


def _names(cli):
    return sorted(r["sample"] for r in json.loads(cli("query", "samples", "--format", "json").stdout))


def test_select_works(populated):
    result = populated("query", "sql", "SELECT name FROM samples WHERE morphology = 'rod'", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"name": "rod-NMC"}]


def test_semicolon_inside_string_is_not_a_second_statement(populated):
    result = populated("query", "sql", "SELECT 'a;b' AS x;", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"x": "a;b"}]


def _refused(cli, statement, tmp_path):
    before = _names(cli)
    result = cli("query", "sql", statement.replace("{tmp}", str(tmp_path)))
    assert result.exit_code == 1, (statement, result.output)
    assert result.stderr.startswith("error: query sql"), result.stderr
    assert "Traceback" not in result.output
    assert _names(cli) == before
    assert not (tmp_path / "evil.db").exists()
    count = cli("query", "sql", "SELECT count(*) AS n FROM samples", "--format", "json")
    assert json.loads(count.stdout) == [{"n": 2}]


@pytest.mark.parametrize("statement", WRITES)
def test_writes_fail_cleanly(populated, statement, tmp_path):
    _refused(populated, statement, tmp_path)


def test_backend_specific_writes_fail_cleanly(populated, tmp_path):
    statements = SQLITE_ONLY if populated.url.startswith("sqlite") else PG_ONLY
    for statement in statements:
        _refused(populated, statement, tmp_path)


def test_repeated_column_names_are_numbered(populated, tmp_path):
    populated("cell", "add", "C1", "--sample", "rod-NMC", "--active-mass-mg", "3")
    result = populated("query", "sql", "SELECT * FROM samples JOIN cells ON cells.sample_id = samples.id",
                       "--format", "json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["id"] == row["sample_id"] and "id_2" in row and "name_2" in row
    out = tmp_path / "join.parquet"
    assert populated("query", "sql", "SELECT * FROM samples JOIN cells ON cells.sample_id = samples.id",
                     "--format", "parquet", "-o", out).exit_code == 0
