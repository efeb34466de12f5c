"""XRD: Bragg conversions, the (003)/(104) ratio at two wavelengths, the pattern reader."""

from __future__ import annotations

import numpy as np
import pytest

from txmdb.analysis.xrd import (
    CU_KALPHA1_ANGSTROM,
    bragg_convert,
    d_to_two_theta,
    i003_i104_ratio,
    reflection_area,
    two_theta_to_d,
)
from txmdb.errors import InputError, input_errors
from txmdb.io.spectra import read_pattern
from txmdb.synthetic.spectra import layered_xrd_pattern, write_columns

CU = CU_KALPHA1_ANGSTROM
SYNCHROTRON = 0.7


# ------------------------------------------------------------------ Bragg's law


def test_layered_oxide_reflections_at_cu_kalpha():
    # (003) ≈ 18.7° ↔ d ≈ 4.74 Å and (104) ≈ 44.4° ↔ d ≈ 2.04 Å at Cu Kα1.
    assert two_theta_to_d(18.7, wavelength_angstrom=CU) == pytest.approx(4.741, abs=0.002)
    assert two_theta_to_d(44.4, wavelength_angstrom=CU) == pytest.approx(2.0387, abs=0.001)
    assert d_to_two_theta(4.741, wavelength_angstrom=CU) == pytest.approx(18.7, abs=0.005)


def test_bragg_convert_round_trip_and_reach():
    tt = np.array([18.7, 36.7, 44.4, 64.9])
    at_sync = bragg_convert(tt, from_wavelength=CU, to_wavelength=SYNCHROTRON)
    assert np.all(at_sync < tt)
    # sin θ scales with λ at fixed d
    ratio = np.sin(np.radians(at_sync / 2)) / np.sin(np.radians(tt / 2))
    assert np.allclose(ratio, SYNCHROTRON / CU)
    assert np.allclose(bragg_convert(at_sync, from_wavelength=SYNCHROTRON, to_wavelength=CU), tt)
    # A long wavelength cannot reach a small d-spacing: NaN, not an exception.
    assert np.isnan(bragg_convert(150.0, from_wavelength=CU, to_wavelength=3.0))
    with pytest.raises(ValueError, match="wavelength"):
        two_theta_to_d(20.0, wavelength_angstrom=0.0)


# ------------------------------------------------------------------ I(003)/I(104)


@pytest.mark.parametrize("ratio", [0.8, 1.2, 1.75])
def test_gaussian_peaks_give_the_chosen_ratio_at_both_wavelengths(ratio):
    for lam in (CU, SYNCHROTRON):
        tt, intensity = layered_xrd_pattern(
            wavelength_angstrom=lam, i003_i104=ratio, eta=0.0, background=(30.0, -0.2)
        )
        assert i003_i104_ratio(tt, intensity, wavelength_angstrom=lam) == pytest.approx(ratio, rel=1e-4)


def test_pseudo_voigt_ratio_is_wavelength_independent():
    # Lorentzian tails reach past any finite window, so the measured ratio is a little
    # above the true one (~2 % here), but by the same amount at every wavelength because
    # windows and peak widths are both fixed in d-spacing.
    measured = {}
    for lam in (CU, SYNCHROTRON):
        tt, intensity = layered_xrd_pattern(
            wavelength_angstrom=lam, i003_i104=1.4, eta=0.5, background=(50.0, 0.1), noise=0.3, seed=3
        )
        measured[lam] = i003_i104_ratio(tt, intensity, wavelength_angstrom=lam)
    assert measured[CU] == pytest.approx(measured[SYNCHROTRON], rel=0.005)
    assert measured[CU] == pytest.approx(1.4, rel=0.03)


