"""docs/errors.md is a catalogue: every entry names tests that exist, and none is a known bug.

Each table row's third cell lists ``file::test`` or ``file::test[id, id]`` references (an id may
be abbreviated with a leading ``...``: any case ending so). This test resolves each against what
pytest collects from those files, so an entry cannot point at a renamed or deleted test; that
the tests themselves pass is the suite's job.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mithril.framework.shapes import INTERNAL_ID

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "docs" / "errors.md"
REFERENCE = re.compile(r"(test_\w+\.py)::(test_\w+)(?:\[([^\]]*)\])?")


def _rows() -> list[tuple[int, list[str]]]:
    """The rows of the catalogue's tables (those headed situation | exception | test | fix)."""
    rows, in_catalogue = [], False
    for number, line in enumerate(CATALOGUE.read_text().splitlines(), start=1):
        if not line.startswith("|"):
            in_catalogue = False
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if cells[0] == "situation":
            in_catalogue = True
        elif in_catalogue and not set(cells[0]) <= set("-| "):
            rows.append((number, cells))
    return rows


ROWS = _rows()


def test_the_catalogue_has_entries() -> None:
    assert len(ROWS) > 50, f"only {len(ROWS)} entries read from {CATALOGUE}"


@pytest.fixture(scope="module")
def collected() -> dict[tuple[str, str], list[str]]:
    """(file name, test name) -> the case ids pytest collects ('' for an unparametrised test)."""
    files = sorted({f for _, cells in ROWS for f, _, _ in REFERENCE.findall(cells[2])})
    paths = [str(path) for f in files for path in ROOT.glob(f"tests/**/{f}")]
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                             "-o", "addopts=", "-p", "no:xdist", *paths],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    tests: dict[tuple[str, str], list[str]] = {}
    for node in result.stdout.splitlines():
        match = re.fullmatch(r"(?:\S+/)?(test_\w+\.py)::(test_\w+)(?:\[(.*)\])?", node.strip())
        if match:
            tests.setdefault(match.group(1, 2), []).append(match.group(3) or "")
    return tests


@pytest.mark.parametrize(("line", "cells"), ROWS, ids=[f"line{n}" for n, _ in ROWS])
def test_entry_names_existing_tests(collected: dict[tuple[str, str], list[str]], line: int,
                                    cells: list[str]) -> None:
    references = REFERENCE.findall(cells[2])
    assert references, f"docs/errors.md:{line} names no test: {cells[2]!r}"
    for file_name, test_name, ids in references:
        cases = collected.get((file_name, test_name))
        assert cases is not None, f"docs/errors.md:{line}: no {file_name}::{test_name}"
        for case in filter(None, (part.strip() for part in ids.split(","))):
            found = (any(c.endswith(case[3:]) for c in cases) if case.startswith("...")
                     else case in cases)
            assert found, f"docs/errors.md:{line}: {file_name}::{test_name} has no case " \
                          f"{case!r} (it has {cases})"


def test_no_entry_is_an_open_bug() -> None:
    open_entries = [n for n, cells in ROWS if cells[0].startswith("**open**")]
    assert not open_entries, f"docs/errors.md lists open bugs on lines {open_entries}"


@pytest.fixture(scope="module")
def catalogue_messages(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Every ``MithrilError`` message raised while the catalogue's tests run (in a subprocess
    with the tests/message_recorder.py plugin)."""
    log = tmp_path_factory.mktemp("messages")
    nodes = sorted({f"{path.relative_to(ROOT)}::{test}"
                    for _, cells in ROWS for f, test, _ in REFERENCE.findall(cells[2])
                    for path in ROOT.glob(f"tests/**/{f}")})
    env = {**os.environ, "MITHRIL_MESSAGE_LOG": str(log)}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:xdist",
                    "-p", "no:cacheprovider", "-p", "tests.message_recorder", *nodes],
                   cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    messages = []
    for path in log.glob("messages-*.json"):
        messages += json.loads(path.read_text())
    return messages


def test_no_catalogue_message_shows_an_internal_symbol_id(catalogue_messages: list[str]
                                                          ) -> None:
    """Symbols nobody named print as the terminal and axis they come from (``input.dim2``),
    never as the internal id (``u13``) a reader cannot place."""
    assert len(catalogue_messages) > 300, f"only {len(catalogue_messages)} messages recorded"
    leaking = sorted({m for m in catalogue_messages if INTERNAL_ID.search(m)})
    assert not leaking, f"{len(leaking)} messages show internal symbol ids, e.g. {leaking[:3]}"
