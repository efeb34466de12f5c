"""Compiled pass of :class:`txmdb.analysis.spectral.SpectralKernel` (private).

One pass over blocks of voxels (``prange``), energies first like the edge kernel
(``txmdb.analysis._edge_numba``). Per block: the pre- and post-edge lines from the edge
kernel's own projector rows, then, row by row over the white-line and fit windows only,
``norm = (mu - pre(x)) / (post(x) - pre(x))`` accumulated into

- the four cubic coefficients ``c = P_W norm_W`` (``P_W`` the least-squares projector of
  ``[1, t, t², t³]``),
- ``b_i = Σ_F R_i norm`` and ``yy = Σ_F norm²`` of the linear combination;

then per voxel the analytic maximum of the cubic and the best feasible support of the
LCF (every support's equality-constrained solution ``w_S = A_S b_S + c_S`` was solved once
per stack; the feasible one of least ``Σ res² = yy - 2 w·b + wᵀ G w`` is the constrained
optimum). All float64; the inner loops run over the voxels of a row, so they vectorise.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from txmdb.analysis import _edge_numba

# voxels per block: the ~60 rows of 512 voxels (float32: 120 kB) stay in L2
_BLOCK = 512


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def cubic_maximum(c0, c1, c2, c3):  # pragma: no cover - compiled
    """``(t*, p(t*))`` of the maximum of ``p(t) = c0 + c1 t + c2 t² + c3 t³`` in [-1, 1].

    The root of ``p'`` with ``p'' < 0``; ``(nan, nan)`` when there is none in [-1, 1].
    Written without branches (both forms computed, one selected) so that a loop of it
    vectorises; a zero divisor in the form not selected is harmless (error_model numpy).
    """
    # c3 == 0: the vertex of the parabola, a maximum when c2 < 0.
    t_vertex = -c1 / (2.0 * c2)
    # p'(t) = 3 c3 t² + 2 c2 t + c1; its roots (-c2 ± s) / (3 c3), s² = c2² - 3 c1 c3;
    # p'' there is ±2s, so the maximum is the "-s" root (none when s == 0: inflection),
    # here in the form without cancellation for each sign of c2.
    disc = c2 * c2 - 3.0 * c1 * c3
    s = math.sqrt(max(disc, 0.0))
    t_cubic = (-c2 - s) / (3.0 * c3) if c2 >= 0.0 else c1 / (s - c2)
    quadratic = c3 == 0.0
    t = t_vertex if quadratic else t_cubic
    has_max = (c2 < 0.0) if quadratic else (disc > 0.0)
    ok = has_max and (-1.0 <= t) and (t <= 1.0)
    t = t if ok else np.nan
    return t, c0 + t * (c1 + t * (c2 + t * c3))


@njit(fastmath=False, cache=True, nogil=True)
def _line(mu, v0, m, projector, first):  # pragma: no cover - compiled
    """Intercept and slope of each voxel's least-squares line over rows ``first ..``."""
    a = np.zeros(m)
    b = np.zeros(m)
    for i in range(projector.shape[1]):
        c0 = projector[0, i]
        c1 = projector[1, i]
        row = mu[first + i, v0:v0 + m]
        for v in range(m):
            val = np.float64(row[v])
            a[v] += c0 * val
            b[v] += c1 * val
    return a, b


@njit(fastmath=False, cache=True, nogil=True)
def _mask(v0, m, valid, has_wl, k, out_wl, out_h, out_frac, out_r):  # pragma: no cover - compiled
    """NaN in every map where the edge mask applies, voxels ``v0 .. v0 + m``."""
    for v in range(m):
        if not valid[v0 + v]:
            if has_wl:
                out_wl[v0 + v] = np.nan
                out_h[v0 + v] = np.nan
            for i in range(k):
                out_frac[i, v0 + v] = np.nan
            if k > 0:
                out_r[v0 + v] = np.nan


