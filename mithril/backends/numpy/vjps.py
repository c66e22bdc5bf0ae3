"""Hand-written vector-Jacobian products of the NumPy kernels.

``<op>_vjp(grad, output, *inputs, cache=None)`` receives the gradient of the kernel's output,
the output itself and the kernel's inputs (catalogue order), and returns a tuple with one entry
per input: the gradient with the input's shape and dtype, or ``None`` for scalars, absent
optional tensors, Python numbers, non-float arrays and non-differentiable inputs. Gradients of
broadcast inputs are summed back to the input's shape. ``cache`` is the second result of the
kernel's ``<op>_fwd`` training variant when there is one (otherwise ``None``: the VJP
recomputes what it needs). One-expression VJPs are table entries whose parameters are
``g`` (the output's gradient), ``y`` (the output) and the inputs (``x``; ``a``, ``b`` for binary
ops).

Returned gradients are writeable but may be views of ``grad`` (``reshape_vjp``) or the very
same object (``add_vjp`` gives ``grad`` to both sides): accumulate with ``a = a + b``, and copy
before modifying one in place.

Ties: ``max``/``min`` reductions split the gradient evenly among tied extremes (as PyTorch's
``amax``/``amin``); ``maximum``/``minimum`` give half to each side of a tie (as PyTorch);
max pooling gives it to the first maximum of the window (as PyTorch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..kernel_args import monomial_indices, pad_pairs
from . import kernels as _k
from . import nn as _nn
from .kernels import registry

vjp = registry.vjp
Grad = np.ndarray | None


def _wants(x: Any) -> bool:
    """Does ``x`` take a gradient (a float array or NumPy float scalar — full reductions
    return those — not a Python number or an int array)?"""
    return isinstance(x, np.ndarray | np.generic) and x.dtype.kind in "fc"


def _grad(x: Any, g: Any) -> Grad:
    """``g`` summed down to ``x``'s (broadcast) shape in ``x``'s dtype; None if ``x`` takes none."""
    if not _wants(x) or g is None:
        return None
    g = np.asarray(g)
    if g.shape != x.shape:
        extra = g.ndim - x.ndim
        if extra > 0:
            g = np.sum(g, axis=tuple(range(extra)))
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1 and g.shape[i] != 1)
        if axes:
            g = np.sum(g, axis=axes, keepdims=True)
        if g.shape != x.shape:  # a gradient of fewer dims than the input: not reduced above
            g = np.broadcast_to(g, x.shape).copy()
    return g.astype(x.dtype, copy=False)


def _expanded(g: np.ndarray, x: np.ndarray, axis: Any, keepdim: bool) -> tuple[np.ndarray,
                                                                             tuple[int, ...]]:
    """A reduction's output gradient with the reduced axes restored, and those axes."""
    if axis is None:
        axis = range(x.ndim)
    items = (axis,) if isinstance(axis, int | np.integer) else axis
    axes = tuple(sorted(int(a) % x.ndim if x.ndim else 0 for a in items))
    g = np.asarray(g)
    return (g if keepdim or not axes else np.expand_dims(g, axes)), axes


def _filled(shape: tuple[int, ...], g: np.ndarray) -> np.ndarray:
    """A new (writeable) array of ``shape`` holding ``g`` broadcast."""
    out = np.empty(shape, np.result_type(g))
    out[...] = g
    return out


def _split_ties(grad: np.ndarray, left: Any, right: Any,
                left_loses: np.ndarray, right_loses: np.ndarray) -> tuple[Grad, Grad]:
    """``grad`` to the winner of each element, half to each side of a tie (PyTorch)."""
    tie = np.equal(left, right)
    half = grad * 0.5
    dl = _grad(left, np.where(tie, half, np.where(left_loses, 0, grad))) if _wants(left) else None
    dr = (_grad(right, np.where(tie, half, np.where(right_loses, 0, grad)))
          if _wants(right) else None)
    return dl, dr


def _mT(x: np.ndarray) -> np.ndarray:
    """Swap the last two axes (matrix transpose of a batch)."""
    return np.swapaxes(x, -1, -2)


