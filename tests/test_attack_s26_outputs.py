"""Session 26's attacker pass, part two: outputs that replaced files the catalogue owns, and a
stack whose values overflowed the registration's working images. Every CLI test runs on
SQLite and PostgreSQL.

- ``txm export -o`` onto the SQLite catalogue wrote an HDF5 file over it (every row lost), and
  onto an analysis' results file (its SHA-256 no longer matched), both reporting success;
  ``query … -o`` and ``report compare -o`` could do the same. Now every output refuses the
  catalogue's database (and its journal) and anything in its store.
- ``txm register`` of a stack near float32's largest printed numpy warnings and "cannot
  convert float NaN to integer".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from tests.test_spectral_cli import _analyze, lab  # noqa: F401 - the fixture
from txmdb.synthetic.tomogram import write_stack


# ----------------------------------------------------------------------------- outputs the catalogue owns
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _store_listing(store: Path) -> dict:
    return {p.relative_to(store).as_posix(): _digest(p) for p in sorted(store.rglob("*")) if p.is_file()}


def test_no_output_replaces_the_catalogue_or_its_store(lab):  # noqa: F811 - the fixture
    """``txm export -o`` onto the SQLite catalogue wrote an HDF5 file over it (every row lost)
    and onto an analysis' results file (its SHA-256 no longer matched), both reporting success."""
    assert _analyze(lab).exit_code == 0
    store = lab.store.resolve()
    results = next(store.rglob("*.h5"))
    link = lab.tmp / "to-store"
    link.symlink_to(store)
    targets = {results: f"is inside the catalogue's results store {lab.store}; write outside it",
               link / "x.h5": f"is inside the catalogue's results store {lab.store}; write outside it",
               store / "new.csv": f"is inside the catalogue's results store {lab.store}; write outside it"}
    if lab.url.startswith("sqlite"):
        database = Path(lab.url.removeprefix("sqlite:///"))
        for name in (database, Path(f"{database}-wal"), Path(f"{database}-journal")):
            targets[name] = "is the catalogue's database; give another file to write"
    before = _store_listing(store), _rows(lab)
    for target, problem in targets.items():
        for args in (["txm", "export", lab.scan], ["txm", "export", lab.scan, "--map", "edge"],
                     ["query", "samples"], ["report", "compare", "mix"]):
            if args[0] == "txm" and target.suffix not in ((".h5",) if "--map" in args else (".h5", ".db")):
                continue                      # a map's suffix is checked first
            result = lab(*args, "-o", target)
            assert (result.exit_code, result.output) == (1, f"error: {target}: {problem}\n"), args
    result = lab("report", "compare", "mix", "-o", lab.tmp / "r.html", "--png-dir", store / "png")
    assert (result.exit_code, result.output) == (1, f"error: {store / 'png'}: is inside the catalogue's results "
                                                    f"store {lab.store}; write outside it\n")
    assert (_store_listing(store), _rows(lab)) == before
    assert lab("db", "check").exit_code == 0


def _rows(lab) -> dict:
    engine = sa.create_engine(lab.url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                    for t in ("samples", "txm_scans", "analyses", "xas_measurements")}
    finally:
        engine.dispose()


def test_a_stack_of_huge_values_registers_like_its_scaled_copy(cli, tmp_path):
    """Values near float32's largest overflowed the working images' sums: NaN shifts, numpy
    warnings on stderr and 'cannot convert float NaN to integer'. Scaled first, the stack
    registers as the same stack at a sane scale does."""
    from txmdb.synthetic.drift import drifted_stack

    drift = drifted_stack((24, 24), n_energies=20, max_drift=3.0, seed=1)
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    shifts = []
    for name, scale in (("plain", 1.0), ("huge", 1e37)):
        path = tmp_path / f"{name}.h5"
        write_stack(path, (drift.stack * scale).astype(np.float32), drift.energies_ev)
        scan = cli("txm", "ingest", path, "--sample", "S").stdout.strip().splitlines()[-1]
        result = cli("txm", "register", scan, "--accept-poor")
        assert result.exit_code == 0 and result.stderr == "", result.output
        shifts.append(cli("query", "registrations", "--scan", scan, "--format", "json").stdout)
    plain, huge = (np.array([[r["shift_y"], r["shift_x"]] for r in json.loads(s)]) for s in shifts)
    np.testing.assert_allclose(huge, plain, atol=0.02)


def test_a_stack_at_float32s_largest_is_refused_in_one_line(cli, tmp_path):
    from txmdb.synthetic.drift import drifted_stack

    drift = drifted_stack((24, 24), n_energies=12, max_drift=3.0, seed=2)
    stack = drift.stack.astype(np.float32)
    stack[:, :, :6] = np.finfo(np.float32).max
    path = tmp_path / "max.h5"
    write_stack(path, stack, drift.energies_ev)
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    scan = cli("txm", "ingest", path, "--sample", "S").stdout.strip().splitlines()[-1]
    result = cli("txm", "register", scan)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert "Warning" not in result.output and "NaN" not in result.output
    assert cli("query", "registrations", "--format", "csv").stdout.strip().count("\n") == 0
