"""Reads with fewer round trips (docs/performance.md, "PostgreSQL round trips"), on SQLite and PostgreSQL.

- :func:`txmdb.db.engine.read_connection` reads in autocommit on PostgreSQL, so psycopg keeps
  and reuses prepared statements (it forgets them at every ROLLBACK);
- :func:`txmdb.db.engine.shared_reads` gives a page's queries one connection, yet each query
  still sees what another connection committed a moment before;
- ``query.cells`` is one statement and gives the rows the ORM gave;
- the pool keeps the connections a busy server uses at once instead of closing them.
"""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import sqlalchemy as sa

from txmdb import query
from txmdb.db import models as m
from txmdb.db.engine import POOL_SIZE, read_connection, shared_reads
from txmdb.errors import DatabaseError


def _fill(catalog) -> None:
    """Two samples with cells (one by loading × area × fraction, one without a mass)."""
    with catalog.session() as s:
        for name, morphology in (("A", "rod"), ("B", "gravel")):
            s.add(m.Sample(name=name, morphology=morphology, meta={}))
        s.flush()
        ids = dict(s.execute(sa.select(m.Sample.name, m.Sample.id)).all())
        s.add_all([
            m.Cell(name="A2", sample_id=ids["A"], active_mass_mg=12.5, electrolyte="LP30", upper_cutoff_v=4.3),
            m.Cell(name="A1", sample_id=ids["A"], loading_mg_cm2=10.0, area_cm2=1.5, active_fraction=0.9,
                   cell_format="CR2032", notes="n"),
            m.Cell(name="B1", sample_id=ids["B"]),
        ])


class _Counter:
    """Pool checkouts and new DBAPI connections of an engine, and its SQL statements."""

    def __init__(self, engine):
        self.checkouts = self.connects = self.statements = 0
        sa.event.listen(engine.pool, "checkout", self._checkout)
        sa.event.listen(engine.pool, "connect", self._connect)
        sa.event.listen(engine, "before_cursor_execute", self._statement)

    def _checkout(self, *_):
        self.checkouts += 1

    def _connect(self, *_):
        self.connects += 1

    def _statement(self, *_):
        self.statements += 1


def test_cells_is_one_statement_with_the_orm_rows(catalog):
    from txmdb.catalog.samples import CELL_FIELDS, active_mass_g

    def by_orm(*where):  # what the ORM-based query gave
        with catalog.session() as s:
            stmt = sa.select(m.Cell).join(m.Sample).where(*where).order_by(m.Cell.name)
            return pd.DataFrame([{"cell": c.name, "sample": c.sample.name, **{f: getattr(c, f) for f in CELL_FIELDS},
                                  "active_mass_g": active_mass_g(c)} for c in s.scalars(stmt)],
                                columns=["cell", "sample", *CELL_FIELDS, "active_mass_g"])

    _fill(catalog)
    counter = _Counter(catalog.engine)
    frame = query.cells(catalog)
    assert counter.statements == 1
    pd.testing.assert_frame_equal(frame, by_orm())
    assert list(frame["cell"]) == ["A1", "A2", "B1"]
    assert frame["active_mass_g"].tolist()[:2] == pytest.approx([0.0135, 0.0125])
    assert pd.isna(frame["active_mass_g"].iloc[2])
    pd.testing.assert_frame_equal(query.cells(catalog, sample=["B"]), by_orm(m.Sample.name == "B"))
    pd.testing.assert_frame_equal(query.cells(catalog, morphology=["rod"]), by_orm(m.Sample.morphology == "rod"))
    pd.testing.assert_frame_equal(query.cells(catalog, sample=["nobody"]), by_orm(m.Sample.name == "nobody"))


def test_a_block_of_shared_reads_checks_out_one_connection_and_answers_alike(catalog):
    _fill(catalog)
    alone = [query.samples(catalog), query.cells(catalog, sample=["A"]), query.xrd(catalog, sample=["A"]),
             query.scans(catalog, sample=["A"])]
    counter = _Counter(catalog.engine)
    with shared_reads(catalog.engine):
        together = [query.samples(catalog), query.cells(catalog, sample=["A"]), query.xrd(catalog, sample=["A"]),
                    query.scans(catalog, sample=["A"])]
    assert counter.checkouts == 1 and counter.statements == 4
    for one, other in zip(alone, together):
        pd.testing.assert_frame_equal(one, other)
    # Outside the block, each query checks out its own again.
    query.samples(catalog)
    query.cells(catalog)
    assert counter.checkouts == 3


def test_shared_reads_see_what_another_connection_committed_at_once(catalog):
    _fill(catalog)
    with shared_reads(catalog.engine):
        assert list(query.samples(catalog)["sample"]) == ["A", "B"]
        with catalog.session() as s:  # another connection commits meanwhile (another process would too)
            s.add(m.Sample(name="C", morphology="rod", meta={}))
        assert list(query.samples(catalog)["sample"]) == ["A", "B", "C"]
        with catalog.session() as s:
            s.execute(sa.update(m.Cell).where(m.Cell.name == "B1").values(active_mass_mg=5.0))
        assert query.cells(catalog, cell=["B1"])["active_mass_g"].tolist() == [0.005]


