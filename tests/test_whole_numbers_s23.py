"""One reading of a whole number typed by a user (:func:`txmdb.vocabulary.whole_number`).

The query pages took ASCII digits only, while the CLI's and the API's filters took whatever
``int`` (or pydantic's ``int``) takes ('٣', '1_000', '+7'), and ``--registration`` raised on
'²' (a digit to ``str.isdigit`` that ``int`` refuses). Now the CLI, the API and the pages
read a number the same way, lists and single numbers alike; since session 24 the CLI's ids and
counts too ('+1' was job 1), with every command's usage errors in one line.
Database-backed tests run on SQLite and PostgreSQL (the ``cli`` fixture).
"""

from __future__ import annotations

import pytest

from tests.test_hostile import lab  # noqa: F401 - lab is a fixture
from txmdb.vocabulary import MAX_CATALOGUE_INT, integer_list, whole_number


@pytest.mark.parametrize("text, number", [("0", 0), (" 42 ", 42), ("007", 7), (str(MAX_CATALOGUE_INT), MAX_CATALOGUE_INT)])
def test_whole_number_reads_ascii_digits(text, number):
    assert whole_number(text) == number


@pytest.mark.parametrize("text", ["", " ", "²", "٣", "1_000", "+1", "-1", "1.0", "1e3", "0x10", "１",
                                  str(MAX_CATALOGUE_INT + 1), "\x1c1", "\u00a01", "1\n"])
def test_whole_number_refuses_anything_else(text):
    with pytest.raises(ValueError) as refused:
        whole_number(text)
    assert str(refused.value) == f"{text!r} is not a whole number from 0 to {MAX_CATALOGUE_INT}"


def test_whole_number_quotes_a_long_text_cut_short_and_takes_its_own_range():
    with pytest.raises(ValueError) as refused:
        whole_number("9" * 5000)
    assert str(refused.value) == f"'{'9' * 40}…' is not a whole number from 0 to {MAX_CATALOGUE_INT}"
    assert whole_number("\t12\t", low=12, high=12) == 12
    with pytest.raises(ValueError, match="^'0' is not a whole number from 1 to 9$"):
        whole_number("0", low=1, high=9)


def test_integer_list_reads_each_number_alike():
    assert integer_list(" 3, 1 ,,2") == [3, 1, 2]
    with pytest.raises(ValueError, match="^'٣' is not a whole number"):
        integer_list("1, ٣")


@pytest.mark.parametrize("value", ["٣", "1_000", "+1"])
def test_cli_filters_refuse_what_the_pages_refuse(lab, value):
    result = lab("query", "scans", "--scan", value)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"error: Invalid value for '--scan': {value!r} is not a whole number from 0 to "
                             f"{MAX_CATALOGUE_INT} (see 'txmdb query scans --help')\n")


@pytest.mark.parametrize("value", ["²", "٣", "-1", str(MAX_CATALOGUE_INT + 1)])
def test_registration_option_refuses_other_numbers_in_one_line(lab, value):
    result = lab("txm", "analyze", "1", "--registration", value)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"error: --registration {value!r}: expected a registration id or none\n"


@pytest.mark.parametrize("args, option, low", [(["query", "retention", "--cycle", "+1"], "--cycle", 0),
                                               (["query", "retention", "--cycle", "5", "--reference", "1_000"],
                                                "--reference", 1),
                                               (["query", "summary", "--cycle", "٣"], "--cycle", 0)])
def test_single_number_options_read_alike(lab, args, option, low):
    value = args[-1]
    result = lab(*args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"error: Invalid value for '{option}': {value!r} is not a whole number from {low} to "
                             f"{MAX_CATALOGUE_INT} (see 'txmdb query {args[1]} --help')\n")


def test_single_number_options_still_take_numbers_and_defaults(lab):
    assert lab("query", "retention", "--cycle", " 007 ").stdout == "(no rows)\n"
    assert lab("query", "summary").exit_code == 0
    assert lab("query", "summary", "--cycle", "50", "--reference", "3").exit_code == 0


@pytest.mark.parametrize("args, name", [(["txm", "show", "+1"], "'SCAN_ID'"),
                                        (["txm", "analyze", "1", "1_0"], "'SCAN_ID'"),
                                        (["txm", "register", "٣"], "'SCAN_ID'"),
                                        (["txm", "export", str(MAX_CATALOGUE_INT + 1), "-o", "x.h5"], "'SCAN_ID'"),
                                        (["jobs", "cancel", "+1"], "'JOB_ID'"),
                                        (["jobs", "retry", "1_0"], "'JOB_ID'"),
                                        (["jobs", "--scan", "²"], "'--scan'"),
                                        (["txm", "analyze", "1", "--theta-bins", "3_6"], "'--theta-bins'"),
                                        (["txm", "analyze", "1", "--clusters", "+3"], "'--clusters'"),
                                        (["txm", "analyze", "1", "--workers", "٢"], "'--workers'"),
                                        (["txm", "analyze", "1", "--min-particle-voxels", "1e3"], "'--min-particle-voxels'"),
                                        (["cycling", "ingest", "x.csv", "--cell", "c", "--reference-cycle", "+2"],
                                         "'--reference-cycle'")])
def test_ids_and_counts_read_alike(lab, args, name):
    """Ids and counts typed on the command line are read as the filters are: '+1' is not job 1."""
    value = next(a for a in reversed(args) if a not in ("-o", "x.h5"))
    command = " ".join(a for a in args[:2] if not a.startswith("-"))
    before = lab("jobs", "-f", "csv").stdout
    result = lab(*args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"error: Invalid value for {name}: {value!r} is not a whole number from 0 to "
                             f"{MAX_CATALOGUE_INT} (see 'txmdb {command} --help')\n")
    assert lab("jobs", "-f", "csv").stdout == before


