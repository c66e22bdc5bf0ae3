"""``TrainModel``: a model plus losses, regularisations and metrics, with a ``final_cost``.

    tm = TrainModel(model)
    tm.add_loss(CrossEntropy(), input="output", target="target", reduce_steps=[Mean()])
    tm.add_regularization(L2(), coef=1e-4, input=re.compile(r"weight$"))
    pm = ml.compile(tm, backend)
    outputs, grads = pm.evaluate(params, data, output_gradients=True)  # outputs["final_cost"]

The wrapped model keeps its terminal names, so parameter keys are the same as when the model
is compiled alone.

Regularization is scaled as the reference Mithril scales it: a term ``coef * reg(w)`` on a
parameter ``w`` that feeds losses is divided by the geometric mean, over those losses, of the
number of elements each loss averages (the product of the sizes its ``Mean`` / ``Min`` / ``Max``
reduce steps reduce over; 1 for a loss without such steps). With one loss ``Mean``-reduced over
a batch of ``N`` samples, ``L2`` with ``coef=λ`` adds ``λ / N * 0.5 * sum(w ** 2)``: the penalty
per sample, as if it were added to every sample's loss. A regularized terminal that feeds no
loss is added unscaled.
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
        #: per loss: its per-element output and the (input, axis) of its Mean/Min/Max steps
        self._loss_reductions: list[tuple[Connection, list[tuple[Connection, Any]]]] = []
        #: per regularization term: index into _costs and the regularized connection
        self._reg_terms: list[tuple[int, Connection]] = []
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
        if isinstance(terminals.get("input"), str):  # a loss reads an existing value, never a
            self.find_connection(terminals["input"])  # new input: a wrong name raises here
        reductions: list[tuple[Connection, Any]] = []
        value = self._reduced(loss_model, terminals, reduce_steps, reductions)
        self._loss_reductions.append((self._last_loss_output, reductions))
        self._add_term(value, coef, key_name)

    def add_regularization(self, model: BaseModel, coef: float, reg_key: str | None = None,
                           key_name: str | None = None, *,
                           reduce_steps: Sequence[BaseModel] | None = None,
                           **terminals: Any) -> None:
        """Add ``coef * model(input)`` to ``final_cost``; ``input=re.compile(...)`` applies a
        fresh copy of ``model`` to every parameter whose key matches (e.g. ``r"weight$"``).

        ``reg_key`` is the terminal of ``model`` that takes the regularized value (default:
        its canonical input). The term is divided by the size of the losses that value feeds
        (the module docstring has the rule), as the reference does."""
        self._check_open()
        if reg_key is None:
            cins = model.canonical_inputs()
            reg_key = cins[0] if cins else "input"
        if reg_key not in model.interface():
            raise TerminalError(f"{type(model).__name__} has no terminal {reg_key!r} "
                                f"(reg_key); terminals: {', '.join(model.interface())}")
        target = terminals.get(reg_key)
        if isinstance(target, str):  # the regularized value exists: a wrong name raises here
            self.find_connection(target)
        if isinstance(target, re.Pattern):
            keys = [k for k in self.input_terminals() if target.search(k)
                    and self.interface()[k].meta.root().differentiable]
            if not keys:
                raise TerminalError(f"no parameter of {self.path} matches {target.pattern!r}")
            for i, key in enumerate(keys):
                reg = model if i == 0 else _fresh_copy(model)
                value = self._reduced(reg, {**terminals, reg_key: key}, reduce_steps or [])
                self._add_reg_term(value, coef, None, key)
            return
        value = self._reduced(model, terminals, reduce_steps or [])
        self._add_reg_term(value, coef, key_name, target)

    def _add_reg_term(self, value: Connection, coef: float, key_name: str | None,
                      target: Any) -> None:
        conn = target if isinstance(target, Connection) else None
        if isinstance(target, str):
            conn = self.interface().get(target) or self.named.get(target)
        self._add_term(value, coef, key_name)
        if conn is not None:
            self._reg_terms.append((len(self._costs) - 1, conn))

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
                 reduce_steps: Sequence[BaseModel] | None,
                 reductions: list[tuple[Connection, Any]] | None = None) -> Connection:
        self._n_terms += 1
        out = Connection(self, None, _fresh_meta())
        self._add(model(**terminals, output=out) if "output" in model.interface()
                  else model(**terminals), chain=False, algebra=True, new_conns=[out])
        self._last_loss_output = out
        steps = [_op("mean")] if reduce_steps is None else list(reduce_steps)
        value = out
        for step in steps:
            nxt = Connection(self, None, _fresh_meta())
            self._add(step(input=value, output=nxt), chain=False, algebra=True, new_conns=[nxt])
            if reductions is not None and _is_averaging(step):
                reductions.append((value, _axis_of(step)))
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
        scales = self._regularization_scales()
        total: Connection | None = None
        for i, (value, coef) in enumerate(self._costs):
            if i in scales:
                value = value / scales[i]
            term = value if coef == 1.0 else value * coef
            total = term if total is None else total + term
        self |= _op("buffer")(input=total, output=IOKey("final_cost"))
        self._finalized = True


    def _regularization_scales(self) -> dict[int, Any]:
        """For each regularization term whose value feeds losses: the geometric mean of those
        losses' averaged sizes (``_costs`` index -> scalar connection)."""
        if not self._reg_terms:
            return {}
        upstream = _upstream_roots(self)
        scales: dict[int, Any] = {}
        for index, conn in self._reg_terms:
            root = conn.meta.root()
            sizes = [self._averaged_size(reductions)
                     for loss_out, reductions in self._loss_reductions
                     if root in upstream.get(id(loss_out.meta.root()), ())]
            if not sizes:
                continue
            size: Any = sizes[0]
            for other in sizes[1:]:
                size = size * other
            if len(sizes) > 1:
                size = size ** (1.0 / len(sizes))
            if not isinstance(size, int | float) or size != 1:
                scales[index] = size
        return scales

    def _averaged_size(self, reductions: list[tuple[Connection, Any]]) -> Any:
        """The number of elements a loss's Mean/Min/Max steps reduce over (1 without any)."""
        total: Any = 1
        for value, axis in reductions:
            axes = [None] if axis is None else (
                list(axis) if isinstance(axis, list | tuple) else [axis])
            for ax in axes:
                size = Connection(self, None, _fresh_meta())
                self._add(_op("size", dim=ax)(input=value, output=size), chain=False,
                          algebra=True, new_conns=[size])
                total = size if isinstance(total, int) else total * size
        return total


