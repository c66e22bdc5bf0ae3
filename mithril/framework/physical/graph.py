"""The flat graph: nested models flattened into catalogue primitives over named values.

``flatten`` walks the model tree once, mapping every connection at every level to one
:class:`Value` (a child's terminal and the parent connection it is bound to are the same value),
and lists the primitives as :class:`Node` objects. Values take readable names: root terminals
keep their names (``input``, ``conv2d.weight``), internal values are named after the connection
(``conv1``) or after the primitive that produces them (``relu_output``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..logical.meta import TBD, TENSOR, Meta
from ..logical.model import BaseModel, Connection, Model, Operator
from ..ops import OpDef


@dataclass(eq=False)
class Value:
    """One value of the flat graph."""

    name: str
    meta: Meta
    producer: Node | None = None
    consumers: list[Node] = field(default_factory=list)
    role: str = "internal"  # param | data | state | const | internal
    is_root_terminal: bool = False
    named: bool = False  # some model (at any level) named this connection

    @property
    def root(self) -> Meta:
        return self.meta.root()

    @property
    def is_tensor(self) -> bool:
        return self.root.kind == TENSOR

    @property
    def known(self) -> bool:
        return self.root.value is not TBD

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.role})"


@dataclass(eq=False)
class Node:
    """One primitive of the flat graph."""

    op: OpDef
    prim: Operator
    inputs: list[Value]
    outputs: list[Value]
    path: str

    def __repr__(self) -> str:
        return f"Node({self.op.name} at {self.path})"


@dataclass
class FlatGraph:
    nodes: list[Node]
    values: list[Value]
    inputs: dict[str, Value]  # root input terminals by name
    outputs: dict[str, Value]  # root output terminals by name


def flatten(model: BaseModel) -> FlatGraph:
    """Flatten ``model`` (a composite) into primitives; no pass has run yet."""
    if not isinstance(model, Model):
        raise TypeError("flatten needs a Model")
    values: list[Value] = []
    by_conn: dict[int, Value] = {}
    nodes: list[Node] = []

    def value_for(conn: Connection, hint: str, prefix: str = "") -> Value:
        v = by_conn.get(id(conn))
        if v is None:
            v = Value(prefix + conn.key if conn.key else hint, conn.meta)
            values.append(v)
            by_conn[id(conn)] = v
        if conn.key is not None and not isinstance(conn.model, Operator):
            v.named = True
        return v

    iface = model.interface()
    inputs: dict[str, Value] = {}
    outputs: dict[str, Value] = {}
    in_names = set(model.input_terminals())
    for name, conn in iface.items():
        v = value_for(conn, name)
        v.name = name
        v.is_root_terminal = True
        (inputs if name in in_names else outputs)[name] = v

    def walk(m: Model, prefix: str) -> None:
        for child, binding in m.iter_children():
            local = child._local_name or child.class_name
            path = f"{prefix}{local}"
            if isinstance(child, Operator):
                # a layer wrapping one primitive names values after the layer (``linear.output``)
                hint = prefix.rstrip(".") if len(m.children) == 1 and prefix else path
                ins = [value_for(binding[n], f"{hint}.{n}", prefix) for n in child.input_names]
                outs = [value_for(binding[n], f"{hint}.{n}", prefix) for n in child.output_names]
                node = Node(child.op, child, ins, outs, path)
                for v in ins:
                    v.consumers.append(node)
                for v in outs:
                    v.producer = node
                nodes.append(node)
            elif isinstance(child, Model):
                inner = child.interface()
                for name, inner_conn in inner.items():
                    v = value_for(binding[name], f"{path}.{name}", prefix)
                    by_conn[id(inner_conn)] = v
                    if inner_conn.key is not None:
                        v.named = True
                walk(child, f"{path}.")
            else:  # pragma: no cover - every model is one of the two
                raise TypeError(f"unknown model type {type(child).__name__}")

    walk(model, "")
    return FlatGraph(nodes, values, inputs, outputs)


def value_literal_ok(value: Any) -> bool:
    """Whether ``value`` can be written into generated code as a literal."""
    from ..types import Dtype

    if value is None or value is Ellipsis or isinstance(value, bool | int | float | str | Dtype):
        return True
    if isinstance(value, tuple | list):
        return all(value_literal_ok(x) for x in value)
    if isinstance(value, slice):
        return all(value_literal_ok(x) for x in (value.start, value.stop, value.step))
    return False
