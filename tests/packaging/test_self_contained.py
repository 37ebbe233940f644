"""A clone tests and runs by itself: nothing in it reaches outside the checkout for files.

The conformance corpus and every other piece of test data live under tests/data/; a path
that climbs out of the repository (`../shared`, `REPO.parent / ...`) works only on a
developer machine laid out like this project's, never in a user's clone.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import PAC_CORPUS, REPO

OUTSIDE = re.compile(r"\.\./shared|REPO\.parent|parent\s*/\s*[\"']shared[\"']")
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}
TEXT = {".py", ".sh", ".toml", ".yaml", ".yml", ".md", ".json", ".cfg", ".txt", ""}


def _files() -> list[Path]:
    out = []
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in TEXT and path != Path(__file__):
            out.append(path)
    return out


def test_nothing_reaches_outside_the_checkout() -> None:
    hits = []
    for path in _files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert hits == []


def test_corpus_is_in_the_repository() -> None:
    assert PAC_CORPUS.is_relative_to(REPO)
    assert (PAC_CORPUS / "cases.json").is_file()
    assert (PAC_CORPUS / "README.md").is_file()
