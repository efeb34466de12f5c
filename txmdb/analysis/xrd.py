"""Powder XRD numbers for layered LiMO2 (R-3m) cathodes: Bragg conversions, I(003)/I(104).

Pure functions on numpy arrays (DESIGN §5, XRD). Angles are 2θ in degrees, wavelengths
and d-spacings in ångström.

The (003)/(104) integrated-intensity ratio is the usual cation-mixing indicator of
LiNiO2-type cathodes (a well-layered material has a ratio above ~1.2). Its peak windows
are defined in d-spacing, not 2θ, so the same defaults serve a Cu Kα diffractometer
(1.5406 Å: (003) ≈ 18.7°, (104) ≈ 44.4°) and a synchrotron beamline (e.g. 0.7 Å:
(003) ≈ 8.5°, (104) ≈ 19.7°). Integrated intensities are areas over 2θ of the measured
pattern; no Lorentz-polarisation correction is applied, as is customary for this ratio.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CU_KALPHA1_ANGSTROM",
    "DEFAULT_WINDOWS_D",
    "ReflectionArea",
    "bragg_convert",
    "two_theta_to_d",
    "d_to_two_theta",
    "reflection_area",
    "i003_i104_ratio",
]

#: Cu Kα1 wavelength, Å.
CU_KALPHA1_ANGSTROM = 1.5406

#: Default d-spacing windows (Å, ``(d_min, d_max)``) of the two reflections. (003) sits
#: at d = c/3 ≈ 4.74 Å (c ≈ 14.2 Å); the window spans the c expansion on charging
#: (≈ 14.5 Å) and the collapse of the H3 phase (≈ 13.8 Å). (104) sits at ≈ 2.04 Å; its
#: window stays clear of (006)/(102) (≈ 2.37 Å) and (105) (≈ 1.87 Å).
DEFAULT_WINDOWS_D: dict[str, tuple[float, float]] = {
    "003": (4.45, 5.05),
    "104": (1.98, 2.10),
}


def two_theta_to_d(two_theta_deg, *, wavelength_angstrom: float) -> np.ndarray | float:
    """d-spacing from 2θ by Bragg's law, d = λ / (2 sin θ).

    Parameters
    ----------
    two_theta_deg : float or array_like
        Scattering angle 2θ, degrees (0 < 2θ < 180).
    wavelength_angstrom : float
        X-ray wavelength λ, Å.

    Returns
    -------
    float or numpy.ndarray
        d-spacing, Å.
    """
    _check_wavelength(wavelength_angstrom)
    theta = np.radians(np.asarray(two_theta_deg, dtype=np.float64) / 2.0)
    d = wavelength_angstrom / (2.0 * np.sin(theta))
    return d if d.ndim else float(d)


def d_to_two_theta(d_angstrom, *, wavelength_angstrom: float) -> np.ndarray | float:
    """2θ from d-spacing by Bragg's law, 2θ = 2 arcsin(λ / 2d).

    Parameters
    ----------
    d_angstrom : float or array_like
        d-spacing, Å.
    wavelength_angstrom : float
        X-ray wavelength λ, Å.

    Returns
    -------
    float or numpy.ndarray
        2θ in degrees; NaN where λ/2d > 1 (the reflection is out of reach).
    """
    _check_wavelength(wavelength_angstrom)
    s = wavelength_angstrom / (2.0 * np.asarray(d_angstrom, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        tt = np.where(np.abs(s) <= 1.0, 2.0 * np.degrees(np.arcsin(np.clip(s, -1.0, 1.0))), np.nan)
    return tt if tt.ndim else float(tt)


def bragg_convert(two_theta_deg, *, from_wavelength: float, to_wavelength: float) -> np.ndarray | float:
    """2θ measured at one wavelength → 2θ of the same d-spacing at another.

    Parameters
    ----------
    two_theta_deg : float or array_like
        2θ at ``from_wavelength``, degrees.
    from_wavelength, to_wavelength : float
        Wavelengths, Å.

    Returns
    -------
    float or numpy.ndarray
        2θ at ``to_wavelength``, degrees; NaN where the reflection is out of reach
        (sin θ would exceed 1 at the new wavelength).
    """
    d = two_theta_to_d(two_theta_deg, wavelength_angstrom=from_wavelength)
    return d_to_two_theta(d, wavelength_angstrom=to_wavelength)


@dataclass(frozen=True)
class ReflectionArea:
    """Integrated intensity of one reflection over a linear local background.

    Attributes
    ----------
    area : float
        ∫ (I − background) d(2θ) over the window, intensity × degrees.
    window_deg : tuple of float
        The 2θ window used, degrees.
    peak_two_theta_deg : float
        2θ of the highest background-subtracted point, degrees.
    n_points : int
        Points inside the window.
    """

    area: float
    window_deg: tuple[float, float]
    peak_two_theta_deg: float
    n_points: int


def reflection_area(
    two_theta_deg, intensity, *, window_deg: tuple[float, float], edge_fraction: float = 0.15
) -> ReflectionArea:
    """Integrated intensity of a reflection in a 2θ window after a linear background.

    The background is a straight line fitted (least squares) to the points in the outer
    ``edge_fraction`` of the window on each side — the peak's flanks, where the pattern
    is back to background — and the area of the remainder is integrated by the
    trapezoidal rule over the window.

    Parameters
    ----------
    two_theta_deg : array_like, shape (n,)
        Strictly increasing 2θ, degrees.
    intensity : array_like, shape (n,)
        Intensities.
    window_deg : tuple of float
        ``(low, high)`` 2θ window, degrees.
    edge_fraction : float
        Fraction of the window width on each side used for the background (0 < f < 0.5).

    Returns
    -------
    ReflectionArea

    Raises
    ------
    ValueError
        Fewer than 5 points in the window, or fewer than 1 point in either flank.
    """
    x, y = _check_pattern(two_theta_deg, intensity)
    lo, hi = window_deg
    inside = np.flatnonzero((x >= lo) & (x <= hi))
    if inside.size < 5:
        raise ValueError(
            f"2θ window {lo:.3f}..{hi:.3f}° holds {inside.size} points of the pattern; "
            "it needs at least 5"
        )
    if not 0.0 < edge_fraction < 0.5:
        raise ValueError("edge_fraction must lie between 0 and 0.5")
    xw, yw = x[inside], y[inside]
    flank = edge_fraction * (hi - lo)
    left = xw <= lo + flank
    right = xw >= hi - flank
    if not left.any() or not right.any():
        raise ValueError(f"2θ window {lo:.3f}..{hi:.3f}° has no points in one of its background flanks")
    bx = np.concatenate([xw[left], xw[right]])
    by = np.concatenate([yw[left], yw[right]])
    slope, intercept = np.polyfit(bx, by, 1)
    net = yw - (intercept + slope * xw)
    area = float(np.trapezoid(net, xw))
    return ReflectionArea(
        area=area,
        window_deg=(float(lo), float(hi)),
        peak_two_theta_deg=float(xw[np.argmax(net)]),
        n_points=int(inside.size),
    )


def i003_i104_ratio(
    two_theta_deg,
    intensity,
    *,
    wavelength_angstrom: float,
    windows: Mapping[str, tuple[float, float]] | None = None,
) -> float:
    """Integrated-intensity ratio I(003)/I(104) of a layered R-3m oxide pattern.

    Parameters
    ----------
    two_theta_deg : array_like, shape (n,)
        Strictly increasing 2θ, degrees.
    intensity : array_like, shape (n,)
        Intensities.
    wavelength_angstrom : float
        Wavelength of the measurement, Å (1.5406 for Cu Kα1).
    windows : mapping, optional
        ``{"003": (d_min, d_max), "104": (d_min, d_max)}`` in Å, replacing
        :data:`DEFAULT_WINDOWS_D` (either key may be left out). Each is turned into a 2θ
        window at ``wavelength_angstrom``.

    Returns
    -------
    float
        Area(003) / Area(104), dimensionless.

    Raises
    ------
    ValueError
        A window outside the measured 2θ range or unreachable at this wavelength, too
        few points in a window, or a non-positive (104) area.
    """
    _check_wavelength(wavelength_angstrom)
    d_windows = dict(DEFAULT_WINDOWS_D)
    if windows:
        unknown = set(windows) - set(DEFAULT_WINDOWS_D)
        if unknown:
            raise ValueError(f"unknown reflection(s) {sorted(unknown)}; use '003' and '104'")
        d_windows.update({k: (float(v[0]), float(v[1])) for k, v in windows.items()})
    areas = {}
    for hkl, (d_min, d_max) in d_windows.items():
        if not 0 < d_min < d_max:
            raise ValueError(f"({hkl}) d window {d_min}..{d_max} Å must have 0 < d_min < d_max")
        # Larger d ↔ smaller angle, so the window's ends swap.
        lo = d_to_two_theta(d_max, wavelength_angstrom=wavelength_angstrom)
        hi = d_to_two_theta(d_min, wavelength_angstrom=wavelength_angstrom)
        if not np.isfinite(hi):
            raise ValueError(
                f"({hkl}) d window {d_min}..{d_max} Å is out of reach at λ = {wavelength_angstrom} Å"
            )
        try:
            areas[hkl] = reflection_area(two_theta_deg, intensity, window_deg=(lo, hi)).area
        except ValueError as exc:
            raise ValueError(f"({hkl}) reflection: {exc}") from None
    if not areas["104"] > 0:
        raise ValueError(f"(104) reflection has no intensity above background (area {areas['104']:.3g})")
    return areas["003"] / areas["104"]


def _check_wavelength(wavelength_angstrom: float) -> None:
    if not (np.isfinite(wavelength_angstrom) and wavelength_angstrom > 0):
        raise ValueError(
            f"wavelength must be a positive number of ångström, got {wavelength_angstrom!r}"
        )


def _check_pattern(two_theta_deg, intensity) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(two_theta_deg, dtype=np.float64)
    y = np.asarray(intensity, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"2θ and intensity must be 1-D arrays of the same length, got {x.shape} and {y.shape}"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("2θ or intensity holds NaN or inf")
    if x.size < 2 or not np.all(np.diff(x) > 0):
        raise ValueError("2θ must be strictly increasing")
    return x, y
