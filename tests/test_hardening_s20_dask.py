"""`txm analyze --scheduler` on a real Dask LocalCluster, SQLite and PostgreSQL: the client
checks the scan's file, then the workers open its path themselves. A file replaced between the
two — another renamed over the path, or the same inode rewritten with its size and
modification time put back — must not be analysed: every worker task verifies, on the
descriptor it opened, that it is the file the client checked (the identity of migration 0009),
and the analysis fails in one line with nothing stored.

The seam: the client's connection to the scheduler, which comes after every check of the
scans and before any task reaches a worker (the test swaps the file there, deterministically).
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import h5py
import pytest

from tests.test_map_statistics import _count, _json, _one_line_error


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """A small contiguous float32 stack (two particles) and a same-shape one with other data."""
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    folder = tmp_path_factory.mktemp("s20_dask")
    energies = energy_grid(40)
    out = {}
    for name, seed in (("scan", 4), ("other", 9)):
        edge, _ = particle_field((16, 32, 32), kind="rod", n_particles=2, radius=7.0, seed=seed)
        write_stack(folder / f"{name}.h5", SyntheticStack(edge, energies, noise=0.01, seed=seed), energies,
                    voxel_size_nm=30.0)
    return out | {name: folder / f"{name}.h5" for name in ("scan", "other")}


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod").exit_code == 0
    return cli


def _ingest(lab, source: Path, path: Path) -> str:
    shutil.copyfile(source, path)
    result = lab("txm", "ingest", path, "--sample", "rod")
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def _rename_over(path: Path, other: Path) -> None:
    """Another stack (same shape, other voxels) renamed over ``path``: a new inode."""
    staged = path.with_name(path.name + ".new")
    shutil.copyfile(other, staged)
    os.replace(staged, path)


def _rewrite_in_place(path: Path, other: Path) -> None:
    """The same inode rewritten with another stack's voxels, its size and modification time put back."""
    before = os.stat(path)
    with h5py.File(other, "r") as src, h5py.File(path, "r+") as dst:
        dst["/exchange/data"][...] = src["/exchange/data"][()]
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def _swap_after_the_check(monkeypatch, swap, seam: str) -> list:
    """Run ``swap()`` once, after the client checked the scans and before the workers open them:
    when the client connects to the scheduler (``seam`` "connect", before the client opens the
    file for its own reads too), or when it submits its first task ("task": the client holds the
    checked file open by then, only the workers' opens can see the swap)."""
    from txmdb.catalog import distributed

    real, done = distributed.connect, []

    def swap_once():
        if not done:
            swap()
            done.append(True)

    def connect(scheduler):
        if seam == "connect":
            swap_once()
        client = real(scheduler)
        submit = client.submit

        def submit_after_swap(*args, **kwargs):
            swap_once()
            return submit(*args, **kwargs)

        client.submit = submit_after_swap
        return client

    monkeypatch.setattr(distributed, "connect", connect)
    return done


def _rows(lab) -> dict:
    return {"scans": _json(lab, "query", "sql", "SELECT id, file_sha256, file_size_bytes, file_identity FROM txm_scans "
                                                "ORDER BY id"),
            "samples": _json(lab, "query", "sql", "SELECT * FROM samples ORDER BY id")}


def _nothing_stored(lab, before: dict, scans: list[str]) -> None:
    analyses = _json(lab, "query", "analyses")
    assert sorted(str(a["scan_id"]) for a in analyses) == sorted(scans)
    assert all(a["status"] == "failed" and a["results_path"] is None for a in analyses), analyses
    for table in ("gradient_summaries", "map_summaries", "particles", "depth_profiles", "theta_histograms"):
        assert _count(lab, table) == 0
    assert [p for p in Path(lab.store).rglob("*.h5")] == []
    assert _rows(lab) == before


@pytest.mark.parametrize("seam", ["connect", "task"])
@pytest.mark.parametrize("swap", [_rename_over, _rewrite_in_place], ids=["renamed-over", "rewritten"])
def test_one_scan_split_into_slabs_refuses_a_file_swapped_after_the_check(lab, cluster, stacks, tmp_path,
                                                                         monkeypatch, swap, seam):
    path = (tmp_path / "scan.h5").resolve()
    scan = _ingest(lab, stacks["scan"], path)
    before = _rows(lab)
    swapped = _swap_after_the_check(monkeypatch, lambda: swap(path, stacks["other"]), seam)
    result = lab("txm", "analyze", scan, "--bin", "1,2", "--scheduler", cluster.scheduler_address)
    assert swapped == [True]
    # before: exit 0, the other stack's voxels analysed under the ingested SHA-256. At the "task"
    # seam the client's own descriptor is the checked file: this line is a worker's refusal
    _one_line_error(result, f"{path}: the file changed since scan {scan} was ingested "
                            "(it is not the file checked when the analysis began)")
    assert "Traceback" not in result.output
    _nothing_stored(lab, before, [scan])
    (analysis,) = _json(lab, "query", "analyses")
    assert "changed since scan" in analysis["error"]


