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

import io
import json
import os
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SHARED

GOLDEN = SHARED / "golden"
NI_FOIL = SHARED / "data" / "xas" / "ni_metal_rt.xdi"

# Examples per property: enough to find the bugs of a reader on SQLite, fewer on the
# PostgreSQL run (each CLI call there costs a few connections).
EXAMPLES = {"sqlite": 30, "postgresql": 8}
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
    if os.environ.get("HLOG"):
        with open(os.environ["HLOG"], "a") as fh:
            fh.write(f"{args[0]} {result.exit_code} {(result.stderr or '').strip()[:160]!r}\n")
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

LAYOUT_PATHS = {
    "dxchange": ("/exchange/data", "/exchange/energy", "/exchange/data_white", "/exchange/data_dark"),
    "txm-sandbox": ("/registration_results/reg_results/registered_xanes3D",
                    "/registration_results/reg_results/eng_list", None, None),
    "fxi": ("/img_xanes", "/X_eng", "/img_bkg", "/img_dark"),
    "none": ("/foo/data", "/foo/energy", None, None),
}

DTYPES = ["float32", "float64", "int16", "uint8", "int64", "bool", "complex64", "S6", "str", "compound"]
finite_or_not = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6))


def _array(dtype: str, shape: tuple[int, ...], fill: str, rng: np.random.Generator):
    n = int(np.prod(shape, dtype=np.int64))
    if dtype in ("S6", "str"):
        words = np.array(["8300", "abc", "1e3", "nan", "", "π"], dtype=object)[rng.integers(0, 6, n)]
        if dtype == "S6":
            return np.array([w.encode("utf-8")[:6] for w in words], dtype="S6").reshape(shape)
        return np.array(list(words), dtype=h5py.string_dtype()).reshape(shape)
    if dtype == "compound":
        out = np.zeros(shape, dtype=[("a", "f4"), ("b", "i2")])
        return out
    values = rng.normal(1.0, 0.5, n)
    if fill == "nan":
        values[:] = np.nan
    elif fill == "some-nan":
        values[rng.random(n) < 0.5] = np.nan
    elif fill == "inf":
        values[:] = np.inf
    elif fill == "huge":
        values = values * 1e300
    with np.errstate(all="ignore"):
        return values.astype(dtype).reshape(shape)


@st.composite
def tomogram_specs(draw):
    layout = draw(st.sampled_from(list(LAYOUT_PATHS)))
    rank = draw(st.integers(0, 5))
    n_e = draw(st.integers(0, 7))
    shape = (n_e, *draw(st.lists(st.integers(0, 4), min_size=max(rank - 1, 0), max_size=max(rank - 1, 0))))[:rank]
    energy_kind = draw(st.sampled_from(["ok", "kev", "descending", "nan", "duplicate", "short", "long", "2d",
                                        "2d-column", "scalar", "strings", "missing", "group", "empty", "huge"]))
    return {
        "layout": layout,
        "data": draw(st.sampled_from(["present", "present", "present", "missing", "group"])),
        "shape": shape,
        "dtype": draw(st.sampled_from(DTYPES)),
        "fill": draw(st.sampled_from(["normal", "normal", "nan", "some-nan", "inf", "huge"])),
        "energy": energy_kind,
        "white": draw(st.sampled_from([None, "match", "wrong", "scalar"])),
        "dark": draw(st.sampled_from([None, "match", "wrong"])),
        "attrs": draw(st.dictionaries(
            st.sampled_from(["voxel_size_nm", "pixel_size", "voxel_size_um", "pixel_size_unit", "units",
                             "voxel_size"]),
            st.one_of(finite_or_not, st.text(max_size=5), st.binary(max_size=5),
                      st.lists(st.floats(allow_nan=True), max_size=3)),
            max_size=3)),
        "attrs_on": draw(st.sampled_from(["dataset", "file"])),
        "extra": draw(st.lists(st.text("abc/_", min_size=1, max_size=6), max_size=2)),
        "damage": draw(st.sampled_from([None, None, "truncate", "flip", "zero-tail"])),
        "cut": draw(st.floats(0.05, 0.95)),
        "seed": draw(st.integers(0, 2**16)),
        "voxel_option": draw(st.sampled_from([None, None, "5", "-3", "0", "nan", "inf", "1e308"])),
        "path_options": draw(st.sampled_from([None, None, ("/exchange/data", "/exchange/energy"),
                                              ("/nope", "/exchange/energy"), ("/", "/")])),
    }


