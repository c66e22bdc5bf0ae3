"""Parallelism plans: which arrays of a compiled model are split over which mesh axes.

A plan is a compile option — ``ml.compile(model, backend, parallel=plan)`` — so the model
itself never changes when the strategy does:

- :class:`DataParallel` splits the batch (dim 0) of every data input over one mesh axis and
  replicates parameters and state.
- :class:`TensorParallel` splits parameters: by default Linear layers as Megatron-LM does
  (alternately column-wise, ``weight[out, in]`` split on ``out`` with its bias, and row-wise,
  split on ``in``), plus any rules you give (regular expressions on parameter and state keys
  mapped to PartitionSpec-like tuples).
- ``DataParallel() + TensorParallel()`` combines both on a 2-D mesh (data on mesh axis 0,
  tensor on the last axis by default).
- :class:`ParallelPlan` is the general form they build on: ``rules`` for parameters and state,
  ``data`` for inputs.

A *spec* is a PartitionSpec-like tuple with one entry per tensor dimension: ``None`` (not
split), a mesh axis (its name such as ``"data"``, or its index) or a tuple of mesh axes (split
over their product). Dimensions past the end of a spec are not split; ``()`` replicates.

>>> from mithril.parallel import DataParallel, TensorParallel
>>> plan = DataParallel() + TensorParallel({r"head\\.weight": (None, "model")})
>>> plan
DataParallel(axis=0) + TensorParallel(rules={'head\\\\.weight': (None, 'model')}, axis=-1)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CompileError
from .mesh import DeviceMesh, Spec, check_divisible, normalize_spec, spec_text

#: a rule's key matcher: a regular expression (matched against the whole key), or a predicate
Matcher = str | re.Pattern[str] | Callable[[str], bool]
RuleTable = Mapping[Any, Any] | Sequence[tuple[Any, Any]] | None


@dataclass(frozen=True)
class _Rule:
    matcher: Matcher
    spec: Any
    origin: str

    def matches(self, key: str) -> bool:
        m = self.matcher
        if isinstance(m, re.Pattern):
            return m.fullmatch(key) is not None
        if isinstance(m, str):
            return re.fullmatch(m, key) is not None
        return bool(m(key))

    def describe(self) -> str:
        m = self.matcher
        text = m.pattern if isinstance(m, re.Pattern) else m if isinstance(m, str) else getattr(
            m, "__name__", repr(m))
        return f"{self.origin} rule {text}".lstrip()


def _rules(table: RuleTable, origin: str) -> tuple[_Rule, ...]:
    if table is None:
        return ()
    items = table.items() if isinstance(table, Mapping) else table
    out = []
    for item in items:
        try:
            matcher, spec = item
        except (TypeError, ValueError):
            raise CompileError(f"{origin or 'parameter'} rules must be a dict {{key pattern: "
                               f"spec}} or a list of (pattern, spec) pairs; got {item!r}"
                               ) from None
        if not isinstance(matcher, str | re.Pattern) and not callable(matcher):
            raise CompileError(f"a rule's key pattern must be a regular expression or a "
                               f"predicate, got {matcher!r}")
        if isinstance(matcher, str):
            try:
                re.compile(matcher)
            except re.error as err:
                raise CompileError(f"bad regular expression {matcher!r} in "
                                   f"{origin or 'parameter'} rules: {err}") from None
        out.append(_Rule(matcher, spec, origin))
    return tuple(out)


@dataclass(frozen=True)
class _Megatron:
    """Automatic Megatron-LM rules for Linear layers on one mesh axis."""

    axis: int | str


class ParallelPlan:
    """How to split a compiled model's arrays over the backend's device mesh.

    - ``rules``: parameters and state, ``{key regex: spec}`` (or ``(pattern, spec)`` pairs, or
      a predicate ``key -> bool`` as pattern); the first matching rule wins; regexes match the
      whole key (``r"linear_\\d+\\.weight"``, ``r".*\\.bias"``).
    - ``data``: data inputs the same way (``{"input": ("data",)}``).

    Arrays no rule matches are replicated. Plans combine with ``+`` (rules of the left plan
    first).

    >>> from mithril.parallel import ParallelPlan
    >>> ParallelPlan(rules={r"linear\\.weight": ("model", None)}, data={"input": ("data",)})
    ParallelPlan(rules={'linear\\\\.weight': ('model', None)}, data={'input': ('data',)})
    """

    def __init__(self, rules: RuleTable = None, data: RuleTable = None) -> None:
        self._rules = _rules(rules, "")
        self._data = _rules(data, "data")
        self._megatron: _Megatron | None = None
        self._batch_axis: int | str | None = None  # DataParallel: split dim 0 of every input
        self._batch_inputs: tuple[_Rule, ...] | None = None
        self._parts: tuple[ParallelPlan, ...] = (self,)

    # ---- combination ----
    def __add__(self, other: ParallelPlan) -> ParallelPlan:
        if not isinstance(other, ParallelPlan):
            return NotImplemented
        out = ParallelPlan()
        out._rules = self._rules + other._rules
        out._data = self._data + other._data
        for attr in ("_megatron", "_batch_axis", "_batch_inputs"):
            a, b = getattr(self, attr), getattr(other, attr)
            if a is not None and b is not None:
                raise CompileError(f"cannot combine {self!r} and {other!r}: both set "
                                   f"{attr.strip('_').replace('_', ' ')}")
            setattr(out, attr, a if a is not None else b)
        out._parts = self._parts + other._parts
        return out

    def __repr__(self) -> str:
        if len(self._parts) > 1:
            return " + ".join(repr(p) for p in self._parts)
        return self._describe()

    def _describe(self) -> str:
        items = []
        if self._rules:
            items.append(f"rules={_table_repr(self._rules)}")
        if self._data:
            items.append(f"data={_table_repr(self._data)}")
        return f"{type(self).__name__}({', '.join(items)})"

    # ---- resolution against a compiled model ----
    def resolve(self, mesh: DeviceMesh, params: Mapping[str, tuple[int, ...]],
                state: Mapping[str, tuple[int, ...]], data: Mapping[str, int | None],
                linear_layers: Sequence[tuple[str, str | None]] = ()) -> ShardingPlan:
        """The spec of every parameter, state and data key.

        ``params`` / ``state``: key -> shape; ``data``: tensor input key -> rank (None: any);
        ``linear_layers``: ``(weight key, bias key)`` of each Linear layer in model order.
        """
        plan = ShardingPlan(mesh, plan=repr(self))
        for table, target in ((params, plan.params), (state, plan.state)):
            for key, shape in table.items():
                rule = next((r for r in self._rules if r.matches(key)), None)
                if rule is None:
                    continue
                what = f"{'parameter' if table is params else 'state'} {key!r}"
                spec = normalize_spec(rule.spec, len(shape), mesh, what)
                check_divisible(shape, spec, mesh, what + f" (by {rule.describe()})")
                target[key] = spec
                plan.reasons[key] = rule.describe()
        if self._megatron is not None:
            self._apply_megatron(plan, mesh, params, linear_layers)
        for key in params:
            plan.params.setdefault(key, (None,) * len(params[key]))
        for key in state:
            plan.state.setdefault(key, (None,) * len(state[key]))
        for key, rank in data.items():
            rule = next((r for r in self._data if r.matches(key)), None)
            if rule is not None:
                entries = rule.spec if isinstance(rule.spec, tuple | list) else (rule.spec,)
                n = len(entries) if rank is None else rank
                plan.data[key] = normalize_spec(rule.spec, n, mesh, f"input {key!r}")
                plan.reasons[key] = rule.describe()
            elif self._batch_axis is not None and (
                    self._batch_inputs is None or any(r.matches(key) for r in
                                                      self._batch_inputs)):
                if rank == 0:
                    continue
                n = 1 if rank is None else rank
                plan.data[key] = normalize_spec((self._batch_axis,), n, mesh, f"input {key!r}")
                plan.reasons[key] = "DataParallel (batch dim 0)"
        return plan

    def _apply_megatron(self, plan: ShardingPlan, mesh: DeviceMesh,
                        params: Mapping[str, tuple[int, ...]],
                        linear_layers: Sequence[tuple[str, str | None]]) -> None:
        assert self._megatron is not None
        axis = mesh.axis_name(self._megatron.axis)
        parts = mesh.axis_size(axis)
        prefer = "column"
        for weight, bias in linear_layers:
            if weight not in params or weight in plan.params:
                continue  # not a trainable parameter, or an explicit rule decided
            out_f, in_f = params[weight]
            modes = [prefer, "row" if prefer == "column" else "column"]
            chosen = next((m for m in modes if (out_f if m == "column" else in_f) % parts == 0),
                          None)
            if chosen is None:
                plan.params[weight] = (None, None)
                plan.reasons[weight] = (f"TensorParallel: replicated (neither {out_f} nor "
                                        f"{in_f} divides into {parts})")
                continue
            if chosen == "column":
                plan.params[weight] = ((axis,), None)
                if bias is not None and bias in params and bias not in plan.params:
                    plan.params[bias] = ((axis,),)
                    plan.reasons[bias] = "TensorParallel: column-parallel Linear bias"
            else:
                plan.params[weight] = (None, (axis,))
            plan.reasons[weight] = f"TensorParallel: {chosen}-parallel Linear"
            prefer = "row" if chosen == "column" else "column"


def _table_repr(rules: Iterable[_Rule]) -> str:
    parts = []
    for r in rules:
        m = r.matcher
        key = m.pattern if isinstance(m, re.Pattern) else m if isinstance(m, str) else getattr(
            m, "__name__", "<predicate>")
        parts.append(f"{key!r}: {r.spec!r}")
    return "{" + ", ".join(parts) + "}"


class DataParallel(ParallelPlan):
    """Split dim 0 (the batch) of every data input over mesh ``axis``; replicate the model.

    ``inputs``: only these data keys (names or regexes); default every tensor input. Batch
    statistics (BatchNorm) and means over the batch stay *global*, so results equal the
    single-device run; gradients are summed across devices by the framework.

    >>> DataParallel(), DataParallel(axis="data", inputs=["input"])
    (DataParallel(axis=0), DataParallel(axis='data', inputs=['input']))
    """

    def __init__(self, axis: int | str = 0, inputs: Iterable[Matcher] | None = None) -> None:
        super().__init__()
        self._batch_axis = axis
        self._inputs_arg = None if inputs is None else list(inputs)
        self._batch_inputs = None if inputs is None else _rules(
            [(m, None) for m in self._inputs_arg or []], "DataParallel inputs")

    def _describe(self) -> str:
        extra = "" if self._inputs_arg is None else f", inputs={self._inputs_arg!r}"
        return f"DataParallel(axis={self._batch_axis!r}{extra})"


class TensorParallel(ParallelPlan):
    """Split parameters over mesh ``axis``: ``rules`` first, then Megatron-LM for Linear.

    With ``megatron=True`` (the default), Linear layers no rule covers alternate in model order
    between column-parallel (``weight`` split on its output dim, bias split too) and
    row-parallel (``weight`` split on its input dim, bias replicated) — the MLP pairing of
    Megatron-LM; a layer whose preferred dim does not divide by the axis size takes the other
    split, or stays replicated. Everything else stays replicated unless a rule splits it.

    >>> TensorParallel()
    TensorParallel(axis=-1)
    >>> TensorParallel({r"conv2d(_\\d+)?\\.weight": ("model",)}, megatron=False)
    TensorParallel(rules={'conv2d(_\\\\d+)?\\\\.weight': ('model',)}, axis=-1, megatron=False)
    """

    def __init__(self, rules: RuleTable = None, axis: int | str = -1,
                 megatron: bool = True) -> None:
        super().__init__(rules=rules)
        self._axis = axis
        self._megatron = _Megatron(axis) if megatron else None

    def _describe(self) -> str:
        items = [f"rules={_table_repr(self._rules)}"] if self._rules else []
        items.append(f"axis={self._axis!r}")
        if self._megatron is None:
            items.append("megatron=False")
        return f"TensorParallel({', '.join(items)})"


class AsGiven(ParallelPlan):
    """No plan: arrays keep the layout they are given on the mesh (what a backend with a
    device mesh does when ``ml.compile`` gets no ``parallel=``).

    Arrays that are not on the mesh yet, and new parameters and state, are replicated;
    gradients come back laid out as the parameters they belong to.

    >>> AsGiven()
    AsGiven()
    """

    def resolve(self, mesh: DeviceMesh, params: Mapping[str, tuple[int, ...]],
                state: Mapping[str, tuple[int, ...]], data: Mapping[str, int | None],
                linear_layers: Sequence[tuple[str, str | None]] = ()) -> ShardingPlan:
        plan = super().resolve(mesh, params, state, data, linear_layers)
        plan.keep = True
        for key in (*params, *state, *data):
            plan.reasons[key] = "as given"
        return plan


@dataclass
class ShardingPlan:
    """A plan resolved for one compiled model (``compiled.parallel``): a spec for every key.

    Specs are tuples with one entry per dimension: ``None`` or the tuple of mesh axes that
    dimension is split over.
    """

    mesh: DeviceMesh
    plan: str = ""
    params: dict[str, Spec] = field(default_factory=dict)
    state: dict[str, Spec] = field(default_factory=dict)
    data: dict[str, Spec] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    #: arrays keep the layout they are given (:class:`AsGiven`); specs are for new arrays
    keep: bool = False

    def spec(self, key: str) -> Spec:
        """The spec of a parameter, state or data key (``()`` for a replicated data key)."""
        for table in (self.params, self.state, self.data):
            if key in table:
                return table[key]
        return ()

    def summary(self, print_out: bool = True) -> str | None:
        """Print a table: kind, key, how it is split, and why; with ``print_out=False`` return it
        instead."""
        rows = [("kind", "key", "split", "by")]
        for kind, table in (("data", self.data), ("param", self.params),
                            ("state", self.state)):
            for key, spec in table.items():
                rows.append((kind, key, spec_text(spec), self.reasons.get(key, "-")))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(0, f"{self.plan} on {self.mesh!r}")
        text = "\n".join(lines)
        if print_out:
            print(text)
            return None
        return text
