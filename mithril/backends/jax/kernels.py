"""JAX kernels: one function per tensor primitive of the catalogue (see kernel-contract.md).

Every kernel takes the catalogue's input terminals positionally, in catalogue order, and is
traceable under ``jax.jit`` when its scalar arguments are Python constants (``item`` excepted:
it returns a Python value). Random kernels take a trailing JAX PRNG key ``rng``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ...framework.types import Dtype, as_dtype
from ..kernel_args import int_tuple, pad_pairs, polynomial, size_tuple
from ..registry import KernelRegistry

#: this module's kernels, by primitive (``registry.table()`` checks them)
registry = KernelRegistry("jax")
kernel = registry.kernel

Array = jax.Array
_UNSET: Any = object()  # marks an argument left out

#: Mithril dtype names -> JAX dtypes
DTYPES: dict[str, Any] = {
    name: getattr(jnp, name) for name in ("float16", "bfloat16", "float32", "float64", "int8",
                                          "int16", "int32", "int64", "uint8")} | {"bool": jnp.bool_}


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
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.result_type(float))


def _channel_shape(ndim: int) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector against an ``(N, C, ...)`` array."""
    return (1, -1) + (1,) * (ndim - 2)


def _on_float(fn: Callable[[Array], Array]) -> Callable[[Any], Array]:
    """The kernel ``fn(input)`` on ``input`` as an inexact array (see :func:`_to_float`)."""

    def on_float(input: Any) -> Array:
        return fn(_to_float(input))

    return on_float


def _absolute(input: Any) -> Array:
    """``|input|``; its gradient is 0 at 0, as PyTorch's (``jnp.abs`` alone gives 1)."""
    input = jnp.asarray(input)
    return jnp.where(input == 0, jnp.zeros_like(input), jnp.abs(input))


def _softplus(input: Any) -> Array:
    """The identity above 20 (PyTorch's beta=1, threshold=20: the catalogue's definition)."""
    x = _to_float(input)
    return jnp.where(x > 20, x, jax.nn.softplus(x))


# JAX's own functions where they have the primitive's semantics (the catalogue documents each)
registry.kernels_from({
    "add": jnp.add, "subtract": jnp.subtract, "multiply": jnp.multiply,
    "divide": jnp.true_divide, "floor_divide": jnp.floor_divide, "power": jnp.power,
    "minimum": jnp.minimum, "maximum": jnp.maximum, "greater": jnp.greater,
    "greater_equal": jnp.greater_equal, "equal": jnp.equal, "logical_and": jnp.logical_and,
    "negate": jnp.negative, "absolute": _absolute, "sign": jnp.sign, "floor": jnp.floor,
    "exp": _on_float(jnp.exp), "log": _on_float(jnp.log), "sqrt": _on_float(jnp.sqrt),
    "sin": _on_float(jnp.sin), "cos": _on_float(jnp.cos), "tanh": _on_float(jnp.tanh),
    "relu": jax.nn.relu, "sigmoid": _on_float(jax.nn.sigmoid), "softplus": _softplus,
    "stop_gradient": jax.lax.stop_gradient, "logical_not": jnp.logical_not,
    "gelu": lambda input, approximate=False: jax.nn.gelu(_to_float(input),
                                                         approximate=bool(approximate)),
    "nan_to_num": lambda input, nan=0.0, posinf=None, neginf=None: jnp.nan_to_num(
        input, nan=nan, posinf=posinf, neginf=neginf),
    "softmax": lambda input, axis=-1: jax.nn.softmax(_to_float(input), axis=axis),
    "log_softmax": lambda input, axis=-1: jax.nn.log_softmax(_to_float(input), axis=axis),
    "where": jnp.where, "matmul": jnp.matmul,
    "sum": lambda input, axis=None, keepdim=False: jnp.sum(input, axis=axis, keepdims=keepdim),
    "max": lambda input, axis=None, keepdim=False: jnp.max(input, axis=axis, keepdims=keepdim),
    "prod": lambda input, axis=None, keepdim=False: jnp.prod(input, axis=axis,
                                                             keepdims=keepdim),
    "argmax": lambda input, axis=None, keepdim=False: jnp.argmax(input, axis=axis,
                                                                 keepdims=keepdim),
    "reshape": lambda input, shape: jnp.reshape(input, tuple(shape)),
    "transpose": lambda input, axes=None: jnp.transpose(
        input, None if axes is None else tuple(axes)),
    "broadcast_to": lambda input, shape: jnp.broadcast_to(input, tuple(shape)),
    "pad": lambda input, pad_width: jnp.pad(
        input, tuple((int(lo), int(hi)) for lo, hi in pad_width)),
    "indexer": operator.getitem,  # basic indexing: ints, slices, None, Ellipsis
    "split_rng": lambda rng, n: list(jax.random.split(rng, n)),
    "cholesky": jnp.linalg.cholesky, "eigvalsh": jnp.linalg.eigvalsh,
    # data-dependent length: cannot run under jax.jit (a jitted model falls back to eager
    # execution with a warning; compile with jit=False to avoid it)
    "unique": jnp.unique,
    "dtype_of": lambda input: as_dtype(jnp.asarray(input).dtype.name),  # traced arrays too
})
registry.kernels_from({"dropout": lambda input, p=0.5, rng=None: input}, mode="inference")


