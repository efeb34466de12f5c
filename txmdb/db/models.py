"""ORM schema of the whole catalogue (SQLAlchemy 2.x typed models).

Units are part of the column names (``_mah``, ``_v``, ``_ev``, ``_nm``), except for the
gradient magnitudes |u| (``mean_u``, ``u_lo``…): their unit follows the map they are of (a
statistics row's ``map``) and its row's ``gradient_unit`` says it — eV/nm, eV/voxel for a scan
whose voxel size is unknown, 1/nm or 1/voxel for dimensionless maps. ``particle`` columns hold the particle label of
the analysis, NULL for statistics over the whole scan. Large arrays never live here: the
results store holds them and these rows keep their path and SHA-256.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


Timestamp = DateTime(timezone=True)


def _created_by() -> Mapped[Optional[str]]:
    """Who wrote the row: a web account, ``os:<login>`` from a shell, NULL if unknown (txmdb.db.actor)."""
    from txmdb.db.actor import current_actor

    return mapped_column(String(200), default=current_actor)


#: Longest file name kept (most file systems' limit): a longer one is not a file's name.
SOURCE_NAME_LENGTH = 255


def _source_name() -> Mapped[Optional[str]]:
    """The ingested file's own name, as whoever ingested it knew it: the base name of the path a
    command ingested, the name a web upload was sent with (its copy in the store is named by its
    SHA-256); NULL for rows from before it was kept. A name to show, never a path to open."""
    return mapped_column(String(SOURCE_NAME_LENGTH))


class FileRecord:
    """Provenance of an ingested file: where it was, its name, how big, its SHA-256 and when."""

    file_path: Mapped[str] = mapped_column(Text)
    source_name: Mapped[Optional[str]] = _source_name()
    file_size_bytes: Mapped[int] = mapped_column(BigInteger)
    file_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    ingested_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)


class Sample(Base):
    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    material: Mapped[Optional[str]] = mapped_column(String(200))
    morphology: Mapped[Optional[str]] = mapped_column(String(100), index=True)
    orientation: Mapped[Optional[str]] = mapped_column(String(100))
    ni_fraction: Mapped[Optional[float]] = mapped_column(Float)
    mn_fraction: Mapped[Optional[float]] = mapped_column(Float)
    co_fraction: Mapped[Optional[float]] = mapped_column(Float)
    source: Mapped[Optional[str]] = mapped_column(Text)
    notes: Mapped[Optional[str]] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)
    created_by: Mapped[Optional[str]] = _created_by()


    cells: Mapped[list["Cell"]] = relationship(back_populates="sample")


class Cell(Base):
    __tablename__ = "cells"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    active_mass_mg: Mapped[Optional[float]] = mapped_column(Float)
    loading_mg_cm2: Mapped[Optional[float]] = mapped_column(Float)
    area_cm2: Mapped[Optional[float]] = mapped_column(Float)
    active_fraction: Mapped[Optional[float]] = mapped_column(Float)
    electrolyte: Mapped[Optional[str]] = mapped_column(String(200))
    cell_format: Mapped[Optional[str]] = mapped_column(String(100))
    # "discharge/charge" (cathode half cell) or "charge/discharge" (anode half cell).
    ce_convention: Mapped[str] = mapped_column(String(40), default="discharge/charge")
    upper_cutoff_v: Mapped[Optional[float]] = mapped_column(Float)
    lower_cutoff_v: Mapped[Optional[float]] = mapped_column(Float)
    notes: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)
    created_by: Mapped[Optional[str]] = _created_by()


    sample: Mapped[Sample] = relationship(back_populates="cells")


class CyclingRun(FileRecord, Base):
    __tablename__ = "cycling_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id"), index=True)
    file_format: Mapped[str] = mapped_column(String(40))
    n_records: Mapped[int] = mapped_column(Integer)
    n_cycles: Mapped[int] = mapped_column(Integer)
    upper_cutoff_v: Mapped[Optional[float]] = mapped_column(Float)
    reference_cycle: Mapped[int] = mapped_column(Integer, default=2)
    records_path: Mapped[str] = mapped_column(Text)
    records_sha256: Mapped[str] = mapped_column(String(64))
    column_map: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[Optional[str]] = _created_by()

    cycles: Mapped[list["Cycle"]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )


class Cycle(Base):
    __tablename__ = "cycles"
    __table_args__ = (UniqueConstraint("run_id", "cycle", name="uq_cycles_run_cycle"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("cycling_runs.id", ondelete="CASCADE"), index=True)
    cycle: Mapped[int] = mapped_column(Integer)
    charge_capacity_mah: Mapped[Optional[float]] = mapped_column(Float)
    discharge_capacity_mah: Mapped[Optional[float]] = mapped_column(Float)
    charge_capacity_mah_g: Mapped[Optional[float]] = mapped_column(Float)
    discharge_capacity_mah_g: Mapped[Optional[float]] = mapped_column(Float)
    coulombic_efficiency_pct: Mapped[Optional[float]] = mapped_column(Float)
    charge_energy_mwh: Mapped[Optional[float]] = mapped_column(Float)
    discharge_energy_mwh: Mapped[Optional[float]] = mapped_column(Float)
    mean_charge_voltage_v: Mapped[Optional[float]] = mapped_column(Float)
    mean_discharge_voltage_v: Mapped[Optional[float]] = mapped_column(Float)
    delta_v: Mapped[Optional[float]] = mapped_column(Float)
    onset_discharge_voltage_v: Mapped[Optional[float]] = mapped_column(Float)
    voltage_drop_v: Mapped[Optional[float]] = mapped_column(Float)
    end_charge_voltage_v: Mapped[Optional[float]] = mapped_column(Float)
    end_discharge_voltage_v: Mapped[Optional[float]] = mapped_column(Float)
    duration_s: Mapped[Optional[float]] = mapped_column(Float)

    run: Mapped[CyclingRun] = relationship(back_populates="cycles")


class XASMeasurement(FileRecord, Base):
    """A spectrum of a sample, or a named reference spectrum (``reference_name``; LCF, DESIGN
    §11) that belongs to no sample: exactly one of the two is set."""

    __tablename__ = "xas_measurements"
    __table_args__ = (
        CheckConstraint("(sample_id IS NULL) <> (reference_name IS NULL)", name="sample_or_reference"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[Optional[int]] = mapped_column(ForeignKey("samples.id"), index=True)
    reference_name: Mapped[Optional[str]] = mapped_column(String(100), unique=True)
    edge: Mapped[str] = mapped_column(String(20))
    mode: Mapped[str] = mapped_column(String(20))
    state: Mapped[Optional[str]] = mapped_column(String(100), index=True)
    depth_um: Mapped[Optional[float]] = mapped_column(Float)
    edge_energy_ev: Mapped[Optional[float]] = mapped_column(Float)
    e0_derivative_ev: Mapped[Optional[float]] = mapped_column(Float)
    edge_jump: Mapped[Optional[float]] = mapped_column(Float)
    l3_ratio: Mapped[Optional[float]] = mapped_column(Float)
    n_points: Mapped[int] = mapped_column(Integer)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    spectrum_path: Mapped[str] = mapped_column(Text)
    spectrum_sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[Optional[str]] = _created_by()


class XRDResult(Base):
    __tablename__ = "xrd_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    state: Mapped[Optional[str]] = mapped_column(String(100), index=True)
    i003_i104: Mapped[Optional[float]] = mapped_column(Float)
    a_angstrom: Mapped[Optional[float]] = mapped_column(Float)
    c_angstrom: Mapped[Optional[float]] = mapped_column(Float)
    wavelength_angstrom: Mapped[Optional[float]] = mapped_column(Float)
    file_path: Mapped[Optional[str]] = mapped_column(Text)
    source_name: Mapped[Optional[str]] = _source_name()
    file_size_bytes: Mapped[Optional[int]] = mapped_column(BigInteger)
    file_sha256: Mapped[Optional[str]] = mapped_column(String(64), unique=True)  # NULL for typed-in values
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)
    created_by: Mapped[Optional[str]] = _created_by()



class TXMScan(FileRecord, Base):
    __tablename__ = "txm_scans"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    state: Mapped[Optional[str]] = mapped_column(String(100), index=True)
    layout: Mapped[str] = mapped_column(String(40))
    data_path: Mapped[str] = mapped_column(Text)
    energy_path: Mapped[str] = mapped_column(Text)
    white_path: Mapped[Optional[str]] = mapped_column(Text)
    dark_path: Mapped[Optional[str]] = mapped_column(Text)
    ndim: Mapped[int] = mapped_column(Integer)  # spatial dimensions: 2 or 3
    shape: Mapped[list[Any]] = mapped_column()  # (n_energy, [z,] y, x)
    dtype: Mapped[str] = mapped_column(String(20))
    n_energies: Mapped[int] = mapped_column(Integer)
    energy_min_ev: Mapped[float] = mapped_column(Float)
    energy_max_ev: Mapped[float] = mapped_column(Float)
    energies_ev: Mapped[list[Any]] = mapped_column()  # sorted, in eV
    voxel_size_nm: Mapped[Optional[float]] = mapped_column(Float)
    created_by: Mapped[Optional[str]] = _created_by()
    # the file's stat identity when its SHA-256 was last computed and matched (txmdb.io.files.identity_text);
    # while the file still has it, analyses and registrations trust the SHA-256 instead of hashing again
    file_identity: Mapped[Optional[str]] = mapped_column(String(120))

    analyses: Mapped[list["Analysis"]] = relationship(back_populates="scan")
    registrations: Mapped[list["Registration"]] = relationship(back_populates="scan")


class Registration(Base):
    """One translation per energy of a scan's stack (DESIGN §10), estimated once and reused.

    Its shifts are rows of ``registration_shifts``; ``input_sha256`` is the scan file it was
    estimated from, ``accepted_poor`` says the user stored it despite energies below the
    quality threshold or beyond the maximum shift.
    """

    __tablename__ = "registrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("txm_scans.id"), index=True)
    method: Mapped[str] = mapped_column(String(80))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reference_index: Mapped[int] = mapped_column(Integer)
    reference_energy_ev: Mapped[float] = mapped_column(Float)
    max_shift_vox: Mapped[float] = mapped_column(Float)
    accepted_poor: Mapped[bool] = mapped_column(Boolean, default=False)
    txmdb_version: Mapped[str] = mapped_column(String(40))
    input_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)
    elapsed_s: Mapped[Optional[float]] = mapped_column(Float)
    created_by: Mapped[Optional[str]] = _created_by()

    scan: Mapped[TXMScan] = relationship(back_populates="registrations")
    shifts: Mapped[list["RegistrationShift"]] = relationship(
        back_populates="registration",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="RegistrationShift.energy_index",
    )


class RegistrationShift(Base):
    """s_e in voxels: the sample moved by s_e at energy e, registered_e(x) = raw_e(x + s_e)."""

    __tablename__ = "registration_shifts"
    __table_args__ = (
        UniqueConstraint("registration_id", "energy_index", name="uq_registration_shifts_registration_energy"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    registration_id: Mapped[int] = mapped_column(ForeignKey("registrations.id", ondelete="CASCADE"), index=True)
    energy_index: Mapped[int] = mapped_column(Integer)  # into the scan's sorted energies
    energy_ev: Mapped[float] = mapped_column(Float)
    shift_z: Mapped[Optional[float]] = mapped_column(Float)  # NULL for 2-D stacks
    shift_y: Mapped[float] = mapped_column(Float)
    shift_x: Mapped[float] = mapped_column(Float)
    quality: Mapped[Optional[float]] = mapped_column(Float)

    registration: Mapped[Registration] = relationship(back_populates="shifts")


class Analysis(Base):
    __tablename__ = "analyses"
    # Each scan's newest finished analysis, which every statistics query looks up (txmdb.query).
    __table_args__ = (Index("ix_analyses_scan_status_id", "scan_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("txm_scans.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)  # running | done | failed
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    txmdb_version: Mapped[str] = mapped_column(String(40))
    input_sha256: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(Timestamp)
    timings_s: Mapped[dict[str, Any]] = mapped_column(default=dict)
    results_path: Mapped[Optional[str]] = mapped_column(Text)
    results_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    error: Mapped[Optional[str]] = mapped_column(Text)
    # The process running it (while 'running'): db check tells a live analysis from a killed one.
    host: Mapped[Optional[str]] = mapped_column(String(255))
    pid: Mapped[Optional[int]] = mapped_column(Integer)
    gradient_unit: Mapped[str] = mapped_column(String(20), default="eV/nm")
    n_valid_voxels: Mapped[Optional[int]] = mapped_column(BigInteger)
    n_particles: Mapped[Optional[int]] = mapped_column(Integer)
    mean_edge_ev: Mapped[Optional[float]] = mapped_column(Float)
    std_edge_ev: Mapped[Optional[float]] = mapped_column(Float)
    # The registration applied while reading the stack; NULL: the stack as it is.
    registration_id: Mapped[Optional[int]] = mapped_column(ForeignKey("registrations.id"), index=True)
    created_by: Mapped[Optional[str]] = _created_by()

    scan: Mapped[TXMScan] = relationship(back_populates="analyses")


def _stats_fk() -> Mapped[int]:
    return mapped_column(ForeignKey("analyses.id", ondelete="CASCADE"), index=True)


def _map_column() -> Mapped[str]:
    """The map a statistics row is of (``edge``, ``white_line``, ``fraction:NAME``…, txmdb.io.maps);
    rows from before maps had names are of the edge map."""
    return mapped_column(String(200), default="edge", server_default="edge")


def _gradient_unit_column() -> Mapped[str]:
    """Unit of the row's |u| values: the map's unit per nm, or per voxel when the voxel size is unknown
    (eV/nm, eV/voxel, 1/nm or 1/voxel)."""
    return mapped_column(String(20), default="eV/nm")


class Particle(Base):
    __tablename__ = "particles"
    __table_args__ = (UniqueConstraint("analysis_id", "particle", name="uq_particles_analysis_particle"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = _stats_fk()
    particle: Mapped[int] = mapped_column(Integer)
    map: Mapped[str] = _map_column()
    n_voxels: Mapped[int] = mapped_column(Integer)
    centroid_z: Mapped[Optional[float]] = mapped_column(Float)  # voxel index units; NULL in 2D
    centroid_y: Mapped[float] = mapped_column(Float)
    centroid_x: Mapped[float] = mapped_column(Float)
    equivalent_radius_vox: Mapped[float] = mapped_column(Float)
    equivalent_radius_nm: Mapped[Optional[float]] = mapped_column(Float)
    mean_edge_ev: Mapped[float] = mapped_column(Float)
    std_edge_ev: Mapped[float] = mapped_column(Float)


class EdgeHistogram(Base):
    __tablename__ = "edge_histograms"

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = _stats_fk()
    particle: Mapped[Optional[int]] = mapped_column(Integer)
    map: Mapped[str] = _map_column()
    edge_lo_ev: Mapped[float] = mapped_column(Float)
    edge_hi_ev: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float] = mapped_column(Float)


class DepthProfile(Base):
    __tablename__ = "depth_profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = _stats_fk()
    particle: Mapped[Optional[int]] = mapped_column(Integer)
    map: Mapped[str] = _map_column()
    depth_lo_vox: Mapped[float] = mapped_column(Float)
    depth_hi_vox: Mapped[float] = mapped_column(Float)
    depth_lo_nm: Mapped[Optional[float]] = mapped_column(Float)
    depth_hi_nm: Mapped[Optional[float]] = mapped_column(Float)
    n_voxels: Mapped[int] = mapped_column(Integer)
    mean_edge_ev: Mapped[float] = mapped_column(Float)
    std_edge_ev: Mapped[float] = mapped_column(Float)


class ThetaHistogram(Base):
    __tablename__ = "theta_histograms"
    __table_args__ = (Index("ix_theta_histograms_analysis_bin", "analysis_id", "bin_factor", "weighted"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = _stats_fk()
    particle: Mapped[Optional[int]] = mapped_column(Integer)
    map: Mapped[str] = _map_column()
    bin_factor: Mapped[int] = mapped_column(Integer)
    weighted: Mapped[bool] = mapped_column(Boolean)
    theta_lo: Mapped[float] = mapped_column(Float)
    theta_hi: Mapped[float] = mapped_column(Float)
    probability: Mapped[float] = mapped_column(Float)
    reference: Mapped[float] = mapped_column(Float)


class GradientSummary(Base):
    """Per analysis, binning factor and particle (NULL: whole scan)."""

    __tablename__ = "gradient_summaries"
    __table_args__ = (Index("ix_gradient_summaries_analysis_bin", "analysis_id", "bin_factor"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = _stats_fk()
    particle: Mapped[Optional[int]] = mapped_column(Integer)
    map: Mapped[str] = _map_column()
    bin_factor: Mapped[int] = mapped_column(Integer)
    voxel_size_nm: Mapped[Optional[float]] = mapped_column(Float)  # f·d
    n_vectors: Mapped[int] = mapped_column(Integer)
    mean_u: Mapped[Optional[float]] = mapped_column(Float)
    tangential_excess: Mapped[Optional[float]] = mapped_column(Float)
    tangential_excess_weighted: Mapped[Optional[float]] = mapped_column(Float)
    kl_divergence: Mapped[Optional[float]] = mapped_column(Float)
    kl_divergence_weighted: Mapped[Optional[float]] = mapped_column(Float)
    gradient_unit: Mapped[str] = _gradient_unit_column()


class VectorSizeStat(Base):
    """|u| statistics in the nine folded θ groups φ = min(θ, 180° − θ)."""

    __tablename__ = "vector_size_stats"

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = _stats_fk()
    particle: Mapped[Optional[int]] = mapped_column(Integer)
    map: Mapped[str] = _map_column()
    bin_factor: Mapped[int] = mapped_column(Integer)
    phi_lo: Mapped[float] = mapped_column(Float)
    phi_hi: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    mean_u: Mapped[Optional[float]] = mapped_column(Float)
    median_u: Mapped[Optional[float]] = mapped_column(Float)
    p90_u: Mapped[Optional[float]] = mapped_column(Float)
    gradient_unit: Mapped[str] = _gradient_unit_column()


class VectorSizeHistogram(Base):
    __tablename__ = "vector_size_histograms"

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = _stats_fk()
    particle: Mapped[Optional[int]] = mapped_column(Integer)
    map: Mapped[str] = _map_column()
    bin_factor: Mapped[int] = mapped_column(Integer)
    phi_lo: Mapped[float] = mapped_column(Float)
    phi_hi: Mapped[float] = mapped_column(Float)
    u_lo: Mapped[float] = mapped_column(Float)
    u_hi: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
    gradient_unit: Mapped[str] = _gradient_unit_column()


class UThetaProfile(Base):
    """Mean |u| against θ."""

    __tablename__ = "u_theta_profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = _stats_fk()
    particle: Mapped[Optional[int]] = mapped_column(Integer)
    map: Mapped[str] = _map_column()
    bin_factor: Mapped[int] = mapped_column(Integer)
    theta_lo: Mapped[float] = mapped_column(Float)
    theta_hi: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    mean_u: Mapped[Optional[float]] = mapped_column(Float)
    gradient_unit: Mapped[str] = _gradient_unit_column()


class MapSummary(Base):
    """Per analysis, map and particle (NULL: whole scan): the map's values over the particle voxels
    where it is valid (population std; percentiles by numpy's linear interpolation)."""

    __tablename__ = "map_summaries"

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = _stats_fk()
    particle: Mapped[Optional[int]] = mapped_column(Integer)
    map: Mapped[str] = _map_column()
    n_valid: Mapped[int] = mapped_column(BigInteger)
    mean: Mapped[Optional[float]] = mapped_column(Float)
    std: Mapped[Optional[float]] = mapped_column(Float)
    p05: Mapped[Optional[float]] = mapped_column(Float)
    p50: Mapped[Optional[float]] = mapped_column(Float)
    p95: Mapped[Optional[float]] = mapped_column(Float)


class ClusterSpectrum(Base):
    """Phase clusters of an analysis (DESIGN §11): each cluster's size and mean normalised spectrum
    over the edge window, one row per cluster and energy (txmdb.analysis.clusters)."""

    __tablename__ = "cluster_spectra"
    __table_args__ = (UniqueConstraint("analysis_id", "cluster", "energy_index",
                                       name="uq_cluster_spectra_analysis_cluster_energy"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = _stats_fk()
    cluster: Mapped[int] = mapped_column(Integer)
    energy_index: Mapped[int] = mapped_column(Integer)  # into the scan's sorted energies
    energy_ev: Mapped[float] = mapped_column(Float)
    mean_norm: Mapped[Optional[float]] = mapped_column(Float)  # NULL: a cluster no voxel was assigned to
    n_voxels: Mapped[int] = mapped_column(BigInteger)


class PCAVariance(Base):
    """Explained-variance ratio of each principal component of the spectra the clusters were fitted on."""

    __tablename__ = "pca_variance"
    __table_args__ = (UniqueConstraint("analysis_id", "component", name="uq_pca_variance_analysis_component"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = _stats_fk()
    component: Mapped[int] = mapped_column(Integer)  # 1-based
    explained_variance_ratio: Mapped[float] = mapped_column(Float)


class HarvestedFile(Base):
    """A file the watcher saw (txmdb.harvest, DESIGN §12): what it was when last read, and what became of it.

    ``status`` is one of vocabulary.HARVEST_STATUSES; ``record_kind``/``record_id`` name the row it
    became (a table name and its id). A file that changes after it was ingested is not ingested
    again: ``changed_after_ingest`` flags it. ``missing_reference``: it failed because the sample or
    cell it names does not exist yet, and is retried once that exists.
    """

    __tablename__ = "harvested_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    rule: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    size_bytes: Mapped[Optional[int]] = mapped_column(BigInteger)
    mtime: Mapped[Optional[float]] = mapped_column(Float)  # seconds since the epoch, as stat gives it
    sha256: Mapped[Optional[str]] = mapped_column(String(64))
    error: Mapped[Optional[str]] = mapped_column(Text)
    missing_reference: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_after_ingest: Mapped[bool] = mapped_column(Boolean, default=False)
    record_kind: Mapped[Optional[str]] = mapped_column(String(40))
    record_id: Mapped[Optional[int]] = mapped_column(Integer)
    first_seen: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)
    updated: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now, onupdate=_now)


class CatalogueIdentity(Base):
    """The catalogue's own id (one row, made by its migration): its results store carries it
    in an owner mark, so no other catalogue writes, checks or repairs that store."""

    __tablename__ = "catalogue_identity"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)


class User(Base):
    """A web account (DESIGN §12): its role, Argon2 password hash, and whether it may sign in."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'editor', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(Text)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)
    created_by: Mapped[Optional[str]] = _created_by()


class ApiToken(Base):
    """An API token: only its HMAC-SHA-256 under the catalogue's web key is kept (txmdb.accounts)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)
    expires_at: Mapped[Optional[dt.datetime]] = mapped_column(Timestamp)  # NULL: until the account is disabled


class WebSession(Base):
    """A signed-in browser: the cookie holds a random secret, this row its HMAC (so logout and
    disabling an account end it at once, on every server sharing the catalogue)."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)


class LoginAttempt(Base):
    """One try at the login form, kept for the rate limit (per account name and per address)."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username_at", "username", "attempted_at"),
        Index("ix_login_attempts_remote_at", "remote", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(200))
    remote: Mapped[str] = mapped_column(String(100))
    attempted_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)
    succeeded: Mapped[bool] = mapped_column(Boolean)


