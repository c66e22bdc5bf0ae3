"""MLX kernels: one per tensor primitive of the catalogue (see kernel-contract.md).

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

import itertools
import math
import operator
from typing import Any

import mlx.core as mx
import numpy as np

from ...framework.scan import register_scan
from ...framework.types import FLOAT, INT, as_dtype, kind_of_python
from ..kernel_args import int_tuple, pad_pairs, polynomial, size_tuple
from ..registry import KernelRegistry

#: this module's kernels, by primitive (``registry.table()`` checks them)
registry = KernelRegistry("mlx")
kernel = registry.kernel

_DTYPES: dict[str, mx.Dtype] = {"bool": mx.bool_} | {name: getattr(mx, name) for name in (
    "float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8")}


def mx_dtype(dtype: Any) -> mx.Dtype:
    """The MLX dtype for a Mithril ``Dtype`` (or its name); MLX dtypes pass through."""
    if isinstance(dtype, mx.Dtype):
        return dtype
    return _DTYPES[as_dtype(dtype).name]


# ---- float64-accurate elementwise functions (MLX's own are float32-accurate for float64) ----
def _is_f64(x: mx.array) -> bool:
    return x.dtype == mx.float64


def _f64(accurate: Any, native: Any) -> Any:
    """A kernel: ``accurate`` for float64 input, MLX's ``native`` otherwise."""
    return lambda input: accurate(input) if _is_f64(input) else native(input)


@kernel("exp")
def exp(input: mx.array) -> mx.array:
    # float64 through ``power``, which MLX computes in full precision
    return mx.power(math.e, input) if _is_f64(input) else mx.exp(input)


@mx.custom_function
def _sin64(x: mx.array) -> mx.array:
    t = mx.tan(x * 0.5)
    return 2 * t / (1 + t * t)


@mx.custom_function
def _cos64(x: mx.array) -> mx.array:
    t2 = mx.square(mx.tan(x * 0.5))
    return (1 - t2) / (1 + t2)


@mx.custom_function
def _sigmoid64(x: mx.array) -> mx.array:
    return mx.where(x >= 0, 1 / (1 + exp(-x)), exp(x) / (1 + exp(x)))


@mx.custom_function
def _erf64(x: mx.array) -> mx.array:
    """``erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (2n+1)!!`` (no cancellation)."""
    z = mx.clip(x, -6.0, 6.0)  # beyond 6, erf(x) rounds to +-1 in float64
    step = 2 * z * z
    term = total = z
    for n in range(100):  # enough terms for |z| <= 6
        term = term * step / (2 * n + 3)
        total = total + term
    return mx.clip((2 / math.sqrt(math.pi)) * exp(-z * z) * total, -1.0, 1.0)


# their gradients: vjp(primal, cotangent, output)
_sin64.vjp(lambda x, cotangent, output: cotangent * _cos64(x))
_cos64.vjp(lambda x, cotangent, output: -cotangent * _sin64(x))
_sigmoid64.vjp(lambda x, cotangent, output: cotangent * output * (1 - output))
_erf64.vjp(lambda x, cotangent, output: cotangent * (2 / math.sqrt(math.pi)) * exp(-x * x))


# ---- linear algebra on the CPU stream, with the VJPs MLX lacks ----
def _mT(x: mx.array) -> mx.array:
    return mx.swapaxes(x, -1, -2)


@mx.custom_function
def _cholesky(a: mx.array) -> mx.array:
    return mx.linalg.cholesky(a, stream=mx.cpu)


@_cholesky.vjp
def _cholesky_vjp(a: mx.array, cotangent: mx.array, low: mx.array) -> mx.array:
    """``L^-T Φ(L^T Ḡ) L^-1`` for the output ``L`` (the NumPy backend's formula)."""
    p = mx.tril(mx.matmul(_mT(low), cotangent))
    p = 0.5 * (p + _mT(mx.tril(p, -1)))
    x = mx.linalg.solve_triangular(_mT(low), p, upper=True, stream=mx.cpu)
    return _mT(mx.linalg.solve_triangular(_mT(low), _mT(x), upper=True, stream=mx.cpu))


@mx.custom_function
def _eigvalsh(a: mx.array) -> mx.array:
    return mx.linalg.eigvalsh(a, stream=mx.cpu)


@_eigvalsh.vjp
def _eigvalsh_vjp(a: mx.array, cotangent: mx.array, output: mx.array) -> mx.array:
    """``V diag(Ḡ) V^T``."""
    vectors = mx.linalg.eigh(a, stream=mx.cpu)[1]
    return mx.matmul(vectors * mx.expand_dims(cotangent, -2), _mT(vectors))


