"""``txmdb demo``: the whole product on synthetic rod-like and gravel-like NMC."""

from __future__ import annotations

from pathlib import Path

import typer

from txmdb.cli._common import echo, emit_table, whole


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the demo catalogue, raw files and report."),
    size: int = typer.Option(100, parser=whole, metavar="N", help="Edge length of each synthetic tomogram, voxels."),
) -> None:
    """Make rod-like and gravel-like samples, cells, cycler files, spectra and tomograms; ingest,
    analyse, print the summary table and write the comparison report."""
    from txmdb.demo import run_demo
    from txmdb.errors import TxmdbError

    if size < 24:
        raise TxmdbError(f"--size must be at least 24 voxels, got {size}")
    result = run_demo(out, size=size, echo=echo)
    echo("\nsummary (retention and voltage drop at cycle 100; gradient statistics per binning factor f):")
    emit_table(result.summary)
    echo(f"\ncatalogue: {result.database}")
    echo(f"report:    {result.report}")
    echo(f"done in {result.timings_s['total']:.1f} s")
