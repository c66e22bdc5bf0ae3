"""NumPy kernels: one function per tensor primitive of the catalogue (``ops.tensor_ops()``).

Generated code calls these by catalogue name with the catalogue's inputs in order (see
``docs/dev/kernel-contract.md``). Besides the primitives this module has the inference variants
``batch_norm_inference`` / ``dropout_inference``, ``split_rng``, and training variants
``<op>_fwd(*inputs) -> (output, cache)`` whose cache the matching VJP in ``vjps.py`` reuses:

- ``conv1d_fwd`` / ``conv2d_fwd``: the im2col matrix ``(groups, C/groups * prod(k), N * L)``;
- ``max_pool1d_fwd`` / ``max_pool2d_fwd``: per kernel offset, the mask of the windows whose
  (first) maximum sits there;
- ``batch_norm_fwd`` / ``layer_norm_fwd`` / ``group_norm_fwd``: ``(normalised input, 1/std)``;
- ``scaled_dot_product_fwd``: the attention probabilities;
- ``dropout_fwd``: the scaled keep mask.

Kernels never modify their inputs; they may return views of them (``reshape``, ``transpose``,
``broadcast_to``, ...), so callers must treat results as read-only.
Names without a leading underscore are kernels: ``Backend.kernel_table()`` collects them all.
"""

from __future__ import annotations

import builtins as _builtins
import itertools
import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import as_strided as _as_strided

from ...errors import ArgumentTypeError
from ...framework import types as _types
from ..monomials import monomial_indices
from ..registry import KernelRegistry

#: this module's kernels, by primitive (``registry.table()`` checks them)
registry = KernelRegistry("numpy")
kernel = registry.kernel

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def _native_dtype(dtype: Any) -> np.dtype:
    """The NumPy dtype for a Mithril ``Dtype`` (or anything ``types.as_dtype`` accepts)."""
    if isinstance(dtype, np.dtype):
        return dtype
    if isinstance(dtype, type) and issubclass(dtype, np.generic):
        return np.dtype(dtype)
    d = _types.as_dtype(dtype)
    if d.name == "bfloat16":
        raise ArgumentTypeError("NumPy has no bfloat16 dtype, so the NumPy backend cannot use "
                                "ml.bfloat16; use ml.float16, ml.float32 or ml.float64")
    return np.dtype(d.name)


