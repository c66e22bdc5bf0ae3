"""Logical models: primitives, composites, terminals and the ``|=`` / ``+=`` composition.

A :class:`Model` holds child models and the :class:`Connection` objects that wire them. Adding a
child binds each of its terminals to a connection of the parent and merges their metadata
(shape, kinds, value); shape rules then propagate only from what changed. If anything
contradicts, the whole addition is rolled back and a :class:`ShapeMismatchError` names the
model path, terminal and both shapes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ...errors import (
    ArgumentTypeError,
    ModelReuseError,
    ShapeMismatchError,
    TerminalError,
    TypeMismatchError,
)
from .. import types as T
from ..ops import CATALOGUE, OpDef
from ..shapes import (
    Constraint,
    Frag,
    PropagationError,
    ShapeConflict,
    Trail,
    frag_from_template,
    propagate,
    schedule,
    unify_frags,
)
from .meta import (
    SCALAR,
    TBD,
    TENSOR,
    Initializer,
    Meta,
    make_kind,
    set_kinds,
    set_value,
    unify_meta,
)
from .symbols import derived_names, readable, readable_in, symbol_names


class NoTerminalError(TerminalError, AttributeError):
    """``model.name`` where the model has no terminal or named connection ``name``."""


class IOKey:
    """Names (and optionally constrains) a terminal: ``IOKey("x", shape=["N", 3])``.

    ``value`` fixes a constant, ``shape`` is a template (ints, symbol names, ``None``,
    ``("V", ...)``), ``type`` is ``float`` / ``int`` / ``bool`` / an ``ml`` dtype,
    ``differentiable=True`` makes an input a trainable parameter and ``expose=True`` keeps a
    consumed connection readable as an output.
    """

    def __init__(self, name: str | None = None, value: Any = TBD, shape: Any = None,
                 type: Any = None, differentiable: bool | None = None,
                 expose: bool | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise ArgumentTypeError(f"IOKey name must be a string, got {name!r}")
        self.name = name
        self.value = value
        self.shape = shape
        self.type = type
        self.differentiable = differentiable
        self.expose = expose

    def __repr__(self) -> str:
        return f"IOKey({self.name!r})"


class Connection:
    """A wire inside one composite model; also the handle of the connection algebra."""

    __slots__ = ("consumers", "expose", "key", "meta", "model", "producer")
    __hash__ = object.__hash__

    def __init__(self, model: BaseModel, key: str | None, meta: Meta) -> None:
        self.model = model
        self.key = key
        self.meta = meta
        self.producer: tuple[BaseModel, str] | None = None
        self.consumers: list[tuple[BaseModel, str]] = []
        self.expose = False

    def __repr__(self) -> str:
        name = self.key or self.model._conn_name(self)
        top = self.model
        while top.parent is not None:
            top = top.parent
        return readable_in(f"<Connection {name!r} of {self.model.path}: {self.meta.describe()}>",
                           (top, ""))

    # ---- the connection algebra: each builds a catalogue primitive in self.model ----
    def _op(self, op: str, *args: Any, **kw: Any) -> Connection:
        return _algebra(self, op, args, kw)

    def __add__(self, o: Any) -> Connection:
        return self._op("add", self, o)

    def __radd__(self, o: Any) -> Connection:
        return self._op("add", o, self)

    def __sub__(self, o: Any) -> Connection:
        return self._op("subtract", self, o)

    def __rsub__(self, o: Any) -> Connection:
        return self._op("subtract", o, self)

    def __mul__(self, o: Any) -> Connection:
        return self._op("multiply", self, o)

    def __rmul__(self, o: Any) -> Connection:
        return self._op("multiply", o, self)

    def __truediv__(self, o: Any) -> Connection:
        return self._op("divide", self, o)

    def __rtruediv__(self, o: Any) -> Connection:
        return self._op("divide", o, self)

    def __floordiv__(self, o: Any) -> Connection:
        return self._op("floor_divide", self, o)

    def __rfloordiv__(self, o: Any) -> Connection:
        return self._op("floor_divide", o, self)

    def __pow__(self, o: Any) -> Connection:
        return self._op("power", self, o)

    def __rpow__(self, o: Any) -> Connection:
        return self._op("power", o, self)

    def __matmul__(self, o: Any) -> Connection:
        return self._op("matmul", self, o)

    def __rmatmul__(self, o: Any) -> Connection:
        return self._op("matmul", o, self)

    def __neg__(self) -> Connection:
        return self._op("negate", self)

    def __abs__(self) -> Connection:
        return self._op("absolute", self)

    def __gt__(self, o: Any) -> Connection:
        return self._op("greater", self, o)

    def __lt__(self, o: Any) -> Connection:
        return self._op("less", self, o)

    def __ge__(self, o: Any) -> Connection:
        return self._op("greater_equal", self, o)

    def __le__(self, o: Any) -> Connection:
        return self._op("less_equal", self, o)

    def __eq__(self, o: Any) -> Connection:  # type: ignore[override]
        return self._op("equal", self, o)

    def __ne__(self, o: Any) -> Connection:  # type: ignore[override]
        return self._op("not_equal", self, o)

    def __and__(self, o: Any) -> Connection:
        return self._op("logical_and", self, o)

    def __or__(self, o: Any) -> Connection:
        return self._op("logical_or", self, o)

    def __xor__(self, o: Any) -> Connection:
        return self._op("logical_xor", self, o)

    def __invert__(self) -> Connection:
        return self._op("logical_not", self)

    def __lshift__(self, o: Any) -> Connection:
        return self._op("shift_left", self, o)

    def __rshift__(self, o: Any) -> Connection:
        return self._op("shift_right", self, o)

    def __getitem__(self, index: Any) -> Connection:
        return self._op("indexer", self, _index_value(index))

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("a Connection cannot be iterated; index it (conn[0]) instead")

    @property
    def shape(self) -> Connection:
        return self._op("shape", self)

    @property
    def T(self) -> Connection:
        return self._op("transpose", self, None)

    def reshape(self, shape: Any) -> Connection:
        return self._op("reshape", self, _tuple_value(self, shape))

    def transpose(self, axes: Any = None) -> Connection:
        return self._op("transpose", self, _tuple_value(self, axes) if axes is not None else None)

    def swapaxes(self, axis1: int, axis2: int) -> Connection:
        return self._op("swap_axes", self, axis1, axis2)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Connection:
        return self._op("flatten", self, start_dim, end_dim)

    def sum(self, axis: Any = None, keepdim: bool = False) -> Connection:
        return self._op("sum", self, axis, keepdim)

    def mean(self, axis: Any = None, keepdim: bool = False) -> Connection:
        return self._op("mean", self, axis, keepdim)

    def max(self, axis: Any = None, keepdim: bool = False) -> Connection:
        return self._op("max", self, axis, keepdim)

    def min(self, axis: Any = None, keepdim: bool = False) -> Connection:
        return self._op("min", self, axis, keepdim)

    def prod(self, axis: Any = None, keepdim: bool = False) -> Connection:
        return self._op("prod", self, axis, keepdim)

    def var(self, axis: Any = None, keepdim: bool = False, correction: float = 0) -> Connection:
        return self._op("variance", self, axis, keepdim, correction)

    def argmax(self, axis: Any = None, keepdim: bool = False) -> Connection:
        return self._op("argmax", self, axis, keepdim)

    def argmin(self, axis: Any = None, keepdim: bool = False) -> Connection:
        return self._op("argmin", self, axis, keepdim)

    def sqrt(self) -> Connection:
        return self._op("sqrt", self)

    def exp(self) -> Connection:
        return self._op("exp", self)

    def log(self) -> Connection:
        return self._op("log", self)

    def abs(self) -> Connection:
        return self._op("absolute", self)

    def sin(self) -> Connection:
        return self._op("sin", self)

    def cos(self) -> Connection:
        return self._op("cos", self)

    def tanh(self) -> Connection:
        return self._op("tanh", self)

    def sigmoid(self) -> Connection:
        return self._op("sigmoid", self)

    def relu(self) -> Connection:
        return self._op("relu", self)

    def cast(self, dtype: Any) -> Connection:
        return self._op("cast", self, T.as_dtype(dtype))

    def item(self) -> Connection:
        return self._op("item", self)

    def tensor(self) -> Connection:
        return self._op("to_tensor", self)

    def size(self, dim: int | None = None) -> Connection:
        return self._op("size", self, dim)


def _index_value(index: Any) -> Any:
    if isinstance(index, Connection):
        return index
    if isinstance(index, tuple) and any(isinstance(i, Connection) for i in index):
        raise ArgumentTypeError(
            "indexing with connections inside a tuple is not supported; index with "
            "constants, or with one connection")
    return index


def _tuple_value(conn: Connection, value: Any) -> Any:
    """A tuple that may hold connections becomes a ``to_tuple`` primitive."""
    if isinstance(value, Connection):
        return value
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple) and any(isinstance(v, Connection) for v in value):
        return _algebra(conn, "to_tuple", value, {})
    return value


def _algebra(anchor: Connection, op_name: str, args: tuple[Any, ...], kw: dict[str, Any]
             ) -> Connection:
    model = anchor.model
    if not isinstance(model, Model):
        raise ModelReuseError(
            f"connection {anchor.key!r} belongs to primitive {model.path}; add it to a Model "
            "before building on its terminals")
    for a in args:
        if isinstance(a, Connection) and a.model is not model:
            raise TerminalError(
                f"cannot combine connections of different models ({a.model.path} and "
                f"{model.path}); connect them inside one model")
    op = CATALOGUE[op_name]
    n = len(args) if op.variadic else None
    names = [t.name for t in op.inputs]
    if op.variadic:
        names = [f"{names[0]}{i + 1}" for i in range(len(args))] + names[1:]
    given = dict(zip(names, args, strict=False))
    given.update(kw)
    # constants of scalar terminals replace the primitive's defaults; the rest is wired
    scalars = {t.name for t in op.inputs if t.kind == SCALAR}
    values = {k: v for k, v in given.items() if k in scalars and not isinstance(v, Connection)}
    prim = Operator(op, n_inputs=n, **values)
    binding = {k: v for k, v in given.items() if k not in values}
    out = Connection(model, None, Meta(None))
    binding[prim.output_names[0]] = out
    model._add(prim.connect(**binding), chain=False, algebra=True, new_conns=[out])
    return out


# ==============================================================================================
# Models
# ==============================================================================================
class ConnectSpec:
    """A model with the terminals it is to be connected to (``model(input="x")``)."""

    __slots__ = ("args", "kwargs", "model")

    def __init__(self, model: BaseModel, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.model = model
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"{self.model!r}({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"


_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class BaseModel:
    """What primitives and composites share: terminals, naming, connect, metadata setters."""

    def __init_subclass__(cls, **kw: Any) -> None:
        """Record each instance's constructor arguments (for ``to_dict``)."""
        super().__init_subclass__(**kw)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def recording_init(self: BaseModel, *args: Any, **kwargs: Any) -> None:
            if "_init_args" not in self.__dict__:  # the outermost constructor only
                self.__dict__["_init_args"] = (args, dict(kwargs))
            init(self, *args, **kwargs)

        cls.__init__ = recording_init  # type: ignore[method-assign]

    def to_dict(self) -> dict[str, Any]:
        """This model as a versioned, JSON-compatible document (``json.dump``-able).

        >>> import json
        >>> from mithril.models import Model, Linear, Relu
        >>> m = Model()
        >>> m |= Linear(4)(input_size=3)
        >>> m += Relu()
        >>> again = Model.from_dict(json.loads(json.dumps(m.to_dict())))
        >>> again.shapes["output"][-1]
        4
        """
        from .serialize import model_to_dict

        return model_to_dict(self)

    @staticmethod
    def from_dict(document: Any) -> BaseModel:
        """Rebuild a model from :meth:`to_dict`'s document. Nothing in the document is
        imported or executed; unknown versions, types or malformed content raise
        ``ModelFileError``."""
        from .serialize import model_from_dict

        return model_from_dict(document)

    def __init__(self, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise ArgumentTypeError(f"model name must be a string, got {name!r}")
        self.name = name
        self.parent: Model | None = None
        self._local_name: str | None = None  # name among its siblings, set when added

    # ---- naming ----
    @property
    def class_name(self) -> str:
        return type(self).__name__.lower()

    @property
    def path(self) -> str:
        parts = []
        m: BaseModel | None = self
        while m is not None:
            parts.append(m._local_name or m.name or m.class_name)
            m = m.parent
        return ".".join(reversed(parts))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r}>"

    # ---- terminals ----
    def interface(self) -> dict[str, Connection]:
        """This model's terminals in order (inputs, then outputs), by name."""
        raise NotImplementedError

    def input_terminals(self) -> list[str]:
        raise NotImplementedError

    def output_terminals(self) -> list[str]:
        raise NotImplementedError

    @property
    def cin(self) -> Connection:
        """The canonical input: what ``+=`` connects the parent's current output to."""
        c = self._canonical("in")
        if c is None:
            raise TerminalError(f"model {self.path} has no canonical input")
        return c

    @property
    def cout(self) -> Connection:
        """The canonical output: what ``+=`` chains the next model onto."""
        c = self._canonical("out")
        if c is None:
            raise TerminalError(f"model {self.path} has no canonical output")
        return c

    def _canonical(self, which: str) -> Connection | None:
        raise NotImplementedError

    def _conn_name(self, conn: Connection) -> str:
        for k, c in self.interface().items():
            if c is conn:
                return k
        return "<internal>"

    def __getattr__(self, name: str) -> Connection:
        if name.startswith("_"):
            raise AttributeError(name)
        iface = self.interface()
        if name in iface:
            return iface[name]
        extra = self._named_internal(name)
        if extra is not None:
            return extra
        raise NoTerminalError(
            f"{type(self).__name__} {self.path!r} has no terminal {name!r}; terminals: "
            f"{', '.join(iface) or '(none)'}. To make a new input {name!r}, name it where it is "
            f"used: IOKey({name!r}) (or the string {name!r}) in the connection algebra, e.g. "
            f"model.x + IOKey({name!r}), or as a child's terminal, e.g. "
            f"Add()(left=..., right={name!r}); model.{name} works from then on")

    def _named_internal(self, name: str) -> Connection | None:
        return None

    # ---- connecting ----
    def connect(self, *args: Any, **kwargs: Any) -> ConnectSpec:
        """Say what this model's terminals connect to in the parent it is added to.

        Positional arguments follow the terminal order (inputs, then outputs).

        >>> from mithril.models import Model, Add
        >>> m = Model()
        >>> m |= Add().connect("a", "b", "out")
        >>> sorted(m.interface())
        ['a', 'b', 'out']
        """
        return ConnectSpec(self, args, kwargs)

    __call__ = connect

    # ---- metadata setters ----
    def _resolve_terminal(self, key: Any) -> Connection:
        if isinstance(key, Connection):
            if key.model is not self:
                raise TerminalError(f"connection {key!r} does not belong to {self.path}")
            return key
        iface = self.interface()
        if key in iface:
            return iface[key]
        extra = self._named_internal(key)
        if extra is not None:
            return extra
        raise TerminalError(f"model {self.path} has no terminal {key!r}; terminals: "
                            f"{', '.join(iface) or '(none)'}")

    def set_shapes(self, shapes: Mapping[Any, Any] | None = None, **kw: Any) -> None:
        """Constrain terminal shapes: ``m.set_shapes(input=["N", 3, 32, 32])``.

        Symbol names are shared across all the terminals of one call.
        """
        items = {**(shapes or {}), **kw}
        symbols: dict[str, Any] = {}
        targets = [(k, self._resolve_terminal(k)) for k in items]
        with _Building(self, "set_shapes"):
            for (k, conn), template in zip(targets, items.values(), strict=True):
                meta = conn.meta.root()
                _guard(self, k, meta, template, lambda m=meta, t=template: _unify_shape(
                    m, frag_from_template(t, symbols)))

    def set_types(self, types: Mapping[Any, Any] | None = None, **kw: Any) -> None:
        """Constrain element types: ``m.set_types(input=float)``."""
        items = {**(types or {}), **kw}
        with _Building(self, "set_types"):
            for k, t in items.items():
                meta = self._resolve_terminal(k).meta
                _guard(self, k, meta, t, lambda m=meta, t=t: set_kinds(m, T.kind_from_type(t)))

    def set_differentiability(self, flags: Mapping[Any, bool] | None = None, **kw: bool) -> None:
        """Mark inputs as trainable (True) or as data (False)."""
        items = {**(flags or {}), **kw}
        for k, flag in items.items():
            meta = self._resolve_terminal(k).meta.root()
            meta.differentiable = bool(flag)

    def set_values(self, values: Mapping[Any, Any] | None = None, **kw: Any) -> None:
        """Fix terminals to constant values."""
        items = {**(values or {}), **kw}
        with _Building(self, "set_values"):
            for k, v in items.items():
                meta = self._resolve_terminal(k).meta
                _guard(self, k, meta, v, lambda m=meta, v=v: set_value(m, _const_value(m, v)))

    # ---- summaries ----
    def summary(self, shapes: Mapping[str, Any] | None = None, types: Any = None,
                depth: int = 1, print_out: bool = True) -> str | None:
        """Print a table of submodels, terminals, shapes, types and parameter counts; with
        ``print_out=False`` return it instead."""
        from .summary import model_summary

        if shapes:
            with Trail() as trail:
                self.set_shapes(shapes)
                with derived_names((self, "")):
                    text = model_summary(self, depth)
                trail.rollback()
        else:
            with derived_names((self, "")):
                text = model_summary(self, depth)
        if print_out:
            print(text)
            return None
        return text

    @property
    def shapes(self) -> dict[str, Any]:
        """Current (possibly symbolic) shapes of the terminals and named connections."""
        out: dict[str, Any] = {}
        conns = dict(self.interface())
        for k, c in getattr(self, "named", {}).items():
            conns.setdefault(k, c)
        for k, c in conns.items():
            m = c.meta.root()
            out[k] = None if m.kind != TENSOR else _shape_list(m.shape)  # type: ignore[arg-type]
        names: dict[int, str] | None = None
        for shape in out.values():
            for i, item in enumerate(shape or ()):
                if isinstance(item, str) and "u" in item:
                    names = symbol_names([(self, "")]) if names is None else names
                    shape[i] = readable(item, names)
        return out


