"""Attacks of session 17 on the single read of a chunked stack (txmdb.io.single_read) and on the
autocommit reading connections (txmdb.db.engine.read_connection / shared_reads), kept as
regression tests: hostile files and races give the h5py path's results or one clear error with
nothing done; a pooled connection that served autocommit reads never makes a write non-atomic."""

from __future__ import annotations

import dataclasses
import os
import shutil

import h5py
import numpy as np
import pytest

from tests.test_single_read_cli import ROD, chunked_rod  # noqa: F401 - the module's fixture
from tests.test_single_read_reader import _read_all
from txmdb.errors import DuplicateError, InputError
from txmdb.io.hdf5 import open_stack, read_slab
from txmdb.io.single_read import SingleRead, single_read_plan


def _stack(path, *, dtype=np.float32, chunks=(6, 2, 6, 6), shape=(6, 8, 6, 6)):
    """A small dxchange stack in uncompressed chunks written row by row."""
    data = (np.random.default_rng(0).random(shape) + 1).astype(np.float32)
    with h5py.File(path, "w", rdcc_nbytes=0) as f:
        ds = f.create_dataset("/exchange/data", shape=shape, dtype=dtype, chunks=chunks)
        for z in range(0, shape[1], chunks[1]):
            ds[:, z:z + chunks[1]] = data[:, z:z + chunks[1]]
        f["/exchange/energy"] = np.linspace(8300.0, 8400.0, shape[0])
    return path


def _single_read(info, slab_size: int) -> list:
    """Every slab of ``info`` through the single read (which must take the stack), hash included."""
    reader = SingleRead.open(info, slab_size)
    assert reader is not None
    try:
        slabs = _read_all(reader)
        reader.result()
    finally:
        reader.cancel()
    return slabs


def _analysis_setup(catalog, path):
    from txmdb.catalog.samples import add_sample
    from txmdb.catalog.txm import ingest_scan
    from txmdb.options import analysis_request

    with catalog.session() as session:
        add_sample(session, "rod")
    scan, _ = ingest_scan(catalog, path, sample="rod", voxel_nm=ROD["voxel_size_nm"])
    options, _ = analysis_request({"white_line": "none"}, catalog=catalog)
    return scan, dataclasses.replace(options, slab_size=8, clusters=2)


def _nothing_done(catalog) -> None:
    import sqlalchemy as sa

    with catalog.engine.connect() as conn:
        statuses = conn.execute(sa.text("SELECT status, results_path FROM analyses")).all()
        particles = conn.execute(sa.text("SELECT count(*) FROM particles")).scalar_one()
    assert statuses == [("failed", None)] and particles == 0


# ----------------------------------------------------------------------------- single read


def test_a_stack_renamed_over_by_one_linked_to_another_file_is_not_planned(chunked_rod, tmp_path):  # noqa: F811
    """The file opened for the read holds an external link to the stack of another file: its
    chunk offsets are the other file's, so the read of this file must not use them (it did:
    the plan followed the link and the offsets, padded to lie inside this file, were taken)."""
    path = shutil.copy(chunked_rod, tmp_path / "scan.h5")
    info = open_stack(path, voxel_nm=ROD["voxel_size_nm"])
    other = shutil.copy(chunked_rod, tmp_path / "other.h5")
    hostile = tmp_path / "hostile.h5"
    with h5py.File(hostile, "w") as f:
        f["/pad"] = np.zeros(os.path.getsize(other), dtype=np.uint8)   # the other file's offsets fit
        f["/exchange/data"] = h5py.ExternalLink(str(other), "/exchange/data")
        f["/exchange/energy"] = h5py.File(chunked_rod, "r")["/exchange/energy"][()]
    assert os.path.getsize(hostile) > os.path.getsize(other)
    os.replace(hostile, path)
    assert SingleRead.open(info, 8) is None
    assert "chunk index unreadable" in single_read_plan(info, 8, os.path.getsize(path))


def test_big_endian_floats_fall_back_and_big_endian_integers_read_exactly(tmp_path):
    be_float = open_stack(_stack(tmp_path / "bef.h5", dtype=">f4"), voxel_nm=10)
    assert single_read_plan(be_float, 2, os.path.getsize(be_float.path)) == \
        "stored type >f4 is not read as raw numbers"
    info = open_stack(_stack(tmp_path / "beu.h5", dtype=">u2"), voxel_nm=10)
    slabs = _single_read(info, 2)
    assert len(slabs) == 4
    for start, stop, slab in slabs:
        assert np.array_equal(slab, read_slab(info, start, stop))


