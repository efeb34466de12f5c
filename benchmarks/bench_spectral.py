"""Spectral maps benchmark (DESIGN §7, §11): the cost of the white line and LCF in the edge pass.

Usage::

    .venv/bin/python benchmarks/bench_spectral.py                  # 272³ × 60, warm and cold
    .venv/bin/python benchmarks/bench_spectral.py --size 136 --cache warm

Two measurements, each in a fresh child process:

- **pass** — the edge phase of ``txm analyze`` (``analyze_stack``'s edge loop) over the
  20-million-voxel stack of ``bench_edge``/``bench_analysis`` (272³ × 60 float32,
  contiguous): ``edge_slabs`` with the background reader, the product's kernel threads (one
  per usable core, a slab's blocks split evenly between them; ``--workers N`` for both kinds alike), and ``txmdb.pipeline.EdgePhaseWriter``,
  the loop's own writer: the edge map kept in memory (float64), ``edge_ev``, ``jump`` and
  ``valid`` (and the spectral maps) written as float32/bool data sets of a results file by
  its thread, up to two slabs behind the kernel; under ``no_huge_pages`` and
  ``freed_memory_kept``, the memory switches ``analyze_stack`` runs in (it enters no other;
  ``no_cyclic_gc`` is the registration estimate's). *edge*: the edge kernel alone; *spectral*: the same pass with the white line
  (Ni preset window) and a two-reference LCF (the measured NiO and LiNiO2 spectra, Ni preset
  fit window) fused into it (``SpectralKernel.with_edges``), its maps written as float32 into
  three sets of buffers used in turn (``edge_slabs(reuse_maps=EdgePhaseWriter.MAP_SETS)``, as
  ``txm analyze``); *spectral-fresh* (``--kinds``): new float64 maps per slab, converted to
  float32 by the writer (the path before the buffers). ``--sink file`` (default) is that;
  ``--sink none`` writes nothing for either kind (the edge map kept, the maps dropped: the
  kernel and the read alone). The in-memory map sink of session 18 (``--sink memory``) is
  gone: ``txm analyze`` writes the maps of both kinds, so keeping them in memory stood for
  nothing it does. The results file is made and deleted untimed. The one-off numba load is
  done before the timing. Warm: the file is read once untimed, then the kinds alternate,
  best of ``--repeat``. Cold: this file's pages are dropped from the page cache before each run.
  Reported per kind: wall seconds, CPU seconds of the whole child (every thread) and of the
  calling thread alone (``kernel_thread_cpu_s``: with ``--workers 1`` the kernel's whole
  share, the pass' critical path once the reader and the writer have the other core; with
  more kernel threads only the calling thread's part of the blocks).
- **per voxel** — the LCF of one voxel: txmdb's compiled kernel (LCF only, normalisation
  included, 1 thread, 1 M voxels in memory) against Larch's ``lincombo_fit`` (one lmfit
  minimisation per spectrum, weights bounded to [0, 1] and summing to 1, the same fit
  window and the same normalised spectra) and against a per-voxel ``scipy.optimize.lsq_linear``
  of the reduced problem; the weights of each are compared with txmdb's. CPU time of
  one thread each (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _vm import STATES, settle  # noqa: E402 - the VM's memory state, one helper
from bench_edge import _peak_rss_mb, build, drop_cache, load  # noqa: E402 - one stack, one cache helper

WHITE_LINE = (8345.0, 8358.0)
FIT = (8325.0, 8375.0)


def references() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The two measured Ni references shipped with txmdb: name → (energy eV, raw mu)."""
    from txmdb.io.spectra import read_spectrum
    from txmdb.synthetic.spectra import measured_reference

    out = {}
    for name in ("NiO", "LiNiO2"):
        spectrum = read_spectrum(measured_reference(name), edge="Ni-K")
        out[name] = (spectrum.energy_ev, spectrum.mu)
    return out