class WebKey(Base):
    """The catalogue's key of API-token, session and CSRF HMACs (one row, made by its migration)."""

    __tablename__ = "web_key"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key_hex: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)


class ReadableJSON(TypeDecorator):
    """JSON whose stored text that is not JSON (a row edited by hand: SQLite does not check)
    reads back as that text instead of raising while rows load, so one such job row cannot
    stop every worker's claim, ``txmdb jobs`` or ``cancel`` (the job then fails naming it)."""

    impl = JSON
    cache_ok = True

    def result_processor(self, dialect, coltype):
        decode = self.impl_instance.dialect_impl(dialect).result_processor(dialect, coltype)
        if decode is None:
            return None

        def process(value):
            try:
                return decode(value)
            except ValueError:
                return value
        return process


class Job(Base):
    """A durable job (DESIGN §12): one analysis or registration of a scan, run by ``txmdb worker``.

    ``parameters`` are the options of ``txm analyze`` / ``txm register`` as they are spelt
    there (txmdb.options), ``result`` names what the job made (``analysis_id`` or
    ``registration_id``). A running job is its ``worker``'s (``host:pid``) until
    ``lease_expires_at``; the worker renews the lease while it works, and a job whose lease
    passed is queued again (or failed after ``max_attempts``) by the next worker that looks.
    ``after_job_id``: a job that must be done first (a registration before its analysis).
    """

    __tablename__ = "jobs"
    __table_args__ = (
        # a worker's claim: the oldest queued job; its sweep: running jobs whose lease passed
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # vocabulary.JOB_KINDS
    parameters: Mapped[dict[str, Any]] = mapped_column(ReadableJSON, default=dict)
    scan_id: Mapped[int] = mapped_column(ForeignKey("txm_scans.id"), index=True)
    after_job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="queued")  # vocabulary.JOB_STATUSES
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker: Mapped[Optional[str]] = mapped_column(String(300))  # host:pid while running, then the last one
    lease_expires_at: Mapped[Optional[dt.datetime]] = mapped_column(Timestamp)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=_now)
    started_at: Mapped[Optional[dt.datetime]] = mapped_column(Timestamp)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(Timestamp)
    error: Mapped[Optional[str]] = mapped_column(Text)
    result: Mapped[Optional[dict[str, Any]]] = mapped_column(ReadableJSON)
    created_by: Mapped[Optional[str]] = mapped_column(String(200))


