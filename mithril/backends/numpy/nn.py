"""NumPy kernels of the neural-network primitives: padding, convolution, pooling, batch norm,
embedding, attention, dropout (registered in ``kernels.registry``).
"""

from __future__ import annotations

import builtins
import itertools
import math
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..kernel_args import int_tuple, pad_pairs
from .kernels import _float_dtype, _output_of, kernel, registry, softmax


# ---- window geometry over the last nd dims (any leading dims) ------------------------------------
def _pad_last(x: np.ndarray, pads: Sequence[tuple[int, int]], value: float = 0) -> np.ndarray:
    """Pad the last ``len(pads)`` dims of ``x`` with ``value`` (``x`` itself if no padding)."""
    if all(a == 0 and b == 0 for a, b in pads):
        return x
    nd = len(pads)
    sizes = x.shape[x.ndim - nd:]
    shape = x.shape[:x.ndim - nd] + tuple(s + a + b for s, (a, b) in zip(sizes, pads, strict=True))
    out = np.zeros(shape, x.dtype) if value == 0 else np.full(shape, value, x.dtype)
    out[(Ellipsis, *(slice(a, a + s) for s, (a, _) in zip(sizes, pads, strict=True)))] = x
    return out


def _crop_last(x: np.ndarray, pads: Sequence[tuple[int, int]],
               sizes: Sequence[int]) -> np.ndarray:
    """Undo ``_pad_last``: the region of the last dims that held the original data."""
    if all(a == 0 and b == 0 for a, b in pads):
        return x
    return x[(Ellipsis, *(slice(a, a + s) for (a, _), s in zip(pads, sizes, strict=True)))]


def _geometry(sizes: Sequence[int], kernel: tuple[int, ...], stride: Any, padding: Any,
              dilation: Any) -> tuple[Any, ...]:
    """Normalised ``(stride, pads, dilation, padded sizes, window counts)`` of windows of
    ``kernel`` over spatial ``sizes`` (``stride=None``: the kernel; floor mode)."""
    nd = len(kernel)
    s = kernel if stride is None else int_tuple(stride, nd, "stride")
    p, d = pad_pairs(padding, nd), int_tuple(dilation, nd, "dilation")
    padded = tuple(n + a + b for n, (a, b) in zip(sizes, p, strict=True))
    out = tuple((n - dd * (k - 1) - 1) // ss + 1
                for n, k, ss, dd in zip(padded, kernel, s, d, strict=True))
    if builtins.min(out) <= 0:
        raise ValueError(f"a window of size {kernel} (dilation {d}) does "
                         f"not fit an input of spatial size {padded}")
    return s, p, d, padded, out


def _offset_slices(kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
                   out: Sequence[int]) -> list[tuple[slice, ...]]:
    """For each kernel offset (row-major), the slices of the input it meets in every window."""
    return [tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                  for o, d, s, n in zip(offs, dilation, stride, out, strict=True))
            for offs in itertools.product(*(range(k) for k in kernel))]


registry.kernels_from({
    "pad": lambda input, pad_width: _pad_last(input, pad_pairs(pad_width, input.ndim)),
    "embedding": lambda input, weight: weight[input],
})


# ---- convolution ---------------------------------------------------------------------------------
# im2col with one GEMM per group over the whole batch. The im2col matrix is channel-major,
# ``(groups, C/groups * prod(kernel), N * L)``, so the forward pass and both gradients are
# single large GEMMs. For stride-1 2-d convolutions each output row spans the full padded
# width ("flat rows": ``L = Ho * Wp``, the extra ``Wp - Wo`` columns per row are computed and
# dropped): then every kernel offset reads — and, in the backward col2im, adds into — one
# contiguous run of the flattened padded image, instead of many short rows.
class _ConvPlan(typing.NamedTuple):
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
    flat: bool  # flat rows (stride-1 2-d)
    rows: tuple[int, ...]  # spatial shape of one im2col column block: (Ho, Wp) flat, else out
    slack: int  # zeros past the flat padded image that the last row's extra columns read


def _conv_plan(x: np.ndarray, weight: np.ndarray, stride: Any, padding: Any, dilation: Any,
               groups: int) -> _ConvPlan:
    """Normalise a convolution's arguments and work out its shapes."""
    n, c = x.shape[:2]
    kernel, sizes = tuple(weight.shape[2:]), tuple(x.shape[2:])
    s, p, d, padded, out = _geometry(sizes, kernel, stride, padding, dilation)
    if c != weight.shape[1] * groups or weight.shape[0] % groups:
        raise ValueError(f"input with {c} channels does not match the weight "
                         f"{weight.shape} with groups={groups}")
    flat = len(kernel) == 2 and s == (1, 1)
    return _ConvPlan(n, c, weight.shape[0], groups, kernel, s, p, d, sizes, padded, out, flat,
                     (out[0], padded[1]) if flat else out, padded[-1] - out[-1] if flat else 0)


