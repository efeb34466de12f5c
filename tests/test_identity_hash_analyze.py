"""`txm ingest` and `txm analyze` trust a tomogram's SHA-256 while its file identity is the one
recorded when it was last hashed and matched (git's rule), on SQLite and PostgreSQL:

- ingest records the identity of a settled file; analyze then reads nothing for the hash
  (its timings say hash 0) and stores results bit-identical to ``--verify-input``;
- content changed with the modification time put back (change time moves), a file replaced
  by rename, and a write during the analysis are all still caught;
- an identity whose times are not 2 s older than the hash (racy) is not recorded;
- a scan from before migration 0009 is hashed in full once, then trusted.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.test_cli_txm import GOLDEN, _golden_args
from tests.test_map_statistics import _count, _json
from tests.test_single_read_cli import ROD, _maps, _tables, chunked_rod, lab  # noqa: F401 - fixtures
from txmdb.io import files
from txmdb.io.files import SETTLED_NS, file_identity, identity_text
from txmdb.io.single_read import SingleRead

#: stacks handed out by ``settled``: the chunked rod40 (the single read) and the gzip-chunked 2-D
#: rod96 (h5py reads it, BackgroundHash hashes it)
MODES = ["chunked", "gzip"]


def settled_pool(folder: Path, sources: dict[str, tuple[Path, int]]):
    """``take(kind)``: a fresh copy of the stack ``sources[kind] = (path, copies)`` names, whose
    change and modification times are more than ``SETTLED_NS`` old (all made in one go, then
    one wait), each copy once."""
    pool = {kind: [] for kind in sources}
    for kind, (source, copies) in sources.items():
        for i in range(copies):
            path = folder / f"{kind}-{i}.h5"
            shutil.copyfile(source, path)
            pool[kind].append(path)
    time.sleep(SETTLED_NS / 1e9 + 0.3)
    return lambda kind: pool[kind].pop()


@pytest.fixture(scope="module")
def settled(chunked_rod, tmp_path_factory):  # noqa: F811
    """:func:`settled_pool` of the chunked and the gzip stack."""
    # one copy per test and backend that takes one
    return settled_pool(tmp_path_factory.mktemp("settled").resolve(),
                        {"chunked": (chunked_rod, 6), "gzip": (GOLDEN / "rod96_2d.h5", 16)})


@pytest.fixture
def file_hashes(monkeypatch):
    """Paths of the files a BackgroundHash read, and the single reads opened (known or hashing)."""
    seen = {"background": [], "single": []}
    init, open_ = files.BackgroundHash.__init__, SingleRead.open.__func__

    def counted_init(self, path, **kwargs):
        seen["background"].append(Path(path))
        init(self, path, **kwargs)

    def counted_open(cls, *args, **kwargs):
        reader = open_(cls, *args, **kwargs)
        if reader is not None:
            seen["single"].append(reader)
        return reader

    monkeypatch.setattr(files.BackgroundHash, "__init__", counted_init)
    monkeypatch.setattr(SingleRead, "open", classmethod(counted_open))
    return seen


def _args(kind: str) -> list[str]:
    return _golden_args("rod40") if kind == "chunked" else _golden_args("rod96_2d")


def _ingest(cli, path: Path) -> int:
    result = cli("txm", "ingest", path, "--sample", "rod", "--voxel-nm", str(ROD["voxel_size_nm"]))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ingested: {path} (")
    return int(result.stdout.splitlines()[-1])


def _row(cli, sql: str, **params):
    engine = sa.create_engine(cli.url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).one()
    finally:
        engine.dispose()


def _identity(cli, scan_id: int) -> str | None:
    return _row(cli, "SELECT file_identity FROM txm_scans WHERE id = :id", id=scan_id)[0]


def _analysis(cli, analysis_id: int):
    from txmdb.catalog import open_catalog
    from txmdb.db.models import Analysis

    catalog = open_catalog(cli.url, cli.store, check=False)
    try:
        with catalog.session() as session:
            return session.get(Analysis, analysis_id)
    finally:
        catalog.engine.dispose()


def _analyzed(cli, scan_id: int, *args: str):
    """Run txm analyze; its one output line checked against the stored analysis, which is returned."""
    result = cli("txm", "analyze", str(scan_id), *args)
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    match = re.fullmatch(rf"scan {scan_id}: analysis (\d+) done — .* \((\d+\.\d) s\)", line)
    assert match, line
    a = _analysis(cli, int(match.group(1)))
    particles = "1 particle" if a.n_particles == 1 else f"{a.n_particles} particles"
    assert line == (f"scan {scan_id}: analysis {a.id} done — {a.n_valid_voxels} valid voxels, {particles}, "
                    f"mean edge {a.mean_edge_ev:.2f} eV ({a.timings_s['total']:.1f} s)")
    assert a.status == "done"
    return a


def _sha_of_scan(cli, scan_id: int) -> str:
    return _row(cli, "SELECT file_sha256 FROM txm_scans WHERE id = :id", id=scan_id)[0]


@pytest.mark.parametrize("kind", MODES)
def test_ingest_records_the_identity_and_analyze_reads_nothing_for_the_hash(lab, settled, file_hashes, kind):
    path = settled(kind)
    scan = _ingest(lab, path)
    assert _identity(lab, scan) == identity_text(file_identity(os.stat(path)))

    trusted = _analyzed(lab, scan, *_args(kind))
    assert trusted.timings_s["hash"] == 0.0 and trusted.timings_s["hash_wait"] < 0.5
    assert path not in file_hashes["background"]
    if kind == "chunked":                     # the single read read the slabs, and nothing for a hash
        (reader,) = file_hashes["single"]
        assert reader.known and reader.hash_cpu_s == 0.0 and reader.reread_bytes == 0
    assert trusted.input_sha256 == _sha_of_scan(lab, scan)

    file_hashes["single"].clear()
    verified = _analyzed(lab, scan, *_args(kind), "--verify-input")
    assert verified.timings_s["hash"] > 0.0
    if kind == "chunked":
        (reader,) = file_hashes["single"]
        assert not reader.known and reader.hash_cpu_s > 0.0
    else:
        assert file_hashes["background"].count(path) == 1
    assert verified.input_sha256 == trusted.input_sha256
    assert _tables(lab.url, trusted.id) == _tables(lab.url, verified.id)
    assert sum(map(len, _tables(lab.url, trusted.id).values())) > 50
    assert _maps(trusted.results_path) == _maps(verified.results_path)
    assert _identity(lab, scan) == identity_text(file_identity(os.stat(path)))


def _write_last_byte(path: Path, flip: int = 1) -> None:
    """The file's last byte written in place, XOR ``flip`` (0: the same byte again, only the times move)."""
    with open(path, "r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ flip]))


def _flip_last_byte_keeping_times(path: Path) -> os.stat_result:
    """One byte of the file changed in place, size and modification time as they were; the stat before."""
    before = os.stat(path)
    _write_last_byte(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns
    return before


def _refused(cli, scan_id: int, line: str, *args: str) -> None:
    """txm analyze fails in exactly this one line; nothing of an analysis is stored."""
    result = cli("txm", "analyze", str(scan_id), *args)
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and result.stderr == f"error: {line}\n"
    assert all(a["status"] == "failed" and a["results_path"] is None for a in _json(cli, "query", "analyses"))
    for table in ("gradient_summaries", "map_summaries", "particles"):
        assert _count(cli, table) == 0
    assert [p for p in Path(cli.store).rglob("*") if p.is_file() and p.suffix in (".h5", ".partial")] == []


@pytest.mark.parametrize("kind", MODES)
def test_content_changed_with_the_modification_time_put_back_is_caught(lab, settled, kind):
    path = settled(kind)
    scan = _ingest(lab, path)
    recorded = _identity(lab, scan)
    assert recorded is not None
    _flip_last_byte_keeping_times(path)
    _refused(lab, scan, f"{path}: the file changed since scan {scan} was ingested (SHA-256 differs)", *_args(kind))
    assert _identity(lab, scan) == recorded


@pytest.mark.parametrize("same_bytes", [True, False])
def test_a_file_replaced_by_rename_is_hashed_in_full(lab, settled, same_bytes):
    path = settled("gzip")
    scan = _ingest(lab, path)
    recorded = _identity(lab, scan)
    before = os.stat(path)
    new = path.with_name("incoming.h5")
    shutil.copyfile(path, new)
    if not same_bytes:
        _write_last_byte(new)
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(new, path)
    assert os.stat(path).st_ino != before.st_ino and os.stat(path).st_size == before.st_size
    if same_bytes:
        analysis = _analyzed(lab, scan, *_args("gzip"))
        assert analysis.timings_s["hash"] > 0.0          # hashed: not the file whose identity was recorded
    else:
        _refused(lab, scan, f"{path}: the file changed since scan {scan} was ingested (SHA-256 differs)",
                 *_args("gzip"))
    now = identity_text(file_identity(os.stat(path)))
    assert now != recorded
    if same_bytes:
        # the old identity stays (the new file's change time too recent to be recorded) or, had
        # the hash begun 2 s after the rename, the new file's replaced it after its hash matched
        assert _identity(lab, scan) in (recorded, now)
    else:
        assert _identity(lab, scan) == recorded


def _analyze_with(catalog, path: Path, during):
    """Ingest ``path`` and analyse it with ``during(path)`` run at the first progress report;
    the InputError raised, the scan id and the identity recorded at ingest."""
    from txmdb.catalog.samples import add_sample
    from txmdb.catalog.txm import analyze_scan, ingest_scan
    from txmdb.errors import InputError
    from txmdb.options import analysis_request

    with catalog.session() as session:
        add_sample(session, "rod")
    scan, _ = ingest_scan(catalog, path, sample="rod", voxel_nm=ROD["voxel_size_nm"])
    assert scan.file_identity is not None
    options, _ = analysis_request({"white_line": "none"}, catalog=catalog)
    done = []

    def hook(_done, _total):
        if not done:
            during(path)
            done.append(1)

    with pytest.raises(InputError) as caught:
        analyze_scan(catalog, scan.id, options, progress=hook)
    assert done
    return caught.value, scan


def _nothing_done(catalog, scan) -> None:
    from txmdb.db.models import Analysis, TXMScan

    with catalog.session() as session:
        assert [(a.status, a.results_path) for a in session.scalars(sa.select(Analysis))] == [("failed", None)]
        assert session.get(TXMScan, scan.id).file_identity == scan.file_identity


@pytest.mark.parametrize("kind", MODES)
def test_a_write_during_a_trusted_analysis_fails_it(catalog, settled, kind):
    path = settled(kind)
    # the same byte again: only the times move
    error, scan = _analyze_with(catalog, path, lambda p: _write_last_byte(p, flip=0))
    assert f"{path}: the file was written to while it was analysed; analyse it again" in str(error)
    _nothing_done(catalog, scan)


def test_a_racy_identity_is_not_recorded_until_the_file_has_settled(lab, settled, file_hashes):
    path = settled("gzip")
    future = time.time_ns() + 3600 * 10**9            # a modification time ahead of every hash
    os.utime(path, ns=(future, future))
    scan = _ingest(lab, path)
    assert _identity(lab, scan) is None
    first = _analyzed(lab, scan, *_args("gzip"))
    assert first.timings_s["hash"] > 0.0 and _identity(lab, scan) is None
    assert file_hashes["background"].count(path) == 1

    past = time.time_ns() - 3600 * 10**9              # times back in the past; the change time is now
    os.utime(path, ns=(past, past))
    time.sleep(SETTLED_NS / 1e9 + 0.3)
    second = _analyzed(lab, scan, *_args("gzip"))
    assert second.timings_s["hash"] > 0.0 and file_hashes["background"].count(path) == 2
    assert _identity(lab, scan) == identity_text(file_identity(os.stat(path)))
    third = _analyzed(lab, scan, *_args("gzip"))
    assert third.timings_s["hash"] == 0.0 and file_hashes["background"].count(path) == 2


def test_settled_identity_follows_the_racy_rule(tmp_path):
    from txmdb.io.files import settled_identity, sha256_file, sha256_file_identity

    identity = (1, 2, 3, 10 * SETTLED_NS, 11 * SETTLED_NS)
    assert settled_identity(identity, 12 * SETTLED_NS) == f"1:2:3:{10 * SETTLED_NS}:{11 * SETTLED_NS}"
    assert settled_identity(identity, 12 * SETTLED_NS - 1) is None      # change time 1 ns too recent
    assert settled_identity((1, 2, 3, 12 * SETTLED_NS, 0), 13 * SETTLED_NS - 1) is None  # modification time
    assert settled_identity(None, 13 * SETTLED_NS) is None
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 5_000_000)
    assert sha256_file_identity(path) == (sha256_file(path), None)      # just written
    old = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(old, old))
    assert sha256_file_identity(path)[1] is None                        # its change time is now


