"""Every ```python block of the documentation runs, so the pages cannot drift from the code.

The blocks of one page run in order in one namespace (a page reads like a session), in a fresh
temporary directory, with matplotlib drawing off-screen. A block is skipped only when the line
before its fence is ``<!-- no-test: reason -->``; keep that for blocks that need something this
machine does not have. Tracebacks point at the page and its line numbers.

The site itself is built by ``make docs``; the last tests check that its navigation lists every
page and, when MkDocs is installed, that ``mkdocs build --strict`` succeeds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)")
NO_TEST = re.compile(r"^<!--\s*no-test:\s*(?P<reason>\S.*?)\s*-->$")
PYTHON = {"python", "py", "python3"}


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the first code line
    code: str
    skip: str | None  # the reason, for a block marked no-test


def blocks_of(path: Path, root: Path = DOCS) -> list[Block]:
    """The fenced Python blocks of a Markdown page, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], m["indent"]
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if m["info"].lower() in PYTHON:
            prev = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
            marker = NO_TEST.match(prev)
            if "no-test" in prev and marker is None:
                raise ValueError(f"{path.name}:{i}: a no-test marker needs a reason: "
                                 "<!-- no-test: why -->")
            body = [ln[len(indent):] if ln.startswith(indent) else ln
                    for ln in lines[i + 1:end]]
            found.append(Block(str(path.relative_to(root)), i + 2, "\n".join(body) + "\n",
                               marker["reason"] if marker else None))
        i = end + 1
    return found


PAGES = sorted(DOCS.rglob("*.md"))
PAGES_WITH_CODE = [p for p in PAGES if blocks_of(p)]


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


#: ``print(value)  # shown`` where the comment shows a value (a literal, ``torch.Size(...)``...)
SHOWN = re.compile(r"^(?P<indent>[ \t]*)print\((?P<expr>.+)\)[ \t]+#[ \t]*(?P<shown>"
                   r"(?:[\[({'\"\d-]|True\b|False\b|None\b|[A-Za-z_][\w.]*\().*?)[ \t]*$")


#: shown values that depend on the machine, with the reason
MACHINE_DEPENDENT = {f"parallel.md:{n}": "the page shows a 4-device machine; the suite runs "
                     "on however many devices there are" for n in (21, 49, 52)}


def check_shown(value: object, shown: str, where: str) -> None:
    """``print(value)`` as the page shows it: the comment is the printed text, optionally
    followed by a remark after ``:``, ``,`` or a space; ``...`` elides the rest."""
    printed = str(value)
    print(printed)
    if where in MACHINE_DEPENDENT:
        return
    if "..." in shown:
        ok = printed.startswith(shown.split("...")[0])
    else:
        ok = shown == printed or any(shown.startswith(printed + sep) for sep in (":", ",", " "))
    assert ok, f"{where}: the page shows {shown!r}, the code prints {printed!r}"


def with_shown_checks(code: str, page: str, first_line: int) -> tuple[str, int]:
    """The block with each ``print(x)  # <value>`` turned into a check of that value."""
    lines = code.split("\n")
    count = 0
    for i, line in enumerate(lines):
        m = SHOWN.match(line)
        if m:
            where = f"{page}:{first_line + i}"
            lines[i] = (f"{m['indent']}__check_shown__(({m['expr']}), {m['shown']!r}, "
                        f"{where!r})")
            count += 1
    return "\n".join(lines), count


def test_shown_values_are_recognised() -> None:
    code, n = with_shown_checks('print(x.shape)   # (8, 1)\nprint(y)  # the batch part\n'
                                'print(z)  # torch.Size([2, 3]): rows\n', "p.md", 1)
    assert n == 2 and "__check_shown__((x.shape), '(8, 1)'" in code
    check_shown((8, 1), "(8, 1)", "p.md:1")
    check_shown(["a", "b", "c"], "['a', 'b', ...]", "p.md:1")
    for value, shown in (((8, 2), "(8, 1)"), (["a", "c"], "['a', 'b', ...]")):
        with pytest.raises(AssertionError, match="shows"):
            check_shown(value, shown, "p.md:1")


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_runs(page: Path, in_tmp_dir: Path) -> None:
    """Every block runs, and every value a page shows as ``print(x)  # value`` is the value
    printed (numbers, not phrases)."""
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}",
                                    "__check_shown__": check_shown}
    for block in blocks_of(page):
        if block.skip is not None:
            continue
        code, _ = with_shown_checks(block.code, block.page, block.line)
        # pad with blank lines so that tracebacks give the line number in the Markdown file
        source = "\n" * (block.line - 1) + code
        try:
            exec(compile(source, str(page), "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"{block.page}: the block at line {block.line} raised "
                                 f"{type(err).__name__}: {err}") from err


def test_skipped_blocks_are_rare() -> None:
    """Blocks marked no-test are listed here, with their reasons, so new ones are noticed."""
    skipped = [(b.page, b.line, b.skip) for p in PAGES for b in blocks_of(p) if b.skip]
    total = sum(len(blocks_of(p)) for p in PAGES)
    assert total > 50, "the pages have lost their examples"
    assert len(skipped) <= 5, f"too many blocks are not tested: {skipped}"


def test_harness_reads_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n<!-- no-test: needs a GPU cluster -->\n"
                    "```python\nraise SystemExit\n```\n\n```sh\nmake docs\n```\n\n"
                    "- item\n\n    ```python\n    y = x + 1\n    ```\n")
    found = blocks_of(page, root=tmp_path)
    assert [(b.line, b.code, b.skip) for b in found] == [
        (4, "x = 1\n", None), (9, "raise SystemExit\n", "needs a GPU cluster"),
        (19, "y = x + 1\n", None)]


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def _read_mkdocs_yml() -> dict:
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may use tags such as !!python/name:...; they are irrelevant here
    Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def test_navigation_lists_every_page() -> None:
    config = _read_mkdocs_yml()
    listed = set(_nav_pages(config["nav"]))
    pages = {str(p.relative_to(DOCS)) for p in PAGES}
    assert pages - listed == set(), "pages missing from the nav of mkdocs.yml"
    assert listed - pages == set(), "the nav of mkdocs.yml names pages that do not exist"


@pytest.mark.slow
def test_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
