"""Shape manipulation: reshape, transpose, flatten, squeeze, concat, pad, split, ..."""

from __future__ import annotations

import math
from typing import Any

from .. import types as T
from ..logical.meta import SCALAR, TBD, Meta
from ..rules import (
    broadcast,
    concrete,
    dims_of,
    dv,
    ensure_rank,
    frag,
    normalize_axes,
    out_kinds,
    product,
    same_shape,
    set_shape,
)
from ..shapes import Dim, Frag, ShapeConflict, set_dim, unify_dims, unify_frags
from .base import (
    OUT,
    OpDef,
    Term,
    derive,
    register,
)


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
            unify_frags(out.shape, Frag(f.prefix[:s] + set_tail))
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
        set_shape(out, [None if None in sizes else sum(sizes)])
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
    set_dim(out_dims[a], sum(sizes))
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


# ---- derived: decompositions into core kernels ----------------------------------------------
def _swap_axes(k: Any, x: Any, axis1: int, axis2: int) -> Any:
    perm = list(range(len(x.shape)))
    perm[axis1], perm[axis2] = perm[axis2], perm[axis1]
    return k.transpose(x, tuple(perm))


def _flatten(k: Any, x: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
    shape = [int(v) for v in x.shape]
    if not shape:
        return k.reshape(x, (1,))
    s, e = start_dim % len(shape), end_dim % len(shape)
    return k.reshape(x, (*shape[:s], math.prod(shape[s:e + 1]), *shape[e + 1:]))


def _squeeze(k: Any, x: Any, axis: Any = None) -> Any:
    shape = [int(v) for v in x.shape]
    if axis is None:
        drop = {i for i, v in enumerate(shape) if v == 1}
    else:
        drop = {a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)}
    return k.reshape(x, tuple(v for i, v in enumerate(shape) if i not in drop))


def _unsqueeze(k: Any, x: Any, axis: int) -> Any:
    shape = [int(v) for v in x.shape]
    shape.insert(axis % (len(shape) + 1), 1)
    return k.reshape(x, tuple(shape))


def _split(k: Any, x: Any, split_size: int, axis: int = 0) -> Any:
    """Chunks stacked on a new first axis: ``(.., n * size, ..)`` reshaped to
    ``(.., n, size, ..)``, the ``n`` axis moved to the front."""
    shape = [int(v) for v in x.shape]
    a = axis % len(shape)
    y = k.reshape(x, (*shape[:a], shape[a] // split_size, split_size, *shape[a + 1:]))
    return k.transpose(y, (a, *(i for i in range(len(shape) + 1) if i != a)))


derive({
    "swap_axes": _swap_axes,
    "flatten": _flatten,
    "squeeze": _squeeze,
    "unsqueeze": _unsqueeze,
    "split": _split,
    "atleast_1d": lambda k, x: k.reshape(x, (1,)) if len(x.shape) == 0 else x,
})