def _axes(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """``axis`` (None, an int or a tuple, negatives allowed) as sorted non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    items = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    return tuple(sorted(int(a) % ndim if ndim else 0 for a in items))


def _float_dtype(x: np.ndarray) -> np.dtype:
    """``x``'s dtype if it is a float dtype, else float64 (NumPy's promotion for ints)."""
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)


def _ntuple(value: int | Sequence[int], nd: int, what: str) -> tuple[int, ...]:
    """``value`` as a tuple of ``nd`` ints (an int is repeated)."""
    if isinstance(value, int | np.integer):
        return (int(value),) * nd
    items = tuple(int(v) for v in value)
    if len(items) != nd:
        raise ValueError(f"{what} needs {nd} values, got {value!r}")
    return items


def _pad_pairs(value: Any, nd: int) -> tuple[tuple[int, int], ...]:
    """Padding as ``nd`` ``(before, after)`` pairs (ints and int tuples are accepted too)."""
    if isinstance(value, int | np.integer):
        return ((int(value), int(value)),) * nd
    items = tuple(value)
    if len(items) != nd:
        raise ValueError(f"padding needs {nd} entries, got {value!r}")
    return tuple((int(p), int(p)) if isinstance(p, int | np.integer) else
                 (int(p[0]), int(p[1])) for p in items)


def _pad_last(x: np.ndarray, pads: Sequence[tuple[int, int]], value: float = 0) -> np.ndarray:
    """Pad the last ``len(pads)`` dims of ``x`` with ``value`` (``x`` itself if no padding)."""
    if all(a == 0 and b == 0 for a, b in pads):
        return x
    nd = len(pads)
    lead = x.shape[:x.ndim - nd]
    shape = lead + tuple(s + a + b for s, (a, b) in zip(x.shape[x.ndim - nd:], pads, strict=True))
    out = np.zeros(shape, x.dtype) if value == 0 else np.full(shape, value, x.dtype)
    inner = tuple(slice(a, a + s) for s, (a, _) in zip(x.shape[x.ndim - nd:], pads, strict=True))
    out[(Ellipsis, *inner)] = x
    return out


def _crop_last(x: np.ndarray, pads: Sequence[tuple[int, int]],
               sizes: Sequence[int]) -> np.ndarray:
    """Undo ``_pad_last``: the region of the last dims that held the original data."""
    if all(a == 0 and b == 0 for a, b in pads):
        return x
    return x[(Ellipsis, *(slice(a, a + s) for (a, _), s in zip(pads, sizes, strict=True)))]


def _window_counts(sizes: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                   dilation: Sequence[int]) -> tuple[int, ...]:
    """Number of window positions along each dim (floor mode)."""
    out = tuple((n - d * (k - 1) - 1) // s + 1
                for n, k, s, d in zip(sizes, kernel, stride, dilation, strict=True))
    if _builtins.min(out) <= 0:
        raise ValueError(f"a window of size {tuple(kernel)} (dilation {tuple(dilation)}) does "
                         f"not fit an input of spatial size {tuple(sizes)}")
    return out


def _windows(xp: np.ndarray, kernel: Sequence[int], stride: Sequence[int],
             dilation: Sequence[int]) -> np.ndarray:
    """A read-only strided view ``(*lead, *kernel, *out)`` of every window of the last dims."""
    nd = len(kernel)
    lead_shape, sizes = xp.shape[:xp.ndim - nd], xp.shape[xp.ndim - nd:]
    lead_strides, strides = xp.strides[:xp.ndim - nd], xp.strides[xp.ndim - nd:]
    out = _window_counts(sizes, kernel, stride, dilation)
    shape = (*lead_shape, *kernel, *out)
    all_strides = (*lead_strides, *(s * d for s, d in zip(strides, dilation, strict=True)),
                   *(s * st for s, st in zip(strides, stride, strict=True)))
    return _as_strided(xp, shape, all_strides, writeable=False)


def _offset_slices(kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
                   out: Sequence[int]) -> list[tuple[slice, ...]]:
    """For each kernel offset (row-major), the slices of the input it meets in every window."""
    ranges = [range(k) for k in kernel]
    return [tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                  for o, d, s, n in zip(offs, dilation, stride, out, strict=True))
            for offs in itertools.product(*ranges)]


def _expand_reduced(g: Any, axes: tuple[int, ...], keepdim: bool) -> Any:
    """Reinsert reduced axes into ``g`` so it broadcasts against the reduction's input."""
    return g if keepdim or not axes else np.expand_dims(g, axes)


# ----------------------------------------------------------------------------------------------
# Elementwise binary ops (tensor-or-number terminals: a Python number stays weakly typed)
# ----------------------------------------------------------------------------------------------
@kernel("add")
def add(left: Any, right: Any) -> Any:
    """``left + right``."""
    return left + right


@kernel("subtract")
def subtract(left: Any, right: Any) -> Any:
    """``left - right``."""
    return left - right


@kernel("multiply")
def multiply(left: Any, right: Any) -> Any:
    """``left * right``."""
    return left * right


@kernel("divide")
def divide(left: Any, right: Any) -> Any:
    """``left / right`` (true division)."""
    return np.true_divide(left, right)


@kernel("floor_divide")
def floor_divide(left: Any, right: Any) -> Any:
    """``left // right``."""
    return np.floor_divide(left, right)


@kernel("power")
def power(left: Any, right: Any) -> Any:
    """``left ** right``."""
    return np.power(left, right)


@kernel("minimum")
def minimum(left: Any, right: Any) -> Any:
    """Elementwise minimum (NaN propagates)."""
    return np.minimum(left, right)


@kernel("maximum")
def maximum(left: Any, right: Any) -> Any:
    """Elementwise maximum (NaN propagates)."""
    return np.maximum(left, right)


@kernel("greater")
def greater(left: Any, right: Any) -> Any:
    """``left > right``."""
    return np.greater(left, right)


@kernel("greater_equal")
def greater_equal(left: Any, right: Any) -> Any:
    """``left >= right``."""
    return np.greater_equal(left, right)


@kernel("equal")
def equal(left: Any, right: Any) -> Any:
    """``left == right``."""
    return np.equal(left, right)


@kernel("logical_and")
def logical_and(left: Any, right: Any) -> Any:
    """Elementwise logical and."""
    return np.logical_and(left, right)


# ----------------------------------------------------------------------------------------------
# Elementwise unary ops
# ----------------------------------------------------------------------------------------------
@kernel("negate")
def negate(input: np.ndarray) -> np.ndarray:
    """``-x``."""
    return np.negative(input)