def _embedding_grad(g: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    dw = np.zeros(w.shape, w.dtype)
    np.add.at(dw, np.ravel(x), np.reshape(g, (-1, *w.shape[1:])))
    return dw


def _max_vjp(g: np.ndarray, y: np.ndarray, x: np.ndarray, axis: Any = None,
             keepdim: bool = False, cache: Any = None) -> tuple[Grad, None, None]:
    """Ties share the gradient evenly (as PyTorch's ``amax``)."""
    g, axes = _expanded(g, x, axis, keepdim)
    out, _ = _expanded(y, x, axis, keepdim)
    hit = x == out
    count = np.sum(hit, axis=axes, keepdims=True).astype(x.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _grad(x, np.where(hit, g / count, 0)), None, None


registry.vjps_from({
    "add": lambda g, y, a, b, cache=None: (_grad(a, g), _grad(b, g)),
    "subtract": lambda g, y, a, b, cache=None: (
        _grad(a, g), _grad(b, np.negative(g)) if _wants(b) else None),
    "multiply": lambda g, y, a, b, cache=None: (
        _grad(a, g * b) if _wants(a) else None, _grad(b, g * a) if _wants(b) else None),
    "divide": lambda g, y, a, b, cache=None: (
        _grad(a, g / b) if _wants(a) else None, _grad(b, -g * y / b) if _wants(b) else None),
    "minimum": lambda g, y, a, b, cache=None: _split_ties(g, a, b, np.greater(a, b),
                                                          np.less(a, b)),
    "maximum": lambda g, y, a, b, cache=None: _split_ties(g, a, b, np.less(a, b),
                                                          np.greater(a, b)),
    "negate": lambda g, y, x, cache=None: (_grad(x, np.negative(g)),),
    "absolute": lambda g, y, x, cache=None: (_grad(x, g * np.sign(x)),),  # 0 at 0
    "exp": lambda g, y, x, cache=None: (_grad(x, g * y),),
    "log": lambda g, y, x, cache=None: (_grad(x, g / x),),
    "sqrt": lambda g, y, x, cache=None: (_grad(x, g / (2 * y)),),
    "sin": lambda g, y, x, cache=None: (_grad(x, g * np.cos(x)),),
    "cos": lambda g, y, x, cache=None: (_grad(x, -g * np.sin(x)),),
    "relu": lambda g, y, x, cache=None: (_grad(x, g * (y > 0)),),  # 0 at 0
    "sigmoid": lambda g, y, x, cache=None: (_grad(x, g * y * (1 - y)),),
    "tanh": lambda g, y, x, cache=None: (_grad(x, g * (1 - np.square(y))),),
    # sigmoid(x), 1 above the threshold 20: one kernel instead of the decomposition's tape
    "softplus": lambda g, y, x, cache=None: (
        _grad(x, g * np.where(x > 20, 1.0, _k.sigmoid(x))),),
    "nan_to_num": lambda g, y, x, nan=0.0, posinf=None, neginf=None, cache=None: (
        _grad(x, np.where(np.isfinite(x), g, 0)), None, None, None),
    "softmax": lambda g, y, x, axis=-1, cache=None: (
        _grad(x, y * (g - np.sum(g * y, axis=axis, keepdims=True))), None),
    "log_softmax": lambda g, y, x, axis=-1, cache=None: (
        _grad(x, g - np.exp(y) * np.sum(g, axis=axis, keepdims=True)), None),
    "cast": lambda g, y, x, dtype=None, cache=None: (_grad(x, g), None),
    "where": lambda g, y, c, a, b, cache=None: (
        None, _grad(a, np.where(c, g, 0)) if _wants(a) else None,
        _grad(b, np.where(c, 0, g)) if _wants(b) else None),
    "sum": lambda g, y, x, axis=None, keepdim=False, cache=None: (
        _grad(x, _filled(x.shape, _expanded(g, x, axis, keepdim)[0])), None, None),
    "max": _max_vjp,
    "reshape": lambda g, y, x, shape=None, cache=None: (_grad(x, np.reshape(g, x.shape)), None),
    "broadcast_to": lambda g, y, x, shape=None, cache=None: (_grad(x, g), None),
    "pad": lambda g, y, x, pad_width=None, cache=None: (_grad(x, _nn._crop_last(
        np.asarray(g), pad_pairs(pad_width, x.ndim), x.shape)), None),
    # repeated indices add up
    "embedding": lambda g, y, x, w, cache=None: (None, _embedding_grad(g, x, w)),
})


@vjp("eigvalsh")
def eigvalsh_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray,
                 cache: Any = None) -> tuple[Grad]:
    """``V diag(Ḡ) V^T`` (``eigvalsh_fwd``'s eigenvectors as ``cache`` skip recomputing ``V``)."""
    vectors = cache if cache is not None else np.linalg.eigh(input)[1]
    g = np.asarray(grad)
    return (_grad(input, np.matmul(vectors * g[..., None, :], _mT(vectors))),)


@vjp("power")
def power_vjp(grad: np.ndarray, output: Any, left: Any, right: Any,
              cache: Any = None) -> tuple[Grad, Grad]:
    """PyTorch's conventions at 0: exponent 0 and base 0."""
    dl = dr = None
    with np.errstate(divide="ignore", invalid="ignore"):
        if _wants(left):
            d = grad * right * np.power(left, np.subtract(right, 1))
            dl = _grad(left, np.where(np.equal(right, 0), 0, d))
        if _wants(right):
            d = grad * output * np.log(left)
            zero = np.logical_and(np.equal(left, 0), np.greater_equal(right, 0))
            dr = _grad(right, np.where(zero, 0, d))
    return dl, dr


@vjp("gelu")
def gelu_vjp(grad: np.ndarray, output: Any, input: np.ndarray, approximate: bool = False,
             cache: Any = None) -> tuple[Grad, None]:
    x, k, c = input, _k._GELU_K, _k._GELU_C
    if approximate:
        t = np.tanh(k * (x + c * x * x * x))
        d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * c * x * x)
    else:
        cdf = 0.5 * _k._erfc(x * -math.sqrt(0.5))
        d = cdf + x * np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
    return _grad(input, grad * d), None


