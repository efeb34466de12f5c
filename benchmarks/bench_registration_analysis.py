"""Registration + registered analysis against the unregistered analysis, in one run (issue 10, DESIGN §7).

On the drifted 272³ × 60 stack of ``bench_registration`` (20.1 M voxels, 4.83 GB float32,
every difficulty of issue 10: contrast change, intensity changes, rings and flat-field
residue, noise, ±8-voxel random-walk drift with jumps), each measurement in a fresh child
process (its peak RSS is its own), the file in the page cache, a fresh SQLite catalogue
per child, the scan ingested before the clock starts:

- **unregistered** — ``analyze_scan(..., registration=None)``: what ``txm analyze --registration
  none`` does (SHA-256 check, edge extraction, particles, gradient statistics f = 1, 2, 3,
  results file, statistics rows);
- **registered** — ``register_scan`` (SHA-256 check, the estimate, rows) then
  ``analyze_scan`` with its default, the scan's latest registration: ``txm register`` then
  ``txm analyze``. Shift accuracy against the exact truth (rms per axis, worst);
- **integer** — :func:`txmdb.analysis.registration.integer_shifts` on the central 128³: the
  whole-voxel alignment the sub-voxel one is compared with.

Targets: registration + registered analysis ≤ 2× the unregistered analysis; peak RSS < 2 GB.
With ``--repeat N`` the unregistered and registered measurements alternate N times (on a
shared machine the load moves between runs); the ratio is also given from the best of each.

    python benchmarks/bench_registration_analysis.py            # 272³ (builds the stack once)
    python benchmarks/bench_registration_analysis.py --size 128 --repeat 2
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

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _errors(est, truth: np.ndarray) -> dict:
    from bench_registration import _errors as shift_errors

    return shift_errors(np.asarray(est), truth)


def _scan(path: Path, work: str):
    from _catalog import fresh_catalog

    from txmdb.catalog.txm import ingest_scan

    catalog = fresh_catalog(OUT / work)
    scan, _ = ingest_scan(catalog, path, sample="rod")
    return catalog, scan


def _analysis_row(analysis, wall: float) -> dict:
    return {"wall_s": round(wall, 2), "timings_s": {k: round(v, 2) for k, v in analysis.timings_s.items()},
            "n_valid_voxels": analysis.n_valid_voxels, "n_particles": analysis.n_particles,
            "mean_edge_ev": analysis.mean_edge_ev, "registration_id": analysis.registration_id}


def _options():
    from txmdb.analysis.edge import edge_parameters
    from txmdb.pipeline import AnalysisOptions

    return AnalysisOptions(params=edge_parameters("Ni"))


def measure_unregistered(path: Path) -> dict:
    from txmdb.catalog.txm import analyze_scan

    catalog, scan = _scan(path, "bench_reg_plain")
    t0 = time.perf_counter()
    analysis = analyze_scan(catalog, scan.id, _options(), registration=None)
    return {**_analysis_row(analysis, time.perf_counter() - t0), "peak_rss_mb": _peak_rss_mb()}


def measure_registered(path: Path) -> dict:
    from bench_registration import _truth

    from txmdb.catalog.registration import register_scan, shift_array
    from txmdb.catalog.txm import analyze_scan

    from txmdb.io.files import sha256_file

    reference, truth = _truth(path)
    catalog, scan = _scan(path, "bench_reg_registered")
    t0 = time.perf_counter()
    sha256_file(path)                            # what each command's file check costs (not in the totals)
    t_hash = time.perf_counter() - t0
    t0 = time.perf_counter()
    registration = register_scan(catalog, scan.id, reference_energy_ev=scan.energies_ev[reference])
    t_register = time.perf_counter() - t0
    rss_register = _peak_rss_mb()
    t0 = time.perf_counter()
    analysis = analyze_scan(catalog, scan.id, _options())
    t_analyze = time.perf_counter() - t0
    return {"register_s": round(t_register, 2), "hash_s": round(t_hash, 2), "register_rss_mb": rss_register,
            "analysis": _analysis_row(analysis, t_analyze), "total_s": round(t_register + t_analyze, 2),
            "peak_rss_mb": _peak_rss_mb(), "shifts": _errors(shift_array(registration), truth)}


def measure_integer(path: Path) -> dict:
    """The whole-voxel alignment of bench_registration, for the accuracy comparison."""
    from bench_registration import measure_integer as integer_alignment

    row = integer_alignment(path)
    return {"seconds": round(row["seconds"], 2),
            "shifts": {key: row[key] for key in ("rms_voxels", "max_voxels")},
            "rounded_truth": row["rounded_truth"]}


MEASURES = {"unregistered": measure_unregistered, "registered": measure_registered, "integer": measure_integer}


def _child(kind: str, path: Path) -> dict:
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, __file__, "--measure", kind, str(path)],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load_before_after"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=272, help="edge of the cubic drifted stack, voxels")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two analyses this many times")
    ap.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        kind, path = args.measure
        print(json.dumps(MEASURES[kind](Path(path))))
        return
    from bench_registration import build

    OUT.mkdir(exist_ok=True)
    path = build(args.size)
    with open(path, "rb") as fh:                 # into the page cache, untimed
        while fh.read(64 << 20):
            pass
    row = {"stack": f"{args.size}³ × 60", "gb": round(path.stat().st_size / 1e9, 2), "runs": []}
    for _ in range(args.repeat):
        run = {kind: _child(kind, path) for kind in ("unregistered", "registered")}
        run["ratio"] = round(run["registered"]["total_s"] / run["unregistered"]["wall_s"], 2)
        row["runs"].append(run)
    row["integer"] = _child("integer", path)
    best_plain = min(r["unregistered"]["wall_s"] for r in row["runs"])
    best_registered = min(r["registered"]["total_s"] for r in row["runs"])
    row["ratio_of_best"] = round(best_registered / best_plain, 2)
    print(json.dumps(row, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
