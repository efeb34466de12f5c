"""Figures of the comparison report, drawn with matplotlib's object API.

Every function here takes tidy data already selected by :mod:`txmdb.report.html` and
returns a :class:`matplotlib.figure.Figure`; none of them touches the catalogue or files.
Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``: no global
figure registry, no interactive backend, nothing to close, and PNG output goes through
the Agg canvas whatever backend the user configured. matplotlib is imported inside the
functions so that importing this module (and ``txmdb --help``) stays cheap.

Conventions shared by all figures:

* one colour per sample (:func:`sample_colours`), line styles tell apart several
  cells/scans/measurements of one sample;
* every axis label names its unit in parentheses, ``(–)`` for dimensionless numbers;
* a panel without data says so instead of staying blank.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text

#: Line styles for the 1st, 2nd, ... cell/scan/spectrum of one sample.
LINESTYLES = ("-", "--", ":", "-.")

#: Size of one panel in inches; figures grow with their panel count.
PANEL_IN = (4.4, 3.2)

#: Panels of a row of binning factors (three and a legend): narrower, so that the row fits a
#: laptop screen at its natural size instead of being scaled down to small print.
ROW_PANEL_IN = (3.7, 3.0)

#: Resolution of the embedded and written PNGs: sharp on a laptop screen, a few 10 kB each.
DPI = 110

#: Colour map of valence (edge-energy) maps; perceptually uniform so equal steps in eV
#: look like equal steps in colour.
MAP_CMAP = "viridis"


@dataclass(frozen=True)
class Style:
    """How one curve is drawn: legend label, colour (of its sample) and line style."""

    label: str
    color: str
    linestyle: str = "-"


@dataclass
class Curve:
    """One curve of a panel: its style and its data frame."""

    style: Style
    data: "pd.DataFrame"


def sample_colours(samples: Sequence[str]) -> dict[str, str]:
    """A fixed colour per sample, in the order the user named the samples.

    Parameters
    ----------
    samples : sequence of str
        Sample names; the first gets the first colour of matplotlib's ``tab10`` cycle.

    Returns
    -------
    dict
        Sample name → hex colour; more than ten samples reuse the colours (``tab20`` would
        give pale pairs that are hard to tell apart on a white page).
    """
    # tab10 written out: asking matplotlib for it would import matplotlib here.
    tab10 = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
             "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
    return {name: tab10[i % len(tab10)] for i, name in enumerate(samples)}


def new_figure(nrows: int = 1, ncols: int = 1, *, panel: tuple[float, float] = PANEL_IN):
    """An empty figure with an ``nrows × ncols`` grid of axes.

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : ndarray of Axes, shape (nrows, ncols)
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


#: gid of the texts drawn as mathtext on purpose (:func:`_math_label`); all other text is literal.
_MATHTEXT = "txmdb-mathtext"


def png_bytes(fig: "Figure", dpi: int = DPI) -> bytes:
    """The figure rendered as PNG (Agg canvas, white background).

    Every text is drawn as written: names are plain text, so ``rod $x^2$`` is not typeset
    as math and ``$\\undefined$`` does not stop the report, whatever the user's matplotlib
    settings (usetex). Control and bidi characters show as escapes (:mod:`txmdb.textsafe`).
    """
    import matplotlib as mpl
    from matplotlib.text import Text

    from txmdb.textsafe import visible

    for text in fig.findobj(Text):
        text.set_usetex(False)
        if text.get_gid() != _MATHTEXT:
            text.set_parse_math(False)
            text.set_text(visible(text.get_text(), keep="\n"))
    # Tick labels are made while drawing: they take these settings.
    with mpl.rc_context({"text.parse_math": False, "text.usetex": False}):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def _math_label(text: "Text") -> None:
    """Mark one of the figures' own labels as mathtext (png_bytes draws every other text literally)."""
    text.set_gid(_MATHTEXT)


def axis_labels(fig: "Figure") -> list[str]:
    """Every axis and colour-bar label of the figure, in drawing order (for alt text)."""
    labels = []
    for ax in fig.axes:
        for text in (ax.get_xlabel(), ax.get_ylabel()):
            if text and text not in labels:
                labels.append(text)
    return labels


