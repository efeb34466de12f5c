"""Compiled separable stencil of :mod:`txmdb.analysis.registration` (private).

Along each axis in turn, ``x[i] = sum_k w_k x[clamp(i + base + o_k)]``, the index clamped
to the array: the same numbers as the numpy path (``np.pad(mode="edge")`` then
``out = t_0 w_0; out += t_k w_k`` axis by axis), term for term in the array's own dtype,
so a shifted or registered window is bit-identical on either path (no fast-math, no FMA
contraction). One sweep, plane by plane and row by row, with no padded copy, no
temporary per tap and no intermediate volume: the numpy path's pads, per-tap arrays and
three full passes were most of the estimate's translations and of the registered read.

Compiled on first use and cached on disk (``cache=True``); ``nogil``, so the estimate's
per-energy threads and the analysis' reader thread run it in parallel with other work.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy import uintp


@njit(cache=True, nogil=True, inline="always")
def _line(src, dst, base, offsets, weights):  # pragma: no cover - compiled
    """``dst[i] = sum_k w_k src[clamp(i + base + o_k)]`` on 1-D arrays (the last axis of
    :func:`shift3`, one row)."""
    n, m = src.shape[0], dst.shape[0]
    for k in range(offsets.shape[0]):
        o = base + offsets[k]
        w = weights[k]
        lo = min(max(-o, 0), m)
        hi = max(min(n - o, m), lo)
        first, last = src[0] * w, src[n - 1] * w
        i0, j0, span = uintp(lo), uintp(lo + o), uintp(hi - lo)
        if k == 0:
            for i in range(lo):
                dst[i] = first
            for t in range(span):
                dst[i0 + t] = src[j0 + t] * w
            for i in range(hi, m):
                dst[i] = last
        else:
            for i in range(lo):
                dst[i] += first
            for t in range(span):
                dst[i0 + t] += src[j0 + t] * w
            for i in range(hi, m):
                dst[i] += last


@njit(cache=True, nogil=True, inline="always")
def _rows(src, dst, base, offsets, weights, i):  # pragma: no cover - compiled
    """``dst[:] = sum_k w_k src[clamp(i + base + o_k), :]`` (one output row or plane of the
    first axis of a 2-D ``src``)."""
    n = src.shape[0]
    j = min(max(i + base + offsets[0], 0), n - 1)
    w = weights[0]
    for q in range(dst.shape[0]):
        dst[q] = src[j, q] * w
    for k in range(1, offsets.shape[0]):
        j = min(max(i + base + offsets[k], 0), n - 1)
        w = weights[k]
        for q in range(dst.shape[0]):
            dst[q] += src[j, q] * w


@njit(cache=True, nogil=True, inline="always")
def _plane(src, dst, base, offsets, weights, i):  # pragma: no cover - compiled
    """:func:`_rows` for the first axis of :func:`shift3` (one output plane): with 2 or 4
    taps (linear, cubic) in one pass, each value summed term by term in the tap order
    (``((t_0 w_0 + t_1 w_1) + t_2 w_2) + t_3 w_3``: :func:`_rows`' numbers) instead of one
    pass per tap over the plane buffer. Small: shift3 on the estimate's cubic fine window
    -5 %, a linear pass over 60 cold 16×273×273 blocks -1.5 % (the plane passes alone -14 %
    in cache); the same fusion for the rows of the second axis was slower."""
    n = src.shape[0]
    nk = offsets.shape[0]
    if nk == 2:
        j0 = min(max(i + base + offsets[0], 0), n - 1)
        j1 = min(max(i + base + offsets[1], 0), n - 1)
        w0, w1 = weights[0], weights[1]
        for q in range(dst.shape[0]):
            dst[q] = src[j0, q] * w0 + src[j1, q] * w1
    elif nk == 4:
        j0 = min(max(i + base + offsets[0], 0), n - 1)
        j1 = min(max(i + base + offsets[1], 0), n - 1)
        j2 = min(max(i + base + offsets[2], 0), n - 1)
        j3 = min(max(i + base + offsets[3], 0), n - 1)
        w0, w1, w2, w3 = weights[0], weights[1], weights[2], weights[3]
        for q in range(dst.shape[0]):
            dst[q] = ((src[j0, q] * w0 + src[j1, q] * w1) + src[j2, q] * w2) + src[j3, q] * w3
    else:
        _rows(src, dst, base, offsets, weights, i)


@njit(cache=True, nogil=True)
def shift3(a, out, b0, o0, w0, b1, o1, w1, b2, o2, w2):  # pragma: no cover - compiled
    """The three axis stencils of a 3-D ``a`` into ``out`` in one sweep, plane by plane:
    each output plane's first-axis stencil into a plane buffer, each of its rows'
    second-axis stencil into a row buffer, then the last axis into ``out``. Every value
    is the one the three separate passes compute (the same operations on the same
    inputs), without writing and re-reading two whole intermediate volumes."""
    n0, n1, n2 = a.shape
    m0, m1, m2 = out.shape
    plane = np.empty(n1 * n2, a.dtype)
    row = np.empty(n2, a.dtype)
    flat = a.reshape(n0, n1 * n2)
    sheet = plane.reshape(n1, n2)
    for i in range(m0):
        _plane(flat, plane, b0, o0, w0, i)
        for j in range(m1):
            _rows(sheet, row, b1, o1, w1, j)
            _line(row, out[i, j], b2, o2, w2)


@njit(cache=True, nogil=True)
def smooth_axis(a, out, fw):  # pragma: no cover - compiled
    """Symmetric correlation along axis 1 of ``a`` (P, N, Q) into ``out``, nearest-edge
    borders: ``scipy.ndimage.correlate1d``'s symmetric path term for term (float64
    accumulation ``x_i w_0``, then ``+= (x_{i-d} + x_{i+d}) w_d`` from the farthest ``d``
    inwards, rounded to ``out``'s dtype once), so a Gaussian filter gives scipy's numbers
    bit for bit; vectorised across the voxels of a row instead of along the line."""
    n_p, n, n_q = a.shape
    r = fw.shape[0] - 1
    if n_q == 1:
        # the last axis: a tile of ``t`` lines at a time, copied out as the columns of
        # ``ext`` (edges extended), so that the sums run across the lines like the other
        # axes' (2x faster than one line at a time at σ = 4; the same operations per value).
        # 512 lines per tile: the fine and coarse windows' last axes 22-34 % faster than 32
        # (the loop over a tile's lines amortised; 1024 and more slower again)
        t = 512
        ext = np.empty((n + 2 * r, t), np.float64)
        acc = np.empty(t, np.float64)
        for p0 in range(0, n_p, t):
            m = min(t, n_p - p0)
            for i in range(n + 2 * r):
                j = min(max(i - r, 0), n - 1)
                for q in range(m):
                    ext[i, q] = a[p0 + q, j, 0]
            for i in range(n):
                w = fw[0]
                for q in range(m):
                    acc[q] = ext[r + i, q] * w
                for d in range(r, 0, -1):
                    w = fw[d]
                    lo, hi = ext[r + i - d], ext[r + i + d]
                    for q in range(m):
                        acc[q] += (lo[q] + hi[q]) * w
                for q in range(m):
                    out[p0 + q, i, 0] = acc[q]
        return
    acc = np.empty(n_q, np.float64)
    for p in range(n_p):
        for i in range(n):
            w = fw[0]
            for q in range(n_q):
                acc[q] = np.float64(a[p, i, q]) * w
            for d in range(r, 0, -1):
                w = fw[d]
                jl, jh = max(i - d, 0), min(i + d, n - 1)
                for q in range(n_q):
                    acc[q] += (np.float64(a[p, jl, q]) + np.float64(a[p, jh, q])) * w
            for q in range(n_q):
                out[p, i, q] = acc[q]


@njit(cache=True, nogil=True)
def block_mean(a, g0, g1, g2, out):  # pragma: no cover - compiled
    """Mean of each ``g0 × g1 × g2`` block of ``a`` into ``out``, in one pass and in the
    order of the numpy path (``_bin``: float32 sums along the last axis, then the middle,
    then the first, each sequential from its first term; then one division). Returns
    False, leaving ``out`` partly written, at the first value that is not finite (the
    numpy path then counts the finite ones)."""
    n0, n1, n2 = out.shape
    inv = np.float32(g0 * g1 * g2)
    for z in range(n0):
        for y in range(n1):
            for x in range(n2):
                zsum = np.float32(0.0)
                for k in range(g0):
                    ysum = np.float32(0.0)
                    for j in range(g1):
                        base = a[z * g0 + k, y * g1 + j]
                        row = base[x * g2]
                        for i in range(1, g2):
                            row += base[x * g2 + i]
                        ysum = row if j == 0 else ysum + row
                    zsum = ysum if k == 0 else zsum + ysum
                if not np.isfinite(zsum):
                    return False
                out[z, y, x] = zsum / inv
    return True


@njit(cache=True, nogil=True)
def loo_median(v, mid, j, out):  # pragma: no cover - compiled
    """Leave-one-out median of each voxel from the order statistics ``mid`` (rows
    ``k, k+1 [, k+2]`` of all energies) and the left-out energy's values ``v`` (1-D):
    the numbers of ``0.5 * (where(v <= mid[0], mid[1], mid[0]) + where(v <= mid[j],
    mid[j+1], mid[j]))`` in one pass, without its five temporaries."""
    half = np.float32(0.5)
    for i in range(v.shape[0]):
        x = v[i]
        lo = mid[1, i] if x <= mid[0, i] else mid[0, i]
        hi = mid[j + 1, i] if x <= mid[j, i] else mid[j, i]
        out[i] = half * (lo + hi)


@njit(cache=True, nogil=True)
def fit_residual(y, ms, w, b, scale, out):  # pragma: no cover - compiled
    """``out = (y - (0 + w_0 m_0 + w_1 m_1 + …) - b) / scale`` voxel by voxel, float32, in
    numpy's order of operations (``y - sum(w * m for …) - b``, then the division): the
    fit's residual in one pass over its 3-D arrays (``ms``: one more leading axis)."""
    n0, n1, n2 = out.shape
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                t = np.float32(0.0) + w[0] * ms[0, i, j, k]
                for q in range(1, ms.shape[0]):
                    t = t + w[q] * ms[q, i, j, k]
                out[i, j, k] = ((y[i, j, k] - t) - b) / scale


@njit(cache=True, nogil=True)
def pattern_free(j, f, c, b, out):  # pragma: no cover - compiled
    """``out = j - c * f - b`` voxel by voxel in float32, in numpy's order of operations
    (``(j - (c * f)) - b``): an energy's image less its fixed pattern and offset in one
    pass instead of three arrays and two temporaries."""
    n0, n1, n2 = out.shape
    for i in range(n0):
        for k in range(n1):
            for q in range(n2):
                out[i, k, q] = (j[i, k, q] - c * f[i, k, q]) - b


@njit(cache=True, nogil=True)
def nan_median_sorted(part, out):  # pragma: no cover - compiled
    """Median of each column of ``part`` (sorted along axis 0, NaN last) over its ``k``
    non-NaN values into ``out`` (left as it is where all are NaN): with every value there,
    ``np.median``'s numbers (the middle one, or the two middle ones' sum halved); with
    some missing, ``0.5 * (lo + hi)`` of the two middle ones, as the numpy path computes."""
    n, m = part.shape
    half, two = np.float32(0.5), np.float32(2.0)
    for j in range(m):
        k = n
        while k > 0 and np.isnan(part[k - 1, j]):
            k -= 1
        if k == 0:
            continue
        lo, hi = (k - 1) // 2, k // 2
        if k < n:
            out[j] = half * (part[lo, j] + part[hi, j])
        elif lo == hi:
            out[j] = part[lo, j]
        else:
            out[j] = (part[lo, j] + part[hi, j]) / two


@njit(cache=True, nogil=True)
def neg_central_differences(c, out, t0):  # pragma: no cover - compiled
    """``-∇c`` inside a one-voxel border, axis by axis, into ``out`` (axis, i, j, k):
    ``-((c[p + e_a] - c[p - e_a]) / 2.0)`` at ``p = (i + t0, j + 1, k + 1)``, the numbers of
    ``-np.gradient(c)[a][1:-1, …]`` (unit spacing). ``t0 = 1``: a 3-D ``c``, three axes;
    ``t0 = 0``: a 2-D image as one plane ``(1, ny, nx)``, its two in-plane axes."""
    m0, m1, m2 = out.shape[1], out.shape[2], out.shape[3]
    for i in range(m0):
        p = i + t0
        for j in range(m1):
            q = j + 1
            for k in range(m2):
                r = k + 1
                if t0 == 1:
                    out[0, i, j, k] = -((c[p + 1, q, r] - c[p - 1, q, r]) / 2.0)
                out[t0, i, j, k] = -((c[p, q + 1, r] - c[p, q - 1, r]) / 2.0)
                out[t0 + 1, i, j, k] = -((c[p, q, r + 1] - c[p, q, r - 1]) / 2.0)


@njit(cache=True, nogil=True)
def columns_as_rows(src, c0, out):  # pragma: no cover - compiled
    """``out[j, i] = src[i, c0 + j]``: columns of ``src`` as contiguous rows, so that numpy
    sorts each one in place along the last axis (sorting along the first axis gathers and
    scatters every column: 1.6x the time; numpy's transposing copy is 1.6x this)."""
    n, m = src.shape[0], out.shape[0]
    for j in range(m):
        c = c0 + j
        for i in range(n):
            out[j, i] = src[i, c]


@njit(cache=True, nogil=True)
def _block_sum(a, lo, n):  # pragma: no cover - compiled
    """numpy's ``pairwise_sum`` of ``a[lo:lo + n]`` for ``n <= 128`` (eight running sums)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True, nogil=True)
def pairwise_sum(a, lo, n):  # pragma: no cover - compiled
    """``np.add.reduce`` of the float64 ``a[lo:lo + n]`` in numpy's order (its
    ``pairwise_sum``: blocks of at most 128 by :func:`_block_sum`, halves rounded to
    multiples of 8 above, left sum plus right sum), so the sums of
    :func:`residual_spreads` are numpy's to the bit. The halving runs on an explicit
    stack: a recursive function loaded from numba's cache crashed on threads."""
    if n <= 128:
        return _block_sum(a, lo, n)
    los = np.empty(64, np.int64)
    ns = np.empty(64, np.int64)
    stage = np.zeros(64, np.int64)
    vals = np.empty(64, np.float64)
    top, nv = 0, 0
    los[0], ns[0] = lo, n
    while top >= 0:
        l, m = los[top], ns[top]
        if m <= 128:
            vals[nv] = _block_sum(a, l, m)
            nv += 1
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        if stage[top] < 2:
            # the left half first, then the right one
            first = stage[top] == 0
            stage[top] += 1
            top += 1
            los[top] = l if first else l + half
            ns[top] = half if first else m - half
            stage[top] = 0
        else:
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
            top -= 1
    return vals[0]


