"""ONNX mappings of the elementwise primitives: arithmetic, comparisons, activations.

Binary operators follow NumPy's type rules with weak Python numbers: ``x * 0.5`` keeps the
float type of ``x``; an int tensor meeting a float becomes the model's float type.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..framework.physical.graph import Node
from .builder import NUMPY_OF, ONNX_TYPES
from .mapping import maps
from .walk import BOOL, FLOATS, INT64, INTS, Emitter, Lit, TupleRef, Unsupported


def promote(ex: Emitter, refs: list[Any]) -> int:
    """The common element type of tensor names and weak Python numbers."""
    tensor_types = [ex.type_of(r.name if isinstance(r, TupleRef) else r) for r in refs
                    if isinstance(r, str | TupleRef)]
    lits = [r.value for r in refs if isinstance(r, Lit)]
    if any(t in FLOATS for t in tensor_types):
        floats = [t for t in tensor_types if t in FLOATS]
        return ex.b.float_type if len(set(floats)) > 1 else floats[0]
    if any(isinstance(v, float) for v in lits):
        return ex.b.float_type
    if any(t in INTS for t in tensor_types):
        return INT64 if len({t for t in tensor_types if t in INTS}) > 1 else \
            next(t for t in tensor_types if t in INTS)
    if any(isinstance(v, int) and not isinstance(v, bool) for v in lits):
        return INT64
    return BOOL if tensor_types or lits else INT64


def operands(ex: Emitter, node: Node, as_type: int | None = None) -> tuple[list[str], int]:
    """The node's (tensor-or-number) inputs as ONNX names of one common type."""
    refs = [ex.ref(v) for v in node.inputs]
    for r in refs:
        if isinstance(r, Lit) and r.value is None:
            raise Unsupported("an operand is None")
    t = promote(ex, refs) if as_type is None else as_type
    names = [ex.b.cast(ex.tensor(v, t), t) for v in node.inputs]
    return names, t


def _binary(op_type: str, result: str = "same", needs: str = "") -> Any:
    def fn(ex: Emitter, node: Node) -> str:
        names, t = operands(ex, node)
        if needs == "float" and t not in FLOATS:
            names, t = [ex.b.cast(n, ex.b.float_type) for n in names], ex.b.float_type
        if needs == "bool" and t != BOOL:
            names, t = [ex.b.cast(n, BOOL) for n in names], BOOL
        out_type = BOOL if result == "bool" else t
        return ex.b.node(op_type, names, ex.hint(), out_type=out_type)
    return fn


for _name, _op in {"add": "Add", "subtract": "Sub", "multiply": "Mul", "minimum": "Min",
                   "maximum": "Max"}.items():
    maps(_name)(_binary(_op))
maps("divide")(_binary("Div", needs="float"))
maps("power")(_binary("Pow"))
for _name, _op in {"greater": "Greater", "less": "Less", "greater_equal": "GreaterOrEqual",
                   "less_equal": "LessOrEqual", "equal": "Equal"}.items():
    maps(_name)(_binary(_op, result="bool"))