def data_columns(model: type[Base]) -> tuple[str, ...]:
    """The model's columns without its own id and its keys to other rows, in declaration order.

    These are what a kernel computes for a row (``Cycle``, the statistics tables): queries,
    kernels' frames and catalogue inserts take their column lists from here.
    """
    return tuple(c.name for c in model.__table__.columns
                 if not c.primary_key and not c.foreign_keys and c.name != "created_by")  # provenance, not data


# Tables the TXM pipeline fills, keyed by the name of the DataFrame it returns.
STATISTICS_TABLES = {
    "particles": Particle,
    "edge_histograms": EdgeHistogram,
    "depth_profiles": DepthProfile,
    "theta_histograms": ThetaHistogram,
    "gradient_summaries": GradientSummary,
    "vector_size_stats": VectorSizeStat,
    "vector_size_histograms": VectorSizeHistogram,
    "u_theta_profiles": UThetaProfile,
    "map_summaries": MapSummary,
}

# Tables an analysis with phase clusters fills (txmdb.analysis.clusters), by the name of its DataFrame.
CLUSTER_TABLES = {
    "cluster_spectra": ClusterSpectrum,
    "pca_variance": PCAVariance,
}


#: The tables that record an ingested file (:class:`FileRecord`'s columns), and what one row is.
INGESTED_FILES = ((TXMScan, "TXM scan"), (CyclingRun, "cycling run"), (XASMeasurement, "XAS measurement"),
                  (XRDResult, "XRD result"))