def _shape_list(f: Frag) -> list[Any]:
    n = f.normal()
    items: list[Any] = [repr(d) if d.value is None else d.value for d in n.prefix]
    if n.var is not None:
        items.append(repr(n.var))
        items += [repr(d) if d.value is None else d.value for d in n.suffix]
    return items


class _Building:
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
                error = _propagation_error(err, self.what, self.model, self.scopes)
                self.trail.__exit__(type(err), err, None)
                raise error from None
        self.trail.__exit__(exc_type, exc, tb)
        return False


def _propagation_error(err: PropagationError, context: str = "",
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


def _guard(model: BaseModel, key: Any, meta: Meta, given: Any, fn: Any) -> None:
    before = meta.describe()
    try:
        fn()
    except ShapeConflict as err:
        name = key if isinstance(key, str) else (key.key or "<connection>")
        cls = TypeMismatchError if isinstance(err, KindConflict) or "type" in str(err) or \
            "cannot be" in str(err) else ShapeMismatchError
        raise cls(readable_in(
            f"{model.path}: terminal {name!r} is {before}, cannot be {given!r}: {err}",
            (model, ""))) from None


def _const_value(meta: Meta, value: Any) -> Any:
    if meta.root().kind == TENSOR and not isinstance(value, np.ndarray):
        return np.asarray(value)
    return value


class Operator(BaseModel):
    """A primitive of the catalogue, used like any model (``Add()``, ``Relu()``)."""

    def __init__(self, op: OpDef | str, name: str | None = None, n_inputs: int | None = None,
                 **values: Any) -> None:
        super().__init__(name)
        op = CATALOGUE[op] if isinstance(op, str) else op
        self.op = op
        self._values = dict(values)  # constructor values (for to_dict)
        in_terms = list(op.inputs)
        if op.variadic:
            n = 2 if n_inputs is None else n_inputs
            first = in_terms[0]
            in_terms = [type(first)(f"{first.name}{i + 1}", first.kind, first.kinds,
                                    first.default, first.differentiable, first.optional)
                        for i in range(n)] + in_terms[1:]
        self.in_terms = in_terms
        self.input_names = tuple(t.name for t in in_terms)
        self.output_names = op.output_names
        self.terms = {t.name: t for t in (*in_terms, *op.outputs)}
        self.conns: dict[str, Connection] = {
            t.name: Connection(self, t.name, t.make_meta()) for t in self.terms.values()}
        unknown = set(values) - set(self.input_names)
        if unknown:
            raise TerminalError(f"{type(self).__name__} has no input {sorted(unknown)[0]!r}; "
                                f"inputs: {', '.join(self.input_names)}")
        metas = [self.conns[n].meta for n in (*self.input_names, *self.output_names)]
        with _Building(self, "construct"):
            for t in in_terms:
                v = values.get(t.name, t.default)
                if v is TBD:
                    continue
                meta = self.conns[t.name].meta
                if v is None and t.kind == TENSOR and t.optional:
                    make_kind(meta, SCALAR)  # an absent optional tensor
                    set_value(meta, None)
                    continue
                _guard(self, t.name, meta, v, lambda m=meta, v=v: set_value(m, _const_value(m, v)))
            self.constraint = Constraint(op.rule, metas, self)
            schedule([self.constraint])

    @property
    def class_name(self) -> str:
        return type(self).__name__.lower() if type(self) is not Operator else self.op.name

    def interface(self) -> dict[str, Connection]:
        return self.conns

    def input_terminals(self) -> list[str]:
        return list(self.input_names)

    def output_terminals(self) -> list[str]:
        return list(self.output_names)

    def _canonical(self, which: str) -> Connection | None:
        return self.conns[self.input_names[0] if which == "in" else self.output_names[0]]

    def is_input(self, name: str) -> bool:
        return name in self.input_names


class Model(BaseModel):
    """A composite model: children wired by named connections.

    >>> from mithril.models import Model, Linear, Relu
    >>> m = Model()
    >>> m |= Linear(8)(input_size=4)
    >>> m += Relu()
    >>> m.shapes["output"]  # any leading dims, then 8
    ['(V, ...)', 8]
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.children: list[BaseModel] = []
        self.bindings: dict[int, dict[str, Connection]] = {}  # id(child) -> terminal -> conn
        self.conns: list[Connection] = []
        self.named: dict[str, Connection] = {}
        # the canonical input / output (see _canonical): chosen with set_cin / set_cout, else
        # those of the chain of children (the first child's input, the last child's output)
        self._cin_fixed: Connection | None = None
        self._cout_fixed: Connection | None = None
        self._chain_in: Connection | None = None
        self._chain_out: Connection | None = None
        self._child_names: set[str] = set()
        self._frozen = False
        self._iface: dict[str, Connection] | None = None
        self._roles: dict[str, str] = {}

    # ---- composition ----
    def __ior__(self, other: BaseModel | ConnectSpec) -> Model:
        self._add(other, chain=False)
        return self

    def __iadd__(self, other: BaseModel | ConnectSpec) -> Model:
        self._add(other, chain=True)
        return self

    def extend(self, model: BaseModel, **terminals: Any) -> Model:
        """``m.extend(child, input="x")`` is ``m |= child(input="x")``."""
        return self.__ior__(model.connect(**terminals))

    def _add(self, spec: BaseModel | ConnectSpec, chain: bool, algebra: bool = False,
             new_conns: list[Connection] | None = None) -> None:
        if isinstance(spec, BaseModel):
            spec = ConnectSpec(spec, (), {})
        if not isinstance(spec, ConnectSpec):
            raise ArgumentTypeError(f"can only add models to a Model, got {type(spec).__name__}")
        child = spec.model
        if self._frozen:
            raise ModelReuseError(
                f"model {self.path} is already part of another model; build it completely "
                "before adding it")
        if child is self:
            raise ModelReuseError(f"cannot add model {self.path} to itself")
        if child.parent is not None:
            raise ModelReuseError(
                f"model {child.path} is already part of {child.parent.path}; a model instance "
                "can be added once — create a new instance instead")
        if isinstance(child, Model) and not child.children:
            raise TerminalError(f"cannot add empty model {child.path} to {self.path}: "
                                f"{child._why_empty()}")
        iface = child.interface()
        names = list(iface)
        given: dict[str, Any] = {}
        if len(spec.args) > len(names):
            raise TerminalError(f"{type(child).__name__} has {len(names)} terminals "
                                f"({', '.join(names)}), got {len(spec.args)} positional values")
        for n, v in zip(names, spec.args, strict=False):
            given[n] = v
        for n, v in spec.kwargs.items():
            if n not in iface:
                raise TerminalError(
                    f"{type(child).__name__} has no terminal {n!r}; terminals: {', '.join(names)}")
            if n in given:
                raise TerminalError(f"terminal {n!r} of {type(child).__name__} given twice")
            given[n] = v
        outputs = set(child.output_terminals())
        if chain and self.children:
            cin_name = child._conn_name(child.cin)
            if cin_name not in given:
                if self._cout is None:
                    raise TerminalError(f"model {self.path} has no canonical output to chain "
                                        f"{type(child).__name__} onto")
                given[cin_name] = self._cout

        # resolve every terminal to a connection of this model (new ones only kept on success)
        created: list[Connection] = list(new_conns or [])
        targets: dict[str, Connection] = {}
        keys: dict[str, IOKey] = {}
        for name, child_conn in iface.items():
            value = given.get(name, TBD)
            is_out = name in outputs
            conn = self._target(child, name, value, is_out, child_conn, created, keys)
            targets[name] = conn
        # structure checks before touching any metadata
        seen_outputs: dict[int, str] = {}
        for name, conn in targets.items():
            if name in outputs:
                if conn.producer is not None:
                    prod, term = conn.producer
                    raise TerminalError(
                        f"{self.path}: {conn.key or 'connection'!r} is already the output "
                        f"{term!r} of {prod.path}; {type(child).__name__}.{name} cannot also "
                        "produce it")
                if id(conn) in seen_outputs:
                    raise TerminalError(f"{self.path}: outputs {seen_outputs[id(conn)]!r} and "
                                        f"{name!r} of {type(child).__name__} go to one connection")
                if conn.meta.root().value is not TBD and conn.producer is None and \
                        _is_constant(conn, created):
                    raise TerminalError(f"{self.path}: output {name!r} of "
                                        f"{type(child).__name__} is connected to a constant")
                seen_outputs[id(conn)] = name
        context = f"{self.path}: adding {type(child).__name__} " \
            f"{child.name or child.class_name!r}"
        label = child.name or child.class_name
        # symbols are named after this model's terminals, then the connections being made
        named = ({c.key: c for c in targets.values() if c.key is not None}, "")
        with _Building(self, context, (named, (child, f"{label}."))):
            for name, conn in targets.items():
                child_meta = iface[name].meta
                before = (child_meta.describe(), conn.meta.describe())
                try:
                    unify_meta(child_meta, conn.meta)
                    key = keys.get(name)
                    if key is not None:
                        _apply_iokey(conn.meta, key)
                except ShapeConflict as err:
                    cls = TypeMismatchError if isinstance(err, KindConflict) or \
                        "cannot be connected" in str(err) or "type" in str(err) \
                        else ShapeMismatchError
                    if conn.key:
                        where = f"connection {conn.key!r}"
                    elif isinstance(given.get(name), Connection) or given.get(name) is None:
                        where = f"what it is connected to ({self._conn_name(conn)})"
                    else:
                        where = value_repr(given.get(name))
                    raise cls(readable_in(
                        f"{self.path}: adding {type(child).__name__} {label!r}: its terminal "
                        f"{name!r} is {before[0]} but {where} is {before[1]}: {err}",
                        (self, ""), named, (child, f"{label}."))) from None
        # commit
        self._commit(child, targets, created, chain, algebra)

    def _target(self, child: BaseModel, name: str, value: Any, is_out: bool,
                child_conn: Connection, created: list[Connection], keys: dict[str, IOKey]
                ) -> Connection:
        if isinstance(value, Connection):
            if value.model is not self:
                raise TerminalError(
                    f"terminal {name!r} of {type(child).__name__}: connection {value!r} belongs "
                    f"to {value.model.path}, not to {self.path}")
            return value
        if isinstance(value, str):
            return self._named_conn(value, created)
        if isinstance(value, IOKey):
            keys[name] = value
            if value.name is not None:
                conn = self._named_conn(value.name, created)
            else:
                conn = Connection(self, None, Meta(None))
                created.append(conn)
            if value.expose:
                conn.expose = True
            return conn
        conn = Connection(self, None, Meta(None))
        created.append(conn)
        if value is TBD:
            return conn
        if is_out:
            raise TerminalError(f"output {name!r} of {type(child).__name__} cannot be set to the "
                                f"constant {value!r}")
        kind = child_conn.meta.root().kind
        if isinstance(value, np.ndarray) or (kind == TENSOR and isinstance(
                value, bool | int | float | list | tuple)):
            arr = np.asarray(value)
            conn.meta = Meta.tensor(list(arr.shape), _kind_of_array(arr), value=arr)
        else:
            conn.meta = Meta.scalar(_kind_of_scalar(value), value=value)
        return conn

    def _named_conn(self, name: str, created: list[Connection]) -> Connection:
        conn = self.named.get(name)
        if conn is not None:
            return conn
        for c in created:
            if c.key == name:
                return c
        conn = Connection(self, name, Meta(None))
        created.append(conn)
        return conn

    def _commit(self, child: BaseModel, targets: dict[str, Connection],
                created: list[Connection], chain: bool, algebra: bool) -> None:
        local = child.name or child.class_name
        if child.name is not None and local in self._child_names:
            raise TerminalError(f"model {self.path} already has a submodel named {local!r}")
        if child.name is None:
            base, i = local, 1
            while local in self._child_names:
                local = f"{base}_{i}"
                i += 1
        self._child_names.add(local)
        child._local_name = local
        child.parent = self
        if isinstance(child, Model):
            child._freeze()
        used = {id(c) for c in targets.values()}
        for c in created:
            if id(c) in used or c.key is not None:
                self.conns.append(c)
                if c.key is not None:
                    self.named[c.key] = c
        outputs = set(child.output_terminals())
        for name, conn in targets.items():
            if name in outputs:
                conn.producer = (child, name)
            else:
                conn.consumers.append((child, name))
        self.children.append(child)
        self.bindings[id(child)] = targets
        self._iface = None
        if algebra:
            return
        if not self.children[:-1] or self._chain_in is None:
            cin = child._canonical("in")
            if cin is not None:
                name = child._conn_name(cin)
                if name in targets and targets[name].producer is None:
                    self._chain_in = targets[name]
        cout = child._canonical("out")
        if cout is not None:
            name = child._conn_name(cout)
            if name in targets:
                self._chain_out = targets[name]

    def _why_empty(self) -> str:
        """What to do about this model having no children (in the error of adding it)."""
        needs_seq_len = getattr(self, "_needs_seq_len", None)  # recurrent layers (until #13)
        if callable(needs_seq_len):
            return str(needs_seq_len())
        return "add layers to it (|= or +=) before adding it to another model"

    def _freeze(self) -> None:
        self.interface()
        self._frozen = True

    # ---- terminals ----
    def interface(self) -> dict[str, Connection]:
        if self._iface is not None:
            return self._iface
        inputs: list[tuple[str, Connection]] = []
        outputs: list[tuple[str, Connection]] = []
        taken = set(self.named)
        roles: dict[str, str] = {}
        cin, cout = self._canonical("in"), self._cout_fixed or self._chain_out
        for conn in self.conns:
            if conn.producer is None:
                if conn.key is not None:
                    inputs.append((conn.key, conn))
                elif conn.meta.root().value is TBD:
                    inputs.append((self._auto_name(conn, taken, cin, cout), conn))
            elif conn.key is not None:
                if not conn.consumers or conn.expose:
                    outputs.append((conn.key, conn))
            elif (conn is cout and not conn.consumers) or conn.expose:
                outputs.append((self._auto_name(conn, taken, cin, cout), conn))
        iface = {}
        for k, c in inputs:
            iface[k] = c
            roles[k] = "input"
        for k, c in outputs:
            iface[k] = c
            roles[k] = "output"
        self._iface = iface
        self._roles = roles
        return iface

    def _auto_name(self, conn: Connection, taken: set[str], cin: Connection | None,
                   cout: Connection | None) -> str:
        if conn is cin and "input" not in taken:
            name = "input"
        elif conn is cout and "output" not in taken:
            name = "output"
        else:
            child, term = conn.consumers[0] if conn.producer is None else conn.producer
            name = f"{child._local_name}.{term}"
        base, i = name, 1
        while name in taken:
            name = f"{base}_{i}"
            i += 1
        taken.add(name)
        return name

    def input_terminals(self) -> list[str]:
        self.interface()
        return [k for k, r in self._roles.items() if r == "input"]

    def output_terminals(self) -> list[str]:
        self.interface()
        return [k for k, r in self._roles.items() if r == "output"]

    def _canonical(self, which: str) -> Connection | None:
        """The canonical input / output, by one rule (docs/errors.md, "Canonical input and
        output"):

        input: the one chosen with ``set_cin``; else the input terminal named ``"input"``; else
        the canonical input of the first child, if it is still an input; else the first input
        created; never a parameter (an input declared differentiable). Output: the one chosen
        with ``set_cout``; else the output terminal named ``"output"``; else the canonical
        output of the last child added.
        """
        if which == "in":
            if self._cin_fixed is not None:
                return self._cin_fixed
            for conn in (self.named.get("input"), self._chain_in):
                if conn is not None and _is_data_input(conn):
                    return conn
            return next((c for c in self.conns if _is_data_input(c)), None)
        if self._cout_fixed is not None:
            return self._cout_fixed
        named = self.named.get("output")
        if named is not None and named.producer is not None and (
                not named.consumers or named.expose):
            return named
        return self._chain_out

    @property
    def _cin(self) -> Connection | None:
        return self._canonical("in")

    @property
    def _cout(self) -> Connection | None:
        return self._canonical("out")

    def _named_internal(self, name: str) -> Connection | None:
        return self.named.get(name)

    def set_cin(self, conn: Connection | str) -> None:
        """Choose the canonical input (what ``+=`` feeds when this model is chained)."""
        self._cin_fixed = self._resolve_terminal(conn)
        self._iface = None

    def set_cout(self, conn: Connection | str) -> None:
        """Choose the canonical output (what the next ``+=`` chains onto)."""
        self._cout_fixed = self._resolve_terminal(conn)
        self._iface = None

    def iter_children(self) -> Iterator[tuple[BaseModel, dict[str, Connection]]]:
        for child in self.children:
            yield child, self.bindings[id(child)]

    def set_initializer(self, terminal: str, kind: str, fan_in: list[Any] | None = None) -> None:
        """Tell ``randomize_params`` how to fill a parameter terminal (see ``Initializer``)."""
        meta = self._resolve_terminal(terminal).meta.root()
        meta.init = Initializer(kind, fan_in)


def value_repr(value: Any) -> str:
    if isinstance(value, IOKey):
        return repr(value)
    if value is TBD or value is None:
        return "the new connection"
    return f"the value {value!r}"


def _is_data_input(conn: Connection) -> bool:
    """An input that may be a canonical input: nothing produces it, it is not a constant and
    not a parameter."""
    r = conn.meta.root()
    return conn.producer is None and r.value is TBD and r.differentiable is not True


def _is_constant(conn: Connection, created: list[Connection]) -> bool:
    return any(c is conn for c in created) or conn.key is None


def _kind_of_array(arr: np.ndarray) -> int:
    if arr.dtype == np.bool_:
        return T.BOOL
    if np.issubdtype(arr.dtype, np.integer):
        return T.INT
    return T.FLOAT


def _kind_of_scalar(value: Any) -> int:
    if isinstance(value, bool):
        return T.BOOL
    if isinstance(value, int):
        return T.INT
    if isinstance(value, float):
        return T.FLOAT
    if isinstance(value, tuple | list) and value and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return T.INT
    return T.ANY


class KindConflict(ShapeConflict):
    """A shape given for a terminal that is not a tensor (a list, a tuple, a number)."""


def _unify_shape(meta: Meta, frag: Frag) -> None:
    """Give a terminal a shape: it becomes a tensor if still undecided, or must be one."""
    r = meta.root()
    if r.kind is not None and r.kind != TENSOR:
        raise KindConflict("it is a scalar value (a number, list or tuple, not a tensor), so "
                           "it has no shape: give shapes only to tensor terminals")
    if r.kind is None:
        make_kind(r, TENSOR)
    unify_frags(meta.root().shape, frag)  # type: ignore[arg-type]


def _apply_iokey(meta: Meta, key: IOKey) -> None:
    if key.shape is not None:
        _unify_shape(meta, frag_from_template(key.shape))
    if key.type is not None:
        set_kinds(meta, T.kind_from_type(key.type))
    if key.value is not TBD:
        r = meta.root()
        set_value(r, _const_value(r, key.value))
    if key.differentiable is not None:
        r = meta.root()
        from ..shapes import _set_attr

        _set_attr(r, "differentiable", key.differentiable)
