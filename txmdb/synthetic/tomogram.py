"""Synthetic TXM-XANES tomograms of rod-like and gravel-like NMC particles (DESIGN §2).

Two steps, so that tests know the answer and benchmarks can stream:

1. :func:`particle_field` builds the per-voxel edge-energy map (eV, NaN outside the
   particles) and the particle mask: a surface-to-bulk gradient (lower edge energy, i.e.
   more reduced Ni, in the bulk; e.g. 8336 → 8342 eV toward the surface), one random
   valence offset and one linear valence ramp per grain, and a small per-voxel jitter.

   * ``kind="rod"``: radially aligned grains. Grains are cones around random directions
     from the particle centre (nearest direction on the unit sphere/circle), so they are
     long along the radius; their ramps run perpendicular to the radius, so the valence
     changes *tangentially* across and between grains: the θ distribution of the
     valence gradients has a tangential excess > 1 that grows with binning (the grain
     signal dominates once the per-voxel jitter is averaged out).
   * ``kind="gravel"``: random grains, isotropic Voronoi cells (``scipy.spatial.cKDTree``)
     with ramps along random directions: gradients point every way and the tangential
     excess stays near 1.

2. :class:`SyntheticStack` turns the map into absorbance spectra ``(n_energy, [z,] y,
   x)`` slab by slab — an erf (or arctan) edge of height ``jump`` centred on the voxel's
   edge energy, on a sloping pre-edge line, plus Gaussian noise drawn per slice from
   ``(seed, slice)`` so that any slab partition gives the same stack. :func:`write_stack`
   writes any of the three HDF5 layouts read by :mod:`txmdb.io.hdf5`, streaming.

With the default erf edge (width 1.5 eV) the edge lies entirely between the Ni-K pre-
and post-edge windows, so both fitted lines are exact and the half-height of each noise-
free spectrum is its map value (up to the linear interpolation between grid points).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Protocol

import h5py
import numexpr as ne
import numpy as np
from scipy.spatial import cKDTree

from txmdb.io.files import atomic_output

__all__ = ["energy_grid", "particle_field", "SyntheticStack", "write_stack", "LAYOUT_PATHS",
           "NormStack", "white_line_stack", "mixture_stack", "fraction_stack", "phase_field", "three_phase_stack"]


def energy_grid(n: int = 60, *, start: float = 8280.0, stop: float = 8420.0,
                dense: tuple[float, float] = (8325.0, 8365.0), coarse_step: float = 5.0) -> np.ndarray:
    """A TXM-XANES energy list: coarse steps outside ``dense``, fine steps inside.

    Parameters
    ----------
    n : int
        Number of energies (the dense part gets what the coarse parts leave).
    start, stop : float
        First and last energy, eV.
    dense : (float, float)
        Range sampled finely, eV (the edge region).
    coarse_step : float
        Step outside ``dense``, eV.

    Returns
    -------
    ndarray of float64, shape (n,)
        Strictly increasing energies, eV. Default: 8280–8420 eV, 5 eV steps, ~0.9 eV
        steps over 8325–8365 eV.
    """
    pre = np.arange(start, dense[0], coarse_step)
    post = np.arange(stop, dense[1], -coarse_step)[::-1]
    n_dense = n - pre.size - post.size
    if n_dense < 2:
        raise ValueError(f"{n} energies are too few for coarse steps of {coarse_step} eV over "
                         f"{start}..{stop} eV")
    mid = np.linspace(dense[0], dense[1], n_dense + 2)[1:-1] if post.size and post[0] == dense[1] \
        else np.linspace(dense[0], dense[1], n_dense)
    out = np.unique(np.concatenate([pre, mid, post]))
    if out.size != n:                            # coinciding end points: refill the gap
        mid = np.linspace(dense[0], dense[1], n_dense + n - out.size + 2)[1:-1]
        out = np.unique(np.concatenate([pre, mid, post]))
    return out


def _centres(rng: np.random.Generator, shape: tuple[int, ...], n: int, radius: float) -> np.ndarray:
    """Up to ``n`` non-overlapping particle centres inside the field (rejection sampling)."""
    shape_a = np.asarray(shape, dtype=float)
    if n == 1:
        return (shape_a - 1) / 2.0 + rng.uniform(-0.5, 0.5, size=len(shape))[None]
    centres: list[np.ndarray] = []
    for _ in range(2000 * n):
        c = rng.uniform(radius, shape_a - 1 - radius)
        if all(np.linalg.norm(c - o) >= 2.05 * radius for o in centres):
            centres.append(c)
            if len(centres) == n:
                break
    if len(centres) < n:
        raise ValueError(f"cannot place {n} particles of radius {radius:g} in a field {shape}")
    return np.asarray(centres)


def _unit_vectors(rng: np.random.Generator, n: int, ndim: int) -> np.ndarray:
    v = rng.normal(size=(n, ndim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def particle_field(shape: tuple[int, ...], *, kind: str = "rod", n_particles: int = 1,
                   radius: float | None = None, n_grains: int | None = None,
                   e_bulk: float = 8336.0, e_surface: float = 8342.0,
                   grain_sigma_ev: float = 1.0, grain_ramp_ev: float = 8.0,
                   voxel_sigma_ev: float = 2.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Edge-energy map and mask of spherical (circular in 2D) polycrystalline particles.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)`` or ``(y, x)`` in voxels.
    kind : {"rod", "gravel"}
        Radially aligned cone-shaped grains, or random isotropic Voronoi grains.
    n_particles : int
        Particles in the field of view, non-overlapping.
    radius : float, optional
        Particle radius in voxels; default fills the field (``0.45 * min(shape)`` for one
        particle, smaller for several).
    n_grains : int, optional
        Grains per particle; default 60 cones (16 sectors in 2D) for rod, 113 Voronoi
        cells (28 in 2D), about a third of the radius across, for gravel.
    e_bulk, e_surface : float
        Edge energy at the centre and at the surface, eV; the gradient is linear in the
        radius.
    grain_sigma_ev : float
        Standard deviation of the per-grain edge-energy offsets, eV.
    grain_ramp_ev : float
        Typical edge-energy change across one grain, eV: each grain carries a linear ramp
        of random strength (0.5–1.5 ×) along a direction perpendicular to its long
        (radial) axis for rod, along a random direction for gravel. This is the valence
        variation between and across grains that the θ statistics detect.
    voxel_sigma_ev : float
        Standard deviation of an independent per-voxel jitter, eV (sub-grain
        heterogeneity; makes the unbinned θ distribution nearly isotropic, so that the
        grain signal emerges with binning as in the measured data).
    seed : int
        Random seed (centres, grain layout, grain offsets).

    Returns
    -------
    edge_ev : ndarray of float64, shape ``shape``
        Edge energy in eV, NaN outside the particles.
    mask : ndarray of bool, shape ``shape``
        True inside a particle.
    """
    if kind not in ("rod", "gravel"):
        raise ValueError(f"kind must be 'rod' or 'gravel', got {kind!r}")
    ndim = len(shape)
    if ndim not in (2, 3):
        raise ValueError(f"shape must be 2-D or 3-D, got {shape}")
    rng = np.random.default_rng(seed)
    if radius is None:
        radius = 0.45 * min(shape) / (1 if n_particles == 1 else 1.3 * math.ceil(n_particles ** (1 / ndim)))
    if n_grains is None:
        # comparable grain sizes: ~60 cones (16 sectors in 2D) vs Voronoi cells about a
        # third of the radius across
        n_grains = (60 if ndim == 3 else 16) if kind == "rod" else (113 if ndim == 3 else 28)
    edge = np.full(shape, np.nan)
    mask = np.zeros(shape, dtype=bool)
    for centre in _centres(rng, shape, n_particles, radius):
        # bounding box of this particle: only its voxels are touched
        lo = np.maximum(np.floor(centre - radius).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grids = np.meshgrid(*[np.arange(a, b, dtype=float) for a, b in zip(lo, hi)], indexing="ij")
        rel = np.stack([g - c for g, c in zip(grids, centre)], axis=-1)   # (..., ndim)
        r = np.linalg.norm(rel, axis=-1)
        inside = r <= radius
        pts = rel[inside]
        if kind == "rod":
            # cones around random directions: nearest seed direction on the unit sphere
            dirs = pts / np.maximum(r[inside], 1e-9)[:, None]
            grain = cKDTree(_unit_vectors(rng, n_grains, ndim)).query(dirs)[1]
        else:
            seeds = rng.uniform(-radius, radius, size=(4 * n_grains, ndim))
            seeds = seeds[np.linalg.norm(seeds, axis=1) <= radius][:n_grains]
            grain = cKDTree(seeds).query(pts)[1]
        n_g = int(grain.max()) + 1
        offsets = rng.normal(0.0, grain_sigma_ev, size=n_g)
        # ramp direction per grain: rod -> perpendicular to the cone axis (tangential),
        # gravel -> random; slope so that the ramp spans ~grain_ramp_ev across a grain
        ramp = _unit_vectors(rng, n_g, ndim)
        if kind == "rod":
            axes = np.zeros((n_g, ndim))
            np.add.at(axes, grain, dirs)
            axes /= np.maximum(np.linalg.norm(axes, axis=1, keepdims=True), 1e-12)
            ramp -= (ramp * axes).sum(axis=1, keepdims=True) * axes
            ramp /= np.maximum(np.linalg.norm(ramp, axis=1, keepdims=True), 1e-12)
            width = radius / 2 * math.sqrt((4 * math.pi if ndim == 3 else 2 * math.pi) / n_grains)
        else:
            width = radius * (n_grains ** (-1.0 / ndim)) * 2
        slope = grain_ramp_ev / width * rng.uniform(0.5, 1.5, size=n_g)
        # ramp about the grain's own centre, so it does not shift the grain's mean
        centre_g = np.zeros((n_g, ndim))
        np.add.at(centre_g, grain, pts)
        centre_g /= np.maximum(np.bincount(grain, minlength=n_g), 1)[:, None]
        along = ((pts - centre_g[grain]) * ramp[grain]).sum(axis=1)
        values = (e_bulk + (e_surface - e_bulk) * (r[inside] / radius) + offsets[grain]
                  + slope[grain] * along)
        if voxel_sigma_ev > 0:
            values += rng.normal(0.0, voxel_sigma_ev, size=values.size)
        sub_edge = edge[box]
        sub_mask = mask[box]
        sub_edge[inside] = values
        sub_mask[inside] = True
    return edge, mask


def _add_noise(out: np.ndarray, start: int, noise: float, seed: int) -> np.ndarray:
    """Add Gaussian noise to slab ``out`` (n_energy, slices, ...) in place, slice ``i`` from
    ``default_rng((seed, start + i))``: any slab partition gives the same stack."""
    if noise > 0:
        for i in range(out.shape[1]):
            rng = np.random.default_rng((seed, start + i))
            out[:, i] += rng.standard_normal(out[:, i].shape, dtype=np.float32) * np.float32(noise)
    return out


class StackSource(Protocol):
    """Anything :func:`write_stack` can stream: a shape and slabs along axis 1."""

    shape: tuple[int, ...]

    def slab(self, start: int, stop: int) -> np.ndarray: ...


@dataclass
class SyntheticStack:
    """Absorbance stack generated on demand from an edge-energy map.

    Parameters
    ----------
    edge_ev : ndarray, shape ([z,] y, x)
        Edge energies in eV; NaN means no particle (background absorbance only).
    energies_ev : ndarray, shape (n_energy,)
        Energy grid, eV.
    jump : float
        Edge step (absorbance units).
    noise : float
        Standard deviation of the additive Gaussian noise (absorbance units).
    width_ev : float
        Edge width: erf ``sigma * sqrt(2)`` or arctan half-width, eV.
    profile : {"erf", "arctan"}
        Edge shape.
    pre_slope : float
        Slope of the pre-edge line, absorbance per eV (the fits remove it).
    background : float
        Absorbance of the empty field (and, with ``matrix`` 0, of the particle below the edge).
    matrix : float
        The particle's own absorbance below the edge, above ``background``: its other elements
        and Ni's non-resonant absorption. Real particles show at every energy, which is what lets
        the pre-edge energies be registered (0: they are invisible below the edge).
    seed : int
        Noise seed; slice ``i`` uses ``default_rng((seed, i))``.

    Attributes
    ----------
    shape : tuple of int
        ``(n_energy, [z,] y, x)``.
    """

    edge_ev: np.ndarray
    energies_ev: np.ndarray
    jump: float = 1.0
    noise: float = 0.0
    width_ev: float = 1.5
    profile: str = "erf"
    pre_slope: float = 1e-3
    background: float = 0.2
    matrix: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.profile not in ("erf", "arctan"):
            raise ValueError(f"profile must be 'erf' or 'arctan', got {self.profile!r}")
        self.energies_ev = np.asarray(self.energies_ev, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.energies_ev.size, *self.edge_ev.shape)

    def slab(self, start: int, stop: int) -> np.ndarray:
        """Absorbance of slices ``[start, stop)`` of the first spatial axis.

        Returns
        -------
        ndarray of float32, shape (n_energy, stop - start, ...)
        """
        e0 = self.edge_ev[start:stop].astype(np.float32)
        particle = ~np.isnan(e0)
        # empty field: no edge, a flat background
        e0 = np.where(particle, e0, np.float32(0.0))[None]
        amp = np.float32(self.jump) * particle[None].astype(np.float32)
        e = self.energies_ev.astype(np.float32).reshape((-1,) + (1,) * (e0.ndim - 1))
        w = np.float32(self.width_ev)
        ref = np.float32(self.energies_ev[0])
        slope, bg = np.float32(self.pre_slope), np.float32(self.background)
        if self.matrix:
            bg = bg + np.float32(self.matrix) * particle[None].astype(np.float32)
        if self.profile == "erf":
            # numexpr has no erf; scipy's ufunc keeps float32
            from scipy.special import erf
            step = erf((e - e0) / w)
            out = ne.evaluate("bg + slope * (e - ref) + amp * 0.5 * (1 + step)")
        else:
            out = ne.evaluate("bg + slope * (e - ref) + amp * (0.5 + arctan2(e - e0, w) / 3.141592653589793)")
        return _add_noise(out.astype(np.float32, copy=False), start, self.noise, self.seed)

    def __array__(self, dtype=None, copy=None):
        arr = self.slab(0, self.shape[1])
        return arr if dtype is None else arr.astype(dtype)


#: Data set paths written per layout: (stack, energies, flat, dark)
LAYOUT_PATHS = {
    "dxchange": ("/exchange/data", "/exchange/energy", None, None),
    "txm-sandbox": ("/registration_results/reg_results/registered_xanes{nd}D",
                    "/registration_results/reg_results/eng_list", None, None),
    "fxi": ("/img_xanes", "/X_eng", "/img_bkg", "/img_dark"),
}

# FXI raw-image levels: flat-field counts and camera dark counts
_FLAT_COUNTS = 20000.0
_DARK_COUNTS = 100.0


def write_stack(path: str | os.PathLike, stack: np.ndarray | StackSource, energies_ev: np.ndarray, *,
                layout: str = "dxchange", voxel_size_nm: float | None = None,
                chunks: tuple[int, ...] | bool | None = None, compression: str | None = None,
                energy_order: np.ndarray | None = None, slab_size: int | None = None) -> None:
    """Write a stack in one of the HDF5 layouts, slab by slab, atomically.

    Parameters
    ----------
    path : path-like
        Output file; written to a temporary name and renamed on success.
    stack : ndarray or StackSource
        Absorbance ``(n_energy, [z,] y, x)``, or a :class:`SyntheticStack` (anything with
        ``shape`` and ``slab(start, stop)``) streamed without holding it in memory.
    energies_ev : ndarray, shape (n_energy,)
        Energies of the stack's first axis, eV.
    layout : {"dxchange", "txm-sandbox", "fxi"}
        dxchange writes absorbance and energies in eV; txm-sandbox writes absorbance and
        ``eng_list`` in keV; fxi writes raw counts ``I = (flat - dark) exp(-mu) + dark``
        with per-energy flats ``/img_bkg``, darks ``/img_dark`` and ``/X_eng`` in keV.
    voxel_size_nm : float, optional
        Stored as the ``voxel_size_nm`` attribute of the stack (``pixel_size_nm`` for
        fxi, as the readers accept both).
    chunks : tuple of int or True, optional
        HDF5 chunk shape of the stack (None: contiguous).
    compression : str, optional
        h5py compression filter, e.g. ``"gzip"`` (needs chunks).
    energy_order : ndarray of int, optional
        Permutation of the energy axis on disk (to test readers that sort).
    slab_size : int, optional
        Slices generated per write; default ~64 MB.
    """
    if layout not in LAYOUT_PATHS:
        raise ValueError(f"unknown layout {layout!r}; one of {', '.join(LAYOUT_PATHS)}")
    shape = tuple(stack.shape)
    ndim = len(shape) - 1
    energies = np.asarray(energies_ev, dtype=np.float64)
    if energies.size != shape[0]:
        raise ValueError(f"{energies.size} energies for a stack of {shape[0]}")
    order = np.arange(shape[0]) if energy_order is None else np.asarray(energy_order)
    data_path, energy_path, flat_path, dark_path = LAYOUT_PATHS[layout]
    data_path = data_path.format(nd=ndim)
    in_kev = layout in ("txm-sandbox", "fxi")
    if slab_size is None:
        per = 4 * shape[0] * int(np.prod(shape[2:]))
        slab_size = max(1, (64 << 20) // per)
        if isinstance(chunks, tuple):
            slab_size = max(chunks[1], slab_size // chunks[1] * chunks[1])
    get = stack.slab if hasattr(stack, "slab") else (lambda a, b: np.asarray(stack[:, a:b], dtype=np.float32))
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset(data_path, shape=shape, dtype="f4", chunks=chunks,
                                  compression=compression)
            f.create_dataset(energy_path, data=energies[order] / (1000.0 if in_kev else 1.0))
            if voxel_size_nm is not None:
                ds.attrs["pixel_size_nm" if layout == "fxi" else "voxel_size_nm"] = float(voxel_size_nm)
            if layout == "fxi":
                # a smooth flat field that differs per energy, and a constant dark
                yy = np.linspace(-1, 1, shape[-2])[:, None]
                xx = np.linspace(-1, 1, shape[-1])[None, :]
                flat_img = np.broadcast_to(_FLAT_COUNTS * (1 - 0.1 * (yy ** 2 + xx ** 2)), shape[1:])
                scale = 1 + 0.05 * np.sin(np.arange(shape[0]))[order]
                flat = f.create_dataset(flat_path, shape=shape, dtype="f4", chunks=chunks,
                                        compression=compression)
                # fillvalue: a constant dark costs neither memory nor disk
                f.create_dataset(dark_path, shape=(1, *shape[1:]), dtype="f4", fillvalue=_DARK_COUNTS)
            for a in range(0, shape[1], slab_size):
                b = min(a + slab_size, shape[1])
                mu = get(a, b)[order]
                if layout == "fxi":
                    fl = (scale.reshape((-1,) + (1,) * ndim) * flat_img[a:b]).astype(np.float32)
                    dark = np.float32(_DARK_COUNTS)
                    flat[:, a:b] = fl
                    mu = ne.evaluate("(fl - dark) * exp(-mu) + dark").astype(np.float32)
                ds[:, a:b] = mu


# --------------------------------------------------------------------------- spectral maps (DESIGN §11)
@dataclass
class NormStack:
    """Absorbance stack from per-voxel normalised spectra, generated slab by slab.

    ``mu = background + pre_slope·(E − E_0) + jump·norm(E)`` inside the particles and
    ``background + pre_slope·(E − E_0)`` elsewhere (no edge: masked by the analysis), plus
    Gaussian noise drawn per slice from ``(seed, slice)`` as in :class:`SyntheticStack`.
    With norm's edge between the Ni-K fit windows (:mod:`txmdb.synthetic.spectra`), the
    analysis' normalisation of a noise-free voxel returns its ``norm`` exactly.

    Parameters
    ----------
    norm : callable
        ``norm(start, stop) -> ndarray (n_energy, stop - start, ...)``: normalised spectra of
        slices ``[start, stop)``; only the particles' voxels are used.
    inside : ndarray of bool, shape ([z,] y, x)
        The particles.
    energies_ev : ndarray
    jump, noise, pre_slope, background, matrix, seed :
        As for :class:`SyntheticStack` (``matrix``: the particles' own absorbance below the edge).
    """

    norm: object
    inside: np.ndarray
    energies_ev: np.ndarray
    jump: float = 1.0
    noise: float = 0.0
    pre_slope: float = 1e-3
    background: float = 0.2
    matrix: float = 0.0
    seed: int = 0

    def __post_init__(self):
        self.energies_ev = np.asarray(self.energies_ev, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.energies_ev.size, *self.inside.shape)

    def slab(self, start: int, stop: int, dtype=np.float32) -> np.ndarray:
        """Absorbance of slices ``[start, stop)``, shape (n_energy, stop - start, ...).

        ``dtype`` float32 as written to tomogram files; float64 keeps the truth exact
        (float32 rounds μ to ~1e-7 relative).
        """
        inside = self.inside[start:stop]
        e = self.energies_ev.reshape((-1,) + (1,) * inside.ndim)
        norm = np.where(inside[None], self.norm(start, stop), 0.0)
        level = self.background + self.matrix * inside[None]
        out = (level + self.pre_slope * (e - self.energies_ev[0]) + self.jump * norm).astype(dtype)
        return _add_noise(out, start, self.noise, self.seed)

    def __array__(self, dtype=None, copy=None):
        arr = self.slab(0, self.shape[1])
        return arr if dtype is None else arr.astype(dtype)


def _sphere(shape: tuple[int, ...], radius_fraction: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every voxel from the field's centre relative to the radius, and the ball."""
    grids = np.meshgrid(*[np.arange(n, dtype=float) - (n - 1) / 2 for n in shape], indexing="ij")
    r = np.sqrt(sum(g * g for g in grids)) / (radius_fraction * min(shape))
    return r, r <= 1.0


def white_line_stack(shape: tuple[int, ...], energies_ev: np.ndarray, *, half_height_ev=(8334.0, 8338.0),
                     white_line_ev=(8351.0, 8353.0), height=(0.5, 0.3), noise: float = 0.0,
                     seed: int = 0) -> tuple[NormStack, dict[str, np.ndarray]]:
    """A ball whose half-height, white-line energy and height change from centre to surface.

    Each quantity goes linearly with the radius from its first value (centre) to its second
    (surface), so every voxel has its own known white-line energy
    (:func:`txmdb.synthetic.spectra.white_line_norm`: a parabolic white line, recovered
    exactly by the cubic of DESIGN §11 over the Ni-K window 8345–8358 eV when the cap covers
    it, as it does with the defaults).

    Returns
    -------
    stack : NormStack
    truth : dict of str to ndarray, shape ``shape``
        ``edge_ev``, ``white_line_ev``, ``white_line_height`` (1 + h), NaN outside the ball;
        ``inside`` (bool).
    """
    from txmdb.synthetic.spectra import white_line_norm

    r, inside = _sphere(shape)
    t = np.clip(r, 0.0, 1.0)
    values = [np.where(inside, lo + (hi - lo) * t, np.nan) for lo, hi in (half_height_ev, white_line_ev, height)]
    # check every voxel's parameters once (white_line_norm raises on an impossible one)
    white_line_norm(energies_ev[:1], *(v[inside] for v in values))

    def norm(start, stop):
        part = [np.where(inside[start:stop], v[start:stop], v[inside][0]) for v in values]
        return white_line_norm(energies_ev, *part)

    truth = {"edge_ev": values[0], "white_line_ev": values[1], "white_line_height": 1.0 + values[2],
             "inside": inside}
    return NormStack(norm, inside, energies_ev, noise=noise, seed=seed), truth


def mixture_stack(shape: tuple[int, ...], energies_ev: np.ndarray, components: dict[str, np.ndarray], *,
                  fraction_range: tuple[float, float] = (1.0, 0.0), noise: float = 0.0,
                  seed: int = 0) -> tuple[NormStack, dict[str, np.ndarray]]:
    """A ball whose voxels mix two components with a known fraction (centre to surface).

    ``norm = f·A + (1 − f)·B`` with ``A, B`` the two ``components`` (in their order; from
    :func:`txmdb.synthetic.spectra.reference_components`) and ``f`` linear in the radius from
    ``fraction_range[0]`` (centre) to ``fraction_range[1]`` (surface).

    Returns
    -------
    stack : NormStack
    truth : dict of str to ndarray, shape ``shape``
        ``fraction:NAME`` for both components (summing to 1), NaN outside the ball;
        ``inside`` (bool).
    """
    r, inside = _sphere(shape)
    lo, hi = fraction_range
    return fraction_stack(np.where(inside, lo + (hi - lo) * np.clip(r, 0.0, 1.0), np.nan), energies_ev,
                          components, noise=noise, seed=seed)


def fraction_stack(fraction: np.ndarray, energies_ev: np.ndarray, components: dict[str, np.ndarray], *,
                   noise: float = 0.0, seed: int = 0, matrix: float = 0.0) -> tuple[NormStack, dict[str, np.ndarray]]:
    """Voxels mixing two components with a given fraction map (NaN: no particle).

    ``norm = f·A + (1 − f)·B`` with ``A, B`` the two ``components`` in their order; ``noise``,
    ``seed`` and ``matrix`` as for :class:`NormStack`.

    Returns
    -------
    stack : NormStack
    truth : dict of str to ndarray
        ``fraction:NAME`` for both components (summing to 1), NaN outside; ``inside`` (bool).
    """
    if len(components) != 2:
        raise ValueError(f"a mixture of two components, got {len(components)}")
    (name_a, comp_a), (name_b, comp_b) = components.items()
    f = np.asarray(fraction, dtype=np.float64)
    inside = np.isfinite(f)
    col = (-1,) + (1,) * f.ndim
    a, b = np.asarray(comp_a, float).reshape(col), np.asarray(comp_b, float).reshape(col)

    def norm(start, stop):
        part = np.nan_to_num(f[start:stop])[None]
        return part * a + (1.0 - part) * b

    truth = {f"fraction:{name_a}": f, f"fraction:{name_b}": 1.0 - f, "inside": inside}
    return NormStack(norm, inside, energies_ev, noise=noise, matrix=matrix, seed=seed), truth


def phase_field(shape: tuple[int, ...], n_phases: int = 3) -> np.ndarray:
    """Phase labels of a ball in concentric shells of equal volume: 0 (core) … n−1 (surface), −1 outside."""
    r, inside = _sphere(shape)
    ndim = len(shape)
    # shell i holds radii (i/n)^(1/ndim) .. ((i+1)/n)^(1/ndim): equal volumes (areas in 2-D)
    bounds = (np.arange(1, n_phases) / n_phases) ** (1.0 / ndim)
    return np.where(inside, np.searchsorted(bounds, r, side="right"), -1).astype(np.int16)


def three_phase_stack(shape: tuple[int, ...], energies_ev: np.ndarray, *, phases=None, noise: float = 0.01,
                      seed: int = 0) -> tuple[NormStack, dict[str, np.ndarray]]:
    """A ball of three phases in concentric shells, each with its own spectrum.

    Parameters
    ----------
    phases : sequence of (half_height_ev, white_line_ev, height), optional
        One per phase; default :data:`txmdb.synthetic.spectra.THREE_PHASES` (core reduced,
        surface oxidised).

    Returns
    -------
    stack : NormStack
    truth : dict
        ``labels`` (int16, phase 0..n−1, −1 outside), ``spectra`` (n_phase, n_energy) the
        phases' normalised spectra, ``inside`` (bool).
    """
    from txmdb.synthetic.spectra import THREE_PHASES, white_line_norm

    phases = THREE_PHASES if phases is None else phases
    spectra = np.stack([white_line_norm(energies_ev, *p) for p in phases])
    labels = phase_field(shape, len(phases))
    inside = labels >= 0

    def norm(start, stop):
        return np.moveaxis(spectra[np.maximum(labels[start:stop], 0)], -1, 0)

    truth = {"labels": labels, "spectra": spectra, "inside": inside}
    return NormStack(norm, inside, energies_ev, noise=noise, seed=seed), truth
