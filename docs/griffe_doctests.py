"""A Griffe extension for the API reference: show docstring examples as code.

Mithril's docstrings hold doctest examples (``>>> ...`` lines and their output) in plain text,
and cross-references in reStructuredText roles (``:meth:`evaluate```). Markdown would render
the first as nested quotes and the second literally, so this extension fences each run of
doctest lines as a ``pycon`` block and turns roles into inline code before mkdocstrings
renders the page. Only the rendered documentation changes; the docstrings stay doctests.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:meth|func|class|attr|mod|obj|data|exc):`~?([^`]+)`")


def fence_doctests(text: str) -> str:
    """``text`` with every block of ``>>>`` lines (up to the next blank line) fenced."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            indent = line[:len(line) - len(line.lstrip())]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent):] if lines[i].startswith(indent)
                             else lines[i].lstrip())
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    """Fence doctest examples and flatten reST roles in every docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = ROLE.sub(r"`\1`", obj.docstring.value)
            obj.docstring.value = fence_doctests(value)
