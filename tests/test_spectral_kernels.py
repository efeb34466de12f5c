"""White line and LCF kernels (DESIGN §11) against short per-voxel implementations.

The references here are the obvious ones: straight-line fits with ``np.polyfit`` for the
normalisation, ``np.polyfit`` + ``np.roots`` for the white line, ``scipy.optimize.lsq_linear``
on the reduced problem (two references) and SLSQP (three) for the LCF, one voxel at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import make_interp_spline
from scipy.optimize import lsq_linear, minimize

from txmdb.analysis._spectral_numba import cubic_maximum
from txmdb.analysis.edge import EdgeKernel, edge_parameters
from txmdb.analysis.spectral import SpectralKernel
from txmdb.io.spectra import read_spectrum
from txmdb.synthetic.tomogram import energy_grid

E = energy_grid(60)
PARAMS = edge_parameters("Ni")
W = (8345.0, 8358.0)
F = (8325.0, 8375.0)
DATA = Path(__file__).parent / "data" / "xas"


# ----------------------------------------------------------------------------- references
def naive_norm(energies, mu):
    """(mu - pre) / (post - pre) with straight lines fitted by np.polyfit over the windows."""
    pre = (energies >= PARAMS.pre[0]) & (energies <= PARAMS.pre[1])
    post = (energies >= PARAMS.post[0]) & (energies <= PARAMS.post[1])
    line_pre = np.polyval(np.polyfit(energies[pre], mu[pre], 1), energies)
    line_post = np.polyval(np.polyfit(energies[post], mu[post], 1), energies)
    return (mu - line_pre) / (line_post - line_pre)


def naive_white_line(energies, norm, window=W):
    """Energy and height of the cubic's maximum in the window, or (nan, nan)."""
    inside = (energies >= window[0]) & (energies <= window[1])
    wc, wh = 0.5 * (window[0] + window[1]), 0.5 * (window[1] - window[0])
    t = (energies[inside] - wc) / wh
    c3, c2, c1, c0 = np.polyfit(t, norm[inside], 3)
    for root in np.roots([3 * c3, 2 * c2, c1]):
        if abs(root.imag) < 1e-12 and -1 <= root.real <= 1 and 2 * c2 + 6 * c3 * root.real < 0:
            r = root.real
            return wc + wh * r, c0 + c1 * r + c2 * r ** 2 + c3 * r ** 3
    return np.nan, np.nan


def naive_lcf(norm_f, refs_f):
    """Weights >= 0 summing to 1 minimising |norm - w R|² and the R-factor, one voxel."""
    k = refs_f.shape[0]
    if k == 2:
        # w1 = 1 - w0: min |(norm - R1) - w0 (R0 - R1)|², 0 <= w0 <= 1
        fit = lsq_linear((refs_f[0] - refs_f[1])[:, None], norm_f - refs_f[1], bounds=(0, 1),
                         tol=1e-14, method="bvls")
        w = np.array([fit.x[0], 1 - fit.x[0]])
    else:
        fit = minimize(lambda w: np.sum((norm_f - w @ refs_f) ** 2), np.full(k, 1 / k), method="SLSQP",
                       jac=lambda w: -2 * refs_f @ (norm_f - w @ refs_f),
                       bounds=[(0, 1)] * k, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                       options={"ftol": 1e-16, "maxiter": 500})
        w = fit.x
    res = norm_f - w @ refs_f
    return w, np.sum(res ** 2) / np.sum(norm_f ** 2)


def naive_reference(energies_ref, mu_ref):
    """A reference on the stack energies (not-a-knot cubic spline), normalised like a voxel."""
    return naive_norm(E, make_interp_spline(energies_ref, mu_ref, k=3)(E))


# ----------------------------------------------------------------------------- data
def shape(e, e0, wl=None, amp=0.0, width=4.0):
    step = 0.5 + np.arctan((e - e0) / 2.0) / np.pi
    return step if wl is None else step + amp * np.exp(-0.5 * ((e - wl) / width) ** 2)


def scaled(rng, norm_like, noise):
    """Absorbance: a random pre-edge line plus a random jump times the shape, plus noise."""
    n = norm_like.shape[1]
    jump = rng.uniform(0.3, 3.0, n)
    base = rng.uniform(-0.5, 0.5, n) + rng.uniform(-2e-3, 2e-3, n) * (E[:, None] - 8330.0)
    return base + jump * norm_like + rng.normal(0.0, noise, norm_like.shape)


