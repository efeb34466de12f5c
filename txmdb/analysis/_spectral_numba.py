"""Compiled pass of :class:`txmdb.analysis.spectral.SpectralKernel` (private).

One pass over blocks of voxels (``prange``), energies first like the edge kernel
(``txmdb.analysis._edge_numba``). Per block: the pre- and post-edge lines of the edge
kernel's block (``edge_block_lines``), then, over the white-line and fit windows only,
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

# voxels per block: the ~60 rows of 1024 voxels (float32: 240 kB) stay in L2; 5 % faster
# than 512 per voxel (per-block set-up: line arrays, accumulators, weights)
_BLOCK = 1024


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
    """Intercept and slope of each voxel's least-squares line over rows ``first ..``: the
    edge kernel's lines, the same bits (one rounding per row, in row order), for a pass
    without its block (the fused pass takes them from it)."""
    a = np.zeros(m)
    b = np.zeros(m)
    for i in range(projector.shape[1]):
        c0 = projector[0, i]
        c1 = projector[1, i]
        row = mu[first + i, v0:v0 + m]
        for v in range(m):
            val = np.float64(row[v])
            a[v] = _edge_numba._fma(c0, val, a[v])
            b[v] = _edge_numba._fma(c1, val, b[v])
    return a, b


@njit(fastmath=False, cache=True, nogil=True)
def _mask(v0, m, valid, has_wl, k, out_wl, out_h, out_frac, out_r):  # pragma: no cover - compiled
    """NaN in every map where the edge mask applies, voxels ``v0 .. v0 + m``."""
    # views, not out[v0 + v]: a non-negative index lets the loops vectorise (a possibly
    # negative one wraps around and became a scatter)
    ok = valid[v0:v0 + m]
    if has_wl:
        wl = out_wl[v0:v0 + m]
        h = out_h[v0:v0 + m]
        for v in range(m):
            wl[v] = wl[v] if ok[v] else np.nan
            h[v] = h[v] if ok[v] else np.nan
    for i in range(k):
        f = out_frac[i, v0:v0 + m]
        for v in range(m):
            f[v] = f[v] if ok[v] else np.nan
    if k > 0:
        r = out_r[v0:v0 + m]
        for v in range(m):
            r[v] = r[v] if ok[v] else np.nan


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _weights4(coef, j, r, r0, used):  # pragma: no cover - compiled
    """Weights of accumulator ``j`` at rows ``r .. r + 3``; 0 when not ``used`` and for an
    accumulator ``coef`` does not have (fewer than two references)."""
    if j >= coef.shape[0] or not used:
        return 0.0, 0.0, 0.0, 0.0
    c = coef[j]
    i = r - r0
    return c[i], c[i + 1], c[i + 2], c[i + 3]


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _add4(s, ca, cb, cc, cd, na, nb, nc, nd, plain):  # pragma: no cover - compiled
    """``s + ca na + cb nb + cc nc + cd nd`` added in that order, a term of weight 0
    skipped (no 0 * inf = NaN from a row the accumulator does not use); ``plain``: no
    weight is 0 (no selects)."""
    if plain:
        return s + ca * na + cb * nb + cc * nc + cd * nd
    s = s + ca * na if ca != 0.0 else s
    s = s + cb * nb if cb != 0.0 else s
    s = s + cc * nc if cc != 0.0 else s
    return s + cd * nd if cd != 0.0 else s


@njit(fastmath=False, cache=True, nogil=True)
def _plain(coef, r, r0, f0, f1, n_cubic):  # pragma: no cover - compiled
    """Rows ``r .. r + 3`` all in F with no weight 0 among the references' and the first
    ``n_cubic`` accumulators'."""
    if r < f0 or r + 4 > f1:
        return False
    for j in range(coef.shape[0]):
        if j < n_cubic or j >= 4:
            for i in range(4):
                if coef[j, r - r0 + i] == 0.0:
                    return False
    return True


