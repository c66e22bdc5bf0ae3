"""JAX kernels: one function per tensor primitive of the catalogue (see kernel-contract.md).

Every kernel takes the catalogue's input terminals positionally, in catalogue order, and is
traceable under ``jax.jit`` when its scalar arguments are Python constants (``item`` excepted:
it returns a Python value). Random kernels take a trailing JAX PRNG key ``rng``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ...framework.types import Dtype, as_dtype
from ..monomials import monomial_indices
from ..registry import KernelRegistry

#: this module's kernels, by primitive (``registry.table()`` checks them)
registry = KernelRegistry("jax")
kernel = registry.kernel

Array = jax.Array
_UNSET: Any = object()  # marks an argument left out

#: Mithril dtype names -> JAX dtypes
DTYPES: dict[str, Any] = {
    "float16": jnp.float16,
    "bfloat16": jnp.bfloat16,
    "float32": jnp.float32,
    "float64": jnp.float64,
    "int8": jnp.int8,
    "int16": jnp.int16,
    "int32": jnp.int32,
    "int64": jnp.int64,
    "uint8": jnp.uint8,
    "bool": jnp.bool_,
}


def native_dtype(dtype: Any) -> Any:
    """The JAX dtype for a Mithril ``Dtype`` (or anything ``types.as_dtype`` accepts)."""
    if not isinstance(dtype, Dtype):
        try:
            dtype = as_dtype(dtype)
        except TypeError:
            dtype = as_dtype(jnp.dtype(dtype).name)
    return DTYPES[dtype.name]


# ---- helpers ----------------------------------------------------------------------------------
def _to_float(x: Any) -> Array:
    """``x`` as an inexact array (ints and bools take JAX's default float, as ``jnp.exp``)."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return x
    return x.astype(jnp.result_type(float))


def _tuple(value: int | Sequence[int], nd: int) -> tuple[int, ...]:
    """An int or a sequence of ``nd`` ints as a tuple of ``nd`` ints."""
    if isinstance(value, int):
        return (value,) * nd
    return tuple(int(v) for v in value)


def _pad_pairs(value: Any, nd: int) -> tuple[tuple[int, int], ...]:
    """Padding given as an int, a tuple of ints or a tuple of ``(lo, hi)`` pairs."""
    items = (value,) * nd if isinstance(value, int) else tuple(value)
    return tuple((int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1]))
                 for p in items)


def _channel_shape(ndim: int) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector against an ``(N, C, ...)`` array."""
    return (1, -1) + (1,) * (ndim - 2)


# ---- elementwise binary -----------------------------------------------------------------------
@kernel("add")
def add(left: Any, right: Any) -> Array:
    """``left + right``."""
    return jnp.add(left, right)


@kernel("subtract")
def subtract(left: Any, right: Any) -> Array:
    """``left - right``."""
    return jnp.subtract(left, right)


@kernel("multiply")
def multiply(left: Any, right: Any) -> Array:
    """``left * right``."""
    return jnp.multiply(left, right)


@kernel("divide")
def divide(left: Any, right: Any) -> Array:
    """True division ``left / right``."""
    return jnp.true_divide(left, right)


@kernel("floor_divide")
def floor_divide(left: Any, right: Any) -> Array:
    """``left // right``."""
    return jnp.floor_divide(left, right)


@kernel("power")
def power(left: Any, right: Any) -> Array:
    """``left ** right``."""
    return jnp.power(left, right)


@kernel("minimum")
def minimum(left: Any, right: Any) -> Array:
    """Elementwise minimum."""
    return jnp.minimum(left, right)


@kernel("maximum")
def maximum(left: Any, right: Any) -> Array:
    """Elementwise maximum."""
    return jnp.maximum(left, right)


@kernel("greater")
def greater(left: Any, right: Any) -> Array:
    """``left > right``."""
    return jnp.greater(left, right)


@kernel("greater_equal")
def greater_equal(left: Any, right: Any) -> Array:
    """``left >= right``."""
    return jnp.greater_equal(left, right)


@kernel("equal")
def equal(left: Any, right: Any) -> Array:
    """``left == right``."""
    return jnp.equal(left, right)


