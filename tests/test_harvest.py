"""The watcher with real processes (DESIGN §12, issue 12): a slow writer, SIGKILLs, restarts, both observers.

Every test runs ``txmdb watch`` as a subprocess against SQLite and PostgreSQL, and checks the
catalogue afterwards: exactly the expected records, each once, of the complete files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DATA, PROJECT
from txmdb.harvest.complete import incomplete_reason

SETTLE_S = 1.0
STALL_S = 1.8  # a writer pause longer than the settle time: only the completeness check stops a read
P492 = DATA / "cycling" / "batterydata" / "p492-13-raw.csv"
NEWARE = DATA / "cycling" / "neware-csv" / "nw_regular_export_ife_example.csv"
XDI = DATA / "xas" / "ni_metal_rt.xdi"
#: the rule that harvests XAS files named SAMPLE_STATE.xdi from watched/xas
XAS_RULE = """[[rule]]
folder = "watched/xas"
glob = "*.xdi"
kind = "xas"
pattern = '(?P<sample>[^_]+)_(?P<state>[^_]+)\\.xdi'
set = { edge = "Ni-K" }
"""
ENV = {k: v for k, v in os.environ.items() if k not in ("TXMDB_URL", "TXMDB_STORE")}

RULES = f"""\
settle_seconds = {SETTLE_S}
[[rule]]
name = "cycler"
folder = "watched/cyc"
glob = "*.csv"
kind = "cycling"
pattern = '(?P<cell>C\\d+)_\\w+\\.csv'
[[rule]]
name = "xas"
folder = "watched/xas"
glob = "*.xdi"
kind = "xas"
pattern = '(?P<sample>[^_]+)_(?P<state>[^_]+)\\.xdi'
set = {{ edge = "Ni-K" }}
[[rule]]
name = "fxi"
folder = "watched/fxi"
glob = "*.h5"
kind = "txm"
pattern = '(?P<sample>[^_]+)_(?P<state>[^_]+)_\\d+\\.h5'
set = {{ voxel_nm = 30 }}
analyze = true
analysis = {{ bin = "1,2" }}
"""


class Watch:
    """``txmdb watch`` as a subprocess; every start's log appended to one file."""

    def __init__(self, url: str, store: Path, rules: Path, log: Path, *options: str):
        self.command = [sys.executable, "-m", "txmdb.cli.main", "--db", url, "--store", str(store), "watch",
                        str(rules), *options]
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(self.command, env=ENV, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=err)
        self.starts += 1

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def started(self) -> int:
        """How many starts got as far as their first line."""
        return sum(" watch.start " in line for line in self.lines())

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def lab(db_url, tmp_path):
    """A catalogue with samples S1, S2 and cells C1, C2 (C3 is named by a file before it exists)."""
    from txmdb.catalog import open_catalog
    from txmdb.catalog.samples import add_cell, add_sample
    from txmdb.db.migrate import upgrade

    cat = open_catalog(db_url, tmp_path / "store", check=False)
    upgrade(cat.engine)
    with cat.session() as session:
        for sample in ("S1", "S2"):
            add_sample(session, sample)
        for cell in ("C1", "C2"):
            add_cell(session, cell, sample="S1", active_mass_mg=10)
    cat.url = db_url
    yield cat
    cat.engine.dispose()


def add_cell(cat, name: str) -> None:
    from txmdb.catalog.samples import add_cell as add

    with cat.session() as session:
        add(session, name, sample="S1", active_mass_mg=10)


def rows(cat) -> dict[str, dict]:
    from txmdb.harvest.record import harvested

    return {Path(row["path"]).name: row for row in harvested(cat)}


def wait_for(predicate, timeout: float, what: str, watch: Watch | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        if watch is not None and watch.proc.poll() is not None:
            raise AssertionError(f"the watcher exited ({watch.proc.returncode}) while waiting for {what}:\n"
                                 + "\n".join(watch.lines()[-20:]))
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + ("\n" + "\n".join(watch.lines()[-30:]) if watch else ""))


def sha256(path: Path) -> str:
    from txmdb.io.files import sha256_file

    return sha256_file(path)


def prefix(source: Path, lines: int, target: Path) -> Path:
    target.write_bytes(b"".join(source.read_bytes().splitlines(keepends=True)[:lines]))
    return target


