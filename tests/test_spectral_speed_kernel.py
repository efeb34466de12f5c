"""The fast paths of the fused spectral kernel (four rows per sweep, two references in
registers, the edge block's lines) against the row-by-row general path, the edge kernel and
the straightforward per-voxel definitions of ``test_spectral_kernels`` on a slab of the
benchmark's kind of stack."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_spectral_kernels import E, F, PARAMS, REFS, W, mixtures, naive_lcf, naive_norm, naive_reference, \
    naive_white_line
from txmdb.analysis import _edge_numba
from txmdb.analysis import _spectral_numba as sn
from txmdb.analysis.edge import EdgeKernel
from txmdb.analysis.spectral import SpectralKernel
from txmdb.io.spectra import read_spectrum
from txmdb.synthetic.spectra import measured_reference
from txmdb.synthetic.tomogram import SyntheticStack, particle_field


def measured_references():
    out = {}
    for name in ("NiO", "LiNiO2"):
        spectrum = read_spectrum(measured_reference(name), edge="Ni-K")
        out[name] = (spectrum.energy_ev, spectrum.mu)
    return out


def test_benchmark_slab_matches_the_straightforward_definitions():
    """A slab of a rod stack built as ``bench_edge`` builds it (60 energies, noise 0.01),
    the benchmark's windows and the two measured Ni references: every map equals the
    per-voxel polyfit/roots white line and the lsq_linear LCF."""
    edge_map, _ = particle_field((40, 40, 40), kind="rod", seed=1, radius=0.48 * 40)
    mu = SyntheticStack(edge_map, E, noise=0.01, seed=2).slab(19, 21)
    refs = measured_references()
    kernel = SpectralKernel(E, PARAMS, white_line=W, references=refs, lcf_window=F)
    result = kernel.with_edges(mu)
    alone = EdgeKernel(E, PARAMS)(mu)
    np.testing.assert_array_equal(result.edge_ev, alone.edge_ev)
    np.testing.assert_array_equal(result.valid, alone.valid)
    valid = result.valid.reshape(-1)
    assert 0.3 < valid.mean() < 0.95           # particle and background both in the slab
    flat = mu.reshape(len(E), -1).astype(np.float64)
    fit = (E >= F[0]) & (E <= F[1])
    ref_norm = np.array([naive_reference(*refs[name]) for name in refs])[:, fit]
    maps = {name: values.reshape(-1) for name, values in result.maps.items()}
    for v in np.flatnonzero(valid):
        norm = naive_norm(E, flat[:, v])
        wl, height = naive_white_line(E, norm)
        w, rfactor = naive_lcf(norm[fit], ref_norm)
        np.testing.assert_allclose([maps["white_line"][v], maps["white_line_height"][v]], [wl, height],
                                   rtol=0, atol=1e-6, err_msg=f"voxel {v}")
        np.testing.assert_allclose([maps["fraction:NiO"][v], maps["fraction:LiNiO2"][v], maps["rfactor"][v]],
                                   [*w, rfactor], rtol=0, atol=1e-6, err_msg=f"voxel {v}")
    for name, values in maps.items():
        assert np.isnan(values[~valid]).all(), name
    assert np.isfinite(maps["white_line"][valid]).sum() > 100


def _block_inputs(kernel: SpectralKernel, mu: np.ndarray):
    """What ``spectral_block`` hands to the accumulation, for all of ``mu``'s voxels."""
    e = kernel.edge
    m = mu.shape[1]
    a_pre, b_pre = sn._line(mu, 0, m, e._p_pre_c, e.pre.start)
    a_post, b_post = sn._line(mu, 0, m, e._p_post_c, e.post.start)
    return a_pre, b_pre, a_post - a_pre, b_post - b_pre


@pytest.mark.parametrize("white_line, fit, names, zeros", [
    (W, F, ("low", "high"), False),                       # W inside F: the benchmark's case
    ((8320.0, 8362.0), (8340.0, 8380.0), ("low", "high"), True),   # W sticks out of F; weights of 0
    (W, F, ("low",), True),                               # one reference
    (W, None, (), False),                                 # white line only
    (None, (8326.0, 8371.0), ("low", "high"), False),     # LCF only
])
def test_four_row_sweeps_equal_the_row_by_row_sums(white_line, fit, names, zeros):
    """``_accumulate_fused`` (k <= 2) gives the same bits as the general ``_accumulate``,
    including voxels whose step is 0 on a row (inf in norm) and rows of weight 0."""
    rng = np.random.default_rng(4)
    mu = mixtures(rng, ("low", "high"), 700).astype(np.float32)
    refs = {name: REFS[name] for name in names} or None
    kernel = SpectralKernel(E, PARAMS, white_line=white_line, references=refs, lcf_window=fit)
    coef, r0, w0, w1, f0, f1 = kernel._spectral_arrays()[:6]
    coef = coef.copy()
    if zeros:
        coef[:, 3] = 0.0
        coef[-1, 7] = 0.0
    a_pre, b_pre, jump, slope = _block_inputs(kernel, mu)
    # a step of 0 at one row for a few voxels: a row of F after W where there is an F
    x = kernel.edge._x
    r_zero = f1 - 2 if f1 > f0 else w0 + 2
    slope[:3] = 1.0
    jump[:3] = -x[r_zero]
    if zeros and names:
        coef[4, r_zero - r0] = 0.0             # the first reference skips that row
    m = mu.shape[1]
    r1 = min(r0 + coef.shape[1], mu.shape[0])
    acc_rows, yy_rows = np.zeros((coef.shape[0], m)), np.zeros(m)
    sn._accumulate(mu, 0, m, r0, r1, f0, f1, x, coef, a_pre, b_pre, jump, slope, acc_rows, yy_rows)
    acc4, yy4 = np.zeros((6, m)), np.zeros(m)
    sn._accumulate_fused(mu, 0, m, r0, r1, w0, w1, f0, f1, x, coef, a_pre, b_pre, jump, slope, acc4, yy4)
    np.testing.assert_array_equal(acc4[:coef.shape[0]], acc_rows)
    np.testing.assert_array_equal(acc4[coef.shape[0]:], 0.0)
    np.testing.assert_array_equal(yy4, yy_rows)
    # inf in norm reaches what uses the row, and only that
    assert not np.isfinite(yy4[:3]).any() if f1 > f0 else np.isfinite(yy4).all()
    assert np.isfinite(acc4[:4, :3]).all() == (r_zero >= w1)
    assert np.isfinite(acc4[:, 3:]).all()
    if names:
        assert np.isfinite(acc4[4, :3]).all() == zeros


