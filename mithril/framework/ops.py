"""THE op catalogue: one entry per primitive.

An entry names the primitive, its input and output terminals (tensor, scalar, or either), its
shape-and-type rule, and — for ops that are plain Python on scalars — the expression used both
to fold constants at compile time and in generated code. Every backend supplies one kernel per
tensor op under the entry's name (and the NumPy backend one VJP); ``tests/test_catalogue.py``
walks this table and fails for anything missing. Adding a primitive is adding one entry here.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import types as T
from .logical.meta import SCALAR, TBD, TENSOR, Meta
from .rules import (
    as_scalar,
    as_tensor,
    broadcast,
    concat_frags,
    concrete,
    dims_of,
    dv,
    ensure_rank,
    frag,
    is_concrete,
    normalize_axes,
    out_kinds,
    product,
    same_shape,
    set_shape,
    set_value,
    split_last,
)
from .shapes import Dim, Frag, ShapeConflict, Var, set_dim, unify_dims, unify_frags


@dataclass(frozen=True)
class Term:
    """One terminal of a primitive.

    ``kind`` is ``"tensor"``, ``"scalar"`` or ``None`` (either: a tensor, or a Python number
    that broadcasts). ``default`` is the value used when the terminal is left unconnected
    (``TBD``: it becomes an input of the model). ``optional`` tensors accept ``None``.
    """

    name: str
    kind: str | None = TENSOR
    kinds: int = T.NUMBER
    default: Any = TBD
    differentiable: bool = True
    optional: bool = False

    def make_meta(self) -> Meta:
        if self.kind == TENSOR and self.optional:
            m = Meta.poly(self.kinds)  # a tensor, or None when absent
        elif self.kind == TENSOR:
            m = Meta.tensor(None, self.kinds)
        elif self.kind == SCALAR:
            m = Meta.scalar(self.kinds)
        else:
            m = Meta.poly(self.kinds)
        return m


@dataclass
class OpDef:
    name: str
    inputs: tuple[Term, ...]
    outputs: tuple[Term, ...]
    rule: Callable[..., bool]
    fold: Callable[..., Any] | None = None  # Python evaluation on concrete scalar inputs
    expr: str | None = None  # Python expression for scalar-only use, e.g. "({0} + {1})"
    variadic: bool = False  # the first input is repeated (``input1 ... inputN``)
    state: dict[str, str] = field(default_factory=dict)  # state input -> its updated output
    modal: bool = False  # has a different kernel in inference (``<name>_inference``)
    random: bool = False  # draws from the backend's random state
    differentiable: bool = True

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


CATALOGUE: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in CATALOGUE:
        raise ValueError(f"primitive {op.name!r} is already in the catalogue")
    CATALOGUE[op.name] = op
    return op


OUT = (Term("output"),)


def _scalar_or_tensor_out(out: Meta, ins: list[Meta]) -> str | None:
    """Decide the output kind of a polymorphic op; None while an input is undecided."""
    kinds = [m.kind for m in ins]
    if TENSOR in kinds:
        as_tensor(out)
        return TENSOR
    if None in kinds:
        return None
    as_scalar(out)
    return SCALAR


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


def _logic(a: int, b: int) -> int:
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
    ("logical_and", "&", operator.and_, _logic, T.BOOL),
    ("logical_or", "|", operator.or_, _logic, T.BOOL),
    ("logical_xor", "^", operator.xor, _logic, T.BOOL),
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


OUT_ANY = (Term("output", kinds=T.ANY),)


def _unary_rule(kinds: Callable[[int], int]) -> Callable:
    def rule(inp: Meta, out: Meta) -> bool:
        out_kinds(out, kinds(inp.kinds))
        return same_shape(inp, out)

    return rule


def _same(k: int) -> int:
    return k


def _float(k: int) -> int:
    return T.FLOAT


def _bool(k: int) -> int:
    return T.BOOL


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


# ----------------------------------------------------------------------------------------------
# Linear algebra
# ----------------------------------------------------------------------------------------------
def _matmul_rule(left: Meta, right: Meta, out: Meta) -> bool:
    out_kinds(out, T.promote(left.kinds, right.kinds))
    lf, rf = frag(left), frag(right)
    lr = len(lf.prefix) if lf.var is None else None
    rr = len(rf.prefix) if rf.var is None else None
    if lr == 0 or rr == 0:
        raise ShapeConflict("matmul needs tensors of rank >= 1")
    if lr == 1 and rr == 1:
        unify_dims(lf.prefix[0], rf.prefix[0])
        set_shape(out, [])
        return True
    if rr == 1:
        head = split_last(lf, 2)
        if head is None:
            return False
        unify_dims(head[1][1], rf.prefix[0])
        unify_frags(out.shape, concat_frags(head[0], [head[1][0]]))  # type: ignore[arg-type]
        return True
    if lr == 1:
        head = split_last(rf, 2)
        if head is None:
            return False
        unify_dims(lf.prefix[0], head[1][0])
        unify_frags(out.shape, concat_frags(head[0], [head[1][1]]))  # type: ignore[arg-type]
        return True
    ls, rs = split_last(lf, 2), split_last(rf, 2)
    if ls is not None and rs is not None:
        unify_dims(ls[1][1], rs[1][0])
    if rr == 2 and ls is not None:
        unify_frags(out.shape, concat_frags(ls[0], [ls[1][0], rs[1][1]]))  # type: ignore[index,arg-type]
        return True
    if lr is None or rr is None or ls is None or rs is None:
        return False
    batch = Meta.tensor(None)
    ob = Meta.tensor((ls[0].prefix and list(ls[0].prefix)) or [])
    rb = Meta.tensor(list(rs[0].prefix))
    rank = max(len(ls[0].prefix), len(rs[0].prefix))
    out_dims = ensure_rank(out, rank + 2)
    unify_frags(batch.shape, Frag(out_dims[:rank]))  # type: ignore[arg-type]
    done = broadcast(batch, [ob, rb])
    unify_dims(out_dims[rank], ls[1][0])
    unify_dims(out_dims[rank + 1], rs[1][1])
    return done


register(OpDef("matmul", (Term("left"), Term("right")), OUT, _matmul_rule))


def _split_or_impose(m: Meta, n: int) -> tuple[Frag, list[Dim]] | None:
    """Split off ``m``'s last ``n`` dims; if they are not visible yet, the op requires them:
    impose ``[..., d1, ..., dn]`` with fresh dims (a fact, not a guess).

    None when ``m`` is ``[x, ..., y]`` with fewer than ``n`` dims after its variadic part:
    which dims are the last ``n`` depends on the rank (x may be one of them), so the rule must
    wait until the rank is known.
    """
    f = frag(m)
    head = split_last(f, n)
    if head is None:
        if f.prefix:
            return None
        unify_frags(m.shape, Frag([], Var(), [Dim() for _ in range(n)]))  # type: ignore[arg-type]
        head = split_last(frag(m), n)
        assert head is not None
    return head


def _linear_rule(inp: Meta, weight: Meta, bias: Meta, out: Meta) -> bool:
    out_kinds(out, T.promote(inp.kinds, weight.kinds))
    w = ensure_rank(weight, 2)
    if bias.kind == TENSOR:
        set_shape(bias, [w[0]])
    head = _split_or_impose(inp, 1)
    if head is None:
        return False
    unify_dims(head[1][0], w[1])
    unify_frags(out.shape, concat_frags(head[0], [w[0]]))  # type: ignore[arg-type]
    return bias.kind is not None


register(OpDef("linear", (Term("input"), Term("weight"), Term("bias", optional=True)), OUT,
               _linear_rule))


# ----------------------------------------------------------------------------------------------
# Reductions
# ----------------------------------------------------------------------------------------------
def _reduce_shape(inp: Meta, axis: Meta, keepdim: Meta, out: Meta) -> bool:
    if axis.value is TBD or keepdim.value is TBD:
        return False
    ax, keep = axis.value, keepdim.value
    f = frag(inp)
    if f.var is not None:
        # reductions over trailing negative axes keep the variadic part
        if ax is not None and all(isinstance(a, int) and a < 0 for a in
                                  ((ax,) if isinstance(ax, int) else ax)):
            axes = {a for a in ((ax,) if isinstance(ax, int) else ax)}
            n = max(-a for a in axes)
            head = split_last(f, n)
            if head is None:
                return False
            tail = [Dim(1) if (i - n) in axes else d for i, d in enumerate(head[1])]
            if not keep:
                tail = [d for i, d in enumerate(head[1]) if (i - n) not in axes]
            unify_frags(out.shape, concat_frags(head[0], tail))  # type: ignore[arg-type]
            return True
        return False
    rank = len(f.prefix)
    axes = tuple(range(rank)) if ax is None else normalize_axes(ax, rank)
    if keep:
        set_shape(out, [1 if i in axes else d for i, d in enumerate(f.prefix)])
    else:
        set_shape(out, [d for i, d in enumerate(f.prefix) if i not in axes])
    return True


def _reduction(name: str, kinds: Callable[[int], int], extra: tuple[Term, ...] = (),
               diff: bool = True) -> None:
    def rule(inp: Meta, axis: Meta, keepdim: Meta, *rest: Meta) -> bool:
        out = rest[-1]
        out_kinds(out, kinds(inp.kinds))
        return _reduce_shape(inp, axis, keepdim, out)

    register(OpDef(name, (Term("input"), Term("axis", SCALAR, T.INT, default=None),
                          Term("keepdim", SCALAR, T.BOOL, default=False), *extra), OUT, rule,
                   differentiable=diff))


def _int(k: int) -> int:
    return T.INT


_reduction("sum", _same)
_reduction("mean", _float)
_reduction("max", _same)
_reduction("min", _same)
_reduction("prod", _same)
_reduction("variance", _float, (Term("correction", SCALAR, T.NUMBER, default=0),))
_reduction("argmax", _int, diff=False)
_reduction("argmin", _int, diff=False)


# ----------------------------------------------------------------------------------------------
# Shape manipulation
# ----------------------------------------------------------------------------------------------
def _reshape_rule(inp: Meta, shape: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    if shape.value is TBD:
        return False
    target = shape.value
    if not isinstance(target, tuple | list):
        raise ShapeConflict(f"reshape needs a tuple of ints, got {target!r}")
    minus = [i for i, t in enumerate(target) if isinstance(t, int) and t == -1]
    if len(minus) > 1:
        raise ShapeConflict(f"reshape target {target!r} has more than one -1")
    items: list[Any] = []
    for t in target:
        if isinstance(t, Dim) or t is None:
            items.append(t)
        elif isinstance(t, int) and t >= -1:
            items.append(None if t == -1 else t)
        else:
            raise ShapeConflict(f"invalid reshape target {target!r}")
    out_dims = ensure_rank(out, len(items))
    for d, item in zip(out_dims, items, strict=True):
        if isinstance(item, Dim):
            unify_dims(d, item)
        elif item is not None:
            set_dim(d, item)
    in_dims = dims_of(inp)
    if in_dims is None:
        return False
    if minus:
        rest = [d for i, d in enumerate(out_dims) if i != minus[0]]
        ratio = _size_ratio(in_dims, rest)
        if ratio is None:
            return False
        num, den = ratio
        if den == 0 or num % den:
            raise ShapeConflict(f"cannot reshape {frag(inp)} into {concrete(target)!r}")
        set_dim(out_dims[minus[0]], num // den)
        return True
    ratio = _size_ratio(in_dims, out_dims)
    if ratio is not None and ratio[0] != ratio[1]:
        total = product(in_dims)
        count = "" if total is None else f" ({total} elements)"
        raise ShapeConflict(f"cannot reshape {frag(inp)}{count} into {concrete(target)!r}")
    return None not in [dv(d) for d in out_dims]


def _size_ratio(num: list[Dim], den: list[Dim]) -> tuple[int, int] | None:
    """``(prod(num), prod(den))`` once the symbolic dims they share are cancelled (``x.reshape
    (x.shape[0], -1)`` with a symbolic batch); None while an unknown dim does not cancel."""
    left: dict[int, int] = {}  # id of an unknown root -> how many more times num has it
    n = d = 1
    for dim, sign in [(x, 1) for x in num] + [(x, -1) for x in den]:
        r = dim.root()
        if r.value is not None:
            if sign > 0:
                n *= r.value
            else:
                d *= r.value
            continue
        left[id(r)] = left.get(id(r), 0) + sign
    if any(left.values()):
        return None
    return n, d


register(OpDef("reshape", (Term("input", kinds=T.ANY), Term("shape", SCALAR, T.INT)),
               (Term("output", kinds=T.ANY),), _reshape_rule))


def _transpose_rule(inp: Meta, axes: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    if axes.value is TBD:
        return False
    dims = dims_of(inp)
    if axes.value is None:
        if dims is None:
            f = frag(inp)
            if f.var is None:
                return False
            return False
        set_shape(out, list(reversed(dims)))
        return True
    perm = tuple(axes.value)
    if dims is None:
        dims = ensure_rank(inp, len(perm))
    if sorted(normalize_axes(perm, len(dims))) != list(range(len(dims))):
        raise ShapeConflict(f"axes {perm!r} are not a permutation of {len(dims)} dims")
    set_shape(out, [dims[a % len(dims)] for a in perm])
    return True


register(OpDef("transpose", (Term("input", kinds=T.ANY),
                             Term("axes", SCALAR, T.INT, default=None)),
               (Term("output", kinds=T.ANY),), _transpose_rule))


def _swap_axes_rule(inp: Meta, a1: Meta, a2: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    dims = dims_of(inp)
    if dims is None or a1.value is TBD or a2.value is TBD:
        return False
    i, j = normalize_axes((a1.value, a2.value), len(dims)) if a1.value != a2.value else (
        normalize_axes(a1.value, len(dims)) * 2)
    new = list(dims)
    new[i], new[j] = new[j], new[i]
    set_shape(out, new)
    return True


register(OpDef("swap_axes", (Term("input", kinds=T.ANY), Term("axis1", SCALAR, T.INT),
                             Term("axis2", SCALAR, T.INT)),
               (Term("output", kinds=T.ANY),), _swap_axes_rule))


def _flatten_rule(inp: Meta, start: Meta, end: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    if start.value is TBD or end.value is TBD:
        return False
    f = frag(inp)
    s, e = start.value, end.value
    if f.var is not None:
        # flatten(start >= 0, end=-1) on [a, b, V...]: keep the first dims, flatten the rest
        if e == -1 and s >= 0 and len(f.prefix) >= s:
            set_tail = [Dim() for _ in range(1)]
            out_f = frag(out)
            if out_f.var is None and len(out_f.prefix) == s + 1:
                set_tail = [out_f.prefix[-1]]
            unify_frags(out.shape, Frag(f.prefix[:s] + set_tail))  # type: ignore[arg-type]
            return False
        return False
    rank = len(f.prefix)
    if rank == 0:
        set_shape(out, [1])
        return True
    s, e = normalize_axes((s, e), rank) if s % rank != e % rank else (s % rank, e % rank)
    if s > e:
        raise ShapeConflict(f"flatten start_dim {start.value} comes after end_dim {end.value}")
    merged = f.prefix[s:e + 1]
    out_dims = ensure_rank(out, rank - (e - s))
    set_shape(out, [*f.prefix[:s], None, *f.prefix[e + 1:]])
    if len(merged) == 1:
        unify_dims(out_dims[s], merged[0])
        return True
    size = product(merged)
    if size is not None:
        set_dim(out_dims[s], size)
        return True
    return False


register(OpDef("flatten", (Term("input", kinds=T.ANY),
                           Term("start_dim", SCALAR, T.INT, default=0),
                           Term("end_dim", SCALAR, T.INT, default=-1)),
               (Term("output", kinds=T.ANY),), _flatten_rule))


def _squeeze_rule(inp: Meta, axis: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    dims = dims_of(inp)
    if dims is None or axis.value is TBD:
        return False
    if axis.value is None:
        vals = [dv(d) for d in dims]
        if None in vals:
            return False
        set_shape(out, [d for d in dims if dv(d) != 1])
        return True
    axes = normalize_axes(axis.value, len(dims))
    for a in axes:
        if dv(dims[a]) is None:
            set_dim(dims[a], 1)
        elif dv(dims[a]) != 1:
            raise ShapeConflict(f"cannot squeeze axis {a} of size {dv(dims[a])}")
    set_shape(out, [d for i, d in enumerate(dims) if i not in axes])
    return True


register(OpDef("squeeze", (Term("input", kinds=T.ANY), Term("axis", SCALAR, T.INT, default=None)),
               (Term("output", kinds=T.ANY),), _squeeze_rule))


def _unsqueeze_rule(inp: Meta, axis: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    dims = dims_of(inp)
    if dims is None or axis.value is TBD:
        return False
    a = axis.value
    rank = len(dims) + 1
    (a,) = normalize_axes(a, rank)
    new: list[Any] = list(dims)
    new.insert(a, 1)
    set_shape(out, new)
    return True


register(OpDef("unsqueeze", (Term("input", kinds=T.ANY), Term("axis", SCALAR, T.INT)),
               (Term("output", kinds=T.ANY),), _unsqueeze_rule))


def _broadcast_to_rule(inp: Meta, shape: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    if shape.value is TBD:
        return False
    target = Meta.tensor(None)
    set_shape(target, list(shape.value))
    set_shape(out, list(frag(target).prefix))
    return broadcast(out, [inp, target])


register(OpDef("broadcast_to", (Term("input", kinds=T.ANY), Term("shape", SCALAR, T.INT)),
               (Term("output", kinds=T.ANY),), _broadcast_to_rule))


def _concat_rule(*metas: Meta) -> bool:
    *tensors, axis, out = metas
    kinds = 0
    for t in tensors:
        kinds |= t.kinds
    out_kinds(out, kinds)
    if axis.value is TBD:
        return False
    ranks = {len(d) for t in tensors if (d := dims_of(t)) is not None}
    if len(ranks) > 1:
        raise ShapeConflict(f"concat inputs have different ranks {sorted(ranks)}")
    if not ranks:
        return False
    rank = ranks.pop()
    all_dims = [ensure_rank(t, rank) for t in tensors]
    if axis.value is None:
        sizes = [product(d) for d in all_dims]
        set_shape(out, [None if None in sizes else sum(sizes)])  # type: ignore[arg-type]
        return None not in sizes
    (a,) = normalize_axes(axis.value, rank)
    out_dims = ensure_rank(out, rank)
    for i in range(rank):
        if i != a:
            for d in all_dims:
                unify_dims(out_dims[i], d[i])
    sizes = [dv(d[a]) for d in all_dims]
    if None in sizes:
        return False
    set_dim(out_dims[a], sum(sizes))  # type: ignore[arg-type]
    return True


register(OpDef("concat", (Term("input", kinds=T.ANY), Term("axis", SCALAR, T.INT, default=0)),
               (Term("output", kinds=T.ANY),), _concat_rule, variadic=True))


def _pad_rule(inp: Meta, pad_width: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    dims = dims_of(inp)
    if dims is None or pad_width.value is TBD:
        return False
    pw = pad_width.value
    if len(pw) != len(dims):
        raise ShapeConflict(f"pad_width {pw!r} needs one (before, after) pair per dim of "
                            f"{frag(inp)}")
    items: list[Any] = []
    for d, (lo, hi) in zip(dims, pw, strict=True):
        items.append(d if lo == hi == 0 else (None if dv(d) is None else dv(d) + lo + hi))
    set_shape(out, items)
    return all(i is not None for i in items)


register(OpDef("pad", (Term("input"), Term("pad_width", SCALAR, T.INT)), OUT, _pad_rule))


# ----------------------------------------------------------------------------------------------
# Indexing and scalar plumbing
# ----------------------------------------------------------------------------------------------
def _index_items(index: Any) -> tuple[Any, ...]:
    return index if isinstance(index, tuple) else (index,)


def _indexer_rule(inp: Meta, index: Meta, out: Meta) -> bool:
    mode = _scalar_or_tensor_out(out, [inp])
    if mode is None or index.value is TBD:
        return False
    idx = index.value
    if mode == SCALAR:
        if inp.value is TBD:
            return False
        try:
            set_value(out, inp.value[idx])
        except (IndexError, TypeError) as err:
            raise ShapeConflict(f"cannot index {inp.value!r} with {idx!r}: {err}") from None
        return True
    out_kinds(out, inp.kinds)
    items = _index_items(idx)
    for i in items:
        if not (i is None or i is Ellipsis or isinstance(i, slice) or
                (isinstance(i, int) and not isinstance(i, bool))):
            raise ShapeConflict(f"unsupported index {i!r}: use ints, slices, None and ...")
    if items.count(Ellipsis) > 1:
        raise ShapeConflict(f"index {idx!r} has more than one Ellipsis")
    f = frag(inp)
    if Ellipsis in items:
        pos = items.index(Ellipsis)
        before, after = items[:pos], items[pos + 1:]
        nb, na = _count_used(before), _count_used(after)
        if f.var is not None:
            if len(f.prefix) < nb or len(f.suffix) < na:
                return False
            head = _apply_index(f.prefix[:nb], before) + f.prefix[nb:]
            tail = f.suffix[:len(f.suffix) - na] + _apply_index(f.suffix[len(f.suffix) - na:],
                                                               after)
            unify_frags(out.shape, Frag(_dims(head), f.var, _dims(tail)))  # type: ignore[arg-type]
            return _index_settled(f.prefix[:nb], before) and _index_settled(
                f.suffix[len(f.suffix) - na:], after)
        middle = len(f.prefix) - nb - na
        if middle < 0:
            raise ShapeConflict(f"too many indices {idx!r} for shape {f}")
        items = before + (slice(None),) * middle + after
    used = _count_used(items)
    if f.var is None:
        if used > len(f.prefix):
            raise ShapeConflict(f"too many indices {idx!r} for shape {f}")
        set_shape(out, _apply_index(f.prefix[:used], items) + f.prefix[used:])
        return _index_settled(f.prefix[:used], items)
    if len(f.prefix) < used:
        return False
    head = _apply_index(f.prefix[:used], items) + f.prefix[used:]
    unify_frags(out.shape, Frag(_dims(head), f.var, f.suffix))  # type: ignore[arg-type]
    return _index_settled(f.prefix[:used], items)


def _index_settled(dims: list[Dim], items: tuple[Any, ...]) -> bool:
    """True when indexing ``dims`` with ``items`` leaves nothing to learn or check: every dim
    cut by a slice or indexed by an int has a known size (the slice's length, the int's range
    depend on it)."""
    k = 0
    for item in items:
        if item is None:
            continue
        d = dims[k]
        k += 1
        if item != slice(None) and dv(d) is None:
            return False
    return True


def _count_used(items: tuple[Any, ...]) -> int:
    return sum(1 for i in items if i is not None and i is not Ellipsis)


def _dims(items: list[Any]) -> list[Dim]:
    return [i if isinstance(i, Dim) else Dim(i) for i in items]


def _apply_index(dims: list[Dim], items: tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    k = 0
    for item in items:
        if item is None:
            out.append(1)
            continue
        d = dims[k]
        k += 1
        if isinstance(item, slice):
            size = dv(d)
            if item == slice(None):
                out.append(d)
            elif size is None:
                out.append(None)
            else:
                out.append(len(range(*item.indices(size))))
        elif isinstance(item, int) and not isinstance(item, bool):
            size = dv(d)
            if size is not None and not -size <= item < size:
                raise ShapeConflict(f"index {item} is out of range for a dimension of {size}")
        else:
            raise ShapeConflict(f"unsupported index {item!r}")
    return out


register(OpDef("indexer", (Term("input", None, T.ANY), Term("index", SCALAR, T.ANY)),
               (Term("output", None, T.ANY),), _indexer_rule, fold=operator.getitem,
               expr="{0}[{1}]"))


def _shape_rule(inp: Meta, out: Meta) -> bool:
    dims = dims_of(inp)
    if dims is None:
        return False
    set_value(out, tuple(d if d.value is None else d.value for d in dims))
    return True


register(OpDef("shape", (Term("input", kinds=T.ANY, differentiable=False),),
               (Term("output", SCALAR, T.INT),), _shape_rule, expr="tuple({0}.shape)",
               differentiable=False))


def _size_rule(inp: Meta, dim: Meta, out: Meta) -> bool:
    dims = dims_of(inp)
    if dims is None or dim.value is TBD:
        return False
    if dim.value is None:
        size = product(dims)
        if size is not None:
            set_value(out, size)
        return size is not None
    (a,) = normalize_axes(dim.value, len(dims))
    d = dims[a]
    set_value(out, d if d.value is None else d.value)
    return True


register(OpDef("size", (Term("input", kinds=T.ANY, differentiable=False),
                        Term("dim", SCALAR, T.INT, default=None)),
               (Term("output", SCALAR, T.INT),), _size_rule, differentiable=False))


def _to_tuple_rule(*metas: Meta) -> bool:
    *items, out = metas
    if all(m.value is not TBD for m in items):
        set_value(out, tuple(m.value for m in items))
        return True
    return False


register(OpDef("to_tuple", (Term("input", SCALAR, T.ANY),), (Term("output", SCALAR, T.ANY),),
               _to_tuple_rule, fold=lambda *xs: tuple(xs), expr="({0},)", variadic=True,
               differentiable=False))


def _item_rule(inp: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    return False


register(OpDef("item", (Term("input", kinds=T.ANY, differentiable=False),),
               (Term("output", SCALAR, T.ANY),), _item_rule, differentiable=False))


def _to_tensor_rule(inp: Meta, out: Meta) -> bool:
    if inp.value is TBD:
        return False
    v = concrete(inp.value)
    shape = []
    x = v
    while isinstance(x, list | tuple):
        shape.append(len(x))
        x = x[0] if x else 0
    if isinstance(x, bool):
        out_kinds(out, T.BOOL)
    elif isinstance(x, int):
        out_kinds(out, T.INT)
    elif isinstance(x, float):
        out_kinds(out, T.FLOAT)
    set_shape(out, shape)
    return True


register(OpDef("to_tensor", (Term("input", SCALAR, T.ANY),), (Term("output", kinds=T.ANY),),
               _to_tensor_rule, differentiable=False))


def _buffer_rule(inp: Meta, out: Meta) -> bool:
    mode = _scalar_or_tensor_out(out, [inp])
    out_kinds(out, inp.kinds)
    if mode != TENSOR:
        if inp.value is not TBD:
            set_value(out, inp.value)  # a constant of undecided kind passes on its value
            return mode == SCALAR
        return False
    return same_shape(inp, out)


register(OpDef("buffer", (Term("input", None, T.ANY),), (Term("output", None, T.ANY),),
               _buffer_rule, fold=lambda x: x, expr="{0}"))


# ----------------------------------------------------------------------------------------------
# Convolution and pooling
# ----------------------------------------------------------------------------------------------
def _pairs(v: Any, nd: int, what: str) -> tuple[Any, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,) * nd
    if isinstance(v, tuple | list) and len(v) == nd and all(
            (isinstance(x, int) and not isinstance(x, bool)) or
            (isinstance(x, tuple) and what == "padding") for x in v):
        return tuple(v)
    raise ShapeConflict(f"{what} must be an int or a tuple of {nd}, got {v!r}")


def _pad_pairs(v: Any, nd: int) -> tuple[tuple[int, int], ...]:
    items = _pairs(v, nd, "padding")
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in items)  # type: ignore[misc]


def _window_out(size: int | None, pad: tuple[int, int], k: int | None, s: int, d: int,
                ceil: bool = False) -> int | None:
    if size is None or k is None:
        return None
    span = size + pad[0] + pad[1] - d * (k - 1) - 1
    if span < 0:
        raise ShapeConflict(f"window of size {k} (dilation {d}) does not fit an input of {size} "
                            f"with padding {pad}")
    return (-(-span // s) if ceil else span // s) + 1


def _conv_rule(nd: int) -> Callable[..., bool]:
    def rule(inp: Meta, weight: Meta, bias: Meta, stride: Meta, padding: Meta, dilation: Meta,
             groups: Meta, out: Meta) -> bool:
        out_kinds(out, T.promote(inp.kinds, weight.kinds))
        w = ensure_rank(weight, nd + 2)
        if bias.kind == TENSOR:
            set_shape(bias, [w[0]])
        if not (stride.value is not TBD and padding.value is not TBD
                and dilation.value is not TBD and groups.value is not TBD):
            return False
        s = _pairs(stride.value, nd, "stride")
        d = _pairs(dilation.value, nd, "dilation")
        p = _pad_pairs(padding.value, nd)
        g = groups.value
        head = _split_or_impose(inp, nd + 1)
        if head is None:
            return False
        c_in, *spatial = head[1]
        if head[0].var is None and len(head[0].prefix) > 1:
            raise ShapeConflict(f"convolution input {frag(inp)} has too many dims")
        if not isinstance(g, int) or isinstance(g, bool) or g < 1:
            raise ShapeConflict(f"groups must be a positive int, got {g!r}")
        if g == 1:
            unify_dims(c_in, w[1])
        elif dv(c_in) is not None and dv(w[1]) is None:
            if dv(c_in) % g:
                raise ShapeConflict(f"{dv(c_in)} input channels are not divisible by groups={g}")
            set_dim(w[1], dv(c_in) // g)
        elif dv(c_in) is None and dv(w[1]) is not None:
            set_dim(c_in, dv(w[1]) * g)
        elif dv(c_in) is not None and dv(c_in) != dv(w[1]) * g:
            raise ShapeConflict(f"input has {dv(c_in)} channels but the weight expects "
                                f"{dv(w[1]) * g} ({dv(w[1])} x groups={g})")
        if g > 1 and dv(w[0]) is not None and dv(w[0]) % g:
            raise ShapeConflict(f"{dv(w[0])} output channels are not divisible by groups={g}")
        # with groups > 1 the channels are related only once both are known
        channels_done = g == 1 or (dv(c_in) is not None and dv(w[0]) is not None)
        sizes = [_window_out(dv(x), p[i], dv(w[2 + i]), s[i], d[i])
                 for i, x in enumerate(spatial)]
        out_f = frag(out)
        tail_dims = (split_last(out_f, nd + 1) or (None, None))[1]
        tail: list[Any] = list(tail_dims) if tail_dims else [Dim() for _ in range(nd + 1)]
        unify_dims(tail[0], w[0])
        for t, size in zip(tail[1:], sizes, strict=True):
            if size is not None:
                set_dim(t, size)
        unify_frags(out.shape, concat_frags(head[0], tail))  # type: ignore[arg-type]
        return None not in sizes and bias.kind is not None and channels_done

    return rule


_CONV_SCALARS = (Term("stride", SCALAR, T.INT, default=1),
                 Term("padding", SCALAR, T.INT, default=0),
                 Term("dilation", SCALAR, T.INT, default=1),
                 Term("groups", SCALAR, T.INT, default=1))
register(OpDef("conv1d", (Term("input"), Term("weight"), Term("bias", optional=True),
                          *_CONV_SCALARS), OUT, _conv_rule(1)))
register(OpDef("conv2d", (Term("input"), Term("weight"), Term("bias", optional=True),
                          *_CONV_SCALARS), OUT, _conv_rule(2)))


def _pool_rule(nd: int, has_dilation: bool) -> Callable[..., bool]:
    def rule(inp: Meta, kernel_size: Meta, stride: Meta, padding: Meta, *rest: Meta) -> bool:
        out = rest[-1]
        extra = rest[:-1]
        out_kinds(out, inp.kinds)
        scalars = (kernel_size, stride, padding, *extra)
        if any(m.value is TBD for m in scalars):
            return False
        k = _pairs(kernel_size.value, nd, "kernel_size")
        s = _pairs(k if stride.value is None else stride.value, nd, "stride")
        p = _pad_pairs(padding.value, nd)
        d = _pairs(extra[0].value, nd, "dilation") if has_dilation else (1,) * nd
        for i in range(nd):
            if 2 * max(p[i]) > k[i]:
                raise ShapeConflict(f"padding {p[i]} should be at most half of kernel size {k[i]}")
        head = _split_or_impose(inp, nd)
        if head is None:
            return False
        sizes = [_window_out(dv(x), p[i], k[i], s[i], d[i]) for i, x in enumerate(head[1])]
        out_f = frag(out)
        tail_dims = (split_last(out_f, nd) or (None, None))[1]
        tail: list[Any] = list(tail_dims) if tail_dims else [Dim() for _ in range(nd)]
        for t, size in zip(tail, sizes, strict=True):
            if size is not None:
                set_dim(t, size)
        unify_frags(out.shape, concat_frags(head[0], tail))  # type: ignore[arg-type]
        return None not in sizes

    return rule


_POOL = (Term("kernel_size", SCALAR, T.INT), Term("stride", SCALAR, T.INT, default=None),
         Term("padding", SCALAR, T.INT, default=0))
register(OpDef("max_pool1d", (Term("input"), *_POOL, Term("dilation", SCALAR, T.INT, default=1)),
               OUT, _pool_rule(1, True)))
register(OpDef("max_pool2d", (Term("input"), *_POOL, Term("dilation", SCALAR, T.INT, default=1)),
               OUT, _pool_rule(2, True)))
register(OpDef("avg_pool2d", (Term("input"), *_POOL), OUT, _pool_rule(2, False)))


# ----------------------------------------------------------------------------------------------
# Normalisation, embedding, attention
# ----------------------------------------------------------------------------------------------
def _batch_norm_rule(inp: Meta, weight: Meta, bias: Meta, rmean: Meta, rvar: Meta,
                     momentum: Meta, eps: Meta, out: Meta, new_mean: Meta, new_var: Meta) -> bool:
    out_kinds(out, T.FLOAT)
    same_shape(inp, out)
    f = frag(inp)
    if f.var is not None and len(f.prefix) < 2:
        return False
    dims = f.prefix
    if len(dims) < 2:
        raise ShapeConflict(f"batch norm needs an input of rank >= 2, got {f}")
    c = dims[1]
    for m in (weight, bias, rmean, rvar):
        if m.kind == TENSOR:
            set_shape(m, [c])
    set_shape(new_mean, [c])
    set_shape(new_var, [c])
    return all(m.kind is not None for m in (weight, bias, rmean, rvar))


register(OpDef(
    "batch_norm",
    (Term("input"), Term("weight", optional=True), Term("bias", optional=True),
     Term("running_mean", optional=True, differentiable=False),
     Term("running_var", optional=True, differentiable=False),
     Term("momentum", SCALAR, T.FLOAT, default=0.1), Term("eps", SCALAR, T.FLOAT, default=1e-5)),
    (Term("output"), Term("running_mean_out", differentiable=False),
     Term("running_var_out", differentiable=False)),
    _batch_norm_rule, state={"running_mean": "running_mean_out", "running_var": "running_var_out"},
    modal=True))


def _layer_norm_rule(inp: Meta, weight: Meta, bias: Meta, normalized: Meta, eps: Meta,
                     out: Meta) -> bool:
    out_kinds(out, T.FLOAT)
    same_shape(inp, out)
    if normalized.value is TBD:
        return False
    shape = tuple(normalized.value)
    head = split_last(frag(inp), len(shape))
    for m in (weight, bias):
        if m.kind == TENSOR:
            set_shape(m, list(shape))
    if head is None:
        return False
    for d, n in zip(head[1], shape, strict=True):
        set_dim(d, n) if isinstance(n, int) else unify_dims(d, n)
    return weight.kind is not None and bias.kind is not None


register(OpDef("layer_norm", (Term("input"), Term("weight", optional=True),
                              Term("bias", optional=True),
                              Term("normalized_shape", SCALAR, T.INT),
                              Term("eps", SCALAR, T.FLOAT, default=1e-5)), OUT, _layer_norm_rule))


def _group_norm_rule(inp: Meta, weight: Meta, bias: Meta, groups: Meta, eps: Meta,
                     out: Meta) -> bool:
    out_kinds(out, T.FLOAT)
    same_shape(inp, out)
    f = frag(inp)
    if len(f.prefix) < 2:
        return False
    c = f.prefix[1]
    for m in (weight, bias):
        if m.kind == TENSOR:
            set_shape(m, [c])
    if groups.value is not TBD and dv(c) is not None and dv(c) % groups.value:
        raise ShapeConflict(f"{dv(c)} channels are not divisible into {groups.value} groups")
    return weight.kind is not None and bias.kind is not None


register(OpDef("group_norm", (Term("input"), Term("weight", optional=True),
                              Term("bias", optional=True), Term("num_groups", SCALAR, T.INT),
                              Term("eps", SCALAR, T.FLOAT, default=1e-5)), OUT, _group_norm_rule))


def _embedding_rule(inp: Meta, weight: Meta, out: Meta) -> bool:
    out_kinds(out, weight.kinds)
    w = ensure_rank(weight, 2)
    unify_frags(out.shape, concat_frags(frag(inp), [w[1]]))  # type: ignore[arg-type]
    return True


register(OpDef("embedding", (Term("input", TENSOR, T.INT, differentiable=False), Term("weight")),
               OUT, _embedding_rule))


def _sdp_rule(q: Meta, k: Meta, v: Meta, mask: Meta, is_causal: Meta, scale: Meta,
              out: Meta) -> bool:
    out_kinds(out, T.FLOAT)
    qs, ks, vs = split_last(frag(q), 2), split_last(frag(k), 2), split_last(frag(v), 2)
    if qs is None or ks is None or vs is None:
        return False
    unify_dims(qs[1][1], ks[1][1])  # embedding size of q and k
    unify_dims(ks[1][0], vs[1][0])  # sequence length of k and v
    unify_frags(out.shape, concat_frags(qs[0], [qs[1][0], vs[1][1]]))  # type: ignore[arg-type]
    return True


register(OpDef("scaled_dot_product", (
    Term("query"), Term("key"), Term("value"),
    Term("attn_mask", kinds=T.ANY, optional=True, differentiable=False),
    Term("is_causal", SCALAR, T.BOOL, default=False), Term("scale", SCALAR, T.FLOAT, default=None)),
    OUT, _sdp_rule))


def _one_hot_rule(inp: Meta, classes: Meta, out: Meta) -> bool:
    out_kinds(out, T.BOOL)
    if classes.value is TBD:
        return False
    n = classes.value
    tail = [n if isinstance(n, Dim) else Dim(n)]
    unify_frags(out.shape, concat_frags(frag(inp), tail))  # type: ignore[arg-type]
    return True


register(OpDef("one_hot", (Term("input", TENSOR, T.INT, differentiable=False),
                           Term("num_classes", SCALAR, T.INT)),
               (Term("output", kinds=T.ANY),), _one_hot_rule, differentiable=False))


def _dropout_rule(inp: Meta, p: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    if p.value is not TBD and not 0 <= p.value < 1:
        raise ShapeConflict(f"dropout probability must be in [0, 1), got {p.value!r}")
    return same_shape(inp, out)


register(OpDef("dropout", (Term("input"), Term("p", SCALAR, T.FLOAT, default=0.5)), OUT,
               _dropout_rule, modal=True, random=True))


def tensor_ops() -> list[OpDef]:
    """Primitives that need a kernel in every backend (the others are plain Python)."""
    return [op for op in CATALOGUE.values()
            if op.name not in ("to_tuple", "shape", "buffer")]


# ----------------------------------------------------------------------------------------------
# Reference-catalogue additions: creation, random, linear algebra, splitting, conversions
# ----------------------------------------------------------------------------------------------
def _kind_of_values(*metas: Meta) -> int | None:
    """INT when every value is a known int, FLOAT when one is a float, else None."""
    kinds = []
    for m in metas:
        v = concrete(m.value) if m.value is not TBD else TBD
        if isinstance(v, bool) or v is TBD or v is None:
            return None
        if isinstance(v, int):
            kinds.append(T.INT)
        elif isinstance(v, float):
            kinds.append(T.FLOAT)
        else:
            return None
    return T.FLOAT if T.FLOAT in kinds else T.INT


def _dtype_kind(dtype: Meta) -> int | None:
    """The kind fixed by a known, non-None ``dtype`` terminal."""
    if dtype.value is TBD or dtype.value is None:
        return None
    return T.as_dtype(dtype.value).kind


def _arange_rule(start: Meta, stop: Meta, step: Meta, dtype: Meta, out: Meta) -> bool:
    kind = _dtype_kind(dtype)
    if kind is None and dtype.value is None:
        kind = _kind_of_values(start, stop, step)
    if kind is not None:
        out_kinds(out, kind)
    (d,) = ensure_rank(out, 1)
    values = [TBD if m.value is TBD else m.value for m in (start, stop, step)]
    if TBD in values:
        return False
    a, b, s = values
    if all(is_concrete(v) for v in values):
        a, b, s = concrete(a), concrete(b), concrete(s)
        if s == 0:
            raise ShapeConflict("arange step must not be zero")
        set_dim(d, max(0, math.ceil((b - a) / s)))
        return kind is not None or dtype.value is not TBD
    if is_concrete(a) and is_concrete(s) and concrete(a) == 0 and concrete(s) == 1 \
            and isinstance(b, Dim):
        unify_dims(d, b)  # arange(n) for a symbolic n: length n
        return kind is not None or dtype.value is not TBD
    return False


register(OpDef("arange", (Term("start", SCALAR, T.NUMBER, default=0),
                          Term("stop", SCALAR, T.NUMBER),
                          Term("step", SCALAR, T.NUMBER, default=1),
                          Term("dtype", SCALAR, T.ANY, default=None)),
               (Term("output", kinds=T.NUMBER),), _arange_rule, differentiable=False))


def _random_rule(default_kind: int) -> Callable[..., bool]:
    def rule(shape: Meta, *rest: Meta) -> bool:
        dtype, out = rest[-2], rest[-1]
        kind = _dtype_kind(dtype)
        if kind is None and dtype.value is None:
            kind = default_kind
        if kind is not None:
            out_kinds(out, kind)
        if shape.value is TBD:
            return False
        value = shape.value
        items = list(value) if isinstance(value, tuple | list) else [value]
        set_shape(out, [it if isinstance(it, Dim) or it is None else int(it) for it in items])
        return dtype.value is not TBD

    return rule


register(OpDef("randn", (Term("shape", SCALAR, T.INT), Term("dtype", SCALAR, T.ANY, default=None)),
               (Term("output", kinds=T.FLOAT),), _random_rule(T.FLOAT), random=True,
               differentiable=False))
register(OpDef("randint", (Term("shape", SCALAR, T.INT), Term("low", SCALAR, T.INT, default=0),
                           Term("high", SCALAR, T.INT),
                           Term("dtype", SCALAR, T.ANY, default=None)),
               (Term("output", kinds=T.INT),), _random_rule(T.INT), random=True,
               differentiable=False))


def _square_matrices(inp: Meta) -> tuple[Frag, Dim] | None:
    """``(batch dims, n)`` of a ``(..., n, n)`` input (imposing the two trailing dims)."""
    split = _split_or_impose(inp, 2)
    if split is None:
        return None
    head, (rows, cols) = split
    unify_dims(rows, cols)
    return head, rows


def _cholesky_rule(inp: Meta, out: Meta) -> bool:
    out_kinds(out, T.FLOAT)
    square = _square_matrices(inp)
    return same_shape(inp, out) and square is not None


register(OpDef("cholesky", (Term("input"),), (Term("output", kinds=T.FLOAT),), _cholesky_rule))


def _eigvalsh_rule(inp: Meta, out: Meta) -> bool:
    out_kinds(out, T.FLOAT)
    square = _square_matrices(inp)
    if square is None:
        return False
    head, n = square
    unify_frags(out.shape, concat_frags(head, [n]))  # type: ignore[arg-type]
    return True


register(OpDef("eigvalsh", (Term("input"),), (Term("output", kinds=T.FLOAT),), _eigvalsh_rule))


def _split_rule(inp: Meta, split_size: Meta, axis: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    dims = dims_of(inp)
    if dims is None or split_size.value is TBD or axis.value is TBD:
        return False
    size = concrete(split_size.value)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ShapeConflict(f"split_size must be a positive int, got {split_size.value!r}")
    (a,) = normalize_axes(axis.value, len(dims))
    items: list[Any] = list(dims)
    items[a] = size
    length = dv(dims[a])
    if length is None:
        set_shape(out, [None, *items])
        return False
    if length % size:
        raise ShapeConflict(f"split_size {size} does not divide the length {length} of axis "
                            f"{axis.value} (all chunks must have the same size)")
    set_shape(out, [length // size, *items])
    return True


register(OpDef("split", (Term("input", kinds=T.ANY), Term("split_size", SCALAR, T.INT),
                         Term("axis", SCALAR, T.INT, default=0)),
               (Term("output", kinds=T.ANY),), _split_rule))


def _unique_rule(inp: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    ensure_rank(out, 1)  # its length depends on the data
    return True


register(OpDef("unique", (Term("input", kinds=T.ANY, differentiable=False),),
               (Term("output", kinds=T.ANY),), _unique_rule, differentiable=False))


def polynomial_feature_count(n_features: int, degree: int) -> int:
    """Number of monomials of total degree 1..``degree`` in ``n_features`` variables."""
    return math.comb(n_features + degree, degree) - 1


def _polynomial_features_rule(inp: Meta, degree: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    if degree.value is TBD:
        return False
    deg = degree.value
    if not isinstance(deg, int) or isinstance(deg, bool) or deg < 1:
        raise ShapeConflict(f"degree must be a positive int, got {deg!r}")
    split = _split_or_impose(inp, 1)
    if split is None:
        return False
    head, (d,) = split
    tail_dims = (split_last(frag(out), 1) or (None, None))[1]
    tail: list[Any] = list(tail_dims) if tail_dims else [Dim()]
    n = dv(d)
    if n is not None:
        set_dim(tail[0], polynomial_feature_count(n, deg))
    unify_frags(out.shape, concat_frags(head, tail))  # type: ignore[arg-type]
    return n is not None


register(OpDef("polynomial_features", (Term("input"), Term("degree", SCALAR, T.INT)), OUT,
               _polynomial_features_rule))


def _atleast_1d_rule(inp: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    f = frag(inp)
    if f.var is None and not f.prefix:
        set_shape(out, [1])
        return True
    if f.var is None or f.prefix or f.suffix:
        return same_shape(inp, out)
    return False


register(OpDef("atleast_1d", (Term("input", kinds=T.ANY),), (Term("output", kinds=T.ANY),),
               _atleast_1d_rule))


def _dtype_of_rule(inp: Meta, out: Meta) -> bool:
    return False  # the precision is the backend's choice: known only when the code runs


register(OpDef("dtype_of", (Term("input", kinds=T.ANY, differentiable=False),),
               (Term("output", SCALAR, T.ANY),), _dtype_of_rule, differentiable=False))


def _to_slice_rule(start: Meta, stop: Meta, step: Meta, out: Meta) -> bool:
    values = [m.value for m in (start, stop, step)]
    if TBD in values or not all(is_concrete(v) for v in values):
        return False
    set_value(out, slice(*(concrete(v) for v in values)))
    return True


register(OpDef("to_slice", (Term("start", SCALAR, T.INT), Term("stop", SCALAR, T.INT),
                            Term("step", SCALAR, T.INT)),
               (Term("output", SCALAR, T.ANY),), _to_slice_rule, fold=slice,
               expr="slice({0}, {1}, {2})", differentiable=False))


def _to_list_rule(*metas: Meta) -> bool:
    *items, out = metas
    if all(m.value is not TBD for m in items):
        set_value(out, [m.value for m in items])
        return True
    return False


register(OpDef("to_list", (Term("input", SCALAR, T.ANY),), (Term("output", SCALAR, T.ANY),),
               _to_list_rule, fold=lambda *xs: list(xs), variadic=True, differentiable=False))


def _tensor_to_list_rule(inp: Meta, out: Meta) -> bool:
    return False  # the values exist only at run time


register(OpDef("tensor_to_list", (Term("input", kinds=T.ANY, differentiable=False),),
               (Term("output", SCALAR, T.ANY),), _tensor_to_list_rule, differentiable=False))