def catalogue_records(cat) -> dict[str, list]:
    from sqlalchemy import select

    from txmdb.db.models import Cell, CyclingRun, Job, Sample, TXMScan, XASMeasurement

    with cat.session() as s:
        return {
            "cycling": sorted(s.execute(select(Cell.name, CyclingRun.file_sha256, CyclingRun.n_records)
                                        .join(Cell, Cell.id == CyclingRun.cell_id)).all()),
            "xas": sorted(s.execute(select(Sample.name, XASMeasurement.state, XASMeasurement.file_sha256,
                                           XASMeasurement.edge_energy_ev)
                                    .join(Sample, Sample.id == XASMeasurement.sample_id)).all()),
            "txm": sorted(s.execute(select(Sample.name, TXMScan.state, TXMScan.file_sha256, TXMScan.shape,
                                           TXMScan.voxel_size_nm, TXMScan.id)
                                    .join(Sample, Sample.id == TXMScan.sample_id)).all()),
            "jobs": sorted(s.execute(select(Job.scan_id, Job.kind, Job.status, Job.parameters)).all()),
        }


def expected_records(final: dict[str, Path], scans: dict[str, Path]) -> dict:
    from txmdb.io.cycling import read_cycler_file

    def n_records(path):
        return len(read_cycler_file(path).frame)

    return {
        "cycling": sorted((name.split("_")[0], sha256(path), n_records(path)) for name, path in final.items()),
        "txm": sorted(("S1" if "S1" in name else "S2", name.split("_")[1], sha256(path)) for name, path in scans.items()),
    }