REFS = {"low": (E, shape(E, 8333.0, 8350.0, 0.45)),
        "high": (np.linspace(8250.0, 8450.0, 161), 3.0 * shape(np.linspace(8250.0, 8450.0, 161), 8337.0, 8353.0, 0.25) + 0.2),
        "broad": (np.linspace(8270.0, 8430.0, 97), shape(np.linspace(8270.0, 8430.0, 97), 8330.0, 8356.0, 0.6, 9.0))}


def mixtures(rng, names, n, noise=0.01):
    """Voxels mixing the references' shapes with fractions often outside the simplex."""
    shapes = np.array([make_interp_spline(*REFS[name], k=3)(E) for name in names])
    w = rng.uniform(-0.4, 1.2, (n, len(names)))
    w[:, -1] = 1 - w[:, :-1].sum(axis=1)
    return scaled(rng, (w @ shapes).T, noise)


# ----------------------------------------------------------------------------- white line
def test_white_line_matches_polyfit_roots():
    rng = np.random.default_rng(11)
    n = 600
    peaks = np.array([shape(E, rng.uniform(8328, 8338), rng.uniform(8340, 8364), rng.uniform(-0.3, 0.9),
                            rng.uniform(2, 9)) for _ in range(n)]).T
    mu = scaled(rng, peaks, 0.01).astype(np.float32)
    kernel = SpectralKernel(E, PARAMS, white_line=W)
    result = kernel.with_edges(mu)
    maps = result.maps
    assert set(maps) == {"white_line", "white_line_height"}
    expected = np.array([naive_white_line(E, naive_norm(E, mu[:, i].astype(np.float64))) for i in range(n)])
    expected[~result.valid] = np.nan
    np.testing.assert_array_equal(np.isnan(maps["white_line"]), np.isnan(expected[:, 0]))
    np.testing.assert_allclose(maps["white_line"], expected[:, 0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps["white_line_height"], expected[:, 1], rtol=0, atol=1e-6)
    # the data has both kinds: interior maxima and none (monotone or dips, or beyond W)
    found = np.isfinite(maps["white_line"])
    assert 100 < found.sum() < result.valid.sum()
    assert np.all((maps["white_line"][found] >= W[0]) & (maps["white_line"][found] <= W[1]))


def test_white_line_recovers_a_known_peak():
    # noise-free peak well inside W on a flat post-edge: the cubic's maximum is near it
    mu = np.stack([shape(E, 8333.0, wl, 0.5, 3.0) for wl in (8349.0, 8351.5, 8354.0)], axis=1)
    maps = SpectralKernel(E, PARAMS, white_line=W)(mu)
    np.testing.assert_allclose(maps["white_line"], [8349.0, 8351.5, 8354.0], atol=0.6)
    assert np.all(maps["white_line_height"] > 1.3)


@pytest.mark.parametrize("coefficients, expected", [
    ((1.0, 0.2, -1.0, 0.0), (0.1, 1.01)),          # parabola (c3 = 0), vertex inside
    ((1.0, 3.0, -1.0, 0.0), (np.nan, np.nan)),     # parabola, vertex at t = 1.5
    ((1.0, 0.2, 1.0, 0.0), (np.nan, np.nan)),      # upward parabola: no maximum
    ((0.0, 0.0, 0.0, 0.0), (np.nan, np.nan)),      # constant
    ((0.0, 0.0, 0.0, 1.0), (np.nan, np.nan)),      # t³: inflection only
    ((0.0, -0.75, 0.0, 1.0), (-0.5, 0.25)),        # t³ - 0.75 t: maximum at -0.5
    ((0.0, -0.75, 0.0, -1.0), (np.nan, np.nan)),   # -t³ - 0.75 t: decreasing
    ((0.0, 3.0, 0.0, -1.0), (1.0, 2.0)),           # -t³ + 3 t: maximum exactly at t = 1
])
def test_cubic_maximum_cases(coefficients, expected):
    got = cubic_maximum(*coefficients)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_white_line_window_needs_four_energies():
    inside = E[(E >= 8345.0) & (E <= 8348.0)]
    assert len(inside) == 3
    with pytest.raises(ValueError, match=r"white-line window 8345\.\.8348 eV holds 3 energies .* at least 4"):
        SpectralKernel(E, PARAMS, white_line=(8345.0, 8348.0))


# ----------------------------------------------------------------------------- LCF
@pytest.mark.parametrize("names", [("low", "high"), ("low", "high", "broad")])
def test_lcf_matches_a_per_voxel_constrained_solve(names):
    rng = np.random.default_rng(len(names))
    n = 400 if len(names) == 2 else 150
    mu = mixtures(rng, names, n).astype(np.float32)
    kernel = SpectralKernel(E, PARAMS, references={name: REFS[name] for name in names}, lcf_window=F)
    result = kernel.with_edges(mu)
    maps = result.maps
    assert result.valid.all()
    assert list(maps) == [f"fraction:{name}" for name in names] + ["rfactor"]
    fit = (E >= F[0]) & (E <= F[1])
    refs = np.array([naive_reference(*REFS[name]) for name in names])[:, fit]
    got = np.stack([maps[f"fraction:{name}"] for name in names], axis=1)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)
    assert got.min() >= 0.0
    for i in range(n):
        w, rfactor = naive_lcf(naive_norm(E, mu[:, i].astype(np.float64))[fit], refs)
        np.testing.assert_allclose(got[i], w, atol=1e-6, err_msg=f"voxel {i}")
        np.testing.assert_allclose(maps["rfactor"][i], rfactor, atol=1e-6, err_msg=f"voxel {i}")
    # the constraints were active for some voxels and not for others
    on_boundary = (got == 0.0).any(axis=1)
    assert 0 < on_boundary.sum() < n


