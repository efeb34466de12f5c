"""A slow instrument for tests/test_harvest.py: writes files in pieces, as cyclers and beamlines do.

Run as ``python -m tests.harvest_writer PLAN.json``. Each job of the plan runs in its own thread:

- ``text``: copy a text file in pieces; at each of ``stalls`` (byte offsets, mid-line) it stops
  for ``stall`` seconds, longer than the watcher's settle time, with a cut last line on disk;
- ``hdf5``: write a stack with h5py into the file itself, slab by slab, the file held open
  (HDF5-locked) and unchanged for ``stall`` seconds between slabs;
- ``copy``: copy a binary file (a finished HDF5 stack) in pieces with a stall half-way.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

PIECE_PAUSE_S = 0.1


def mid_line_offsets(data: bytes, fractions) -> list[int]:
    """Offsets near ``fractions`` of ``data`` that fall in the middle of a line (never after a line break)."""
    offsets = []
    for fraction in fractions:
        at = int(len(data) * fraction)
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at)
        offsets.append(start + max(1, (end - start) // 2))
    return offsets


def write_in_pieces(source: Path, target: Path, *, pieces: int, stalls: list[int], stall: float) -> None:
    data = source.read_bytes()
    cuts = sorted(set(stalls) | {len(data) * i // pieces for i in range(1, pieces)})
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as fh:
        done = 0
        for cut in [*cuts, len(data)]:
            fh.write(data[done:cut])
            fh.flush()
            done = cut
            time.sleep(stall if cut in stalls else PIECE_PAUSE_S)


def write_hdf5(target: Path, *, seed: int, shape, slabs: int, stall: float) -> None:
    import h5py

    from txmdb.synthetic.tomogram import LAYOUT_PATHS, SyntheticStack, energy_grid, particle_field

    energies = energy_grid(shape[0])
    edge, _ = particle_field(tuple(shape[1:]), kind="rod", seed=seed)
    stack = SyntheticStack(edge, energies, noise=0.01, seed=seed)
    data_path, energy_path, _, _ = LAYOUT_PATHS["dxchange"]
    target.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(target, "w") as f:
        ds = f.create_dataset(data_path, shape=tuple(shape), dtype="f4")
        f.create_dataset(energy_path, data=energies)
        ds.attrs["voxel_size_nm"] = 30.0
        step = -(-shape[1] // slabs)
        for a in range(0, shape[1], step):
            ds[:, a:a + step] = stack.slab(a, min(a + step, shape[1]))
            f.flush()
            time.sleep(stall)


def run(plan: list[dict]) -> None:
    threads = []
    for job in plan:
        kind = job.pop("kind")
        target = Path(job.pop("target"))
        if kind == "text":
            source = Path(job.pop("source"))
            stalls = mid_line_offsets(source.read_bytes(), job.pop("stall_at"))
            work = (write_in_pieces, (source, target), dict(stalls=stalls, **job))
        elif kind == "copy":
            source = Path(job.pop("source"))
            work = (write_in_pieces, (source, target), dict(stalls=[source.stat().st_size // 2], **job))
        else:
            work = (write_hdf5, (target,), job)
        threads.append(threading.Thread(target=_noting_errors, args=work))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if ERRORS:
        raise SystemExit(f"writer failed: {ERRORS}")


ERRORS: list[str] = []


def _noting_errors(function, args, kwargs) -> None:
    try:
        function(*args, **kwargs)
    except Exception as exc:  # reported by the exit status: the test must not pass on a writer that failed
        ERRORS.append(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