def _energies(kind: str, n: int, rng) -> object:
    base = np.linspace(8280.0, 8420.0, max(n, 1))[:n]
    if kind == "kev":
        return base / 1000
    if kind == "descending":
        return base[::-1].copy()
    if kind == "nan":
        out = base.copy()
        if n:
            out[rng.integers(0, n)] = np.nan
        return out
    if kind == "duplicate":
        out = base.copy()
        if n > 1:
            out[1] = out[0]
        return out
    if kind == "short":
        return base[:-1]
    if kind == "long":
        return np.r_[base, 9000.0]
    if kind == "2d":
        return np.stack([base, base])
    if kind == "2d-column":
        return base[:, None]
    if kind == "scalar":
        return np.float64(8300.0)
    if kind == "strings":
        return np.array([f"{e:.1f}eV".encode() for e in base], dtype="S12") if n else np.array([b"x"])
    if kind == "empty":
        return np.zeros(0)
    if kind == "huge":
        return base * 1e305
    return base


def write_tomogram(spec: dict, path: Path) -> None:
    rng = np.random.default_rng(spec["seed"])
    data_path, energy_path, white_path, dark_path = LAYOUT_PATHS[spec["layout"]]
    with h5py.File(path, "w") as f:
        target = f
        if spec["data"] == "present":
            ds = f.create_dataset(data_path, data=_array(spec["dtype"], spec["shape"], spec["fill"], rng))
            target = ds if spec["attrs_on"] == "dataset" else f
        elif spec["data"] == "group":
            f.create_group(data_path)
        if spec["energy"] == "group":
            f.create_group(energy_path)
        elif spec["energy"] != "missing":
            f[energy_path] = _energies(spec["energy"], spec["shape"][0] if spec["shape"] else 3, rng)
        spatial = tuple(spec["shape"][1:])
        for which, aux_path in (("white", white_path), ("dark", dark_path)):
            kind = spec[which]
            if aux_path is None or kind is None:
                continue
            if kind == "match":
                f[aux_path] = rng.random((2, *spatial)) + 1
            elif kind == "wrong":
                f[aux_path] = rng.random((2, 7, 3))
            else:
                f[aux_path] = 1.0
        for key, value in spec["attrs"].items():
            try:
                target.attrs[key] = value
            except (TypeError, ValueError):
                target.attrs[key] = str(value)
        for name in spec["extra"]:
            try:
                f.create_dataset(f"extra/{name}", data=rng.random(3))
            except (ValueError, KeyError, TypeError):
                pass
    damage = spec["damage"]
    if damage:
        raw = bytearray(path.read_bytes())
        cut = max(1, int(len(raw) * spec["cut"]))
        if damage == "truncate":
            raw = raw[:cut]
        elif damage == "flip":
            for i in rng.integers(0, len(raw), 16):
                raw[i] ^= 0xFF
        else:
            raw[cut:] = bytes(len(raw) - cut)
        path.write_bytes(bytes(raw))


def test_hostile_tomograms(lab, tmp_path):
    @_settings(lab)
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

KNOWN_HEADERS = ["test_time_second", "voltage_volt", "current_ampere", "cycle_count", "Cycle_Index", "Test_Time_s",
                 "Time_s", "Current_A", "Voltage_V", "Current(mA)", "Charge_Capacity_Ah", "Discharge_Capacity_Ah",
                 "Step_Index", "Step_Type", "Capacity_mAh", "Energy(Wh)", "Date", "Temperature"]
cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e999", "-1e-999", "CC_Chg", "CC_DChg", "Rest", "\"", "\"a,b\"",
                     "0x1F", "1,5", "00:01:02", "1:2:3:4", " ", "é", "\t", "NULL", "None"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"), max_size=8),
)


@st.composite
def cycler_csvs(draw) -> bytes:
    kind = draw(st.sampled_from(["table", "table", "table", "neware", "empty", "binary", "bom"]))
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b"   \n\n", b","]))
    if kind == "binary":
        return draw(st.binary(min_size=1, max_size=400))
    header = draw(st.lists(st.one_of(st.sampled_from(KNOWN_HEADERS), st.text(max_size=6).filter(
        lambda s: "\n" not in s and "\r" not in s)), min_size=0, max_size=7))
    if kind == "neware":
        lines = ["Cycle Index,Chg. Cap.(Ah),DChg. Cap.(Ah)", ",Step Index,Step Number,Step Type,Step Time",
                 ",,DataPoint,Time,Total Time,Current(A),Voltage(V),Capacity(Ah),Energy(Wh)"]
    else:
        lines = [",".join(header)]
    good = draw(st.booleans())
    n_rows = draw(st.integers(0, 12))
    width = max(len(header), 1)
    for i in range(n_rows):
        if good and kind != "neware":
            row = [str(i * 10.0), repr(3.5 + 0.1 * ((i % 4) - 2)), ("1.0" if i % 4 < 2 else "-1.0")]
            row = (row + [str(1 + i // 4)] * width)[:width]
            if draw(st.integers(0, 5)) == 0:
                row[draw(st.integers(0, width - 1))] = draw(cells)
        else:
            row_width = draw(st.sampled_from([width, width, width - 1, width + 1, 1, 0]))
            row = draw(st.lists(cells, min_size=max(row_width, 0), max_size=max(row_width, 0)))
        lines.append(",".join(row))
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)
    data = text.encode("utf-8", errors="surrogatepass")
    if kind == "bom":
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 6)) == 0:  # splice binary bytes into the text
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data


