"""Stored text made safe to show: on a terminal, in a spreadsheet, in a figure or a web page.

Names, notes and file paths are whatever the user typed or the file system holds. Shown
raw, some of them act instead of being read: ``ESC [2J`` clears the terminal, ``\\r``
overwrites the start of a line, U+202E turns the rest of a line around, a file name that
is not UTF-8 arrives as lone surrogates that no UTF-8 stream can write, and a CSV cell
``=HYPERLINK(…)`` is a formula once a spreadsheet opens it. Every layer that shows stored
text (the CLI, the report, a web app) goes through the functions here, so all show the
same escapes. Standard library only: the CLI imports this before any command runs.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["visible", "spreadsheet_cell", "utf8_problem"]

# Control characters (C0, DEL, C1), format characters (bidi overrides and isolates,
# zero-width joiners and spaces, BOM), surrogates, and the line and paragraph separators:
# a terminal or viewer acts on these, or shows nothing, instead of a glyph.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Only these need a look, one at a time: long ASCII text (a whole report) passes at C speed.
_NOT_ASCII_PRINTABLE = re.compile(r"[^ -~]")

# Text a spreadsheet reads as a formula when it starts a cell (OWASP CSV injection, ASVS
# 1.2.10), with the full-width forms some spreadsheets fold to ASCII.
_FORMULA_STARTS = tuple("=+-@\t\r\n\0＝＋－＠")
# A cell that is just a number is read as that number, never as a formula: left as it is.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:
        # A byte that was not UTF-8 (surrogateescape, how Python decodes file names): show the byte.
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str, *, keep: str = "") -> str:
    """``text`` with every character that would act rather than show written as a backslash escape.

    Parameters
    ----------
    text : str
        Any text, e.g. a sample name or an error message naming one.
    keep : str
        Characters to leave as they are, e.g. ``"\\n"`` for multi-line output whose line
        breaks are its own. By default the result is always one line.

    Returns
    -------
    str
        The text, with control and format characters as ``\\x1b``, ``\\r``, ``\\u202e``…,
        and undecodable file-name bytes as ``\\xe9``. Backslashes already in the text are
        left alone: the result is for reading, not for decoding back.
    """
    if text.isprintable():
        return text  # the common case, in one C call

    def shown(match: re.Match) -> str:
        char = match.group()
        return char if char in keep or unicodedata.category(char) not in _ESCAPED_CATEGORIES else _escape(char)

    return _NOT_ASCII_PRINTABLE.sub(shown, text)


def spreadsheet_cell(text: str) -> str:
    """A text cell that a spreadsheet reads as text, never as a formula.

    A cell starting with ``= + - @``, a tab, a line break or NUL gets a leading ``'`` (the
    spreadsheet convention for "this is text"), unless it is just a number such as
    ``-5`` or ``+1.5e3``, which stays as it is. Apply it to text cells only: numeric
    columns are numbers and need nothing.
    """
    if text.startswith(_FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def utf8_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as text (a file name that is not UTF-8), or None.

    Python decodes file names with ``surrogateescape``: bytes that are not UTF-8 become
    lone surrogates, which neither a UTF-8 stream nor PostgreSQL nor SQLite can store.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (undecodable bytes shown as \\xNN)"
    return None