@kernel("logical_and")
def logical_and(left: Any, right: Any) -> Array:
    """Elementwise logical and."""
    return jnp.logical_and(left, right)


# ---- elementwise unary ------------------------------------------------------------------------
@kernel("negate")
def negate(input: Array) -> Array:
    """``-input``."""
    return jnp.negative(input)


@kernel("absolute")
def absolute(input: Array) -> Array:
    """``|input|``; its gradient is 0 at 0, as PyTorch's (``jnp.abs`` alone gives 1)."""
    input = jnp.asarray(input)
    return jnp.where(input == 0, jnp.zeros_like(input), jnp.abs(input))


@kernel("exp")
def exp(input: Array) -> Array:
    """``e ** input``."""
    return jnp.exp(_to_float(input))


@kernel("log")
def log(input: Array) -> Array:
    """Natural logarithm."""
    return jnp.log(_to_float(input))


@kernel("sqrt")
def sqrt(input: Array) -> Array:
    """Square root."""
    return jnp.sqrt(_to_float(input))


@kernel("sign")
def sign(input: Array) -> Array:
    """-1, 0 or 1 by the sign of ``input``."""
    return jnp.sign(input)


@kernel("sin")
def sin(input: Array) -> Array:
    """Sine."""
    return jnp.sin(_to_float(input))


@kernel("cos")
def cos(input: Array) -> Array:
    """Cosine."""
    return jnp.cos(_to_float(input))


@kernel("floor")
def floor(input: Array) -> Array:
    """Round down (integers are returned unchanged)."""
    return jnp.floor(input)


@kernel("relu")
def relu(input: Array) -> Array:
    """``max(input, 0)``."""
    return jax.nn.relu(input)


@kernel("sigmoid")
def sigmoid(input: Array) -> Array:
    """Logistic sigmoid."""
    return jax.nn.sigmoid(_to_float(input))


@kernel("tanh")
def tanh(input: Array) -> Array:
    """Hyperbolic tangent."""
    return jnp.tanh(_to_float(input))


@kernel("softplus")
def softplus(input: Array) -> Array:
    """``log(1 + e ** input)``, the identity above 20 (PyTorch's beta=1, threshold=20: the
    catalogue's definition)."""
    x = _to_float(input)
    return jnp.where(x > 20, x, jax.nn.softplus(x))


@kernel("stop_gradient")
def stop_gradient(input: Array) -> Array:
    """``input`` with no gradient flowing back."""
    return jax.lax.stop_gradient(input)


@kernel("logical_not")
def logical_not(input: Array) -> Array:
    """Elementwise logical not."""
    return jnp.logical_not(input)


@kernel("gelu")
def gelu(input: Array, approximate: bool = False) -> Array:
    """Gaussian error linear unit; ``approximate=True`` is the tanh form."""
    return jax.nn.gelu(_to_float(input), approximate=bool(approximate))


