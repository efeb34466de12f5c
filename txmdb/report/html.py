"""The comparison report: gather the data of some samples, draw the figures, write one HTML file.

The file is self-contained: figures are PNGs embedded as ``data:`` URIs and the styles are
inline, so it opens offline, can be mailed, and never breaks when the store moves. Each
section is built by one ``_*_section`` function from :mod:`txmdb.query` tables; a section
without data keeps its heading and says why it is empty, so a report of a sample that has
only been cycled still renders.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from txmdb import __version__, query
from txmdb.analysis.cycling import retention_curve
from txmdb.db.engine import safe_url
from txmdb.errors import InputError, NotFoundError, ParameterError, StoreFileError, TxmdbError
from txmdb.io.outputs import check_file_destination, check_folder_destination, write_files
from txmdb.report import figures as fg
from txmdb.report.figures import Curve, Style
from txmdb.textsafe import visible

#: Name of the edge-energy map in an analysis results file (written by txmdb.pipeline).
EDGE_MAP_DATASET = "edge_ev"

#: Fewest voxels a depth bin needs to be drawn: with a per-voxel spread of ~3 eV, 50 voxels
#: put the bin mean within ~0.5 eV.
MIN_DEPTH_VOXELS = 50

#: The query columns that name a measurement's file (its name and path): the report's tables leave them
#: out, as they describe the samples rather than where their files are.
_SOURCE_COLUMNS = ["source_name", "file_path"]

#: Order of XAS detection modes on the L3 ratio plot when their probing depth is unknown:
#: electron yields probe the surface (nm), fluorescence the bulk (~100 nm), transmission all.
_MODE_ORDER = ("TEY", "PEY", "AEY", "FY", "TFY", "PFY", "fluorescence", "transmission")


@dataclass
class ReportFigure:
    """One embedded figure: file stem, caption, PNG bytes and an alt text naming its axes."""

    name: str
    caption: str
    png: bytes
    alt: str

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class ReportTable:
    caption: str
    html: str


@dataclass
class Section:
    key: str
    title: str
    intro: str = ""
    notes: list[str] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)

    def figure(self, name: str, caption: str, fig) -> None:
        """Render a matplotlib figure into this section (the Figure is not kept)."""
        labels = fg.axis_labels(fig)
        alt = f"{caption} Axes: {'; '.join(labels)}."
        self.figures.append(ReportFigure(name=name, caption=caption, png=fg.png_bytes(fig), alt=alt))

    def table(self, caption: str, frame: pd.DataFrame, keep: tuple[str, ...] = ()) -> None:
        """A table; its columns empty in every row are left out, but those in ``keep`` (the
        caption names them: a dash says "not reached", a missing column says nothing)."""
        self.tables.append(ReportTable(caption=caption, html=_table_html(frame, keep)))


@dataclass
class _Context:
    """What every section builder needs: the catalogue, the samples and their styles."""

    catalog: object
    samples: list[str]
    cycle: int
    colours: dict[str, str]
    states: list[str] = field(default_factory=list)     # empty: every state
    _scans: pd.DataFrame | None = None

    @property
    def where(self) -> dict:
        """The query filters of the TXM, XAS and XRD parts: these samples, in these states."""
        return {"sample": self.samples, "state": self.states}

    @property
    def these(self) -> str:
        """'these samples', with the states when the report is restricted to some (for the empty notes)."""
        return "these samples" + (f" in state {', '.join(self.states)}" if self.states else "")

    def order(self, frame: pd.DataFrame, *by: str) -> pd.DataFrame:
        """Rows in the order the user named the samples, then by ``by``."""
        rank = {name: i for i, name in enumerate(self.samples)}
        return frame.assign(_rank=frame["sample"].map(rank)).sort_values(["_rank", *by], kind="stable").drop(
            columns="_rank")

    @property
    def scans(self) -> pd.DataFrame:
        if self._scans is None:
            self._scans = self.order(query.scans(self.catalog, **self.where), "scan_id")
        return self._scans

    def styles(self, items: Sequence[tuple[str, str]]) -> list[Style]:
        """Styles for (sample, label) items: the sample's colour, then one line style per item of that sample."""
        seen: dict[str, int] = {}
        out = []
        for sample, label in items:
            index = seen[sample] = seen.get(sample, -1) + 1
            out.append(Style(label, self.colours[sample], fg.LINESTYLES[index % len(fg.LINESTYLES)]))
        return out

    def scan_styles(self, scan_ids: Sequence[int] | None = None) -> dict[int, Style]:
        """A style per analysed scan (or per scan of ``scan_ids``), labelled by sample (and scan id
        when a sample has several) and state."""
        analysed = (self.scans.dropna(subset=["analysis_id"]) if scan_ids is None
                    else self.scans[self.scans["scan_id"].isin(list(scan_ids))])
        per_sample = analysed["sample"].value_counts()
        items = []
        for _, row in analysed.iterrows():
            label = row["sample"] if per_sample[row["sample"]] == 1 else f"{row['sample']} · scan {row['scan_id']}"
            if isinstance(row["state"], str) and row["state"]:
                label += f" ({row['state']})"
            items.append((row["sample"], label))
        return dict(zip((int(s) for s in analysed["scan_id"]), self.styles(items)))