def _no_data(ax: "Axes", message: str = "no data") -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.45")


def _legend(ax: "Axes", **kwargs) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(frameon=False, fontsize="small", **kwargs)


def _figure_legend(fig: "Figure", title: str | None = None) -> None:
    """One legend for a figure whose panels share their curves, outside on the right.

    A legend per panel would repeat itself and, on dense histograms, hide the data.
    """
    seen: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        # Widen the figure by about the legend's width so the panels keep their size.
        longest = max(len(label) for label in [*seen, title or ""])
        fig.set_figwidth(fig.get_figwidth() + 0.6 + 0.065 * longest)
        fig.legend(list(seen.values()), list(seen), loc="outside right center", frameon=False, fontsize="small",
                   title=title, title_fontsize="small")


def _markevery(n: int) -> int:
    """Mark about 40 points per curve: every cycle of a 100-cycle run would become a smear."""
    return max(1, n // 40)


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def _edges(lo: Iterable[float], hi: Iterable[float]) -> np.ndarray:
    """Bin edges from the lower and upper bounds of contiguous bins."""
    lo = np.asarray(list(lo), dtype=float)
    hi = np.asarray(list(hi), dtype=float)
    return np.append(lo, hi[-1]) if len(lo) else lo


# --------------------------------------------------------------------------- cycling


def cycling_figure(curves: Sequence[Curve]) -> "Figure":
    """Capacity, retention, onset discharge voltage and voltage drop against cycle (Fig. 2d–g).

    Parameters
    ----------
    curves : sequence of Curve
        One per cycling run; ``data`` has the columns of :func:`txmdb.query.cycles` plus
        ``retention_pct`` (discharge capacity over that of the run's reference cycle).
    """
    panels = [
        ("discharge_capacity_mah_g", "discharge capacity (mAh/g)", "discharge capacity"),
        ("retention_pct", "capacity retention (%)", "retention"),
        ("onset_discharge_voltage_v", "onset discharge voltage (V)", "onset discharge voltage"),
        ("voltage_drop_v", "voltage drop (V)", "voltage drop"),
    ]
    fig, axes = new_figure(2, 2)
    for ax, (column, ylabel, title) in zip(axes.flat, panels):
        drawn = False
        for curve in curves:
            frame = curve.data.dropna(subset=[column])
            if frame.empty:
                continue
            ax.plot(frame["cycle"], frame[column], color=curve.style.color, linestyle=curve.style.linestyle,
                    marker="o", markersize=3, markevery=_markevery(len(frame)), linewidth=1.2,
                    label=curve.style.label)
            drawn = True
        ax.set_xlabel("cycle number (–)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left", fontsize="medium")
        if not drawn:
            _no_data(ax)
    _figure_legend(fig)
    return fig


# --------------------------------------------------------------------------- XAS


def spectra_figure(panels: Sequence[tuple[str, Sequence[Curve]]], *, edge_lines: bool = True,
                   window: tuple[float, float] | None = None) -> "Figure":
    """Normalised spectra, one panel per group (Fig. 2a–b for L3, bulk K edge).

    Parameters
    ----------
    panels : sequence of (title, curves)
        ``data`` of each curve has ``energy_ev``, ``normalized`` and, in ``attrs``,
        ``edge_energy_ev`` (the half-height energy, drawn as a dotted line when known).
    edge_lines : bool
        Draw the half-height (0.5) level and each spectrum's edge energy.
    window : (float, float), optional
        Energy range shown, in eV; default the whole spectra.
    """
    fig, axes = new_figure(1, len(panels))
    for ax, (title, curves) in zip(axes.flat, panels):
        for curve in curves:
            ax.plot(curve.data["energy_ev"], curve.data["normalized"], color=curve.style.color,
                    linestyle=curve.style.linestyle, linewidth=1.3, label=curve.style.label)
            edge = curve.data.attrs.get("edge_energy_ev")
            if edge_lines and edge is not None and np.isfinite(edge):
                ax.axvline(edge, color=curve.style.color, linestyle=":", linewidth=1)
        if edge_lines:
            ax.axhline(0.5, color="0.6", linewidth=0.8, linestyle="--")
        if window is not None:
            ax.set_xlim(*window)
        ax.set_xlabel("energy (eV)")
        ax.set_ylabel("normalised absorbance (–)")
        ax.set_title(title, loc="left", fontsize="medium")
    # Outside the axes: inside, a legend of several spectra always covers part of the edge.
    _figure_legend(fig)
    return fig


def l3_ratio_figure(frame: "pd.DataFrame", colours: dict[str, str], modes: Sequence[str]) -> "Figure":
    """L3high/L3low ratio per sample and detection mode, surface (TEY) vs bulk (FY) (Fig. 2c).

    Parameters
    ----------
    frame : DataFrame
        Rows of :func:`txmdb.query.xas` with an ``l3_ratio``; several measurements of a
        sample in one mode are averaged.
    colours : dict
        Sample → colour.
    modes : sequence of str
        Detection modes in display order (shallowest probing depth first).
    """
    fig, axes = new_figure(1, 1)
    ax = axes[0, 0]
    samples = [s for s in colours if s in set(frame["sample"])]
    means = frame.groupby(["sample", "mode"])["l3_ratio"].mean()
    depths = frame.groupby("mode")["depth_um"].median()
    width = 0.8 / max(len(samples), 1)
    x = np.arange(len(modes))
    for i, sample in enumerate(samples):
        heights = [means.get((sample, mode), np.nan) for mode in modes]
        ax.bar(x + (i - (len(samples) - 1) / 2) * width, heights, width=width * 0.9, color=colours[sample],
               label=sample)
    ticks = []
    for mode in modes:
        depth = depths.get(mode)
        ticks.append(f"{mode}\n~{depth * 1000:g} nm" if depth is not None and np.isfinite(depth) else mode)
    ax.set_xticks(x, ticks)
    ax.set_xlabel("detection mode (probing depth)")
    _math_label(ax.set_ylabel(r"Ni L$_3$ high / L$_3$ low (–)"))
    ax.set_title("surface vs bulk Ni valence", loc="left", fontsize="medium")
    ax.margins(y=0.25)  # head room for the legend above the bars
    _legend(ax, loc="upper left", ncols=min(len(samples), 3))
    return fig


# --------------------------------------------------------------------------- TXM maps


def edge_histogram_figure(curves: Sequence[Curve]) -> "Figure":
    """Edge-energy distributions of whole scans (Fig. 3), as probability per bin."""
    fig, axes = new_figure(1, 1, panel=(6.0, 3.4))
    ax = axes[0, 0]
    for curve in curves:
        frame = curve.data
        ax.stairs(frame["probability"].to_numpy(float), _edges(frame["edge_lo_ev"], frame["edge_hi_ev"]),
                  color=curve.style.color, linestyle=curve.style.linestyle, linewidth=1.4, label=curve.style.label)
    ax.set_xlabel("Ni K-edge energy at half height (eV)")
    ax.set_ylabel("probability per bin (–)")
    _legend(ax)
    return fig


def valence_maps_figure(maps: Sequence[tuple[str, np.ndarray, float | None]], vmin: float, vmax: float) -> "Figure":
    """Central slices of valence maps on one shared colour scale in eV (Fig. 1h–k).

    Parameters
    ----------
    maps : sequence of (title, slice, voxel_nm)
        2-D edge-energy slices (NaN where masked) and their voxel size in nm, or None.
    vmin, vmax : float
        Colour limits in eV, shared so that equal colours mean equal valence across maps.
    """
    import matplotlib as mpl

    ncols = min(len(maps), 3)
    nrows = -(-len(maps) // ncols)
    fig, axes = new_figure(nrows, ncols, panel=(3.8, 3.5))
    cmap = mpl.colormaps[MAP_CMAP].with_extremes(bad="#e6e6e6")
    image = None
    for ax, (title, plane, voxel_nm) in zip(axes.flat, maps):
        ny, nx = plane.shape
        if voxel_nm:
            extent = (0, nx * voxel_nm / 1000, ny * voxel_nm / 1000, 0)
            unit = "µm"
        else:
            extent = (0, nx, ny, 0)
            unit = "voxel"
        image = ax.imshow(np.ma.masked_invalid(plane), cmap=cmap, vmin=vmin, vmax=vmax, extent=extent,
                          interpolation="nearest")
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"y ({unit})")
        ax.set_title(title, loc="left", fontsize="medium")
    _hide_unused(axes, len(maps))
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85)
        bar.set_label("Ni K-edge energy (eV)")
    return fig


