"""Reductions over axes: sum, mean, max, min, prod, variance, argmax, argmin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import types as T
from ..logical.meta import SCALAR, TBD, Meta
from ..rules import (
    concat_frags,
    frag,
    normalize_axes,
    out_kinds,
    set_shape,
    split_last,
)
from ..shapes import Dim, unify_frags
from .base import (
    OUT,
    OpDef,
    Term,
    _float,
    _int,
    _same,
    derive,
    reduced_count,
    register,
)


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
            unify_frags(out.shape, concat_frags(head[0], tail))
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


_reduction("sum", _same)
_reduction("mean", _float)
_reduction("max", _same)
_reduction("min", _same)
_reduction("prod", _same)
_reduction("variance", _float, (Term("correction", SCALAR, T.NUMBER, default=0),))
_reduction("argmax", _int, diff=False)
_reduction("argmin", _int, diff=False)


# ---- derived: decompositions into core kernels ----------------------------------------------
def _mean(k: Any, x: Any, axis: Any = None, keepdim: bool = False) -> Any:
    return k.divide(k.sum(x, axis, keepdim), reduced_count(x.shape, axis))


def _variance(k: Any, x: Any, axis: Any = None, keepdim: bool = False,
              correction: float = 0) -> Any:
    d = k.subtract(x, _mean(k, x, axis, True))
    return k.divide(k.sum(k.multiply(d, d), axis, keepdim),
                    reduced_count(x.shape, axis) - correction)


derive({
    "mean": _mean,
    "variance": _variance,
    "min": lambda k, x, axis=None, keepdim=False: k.negate(k.max(k.negate(x), axis, keepdim)),
    "argmin": lambda k, x, axis=None, keepdim=False: k.argmax(k.negate(x), axis, keepdim),
})