@kernel("cast")
def cast(input: Any, dtype: Any) -> Array:
    """``input`` converted to ``dtype`` (``backend.cast`` calls it too)."""
    return jnp.asarray(input).astype(native_dtype(dtype))


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


@kernel("to_tensor")
def to_tensor(input: Any, *, float_dtype: Any = jnp.float32) -> Array:
    """A Python number or nested list as an array: floats in ``float_dtype``, ints int64."""
    kind = np.asarray(input).dtype.kind
    dtype = {"b": jnp.bool_, "i": jnp.int64, "u": jnp.int64}.get(kind, float_dtype)
    return jnp.asarray(input, dtype=dtype)


# ---- convolution and pooling ------------------------------------------------------------------
@kernel("conv2d")
def conv2d(input: Array, weight: Array, bias: Array | None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Array:
    """PyTorch layout: input ``(N, C, H, W)`` or ``(C, H, W)``, weight ``(O, C/groups, KH, KW)``.
    """
    x = jnp.asarray(input)
    unbatched = x.ndim == 3
    out = jax.lax.conv_general_dilated(
        x[None] if unbatched else x, weight, window_strides=int_tuple(stride, 2),
        padding=pad_pairs(padding, 2), rhs_dilation=int_tuple(dilation, 2),
        dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=int(groups))
    if bias is not None:
        out = out + jnp.reshape(bias, _channel_shape(out.ndim))
    return out[0] if unbatched else out


def _window_args(ndim: int, kernel_size: Any, stride: Any, padding: Any, dilation: Any
                 ) -> dict[str, Any]:
    """``lax.reduce_window`` arguments for pooling the last 2 axes of an ``ndim`` array."""
    k = int_tuple(kernel_size, 2)
    s = k if stride is None else int_tuple(stride, 2)
    lead = ndim - 2
    return {
        "window_dimensions": (1,) * lead + k,
        "window_strides": (1,) * lead + s,
        "padding": ((0, 0),) * lead + pad_pairs(padding, 2),
        "window_dilation": (1,) * lead + int_tuple(dilation, 2),
    }


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
    """Of ``(N, C, H, W)`` or ``(C, H, W)`` input; padding counts as -inf (floor mode)."""
    x = jnp.asarray(input)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        init = np.array(-jnp.inf, x.dtype)
    else:
        init = np.array(False if x.dtype == jnp.bool_ else jnp.iinfo(x.dtype).min, x.dtype)
    args = _window_args(x.ndim, kernel_size, stride, padding, dilation)
    if any(d != 1 for d in args["window_dilation"]):
        return _dilated_max_pool(x, init, **args)
    return jax.lax.reduce_window(x, init, jax.lax.max, **args)


@kernel("avg_pool2d")
def avg_pool2d(input: Array, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Array:
    """2-d average pooling; zero padding counts and every window divides by its full size."""
    x = _to_float(input)
    args = _window_args(x.ndim, kernel_size, stride, padding, 1)
    total = jax.lax.reduce_window(x, np.array(0, x.dtype), jax.lax.add, **args)
    return total / math.prod(int_tuple(kernel_size, 2))


# ---- normalisation ----------------------------------------------------------------------------
def _batch(input: Any) -> tuple[Array, tuple[int, ...], tuple[int, ...]]:
    """``input`` as floats, its batch-norm axes (all but channel axis 1), the channel shape."""
    x = _to_float(input)
    return x, (0, *range(2, x.ndim)), _channel_shape(x.ndim)


def _normalize(x: Array, mean: Array, var: Array, eps: float, weight: Array | None,
               bias: Array | None, shape: tuple[int, ...]) -> Array:
    """``(x - mean) / sqrt(var + eps) * weight + bias``, per channel (``shape``)."""
    out = (x - jnp.reshape(mean, shape)) * jax.lax.rsqrt(jnp.reshape(var, shape) + eps)
    if weight is not None:
        out = out * jnp.reshape(weight, shape)
    if bias is not None:
        out = out + jnp.reshape(bias, shape)
    return out


@kernel("batch_norm")
def batch_norm(input: Array, weight: Array | None, bias: Array | None,
               running_mean: Array | None, running_var: Array | None, momentum: float = 0.1,
               eps: float = 1e-5) -> tuple[Array, Array | None, Array | None]:
    """Training batch norm over channel axis 1; returns ``(out, new_mean, new_var)``.

    The output uses the biased batch variance; the running variance is updated with the
    unbiased one (PyTorch). Absent running statistics give ``None`` in their place.
    """
    x, axes, shape = _batch(input)
    n = math.prod(x.shape[a] for a in axes)
    mean_, var_ = jnp.mean(x, axis=axes), jnp.var(x, axis=axes)
    out = _normalize(x, mean_, var_, eps, weight, bias, shape)
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
    x, axes, shape = _batch(input)
    mean_ = jnp.mean(x, axis=axes) if running_mean is None else running_mean
    var_ = jnp.var(x, axis=axes) if running_var is None else running_var
    return _normalize(x, mean_, var_, eps, weight, bias, shape), running_mean, running_var


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


# ---- reference-catalogue additions ------------------------------------------------------------
@kernel("arange")
def arange(start: Any = 0, stop: Any = None, step: Any = 1, dtype: Any = None) -> Array:
    """``dtype=None``: int64 for ints, else JAX's default float dtype."""
    target = None if dtype is None else native_dtype(dtype)
    if target is None and all(isinstance(v, int) for v in (start, stop, step)):
        target = jnp.int64
    return jnp.arange(start, stop, step, dtype=target)


@kernel("randn")
def randn(shape: Any, dtype: Any = None, rng: Any = None) -> Array:
    """Drawn with the PRNG key ``rng`` (``dtype=None``: JAX's default float dtype)."""
    if rng is None:
        raise ValueError("randn needs a JAX PRNG key as its trailing 'rng' argument")
    target = jnp.result_type(float) if dtype is None else native_dtype(dtype)
    return jax.random.normal(rng, size_tuple(shape), dtype=target)


@kernel("randint")
def randint(shape: Any, low: int = 0, high: int | None = None, dtype: Any = None,
            rng: Any = None) -> Array:
    """Drawn with the PRNG key ``rng`` (``dtype=None``: int64)."""
    if rng is None:
        raise ValueError("randint needs a JAX PRNG key as its trailing 'rng' argument")
    target = jnp.int64 if dtype is None else native_dtype(dtype)
    return jax.random.randint(rng, size_tuple(shape), low, high, dtype=target)


def _with_ones(input: Any) -> Array:
    x = jnp.asarray(input)
    return jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)


registry.kernels_from({"polynomial_features": lambda input, degree: polynomial(
    _with_ones(input), degree, lambda xa, columns: xa[..., columns])})
