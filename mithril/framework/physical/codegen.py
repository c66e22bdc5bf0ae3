"""Code generation: one plain Python function per pass, one line per primitive.

Variable names come from the user's terminal names, reduced to safe identifiers; every key
that reaches the code as a dict key is written with ``repr`` of a ``str``. No user text is
ever pasted into code any other way, so a name such as ``"x; import os"`` is just a name.
"""

from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ...errors import CompileError
from ..logical.meta import SCALAR, TENSOR
from ..logical.sequences import carries_tensors
from ..types import Dtype
from .graph import Node, Value
from .passes import Program

BUILTINS_USED = {"tuple", "slice", "float", "min", "max", "len", "range", "int", "bool", "print",
                 "__builtins__", "__import__", "exec", "eval", "getattr", "setattr", "open"}
FUNCTION_ARGS = ("params", "data", "state", "rng", "cache", "output_gradients", "constants",
                 "rngs", "zeros_like", "seq_grad_item", "seq_index_grad", "add_seq_grads")

#: the backward pass of tuples (or lists) of tensors (``to_tuple``, indexing such a tuple with a
#: constant), written into the generated backward when it needs them: a tuple's gradient is a
#: tuple of its elements' gradients (``None`` for an element without one)
SEQ_GRAD_HELPERS = '''def seq_grad_item(grad, i, x):
    d = None if grad is None else grad[i]
    if d is None and not isinstance(x, tuple | list):
        return zeros_like(x)
    return d


def seq_index_grad(grad, index, n):
    out = [None] * n
    if isinstance(index, slice):
        for position, d in zip(range(n)[index], grad, strict=True):
            out[position] = d
    else:
        out[index] = grad
    return tuple(out)


def add_seq_grads(x, y):
    if x is None:
        return y
    if y is None:
        return x
    if isinstance(x, tuple | list):
        return tuple(add_seq_grads(a, b) for a, b in zip(x, y, strict=True))
    return x + y
'''


class Namer:
    """Turns arbitrary text into unique, safe Python identifiers."""

    def __init__(self, reserved: set[str], readable: bool = True) -> None:
        self.used = set(reserved) | BUILTINS_USED | set(FUNCTION_ARGS)
        self.readable = readable
        self.count = 0

    def __call__(self, text: str) -> str:
        if self.readable:
            base = re.sub(r"[^0-9A-Za-z_]", "_", text).strip("_") or "value"
            if base[0].isdigit():
                base = f"v_{base}"
            if keyword.iskeyword(base) or keyword.issoftkeyword(base):
                base += "_"
        else:
            base = "v"
        name, i = base, 1
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name


def literal(value: Any) -> str:
    """Python source for a compile-time constant (only plain, safe value types)."""
    if value is None or isinstance(value, bool | int):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if value is Ellipsis:
        return "..."
    if isinstance(value, Dtype):
        return f"dtype_{value.name}"
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, slice):
        return f"slice({literal(value.start)}, {literal(value.stop)}, {literal(value.step)})"
    raise CompileError(f"cannot write {type(value).__name__} value {value!r} into generated code")


def _basic_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, slice) or
               (isinstance(i, int) and not isinstance(i, bool)) for i in items)


def index_text(index: Any) -> str:
    """``(slice(None), 0)`` -> ``":, 0"`` (subscript syntax for basic indices)."""
    items = index if isinstance(index, tuple) else (index,)
    parts = []
    for i in items:
        if isinstance(i, slice):
            a = "" if i.start is None else literal(i.start)
            b = "" if i.stop is None else literal(i.stop)
            parts.append(f"{a}:{b}" + ("" if i.step is None else f":{literal(i.step)}"))
        elif i is None:
            parts.append("None")
        elif i is Ellipsis:
            parts.append("...")
        else:
            parts.append(literal(i))
    if not isinstance(index, tuple):
        return parts[0]
    return ", ".join(parts) + ("," if len(parts) == 1 else "")


@dataclass
class Generated:
    source: str
    names: dict[int, str]  # id(Value) -> variable name
    uses_rng: bool
    cache_names: list[str] = field(default_factory=list)


