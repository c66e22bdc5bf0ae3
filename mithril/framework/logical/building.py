"""Changing a model safely: every change runs in an undo trail, and a contradiction found
while connecting or propagating becomes one clear error naming the model path, the terminal
and both shapes (``ShapeMismatchError``) or kinds (``TypeMismatchError``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ShapeMismatchError, TypeMismatchError
from .. import types as T
from ..shapes import (
    Frag,
    PropagationError,
    ShapeConflict,
    Trail,
    TypeConflict,
    frag_from_template,
    propagate,
    set_attr,
    unify_frags,
)
from .meta import SCALAR, TBD, TENSOR, Meta, make_kind, set_kinds, set_value
from .sequences import apply_value, holds_slots
from .symbols import readable_in

if TYPE_CHECKING:
    from .base import BaseModel
    from .connection import IOKey


def conflict_error_class(err: ShapeConflict) -> type[ShapeMismatchError | TypeMismatchError]:
    """The error a conflict is reported as: ``TypeMismatchError`` for kinds and element types
    (a :class:`TypeConflict`), ``ShapeMismatchError`` for shapes and values."""
    return TypeMismatchError if isinstance(err, TypeConflict) else ShapeMismatchError


def shape_list(f: Frag) -> list[Any]:
    """A shape as ``shapes`` shows it: ints where known, symbol names otherwise."""
    n = f.normal()
    items: list[Any] = [repr(d) if d.value is None else d.value for d in n.prefix]
    if n.var is not None:
        items.append(repr(n.var))
        items += [repr(d) if d.value is None else d.value for d in n.suffix]
    return items


class Building:
    """Run a model change in a trail; turn conflicts into clear errors and undo everything."""

    def __init__(self, model: BaseModel, what: str, scopes: tuple[Any, ...] = ()) -> None:
        self.model = model
        self.what = what  # context for error messages
        self.scopes = scopes  # more (terminals, prefix) to name symbols after (symbols.py)
        self.trail = Trail()

    def __enter__(self) -> Trail:
        return self.trail.__enter__()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            try:
                propagate()
            except PropagationError as err:
                # described before the rollback, in the names of this model's terminals
                error = propagation_error(err, self.what, self.model, self.scopes)
                self.trail.__exit__(type(err), err, None)
                raise error from None
        self.trail.__exit__(exc_type, exc, tb)
        return False


def propagation_error(err: PropagationError, context: str = "",
                       model: BaseModel | None = None, scopes: tuple[Any, ...] = ()
                       ) -> ShapeMismatchError:
    """The error for a conflict found by propagation: the primitive, its path and the shapes
    of its terminals, with symbols named from ``model``'s terminals (``input.dim0``)."""
    owner = err.constraint.owner
    where = f"{context}: " if context and not context.isidentifier() else ""
    if owner is None:  # a unification deferred while connecting (shapes.PendingUnify)
        text = f"{where}{err.cause}"
    else:
        parts = []
        for name, meta in zip(owner.input_names + owner.output_names, err.constraint.metas,
                              strict=False):
            parts.append(f"{name}: {meta.describe()}")
        text = f"{where}{owner.op.name} at {owner.path}: {err.cause} (terminals " \
            f"{'; '.join(parts)})"
    scopes = [(model, ""), *scopes] if model is not None else list(scopes)
    if owner is not None:
        top = owner
        while top.parent is not None:
            top = top.parent
        scopes.append((top, ""))
    return ShapeMismatchError(readable_in(text, *scopes))


def guard(model: BaseModel, key: Any, meta: Meta, given: Any, fn: Any) -> None:
    before = meta.describe()
    try:
        fn()
    except ShapeConflict as err:
        name = key if isinstance(key, str) else (key.key or "<connection>")
        cls = conflict_error_class(err)
        raise cls(readable_in(
            f"{model.path}: terminal {name!r} is {before}, cannot be {given!r}: {err}",
            (model, ""))) from None


def const_value(meta: Meta, value: Any) -> Any:
    if meta.root().kind == TENSOR and not isinstance(value, np.ndarray):
        return np.asarray(value)
    return value


class KindConflict(TypeConflict):
    """A shape given for a terminal that is not a tensor (a list, a tuple, a number)."""


def unify_shape(meta: Meta, frag: Frag) -> None:
    """Give a terminal a shape: it becomes a tensor if still undecided, or must be one."""
    r = meta.root()
    if r.kind is not None and r.kind != TENSOR:
        raise KindConflict("it is a scalar value (a number, list or tuple, not a tensor), so "
                           "it has no shape: give shapes only to tensor terminals")
    if r.kind is None:
        make_kind(r, TENSOR)
    unify_frags(meta.root().shape, frag)


def apply_iokey(meta: Meta, key: IOKey) -> None:
    """Apply what an ``IOKey`` says (shape, type, value, differentiable) to a terminal."""
    if key.shape_template is not None:
        unify_shape(meta, frag_from_template(key.shape_template))
    if getattr(key.type, "__origin__", None) in (tuple, list):
        # the reference's ``IOKey("size", type=tuple[int, ...])``: a scalar tuple (or list)
        if meta.root().kind is None:
            make_kind(meta.root(), SCALAR)
    elif key.type is not None:
        set_kinds(meta, T.kind_from_type(key.type))
    if holds_slots(key.value):  # ``value=(Tensor(), Tensor())``: a tuple of tensor inputs
        apply_value(meta, key.value)
    elif key.value is not TBD:
        r = meta.root()
        set_value(r, const_value(r, key.value))
    if key.differentiable is not None:
        r = meta.root()
        set_attr(r, "differentiable", key.differentiable)
