"""MLX kernels of the neural-network primitives: convolution, pooling, normalisation, embedding,
attention, dropout (registered in ``kernels.registry``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import mlx.core as mx

from .kernels import _Array, kernel, softmax


# ----------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------
@kernel("conv2d")
def conv2d(input: _Array, weight: _Array, bias: _Array | None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> _Array:
    """2-D cross-correlation, ``(N, C, H, W)`` input and ``(O, C/groups, KH, KW)`` weight."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2)


def _tuple(value: Any, nd: int) -> tuple[int, ...]:
    return (int(value),) * nd if isinstance(value, int) else tuple(int(v) for v in value)


def _pad_pairs(value: Any, nd: int) -> tuple[tuple[int, int], ...]:
    items = (value,) * nd if isinstance(value, int) else tuple(value)
    return tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in items)


def _channels_last(nd: int) -> tuple[int, ...]:
    return (0, *range(2, nd + 2), 1)


def _channels_first(nd: int) -> tuple[int, ...]:
    return (0, nd + 1, *range(1, nd + 1))


def _conv(input: _Array, weight: _Array, bias: _Array | None, stride: Any, padding: Any,
          dilation: Any, groups: int, nd: int) -> _Array:
    unbatched = input.ndim == nd + 1
    x = mx.expand_dims(input, 0) if unbatched else input
    s, d, p = _tuple(stride, nd), _tuple(dilation, nd), _pad_pairs(padding, nd)
    x = mx.transpose(x, _channels_last(nd))
    w = mx.transpose(weight, _channels_last(nd))
    if x.dtype == mx.float64 or w.dtype == mx.float64:
        out = _conv_unfold(x, w, s, p, d, groups)
    else:
        out = mx.conv_general(x, w, stride=list(s),
                              padding=([a for a, _ in p], [b for _, b in p]),
                              kernel_dilation=list(d), groups=groups)
    out = mx.transpose(out, _channels_first(nd))
    if bias is not None:
        out = out + mx.reshape(bias, (1, -1) + (1,) * nd)
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
            start = o * dl
            index.append(slice(start, start + st * (n_out - 1) + 1, st))
        pieces.append(x[tuple(index)])
    trailing = x.ndim - first_axis - nd
    return mx.stack(pieces, axis=x.ndim - trailing)


