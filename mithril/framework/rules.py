"""Building blocks for the catalogue's shape and type rules.

A rule receives the root metas of its operator's terminals (inputs then outputs), adds what it
can learn, and returns True once nothing more can be learned. Rules never invent a fresh dim
for something that already has one, so repeated runs are no-ops and propagation terminates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import types as T
from .logical.meta import SCALAR, TBD, TENSOR, Meta, make_kind, set_kinds, set_value
from .shapes import Dim, Frag, ShapeConflict, set_dim, unify_dims, unify_frags


def frag(m: Meta) -> Frag:
    return m.shape.normal()


def dims_of(m: Meta) -> list[Dim] | None:
    """The dims of a tensor of known rank, else None."""
    f = frag(m)
    return None if f.var is not None else f.prefix


def ensure_rank(m: Meta, rank: int) -> list[Dim]:
    """``m``'s dims, giving it ``rank`` fresh dims if its rank was unknown."""
    f = frag(m)
    if f.var is None:
        if len(f.prefix) != rank:
            raise ShapeConflict(f"expected rank {rank}, got shape {f}")
        return f.prefix
    unify_frags(m.shape, Frag([Dim() for _ in range(rank)]))
    return frag(m).prefix


def set_shape(m: Meta, items: Sequence[Dim | int | None]) -> None:
    """Unify ``m``'s shape with ``items`` (dims, ints, or None for "no information")."""
    dims = ensure_rank(m, len(items))
    for d, item in zip(dims, items, strict=True):
        if isinstance(item, Dim):
            unify_dims(d, item)
        elif item is not None:
            set_dim(d, item)


def same_shape(a: Meta, b: Meta) -> bool:
    unify_frags(a.shape, b.shape)
    return True


def value(m: Meta) -> Any:
    return m.root().value


def dv(d: Dim | int) -> int | None:
    return d if isinstance(d, int) else d.root().value


def is_concrete(v: Any) -> bool:
    """True when a scalar value holds no unresolved symbolic dims."""
    if isinstance(v, Dim):
        return v.root().value is not None
    if isinstance(v, tuple | list):
        return all(is_concrete(x) for x in v)
    if isinstance(v, slice):
        return all(is_concrete(x) for x in (v.start, v.stop, v.step))
    return v is not TBD


def concrete(v: Any) -> Any:
    """Replace resolved dims in a scalar value by their ints."""
    if isinstance(v, Dim):
        return v.root().value
    if isinstance(v, tuple):
        return tuple(concrete(x) for x in v)
    if isinstance(v, list):
        return [concrete(x) for x in v]
    if isinstance(v, slice):
        return slice(concrete(v.start), concrete(v.stop), concrete(v.step))
    return v


# ----------------------------------------------------------------------------------------------
# Broadcasting
# ----------------------------------------------------------------------------------------------
def broadcast_dims(out_d: Dim, ins: list[Dim]) -> bool:
    """Relate one output dim to the input dims aligned with it; True when decided."""
    roots = list({id(d.root()): d.root() for d in ins}.values())
    if len(roots) == 1:
        unify_dims(out_d, roots[0])
        return True
    values = [r.value for r in roots]
    big = {v for v in values if v is not None and v != 1}
    if len(big) > 1:
        raise ShapeConflict(f"dimensions {sorted(big)} cannot be broadcast together")
    if big:
        set_dim(out_d, big.pop())
        return all(v is not None for v in values)
    unknown = [r for r in roots if r.value is None]
    if not unknown:  # all ones
        set_dim(out_d, 1)
        return True
    if len(unknown) == 1:  # the others are 1
        unify_dims(out_d, unknown[0])
        return True
    return False


