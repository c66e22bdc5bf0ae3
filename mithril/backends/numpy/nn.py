"""NumPy kernels of the neural-network primitives: convolution, pooling, normalisation, embedding,
attention, dropout (registered in ``kernels.registry``).
"""

from __future__ import annotations

import builtins as _builtins
import math
import typing as _typing

import numpy as np
from numpy.lib.stride_tricks import as_strided as _as_strided

from .kernels import (
    _float_dtype,
    _ntuple,
    _offset_slices,
    _pad_last,
    _pad_pairs,
    _window_counts,
    _windows,
    kernel,
    softmax,
)

if _typing.TYPE_CHECKING:
    from typing import Any


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


@kernel("one_hot")
def one_hot(input: np.ndarray, num_classes: int) -> np.ndarray:
    """Boolean one-hot encoding along a new last axis."""
    return input[..., None] == np.arange(num_classes)


