"""Single-pass numba kernel of :class:`txmdb.analysis.edge.EdgeKernel` (private).

One compiled pass over blocks of voxels (``prange``): per block the ``n_energy`` rows of
``_BLOCK`` voxels stay in L1/L2 while the pre/post lines, sigma_pre, the finiteness test,
the jump tests, the crossing search and the interpolation are done, all in float64. The
arithmetic is the numpy path's, term for term (no fast-math, no FMA contraction):

- lines ``a + b x`` from the float64 projector rows of the pre- and post-edge windows
  (summed in row order: the numpy path's BLAS product may round the last bit otherwise);
- ``sigma_pre = sqrt(sum((mu - (x b + a))**2) / n_pre)``;
- ``J = a_post - a_pre``; masks ``J >= min_jump``, ``sigma <= 0 or J >= snr sigma``,
  every value of the spectrum finite;
- crossing search on rows ``k0-1 .. stop-1``: where the step ``J + slope x`` is positive at
  both ends of that range, ``norm >= 0.5`` is ``mu - mid(x) >= 0``; otherwise the
  literal ``q = (mu - mid) / step``, rise where ``q[j+1] >= 0`` and ``q[j] < 0``;
- ``E = E[k-1] - q0 / (q1 - q0) * (E[k] - E[k-1])`` with ``q = (mu - mid) / step``.

Compiled on first use and cached on disk (``cache=True``); float32 and float64 input
compile separately.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

# voxels per block: 60 rows x 512 float32 = 120 kB, in L2 with the per-voxel temporaries
_BLOCK = 512


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (llvm.fma): the numpy path's BLAS products accumulate so."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


# error_model="numpy" here and wherever edge_block_lines is inlined: a step of zero at a row
# (a flat spectrum, jump 0 where min_jump allows it) gives inf/NaN and no crossing (masked), not a
# ZeroDivisionError raised inside a parallel region (numba then returns with an exception set)
@njit(parallel=True, fastmath=False, cache=True, nogil=True, error_model="numpy")
def edge_pass(mu, p_pre, pre0, p_post, post0, x, e, s0, s1, min_jump, snr,
              edge, jump, sigma, valid):  # pragma: no cover - compiled
    n = mu.shape[1]
    for ib in prange((n + _BLOCK - 1) // _BLOCK):
        v0 = ib * _BLOCK
        edge_block(mu, v0, min(v0 + _BLOCK, n) - v0, p_pre, pre0, p_post, post0, x, e, s0, s1,
                   min_jump, snr, edge, jump, sigma, valid)


# A function of its own so that a fused pass (txmdb.analysis._spectral_numba) can run it on
# a block and then read the same block again while it is still in cache.
@njit(fastmath=False, cache=True, nogil=True, error_model="numpy")
def edge_block(mu, v0, m, p_pre, pre0, p_post, post0, x, e, s0, s1, min_jump, snr,
               edge, jump, sigma, valid):  # pragma: no cover - compiled
    """The edge pass of voxels ``v0 .. v0 + m`` (one block)."""
    edge_block_lines(mu, v0, m, p_pre, pre0, p_post, post0, x, e, s0, s1, min_jump, snr,
                     edge, jump, sigma, valid, np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m))


# inline: edge_block is this function as it was before the lines were handed out
@njit(fastmath=False, cache=True, nogil=True, inline="always", error_model="numpy")
def edge_block_lines(mu, v0, m, p_pre, pre0, p_post, post0, x, e, s0, s1, min_jump, snr,
                     edge, jump, sigma, valid, a_pre, b_pre, a_post, b_post):  # pragma: no cover - compiled
    """:func:`edge_block`, its lines left in ``a_pre, b_pre, a_post, b_post`` (zeros on entry,
    length ``m``) for the spectral maps of the same block."""
    n_e = mu.shape[0]
    n_pre = p_pre.shape[1]
    n_post = p_post.shape[1]
    x_lo = x[s0]
    x_hi = x[s1 - 1]
    fin = np.zeros(m)
    # one sweep over all rows, in row order (the order of the numpy path's BLAS
    # products): finiteness (v - v is 0 for finite v, NaN otherwise) and the two
    # line fits
    for i in range(n_e):
        ip = i - pre0
        iq = i - post0
        in_pre = 0 <= ip < n_pre
        in_post = 0 <= iq < n_post
        row = mu[i, v0:v0 + m]
        if in_pre:
            c0 = p_pre[0, ip]
            c1 = p_pre[1, ip]
            for v in range(m):
                val = np.float64(row[v])
                fin[v] += val - val
                a_pre[v] = _fma(c0, val, a_pre[v])
                b_pre[v] = _fma(c1, val, b_pre[v])
        if in_post:
            c0 = p_post[0, iq]
            c1 = p_post[1, iq]
            for v in range(m):
                val = np.float64(row[v])
                if not in_pre:
                    fin[v] += val - val
                a_post[v] = _fma(c0, val, a_post[v])
                b_post[v] = _fma(c1, val, b_post[v])
        if not (in_pre or in_post):
            for v in range(m):
                val = np.float64(row[v])
                fin[v] += val - val
    # sigma_pre from explicit residuals
    ss = np.zeros(m)
    for ip in range(n_pre):
        i = pre0 + ip
        xi = x[i]
        row = mu[i, v0:v0 + m]
        for v in range(m):
            r = np.float64(row[v]) - (xi * b_pre[v] + a_pre[v])
            ss[v] += r * r
    mid_a = np.empty(m)
    mid_b = np.empty(m)
    slope = np.empty(m)
    ok = np.empty(m, dtype=np.bool_)
    for v in range(m):
        s = np.sqrt(ss[v] / n_pre)
        j = a_post[v] - a_pre[v]
        sigma[v0 + v] = s
        jump[v0 + v] = j
        ok[v] = (j >= min_jump) and ((s <= 0.0) or (j >= snr * s)) and (fin[v] == 0.0)
        slope[v] = b_post[v] - b_pre[v]
        mid_a[v] = 0.5 * (a_pre[v] + a_post[v])
        mid_b[v] = 0.5 * (b_pre[v] + b_post[v])
    # crossing search, positive-step form, all voxels of the block row by row:
    # first[v] = min over rises j (rows are visited in order; no branches)
    none = n_e
    first = np.full(m, none, dtype=np.int64)
    prev = np.empty(m, dtype=np.bool_)
    xs = x[s0]
    row = mu[s0, v0:v0 + m]
    for v in range(m):
        prev[v] = (np.float64(row[v]) - _fma(xs, mid_b[v], mid_a[v])) >= 0.0
    for r in range(s0 + 1, s1):
        xr = x[r]
        jr = r - 1 - s0
        row = mu[r, v0:v0 + m]
        for v in range(m):
            ab = (np.float64(row[v]) - _fma(xr, mid_b[v], mid_a[v])) >= 0.0
            rise = ab > prev[v]
            first[v] = min(first[v], jr if rise else none)
            prev[v] = ab
    for v in range(m):
        if first[v] == none:
            first[v] = -1
    # per voxel: the literal norm search where the step is not positive, interpolation
    for v in range(m):
        if not ok[v]:
            valid[v0 + v] = False
            edge[v0 + v] = np.nan
            continue
        jv = jump[v0 + v]
        sl = slope[v]
        ma = mid_a[v]
        mb = mid_b[v]
        if not ((jv + sl * x_lo > 0.0) and (jv + sl * x_hi > 0.0)):
            f = -1
            xr = x[s0]
            q_prev = (np.float64(mu[s0, v0 + v]) - _fma(xr, mb, ma)) / _fma(xr, sl, jv)
            for r in range(s0 + 1, s1):
                xr = x[r]
                q = (np.float64(mu[r, v0 + v]) - _fma(xr, mb, ma)) / _fma(xr, sl, jv)
                if q >= 0.0 and q_prev < 0.0:
                    f = r - 1 - s0
                    break
                q_prev = q
            first[v] = f
        k = first[v]
        if k < 0:
            valid[v0 + v] = False
            edge[v0 + v] = np.nan
            continue
        r0 = s0 + k
        x0 = x[r0]
        x1 = x[r0 + 1]
        q0 = (np.float64(mu[r0, v0 + v]) - (ma + mb * x0)) / (jv + sl * x0)
        q1 = (np.float64(mu[r0 + 1, v0 + v]) - (ma + mb * x1)) / (jv + sl * x1)
        e0 = e[r0]
        edge[v0 + v] = e0 - q0 / (q1 - q0) * (e[r0 + 1] - e0)
        valid[v0 + v] = True
