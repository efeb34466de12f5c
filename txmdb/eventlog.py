"""The event log of the long-running processes (``txmdb worker``, ``txmdb watch``; DESIGN §12).

One line per event, written whole and flushed, so a journal (systemd, a log file, a pipe)
never holds half an event::

    2026-11-29T11:02:22.123Z info job.done job=12 kind=analyze scan=3 analysis_id=40 seconds=4.2

or, with ``json=True``, one JSON object per line with the keys ``ts``, ``level``, ``event``
and the event's fields. Values are shown as they are when they are plain words and
numbers, else quoted (JSON string syntax), so a line always splits back into its fields.
No password reaches the log: URLs (SQLAlchemy ``URL`` objects, or text that parses as one)
go through :func:`txmdb.db.engine.safe_url`, and every text through ``mask_secrets``
(``password=…``, ``user:password@``). Control characters are escaped in either form.

Standard library only at import time: the CLI imports this at start-up.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import threading
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")

# A value shown bare: no space, quote, '=', backslash or control character, and not empty.
_BARE = re.compile(r"[^\s\"'=\\\x00-\x1f\x7f]+")


class EventLog:
    """Writes events to ``stream`` (default: standard error), as text lines or JSON lines.

    Thread-safe: a worker's lease thread and its main thread share one log.
    """

    def __init__(self, stream: TextIO | None = None, *, json: bool = False, level: str = "info") -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; levels: {', '.join(LEVELS)}")
        self.stream = stream
        self.json = json
        self.threshold = LEVELS.index(level)
        self._lock = threading.Lock()

    def event(self, event: str, level: str = "info", /, **fields: Any) -> None:
        """Write one event: its name (dotted, e.g. ``job.done``), level and fields (None ones left out)."""
        if LEVELS.index(level) < self.threshold:
            return
        values = {key: _safe(value) for key, value in fields.items() if value is not None}
        stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = format_event(stamp, level, event, values, as_json=self.json)
        with self._lock:
            stream = self.stream or sys.stderr
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or file: the work goes on without its log
                pass

    def info(self, event: str, /, **fields: Any) -> None:
        self.event(event, "info", **fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        self.event(event, "warning", **fields)

    def error(self, event: str, /, **fields: Any) -> None:
        self.event(event, "error", **fields)


def format_event(stamp: str, level: str, event: str, fields: dict[str, Any], *, as_json: bool = False) -> str:
    """One event as its line (without the line break); ``fields`` already safe (:func:`_safe`)."""
    if as_json:
        # ensure_ascii: no control or bidi character of a file name reaches a terminal
        return json.dumps({"ts": stamp, "level": level, "event": event, **fields}, ensure_ascii=True, default=str)
    parts = [stamp, level, event]
    parts.extend(f"{key}={_text(value)}" for key, value in fields.items())
    return " ".join(parts)


def _text(value: Any) -> str:
    """A field value in a text line: bare when it is one plain word or number, else a JSON string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, int) else f"{value:.6g}"
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, ensure_ascii=True, default=str, separators=(",", ":"))
    text = str(value)
    if _BARE.fullmatch(text) and text.isascii():
        return text
    return json.dumps(text, ensure_ascii=True)


def _safe(value: Any) -> Any:
    """``value`` with every secret masked: URLs through safe_url, text through mask_secrets."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    from txmdb.db.engine import mask_secrets, safe_url

    if type(value).__name__ == "URL":  # a SQLAlchemy URL, without importing SQLAlchemy to ask
        return safe_url(value)
    text = str(value)
    if "://" in text and " " not in text.strip():
        return safe_url(text.strip())
    return mask_secrets(text)
