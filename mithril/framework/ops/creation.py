"""Creation and random primitives: arange, randn, randint."""

from __future__ import annotations

import math
from collections.abc import Callable

from .. import types as T
from ..logical.meta import SCALAR, TBD, Meta
from ..rules import (
    concrete,
    ensure_rank,
    is_concrete,
    out_kinds,
    set_shape,
)
from ..shapes import Dim, ShapeConflict, set_dim, unify_dims
from .base import (
    OpDef,
    Term,
    register,
)


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
