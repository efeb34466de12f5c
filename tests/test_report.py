"""The comparison report: self-contained HTML with every section, on SQLite and PostgreSQL.

The catalogue is filled directly through the ORM with plausible numbers shaped like the
paper's (rod-NMC: radial grains, tangential θ excess growing with binning; gravel-NMC:
random grains on the sin θ reference), so the report is tested independently of the
ingest and analysis pipelines.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# --------------------------------------------------------------------------- catalogue fixture data

RETENTION = {"rod-NMC": (209.3, 197.4, 4.46, 4.43), "gravel-NMC": (207.8, 186.3, 4.45, 4.37)}
EDGE_EV = {"rod-NMC": 8342.0, "gravel-NMC": 8342.6}
VOXEL_NM = 30.0
FACTORS = (1, 2, 3)


def _sha(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def _digest(path: Path) -> str:
    """The SHA-256 of a written store file: the report reads store files hash-checked."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file(path: Path, tag: str) -> dict:
    return {"file_path": str(path), "file_size_bytes": 1, "file_sha256": _sha("file", tag)}


def _theta_bins(strength: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """36 bins of 5°: lo, hi, probability (reference tilted towards 90° by ``strength``), sin θ reference."""
    lo = np.arange(0, 180, 5.0)
    hi = lo + 5
    reference = (np.cos(np.radians(lo)) - np.cos(np.radians(hi))) / 2
    centre = np.radians(lo + 2.5)
    probability = reference * (1 + strength * (np.sin(centre) ** 2 - 2 / 3))
    return lo, hi, probability / probability.sum(), reference


def _edge_map(path: Path, edge: float) -> None:
    """A spherical particle whose edge energy rises from the centre to the surface; NaN outside."""
    import h5py

    z, y, x = np.mgrid[:16, :40, :40]
    r = np.sqrt((z - 7.5) ** 2 * 4 + (y - 19.5) ** 2 + (x - 19.5) ** 2)
    rng = np.random.default_rng(int(edge))
    values = edge + 4 * (r / 16) ** 2 + rng.normal(0, 0.3, r.shape)
    values[r > 16] = np.nan
    with h5py.File(path, "w") as h5:
        h5.create_dataset("edge_ev", data=values.astype("f4"))


def _spectrum(path: Path, energy: np.ndarray, normalized: np.ndarray) -> None:
    pd.DataFrame({"energy_ev": energy, "mu": normalized * 0.8 + 0.1, "normalized": normalized}).to_parquet(path)


def populate(catalog, root: Path, samples=("rod-NMC", "gravel-NMC"), *, with_empty: str | None = None,
             statistics: bool = True) -> None:
    """Insert fully measured samples (and optionally an empty one) through the ORM.

    ``statistics=False`` leaves the analyses without their θ, |u|, histogram and depth rows.
    """
    from txmdb.db import models as m

    root.mkdir(parents=True, exist_ok=True)
    with catalog.session() as s:
        for sample_name in samples:
            rod = sample_name.startswith("rod")
            sample = m.Sample(name=sample_name, material="LiNi0.6Mn0.2Co0.2O2",
                              morphology="rod" if rod else "gravel", orientation="radial" if rod else "random",
                              ni_fraction=0.6, mn_fraction=0.2, co_fraction=0.2, meta={"batch": "7"})
            s.add(sample)
            s.flush()

            # Cycling: capacity fades linearly from cycle 2 to the paper's value at cycle 100.
            q2, q100, v2, v100 = RETENTION[sample_name]
            cell = m.Cell(name=f"{sample_name[0].upper()}1", sample_id=sample.id, active_mass_mg=3.0,
                          upper_cutoff_v=4.5, lower_cutoff_v=2.5)
            s.add(cell)
            s.flush()
            run = m.CyclingRun(cell_id=cell.id, file_format="csv", n_records=1000, n_cycles=100, upper_cutoff_v=4.5,
                               reference_cycle=2, records_path=str(root / f"{cell.name}.parquet"),
                               records_sha256=_sha("records", cell.name), **_file(root / f"{cell.name}.csv", cell.name))
            s.add(run)
            s.flush()
            for n in range(1, 101):
                t = (n - 2) / 98
                q = 196.0 if n == 1 else q2 + (q100 - q2) * t
                onset = v2 if n == 1 else v2 + (v100 - v2) * t
                s.add(m.Cycle(run_id=run.id, cycle=n, discharge_capacity_mah_g=q, discharge_capacity_mah=q * 3e-3,
                              charge_capacity_mah_g=q / 0.995, coulombic_efficiency_pct=99.5,
                              mean_discharge_voltage_v=3.8 - 0.001 * n, onset_discharge_voltage_v=onset,
                              voltage_drop_v=4.5 - onset))

            # XAS: a bulk Ni K edge and Ni L3 in surface (TEY) and bulk (FY) modes.
            energy = np.arange(8300.0, 8400.0, 0.5)
            k_norm = 0.5 + np.arctan((energy - EDGE_EV[sample_name]) / 2.0) / np.pi
            k_path = root / f"{sample_name}-k.parquet"
            _spectrum(k_path, energy, k_norm)
            s.add(m.XASMeasurement(sample_id=sample.id, edge="Ni-K", mode="transmission", state="pristine",
                                   edge_energy_ev=EDGE_EV[sample_name], e0_derivative_ev=EDGE_EV[sample_name] + 3,
                                   edge_jump=1.0, n_points=len(energy), spectrum_path=str(k_path),
                                   spectrum_sha256=_digest(k_path), **_file(root / f"{sample_name}-k.xdi", f"k{sample_name}")))
            l3_energy = np.arange(845.0, 865.0, 0.1)
            for mode, depth, ratio in (("TEY", 0.005, 1.05 if rod else 0.92), ("FY", 0.1, 1.22 if rod else 1.18)):
                peaks = np.exp(-((l3_energy - 853) / 0.6) ** 2) + ratio * np.exp(-((l3_energy - 855.5) / 0.6) ** 2)
                path = root / f"{sample_name}-{mode}.parquet"
                _spectrum(path, l3_energy, peaks / peaks.max())
                s.add(m.XASMeasurement(sample_id=sample.id, edge="Ni-L3", mode=mode, state="pristine", depth_um=depth,
                                       l3_ratio=ratio, n_points=len(l3_energy), spectrum_path=str(path),
                                       spectrum_sha256=_digest(path),
                                       **_file(root / f"{sample_name}-{mode}.txt", f"l3{sample_name}{mode}")))
            s.add(m.XRDResult(sample_id=sample.id, state="pristine", i003_i104=1.45 if rod else 1.32,
                              a_angstrom=2.871, c_angstrom=14.21, wavelength_angstrom=1.5406))

            # TXM: one 3-D scan with a finished analysis and its statistics.
            scan = m.TXMScan(sample_id=sample.id, state="pristine", layout="dxchange", data_path="/exchange/data",
                             energy_path="/exchange/energy", ndim=3, shape=[60, 16, 40, 40], dtype="float32",
                             n_energies=60, energy_min_ev=8300.0, energy_max_ev=8400.0,
                             energies_ev=list(np.linspace(8300, 8400, 60)), voxel_size_nm=VOXEL_NM,
                             **_file(root / f"{sample_name}.h5", f"scan{sample_name}"))
            s.add(scan)
            s.flush()
            results = root / f"{sample_name}-results.h5"
            _edge_map(results, EDGE_EV[sample_name])
            analysis = m.Analysis(scan_id=scan.id, status="done", txmdb_version="test", input_sha256="0" * 64,
                                  results_path=str(results), results_sha256=_digest(results), gradient_unit="eV/nm",
                                  n_valid_voxels=20000, n_particles=1, mean_edge_ev=EDGE_EV[sample_name] + 2,
                                  std_edge_ev=1.2)
            s.add(analysis)
            s.flush()
            if statistics:
                _statistics(s, analysis.id, rod, EDGE_EV[sample_name])
        if with_empty:
            s.add(m.Sample(name=with_empty, morphology="gravel"))


def _statistics(s, analysis_id: int, rod: bool, edge: float) -> None:
    from txmdb.db import models as m

    s.add(m.Particle(analysis_id=analysis_id, particle=1, n_voxels=20000, centroid_z=7.5, centroid_y=19.5,
                     centroid_x=19.5, equivalent_radius_vox=16.8, equivalent_radius_nm=504.0,
                     mean_edge_ev=edge + 2, std_edge_ev=1.2))
    centres = np.arange(edge - 4, edge + 10, 0.5)
    prob = np.exp(-((centres - edge - 2) / 1.5) ** 2)
    prob /= prob.sum()
    for c, p in zip(centres, prob):
        s.add(m.EdgeHistogram(analysis_id=analysis_id, particle=None, edge_lo_ev=c, edge_hi_ev=c + 0.5,
                              count=int(p * 20000), probability=p))
    for d in range(16):
        s.add(m.DepthProfile(analysis_id=analysis_id, particle=None, depth_lo_vox=d, depth_hi_vox=d + 1,
                             depth_lo_nm=d * VOXEL_NM, depth_hi_nm=(d + 1) * VOXEL_NM, n_voxels=1000,
                             mean_edge_ev=edge + 4 - 0.25 * d, std_edge_ev=0.6))
    u_edges = np.linspace(0, 0.2, 21)
    for f in FACTORS:
        strength = (0.25 * f if rod else 0.02)
        for weighted in (False, True):
            lo, hi, probability, reference = _theta_bins(strength * (1.6 if weighted else 1.0))
            for row in zip(lo, hi, probability, reference):
                s.add(m.ThetaHistogram(analysis_id=analysis_id, particle=None, bin_factor=f, weighted=weighted,
                                       theta_lo=row[0], theta_hi=row[1], probability=row[2], reference=row[3]))
        # A per-particle histogram the whole-scan figures must leave out.
        lo, hi, probability, reference = _theta_bins(-0.9)
        for row in zip(lo, hi, probability, reference):
            s.add(m.ThetaHistogram(analysis_id=analysis_id, particle=1, bin_factor=f, weighted=False,
                                   theta_lo=row[0], theta_hi=row[1], probability=row[2], reference=row[3]))
        tangential = slice(16, 20)  # 80° ≤ θ < 100°
        _, _, p_plain, ref = _theta_bins(strength)
        _, _, p_weighted, _ = _theta_bins(strength * 1.6)
        s.add(m.GradientSummary(analysis_id=analysis_id, particle=None, bin_factor=f, voxel_size_nm=VOXEL_NM * f,
                                n_vectors=20000 // f ** 3, mean_u=0.06 / f,
                                tangential_excess=p_plain[tangential].sum() / ref[tangential].sum(),
                                tangential_excess_weighted=p_weighted[tangential].sum() / ref[tangential].sum(),
                                kl_divergence=0.01 * f, kl_divergence_weighted=0.02 * f))
        for g in range(9):
            scale = (0.05 + (0.01 * g if rod else 0.0)) / f
            counts = np.round(1000 * np.exp(-((u_edges[:-1] + 0.005) / scale))).astype(int)
            s.add(m.VectorSizeStat(analysis_id=analysis_id, particle=None, bin_factor=f, phi_lo=10 * g,
                                   phi_hi=10 * g + 10, n=int(counts.sum()), mean_u=scale,
                                   median_u=scale * 0.7, p90_u=scale * 2.3))
            for u_lo, u_hi, count in zip(u_edges[:-1], u_edges[1:], counts):
                s.add(m.VectorSizeHistogram(analysis_id=analysis_id, particle=None, bin_factor=f, phi_lo=10 * g,
                                            phi_hi=10 * g + 10, u_lo=u_lo, u_hi=u_hi,
                                            count=int(count)))
        for lo in range(0, 180, 5):
            phi = min(lo + 2.5, 180 - lo - 2.5)
            s.add(m.UThetaProfile(analysis_id=analysis_id, particle=None, bin_factor=f, theta_lo=lo, theta_hi=lo + 5,
                                  n=100, mean_u=(0.05 + (0.0003 * phi if rod else 0.0)) / f))


# --------------------------------------------------------------------------- HTML inspection


class _Page(HTMLParser):
    """Collects what the assertions look at: images, links, scripts, section ids, notes."""

    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self.links: list[dict] = []
        self.scripts: list[dict] = []
        self.section_ids: list[str] = []
        self.notes: dict[str, list[str]] = {}
        self._section = None
        self._in_note = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "link":
            self.links.append(attrs)
        elif tag == "script":
            self.scripts.append(attrs)
        elif tag == "section":
            self._section = attrs.get("id")
            self.section_ids.append(self._section)
        elif tag == "p" and "note" in (attrs.get("class") or "").split():
            self._in_note = True
            self.notes.setdefault(self._section, []).append("")

    def handle_endtag(self, tag):
        if tag == "p":
            self._in_note = False

    def handle_data(self, data):
        if self._in_note:
            self.notes[self._section][-1] += data


def parse(path: Path) -> tuple[str, _Page]:
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return text, page


def assert_self_contained(text: str, page: _Page) -> None:
    """Nothing the page needs lives outside it, and every image is a decodable PNG."""
    from PIL import Image

    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text, re.I)
    assert not page.links, page.links
    assert not any("src" in s for s in page.scripts)
    assert "@import" not in text and "url(" not in text
    for img in page.images:
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:60]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as png:
            assert png.format == "PNG"
            png.verify()
        assert img.get("alt"), "every figure has an alt text"


