"""``txmdb sample …`` and ``txmdb cell …``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from txmdb.cli._common import (
    CommandGroup, FormatOption, OutputFormat, OutputOption, catalog, echo, emit_table, field_value_table,
    terminal_table,
)
from txmdb.cli.query import table_command
from txmdb.vocabulary import CE_CONVENTIONS, MORPHOLOGY_EXAMPLES, ORIENTATION_EXAMPLES, CEConvention

sample_app = typer.Typer(cls=CommandGroup, help="Record and list samples.", no_args_is_help=True)
cell_app = typer.Typer(cls=CommandGroup, help="Record and list coin cells.", no_args_is_help=True)


@sample_app.command("add")
def sample_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Unique sample name."),
    material: Optional[str] = typer.Option(None, help="Material, e.g. LiNi0.6Mn0.2Co0.2O2."),
    morphology: Optional[str] = typer.Option(None, help=f"Morphology, e.g. {' or '.join(MORPHOLOGY_EXAMPLES)}."),
    orientation: Optional[str] = typer.Option(
        None, help=f"Grain orientation, e.g. {' or '.join(ORIENTATION_EXAMPLES)}."),
    ni_fraction: Optional[float] = typer.Option(None, "--ni", help="Ni fraction of the transition metals (0–1)."),
    mn_fraction: Optional[float] = typer.Option(None, "--mn", help="Mn fraction (0–1)."),
    co_fraction: Optional[float] = typer.Option(None, "--co", help="Co fraction (0–1)."),
    source: Optional[str] = typer.Option(None, help="Provenance: synthesis batch, supplier, paper."),
    notes: Optional[str] = typer.Option(None, help="Free text."),
    meta: Optional[List[str]] = typer.Option(None, help="Extra metadata KEY=VALUE (repeatable)."),
) -> None:
    """Add a sample."""
    from txmdb.catalog.samples import add_sample

    extra = _parse_meta(meta)
    cat = catalog(ctx)
    with cat.session() as session:
        sample = add_sample(
            session, name, meta=extra, material=material, morphology=morphology, orientation=orientation,
            ni_fraction=ni_fraction, mn_fraction=mn_fraction, co_fraction=co_fraction, source=source, notes=notes,
        )
        echo(f"sample {sample.name} added (id {sample.id})")


def _parse_meta(items: list[str] | None) -> dict[str, str]:
    """``--meta KEY=VALUE`` items → dict. Values stay strings; a key may not repeat."""
    from txmdb.errors import TxmdbError

    meta: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TxmdbError(f"malformed --meta {item!r}: expected KEY=VALUE")
        if key in meta:
            raise TxmdbError(f"--meta key {key!r} given twice")
        meta[key] = value.strip()
    return meta


sample_app.command("list")(table_command("samples", "List samples."))


@sample_app.command("show")
def sample_show(ctx: typer.Context, name: str = typer.Argument(..., help="Sample name."),
                fmt: Optional[OutputFormat] = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """Show one sample and its cells."""
    from txmdb import query
    from txmdb.catalog.samples import get_sample

    cat = catalog(ctx)
    with cat.session() as session:
        get_sample(session, name)
    emit_table(field_value_table(query.samples(cat, sample=name)), fmt, output)
    if terminal_table(fmt, output):
        echo("\ncells:")
        emit_table(query.cells(cat, sample=name))


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
    ce_convention: Optional[CEConvention] = typer.Option(
        None, help=f"Coulombic-efficiency convention: {CE_CONVENTIONS[0]} (cathode half cell, default) or "
                   f"{CE_CONVENTIONS[1]} (anode half cell)."),
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
            ce_convention=ce_convention.value if ce_convention else None, upper_cutoff_v=upper_cutoff_v,
            lower_cutoff_v=lower_cutoff_v, notes=notes,
        )
        echo(f"cell {cell.name} added (id {cell.id})")


cell_app.command("list")(table_command("cells", "List cells."))


@cell_app.command("show")
def cell_show(ctx: typer.Context, name: str = typer.Argument(..., help="Cell name."),
              fmt: Optional[OutputFormat] = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """Show one cell."""
    from txmdb import query
    from txmdb.catalog.samples import get_cell

    cat = catalog(ctx)
    with cat.session() as session:
        get_cell(session, name)
    emit_table(field_value_table(query.cells(cat, cell=name)), fmt, output)
