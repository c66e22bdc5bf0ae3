"""The Mithril model being built from an exported torch graph: values, constants, primitives.

A value of the torch graph is one of: a :class:`Ref` (a model input, parameter or state, by
name), a :class:`~mithril.framework.logical.model.Connection` (computed inside the model), a
``torch.Tensor`` that does not depend on any input (folded to a constant while converting), or
a plain Python value (ints, shapes, dtypes). Primitives are added with :meth:`Builder.apply`.

The model is nested like the module: :meth:`Builder.enter` opens a submodel for a submodule's
call and :meth:`Builder.leave` adds it, finished, to the model it was opened in. A value from
outside the submodel becomes one of its inputs the first time a primitive inside reads it (a
parameter under its key relative to the submodule, ``weight`` inside ``layer1.0.conv1``; any
other value as ``input``, ``input_1``, ...), and a value computed inside that is needed after
the call becomes one of its outputs (``output``, ``output_1``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CompileError
from ..framework.logical.meta import TENSOR, Meta
from ..framework.logical.model import BaseModel, Connection, IOKey, Model, Operator
from ..framework.ops import CATALOGUE, SCALAR


@dataclass(frozen=True)
class Ref:
    """A named terminal of the model: a ``forward`` argument (``data``), a parameter or a
    state."""

    name: str
    data: bool = False
    shape: tuple[int, ...] | None = None
    aliases: tuple[str, ...] = ()  # other keys of the same tensor (tied weights)


class Unsupported:
    """The value of a node that could not be converted (its consumers are skipped)."""


UNSUPPORTED = Unsupported()


def is_dynamic(value: Any) -> bool:
    """Whether a value depends on the model's inputs, parameters or state."""
    if isinstance(value, Ref | Connection):
        return True
    if isinstance(value, list | tuple):
        return any(is_dynamic(v) for v in value)
    return False


@dataclass(eq=False)
class Scope:
    """A model being built: the top model, or the submodel of one submodule call."""

    model: Model
    path: str  # the submodule's qualified name (``layer1.0``); "" for the top model
    name: str  # the submodel's name in its parent (``0``, ``conv1``, ``relu_1``)
    parent: Scope | None = None
    inputs: dict[Any, str] = field(default_factory=dict)  # outer value (key) -> input name
    origins: dict[str, Any] = field(default_factory=dict)  # input name -> outer value
    reserved: set[str] = field(default_factory=set)  # submodel names not taken yet