# Four rows per sweep over the block: the accumulators are loaded and stored once per four
# rows rather than once per row, and norm never goes through memory. Each accumulator still
# adds its rows in row order, with the same roundings as row by row (same numbers).
@njit(fastmath=False, cache=True, nogil=True, error_model="numpy", inline="always")
def _rows4(mu, v0, m, r, r0, f0, f1, x, coef, with_wl, plain, a_pre, b_pre, jump, slope, acc, yy):  # pragma: no cover
    """Rows ``r .. r + 3`` of ``norm`` into ``acc`` (6, m) and ``yy``.

    ``with_wl`` false: rows outside the white-line window (its accumulators untouched).
    A weight of 0 (outside a window) leaves its accumulator as it is; ``plain``: all four
    rows in F, no weight 0 (the same sums without selects).
    """
    k = coef.shape[0] - 4
    ra = r
    rb = r + 1
    rc = r + 2
    rd = r + 3
    xa, xb, xc, xd = x[ra], x[rb], x[rc], x[rd]
    mu_a = mu[ra, v0:v0 + m]
    mu_b = mu[rb, v0:v0 + m]
    mu_c = mu[rc, v0:v0 + m]
    mu_d = mu[rd, v0:v0 + m]
    ya = f0 <= ra < f1
    yb = f0 <= rb < f1
    yc = f0 <= rc < f1
    yd = f0 <= rd < f1
    g0a, g0b, g0c, g0d = _weights4(coef, 4, r, r0, True)
    g1a, g1b, g1c, g1d = _weights4(coef, 5, r, r0, True)
    # the cubic's weights (all 0 outside the white-line window: not used there)
    c0a, c0b, c0c, c0d = _weights4(coef, 0, r, r0, with_wl)
    c1a, c1b, c1c, c1d = _weights4(coef, 1, r, r0, with_wl)
    c2a, c2b, c2c, c2d = _weights4(coef, 2, r, r0, with_wl)
    c3a, c3b, c3c, c3d = _weights4(coef, 3, r, r0, with_wl)
    p0 = acc[0]
    p1 = acc[1]
    p2 = acc[2]
    p3 = acc[3]
    ref0 = acc[4]
    ref1 = acc[5]
    for v in range(m):
        pa = a_pre[v]
        pb = b_pre[v]
        jv = jump[v]
        sv = slope[v]
        na = (np.float64(mu_a[v]) - (pa + pb * xa)) / (jv + sv * xa)
        nb = (np.float64(mu_b[v]) - (pa + pb * xb)) / (jv + sv * xb)
        nc = (np.float64(mu_c[v]) - (pa + pb * xc)) / (jv + sv * xc)
        nd = (np.float64(mu_d[v]) - (pa + pb * xd)) / (jv + sv * xd)
        s = yy[v]
        if plain:
            s = s + na * na + nb * nb + nc * nc + nd * nd
        else:
            s = s + na * na if ya else s
            s = s + nb * nb if yb else s
            s = s + nc * nc if yc else s
            s = s + nd * nd if yd else s
        yy[v] = s
        if k > 0 or not plain:
            ref0[v] = _add4(ref0[v], g0a, g0b, g0c, g0d, na, nb, nc, nd, plain)
        if k > 1 or not plain:
            ref1[v] = _add4(ref1[v], g1a, g1b, g1c, g1d, na, nb, nc, nd, plain)
        if with_wl:
            p0[v] = _add4(p0[v], c0a, c0b, c0c, c0d, na, nb, nc, nd, plain)
            p1[v] = _add4(p1[v], c1a, c1b, c1c, c1d, na, nb, nc, nd, plain)
            p2[v] = _add4(p2[v], c2a, c2b, c2c, c2d, na, nb, nc, nd, plain)
            p3[v] = _add4(p3[v], c3a, c3b, c3c, c3d, na, nb, nc, nd, plain)