def plateaus(power):
    """A spectrum exactly 0 up to the pre-edge end and 1 from the post-edge start: its
    lines are 0 and 1, so mixtures of such spectra normalise to the same mixture."""
    return np.clip((E - 8320.0) / 50.0, 0.0, 1.0) ** power


def test_lcf_exact_mixture_is_recovered():
    refs = {"a": (E, plateaus(0.5)), "b": (E, plateaus(2.0))}
    kernel = SpectralKernel(E, PARAMS, references=refs, lcf_window=F)
    w = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    mu = 0.1 + 2.0 * (np.outer(refs["a"][1], w) + np.outer(refs["b"][1], 1 - w))
    maps = kernel(mu)
    np.testing.assert_allclose(maps["fraction:a"], w, atol=1e-9)
    np.testing.assert_allclose(maps["fraction:b"], 1 - w, atol=1e-9)
    np.testing.assert_allclose(maps["rfactor"], 0.0, atol=1e-12)


def test_real_references_give_the_fractions_of_a_mixture():
    """NiO (Ni²⁺) and LiNiO₂ (Ni³⁺) from the test data, mixed 0.3/0.7 on the stack grid."""
    refs = {}
    for name, file in (("NiO", "ref_NiO.txt"), ("LiNiO2", "ref_LiNiO2.txt")):
        spectrum = read_spectrum(DATA / file, edge="Ni-K")
        refs[name] = (spectrum.energy_ev, spectrum.mu)
    kernel = SpectralKernel(E, PARAMS, white_line=W, references=refs, lcf_window=F)
    # the phases as normalised on the stack's energies (equal edge jumps: a mixture of raw
    # spectra with unequal jumps would give jump-weighted fractions, as LCF does)
    on_grid = {name: naive_reference(*ref) for name, ref in refs.items()}
    rng = np.random.default_rng(5)
    f = rng.uniform(0, 1, 300)
    mu = (np.outer(on_grid["NiO"], f) + np.outer(on_grid["LiNiO2"], 1 - f)) * 1.5 + 0.2
    exact = kernel(mu)
    assert np.abs(exact["fraction:NiO"] - f).max() < 0.01
    maps = kernel((mu + rng.normal(0, 0.003, mu.shape)).astype(np.float32))
    assert np.abs(maps["fraction:NiO"] - f).max() < 0.05
    assert np.abs(np.mean(maps["fraction:NiO"] - f)) < 0.01
    np.testing.assert_allclose(maps["fraction:NiO"] + maps["fraction:LiNiO2"], 1.0, atol=1e-12)
    assert np.nanmax(maps["rfactor"]) < 1e-3
    # both references have their white line in the Ni preset window
    assert np.isfinite(maps["white_line"]).mean() > 0.99


