"""Hostile input through the real CLI, on SQLite and PostgreSQL (DESIGN §8).

Property-based: hypothesis builds malformed HDF5 tomograms, cycler CSVs and XAS spectra and
feeds them to ``txm ingest``, ``cycling ingest`` and ``xas ingest``. Whatever the file, the
command either succeeds (the file happened to be valid) or fails with exit status 1 and ONE
line ``error: …`` naming the file — never a traceback, never another exit status — and a
failure leaves the catalogue's row counts and the store's listing exactly as they were.

Also: user strings (sample, cell and state names) never become paths — whatever they hold
(``../..``, absolute paths, backslashes, NUL, newlines) no file appears outside ``--store``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DATA

GOLDEN = DATA / "golden"
NI_FOIL = DATA / "xas" / "ni_metal_rt.xdi"

# Examples per property: enough to find the bugs of a reader on SQLite, fewer on the
# PostgreSQL run (each CLI call there costs a few connections).
EXAMPLES = {"sqlite": 40, "postgresql": 10}
if os.environ.get("TXMDB_HOSTILE_EXAMPLES"):  # a longer bug hunt: TXMDB_HOSTILE_EXAMPLES=500
    EXAMPLES = dict.fromkeys(EXAMPLES, int(os.environ["TXMDB_HOSTILE_EXAMPLES"]))


def _settings(cli, factor: float = 1.0):
    backend = "postgresql" if cli.url.startswith("postgresql") else "sqlite"
    return settings(
        max_examples=max(3, int(EXAMPLES[backend] * factor)),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------- helpers

TABLES = ("samples", "cells", "cycling_runs", "cycles", "xas_measurements", "txm_scans", "analyses")


def _counts(cli) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in TABLES)
    out = cli("query", "sql", sql, "--format", "json")
    assert out.exit_code == 0, out.output
    return {row["t"]: row["n"] for row in json.loads(out.stdout)}


def _listing(root: Path) -> list[str]:
    """Every file and folder under ``root`` (relative), with file sizes."""
    if not root.exists():
        return []
    return sorted(f"{p.relative_to(root)}:{p.stat().st_size if p.is_file() else 'dir'}" for p in root.rglob("*"))


def _fresh(tmp: Path, suffix: str) -> Path:
    folder = tmp / "inputs"
    folder.mkdir(exist_ok=True)
    return folder / f"in-{uuid.uuid4().hex[:8]}{suffix}"


def check_clean_outcome(cli, args: list, path: Path) -> None:
    """Run the command; exit 0, or exit 1 with one ``error:`` line naming the file and nothing changed."""
    before = (_counts(cli), _listing(Path(cli.store)))
    result = cli(*args)
    text = result.output
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1), (result.exit_code, text)
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error:"), lines[0]
        assert path.name in lines[0], lines[0]
        assert (_counts(cli), _listing(Path(cli.store))) == before
    else:
        assert result.stdout.strip().splitlines()[-1].isdigit(), result.stdout


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    assert cli("sample", "add", "S").exit_code == 0
    assert cli("cell", "add", "C", "--sample", "S", "--active-mass-mg", "10").exit_code == 0
    return cli


# --------------------------------------------------------------------------- HDF5 tomograms
#
# Each generated file starts as a valid small tomogram of one of the three layouts and then
# gets up to three mutations, so the readers' deeper checks (energies, flats, finite voxels,
# attributes) are reached as often as the shallow ones (not HDF5, no layout).

LAYOUT_PATHS = {
    "dxchange": ("/exchange/data", "/exchange/energy", "/exchange/data_white", "/exchange/data_dark"),
    "txm-sandbox": ("/registration_results/reg_results/registered_xanes3D",
                    "/registration_results/reg_results/eng_list", None, None),
    "fxi": ("/img_xanes", "/X_eng", "/img_bkg", "/img_dark"),
}
TOMOGRAM_MUTATIONS = [
    "no data", "data is group", "rank", "empty axis", "dtype int", "dtype uint8", "dtype bool", "dtype complex",
    "dtype bytes", "dtype vlen str", "dtype compound", "all nan", "half nan", "inf", "huge", "negative",
    "energy missing", "energy group", "energy nan", "energy inf", "energy duplicate", "energy descending",
    "energy kev", "energy short", "energy long", "energy 2d", "energy column", "energy scalar", "energy strings",
    "energy empty", "energy huge", "energy all same", "white wrong shape", "white scalar", "white zero",
    "dark wrong shape", "white missing", "voxel attr", "unit attr", "extra datasets", "truncate", "flip bytes",
    "zero tail", "text file", "empty file",
]


@st.composite
def tomogram_specs(draw):
    return {
        "layout": draw(st.sampled_from(list(LAYOUT_PATHS))),
        "n_energy": draw(st.integers(2, 8)),
        "spatial": tuple(draw(st.lists(st.integers(1, 5), min_size=2, max_size=3))),
        "mutations": draw(st.lists(st.sampled_from(TOMOGRAM_MUTATIONS), max_size=3, unique=True)),
        "attr_name": draw(st.sampled_from(["voxel_size_nm", "pixel_size", "voxel_size_um", "voxel_size"])),
        "attr_value": draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                                     st.text(max_size=5), st.binary(max_size=5),
                                     st.lists(st.floats(allow_nan=True), max_size=3))),
        "unit_value": draw(st.one_of(st.sampled_from(["nm", "um", "µm", "parsec", ""]), st.binary(max_size=4),
                                     st.integers())),
        "cut": draw(st.floats(0.02, 0.98)),
        "seed": draw(st.integers(0, 2**16)),
        "voxel_option": draw(st.sampled_from([None, None, None, "30", "-3", "0", "nan", "inf", "-inf"])),
        "path_options": draw(st.sampled_from([None, None, None, ("/exchange/data", "/exchange/energy"),
                                              ("/nope", "/X_eng"), ("/", "/"), ("/exchange/energy", "/exchange/data")])),
    }


def _energy_array(mutations, n: int):
    e = np.linspace(8280.0, 8420.0, n)
    m = set(mutations)
    if "energy nan" in m:
        e[n // 2] = np.nan
    if "energy inf" in m:
        e[-1] = np.inf
    if "energy duplicate" in m:
        e[1] = e[0]
    if "energy descending" in m:
        e = e[::-1].copy()
    if "energy all same" in m:
        e[:] = 8333.0
    if "energy kev" in m:
        e = e / 1000
    if "energy huge" in m:
        e = e * 1e300
    if "energy short" in m:
        e = e[:-1]
    if "energy long" in m:
        e = np.r_[e, 9000.0]
    if "energy empty" in m:
        e = e[:0]
    if "energy 2d" in m:
        e = np.stack([e, e])
    if "energy column" in m:
        e = e[:, None]
    if "energy scalar" in m:
        e = np.float64(8300.0)
    if "energy strings" in m:
        e = np.array([f"{x:.1f} eV".encode() for x in np.atleast_1d(e).ravel()] or [b"x"])
    return e


def _stack_array(spec, rng):
    m = set(spec["mutations"])
    shape = (spec["n_energy"], *spec["spatial"])
    if "rank" in m:
        shape = shape[: rng.choice([0, 1, 2])] if rng.random() < 0.5 else (*shape, 2, 2)
    if "empty axis" in m:
        shape = (*shape[:-1], 0) if shape else (0,)
    edge = 8340 + rng.normal(0, 3, shape[1:] if len(shape) > 1 else ())
    e = np.linspace(8280.0, 8420.0, shape[0] if shape else 1)
    e = e.reshape((-1,) + (1,) * max(len(shape) - 1, 0))
    data = 0.1 + 1 / (1 + np.exp(-(e - edge) / 4)) if shape else np.float64(1.0)
    # np.asarray: a rank-0 stack stays an array (a numpy scalar would refuse item assignment).
    data = np.asarray(np.broadcast_to(data, shape).copy() + rng.normal(0, 0.01, shape))
    if spec["layout"] == "fxi":
        data = np.exp(-data) * 1000  # raw counts: absorbance = -ln(I / white)
    if "all nan" in m:
        data[...] = np.nan
    if "half nan" in m:
        data[rng.random(data.shape) < 0.5] = np.nan
    if "inf" in m:
        data[...] = np.inf
    if "huge" in m:
        data = data * 1e300
    if "negative" in m:
        data = -data
    for kind, dtype in (("dtype int", "int16"), ("dtype uint8", "uint8"), ("dtype bool", "bool"),
                        ("dtype complex", "complex64")):
        if kind in m:
            with np.errstate(all="ignore"):
                data = np.nan_to_num(data).astype(dtype)
    if "dtype bytes" in m:
        data = data.astype("S8")
    if "dtype vlen str" in m:
        data = np.array([str(v) for v in data.ravel()], dtype=h5py.string_dtype()).reshape(data.shape)
    if "dtype compound" in m:
        data = np.zeros(data.shape, dtype=[("a", "f4"), ("b", "i2")])
    return data.astype("float32") if data.dtype == np.float64 else data


def write_tomogram(spec: dict, path: Path) -> None:
    rng = np.random.default_rng(spec["seed"])
    m = set(spec["mutations"])
    if "text file" in m or "empty file" in m:
        path.write_bytes(b"" if "empty file" in m else b"\x89HDF\r\n\x1a\n not really HDF5\n")
        return
    data_path, energy_path, white_path, dark_path = LAYOUT_PATHS[spec["layout"]]
    with h5py.File(path, "w") as f:
        data = _stack_array(spec, rng)
        if "no data" not in m:
            if "data is group" in m:
                f.create_group(data_path)
            else:
                f[data_path] = data
        if "energy group" in m:
            f.create_group(energy_path)
        elif "energy missing" not in m:
            f[energy_path] = _energy_array(spec["mutations"], spec["n_energy"])
        spatial = tuple(np.shape(data)[1:])
        if white_path and "white missing" not in m:
            white = np.full((2, *spatial), 1000.0)
            if "white wrong shape" in m:
                white = np.ones((2, 7, 3))
            if "white scalar" in m:
                white = np.float64(1.0)
            if "white zero" in m:
                white = np.zeros((2, *spatial))
            f[white_path] = white
            f[dark_path] = np.ones((3, 9)) if "dark wrong shape" in m else np.zeros(spatial)
        target = f[data_path] if data_path in f else f
        if "voxel attr" in m:
            try:
                target.attrs[spec["attr_name"]] = spec["attr_value"]
            except (TypeError, ValueError):
                target.attrs[spec["attr_name"]] = repr(spec["attr_value"])
        if "unit attr" in m:
            target.attrs["pixel_size"] = 30.0
            for key in ("pixel_size_unit", "units"):
                try:
                    target.attrs[key] = spec["unit_value"]
                except (TypeError, ValueError, OverflowError):
                    target.attrs[key] = repr(spec["unit_value"])
        if "extra datasets" in m:
            f["/exchange/theta"] = np.arange(3.0)
            f["/extra/junk"] = np.frombuffer(b"junk", "u1")
    raw = None
    for damage in ("truncate", "flip bytes", "zero tail"):
        if damage in m:
            raw = bytearray(path.read_bytes()) if raw is None else raw
            cut = max(1, int(len(raw) * spec["cut"]))
            if damage == "truncate":
                raw = raw[:cut]
            elif damage == "flip bytes":
                for i in rng.integers(0, len(raw), 24):
                    raw[i] ^= 0xFF
            else:
                raw[cut:] = bytes(len(raw) - cut)
    if raw is not None:
        path.write_bytes(bytes(raw))


def test_hostile_tomograms(lab, tmp_path):
    @_settings(lab, factor=1.3)
    @given(spec=tomogram_specs())
    def prop(spec):
        path = _fresh(tmp_path, ".h5")
        write_tomogram(spec, path)
        args = ["txm", "ingest", path, "--sample", "S"]
        if spec["voxel_option"] is not None:
            args += ["--voxel-nm", spec["voxel_option"]]
        if spec["path_options"] is not None:
            args += ["--data", spec["path_options"][0], "--energy", spec["path_options"][1]]
        check_clean_outcome(lab, args, path)

    prop()


# --------------------------------------------------------------------------- cycler CSV
#
# A valid constant-current CSV (three cycles, Battery Data Format or Arbin names) with up
# to three mutations; plus wholly random bytes and empty files now and then.

HEADER_SETS = {
    "bdf": ["test_time_second", "voltage_volt", "current_ampere", "cycle_count"],
    "arbin": ["Test_Time_s", "Voltage_V", "Current_A", "Cycle_Index", "Charge_Capacity_Ah", "Discharge_Capacity_Ah"],
    "milli": ["Time_s", "Voltage(V)", "Current(mA)", "Step_Type"],
}
BAD_CELLS = ["", "nan", "NaN", "inf", "-inf", "1e999", "1e308", "-1e308", "abc", "\"", "\"a,b\"", "0x1F", "1,5",
             "00:01:02", "1:2:3:4", " ", "é", "NULL", "None", "9" * 400, "-0", "1e-400"]
CSV_MUTATIONS = ["drop column", "rename column", "garbage cell", "nan cell", "huge cell", "ragged long",
                 "ragged short", "blank lines", "binary splice", "truncate", "header only", "duplicate header",
                 "bom", "crlf", "cr only", "semicolons", "all rest", "nan column", "time backwards",
                 "random header", "gb18030", "latin1", "quote open", "one column"]


def _good_rows(names: list[str], n_cycles: int = 3, per_step: int = 4) -> list[list[str]]:
    rows, t = [], 0.0
    for cycle in range(1, n_cycles + 1):
        for sign, v0 in ((1, 3.6), (-1, 4.2)):
            for k in range(per_step):
                t += 60.0
                q = 0.001 * (k + 1)
                row = {"time": t, "volt": v0 + sign * 0.1 * k, "curr": sign * 0.001, "cycle": cycle}
                out = []
                for name in names:
                    low = name.lower()
                    if "time" in low:
                        out.append(f"{row['time']:g}")
                    elif "volt" in low:
                        out.append(f"{row['volt']:.4f}")
                    elif "current" in low:
                        out.append(f"{row['curr'] * (1000 if 'mA' in name else 1):g}")
                    elif "cycle" in low:
                        out.append(str(cycle))
                    elif "step_type" in low:
                        out.append("CC_Chg" if sign > 0 else "CC_DChg")
                    elif "discharge" in low:
                        out.append(f"{q if sign < 0 else 0:g}")
                    elif "charge" in low:
                        out.append(f"{q if sign > 0 else 0:g}")
                    else:
                        out.append("0")
                rows.append(out)
    return rows


@st.composite
def cycler_csvs(draw) -> bytes:
    kind = draw(st.sampled_from(["mutated"] * 8 + ["random bytes", "empty"]))
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b"   \n\n", b",", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n,\n"]))
    if kind == "random bytes":
        return draw(st.binary(min_size=1, max_size=300))
    names = list(HEADER_SETS[draw(st.sampled_from(list(HEADER_SETS)))])
    rows = _good_rows(names)
    mutations = draw(st.lists(st.sampled_from(CSV_MUTATIONS), max_size=3, unique=True))
    pick_row = lambda: draw(st.integers(0, max(len(rows) - 1, 0)))  # noqa: E731
    pick_col = lambda: draw(st.integers(0, len(names) - 1))  # noqa: E731
    for mut in mutations:
        if not rows or not names:
            break
        if mut == "drop column" and len(names) > 1:
            c = pick_col()
            names.pop(c)
            rows = [r[:c] + r[c + 1:] for r in rows]
        elif mut == "rename column":
            names[pick_col()] = draw(st.text(max_size=8).filter(lambda s: not set(s) & set(",\r\n\"")))
        elif mut in ("garbage cell", "nan cell", "huge cell"):
            value = {"garbage cell": draw(st.sampled_from(BAD_CELLS)), "nan cell": "nan",
                     "huge cell": draw(st.sampled_from(["1e308", "1e309", "-1e308", "9" * 400]))}[mut]
            row = rows[pick_row()]
            if row:
                row[min(pick_col(), len(row) - 1)] = value
        elif mut == "ragged long":
            rows[pick_row()].append("1")
        elif mut == "ragged short" and rows[0]:
            rows[pick_row()].pop()
        elif mut == "header only":
            rows = []
        elif mut == "duplicate header":
            names.append(names[0])
            rows = [r + [r[0]] for r in rows]
        elif mut == "all rest":
            ci = next((i for i, n in enumerate(names) if "urrent" in n), None)
            if ci is not None:
                for r in rows:
                    if ci < len(r):
                        r[ci] = "0"
        elif mut == "nan column":
            c = pick_col()
            for r in rows:
                if c < len(r):
                    r[c] = "nan"
        elif mut == "time backwards":
            rows.reverse()
        elif mut == "random header":
            names = draw(st.lists(st.text(max_size=6).filter(lambda s: not set(s) & set(",\r\n\"")),
                                  min_size=len(names), max_size=len(names)))
        elif mut == "one column":
            names, rows = names[:1], [r[:1] for r in rows]
    sep = ";" if "semicolons" in mutations else ","
    eol = "\r\n" if "crlf" in mutations else "\r" if "cr only" in mutations else "\n"
    lines = [sep.join(names)] + [sep.join(r) for r in rows]
    if "blank lines" in mutations:
        lines.insert(min(3, len(lines)), "")
        lines.append("")
    if "quote open" in mutations and len(lines) > 2:
        lines[2] = '"' + lines[2]
    text = eol.join(lines) + eol
    encoding = "gb18030" if "gb18030" in mutations else "latin-1" if "latin1" in mutations else "utf-8"
    data = text.encode(encoding, errors="replace") if encoding != "utf-8" else text.encode("utf-8", "surrogatepass")
    if "bom" in mutations:
        data = b"\xef\xbb\xbf" + data
    if "truncate" in mutations:
        data = data[: draw(st.integers(1, max(len(data) - 1, 1)))]
    if "binary splice" in mutations:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data


def test_hostile_cycler_files(lab, tmp_path):
    @_settings(lab)
    @given(content=cycler_csvs(), fmt=st.sampled_from(["auto", "auto", "auto", "csv", "neware-csv", "ndax"]),
           columns=st.sampled_from([None, None, None, "time_s=a,voltage_v=b,current_a=c", "voltage_v=Voltage_V"]))
    def prop(content, fmt, columns):
        path = _fresh(tmp_path, ".csv")
        path.write_bytes(content)
        args = ["cycling", "ingest", path, "--cell", "C", "--format", fmt]
        if columns:
            args += ["--columns", columns]
        check_clean_outcome(lab, args, path)

    prop()


# --------------------------------------------------------------------------- XAS spectra
#
# A valid Ni K-edge (or L3) spectrum, XDI or plain text, with up to three mutations.

SPECTRUM_MUTATIONS = ["one column", "duplicate energy", "non-monotonic", "descending", "kev", "nan energy",
                      "inf mu", "text cell", "fortran exponent", "ragged row", "garbage header", "bad column def",
                      "column beyond data", "no energy column", "angle without d", "angle with bad d",
                      "negative i0", "zero i0", "few points", "constant mu", "huge values", "binary splice",
                      "empty", "only comments", "trailing comment", "unicode", "i0 it columns", "wide table"]


@st.composite
def spectra(draw) -> bytes:
    xdi = draw(st.booleans())
    edge_ev = draw(st.sampled_from([8333.0, 853.0]))
    n = 60
    mutations = set(draw(st.lists(st.sampled_from(SPECTRUM_MUTATIONS), max_size=3, unique=True)))
    if "few points" in mutations:
        n = draw(st.integers(0, 6))
    e = np.linspace(edge_ev - 80, edge_ev + 150, n)
    with np.errstate(all="ignore"):
        mu = 0.2 + 1 / (1 + np.exp(-(e - edge_ev) / 3))
    i0 = np.full(n, 1e5)
    cols = {"energy": e, "mutrans": mu}
    if "i0 it columns" in mutations:
        cols = {"energy": e, "i0": i0, "itrans": i0 * np.exp(-mu)}
    if "wide table" in mutations:
        cols = {**cols, "extra1": mu * 2, "extra2": mu * 3}
    if "constant mu" in mutations:
        cols = {k: (v if k == "energy" else np.ones(n)) for k, v in cols.items()}
    if n > 4:
        if "duplicate energy" in mutations:
            e[3] = e[2]
        if "non-monotonic" in mutations and n > 6:
            e[5], e[6] = e[6], e[5]
        if "nan energy" in mutations:
            e[4] = np.nan
        if "zero i0" in mutations and "i0" in cols:
            cols["i0"][2] = 0
        if "negative i0" in mutations and "i0" in cols:
            cols["i0"][2] = -1
    if "descending" in mutations:
        cols = {k: v[::-1] for k, v in cols.items()}
    if "kev" in mutations:
        cols["energy"] = cols["energy"] / 1000
    if "huge values" in mutations:
        cols = {k: v * 1e305 for k, v in cols.items()}
    if "no energy column" in mutations:
        cols = {("x" if k == "energy" else k): v for k, v in cols.items()}
    if "angle without d" in mutations or "angle with bad d" in mutations:
        cols = {("angle" if k == "energy" else k): v for k, v in cols.items()}
    if "one column" in mutations:
        cols = dict(list(cols.items())[:1])
    names = list(cols)
    lines: list[str] = []
    if xdi:
        lines.append("# XDI/1.0 GSE/1.0")
        for i, name in enumerate(names, start=1):
            unit = "deg" if name == "angle" else "eV" if name == "energy" else ""
            lines.append(f"# Column.{i}: {name} {unit}".rstrip())
        if "bad column def" in mutations:
            lines.append("# Column.x: " + draw(st.text(max_size=6).filter(lambda s: not set(s) & set("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))))
        if "column beyond data" in mutations:
            lines.append(f"# Column.{len(names) + 3}: mufluor")
        if "angle with bad d" in mutations:
            lines.append("# Mono.d_spacing: " + draw(st.sampled_from(["abc", "0", "-3.1", "nan", "", "1e-300"])))
        lines.append("# Element.edge: K")
        if "garbage header" in mutations:
            lines.append("# " + draw(st.text(max_size=20).filter(lambda s: not set(s) & set("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))))
        lines += ["# ///", "# a comment", "#----", "# " + " ".join(names)]
    elif "garbage header" in mutations:
        lines.append(draw(st.text(min_size=1, max_size=20).filter(lambda s: not set(s) & set("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))))
    else:
        lines.append("# " + " ".join(names))
    if "only comments" in mutations:
        return "\n".join(lines).encode()
    rows = np.column_stack(list(cols.values())) if n else np.zeros((0, len(cols)))
    sep = draw(st.sampled_from([" ", "\t", ",", "  "]))
    for row in rows:
        lines.append(sep.join(repr(float(v)) for v in row))
    data_start = len(lines) - len(rows)
    if len(rows):
        at = data_start + draw(st.integers(0, len(rows) - 1))
        if "text cell" in mutations:
            lines[at] = lines[at].replace(lines[at].split(sep)[-1], draw(st.sampled_from(["abc", "--", "1.2.3", "nan"])))
        if "inf mu" in mutations:
            lines[at] = sep.join(lines[at].split(sep)[:-1] + ["inf"])
        if "fortran exponent" in mutations:
            lines[at] = lines[at].replace("e", "D")
        if "ragged row" in mutations:
            lines[at] = sep.join(lines[at].split(sep)[:-1]) or "1"
        if "unicode" in mutations:
            lines[at] += " π"
    if "trailing comment" in mutations:
        lines.append("# end of scan")
    data = "\n".join(lines).encode("utf-8")
    if "empty" in mutations:
        data = draw(st.sampled_from([b"", b"\n\n", b"   "]))
    if "binary splice" in mutations:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
    return data


def test_hostile_spectra(lab, tmp_path):
    @_settings(lab)
    @given(content=spectra(), edge=st.sampled_from(["Ni-K", "Ni-K", "Ni-L3"]))
    def prop(content, edge):
        path = _fresh(tmp_path, ".xdi")
        path.write_bytes(content)
        mode = "TEY" if edge == "Ni-L3" else "transmission"
        check_clean_outcome(lab, ["xas", "ingest", path, "--sample", "S", "--edge", edge, "--mode", mode], path)

    prop()


# --------------------------------------------------------------------------- paths never escape the store

HOSTILE_NAMES = ["../../escaped-a", "..\\..\\escaped-b", "../escaped-c/../../escaped-d", "nul\x00byte",
                 "new\nline", "/ABS/escaped-e", "~/escaped-f", "./.", "..", "%2e%2e%2fescaped-g", "x" * 300]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n)[:24])
def test_user_strings_never_become_paths(cli, tmp_path, monkeypatch, name):
    """Sample, cell and state names reach the catalogue, or are refused; no file lands outside --store."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    absolute = str(tmp_path / "ABS" / "escaped-e")
    name = name.replace("/ABS/escaped-e", absolute)
    # inputs first, so the snapshot includes them
    from txmdb.synthetic.cycling import ROD_NMC, write_cycling_csv

    cycling_csv = write_cycling_csv(ROD_NMC, tmp_path / "cells.csv", naming="bdf", records_per_step=5)
    assert cli("init").exit_code == 0

    def snapshot():
        skip = {"store", "catalogue.db", "catalogue.db-wal", "catalogue.db-shm"}
        files = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                 if not set(p.relative_to(tmp_path).parts[:1]) & skip}
        return files

    before = snapshot()
    results = [
        cli("sample", "add", name, "--meta", f"k={name}"),
        cli("cell", "add", name, "--sample", name, "--active-mass-mg", "10"),
        cli("cycling", "ingest", cycling_csv, "--cell", name),
        cli("xas", "ingest", NI_FOIL, "--sample", name, "--edge", "Ni-K", "--state", name),
        cli("txm", "ingest", GOLDEN / "rod96_2d.h5", "--sample", name, "--state", name),
    ]
    for result in results:
        assert result.exit_code in (0, 1), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
        if result.exit_code == 1:
            assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:"), result.stderr
    if results[-1].exit_code == 0:
        scan_id = results[-1].stdout.strip().splitlines()[-1]
        analysed = cli("txm", "analyze", scan_id, "--bin", "1")
        assert analysed.exit_code == 0, analysed.output
    assert snapshot() == before
    assert not Path(absolute).exists() and not (Path.home() / "escaped-f").exists()
    # whatever was written went under the store, at names built from ids and fixed words
    for p in Path(cli.store).rglob("*"):
        assert p.resolve().is_relative_to(Path(cli.store).resolve())
        assert "escaped" not in str(p) and "\n" not in str(p) and "\x00" not in str(p)