@kernel("nan_to_num")
def nan_to_num(input: Array, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> Array:
    """Replace NaN and infinities (by default with the dtype's largest finite values)."""
    return jnp.nan_to_num(input, nan=nan, posinf=posinf, neginf=neginf)


@kernel("softmax")
def softmax(input: Array, axis: int = -1) -> Array:
    """Softmax along ``axis``."""
    return jax.nn.softmax(_to_float(input), axis=axis)


@kernel("log_softmax")
def log_softmax(input: Array, axis: int = -1) -> Array:
    """Log-softmax along ``axis``."""
    return jax.nn.log_softmax(_to_float(input), axis=axis)


@kernel("cast")
def cast(input: Any, dtype: Any) -> Array:
    """``input`` converted to ``dtype`` (a Mithril ``Dtype``)."""
    return jnp.asarray(input).astype(native_dtype(dtype))


@kernel("where")
def where(condition: Array, input1: Any, input2: Any) -> Array:
    """``input1`` where ``condition`` holds, else ``input2``."""
    return jnp.where(condition, input1, input2)


# ---- linear algebra ---------------------------------------------------------------------------
@kernel("matmul")
def matmul(left: Array, right: Array) -> Array:
    """Matrix product with NumPy broadcasting."""
    return jnp.matmul(left, right)


@kernel("linear")
def linear(input: Array, weight: Array, bias: Array | None) -> Array:
    """``input @ weight.T + bias`` with ``weight`` of shape ``(out, in)``."""
    out = jnp.matmul(input, jnp.swapaxes(weight, -1, -2))
    return out if bias is None else out + bias


# ---- reductions -------------------------------------------------------------------------------
@kernel("sum")
def sum(input: Array, axis: Any = None, keepdim: bool = False) -> Array:
    """Sum over ``axis`` (all axes for ``None``)."""
    return jnp.sum(input, axis=axis, keepdims=keepdim)


@kernel("max")
def max(input: Array, axis: Any = None, keepdim: bool = False) -> Array:
    """Maximum over ``axis``."""
    return jnp.max(input, axis=axis, keepdims=keepdim)


@kernel("prod")
def prod(input: Array, axis: Any = None, keepdim: bool = False) -> Array:
    """Product over ``axis``."""
    return jnp.prod(input, axis=axis, keepdims=keepdim)


@kernel("argmax")
def argmax(input: Array, axis: int | None = None, keepdim: bool = False) -> Array:
    """Index of the maximum (of the flattened array for ``axis=None``)."""
    return jnp.argmax(input, axis=axis, keepdims=keepdim)


# ---- shape manipulation -----------------------------------------------------------------------
@kernel("reshape")
def reshape(input: Array, shape: Sequence[int]) -> Array:
    """``input`` with a new shape (one entry may be -1)."""
    return jnp.reshape(input, tuple(shape))


@kernel("transpose")
def transpose(input: Array, axes: Sequence[int] | None = None) -> Array:
    """Permute axes (reverse them for ``None``)."""
    return jnp.transpose(input, None if axes is None else tuple(axes))


@kernel("broadcast_to")
def broadcast_to(input: Array, shape: Sequence[int]) -> Array:
    """Broadcast ``input`` to ``shape``."""
    return jnp.broadcast_to(input, tuple(shape))


@kernel("concat")
def concat(*args: Any, axis: Any = _UNSET) -> Array:
    """Join tensors along ``axis``: ``concat(x1, ..., xn, axis)``, the axis last.

    ``axis=None`` flattens the inputs first. The axis may also be given by keyword, or left out
    (then 0).
    """
    tensors: Sequence[Any] = args
    if axis is _UNSET:
        axis = 0
        if args and (args[-1] is None or isinstance(args[-1], int | np.integer)):
            *tensors, axis = args
    return jnp.concatenate([jnp.asarray(t) for t in tensors], axis=axis)


@kernel("pad")
def pad(input: Array, pad_width: Sequence[tuple[int, int]]) -> Array:
    """Zero padding with one ``(before, after)`` pair per dim."""
    return jnp.pad(input, tuple((int(lo), int(hi)) for lo, hi in pad_width))


@kernel("indexer")
def indexer(input: Any, index: Any) -> Any:
    """``input[index]`` (basic indexing: ints, slices, ``None``, ``Ellipsis``)."""
    return input[index]


@kernel("to_tensor")
def to_tensor(input: Any, *, float_dtype: Any = jnp.float32) -> Array:
    """A Python number or nested list as an array: floats in ``float_dtype``, ints int64."""
    kind = np.asarray(input).dtype.kind
    if kind == "b":
        dtype = jnp.bool_
    elif kind in "iu":
        dtype = jnp.int64
    else:
        dtype = float_dtype
    return jnp.asarray(input, dtype=dtype)


# ---- convolution and pooling ------------------------------------------------------------------
def _conv(input: Array, weight: Array, bias: Array | None, stride: Any, padding: Any,
          dilation: Any, groups: int, nd: int) -> Array:
    """N-d convolution of ``(N, C, *spatial)`` (or unbatched ``(C, *spatial)``) input."""
    x = jnp.asarray(input)
    unbatched = x.ndim == nd + 1
    if unbatched:
        x = x[None]
    spatial = "HW"[:nd] if nd <= 2 else "DHW"
    out = jax.lax.conv_general_dilated(
        x, weight, window_strides=_tuple(stride, nd), padding=_pad_pairs(padding, nd),
        rhs_dilation=_tuple(dilation, nd),
        dimension_numbers=("NC" + spatial, "OI" + spatial, "NC" + spatial),
        feature_group_count=int(groups))
    if bias is not None:
        out = out + jnp.reshape(bias, _channel_shape(out.ndim))
    return out[0] if unbatched else out


@kernel("conv2d")
def conv2d(input: Array, weight: Array, bias: Array | None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Array:
    """2-d convolution, PyTorch layout: input ``(N, C, H, W)``, weight ``(O, C/groups, KH, KW)``.
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2)


def _window_args(ndim: int, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                 nd: int) -> dict[str, Any]:
    """``lax.reduce_window`` arguments for pooling the last ``nd`` axes of an ``ndim`` array."""
    k = _tuple(kernel_size, nd)
    s = k if stride is None else _tuple(stride, nd)
    lead = ndim - nd
    return {
        "window_dimensions": (1,) * lead + k,
        "window_strides": (1,) * lead + s,
        "padding": ((0, 0),) * lead + _pad_pairs(padding, nd),
        "window_dilation": (1,) * lead + _tuple(dilation, nd),
    }


def _max_pool(input: Array, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              nd: int) -> Array:
    """Max pooling over the last ``nd`` axes; padding counts as -inf (floor mode)."""
    x = jnp.asarray(input)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        init = -jnp.inf
    elif x.dtype == jnp.bool_:
        init = False
    else:
        init = jnp.iinfo(x.dtype).min
    args = _window_args(x.ndim, kernel_size, stride, padding, dilation, nd)
    if any(d != 1 for d in args["window_dilation"]):
        return _dilated_max_pool(x, np.array(init, x.dtype), **args)
    return jax.lax.reduce_window(x, np.array(init, x.dtype), jax.lax.max, **args)


def _dilated_max_pool(x: Array, init: Any, window_dimensions: tuple[int, ...],
                      window_strides: tuple[int, ...], padding: tuple[tuple[int, int], ...],
                      window_dilation: tuple[int, ...]) -> Array:
    """Max pooling with dilated windows as a maximum over strided slices.

    ``lax.reduce_window`` has no VJP for dilated max windows, so each window offset is sliced
    out of the padded input and the slices are reduced with ``jnp.max``.
    """
    xp = jnp.pad(x, padding, constant_values=init)
    out_shape = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in
                 zip(xp.shape, window_dimensions, window_strides, window_dilation, strict=True)]
    offsets = np.ndindex(*window_dimensions)
    slices = [jax.lax.slice(xp, [o * d for o, d in zip(off, window_dilation, strict=True)],
                            [o * d + (m - 1) * s + 1 for o, d, m, s in
                             zip(off, window_dilation, out_shape, window_strides, strict=True)],
                            window_strides) for off in offsets]
    return jnp.max(jnp.stack(slices), axis=0)


@kernel("max_pool2d")
def max_pool2d(input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1) -> Array:
    """2-d max pooling of ``(N, C, H, W)`` or ``(C, H, W)`` input."""
    return _max_pool(input, kernel_size, stride, padding, dilation, 2)


@kernel("avg_pool2d")
def avg_pool2d(input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Array:
    """2-d average pooling; zero padding counts and every window divides by its full size."""
    x = _to_float(input)
    args = _window_args(x.ndim, kernel_size, stride, padding, 1, 2)
    total = jax.lax.reduce_window(x, np.array(0, x.dtype), jax.lax.add, **args)
    return total / math.prod(_tuple(kernel_size, 2))


# ---- normalisation, embedding, attention ------------------------------------------------------
def _affine(out: Array, weight: Array | None, bias: Array | None, shape: Any) -> Array:
    """Apply optional ``weight`` and ``bias`` reshaped to ``shape``."""
    if weight is not None:
        out = out * jnp.reshape(weight, shape)
    if bias is not None:
        out = out + jnp.reshape(bias, shape)
    return out


def _normalize(x: Array, mean: Array, var: Array, eps: float) -> Array:
    """``(x - mean) / sqrt(var + eps)``."""
    return (x - mean) * jax.lax.rsqrt(var + eps)


@kernel("batch_norm")
def batch_norm(input: Array, weight: Array | None, bias: Array | None,
               running_mean: Array | None, running_var: Array | None, momentum: float = 0.1,
               eps: float = 1e-5) -> tuple[Array, Array | None, Array | None]:
    """Training batch norm over channel axis 1; returns ``(out, new_mean, new_var)``.

    The output uses the biased batch variance; the running variance is updated with the
    unbiased one (PyTorch). Absent running statistics give ``None`` in their place.
    """
    x = _to_float(input)
    axes = (0, *range(2, x.ndim))
    n = math.prod(x.shape[a] for a in axes)
    shape = _channel_shape(x.ndim)
    mean_ = jnp.mean(x, axis=axes)
    var_ = jnp.var(x, axis=axes)
    out = _normalize(x, mean_.reshape(shape), var_.reshape(shape), eps)
    out = _affine(out, weight, bias, shape)
    new_mean = new_var = None
    if running_mean is not None:
        new_mean = (1 - momentum) * running_mean + momentum * jax.lax.stop_gradient(mean_)
    if running_var is not None:
        if n < 2:
            raise ValueError(f"batch norm in training needs more than one value per channel, "
                             f"got input of shape {x.shape}")
        unbiased = jax.lax.stop_gradient(var_) * (n / (n - 1))
        new_var = (1 - momentum) * running_var + momentum * unbiased
    return out, new_mean, new_var


@kernel("batch_norm", mode="inference")
def batch_norm_inference(input: Array, weight: Array | None, bias: Array | None,
                         running_mean: Array | None, running_var: Array | None,
                         momentum: float = 0.1, eps: float = 1e-5,
                         ) -> tuple[Array, Array | None, Array | None]:
    """Inference batch norm with the running statistics (batch ones where they are ``None``).

    Returns ``(out, running_mean, running_var)`` with the statistics unchanged.
    """
    x = _to_float(input)
    axes = (0, *range(2, x.ndim))
    shape = _channel_shape(x.ndim)
    mean_ = jnp.mean(x, axis=axes) if running_mean is None else running_mean
    var_ = jnp.var(x, axis=axes) if running_var is None else running_var
    out = _normalize(x, jnp.reshape(mean_, shape), jnp.reshape(var_, shape), eps)
    return _affine(out, weight, bias, shape), running_mean, running_var


@kernel("embedding")
def embedding(input: Array, weight: Array) -> Array:
    """Rows of ``weight`` picked by the integer ``input``."""
    return jnp.take(weight, input, axis=0)


@kernel("scaled_dot_product")
def scaled_dot_product(query: Array, key: Array, value: Array, attn_mask: Array | None,
                       is_causal: bool = False, scale: float | None = None) -> Array:
    """``softmax(q @ k^T * scale + mask) @ v``, as ``F.scaled_dot_product_attention``.

    A boolean ``attn_mask`` marks positions to attend (True); a float mask is added.
    ``is_causal`` masks the upper triangle; ``scale=None`` is ``1 / sqrt(E)``.
    """
    q = _to_float(query)
    factor = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = jnp.matmul(q, jnp.swapaxes(key, -1, -2)) * factor
    if is_causal:
        length, source = scores.shape[-2], scores.shape[-1]
        allowed = jnp.tril(jnp.ones((length, source), dtype=jnp.bool_))
        scores = jnp.where(allowed, scores, -jnp.inf)
    if attn_mask is not None:
        mask = jnp.asarray(attn_mask)
        if mask.dtype == jnp.bool_:
            scores = jnp.where(mask, scores, -jnp.inf)
        else:
            scores = scores + mask
    return jnp.matmul(jax.nn.softmax(scores, axis=-1), value)


# ---- randomness -------------------------------------------------------------------------------
@kernel("dropout")
def dropout(input: Array, p: float = 0.5, rng: Any = None) -> Array:
    """Zero each element with probability ``p``; scale the kept ones by ``1 / (1 - p)``."""
    if p == 0:
        return jnp.asarray(input)
    if rng is None:
        raise ValueError("dropout needs a JAX PRNG key as its trailing 'rng' argument")
    x = jnp.asarray(input)
    keep = jax.random.bernoulli(rng, 1 - p, x.shape)
    return jnp.where(keep, x / (1 - p), jnp.zeros((), x.dtype))


@kernel("dropout", mode="inference")
def dropout_inference(input: Array, p: float = 0.5, rng: Any = None) -> Array:
    """Inference dropout: ``input`` unchanged."""
    return input


@kernel("split_rng")
def split_rng(rng: Any, n: int) -> list[Any]:
    """``n`` independent PRNG keys split from ``rng``."""
    return list(jax.random.split(rng, n))


@kernel("one_hot")
def one_hot(input: Array, num_classes: int) -> Array:
    """Boolean one-hot encoding along a new last axis."""
    return input[..., None] == jnp.arange(num_classes)


# ---- reference-catalogue additions ------------------------------------------------------------
def _size(shape: Any) -> tuple[int, ...]:
    """A shape given as an int or a sequence of ints, as a tuple."""
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


@kernel("arange")
def arange(start: Any = 0, stop: Any = None, step: Any = 1, dtype: Any = None) -> Array:
    """``jnp.arange(start, stop, step)``; ``dtype=None``: int64 for ints, else JAX's default
    float dtype."""
    target = None if dtype is None else native_dtype(dtype)
    if target is None and all(isinstance(v, int) for v in (start, stop, step)):
        target = jnp.int64
    return jnp.arange(start, stop, step, dtype=target)


@kernel("randn")
def randn(shape: Any, dtype: Any = None, rng: Any = None) -> Array:
    """Standard normal samples of ``shape`` drawn with the PRNG key ``rng`` (``dtype=None``:
    JAX's default float dtype)."""
    if rng is None:
        raise ValueError("randn needs a JAX PRNG key as its trailing 'rng' argument")
    target = jnp.result_type(float) if dtype is None else native_dtype(dtype)
    return jax.random.normal(rng, _size(shape), dtype=target)


@kernel("randint")
def randint(shape: Any, low: int = 0, high: int | None = None, dtype: Any = None,
            rng: Any = None) -> Array:
    """Integers uniform in ``[low, high)`` of ``shape`` (``dtype=None``: int64)."""
    if rng is None:
        raise ValueError("randint needs a JAX PRNG key as its trailing 'rng' argument")
    target = jnp.int64 if dtype is None else native_dtype(dtype)
    return jax.random.randint(rng, _size(shape), low, high, dtype=target)


@kernel("cholesky")
def cholesky(input: Array) -> Array:
    """Lower Cholesky factor ``L`` of symmetric positive-definite matrices (``A = L L^T``)."""
    return jnp.linalg.cholesky(input)


@kernel("eigvalsh")
def eigvalsh(input: Array) -> Array:
    """Eigenvalues (ascending) of symmetric matrices."""
    return jnp.linalg.eigvalsh(input)


@kernel("unique")
def unique(input: Array) -> Array:
    """The sorted distinct values of ``input`` (flattened). The length depends on the data,
    so this kernel cannot run under ``jax.jit`` (a jitted model falls back to eager execution
    with a warning; compile with ``jit=False`` to avoid it)."""
    return jnp.unique(input)


@kernel("polynomial_features")
def polynomial_features(input: Array, degree: int) -> Array:
    """Every monomial of the last axis' features with total degree 1..``degree`` (columns in
    scikit-learn's ``PolynomialFeatures(include_bias=False)`` order)."""
    x = jnp.asarray(input)
    idx = monomial_indices(x.shape[-1], degree)
    xa = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)
    out = xa[..., idx[:, 0]]
    for k in range(1, degree):
        out = out * xa[..., idx[:, k]]
    return out


@kernel("dtype_of")
def dtype_of(input: Any) -> Dtype:
    """The Mithril dtype (``ml.float32``, ...) of an array (works on traced arrays)."""
    return as_dtype(jnp.asarray(input).dtype.name)