@kernel("absolute")
def absolute(input: np.ndarray) -> np.ndarray:
    """``|x|``."""
    return np.abs(input)


@kernel("exp")
def exp(input: np.ndarray) -> np.ndarray:
    """``e ** x``."""
    return np.exp(input)


@kernel("log")
def log(input: np.ndarray) -> np.ndarray:
    """Natural logarithm."""
    return np.log(input)


@kernel("sqrt")
def sqrt(input: np.ndarray) -> np.ndarray:
    """Square root."""
    return np.sqrt(input)


@kernel("sign")
def sign(input: np.ndarray) -> np.ndarray:
    """-1, 0 or 1 by the sign of ``x``."""
    return np.sign(input)


@kernel("sin")
def sin(input: np.ndarray) -> np.ndarray:
    """Sine."""
    return np.sin(input)


@kernel("cos")
def cos(input: np.ndarray) -> np.ndarray:
    """Cosine."""
    return np.cos(input)


@kernel("floor")
def floor(input: np.ndarray) -> np.ndarray:
    """Round down."""
    return np.floor(input)


@kernel("relu")
def relu(input: np.ndarray) -> np.ndarray:
    """``max(x, 0)`` (NaN propagates)."""
    return np.maximum(input, 0)


@kernel("sigmoid")
def sigmoid(input: np.ndarray) -> np.ndarray:
    """``1 / (1 + e^-x)`` as ``e^min(x, 0) / (1 + e^-|x|)``: no overflow, no branches."""
    return np.exp(np.minimum(input, 0)) / (1 + np.exp(-np.abs(input)))