class CodeWriter:
    """Writes the functions of one compiled model."""

    def __init__(self, program: Program, kernels: set[str], exprs: dict[str, str],
                 readable: bool = True, fwd_variants: set[str] | None = None) -> None:
        self.p = program
        self.kernels = kernels
        self.exprs = exprs
        self.fwd_variants = fwd_variants or set()
        reserved = set(kernels) | {f"dtype_{n}" for n in ("float16", "bfloat16", "float32",
                                                           "float64", "int8", "int16", "int32",
                                                           "int64", "uint8", "bool")}
        reserved |= {f"{k}_vjp" for k in kernels}
        self.namer = Namer(reserved, readable)
        self.names: dict[int, str] = {}
        self.cache_vars: dict[int, str] = {}  # id(node) -> its training-forward cache
        # dropout is off in inference; random creators (randn, ...) still draw
        self.random_nodes = [n for n in program.nodes
                             if n.op.random and (not program.inference or not n.op.modal)]
        # snapshot what the metadata says now: code may be written after compile's trail is
        # rolled back (the NumPy backward is generated per set of output-gradient keys)
        self.lits: dict[int, tuple[bool, Any]] = {}
        self.kinds: dict[int, str | None] = {}
        self.seq_lengths: dict[int, int] = {}  # tuples (lists) holding tensors: their lengths
        for v in _all_values(program):
            self.lits[id(v)] = program.literal(v)
            self.kinds[id(v)] = v.root.kind
            if v.root.kind != TENSOR and carries_tensors(v.root):
                self.seq_lengths[id(v)] = len(v.root.items or ())

    def carries_grad(self, v: Value) -> bool:
        """Can a gradient flow through ``v``: a tensor, or a tuple (list) holding tensors?"""
        return self.kinds[id(v)] == TENSOR or id(v) in self.seq_lengths

    def var(self, v: Value) -> str:
        n = self.names.get(id(v))
        if n is None:
            n = self.namer(v.name)
            self.names[id(v)] = n
        return n

    def arg(self, v: Value) -> str:
        ok, value = self.lits[id(v)]
        if ok:
            return literal(value)
        return self.var(v)

    # ---- forward ----
    def kernel_name(self, node: Node) -> str:
        name = node.op.name
        if node.op.modal and self.p.inference:
            name += "_inference"
        if name not in self.kernels:
            raise CompileError(f"the backend has no kernel for primitive {name!r}")
        return name

    def node_line(self, node: Node, with_cache: bool, rng_index: int | None
                  ) -> tuple[str, str | None]:
        """The statement for one node, and the cache variable it defines (if any)."""
        args = [self.arg(v) for v in node.inputs]
        outs = [self.var(o) if self._output_needed(o) else "_" for o in node.outputs]
        scalar_mode = all(self.kinds[id(o)] == SCALAR for o in node.outputs)
        op = node.op
        if op.name == "to_tuple":
            expr = "(" + ", ".join(args) + ("," if len(args) == 1 else "") + ")"
        elif op.expr is not None and (scalar_mode or op.name in ("shape",)):
            expr = op.expr.format(*args)
        elif op.name == "buffer":
            expr = args[0]
        elif op.name == "indexer" and self.lits[id(node.inputs[1])][0] and \
                _basic_index(self.lits[id(node.inputs[1])][1]):
            expr = f"{args[0]}[{index_text(self.lits[id(node.inputs[1])][1])}]"
        else:
            kname = self.kernel_name(node)
            template = self.exprs.get(kname)
            if rng_index is not None:
                args.append(f"rngs[{rng_index}]")
                template = None
            cache_var = None
            if with_cache and kname in self.fwd_variants:
                cache_var = self.cache_vars.get(id(node))
                if cache_var is None:
                    cache_var = self.namer(f"{node.path}_cache")
                    self.cache_vars[id(node)] = cache_var
                call = f"{kname}_fwd({', '.join(args)})"
                target = ", ".join(outs) if len(outs) > 1 else outs[0]
                if len(outs) > 1:
                    target = f"({target})"
                return f"{target}, {cache_var} = {call}", cache_var
            expr = template.format(*args) if template else f"{kname}({', '.join(args)})"
        target = ", ".join(outs)
        if all(o == "_" for o in outs):
            target = "_"
        return f"{target} = {expr}", None

    def _output_needed(self, v: Value) -> bool:
        return True

    def forward(self, fn_name: str, with_cache: bool, cache_names: list[str] | None = None
                ) -> tuple[str, list[str]]:
        p = self.p
        lines = [f"def {fn_name}(params, data, state, rng):"]
        for key, v in p.params.items():
            lines.append(f"    {self.var(v)} = params[{key!r}]")
        for key, v in p.data.items():
            lines.append(f"    {self.var(v)} = data[{key!r}]")
        for key, (vin, _) in p.state.items():
            lines.append(f"    {self.var(vin)} = state[{key!r}]")
        for key, v in p.consts.items():
            lines.append(f"    {self.var(v)} = constants[{key!r}]")
        if self.random_nodes:
            lines.append(f"    rngs = split_rng(rng, {len(self.random_nodes)})")
        rng_ids = {id(n): i for i, n in enumerate(self.random_nodes)}
        caches: list[str] = []
        for node in p.nodes:
            text, cache_var = self.node_line(node, with_cache, rng_ids.get(id(node)))
            if cache_var is not None:
                caches.append(cache_var)
            lines.append(f"    {text}")
        outs = ", ".join(f"{k!r}: {self.arg(v)}" for k, v in p.outputs.items())
        new_state = ", ".join(f"{k!r}: {self.arg(vout)}" for k, (_, vout) in p.state.items())
        if with_cache:
            names = cache_names or []
            tup = "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"
            lines.append(f"    return {{{outs}}}, {{{new_state}}}, {tup}")
        else:
            lines.append(f"    return {{{outs}}}, {{{new_state}}}")
        return "\n".join(lines) + "\n", caches


