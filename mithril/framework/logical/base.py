"""What every model shares (:class:`BaseModel`): naming, terminals, ``connect`` and the
metadata setters (``set_shapes``, ``set_types``, ...)."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ...errors import ArgumentTypeError, ModelReuseError, TerminalError
from .. import types as T
from ..shapes import Trail, frag_from_template
from .building import Building, const_value, guard, shape_list, unify_shape
from .connection import Connection, ConnectionAlgebra, Expr, IOKey
from .meta import TBD, TENSOR, set_kinds, set_value
from .symbols import derived_names, readable, symbol_names

if TYPE_CHECKING:
    from .model import Model


class NoTerminalError(TerminalError, AttributeError):
    """``model.name`` where the model has no terminal or named connection ``name``."""


class ConnectSpec(ConnectionAlgebra):
    """A model with the terminals it is to be connected to (``model(input="x")``).

    Added with ``parent |= spec``; or used in the functional style, as the model's output
    connection (``y = Relu()(input=Linear(4)(input=x))``, ``a, b = Split(...)(input=x)``):
    the model is then added to the model of the connections it reads (a new one if it reads
    only IOKeys) and the spec stands for its canonical output (``Model.create`` names them).
    """

    __slots__ = ("args", "kwargs", "model")
    __hash__ = object.__hash__

    def __init__(self, model: BaseModel, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.model = model
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"{self.model!r}({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"

    # ---- the functional style ----
    def _op(self, op: str, *args: Any, **kw: Any) -> Any:
        conn = self.output_connection()
        return conn._op(op, *(conn if a is self else a for a in args), **kw)

    def __iter__(self) -> Iterator[Connection]:
        return iter(self.output_connections())

    def attach(self) -> BaseModel:
        """Add the model where the connections it reads live (once) and return that model."""
        from .model import Model

        if self.model.parent is not None:
            return self.model.parent.algebra_home()
        home = None
        for value in (*self.args, *self.kwargs.values()):
            home = home_of(value)
            if home is not None:
                break
        if not isinstance(home, Model):  # only IOKeys and constants: a new model holds it
            home = Model()
            home.functional_home = True  # joins the model it is combined with (absorb)
        home |= self
        return home

    def output_connection(self) -> Connection:
        """The model's canonical output, as a connection of the model it was added to."""
        home = self.attach()
        return home.lift(self.model.cout)

    def output_connections(self) -> list[Connection]:
        """Every output of the model in order, as connections of the model it was added to."""
        home = self.attach()
        iface = self.model.interface()
        return [home.lift(iface[n]) for n in self.model.output_terminals()]