@pytest.mark.parametrize("mode", ["inotify", "poll"])
def test_slow_writer_killed_watcher_exact_records(lab, tmp_path, mode):
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    rng = random.Random(12)
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    watched = tmp_path / "watched"
    for folder in ("cyc", "xas", "fxi"):
        (watched / folder).mkdir(parents=True)
    src = tmp_path / "src"
    src.mkdir()
    energies = energy_grid(24)
    edge, _ = particle_field((12, 20, 20), kind="rod", seed=2)
    write_stack(src / "S2.h5", SyntheticStack(edge, energies, noise=0.01, seed=2), energies, voxel_size_nm=30)
    c3 = prefix(P492, 1400, src / "C3.csv")
    (watched / "cyc" / "notes.csv").write_text("not a cycler file\n")  # matches the glob, not the pattern
    plan = [
        dict(kind="text", source=str(P492), target=str(watched / "cyc" / "C1_run1.csv"), pieces=8,
             stall_at=[0.3, 0.7], stall=STALL_S),
        dict(kind="text", source=str(NEWARE), target=str(watched / "cyc" / "C2_run1.csv"), pieces=10,
             stall_at=[0.5], stall=STALL_S),
        dict(kind="text", source=str(XDI), target=str(watched / "xas" / "S1_pristine.xdi"), pieces=5,
             stall_at=[0.6], stall=STALL_S),
        dict(kind="hdf5", target=str(watched / "fxi" / "S1_charged_001.h5"), seed=1, shape=[24, 12, 20, 20],
             slabs=3, stall=STALL_S),
        dict(kind="copy", source=str(src / "S2.h5"), target=str(watched / "fxi" / "S2_pristine_002.h5"), pieces=6,
             stall=STALL_S),
        dict(kind="text", source=str(c3), target=str(watched / "cyc" / "C3_run1.csv"), pieces=3, stall_at=[0.5],
             stall=STALL_S),
    ]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    options = ["--poll", "0.3"] if mode == "poll" else []
    watch = Watch(lab.url, tmp_path / "store", rules, tmp_path / "watch.log", *options)
    watch.start()
    wait_for(lambda: any("watch.start" in line for line in watch.lines()), 30, "the watcher's first line", watch)
    writer = subprocess.Popen([sys.executable, "-m", "tests.harvest_writer", str(tmp_path / "plan.json")],
                              cwd=PROJECT, env=ENV)
    # SIGKILL the watcher at random moments while the files are being written, and restart it; a
    # third of the kills land while it starts up, the others once it is watching
    kills = 0
    while writer.poll() is None or kills < 3:
        if rng.random() < 2 / 3:
            wait_for(lambda: watch.started() == watch.starts, 30, "the watcher's first line", watch)
        time.sleep(rng.uniform(0.1, 1.5))
        watch.kill()
        kills += 1
        watch.start()
    assert writer.wait() == 0
    # a corrupt file: failed with its error, then ingested once rewritten correctly
    bad = watched / "cyc" / "C2_bad.csv"
    bad.write_text("hello,world\n1,2\n")
    failed = wait_for(lambda: rows(lab).get("C2_bad.csv", {}).get("status") == "failed" and rows(lab)["C2_bad.csv"],
                      30, "the corrupt file to fail", watch)
    assert failed["error"] == (f"{bad}: missing needed column(s) for time_s, voltage_v, current_a (map them with "
                               f"--columns KEY=COLUMN; header: hello, world)")
    c3_row = wait_for(lambda: rows(lab).get("C3_run1.csv", {}).get("status") == "failed" and rows(lab)["C3_run1.csv"],
                      30, "the file of a missing cell to fail", watch)
    assert c3_row["error"] == "no cell named 'C3'; see 'txmdb cell list'" and c3_row["missing_reference"]
    prefix(P492, 1700, bad)
    add_cell(lab, "C3")
    names = {"C1_run1.csv", "C2_run1.csv", "C2_bad.csv", "C3_run1.csv", "S1_pristine.xdi", "S1_charged_001.h5",
             "S2_pristine_002.h5"}
    wait_for(lambda: all(rows(lab).get(n, {}).get("status") == "ingested" for n in names), 45,
             "every file ingested", watch)
    assert watch.terminate() == 0
    log = watch.lines()
    assert log[-1].split()[2] == "watch.stop" and "watch.stopping signal=SIGTERM" in log[-2]
    starts = [line for line in log if " watch.start " in line]
    assert len(starts) >= 3
    assert all(f"observer={'polling' if mode == 'poll' else 'inotify'}" in line for line in starts)

    final = {n: watched / "cyc" / n for n in ("C1_run1.csv", "C2_run1.csv", "C2_bad.csv", "C3_run1.csv")}
    scans = {n: watched / "fxi" / n for n in ("S1_charged_001.h5", "S2_pristine_002.h5")}
    got = catalogue_records(lab)
    want = expected_records(final, scans)
    assert got["cycling"] == want["cycling"]  # each complete file once, no piece of one
    assert [r[:3] for r in got["txm"]] == want["txm"]
    assert [(r[3], r[4]) for r in got["txm"]] == [([24, 12, 20, 20], 30.0), ([24, 12, 20, 20], 30.0)]
    (xas,) = got["xas"]
    assert xas[:3] == ("S1", "pristine", sha256(watched / "xas" / "S1_pristine.xdi"))
    assert xas[3] == pytest.approx(8339.01, abs=0.01)  # as `xas ingest` of the same file gives
    # one analysis job per scan, with the rule's options over the command's defaults
    assert [(j[0], j[1], j[2], j[3]["bin"]) for j in got["jobs"]] == [(r[5], "analyze", "queued", "1,2")
                                                                    for r in sorted(got["txm"], key=lambda r: r[5])]
    recorded = rows(lab)
    assert set(recorded) == names | {"notes.csv"}
    assert recorded["notes.csv"]["status"] == "ignored"
    for name in names:
        row = recorded[name]
        path = Path(row["path"])
        assert (row["sha256"], row["size_bytes"], row["mtime"]) == (sha256(path), path.stat().st_size,
                                                                     path.stat().st_mtime)
        assert not row["changed_after_ingest"] and row["error"] is None


