"""Watch rules: which files of which folders become which records (DESIGN §12's TOML format).

A rule's values (``set`` and the named groups of its ``pattern``) carry the names of the
options of its kind's ingest command (``--voxel-nm`` → ``voxel_nm``); its ``analysis`` options
those of ``txm analyze``. Everything is checked when the file is read, so a watcher never
starts on a rules file it would stumble over later: unknown keys, bad regular expressions,
group names no option has, values of the wrong type, missing required values.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Callable

from txmdb.errors import InputError, TxmdbError
from txmdb.options import ANALYZE_OPTIONS
from txmdb.vocabulary import (
    AUTO, CYCLER_FORMATS, EDGES, HARVEST_KINDS, HARVEST_SETTLE_S, LAYOUTS, MAX_CYCLE_NUMBER, MODES, whole_number,
)

TOP_KEYS = ("settle_seconds", "rule")
RULE_KEYS = ("name", "folder", "glob", "kind", "pattern", "set", "register", "analyze", "analysis")


def _text(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected text, got {value!r}")
    return str(value)


def _number(kind: type) -> Callable[[Any], float | int]:
    def convert(value):
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            if kind is int and isinstance(value, str):    # as every typed number: '+1_0' is not 10
                number = whole_number(value)
            else:
                number = kind(value) if not (kind is int and isinstance(value, float)) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (kind is float and not math.isfinite(number)):
            raise ValueError(f"expected {'a whole number' if kind is int else 'a number'}, got {value!r}")
        return number
    return convert


def _one_of(values) -> Callable[[Any], str]:
    def convert(value):
        text = _text(value)
        if text not in values:
            raise ValueError(f"{text!r} is not one of {', '.join(values)}")
        return text
    return convert


def _window(name: str) -> Callable[[Any], str]:
    """A window "LO:HI" (or [LO, HI]) in eV, kept as the text the command's parser takes."""
    def convert(value):
        from txmdb.options import parse_window

        if isinstance(value, list) and len(value) == 2:
            value = ":".join("" if v is None else str(v) for v in value)
        text = _text(value)
        try:
            parse_window(text, name)
        except TxmdbError as exc:
            raise ValueError(str(exc).removeprefix(f"{name} ")) from None
        return text
    return convert


def _columns(value) -> str:
    """A cycler column map, "time_s=Time,voltage_v=Ewe" or a table {voltage_v = "Ewe"}."""
    from txmdb.io.cycling import parse_column_map

    if isinstance(value, dict):
        value = ",".join(f"{k}={v}" for k, v in value.items())
    text = _text(value)
    try:
        parse_column_map(text)
    except TxmdbError as exc:
        raise ValueError(str(exc).removeprefix("--columns: ")) from None
    return text


def _encoding(value) -> str:
    """A cycler CSV's text encoding, kept as given once Python decodes text with it."""
    from txmdb.io.cycling import text_codec

    text = _text(value)
    text_codec(text)
    return text


