"""Session 20 speed work on the whole analysis: fewer fresh pages, the same numbers.

The analysis keeps the memory it frees for its next arrays (glibc's allocator thresholds,
``txmdb.analysis._memory.freed_memory_kept``): an array from the heap holds old bytes where a
fresh mapping held zeros, so the results are compared after the heap was filled with two
different patterns, and with an analysis run without the switch.
"""
from __future__ import annotations

import contextlib
import ctypes
import resource
import threading

import h5py
import numpy as np
import pandas as pd
import pytest

from txmdb.analysis._memory import freed_memory_kept, no_huge_pages
from txmdb.db.models import STATISTICS_TABLES
from txmdb.pipeline import AnalysisOptions, analyze_stack
from tests.test_pipeline import PARAMS, _stack

# above glibc's steady mmap threshold (32 MiB), below the kept one (256 MiB)
_BIG = 96 << 20
_PAGES = _BIG // 4096


def _faults() -> int:
    # this thread's own faults: another thread of the process (a trim, a test's leftover
    # thread) faulting meanwhile must not count
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


@contextlib.contextmanager
def _no_thp():
    """Transparent huge pages off for this process (prctl PR_SET_THP_DISABLE, restored
    after): where the kernel's THP setting is ``always`` (some CI images) a fresh mapping
    takes one fault per 2 MiB whatever numpy marks, and the counts below mean nothing."""
    libc = ctypes.CDLL(None, use_errno=True)
    was = libc.prctl(_PR_GET_THP_DISABLE, 0, 0, 0, 0)
    assert libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(_PR_SET_THP_DISABLE, max(was, 0), 0, 0, 0)


_PR_SET_THP_DISABLE, _PR_GET_THP_DISABLE = 41, 42


def _refaults() -> int:
    """Page faults of filling a big array allocated right after an array of the same size
    was filled and freed (this thread: the main heap), in 4 KiB pages (huge pages off,
    else a fresh mapping takes one fault per 2 MiB)."""
    with no_huge_pages(), _no_thp():
        first = np.ones(_BIG, np.uint8)
        del first
        before = _faults()
        again = np.empty(_BIG, np.uint8)
        again.fill(2)
        faults = _faults() - before
        del again
    return faults


def _join_trims() -> None:
    for thread in threading.enumerate():
        if thread.name == "txmdb-trim":
            thread.join(10)


def test_freed_memory_is_reused_inside_and_mapped_afresh_after():
    with freed_memory_kept():
        inside = _refaults()
    _join_trims()
    outside = _refaults()
    assert inside < _PAGES // 10                     # the freed pages came back, no faults
    assert outside > _PAGES * 9 // 10                # glibc's usual mapping afresh again


def test_overlapping_blocks_keep_it_until_the_last_leaves_even_on_error():
    entered, release = threading.Event(), threading.Event()

    def other():
        with freed_memory_kept():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with pytest.raises(RuntimeError):
        with freed_memory_kept():
            thread.start()
            assert entered.wait(10)
            raise RuntimeError("boom")
    assert _refaults() < _PAGES // 10                # the other thread is still inside
    release.set()
    thread.join(10)
    _join_trims()
    assert _refaults() > _PAGES * 9 // 10            # given back once both left


def _poisoned(byte: int) -> None:
    """Arrays of several sizes filled with ``byte`` and freed into the kept heap (NaN for
    0xFF as float, -1 as int): the next arrays may be handed these bytes."""
    for size in (1 << 20, 8 << 20, 40 << 20, _BIG):
        junk = np.empty(size, np.uint8)
        junk.fill(byte)
        del junk
    probe = np.empty(40 << 20, np.uint8)               # the kept heap hands the bytes out again
    assert (probe[1 << 20:2 << 20] == byte).all()


