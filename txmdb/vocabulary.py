"""Every word and limit txmdb accepts, declared once.

The CLI builds its choices and help texts from here and the library validates against the
same names, so the two cannot drift apart. Standard library only: the CLI imports this at
start-up and ``txmdb --help`` must stay fast (no numpy, pandas or SQLAlchemy here).
"""

from __future__ import annotations

import enum


def choices(name: str, values) -> type[enum.Enum]:
    """A ``str`` enum whose members are ``values`` (typer shows them as the option's choices)."""
    return enum.Enum(name, {value: value for value in values}, type=str, module=__name__)


# ------------------------------------------------------------------------------- TXM stacks
#: HDF5 layouts of TXM-XANES stacks (DESIGN §4); ``auto`` detects the layout from the file.
LAYOUTS = ("dxchange", "txm-sandbox", "fxi")
AUTO = "auto"

#: Tabulated K-edge energies (eV) of the elements whose edge the kernel knows.
K_EDGE_EV = {"Ni": 8333.0, "Co": 7709.0, "Mn": 6539.0, "Fe": 7112.0}
ELEMENTS = tuple(K_EDGE_EV)

# ------------------------------------------------------------------------------- XAS / XRD
#: Edges ``xas ingest --edge`` knows by name (any ``<element>-K`` of ELEMENTS works too).
EDGES = ("Ni-K", "Ni-L3")
#: Acquisition modes that make sense per edge kind ("K" or "L3").
MODES_BY_KIND = {"K": ("transmission", "fluorescence"), "L3": ("TEY", "FY")}
MODES = tuple(mode for modes in MODES_BY_KIND.values() for mode in modes)


def edge_kind(edge: str) -> str:
    """``"L3"`` for an L3 edge name (``"Ni-L3"``), else ``"K"``."""
    return "L3" if edge.strip().upper().endswith("-L3") else "K"


# ---------------------------------------------------------------------------------- cycling
#: Cycler file formats; ``auto`` reads the content to decide.
CYCLER_FORMATS = ("ndax", "nda", "neware-csv", "csv")
STEP_TYPES = ("charge", "discharge", "rest")
#: Coulombic-efficiency conventions: the first is a cathode half cell's (the default).
CE_CONVENTIONS = ("discharge/charge", "charge/discharge")

# ---------------------------------------------------------------------------------- samples
# Morphology ("rod", "gravel", …) and orientation ("radial", "random", …) are free text,
# not enumerated: labs name their own. These are only the examples the help texts show.
MORPHOLOGY_EXAMPLES = ("rod", "gravel")
ORIENTATION_EXAMPLES = ("radial", "random")

# ----------------------------------------------------------------------------------- output
OUTPUT_FORMATS = ("table", "csv", "json", "parquet")

# ----------------------------------------------------------------------------------- Limits
# Named bounds on what txmdb accepts. Add a limit here, with a comment saying why it is
# that size, rather than as a literal where it is checked.

#: Binning factors of the gradient statistics: 1 (none) up to 16 (a 16³ block per voxel).
MIN_BIN_FACTOR = 1
MAX_BIN_FACTOR = 16


# --------------------------------------------------------------------------- CLI choice enums
Layout = choices("Layout", (AUTO, *LAYOUTS))
Element = choices("Element", ELEMENTS)
Edge = choices("Edge", EDGES)
Mode = choices("Mode", MODES)
CyclerFormat = choices("CyclerFormat", (AUTO, *CYCLER_FORMATS))
CEConvention = choices("CEConvention", CE_CONVENTIONS)
OutputFormat = choices("OutputFormat", OUTPUT_FORMATS)