@pytest.mark.parametrize("mode", ["inotify", "poll"])
def test_half_written_files_wait_until_complete(lab, tmp_path, mode):
    """Settled but not complete: a CSV with a cut last line, an HDF5 file its writer holds open. Both
    wait (recorded with the reason) and are ingested once finished; nothing of them before."""
    import numpy as np

    from txmdb.synthetic.tomogram import LAYOUT_PATHS, SyntheticStack, energy_grid, particle_field

    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    for folder in ("cyc", "xas", "fxi"):
        (tmp_path / "watched" / folder).mkdir(parents=True)
    csv = tmp_path / "watched" / "cyc" / "C1_slow.csv"
    h5 = tmp_path / "watched" / "fxi" / "S1_pristine_001.h5"
    data = P492.read_bytes()
    cut = data.index(b"\n", len(data) // 2) - 7  # in the middle of a row
    csv.write_bytes(data[:cut])
    energies = energy_grid(24)
    edge, _ = particle_field((8, 16, 16), kind="rod", seed=5)
    np_file = tmp_path / "stack.npz"
    np.savez(np_file, data=SyntheticStack(edge, energies, noise=0.01, seed=5).slab(0, 8), energies=energies)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import h5py, sys, numpy as np\n"
        f"f = h5py.File({str(h5)!r}, 'w')\n"
        f"arrays = np.load({str(np_file)!r})\n"
        f"f[{LAYOUT_PATHS['dxchange'][0]!r}] = arrays['data']\n"
        f"f[{LAYOUT_PATHS['dxchange'][1]!r}] = arrays['energies']\n"
        "f.flush(); print('open', flush=True); sys.stdin.readline(); f.close()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    watch = Watch(lab.url, tmp_path / "store", rules, tmp_path / "watch.log",
                  *(["--poll", "0.3"] if mode == "poll" else []))
    try:
        assert holder.stdout.readline() == "open\n"
        watch.start()
        waiting = wait_for(lambda: (r := rows(lab)) and all(r.get(n, {}).get("error") for n in (csv.name, h5.name))
                           and r, 30, "both files found incomplete", watch)
        assert (waiting[csv.name]["status"], waiting[csv.name]["error"]) == (
            "waiting", "last line is cut (no line break at the end)")
        assert (waiting[h5.name]["status"], waiting[h5.name]["error"]) == (
            "waiting", "open for writing (HDF5 file lock held)")
        time.sleep(3 * SETTLE_S)  # settled long since, still not read
        assert catalogue_records(lab)["cycling"] == [] and catalogue_records(lab)["txm"] == []
        with open(csv, "ab") as fh:
            fh.write(data[cut:])
        holder.communicate("\n", timeout=30)
        wait_for(lambda: all(rows(lab).get(n, {}).get("status") == "ingested" for n in (csv.name, h5.name)), 30,
                 "both files ingested once complete", watch)
    finally:
        if holder.poll() is None:
            holder.kill()
        assert watch.terminate() == 0
    got = catalogue_records(lab)
    assert [(cell, sha, n) for cell, sha, n in got["cycling"]] == [("C1", sha256(P492), 2021)]
    assert [(r[0], r[1], r[2], r[3]) for r in got["txm"]] == [("S1", "pristine", sha256(h5), [24, 8, 16, 16])]


@pytest.mark.parametrize("mode", ["inotify", "poll"])
def test_folder_that_disappears_and_comes_back(lab, tmp_path, mode):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    cyc = tmp_path / "watched" / "cyc"
    cyc.mkdir(parents=True)
    watch = Watch(lab.url, tmp_path / "store", rules, tmp_path / "watch.log",
                  *(["--poll", "0.3"] if mode == "poll" else []), "--log-json")
    watch.start()
    try:
        shutil.copy(P492, cyc / "C1_a.csv")
        wait_for(lambda: rows(lab).get("C1_a.csv", {}).get("status") == "ingested", 30, "the first file", watch)
        shutil.rmtree(cyc)
        wait_for(lambda: any('"folder.missing"' in line and str(cyc) in line for line in watch.lines()), 10,
                 "the folder to be missed", watch)
        cyc.mkdir()
        prefix(P492, 1400, cyc / "C2_b.csv")
        wait_for(lambda: rows(lab).get("C2_b.csv", {}).get("status") == "ingested", 30, "a file in the folder back",
                 watch)
    finally:
        assert watch.terminate() == 0
    events = [json.loads(line) for line in watch.lines()]
    assert events[0]["event"] == "watch.start"
    assert events[0]["observer"] == ("polling" if mode == "poll" else "inotify")
    assert [e["event"] for e in events if e.get("folder") == str(cyc)] == ["folder.missing", "folder.back"]
    ingested = [e for e in events if e["event"] == "file.ingested"]
    assert [(Path(e["path"]).name, e["record"].split(":")[0], e["created"]) for e in ingested] == [
        ("C1_a.csv", "cycling_runs", True), ("C2_b.csv", "cycling_runs", True)]