def _results(path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        return {k: f[k][...] for k in f if isinstance(f[k], h5py.Dataset)}


def test_analysis_gives_the_same_bits_whatever_the_heap_held(tmp_path):
    # slabs of 8 x 96 x 96 x 52 float32 (15 MB), every statistic and two spectral-free maps
    stack = _stack(tmp_path / "s.h5", (24, 96, 96), n_particles=2, radius=9.0)
    options = AnalysisOptions(params=PARAMS, slab_size=8)
    outputs = {}
    for byte in (0xFF, 0x00):
        with freed_memory_kept():
            _poisoned(byte)
            outputs[byte] = analyze_stack(stack, options, results_path=tmp_path / f"p{byte}.h5")
    _join_trims()
    plain = analyze_stack.__wrapped__.__wrapped__      # neither memory switch
    outputs["plain"] = plain(stack, options, results_path=tmp_path / "plain.h5")
    assert outputs["plain"].n_particles == 2
    reference = _results(tmp_path / "plain.h5")
    assert {"edge_ev", "jump", "valid", "labels"} <= set(reference)
    for byte in (0xFF, 0x00):
        for name in STATISTICS_TABLES:
            pd.testing.assert_frame_equal(outputs[byte].tables[name], outputs["plain"].tables[name],
                                          check_exact=True, obj=f"{name} after 0x{byte:02x}")
        found = _results(tmp_path / f"p{byte}.h5")
        assert set(found) == set(reference)
        for name, values in reference.items():
            np.testing.assert_array_equal(found[name], values, err_msg=f"{name} after 0x{byte:02x}")


# --------------------------------------------------------------------------- map summaries' reads
def _spectral_analysis(tmp_path, monkeypatch=None, name="r.h5", gradient_maps=("edge",)):
    from tests.test_pipeline_direct_maps import F, PARAMS as NI, W, _reference
    from txmdb.io.hdf5 import open_stack
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    if not (tmp_path / "s.h5").exists():
        edge, _ = particle_field((17, 24, 24), kind="rod", n_particles=2, seed=3, radius=5.0)
        write_stack(tmp_path / "s.h5", SyntheticStack(edge, energy_grid(60), noise=0.01, seed=3), energy_grid(60),
                    voxel_size_nm=30.0)
    refs = (_reference("NiO", 1), _reference("LiNiO2", 2))
    options = AnalysisOptions(params=NI, slab_size=5, white_line=W, lcf=refs, lcf_window=F,
                              gradient_maps=gradient_maps, min_particle_voxels=20)
    return analyze_stack(open_stack(tmp_path / "s.h5"), options, results_path=tmp_path / name)


def test_written_maps_read_into_one_buffer_as_the_file_reads_them(tmp_path):
    from txmdb.io.maps import ResultMaps, read_map
    from txmdb.pipeline import WrittenMaps, _one_at_a_time

    _spectral_analysis(tmp_path)
    with h5py.File(tmp_path / "r.h5") as out:
        places = {"white_line": ("white_line_ev", None), "white_line_height": ("white_line_height", None),
                  "fraction:NiO": ("fractions", 0), "fraction:LiNiO2": ("fractions", 1),
                  "rfactor": ("rfactor", None)}
        maps = WrittenMaps(out, places)
        assert list(maps) == list(ResultMaps(out))
        buffer = np.full(out["edge_ev"].shape, 7.0, np.float32)
        for name in places:
            got = maps.read_into(name, buffer)
            assert got is buffer
            np.testing.assert_array_equal(got.view(np.uint32), read_map(out, name).view(np.uint32), err_msg=name)
        assert np.isnan(buffer).any() and np.isfinite(buffer).any()
        unplaced = maps.read_into("edge", buffer)          # not the edge pass' float32 maps: read anew
        assert unplaced is not buffer
        np.testing.assert_array_equal(unplaced, read_map(out, "edge"))
        seen = list(_one_at_a_time(maps, buffer.shape))
        assert [name for name, _ in seen] == [name for name in ResultMaps(out) if name != "edge"]
        assert len({id(values) for _, values in seen}) == 1    # one buffer, overwritten map by map
        plain = list(_one_at_a_time(ResultMaps(out), buffer.shape))   # a mapping without read_into
        assert len({id(values) for _, values in plain}) == len(plain) == len(places)


def test_spectral_analysis_tables_as_with_each_map_read_anew(tmp_path, monkeypatch):
    import txmdb.pipeline as pipeline
    from txmdb.io.maps import ResultMaps

    gradient_maps = ("edge", "white_line", "fraction:NiO")
    ours = _spectral_analysis(tmp_path, name="ours.h5", gradient_maps=gradient_maps)
    monkeypatch.setattr(pipeline, "WrittenMaps", lambda out, places: ResultMaps(out))   # each map read whole
    anew = _spectral_analysis(tmp_path, name="anew.h5", gradient_maps=gradient_maps)
    assert ours.n_particles == 2
    summaries = ours.tables["map_summaries"]
    assert set(summaries["map"]) == {"edge", "white_line", "white_line_height", "fraction:NiO",
                                     "fraction:LiNiO2", "rfactor"}
    for name in STATISTICS_TABLES:
        pd.testing.assert_frame_equal(ours.tables[name], anew.tables[name], check_exact=True, obj=name)


# --------------------------------------------------------------------------- labels written early
def test_labels_handed_over_before_the_rest_of_the_statistics(tmp_path):
    from txmdb.io.hdf5 import open_stack
    from txmdb.pipeline import statistics_from_edge_map
    from txmdb.io.maps import read_map

    _spectral_analysis(tmp_path)
    info = open_stack(tmp_path / "s.h5")
    edge = read_map(tmp_path / "r.h5", "edge").astype(np.float64)
    events = []
    stats = statistics_from_edge_map(edge, AnalysisOptions(params=PARAMS, min_particle_voxels=20),
                                     energies_ev=info.energies_ev, voxel_size_nm=30.0,
                                     tick=lambda: events.append("tick"),
                                     on_labels=lambda labels: events.append(labels.copy()))
    assert not isinstance(events[0], str) and all(isinstance(e, str) for e in events[1:]) and len(events) > 1
    np.testing.assert_array_equal(events[0], stats.labels)      # the final map, not changed after
    assert stats.n_particles == 2
    with h5py.File(tmp_path / "r.h5") as f:                     # what analyze_stack wrote
        np.testing.assert_array_equal(f["labels"][...], stats.labels)


def test_failed_statistics_leave_no_file_and_no_labels_writer(tmp_path):
    stack = _stack(tmp_path / "s.h5", (24, 96, 96), n_particles=2, radius=9.0)
    n_slabs = 3

    def fail(done, total):
        if done > n_slabs:                                     # in the statistics, after the labels
            raise RuntimeError("stop")
    with pytest.raises(RuntimeError, match="stop"):
        analyze_stack(stack, AnalysisOptions(params=PARAMS, slab_size=8), results_path=tmp_path / "r.h5",
                      progress=fail)
    assert not (tmp_path / "r.h5").exists() and not list(tmp_path.glob("*.partial"))
    assert not [t for t in threading.enumerate() if t.name.startswith("txmdb-labels")]
