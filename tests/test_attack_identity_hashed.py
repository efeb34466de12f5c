"""The folder swap of :mod:`tests.test_attack_identity` against the hashed path (the SHA-256
computed in full by :class:`txmdb.io.files.BackgroundHash`, h5py reading the stack), on SQLite
and PostgreSQL: ``--verify-input`` / ``verify_input=True`` on a gzip stack (no single read).

The attacker renames the folder holding the scan over with one holding a same-size different
file right after the hash opened the real one, and back before the hash's result: the hash
reads the ingested bytes whatever the path names meanwhile, so h5py must read through the
hash's own descriptor (``BackgroundHash.source``), not the path, or the other file's bytes
would be analysed or registered under the ingested SHA-256.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import h5py
import pytest

from tests.test_attack_identity import settled  # noqa: F401 - fixture
from tests.test_identity_hash_analyze import _identity, _ingest
from tests.test_identity_hash_register import _shifts
from tests.test_single_read_cli import ROD, chunked_rod, lab  # noqa: F401 - fixtures
from txmdb.io.files import file_identity, identity_text


def _folders(tmp_path: Path, source: Path, change, *, settle: bool = True) -> tuple[Path, Path, Path, Path]:
    """``real/scan.h5`` (the settled ``source`` moved there by a link; settled again if
    ``settle``), ``fake/scan.h5`` (a same-size copy changed by ``change(data set)``), the path
    ``away`` the swap uses."""
    real, fake, away = tmp_path / "real", tmp_path / "fake", tmp_path / "away"
    real.mkdir()
    fake.mkdir()
    path = real / "scan.h5"
    os.link(source, path)                       # the same settled inode: its times are old
    os.unlink(source)
    with h5py.File(shutil.copyfile(path, fake / "scan.h5"), "r+") as f:
        change(f["/exchange/data"])
    assert os.stat(fake / "scan.h5").st_size == os.stat(path).st_size
    if settle:
        time.sleep(2.3)                         # the link moved the change time: settle again
    return real, fake, away, path


def _swap_while_hashed(monkeypatch, real: Path, fake: Path, away: Path) -> list[int]:
    """The attacker wins the race: the folder swapped right after the hash of ``real/scan.h5``
    opened it, and back when its result is asked for. The hashes' sizes seen, returned."""
    from txmdb.io import files

    init, result = files.BackgroundHash.__init__, files.BackgroundHash.result
    target = real / "scan.h5"
    swaps: list[int] = []

    def then_swap(self, path, **kwargs):
        init(self, path, **kwargs)
        if Path(path) != target or away.exists():
            return                              # the store's hash of its results file
        deadline = time.monotonic() + 30
        while self.identity is None and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)                   # opened in its thread before the fix
        assert self.identity is not None
        swaps.append(self.identity[2])
        os.rename(real, away)
        os.rename(fake, real)

    def swap_back(self):
        if away.exists():
            os.rename(real, fake)
            os.rename(away, real)
        return result(self)

    monkeypatch.setattr(files.BackgroundHash, "__init__", then_swap)
    monkeypatch.setattr(files.BackgroundHash, "result", swap_back)
    return swaps


def test_a_folder_renamed_over_and_back_cannot_feed_a_hashed_analysis_another_file(
        catalog, settled, monkeypatch, tmp_path):  # noqa: F811
    from txmdb.catalog.samples import add_sample
    from txmdb.catalog.txm import analyze_scan, ingest_scan
    from txmdb.options import analysis_request

    def one_image_changed(ds):
        ds[0] = ds[0] * 0 + 1

    real, fake, away, path = _folders(tmp_path, settled("gzip"), one_image_changed)
    with catalog.session() as session:
        add_sample(session, "rod")
    scan, _ = ingest_scan(catalog, path, sample="rod", voxel_nm=ROD["voxel_size_nm"])
    options, _ = analysis_request({"white_line": "none"}, catalog=catalog)
    clean = analyze_scan(catalog, scan.id, options, verify_input=True)
    assert clean.timings_s["hash"] > 0.0        # hashed in full: the path under attack

    swaps = _swap_while_hashed(monkeypatch, real, fake, away)
    attacked = analyze_scan(catalog, scan.id, options, verify_input=True)
    assert swaps == [os.stat(path).st_size]     # the swap did happen, once
    assert not away.exists() and os.stat(path).st_ino == int(scan.file_identity.split(":")[1])
    assert attacked.status == "done" and attacked.timings_s["hash"] > 0.0
    # the bytes analysed were the ingested file's, not the other's
    assert (attacked.n_valid_voxels, attacked.mean_edge_ev) == (clean.n_valid_voxels, clean.mean_edge_ev)
    with h5py.File(attacked.results_path, "r") as f:   # named as the scan's file, not the descriptor
        assert f.attrs["source"] == str(path)


