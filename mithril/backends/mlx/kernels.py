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

import builtins
import math
from collections.abc import Sequence
from typing import Any

import mlx.core as mx

from ...framework.scan import register_scan
from ...framework.types import FLOAT, INT, as_dtype, kind_of_python
from ..monomials import monomial_indices
from ..registry import KernelRegistry

#: this module's kernels, by primitive (``registry.table()`` checks them)
registry = KernelRegistry("mlx")
kernel = registry.kernel

_Array = mx.array
_Number = int | float | bool
_ArrayOrNumber = mx.array | int | float | bool
_Axis = int | tuple[int, ...] | None

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


# ----------------------------------------------------------------------------------------------
# Float64-accurate elementwise functions (MLX's own are float32-accurate for float64 input)
# ----------------------------------------------------------------------------------------------
def _is_f64(x: _Array) -> bool:
    return x.dtype == mx.float64


def _exp(x: _Array) -> _Array:
    """``e ** x``; float64 through ``power``, which MLX computes in full precision."""
    return mx.power(math.e, x) if _is_f64(x) else mx.exp(x)


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
    return mx.where(x >= 0, 1 / (1 + _exp(-x)), _exp(x) / (1 + _exp(x)))


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
    return mx.clip((2 / math.sqrt(math.pi)) * _exp(-z * z) * total, -1.0, 1.0)


@_erf64.vjp
def _erf64_vjp(x: _Array, cotangent: _Array, output: _Array) -> _Array:
    return cotangent * (2 / math.sqrt(math.pi)) * _exp(-x * x)


def _sin(x: _Array) -> _Array:
    return _sin64(x) if _is_f64(x) else mx.sin(x)


def _cos(x: _Array) -> _Array:
    return _cos64(x) if _is_f64(x) else mx.cos(x)


def _sigmoid(x: _Array) -> _Array:
    return _sigmoid64(x) if _is_f64(x) else mx.sigmoid(x)


def _erf(x: _Array) -> _Array:
    return _erf64(x) if _is_f64(x) else mx.erf(x)


