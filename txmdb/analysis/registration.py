"""Energy-stack registration: sub-voxel translations per energy, and applying them by slab (DESIGN §10).

Pure kernels on numpy arrays: no files, no database. The caller hands in a reader
``read_energy(i, window)`` that returns one energy's (binned, cropped) volume, so the
working set stays bounded whatever the stack's size, and applies the result slab by slab
with :func:`read_plan` / :func:`apply_shift_slab` (or :func:`registered_slab`).

Convention (DESIGN §10). ``s_e`` (voxels, ``(z, y, x)`` or ``(y, x)`` order) is how far
the sample had moved at energy ``e`` relative to the reference energy, so that
``registered_e(x) = raw_e(x + s_e)`` and ``s_ref = 0``.

Estimation (:func:`estimate_shifts`; docs/registration.md says why it is built this way
and what was measured):

1. **Working images.** Each energy is read as a binned image of the region of interest
   (coarse level, at most ``coarse_voxels``) and, when that was binned, once more at full
   resolution over a bounded window centred on the sample's structure and widened by the
   spread of the shifts (fine level). Binned, the drift spans too few voxels to tell the
   fixed pattern from the sample: the coarse level only gives the start (step 2) and
   places the window; steps 2-4 then run on the fine level. A 3-D coarse level reads
   one slice per block of ``bin`` (``Window.planes``), binned in-plane: the whole
   stack's read was most of the estimate's time on large stacks. NaN voxels are
   filled with the image median. Every image is band-passed (difference of Gaussians,
   ``band`` = (1, 4) voxels of the working grid: removes noise, the flat-field residue and
   offsets) and scaled to unit standard deviation (intensity changes).
2. **Start.** Cross-correlation of every energy with the reference, searched only within
   ``±max_shift`` (zero-padded FFT: no wrap-around, no far-away false peak), with a
   parabolic sub-voxel peak; then re-correlated against the leave-one-out median of the
   other energies (registered with the current shifts), whose median drops the fixed
   pattern that pulls a correlation with the reference image alone towards zero. On
   the fine level, one such round at full resolution around the coarse start.
3. **Joint model.** Every working image is explained as
   ``J_e(x) = a_e T(x - s_e) + c_e F(x) + b_e``: one sample template ``T`` that moves,
   one fixed pattern ``F`` that does not (rings, flat-field residue: the lab frame), and a
   gain and offset per energy (contrast change across the edge, beam decay). ``T`` is
   the ``a``-weighted mean of the registered images with ``F`` removed; ``F`` is the
   per-voxel *median* over energies of the residuals in the lab frame (robust to the
   sample structure that a few misregistered energies leave behind); then one
   Gauss-Newton step per energy updates ``s_e`` (with ``a_e, c_e, b_e``) by linear least
   squares against ``T`` and ``F`` over the region every energy covers (less a border of
   3 σ of the smoothing, where the filter saw replicated border values). The shifts are
   re-anchored to ``s_ref = 0`` after each iteration, so the reference energy is
   registered to the template like every other energy. One-template steps run until
   converged (largest step below 0.02 voxel or rms step below 0.005; at most ten), then
   up to two steps add a second sample template, ``a_e T + d_e T₂``: the main way the
   registered energies differ from ``T`` (in the edge the particles' inside changes
   contrast: bulk bright, surface still dim), made orthogonal to ``T``'s gradients so
   that it cannot stand in for a shift; it halves the worst errors, on the energies
   inside the edge.
4. **Quality.** Each energy's registered, pattern-free image is fitted once more against
   the template of the *other* energies (its own noise would otherwise vouch for it) and
   the standard error ``σ`` of its shift is estimated from the residual, scaled by the
   residual's correlation volume. ``quality = 0.1 / (0.1 + σ)``: 1 for a perfectly
   determined shift, below :data:`QUALITY_THRESHOLD` (σ > 0.5 voxel) for an energy that
   cannot be registered; 0 when the template's coefficient is below
   :data:`MIN_DETECTION` standard errors (no sample signal: a blank or corrupted frame).
   ``σ`` is raised to the energy's disagreement with the leave-one-out median of the
   other registered energies when that is larger: a group of energies misregistered
   together has small standard errors but disagrees with the rest.

Application (:func:`read_plan`, :func:`apply_shift_slab`, :func:`registered_slab`): the
integer part ``n = floor(s_e)`` offsets the read window; the fractional part
``f = s_e - n`` is applied separably, axis by axis, by a finite stencil:

* ``order=1`` — linear interpolation, taps ``x+n, x+n+1`` with weights ``1-f, f``
  (the same numbers as ``scipy.ndimage.shift(order=1)``);
* ``order=3`` — Keys cubic convolution (``a = -1/2``), taps ``x+n-1 … x+n+2``;
  interpolating, no prefilter, sharper than linear.

Weights depend only on ``f``, never on the position, and every output voxel is the same
sequence of float operations on the same input values, so a registered slab is
**bit-identical** whatever the slab partition (FFT shifting, or a spline prefilter that
runs over the whole slab, would not be; FFT shifting also wraps the far border round).
Taps outside the field of view are replaced by the nearest border voxel; a voxel whose
source ``x + s_e`` lies outside the field of view ``[0, N-1]`` is NaN at that energy, and
:func:`valid_box` gives the voxels valid at *every* energy.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from txmdb.analysis._memory import (
    freed_memory_kept as _freed_memory_kept,
    no_cyclic_gc as _no_cyclic_gc,
    no_huge_pages as _no_huge_pages,
)
from txmdb.vocabulary import REGISTRATION_MIN_ROI_VOXELS

__all__ = ["QUALITY_THRESHOLD", "MIN_DETECTION", "Window", "read_window", "estimate_shifts", "integer_shifts",
           "ReadPlan", "read_plan", "apply_shift_slab", "registered_slab", "valid_box", "valid_mask"]

#: Energies with a quality below this cannot be trusted. ``quality = 0.1 / (0.1 + σ)``
#: with ``σ`` the estimated standard error of the energy's shift in voxels (rms over the
#: axes): 1 for a perfectly determined shift, 0.5 at σ = 0.1 voxel, and this threshold,
#: 1/6, at σ = 0.5 voxel. Measured on the synthetic stacks: σ ≈ 0.01 on clean energies,
#: 0.02-0.3 on dim pre-edge energies with every difficulty (their true errors are of
#: that size), ≥ 0.4 for an energy of pure noise, ∞ (quality 0) for a constant one.
#: An energy in which the sample is not detected at all gets quality 0
#: (:data:`MIN_DETECTION`). On a coarse energy grid (4-5 eV steps through the edge) the
#: energy in the middle of the edge, whose particles show inverted contrast (bulk bright,
#: surface dim), can fall below the threshold: its appearance matches no other energy.
QUALITY_THRESHOLD = 1.0 / 6.0


#: An energy whose sample-template coefficient is below this many standard errors holds
#: no detectable sample (noise-only frames: 3-6, selection by the shift search included;
#: registered energies: 25-500) and gets quality 0.
MIN_DETECTION = 8.0


def _quality(sigma: np.ndarray, detection: np.ndarray) -> np.ndarray:
    q = 0.1 / (0.1 + np.asarray(sigma, dtype=np.float64))
    return np.where(np.asarray(detection) >= MIN_DETECTION, q, 0.0)


_DEFAULT_BAND = (1.0, 4.0)


# --- windows and reading ------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """A box of the field of view, in full-resolution voxels, read binned by ``bin``.

    Attributes
    ----------
    start, stop : tuple of int
        Corner (inclusive) and end (exclusive) per spatial axis.
    bin : int
        Block size of the mean binning (trailing partial blocks are dropped).
    planes : int, optional
        Full-resolution slices of the first axis read per block (default all ``bin``):
        fewer read only the middle ones of each block, a fraction ``planes / bin`` of the
        data (the coarse level of a large stack: reading is most of its cost).
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]
    bin: int = 1
    planes: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the (binned) array read for this window."""
        return tuple((b - a) // self.bin for a, b in zip(self.start, self.stop))


def _bin(a: np.ndarray, f) -> np.ndarray:
    """Mean of each block (``f`` voxels per axis, or one factor per axis) over its finite
    voxels (one NaN voxel must not blank its coarse bin); NaN only where the whole block is."""
    fs = (f,) * a.ndim if isinstance(f, (int, np.integer)) else tuple(f)
    if all(k == 1 for k in fs):
        return a
    n = tuple(k // g for k, g in zip(a.shape, fs))
    a = np.asarray(a[tuple(slice(0, k * g) for k, g in zip(n, fs))], dtype=np.float32)
    kernel = _numba()
    if kernel is not None and a.ndim in (2, 3):
        # one compiled pass, the same sums in the same order; back to numpy at a non-finite value
        out = np.empty(n, dtype=np.float32)
        if kernel.block_mean(a if a.ndim == 3 else a[None], *((1,) * (3 - a.ndim) + fs),
                             out if a.ndim == 3 else out[None]):
            return out
    finite = np.isfinite(a)
    count = None if finite.all() else finite.astype(np.float32)
    total = a if count is None else np.where(finite, a, np.float32(0))
    # axis by axis, last first, in float32: each sum runs over f adjacent values (at most
    # f ≤ a few tens per axis, no precision to lose), 3x faster than one float64
    # reduction over the strided block axes, which dominated the coarse level
    for axis in range(a.ndim - 1, -1, -1):
        if fs[axis] == 1:
            continue
        split = total.shape[:axis] + (n[axis], fs[axis]) + total.shape[axis + 1:]
        total = total.reshape(split).sum(axis=axis + 1, dtype=np.float32)
        if count is not None:
            count = count.reshape(split).sum(axis=axis + 1, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / np.float32(np.prod(fs)) if count is None else total / count


def read_window(source, index: int, window: Window, *, slab_bytes: int = 64 << 20) -> np.ndarray:
    """Read one energy's window from an array-like stack, binned, slab by slab.

    Parameters
    ----------
    source : array-like, shape (n_energy, [z,] y, x)
        numpy array, ``h5py.Dataset`` or anything that slices like one.
    index : int
        Energy index.
    window : Window
        Box and binning.
    slab_bytes : int
        Bytes read at a time (whole blocks of ``window.bin`` slices).

    Returns
    -------
    ndarray of float32, shape ``window.shape``
    """
    f = window.bin
    p = f if window.planes is None else min(f, max(1, int(window.planes)))
    out = np.empty(window.shape, dtype=np.float32)
    if p == 1 < f and _binned_planes(source, index, window, out):
        return out
    rest = tuple(slice(a, a + n * f) for a, n in zip(window.start[1:], window.shape[1:]))
    per_slice = 4 * max(1, int(np.prod([n * f for n in window.shape[1:]])))
    step = max(1, slab_bytes // (per_slice * p)) * f
    z0 = window.start[0]
    for a in range(0, window.shape[0] * f, step):
        b = min(a + step, window.shape[0] * f)
        if p == f:
            raw = np.asarray(source[(index, slice(z0 + a, z0 + b)) + rest], dtype=np.float32)
        else:
            # the middle p slices of each block, one strided read per plane, interleaved
            # back into blocks of p
            first = z0 + a + (f - p) // 2
            planes = [np.asarray(source[(index, slice(first + k, z0 + b, f)) + rest], dtype=np.float32)
                      for k in range(p)]
            # (one plane per block, the coarse level's case: already in block order, no copy)
            raw = planes[0] if p == 1 else np.stack(planes, axis=1).reshape((-1,) + planes[0].shape[1:])
        out[a // f:b // f] = _bin(raw, (p,) + (f,) * (raw.ndim - 1))
    return out


def _binned_planes(source, index: int, window: Window, out: np.ndarray) -> bool:
    """:func:`read_window`'s one plane per block of a 3-D float32 stack that reads a plane's
    rows into a buffer (:meth:`txmdb.io.contiguous.ContiguousView.plane_rows`), into ``out``:
    each plane binned straight from a buffer that stays in cache by the compiled block mean,
    the sums :func:`_bin` makes of the planes stacked (``g0 = 1``: per plane, in the same
    order), instead of every plane copied out into a 13 MB array per energy first (272³:
    their fresh pages and the copy were most of the coarse level's cost). False (``out``
    partly written) for another source, without numba, or at a value that is not finite:
    the caller reads the window its usual way."""
    kernel = _numba()
    rows_of = getattr(source, "plane_rows", None)
    if (rows_of is None or kernel is None or len(window.shape) != 3 or out.size == 0
            or np.dtype(getattr(source, "dtype", None)) != np.float32):
        return False
    f = window.bin
    box = tuple((a, a + n * f) for a, n in zip(window.start[1:], window.shape[1:]))
    into = np.empty((box[0][1] - box[0][0]) * source.shape[-1], dtype=np.float32)
    first = window.start[0] + (f - 1) // 2        # the middle plane of each block, as read_window's
    for k in range(window.shape[0]):
        plane = rows_of(index, first + k * f, box, into)
        if not kernel.block_mean(plane[None], 1, f, f, out[k:k + 1]):
            return False
    return True


# --- separable translation by finite stencils ------------------------------------------------

def _taps(f: float, order: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Tap offsets and weights for a fractional shift ``0 <= f < 1`` (zero weights dropped)."""
    if order == 1:
        offsets, weights = (0, 1), (1.0 - f, f)
    elif order == 3:
        t = f
        offsets = (-1, 0, 1, 2)
        weights = (((-0.5 * t + 1.0) * t - 0.5) * t, (1.5 * t - 2.5) * t * t + 1.0,
                   ((-1.5 * t + 2.0) * t + 0.5) * t, (0.5 * t - 0.5) * t * t)
    else:
        raise ValueError(f"interpolation order must be 1 (linear) or 3 (cubic), got {order}")
    kept = [(o, w) for o, w in zip(offsets, weights) if w != 0.0]
    return tuple(o for o, _ in kept), tuple(w for _, w in kept)