@vjp("matmul")
def matmul_vjp(grad: np.ndarray, output: Any, left: np.ndarray, right: np.ndarray,
               cache: Any = None) -> tuple[Grad, Grad]:
    """NumPy's 1-D and batch-broadcasting rules."""
    lm = left[None, :] if left.ndim == 1 else left
    rm = right[:, None] if right.ndim == 1 else right
    g = np.asarray(grad)
    if right.ndim == 1:
        g = np.expand_dims(g, -1)
    if left.ndim == 1:
        g = np.expand_dims(g, -2)
    dl = dr = None
    if _wants(left):
        dl = _grad(lm, np.matmul(g, _mT(rm))).reshape(left.shape)
    if _wants(right):
        if rm.ndim == 2 and lm.ndim > 2:  # one GEMM over the flattened batch
            d = np.matmul(lm.reshape(-1, lm.shape[-1]).T, g.reshape(-1, g.shape[-1]))
        else:
            d = np.matmul(_mT(lm), g)
        dr = _grad(rm, d).reshape(right.shape)
    return dl, dr


@vjp("linear")
def linear_vjp(grad: np.ndarray, output: Any, input: np.ndarray, weight: np.ndarray,
               bias: np.ndarray | None = None, cache: Any = None) -> tuple[Grad, Grad, Grad]:
    g2 = np.reshape(grad, (-1, weight.shape[0]))
    x2 = np.reshape(input, (-1, weight.shape[1]))
    dx = _grad(input, np.matmul(g2, weight).reshape(input.shape)) if _wants(input) else None
    dw = _grad(weight, np.matmul(g2.T, x2))
    db = _grad(bias, np.sum(g2, axis=0)) if _wants(bias) else None
    return dx, dw, db


@vjp("prod")
def prod_vjp(grad: np.ndarray, output: Any, input: np.ndarray, axis: Any = None,
             keepdim: bool = False, cache: Any = None) -> tuple[Grad, None, None]:
    """Exact with zeros: each element gets the product of the others in its group."""
    g, axes = _expanded(grad, input, axis, keepdim)
    if not axes:
        return _grad(input, _filled(input.shape, g)), None, None
    dest = tuple(range(input.ndim - len(axes), input.ndim))
    moved = np.moveaxis(input, axes, dest)
    keep = moved.shape[:moved.ndim - len(axes)]
    flat = moved.reshape(*keep, -1)
    ones = np.ones((*keep, 1), input.dtype)
    before = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    after = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    others = np.moveaxis((before * after).reshape(moved.shape), dest, axes)
    return _grad(input, g * others), None, None


