"""Missing values print as empty cells in the terminal table of every list command, as the web
pages show them; ``txmdb jobs`` printed None, NaN and NaT (``query`` and ``sample list`` None
and <NA>). CSV keeps its empty fields and JSON its nulls. Both backends.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from tests.test_jobs import make_scans
from txmdb import jobs
from txmdb.tables import table_text


def test_the_table_shows_every_kind_of_missing_value_as_an_empty_cell():
    frame = pd.DataFrame({"name": ["a", None], "x": [1.25, np.nan], "n": pd.array([3, None], dtype="Int64"),
                          "at": [pd.Timestamp("2024-05-01 12:00", tz="UTC"), pd.NaT], "meta": [{"k": 1}, None],
                          "any": [pd.NA, 2]})
    assert table_text(frame, "table") == ('name    x n                        at     meta any\n'
                                          '   a 1.25 3 2024-05-01 12:00:00+00:00 {"k": 1}    \n'
                                          '                                                 2\n')
    assert table_text(frame, "csv") == 'name,x,n,at,meta,any\na,1.25,3,2024-05-01 12:00:00+00:00,"{""k"": 1}",\n,,,,,2\n'
    assert table_text(frame.iloc[:0], "table") == "(no rows)\n"


def test_jobs_prints_missing_values_as_empty_cells(catalog, cli, tmp_path):
    scan, = make_scans(catalog, tmp_path, 1)
    done = jobs.enqueue(catalog, "analyze", {}, scan_id=scan)
    queued = jobs.enqueue(catalog, "register", {}, scan_id=scan)
    assert jobs.claim(catalog, "w:1").id == done
    jobs.finish(catalog, done, "w:1", result={"analysis_id": 1})
    listed = jobs.list_jobs(catalog).set_index("job_id")
    table = cli("jobs")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["job_id", "kind", "scan_id", "status", "stale", "attempts", "worker", "created_at",
                                "finished_at", "result", "error"]
    # the queued job has no worker, finish time, result or error: nothing after its creation time
    assert lines[2].split() == [str(queued), "register", str(scan), "queued", "False", "0",
                                *str(listed.loc[queued, "created_at"]).split()]
    assert lines[1].split() == [str(done), "analyze", str(scan), "done", "False", "1", "w:1",
                                *str(listed.loc[done, "created_at"]).split(),
                                *str(listed.loc[done, "finished_at"]).split(), '{"analysis_id":', "1}"]
    assert not {"None", "NaN", "NaT", "<NA>", "nan"} & set(table.stdout.split())
    # the files keep their own spelling of nothing
    csv_row = cli("jobs", "-f", "csv").stdout.splitlines()[2].split(",")
    assert csv_row[7:9] == ["", ""]  # worker, lease_expires_at
    assert [j["worker"] for j in json.loads(cli("jobs", "-f", "json").stdout)] == ["w:1", None]


def test_query_tables_print_missing_values_as_empty_cells(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "A").exit_code == 0
    samples = cli("query", "samples")
    assert samples.exit_code == 0, samples.output
    assert samples.stdout.splitlines()[1].split()[:2] == ["A", "{}"]  # no material, fractions, source or notes
    sql = cli("query", "sql", "SELECT 1 AS a, NULL AS b, 'x' AS c")
    assert (sql.exit_code, sql.stdout) == (0, " a b c\n 1   x\n")
