"""Passes over the flat graph: roles of inputs, constant folding, pruning, ordering.

The result is a :class:`Program`: the primitives to run in order, and which values are
parameters, data, state and constants.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import CompileError
from ..logical.meta import SCALAR, TBD, TENSOR
from ..rules import concrete, is_concrete
from .graph import FlatGraph, Node, Value


@dataclass
class Program:
    nodes: list[Node]
    params: dict[str, Value]
    data: dict[str, Value]
    state: dict[str, tuple[Value, Value]]  # key -> (state input value, its updated value)
    consts: dict[str, Value]  # tensor constants by name
    outputs: dict[str, Value]
    inference: bool
    unused_inputs: set[str] = field(default_factory=set)
    #: scalars the kept nodes read whose value depends on shapes not known at compile time;
    #: reported after the parameters' shapes (``compile._check_determined``), which name the
    #: cause better (``LayerNorm()``'s ``normalized_shape`` is its weight's shape)
    unknown_scalars: list[str] = field(default_factory=list)

    def literal(self, v: Value) -> tuple[bool, Any]:
        """(True, python value) when ``v`` is a compile-time scalar known exactly."""
        r = v.root
        if r.kind == TENSOR or r.value is TBD or isinstance(r.value, np.ndarray):
            return False, None
        if is_concrete(r.value):
            return True, concrete(r.value)
        return False, None


def _is_static(v: Value) -> bool:
    r = v.root
    if r.value is TBD or isinstance(r.value, np.ndarray) or r.kind == TENSOR:
        return False
    return is_concrete(r.value)


def build_program(graph: FlatGraph, *, inference: bool, data_keys: Iterable[str] = (),
                  trainable_keys: Iterable[str] = (), discard_keys: Iterable[str] = (),
                  extra_outputs: Iterable[str] = ()) -> Program:
    data_keys, trainable_keys = set(data_keys), set(trainable_keys)
    for k in (*data_keys, *trainable_keys):
        if k not in graph.inputs:
            raise CompileError(f"{k!r} is not an input of the model; inputs: "
                               f"{', '.join(graph.inputs)}")
    both = data_keys & trainable_keys
    if both:
        raise CompileError(f"{sorted(both)} are listed both as data_keys and trainable_keys")
    for k in discard_keys:
        if k not in graph.outputs:
            raise CompileError(f"discard key {k!r} is not an output of the model; outputs: "
                               f"{', '.join(graph.outputs)}")

    # a cycle anywhere is an error, also where no output depends on it (pruning below would
    # drop it silently: ``Relu()(input="a", output="a")`` leaves a model without terminals)
    _topological(graph.nodes)

    # outputs to compute
    outputs = {k: v for k, v in graph.outputs.items() if k not in set(discard_keys)}
    named = {v.name: v for v in graph.values}
    for k in extra_outputs:
        if k in outputs:
            continue
        if k not in named:
            raise CompileError(f"output {k!r} is not a connection of the model")
        outputs[k] = named[k]

    # state: a state input of a primitive left unconnected, paired with its updated output
    state: dict[str, tuple[Value, Value]] = {}
    for node in graph.nodes:
        for in_term, out_term in node.op.state.items():
            vin = node.inputs[node.prim.input_names.index(in_term)]
            vout = node.outputs[node.op.output_names.index(out_term)]
            if vin.producer is None and not vin.known and vin.root.kind == TENSOR and \
                    vin.name not in data_keys and vin.name not in trainable_keys:
                state[vin.name] = (vin, vout)

    # pruning: keep the nodes that outputs and new state depend on
    wanted = [v for v in outputs.values()] + [vout for _, vout in state.values()]
    needed: set[int] = set()
    queue = deque(v.producer for v in wanted if v.producer is not None)
    while queue:
        node = queue.popleft()
        if id(node) in needed:
            continue
        if all(_is_static(o) for o in node.outputs):
            continue  # folded: its outputs are compile-time constants
        needed.add(id(node))
        for v in node.inputs:
            if v.producer is not None and not _is_static(v):
                queue.append(v.producer)
    nodes = [n for n in graph.nodes if id(n) in needed]
    nodes = _topological(nodes)
    nodes = _eliminate_aliases(nodes, outputs, state)
    nodes = _eliminate_common(nodes, outputs, state)

    # roles of the leaves that the kept nodes read
    used: dict[str, Value] = {}
    for node in nodes:
        for v in node.inputs:
            if v.producer is None or id(v.producer) not in needed:
                used.setdefault(v.name, v)
    for v in outputs.values():
        if v.producer is None:
            used.setdefault(v.name, v)
    params: dict[str, Value] = {}
    data: dict[str, Value] = {}
    consts: dict[str, Value] = {}
    unknown: list[str] = []
    for name, v in used.items():
        if _is_static(v):
            v.role = "const"
            continue
        r = v.root
        if v.producer is not None:
            v.role = "const"  # produced by a folded node: a compile-time value
            continue
        if r.value is not TBD:
            if r.kind == SCALAR and not is_concrete(r.value):
                unknown.append(name)
            v.role = "const"
            consts[name] = v
        elif name in state:
            v.role = "state"
        elif name in trainable_keys or (r.differentiable and name not in data_keys
                                        and r.kind == TENSOR):
            v.role = "param"
            params[name] = v
        else:
            v.role = "data"
            data[name] = v
    unused = set(graph.inputs) - set(used) - set(state)
    return Program(nodes, params, data, {k: s for k, s in state.items() if k in used},
                   consts, outputs, inference, unused, unknown)


def _eliminate_aliases(nodes: list[Node], outputs: dict[str, Value],
                       state: dict[str, tuple[Value, Value]]) -> list[Node]:
    """Drop ``buffer`` nodes on tensors: their output is their input under another name.

    The surviving value keeps the more meaningful name (a root terminal such as
    ``final_cost`` rather than ``add_1_output``).
    """
    replace: dict[int, Value] = {}
    kept: list[Node] = []
    for node in nodes:
        node.inputs = [replace.get(id(v), v) for v in node.inputs]
        if node.op.name != "buffer" or node.outputs[0].root.kind != TENSOR:
            kept.append(node)
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst.is_root_terminal and not src.is_root_terminal:
            src.name = dst.name
            src.is_root_terminal = True
        elif not src.is_root_terminal and dst.name.count(".") < src.name.count("."):
            src.name = dst.name  # a user's connection name beats a generated one
        src.consumers = [c for c in src.consumers if c is not node] + dst.consumers
        replace[id(dst)] = src
    _redirect(replace, outputs, state)
    return kept


def _redirect(replace: dict[int, Value], outputs: dict[str, Value],
              state: dict[str, tuple[Value, Value]]) -> None:
    """Point outputs and updated state at the values that replaced theirs."""
    for k, v in list(outputs.items()):
        outputs[k] = replace.get(id(v), v)
    for k, (vin, vout) in list(state.items()):
        state[k] = (vin, replace.get(id(vout), vout))


def _node_key(node: Node) -> tuple[Any, ...] | None:
    """Identity of a node's computation: same op on the same values and constants."""
    if node.op.random or node.op.state:
        return None
    parts: list[Any] = [node.op.name]
    for v in node.inputs:
        if _is_static(v):
            parts.append(("const", repr(concrete(v.root.value))))
        else:
            parts.append(id(v))
    return tuple(parts)


