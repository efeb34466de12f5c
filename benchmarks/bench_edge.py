"""Edge-extraction benchmark (DESIGN §7): txmdb vs the bare h5py read floor and naive numpy.

Usage::

    .venv/bin/python benchmarks/bench_edge.py                       # warm and cold cache
    .venv/bin/python benchmarks/bench_edge.py --sizes 136,272 --cache warm --naive-size 96

Stacks are built once with the synthetic writer into ``benchmarks/out/`` (gitignored):
rod-like particles, 60 energies, float32, contiguous Data Exchange layout; 272³ is 20.1
million voxels × 60 energies = 4.8 GB. Each measurement runs in a fresh child process so
its peak RSS (``resource.getrusage``) is its own.

- **floor**: bare h5py, ``ds.read_direct`` of ``[:, z0:z1]`` slab by slab into one reused
  float32 buffer, with txmdb's slab size — the fastest plain read of the stack.
- **txmdb**: :func:`txmdb.pipeline.edge_slabs` (background reading into two reused
  buffers, the edge kernel on the current slab) for the whole edge map, kept in memory
  as float64; plus ``open_stack`` with its finite-voxel check. The one-off cost per
  process of the compiled (numba) kernel — importing numba and loading its cached
  machine code on the first call — is timed before and reported in its own column.
- **cache states**: ``warm`` — the file is read once untimed, then floor and txmdb are
  timed alternately (best of ``--repeat``): the floor is a memcpy from the page cache, the
  hardest case for the ratio. ``cold`` — before every measurement the file's pages are
  dropped from the page cache (``posix_fadvise(DONTNEED)`` on this file only), so both
  read from the disk.
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


def stack_path(n: int) -> Path:
    return OUT / f"rod_{n}cube_{N_ENERGY}e.h5"


def build(n: int) -> Path:
    """Write the n³ stack once (streamed slab by slab; never whole in memory)."""
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    path = stack_path(n)
    if path.exists():
        return path
    t0 = time.perf_counter()
    energies = energy_grid(N_ENERGY)
    edge, _ = particle_field((n, n, n), kind="rod", seed=1, radius=0.48 * n)
    write_stack(path, SyntheticStack(edge, energies, noise=0.01, seed=2), energies,
                layout="dxchange", voxel_size_nm=30.0)
    print(f"built {path.name}: {path.stat().st_size / 1e9:.2f} GB in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def drop_cache(path: Path) -> None:
    """Evict this file's pages from the page cache (nothing else is touched)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def load() -> float:
    return os.getloadavg()[0]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_floor(path: Path) -> dict:
    """Bare h5py: read_direct of ds[:, z0:z1] into one reused buffer, slab by slab."""
    import h5py

    from txmdb.io.hdf5 import open_stack
    from txmdb.pipeline import default_slab

    info = open_stack(path, check_finite=False)
    step = default_slab(info)
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        ds = f["/exchange/data"]
        buf = np.empty((ds.shape[0], step, *ds.shape[2:]), dtype=np.float32)
        for z in range(0, info.n_slices, step):
            n = min(step, info.n_slices - z)
            ds.read_direct(buf, np.s_[:, z:z + n], np.s_[:, :n])
    return {"seconds": time.perf_counter() - t0, "voxels": int(np.prod(info.shape[1:])),
            "rss_mb": _peak_rss_mb()}


def measure_txmdb(path: Path, workers: int = 1) -> dict:
    """open_stack + edge_slabs: the whole edge map (kept in memory)."""
    from txmdb.analysis.edge import PRESETS, EdgeKernel
    from txmdb.io.hdf5 import open_stack
    from txmdb.pipeline import edge_slabs
    from txmdb.synthetic.tomogram import energy_grid

    # one-off per process, reported apart: import of numba and load of the cached
    # machine code of the compiled kernel (first call; the JIT compile itself is cached)
    t0 = time.perf_counter()
    EdgeKernel(energy_grid(N_ENERGY), PRESETS["Ni"])(np.zeros((N_ENERGY, 1), np.float32))
    jit_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    info = open_stack(path)
    edge = np.empty(info.spatial_shape)
    valid = 0
    t_kernel = 0.0
    real_call = EdgeKernel.__call__

    def timed(self, mu, **kw):                   # busy time of the kernel alone
        nonlocal t_kernel
        t1 = time.perf_counter()
        res = real_call(self, mu, **kw)
        t_kernel += time.perf_counter() - t1
        return res

    EdgeKernel.__call__ = timed
    for a, b, res in edge_slabs(info, PRESETS["Ni"], workers=workers or None):
        edge[a:b] = res.edge_ev
        valid += int(res.valid.sum())
    return {"seconds": time.perf_counter() - t0, "kernel_seconds": t_kernel, "jit_seconds": jit_seconds,
            "voxels": int(np.prod(info.shape[1:])), "valid": valid, "rss_mb": _peak_rss_mb()}


