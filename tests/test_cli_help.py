"""Every command has help text, and ``txmdb --help`` starts fast."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from txmdb.cli.main import app


def _walk(command, path: tuple[str, ...] = ()):
    # Duck-typed: typer ships its own copy of click, so isinstance(…, click.Group) is never true.
    yield path, command
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _walk(sub, path + (name,))


COMMANDS = list(_walk(typer.main.get_command(app)))


def test_the_walk_reaches_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"init", "db check", "query sql", "txm analyze", "report compare"} <= names


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "txmdb" for p, _ in COMMANDS])
def test_every_command_has_help(path, command):
    assert (command.help or "").strip(), f"txmdb {' '.join(path)} has no help text"
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
    for param in command.params:
        if param.param_type_name == "option" and param.name != "help":
            assert (param.help or "").strip(), f"option {param.name} of txmdb {' '.join(path)} has no help"


HEAVY = ("numpy", "pandas", "sqlalchemy", "h5py", "scipy", "matplotlib", "numexpr", "alembic", "dask")


def test_help_imports_nothing_heavy():
    # Start-up time is dominated by imports; the CLI keeps heavy ones inside commands
    # (benchmarks/bench_startup.py measures the time itself).
    code = (
        "import sys; from txmdb.cli.main import app; import typer; "
        "typer.main.get_command(app); print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def _collapsed(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


DEFAULT_NOTES = [(path, param) for path, command in COMMANDS for param in command.params
                 if param.param_type_name == "option" and "[default:" in (param.help or "")]


def test_options_with_a_default_note_are_found():
    found = {(" ".join(p), q.name) for p, q in DEFAULT_NOTES}
    assert found >= {("txm analyze", "workers"), ("txm analyze", "registration"), ("query retention", "reference"),
                     ("", "db"), ("", "store")}


@pytest.mark.parametrize("path, param", DEFAULT_NOTES, ids=[f"{' '.join(p)} {q.name}" for p, q in DEFAULT_NOTES])
def test_a_default_note_is_shown_in_help(path, param):
    """'[default: …]' written in an option's help reaches --help (rich markup took an unescaped
    one for a style tag and dropped it)."""
    from typer.testing import CliRunner

    # wide: a wrapped metavar column would interleave with the note's words
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    note = param.help[param.help.index("[default:") - 1:].removeprefix("\\")
    assert _collapsed(note) in _collapsed(result.output)