def registration_shifts_figure(curves: Sequence[Curve]) -> "Figure":
    """Shift against energy, one panel per axis (z, y, x; 2-D scans have no z), a curve per scan.

    ``data`` of each curve holds one registration's rows of :func:`txmdb.query.registrations`:
    ``energy_ev`` and ``shift_z`` (NaN in 2-D), ``shift_y``, ``shift_x`` in voxels (DESIGN §10:
    the sample had moved by the shift at that energy).
    """
    names = [a for a in ("z", "y", "x") if any(c.data[f"shift_{a}"].notna().any() for c in curves)]
    fig, axes = new_figure(1, len(names), panel=ROW_PANEL_IN)
    for ax, name in zip(axes.flat, names):
        for curve in curves:
            frame = curve.data.dropna(subset=[f"shift_{name}"])
            if not frame.empty:
                ax.plot(frame["energy_ev"], frame[f"shift_{name}"], color=curve.style.color,
                        linestyle=curve.style.linestyle, marker=".", label=curve.style.label)
        ax.axhline(0.0, color="0.6", linewidth=0.8)
        ax.set_xlabel("energy (eV)")
        ax.set_ylabel(f"shift along {name} (voxels)")
        ax.set_title(f"{name} axis", loc="left", fontsize="medium")
    _figure_legend(fig)
    return fig


