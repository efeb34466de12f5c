"""Dask benchmark (DESIGN §9): many small scans and one large scan on a 2-worker LocalCluster
vs the serial in-process run.

    python benchmarks/bench_distributed.py                     # 8 × 96³ scans + one 272³
    python benchmarks/bench_distributed.py --small 8 --small-size 96 --large-size 136

- **many small scans**: ``analyze_scans_distributed`` (one whole-pipeline task per scan,
  both workers busy) vs ``analyze_scan`` for each scan in turn.
- **one large scan**: ``analyze_scan_distributed`` (edge phase per slab and gradient
  kernel per halo slab on the workers, particles and the DB writes on the client) vs
  ``analyze_scan``.

Every timing includes the SHA-256 check of the file and the rows written into a SQLite
catalogue; the tables of the two runs are checked to be equal. Stacks are 60-energy
synthetic rods under ``benchmarks/out/`` (the large one is ``bench_edge``'s). The cluster
has 2 worker processes × 1 thread; with 2 cores the client competes with the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def small_stack(i: int, n: int) -> Path:
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    path = OUT / f"small_{n}cube_{i}.h5"
    if not path.exists():
        energies = energy_grid(60)
        edge, _ = particle_field((n, n, n), kind="rod" if i % 2 else "gravel", seed=10 + i,
                                 radius=0.45 * n)
        write_stack(path, SyntheticStack(edge, energies, noise=0.01, seed=i), energies,
                    layout="dxchange", voxel_size_nm=30.0)
    return path


def _catalog(name: str):
    from _catalog import fresh_catalog

    return fresh_catalog(OUT / "bench_distributed" / name)


def _summary(catalog, analysis) -> tuple:
    """What must agree between serial and cluster runs (gradient summaries incl. floats)."""
    import pandas as pd

    frame = pd.read_sql_query(
        f"SELECT particle, bin_factor, n_vectors, mean_u, tangential_excess "
        f"FROM gradient_summaries WHERE analysis_id = {analysis.id} ORDER BY particle, bin_factor",
        catalog.engine)
    return (analysis.n_valid_voxels, analysis.mean_edge_ev, repr(frame.to_dict("list")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=8, help="number of small scans")
    ap.add_argument("--small-size", type=int, default=96)
    ap.add_argument("--large-size", type=int, default=272)
    ap.add_argument("--only", choices=("small", "large"), help="run one of the two cases")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_edge import build

    from dask.distributed import LocalCluster

    from txmdb.analysis.edge import edge_parameters
    from txmdb.catalog.distributed import analyze_scan_distributed, analyze_scans_distributed
    from txmdb.catalog.txm import analyze_scan, ingest_scan
    from txmdb.pipeline import AnalysisOptions

    options = AnalysisOptions(params=edge_parameters("Ni"))
    smalls = [small_stack(i, args.small_size) for i in range(args.small)] if args.only != "large" else []
    large = build(args.large_size) if args.only != "small" else None
    results = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        for label, paths in (("small", smalls), ("large", [large])):
            if args.only and label != args.only:
                continue
            cat_s, cat_d = _catalog(f"{label}_serial"), _catalog(f"{label}_dask")
            ids_s = [ingest_scan(cat_s, p, sample="rod")[0].id for p in paths]
            ids_d = [ingest_scan(cat_d, p, sample="rod")[0].id for p in paths]
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            serial = [analyze_scan(cat_s, i, options) for i in ids_s]
            t_serial = time.perf_counter() - t0
            load1 = os.getloadavg()[0]
            t0 = time.perf_counter()
            if label == "small":
                dask_runs = sorted(analyze_scans_distributed(cat_d, ids_d, options, scheduler=address),
                                   key=lambda a: a.scan_id)
            else:
                dask_runs = [analyze_scan_distributed(cat_d, ids_d[0], options, scheduler=address)]
            t_dask = time.perf_counter() - t0
            same = [_summary(cat_s, a) for a in serial] == [_summary(cat_d, a) for a in dask_runs]
            results[label] = {
                "scans": len(paths), "voxels_per_scan": args.small_size ** 3 if label == "small" else args.large_size ** 3,
                "serial_s": round(t_serial, 2), "dask_s": round(t_dask, 2),
                "speedup": round(t_serial / t_dask, 2), "same_results": same,
                "load_before_serial": round(load0, 2), "load_before_dask": round(load1, 2),
                "load_after": round(os.getloadavg()[0], 2),
                # per-step wall times of the first scan (edge, particles, gradient, ...)
                "steps_serial_s": {k: round(v, 2) for k, v in serial[0].timings_s.items()},
                "steps_dask_s": {k: round(v, 2) for k, v in dask_runs[0].timings_s.items()},
            }
            print(json.dumps({label: results[label]}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