def _split(shift: float) -> tuple[int, float]:
    n = math.floor(shift)
    return n, shift - n


def _stencil(a: np.ndarray, axis: int, first: int, offsets, weights, n_out: int) -> np.ndarray:
    """``out[i] = sum_k w_k a[first + o_k + i]`` along ``axis`` (the caller guarantees the range)."""
    out = scratch = None
    for o, w in zip(offsets, weights):
        sl = [slice(None)] * a.ndim
        sl[axis] = slice(first + o, first + o + n_out)
        term = a[tuple(sl)]
        if w == 1.0 and len(offsets) == 1:
            return term.copy()
        if out is None:
            out = term * a.dtype.type(w)
        else:
            # in place, the same float operations as out + term * w: no new arrays per
            # tap (fresh large arrays cost page faults in the reader thread)
            scratch = np.multiply(term, a.dtype.type(w), out=scratch)
            out += scratch
    return out


@functools.cache
def _numba():
    """``txmdb.analysis._registration_numba`` or None without numba (the numpy stencil then).
    Imported on first use: numba takes ~0.3 s to import, which only the stencils need."""
    try:
        from txmdb.analysis import _registration_numba
    except ImportError:  # pragma: no cover - numba not installed
        return None
    return _registration_numba


def _compiled_shift(kernel, a: np.ndarray, bases, taps, out_shape, out: np.ndarray | None = None) -> np.ndarray:
    """Per axis ``k`` in order: ``x[i] = sum_t w_t x[clamp(i + bases[k] + o_t)]``, compiled
    in one sweep (:func:`txmdb.analysis._registration_numba.shift3`): the numbers of
    :func:`_stencil` on the edge-padded array, without the padded copy or the
    intermediate volumes. A 2-D array runs as one plane (an identity first axis: exact).
    Written into ``out`` when given (directly if C-contiguous of the same dtype)."""
    a = np.ascontiguousarray(a)
    shape = tuple(out_shape)
    bases, taps = list(bases), list(taps)
    if a.ndim == 2:
        a = a[None]
        bases, taps = [0] + bases, [((0,), (1.0,))] + taps
    direct = out is not None and out.dtype == a.dtype and out.flags.c_contiguous
    dst = out if direct else np.empty(shape, dtype=a.dtype)
    args = []
    for base, (offsets, weights) in zip(bases, taps):
        args += [int(base), np.asarray(offsets, dtype=np.int64), np.asarray(weights, dtype=a.dtype)]
    kernel.shift3(a, dst.reshape((-1,) + shape[-2:]) if len(shape) == 2 else dst, *args)
    if out is not None and not direct:
        out[...] = dst
    return dst if out is None else out


def _translate(a: np.ndarray, shift: Sequence[float], order: int = 3, *, box=None,
               out: np.ndarray | None = None) -> np.ndarray:
    """``out(x) = a(x + shift)`` on ``a``'s own grid, borders by edge replication (estimation
    only); with ``box`` (``(lo, hi)``) only those output voxels (the same numbers as
    cropping the whole), written into ``out`` when given."""
    kernel = _numba()
    if kernel is not None and a.ndim in (2, 3):
        parts = [_split(float(v)) for v in shift]
        lo, hi = box if box is not None else ((0,) * a.ndim, a.shape)
        return _compiled_shift(kernel, a, [l + n for l, (n, _) in zip(lo, parts)], [_taps(f, order) for _, f in parts],
                               tuple(h - l for l, h in zip(lo, hi)), out)
    if box is not None:
        moved = _translate(a, shift, order)[_box_slices(*box)]
        if out is None:
            return moved
        out[...] = moved
        return out
    out = a
    for axis, s in enumerate(shift):
        n, f = _split(float(s))
        offsets, weights = _taps(f, order)
        size = out.shape[axis]
        before = max(0, -(n + offsets[0]))
        after = max(0, n + offsets[-1])
        if before or after:
            pad = [(0, 0)] * out.ndim
            pad[axis] = (before, after)
            out = np.pad(out, pad, mode="edge")
        out = _stencil(out, axis, before + n, offsets, weights, size)
    return out


# --- the validity box ------------------------------------------------------------------------

def _valid_range(shift: float, size: int) -> tuple[int, int]:
    """Output indices ``x`` with ``0 <= x + shift <= size - 1`` as ``[lo, hi)``, in integers."""
    n, f = _split(float(shift))
    return max(0, -n), max(0, min(size, size - n - (1 if f > 0 else 0)))