def depth_profile_figure(curves: Sequence[Curve], depth_unit: str) -> "Figure":
    """Mean edge energy (± standard deviation) against depth below the particle surface.

    Parameters
    ----------
    curves : sequence of Curve
        ``data`` has ``depth`` (bin centre, in ``depth_unit``), ``mean_edge_ev`` and ``std_edge_ev``.
    depth_unit : str
        "nm", or "voxel" when a scan's voxel size is unknown.
    """
    fig, axes = new_figure(1, 1, panel=(6.0, 3.4))
    ax = axes[0, 0]
    for curve in curves:
        frame = curve.data
        ax.plot(frame["depth"], frame["mean_edge_ev"], color=curve.style.color, linestyle=curve.style.linestyle,
                marker="o", markersize=2.5, label=curve.style.label)
        ax.fill_between(frame["depth"], frame["mean_edge_ev"] - frame["std_edge_ev"],
                        frame["mean_edge_ev"] + frame["std_edge_ev"], color=curve.style.color, alpha=0.12,
                        linewidth=0)
    ax.set_xlabel(f"depth below particle surface ({depth_unit})")
    ax.set_ylabel("mean Ni K-edge energy (eV)")
    _legend(ax)
    return fig


# --------------------------------------------------------------------------- gradients


def theta_panel(ax: "Axes", curves: Sequence[Curve], title: str) -> None:
    """Draw θ histograms and their random reference on one axes (Fig. 4b–d).

    Parameters
    ----------
    ax : Axes
    curves : sequence of Curve
        ``data`` has ``theta_lo``, ``theta_hi``, ``probability`` and ``reference`` per bin.
        The reference of each distinct binning is drawn once, in black: sin θ for 3-D
        scans, flat (Δθ/180°) for 2-D ones.
    title : str
    """
    references: list[tuple[np.ndarray, np.ndarray]] = []
    width = None
    for curve in curves:
        frame = curve.data
        edges = _edges(frame["theta_lo"], frame["theta_hi"])
        width = width or float(edges[1] - edges[0])
        ax.stairs(frame["probability"].to_numpy(float), edges, color=curve.style.color,
                  linestyle=curve.style.linestyle, linewidth=1.4, label=curve.style.label)
        reference = frame["reference"].to_numpy(float)
        if not any(len(r) == len(reference) and np.allclose(r, reference) for r, _ in references):
            references.append((reference, edges))
    # References last: on top of the curves and at the end of the legend.
    for reference, edges in references:
        flat = np.allclose(reference, reference[0])
        ax.stairs(reference, edges, color="black", linestyle=":", linewidth=1.3,
                  label="random, 2-D (flat)" if flat else "random, 3-D (sin θ)")
    if not curves:
        _no_data(ax)
    ax.set_xlim(0, 180)
    ax.set_xticks(range(0, 181, 30))
    # θ is defined in the report text; a long label would collide with its neighbour's.
    ax.set_xlabel("θ (°)")
    ax.set_ylabel(f"probability per {width:g}° bin (–)" if width else "probability per bin (–)")
    ax.set_title(title, loc="left", fontsize="medium")


