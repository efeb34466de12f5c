"""What the code imports is what pyproject.toml declares (issue 9 §9).

``rich`` was used but only pulled in through typer, and the numpy floor (1.26) was below both
``np.trapezoid`` (numpy 2.0) and fastnda's own requirement. These tests read the package's
sources, so an undeclared import or a stale floor fails here rather than on a user's machine.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, requires

from tests.conftest import PROJECT

SOURCES = ("txmdb", "cli")


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


def _declared(requirements: list[str]) -> set[str]:
    """The requirements' distributions, with those their extras pull in (``dask[distributed]``)."""
    names = set()
    for requirement in requirements:
        name = _name(requirement)
        names.add(name)
        extras = re.search(r"\[([^\]]*)\]", requirement.split(";")[0])
        for extra in (e.strip() for e in extras.group(1).split(",")) if extras else ():
            names |= {_name(r) for r in requires(name) or [] if re.search(rf"extra\s*==\s*['\"]{extra}['\"]", r)}
    return names


def _floor(requirements: list[str], name: str) -> tuple[int, ...] | None:
    for requirement in requirements:
        if _name(requirement) == name and ";" not in requirement.split(">=")[0]:
            found = re.search(r">=\s*([0-9][0-9.]*)", requirement)
            if found:
                return tuple(int(part) for part in found.group(1).rstrip(".").split("."))
    return None


def _project() -> dict:
    return tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]


def _top_level_imports() -> dict[str, set[str]]:
    """Top-level module name → the files (relative) that import it, for every absolute import."""
    found: dict[str, set[str]] = {}
    for folder in SOURCES:
        for path in sorted((PROJECT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(PROJECT)))
    return found


def test_every_third_party_import_is_declared():
    project = _project()
    declared = _declared(project["dependencies"])
    declared |= _declared([r for extra in project.get("optional-dependencies", {}).values() for r in extra])
    distributions = packages_distributions()
    imports = _top_level_imports()
    assert {"numpy", "typer", "rich", "fastnda"} <= set(imports)  # the scan sees the code
    third_party = {name: files for name, files in imports.items()
                   if name not in sys.stdlib_module_names and name not in ("txmdb", "__future__")}
    unresolved = sorted(name for name in third_party if name not in distributions)
    assert not unresolved, f"imports of no installed distribution: {unresolved}"
    undeclared = {name: sorted(files) for name, files in third_party.items()
                  if not {_name(d) for d in distributions[name]} & declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_numpy_floor_covers_trapezoid_and_fastnda():
    floor = _floor(_project()["dependencies"], "numpy")
    assert floor is not None and floor >= (2, 0)  # np.trapezoid (txmdb/analysis/xrd.py) is numpy 2.0
    fastnda_floor = _floor(requires("fastnda") or [], "numpy")
    assert fastnda_floor is not None and floor >= fastnda_floor, (floor, fastnda_floor)
