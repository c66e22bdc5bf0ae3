"""Load a ``torch.nn`` model's weights (its ``state_dict``) into Mithril parameters and state.

Entries are paired with Mithril keys by name first, by shape only for what names leave open
(see :mod:`mithril.interop._pairing` for the stages):

1. ``mapping`` — explicit pairs ``{mithril key: torch name}``; a pair of layer prefixes
   (``{"batchnorm2d": "bn1"}``) pairs the tensors of the two layers by leaf name;
2. by name — equal keys, then keys of which one is a dotted suffix of the other
   (``module.fc.weight`` / ``fc.weight``) when that is one-to-one;
3. by layer — a Mithril layer (``conv2d``: ``weight``, ``bias``) and a torch module
   (``conv1``) whose leaf names and shapes agree (then shapes alone), when no other layer
   shares that signature, or when the torch modules sharing it hold equal values;
4. by shape — single tensors whose shape is unique on both sides.

Layers that share a signature and differ in value cannot be told apart without names: they
are paired in order but reported as ``ambiguous`` (an error with ``strict=True``; give a
``mapping``). A name pairing is never overridden by shapes: equal names with different shapes
are a shape mismatch.

Arrays are copied: nothing loaded shares memory with the torch tensors. ``transforms`` rewrites
entries before pairing (``{"*.c_attn.weight": np.transpose}`` for HF GPT-2's ``Conv1D``).
torch's ``num_batches_tracked`` counters have no Mithril counterpart and are ignored. Trainable
*inputs* of the compiled model (``compile(..., trainable_keys=...)``, or parameters without an
initialiser) are not weights: when the file has no entry for them they are listed in
``report.trainable_inputs``, not as missing. Anything else left unpaired, paired with a
different shape or ambiguously is listed in the :class:`TorchLoadReport`; with ``strict=True``
(the default) that raises, with the report as the message.

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
>>> sorted({how for *_, how in report.matched})
['layer']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError, ShapeMismatchError, TypeMismatchError
from ..framework.physical.compiled import CompiledModel
from . import _pairing
from ._pairing import Entry, entry

__all__ = ["TorchLoadReport", "load_torch_state_dict"]

_IGNORED_LEAVES = ("num_batches_tracked",)

Shape = tuple[int, ...]
Transform = Callable[[np.ndarray], Any]


@dataclass
class TorchLoadReport:
    """What :func:`load_torch_state_dict` paired, and what it could not.

    - ``matched``: ``(mithril key, torch name, shape, how)`` with ``how`` one of
      ``"mapping"``, ``"name"``, ``"suffix"``, ``"layer"``, ``"layer-shape"`` (their
      ``-equal`` forms: one of several equal-valued torch modules), ``"shape"``,
      ``"layer-partial"`` (the shape-agreeing tensors of a layer whose other tensors
      mismatch) or ``"order"`` (a guess, also listed in ``ambiguous``);
    - ``missing``: Mithril parameters and state the file has no entry for ("not in the file");
    - ``unexpected``: torch entries not used, with their shapes;
    - ``not_parameters``: torch entries whose name is a *data* input of the compiled model,
      not a parameter or state ("not a parameter": compile with ``trainable_keys=`` to train
      it, or pass it as an input);
    - ``trainable_inputs``: trainable inputs of the compiled model that the file has no entry
      for (expected: they are inputs, not weights; not an error);
    - ``shape_mismatches``: ``(mithril key, torch name, mithril shape, torch shape)`` of
      entries that correspond (by name or layer) but not by shape (not loaded);
    - ``ambiguous``: ``(mithril layer, torch module)`` pairs made by order among layers that
      share names-free signatures and differ in value (give a ``mapping``);
    - ``mapping_errors``: entries of ``mapping`` or ``transforms`` naming keys that do not exist;
    - ``ignored``: torch entries deliberately skipped (``num_batches_tracked``);
    - ``transformed``: torch entries rewritten by ``transforms``;
    - ``converted``: ``(mithril key, torch dtype, backend dtype)`` where precision changed.

    >>> from mithril.interop import TorchLoadReport
    >>> TorchLoadReport().ok
    True
    """

    matched: list[tuple[str, str, Shape, str]] = field(default_factory=list)
    missing: list[tuple[str, Shape]] = field(default_factory=list)
    unexpected: list[tuple[str, Shape]] = field(default_factory=list)
    not_parameters: list[tuple[str, Shape]] = field(default_factory=list)
    trainable_inputs: list[str] = field(default_factory=list)
    shape_mismatches: list[tuple[str, str, Shape, Shape]] = field(default_factory=list)
    ambiguous: list[tuple[str, str]] = field(default_factory=list)
    mapping_errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    transformed: list[str] = field(default_factory=list)
    converted: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every parameter and state and every torch entry was paired, by name or
        unambiguously, with an equal shape."""
        return not (self.missing or self.unexpected or self.shape_mismatches
                    or self.mapping_errors or self.ambiguous or self.not_parameters)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.matched)} tensors from the torch state_dict"]
        for title, rows in (
                ("mapping errors", self.mapping_errors),
                ("shape mismatches (mithril key <- torch name)",
                 [f"{m} {list(ms)} <- {t} {list(ts)}"
                  for m, t, ms, ts in self.shape_mismatches]),
                ("ambiguous: layers with equal shapes paired by order only (pass mapping=)",
                 [f"{m} <- {t}" for m, t in self.ambiguous]),
                ("missing: Mithril parameters and state not in the file",
                 [f"{k} {list(s)}" for k, s in self.missing]),
                ("not parameters: torch entries that are data inputs of the compiled model",
                 [f"{k} {list(s)}" for k, s in self.not_parameters]),
                ("unexpected: torch entries with no Mithril key",
                 [f"{k} {list(s)}" for k, s in self.unexpected]),
                ("matched (mithril key <- torch name)",
                 [f"{m} <- {t} {list(s)} [{how}]" for m, t, s, how in self.matched]),
                ("trainable inputs not in the file (not loaded, not an error)",
                 self.trainable_inputs),
                ("transformed", self.transformed),
                ("ignored", self.ignored),
                ("converted", [f"{k}: {a} -> {b}" for k, a, b in self.converted])):
            if rows:
                lines.append(f"{title}:")
                lines += [f"  {r}" for r in rows]
        return "\n".join(lines)