def test_more_tiny_chunks_than_the_limit_are_left_to_h5py(tmp_path):
    info = open_stack(_stack(tmp_path / "tiny.h5", chunks=(1, 1, 1, 1), shape=(6, 8, 40, 40)), voxel_nm=10)
    assert single_read_plan(info, 8, os.path.getsize(info.path)) == "76800 chunks, more than 65536"
    assert SingleRead.open(info, 8) is None


def test_a_chunk_entry_pointing_at_the_superblock_reads_what_h5py_reads(tmp_path):
    """A patched v1 B-tree entry (no checksum) puts a chunk at byte 0: both paths read the same
    (garbage) bytes; the other chunks are unchanged."""
    import struct

    path = tmp_path / "super.h5"
    data = (np.random.default_rng(1).random((6, 8, 6, 6)) * 1000).astype(np.int32)
    with h5py.File(path, "w", rdcc_nbytes=0, libver="earliest") as f:
        ds = f.create_dataset("/exchange/data", shape=data.shape, dtype=np.int32, chunks=(6, 2, 6, 6))
        for z in range(0, 8, 2):
            ds[:, z:z + 2] = data[:, z:z + 2]
        f["/exchange/energy"] = np.linspace(8300.0, 8400.0, 6)
        first = ds.id.get_chunk_info_by_coord((0, 0, 0, 0)).byte_offset
    raw = bytearray(path.read_bytes())
    assert raw.count(struct.pack("<Q", first)) == 1
    at = raw.find(struct.pack("<Q", first))
    raw[at:at + 8] = struct.pack("<Q", 0)
    path.write_bytes(bytes(raw))
    info = open_stack(path, voxel_nm=10)
    slabs = _single_read(info, 2)
    for start, stop, slab in slabs:
        assert np.array_equal(slab, read_slab(info, start, stop))
    assert not np.array_equal(slabs[0][2], data[:, :2]) and np.array_equal(slabs[1][2], data[:, 2:4])


def test_a_file_written_to_during_the_analysis_fails_with_nothing_done(catalog, chunked_rod, tmp_path):  # noqa: F811
    """The same bytes written back in place while the stack is read: the hash still matches the
    catalogue's, but what was analysed need not be what was hashed (the hash re-reads what it
    lagged behind on), so the analysis fails (it was recorded as done)."""
    from txmdb.catalog.txm import analyze_scan

    path = shutil.copy(chunked_rod, tmp_path / "scan.h5")
    scan, options = _analysis_setup(catalog, path)
    written = []

    def rewrite(done, total):
        if not written:
            with open(path, "r+b") as fh:
                fh.seek(4096)
                byte = fh.read(1)
                fh.seek(4096)
                fh.write(byte)
            stat = os.stat(path)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
            written.append(done)

    with pytest.raises(InputError, match="the file was written to while it was analysed"):
        analyze_scan(catalog, scan.id, options, progress=rewrite)
    assert written
    _nothing_done(catalog)


