"""Particles of an edge map: labels, per-particle table, depth profiles, edge histograms.

Pure functions on numpy arrays (DESIGN §5 "Particles"); no files, no database. Arrays are
in the stack's spatial axis order, ``(z, y, x)`` in 3D and ``(y, x)`` in 2D, and positions
are in voxel index units along those axes.

Conventions
-----------
- Particles are the connected components of the valid voxels, with full connectivity by
  default (26 neighbours in 3D, 8 in 2D). Components smaller than ``min_voxels`` are
  dropped: their voxels count as masked in every later step (label 0).
- Labels are ``1..n`` in the order of each particle's first voxel in C (raster) order,
  which is what ``scipy.ndimage.label`` gives; deterministic for a given map.
- Whole-scan statistics are over the voxels of all particles (label > 0). In the returned
  tables the ``particle`` column is ``<NA>`` (SQL NULL) for the whole scan.
- Standard deviations are population ones (ddof = 0), as in the golden reference.
- Depth is the Euclidean distance transform of the particle: the distance from a voxel's
  centre to the centre of the nearest voxel of the field of view that is not in the
  particle (so the outermost layer has depth 1; the border of the field of view is not
  taken as surface). Depth bins are one voxel wide: ``[1, 2), [2, 3), ...``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from txmdb.analysis._frames import CHUNK, flat_chunks, frame, grouped_moments, particle_column, table_columns

__all__ = [
    "DEFAULT_MIN_VOXELS",
    "default_min_voxels",
    "label_particles",
    "label_centroids",
    "particle_moments",
    "particle_table",
    "depth_map",
    "depth_profiles",
    "edge_histogram_edges",
    "edge_histograms",
    "PARTICLE_COLUMNS",
    "DEPTH_COLUMNS",
    "EDGE_HISTOGRAM_COLUMNS",
]

DEFAULT_MIN_VOXELS = {3: 1000, 2: 100}

PARTICLE_COLUMNS = table_columns("particles")
DEPTH_COLUMNS = table_columns("depth_profiles")
EDGE_HISTOGRAM_COLUMNS = table_columns("edge_histograms")

def default_min_voxels(ndim: int) -> int:
    """Default smallest particle: 1000 voxels in 3D, 100 pixels in 2D (DESIGN §5)."""
    try:
        return DEFAULT_MIN_VOXELS[ndim]
    except KeyError:
        raise ValueError(f"edge maps are 2D or 3D, got {ndim} dimensions") from None


def label_particles(valid: np.ndarray, *, min_voxels: int | None = None,
                    connectivity: int | None = None) -> tuple[np.ndarray, int]:
    """Connected components of the valid voxels, small ones dropped.

    Parameters
    ----------
    valid : ndarray of bool, shape (z, y, x) or (y, x)
        True where the edge energy is a number.
    min_voxels : int, optional
        Smallest kept component; default :func:`default_min_voxels`.
    connectivity : int, optional
        Neighbourhood rank as in ``scipy.ndimage.generate_binary_structure``: 1 for
        face neighbours only (6 in 3D, 4 in 2D) up to ``ndim`` for full connectivity
        (26 in 3D, 8 in 2D, the default).

    Returns
    -------
    labels : ndarray of int32, same shape as ``valid``
        0 outside particles, ``1..n`` inside, in raster order of first voxels.
    n : int
        Number of particles.
    """
    valid = np.asarray(valid, dtype=bool)
    ndim = valid.ndim
    min_voxels = default_min_voxels(ndim) if min_voxels is None else int(min_voxels)
    connectivity = ndim if connectivity is None else int(connectivity)
    if not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be 1..{ndim}, got {connectivity}")
    structure = ndi.generate_binary_structure(ndim, connectivity)
    labels, n_raw = ndi.label(valid, structure=structure, output=np.int32)
    counts = np.bincount(labels.ravel(), minlength=n_raw + 1)
    keep = counts >= max(min_voxels, 1)
    keep[0] = False
    n = int(keep.sum())
    if n != n_raw:
        # Renumber the kept components 1..n in their original (raster) order.
        lut = np.zeros(n_raw + 1, dtype=np.int32)
        lut[keep] = np.arange(1, n + 1, dtype=np.int32)
        compiled = _compiled_stats()
        if compiled is not None:        # in place: no second label map
            compiled.relabel(labels.reshape(-1), lut)
        else:
            labels = lut[labels]
    return labels, n


def label_centroids(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel count and centroid (mean voxel index per axis) of every label.

    Parameters
    ----------
    labels : ndarray of int, any shape
        0 = no particle, ``1..n`` particles.
    n : int

    Returns
    -------
    count : ndarray of int64, shape (n + 1,)
    centroid : ndarray of float64, shape (n + 1, ndim)
        In the array's axis order; row 0 is all particles together (the whole scan).
    """
    shape = labels.shape
    compiled = _compiled_sums()
    if compiled is not None and labels.ndim in (2, 3):  # one pass, no index arrays; sums exact
        count, sums = compiled.label_position_sums(labels.reshape((1,) * (3 - labels.ndim) + shape), n)
        pos_sum = sums[:, 3 - labels.ndim:]
        count[0] = count[1:].sum()
        pos_sum[0] = pos_sum[1:].sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return count, pos_sum / count[:, None]
    lab = labels.reshape(-1)
    count = np.zeros(n + 1, dtype=np.int64)
    pos_sum = np.zeros((n + 1, len(shape)))
    for sl in flat_chunks(lab.size):
        idx = np.flatnonzero(lab[sl]) + sl.start
        key = lab[idx]
        count += np.bincount(key, minlength=n + 1)
        for axis, coord in enumerate(np.unravel_index(idx, shape)):
            pos_sum[:, axis] += np.bincount(key, weights=coord, minlength=n + 1)
    count[0] = count[1:].sum()
    pos_sum[0] = pos_sum[1:].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, pos_sum / count[:, None]