@pytest.mark.parametrize("args, message", [(["txm", "show", "-5"], "No such option: -5"),
                                           (["jobs", "cancel"], "Missing argument 'JOB_ID'."),
                                           (["sample", "add", "s", "--bogus", "<b>x</b>"], "No such option: --bogus")])
def test_every_usage_error_is_one_line(lab, args, message):
    """Usage errors of every command are one line naming the command's help, as the queries' were."""
    command = " ".join(a for a in args[:2] if not a.startswith("-"))
    result = lab(*args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {message} (see 'txmdb {command} --help')\n")


def test_a_bare_group_still_shows_its_help(lab):
    result = lab("txm")
    assert result.exit_code == 2
    assert "Usage:" in result.output and "register" in result.output and "error:" not in result.output


def test_ids_still_take_plain_and_padded_numbers(lab):
    for typed in ("7", "007", " 7 "):
        result = lab("txm", "show", typed)
        assert (result.exit_code, result.stderr) == (1, "error: no TXM scan with id 7; see 'txmdb query scans'\n")
    assert lab("jobs", "--scan", "07", "-f", "csv").exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["query", "scans", "--scan"], "Option '--scan' requires an argument. (see 'txmdb query scans --help')"),
    (["txm", "analyze", "1", "--clusters"], "Option '--clusters' requires an argument. (see 'txmdb txm analyze --help')"),
    (["jobs", "--status"], "Option '--status' requires an argument. (see 'txmdb jobs --help')"),
    (["--bogus"], "No such option: --bogus (see 'txmdb --help')"),
    (["user", "add", "x"], "Missing option '--role'. Choose from: viewer, editor, admin (see 'txmdb user add --help')"),
])
def test_usage_errors_name_the_command_they_came_from(lab, args, message):
    """Errors click raises without a command's context (an option missing its value), txmdb's own
    options and click's multi-line messages: one line each, naming the right help."""
    result = lab(*args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {message}\n")


@pytest.mark.parametrize("args, option, low, high", [
    (["serve", "--port", "+80"], "'--port'", 1, 65535),
    (["serve", "--port", "0"], "'--port'", 1, 65535),
    (["serve", "--workers", "65"], "'--workers'", 1, 64),
    (["serve", "--max-upload-mb", "1_0"], "'--max-upload-mb'", 1, 1 << 20),
    (["user", "token", "x", "--expires-days", "3651"], "'--expires-days'", 1, 3650),
    (["report", "compare", "a", "--cycle", "0"], "'--cycle'", 1, MAX_CATALOGUE_INT),
    (["worker", "-c", "+1_0"], "'--concurrency' / '-c'", 0, MAX_CATALOGUE_INT),
    (["worker", "--threads", "0"], "'--threads'", 1, 64),
    (["worker", "--threads", "65"], "'--threads'", 1, 64),
    (["demo", "--size", "٣"], "'--size'", 0, MAX_CATALOGUE_INT),
])
def test_the_command_lines_own_numbers_read_alike(lab, args, option, low, high):
    """Options with a range of the command line's own (--port …) and the other counts: '+1_0' is
    not 10 (worker -c +1_0 started ten workers)."""
    command = " ".join(a for a in args[:2] if not a.startswith("-") and a != "x")
    result = lab(*args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"error: Invalid value for {option}: {args[-1]!r} is not a whole number from {low} to "
                             f"{high} (see 'txmdb {command} --help')\n")


def test_binning_factors_read_alike(lab):
    result = lab("txm", "analyze", "1", "--bin", "+1,٢")
    assert (result.exit_code, result.stderr) == (1, "error: --bin '+1,٢': expected binning factors like 1,2,3\n")


def test_a_list_takes_spaces_not_control_characters_around_its_numbers():
    assert integer_list(" 7,\t8 ,") == [7, 8]
    for text in ("\x1f1", "\u00a07,8", "7,\u20288"):
        with pytest.raises(ValueError, match="is not a whole number from 0 to"):
            integer_list(text)
    with pytest.raises(ValueError) as refused:
        integer_list(" ," * 1000)
    assert str(refused.value) == f"{' ,' * 20!r}"[:-1] + "…' holds no number; give N or N,N,…"


def test_zero_padding_is_not_counted_against_a_narrow_range():
    assert whole_number("007", low=1, high=64) == 7
    assert whole_number("000100", low=1, high=10_000) == 100
    assert whole_number("0" * 5000) == 0
    with pytest.raises(ValueError, match="^'065' is not a whole number from 1 to 64$"):
        whole_number("065", low=1, high=64)


def test_roi_ends_are_whole_numbers():
    from txmdb.errors import TxmdbError
    from txmdb.options import parse_roi

    assert parse_roi(" 0:64 ,:, 10 :90") == ((0, 64), (None, None), (10, 90))
    for text in ("+0:64,:,:", "0:1_00,:,:", "٠:64,:,:"):
        with pytest.raises(TxmdbError, match="expected Z0:Z1,Y0:Y1,X0:X1"):
            parse_roi(text)


def test_the_ranged_options_show_their_range_and_name_their_own_help(lab):
    assert "[1<=x<=65535]" in lab("serve", "--help").stdout
    assert "[1<=x<=3650]" in " ".join(lab("user", "token", "--help").stdout.replace("│", " ").split())
    for args, command in ((["user", "token", "x", "--expires-days"], "user token"),
                          (["db", "check", "--stale-hours"], "db check")):
        result = lab(*args)
        assert result.exit_code == 2 and result.stderr.endswith(f"(see 'txmdb {command} --help')\n"), result.stderr
