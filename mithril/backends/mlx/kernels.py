"""MLX kernels: one function per tensor primitive of the catalogue (see kernel-contract.md).

Arguments arrive positionally in catalogue order. Tensor-or-number terminals may be plain Python
numbers; MLX promotes them without upcasting the array's precision. Convolutions take the
contract's channels-first layouts (``NCL``/``NCHW`` input, ``OIL``/``OIHW`` weight) and
transpose to MLX's channels-last layouts internally.

MLX 0.32 has float64 on the CPU, with gaps this module fills for float64 arrays:
- ``mx.exp``, ``mx.sin``, ``mx.cos``, ``mx.erf`` and ``mx.sigmoid`` (and softmax / logaddexp,
  built on ``exp``) compute at float32 accuracy, and ``exp`` overflows above 88. Float64 uses
  accurate compositions of MLX's exact float64 ops (``power``, ``tan``, ``log1p``) instead.
- Convolutions with dilation or groups (and the input gradient of strided ones) are
  unsupported; float64 convolutions unfold the windows and use one grouped matmul instead.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import mlx.core as mx
import numpy as np

from ...framework.scan import register_scan
from ...framework.types import FLOAT, INT, as_dtype, kind_of_python
from ..monomials import monomial_indices
from ..registry import KernelRegistry

#: this module's kernels, by primitive (``registry.table()`` checks them)
registry = KernelRegistry("mlx")
kernel = registry.kernel

_Array = mx.array

_DTYPES: dict[str, mx.Dtype] = {
    "float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32,
    "float64": mx.float64, "int8": mx.int8, "int16": mx.int16, "int32": mx.int32,
    "int64": mx.int64, "uint8": mx.uint8, "bool": mx.bool_,
}


def mx_dtype(dtype: Any) -> mx.Dtype:
    """The MLX dtype for a Mithril ``Dtype`` (or its name); MLX dtypes pass through."""
    if isinstance(dtype, mx.Dtype):
        return dtype
    return _DTYPES[as_dtype(dtype).name]


# ---- float64-accurate elementwise functions (MLX's own are float32-accurate for float64) ----
def _is_f64(x: _Array) -> bool:
    return x.dtype == mx.float64


@kernel("exp")
def exp(input: _Array) -> _Array:
    # float64 through ``power``, which MLX computes in full precision
    return mx.power(math.e, input) if _is_f64(input) else mx.exp(input)


@mx.custom_function
def _sin64(x: _Array) -> _Array:
    t = mx.tan(x * 0.5)
    return 2 * t / (1 + t * t)


@mx.custom_function
def _cos64(x: _Array) -> _Array:
    t2 = mx.square(mx.tan(x * 0.5))
    return (1 - t2) / (1 + t2)


@_sin64.vjp
def _sin64_vjp(x: _Array, cotangent: _Array, output: _Array) -> _Array:
    return cotangent * _cos64(x)


@_cos64.vjp
def _cos64_vjp(x: _Array, cotangent: _Array, output: _Array) -> _Array:
    return -cotangent * _sin64(x)


@mx.custom_function
def _sigmoid64(x: _Array) -> _Array:
    return mx.where(x >= 0, 1 / (1 + exp(-x)), exp(x) / (1 + exp(x)))


@_sigmoid64.vjp
def _sigmoid64_vjp(x: _Array, cotangent: _Array, output: _Array) -> _Array:
    return cotangent * output * (1 - output)


_ERF_TERMS = 100  # enough for |x| <= 6; beyond, erf(x) rounds to +-1 in float64


@mx.custom_function
def _erf64(x: _Array) -> _Array:
    """``erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (2n+1)!!`` (no cancellation)."""
    z = mx.clip(x, -6.0, 6.0)
    step = 2 * z * z
    term = total = z
    for n in range(_ERF_TERMS):
        term = term * step / (2 * n + 3)
        total = total + term
    return mx.clip((2 / math.sqrt(math.pi)) * exp(-z * z) * total, -1.0, 1.0)


@_erf64.vjp
def _erf64_vjp(x: _Array, cotangent: _Array, output: _Array) -> _Array:
    return cotangent * (2 / math.sqrt(math.pi)) * exp(-x * x)


@kernel("sin")
def sin(input: _Array) -> _Array:
    return _sin64(input) if _is_f64(input) else mx.sin(input)


@kernel("cos")
def cos(input: _Array) -> _Array:
    return _cos64(input) if _is_f64(input) else mx.cos(input)


@kernel("sigmoid")
def sigmoid(input: _Array) -> _Array:
    return _sigmoid64(input) if _is_f64(input) else mx.sigmoid(input)


# ---- MLX's own functions, where they are the kernel exactly ----
registry.kernels_from({
    "add": mx.add, "subtract": mx.subtract, "multiply": mx.multiply, "divide": mx.divide,
    "floor_divide": mx.floor_divide, "power": mx.power, "minimum": mx.minimum,
    "maximum": mx.maximum, "greater": mx.greater, "greater_equal": mx.greater_equal,
    "equal": mx.equal, "logical_and": mx.logical_and, "where": mx.where,
    "negate": mx.negative, "absolute": mx.abs, "log": mx.log, "sqrt": mx.sqrt,
    "sign": mx.sign, "floor": mx.floor, "tanh": mx.tanh, "stop_gradient": mx.stop_gradient,
    "logical_not": mx.logical_not, "matmul": mx.matmul, "sum": mx.sum, "max": mx.max,
    "prod": mx.prod, "reshape": mx.reshape, "transpose": mx.transpose,
    "broadcast_to": mx.broadcast_to, "pad": mx.pad, "indexer": operator.getitem,
    # argmax as int64 (MLX's is uint32); dtype_of as the Mithril dtype
    "argmax": lambda input, axis=None, keepdim=False: mx.argmax(input, axis, keepdim).astype(
        mx.int64),
    "dtype_of": lambda input: as_dtype(str(input.dtype)),
    "embedding": lambda input, weight: mx.take(weight, input, axis=0),
    "one_hot": lambda input, num_classes: mx.expand_dims(input, -1) == mx.arange(num_classes),
})


# ---- elementwise with more to it ----
@kernel("relu")
def relu(input: _Array) -> _Array:
    # NaN stays NaN, as in PyTorch (``mx.maximum(x, 0)`` or ``where(x > 0, x, 0)`` give 0)
    return mx.where(input <= 0, mx.zeros_like(input), input)


@kernel("softplus")
def softplus(input: _Array) -> _Array:
    # the identity above 20 (PyTorch's threshold, beta 1: the catalogue's definition)
    if not _is_f64(input):
        return mx.where(input > 20, input, mx.logaddexp(input, mx.zeros_like(input)))
    return mx.where(input > 20, input, mx.log1p(exp(mx.minimum(input, 20.0))))


@kernel("gelu")
def gelu(input: _Array, approximate: bool = False) -> _Array:
    if approximate:
        inner = math.sqrt(2.0 / math.pi) * (input + 0.044715 * input * input * input)
        return 0.5 * input * (1 + mx.tanh(inner))
    erf = _erf64 if _is_f64(input) else mx.erf
    return 0.5 * input * (1 + erf(input * (1 / math.sqrt(2.0))))


@kernel("nan_to_num")
def nan_to_num(input: _Array, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> _Array:
    # infinities default to the dtype's largest finite values
    if not mx.issubdtype(input.dtype, mx.floating):
        return input
    info = mx.finfo(input.dtype)
    hi = info.max if posinf is None else posinf
    lo = info.min if neginf is None else neginf
    out = mx.where(mx.isnan(input), mx.array(nan, input.dtype), input)
    out = mx.where(mx.isposinf(out), mx.array(hi, input.dtype), out)
    return mx.where(mx.isneginf(out), mx.array(lo, input.dtype), out)


@kernel("softmax")
def softmax(input: _Array, axis: Any = -1) -> _Array:
    if not _is_f64(input):
        return mx.softmax(input, axis=axis)
    shifted = exp(input - mx.stop_gradient(mx.max(input, axis=axis, keepdims=True)))
    return shifted / mx.sum(shifted, axis=axis, keepdims=True)


@kernel("log_softmax")
def log_softmax(input: _Array, axis: Any = -1) -> _Array:
    shifted = input - mx.stop_gradient(mx.max(input, axis=axis, keepdims=True))
    if not _is_f64(input):
        # shifted first, as PyTorch does: a row holding +inf is NaN (inf - inf), not -inf
        return shifted - mx.logsumexp(shifted, axis=axis, keepdims=True)
    return shifted - mx.log(mx.sum(exp(shifted), axis=axis, keepdims=True))


@kernel("cast")
def cast(input: _Array, dtype: Any) -> _Array:
    return input.astype(mx_dtype(dtype))


@kernel("linear")
def linear(input: _Array, weight: _Array, bias: _Array | None) -> _Array:
    out = mx.matmul(input, mx.swapaxes(weight, -1, -2))
    return out if bias is None else out + bias


# ---- shapes, creation, scalar plumbing ----
@kernel("concat")
def concat(*args: Any) -> _Array:
    """``concat(*inputs, axis)``: join tensors along ``axis`` (flattened first if ``None``)."""
    *inputs, axis = args
    if axis is None:
        return mx.concatenate([mx.reshape(x, (-1,)) for x in inputs], axis=0)
    return mx.concatenate(list(inputs), axis=axis)


@kernel("to_tensor")
def to_tensor(input: Any, *, float_dtype: Any) -> _Array:
    """A Python number or nested list as an array: floats in ``float_dtype``, ints int64."""
    kind = _python_kind(input)
    dtype = mx_dtype(float_dtype) if kind == FLOAT else mx.int64 if kind == INT else mx.bool_
    return mx.array(input, dtype=dtype)


def _python_kind(value: Any) -> int:
    """The widest kind (bool < int < float) among the leaves of a nested list."""
    if isinstance(value, list | tuple):
        kinds = [_python_kind(v) for v in value]
        return max(kinds) if kinds else FLOAT
    return kind_of_python(value)


def _size(shape: Any) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


@kernel("arange")
def arange(start: Any = 0, stop: Any = None, step: Any = 1, dtype: Any = None) -> _Array:
    # dtype None: int64 for ints, else float32
    if dtype is not None:
        target = mx_dtype(dtype)
    elif all(isinstance(v, int) for v in (start, stop, step)):
        target = mx.int64
    else:
        target = mx.float32
    return mx.arange(start, stop, step, dtype=target)


@kernel("randn")
def randn(shape: Any, dtype: Any = None, rng: _Array | None = None) -> _Array:
    target = mx.float32 if dtype is None else mx_dtype(dtype)
    return mx.random.normal(_size(shape), dtype=target, key=rng)


@kernel("randint")
def randint(shape: Any, low: int = 0, high: int | None = None, dtype: Any = None,
            rng: _Array | None = None) -> _Array:
    target = mx.int64 if dtype is None else mx_dtype(dtype)
    return mx.random.randint(low, high, _size(shape), dtype=target, key=rng)


@kernel("split_rng")
def split_rng(rng: _Array, n: int) -> list[_Array]:
    """``n`` independent keys split from ``rng``."""
    keys = mx.random.split(rng, n)
    return [keys[i] for i in range(n)]


@kernel("unique")
def unique(input: _Array) -> _Array:
    # the length depends on the data: computed eagerly through NumPy (not under mx.compile)
    return mx.array(np.unique(np.array(input)), dtype=input.dtype)


@kernel("polynomial_features")
def polynomial_features(input: _Array, degree: int) -> _Array:
    # columns in scikit-learn's PolynomialFeatures(include_bias=False) order
    idx = monomial_indices(input.shape[-1], degree)
    xa = mx.concatenate([input, mx.ones_like(input[..., :1])], axis=-1)
    columns = [mx.array(idx[:, k].astype("int32")) for k in range(degree)]
    out = mx.take(xa, columns[0], axis=-1)
    for k in range(1, degree):
        out = out * mx.take(xa, columns[k], axis=-1)
    return out


# ---- linear algebra on the CPU stream, with the VJPs MLX lacks ----
def _mT(x: _Array) -> _Array:
    return mx.swapaxes(x, -1, -2)


@mx.custom_function
def _cholesky(a: _Array) -> _Array:
    return mx.linalg.cholesky(a, stream=mx.cpu)


@_cholesky.vjp
def _cholesky_vjp(a: _Array, cotangent: _Array, output: _Array) -> _Array:
    """``L^-T Φ(L^T Ḡ) L^-1`` (the NumPy backend's formula)."""
    low = output
    p = mx.tril(mx.matmul(_mT(low), cotangent))
    p = 0.5 * (p + _mT(mx.tril(p, -1)))
    x = mx.linalg.solve_triangular(_mT(low), p, upper=True, stream=mx.cpu)
    return _mT(mx.linalg.solve_triangular(_mT(low), _mT(x), upper=True, stream=mx.cpu))


@mx.custom_function
def _eigvalsh(a: _Array) -> _Array:
    return mx.linalg.eigvalsh(a, stream=mx.cpu)


@_eigvalsh.vjp
def _eigvalsh_vjp(a: _Array, cotangent: _Array, output: _Array) -> _Array:
    """``V diag(Ḡ) V^T``."""
    vectors = mx.linalg.eigh(a, stream=mx.cpu)[1]
    return mx.matmul(vectors * mx.expand_dims(cotangent, -2), _mT(vectors))


registry.kernels_from({"cholesky": _cholesky, "eigvalsh": _eigvalsh})

from . import nn as _nn  # noqa: E402, F401 - registers the mlx nn kernels

# issue 15: the generic loop (Scan) over a user's body model, a Python loop of MLX kernels
register_scan(registry, "python")
