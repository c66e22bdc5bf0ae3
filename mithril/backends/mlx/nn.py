"""MLX kernels of the neural-network primitives: convolution, pooling, batch normalisation,
attention, dropout (registered in ``kernels.registry``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import mlx.core as mx

from .kernels import _Array, kernel, registry, softmax


def _pair(value: Any) -> tuple[int, ...]:
    return (int(value),) * 2 if isinstance(value, int) else tuple(int(v) for v in value)


def _pad_pairs(value: Any) -> tuple[tuple[int, int], ...]:
    items = (value,) * 2 if isinstance(value, int) else tuple(value)
    return tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in items)


@kernel("conv2d")
def conv2d(input: _Array, weight: _Array, bias: _Array | None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> _Array:
    unbatched = input.ndim == 3
    x = mx.transpose(mx.expand_dims(input, 0) if unbatched else input, (0, 2, 3, 1))
    w = mx.transpose(weight, (0, 2, 3, 1))  # channels last
    s, d, p = _pair(stride), _pair(dilation), _pad_pairs(padding)
    if x.dtype == mx.float64 or w.dtype == mx.float64:
        out = _conv_unfold(x, w, s, p, d, groups)
    else:
        out = mx.conv_general(x, w, stride=list(s),
                              padding=([a for a, _ in p], [b for _, b in p]),
                              kernel_dilation=list(d), groups=groups)
    out = mx.transpose(out, (0, 3, 1, 2))
    if bias is not None:
        out = out + mx.reshape(bias, (1, -1, 1, 1))
    return out[0] if unbatched else out


def _windows(x: _Array, kernel: tuple[int, ...], stride: tuple[int, ...],
             dilation: tuple[int, ...], first_axis: int) -> _Array:
    """Every window offset of ``x`` as a strided slice, stacked on a new axis.

    The spatial axes of ``x`` start at ``first_axis``; each becomes its output length, and the
    ``prod(kernel)`` window elements form a new axis placed right after them:
    ``(N, H, W, C) -> (N, OH, OW, KH*KW, C)`` or ``(N, C, H, W) -> (N, C, OH, OW, KH*KW)``.
    Floor mode: incomplete windows at the end are dropped.
    """
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


def _conv_unfold(x: _Array, w: _Array, stride: tuple[int, ...],
                 padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...],
                 groups: int) -> _Array:
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
def _pool(input: _Array, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
          fill: float | int, reduce: Any) -> _Array:
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    lead = input.ndim - 2
    x = mx.pad(input, [(0, 0)] * lead + list(_pad_pairs(padding)), constant_values=fill)
    return reduce(_windows(x, k, s, _pair(dilation), lead), axis=-1)


@kernel("max_pool2d")
def max_pool2d(input: _Array, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1) -> _Array:
    # padding counts as the lowest value of the dtype
    if mx.issubdtype(input.dtype, mx.floating):
        fill: float | int = -math.inf
    else:
        fill = False if input.dtype == mx.bool_ else mx.iinfo(input.dtype).min
    return _pool(input, kernel_size, stride, padding, dilation, fill, mx.max)


@kernel("avg_pool2d")
def avg_pool2d(input: _Array, kernel_size: Any, stride: Any = None, padding: Any = 0) -> _Array:
    # zero padding counts in the average
    return _pool(input, kernel_size, stride, padding, 1, 0, mx.mean)


# ---- batch normalisation over channel axis 1 ----
def _batch_stats(input: _Array) -> tuple[_Array, _Array]:
    axes = tuple(a for a in range(input.ndim) if a != 1)
    mean = mx.mean(input, axis=axes, keepdims=True)
    return mean, mx.mean(mx.square(input - mean), axis=axes, keepdims=True)


def _normalise(input: _Array, mean: _Array, var: _Array, eps: float, weight: _Array | None,
               bias: _Array | None) -> _Array:
    shape = (1, -1) + (1,) * (input.ndim - 2)
    out = (input - mean) * mx.rsqrt(var + eps)
    if weight is not None:
        out = out * mx.reshape(weight, shape)
    return out if bias is None else out + mx.reshape(bias, shape)


@kernel("batch_norm")
def batch_norm(input: _Array, weight: _Array | None, bias: _Array | None,
               running_mean: _Array | None, running_var: _Array | None, momentum: float = 0.1,
               eps: float = 1e-5) -> tuple[_Array, _Array | None, _Array | None]:
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
def batch_norm_inference(input: _Array, weight: _Array | None, bias: _Array | None,
                         running_mean: _Array | None, running_var: _Array | None,
                         momentum: float = 0.1, eps: float = 1e-5
                         ) -> tuple[_Array, _Array | None, _Array | None]:
    """Batch norm with the running statistics (batch ones where absent); state unchanged."""
    shape = (1, -1) + (1,) * (input.ndim - 2)
    if running_mean is None or running_var is None:
        mean, var = _batch_stats(input)
    if running_mean is not None:
        mean = mx.reshape(running_mean, shape)
    if running_var is not None:
        var = mx.reshape(running_var, shape)
    return _normalise(input, mean, var, eps, weight, bias), running_mean, running_var


@kernel("scaled_dot_product")
def scaled_dot_product(query: _Array, key: _Array, value: _Array, attn_mask: _Array | None,
                       is_causal: bool = False, scale: float | None = None) -> _Array:
    """Attention as PyTorch's ``F.scaled_dot_product_attention``: a boolean ``attn_mask`` marks
    the positions that may be attended, a float one is added to the scores."""
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    scores = mx.matmul(query, mx.swapaxes(key, -1, -2)) * scale
    neg_inf = mx.array(-math.inf, scores.dtype)
    if is_causal:
        n_q, n_k = query.shape[-2], key.shape[-2]
        scores = mx.where(mx.tril(mx.ones((n_q, n_k), dtype=mx.bool_)), scores, neg_inf)
    if attn_mask is not None:
        if attn_mask.dtype == mx.bool_:
            scores = mx.where(attn_mask, scores, neg_inf)
        else:
            scores = scores + attn_mask
    return mx.matmul(softmax(scores, -1), value)


@kernel("dropout")
def dropout(input: _Array, p: float = 0.5, rng: _Array | None = None) -> _Array:
    # survivors scaled by 1 / (1 - p)
    if p == 0:
        return input
    keep = mx.random.bernoulli(1 - p, input.shape, key=rng)
    return mx.where(keep, input * (1 / (1 - p)), mx.zeros_like(input))


registry.kernels_from({"dropout": lambda input, p=0.5: input}, mode="inference")
