"""The catalogue's signature table (``docs/dev/catalogue-signatures.md``), generated.

Run ``python -m mithril.framework.ops.signatures`` to rewrite the page;
``tests/test_catalogue_docs.py`` fails while the committed page differs from
:func:`signatures_markdown`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..logical.meta import SCALAR, TBD, TENSOR
from . import CATALOGUE, core_ops
from .base import OpDef, Term

PAGE = Path(__file__).resolve().parents[3] / "docs" / "dev" / "catalogue-signatures.md"


def _term(t: Term) -> str:
    kind = {TENSOR: "tensor", SCALAR: "scalar", None: "tensor-or-number"}[t.kind]
    if t.optional:
        kind += ", optional"
    if not t.differentiable:
        kind += ", no gradient"
    text = f"{t.name} ({kind})"
    return text if t.default is TBD else f"{text} = {t.default!r}"


def _flags(op: OpDef) -> str:
    flags = ["core" if op.core else ("derived" if op.decompose is not None else "Python")]
    if not op.differentiable:
        flags.append("not differentiable")
    flags += [f for f, on in (("random", op.random), ("stateful", op.stateful),
                              ("modal", op.modal), ("variadic", op.variadic)) if on]
    if op.public:
        flags.append(f"`{op.public}`")
    return ", ".join(flags)


def signatures_markdown() -> str:
    """The page: one line per primitive, in catalogue order.

    >>> "`exp(input (tensor))` -> output" in signatures_markdown()
    True
    """
    import mithril.models  # noqa: F401 - its classes name themselves on their primitives

    lines = [
        "# Catalogue signatures",
        "",
        "Generated from the catalogue (`mithril/framework/ops/`) by",
        "`python -m mithril.framework.ops.signatures`; `tests/test_catalogue_docs.py` fails when",
        "this page is stale. *core*: every backend implements it; *derived*: it has a",
        "decomposition into core primitives, used where a backend has no kernel of its own;",
        "*Python*: plain Python in generated code. A class name is the `mithril.models` class.",
        "",
        f"{len(CATALOGUE)} primitives, {len(core_ops())} of them core.",
        "",
    ]
    for op in CATALOGUE.values():
        ins = ", ".join(_term(t) for t in op.inputs)
        if op.variadic:
            ins = ins.replace(op.inputs[0].name, op.inputs[0].name + "...", 1)
        outs = ", ".join(t.name for t in op.outputs)
        doc = f" — {op.doc}" if op.doc else ""
        lines.append(f"- `{op.name}({ins})` -> {outs}  [{_flags(op)}]{doc}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PAGE
    target.write_text(signatures_markdown())
    print(f"wrote {target}")
