"""Form and query values no row can match are refused, not answered with an empty table, against
a real ``txmdb serve`` process, on SQLite and PostgreSQL.

- The samples page took a minimum fraction above the maximum (ni_min 0.8, ni_max 0.6) and
  showed "No sample matches."; now a 422 naming both.
- The query pages (and /api/v1, test_web_api) took binning factors outside 1 to 16 and reference
  cycle 0 (taken for "the run's own"); now a 422 naming the range.
"""

from __future__ import annotations

import html
import re

import pytest

from tests.conftest import BACKENDS
from tests.web_server import served_catalogue
from txmdb.vocabulary import MAX_CATALOGUE_INT

_ERROR = re.compile(r'<div class="error" role="alert">(.*?)</div>', re.S)


@pytest.fixture(scope="module", params=BACKENDS)
def lab(request, tmp_path_factory):
    with served_catalogue(request, tmp_path_factory, request.param) as served:
        for args in (["init"], ["sample", "add", "NMC622", "--ni", "0.6", "--mn", "0.2", "--co", "0.2"]):
            done = served.cli(*args)
            assert done.returncode == 0, done.stderr
        served.add_account("viewer")
        served.server = served.start()
        yield served


def _page(lab, path: str, params, status: int) -> str:
    """The page's error line ('' without one), once its status is ``status``."""
    with lab.client(lab.server, "viewer") as client:
        answer = client.get(path, params=params)
    assert answer.status_code == status, answer.text[:500]
    found = _ERROR.search(answer.text)
    return html.unescape(found.group(1)) if found else ""


@pytest.mark.parametrize("element", ["ni", "mn", "co"])
def test_a_minimum_fraction_above_the_maximum_is_refused(lab, element):
    error = _page(lab, "/samples", {f"{element}_min": "0.8", f"{element}_max": " 0.6 "}, 422)
    assert error == f"{element}_min 0.8 is above {element}_max 0.6"


def test_fraction_bounds_that_meet_still_search(lab):
    with lab.client(lab.server, "viewer") as client:
        page = client.get("/samples", params={"ni_min": "0.6", "ni_max": "0.6", "co_min": "0", "co_max": "1"})
    assert page.status_code == 200 and _ERROR.search(page.text) is None
    assert ">NMC622</a>" in page.text


@pytest.mark.parametrize("path, params, error", [
    ("/query/theta", {"bin": "0"}, "bin: '0' is not a whole number from 1 to 16"),
    ("/query/gradient", {"bin": "2,17"}, "bin: '17' is not a whole number from 1 to 16"),
    ("/query/summary", {"reference": "0"}, f"reference: '0' is not a whole number from 1 to {MAX_CATALOGUE_INT}"),
])
def test_a_query_pages_values_outside_their_range_are_refused(lab, path, params, error):
    assert _page(lab, path, params, 422) == error


def test_a_query_pages_values_at_the_ends_of_their_range_work(lab):
    assert _page(lab, "/query/theta", {"bin": "1,16"}, 200) == ""
    assert _page(lab, "/query/summary", {"reference": "1"}, 200) == ""