@njit(fastmath=False, cache=True, nogil=True, error_model="numpy")
def _accumulate_fused(mu, v0, m, r0, r1, w0, w1, f0, f1, x, coef, a_pre, b_pre, jump, slope, acc, yy):  # pragma: no cover
    """``acc`` (6, m): the cubic's coefficients and ``R norm`` of at most two references
    (k < 2: the unused rows stay 0), ``yy`` = Σ_F norm², over rows ``r0 .. r1``."""
    r = r0
    while r < r1:
        in_w = w0 <= r < w1
        # a run of rows on one side of the white-line window's edges
        stop = min(r1, w1) if in_w else (min(r1, w0) if r < w0 else r1)
        nr = min(4, stop - r)
        if nr < 4:
            # a run's last rows one by one (a sweep would do four rows' work for them; the
            # same sums: each accumulator adds its rows in row order either way)
            _accumulate(mu, v0, m, r, r + nr, f0, f1, x, coef[:, r - r0:], a_pre, b_pre, jump, slope, acc, yy)
        elif _plain(coef, r, r0, f0, f1, 4 if in_w else 0):
            if in_w:
                _rows4(mu, v0, m, r, r0, f0, f1, x, coef, True, True, a_pre, b_pre, jump, slope, acc, yy)
            else:
                _rows4(mu, v0, m, r, r0, f0, f1, x, coef, False, True, a_pre, b_pre, jump, slope, acc, yy)
        elif in_w:
            _rows4(mu, v0, m, r, r0, f0, f1, x, coef, True, False, a_pre, b_pre, jump, slope, acc, yy)
        else:
            _rows4(mu, v0, m, r, r0, f0, f1, x, coef, False, False, a_pre, b_pre, jump, slope, acc, yy)
        r += nr


@njit(fastmath=False, cache=True, nogil=True, error_model="numpy")
def _accumulate(mu, v0, m, r0, r1, f0, f1, x, coef, a_pre, b_pre, jump, slope, acc, yy):  # pragma: no cover
    """``acc[:4 + k]`` (of shape (4 + k or more, m)) += ``coef @ norm`` and ``yy`` += Σ_F norm²,
    row by row (any k)."""
    n_acc = coef.shape[0]
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


@njit(fastmath=False, cache=True, nogil=True, error_model="numpy")
def _lcf_two(b0, b1, yy, sup_a, sup_c, gram, frac0, frac1, rfactor):  # pragma: no cover - compiled
    """Two references: :func:`_lcf_any`'s supports {0}, {1}, {0, 1} (``lcf_supports``'
    order) and operations, per voxel in registers."""
    a0 = sup_a[0, 0, 0]
    c0 = sup_c[0, 0]
    a1 = sup_a[1, 0, 0]
    c1 = sup_c[1, 0]
    a00, a01, a10, a11 = sup_a[2, 0, 0], sup_a[2, 0, 1], sup_a[2, 1, 0], sup_a[2, 1, 1]
    c20, c21 = sup_c[2, 0], sup_c[2, 1]
    g00, g01, g10, g11 = gram[0, 0], gram[0, 1], gram[1, 0], gram[1, 1]
    for v in range(b0.shape[0]):
        p = b0[v]
        q = b1[v]
        y = yy[v]
        best = np.inf
        w0 = np.nan
        w1 = np.nan
        # {0}
        u = c0 + a0 * p
        f = y - 2.0 * u * p
        f = f + u * g00 * u
        ok = u >= 0.0 and f < best
        best = f if ok else best
        w0 = u if ok else w0
        w1 = 0.0 if ok else w1
        # {1}
        u = c1 + a1 * q
        f = y - 2.0 * u * q
        f = f + u * g11 * u
        ok = u >= 0.0 and f < best
        best = f if ok else best
        w0 = 0.0 if ok else w0
        w1 = u if ok else w1
        # {0, 1}
        u = (c20 + a00 * p) + a01 * q
        t = (c21 + a10 * p) + a11 * q
        f = y - 2.0 * u * p
        f = f + u * g00 * u
        f = f + u * g01 * t
        f = f - 2.0 * t * q
        f = f + t * g10 * u
        f = f + t * g11 * t
        ok = u >= 0.0 and t >= 0.0 and f < best
        best = f if ok else best
        w0 = u if ok else w0
        w1 = t if ok else w1
        frac0[v] = w0
        frac1[v] = w1
        # no finite candidate: a norm that is not finite on F (zero step)
        rfactor[v] = max(best, 0.0) / y if best < np.inf else np.nan


