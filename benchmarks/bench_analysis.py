"""Whole TXM analysis of a 20-million-voxel × 60-energy stack (DESIGN §7).

Edge extraction + particles + gradient statistics for f = 1, 2, 3, timed end to end,
with the peak resident memory of the process that runs the analysis (a fresh child
process, so building the stack does not count). Goal: < 60 s on 2 cores, < 1.5 GB.

    python benchmarks/bench_analysis.py                 # build (once) and run
    python benchmarks/bench_analysis.py --stack FILE    # any stack txmdb can open
    python benchmarks/bench_analysis.py --workers 1 --precision float64

The stack is the edge benchmark's (``bench_edge.build``), cached under ``benchmarks/out/``
(4.8 GB for 272³ × 60 float32): a rod-like particle of radius 0.48·n from
:mod:`txmdb.synthetic.tomogram`, noise 0.01 on a unit edge step, voxel 30 nm.
"""

from __future__ import annotations

import argparse
import json
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


def run(stack: Path, workers: int, precision: str) -> dict:
    """Analyse ``stack`` in this process; return timings and peak RSS."""
    from txmdb.analysis.edge import edge_parameters
    from txmdb.io.hdf5 import open_stack
    from txmdb.pipeline import AnalysisOptions, analyze_stack, table_records

    results = OUT / "bench_analysis_results.h5"
    t0 = time.perf_counter()
    info = open_stack(stack)
    out = analyze_stack(info, AnalysisOptions(params=edge_parameters("Ni"), workers=workers,
                                              precision=precision), results_path=results)
    t_analysis = time.perf_counter() - t0
    t1 = time.perf_counter()
    n_rows = sum(len(table_records(t)) for t in out.tables.values())
    t_records = time.perf_counter() - t1
    s = out.tables["gradient_summaries"]
    scan = s[s["particle"].isna()].sort_values("bin_factor")
    return {
        "stack": str(stack), "shape": list(info.shape), "voxels": int(info.n_slices * info.shape[2] * info.shape[3]),
        "workers": workers, "precision": precision,
        "wall_s": round(t_analysis, 2), "timings_s": {k: round(v, 2) for k, v in out.timings_s.items()},
        "table_rows": n_rows, "to_records_s": round(t_records, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "n_valid_voxels": out.n_valid_voxels, "n_particles": out.n_particles,
        "tangential_excess": scan["tangential_excess"].round(3).tolist(),
        "n_vectors": scan["n_vectors"].tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stack", type=Path, help="existing stack (default: build one under benchmarks/out)")
    ap.add_argument("--size", type=int, default=272, help="edge of the cubic synthetic stack, voxels")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--precision", choices=("float32", "float64"), default="float32")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    stack = args.stack or build_stack(args.size)
    if args.child:
        print(json.dumps(run(stack, args.workers, args.precision)))
        return
    # the analysis runs in a fresh process: its peak RSS is the analysis' alone
    proc = subprocess.run([sys.executable, __file__, "--child", "--stack", str(stack),
                           "--workers", str(args.workers), "--precision", args.precision],
                          check=True, capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