# ---- MLX's own functions, where they are the kernel exactly ----
registry.kernels_from({
    "sin": _f64(_sin64, mx.sin), "cos": _f64(_cos64, mx.cos),
    "sigmoid": _f64(_sigmoid64, mx.sigmoid),
    "add": mx.add, "subtract": mx.subtract, "multiply": mx.multiply, "divide": mx.divide,
    "floor_divide": mx.floor_divide, "power": mx.power, "minimum": mx.minimum,
    "maximum": mx.maximum, "greater": mx.greater, "greater_equal": mx.greater_equal,
    "equal": mx.equal, "logical_and": mx.logical_and, "where": mx.where,
    "negate": mx.negative, "absolute": mx.abs, "log": mx.log, "sqrt": mx.sqrt,
    "sign": mx.sign, "floor": mx.floor, "tanh": mx.tanh, "stop_gradient": mx.stop_gradient,
    "logical_not": mx.logical_not, "matmul": mx.matmul, "sum": mx.sum, "max": mx.max,
    "prod": mx.prod, "reshape": mx.reshape, "transpose": mx.transpose,
    "broadcast_to": mx.broadcast_to, "pad": mx.pad, "indexer": operator.getitem,
    "cholesky": _cholesky, "eigvalsh": _eigvalsh,
    # argmax as int64 (MLX's is uint32); dtype_of as the Mithril dtype
    "argmax": lambda input, axis=None, keepdim=False: mx.argmax(input, axis, keepdim).astype(
        mx.int64),
    "dtype_of": lambda input: as_dtype(str(input.dtype)),
})


# ---- elementwise with more to it ----
@kernel("relu")
def relu(input: mx.array) -> mx.array:
    # NaN stays NaN, as in PyTorch (``mx.maximum(x, 0)`` or ``where(x > 0, x, 0)`` give 0)
    return mx.where(input <= 0, mx.zeros_like(input), input)


@kernel("softplus")
def softplus(input: mx.array) -> mx.array:
    # the identity above 20 (PyTorch's threshold, beta 1: the catalogue's definition)
    if not _is_f64(input):
        return mx.where(input > 20, input, mx.logaddexp(input, mx.zeros_like(input)))
    return mx.where(input > 20, input, mx.log1p(exp(mx.minimum(input, 20.0))))


@kernel("gelu")
def gelu(input: mx.array, approximate: bool = False) -> mx.array:
    if approximate:
        inner = math.sqrt(2.0 / math.pi) * (input + 0.044715 * input * input * input)
        return 0.5 * input * (1 + mx.tanh(inner))
    erf = _erf64 if _is_f64(input) else mx.erf
    return 0.5 * input * (1 + erf(input * (1 / math.sqrt(2.0))))