def home_of(value: Any) -> BaseModel | None:
    """The model a functional value (connection, spec, expression, tuple of them) lives in."""
    if isinstance(value, Connection):
        return value.model.algebra_home()
    if isinstance(value, ConnectSpec):
        return value.attach()
    if isinstance(value, IOKey):  # an IOKey already used in a model: that model
        ref = value.__dict__.get("_home")
        home = ref() if ref is not None else None
        return home.algebra_home() if home is not None else None
    if isinstance(value, tuple | list):
        values: Any = value
    elif isinstance(value, Expr):
        values = value.args
    else:
        return None
    for v in values:
        home = home_of(v)
        if home is not None:
            return home
    return None


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

        cls.__init__ = recording_init

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

    @property
    def canonical_input(self) -> Connection:
        """The reference Mithril's older name for :attr:`cin` (the same connection).

        >>> from mithril.models import Linear
        >>> lin = Linear(2)
        >>> lin.canonical_input is lin.cin, lin.canonical_output is lin.cout
        (True, True)
        """
        return self.cin

    @property
    def canonical_output(self) -> Connection:
        """The reference Mithril's older name for :attr:`cout` (the same connection)."""
        return self.cout

    def _canonical(self, which: str) -> Connection | None:
        raise NotImplementedError

    def canonical_inputs(self) -> list[str]:
        """The terminals ``+=`` may feed, in order of preference (the first one not given)."""
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

    def apply_op(self, anchor: Connection, op_name: str, args: tuple[Any, ...],
                 kw: dict[str, Any]) -> Connection:
        """The connection algebra (``anchor + x``): only a composite :class:`Model` can hold
        the primitive it builds."""
        raise ModelReuseError(
            f"connection {anchor.key!r} belongs to primitive {self.path}; add it to a Model "
            "before building on its terminals")

    # ---- metadata setters ----
    def lift(self, conn: Connection, what: str = "") -> Connection:
        """``conn`` as a connection of this model. A primitive has only its own terminals;
        a composite also lifts the connections of the models inside it (``Model.lift``)."""
        if conn.model is not self:
            raise TerminalError(f"{what}connection {conn!r} belongs to {conn.model.path}, not "
                                f"to {self.path}")
        return conn

    def algebra_home(self) -> BaseModel:
        """The model the connection algebra on this model's connections builds in: this model
        while it is open, else (once added to another model) the innermost enclosing model
        that still is."""
        m: BaseModel = self
        while m.parent is not None and not m.open_for_algebra():
            m = m.parent
        return m

    def open_for_algebra(self) -> bool:
        """Whether primitives may still be added to this model (only an unfrozen composite)."""
        return False

    def _resolve_terminal(self, key: Any) -> Connection:
        if isinstance(key, Connection):
            return self.lift(key)
        iface = self.interface()
        if key in iface:
            return iface[key]
        extra = self._named_internal(key)
        if extra is not None:
            return extra
        raise TerminalError(f"model {self.path} has no terminal {key!r}; terminals: "
                            f"{', '.join(iface) or '(none)'}{_fixed_terminal_note(self, key)}")

    def set_shapes(self, shapes: Mapping[Any, Any] | None = None, **kw: Any) -> None:
        """Constrain terminal shapes: ``m.set_shapes(input=["N", 3, 32, 32])``.

        Symbol names are shared across all the terminals of one call.
        """
        items = {**(shapes or {}), **kw}
        symbols: dict[str, Any] = {}
        targets = [(k, self._resolve_terminal(k)) for k in items]
        with Building(self, "set_shapes"):
            for (k, conn), template in zip(targets, items.values(), strict=True):
                meta = conn.meta.root()
                guard(self, k, meta, template, lambda m=meta, t=template: unify_shape(
                    m, frag_from_template(t, symbols)))

    def set_types(self, types: Mapping[Any, Any] | None = None, **kw: Any) -> None:
        """Constrain element types: ``m.set_types(input=float)``."""
        items = {**(types or {}), **kw}
        with Building(self, "set_types"):
            for k, t in items.items():
                meta = self._resolve_terminal(k).meta
                guard(self, k, meta, t, lambda m=meta, t=t: set_kinds(m, T.kind_from_type(t)))

    def set_differentiability(self, flags: Mapping[Any, bool] | None = None, **kw: bool) -> None:
        """Mark inputs as trainable (True) or as data (False)."""
        items = {**(flags or {}), **kw}
        for k, flag in items.items():
            meta = self._resolve_terminal(k).meta.root()
            meta.differentiable = bool(flag)

    def set_values(self, values: Mapping[Any, Any] | None = None, **kw: Any) -> None:
        """Fix terminals to constant values."""
        items = {**(values or {}), **kw}
        with Building(self, "set_values"):
            for k, v in items.items():
                meta = self._resolve_terminal(k).meta
                guard(self, k, meta, v, lambda m=meta, v=v: set_value(m, const_value(m, v)))

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
            out[k] = None if m.kind != TENSOR else shape_list(m.shape)
        names: dict[int, str] | None = None
        for shape in out.values():
            for i, item in enumerate(shape or ()):
                if isinstance(item, str) and "u" in item:
                    names = symbol_names([(self, "")]) if names is None else names
                    shape[i] = readable(item, names)
        return out


def _fixed_terminal_note(model: BaseModel, key: Any) -> str:
    """Where ``key`` names a terminal of a submodel that holds a fixed value (``LeakyRelu()``'s
    ``slope``, set by its constructor): a sentence saying so, else ``""``."""
    stack = [model]
    while stack:
        m = stack.pop()
        for child, binding in getattr(m, "iter_children", lambda: ())():
            conn = binding.get(key)
            value = None if conn is None else conn.meta.root().value
            if conn is not None and value is not TBD:
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                return (f"; {key!r} of {type(child).__name__} {child.path!r} is fixed to "
                        f"{shown} (by its constructor or a connection), so it is not an input")
            stack.append(child)
    return ""

