"""Compiled pass of :func:`txmdb.io.maps.map_summaries` (private).

One walk over the label and value arrays (no index arrays, no gathers): per particle the
count and sum of the finite values, which it packs for the quantiles, then their squared
deviations from each particle's own mean over the packed values (two passes, as
:func:`txmdb.analysis._frames.grouped_moments`, so no digits are lost to cancellation).
Compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def particle_values(labels, values, n, with_keys):
    """(count, mean, population std) per label 0..n (0 unused), and the packed values (and labels).

    ``labels`` and ``values`` are flat; a voxel counts where its label is 1..n and its value
    is finite. Empty groups get NaN mean and std. The first walk over the map packs the
    values (in voxel order) as it sums them; the squared deviations are then summed over the
    packed values, in the same order.
    """
    count = np.zeros(n + 1, np.int64)
    total = np.zeros(n + 1)
    m = labels.size
    keyed = n > 1 or with_keys     # else one particle: every packed value is its
    packed = np.empty(m, values.dtype)
    keys = np.empty(m if keyed else 0, labels.dtype)
    size = 0
    for i in range(m):
        lab = labels[i]
        if lab > 0:
            v = values[i]
            if np.isfinite(v):
                count[lab] += 1
                total[lab] += v
                packed[size] = v
                if keyed:
                    keys[size] = lab
                size += 1
    mean = np.full(n + 1, np.nan)
    for k in range(1, n + 1):
        if count[k]:
            mean[k] = total[k] / count[k]
    squares = np.zeros(n + 1)
    for j in range(size):
        lab = keys[j] if keyed else 1
        d = packed[j] - mean[lab]
        squares[lab] += d * d
    std = np.full(n + 1, np.nan)
    for k in range(1, n + 1):
        if count[k]:
            std[k] = np.sqrt(squares[k] / count[k])
    return count, mean, std, packed[:size], keys[:size if with_keys else 0]


_BINS = 1 << 16
_SORTED = 1 << 12   # a bin with more values than this is selected in, not sorted


@njit(cache=True, nogil=True)
def _select(seg, ranks, out):
    """out[i] = the ranks[i]-th smallest of seg (ranks ascending): a histogram of the values on
    equal bins finds the bin of each rank (binning is monotonic in the value, so a bin holds
    exactly the values of its ranks), then the values of those bins only — gathered in one
    more pass — are sorted."""
    m = seg.size
    lo = seg[0]
    hi = seg[0]
    for i in range(m):
        v = seg[i]
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    if not hi > lo:
        for r in range(ranks.size):
            out[r] = lo
        return
    nb = min(_BINS, m)
    scale = nb / (np.float64(hi) - np.float64(lo))
    hist = np.zeros(nb + 1, np.int64)
    for i in range(m):
        hist[min(int((np.float64(seg[i]) - np.float64(lo)) * scale), nb - 1)] += 1
    # the bin of every rank and the values below it; the distinct bins (ascending) get slots
    n_ranks = ranks.size
    rank_bin = np.empty(n_ranks, np.int64)
    rank_below = np.empty(n_ranks, np.int64)
    slot_bin = np.empty(n_ranks, np.int64)
    slot_start = np.zeros(n_ranks + 1, np.int64)
    n_slots = 0
    b = 0
    below = 0
    for r in range(n_ranks):
        k = ranks[r]
        while below + hist[b] <= k:
            below += hist[b]
            b += 1
        rank_bin[r] = b
        rank_below[r] = below
        if n_slots == 0 or slot_bin[n_slots - 1] != b:
            slot_bin[n_slots] = b
            slot_start[n_slots + 1] = slot_start[n_slots] + hist[b]
            n_slots += 1
    members = np.empty(slot_start[n_slots], seg.dtype)
    fill = slot_start[:n_slots].copy()
    first, last = slot_bin[0], slot_bin[n_slots - 1]
    for i in range(m):
        bi = min(int((np.float64(seg[i]) - np.float64(lo)) * scale), nb - 1)
        if bi < first or bi > last:
            continue
        for s in range(n_slots):
            if slot_bin[s] == bi:
                members[fill[s]] = seg[i]
                fill[s] += 1
                break
    s = 0
    r = 0
    while r < n_ranks:
        while slot_bin[s] != rank_bin[r]:
            s += 1
        seg_s = members[slot_start[s]:slot_start[s + 1]]
        r_end = r
        while r_end < n_ranks and rank_bin[r_end] == slot_bin[s]:
            r_end += 1
        if seg_s.size > _SORTED:     # a crowded bin (e.g. many equal values): its own histogram
            sub_ranks = ranks[r:r_end] - rank_below[r]
            _select(seg_s, sub_ranks, out[r:r_end])
        else:
            seg_s.sort()
            for q in range(r, r_end):
                out[q] = seg_s[ranks[q] - rank_below[q]]
        r = r_end


@njit(cache=True, nogil=True)
def _segment_quantiles(seg, qs, out, g):
    """out[:, g] = numpy's linear-interpolation quantiles ``qs`` of the values ``seg`` (not empty)."""
    m = seg.size
    ranks = np.empty(2 * qs.size, np.int64)
    for i in range(qs.size):
        p = qs[i] * (m - 1)
        ranks[2 * i] = int(np.floor(p))
        ranks[2 * i + 1] = min(int(np.floor(p)) + 1, m - 1)
    order = np.argsort(ranks)
    picked = np.empty(ranks.size, np.float64)
    sorted_ranks = ranks[order]
    found = np.empty(ranks.size, seg.dtype)
    _select(seg, sorted_ranks, found)
    for i in range(ranks.size):
        picked[order[i]] = found[i]
    for i in range(qs.size):
        p = qs[i] * (m - 1)
        a = picked[2 * i]
        b = picked[2 * i + 1]
        out[i, g] = a + (b - a) * (p - np.floor(p))