def theta_figure(panels: Sequence[tuple[str, Sequence[Curve]]]) -> "Figure":
    """One θ panel (see :func:`theta_panel`) per binning factor, side by side, one shared legend."""
    fig, axes = new_figure(1, len(panels), panel=ROW_PANEL_IN)
    for ax, (title, curves) in zip(axes.flat, panels):
        theta_panel(ax, curves, title)
    _figure_legend(fig)
    return fig


def vector_size_figure(panels: Sequence[tuple[str, "pd.DataFrame"]], unit: str, ncols: int) -> "Figure":
    """|u| distributions per folded-θ group φ = min(θ, 180° − θ) (Fig. 4e–f).

    Parameters
    ----------
    panels : sequence of (title, frame)
        Rows of :func:`txmdb.query.vector_size_histogram` for one scan and binning factor.
    unit : str
        Unit of |u|: "eV/nm", or "eV/voxel" for scans without a voxel size.
    ncols : int
        Panels per row (the binning factors).

    Notes
    -----
    Each group is drawn as a probability density (count / group total / bin width): the
    |u| bins end with a wide overflow bin, and plain fractions per bin would draw that tail
    as a tall block. Each panel is cut at the |u| below which 99.5 % of its vectors lie, or
    at the start of the overflow bin if that comes first.
    """
    import matplotlib as mpl

    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(nrows, ncols, panel=(4.0, 3.0))
    cmap = mpl.colormaps["plasma"]
    for ax, (title, frame) in zip(axes.flat, panels):
        groups = list(frame.groupby(["phi_lo", "phi_hi"], sort=True))
        for i, ((lo, hi), group) in enumerate(groups):
            total = group["count"].sum()
            if total <= 0:
                continue
            edges = _edges(group["u_lo"], group["u_hi"])
            density = group["count"].to_numpy(float) / total / np.diff(edges)
            ax.stairs(density, edges, color=cmap(i / max(len(groups) - 1, 1) * 0.9), linewidth=1.1,
                      label=f"{lo:g}–{hi:g}°")
        if groups:
            ax.set_xlim(0, _u_view_limit(frame))
        else:
            _no_data(ax)
        ax.set_xlabel(f"|u| ({unit})")
        ax.set_ylabel(f"probability density (1/({unit}))")
        ax.set_title(title, loc="left", fontsize="medium")
    _hide_unused(axes, len(panels))
    _figure_legend(fig, title="φ = min(θ, 180° − θ)")
    return fig


def _u_view_limit(frame: "pd.DataFrame") -> float:
    """Right end of a |u| axis: where 99.5 % of the vectors lie, but not into the overflow bin.

    The last |u| bin may be an overflow bin far wider than the others (see
    :func:`txmdb.analysis.gradient.u_histogram_edges`); showing all of it squeezes the bulk.
    """
    bins = frame.groupby(["u_lo", "u_hi"])["count"].sum().sort_index()
    lo = bins.index.get_level_values(0).to_numpy(float)
    hi = bins.index.get_level_values(1).to_numpy(float)
    limit = hi[-1]
    widths = hi - lo
    if len(widths) > 2 and widths[-1] > 1.5 * np.median(widths[:-1]):
        limit = lo[-1]
    if bins.sum() > 0:
        cumulative = bins.cumsum().to_numpy(float) / bins.sum()
        limit = min(limit, hi[min(int(np.searchsorted(cumulative, 0.995)), len(hi) - 1)])
    return float(limit)


