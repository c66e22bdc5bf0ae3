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
import typing as _typing
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
# Convolution
#
# im2col with one GEMM per group over the whole batch. The im2col matrix is channel-major,
# ``(groups, C/groups * prod(kernel), N * L)``, so the forward pass and both gradients are
# single large GEMMs. For stride-1 2-d convolutions each output row spans the full padded
# width ("flat rows": ``L = Ho * Wp``, the extra ``Wp - Wo`` columns per row are computed and
# dropped): then every kernel offset reads — and, in the backward col2im, adds into — one
# contiguous run of the flattened padded image, instead of many short rows.
# ----------------------------------------------------------------------------------------------
class _ConvPlan(_typing.NamedTuple):
    """The geometry of one convolution call (batched input ``(N, C, *spatial)``)."""

    n: int
    c: int
    o: int
    groups: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    sizes: tuple[int, ...]
    padded: tuple[int, ...]
    out: tuple[int, ...]
    flat: bool

    @property
    def rows(self) -> tuple[int, ...]:
        """Spatial shape of one im2col column block: ``(Ho, Wp)`` with flat rows, else out."""
        return (self.out[0], self.padded[1]) if self.flat else self.out

    @property
    def slack(self) -> int:
        """Zeros past the flattened padded image that the last flat row's extra columns read."""
        return self.padded[1] - self.out[1] if self.flat else 0


def _conv_plan(nd: int, x: np.ndarray, weight: np.ndarray, stride: Any, padding: Any,
               dilation: Any, groups: int) -> _ConvPlan:
    """Normalise a convolution's arguments and work out its shapes."""
    s, p, d = (_ntuple(stride, nd, "stride"), _pad_pairs(padding, nd),
               _ntuple(dilation, nd, "dilation"))
    n, c = x.shape[:2]
    kernel = tuple(weight.shape[2:])
    if c != weight.shape[1] * groups or weight.shape[0] % groups:
        raise ValueError(f"input with {c} channels does not match the weight "
                         f"{weight.shape} with groups={groups}")
    sizes = tuple(x.shape[2:])
    padded = tuple(n_ + a + b for n_, (a, b) in zip(sizes, p, strict=True))
    out = _window_counts(padded, kernel, s, d)
    return _ConvPlan(n, c, weight.shape[0], groups, kernel, s, p, d, sizes, padded, out,
                     nd == 2 and s == (1, 1))


def _flat_image(x: np.ndarray, plan: _ConvPlan) -> np.ndarray:
    """``x`` zero-padded into ``(N, C, Hp * Wp + slack)`` (the flat-rows layout)."""
    hp, wp = plan.padded
    (top, _), (left, _) = plan.pads
    buf = np.zeros((plan.n, plan.c, hp * wp + plan.slack), x.dtype)
    image = _as_strided(buf, (plan.n, plan.c, hp, wp),
                        (buf.strides[0], buf.strides[1], wp * buf.itemsize, buf.itemsize))
    image[:, :, top:top + plan.sizes[0], left:left + plan.sizes[1]] = x
    return buf


def _im2col(x: np.ndarray, plan: _ConvPlan) -> np.ndarray:
    """The im2col matrix ``(groups, C/groups * prod(kernel), N * L)`` of a batched input."""
    if plan.flat:
        buf = _flat_image(x, plan)
        (dh, dw), wp, isz = plan.dilation, plan.padded[1], buf.itemsize
        view = _as_strided(buf, (plan.c, *plan.kernel, plan.n, plan.out[0] * wp),
                           (buf.strides[1], dh * wp * isz, dw * isz, buf.strides[0], isz),
                           writeable=False)
    else:
        win = _windows(_pad_last(x, plan.pads), plan.kernel, plan.stride, plan.dilation)
        view = np.moveaxis(win, 0, 1 + len(plan.kernel))  # (C, *kernel, N, *out)
    return np.ascontiguousarray(view).reshape(plan.groups, -1, plan.n * math.prod(plan.rows))