# ----------------------------------------------------------------------------------------------
# Elementwise binary (Python numbers allowed on either side)
# ----------------------------------------------------------------------------------------------
@kernel("add")
def add(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """``left + right``."""
    return mx.add(left, right)


@kernel("subtract")
def subtract(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """``left - right``."""
    return mx.subtract(left, right)


@kernel("multiply")
def multiply(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """``left * right``."""
    return mx.multiply(left, right)


@kernel("divide")
def divide(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """True division."""
    return mx.divide(left, right)


@kernel("floor_divide")
def floor_divide(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """Division rounded towards minus infinity."""
    return mx.floor_divide(left, right)


@kernel("power")
def power(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """``left ** right``."""
    return mx.power(left, right)


@kernel("minimum")
def minimum(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """Elementwise minimum (NaN propagates)."""
    return mx.minimum(left, right)


@kernel("maximum")
def maximum(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """Elementwise maximum (NaN propagates)."""
    return mx.maximum(left, right)


@kernel("greater")
def greater(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """``left > right``."""
    return mx.greater(left, right)


@kernel("greater_equal")
def greater_equal(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """``left >= right``."""
    return mx.greater_equal(left, right)


@kernel("equal")
def equal(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """``left == right``."""
    return mx.equal(left, right)


@kernel("logical_and")
def logical_and(left: _ArrayOrNumber, right: _ArrayOrNumber) -> _Array:
    """Elementwise logical and."""
    return mx.logical_and(left, right)


# ----------------------------------------------------------------------------------------------
# Elementwise unary
# ----------------------------------------------------------------------------------------------
@kernel("negate")
def negate(input: _Array) -> _Array:
    """``-input``."""
    return mx.negative(input)


@kernel("absolute")
def absolute(input: _Array) -> _Array:
    """``|input|``."""
    return mx.abs(input)


@kernel("exp")
def exp(input: _Array) -> _Array:
    """``e ** input``."""
    return _exp(input)


@kernel("log")
def log(input: _Array) -> _Array:
    """Natural logarithm."""
    return mx.log(input)


@kernel("sqrt")
def sqrt(input: _Array) -> _Array:
    """Square root."""
    return mx.sqrt(input)


@kernel("sign")
def sign(input: _Array) -> _Array:
    """-1, 0 or 1 by the sign of each element."""
    return mx.sign(input)


@kernel("sin")
def sin(input: _Array) -> _Array:
    """Sine."""
    return _sin(input)


@kernel("cos")
def cos(input: _Array) -> _Array:
    """Cosine."""
    return _cos(input)


@kernel("floor")
def floor(input: _Array) -> _Array:
    """Round towards minus infinity."""
    return mx.floor(input)


@kernel("relu")
def relu(input: _Array) -> _Array:
    """``max(input, 0)`` (gradient 0 at 0, like PyTorch); NaN stays NaN, as in PyTorch
    (``mx.maximum(x, 0)`` or ``where(x > 0, x, 0)`` would map it to 0)."""
    return mx.where(input <= 0, mx.zeros_like(input), input)


@kernel("sigmoid")
def sigmoid(input: _Array) -> _Array:
    """Logistic sigmoid."""
    return _sigmoid(input)


@kernel("tanh")
def tanh(input: _Array) -> _Array:
    """Hyperbolic tangent."""
    return mx.tanh(input)


@kernel("softplus")
def softplus(input: _Array) -> _Array:
    """``log(1 + exp(input))``; the identity above 20 (PyTorch's threshold, beta 1: the
    catalogue's definition). Float64 through the accurate ``_exp`` (MLX's own is not)."""
    if not _is_f64(input):
        return mx.where(input > 20, input, mx.logaddexp(input, mx.zeros_like(input)))
    return mx.where(input > 20, input, mx.log1p(_exp(mx.minimum(input, 20.0))))


@kernel("stop_gradient")
def stop_gradient(input: _Array) -> _Array:
    """The input, with no gradient flowing back."""
    return mx.stop_gradient(input)


@kernel("logical_not")
def logical_not(input: _Array) -> _Array:
    """Elementwise logical not."""
    return mx.logical_not(input)


@kernel("gelu")
def gelu(input: _Array, approximate: bool = False) -> _Array:
    """GELU: exact (erf) form, or the tanh approximation when ``approximate``."""
    if approximate:
        inner = math.sqrt(2.0 / math.pi) * (input + 0.044715 * input * input * input)
        return 0.5 * input * (1 + mx.tanh(inner))
    return 0.5 * input * (1 + _erf(input * (1 / math.sqrt(2.0))))


@kernel("nan_to_num")
def nan_to_num(input: _Array, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> _Array:
    """Replace NaN and infinities; infinities default to the dtype's largest finite values."""
    if not mx.issubdtype(input.dtype, mx.floating):
        return input
    info = mx.finfo(input.dtype)
    hi = info.max if posinf is None else posinf
    lo = info.min if neginf is None else neginf
    out = mx.where(mx.isnan(input), mx.array(nan, input.dtype), input)
    out = mx.where(mx.isposinf(out), mx.array(hi, input.dtype), out)
    return mx.where(mx.isneginf(out), mx.array(lo, input.dtype), out)


@kernel("softmax")
def softmax(input: _Array, axis: _Axis = -1) -> _Array:
    """Softmax along ``axis``."""
    if not _is_f64(input):
        return mx.softmax(input, axis=axis)
    shifted = _exp(input - mx.stop_gradient(mx.max(input, axis=axis, keepdims=True)))
    return shifted / mx.sum(shifted, axis=axis, keepdims=True)


@kernel("log_softmax")
def log_softmax(input: _Array, axis: _Axis = -1) -> _Array:
    """``log(softmax(input))`` computed stably."""
    shifted = input - mx.stop_gradient(mx.max(input, axis=axis, keepdims=True))
    if not _is_f64(input):
        # shifted first, as PyTorch does: a row holding +inf is NaN (inf - inf), not -inf
        return shifted - mx.logsumexp(shifted, axis=axis, keepdims=True)
    return shifted - mx.log(mx.sum(_exp(shifted), axis=axis, keepdims=True))


@kernel("cast")
def cast(input: _Array, dtype: Any) -> _Array:
    """``input`` converted to ``dtype`` (a Mithril ``Dtype``)."""
    return input.astype(mx_dtype(dtype))


@kernel("where")
def where(condition: _Array, input1: _ArrayOrNumber, input2: _ArrayOrNumber) -> _Array:
    """``input1`` where ``condition`` holds, else ``input2``."""
    return mx.where(condition, input1, input2)


# ----------------------------------------------------------------------------------------------
# Linear algebra
# ----------------------------------------------------------------------------------------------
@kernel("matmul")
def matmul(left: _Array, right: _Array) -> _Array:
    """Matrix product with NumPy's broadcasting rules."""
    return mx.matmul(left, right)


@kernel("linear")
def linear(input: _Array, weight: _Array, bias: _Array | None) -> _Array:
    """``input @ weight.T + bias`` with ``weight`` shaped ``(out, in)``."""
    out = mx.matmul(input, mx.swapaxes(weight, -1, -2))
    return out if bias is None else out + bias


# ----------------------------------------------------------------------------------------------
# Reductions
# ----------------------------------------------------------------------------------------------
@kernel("sum")
def sum(input: _Array, axis: _Axis = None, keepdim: bool = False) -> _Array:
    """Sum over ``axis`` (all axes when ``None``)."""
    return mx.sum(input, axis=axis, keepdims=keepdim)


@kernel("max")
def max(input: _Array, axis: _Axis = None, keepdim: bool = False) -> _Array:
    """Maximum over ``axis``."""
    return mx.max(input, axis=axis, keepdims=keepdim)


@kernel("prod")
def prod(input: _Array, axis: _Axis = None, keepdim: bool = False) -> _Array:
    """Product over ``axis``."""
    return mx.prod(input, axis=axis, keepdims=keepdim)


@kernel("argmax")
def argmax(input: _Array, axis: int | None = None, keepdim: bool = False) -> _Array:
    """Index of the maximum (of the flattened array when ``axis`` is ``None``), as int64."""
    return mx.argmax(input, axis=axis, keepdims=keepdim).astype(mx.int64)


def _axes(axis: _Axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    items = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in items)


# ----------------------------------------------------------------------------------------------
# Shape manipulation
# ----------------------------------------------------------------------------------------------
@kernel("reshape")
def reshape(input: _Array, shape: Sequence[int]) -> _Array:
    """``input`` with a new shape (one entry may be -1)."""
    return mx.reshape(input, tuple(shape))


@kernel("transpose")
def transpose(input: _Array, axes: Sequence[int] | None = None) -> _Array:
    """Permute axes (reverse them when ``axes`` is ``None``)."""
    return mx.transpose(input, None if axes is None else tuple(axes))


@kernel("broadcast_to")
def broadcast_to(input: _Array, shape: Sequence[int]) -> _Array:
    """Broadcast ``input`` to ``shape``."""
    return mx.broadcast_to(input, tuple(shape))


@kernel("concat")
def concat(*args: Any) -> _Array:
    """``concat(*inputs, axis)``: join tensors along ``axis`` (flattened first if ``None``)."""
    *inputs, axis = args
    if axis is None:
        return mx.concatenate([mx.reshape(x, (-1,)) for x in inputs], axis=0)
    return mx.concatenate(list(inputs), axis=axis)


@kernel("pad")
def pad(input: _Array, pad_width: Sequence[tuple[int, int]]) -> _Array:
    """Zero padding with one ``(before, after)`` pair per dim."""
    return mx.pad(input, [tuple(p) for p in pad_width])


# ----------------------------------------------------------------------------------------------
# Indexing and scalar plumbing
# ----------------------------------------------------------------------------------------------
@kernel("indexer")
def indexer(input: Any, index: Any) -> Any:
    """``input[index]`` for ints, slices, ``None``, ``Ellipsis`` and tuples of them."""
    return input[index]


@kernel("to_tensor")
def to_tensor(input: Any, *, float_dtype: Any) -> _Array:
    """A Python number or nested list as an array: floats in ``float_dtype``, ints int64."""
    kind = _python_kind(input)
    if kind == FLOAT:
        dtype = mx_dtype(float_dtype)
    elif kind == INT:
        dtype = mx.int64
    else:
        dtype = mx.bool_
    return mx.array(input, dtype=dtype)


def _python_kind(value: Any) -> int:
    """The widest kind (bool < int < float) among the leaves of a nested list."""
    if isinstance(value, list | tuple):
        kinds = [_python_kind(v) for v in value]
        return builtins.max(kinds) if kinds else FLOAT
    return kind_of_python(value)


# ----------------------------------------------------------------------------------------------
# Reference-catalogue additions
# ----------------------------------------------------------------------------------------------
def _size(shape: Any) -> tuple[int, ...]:
    """A shape given as an int or a sequence of ints, as a tuple."""
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


@kernel("arange")
def arange(start: _Number = 0, stop: _Number | None = None, step: _Number = 1,
           dtype: Any = None) -> _Array:
    """``mx.arange(start, stop, step)``; ``dtype=None``: int64 for ints, else float32."""
    if dtype is not None:
        target = mx_dtype(dtype)
    elif all(isinstance(v, int) for v in (start, stop, step)):
        target = mx.int64
    else:
        target = mx.float32
    return mx.arange(start, stop, step, dtype=target)


@kernel("randn")
def randn(shape: Any, dtype: Any = None, rng: _Array | None = None) -> _Array:
    """Standard normal samples of ``shape`` drawn with the key ``rng`` (``dtype=None``:
    float32)."""
    target = mx.float32 if dtype is None else mx_dtype(dtype)
    return mx.random.normal(_size(shape), dtype=target, key=rng)


@kernel("randint")
def randint(shape: Any, low: int = 0, high: int | None = None, dtype: Any = None,
            rng: _Array | None = None) -> _Array:
    """Integers uniform in ``[low, high)`` of ``shape`` (``dtype=None``: int64)."""
    target = mx.int64 if dtype is None else mx_dtype(dtype)
    return mx.random.randint(low, high, _size(shape), dtype=target, key=rng)


def _mT(x: _Array) -> _Array:
    return mx.swapaxes(x, -1, -2)


@mx.custom_function
def _cholesky(a: _Array) -> _Array:
    return mx.linalg.cholesky(a, stream=mx.cpu)


@_cholesky.vjp
def _cholesky_vjp(a: _Array, cotangent: _Array, output: _Array) -> _Array:
    """``L^-T Φ(L^T Ḡ) L^-1`` (MLX has no Cholesky VJP; the NumPy backend's formula)."""
    low = output
    p = mx.tril(mx.matmul(_mT(low), cotangent))
    p = 0.5 * (p + _mT(mx.tril(p, -1)))
    x = mx.linalg.solve_triangular(_mT(low), p, upper=True, stream=mx.cpu)
    return _mT(mx.linalg.solve_triangular(_mT(low), _mT(x), upper=True, stream=mx.cpu))


@kernel("cholesky")
def cholesky(input: _Array) -> _Array:
    """Lower Cholesky factor ``L`` of symmetric positive-definite matrices (``A = L L^T``)."""
    return _cholesky(input)


@mx.custom_function
def _eigvalsh(a: _Array) -> _Array:
    return mx.linalg.eigvalsh(a, stream=mx.cpu)


@_eigvalsh.vjp
def _eigvalsh_vjp(a: _Array, cotangent: _Array, output: _Array) -> _Array:
    """``V diag(Ḡ) V^T`` (MLX has no ``eigh`` VJP)."""
    vectors = mx.linalg.eigh(a, stream=mx.cpu)[1]
    return mx.matmul(vectors * mx.expand_dims(cotangent, -2), _mT(vectors))


@kernel("eigvalsh")
def eigvalsh(input: _Array) -> _Array:
    """Eigenvalues (ascending) of symmetric matrices; only the lower triangle is read."""
    return _eigvalsh(input)


@kernel("unique")
def unique(input: _Array) -> _Array:
    """The sorted distinct values of ``input`` (flattened); the length depends on the data, so
    it is computed eagerly through NumPy (not under ``mx.compile``)."""
    import numpy as np

    values = np.unique(np.array(input))
    return mx.array(values, dtype=input.dtype)


@kernel("polynomial_features")
def polynomial_features(input: _Array, degree: int) -> _Array:
    """Every monomial of the last axis' features with total degree 1..``degree`` (columns in
    scikit-learn's ``PolynomialFeatures(include_bias=False)`` order)."""
    idx = monomial_indices(input.shape[-1], degree)
    xa = mx.concatenate([input, mx.ones_like(input[..., :1])], axis=-1)
    columns = [mx.array(idx[:, k].astype("int32")) for k in range(degree)]
    out = mx.take(xa, columns[0], axis=-1)
    for k in range(1, degree):
        out = out * mx.take(xa, columns[k], axis=-1)
    return out


@kernel("dtype_of")
def dtype_of(input: _Array) -> Any:
    """The Mithril dtype (``ml.float32``, ...) of an array."""
    return as_dtype(str(input.dtype))


@kernel("split_rng")
def split_rng(rng: _Array, n: int) -> list[_Array]:
    """``n`` independent keys split from ``rng``."""
    keys = mx.random.split(rng, n)
    return [keys[i] for i in range(n)]


from . import nn as _nn  # noqa: E402, F401 - registers the mlx nn kernels

# issue 15: the generic loop (Scan) over a user's body model, a Python loop of MLX kernels
register_scan(registry, "python")