def load_torch_state_dict(compiled_model: CompiledModel, state_dict: Any,
                          mapping: Mapping[str, str] | None = None, *, strict: bool = True,
                          transforms: Mapping[str, Transform] | None = None
                          ) -> tuple[dict[str, Any], dict[str, Any], TorchLoadReport]:
    """``(params, state, report)`` for ``compiled_model`` from a ``torch.nn`` state dict.

    ``state_dict`` is a module's ``state_dict()`` (or the module itself); values are copied
    and converted to the compiled model's backend and dtype. ``mapping`` fixes pairs
    explicitly (Mithril key or layer prefix -> torch name or module prefix); the rest is
    paired by name, then unambiguously by layer and shape (see the module docstring).
    ``transforms`` maps torch names or ``fnmatch`` patterns to functions applied to the NumPy
    array before pairing. With ``strict=True`` an incomplete or ambiguous pairing raises
    ``ShapeMismatchError`` (shapes) or ``InputError`` (names) with the report as message;
    with ``strict=False`` the dicts hold what was paired and ``report`` says what was not.

    >>> import numpy as np
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
    >>> stored = {"weight": fc.weight.detach().T, "bias": fc.bias.detach()}  # (in, out)
    >>> params, _, report = load_torch_state_dict(pm, stored, transforms={"weight": np.transpose})
    >>> report.transformed, bool(np.array_equal(params["weight"], fc.weight.detach().numpy()))
    (['weight'], True)
    """
    if not isinstance(compiled_model, CompiledModel):
        raise TypeMismatchError(f"load_torch_state_dict needs a compiled model, got "
                                f"{type(compiled_model).__name__}")
    if isinstance(state_dict, nn.Module):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise TypeMismatchError(f"state_dict must be a torch state_dict (a dict of tensors) or "
                                f"an nn.Module, got {type(state_dict).__name__}")
    for what, value in (("mapping", mapping), ("transforms", transforms)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeMismatchError(f"{what} must be a dict keyed by name, got "
                                    f"{type(value).__name__}")
    report = TorchLoadReport()
    inputs = _trainable_inputs(compiled_model)
    ours = [entry(k, spec.shape) for k, spec in compiled_model._params.items()]
    ours += [entry(k, spec.shape) for k, spec in compiled_model._state_specs.items()]
    theirs = _torch_entries(state_dict, dict(transforms or {}), report)
    pairs: dict[str, Entry] = {}  # mithril key -> torch entry

    def pair(mine: Entry, other: Entry, how: str) -> None:
        mine.used = other.used = True
        if mine.shape != other.shape:
            report.shape_mismatches.append((mine.name, other.name, mine.shape, other.shape))
            return
        pairs[mine.name] = other
        report.matched.append((mine.name, other.name, mine.shape, how))

    _pairing.by_mapping(mapping or {}, ours, theirs, pair, report.mapping_errors)
    _pairing.by_name(ours, theirs, pair)
    _pairing.by_suffix(ours, theirs, pair)
    # trainable inputs pair by name only: never guessed from shapes
    weights = [e for e in ours if e.name not in inputs]
    for use_leaves in (True, False):
        _pairing.by_layer(weights, theirs, pair, use_leaves, report.ambiguous)
    _pairing.by_shape(weights, theirs, pair)
    _pairing.diagnose_leftovers(weights, theirs, pair)
    report.trainable_inputs += [e.name for e in ours if not e.used and e.name in inputs]
    report.missing += [(e.name, e.shape) for e in ours if not e.used and e.name not in inputs]
    data = set(compiled_model.data_keys)
    for e in theirs:
        if not e.used:
            (report.not_parameters if e.name in data else report.unexpected).append(
                (e.name, e.shape))
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


def _trainable_inputs(compiled_model: CompiledModel) -> set[str]:
    """Parameters that are trainable inputs rather than weights: named in ``trainable_keys``
    at compile time, or without an initialiser (every layer's weights have one)."""
    named = set((getattr(compiled_model, "compile_options", None) or {}).get("trainable_keys")
                or ())
    return {k for k, spec in compiled_model._params.items() if k in named or spec.init is None}


def _torch_entries(state_dict: Mapping[Any, Any], transforms: dict[str, Transform],
                   report: TorchLoadReport) -> list[Entry]:
    theirs: list[Entry] = []
    used_patterns: set[str] = set()
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeMismatchError(f"state_dict keys must be strings, got {name!r}")
        if name.rsplit(".", 1)[-1] in _IGNORED_LEAVES:
            report.ignored.append(name)
            continue
        arr, dtype = _to_numpy(name, value)
        fn = transforms.get(name)
        pattern = name
        if fn is None:
            pattern = next((p for p in transforms if fnmatch.fnmatchcase(name, p)), "")
            fn = transforms.get(pattern)
        if fn is not None:
            used_patterns.add(pattern)
            arr = _transformed(name, fn, arr)
            report.transformed.append(name)
        theirs.append(entry(name, arr.shape, arr, dtype))
    report.mapping_errors += [f"transforms: {p!r} matches no entry of the torch state_dict"
                              for p in transforms if p not in used_patterns]
    return theirs


def _transformed(name: str, fn: Transform, arr: np.ndarray) -> np.ndarray:
    if not callable(fn):
        raise TypeMismatchError(f"transforms[{name!r}] must be a function of a NumPy array, got "
                                f"{type(fn).__name__}")
    result = fn(arr)
    if isinstance(result, torch.Tensor):
        result = result.detach().cpu().numpy()
    if not (hasattr(result, "shape") and hasattr(result, "dtype")):
        raise TypeMismatchError(f"transforms for {name!r} returned a {type(result).__name__}, "
                                "not an array")
    return np.array(result, copy=True)  # a transpose may be a view: own a contiguous copy


def _to_numpy(name: str, value: Any) -> tuple[np.ndarray, str]:
    """A NumPy copy (never a view of the tensor's memory) and the source dtype's name."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        dtype = str(t.dtype).removeprefix("torch.")
        if t.dtype == torch.bfloat16:
            t = t.float()
        return np.array(t.cpu().numpy(), copy=True), dtype
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        arr = np.array(value, copy=True)
        return arr, arr.dtype.name
    raise TypeMismatchError(f"state_dict entry {name!r} is a {type(value).__name__}, not a "
                            "tensor")