def particle_moments(labels: np.ndarray, n: int, edge_ev: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Voxel count, centroid, mean and population std of the edge energy per particle.

    Parameters
    ----------
    labels : ndarray of int, shape (z, y, x) or (y, x)
        Particle labels (0 = none), e.g. from :func:`label_particles`.
    n : int
        Number of particles.
    edge_ev : ndarray of float, same shape
        Edge energy in eV (finite wherever ``labels > 0``).

    Returns
    -------
    count : ndarray of int64, shape (n + 1,)
    centroid : ndarray of float64, shape (n + 1, ndim)
        Mean voxel index per axis, in the array's axis order.
    mean_ev, std_ev : ndarray of float64, shape (n + 1,)
        Row 0 of every output is the whole scan (all particles together).
    """
    count, centroid = label_centroids(labels, n)
    lab = labels.reshape(-1)
    if _compiled_stats() is not None:
        (_, mean0, std0), (_, mean, std) = _keyed_moments(labels, edge_ev, None, 1, n)
    else:
        (_, mean, std), (_, mean0, std0) = grouped_moments(
            labels, edge_ev, [(lambda idx: lab[idx], n + 1), (lambda idx: np.zeros(idx.size, np.intp), 1)])
    mean[0], std[0] = mean0[0], std0[0]  # row 0 = whole scan
    return count, centroid, mean, std


def particle_table(labels: np.ndarray, n: int, edge_ev: np.ndarray, *,
                   voxel_size_nm: float | None = None,
                   moments: tuple[np.ndarray, ...] | None = None) -> pd.DataFrame:
    """One row per particle: the ``particles`` table of the catalogue.

    Parameters
    ----------
    labels, n, edge_ev
        As for :func:`particle_moments`.
    voxel_size_nm : float, optional
        Voxel edge length; without it ``equivalent_radius_nm`` is NaN (NULL).
    moments : tuple, optional
        The result of :func:`particle_moments` if already computed.

    Returns
    -------
    DataFrame
        Columns ``PARTICLE_COLUMNS``: ``centroid_z`` is NaN for 2D maps; the equivalent
        radius is that of the sphere (3D) or circle (2D) of the same volume (area).
    """
    count, centroid, mean, std = moments if moments is not None else particle_moments(labels, n, edge_ev)
    ndim = labels.ndim
    nv = count[1:].astype(np.float64)
    if ndim == 3:
        radius = np.cbrt(3.0 * nv / (4.0 * math.pi))
        cz, cy, cx = centroid[1:, 0], centroid[1:, 1], centroid[1:, 2]
    else:
        radius = np.sqrt(nv / math.pi)
        cz, cy, cx = np.full(n, np.nan), centroid[1:, 0], centroid[1:, 1]
    radius_nm = radius * voxel_size_nm if voxel_size_nm else np.full(n, np.nan)
    return frame({
        "particle": np.arange(1, n + 1, dtype=np.int64),
        "n_voxels": count[1:],
        "centroid_z": cz, "centroid_y": cy, "centroid_x": cx,
        "equivalent_radius_vox": radius, "equivalent_radius_nm": radius_nm,
        "mean_edge_ev": mean[1:], "std_edge_ev": std[1:],
    }, PARTICLE_COLUMNS)


def _compiled_sums():
    """``txmdb.analysis._summary_numba``, or None without numba."""
    try:
        from txmdb.analysis import _summary_numba
    except ImportError:
        return None
    return _summary_numba


def _compiled_stats():
    """``txmdb.analysis._stats_numba``, or None without numba (the numpy paths then)."""
    try:
        from txmdb.analysis import _stats_numba
    except ImportError:
        return None
    return _stats_numba


def _keyed_moments(labels: np.ndarray, values: np.ndarray, sub: np.ndarray | None, n_sub: int, n: int
                   ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`grouped_moments` of the particle voxels keyed by ``int(sub)`` (``n_sub`` groups; one
    group without ``sub``) and by ``label * n_sub + int(sub)``, in one compiled walk with the
    same sums in the same order (so the same numbers)."""
    sub = np.zeros(0, np.float32) if sub is None else sub.reshape(-1)
    ca, ma, qa, cb, mb, qb = _compiled_stats().keyed_moments(labels.reshape(-1), values.reshape(-1), sub,
                                                             n_sub, n, CHUNK)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ca, ma, np.sqrt(qa / ca)), (cb, mb, np.sqrt(qb / cb))