@njit(cache=True, nogil=True)
def _variance(x):  # pragma: no cover - compiled
    """``x.var()`` of a contiguous float64 vector, numpy's operations in numpy's order
    (the mean, then the squared deviations' pairwise sum over ``n``); ``x`` is overwritten."""
    n = x.shape[0]
    mean = pairwise_sum(x, 0, n) / n
    for i in range(n):
        d = x[i] - mean
        x[i] = d * d
    return pairwise_sum(x, 0, n) / n


@njit(cache=True, nogil=True)
def residual_spreads(r, t0, scratch):  # pragma: no cover - compiled
    """``(r.var(), mean over axes of np.gradient(r)[a].var())`` of a 3-D float64 ``r``
    (``t0 = 0``: every axis; ``t0 = 1``: a 2-D image as one plane ``(1, ny, nx)``, its two
    in-plane axes), numpy's numbers bit for bit (``np.gradient``: ``(r[i+1] - r[i-1]) / 2``
    inside, one-sided differences at the ends; variances as :func:`_variance`) without
    the gradient volumes and their temporaries: one ``scratch`` vector of ``r.size``."""
    n0, n1, n2 = r.shape
    m = 0
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                scratch[m] = r[i, j, k]
                m += 1
    var_r = _variance(scratch)
    spread = 0.0
    for axis in range(t0, 3):
        n = r.shape[axis]
        m = 0
        for i in range(n0):
            for j in range(n1):
                for k in range(n2):
                    c = i if axis == 0 else (j if axis == 1 else k)
                    lo = c - 1 if c > 0 else 0
                    hi = c + 1 if c < n - 1 else n - 1
                    if axis == 0:
                        a, b = r[lo, j, k], r[hi, j, k]
                    elif axis == 1:
                        a, b = r[i, lo, k], r[i, hi, k]
                    else:
                        a, b = r[i, j, lo], r[i, j, hi]
                    scratch[m] = (b - a) / 2.0 if hi - lo == 2 else (b - a) / 1.0
                    m += 1
        spread += _variance(scratch)
    return var_r, spread / (3 - t0)



