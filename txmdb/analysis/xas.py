"""Bulk XAS numbers: hard K-edge position (half-height and derivative maximum), soft L3 ratio.

Pure functions on numpy arrays (no files, no database), DESIGN §5.

* :func:`k_edge` normalises a K-edge spectrum and finds its half-height edge energy with
  the shared voxel kernel :class:`txmdb.analysis.edge.EdgeKernel` — the very code that
  maps tomograms, so a bulk spectrum and a TXM voxel are measured the same way — and adds
  the derivative-maximum e0 of :func:`e0_derivative` (Larch ``find_e0`` style).
* :func:`l3_ratio` gives the L3-high/L3-low peak-height ratio of a soft-XAS Ni L3 spectrum
  (total electron yield or fluorescence yield: the computation is the same, only the
  probing depth differs, so the mode is metadata of the measurement).

Errors: a spectrum that cannot be analysed (a window with too few points, no edge, no
L3 peak) raises :class:`ValueError`; the catalogue names the file
(:func:`txmdb.errors.input_errors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from txmdb.analysis.edge import EdgeKernel, EdgeParameters, edge_parameters
from txmdb.vocabulary import MODES_BY_KIND

__all__ = [
    "KEdgeResult",
    "L3Parameters",
    "L3Result",
    "EDGE_PRESETS",
    "MODES",
    "edge_preset",
    "k_edge",
    "e0_derivative",
    "l3_ratio",
]


@dataclass(frozen=True)
class L3Parameters:
    """Energy windows (eV, inclusive) of the L3-ratio analysis.

    Attributes
    ----------
    background : tuple of float
        Pre-edge window over which the linear background is fitted.
    low, high : tuple of float
        Windows of the L3-low and L3-high peaks.
    """

    background: tuple[float, float] = (845.0, 850.0)
    low: tuple[float, float] = (852.0, 854.0)
    high: tuple[float, float] = (854.5, 856.5)


#: Analysis presets per edge name used by ``xas ingest --edge``: K edges get the shared
#: kernel's windows, L3 edges the windows of DESIGN §5 (Soft XAS).
EDGE_PRESETS: dict[str, EdgeParameters | L3Parameters] = {
    "Ni-K": edge_parameters("Ni"),
    "Ni-L3": L3Parameters(),
}

#: Acquisition modes that make sense per edge kind ("K" or "L3").
MODES: dict[str, tuple[str, ...]] = MODES_BY_KIND


def edge_preset(edge: str) -> EdgeParameters | L3Parameters:
    """Default analysis parameters for an edge name such as ``"Ni-K"`` or ``"Ni-L3"``.

    Parameters
    ----------
    edge : str
        ``"<element>-K"`` (any element of :data:`txmdb.analysis.edge.PRESETS`) or a key of
        :data:`EDGE_PRESETS`; case-insensitive.

    Returns
    -------
    EdgeParameters or L3Parameters

    Raises
    ------
    ValueError
        Unknown edge.
    """
    for key, value in EDGE_PRESETS.items():
        if key.lower() == edge.strip().lower():
            return value
    element, _, kind = edge.strip().partition("-")
    if kind.upper() == "K":
        return edge_parameters(element)  # raises ValueError for an unknown element
    raise ValueError(f"unknown edge {edge!r}; known: {', '.join(EDGE_PRESETS)} or <element>-K")


# ---------------------------------------------------------------------------- K edge


@dataclass(frozen=True)
class KEdgeResult:
    """Edge position and normalisation of one bulk K-edge spectrum.

    Attributes
    ----------
    edge_energy_ev : float
        Half-height edge energy (first crossing of norm = 0.5 in the edge window,
        linearly interpolated), eV; NaN when the kernel masks the spectrum.
    e0_derivative_ev : float
        Energy of the maximum of the smoothed dμ/dE in the edge window, eV (an energy
        of the grid, as Larch's ``find_e0`` returns).
    edge_jump : float
        ``post(E_c) - pre(E_c)`` at the centre of the edge window (units of μ).
    sigma_pre : float
        RMS residual of the pre-edge line fit (units of μ).
    normalized : numpy.ndarray
        Normalised μ, same shape as the input energies.
    valid : bool
        False when the kernel masks the spectrum (no crossing, jump below ``min_jump``
        or below ``snr`` × ``sigma_pre``).
    """

    edge_energy_ev: float
    e0_derivative_ev: float
    edge_jump: float
    sigma_pre: float
    normalized: np.ndarray
    valid: bool

    def as_dict(self) -> dict[str, Any]:
        """The scalar results (no array), e.g. for the catalogue row or JSON output."""
        return {
            "edge_energy_ev": self.edge_energy_ev,
            "e0_derivative_ev": self.e0_derivative_ev,
            "edge_jump": self.edge_jump,
            "sigma_pre": self.sigma_pre,
            "valid": self.valid,
        }


def _check_spectrum(energy_ev, values, what: str) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(energy_ev, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if e.ndim != 1 or y.shape != e.shape:
        raise ValueError(
            f"energy and {what} must be 1-D arrays of the same length, got {e.shape} and {y.shape}"
        )
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(y))):
        raise ValueError(f"energy or {what} holds NaN or inf")
    if e.size < 2 or not np.all(np.diff(e) > 0):
        raise ValueError("energies must be strictly increasing")
    return e, y


def _lorentzian_smooth(x: np.ndarray, y: np.ndarray, *, hwhm: float, step: float) -> np.ndarray:
    """Convolve ``y(x)`` with a unit-area Lorentzian of half-width ``hwhm`` (same unit as x).

    The data are resampled on a uniform grid of ``step`` for the convolution and read
    back at ``x`` (what Larch's ``smooth`` does), because scans change step size across
    the edge and a convolution needs a uniform grid.
    """
    grid = np.arange(x[0], x[-1] + 0.5 * step, step)
    yg = np.interp(grid, x, y)
    half = int(math.ceil(20.0 * hwhm / step))  # ±20 HWHM holds 97 % of the area
    t = np.arange(-half, half + 1) * step
    kernel = hwhm / (t * t + hwhm * hwhm)
    kernel /= kernel.sum()
    # Edge padding keeps the ends from being pulled toward zero.
    smoothed = np.convolve(np.pad(yg, half, mode="edge"), kernel, mode="valid")
    return np.interp(x, grid, smoothed)


def e0_derivative(energy_ev, mu, *, window: tuple[float, float]) -> float:
    """Derivative-maximum edge energy e0, in the manner of Larch's ``find_e0``.

    dμ/dE is taken by finite differences (``np.gradient``), smoothed with a Lorentzian
    whose half-width is Larch's smoothing step — the mean of the typical energy step and
    E/25000, each clipped to 0.01–1 eV (≈ 0.42 eV on a 0.5 eV Ni K scan) — and e0 is the
    grid energy of its maximum. As in Larch, a maximum only counts when both neighbours
    are also high (above 60 % of the derivative's range), which rejects single-point
    glitches. Unlike Larch, which scans the whole spectrum, the search is limited to
    ``window`` (the edge window): the edge lies there by definition, and this keeps
    monochromator glitches far from the edge out of the answer.

    Parameters
    ----------
    energy_ev : array_like, shape (n,)
        Strictly increasing energies, eV.
    mu : array_like, shape (n,)
        Absorption μ(E).
    window : tuple of float
        ``(low, high)`` energies (eV, inclusive) to search.

    Returns
    -------
    float
        e0 in eV (an energy of the grid); NaN when the window holds fewer than 3 points.
    """
    e, y = _check_spectrum(energy_ev, mu, "mu")
    inside = np.flatnonzero((e >= window[0]) & (e <= window[1]))
    if inside.size < 3:
        return math.nan
    steps = np.diff(e[inside])
    typical_step = float(np.median(steps))
    centre = 0.5 * (e[inside[0]] + e[inside[-1]])
    hwhm = 0.5 * (min(1.0, max(0.01, typical_step)) + min(1.0, max(0.01, centre / 25000.0)))
    dmu = _lorentzian_smooth(e, np.gradient(y, e), hwhm=hwhm, step=hwhm)
    d = dmu[inside]
    span = max(float(np.ptp(d)), 1e-300)
    high = (d - d.min()) / span > 0.6
    # A point qualifies when it and both neighbours are high (Larch's glitch guard);
    # the window's end points lack a neighbour inside and use what they have.
    qualifies = high.copy()
    qualifies[1:] &= high[:-1]
    qualifies[:-1] &= high[1:]
    candidates = np.flatnonzero(qualifies)
    if candidates.size == 0:
        candidates = np.arange(d.size)
    best = candidates[np.argmax(d[candidates])]
    return float(e[inside[best]])


def k_edge(
    energy_ev,
    mu,
    *,
    params: EdgeParameters | None = None,
) -> KEdgeResult:
    """Normalise a bulk K-edge spectrum and measure its edge energies (DESIGN §5).

    Parameters
    ----------
    energy_ev : array_like, shape (n,)
        Strictly increasing energies in eV (as :func:`txmdb.io.spectra.read_spectrum`
        returns them).
    mu : array_like, shape (n,)
        Absorption μ(E), raw or already normalised.
    params : EdgeParameters, optional
        Windows and thresholds; default the Ni K preset (pre ≤ 8320 eV, post ≥ 8370 eV,
        edge 8325–8365 eV).

    Returns
    -------
    KEdgeResult
        Half-height edge energy (via :class:`~txmdb.analysis.edge.EdgeKernel`),
        derivative-maximum e0, jump, pre-edge noise, normalised μ, validity.

    Raises
    ------
    ValueError
        Mismatched or non-finite arrays, energies not strictly increasing, a window with
        fewer than 2 energies.
    """
    params = params if params is not None else edge_parameters("Ni")
    e, y = _check_spectrum(energy_ev, mu, "mu")
    kernel = EdgeKernel(e, params)
    result = kernel(y)
    return KEdgeResult(
        edge_energy_ev=float(result.edge_ev),
        e0_derivative_ev=e0_derivative(e, y, window=params.edge),
        edge_jump=float(result.jump),
        sigma_pre=float(result.sigma_pre),
        normalized=np.asarray(kernel.normalize(y), dtype=np.float64),
        valid=bool(result.valid),
    )


# ---------------------------------------------------------------------------- L3 edge


@dataclass(frozen=True)
class L3Result:
    """L3-high / L3-low analysis of one soft-XAS spectrum.

    Attributes
    ----------
    ratio : float
        ``high_peak / low_peak`` (dimensionless).
    high_peak, low_peak : float
        Largest background-subtracted intensity in the high and low windows (units of
        the input intensity).
    normalized : numpy.ndarray
        Background-subtracted intensity divided by the larger of the two peaks, so the
        main L3 peak is 1; same shape as the input.
    windows : dict
        The windows used, ``{"background": (lo, hi), "low": ..., "high": ...}`` in eV
        (provenance for the catalogue).
    """

    ratio: float
    high_peak: float
    low_peak: float
    normalized: np.ndarray
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The scalar results (no array)."""
        return {"l3_ratio": self.ratio, "high_peak": self.high_peak, "low_peak": self.low_peak}


def l3_ratio(
    energy_ev,
    intensity,
    *,
    background: tuple[float, float] = (845.0, 850.0),
    low: tuple[float, float] = (852.0, 854.0),
    high: tuple[float, float] = (854.5, 856.5),
) -> L3Result:
    """L3-high/L3-low peak-height ratio of a Ni L3 soft-XAS spectrum (DESIGN §5).

    A straight line is fitted (least squares) over the ``background`` window and
    subtracted from the whole spectrum; each peak height is the largest remaining
    intensity inside its window; the ratio is high/low. Electron yield (TEY) and
    fluorescence yield (FY) spectra go through the same computation.

    Parameters
    ----------
    energy_ev : array_like, shape (n,)
        Strictly increasing photon energies, eV.
    intensity : array_like, shape (n,)
        Yield (TEY or FY), normalised to I0 or not (the ratio does not depend on scale).
    background, low, high : tuple of float
        ``(low, high)`` windows in eV, inclusive. Defaults are the Ni L3 ones; the
        ``"Ni-L3"`` entry of :data:`EDGE_PRESETS` holds the same values.

    Returns
    -------
    L3Result

    Raises
    ------
    ValueError
        Fewer than 2 energies in the background window or none in a peak window;
        a non-positive L3-low peak (no L3 edge above the background).
    """
    e, y = _check_spectrum(energy_ev, intensity, "intensity")
    bg_idx = _indices(e, background, "background", minimum=2)
    low_idx = _indices(e, low, "L3-low", minimum=1)
    high_idx = _indices(e, high, "L3-high", minimum=1)
    slope, intercept = np.polyfit(e[bg_idx], y[bg_idx], 1)
    signal = y - (intercept + slope * e)
    low_peak = float(signal[low_idx].max())
    high_peak = float(signal[high_idx].max())
    # Relative threshold: a flat line leaves round-off (~1e-16 of the signal), not a peak.
    if not low_peak > 1e-9 * float(np.abs(y).max()):
        raise ValueError(
            f"no L3-low peak above the background in {low[0]:g}..{low[1]:g} eV "
            f"(height {low_peak:.3g}); wrong edge or energy scale?"
        )
    scale = max(low_peak, high_peak)
    return L3Result(
        ratio=high_peak / low_peak,
        high_peak=high_peak,
        low_peak=low_peak,
        normalized=signal / scale,
        windows={
            "background": (float(background[0]), float(background[1])),
            "low": (float(low[0]), float(low[1])),
            "high": (float(high[0]), float(high[1])),
        },
    )


def _indices(e: np.ndarray, window: tuple[float, float], name: str, *, minimum: int) -> np.ndarray:
    idx = np.flatnonzero((e >= window[0]) & (e <= window[1]))
    if idx.size < minimum:
        raise ValueError(
            f"{name} window {window[0]:g}..{window[1]:g} eV holds {idx.size} energies of "
            f"the scan {e[0]:g}..{e[-1]:g} eV; it needs at least {minimum}"
        )
    return idx