@vjp("transpose")
def transpose_vjp(grad: np.ndarray, output: Any, input: np.ndarray, axes: Any = None,
                  cache: Any = None) -> tuple[Grad, None]:
    if axes is None:
        return _grad(input, np.transpose(grad)), None
    inverse = np.argsort([a % input.ndim for a in axes])
    return _grad(input, np.transpose(grad, tuple(int(i) for i in inverse))), None


@vjp("concat")
def concat_vjp(grad: np.ndarray, output: Any, *inputs: Any, axis: Any = _k._NO_AXIS,
               cache: Any = None) -> tuple[Grad, ...]:
    """Slices of ``grad``; one entry per positional input (``None`` for a trailing positional
    ``axis``)."""
    tensors, ax = _k._split_concat_args(inputs, axis)
    g = np.asarray(grad)
    if ax is None:
        g, ax = g.reshape(-1), 0
        sizes = [np.size(t) for t in tensors]
    else:
        sizes = [np.shape(t)[ax] for t in tensors]
    pieces = np.split(g, np.cumsum(sizes)[:-1], axis=ax)
    return (*(_grad(t, np.reshape(piece, np.shape(t)))
              for t, piece in zip(tensors, pieces, strict=True)),
            *[None] * (len(inputs) - len(tensors)))


@vjp("indexer")
def indexer_vjp(grad: np.ndarray, output: Any, input: Any, index: Any,
                cache: Any = None) -> tuple[Grad, None]:
    """``grad`` scattered into zeros (added up for repeated advanced indices)."""
    if not _wants(input):
        return None, None
    dx = np.zeros(input.shape, input.dtype)
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, list | np.ndarray) for i in items):
        np.add.at(dx, index, grad)
    else:
        dx[index] = grad
    return dx, None