for _name, _op in {"logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}.items():
    maps(_name)(_binary(_op, result="bool", needs="bool"))


@maps("not_equal")
def _not_equal(ex: Emitter, node: Node) -> str:
    names, _ = operands(ex, node)
    eq = ex.b.node("Equal", names, ex.hint("_eq"), out_type=BOOL)
    return ex.b.node("Not", [eq], ex.hint())


def floor_div(ex: Emitter, a: str, b: str, t: int, hint: str) -> str:
    """``a // b`` with Python's rounding (towards minus infinity) for ints and floats."""
    if t in FLOATS:
        return ex.b.node("Floor", [ex.b.node("Div", [a, b], hint + "_div")], hint)
    rem = ex.b.node("Mod", [a, b], hint + "_mod", fmod=0)  # sign of the divisor, as Python
    return ex.b.node("Div", [ex.b.node("Sub", [a, rem], hint + "_sub"), b], hint)


@maps("floor_divide")
def _floor_divide(ex: Emitter, node: Node) -> str:
    (a, b), t = operands(ex, node)
    return floor_div(ex, a, b, t, ex.hint())


@maps("shift_left", "shift_right")
def _shift(ex: Emitter, node: Node) -> str:
    (a, b), t = operands(ex, node)
    if t not in INTS:
        raise Unsupported("shifts need integer operands")
    two = ex.b.node("Pow", [ex.const(2, t), b], ex.hint("_pow2"))
    if node.op.name == "shift_left":
        return ex.b.node("Mul", [a, two], ex.hint())
    return floor_div(ex, a, two, t, ex.hint())


# ---- unary ----
def _unary(op_type: str, out: str = "same", float_in: bool = False) -> Any:
    def fn(ex: Emitter, node: Node) -> str:
        x = ex.tensor(node.inputs[0])
        if float_in and ex.type_of(x) not in FLOATS:
            x = ex.b.cast(x, ex.b.float_type)
        out_type = BOOL if out == "bool" else None
        return ex.b.node(op_type, [x], ex.hint(), out_type=out_type)
    return fn


for _name, _op in {"negate": "Neg", "absolute": "Abs", "sign": "Sign", "floor": "Floor",
                   "relu": "Relu", "stop_gradient": "Identity"}.items():
    maps(_name)(_unary(_op))
for _name, _op in {"exp": "Exp", "log": "Log", "sqrt": "Sqrt", "sin": "Sin", "cos": "Cos",
                   "reciprocal": "Reciprocal", "sigmoid": "Sigmoid", "tanh": "Tanh"}.items():
    maps(_name)(_unary(_op, float_in=True))
maps("logical_not")(_unary("Not", out="bool"))
maps("isnan")(_unary("IsNaN", out="bool", float_in=True))


@maps("square")
def _square(ex: Emitter, node: Node) -> str:
    x = ex.tensor(node.inputs[0])
    return ex.b.node("Mul", [x, x], ex.hint())


@maps("silu")
def _silu(ex: Emitter, node: Node) -> str:
    x = ex.tensor(node.inputs[0])
    if ex.type_of(x) not in FLOATS:
        x = ex.b.cast(x, ex.b.float_type)
    return ex.b.node("Mul", [x, ex.b.node("Sigmoid", [x], ex.hint("_sigmoid"))], ex.hint())


@maps("softplus")
def _softplus(ex: Emitter, node: Node) -> str:
    """ONNX ``Softplus`` (``log(1 + e^x)``, computed without overflow as our kernels)."""
    x = ex.tensor(node.inputs[0])
    if ex.type_of(x) not in FLOATS:
        x = ex.b.cast(x, ex.b.float_type)
    return ex.b.node("Softplus", [x], ex.hint())


@maps("gelu")
def _gelu(ex: Emitter, node: Node) -> str:
    """ONNX ``Gelu`` from opset 20; before it, the erf (or tanh) formula."""
    x = ex.tensor(node.inputs[0])
    if ex.type_of(x) not in FLOATS:
        x = ex.b.cast(x, ex.b.float_type)
    t = ex.type_of(x)
    approximate = bool(ex.value("approximate"))
    if ex.b.opset >= 20:
        return ex.b.node("Gelu", [x], ex.hint(), approximate="tanh" if approximate else "none")
    b, c = ex.b, (lambda v: ex.const(v, t))
    if approximate:
        cube = b.node("Mul", [b.node("Mul", [x, x], ex.hint("_sq")), x], ex.hint("_cube"))
        inner = b.node("Add", [x, b.node("Mul", [cube, c(0.044715)], ex.hint("_c"))],
                       ex.hint("_inner"))
        phi = b.node("Tanh", [b.node("Mul", [inner, c(math.sqrt(2.0 / math.pi))],
                                     ex.hint("_k"))], ex.hint("_tanh"))
    else:
        phi = b.node("Erf", [b.node("Mul", [x, c(math.sqrt(0.5))], ex.hint("_s"))],
                     ex.hint("_erf"))
    half_x = b.node("Mul", [x, c(0.5)], ex.hint("_half"))
    return b.node("Mul", [half_x, b.node("Add", [phi, c(1.0)], ex.hint("_1p"))], ex.hint())


@maps("leaky_relu")
def _leaky_relu(ex: Emitter, node: Node) -> str:
    return ex.b.node("LeakyRelu", [ex.tensor(node.inputs[0])], ex.hint(),
                     alpha=float(ex.value("slope")))


@maps("clamp")
def _clamp(ex: Emitter, node: Node) -> str:
    """ONNX ``Clip``: ``min(max(x, lo), hi)`` (``hi`` wins when ``lo > hi``, as our kernels);
    an absent bound is an empty input."""
    x = ex.tensor(node.inputs[0])
    bounds = [ex.arg("min"), ex.arg("max")]
    present = [v for v in bounds if not (ex.is_lit(v) and ex.lit(v) is None)]
    t = promote(ex, [x, *(ex.ref(v) for v in present)])
    inputs = [ex.b.cast(x, t)]
    for v in bounds:
        if ex.is_lit(v) and ex.lit(v) is None:
            inputs.append("")
        else:
            bound = ex.b.cast(ex.tensor(v, t), t)
            inputs.append(ex.b.node("Reshape", [bound, ex.b.ints([])], ex.hint("_bound"))
                          if not ex.is_lit(v) else bound)
    while inputs[-1] == "":
        inputs.pop()
    return ex.b.node("Clip", inputs, ex.hint())


@maps("nan_to_num")
def _nan_to_num(ex: Emitter, node: Node) -> str:
    x = ex.tensor(node.inputs[0])
    t = ex.type_of(x)
    if t not in FLOATS:
        return ex.b.node("Identity", [x], ex.hint())
    info = np.finfo(NUMPY_OF[t])
    nan = ex.value("nan")
    posinf, neginf = ex.value("posinf"), ex.value("neginf")
    posinf = float(info.max) if posinf is None else posinf
    neginf = float(info.min) if neginf is None else neginf
    b = ex.b
    out = b.node("Where", [b.node("IsNaN", [x], ex.hint("_isnan"), out_type=BOOL),
                           ex.const(nan, t), x], ex.hint("_nan"))
    out = b.node("Where", [b.node("IsInf", [x], ex.hint("_isposinf"), out_type=BOOL,
                                  detect_negative=0), ex.const(posinf, t), out],
                 ex.hint("_posinf"))
    return b.node("Where", [b.node("IsInf", [x], ex.hint("_isneginf"), out_type=BOOL,
                                   detect_positive=0), ex.const(neginf, t), out], ex.hint())


@maps("softmax", "log_softmax")
def _softmax(ex: Emitter, node: Node) -> str:
    x = ex.tensor(node.inputs[0])
    if ex.type_of(x) not in FLOATS:
        x = ex.b.cast(x, ex.b.float_type)
    op = "Softmax" if node.op.name == "softmax" else "LogSoftmax"
    return ex.b.node(op, [x], ex.hint(), axis=int(ex.value("axis")))


@maps("cast")
def _cast(ex: Emitter, node: Node) -> str:
    dtype = ex.value("dtype")
    name = getattr(dtype, "name", dtype)
    if name not in ONNX_TYPES:
        raise Unsupported(f"dtype {dtype!r}")
    t = ONNX_TYPES[name]
    x = ex.tensor(node.inputs[0], t)
    return ex.b.node("Cast", [x], ex.hint(), out_type=t, to=t)


@maps("where")
def _where(ex: Emitter, node: Node) -> str:
    cond = ex.b.cast(ex.tensor(node.inputs[0], BOOL), BOOL)
    refs = [ex.ref(v) for v in node.inputs[1:]]
    t = promote(ex, refs)
    a, b = (ex.b.cast(ex.tensor(v, t), t) for v in node.inputs[1:])
    return ex.b.node("Where", [cond, a, b], ex.hint(), out_type=t)


@maps("buffer")
def _buffer(ex: Emitter, node: Node) -> Any:
    r = ex.ref(node.inputs[0])
    return r if not isinstance(r, str) else ex.b.node("Identity", [r], ex.hint())
