"""Elementwise primitives: arithmetic, comparisons, activations, softmax, cast, where."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from .. import types as T
from ..logical.meta import SCALAR, TBD, TENSOR, Meta
from ..rules import (
    as_tensor,
    broadcast,
    concrete,
    frag,
    is_concrete,
    normalize_axes,
    out_kinds,
    same_shape,
    set_value,
)
from ..shapes import ShapeConflict
from .base import (
    OUT,
    OUT_ANY,
    OpDef,
    Term,
    _bool,
    _float,
    _same,
    _scalar_or_tensor_out,
    derive,
    register,
)


# ----------------------------------------------------------------------------------------------
# Elementwise
# ----------------------------------------------------------------------------------------------
def _binary_rule(kind_fn: Callable[[int, int], int], fold: Callable[..., Any]) -> Callable:
    def rule(left: Meta, right: Meta, out: Meta) -> bool:
        mode = _scalar_or_tensor_out(out, [left, right])
        out_kinds(out, kind_fn(left.kinds, right.kinds))
        if mode != TENSOR:
            if left.value is not TBD and right.value is not TBD:
                lv, rv = left.value, right.value
                if is_concrete(lv) and is_concrete(rv):
                    set_value(out, fold(concrete(lv), concrete(rv)))
                    # two constants of undecided kind: the value is known, not yet the kind
                    return mode == SCALAR
            return False
        return broadcast(out, [left, right])

    return rule


def _arith(a: int, b: int) -> int:
    return T.promote(a, b)


def _true_div(a: int, b: int) -> int:
    return T.FLOAT


def _cmp(a: int, b: int) -> int:
    return T.BOOL


_BINARY: list[tuple[str, str, Callable[..., Any], Callable[[int, int], int], int]] = [
    ("add", "+", operator.add, _arith, T.ANY),
    ("subtract", "-", operator.sub, _arith, T.NUMBER),
    ("multiply", "*", operator.mul, _arith, T.ANY),
    ("divide", "/", operator.truediv, _true_div, T.NUMBER),
    ("floor_divide", "//", operator.floordiv, _arith, T.NUMBER),
    ("power", "**", operator.pow, _arith, T.NUMBER),
    ("minimum", "min", min, _arith, T.NUMBER),
    ("maximum", "max", max, _arith, T.NUMBER),
    ("greater", ">", operator.gt, _cmp, T.NUMBER),
    ("less", "<", operator.lt, _cmp, T.NUMBER),
    ("greater_equal", ">=", operator.ge, _cmp, T.NUMBER),
    ("less_equal", "<=", operator.le, _cmp, T.NUMBER),
    ("equal", "==", operator.eq, _cmp, T.ANY),
    ("not_equal", "!=", operator.ne, _cmp, T.ANY),
    ("logical_and", "&", operator.and_, _cmp, T.BOOL),
    ("logical_or", "|", operator.or_, _cmp, T.BOOL),
    ("logical_xor", "^", operator.xor, _cmp, T.BOOL),
    ("shift_left", "<<", operator.lshift, _arith, T.INT),
    ("shift_right", ">>", operator.rshift, _arith, T.INT),
]
NON_DIFFERENTIABLE = {"floor_divide", "greater", "less", "greater_equal", "less_equal", "equal",
                      "not_equal", "logical_and", "logical_or", "logical_xor", "shift_left",
                      "shift_right"}

for _name, _sym, _fold, _kind_fn, _kinds in _BINARY:
    _expr = f"{_sym}({{0}}, {{1}})" if _sym in ("min", "max") else f"({{0}} {_sym} {{1}})"
    register(OpDef(
        _name, (Term("left", None, _kinds), Term("right", None, _kinds)),
        (Term("output", None, T.ANY),),
        _binary_rule(_kind_fn, _fold), fold=_fold, expr=_expr,
        differentiable=_name not in NON_DIFFERENTIABLE))




def _unary_rule(kinds: Callable[[int], int]) -> Callable:
    def rule(inp: Meta, out: Meta) -> bool:
        out_kinds(out, kinds(inp.kinds))
        return same_shape(inp, out)

    return rule


_UNARY: list[tuple[str, Callable[[int], int], int, bool]] = [
    ("negate", _same, T.NUMBER, True),
    ("absolute", _same, T.NUMBER, True),
    ("exp", _float, T.NUMBER, True),
    ("log", _float, T.NUMBER, True),
    ("sqrt", _float, T.NUMBER, True),
    ("square", _same, T.NUMBER, True),
    ("sign", _same, T.NUMBER, False),
    ("sin", _float, T.NUMBER, True),
    ("cos", _float, T.NUMBER, True),
    ("floor", _same, T.NUMBER, False),
    ("reciprocal", _float, T.NUMBER, True),
    ("relu", _same, T.NUMBER, True),
    ("sigmoid", _float, T.NUMBER, True),
    ("tanh", _float, T.NUMBER, True),
    ("silu", _float, T.NUMBER, True),
    ("softplus", _float, T.NUMBER, True),
    ("stop_gradient", _same, T.ANY, False),
    ("logical_not", _bool, T.BOOL, False),
    ("isnan", _bool, T.NUMBER, False),
]
for _name, _kind_fn, _kinds, _diff in _UNARY:
    register(OpDef(_name, (Term("input", TENSOR, _kinds),), OUT_ANY, _unary_rule(_kind_fn),
                   differentiable=_diff))


def _unary_with_scalars(name: str, scalars: tuple[Term, ...], kinds: Callable[[int], int] = _same,
                        diff: bool = True) -> None:
    def rule(inp: Meta, *rest: Meta) -> bool:
        out = rest[-1]
        out_kinds(out, kinds(inp.kinds))
        return same_shape(inp, out)

    register(OpDef(name, (Term("input"), *scalars), OUT, rule, differentiable=diff))


_unary_with_scalars("gelu", (Term("approximate", SCALAR, T.BOOL, default=False),), _float)
_unary_with_scalars("leaky_relu", (Term("slope", SCALAR, T.NUMBER, default=0.01),))
_unary_with_scalars("clamp", (Term("min", SCALAR, T.NUMBER, default=None),
                              Term("max", SCALAR, T.NUMBER, default=None)))
_unary_with_scalars("nan_to_num", (Term("nan", SCALAR, T.NUMBER, default=0.0),
                                   Term("posinf", SCALAR, T.NUMBER, default=None),
                                   Term("neginf", SCALAR, T.NUMBER, default=None)))


def _softmax_rule(inp: Meta, axis: Meta, out: Meta) -> bool:
    """Same shape; ``axis`` must be an axis of the input (checked once the rank is known, or
    as soon as the known leading / trailing dims contain it)."""
    out_kinds(out, T.FLOAT)
    same_shape(inp, out)
    if axis.value is TBD:
        return False
    a = axis.value
    if isinstance(a, bool) or not isinstance(a, int):
        raise ShapeConflict(f"axis must be an int, got {a!r}")
    f = frag(inp)
    if f.var is None:
        if f.prefix:
            normalize_axes(a, len(f.prefix))
        elif a not in (0, -1):  # as in PyTorch, a 0-d input takes axis 0 or -1
            raise ShapeConflict(f"axis {a} is out of range for rank 0")
        return True
    return a < len(f.prefix) if a >= 0 else -a <= len(f.suffix)


register(OpDef("softmax", (Term("input"), Term("axis", SCALAR, T.INT, default=-1)), OUT,
               _softmax_rule))
register(OpDef("log_softmax", (Term("input"), Term("axis", SCALAR, T.INT, default=-1)), OUT,
               _softmax_rule))


def _cast_rule(inp: Meta, dtype: Meta, out: Meta) -> bool:
    if dtype.value is not TBD:
        out_kinds(out, T.as_dtype(dtype.value).kind)
    return same_shape(inp, out) and dtype.value is not TBD


register(OpDef("cast", (Term("input", kinds=T.ANY), Term("dtype", SCALAR, T.ANY)), OUT_ANY,
               _cast_rule))


def _where_rule(cond: Meta, a: Meta, b: Meta, out: Meta) -> bool:
    as_tensor(out)
    out_kinds(out, T.promote(a.kinds, b.kinds))
    return broadcast(out, [cond, a, b])  # waits while input1 / input2 may be any tensor


register(OpDef("where", (Term("condition", TENSOR, T.BOOL, differentiable=False),
                         Term("input1", None, T.ANY), Term("input2", None, T.ANY)),
               (Term("output", TENSOR, T.ANY),), _where_rule))


# ---- derived: decompositions into core kernels ----------------------------------------------
def _softplus(k: Any, x: Any) -> Any:
    """PyTorch's softplus (beta 1, threshold 20), the definition every backend follows:
    ``max(x, 0) + log(1 + exp(-|x|))`` (no overflow; ``maximum``'s even split at 0 gives the
    gradient 1/2 there), the identity above 20. Backends keep their own kernels, which use
    ``log1p`` (exact where ``1 + exp(-|x|)`` rounds to 1)."""
    smooth = k.add(k.maximum(x, 0.0), k.log(k.add(1.0, k.exp(k.negate(k.absolute(x))))))
    return k.where(k.greater(x, 20.0), x, smooth)


def _logical_or(k: Any, left: Any, right: Any) -> Any:
    if isinstance(left, bool):  # a Python bool goes second (``where`` needs an array condition)
        left, right = right, left
    return (left or right) if isinstance(left, bool) else k.where(left, True, right)


def _log_softmax(k: Any, x: Any, axis: int = -1) -> Any:
    shifted = k.subtract(x, k.stop_gradient(k.max(x, axis, True)))
    return k.subtract(shifted, k.log(k.sum(k.exp(shifted), axis, True)))


def _softmax(k: Any, x: Any, axis: int = -1) -> Any:
    e = k.exp(k.subtract(x, k.stop_gradient(k.max(x, axis, True))))
    return k.divide(e, k.sum(e, axis, True))


def _shift(k: Any, left: Any, right: Any, scale: Any, negative: Any) -> Any:
    """``left`` shifted by ``right`` as ``scale(left, 2 ** right)``; a negative count gives
    ``negative`` (0, or for a right shift -1 where ``left < 0``), as NumPy's, PyTorch's and
    XLA's shift operators do (``2 ** right`` itself is an error for negative integers)."""
    moved = scale(left, k.power(2, k.maximum(right, 0)))
    return k.where(k.greater(0, right), negative, moved)


