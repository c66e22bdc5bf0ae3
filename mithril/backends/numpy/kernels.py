"""NumPy kernels: one per core primitive of the catalogue (``ops.core_ops()``), plus the derived
ones NumPy runs faster or more accurately than their decomposition, all in ``registry``.

Generated code calls kernels by catalogue name with the catalogue's inputs in order (see
``docs/dev/kernel-contract.md``). Where the framework's own function has a kernel's exact
semantics, that function is the kernel (``np.exp``, ``operator.add``). Besides the primitives
there are the inference variants ``batch_norm_inference`` / ``dropout_inference``, ``split_rng``,
and training variants ``<op>_fwd(*inputs) -> (output, cache)`` whose cache the matching VJP in
``vjps.py`` reuses: ``conv2d_fwd`` (the im2col matrix ``(groups, C/groups * kh * kw, N * L)``),
``max_pool2d_fwd`` (per kernel offset, the mask of the windows whose first maximum sits there),
``batch_norm_fwd`` (``(normalised input, 1/std)``), ``scaled_dot_product_fwd`` (the attention
probabilities), ``dropout_fwd`` (the scaled keep mask), ``eigvalsh_fwd`` (the eigenvectors) and
the recurrent layers' ``<mode>_fwd`` (``loops.py``).

Kernels never modify their inputs; they may return views of them (``reshape``, ``transpose``,
``broadcast_to``, ...), so callers must treat results as read-only.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import ArgumentTypeError
from ...framework import types as _types
from ..kernel_args import polynomial, size_tuple
from ..registry import KernelRegistry

#: this module's kernels, by primitive (``registry.table()`` checks them)
registry = KernelRegistry("numpy")
kernel = registry.kernel


def _native_dtype(dtype: Any) -> np.dtype:
    """The NumPy dtype for a Mithril ``Dtype`` (or anything ``types.as_dtype`` accepts)."""
    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        return np.dtype(dtype)
    d = _types.as_dtype(dtype)
    if d.name == "bfloat16":
        raise ArgumentTypeError("NumPy has no bfloat16 dtype, so the NumPy backend cannot use "
                                "ml.bfloat16; use ml.float16, ml.float32 or ml.float64")
    return np.dtype(d.name)


def _float_dtype(x: np.ndarray) -> np.dtype:
    """``x``'s dtype if it is a float dtype, else float64 (NumPy's promotion for ints)."""
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)


def _output_of(fwd: Callable[..., Any]) -> Callable[..., Any]:
    """The kernel that returns ``fwd``'s output without its cache (``fwd``'s signature)."""

    def output(*args: Any, **kwargs: Any) -> Any:
        return fwd(*args, **kwargs)[0]

    output.__wrapped__ = fwd  # inspect.signature(output) is fwd's
    return output


registry.kernels_from({
    # elementwise; tensor-or-number terminals: a Python number stays weakly typed
    "add": operator.add, "subtract": operator.sub, "multiply": operator.mul,
    "divide": np.true_divide, "floor_divide": np.floor_divide, "power": np.power,
    "minimum": np.minimum, "maximum": np.maximum, "greater": np.greater,
    "greater_equal": np.greater_equal, "equal": np.equal, "logical_and": np.logical_and,
    "negate": np.negative, "absolute": np.abs, "exp": np.exp, "log": np.log, "sqrt": np.sqrt,
    "sign": np.sign, "sin": np.sin, "cos": np.cos, "floor": np.floor, "tanh": np.tanh,
    "logical_not": np.logical_not, "where": np.where, "matmul": np.matmul,
    "relu": lambda input: np.maximum(input, 0),
    "stop_gradient": lambda input: input,
    "nan_to_num": lambda input, nan=0.0, posinf=None, neginf=None: np.nan_to_num(
        input, nan=nan, posinf=posinf, neginf=neginf),
    # reductions
    "sum": lambda input, axis=None, keepdim=False: np.sum(input, axis, keepdims=keepdim),
    "max": lambda input, axis=None, keepdim=False: np.max(input, axis, keepdims=keepdim),
    "prod": lambda input, axis=None, keepdim=False: np.prod(input, axis, keepdims=keepdim),
    "argmax": lambda input, axis=None, keepdim=False: np.asarray(
        np.argmax(input, axis, keepdims=keepdim), dtype=np.int64),
    # shapes, linear algebra, sets
    "reshape": np.reshape, "transpose": np.transpose, "broadcast_to": np.broadcast_to,
    "cholesky": np.linalg.cholesky, "eigvalsh": np.linalg.eigvalsh, "unique": np.unique,
    "dtype_of": lambda input: _types.as_dtype(np.asarray(input).dtype.name),
})
registry.kernels_from({"eigvalsh": np.linalg.eigh}, mode="with_cache")


@kernel("sigmoid")
def sigmoid(input: np.ndarray) -> np.ndarray:
    """``1 / (1 + e^-x)`` as ``e^min(x, 0) / (1 + e^-|x|)``: no overflow, no branches."""
    return np.exp(np.minimum(input, 0)) / (1 + np.exp(-np.abs(input)))


@kernel("softplus")
def softplus(input: np.ndarray) -> np.ndarray:
    """``max(x, 0) + log1p(e^-|x|)`` (never overflows), the identity above 20 (PyTorch's
    threshold: the catalogue's definition)."""
    smooth = np.maximum(input, 0) + np.log1p(np.exp(-np.abs(input)))
    return np.where(input > 20, input, smooth).astype(smooth.dtype, copy=False)


def _erfc(x: np.ndarray) -> np.ndarray:
    """The complementary error function, elementwise, in ``x``'s float dtype."""
    try:
        from scipy.special import erfc as scipy_erfc
    except ImportError:  # pragma: no cover - scipy is optional
        return np.asarray(np.frompyfunc(math.erfc, 1, 1)(x), dtype=x.dtype)
    return scipy_erfc(x)


#: the constants of GELU's tanh form: sqrt(2 / pi) and the cubic coefficient
_GELU_K, _GELU_C = math.sqrt(2.0 / math.pi), 0.044715


@kernel("gelu")
def gelu(input: np.ndarray, approximate: bool = False) -> np.ndarray:
    """``x * Phi(x)`` by ``erfc``; ``approximate=True`` is PyTorch's tanh form."""
    x = np.asarray(input)
    x = x if x.dtype.kind == "f" else x.astype(np.float64)
    if approximate:
        return 0.5 * x * (1 + np.tanh(_GELU_K * (x + _GELU_C * x * x * x)))
    return 0.5 * x * _erfc(x * -math.sqrt(0.5))


@kernel("softmax")
def softmax(input: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shifted by the maximum for stability (fused: faster than the decomposition)."""
    z = input - np.max(input, axis=axis, keepdims=True)
    e = np.exp(z)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


@kernel("log_softmax")
def log_softmax(input: np.ndarray, axis: int = -1) -> np.ndarray:
    """``z - log(sum(e^z))`` with ``z`` shifted by the maximum (fused, stable)."""
    z = input - np.max(input, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


@kernel("cast")
def cast(input: Any, dtype: Any) -> np.ndarray:
    return np.asarray(input).astype(_native_dtype(dtype), copy=False)


@kernel("linear")
def linear(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``input @ weight.T + bias``, batch dims flattened into one GEMM."""
    if input.ndim > 2:
        out = np.matmul(input.reshape(-1, input.shape[-1]), weight.T)
        out = out.reshape(*input.shape[:-1], weight.shape[0])
    else:
        out = np.matmul(input, weight.T)
    if bias is not None:
        out = out + bias
    return out


_NO_AXIS = object()


def _split_concat_args(args: tuple[Any, ...], axis: Any) -> tuple[list[Any], int | None]:
    """Separate ``concat``'s trailing positional ``axis`` from its tensors."""
    if axis is not _NO_AXIS:
        return list(args), axis
    if args and (args[-1] is None or isinstance(args[-1], int | np.integer)):
        return list(args[:-1]), args[-1]
    return list(args), 0


@kernel("concat")
def concat(*inputs: Any, axis: Any = _NO_AXIS) -> np.ndarray:
    """Called as ``concat(x1, ..., xn, axis)`` (the catalogue order); ``axis`` may also be a
    keyword, and defaults to 0 when the last positional argument is a tensor."""
    tensors, ax = _split_concat_args(inputs, axis)
    return np.concatenate(tensors, axis=ax)


@kernel("indexer")
def indexer(input: Any, index: Any) -> Any:
    out = input[index]
    if isinstance(input, np.ndarray) and not isinstance(out, np.ndarray):
        out = np.asarray(out)
    return out


@kernel("to_tensor")
def to_tensor(input: Any, *, float_dtype: Any = np.float32) -> np.ndarray:
    """Floats in ``float_dtype`` (bound to the backend's dtype in the kernel table), ints int64,
    bools bool."""
    arr = np.asarray(input)
    kind = arr.dtype.kind
    if kind == "f":
        return arr.astype(_native_dtype(float_dtype), copy=False)
    if kind in "iu":
        return arr.astype(np.int64, copy=False)
    if kind == "b":
        return arr
    raise TypeError(f"to_tensor cannot make an array from {input!r}")


@kernel("arange")
def arange(start: float = 0, stop: float | None = None, step: float = 1,
           dtype: Any = None) -> np.ndarray:
    """``dtype=None``: int64 for ints, else float64."""
    if dtype is not None:
        return np.arange(start, stop, step, dtype=_native_dtype(dtype))
    out = np.arange(start, stop, step)
    return out.astype(np.int64, copy=False) if out.dtype.kind in "iu" else out


@kernel("randn")
def randn(shape: Any, dtype: Any = None,
          rng: np.random.Generator | None = None) -> np.ndarray:
    """Drawn from ``rng`` in float32 or float64 (``dtype=None``: float64)."""
    gen = np.random.default_rng() if rng is None else rng
    dt = np.dtype(np.float64) if dtype is None else _native_dtype(dtype)
    draw = np.float32 if dt == np.float32 else np.float64
    return gen.standard_normal(size_tuple(shape), dtype=draw).astype(dt, copy=False)


@kernel("randint")
def randint(shape: Any, low: int = 0, high: int | None = None, dtype: Any = None,
            rng: np.random.Generator | None = None) -> np.ndarray:
    gen = np.random.default_rng() if rng is None else rng
    dt = np.dtype(np.int64) if dtype is None else _native_dtype(dtype)
    return gen.integers(low, high, size_tuple(shape), dtype=np.int64).astype(dt, copy=False)


def _with_ones(input: np.ndarray) -> np.ndarray:
    return np.concatenate([input, np.ones_like(input[..., :1])], axis=-1)


registry.kernels_from({"polynomial_features": lambda input, degree: polynomial(
    _with_ones(input), degree, lambda xa, columns: xa[..., columns])})


@kernel("split_rng")
def split_rng(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    """``n`` generators for ``n`` random kernels: the stateful generator shared ``n`` times."""
    return [rng] * n


from . import nn as _nn  # noqa: E402, F401 - registers the numpy nn kernels