def run_once(lab, tmp_path, rules: Path) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "txmdb.cli.main", "--db", lab.url, "--store", str(tmp_path / "store"),
                           "watch", str(rules), "--once"], env=ENV, cwd=PROJECT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return [line.split(" ", 3)[2:] for line in done.stderr.splitlines()]


def test_restart_resumes_from_the_record_and_flags_changed_files(lab, tmp_path):
    """--once runs in a row: nothing ingested twice; a failed file retried when it changes; an ingested
    file that changes flagged, not re-ingested; a touched file (same content) neither."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.replace(f"settle_seconds = {SETTLE_S}", "settle_seconds = 0"))
    cyc = tmp_path / "watched" / "cyc"
    for folder in ("cyc", "xas", "fxi"):
        (tmp_path / "watched" / folder).mkdir(parents=True)
    shutil.copy(P492, cyc / "C1_a.csv")
    (cyc / "C2_b.csv").write_text("time,volts\n1,2\n")
    first = run_once(lab, tmp_path, rules)
    assert sorted(e[0] for e in first if e[0] in ("file.ingested", "file.failed")) == ["file.failed", "file.ingested"]
    second = run_once(lab, tmp_path, rules)
    assert [e[0] for e in second] == ["watch.start", "watch.stop"]  # nothing read again
    prefix(P492, 1400, cyc / "C2_b.csv")  # the failed file, rewritten
    third = run_once(lab, tmp_path, rules)
    assert [e[0] for e in third if e[0].startswith("file.")] == ["file.ingested"]
    os.utime(cyc / "C1_a.csv")  # touched, same bytes
    with open(cyc / "C2_b.csv", "a") as fh:  # changed after it was ingested
        fh.write(P492.read_text().splitlines()[1500] + "\n")
    fourth = run_once(lab, tmp_path, rules)
    assert [e[0] for e in fourth if e[0].startswith("file.")] == ["file.changed_after_ingest"]
    recorded = rows(lab)
    assert recorded["C2_b.csv"]["changed_after_ingest"] and recorded["C2_b.csv"]["status"] == "ingested"
    assert not recorded["C1_a.csv"]["changed_after_ingest"]
    assert recorded["C2_b.csv"]["sha256"] == sha256(cyc / "C2_b.csv")
    got = catalogue_records(lab)["cycling"]
    assert [(cell, n) for cell, _, n in got] == [("C1", 2021), ("C2", 1399)]  # the changed file is not re-ingested
    assert run_once(lab, tmp_path, rules)[1:] == [["watch.stop", "candidates=0"]]


def test_sigterm_finishes_the_file_being_read(lab, tmp_path):
    """SIGTERM while a file is being ingested: the file is finished and recorded, then the watcher exits 0."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.replace(f"settle_seconds = {SETTLE_S}", "settle_seconds = 0.2"))
    cyc = tmp_path / "watched" / "cyc"
    cyc.mkdir(parents=True)
    watch = Watch(lab.url, tmp_path / "store", rules, tmp_path / "watch.log")
    watch.start()
    wait_for(lambda: any("watch.start" in line for line in watch.lines()), 30, "the watcher's first line", watch)
    shutil.copy(NEWARE, cyc / "C2_neware.csv")  # ~1 s to read and ingest
    wait_for(lambda: rows(lab).get("C2_neware.csv"), 10, "the file seen", watch)
    time.sleep(SETTLE_S * 0.2 + 0.3)  # settled: being read
    assert watch.terminate() == 0
    events = [line.split()[2] for line in watch.lines()]
    # finished, recorded, then stopped; on a loaded machine the read may end before the signal lands
    assert events[-1] == "watch.stop" and "file.ingested" in events and "watch.stopping" in events, events
    assert events.index("file.ingested") < events.index("watch.stop")
    assert rows(lab)["C2_neware.csv"]["status"] == "ingested"
    assert len(catalogue_records(lab)["cycling"]) == 1


