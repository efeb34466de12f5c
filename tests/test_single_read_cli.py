"""`txm analyze` with the single read of a chunked stack, on SQLite and PostgreSQL: the same
stored statistics and results file as with h5py's read and a second read for the hash; a
file changed since ingest or damaged still fails in one line with nothing stored."""

from __future__ import annotations

import dataclasses
import json
import struct

import h5py
import numpy as np
import pytest

from tests.test_cli_txm import EXPECTED, GOLDEN, _golden_args
from tests.test_map_statistics import _count, _json, _one_line_error
from txmdb.db.models import STATISTICS_TABLES
from txmdb.io import single_read
from txmdb.io.single_read import ENV

ROD = EXPECTED["rod40"]


@pytest.fixture(scope="module")
def chunked_rod(tmp_path_factory):
    """The golden rod40 stack in uncompressed (all energies, 8, 16, 16) chunks, row by row,
    with another data set's bytes between the rows."""
    path = tmp_path_factory.mktemp("single_read") / "rod40_chunked.h5"
    # no chunk cache: each chunk is placed as it is written (a cached partial edge chunk would
    # be placed only when evicted, after later rows: out of row order, read by h5py)
    with h5py.File(GOLDEN / ROD["file"], "r") as src, h5py.File(path, "w", rdcc_nbytes=0) as dst:
        data = src["/exchange/data"][()]
        ds = dst.create_dataset("/exchange/data", shape=data.shape, dtype=data.dtype, chunks=(data.shape[0], 8, 16, 16))
        ds.attrs.update(src["/exchange/data"].attrs)
        for z in range(0, data.shape[1], 8):
            ds[:, z:z + 8] = data[:, z:z + 8]
            dst[f"/notes/row{z}"] = np.arange(300 + z, dtype=np.int32)
        dst["/exchange/energy"] = src["/exchange/energy"][()]
    return path


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "rod", "--morphology", "rod").exit_code == 0
    return cli


@pytest.fixture
def slabs_read(monkeypatch):
    """How many times the single read handed out the slabs of an analysis."""
    calls = []
    original = single_read.SingleRead.slabs

    def counted(self):
        calls.append(self.slab_size)
        return original(self)

    monkeypatch.setattr(single_read.SingleRead, "slabs", counted)
    return calls


def _tables(url: str, analysis_id: int) -> dict[str, list[tuple]]:
    """Every statistics row of one analysis, without its ids, in a fixed order."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            out = {}
            for model in STATISTICS_TABLES.values():
                table = model.__table__
                columns = [c for c in table.columns if c.name not in ("id", "analysis_id")]
                rows = conn.execute(sa.select(*columns).where(table.c.analysis_id == analysis_id)).all()
                out[table.name] = sorted((tuple(r) for r in rows), key=repr)
            return out
    finally:
        engine.dispose()


def _maps(path) -> dict[str, bytes]:
    with h5py.File(path, "r") as f:
        return {name: f[name][()].tobytes() for name in f if isinstance(f[name], h5py.Dataset)}


def test_cli_analysis_is_the_same_with_and_without_the_single_read(lab, chunked_rod, monkeypatch, slabs_read):
    scan = lab("txm", "ingest", chunked_rod, "--sample", "rod", "--voxel-nm", str(ROD["voxel_size_nm"]))
    assert scan.exit_code == 0, scan.output
    scan_id = scan.stdout.strip().splitlines()[-1]
    monkeypatch.setenv(ENV, "0")
    result = lab("txm", "analyze", scan_id, *_golden_args("rod40"))
    assert result.exit_code == 0, result.output
    assert slabs_read == []
    monkeypatch.delenv(ENV)
    result = lab("txm", "analyze", scan_id, *_golden_args("rod40"))
    assert result.exit_code == 0, result.output
    assert slabs_read == [40]                # one slab of the whole stack
    old, new = _json(lab, "query", "analyses")
    assert old["status"] == new["status"] == "done"
    before, after = _tables(lab.url, old["analysis_id"]), _tables(lab.url, new["analysis_id"])
    assert sum(map(len, after.values())) > 100 and after["particles"]
    assert after == before
    assert _maps(new["results_path"]) == _maps(old["results_path"])


def test_api_analysis_in_several_slabs_is_the_same(catalog, chunked_rod, monkeypatch, slabs_read, tmp_path):
    from txmdb.catalog.samples import add_sample
    from txmdb.catalog.txm import analyze_scan, ingest_scan
    from txmdb.options import analysis_request

    with catalog.session() as session:
        add_sample(session, "rod")
    scan, _ = ingest_scan(catalog, chunked_rod, sample="rod", voxel_nm=ROD["voxel_size_nm"])
    options, _ = analysis_request({"white_line": "none"}, catalog=catalog)
    options = dataclasses.replace(options, slab_size=8, clusters=2)
    monkeypatch.setenv(ENV, "0")
    old = analyze_scan(catalog, scan.id, options)
    monkeypatch.delenv(ENV)
    new = analyze_scan(catalog, scan.id, options)
    assert slabs_read == [8]
    url = catalog.engine.url.render_as_string(hide_password=False)
    assert _tables(url, new.id) == _tables(url, old.id)
    assert _maps(new.results_path) == _maps(old.results_path)
    assert {"hash", "hash_wait"} <= set(new.timings_s) and new.input_sha256 == old.input_sha256


def test_a_file_changed_since_ingest_fails_with_nothing_stored(lab, chunked_rod, tmp_path, slabs_read):
    import shutil

    path = tmp_path / "changed.h5"
    shutil.copy(chunked_rod, path)
    scan = lab("txm", "ingest", path, "--sample", "rod").stdout.strip().splitlines()[-1]
    with h5py.File(path, "r+") as f:         # a value inside a chunk: the layout stays the same
        f["/exchange/data"][5, 20, 20, 20] += 1.0
    _one_line_error(lab("txm", "analyze", scan),
                    f"{path.resolve()}: the file changed since scan {scan} was ingested (SHA-256 differs)")
    assert slabs_read == [40]
    (analysis,) = _json(lab, "query", "analyses")
    assert analysis["status"] == "failed" and analysis["results_path"] is None
    for table in ("gradient_summaries", "map_summaries", "particles"):
        assert _count(lab, table) == 0


def test_a_chunk_entry_outside_the_file_fails_in_one_line(lab, chunked_rod, tmp_path, slabs_read):
    path = tmp_path / "damaged.h5"
    raw = bytearray(chunked_rod.read_bytes())
    with h5py.File(chunked_rod, "r") as f:
        first = f["/exchange/data"].id.get_chunk_info_by_coord((0, 0, 0, 0)).byte_offset
    at = raw.find(struct.pack("<Q", first))
    assert raw.count(struct.pack("<Q", first)) == 1
    raw[at:at + 8] = struct.pack("<Q", len(raw) + (1 << 20))   # v1 B-tree: no checksum to stop it
    path.write_bytes(bytes(raw))
    scan = lab("txm", "ingest", path, "--sample", "rod")
    assert scan.exit_code == 0, scan.output
    result = lab("txm", "analyze", scan.stdout.strip().splitlines()[-1])
    _one_line_error(result, f"{path.resolve()}: cannot read '/exchange/data' slab 0:40")
    assert slabs_read == []                   # refused by the single read: h5py's path reported it
    assert _count(lab, "particles") == 0
    assert all(a["status"] == "failed" for a in _json(lab, "query", "analyses"))
