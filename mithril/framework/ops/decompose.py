"""Running derived primitives from their decompositions.

A derived primitive's ``decompose(k, *inputs)`` is written against ``k``, an object whose
attributes are a backend's kernels (``k.exp``, ``k.sum``). When a backend registers no kernel of
its own for a derived primitive, :func:`composed_kernels` builds one by calling the decomposition
with the backend's kernel table: autodiff backends differentiate through it as through any other
code. For a backend with its own gradients (NumPy) the composed kernel also has a ``_fwd``
variant that records every kernel call on a tape, and a VJP that walks the tape backwards with
the core VJPs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class KernelNamespace:
    """Kernels of a table as attributes (``k.exp(x)``), composed ones included.

    >>> import numpy as np
    >>> k = KernelNamespace({"exp": np.exp})
    >>> float(k.exp(0.0))
    1.0
    """

    def __init__(self, table: dict[str, Callable[..., Any]]) -> None:
        self._table = table  # read at call time: composed kernels join it after creation

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            return self._table[name]
        except KeyError:
            raise AttributeError(f"no kernel {name!r}") from None


class _Tape:
    """Kernel calls of one run of a decomposition, for its VJP (NumPy)."""

    def __init__(self, table: dict[str, Callable[..., Any]]) -> None:
        self.table = table
        self.records: list[tuple[str, tuple[Any, ...], Any, Any]] = []

    def namespace(self) -> _Recording:
        return _Recording(self)

    def _recorder(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        fwd = self.table.get(f"{name}_fwd")

        def call(*args: Any) -> Any:
            if fwd is not None:
                out, cache = fwd(*args)
            else:
                out, cache = fn(*args), None
            self.records.append((name, args, out, cache))
            return out

        return call


class _Recording:
    """``k`` for a decomposition run on a tape: each kernel call is recorded."""

    def __init__(self, tape: _Tape) -> None:
        self._tape = tape

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return self._tape._recorder(name, self._tape.table[name])


def _backward(table: dict[str, Callable[..., Any]], records: list[tuple[str, tuple[Any, ...],
              Any, Any]], inputs: tuple[Any, ...], output: Any, grad: Any) -> tuple[Any, ...]:
    """Gradients of the decomposition's inputs from the tape, by the core VJPs in reverse."""
    grads: dict[int, Any] = {}

    def add(x: Any, g: Any) -> None:
        if g is None:
            return
        key = id(x)
        grads[key] = g if key not in grads else grads[key] + g

    if isinstance(output, tuple):
        for o, g in zip(output, grad, strict=True):
            add(o, g)
    else:
        add(output, grad)
    for name, args, out, cache in reversed(records):
        g = grads.pop(id(out), None)
        if g is None:
            continue
        vjp = table.get(f"{name}_vjp")
        if vjp is None:  # not differentiable (argmax, comparisons, stop_gradient): no gradient
            continue
        for a, ga in zip(args, vjp(g, out, *args, cache=cache), strict=False):
            if ga is not None and a is not None and hasattr(a, "shape"):
                add(a, ga)
    return tuple(grads.get(id(x)) if hasattr(x, "shape") else None for x in inputs)


def _composed(formula: Callable[..., Any], table: dict[str, Callable[..., Any]]
              ) -> Callable[..., Any]:
    k = KernelNamespace(table)

    def kernel(*inputs: Any) -> Any:
        return formula(k, *inputs)

    kernel.__doc__ = f"Composed from core kernels by {formula.__qualname__}."
    return kernel


def _composed_fwd(formula: Callable[..., Any], table: dict[str, Callable[..., Any]]
                  ) -> Callable[..., Any]:
    def fwd(*inputs: Any) -> Any:
        tape = _Tape(table)
        out = formula(tape.namespace(), *inputs)
        return out, tape.records

    return fwd


def _composed_vjp(formula: Callable[..., Any], table: dict[str, Callable[..., Any]]
                  ) -> Callable[..., Any]:
    def vjp(grad: Any, output: Any, *inputs: Any, cache: Any = None) -> tuple[Any, ...]:
        if cache is None:  # recompute: the outputs of this run are the ones the tape knows
            output, cache = _composed_fwd(formula, table)(*inputs)
        return _backward(table, cache, inputs, output, grad)

    return vjp


def composed_kernels(table: dict[str, Callable[..., Any]], manual_gradients: bool
                     ) -> dict[str, Callable[..., Any]]:
    """Kernels (and VJPs with ``manual_gradients``) of the derived primitives ``table`` lacks.

    Every derived primitive's decomposition reads ``table`` as it will be once this returns, so
    derived primitives may use each other.
    """
    from . import CATALOGUE

    out: dict[str, Callable[..., Any]] = {}
    full = table  # the caller's dict, updated with ``out`` before any kernel runs
    for op in CATALOGUE.values():
        if op.decompose is None:
            continue
        modes = [("", op.decompose)]
        if op.modal:
            modes.append(("_inference", op.decompose_inference or op.decompose))
        for suffix, formula in modes:
            name = op.name + suffix
            if name in table:
                continue
            out[name] = _composed(formula, full)
            if manual_gradients and op.differentiable:
                out[f"{name}_fwd"] = _composed_fwd(formula, full)
                out[f"{name}_vjp"] = _composed_vjp(formula, full)
    return out
