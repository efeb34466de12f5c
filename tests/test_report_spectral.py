"""The report's spectral-map figures (DESIGN §11, issue 11 item 5): white line beside the edge, white line
against edge energy, LCF fraction slices and histograms, cluster mean spectra with the label slice.

Each figure appears only for analyses that have its map. The catalogue of tests/test_report.py is
extended with maps written into its results files (re-hashed), so the report is tested apart from
the analysis pipeline; the page is loaded in headless Chromium as tests/test_report_browser.py does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from tests.test_report import FIGURES, assert_self_contained, parse, populate
from tests.test_report_browser import ARTIFACTS, load_in_chromium

SPECTRAL_FIGURES = ["white_line_maps", "white_line_vs_edge", "fraction_maps", "fraction_histograms", "clusters"]
# the spectral figures follow the valence maps
EXPECTED = FIGURES[:FIGURES.index("valence_maps") + 1] + SPECTRAL_FIGURES + FIGURES[FIGURES.index("valence_maps") + 1:]
REFERENCES = ["NiO", "LiNiO2"]


def add_maps(catalog, *, white_line=("rod-NMC", "gravel-NMC"), lcf=("rod-NMC",), clusters=("rod-NMC",)) -> None:
    """Write spectral maps into the latest analysis' results file of the named samples, re-hash it,
    and record the cluster tables."""
    from txmdb.db import models as m

    with catalog.session() as s:
        rows = (s.query(m.Analysis, m.Sample.name).join(m.TXMScan, m.TXMScan.id == m.Analysis.scan_id)
                .join(m.Sample, m.Sample.id == m.TXMScan.sample_id).all())
        for analysis, sample in rows:
            path = Path(analysis.results_path)
            with h5py.File(path, "a") as h5:
                edge = h5["edge_ev"][()]
                valid = np.isfinite(edge)
                rng = np.random.default_rng(len(sample))
                if sample in white_line:
                    wl = np.where(valid, edge + 12.0 + rng.normal(0, 0.4, edge.shape), np.nan)
                    h5.create_dataset("white_line_ev", data=wl.astype("f4"))
                    h5.create_dataset("white_line_height", data=np.where(valid, 1.4, np.nan).astype("f4"))
                if sample in lcf:
                    f = np.clip((edge - np.nanmin(edge)) / (np.nanmax(edge) - np.nanmin(edge)), 0, 1)
                    d = h5.create_dataset("fractions", data=np.stack([1 - f, f]).astype("f4"))
                    d.attrs["references"] = json.dumps(REFERENCES)
                    h5.create_dataset("rfactor", data=np.where(valid, 1e-3, np.nan).astype("f4"))
                if sample in clusters:
                    labels = np.digitize(edge, np.nanpercentile(edge, [33, 66])).astype("i2")
                    labels[~valid] = -1
                    h5.create_dataset("cluster", data=labels)
                    energies = np.linspace(8325, 8365, 41)
                    for k, shift in enumerate((-2.0, 0.0, 2.0)):
                        for i, e in enumerate(energies):
                            s.add(m.ClusterSpectrum(analysis_id=analysis.id, cluster=k, energy_index=10 + i,
                                                    energy_ev=e, mean_norm=0.5 + np.arctan((e - 8342 - shift) / 2) / np.pi,
                                                    n_voxels=int((labels == k).sum())))
            analysis.results_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def spectral_report(catalog, tmp_path):
    from txmdb.report import build_report

    populate(catalog, tmp_path / "data")
    add_maps(catalog)
    return build_report(catalog, ["rod-NMC", "gravel-NMC"], output=tmp_path / "report.html",
                        png_dir=tmp_path / "png")


def test_spectral_figures_appear_with_their_maps(spectral_report, tmp_path):
    text, page = parse(spectral_report)
    assert_self_contained(text, page)
    ids = [figure_id for figure_id in _figure_ids(text)]
    assert ids == [f"fig-{name}" for name in EXPECTED]
    alts = " ".join(img["alt"] for img in page.images)
    for label in ("white-line energy (eV)", "Ni K-edge energy at half height (eV)", "fraction (–)",
                  "mean normalised absorbance (–)", "probability per bin (–)"):
        assert label in alts, label
    size = {name: Image.open(tmp_path / "png" / f"{name}.png").size for name in SPECTRAL_FIGURES}
    # both scans have a white line (two rows), only rod-NMC has fractions and clusters (one row)
    assert size["white_line_maps"][1] > 1.7 * size["fraction_maps"][1]
    assert abs(size["clusters"][1] - size["fraction_maps"][1]) < 0.2 * size["fraction_maps"][1]
    # the fraction-map row holds one panel per reference
    assert size["fraction_maps"][0] > 1.7 * size["clusters"][0] / 2


def test_no_spectral_figure_without_maps(catalog, tmp_path):
    from txmdb.report import build_report

    populate(catalog, tmp_path / "data")
    add_maps(catalog, white_line=(), lcf=(), clusters=("gravel-NMC",))
    report = build_report(catalog, ["rod-NMC", "gravel-NMC"], output=tmp_path / "report.html")
    ids = _figure_ids(report.read_text())
    assert [i for i in ids if i[len("fig-"):] in SPECTRAL_FIGURES] == ["fig-clusters"]


def test_joint_and_fraction_histograms_count_every_valid_voxel(tmp_path):
    from txmdb.report import html

    path = tmp_path / "maps.h5"
    rng = np.random.default_rng(0)
    edge = rng.normal(8340, 2, (7, 9, 11)).astype("f4")
    white = (edge + 12 + rng.normal(0, 1, edge.shape)).astype("f4")
    edge[0, :3] = np.nan
    white[1, :, :2] = np.nan
    f = rng.uniform(0, 1, edge.shape).astype("f4")
    f[2] = np.nan
    with h5py.File(path, "w") as h5:
        h5["edge_ev"], h5["white_line_ev"] = edge, white
        d = h5.create_dataset("fractions", data=np.stack([f, 1 - f]))
        d.attrs["references"] = json.dumps(REFERENCES)
        h5["rfactor"] = np.zeros_like(f)
    old = html._MAP_BLOCK_VALUES
    html._MAP_BLOCK_VALUES = 150                     # several blocks of a few slices
    try:
        with h5py.File(path, "r") as h5:
            counts, x_edges, y_edges = html._joint_histogram(h5)
            fractions = html._fraction_histogram(h5, "fraction:NiO")
    finally:
        html._MAP_BLOCK_VALUES = old
    both = np.isfinite(edge) & np.isfinite(white)
    expected, _, _ = np.histogram2d(edge[both], white[both], bins=(x_edges, y_edges))
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == both.sum()
    assert x_edges[0] == edge[both].min() and x_edges[-1] == edge[both].max()
    finite = f[np.isfinite(f)]
    np.testing.assert_allclose(fractions["probability"], np.histogram(finite, bins=np.linspace(0, 1, 51))[0]
                               / finite.size)


def test_spectral_report_renders_in_headless_chromium(spectral_report):
    loaded = load_in_chromium(spectral_report, ARTIFACTS / "report-spectral.png")
    assert not loaded["problems"], loaded["problems"]
    assert all(url == spectral_report.as_uri() or url.startswith("data:") for url in loaded["requests"])
    assert [i["id"] for i in loaded["images"]] == [f"fig-{name}" for name in EXPECTED]
    assert all(i["ok"] for i in loaded["images"]), [i for i in loaded["images"] if not i["ok"]]


def _figure_ids(text: str) -> list[str]:
    import re

    return re.findall(r'<figure id="([^"]+)"', text)