def test_migration_0009_leaves_older_scans_to_one_full_hash(lab, settled, file_hashes):
    from txmdb.db import migrate
    from txmdb.db.engine import make_engine

    path = settled("gzip")
    scan = _ingest(lab, path)
    engine = make_engine(lab.url)
    try:
        migrate.downgrade(engine, "0008")
        assert "file_identity" not in {c["name"] for c in sa.inspect(engine).get_columns("txm_scans")}
        engine.dispose()
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()   # 0009 and every later one
    finally:
        engine.dispose()
    assert _count(lab, "txm_scans") == 1 and _identity(lab, scan) is None
    first = _analyzed(lab, scan, *_args("gzip"))
    assert first.timings_s["hash"] > 0.0 and file_hashes["background"].count(path) == 1
    assert _identity(lab, scan) == identity_text(file_identity(os.stat(path)))
    second = _analyzed(lab, scan, *_args("gzip"))
    assert second.timings_s["hash"] == 0.0 and file_hashes["background"].count(path) == 1


def test_verify_input_is_not_queued(lab, settled):
    scan = _ingest(lab, settled("gzip"))
    result = lab("txm", "analyze", str(scan), "--queue", "--verify-input")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "error: --verify-input hashes the file here: it is not queued; run without --queue\n"
    assert _count(lab, "jobs") == 0 and _count(lab, "analyses") == 0
