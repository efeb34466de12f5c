"""Synthetic XAS spectra and XRD patterns with known answers (tests, demo).

Each generator builds its signal so that the quantity the analysis measures is the one
requested, exactly (up to floating point) and by construction rather than by fitting:

* :func:`ni_k_edge_spectrum` — a Ni K edge whose half-height (DESIGN §5 definition with
  the Ni-K windows) is ``half_height_ev``: the edge step and the white line are confined
  between the pre- and post-edge windows, so both fitted lines are exact and the
  normalised spectrum equals the step + white-line shape.
* :func:`ni_l3_spectrum` — a Ni L3 spectrum whose background-subtracted peak heights in
  the L3-low and L3-high windows are ``low_peak`` and ``high_peak``.
* :func:`layered_xrd_pattern` — a layered R-3m (LiMO2) powder pattern at any wavelength
  whose (003) and (104) peaks have areas (over 2θ) in the ratio ``i003_i104``.

For the demo (rod-NMC vs gravel-NMC): typical Ni K half-heights are ≈ 8342 eV pristine
(mostly Ni²⁺/Ni³⁺) and 2–4 eV higher charged; Ni L3 high/low ratios ≈ 0.6 pristine and
≈ 1.0–1.5 charged, lower in TEY (surface, ~5 nm, reduced) than in FY (~100 nm); I(003)/
I(104) ≈ 1.2–1.8 for well-layered NMC.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from txmdb.io.files import atomic_output

__all__ = [
    "NI_K_PRE_MAX_EV",
    "NI_K_POST_MIN_EV",
    "default_k_energies",
    "ni_k_edge_spectrum",
    "ni_l3_spectrum",
    "layered_xrd_pattern",
    "write_columns",
    "white_line_norm",
    "reference_components",
    "THREE_PHASES",
    "MEASURED_REFERENCES",
    "measured_reference",
]

#: Upper end of the Ni-K pre-edge window and lower end of its post-edge window, eV
#: (the Ni preset of :mod:`txmdb.analysis.edge`). The synthetic edge lives between them.
NI_K_PRE_MAX_EV = 8320.0
NI_K_POST_MIN_EV = 8370.0


def default_k_energies() -> np.ndarray:
    """Energy grid of a typical Ni K XANES scan, eV.

    5 eV steps over the pre-edge (8200–8315), 0.5 eV through the edge (8315–8380) and
    2 eV above (8380–8600): the step sizes beamlines use.

    Returns
    -------
    numpy.ndarray
        Strictly increasing energies, eV.
    """
    pre = np.arange(8200.0, 8315.0, 5.0)
    edge = np.arange(8315.0, 8380.0, 0.5)
    post = np.arange(8380.0, 8600.0 + 1e-9, 2.0)
    return np.concatenate([pre, edge, post])


def ni_k_edge_spectrum(
    half_height_ev: float = 8342.0,
    *,
    energy_ev: np.ndarray | None = None,
    jump: float = 1.0,
    white_line: float = 0.4,
    edge_halfwidth_ev: float = 10.0,
    broadening_ev: float = 2.0,
    white_line_width_ev: float = 12.0,
    pre_offset: float = 0.0,
    pre_slope_per_ev: float = 0.0,
    post_slope_per_ev: float = 0.0,
    noise: float = 0.0,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic Ni K-edge μ(E) with a chosen half-height edge energy.

    μ(E) = pre(E) + J(E)·[s(E) + w(E)], with a linear pre-edge ``pre(E)``, a linear jump
    ``J(E) = jump·(1 + post_slope·(E − E½))``, an arctan-shaped step ``s`` that is
    scaled to rise from exactly 0 at E½ − ``edge_halfwidth_ev`` to exactly 1 at
    E½ + ``edge_halfwidth_ev`` (so it is 0.5 at E½, point-symmetric about it, and flat
    inside both fit windows) and a sin² white line ``w`` that starts at E½ +
    ``broadening_ev`` (after the half-height, so it cannot move it) and lasts
    ``white_line_width_ev``. Normalising with the Ni-K windows returns s + w exactly.

    Parameters
    ----------
    half_height_ev : float
        Where the normalised spectrum crosses 0.5, eV.
    energy_ev : numpy.ndarray, optional
        Energies, eV; default :func:`default_k_energies`.
    jump : float
        Edge jump at E½ (units of μ).
    white_line : float
        White-line height above the normalised step (fraction of the jump).
    edge_halfwidth_ev : float
        Half of the energy range over which the step rises, eV.
    broadening_ev : float
        Half width at half maximum of the arctan's derivative (core-hole and
        instrumental broadening), eV.
    white_line_width_ev : float
        Full length of the white-line bump, eV.
    pre_offset, pre_slope_per_ev : float
        Pre-edge line μ = offset + slope·(E − E½) (units of μ, μ per eV).
    post_slope_per_ev : float
        Relative slope of the jump with energy, per eV.
    noise : float
        Standard deviation of Gaussian noise added to μ (units of μ); 0 for none.
    seed : int, optional
        Seed of the noise generator.

    Returns
    -------
    energy_ev, mu : numpy.ndarray
        Energies (eV) and μ(E).

    Raises
    ------
    ValueError
        The edge or white line would reach into the Ni-K pre-edge (≤ 8320 eV) or
        post-edge (≥ 8370 eV) window: then the fitted lines would no longer be exact.
    """
    e_half = float(half_height_ev)
    start = e_half - edge_halfwidth_ev
    end = max(e_half + edge_halfwidth_ev, e_half + broadening_ev + white_line_width_ev)
    if start < NI_K_PRE_MAX_EV or end > NI_K_POST_MIN_EV:
        raise ValueError(
            f"edge at {e_half} eV spans {start:g}..{end:g} eV, outside the "
            f"{NI_K_PRE_MAX_EV:g}..{NI_K_POST_MIN_EV:g} eV gap between the Ni-K fit windows"
        )
    e = default_k_energies() if energy_ev is None else np.asarray(energy_ev, dtype=np.float64)
    x = e - e_half
    # Scaled arctan: the usual XANES step shape, clipped to [0, 1] at ±edge_halfwidth.
    scale = math.atan(edge_halfwidth_ev / broadening_ev)
    step = np.clip(0.5 + 0.5 * np.arctan(x / broadening_ev) / scale, 0.0, 1.0)
    u = (x - broadening_ev) / white_line_width_ev
    wl = np.where((u > 0) & (u < 1), white_line * np.sin(np.pi * u) ** 2, 0.0)
    pre = pre_offset + pre_slope_per_ev * x
    jump_e = jump * (1.0 + post_slope_per_ev * x)
    mu = pre + jump_e * (step + wl)
    if noise:
        mu = mu + np.random.default_rng(seed).normal(0.0, noise, size=mu.shape)
    return e, mu


