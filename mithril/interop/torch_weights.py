"""Load a ``torch.nn`` model's weights (its ``state_dict``) into Mithril parameters and state.

Entries are paired with Mithril keys in this order:

1. ``mapping`` — explicit pairs ``{mithril key: torch name}``; a pair of layer prefixes
   (``{"batchnorm2d": "bn1"}``) pairs the tensors of the two layers by leaf name;
2. by layer — a Mithril layer (``conv2d``: ``weight``, ``bias``) takes the first unused torch
   module (``conv1``) with the same leaf names and shapes, in order; then the same with shapes
   only, leaf names ignored;
3. by order — whatever remains is paired in order when the shapes agree one by one.

torch's ``num_batches_tracked`` counters have no Mithril counterpart and are ignored. Anything
left unpaired, or paired with a different shape, is listed in the :class:`TorchLoadReport`;
with ``strict=True`` (the default) that raises, with the report as the message.

>>> import torch
>>> import mithril as ml
>>> from mithril.interop import load_torch_state_dict
>>> from mithril.models import Model, Linear, Relu
>>> model = Model()
>>> model |= Linear(8)(input_size=4)
>>> model += Relu()
>>> model += Linear(2)
>>> pm = ml.compile(model, ml.TorchBackend())
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> params, state, report = load_torch_state_dict(pm, net.state_dict())
>>> [(m, t) for m, t, _, _ in report.matched]  # doctest: +NORMALIZE_WHITESPACE
[('linear.weight', '0.weight'), ('linear.bias', '0.bias'),
 ('linear_1.weight', '2.weight'), ('linear_1.bias', '2.bias')]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError, ShapeMismatchError, TypeMismatchError
from ..framework.physical.compiled import CompiledModel

__all__ = ["TorchLoadReport", "load_torch_state_dict"]

_IGNORED_LEAVES = ("num_batches_tracked",)

Shape = tuple[int, ...]


@dataclass
class TorchLoadReport:
    """What :func:`load_torch_state_dict` paired, and what it could not.

    - ``matched``: ``(mithril key, torch name, shape, how)`` with ``how`` one of
      ``"mapping"``, ``"layer"``, ``"layer-shape"``, ``"order"``, ``"layer-partial"``
      (the shape-agreeing tensors of a layer whose other tensors mismatch);
    - ``missing``: Mithril keys nothing was loaded for, with their shapes;
    - ``unexpected``: torch entries not used, with their shapes;
    - ``shape_mismatches``: ``(mithril key, torch name, mithril shape, torch shape)`` of
      layers that correspond by name but not by shape (not loaded);
    - ``mapping_errors``: entries of ``mapping`` naming keys that do not exist;
    - ``ignored``: torch entries deliberately skipped (``num_batches_tracked``);
    - ``converted``: ``(mithril key, torch dtype, backend dtype)`` where precision changed.

    >>> from mithril.interop import TorchLoadReport
    >>> TorchLoadReport().ok
    True
    """

    matched: list[tuple[str, str, Shape, str]] = field(default_factory=list)
    missing: list[tuple[str, Shape]] = field(default_factory=list)
    unexpected: list[tuple[str, Shape]] = field(default_factory=list)
    shape_mismatches: list[tuple[str, str, Shape, Shape]] = field(default_factory=list)
    mapping_errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    converted: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every Mithril key and every torch entry was paired with an equal shape."""
        return not (self.missing or self.unexpected or self.shape_mismatches
                    or self.mapping_errors)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.matched)} tensors from the torch state_dict"]
        for title, rows in (
                ("mapping errors", self.mapping_errors),
                ("shape mismatches (mithril key <- torch name)",
                 [f"{m} {list(ms)} <- {t} {list(ts)}"
                  for m, t, ms, ts in self.shape_mismatches]),
                ("missing: Mithril keys with no torch entry",
                 [f"{k} {list(s)}" for k, s in self.missing]),
                ("unexpected: torch entries with no Mithril key",
                 [f"{k} {list(s)}" for k, s in self.unexpected]),
                ("matched (mithril key <- torch name)",
                 [f"{m} <- {t} {list(s)} [{how}]" for m, t, s, how in self.matched]),
                ("ignored", self.ignored),
                ("converted", [f"{k}: {a} -> {b}" for k, a, b in self.converted])):
            if rows:
                lines.append(f"{title}:")
                lines += [f"  {r}" for r in rows]
        return "\n".join(lines)


@dataclass
class _Entry:
    name: str  # full key
    group: str  # layer prefix ("" at top level)
    leaf: str
    shape: Shape
    value: Any = None  # torch side: the NumPy array
    dtype: str = ""
    used: bool = False