@kernel("tanh")
def tanh(input: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent."""
    return np.tanh(input)


@kernel("softplus")
def softplus(input: np.ndarray) -> np.ndarray:
    """``log(1 + e^x)`` as ``max(x, 0) + log1p(e^-|x|)`` (never overflows), the identity
    above 20 (PyTorch's threshold: the catalogue's definition, same on every backend)."""
    smooth = np.maximum(input, 0) + np.log1p(np.exp(-np.abs(input)))
    return np.where(input > 20, input, smooth).astype(smooth.dtype, copy=False)


@kernel("stop_gradient")
def stop_gradient(input: np.ndarray) -> np.ndarray:
    """The input itself; no gradient flows through it."""
    return input


@kernel("logical_not")
def logical_not(input: np.ndarray) -> np.ndarray:
    """Elementwise logical not."""
    return np.logical_not(input)


def _erfc(x: np.ndarray) -> np.ndarray:
    """The complementary error function, elementwise, in ``x``'s float dtype."""
    try:
        from scipy.special import erfc as scipy_erfc
    except ImportError:  # pragma: no cover - scipy is optional
        out = np.frompyfunc(math.erfc, 1, 1)(x)
        return np.asarray(out, dtype=x.dtype)
    return scipy_erfc(x)


#: sqrt(2 / pi), used by the tanh form of GELU
_GELU_K = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


@kernel("gelu")
def gelu(input: np.ndarray, approximate: bool = False) -> np.ndarray:
    """GELU: ``x * Phi(x)``; ``approximate=True`` is PyTorch's tanh form."""
    x = np.asarray(input)
    x = x if x.dtype.kind == "f" else x.astype(np.float64)
    if approximate:
        return 0.5 * x * (1 + np.tanh(_GELU_K * (x + _GELU_C * x * x * x)))
    return 0.5 * x * _erfc(x * -math.sqrt(0.5))


@kernel("nan_to_num")
def nan_to_num(input: np.ndarray, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> np.ndarray:
    """Replace NaN and infinities (None: the dtype's largest / smallest finite value)."""
    return np.nan_to_num(input, nan=nan, posinf=posinf, neginf=neginf)


@kernel("softmax")
def softmax(input: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(x) / sum(exp(x))`` along ``axis``, shifted by the maximum for stability."""
    z = input - np.max(input, axis=axis, keepdims=True)
    e = np.exp(z)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


@kernel("log_softmax")
def log_softmax(input: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x - logsumexp(x)`` along ``axis``, shifted by the maximum for stability."""
    z = input - np.max(input, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


@kernel("cast")
def cast(input: Any, dtype: Any) -> np.ndarray:
    """``input`` converted to ``dtype`` (a Mithril ``Dtype``; no bfloat16 in NumPy)."""
    return np.asarray(input).astype(_native_dtype(dtype), copy=False)


@kernel("where")
def where(condition: np.ndarray, input1: Any, input2: Any) -> np.ndarray:
    """``input1`` where ``condition`` else ``input2``."""
    return np.where(condition, input1, input2)


# ----------------------------------------------------------------------------------------------
# Linear algebra
# ----------------------------------------------------------------------------------------------
@kernel("matmul")
def matmul(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Matrix product with NumPy's batching and 1-D rules."""
    return np.matmul(left, right)


@kernel("linear")
def linear(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``input @ weight.T + bias`` with ``weight`` of shape ``(out, in)``."""
    if input.ndim > 2:
        out = np.matmul(input.reshape(-1, input.shape[-1]), weight.T)
        out = out.reshape(*input.shape[:-1], weight.shape[0])
    else:
        out = np.matmul(input, weight.T)
    if bias is not None:
        out = out + bias
    return out


# ----------------------------------------------------------------------------------------------
# Reductions
# ----------------------------------------------------------------------------------------------
@kernel("sum")
def sum(input: np.ndarray, axis: int | tuple[int, ...] | None = None,
        keepdim: bool = False) -> np.ndarray:
    """Sum over ``axis``."""
    return np.sum(input, axis=axis, keepdims=keepdim)


@kernel("max")
def max(input: np.ndarray, axis: int | tuple[int, ...] | None = None,
        keepdim: bool = False) -> np.ndarray:
    """Maximum over ``axis``."""
    return np.max(input, axis=axis, keepdims=keepdim)


@kernel("prod")
def prod(input: np.ndarray, axis: int | tuple[int, ...] | None = None,
         keepdim: bool = False) -> np.ndarray:
    """Product over ``axis``."""
    return np.prod(input, axis=axis, keepdims=keepdim)


@kernel("argmax")
def argmax(input: np.ndarray, axis: int | None = None, keepdim: bool = False) -> np.ndarray:
    """Index of the (first) maximum; ``axis=None`` indexes the flattened array."""
    return np.asarray(np.argmax(input, axis=axis, keepdims=keepdim), dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Shape manipulation
# ----------------------------------------------------------------------------------------------
@kernel("reshape")
def reshape(input: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``input`` with a new shape (one entry may be -1)."""
    return np.reshape(input, tuple(shape))


@kernel("transpose")
def transpose(input: np.ndarray, axes: tuple[int, ...] | None = None) -> np.ndarray:
    """Permute the axes (``None`` reverses them)."""
    return np.transpose(input, axes)


@kernel("broadcast_to")
def broadcast_to(input: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast ``input`` to ``shape`` (a read-only view)."""
    return np.broadcast_to(input, tuple(shape))


def _split_concat_args(args: tuple[Any, ...], axis: Any) -> tuple[list[Any], int | None]:
    """Separate ``concat``'s trailing positional ``axis`` from its tensors."""
    if axis is not _NO_AXIS:
        return list(args), axis
    if args and (args[-1] is None or isinstance(args[-1], int | np.integer)):
        return list(args[:-1]), args[-1]
    return list(args), 0


_NO_AXIS = object()


@kernel("concat")
def concat(*inputs: Any, axis: Any = _NO_AXIS) -> np.ndarray:
    """Join tensors along ``axis`` (``None``: flatten them first).

    Called as ``concat(x1, ..., xn, axis)`` (the catalogue order); ``axis`` may also be a
    keyword, and defaults to 0 when the last positional argument is a tensor.
    """
    tensors, ax = _split_concat_args(inputs, axis)
    return np.concatenate(tensors, axis=ax)


@kernel("pad")
def pad(input: np.ndarray, pad_width: Sequence[tuple[int, int]]) -> np.ndarray:
    """Zero-pad each dim by its ``(before, after)`` pair."""
    return _pad_last(input, _pad_pairs(pad_width, input.ndim))


def _is_advanced_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, list | np.ndarray) for i in items)


@kernel("indexer")
def indexer(input: Any, index: Any) -> Any:
    """``input[index]`` (int, slice, None, Ellipsis or a tuple of them)."""
    out = input[index]
    if isinstance(input, np.ndarray) and not isinstance(out, np.ndarray):
        out = np.asarray(out)
    return out


@kernel("to_tensor")
def to_tensor(input: Any, *, float_dtype: Any = np.float32) -> np.ndarray:
    """A number or nested list as an array: floats in ``float_dtype``, ints int64, bools bool."""
    arr = np.asarray(input)
    kind = arr.dtype.kind
    if kind == "f":
        return arr.astype(_native_dtype(float_dtype), copy=False)
    if kind in "iu":
        return arr.astype(np.int64, copy=False)
    if kind == "b":
        return arr
    raise TypeError(f"to_tensor cannot make an array from {input!r}")


# ----------------------------------------------------------------------------------------------
# Reference-catalogue additions
# ----------------------------------------------------------------------------------------------
@kernel("arange")
def arange(start: float = 0, stop: float | None = None, step: float = 1,
           dtype: Any = None) -> np.ndarray:
    """``np.arange(start, stop, step)``; ``dtype=None``: int64 for ints, else float64."""
    if dtype is not None:
        return np.arange(start, stop, step, dtype=_native_dtype(dtype))
    out = np.arange(start, stop, step)
    return out.astype(np.int64, copy=False) if out.dtype.kind in "iu" else out


def _size(shape: Any) -> tuple[int, ...]:
    """A shape given as an int or a sequence of ints, as a tuple."""
    return (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)


def _random_dtype(dtype: Any, default: Any) -> np.dtype:
    return np.dtype(default) if dtype is None else _native_dtype(dtype)


@kernel("randn")
def randn(shape: Any, dtype: Any = None,
          rng: np.random.Generator | None = None) -> np.ndarray:
    """Standard normal samples of ``shape`` (``dtype=None``: float64) drawn from ``rng``."""
    gen = np.random.default_rng() if rng is None else rng
    dt = _random_dtype(dtype, np.float64)
    draw = np.float32 if dt == np.float32 else np.float64
    return gen.standard_normal(_size(shape), dtype=draw).astype(dt, copy=False)


@kernel("randint")
def randint(shape: Any, low: int = 0, high: int | None = None, dtype: Any = None,
            rng: np.random.Generator | None = None) -> np.ndarray:
    """Integers uniform in ``[low, high)`` of ``shape`` (``dtype=None``: int64)."""
    gen = np.random.default_rng() if rng is None else rng
    return gen.integers(low, high, _size(shape), dtype=np.int64).astype(
        _random_dtype(dtype, np.int64), copy=False)


@kernel("cholesky")
def cholesky(input: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor ``L`` of symmetric positive-definite matrices (``A = L L^T``)."""
    return np.linalg.cholesky(input)


@kernel("eigvalsh", mode="with_cache")
def eigvalsh_fwd(input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``eigvalsh`` and the eigenvectors (the cache of ``eigvalsh_vjp``)."""
    values, vectors = np.linalg.eigh(input)
    return values, vectors


@kernel("eigvalsh")
def eigvalsh(input: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of symmetric matrices; only the lower triangle is read."""
    return np.linalg.eigvalsh(input)


def _split_layout(shape: tuple[int, ...], split_size: int,
                  axis: int) -> tuple[int, tuple[int, ...]]:
    """The normalised axis and the shape with that axis cut into ``(chunks, split_size)``."""
    a = axis % len(shape)
    length = shape[a]
    if split_size < 1 or length % split_size:
        raise ValueError(f"split_size {split_size} does not divide the length {length} of axis "
                         f"{axis} into equal chunks")
    return a, (*shape[:a], length // split_size, split_size, *shape[a + 1:])


@kernel("unique")
def unique(input: np.ndarray) -> np.ndarray:
    """The sorted distinct values of ``input`` (flattened); the length depends on the data."""
    return np.unique(input)


def _with_ones(input: np.ndarray) -> np.ndarray:
    return np.concatenate([input, np.ones_like(input[..., :1])], axis=-1)


@kernel("polynomial_features")
def polynomial_features(input: np.ndarray, degree: int) -> np.ndarray:
    """Every monomial of the last axis' features with total degree 1..``degree``.

    Columns follow scikit-learn's ``PolynomialFeatures(degree, include_bias=False)``.
    """
    idx = monomial_indices(input.shape[-1], degree)
    xa = _with_ones(input)
    out = xa[..., idx[:, 0]]
    for k in range(1, degree):
        out = out * xa[..., idx[:, k]]
    return out


@kernel("dtype_of")
def dtype_of(input: Any) -> _types.Dtype:
    """The Mithril dtype (``ml.float32``, ...) of an array."""
    return _types.as_dtype(np.asarray(input).dtype.name)


@kernel("split_rng")
def split_rng(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    """``n`` generators for ``n`` random kernels: the stateful generator shared ``n`` times."""
    return [rng] * n


from . import nn as _nn  # noqa: E402, F401 - registers the numpy nn kernels