derive({
    "less": lambda k, left, right: k.greater(right, left),
    "less_equal": lambda k, left, right: k.greater_equal(right, left),
    "not_equal": lambda k, left, right: k.logical_not(k.equal(left, right)),
    "logical_or": _logical_or,
    "logical_xor": lambda k, left, right: k.not_equal(left, right),
    "shift_left": lambda k, left, right: _shift(k, left, right, k.multiply, 0),
    "shift_right": lambda k, left, right: _shift(k, left, right, k.floor_divide,
                                                 k.where(k.greater(0, left), -1, 0)),
    "minimum": lambda k, left, right: k.negate(k.maximum(k.negate(left), k.negate(right))),
    "square": lambda k, x: k.multiply(x, x),
    "reciprocal": lambda k, x: k.divide(1.0, x),
    "silu": lambda k, x: k.multiply(x, k.sigmoid(x)),
    "softplus": _softplus,
    "leaky_relu": lambda k, x, slope=0.01: k.where(k.greater(x, 0), x, k.multiply(x, slope)),
    "isnan": lambda k, x: k.not_equal(x, x),
    # the backends keep their own softmax / log_softmax kernels: one fused call, measurably
    # faster than five kernels (NumPy: one pass and a fused VJP; the others: framework kernels)
    "softmax": _softmax,
    "log_softmax": _log_softmax,
})


