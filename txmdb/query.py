"""Cross-sample queries. Every function returns a long, tidy pandas DataFrame.

Statistics come from the latest finished analysis of each scan unless ``analysis`` names one.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
from sqlalchemy import Select, func, select
from sqlalchemy.orm import aliased

from txmdb.db import models as m
from txmdb.errors import TxmdbError


def _frame(catalog, stmt: Select) -> pd.DataFrame:
    with catalog.engine.connect() as conn:
        result = conn.execute(stmt)
        keys = list(result.keys())
        rows = result.fetchall()
    if not rows:
        return pd.DataFrame(columns=keys)  # object columns, so merges on empty results still work
    # Column by column, so list-valued cells (JSON columns) stay single objects.
    return pd.DataFrame({key: [row[i] for row in rows] for i, key in enumerate(keys)}, columns=keys)


def _latest_analyses():
    """analysis ids: the newest 'done' analysis of each scan."""
    return (
        select(func.max(m.Analysis.id).label("id"))
        .where(m.Analysis.status == "done")
        .group_by(m.Analysis.scan_id)
        .scalar_subquery()
    )


def _where_in(stmt: Select, *filters) -> Select:
    """Add ``column IN (values)`` for every ``(column, values)`` whose values are given."""
    for column, values in filters:
        if values:
            stmt = stmt.where(column.in_(_as_list(values)))
    return stmt


def _scan_filters(stmt: Select, *, sample=None, morphology=None, state=None, scan=None) -> Select:
    return _where_in(stmt, (m.Sample.name, sample), (m.Sample.morphology, morphology), (m.TXMScan.state, state),
                     (m.TXMScan.id, scan))


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def _stats(catalog, model, columns: Sequence[str], *, analysis=None, bin=None, weighted=None, particle=None,
           scan_level=False, order: Sequence[str] = (), **filters) -> pd.DataFrame:
    """Rows of a statistics table with sample, scan and analysis beside them."""
    stmt = (
        select(
            m.Sample.name.label("sample"),
            m.TXMScan.state.label("state"),
            m.TXMScan.id.label("scan_id"),
            m.Analysis.id.label("analysis_id"),
            *(getattr(model, c) for c in columns),
            # *_ev_per_nm columns hold eV/voxel for scans of unknown voxel size: say which.
            *([m.Analysis.gradient_unit] if any(c.endswith("_ev_per_nm") for c in columns) else []),
        )
        .join(m.Analysis, m.Analysis.id == model.analysis_id)
        .join(m.TXMScan, m.TXMScan.id == m.Analysis.scan_id)
        .join(m.Sample, m.Sample.id == m.TXMScan.sample_id)
    )
    if analysis:
        stmt = stmt.where(m.Analysis.id.in_(_as_list(analysis)))
    else:
        stmt = stmt.where(m.Analysis.id.in_(_latest_analyses()))
    if bin is not None and hasattr(model, "bin_factor"):
        stmt = stmt.where(model.bin_factor.in_(_as_list(bin)))
    if weighted is not None and hasattr(model, "weighted"):
        stmt = stmt.where(model.weighted.is_(bool(weighted)))
    if scan_level:
        stmt = stmt.where(model.particle.is_(None))
    elif particle is not None:
        stmt = stmt.where(model.particle.in_(_as_list(particle)))
    stmt = _scan_filters(stmt, **filters)
    keys = [m.Sample.name, m.TXMScan.id, m.Analysis.id]
    if hasattr(model, "particle"):
        keys.append(model.particle.is_not(None))  # scan-level rows first
        keys.append(model.particle)
    stmt = stmt.order_by(*keys, *(getattr(model, c) for c in order), model.id)
    frame = _frame(catalog, stmt)
    if "particle" in frame:
        frame["particle"] = frame["particle"].astype("Int64")
    return frame


def theta(catalog, **filters) -> pd.DataFrame:
    """θ histograms: probability per 5° bin with the random reference (particle empty: whole scan)."""
    return _stats(catalog, m.ThetaHistogram,
                  ["particle", "bin_factor", "weighted", "theta_lo", "theta_hi", "probability", "reference"],
                  order=["bin_factor", "weighted", "theta_lo"], **filters)


def vector_size(catalog, **filters) -> pd.DataFrame:
    """|u| statistics in the nine folded θ groups."""
    filters.pop("weighted", None)
    return _stats(catalog, m.VectorSizeStat,
                  ["particle", "bin_factor", "phi_lo", "phi_hi", "n", "mean_u_ev_per_nm", "median_u_ev_per_nm",
                   "p90_u_ev_per_nm"], order=["bin_factor", "phi_lo"], **filters)


def vector_size_histogram(catalog, **filters) -> pd.DataFrame:
    filters.pop("weighted", None)
    return _stats(catalog, m.VectorSizeHistogram,
                  ["particle", "bin_factor", "phi_lo", "phi_hi", "u_lo_ev_per_nm", "u_hi_ev_per_nm", "count"],
                  order=["bin_factor", "phi_lo", "u_lo_ev_per_nm"], **filters)


def u_theta(catalog, **filters) -> pd.DataFrame:
    """Mean |u| against θ."""
    filters.pop("weighted", None)
    return _stats(catalog, m.UThetaProfile, ["particle", "bin_factor", "theta_lo", "theta_hi", "n", "mean_u_ev_per_nm"],
                  order=["bin_factor", "theta_lo"], **filters)


def gradient_summary(catalog, **filters) -> pd.DataFrame:
    filters.pop("weighted", None)
    return _stats(catalog, m.GradientSummary,
                  ["particle", "bin_factor", "voxel_size_nm", "n_vectors", "mean_u_ev_per_nm", "tangential_excess",
                   "tangential_excess_weighted", "kl_divergence", "kl_divergence_weighted"],
                  order=["bin_factor"], **filters)


def edge_histogram(catalog, **filters) -> pd.DataFrame:
    for key in ("weighted", "bin"):
        filters.pop(key, None)
    return _stats(catalog, m.EdgeHistogram, ["particle", "edge_lo_ev", "edge_hi_ev", "count", "probability"],
                  order=["edge_lo_ev"], **filters)


def depth_profile(catalog, **filters) -> pd.DataFrame:
    for key in ("weighted", "bin"):
        filters.pop(key, None)
    return _stats(catalog, m.DepthProfile,
                  ["particle", "depth_lo_vox", "depth_hi_vox", "depth_lo_nm", "depth_hi_nm", "n_voxels",
                   "mean_edge_ev", "std_edge_ev"], order=["depth_lo_vox"], **filters)


def particles(catalog, **filters) -> pd.DataFrame:
    for key in ("weighted", "bin"):
        filters.pop(key, None)
    return _stats(catalog, m.Particle,
                  ["particle", "n_voxels", "centroid_z", "centroid_y", "centroid_x", "equivalent_radius_vox",
                   "equivalent_radius_nm", "mean_edge_ev", "std_edge_ev"], **filters)


def scans(catalog, *, sample=None, morphology=None, state=None, scan=None) -> pd.DataFrame:
    """Scans with their latest analysis (if any)."""
    latest = (
        select(m.Analysis.scan_id, func.max(m.Analysis.id).label("analysis_id"))
        .where(m.Analysis.status == "done")
        .group_by(m.Analysis.scan_id)
        .subquery()
    )
    a = aliased(m.Analysis)
    stmt = (
        select(
            m.Sample.name.label("sample"), m.Sample.morphology, m.TXMScan.state, m.TXMScan.id.label("scan_id"),
            m.TXMScan.layout, m.TXMScan.ndim, m.TXMScan.shape, m.TXMScan.n_energies, m.TXMScan.energy_min_ev,
            m.TXMScan.energy_max_ev, m.TXMScan.voxel_size_nm, m.TXMScan.file_path, m.TXMScan.file_sha256,
            latest.c.analysis_id, a.n_valid_voxels, a.n_particles, a.mean_edge_ev, a.std_edge_ev,
        )
        .join(m.Sample, m.Sample.id == m.TXMScan.sample_id)
        .outerjoin(latest, latest.c.scan_id == m.TXMScan.id)
        .outerjoin(a, a.id == latest.c.analysis_id)
        .order_by(m.Sample.name, m.TXMScan.id)
    )
    frame = _frame(catalog, _scan_filters(stmt, sample=sample, morphology=morphology, state=state, scan=scan))
    frame["analysis_id"] = frame["analysis_id"].astype("Int64")
    frame["shape"] = frame["shape"].map(lambda s: "×".join(map(str, s)) if isinstance(s, list) else s)
    return frame


def analyses(catalog, *, scan=None) -> pd.DataFrame:
    stmt = select(
        m.Analysis.id.label("analysis_id"), m.Analysis.scan_id, m.Analysis.status, m.Analysis.txmdb_version,
        m.Analysis.started_at, m.Analysis.finished_at, m.Analysis.n_valid_voxels, m.Analysis.n_particles,
        m.Analysis.mean_edge_ev, m.Analysis.std_edge_ev, m.Analysis.gradient_unit, m.Analysis.results_path,
        m.Analysis.results_sha256,
    ).order_by(m.Analysis.id)
    if scan:
        stmt = stmt.where(m.Analysis.scan_id.in_(_as_list(scan)))
    return _frame(catalog, stmt)


def _cell_filters(stmt: Select, *, sample=None, cell=None, morphology=None) -> Select:
    return _where_in(stmt, (m.Sample.name, sample), (m.Cell.name, cell), (m.Sample.morphology, morphology))


CYCLE_COLUMNS = [
    "cycle", "charge_capacity_mah", "discharge_capacity_mah", "charge_capacity_mah_g", "discharge_capacity_mah_g",
    "coulombic_efficiency_pct", "charge_energy_mwh", "discharge_energy_mwh", "mean_charge_voltage_v",
    "mean_discharge_voltage_v", "delta_v", "onset_discharge_voltage_v", "voltage_drop_v", "end_charge_voltage_v",
    "end_discharge_voltage_v", "duration_s",
]


def cycles(catalog, *, sample=None, cell=None, morphology=None, cycle=None, run=None) -> pd.DataFrame:
    """Per-cycle metrics of every cycling run."""
    stmt = (
        select(m.Sample.name.label("sample"), m.Cell.name.label("cell"), m.CyclingRun.id.label("run_id"),
               *(getattr(m.Cycle, c) for c in CYCLE_COLUMNS), m.CyclingRun.reference_cycle)
        .join(m.CyclingRun, m.CyclingRun.id == m.Cycle.run_id)
        .join(m.Cell, m.Cell.id == m.CyclingRun.cell_id)
        .join(m.Sample, m.Sample.id == m.Cell.sample_id)
        .order_by(m.Sample.name, m.Cell.name, m.CyclingRun.id, m.Cycle.cycle)
    )
    if cycle is not None:
        stmt = stmt.where(m.Cycle.cycle.in_(_as_list(cycle)))
    if run is not None:
        stmt = stmt.where(m.CyclingRun.id.in_(_as_list(run)))
    return _frame(catalog, _cell_filters(stmt, sample=sample, cell=cell, morphology=morphology))


RETENTION_COLUMNS = ["sample", "cell", "run_id", "reference_cycle", "cycle", "reference_capacity_mah_g", "capacity_mah_g",
                     "retention_pct", "cycles_to_95", "cycles_to_90", "cycles_to_80"]


def retention(catalog, *, cycle: int, reference: int | None = None, **filters) -> pd.DataFrame:
    """Capacity retention at ``cycle`` against the reference cycle (default: the run's, normally 2)."""
    from txmdb.analysis.cycling import retention as retention_of

    frame = cycles(catalog, **filters)
    rows = []
    for (sample, cell, run_id), group in frame.groupby(["sample", "cell", "run_id"], sort=True):
        ref = reference or int(group["reference_cycle"].iloc[0])
        try:
            result = retention_of(group, cycle=cycle, reference_cycle=ref)
        except TxmdbError:
            # This cell has not reached the cycle (or its reference): no figures, not a failed query.
            result = {}
        result = {k: v for k, v in result.items() if k not in ("cycle", "reference_cycle")}
        rows.append({"sample": sample, "cell": cell, "run_id": run_id, "reference_cycle": ref, "cycle": cycle, **result})
    out = pd.DataFrame(rows, columns=RETENTION_COLUMNS)
    for col in ("cycles_to_95", "cycles_to_90", "cycles_to_80"):
        out[col] = out[col].astype("Int64")
    return out


def xas(catalog, *, sample=None, morphology=None, state=None, edge=None, mode=None) -> pd.DataFrame:
    stmt = (
        select(m.Sample.name.label("sample"), m.XASMeasurement.id.label("measurement_id"), m.XASMeasurement.edge,
               m.XASMeasurement.mode, m.XASMeasurement.state, m.XASMeasurement.edge_energy_ev,
               m.XASMeasurement.e0_derivative_ev, m.XASMeasurement.l3_ratio, m.XASMeasurement.depth_um,
               m.XASMeasurement.edge_jump, m.XASMeasurement.file_path)
        .join(m.Sample, m.Sample.id == m.XASMeasurement.sample_id)
        .order_by(m.Sample.name, m.XASMeasurement.edge, m.XASMeasurement.id)
    )
    if state:
        stmt = stmt.where(m.XASMeasurement.state.in_(_as_list(state)))
    if edge:
        stmt = stmt.where(m.XASMeasurement.edge.in_(_as_list(edge)))
    if mode:
        stmt = stmt.where(m.XASMeasurement.mode.in_(_as_list(mode)))
    return _frame(catalog, _cell_filters(stmt, sample=sample, morphology=morphology))


def xrd(catalog, *, sample=None, morphology=None, state=None) -> pd.DataFrame:
    stmt = (
        select(m.Sample.name.label("sample"), m.XRDResult.id.label("xrd_id"), m.XRDResult.state,
               m.XRDResult.i003_i104, m.XRDResult.a_angstrom, m.XRDResult.c_angstrom,
               m.XRDResult.wavelength_angstrom, m.XRDResult.file_path)
        .join(m.Sample, m.Sample.id == m.XRDResult.sample_id)
        .order_by(m.Sample.name, m.XRDResult.id)
    )
    if state:
        stmt = stmt.where(m.XRDResult.state.in_(_as_list(state)))
    return _frame(catalog, _cell_filters(stmt, sample=sample, morphology=morphology))


def samples(catalog, *, morphology=None) -> pd.DataFrame:
    from txmdb.catalog.samples import samples_frame

    with catalog.session() as session:
        return samples_frame(session, morphology=morphology)


def cells(catalog, *, sample=None) -> pd.DataFrame:
    from txmdb.catalog.samples import cells_frame

    with catalog.session() as session:
        return cells_frame(session, sample=sample)


def summary(catalog, *, sample=None, morphology=None, state=None, cycle: int = 100,
            reference: int | None = None) -> pd.DataFrame:
    """One row per sample and state: its cells' retention and voltage drop at ``cycle`` beside its
    scans' mean edge energy, mean |u| and tangential excess for each binning factor.

    Cell figures are means over the sample's cells (cells carry no state, so every state of a
    sample shows them); scan figures are means over the sample's scans in that state.
    """
    info = samples(catalog)
    if sample:
        info = info[info["sample"].isin(_as_list(sample))]
    if morphology:
        info = info[info["morphology"].isin(_as_list(morphology))]
    keep = set(info["sample"])

    cells_at = retention(catalog, cycle=cycle, reference=reference, sample=sample, morphology=morphology)
    cell_columns = ["n_cells", "retention_pct", "capacity_mah_g", "voltage_drop_v", "onset_discharge_voltage_v"]
    if cells_at.empty:
        cell_part = pd.DataFrame(columns=cell_columns, index=pd.Index([], dtype=object, name="sample"))
    else:
        drops = cycles(catalog, sample=sample, morphology=morphology, cycle=cycle)
        per_cell = cells_at.merge(drops[["run_id", "voltage_drop_v", "onset_discharge_voltage_v"]],
                                  on="run_id", how="left")
        cell_part = per_cell.groupby("sample").agg(
            n_cells=("cell", "nunique"), retention_pct=("retention_pct", "mean"),
            capacity_mah_g=("capacity_mah_g", "mean"), voltage_drop_v=("voltage_drop_v", "mean"),
            onset_discharge_voltage_v=("onset_discharge_voltage_v", "mean"),
        )

    scan_rows = scans(catalog, sample=sample, morphology=morphology, state=state)
    grad = gradient_summary(catalog, sample=sample, morphology=morphology, state=state, scan_level=True)
    if not scan_rows.empty:
        scan_rows["state"] = scan_rows["state"].fillna("")
        scan_part = scan_rows.groupby(["sample", "state"]).agg(
            n_scans=("scan_id", "nunique"), mean_edge_ev=("mean_edge_ev", "mean"))
    else:
        scan_part = pd.DataFrame(columns=["n_scans", "mean_edge_ev"],
                                 index=pd.MultiIndex.from_arrays([[], []], names=["sample", "state"]))
    if not grad.empty:
        grad["state"] = grad["state"].fillna("")
        wide = grad.pivot_table(index=["sample", "state"], columns="bin_factor",
                                values=["mean_u_ev_per_nm", "tangential_excess", "tangential_excess_weighted"],
                                aggfunc="mean")
        wide.columns = [f"{name}_f{factor}" for name, factor in wide.columns]
        wide = wide[sorted(wide.columns, key=lambda c: (int(c.rsplit("_f", 1)[1]), c))]
        scan_part = scan_part.join(wide, how="outer")

    rows = scan_part.reset_index()
    rows = rows[rows["sample"].isin(keep)]
    without_scans = sorted(keep - set(rows["sample"]))
    if without_scans and not state:
        rows = pd.concat([rows, pd.DataFrame({"sample": without_scans, "state": ""})], ignore_index=True)
    out = (info[["sample", "morphology", "orientation"]].merge(rows, on="sample", how="inner")
           .merge(cell_part.reset_index(), on="sample", how="left"))
    first = ["sample", "morphology", "orientation", "state", "n_cells", "retention_pct", "capacity_mah_g",
             "voltage_drop_v", "onset_discharge_voltage_v", "n_scans", "mean_edge_ev"]
    for col in first:
        if col not in out:
            out[col] = pd.NA
    out = out[first + [c for c in out.columns if c not in first]]
    out["state"] = out["state"].replace("", pd.NA)
    return out.sort_values(["sample", "state"], na_position="first").reset_index(drop=True)
