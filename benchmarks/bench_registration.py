"""Registration benchmark (issue 10, DESIGN §10): estimation time, peak RSS, accuracy.

Usage::

    .venv/bin/python benchmarks/bench_registration.py                 # 128³ × 60
    .venv/bin/python benchmarks/bench_registration.py --sizes 128,272  # + the 20-million-voxel case

Stacks are built once into ``benchmarks/out/`` (gitignored) with
:mod:`txmdb.synthetic.drift`: one particle, 60 energies, every difficulty of issue 10
(contrast change across the edge, intensity changes, rings and flat-field residue,
noise 0.03, random-walk drift up to ±8 voxels per axis with jumps), float32, contiguous
Data Exchange layout; the true shifts go to a ``.npy`` beside the file. Each
measurement runs in a fresh child process, so its peak RSS (``resource.getrusage``) is
its own; the file is in the page cache (read once before).

- **estimate**: :func:`txmdb.analysis.registration.estimate_shifts` reading the HDF5
  data set through :func:`~txmdb.analysis.registration.read_window` (the coarse level
  reads one slice per block of every energy, binned in-plane, slab by slab; the fine
  level a full-resolution window). Accuracy against the exact truth: rms per axis and worst error.
- **integer**: :func:`~txmdb.analysis.registration.integer_shifts`, a whole-voxel
  cross-correlation of the raw images against the reference (no fixed-pattern model),
  on the central 128³ (or the whole field when smaller), and the best any whole-voxel
  method can do: the true shifts rounded.
- **apply**: the whole registered stack by :func:`~txmdb.analysis.registration.registered_slab`,
  slab by slab (linear interpolation), against a plain slab-by-slab read of the same
  data (``floor``).
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

OUT = Path(__file__).resolve().parent / "out"
N_ENERGY = 60
DATA = "/exchange/data"


def stack_path(n: int) -> Path:
    return OUT / f"drift_{n}cube_{N_ENERGY}e.h5"


def build(n: int) -> Path:
    """Write the n³ drifted stack once (streamed slab by slab) and its true shifts."""
    from txmdb.synthetic.drift import ALL_DIFFICULTIES, make_drifted, write_drifted_stack

    path = stack_path(n)
    if path.exists() and path.with_suffix(".npy").exists():
        return path
    t0 = time.perf_counter()
    ph = make_drifted((n, n, n), n_energies=N_ENERGY, seed=11, **ALL_DIFFICULTIES)
    write_drifted_stack(path, ph, voxel_size_nm=30.0)
    # first row: the reference index; then the true shifts
    np.save(path.with_suffix(".npy"), np.vstack([np.full(ph.ndim, ph.reference_index), ph.shifts]))
    print(f"built {path.name}: {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return path


def _truth(path: Path) -> tuple[int, np.ndarray]:
    saved = np.load(path.with_suffix(".npy"))
    return int(saved[0, 0]), saved[1:]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _errors(est: np.ndarray, truth: np.ndarray) -> dict:
    err = est - truth
    return {"rms_voxels": np.sqrt((err ** 2).mean(axis=0)).round(4).tolist(),
            "max_voxels": round(float(np.abs(err).max()), 4)}


def measure_estimate(path: Path) -> dict:
    import h5py

    from txmdb.analysis.registration import QUALITY_THRESHOLD, estimate_shifts, read_window

    ref, truth = _truth(path)
    with h5py.File(path, "r") as f:
        ds = f[DATA]
        shape = ds.shape[1:]
        t0 = time.perf_counter()
        shifts, quality = estimate_shifts(lambda i, w: read_window(ds, i, w), ds.shape[0], ref,
                                          shape=shape, max_shift=min(shape) / 4)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_mb": _peak_rss_mb(), **_errors(shifts, truth),
            "min_quality": float(quality.min()), "n_poor": int((quality < QUALITY_THRESHOLD).sum())}


def measure_integer(path: Path) -> dict:
    import h5py

    from txmdb.analysis.registration import integer_shifts, read_window

    ref, truth = _truth(path)
    with h5py.File(path, "r") as f:
        ds = f[DATA]
        shape = ds.shape[1:]
        roi = tuple(slice(max(0, (n - 128) // 2), max(0, (n - 128) // 2) + min(n, 128)) for n in shape)
        t0 = time.perf_counter()
        whole = integer_shifts(lambda i, w: read_window(ds, i, w), ds.shape[0], ref, shape=shape,
                               max_shift=min(shape) / 4, roi=roi)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_mb": _peak_rss_mb(), **_errors(whole, truth),
            "rounded_truth": _errors(np.round(truth), truth)}


def measure_apply(path: Path, slab: int = 16) -> dict:
    import h5py

    from txmdb.analysis.registration import registered_slab

    _, truth = _truth(path)
    with h5py.File(path, "r") as f:
        ds = f[DATA]
        n_e, shape = ds.shape[0], ds.shape[1:]
        t0 = time.perf_counter()
        buf = np.empty((n_e, slab, *shape[1:]), dtype=np.float32)
        for z in range(0, shape[0], slab):
            k = min(slab, shape[0] - z)
            ds.read_direct(buf, np.s_[:, z:z + k], np.s_[:, :k])
        floor = time.perf_counter() - t0
        t0 = time.perf_counter()
        finite = 0
        for z in range(0, shape[0], slab):
            reg = registered_slab(ds, truth, (z, 0, 0), (min(z + slab, shape[0]), *shape[1:]), order=1)
            finite += int(np.isfinite(reg).all(axis=0).sum())
        seconds = time.perf_counter() - t0
    return {"floor_seconds": floor, "seconds": seconds, "valid_voxels": finite, "rss_mb": _peak_rss_mb()}


MEASURES = {"estimate": measure_estimate, "integer": measure_integer, "apply": measure_apply}


def _child(kind: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", kind, str(path)],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    result["load"] = round(os.getloadavg()[0], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="128", help="cube edges of the stacks")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        kind, path = args.measure
        print(json.dumps(MEASURES[kind](Path(path))))
        return
    OUT.mkdir(exist_ok=True)
    for n in (int(s) for s in args.sizes.split(",")):
        path = build(n)
        _child("apply", path)                      # fill the page cache (untimed)
        row = {"stack": f"{n}³ × {N_ENERGY}", "gb": round(path.stat().st_size / 1e9, 2)}
        for kind in MEASURES:
            row[kind] = _child(kind, path)
        print(json.dumps(row, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
