"""``txmdb txm …``: ingest, analyse and show TXM-XANES tomograms."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from txmdb.cli._common import (
    CommandGroup, FormatOption, OutputFormat, OutputOption, UsageError, catalog, echo, emit_table, field_value_table,
    terminal_table, whole,
)
from txmdb.options import parse_roi
from txmdb.vocabulary import Element, Layout

app = typer.Typer(cls=CommandGroup, help="TXM-XANES tomograms: ingest, analyse, show.", no_args_is_help=True)

#: ``--verify-input`` of analyze and register
VerifyInputOption = typer.Option(
    False, "--verify-input",
    help="Hash the scan's file in full and compare it with the SHA-256 recorded at ingest, even when the file's "
         "identity (device, inode, size, modification and change times) is the one recorded when it was last "
         "hashed and matched (by default such a file is not read for its hash).")



@app.command("ingest")
def ingest(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="HDF5 tomogram (absorbance stack + energies)."),
    sample: str = typer.Option(..., help="Sample the scan belongs to."),
    state: Optional[str] = typer.Option(None, help="State of charge / history, e.g. pristine, charged-4.5V, cycled-100."),
    layout: Layout = typer.Option(Layout.auto.value, help="HDF5 layout; auto detects it."),
    data: Optional[str] = typer.Option(None, help="Path of the stack data set inside the file (overrides the layout)."),
    energy: Optional[str] = typer.Option(None, help="Path of the energy data set inside the file."),
    voxel_nm: Optional[float] = typer.Option(None, help="Voxel size in nm (else read from the file's attributes)."),
) -> None:
    """Record a tomogram; prints the scan id on the last line (the same file again gives the same id)."""
    from txmdb.catalog.txm import ingest_scan

    scan, created = ingest_scan(catalog(ctx), file, sample=sample, state=state, layout=layout.value, data=data,
                                energy=energy, voxel_nm=voxel_nm)
    shape = "×".join(map(str, scan.shape))
    echo(f"{'ingested' if created else 'already in the catalogue'}: {file} ({scan.layout}, {shape}, "
         f"{scan.n_energies} energies {scan.energy_min_ev:.1f}–{scan.energy_max_ev:.1f} eV)")
    echo(str(scan.id))


@app.command("analyze")
def analyze(
    ctx: typer.Context,
    scan_ids: Optional[List[int]] = typer.Argument(None, parser=whole, metavar="SCAN_ID", help="Scan ids to analyse."),
    all_scans: bool = typer.Option(False, "--all", help="Analyse every scan in the catalogue."),
    element: Element = typer.Option(Element.Ni.value, help="Element preset for the edge windows."),
    bin: str = typer.Option("1,2,3", "--bin", help="Binning factors for the gradient statistics, e.g. 1,2,3."),
    pre: Optional[str] = typer.Option(None, help="Pre-edge window LO:HI in eV (preset: ≤ 8320 for Ni)."),
    post: Optional[str] = typer.Option(None, help="Post-edge window LO:HI in eV (preset: ≥ 8370 for Ni)."),
    edge: Optional[str] = typer.Option(None, help="Edge window LO:HI in eV (preset: 8325:8365 for Ni)."),
    min_jump: Optional[float] = typer.Option(None, help="Minimum edge jump (absorbance); smaller voxels are masked."),
    snr: Optional[float] = typer.Option(None, help="Mask voxels whose jump is below SNR × pre-edge RMS residual."),
    theta_bins: int = typer.Option(36, parser=whole, metavar="N", help="Number of θ bins over 0–180°."),
    min_particle_voxels: Optional[int] = typer.Option(None, parser=whole, metavar="N", help="Smallest particle kept (default 1000 in 3D, 100 in 2D)."),
    workers: Optional[int] = typer.Option(None, parser=whole, metavar="N",
                                          help="Threads computing edge energies and maps (one more thread reads the "
                                               "stack) \\[default: one per core]."),
    scheduler: Optional[str] = typer.Option(None, help="Dask scheduler address (tcp://host:port) to run on a cluster: "
                                            "one scan (or any above 2 GiB) is split into slabs across the workers, "
                                            "other scans run whole, several at once."),
    registration: Optional[str] = typer.Option(None, "--registration", metavar="ID|none",
                                               help="Registration applied while reading the stack: an id of the "
                                                    "scan's, or none \\[default: the scan's latest, if any]."),
    clusters: Optional[int] = typer.Option(None, "--clusters", parser=whole, metavar="K",
                                           help="Phase clusters: k-means with K clusters on the normalised spectra "
                                                "over the edge window (reads the stack once more)."),
    gradient_map: str = typer.Option("edge", "--gradient-map", metavar="MAP[,MAP…]",
                                     help="Maps whose gradient statistics are computed: edge, white_line, "
                                          "white_line_height, fraction:NAME, rfactor (each one this analysis "
                                          "computes)."),
    white_line: Optional[str] = typer.Option(None, "--white-line", metavar="LO:HI|none",
                                             help="White-line window in eV: maximum of a cubic fitted to the "
                                                  "normalised spectrum (default: the element preset, 8345:8358 for "
                                                  "Ni, where the stack has 4 energies in it)."),
    lcf: Optional[str] = typer.Option(None, "--lcf", metavar="NAME,NAME[,…]",
                                      help="Linear combination fit of each voxel with these reference spectra "
                                           "('xas ingest --reference'): fraction maps and an R-factor map."),
    lcf_window: Optional[str] = typer.Option(None, "--lcf-window", metavar="LO:HI",
                                             help="Fit window of --lcf in eV (preset: 8325:8375 for Ni)."),
    queue: bool = typer.Option(False, "--queue", help="Queue one analysis job per scan for 'txmdb worker' instead of "
                                                      "running here; prints the job ids, one per line."),
    verify_input: bool = VerifyInputOption,
) -> None:
    """Extract edge energies, find particles and compute valence-gradient statistics."""
    from txmdb.catalog.txm import all_scan_ids, analyze_scan, resolve_registration
    from txmdb.errors import TxmdbError
    from txmdb.options import analysis_request

    if scheduler is not None and queue:
        raise TxmdbError("--scheduler is the worker's with --queue: give it to 'txmdb worker'")
    if verify_input and queue:  # a job runs with the default: trust an unchanged identity
        raise TxmdbError("--verify-input hashes the file here: it is not queued; run without --queue")
    if verify_input and scheduler is not None:  # the workers read the scan; no full hash is taken there
        raise TxmdbError("--verify-input hashes the file here: it is not sent to a scheduler; run without --scheduler")
    if scheduler is not None:  # at once, not after hashing every scan
        from txmdb.catalog.distributed import check_scheduler_address

        check_scheduler_address(scheduler)
    if all_scans == bool(scan_ids):
        raise UsageError("give SCAN_ID… or --all" if all_scans is False else "give SCAN_ID… or --all, not both", ctx)
    cat = catalog(ctx)
    ids = all_scan_ids(cat) if all_scans else list(scan_ids)
    if not ids:
        raise TxmdbError("no scans to analyse: the catalogue has none")
    # one parser for the command and its queued jobs (txmdb.options): a job runs what this would
    values = {"element": element.value, "bin": bin, "pre": pre, "post": post, "edge": edge, "min_jump": min_jump,
              "snr": snr, "theta_bins": theta_bins, "min_particle_voxels": min_particle_voxels, "workers": workers,
              "registration": registration, "clusters": clusters, "gradient_map": gradient_map,
              "white_line": white_line, "lcf": lcf, "lcf_window": lcf_window}
    options, choice = analysis_request(values, catalog=cat)
    for scan_id in ids:  # another scan's registration is refused before any scan is read (or queued)
        resolve_registration(cat, scan_id, choice)
    if queue:
        from txmdb.jobs import enqueue

        # enqueue refuses what the stack cannot serve (a white-line window's energies), as a run here would
        for scan_id in ids:
            echo(str(enqueue(cat, "analyze", values, scan_id=scan_id)))
        return
    if scheduler is not None:  # an empty address is refused, not taken for "run here"
        # one scan, or a scan above SPLIT_BYTES, is split into slabs across the workers;
        # other scans run whole, many at once
        from txmdb.catalog.distributed import analyze_on_cluster

        for analysis in analyze_on_cluster(cat, ids, options, scheduler=scheduler, registration=choice):
            _report(analysis)
        return
    from txmdb.cli._progress import progress_bar

    for scan_id in ids:
        with progress_bar(f"scan {scan_id}") as progress:
            analysis = analyze_scan(cat, scan_id, options, registration=choice, progress=progress,
                                    verify_input=verify_input)
        _report(analysis)


def _report(analysis) -> None:
    mean = "n/a" if analysis.mean_edge_ev is None else f"{analysis.mean_edge_ev:.2f} eV"
    registered = "" if analysis.registration_id is None else f" (registration {analysis.registration_id})"
    echo(f"scan {analysis.scan_id}: analysis {analysis.id} done{registered} — {analysis.n_valid_voxels} valid "
         f"voxels, {analysis.n_particles} particle{'' if analysis.n_particles == 1 else 's'}, mean edge {mean} ({analysis.timings_s.get('total', 0):.1f} s)")



@app.command("register")
def register(
    ctx: typer.Context,
    scan_id: int = typer.Argument(..., parser=whole, metavar="SCAN_ID", help="Scan id."),
    reference_energy_ev: Optional[float] = typer.Option(
        None, "--reference-energy", metavar="EV",
        help="Energy whose shift is zero, eV; one of the stack's \\[default: the energy nearest 3/4 of the scan's "
             "range, a post-edge energy]."),
    max_shift: Optional[float] = typer.Option(
        None, "--max-shift", metavar="VOX",
        help="Largest shift per axis, voxels \\[default: a quarter of the smallest field-of-view dimension; at most "
             "half]."),
    roi: Optional[str] = typer.Option(
        None, "--roi", metavar="Z0:Z1,Y0:Y1,X0:X1",
        help="Region the estimate uses, voxels (2-D: Y0:Y1,X0:X1; an empty end is the field's) \\[default: all]."),
    accept_poor: bool = typer.Option(
        False, "--accept-poor", help="Store the registration even if some energies cannot be registered."),
    verify_input: bool = VerifyInputOption,
) -> None:
    """Estimate one sub-voxel shift per energy (DESIGN §10) and record it; prints the registration id last."""
    from txmdb.catalog.registration import register_scan, summarize

    registration = register_scan(catalog(ctx), scan_id, reference_energy_ev=reference_energy_ev,
                                 max_shift=max_shift, roi=parse_roi(roi), accept_poor=accept_poor,
                                 verify_input=verify_input)
    summary = summarize(registration)
    largest = ", ".join(f"{axis} {value:.2f}" for axis, value in summary.max_abs_shift_vox.items())
    echo(f"scan {scan_id}: {len(registration.shifts)} energies registered to {summary.reference_energy_ev:g} eV "
         f"({registration.elapsed_s:.1f} s)")
    lowest = ("n/a" if summary.min_quality is None
              else f"{summary.min_quality:.2f} at {summary.min_quality_energy_ev:g} eV")
    echo(f"largest |shift| (voxels): {largest}; lowest quality {lowest}")
    if summary.accepted_poor:
        echo(f"accepted although these energies cannot be registered: "
             f"{', '.join(f'{e:g} eV' for e in summary.poor_energies_ev)}")
    echo(str(registration.id))


@app.command("export")
def export(
    ctx: typer.Context,
    scan_id: int = typer.Argument(..., parser=whole, metavar="SCAN_ID", help="Scan id."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="File to write: HDF5 (TXM_Sandbox layout) for the stack; .h5 or .tif for a map."),
    registered: bool = typer.Option(False, "--registered", help="Apply the scan's latest registration."),
    map_name: Optional[str] = typer.Option(None, "--map", metavar="NAME",
                                           help="Write this map of the latest analysis instead of the stack: edge, "
                                                "white_line, white_line_height, fraction:NAME, rfactor, cluster "
                                                "(.h5: data set /map; .tif: float32 ImageJ stack; NaN where masked)."),
    analysis_id: Optional[int] = typer.Option(None, "--analysis", parser=whole, metavar="ID",
                                              help="With --map: this finished analysis of the scan \\[default: "
                                                   "the latest]."),
) -> None:
    """Write the scan's stack (absorbance, energies in keV) in the TXM_Sandbox layout, or one map, slab by slab."""
    from txmdb.catalog.export import export_map, export_scan
    from txmdb.cli._progress import progress_bar

    if map_name is not None:
        if registered:
            from txmdb.errors import TxmdbError

            raise TxmdbError("--map writes a map of an analysis (already in its own frame); "
                             "--registered applies to the stack export only")
        with progress_bar(f"scan {scan_id}") as progress:
            analysis_id = export_map(catalog(ctx), scan_id, map_name, output, analysis_id=analysis_id,
                                     progress=progress)
        echo(f"scan {scan_id}: map {map_name.strip()} of analysis {analysis_id} written to {output}")
        return
    if analysis_id is not None:
        raise UsageError("--analysis ID chooses the analysis of --map NAME; the stack export has none", ctx)

    with progress_bar(f"scan {scan_id}") as progress:
        applied = export_scan(catalog(ctx), scan_id, output, registered=registered, progress=progress)
    how = "unregistered" if applied is None else f"registered by registration {applied.registration_id}"
    echo(f"scan {scan_id}: stack ({how}) written to {output}")


