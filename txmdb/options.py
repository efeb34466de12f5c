"""Options of ``txm analyze`` and ``txm register`` as text, parsed once for every caller.

The command line, a queued job's ``parameters`` (txmdb.jobs) and a watch rule's
``analysis`` table (txmdb.harvest) spell the options the same way — the command's option
names with ``_`` for ``-`` (``theta_bins``, ``min_jump``) and its value syntax (``bin =
"1,2,3"``, ``pre = "8200:8320"``) — and all turn into the library's objects here, so a job
runs exactly what the same command typed in a shell would.

Standard library only at import time (the CLI imports this at start-up).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

#: ``txm analyze``'s options: (type, default); a None default is the element preset's, or
#: automatic (``workers``: one kernel thread per usable core). ``registration``: None is the scan's latest registration, ``"none"`` the stack as it is.
#: ``white_line``: None is the element's preset window where the stack has 4 energies in it,
#: ``"none"`` no white line. ``lcf``: reference names, comma-separated.
ANALYZE_OPTIONS: dict[str, tuple[type, Any]] = {
    "element": (str, "Ni"), "bin": (str, "1,2,3"), "pre": (str, None), "post": (str, None), "edge": (str, None),
    "min_jump": (float, None), "snr": (float, None), "theta_bins": (int, 36), "min_particle_voxels": (int, None),
    "workers": (int, None), "registration": (str, None), "clusters": (int, None),
    "gradient_map": (str, "edge"),
    "white_line": (str, None), "lcf": (str, None), "lcf_window": (str, None),
}
#: ``txm register``'s options: (type, default).
REGISTER_OPTIONS: dict[str, tuple[type, Any]] = {
    "reference_energy": (float, None), "max_shift": (float, None), "roi": (str, None), "accept_poor": (bool, False),
}


def parse_window(text: Optional[str], option: str, *, open_ends: bool = True) -> Optional[tuple[float, float]]:
    """'LO:HI' in eV → (lo, hi); with ``open_ends`` either side may be empty (±inf)."""
    from txmdb.errors import TxmdbError

    if text is None:
        return None
    lo, sep, hi = text.partition(":")
    try:
        window = (float(lo) if lo.strip() else float("-inf"), float(hi) if hi.strip() else float("inf"))
    except ValueError:
        raise TxmdbError(f"{option} {text!r}: expected LO:HI in eV, e.g. 8325:8365") from None
    if not sep or not window[0] < window[1]:
        raise TxmdbError(f"{option} {text!r}: expected LO:HI in eV with LO < HI")
    if not open_ends and not all(map(math.isfinite, window)):
        raise TxmdbError(f"{option} {text!r}: both ends are needed (the edge jump is taken at the window's centre)")
    return window


def non_negative(value: Optional[float], option: str) -> Optional[float]:
    """A threshold (``--min-jump``, ``--snr``): a finite number ≥ 0, or None (the preset's).
    A negative one would pass every voxel and spectrum, noise and empty pores alike."""
    from txmdb.errors import TxmdbError

    if value is not None and not (math.isfinite(value) and value >= 0):
        raise TxmdbError(f"{option} must be a number ≥ 0, got {value:g}")
    return value


def parse_bins(text: str) -> tuple[int, ...]:
    """'1,2,3' → the sorted binning factors, each within the vocabulary's bounds."""
    from txmdb.errors import TxmdbError
    from txmdb.vocabulary import MAX_BIN_FACTOR, MIN_BIN_FACTOR, whole_number

    try:
        factors = tuple(sorted({whole_number(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise TxmdbError(f"--bin {text!r}: expected binning factors like 1,2,3") from None
    if not factors or min(factors) < MIN_BIN_FACTOR or max(factors) > MAX_BIN_FACTOR:
        raise TxmdbError(f"--bin {text!r}: binning factors must be whole numbers from {MIN_BIN_FACTOR} "
                         f"to {MAX_BIN_FACTOR}")
    return factors


def parse_registration(text: Optional[str]):
    """``--registration``: None → the scan's latest (``LATEST``), ``none`` → None, else an id."""
    from txmdb.catalog.txm import LATEST
    from txmdb.errors import TxmdbError
    from txmdb.vocabulary import whole_number

    if text is None:
        return LATEST
    if text.strip().lower() == "none":
        return None
    try:
        return whole_number(text)
    except ValueError:
        raise TxmdbError(f"--registration {text!r}: expected a registration id or none") from None


def parse_roi(text: Optional[str]) -> Optional[tuple[tuple[Optional[int], Optional[int]], ...]]:
    """'Z0:Z1,Y0:Y1,X0:X1' (2-D: 'Y0:Y1,X0:X1'; an end may be empty) → ((lo, hi), …)."""
    from txmdb.errors import TxmdbError
    from txmdb.vocabulary import SPACES, whole_number

    if text is None:
        return None
    out = []
    for part in text.split(","):
        lo, sep, hi = part.partition(":")
        try:
            if not sep:
                raise ValueError(part)
            out.append((whole_number(lo) if lo.strip(SPACES) else None, whole_number(hi) if hi.strip(SPACES) else None))
        except ValueError:
            raise TxmdbError(f"--roi {text!r}: expected Z0:Z1,Y0:Y1,X0:X1 (2-D: Y0:Y1,X0:X1) in voxels, "
                             f"e.g. 0:64,:,10:90") from None
    return tuple(out)


def option_values(kind: str, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """The full option set of a ``kind`` job (``analyze`` | ``register``): ``values`` over the defaults.

    Names may use ``-`` or ``_``; an unknown name, or a value of the wrong type, is a one-line
    error naming it. The result is what a job stores as its ``parameters`` (JSON).
    """
    from txmdb.errors import TxmdbError

    options = {"analyze": ANALYZE_OPTIONS, "register": REGISTER_OPTIONS}.get(kind)
    if options is None:
        raise TxmdbError(f"unknown job kind {kind!r}: expected analyze or register")
    if values is not None and not isinstance(values, Mapping):  # a job row edited by hand
        raise TxmdbError(f"{kind} options: expected a table of option names and values, got {str(values)[:80]!r}")
    out = {name: default for name, (_, default) in options.items()}
    for key, value in (values or {}).items():
        name = str(key).replace("-", "_")
        if name not in options:
            raise TxmdbError(f"unknown {kind} option {key!r}; options: {', '.join(options)}")
        out[name] = _typed(f"{kind} option {name}", options[name][0], value)
    return out


def _typed(what: str, wanted: type, value: Any) -> Any:
    """``value`` as ``wanted`` (None stays None); numbers and words from TOML or the CLI alike."""
    from txmdb.errors import TxmdbError

    if value is None:
        return None
    if isinstance(value, (list, tuple)) and wanted is str:  # a TOML array: bin = [1, 2, 3]
        value = ",".join(str(v) for v in value)
    elif isinstance(value, int) and not isinstance(value, bool) and wanted in (str, float):
        value = wanted(value)  # registration = 4, min_jump = 1
    if not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool)):
        raise TxmdbError(f"{what}: expected {wanted.__name__}, got {value!r}")
    if wanted is float and not math.isfinite(value):  # NaN masks every voxel; JSON (PostgreSQL) has neither
        raise TxmdbError(f"{what}: expected a finite number, got {value!r}")
    return value


def analysis_request(values: Mapping[str, Any] | None, *, catalog=None):
    """``txm analyze``'s options (names and text as :func:`option_values`) → (AnalysisOptions, registration).

    ``registration`` is :data:`txmdb.catalog.txm.LATEST`, None (the stack as it is) or an id,
    for :func:`txmdb.catalog.txm.analyze_scan`. Every bad value is a one-line TxmdbError.
    LCF references are loaded from ``catalog``; without one (checking a job's or a rule's
    options) only their names are known.
    """
    from txmdb.analysis.edge import edge_parameters
    from txmdb.errors import TxmdbError
    from txmdb.pipeline import AnalysisOptions
    from txmdb.vocabulary import ELEMENTS, MAX_ANALYSIS_WORKERS, MAX_CATALOGUE_INT

    v = option_values("analyze", values)
    if v["element"] not in ELEMENTS:
        raise TxmdbError(f"--element {v['element']!r}: expected one of {', '.join(ELEMENTS)}")
    if not 2 <= v["theta_bins"] <= 180:
        raise TxmdbError(f"--theta-bins must be between 2 and 180, got {v['theta_bins']}")
    if v["min_particle_voxels"] is not None and not 0 <= v["min_particle_voxels"] <= MAX_CATALOGUE_INT:
        # a particle's voxel count is a catalogue whole number: a larger minimum keeps none
        raise TxmdbError(f"--min-particle-voxels must be between 0 and {MAX_CATALOGUE_INT}, "
                         f"got {v['min_particle_voxels']}")
    if v["workers"] is not None and not 1 <= v["workers"] <= MAX_ANALYSIS_WORKERS:
        raise TxmdbError(f"--workers must be between 1 and {MAX_ANALYSIS_WORKERS}, got {v['workers']}")
    extra = {}
    if v["clusters"] is not None:  # phase clusters (issue 11), asked for only when given
        from txmdb.vocabulary import MAX_CLUSTERS

        # one cluster is every valid voxel: no phases to tell apart
        if not 2 <= v["clusters"] <= MAX_CLUSTERS:
            raise TxmdbError(f"--clusters must be between 2 and {MAX_CLUSTERS}, got {v['clusters']}")
        extra["clusters"] = v["clusters"]
    extra.update(_spectral_request(v, catalog))
    extra["gradient_maps"] = v["gradient_map"]     # names checked by AnalysisOptions (txmdb.io.maps)
    params = edge_parameters(v["element"], pre=parse_window(v["pre"], "--pre"), post=parse_window(v["post"], "--post"),
                             edge=parse_window(v["edge"], "--edge", open_ends=False),
                             min_jump=non_negative(v["min_jump"], "--min-jump"), snr=non_negative(v["snr"], "--snr"))
    options = AnalysisOptions(params=params, bin_factors=parse_bins(v["bin"]), theta_bins=v["theta_bins"],
                              min_particle_voxels=v["min_particle_voxels"], workers=v["workers"], **extra)
    return options, parse_registration(v["registration"])


def _spectral_request(v: Mapping[str, Any], catalog) -> dict[str, Any]:
    """The white-line and LCF fields of AnalysisOptions from ``white_line``, ``lcf``, ``lcf_window``."""
    import numpy as np

    from txmdb.analysis.edge import LCF_WINDOW_PRESETS, WHITE_LINE_PRESETS
    from txmdb.errors import TxmdbError

    out: dict[str, Any] = {}
    text = v["white_line"]
    if text is None:
        out.update(white_line=WHITE_LINE_PRESETS[v["element"]], white_line_optional=True)
    elif text.strip().lower() != "none":
        out["white_line"] = parse_window(text, "--white-line", open_ends=False)
    if v["lcf"] is None:
        if v["lcf_window"] is not None:
            raise TxmdbError("--lcf-window is the fit window of --lcf NAME,NAME: give the references too")
        return out
    names = [name.strip() for name in v["lcf"].split(",")]
    if not all(names):
        raise TxmdbError(f"--lcf {v['lcf']!r}: expected reference names separated by commas, e.g. NiO,LiNiO2")
    if catalog is not None:
        from txmdb.catalog.spectroscopy import load_references

        references = load_references(catalog, names, edge=f"{v['element']}-K")
    else:
        from txmdb.catalog.spectroscopy import ReferenceSpectrum, reference_name

        empty = np.empty(0)
        references = tuple(ReferenceSpectrum(reference_name(name), 0, empty, empty) for name in names)
    window = parse_window(v["lcf_window"], "--lcf-window", open_ends=False)
    out.update(lcf=references, lcf_window=window or LCF_WINDOW_PRESETS[v["element"]])
    return out


def registration_request(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """``txm register``'s options → the keywords of :func:`txmdb.catalog.registration.register_scan`."""
    v = option_values("register", values)
    return {"reference_energy_ev": v["reference_energy"], "max_shift": v["max_shift"], "roi": parse_roi(v["roi"]),
            "accept_poor": v["accept_poor"]}