@njit(fastmath=False, cache=True, nogil=True, error_model="numpy")
def _lcf_any(v0, m, acc, yy, sup_idx, sup_n, sup_a, sup_c, gram, out_frac, out_r):  # pragma: no cover
    """Any number of references: every support, voxels inner (branch-free selects)."""
    k = sup_idx.shape[1]
    n_sup = sup_n.shape[0]
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
    for i in range(k):
        out = out_frac[i, v0:v0 + m]
        for v in range(m):
            out[v] = best_w[i, v]
    out = out_r[v0:v0 + m]
    for v in range(m):
        # no finite candidate: a norm that is not finite on F (zero step)
        out[v] = max(best[v], 0.0) / yy[v] if best[v] < np.inf else np.nan


# error_model="numpy": a zero divisor gives inf/NaN (masked later) instead of a branch
# that raises, which kept the division loop from vectorising
@njit(fastmath=False, cache=True, nogil=True, error_model="numpy")
def spectral_block(mu, v0, m, valid, a_pre, b_pre, a_post, b_post, x,
                   coef, r0, w0, w1, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
                   out_wl, out_h, out_frac, out_r):  # pragma: no cover - compiled
    """The maps of voxels ``v0 .. v0 + m`` (one block), given their pre- and post-edge
    lines ``a + b x`` (length ``m``).

    ``coef`` (4 + k, n): per row ``r0 + j`` of the windows, the white-line projector's
    column (rows 0-3, zero outside W or without a white line) and the references'
    values (rows 4.., zero outside F); W is rows ``w0 .. w1``, F rows ``f0 .. f1``.
    """
    k = sup_idx.shape[1]
    jump = a_post - a_pre
    slope = b_post - b_pre
    # only the runs of pieces holding a valid voxel: the background around and between the
    # particles has NaN maps whatever its sums (a rod at 272³: 73 % of the voxels were in
    # blocks with a valid voxel, 50 % are in such pieces; 46 % are valid). Voxels are
    # independent, so every computed value is the one a whole-block sweep gives.
    s = _next_run(valid, v0, m, 0)
    while s < m:
        e = _run_end(valid, v0, m, s)
        _run_maps(mu, v0 + s, e - s, a_pre[s:e], b_pre[s:e], jump[s:e], slope[s:e], x,
                  coef, r0, w0, w1, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
                  out_wl, out_h, out_frac, out_r)
        s = _next_run(valid, v0, m, e + _PIECE)   # the piece at e holds none
    _mask(v0, m, valid, has_wl, k, out_wl, out_h, out_frac, out_r)


#: Voxels per piece of a block whose maps are computed or skipped together: short enough to
#: skip the background between a particle's rows, long enough for the loops to vectorise.
_PIECE = 16


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _piece_has_valid(valid, v0, m, s):  # pragma: no cover - compiled
    found = False
    for v in range(s, min(s + _PIECE, m)):
        found = found or valid[v0 + v]
    return found


@njit(fastmath=False, cache=True, nogil=True)
def _next_run(valid, v0, m, s):  # pragma: no cover - compiled
    """The start of the first piece from ``s`` on that holds a valid voxel (``m``: none)."""
    while s < m and not _piece_has_valid(valid, v0, m, s):
        s += _PIECE
    return min(s, m)


@njit(fastmath=False, cache=True, nogil=True)
def _run_end(valid, v0, m, s):  # pragma: no cover - compiled
    """The end of the run of pieces from ``s`` on that each hold a valid voxel."""
    while s < m and _piece_has_valid(valid, v0, m, s):
        s += _PIECE
    return min(s, m)