def _clamp(k: Any, x: Any, min: Any = None, max: Any = None) -> Any:
    """``where`` keeps PyTorch's gradient at the bounds (it passes at ``x == min``)."""
    if min is not None:
        x = k.where(k.greater(min, x), min, x)
    if max is not None:
        x = k.where(k.greater(x, max), max, x)
    return x


derive({"clamp": _clamp})


def _logical_and(k: Any, left: Any, right: Any) -> Any:
    if isinstance(left, bool):  # a Python bool goes second (``where`` needs an array condition)
        left, right = right, left
    return (left and right) if isinstance(left, bool) else k.where(left, right, False)


# Derived, but every backend keeps its own kernel for these: one framework call each, faster
# than the composed kernels on the hot paths (and on NumPy without a taped VJP).
derive({
    "subtract": lambda k, left, right: k.add(left, k.negate(right)),
    "greater_equal": lambda k, left, right: k.logical_or(k.greater(left, right),
                                                         k.equal(left, right)),
    "logical_and": _logical_and,
    "relu": lambda k, x: k.where(k.greater(x, 0), x, 0),  # gradient 0 at 0, as PyTorch
    "absolute": lambda k, x: k.multiply(x, k.sign(x)),  # gradient sign(x): 0 at 0
    "cos": lambda k, x: k.sin(k.add(x, math.pi / 2)),
})