def test_a_folder_renamed_over_and_back_cannot_feed_a_verified_register_another_file(
        lab, settled, monkeypatch, tmp_path):  # noqa: F811
    """``txm register --verify-input``: the shifts stored are the ingested file's, not those of
    the same-size file with one energy's image moved."""
    import numpy as np

    def one_image_moved(ds):
        ds[3] = np.roll(ds[3], 5, axis=-1)

    real, fake, away, path = _folders(tmp_path, settled("drift"), one_image_moved)
    scan = _ingest(lab, path)
    assert _identity(lab, scan) is not None

    def shifts() -> list[tuple]:
        result = lab("txm", "register", str(scan), "--accept-poor", "--verify-input")
        assert result.exit_code == 0, result.output
        return [tuple(r) for r in _shifts(lab, int(result.stdout.splitlines()[-1]))]

    clean = shifts()
    swaps = _swap_while_hashed(monkeypatch, real, fake, away)
    attacked = shifts()
    assert swaps == [os.stat(path).st_size]
    assert not away.exists() and _identity(lab, scan) == identity_text(file_identity(os.stat(path)))
    assert attacked == clean


@pytest.mark.parametrize("check", ["hashed", "trusted"])
def test_a_folder_renamed_over_after_the_check_cannot_feed_export_another_file(
        lab, settled, monkeypatch, tmp_path, check):  # noqa: F811
    """``txm export`` checked the file (hashed in full, or its identity trusted), then read the
    path again: a folder swapped right after the check had the other file's bytes exported
    under the ingested SHA-256. It now reads through the descriptor checked."""
    import numpy as np

    from txmdb.catalog import txm as catalog_txm
    from txmdb.io import files

    def one_image_changed(ds):
        ds[0] = ds[0] * 0 + 1

    real, fake, away, path = _folders(tmp_path, settled("gzip"), one_image_changed, settle=check == "trusted")
    scan = _ingest(lab, path)
    assert (_identity(lab, scan) is None) == (check == "hashed")

    def exported(name: str) -> np.ndarray:
        out = tmp_path / name
        result = lab("txm", "export", str(scan), "-o", out)
        assert result.exit_code == 0, result.output
        with h5py.File(out, "r") as fh:
            return fh["/registration_results/reg_results/registered_xanes2D"][()]

    clean = exported("clean.h5")

    def swap():
        os.rename(real, away)
        os.rename(fake, real)

    if check == "hashed":
        unchanged = catalog_txm.check_unchanged

        def then_swap(scan, sha256):            # the attacker wins the race right after the hash
            unchanged(scan, sha256)
            swap()

        monkeypatch.setattr(catalog_txm, "check_unchanged", then_swap)
    else:
        known = files.KnownHash.if_unchanged.__func__

        def then_swap(cls, where, recorded):    # right after the identity check
            found = known(cls, where, recorded)
            swap()
            return found

        monkeypatch.setattr(files.KnownHash, "if_unchanged", classmethod(then_swap))
    attacked = exported("attacked.h5")
    assert away.exists()                        # the swap did happen
    os.rename(real, fake)
    os.rename(away, real)
    assert np.array_equal(attacked, clean, equal_nan=True)
