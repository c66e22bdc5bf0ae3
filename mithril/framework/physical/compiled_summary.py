"""The compiled model's summary table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .checks import pattern_text

if TYPE_CHECKING:
    from .compiled import CompiledModel


def compiled_summary(compiled: CompiledModel) -> str:
    """The table of inputs (data, parameters, state) and outputs with shapes and sizes that
    ``CompiledModel.summary`` prints."""
    rows = [("kind", "name", "shape", "size")]
    total = 0
    for key, (pattern, _, kind) in compiled.info.data.items():
        rows.append(("data", key, pattern_text(pattern) if kind != "scalar" else "scalar",
                     ""))
    for key, spec in compiled.info.params.items():
        n = math.prod(spec.shape)
        total += n
        rows.append(("param", key, str(list(spec.shape)), f"{n:,}"))
    for key, spec in compiled.info.state.items():
        rows.append(("state", key, str(list(spec.shape)), f"{math.prod(spec.shape):,}"))
    for key in compiled.output_keys:
        rows.append(("output", key, _shape_text(compiled.info.shapes.get(key)), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"{type(compiled.backend).__name__}: {total:,} trainable parameters")
    return "\n".join(lines)


def _shape_text(shape: Any) -> str:
    """A shape from ``shapes`` as the summary writes it: ``[N, 10]``, without quotes."""
    if shape is None:
        return "unknown"
    return "[" + ", ".join(str(d) for d in shape) + "]"
