"""Tuples and lists of tensors as terminal values.

A terminal may hold a Python tuple (or list) whose elements include tensors: the output of
``ToTuple(n)(*tensors)``, or an input declared ``IOKey("x", value=(Tensor(), Tensor()))``. Its
meta is a scalar-kind meta whose ``items`` are the metas of its elements, in order, and whose
value stays unknown (it exists only when the code runs). The elements of ``ToTuple``'s output
*are* its inputs' metas, so indexing the tuple with a constant (``h[1]``) gives a connection
whose shape and type are that element's, and a shape learned on either side (``h[1].
set_shapes(...)``, a ``Linear`` after it) is learned on both.

>>> import numpy as np
>>> import mithril as ml
>>> from mithril import IOKey
>>> from mithril.models import Model, ToTuple, Tensor
>>> m = Model()
>>> m |= ToTuple(n=2)(input1=IOKey("a", shape=[2, 3]), input2=IOKey("b", shape=[4]),
...                   output="h")
>>> m |= ml.models.Buffer()(input=m.h[1], output=IOKey("second"))
>>> m.shapes["second"]
[4]
>>> t = Model()
>>> t |= ml.models.Buffer()(input=IOKey("pair", value=(Tensor(), Tensor()))[0],
...                         output=IOKey("first"))
>>> pm = ml.compile(t, ml.NumpyBackend(), jit=False)
>>> pm.evaluate({}, {"pair": (np.ones(2), np.zeros(3))})["first"].tolist()
[1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import ShapeMismatchError
from .. import types as T
from ..shapes import ShapeConflict, TypeConflict, frag_from_template, schedule, set_attr
from .connection import ConnectionAlgebra, IOKey
from .constants import kind_of_scalar
from .meta import SCALAR, TENSOR, Meta, make_kind, unify_items, unify_meta


class TensorSlot:
    """A tensor without a value, as an element of a tuple or list value: the reference's
    ``Tensor()`` (``Tensor(shape=[2, "N"], type=float)``), which ``mithril.types.Tensor``
    returns when it is given no value.

    >>> from mithril.types import Tensor
    >>> Tensor(shape=[2, None])
    Tensor(shape=[2, None])
    """

    __slots__ = ("shape", "type")

    def __init__(self, shape: Sequence[Any] | None = None, type: Any = None) -> None:
        self.shape = None if shape is None else list(shape)
        self.type = type

    def __repr__(self) -> str:
        return "Tensor()" if self.shape is None else f"Tensor(shape={self.shape!r})"

    def make_meta(self) -> Meta:
        kinds = T.ANY if self.type is None else T.kind_from_type(self.type)
        return Meta.tensor(frag_from_template(self.shape), kinds)


def holds_slots(value: Any) -> bool:
    """Is ``value`` a tuple or list with a tensor slot (``Tensor()``) in it, at any depth?

    >>> holds_slots((TensorSlot(), 2)), holds_slots((1, 2))
    (True, False)
    """
    if isinstance(value, TensorSlot):
        return True
    return isinstance(value, tuple | list) and any(holds_slots(v) for v in value)


def meta_of_element(value: Any) -> Meta:
    """The meta of one element of a tuple value: a tensor slot, a nested tuple, a constant."""
    if isinstance(value, TensorSlot):
        return value.make_meta()
    if holds_slots(value):
        m = Meta.scalar()
        set_attr(m, "items", type(value)(meta_of_element(v) for v in value))
        return m
    return Meta.scalar(kind_of_scalar(value), value=value)


def set_items(meta: Meta, items: Sequence[Meta]) -> None:
    """``meta`` is a tuple (or list, after ``items``' type) of the terminals ``items``."""
    r = meta.root()
    if r.kind is None:
        make_kind(r, SCALAR)
    if r.kind != SCALAR:
        raise TypeConflict(f"a {r.kind} cannot be a {type(items).__name__} of tensors")
    roots = type(items)(m.root() for m in items)
    if r.items is None:
        set_attr(r, "items", roots)
        schedule(r.watchers)
    else:
        unify_items(r.items, roots)


def apply_value(meta: Meta, value: Any) -> None:
    """Give a terminal a tuple value holding tensor slots (``(Tensor(), Tensor())``), or a
    tensor slot (``IOKey("x", value=Tensor())``: a tensor input)."""
    if isinstance(value, TensorSlot):
        unify_meta(meta, value.make_meta())
        return
    items = type(value)(meta_of_element(v) for v in value)
    set_items(meta, items)


def index_items(inp: Meta, index: Any, out: Meta) -> None:
    """``out = inp[index]`` for a tuple (or list) of tensors indexed with a constant: an int
    gives that element (the same terminal), a slice a shorter tuple."""
    items = inp.root().items
    assert items is not None
    if isinstance(index, slice):
        set_items(out, items[index])
        return
    if not isinstance(index, int):
        raise ShapeConflict(f"a {type(items).__name__} of tensors is indexed with an int or a "
                            f"slice, not {index!r}")
    if not -len(items) <= index < len(items):
        raise ShapeConflict(f"index {index} is out of range for a {type(items).__name__} of "
                            f"{len(items)}")
    unify_meta(out, items[index])


def check_index(conn: Any, index: Any) -> None:
    """``conn[index]`` on a tuple (list) of tensors, checked where it is written: an int in
    range or a slice, else ``ShapeMismatchError`` naming the connection."""
    meta = getattr(conn, "meta", None)
    if meta is not None:
        items = meta.root().items
        name = f"{conn.model.path}: {conn.key or conn.model._conn_name(conn)!r}"
    elif isinstance(conn, IOKey) and holds_slots(conn.value):
        items, name = conn.value, f"IOKey {conn.name!r}"
    else:
        return
    if items is None or isinstance(index, slice):
        return
    kind = f"a {type(items).__name__} of {len(items)} tensors or values"
    if not isinstance(index, int):
        if isinstance(index, ConnectionAlgebra):
            raise ShapeMismatchError(f"{name} is {kind}: index it with a constant int or "
                                     "slice, not a connection")
        raise ShapeMismatchError(f"{name} is {kind}: index it with an int or a slice, not "
                                 f"{index!r}")
    if not -len(items) <= index < len(items):
        raise ShapeMismatchError(f"{name} is {kind}: index {index} is out of range")


def carries_tensors(meta: Meta) -> bool:
    """Does ``meta`` hold tensors: a tensor, or a tuple or list with tensors in it?

    >>> m = Meta.scalar()
    >>> set_items(m, (TensorSlot().make_meta(), Meta.scalar(value=3)))
    >>> carries_tensors(m), m.describe()
    (True, 'tuple (tensor [(V, ...)], value 3)')
    """
    r = meta.root()
    if r.kind == TENSOR:
        return True
    return r.items is not None and any(carries_tensors(m) for m in r.items)
