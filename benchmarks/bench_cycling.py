"""Benchmark: read + per-cycle metrics for a 1-million-record cycler CSV and the largest ndax.

Usage::

    python benchmarks/bench_cycling.py [--records 1000000] [--repeat 3]

The CSV is generated with :mod:`txmdb.synthetic.cycling` into a temporary directory (both
namings: BDF without capacity columns, so current is integrated; Arbin with the cycler's
cumulative capacity columns). The largest real Neware file is taken from
``tests/data/cycling/neware-ndax``. Reported: best-of-N wall time of
``read_cycler_file`` and ``cycle_metrics`` and records per second. Goal: seconds, not minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from txmdb.analysis.cycling import cycle_metrics
from txmdb.io.cycling import read_cycler_file
from txmdb.synthetic.cycling import ROD_NMC, write_cycling_csv

CYCLER_FILES = Path(__file__).resolve().parents[1] / "tests" / "data" / "cycling"


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_file(label: str, path: Path, *, repeat: int, active_mass_g: float | None) -> None:
    """Time reading and metrics of one file and print one line."""
    t_read, rec = _best(lambda: read_cycler_file(path), repeat)
    t_metrics, cycles = _best(
        lambda: cycle_metrics(rec.frame, active_mass_g=active_mass_g, upper_cutoff_v=None),
        repeat)
    n = len(rec.frame)
    total = t_read + t_metrics
    print(f"{label:<34} {n:>10,d} records {len(cycles):>5d} cycles  read {t_read:6.2f} s  "
          f"metrics {t_metrics:6.3f} s  total {total:6.2f} s  {n / total:>12,.0f} records/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    steps = ROD_NMC.n_cycles * 4  # CC charge, rest, CC discharge, rest
    per_step = max(3, args.records // steps)
    with tempfile.TemporaryDirectory() as tmp:
        for naming in ("bdf", "arbin"):
            path = Path(tmp) / f"synthetic_{naming}.csv"
            start = time.perf_counter()
            write_cycling_csv(ROD_NMC, path, naming=naming, records_per_step=per_step)
            size = path.stat().st_size / 1e6
            print(f"generated {path.name}: {steps * per_step:,d} records, {size:.0f} MB "
                  f"in {time.perf_counter() - start:.1f} s")
            bench_file(f"synthetic CSV ({naming})", path, repeat=args.repeat,
                       active_mass_g=ROD_NMC.active_mass_g)

    ndax = sorted((CYCLER_FILES / "neware-ndax").glob("*.ndax"), key=lambda p: p.stat().st_size)
    if ndax:
        bench_file(f"ndax {ndax[-1].name[:28]}", ndax[-1], repeat=args.repeat, active_mass_g=None)
    nw_csv = CYCLER_FILES / "neware-csv" / "nw_regular_export_ife_example.csv"
    if nw_csv.exists():
        bench_file("Neware CSV export", nw_csv, repeat=args.repeat, active_mass_g=None)


if __name__ == "__main__":
    main()