# ---- convolution and pooling ---------------------------------------------------------------------
def _col2im(dcols: np.ndarray, plan: Any) -> np.ndarray:
    """Sum an im2col-shaped gradient back into the (cropped) image: one add per offset."""
    n, c, nd = plan.n, plan.c, len(plan.kernel)
    per_offset = dcols.reshape(c, math.prod(plan.kernel), n, *plan.rows)
    if plan.flat:  # each offset adds into one contiguous run of the flat image
        wp = plan.padded[1]
        length = plan.out[0] * wp
        flat = np.zeros((n, c, math.prod(plan.padded) + plan.slack), dcols.dtype)
        (dh, dw), kw = plan.dilation, plan.kernel[1]
        for k in range(per_offset.shape[1]):
            start = (k // kw) * dh * wp + (k % kw) * dw
            part = per_offset[:, k].reshape(c, n, length)
            flat[:, :, start:start + length] += part.swapaxes(0, 1)
        image = _nn._flat_strided(flat, plan)
    else:
        image = np.zeros((n, c, *plan.padded), dcols.dtype)
        slices = _nn._offset_slices(plan.kernel, plan.stride, plan.dilation, plan.out)
        for k, sl in enumerate(slices):
            image[(slice(None), slice(None), *sl)] += per_offset[:, k].swapaxes(0, 1)
    return _nn._crop_last(image, plan.pads, plan.sizes[-nd:])


@vjp("conv2d")
def conv2d_vjp(grad: np.ndarray, output: Any, input: np.ndarray, weight: np.ndarray,
               bias: np.ndarray | None = None, stride: Any = 1, padding: Any = 0,
               dilation: Any = 1, groups: int = 1, cache: Any = None) -> tuple[Grad, ...]:
    """Through the im2col matrix (``conv2d_fwd``'s cache): single GEMMs."""
    nd = weight.ndim - 2
    unbatched = input.ndim == nd + 1
    x = input[None] if unbatched else input
    g = np.asarray(grad)[None] if unbatched else np.asarray(grad)
    plan = _nn._conv_plan(x, weight, stride, padding, dilation, groups)
    cols = _nn._im2col(x, plan) if cache is None else cache
    if plan.flat:  # zero gradient for the dropped columns of each flat row
        g_rows = np.zeros((plan.o, plan.n, *plan.rows), g.dtype)
        g_rows[..., :plan.out[1]] = np.moveaxis(g, 1, 0)
    else:
        g_rows = np.ascontiguousarray(np.moveaxis(g, 1, 0))
    g_rows = g_rows.reshape(groups, plan.o // groups, -1)
    dw = np.matmul(g_rows, _mT(cols)).reshape(weight.shape)
    db = np.einsum("ncl->c", g.reshape(plan.n, plan.o, -1)) if _wants(bias) else None
    dx = None
    if _wants(input):
        w3 = weight.reshape(groups, plan.o // groups, -1)
        dx = _col2im(np.matmul(_mT(w3), g_rows), plan)
        dx = _grad(input, dx[0] if unbatched else dx)
    return dx, _grad(weight, dw), _grad(bias, db), None, None, None, None


def _unpool(g: np.ndarray, input: np.ndarray, geometry: tuple[tuple[int, ...], ...],
            masks: list[np.ndarray] | None) -> np.ndarray:
    """Each window's gradient spread back over the input (with ``masks``, max pooling: only
    to the offset whose mask holds it), the padding cropped off. Non-overlapping windows are
    written once (into an uninitialised array when they tile the input), others accumulated."""
    k, s, p, d, out = geometry
    nd = len(k)
    spatial = input.shape[input.ndim - nd:]
    padded = (*input.shape[:input.ndim - nd],
              *(n + a + b for n, (a, b) in zip(spatial, p, strict=True)))
    disjoint = all(dd * (kk - 1) + 1 <= ss for kk, ss, dd in zip(k, s, d, strict=True))
    tiles = k == s and all(dd == 1 for dd in d) and all(
        o * ss == n for o, ss, n in zip(out, s, padded[len(padded) - nd:], strict=True))
    dxp = np.empty(padded, g.dtype) if tiles else np.zeros(padded, g.dtype)
    for i, view in enumerate(_nn._pool_views(dxp, geometry)):
        if disjoint:
            if masks is None:
                view[...] = g
            else:
                np.multiply(g, masks[i], out=view)
        else:
            view += g if masks is None else g * masks[i]
    return _nn._crop_last(dxp, p, spatial)


@vjp("max_pool2d")
def max_pool2d_vjp(grad: np.ndarray, output: Any, input: np.ndarray, kernel_size: Any,
                   stride: Any = None, padding: Any = 0, dilation: Any = 1,
                   cache: Any = None) -> tuple[Grad, ...]:
    """Each window's gradient to its first maximum (as PyTorch; cache: the argmax masks)."""
    if not _wants(input):
        return None, None, None, None, None
    masks = cache
    if masks is None:
        masks = _nn.max_pool2d_fwd(input, kernel_size, stride, padding, dilation)[1]
    geometry = _nn._pool_geometry(input, 2, kernel_size, stride, padding, dilation)
    g = np.asarray(grad, dtype=input.dtype)
    return _grad(input, _unpool(g, input, geometry, masks)), None, None, None, None


@vjp("avg_pool2d")
def avg_pool2d_vjp(grad: np.ndarray, output: Any, input: np.ndarray, kernel_size: Any,
                   stride: Any = None, padding: Any = 0,
                   cache: Any = None) -> tuple[Grad, None, None, None]:
    if not _wants(input):
        return None, None, None, None
    geometry = _nn._pool_geometry(input, 2, kernel_size, stride, padding, 1)
    g = np.asarray(grad) / math.prod(geometry[0])
    return _grad(input, _unpool(g, input, geometry, None)), None, None, None


# ---- batch norm, attention, dropout --------------------------------------------------------------
@vjp("batch_norm")
def batch_norm_vjp(grad: tuple[Any, ...], output: Any, input: np.ndarray,
                   weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                   running_mean: Any = None, running_var: Any = None, momentum: float = 0.1,
                   eps: float = 1e-5, cache: Any = None) -> tuple[Grad, ...]:
    """``grad`` is ``(g_output, g_running_mean, g_running_var)``; the statistics take none."""
    g = grad[0] if isinstance(grad, tuple | list) else grad
    if g is None:
        g = np.zeros(input.shape, input.dtype)
    if cache is None:
        cache = _nn.batch_norm_fwd(input, None, None, None, None, momentum, eps)[1]
    xhat, inv_std = cache
    n = input.size // input.shape[1]
    shape = _nn._channel_shape(input)
    g3, x3 = g.reshape(*g.shape[:2], -1), xhat.reshape(*g.shape[:2], -1)
    db, dw = np.einsum("ncl->c", g3), np.einsum("ncl,ncl->c", g3, x3)  # per channel
    scale = inv_std if weight is None else weight * inv_std  # (C,)
    # dx = scale * (g - db / n - xhat * dw / n), with per-channel coefficients folded first
    dx = g * scale.reshape(shape)
    dx -= xhat * (scale * dw / n).reshape(shape)
    dx -= (scale * db / n).reshape(shape)
    return (_grad(input, dx), _grad(weight, dw), _grad(bias, db), None, None, None, None)


@vjp("scaled_dot_product")
def scaled_dot_product_vjp(grad: np.ndarray, output: Any, query: np.ndarray, key: np.ndarray,
                           value: np.ndarray, attn_mask: Any = None, is_causal: bool = False,
                           scale: float | None = None, cache: Any = None) -> tuple[Grad, ...]:
    probs = cache
    if probs is None:
        probs = _nn.scaled_dot_product_fwd(query, key, value, attn_mask, is_causal, scale)[1]
    s = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    d_value = np.matmul(_mT(probs), grad)
    d_probs = np.matmul(grad, _mT(value))
    d_scores = probs * (d_probs - np.sum(d_probs * probs, axis=-1, keepdims=True))
    d_query = np.matmul(d_scores, key) * s
    d_key = np.matmul(_mT(d_scores), query) * s
    return (_grad(query, d_query), _grad(key, d_key), _grad(value, d_value), None, None, None)


@vjp("dropout")
def dropout_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray, p: float = 0.5,
                *rng: Any, cache: Any = None) -> tuple[Grad, ...]:
    """``grad`` times the scaled keep mask, ``dropout_fwd``'s cache; without it the mask is
    read off ``output`` (``output != 0``), which drops the gradient where a kept input was
    exactly zero. One entry per positional input (a trailing ``rng`` gets ``None`` too)."""
    mask = cache
    if mask is None:
        mask = (np.asarray(output) != 0) * (1 / (1 - p)) if p else 1
    return (_grad(input, grad * mask), None, *(None,) * len(rng))


# ---- linear algebra, polynomial features ---------------------------------------------------------
@vjp("cholesky")
def cholesky_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray,
                 cache: Any = None) -> tuple[Grad]:
    """``L^-T Φ(L^T Ḡ) L^-1`` with Φ(X) the symmetric matrix whose lower triangle is
    ``tril(X)`` with the diagonal halved (PyTorch's convention: a symmetric gradient, as for a
    perturbation of a symmetric ``A``)."""
    low = output
    p = np.tril(np.matmul(_mT(low), grad))
    p = 0.5 * (p + _mT(np.tril(p, -1)))
    x = np.linalg.solve(_mT(low), p)  # L^-T P
    s = _mT(np.linalg.solve(_mT(low), _mT(x)))  # (L^-T (L^-T P)^T)^T = L^-T P L^-1
    return (_grad(input, s),)


@vjp("polynomial_features")
def polynomial_features_vjp(grad: np.ndarray, output: Any, input: np.ndarray, degree: int,
                            cache: Any = None) -> tuple[Grad, None]:
    """Each monomial passes ``grad`` times the product of its other factors to each factor."""
    n = input.shape[-1]
    idx = monomial_indices(n, degree)
    xa = _k._with_ones(input)
    cols = [xa[..., idx[:, k]] for k in range(degree)]
    g = np.asarray(grad)
    total = np.zeros(xa.shape, np.result_type(g, xa))
    positions = np.arange(n + 1)
    for k in range(degree):
        part = g
        for j in range(degree):
            if j != k:
                part = part * cols[j]
        onehot = (idx[:, k, None] == positions).astype(total.dtype)  # (n_out, n + 1)
        total += np.matmul(part, onehot)
    return _grad(input, total[..., :n]), None
