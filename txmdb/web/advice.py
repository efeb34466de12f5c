"""Domain errors as a browser user reads them: the web's words for the CLI's advice.

Errors name the command that helps ("no sample named 'x'; see 'txmdb sample list'", "run 'txmdb
init' to create it") and the CLI prints them as they are. Someone in a browser cannot run a
command: the pages and /api/v1 show the clause that names one as what that reader does instead,
the page that answers it or whom to ask (:func:`for_browser`, called where the web shows an
error), so the domain keeps one message for both. A command only the server's command line can
run (set-up, repair) goes to the server's log, where the administrator asked finds it.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

log = logging.getLogger("txmdb.web")

#: txmdb's advice, as its messages end: "see 'txmdb sample list'", "run 'txmdb init' to create it",
#: "run `txmdb db check`"; after the command no quote: names a user chose are always quoted, so
#: a clause that holds one ("bin: \"x; see 'txmdb jobs' ok\" is not …") is not advice
_COMMAND = re.compile(r"(?:see|run) (['`])txmdb ([^'`]+)\1[^'\"`]*")
#: the clauses of a message, with their separators: the advice is the last ("…; see 'txmdb jobs'")
_CLAUSE = re.compile(r"([;:] )")
#: a command no page does (the catalogue's set-up and repair, registration, reference spectra)
ASK = "ask the catalogue's administrator (the server's log says what to run)"
#: the hint of a page that shows what the command lists
SEE = "see {page}"


@dataclass(frozen=True)
class Advice:
    """A message in a browser's words, and the page it names: (its name, its path in the application)."""

    text: str
    link: tuple[str, str] | None = None


@functools.cache
def _pages() -> tuple:
    """(command pattern, page name, page path, hint) for the commands a page does; the pattern's
    groups fill the name and the path. The query tables are those of txmdb.query (each has a page)."""
    from txmdb.query import QUERIES

    tables = "|".join(map(re.escape, QUERIES))
    return tuple((re.compile(pattern), name, path, hint) for pattern, name, path, hint in (
        ("sample list", "the samples page", "/samples", SEE),
        ("cell list", "the cells table", "/query/cells", SEE),
        ("jobs", "the jobs page", "/jobs", SEE),
        (f"query ({tables})", "the {0} table", "/query/{0}", SEE),
        (r"txm show (\d+)", "the page of scan {0}", "/scans/{0}", SEE),
        (r"txm analyze (\d+)", "the page of scan {0}", "/scans/{0}", "an editor can queue an analysis on {page}"),
    ))


def for_browser(message: str) -> Advice:
    """``message`` with its advice in the web's words, and the page that advice names.

    The advice is a message's last clause, after ``; `` or ``: ``; only there is a command read, so
    a name quoted before it that looks like one ("no sample named "'txmdb jobs'"") stays as it is.
    """
    if "txmdb " not in message:  # nearly every message: no work
        return Advice(message)
    *head, last = _CLAUSE.split(message)
    command = _COMMAND.fullmatch(last) if head else None
    if command is None:
        return Advice(message)
    text, link = _instead(command.group(2))
    if link is None:  # (%r: the message cannot start a line of its own in the log)
        log.warning("an error shown in a browser without its command: %r", message)
    return Advice("".join(head) + text, link)


def _instead(command: str) -> tuple[str, tuple[str, str] | None]:
    """What a browser user does instead of ``command`` (its words after ``txmdb``), and the page that does it."""
    for pattern, name, path, hint in _pages():
        found = pattern.fullmatch(command)
        if found:
            page = name.format(*found.groups())
            return hint.format(page=page), (page, path.format(*found.groups()))
    return ASK, None
