"""Phase clusters (``txm analyze --clusters K``, DESIGN §11): what they add to the analysis.

Runs :func:`txmdb.pipeline.analyze_stack` on a three-phase synthetic stack (concentric shells of
known labels, :func:`txmdb.synthetic.tomogram.three_phase_stack`, noise 0.01 of a unit edge) without
and with clusters, alternately, each in a fresh child process (peak RSS of the analysis alone), and
reports the wall time of each step, the peak RSS and the adjusted Rand index of the labels.

    python benchmarks/bench_clusters.py                 # 160³ × 60, K = 3, two rounds
    python benchmarks/bench_clusters.py --size 272 --k 3 --rounds 1

The stack is cached under ``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def build(size: int) -> Path:
    """The cached ``size``³ × 60 three-phase stack (and its labels beside it)."""
    import numpy as np

    from txmdb.synthetic.tomogram import energy_grid, three_phase_stack, write_stack

    path = OUT / f"three_phase_{size}.h5"
    if not path.exists():
        OUT.mkdir(exist_ok=True)
        energies = energy_grid(60)
        stack, truth = three_phase_stack((size, size, size), energies, noise=0.01)
        write_stack(path, stack, energies, voxel_size_nm=30.0)
        np.save(path.with_suffix(".labels.npy"), truth["labels"])
    return path


def run_one(path: Path, k: int) -> dict:
    """One analysis in this process: timings, peak RSS and (with clusters) the adjusted Rand index."""
    import time

    import h5py
    import numpy as np

    from txmdb.analysis.edge import edge_parameters
    from txmdb.io.hdf5 import open_stack
    from txmdb.pipeline import AnalysisOptions, analyze_stack

    results = OUT / f"clusters_results_{k}.h5"
    options = AnalysisOptions(params=edge_parameters("Ni"), bin_factors=(1, 2, 3), clusters=k or None)
    t0 = time.perf_counter()
    outputs = analyze_stack(open_stack(path), options, results_path=results)
    row = {"k": k, "wall_s": time.perf_counter() - t0, "steps_s": outputs.timings_s,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "valid_voxels": outputs.n_valid_voxels}
    if k:
        from sklearn.metrics import adjusted_rand_score

        truth = np.load(path.with_suffix(".labels.npy"))
        with h5py.File(results, "r") as f:
            labels = f["cluster"][()]
        inside = truth >= 0
        row["adjusted_rand_index"] = adjusted_rand_score(truth[inside], labels[inside])
    results.unlink()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("STACK", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(Path(args.child[0]), int(args.child[1]))))
        return
    path = build(args.size)
    for _ in range(args.rounds):
        for k in (0, args.k):
            done = subprocess.run([sys.executable, __file__, "--child", str(path), str(k)], check=True,
                                  capture_output=True, text=True)
            row = json.loads(done.stdout)
            steps = ", ".join(f"{name} {seconds:.2f}" for name, seconds in row["steps_s"].items())
            extra = f", ARI {row['adjusted_rand_index']:.4f}" if "adjusted_rand_index" in row else ""
            print(f"{args.size}³ K={k or 'none'}: {row['wall_s']:.2f} s ({steps}); peak RSS "
                  f"{row['peak_rss_mb']:.0f} MB; {row['valid_voxels']} voxels in particles{extra}")


if __name__ == "__main__":
    main()
