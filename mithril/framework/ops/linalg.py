"""Linear algebra: matmul, linear, Cholesky, eigenvalues, polynomial features."""

from __future__ import annotations

import math
from typing import Any

from .. import types as T
from ..logical.meta import SCALAR, TBD, TENSOR, Meta
from ..rules import (
    broadcast,
    concat_frags,
    dv,
    ensure_rank,
    frag,
    out_kinds,
    same_shape,
    set_shape,
    split_last,
)
from ..shapes import Dim, Frag, ShapeConflict, Var, set_dim, unify_dims, unify_frags
from .base import (
    OUT,
    OpDef,
    Term,
    derive,
    register,
)


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
        unify_frags(out.shape, concat_frags(head[0], [head[1][0]]))
        return True
    if lr == 1:
        head = split_last(rf, 2)
        if head is None:
            return False
        unify_dims(lf.prefix[0], head[1][0])
        unify_frags(out.shape, concat_frags(head[0], [head[1][1]]))
        return True
    ls, rs = split_last(lf, 2), split_last(rf, 2)
    if ls is not None and rs is not None:
        unify_dims(ls[1][1], rs[1][0])
    if rr == 2 and ls is not None:
        unify_frags(out.shape, concat_frags(ls[0], [ls[1][0], rs[1][1]]))
        return True
    if lr is None or rr is None or ls is None or rs is None:
        return False
    batch = Meta.tensor(None)
    ob = Meta.tensor((ls[0].prefix and list(ls[0].prefix)) or [])
    rb = Meta.tensor(list(rs[0].prefix))
    rank = max(len(ls[0].prefix), len(rs[0].prefix))
    out_dims = ensure_rank(out, rank + 2)
    unify_frags(batch.shape, Frag(out_dims[:rank]))
    done = broadcast(batch, [ob, rb])
    unify_dims(out_dims[rank], ls[1][0])
    unify_dims(out_dims[rank + 1], rs[1][1])
    return done


register(OpDef("matmul", (Term("left"), Term("right")), OUT, _matmul_rule))


def split_or_impose(m: Meta, n: int) -> tuple[Frag, list[Dim]] | None:
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
        unify_frags(m.shape, Frag([], Var(), [Dim() for _ in range(n)]))
        head = split_last(frag(m), n)
        assert head is not None
    return head


def _linear_rule(inp: Meta, weight: Meta, bias: Meta, out: Meta) -> bool:
    out_kinds(out, T.promote(inp.kinds, weight.kinds))
    w = ensure_rank(weight, 2)
    if bias.kind == TENSOR:
        set_shape(bias, [w[0]])
    head = split_or_impose(inp, 1)
    if head is None:
        return False
    unify_dims(head[1][0], w[1])
    unify_frags(out.shape, concat_frags(head[0], [w[0]]))
    return bias.kind is not None


register(OpDef("linear", (Term("input"), Term("weight"), Term("bias", optional=True)), OUT,
               _linear_rule))




def _square_matrices(inp: Meta) -> tuple[Frag, Dim] | None:
    """``(batch dims, n)`` of a ``(..., n, n)`` input (imposing the two trailing dims)."""
    split = split_or_impose(inp, 2)
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
    unify_frags(out.shape, concat_frags(head, [n]))
    return True


register(OpDef("eigvalsh", (Term("input"),), (Term("output", kinds=T.FLOAT),), _eigvalsh_rule))



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
    split = split_or_impose(inp, 1)
    if split is None:
        return False
    head, (d,) = split
    tail_dims = (split_last(frag(out), 1) or (None, None))[1]
    tail: list[Any] = list(tail_dims) if tail_dims else [Dim()]
    n = dv(d)
    if n is not None:
        set_dim(tail[0], polynomial_feature_count(n, deg))
    unify_frags(out.shape, concat_frags(head, tail))
    return n is not None


register(OpDef("polynomial_features", (Term("input"), Term("degree", SCALAR, T.INT)), OUT,
               _polynomial_features_rule))


# ---- derived: decompositions into core kernels ----------------------------------------------
def _linear(k: Any, x: Any, weight: Any, bias: Any) -> Any:
    out = k.matmul(x, k.transpose(weight, (1, 0)))
    return out if bias is None else k.add(out, bias)


# NumPy and PyTorch keep their own linear kernels (one fused multiply-add, addmm / one GEMM over
# the flattened batch, measurably faster); JAX and MLX compile the decomposition to the same graph
derive({"linear": _linear})