# ----------------------------------------------------------------- complete files (no database)
def test_text_files_are_complete_only_with_whole_last_rows(tmp_path):
    data = P492.read_bytes()
    path = tmp_path / "run.csv"
    path.write_bytes(data[: data.index(b"\n", 5000) + 10])
    assert incomplete_reason(path) == "last line is cut (no line break at the end)"
    path.write_bytes(data[: data.index(b"\n", 5000) + 1] + b"1,2,3\n")
    assert incomplete_reason(path) == "last row is shorter than the one before it (cut)"
    path.write_bytes(data)
    assert incomplete_reason(path) is None
    path.write_bytes(b"")
    assert incomplete_reason(path) == "empty"
    shutil.copy(XDI, path)
    assert incomplete_reason(path) is None


def test_hdf5_open_for_writing_or_cut_short_is_not_complete(tmp_path):
    import h5py

    path = tmp_path / "stack.h5"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import h5py, sys, numpy as np\n"
        f"f = h5py.File({str(path)!r}, 'w'); f['a'] = np.zeros(1000); f.flush()\n"
        "print('open', flush=True); sys.stdin.readline(); f.close()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        assert incomplete_reason(path) == "open for writing (HDF5 file lock held)"
    finally:
        holder.communicate("\n", timeout=30)
    assert incomplete_reason(path) is None
    with h5py.File(path, "r") as f:
        assert f["a"].shape == (1000,)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert incomplete_reason(cut).startswith("does not open as HDF5 yet: ")
    ndax = DATA / "cycling" / "neware-ndax" / "21_10_7_85.ndax"
    assert incomplete_reason(ndax) is None
    half = tmp_path / "half.ndax"
    half.write_bytes(ndax.read_bytes()[:3000])
    assert incomplete_reason(half).startswith("does not open as a ZIP archive yet: ")


def test_every_kind_with_jobs_and_a_sample_made_later(lab, tmp_path):
    """--once over xrd, xas and txm rules: an XRD pattern's ratio, an XAS file whose sample does not
    exist yet (failed, then ingested at the next run once it does), a scan with its registration and
    its analysis queued, the analysis after the registration."""
    from sqlalchemy import func, select

    from txmdb.catalog.samples import add_sample
    from txmdb.db.models import Job, XRDResult
    from txmdb.synthetic.spectra import layered_xrd_pattern, write_columns
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    watched = tmp_path / "watched"
    for folder in ("xrd", "xas", "fxi"):
        (watched / folder).mkdir(parents=True)
    rules = tmp_path / "rules.toml"
    rules.write_text("""settle_seconds = 0
[[rule]]
folder = "watched/xrd"
glob = "*.xy"
kind = "xrd"
pattern = '(?P<sample>[^_]+)_(?P<state>[^_]+)\\.xy'
set = { wavelength = 0.7 }
""" + XAS_RULE + """[[rule]]
folder = "watched/fxi"
glob = "*.h5"
kind = "txm"
pattern = '(?P<sample>[^_]+)_(?P<state>[^_]+)_\\d+\\.h5'
register = true
analyze = true
analysis = { bin = "1,2", theta_bins = 18 }
""")
    tt, intensity = layered_xrd_pattern(wavelength_angstrom=0.7, i003_i104=1.6, eta=0.0)
    write_columns(watched / "xrd" / "S1_pristine.xy", [tt, intensity], names=["2theta", "intensity"])
    shutil.copy(XDI, watched / "xas" / "S9_charged.xdi")
    energies = energy_grid(24)
    edge, _ = particle_field((10, 16, 16), kind="rod", seed=4)
    write_stack(watched / "fxi" / "S2_pristine_001.h5", SyntheticStack(edge, energies, noise=0.01, seed=4), energies)
    first = run_once(lab, tmp_path, rules)
    assert sorted((e[0], e[1].split()[0]) for e in first if e[0].startswith("file.") and e[0] != "file.seen") == [
        ("file.failed", f"path={watched / 'xas' / 'S9_charged.xdi'}"),
        ("file.ingested", f"path={watched / 'fxi' / 'S2_pristine_001.h5'}"),
        ("file.ingested", f"path={watched / 'xrd' / 'S1_pristine.xy'}"),
    ]
    recorded = rows(lab)
    assert recorded["S9_charged.xdi"]["error"] == "no sample named 'S9'; see 'txmdb sample list'"
    assert recorded["S9_charged.xdi"]["missing_reference"]
    with lab.session() as s:
        xrd = s.execute(select(XRDResult.id, XRDResult.state, XRDResult.i003_i104, XRDResult.file_sha256)).one()
        jobs = s.execute(select(Job.id, Job.kind, Job.scan_id, Job.after_job_id, Job.parameters)
                         .order_by(Job.id)).all()
    assert recorded["S1_pristine.xy"]["record_kind"] == "xrd_results" and recorded["S1_pristine.xy"]["record_id"] == xrd[0]
    assert xrd[1:] == ("pristine", pytest.approx(1.6, rel=1e-3), sha256(watched / "xrd" / "S1_pristine.xy"))
    scan_id = recorded["S2_pristine_001.h5"]["record_id"]
    assert recorded["S2_pristine_001.h5"]["record_kind"] == "txm_scans"
    (register, analyze) = jobs
    assert (register.kind, register.scan_id, register.after_job_id) == ("register", scan_id, None)
    assert (analyze.kind, analyze.scan_id, analyze.after_job_id) == ("analyze", scan_id, register.id)
    assert (analyze.parameters["bin"], analyze.parameters["theta_bins"]) == ("1,2", 18)
    with lab.session() as s:
        add_sample(s, "S9")
    second = run_once(lab, tmp_path, rules)
    assert [e[0] for e in second if e[0].startswith("file.")] == ["file.retry", "file.ingested"]
    assert rows(lab)["S9_charged.xdi"]["status"] == "ingested"
    with lab.session() as s:  # nothing queued twice
        assert s.scalar(select(func.count()).select_from(Job)) == 2