# error_model="numpy": a zero divisor gives inf/NaN (masked later) instead of a branch
# that raises, which kept the division loop from vectorising
@njit(fastmath=False, cache=True, nogil=True, error_model="numpy")
def spectral_block(mu, v0, m, valid, p_pre, pre0, p_post, post0, x,
                   coef, r0, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
                   out_wl, out_h, out_frac, out_r):  # pragma: no cover - compiled
    """The maps of voxels ``v0 .. v0 + m`` (one block).

    ``coef`` (4 + k, n): per row ``r0 + j`` of the windows, the white-line projector's
    column (rows 0-3, zero outside W or without a white line) and the references'
    values (rows 4.., zero outside F).
    """
    k = sup_idx.shape[1]
    n_sup = sup_n.shape[0]
    n_acc = coef.shape[0]
    r1 = min(r0 + coef.shape[1], mu.shape[0])
    # a block the edge masks whole (background around the particles) has NaN maps only
    n_valid = 0
    for v in range(m):
        n_valid += valid[v0 + v]
    if n_valid == 0:
        _mask(v0, m, valid, has_wl, k, out_wl, out_h, out_frac, out_r)
        return
    a_pre, b_pre = _line(mu, v0, m, p_pre, pre0)
    a_post, b_post = _line(mu, v0, m, p_post, post0)
    jump = a_post - a_pre
    slope = b_post - b_pre
    acc = np.zeros((n_acc, m))
    yy = np.zeros(m)
    nv = np.empty(m)
    for r in range(r0, r1):
        xr = x[r]
        row = mu[r, v0:v0 + m]
        for v in range(m):
            nv[v] = (np.float64(row[v]) - (a_pre[v] + b_pre[v] * xr)) / (jump[v] + slope[v] * xr)
        if f0 <= r < f1:
            for v in range(m):
                yy[v] += nv[v] * nv[v]
        for j in range(n_acc):
            c = coef[j, r - r0]
            # zero outside the accumulator's window: skipped (no 0 * inf = NaN from a
            # row the map does not use)
            if c != 0.0:
                for v in range(m):
                    acc[j, v] += c * nv[v]
    if has_wl:
        for v in range(m):
            t, h = cubic_maximum(acc[0, v], acc[1, v], acc[2, v], acc[3, v])
            out_wl[v0 + v] = w_c + w_h * t
            out_h[v0 + v] = h
    if k > 0:
        # supports outer, voxels inner: branch-free selects that vectorise
        best = np.full(m, np.inf)
        best_w = np.full((k, m), np.nan)
        ws = np.empty((k, m))
        f = np.empty(m)
        ok = np.empty(m, dtype=np.bool_)
        for s in range(n_sup):
            ns = sup_n[s]
            for v in range(m):
                ok[v] = True
            for a in range(ns):
                ca = sup_c[s, a]
                for v in range(m):
                    ws[a, v] = ca
                for q in range(ns):
                    aq = sup_a[s, a, q]
                    iq = sup_idx[s, q]
                    for v in range(m):
                        ws[a, v] += aq * acc[4 + iq, v]
                for v in range(m):
                    ok[v] = ok[v] and ws[a, v] >= 0.0
            # Σ res² = yy - 2 w·b + wᵀ G w over the support
            for v in range(m):
                f[v] = yy[v]
            for a in range(ns):
                ia = sup_idx[s, a]
                for v in range(m):
                    f[v] -= 2.0 * ws[a, v] * acc[4 + ia, v]
                for q in range(ns):
                    gaq = gram[ia, sup_idx[s, q]]
                    for v in range(m):
                        f[v] += ws[a, v] * gaq * ws[q, v]
            for v in range(m):
                ok[v] = ok[v] and f[v] < best[v]
                best[v] = f[v] if ok[v] else best[v]
            for i in range(k):
                for v in range(m):
                    best_w[i, v] = 0.0 if ok[v] else best_w[i, v]
            for a in range(ns):
                ia = sup_idx[s, a]
                for v in range(m):
                    best_w[ia, v] = ws[a, v] if ok[v] else best_w[ia, v]
        for v in range(m):
            for i in range(k):
                out_frac[i, v0 + v] = best_w[i, v]
            # no finite candidate: a norm that is not finite on F (zero step)
            out_r[v0 + v] = max(best[v], 0.0) / yy[v] if best[v] < np.inf else np.nan
    _mask(v0, m, valid, has_wl, k, out_wl, out_h, out_frac, out_r)


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def spectral_pass(mu, valid, p_pre, pre0, p_post, post0, x,
                  coef, r0, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
                  out_wl, out_h, out_frac, out_r):  # pragma: no cover - compiled
    """The maps of every voxel of ``mu`` (n_energy, n), given the edge validity."""
    n = mu.shape[1]
    for ib in prange((n + _BLOCK - 1) // _BLOCK):
        v0 = ib * _BLOCK
        spectral_block(mu, v0, min(v0 + _BLOCK, n) - v0, valid, p_pre, pre0, p_post, post0, x,
                       coef, r0, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
                       out_wl, out_h, out_frac, out_r)


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def fused_pass(mu, p_pre, pre0, p_post, post0, x, e, s0, s1, min_jump, snr,
               edge, jump, sigma, valid,
               coef, r0, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
               out_wl, out_h, out_frac, out_r):  # pragma: no cover - compiled
    """The edge pass and the spectral maps block by block, in one sweep over ``mu``."""
    n = mu.shape[1]
    for ib in prange((n + _BLOCK - 1) // _BLOCK):
        v0 = ib * _BLOCK
        m = min(v0 + _BLOCK, n) - v0
        # the edge kernel's own block (same arithmetic, same edge results), then the maps
        # from the same rows while they are still in L2
        _edge_numba.edge_block(mu, v0, m, p_pre, pre0, p_post, post0, x, e, s0, s1, min_jump, snr,
                               edge, jump, sigma, valid)
        spectral_block(mu, v0, m, valid, p_pre, pre0, p_post, post0, x,
                       coef, r0, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
                       out_wl, out_h, out_frac, out_r)