def test_a_file_truncated_during_the_read_fails_in_one_error_naming_it(catalog, chunked_rod, tmp_path):  # noqa: F811
    from txmdb.catalog.txm import analyze_scan

    path = shutil.copy(chunked_rod, tmp_path / "scan.h5")
    scan, options = _analysis_setup(catalog, path)

    def truncate(done, total):
        os.truncate(path, os.path.getsize(path) // 2)

    with pytest.raises(InputError) as caught:
        analyze_scan(catalog, scan.id, options, progress=truncate)
    assert str(path.resolve()) in str(caught.value) and "\n" not in str(caught.value)
    _nothing_done(catalog)


def test_a_scan_file_replaced_by_a_fifo_fails_at_once(catalog, chunked_rod, tmp_path):  # noqa: F811
    """Opening a FIFO without a writer blocks: it must be refused before anything opens it."""
    from txmdb.catalog.txm import analyze_scan

    path = shutil.copy(chunked_rod, tmp_path / "scan.h5")
    scan, options = _analysis_setup(catalog, path)
    os.unlink(path)
    os.mkfifo(path)
    with pytest.raises(InputError, match=f"the file of scan {scan.id} is no longer there"):
        analyze_scan(catalog, scan.id, options)


# ----------------------------------------------------------------------------- reading connections


def test_a_write_after_many_autocommit_reads_is_still_atomic(catalog):
    """Every pooled connection has served reads (on PostgreSQL in autocommit, some inside a
    shared_reads block); a session's multi-row write failing on its second row leaves nothing."""
    import sqlalchemy as sa

    from txmdb.db.engine import POOL_SIZE, read_connection, shared_reads
    from txmdb.db.models import Sample

    engine = catalog.engine
    with shared_reads(engine):
        held = [read_connection(engine) for _ in range(POOL_SIZE + 2)]   # all at once: every pooled one
        for context in held:
            assert context.__enter__().execute(sa.text("SELECT count(*) FROM samples")).scalar_one() == 0
        for context in reversed(held):
            context.__exit__(None, None, None)
    with engine.connect() as conn:
        assert conn.get_isolation_level() != "AUTOCOMMIT"
    with pytest.raises(DuplicateError, match="conflicts with an existing record"):
        with catalog.session() as session:
            session.add(Sample(name="first"))
            session.flush()
            session.add(Sample(name="first"))
            session.flush()
    with read_connection(engine) as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM samples")).scalar_one() == 0


def test_the_sql_console_still_cannot_write_after_reads(cli):
    from tests.test_map_statistics import _count

    assert cli("init").exit_code == 0
    assert cli("sample", "add", "kept").exit_code == 0
    for _ in range(3):
        assert _count(cli, "samples") == 1
    for statement in ("DELETE FROM samples", "COMMIT; DELETE FROM samples",
                      "SET TRANSACTION READ WRITE; DELETE FROM samples"):
        result = cli("query", "sql", statement)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert _count(cli, "samples") == 1


def _drop_catalogue(catalog) -> None:
    """The catalogue's database gone: PostgreSQL's dropped (its connections ended), SQLite's file
    emptied in place (the pool's connections closed: SQLite's would go on serving cached pages)."""
    import sqlalchemy as sa

    url = catalog.engine.url
    if url.get_backend_name() == "sqlite":
        for suffix in ("", "-wal"):
            if os.path.exists(url.database + suffix):
                os.truncate(url.database + suffix, 0)
        catalog.engine.dispose()
        return
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{url.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def test_a_catalogue_dropped_between_pages_is_a_503_and_one_cli_line(catalog, cli):
    from fastapi.testclient import TestClient

    from txmdb.web.app import create_app

    assert cli("init").exit_code == 0
    assert cli("sample", "add", "kept").exit_code == 0
    client = TestClient(create_app(catalog, public_read=True), raise_server_exceptions=False)
    for _ in range(3):                        # the pool holds connections that served pages
        assert client.get("/samples").status_code == 200
    _drop_catalogue(catalog)
    for page in ("/samples", "/", "/api/v1/samples"):
        answer = client.get(page)
        assert answer.status_code == 503, (page, answer.status_code, answer.text[:300])
        assert "Traceback" not in answer.text
    result = cli("query", "samples")
    assert result.exit_code == 1 and result.output.startswith("error: "), result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("kind", ["virtual", "external_storage", "soft_to_external"])
def test_a_stack_renamed_over_by_one_whose_bytes_live_elsewhere_is_not_planned(tmp_path, kind):
    """After open_stack checked the file, it is renamed over by one whose stack is a virtual data
    set, raw data in an external file, or a soft link to an external link: never planned."""
    path = _stack(tmp_path / "scan.h5")
    info = open_stack(path, voxel_nm=10)
    other = _stack(tmp_path / "other.h5")
    with h5py.File(other, "r") as f:
        data, energies = f["/exchange/data"][()], f["/exchange/energy"][()]
    raw = tmp_path / "raw.bin"
    raw.write_bytes(data.tobytes())
    hostile = tmp_path / "hostile.h5"
    with h5py.File(hostile, "w") as f:
        f["/pad"] = np.zeros(os.path.getsize(other), dtype=np.uint8)
        if kind == "virtual":
            layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
            layout[...] = h5py.VirtualSource(str(other), "/exchange/data", shape=data.shape)
            f.create_virtual_dataset("/exchange/data", layout)
        elif kind == "external_storage":
            f.create_dataset("/exchange/data", shape=data.shape, dtype=data.dtype,
                             external=[(str(raw), 0, raw.stat().st_size)])
        else:
            f["/elsewhere"] = h5py.ExternalLink(str(other), "/exchange/data")
            f["/exchange/data"] = h5py.SoftLink("/elsewhere")
        f["/exchange/energy"] = energies
    os.replace(hostile, path)
    assert isinstance(single_read_plan(info, 2, os.path.getsize(path)), str)
    assert SingleRead.open(info, 2) is None
