"""The HTTP API (/api/v1) against a real ``txmdb serve`` process, on SQLite and PostgreSQL.

One demo-like catalogue per backend (two analysed 16³ tomograms, cells, cycling runs,
spectra), served with a 1 MB upload limit, with a viewer, an editor and an admin holding API
tokens. Answers are compared with what the CLI prints for the same catalogue.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, DATA
from tests.web_server import served_catalogue
from txmdb.vocabulary import FILTERS, MAX_CATALOGUE_INT, MAX_PAGE_ROWS

NDAX = DATA / "cycling" / "neware-ndax" / "46_1_5_60_bts16.ndax"
XDI = DATA / "xas" / "ni_metal_rt.xdi"
BATTERYDATA = DATA / "cycling" / "batterydata" / "p492-13-raw.csv"
MARKUP = "<img src=x onerror=alert(1)>.csv"


@pytest.fixture(scope="module", params=BACKENDS)
def lab(request, tmp_path_factory):
    with served_catalogue(request, tmp_path_factory, request.param, populate=True) as served:
        for role in ("viewer", "editor", "admin"):
            served.add_account(role)
        served.server = served.start("--max-upload-mb", "1")
        yield served


def _get(lab, path, account="viewer", **params):
    with lab.client(lab.server, account) as client:
        return client.get(path, params=params)


def _assert_json_error(answer, status: int, *words: str) -> dict:
    """A JSON error with this status whose message has ``words``; never a traceback."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error", "status"} and body["status"] == status
    assert "Traceback" not in answer.text and "File \"" not in answer.text
    for word in words:
        assert word in body["error"], body["error"]
    return body


def _cli_flags(params: dict) -> list[str]:
    """The CLI options of API query parameters (the same names, the CLI's spellings)."""
    args = []
    for name, value in params.items():
        f = FILTERS.get(name)
        flag = f.flags[0] if f is not None else f"--{name.replace('_', '-')}"
        if f is not None and f.type is bool:
            on, _, off = flag.partition("/")
            args.append(on if value == "true" else off)
            continue
        for v in value if isinstance(value, list) else [value]:
            args += [flag, v]
    return args


# (table, query parameters): several tables, with filters of each kind (text, repeated,
# comma-separated numbers, booleans) and the tables' own parameters.
CSV_CASES = [
    ("samples", {}),
    ("samples", {"morphology": ["rod"]}),
    ("cells", {"sample": ["rod-NMC", "gravel-NMC"]}),
    ("cycles", {"cell": ["R1"], "cycle": ["1,2", "5"]}),
    ("retention", {"cycle": "10"}),
    ("scans", {}),
    ("theta", {"sample": ["rod-NMC"], "bin": ["1,2"], "weighted": "true"}),
    ("edge-histogram", {"scan_level": "true"}),
    ("maps", {"map": ["edge"]}),
    ("xas", {"edge": ["Ni-K"]}),
    ("summary", {"cycle": "10"}),
    ("analyses", {"status": ["done"]}),
]