# ------------------------------------------------------------------ the ingest process
def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_ingest_process_that_dies_fails_its_file_only(lab, tmp_path):
    """The child dies before it answers (here: stopped, asked, then SIGKILLed): that request fails with
    one line, the next gets a fresh child; an idle child leaves. A FIFO named like a file never blocks it."""
    import threading

    from txmdb.harvest.ingester import Ingester, IngestFailed

    fifo = tmp_path / "never.csv"
    os.mkfifo(fifo)
    ingester = Ingester(lab.url, tmp_path / "store", idle_s=0.5)
    assert ingester.call({"op": "complete", "path": str(fifo)}) == {"reason": "not a regular file"}
    os.kill(ingester.proc.pid, signal.SIGSTOP)  # alive but never answering: the request waits
    outcome = {}

    def ask():
        try:
            outcome["answer"] = ingester.call({"op": "complete", "path": str(fifo)})
        except IngestFailed as exc:
            outcome["error"] = exc

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(1.0)
    os.kill(ingester.proc.pid, signal.SIGKILL)
    asking.join(30)
    assert str(outcome["error"]) == f"{fifo}: the ingest process died reading it (signal 9)"
    assert not outcome["error"].missing
    shutil.copy(XDI, tmp_path / "S1_x.xdi")
    assert ingester.call({"op": "complete", "path": str(tmp_path / "S1_x.xdi")}) == {"reason": None}
    child = ingester.proc
    time.sleep(0.7)
    ingester.stop_if_idle()
    assert ingester.proc is None and child.wait(10) == 0


def test_killed_watcher_leaves_no_ingest_process(lab, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.replace(f"settle_seconds = {SETTLE_S}", "settle_seconds = 30"))
    (tmp_path / "watched" / "cyc").mkdir(parents=True)
    watch = Watch(lab.url, tmp_path / "store", rules, tmp_path / "watch.log")
    watch.start()
    wait_for(lambda: watch.started(), 30, "the watcher's first line", watch)
    shutil.copy(P492, tmp_path / "watched" / "cyc" / "C1_a.csv")  # wakes the ingest process
    (child,) = wait_for(lambda: children(watch.proc.pid), 30, "the ingest process", watch)
    watch.kill()
    wait_for(lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2],
             10, "the ingest process to die with the watcher")


