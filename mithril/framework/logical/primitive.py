"""A catalogue primitive used as a model: :class:`Operator` (``Add()``, ``Relu()``)."""

from __future__ import annotations

from typing import Any

from ...errors import TerminalError
from ..ops import CATALOGUE, OpDef
from ..shapes import Constraint, schedule
from .base import BaseModel
from .building import Building, const_value, guard
from .connection import Connection
from .meta import SCALAR, TBD, TENSOR, make_kind, set_value


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
        with Building(self, "construct"):
            for t in in_terms:
                v = values.get(t.name, t.default)
                if v is TBD:
                    continue
                meta = self.conns[t.name].meta
                if v is None and t.kind == TENSOR and t.optional:
                    make_kind(meta, SCALAR)  # an absent optional tensor
                    set_value(meta, None)
                    continue
                guard(self, t.name, meta, v, lambda m=meta, v=v: set_value(m, const_value(m, v)))
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

    def canonical_inputs(self) -> list[str]:
        """The terminals ``+=`` may feed, in order: the first input, then the other tensor
        inputs without a value (``Add``: ``left``, then ``right``)."""
        first = self.input_names[0]
        rest = [n for n in self.input_names[1:]
                if self.terms[n].kind != SCALAR and not self.terms[n].optional
                and self.conns[n].meta.root().value is TBD]
        return [first, *rest]