def test_hostile_cycler_files(lab, tmp_path):
    @_settings(lab)
    @given(content=cycler_csvs(), fmt=st.sampled_from(["auto", "auto", "csv", "neware-csv", "ndax"]),
           columns=st.sampled_from([None, None, "time_s=a,voltage_v=b,current_a=c", "voltage_v=Voltage_V"]))
    def prop(content, fmt, columns):
        path = _fresh(tmp_path, ".csv")
        path.write_bytes(content)
        args = ["cycling", "ingest", path, "--cell", "C", "--format", fmt]
        if columns:
            args += ["--columns", columns]
        check_clean_outcome(lab, args, path)

    prop()


# --------------------------------------------------------------------------- XAS spectra

XDI_NAMES = ["energy", "mutrans", "mufluor", "i0", "itrans", "ifluor", "angle", "mu", "e", "garbage", "normfluor"]
XDI_UNITS = ["eV", "keV", "deg", "", "furlongs"]


@st.composite
def spectra(draw) -> bytes:
    n_col = draw(st.integers(0, 4))
    n_rows = draw(st.integers(0, 40))
    lines: list[str] = []
    if draw(st.booleans()):
        lines.append("# XDI/1.0 GSE/1.0")
        for i in range(draw(st.integers(0, n_col + 1))):
            unit = draw(st.sampled_from(XDI_UNITS))
            lines.append(f"# Column.{draw(st.integers(0, 6)) if draw(st.integers(0, 4)) == 0 else i + 1}: "
                         f"{draw(st.sampled_from(XDI_NAMES))} {unit}".rstrip())
        for _ in range(draw(st.integers(0, 3))):
            lines.append("# " + draw(st.sampled_from(["Mono.d_spacing: ", "Element.edge: ", "Scan.start_time: ",
                                                        "Column.x: ", "bogus: "]))
                         + draw(st.text(max_size=8).filter(lambda s: "\n" not in s and "\r" not in s)))
        if draw(st.booleans()):
            lines += ["# ///", "# comment " + draw(st.text(max_size=10).filter(lambda s: not set(s) & set("\r\n\x85\u2028\u2029\x0b\x0c\x1c\x1d\x1e")))]
        lines.append("#" + "-" * draw(st.integers(0, 5)))
        if draw(st.booleans()):
            lines.append("# " + " ".join(draw(st.sampled_from(XDI_NAMES)) for _ in range(n_col)))
    elif draw(st.booleans()):
        lines.append(" ".join(draw(st.sampled_from(XDI_NAMES + ["I0", "It", "2theta"])) for _ in range(max(n_col, 1))))
    energy_kind = draw(st.sampled_from(["up", "up", "down", "dup", "zigzag", "random", "kev", "constant"]))
    e = np.linspace(8200.0, 8500.0, max(n_rows, 1))[:n_rows]
    if energy_kind == "down":
        e = e[::-1]
    elif energy_kind == "dup" and n_rows > 2:
        e[2] = e[1]
    elif energy_kind == "zigzag" and n_rows > 4:
        e[3], e[4] = e[4], e[3]
    elif energy_kind == "random":
        e = np.array(draw(st.lists(st.floats(-1e6, 1e6), min_size=n_rows, max_size=n_rows)))
    elif energy_kind == "kev":
        e = e / 1000
    elif energy_kind == "constant":
        e = np.full(n_rows, 8333.0)
    with np.errstate(all="ignore"):
        mu = 1 / (1 + np.exp(-(e - 8340) / 3)) if n_rows else e
    sep = draw(st.sampled_from([" ", "\t", ",", ";", "  "]))
    for i in range(n_rows):
        row = [repr(float(e[i]))] + [repr(float(mu[i]) + k) for k in range(max(n_col - 1, 0))]
        row = row[:n_col] if n_col else [repr(float(e[i]))]
        if draw(st.integers(0, 9)) == 0 and row:
            row[draw(st.integers(0, len(row) - 1))] = draw(st.sampled_from(
                ["nan", "inf", "abc", "1.0D-03", "", "-0", "1e400", "0", "--", "1.2.3"]))
        if draw(st.integers(0, 14)) == 0:
            row = row[:-1] or ["x"]
        lines.append(sep.join(row))
    text = "\n".join(lines)
    data = text.encode("utf-8", errors="surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
    return data


def test_hostile_spectra(lab, tmp_path):
    @_settings(lab)
    @given(content=spectra(), edge=st.sampled_from(["Ni-K", "Ni-L3"]))
    def prop(content, edge):
        path = _fresh(tmp_path, ".xdi")
        path.write_bytes(content)
        check_clean_outcome(lab, ["xas", "ingest", path, "--sample", "S", "--edge", edge], path)

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
