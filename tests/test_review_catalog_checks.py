"""Review of the trusted SHA-256 (a5370ed, b31eaae), on SQLite and PostgreSQL:

- the stack's metadata, opened by path apart from the descriptor checked, must describe the
  stack ingested (shape, data type, energies), else one line and exit 1;
- ``prepare_scan``'s hashed check and the export's last check give one-line InputErrors; a
  trusted export of a file rewritten while it is written fails and leaves no output;
- the registration estimate opens the file through ``txmdb.io.hdf5._open``: one line naming
  the scan's file, never ``/proc/self/fd/N``;
- the cyclic garbage collector's switch is counted across threads like the huge pages'.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.test_cli_txm import GOLDEN
from tests.test_identity_hash_analyze import (_args, _flip_last_byte_keeping_times, _identity, _ingest,
                                              _refused, settled_pool)
from tests.test_single_read_cli import ROD, chunked_rod, lab  # noqa: F401 - fixtures
from txmdb.errors import InputError


@pytest.fixture(scope="module")
def settled(tmp_path_factory):
    """Settled copies of the gzip 2-D rod (:func:`settled_pool`)."""
    folder = tmp_path_factory.mktemp("review").resolve()
    return settled_pool(folder, {"gzip": (GOLDEN / "rod96_2d.h5", 16)})


def _other_shape(path: Path) -> None:
    """Put the 3-D rod (another shape, same layout) at ``path``."""
    shutil.copyfile(GOLDEN / ROD["file"], path)


def _shape_changed(scan: int, path) -> str:
    return (f"{path}: the file changed since scan {scan} was ingested "
            f"(its stack's shape, data type or energies differ)")


def _ingested_row(catalog, path: Path):
    from txmdb.catalog.samples import add_sample
    from txmdb.catalog.txm import ingest_scan

    with catalog.session() as session:
        add_sample(session, "rod")
    scan, _ = ingest_scan(catalog, path, sample="rod", voxel_nm=ROD["voxel_size_nm"])
    assert scan.file_identity is not None
    return scan


def _scan_row(catalog, scan_id: int):
    from txmdb.db.models import TXMScan

    with catalog.session() as session:
        return session.get(TXMScan, scan_id)


# --- 1. the metadata opened by path describes the stack ingested -------------------------------
def test_a_stack_of_another_shape_fails_the_stack_check(catalog, settled):
    from txmdb.catalog.txm import check_stack, open_scan_stack

    path = settled("gzip")
    scan = _ingested_row(catalog, path)
    check_stack(scan, open_scan_stack(scan))
    _other_shape(path)
    with pytest.raises(InputError) as caught:
        check_stack(scan, open_scan_stack(scan))
    assert str(caught.value) == _shape_changed(scan.id, path)
    assert _scan_row(catalog, scan.id).file_identity == scan.file_identity


@pytest.mark.parametrize("verify", [[], ["--verify-input"]])
def test_analyze_of_a_stack_of_another_shape_fails_in_one_line(lab, settled, verify):
    path = settled("gzip")
    scan = _ingest(lab, path)
    recorded = _identity(lab, scan)
    _other_shape(path)
    # hashed (its identity changed): the hash's message comes first
    _refused(lab, scan, f"{path}: the file changed since scan {scan} was ingested (SHA-256 differs)",
             *_args("gzip"), *verify)
    assert _identity(lab, scan) == recorded


# --- 2. prepare_scan's and the export's checks ----------------------------------------------------
def test_export_of_an_unreadable_path_fails_in_one_line(lab, settled, tmp_path):
    path = settled("gzip")
    scan = _ingest(lab, path)
    recorded = _identity(lab, scan)
    path.unlink()
    path.mkdir()                        # the identity differs: hashed, and the hash cannot read it
    out = tmp_path / "out" / "stack.h5"
    out.parent.mkdir()
    result = lab("txm", "export", str(scan), "-o", out)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == f"error: {path}: cannot read: not a regular file\n"
    assert list(out.parent.iterdir()) == []
    assert _identity(lab, scan) == recorded


def test_a_trusted_export_of_a_file_rewritten_meanwhile_fails_and_leaves_nothing(catalog, settled, tmp_path):
    from txmdb.catalog.export import export_scan
    from txmdb.io.files import file_identity, identity_text

    path = settled("gzip")
    scan = _ingested_row(catalog, path)
    assert scan.file_identity == identity_text(file_identity(os.stat(path)))     # trusted, not hashed
    out = tmp_path / "out" / "stack.h5"
    out.parent.mkdir()
    rewritten = []

    def rewrite(done, total):
        if not rewritten:
            _flip_last_byte_keeping_times(path)
            rewritten.append(done)

    with pytest.raises(InputError) as caught:
        export_scan(catalog, scan.id, out, progress=rewrite)
    assert rewritten
    assert str(caught.value) == f"{path}: the file was written to while it was exported; export it again"
    assert list(out.parent.iterdir()) == []
    assert _scan_row(catalog, scan.id).file_identity == scan.file_identity


def test_prepare_scan_holds_only_a_checked_descriptor(catalog, settled):
    from txmdb.catalog.txm import prepare_scan

    scan = _ingested_row(catalog, settled("gzip"))
    with pytest.raises(ValueError, match="hold=True .* needs verify_hash=True"):
        prepare_scan(catalog, scan.id, hold=True, verify_hash=False)
    _, info, hashing = prepare_scan(catalog, scan.id, hold=True)
    try:
        assert str(info.path) == hashing.source != scan.file_path
    finally:
        hashing.cancel()


# --- 3. the estimate's file opened by the one helper ----------------------------------------------
def test_the_estimate_names_the_scans_file_not_the_descriptor(catalog, settled, tmp_path):
    from txmdb.catalog.registration import _estimate
    from txmdb.catalog.txm import named_as_scan, open_scan_stack

    scan = _ingested_row(catalog, settled("gzip"))
    info = open_scan_stack(scan)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not HDF5 at all" * 100)
    with pytest.raises(InputError) as caught:
        _estimate(dataclasses.replace(info, path=junk), 0, 3.0, None)
    assert str(caught.value).startswith(f"{junk}: not a readable HDF5 file (")
    fd = os.open(junk, os.O_RDONLY)
    try:
        described = dataclasses.replace(info, path=Path(f"/proc/self/fd/{fd}"))
        with pytest.raises(InputError) as caught, named_as_scan(scan, described):
            _estimate(described, 0, 3.0, None)
    finally:
        os.close(fd)
    assert str(caught.value).startswith(f"{scan.file_path}: not a readable HDF5 file (")
    assert "/proc/self/fd" not in str(caught.value)


# --- 4. the cyclic collector's switch, counted ------------------------------------------------------
@pytest.fixture
def collector():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


@pytest.mark.parametrize("was", [True, False])
def test_no_cyclic_gc_off_inside_and_restored_even_on_error(collector, was):
    from txmdb.analysis._memory import no_cyclic_gc

    (gc.enable if was else gc.disable)()
    with pytest.raises(RuntimeError):
        with no_cyclic_gc():
            assert not gc.isenabled()
            raise RuntimeError("boom")
    assert gc.isenabled() is was


def test_no_cyclic_gc_overlapping_threads_restore_it_only_when_the_last_leaves(collector):
    from txmdb.analysis._memory import no_cyclic_gc

    gc.enable()
    entered, release = threading.Event(), threading.Event()
    seen = []

    def other():
        with no_cyclic_gc():
            entered.set()
            release.wait(10)
            seen.append(gc.isenabled())             # still off after the first left

    with no_cyclic_gc():
        thread = threading.Thread(target=other)
        thread.start()
        assert entered.wait(10)
    assert not gc.isenabled()                       # the other thread is still inside
    release.set()
    thread.join(10)
    assert seen == [False] and gc.isenabled()       # back on once both left


def test_registration_uses_the_shared_switches_and_keeps_no_stale_model_fields():
    import txmdb.analysis.registration as reg
    from txmdb.analysis._memory import no_cyclic_gc, no_huge_pages

    assert reg._no_cyclic_gc is no_cyclic_gc and reg._no_huge_pages is no_huge_pages
    assert {"template", "box"}.isdisjoint(f.name for f in dataclasses.fields(reg._Model))
