"""Down to 0005 and back up with a full catalogue: every row of the older schema's tables survives.

SQLite's batch mode copies a table to drop a column; with foreign keys enforced that copy
deleted or refused the rows referring to it (a sample's XAS rows), see txmdb.db.migrate.
"""

from __future__ import annotations

import shutil

import sqlalchemy as sa

from txmdb.catalog import open_catalog

# Rows the downgrade drops by design: named references and statistics of maps other than the edge.
_DROPPED_BY_DESIGN = {
    "xas_measurements": "sample_id IS NOT NULL",
    **{t: "map = 'edge'" for t in ("particles", "edge_histograms", "depth_profiles", "theta_histograms",
                                   "gradient_summaries", "vector_size_stats", "vector_size_histograms",
                                   "u_theta_profiles")},
}
_SAMPLES = ("SELECT s.name, s.morphology, c.name, x.edge, x.mode FROM samples s JOIN cells c ON c.sample_id = s.id "
            "JOIN xas_measurements x ON x.sample_id = s.id ORDER BY s.name, c.name, x.id")


def _full_catalogue(catalog, raw):
    from txmdb import jobs
    from txmdb.accounts import add_user
    from txmdb.catalog.registration import register_scan
    from txmdb.catalog.spectroscopy import ingest_xas
    from txmdb.demo import populate_demo
    from txmdb.harvest.record import save
    from txmdb.synthetic.spectra import measured_reference

    populate_demo(catalog, raw, size=32, n_energies=40, echo=lambda _: None)
    reference = raw / "reference-NiO.txt"
    shutil.copyfile(measured_reference("NiO"), reference)
    ingest_xas(catalog, reference, reference="NiO", edge="Ni-K", mode="transmission")
    with catalog.engine.connect() as conn:
        scan_id = conn.execute(sa.text("SELECT min(id) FROM txm_scans")).scalar()
    register_scan(catalog, scan_id, accept_poor=True)
    jobs.enqueue(catalog, "analyze", {}, scan_id=scan_id)
    save(catalog, str(raw / "rod-NMC-txm.h5"), rule="tomograms", kind="txm", status="ingested",
         record_kind="txm_scans", record_id=scan_id)
    add_user(catalog, "alice", "editor", "correct horse battery staple")


def _counts(engine, tables) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in tables}


def test_downgrade_to_0005_and_back_keeps_every_row(cli, tmp_path):
    assert cli("init").exit_code == 0
    catalog = open_catalog(cli.url, cli.store, check=False)
    try:
        _full_catalogue(catalog, tmp_path / "raw")
        head_tables = set(sa.inspect(catalog.engine).get_table_names())
        with catalog.engine.connect() as conn:
            expected = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}"
                                                 + (f" WHERE {_DROPPED_BY_DESIGN[t]}" if t in _DROPPED_BY_DESIGN
                                                    else ""))).scalar() for t in head_tables}
            values = conn.execute(sa.text(_SAMPLES)).all()
        for table in ("samples", "cells", "cycling_runs", "xas_measurements", "xrd_results", "txm_scans",
                      "analyses", "registrations", "particles", "jobs", "harvested_files", "users"):
            assert expected[table] > 0, table
        catalog.engine.dispose()

        down = cli("db", "downgrade", "0005", "--yes")
        assert down.exit_code == 0, down.output
        old_tables = set(sa.inspect(catalog.engine).get_table_names()) - {"alembic_version"}
        assert {"jobs", "harvested_files", "users"}.isdisjoint(old_tables)
        assert _counts(catalog.engine, old_tables) == {t: expected[t] for t in old_tables}
        catalog.engine.dispose()

        up = cli("db", "upgrade")
        assert up.exit_code == 0, up.output
        assert set(sa.inspect(catalog.engine).get_table_names()) == head_tables
        assert _counts(catalog.engine, old_tables) == {t: expected[t] for t in old_tables}
        with catalog.engine.connect() as conn:
            assert conn.execute(sa.text(_SAMPLES)).all() == values
            if conn.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # enforcement is back on
    finally:
        catalog.engine.dispose()