def _flat_strided(buf: np.ndarray, plan: _ConvPlan) -> np.ndarray:
    """The ``(N, C, Hp, Wp)`` image inside a flat-rows buffer ``(N, C, Hp * Wp + slack)``."""
    return as_strided(buf, (plan.n, plan.c, *plan.padded),
                      (buf.strides[0], buf.strides[1], plan.padded[1] * buf.itemsize,
                       buf.itemsize))


def _im2col(x: np.ndarray, plan: _ConvPlan) -> np.ndarray:
    """The im2col matrix ``(groups, C/groups * prod(kernel), N * L)`` of a batched input."""
    if plan.flat:
        (top, _), (left, _) = plan.pads
        buf = np.zeros((plan.n, plan.c, math.prod(plan.padded) + plan.slack), x.dtype)
        _flat_strided(buf, plan)[:, :, top:top + plan.sizes[0], left:left + plan.sizes[1]] = x
        (dh, dw), wp, isz = plan.dilation, plan.padded[1], buf.itemsize
        view = as_strided(buf, (plan.c, *plan.kernel, plan.n, plan.out[0] * wp),
                          (buf.strides[1], dh * wp * isz, dw * isz, buf.strides[0], isz),
                          writeable=False)
    else:  # a read-only strided view (C, *kernel, N, *out) of every window
        xp = _pad_last(x, plan.pads)
        st = xp.strides
        view = as_strided(xp, (plan.c, *plan.kernel, plan.n, *plan.out),
                          (st[1], *(a * d for a, d in zip(st[2:], plan.dilation, strict=True)),
                           st[0], *(a * s for a, s in zip(st[2:], plan.stride, strict=True))),
                          writeable=False)
    return np.ascontiguousarray(view).reshape(plan.groups, -1, plan.n * math.prod(plan.rows))


