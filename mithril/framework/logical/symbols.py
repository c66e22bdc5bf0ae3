"""Readable names for symbols nobody named, in messages and shape listings.

A symbolic dim the user named (``"N"``) prints as its name. One nobody named has only an
internal id (``u13``), which tells a reader nothing; before a message or a shape listing is
shown, each such id is replaced by a name derived from the first terminal and axis where the
symbol appears, looking from the model the user is working on: ``input.dim2`` (the third axis
of ``input``), ``input.dim-1`` (the last axis of an input of unknown rank),
``linear.weight.dim1`` (a terminal of a submodel). Only the error path and listings pay for
this walk over the model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..shapes import INTERNAL_ID, Dim, dim_of_internal_id
from .meta import TENSOR, Meta

#: what a symbol that no terminal of the model shows is called (one that only existed inside a
#: failed connection, for instance)
UNNAMED = "?"


def symbol_names(models: Iterable[tuple[Any, str]]) -> dict[int, str]:
    """``id(root dim) -> derived name`` for every unnamed symbol the models' terminals show.

    ``models`` are ``(model, prefix)`` pairs (or ``({name: connection}, prefix)`` for
    connections not yet in a model); earlier pairs, then outer terminals, win. Each model's own
    terminals come first, then its named connections, then its submodels' terminals (breadth
    first, prefixed by the submodel's name).
    """
    return {k: name for k, (_, name) in _collect(models).items()}


def _collect(models: Iterable[tuple[Any, str]]) -> dict[int, tuple[Dim, str]]:
    names: dict[int, tuple[Dim, str]] = {}
    for model, prefix in models:
        queue: deque[tuple[Any, str]] = deque([(model, prefix)])
        while queue:
            m, pre = queue.popleft()
            for key, conn in _terminals(m):
                _name_meta(conn.meta.root(), pre + key, names)
            for child, _ in getattr(m, "iter_children", lambda: ())():
                queue.append((child, f"{pre}{child._local_name or child.class_name}."))
    return names


def _terminals(model: Any) -> list[tuple[str, Any]]:
    """A model's terminals and named connections, without changing what it has cached."""
    if isinstance(model, dict):
        return list(model.items())
    saved = (getattr(model, "_iface", None), getattr(model, "_roles", None))
    try:
        items = list(model.interface().items())
    finally:
        if hasattr(model, "_iface"):
            model._iface, model._roles = saved
    named = getattr(model, "named", None)
    if named:
        items += list(named.items())
    return items


def _name_meta(meta: Meta, label: str, names: dict[int, tuple[Dim, str]]) -> None:
    if meta.kind == TENSOR and meta.shape is not None:
        frag = meta.shape.normal()
        for i, d in enumerate(frag.prefix):
            _take(d, f"{label}.dim{i}", names)
        for j, d in enumerate(frag.suffix):
            _take(d, f"{label}.dim{j - len(frag.suffix)}", names)
    elif isinstance(meta.value, Dim):
        _take(meta.value, label, names)
    elif isinstance(meta.value, tuple | list):
        for i, v in enumerate(meta.value):
            if isinstance(v, Dim):
                _take(v, f"{label}[{i}]", names)


def _take(d: Dim, name: str, names: dict[int, tuple[Dim, str]]) -> None:
    r = d.root()
    if r.value is None and r.name is None and id(r) not in names:
        names[id(r)] = (r, name)


@contextmanager
def derived_names(*models: tuple[Any, str]) -> Iterator[None]:
    """Within the block, unnamed symbols print as their derived names (for listings such as
    ``summary``, formatted by code that only calls ``repr``); afterwards, as before."""
    saved = []
    for r, name in _collect(models).values():
        saved.append((r, r.auto))
        r.auto = name
    try:
        yield
    finally:
        for r, auto in saved:
            r.auto = auto


def readable(text: str, names: dict[int, str]) -> str:
    """``text`` with each internal symbol id replaced by its derived name (see module doc).

    >>> from mithril.models import Model, Linear
    >>> from mithril.framework.logical.symbols import readable, symbol_names
    >>> m = Model()
    >>> m |= Linear(4)(input="x", output="y")
    >>> readable(repr(m.x.meta.root().shape), symbol_names([(m, "")]))
    '[(V, ...), x.dim-1]'
    """
    if "u" not in text:
        return text

    def name(match: Any) -> str:
        d = dim_of_internal_id(match.group(0))
        if d is None:
            return match.group(0)  # not an id we wrote: a user's own text
        r = d.root()
        if r.value is not None:
            return str(r.value)
        if r.name is not None:
            return r.name
        return names.get(id(r), UNNAMED)

    return INTERNAL_ID.sub(name, text)


def readable_in(text: str, *models: tuple[Any, str]) -> str:
    """``readable(text, symbol_names(models))``, walking the models only when ``text`` holds
    an internal id."""
    if not INTERNAL_ID.search(text):
        return text
    return readable(text, symbol_names(models))
