"""The graph walk: Mithril's flat program, node by node, into ONNX nodes.

An :class:`Emitter` holds what each Mithril value has become: a compile-time Python value
(:class:`Lit`), an ONNX tensor name, a runtime tuple of ints (a 1-d int64 tensor, e.g. a
shape), or a runtime slice. Op mappings (``mapping.MAPPINGS``) read their inputs through it
and return their outputs; a primitive without a mapping, or a mapping that cannot export the
case at hand, is recorded and the walk goes on, so that one error names every problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..framework.logical.meta import TENSOR
from ..framework.physical.graph import Node, Value
from ..framework.physical.passes import Program
from .builder import BOOL, FLOATS, INT64, INTS, GraphBuilder


@dataclass(frozen=True)
class Lit:
    """A value known at export time (a Python number, tuple, slice, dtype, None)."""

    value: Any


@dataclass(frozen=True)
class TupleRef:
    """A tuple of ints known only at run time: a 1-d int64 ONNX tensor."""

    name: str


@dataclass(frozen=True)
class SliceRef:
    """``slice(start, stop, step)`` whose parts may be known only at run time."""

    start: Any
    stop: Any
    step: Any


class Unsupported(Exception):
    """A node that cannot be exported; the message says why."""


@dataclass(frozen=True)
class TensorsRef:
    """A tuple (list) holding tensors (``ToTuple`` of tensors): its elements' refs; indexing
    it with a constant picks one, nothing else reads it."""

    items: tuple[Any, ...]


Ref = Lit | TupleRef | SliceRef | TensorsRef | str


class Emitter:
    """State of one export: values so far, and the builder the mappings write into."""

    def __init__(self, program: Program, builder: GraphBuilder) -> None:
        self.p = program
        self.b = builder
        self.refs: dict[int, Ref] = {}
        self.node: Node | None = None

    # ---- reading inputs ----
    def ref(self, v: Value) -> Ref:
        ok, value = self.p.literal(v)
        if ok:
            return Lit(value)
        return self.refs[id(v)]

    def is_lit(self, v: Value) -> bool:
        return isinstance(self.ref(v), Lit)

    def lit(self, v: Value, what: str = "") -> Any:
        """The export-time value of ``v``; Unsupported when it is known only at run time."""
        r = self.ref(v)
        if isinstance(r, Lit):
            return r.value
        raise Unsupported(f"its {what or v.name!r} is known only at run time")

    def arg(self, name: str) -> Value:
        """The current node's input terminal ``name``."""
        assert self.node is not None
        return self.node.inputs[self.node.prim.input_names.index(name)]

    def value(self, name: str) -> Any:
        """The export-time value of the current node's scalar terminal ``name``."""
        return self.lit(self.arg(name), name)

    def tensor(self, v: Value, like: int | None = None) -> str:
        """``v`` as an ONNX tensor name; a Python number becomes a constant of type ``like``
        (or its own kind: int64, bool, the model's float type)."""
        r = self.ref(v)
        if isinstance(r, str):
            return r
        if isinstance(r, TupleRef):
            return r.name
        if isinstance(r, SliceRef):
            raise Unsupported("a slice is used as a tensor")
        if isinstance(r, TensorsRef):
            raise Unsupported("a tuple of tensors is used as a tensor (only its elements, "
                              "indexed with constants, can be exported)")
        return self.const(r.value, like)

    def const(self, value: Any, like: int | None = None) -> str:
        if value is None:
            raise Unsupported("an absent (None) value is used as a tensor")
        return self.b.const(value, like if like is not None else self.python_type(value))

    def python_type(self, value: Any) -> int:
        """ONNX type of a Python value standing alone (NumPy's rules, our float type)."""
        items = value if isinstance(value, tuple | list) else [value]
        flat: list[Any] = []
        while items:
            x = items.pop()
            if isinstance(x, tuple | list):
                items.extend(x)
            else:
                flat.append(x)
        if flat and all(isinstance(x, bool) for x in flat):
            return BOOL
        if all(isinstance(x, int) for x in flat):
            return INT64
        return self.b.float_type

    def type_of(self, name: str) -> int:
        return self.b.type_of(name)

    # ---- what the model knows about a value ----
    def dims(self, v: Value) -> list[int | None] | None:
        """Static dims of tensor ``v`` (None for a symbolic dim), or None if its rank is open."""
        r = v.root
        if r.kind != TENSOR:
            return None
        f = r.shape.normal()
        if f.var is not None:
            return None
        return [d.value for d in f.prefix]

    def rank(self, v: Value) -> int:
        dims = self.dims(v)
        if dims is None:
            raise Unsupported(f"the rank of {v.name!r} is not known; give shapes=")
        return len(dims)

    # ---- writing ----
    def hint(self, suffix: str = "") -> str:
        assert self.node is not None
        base = self.node.outputs[0].name if self.node.outputs else self.node.path
        return base + suffix

    def run(self, mappings: dict[str, Any], unsupported: dict[str, str]) -> list[str]:
        """Map every node; returns the problems found (empty when the graph is complete)."""
        problems: list[str] = []
        broken: set[int] = set()
        for node in self.p.nodes:
            if any(id(v) in broken for v in node.inputs):
                broken.update(id(o) for o in node.outputs)
                continue
            name = node.op.name
            self.node = node
            try:
                if name in unsupported:
                    raise Unsupported(unsupported[name])
                fn = mappings.get(name)
                if fn is None:
                    raise Unsupported("no ONNX mapping")
                out = fn(self, node)
            except Unsupported as err:
                problems.append(f"{name} at {node.path!r} ({err})")
                broken.update(id(o) for o in node.outputs)
                continue
            outs = out if isinstance(out, list) else [out]
            for v, r in zip(node.outputs, outs, strict=False):
                self.refs[id(v)] = r
        self.node = None
        return problems


def elem_type_of_kinds(kinds: int, float_type: int) -> int:
    """ONNX type of a graph input of these kinds (floats in the model's float type)."""
    if kinds == 2:
        return INT64
    if kinds == 1:
        return BOOL
    return float_type


__all__ = ["BOOL", "FLOATS", "INT64", "INTS", "Emitter", "Lit", "SliceRef", "TupleRef",
           "Unsupported", "elem_type_of_kinds"]