def measure_pass(path: Path, kind: str, workers: int = 0, sink: str = "file", fit: tuple[float, float] = FIT,
                 memory: str = "as-is") -> dict:
    """The edge phase of ``txm analyze`` over the whole stack, edge kernel alone or with the
    spectral maps: ``sink`` ``file`` — its loop (:class:`txmdb.pipeline.EdgePhaseWriter`: the
    float64 edge map in memory, ``edge_ev``, ``jump``, ``valid`` and the spectral maps written
    to a results file from the writer's thread), under the memory switch ``analyze_stack``
    runs in (``no_huge_pages``, ``freed_memory_kept``); the file is deleted untimed. ``none`` — the same pass
    writing nothing: the edge map kept, the maps dropped (kernel and read alone). ``fit``: the
    LCF window (eV; the Ni preset's by default; a narrower one fits fewer rows per voxel).
    ``memory`` ``warm``: set again right before the clock starts (the child's imports and
    kernel load take 1-1.5 s, in which the balloon took part of the parent's warm memory back)."""
    import h5py

    from txmdb.analysis._memory import freed_memory_kept, no_huge_pages
    from txmdb.analysis.edge import PRESETS
    from txmdb.analysis.spectral import SpectralKernel
    from txmdb.io.hdf5 import open_stack
    from txmdb.pipeline import EdgePhaseWriter, edge_slabs

    if sink not in ("file", "none"):
        raise SystemExit(f"--sink {sink}: file or none")
    info = open_stack(path, check_finite=False)
    params = PRESETS["Ni"]
    spatial = tuple(info.spatial_shape)
    spectral = None
    if kind.startswith("spectral"):
        spectral = SpectralKernel(info.energies_ev, params, white_line=WHITE_LINE, references=references(),
                                  lcf_window=fit)
        spectral.with_edges(np.zeros((len(info.energies_ev), 1), np.float32),   # numba load, untimed
                            out=spectral.map_buffers() if kind == "spectral" else None)
    else:
        SpectralKernel(info.energies_ev, params).edge(np.zeros((len(info.energies_ev), 1), np.float32))
    if memory == "warm":
        settle(memory)
    results = path.parent / f"bench_spectral_maps_{os.getpid()}.h5"
    # as analyze_stack: EdgePhaseWriter.MAP_SETS (three) sets of float32 map buffers for the
    # writer; spectral-fresh: new float64 maps per slab (the path before the buffers)
    reuse = EdgePhaseWriter.MAP_SETS if kind == "spectral" else 0
    try:
        with no_huge_pages(), freed_memory_kept(), h5py.File(results, "w") as out:
            cpu0, kernel0 = _cpu_seconds(), _cpu_seconds(thread=True)
            t0 = time.perf_counter()
            slabs = edge_slabs(info, params, spectral=spectral, workers=workers or None, reuse_maps=reuse)
            if sink == "file":
                with EdgePhaseWriter(out, results, spatial, spectral) as writer:
                    for start, _, res in slabs:
                        writer.write(start, res)
                edge = writer.edge
            else:
                edge = np.empty(spatial)
                for start, stop, res in slabs:
                    edge[start:stop] = res.edge_ev
            seconds = time.perf_counter() - t0
            cpu, kernel_cpu = _cpu_seconds() - cpu0, _cpu_seconds(thread=True) - kernel0
            found = {}
            if spectral is not None and sink == "file":
                found = {"mean_fraction_NiO": float(np.nanmean(out["fractions"][0])),
                         "white_line_found": int(np.isfinite(out["white_line_ev"][()]).sum())}
    finally:
        results.unlink(missing_ok=True)                # before its dirty pages go to the disk; after a failure too
    return {"kind": kind, "seconds": seconds, "cpu_seconds": cpu, "kernel_thread_cpu_seconds": kernel_cpu,
            "voxels": int(np.prod(spatial)),
            "valid": int(np.isfinite(edge).sum()), "rss_mb": _peak_rss_mb(), "sink": sink, **found}


