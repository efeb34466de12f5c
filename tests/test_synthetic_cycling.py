"""Synthetic half cells: written, read back and analysed, they reproduce their curves."""

from __future__ import annotations

import numpy as np
import pytest

from txmdb.analysis.cycling import cycle_metrics, retention
from txmdb.io.cycling import read_cycler_file
from txmdb.synthetic.cycling import (
    GRAVEL_NMC,
    ROD_NMC,
    curve,
    generate_records,
    target_curves,
    with_overrides,
    write_cycling_csv,
)

TOL = 1e-3  # 0.1 %


def _roundtrip(spec, path, naming):
    write_cycling_csv(spec, path, naming=naming)
    rec = read_cycler_file(path)
    return rec, cycle_metrics(rec.frame, active_mass_g=spec.active_mass_g,
                              upper_cutoff_v=spec.upper_cutoff_v)


@pytest.mark.parametrize("naming", ["bdf", "arbin"])
@pytest.mark.parametrize("spec, retention_pct", [(ROD_NMC, 94.3), (GRAVEL_NMC, 89.7)],
                         ids=["rod", "gravel"])
def test_paper_cells_reproduce_their_curves(tmp_path, spec, retention_pct, naming):
    rec, m = _roundtrip(spec, tmp_path / f"{spec.name}.csv", naming)
    assert rec.has_capacity == (naming == "arbin")
    target = target_curves(spec)
    assert len(m) == spec.n_cycles
    assert np.allclose(m["discharge_capacity_mah_g"], target["discharge_capacity_mah_g"], rtol=TOL)
    assert np.allclose(m["charge_capacity_mah_g"], target["charge_capacity_mah_g"], rtol=TOL)
    assert np.allclose(m["onset_discharge_voltage_v"], target["onset_discharge_voltage_v"],
                       rtol=TOL)
    assert m["discharge_capacity_mah_g"].iloc[1] == pytest.approx(spec.capacity_start_mah_g,
                                                                  rel=TOL)
    assert m["discharge_capacity_mah_g"].iloc[-1] == pytest.approx(spec.capacity_end_mah_g,
                                                                   rel=TOL)
    assert m["coulombic_efficiency_pct"].iloc[0] == pytest.approx(88.0, rel=TOL)
    assert m["coulombic_efficiency_pct"].iloc[1:].to_numpy() == pytest.approx(99.5, rel=TOL)
    assert m["end_charge_voltage_v"].to_numpy() == pytest.approx(4.5)
    assert m["end_discharge_voltage_v"].to_numpy() == pytest.approx(2.5)
    assert (m["delta_v"] > 0.1).all()
    r = retention(m, cycle=100)
    assert round(r["retention_pct"], 1) == retention_pct
    drop = m["voltage_drop_v"].to_numpy()
    assert drop[1] == pytest.approx(4.5 - spec.onset_start_v, abs=1e-6)
    assert drop[-1] == pytest.approx(4.5 - spec.onset_end_v, abs=1e-6)


def test_cv_and_exponential_fade(tmp_path):
    spec = with_overrides(GRAVEL_NMC, cv=True, fade="exponential", n_cycles=30)
    rec, m = _roundtrip(spec, tmp_path / "cv.csv", "bdf")
    target = target_curves(spec)
    assert np.allclose(m["discharge_capacity_mah_g"], target["discharge_capacity_mah_g"], rtol=TOL)
    assert np.allclose(m["charge_capacity_mah_g"], target["charge_capacity_mah_g"], rtol=TOL)
    # Exponential: a constant ratio between consecutive cycles after the reference.
    ratios = target["discharge_capacity_mah_g"].iloc[2:].to_numpy() / \
        target["discharge_capacity_mah_g"].iloc[1:-1].to_numpy()
    assert np.allclose(ratios, ratios[0])
    # Five steps per cycle (CC, CV, rest, discharge, rest).
    assert rec.frame["step"].nunique() == 5 * spec.n_cycles


def test_record_counts_modest_by_default_and_dense_on_request():
    spec = with_overrides(ROD_NMC, n_cycles=5)
    assert len(generate_records(spec)) == 5 * 4 * 100
    assert len(generate_records(spec, records_per_step=1000)) == 5 * 4 * 1000


def test_curves_look_like_a_cathode():
    frame = generate_records(with_overrides(ROD_NMC, n_cycles=3))
    assert frame["voltage_v"].between(2.5 - 1e-9, 4.5 + 1e-9).all()
    assert (np.diff(frame["time_s"]) >= 0).all()
    dis = frame[(frame["step_type"] == "discharge") & (frame["cycle"] == 2)]
    assert (np.diff(dis["voltage_v"]) < 0).all()  # monotone fall
    mid = dis["voltage_v"].iloc[len(dis) // 2]
    assert 3.6 < mid < 4.0  # sloping plateau of a layered oxide
    # C/5 at 200 mA/g on 5 mg → 0.2 mA; ~5 h discharge.
    assert dis["current_a"].iloc[0] == pytest.approx(-2e-4)
    hours = (dis["time_s"].iloc[-1] - dis["time_s"].iloc[0]) / 3600
    assert hours == pytest.approx(209.3 / 40, rel=1e-6)


def test_curve_validation():
    lin = curve(10, 5, n_cycles=6)
    assert lin.tolist() == pytest.approx([10, 10, 8.75, 7.5, 6.25, 5])
    with pytest.raises(ValueError):
        curve(1, 2, n_cycles=2)
    with pytest.raises(ValueError):
        curve(1, 2, n_cycles=10, fade="cubic")
    with pytest.raises(ValueError):
        write_cycling_csv(ROD_NMC, "x.csv", naming="maccor")
