"""Valence-gradient vectors and their θ statistics (DESIGN §5, "Valence-gradient statistics").

Pure functions on numpy arrays; no files, no database. Arrays are in the stack's spatial
axis order, ``(z, y, x)`` in 3D and ``(y, x)`` in 2D. The gradient ``u`` and the vector
``v`` to the particle centroid use that same order component by component, so
``u · v`` — the only thing θ depends on — is the same as in ``(x, y, z)`` order.

Steps for one binning factor ``f`` (each a function below):

1. :func:`bin_edge_map` — mean over ``f``-wide blocks; a block is valid only when all its
   voxels are in particles (after small components were dropped); trailing partial
   blocks are dropped. All voxels of a valid block are valid and mutually adjacent, so
   they always belong to one and the same particle: the block takes that label and the
   rule "a block belongs to the particle of its voxels" never has to break a tie. For
   the same reason two neighbouring valid blocks are always in the same particle.
2. :func:`block_centroids` — ``O`` per particle: mean index position of its valid blocks
   (all of them, not only those that get a gradient; the golden case f = 3 tells these
   two apart and confirms this choice).
3. :func:`gradient_vectors` — the chunk kernel: central differences
   ``(E[i+1] − E[i−1]) / (2·f·d)`` (eV/nm; eV/voxel with ``d`` unknown, i.e. step
   ``f``) on every axis, only where both neighbours on every axis are valid; the
   outermost rows of the array have no neighbours and get no vector, so a slab with a
   one-row halo on each side gives exactly the vectors of its interior rows.
   ``v = O − p``, ``θ = arccos(u·v / (|u||v|))`` in degrees; ``|u| = 0`` or ``|v| = 0``
   dropped. :func:`map_gradient_vectors` runs it over a whole map in such slabs.
4. :func:`gradient_statistics` — θ histograms (plain and ``|u|``-weighted) with the random
   reference, vector-size statistics in folded ``φ = min(θ, 180° − θ)`` groups, ``|u|``
   histograms on shared bins (:func:`u_histogram_edges`), mean ``|u|`` against θ, and the
   summary (n, mean ``|u|``, tangential excess, Kullback–Leibler divergence), for the
   whole scan and per particle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numexpr as ne
import numpy as np
import pandas as pd

from txmdb.analysis._frames import frame, particle_column, table_columns
from txmdb.analysis.particles import _compiled_stats, _compiled_sums, label_centroids

__all__ = [
    "GradientVectors",
    "bin_edge_map",
    "bin_labels",
    "block_centroids",
    "gradient_vectors",
    "map_gradient_vectors",
    "theta_edges",
    "theta_reference",
    "tangential_reference",
    "u_histogram_edges",
    "gradient_statistics",
    "PHI_EDGES",
    "GRADIENT_TABLES",
]

# Folded-angle groups of the vector-size statistics: nine groups of 10° over 0–90°.
PHI_EDGES = np.arange(0.0, 91.0, 10.0)
# The tangential band of the tangential excess.
TANGENTIAL_BAND = (80.0, 100.0)

# The tables these statistics fill, with their columns (declared once, in the models).
GRADIENT_TABLES = {name: table_columns(name) for name in (
    "theta_histograms", "gradient_summaries", "vector_size_stats", "vector_size_histograms", "u_theta_profiles")}


# --------------------------------------------------------------------------- vectors
@dataclass
class GradientVectors:
    """Gradient vectors of one binning factor, one entry per kept vector.

    Attributes
    ----------
    particle : ndarray of int32, shape (m,)
        Particle label of the block the vector sits on.
    theta_deg : ndarray of float64, shape (m,)
        Angle between ``u`` and ``v = O − p`` in degrees, 0–180.
    u : ndarray of float64, shape (m,)
        ``|u|`` in eV/nm (eV/voxel when the voxel size is unknown).
    """

    particle: np.ndarray
    theta_deg: np.ndarray
    u: np.ndarray

    def __len__(self) -> int:
        return int(self.u.size)

    @classmethod
    def concat(cls, parts: list["GradientVectors"]) -> "GradientVectors":
        """Vectors of several slabs, in the order given."""
        if not parts:
            return cls(np.zeros(0, np.int32), np.zeros(0), np.zeros(0))
        return cls(np.concatenate([p.particle for p in parts]),
                   np.concatenate([p.theta_deg for p in parts]),
                   np.concatenate([p.u for p in parts]))


def _blocks(a: np.ndarray, f: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """View of ``a`` (cropped to whole blocks) as (n0, f, n1, f, ...) and the block axes."""
    nblocks = tuple(s // f for s in a.shape)
    cropped = a[tuple(slice(0, n * f) for n in nblocks)]
    shape = tuple(x for n in nblocks for x in (n, f))
    return cropped.reshape(shape), tuple(range(1, 2 * a.ndim, 2))


def bin_edge_map(edge_ev: np.ndarray, labels: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean edge energy over ``factor``-wide blocks, and the blocks' particle labels.

    Parameters
    ----------
    edge_ev : ndarray of float, shape (z, y, x) or (y, x)
        Edge energy in eV (finite wherever ``labels > 0``).
    labels : ndarray of int, same shape
        Particle labels, 0 outside particles (dropped small components included).
    factor : int
        Binning factor ``f ≥ 1``.

    Returns
    -------
    binned_ev : ndarray of float64, shape (z // f, y // f, x // f) (or 2D)
        Block means, NaN for invalid blocks. For ``f = 1`` this is ``edge_ev`` itself (no
        copy): the labels carry the validity, and only valid voxels are ever read.
    binned_labels : ndarray of int32, same shape
        The particle of the block's voxels, 0 for invalid blocks.
    """
    f = int(factor)
    if f < 1:
        raise ValueError(f"binning factor must be >= 1, got {factor}")
    if edge_ev.shape != labels.shape:
        raise ValueError(f"edge map {edge_ev.shape} and labels {labels.shape} differ in shape")
    if f == 1:
        return edge_ev, labels.astype(np.int32, copy=False)
    if _compiled_stats() is not None and edge_ev.ndim in (2, 3):
        return _compiled_blocks(edge_ev, labels, f)
    binned_labels = bin_labels(labels, f)
    valid = binned_labels > 0
    edge_blocks, axes = _blocks(edge_ev, f)
    with np.errstate(invalid="ignore"):
        binned = edge_blocks.mean(axis=axes, dtype=np.float64)
    binned[~valid] = np.nan
    return binned, binned_labels


