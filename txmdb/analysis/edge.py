"""Pre/post-edge normalisation and half-height edge energy, voxel-wise (DESIGN §5).

The kernel is a pure function on numpy arrays: no files, no database. One
:class:`EdgeKernel` is built per energy grid and parameter set; all the linear algebra
that depends only on the energies (least-squares projections for the pre- and post-edge
lines, the pre-edge residual operator) is done once in float64 at construction. Applying
the kernel to a slab of shape ``(n_energy, n_voxel)`` is then two BLAS matrix products
plus a short loop over the few energies of the edge window, evaluated with numexpr in the
slab's own precision (float32 for tomograms).

Definitions (follow DESIGN §5 exactly):

1. Least-squares straight line over the pre-edge window and over the post-edge window
   (windows inclusive, each needs at least 2 energies).
2. ``norm(E) = (mu(E) - pre(E)) / (post(E) - pre(E))``.
3. Edge energy: the first index ``k`` of the edge window with ``norm[k] >= 0.5`` and
   ``norm[k-1] < 0.5``, linearly interpolated between ``E[k-1]`` and ``E[k]``.
   ``k`` ranges over the window; ``k - 1`` is the grid point before it, which for the
   first ``k`` lies just below the window (the literal reading of DESIGN §5). The golden
   cases in ``shared/golden/`` reproduce to < 1e-6 eV either way (none of their voxels
   crosses there), so the literal reading stands.
4. Jump ``J = post(E_c) - pre(E_c)`` at the centre ``E_c`` of the edge window; masked when
   ``J < min_jump`` or (``sigma_pre > 0`` and ``J < snr * sigma_pre``), with ``sigma_pre``
   the RMS residual of the pre-edge fit. Voxels with NaN/inf anywhere in their spectrum
   and voxels without a crossing are masked too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numexpr as ne
import numpy as np

__all__ = ["EdgeParameters", "PRESETS", "edge_parameters", "EdgeResult", "EdgeKernel"]

_INF = math.inf


@dataclass(frozen=True)
class EdgeParameters:
    """Energy windows (eV, inclusive) and masking thresholds of the edge analysis.

    Attributes
    ----------
    pre, post, edge : tuple of float
        ``(low, high)`` in eV, inclusive; ``-inf``/``inf`` for open ends.
    min_jump : float
        Smallest accepted edge jump ``J`` (absorbance units).
    snr : float
        A voxel needs ``J >= snr * sigma_pre`` (skipped when ``sigma_pre == 0``).
    """

    pre: tuple[float, float]
    post: tuple[float, float]
    edge: tuple[float, float]
    min_jump: float = 0.1
    snr: float = 5.0


# K edges: Ni 8333, Co 7709, Mn 6539, Fe 7112 eV (tabulated e0). The Ni windows are the
# DESIGN defaults (pre <= e0-13, post >= e0+37, edge e0-8 .. e0+32); the other elements
# use the same offsets from their own e0, which fits the similar shapes of 3d-metal
# K edges of oxides (edge shifts of a few eV stay well inside the edge window).
def _k_edge_preset(e0: float) -> EdgeParameters:
    return EdgeParameters(pre=(-_INF, e0 - 13.0), post=(e0 + 37.0, _INF),
                          edge=(e0 - 8.0, e0 + 32.0))


PRESETS: dict[str, EdgeParameters] = {
    "Ni": _k_edge_preset(8333.0),   # pre <= 8320, post >= 8370, edge 8325-8365
    "Co": _k_edge_preset(7709.0),
    "Mn": _k_edge_preset(6539.0),
    "Fe": _k_edge_preset(7112.0),
}


def edge_parameters(element: str = "Ni", *, pre=None, post=None, edge=None,
                    min_jump=None, snr=None) -> EdgeParameters:
    """Preset windows for ``element`` with any of the fields overridden.

    Parameters
    ----------
    element : str
        One of ``PRESETS`` (case-insensitive: ``"ni"`` works).
    pre, post, edge : tuple of float, optional
        ``(low, high)`` windows in eV replacing the preset's.
    min_jump, snr : float, optional
        Masking thresholds replacing the defaults (0.1 and 5).

    Returns
    -------
    EdgeParameters

    Raises
    ------
    ValueError
        Unknown element, or a window whose low end is above its high end.
    """
    key = element.strip().capitalize()
    if key not in PRESETS:
        raise ValueError(f"unknown element {element!r}; presets: {', '.join(PRESETS)}")
    changes = {name: value for name, value in
               (("pre", pre), ("post", post), ("edge", edge),
                ("min_jump", min_jump), ("snr", snr)) if value is not None}
    for name in ("pre", "post", "edge"):
        if name in changes:
            lo, hi = (float(v) for v in changes[name])
            if not lo <= hi:
                raise ValueError(f"{name} window ({lo}, {hi}) has its low end above its high end")
            changes[name] = (lo, hi)
    for name in ("min_jump", "snr"):
        if name in changes:
            changes[name] = float(changes[name])
    return replace(PRESETS[key], **changes)


@dataclass
class EdgeResult:
    """Per-voxel results of :class:`EdgeKernel`; arrays have the spatial shape of ``mu``.

    Attributes
    ----------
    edge_ev : ndarray of float64
        Half-height edge energy in eV, NaN where masked. float64 because float32 has a
        resolution of ~1 meV at 8 keV, coarser than the 1e-4 eV reproducibility target.
    jump : ndarray of float32 (float64 for float64 input)
        ``J = post(E_c) - pre(E_c)``.
    sigma_pre : ndarray, same dtype as ``jump``
        RMS residual of the pre-edge fit.
    valid : ndarray of bool
        True where ``edge_ev`` is a number.
    """

    edge_ev: np.ndarray
    jump: np.ndarray
    sigma_pre: np.ndarray
    valid: np.ndarray


def _window(energies: np.ndarray, bounds: tuple[float, float], name: str) -> slice:
    """Index range of the (sorted) energies inside the inclusive ``bounds``; >= 2 of them."""
    lo, hi = bounds
    i0 = int(np.searchsorted(energies, lo, side="left"))
    i1 = int(np.searchsorted(energies, hi, side="right"))
    count = max(i1 - i0, 0)
    if count < 2:
        raise ValueError(
            f"{name} window {lo:g}..{hi:g} eV holds {count} energ{'y' if count == 1 else 'ies'}"
            f" of the grid {energies[0]:g}..{energies[-1]:g} eV; it needs at least 2")
    return slice(i0, i1)


def _line_projector(x: np.ndarray) -> np.ndarray:
    """(2, n) matrix mapping samples at abscissae ``x`` to LSQ (intercept, slope)."""
    design = np.stack([np.ones_like(x), x], axis=1)
    return np.linalg.pinv(design)


def _first_rise(above: np.ndarray, below: np.ndarray | None = None) -> np.ndarray:
    """Per column, the first row j with ``above[j + 1]`` and ``below[j]``; -1 if none.

    ``below`` defaults to ``~above``. Shapes (n_rows, n_cols) -> (n_cols,) int.
    """
    rise = above[1:] & (~above[:-1] if below is None else below[:-1])
    first = np.full(rise.shape[1], -1, dtype=np.intp)
    # Walk upward from the last row, so the lowest row writes last; each step is one
    # vectorised pass over a cache-resident row (argmax along axis 0 is ~5x slower).
    for j in range(rise.shape[0] - 1, -1, -1):
        np.copyto(first, j, where=rise[j])
    return first


# Voxels per block inside one call: the ~45 rows of the edge window of a block (and the
# temporaries derived from them) stay in the L2 cache, so the crossing search streams
# the slab from memory about once instead of once per expression.
_BLOCK = 16384


class EdgeKernel:
    """Edge normalisation precomputed for one sorted energy grid and parameter set.

    Apply it slab by slab: ``kernel(mu)`` with ``mu`` of shape ``(n_energy, *spatial)``.
    The result for a slab is the same as for the corresponding part of the whole array,
    because every voxel is independent.

    Parameters
    ----------
    energies_ev : array_like, shape (n_energy,)
        Strictly increasing energies in eV.
    params : EdgeParameters
        Windows and thresholds.

    Raises
    ------
    ValueError
        Energies not 1-D, not finite or not strictly increasing; a window with fewer
        than 2 energies; an edge window starting at the first energy (no ``E[k-1]``).
    """

    def __init__(self, energies_ev: np.ndarray, params: EdgeParameters):
        e = np.asarray(energies_ev, dtype=np.float64)
        if e.ndim != 1 or e.size < 2:
            raise ValueError(f"energies must be a 1-D array of at least 2 values, got shape {e.shape}")
        if not np.all(np.isfinite(e)):
            raise ValueError("energies contain NaN or inf")
        if not np.all(np.diff(e) > 0):
            raise ValueError("energies must be strictly increasing (sort the stack with them; "
                             "duplicates are not allowed)")
        self.energies_ev = e
        self.params = params
        # Windows of a sorted grid are contiguous: slices give views, not copies.
        self.pre = _window(e, params.pre, "pre-edge")
        self.post = _window(e, params.post, "post-edge")
        edge = _window(e, params.edge, "edge")
        # Candidates k of the crossing need a point k-1; the first grid point has none.
        k0 = max(edge.start, 1)
        if k0 >= edge.stop:
            raise ValueError("edge window holds only the first energy of the grid; "
                             "no crossing can be interpolated")
        self.edge = slice(k0, edge.stop)
        # rows k0-1 .. stop-1: every k and its k-1
        self._search = slice(k0 - 1, edge.stop)
        self.e_centre = 0.5 * (params.edge[0] + params.edge[1])
        # Abscissae relative to the centre of the edge window: the intercept of each line
        # is then its value at E_c (so J = a_post - a_pre), and the fit is well
        # conditioned in float32 (|x| ~ tens of eV instead of 8e3).
        x = e - self.e_centre
        self._x = x
        p_pre = _line_projector(x[self.pre])
        # One (5, n_energy) matrix applied to the full spectrum: rows a_pre, b_pre,
        # a_post, b_post and a plain sum. The sum row makes any NaN/inf anywhere in a
        # spectrum show up as a non-finite value in the BLAS product, so no separate
        # pass over the slab is needed to find non-finite voxels.
        coef = np.zeros((5, e.size))
        coef[0:2, self.pre] = p_pre
        coef[2:4, self.post] = _line_projector(x[self.post])
        coef[4, :] = 1.0
        # Residual operator of the pre-edge fit, (I - H) with H the hat matrix: explicit
        # residuals instead of sum(mu^2) - |Q^T mu|^2, which cancels badly in float32.
        design = np.stack([np.ones_like(x[self.pre]), x[self.pre]], axis=1)
        resid = np.eye(design.shape[0]) - design @ p_pre
        # [1, x] of the search rows: evaluates a line (intercept, slope) there by BLAS
        rows_x = np.stack([np.ones_like(x[self._search]), x[self._search]], axis=1)
        self._f64 = (coef, resid, rows_x)
        self._f32 = tuple(m.astype(np.float32) for m in self._f64)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _as_2d(mu: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        """View ``mu`` as (n_energy, n_voxel) float32/float64; returns the spatial shape."""
        mu = np.asarray(mu)
        if mu.dtype not in (np.float32, np.float64):
            # float16 (and integers) are promoted to float32, the tomogram working type
            mu = mu.astype(np.float32)
        spatial = mu.shape[1:]
        return np.ascontiguousarray(mu.reshape(mu.shape[0], -1)), spatial

    def _check(self, mu2: np.ndarray) -> None:
        if mu2.shape[0] != self.energies_ev.size:
            raise ValueError(f"mu has {mu2.shape[0]} energies along axis 0, the kernel was "
                             f"built for {self.energies_ev.size}")

    def _matrices(self, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Projection matrices in the slab's dtype (BLAS sgemm for float32 slabs)."""
        return self._f32 if dtype == np.float32 else self._f64

    # ------------------------------------------------------------------ API
    def __call__(self, mu: np.ndarray) -> EdgeResult:
        """Edge energy, jump, pre-edge noise and validity for every voxel of ``mu``.

        Parameters
        ----------
        mu : ndarray, shape (n_energy, *spatial)
            Absorbance; energies along axis 0 in the kernel's (ascending) order. Any
            float dtype; float32 is computed in float32. A 1-D spectrum (a bulk XAS
            measurement) gives 0-d result arrays.

        Returns
        -------
        EdgeResult
            Arrays of shape ``spatial``.
        """
        mu2, spatial = self._as_2d(mu)
        self._check(mu2)
        n_vox = mu2.shape[1]
        dt = mu2.dtype
        edge = np.empty(n_vox, dtype=np.float64)
        jump = np.empty(n_vox, dtype=dt)
        sigma = np.empty(n_vox, dtype=dt)
        valid = np.empty(n_vox, dtype=bool)
        for b0 in range(0, n_vox, _BLOCK):
            b1 = min(b0 + _BLOCK, n_vox)
            # a contiguous copy of the block: the rows of a column block of a big slab
            # are megabytes apart, which thrashes cache sets and TLB in every later pass
            block = np.ascontiguousarray(mu2[:, b0:b1])
            self._block(block, edge[b0:b1], jump[b0:b1], sigma[b0:b1], valid[b0:b1])
        return EdgeResult(edge_ev=edge.reshape(spatial), jump=jump.reshape(spatial),
                          sigma_pre=sigma.reshape(spatial), valid=valid.reshape(spatial))

    def _block(self, mu: np.ndarray, edge, jump, sigma, valid) -> None:
        """Fill the output views for one block ``mu`` of shape (n_energy, n_block).

        The crossing search avoids forming ``norm`` for every energy: where the step
        ``post(E) - pre(E)`` is positive on the whole search range, ``norm >= 0.5`` is
        ``mu >= mid(E)`` with ``mid = (pre + post) / 2``, one BLAS rank-2 product and a
        comparison per element. Voxels whose step changes sign inside the range (rare:
        they need a steep, crossing pair of lines and still pass the jump tests) take the
        literal ``norm`` path. Voxels failing the jump tests are masked whatever their
        crossing, so their search result is never used.
        """
        dt = mu.dtype
        coef, resid_op, rows_x = self._matrices(dt)
        n_blk = mu.shape[1]
        with np.errstate(invalid="ignore", over="ignore"):   # NaN/inf voxels: masked below
            a_pre, b_pre, a_post, b_post, total = coef @ mu
        resid = resid_op @ mu[self.pre]
        np.sqrt(np.einsum("ij,ij->j", resid, resid) / dt.type(resid.shape[0]), out=sigma)
        np.subtract(a_post, a_pre, out=jump)
        p = self.params
        # `total` (the plain sum of the spectrum) is non-finite iff any value is NaN/inf
        ok = ne.evaluate("(jump >= min_jump) & ((sigma <= 0) | (jump >= snr * sigma))"
                         " & (total == total) & (abs(total) < inf)",
                         local_dict={"jump": jump, "min_jump": dt.type(p.min_jump),
                                     "sigma": sigma, "snr": dt.type(p.snr), "total": total,
                                     "inf": dt.type(np.inf)})
        slope = b_post - b_pre                   # step(x) = jump + slope * x
        mid = np.stack([a_pre + a_post, b_pre + b_post]) * dt.type(0.5)
        rows = mu[self._search]
        dev = rows_x @ mid                       # mid(E) on the search rows, (n_rows, n_blk)
        np.subtract(rows, dev, out=dev)          # mu - mid = (norm - 0.5) * step
        x = rows_x[:, 1]
        x_lo, x_hi = x[0], x[-1]
        positive = ne.evaluate("(jump + slope * x_lo > 0) & (jump + slope * x_hi > 0)")
        first = _first_rise(dev >= 0)
        literal = np.flatnonzero(ok & ~positive)
        if literal.size:
            step = rows_x @ np.stack([jump[literal], slope[literal]])
            with np.errstate(divide="ignore", invalid="ignore"):
                q = dev[:, literal] / step       # norm - 0.5 (NaN/inf where step is 0)
            # `q < 0` is tested separately from `q >= 0`: a NaN norm is neither
            first[literal] = _first_rise(q >= 0, below=q < 0)
        found = first >= 0
        k = np.where(found, first, 0)
        cols = np.arange(n_blk)
        step0 = jump + slope * x[k]
        step1 = jump + slope * x[k + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            q0 = dev[k, cols] / step0
            q1 = dev[k + 1, cols] / step1
        np.logical_and(ok, found, out=valid)
        e = self.energies_ev[self._search]
        e0 = e[k]
        de = e[k + 1] - e0
        # (0.5 - n0) / (n1 - n0) == -q0 / (q1 - q0); the sum in float64, because
        # E ~ 8e3 eV needs more than float32's 24 bits for 1e-4 eV
        ne.evaluate("where(valid, e0 - q0 / (q1 - q0) * de, nan)",
                    local_dict={"valid": valid, "e0": e0, "q0": q0, "q1": q1, "de": de,
                                "nan": np.nan},
                    out=edge, casting="unsafe")

    def normalize(self, mu: np.ndarray) -> np.ndarray:
        """Normalised absorbance ``norm(E)`` for every energy and voxel.

        Parameters
        ----------
        mu : ndarray, shape (n_energy, *spatial)
            Absorbance as for ``__call__``.

        Returns
        -------
        ndarray, same shape as ``mu`` (float32 for float32 input)
            ``(mu - pre(E)) / (post(E) - pre(E))``; NaN/inf where the step is 0 or the
            spectrum is not finite.
        """
        mu2, spatial = self._as_2d(mu)
        self._check(mu2)
        dt = mu2.dtype
        a_pre, b_pre, a_post, b_post, _ = self._matrices(dt)[0] @ mu2
        x = self._x.astype(dt)[:, None]
        out = ne.evaluate("(mu2 - (a_pre + b_pre * x)) / ((a_post - a_pre) + (b_post - b_pre) * x)")
        return out.reshape((mu2.shape[0], *spatial))