def _eliminate_common(nodes: list[Node], outputs: dict[str, Value],
                      state: dict[str, tuple[Value, Value]]) -> list[Node]:
    """Merge nodes computing the same thing (e.g. ``x.shape`` asked for three times)."""
    seen: dict[tuple[Any, ...], Node] = {}
    replace: dict[int, Value] = {}
    kept: list[Node] = []
    for node in nodes:
        node.inputs = [replace.get(id(v), v) for v in node.inputs]
        key = _node_key(node)
        first = seen.get(key) if key is not None else None
        if first is None:
            if key is not None:
                seen[key] = node
            kept.append(node)
            continue
        for old, new in zip(node.outputs, first.outputs, strict=True):
            replace[id(old)] = new
            new.consumers.extend(old.consumers)
    _redirect(replace, outputs, state)
    return kept


def _topological(nodes: list[Node]) -> list[Node]:
    ids = {id(n) for n in nodes}
    indegree = {id(n): 0 for n in nodes}
    users: dict[int, list[Node]] = {id(n): [] for n in nodes}
    for n in nodes:
        deps = {id(v.producer) for v in n.inputs if v.producer is not None and
                id(v.producer) in ids}
        indegree[id(n)] = len(deps)
        for d in deps:
            users[d].append(n)
    ready = deque(n for n in nodes if indegree[id(n)] == 0)
    order: list[Node] = []
    while ready:
        n = ready.popleft()
        order.append(n)
        for u in users[id(n)]:
            indegree[id(u)] -= 1
            if indegree[id(u)] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        stuck = [n for n in nodes if indegree[id(n)] > 0]
        names = ", ".join(f"{n.op.name} at {n.path}" for n in stuck[:6])
        raise CompileError(f"the model has a cycle through: {names}; a value cannot depend on "
                           "itself")
    return order
