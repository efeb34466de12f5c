"""Compiled passes of the statistics phase (private): particles, binning, gradients.

Each kernel replaces a numpy path of :mod:`txmdb.analysis.particles` or
:mod:`txmdb.analysis.gradient` (kept there for a machine without numba, and as the
reference the tests compare against) and gives the same numbers bit for bit: the same
floating-point operations in the same order — sums run sequentially in voxel (or
vector) order, as ``np.bincount`` adds its weights, and in the numpy path's chunks
(``CHUNK`` voxels of the flat map, each chunk summed from zero and then added to the
total); bins are found by the same right-side binary search as ``np.searchsorted``.
No fast-math, so no operation is fused or reordered.

All walk the maps once or twice without index arrays, and release the GIL, so the
statistics of several maps or binning factors can run in threads.
Compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_DEG = 180.0 / math.pi


@njit(cache=True, nogil=True)
def right_bin(edges, x):
    """``np.searchsorted(edges, x, side="right") - 1`` (NaN sorts last, as in numpy)."""
    if x != x:
        return edges.size - 1
    lo = 0
    hi = edges.size
    while lo < hi:
        mid = (lo + hi) >> 1
        if edges[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@njit(cache=True, nogil=True)
def _clip_bin(edges, x, nb):
    """``right_bin`` clipped to the nb = edges.size - 1 bins (numpy's searchsorted and clip)."""
    b = right_bin(edges, x)
    if b < 0:
        return 0
    if b > nb - 1:
        return nb - 1
    return b


@njit(cache=True, nogil=True)
def _grid_scale(edges):
    """1 / width of the first bin, the guess of :func:`_grid_bin` (0: no guess)."""
    width = edges[1] - edges[0] if edges.size > 1 else 0.0
    return 1.0 / width if width > 0 and np.isfinite(1.0 / width) else 0.0


@njit(cache=True, nogil=True)
def _grid_bin(edges, x, nb, scale):
    """:func:`_clip_bin` for sorted edges that are (mostly) a uniform grid of ``1 / scale``: the
    bin guessed from the grid, then moved until ``edges[b] <= x < edges[b + 1]`` — the same
    bin, in one or two comparisons instead of a binary search."""
    if x != x:
        return nb - 1
    if scale == 0.0:
        return _clip_bin(edges, x, nb)
    guess = (x - edges[0]) * scale
    if guess < 0:
        b = 0
    elif guess >= nb - 1:
        b = nb - 1
    else:
        b = int(guess)
    while b > 0 and edges[b] > x:
        b -= 1
    while b < nb - 1 and edges[b + 1] <= x:
        b += 1
    return b


@njit(cache=True, nogil=True)
def keyed_moments(lab, val, sub, n_sub, n, chunk):
    """Count, sum and squared deviations of ``val`` over the voxels with ``lab > 0``, keyed twice.

    Keying A is ``sub`` (``int(sub[i])``; a single group 0 when ``sub`` is empty), ``n_sub``
    groups; keying B is ``lab * n_sub + A``, ``(n + 1) * n_sub`` groups. The two passes of
    :func:`txmdb.analysis._frames.grouped_moments` (sums, then squared deviations from each
    group's mean), chunk by chunk as it walks the map.

    Returns
    -------
    count_a, mean_a, sq_a, count_b, mean_b, sq_b
        int64 counts, float64 means (NaN for empty groups) and sums of squared deviations.
    """
    na = n_sub
    nb = (n + 1) * n_sub
    count_a = np.zeros(na, np.int64)
    count_b = np.zeros(nb, np.int64)
    no_means = np.zeros(0)
    total_a, total_b = _keyed_sums(lab, val, sub, n_sub, n, chunk, no_means, no_means, count_a, count_b)
    mean_a = np.full(na, np.nan)
    mean_b = np.full(nb, np.nan)
    for k in range(na):
        if count_a[k]:
            mean_a[k] = total_a[k] / count_a[k]
    for k in range(nb):
        if count_b[k]:
            mean_b[k] = total_b[k] / count_b[k]
    sq_a, sq_b = _keyed_sums(lab, val, sub, n_sub, n, chunk, mean_a, mean_b, count_a, count_b)
    return count_a, mean_a, sq_a, count_b, mean_b, sq_b


@njit(cache=True, nogil=True)
def _keyed_sums(lab, val, sub, n_sub, n, chunk, mean_a, mean_b, count_a, count_b):
    """One pass of :func:`keyed_moments`: the sums of the values per group of both keyings
    (and their counts, into ``count_a``/``count_b``) when ``mean_a`` is empty, else the sums of
    their squared deviations from ``mean_a``/``mean_b``; each chunk summed from zero, then added."""
    has_sub = sub.size > 0
    squares = mean_a.size > 0
    na = n_sub
    nb = (n + 1) * n_sub
    total_a = np.zeros(na)
    total_b = np.zeros(nb)
    part_a = np.zeros(na)
    part_b = np.zeros(nb)
    size = lab.size
    for start in range(0, size, chunk):
        part_a[:] = 0.0
        part_b[:] = 0.0
        for i in range(start, min(start + chunk, size)):
            g = lab[i]
            if g != 0:
                v = np.float64(val[i])
                k = int(sub[i]) if has_sub else 0
                kb = g * n_sub + k
                if squares:
                    d = v - mean_a[k]
                    part_a[k] += d * d
                    d = v - mean_b[kb]
                    part_b[kb] += d * d
                else:
                    count_a[k] += 1
                    part_a[k] += v
                    count_b[kb] += 1
                    part_b[kb] += v
        for k in range(na):
            total_a[k] += part_a[k]
        for k in range(nb):
            total_b[k] += part_b[k]
    return total_a, total_b


@njit(cache=True, nogil=True)
def label_histograms(lab, val, edges, n):
    """Counts (n + 1, n_bins) of ``val`` in the bins ``edges`` per label of the voxels with
    ``lab > 0`` (row 0 left empty); out-of-range values in the first or last bin."""
    nb = edges.size - 1
    counts = np.zeros((n + 1, nb), np.int64)
    scale = _grid_scale(edges)
    for i in range(lab.size):
        g = lab[i]
        if g != 0:
            counts[g, _grid_bin(edges, np.float64(val[i]), nb, scale)] += 1
    return counts


@njit(cache=True, nogil=True)
def relabel(labels, lut):
    """``labels[i] = lut[labels[i]]`` in place (flat)."""
    for i in range(labels.size):
        labels[i] = lut[labels[i]]


@njit(cache=True, nogil=True)
def _pairwise(a):
    """numpy's float64 sum of a run of values (its pairwise summation: sequential below 8
    values, eight interleaved partial sums up to 128, halves above)."""
    n = a.size
    if n < 8:
        res = 0.0
        for i in range(n):
            res += np.float64(a[i])
        return res
    if n <= 128:
        r = np.empty(8)
        for j in range(8):
            r[j] = np.float64(a[j])
        i = 8
        while i < n - (n % 8):
            for j in range(8):
                r[j] += np.float64(a[i + j])
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res += np.float64(a[i])
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a[:n2]) + _pairwise(a[n2:])


