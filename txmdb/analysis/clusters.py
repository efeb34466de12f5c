"""Phase clusters of the normalised spectra, out of core (DESIGN §11).

k-means (scikit-learn) on ``norm(E)`` over the edge window of the valid voxels — the
voxels with an edge energy, the same mask as the edge map — in three steps that never
hold the stack:

1. **Sample** (:class:`SpectraSample`): a uniform random sample of at most
   :data:`MAX_SAMPLE` valid voxels, drawn slab by slab. Every voxel gets a pseudo-random
   key from its flat index and the seed (splitmix64, a bijection, so no two voxels tie);
   the sample is the voxels with the smallest keys. That is a uniform sample without
   replacement, and it is the same whatever the slab size or order. Only voxels whose key
   can still enter the sample are kept (as absorbance) and normalised once at the end.
2. **Fit** (:func:`fit_clusters`): k-means on the sample (``n_init`` seeded restarts), the
   centres numbered by their mean over the edge window, descending (a reproducible order;
   an earlier edge or a stronger white line raises the mean); the PCA explained-variance
   ratios of the same sample beside them.
3. **Assign** (:class:`ClusterAssigner`): every valid voxel, slab by slab, to its nearest
   centre (squared Euclidean distance, each voxel on its own, so slab and block sizes do
   not change a label); the size and mean spectrum of each cluster are summed on the way.

Normalised spectra come from :meth:`txmdb.analysis.edge.EdgeKernel.normalize`, the
analysis' own normalisation. A valid voxel whose normalised window is not finite (its
step ``post(E) - pre(E)`` is 0 at some energy of the window) is left out of the sample and
gets no cluster.

The kernels are pure (numpy arrays in, arrays out); :mod:`txmdb.pipeline` reads the
slabs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from txmdb.analysis.edge import EdgeKernel, _window

__all__ = ["MAX_SAMPLE", "NO_CLUSTER", "SEED", "ClusterAssigner", "ClusterModel", "SpectraSample",
           "cluster_tables", "edge_window", "fit_clusters", "nearest_centre", "normalized_window", "sample_keys"]

#: Largest sample the k-means and the PCA are fitted on (spectra).
MAX_SAMPLE = 200_000
#: Label of a voxel without a cluster (masked) in the label map.
NO_CLUSTER = -1
#: k-means restarts from seeded k-means++ starts; the lowest inertia wins.
N_INIT = 4
#: Seed of the sample keys, the k-means starts and the PCA solver.
SEED = 0
# Voxels normalised at a time: the float64 spectra of a block stay a few tens of MB.
_BLOCK = 32768


def edge_window(energies_ev: np.ndarray, params) -> slice:
    """Indices of the (sorted) energies inside the edge window of ``params``, inclusive."""
    return _window(np.asarray(energies_ev, dtype=np.float64), params.edge, "edge")


def sample_keys(flat_index: np.ndarray, seed: int) -> np.ndarray:
    """Pseudo-random uint64 key of each voxel: splitmix64 of ``flat_index`` and ``seed``.

    A bijection of ``flat_index`` for a given seed: distinct voxels never share a key.
    """
    with np.errstate(over="ignore"):
        z = np.asarray(flat_index, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def normalized_window(kernel: EdgeKernel, mu2: np.ndarray, columns: np.ndarray | None, window: slice) -> np.ndarray:
    """``norm(E)`` over ``window`` of the voxels ``columns`` of ``mu2``.

    Parameters
    ----------
    kernel : EdgeKernel
    mu2 : ndarray, shape (n_energy, n_voxel)
        Absorbance, voxels flattened.
    columns : ndarray of int, optional
        Voxels (columns of ``mu2``) to normalise; None: all.
    window : slice
        Energy indices kept.

    Returns
    -------
    ndarray of float64, shape (number of voxels, window length)
    """
    n = mu2.shape[1] if columns is None else columns.size
    n_w = len(range(*window.indices(mu2.shape[0])))
    out = np.empty((n, n_w), dtype=np.float64)
    for b0 in range(0, n, _BLOCK):
        block = mu2[:, b0:b0 + _BLOCK] if columns is None else mu2[:, columns[b0:b0 + _BLOCK]]
        out[b0:b0 + block.shape[1]] = kernel.normalize(block, rows=window).T
    return out


def _finite_rows(spectra: np.ndarray) -> np.ndarray:
    return np.isfinite(spectra).all(axis=1)


class SpectraSample:
    """A uniform random sample of valid voxels' normalised windows, gathered slab by slab.

    Parameters
    ----------
    kernel : EdgeKernel
    window : slice
        Energy indices of the edge window.
    size : int
        Largest sample.
    seed : int
        Seed of the keys (:func:`sample_keys`).

    Notes
    -----
    The sample is the (at most) ``size`` valid voxels whose keys are the smallest, less
    any whose normalised window is not finite: :meth:`add` the slabs in any partition and
    order, the result is the same. A slab's voxels are kept as absorbance while they may
    still leave the sample, and normalised once, by :meth:`result`.
    """

    def __init__(self, kernel: EdgeKernel, window: slice, *, size: int = MAX_SAMPLE, seed: int = 0):
        if size < 1:
            raise ValueError(f"sample size must be >= 1, got {size}")
        self.kernel, self.window, self.size, self.seed = kernel, window, int(size), int(seed)
        self._keys = np.empty(0, dtype=np.uint64)
        self._index = np.empty(0, dtype=np.int64)
        self._mu: np.ndarray | None = None            # (n, n_energy) absorbance of the sampled voxels

    def add(self, mu: np.ndarray, valid: np.ndarray, offset: int) -> None:
        """Offer the valid voxels of one slab.

        Parameters
        ----------
        mu : ndarray, shape (n_energy, *slab_spatial)
            Absorbance of the slab.
        valid : ndarray of bool, shape slab_spatial
        offset : int
            Flat index (in the whole map) of the slab's first voxel.
        """
        mu2 = mu.reshape(mu.shape[0], -1)
        local = np.flatnonzero(np.asarray(valid).reshape(-1))
        keys = sample_keys(local.astype(np.int64) + int(offset), self.seed)
        if self._keys.size >= self.size:          # only keys below the current largest can enter
            below = keys < self._keys.max()
            local, keys = local[below], keys[below]
        if local.size > self.size:                # this slab alone cannot bring more than `size`
            keep = np.argpartition(keys, self.size - 1)[:self.size]
            local, keys = local[keep], keys[keep]
        self._merge(keys, local, mu2, int(offset))

    def add_slab(self, start: int, stop: int, mu: np.ndarray, result) -> None:
        """:meth:`add` as the edge pass' per-slab hook: slices ``[start, stop)``, their EdgeResult."""
        self.add(mu, result.valid, start * int(np.prod(mu.shape[2:])))

    def _merge(self, keys: np.ndarray, local: np.ndarray, mu2: np.ndarray, offset: int) -> None:
        """Keep the ``size`` smallest keys of the sample and the slab's candidates; copy in only the
        absorbance of the candidates kept."""
        n_old = self._keys.size
        keys = np.concatenate([self._keys, keys])
        keep = np.argpartition(keys, self.size - 1)[:self.size] if keys.size > self.size else np.arange(keys.size)
        old, new = keep[keep < n_old], keep[keep >= n_old] - n_old
        taken = mu2[:, local[new]].T
        self._keys = np.concatenate([keys[old], keys[n_old + new]])     # the order of _index and _mu
        self._index = np.concatenate([self._index[old], local[new].astype(np.int64) + offset])
        self._mu = taken.copy() if self._mu is None else np.concatenate(
            [self._mu[old], taken.astype(self._mu.dtype, copy=False)])

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(flat_index, spectra)`` of the sample, in flat-index order; spectra (n, window length)."""
        order = np.argsort(self._index, kind="stable")
        if self._mu is None:
            n_w = len(range(*self.window.indices(self.kernel.energies_ev.size)))
            return self._index, np.empty((0, n_w))
        spectra = normalized_window(self.kernel, self._mu[order].T, None, self.window)
        finite = _finite_rows(spectra)
        return self._index[order][finite], spectra[finite]


@dataclass
class ClusterModel:
    """A fitted k-means model and the PCA of the same sample.

    Attributes
    ----------
    centres : ndarray of float64, shape (k, n_window)
        Cluster centres, numbered by their mean over the window, descending.
    explained_variance_ratio : ndarray of float64, shape (n_components,)
        PCA of the sample, all ``min(n_sample, n_window)`` components.
    n_sample : int
        Spectra the model was fitted on.
    """

    centres: np.ndarray
    explained_variance_ratio: np.ndarray
    n_sample: int

    @property
    def k(self) -> int:
        return int(self.centres.shape[0])


def fit_clusters(spectra: np.ndarray, k: int, *, seed: int = 0) -> ClusterModel:
    """k-means with ``k`` clusters and the PCA explained variance of ``spectra``.

    Parameters
    ----------
    spectra : ndarray of float64, shape (n, n_window)
        The sample (finite values).
    k : int
        Clusters, ``1 <= k <= n``.
    seed : int
        ``random_state`` of the k-means starts and of the PCA solver.

    Returns
    -------
    ClusterModel

    Raises
    ------
    ValueError
        ``k`` < 1 or more clusters than spectra.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    spectra = np.asarray(spectra, dtype=np.float64)
    n = spectra.shape[0]
    if k < 1:
        raise ValueError(f"the number of clusters must be at least 1, got {k}")
    if k > n:
        raise ValueError(f"{k} clusters for {n} valid voxel{'s' if n != 1 else ''}")
    with warnings.catch_warnings():
        # fewer distinct spectra than clusters: k-means says so and still labels every voxel
        warnings.simplefilter("ignore")
        centres = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(spectra).cluster_centers_
    centres = centres[np.argsort(-centres.mean(axis=1), kind="stable")]
    if n >= 2:
        # n >> window length: the eigen-decomposition of the covariance, not an SVD of the sample
        ratio = PCA(svd_solver="covariance_eigh").fit(spectra).explained_variance_ratio_
    else:                                     # one spectrum: no variance to explain
        ratio = np.empty(0)
    return ClusterModel(centres=np.ascontiguousarray(centres), explained_variance_ratio=np.asarray(ratio, float),
                        n_sample=int(n))