def load_torch_state_dict(compiled_model: CompiledModel, state_dict: Any,
                          mapping: Mapping[str, str] | None = None, *, strict: bool = True
                          ) -> tuple[dict[str, Any], dict[str, Any], TorchLoadReport]:
    """``(params, state, report)`` for ``compiled_model`` from a ``torch.nn`` state dict.

    ``state_dict`` is a module's ``state_dict()`` (or the module itself); values are
    converted to the compiled model's backend and dtype. ``mapping`` fixes pairs explicitly
    (Mithril key or layer prefix -> torch name or module prefix); the rest is paired by layer
    and order (see the module docstring). With ``strict=True`` an incomplete pairing raises
    ``ShapeMismatchError`` (shapes) or ``InputError`` (names) with the report as message;
    with ``strict=False`` the dicts hold what was paired and ``report`` says what was not.

    >>> import torch
    >>> import mithril as ml
    >>> from mithril.interop import load_torch_state_dict
    >>> from mithril.models import Linear
    >>> pm = ml.compile(Linear(3, input_size=2), ml.NumpyBackend())
    >>> fc = torch.nn.Linear(2, 3)
    >>> params, state, report = load_torch_state_dict(pm, fc.state_dict())
    >>> report.ok, sorted(params)
    (True, ['bias', 'weight'])
    >>> _, _, bad = load_torch_state_dict(pm, torch.nn.Linear(5, 3).state_dict(), strict=False)
    >>> bad.shape_mismatches
    [('weight', 'weight', (3, 2), (3, 5))]
    """
    if not isinstance(compiled_model, CompiledModel):
        raise TypeMismatchError(f"load_torch_state_dict needs a compiled model, got "
                                f"{type(compiled_model).__name__}")
    if isinstance(state_dict, nn.Module):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise TypeMismatchError(f"state_dict must be a torch state_dict (a dict of tensors) or "
                                f"an nn.Module, got {type(state_dict).__name__}")
    if mapping is not None and not isinstance(mapping, Mapping):
        raise TypeMismatchError(f"mapping must be a dict {{mithril key: torch name}}, got "
                                f"{type(mapping).__name__}")
    report = TorchLoadReport()
    ours = [_entry(k, spec.shape) for k, spec in compiled_model._params.items()]
    ours += [_entry(k, spec.shape) for k, spec in compiled_model._state_specs.items()]
    theirs: list[_Entry] = []
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeMismatchError(f"state_dict keys must be strings, got {name!r}")
        if name.rsplit(".", 1)[-1] in _IGNORED_LEAVES:
            report.ignored.append(name)
            continue
        arr, dtype = _to_numpy(name, value)
        theirs.append(_entry(name, arr.shape, arr, dtype))
    pairs: dict[str, _Entry] = {}  # mithril key -> torch entry

    def pair(mine: _Entry, other: _Entry, how: str) -> None:
        mine.used = other.used = True
        if mine.shape != other.shape:
            report.shape_mismatches.append((mine.name, other.name, mine.shape, other.shape))
            return
        pairs[mine.name] = other
        report.matched.append((mine.name, other.name, mine.shape, how))

    _by_mapping(mapping or {}, ours, theirs, pair, report)
    _by_layer(ours, theirs, pair, use_leaves=True)
    _by_layer(ours, theirs, pair, use_leaves=False)
    _by_order(ours, theirs, pair)
    _diagnose_leftovers(ours, theirs, pair)
    report.missing += [(e.name, e.shape) for e in ours if not e.used]
    report.unexpected += [(e.name, e.shape) for e in theirs if not e.used]
    order = {e.name: i for i, e in enumerate(ours)}
    report.matched.sort(key=lambda m: order[m[0]])

    if strict and not report.ok:
        cls = ShapeMismatchError if report.shape_mismatches else InputError
        raise cls(f"the torch state_dict does not fit the compiled model "
                  f"(pass strict=False to load what fits):\n{report}")

    backend = compiled_model.backend
    out: dict[str, Any] = {}
    for key in order:
        other = pairs.get(key)
        if other is None:
            continue
        if other.value.dtype.kind == "f":
            if other.dtype != backend.dtype.name:
                report.converted.append((key, other.dtype, backend.dtype.name))
            out[key] = backend.array(other.value, dtype=backend.dtype)
        else:
            out[key] = backend.array(other.value)
    params = {k: out[k] for k in compiled_model._params if k in out}
    state = {k: out[k] for k in compiled_model._state_specs if k in out}
    return params, state, report


def _entry(name: str, shape: Any, value: Any = None, dtype: str = "") -> _Entry:
    group, _, leaf = name.rpartition(".")
    return _Entry(name, group, leaf, tuple(int(d) for d in shape), value, dtype)