def test_lines_are_the_edge_blocks_lines():
    """The separate pass' lines (``_line``) are the bits the fused pass takes from the edge
    kernel's block (``edge_block_lines``), and that block's edge results are ``edge_block``'s."""
    rng = np.random.default_rng(6)
    mu = mixtures(rng, ("low", "high"), 300).astype(np.float32)
    e = EdgeKernel(E, PARAMS)
    m = mu.shape[1]
    p = e.params
    outs = []
    for with_lines in (False, True):
        edge, jump, sigma, valid = np.empty(m), np.empty(m), np.empty(m), np.empty(m, dtype=bool)
        args = (mu, 0, m, e._p_pre_c, e.pre.start, e._p_post_c, e.post.start, e._x, e.energies_ev,
                e._search.start, e._search.stop, float(p.min_jump), float(p.snr), edge, jump, sigma, valid)
        lines = [np.zeros(m) for _ in range(4)]
        if with_lines:
            _edge_numba.edge_block_lines(*args, *lines)
        else:
            _edge_numba.edge_block(*args)
        outs.append((edge, jump, sigma, valid, lines))
    for a, b in zip(outs[0][:4], outs[1][:4]):
        np.testing.assert_array_equal(a, b)
    a_pre, b_pre, a_post, b_post = outs[1][4]
    for (a, b), (a_ref, b_ref) in zip(((a_pre, b_pre), (a_post, b_post)),
                                      (sn._line(mu, 0, m, e._p_pre_c, e.pre.start),
                                       sn._line(mu, 0, m, e._p_post_c, e.post.start))):
        np.testing.assert_array_equal(a, a_ref)
        np.testing.assert_array_equal(b, b_ref)
    np.testing.assert_allclose(outs[1][1], a_post - a_pre, rtol=0, atol=0)   # J = a_post - a_pre


def test_two_reference_lcf_equals_the_general_support_search():
    """``_lcf_two`` against ``_lcf_any`` on the same accumulators: the same bits, with the
    constraints active and not, and voxels with no finite candidate."""
    rng = np.random.default_rng(9)
    mu = mixtures(rng, ("low", "high"), 900).astype(np.float32)
    kernel = SpectralKernel(E, PARAMS, references={n: REFS[n] for n in ("low", "high")}, lcf_window=F)
    coef, r0, w0, w1, f0, f1, _, _, _, sup_idx, sup_n, sup_a, sup_c, gram = kernel._spectral_arrays()
    a_pre, b_pre, jump, slope = _block_inputs(kernel, mu)
    m = mu.shape[1]
    jump[:2] = 0.0
    slope[:2] = 0.0                            # norm inf/NaN on F: no finite candidate
    acc, yy = np.zeros((6, m)), np.zeros(m)
    r1 = min(r0 + coef.shape[1], mu.shape[0])
    sn._accumulate_fused(mu, 0, m, r0, r1, w0, w1, f0, f1, kernel.edge._x, coef, a_pre, b_pre, jump, slope,
                         acc, yy)
    frac, rfactor = np.empty((2, m)), np.empty(m)
    sn._lcf_two(acc[4], acc[5], yy, sup_a, sup_c, gram, frac[0], frac[1], rfactor)
    frac_any, rfactor_any = np.empty((2, m)), np.empty(m)
    sn._lcf_any(0, m, acc, yy, sup_idx, sup_n, sup_a, sup_c, gram, frac_any, rfactor_any)
    np.testing.assert_array_equal(frac, frac_any)
    np.testing.assert_array_equal(rfactor, rfactor_any)
    assert np.isnan(rfactor[:2]).all()
    interior = np.isfinite(frac[0]) & (frac[0] > 0) & (frac[0] < 1)
    assert 0 < interior[2:].sum() < m - 2       # both inside the simplex and on its edge
