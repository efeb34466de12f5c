"""Whole analysis against a bare read of the same file, in one run (DESIGN §7 next goals, issue 11 item 7).

On the 272³ × 60 rod stack (20.1 M voxels, 4.8 GB float32) in the page cache, stored

- **chunked**: HDF5 chunks of (all energies, 8, 96, 96) voxels, a common layout;
- **contiguous**: the edge benchmark's file, where the bare read is a memory copy;

each measurement in a fresh child process (its own peak RSS), alternately:

- **floor** — bare h5py, chunk by chunk (``ds.iter_chunks()``, ``read_direct`` into one
  reused buffer; on the contiguous file: txmdb's slabs), nothing computed;
- **analysis** — ``analyze_scan`` as ``txmdb txm analyze`` runs it, into a fresh SQLite
  catalogue (the scan ingested before the clock starts): SHA-256 check of the file, every
  map of the one pass (edge, white line with the Ni preset, LCF with the two references of
  the test data, NiO and LiNiO2, and the R-factor; ``--edge-only``: the edge alone),
  particles, statistics for f = 1, 2, 3 of every ``--gradient-map``, map summaries,
  results file, database rows.

The analysis' own timings say where the time goes (hash, edge pass, particles, gradient,
map summaries, results file, database). Goals: analysis ≤ 2× the floor (aim 1.5×) on the
chunked file, peak RSS < 2 GB.

The ingest before the clock starts records the file's identity, so the analysis trusts the
SHA-256 (no hash: ``input_check`` says "known"); ``--verify-input`` adds per pair the
analysis that hashes its input in full, as before migration 0009.

    python benchmarks/bench_whole_analysis.py                  # both files, 2 pairs each
    python benchmarks/bench_whole_analysis.py --layout chunked --pairs 3 --verify-input
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _vm import STATES, settle  # noqa: E402 - the VM's memory state, one helper

OUT = Path(__file__).resolve().parent / "out"
CHUNKS = (8, 96, 96)   # per energy-complete chunk: (60, 8, 96, 96) float32 = 17.7 MB


def contiguous(size: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_edge import build  # one builder for the edge, analysis and this benchmark

    return build(size)


def chunked(size: int) -> Path:
    """The contiguous stack copied into (all energies, 8, 96, 96) chunks, once."""
    import h5py

    source = contiguous(size)
    path = source.with_name(source.stem + "_chunked.h5")
    if path.exists():
        return path
    tmp = path.with_suffix(".partial")
    with h5py.File(source, "r") as src, h5py.File(tmp, "w") as dst:
        def copy(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.ndim == 4:
                ds = dst.create_dataset(name, shape=obj.shape, dtype=obj.dtype, chunks=(obj.shape[0], *CHUNKS))
                for z in range(0, obj.shape[1], CHUNKS[0]):
                    ds[:, z:z + CHUNKS[0]] = obj[:, z:z + CHUNKS[0]]
                ds.attrs.update(obj.attrs)
            elif isinstance(obj, h5py.Dataset):
                dst.create_dataset(name, data=obj[()])
                dst[name].attrs.update(obj.attrs)
            else:
                dst.require_group(name).attrs.update(obj.attrs)
        src.visititems(copy)
    tmp.rename(path)
    return path


def measure_floor(path: Path) -> dict:
    """Bare h5py: every chunk (or txmdb's slab, contiguous) read_direct into one reused buffer."""
    import h5py
    import numpy as np

    from txmdb.io.hdf5 import open_stack
    from txmdb.pipeline import default_slab

    info = open_stack(path)
    data, rows = info.data_path, default_slab(info)      # txmdb's slab, for the contiguous file
    cpu0 = _cpu()
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        ds = f[data]
        if ds.chunks:
            buf = np.empty(ds.chunks, dtype=ds.dtype)
            for sel in ds.iter_chunks():
                shape = tuple(s.stop - s.start for s in sel)
                out = buf if shape == buf.shape else np.empty(shape, ds.dtype)
                ds.read_direct(out, sel)
        else:
            buf = np.empty((ds.shape[0], rows, *ds.shape[2:]), dtype=ds.dtype)
            for z in range(0, ds.shape[1], rows):
                n = min(rows, ds.shape[1] - z)
                ds.read_direct(buf, np.s_[:, z:z + n], np.s_[:, :n])
    return {"wall_s": round(time.perf_counter() - t0, 3), "cpu_s": round(_cpu() - cpu0, 2), "peak_rss_mb": _rss()}


def _references(catalog) -> str:
    """NiO and LiNiO2 of the test data recorded as the catalogue's references; their names."""
    from txmdb.catalog.spectroscopy import ingest_xas

    data = Path(__file__).resolve().parents[1] / "tests" / "data" / "xas"
    for name in ("NiO", "LiNiO2"):
        ingest_xas(catalog, data / f"ref_{name}.txt", reference=name, edge="Ni-K")
    return "NiO,LiNiO2"


def measure_analysis(path: Path, spectral: bool, gradient_maps: str, workers: int, verify_input: bool = False) -> dict:
    from txmdb.catalog.txm import analyze_scan, ingest_scan
    from txmdb.options import analysis_request

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _catalog import fresh_catalog

    catalog = fresh_catalog(OUT / "bench_whole_analysis")
    scan, _ = ingest_scan(catalog, path, sample="rod")
    # the options as `txm analyze` parses them (--edge-only: no white line, no LCF)
    values = {"workers": workers or None, "gradient_map": gradient_maps,
              **({"lcf": _references(catalog)} if spectral else {"white_line": "none"})}
    options, _ = analysis_request(values, catalog=catalog)
    checks = _watch_input_hash()
    cpu0 = _cpu()
    t0 = time.perf_counter()
    # ingest recorded the file's identity: by default the analysis trusts the SHA-256 (no hash)
    analysis = analyze_scan(catalog, scan.id, options, verify_input=verify_input)
    wall = time.perf_counter() - t0
    check = checks[0]
    return {"wall_s": round(wall, 3), "cpu_s": round(_cpu() - cpu0, 2), "timings_s": {k: round(v, 2) for k, v in analysis.timings_s.items()},
            "input_check": type(check).__name__ + (" (known)" if getattr(check, "known", False) else ""),
            **({"read_cpu_s": round(check.read_cpu_s, 2), "hash_cpu_s": round(check.hash_cpu_s, 2),
                "reread_mb": round(check.reread_bytes / 2**20)} if hasattr(check, "read_cpu_s") else {}),
            "maps": list(options.computed_maps()), "gradient_maps": list(options.gradient_maps),
            "peak_rss_mb": _rss(), "n_particles": analysis.n_particles}


def _watch_input_hash() -> list:
    """The input-hash objects analyze_scan starts (SingleRead: one read of the file, with its
    threads' CPU seconds; BackgroundHash: a second read), collected in the returned list."""
    import txmdb.pipeline as pipeline

    seen, start = [], pipeline.input_hash

    def watched(*args, **kwargs):
        seen.append(start(*args, **kwargs))
        return seen[-1]

    pipeline.input_hash = watched
    return seen


def _cpu() -> float:
    """CPU seconds of this process (all threads, user + system): less sensitive than wall time
    to other processes on a loaded machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 2)


def _rss() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(args: list[str], env: dict | None = None, memory: str = "as-is") -> dict:
    settle(memory, cached=args[1])             # every child reads the stack args[1] names
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True,
                         env=None if env is None else {**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=272)
    ap.add_argument("--layout", choices=("chunked", "contiguous", "both"), default="both")
    ap.add_argument("--pairs", type=int, default=2, help="floor/analysis pairs per file")
    ap.add_argument("--edge-only", dest="spectral", action="store_false",
                    help="the edge map alone (default: also the white line and a two-reference LCF)")
    ap.add_argument("--gradient-maps", default="edge")
    ap.add_argument("--workers", type=int, default=0, help="kernel threads (default 0: the product's, one per core)")
    ap.add_argument("--old-read", action="store_true",
                    help="per pair also the analysis with h5py's read and a second read for the hash "
                         "(TXMDB_SINGLE_READ=0), to compare")
    ap.add_argument("--verify-input", action="store_true",
                    help="per pair also the analysis that hashes its input in full (txm analyze --verify-input; "
                         "by default the SHA-256 recorded with the file's unchanged identity is trusted), to compare")
    ap.add_argument("--memory", choices=STATES, default="as-is",
                    help="the VM's free memory before each child (benchmarks/_vm.py): full, cold, warm or as-is")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, path = args.child[0], Path(args.child[1])
        result = measure_floor(path) if kind == "floor" else \
            measure_analysis(path, args.child[2] == "1", args.child[3], int(args.child[4]),
                             args.child[5:6] == ["1"])
        print(json.dumps(result))
        return
    layouts = ("chunked", "contiguous") if args.layout == "both" else (args.layout,)
    for layout in layouts:
        path = chunked(args.size) if layout == "chunked" else contiguous(args.size)
        measure_floor(path)                                   # into the page cache, untimed
        for pair in range(args.pairs):
            load = os.getloadavg()[0]
            floor = _child(["floor", str(path)], memory=args.memory)
            analysis_args = ["analysis", str(path), "1" if args.spectral else "0", args.gradient_maps,
                             str(args.workers)]
            analysis = _child(analysis_args, memory=args.memory)
            old = {"old_read": _child(analysis_args, {"TXMDB_SINGLE_READ": "0"}, args.memory)} if args.old_read else {}
            if args.verify_input:
                old["verify_input"] = _child([*analysis_args, "1"], memory=args.memory)
            print(json.dumps({"layout": layout, "pair": pair, "memory": args.memory, "floor": floor, "analysis": analysis, **old,
                              "ratio": round(analysis["wall_s"] / floor["wall_s"], 2),
                              "cpu_ratio": round(analysis["cpu_s"] / floor["cpu_s"], 2),
                              "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}),
                  flush=True)


if __name__ == "__main__":
    main()