SECTIONS = ["samples", "summary", "cycling", "xas", "xrd", "txm", "depth", "theta", "vectors"]

#: Axis labels (with units) the full report must show, read from the figures' alt texts.
AXIS_LABELS = [
    "cycle number (–)", "discharge capacity (mAh/g)", "capacity retention (%)", "onset discharge voltage (V)",
    "voltage drop (V)", "energy (eV)", "normalised absorbance (–)", "Ni L$_3$ high / L$_3$ low (–)",
    "Ni K-edge energy at half height (eV)", "probability per bin (–)", "x (µm)", "y (µm)", "Ni K-edge energy (eV)",
    "depth below particle surface (nm)", "mean Ni K-edge energy (eV)",
    "probability per 5° bin (–)", "tangential excess (–)",
    "binning factor f (–)", "|u| (eV/nm)", "probability density (1/(eV/nm))", "θ (°)", "mean |u| (eV/nm)",
]

FIGURES = ["cycling", "xas_k_edge", "xas_l3_spectra", "xas_l3_ratio", "edge_histogram", "valence_maps",
           "depth_profile", "theta", "theta_weighted", "tangential_excess", "vector_size", "u_theta"]


# --------------------------------------------------------------------------- tests


def test_compare_writes_a_self_contained_report(cli, catalog, tmp_path):
    populate(catalog, tmp_path / "data")
    out = tmp_path / "out" / "report.html"
    pngs = tmp_path / "png"
    result = cli("report", "compare", "rod-NMC", "gravel-NMC", "-o", out, "--png-dir", pngs, "--cycle", "100")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out.resolve())
    assert not list(out.parent.glob(".*partial")), "no temporary file is left behind"

    text, page = parse(out)
    assert_self_contained(text, page)
    assert page.section_ids == SECTIONS
    assert not page.notes, f"every section has data: {page.notes}"
    assert [img["src"] for img in page.images] and len(page.images) == len(FIGURES)
    for figure in FIGURES:
        assert f'id="fig-{figure}"' in text
    alts = " ".join(img["alt"] for img in page.images)
    for label in AXIS_LABELS:
        assert label.replace("&#39;", "'") in alts, label
    # Every axis label of every figure carries a unit (or (–) when dimensionless).
    for img in page.images:
        axes = img["alt"].split("Axes: ", 1)[1].rstrip(".").split("; ")
        assert all(re.search(r"\(.+\)$", label) for label in axes), axes

    # Numbers of the paper come through the tables: retention 197.4/209.3 and the voltage drop at cycle 100.
    assert "94.31" in text and "89.65" in text
    assert "0.07" in text and "0.13" in text
    assert "8342.00" in text and "8342.60" in text  # K-edge energies
    assert "rod-NMC" in text and "gravel-NMC" in text

    written = sorted(p.stem for p in pngs.glob("*.png"))
    assert written == sorted(FIGURES)
    for path in pngs.glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_sample_is_one_line(cli, catalog, tmp_path):
    populate(catalog, tmp_path / "data", samples=(), with_empty="rod-NMC")
    out = tmp_path / "report.html"
    result = cli("report", "compare", "rod-NMC", "nobody", "-o", out)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no sample named 'nobody'" in lines[0]
    assert not out.exists()


