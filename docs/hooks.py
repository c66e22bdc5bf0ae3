"""MkDocs hooks: generated parts of pages, so that they cannot drift from the code.

``<!-- primitives-table -->`` in a page becomes a table of the primitive model classes of
``mithril.models`` (one per catalogue entry): their terminals, scalar arguments and summary.
These classes are created in a loop, so the API reference's static analysis cannot list them.
"""

from __future__ import annotations

import html
import re
from typing import Any

MARKER = "<!-- primitives-table -->"


def _cell(text: str) -> str:
    """One table cell from a docstring: code spans as HTML, so that ``|`` cannot split it."""
    text = " ".join(text.split())
    parts = re.split(r"``(.+?)``", text)
    for i in range(1, len(parts), 2):
        parts[i] = "<code>" + html.escape(parts[i]).replace("|", "&#124;") + "</code>"
    return "".join(parts).replace("|", "&#124;")


def primitives_table() -> str:
    from mithril.framework.ops import SCALAR
    from mithril.models import primitives

    rows = ["| class | inputs | arguments | outputs | what it computes |",
            "|---|---|---|---|---|"]
    for name in primitives.__all__:
        cls = getattr(primitives, name)
        opdef = getattr(cls, "op_def", None) or _catalogue_entry(cls)
        if opdef is None:
            continue
        tensors = [t.name for t in opdef.inputs if t.kind != SCALAR]
        if opdef.variadic:
            tensors = ["input1 ... inputN"]
        scalars = [t.name for t in opdef.inputs if t.kind == SCALAR]
        rows.append(f"| `{name}` | {', '.join(tensors) or '-'} | {', '.join(scalars) or '-'} | "
                    f"{', '.join(opdef.output_names)} | {_cell(cls.__doc__ or '')} |")
    return "\n".join(rows)


def _catalogue_entry(cls: Any) -> Any:
    from mithril.framework.ops import CATALOGUE

    op_name = getattr(cls, "op_name", "")
    return CATALOGUE.get(op_name) if op_name else None


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, primitives_table())
    return markdown