@njit(cache=True, nogil=True)
def _grouped(keys, values, n_keys):
    """The values gathered by key 0..n_keys-1 (a counting sort) and each key's start (n_keys + 1)."""
    start = np.zeros(n_keys + 1, np.int64)
    for i in range(keys.size):
        start[keys[i] + 1] += 1
    for k in range(1, n_keys + 1):
        start[k] += start[k - 1]
    grouped = np.empty(values.size, values.dtype)
    fill = start[:n_keys].copy()
    for i in range(keys.size):
        grouped[fill[keys[i]]] = values[i]
        fill[keys[i]] += 1
    return grouped, start


@njit(cache=True, nogil=True)
def keyed_quantiles(keys, values, n_keys, qs):
    """numpy's linear-interpolation quantiles ``qs`` of ``values`` per key 0..n_keys-1: float64
    (len(qs), n_keys), NaN for empty keys (``_group_quantiles`` of txmdb.analysis.gradient)."""
    out = np.full((qs.size, n_keys), np.nan)
    grouped, start = _grouped(keys, values, n_keys)
    for g in range(n_keys):
        if start[g + 1] > start[g]:
            _segment_quantiles(grouped[start[g]:start[g + 1]], qs, out, g)
    return out


@njit(cache=True, nogil=True)
def group_order_statistics(keys, values, n, qs):
    """Per group 0..n (0: all values) numpy's linear-interpolation quantiles ``qs``: float64
    array (len(qs), n + 1), NaN for empty groups. ``keys`` 1..n per value (empty: one group)."""
    out = np.full((qs.size, n + 1), np.nan)
    if values.size:
        _segment_quantiles(values, qs, out, 0)
    if keys.size == 0:
        return out
    grouped, start = _grouped(keys, values, n + 1)
    for g in range(1, n + 1):
        if start[g + 1] > start[g]:
            _segment_quantiles(grouped[start[g]:start[g + 1]], qs, out, g)
    return out


@njit(cache=True, nogil=True)
def label_position_sums(labels, n):
    """Voxel count and the sums of the voxel indices per axis of every label 1..n, over a
    (Z, Y, X) array: whole numbers, exact in float64 whatever the order of summation."""
    nz, ny, nx = labels.shape
    count = np.zeros(n + 1, np.int64)
    sums = np.zeros((n + 1, 3))
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                lab = labels[i, j, k]
                if lab > 0:
                    count[lab] += 1
                    sums[lab, 0] += i
                    sums[lab, 1] += j
                    sums[lab, 2] += k
    return count, sums