def nearest_centre(spectra: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean distance) of each row; the first on a tie.

    Each row's distances are computed on their own (no matrix product whose rounding
    depends on how many rows come together), so a label never depends on the block size.
    """
    best = np.full(spectra.shape[0], np.inf)
    label = np.zeros(spectra.shape[0], dtype=np.int16)
    for j, centre in enumerate(centres):
        diff = spectra - centre
        d = np.einsum("ij,ij->i", diff, diff)
        closer = d < best
        best[closer] = d[closer]
        label[closer] = j
    return label


class ClusterAssigner:
    """Labels every valid voxel slab by slab and sums each cluster's size and spectrum.

    Parameters
    ----------
    kernel : EdgeKernel
    window : slice
        Energy indices of the edge window.
    model : ClusterModel
    """

    def __init__(self, kernel: EdgeKernel, window: slice, model: ClusterModel):
        self.kernel, self.window, self.model = kernel, window, model
        self.counts = np.zeros(model.k, dtype=np.int64)
        self.sums = np.zeros_like(model.centres)

    def __call__(self, mu: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Cluster labels of one slab.

        Parameters
        ----------
        mu : ndarray, shape (n_energy, *slab_spatial)
        valid : ndarray of bool, shape slab_spatial

        Returns
        -------
        ndarray of int16, shape slab_spatial
            0 .. k-1, :data:`NO_CLUSTER` where masked.
        """
        mu2 = mu.reshape(mu.shape[0], -1)
        labels = np.full(mu2.shape[1], NO_CLUSTER, dtype=np.int16)
        cols = np.flatnonzero(np.asarray(valid).reshape(-1))
        for b0 in range(0, cols.size, _BLOCK):
            block = cols[b0:b0 + _BLOCK]
            spectra = normalized_window(self.kernel, mu2[:, block], None, self.window)
            finite = _finite_rows(spectra)
            spectra, block = spectra[finite], block[finite]
            lab = nearest_centre(spectra, self.model.centres)
            labels[block] = lab
            self.counts += np.bincount(lab, minlength=self.model.k)
            for j in np.unique(lab):
                self.sums[j] += spectra[lab == j].sum(axis=0)
        return labels.reshape(np.asarray(valid).shape)

    def mean_spectra(self) -> np.ndarray:
        """Mean normalised spectrum of each cluster over the voxels assigned so far (NaN if none)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.counts[:, None]


def cluster_tables(model: ClusterModel, assigner: ClusterAssigner, energies_ev: np.ndarray):
    """The catalogue's ``cluster_spectra`` and ``pca_variance`` tables of a finished assignment.

    Parameters
    ----------
    model : ClusterModel
    assigner : ClusterAssigner
        After every slab went through it.
    energies_ev : ndarray
        The stack's energies (all of them; the window's rows are taken here).

    Returns
    -------
    dict of str to DataFrame
        ``cluster_spectra``: ``cluster, energy_index, energy_ev, mean_norm, n_voxels`` (one
        row per cluster and energy of the edge window; ``energy_index`` into the stack's
        sorted energies); ``pca_variance``: ``component`` (1-based),
        ``explained_variance_ratio``.
    """
    import pandas as pd

    index = np.arange(energies_ev.size)[assigner.window]
    k, n_w = model.k, index.size
    spectra = pd.DataFrame({
        "cluster": np.repeat(np.arange(k), n_w), "energy_index": np.tile(index, k),
        "energy_ev": np.tile(np.asarray(energies_ev, dtype=np.float64)[index], k),
        "mean_norm": assigner.mean_spectra().reshape(-1), "n_voxels": np.repeat(assigner.counts, n_w)})
    ratio = model.explained_variance_ratio
    pca = pd.DataFrame({"component": np.arange(1, ratio.size + 1), "explained_variance_ratio": ratio})
    return {"cluster_spectra": spectra, "pca_variance": pca}
