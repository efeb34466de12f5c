"""Time ``txmdb --help`` (DESIGN §7: under 0.5 s). Run: python benchmarks/bench_startup.py"""

import statistics
import subprocess
import sys
import time

runs = []
for _ in range(10):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--help"], check=True, capture_output=True)
    runs.append(time.perf_counter() - start)
print(f"txmdb --help: median {statistics.median(runs):.3f} s, best {min(runs):.3f} s over {len(runs)} runs")
