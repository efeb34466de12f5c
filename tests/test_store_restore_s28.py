"""A database restored from an older backup than its store, and a store file restored from a
backup (a data manager's review, session 28), on SQLite and PostgreSQL.

After the database goes back, ids are given again, and the store may hold the newer results
under them: a write never replaces such a file, and ``db check --repair`` sets it aside in
``lost+found/`` instead of removing it. An analysis marked failed because its file was missing
is done again once the file is back.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


from tests.test_crash import GOLDEN, NI_FOIL, _lines, _sql



@pytest.fixture
def lab(cell_lab):
    return cell_lab


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_write_never_replaces_a_file_no_row_names_and_repair_sets_it_aside(lab, tmp_path):
    first = lab("xas", "ingest", NI_FOIL, "--sample", "S", "--edge", "Ni-K")
    assert first.exit_code == 0, first.output
    record = int(_lines(first)[-1])
    store = Path(lab.store)
    newer = store / "xas" / f"{record + 1}.parquet"              # the newer catalogue's file under the next id
    newer.write_bytes(b"the only copy of a newer result")
    second = tmp_path / "second.xdi"
    second.write_bytes(NI_FOIL.read_bytes() + b"\n")
    before_rows, before_store = _sql(lab, "SELECT id FROM xas_measurements"), _tree(store)

    refused = lab("xas", "ingest", second, "--sample", "S", "--edge", "Ni-K", "--state", "cycled")
    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr == (f"error: {newer.resolve()} already exists, and no record of this catalogue names it "
                              "(a database restored from an older backup than the store?): nothing is recorded; "
                              "'txmdb db check --repair' moves it to lost+found/xas/\n")
    assert _sql(lab, "SELECT id FROM xas_measurements") == before_rows
    assert _tree(store) == before_store

    check = lab("db", "check", "--no-sources")
    assert f"problem: xas/{newer.name}: orphan file: no row names it (--repair: moved to lost+found/xas/)" \
        in _lines(check)
    repaired = lab("db", "check", "--repair", "--no-sources")
    assert repaired.exit_code == 0, repaired.output
    assert f"repaired: xas/{newer.name}: orphan file: no row names it: moved to lost+found/xas/" in _lines(repaired)
    assert not newer.exists()
    assert (store / "lost+found" / "xas" / newer.name).read_bytes() == b"the only copy of a newer result"

    # a second orphan of the same name beside the first is kept too
    newer.write_bytes(b"another")
    assert lab("db", "check", "--repair", "--no-sources").exit_code == 0
    assert (store / "lost+found" / "xas" / f"{newer.name}.1").read_bytes() == b"another"

    again = lab("xas", "ingest", second, "--sample", "S", "--edge", "Ni-K", "--state", "cycled")
    assert again.exit_code == 0, again.output
    final = lab("db", "check", "--no-sources")
    assert final.exit_code == 0, final.output


def test_an_analysis_whose_file_is_taken_is_refused_before_it_runs(lab):
    """A status row's id is known when it begins: the refusal comes before the work, and the
    row it began is gone again (a failed row would keep the file's id, and --repair could not
    set the file aside)."""
    scan = lab("txm", "ingest", GOLDEN, "--sample", "S")
    assert scan.exit_code == 0, scan.output
    assert lab("txm", "analyze", _lines(scan)[-1], "--bin", "1").exit_code == 0
    (row,) = _sql(lab, "SELECT id FROM analyses")
    store = Path(lab.store)
    taken = store / "analyses" / f"{row['id'] + 1}.h5"
    taken.write_bytes(b"a newer analysis")
    refused = lab("txm", "analyze", _lines(scan)[-1], "--bin", "2")
    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"error: {taken.resolve()} already exists, and no record of this catalogue "
                                     "names it"), refused.stderr
    assert _sql(lab, "SELECT id, status FROM analyses") == [{"id": row["id"], "status": "done"}]
    assert taken.read_bytes() == b"a newer analysis"
    assert lab("db", "check", "--repair", "--no-sources").exit_code == 0
    assert (store / "lost+found" / "analyses" / taken.name).read_bytes() == b"a newer analysis"
    assert lab("txm", "analyze", _lines(scan)[-1], "--bin", "2").exit_code == 0


def test_a_non_file_in_the_way_is_named_as_such(lab, tmp_path):
    import os

    first = lab("xas", "ingest", NI_FOIL, "--sample", "S", "--edge", "Ni-K")
    assert first.exit_code == 0, first.output
    fifo = Path(lab.store) / "xas" / f"{int(_lines(first)[-1]) + 1}.parquet"
    os.mkfifo(fifo)
    second = tmp_path / "second.xdi"
    second.write_bytes(NI_FOIL.read_bytes() + b"\n")
    refused = lab("xas", "ingest", second, "--sample", "S", "--edge", "Ni-K", "--state", "cycled")
    assert refused.exit_code == 1
    assert refused.stderr == (f"error: {fifo.resolve()} is a named pipe, not a file txmdb writes: move it out of the "
                              "store; nothing is recorded\n")


def test_a_link_planted_as_lost_and_found_is_not_followed(lab, tmp_path):
    first = lab("xas", "ingest", NI_FOIL, "--sample", "S", "--edge", "Ni-K")
    assert first.exit_code == 0, first.output
    store = Path(lab.store)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store / "lost+found").symlink_to(elsewhere)
    orphan = store / "xas" / "77.parquet"
    orphan.write_bytes(b"orphan")
    repaired = lab("db", "check", "--repair", "--no-sources")
    assert repaired.exit_code == 1
    assert any(line.startswith("problem: xas/77.parquet: repair failed:") for line in _lines(repaired)), \
        repaired.output
    assert orphan.read_bytes() == b"orphan" and list(elsewhere.iterdir()) == []


def test_an_analysis_failed_for_its_missing_file_is_done_again_when_the_file_is_back(lab, tmp_path):
    scan = lab("txm", "ingest", GOLDEN, "--sample", "S")
    assert scan.exit_code == 0, scan.output
    analysis = lab("txm", "analyze", _lines(scan)[-1], "--bin", "1")
    assert analysis.exit_code == 0, analysis.output
    (row,) = _sql(lab, "SELECT id, results_path, finished_at FROM analyses")
    results = Path(row["results_path"])
    backup = tmp_path / "backup.h5"
    shutil.copy2(results, backup)
    results.unlink()
    assert lab("db", "check", "--repair", "--no-sources").exit_code == 0
    # marked failed, and it keeps the time it finished (session 29: the check's time replaced it)
    assert _sql(lab, "SELECT status, finished_at FROM analyses") == [{"status": "failed",
                                                                      "finished_at": row["finished_at"]}]

    shutil.copy2(backup, results)                        # restored from the backup
    check = lab("db", "check", "--no-sources")
    assert check.exit_code == 1
    assert _lines(check)[1] == (f"problem: analysis {row['id']}: was marked failed for its missing file, and "
                                f"{results} is back with the SHA-256 it records (--repair: marked done again)")
    repaired = lab("db", "check", "--repair", "--no-sources")
    assert repaired.exit_code == 0, repaired.output
    assert _sql(lab, "SELECT status, error, finished_at FROM analyses") == [
        {"status": "done", "error": None, "finished_at": row["finished_at"]}]
    assert lab("db", "check", "--no-sources").exit_code == 0

    # a file of other bytes is not taken back
    results.unlink()
    assert lab("db", "check", "--repair", "--no-sources").exit_code == 0
    results.write_bytes(b"not the results")
    still = lab("db", "check", "--repair", "--no-sources")
    assert still.exit_code == 1
    assert _sql(lab, "SELECT status FROM analyses") == [{"status": "failed"}]


def test_a_store_folder_that_does_not_exist_is_one_line(lab, tmp_path):
    for spectrum in (NI_FOIL, tmp_path / "second.xdi"):
        if not spectrum.exists():
            spectrum.write_bytes(NI_FOIL.read_bytes() + b"\n")
        assert lab("xas", "ingest", spectrum, "--sample", "S", "--edge", "Ni-K").exit_code == 0
    store = Path(lab.store)
    away = store.rename(tmp_path / "away")
    try:
        check = lab("db", "check", "--repair", "--no-sources")
        assert check.exit_code == 1
        first = _sql(lab, "SELECT id, spectrum_path FROM xas_measurements ORDER BY id")[0]
        assert _lines(check)[1:] == [
            f"problem: store {store}: does not exist: check --store (2 records name store files; first XAS "
            f"measurement {first['id']}: its file {first['spectrum_path']} is missing, and so is the folder "
            f"{store}/xas: check --store)",
            "1 problem (1 needs you); checked 0 store files, 0 sources"]
        assert not store.exists()
    finally:
        away.rename(store)
    assert lab("db", "check", "--no-sources").exit_code == 0
