"""``txmdb query …``: long, tidy tables across samples, cells, cycles and scans."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from txmdb.cli._common import FormatOption, OutputFormat, OutputOption, catalog, emit_table

app = typer.Typer(help="Query across samples, cells, cycles and scans.", no_args_is_help=True)

SampleOpt = typer.Option(None, "--sample", help="Only these samples (repeatable).")
MorphologyOpt = typer.Option(None, "--morphology", help="Only samples of this morphology (repeatable).")
StateOpt = typer.Option(None, "--state", help="Only this state (repeatable).")
ScanOpt = typer.Option(None, "--scan", help="Only these scan ids (repeatable).")
CellOpt = typer.Option(None, "--cell", help="Only these cells (repeatable).")
BinOpt = typer.Option(None, "--bin", help="Only these binning factors (repeatable).")
ParticleOpt = typer.Option(None, "--particle", help="Only these particle labels (repeatable).")
ScanLevelOpt = typer.Option(False, "--scan-level", help="Only whole-scan rows (no per-particle rows).")
AnalysisOpt = typer.Option(None, "--analysis", help="These analysis ids instead of each scan's latest.")


def _stats_command(name: str, function_name: str, doc: str, *, weighted_filter: bool = False):
    def command(
        ctx: typer.Context,
        sample: Optional[List[str]] = SampleOpt,
        morphology: Optional[List[str]] = MorphologyOpt,
        state: Optional[List[str]] = StateOpt,
        scan: Optional[List[int]] = ScanOpt,
        bin: Optional[List[int]] = BinOpt,
        particle: Optional[List[int]] = ParticleOpt,
        scan_level: bool = ScanLevelOpt,
        analysis: Optional[List[int]] = AnalysisOpt,
        weighted: Optional[bool] = typer.Option(None, "--weighted/--unweighted",
                                                help="Only |u|-weighted or only plain histograms."),
        fmt: OutputFormat = FormatOption,
        output: Optional[Path] = OutputOption,
    ) -> None:
        from txmdb import query

        frame = getattr(query, function_name)(
            catalog(ctx), sample=sample, morphology=morphology, state=state, scan=scan, bin=bin,
            particle=particle, scan_level=scan_level, analysis=analysis, weighted=weighted,
        )
        emit_table(frame, fmt, output)

    command.__doc__ = doc
    app.command(name)(command)


_stats_command("theta", "theta", "θ histograms (probability and sin θ reference per bin), per scan and particle.")
_stats_command("vector-size", "vector_size", "|u| statistics (n, mean, median, p90) in nine folded θ groups.")
_stats_command("vector-size-histogram", "vector_size_histogram", "Histograms of |u| per folded θ group.")
_stats_command("u-theta", "u_theta", "Mean |u| against θ.")
_stats_command("gradient", "gradient_summary", "Per scan/particle and binning factor: n vectors, mean |u|, tangential excess, KL divergence.")
_stats_command("edge-histogram", "edge_histogram", "Edge-energy histograms per scan and particle.")
_stats_command("depth-profile", "depth_profile", "Edge energy against depth below the particle surface.")
_stats_command("particles", "particles", "Particles: size, centroid, equivalent radius, edge-energy mean and spread.")


@app.command("samples")
def samples(ctx: typer.Context, morphology: Optional[List[str]] = MorphologyOpt,
            fmt: OutputFormat = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """Samples."""
    from txmdb import query

    emit_table(query.samples(catalog(ctx), morphology=morphology), fmt, output)


@app.command("cells")
def cells(ctx: typer.Context, sample: Optional[List[str]] = SampleOpt,
          fmt: OutputFormat = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """Cells with their active mass."""
    from txmdb import query

    emit_table(query.cells(catalog(ctx), sample=sample), fmt, output)


@app.command("scans")
def scans(ctx: typer.Context, sample: Optional[List[str]] = SampleOpt, morphology: Optional[List[str]] = MorphologyOpt,
          state: Optional[List[str]] = StateOpt, scan: Optional[List[int]] = ScanOpt,
          fmt: OutputFormat = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """TXM scans with their latest analysis."""
    from txmdb import query

    emit_table(query.scans(catalog(ctx), sample=sample, morphology=morphology, state=state, scan=scan), fmt, output)


@app.command("cycles")
def cycles(ctx: typer.Context, sample: Optional[List[str]] = SampleOpt, cell: Optional[List[str]] = CellOpt,
           morphology: Optional[List[str]] = MorphologyOpt,
           cycle: Optional[List[int]] = typer.Option(None, "--cycle", help="Only these cycles (repeatable)."),
           fmt: OutputFormat = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """Per-cycle capacities, efficiency, energies, voltages and voltage drop."""
    from txmdb import query

    emit_table(query.cycles(catalog(ctx), sample=sample, cell=cell, morphology=morphology, cycle=cycle), fmt, output)


@app.command("retention")
def retention(ctx: typer.Context,
              cycle: int = typer.Option(..., "--cycle", help="Cycle whose retention to report."),
              reference: Optional[int] = typer.Option(None, "--reference", help="Reference cycle [default: 2, or the run's]."),
              sample: Optional[List[str]] = SampleOpt, cell: Optional[List[str]] = CellOpt,
              morphology: Optional[List[str]] = MorphologyOpt,
              fmt: OutputFormat = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """Capacity retention at a cycle, and cycles to 95/90/80 %."""
    from txmdb import query

    emit_table(query.retention(catalog(ctx), cycle=cycle, reference=reference, sample=sample, cell=cell,
                               morphology=morphology), fmt, output)


@app.command("xas")
def xas(ctx: typer.Context, sample: Optional[List[str]] = SampleOpt, morphology: Optional[List[str]] = MorphologyOpt,
        state: Optional[List[str]] = StateOpt,
        edge: Optional[List[str]] = typer.Option(None, "--edge", help="Only this edge, e.g. Ni-K or Ni-L3."),
        mode: Optional[List[str]] = typer.Option(None, "--mode", help="Only this detection mode."),
        fmt: OutputFormat = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """XAS results: half-height and derivative edge energies, L3 ratios."""
    from txmdb import query

    emit_table(query.xas(catalog(ctx), sample=sample, morphology=morphology, state=state, edge=edge, mode=mode),
               fmt, output)


@app.command("xrd")
def xrd(ctx: typer.Context, sample: Optional[List[str]] = SampleOpt, morphology: Optional[List[str]] = MorphologyOpt,
        state: Optional[List[str]] = StateOpt,
        fmt: OutputFormat = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """XRD results: (003)/(104) ratio and lattice parameters."""
    from txmdb import query

    emit_table(query.xrd(catalog(ctx), sample=sample, morphology=morphology, state=state), fmt, output)


@app.command("summary")
def summary(ctx: typer.Context, sample: Optional[List[str]] = SampleOpt,
            morphology: Optional[List[str]] = MorphologyOpt, state: Optional[List[str]] = StateOpt,
            cycle: int = typer.Option(100, "--cycle", help="Cycle at which retention and voltage drop are read."),
            reference: Optional[int] = typer.Option(None, "--reference", help="Reference cycle for retention."),
            fmt: OutputFormat = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """One row per sample and state: retention and voltage drop beside edge energy, mean |u|, tangential excess."""
    from txmdb import query

    emit_table(query.summary(catalog(ctx), sample=sample, morphology=morphology, state=state, cycle=cycle,
                             reference=reference), fmt, output)


@app.command("sql")
def sql(ctx: typer.Context, statement: str = typer.Argument(..., help="One SELECT statement."),
        fmt: OutputFormat = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """Run one read-only SQL query on the catalogue (it can never write)."""
    from txmdb.readonly_sql import run_readonly_sql

    cat = catalog(ctx)
    emit_table(run_readonly_sql(cat.engine.url, statement), fmt, output)