class Builder:
    """Adds primitives to the innermost open model; remembers how parameters are used."""

    def __init__(self) -> None:
        self.top = Scope(Model(), "", "")
        self.scope = self.top
        self.inits: dict[str, tuple[str, list[int] | None]] = {}  # parameter -> initialiser
        self.float_dtype = torch.float32

    @property
    def model(self) -> Model:
        """The model primitives are added to now (the innermost open submodel)."""
        return self.scope.model

    # ---- submodels ----
    def enter(self, path: str, name: str, reserved: set[str] = frozenset()) -> None:
        """Open the submodel of a call of the submodule ``path``, named ``name`` in the current
        model; ``reserved`` are the names its own submodels will take (primitives added to it
        are numbered around them)."""
        model = Model()
        model.child_names.update(reserved)  # primitives named ``relu_1`` where ``relu`` is one
        self.scope = Scope(model, path, name, self.scope, reserved=set(reserved))

    def reserve(self, names: set[str]) -> None:
        """Keep ``names`` for the current model's submodels (primitives are numbered around
        them), as ``enter``'s ``reserved`` does for a submodel."""
        self.scope.reserved |= names
        self.model.child_names.update(names)

    def leave(self, values: list[Connection]) -> dict[int, Any]:
        """Close the current submodel and add it to its parent. ``values`` are its connections
        still needed outside: each becomes an output, bound to a new connection of the parent.
        Returns ``id(connection) -> the value in the parent`` for them (a value that only
        passed through the submodel is the parent's own)."""
        scope, parent = self.scope, self.scope.parent
        if parent is None:
            raise CompileError("from_torch: internal error: leaving the top model")
        self.scope = parent
        model = scope.model
        mapping: dict[int, Any] = {}
        if not model.children:  # every operation of the call was folded or an identity
            return mapping
        taken = set(model.interface()) | set(scope.origins)
        outputs: dict[str, Connection] = {}
        for conn in values:
            if id(conn) in mapping:
                continue
            if conn.producer is None:  # one of the submodel's inputs, passed through
                mapping[id(conn)] = scope.origins[conn.key]
                continue
            name = _unique("output", taken)
            taken.add(name)
            model.expose_keys(**{name: conn})
            outputs[name] = Connection(parent.model, None, Meta(None))
            mapping[id(conn)] = outputs[name]
        binding: dict[str, Any] = {}
        for name in model.input_terminals():
            if name in scope.origins:
                value = self.terminal(scope.origins[name])
                # a new input of the parent takes the shape of the submodel's own input
                binding[name] = value.name if isinstance(value, IOKey) else value
        binding.update(outputs)
        siblings = parent.model.child_names
        if scope.name in parent.reserved:  # its first call: the name was kept for it
            parent.reserved.discard(scope.name)
            siblings.discard(scope.name)
        model.name = _unique(scope.name, siblings)
        parent.model.attach(model.connect(**binding), list(outputs.values()))
        return mapping

    def _input(self, key: Any, value: Ref | Connection) -> str | IOKey:
        """The name of the current submodel's input for an outer value; made on first use, as
        an ``IOKey`` with the value's shape (primitives then infer their shapes at once)."""
        scope = self.scope
        name = scope.inputs.get(key)
        if name is not None:
            return name
        if isinstance(value, Ref) and not value.data:
            # the name the submodule has it under (a tied weight's own alias), else its key
            prefix = scope.path + "."
            base = next((n[len(prefix):] for n in (value.name, *value.aliases)
                         if n.startswith(prefix)), value.name)
        else:
            base = "input"
        name = _unique(base, set(scope.origins) | set(scope.model.named))
        scope.inputs[key] = name
        scope.origins[name] = value
        shape = value.shape if isinstance(value, Ref) else _known_shape(value)
        return name if shape is None else IOKey(name, shape=list(shape))

    # ---- values and primitives ----
    def terminal(self, value: Any) -> Any:
        """A value as a terminal binding: a name, a connection or a NumPy constant."""
        if isinstance(value, Ref):
            if self.scope is self.top:
                if value.shape is None or value.name in self.model.named:
                    return value.name
                return IOKey(value.name, shape=list(value.shape))  # its first use
            return self._input(("ref", value.name), value)
        if isinstance(value, Connection):
            if value.model is self.model:
                return value
            if self.scope is self.top:
                raise CompileError(f"from_torch: internal error: a value of the closed "
                                   f"submodel {value.model.path} is used after it")
            return self._input(id(value), value)
        if isinstance(value, torch.Tensor):
            return to_numpy(value)
        return value

    def apply(self, op_name: str, **given: Any) -> Connection:
        """Add the catalogue primitive ``op_name`` and return its (first) output."""
        op = CATALOGUE[op_name]
        scalars = {t.name for t in op.inputs if t.kind == SCALAR}
        given = {k: self.terminal(v) for k, v in given.items()}
        n = None
        if op.variadic:
            n = sum(1 for k in given if k.startswith(op.inputs[0].name))
        values = {k: v for k, v in given.items()
                  if k in scalars and not isinstance(v, Connection | str | IOKey)}
        prim = Operator(op, n_inputs=n, **values)
        binding = {k: v for k, v in given.items() if k not in values}
        out = Connection(self.model, None, Meta(None))
        binding[prim.output_names[0]] = out
        self.model.attach(prim.connect(**binding), [out])
        return out

    def apply_model(self, layer: BaseModel, output: str = "output", **given: Any) -> Connection:
        """Add a library layer built from primitives (``Upsample``, a ``ceil_mode`` pooling),
        wired to ``given``, and return its ``output``."""
        binding = {k: self.terminal(v) for k, v in given.items()}
        out = Connection(self.model, None, Meta(None))
        binding[output] = out
        self.model.attach(layer.connect(**binding), [out])
        return out

    def conn(self, value: Any) -> Connection:
        """The value as a connection (a named terminal or constant goes through ``buffer``)."""
        if isinstance(value, Connection) and value.model is self.model:
            return value
        if isinstance(value, Ref | Connection):
            name = self.terminal(value)
            if name in self.model.named:
                return self.model.named[name]
            value = name
        return self.apply("buffer", input=value)

    def init(self, value: Any, kind: str, fan_in: list[int] | None = None) -> None:
        """How ``randomize_params`` fills a parameter (its first use decides)."""
        if isinstance(value, Ref):
            self.inits.setdefault(value.name, (kind, fan_in))


def _known_shape(conn: Connection) -> list[int] | None:
    """A connection's shape if every axis is known."""
    meta = conn.meta.root()
    if meta.kind != TENSOR:
        return None
    f = meta.shape.normal()
    if f.var is not None or any(d.value is None for d in f.prefix):
        return None
    return [d.value for d in f.prefix]


def _unique(base: str, taken: set[str]) -> str:
    """``base``, else ``base_1``, ``base_2``, ... (the first not in ``taken``)."""
    name, i = base, 1
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    return name


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy of a constant (floats as float64: the backend's dtype applies)."""
    t = t.detach().cpu()
    if t.is_floating_point():
        return t.double().numpy().copy()
    return t.numpy().copy()
