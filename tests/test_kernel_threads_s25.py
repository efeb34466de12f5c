"""Kernel threads (session 25): one per usable core by default (a container's CPU quota
counted; a worker's processes sharing the cores), and numba's OpenMP threads waiting
passively so that the reader's and the writer's core is not spun away."""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from tests.test_spectral_kernels import E, F, PARAMS, REFS, W, mixtures
from txmdb.analysis import _spectral_numba
from txmdb.analysis import _threads
from txmdb.analysis._threads import _cgroup_cores, _quota_cores, kernel_threads, numba_threads, usable_cores
from txmdb.analysis.edge import EdgeKernel
from txmdb.analysis.spectral import SpectralKernel
from txmdb.options import ANALYZE_OPTIONS, analysis_request
from txmdb.pipeline import AnalysisOptions
from txmdb.vocabulary import MAX_ANALYSIS_WORKERS


@pytest.fixture
def cgroups(tmp_path, monkeypatch):
    """An empty cgroup v2 tree and this process' cgroup file, both under tmp_path."""
    root, own = tmp_path / "cgroup", tmp_path / "self-cgroup"
    root.mkdir()
    own.write_text("0::/\n")
    monkeypatch.setattr(_threads, "CGROUP_ROOT", root)
    monkeypatch.setattr(_threads, "PROC_CGROUP", own)
    return root, own


def test_default_is_one_thread_per_usable_core(cgroups):
    assert usable_cores() == len(os.sched_getaffinity(0))          # no quota anywhere
    assert kernel_threads(None) == min(len(os.sched_getaffinity(0)), MAX_ANALYSIS_WORKERS)
    assert kernel_threads(3) == 3
    assert kernel_threads(None, share=2) == max(1, min(len(os.sched_getaffinity(0)) // 2, MAX_ANALYSIS_WORKERS))
    assert kernel_threads(None, share=10 ** 6) == 1 and kernel_threads(5, share=2) == 5
    # the option's default is automatic everywhere: command line, jobs, rules, library
    assert ANALYZE_OPTIONS["workers"] == (int, None)
    assert AnalysisOptions(params=PARAMS).workers is None
    options, _ = analysis_request({})
    assert options.workers is None
    assert analysis_request({"workers": 2})[0].workers == 2


@pytest.mark.parametrize("text, cores", [("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000", 2),
                                         ("50000 100000", 1), ("", None), ("junk", None), ("100 0", None)])
def test_a_cpu_max_file_is_read(tmp_path, text, cores):
    quota = tmp_path / "cpu.max"
    quota.write_text(text)
    assert _quota_cores(quota) == cores
    assert _quota_cores(tmp_path / "missing") is None


@pytest.mark.parametrize("quotas, cores", [
    ({"": "max", "a": "300000 100000", "a/b": "max"}, 3),           # a container's limit above the process
    ({"": "max", "a": "100000 100000", "a/b": "400000 100000"}, 1),  # the smallest on the way up
    ({"a/b": "200000 100000"}, 2),                                  # the process' own (systemd CPUQuota=)
    ({"": "100000 100000"}, 1),                                     # the root's
    ({}, None),
])
def test_the_smallest_quota_from_the_process_cgroup_up_counts(cgroups, quotas, cores):
    root, own = cgroups
    own.write_text("0::/a/b\n")
    (root / "a" / "b").mkdir(parents=True)
    for folder, text in quotas.items():
        (root / folder / "cpu.max").write_text(text)
    assert _cgroup_cores() == cores
    assert usable_cores() == min(len(os.sched_getaffinity(0)), cores or 10 ** 6)


def test_threads_are_set_for_the_block_and_restored():
    saved = numba.get_num_threads()
    with numba_threads(10_000):
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS   # capped at the pool
    assert numba.get_num_threads() == saved
    with pytest.raises(RuntimeError), numba_threads(1):
        assert numba.get_num_threads() == 1
        raise RuntimeError("inside")
    assert numba.get_num_threads() == saved


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one core: numba has no second thread")
def test_two_threads_give_the_same_bits():
    """Many blocks: the edge results and every map are the same bits whichever thread took
    which block."""
    threads = 2
    n_blocks = 40
    rng = np.random.default_rng(25)
    n = n_blocks * _spectral_numba._BLOCK - 17
    mu = mixtures(rng, ("low", "high"), n).astype(np.float32)
    mu[:, ::7] *= 0.01                                   # masked voxels scattered over every block
    kernel = SpectralKernel(E, PARAMS, white_line=W, references={k: REFS[k] for k in ("low", "high")},
                            lcf_window=F)
    one = kernel.with_edges(mu, threads=1)
    many = kernel.with_edges(mu, threads=threads)
    for field in ("edge_ev", "jump", "sigma_pre", "valid"):
        np.testing.assert_array_equal(getattr(many, field), getattr(one, field), err_msg=field)
    assert set(many.maps) == set(one.maps) and 0 < one.valid.sum() < n
    for name in one.maps:
        np.testing.assert_array_equal(many.maps[name], one.maps[name], err_msg=name)
    edge = EdgeKernel(E, PARAMS)
    np.testing.assert_array_equal(edge(mu, threads=threads).edge_ev, edge(mu, threads=1).edge_ev)


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_wait_passively_unless_the_user_says_otherwise(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = "import os, txmdb.analysis.edge; print(os.environ.get('OMP_WAIT_POLICY'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected
