"""Pre/post-edge normalisation and half-height edge energy, voxel-wise (DESIGN §5).

The kernel is a pure function on numpy arrays: no files, no database. One
:class:`EdgeKernel` is built per energy grid and parameter set; all the linear algebra
that depends only on the energies (least-squares projectors of the pre- and post-edge
lines) is done once in float64 at construction.

Results are float64-exact whatever the input dtype: every number that reaches a result
(line coefficients, ``sigma_pre``, ``J``, the masks, the interpolated edge energy) is
computed in float64. For float32 stacks (tomograms) only the *search* for the crossing
index runs in float32, and it is certified: a float32 sign of ``mu - mid(E)`` whose
magnitude is below a rigorous bound of its rounding error sends that voxel through the
float64 search instead (none in the 20-million-voxel benchmark stack), so the crossing
index is the float64 one. The float64 work is confined to the pre/post rows (a few flops
per voxel) and to two gathered rows per voxel, so the kernel costs what the previous
float32-only kernel cost (less, measured; docs/performance.md); searching in float64,
as float64 input does, is ~10 % slower.

Two implementations, same results (bit-identical with OpenBLAS, whose dgemm rounds as a
chain of fused multiply-adds, which the compiled kernel reproduces; masks identical and
edge energies within an ulp otherwise; ``tests/test_edge.py::test_numba_path_equals_numpy_path``):

- default, when numba is importable: one compiled pass over blocks of 512 voxels
  (``txmdb.analysis._edge_numba``), all in float64, ~0.05 µs/voxel on one thread;
- fallback: the numpy/numexpr/BLAS path (``EdgeKernel._call_numpy``) described above,
  ~0.13-0.15 µs/voxel.

Definitions (follow DESIGN §5 exactly):

1. Least-squares straight line over the pre-edge window and over the post-edge window
   (windows inclusive, each needs at least 2 energies).
2. ``norm(E) = (mu(E) - pre(E)) / (post(E) - pre(E))``.
3. Edge energy: the first index ``k`` of the edge window with ``norm[k] >= 0.5`` and
   ``norm[k-1] < 0.5``, linearly interpolated between ``E[k-1]`` and ``E[k]``.
   ``k`` ranges over the window; ``k - 1`` is the grid point before it, which for the
   first ``k`` lies just below the window (the literal reading of DESIGN §5). The golden
   cases in ``tests/data/golden/`` reproduce to < 1e-6 eV either way (none of their voxels
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

from txmdb.vocabulary import K_EDGE_EV

_NUMBA_UNSET = object()
_edge_numba = _NUMBA_UNSET     # the compiled kernel module, imported on first use


def _numba_kernel():
    """``txmdb.analysis._edge_numba`` or None without numba (numpy path). Imported lazily:
    numba and llvmlite take ~0.3 s and ~100 MB to import, which only the kernel needs."""
    global _edge_numba
    if _edge_numba is _NUMBA_UNSET:
        try:
            from txmdb.analysis import _edge_numba as mod
        except ImportError:  # pragma: no cover - numba not installed
            mod = None
        _edge_numba = mod
    return _edge_numba

__all__ = ["EdgeParameters", "PRESETS", "WHITE_LINE_PRESETS", "LCF_WINDOW_PRESETS", "edge_parameters", "EdgeResult",
           "EdgeKernel"]

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


# Ni: pre <= 8320, post >= 8370, edge 8325-8365.
PRESETS: dict[str, EdgeParameters] = {element: _k_edge_preset(e0) for element, e0 in K_EDGE_EV.items()}

# Spectral maps (DESIGN §11), same offsets from e0 for every element: the white-line window
# W (Ni 8345-8358 eV) and the LCF fit window F (Ni 8325-8375 eV).
WHITE_LINE_PRESETS: dict[str, tuple[float, float]] = {el: (e0 + 12.0, e0 + 25.0) for el, e0 in K_EDGE_EV.items()}
LCF_WINDOW_PRESETS: dict[str, tuple[float, float]] = {el: (e0 - 8.0, e0 + 42.0) for el, e0 in K_EDGE_EV.items()}


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
    jump : ndarray of float64
        ``J = post(E_c) - pre(E_c)``.
    sigma_pre : ndarray of float64
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
            f" of the grid {energies[0]:g}..{energies[-1]:g} eV; it needs at least 2{_outside_hint(energies, lo, hi)}")
    return slice(i0, i1)


def _outside_hint(energies: np.ndarray, lo: float, hi: float) -> str:
    """The likely cause when the whole grid lies on one side of a window: the windows (or
    the element they are preset for) belong to another edge than the stack's."""
    side = "above" if energies[0] > hi else "below" if energies[-1] < lo else None
    if side is None:
        return ""
    return f" (the whole grid lies {side} it: is the element, or are the windows, those of this stack's edge?)"