def build_report(catalog, samples: Sequence[str], *, output: Path, png_dir: Path | None = None,
                 cycle: int = 100, states: Sequence[str] = ()) -> Path:
    """Write a self-contained HTML report comparing ``samples`` with the figures of Xu et al. 2020.

    Parameters
    ----------
    catalog : txmdb.catalog.Catalog
        The open catalogue.
    samples : sequence of str
        Sample names, in the order of their colours in every figure.
    output : Path
        HTML file to write (atomically: a failure leaves no partial file, nor a folder made for it).
    png_dir : Path, optional
        Also write every figure there as ``<name>.png``.
    cycle : int
        Cycle at which retention and voltage drop are compared (default 100).
    states : sequence of str, optional
        Only the TXM scans, XAS spectra and XRD results in these states (default: every state);
        each must be a state of some of the samples (:func:`report_states`). Cells carry no
        state: cycling is shown whole. The report's header names the states.

    Returns
    -------
    Path
        The absolute path of the report.

    Raises
    ------
    NotFoundError
        A sample is not in the catalogue.
    TxmdbError
        No samples were given, or ``cycle`` is not positive.
    ParameterError
        A state is none of the samples' states.
    InputError
        ``output`` or ``png_dir`` cannot be written (checked before any figure is drawn).
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    names = _check_samples(catalog, samples)
    if cycle < 1:
        raise ParameterError("cycle", f"cycle {cycle} is not a positive cycle number")
    picked = chosen_states(states, report_states(catalog, names), names) if states else []
    # Before the figures are drawn: a destination that cannot be written is refused at once.
    check_file_destination(output, make_folder=True)
    if png_dir is not None:
        check_folder_destination(png_dir)
    from txmdb.catalog import catalogue_file_problem, refuse_catalogue_file

    refuse_catalogue_file(catalog, Path(output))           # the database, the store, an ingested file
    if png_dir is not None and (problem := catalogue_file_problem(png_dir, catalog.engine.url, catalog.store.root)):
        raise InputError(png_dir, problem)
    ctx = _Context(catalog=catalog, samples=names, cycle=cycle, colours=fg.sample_colours(names), states=picked)
    sections = [builder(ctx) for builder in SECTIONS]

    env = Environment(loader=PackageLoader("txmdb.report", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("report.html").render(
        title=f"txmdb comparison: {' vs '.join(names)}" + (f" ({', '.join(picked)})" if picked else ""),
        samples=[(name, ctx.colours[name]) for name in names],
        sections=sections,
        cycle=cycle,
        states=picked,
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        database=safe_url(catalog.engine.url),
    )
    output = Path(output)
    # Names are plain text in the page too: control and bidi characters show as escapes.
    files = {output: visible(html, keep="\n").encode("utf-8")}
    if png_dir is not None:
        pngs = {Path(png_dir) / f"{figure.name}.png": figure.png for section in sections for figure in section.figures}
        for path in pngs:   # a figure's name may be a link to the database, into the store, to an ingested file
            refuse_catalogue_file(catalog, path)
        files.update(pngs)
    # The report and its PNGs are written whole, or none of them (nor the folders made for them).
    write_files(files, new_folders=[output.parent, *([Path(png_dir)] if png_dir is not None else [])])
    return output.resolve()


def _check_samples(catalog, samples: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(s.strip() for s in samples))
    if not names:
        raise TxmdbError("name at least one sample to report on")
    known = set(query.samples(catalog)["sample"])
    missing = [n for n in names if n not in known]
    if missing:
        listed = ", ".join(repr(n) for n in missing)
        raise NotFoundError(f"no sample named {listed}; see 'txmdb sample list'")
    return names


def report_states(catalog, samples: Sequence[str]) -> list[str]:
    """The states a report of ``samples`` can be restricted to: those of their TXM scans, XAS
    spectra and XRD results, sorted (measurements without a state have none to pick)."""
    found: set[str] = set()
    for table in (query.scans, query.xas, query.xrd):
        found.update(s for s in table(catalog, sample=list(samples))["state"] if isinstance(s, str) and s)
    return sorted(found)


def chosen_states(states: Sequence[str], available: Sequence[str], samples: Sequence[str]) -> list[str]:
    """``states`` without repeats, each checked against ``available`` (the samples' states)."""
    picked = list(dict.fromkeys(s.strip() for s in states if s.strip()))
    unknown = [s for s in picked if s not in available]
    if unknown:
        listed = ", ".join(repr(s) for s in unknown)
        known = ", ".join(available) or "none"
        raise ParameterError("states", f"no scan, XAS spectrum or XRD result of {', '.join(samples)} is in state "
                                       f"{listed} (their states: {known})")
    return picked


# --------------------------------------------------------------------------- tables


def _format_number(value: float) -> str:
    """Enough digits for edge energies (8342.15 eV) without noise on ratios (1.043)."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2f}" if abs(value) >= 100 else f"{value:.4g}"


def _table_html(frame: pd.DataFrame, keep: tuple[str, ...] = ()) -> str:
    """An HTML table of a tidy frame; columns that are empty for every row are left out, but ``keep``."""
    frame = frame[[c for c in frame.columns if c in keep or frame[c].notna().any()]].copy()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.api.extensions.ExtensionDtype):
            # Nullable integers print <NA> whatever na_rep says.
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "–")
        elif frame[column].dtype == object:
            frame[column] = frame[column].map(
                lambda v: "" if v is None or (isinstance(v, dict) and not v) else
                (", ".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else v))
    return frame.to_html(index=False, na_rep="–", float_format=_format_number, border=0, classes="data",
                         escape=True)


# --------------------------------------------------------------------------- sections


def _samples_section(ctx: _Context) -> Section:
    section = Section("samples", "Samples and cells")
    info = ctx.order(query.samples(ctx.catalog), "sample")
    info = info[info["sample"].isin(ctx.samples)].drop(columns=["created_at"])
    section.table("Samples (colour in every figure: see the legend above).", info)
    cells = query.cells(ctx.catalog)
    cells = ctx.order(cells[cells["sample"].isin(ctx.samples)], "cell")
    if cells.empty:
        section.notes.append("No cells are recorded for these samples.")
    else:
        section.table("Coin cells built from these samples; active mass in g is what mAh/g divides by.", cells)
    return section


def _cycling_section(ctx: _Context) -> Section:
    section = Section("cycling", "Cycling: capacity, retention and voltage decay",
                      intro="Discharge capacity, retention against each run's reference cycle, onset discharge "
                            "voltage (first record of the discharge step) and voltage drop = upper cut-off − onset "
                            "(paper Fig. 2d–g).")
    cycles = ctx.order(query.cycles(ctx.catalog, sample=ctx.samples), "cell", "run_id", "cycle")
    if cycles.empty:
        section.notes.append("No cycling data for these samples.")
        return section
    references = {int(r): int(ref) for r, ref in cycles.groupby("run_id")["reference_cycle"].first().items()}
    several_runs = cycles.groupby("cell")["run_id"].nunique().max() > 1
    runs, items = [], []
    for (sample, cell, run_id), run in cycles.groupby(["sample", "cell", "run_id"], sort=False):
        try:
            pct = retention_curve(run, reference_cycle=references[int(run_id)]).to_numpy()
        except ValueError:  # no reference cycle in this run: capacity still plotted, retention not
            pct = np.full(len(run), np.nan)
        runs.append(run.assign(retention_pct=pct))
        items.append((sample, f"{sample} · {cell}" + (f" run {run_id}" if several_runs else "")))
    curves = [Curve(style, run) for style, run in zip(ctx.styles(items), runs)]
    section.figure("cycling", "Capacity, retention, onset discharge voltage and voltage drop against cycle.",
                   fg.cycling_figure(curves))

    # Only cells that reached the cycle and their reference get a retention row.
    has = cycles.groupby(["cell", "run_id"])["cycle"].agg(lambda c: set(c))
    complete = sorted({cell for (cell, run_id), numbers in has.items()
                       if {ctx.cycle, references.get(int(run_id), 2)} <= numbers})
    short = sorted(set(cycles["cell"]) - set(complete))
    if short:
        section.notes.append(f"No retention at cycle {ctx.cycle} for {', '.join(short)}: the cycle or the "
                             "reference cycle is missing; choose another with --cycle.")
    if complete:
        retention = ctx.order(query.retention(ctx.catalog, cycle=ctx.cycle, sample=ctx.samples, cell=complete),
                              "cell")
        section.table(f"Retention at cycle {ctx.cycle} against each run's reference cycle, and cycles to "
                      "95/90/80 % (– where not reached).", retention,
                      keep=("cycles_to_95", "cycles_to_90", "cycles_to_80"))
    key_cycles = sorted({1, *references.values(), ctx.cycle})
    at = cycles[cycles["cycle"].isin(key_cycles)][
        ["sample", "cell", "cycle", "discharge_capacity_mah_g", "coulombic_efficiency_pct",
         "mean_discharge_voltage_v", "onset_discharge_voltage_v", "voltage_drop_v"]]
    section.table(f"Key cycles ({', '.join(map(str, key_cycles))}).", at)
    return section


def _is_k_edge(edge: str) -> bool:
    return edge.upper().endswith("-K") or edge.upper() == "K"


def _is_l3_edge(edge: str) -> bool:
    return edge.upper().endswith("L3")


def _spectra(ctx: _Context, rows: pd.DataFrame, section: Section, label: Callable[[pd.Series], str]) -> list[Curve]:
    """Read the stored normalised spectra of some XAS rows; a missing file becomes a note."""
    from sqlalchemy import select

    from txmdb.db.models import XASMeasurement

    ids = [int(i) for i in rows["measurement_id"]]
    with ctx.catalog.session() as session:
        files = {i: (path, sha) for i, path, sha in session.execute(
            select(XASMeasurement.id, XASMeasurement.spectrum_path, XASMeasurement.spectrum_sha256)
            .where(XASMeasurement.id.in_(ids))).all()}
    spectra, items = [], []
    for _, row in rows.iterrows():
        path, sha256 = files.get(int(row["measurement_id"]), (None, None))
        try:
            data = ctx.catalog.store.read_parquet(path, sha256, columns=["energy_ev", "normalized"])
        except StoreFileError as exc:
            section.notes.append(f"The spectrum of XAS measurement {row['measurement_id']} {exc.problem} ({path}).")
            continue
        data.attrs["edge_energy_ev"] = row["edge_energy_ev"]
        spectra.append(data)
        items.append((row["sample"], label(row)))
    return [Curve(style, data) for style, data in zip(ctx.styles(items), spectra)]


def _xas_label(row: pd.Series, *, mode: bool = True) -> str:
    """"sample (state, mode)"; without the mode where the panel title names it."""
    details = [str(v) for v in (row["state"], row["mode"] if mode else None) if isinstance(v, str) and v]
    return row["sample"] + (f" ({', '.join(details)})" if details else "")


def _mode_order(frame: pd.DataFrame) -> list[str]:
    """Detection modes by probing depth (shallow first), known modes by physics when depth is missing."""
    depth = frame.groupby("mode")["depth_um"].median()

    def key(mode: str):
        known = [m.lower() for m in _MODE_ORDER]
        d = depth.get(mode)
        return (0 if d is not None and np.isfinite(d) else 1, d if d is not None and np.isfinite(d) else 0,
                known.index(mode.lower()) if mode.lower() in known else len(known), mode)

    return sorted(frame["mode"].unique(), key=key)


def _xas_section(ctx: _Context) -> Section:
    section = Section("xas", "X-ray absorption: Ni K edge and L3 edge",
                      intro="Bulk Ni K-edge spectra with the half-height edge energy (dotted) and soft-XAS Ni L3 "
                            "ratios, surface-sensitive electron yield against bulk-sensitive fluorescence "
                            "(paper Fig. 2a–c).")
    xas = ctx.order(query.xas(ctx.catalog, **ctx.where), "edge", "measurement_id")
    if xas.empty:
        section.notes.append(f"No XAS measurements for {ctx.these}.")
        return section
    k_rows = xas[xas["edge"].map(_is_k_edge)]
    if not k_rows.empty:
        curves = _spectra(ctx, k_rows, section, _xas_label)
        edges = k_rows["edge_energy_ev"].dropna()
        window = (edges.min() - 20.0, edges.max() + 30.0) if len(edges) else None
        if curves:
            section.figure("xas_k_edge", "Normalised Ni K-edge spectra; dotted lines mark each edge energy at "
                                         "normalised absorbance 0.5.",
                           fg.spectra_figure([("Ni K edge", curves)], window=window))
    else:
        section.notes.append(f"No K-edge spectra for {ctx.these}.")
    l3_rows = xas[xas["edge"].map(_is_l3_edge)]
    if not l3_rows.empty:
        modes = _mode_order(l3_rows)
        panels = []
        for mode in modes:
            curves = _spectra(ctx, l3_rows[l3_rows["mode"] == mode], section,
                              lambda row: _xas_label(row, mode=False))
            if curves:
                panels.append((f"Ni L3, {mode}", curves))
        if panels:
            section.figure("xas_l3_spectra", "Normalised Ni L3-edge spectra per detection mode.",
                           fg.spectra_figure(panels, edge_lines=False))
        ratios = l3_rows.dropna(subset=["l3_ratio"])
        if not ratios.empty:
            section.figure("xas_l3_ratio", "Ni L3 high/low ratio: a higher ratio means more oxidised Ni; "
                                           "electron yield probes a few nm, fluorescence the bulk.",
                           fg.l3_ratio_figure(ratios, ctx.colours, _mode_order(ratios)))
    else:
        section.notes.append(f"No L3-edge spectra for {ctx.these}.")
    section.table("XAS measurements: half-height edge energy, derivative-maximum e0 and L3 ratio.",
                  xas.drop(columns=_SOURCE_COLUMNS))
    return section


def _xrd_section(ctx: _Context) -> Section:
    section = Section("xrd", "X-ray diffraction",
                      intro="I(003)/I(104) integrated intensity ratio (cation mixing: higher is better ordered) "
                            "and lattice parameters in Å.")
    xrd = ctx.order(query.xrd(ctx.catalog, **ctx.where), "xrd_id")
    if xrd.empty:
        section.notes.append(f"No XRD results for {ctx.these}.")
    else:
        section.table("XRD results.", xrd.drop(columns=_SOURCE_COLUMNS))
    return section


def _read_central_slice(store, path: str | None, sha256: str | None) -> tuple[np.ndarray | None, str | None]:
    """The central z slice of an analysis' edge-energy map, read alone (never the whole map)."""
    try:
        results = store.open_hdf5(path, sha256)
    except StoreFileError as exc:
        return None, f"its results file {exc.problem} ({path})"
    with results as h5:
        if EDGE_MAP_DATASET not in h5:
            return None, f"its results file has no '{EDGE_MAP_DATASET}' dataset"
        dataset = h5[EDGE_MAP_DATASET]
        if dataset.ndim == 3:
            plane = dataset[dataset.shape[0] // 2]
        elif dataset.ndim == 2:
            plane = dataset[()]
        else:
            return None, f"its '{EDGE_MAP_DATASET}' dataset has {dataset.ndim} dimensions"
    return np.asarray(plane, dtype=float), None


def _txm_section(ctx: _Context) -> Section:
    section = Section("txm", "TXM-XANES valence maps",
                      intro="Per-voxel Ni K-edge energy at normalised absorbance 0.5: higher energy, higher Ni "
                            "valence. Maps share one colour scale; the central z slice of each 3-D map is shown "
                            "(paper Fig. 1h–k and 3).")
    scans = ctx.scans
    if scans.empty:
        section.notes.append(f"No TXM scans for {ctx.these}.")
        return section
    section.table("TXM scans and their latest analysis (registration_id: the energy-stack registration it "
                  "applied).",
                  scans[["sample", "state", "scan_id", "ndim", "shape", "n_energies", "voxel_size_nm", "analysis_id",
                         "registration_id", "n_valid_voxels", "n_particles", "mean_edge_ev", "std_edge_ev"]])
    _registration_figure(ctx, section)
    pending = scans[scans["analysis_id"].isna()]
    if len(pending):
        section.notes.append("Not analysed yet (run 'txmdb txm analyze'): scan "
                             + ", ".join(str(s) for s in pending["scan_id"]) + ".")
    styles = ctx.scan_styles()
    if not styles:
        return section

    hist = query.edge_histogram(ctx.catalog, **ctx.where, scan_level=True)
    curves = [Curve(styles[s], g) for s, g in _by_scan(hist, styles)]
    if curves:
        section.figure("edge_histogram", "Distribution of the voxels' edge energy per scan.",
                       fg.edge_histogram_figure(curves))

    files = query.analyses(ctx.catalog, scan=list(styles)).set_index("analysis_id")[["results_path", "results_sha256"]]
    maps = []
    for _, scan in scans.dropna(subset=["analysis_id"]).iterrows():
        path, sha256 = files.loc[int(scan["analysis_id"])]
        plane, problem = _read_central_slice(ctx.catalog.store, path, sha256)
        if plane is None:
            section.notes.append(f"No valence map for scan {scan['scan_id']}: {problem}.")
            continue
        voxel = scan["voxel_size_nm"] if pd.notna(scan["voxel_size_nm"]) else None
        maps.append((styles[int(scan["scan_id"])].label, plane, voxel))
    finite = np.concatenate([p[np.isfinite(p)] for _, p, _ in maps]) if maps else np.empty(0)
    if finite.size:
        # 1st–99th percentile: a few noisy voxels must not wash out the contrast of all maps.
        vmin, vmax = np.percentile(finite, [1, 99])
        if vmax <= vmin:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        section.figure("valence_maps", "Central slice of each valence map (grey: masked voxels).",
                       fg.valence_maps_figure(maps, float(vmin), float(vmax)))
    elif maps:
        section.notes.append("The valence maps' central slices have no valid voxel.")
    _spectral_figures(ctx, section, scans.dropna(subset=["analysis_id"]), files, styles)
    return section


# Values of a map read at a time when streaming it for a histogram (float32: 64 MB).
_MAP_BLOCK_VALUES = 1 << 24
#: Bins of the white-line against edge-energy histogram, per axis, and of the fraction histograms.
JOINT_BINS = 60
FRACTION_BINS = 50


@dataclass
class _ScanMaps:
    """What the spectral figures show of one scan's latest analysis (DESIGN §11)."""

    label: str
    voxel_nm: float | None
    planes: dict[str, np.ndarray]                       # map name → central slice
    joint: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    fractions: dict[str, pd.DataFrame] = field(default_factory=dict)  # reference → histogram rows


def _central(h5, name: str) -> np.ndarray:
    """The central z slice of a 3-D map (a 2-D map whole), read alone."""
    from txmdb.io.maps import map_shape, read_map

    shape = map_shape(h5, name)
    return read_map(h5, name, index=shape[0] // 2) if len(shape) == 3 else read_map(h5, name)


def _slabs(h5, *names: str):
    """Blocks of maps ``names`` side by side, streamed along the first axis (never a whole map)."""
    from txmdb.io.maps import map_shape, map_slabs

    rows = max(1, _MAP_BLOCK_VALUES // max(1, int(np.prod(map_shape(h5, names[0])[1:]))))
    for blocks in zip(*(map_slabs(h5, name, rows) for name in names)):
        yield [block for _, _, block in blocks]


def _joint_histogram(h5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel counts of (edge, white-line) energy pairs where both are valid; bins span their range."""
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    for edge, white in _slabs(h5, "edge", "white_line"):
        both = np.isfinite(edge) & np.isfinite(white)
        if both.any():
            pairs = np.stack([edge[both], white[both]])
            lo, hi = np.minimum(lo, pairs.min(axis=1)), np.maximum(hi, pairs.max(axis=1))
    if not np.all(np.isfinite(lo)):
        return np.zeros((1, 1)), np.array([0.0, 1.0]), np.array([0.0, 1.0])
    hi = np.where(hi > lo, hi, lo + 1.0)
    x_edges, y_edges = (np.linspace(lo[i], hi[i], JOINT_BINS + 1) for i in range(2))
    counts = np.zeros((JOINT_BINS, JOINT_BINS))
    for edge, white in _slabs(h5, "edge", "white_line"):
        both = np.isfinite(edge) & np.isfinite(white)
        counts += np.histogram2d(edge[both], white[both], bins=(x_edges, y_edges))[0]
    return counts, x_edges, y_edges


def _fraction_histogram(h5, name: str) -> pd.DataFrame:
    """Probability per fraction bin over [0, 1] of one fraction map's valid voxels."""
    edges = np.linspace(0.0, 1.0, FRACTION_BINS + 1)
    counts = np.zeros(FRACTION_BINS)
    for (block,) in _slabs(h5, name):
        counts += np.histogram(block[np.isfinite(block)], bins=edges)[0]
    total = counts.sum()
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "probability": counts / total if total else counts})


def _read_spectral_maps(store, path, sha256, label: str, voxel_nm: float | None) -> _ScanMaps | None:
    """The slices and histograms of one analysis' spectral maps; None without any (or without its file)."""
    from txmdb.io.maps import FRACTION, maps_in

    try:
        h5 = store.open_hdf5(path, sha256)
    except StoreFileError:
        return None                                  # the valence maps' note already says why
    with h5:
        names = maps_in(h5)
        spectral = [n for n in names if n == "white_line" or n.startswith(FRACTION) or n == "cluster"]
        if not spectral:
            return None
        shown = [n for n in names if n in ("edge", "white_line", "cluster") or n.startswith(FRACTION)]
        found = _ScanMaps(label, voxel_nm, {n: _central(h5, n) for n in shown})
        if "white_line" in names and "edge" in names:
            found.joint = _joint_histogram(h5)
        for name in names:
            if name.startswith(FRACTION):
                found.fractions[name[len(FRACTION):]] = _fraction_histogram(h5, name)
    return found


def _limits(*planes: np.ndarray) -> tuple[float, float]:
    """1st–99th percentile of the finite values: a few noisy voxels must not wash out the contrast."""
    finite = np.concatenate([p[np.isfinite(p)] for p in planes])
    if not finite.size:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [1, 99]))
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _spectral_figures(ctx: _Context, section: Section, scans: pd.DataFrame, files: pd.DataFrame,
                      styles: dict[int, Style]) -> None:
    """White-line, LCF-fraction and cluster figures (DESIGN §11), each only for the scans whose latest
    analysis has that map; nothing at all when none has."""
    from txmdb.io.maps import FRACTION

    found: dict[int, _ScanMaps] = {}
    for _, scan in scans.iterrows():
        path, sha256 = files.loc[int(scan["analysis_id"])]
        voxel = scan["voxel_size_nm"] if pd.notna(scan["voxel_size_nm"]) else None
        maps = _read_spectral_maps(ctx.catalog.store, path, sha256, styles[int(scan["scan_id"])].label, voxel)
        if maps is not None:
            found[int(scan["analysis_id"])] = maps

    white = [m for m in found.values() if "white_line" in m.planes]
    if white:
        edge_lim = _limits(*(m.planes["edge"] for m in white if "edge" in m.planes))
        wl_lim = _limits(*(m.planes["white_line"] for m in white))
        rows = [[fg.MapPanel(f"{m.label}: edge", m.planes["edge"], m.voxel_nm, "Ni K-edge energy (eV)", *edge_lim),
                 fg.MapPanel(f"{m.label}: white line", m.planes["white_line"], m.voxel_nm,
                             "white-line energy (eV)", *wl_lim)]
                for m in white if "edge" in m.planes]
        section.figure("white_line_maps", "Central slice of the white-line energy map beside the edge-energy map "
                       "of the same analysis: two independent valence proxies (grey: masked voxels).",
                       fg.map_rows_figure(rows))
        joint = [(m.label, *m.joint) for m in white if m.joint is not None]
        if joint:
            section.figure("white_line_vs_edge", "White-line energy against half-height edge energy, every voxel "
                           "with both: where the two proxies agree, voxels lie on a rising band.", fg.joint_histogram_figure(joint))

    lcf = [m for m in found.values() if m.fractions]
    if lcf:
        rows = [[fg.MapPanel(f"{m.label}: {ref}", m.planes[f"{FRACTION}{ref}"], m.voxel_nm, f"fraction {ref} (–)",
                             0.0, 1.0) for ref in m.fractions] for m in lcf]
        section.figure("fraction_maps", "Central slice of each LCF fraction map: the share of each reference "
                       "spectrum in the voxel's normalised spectrum (grey: masked voxels).", fg.map_rows_figure(rows))
        references = list(dict.fromkeys(ref for m in lcf for ref in m.fractions))
        by_label = {style.label: style for style in styles.values()}
        panels = [(ref, [Curve(by_label[m.label], m.fractions[ref]) for m in lcf if ref in m.fractions])
                  for ref in references]
        section.figure("fraction_histograms", "Distribution of each LCF fraction over the valid voxels, per scan.",
                       fg.fraction_histogram_figure(panels))

    clustered = {a: m for a, m in found.items() if "cluster" in m.planes}
    if clustered:
        spectra = query.clusters(ctx.catalog, analysis=list(clustered))
        rows = [(m.label, spectra[spectra["analysis_id"] == a], m.planes["cluster"], m.voxel_nm)
                for a, m in clustered.items()]
        section.figure("clusters", "Phase clusters (k-means on the normalised spectra over the edge window): each "
                       "cluster's mean spectrum and size, and the central slice of the label map in the same "
                       "colours (grey: masked voxels).", fg.cluster_figure(rows))


def _registration_figure(ctx: _Context, section: Section) -> None:
    """Shift against energy per axis for each registered scan: the registration its latest
    analysis applied, else its newest (DESIGN §10). Nothing when no scan is registered."""
    rows = query.registrations(ctx.catalog, sample=ctx.samples)
    rows = rows[rows["scan_id"].isin(list(ctx.scans["scan_id"]))]  # the report's states only
    if rows.empty:
        return
    applied = ctx.scans.set_index("scan_id")["registration_id"]
    chosen = {}
    for scan_id, group in rows.groupby("scan_id"):
        used = applied.get(scan_id, pd.NA)
        ids = set(group["registration_id"])
        chosen[int(scan_id)] = int(used) if pd.notna(used) and int(used) in ids else max(ids)
    styles = ctx.scan_styles(list(chosen))
    curves = [Curve(style, rows[rows["registration_id"] == chosen[scan_id]]) for scan_id, style in styles.items()]
    section.figure("registration_shifts", "Energy-stack registration: how far the sample had moved at each "
                   "energy, per axis (the registration each scan's latest analysis applied, else its newest).",
                   fg.registration_shifts_figure(curves))


def _by_scan(frame: pd.DataFrame, styles: dict[int, Style]):
    """(scan id, rows) for each styled scan present in ``frame``, in style order."""
    groups = dict(tuple(frame.groupby("scan_id"))) if not frame.empty else {}
    return [(s, groups[s]) for s in styles if s in groups]


def _depth_section(ctx: _Context) -> Section:
    section = Section("depth", "Depth profiles",
                      intro="Mean edge energy (± one standard deviation) against distance from the particle "
                            "surface, whole scans: the surface-to-bulk valence picture.")
    styles = ctx.scan_styles()
    profile = query.depth_profile(ctx.catalog, **ctx.where, scan_level=True) if styles else pd.DataFrame()
    if profile.empty:
        section.notes.append(f"No depth profiles for {ctx.these} (no analysed TXM scan).")
        return section
    # The deepest bins hold a handful of voxels near the particle centre; their mean is noise.
    profile = profile[profile["n_voxels"] >= MIN_DEPTH_VOXELS]
    in_nm = profile["depth_lo_nm"].notna().all()
    lo, hi = ("depth_lo_nm", "depth_hi_nm") if in_nm else ("depth_lo_vox", "depth_hi_vox")
    profile = profile.assign(depth=(profile[lo] + profile[hi]) / 2)
    curves = [Curve(styles[s], g) for s, g in _by_scan(profile, styles)]
    section.figure("depth_profile", f"Edge energy against depth below the particle surface (bins of at least "
                                    f"{MIN_DEPTH_VOXELS} voxels).",
                   fg.depth_profile_figure(curves, "nm" if in_nm else "voxel"))
    return section


def _bin_titles(summary: pd.DataFrame) -> dict[int, str]:
    """Panel title per binning factor, with the binned voxel size when all scans agree on it."""
    titles = {}
    for factor, rows in summary.groupby("bin_factor"):
        sizes = rows["voxel_size_nm"].dropna().round(1).unique()
        titles[int(factor)] = f"f = {factor}" + (f" ({sizes[0]:g} nm voxels)" if len(sizes) == 1 else "")
    return titles


def _gradient_unit(ctx: _Context, styles: dict[int, Style]) -> str:
    units = query.analyses(ctx.catalog, scan=list(styles))["gradient_unit"].dropna().unique()
    return " or ".join(sorted(units)) or "eV/nm"


def _theta_section(ctx: _Context) -> Section:
    section = Section("theta", "Valence-gradient orientation θ",
                      intro="θ is the angle between the valence gradient u and the direction from the voxel to "
                            "its particle's centre. Random grains follow the sin θ reference; radially aligned "
                            "grains put more gradients near 90° (tangential), more so at coarser binning f "
                            "(paper Fig. 4b–d).")
    styles = ctx.scan_styles()
    theta = query.theta(ctx.catalog, **ctx.where, scan_level=True) if styles else pd.DataFrame()
    if theta.empty:
        section.notes.append(f"No θ statistics for {ctx.these} (no analysed TXM scan).")
        return section
    summary = query.gradient_summary(ctx.catalog, **ctx.where, scan_level=True)
    titles = _bin_titles(summary)
    factors = sorted(int(f) for f in theta["bin_factor"].unique())

    def curves(weighted: bool, rows: pd.DataFrame, dashed: bool = False) -> list[Curve]:
        picked = rows[rows["weighted"] == weighted]
        out = []
        for s, g in _by_scan(picked, styles):
            style = styles[s]
            if dashed:
                style = Style(style.label + ", |u|-weighted", style.color, "--" if style.linestyle == "-" else ":")
            out.append(Curve(style, g))
        return out

    by_factor = {f: theta[theta["bin_factor"] == f] for f in factors}
    section.figure("theta", "θ distribution per binning factor against the random (sin θ) reference.",
                   fg.theta_figure([(titles.get(f, f"f = {f}"), curves(False, by_factor[f])) for f in factors]))
    section.figure("theta_weighted", "Plain (solid) against |u|-weighted (dashed) θ distributions: weighting "
                                     "by gradient size shows where the large valence gradients point.",
                   fg.theta_figure([(titles.get(f, f"f = {f}"), curves(False, by_factor[f]) +
                                     curves(True, by_factor[f], dashed=True)) for f in factors]))
    if not summary.empty:
        section.figure("tangential_excess", "Tangential excess P(80° ≤ θ < 100°) / P_ref against binning factor "
                                            "(1: random).",
                       fg.tangential_excess_figure([Curve(styles[s], g) for s, g in _by_scan(summary, styles)]))
        section.table("Gradient statistics per scan and binning factor (whole scans).",
                      ctx.order(summary, "scan_id", "bin_factor").drop(columns=["particle"]))
    return section


def _vector_section(ctx: _Context) -> Section:
    section = Section("vectors", "Valence-gradient vector sizes",
                      intro="Distribution of |u| in nine groups of the folded angle φ = min(θ, 180° − θ), and "
                            "mean |u| against θ (paper Fig. 4e–g).")
    styles = ctx.scan_styles()
    hist = query.vector_size_histogram(ctx.catalog, **ctx.where, scan_level=True) if styles else pd.DataFrame()
    profile = query.u_theta(ctx.catalog, **ctx.where, scan_level=True) if styles else pd.DataFrame()
    if hist.empty and profile.empty:
        section.notes.append(f"No vector-size statistics for {ctx.these} (no analysed TXM scan).")
        return section
    unit = _gradient_unit(ctx, styles)
    if not hist.empty:
        factors = sorted(int(f) for f in hist["bin_factor"].unique())
        panels = [(f"{styles[s].label}, f = {f}", g[g["bin_factor"] == f])
                  for s, g in _by_scan(hist, styles) for f in factors]
        section.figure("vector_size", "Distribution of the gradient size |u| per folded θ group, per scan (rows) "
                                      "and binning factor (columns).",
                       fg.vector_size_figure(panels, unit, ncols=len(factors)))
    if not profile.empty:
        factors = sorted(int(f) for f in profile["bin_factor"].unique())
        panels = [(f"f = {f}", [Curve(styles[s], g) for s, g in _by_scan(profile[profile["bin_factor"] == f], styles)])
                  for f in factors]
        section.figure("u_theta", "Mean gradient size |u| against θ.", fg.u_theta_figure(panels, unit))
    return section


def _summary_section(ctx: _Context) -> Section:
    section = Section("summary", "Summary",
                      intro=f"One row per sample and state: its cells' retention and voltage drop at cycle "
                            f"{ctx.cycle} beside its scans' mean edge energy, mean |u| and tangential excess per "
                            "binning factor f.")
    try:
        summary = query.summary(ctx.catalog, **ctx.where, cycle=ctx.cycle)
    except InputError as exc:
        # A cell that never reached the cycle: the rest of the report still stands.
        section.notes.append(f"No summary at cycle {ctx.cycle}: {exc}. Choose a cycle every cell reached "
                             "with --cycle.")
        return section
    if summary.empty:  # its rows are per scan state: none when no scan is in the states asked for
        section.notes.append(f"No summary row for {ctx.these}: none of their TXM scans is in these states.")
        return section
    section.table("txmdb query summary.", ctx.order(summary, "state"))
    return section


#: The report's sections, in reading order.
SECTIONS: list[Callable[[_Context], Section]] = [
    _samples_section, _summary_section, _cycling_section, _xas_section, _xrd_section, _txm_section,
    _depth_section, _theta_section, _vector_section,
]
