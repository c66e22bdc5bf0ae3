"""Indexing and scalar plumbing: indexer, shape, size, item, tuples, lists, dtypes."""

from __future__ import annotations

import math
import operator
from typing import Any

from .. import types as T
from ..logical.meta import SCALAR, TBD, TENSOR, Meta
from ..logical.sequences import index_items, set_items
from ..rules import (
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
)
from ..shapes import Dim, Frag, ShapeConflict, unify_frags
from .base import (
    OpDef,
    Term,
    _scalar_or_tensor_out,
    derive,
    register,
)


# ----------------------------------------------------------------------------------------------
# Indexing and scalar plumbing
# ----------------------------------------------------------------------------------------------
def _index_items(index: Any) -> tuple[Any, ...]:
    return index if isinstance(index, tuple) else (index,)


def _indexer_rule(inp: Meta, index: Meta, out: Meta) -> bool:
    if inp.items is not None and inp.value is TBD:  # a tuple or list of terminals
        if index.value is TBD:
            return False
        index_items(inp, index.value, out)
        return True
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
            unify_frags(out.shape, Frag(_dims(head), f.var, _dims(tail)))
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
    unify_frags(out.shape, Frag(_dims(head), f.var, f.suffix))
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


def _sequence_rule(make: type) -> Any:
    """``to_tuple`` / ``to_list``: the value when every element is a known scalar; the tuple
    (or list) of the elements' terminals while one of them is, or may turn out, a tensor."""

    def rule(*metas: Meta) -> bool:
        *items, out = metas
        if out.items is not None or any(m.kind != SCALAR or m.items is not None
                                        for m in items):
            # elements that are (or may turn out) tensors: the tuple of their terminals
            set_items(out, make(items))
        if all(m.kind == SCALAR and m.value is not TBD for m in items):
            set_value(out, make(m.value for m in items))
            return True
        return any(m.kind == TENSOR for m in items)  # then it never has a value

    return rule


#: the elements of a tuple or list may be tensors or Python values (decided by what they meet;
#: an input left undecided at compile time is a Python value)
SEQUENCE_ITEM = Term("input", None, T.ANY)

register(OpDef("to_tuple", (SEQUENCE_ITEM,), (Term("output", SCALAR, T.ANY),),
               _sequence_rule(tuple), fold=lambda *xs: tuple(xs), expr="({0},)", variadic=True))


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




def _unique_rule(inp: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    ensure_rank(out, 1)  # its length depends on the data
    return True


register(OpDef("unique", (Term("input", kinds=T.ANY, differentiable=False),),
               (Term("output", kinds=T.ANY),), _unique_rule, differentiable=False))



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


register(OpDef("to_list", (SEQUENCE_ITEM,), (Term("output", SCALAR, T.ANY),),
               _sequence_rule(list), fold=lambda *xs: list(xs), variadic=True))


def _tensor_to_list_rule(inp: Meta, out: Meta) -> bool:
    return False  # the values exist only at run time


register(OpDef("tensor_to_list", (Term("input", kinds=T.ANY, differentiable=False),),
               (Term("output", SCALAR, T.ANY),), _tensor_to_list_rule, differentiable=False))


# ---- derived: plain Python on any backend's arrays -------------------------------------------
def _size(k: Any, x: Any, dim: int | None = None) -> int:
    return math.prod(int(v) for v in x.shape) if dim is None else int(x.shape[dim])


derive({
    "size": _size,
    "item": lambda k, x: x.item(),
    "tensor_to_list": lambda k, x: x.tolist() if hasattr(x, "tolist") else x,
    "to_slice": lambda k, start, stop, step: slice(start, stop, step),
    "to_list": lambda k, *inputs: list(inputs),
})