def bin_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """Particle labels of ``factor``-wide blocks: the label of their voxels where all are in
    particles, else 0 (the labels half of :func:`bin_edge_map`).

    Returns
    -------
    ndarray of int32, shape of the binned map
    """
    f = int(factor)
    if f == 1:
        return labels.astype(np.int32, copy=False)
    if _compiled_stats() is not None and labels.ndim in (2, 3):
        return _compiled_blocks(None, labels, f)[1]
    lab_blocks, axes = _blocks(labels, f)
    valid = (lab_blocks > 0).all(axis=axes)
    first = labels[tuple(slice(0, n * f, f) for n in valid.shape)]
    return np.where(valid, first, 0).astype(np.int32)


def _as_3d(a: np.ndarray) -> np.ndarray:
    return a.reshape((1,) * (3 - a.ndim) + a.shape)


def _compiled_blocks(values: np.ndarray | None, labels: np.ndarray, f: int) -> tuple[np.ndarray | None, np.ndarray]:
    """:func:`bin_edge_map` (``values`` None: :func:`bin_labels` only) in one compiled walk,
    the same block sums in the same order."""
    out = tuple(s // f for s in labels.shape)
    factors = (1,) * (3 - labels.ndim) + (f,) * labels.ndim
    binned, blabels = _compiled_stats().bin_blocks(_as_3d(labels if values is None else values), _as_3d(labels),
                                                   *factors, values is not None)
    return (None if values is None else binned.reshape(out)), blabels.reshape(out)


def block_centroids(binned_labels: np.ndarray, n: int) -> np.ndarray:
    """Centroid ``O`` of every particle in the binned grid.

    Parameters
    ----------
    binned_labels : ndarray of int, shape of the binned map
    n : int
        Number of particles.

    Returns
    -------
    ndarray of float64, shape (n + 1, ndim)
        Row ``k`` is the mean block index position of particle ``k``'s valid blocks (NaN
        for a particle without a valid block); row 0 is unused by the kernel.
    """
    return label_centroids(binned_labels, n)[1]


def gradient_vectors(edge_ev: np.ndarray, labels: np.ndarray, centroids: np.ndarray, *,
                     step: float, origin: int = 0) -> GradientVectors:
    """The chunk kernel: gradient vectors and θ on a (halo-padded) slab of a binned map.

    Parameters
    ----------
    edge_ev : ndarray of float, shape (m0, ...)
        Binned edge energy in eV, a slab of consecutive rows along axis 0 of the whole
        binned map, including one halo row on each side where the map has one.
    labels : ndarray of int, same shape
        Binned particle labels (0 = invalid block).
    centroids : ndarray of float, shape (n + 1, ndim)
        Particle centroids in the whole binned map's index coordinates
        (:func:`block_centroids`).
    step : float
        Spacing of the binned grid, ``f·d`` in nm (or ``f`` for eV/voxel).
    origin : int
        Index of the slab's row 0 in the whole binned map (positions are global).

    Returns
    -------
    GradientVectors
        For every position ``p`` with ``1 ≤ p_a ≤ m_a − 2`` on every axis whose block and
        both neighbours along every axis are valid, in C order, minus those with
        ``|u| = 0`` or ``|v| = 0``.
    """
    shape = edge_ev.shape
    nd = len(shape)
    if labels.shape != shape:
        raise ValueError(f"edge map {shape} and labels {labels.shape} differ in shape")
    if min(shape) < 3:
        return GradientVectors.concat([])
    valid = labels > 0
    inner = (slice(1, -1),) * nd
    ok = np.zeros(shape, dtype=bool)
    core = valid[inner].copy()
    for a in range(nd):
        for shift in (slice(2, None), slice(None, -2)):
            sl = list(inner)
            sl[a] = shift
            core &= valid[tuple(sl)]
    ok[inner] = core
    flat = np.flatnonzero(ok)
    edge = np.ascontiguousarray(edge_ev).reshape(-1)
    lab = labels.reshape(-1)[flat]
    centre = centroids[lab]
    coords = np.unravel_index(flat, shape)
    stride = 1
    uu = vv = uv = 0.0
    two_step = 2.0 * float(step)
    for a in range(nd - 1, -1, -1):  # last axis has stride 1
        ua = (edge[flat + stride].astype(np.float64) - edge[flat - stride]) / two_step
        va = centre[:, a] - (coords[a] + (origin if a == 0 else 0))
        uu = ua * ua + uu
        vv = va * va + vv
        uv = ua * va + uv
        stride *= shape[a]
    unorm = np.sqrt(uu)
    vnorm = np.sqrt(vv)
    keep = (unorm > 0) & (vnorm > 0)
    if not keep.all():
        unorm, vnorm, uv, lab = unorm[keep], vnorm[keep], uv[keep], lab[keep]
    # arccos of the clipped cosine (rounding can push |cos| a hair above 1)
    theta = ne.evaluate("arccos(where(c > 1.0, 1.0, where(c < -1.0, -1.0, c))) * (180.0 / pi)",
                        local_dict={"c": uv / (unorm * vnorm), "pi": math.pi})
    return GradientVectors(lab.astype(np.int32, copy=False), theta, unorm)


def _slab_bounds(n_rows: int, rows: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n_rows, rows):
        yield start, min(start + rows, n_rows)


def map_gradient_vectors(binned_ev: np.ndarray, binned_labels: np.ndarray, centroids: np.ndarray, *,
                         step: float, slab_voxels: int = 1 << 21) -> GradientVectors:
    """:func:`gradient_vectors` over a whole binned map, in halo-padded slabs.

    The result is the same whatever ``slab_voxels`` (the slabs only bound the size of
    the kernel's temporaries, ~100 bytes per voxel of a slab).

    Parameters
    ----------
    binned_ev, binned_labels, centroids, step
        As for :func:`gradient_vectors`, for the whole binned map.
    slab_voxels : int
        Approximate number of voxels per slab.

    Returns
    -------
    GradientVectors
        In C order of the whole map.
    """
    compiled = _compiled_stats()
    if compiled is not None and binned_ev.ndim in (2, 3):   # the whole map in one walk, no slabs
        if binned_labels.shape != binned_ev.shape:
            raise ValueError(f"edge map {binned_ev.shape} and labels {binned_labels.shape} differ in shape")
        if min(binned_ev.shape) < 3:
            return GradientVectors.concat([])
        return GradientVectors(*compiled.gradient_vectors(_as_3d(binned_ev), _as_3d(binned_labels),
                                                          np.asarray(centroids, np.float64), float(step),
                                                          binned_ev.ndim))
    n_rows = binned_ev.shape[0]
    plane = max(1, math.prod(binned_ev.shape[1:]))
    rows = max(1, slab_voxels // plane)
    parts = []
    for start, stop in _slab_bounds(n_rows, rows):
        lo, hi = max(start - 1, 0), min(stop + 1, n_rows)
        parts.append(gradient_vectors(binned_ev[lo:hi], binned_labels[lo:hi], centroids,
                                      step=step, origin=lo))
    return GradientVectors.concat(parts)


# --------------------------------------------------------------------------- statistics
def theta_edges(n_bins: int = 36) -> np.ndarray:
    """Edges of ``n_bins`` equal θ bins over 0–180° (5° for 36)."""
    if n_bins < 1:
        raise ValueError(f"theta bins must be >= 1, got {n_bins}")
    return np.linspace(0.0, 180.0, n_bins + 1)


def theta_reference(edges: np.ndarray, ndim: int) -> np.ndarray:
    """Probability of each θ bin for random directions.

    3D: ``(cos θ_lo − cos θ_hi) / 2`` (the sin θ distribution); 2D: ``Δθ / 180``.
    """
    if ndim == 3:
        c = np.cos(np.radians(edges))
        return (c[:-1] - c[1:]) / 2.0
    if ndim == 2:
        return np.diff(edges) / 180.0
    raise ValueError(f"maps are 2D or 3D, got {ndim} dimensions")


def tangential_reference(ndim: int) -> float:
    """Random-direction probability of 80° ≤ θ < 100°."""
    return float(theta_reference(np.asarray(TANGENTIAL_BAND), ndim)[0])


def u_histogram_edges(u_f1: np.ndarray, *, u_max: float | None = None, n_bins: int = 40,
                      percentile: float = 99.0) -> np.ndarray:
    """|u| bins shared by every binning factor and particle of one analysis.

    ``n_bins`` equal bins from 0 to the ``percentile``-th percentile of ``|u|`` at f = 1
    over the whole scan, plus one overflow bin up to ``u_max`` (the largest ``|u|`` of
    the analysis, all factors) when that lies above: every vector is counted, and the
    long tail does not squeeze the bulk of the distribution into a few bins.

    Parameters
    ----------
    u_f1 : ndarray, shape (m,)
        ``|u|`` of all vectors at f = 1.
    u_max : float, optional
        Largest ``|u|`` over all factors (default: the max of ``u_f1``).
    n_bins, percentile
        See above.

    Returns
    -------
    ndarray of float64, shape (n_bins + 1,) or (n_bins + 2,)
        Empty when there is no vector at all.
    """
    u_f1 = np.asarray(u_f1, dtype=np.float64)
    if u_max is None:
        u_max = float(u_f1.max()) if u_f1.size else None
    if u_max is None or not u_max > 0:
        return np.zeros(0)
    top = float(np.percentile(u_f1, percentile)) if u_f1.size else u_max
    if not top > 0:
        top = u_max
    edges = np.linspace(0.0, top, n_bins + 1)
    if u_max > top:
        edges = np.append(edges, u_max)
    return edges


def _group_quantiles(key: np.ndarray, values: np.ndarray, n_keys: int,
                     qs: tuple[float, ...]) -> np.ndarray:
    """Linear-interpolation quantiles (numpy's default method) of ``values`` per key.

    One stable radix sort of the small integer keys gathers every group contiguously;
    each group then needs only ``np.partition`` at the two order statistics around each
    quantile (O(n), no float sort).

    Returns
    -------
    ndarray of float64, shape (len(qs), n_keys)
        NaN for empty groups.
    """
    compiled = _compiled_sums()
    if compiled is not None:    # a counting sort, and selection on value histograms: the same order statistics
        return compiled.keyed_quantiles(key, values, n_keys, np.asarray(qs, np.float64))
    small = np.int16 if n_keys <= np.iinfo(np.int16).max else np.int64
    order = np.argsort(key.astype(small), kind="stable")
    grouped = values[order]
    del order
    count = np.bincount(key, minlength=n_keys)[:n_keys]
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    out = np.full((len(qs), n_keys), np.nan)
    for g in np.flatnonzero(count):
        seg = grouped[start[g]:start[g] + count[g]]
        pos = [q * (seg.size - 1) for q in qs]
        kth = sorted({int(math.floor(p)) for p in pos} | {min(int(math.floor(p)) + 1, seg.size - 1) for p in pos})
        seg.partition(kth)
        for i, p in enumerate(pos):
            lo = int(math.floor(p))
            hi = min(lo + 1, seg.size - 1)
            out[i, g] = seg[lo] + (seg[hi] - seg[lo]) * (p - lo)
    return out


def _per_group(key: np.ndarray, ng: int, width: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(ng, width) counts or sums of a combined key ``particle · width + bin``; row 0 = all particles."""
    return _scan_row(np.bincount(key, weights=weights, minlength=ng * width)[:ng * width].reshape(ng, width))


def _scan_row(out: np.ndarray) -> np.ndarray:
    """``out`` (ng, width) with row 0, the whole scan, the sum of the particles' rows."""
    out[0] = out[1:].sum(axis=0)
    return out


def _vector_sums(vectors: GradientVectors, ng: int, edges: np.ndarray, u_edges: np.ndarray) -> dict[str, np.ndarray]:
    """Counts and |u| sums per group (row 0 = whole scan, then particles) of the vectors in the θ
    bins ``edges`` (``theta_n``, ``theta_u``: (ng, n_θ)), in the tangential band (``band_n``,
    ``band_u``: (ng,)), in the φ groups (``phi_n``, ``phi_u``: (ng, n_φ)); the |u| histograms
    per φ group (``u_hist``: (ng, n_φ, n_u)), and each vector's φ group (``phi_key``)."""
    theta, u = vectors.theta_deg, vectors.u
    nb, npg, nu = edges.size - 1, PHI_EDGES.size - 1, max(u_edges.size - 1, 0)
    compiled = _compiled_stats()
    if compiled is not None:        # one walk over the vectors, the same sums in the same order
        tn, tu, bn, bu, pn, pu, hist, phi_key = compiled.vector_bins(
            vectors.particle, theta, u, ng - 1, np.asarray(edges, np.float64), TANGENTIAL_BAND[0],
            TANGENTIAL_BAND[1], PHI_EDGES, np.asarray(u_edges, np.float64))
        return {"theta_n": _scan_row(tn), "theta_u": _scan_row(tu), "band_n": _scan_row(bn[:, None])[:, 0],
                "band_u": _scan_row(bu[:, None])[:, 0], "phi_n": _scan_row(pn), "phi_u": _scan_row(pu),
                "u_hist": _scan_row(hist.reshape(ng, npg * nu)).reshape(ng, npg, nu), "phi_key": phi_key}
    lab = vectors.particle.astype(np.intp)
    # Combined keys particle · n_bins + bin, built in place (the vectors of a 20-million
    # voxel scan number ~10 million: every temporary is ~80 MB).
    key = np.searchsorted(edges, theta, side="right") - 1
    np.clip(key, 0, nb - 1, out=key)
    key += lab * nb
    sums = {"theta_n": _per_group(key, ng, nb), "theta_u": _per_group(key, ng, nb, u)}
    band = (theta >= TANGENTIAL_BAND[0]) & (theta < TANGENTIAL_BAND[1])
    sums["band_n"] = _per_group(lab[band], ng, 1)[:, 0]
    sums["band_u"] = _per_group(lab[band], ng, 1, u[band])[:, 0]
    del band
    phi_key = np.searchsorted(PHI_EDGES, np.minimum(theta, 180.0 - theta), side="right") - 1
    np.clip(phi_key, 0, npg - 1, out=phi_key)
    full = phi_key + lab * npg
    sums["phi_n"], sums["phi_u"] = _per_group(full, ng, npg), _per_group(full, ng, npg, u)
    if nu:
        key = np.searchsorted(u_edges, u, side="right") - 1
        np.clip(key, 0, nu - 1, out=key)
        key += full * nu  # (particle · npg + φ group) · nu + |u| bin
        sums["u_hist"] = _per_group(key, ng, npg * nu).reshape(ng, npg, nu)
    else:
        sums["u_hist"] = np.zeros((ng, npg, 0), dtype=np.int64)
    sums["phi_key"] = phi_key
    return sums


def gradient_statistics(vectors: GradientVectors, *, n_particles: int, bin_factor: int, ndim: int,
                        u_edges: np.ndarray, theta_bins: int = 36,
                        voxel_size_nm: float | None = None) -> dict[str, pd.DataFrame]:
    """θ and vector-size statistics of one binning factor, whole scan and per particle.

    Parameters
    ----------
    vectors : GradientVectors
        All vectors of this factor (e.g. :func:`map_gradient_vectors`).
    n_particles : int
        Number of particles (labels ``1..n``); every particle gets rows even without
        vectors (then only those rows whose values can be empty: counts 0, NULL means).
    bin_factor : int
        ``f``, written to the ``bin_factor`` column.
    ndim : int
        2 or 3: selects the random reference.
    u_edges : ndarray
        Shared ``|u|`` bins (:func:`u_histogram_edges`); empty: no histogram rows.
    theta_bins : int
        Number of θ bins over 0–180° (36 → 5°).
    voxel_size_nm : float, optional
        ``d``; the summary stores ``f·d`` (NaN when unknown).

    Returns
    -------
    dict of str to DataFrame
        Keys and columns as ``GRADIENT_TABLES``; rows of the whole scan (``particle``
        <NA>) first, then particles 1..n. θ histograms hold probabilities (plain:
        counts / n; weighted: Σ|u| per bin / Σ|u|) with the reference, and exist only for
        groups with vectors. Tangential excess is P(80° ≤ θ < 100°) / P_ref of that band
        (from the angles themselves, so it does not depend on the θ bins); the KL
        divergence is ``Σ p ln(p / ref)`` over θ bins with ``p > 0`` (natural log).
    """
    n = int(n_particles)
    ng = n + 1  # group 0 = whole scan
    edges = theta_edges(theta_bins)
    ref = theta_reference(edges, ndim)
    nb = theta_bins
    u = vectors.u
    npg = PHI_EDGES.size - 1
    sums = _vector_sums(vectors, ng, edges, u_edges)
    theta_count, theta_usum, band_count, band_usum = (sums[k] for k in ("theta_n", "theta_u", "band_n", "band_u"))
    phi_key = sums["phi_key"]
    if n > 1:
        quant_scan = _group_quantiles(phi_key, u, npg, (0.5, 0.9)) if len(u) else None
    phi_key += vectors.particle.astype(np.intp) * npg
    n_vec = theta_count.sum(axis=1)
    u_total = theta_usum.sum(axis=1)

    with np.errstate(invalid="ignore", divide="ignore"):
        p_plain = theta_count / n_vec[:, None]
        p_weighted = theta_usum / u_total[:, None]
        mean_u = u_total / n_vec
        ref_band = tangential_reference(ndim)
        te = band_count / n_vec / ref_band
        te_w = band_usum / u_total / ref_band

        def kl(p: np.ndarray) -> np.ndarray:
            terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / ref), 0.0)
            return np.where(np.isfinite(p).all(axis=1), terms.sum(axis=1), np.nan)

        kl_plain, kl_weighted = kl(p_plain), kl(p_weighted)

    groups = np.arange(ng)
    has = n_vec > 0
    step_nm = bin_factor * voxel_size_nm if voxel_size_nm else np.nan
    tables: dict[str, pd.DataFrame] = {}

    tables["gradient_summaries"] = frame({
        "particle": particle_column(groups), "bin_factor": np.full(ng, bin_factor),
        "voxel_size_nm": np.full(ng, step_nm), "n_vectors": n_vec, "mean_u": mean_u,
        "tangential_excess": te, "tangential_excess_weighted": te_w,
        "kl_divergence": kl_plain, "kl_divergence_weighted": kl_weighted,
    }, GRADIENT_TABLES["gradient_summaries"])

    g_has = groups[has]
    reps = g_has.size
    theta_rows = {
        "particle": particle_column(np.concatenate([np.repeat(g_has, nb)] * 2)),
        "bin_factor": np.full(2 * reps * nb, bin_factor),
        "weighted": np.repeat([False, True], reps * nb),
        "theta_lo": np.tile(edges[:-1], 2 * reps), "theta_hi": np.tile(edges[1:], 2 * reps),
        "probability": np.concatenate([p_plain[has].ravel(), p_weighted[has].ravel()]),
        "reference": np.tile(ref, 2 * reps),
    }
    tables["theta_histograms"] = frame(theta_rows, GRADIENT_TABLES["theta_histograms"])

    with np.errstate(invalid="ignore", divide="ignore"):
        u_theta_mean = theta_usum / theta_count
    tables["u_theta_profiles"] = frame({
        "particle": particle_column(np.repeat(groups, nb)), "bin_factor": np.full(ng * nb, bin_factor),
        "theta_lo": np.tile(edges[:-1], ng), "theta_hi": np.tile(edges[1:], ng),
        "n": theta_count.ravel(), "mean_u": u_theta_mean.ravel(),
    }, GRADIENT_TABLES["u_theta_profiles"])

    # Vector size per folded-angle group φ.
    phi_count, phi_usum = sums["phi_n"], sums["phi_u"]
    quant = np.full((2, ng, npg), np.nan)
    if len(u):
        quant[:] = _group_quantiles(phi_key, u, ng * npg, (0.5, 0.9)).reshape(2, ng, npg)
        # the scan row: its own quantiles, or those of its only particle
        quant[:, 0, :] = quant_scan if n > 1 else quant[:, 1, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        phi_mean = phi_usum / phi_count
    tables["vector_size_stats"] = frame({
        "particle": particle_column(np.repeat(groups, npg)), "bin_factor": np.full(ng * npg, bin_factor),
        "phi_lo": np.tile(PHI_EDGES[:-1], ng), "phi_hi": np.tile(PHI_EDGES[1:], ng),
        "n": phi_count.ravel(), "mean_u": phi_mean.ravel(),
        "median_u": quant[0].ravel(), "p90_u": quant[1].ravel(),
    }, GRADIENT_TABLES["vector_size_stats"])

    nu = max(u_edges.size - 1, 0)
    hist = sums["u_hist"]
    tables["vector_size_histograms"] = frame({
        "particle": particle_column(np.repeat(groups, npg * nu)),
        "bin_factor": np.full(ng * npg * nu, bin_factor),
        "phi_lo": np.tile(np.repeat(PHI_EDGES[:-1], nu), ng),
        "phi_hi": np.tile(np.repeat(PHI_EDGES[1:], nu), ng),
        "u_lo": np.tile(u_edges[:-1], ng * npg) if nu else np.zeros(0),
        "u_hi": np.tile(u_edges[1:], ng * npg) if nu else np.zeros(0),
        "count": hist.ravel().astype(np.int64),
    }, GRADIENT_TABLES["vector_size_histograms"])
    return tables