def _compiled_edt():
    """``txmdb.analysis._edt_numba``, or None without numba (scipy's feature transform then)."""
    try:
        from txmdb.analysis import _edt_numba
    except ImportError:
        return None
    return _edt_numba


def depth_map(labels: np.ndarray, n: int) -> np.ndarray:
    """Distance of every particle voxel from its particle's surface, in voxels.

    The Euclidean distance transform is taken per particle over its bounding box grown by
    one voxel (clipped to the field of view): distances are to the nearest voxel not in
    that particle. It is computed by the compiled separable transform of
    ``txmdb.analysis._edt_numba`` (4 bytes per voxel of the box), or without numba from
    scipy's feature transform (int32 indices of the nearest outside voxel) in slabs rather
    than with ``distance_transform_edt``'s own distance output, whose float64 temporaries
    take ~40 bytes per voxel; both give the same float32 depths.

    Parameters
    ----------
    labels : ndarray of int, shape (z, y, x) or (y, x)
    n : int

    Returns
    -------
    ndarray of float32, same shape
        Depth (≥ 1) inside particles, 0 outside. A particle that fills its whole grown
        bounding box (it touches the field of view on every side) has no outside voxel;
        its depth is then measured from the box faces.
    """
    depth = np.zeros(labels.shape, dtype=np.float32)
    edt = _compiled_edt()
    for lab, box in enumerate(ndi.find_objects(labels, max_label=n), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, size))
                    for s, size in zip(box, labels.shape))
        inside = labels[box] == lab
        core_shape = inside.shape
        off = 0
        if inside.all():  # no outside voxel to measure from: use the box faces
            inside = np.pad(inside, 1)
            off = 1
        if edt is not None:  # compiled: the same float32 depths, ~6x faster, 4 B/voxel of box
            if off:
                padded = np.zeros(inside.shape, np.float32)
                edt.depth_into(inside, padded)
                depth[box] = padded[(slice(1, -1),) * inside.ndim]
            else:
                edt.depth_into(inside, depth[box])
            continue
        ft = np.empty((inside.ndim,) + inside.shape, dtype=np.int32)
        ndi.distance_transform_edt(inside, return_distances=False, return_indices=True, indices=ft)
        sub = depth[box]
        rows = max(1, CHUNK // max(1, math.prod(core_shape[1:])))
        for r0 in range(0, core_shape[0], rows):
            r1 = min(r0 + rows, core_shape[0])
            core = (slice(r0 + off, r1 + off),) + tuple(slice(off, off + s) for s in core_shape[1:])
            grid = np.ogrid[core]
            d2 = sum((ft[a][core] - grid[a]).astype(np.float32) ** 2 for a in range(inside.ndim))
            m = inside[core]
            block = sub[r0:r1]
            block[m] = np.sqrt(d2[m])
    return depth


def depth_profiles(labels: np.ndarray, n: int, edge_ev: np.ndarray, depth: np.ndarray, *,
                   voxel_size_nm: float | None = None) -> pd.DataFrame:
    """Mean and std of the edge energy against depth, per particle and whole scan.

    Parameters
    ----------
    labels, n, edge_ev
        As for :func:`particle_moments`.
    depth : ndarray of float, same shape
        From :func:`depth_map`.
    voxel_size_nm : float, optional
        Adds the depth bins in nm (NaN without).

    Returns
    -------
    DataFrame
        Columns ``DEPTH_COLUMNS``; one row per non-empty one-voxel depth bin
        ``[k, k + 1)``, whole scan (``particle`` <NA>) first, then particles 1..n.
    """
    lab = labels.reshape(-1)
    flat_depth = depth.reshape(-1)
    n_depth = int(depth.max()) + 1 if n else 1

    def depth_bin(idx: np.ndarray) -> np.ndarray:
        return flat_depth[idx].astype(np.intp)  # floor: depths are >= 0

    if _compiled_stats() is not None:
        scan, parts = _keyed_moments(labels, edge_ev, depth, n_depth, n)
    else:
        scan, parts = grouped_moments(labels, edge_ev, [
            (depth_bin, n_depth),
            (lambda idx: lab[idx].astype(np.intp) * n_depth + depth_bin(idx), (n + 1) * n_depth)])
    rows = []
    for key_count, key_mean, key_std in (scan, parts):
        nz = np.flatnonzero(key_count)
        rows.append((nz // n_depth if key_count.size > n_depth else np.zeros(nz.size, np.int64),
                     nz % n_depth, key_count[nz], key_mean[nz], key_std[nz]))
    particle, lo, cnt, mean, std = (np.concatenate(c) for c in zip(*rows))
    lo = lo.astype(np.float64)
    scale = voxel_size_nm if voxel_size_nm else np.nan
    return frame({
        "particle": particle_column(particle),
        "depth_lo_vox": lo, "depth_hi_vox": lo + 1.0,
        "depth_lo_nm": lo * scale, "depth_hi_nm": (lo + 1.0) * scale,
        "n_voxels": cnt, "mean_edge_ev": mean, "std_edge_ev": std,
    }, DEPTH_COLUMNS)


def edge_histogram_edges(energies_ev: np.ndarray, edge_window: tuple[float, float], *,
                         width_ev: float = 0.25) -> np.ndarray:
    """Fixed bin edges for edge-energy histograms, ``width_ev`` apart.

    An edge energy can lie anywhere from the energy just below the edge window (the
    crossing is interpolated from ``E[k-1]``) up to the window's last energy; the edges
    cover that range on a grid of multiples of ``width_ev``, so histograms of scans
    measured on the same energy grid share their bins.

    Parameters
    ----------
    energies_ev : ndarray, shape (n_energy,)
        Sorted energies of the stack.
    edge_window : (float, float)
        Edge window in eV (inclusive).
    width_ev : float
        Bin width (default 0.25 eV).

    Returns
    -------
    ndarray of float64, shape (n_bins + 1,)
    """
    e = np.asarray(energies_ev, dtype=np.float64)
    inside = np.flatnonzero((e >= edge_window[0]) & (e <= edge_window[1]))
    if inside.size == 0:
        raise ValueError(f"edge window {edge_window} holds no energy of the grid")
    lo = e[max(inside[0] - 1, 0)]
    hi = e[inside[-1]]
    k0 = math.floor(lo / width_ev)
    k1 = max(math.ceil(hi / width_ev), k0 + 1)
    return np.arange(k0, k1 + 1) * width_ev


def edge_histograms(labels: np.ndarray, n: int, edge_ev: np.ndarray, edges: np.ndarray) -> pd.DataFrame:
    """Edge-energy histogram of the whole scan and of every particle.

    Parameters
    ----------
    labels, n, edge_ev
        As for :func:`particle_moments`.
    edges : ndarray, shape (n_bins + 1,)
        Bin edges in eV (:func:`edge_histogram_edges`); bins are ``[lo, hi)``, the last
        one closed; values outside the edges (impossible for an edge map made with the
        same window) count in the first or last bin.

    Returns
    -------
    DataFrame
        Columns ``EDGE_HISTOGRAM_COLUMNS``; every bin, whole scan first, then particles.
    """
    nb = edges.size - 1
    lab = labels.reshape(-1)
    compiled = _compiled_stats()
    if compiled is not None:        # one walk, no index arrays; the same bins
        counts = compiled.label_histograms(lab, edge_ev.reshape(-1), np.asarray(edges, np.float64), n)
    else:
        counts = np.zeros((n + 1) * nb, dtype=np.int64)
        for sl in flat_chunks(lab.size):
            idx = np.flatnonzero(lab[sl]) + sl.start
            b = np.clip(np.searchsorted(edges, edge_ev.reshape(-1)[idx], side="right") - 1, 0, nb - 1)
            counts += np.bincount(lab[idx].astype(np.int64) * nb + b, minlength=(n + 1) * nb)
        counts = counts.reshape(n + 1, nb)
    counts[0] = counts[1:].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = counts / counts.sum(axis=1, keepdims=True)
    prob = np.nan_to_num(prob)  # an empty particle cannot exist; an empty scan gives 0
    particle = np.repeat(np.arange(n + 1), nb)
    return frame({
        "particle": particle_column(particle),
        "edge_lo_ev": np.tile(edges[:-1], n + 1), "edge_hi_ev": np.tile(edges[1:], n + 1),
        "count": counts.ravel(), "probability": prob.ravel(),
    }, EDGE_HISTOGRAM_COLUMNS)
