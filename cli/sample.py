"""``txmdb sample …`` and ``txmdb cell …``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from txmdb.cli._common import (
    FormatOption, OutputFormat, OutputOption, catalog, echo, emit_table, field_value_table,
)

sample_app = typer.Typer(help="Record and list samples.", no_args_is_help=True)
cell_app = typer.Typer(help="Record and list coin cells.", no_args_is_help=True)


@sample_app.command("add")
def sample_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Unique sample name."),
    material: Optional[str] = typer.Option(None, help="Material, e.g. LiNi0.6Mn0.2Co0.2O2."),
    morphology: Optional[str] = typer.Option(None, help="Morphology, e.g. rod or gravel."),
    orientation: Optional[str] = typer.Option(None, help="Grain orientation, e.g. radial or random."),
    ni: Optional[float] = typer.Option(None, help="Ni fraction of the transition metals (0–1)."),
    mn: Optional[float] = typer.Option(None, help="Mn fraction (0–1)."),
    co: Optional[float] = typer.Option(None, help="Co fraction (0–1)."),
    source: Optional[str] = typer.Option(None, help="Provenance: synthesis batch, supplier, paper."),
    notes: Optional[str] = typer.Option(None, help="Free text."),
    meta: Optional[List[str]] = typer.Option(None, help="Extra metadata KEY=VALUE (repeatable)."),
) -> None:
    """Add a sample."""
    from txmdb.catalog.samples import add_sample, parse_meta

    extra = parse_meta(meta)
    cat = catalog(ctx)
    with cat.session() as session:
        sample = add_sample(
            session, name, meta=extra, material=material, morphology=morphology, orientation=orientation,
            ni_fraction=ni, mn_fraction=mn, co_fraction=co, source=source, notes=notes,
        )
        echo(f"sample {sample.name} added (id {sample.id})")


@sample_app.command("list")
def sample_list(
    ctx: typer.Context,
    morphology: Optional[str] = typer.Option(None, help="Only samples of this morphology."),
    fmt: OutputFormat = FormatOption,
    output: Optional[Path] = OutputOption,
) -> None:
    """List samples."""
    from txmdb.catalog.samples import samples_frame

    with catalog(ctx).session() as session:
        emit_table(samples_frame(session, morphology=morphology), fmt, output)


@sample_app.command("show")
def sample_show(ctx: typer.Context, name: str = typer.Argument(..., help="Sample name."),
                fmt: OutputFormat = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """Show one sample and its cells."""
    from txmdb.catalog.samples import cells_frame, get_sample, samples_frame

    with catalog(ctx).session() as session:
        get_sample(session, name)
        frame = samples_frame(session)
        emit_table(field_value_table(frame[frame["sample"] == name]), fmt, output)
        cells = cells_frame(session, sample=name)
        if fmt is OutputFormat.table and output is None:
            echo("\ncells:")
            emit_table(cells)


@cell_app.command("add")
def cell_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Unique cell name."),
    sample: str = typer.Option(..., help="Sample the cathode is made of."),
    active_mass_mg: Optional[float] = typer.Option(None, help="Active material mass, mg."),
    loading_mg_cm2: Optional[float] = typer.Option(None, help="Electrode loading, mg/cm²."),
    area_cm2: Optional[float] = typer.Option(None, help="Electrode area, cm²."),
    active_fraction: Optional[float] = typer.Option(None, help="Active-material mass fraction (0–1]."),
    electrolyte: Optional[str] = typer.Option(None, help="Electrolyte."),
    cell_format: Optional[str] = typer.Option(None, "--format-name", help="Cell format, e.g. CR2032."),
    ce_convention: Optional[str] = typer.Option(None, help="'discharge/charge' (cathode half cell, default) or 'charge/discharge'."),
    upper_cutoff_v: Optional[float] = typer.Option(None, help="Upper cut-off voltage, V."),
    lower_cutoff_v: Optional[float] = typer.Option(None, help="Lower cut-off voltage, V."),
    notes: Optional[str] = typer.Option(None, help="Free text."),
) -> None:
    """Add a coin cell made from a sample."""
    from txmdb.catalog.samples import add_cell

    cat = catalog(ctx)
    with cat.session() as session:
        cell = add_cell(
            session, name, sample=sample, active_mass_mg=active_mass_mg, loading_mg_cm2=loading_mg_cm2,
            area_cm2=area_cm2, active_fraction=active_fraction, electrolyte=electrolyte, cell_format=cell_format,
            ce_convention=ce_convention, upper_cutoff_v=upper_cutoff_v, lower_cutoff_v=lower_cutoff_v, notes=notes,
        )
        echo(f"cell {cell.name} added (id {cell.id})")


@cell_app.command("list")
def cell_list(
    ctx: typer.Context,
    sample: Optional[str] = typer.Option(None, help="Only cells of this sample."),
    fmt: OutputFormat = FormatOption,
    output: Optional[Path] = OutputOption,
) -> None:
    """List cells."""
    from txmdb.catalog.samples import cells_frame

    with catalog(ctx).session() as session:
        emit_table(cells_frame(session, sample=sample), fmt, output)


@cell_app.command("show")
def cell_show(ctx: typer.Context, name: str = typer.Argument(..., help="Cell name."),
              fmt: OutputFormat = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """Show one cell."""
    from txmdb.catalog.samples import cells_frame, get_cell

    with catalog(ctx).session() as session:
        get_cell(session, name)
        frame = cells_frame(session)
        emit_table(field_value_table(frame[frame["cell"] == name]), fmt, output)