def naive_edge(mu: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """The straightforward full-array float64 numpy version a script would contain."""
    mu = mu.astype(np.float64).reshape(mu.shape[0], -1)
    pre = energies <= 8320
    post = energies >= 8370
    pre_fit = np.polyfit(energies[pre], mu[pre], 1)          # (2, n_vox)
    post_fit = np.polyfit(energies[post], mu[post], 1)
    pre_line = pre_fit[0] * energies[:, None] + pre_fit[1]
    post_line = post_fit[0] * energies[:, None] + post_fit[1]
    norm = (mu - pre_line) / (post_line - pre_line)
    resid = mu[pre] - pre_line[pre]
    sigma = np.sqrt((resid ** 2).mean(axis=0))
    ec = 0.5 * (8325 + 8365)
    jump = (post_fit[0] * ec + post_fit[1]) - (pre_fit[0] * ec + pre_fit[1])
    edge = np.full(mu.shape[1], np.nan)
    window = np.flatnonzero((energies >= 8325) & (energies <= 8365))
    for k in window[::-1]:                                  # last assignment = first k
        hit = (norm[k] >= 0.5) & (norm[k - 1] < 0.5)
        interp = energies[k - 1] + (0.5 - norm[k - 1]) / (norm[k] - norm[k - 1]) * (
            energies[k] - energies[k - 1])
        edge = np.where(hit, interp, edge)
    bad = (jump < 0.1) | ((sigma > 0) & (jump < 5 * sigma)) | ~np.isfinite(mu).all(axis=0)
    edge[bad] = np.nan
    return edge


def measure_naive(n: int, repeat: int) -> dict:
    from txmdb.analysis.edge import PRESETS, EdgeKernel
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field

    energies = energy_grid(N_ENERGY)
    edge, _ = particle_field((n, n, n), kind="rod", seed=1, radius=0.48 * n)
    mu = np.asarray(SyntheticStack(edge, energies, noise=0.01, seed=2), dtype=np.float32)
    kernel = EdgeKernel(energies, PRESETS["Ni"])
    t_naive = t_ours = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        ref = naive_edge(mu, energies)
        t_naive = min(t_naive, time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours = kernel(mu).edge_ev
        t_ours = min(t_ours, time.perf_counter() - t0)
    agree = np.nanmax(np.abs(ref - ours.ravel()))
    same_mask = bool(np.array_equal(np.isnan(ref), np.isnan(ours.ravel())))
    return {"voxels": n ** 3, "naive_seconds": t_naive, "txmdb_seconds": t_ours,
            "max_abs_diff_ev": float(agree), "same_mask": same_mask}


def _child(kind: str, arg: str, repeat: int = 1, workers: int = 1) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", kind, arg, "--repeat", str(repeat),
                          "--workers", str(workers)],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    result["load"] = load()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="136,272", help="cube edges of the stacks")
    parser.add_argument("--cache", default="warm,cold", help="cache states to measure")
    parser.add_argument("--naive-size", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="kernel threads of txmdb (0: the product's default, one per core)")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        kind, arg = args.measure
        if kind == "naive":
            print(json.dumps(measure_naive(int(arg), args.repeat)))
        elif kind == "floor":
            print(json.dumps(measure_floor(Path(arg))))
        else:
            print(json.dumps(measure_txmdb(Path(arg), args.workers)))
        return

    OUT.mkdir(exist_ok=True)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        path = build(n)
        for cache in args.cache.split(","):
            if cache == "warm":
                measure_floor(path)              # fill the page cache (untimed)
            floor = ours = None
            for _ in range(args.repeat):
                if cache == "cold":
                    drop_cache(path)
                f = _child("floor", str(path))
                if cache == "cold":
                    drop_cache(path)
                o = _child("txmdb", str(path), workers=args.workers)
                floor = f if floor is None or f["seconds"] < floor["seconds"] else floor
                ours = o if ours is None or o["seconds"] < ours["seconds"] else ours
            rows.append((n, cache, path.stat().st_size / 1e9, floor, ours))
            print(json.dumps({"n": n, "cache": cache, "floor": floor, "txmdb": ours}), file=sys.stderr)
    naive = _child("naive", str(args.naive_size), args.repeat)

    print(f"\nEdge extraction, {N_ENERGY} energies, float32 on disk, float64-exact results, "
          f"kernel threads {args.workers} (best of {args.repeat})")
    print(f"{'stack':>6} {'cache':>5} {'GB':>5} {'floor µs/vox':>12} {'txmdb µs/vox':>12} "
          f"{'kernel µs/vox':>13} {'ratio':>6} {'JIT load s':>10} {'ratio incl.':>11} "
          f"{'floor RSS MB':>12} {'txmdb RSS MB':>12} {'load':>5}")
    for n, cache, gb, floor, ours in rows:
        vox = floor["voxels"]
        print(f"{n:>5}³ {cache:>5} {gb:>5.2f} {floor['seconds'] / vox * 1e6:>12.3f} "
              f"{ours['seconds'] / vox * 1e6:>12.3f} {ours['kernel_seconds'] / vox * 1e6:>13.3f} "
              f"{ours['seconds'] / floor['seconds']:>6.2f} {ours['jit_seconds']:>10.2f} "
              f"{(ours['seconds'] + ours['jit_seconds']) / floor['seconds']:>11.2f} {floor['rss_mb']:>12.0f} "
              f"{ours['rss_mb']:>12.0f} {max(floor['load'], ours['load']):>5.2f}")
    nv = naive["voxels"]
    print(f"\nNaive full-array float64 numpy vs txmdb kernel, {args.naive_size}³ in memory: "
          f"{naive['naive_seconds'] / nv * 1e6:.3f} vs {naive['txmdb_seconds'] / nv * 1e6:.3f} "
          f"µs/voxel -> {naive['naive_seconds'] / naive['txmdb_seconds']:.1f}x "
          f"(max |Δ edge| {naive['max_abs_diff_ev']:.1e} eV, same mask: {naive['same_mask']}, "
          f"load {naive['load']:.2f})")


if __name__ == "__main__":
    main()