def _line_projector(x: np.ndarray) -> np.ndarray:
    """(2, n) matrix mapping samples at abscissae ``x`` to LSQ (intercept, slope)."""
    design = np.stack([np.ones_like(x), x], axis=1)
    return np.linalg.pinv(design)


def _first_rise(above: np.ndarray, below: np.ndarray | None = None) -> np.ndarray:
    """Per column, the first row j with ``above[j + 1]`` and ``below[j]``; -1 if none.

    ``below`` defaults to ``~above``. Shapes (n_rows, n_cols) -> (n_cols,) int.
    """
    n = above.shape[0] - 1
    if below is None:
        rise = np.greater(above[1:], above[:-1])      # True > False: a rise
    else:
        rise = above[1:] & below[:-1]
    # Weight row j by n - j and take the maximum over the rows: n - first rise (0 if
    # none). Two passes over small integers, vectorised along the contiguous voxel axis
    # (argmax along axis 0 is ~20x slower, a loop over rows ~2x).
    wtype = np.uint8 if n <= np.iinfo(np.uint8).max else np.uint16
    weighted = rise.astype(wtype, copy=False) if wtype is not np.uint8 else rise.view(np.uint8)
    np.multiply(weighted, np.arange(n, 0, -1, dtype=wtype)[:, None], out=weighted)
    score = np.maximum.reduce(weighted, axis=0).astype(np.intp)
    first = n - score
    first[score == 0] = -1
    return first


# Voxels per block inside one call: the ~45 rows of the edge window of a block (and the
# temporaries derived from them) stay in the L2/L3 cache, so the crossing search streams
# the slab from memory about once instead of once per expression.
_BLOCK = 16384