def _conv_unfold(x: _Array, w: _Array, stride: tuple[int, ...],
                 padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...],
                 groups: int) -> _Array:
    """Channels-last convolution by unfolding windows and one grouped matmul (any dtype)."""
    x = mx.pad(x, [(0, 0), *padding, (0, 0)])
    kernel = tuple(w.shape[1:-1])
    patches = _windows(x, kernel, stride, dilation, 1)  # (N, *out, K, C)
    n, *out_spatial, k, c = patches.shape
    cg, o = c // groups, w.shape[0]
    rows = math.prod(out_spatial) * n
    patches = mx.reshape(patches, (rows, k, groups, cg))
    patches = mx.reshape(mx.transpose(patches, (2, 0, 1, 3)), (groups, rows, k * cg))
    w = mx.reshape(w, (groups, o // groups, k * cg))
    out = mx.matmul(patches, mx.transpose(w, (0, 2, 1)))  # (groups, rows, O/groups)
    return mx.reshape(mx.transpose(out, (1, 0, 2)), (n, *out_spatial, o))


# ----------------------------------------------------------------------------------------------
# Pooling (channels-first input with any leading dims; floor mode)
# ----------------------------------------------------------------------------------------------
@kernel("max_pool2d")
def max_pool2d(input: _Array, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1) -> _Array:
    """2-D max pooling over the last two axes; padding counts as -inf."""
    return _pool(input, kernel_size, stride, padding, dilation, 2, "max")


@kernel("avg_pool2d")
def avg_pool2d(input: _Array, kernel_size: Any, stride: Any = None, padding: Any = 0) -> _Array:
    """2-D average pooling over the last two axes; zero padding counts in the average."""
    return _pool(input, kernel_size, stride, padding, 1, 2, "avg")


def _lowest(dtype: mx.Dtype) -> float | int:
    if mx.issubdtype(dtype, mx.floating):
        return -math.inf
    if dtype == mx.bool_:
        return False
    return mx.iinfo(dtype).min


def _pool(input: _Array, kernel_size: Any, stride: Any, padding: Any, dilation: Any, nd: int,
          mode: str) -> _Array:
    k = _tuple(kernel_size, nd)
    s = k if stride is None else _tuple(stride, nd)
    d = _tuple(dilation, nd)
    p = _pad_pairs(padding, nd)
    lead = input.ndim - nd
    fill = _lowest(input.dtype) if mode == "max" else 0
    x = mx.pad(input, [(0, 0)] * lead + list(p), constant_values=fill)
    windows = _windows(x, k, s, d, lead)  # (*lead, *out, K)
    if mode == "max":
        return mx.max(windows, axis=-1)
    return mx.mean(windows, axis=-1)


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------
def _channel_shape(input: _Array) -> tuple[int, ...]:
    return (1, -1) + (1,) * (input.ndim - 2)


def _affine(out: _Array, weight: _Array | None, bias: _Array | None,
            shape: tuple[int, ...]) -> _Array:
    if weight is not None:
        out = out * mx.reshape(weight, shape)
    if bias is not None:
        out = out + mx.reshape(bias, shape)
    return out


def _normalise(input: _Array, mean: _Array, var: _Array, eps: float) -> _Array:
    return (input - mean) * mx.rsqrt(var + eps)


@kernel("batch_norm")
def batch_norm(input: _Array, weight: _Array | None, bias: _Array | None,
               running_mean: _Array | None, running_var: _Array | None, momentum: float = 0.1,
               eps: float = 1e-5) -> tuple[_Array, _Array | None, _Array | None]:
    """Training batch norm over channel axis 1; returns ``(out, new_mean, new_var)``."""
    axes = tuple(a for a in range(input.ndim) if a != 1)
    mean_ = mx.mean(input, axis=axes, keepdims=True)
    var_ = mx.mean(mx.square(input - mean_), axis=axes, keepdims=True)
    shape = _channel_shape(input)
    out = _affine(_normalise(input, mean_, var_, eps), weight, bias, shape)
    count = input.size // input.shape[1]
    if count < 2:
        raise ValueError("batch norm in training needs more than one value per channel, got "
                         f"an input of shape {tuple(input.shape)}")
    new_mean = new_var = None
    if running_mean is not None:
        batch_mean = mx.stop_gradient(mx.reshape(mean_, (-1,)))
        new_mean = (1 - momentum) * running_mean + momentum * batch_mean
    if running_var is not None:
        unbiased = mx.stop_gradient(mx.reshape(var_, (-1,))) * (count / (count - 1))
        new_var = (1 - momentum) * running_var + momentum * unbiased
    return out, new_mean, new_var


@kernel("batch_norm", mode="inference")
def batch_norm_inference(input: _Array, weight: _Array | None, bias: _Array | None,
                         running_mean: _Array | None, running_var: _Array | None,
                         momentum: float = 0.1, eps: float = 1e-5
                         ) -> tuple[_Array, _Array | None, _Array | None]:
    """Batch norm with the running statistics (batch ones where absent); state unchanged."""
    axes = tuple(a for a in range(input.ndim) if a != 1)
    shape = _channel_shape(input)
    if running_mean is not None:
        mean_ = mx.reshape(running_mean, shape)
    else:
        mean_ = mx.mean(input, axis=axes, keepdims=True)
    if running_var is not None:
        var_ = mx.reshape(running_var, shape)
    else:
        var_ = mx.mean(mx.square(input - mx.mean(input, axis=axes, keepdims=True)), axis=axes,
                       keepdims=True)
    out = _affine(_normalise(input, mean_, var_, eps), weight, bias, shape)
    return out, running_mean, running_var


# ----------------------------------------------------------------------------------------------
# Embedding, attention, dropout
# ----------------------------------------------------------------------------------------------
@kernel("embedding")
def embedding(input: _Array, weight: _Array) -> _Array:
    """Rows of ``weight`` selected by the integer ``input``: ``weight[input]``."""
    return mx.take(weight, input, axis=0)


@kernel("scaled_dot_product")
def scaled_dot_product(query: _Array, key: _Array, value: _Array, attn_mask: _Array | None,
                       is_causal: bool = False, scale: float | None = None) -> _Array:
    """Attention as PyTorch's ``F.scaled_dot_product_attention``.

    A boolean ``attn_mask`` marks positions that may be attended (True); a float mask is added
    to the scores. ``is_causal`` masks the strict upper triangle; ``scale=None`` is
    ``1 / sqrt(E)``.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    scores = mx.matmul(query, mx.swapaxes(key, -1, -2)) * scale
    neg_inf = mx.array(-math.inf, scores.dtype)
    if is_causal:
        n_q, n_k = query.shape[-2], key.shape[-2]
        allowed = mx.tril(mx.ones((n_q, n_k), dtype=mx.bool_))
        scores = mx.where(allowed, scores, neg_inf)
    if attn_mask is not None:
        if attn_mask.dtype == mx.bool_:
            scores = mx.where(attn_mask, scores, neg_inf)
        else:
            scores = scores + attn_mask
    return mx.matmul(softmax(scores, -1), value)


@kernel("dropout")
def dropout(input: _Array, p: float = 0.5, rng: _Array | None = None) -> _Array:
    """Zero each element with probability ``p``; scale survivors by ``1 / (1 - p)``."""
    if p == 0:
        return input
    keep = mx.random.bernoulli(1 - p, input.shape, key=rng)
    return mx.where(keep, input * (1 / (1 - p)), mx.zeros_like(input))


@kernel("dropout", mode="inference")
def dropout_inference(input: _Array, p: float = 0.5) -> _Array:
    """Dropout at inference: the identity."""
    return input


@kernel("one_hot")
def one_hot(input: mx.array, num_classes: int) -> mx.array:
    """Boolean one-hot encoding along a new last axis."""
    return mx.expand_dims(input, -1) == mx.arange(num_classes)