def test_health_answers_without_credentials(lab):
    from txmdb.db.migrate import head_revision

    with lab.client(lab.server) as client:
        answer = client.get("/api/v1/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "schema": head_revision()}


@pytest.mark.parametrize("table,params", CSV_CASES, ids=[f"{t}-{i}" for i, (t, _) in enumerate(CSV_CASES)])
def test_csv_is_byte_identical_to_the_cli(lab, table, params):
    answer = _get(lab, f"/api/v1/query/{table}", format="csv", **params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    printed = lab.cli("query", table, "--format", "csv", *_cli_flags(params), text=False)
    assert printed.returncode == 0, printed.stderr
    assert answer.content == printed.stdout
    assert answer.content.count(b"\n") >= 2  # a header and at least one row: the filters matched something


def test_json_and_parquet_are_the_clis(lab, tmp_path):
    import pandas as pd

    params = {"sample": ["rod-NMC"], "bin": ["1"]}
    answer = _get(lab, "/api/v1/query/vector-size", format="json", **params)
    printed = lab.cli("query", "vector-size", "--format", "json", *_cli_flags(params))
    assert answer.status_code == 200 and answer.json() == json.loads(printed.stdout) != []
    answer = _get(lab, "/api/v1/query/vector-size", format="parquet", **params)
    written = lab.cli("query", "vector-size", "--format", "parquet", "-o", str(tmp_path / "t.parquet"),
                      *_cli_flags(params))
    assert written.returncode == 0, written.stderr
    assert answer.headers["content-type"] == "application/vnd.apache.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(answer.content)), pd.read_parquet(tmp_path / "t.parquet"))


@pytest.mark.parametrize("path,params,status,words", [
    ("/api/v1/query/cycles", {"colour": "red"}, 422, ["query cycles has no filter 'colour'", "cycle"]),
    ("/api/v1/query/cycles", {"bin": "1"}, 422, ["no filter 'bin'"]),  # another table's filter
    ("/api/v1/query/cycles", {"cycle": "two"}, 422, ["'two' is not a whole number"]),
    ("/api/v1/query/cycles", {"cycle": " , "}, 422, ["holds no number"]),
    ("/api/v1/query/theta", {"scan": str(MAX_CATALOGUE_INT + 1)}, 422, ["is not a whole number from 0 to"]),
    ("/api/v1/query/theta", {"weighted": "perhaps"}, 422, ["weighted"]),
    ("/api/v1/query/retention", {}, 422, ["'cycle'", "required"]),
    ("/api/v1/query/retention", {"cycle": "-3"}, 422, ["cycle: '-3' is not a whole number from 0 to"]),
    ("/api/v1/query/retention", {"cycle": "+1"}, 422, ["cycle: '+1' is not a whole number from 0 to"]),
    ("/api/v1/query/summary", {"reference": "1_000"}, 422, ["reference: '1_000' is not a whole number from 1 to"]),
    # values no row can hold were an empty table: binning factors are 1 to 16, cycles count from 1
    ("/api/v1/query/theta", {"bin": "0"}, 422, ["bin: '0' is not a whole number from 1 to 16"]),
    ("/api/v1/query/gradient", {"bin": ["2", "1,17"]}, 422, ["bin: '17' is not a whole number from 1 to 16"]),
    ("/api/v1/query/summary", {"reference": "0"}, 422,
     [f"reference: '0' is not a whole number from 1 to {MAX_CATALOGUE_INT}"]),
    ("/api/v1/query/theta", {"format": "xlsx"}, 422, ["'format'"]),
    ("/api/v1/query/theta", {"map": "nonsense"}, 422, ["map 'nonsense' does not exist"]),
    ("/api/v1/query/nonsense", {}, 404, ["no query table 'nonsense'", "theta"]),
    ("/api/v1/samples", {"limit": "0"}, 422, ["'limit'"]),
    ("/api/v1/samples", {"limit": str(MAX_PAGE_ROWS + 1)}, 422, ["'limit'"]),
    ("/api/v1/samples", {"offset": "-1"}, 422, ["'offset'"]),
    ("/api/v1/samples", {"page": "2"}, 422, ["no filter 'page'"]),
    ("/api/v1/jobs", {"status": "sleeping"}, 422, ["'status'"]),
    ("/api/v1/scans/999999", {}, 404, ["no TXM scan with id 999999"]),
    ("/api/v1/scans/0", {}, 422, ["'scan_id'"]),
    ("/api/v1/scans/abc", {}, 422, ["'scan_id'"]),
    ("/api/v1/scans/..%2F..%2Fetc%2Fpasswd", {}, 404, ["Not Found"]),  # ids only: no route, no file
    ("/api/v1/jobs/424242", {}, 404, ["424242"]),
    ("/api/v1/scans/999999/slice.png", {}, 404, ["no TXM scan with id 999999"]),
    # ids, counts and indices read as the filters and the CLI read numbers (session 24: '+1' was scan 1)
    ("/api/v1/scans/+1", {}, 422, ["path parameter 'scan_id': '+1' is not a whole number from 1 to 2147483647"]),
    ("/api/v1/jobs/1_0", {}, 422, ["path parameter 'job_id': '1_0' is not a whole number from 1 to"]),
    ("/api/v1/scans/%D9%A3/maps", {}, 422, ["'scan_id'", "is not a whole number from 1 to"]),
    ("/api/v1/samples", {"limit": "+5"}, 422, ["query parameter 'limit': '+5' is not a whole number from 1 to 10000"]),
    ("/api/v1/scans", {"offset": "1_0"}, 422, ["query parameter 'offset': '1_0' is not a whole number"]),
    ("/api/v1/jobs", {"scan": "1.0"}, 422, ["query parameter 'scan': '1.0' is not a whole number"]),
    ("/api/v1/scans/1/maps", {"analysis": "+1"}, 422, ["query parameter 'analysis': '+1' is not a whole number"]),
    ("/api/v1/scans/1/slice.png", {"index": "2_0"}, 422, ["query parameter 'index': '2_0' is not a whole number"]),
    ("/api/v1/scans/" + str(MAX_CATALOGUE_INT + 1), {}, 422, ["'scan_id'", "is not a whole number from 1 to"]),
    ("/api/v1/scans/%1F1", {}, 422, ["'scan_id'", "is not a whole number"]),  # str.strip() took \x1f
    ("/api/v1/scans/" + "9" * 5000, {}, 422, ["'" + "9" * 40 + "…' is not a whole number from 1 to"]),
])
def test_bad_requests_are_json_errors(lab, path, params, status, words):
    _assert_json_error(_get(lab, path, **params), status, *words)


def test_lists_are_paginated(lab):
    everything = _get(lab, "/api/v1/samples").json()
    assert everything["total"] == len(everything["items"]) >= 2
    names = [row["sample"] for row in everything["items"]]
    page = _get(lab, "/api/v1/samples", limit=1, offset=1).json()
    assert page == {"items": everything["items"][1:2], "total": everything["total"], "limit": 1, "offset": 1}
    assert names[1] == page["items"][0]["sample"]
    beyond = _get(lab, "/api/v1/samples", offset=everything["total"]).json()
    assert beyond["items"] == [] and beyond["total"] == everything["total"]
    rods = _get(lab, "/api/v1/scans", morphology="rod", limit=10).json()
    assert rods["total"] == 1 and rods["items"][0]["sample"] == "rod-NMC"
    scan = _get(lab, f"/api/v1/scans/{rods['items'][0]['scan_id']}").json()
    assert scan == rods["items"][0]


def _scan_id(lab, sample: str = "rod-NMC") -> int:
    return _get(lab, "/api/v1/scans", sample=sample).json()["items"][0]["scan_id"]


def test_slice_png_is_one_slice_of_the_map_with_one_colour_scale(lab):
    import h5py
    import numpy as np
    from PIL import Image

    from txmdb.io.maps import read_map

    scan = _scan_id(lab)
    maps = _get(lab, f"/api/v1/scans/{scan}/maps").json()
    edge = next(m for m in maps["maps"] if m["name"] == "edge")
    assert edge["unit"] == "eV" and len(edge["shape"]) == 3
    results = _get(lab, "/api/v1/query/analyses", scan=str(scan), status="done").json()[-1]["results_path"]
    images, scales = {}, set()
    for axis, dim in zip("zyx", range(3)):
        for index in (edge["shape"][dim] // 2, edge["shape"][dim] // 2 + 1):
            answer = _get(lab, f"/api/v1/scans/{scan}/slice.png", map="edge", axis=axis, index=index)
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "image/png"
            scales.add((answer.headers["x-scale-min"], answer.headers["x-scale-max"]))
            image = np.asarray(Image.open(io.BytesIO(answer.content)))
            with h5py.File(results) as f:
                truth = read_map(f, "edge", index, dim)
            assert image.shape == (*truth.shape, 4)
            # Masked voxels are transparent, measured ones opaque.
            np.testing.assert_array_equal(image[..., 3] == 255, np.isfinite(truth))
            images[axis, index] = image
    assert len(scales) == 1  # every slice of a map shares its colour scale
    lo, hi = map(float, scales.pop())
    assert lo < hi
    z = edge["shape"][0] // 2
    assert not np.array_equal(images["z", z], images["z", z + 1])


@pytest.mark.parametrize("params,status,words", [
    ({"map": "nonsense"}, 422, ["map 'nonsense' does not exist"]),
    ({"map": "white_line"}, 404, ["map 'white_line' does not exist in this analysis", "edge"]),
    ({"map": "cluster", "axis": "x"}, 404, ["map 'cluster' does not exist in this analysis"]),
    ({"axis": "w"}, 422, ["'axis'"]),
    ({"index": "9999"}, 422, ["has 16 slices along z", "no slice 9999"]),
    ({"index": "-1"}, 422, ["'index'"]),
    ({"analysis": "999999"}, 404, ["analysis 999999 is not a finished analysis of scan"]),
])
def test_bad_slice_requests_are_json_errors(lab, params, status, words):
    _assert_json_error(_get(lab, f"/api/v1/scans/{_scan_id(lab)}/slice.png", **params), status, *words)


def _post(lab, path, account="editor", **options):
    with lab.client(lab.server, account) as client:
        return client.post(path, **options)


def _upload_files(lab) -> set:
    return {p.name for p in (lab.store / "uploads").iterdir()} if (lab.store / "uploads").exists() else set()


def test_cycling_upload_is_the_clis_ingest_and_a_duplicate_returns_the_same_run(lab):
    before = _upload_files(lab)
    answer = _post(lab, "/api/v1/cycling", files={"file": (NDAX.name, NDAX.read_bytes())}, data={"cell": "G1"})
    assert answer.status_code == 201, answer.text
    run = answer.json()["run_id"]
    assert answer.json() == {"run_id": run, "created": True}
    again = _post(lab, "/api/v1/cycling", files={"file": ("renamed.ndax", NDAX.read_bytes())}, data={"cell": "G1"})
    assert again.status_code == 200 and again.json() == {"run_id": run, "created": False}
    # The CLI sees the run, and ingesting the same bytes there finds the same record.
    cycles = lab.cli("query", "cycles", "--run", str(run), "--format", "csv")
    assert cycles.returncode == 0 and len(cycles.stdout.splitlines()) > 1
    assert all(line.startswith("gravel-NMC,G1,") for line in cycles.stdout.splitlines()[1:])
    ingested = lab.cli("cycling", "ingest", str(NDAX), "--cell", "G1")
    assert ingested.returncode == 0 and ingested.stdout.splitlines()[-1] == str(run)
    # the same bytes naming another reference cycle than the run records: refused, nothing kept
    other = _post(lab, "/api/v1/cycling", files={"file": ("renamed.ndax", NDAX.read_bytes())},
                  data={"cell": "G1", "reference_cycle": "3"})
    assert other.status_code == 400, other.text
    assert other.json()["error"] == ("renamed.ndax: this file is already in the catalogue as cycling run "
                                     f"{run} with reference cycle 2, not 3; a file is recorded once, as its first "
                                     "ingest gave it")
    # One file kept, named by its SHA-256; the run records who uploaded it.
    import hashlib

    assert _upload_files(lab) - before == {hashlib.sha256(NDAX.read_bytes()).hexdigest() + ".ndax"}
    sql = lab.cli("query", "sql", f"SELECT created_by FROM cycling_runs WHERE id = {run}", "--format", "csv")
    assert sql.stdout.splitlines() == ["created_by", "editor"]


def test_xas_and_xrd_uploads(lab):
    answer = _post(lab, "/api/v1/xas", files={"file": (XDI.name, XDI.read_bytes())},
                   data={"sample": "rod-NMC", "edge": "Ni-K", "state": "pristine"})
    assert answer.status_code == 201, answer.text
    measurement = answer.json()["measurement_id"]
    again = _post(lab, "/api/v1/xas", files={"file": (XDI.name, XDI.read_bytes())},
                  data={"sample": "rod-NMC", "edge": "Ni-K", "state": "pristine"})
    assert again.status_code == 200 and again.json() == {"measurement_id": measurement, "created": False}
    xas = lab.cli("query", "xas", "--sample", "rod-NMC", "--format", "json")
    assert measurement in [row["measurement_id"] for row in json.loads(xas.stdout)]

    typed = _post(lab, "/api/v1/xrd", data={"sample": "gravel-NMC", "state": "cycled", "i003_i104": "1.31",
                                            "a": "2.87", "c": "14.2"})
    assert typed.status_code == 201, typed.text
    rows = json.loads(lab.cli("query", "xrd", "--sample", "gravel-NMC", "--state", "cycled", "--format", "json").stdout)
    assert [(r["i003_i104"], r["a_angstrom"], r["c_angstrom"]) for r in rows] == [(1.31, 2.87, 14.2)]


@pytest.mark.parametrize("path,files,data,status,words", [
    ("/api/v1/cycling", {"file": ("cell.ndax", b"PK\x03\x04 not really a zip")}, {"cell": "G1"}, 400,
     ["cell.ndax:"]),
    ("/api/v1/cycling", {"file": ("spectrum.csv", XDI.read_bytes())}, {"cell": "G1"}, 400, ["spectrum.csv:"]),
    ("/api/v1/cycling", {"file": ("empty.csv", b"")}, {"cell": "G1"}, 400, ["empty.csv:"]),
    ("/api/v1/cycling", {"file": (NDAX.name, NDAX.read_bytes())}, {"cell": "nobody"}, 404, ["no cell named 'nobody'"]),
    ("/api/v1/cycling", {"file": (NDAX.name, NDAX.read_bytes())}, {}, 422, ["'cell'", "required"]),
    ("/api/v1/cycling", None, {"cell": "G1"}, 422, ["'file'", "required"]),
    ("/api/v1/cycling", {"file": (NDAX.name, NDAX.read_bytes())}, {"cell": "G1", "reference_cycle": "0"}, 422,
     ["'reference_cycle'"]),
    ("/api/v1/xas", {"file": ("cycler.xdi", NDAX.read_bytes())}, {"sample": "rod-NMC", "edge": "Ni-K"}, 400,
     ["cycler.xdi:"]),
    ("/api/v1/xas", {"file": (XDI.name, XDI.read_bytes())}, {"sample": "rod-NMC", "edge": "U-M5"}, 422,
     ["edge 'U-M5'"]),
    ("/api/v1/xrd", None, {"sample": "rod-NMC", "i003_i104": "-1"}, 422, ["-1.0 is not a positive number"]),
    # the name an upload was sent with is kept only if it shows as it is, and fits a file system
    ("/api/v1/cycling", {"file": ("run\x1b[2J.ndax", NDAX.read_bytes())}, {"cell": "G1"}, 422,
     ["file name 'run\\x1b[2J.ndax' has control or format characters"]),
    ("/api/v1/xas", {"file": ("ni\u202efdx.exe", XDI.read_bytes() + b"\n\n\n\n")},
     {"sample": "rod-NMC", "edge": "Ni-K"}, 422, ["has control or format characters"]),
    ("/api/v1/xrd", {"file": ("p" * 253 + ".xy", b"10 1\n20 2\n")}, {"sample": "rod-NMC", "wavelength": "1.5406"},
     422, ["is longer than 255 characters"]),
    ("/api/v1/xrd", None, {"sample": "rod-NMC"}, 422, ["either an (003)/(104) ratio or a pattern"]),
])
def test_bad_uploads_are_json_errors_and_leave_nothing(lab, path, files, data, status, words):
    before_files = _upload_files(lab)
    before = lab.cli("query", "sql", "SELECT (SELECT count(*) FROM cycling_runs) + (SELECT count(*) FROM "
                     "xas_measurements) + (SELECT count(*) FROM xrd_results)", "--format", "csv").stdout
    _assert_json_error(_post(lab, path, files=files, data=data), status, *words)
    assert _upload_files(lab) == before_files
    assert lab.cli("query", "sql", "SELECT (SELECT count(*) FROM cycling_runs) + (SELECT count(*) FROM "
                   "xas_measurements) + (SELECT count(*) FROM xrd_results)", "--format", "csv").stdout == before


def test_uploads_beyond_the_limit_are_refused_while_streaming(lab):
    before = _upload_files(lab)
    big = b"time_s,voltage_v,current_a\n" + b"0,3.7,0.001\n" * 200_000  # 2.4 MB > 1 MB
    _assert_json_error(_post(lab, "/api/v1/cycling", files={"file": ("big.csv", big)}, data={"cell": "G1"}), 413,
                       "upload limit is 1048576 bytes")

    def chunks():  # no Content-Length: refused when the streamed body passes the limit
        yield (b'--zzz\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
               b"Content-Type: text/csv\r\n\r\n")
        for _ in range(40):
            yield b"0,3.7,0.001\n" * 5000

    with lab.client(lab.server, "editor") as client:
        answer = client.post("/api/v1/cycling", content=chunks(),
                             headers={"Content-Type": "multipart/form-data; boundary=zzz"})
    _assert_json_error(answer, 413, "upload limit is 1048576 bytes")
    assert _upload_files(lab) == before  # no temporary left behind either


def test_queue_an_analysis(lab):
    scan = _scan_id(lab, "gravel-NMC")
    answer = _post(lab, f"/api/v1/scans/{scan}/analyses", json={"bin": "1,2"})
    assert answer.status_code == 202, answer.text
    job = answer.json()["job_id"]
    assert answer.json() == {"job_id": job, "status": "queued"}
    assert answer.headers["location"] == f"/api/v1/jobs/{job}"
    shown = _get(lab, f"/api/v1/jobs/{job}").json()
    assert (shown["job_id"], shown["kind"], shown["scan_id"], shown["status"], shown["created_by"]) == (
        job, "analyze", scan, "queued", "editor")
    assert shown["parameters"]["bin"] in ("1,2", [1, 2])
    listed = _get(lab, "/api/v1/jobs", status="queued", scan=scan).json()
    assert job in [row["job_id"] for row in listed["items"]]
    cli = lab.cli("jobs", "--format", "csv")
    assert cli.returncode == 0 and any(line.startswith(f"{job},analyze,{scan},queued") for line in
                                       cli.stdout.splitlines()), cli.stdout
    _assert_json_error(_post(lab, "/api/v1/scans/999999/analyses"), 404, "999999")
    _assert_json_error(_post(lab, f"/api/v1/scans/{scan}/analyses", json={"bin": "x"}), 400, "'x'")
    _assert_json_error(_post(lab, f"/api/v1/scans/{scan}/analyses", json={"colour": "red"}), 400, "unknown analyze option 'colour'")


def test_openapi_lists_every_query_table_with_its_filters(lab):
    from txmdb.query import QUERIES

    with lab.client(lab.server) as anonymous:
        assert anonymous.get("/api/v1/openapi.json").status_code == 401
    spec = _get(lab, "/api/v1/openapi.json").json()
    for name, query in QUERIES.items():
        operation = spec["paths"][f"/api/v1/query/{name}"]["get"]
        names = {p["name"] for p in operation["parameters"]}
        assert names == set(query.filters) | {p.name for p in query.parameters} | {"format"}
    assert {"/api/v1/cycling", "/api/v1/xas", "/api/v1/xrd", "/api/v1/scans/{scan_id}/analyses",
            "/api/v1/scans/{scan_id}/slice.png", "/api/v1/health"} <= set(spec["paths"])


def test_several_server_processes_answer_alike(lab):
    server = lab.start("--workers", "2", "--max-upload-mb", "1")
    params = {"cell": ["R1"], "cycle": ["1,2"]}
    printed = lab.cli("query", "cycles", "--format", "csv", *_cli_flags(params), text=False).stdout
    with lab.client(server, "viewer") as client:
        for _ in range(6):  # answered by either process
            answer = client.get("/api/v1/query/cycles", params={**params, "format": "csv"})
            assert answer.status_code == 200 and answer.content == printed
        _assert_json_error(client.get("/api/v1/query/cycles", params={"nonsense": "1"}), 422)
    with lab.client(server) as anonymous:
        _assert_json_error(anonymous.get("/api/v1/samples"), 401)
    assert "Started parent process" in server.log() or server.log().count("Started server process") == 2


def test_the_api_documents_itself_as_a_page_without_scripts(lab):
    from tests.web_server import inline_scripts

    page = _get(lab, "/api/v1/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for text in ("GET /api/v1/query/theta", "POST /api/v1/cycling", "<code>weighted</code>",
                 "POST /api/v1/scans/{scan_id}/analyses"):
        assert text in page.text
    assert inline_scripts(page.text) == []
    with lab.client(lab.server) as anonymous:
        _assert_json_error(anonymous.get("/api/v1/docs"), 401)


def test_openapi_keeps_the_ranges_of_ids_and_pages(lab):
    """Each typed number's range sits before its validator (txmdb.web.api._whole_in), so the schema
    still gives clients minimum and maximum."""
    spec = _get(lab, "/api/v1/openapi.json").json()
    params = {p["name"]: p["schema"] for p in spec["paths"]["/api/v1/scans/{scan_id}/slice.png"]["get"]["parameters"]}
    assert (params["scan_id"]["minimum"], params["scan_id"]["maximum"]) == (1, MAX_CATALOGUE_INT)
    assert (params["index"]["minimum"], params["index"]["maximum"]) == (0, MAX_CATALOGUE_INT)
    listed = {p["name"]: p["schema"] for p in spec["paths"]["/api/v1/samples"]["get"]["parameters"]}
    assert (listed["limit"]["minimum"], listed["limit"]["maximum"]) == (1, MAX_PAGE_ROWS)


def test_uploading_bytes_a_command_ingested_keeps_no_copy(lab, tmp_path):
    """The same bytes ingested by a command first: the upload answers the existing record (200) and
    its copy in the store's uploads is removed again (nothing would point at it; db check could not
    see it)."""
    from txmdb.synthetic.spectra import layered_xrd_pattern, write_columns

    tt, intensity = layered_xrd_pattern(wavelength_angstrom=1.5406, i003_i104=1.7)
    pattern = tmp_path / "pattern-s28.xy"
    write_columns(pattern, [tt, intensity], names=("two_theta", "intensity"))
    spectrum = tmp_path / "ni-s28.xdi"
    spectrum.write_bytes(XDI.read_bytes() + b"\n")          # other bytes than the other tests' upload
    xas = lab.cli("xas", "ingest", str(spectrum), "--sample", "gravel-NMC", "--edge", "Ni-K")
    assert xas.returncode == 0, xas.stderr
    xrd = lab.cli("xrd", "add", "--sample", "gravel-NMC", "--pattern", str(pattern), "--wavelength", "1.5406")
    assert xrd.returncode == 0, xrd.stderr
    before = _upload_files(lab)
    answer = _post(lab, "/api/v1/xas", files={"file": ("mine.xdi", spectrum.read_bytes())},
                   data={"sample": "gravel-NMC", "edge": "Ni-K"})
    assert answer.status_code == 200 and answer.json() == {"measurement_id": int(xas.stdout.split()[-1]),
                                                           "created": False}, answer.text
    answer = _post(lab, "/api/v1/xrd", files={"file": ("mine.xy", pattern.read_bytes())},
                   data={"sample": "gravel-NMC", "wavelength": "1.5406"})
    assert answer.status_code == 200 and answer.json()["created"] is False, answer.text
    assert _upload_files(lab) == before
    check = lab.cli("db", "check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_pattern_uploaded_without_its_wavelength_names_no_server_path(lab):
    from txmdb.synthetic.spectra import layered_xrd_pattern

    tt, intensity = layered_xrd_pattern(wavelength_angstrom=1.5406, i003_i104=1.5)
    text = "".join(f"{a} {b}\n" for a, b in zip(tt, intensity)).encode()
    before = _upload_files(lab)
    answer = _post(lab, "/api/v1/xrd", files={"file": ("tiny.xy", text)}, data={"sample": "rod-NMC"})
    assert answer.status_code == 422
    assert answer.json()["error"] == "a pattern needs the X-ray wavelength (Å) it was measured at"  # no server path
    assert _upload_files(lab) == before


def test_uploads_keep_the_name_they_were_sent_with(lab):
    """Each record keeps the name its file was uploaded with, without any folder part, as text: the
    queries show it beside the server's copy, the pages escape it. The copy is named by its SHA-256."""
    from html import escape

    from txmdb.synthetic.spectra import layered_xrd_pattern

    tt, intensity = layered_xrd_pattern(wavelength_angstrom=1.5406, i003_i104=1.6)
    uploads = {"cycling": ("../../etc/passwd.csv", BATTERYDATA.read_bytes(), {"cell": "G1"}),
               "xas": (MARKUP, XDI.read_bytes() + b"\n\n\n", {"sample": "rod-NMC", "edge": "Ni-K"}),
               "xrd": ("lab\\run 7\\pattern-s31.xy", "".join(f"{a} {b}\n" for a, b in zip(tt, intensity)).encode(),
                       {"sample": "rod-NMC", "wavelength": "1.5406"})}
    ids = {}
    for route, (name, content, data) in uploads.items():
        answer = _post(lab, f"/api/v1/{route}", files={"file": (name, content)}, data=data)
        assert answer.status_code == 201, answer.text
        ids[route] = next(v for k, v in answer.json().items() if k.endswith("_id"))
    kept = {}
    for route, table in (("cycling", "cycling_runs"), ("xas", "xas_measurements"), ("xrd", "xrd_results")):
        rows = json.loads(lab.cli("query", "sql", f"SELECT source_name, file_path FROM {table} WHERE id = "
                                                  f"{ids[route]}", "--format", "json").stdout)
        kept[route] = rows[0]["source_name"]
        assert Path(rows[0]["file_path"]).parent == (lab.store / "uploads").resolve()  # the copy, by its SHA-256
    assert kept == {"cycling": "passwd.csv", "xas": MARKUP, "xrd": "pattern-s31.xy"}
    # the query tables that show the source path show the name beside it
    xas = json.loads(lab.cli("query", "xas", "--sample", "rod-NMC", "--format", "json").stdout)
    assert [r["source_name"] for r in xas if r["measurement_id"] == ids["xas"]] == [MARKUP]
    xrd = _get(lab, "/api/v1/query/xrd", sample="rod-NMC").json()
    assert [r["source_name"] for r in xrd if r["xrd_id"] == ids["xrd"]] == ["pattern-s31.xy"]
    # the same bytes sent again under another name: the record as it was first ingested
    again = _post(lab, "/api/v1/xas", files={"file": ("other.xdi", uploads["xas"][1])}, data=uploads["xas"][2])
    assert again.status_code == 200, again.text
    assert [r["source_name"] for r in json.loads(lab.cli("query", "xas", "--sample", "rod-NMC", "--format",
                                                         "json").stdout) if r["measurement_id"] == ids["xas"]] == [MARKUP]
    # pages: the sample's (its spectra, patterns and cycling runs) and the dashboard's recent ingests
    for path, shown in (("/samples/rod-NMC", [MARKUP, "pattern-s31.xy"]), ("/samples/gravel-NMC", ["passwd.csv"]),
                        ("/", [MARKUP, "passwd.csv", "pattern-s31.xy"])):
        page = _get(lab, path)
        assert page.status_code == 200, page.text
        assert "<img src=x" not in page.text
        for name in shown:
            assert escape(name) in page.text, (path, name)


def test_pages_and_queries_show_a_commands_file_by_its_base_name(lab):
    """The demo's scans were ingested by path: the scan page shows the file's name beside its path."""
    from html import escape

    scans = json.loads(lab.cli("query", "scans", "--format", "json").stdout)
    assert scans and all(r["source_name"] == Path(r["file_path"]).name for r in scans)
    page = _get(lab, f"/scans/{scans[0]['scan_id']}")
    assert page.status_code == 200, page.text
    assert "source name" in page.text and escape(scans[0]["source_name"]) in page.text
