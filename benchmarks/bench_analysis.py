"""Whole TXM analysis of a 20-million-voxel × 60-energy stack (DESIGN §7).

What ``txmdb txm analyze`` does for one scan, timed end to end in a fresh child process
(so building the stack does not count in its peak RSS): re-check the file's SHA-256,
edge extraction, particles, gradient statistics for f = 1, 2, 3, the results file, and
``record_analysis`` — the statistics rows written into a SQLite catalogue. Goal: < 60 s
on 2 cores, peak RSS < 1.5 GB.

    python benchmarks/bench_analysis.py                 # build (once) and run
    python benchmarks/bench_analysis.py --stack FILE    # any stack txmdb can open
    python benchmarks/bench_analysis.py --workers 2

The stack is the edge benchmark's (``bench_edge.build``), cached under ``benchmarks/out/``
(4.8 GB for 272³ × 60 float32): a rod-like particle of radius 0.48·n from
:mod:`txmdb.synthetic.tomogram`, noise 0.01 on a unit edge step, voxel 30 nm. The file is
in the page cache (warm) after the first run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def build_stack(size: int) -> Path:
    """The edge benchmark's cached ``size``³ × 60 stack (built by it when missing)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_edge import build  # one builder for both benchmarks

    return build(size)


def run(stack: Path, workers: int) -> dict:
    """Ingest ``stack`` into a fresh SQLite catalogue, then time ``analyze_scan`` on it."""
    from sqlalchemy import func, select

    from txmdb.analysis.edge import edge_parameters
    from txmdb.catalog.txm import analyze_scan, ingest_scan
    from txmdb.db.models import STATISTICS_TABLES
    from txmdb.pipeline import AnalysisOptions

    from _catalog import fresh_catalog

    catalog = fresh_catalog(OUT / "bench_analysis")
    t0 = time.perf_counter()
    scan, _ = ingest_scan(catalog, stack, sample="rod")
    t_ingest = time.perf_counter() - t0

    options = AnalysisOptions(params=edge_parameters("Ni"), workers=workers or None)
    t0 = time.perf_counter()
    analysis = analyze_scan(catalog, scan.id, options)
    wall = time.perf_counter() - t0
    with catalog.session() as session:
        rows = sum(session.scalar(select(func.count()).select_from(m)) for m in STATISTICS_TABLES.values())
    return {
        "stack": str(stack), "shape": list(scan.shape), "workers": workers,
        "wall_s": round(wall, 2), "ingest_s": round(t_ingest, 2),
        "timings_s": {k: round(v, 2) for k, v in analysis.timings_s.items()},
        "statistics_rows": rows,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "n_valid_voxels": analysis.n_valid_voxels, "n_particles": analysis.n_particles,
        "load_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stack", type=Path, help="existing stack (default: build one under benchmarks/out)")
    ap.add_argument("--size", type=int, default=272, help="edge of the cubic synthetic stack, voxels")
    ap.add_argument("--workers", type=int, default=1, help="kernel threads (0: the product's default, one per core)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    stack = args.stack or build_stack(args.size)
    if args.child:
        print(json.dumps(run(stack, args.workers)))
        return
    load_before = os.getloadavg()[0]
    # the analysis runs in a fresh process: its peak RSS is the analysis' alone
    proc = subprocess.run([sys.executable, __file__, "--child", "--stack", str(stack),
                           "--workers", str(args.workers)],
                          check=True, capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_before"] = round(load_before, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
