"""Compiled separable stencil of :mod:`txmdb.analysis.registration` (private).

``out[p, i, q] = sum_k w_k a[p, clamp(i + base + o_k), q]`` along the middle axis of a
3-D view ``(P, N, Q)`` (any axis of a 2-D or 3-D array, reshaped), the index clamped to
``[0, N - 1]``: the same numbers as the numpy path (``np.pad(mode="edge")`` then
``out = t_0 w_0; out += t_k w_k``), term for term in the array's own dtype, so a shifted
or registered window is bit-identical on either path (no fast-math, no FMA contraction).
No padded copy and no temporary per tap: the numpy path's pad and per-tap arrays were
most of the registration estimate's translations and of the registered read.

Compiled on first use and cached on disk (``cache=True``); ``nogil``, so the estimate's
per-energy threads and the analysis' reader thread run it in parallel with other work.
"""

from __future__ import annotations

from numba import njit
from numpy import uintp


@njit(cache=True, nogil=True)
def shift_axis(a, out, base, offsets, weights):  # pragma: no cover - compiled
    """Stencil along axis 1 of ``a`` (P, N, Q) into ``out`` (P, M, Q), clamped taps."""
    n_p, n, n_q = a.shape
    m = out.shape[1]
    k_taps = offsets.shape[0]
    w0 = weights[0]
    if n_q == 1:
        # the last axis: tap by tap along each row, the clamped ends apart, with unsigned
        # indices so that the interior loop vectorises (a loop over q of length 1 per tap,
        # or an index that might be negative, did not)
        for p in range(n_p):
            for k in range(k_taps):
                o = base + offsets[k]
                w = weights[k]
                lo = min(max(-o, 0), m)
                hi = max(min(n - o, m), lo)
                first, last = a[p, 0, 0] * w, a[p, n - 1, 0] * w
                i0, j0, span = uintp(lo), uintp(lo + o), uintp(hi - lo)
                if k == 0:
                    for i in range(lo):
                        out[p, i, 0] = first
                    for t in range(span):
                        out[p, i0 + t, 0] = a[p, j0 + t, 0] * w
                    for i in range(hi, m):
                        out[p, i, 0] = last
                else:
                    for i in range(lo):
                        out[p, i, 0] += first
                    for t in range(span):
                        out[p, i0 + t, 0] += a[p, j0 + t, 0] * w
                    for i in range(hi, m):
                        out[p, i, 0] += last
        return
    for p in range(n_p):
        for i in range(m):
            j = min(max(i + base + offsets[0], 0), n - 1)
            for q in range(n_q):
                out[p, i, q] = a[p, j, q] * w0
            for k in range(1, k_taps):
                j = min(max(i + base + offsets[k], 0), n - 1)
                w = weights[k]
                for q in range(n_q):
                    out[p, i, q] += a[p, j, q] * w