def test_a_failed_statement_does_not_spoil_the_block(catalog):
    _fill(catalog)
    with shared_reads(catalog.engine):
        with pytest.raises((sa.exc.SQLAlchemyError, DatabaseError)):  # SQLite's is an OperationalError
            with read_connection(catalog.engine) as conn:
                conn.exec_driver_sql("SELECT no_such_column FROM samples")
        assert list(query.samples(catalog)["sample"]) == ["A", "B"]


def test_nested_reads_in_a_block_on_another_thread_get_their_own_connection(catalog):
    _fill(catalog)
    seen = {}
    with shared_reads(catalog.engine):
        with read_connection(catalog.engine) as outer:
            # The block's connection is busy here: a nested read takes another, not the same.
            with read_connection(catalog.engine) as inner:
                seen["nested"] = inner is not outer
                seen["rows"] = inner.execute(sa.select(sa.func.count()).select_from(m.Sample)).scalar()
    worker = threading.Thread(target=lambda: seen.update(thread=len(query.samples(catalog))))
    worker.start()
    worker.join()
    assert seen == {"nested": True, "rows": 2, "thread": 2}


def test_reads_on_postgresql_run_in_autocommit_and_reuse_prepared_statements(catalog):
    if catalog.engine.dialect.name != "postgresql":
        # SQLite: reads keep the driver's own mode (no BEGIN before a SELECT there).
        with read_connection(catalog.engine) as conn:
            assert "isolation_level" not in conn.get_execution_options()
        return
    _fill(catalog)
    with read_connection(catalog.engine) as conn:
        assert conn.connection.dbapi_connection.autocommit is True
    with catalog.engine.connect() as conn:  # the pool took it back in its default mode
        assert conn.connection.dbapi_connection.autocommit is False
    with shared_reads(catalog.engine):
        for _ in range(8):
            query.samples(catalog, sample=["A"])
        with read_connection(catalog.engine) as conn:
            prepared = conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements").scalars().all()
    assert any("FROM samples" in text and "samples.name IN" in text for text in prepared), prepared
    # After the pool took the connection back (a ROLLBACK would make psycopg forget), it still holds the plan.
    with read_connection(catalog.engine) as conn:
        again = conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements").scalars().all()
    assert any("samples.name IN" in text for text in again), again
    # Writes still run in transactions: a failed session leaves nothing.
    with pytest.raises(Exception):
        with catalog.session() as s:
            s.add(m.Sample(name="D", morphology="rod", meta={}))
            s.flush()
            raise RuntimeError("abort")
    assert "D" not in set(query.samples(catalog)["sample"])


def test_the_pool_keeps_the_connections_a_busy_server_uses_at_once(catalog):
    _fill(catalog)
    counter = _Counter(catalog.engine)
    barrier = threading.Barrier(10)

    def busy():
        with read_connection(catalog.engine) as conn:
            barrier.wait(timeout=30)  # ten connections out at once
            conn.execute(sa.select(m.Sample.id)).all()

    for _ in range(3):
        workers = [threading.Thread(target=busy) for _ in range(10)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert POOL_SIZE >= 10
    assert counter.checkouts == 30
    assert counter.connects <= 10  # the first round's; SQLAlchemy's default (5 kept) reopened 5 per round


def test_latest_status_is_the_newest_analysis_status_of_each_scan(catalog):
    """query.scans' latest_status (a scalar subquery now, a third join before): the status of each
    scan's newest analysis whatever its state, NULL without one; the status filter uses it."""
    _fill(catalog)
    histories = {"a": ["done", "failed"], "b": ["done"], "c": [], "d": ["failed", "done", "running"], "e": ["failed"]}
    with catalog.session() as s:
        sample = s.scalar(sa.select(m.Sample.id).where(m.Sample.name == "A"))
        for state, statuses in histories.items():
            scan = m.TXMScan(sample_id=sample, state=state, layout="dxchange", data_path="/d", energy_path="/e",
                             ndim=3, shape=[4, 2, 2, 2], dtype="float32", n_energies=4, energy_min_ev=8300.0,
                             energy_max_ev=8400.0, energies_ev=[], file_path=f"/{state}.h5", file_size_bytes=1,
                             file_sha256=state * 64)
            s.add(scan)
            s.flush()
            for status in statuses:
                s.add(m.Analysis(scan_id=scan.id, status=status, parameters={}, txmdb_version="t",
                                 input_sha256="0" * 64, timings_s={}, mean_edge_ev=8340.0 + len(status)))
                s.flush()
    frame = query.scans(catalog)
    latest = {state: None if pd.isna(status) else status for state, status in zip(frame["state"], frame["latest_status"])}
    assert latest == {"a": "failed", "b": "done", "c": None, "d": "running", "e": "failed"}
    shown = dict(zip(frame["state"], frame["analysis_id"]))  # the newest finished one (none for c and e)
    assert pd.isna(shown["c"]) and pd.isna(shown["e"]) and shown["a"] < shown["b"] < shown["d"]
    with catalog.session() as s:
        done = dict(s.execute(sa.select(m.Analysis.scan_id, sa.func.max(m.Analysis.id))
                              .where(m.Analysis.status == "done").group_by(m.Analysis.scan_id)).all())
    assert {int(i) for i in frame["analysis_id"].dropna()} == set(done.values())
    for status, states in (("failed", ["a", "e"]), ("running", ["d"]), ("done", ["b"])):
        assert list(query.scans(catalog, status=[status])["state"]) == states
    assert list(query.scans(catalog, status=["failed", "running"], state=["e", "d", "b"])["state"]) == ["d", "e"]