def ni_l3_spectrum(
    *,
    high_peak: float = 0.8,
    low_peak: float = 1.0,
    energy_ev: np.ndarray | None = None,
    low_center_ev: float = 853.0,
    high_center_ev: float = 855.5,
    peak_sigma_ev: float = 0.35,
    background: tuple[float, float] = (0.5, 0.01),
    l2_peak: float = 0.4,
    continuum: float = 0.2,
    noise: float = 0.0,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic Ni L2,3 soft-XAS yield (TEY or FY) with chosen L3 peak heights.

    Intensity = background line + Gaussian L3-low and L3-high peaks + an L3 continuum
    step that rises after the high window (857–860 eV) + an L2 peak at 871 eV. The
    Gaussians are narrow enough (σ 0.35 eV against 2.5 eV apart) that neither adds to
    the other's window, so :func:`txmdb.analysis.xas.l3_ratio` with the Ni defaults
    recovers ``high_peak / low_peak``.

    Parameters
    ----------
    high_peak, low_peak : float
        Heights of the L3-high and L3-low peaks above the background (intensity units).
    energy_ev : numpy.ndarray, optional
        Energies, eV; default 840–880 eV in 0.1 eV steps (the peak centres on the grid).
    low_center_ev, high_center_ev : float
        Peak positions, eV (inside the default windows 852–854 and 854.5–856.5 eV).
    peak_sigma_ev : float
        Gaussian σ of both peaks, eV.
    background : tuple of float
        ``(offset, slope)`` of the linear background: offset + slope·(E − 845 eV).
    l2_peak, continuum : float
        Height of the L2 peak and of the L3 continuum step (intensity units).
    noise : float
        Standard deviation of Gaussian noise (intensity units); 0 for none.
    seed : int, optional
        Seed of the noise generator.

    Returns
    -------
    energy_ev, intensity : numpy.ndarray
    """
    e = (
        np.round(np.linspace(840.0, 880.0, 401), 6)
        if energy_ev is None
        else np.asarray(energy_ev, dtype=np.float64)
    )
    offset, slope = background
    y = offset + slope * (e - 845.0)
    y = y + low_peak * np.exp(-0.5 * ((e - low_center_ev) / peak_sigma_ev) ** 2)
    y = y + high_peak * np.exp(-0.5 * ((e - high_center_ev) / peak_sigma_ev) ** 2)
    y = y + l2_peak * np.exp(-0.5 * ((e - 871.0) / (2 * peak_sigma_ev)) ** 2)
    # Continuum: a raised-cosine step 857 → 860 eV, outside every analysis window.
    t = np.clip((e - 857.0) / 3.0, 0.0, 1.0)
    y = y + continuum * 0.5 * (1.0 - np.cos(np.pi * t))
    if noise:
        y = y + np.random.default_rng(seed).normal(0.0, noise, size=y.shape)
    return e, y


# Reflections of a layered R-3m oxide and their areas relative to (104); (003) is set by
# the requested ratio. Roughly the pattern of LiNi0.8Mn0.1Co0.1O2.
_R3M_REFLECTIONS: tuple[tuple[tuple[int, int, int], float], ...] = (
    ((1, 0, 1), 0.35),
    ((0, 0, 6), 0.08),
    ((0, 1, 2), 0.10),
    ((1, 0, 4), 1.0),
    ((0, 1, 5), 0.15),
    ((1, 0, 7), 0.10),
    ((0, 1, 8), 0.12),
    ((1, 1, 0), 0.12),
    ((1, 1, 3), 0.10),
)


def _hexagonal_d(hkl: tuple[int, int, int], a: float, c: float) -> float:
    h, k, ell = hkl
    return 1.0 / math.sqrt(4.0 / 3.0 * (h * h + h * k + k * k) / (a * a) + ell * ell / (c * c))


def _pseudo_voigt(x: np.ndarray, center: float, fwhm: float, eta: float) -> np.ndarray:
    """Unit-area pseudo-Voigt: eta·Lorentzian + (1 − eta)·Gaussian, same FWHM."""
    gamma = 0.5 * fwhm
    lorentz = gamma / (np.pi * ((x - center) ** 2 + gamma * gamma))
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    gauss = np.exp(-0.5 * ((x - center) / sigma) ** 2) / (sigma * math.sqrt(2.0 * np.pi))
    return eta * lorentz + (1.0 - eta) * gauss


def layered_xrd_pattern(
    *,
    wavelength_angstrom: float = 1.5406,
    i003_i104: float = 1.5,
    area_104: float = 100.0,
    a_angstrom: float = 2.87,
    c_angstrom: float = 14.2,
    eta: float = 0.5,
    relative_width: float = 0.003,
    fwhm_deg: float | None = None,
    d_range_angstrom: tuple[float, float] = (1.3, 6.0),
    step_deg: float | None = None,
    background: tuple[float, float] = (20.0, 0.0),
    noise: float = 0.0,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic powder pattern of a layered LiMO2 (R-3m) oxide at any wavelength.

    Peaks sit at the Bragg angles of the hexagonal cell (a, c) for ``wavelength``; each
    is a unit-area pseudo-Voigt scaled to its area over 2θ (intensity × degrees), with
    area(003) = ``i003_i104`` × ``area_104``. By default every peak has the same
    relative width Δd/d, i.e. the same width in d-spacing at any wavelength, which is
    what makes the d-spacing windows of the analysis take the same share of each peak
    whatever the wavelength.

    Parameters
    ----------
    wavelength_angstrom : float
        X-ray wavelength, Å.
    i003_i104 : float
        Area(003) / area(104).
    area_104 : float
        Area of the (104) peak over 2θ, intensity × degrees.
    a_angstrom, c_angstrom : float
        Hexagonal lattice parameters, Å.
    eta : float
        Lorentzian fraction of the pseudo-Voigt (0 = Gaussian, 1 = Lorentzian).
    relative_width : float
        FWHM of each peak as Δd/d; converted to 2θ as FWHM = 2·tan θ·Δd/d (radians).
    fwhm_deg : float, optional
        A single FWHM in degrees for every peak, replacing ``relative_width``.
    d_range_angstrom : tuple of float
        d-spacings the scan covers, Å (sets the 2θ range).
    step_deg : float, optional
        2θ step, degrees; default 0.01° × λ/1.5406 Å.
    background : tuple of float
        ``(offset, slope)``: background = offset + slope·2θ (intensity, per degree).
    noise : float
        Standard deviation of Gaussian noise (intensity units); 0 for none.
    seed : int, optional
        Seed of the noise generator.

    Returns
    -------
    two_theta_deg, intensity : numpy.ndarray
    """
    lam = float(wavelength_angstrom)
    d_min, d_max = d_range_angstrom
    tt_lo = 2.0 * math.degrees(math.asin(lam / (2.0 * d_max)))
    tt_hi = 2.0 * math.degrees(math.asin(min(1.0, lam / (2.0 * d_min))))
    step = step_deg if step_deg is not None else 0.01 * lam / 1.5406
    tt = np.arange(tt_lo, tt_hi, step)
    y = background[0] + background[1] * tt
    peaks = (((0, 0, 3), i003_i104),) + _R3M_REFLECTIONS
    for hkl, rel_area in peaks:
        s = lam / (2.0 * _hexagonal_d(hkl, a_angstrom, c_angstrom))
        if s >= 1.0:
            continue  # out of reach at this wavelength
        theta = math.asin(s)
        width = (
            fwhm_deg if fwhm_deg is not None else math.degrees(2.0 * math.tan(theta) * relative_width)
        )
        y = y + rel_area * area_104 * _pseudo_voigt(tt, math.degrees(2.0 * theta), width, eta)
    if noise:
        y = y + np.random.default_rng(seed).normal(0.0, noise, size=y.shape)
    return tt, y


def write_columns(
    path: str | os.PathLike,
    columns: Sequence[np.ndarray],
    *,
    names: Sequence[str],
    comments: Sequence[str] = (),
    fmt: str = "%.10g",
) -> None:
    """Write equal-length columns as a plain-text table the readers accept.

    The file is written atomically (a temporary file renamed into place), with the
    comments and then the column names as ``#`` lines above the data.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    columns : sequence of numpy.ndarray
        The columns, all of the same length.
    names : sequence of str
        One name per column (e.g. ``("energy", "mu")`` or ``("2theta", "intensity")``).
    comments : sequence of str
        Free-text header lines (e.g. ``"wavelength: 1.5406"``).
    fmt : str
        Number format; ``"%.17g"`` keeps every float64 exactly (e.g. energies that must
        fall on a stack's grid).
    """
    data = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    if len(names) != data.shape[1]:
        raise ValueError(f"{len(names)} names for {data.shape[1]} columns")
    header = "\n".join([*comments, " ".join(names)])
    with atomic_output(path) as tmp:
        np.savetxt(tmp, data, fmt=fmt, header=header, comments="# ")


# --------------------------------------------------------------------------- spectral maps (DESIGN §11)
#: Three phases of a Ni K stack, as ``white_line_norm`` parameters (half-height eV, white-line
#: eV, white-line height): reduced (early edge, strong white line) to oxidised.
THREE_PHASES = ((8333.0, 8348.0, 0.6), (8336.0, 8350.0, 0.4), (8339.0, 8352.0, 0.25))


def white_line_norm(energy_ev: np.ndarray, half_height_ev, white_line_ev, height, *,
                    edge_halfwidth_ev: float = 3.0, broadening_ev: float = 1.5,
                    white_line_halfwidth_ev: float = 10.0) -> np.ndarray:
    """Normalised Ni K spectra with a white line at a known energy, voxel-wise.

    ``norm(E) = s(E) + h·max(0, 1 − ((E − E_wl)/w)²)``: the clipped arctan step ``s`` of
    :func:`ni_k_edge_spectrum` (exactly 0 below E½ − ``edge_halfwidth_ev``, exactly 1 above
    E½ + ``edge_halfwidth_ev``, 0.5 at E½) and a parabolic cap of height ``h`` centred on
    E_wl, half-width ``w``. The cap starts after the step is complete, so

    * the half-height is E½ and, wherever the cap is, ``norm = 1 + cap`` is a parabola:
      a polynomial least-squares fit over any window inside ``[E_wl − w, E_wl + w]`` has its
      maximum at E_wl exactly, of height ``1 + h`` (the white-line truth);
    * both lie between the Ni-K pre-edge (≤ 8320 eV) and post-edge (≥ 8370 eV) windows, so
      the normalisation's lines are exact: ``mu = line + jump·norm`` normalises back to
      ``norm``.

    Parameters
    ----------
    energy_ev : ndarray, shape (n_energy,)
    half_height_ev, white_line_ev, height : float or ndarray
        E½, E_wl (eV) and ``h``; arrays broadcast together (one value per voxel).
    edge_halfwidth_ev, broadening_ev : float
        Step rise half-range and arctan broadening, eV.
    white_line_halfwidth_ev : float
        ``w``, eV.

    Returns
    -------
    ndarray of float64, shape (n_energy, *broadcast shape)

    Raises
    ------
    ValueError
        A cap that starts before the step is complete, or a step or cap reaching into the
        Ni-K pre-/post-edge windows.
    """
    e_half, e_wl, h = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                            for v in (half_height_ev, white_line_ev, height)))
    w, hw = float(white_line_halfwidth_ev), float(edge_halfwidth_ev)
    if e_half.size:
        if np.any(e_wl - w < e_half + hw):
            raise ValueError(f"white line at {e_wl.min():g} eV starts before the edge step of "
                             f"{e_half.max():g} eV is complete (needs E_wl - {w:g} >= E½ + {hw:g})")
        if e_half.min() - hw < NI_K_PRE_MAX_EV or e_wl.max() + w > NI_K_POST_MIN_EV:
            raise ValueError(f"edge and white line span {e_half.min() - hw:g}..{e_wl.max() + w:g} eV, outside the "
                             f"{NI_K_PRE_MAX_EV:g}..{NI_K_POST_MIN_EV:g} eV gap between the Ni-K fit windows")
    e = np.asarray(energy_ev, dtype=np.float64).reshape((-1,) + (1,) * e_half.ndim)
    x = e - e_half
    scale = math.atan(hw / broadening_ev)
    step = np.clip(0.5 + 0.5 * np.arctan(x / broadening_ev) / scale, 0.0, 1.0)
    cap = h * np.maximum(0.0, 1.0 - ((e - e_wl) / w) ** 2)
    return step + cap