@kernel("conv2d", mode="with_cache")
def conv2d_fwd(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
               stride: Any = 1, padding: Any = 0, dilation: Any = 1,
               groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``conv2d`` (PyTorch weight layout) by im2col and one GEMM per group, and the im2col."""
    nd = weight.ndim - 2
    unbatched = input.ndim == nd + 1
    x = input[None] if unbatched else input
    plan = _conv_plan(x, weight, stride, padding, dilation, groups)
    cols = _im2col(x, plan)
    out = np.matmul(weight.reshape(groups, plan.o // groups, -1), cols)
    out = out.reshape(plan.o, plan.n, *plan.rows)
    if plan.flat:
        out = out[..., :plan.out[1]]
    out = np.ascontiguousarray(np.moveaxis(out, 0, 1))  # (N, O, *out)
    if bias is not None:
        out += bias.reshape(plan.o, *(1,) * nd)
    return (out[0] if unbatched else out), cols


# ---- pooling -------------------------------------------------------------------------------------
# A loop over the kernel offsets (kh * kw at most) of whole-array ops on strided views. This
# beats reducing a reshaped ``(..., o1, k1, o2, k2)`` array several times over in NumPy, even
# for the non-overlapping case; that case instead gets a backward pass that writes each
# window once into an uninitialised array. ``np.where``/``copyto(where=)`` are avoided: their
# generic loops are ~15x slower than multiplying by a boolean mask.
def _pool_geometry(input: np.ndarray, nd: int, kernel_size: Any, stride: Any, padding: Any,
                   dilation: Any) -> tuple[tuple[int, ...], ...]:
    """Normalised ``(kernel, stride, pads, dilation, out_sizes)`` of a pooling call."""
    k = int_tuple(kernel_size, nd, "kernel_size")
    s, p, d, _, out = _geometry(input.shape[input.ndim - nd:], k, stride, padding, dilation)
    return k, s, p, d, out


def _pool_views(xp: np.ndarray, geometry: tuple[tuple[int, ...], ...]) -> list[np.ndarray]:
    """One strided view of ``xp`` per kernel offset: the element each window takes there."""
    k, s, _, d, out = geometry
    return [xp[(Ellipsis, *sl)] for sl in _offset_slices(k, s, d, out)]


def _first_hits(views: list[np.ndarray], best: np.ndarray) -> list[np.ndarray]:
    """Per offset, a mask of the windows whose first maximum (or first NaN) sits there."""
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


@kernel("max_pool2d", mode="with_cache")
def max_pool2d_fwd(input: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0,
                   dilation: Any = 1, masks: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    """Max pooling (padding counts as -inf; NaN propagates) and, with ``masks``, per kernel
    offset the mask of the windows whose first maximum it holds."""
    geometry = _pool_geometry(input, 2, kernel_size, stride, padding, dilation)
    fill = -np.inf if input.dtype.kind == "f" else np.iinfo(input.dtype).min
    views = _pool_views(_pad_last(input, geometry[2], fill), geometry)
    if len(views) == 1:
        best = views[0].copy()
    else:
        best = np.maximum(views[0], views[1])
        for v in views[2:]:
            np.maximum(best, v, out=best)
    return best, (_first_hits(views, best) if masks else [])


@kernel("avg_pool2d")
def avg_pool2d(input: np.ndarray, kernel_size: Any, stride: Any = None,
               padding: Any = 0) -> np.ndarray:
    """Zero padding counts in the average (PyTorch's default)."""
    geometry = _pool_geometry(input, 2, kernel_size, stride, padding, 1)
    views = _pool_views(_pad_last(input, geometry[2]), geometry)
    acc = views[0].astype(_float_dtype(input), copy=True)
    for v in views[1:]:
        acc += v
    acc /= math.prod(geometry[0])
    return acc


# ---- batch norm (channel axis 1) -----------------------------------------------------------------
def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel (axis 1) vector against ``x``."""
    return (x.shape[1],) + (1,) * (x.ndim - 2)


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
    """``(x - mean) / sqrt(var + eps)`` per channel: (xhat, mean, biased var, 1/std), the
    statistics of shape ``(C,)``. ``einsum`` sums over an ``(N, C, L)`` view are much faster
    than NumPy's reductions over axes ``(0, 2, 3)``."""
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
    """Training batch norm: ``(output, new_running_mean, new_running_var)`` and the cache
    ``(xhat, 1/std)``. Normalises with the biased batch variance; the running variance moves
    towards the unbiased one (PyTorch); no running statistics: ``(output, None, None)``."""
    xhat, mu, var, inv_std = _bn_standardise(input, eps)
    out = _affine(xhat, weight, bias, _channel_shape(input))
    if running_mean is None or running_var is None:
        return (out, running_mean, running_var), (xhat, inv_std)
    n = input.size // input.shape[1]
    unbiased = var * (n / builtins.max(n - 1, 1))
    new_mean = (1 - momentum) * running_mean + momentum * mu
    new_var = (1 - momentum) * running_var + momentum * unbiased
    stats = (new_mean.astype(running_mean.dtype, copy=False),
             new_var.astype(running_var.dtype, copy=False))
    return (out, *stats), (xhat, inv_std)


@kernel("batch_norm", mode="inference")
def batch_norm_inference(input: np.ndarray, weight: np.ndarray | None = None,
                         bias: np.ndarray | None = None, running_mean: np.ndarray | None = None,
                         running_var: np.ndarray | None = None, momentum: float = 0.1,
                         eps: float = 1e-5) -> tuple[Any, Any, Any]:
    """With the running statistics (batch statistics when they are None), which it returns
    unchanged."""
    shape = _channel_shape(input)
    if running_mean is None or running_var is None:
        xhat = _bn_standardise(input, eps)[0]
    else:
        inv_std = 1 / np.sqrt(running_var.reshape(shape) + eps)
        xhat = (input - running_mean.reshape(shape)) * inv_std
    return _affine(xhat, weight, bias, shape), running_mean, running_var


# ---- attention, dropout --------------------------------------------------------------------------
@kernel("scaled_dot_product", mode="with_cache")
def scaled_dot_product_fwd(query: np.ndarray, key: np.ndarray, value: np.ndarray,
                           attn_mask: np.ndarray | None = None, is_causal: bool = False,
                           scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's ``scaled_dot_product_attention`` and the attention probabilities (the cache)."""
    s = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = np.matmul(query, np.swapaxes(key, -1, -2)) * s
    if is_causal:
        scores = np.where(np.tri(*scores.shape[-2:], dtype=bool), scores, -np.inf)
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            scores = np.where(attn_mask, scores, -np.inf)
        else:
            scores = scores + attn_mask
    probs = softmax(scores, -1)
    return np.matmul(probs, value), probs


@kernel("dropout", mode="with_cache")
def dropout_fwd(input: np.ndarray, p: float = 0.5,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dropout and its scaled keep mask (the cache)."""
    dtype = _float_dtype(np.asarray(input))
    if p == 0:
        return input, np.ones((), dtype)
    if rng is None:
        raise ValueError("dropout needs a random generator (the backend's next_rng())")
    draw_dtype = np.float32 if dtype == np.float32 else np.float64
    keep = rng.random(np.shape(input), dtype=draw_dtype) >= p
    mask = keep.astype(dtype) * (1 / (1 - p))
    return input * mask, mask


registry.kernels_from({
    "max_pool2d": lambda input, kernel_size, stride=None, padding=0, dilation=1: max_pool2d_fwd(
        input, kernel_size, stride, padding, dilation, False)[0],
    "conv2d": _output_of(conv2d_fwd), "batch_norm": _output_of(batch_norm_fwd),
    "scaled_dot_product": _output_of(scaled_dot_product_fwd), "dropout": _output_of(dropout_fwd),
})
registry.kernels_from({"dropout": lambda input, p=0.5, rng=None: input}, mode="inference")
