"""Attacks on the trusted SHA-256 (a scan file's recorded identity, migration 0009), on SQLite
and PostgreSQL, by someone who can write to the shared folder (not root) or a confused user:

- the file deleted, or a directory / FIFO put at its path: one line, exit 1;
- a same-size different file put at the path by hard link or symlink, content truncated and
  rewritten to the same size with the modification time put back, a data set changed in place
  through h5py: the change time moves, so the file is hashed and refused;
- a modification time set into the future after ingest: hashed in full, not recorded;
- a rename over the path or a deletion while a trusted analysis runs: refused in one line;
- a queued analysis of a changed file fails its job; ``db check`` still hashes in full.

In every refusal nothing is recorded done and the recorded identity stays as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import h5py
import pytest
import sqlalchemy as sa

from tests.test_cli_txm import GOLDEN
from tests.test_identity_hash_analyze import (MODES, _analyze_with, _analyzed, _args, _identity, _ingest,
                                              _nothing_done, _refused, _write_last_byte, settled_pool)
from tests.test_jobs import clean_env, worker_command
from tests.test_single_read_cli import ROD, chunked_rod, lab  # noqa: F401 - fixtures
from txmdb.io.files import file_identity, identity_text


@pytest.fixture(scope="module")
def settled(chunked_rod, tmp_path_factory):  # noqa: F811
    """Settled copies of the chunked and the gzip stack and of a drifted one for register
    (:func:`settled_pool`), one per test and backend."""
    from txmdb.synthetic.drift import make_drifted, write_drifted_stack

    folder = tmp_path_factory.mktemp("attack").resolve()
    write_drifted_stack(folder / "drift.h5", make_drifted((40, 48), n_energies=8, seed=1, max_drift=3.0))
    return settled_pool(folder, {"chunked": (chunked_rod, 14), "gzip": (GOLDEN / "rod96_2d.h5", 28),
                                 "drift": (folder / "drift.h5", 2)})


def _ingested(cli, path: Path) -> tuple[Path, int, str]:
    """``path`` ingested: it, its scan id and the identity recorded (one: the file is settled)."""
    scan = _ingest(cli, path)
    recorded = _identity(cli, scan)
    assert recorded == identity_text(file_identity(os.stat(path)))
    return path, scan, recorded


def _changed(cli, scan: int, path: Path) -> str:
    return f"{path}: the file changed since scan {scan} was ingested (SHA-256 differs)"


def _other_same_size(path: Path) -> Path:
    """A copy of ``path`` with its last byte changed and ``path``'s modification time, beside it."""
    before = os.stat(path)
    other = path.with_name(path.stem + "-other.h5")
    shutil.copyfile(path, other)
    _write_last_byte(other)
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(other).st_size == before.st_size
    return other


@pytest.mark.parametrize("what", ["deleted", "directory", "fifo"])
def test_no_regular_file_at_the_path_fails_in_one_line(lab, settled, what):
    path, scan, recorded = _ingested(lab, settled("gzip"))
    path.unlink()
    if what == "directory":
        path.mkdir()
    elif what == "fifo":
        os.mkfifo(path)
    _refused(lab, scan, f"{path}: the file of scan {scan} is no longer there", *_args("gzip"))
    _refused(lab, scan, f"{path}: the file of scan {scan} is no longer there", *_args("gzip"), "--verify-input")
    assert _identity(lab, scan) == recorded


@pytest.mark.parametrize("link", ["hard", "symbolic"])
@pytest.mark.parametrize("kind", MODES)
def test_a_same_size_file_linked_over_the_path_is_refused(lab, settled, kind, link):
    path, scan, recorded = _ingested(lab, settled(kind))
    other = _other_same_size(path)
    staged = path.with_name("staged.h5")
    (os.link if link == "hard" else os.symlink)(other, staged)
    os.replace(staged, path)
    assert os.stat(path).st_size == int(recorded.split(":")[2])
    _refused(lab, scan, _changed(lab, scan, path), *_args(kind))
    assert _identity(lab, scan) == recorded


