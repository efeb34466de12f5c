"""Ground truth of the synthetic spectral-map data (DESIGN §11): white lines, reference mixtures, three phases.

Each truth is checked with a straightforward computation that shares nothing with the
analysis' kernels: per-voxel ``numpy.polyfit`` lines for the normalisation, a polynomial
fit for the white line, the closed-form two-reference least squares for the fractions.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import DATA
from txmdb.io.spectra import read_spectrum
from txmdb.synthetic.spectra import THREE_PHASES, reference_components, white_line_norm
from txmdb.synthetic.tomogram import energy_grid, mixture_stack, three_phase_stack, white_line_stack

E = energy_grid(60)
PRE_MAX, POST_MIN = 8320.0, 8370.0          # Ni-K windows of DESIGN §5
WHITE_LINE = (8345.0, 8358.0)               # Ni-K white-line window of DESIGN §11
FIT = (8325.0, 8375.0)                      # Ni-K LCF window of DESIGN §11


def plain_norm(mu: np.ndarray) -> np.ndarray:
    """DESIGN §5 norm(E) per voxel with numpy.polyfit lines: (n_energy, n_voxel)."""
    mu = mu.reshape(mu.shape[0], -1).astype(np.float64)
    pre, post = E <= PRE_MAX, E >= POST_MIN
    a, b = np.polyfit(E[pre], mu[pre], 1), np.polyfit(E[post], mu[post], 1)
    line = lambda c: c[0][None] * E[:, None] + c[1][None]  # noqa: E731
    return (mu - line(a)) / (line(b) - line(a))


def _window(bounds) -> np.ndarray:
    return (E >= bounds[0]) & (E <= bounds[1])


@pytest.fixture(scope="module")
def references():
    return {name: (s.energy_ev, s.mu) for name, s in
            (("NiO", read_spectrum(DATA / "xas" / "ref_NiO.txt", edge="Ni-K")),
             ("LiNiO2", read_spectrum(DATA / "xas" / "ref_LiNiO2.txt", edge="Ni-K")))}


def exact(stack) -> np.ndarray:
    """The whole stack in float64 (no float32 rounding of the files)."""
    return stack.slab(0, stack.shape[1], dtype=np.float64)


@pytest.mark.parametrize("dtype, tolerance_ev", [(np.float64, 1e-6), (np.float32, 1e-4)])
def test_white_line_is_where_the_truth_says(dtype, tolerance_ev):
    stack, truth = white_line_stack((10, 12, 12), E)
    inside = truth["inside"]
    norm = plain_norm(stack.slab(0, 10, dtype=dtype))[:, inside.reshape(-1)]
    w = _window(WHITE_LINE)
    # a straightforward fit: the cubic of DESIGN §11 over the window (numpy), its maximum by calculus
    t_c, t_h = sum(WHITE_LINE) / 2, (WHITE_LINE[1] - WHITE_LINE[0]) / 2
    t = (E[w] - t_c) / t_h
    found, heights = [], []
    for column in norm[w].T:
        c3, c2, c1, c0 = np.polyfit(t, column, 3)
        roots = np.roots([3 * c3, 2 * c2, c1]) if abs(c3) > 1e-12 else np.array([-c1 / (2 * c2)])
        peak = [r.real for r in roots if abs(r.imag) < 1e-12 and -1 <= r.real <= 1 and 6 * c3 * r.real + 2 * c2 < 0]
        assert len(peak) == 1
        found.append(t_c + t_h * peak[0])
        heights.append(np.polyval([c3, c2, c1, c0], peak[0]))
    np.testing.assert_allclose(found, truth["white_line_ev"][inside], rtol=0, atol=tolerance_ev)
    np.testing.assert_allclose(heights, truth["white_line_height"][inside], rtol=0, atol=tolerance_ev / 100)
    # every voxel has its own white line (centre to surface), inside the window
    assert np.ptp(truth["white_line_ev"][inside]) > 1.0
    assert np.all(np.isnan(truth["white_line_ev"][~inside]))


def test_white_line_norm_is_half_at_the_half_height_and_flat_outside_the_edge():
    norm = white_line_norm(E, [8334.0, 8337.5], [8350.0, 8352.0], [0.5, 0.2])
    assert norm.shape == (E.size, 2)
    np.testing.assert_allclose(white_line_norm(np.array([8334.0]), 8334.0, 8350.0, 0.5), [0.5], atol=1e-15)
    assert np.all(norm[E <= PRE_MAX] == 0) and np.all(norm[E >= POST_MIN] == 1)
    np.testing.assert_allclose(norm.max(axis=0), [1.5, 1.2], rtol=0, atol=1e-2)   # peak near the grid


@pytest.mark.parametrize("bad", [dict(half_height_ev=8345.0, white_line_ev=8350.0),   # cap before the step ends
                                 dict(half_height_ev=8334.0, white_line_ev=8365.0),   # cap into the post-edge
                                 dict(half_height_ev=8321.0, white_line_ev=8350.0)])  # step into the pre-edge
def test_white_line_norm_refuses_an_inexact_spectrum(bad):
    with pytest.raises(ValueError):
        white_line_norm(E, height=0.3, **bad)


def test_reference_components_normalise_to_themselves(references):
    from scipy.interpolate import CubicSpline

    components = reference_components(E, references)
    between = (E > PRE_MAX) & (E < POST_MIN)
    for name, component in components.items():
        # its own normalisation gives it back: pre-edge line 0, post-edge line 1
        np.testing.assert_allclose(plain_norm(component[:, None])[:, 0], component, rtol=0, atol=1e-12)
        # between the windows it is the measured reference, splined onto the grid and normalised
        e_ref, mu_ref = references[name]
        measured = plain_norm(CubicSpline(e_ref, mu_ref)(E)[:, None])[:, 0]
        np.testing.assert_allclose(component[between], measured[between], rtol=0, atol=1e-9)
    # Ni3+ edges lie above Ni2+ ones: LiNiO2 reaches 0.5 later
    half = {name: E[np.argmax(c >= 0.5)] for name, c in components.items()}
    assert half["LiNiO2"] > half["NiO"]


def test_mixture_fractions_are_exact(references):
    components = reference_components(E, references)
    stack, truth = mixture_stack((8, 10, 10), E, components, fraction_range=(0.9, 0.1))
    inside = truth["inside"]
    norm = plain_norm(exact(stack))[:, inside.reshape(-1)]
    f = _window(FIT)
    a, b = components["NiO"][f], components["LiNiO2"][f]
    # weights summing to 1: minimise |norm - b - w (a - b)|² → w = (a - b)·(norm - b) / |a - b|²
    w = (a - b) @ (norm[f] - b[:, None]) / ((a - b) @ (a - b))
    np.testing.assert_allclose(w, truth["fraction:NiO"][inside], rtol=0, atol=1e-9)
    np.testing.assert_allclose(truth["fraction:NiO"] + truth["fraction:LiNiO2"], np.where(inside, 1.0, np.nan))
    residual = norm[f] - (w * a[:, None] + (1 - w) * b[:, None])
    assert np.abs(residual).max() < 1e-9
    assert 0.1 <= np.nanmin(truth["fraction:NiO"]) and np.nanmax(truth["fraction:NiO"]) <= 0.9


def test_mixture_fractions_come_back_from_the_lcf_definition(references):
    # the components as reference spectra on the stack's grid (a spline through its own points):
    # DESIGN §11's LCF, by scipy's bounded least squares per voxel, recovers the truth
    from scipy.interpolate import CubicSpline
    from scipy.optimize import lsq_linear

    components = reference_components(E, references)
    stack, truth = mixture_stack((4, 6, 6), E, components, fraction_range=(0.8, 0.3))
    inside = truth["inside"]
    norm = plain_norm(exact(stack))[:, inside.reshape(-1)]
    f = _window(FIT)
    refs = np.stack([plain_norm(CubicSpline(E, c)(E)[:, None])[:, 0][f] for c in components.values()])
    # w_2 = 1 - w_1: one unknown in [0, 1]
    a, b = refs
    for column, expected in zip(norm.T, truth["fraction:NiO"][inside]):
        w = lsq_linear((a - b)[:, None], column[f] - b, bounds=(0.0, 1.0)).x[0]
        assert abs(w - expected) < 1e-9


def test_three_phases_have_their_labels_and_spectra():
    stack, truth = three_phase_stack((12, 14, 14), E, noise=0.0)
    labels, inside = truth["labels"], truth["inside"]
    assert set(np.unique(labels)) == {-1, 0, 1, 2}
    counts = np.bincount(labels[inside])
    assert counts.min() > 0.6 * counts.max()                    # shells of about equal volume
    norm = plain_norm(exact(stack))
    spectra = np.stack([white_line_norm(E, *p) for p in THREE_PHASES])
    np.testing.assert_allclose(truth["spectra"], spectra)
    flat = labels.reshape(-1)
    for phase in range(3):
        np.testing.assert_allclose(norm[:, flat == phase], np.repeat(spectra[phase][:, None], (flat == phase).sum(), 1),
                                   rtol=0, atol=1e-9)
    # the core is the most reduced phase: the earliest edge
    assert np.all(labels[tuple(s // 2 for s in labels.shape)] == 0)


def test_noise_does_not_depend_on_the_slab_partition():
    stack, _ = three_phase_stack((9, 8, 8), E, noise=0.02, seed=5)
    whole = stack.slab(0, 9)
    parts = np.concatenate([stack.slab(a, min(a + 4, 9)) for a in range(0, 9, 4)], axis=1)
    np.testing.assert_array_equal(whole, parts)
    assert whole.dtype == np.float32 and whole.shape == (E.size, 9, 8, 8)


def test_shipped_references_are_the_measured_files():
    from txmdb.synthetic.spectra import MEASURED_REFERENCES, measured_reference

    for name, filename in MEASURED_REFERENCES.items():
        assert measured_reference(name).read_bytes() == (DATA / "xas" / filename).read_bytes()
    with pytest.raises(ValueError, match="no shipped reference"):
        measured_reference("NiO2")


def test_the_analysis_kernels_recover_the_truth(references):
    # DESIGN §11's white line and LCF (txmdb.analysis.spectral) on the float64 synthetic stacks:
    # the truths are exact for them, up to rounding
    from txmdb.analysis.edge import edge_parameters
    from txmdb.analysis.spectral import SpectralKernel

    params = edge_parameters("Ni")
    stack, truth = white_line_stack((6, 8, 8), E)
    maps = SpectralKernel(E, params, white_line=WHITE_LINE)(exact(stack))
    inside = truth["inside"]
    np.testing.assert_allclose(maps["white_line"][inside], truth["white_line_ev"][inside], rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps["white_line_height"][inside], truth["white_line_height"][inside], rtol=0,
                               atol=1e-9)
    assert np.all(np.isnan(maps["white_line"][~inside]))

    components = reference_components(E, references)
    stack, truth = mixture_stack((6, 8, 8), E, components, fraction_range=(0.95, 0.05))
    kernel = SpectralKernel(E, params, references={name: (E, c) for name, c in components.items()}, lcf_window=FIT)
    maps = kernel(exact(stack))
    inside = truth["inside"]
    for name in components:
        np.testing.assert_allclose(maps[f"fraction:{name}"][inside], truth[f"fraction:{name}"][inside], rtol=0,
                                   atol=1e-9)
    assert np.nanmax(maps["rfactor"]) < 1e-12
