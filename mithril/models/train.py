"""``TrainModel``: a model plus losses, regularisations and metrics, with a ``final_cost``.

    tm = TrainModel(model)
    tm.add_loss(CrossEntropy(), input="output", target="target", reduce_steps=[Mean()])
    tm.add_regularization(L2(), coef=1e-4, input=re.compile(r"weight$"))
    pm = ml.compile(tm, backend)
    outputs, grads = pm.evaluate(params, data, output_gradients=True)  # outputs["final_cost"]

The wrapped model keeps its terminal names, so parameter keys are the same as when the model
is compiled alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..errors import ArgumentTypeError, ModelReuseError, TerminalError
from ..framework.logical.model import BaseModel, Connection, ConnectSpec, IOKey, Model, Operator
from ..framework.ops import CATALOGUE


def _op(name: str, **values: Any) -> Operator:
    return Operator(CATALOGUE[name], **values)


class TrainModel(Model):
    """Wraps ``model`` and adds training objectives; compiles to a ``final_cost`` output.

    >>> import mithril as ml
    >>> from mithril.models import Linear, Mean, SquaredError, TrainModel
    >>> tm = TrainModel(Linear(1)(input_size=2))
    >>> tm.add_loss(SquaredError(), input="output", target="target", reduce_steps=[Mean()])
    >>> pm = ml.compile(tm, ml.NumpyBackend(), shapes={"input": [4, 2], "target": [4, 1]})
    >>> sorted(pm.output_keys)
    ['final_cost', 'output']
    """

    #: stored structurally by ``to_dict`` (its losses are not constructor arguments)
    serialize_structurally = True

    def __init__(self, model: BaseModel | ConnectSpec, name: str | None = None) -> None:
        super().__init__(name)
        given: dict[str, Any] = {}
        if isinstance(model, ConnectSpec):  # e.g. TrainModel(Linear(1)(input_size=2))
            if model.args:
                raise ArgumentTypeError("TrainModel takes terminals by name: model(input='x')")
            model, given = model.model, dict(model.kwargs)
        iface = model.interface()
        outputs = set(model.output_terminals())
        terminals: dict[str, Any] = {}
        for key in iface:
            target = given.get(key, key)
            if key in outputs and isinstance(target, str):
                target = IOKey(target, expose=True)
            terminals[key] = target
        self |= model(**terminals)
        self.model = model
        self._costs: list[tuple[Connection, float]] = []
        self._finalized = False
        self._n_terms = 0

    # ---- objectives ----
    def add_loss(self, loss_model: BaseModel, reduce_steps: Sequence[BaseModel] | None = None,
                 key_name: str | None = None, coef: float | None = None,
                 **terminals: Any) -> None:
        """Add ``loss_model`` (terminals ``input``, ``target`` → per-element ``output``),
        reduced by ``reduce_steps`` (default ``[Mean()]``) into a scalar added to
        ``final_cost`` (times ``coef``). ``key_name`` also exposes the reduced loss."""
        self._check_open()
        value = self._reduced(loss_model, terminals, reduce_steps)
        self._add_term(value, coef, key_name)

    def add_regularization(self, model: BaseModel, coef: float,
                           reduce_steps: Sequence[BaseModel] | None = None,
                           key_name: str | None = None, **terminals: Any) -> None:
        """Add ``coef * model(input)`` to ``final_cost``; ``input=re.compile(...)`` applies a
        fresh copy of ``model`` to every parameter whose key matches (e.g. ``r"weight$"``)."""
        self._check_open()
        target = terminals.get("input")
        if isinstance(target, re.Pattern):
            keys = [k for k in self.input_terminals() if target.search(k)
                    and self.interface()[k].meta.root().differentiable]
            if not keys:
                raise TerminalError(f"no parameter of {self.path} matches {target.pattern!r}")
            for i, key in enumerate(keys):
                reg = model if i == 0 else _fresh_copy(model)
                value = self._reduced(reg, {**terminals, "input": key}, reduce_steps or [])
                self._add_term(value, coef, None)
            return
        value = self._reduced(model, terminals, reduce_steps or [])
        self._add_term(value, coef, key_name)

    def add_metric(self, model: BaseModel, reduce_steps: Sequence[BaseModel] | None = None,
                   key_name: str | None = None, **terminals: Any) -> None:
        """Expose ``model``'s (reduced) output as ``key_name`` (default: its class name);
        metrics do not enter ``final_cost``."""
        self._check_open()
        value = self._reduced(model, terminals, reduce_steps or [])
        name = key_name or type(model).__name__.lower()
        self |= _op("buffer")(input=value, output=IOKey(name))

    # ---- building ----
    def _check_open(self) -> None:
        if self._finalized:
            raise ModelReuseError(f"{self.path} was already compiled; add losses before "
                                  "compiling")

    def _reduced(self, model: BaseModel, terminals: dict[str, Any],
                 reduce_steps: Sequence[BaseModel] | None) -> Connection:
        self._n_terms += 1
        out = Connection(self, None, _fresh_meta())
        self._add(model(**terminals, output=out) if "output" in model.interface()
                  else model(**terminals), chain=False, algebra=True, new_conns=[out])
        steps = [_op("mean")] if reduce_steps is None else list(reduce_steps)
        value = out
        for step in steps:
            nxt = Connection(self, None, _fresh_meta())
            self._add(step(input=value, output=nxt), chain=False, algebra=True, new_conns=[nxt])
            value = nxt
        return value

    def _add_term(self, value: Connection, coef: float | None, key_name: str | None) -> None:
        if key_name is not None:
            self |= _op("buffer")(input=value, output=IOKey(key_name, expose=True))
            value = self.named[key_name]
        self._costs.append((value, 1.0 if coef is None else float(coef)))

    def finalize(self) -> None:
        """Sum the objectives into ``final_cost`` (``ml.compile`` calls this once)."""
        if self._finalized:
            return
        if not self._costs:
            raise TerminalError(f"{self.path} has no loss: call add_loss before compiling")
        total: Connection | None = None
        for value, coef in self._costs:
            term = value if coef == 1.0 else value * coef
            total = term if total is None else total + term
        self |= _op("buffer")(input=total, output=IOKey("final_cost"))
        self._finalized = True


def _fresh_meta() -> Any:
    from ..framework.logical.meta import Meta

    return Meta(None)


def _fresh_copy(model: BaseModel) -> BaseModel:
    """A new instance of a regulariser (they take no constructor arguments)."""
    try:
        return type(model)()
    except TypeError as err:
        raise ArgumentTypeError(
            f"add_regularization with a pattern needs a model class constructible "
            f"without arguments; {type(model).__name__}: {err}") from None
