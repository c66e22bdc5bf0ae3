"""The Mithril model being built from an exported torch graph: values, constants, primitives.

A value of the torch graph is one of: a :class:`Ref` (a model input, parameter or state, by
name), a :class:`~mithril.framework.logical.model.Connection` (computed inside the model), a
``torch.Tensor`` that does not depend on any input (folded to a constant while converting), or
a plain Python value (ints, shapes, dtypes). Primitives are added with :meth:`Builder.apply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..framework.logical.meta import Meta
from ..framework.logical.model import BaseModel, Connection, Model, Operator
from ..framework.ops import CATALOGUE, SCALAR


@dataclass(frozen=True)
class Ref:
    """A named terminal of the model: a ``forward`` argument, a parameter or a state."""

    name: str


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


class Builder:
    """Adds primitives to one flat :class:`Model`; remembers how parameters are used."""

    def __init__(self) -> None:
        self.model = Model()
        self.inits: dict[str, tuple[str, list[int] | None]] = {}  # parameter -> initialiser
        self.float_dtype = torch.float32

    def terminal(self, value: Any) -> Any:
        """A value as a terminal binding: a name, a connection or a NumPy constant."""
        if isinstance(value, Ref):
            return value.name
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
                  if k in scalars and not isinstance(v, Connection | str)}
        prim = Operator(op, n_inputs=n, **values)
        binding = {k: v for k, v in given.items() if k not in values}
        out = Connection(self.model, None, Meta(None))
        binding[prim.output_names[0]] = out
        self.model._add(prim.connect(**binding), chain=False, algebra=True, new_conns=[out])
        return out

    def apply_model(self, layer: BaseModel, output: str = "output", **given: Any) -> Connection:
        """Add a library layer built from primitives (``Upsample``, a ``ceil_mode`` pooling),
        wired to ``given``, and return its ``output``."""
        binding = {k: self.terminal(v) for k, v in given.items()}
        out = Connection(self.model, None, Meta(None))
        binding[output] = out
        self.model._add(layer.connect(**binding), chain=False, algebra=True, new_conns=[out])
        return out

    def conn(self, value: Any) -> Connection:
        """The value as a connection (a named terminal or constant goes through ``buffer``)."""
        if isinstance(value, Connection):
            return value
        if isinstance(value, Ref) and value.name in self.model.named:
            return self.model.named[value.name]
        return self.apply("buffer", input=value)

    def init(self, value: Any, kind: str, fan_in: list[int] | None = None) -> None:
        """How ``randomize_params`` fills a parameter (its first use decides)."""
        if isinstance(value, Ref):
            self.inits.setdefault(value.name, (kind, fan_in))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy of a constant (floats as float64: the backend's dtype applies)."""
    t = t.detach().cpu()
    if t.is_floating_point():
        return t.double().numpy().copy()
    return t.numpy().copy()
