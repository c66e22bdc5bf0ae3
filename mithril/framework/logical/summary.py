"""``Model.summary()``: a table of submodels, their terminals, shapes, types and sizes."""

from __future__ import annotations

import math
from typing import Any

from .. import types as T
from .meta import TBD, TENSOR
from .model import BaseModel, Connection, Model


def _shape_text(conn: Connection) -> str:
    m = conn.meta.root()
    if m.kind != TENSOR:
        return "scalar"
    return repr(m.shape)


def _kinds_text(conn: Connection) -> str:
    return T.kind_names(conn.meta.root().kinds)


def _param_count(model: BaseModel) -> int | None:
    """Elements in the model's trainable inputs, None while a shape is unknown."""
    total = 0
    for name in model.input_terminals():
        conn = model.interface()[name]
        meta = conn.meta.root()
        if meta.kind != TENSOR or not meta.differentiable:
            continue
        f = meta.shape.normal()
        if f.var is not None or any(d.value is None for d in f.prefix):
            return None
        total += math.prod(d.value for d in f.prefix)
    return total


def model_summary(model: BaseModel, depth: int = 1) -> str:
    """Rows per submodel (to ``depth`` levels) with inputs, outputs, shapes and parameters."""
    rows: list[tuple[str, str, str, str, str]] = [
        ("model", "terminal", "shape", "type", "params")]

    def add_rows(m: BaseModel, label: str, binding: dict[str, Connection] | None) -> None:
        count = _param_count(m)
        first = True
        iface = m.interface()
        for role, names in (("in", m.input_terminals()), ("out", m.output_terminals())):
            for name in names:
                conn = iface[name]
                meta = conn.meta.root()
                if meta.kind != TENSOR and meta.value is not TBD and role == "in" and \
                        not isinstance(m, Model):
                    continue  # fixed hyper-parameters of primitives
                target = ""
                if binding is not None and name in binding and binding[name].key:
                    target = f" -> {binding[name].key}"
                rows.append((label if first else "", f"{role} {name}{target}",
                             _shape_text(conn), _kinds_text(conn),
                             ("?" if count is None else f"{count:,}") if first else ""))
                first = False

    add_rows(model, model.name or model.class_name, None)

    def walk(m: BaseModel, level: int, prefix: str) -> None:
        if not isinstance(m, Model) or level > depth:
            return
        for child, binding in m.iter_children():
            label = prefix + (child._local_name or child.class_name)
            add_rows(child, label, binding)
            walk(child, level + 1, label + ".")

    walk(model, 1, "  ")
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    total = _param_count(model)
    count = "unknown until shapes are set" if total is None else f"{total:,}"
    lines.append(f"trainable parameters: {count}")
    return "\n".join(lines)


def describe(x: Any) -> str:
    return repr(x)