@pytest.mark.parametrize("swap", [_rename_over, _rewrite_in_place], ids=["renamed-over", "rewritten"])
def test_many_scans_at_once_refuse_a_file_swapped_after_the_check(lab, cluster, stacks, tmp_path, monkeypatch,
                                                                  swap):
    """One whole-pipeline task per scan: both files swapped, both analyses fail, nothing stored."""
    paths = [(tmp_path / f"scan{i}.h5").resolve() for i in (1, 2)]
    scans = [_ingest(lab, stacks["scan"] if i == 0 else stacks["other"], p) for i, p in enumerate(paths)]
    before = _rows(lab)

    def swap_both():
        swap(paths[0], stacks["other"])
        swap(paths[1], stacks["scan"])

    swapped = _swap_after_the_check(monkeypatch, swap_both, "task")
    result = lab("txm", "analyze", "--all", "--bin", "1,2", "--scheduler", cluster.scheduler_address)
    assert swapped == [True]
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert any(line == f"error: {p}: the file changed since scan {s} was ingested "
                       "(it is not the file checked when the analysis began)" for p, s in zip(paths, scans)), line
    _nothing_stored(lab, before, scans)


def test_an_unswapped_file_is_analysed_on_the_cluster_as_here(lab, cluster, stacks, tmp_path):
    """The check costs nothing in results: the cluster's tables equal the in-process run's."""
    path = (tmp_path / "scan.h5").resolve()
    scan = _ingest(lab, stacks["scan"], path)
    here = lab("txm", "analyze", scan, "--bin", "1,2")
    there = lab("txm", "analyze", scan, "--bin", "1,2", "--scheduler", cluster.scheduler_address)
    assert here.exit_code == 0 and there.exit_code == 0, here.output + there.output
    first, second = _json(lab, "query", "analyses")
    assert first["status"] == second["status"] == "done"
    for table in ("gradient_summaries", "particles"):
        rows = _json(lab, "query", "sql", f"SELECT * FROM {table} ORDER BY id")
        strip = [{k: v for k, v in r.items() if k not in ("id", "analysis_id")} for r in rows]
        ones = [s for s, r in zip(strip, rows) if r["analysis_id"] == first["analysis_id"]]
        twos = [s for s, r in zip(strip, rows) if r["analysis_id"] == second["analysis_id"]]
        assert ones and ones == twos
    with h5py.File(second["results_path"], "r") as f:    # named as the scan's file, not a descriptor
        assert f.attrs["source"] == str(path)


def test_a_worker_on_another_kernel_compares_the_identity_without_the_device(stacks, tmp_path):
    """An NFS mount's device number is each client's own: on another kernel the worker takes
    its device number from the path, and still refuses another inode."""
    import dataclasses

    from txmdb.catalog.integrity import CheckedFile, _kernel
    from txmdb.errors import InputError
    from txmdb.io.files import file_identity
    from txmdb.io.hdf5 import open_stack

    path = tmp_path / "scan.h5"
    shutil.copyfile(stacks["scan"], path)
    info = open_stack(path)
    identity = file_identity(os.stat(path))
    elsewhere = CheckedFile(str(path), 1, "0" * 64, (identity[0] + 1, *identity[1:]), kernel="another-boot-id")
    with elsewhere.reading(info) as held:
        assert str(held.path).startswith("/proc/self/fd/")
        with h5py.File(held.path, "r") as f:
            assert f["/exchange/data"].shape == info.shape
    # on this kernel the device counts
    with pytest.raises(InputError, match="changed since scan 1 was ingested"):
        with dataclasses.replace(elsewhere, kernel=_kernel()).reading(info):
            pass
    assert dataclasses.replace(elsewhere, identity=identity, kernel=_kernel())._identity_here() == identity
    _rename_over(path, stacks["other"])
    with pytest.raises(InputError, match="changed since scan 1 was ingested"):
        with elsewhere.reading(info):
            pass
    assert pickle.loads(pickle.dumps(elsewhere)) == elsewhere      # travels with every task


def test_a_fifo_put_at_the_path_after_the_check_fails_the_workers_in_one_line(lab, cluster, stacks, tmp_path,
                                                                             monkeypatch):
    """Attacker's pass: a FIFO (no writer) renamed over the path once the client holds the checked
    file: a worker's open must neither block nor read it."""
    path = (tmp_path / "scan.h5").resolve()
    scan = _ingest(lab, stacks["scan"], path)
    before = _rows(lab)

    def fifo_over():
        fifo = path.with_name("fifo")
        os.mkfifo(fifo)
        os.replace(fifo, path)

    swapped = _swap_after_the_check(monkeypatch, fifo_over, "task")
    result = lab("txm", "analyze", scan, "--bin", "1,2", "--scheduler", cluster.scheduler_address)
    assert swapped == [True]
    _one_line_error(result, f"{path}: cannot read: not a regular file")
    _nothing_stored(lab, before, [scan])