def _at_least(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    whole = _number(int)

    def convert(value):
        number = whole(value)
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError(f"{number} is not between {minimum} and {maximum}" if maximum
                             else f"{number} is less than {minimum}")
        return number
    return convert


_float, _int = _number(float), _number(int)


def _threshold(value) -> float:
    """A threshold as ``xas ingest --min-jump`` takes it (:func:`txmdb.options.non_negative`):
    refused when the rules are loaded, not on every file the rule then meets."""
    from txmdb.errors import TxmdbError
    from txmdb.options import non_negative

    number = _float(value)
    try:
        return non_negative(number, "min_jump")
    except TxmdbError as exc:
        raise ValueError(str(exc).removeprefix("min_jump ")) from None

#: Per kind: its ingest command's options (keyword → converter), and those it cannot do without.
OPTIONS: dict[str, dict[str, Callable]] = {
    "cycling": {"cell": _text, "format": _one_of((AUTO, *CYCLER_FORMATS)), "columns": _columns,
                "upper_cutoff": _float, "reference_cycle": _at_least(1, MAX_CYCLE_NUMBER), "encoding": _encoding},
    "xas": {"sample": _text, "reference": _text, "edge": _one_of(EDGES), "mode": _one_of(MODES), "state": _text,
            "depth_um": _float, "pre": _window("pre"), "post": _window("post"), "edge_window": _window("edge_window"),
            "min_jump": _threshold, "background": _window("background"), "l3_low": _window("l3_low"),
            "l3_high": _window("l3_high")},
    "xrd": {"sample": _text, "state": _text, "wavelength": _float, "a": _float, "c": _float},
    "txm": {"sample": _text, "state": _text, "layout": _one_of((AUTO, *LAYOUTS)), "data": _text, "energy": _text,
            "voxel_nm": _float},
}
REQUIRED = {"cycling": ("cell",), "xas": ("edge",), "xrd": ("sample", "wavelength"), "txm": ("sample",)}
#: Per kind: options of which each file needs exactly one (an XAS spectrum is a sample's or a named reference).
ONE_OF = {"xas": ("sample", "reference")}
@dataclass(frozen=True)
class Rule:
    """One ``[[rule]]``: files under ``folder`` whose path matches ``glob`` become ``kind`` records."""

    index: int  # 1-based, in the file's order
    folder: Path
    glob: str
    kind: str
    name: str | None = None
    pattern: re.Pattern | None = None
    values: dict[str, Any] = field(default_factory=dict)
    register: bool = False
    analyze: bool = False
    analysis: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How the harvested_files table and the logs name this rule: its name, else its number."""
        return self.name or str(self.index)

    def watches(self, path: Path) -> bool:
        """Whether ``path`` (absolute) is one of this rule's files: under its folder, matching its glob."""
        try:
            relative = PurePath(path).relative_to(self.folder)
        except ValueError:
            return False
        return relative.match(self.glob)

    def values_for(self, path: Path) -> dict[str, Any] | None:
        """The ingest options for ``path``: ``set`` and the pattern's groups (converted);
        None when the file's name does not match the pattern (the file is ignored).

        The pattern must match the whole name, or the whole path below the folder when it has a "/".
        Raises InputError naming the file when a group's value does not fit its option.
        """
        values = dict(self.values)
        if self.pattern is None:
            return values
        subject = PurePath(path).relative_to(self.folder).as_posix() if "/" in self.pattern.pattern else Path(path).name
        found = self.pattern.fullmatch(subject)
        if found is None:
            return None
        for key, text in found.groupdict().items():
            if text is None:  # an optional group that did not take part
                continue
            try:
                values[key] = OPTIONS[self.kind][key](text)
            except ValueError as exc:
                raise InputError(path, f"rule {self.label}: {key} from the file name: {exc}") from None
        if (one_of := ONE_OF.get(self.kind)) and sum(key in values for key in one_of) != 1:
            given = " and ".join(key for key in one_of if key in values) or "none"
            raise InputError(path, f"rule {self.label}: the file name gives {given} of {' or '.join(one_of)}; "
                                   f"exactly one is needed")
        return values


@dataclass(frozen=True)
class Rules:
    path: Path
    settle_seconds: float
    rules: tuple[Rule, ...]

    def rule_for(self, path: Path) -> Rule | None:
        """The first rule that watches ``path``."""
        return next((rule for rule in self.rules if rule.watches(path)), None)

    @property
    def folders(self) -> tuple[Path, ...]:
        """The folders to watch, each once, none inside another."""
        unique = sorted(set(rule.folder for rule in self.rules), key=lambda p: len(p.parts))
        kept: list[Path] = []
        for folder in unique:
            if not any(folder.is_relative_to(parent) for parent in kept):
                kept.append(folder)
        return tuple(kept)


def load_rules(path: str | os.PathLike) -> Rules:
    """Read and check a rules file; an InputError naming the file (and rule) on anything wrong."""
    import tomllib

    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(path, f"cannot read the rules file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(path, "the rules file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML: {exc}") from None
    _no_unknown(path, document, TOP_KEYS, "")
    settle = document.get("settle_seconds", HARVEST_SETTLE_S)
    if isinstance(settle, bool) or not isinstance(settle, (int, float)) or not 0 <= settle <= 86400:
        raise InputError(path, f"settle_seconds {settle!r}: expected seconds from 0 to 86400")
    entries = document.get("rule", [])
    if not isinstance(entries, list) or not entries:
        raise InputError(path, "no rules: add at least one [[rule]] with folder, glob and kind")
    base = path.resolve().parent
    rules = tuple(_rule(path, base, index, entry) for index, entry in enumerate(entries, start=1))
    for rule, problem in zip(rules, _analysis_problems([rule.analysis for rule in rules])):
        if problem:
            raise InputError(path, f"rule {rule.label}: analysis: {problem}")
    names = [rule.name for rule in rules if rule.name]
    if len(names) != len(set(names)):
        raise InputError(path, f"rule names must differ: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}")
    return Rules(path=path, settle_seconds=float(settle), rules=rules)


def _analysis_problems(analyses: list[dict]) -> list[str | None]:
    """Each rule's ``analysis`` parsed as its job will parse it (txmdb.options.analysis_request):
    None, or the one-line problem.

    That parse builds the analysis objects (numpy, pandas: ~100 MB a long-running watcher should
    not keep), so it runs in a short-lived child unless this process has them loaded already.
    """
    import json
    import subprocess
    import sys

    if not any(analyses) or "txmdb.pipeline" in sys.modules:
        return analysis_problems_here(analyses)
    script = ("import json, sys\nfrom txmdb.harvest.rules import analysis_problems_here\n"
              "print(json.dumps(analysis_problems_here(json.load(sys.stdin))))")
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(analyses), capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise TxmdbError(f"cannot check the rules' analysis options: {last}")
    return json.loads(done.stdout)


def analysis_problems_here(analyses: list[dict]) -> list[str | None]:
    """:func:`_analysis_problems` in this process."""
    from txmdb.options import analysis_request

    problems = []
    for analysis in analyses:
        try:
            if analysis:
                analysis_request(analysis)
            problems.append(None)
        except TxmdbError as exc:
            problems.append(str(exc))
    return problems


def _nested_repeat(text: str) -> bool:
    """Whether the regular expression ``text`` has an unbounded repetition inside another one.

    Python's matcher backtracks: ``(a+)+$`` or ``(\\w+_)+x`` takes exponential time on a file
    name that nearly matches, and a user of the watched folder picks the names. Possessive and
    atomic repetitions do not backtrack, so they are allowed.
    """
    from re import _parser as parser  # the compiler's own parse (sre_parse)

    repeats = (parser.MAX_REPEAT, parser.MIN_REPEAT)

    def walk(items, inside: bool) -> bool:
        for op, arg in items:
            if op in repeats:
                low, high, sub = arg
                unbounded = high == parser.MAXREPEAT
                if (inside and high > 1) or walk(sub, inside or unbounded):
                    return True
            elif op == parser.SUBPATTERN:
                if walk(arg[-1], inside):
                    return True
            elif op == parser.BRANCH:
                if any(walk(branch, inside) for branch in arg[1]):
                    return True
            elif op in (parser.ASSERT, parser.ASSERT_NOT):
                if walk(arg[1], inside):
                    return True
        return False

    return walk(parser.parse(text), False)


def _no_unknown(path: Path, table: dict, known, where: str) -> None:
    for key in table:
        if key not in known:
            raise InputError(path, f"{where}unknown key {key!r} (known: {', '.join(known)})")


def _rule(path: Path, base: Path, index: int, entry) -> Rule:
    if not isinstance(entry, dict):
        raise InputError(path, f"rule {index}: expected a [[rule]] table")
    where = f"rule {entry.get('name') or index}: " if isinstance(entry.get("name", ""), str) else f"rule {index}: "
    _no_unknown(path, entry, RULE_KEYS, where)
    for key in ("folder", "glob", "kind"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise InputError(path, f"{where}{key} is required (text)")
    kind = entry["kind"]
    if kind not in HARVEST_KINDS:
        raise InputError(path, f"{where}kind {kind!r} is not one of {', '.join(HARVEST_KINDS)}")
    options = OPTIONS[kind]
    folder = Path(os.path.expanduser(entry["folder"]))
    folder = Path(os.path.normpath(folder if folder.is_absolute() else base / folder))
    if folder == Path(folder.anchor):
        raise InputError(path, f"{where}folder {entry['folder']!r} is the whole file system: name the instruments' "
                               f"folder")
    pattern = None
    groups: tuple[str, ...] = ()
    if (text := entry.get("pattern")) is not None:
        if not isinstance(text, str):
            raise InputError(path, f"{where}pattern must be text (a regular expression)")
        try:
            pattern = re.compile(text)
        except re.error as exc:
            raise InputError(path, f"{where}bad regular expression {text!r}: {exc}") from None
        if _nested_repeat(text):
            raise InputError(path, f"{where}pattern {text!r} repeats a repetition (like (a+)+): some file names "
                                   f"would take it years to match; repeat a character class, or make the inner "
                                   f"repetition possessive (a++) or atomic ((?>a+))")
        groups = tuple(pattern.groupindex)
        for group in groups:
            if group not in options:
                raise InputError(path, f"{where}pattern group {group!r} is not an option of {kind} files "
                                       f"(options: {', '.join(options)})")
    fixed = entry.get("set", {})
    if not isinstance(fixed, dict):
        raise InputError(path, f"{where}set must be a table, e.g. set = {{ {next(iter(options))} = ... }}")
    _no_unknown(path, fixed, tuple(options), f"{where}set: ")
    values = {}
    for key, value in fixed.items():
        try:
            values[key] = options[key](value)
        except ValueError as exc:
            raise InputError(path, f"{where}set: {key}: {exc}") from None
    missing = [key for key in REQUIRED[kind] if key not in values and key not in groups]
    if missing:
        raise InputError(path, f"{where}{kind} files need {' and '.join(missing)}: give it in set or as a named "
                               f"group of pattern")
    if one_of := ONE_OF.get(kind):
        fixed_ones = [key for key in one_of if key in values]
        if len(fixed_ones) > 1 or (fixed_ones and any(key in groups for key in one_of if key not in fixed_ones)):
            raise InputError(path, f"{where}{kind} files take one of {' or '.join(one_of)}, not both")
        if not fixed_ones and not any(key in groups for key in one_of):
            raise InputError(path, f"{where}{kind} files need {' or '.join(one_of)}: give one in set or as a "
                                   f"named group of pattern")
    flags = {}
    for key in ("register", "analyze"):
        flags[key] = entry.get(key, False)
        if not isinstance(flags[key], bool):
            raise InputError(path, f"{where}{key} must be true or false")
        if flags[key] and kind != "txm":
            raise InputError(path, f"{where}{key} is for txm rules only")
    analysis = entry.get("analysis", {})
    if not isinstance(analysis, dict):
        raise InputError(path, f"{where}analysis must be a table of txm analyze options")
    if analysis and not flags["analyze"]:
        raise InputError(path, f"{where}analysis options without analyze = true")
    _no_unknown(path, analysis, tuple(ANALYZE_OPTIONS), f"{where}analysis: ")
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InputError(path, f"rule {index}: name must be non-empty text")
    return Rule(index=index, folder=folder, glob=entry["glob"], kind=kind, name=name, pattern=pattern, values=values,
                register=flags["register"], analyze=flags["analyze"], analysis=dict(analysis))