def _cpu_seconds(thread: bool = False) -> float:
    """CPU time of this process, every thread (the reader's and the writer's too), or of the
    calling thread (one of the kernel's; all of it with one kernel thread): less sensitive to
    other processes on a loaded machine than the wall time."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_THREAD if thread else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _voxels(n: int, seed: int = 0):
    """``n`` noisy mixtures of the two references on the stack grid, and the kernel."""
    from txmdb.analysis.edge import PRESETS
    from txmdb.analysis.spectral import SpectralKernel
    from txmdb.synthetic.tomogram import energy_grid

    energies = energy_grid(60)
    refs = references()
    kernel = SpectralKernel(energies, PRESETS["Ni"], references=refs, lcf_window=FIT)
    rng = np.random.default_rng(seed)
    from scipy.interpolate import CubicSpline

    shapes = np.array([CubicSpline(*refs[name])(energies) for name in refs])
    f = rng.uniform(0, 1, n)
    mu = (np.outer(shapes[0], f) + np.outer(shapes[1], 1 - f)) * rng.uniform(0.5, 2.0, n) + 0.1
    mu = (mu + rng.normal(0, 0.01, mu.shape)).astype(np.float32)
    return energies, kernel, mu


def measure_per_voxel(n_larch: int) -> dict:
    """µs per voxel of the LCF: txmdb's compiled kernel, Larch's lincombo_fit, scipy's lsq_linear."""
    from scipy.optimize import lsq_linear

    energies, kernel, mu = _voxels(1_000_000)
    valid = kernel.edge(mu).valid
    kernel(mu[:, :100], valid[:100])                 # numba load
    best = np.inf
    for _ in range(3):
        t0 = time.process_time()
        maps = kernel(mu, valid)
        best = min(best, time.process_time() - t0)
    out = {"txmdb_us_per_voxel": best / mu.shape[1] * 1e6, "txmdb_voxels": int(mu.shape[1])}

    fit = (energies >= FIT[0]) & (energies <= FIT[1])
    refs = kernel.references                         # normalised on the stack grid, over F
    sub = mu[:, :n_larch].astype(np.float64)
    norms = kernel.edge.normalize(sub)
    ours = maps["fraction:NiO"][:n_larch]

    # CPU time for all three (one thread each): the machine may be shared
    t0 = time.process_time()
    lsq = []
    for i in range(n_larch):
        res = lsq_linear((refs[0] - refs[1])[:, None], norms[fit, i] - refs[1], bounds=(0, 1))
        lsq.append(res.x[0])
    out["scipy_lsq_linear_us_per_voxel"] = (time.process_time() - t0) / n_larch * 1e6
    out["scipy_max_abs_weight_diff"] = float(np.max(np.abs(np.array(lsq) - ours)))

    try:
        from larch import Group
        from larch.math.lincombo_fitting import lincombo_fit
    except ImportError as exc:
        out["larch"] = f"not available: {exc}"
        return out
    full = np.zeros((2, len(energies)))              # components on the whole grid (norm outside F unused)
    full[:, fit] = refs
    components = [Group(name=name, energy=energies, norm=full[i]) for i, name in enumerate(kernel.names)]
    larch_w = []
    t0 = time.process_time()
    for i in range(n_larch):
        group = Group(name=f"voxel{i}", energy=energies, norm=norms[:, i])
        result = lincombo_fit(group, components, minvals=[0, 0], maxvals=[1, 1], xmin=FIT[0], xmax=FIT[1],
                              sum_to_one=True)
        larch_w.append(result.weights[kernel.names[0]] if isinstance(result.weights, dict)
                       else float(result.params[f"c_{kernel.names[0]}"].value))
    out["larch_lincombo_fit_us_per_voxel"] = (time.process_time() - t0) / n_larch * 1e6
    out["larch_spectra"] = n_larch
    out["larch_max_abs_weight_diff"] = float(np.max(np.abs(np.array(larch_w) - ours)))
    return out


def _window(text: str) -> tuple[float, float]:
    """``--fit``'s LO:HI, read as ``txm analyze --lcf-window`` reads it."""
    from txmdb.options import parse_window

    return parse_window(text, "--fit", open_ends=False)