@njit(cache=True, nogil=True)
def bin_blocks(values, labels, fz, fy, fx, with_values):
    """Block means (float64, NaN for invalid blocks) and block labels (int32) of a (Z, Y, X) map.

    A block of ``fz × fy × fx`` voxels is valid when all its labels are > 0; it takes its
    first voxel's label. Its mean is numpy's ``mean`` over the block axes of the reshaped map:
    each run of ``fx`` values along the last axis summed as numpy sums a contiguous run
    (:func:`_pairwise`), the runs added in C order, divided by the block size. ``with_values``
    False: labels only (``binned`` empty).
    """
    nz, ny, nx = labels.shape[0] // fz, labels.shape[1] // fy, labels.shape[2] // fx
    blabels = np.zeros((nz, ny, nx), np.int32)
    binned = np.empty((nz, ny, nx) if with_values else (0, 0, 0))
    size = fz * fy * fx
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                ok = True
                for a in range(fz):
                    for b in range(fy):
                        for c in range(fx):
                            if labels[i * fz + a, j * fy + b, k * fx + c] <= 0:
                                ok = False
                if ok:
                    blabels[i, j, k] = labels[i * fz, j * fy, k * fx]
                if with_values:
                    if ok:
                        s = 0.0
                        for a in range(fz):
                            for b in range(fy):
                                if fx < 8:    # _pairwise of a short run, inline
                                    run = 0.0
                                    for c in range(fx):
                                        run += np.float64(values[i * fz + a, j * fy + b, k * fx + c])
                                else:
                                    run = _pairwise(values[i * fz + a, j * fy + b, k * fx:(k + 1) * fx])
                                s += run
                        binned[i, j, k] = s / size
                    else:
                        binned[i, j, k] = np.nan
    return binned, blabels


