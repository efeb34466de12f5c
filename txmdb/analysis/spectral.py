"""White-line energy and linear-combination fitting (LCF), voxel-wise (DESIGN §11).

Both work on the normalised spectrum ``norm(E)`` of DESIGN §5 — the edge kernel's own
pre- and post-edge lines (:class:`~txmdb.analysis.edge.EdgeKernel`, its projectors) — and
are masked wherever the edge is (``EdgeResult.valid`` false). One :class:`SpectralKernel`
is built per energy grid, parameter set and reference set; everything that depends only
on those (the cubic's projector, the references on the stack's energies, the solutions of
every support of the LCF) is computed once, in float64, at construction. A call runs one
compiled pass over a slab (``txmdb.analysis._spectral_numba``); voxels are independent,
so slabs give the same numbers as the whole array.

Definitions (DESIGN §11, exactly):

**White line.** Over the window ``W = [w_lo, w_hi]`` (inclusive, at least 4 energies),
least squares ``p(t) = c0 + c1 t + c2 t² + c3 t³`` with ``t = (E - w_c) / w_h``
(``w_c``, ``w_h``: centre and half-width of ``W``). ``t*`` is the root of ``p'`` in
[-1, 1] with ``p''(t*) < 0`` (``c3 = 0``: the vertex when ``c2 < 0``); white-line energy
``w_c + w_h t*`` and height ``p(t*)``. No such root: masked.

**LCF.** Each reference ``R_i`` (energies, μ) is interpolated onto the stack's energies by
a not-a-knot cubic spline of its own points (``scipy.interpolate.CubicSpline``), then
normalised by the edge kernel exactly as a voxel is. Over the fit window ``F`` the weights
minimise ``Σ_F (norm - Σ_i w_i R_i)²`` subject to ``w_i >= 0`` and ``Σ w_i = 1``; maps:
``fraction:NAME`` per reference and ``rfactor = Σ res² / Σ norm²``. The problem is convex;
its optimum is the equality-constrained least-squares solution of its support. All
``2^k - 1`` supports are solved once (a (s+1)² KKT system each, linear in ``b = R norm``);
per voxel the feasible solution (all weights >= 0) of least residual is the optimum —
exact, with no iteration. References must cover every stack energy their normalisation
and ``F`` use, and be linearly independent on ``F``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from txmdb.analysis._threads import numba_threads
from txmdb.analysis.edge import EdgeKernel, EdgeParameters, EdgeResult, _outside_hint, _window

__all__ = ["EdgeMaps", "MapBuffers", "MAX_REFERENCES", "MIN_WHITE_LINE_ENERGIES", "SpectralKernel", "lcf_supports",
           "normalized_references", "white_line_projector"]

#: Fewest energies of a white-line window: a cubic has 4 coefficients.
MIN_WHITE_LINE_ENERGIES = 4
#: Most references of one LCF: 2^k - 1 supports are solved per voxel (255 for 8).
MAX_REFERENCES = 8
# A reference whose smallest singular value on F, relative to the largest of the set up to
# it, is below this is a linear combination of the ones before it (identical ones give ~1e-16).
_DEPENDENT_RCOND = 1e-8


#: Largest condition number of the white-line cubic's design matrix (t in [-1, 1]): energies
#: spread over the window give ~10-100; bunched ones (1e-11 eV apart) 1e20 and more.
_MAX_WHITE_LINE_CONDITION = 1e8


def white_line_projector(energies_ev: np.ndarray, window: tuple[float, float]):
    """Rows and least-squares projector of the white-line cubic.

    Parameters
    ----------
    energies_ev : ndarray
        Sorted stack energies, eV.
    window : (float, float)
        ``W`` in eV, inclusive.

    Returns
    -------
    rows : slice
        Indices of the energies in ``W``.
    projector : ndarray, shape (4, n_W)
        Maps ``norm`` on ``rows`` to ``(c0, c1, c2, c3)``.
    w_c, w_h : float
        Centre and half-width of ``W``.

    Raises
    ------
    ValueError
        ``W`` is empty, reversed, or holds fewer than 4 energies.
    """
    lo, hi = (float(v) for v in window)
    if not lo < hi:
        raise ValueError(f"white-line window {lo:g}..{hi:g} eV is empty; give LO:HI with LO < HI")
    i0 = int(np.searchsorted(energies_ev, lo, side="left"))
    i1 = int(np.searchsorted(energies_ev, hi, side="right"))
    if i1 - i0 < MIN_WHITE_LINE_ENERGIES:
        raise ValueError(f"white-line window {lo:g}..{hi:g} eV holds {max(i1 - i0, 0)} energies of the grid "
                         f"{energies_ev[0]:g}..{energies_ev[-1]:g} eV; the cubic needs at least "
                         f"{MIN_WHITE_LINE_ENERGIES}{_outside_hint(energies_ev, lo, hi)}")
    w_c, w_h = 0.5 * (lo + hi), 0.5 * (hi - lo)
    t = (energies_ev[i0:i1] - w_c) / w_h
    design = np.vander(t, 4, increasing=True)
    if not np.linalg.cond(design) < _MAX_WHITE_LINE_CONDITION:
        # energies bunched together (e.g. 1e-11 eV apart): any cubic fits, and one was reported
        raise ValueError(f"white-line window {lo:g}..{hi:g} eV: its {i1 - i0} energies are too close together "
                         f"for a cubic over it; give a window whose energies spread across it")
    return slice(i0, i1), np.linalg.pinv(design), w_c, w_h


def normalized_references(edge: EdgeKernel, references: Mapping[str, tuple[np.ndarray, np.ndarray]],
                          fit: slice) -> np.ndarray:
    """The references on the stack's energies, normalised as a voxel is, over ``fit``.

    Parameters
    ----------
    edge : EdgeKernel
        The stack's edge kernel (energies, pre- and post-edge windows).
    references : mapping of str to (energies_ev, mu)
        Each reference's own points (energies strictly increasing).
    fit : slice
        Rows of the fit window ``F``.

    Returns
    -------
    ndarray, shape (k, n_F)
        ``norm`` of each reference on ``F``.

    Raises
    ------
    ValueError
        A reference with bad points, not covering the energies its normalisation or ``F``
        uses, without a finite normalisation on ``F``, or linearly dependent on the ones
        before it over ``F`` (the message names it).
    """
    from scipy.interpolate import CubicSpline

    e = edge.energies_ev
    used = {"fit window": fit, "pre-edge": edge.pre, "post-edge": edge.post}
    rows = []
    names = list(references)
    for name in names:
        e_ref, mu_ref = (np.asarray(a, dtype=np.float64) for a in references[name])
        if e_ref.ndim != 1 or e_ref.shape != mu_ref.shape or e_ref.size < 4:
            raise ValueError(f"reference {name}: needs at least 4 (energy, mu) points")
        if not (np.all(np.isfinite(e_ref)) and np.all(np.isfinite(mu_ref)) and np.all(np.diff(e_ref) > 0)):
            raise ValueError(f"reference {name}: energies must be finite and strictly increasing, mu finite")
        for what, window in used.items():
            lo, hi = e[window.start], e[window.stop - 1]
            if lo < e_ref[0] or hi > e_ref[-1]:
                raise ValueError(f"reference {name} covers {e_ref[0]:g}..{e_ref[-1]:g} eV, not the {what} "
                                 f"energies {lo:g}..{hi:g} eV of the stack")
        inside = (e >= e_ref[0]) & (e <= e_ref[-1])
        mu_stack = np.full(e.shape, np.nan)
        mu_stack[inside] = CubicSpline(e_ref, mu_ref, bc_type="not-a-knot")(e[inside])
        norm = edge.normalize(mu_stack)[fit]
        if not np.all(np.isfinite(norm)):
            raise ValueError(f"reference {name}: no edge step on the stack's energies "
                             "(post-edge and pre-edge lines meet)")
        rows.append(norm)
    refs = np.array(rows, dtype=np.float64).reshape(len(names), -1)
    for i in range(1, len(names)):
        sv = np.linalg.svd(refs[:i + 1], compute_uv=False)
        if sv[-1] <= _DEPENDENT_RCOND * sv[0]:
            raise ValueError(f"reference {names[i]} is linearly dependent on {', '.join(names[:i])} over the "
                             f"fit window {e[fit.start]:g}..{e[fit.stop - 1]:g} eV (identical or proportional "
                             "spectra cannot be told apart)")
    return refs


def lcf_supports(gram: np.ndarray):
    """Solutions of the equality-constrained problem on every support of ``k`` references.

    On support ``S`` the minimiser of ``|norm - R_S^T w|²`` with ``Σ w = 1`` solves the KKT
    system ``[[G_SS, 1], [1^T, 0]] [w; λ] = [b_S; 1]``: ``w_S = A_S b_S + c_S``.

    Parameters
    ----------
    gram : ndarray, shape (k, k)
        ``G = R R^T`` over the fit window (positive definite).

    Returns
    -------
    index : ndarray of int64, shape (2^k - 1, k)
        Members of each support (padded with 0).
    size : ndarray of int64, shape (2^k - 1,)
    a : ndarray, shape (2^k - 1, k, k)
    c : ndarray, shape (2^k - 1, k)
    """
    k = gram.shape[0]
    supports = [s for n in range(1, k + 1) for s in itertools.combinations(range(k), n)]
    index = np.zeros((len(supports), k), dtype=np.int64)
    size = np.zeros(len(supports), dtype=np.int64)
    a = np.zeros((len(supports), k, k))
    c = np.zeros((len(supports), k))
    for j, s in enumerate(supports):
        n = len(s)
        kkt = np.zeros((n + 1, n + 1))
        kkt[:n, :n] = gram[np.ix_(s, s)]
        kkt[:n, n] = kkt[n, :n] = 1.0
        inv = np.linalg.inv(kkt)
        index[j, :n] = s
        size[j] = n
        a[j, :n, :n] = inv[:n, :n]
        c[j, :n] = inv[:n, n]
    return index, size, a, c


@dataclass
class EdgeMaps(EdgeResult):
    """An :class:`~txmdb.analysis.edge.EdgeResult` with the spectral maps of the same voxels.

    Attributes
    ----------
    maps : dict of str to ndarray
        ``white_line``, ``white_line_height``, ``fraction:NAME``…, ``rfactor`` as computed
        (see :meth:`SpectralKernel.__call__`); NaN where masked. float64, or views of the
        :class:`MapBuffers` given to :meth:`SpectralKernel.with_edges`.
    """

    maps: dict[str, np.ndarray] = field(default_factory=dict)


class SpectralKernel:
    """White-line and LCF maps for one sorted energy grid, edge parameters and references.

    Apply it slab by slab: ``kernel(mu, valid)`` with ``mu`` of shape
    ``(n_energy, *spatial)`` as for :class:`~txmdb.analysis.edge.EdgeKernel`.

    Parameters
    ----------
    energies_ev : array_like, shape (n_energy,)
        Strictly increasing energies, eV.
    params : EdgeParameters
        The edge analysis' windows: ``norm`` and the mask are the edge kernel's.
    white_line : (float, float), optional
        Window ``W`` in eV; None: no white-line maps.
    references : mapping of str to (energies_ev, mu), optional
        Named reference spectra in their own points (``mu`` raw or normalised: both are
        normalised here); None or empty: no LCF.
    lcf_window : (float, float), optional
        Fit window ``F`` in eV; required with references.

    Raises
    ------
    ValueError
        Any window or edge problem of :class:`EdgeKernel`; a white-line window with fewer
        than 4 energies; more than ``MAX_REFERENCES`` references; a fit window with fewer
        than 2 energies; a reference that does not cover what it is used on, or is linearly
        dependent on the ones before it over ``F`` (the message names the reference).
    """

    def __init__(self, energies_ev, params: EdgeParameters, *,
                 white_line: tuple[float, float] | None = None,
                 references: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 lcf_window: tuple[float, float] | None = None):
        self.edge = EdgeKernel(energies_ev, params)
        e = self.edge.energies_ev
        self.white_line = None if white_line is None else (float(white_line[0]), float(white_line[1]))
        if white_line is None:
            self._w_rows, self._p_wl, self._w_c, self._w_h = slice(0, 0), np.zeros((4, 0)), 0.0, 1.0
        else:
            self._w_rows, self._p_wl, self._w_c, self._w_h = white_line_projector(e, self.white_line)
        self.names = tuple(references or ())
        if len(self.names) > MAX_REFERENCES:
            raise ValueError(f"{len(self.names)} references; LCF takes at most {MAX_REFERENCES}")
        if self.names:
            if lcf_window is None:
                raise ValueError("LCF needs a fit window")
            self.lcf_window = (float(lcf_window[0]), float(lcf_window[1]))
            if not self.lcf_window[0] < self.lcf_window[1]:
                raise ValueError(f"fit window {self.lcf_window[0]:g}..{self.lcf_window[1]:g} eV is empty; "
                                 "give LO:HI with LO < HI")
            self._f_rows = _window(e, self.lcf_window, "fit")
            self.references = normalized_references(self.edge, references, self._f_rows)
        else:
            self.lcf_window = None
            self._f_rows = slice(0, 0)
            self.references = np.zeros((0, 0))
        self.gram = self.references @ self.references.T
        self._coef, self._r0 = self._coefficients()
        self._supports = lcf_supports(self.gram) if self.names else (
            np.zeros((0, 0), np.int64), np.zeros(0, np.int64), np.zeros((0, 0, 0)), np.zeros((0, 0)))

    def map_buffers(self, dtype=np.float32) -> "MapBuffers":
        """Reusable output buffers of :meth:`with_edges` for this kernel's maps."""
        return MapBuffers(len(self.names), dtype)

    @property
    def map_names(self) -> tuple[str, ...]:
        """Keys of the maps a call returns, in order."""
        wl = ("white_line", "white_line_height") if self.white_line else ()
        lcf = tuple(f"fraction:{n}" for n in self.names) + (("rfactor",) if self.names else ())
        return wl + lcf

    def __call__(self, mu: np.ndarray, valid: np.ndarray | None = None, *,
                 threads: int = 1) -> dict[str, np.ndarray]:
        """The maps of every voxel of ``mu``.

        Parameters
        ----------
        mu : ndarray, shape (n_energy, *spatial)
            Absorbance, energies along axis 0 in ascending order (float32 or float64).
        valid : ndarray of bool, shape spatial, optional
            The edge kernel's validity of the same voxels (``EdgeResult.valid``); computed
            here when omitted.
        threads : int
            Threads over blocks of voxels; the result does not depend on it.

        Returns
        -------
        dict of str to ndarray of float64, shape spatial
            ``white_line`` (eV) and ``white_line_height`` when a window was given,
            ``fraction:NAME`` per reference and ``rfactor`` with references; NaN where masked.
        """
        mu2, spatial = self.edge._as_2d(mu)
        self.edge._check(mu2)
        if valid is None:
            return self.with_edges(mu, threads=threads).maps
        valid = np.ascontiguousarray(np.asarray(valid, dtype=bool).reshape(-1))
        if valid.size != mu2.shape[1]:
            raise ValueError(f"valid has {valid.size} voxels, mu {mu2.shape[1]}")
        outputs = self._outputs(mu2.shape[1])
        if mu2.shape[1] and self.map_names:
            with numba_threads(threads):
                self._compiled().spectral_pass(mu2, valid, *self._edge_arrays(), *self._spectral_arrays(), *outputs)
        return self._maps(outputs, spatial)

    def with_edges(self, mu: np.ndarray, *, threads: int = 1, out: "MapBuffers | None" = None) -> "EdgeMaps":
        """The edge kernel's result and the maps of ``mu`` in one sweep over it.

        The same numbers as ``self.edge(mu)`` and ``self(mu, that.valid)``, for little more
        than the edge kernel's cost: each block of voxels is read once for both.

        Parameters
        ----------
        mu : ndarray, shape (n_energy, *spatial)
        threads : int
        out : MapBuffers, optional
            Write the maps into these buffers (:meth:`map_buffers`) in their dtype, each value
            rounded once from the float64 result (float32: ``astype(np.float32)`` of the maps
            without ``out``, bit for bit); the maps returned are views of them, overwritten
            by the next call with the same buffers. None: new float64 maps.

        Returns
        -------
        EdgeMaps
            The edge result with the maps of ``__call__`` in ``maps``.
        """
        edge = self.edge
        if not self.map_names:
            result = edge(mu, threads=threads)
            return EdgeMaps(result.edge_ev, result.jump, result.sigma_pre, result.valid, {})
        mu2, spatial, n_vox, e_edge, jump, sigma, valid = edge._prepare(mu)
        outputs = self._outputs(n_vox) if out is None else out.outputs(n_vox)
        if n_vox:
            p = edge.params
            with numba_threads(threads):
                self._compiled().fused_pass(
                    mu2, edge._p_pre_c, edge.pre.start, edge._p_post_c, edge.post.start, edge._x,
                    edge.energies_ev, edge._search.start, edge._search.stop, float(p.min_jump), float(p.snr),
                    e_edge, jump, sigma, valid, *self._spectral_arrays(), *outputs)
        return EdgeMaps(edge_ev=e_edge.reshape(spatial), jump=jump.reshape(spatial),
                        sigma_pre=sigma.reshape(spatial), valid=valid.reshape(spatial),
                        maps=self._maps(outputs, spatial))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _compiled():
        from txmdb.analysis import _spectral_numba

        return _spectral_numba

    def _edge_arrays(self) -> tuple:
        """The edge kernel's line projectors, as the compiled pass takes them."""
        e = self.edge
        return e._p_pre_c, e.pre.start, e._p_post_c, e.post.start, e._x

    def _spectral_arrays(self) -> tuple:
        f, w = self._f_rows, self._w_rows
        return (self._coef, self._r0, w.start, w.stop, f.start, f.stop, self.white_line is not None,
                self._w_c, self._w_h,
                *self._supports, self.gram)

    def _coefficients(self) -> tuple[np.ndarray, int]:
        """Per row of W ∪ F (from its first row): the white-line projector's column and
        the references' values, zero where a row is outside that window. The compiled
        pass accumulates ``coef @ norm`` from it."""
        spans = [s for s in (self._w_rows, self._f_rows) if s.stop > s.start]
        r0 = min((s.start for s in spans), default=0)
        r1 = max((s.stop for s in spans), default=0)
        coef = np.zeros((4 + len(self.names), r1 - r0))
        w, f = self._w_rows, self._f_rows
        coef[:4, w.start - r0:w.stop - r0] = self._p_wl
        coef[4:, f.start - r0:f.stop - r0] = self.references
        return coef, r0

    def _outputs(self, n: int) -> tuple:
        """Empty white line, height, fractions (k, n) and R-factor of ``n`` voxels."""
        return np.empty(n), np.empty(n), np.empty((len(self.names), n)), np.empty(n)

    def _maps(self, outputs: tuple, spatial: tuple) -> dict[str, np.ndarray]:
        wl, height, fractions, rfactor = outputs
        maps = {"white_line": wl, "white_line_height": height, "rfactor": rfactor}
        maps.update({f"fraction:{name}": fractions[i] for i, name in enumerate(self.names)})
        return {name: maps[name].reshape(spatial) for name in self.map_names}


class MapBuffers:
    """Output buffers of :meth:`SpectralKernel.with_edges`, reused from slab to slab.

    Fresh float64 maps per slab cost their page faults (the kernel's first write) and a
    float64 → float32 copy for the results file afterwards, on the thread that runs the
    kernel; the compiled pass writes into these instead, in the results file's dtype. They
    grow to the largest slab seen; one call's maps are views of them.

    Parameters
    ----------
    n_references : int
        References of the kernel (fraction maps).
    dtype : numpy dtype
        float32 (the results file's) or float64.
    """

    def __init__(self, n_references: int, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"map buffers are float32 or float64, not {self.dtype}")
        self._k = int(n_references)
        self._grow(0)

    def _grow(self, n: int) -> None:
        self._size = n
        self._wl, self._h, self._r = (np.empty(n, self.dtype) for _ in range(3))
        self._frac = np.empty(self._k * n, self.dtype)

    def outputs(self, n: int) -> tuple:
        """White line, height, fractions (k, n) and R-factor of ``n`` voxels: C-contiguous
        views of the buffers (the fractions' rows one after the other)."""
        if n > self._size:
            self._grow(n)
        return self._wl[:n], self._h[:n], self._frac[:self._k * n].reshape(self._k, n), self._r[:n]
