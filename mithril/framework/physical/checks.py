"""The checks ``evaluate`` makes before it runs the generated code: keys, frameworks, shapes
and dtypes of parameters, inputs, state and output gradients.

The tables they read are built once at compile time (:meth:`InputChecks._make_check_tables`);
on the happy path each input costs a few comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InputError, ShapeMismatchError, TypeMismatchError
from .. import types as T
from .program_info import DataSpec, ParamSpec, ProgramInfo, ShapePattern


class InputChecks:
    """The checks of :class:`~mithril.framework.physical.compiled.CompiledModel` (a mixin:
    it reads the compiled model's backend and specs)."""

    backend: Any
    output_keys: list[str]
    _params: dict[str, ParamSpec]
    _state_specs: dict[str, ParamSpec]
    _data: dict[str, DataSpec]

    def _make_check_tables(self, info: ProgramInfo) -> None:
        """The tables the checks read, built once at compile time."""
        self._param_keys = frozenset(self._params)
        self._param_checks = [(k, s.shape) for k, s in self._params.items()]
        self._state_keys = frozenset(self._state_specs)
        self._state_checks = [(k, s.shape) for k, s in self._state_specs.items()]
        self._required_data = frozenset(self._data)
        self._optional_data = frozenset(info.unused)
        self._array_types: tuple[type, ...] = tuple(self.backend.array_types)
        # dtypes as ``x.dtype`` reports them (JAX: np.dtype, not jnp's scalar types)
        self._float_dtype = self.backend.array_dtype(self.backend.dtype)
        other_floats = set()
        for name in ("float16", "bfloat16", "float32", "float64"):
            try:
                native = self.backend.array_dtype(T.DTYPES[name])
            except (TypeError, ValueError):
                continue
            if native != self._float_dtype:
                other_floats.add(native)
        self._other_floats = frozenset(other_floats)
        float_data = info.float_data
        self._data_checks = [
            (key, pattern, *shape_check(pattern),
             _EXACT if key in float_data else dtype_mode(kinds))
            for key, (pattern, kinds, kind) in self._data.items() if kind != "scalar"]
        self._output_key_set = frozenset(self.output_keys)
        self._output_checks = {
            key: (pattern, *shape_check(pattern), _EXACT if kinds == T.FLOAT else
                  dtype_mode(kinds))
            for key, (pattern, kinds, kind) in info.output_specs.items()
            if kind != "scalar"}

    def _output_grads(self, og: Mapping[str, Any] | bool,
                      bound: dict[int, tuple[int, str]] | None) -> dict[str, Any]:
        if og is True:
            if "final_cost" not in self.output_keys:
                raise InputError("output_gradients=True needs a 'final_cost' output (a "
                                 "TrainModel); pass a dict of output gradients instead")
            return {"final_cost": self.backend.ones(dtype=self.backend.dtype)}
        if type(og) is not dict and not isinstance(og, Mapping):
            raise TypeMismatchError(not_a_dict("output_gradients", og, "output name: gradient"))
        if not og.keys() <= self._output_key_set:
            unknown = set(og) - self._output_key_set
            raise InputError(f"output_gradients has unknown keys {sorted(unknown)}; outputs "
                             f"are {self.output_keys}")
        types, checks = self._array_types, self._output_checks
        for key, g in og.items():
            check = checks.get(key)
            if check is None and isinstance(g, tuple | list):
                raise InputError(
                    f"output gradient of {key!r} is a {type(g).__name__}: gradients of an "
                    "output holding a tuple (list) of tensors are not taken; expose its "
                    f"elements as outputs ({key}[0], ...) and give theirs")
            if g is None or check is None:  # None: not differentiated; scalar outputs
                continue
            if not isinstance(g, types):
                raise self._framework_error("output gradient of", key, g, "")
            pattern, fixed, mode = check
            if mode:
                self._check_dtype("output gradient of", key, g, mode)
            shape = getattr(g, "shape", None)
            if fixed is not None and (shape == fixed or (shape is not None
                                                         and tuple(shape) == fixed)):
                continue
            if pattern.rank is not None:
                self._check_gradient_shape(key, g, pattern, bound or {})
        return dict(og)

    def _check_gradient_shape(self, key: str, g: Any, pattern: ShapePattern,
                              bound: dict[int, tuple[int, str]]) -> None:
        """An output gradient is shaped like its output (symbols as the inputs bound them)."""
        want: list[Any] = []
        for d in pattern.dims:
            if isinstance(d, int):
                want.append(d)
            else:
                seen = bound.get(d[1])
                want.append(seen[0] if seen is not None else d[0])
        shape = getattr(g, "shape", None)
        got = None if shape is None else tuple(shape)
        if got is None or len(got) != len(want) or any(
                isinstance(w, int) and w != n for w, n in zip(want, got, strict=False)):
            raise ShapeMismatchError(
                f"output gradient of {key!r} has shape {shape_of(g)}, but the output has "
                f"shape [{', '.join(str(w) for w in want)}]; an output gradient is shaped "
                "like its output")

    def _check(self, params: Mapping[str, Any], data: Mapping[str, Any]
               ) -> dict[int, tuple[int, str]] | None:
        """Check ``evaluate``'s params and inputs; the values symbols (batch size ``N``) took
        in the inputs, for checking output gradients."""
        if type(params) is not dict and not isinstance(params, Mapping):
            raise TypeMismatchError(not_a_dict("params", params, "name: array"))
        if type(data) is not dict and not isinstance(data, Mapping):
            raise TypeMismatchError(not_a_dict("inputs", data, "name: array"))
        if params.keys() != self._param_keys:
            self._key_error("params", params, self._param_keys, frozenset())
        keys = data.keys()
        if keys != self._required_data:
            self._key_error("inputs", data, self._required_data, self._optional_data)
        self._check_arrays("parameter", params, self._param_checks, "randomize_params()")
        if self._data_checks:
            return self._check_data(data)
        return None

    def _framework_error(self, what: str, key: str, x: Any, hint: str) -> TypeMismatchError:
        b = self.backend
        return TypeMismatchError(
            f"{what} {key!r} is {describe(x)}; the model was compiled for {b.name} arrays "
            f"({b.array_type_names}) of {b.dtype!r} — convert it with backend.array(...)"
            f"{hint}")

    def _check_dtype(self, what: str, key: str, x: Any, mode: int) -> None:
        """``mode`` _EXACT: the backend's float dtype; _NO_OTHER_FLOAT: not another float."""
        dt = getattr(x, "dtype", None)
        why = "it meets the model's parameters" if what == "input" else "the output is a float"
        if mode == _EXACT:
            if dt == self._float_dtype:
                return
        elif dt not in self._other_floats:
            return
        b = self.backend
        if dt in self._other_floats:
            raise TypeMismatchError(
                f"{what} {key!r} is {describe(x)}; the model was compiled for {b.name} "
                f"arrays of {b.dtype!r} (use backend.array(...))")
        raise TypeMismatchError(
            f"{what} {key!r} is {describe(x)}, but the model computes with it in "
            f"{b.dtype!r} ({why}): pass {b.name} arrays of "
            f"{b.dtype!r}, e.g. backend.array(x, dtype=backend.dtype)")

    def _check_data(self, data: Mapping[str, Any]) -> dict[int, tuple[int, str]]:
        bound: dict[int, tuple[int, str]] = {}
        types, fdt, others = self._array_types, self._float_dtype, self._other_floats
        for key, pattern, fixed, mode in self._data_checks:
            x = data[key]
            if not isinstance(x, types):
                raise self._framework_error("input", key, x, "")
            if mode == _EXACT:
                if getattr(x, "dtype", None) != fdt:
                    self._check_dtype("input", key, x, mode)
            elif mode and getattr(x, "dtype", None) in others:
                self._check_dtype("input", key, x, mode)
            shape = getattr(x, "shape", None)
            if shape is None:
                raise TypeMismatchError(
                    f"input {key!r} is {describe(x)}; pass a {self.backend.name} array "
                    "(backend.array(...))")
            if fixed is not None and (shape == fixed or tuple(shape) == fixed):
                continue
            if pattern.rank is None:
                continue
            if len(shape) != pattern.rank:
                raise ShapeMismatchError(
                    f"input {key!r} has shape {list(shape)}, the model expects "
                    f"{pattern_text(pattern)}")
            for axis, (want, got) in enumerate(zip(pattern.dims, shape, strict=True)):
                if isinstance(want, int):
                    if want != got:
                        raise ShapeMismatchError(
                            f"input {key!r} has shape {list(shape)}, the model expects "
                            f"{pattern_text(pattern)} (axis {axis} must be {want})")
                else:
                    name, sid = want
                    seen = bound.get(sid)
                    if seen is None:
                        bound[sid] = (int(got), key)
                    elif seen[0] != got:
                        raise ShapeMismatchError(
                            f"input {key!r} has {name} = {got} at axis {axis}, but input "
                            f"{seen[1]!r} has {name} = {seen[0]}")
        return bound

    def _key_error(self, what: str, given: Mapping[str, Any], required: frozenset[str],
                   optional: frozenset[str]) -> None:
        missing = sorted(required - set(given))
        unknown = sorted(set(given) - required - optional)
        if not missing and not unknown:
            return
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unknown:
            parts.append(f"unknown {unknown}")
        hint = ""
        if what == "params":
            hint = "; use randomize_params() for the full set"
        raise InputError(f"{what}: {' and '.join(parts)}; expected {sorted(required)}{hint}")

    def _check_rng(self, rng: Any) -> None:
        b = self.backend
        if not isinstance(rng, b.rng_types):
            raise TypeMismatchError(
                f"rng is {describe(rng)}; {b.name} random layers take {b.rng_type_names}")

    def _check_state(self, state: Mapping[str, Any]) -> None:
        if type(state) is not dict and not isinstance(state, Mapping):
            raise TypeMismatchError(not_a_dict("state", state, "name: array"))
        if state.keys() != self._state_keys:
            self._key_error("state", state, self._state_keys, frozenset())
        self._check_arrays("state", state, self._state_checks, "pm.initial_state_dict")

    def _check_arrays(self, what: str, values: Mapping[str, Any],
                      checks: list[tuple[str, tuple[int, ...]]], source: str) -> None:
        """Framework, shape and float dtype of parameters or state (``checks``: key, shape);
        ``source`` says where correct arrays come from."""
        types, fdt = self._array_types, self._float_dtype
        for key, shape in checks:
            x = values[key]
            if not isinstance(x, types):
                raise self._framework_error(what, key, x, f" or {source}")
            xs = getattr(x, "shape", None)
            if xs != shape and (xs is None or tuple(xs) != shape):
                raise ShapeMismatchError(
                    f"{what} {key!r} has shape {shape_of(x)}, the model expects "
                    f"{list(shape)}; start from {source}")
            if getattr(x, "dtype", None) != fdt:
                raise TypeMismatchError(
                    f"{what} {key!r} is {describe(x)}; the model was compiled for "
                    f"{self.backend.name} arrays of {self.backend.dtype!r} — create it with "
                    f"backend.array(...) or {source}")


#: dtype checks of data inputs and output gradients
_EXACT = 1  # the backend's float dtype (a float input: it meets the parameters)
_NO_OTHER_FLOAT = 2  # any dtype but another float precision (ints and bools too)


def dtype_mode(kinds: int) -> int:
    return _NO_OTHER_FLOAT if kinds & T.FLOAT else 0


def shape_check(pattern: ShapePattern) -> tuple[tuple[int, ...] | None]:
    """The shape itself when every dim is known (one tuple compare per call), else None."""
    if pattern.rank is not None and all(isinstance(d, int) for d in pattern.dims):
        return (tuple(pattern.dims),)
    return (None,)


def not_a_dict(what: str, value: Any, items: str) -> str:
    return f"{what} must be a dict {{{items}}}, got {describe(value)}"


def shape_of(x: Any) -> Any:
    s = getattr(x, "shape", None)
    return list(s) if s is not None else f"(a {type(x).__name__} without shape)"


def describe(x: Any) -> str:
    dt = getattr(x, "dtype", None)
    return f"a {type(x).__module__.split('.')[0]} {type(x).__name__}" + (
        f" of {dt}" if dt is not None else "")


def pattern_text(p: ShapePattern) -> str:
    if p.rank is None:
        return "any shape"
    return "[" + ", ".join(str(d) if isinstance(d, int) else d[0] for d in p.dims) + "]"
