"""``QUERY.rows`` after review (session 19), on SQLite and PostgreSQL: a query computed in
pandas has no rows, and says so before it runs anything (it used to run the whole query
first)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from txmdb import query


def test_rows_of_a_pandas_query_fail_before_any_statement_runs(catalog):
    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    sa.event.listen(catalog.engine, "before_cursor_execute", seen)
    try:
        for name in ("cells", "retention", "summary"):
            spec = query.QUERIES[name]
            needs = {p.name: 2 for p in spec.parameters if p.default is ...}
            with pytest.raises(TypeError, match=f"query {name} is computed in pandas: it has no rows"):
                spec.function.rows(catalog, **needs)
        assert statements == []
        assert len(query.samples.rows(catalog)) == 0 and statements      # a query of one statement runs
        assert len(query.cells(catalog)) == 0                             # and the pandas one as a frame
    finally:
        sa.event.remove(catalog.engine, "before_cursor_execute", seen)