# A float32 value of mid(E) = A + B*x computed from float64 A, B differs from the exact one
# by at most ~2 units of 2**-24 times (|A| + |B|*|x|) (rounding of A, B, the product and
# the sum, <= 2|A| + 4|B x| units); six units leave a margin. Below that bound the
# float32 sign of mu - mid(E) is not trusted.
_F32_SIGN_MARGIN = 6.0 * 2.0 ** -24


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
        # is then its value at E_c (so J = a_post - a_pre) and the fits are well
        # conditioned (|x| ~ tens of eV instead of 8e3).
        x = e - self.e_centre
        self._x = x
        self._p_pre = _line_projector(x[self.pre])       # (2, n_pre) float64
        self._p_post = _line_projector(x[self.post])     # (2, n_post) float64
        # sigma_pre from explicit residuals mu - (a + b x), not sum(mu^2) - |Q^T mu|^2,
        # which cancels
        self._x_pre = x[self.pre][:, None]
        # [1, x] of the search rows: evaluates a line (intercept, slope) there by BLAS
        self._rows_x = np.stack([np.ones_like(x[self._search]), x[self._search]], axis=1)
        self._rows_x32 = self._rows_x.astype(np.float32)
        self._x_search_max = float(np.abs(x[self._search]).max())
        self._p_pre_c = np.ascontiguousarray(self._p_pre)
        self._p_post_c = np.ascontiguousarray(self._p_post)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _as_2d(mu: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        """View ``mu`` as (n_energy, n_voxel) float32/float64; returns the spatial shape."""
        mu = np.asarray(mu)
        if mu.dtype not in (np.float32, np.float64):
            # float16 and integers are exact in float32, the tomogram working type
            mu = mu.astype(np.float32)
        spatial = mu.shape[1:]
        return mu.reshape(mu.shape[0], -1), spatial

    def _check(self, mu2: np.ndarray) -> None:
        if mu2.shape[0] != self.energies_ev.size:
            raise ValueError(f"mu has {mu2.shape[0]} energies along axis 0, the kernel was "
                             f"built for {self.energies_ev.size}")

    # ------------------------------------------------------------------ API
    def __call__(self, mu: np.ndarray, *, threads: int = 1) -> EdgeResult:
        """Edge energy, jump, pre-edge noise and validity for every voxel of ``mu``.

        Parameters
        ----------
        mu : ndarray, shape (n_energy, *spatial)
            Absorbance; energies along axis 0 in the kernel's (ascending) order. float32
            (tomograms) or float64; other dtypes are converted to float32. A 1-D
            spectrum (a bulk XAS measurement) gives 0-d result arrays.
        threads : int
            Threads computing blocks of voxels concurrently (numba threads of the compiled
            kernel, capped at numba's thread count; a thread pool on the numpy path); the
            result does not depend on it.

        Returns
        -------
        EdgeResult
            Arrays of shape ``spatial``; the same numbers as a float64 evaluation of the
            input values (see the module docstring).
        """
        compiled = _numba_kernel()
        if compiled is None:
            return self._call_numpy(mu, threads=threads)
        mu2, spatial, n_vox, edge, jump, sigma, valid = self._prepare(mu)
        if n_vox:
            from txmdb.analysis._threads import numba_threads

            with numba_threads(threads):
                p = self.params
                compiled.edge_pass(mu2, self._p_pre_c, self.pre.start, self._p_post_c,
                                   self.post.start, self._x, self.energies_ev,
                                   self._search.start, self._search.stop,
                                   float(p.min_jump), float(p.snr), edge, jump, sigma, valid)
        return EdgeResult(edge_ev=edge.reshape(spatial), jump=jump.reshape(spatial),
                          sigma_pre=sigma.reshape(spatial), valid=valid.reshape(spatial))

    def _prepare(self, mu: np.ndarray):
        """The checked 2-D view of ``mu``, its spatial shape, voxel count and empty outputs."""
        mu2, spatial = self._as_2d(mu)
        self._check(mu2)
        n_vox = mu2.shape[1]
        outputs = [np.empty(n_vox, dtype=np.float64) for _ in range(3)]
        return (mu2, spatial, n_vox, *outputs, np.empty(n_vox, dtype=bool))

    def _call_numpy(self, mu: np.ndarray, *, threads: int = 1) -> EdgeResult:
        """The numpy/numexpr/BLAS path of ``__call__`` (used without numba; same results)."""
        mu2, spatial, n_vox, edge, jump, sigma, valid = self._prepare(mu)

        def run(b0: int) -> None:
            b1 = min(b0 + _BLOCK, n_vox)
            # a contiguous copy of the block: the rows of a column block of a big slab
            # are megabytes apart, which thrashes cache sets and TLB in every later pass
            block = np.ascontiguousarray(mu2[:, b0:b1])
            self._block(block, edge[b0:b1], jump[b0:b1], sigma[b0:b1], valid[b0:b1])

        starts = range(0, n_vox, _BLOCK)
        if threads > 1 and len(starts) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="txmdb-edge") as pool:
                for _ in pool.map(run, starts):      # re-raises the first failure
                    pass
        else:
            for b0 in starts:
                run(b0)
        return EdgeResult(edge_ev=edge.reshape(spatial), jump=jump.reshape(spatial),
                          sigma_pre=sigma.reshape(spatial), valid=valid.reshape(spatial))

    def _block(self, mu: np.ndarray, edge, jump, sigma, valid) -> None:
        """Fill the output views for one contiguous block ``mu`` of shape (n_energy, n)."""
        f64 = np.float64
        with np.errstate(invalid="ignore", over="ignore"):   # NaN/inf voxels: masked below
            # float64 lines from the pre/post rows only: 2*(n_pre + n_post) flops a voxel
            pre = mu[self.pre].astype(f64, copy=False)
            a_pre, b_pre = self._p_pre @ pre
            a_post, b_post = self._p_post @ mu[self.post].astype(f64, copy=False)
            # explicit residuals of the fitted line (a small-K dgemm with the hat matrix
            # is ~10x slower than these three elementwise passes)
            resid = self._x_pre * b_pre
            resid += a_pre
            np.subtract(pre, resid, out=resid)
            del pre
        np.sqrt(np.einsum("ij,ij->j", resid, resid) / resid.shape[0], out=sigma)
        del resid
        np.subtract(a_post, a_pre, out=jump)
        finite = self._finite(mu)
        p = self.params
        ok = ne.evaluate("(jump >= min_jump) & ((sigma <= 0) | (jump >= snr * sigma)) & finite",
                         local_dict={"jump": jump, "min_jump": p.min_jump, "sigma": sigma,
                                     "snr": p.snr, "finite": finite})
        slope = b_post - b_pre                    # step(x) = jump + slope * x
        mid_a = 0.5 * (a_pre + a_post)            # mid(x) = (pre + post) / 2 = mid_a + mid_b x
        mid_b = 0.5 * (b_pre + b_post)
        rows = mu[self._search]
        if mu.dtype == np.float32:
            first, redo = self._search32(rows, mid_a, mid_b, jump, slope, ok)
            if redo.size:
                first[redo] = self._search64(rows[:, redo].astype(f64), mid_a[redo], mid_b[redo],
                                             jump[redo], slope[redo], ok[redo])
        else:
            first = self._search64(rows, mid_a, mid_b, jump, slope, ok)
        np.logical_and(ok, first >= 0, out=valid)
        # Interpolation in float64 from the two gathered rows k-1, k of each voxel:
        # (0.5 - n0) / (n1 - n0) == -q0 / (q1 - q0) with q = norm - 0.5 = (mu - mid) / step
        k = np.where(valid, first, 0)
        n_blk = mu.shape[1]
        at = k * n_blk + np.arange(n_blk)         # flat index of row k in `rows`
        flat = rows.reshape(-1)                  # rows of a contiguous block: no copy
        x = self._x[self._search]
        e = self.energies_ev[self._search]
        ne.evaluate("where(valid, e0 - q0 / (q1 - q0) * (e1 - e0), nan)",
                    local_dict={"valid": valid, "e0": e[k], "e1": e[k + 1], "nan": np.nan,
                                "q0": self._q(flat[at], x[k], mid_a, mid_b, jump, slope),
                                "q1": self._q(flat[at + n_blk], x[k + 1], mid_a, mid_b, jump, slope)},
                    out=edge)

    @staticmethod
    def _q(mu_k, x_k, mid_a, mid_b, jump, slope) -> np.ndarray:
        """``norm - 0.5`` at one gathered row per voxel, float64 (inf/NaN where step is 0)."""
        return ne.evaluate("(mu_k - (mid_a + mid_b * x_k)) / (jump + slope * x_k)",
                           local_dict={"mu_k": mu_k.astype(np.float64, copy=False), "x_k": x_k,
                                       "mid_a": mid_a, "mid_b": mid_b, "jump": jump, "slope": slope})

    @staticmethod
    def _finite(mu: np.ndarray) -> np.ndarray:
        """Per column: every value finite. One BLAS sum per column: a sum is non-finite if
        any term is NaN/inf; the rare non-finite float32 sums of finite values (overflow
        beyond 3e38) are told apart by checking those columns value by value."""
        with np.errstate(invalid="ignore", over="ignore"):
            total = np.ones(mu.shape[0], dtype=mu.dtype) @ mu
        finite = np.isfinite(total)
        suspect = np.flatnonzero(~finite)
        if suspect.size:
            finite[suspect] = np.isfinite(mu[:, suspect]).all(axis=0)
        return finite

    def _search32(self, rows, mid_a, mid_b, jump, slope, ok) -> tuple[np.ndarray, np.ndarray]:
        """Crossing search in float32 with a certificate.

        Where the step ``post(E) - pre(E)`` is positive over the whole search range,
        ``norm >= 0.5`` is ``mu >= mid(E)``: a multiply-add, a subtraction and a
        comparison per value, never ``norm`` itself.

        Returns
        -------
        first : ndarray of intp
            First rise row per voxel (-1: none), valid where the voxel is not in ``redo``.
        redo : ndarray of intp
            Voxels (``ok`` ones only) to search again in float64: those whose step is not
            positive over the range (the literal ``norm`` search), and those where some
            ``|mu - mid|`` is within the float32 rounding bound (or ``mid`` is too large
            for float32).
        """
        x32 = self._rows_x32[:, 1:]
        with np.errstate(invalid="ignore", over="ignore"):
            # mu - mid(E) on the search rows in three elementwise passes (a rank-2 sgemm
            # is ~5x slower); the rounding bound below holds for this order of operations
            dev = x32 * mid_b.astype(np.float32)
            dev += mid_a.astype(np.float32)
            np.subtract(rows, dev, out=dev)          # (norm - 0.5) * step
            bound = _F32_SIGN_MARGIN * (np.abs(mid_a) + np.abs(mid_b) * self._x_search_max)
        tol = bound.astype(np.float32)
        above = dev > tol                            # surely above mid
        unsure = np.logical_xor(above, dev >= -tol).any(axis=0)
        # beyond float32 range mid overflows and the bound means nothing: float64 search
        unsure |= ~(bound < 1e30)
        first = _first_rise(above)
        x = self._rows_x[:, 1]
        x_lo, x_hi = x[0], x[-1]
        positive = ne.evaluate("(jump + slope * x_lo > 0) & (jump + slope * x_hi > 0)")
        redo = np.flatnonzero(ok & (~positive | unsure))
        return first, redo

    def _search64(self, rows, mid_a, mid_b, jump, slope, ok) -> np.ndarray:
        """Crossing search in float64: first rise row per voxel (-1: none).

        Voxels whose step changes sign inside the range (rare: a steep, crossing pair of
        lines that still passes the jump tests) take the literal ``norm`` path. Voxels
        failing the jump tests are masked whatever their crossing.
        """
        with np.errstate(invalid="ignore", over="ignore"):
            dev = self._rows_x @ np.stack([mid_a, mid_b])
            np.subtract(rows, dev, out=dev)
        x = self._rows_x[:, 1]
        x_lo, x_hi = x[0], x[-1]
        positive = ne.evaluate("(jump + slope * x_lo > 0) & (jump + slope * x_hi > 0)")
        first = _first_rise(dev >= 0)
        literal = np.flatnonzero(ok & ~positive)
        if literal.size:
            step = self._rows_x @ np.stack([jump[literal], slope[literal]])
            with np.errstate(divide="ignore", invalid="ignore"):
                q = dev[:, literal] / step       # norm - 0.5 (NaN/inf where step is 0)
            # `q < 0` is tested separately from `q >= 0`: a NaN norm is neither
            first[literal] = _first_rise(q >= 0, below=q < 0)
        return first

    def normalize(self, mu: np.ndarray, rows: slice | None = None) -> np.ndarray:
        """Normalised absorbance ``norm(E)`` for every energy (or those of ``rows``) and voxel.

        Parameters
        ----------
        mu : ndarray, shape (n_energy, *spatial)
            Absorbance as for ``__call__``.
        rows : slice, optional
            Only these energies (e.g. a window): the same numbers as those rows of the
            whole result, without computing the others.

        Returns
        -------
        ndarray of float64, shape of ``mu`` (``rows`` along axis 0)
            ``(mu - pre(E)) / (post(E) - pre(E))``; NaN/inf where the step is 0 or the
            spectrum is not finite.
        """
        mu2, spatial = self._as_2d(mu)
        self._check(mu2)
        rows = slice(None) if rows is None else rows
        with np.errstate(invalid="ignore", over="ignore"):
            a_pre, b_pre = self._p_pre @ mu2[self.pre].astype(np.float64)
            a_post, b_post = self._p_post @ mu2[self.post].astype(np.float64)
        x = self._x[rows, None]
        out = ne.evaluate("(mu - (a_pre + b_pre * x)) / ((a_post - a_pre) + (b_post - b_pre) * x)",
                          local_dict={"mu": mu2[rows].astype(np.float64), "a_pre": a_pre, "b_pre": b_pre,
                                      "a_post": a_post, "b_post": b_post, "x": x})
        return out.reshape((x.shape[0], *spatial))