def reference_components(energy_ev: np.ndarray, references, params=None) -> dict[str, np.ndarray]:
    """Measured reference spectra made into exact mixture components on a stack's energies.

    Each reference ``(energies, mu)`` is interpolated onto ``energy_ev`` with a not-a-knot
    cubic spline and normalised by :meth:`txmdb.analysis.edge.EdgeKernel.normalize`; then,
    on the pre-edge rows only, its least-squares line is taken off, and on the post-edge rows
    its line is replaced by 1. The result ``R`` normalises to itself (its pre-edge line is 0
    and its post-edge line 1), and so does any mixture ``Σ f_i R_i`` with ``Σ f_i = 1``:
    a voxel ``mu = line + jump·Σ f_i R_i`` has ``norm = Σ f_i R_i`` exactly, and a linear
    combination fit against the components (given as references on ``energy_ev``: a spline
    through a grid's own points returns them) recovers ``f`` exactly. Between the windows
    (the edge, the white line) ``R`` is the measured reference's normalised spectrum.

    Parameters
    ----------
    energy_ev : ndarray
        The stack's sorted energies, eV.
    references : mapping of str to (energies_ev, mu)
        E.g. ``tests/data/xas/ref_NiO.txt`` read by :func:`txmdb.io.spectra.read_spectrum`.
    params : EdgeParameters, optional
        Windows; default the Ni preset.

    Returns
    -------
    dict of str to ndarray of float64, shape (n_energy,)
    """
    from scipy.interpolate import CubicSpline

    from txmdb.analysis.edge import EdgeKernel, edge_parameters

    kernel = EdgeKernel(energy_ev, params or edge_parameters("Ni"))
    e = kernel.energies_ev
    out = {}
    for name, (e_ref, mu_ref) in references.items():
        e_ref = np.asarray(e_ref, dtype=np.float64)
        if e_ref[0] > e[0] or e_ref[-1] < e[-1]:
            raise ValueError(f"reference {name} covers {e_ref[0]:g}..{e_ref[-1]:g} eV, not the stack's "
                             f"{e[0]:g}..{e[-1]:g} eV")
        norm = kernel.normalize(CubicSpline(e_ref, np.asarray(mu_ref, dtype=np.float64), bc_type="not-a-knot")(e))
        for rows, target in ((kernel.pre, 0.0), (kernel.post, 1.0)):
            x = kernel._x[rows]
            slope, intercept = np.polyfit(x, norm[rows], 1)
            norm[rows] = norm[rows] - (intercept + slope * x) + target
        out[name] = norm
    return out


#: Measured Ni K references shipped with txmdb (``txmdb/synthetic/references``, see its SOURCES.md):
#: name → file (energy in keV, normalised μ).
MEASURED_REFERENCES = {"NiO": "ref_NiO.txt", "LiNiO2": "ref_LiNiO2.txt"}


def measured_reference(name: str):
    """Path of a shipped measured reference spectrum (``MEASURED_REFERENCES``): NiO (Ni²⁺) or LiNiO2 (Ni³⁺).

    Read it with :func:`txmdb.io.spectra.read_spectrum` (``edge="Ni-K"``: its energies are keV).
    """
    from importlib.resources import files

    if name not in MEASURED_REFERENCES:
        raise ValueError(f"no shipped reference {name!r}; references: {', '.join(MEASURED_REFERENCES)}")
    return files("txmdb.synthetic") / "references" / MEASURED_REFERENCES[name]
