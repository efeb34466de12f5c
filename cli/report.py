"""``txmdb report …``: comparison reports with the figures of the paper."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from txmdb.cli._common import CommandGroup, catalog, echo, whole_option
from txmdb.vocabulary import MAX_CYCLE_NUMBER

app = typer.Typer(cls=CommandGroup, help="Comparison reports (HTML with the figures of Xu et al. 2020).", no_args_is_help=True)


@app.command("compare")
def compare(
    ctx: typer.Context,
    samples: List[str] = typer.Argument(..., metavar="SAMPLE...", help="Samples to compare; their order sets their colours."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o",
                                help="HTML file to write (missing folders are made)."),
    png_dir: Optional[Path] = typer.Option(None, "--png-dir", help="Also write every figure as PNG into this folder."),
    cycle: int = whole_option(100, "--cycle", low=1, high=MAX_CYCLE_NUMBER, metavar="N",
                              help="Cycle at which retention and voltage drop are compared."),
    states: List[str] = typer.Option([], "--state", metavar="S",
                                     help="Only the TXM scans, XAS spectra and XRD results in this state (repeatable; "
                                          "default: every state). Cycling is shown whole: cells have no state."),
) -> None:
    """Write one self-contained HTML report comparing SAMPLES: cycling, XAS, XRD, valence maps, θ and |u|.

    The file embeds every figure and opens offline; prints its path.
    """
    from txmdb.report import build_report

    echo(str(build_report(catalog(ctx), samples, output=output, png_dir=png_dir, cycle=cycle, states=states)))
