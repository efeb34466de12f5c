"""Every word and limit txmdb accepts, declared once.

The CLI builds its choices and help texts from here and the library validates against the
same names, so the two cannot drift apart. Standard library only: the CLI imports this at
start-up and ``txmdb --help`` must stay fast (no numpy, pandas or SQLAlchemy here).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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
#: Tabulated L3-edge energies (eV) of the soft-XAS edges (Ni 2p3/2).
L3_EDGE_EV = {"Ni": 852.7}

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

#: What an analysis is doing (analyses.status): running while it runs, then done or failed.
ANALYSIS_STATUSES = ("running", "done", "failed")

# -------------------------------------------------------------------------------------- jobs
#: What a durable job runs (jobs.kind, DESIGN §12): ``txm analyze`` or ``txm register`` of one scan.
JOB_KINDS = ("analyze", "register")
#: Where a job is (jobs.status): queued until a worker claims it, running under the worker's
#: lease, then done, failed (with its error) or cancelled.
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
#: Seconds a worker's lease on its job lasts unless renewed (DESIGN §12); the worker renews it
#: every third of this, so a worker is declared lost one lease after its last renewal.
DEFAULT_LEASE_S = 60.0
#: Shortest lease: below ~1 s a busy database or a paused process loses leases of live workers.
MIN_LEASE_S = 1.0
#: Times a job is started before a lost worker or an unexpected error makes it failed: a job that
#: kills every worker taking it (out of memory) stops being retried.
DEFAULT_MAX_ATTEMPTS = 3
#: Seconds an idle worker waits between looks for a queued job (one small query each).
WORKER_POLL_S = 1.0

# -------------------------------------------------------------------------------- harvester
#: What the watcher (``txmdb watch``, DESIGN §12) knows of each file it saw (harvested_files.status).
HARVEST_STATUSES = ("waiting", "ingested", "failed", "ignored")
#: Kinds of file a watch rule ingests, each through its ingest command's catalogue service.
HARVEST_KINDS = ("cycling", "xas", "xrd", "txm")
#: Default seconds a file's size and mtime must stay unchanged before it is read.
HARVEST_SETTLE_S = 5.0
#: A file failed because the sample or cell it names does not exist is retried this often
#: (one name lookup each, no file read): it is ingested within this long of the record's creation.
HARVEST_RETRY_S = 10.0
#: Without --poll, the inotify watcher still walks its folders this often, as a safety net for
#: events the kernel dropped (queue overflow); 10,000 files cost ~0.1 s of stat calls.
HARVEST_RESCAN_S = 300.0
#: The watcher's ingest process (numpy, pandas, h5py: ~100 MB) leaves after this long without work.
HARVEST_INGESTER_IDLE_S = 60.0

# ------------------------------------------------------------------------------------ maps
#: Names of an analysis' maps (DESIGN §11, txmdb.io.maps); ``fraction:NAME`` stands for
#: one map per LCF reference NAME.
MAP_NAMES = ("edge", "white_line", "white_line_height", "fraction:NAME", "rfactor", "cluster")
#: The map whose statistics a query gives when none is named.
DEFAULT_MAP = "edge"

# ----------------------------------------------------------------------------------- Limits
# Named bounds on what txmdb accepts. Add a limit here, with a comment saying why it is
# that size, rather than as a literal where it is checked.

#: Whole numbers in the catalogue (ids, cycles, binning factors, particle labels) are 32-bit
#: on PostgreSQL: a filter or an id outside 0 to this matches nothing, and is refused.
MAX_CATALOGUE_INT = 2**31 - 1

#: Binning factors of the gradient statistics: 1 (none) up to 16 (a 16³ block per voxel).
MIN_BIN_FACTOR = 1
MAX_BIN_FACTOR = 16

#: Phase clusters of ``txm analyze --clusters K`` (txmdb.analysis.clusters): k-means labels are
#: int16 and the mean spectra K rows per energy; more than this many phases is no phase map.
MAX_CLUSTERS = 100

#: Threads of ``txm analyze --workers N`` over the edge kernel's blocks: a thread per core of
#: the largest lab server, not one per block (the numpy path made a thread per block).
MAX_ANALYSIS_WORKERS = 64

# HDF5 tomograms (txmdb.io.hdf5): checked on the file's declarations before any data is
# read, so a few-KB file cannot make txmdb allocate, decompress or scan gigabytes.
#: Voxel edge length, nm: 0.01 nm (below any atom) to 1 mm (above any TXM field of view).
#: Wider values are unit mistakes or garbage (1e-320 would overflow every per-nm quantity).
VOXEL_NM_MIN = 0.01
VOXEL_NM_MAX = 1e6
#: Images along a stack's energy axis (and flat/dark frames): XANES scans have 20–300.
MAX_ENERGIES = 10_000
#: Values read at once for one slice along the slab axis (all energies and flat frames):
#: 2**29 is 2 GiB of float32, e.g. 128 energies × 2048 × 2048.
MAX_SLICE_VALUES = 2**29
#: Bytes of one HDF5 chunk: a compressed chunk is decompressed whole into memory.
MAX_CHUNK_BYTES = 1 << 30
#: Declared bytes per stored byte: gzip tops out near 1030:1 even on constant data (lzf
#: near 90:1); beyond that the "compression" is a filter chain built as a bomb.
MAX_EXPANSION = 2048
#: Soft links followed to resolve one path (HDF5's own default limit), then a loop.
MAX_SOFT_LINKS = 16
#: Groups walked to resolve one path (soft links included): real layouts use fewer than 10.
MAX_PATH_DEPTH = 256
#: Values and bytes of a voxel-size or unit attribute (one number or word, or one per axis).
MAX_ATTRIBUTE_VALUES = 16
MAX_ATTRIBUTE_BYTES = 4096
#: Ingest's search for one voxel with a finite spectrum reads at most this much (from the
#: middle slab outwards; a normal stack answers with its first slab). A stack still
#: undecided then is accepted (the analysis masks non-finite voxels anyway): an all-NaN
#: stack of tiny, highly compressed chunks cannot keep ingest busy. Each ~0.5 s.
FINITE_SCAN_BYTES = 512 << 20
FINITE_SCAN_CHUNKS = 16_384

# Registration of the energy stack (txmdb.catalog.registration, DESIGN §10).
#: Default reference energy: the stack's energy nearest this fraction of its energy range.
#: A K-edge XANES scan runs from ~50 eV below to ~90 eV above the edge (Ni: 8280–8420 eV →
#: 8385 eV), so this is a post-edge energy: the particles at their brightest, and an image
#: that no longer changes across the edge; yet not the scan's last energy, from which the
#: drift of the whole scan would be measured (shifts, and --max-shift, stay smaller).
REGISTRATION_REFERENCE_FRACTION = 0.75
#: Default largest shift: this fraction of the smallest field-of-view dimension (DESIGN §10:
#: shifts are relative to the reference, so two energies may differ by twice the excursion).
REGISTRATION_MAX_SHIFT_FRACTION = 0.25
#: Largest shift accepted: half the smallest dimension (beyond it, less than half of the
#: field is common to the reference and a shifted energy; the estimate needs that overlap).
REGISTRATION_MAX_SHIFT_LIMIT = 0.5
#: A requested reference energy matches a stack energy within this, eV (keV lists times
#: 1000 are not exact; XANES steps are 0.2 eV and more).
REGISTRATION_ENERGY_TOLERANCE_EV = 0.05
#: Smallest region of interest per axis, voxels: the estimate's band-pass and its 3-voxel
#: border leave nothing to fit below this.
REGISTRATION_MIN_ROI_VOXELS = 8

# Cycler files (txmdb.io.cycling).
#: Largest cycle number: the catalogue stores cycles as 32-bit integers.
MAX_CYCLE_NUMBER = 2**31 - 1
#: Largest XAS spectrum or XRD pattern text file: ~1.6 million rows; parsing takes ~15× the
#: file's size in memory (a 40 MB, million-point reference peaked at 583 MB).
MAX_SPECTRUM_FILE_BYTES = 64 << 20
#: Largest cycler file of any format: a CSV export is read whole and takes about 2.7× its size
#: in memory (a 400 MB CSV: 1.07 GB peak), the same order as the largest .ndax below.
MAX_CYCLER_FILE_BYTES = 2 << 30
#: Most a .ndax archive may unpack to (its ZIP directory's sizes, summed). fastnda holds the
#: unpacked members and the decoded columns in memory at once: a few times this.
MAX_NDAX_UNPACKED_BYTES = 2 << 30
#: Highest unpacked/packed ratio of a .ndax past NDAX_RATIO_FLOOR_BYTES. Neware's binary
#: records deflate 2–15×; deflate reaches ~1000× only on repetitive filler (a bomb).
MAX_NDAX_RATIO = 100
#: Below this unpacked size any ratio passes: small members are mostly zero padding (an
#: 8 KiB data_step.ndc packs into 58 bytes).
NDAX_RATIO_FLOOR_BYTES = 16 << 20


# --------------------------------------------------------------------------- CLI choice enums
Layout = choices("Layout", (AUTO, *LAYOUTS))
Element = choices("Element", ELEMENTS)
Edge = choices("Edge", EDGES)
Mode = choices("Mode", MODES)
CyclerFormat = choices("CyclerFormat", (AUTO, *CYCLER_FORMATS))
CEConvention = choices("CEConvention", CE_CONVENTIONS)
OutputFormat = choices("OutputFormat", OUTPUT_FORMATS)
JobStatus = choices("JobStatus", JOB_STATUSES)

# query sql (txmdb.readonly_sql): user SQL is bounded in time, rows and bytes.
#: Statement timeout, s (server-side on PostgreSQL; on SQLite a progress handler and a
#: watchdog thread that interrupts the statement).
DEFAULT_TIMEOUT_S = 30.0
#: Longest --timeout, s. A query holds its server session, its locks (even a session-level
#: advisory lock it takes itself) and its temporary files for up to this long.
MAX_TIMEOUT_S = 3600.0
#: Rows returned at the most; more are cut, and the command says so.
DEFAULT_MAX_ROWS = 100_000
#: Highest --max-rows: each row costs ~150 bytes of Python objects beyond the bytes counted
#: against MAX_RESULT_BYTES (a million one-number rows: 2.7 s, 145 MB on SQLite).
MAX_SQL_ROWS = 1_000_000
#: Rows times width can still be large: the result never holds more than this many bytes
#: (counted row by row before a row is kept; on PostgreSQL also by the server, uncompressed).
MAX_RESULT_BYTES = 256 << 20
#: SQLite runs a function call to its end before it looks at the time limit: instr(),
#: replace() and trim(X, Y) cost length squared (trim(X, Y) at 1 MiB: 90 s of CPU). At
#: 64 KiB the worst measured call (trim) takes 0.9 s: --timeout holds to within a second. No
#: stored or computed value may be longer; catalogue values are names, paths, notes and small
#: JSON documents.
SQLITE_MAX_VALUE_BYTES = 64 << 10
#: Longest LIKE or GLOB pattern on SQLite (its cost is pattern length × text length).
SQLITE_MAX_PATTERN_BYTES = 1000
#: PostgreSQL's longest role name (NAMEDATALEN - 1); the server would cut a longer one.
MAX_ROLE_NAME_BYTES = 63
#: Reporting roles are named from this: `txmdb_reader_<database>[_<schema>]`, one per catalogue
#: (roles are cluster-wide; a shared one would let one catalogue's users read another's).
REPORTING_ROLE_PREFIX = "txmdb_reader"

# ------------------------------------------------------------------------- web (DESIGN §12)
#: Account roles, each allowed what the ones before it are: viewers read; editors also ingest,
#: start analyses and edit notes; admins also manage accounts.
ROLES = ("viewer", "editor", "admin")
Role = choices("Role", ROLES)
#: Account names: letters, digits and ``._-``, so a name is never a CLI actor (``os:…``) nor markup.
USER_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
#: Passwords: at least this long (a lab server is reachable by the whole lab network) and at
#: most this long (Argon2 hashes any length; a megabyte password would only cost the server).
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024
#: Tables the SQL console (``query sql``, the /sql page) never reads: hashes and the HMAC key.
PRIVATE_TABLES = ("users", "api_tokens", "sessions", "login_attempts", "web_key")
#: A browser session lasts this long from sign-in (then sign in again).
SESSION_HOURS = 12
#: Failed sign-ins allowed per account name from one client address, and per address, within
#: the window; then the login form answers 429 to that address until the window has passed
#: (failures from elsewhere never lock an account's owner out). Argon2 costs ~0.1 s per try, so
#: without a limit one client could also keep a core busy.
LOGIN_WINDOW_MINUTES = 15
MAX_FAILED_LOGINS_PER_NAME = 5
MAX_FAILED_LOGINS_PER_ADDRESS = 20
#: Largest upload (cycler, XAS, XRD files are kilobytes to tens of megabytes; tomograms are
#: registered by their path on the shared store, never uploaded).
MAX_UPLOAD_BYTES = 256 << 20
#: Suffixes an uploaded file keeps in the store (readers look at them); any other is dropped.
UPLOAD_SUFFIXES = (".csv", ".txt", ".tsv", ".dat", ".ndax", ".nda", ".xdi", ".xmu", ".nor", ".xy", ".xye", ".chi")
#: Rows per page of the list endpoints, and their most.
DEFAULT_PAGE_ROWS = 100
MAX_PAGE_ROWS = 10_000
#: API tokens: days until they expire when --expires-days is not given (None: never) and the most.
MAX_TOKEN_DAYS = 3650


# ---------------------------------------------------------------------------------- filters
@dataclass(frozen=True)
class Filter:
    """One filter of the cross-sample queries, as the library and the CLI spell it.

    ``name`` is the keyword of the query functions, ``flags`` the CLI options. A
    ``multiple`` filter takes several values (repeated options; comma lists for numbers)
    and is bound with SQL ``IN``; the others take one value, and ``default`` means "no
    filter". A numeric filter's values lie from ``low`` to ``high``: one outside matches
    nothing, so it is refused rather than answered with an empty table.
    """

    name: str
    flags: tuple[str, ...]
    type: type
    help: str
    multiple: bool = True
    default: object = None
    low: int = 0
    high: int = MAX_CATALOGUE_INT

    def given(self, value) -> bool:
        """Whether ``value`` asks for filtering (not the default, not an empty list)."""
        return value is not None and value != self.default and value != [] and value != ()

    def read(self, text: str):
        """A numeric filter's value typed as text (a CLI option, a query parameter, a form field):
        :func:`integer_list` (a single-valued filter: :func:`whole_number`) within its range.
        ValueError says what is wrong, quoting ``text``."""
        parse = integer_list if self.multiple else whole_number
        return parse(text, self.low, self.high)


#: Every filter a query may declare (txmdb.query declares which ones each query honours).
FILTERS = {f.name: f for f in (
    Filter("sample", ("--sample",), str, "Only these samples (repeatable)."),
    Filter("cell", ("--cell",), str, "Only these cells (repeatable)."),
    Filter("morphology", ("--morphology",), str,
           f"Only samples of these morphologies, e.g. {' or '.join(MORPHOLOGY_EXAMPLES)} (repeatable)."),
    Filter("state", ("--state",), str, "Only these states (repeatable)."),
    Filter("scan", ("--scan",), int, "Only these scan ids (repeatable, or comma-separated)."),
    Filter("analysis", ("--analysis",), int,
           "These analysis ids instead of each scan's latest (repeatable, or comma-separated)."),
    Filter("particle", ("--particle",), int, "Only these particle labels (repeatable, or comma-separated)."),
    Filter("scan_level", ("--scan-level",), bool, "Only whole-scan rows (no per-particle rows).",
           multiple=False, default=False),
    Filter("bin", ("--bin",), int, "Only these binning factors (repeatable, or comma-separated).",
           low=MIN_BIN_FACTOR, high=MAX_BIN_FACTOR),
    Filter("weighted", ("--weighted/--unweighted",), bool, "Only |u|-weighted or only plain histograms.",
           multiple=False),
    Filter("run", ("--run",), int, "Only these cycling runs (repeatable, or comma-separated)."),
    Filter("cycle", ("--cycle",), int, "Only these cycles (repeatable, or comma-separated)."),
    Filter("edge", ("--edge",), str, f"Only these edges, e.g. {' or '.join(EDGES)} (repeatable)."),
    Filter("mode", ("--mode",), str, f"Only these detection modes: {', '.join(MODES)} (repeatable)."),
    Filter("status", ("--status",), str,
           f"Only analyses in these states: {', '.join(ANALYSIS_STATUSES)} (repeatable)."),
    Filter("registration", ("--registration",), int, "Only these registration ids (repeatable, or comma-separated)."),
    Filter("map", ("--map",), str, f"Only these maps: {', '.join(MAP_NAMES)} (repeatable) "
                                   "[statistics of gradients, particles, depth and edge: default edge]."),
)}


def whole_number(text: str, low: int = 0, high: int = MAX_CATALOGUE_INT) -> int:
    """A whole number typed by a user (an id, a cycle, a filter value, a count) given as text:
    ASCII digits only, from ``low`` to ``high`` (by default what the catalogue holds). ``int``
    alone would take '٣', '+1' and '1_000', and raise on '²' (a digit to ``str.isdigit``) and on
    4,301 digits. ValueError says what is wrong, quoting ``text``."""
    text = str(text)
    digits = text.strip(SPACES)
    significant = digits.lstrip("0") or "0"   # '007' is 7 whatever the range's width
    if not (digits.isascii() and digits.isdigit()) or len(significant) > len(str(high)) \
            or not low <= int(significant) <= high:
        raise ValueError(f"{quoted(text)} is not a whole number from {low} to {high}")
    return int(significant)


#: What surrounds a typed number harmlessly: spaces and tabs, not the control characters and
#: line separators ``str.strip()`` takes too.
SPACES = " \t"


def quoted(text: str, most: int = 40) -> str:
    """``repr`` of a refused value for its error message, cut to ``most`` characters (a 100 kB
    value is not echoed back whole)."""
    return repr(text if len(text) <= most else text[:most] + "…")


def integer_list(text: str, low: int = 0, high: int = MAX_CATALOGUE_INT) -> list[int]:
    """The value of a numeric filter given as text (a CLI option, an API query parameter): a whole
    number or a comma-separated list of them (:func:`whole_number` each, from ``low`` to ``high``).
    ValueError says what is wrong, quoting ``text``."""
    parts = [v for v in str(text).split(",") if v.strip(SPACES)]
    if not parts:  # " , ," would otherwise mean "no filter": every row
        raise ValueError(f"{quoted(str(text))} holds no number; give N or N,N,…")
    return [whole_number(v.strip(SPACES), low, high) for v in parts]