@kernel("nan_to_num")
def nan_to_num(input: mx.array, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> mx.array:
    # infinities default to the dtype's largest finite values
    if not mx.issubdtype(input.dtype, mx.floating):
        return input
    dt, info = input.dtype, mx.finfo(input.dtype)
    out = mx.where(mx.isnan(input), mx.array(nan, dt), input)
    out = mx.where(mx.isposinf(out), mx.array(info.max if posinf is None else posinf, dt), out)
    return mx.where(mx.isneginf(out), mx.array(info.min if neginf is None else neginf, dt), out)


@kernel("softmax")
def softmax(input: mx.array, axis: Any = -1) -> mx.array:
    if not _is_f64(input):
        return mx.softmax(input, axis=axis)
    shifted = exp(input - mx.stop_gradient(mx.max(input, axis=axis, keepdims=True)))
    return shifted / mx.sum(shifted, axis=axis, keepdims=True)


@kernel("log_softmax")
def log_softmax(input: mx.array, axis: Any = -1) -> mx.array:
    shifted = input - mx.stop_gradient(mx.max(input, axis=axis, keepdims=True))
    if not _is_f64(input):
        # shifted first, as PyTorch does: a row holding +inf is NaN (inf - inf), not -inf
        return shifted - mx.logsumexp(shifted, axis=axis, keepdims=True)
    return shifted - mx.log(mx.sum(exp(shifted), axis=axis, keepdims=True))


@kernel("cast")
def cast(input: mx.array, dtype: Any) -> mx.array:
    return input.astype(mx_dtype(dtype))


# ---- shapes, creation, scalar plumbing ----
@kernel("concat")
def concat(*args: Any) -> mx.array:
    """``concat(*inputs, axis)``: join tensors along ``axis`` (flattened first if ``None``)."""
    *inputs, axis = args
    if axis is None:
        return mx.concatenate([mx.reshape(x, (-1,)) for x in inputs], axis=0)
    return mx.concatenate(list(inputs), axis=axis)


@kernel("to_tensor")
def to_tensor(input: Any, *, float_dtype: Any) -> mx.array:
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


@kernel("arange")
def arange(start: Any = 0, stop: Any = None, step: Any = 1, dtype: Any = None) -> mx.array:
    if dtype is None:  # int64 for ints, else float32
        dtype = mx.int64 if all(isinstance(v, int) for v in (start, stop, step)) else mx.float32
    return mx.arange(start, stop, step, dtype=mx_dtype(dtype))


@kernel("randn")
def randn(shape: Any, dtype: Any = None, rng: mx.array | None = None) -> mx.array:
    target = mx.float32 if dtype is None else mx_dtype(dtype)
    return mx.random.normal(size_tuple(shape), dtype=target, key=rng)


@kernel("randint")
def randint(shape: Any, low: int = 0, high: int | None = None, dtype: Any = None,
            rng: mx.array | None = None) -> mx.array:
    target = mx.int64 if dtype is None else mx_dtype(dtype)
    return mx.random.randint(low, high, size_tuple(shape), dtype=target, key=rng)


@kernel("split_rng")
def split_rng(rng: mx.array, n: int) -> list[mx.array]:
    """``n`` independent keys split from ``rng``."""
    return list(mx.random.split(rng, n))


@kernel("unique")
def unique(input: mx.array) -> mx.array:
    # the length depends on the data: computed eagerly through NumPy (not under mx.compile)
    return mx.array(np.unique(np.array(input)), dtype=input.dtype)


registry.kernels_from({"polynomial_features": lambda input, degree: polynomial(
    mx.concatenate([input, mx.ones_like(input[..., :1])], axis=-1), degree,
    lambda xa, columns: mx.take(xa, mx.array(columns.astype("int32")), axis=-1))})


# ---- neural-network kernels: convolution, pooling, batch norm, dropout ----
@kernel("conv2d")
def conv2d(input: mx.array, weight: mx.array, bias: mx.array | None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> mx.array:
    unbatched = input.ndim == 3
    x = mx.transpose(mx.expand_dims(input, 0) if unbatched else input, (0, 2, 3, 1))
    w = mx.transpose(weight, (0, 2, 3, 1))  # channels last
    s, d, p = int_tuple(stride, 2), int_tuple(dilation, 2), pad_pairs(padding, 2)
    if x.dtype == mx.float64 or w.dtype == mx.float64:
        out = _conv_unfold(x, w, s, p, d, groups)
    else:
        out = mx.conv_general(x, w, stride=list(s), padding=([a for a, _ in p], [b for _, b in p]),
                              kernel_dilation=list(d), groups=groups)
    out = mx.transpose(out, (0, 3, 1, 2))
    if bias is not None:
        out = out + mx.reshape(bias, (1, -1, 1, 1))
    return out[0] if unbatched else out


def _windows(x: mx.array, kernel: tuple[int, ...], stride: tuple[int, ...],
             dilation: tuple[int, ...], first_axis: int) -> mx.array:
    """Every window offset of ``x`` (spatial axes from ``first_axis``; floor mode) as a strided
    slice, stacked on a new axis after them: ``(N, H, W, C) -> (N, OH, OW, KH*KW, C)``."""
    nd = len(kernel)
    spatial = x.shape[first_axis:first_axis + nd]
    outs = [(n - dl * (k - 1) - 1) // st + 1
            for n, k, st, dl in zip(spatial, kernel, stride, dilation, strict=True)]
    pieces = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        index: list[Any] = [slice(None)] * first_axis
        for o, dl, st, n_out in zip(offset, dilation, stride, outs, strict=True):
            index.append(slice(o * dl, o * dl + st * (n_out - 1) + 1, st))
        pieces.append(x[tuple(index)])
    return mx.stack(pieces, axis=first_axis + nd)


def _conv_unfold(x: mx.array, w: mx.array, stride: tuple[int, ...],
                 padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...],
                 groups: int) -> mx.array:
    """Channels-last convolution by unfolding windows and one grouped matmul (any dtype)."""
    x = mx.pad(x, [(0, 0), *padding, (0, 0)])
    patches = _windows(x, tuple(w.shape[1:-1]), stride, dilation, 1)  # (N, *out, K, C)
    n, *out_spatial, k, c = patches.shape
    cg, o = c // groups, w.shape[0]
    rows = math.prod(out_spatial) * n
    patches = mx.reshape(patches, (rows, k, groups, cg))
    patches = mx.reshape(mx.transpose(patches, (2, 0, 1, 3)), (groups, rows, k * cg))
    w = mx.reshape(w, (groups, o // groups, k * cg))
    out = mx.matmul(patches, mx.transpose(w, (0, 2, 1)))  # (groups, rows, O/groups)
    return mx.reshape(mx.transpose(out, (1, 0, 2)), (n, *out_spatial, o))


# ---- pooling over the last two axes (any leading dims; floor mode) ----
def _pool(input: mx.array, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
          fill: float | int, reduce: Any) -> mx.array:
    k = int_tuple(kernel_size, 2)
    s = k if stride is None else int_tuple(stride, 2)
    lead = input.ndim - 2
    x = mx.pad(input, [(0, 0)] * lead + list(pad_pairs(padding, 2)), constant_values=fill)
    return reduce(_windows(x, k, s, int_tuple(dilation, 2), lead), axis=-1)


@kernel("max_pool2d")
def max_pool2d(input: mx.array, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1) -> mx.array:
    # padding counts as the lowest value of the dtype
    if mx.issubdtype(input.dtype, mx.floating):
        fill: float | int = -math.inf
    else:
        fill = False if input.dtype == mx.bool_ else mx.iinfo(input.dtype).min
    return _pool(input, kernel_size, stride, padding, dilation, fill, mx.max)


@kernel("avg_pool2d")
def avg_pool2d(input: mx.array, kernel_size: Any, stride: Any = None, padding: Any = 0) -> mx.array:
    # zero padding counts in the average
    return _pool(input, kernel_size, stride, padding, 1, 0, mx.mean)


# ---- batch normalisation over channel axis 1 ----
def _batch_stats(input: mx.array) -> tuple[mx.array, mx.array]:
    axes = tuple(a for a in range(input.ndim) if a != 1)
    mean = mx.mean(input, axis=axes, keepdims=True)
    return mean, mx.mean(mx.square(input - mean), axis=axes, keepdims=True)


def _normalise(input: mx.array, mean: mx.array, var: mx.array, eps: float, weight: mx.array | None,
               bias: mx.array | None) -> mx.array:
    shape = (1, -1) + (1,) * (input.ndim - 2)
    out = (input - mean) * mx.rsqrt(var + eps)
    if weight is not None:
        out = out * mx.reshape(weight, shape)
    return out if bias is None else out + mx.reshape(bias, shape)


@kernel("batch_norm")
def batch_norm(input: mx.array, weight: mx.array | None, bias: mx.array | None,
               running_mean: mx.array | None, running_var: mx.array | None, momentum: float = 0.1,
               eps: float = 1e-5) -> tuple[mx.array, mx.array | None, mx.array | None]:
    """Training batch norm; returns ``(out, new_mean, new_var)``."""
    count = input.size // input.shape[1]
    if count < 2:
        raise ValueError("batch norm in training needs more than one value per channel, got "
                         f"an input of shape {tuple(input.shape)}")
    mean, var = _batch_stats(input)
    out = _normalise(input, mean, var, eps, weight, bias)
    new_mean = new_var = None
    if running_mean is not None:
        batch_mean = mx.stop_gradient(mx.reshape(mean, (-1,)))
        new_mean = (1 - momentum) * running_mean + momentum * batch_mean
    if running_var is not None:
        unbiased = mx.stop_gradient(mx.reshape(var, (-1,))) * (count / (count - 1))
        new_var = (1 - momentum) * running_var + momentum * unbiased
    return out, new_mean, new_var


@kernel("batch_norm", mode="inference")
def batch_norm_inference(input: mx.array, weight: mx.array | None, bias: mx.array | None,
                         running_mean: mx.array | None, running_var: mx.array | None,
                         momentum: float = 0.1, eps: float = 1e-5
                         ) -> tuple[mx.array, mx.array | None, mx.array | None]:
    """Batch norm with the running statistics (batch ones where absent); state unchanged."""
    shape = (1, -1) + (1,) * (input.ndim - 2)
    if running_mean is None or running_var is None:
        mean, var = _batch_stats(input)
    if running_mean is not None:
        mean = mx.reshape(running_mean, shape)
    if running_var is not None:
        var = mx.reshape(running_var, shape)
    return _normalise(input, mean, var, eps, weight, bias), running_mean, running_var


@kernel("dropout")
def dropout(input: mx.array, p: float = 0.5, rng: mx.array | None = None) -> mx.array:
    # survivors scaled by 1 / (1 - p)
    if p == 0:
        return input
    keep = mx.random.bernoulli(1 - p, input.shape, key=rng)
    return mx.where(keep, input * (1 / (1 - p)), mx.zeros_like(input))


registry.kernels_from({"dropout": lambda input, p=0.5: input}, mode="inference")

# issue 15: the generic loop (Scan) over a user's body model, a Python loop of MLX kernels
register_scan(registry, "python")