def u_theta_figure(panels: Sequence[tuple[str, Sequence[Curve]]], unit: str) -> "Figure":
    """Mean |u| against θ, one panel per binning factor (Fig. 4g)."""
    fig, axes = new_figure(1, len(panels), panel=ROW_PANEL_IN)
    for ax, (title, curves) in zip(axes.flat, panels):
        for curve in curves:
            frame = curve.data
            centres = (frame["theta_lo"] + frame["theta_hi"]) / 2
            ax.plot(centres, frame["mean_u"], color=curve.style.color, linestyle=curve.style.linestyle,
                    marker="o", markersize=2.5, label=curve.style.label)
        if not curves:
            _no_data(ax)
        ax.set_xlim(0, 180)
        ax.set_xticks(range(0, 181, 30))
        ax.set_xlabel("θ (°)")
        ax.set_ylabel(f"mean |u| ({unit})")
        ax.set_title(title, loc="left", fontsize="medium")
    _figure_legend(fig)
    return fig


def tangential_excess_figure(curves: Sequence[Curve]) -> "Figure":
    """Tangential excess P(80° ≤ θ < 100°) / P_ref against binning factor, plain and |u|-weighted.

    ``data`` of each curve holds one scan's whole-scan rows of :func:`txmdb.query.gradient_summary`.
    Radially aligned grains are expected above 1 and rising with f, random grains near 1.
    """
    fig, axes = new_figure(1, 2)
    for ax, (column, title) in zip(axes.flat, [("tangential_excess", "plain"),
                                               ("tangential_excess_weighted", "|u|-weighted")]):
        for curve in curves:
            frame = curve.data.dropna(subset=[column])
            ax.plot(frame["bin_factor"], frame[column], color=curve.style.color, linestyle=curve.style.linestyle,
                    marker="o", label=curve.style.label)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="random grains")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("binning factor f (–)")
        ax.set_ylabel("tangential excess (–)")
        ax.set_title(title, loc="left", fontsize="medium")
    _figure_legend(fig)
    return fig


# --------------------------------------------------------------------------- spectral maps (DESIGN §11)

#: Colours of phase clusters 0, 1, … (cluster labels are categories, not a scale).
CLUSTER_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")


@dataclass
class MapPanel:
    """One map slice: title, 2-D values (NaN where masked), voxel size (nm or None) and colour scale."""

    title: str
    plane: np.ndarray
    voxel_nm: float | None
    label: str
    vmin: float
    vmax: float
    cmap: str = MAP_CMAP


def _extent(plane: np.ndarray, voxel_nm: float | None) -> tuple[tuple[float, float, float, float], str]:
    ny, nx = plane.shape
    if voxel_nm:
        return (0, nx * voxel_nm / 1000, ny * voxel_nm / 1000, 0), "µm"
    return (0, nx, ny, 0), "voxel"


def _show_map(ax: "Axes", plane: np.ndarray, voxel_nm: float | None, title: str, **imshow):
    extent, unit = _extent(plane, voxel_nm)
    image = ax.imshow(np.ma.masked_invalid(plane), extent=extent, interpolation="nearest", **imshow)
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    ax.set_title(title, loc="left", fontsize="medium")
    return image


def map_rows_figure(rows: Sequence[Sequence[MapPanel]]) -> "Figure":
    """Map slices side by side, one row per scan, each panel on its own colour scale (with its bar).

    Used for the white-line map beside the edge map and for the fraction maps.
    """
    import matplotlib as mpl

    ncols = max(len(row) for row in rows)
    fig, axes = new_figure(len(rows), ncols, panel=(3.9, 3.3))
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(row):
                ax.set_visible(False)
                continue
            panel = row[c]
            cmap = mpl.colormaps[panel.cmap].with_extremes(bad="#e6e6e6")
            image = _show_map(ax, panel.plane, panel.voxel_nm, panel.title, cmap=cmap, vmin=panel.vmin,
                              vmax=panel.vmax)
            fig.colorbar(image, ax=ax, shrink=0.85).set_label(panel.label)
    return fig


