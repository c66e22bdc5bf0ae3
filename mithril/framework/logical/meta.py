"""What is known about one terminal: tensor or scalar, shape, kinds, value, differentiability.

Metas are merged by union-find when terminals are connected; every change goes through the
shape engine's trail so a failed connection can be rolled back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import types as T
from ..shapes import (
    Constraint,
    Dim,
    Frag,
    ShapeConflict,
    TypeConflict,
    frag_from_template,
    record,
    schedule,
    set_attr,
    unify_frags,
)


class _TBDType:
    """Marks a value that will be provided later (``ml.TBD``)."""

    _instance: _TBDType | None = None

    def __new__(cls) -> _TBDType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "TBD"

    def __reduce__(self) -> str:
        return "TBD"


TBD = _TBDType()

TENSOR, SCALAR = "tensor", "scalar"


class Initializer:
    """How ``randomize_params`` fills a parameter (PyTorch's defaults by layer).

    ``kind`` is one of ``"kaiming_uniform"`` (bound ``1/sqrt(fan_in)``, as ``nn.Linear`` /
    ``nn.Conv2d`` weights and biases), ``"ones"``, ``"zeros"``, ``"normal"`` (std 1, as
    ``nn.Embedding``) and ``"uniform_hidden"`` (bound ``1/sqrt(hidden)``, as ``nn.LSTM``).
    ``fan_in`` is a list of dims (ints or shape dims) whose product is the fan-in.
    """

    __slots__ = ("fan_in", "kind")

    def __init__(self, kind: str, fan_in: list[Any] | None = None) -> None:
        self.kind = kind
        self.fan_in = fan_in or []


class Meta:
    """Facts about one terminal, shared by every connection merged with it."""

    __slots__ = (
        "differentiable",
        "init",
        "items",
        "kind",
        "kinds",
        "parent",
        "rank",
        "shape",
        "value",
        "watchers",
    )

    def __init__(self, kind: str, shape: Frag | None = None, kinds: int = T.ANY,
                 value: Any = TBD, differentiable: bool | None = None,
                 init: Initializer | None = None) -> None:
        self.parent: Meta = self
        self.rank = 1
        self.kind = kind
        self.shape = shape if shape is not None or kind != TENSOR else frag_from_template(None)
        self.kinds = kinds
        self.value = value
        self.differentiable = differentiable
        self.init = init
        #: a tuple or list holding tensors (``ToTuple`` of tensors, a tuple input): the metas
        #: of its elements (see ``logical/sequences.py``); its value stays ``TBD``
        self.items: tuple[Meta, ...] | list[Meta] | None = None
        self.watchers: dict[Constraint, None] = {}

    @classmethod
    def tensor(cls, shape: Any = None, kinds: int = T.ANY, **kw: Any) -> Meta:
        frag = shape if isinstance(shape, Frag) else frag_from_template(shape)
        return cls(TENSOR, frag, kinds, **kw)

    @classmethod
    def poly(cls, kinds: int = T.NUMBER) -> Meta:
        """A terminal that may be a tensor or a Python number, decided by what it meets."""
        return cls(None, None, kinds)

    @classmethod
    def scalar(cls, kinds: int = T.ANY, value: Any = TBD) -> Meta:
        return cls(SCALAR, None, kinds, value)

    def root(self) -> Meta:
        m = self
        while m.parent is not m:
            m = m.parent
        return m

    @property
    def is_tensor(self) -> bool:
        return self.root().kind == TENSOR

    def describe(self) -> str:
        r = self.root()
        if r.kind == TENSOR:
            return f"tensor {r.shape!r}"
        if r.items is not None:
            inner = ", ".join(m.describe() for m in r.items)
            return f"{type(r.items).__name__} ({inner})"
        if r.value is not TBD:
            return f"value {r.value!r}"
        return "scalar" if r.kind == SCALAR else "tensor or number"


def _normal_value(v: Any) -> Any:
    """Symbolic dims inside scalar values compare by their current value or identity."""
    if isinstance(v, Dim):
        r = v.root()
        return ("dim", r.value) if r.value is not None else ("sym", id(r))
    if isinstance(v, int) and not isinstance(v, bool):
        return ("dim", v)
    if isinstance(v, tuple | list):
        return (type(v).__name__, tuple(_normal_value(x) for x in v))
    return v


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    try:
        na, nb = _normal_value(a), _normal_value(b)
        return type(na) is type(nb) and bool(na == nb)
    except Exception:
        return a is b


def set_value(meta: Meta, value: Any) -> None:
    r = meta.root()
    if r.value is not TBD:
        if not _values_equal(r.value, value):
            raise ShapeConflict(f"value {r.value!r} cannot also be {value!r}")
        return
    set_attr(r, "value", value)
    schedule(r.watchers)


def make_kind(meta: Meta, kind: str) -> None:
    """Decide a polymorphic terminal's kind (tensor or scalar)."""
    r = meta.root()
    if r.kind == kind:
        return
    if r.kind is not None:
        raise TypeConflict(f"a {r.kind} cannot be used as a {kind}")
    set_attr(r, "kind", kind)
    if kind == TENSOR:
        set_attr(r, "shape", frag_from_template(None))
    schedule(r.watchers)


def set_kinds(meta: Meta, kinds: int) -> None:
    r = meta.root()
    new = r.kinds & kinds
    if new == r.kinds:
        return
    if not new:
        raise TypeConflict(f"type {T.kind_names(r.kinds)} does not match {T.kind_names(kinds)}")
    set_attr(r, "kinds", new)
    schedule(r.watchers)


def unify_meta(a: Meta, b: Meta) -> Meta:
    """Merge two terminals' facts; raise :class:`ShapeConflict` if they contradict."""
    ra, rb = a.root(), b.root()
    if ra is rb:
        return ra
    if ra.kind is not None and rb.kind is not None and ra.kind != rb.kind:
        raise TypeConflict(f"a {ra.kind} cannot be connected to a {rb.kind}")
    if ra.rank < rb.rank:
        ra, rb = rb, ra
    if ra.kind is None and rb.kind is not None:
        set_attr(ra, "kind", rb.kind)
        set_attr(ra, "shape", rb.shape)
        schedule(ra.watchers)
    if ra.kind == TENSOR and rb.kind == TENSOR:
        unify_frags(ra.shape, rb.shape)
    new_kinds = ra.kinds & rb.kinds
    if not new_kinds:
        raise TypeConflict(
            f"type {T.kind_names(ra.kinds)} does not match {T.kind_names(rb.kinds)}")
    if ra.value is not TBD and rb.value is not TBD and not _values_equal(ra.value, rb.value):
        raise ShapeConflict(f"value {ra.value!r} does not match {rb.value!r}")
    set_attr(rb, "parent", ra)
    set_attr(ra, "rank", ra.rank + rb.rank)
    schedule(rb.watchers)
    if new_kinds != ra.kinds or (ra.value is TBD and rb.value is not TBD):
        schedule(ra.watchers)
    set_attr(ra, "kinds", new_kinds)
    if ra.value is TBD:
        set_attr(ra, "value", rb.value)
    if ra.differentiable is None:
        set_attr(ra, "differentiable", rb.differentiable)
    if ra.init is None:
        set_attr(ra, "init", rb.init)
    if rb.items is not None:
        if ra.items is None:
            set_attr(ra, "items", rb.items)
            schedule(ra.watchers)
        else:
            unify_items(ra.items, rb.items)
    added = [w for w in rb.watchers if w not in ra.watchers]
    if added:
        table = ra.watchers
        for w in added:
            table[w] = None
        record(lambda: [table.pop(w, None) for w in added])
    return ra


def unify_items(a: tuple[Meta, ...] | list[Meta], b: tuple[Meta, ...] | list[Meta]) -> None:
    """The elements of two tuples (or lists) of tensors are the same terminals, in order."""
    if type(a) is not type(b) or len(a) != len(b):
        raise TypeConflict(f"a {type(a).__name__} of {len(a)} cannot be a "
                           f"{type(b).__name__} of {len(b)}")
    for x, y in zip(a, b, strict=True):
        unify_meta(x, y)