def test_missing_data_gives_notes_not_a_crash(catalog, tmp_path):
    from txmdb.db import models as m
    from txmdb.report import build_report

    populate(catalog, tmp_path / "data", samples=("rod-NMC",), with_empty="bare-NMC", statistics=False)
    with catalog.session() as s:
        # An analysis whose results file has gone: the map is skipped with a note, the rest stays.
        analysis = s.query(m.Analysis).one()
        Path(analysis.results_path).unlink()
    path = build_report(catalog, ["bare-NMC"], output=tmp_path / "bare.html")
    text, page = parse(path)
    assert_self_contained(text, page)
    assert page.section_ids == SECTIONS
    assert not page.images
    for section in ("cycling", "xas", "xrd", "txm", "depth", "theta", "vectors"):
        assert page.notes.get(section), f"section {section} explains why it is empty"
    assert "No cycling data" in text and "No TXM scans" in text

    path = build_report(catalog, ["rod-NMC", "bare-NMC"], output=tmp_path / "both.html", cycle=150)
    text, page = parse(path)
    assert any("results file is missing" in n for n in page.notes["txm"])
    assert any("No retention at cycle 150 for R1" in n for n in page.notes["cycling"])
    assert 'id="fig-valence_maps"' not in text and 'id="fig-cycling"' in text
    for section in ("depth", "theta", "vectors"):
        assert page.notes.get(section), f"section {section} explains why it is empty"


def test_no_samples_or_bad_cycle_is_a_user_error(catalog, tmp_path):
    from txmdb.errors import TxmdbError
    from txmdb.report import build_report

    populate(catalog, tmp_path / "data", samples=(), with_empty="rod-NMC")
    with pytest.raises(TxmdbError, match="at least one sample"):
        build_report(catalog, [], output=tmp_path / "r.html")
    with pytest.raises(TxmdbError, match="positive"):
        build_report(catalog, ["rod-NMC"], output=tmp_path / "r.html", cycle=0)
    assert not (tmp_path / "r.html").exists()


def test_report_cli_imports_nothing_heavy():
    # The report command module is imported by ``txmdb --help``: plotting and data libraries
    # must wait until the command runs.
    code = "import sys, txmdb.cli.report, txmdb.report; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    assert not loaded & {"matplotlib", "pandas", "numpy", "jinja2", "h5py"}