def broadcast(out: Meta, ins: Sequence[Meta]) -> bool:
    """Numpy broadcasting of the tensor inputs (scalar numbers count as rank 0).

    An operand whose kind is undecided (a tensor or a number) and whose value is not known may
    still turn out a tensor of any rank: nothing is inferred (and the rule is not finished)
    until its kind or value is known. A known value (a constant) has the shape of its value.
    """
    frags: list[Frag] = []
    for m in ins:
        if m.kind == TENSOR:
            frags.append(frag(m))
        elif m.kind == SCALAR:
            frags.append(Frag())
        else:
            shape = value_shape(m.value)
            if shape is None:
                return False
            frags.append(Frag([Dim(n) for n in shape]))
    unknown = [f for f in frags if f.var is not None]
    if unknown:
        # with a single tensor of unknown rank and the rest scalars or rank 0, out is that tensor
        if len(unknown) == 1 and all(f.var is not None or not f.prefix for f in frags):
            unify_frags(out.shape, unknown[0])
            return True
        same = {id(f.var.root()) for f in unknown}
        if len(same) == 1 and all(f.var is not None for f in frags) and all(
                len(f.prefix) == len(unknown[0].prefix) and len(f.suffix) == len(
                    unknown[0].suffix) for f in frags):
            # all share one variadic: broadcast only the known edges
            pre = [Dim() for _ in unknown[0].prefix]
            suf = [Dim() for _ in unknown[0].suffix]
            out_f = frag(out)
            if out_f.var is not None and out_f.var.root() is unknown[0].var.root() and len(
                    out_f.prefix) == len(pre) and len(out_f.suffix) == len(suf):
                pre, suf = out_f.prefix, out_f.suffix
            else:
                # out is [pre, V..., suf] (its dims unified with these, whatever the layout of
                # out's own shape: it may be of known rank, e.g. declared with IOKey(shape=...))
                unify_frags(out.shape, Frag(pre, unknown[0].var, suf))
            done = True
            for i, d in enumerate(pre):
                done &= broadcast_dims(d, [f.prefix[i] for f in frags])
            for i, d in enumerate(suf):
                done &= broadcast_dims(d, [f.suffix[i] for f in frags])
            return done
        return False
    rank = max(len(f.prefix) for f in frags)
    out_dims = ensure_rank(out, rank)
    done = True
    for i in range(rank):
        aligned = [f.prefix[len(f.prefix) - rank + i] for f in frags
                   if len(f.prefix) - rank + i >= 0]
        done &= broadcast_dims(out_dims[i], aligned)
    return done


def value_shape(v: Any) -> tuple[int, ...] | None:
    """The shape of a known constant value (a number or an array), else None."""
    if isinstance(v, bool | int | float | complex | np.ndarray | np.generic):
        return tuple(np.shape(v))
    return None


def split_last(f: Frag, n: int) -> tuple[Frag, list[Dim]] | None:
    """Split ``f`` into (everything but the last n dims, last n dims) if those are known."""
    if f.var is None:
        if len(f.prefix) < n:
            raise ShapeConflict(f"shape {f} needs at least {n} dims")
        return Frag(f.prefix[: len(f.prefix) - n]), f.prefix[len(f.prefix) - n:]
    if len(f.suffix) >= n:
        return Frag(f.prefix, f.var, f.suffix[: len(f.suffix) - n]), f.suffix[len(f.suffix) - n:]
    return None


def concat_frags(head: Frag, tail: Sequence[Dim]) -> Frag:
    if head.var is None:
        return Frag(head.prefix + list(tail))
    return Frag(head.prefix, head.var, head.suffix + list(tail))


def normalize_axes(axis: Any, rank: int) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, int) or isinstance(a, bool) or not -rank <= a < rank:
            raise ShapeConflict(f"axis {a!r} is out of range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ShapeConflict(f"repeated axis in {axis!r}")
    return tuple(out)


def product(dims: Sequence[Dim | int]) -> int | None:
    vals = [dv(d) for d in dims]
    if any(v is None for v in vals):
        return None
    return math.prod(vals)


# ----------------------------------------------------------------------------------------------
# Kinds (types)
# ----------------------------------------------------------------------------------------------
def out_kinds(out: Meta, kinds: int) -> None:
    set_kinds(out, kinds)


def as_tensor(m: Meta) -> None:
    make_kind(m, TENSOR)


def as_scalar(m: Meta) -> None:
    make_kind(m, SCALAR)


__all__ = [
    "SCALAR", "TBD", "TENSOR", "T", "as_scalar", "as_tensor", "broadcast", "concat_frags",
    "concrete", "dims_of", "dv", "ensure_rank", "frag", "is_concrete", "normalize_axes",
    "out_kinds", "product", "same_shape", "set_shape", "set_value", "split_last", "value",
    "value_shape",
]