def test_pattern_converted_between_wavelengths_keeps_its_ratio():
    tt, intensity = layered_xrd_pattern(wavelength_angstrom=CU, i003_i104=1.3, eta=0.0)
    tt_sync = bragg_convert(tt, from_wavelength=CU, to_wavelength=SYNCHROTRON)
    # A profile is intensity per degree: re-plotted on the 0.7 Å axis it scales by
    # d(2θ_Cu)/d(2θ_0.7) so that every peak keeps its area, and the ratio is unchanged.
    direct = i003_i104_ratio(tt, intensity, wavelength_angstrom=CU)
    via_d = i003_i104_ratio(
        tt_sync, intensity * np.gradient(tt, tt_sync), wavelength_angstrom=SYNCHROTRON
    )
    assert direct == pytest.approx(1.3, rel=1e-4)
    assert via_d == pytest.approx(direct, rel=1e-3)


def test_custom_windows_and_reflection_area():
    tt, intensity = layered_xrd_pattern(wavelength_angstrom=CU, i003_i104=1.5, area_104=80.0, eta=0.0)
    area = reflection_area(tt, intensity, window_deg=(43.0, 45.8))
    assert area.area == pytest.approx(80.0, rel=1e-4)
    assert area.peak_two_theta_deg == pytest.approx(44.4, abs=0.1)
    narrow = i003_i104_ratio(tt, intensity, wavelength_angstrom=CU, windows={"104": (2.0, 2.075)})
    assert narrow == pytest.approx(1.5, rel=1e-3)
    with pytest.raises(ValueError, match="unknown reflection"):
        i003_i104_ratio(tt, intensity, wavelength_angstrom=CU, windows={"110": (1.4, 1.5)})


def test_pattern_not_covering_a_reflection_names_the_file():
    tt, intensity = layered_xrd_pattern(wavelength_angstrom=CU, d_range_angstrom=(2.3, 6.0))
    with pytest.raises(ValueError, match=r"\(104\)"):
        i003_i104_ratio(tt, intensity, wavelength_angstrom=CU)
    with pytest.raises(InputError, match=r"^pattern\.xy: \(104\) reflection"), input_errors("pattern.xy"):
        i003_i104_ratio(tt, intensity, wavelength_angstrom=CU)


# ------------------------------------------------------------------ pattern reader


def test_read_pattern_round_trip_with_wavelength(tmp_path):
    tt, intensity = layered_xrd_pattern(wavelength_angstrom=SYNCHROTRON, i003_i104=1.6, eta=0.0)
    path = tmp_path / "nmc_pristine.xy"
    write_columns(path, [tt, intensity], names=["2theta", "intensity"], comments=["wavelength: 0.7"])
    pattern = read_pattern(path)
    assert pattern.metadata["wavelength_angstrom"] == pytest.approx(0.7)
    assert pattern.source_columns == {"two_theta": "2theta", "intensity": "intensity"}
    ratio = i003_i104_ratio(
        pattern.two_theta_deg, pattern.intensity, wavelength_angstrom=0.7
    )
    assert ratio == pytest.approx(1.6, rel=1e-4)


def test_read_pattern_xye_unnamed(tmp_path):
    tt, intensity = layered_xrd_pattern(wavelength_angstrom=CU)
    path = tmp_path / "scan.xye"
    np.savetxt(path, np.column_stack([tt, intensity, np.sqrt(intensity)]))
    pattern = read_pattern(path)
    assert np.allclose(pattern.two_theta_deg, tt) and np.allclose(pattern.intensity, intensity)
    assert "wavelength_angstrom" not in pattern.metadata


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty file"),
        ("2theta intensity\n", "non-numeric"),
        ("10\n11\n12\n13\n14\n15\n", "one column"),
        ("10 5\n10.02 6\n10.02 7\n10.04 5\n10.06 5\n10.08 4\n", "duplicate 2θ 10.02"),
        ("10 5\n10.02 6\n10.01 7\n10.04 5\n10.06 5\n10.08 4\n", "not monotonic"),
        ("8200 5\n8201 6\n8202 7\n8203 5\n8204 5\n", "between 0° and 180°"),
    ],
)
def test_bad_pattern_files(tmp_path, content, problem):
    path = tmp_path / "bad.xy"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        read_pattern(path)
    assert str(info.value).startswith(str(path)) and problem in str(info.value)