def _conv_forward(nd: int, input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                  stride: Any, padding: Any, dilation: Any,
                  groups: int) -> tuple[np.ndarray, np.ndarray]:
    """An ``nd``-d convolution by im2col and one GEMM per group; returns (output, im2col)."""
    unbatched = input.ndim == nd + 1
    x = input[None] if unbatched else input
    plan = _conv_plan(nd, x, weight, stride, padding, dilation, groups)
    cols = _im2col(x, plan)
    out = np.matmul(weight.reshape(groups, plan.o // groups, -1), cols)
    out = out.reshape(plan.o, plan.n, *plan.rows)
    if plan.flat:
        out = out[..., :plan.out[1]]
    out = np.ascontiguousarray(np.moveaxis(out, 0, 1))  # (N, O, *out)
    if bias is not None:
        out += bias.reshape(plan.o, *(1,) * nd)
    return (out[0] if unbatched else out), cols


@kernel("conv2d")
def conv2d(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
           stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> np.ndarray:
    """2-d convolution (cross-correlation), PyTorch weight layout ``(out, in/groups, kh, kw)``."""
    return _conv_forward(2, input, weight, bias, stride, padding, dilation, groups)[0]


@kernel("conv2d", mode="with_cache")
def conv2d_fwd(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
               stride: Any = 1, padding: Any = 0, dilation: Any = 1,
               groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``conv2d`` and its im2col matrix (the cache of ``conv2d_vjp``)."""
    return _conv_forward(2, input, weight, bias, stride, padding, dilation, groups)


# ----------------------------------------------------------------------------------------------
# Pooling (over the last nd dims; any leading dims)
#
# A loop over the kernel offsets (kh * kw at most) of whole-array ops on strided views. This
# beats reducing a reshaped ``(..., o1, k1, o2, k2)`` array several times over in NumPy, even
# for the non-overlapping case; that case instead gets a backward pass that writes each
# window once into an uninitialised array. ``np.where``/``copyto(where=)`` are avoided: their
# generic loops are ~15x slower than multiplying by a boolean mask.
# ----------------------------------------------------------------------------------------------
def _pool_geometry(input: np.ndarray, nd: int, kernel_size: Any, stride: Any, padding: Any,
                   dilation: Any) -> tuple[tuple[int, ...], ...]:
    """Normalised ``(kernel, stride, pads, dilation, out_sizes)`` of a pooling call."""
    k = _ntuple(kernel_size, nd, "kernel_size")
    s = k if stride is None else _ntuple(stride, nd, "stride")
    p = _pad_pairs(padding, nd)
    d = _ntuple(dilation, nd, "dilation")
    padded = tuple(n + a + b for n, (a, b) in zip(input.shape[input.ndim - nd:], p, strict=True))
    return k, s, p, d, _window_counts(padded, k, s, d)


def _pool_views(xp: np.ndarray, geometry: tuple[tuple[int, ...], ...]) -> list[np.ndarray]:
    """One strided view of ``xp`` per kernel offset: the element each window takes there."""
    k, s, _, d, out = geometry
    return [xp[(Ellipsis, *sl)] for sl in _offset_slices(k, s, d, out)]


def _pad_value(dtype: np.dtype) -> float | int:
    """The identity of max: -inf for floats, the smallest value for integers."""
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _max_of(views: list[np.ndarray]) -> np.ndarray:
    """Elementwise maximum of the views (NaN propagates)."""
    if len(views) == 1:
        return views[0].copy()
    best = np.maximum(views[0], views[1])
    for v in views[2:]:
        np.maximum(best, v, out=best)
    return best


def _first_hits(views: list[np.ndarray], best: np.ndarray) -> list[np.ndarray]:
    """Per offset, a mask of the windows whose first maximum (row-major) sits there.

    A window holding NaN picks its first NaN.
    """
    masks: list[np.ndarray] = []
    taken = np.zeros(best.shape, bool)
    for v in views:
        hit = v == best
        hit &= ~taken
        taken |= hit
        masks.append(hit)
    if best.dtype.kind == "f" and not taken.all():
        for v, hit in zip(views, masks, strict=True):
            nan = np.isnan(v)
            nan &= ~taken
            hit |= nan
            taken |= nan
    return masks


def _max_pool_fwd(input: np.ndarray, nd: int, kernel_size: Any, stride: Any, padding: Any,
                  dilation: Any, want_masks: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    """Max pooling and, per kernel offset, the mask of windows whose maximum it holds."""
    geometry = _pool_geometry(input, nd, kernel_size, stride, padding, dilation)
    views = _pool_views(_pad_last(input, geometry[2], _pad_value(input.dtype)), geometry)
    best = _max_of(views)
    return best, (_first_hits(views, best) if want_masks else [])


@kernel("max_pool2d")
def max_pool2d(input: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1) -> np.ndarray:
    """2-d max pooling over the last two dims (padding counts as -inf; floor mode)."""
    return _max_pool_fwd(input, 2, kernel_size, stride, padding, dilation, False)[0]


@kernel("max_pool2d", mode="with_cache")
def max_pool2d_fwd(input: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0,
                   dilation: Any = 1) -> tuple[np.ndarray, list[np.ndarray]]:
    """``max_pool2d`` and its argmax masks (the cache of ``max_pool2d_vjp``)."""
    return _max_pool_fwd(input, 2, kernel_size, stride, padding, dilation)


@kernel("avg_pool2d")
def avg_pool2d(input: np.ndarray, kernel_size: Any, stride: Any = None,
               padding: Any = 0) -> np.ndarray:
    """2-d average pooling; zero padding counts in the average (PyTorch's default)."""
    geometry = _pool_geometry(input, 2, kernel_size, stride, padding, 1)
    views = _pool_views(_pad_last(input, geometry[2]), geometry)
    acc = views[0].astype(_float_dtype(input), copy=True)
    for v in views[1:]:
        acc += v
    acc /= math.prod(geometry[0])
    return acc


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------
def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel (axis 1) vector against ``x``."""
    return (x.shape[1],) + (1,) * (x.ndim - 2)


def _standardise(x: np.ndarray, axes: tuple[int, ...],
                 eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x - mean) / sqrt(var + eps)`` over ``axes``; returns (xhat, mean, biased var, 1/std).

    ``mean``, ``var`` and ``1/std`` keep the reduced dims.
    """
    mu = np.mean(x, axis=axes, keepdims=True)
    xc = x - mu
    var = np.mean(np.square(xc), axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(var + eps)
    xc *= inv_std
    return xc, mu, var, inv_std


def _affine(xhat: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
            shape: tuple[int, ...]) -> np.ndarray:
    """``xhat * weight + bias`` with the parameters reshaped to ``shape`` (either may be None)."""
    if weight is None:
        return xhat if bias is None else xhat + bias.reshape(shape)
    out = xhat * weight.reshape(shape)
    if bias is not None:
        out += bias.reshape(shape)
    return out


def _bn_standardise(x: np.ndarray,
                    eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel (axis 1) ``_standardise``; statistics come back with shape ``(C,)``.

    Works on an ``(N, C, L)`` view with ``einsum`` sums, much faster than NumPy's reductions
    over axes ``(0, 2, 3)``.
    """
    n, c = x.shape[:2]
    x3 = x.reshape(n, c, -1)
    count = n * x3.shape[2]
    mu = np.einsum("ncl->c", x3) / count
    xc = x3 - mu[:, None]
    var = np.einsum("ncl,ncl->c", xc, xc) / count
    inv_std = 1 / np.sqrt(var + eps)
    xc *= inv_std[:, None]
    return xc.reshape(x.shape), mu, var, inv_std


@kernel("batch_norm", mode="with_cache")
def batch_norm_fwd(input: np.ndarray, weight: np.ndarray | None = None,
                   bias: np.ndarray | None = None, running_mean: np.ndarray | None = None,
                   running_var: np.ndarray | None = None, momentum: float = 0.1,
                   eps: float = 1e-5) -> tuple[tuple[Any, Any, Any], tuple[np.ndarray, ...]]:
    """``batch_norm`` and ``(xhat, 1/std)`` (the cache of ``batch_norm_vjp``)."""
    xhat, mu, var, inv_std = _bn_standardise(input, eps)
    out = _affine(xhat, weight, bias, _channel_shape(input))
    if running_mean is None or running_var is None:
        return (out, running_mean, running_var), (xhat, inv_std)
    n = input.size // input.shape[1]
    unbiased = var * (n / _builtins.max(n - 1, 1))
    new_mean = (1 - momentum) * running_mean + momentum * mu
    new_var = (1 - momentum) * running_var + momentum * unbiased
    stats = (new_mean.astype(running_mean.dtype, copy=False),
             new_var.astype(running_var.dtype, copy=False))
    return (out, *stats), (xhat, inv_std)


@kernel("batch_norm")
def batch_norm(input: np.ndarray, weight: np.ndarray | None = None,
               bias: np.ndarray | None = None, running_mean: np.ndarray | None = None,
               running_var: np.ndarray | None = None, momentum: float = 0.1,
               eps: float = 1e-5) -> tuple[Any, Any, Any]:
    """Training batch norm over channel axis 1: ``(output, new_running_mean, new_running_var)``.

    Normalises with the biased batch variance; the running variance moves towards the unbiased
    one (PyTorch). Without running statistics returns ``(output, None, None)``.
    """
    return batch_norm_fwd(input, weight, bias, running_mean, running_var, momentum, eps)[0]


@kernel("batch_norm", mode="inference")
def batch_norm_inference(input: np.ndarray, weight: np.ndarray | None = None,
                         bias: np.ndarray | None = None, running_mean: np.ndarray | None = None,
                         running_var: np.ndarray | None = None, momentum: float = 0.1,
                         eps: float = 1e-5) -> tuple[Any, Any, Any]:
    """Batch norm with the running statistics (batch statistics when they are None).

    Returns ``(output, running_mean, running_var)`` with the statistics unchanged.
    """
    if running_mean is None or running_var is None:
        xhat = _bn_standardise(input, eps)[0]
    else:
        shape = _channel_shape(input)
        inv_std = 1 / np.sqrt(running_var.reshape(shape) + eps)
        xhat = (input - running_mean.reshape(shape)) * inv_std
    return _affine(xhat, weight, bias, _channel_shape(input)), running_mean, running_var


def _layer_axes(input: np.ndarray, normalized_shape: Any) -> tuple[int, ...]:
    count = 1 if isinstance(normalized_shape, int | np.integer) else len(normalized_shape)
    return tuple(range(input.ndim - count, input.ndim))


# ----------------------------------------------------------------------------------------------
# Embedding, attention, dropout
# ----------------------------------------------------------------------------------------------
@kernel("embedding")
def embedding(input: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``weight[input]``: rows of ``weight`` selected by integer indices."""
    return weight[input]


@kernel("scaled_dot_product", mode="with_cache")
def scaled_dot_product_fwd(query: np.ndarray, key: np.ndarray, value: np.ndarray,
                           attn_mask: np.ndarray | None = None, is_causal: bool = False,
                           scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``scaled_dot_product`` and its attention probabilities (the cache of its VJP)."""
    s = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = np.matmul(query, np.swapaxes(key, -1, -2)) * s
    if is_causal:
        rows, cols = scores.shape[-2:]
        scores = np.where(np.tri(rows, cols, dtype=bool), scores, -np.inf)
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            scores = np.where(attn_mask, scores, -np.inf)
        else:
            scores = scores + attn_mask
    probs = softmax(scores, -1)
    return np.matmul(probs, value), probs


@kernel("scaled_dot_product")
def scaled_dot_product(query: np.ndarray, key: np.ndarray, value: np.ndarray,
                       attn_mask: np.ndarray | None = None, is_causal: bool = False,
                       scale: float | None = None) -> np.ndarray:
    """``softmax(q @ k^T * scale + mask) @ v`` (PyTorch's ``scaled_dot_product_attention``).

    A boolean ``attn_mask`` is True where attending is allowed; a float mask is added;
    ``is_causal`` hides keys after each query; ``scale=None`` is ``1/sqrt(E)``.
    """
    return scaled_dot_product_fwd(query, key, value, attn_mask, is_causal, scale)[0]


@kernel("dropout", mode="with_cache")
def dropout_fwd(input: np.ndarray, p: float = 0.5,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``dropout`` and the scaled keep mask (the cache of ``dropout_vjp``)."""
    dtype = _float_dtype(np.asarray(input))
    if p == 0:
        return input, np.ones((), dtype)
    if rng is None:
        raise ValueError("dropout needs a random generator (the backend's next_rng())")
    draw_dtype = np.float32 if dtype == np.float32 else np.float64
    keep = rng.random(np.shape(input), dtype=draw_dtype) >= p
    mask = keep.astype(dtype) * (1 / (1 - p))
    return input * mask, mask


@kernel("dropout")
def dropout(input: np.ndarray, p: float = 0.5,
            rng: np.random.Generator | None = None) -> np.ndarray:
    """Zero each element with probability ``p``, scale the others by ``1 / (1 - p)``."""
    return dropout_fwd(input, p, rng)[0]


@kernel("dropout", mode="inference")
def dropout_inference(input: np.ndarray, p: float = 0.5, rng: Any = None) -> np.ndarray:
    """Dropout at inference: the input unchanged."""
    return input


@kernel("split_rng")
def split_rng(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    """``n`` generators for ``n`` random kernels: the stateful generator shared ``n`` times."""
    return [rng] * n


@kernel("one_hot")
def one_hot(input: np.ndarray, num_classes: int) -> np.ndarray:
    """Boolean one-hot encoding along a new last axis."""
    return input[..., None] == np.arange(num_classes)


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


