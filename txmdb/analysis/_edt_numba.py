"""Exact Euclidean distance transform in numba for :func:`txmdb.analysis.particles.depth_map` (private).

Separable squared distance transform (Felzenszwalb & Huttenlocher, "Distance transforms of
sampled functions", 2012): the 1-D lower envelope of parabolas along each axis in turn,
lines in parallel (``prange``). Squared distances are whole numbers, held exactly in
float32 (below 2**24, i.e. distances below 4096 voxels) and computed in float64, so
``sqrt`` gives the same float32 depth as scipy's feature transform followed by the
distance of each voxel to its feature — bit for bit — at a fraction of its time and
memory (4 bytes per voxel of the box instead of 12 for the int32 indices).

Compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_INF = np.inf


@njit(cache=True, nogil=True)
def _envelope(f, n, v, z, d):
    """d[q] = min_p (q − p)² + f[p] over the n values of f (inf = no site); inf if none."""
    k = -1
    for q in range(n):
        fq = f[q]
        if fq == _INF:
            continue
        while k >= 0:
            p = v[k]
            s = ((fq + q * q) - (f[p] + p * p)) / (2.0 * q - 2.0 * p)
            if s <= z[k]:
                k -= 1
            else:
                break
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -_INF
        else:
            k += 1
            v[k] = q
            z[k] = s
        z[k + 1] = _INF
    if k < 0:
        for q in range(n):
            d[q] = _INF
        return
    j = 0
    for q in range(n):
        while z[j + 1] < q:
            j += 1
        p = v[j]
        d[q] = (q - p) * (q - p) + f[p]


@njit(cache=True, parallel=True)
def _pass(sq, axis):
    """One axis of the transform over a (Z, Y, X) float32 array, in place."""
    nz, ny, nx = sq.shape
    n = (nz, ny, nx)[axis]
    a, b = ((ny, nx), (nz, nx), (nz, ny))[axis]
    for line in prange(a * b):
        i, j = line // b, line % b
        f = np.empty(n)
        d = np.empty(n)
        v = np.empty(n, np.int64)
        z = np.empty(n + 1)
        for q in range(n):
            f[q] = sq[q, i, j] if axis == 0 else (sq[i, q, j] if axis == 1 else sq[i, j, q])
        _envelope(f, n, v, z, d)
        for q in range(n):
            if axis == 0:
                sq[q, i, j] = d[q]
            elif axis == 1:
                sq[i, q, j] = d[q]
            else:
                sq[i, j, q] = d[q]


@njit(cache=True, parallel=True)
def _depths(inside, sq, out):
    nz, ny, nx = inside.shape
    for i in prange(nz):
        for j in range(ny):
            for k in range(nx):
                if inside[i, j, k]:
                    out[i, j, k] = np.sqrt(np.float32(sq[i, j, k]))


def depth_into(inside: np.ndarray, out: np.ndarray) -> None:
    """Write into ``out`` (float32, same shape) the distance of every ``inside`` voxel to the
    nearest voxel that is not; ``out`` elsewhere is left as it is (2-D or 3-D)."""
    shape3 = (1,) * (3 - inside.ndim) + inside.shape
    inside3 = np.ascontiguousarray(inside).reshape(shape3)
    sq = np.where(inside3, np.float32(np.inf), np.float32(0.0))
    # the axis of length 1 that a 2-D map gains is skipped: its lines have one value each
    for axis in (2, 1, 0):
        if shape3[axis] > 1:
            _pass(sq, axis)
    _depths(inside3, sq, out[(None,) * (3 - out.ndim)])   # a view, strided or not
