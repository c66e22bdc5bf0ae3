"""Symbolic shapes: integer dims, named symbols and variadic parts, unified incrementally.

A tensor's shape is a :class:`Frag` — ``prefix dims, optional variadic, suffix dims`` — whose
pieces are union-find nodes shared between every tensor that must agree on them. Facts arrive
one at a time (a terminal is connected, a shape is set) and only the constraints that watch a
changed node run again (a worklist), so the cost of connecting a model does not grow with the
size of the graph it joins.

Every mutation is recorded on the active :class:`Trail`, so a failed connection can be undone
and leaves the model exactly as it was.
"""

from __future__ import annotations

import itertools
import re
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import ArgumentError, ArgumentTypeError


class ShapeConflict(Exception):
    """Two facts about a shape contradict each other (raised inside inference)."""


class TypeConflict(ShapeConflict):
    """Two facts about what a terminal holds contradict: a tensor used as a scalar, or element
    types with nothing in common (``float`` vs ``int``). Reported as ``TypeMismatchError``."""


# ----------------------------------------------------------------------------------------------
# Undo trail
# ----------------------------------------------------------------------------------------------
class Trail:
    """Records how to undo every mutation made while it is active."""

    _active: list[Trail] = []

    def __init__(self) -> None:
        self.undo: list[Callable[[], None]] = []

    def __enter__(self) -> Trail:
        Trail._active.append(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        Trail._active.pop()
        if exc_type is not None:
            self.rollback()
        elif Trail._active:  # nested: the outer trail must be able to undo our work too
            Trail._active[-1].undo.extend(self.undo)

    def rollback(self) -> None:
        _QUEUE.clear()
        _QUEUED.clear()
        for fn in reversed(self.undo):
            fn()
        self.undo.clear()


def record(fn: Callable[[], None]) -> None:
    """Register ``fn`` as the undo step of a mutation just made."""
    if Trail._active:
        Trail._active[-1].undo.append(fn)


def set_attr(obj: Any, name: str, value: Any) -> None:
    """Set ``obj.name`` to ``value``, recording the undo step on the active trail."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    record(lambda: setattr(obj, name, old))


# ----------------------------------------------------------------------------------------------
# Constraints and the worklist
# ----------------------------------------------------------------------------------------------
class Constraint:
    """A local rule over a few terminals' metadata, re-run when any of them changes."""

    __slots__ = ("done", "metas", "owner", "rule")

    def __init__(self, rule: Callable[..., bool | None], metas: Sequence[Any], owner: Any) -> None:
        self.rule = rule
        self.metas = list(metas)
        self.owner = owner  # the operator instance, used for error messages
        self.done = False

    def run(self) -> None:
        if self.done:
            return
        roots = [m.root() for m in self.metas]
        outer = _running[0]
        _running[0] = self
        try:
            finished = self.rule(*roots)
        finally:
            _running[0] = outer
        # watch whatever the terminals look like now (shapes grow as they are learned), and
        # the symbolic dims inside scalar values (a shape tuple, a size): the rule can fold
        # them once they are known
        for r in roots:
            add_watchers(r, (self,))
            if r.shape is not None:
                watch(self, r.shape)
            elif r.value is not None and isinstance(r.value, Dim | tuple | list | slice):
                _watch_value(self, r.value)
        # done only once kinds are settled too (tensors' element kinds can still narrow)
        if finished and all(r.kind != "tensor" or r.kinds in (1, 2, 4) for r in roots):
            set_attr(self, "done", True)


#: the constraint whose rule is running (``[None]`` outside rules): the owner of what it defers
_running: list[Constraint | None] = [None]


def _watch_value(c: Constraint, v: Any) -> None:
    """Make ``c`` re-run when a symbolic dim inside the scalar value ``v`` changes."""
    if isinstance(v, Dim):
        add_watchers(v.root(), (c,))
    elif isinstance(v, tuple | list):
        for x in v:
            if isinstance(x, Dim | tuple | list | slice):
                _watch_value(c, x)
    elif isinstance(v, slice):
        for x in (v.start, v.stop, v.step):
            if isinstance(x, Dim):
                add_watchers(x.root(), (c,))


_QUEUE: deque[Constraint] = deque()
_QUEUED: set[int] = set()


def schedule(watchers: Iterable[Constraint]) -> None:
    for c in watchers:
        if not c.done and id(c) not in _QUEUED:
            _QUEUED.add(id(c))
            _QUEUE.append(c)


class PropagationError(Exception):
    """A shape conflict found while running ``constraint`` (the operator that failed)."""

    def __init__(self, constraint: Constraint, cause: ShapeConflict) -> None:
        super().__init__(str(cause))
        self.constraint = constraint
        self.cause = cause


def propagate() -> None:
    """Run scheduled constraints until nothing changes."""
    while _QUEUE:
        c = _QUEUE.popleft()
        _QUEUED.discard(id(c))
        try:
            c.run()
        except ShapeConflict as err:
            raise PropagationError(c, err) from None


# ----------------------------------------------------------------------------------------------
# Dims and variadics
# ----------------------------------------------------------------------------------------------
_names = itertools.count()

#: the form of an unnamed symbol's internal id (``u13``), as ``repr`` writes it into messages
INTERNAL_ID = re.compile(r"\bu\d+\b")
#: internal id -> the dim that was written with it; messages are made readable by replacing
#: each id with a name derived from the terminal and axis where the symbol appears (see
#: ``logical/symbols.py``), never shown to users as such
_BY_ID: weakref.WeakValueDictionary[str, Dim] = weakref.WeakValueDictionary()


def dim_of_internal_id(token: str) -> Dim | None:
    """The dim an internal id (``u13``) in a message stands for, if it still exists."""
    return _BY_ID.get(token)


class Dim:
    """One axis length: a known int or a symbol, merged with equal dims by union-find."""

    __slots__ = ("__weakref__", "auto", "name", "parent", "size", "value", "watchers")

    def __init__(self, value: int | None = None, name: str | None = None) -> None:
        self.auto: str | None = None  # display name of an unnamed symbol (cosmetic only)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ShapeConflict(f"a dimension must be a non-negative int, got {value!r}")
        self.parent: Dim = self
        self.value = value
        self.name = name
        self.size = 1
        self.watchers: dict[Constraint, None] = {}

    def root(self) -> Dim:
        d = self
        while d.parent is not d:
            d = d.parent
        return d

    def __repr__(self) -> str:
        r = self.root()
        if r.value is not None:
            return str(r.value)
        if r.name is not None:
            return r.name
        if r.auto is None:
            r.auto = f"u{next(_names)}"
            _BY_ID[r.auto] = r
        return r.auto


def set_dim(d: Dim, value: int) -> None:
    """Fix ``d`` to ``value`` (scheduling what watches it)."""
    r = d.root()
    if r.value == value:
        return
    if r.value is not None:
        raise ShapeConflict(f"dimension is {r.value}, cannot also be {value}")
    if not isinstance(value, int) or value < 0:
        raise ShapeConflict(f"a dimension must be a non-negative int, got {value!r}")
    set_attr(r, "value", value)
    schedule(r.watchers)


def unify_dims(a: Dim, b: Dim) -> None:
    ra, rb = a.root(), b.root()
    if ra is rb:
        return
    if ra.value is not None and rb.value is not None and ra.value != rb.value:
        raise ShapeConflict(f"dimension {ra.value} does not match {rb.value}")
    if ra.size < rb.size:
        ra, rb = rb, ra
    # Only constraints that saw the two dims as different can learn anything: those watching
    # the smaller class, and those of the larger class if it gains a value.
    set_attr(rb, "parent", ra)
    set_attr(ra, "size", ra.size + rb.size)
    schedule(rb.watchers)
    if ra.value is None and rb.value is not None:
        set_attr(ra, "value", rb.value)
        schedule(ra.watchers)
    if ra.name is None and rb.name is not None:
        set_attr(ra, "name", rb.name)
    _merge_watchers(ra, rb)


def _merge_watchers(into: Dim | Var, other: Dim | Var) -> None:
    added = [w for w in other.watchers if w not in into.watchers]
    add_watchers(into, added)


def add_watchers(node: Dim | Var, watchers: Iterable[Constraint]) -> None:
    table = node.watchers
    added = [w for w in watchers if w not in table]
    if not added:
        return
    for w in added:
        table[w] = None

    def undo() -> None:
        for w in added:
            table.pop(w, None)

    record(undo)


class Var:
    """A variadic run of dims of unknown length (``("V", ...)`` in a template)."""

    __slots__ = ("name", "parent", "size", "value", "watchers")

    def __init__(self, name: str | None = None) -> None:
        self.parent: Var = self
        self.value: Frag | None = None
        self.name = name
        self.size = 1
        self.watchers: dict[Constraint, None] = {}

    def root(self) -> Var:
        v = self
        while v.parent is not v:
            v = v.parent
        return v

    def __repr__(self) -> str:
        r = self.root()
        return f"({r.name or 'V'}, ...)"


class Frag:
    """``prefix + [var...] + suffix``: a shape, possibly with one variadic middle part."""

    __slots__ = ("prefix", "suffix", "var")

    def __init__(self, prefix: Sequence[Dim] = (), var: Var | None = None,
                 suffix: Sequence[Dim] = ()) -> None:
        self.prefix = list(prefix)
        self.var = var
        self.suffix = list(suffix) if var is not None else []
        if var is None and suffix:
            self.prefix += list(suffix)

    def normal(self) -> Frag:
        """An equivalent fragment whose variadic (if any) is unresolved; dims are roots."""
        prefix = [d.root() for d in self.prefix]
        suffix = [d.root() for d in self.suffix]
        var = self.var
        while var is not None:
            var = var.root()
            if var.value is None:
                break
            inner = var.value
            prefix += [d.root() for d in inner.prefix]
            suffix = [d.root() for d in inner.suffix] + suffix
            var = inner.var
        if var is None:
            return Frag(prefix + suffix)
        return Frag(prefix, var, suffix)

    @property
    def known_rank(self) -> bool:
        return self.normal().var is None

    def dims(self) -> list[Dim]:
        """The dims of a fragment of known rank."""
        n = self.normal()
        if n.var is not None:
            raise ShapeConflict("rank is not known")
        return n.prefix

    def values(self) -> list[int | None]:
        return [d.value for d in self.dims()]

    def nodes(self) -> Iterable[Dim | Var]:
        n = self.normal()
        yield from n.prefix
        if n.var is not None:
            yield n.var
        yield from n.suffix

    def __repr__(self) -> str:
        n = self.normal()
        parts = [repr(d) for d in n.prefix]
        if n.var is not None:
            parts.append(repr(n.var))
        parts += [repr(d) for d in n.suffix]
        return "[" + ", ".join(parts) + "]"


def resolve_var(v: Var, frag: Frag) -> None:
    r = v.root()
    if r.value is not None:
        unify_frags(r.value, frag)
        return
    for node in frag.nodes():
        if node.root() is r:
            raise ShapeConflict("a variadic part cannot contain itself")
    set_attr(r, "value", frag)
    for node in frag.nodes():
        add_watchers(node.root(), r.watchers)
    schedule(r.watchers)


def _unify_vars(a: Var, b: Var) -> None:
    ra, rb = a.root(), b.root()
    if ra is rb:
        return
    if ra.size < rb.size:
        ra, rb = rb, ra
    set_attr(rb, "parent", ra)
    set_attr(ra, "size", ra.size + rb.size)
    if ra.name is None and rb.name is not None:
        set_attr(ra, "name", rb.name)
    schedule(rb.watchers)
    if ra.value is None and rb.value is not None:
        set_attr(ra, "value", rb.value)
        schedule(ra.watchers)
    _merge_watchers(ra, rb)


def unify_frags(f: Frag, g: Frag) -> None:
    """Make ``f`` and ``g`` the same shape, or raise :class:`ShapeConflict`.

    When both are variadic and one has dims before its variadic part that the other has after
    it (``[N, C, ...]`` and ``[..., C, H, W]``), how they overlap depends on the rank: it may be
    4 here (C is C), 3, or 5 and more. What is certain is unified now; the rest waits in a
    :class:`PendingUnify` until the rank of one side is known (or the overlap is decided).
    """
    if not _unify(f, g):
        pending = PendingUnify(f, g)
        pending.watch()


class PendingUnify:
    """``f == g`` where the layout of their variadic parts is not decided yet.

    It watches the variadic parts of both and completes the unification as soon as one of them
    is resolved far enough; it runs in the worklist like a :class:`Constraint`.
    """

    __slots__ = ("done", "f", "g", "metas", "owner")

    def __init__(self, f: Frag, g: Frag) -> None:
        self.f, self.g = f, g
        self.done = False
        running = _running[0]
        # a conflict found later is reported as the operator's whose rule deferred it
        self.owner = running.owner if running is not None else None
        self.metas = running.metas if running is not None else []

    def watch(self) -> None:
        for fr in (self.f, self.g):
            var = fr.normal().var
            if var is not None:
                add_watchers(var.root(), (self,))

    def run(self) -> None:
        if self.done:
            return
        if _unify(self.f, self.g):
            set_attr(self, "done", True)
        else:
            self.watch()

    def __repr__(self) -> str:
        return f"PendingUnify({self.f} == {self.g})"


def _unify(f: Frag, g: Frag) -> bool:
    """Unify what is certain; False when an undecided overlap of variadics remains."""
    a, b = f.normal(), g.normal()
    if a.var is None and b.var is not None:
        a, b = b, a
    if a.var is None:  # both of known rank
        if len(a.prefix) != len(b.prefix):
            raise ShapeConflict(f"shape {a} does not match {b}: ranks differ")
        for x, y in zip(a.prefix, b.prefix, strict=True):
            _unify_dims_in(x, y, a, b)
        return True
    if b.var is None:
        need = len(a.prefix) + len(a.suffix)
        if len(b.prefix) < need:
            raise ShapeConflict(f"shape {a} does not match {b}: needs at least {need} dims")
        for x, y in zip(a.prefix, b.prefix, strict=False):
            _unify_dims_in(x, y, a, b)
        tail = b.prefix[len(b.prefix) - len(a.suffix):] if a.suffix else []
        for x, y in zip(a.suffix, tail, strict=True):
            _unify_dims_in(x, y, a, b)
        middle = b.prefix[len(a.prefix):len(b.prefix) - len(a.suffix)]
        resolve_var(a.var, Frag(middle))
        return True
    # both variadic: match the common prefix and suffix, then relate the variadics
    np_, ns = min(len(a.prefix), len(b.prefix)), min(len(a.suffix), len(b.suffix))
    for x, y in zip(a.prefix[:np_], b.prefix[:np_], strict=True):
        _unify_dims_in(x, y, a, b)
    for x, y in zip(a.suffix[len(a.suffix) - ns:], b.suffix[len(b.suffix) - ns:], strict=True):
        _unify_dims_in(x, y, a, b)
    a_pre, b_pre = a.prefix[np_:], b.prefix[np_:]
    a_suf, b_suf = a.suffix[: len(a.suffix) - ns], b.suffix[: len(b.suffix) - ns]
    if (a_pre and b_suf) or (b_pre and a_suf):
        # [x, V...] vs [W..., y]: x may be y (rank 1) or not (rank >= 2); undecided
        return False
    if a_pre or a_suf:
        resolve_var(b.var, Frag(a_pre, a.var, a_suf))
    elif b_pre or b_suf:
        resolve_var(a.var, Frag(b_pre, b.var, b_suf))
    else:
        _unify_vars(a.var, b.var)
    return True


def _unify_dims_in(x: Dim, y: Dim, a: Frag, b: Frag) -> None:
    try:
        unify_dims(x, y)
    except ShapeConflict:
        raise ShapeConflict(f"shape {a} does not match {b}") from None


# ----------------------------------------------------------------------------------------------
# Templates: the user-facing way to write shapes
# ----------------------------------------------------------------------------------------------
ShapeTemplate = Sequence[Any]


def frag_from_template(template: ShapeTemplate | None, symbols: dict[str, Any] | None = None
                       ) -> Frag:
    """Build a fragment from ``[2, "N", ("V", ...), None]``.

    Ints are fixed dims, strings are named symbols (equal names within ``symbols`` share a dim),
    ``None`` is a fresh unknown dim and ``("V", ...)`` or ``...`` is a variadic part.
    ``None`` as the whole template means a shape of unknown rank.
    """
    symbols = {} if symbols is None else symbols
    if template is None:
        return Frag((), Var(), ())
    if isinstance(template, int | str):
        raise ArgumentTypeError(f"a shape must be a list or tuple, got {template!r}")
    prefix: list[Dim] = []
    suffix: list[Dim] = []
    var: Var | None = None
    for item in template:
        if item is ... or (isinstance(item, tuple) and len(item) == 2 and item[1] is ...):
            if var is not None:
                raise ArgumentError(f"shape {list(template)!r} has more than one variadic part")
            name = None if item is ... else item[0]
            if name is not None:
                var = symbols.setdefault(("var", name), Var(name))
            else:
                var = Var()
            continue
        if isinstance(item, Dim):
            d = item
        elif item is None:
            d = Dim()
        elif isinstance(item, bool):
            raise ArgumentError(f"invalid dimension {item!r} in shape {list(template)!r}")
        elif isinstance(item, int):
            if item < 0:
                raise ArgumentError(f"negative dimension {item} in shape {list(template)!r}")
            d = Dim(item)
        elif isinstance(item, str):
            d = symbols.setdefault(item, Dim(name=item))
        else:
            raise ArgumentError(f"invalid dimension {item!r} in shape {list(template)!r}")
        (suffix if var is not None else prefix).append(d)
    return Frag(prefix, var, suffix)


def watch(c: Constraint, frag: Frag) -> None:
    """Make ``c`` re-run whenever a node of ``frag`` changes."""
    for node in frag.nodes():
        add_watchers(node.root(), (c,))