def _child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        raise SystemExit(f"bench_spectral child {args[:3]} failed: {lines[-1] if lines else done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = round(load(), 2)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=272)
    ap.add_argument("--cache", default="warm,cold")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--larch-spectra", type=int, default=20)
    ap.add_argument("--no-per-voxel", action="store_true", help="only the passes")
    ap.add_argument("--workers", type=int, default=0,
                    help="kernel threads of both passes (default 0: the product's, one per usable core)")
    ap.add_argument("--kinds", default="edge,spectral",
                    help="passes, alternating: edge, spectral, spectral-fresh (float64 maps per slab)")
    ap.add_argument("--sink", default="file",
                    help="file: both passes write their maps to a results file as txm analyze does; "
                         "none: nothing written (kernel and read alone)")
    ap.add_argument("--memory", choices=STATES, default="as-is",
                    help="the VM's free memory before each pass (benchmarks/_vm.py): full, cold, warm or as-is")
    ap.add_argument("--fit", default=f"{FIT[0]:g}:{FIT[1]:g}",
                    help="LCF window of the spectral pass, LO:HI eV (default the Ni preset's; 42 of the 60 energies); "
                         "the per-voxel comparison keeps the preset's")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        what = args.child[0]
        result = (measure_pass(Path(args.child[1]), args.child[2], int(args.child[3]), args.child[4],
                               _window(args.child[5]), args.child[6]) if what == "pass"
                  else measure_per_voxel(int(args.child[1])))
        print(json.dumps(result))
        return
    from txmdb.errors import TxmdbError

    try:
        fit = _window(args.fit)
    except TxmdbError as exc:
        ap.error(str(exc))
    path = build(args.size)
    report: dict = {"stack": str(path), "workers": args.workers, "sink": args.sink, "memory": args.memory,
                    "fit": list(fit), "load_before": round(load(), 2)}
    for cache in args.cache.split(","):
        kinds = args.kinds.split(",")
        runs: dict[str, list] = {kind: [] for kind in kinds}
        if cache == "warm":
            with open(path, "rb") as fh:              # into the page cache, untimed
                while fh.read(1 << 26):
                    pass
        for _ in range(args.repeat if cache == "warm" else 1):
            for kind in kinds:
                settle(args.memory, cached=path if cache == "warm" else None)
                if cache == "cold":
                    drop_cache(path)          # after the state: a full page cache holds this file too
                runs[kind].append(_child("pass", str(path), kind, str(args.workers), args.sink, args.fit,
                                          args.memory))
        best = {kind: min(r, key=lambda x: x["seconds"]) for kind, r in runs.items()}
        cpu = {kind: min(x["cpu_seconds"] for x in r) for kind, r in runs.items()}
        kernel = {kind: min(x["kernel_thread_cpu_seconds"] for x in r) for kind, r in runs.items()}
        report[cache] = {"edge_s": round(best["edge"]["seconds"], 3),
                         "spectral_s": round(best["spectral"]["seconds"], 3),
                         "ratio": round(best["spectral"]["seconds"] / best["edge"]["seconds"], 3),
                         "edge_us_per_voxel": round(best["edge"]["seconds"] / best["edge"]["voxels"] * 1e6, 4),
                         "spectral_us_per_voxel": round(best["spectral"]["seconds"] / best["spectral"]["voxels"]
                                                        * 1e6, 4),
                         "edge_rss_mb": best["edge"]["rss_mb"], "spectral_rss_mb": best["spectral"]["rss_mb"],
                         "edge_cpu_s": round(cpu["edge"], 3), "spectral_cpu_s": round(cpu["spectral"], 3),
                         "cpu_ratio": round(cpu["spectral"] / cpu["edge"], 3),
                         "kernel_thread_cpu_s": {kind: round(kernel[kind], 3) for kind in ("edge", "spectral")},
                         "kernel_thread_cpu_ratio": round(kernel["spectral"] / kernel["edge"], 3),
                         "all_edge_s": [round(r["seconds"], 3) for r in runs["edge"]],
                         "all_spectral_s": [round(r["seconds"], 3) for r in runs["spectral"]],
                         "valid": best["edge"]["valid"], "white_line_found": best["spectral"].get("white_line_found"),
                         "load": [r["load"] for r in runs["edge"] + runs["spectral"]]}
        if "spectral-fresh" in runs:                  # the path before the buffers, same minutes
            fresh = runs["spectral-fresh"]
            report[cache].update({"fresh_s": round(best["spectral-fresh"]["seconds"], 3),
                                  "fresh_ratio": round(best["spectral-fresh"]["seconds"] / best["edge"]["seconds"], 3),
                                  "fresh_cpu_s": round(cpu["spectral-fresh"], 3),
                                  "fresh_cpu_ratio": round(cpu["spectral-fresh"] / cpu["edge"], 3),
                                  "all_fresh_s": [round(r["seconds"], 3) for r in fresh],
                                  "fresh_rss_mb": best["spectral-fresh"]["rss_mb"]})
    if args.no_per_voxel:
        print(json.dumps(report, indent=2))
        return
    report["per_voxel"] = _child("per-voxel", str(args.larch_spectra))
    per = report["per_voxel"]
    if "larch_lincombo_fit_us_per_voxel" in per:
        per["speedup_vs_larch"] = round(per["larch_lincombo_fit_us_per_voxel"] / per["txmdb_us_per_voxel"])
    per["speedup_vs_lsq_linear"] = round(per["scipy_lsq_linear_us_per_voxel"] / per["txmdb_us_per_voxel"])
    report["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