def test_file_removed_before_it_settled_stays_waiting_with_why(lab, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.replace(f"settle_seconds = {SETTLE_S}", "settle_seconds = 30"))
    cyc = tmp_path / "watched" / "cyc"
    cyc.mkdir(parents=True)
    watch = Watch(lab.url, tmp_path / "store", rules, tmp_path / "watch.log", "--poll", "0.3")
    watch.start()
    try:
        prefix(P492, 100, cyc / "C1_short.csv")
        wait_for(lambda: rows(lab).get("C1_short.csv"), 30, "the file seen", watch)
        (cyc / "C1_short.csv").unlink()
        row = wait_for(lambda: rows(lab)["C1_short.csv"]["error"] and rows(lab)["C1_short.csv"], 30,
                       "the file recorded as vanished", watch)
    finally:
        assert watch.terminate() == 0
    assert (row["status"], row["error"]) == ("waiting", "vanished before it was read")
    assert catalogue_records(lab)["cycling"] == []


def test_folder_moved_in_whole_is_walked(lab, tmp_path):
    """inotify reports a folder moved into a watched one, not the files already in it: they are found too."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.replace(f"settle_seconds = {SETTLE_S}", "settle_seconds = 0.5"))
    (tmp_path / "watched" / "cyc").mkdir(parents=True)
    outside = tmp_path / "outside" / "day2"
    outside.mkdir(parents=True)
    prefix(P492, 1400, outside / "C1_day2.csv")
    watch = Watch(lab.url, tmp_path / "store", rules, tmp_path / "watch.log")
    watch.start()
    try:
        wait_for(lambda: watch.started(), 30, "the watcher's first line", watch)
        time.sleep(1.5)  # its first walk is over: only an event can find the file
        outside.rename(tmp_path / "watched" / "cyc" / "day2")
        wait_for(lambda: rows(lab).get("C1_day2.csv", {}).get("status") == "ingested", 30, "the moved-in file", watch)
    finally:
        assert watch.terminate() == 0
    assert [(cell, n) for cell, _, n in catalogue_records(lab)["cycling"]] == [("C1", 1399)]


def test_a_file_refused_for_a_store_file_in_the_way_is_retried(lab, tmp_path):
    """After a database restored from an older backup, a store file sits where the next record's
    file would go: the harvested file fails, naming it; once ``db check --repair`` has set it aside,
    the next run retries the file (it did not change) and ingests it."""
    from txmdb.catalog.integrity import check_catalog

    watched = tmp_path / "watched" / "xas"
    watched.mkdir(parents=True)
    rules = tmp_path / "rules.toml"
    rules.write_text("settle_seconds = 0\n" + XAS_RULE)
    from txmdb.store import XAS

    store = tmp_path / "store" / "xas"
    lab.store.claim(XAS)                               # this catalogue's store, before the newer files appear
    store.mkdir(parents=True, exist_ok=True)
    # the next records' files of a newer catalogue (PostgreSQL's sequence moves on after a refusal)
    for record_id in (1, 2, 3):
        (store / f"{record_id}.parquet").write_bytes(b"a newer spectrum")
    shutil.copy(XDI, watched / "S1_charged.xdi")
    first = run_once(lab, tmp_path, rules)
    assert [e[0] for e in first if e[0].startswith("file.") and e[0] != "file.seen"] == ["file.failed"]
    assert "already exists, and no record of this catalogue names it" in rows(lab)["S1_charged.xdi"]["error"]
    again = run_once(lab, tmp_path, rules)            # still in the way: tried, failed again
    assert [e[0] for e in again if e[0].startswith("file.") and e[0] != "file.seen"] == ["file.retry",
                                                                                         "file.failed"]
    report = check_catalog(lab, repair=True, sources=False)
    assert [f.line() for f in report.findings] == [
        f"repaired: xas/{i}.parquet: orphan file: no row names it: moved to lost+found/xas/" for i in (1, 2, 3)]
    third = run_once(lab, tmp_path, rules)
    assert [e[0] for e in third if e[0].startswith("file.") and e[0] != "file.seen"] == ["file.retry",
                                                                                         "file.ingested"]
    assert rows(lab)["S1_charged.xdi"]["status"] == "ingested"
    assert {p.name for p in (tmp_path / "store" / "lost+found" / "xas").iterdir()} == {"1.parquet", "2.parquet",
                                                                                      "3.parquet"}