def valid_box(shifts: np.ndarray, shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Voxels whose source ``x + s_e`` lies in the field of view at every energy.

    Parameters
    ----------
    shifts : ndarray, shape (n_energy, ndim)
        Shifts ``s_e``, voxels.
    shape : sequence of int
        Spatial shape of the field of view.

    Returns
    -------
    lo, hi : tuple of int
        Per axis, ``x`` is valid iff ``lo <= x < hi`` (an empty range when ``hi <= lo``).
    """
    shifts = np.asarray(shifts, dtype=np.float64).reshape(-1, len(shape))
    lo, hi = [], []
    for axis, size in enumerate(shape):
        ranges = [_valid_range(s, size) for s in shifts[:, axis]]
        lo.append(max(r[0] for r in ranges))
        hi.append(min(r[1] for r in ranges))
    return tuple(lo), tuple(hi)


def valid_mask(shifts: np.ndarray, shape: Sequence[int], start: Sequence[int] | None = None,
               stop: Sequence[int] | None = None) -> np.ndarray:
    """Boolean mask of :func:`valid_box` over the window ``[start, stop)`` (default: everything)."""
    start = tuple(start) if start is not None else (0,) * len(shape)
    stop = tuple(stop) if stop is not None else tuple(shape)
    lo, hi = valid_box(shifts, shape)
    mask = np.ones(tuple(b - a for a, b in zip(start, stop)), dtype=bool)
    for axis, (a, b, l, h) in enumerate(zip(start, stop, lo, hi)):
        idx = np.arange(a, b)
        shape_1 = [1] * len(shape)
        shape_1[axis] = b - a
        mask &= ((idx >= l) & (idx < h)).reshape(shape_1)
    return mask


# --- application ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReadPlan:
    """What to read for one energy's registered window, and how to interpolate it.

    Attributes
    ----------
    source : tuple of slice
        Box of the raw energy volume to read (inside the field of view).
    pad : tuple of (int, int)
        Border voxels to add by edge replication, before and after, per axis.
    first : tuple of int
        Per axis, index in the padded block of the tap ``x + n`` for the first output voxel.
    taps : tuple of (offsets, weights)
        Per axis, the stencil of the fractional part.
    out_shape : tuple of int
        Shape of the registered window.
    valid : tuple of (int, int)
        Per axis, output indices ``[lo, hi)`` (window-relative) whose source lies in the
        field of view at this energy; the rest is NaN.
    """

    source: tuple[slice, ...]
    pad: tuple[tuple[int, int], ...]
    first: tuple[int, ...]
    taps: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...]
    out_shape: tuple[int, ...]
    valid: tuple[tuple[int, int], ...]


def read_plan(shift: Sequence[float], start: Sequence[int], stop: Sequence[int], shape: Sequence[int], *,
              order: int = 1) -> ReadPlan:
    """Plan the read of one energy's registered window ``[start, stop)``.

    Parameters
    ----------
    shift : sequence of float
        ``s_e`` of this energy, voxels.
    start, stop : sequence of int
        Output window in the registered (reference) frame, per spatial axis.
    shape : sequence of int
        Spatial shape of the field of view.
    order : {1, 3}
        Linear interpolation or Keys cubic convolution.

    Returns
    -------
    ReadPlan
        Read ``raw_e[plan.source]``, then call :func:`apply_shift_slab`. The box read is
        the window moved by ``floor(s_e)`` plus a halo of 1 (linear) or 1 + 2 (cubic)
        voxels where the fractional part is not zero.
    """
    source, pad, first, taps, valid = [], [], [], [], []
    for s, a, b, size in zip(shift, start, stop, shape):
        n, f = _split(float(s))
        offsets, weights = _taps(f, order)
        want_lo, want_hi = a + n + offsets[0], b - 1 + n + offsets[-1] + 1   # [lo, hi) of taps
        lo, hi = min(max(want_lo, 0), size), max(min(want_hi, size), 0)
        if hi <= lo:
            # the whole window reads outside (every output NaN): one border voxel, replicated
            lo, hi = (0, 1) if want_hi <= 0 else (size - 1, size)
            length = want_hi - want_lo
            pad.append((length - 1, 0) if want_hi <= 0 else (0, length - 1))
        else:
            pad.append((lo - want_lo, want_hi - hi))
        source.append(slice(lo, hi))
        first.append(-offsets[0])
        taps.append((offsets, weights))
        v_lo, v_hi = _valid_range(s, size)
        valid.append((min(max(v_lo - a, 0), b - a), min(max(v_hi - a, 0), b - a)))
    return ReadPlan(tuple(source), tuple(pad), tuple(first), tuple(taps),
                    tuple(b - a for a, b in zip(start, stop)), tuple(valid))


def apply_shift_slab(block: np.ndarray, plan: ReadPlan, out: np.ndarray | None = None) -> np.ndarray:
    """Registered window of one energy from the block that :func:`read_plan` asked for.

    Parameters
    ----------
    block : ndarray
        ``raw_e[plan.source]`` (float32 stays float32: the arithmetic runs in the block's
        floating dtype; integers are converted to float64).
    plan : ReadPlan
        From :func:`read_plan`.
    out : ndarray, optional
        Written in place and returned (C-contiguous, shape ``plan.out_shape``): spares a
        copy when the caller fills a slab energy by energy.

    Returns
    -------
    ndarray, shape ``plan.out_shape``
        ``raw_e(x + s_e)`` by the plan's separable stencil; NaN where ``x + s_e`` is
        outside the field of view. The same output voxel is bit-identical whichever
        window (slab) it was computed in.
    """
    a = np.asarray(block)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    kernel = _numba()
    if kernel is not None and a.ndim in (2, 3):
        # the padded index first + o + i is the block's index first - pad_before + o + i,
        # clamped: edge padding is clamping
        out = _compiled_shift(kernel, a, [first - before for first, (before, _) in zip(plan.first, plan.pad)],
                              plan.taps, plan.out_shape, out)
    else:
        if any(p != (0, 0) for p in plan.pad):
            a = np.pad(a, plan.pad, mode="edge")
        for axis, ((offsets, weights), first, n_out) in enumerate(zip(plan.taps, plan.first, plan.out_shape)):
            a = _stencil(a, axis, first, offsets, weights, n_out)
        if out is None:
            out = np.ascontiguousarray(a)
        else:
            out[...] = a
    for axis, (lo, hi) in enumerate(plan.valid):
        if lo > 0 or hi < plan.out_shape[axis]:
            sl = [slice(None)] * out.ndim
            sl[axis] = slice(0, lo)
            out[tuple(sl)] = np.nan
            sl[axis] = slice(hi, None)
            out[tuple(sl)] = np.nan
    return out


def registered_slab(source, shifts: np.ndarray, start: Sequence[int], stop: Sequence[int], *,
                    order: int = 1) -> np.ndarray:
    """Registered window ``[start, stop)`` of every energy of an array-like stack.

    Parameters
    ----------
    source : array-like, shape (n_energy, [z,] y, x)
        numpy array or ``h5py.Dataset``; each energy's box is read on its own.
    shifts : ndarray, shape (n_energy, ndim)
        ``s_e`` per energy, voxels.
    start, stop : sequence of int
        Window in the registered frame.
    order : {1, 3}
        Interpolation (see :func:`read_plan`).

    Returns
    -------
    ndarray, shape (n_energy, *window)
        float32 for a float32 stack; NaN where a voxel's source is outside the field of view.
    """
    shape = tuple(source.shape[1:])
    shifts = np.asarray(shifts, dtype=np.float64).reshape(source.shape[0], len(shape))
    out = None
    for e in range(source.shape[0]):
        plan = read_plan(shifts[e], start, stop, shape, order=order)
        reg = apply_shift_slab(np.asarray(source[(e,) + plan.source]), plan)
        if out is None:
            out = np.empty((source.shape[0],) + reg.shape, dtype=reg.dtype)
        out[e] = reg
    return out


# --- estimation -------------------------------------------------------------------------------

#: Threads of the estimate's per-energy loops: numpy, scipy.ndimage and scipy.fft release
#: the GIL, and every energy's work is independent (the same numbers on any number of
#: threads). The analysis it is compared with runs on two cores as well (reader + kernel).
_WORKERS = max(1, min(4, os.cpu_count() or 1))


#: the pool of the estimate running on this thread (:func:`_estimate_workers`)
_estimate_pool = threading.local()


@contextlib.contextmanager
def _estimate_workers():
    """One pool of :data:`_WORKERS` threads for every per-energy loop of the estimate run on
    this thread: its ~60 loops each started and joined threads of their own (124 thread
    starts at 272³, ~0.1 s on the calling thread, and each new thread's arrays in an arena
    it had not used yet)."""
    if _WORKERS <= 1 or getattr(_estimate_pool, "pool", None) is not None:
        yield
        return
    with ThreadPoolExecutor(_WORKERS, thread_name_prefix="txmdb-estimate") as pool:
        _estimate_pool.pool = pool
        try:
            yield
        finally:
            _estimate_pool.pool = None


def _per_energy(fn: Callable[[int], object], n: int) -> list:
    """``[fn(0), …, fn(n - 1)]`` on up to :data:`_WORKERS` threads, in order (the first
    exception in index order is raised, as a plain loop would): on the estimate's pool when
    called from the thread running it, else on threads of its own (a call from a worker of
    that pool must not wait for the pool it runs on)."""
    if _WORKERS <= 1 or n < 2:
        return [fn(i) for i in range(n)]
    pool = getattr(_estimate_pool, "pool", None)
    if pool is not None:
        return list(pool.map(fn, range(n)))
    with ThreadPoolExecutor(_WORKERS) as pool:
        return list(pool.map(fn, range(n)))


def _sorted_median(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """``np.median(x, axis=0)`` of NaN-free columns, bit for bit, from a full sort: numpy's
    sort along an axis is vectorised and 6x faster than the partition ``np.median`` uses
    (60 × 216k float32: 0.025 s against 0.16 s), which was the estimate's largest item.
    ``overwrite``: ``x`` (a temporary) is sorted in place, no copy."""
    n = x.shape[0]
    k = (n - 1) // 2
    if overwrite:
        x.sort(axis=0)
    else:
        x = np.sort(x, axis=0)
    return x[k] if n % 2 else np.mean(x[k:k + 2], axis=0)


def _columns_sorted(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray | None:
    """The columns of the 2-D ``x`` as the rows of a new array (or of ``out``, C-contiguous,
    shape ``x.shape[::-1]``), each sorted (NaN last): ``np.sort(x, axis=0).T``'s values,
    copied out compiled and sorted along the last axis, 1.4x faster than numpy's sort along
    the first (which gathers and scatters every column of a view). None without numba."""
    kernel = _numba()
    if kernel is None:
        return None
    out = np.empty(x.shape[::-1], dtype=x.dtype) if out is None else out
    kernel.columns_as_rows(x, 0, out)
    out.sort(axis=1)
    return out


def _by_columns(fn: Callable[[slice], object], n_columns: int) -> list:
    """``fn(columns)`` for the :data:`_WORKERS` parts of ``range(n_columns)``, on threads, in
    order: for per-voxel work over energies (a voxel's numbers do not depend on the split).

    A large temporary for ``fn`` is best allocated by the caller, on the calling thread,
    and sliced by ``columns``: glibc serves a worker thread from its own arena, whose
    64 MiB heaps are unmapped once empty, so a large array made on a worker is mapped and
    zeroed by the kernel afresh at every call (272³: 41-227k page faults per estimate
    before, 26-31k after); the calling thread's heap keeps its freed memory while the
    estimate runs (:func:`_freed_memory_kept`)."""
    parts = np.array_split(np.arange(n_columns), max(1, _WORKERS))
    bounds = [slice(int(p[0]), int(p[-1]) + 1) for p in parts if p.size]
    return _per_energy(lambda k: fn(bounds[k]), len(bounds))


#: columns (voxels) per block of the per-voxel sorts over energies: a thread's sorted copy
#: of one block (60 energies: 1 MB, allocated once per call) stays in cache, and no copy of
#: the whole stack is made (98 MB at 272³, fresh pages that raised the heap's high-water
#: mark). Not a power of two: numpy's sort along the first axis of a block 4096 wide (rows
#: 16 KiB apart, one cache set) was 6x slower than of one 4000 wide
_SORT_COLUMNS = 4000


def _column_blocks(cols: slice):
    """``cols`` (a part of :func:`_by_columns`) in blocks of :data:`_SORT_COLUMNS`."""
    return (slice(a, min(a + _SORT_COLUMNS, cols.stop)) for a in range(cols.start, cols.stop, _SORT_COLUMNS))


def _block_rows(cols: slice, n: int, dtype) -> np.ndarray:
    """Room for one block of :func:`_column_blocks` of ``cols`` as rows of ``n`` values (the
    sorted copies of its columns), made once per part."""
    return np.empty((min(_SORT_COLUMNS, cols.stop - cols.start), n), dtype=dtype)


def _median0(stack: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Median over the first axis (NaN-free), the voxels split between the threads
    (``overwrite``: the caller's temporary ``stack`` is sorted in place)."""
    flat = stack.reshape(stack.shape[0], -1)
    out = np.concatenate(_by_columns(lambda cols: _sorted_median(flat[:, cols], overwrite), flat.shape[1]))
    return out.reshape(stack.shape[1:])


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(img, sigma, mode="nearest")`` (truncate 4), bit for
    bit; compiled for float32 2-D/3-D images (:func:`txmdb.analysis._registration_numba.smooth_axis`):
    scipy's filter was the working images' largest cost (σ = 4: 33 taps per axis)."""
    kernel = _numba()
    if kernel is None or img.dtype != np.float32 or img.ndim not in (2, 3):
        from scipy import ndimage     # (only here: its import is 0.03 CPU s of every register)

        return ndimage.gaussian_filter(img, sigma, mode="nearest")
    radius = int(4.0 * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (float(sigma) * float(sigma)) * x ** 2)
    fw = (phi / phi.sum())[radius:]                  # centre first: symmetric
    out = np.ascontiguousarray(img)
    for axis in range(img.ndim):
        n = out.shape[axis]
        view = (math.prod(out.shape[:axis]), n, math.prod(out.shape[axis + 1:]))
        nxt = np.empty_like(out)
        kernel.smooth_axis(out.reshape(view), nxt.reshape(view), fw)
        out = nxt
    return out


def _prepare(img: np.ndarray, sigma: float, index: int) -> np.ndarray:
    """Smoothed, zero-mean, unit-variance working image; NaNs filled with the median."""
    img = np.asarray(img, dtype=np.float32)
    finite = np.isfinite(img)
    if not finite.any():
        raise ValueError(f"energy index {index}: every value is NaN or infinite in the region registered")
    if not finite.all():
        img = np.where(finite, img, np.median(img[finite]))
    peak = float(np.abs(img).max())
    if not _SMALLEST_PEAK <= peak <= _LARGEST_PEAK and peak > 0:
        # scaled first (the working image is standardised anyway): float32 sums and squares
        # of values near its largest overflowed (NaN shifts), of tiny ones underflowed (std 0)
        img = img / np.float32(peak)
    out = _gaussian(img, sigma) if sigma > 0 else img.copy()
    out -= out.mean()
    std = float(out.std())
    if std > 0:
        out /= std
    return out


#: An image whose largest absolute value is outside these is scaled to 1 before its working
#: image is made: its float32 squares stay finite and normal. Absorbance never comes near them.
_SMALLEST_PEAK, _LARGEST_PEAK = 1e-15, 1e15


def _highpass(img: np.ndarray, sigma: float, out: np.ndarray | None = None) -> np.ndarray:
    """Remove the large scales (flat-field residue, offsets) for the starting correlation."""
    return np.subtract(img, _gaussian(img, sigma), out=out)


def _working_images(read_energy, n_energies: int, window: Window, band: tuple[float, float]) -> np.ndarray:
    """Every energy's window, band-passed (difference of Gaussians) and normalised, float32,
    each written by its thread straight into the stack (no second copy of every image)."""
    out = np.empty((n_energies,) + window.shape, dtype=np.float32)
    _per_energy(lambda i: _highpass(_prepare(read_energy(i, window), band[0], i), band[1], out=out[i]), n_energies)
    return out


def _registered(J: np.ndarray, s: np.ndarray, order: int, box=None, c=None, b=None, F=None) -> np.ndarray:
    """Every energy's working image moved into the reference frame (``J_e(x + s_e)``),
    less its fixed pattern and offset ``c_e F + b_e`` when given, over ``box`` (default
    the whole grid), stacked float32: filled in place by the threads, no list to stack."""
    n = J.shape[0]
    box = box if box is not None else ((0,) * (J.ndim - 1), J.shape[1:])
    regs = np.empty((n,) + tuple(h - l for l, h in zip(*box)), dtype=np.float32)
    kernel = _numba()
    # (numpy's stencil, or a pattern of another type: the whole grid, by numpy)
    cropped = (kernel is not None and J.ndim in (3, 4) and J.dtype == np.float32
               and (F is None or F.dtype == np.float32))

    def move(e):
        if F is None or not cropped:
            image = J[e] if F is None else J[e] - np.float32(c[e]) * F - np.float32(b[e])
            _translate(image, s[e], order, box=box, out=regs[e])
            return
        # the pattern and offset removed only where the compiled stencil reads (the same
        # numbers: every tap inside the crop, or clamped at the field's border as before)
        src_lo, src_hi = _source_box(box, s[e], order, J.shape[1:])
        sl = _box_slices(src_lo, src_hi)
        image = np.empty(tuple(h - l for l, h in zip(src_lo, src_hi)), dtype=np.float32)
        lift = (None,) * (4 - J.ndim)
        # J[e][sl] - np.float32(c[e]) * F[sl] - np.float32(b[e]), compiled in one pass
        kernel.pattern_free(J[e][sl][lift], F[sl][lift], np.float32(c[e]), np.float32(b[e]), image[lift])
        _translate(image, s[e], order, box=([l - a for l, a in zip(box[0], src_lo)],
                                            [h - a for h, a in zip(box[1], src_lo)]), out=regs[e])

    _per_energy(move, n)
    return regs


def _source_box(box, shift, order: int, shape) -> tuple[list[int], list[int]]:
    """The voxels ``[lo, hi)`` of a field of ``shape`` that :func:`_translate` reads for the
    output ``box`` moved by ``shift`` (its taps, clamped to the field)."""
    lo, hi = [], []
    for l, h, v, n in zip(*box, shift, shape):
        k, f = _split(float(v))
        offsets, _ = _taps(f, order)
        lo.append(min(max(l + k + offsets[0], 0), n - 1))
        hi.append(max(min(h - 1 + k + offsets[-1], n - 1), 0) + 1)
    return lo, hi


def _bounded_correlation(ref: np.ndarray, mov: np.ndarray, reach: float,
                         centre: Sequence[float] | None = None, ref_spectra: dict | None = None,
                         mov_spectra: dict | None = None, workers: int = _WORKERS) -> np.ndarray:
    """Shift ``d`` with ``mov(x) ≈ ref(x - d)`` maximising the linear cross-correlation over
    ``|d_k - centre_k| <= reach`` (zero-padded FFT: no wrap-around), parabolic sub-voxel peak.
    ``ref_spectra`` / ``mov_spectra``: caches of that image's spectra by padded size, for
    an image correlated again (the same numbers, one FFT fewer). ``workers``: the FFTs'
    threads (1 when the energies' correlations run on threads: the same numbers)."""
    shape = ref.shape
    centre = np.zeros(len(shape)) if centre is None else np.asarray(centre, dtype=np.float64)
    r = int(math.floor(reach))
    c = np.round(centre).astype(int)
    m = int(np.abs(c).max()) + r
    size = [_fft().next_fast_len(n + m + 1, real=True) for n in shape]
    idx = [np.arange(ck - r, ck + r + 1) for ck in c]
    sub = _irfftn_at(np.conj(_spectrum(ref, size, ref_spectra, workers)) * _spectrum(mov, size, mov_spectra, workers),
                     size, idx, workers)
    k = np.unravel_index(int(np.argmax(sub)), sub.shape)
    d = np.array([idx[axis][k[axis]] for axis in range(len(shape))], dtype=np.float64)
    for axis in range(len(shape)):
        if 0 < k[axis] < 2 * r:
            lo, hi = list(k), list(k)
            lo[axis] -= 1
            hi[axis] += 1
            c_lo, c0, c_hi = sub[tuple(lo)], sub[k], sub[tuple(hi)]
            den = c_lo - 2 * c0 + c_hi
            if den < 0:
                d[axis] += 0.5 * (c_lo - c_hi) / den
    return d


def _spectrum(image: np.ndarray, size: list[int], cache: dict | None, workers: int = _WORKERS) -> np.ndarray:
    """``rfftn(image, size)``, kept in ``cache`` (by size) when one is given."""
    key = tuple(size)
    if cache is not None and key in cache:
        return cache[key]
    spectrum = _rfftn(image, size, workers)
    if cache is not None:
        cache[key] = spectrum
    return spectrum


@functools.cache
def _fft():
    """``scipy.fft`` (pocketfft, vectorised across lines: numpy's own ``numpy.fft`` was ~5x
    slower on these arrays, one line at a time). Imported on first use; its import (~0.12-0.17
    CPU s: the array-API layer, ``scipy.special`` for fftlog) starts in the background at the
    estimate's start (:func:`_import_fft_in_background`), overlapping the coarse reads."""
    import scipy.fft

    return scipy.fft


def _import_fft_in_background() -> None:
    """Start ``scipy.fft``'s import on a daemon thread unless it is loaded: the estimate's
    first transform comes after the coarse level's reads, which leave the GIL free most of
    the time (a caller arriving first waits on the import lock: the same module)."""
    import sys

    if "scipy.fft" not in sys.modules:
        threading.Thread(target=_fft, name="txmdb-fft-import", daemon=True).start()


def _rfftn(image: np.ndarray, size: Sequence[int], workers: int) -> np.ndarray:
    """``scipy.fft.rfftn(image, size, workers=workers)`` (``size`` ≥ the image's shape) for a
    native float32 or float64 ``image`` (what the estimate passes), bit for bit, without
    transforming the zero padding: pocketfft transforms the last axis,
    then the others in order, line by line, and a line of zeros stays zeros; here each
    axis runs only over the lines that hold data so far, in the same order (the padding
    is 15-40 % of a correlation's transform volume)."""
    fft = _fft()
    a = np.asarray(image)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)                     # (not scipy's for float16 or byte-swapped floats)
    d = a.ndim
    out = np.zeros(tuple(size[:-1]) + (size[-1] // 2 + 1,), np.result_type(a.dtype, np.complex64))
    out[tuple(slice(0, n) for n in a.shape[:-1])] = fft.rfft(a, int(size[-1]), axis=d - 1, workers=workers)
    for k in range(d - 1):
        part = out[(slice(None),) * (k + 1) + tuple(slice(0, n) for n in a.shape[k + 1:-1])]
        done = fft.fft(part, axis=k, overwrite_x=True, workers=workers)
        if not np.shares_memory(done, part):          # (overwrite_x allows, not promises, in place)
            part[...] = done
    return out


def _irfftn_at(spectrum: np.ndarray, size: Sequence[int], idx: Sequence[np.ndarray], workers: int) -> np.ndarray:
    """``scipy.fft.irfftn(spectrum, size, workers=workers)[np.ix_(*[i % n for i, n in zip(idx,
    size)])]``, bit for bit, transforming only what those outputs need: pocketfft's axes in
    its order (the first ones complex, the last complex-to-real), each next axis only at the
    positions kept along the previous ones, unscaled (``norm="forward"``), then
    ``irfftn``'s normalisation ``1/N`` (float, from long double) applied to the outputs as
    its last pass does."""
    fft = _fft()
    d = spectrum.ndim
    y = spectrum
    for k in range(d - 1):
        y = fft.ifft(y, axis=k, norm="forward", workers=workers).take(np.asarray(idx[k]) % size[k], axis=k)
    out = fft.irfft(y, int(size[-1]), axis=d - 1, norm="forward",
                    workers=workers).take(np.asarray(idx[-1]) % size[-1], axis=d - 1)
    return out * out.dtype.type(1 / np.longdouble(math.prod(size)))


def _box_slices(lo, hi) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def _fill_outside(a: np.ndarray, box: tuple[slice, ...], value) -> None:
    """``a[...] = value`` everywhere but inside ``box`` (slices with explicit bounds)."""
    head = ()
    for sl in box:
        a[head + (slice(0, sl.start),)] = value
        a[head + (slice(sl.stop, None),)] = value
        head += (sl,)


@dataclass
class _Model:
    shifts: np.ndarray        # (n_e, ndim) in working-grid voxels
    gain: np.ndarray          # a_e
    pattern_gain: np.ndarray  # c_e
    offset: np.ndarray        # b_e
    pattern: np.ndarray       # F, lab frame
    sigma: np.ndarray         # standard error of each shift, working-grid voxels
    detection: np.ndarray     # t-value of the sample template in each energy


def _template(J, s, a, c, b, F, box, order, components: int = 1) -> list[np.ndarray]:
    """Sample templates over the common box (zero outside): the per-voxel median of the
    registered, pattern-free images divided by their gains (the a-weighted mean when
    fewer than three energies carry the sample) and, with ``components=2``, the main way
    the energies differ from it (the contrast inside the particles changing through the
    edge), made orthogonal to the template's gradients so that it cannot stand in for a
    shift.

    The median, not the mean: a group of energies registered wrong together (the dim
    pre-edge energies, pulled together by what the fixed pattern leaves) moves a mean
    template towards itself and then vouches for its own shifts; a median of a minority
    does not (48³ ± 5, seed 4: worst 2.58 -> 0.55 voxel; docs/registration.md)."""
    sl = _box_slices(*box)
    n = J.shape[0]
    inner = tuple(h - l for l, h in zip(*box))
    regs = _registered(J, s, order, box, c, b, F)
    a = np.asarray(a, dtype=np.float64)
    # energies holding the sample (a blank frame's image divided by its ~0 gain is noise)
    carriers = [e for e in range(n) if a[e] > _CARRIER_GAIN * a.max()] if a.max() > 0 else []
    if len(carriers) >= 3:
        flat, gains = regs.reshape(n, -1), a[carriers].astype(np.float32)[:, None]
        middle = np.empty(flat.shape[1], dtype=flat.dtype)

        def median(cols):
            # the carriers' columns divided by their gains on the threads: a copy, sorted in place
            # (faster so than as rows by _columns_sorted: the copy is needed for the division),
            # block by block (_SORT_COLUMNS)
            room = np.empty(len(carriers) * min(_SORT_COLUMNS, cols.stop - cols.start), dtype=flat.dtype)
            for part in _column_blocks(cols):
                scaled = room[:len(carriers) * (part.stop - part.start)].reshape(len(carriers), -1)
                for row, e in zip(scaled, carriers):
                    row[...] = flat[e, part]
                scaled /= gains
                middle[part] = _sorted_median(scaled, overwrite=True)
        _by_columns(median, flat.shape[1])
        mean = middle.reshape(inner).astype(np.float64)
    else:
        den = float((a ** 2).sum())
        mean = sum(w * r.astype(np.float64) for w, r in zip(a, regs) if w != 0) / den if den > 0 \
            else np.zeros(inner)
    out = [mean]
    if components > 1:
        out.append(_second_template(regs, a, mean))
    templates = []
    for t in out:
        full = np.zeros(J.shape[1:], dtype=np.float32)
        full[sl] = t
        templates.append(full)
    return templates


#: an energy carries the sample template when its gain is above this fraction of the largest
_CARRIER_GAIN = 0.2


def _second_template(regs: np.ndarray, a: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The leading principal direction of the residuals ``R_e = reg_e - a_e mean`` with
    the template's gradient directions projected out (``P = I - Q Qᵀ``), scaled to the
    template's norm. Computed from Gram products of the registered images (``X Xᵀ``,
    ``X m``, ``X Q``): ``R P Rᵀ`` and ``vᵀ R P`` without forming the (n_energy × voxels)
    residual matrix or its projections. ``X Xᵀ`` and the gradient side run on two threads."""
    m = mean.ravel()
    X = _widened(regs).reshape(regs.shape[0], -1)

    def gradient_side():
        grads = np.gradient(mean) if mean.ndim > 1 else [np.gradient(mean)]
        basis = []                                # orthonormal gradient directions
        for g in grads:
            g = g.ravel().copy()
            for q in basis:
                g -= (q @ g) * q
            norm = np.linalg.norm(g)
            if norm > 0:
                basis.append(g / norm)
        Q = np.stack(basis, axis=1) if basis else np.zeros((m.size, 0))
        return Q, X @ m, m @ Q, X @ Q
    XX, (Q, Xm, mQ, XQ) = _per_energy(lambda k: X @ X.T if k == 0 else gradient_side(), 2)
    RQ = XQ - np.outer(a, mQ)
    gram = XX - np.outer(Xm, a) - np.outer(a, Xm) + (m @ m) * np.outer(a, a) - RQ @ RQ.T
    _, v = np.linalg.eigh(gram)
    w = v[:, -1]
    row = w @ X - (w @ a) * m                     # wᵀ R
    second = row - Q @ (row @ Q)                  # … P
    norm = np.linalg.norm(second)
    return (second / norm * np.linalg.norm(m) if norm > 0 else second).reshape(mean.shape)


def _widened(stack: np.ndarray) -> np.ndarray:
    """``stack.astype(np.float64)`` (C-contiguous ``stack``, energies first), the voxels
    converted by the threads."""
    flat = stack.reshape(stack.shape[0], -1)
    out = np.empty(flat.shape, dtype=np.float64)

    def widen(cols):
        out[:, cols] = flat[:, cols]
    _by_columns(widen, flat.shape[1])
    return out.reshape(stack.shape)


def _neg_gradient_into(c: np.ndarray, rows: np.ndarray) -> bool:
    """``rows[a] = -np.gradient(c)[a][1:-1, …].ravel()`` for every axis ``a``, compiled in one
    pass (:func:`txmdb.analysis._registration_numba.neg_central_differences`, the same
    numbers) instead of whole gradient volumes, their negated crops and the copies into
    ``rows``; False (nothing written) without numba or for other than 2-D/3-D ``c``."""
    kernel = _numba()
    if kernel is None or c.ndim not in (2, 3):
        return False
    lift = (1,) * (3 - c.ndim)
    inner = tuple(n - 2 for n in c.shape)
    kernel.neg_central_differences(c.reshape(lift + c.shape), rows.reshape((c.ndim,) + lift + inner), c.ndim - 2)
    return True


def _shift_error(reg: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Standard error (voxels, rms over axes) of the shift between ``reg`` and ``other``:
    least squares of ``reg`` on ``other``, its gradient and a constant; the residual
    variance is scaled by the residual's correlation volume (a smooth residual has fewer
    independent voxels than voxels)."""
    nd = reg.ndim
    inner = tuple(slice(1, -1) for _ in range(nd))
    size = math.prod(max(n - 2, 0) for n in reg.shape)
    # rows: other, -∇other, 1, then the data (the gradient rows compiled straight into
    # place when numba is there; the normal equations by _normal_equations)
    rows = np.empty((nd + 3, size), dtype=np.result_type(other.dtype, reg.dtype))
    A, y = rows[:-1], rows[-1]
    y.reshape(reg[inner].shape)[...] = reg[inner]
    A[0] = other[inner].ravel()
    if not _neg_gradient_into(other, A[1:1 + nd]):
        grads = np.gradient(other) if nd > 1 else [np.gradient(other)]
        for row, g in zip(A[1:1 + nd], grads):
            row[...] = -g[inner].ravel()
    A[-1] = 1.0
    G, Ay = _normal_equations(rows)
    try:
        sol = np.linalg.solve(G, Ay)
        cov = np.linalg.inv(G)
    except np.linalg.LinAlgError:
        return math.inf, 0.0
    if sol[0] == 0:
        return math.inf, 0.0
    r = (y - sol @ A).reshape(reg[inner].shape)
    var_r, var_d = _residual_spreads(r)
    ell2 = var_r / (2 * var_d) if var_d > 0 else 0.0
    volume = max(1.0, (4 * math.pi * ell2) ** (nd / 2))
    var = np.maximum(var_r * volume * np.diag(cov), 0.0)
    se = np.sqrt(var[1:1 + nd]) / abs(sol[0])
    t = abs(sol[0]) / math.sqrt(var[0]) if var[0] > 0 else math.inf
    return float(np.sqrt(np.mean(se ** 2))), float(t)


def _residual_spreads(r: np.ndarray) -> tuple[float, float]:
    """``r.var()`` and the mean over axes of the variance of ``np.gradient(r)`` (float64
    ``r``), compiled when numba is there: the same numbers without the gradient volumes
    and the variances' temporaries (5x faster, a fifth of the standard error's time)."""
    kernel = _numba()
    if kernel is not None and r.ndim in (2, 3) and r.dtype == np.float64 and min(r.shape) >= 2:
        var_r, var_d = kernel.residual_spreads(np.ascontiguousarray(r).reshape((1,) * (3 - r.ndim) + r.shape),
                                               3 - r.ndim, np.empty(r.size))
        return float(var_r), float(var_d)
    dr = np.gradient(r) if r.ndim > 1 else [np.gradient(r)]
    return float(r.var()), float(np.mean([g.var() for g in dr]))


def _standard_error(J, s, a, c, b, F, box, order, neighbours: int = 2,
                    regs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Standard error of each energy's shift, and the t-value of its template coefficient
    (how many standard errors of sample signal it holds): the better of the fits against
    the template of all *other* energies (its own noise would vouch for it) and against
    the template of its ``neighbours`` on each side (similar contrast through the edge)."""
    n = J.shape[0]
    regs = _registered(J, s, order, box, c, b, F) if regs is None else regs
    weights = np.asarray(a, dtype=np.float64)
    # the images in float64 once, by the threads: the products below cast them anyway (the
    # weighted sum's 83 MB copy on this thread alone at 272³, each energy's and its
    # neighbours' once more per energy); the same values, so the same products
    wide = _widened(regs)
    num = np.tensordot(weights, wide, axes=1)
    den = float((weights ** 2).sum())

    def one(e):
        sigma, tval = math.inf, 0.0
        reg = wide[e]
        if den - weights[e] ** 2 > 0:
            sigma, tval = _shift_error(reg, (num - weights[e] * reg) / (den - weights[e] ** 2))
        near = [k for k in range(max(0, e - neighbours), min(n, e + neighbours + 1)) if k != e]
        wn = weights[near]
        if (wn ** 2).sum() > 0:
            local = np.tensordot(wn, wide[near], axes=1) / (wn ** 2).sum()
            se, t = _shift_error(reg, local)
            sigma, tval = min(sigma, se), max(tval, t)
        return sigma, tval

    sigma, tval = (np.array(v, dtype=np.float64) for v in zip(*_per_energy(one, n)))
    return sigma, tval


def _disagreement(J, s, c, b, F, box, order, reach: float = 2.0, clean: np.ndarray | None = None) -> np.ndarray:
    """How far (voxels, largest axis) each registered energy sits from the leave-one-out
    median of all other registered energies, by bounded correlation over the common box
    (``clean``: the registered, pattern-free images, when the caller has them).

    The standard error measures precision only: a group of energies misregistered
    together is consistent with itself and with the template it shaped. Against the
    median of the others it is not, as long as it is a minority. Measured twice: with
    the fitted pattern removed, and without it (the pattern, fitted with wrong shifts,
    can hold the misregistered sample structure and then vouch for the wrong shift: on
    one stack the first comparison saw 0.1-0.3 on energies 2 voxels wrong, the second
    0.9-1.5). Without the pattern removed the comparison carries the pattern's own pull
    (up to 0.8 on well registered mid-edge energies), so it counts at half weight."""
    n = J.shape[0]
    worst = np.zeros(n)
    for with_pattern_removed, weight in ((True, 1.0), (False, 0.5)):
        if with_pattern_removed:
            regs = _registered(J, s, order, box, c, b, F) if clean is None else clean
        else:
            regs = _registered(J, s, order, box)
        template = _loo_median_template(regs)
        d = _per_energy(lambda e: weight * float(np.abs(_bounded_correlation(template(e), regs[e], reach,
                                                                             workers=1)).max()), n)
        for e in range(n):
            worst[e] = max(worst[e], d[e])
    return worst


def _lab_box(lo, hi, shift, shape) -> tuple[list[int], list[int]]:
    """The lab-frame box where ``x - shift`` falls in the template box ``[lo, hi)``,
    shrunk by one voxel (inside the field) for the gradient."""
    blo, bhi = [], []
    for axis, n in enumerate(shape):
        l = max(int(math.ceil(lo[axis] + shift[axis])) + 1, 1)
        h = min(int(math.floor(hi[axis] - 1 + shift[axis])), n - 1)
        blo.append(l)
        bhi.append(max(h, l))
    return blo, bhi


def _fit(J, s, templates, F, box, order, *, with_pattern: bool, gauss_newton: bool, coef=None, moved=None,
         residuals: bool = True):
    """Per-energy least squares of ``J_e ≈ Σ_k a_ek T_k(x-s) [- ∇(Σ_k a_ek T_k)(x-s)·δ]
    [+ c F] + b`` over the lab-frame box of the moved templates (the gradient with the
    coefficients ``coef`` of the previous fit). Returns the coefficients (n, K), c, b,
    δ and the residuals (for the fixed pattern; None with ``residuals=False``). ``moved``, a list, keeps the moved
    templates per energy for the next fit with the same shifts and templates (the
    Gauss-Newton step follows a plain fit: it need not move them again)."""
    n, shape = J.shape[0], J.shape[1:]
    nd, K = len(shape), len(templates)
    a = np.zeros((n, K))
    c, b = np.zeros(n), np.zeros(n)
    step = np.zeros((n, nd))
    # (the Gauss-Newton step's caller has no use for them: 100 MB at 272³ not filled)
    # (NaN-filled by each energy's thread: a serial fill of 60 windows was a pass on one core)
    resid = np.empty((n,) + shape, dtype=np.float32) if residuals else None
    lo, hi = box
    lab = [_lab_box(lo, hi, s[e], shape) for e in range(n)]
    if moved is not None and len(moved) == n:
        kept_all = moved
    else:
        # T_k(x - s_e), only over the energy's lab box plus the gradient's voxel, into
        # arrays allocated on this thread (see _by_columns)
        grown = [([l - 1 for l in lab[e][0]], [h + 1 for h in lab[e][1]]) for e in range(n)]
        kept_all = [[np.empty(tuple(h - l for l, h in zip(*grown[e])), dtype=T.dtype) for T in templates]
                    for e in range(n)]
        _per_energy(lambda e: [_translate(T, -s[e], order, box=grown[e], out=o)
                               for T, o in zip(templates, kept_all[e])], n)
        if moved is not None:
            moved[:] = kept_all
    core = (slice(1, -1),) * nd
    kernel = _numba()

    def blank(e, sl):
        if resid is not None:
            resid[e][sl] = np.nan

    def one(e):
        # writes row e of a, c, b, step, resid only: the energies run on threads
        kept = kept_all[e]
        blo, bhi = lab[e]
        sl = _box_slices(blo, bhi)
        inner = tuple(h - l for l, h in zip(blo, bhi))
        if resid is not None:
            # NaN around the box; the box is written below, or blanked when the fit fails
            _fill_outside(resid[e], sl, np.nan)
        if math.prod(inner) < 4 * (nd + K + 2):
            return blank(e, sl)
        # float32 design matrix, the constant and then the data as its last rows (one
        # copy of each column; the normal equations summed in float64, _normal_equations)
        rows = np.empty((K + nd * gauss_newton + with_pattern + 2, math.prod(inner)), dtype=np.float32)
        cols = [m[core] for m in kept]
        if gauss_newton:
            weights = coef[e] if coef is not None else np.eye(K)[0]
            # central differences on the box plus one voxel (the box is at least one
            # voxel inside the field): the same numbers as over the whole field
            combined = sum(np.float32(w) * m for w, m in zip(weights, kept))
            if _neg_gradient_into(combined, rows[K:K + nd]):
                cols += [None] * nd                # written in place
            else:
                grads = np.gradient(combined) if nd > 1 else [np.gradient(combined)]
                cols += [-g[core] for g in grads]
        if with_pattern:
            cols.append(F[sl])
        for row, col in zip(rows, cols):
            if col is not None:
                row.reshape(inner)[...] = col
        rows[-2] = 1.0
        rows[-1].reshape(inner)[...] = J[e][sl]
        A, y = rows[:-1], rows[-1]
        G, Ay = _normal_equations(rows)
        try:
            sol = np.linalg.solve(G + 1e-9 * np.trace(G) / len(G) * np.eye(len(G)), Ay)
        except np.linalg.LinAlgError:
            return blank(e, sl)
        a[e], b[e] = sol[:K], sol[-1]
        if with_pattern:
            c[e] = sol[-2]
        if gauss_newton:
            # the gradient columns carry δ directly (the coefficients are in them); one
            # step at most a voxel per axis (the linearisation's reach)
            step[e] = np.clip(sol[K:K + nd], -1.0, 1.0)
        if resid is None:
            return
        scale = c[e] if with_pattern and abs(c[e]) > 0.2 else 1.0
        ms = A[:K]
        if kernel is not None:
            # one compiled pass, the numbers of the numpy line below
            lift = (1,) * (3 - nd)
            kernel.fit_residual(y.reshape(lift + inner), ms.reshape((K,) + lift + inner),
                                a[e].astype(np.float32), np.float32(b[e]), np.float32(scale),
                                resid[e][sl].reshape(lift + inner))
            return
        r = y - sum(np.float32(w) * m for w, m in zip(a[e], ms)) - np.float32(b[e])
        resid[e][sl] = (r / np.float32(scale)).reshape(inner)
    _per_energy(one, n)
    return a, c, b, step, resid


def _normal_equations(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A Aᵀ, A y)`` in float64 for the design rows ``A`` and the data ``y`` (the last row)
    of the 2-D ``rows``: the Gram matrix of ``rows``, every product exact in float64 and
    summed in float64 in :func:`txmdb.analysis._registration_numba.gram`'s fixed order,
    compiled (3-5x faster than BLAS' float32 ``A @ A.T`` on a fit's 4-8 rows of ~10⁵
    voxels, which was most of the fits' time) or by numpy with the same numbers."""
    kernel = _numba()
    full = np.empty((rows.shape[0],) * 2)
    if kernel is not None:
        kernel.gram(np.ascontiguousarray(rows), full)
        return full[:-1, :-1], full[:-1, -1]
    wide = rows.astype(np.float64)
    lanes = 64                                   # _registration_numba.GRAM_LANES (not imported: no numba)
    cut = wide.shape[1] - wide.shape[1] % lanes
    for j in range(len(wide)):
        for k in range(j, len(wide)):
            products = wide[j] * wide[k]
            acc = products[:cut].reshape(-1, lanes).sum(axis=0)    # each lane summed in order
            while acc.size > 1:
                acc = acc[0::2] + acc[1::2]
            total = acc[0]
            for p in products[cut:]:
                total += p
            full[j, k] = full[k, j] = total
    return full[:-1, :-1], full[:-1, -1]


def _median_pattern(resid: np.ndarray) -> np.ndarray:
    """Per-voxel median over energies, ignoring NaN (energies whose box misses the voxel),
    the voxels split between the threads."""
    n = resid.shape[0]
    flat = resid.reshape(n, -1)
    out = np.zeros(flat.shape[1], dtype=np.float32)

    def median(cols):
        rows = _block_rows(cols, n, flat.dtype)
        for part in _column_blocks(cols):
            _nan_median_columns(flat[:, part], out[part], rows[:part.stop - part.start])
    _by_columns(median, flat.shape[1])
    return out.reshape(resid.shape[1:])


def _nan_median_columns(flat: np.ndarray, out: np.ndarray, rows: np.ndarray | None = None) -> None:
    """:func:`_median_pattern` of the columns of ``flat`` into ``out`` (zero where all NaN);
    ``rows``: room for the columns' sorted copy (``flat.shape[::-1]``)."""
    kernel = _numba()
    if kernel is not None and out.flags.c_contiguous:
        # one sort of every column (NaN last), the middle values read off compiled: the
        # numbers below without counting the NaNs and copying out two column subsets
        kernel.nan_median_sorted(_columns_sorted(flat, rows).T, out)
        return
    n = flat.shape[0]
    count = n - np.isnan(flat).sum(axis=0)
    full = count == n
    if full.any():
        out[full] = _sorted_median(flat[:, full], overwrite=True)
    some = (count > 0) & ~full
    if some.any():
        # sorting puts NaN last: the median of the k finite values sits in the first k rows
        part = np.sort(flat[:, some], axis=0)
        k = count[some]
        cols = np.arange(k.size)
        out[some] = 0.5 * (part[(k - 1) // 2, cols] + part[k // 2, cols])


def _refine(J: np.ndarray, s: np.ndarray, reference: int, iterations: int, order: int = 3,
            margin: int = 0, second_component: int = 2) -> _Model:
    """Joint template / fixed-pattern / shift refinement on working images ``J``.

    The fixed pattern is fitted only when the starting shifts ``s`` span at least
    :data:`_PATTERN_SPAN` voxels on some axis: a sample that does not move relative to the
    detector cannot be told from a pattern that does not move either.

    ``margin`` voxels at the field's border are left out: there the smoothing saw
    replicated border values, which do not move with the sample. At most
    ``iterations`` Gauss-Newton steps: one-template steps until the largest step is
    below :data:`_STEP_TOLERANCE` (at most ``iterations - second_component``), then up
    to ``second_component`` steps with a second sample template, fewer once converged."""
    n, shape = J.shape[0], J.shape[1:]
    s = s.copy()
    a, c, b = np.ones((n, 1)), np.zeros(n), np.zeros(n)
    F = np.zeros(shape, dtype=np.float32)
    sigma, tval = np.full(n, np.inf), np.zeros(n)
    first_steps, second_steps, done = 0, 0, False
    rms = math.inf
    components = 1 if iterations > second_component else 2
    pattern = float(np.ptp(s, axis=0).max()) >= _PATTERN_SPAN
    while True:
        box = _common_box(s, shape, margin)
        # templates and fixed pattern for the current shifts (twice on the first pass: F starts at 0)
        for _ in range(2 if first_steps + second_steps == 0 and pattern else 1):
            moved = []                             # (the last pass' moved templates freed first)
            templates = _template(J, s, a[:, 0], c, b, F, box, order, components)
            a, c, b, _, resid = _fit(J, s, templates, F, box, order, with_pattern=pattern, gauss_newton=False,
                                     moved=moved, residuals=pattern)
            if pattern:
                F = np.nan_to_num(_median_pattern(resid), copy=False)
            # freed before the next fit makes its own (272³: 98 MB twice over, fresh pages)
            del resid
        if iterations == 0:
            sigma, tval = _shift_errors(J, s, a[:, 0], c, b, F, box, order)
            break
        a, c, b, step, _ = _fit(J, s, templates, F, box, order, with_pattern=pattern, gauss_newton=True, coef=a,
                                moved=moved, residuals=False)
        del moved
        s += step
        s -= s[reference]
        step = step - step[reference]
        previous_rms, rms = rms, float(np.sqrt((step ** 2).mean()))
        converged = float(np.abs(step).max()) < _STEP_TOLERANCE or rms < _RMS_STEP_TOLERANCE
        if components == 1:
            first_steps += 1
            # the second template only once the shifts are close: before, the way the
            # energies differ from the mean is mostly their misregistration
            if (converged or _settling(rms, previous_rms)
                    or first_steps >= iterations - second_component):
                components = 2 if second_component > 0 else 1
                done = second_component == 0
        else:
            second_steps += 1
            done = converged or second_steps >= min(second_component, iterations - first_steps)
        if done:
            # the quality at the final shifts with the last fit's gains, offsets and pattern:
            # another pass of templates, fit and pattern first would change no shift (it was
            # 0.3 of the estimate's ~5.8 CPU s at 272³; docs/registration.md)
            box = _common_box(s, shape, margin)
            sigma, tval = _shift_errors(J, s, a[:, 0], c, b, F, box, order)
            break
    return _Model(s, a[:, 0], c, b, F, sigma, tval)


#: working voxels the starting shifts must span on some axis for the fixed pattern to be
#: fitted: the demo's gravel-like scan, which does not drift at all, had a group of edge
#: energies carried 4-10 voxels off by the pattern fit (right to 0.1 voxel without it);
#: with drift of ±1 voxel it registers to 0.23 with the pattern fitted
_PATTERN_SPAN = 1.0


def _common_box(s: np.ndarray, shape, margin: int):
    """The region every energy covers with the shifts ``s``, less ``margin`` voxels."""
    lo, hi = valid_box(s, shape)
    box = (tuple(v + margin for v in lo), tuple(v - margin for v in hi))
    if any(h - l < 4 for l, h in zip(*box)):
        raise ValueError("the energies' shifts leave no common region to register")
    return box


def _shift_errors(J, s, a, c, b, F, box, order) -> tuple[np.ndarray, np.ndarray]:
    """Each energy's σ (standard error raised to its disagreement) and detection t-value,
    from the registered, pattern-free images made once for both measures."""
    regs = _registered(J, s, order, box, c, b, F)
    sigma, tval = _standard_error(J, s, a, c, b, F, box, order, regs=regs)
    return np.maximum(sigma, _disagreement(J, s, c, b, F, box, order, clean=regs)), tval


#: The refinement counts as converged when its largest Gauss-Newton step (working-grid
#: voxels) is below ``_STEP_TOLERANCE`` or their rms below ``_RMS_STEP_TOLERANCE``. On a
#: large field the steps reach the noise level in 3 iterations (272³: largest 0.03-0.04,
#: rms 0.0035); on a small one with a large drift (48³ ± 5) a group of dim energies and
#: the fixed pattern converge together slowly (largest step 0.06 -> 0.025 over 10
#: iterations, rms 0.02 -> 0.007) and stopping early leaves that group 0.2-0.5 voxel off.
_STEP_TOLERANCE = 0.02
_RMS_STEP_TOLERANCE = 0.005


def _settling(rms: float, previous_rms: float) -> bool:
    """Whether one-template steps may give way to the second template before they
    converge: the rms step is below :data:`_SETTLING_RMS` and fell at least
    :data:`_SETTLING_DROP`-fold in one step. At 272³ the steps fell 0.13 -> 0.016 (the
    third, 0.005, moved the shifts less than the second template's first step): switching
    there saves one step of ~0.12 s and ends closer to the truth. On the 48³ ± 5 stacks
    the steps shrink slowly while the dim energies and the fixed pattern settle together;
    switching there on the rms alone put seed 4 of 8 over the target."""
    return rms < _SETTLING_RMS and rms * _SETTLING_DROP < previous_rms


_SETTLING_RMS = 0.02
_SETTLING_DROP = 4.0


def _check(n_energies: int, reference_index: int, shape: Sequence[int], max_shift: float, roi):
    if n_energies < 2:
        raise ValueError(f"a registration needs at least two energies, the stack has {n_energies}")
    if not 0 <= reference_index < n_energies:
        raise ValueError(f"reference energy index {reference_index} is not in the stack (0..{n_energies - 1})")
    if len(shape) not in (2, 3):
        raise ValueError(f"the field of view must be 2-D or 3-D, got shape {tuple(shape)}")
    half = min(shape) / 2
    if not max_shift > 0:
        raise ValueError(f"max_shift must be positive, got {max_shift}")
    if max_shift > half:
        raise ValueError(f"max_shift {max_shift:g} voxels is larger than half the field of view "
                         f"({half:g} voxels of {min(shape)})")
    if roi is None:
        return tuple(0 for _ in shape), tuple(shape)
    if len(roi) != len(shape):
        raise ValueError(f"roi has {len(roi)} axes, the field of view {len(shape)}")
    lo, hi = [], []
    for sl, n in zip(roi, shape):
        a, b, step = sl.indices(n)
        if step != 1 or b - a < REGISTRATION_MIN_ROI_VOXELS:
            raise ValueError(f"roi {roi} must be a box of at least {REGISTRATION_MIN_ROI_VOXELS} voxels per "
                             f"axis inside {tuple(shape)}")
        lo.append(a)
        hi.append(b)
    return tuple(lo), tuple(hi)


def estimate_shifts(read_energy: Callable[[int, Window], np.ndarray], n_energies: int, reference_index: int, *,
                    shape: Sequence[int], max_shift: float, roi: Sequence[slice] | None = None,
                    band: tuple[float, float] = _DEFAULT_BAND, iterations: int = 12,
                    coarse_voxels: int | None = None, fine_voxels: int | None = None,
                    order: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Estimate one sub-voxel translation per energy.

    Parameters
    ----------
    read_energy : callable ``(i, window) -> ndarray``
        Returns energy ``i`` over ``window`` (a :class:`Window`: full-resolution box,
        mean-binned by ``window.bin``) with shape ``window.shape``, absorbance. For an
        array-like stack: ``lambda i, w: read_window(dataset, i, w)``.
    n_energies : int
        Number of energies (at least 2).
    reference_index : int
        The energy with ``s = 0``.
    shape : sequence of int
        Spatial shape of the field of view, ``(z, y, x)`` or ``(y, x)``.
    max_shift : float
        Largest shift searched per axis, voxels; at most half the smallest field-of-view
        dimension (DESIGN §10's default is a quarter).
    roi : sequence of slice, optional
        Region used for the estimate (default the whole field of view).
    band : (float, float)
        Gaussian sigmas of the difference-of-Gaussians band-pass: in the coarse level's
        binned voxels there, in full-resolution voxels at the fine level (also when it is
        read binned by 2, see :func:`_fine_bin`).
    iterations : int
        Largest number of Gauss-Newton iterations (fewer once converged: largest step
        below 0.02 or rms step below 0.005 working-grid voxels); the last two use a
        second sample template.
    coarse_voxels : int, optional
        Largest coarse-level image (voxels); the region is binned to fit. Default 48³
        (3-D) or 384² (2-D).
    fine_voxels : int, optional
        Largest full-resolution window of the fine level (voxels, before its margin for
        the shifts). Default 48³ (3-D) or 384² (2-D).
    order : {1, 3}
        Interpolation used inside the estimate (3: Keys cubic).

    Returns
    -------
    shifts : ndarray of float64, shape (n_energies, ndim)
        ``s_e`` per energy, voxels, ``shifts[reference_index] == 0``; DESIGN §10:
        ``registered_e(x) = raw_e(x + s_e)``.
    quality : ndarray of float64, shape (n_energies,)
        ``0.1 / (0.1 + σ)`` with ``σ`` the estimated standard error of the energy's shift
        (voxels); compare with :data:`QUALITY_THRESHOLD`. An energy whose shift exceeds
        ``max_shift`` is not flagged here: the caller compares ``abs(shifts)`` with it.

    Raises
    ------
    ValueError
        Fewer than two energies, a reference index outside the stack, ``max_shift`` larger
        than half the field of view, an empty or too small ``roi``, or an energy whose
        values are all NaN (the message names its index).
    """
    with _one_blas_thread(), _freed_memory_kept(), _no_huge_pages(), _no_cyclic_gc(), _estimate_workers():
        return _estimate(read_energy, n_energies, reference_index, shape, max_shift, roi, band, iterations,
                         coarse_voxels, fine_voxels, order)


def _one_blas_thread():
    """BLAS on one thread while the estimate runs: its products are small (a few rows of
    one energy's window) and already run on the per-energy threads; a threaded BLAS
    under them spun more CPU than it computed (272³: 17.5 -> 11.2 CPU s, same shifts)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _estimate(read_energy, n_energies, reference_index, shape, max_shift, roi, band, iterations, coarse_voxels,
              fine_voxels, order):
    """:func:`estimate_shifts` itself."""
    shape = tuple(int(n) for n in shape)
    nd = len(shape)
    lo, hi = _check(n_energies, reference_index, shape, max_shift, roi)
    _import_fft_in_background()
    size = [b - a for a, b in zip(lo, hi)]
    default = 48 ** 3 if nd == 3 else 384 ** 2
    coarse_voxels = coarse_voxels or default
    fine_voxels = fine_voxels or default

    # coarse level: the whole region, binned to fit
    f = max(1, math.ceil((np.prod(size) / coarse_voxels) ** (1.0 / nd) - 1e-9))
    # a 3-D coarse level reads one slice per block (1/f of the stack: the read of the
    # whole stack was most of the estimate's time on large stacks), binned in-plane
    window = Window(lo, hi, f, 1 if nd == 3 else None)
    J = _working_images(read_energy, n_energies, window, band)
    margin = int(math.ceil(3 * band[0]))
    # binned, a round that moves no shift by a quarter of a full-resolution voxel is the
    # last one: the fine level's own round searches f + 1 voxels around these shifts
    s = _start(J, reference_index, max_shift / f + 1, settled=_RESTART_SETTLED if f == 1 else _COARSE_SETTLED / f)
    if f == 1:
        model = _refine(J, s, reference_index, iterations, order, margin)
        return model.shifts, _quality(model.sigma, model.detection)
    # binned, the drift spans few voxels: too few to tell the fixed pattern from the
    # sample, so the joint model waits for the fine level; the coarse template only
    # places the fine window
    box = valid_box(s, J.shape[1:])
    template = _template(J, s, np.ones(n_energies), np.zeros(n_energies), np.zeros(n_energies),
                         np.zeros(J.shape[1:], np.float32), box, order)[0]
    shifts = s * f
    del J

    # fine level: a full-resolution window centred on the sample's structure (the
    # centroid of the template's energy), widened by the spread of the shifts so that
    # every energy's sample is inside it. Centred, not on the busiest spot: inside the
    # edge the particles' bright part shrinks towards the bulk, which a window on one
    # side of a particle cannot tell from a shift (0.8 voxel at 272³), while around the
    # centre the apparent inward moves cancel.
    w = [min(n, int(fine_voxels ** (1.0 / nd))) for n in size]
    box_lo, box_hi = box
    weight = template[_box_slices(box_lo, box_hi)].astype(np.float64) ** 2
    grids = np.indices(weight.shape, sparse=True)
    total = weight.sum()
    peak = [float((g * weight).sum() / total) if total > 0 else (n - 1) / 2
            for g, n in zip(grids, weight.shape)]
    centre = [lo[k] + int(round((box_lo[k] + peak[k]) * f)) + f // 2 for k in range(nd)]
    g = _fine_bin(weight, peak, w, f)
    w = [min(n, k * g) for n, k in zip(size, w)]
    s_min, s_max = shifts.min(axis=0) - f, shifts.max(axis=0) + f
    start, stop = [], []
    for k in range(nd):
        a = centre[k] - w[k] // 2
        a = min(max(a, lo[k]), hi[k] - w[k])
        b = a + w[k]
        a = max(lo[k], int(math.floor(a + s_min[k])) - 3)
        b = min(hi[k], int(math.ceil(b + s_max[k])) + 3)
        start.append(a)
        stop.append(b)
    window = Window(tuple(start), tuple(stop), g)
    # the fine level's band is in full-resolution voxels: binned, it passes the same
    # scales (in binned voxels, a group of edge energies of the demo's gravel-like
    # particle drifted together through the Gauss-Newton steps, up to 10 voxels)
    J = _working_images(read_energy, n_energies, window, (band[0] / g, band[1] / g))
    # the coarse start is already robust to the fixed pattern (its leave-one-out rounds):
    # one leave-one-out round around it is enough (the correlation with the reference
    # image and three rounds here cost a third of the estimate)
    if n_energies >= 4:
        s = _fine_restart(J, shifts / g, reference_index, max(1, round(f / g)), order)
    else:                                          # too few energies for a median
        s = _start(J, reference_index, f / g + 1, shifts / g)
    model = _refine(J, s, reference_index, iterations, order, margin)
    return model.shifts * g, _quality(model.sigma * g, model.detection)


def _fine_bin(weight: np.ndarray, peak: Sequence[float], w: Sequence[int], f: int) -> int:
    """The fine level's bin: 1, or 2 when the full-resolution window (``w`` voxels, centred
    on ``peak`` of the coarse template's power ``weight``, bin ``f``) lies inside one
    sample, then read twice as wide.

    Inside a particle of uniform density nothing stays the same across the edge: its
    grains' valence pattern changes with energy, and the fit follows the pattern the
    neighbouring energies share (the demo's rod particle, 90 voxels across in a 48³
    window: errors up to 2 voxels). Such a window shows the band-passed template at under
    :data:`_OUTLINE_DENSITY` of its mean power; twice as wide, binned by 2, it holds the
    outline, which moves with the sample."""
    if f < 2 or weight.size == 0:
        return 1
    half = [k / (2 * f) for k in w]
    inner = weight[tuple(slice(max(0, int(round(p - h))), int(round(p + h))) for p, h in zip(peak, half))]
    total = float(weight.mean())
    # (no power, or a window with no voxels: nothing says the window is inside a particle)
    if not total > 0 or inner.size == 0 or float(inner.mean()) >= _OUTLINE_DENSITY * total:
        return 1
    return 2


#: below this fraction of the coarse template's mean power, the fine window lies inside one
#: sample (demo particles: 0.44; the 272³ benchmark's particles: 0.90)
_OUTLINE_DENSITY = 0.6


def _start(J: np.ndarray, reference: int, reach: float, centre: np.ndarray | None = None,
           rounds: int = 3, order: int = 3, settled: float | None = None) -> np.ndarray:
    """Starting shifts: bounded cross-correlation of every energy with the reference, then
    up to ``rounds`` re-correlations against the leave-one-out median template (see
    :func:`_loo_median_templates`), until a round moves no shift by ``settled`` voxels
    (default :data:`_RESTART_SETTLED`)."""
    reference_spectra = {}

    def correlate(e):
        return _bounded_correlation(J[reference], J[e], reach, None if centre is None else centre[e],
                                    reference_spectra, workers=1)
    # the first fills the reference's spectrum cache that the others (on threads) read,
    # when they share one padded size (no centres)
    first = [correlate(0)] if centre is None else []
    s = np.stack(first + _per_energy(lambda e: correlate(e + len(first)), J.shape[0] - len(first)))
    s -= s[reference]
    return _restart(J, s, reference, _RESTART_REACH, rounds if J.shape[0] >= 4 else 0, order, settled)


def _restart(J: np.ndarray, s: np.ndarray, reference: int, reach: float, rounds: int, order: int = 3,
             settled: float | None = None) -> np.ndarray:
    """Up to ``rounds`` re-correlations of every energy against the leave-one-out median
    template, searched within ``reach`` of the shifts ``s`` given, until a round moves no
    shift by ``settled`` voxels (default :data:`_RESTART_SETTLED`)."""
    settled = _RESTART_SETTLED if settled is None else settled
    first = s.copy()
    # each energy's image is correlated once per round around the same centre: its
    # spectrum once (only when there is a second round: a spectrum per energy is memory)
    spectra = [{} if rounds > 1 else None for _ in range(J.shape[0])]
    for _ in range(rounds):
        template = _loo_median_template(_registered(J, s, order))
        # searched around the first start, not the last round's: an energy with no sample
        # (a blank frame) must not wander off and shrink everyone's common region
        previous = s
        s = np.stack(_per_energy(lambda e: _bounded_correlation(template(e), J[e], reach, first[e],
                                                                mov_spectra=spectra[e], workers=1), J.shape[0]))
        s -= s[reference]
        if float(np.abs(s - previous).max()) < settled:
            # settled: another round against the same median would move nothing the
            # refinement could see (272³: the coarse rounds moved 1e-4, then 1e-5 voxel)
            break
    return s


def _fine_restart(J: np.ndarray, s: np.ndarray, reference: int, f: int, order: int = 3) -> np.ndarray:
    """The fine level's leave-one-out round around the coarse shifts ``s`` (full-resolution
    voxels, coarse bin ``f``): on the fine images themselves within ``f + 1`` voxels, or, when
    the coarse bin is at least twice :data:`_RESTART_BIN`, on them binned by it within
    ``(f + 1) / g + 1`` binned voxels (a middle level of the pyramid: the round only has to
    bring every energy into the Gauss-Newton steps' reach, ~1.5 voxels)."""
    g = _RESTART_BIN if f >= 2 * _RESTART_BIN else 1
    if g == 1:
        return _restart(J, s, reference, f + 1, 1, order)
    binned = np.stack(_per_energy(lambda e: _bin(J[e], g), J.shape[0]))
    # (one binned voxel more: the binned grid rounds the reach down)
    return _restart(binned, s / g, reference, (f + 1) / g + 1, 1, order) * g


#: the fine level's restart runs on its images binned by this factor when the coarse
#: level's bin is at least twice it (272³, bin 6: its correlations 0.38 -> 0.06 CPU s,
#: the same Gauss-Newton steps after it; docs/registration.md, session 22)
_RESTART_BIN = 2

#: working-grid voxels searched around the first start by the leave-one-out re-correlations
_RESTART_REACH = 3.0
#: the leave-one-out rounds stop once a round moved no shift by this much (working voxels)
_RESTART_SETTLED = 0.005
#: ... at a coarse level that a fine level follows, by this much in full-resolution voxels
#: (272³, bin 6: the second and third rounds moved the shifts 0.03 voxel in all and cost
#: 0.06 s; the fine level's round and Gauss-Newton steps end at the same shifts)
_COARSE_SETTLED = 0.25


def _loo_median_templates(regs: np.ndarray):
    """Yield, for each energy ``e``, the per-voxel median of the registered images of all
    *other* energies. Against the reference image alone, the fixed pattern (rings) that
    every image shares at zero shift pulls the dim pre-edge energies towards zero; in the
    registered frame the pattern sits at a different place in each energy and the median
    drops it, and leaving ``e`` out keeps its own pattern from vouching for zero.
    One sort per voxel gives the (at most three) order statistics around the middle;
    each leave-one-out median is then read off by comparing ``e``'s own value with them."""
    template = _loo_median_template(regs)
    for e in range(regs.shape[0]):
        yield template(e)


def _loo_median_template(regs: np.ndarray) -> Callable[[int], np.ndarray]:
    """``template(e)``: what :func:`_loo_median_templates` yields for ``e``, for any ``e``
    in any order (the energies' correlations run on threads)."""
    n = regs.shape[0]
    m = n - 1
    ka, kb = (m - 1) // 2, m // 2
    # a full sort (faster than np.partition here), the voxels split between the threads
    flat = regs.reshape(n, -1)
    mid = np.empty((kb - ka + 2, flat.shape[1]), dtype=regs.dtype)

    def middle(cols):
        rows = _block_rows(cols, n, regs.dtype)
        for block in _column_blocks(cols):
            part = _columns_sorted(flat[:, block], rows[:block.stop - block.start])
            mid[:, block] = np.sort(flat[:, block], axis=0)[ka:kb + 2] if part is None else part[:, ka:kb + 2].T
    _by_columns(middle, flat.shape[1])
    kernel = _numba()
    if kernel is not None:
        def compiled(e: int) -> np.ndarray:
            out = np.empty(regs.shape[1:], dtype=regs.dtype)
            kernel.loo_median(flat[e], mid, kb - ka, out.reshape(-1))
            return out
        return compiled
    mid = mid.reshape((-1,) + regs.shape[1:])

    def template(e: int) -> np.ndarray:
        v = regs[e]
        # k-th of the n - 1 others is the k-th of all when e's value is above it, the
        # (k+1)-th when at or below (ties: both are equal, so either is right)
        lo = np.where(v <= mid[0], mid[1], mid[0])
        hi = np.where(v <= mid[kb - ka], mid[kb - ka + 1], mid[kb - ka])
        return 0.5 * (lo + hi)
    return template


def integer_shifts(read_energy: Callable[[int, Window], np.ndarray], n_energies: int, reference_index: int, *,
                   shape: Sequence[int], max_shift: float, roi: Sequence[slice] | None = None) -> np.ndarray:
    """Whole-voxel baseline: plain cross-correlation peak of the raw images against the
    reference, no sub-voxel step, no fixed-pattern model (what a whole-pixel phase
    correlation gives). For comparisons only.

    Returns
    -------
    ndarray of float64, shape (n_energies, ndim)
        Integer shifts, ``s_ref = 0``.
    """
    shape = tuple(int(n) for n in shape)
    lo, hi = _check(n_energies, reference_index, shape, max_shift, roi)
    window = Window(lo, hi, 1)
    ref = read_energy(reference_index, window).astype(np.float64)
    ref = np.nan_to_num(ref - np.nanmean(ref))
    out = np.zeros((n_energies, len(shape)))
    for e in range(n_energies):
        img = read_energy(e, window).astype(np.float64)
        img = np.nan_to_num(img - np.nanmean(img))
        out[e] = np.round(_bounded_correlation(ref, img, max_shift))
    return out - out[reference_index]
