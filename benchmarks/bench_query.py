"""Cross-sample queries over a catalogue of 10,000 analyses (DESIGN §7: well under a second).

Builds the catalogue once (SQLite in benchmarks/out/, or the PostgreSQL URL given as the
first argument), then times the queries a lab runs every day.

    python benchmarks/bench_query.py                      # SQLite
    python benchmarks/bench_query.py postgresql://…/db    # an existing, empty PostgreSQL database
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from txmdb import query
from txmdb.catalog import open_catalog
from txmdb.db import models as m
from txmdb.db.migrate import upgrade

N_SAMPLES, SCANS_PER_SAMPLE, BINS, THETA_BINS = 100, 100, (1, 2, 3), 36
OUT = Path(__file__).resolve().parent / "out"


def build(catalog) -> None:
    rng = np.random.default_rng(0)
    lo = np.arange(THETA_BINS) * 5.0
    ref = (np.cos(np.radians(lo)) - np.cos(np.radians(lo + 5))) / 2
    with catalog.session() as s:
        for i in range(N_SAMPLES):
            s.add(m.Sample(name=f"S{i:03d}", morphology="rod" if i % 2 else "gravel", meta={}))
        s.flush()
        sample_ids = list(s.scalars(m.Sample.__table__.select().with_only_columns(m.Sample.id)))
        scans = []
        for sid in sample_ids:
            for j in range(SCANS_PER_SAMPLE):
                scans.append(dict(sample_id=sid, state=f"cycled-{j % 5}", layout="dxchange", data_path="/exchange/data",
                                  energy_path="/exchange/energy", ndim=3, shape=[60, 100, 100, 100], dtype="float32",
                                  n_energies=60, energy_min_ev=8280.0, energy_max_ev=8420.0, energies_ev=[],
                                  voxel_size_nm=30.0, file_path=f"/data/{sid}/{j}.h5", file_size_bytes=1,
                                  file_sha256=f"{sid:032x}{j:032x}", ingested_at=m._now()))
        s.execute(m.TXMScan.__table__.insert(), scans)
        scan_ids = list(s.scalars(m.TXMScan.__table__.select().with_only_columns(m.TXMScan.id)))
        s.execute(m.Analysis.__table__.insert(), [
            dict(scan_id=sid, status="done", parameters={}, txmdb_version="bench", input_sha256="0" * 64,
                 started_at=m._now(), timings_s={}, gradient_unit="eV/nm", n_valid_voxels=10**6, n_particles=1,
                 mean_edge_ev=8340 + rng.normal()) for sid in scan_ids])
        analysis_ids = list(s.scalars(m.Analysis.__table__.select().with_only_columns(m.Analysis.id)))
        theta_rows, summaries = [], []
        for aid in analysis_ids:
            for f in BINS:
                p = rng.dirichlet(np.ones(THETA_BINS))
                for weighted in (False, True):
                    theta_rows.extend(dict(analysis_id=aid, particle=None, bin_factor=f, weighted=weighted,
                                           theta_lo=float(lo[k]), theta_hi=float(lo[k] + 5), probability=float(p[k]),
                                           reference=float(ref[k])) for k in range(THETA_BINS))
                summaries.append(dict(analysis_id=aid, particle=None, bin_factor=f, n_vectors=1000,
                                      mean_u=0.02, tangential_excess=1 + rng.random(),
                                      tangential_excess_weighted=1 + rng.random()))
            if len(theta_rows) > 200_000:
                s.execute(m.ThetaHistogram.__table__.insert(), theta_rows)
                theta_rows = []
        if theta_rows:
            s.execute(m.ThetaHistogram.__table__.insert(), theta_rows)
        s.execute(m.GradientSummary.__table__.insert(), summaries)


def timed(label: str, fn, repeat: int = 3) -> None:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        frame = fn()
        best = min(best, time.perf_counter() - t0)
    print(f"{label:<58} {best * 1000:8.1f} ms  ({len(frame):,} rows)")


def built_catalog(url: str, store: Path):
    """The catalogue at ``url``, at schema head, holding the 10,000 analyses (built if it is empty)."""
    OUT.mkdir(exist_ok=True)
    catalog = open_catalog(url, store, check=False)
    upgrade(catalog.engine)
    with catalog.session() as s:
        have = s.query(m.Analysis).count()
    if have == 0:
        t0 = time.perf_counter()
        build(catalog)
        print(f"built {N_SAMPLES * SCANS_PER_SAMPLE:,} analyses in {time.perf_counter() - t0:.1f} s")
    return catalog


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{OUT / 'query-bench.db'}"
    catalog = built_catalog(url, OUT / "query-bench-store")
    print(f"catalogue: {catalog.engine.url.render_as_string(hide_password=True)}")
    timed("query theta --sample S042 (100 scans)", lambda: query.theta(catalog, sample="S042"))
    timed("query theta --scan 5000 --bin 2 --unweighted", lambda: query.theta(catalog, scan=5000, bin=2, weighted=False))
    timed("query gradient --morphology rod --bin 3 (5,000 scans)", lambda: query.gradient_summary(catalog, morphology="rod", bin=3))
    timed("query scans (10,000 scans)", lambda: query.scans(catalog))
    timed("query summary (100 samples × 5 states)", lambda: query.summary(catalog))


if __name__ == "__main__":
    main()
