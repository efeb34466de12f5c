"""The project tests itself with nothing outside it: no test, benchmark or doc reads ../shared."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./shared\b|parents\[1\]\.parent|PROJECT\.parent|parent\s*/\s*[\"']shared[\"']")


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    return [PROJECT / n for n in names.splitlines()
            if n.endswith((".py", ".md", ".toml", ".cfg", ".ini", ".sh", ".txt")) or n in ("Makefile", ".ci/run")]


def test_nothing_refers_to_a_folder_beside_the_project():
    this = Path(__file__).resolve()
    offenders = [str(p.relative_to(PROJECT)) for p in _tracked_text_files()
                 if p.resolve() != this and p.is_file() and OUTSIDE.search(p.read_text(errors="replace"))]
    assert offenders == []


def test_every_data_file_has_its_origin_and_licence():
    data = PROJECT / "tests" / "data"
    sources = (data / "SOURCES.md").read_text()
    files = [p for p in data.rglob("*") if p.is_file() and p.name != "SOURCES.md"]
    assert files
    for path in files:
        rel = path.relative_to(data).as_posix()
        folder = rel.rsplit("/", 1)[0]
        # A row names the file itself, or its folder with a wildcard (`cycling/neware-ndax/*.ndax`).
        assert rel in sources or path.name in sources or f"{folder}/*{path.suffix}" in sources, rel
    assert "licence" in sources and all(word in sources for word in ("MIT", "BSD", "Apache-2.0"))