def _all_values(program: Program) -> list[Value]:
    seen: dict[int, Value] = {}
    for node in program.nodes:
        for v in (*node.inputs, *node.outputs):
            seen[id(v)] = v
    for v in program.outputs.values():
        seen[id(v)] = v
    for vin, vout in program.state.values():
        seen[id(vin)] = vin
        seen[id(vout)] = vout
    return list(seen.values())


def requires_grad(writer: CodeWriter) -> set[int]:
    """ids of the values that depend differentiably on a parameter."""
    program = writer.p
    req: set[int] = {id(v) for v in program.params.values()}
    for node in program.nodes:
        if not node.op.differentiable:
            continue
        terms = node.prim.in_terms
        if any(id(v) in req and t.differentiable and writer.carries_grad(v)
               for v, t in zip(node.inputs, terms, strict=True)):
            for o, t in zip(node.outputs, node.op.outputs, strict=True):
                if t.differentiable and writer.carries_grad(o):
                    req.add(id(o))
    return req


def write_backward(writer: CodeWriter, grad_outputs: list[str]) -> tuple[str, list[str]]:
    """The backward function for the given outputs; returns (source, names it needs from
    the forward pass, in order)."""
    p = writer.p
    req = requires_grad(writer)
    gname: dict[int, str] = {}
    namer = writer.namer
    body: list[tuple[str, set[str]]] = []  # (statement, names read)
    for key in grad_outputs:
        v = p.outputs[key]
        if id(v) not in req:
            continue
        if id(v) in gname:
            g = gname[id(v)]
            body.append((f"{g} = {g} + output_gradients[{key!r}]", {g}))
        else:
            g = namer(f"grad_{v.name}")
            gname[id(v)] = g
            body.append((f"{g} = output_gradients[{key!r}]", set()))
    needed: list[str] = []
    seen_needed: set[str] = set()
    uses_seq = False

    def need(name: str) -> None:
        if name not in seen_needed:
            seen_needed.add(name)
            needed.append(name)

    for node in reversed(p.nodes):
        if not any(id(o) in gname for o in node.outputs):
            continue
        terms = node.prim.in_terms
        wants = [id(v) in req and t.differentiable for v, t in zip(node.inputs, terms,
                                                                   strict=True)]
        if not any(wants):
            continue
        out_grads = [gname.get(id(o)) for o in node.outputs]
        if len(node.outputs) == 1:
            grad_arg = out_grads[0]
            out_arg = writer.var(node.outputs[0])
            need(out_arg)
        else:
            grad_arg = "(" + ", ".join(g or "None" for g in out_grads) + ")"
            outs = [writer.var(o) for o in node.outputs]
            for o in outs:
                need(o)
            out_arg = "(" + ", ".join(outs) + ")"
        args = []
        for v in node.inputs:
            a = writer.arg(v)
            if not writer.lits[id(v)][0]:
                need(a)
            args.append(a)
        cache = writer.cache_vars.get(id(node))
        if cache is not None:
            need(cache)
        kname = node.op.name
        res = namer(f"{node.path}_grads")
        call_args = ", ".join([grad_arg, out_arg, *args]) + (f", cache={cache}" if cache else "")
        reads = {x for x in [*out_grads, *args, cache,
                             *(writer.var(o) for o in node.outputs)] if x}
        seq_call = _seq_vjp(writer, node, grad_arg, args, wants)
        if seq_call is not None:
            uses_seq = True
            body.append((f"{res} = {seq_call}", reads))
        else:
            body.append((f"{res} = {kname}_vjp({call_args})", reads))
        for i, (v, want) in enumerate(zip(node.inputs, wants, strict=True)):
            if not want:
                continue
            if id(v) in gname and id(v) in writer.seq_lengths:
                g = gname[id(v)]
                uses_seq = True
                body.append((f"{g} = add_seq_grads({g}, {res}[{i}])", {g, res}))
            elif id(v) in gname:
                g = gname[id(v)]
                body.append((f"{g} = {g} + {res}[{i}]", {g, res}))
            else:
                g = namer(f"grad_{v.name}")
                gname[id(v)] = g
                body.append((f"{g} = {res}[{i}]", {res}))
        body.append((f"del {res}", set()))
    returns = []
    for key, v in p.params.items():
        g = gname.get(id(v))
        if g is None:
            returns.append(f"{key!r}: zeros_like(params[{key!r}])")
        else:
            returns.append(f"{key!r}: {g}")
    # free forward values and gradients after their last use
    last: dict[str, int] = {}
    for i, (_, reads) in enumerate(body):
        for r in reads:
            last[r] = i
    returned = {gname[id(v)] for v in p.params.values() if id(v) in gname}
    lines = ["def backward(cache, output_gradients, params):"]
    if needed:
        tup = ", ".join(needed) + ("," if len(needed) == 1 else "")
        lines.append(f"    ({tup}) = cache")
    lines.append("    del cache")
    defined_from_cache = set(needed)
    for i, (stmt, _) in enumerate(body):
        lines.append(f"    {stmt}")
        dead = sorted(n for n, j in last.items() if j == i and n in defined_from_cache |
                      set(gname.values()) and n not in returned and not stmt.startswith("del"))
        if dead:
            lines.append(f"    del {', '.join(dead)}")
    lines.append("    return {" + ", ".join(returns) + "}")
    helpers = SEQ_GRAD_HELPERS + "\n\n" if uses_seq else ""
    return helpers + "\n".join(lines) + "\n", needed


def _seq_vjp(writer: CodeWriter, node: Node, grad: str, args: list[str], wants: list[bool]
             ) -> str | None:
    """The backward expression of a node building or indexing a tuple (list) of tensors, or
    None for any other node: ``to_tuple`` hands each element its part of the tuple's gradient
    (zeros for a tensor without one), a constant index puts the gradient at its place."""
    name = node.op.name
    if name in ("to_tuple", "to_list") and id(node.outputs[0]) in writer.seq_lengths:
        parts = [f"seq_grad_item({grad}, {i}, {a})" if want else "None"
                 for i, (a, want) in enumerate(zip(args, wants, strict=True))]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    if name == "indexer" and id(node.inputs[0]) in writer.seq_lengths:
        n = writer.seq_lengths[id(node.inputs[0])]
        return f"(seq_index_grad({grad}, {args[1]}, {n}), None)"
    return None
