"""``txmdb cycling …``, ``txmdb xas …``, ``txmdb xrd …``: electrochemistry and spectroscopy."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from txmdb.cli._common import CommandGroup, catalog, echo, parse_window, whole
from txmdb.vocabulary import CyclerFormat, Edge, Mode

cycling_app = typer.Typer(cls=CommandGroup, help="Cycler files: ingest and per-cycle metrics.", no_args_is_help=True)
xas_app = typer.Typer(cls=CommandGroup, help="XAS spectra: K-edge energies and L3 ratios.", no_args_is_help=True)
xrd_app = typer.Typer(cls=CommandGroup, help="XRD results: (003)/(104) ratio and lattice parameters.",
                      no_args_is_help=True)


@cycling_app.command("ingest")
def cycling_ingest(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="Cycler file: Neware .ndax/.nda, Neware BTS CSV export, or CSV."),
    cell: str = typer.Option(..., help="Cell the file belongs to."),
    file_format: CyclerFormat = typer.Option(CyclerFormat.auto, "--format", help="File format; auto reads the content."),
    columns: Optional[str] = typer.Option(None, help="Column mapping for other CSVs, e.g. time_s=Time,voltage_v=Ewe,current_a=I."),
    upper_cutoff_v: Optional[float] = typer.Option(None, "--upper-cutoff", help="Upper cut-off voltage (V) for the voltage drop \\[default: the cell's]."),
    reference_cycle: Optional[int] = typer.Option(None, parser=whole, metavar="N",
                                                  help="Reference cycle for capacity retention \\[default: 2]."),
    encoding: Optional[str] = typer.Option(None, help="Text encoding of a CSV, e.g. cp1252 or gb18030 \\[default: read from the bytes]."),
) -> None:
    """Ingest a cycler file and compute per-cycle metrics; the same file again returns the existing run."""
    from txmdb.catalog.cycling import ingest_cycling
    from txmdb.io.cycling import parse_column_map

    column_map = parse_column_map(columns) if columns else None
    run, created = ingest_cycling(catalog(ctx), file, cell=cell, file_format=file_format.value, columns=column_map,
                                  upper_cutoff_v=upper_cutoff_v, reference_cycle=reference_cycle, encoding=encoding)
    echo(f"{'ingested' if created else 'already in the catalogue'}: {file} ({run.file_format}, "
         f"{run.n_records} records, {run.n_cycles} cycles)")
    echo(str(run.id))


@xas_app.command("ingest")
def xas_ingest(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="XDI file, or text with (energy, μ) or (energy, I0, It) columns."),
    sample: Optional[str] = typer.Option(None, help="Sample measured (or give --reference)."),
    reference: Optional[str] = typer.Option(None, help="Record a named reference spectrum for LCF "
                                            "(txm analyze --lcf NAME,…); it belongs to no sample."),
    edge: Edge = typer.Option(..., help="Absorption edge."),
    mode: Optional[Mode] = typer.Option(None, help="Detection mode \\[default: transmission for K, TEY for L3]."),
    state: Optional[str] = typer.Option(None, help="State, e.g. pristine or charged-4.5V."),
    depth_um: Optional[float] = typer.Option(None, help="Probing depth in µm (depth-resolved confocal XAS)."),
    pre: Optional[str] = typer.Option(None, help="K edge: pre-edge window LO:HI in eV [Ni: ≤ 8320]."),
    post: Optional[str] = typer.Option(None, help="K edge: post-edge window LO:HI in eV [Ni: ≥ 8370]."),
    edge_window: Optional[str] = typer.Option(None, "--edge-window", help="K edge: window of the half-height crossing, LO:HI eV [Ni: 8325:8365]."),
    min_jump: Optional[float] = typer.Option(None, help="K edge: smallest edge jump accepted [0 for bulk spectra]."),
    background: Optional[str] = typer.Option(None, help="L3: linear-background window LO:HI in eV [845:850]."),
    l3_low: Optional[str] = typer.Option(None, help="L3: L3-low peak window LO:HI in eV [852:854]."),
    l3_high: Optional[str] = typer.Option(None, help="L3: L3-high peak window LO:HI in eV [854.5:856.5]."),
) -> None:
    """Ingest a sample's spectrum or a named reference: half-height and derivative edge energies (K) or L3high/L3low (L3)."""
    from txmdb.catalog.spectroscopy import ingest_xas, xas_parameters

    params = xas_parameters(
        edge.value, pre=parse_window(pre, "--pre"), post=parse_window(post, "--post"),
        edge_window=parse_window(edge_window, "--edge-window", open_ends=False), min_jump=min_jump,
        background=parse_window(background, "--background", open_ends=False),
        low=parse_window(l3_low, "--l3-low", open_ends=False), high=parse_window(l3_high, "--l3-high", open_ends=False),
    )
    record, created = ingest_xas(catalog(ctx), file, sample=sample, edge=edge.value,
                                 mode=mode.value if mode else None, state=state, depth_um=depth_um, params=params,
                                 reference=reference)
    if record.edge == "Ni-K":
        detail = f"edge {record.edge_energy_ev:.2f} eV (half height), e0 {record.e0_derivative_ev or float('nan'):.2f} eV (derivative)"
    else:
        detail = f"L3high/L3low {record.l3_ratio:.3f}"
    if record.reference_name is not None:
        detail = f"reference {record.reference_name}, {detail}"
    echo(f"{'ingested' if created else 'already in the catalogue'}: {file} — {detail}")
    echo(str(record.id))


@xrd_app.command("add")
def xrd_add(
    ctx: typer.Context,
    sample: str = typer.Option(..., help="Sample measured."),
    state: Optional[str] = typer.Option(None, help="State, e.g. pristine."),
    i003_i104: Optional[float] = typer.Option(None, help="(003)/(104) integrated intensity ratio."),
    a_angstrom: Optional[float] = typer.Option(None, "--a", help="Lattice parameter a, Å."),
    c_angstrom: Optional[float] = typer.Option(None, "--c", help="Lattice parameter c, Å."),
    pattern: Optional[Path] = typer.Option(None, help="2θ–intensity pattern file to compute the ratio from."),
    wavelength_angstrom: Optional[float] = typer.Option(None, "--wavelength", help="X-ray wavelength of the pattern, Å (Cu Kα 1.5406)."),
) -> None:
    """Record XRD values, or compute the (003)/(104) ratio from a pattern."""
    from txmdb.catalog.spectroscopy import add_xrd

    record = add_xrd(catalog(ctx), sample=sample, state=state, i003_i104=i003_i104, a_angstrom=a_angstrom,
                     c_angstrom=c_angstrom, pattern=pattern, wavelength_angstrom=wavelength_angstrom)
    echo(f"XRD result {record.id}: I(003)/I(104) = {record.i003_i104:.3f}")