#: lanes of :func:`gram`'s sums (each a sequential float64 sum over every ``GRAM_LANES``-th
#: product); the lanes are then added pairwise, in a fixed tree
GRAM_LANES = 64


@njit(cache=True, nogil=True)
def gram(rows, out):  # pragma: no cover - compiled
    """``out[j, k] = Σ_i rows[j, i] rows[k, i]`` (symmetric), each product and the sums in
    float64 (a float32 product is exact in float64: ~1e-14 relative at 10⁵ terms, against
    ~1e-6 for BLAS' float32 ``A @ A.T``). In a fixed order, no fast-math: the products of
    the first ``m - m % GRAM_LANES`` columns summed sequentially per lane (column
    ``i % GRAM_LANES``), the lanes added pairwise (``(0 + 1), (2 + 3), …`` then the sums of
    those, …), then the last columns' products one by one; so numpy reproduces it bit for bit
    (:func:`txmdb.analysis.registration._normal_equations`). The lanes are independent:
    the loop vectorises without reassociation, 3-5x faster than BLAS' syrk on a fit's 4-8
    rows of ~10⁵ voxels (which packs the long axis for a product of a few rows)."""
    n, m = rows.shape
    w = GRAM_LANES
    mw = m - m % w
    acc = np.empty(w)
    for j in range(n):
        a = rows[j]
        for k in range(j, n):
            b = rows[k]
            acc[:] = 0.0
            for r in range(0, mw, w):
                for lane in range(w):
                    acc[lane] += np.float64(a[r + lane]) * np.float64(b[r + lane])
            h = w
            while h > 1:
                h //= 2
                for lane in range(h):
                    acc[lane] = acc[2 * lane] + acc[2 * lane + 1]
            total = acc[0]
            for i in range(mw, m):
                total += np.float64(a[i]) * np.float64(b[i])
            out[j, k] = total
            out[k, j] = total
