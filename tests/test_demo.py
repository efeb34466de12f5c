"""The end-to-end demo: the README's main job, and the paper's qualitative findings in its output."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_reproduces_the_papers_findings(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "txmdb.cli.main", "demo", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "summary" in result.stdout and str(out / "report.html") in result.stdout
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 10

    from txmdb.catalog import open_catalog
    from txmdb.query import summary

    catalog = open_catalog(f"sqlite:///{out / 'demo.db'}", out / "store")
    table = summary(catalog, cycle=100).set_index("sample")
    catalog.engine.dispose()
    rod, gravel = table.loc["rod-NMC"], table.loc["gravel-NMC"]
    assert round(rod["retention_pct"], 1) == 94.3 and round(gravel["retention_pct"], 1) == 89.7
    assert rod["voltage_drop_v"] < gravel["voltage_drop_v"]
    # Aligned grains: tangential excess above 1 and rising with binning; random grains near 1.
    assert 1.0 < rod["tangential_excess_f1"] < rod["tangential_excess_f2"] < rod["tangential_excess_f3"]
    for f in (1, 2, 3):
        assert 0.8 < gravel[f"tangential_excess_f{f}"] < 1.2
        # ... and less valence heterogeneity: smaller mean |u| at every binning factor.
        assert rod[f"mean_u_f{f}"] < gravel[f"mean_u_f{f}"]
