"""Synthetic energy stacks that drift between energies, with exact sub-voxel truth (DESIGN §10).

Every energy's volume is rendered from a *continuous* phantom evaluated at ``x - s_e``: the
particles are moved analytically, never by shifting voxels, so the true shift ``s_e`` of
energy ``e`` (voxels, ``(z, y, x)`` or ``(y, x)`` order) is known exactly and carries no
interpolation error. With DESIGN §10's convention ``registered_e(x) = raw_e(x + s_e)``
the perfectly registered stack is the phantom rendered with ``s = 0`` at every energy,
and ``s_ref = 0`` at the reference energy.

The phantom (sample frame, continuous in ``p = x - s_e``):

* particles: spheres (disks in 2-D) whose surface is blurred by an erfc of width
  ``0.7`` voxel (an imaging point-spread function: without it, point sampling of a hard
  surface would make sub-voxel positions ill-defined), with a grain-like density
  texture (a few cosine modes, wavelengths 4-12 voxels) and soft pores;
* per-point edge energy: a linear surface-to-bulk gradient
  (``e_bulk`` → ``e_surface``) plus smooth grain-scale modes of ±1 eV;
* absorbance ``occupancy × density × (pre_level + jump × step(E - E_edge(p)))`` with the
  erf step of :class:`txmdb.synthetic.tomogram.SyntheticStack` (width 1.5 eV), on the
  same sloping background line.

Difficulties, each switchable (:data:`ALL_DIFFICULTIES` turns all on):

* ``contrast_change``: particles dim below the edge (20 % of their absorbance above it)
  instead of 80 %;
* ``intensity_changes``: each energy's absorbance scaled (beam decay over the scan,
  exposure steps of ±15 %) and offset (±0.05), as an imperfect normalisation leaves it;
* ``fixed_pattern``: structures that do not move with the sample, in the lab frame: ring
  artefacts centred on the rotation axis (axis along z through a point near the centre
  of the y-x field; each ring spans a range of slices) and a smooth flat-field residue;
  their amplitude changes a little between energies;
* ``noise``: additive Gaussian noise (absorbance units), drawn per slice from
  ``(seed, slice)`` so that any slab partition gives the same stack;
* ``jumps``: sudden jumps of several voxels between neighbouring energies on top of the
  random walk;
* ``valence_tilt`` (eV, not in :data:`ALL_DIFFICULTIES`): a one-sided valence gradient,
  the edge energy rising along one direction per particle, so that one side lights up
  first through the edge.

The drift is a random walk of sub-voxel steps on every axis, scaled so that each axis
reaches between 75 % and 100 % of ``max_drift`` voxels away from the reference energy.

The truth edge map is the phantom's edge energy at the voxel centres of the reference
frame (``s = 0``), NaN where the particle occupancy is below one half. It is the edge
energy of every voxel's noise-free spectrum without intensity changes (the step is the
only thing that varies with energy there); with ``intensity_changes`` the spectra
themselves are distorted, as in real data, and the measured edges deviate from it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.special import erf, erfc

from txmdb.synthetic.tomogram import _centres, _unit_vectors, energy_grid, write_stack

__all__ = ["ALL_DIFFICULTIES", "DriftedPhantom", "DriftedStack", "make_drifted",
           "drifted_stack", "write_drifted_stack"]

#: keyword arguments of :func:`make_drifted` that switch on every difficulty of issue 10
ALL_DIFFICULTIES = dict(contrast_change=True, intensity_changes=True, fixed_pattern=True,
                        noise=0.03, jumps=True)

_SURFACE_BLUR = 0.7          # voxels: sigma of the particle surface (and pore) blur
_RING_WIDTH = 0.7            # voxels: sigma of a ring artefact's radial profile
_EDGE_WIDTH_EV = 1.5         # erf edge width, as SyntheticStack's default


@dataclass(frozen=True)
class _Particle:
    centre: np.ndarray        # (ndim,) sample frame, voxels
    radius: float
    dens_k: np.ndarray        # (m, ndim) wave vectors of the density texture, rad/voxel
    dens_phase: np.ndarray    # (m,)
    dens_amp: np.ndarray      # (m,)
    edge_k: np.ndarray        # (q, ndim) wave vectors of the edge-energy modes
    edge_phase: np.ndarray
    edge_amp: np.ndarray      # eV
    pore_centres: np.ndarray  # (n_pores, ndim) relative to the centre
    pore_radii: np.ndarray
    edge_tilt: np.ndarray | None = None  # (ndim,) eV per radius: a one-sided valence gradient


def _modes(rng: np.random.Generator, n: int, ndim: int, wavelengths: tuple[float, float],
           amplitude: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = _unit_vectors(rng, n, ndim) * (2 * math.pi / rng.uniform(*wavelengths, size=n))[:, None]
    return k, rng.uniform(0, 2 * math.pi, size=n), amplitude * rng.uniform(0.5, 1.0, size=n)


def _cos_sum(rel: np.ndarray, k: np.ndarray, phase: np.ndarray, amp: np.ndarray) -> np.ndarray:
    out = np.zeros(rel.shape[1:])
    for km, ph, a in zip(k, phase, amp):
        arg = sum(km[d] * rel[d] for d in range(rel.shape[0])) + ph
        out += a * np.cos(arg)
    return out


class DriftedPhantom:
    """A drifted energy stack rendered on demand, slab by slab, from a continuous phantom.

    Build it with :func:`make_drifted`. It is a :class:`txmdb.synthetic.tomogram.StackSource`
    (``shape`` and ``slab``), so :func:`txmdb.synthetic.tomogram.write_stack` streams it.

    Attributes
    ----------
    energies_ev : ndarray, shape (n_energy,)
        Energies, eV, increasing.
    shifts : ndarray, shape (n_energy, ndim)
        True shift ``s_e`` of every energy, voxels; ``shifts[reference_index] == 0``.
    reference_index : int
        Index of the reference energy.
    shape : tuple of int
        ``(n_energy, [z,] y, x)``.
    """

    def __init__(self, spatial_shape, energies_ev, shifts, reference_index, particles, *,
                 pre_level, jump, gain, offset, fixed, fixed_scale, noise, seed,
                 e_bulk, e_surface, background=0.2, pre_slope=1e-3):
        self.spatial_shape = tuple(int(n) for n in spatial_shape)
        self.energies_ev = np.asarray(energies_ev, dtype=np.float64)
        self.shifts = np.asarray(shifts, dtype=np.float64)
        self.reference_index = int(reference_index)
        self._particles = particles
        self._pre_level, self._jump = float(pre_level), float(jump)
        self._gain, self._offset = np.asarray(gain, float), np.asarray(offset, float)
        self._fixed, self._fixed_scale = fixed, np.asarray(fixed_scale, float)
        self.noise, self.seed = float(noise), int(seed)
        self._e_bulk, self._e_surface = float(e_bulk), float(e_surface)
        self._background, self._pre_slope = float(background), float(pre_slope)

    @property
    def ndim(self) -> int:
        return len(self.spatial_shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.energies_ev.size, *self.spatial_shape)

    # -- the continuous phantom --------------------------------------------------------
    def _box(self, p: _Particle, shift: np.ndarray, start: int, stop: int):
        """Lab-frame index box (slab-relative slices) that holds the particle moved by ``shift``."""
        margin = p.radius + 5 * _SURFACE_BLUR + 1
        lo = np.floor(p.centre + shift - margin).astype(int)
        hi = np.ceil(p.centre + shift + margin).astype(int) + 1
        lo[0], hi[0] = max(lo[0], start), min(hi[0], stop)
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, self.spatial_shape)
        if np.any(hi <= lo):
            return None, None
        grids = np.meshgrid(*[np.arange(a, b, dtype=np.float64) for a, b in zip(lo, hi)],
                            indexing="ij", sparse=True)
        lo_rel = lo.copy()
        lo_rel[0] -= start
        box = tuple(slice(a, a + (b - c)) for a, b, c in zip(lo_rel, hi, lo))
        return box, grids

    def _fields(self, p: _Particle, grids, shift: np.ndarray):
        """Occupancy, density and edge energy of one particle at lab points ``grids`` for shift ``shift``."""
        rel = np.broadcast_arrays(*[g - (c + s) for g, c, s in zip(grids, p.centre, shift)])
        rel = np.stack(rel)
        r = np.sqrt((rel ** 2).sum(axis=0))
        occ = 0.5 * erfc((r - p.radius) / (math.sqrt(2) * _SURFACE_BLUR))
        dens = 1.0 + _cos_sum(rel, p.dens_k, p.dens_phase, p.dens_amp)
        for pc, pr in zip(p.pore_centres, p.pore_radii):
            rp = np.sqrt(sum((rel[d] - pc[d]) ** 2 for d in range(rel.shape[0])))
            dens *= 1.0 - 0.9 * 0.5 * erfc((rp - pr) / (math.sqrt(2) * _SURFACE_BLUR))
        edge = (self._e_bulk + (self._e_surface - self._e_bulk) * np.minimum(r / p.radius, 1.0)
                + _cos_sum(rel, p.edge_k, p.edge_phase, p.edge_amp))
        if p.edge_tilt is not None:
            edge = edge + sum(p.edge_tilt[d] * rel[d] for d in range(rel.shape[0])) / p.radius
        return occ, dens, edge

    def _fixed_pattern(self, start: int, stop: int) -> np.ndarray | None:
        """Lab-frame fixed pattern of slices ``[start, stop)`` (rings + flat-field residue)."""
        if self._fixed is None:
            return None
        f = self._fixed
        shape = (stop - start, *self.spatial_shape[1:])
        grids = np.meshgrid(*[np.arange(a, b, dtype=np.float64) for a, b in
                              zip((start, *(0,) * (self.ndim - 1)), (stop, *self.spatial_shape[1:]))],
                            indexing="ij", sparse=True)
        y, x = grids[-2], grids[-1]
        rho = np.sqrt((y - f["axis"][0]) ** 2 + (x - f["axis"][1]) ** 2)
        out = np.zeros(shape)
        for radius, amp, z0, z1 in f["rings"]:
            ring = amp * np.exp(-0.5 * ((rho - radius) / _RING_WIDTH) ** 2)
            if self.ndim == 3:
                z = grids[0]
                ring = ring * ((z >= z0) & (z < z1))
            out += ring
        rel = np.stack(np.broadcast_arrays(*grids))
        out += _cos_sum(rel, *f["flat"])
        return out

    # -- StackSource -------------------------------------------------------------------
    def slab(self, start: int, stop: int) -> np.ndarray:
        """Absorbance of slices ``[start, stop)`` of the first spatial axis, every energy.

        Returns
        -------
        ndarray of float32, shape (n_energy, stop - start, ...)
        """
        n_e = self.energies_ev.size
        shape = (stop - start, *self.spatial_shape[1:])
        out = np.empty((n_e, *shape), dtype=np.float32)
        fixed = self._fixed_pattern(start, stop)
        e_ref = self.energies_ev[0]
        for i, energy in enumerate(self.energies_ev):
            mu = np.full(shape, self._background + self._pre_slope * (energy - e_ref))
            for p in self._particles:
                box, grids = self._box(p, self.shifts[i], start, stop)
                if box is None:
                    continue
                occ, dens, edge = self._fields(p, grids, self.shifts[i])
                step = 0.5 * (1.0 + erf((energy - edge) / _EDGE_WIDTH_EV))
                mu[box] += occ * dens * (self._pre_level + self._jump * step)
            mu = self._gain[i] * mu + self._offset[i]
            if fixed is not None:
                mu += self._fixed_scale[i] * fixed
            out[i] = mu
        if self.noise > 0:
            for j in range(stop - start):
                rng = np.random.default_rng((self.seed, start + j))
                out[:, j] += rng.standard_normal(out[:, j].shape, dtype=np.float32) * np.float32(self.noise)
        return out

    def render(self) -> np.ndarray:
        """The whole stack, float32 ``(n_energy, [z,] y, x)``."""
        return self.slab(0, self.spatial_shape[0])

    def edge_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """Edge energy of the reference frame (``s = 0``) at the voxel centres.

        Returns
        -------
        edge_ev : ndarray of float64
            Edge energy, eV; NaN where no particle occupies at least half of the voxel.
        mask : ndarray of bool
            True inside a particle (occupancy >= 0.5).
        """
        edge = np.full(self.spatial_shape, np.nan)
        zero = np.zeros(self.ndim)
        for p in self._particles:
            box, grids = self._box(p, zero, 0, self.spatial_shape[0])
            if box is None:
                continue
            occ, _, e = self._fields(p, grids, zero)
            sub = edge[box]
            sub[occ >= 0.5] = e[occ >= 0.5]
        return edge, ~np.isnan(edge)


def _energies(n: int) -> np.ndarray:
    """The standard grid, with coarser steps outside the edge when there are few energies."""
    if n < 4:
        return np.linspace(8280.0, 8420.0, n)
    return energy_grid(n, coarse_step=5.0 if n >= 30 else 5.0 * math.ceil(56.0 / n))


def _drift(rng: np.random.Generator, n: int, ndim: int, reference_index: int, max_drift: float,
           jumps: bool) -> np.ndarray:
    """Random walk of sub-voxel steps per axis, with optional jumps, ``s[ref] = 0``."""
    walk = rng.normal(0.0, 1.0, size=(n, ndim))
    if jumps and n > 2:
        n_jumps = max(2, int(round(0.08 * n)))
        where = rng.choice(np.arange(1, n), size=min(n_jumps, n - 1), replace=False)
        walk[where] += rng.uniform(5.0, 8.0, size=(where.size, ndim)) * rng.choice([-1, 1], size=(where.size, ndim))
    walk[0] = 0.0
    walk = np.cumsum(walk, axis=0)
    walk -= walk[reference_index]
    reach = np.abs(walk).max(axis=0)
    target = max_drift * rng.uniform(0.75, 1.0, size=ndim)
    return walk * np.where(reach > 0, target / np.where(reach > 0, reach, 1.0), 0.0)


def make_drifted(shape: tuple[int, ...], *, n_energies: int = 40, energies_ev: np.ndarray | None = None,
                 reference_index: int | None = None, n_particles: int = 1, radius: float | None = None,
                 max_drift: float = 8.0, contrast_change: bool = False,
                 intensity_changes: bool = False, fixed_pattern: bool = False, noise: float = 0.0,
                 jumps: bool = False, e_bulk: float = 8336.0, e_surface: float = 8342.0,
                 valence_tilt: float = 0.0, shifts: np.ndarray | None = None, seed: int = 0) -> DriftedPhantom:
    """A drifted energy stack with exact sub-voxel ground truth.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape ``(z, y, x)`` or ``(y, x)``, voxels.
    n_energies : int
        Number of energies when ``energies_ev`` is not given
        (:func:`txmdb.synthetic.tomogram.energy_grid`, 8280-8420 eV).
    energies_ev : ndarray, optional
        Energy grid, eV, increasing.
    reference_index : int, optional
        Reference energy (``s_ref = 0``); default the first energy at or above 8370 eV
        (post-edge: the particles are brightest there), else the last.
    n_particles : int
        Non-overlapping particles.
    radius : float, optional
        Particle radius, voxels; default ``0.3 * min(shape)`` for one particle (so that it
        stays inside the field of view while drifting), smaller for several.
    max_drift : float
        Largest drift per axis away from the reference, voxels.
    contrast_change, intensity_changes, fixed_pattern, jumps : bool
        The difficulties described in the module docstring.
    noise : float
        Standard deviation of the additive Gaussian noise (absorbance; the particles
        absorb ~1 above the edge).
    e_bulk, e_surface : float
        Edge energy at the particle centre and surface, eV.
    valence_tilt : float
        A one-sided valence gradient: the edge energy also rises linearly along a random
        direction per particle, by ``valence_tilt`` eV from the centre to the surface
        (so one side lights up before the other as the energy climbs through the edge,
        as in a particle charged from one side). Its directions come from their own
        random stream, so every other part of a seed's stack is unchanged.
    shifts : ndarray, shape (n_energy, ndim), optional
        Prescribed true shifts instead of a random walk.
    seed : int
        Seed of everything random (phantom, drift, difficulties, noise).

    Returns
    -------
    DriftedPhantom
    """
    ndim = len(shape)
    if ndim not in (2, 3):
        raise ValueError(f"shape must be 2-D or 3-D, got {shape}")
    rng = np.random.default_rng(seed)
    energies = _energies(n_energies) if energies_ev is None else np.asarray(energies_ev, dtype=np.float64)
    n_e = energies.size
    if reference_index is None:
        reference_index = min(int(np.searchsorted(energies, 8370.0)), n_e - 1)
    if not 0 <= reference_index < n_e:
        raise ValueError(f"reference index {reference_index} outside 0..{n_e - 1}")
    if shifts is None:
        shifts = _drift(rng, n_e, ndim, reference_index, max_drift, jumps)
    else:
        shifts = np.asarray(shifts, dtype=np.float64).reshape(n_e, ndim)
    if radius is None:
        radius = 0.3 * min(shape) if n_particles == 1 else 0.4 * min(shape) / (1.3 * math.ceil(n_particles ** (1 / ndim)))
    # centres keep the particles inside the field of view at every drift position
    margin = np.abs(shifts).max(axis=0)
    inner = tuple(max(int(n - 2 * m), 1) for n, m in zip(shape, margin))
    centres = _centres(rng, inner, n_particles, radius) + margin
    particles = []
    for c in centres:
        n_pores = 3 if ndim == 3 else 2
        pore_dirs = _unit_vectors(rng, n_pores, ndim) * rng.uniform(0.2, 0.7, size=(n_pores, 1)) * radius
        particles.append(_Particle(
            np.asarray(c, float), float(radius),
            *_modes(rng, 6, ndim, (4.0, 12.0), 0.06),
            *_modes(rng, 4, ndim, (6.0, 16.0), 0.8),
            pore_dirs, rng.uniform(1.5, 3.5, size=n_pores) * max(radius / 20, 0.5)))
    if valence_tilt:
        tilt_rng = np.random.default_rng((seed, 7))
        particles = [dataclasses.replace(p, edge_tilt=valence_tilt * _unit_vectors(tilt_rng, 1, ndim)[0])
                     for p in particles]
    pre_level, jump = (0.2, 0.8) if contrast_change else (0.8, 0.2)
    if intensity_changes:
        # beam decay over the scan, exposure steps, and an imperfectly removed offset
        gain = np.linspace(1.0, 0.88, n_e) * np.where(rng.random(n_e) < 0.2, rng.choice([0.85, 1.15], n_e), 1.0)
        offset = rng.uniform(-0.05, 0.05, size=n_e)
    else:
        gain, offset = np.ones(n_e), np.zeros(n_e)
    fixed = None
    fixed_scale = np.ones(n_e)
    if fixed_pattern:
        yx = np.asarray(shape[-2:], float)
        axis = (yx - 1) / 2 + rng.uniform(-3, 3, size=2)
        n_rings = 14
        radii = rng.uniform(3.0, 0.7 * yx.min(), size=n_rings)
        amps = rng.uniform(0.04, 0.12, size=n_rings) * rng.choice([-1, 1], size=n_rings)
        z_len = shape[0] if ndim == 3 else 1
        z0 = rng.integers(0, max(z_len // 2, 1), size=n_rings) if ndim == 3 else np.zeros(n_rings)
        z1 = z0 + rng.integers(max(z_len // 4, 1), z_len + 1, size=n_rings) if ndim == 3 else np.ones(n_rings)
        rings = list(zip(radii, amps, z0, z1))
        flat = _modes(rng, 3, ndim, (0.6 * min(shape), 1.5 * max(shape)), 0.08)
        fixed = {"axis": axis, "rings": rings, "flat": flat}
        fixed_scale = 1.0 + 0.1 * rng.uniform(-1, 1, size=n_e)
    return DriftedPhantom(shape, energies, shifts, reference_index, particles, pre_level=pre_level,
                          jump=jump, gain=gain, offset=offset, fixed=fixed, fixed_scale=fixed_scale,
                          noise=noise, seed=seed, e_bulk=e_bulk, e_surface=e_surface)


class DriftedStack(NamedTuple):
    """A rendered drifted stack and its truth (see :func:`drifted_stack`)."""

    stack: np.ndarray          # float32 (n_energy, [z,] y, x)
    energies_ev: np.ndarray    # (n_energy,)
    shifts: np.ndarray         # (n_energy, ndim), voxels, s_ref = 0
    edge_ev: np.ndarray        # truth edge map of the reference frame, NaN outside
    mask: np.ndarray           # particle mask of the reference frame
    reference_index: int


def drifted_stack(shape: tuple[int, ...], **kwargs) -> DriftedStack:
    """Render a drifted stack whole, with its truth; keywords as :func:`make_drifted`.

    Returns
    -------
    DriftedStack
        ``stack`` float32 ``(n_energy, [z,] y, x)``, ``energies_ev``, true ``shifts``
        ``(n_energy, ndim)`` with ``s_ref = 0``, the truth ``edge_ev`` map and ``mask`` of
        the reference frame, and ``reference_index``.
    """
    ph = make_drifted(shape, **kwargs)
    edge, mask = ph.edge_truth()
    return DriftedStack(ph.render(), ph.energies_ev, ph.shifts.copy(), edge, mask, ph.reference_index)


def write_drifted_stack(path: str | os.PathLike, phantom: DriftedPhantom, *, layout: str = "dxchange",
                        **kwargs) -> None:
    """Stream a drifted phantom into an HDF5 file (Data Exchange by default), atomically.

    Parameters
    ----------
    path : path-like
        Output file.
    phantom : DriftedPhantom
        From :func:`make_drifted`; rendered slab by slab, never whole.
    layout : {"dxchange", "txm-sandbox", "fxi"}
        As :func:`txmdb.synthetic.tomogram.write_stack`, which does the writing; the other
        keywords (``voxel_size_nm``, ``chunks``, ``compression``, ``slab_size``) go to it.
        The truth (shifts, edge map) is not written: keep the phantom.
    """
    write_stack(path, phantom, phantom.energies_ev, layout=layout, **kwargs)