def _to_numpy(name: str, value: Any) -> tuple[np.ndarray, str]:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        dtype = str(t.dtype).removeprefix("torch.")
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.cpu().numpy(), dtype
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        arr = np.asarray(value)
        return arr, arr.dtype.name
    raise TypeMismatchError(f"state_dict entry {name!r} is a {type(value).__name__}, not a "
                            "tensor")


def _groups(entries: list[_Entry]) -> dict[str, list[_Entry]]:
    out: dict[str, list[_Entry]] = {}
    for e in entries:
        out.setdefault(e.group, []).append(e)
    return out


def _by_mapping(mapping: Mapping[str, str], ours: list[_Entry], theirs: list[_Entry],
                pair: Any, report: TorchLoadReport) -> None:
    mine = {e.name: e for e in ours}
    other = {e.name: e for e in theirs}
    my_groups, their_groups = _groups(ours), _groups(theirs)
    for mkey, tname in mapping.items():
        if mkey in mine:
            if tname not in other:
                report.mapping_errors.append(f"{mkey!r} -> {tname!r}: the torch state_dict has "
                                             f"no entry {tname!r}")
            elif mine[mkey].used or other[tname].used:
                report.mapping_errors.append(f"{mkey!r} -> {tname!r}: one of them is already "
                                             "paired")
            else:
                pair(mine[mkey], other[tname], "mapping")
        elif mkey in my_groups:
            if tname not in their_groups:
                report.mapping_errors.append(f"layer {mkey!r} -> {tname!r}: the torch "
                                             f"state_dict has no module {tname!r}")
                continue
            leaves = {e.leaf: e for e in their_groups[tname] if not e.used}
            for e in my_groups[mkey]:
                if not e.used and e.leaf in leaves:
                    pair(e, leaves.pop(e.leaf), "mapping")
        else:
            report.mapping_errors.append(f"{mkey!r} -> {tname!r}: the compiled model has no "
                                         f"parameter, state or layer {mkey!r}")


def _signature(entries: list[_Entry], use_leaves: bool) -> Any:
    if use_leaves:
        return frozenset((e.leaf, e.shape) for e in entries)
    return tuple(e.shape for e in entries)


def _by_layer(ours: list[_Entry], theirs: list[_Entry], pair: Any, use_leaves: bool) -> None:
    their_groups = [[e for e in g if not e.used] for g in _groups(theirs).values()]
    their_groups = [g for g in their_groups if g]
    taken = [False] * len(their_groups)
    for group in _groups(ours).values():
        group = [e for e in group if not e.used]
        if not group:
            continue
        sig = _signature(group, use_leaves)
        for i, candidate in enumerate(their_groups):
            if taken[i] or _signature(candidate, use_leaves) != sig:
                continue
            taken[i] = True
            if use_leaves:
                leaves = {e.leaf: e for e in candidate}
                for e in group:
                    pair(e, leaves[e.leaf], "layer")
            else:
                for e, o in zip(group, candidate, strict=True):
                    pair(e, o, "layer-shape")
            break


def _by_order(ours: list[_Entry], theirs: list[_Entry], pair: Any) -> None:
    left = [e for e in ours if not e.used]
    right = [e for e in theirs if not e.used]
    if left and len(left) == len(right) and all(a.shape == b.shape
                                                for a, b in zip(left, right, strict=True)):
        for a, b in zip(left, right, strict=True):
            pair(a, b, "order")


def _diagnose_leftovers(ours: list[_Entry], theirs: list[_Entry], pair: Any) -> None:
    """Pair what is left of layers that correspond by leaf names, tensor by tensor.

    A leftover Mithril layer takes the first leftover torch module with the same leaf names
    (shapes may differ: those become shape mismatches), or else the first whose leaf names
    contain or are contained in its own with equal shapes on the common leaves (the rest
    stays missing / unexpected). Tensors paired here are loaded as ``"layer-partial"``.
    """
    their_groups = [[e for e in g if not e.used] for g in _groups(theirs).values()]
    for group in _groups(ours).values():
        mine = {e.leaf: e for e in group if not e.used}
        if not mine:
            continue
        live = [{e.leaf: e for e in g if not e.used} for g in their_groups]
        chosen = next((o for o in live if o and set(o) == set(mine)), None)
        if chosen is None:
            chosen = next((o for o in live if _nested_with_equal_shapes(mine, o)), None)
        if chosen is not None:
            for leaf, e in mine.items():
                if leaf in chosen:
                    pair(e, chosen[leaf], "layer-partial")


def _nested_with_equal_shapes(mine: dict[str, _Entry], other: dict[str, _Entry]) -> bool:
    common = set(mine) & set(other)
    nested = set(mine) <= set(other) or set(other) <= set(mine)
    return bool(common) and nested and all(mine[k].shape == other[k].shape for k in common)