@njit(cache=True, nogil=True)
def gradient_vectors(edge, labels, centroids, step, nd):
    """Gradient vectors of a whole binned (Z, Y, X) map, in C order (``nd`` = 2: Z is 1 and
    has no gradient): :func:`txmdb.analysis.gradient.gradient_vectors` with the same
    operations in the same order (axes from the last to the first).

    Returns
    -------
    particle int32, theta_deg float64, u float64
        Views of the first ``m`` entries of arrays sized for every valid block.
    """
    nz, ny, nx = labels.shape
    n_valid = 0
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                if labels[i, j, k] > 0:
                    n_valid += 1
    particle = np.empty(n_valid, np.int32)
    theta = np.empty(n_valid)
    unorm_out = np.empty(n_valid)
    two_step = 2.0 * step
    m = 0
    z0, z1 = (1, nz - 1) if nd == 3 else (0, nz)
    for i in range(z0, z1):
        for j in range(1, ny - 1):
            for k in range(1, nx - 1):
                g = labels[i, j, k]
                if g <= 0:
                    continue
                if labels[i, j, k - 1] <= 0 or labels[i, j, k + 1] <= 0:
                    continue
                if labels[i, j - 1, k] <= 0 or labels[i, j + 1, k] <= 0:
                    continue
                if nd == 3 and (labels[i - 1, j, k] <= 0 or labels[i + 1, j, k] <= 0):
                    continue
                ux = (np.float64(edge[i, j, k + 1]) - np.float64(edge[i, j, k - 1])) / two_step
                vx = centroids[g, nd - 1] - np.float64(k)
                uu = ux * ux + 0.0
                vv = vx * vx + 0.0
                uv = ux * vx + 0.0
                uy = (np.float64(edge[i, j + 1, k]) - np.float64(edge[i, j - 1, k])) / two_step
                vy = centroids[g, nd - 2] - np.float64(j)
                uu = uy * uy + uu
                vv = vy * vy + vv
                uv = uy * vy + uv
                if nd == 3:
                    uz = (np.float64(edge[i + 1, j, k]) - np.float64(edge[i - 1, j, k])) / two_step
                    vz = centroids[g, 0] - np.float64(i)
                    uu = uz * uz + uu
                    vv = vz * vz + vv
                    uv = uz * vz + uv
                un = np.sqrt(uu)
                vn = np.sqrt(vv)
                if not (un > 0 and vn > 0):
                    continue
                c = uv / (un * vn)
                if c > 1.0:
                    c = 1.0
                elif c < -1.0:
                    c = -1.0
                particle[m] = g
                theta[m] = np.arccos(c) * _DEG
                unorm_out[m] = un
                m += 1
    return particle[:m], theta[:m], unorm_out[:m]


@njit(cache=True, nogil=True)
def vector_bins(particle, theta, u, n, theta_edges, band_lo, band_hi, phi_edges, u_edges):
    """The bincounts of :func:`txmdb.analysis.gradient.gradient_statistics` in one pass.

    Returns
    -------
    theta_count, theta_usum : (n + 1, n_theta) int64, float64
    band_count, band_usum : (n + 1,)
    phi_count, phi_usum : (n + 1, n_phi)
    hist : (n + 1, n_phi, n_u) int64 (n_u = 0 without u bins)
    phi_key : (m,) int64
        The folded-angle group of every vector (without the particle).
    Row 0 of each is left empty (the whole scan is the sum of the particles' rows).
    """
    nt = theta_edges.size - 1
    npg = phi_edges.size - 1
    nu = max(u_edges.size - 1, 0)
    theta_count = np.zeros((n + 1, nt), np.int64)
    theta_usum = np.zeros((n + 1, nt))
    band_count = np.zeros(n + 1, np.int64)
    band_usum = np.zeros(n + 1)
    phi_count = np.zeros((n + 1, npg), np.int64)
    phi_usum = np.zeros((n + 1, npg))
    hist = np.zeros((n + 1, npg, nu), np.int64)
    phi_key = np.empty(theta.size, np.int64)
    theta_scale, phi_scale, u_scale = _grid_scale(theta_edges), _grid_scale(phi_edges), _grid_scale(u_edges)
    for i in range(theta.size):
        g = particle[i]
        t = theta[i]
        w = u[i]
        kt = _grid_bin(theta_edges, t, nt, theta_scale)
        theta_count[g, kt] += 1
        theta_usum[g, kt] += w
        if t >= band_lo and t < band_hi:
            band_count[g] += 1
            band_usum[g] += w
        kp = _grid_bin(phi_edges, min(t, 180.0 - t), npg, phi_scale)
        phi_key[i] = kp
        phi_count[g, kp] += 1
        phi_usum[g, kp] += w
        if nu:
            hist[g, kp, _grid_bin(u_edges, w, nu, u_scale)] += 1
    return theta_count, theta_usum, band_count, band_usum, phi_count, phi_usum, hist, phi_key
