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

With ``--memory warm`` each of the three timed calls (the unregistered analysis, ``register``,
the registered analysis) starts right after the warm state is set again in its child: set
once before the child, the registered child's ``register`` began ~3 s later (its ingest and
the untimed hash), when the balloon had taken part of that memory back, and paid host faults
the unregistered analysis did not (session 26).

Targets: registration + registered analysis ≤ 2× the unregistered analysis; peak RSS < 2 GB.
With ``--repeat N`` the unregistered and registered measurements alternate N times (on a
shared machine the load moves between runs); the ratio is also given from the best of each.

The ingest records the file's identity, so both commands trust its SHA-256 instead of hashing
it (docs/deployment.md); ``--verify-input`` adds to each run both measurements with the full
hash, as before migration 0009. ``cpu_s``: CPU seconds of the measured calls.

    python benchmarks/bench_registration_analysis.py            # 272³ (builds the stack once)
    python benchmarks/bench_registration_analysis.py --size 128 --repeat 2 --verify-input
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
from _vm import STATES, settle  # noqa: E402 - the VM's memory state, one helper


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


def _cpu() -> float:
    """CPU seconds of this process, all threads (steadier than wall time on a shared machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _warm_again(memory: str) -> None:
    """``warm``: set again right before a timed call (the child's start, the ingest and the
    untimed hash took seconds, in which the balloon took part of the warm memory back), so
    that each of the three calls starts from the state its command would have on its own."""
    if memory == "warm":
        settle(memory)


def measure_unregistered(path: Path, verify_input: bool = False, memory: str = "as-is") -> dict:
    from txmdb.catalog.txm import analyze_scan

    catalog, scan = _scan(path, "bench_reg_plain")
    _warm_again(memory)
    t0, cpu0 = time.perf_counter(), _cpu()
    analysis = analyze_scan(catalog, scan.id, _options(), registration=None, verify_input=verify_input)
    return {**_analysis_row(analysis, time.perf_counter() - t0), "cpu_s": round(_cpu() - cpu0, 2),
            "peak_rss_mb": _peak_rss_mb()}


def measure_registered(path: Path, verify_input: bool = False, memory: str = "as-is") -> dict:
    from bench_registration import _truth

    from txmdb.catalog.registration import register_scan, shift_array
    from txmdb.catalog.txm import analyze_scan

    from txmdb.io.files import sha256_file

    reference, truth = _truth(path)
    catalog, scan = _scan(path, "bench_reg_registered")
    t0 = time.perf_counter()
    sha256_file(path)                            # what each command's file check costs (not in the totals)
    t_hash = time.perf_counter() - t0
    _warm_again(memory)
    t0, cpu0 = time.perf_counter(), _cpu()
    registration = register_scan(catalog, scan.id, reference_energy_ev=scan.energies_ev[reference],
                                 verify_input=verify_input)
    t_register, cpu_register = time.perf_counter() - t0, _cpu() - cpu0
    rss_register = _peak_rss_mb()
    _warm_again(memory)
    t0, cpu0 = time.perf_counter(), _cpu()
    analysis = analyze_scan(catalog, scan.id, _options(), verify_input=verify_input)
    t_analyze, cpu_analyze = time.perf_counter() - t0, _cpu() - cpu0
    return {"register_s": round(t_register, 2), "hash_s": round(t_hash, 2), "register_rss_mb": rss_register,
            "register_cpu_s": round(cpu_register, 2), "analysis_cpu_s": round(cpu_analyze, 2),
            "cpu_s": round(cpu_register + cpu_analyze, 2),
            "analysis": _analysis_row(analysis, t_analyze), "total_s": round(t_register + t_analyze, 2),
            "peak_rss_mb": _peak_rss_mb(), "shifts": _errors(shift_array(registration), truth)}


def measure_integer(path: Path, verify_input: bool = False, memory: str = "as-is") -> dict:
    """The whole-voxel alignment of bench_registration, for the accuracy comparison."""
    from bench_registration import measure_integer as integer_alignment

    row = integer_alignment(path)
    return {"seconds": round(row["seconds"], 2),
            "shifts": {key: row[key] for key in ("rms_voxels", "max_voxels")},
            "rounded_truth": row["rounded_truth"]}


MEASURES = {"unregistered": measure_unregistered, "registered": measure_registered, "integer": measure_integer}


def _child(kind: str, path: Path, *extra: str, memory: str = "as-is") -> dict:
    settle(memory, cached=path)
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, __file__, "--measure", kind, str(path), memory, *extra],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load_before_after"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=272, help="edge of the cubic drifted stack, voxels")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two analyses this many times")
    ap.add_argument("--verify-input", action="store_true",
                    help="each run also both measurements hashing the input in full (txm register/analyze "
                         "--verify-input; by default the SHA-256 recorded with the file's unchanged identity is "
                         "trusted), to compare")
    ap.add_argument("--memory", choices=STATES, default="as-is",
                    help="the VM's free memory before each child (benchmarks/_vm.py): full, cold, warm or as-is")
    ap.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        kind, path, memory, *verify = args.measure
        print(json.dumps(MEASURES[kind](Path(path), verify == ["1"], memory)))
        return
    from bench_registration import build

    OUT.mkdir(exist_ok=True)
    path = build(args.size)
    with open(path, "rb") as fh:                 # into the page cache, untimed
        while fh.read(64 << 20):
            pass
    row = {"stack": f"{args.size}³ × 60", "gb": round(path.stat().st_size / 1e9, 2), "memory": args.memory, "runs": []}
    for _ in range(args.repeat):
        run = {kind: _child(kind, path, memory=args.memory) for kind in ("unregistered", "registered")}
        run["ratio"] = round(run["registered"]["total_s"] / run["unregistered"]["wall_s"], 2)
        if args.verify_input:
            run.update({f"{kind}_verify_input": _child(kind, path, "1", memory=args.memory) for kind in ("unregistered", "registered")})
            run["ratio_verify_input"] = round(run["registered_verify_input"]["total_s"]
                                              / run["unregistered_verify_input"]["wall_s"], 2)
        row["runs"].append(run)
    row["integer"] = _child("integer", path)
    best_plain = min(r["unregistered"]["wall_s"] for r in row["runs"])
    best_registered = min(r["registered"]["total_s"] for r in row["runs"])
    row["ratio_of_best"] = round(best_registered / best_plain, 2)
    print(json.dumps(row, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