@app.command("show")
def show(
    ctx: typer.Context,
    scan_id: int = typer.Argument(..., parser=whole, metavar="SCAN_ID", help="Scan id."),
    fmt: Optional[OutputFormat] = FormatOption,
    output: Optional[Path] = OutputOption,
) -> None:
    """Show a scan, its analyses and the gradient summary of the latest one."""
    from txmdb import query
    from txmdb.catalog.registration import scan_registrations
    from txmdb.catalog.txm import get_scan

    cat = catalog(ctx)
    with cat.session() as session:
        get_scan(session, scan_id)
    scan = query.scans(cat, scan=scan_id)
    if not terminal_table(fmt, output):
        emit_table(query.gradient_summary(cat, scan=scan_id), fmt, output)
        return
    emit_table(field_value_table(scan))
    echo("\nanalyses:")
    # running, done or failed: a failed analysis says why, a killed one stays running until db check
    emit_table(query.analyses(cat, scan=scan_id)[["analysis_id", "status", "registration_id", "started_at",
                                                   "n_valid_voxels", "n_particles", "mean_edge_ev", "error"]])
    echo("\nregistrations:")
    emit_table(scan_registrations(cat, scan_id))
    echo("\ngradient summary (latest analysis):")
    emit_table(query.gradient_summary(cat, scan=scan_id))