@njit(fastmath=False, cache=True, nogil=True, error_model="numpy")
def _run_maps(mu, v0, m, a_pre, b_pre, jump, slope, x,
              coef, r0, w0, w1, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
              out_wl, out_h, out_frac, out_r):  # pragma: no cover - compiled
    """The maps of voxels ``v0 .. v0 + m`` (masked ones too), their lines given (length ``m``)."""
    k = sup_idx.shape[1]
    r1 = min(r0 + coef.shape[1], mu.shape[0])
    yy = np.zeros(m)
    if k <= 2:
        acc = np.zeros((6, m))
        _accumulate_fused(mu, v0, m, r0, r1, w0, w1, f0, f1, x, coef, a_pre, b_pre, jump, slope, acc, yy)
    else:
        acc = np.zeros((coef.shape[0], m))
        _accumulate(mu, v0, m, r0, r1, f0, f1, x, coef, a_pre, b_pre, jump, slope, acc, yy)
    if has_wl:
        wl = out_wl[v0:v0 + m]
        h = out_h[v0:v0 + m]
        for v in range(m):
            t, height = cubic_maximum(acc[0, v], acc[1, v], acc[2, v], acc[3, v])
            wl[v] = w_c + w_h * t
            h[v] = height
    if k == 2:
        _lcf_two(acc[4], acc[5], yy, sup_a, sup_c, gram, out_frac[0, v0:v0 + m], out_frac[1, v0:v0 + m],
                 out_r[v0:v0 + m])
    elif k > 0:
        _lcf_any(v0, m, acc, yy, sup_idx, sup_n, sup_a, sup_c, gram, out_frac, out_r)


@njit(parallel=True, fastmath=False, cache=True, nogil=True, error_model="numpy")
def spectral_pass(mu, valid, p_pre, pre0, p_post, post0, x,
                  coef, r0, w0, w1, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
                  out_wl, out_h, out_frac, out_r):  # pragma: no cover - compiled
    """The maps of every voxel of ``mu`` (n_energy, n), given the edge validity."""
    n = mu.shape[1]
    for ib in prange((n + _BLOCK - 1) // _BLOCK):
        v0 = ib * _BLOCK
        m = min(v0 + _BLOCK, n) - v0
        a_pre, b_pre = _line(mu, v0, m, p_pre, pre0)
        a_post, b_post = _line(mu, v0, m, p_post, post0)
        spectral_block(mu, v0, m, valid, a_pre, b_pre, a_post, b_post, x,
                       coef, r0, w0, w1, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
                       out_wl, out_h, out_frac, out_r)


# error_model numpy: the inlined edge block's zero steps as in _edge_numba.edge_pass
@njit(parallel=True, fastmath=False, cache=True, nogil=True, error_model="numpy")
def fused_pass(mu, p_pre, pre0, p_post, post0, x, e, s0, s1, min_jump, snr,
               edge, jump, sigma, valid,
               coef, r0, w0, w1, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
               out_wl, out_h, out_frac, out_r):  # pragma: no cover - compiled
    """The edge pass and the spectral maps block by block, in one sweep over ``mu``."""
    n = mu.shape[1]
    for ib in prange((n + _BLOCK - 1) // _BLOCK):
        v0 = ib * _BLOCK
        m = min(v0 + _BLOCK, n) - v0
        # the edge kernel's own block (same arithmetic, same edge results), then the maps
        # from its lines and the same rows while they are still in L2
        a_pre = np.zeros(m)
        b_pre = np.zeros(m)
        a_post = np.zeros(m)
        b_post = np.zeros(m)
        _edge_numba.edge_block_lines(mu, v0, m, p_pre, pre0, p_post, post0, x, e, s0, s1, min_jump, snr,
                                     edge, jump, sigma, valid, a_pre, b_pre, a_post, b_post)
        spectral_block(mu, v0, m, valid, a_pre, b_pre, a_post, b_post, x,
                       coef, r0, w0, w1, f0, f1, has_wl, w_c, w_h, sup_idx, sup_n, sup_a, sup_c, gram,
                       out_wl, out_h, out_frac, out_r)
