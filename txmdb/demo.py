"""The end-to-end demo: synthetic rod-like and gravel-like NMC, from raw files to the report.

Everything goes through the same services the CLI uses: samples and cells are recorded,
synthetic instrument files are written (HDF5 tomograms, cycler CSVs, XAS spectra), ingested,
analysed and compared. The figures follow Xu et al., Nat. Commun. 11, 83 (2020).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

#: (sample name, morphology, grain orientation, tomogram kind, cycler spec name, XAS and XRD values).
#: The tomograms are of the charged state: their edge energies (bulk to surface) sit around that
#: state's bulk Ni K-edge (``k_edge``), as a scientist reading both tables expects.
SAMPLES = {
    "rod-NMC": dict(morphology="rod", orientation="radial", kind="rod", cell="R1",
                    # aligned grains: less grain-to-grain valence spread (the paper's finding)
                    field=dict(grain_sigma_ev=0.5, grain_ramp_ev=5.0, voxel_sigma_ev=1.5, e_bulk=8342.0, e_surface=8345.0),
                    k_edge={"pristine": 8341.0, "charged-4.5V": 8344.2},
                    l3={"TEY": (0.78, 1.0), "FY": (0.92, 1.0)}, i003_i104=1.92, a=2.869, c=14.21),
    "gravel-NMC": dict(morphology="gravel", orientation="random", kind="gravel", cell="G1",
                       field=dict(grain_sigma_ev=1.6, grain_ramp_ev=11.0, voxel_sigma_ev=2.0, e_bulk=8342.0,
                                  e_surface=8345.0),
                       k_edge={"pristine": 8341.1, "charged-4.5V": 8343.4},
                       l3={"TEY": (0.66, 1.0), "FY": (0.88, 1.0)}, i003_i104=1.63, a=2.870, c=14.22),
}
TOMOGRAM_STATE = "charged-4.5V"
#: The particles' absorbance below the Ni edge, per unit edge jump (NMC's Mn, Co and O, Ni's
#: non-resonant absorption): a particle shows at every energy, as in a real stack
DEMO_MATRIX = 0.3

#: The spectral-maps scan (DESIGN §11): a partly charged particle whose voxels mix the two measured Ni
#: references, Ni³⁺ (LiNiO2) rising from the core to the surface through its grains.
SPECTRAL_SAMPLE = "half-charged-NMC"
SPECTRAL_STATE = "charged-4.0V"
#: LCF references, in the order of their fraction maps: name → shipped measured file (txmdb.synthetic.spectra).
SPECTRAL_REFERENCES = ("NiO", "LiNiO2")
#: Phase clusters of the spectral scan.
SPECTRAL_CLUSTERS = 3


@dataclass
class DemoResult:
    out: Path
    database: Path
    report: Path
    summary: pd.DataFrame
    timings_s: dict[str, float] = field(default_factory=dict)


def run_demo(out: str | Path, *, size: int = 100, n_energies: int = 60, noise: float = 0.01,
             echo: Callable[[str], None] = print) -> DemoResult:
    """Build a fresh SQLite catalogue in ``out`` and run the whole product on synthetic data.

    Parameters
    ----------
    out : path-like
        Folder for the catalogue (``demo.db``), its store, the synthetic raw files and
        ``report.html``. A previous demo there is replaced.
    size : int
        Edge length of each cubic tomogram, voxels (≥ 100 for the real demo).
    n_energies : int
        Energies per tomogram (8280–8420 eV, denser across the edge).
    noise : float
        Gaussian noise on the absorbance of the tomograms.
    """
    from txmdb.catalog import open_catalog
    from txmdb.db.migrate import upgrade
    from txmdb.query import summary
    from txmdb.report import build_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    database = out / "demo.db"
    _refuse_other_store(out / "store", database)
    for old in (database, out / "demo.db-wal", out / "demo.db-shm"):
        old.unlink(missing_ok=True)
    shutil.rmtree(out / "store", ignore_errors=True)
    t0 = time.perf_counter()
    catalog = open_catalog(str(database.resolve()), out / "store", check=False)
    upgrade(catalog.engine)
    timings = populate_demo(catalog, out / "raw", size=size, n_energies=n_energies, noise=noise, echo=echo)
    timings.update(populate_spectral_demo(catalog, out / "raw", size=size, n_energies=n_energies, noise=noise,
                                          echo=echo))

    table = summary(catalog, cycle=100)
    report = build_report(catalog, [*SAMPLES, SPECTRAL_SAMPLE], output=out / "report.html")
    timings["total"] = time.perf_counter() - t0
    catalog.engine.dispose()
    return DemoResult(out=out, database=database, report=report, summary=table, timings_s=timings)


def _refuse_other_store(store: Path, database: Path) -> None:
    """TxmdbError unless ``store`` (which the demo replaces) is missing, an empty folder, or the
    store of the previous demo's ``database`` (its owner mark names it): ``--out`` given a lab's
    folder must not wipe its store, nor any other folder or file named ``store``."""
    from txmdb.catalog import open_catalog
    from txmdb.errors import TxmdbError

    if not os.path.lexists(store):
        return
    if store.is_dir() and not store.is_symlink() and not any(store.iterdir()):
        return
    if database.is_file():
        catalog = open_catalog(str(database.resolve()), store, check=False)
        try:
            if catalog.store.owner() is not None:
                return
        except TxmdbError:
            pass
        finally:
            catalog.engine.dispose()
    raise TxmdbError(f"{store}: a results store that is not a previous demo's (the demo replaces it); "
                     f"give --out a folder of its own")


def populate_demo(catalog, raw: Path, *, size: int = 100, n_energies: int = 60, noise: float = 0.01,
                  echo: Callable[[str], None] = print) -> dict[str, float]:
    """Record the demo's samples and cells and ingest and analyse its synthetic files into ``catalog``.

    Any catalogue at schema head (SQLite or PostgreSQL); the raw files are written to ``raw``.
    Returns the seconds each stage took.
    """
    from txmdb.analysis.edge import edge_parameters
    from txmdb.catalog.cycling import ingest_cycling
    from txmdb.catalog.samples import add_cell, add_sample
    from txmdb.catalog.spectroscopy import add_xrd, ingest_xas
    from txmdb.catalog.txm import analyze_scan, ingest_scan
    from txmdb.pipeline import AnalysisOptions
    from txmdb.synthetic.cycling import GRAVEL_NMC, ROD_NMC, write_cycling_csv
    from txmdb.synthetic.spectra import ni_k_edge_spectrum, ni_l3_spectrum, write_columns
    from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

    raw = Path(raw)
    raw.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    specs = {"rod-NMC": ROD_NMC, "gravel-NMC": GRAVEL_NMC}
    with catalog.session() as session:
        for name, info in SAMPLES.items():
            add_sample(session, name, material="LiNi0.6Mn0.2Co0.2O2", morphology=info["morphology"],
                       orientation=info["orientation"], ni_fraction=0.6, mn_fraction=0.2, co_fraction=0.2,
                       source="txmdb demo (synthetic)", meta={"paper": "Xu et al., Nat. Commun. 11, 83 (2020)"})
            add_cell(session, info["cell"], sample=name, active_mass_mg=specs[name].active_mass_g * 1000,
                     upper_cutoff_v=specs[name].upper_cutoff_v, lower_cutoff_v=specs[name].lower_cutoff_v,
                     cell_format="CR2032", electrolyte="1 M LiPF6 in EC/DMC")
    echo("samples and cells recorded")

    for name, info in SAMPLES.items():
        path = write_cycling_csv(specs[name], raw / f"{info['cell']}-cycling.csv", records_per_step=40)
        run, _ = ingest_cycling(catalog, path, cell=info["cell"])
        for state, e_half in info["k_edge"].items():
            energy, mu = ni_k_edge_spectrum(e_half, noise=0.002, seed=len(state))
            spectrum = raw / f"{name}-NiK-{state}.txt"
            write_columns(spectrum, [energy, mu], names=("energy", "mu"))
            ingest_xas(catalog, spectrum, sample=name, edge="Ni-K", mode="transmission", state=state)
        for mode, (high, low) in info["l3"].items():
            energy, yield_ = ni_l3_spectrum(high_peak=high, low_peak=low, noise=0.002, seed=len(mode))
            spectrum = raw / f"{name}-NiL3-{mode}.txt"
            write_columns(spectrum, [energy, yield_], names=("energy", "mu"))
            ingest_xas(catalog, spectrum, sample=name, edge="Ni-L3", mode=mode, state=TOMOGRAM_STATE)
        add_xrd(catalog, sample=name, state="pristine", i003_i104=info["i003_i104"], a_angstrom=info["a"],
                c_angstrom=info["c"])
    echo(f"cycling, XAS and XRD ingested ({run.n_cycles} cycles per cell)")
    timings["electrochemistry_and_spectra"] = time.perf_counter() - t0

    energies = energy_grid(n_energies)
    options = AnalysisOptions(params=edge_parameters("Ni"), bin_factors=(1, 2, 3))
    for seed, (name, info) in enumerate(SAMPLES.items()):
        t1 = time.perf_counter()
        edge_map, _mask = particle_field((size, size, size), kind=info["kind"], seed=seed + 1, **info["field"])
        tomogram = raw / f"{name}-txm.h5"
        # the particle shows below the edge too (its matrix absorbs): the stack can be registered
        write_stack(tomogram, SyntheticStack(edge_map, energies, noise=noise, matrix=DEMO_MATRIX, seed=seed + 1),
                    energies, layout="dxchange", voxel_size_nm=30.0)
        scan, _ = ingest_scan(catalog, tomogram, sample=name, state=TOMOGRAM_STATE)
        analysis = analyze_scan(catalog, scan.id, options)
        timings[f"tomogram_{name}"] = time.perf_counter() - t1
        echo(f"{name}: scan {scan.id} ({size}³ voxels × {n_energies} energies) analysed — "
             f"{analysis.n_particles} particle(s), mean edge {analysis.mean_edge_ev:.2f} eV")
    return timings


def populate_spectral_demo(catalog, raw: Path, *, size: int = 100, n_energies: int = 60, noise: float = 0.01,
                           echo: Callable[[str], None] = print) -> dict[str, float]:
    """The spectral maps of DESIGN §11 on one more sample: references, white line, LCF, clusters.

    The two measured Ni references shipped with txmdb (NiO, Ni²⁺; LiNiO2, Ni³⁺) are ingested
    as named references; a tomogram whose voxels mix them is written (the LiNiO2 fraction
    follows a gravel-like valence field, rising from core to surface, noise ``noise``), and
    analysed with the white line, the LCF of the two references, the phase clusters and the
    gradient statistics of the edge and the LiNiO2 fraction — the options ``txm analyze``
    parses (:func:`txmdb.options.analysis_request`). Returns the seconds it took.
    """
    import numpy as np

    from txmdb.catalog.samples import add_sample
    from txmdb.catalog.spectroscopy import ingest_xas
    from txmdb.catalog.txm import analyze_scan, ingest_scan
    from txmdb.io.spectra import read_spectrum
    from txmdb.options import analysis_request
    from txmdb.synthetic.spectra import measured_reference, reference_components
    from txmdb.synthetic.tomogram import energy_grid, fraction_stack, particle_field, write_stack

    t0 = time.perf_counter()
    raw = Path(raw)
    raw.mkdir(parents=True, exist_ok=True)
    with catalog.session() as session:
        add_sample(session, SPECTRAL_SAMPLE, material="LiNi0.6Mn0.2Co0.2O2", morphology="gravel",
                   orientation="random", ni_fraction=0.6, mn_fraction=0.2, co_fraction=0.2,
                   source="txmdb demo (synthetic)", notes="voxels mix measured NiO and LiNiO2 Ni K spectra")
    references = {}
    for name in SPECTRAL_REFERENCES:
        path = raw / f"reference-{name}.txt"
        shutil.copyfile(measured_reference(name), path)
        ingest_xas(catalog, path, reference=name, edge="Ni-K", mode="transmission")
        spectrum = read_spectrum(path, edge="Ni-K")
        references[name] = (spectrum.energy_ev, spectrum.mu)
    energies = energy_grid(n_energies)
    edge_map, _ = particle_field((size, size, size), kind="gravel", seed=7, e_bulk=8335.0, e_surface=8345.0,
                                 grain_sigma_ev=1.0, grain_ramp_ev=4.0, voxel_sigma_ev=0.5)
    # LiNiO2 (Ni3+) fraction: 0 at 8335 eV of the valence field, 1 at 8345 eV
    lini = np.clip((edge_map - 8335.0) / 10.0, 0.0, 1.0)
    components = reference_components(energies, {"LiNiO2": references["LiNiO2"], "NiO": references["NiO"]})
    stack, _ = fraction_stack(lini, energies, components, noise=noise, seed=7, matrix=DEMO_MATRIX)
    tomogram = raw / f"{SPECTRAL_SAMPLE}-txm.h5"
    write_stack(tomogram, stack, energies, layout="dxchange", voxel_size_nm=30.0)
    scan, _ = ingest_scan(catalog, tomogram, sample=SPECTRAL_SAMPLE, state=SPECTRAL_STATE)
    options, _ = analysis_request({"lcf": ",".join(SPECTRAL_REFERENCES), "clusters": SPECTRAL_CLUSTERS,
                                   "gradient_map": "edge,fraction:LiNiO2"}, catalog=catalog)
    analysis = analyze_scan(catalog, scan.id, options)
    echo(f"{SPECTRAL_SAMPLE}: scan {scan.id} ({size}³ voxels × {n_energies} energies) analysed with the white "
         f"line, LCF of {' and '.join(SPECTRAL_REFERENCES)} and {SPECTRAL_CLUSTERS} phase clusters — "
         f"mean edge {analysis.mean_edge_ev:.2f} eV")
    return {f"tomogram_{SPECTRAL_SAMPLE}": time.perf_counter() - t0}