def _rewrite_keeping_size_and_mtime(path: Path, change) -> None:
    """The file's content changed by ``change(path)``; its size and modification time put back."""
    before = os.stat(path)
    change(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def _truncate_and_rewrite(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF                # (a byte inside a gzip chunk fails the read before the hash's check)
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write(data)


def _add_one_in_place(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        ds = f["/exchange/data"]
        corner = (0,) * (ds.ndim - 2)
        ds[corner] = ds[corner] + 1


@pytest.mark.parametrize("how", ["truncate", "h5py"])
@pytest.mark.parametrize("kind", MODES)
def test_content_changed_in_place_keeping_size_and_mtime_is_refused(lab, settled, kind, how):
    path, scan, recorded = _ingested(lab, settled(kind))
    change = _truncate_and_rewrite if how == "truncate" else _add_one_in_place
    if how == "h5py" and kind == "gzip":
        # a recompressed chunk may not keep the size: change it, then check what the attacker got
        before = os.stat(path)
        change(path)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        _rewrite_keeping_size_and_mtime(path, change)
    _refused(lab, scan, _changed(lab, scan, path), *_args(kind))
    assert _identity(lab, scan) == recorded


def test_a_future_modification_time_after_ingest_is_hashed_and_not_recorded(lab, settled):
    path, scan, recorded = _ingested(lab, settled("gzip"))
    future = time.time_ns() + 3600 * 10**9
    os.utime(path, ns=(future, future))
    for _ in range(2):              # hashed in full each time: the future time is never "settled"
        analysis = _analyzed(lab, scan, *_args("gzip"))
        assert analysis.timings_s["hash"] > 0.0
        assert _identity(lab, scan) == recorded != identity_text(file_identity(os.stat(path)))


@pytest.mark.parametrize("kind", MODES)
def test_a_rename_over_the_path_during_a_trusted_analysis_fails_it(catalog, settled, kind):
    def swap(path):
        os.replace(_other_same_size(path), path)

    error, scan = _analyze_with(catalog, settled(kind), swap)
    assert str(error) == f"{scan.file_path}: the file was written to while it was analysed; analyse it again"
    _nothing_done(catalog, scan)


@pytest.mark.parametrize("kind", MODES)
def test_a_deletion_during_a_trusted_analysis_fails_in_one_line(catalog, settled, kind):
    error, scan = _analyze_with(catalog, settled(kind), Path.unlink)
    # the read's own descriptor sees the unlink: the file's change time moves
    assert str(error) == f"{scan.file_path}: the file was written to while it was analysed; analyse it again"
    _nothing_done(catalog, scan)


def test_a_queued_analysis_of_a_changed_file_fails_its_job(lab, settled):
    path, scan, recorded = _ingested(lab, settled("gzip"))
    queued = lab("txm", "analyze", str(scan), "--queue", *_args("gzip"))
    assert queued.exit_code == 0, queued.output
    _rewrite_keeping_size_and_mtime(path, _truncate_and_rewrite)
    proc = subprocess.run(worker_command(lab.url, lab.store, "--once", "--lease", "5"), env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    engine = sa.create_engine(lab.url)
    try:
        with engine.connect() as conn:
            jobs = conn.execute(sa.text("SELECT status, error FROM jobs")).all()
            analyses = conn.execute(sa.text("SELECT status, results_path FROM analyses")).all()
    finally:
        engine.dispose()
    assert [tuple(j) for j in jobs] == [("failed", _changed(lab, scan, path))]
    assert all(tuple(a) == ("failed", None) for a in analyses)
    assert _identity(lab, scan) == recorded


def test_db_check_hashes_a_source_whose_change_kept_size_and_mtime(lab, settled):
    path = settled("gzip")
    scan = _ingest(lab, path)
    assert lab("db", "check").exit_code == 0
    _rewrite_keeping_size_and_mtime(path, _truncate_and_rewrite)
    result = lab("db", "check")
    assert result.exit_code == 1
    assert re.search(rf"TXM scan {scan}\b.*source {re.escape(str(path))} changed since it was ingested "
                     rf"\(SHA-256 differs\)", result.output), result.output


def test_a_folder_renamed_over_and_back_cannot_feed_h5py_another_file(catalog, settled, monkeypatch, tmp_path):
    """The hole this file found: the trusted path (h5py reads, KnownHash) checked the identity
    by path, then h5py opened the path again. Renaming the folder (which leaves the files'
    change times alone) to one holding a same-size different file right after the check, and
    back before the end, had an analysis of the other file's bytes recorded done under the
    ingested SHA-256. h5py now reads through the checked descriptor."""
    from txmdb.catalog.samples import add_sample
    from txmdb.catalog.txm import analyze_scan, ingest_scan
    from txmdb.io import files
    from txmdb.options import analysis_request

    source = settled("gzip")
    real = tmp_path / "real"
    real.mkdir()
    path = real / "scan.h5"
    os.link(source, path)                       # the same settled inode: its times are old
    os.unlink(source)
    time.sleep(2.3)                             # the link moved the change time: settle again
    fake = tmp_path / "fake"
    fake.mkdir()
    with h5py.File(shutil.copyfile(path, fake / "scan.h5"), "r+") as f:
        ds = f["/exchange/data"]
        ds[0] = ds[0] * 0 + 1
    assert os.stat(fake / "scan.h5").st_size == os.stat(path).st_size
    with catalog.session() as session:
        add_sample(session, "rod")
    scan, _ = ingest_scan(catalog, path, sample="rod", voxel_nm=ROD["voxel_size_nm"])
    assert scan.file_identity is not None
    options, _ = analysis_request({"white_line": "none"}, catalog=catalog)
    clean = analyze_scan(catalog, scan.id, options)
    assert clean.timings_s["hash"] == 0.0       # trusted: the path under attack

    checked = files.KnownHash.if_unchanged.__func__
    away = tmp_path / "away"

    def then_swap(cls, where, known):           # the attacker wins the race right after the check
        found = checked(cls, where, known)
        os.rename(real, away)
        os.rename(fake, real)
        return found

    def swap_back(done, total):
        if not away.exists():
            return
        os.rename(real, fake)
        os.rename(away, real)

    monkeypatch.setattr(files.KnownHash, "if_unchanged", classmethod(then_swap))
    attacked = analyze_scan(catalog, scan.id, options, progress=swap_back)
    assert not away.exists() and os.stat(path).st_ino == int(scan.file_identity.split(":")[1])
    assert attacked.status == "done" and attacked.timings_s["hash"] == 0.0
    # the bytes analysed were the ingested file's, not the other's
    assert (attacked.n_valid_voxels, attacked.mean_edge_ev) == (clean.n_valid_voxels, clean.mean_edge_ev)


def test_a_folder_renamed_over_and_back_cannot_feed_register_another_file(lab, settled, monkeypatch, tmp_path):
    """The same folder swap against ``txm register``'s trusted estimate: the shifts stored are
    the ingested file's, not those of the same-size file with one energy's image moved."""
    import numpy as np

    from txmdb.io import files

    real, fake, away = tmp_path / "real", tmp_path / "fake", tmp_path / "away"
    real.mkdir()
    fake.mkdir()
    source = settled("drift")
    path = real / "scan.h5"
    os.link(source, path)
    os.unlink(source)
    with h5py.File(shutil.copyfile(path, fake / "scan.h5"), "r+") as f:
        ds = f["/exchange/data"]
        ds[3] = np.roll(ds[3], 5, axis=-1)
    assert os.stat(fake / "scan.h5").st_size == os.stat(path).st_size
    time.sleep(2.3)                             # the link moved the change time: settle again
    scan = _ingest(lab, path)
    assert _identity(lab, scan) is not None

    def shifts() -> list[tuple]:
        result = lab("txm", "register", str(scan), "--accept-poor")
        assert result.exit_code == 0, result.output
        engine = sa.create_engine(lab.url)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(
                    "SELECT energy_index, shift_y, shift_x, quality FROM registration_shifts WHERE registration_id = "
                    "(SELECT max(id) FROM registrations) ORDER BY energy_index"))]
        finally:
            engine.dispose()

    clean = shifts()
    checked, result = files.KnownHash.if_unchanged.__func__, files.KnownHash.result

    def then_swap(cls, where, known):
        found = checked(cls, where, known)
        os.rename(real, away)
        os.rename(fake, real)
        return found

    def swap_back(self):
        os.rename(real, fake)
        os.rename(away, real)
        return result(self)

    monkeypatch.setattr(files.KnownHash, "if_unchanged", classmethod(then_swap))
    monkeypatch.setattr(files.KnownHash, "result", swap_back)
    attacked = shifts()
    assert not away.exists() and _identity(lab, scan) == identity_text(file_identity(os.stat(path)))
    assert attacked == clean
