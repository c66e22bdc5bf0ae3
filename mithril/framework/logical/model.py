"""Composite models: :class:`Model` and the ``|=`` / ``+=`` composition.

A :class:`Model` holds child models and the :class:`Connection` objects that wire them. Adding a
child binds each of its terminals to a connection of the parent and merges their metadata
(shape, kinds, value); shape rules then propagate only from what changed. If anything
contradicts, the whole addition is rolled back and a :class:`ShapeMismatchError` names the
model path, terminal and both shapes.

Connections and ``IOKey`` live in ``connection.py``, what all models share in ``base.py``,
primitives in ``primitive.py`` and the error translation in ``building.py``; the names other
modules import from here are re-exported.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from ...errors import ArgumentTypeError, ModelReuseError, TerminalError
from ..ops import CATALOGUE
from ..shapes import ShapeConflict
from .base import BaseModel, ConnectSpec, home_of
from .building import Building, apply_iokey, conflict_error_class
from .connection import Connection, ConnectionAlgebra, Expr, IOKey, advanced_index, built_exprs
from .constants import (
    is_constant,
    is_data_input,
    kind_of_array,
    kind_of_scalar,
    value_repr,
)
from .meta import SCALAR, TBD, TENSOR, Initializer, Meta, unify_meta
from .primitive import Operator
from .symbols import readable_in

#: re-exported: other modules import these from here
__all__ = ["BaseModel", "ConnectSpec", "Connection", "IOKey", "Model", "Operator"]


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
        self._more_cins: list[Connection] = []  # further canonical inputs (set_cin)
        self._chain_in: Connection | None = None
        self._chain_out: Connection | None = None
        self._child_names: set[str] = set()
        self._frozen = False
        self._iface: dict[str, Connection] | None = None
        self._roles: dict[str, str] = {}
        #: expressions of IOKeys built here (materialize): id -> (expression, output)
        self._built: dict[int, tuple[Expr, Connection]] = {}

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

    def attach(self, spec: BaseModel | ConnectSpec, outputs: list[Connection]) -> None:
        """Add a child whose outputs are wired to ``outputs``, connections of this model made
        for them (``Connection(model, None, Meta(None))``): how model builders such as
        ``from_torch`` add a step and keep its output to wire further steps.

        >>> import mithril as ml
        >>> from mithril.framework.logical.connection import Connection
        >>> from mithril.framework.logical.meta import Meta
        >>> m = ml.Model()
        >>> out = Connection(m, None, Meta(None))
        >>> m.attach(ml.models.Relu()(input="x", output=out), [out])
        >>> m.attach(ml.models.Sigmoid()(input=out, output="y"), [])
        >>> sorted(m.interface())
        ['x', 'y']
        """
        self._add(spec, chain=False, algebra=True, new_conns=outputs)

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
        prev_out = self._cout if self.children and not algebra else None
        if chain and self.children:
            # the first canonical input still free (Add: left, else right)
            free = [n for n in child.canonical_inputs() if n not in given]
            if free:
                if self._cout is None:
                    raise TerminalError(f"model {self.path} has no canonical output to chain "
                                        f"{type(child).__name__} onto")
                given[free[0]] = self._cout

        # expressions of IOKeys first: a sibling value naming the same IOKey finds their terminal
        given = {n: built_exprs(v, self.materialize) for n, v in given.items()}
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
                        is_constant(conn, created):
                    raise TerminalError(f"{self.path}: output {name!r} of "
                                        f"{type(child).__name__} is connected to a constant")
                seen_outputs[id(conn)] = name
        context = f"{self.path}: adding {type(child).__name__} " \
            f"{child.name or child.class_name!r}"
        label = child.name or child.class_name
        # symbols are named after this model's terminals, then the connections being made
        named = ({c.key: c for c in targets.values() if c.key is not None}, "")
        with Building(self, context, (named, (child, f"{label}."))):
            for name, conn in targets.items():
                child_meta = iface[name].meta
                before = (child_meta.describe(), conn.meta.describe())
                try:
                    unify_meta(child_meta, conn.meta)
                    key = keys.get(name)
                    if key is not None:
                        apply_iokey(conn.meta, key)
                except ShapeConflict as err:
                    cls = conflict_error_class(err)
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
        self._commit(child, targets, created, chain, algebra, prev_out)

    # ---- the connection algebra ----
    def apply_op(self, anchor: Connection | None, op_name: str, args: tuple[Any, ...],
                 kw: dict[str, Any]) -> Connection:
        """Add the catalogue primitive ``op_name`` reading ``args`` (connections of this model
        or constants) and return its output connection: what ``a + b``, ``a[0]``,
        ``a.reshape(...)`` do.

        >>> from mithril.models import Model, Relu
        >>> m = Model()
        >>> m |= Relu()(input="x", output="y")
        >>> z = m.apply_op(m.y, "add", (m.y, 1.0), {})
        >>> z.model is m
        True
        """
        model = self
        if op_name == "indexer" and len(args) == 2 and isinstance(args[1], tuple) and any(
                isinstance(i, ConnectionAlgebra) for i in args[1]):
            return advanced_index(self, anchor, args[0], args[1])
        # expressions of IOKeys are built here first
        args = tuple(self.materialize(a) if isinstance(a, Expr) else
                     a.output_connection() if isinstance(a, ConnectSpec) else a for a in args)
        # connections of models inside this one are used through their bindings here (lift
        # first adds a functional model begun apart, on other IOKeys: absorb)
        try:
            args = tuple(self.lift(a) if isinstance(a, Connection) else a for a in args)
        except TerminalError:
            other = next(a for a in args if isinstance(a, Connection) and not self._holds(a))
            raise TerminalError(
                f"cannot combine connections of different models ({other.model.path} and "
                f"{model.path}); connect them inside one model") from None
        op = CATALOGUE[op_name]
        n = len(args) if op.variadic else None
        names = [t.name for t in op.inputs]
        if op.variadic:
            names = [f"{names[0]}{i + 1}" for i in range(len(args))] + names[1:]
        given = dict(zip(names, args, strict=False))
        given.update(kw)
        # constants of scalar terminals replace the primitive's defaults; the rest is wired
        scalars = {t.name for t in op.inputs if t.kind == SCALAR}
        values = {k: v for k, v in given.items()
                  if k in scalars and not isinstance(v, Connection | IOKey)}
        binding = {k: v for k, v in given.items() if k not in values}
        # a wired scalar terminal (clamp's min from a connection) drops its default constant
        prim = Operator(op, n_inputs=n, **values, **{k: TBD for k in binding if k in scalars})
        out = Connection(model, None, Meta(None))
        binding[prim.output_names[0]] = out
        model._add(prim.connect(**binding), chain=False, algebra=True, new_conns=[out])
        return out

    def absorb(self, model: BaseModel) -> None:
        """Add the functional model that ``model`` belongs to (one a call reading only
        IOKeys began, ``Buffer()(input=IOKey("h"))``) into this one, its inputs joined to
        this model's terminals of the same names, as the reference's IOKeys of one name are
        one terminal; a model not begun that way is left alone.

        >>> from mithril import IOKey
        >>> from mithril.models import Buffer, Relu
        >>> h = Buffer()(input=IOKey("h"))
        >>> y = Relu()(input=IOKey("x")) + h
        >>> sorted(Model.create(y=y).input_terminals())
        ['h', 'x']
        """
        top = model
        while top.parent is not None:
            top = top.parent
        if top is self or not getattr(top, "functional_home", False) or top._holds_model(self):
            return
        outs = {n: IOKey() for n in top.output_terminals()}  # unnamed here
        kept = self._cout_fixed, self._chain_out  # this model's canonical output stays
        self |= top(**{n: n for n in top.input_terminals()}, **outs)
        self._cout_fixed, self._chain_out = kept
        self._iface = None

    def _holds_model(self, model: BaseModel) -> bool:
        """Whether ``model`` is this model or a model inside it."""
        m: BaseModel | None = model
        while m is not None and m is not self:
            m = m.parent
        return m is self

    # ---- connections of models inside this one ----
    def open_for_algebra(self) -> bool:
        return not self._frozen

    def _holds(self, conn: Connection) -> bool:
        """Whether ``conn`` belongs to this model or to a model inside it."""
        return self._holds_model(conn.model)

    def lift(self, conn: Connection, what: str = "") -> Connection:
        """This model's connection for ``conn``: ``conn`` itself, or, for a connection of a
        model added inside this one (at any depth), the connection of this model it is bound
        to. A child's internal connection (not one of its terminals) becomes its output first.

        >>> from mithril.models import Model, Relu, Add
        >>> down = Model()
        >>> down |= Relu()(input="input", output="output")
        >>> block = Model()
        >>> block |= down(input="x")
        >>> block |= Add()(left=down.cout, right="x", output="y")   # down's output, in block
        >>> block.lift(down.cout) is block.bindings[id(down)]["output"]
        True
        >>> sorted(block.interface())
        ['x', 'y']
        """
        if conn.model is self:
            return conn
        if not self._holds(conn):  # a functional model begun apart joins this one
            self.absorb(conn.model)
        if not self._holds(conn):
            raise TerminalError(f"{what}connection {conn!r} belongs to {conn.model.path}, not "
                                f"to {self.path} or a model inside it")
        inner: list[BaseModel] = []
        m = conn.model
        while m is not self:
            inner.append(m)
            assert m.parent is not None
            m = m.parent
        for child in inner:  # from the connection's own model outwards
            parent = child.parent
            assert parent is not None
            conn = parent._bound(child, conn)
        return conn

    def _bound(self, child: BaseModel, conn: Connection) -> Connection:
        """The connection of this model that ``child``'s connection ``conn`` is bound to."""
        for name, c in child.interface().items():
            if c is conn:
                return self.bindings[id(child)][name]
        if not isinstance(child, Model) or conn.producer is None:
            raise TerminalError(f"connection {conn!r} is not a terminal of {child.path}")
        # an internal value of the child: exposed as its output, bound to a new connection here
        conn.expose = True
        child._iface = None
        name = child._conn_name(conn)
        new = Connection(self, None, Meta(None))
        with Building(self, f"using {child.path}.{name}"):
            unify_meta(conn.meta, new.meta)
        new.producer = (child, name)
        self.conns.append(new)
        self.bindings[id(child)][name] = new
        self._iface = None
        return new

    def materialize(self, expr: Expr) -> Connection:
        """Build an expression of IOKeys (``IOKey("x").T * 2``) in this model and return its
        output connection; the same expression object is built once per model.

        >>> from mithril import IOKey
        >>> from mithril.models import Model, Relu
        >>> m = Model()
        >>> m |= Relu()(input="x", output="y")
        >>> e = IOKey("x") + IOKey("y")
        >>> m.materialize(e) is m.materialize(e)
        True
        """
        done = self._built.get(id(expr))
        if done is not None and done[0] is expr:
            return done[1]
        args = tuple(self.materialize(a) if isinstance(a, Expr) else a for a in expr.args)
        anchor = next((a for a in args if isinstance(a, Connection)), None)
        out = self.apply_op(anchor, expr.op, args, dict(expr.kw))
        if expr.shape_template is not None:  # ``h[0].set_shapes([...])`` before it was built
            self.set_shapes({out: expr.shape_template})
        self._built[id(expr)] = (expr, out)
        return out

    def find_connection(self, key: str | Connection | IOKey) -> Connection:
        """The existing connection ``key`` names: a terminal or named connection of this model,
        ``"child.terminal"`` for a terminal of a child, or a connection of this model or of a
        model inside it. A name that matches nothing raises ``TerminalError`` listing the
        candidates (never a new input).

        >>> from mithril.models import Model, Relu
        >>> m = Model()
        >>> m |= Relu()(input="x", output="y")
        >>> m.find_connection("y") is m.y
        True
        >>> m.find_connection("z")
        Traceback (most recent call last):
        ...
        mithril.errors.TerminalError: model model has no connection 'z'; candidates: x, y
        """
        if isinstance(key, Connection):
            return self.lift(key)
        if isinstance(key, IOKey):
            if key.name is None:
                raise TerminalError("an IOKey without a name names no connection")
            key = key.name
        if not isinstance(key, str):
            raise ArgumentTypeError(f"a connection or its name, got {key!r}")
        iface = self.interface()
        conn = self.named.get(key) or iface.get(key)
        if conn is not None:
            return conn
        child_name, _, term = key.rpartition(".")
        for child in self.children:
            if child._local_name == child_name and term in child.interface():
                return self.lift(child.interface()[term])
        candidates = list(dict.fromkeys([*iface, *self.named]))
        raise TerminalError(f"model {self.path} has no connection {key!r}; candidates: "
                            f"{', '.join(candidates) or '(none)'}")

    @classmethod
    def create(cls, *outputs: Connection | ConnectSpec, name: str | None = None,
               **named: Connection | ConnectSpec) -> Model:
        """The model built in the functional style that holds ``outputs``, with them exposed
        (``named`` under their keyword names).

        >>> from mithril import IOKey
        >>> from mithril.models import Linear, Relu
        >>> h = Linear(4)(input=IOKey("input", shape=[2, 3]))
        >>> m = Model.create(output=Relu()(input=h), hidden=h, name="mlp")
        >>> m.name, m.output_terminals(), m.shapes["output"]
        ('mlp', ['output', 'hidden'], [2, 4])
        """
        def connection(v: Any) -> Any:
            if isinstance(v, ConnectSpec):
                return v.output_connection()
            if isinstance(v, Expr):  # algebra still on IOKeys: built where they are used
                home = home_of(v)
                if not isinstance(home, Model):
                    home = Model()
                return home.materialize(v)
            return v

        conns = {k: connection(v) for k, v in named.items()}
        plain = [connection(v) for v in outputs]
        homes = {id(c.model.algebra_home()): c.model.algebra_home()
                 for c in [*plain, *conns.values()]}
        if len(homes) > 1:  # functional models begun apart (on other IOKeys) join the first
            first = next(iter(homes.values()))
            if isinstance(first, Model):
                for other in list(homes.values())[1:]:
                    first.absorb(other)
                if all(first._holds(c) for c in [*plain, *conns.values()]):
                    plain = [first.lift(c) for c in plain]
                    conns = {k: first.lift(c) for k, c in conns.items()}
                    homes = {id(first): first}
        if len(homes) != 1:
            raise TerminalError(f"Model.create needs outputs of one functional model, got "
                                f"{len(homes)} models")
        home = next(iter(homes.values()))
        if not isinstance(home, cls):
            raise ArgumentTypeError(f"the outputs belong to {home.path}, not a {cls.__name__}")
        if name is not None:
            home.name = name
        home.expose_keys(*plain, **conns)
        # the outputs in the order given (``a, b = f(...)(input=x)`` unpacks them so)
        iface = home.interface()
        outs = [iface[k] for k in [c.key for c in plain] + list(conns) if k in iface]
        ids = {id(c) for c in outs}
        home.conns = [c for c in home.conns if id(c) not in ids] + outs
        home._iface = None
        return home

    def expose_keys(self, *keys: str | Connection, **named: str | Connection) -> None:
        """Make existing connections outputs of this model (readable after compiling), also
        when something inside the model consumes them: ``m.expose_keys("h")``, or
        ``m.expose_keys(hidden=child.output)`` to expose under a new name. A name that matches
        nothing raises ``TerminalError`` naming the candidates.

        >>> from mithril.models import Model, Relu
        >>> m = Model()
        >>> m |= Relu()(input="x", output="h")
        >>> m += Relu()(output="y")
        >>> m.expose_keys("h")
        >>> m.output_terminals()
        ['h', 'y']
        """
        if self._frozen:
            raise ModelReuseError(f"model {self.path} is already part of another model; expose "
                                  "its keys before adding it")
        todo = [(None, k) for k in keys] + list(named.items())
        conns = [(name, self.find_connection(k)) for name, k in todo]  # all found, or nothing
        aliases = []
        named_here: set[int] = set()  # one connection given twice here: the second an alias
        for name, conn in conns:
            if name is not None and conn.key != name:
                other = self.named.get(name) or self.interface().get(name)
                if other is not None and other is not conn and other.key is not None:
                    raise TerminalError(f"{self.path}: the name {name!r} is already taken")
                if conn.key is not None or id(conn) in named_here:
                    aliases.append((name, conn))
                else:
                    named_here.add(id(conn))
        for name, conn in aliases:
            # a named connection exposed under a second name (the reference's
            # ``tm.expose_keys(predictions=model.cout)``): an identity output of that name
            alias = self.apply_op(conn, "buffer", (conn,), {})
            alias.key = name
            self.named[name] = alias
            alias.expose = True
        alias_ids = {(name, id(conn)) for name, conn in aliases}
        conns = [(name, conn) for name, conn in conns if (name, id(conn)) not in alias_ids]
        for name, conn in conns:
            if name is not None and conn.key is None:
                conn.key = name
                self.named[name] = conn
            conn.expose = True
        self._iface = None

    def _target(self, child: BaseModel, name: str, value: Any, is_out: bool,
                child_conn: Connection, created: list[Connection], keys: dict[str, IOKey]
                ) -> Connection:
        if isinstance(value, Expr):
            return self.materialize(value)
        if isinstance(value, ConnectSpec):  # the functional style: the model's output
            value = value.output_connection()
        if isinstance(value, Connection):
            return self.lift(value, f"terminal {name!r} of {type(child).__name__}: ")
        if isinstance(value, tuple | list) and any(
                isinstance(v, Connection | Expr | ConnectSpec) for v in value):
            # (B, L, -1) with connections inside: a to_tuple / to_list primitive builds it
            parts = tuple(self.materialize(v) if isinstance(v, Expr) else
                          self.lift(v.output_connection()) if isinstance(v, ConnectSpec) else
                          self.lift(v) if isinstance(v, Connection) else v for v in value)
            anchor = next(v for v in parts if isinstance(v, Connection))
            return self.apply_op(anchor, "to_tuple" if isinstance(value, tuple) else "to_list",
                                 parts, {})
        if isinstance(value, str):
            return self._named_conn(value, created)
        if isinstance(value, IOKey):
            keys[name] = value
            # the functional style: a later call reading this IOKey joins this model (as the
            # reference's IOKey, a connection once used)
            value.__dict__["_home"] = weakref.ref(self)
            if value.name is not None:
                conn = self._named_conn(value.name, created)
            else:
                conn = Connection(self, None, Meta(None))
                created.append(conn)
            if value.expose or (is_out and value.name is not None and value.expose is None):
                # a named IOKey given as an output names and exposes it (the reference's
                # ``output=IOKey("pos_bias")`` stays readable when later models read it too)
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
            conn.meta = Meta.tensor(list(arr.shape), kind_of_array(arr), value=arr)
        else:
            conn.meta = Meta.scalar(kind_of_scalar(value), value=value)
        return conn

    def _named_conn(self, name: str, created: list[Connection]) -> Connection:
        conn = self.named.get(name)
        if conn is not None:
            return conn
        for c in created:
            if c.key == name:
                return c
        # an input already known by that name without a key of its own (``wte.weight``, a
        # child's parameter): the same connection, so ``weight="wte.weight"`` ties weights
        auto = self.interface().get(name) if self.children else None
        if auto is not None and auto.key is None and auto.producer is None:
            return auto
        conn = Connection(self, name, Meta(None))
        created.append(conn)
        return conn

    def _commit(self, child: BaseModel, targets: dict[str, Connection],
                created: list[Connection], chain: bool, algebra: bool,
                prev_out: Connection | None = None) -> None:
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
                if chain and prev_out is not None and any(
                        targets[n] is prev_out for n in targets if n not in outputs):
                    # ``+=`` chained the new child onto the canonical output: as in the
                    # reference, the child's output is the canonical one now, also past a
                    # ``set_cout`` choice (``|=`` keeps that choice)
                    self._cout_fixed = None

    def _why_empty(self) -> str:
        """What to do about this model having no children (in the error of adding it)."""
        needs_seq_len = getattr(self, "_needs_seq_len", None)  # recurrent layers (until #13)
        if callable(needs_seq_len):
            return str(needs_seq_len())
        return "add layers to it (|= or +=) before adding it to another model"

    def __deepcopy__(self, memo: dict[int, Any]) -> Model:
        """A copy with its own children and connections (``deepcopy(block)``, then add both):
        the tables keyed by a child's identity are keyed by the copies'."""
        import copy

        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            new.__dict__[k] = copy.deepcopy(v, memo)
        new.bindings = {id(memo[id(old)]): new.bindings[id(old)] for old in self.children}
        new._built = {}
        return new

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
                if conn is not None and is_data_input(conn):
                    return conn
            return next((c for c in self.conns if is_data_input(c)), None)
        if self._cout_fixed is not None:
            return self._cout_fixed
        named = self.named.get("output")
        if named is not None and named.producer is not None and (
                not named.consumers or named.expose):
            return named
        return self._chain_out

    def canonical_inputs(self) -> list[str]:
        """The terminals ``+=`` may feed, in order: the canonical input, then the others
        chosen with ``set_cin`` that are still inputs."""
        c = self._canonical("in")
        more = [m for m in self._more_cins if m is not c and m.producer is None]
        return [self._conn_name(x) for x in ([] if c is None else [c]) + more]

    @property
    def child_names(self) -> set[str]:
        """The local names this model's submodels hold, and names kept free for submodels a
        builder adds later (add to the set to keep one; unnamed children are numbered around
        them, ``relu_1`` where ``relu`` is kept).

        >>> import mithril as ml
        >>> m = ml.Model()
        >>> m |= ml.models.Relu()
        >>> sorted(m.child_names)
        ['relu']
        """
        return self._child_names

    @property
    def _cin(self) -> Connection | None:
        return self._canonical("in")

    @property
    def _cout(self) -> Connection | None:
        return self._canonical("out")

    def _named_internal(self, name: str) -> Connection | None:
        return self.named.get(name)

    def set_cin(self, *conns: Connection | str) -> None:
        """Choose the canonical input(s): what ``+=`` feeds when this model is chained, the
        first one not given (``set_cin("left", "right")``, as ``Add`` has).

        >>> from mithril.models import Model, Add
        >>> pair = Model()
        >>> pair |= Add()(left="a", right="b", output="output")
        >>> pair.set_cin("a", "b")
        >>> pair.canonical_inputs()
        ['a', 'b']
        """
        if not conns:
            raise ArgumentTypeError("set_cin needs at least one connection or terminal name")
        resolved = [self._resolve_terminal(c) for c in conns]
        self._cin_fixed = resolved[0]
        self._more_cins = resolved[1:]
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