def _is_averaging(step: BaseModel) -> bool:
    """A Mean / Min / Max reduce step (the ones the reference counts for the scaling)."""
    return isinstance(step, Operator) and step.op.name in ("mean", "min", "max")


def _axis_of(step: BaseModel) -> Any:
    from ..framework.logical.meta import TBD

    value = step.conns["axis"].meta.root().value
    if value is TBD:
        raise TerminalError(f"reduce step {step.path} needs a constant axis for the "
                            "regularization scaling")
    return value


def _upstream_roots(model: Model) -> dict[int, set[Any]]:
    """For every primitive output in ``model``'s hierarchy (by id of its root meta): the root
    metas it depends on."""
    edges: dict[int, list[Any]] = {}

    def walk(m: BaseModel) -> None:
        if isinstance(m, Operator):
            ins = [m.conns[n].meta.root() for n in m.input_names]
            for n in m.output_names:
                edges.setdefault(id(m.conns[n].meta.root()), []).extend(ins)
            return
        for child in getattr(m, "children", ()):
            walk(child)

    walk(model)
    memo: dict[int, set[Any]] = {}

    def deps(key: int) -> set[Any]:
        if key in memo:
            return memo[key]
        memo[key] = set()
        found: set[Any] = set()
        for parent in edges.get(key, ()):
            found.add(parent)
            found |= deps(id(parent))
        memo[key] = found
        return found

    return {key: deps(key) for key in edges}


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