def joint_histogram_figure(panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> "Figure":
    """White-line energy against edge energy, voxel counts on a 2-D grid, one panel per scan.

    Parameters
    ----------
    panels : sequence of (title, counts, edge_bins_ev, white_line_bins_ev)
        ``counts`` of shape (n_edge_bins, n_white_line_bins).
    """
    fig, axes = new_figure(1, len(panels), panel=(4.8, 3.7))
    for ax, (title, counts, x_edges, y_edges) in zip(axes.flat, panels):
        if counts.sum() == 0:
            _no_data(ax, "no voxel with both energies")
        else:
            # empty bins stay white: where no voxel lies is part of the picture
            mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_equal(counts.T, 0), cmap=MAP_CMAP, vmin=0)
            fig.colorbar(mesh, ax=ax, shrink=0.85).set_label("voxels per bin (–)")
            ax.xaxis.get_major_locator().set_params(nbins=5)
        ax.set_xlabel("Ni K-edge energy at half height (eV)")
        ax.set_ylabel("white-line energy (eV)")
        ax.set_title(title, loc="left", fontsize="medium")
    return fig


def fraction_histogram_figure(panels: Sequence[tuple[str, Sequence[Curve]]]) -> "Figure":
    """Distributions of the LCF fractions, one panel per reference, a curve per scan.

    ``data`` of each curve has ``lo``, ``hi`` (fraction bins) and ``probability``.
    """
    fig, axes = new_figure(1, len(panels))
    for ax, (title, curves) in zip(axes.flat, panels):
        for curve in curves:
            frame = curve.data
            ax.stairs(frame["probability"].to_numpy(float), _edges(frame["lo"], frame["hi"]),
                      color=curve.style.color, linestyle=curve.style.linestyle, linewidth=1.4,
                      label=curve.style.label)
        if not curves:
            _no_data(ax)
        ax.set_xlim(0, 1)
        ax.set_xlabel("fraction (–)")
        ax.set_ylabel("probability per bin (–)")
        ax.set_title(title, loc="left", fontsize="medium")
    _figure_legend(fig)
    return fig


def cluster_figure(rows: Sequence[tuple[str, "pd.DataFrame", np.ndarray | None, float | None]]) -> "Figure":
    """Per scan: each phase cluster's mean normalised spectrum, and the central slice of the label map.

    Parameters
    ----------
    rows : sequence of (title, spectra, label_plane, voxel_nm)
        ``spectra``: the scan's rows of :func:`txmdb.query.clusters` (``cluster``, ``energy_ev``,
        ``mean_norm``, ``n_voxels``); ``label_plane``: cluster labels, NaN where masked (None:
        not available).
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap

    fig, axes = new_figure(len(rows), 2, panel=(4.3, 3.3))
    for (title, spectra, plane, voxel_nm), (ax_s, ax_m) in zip(rows, axes):
        k = int(spectra["cluster"].max()) + 1 if len(spectra) else 0
        colours = [CLUSTER_COLOURS[i % len(CLUSTER_COLOURS)] for i in range(max(k, 1))]
        for cluster, group in spectra.groupby("cluster"):
            ax_s.plot(group["energy_ev"], group["mean_norm"], color=colours[int(cluster)], linewidth=1.4,
                      label=f"cluster {int(cluster)} ({int(group['n_voxels'].iloc[0])} voxels)")
        ax_s.axhline(0.5, color="0.6", linewidth=0.8, linestyle="--")
        ax_s.set_xlabel("energy (eV)")
        ax_s.set_ylabel("mean normalised absorbance (–)")
        ax_s.set_title(f"{title}: mean spectra", loc="left", fontsize="medium")
        _legend(ax_s, loc="lower right")
        if plane is None:
            _no_data(ax_m, "no label map")
            ax_m.set_axis_off()
            continue
        cmap = ListedColormap(colours).with_extremes(bad="#e6e6e6")
        image = _show_map(ax_m, plane, voxel_nm, f"{title}: clusters", cmap=cmap,
                          norm=BoundaryNorm(np.arange(len(colours) + 1) - 0.5, len(colours)))
        bar = fig.colorbar(image, ax=ax_m, shrink=0.85, ticks=range(len(colours)))
        bar.set_label("cluster (–)")
    return fig