# ----------------------------------------------------------------------------- masks, slabs
def test_masked_where_the_edge_is_masked():
    rng = np.random.default_rng(3)
    mu = mixtures(rng, ("low", "high"), 50)
    mu[:, 0] *= 0.01           # jump below min_jump
    mu[5, 1] = np.nan          # not finite
    mu[:, 2] = 0.3             # flat: no edge
    kernel = SpectralKernel(E, PARAMS, white_line=W, references={n: REFS[n] for n in ("low", "high")},
                            lcf_window=F)
    result = kernel.with_edges(mu)
    maps = result.maps
    np.testing.assert_array_equal(result.valid[:3], False)
    assert result.valid[3:].all()
    for name, values in maps.items():
        assert np.isnan(values[:3]).all(), name
    for name in ("fraction:low", "fraction:high", "rfactor"):
        assert np.isfinite(maps[name][3:]).all(), name


def test_fused_pass_equals_edge_kernel_and_separate_call_on_any_slab():
    rng = np.random.default_rng(8)
    mu = mixtures(rng, ("low", "high"), 6 * 7 * 40).reshape(len(E), 6, 7, 40).astype(np.float32)
    mu[:, 0, 0, :5] *= 0.01
    kernel = SpectralKernel(E, PARAMS, white_line=W, references={n: REFS[n] for n in ("low", "high")},
                            lcf_window=F)
    result = kernel.with_edges(mu)
    maps = result.maps
    alone = EdgeKernel(E, PARAMS)(mu)
    for field in ("edge_ev", "jump", "sigma_pre", "valid"):
        np.testing.assert_array_equal(getattr(result, field), getattr(alone, field))
    separate = kernel(mu, alone.valid)
    threaded = kernel.with_edges(mu, threads=2).maps
    halves = [kernel(mu[:, a:b], alone.valid[a:b]) for a, b in ((0, 2), (2, 6))]
    for name, values in maps.items():
        assert values.shape == (6, 7, 40)
        np.testing.assert_array_equal(values, separate[name])
        np.testing.assert_array_equal(values, threaded[name])
        np.testing.assert_array_equal(values, np.concatenate([h[name] for h in halves]))


# ----------------------------------------------------------------------------- validation
def test_reference_must_cover_the_fit_window():
    def partial(lo, hi):
        e = np.linspace(lo, hi, int(hi - lo) + 1)
        return e, shape(e, 8333.0)

    with pytest.raises(ValueError, match=r"reference short covers 8300\.\.8360 eV, not the fit window energies "
                                         r"8325\.\.8375 eV of the stack"):
        SpectralKernel(E, PARAMS, references={"low": REFS["low"], "short": partial(8300, 8360)}, lcf_window=F)
    # the fit window is covered, the energies of its normalisation are not
    with pytest.raises(ValueError, match=r"reference late covers 8300\.\.8420 eV, not the pre-edge energies"):
        SpectralKernel(E, PARAMS, references={"low": REFS["low"], "late": partial(8300, 8420)}, lcf_window=F)
    with pytest.raises(ValueError, match=r"reference early covers 8270\.\.8400 eV, not the post-edge energies"):
        SpectralKernel(E, PARAMS, references={"low": REFS["low"], "early": partial(8270, 8400)}, lcf_window=F)


@pytest.mark.parametrize("make", [
    lambda e, mu: (e, mu.copy()),                   # identical
    lambda e, mu: (e, 2.5 * mu + 0.3),              # same spectrum on another scale: same norm
])
def test_dependent_references_are_refused(make):
    with pytest.raises(ValueError, match="reference twin is linearly dependent on low over the fit window"):
        SpectralKernel(E, PARAMS, references={"low": REFS["low"], "twin": make(*REFS["low"])}, lcf_window=F)


def test_a_combination_of_two_references_is_refused():
    refs = {"a": (E, plateaus(0.5)), "b": (E, plateaus(2.0)), "combo": (E, 0.4 * plateaus(0.5) + 0.6 * plateaus(2.0))}
    with pytest.raises(ValueError, match="reference combo is linearly dependent on a, b over the fit window"):
        SpectralKernel(E, PARAMS, references=refs, lcf_window=F)


def test_lcf_window_with_too_few_energies():
    with pytest.raises(ValueError, match=r"fit window 8400\.5\.\.8403 eV holds 0 energies"):
        SpectralKernel(E, PARAMS, references={"low": REFS["low"]}, lcf_window=(8400.5, 8403.0))
