"""Hand-written vector-Jacobian products of the NumPy kernels.

``<op>_vjp(grad, output, *inputs, cache=None)`` receives the gradient of the kernel's output,
the output itself and the kernel's inputs (catalogue order), and returns a tuple with one entry
per input: the gradient with the input's shape and dtype, or ``None`` for scalars, absent
optional tensors, Python numbers, non-float arrays and non-differentiable inputs. Gradients of
broadcast inputs are summed back to the input's shape. ``cache`` is the second result of the
kernel's ``<op>_fwd`` training variant when there is one (otherwise ``None``: the VJP
recomputes what it needs).

Returned gradients are writeable but may be views of ``grad`` (``reshape_vjp``) or the very
same object (``add_vjp`` gives ``grad`` to both sides): accumulate with ``a = a + b``, and copy
before modifying one in place.

Ties: ``max``/``min`` reductions split the gradient evenly among tied extremes (as PyTorch's
``amax``/``amin``); ``maximum``/``minimum`` give half to each side of a tie (as PyTorch);
max pooling gives it to the first maximum of the window (as PyTorch).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..monomials import monomial_indices
from . import kernels as _k
from . import nn as _nn
from .kernels import registry

vjp = registry.vjp

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    Grad = np.ndarray | None


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
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
    axes = _k._axes(axis, x.ndim)
    return _k._expand_reduced(np.asarray(g), axes, keepdim), axes


def _filled(shape: tuple[int, ...], g: np.ndarray) -> np.ndarray:
    """A new (writeable) array of ``shape`` holding ``g`` broadcast."""
    out = np.empty(shape, np.result_type(g))
    out[...] = g
    return out


def _count(x: np.ndarray, axes: tuple[int, ...]) -> int:
    """How many elements a reduction over ``axes`` combines."""
    return math.prod(x.shape[a] for a in axes)


# ----------------------------------------------------------------------------------------------
# Binary elementwise
# ----------------------------------------------------------------------------------------------
@vjp("add")
def add_vjp(grad: np.ndarray, output: Any, left: Any, right: Any,
            cache: Any = None) -> tuple[Grad, Grad]:
    """Gradients of ``left + right``."""
    return _grad(left, grad), _grad(right, grad)


@vjp("subtract")
def subtract_vjp(grad: np.ndarray, output: Any, left: Any, right: Any,
                 cache: Any = None) -> tuple[Grad, Grad]:
    """Gradients of ``left - right``."""
    return _grad(left, grad), (_grad(right, np.negative(grad)) if _wants(right) else None)


@vjp("multiply")
def multiply_vjp(grad: np.ndarray, output: Any, left: Any, right: Any,
                 cache: Any = None) -> tuple[Grad, Grad]:
    """Gradients of ``left * right``."""
    dl = _grad(left, grad * right) if _wants(left) else None
    dr = _grad(right, grad * left) if _wants(right) else None
    return dl, dr


@vjp("divide")
def divide_vjp(grad: np.ndarray, output: Any, left: Any, right: Any,
               cache: Any = None) -> tuple[Grad, Grad]:
    """Gradients of ``left / right``."""
    dl = _grad(left, grad / right) if _wants(left) else None
    dr = _grad(right, -grad * output / right) if _wants(right) else None
    return dl, dr


@vjp("power")
def power_vjp(grad: np.ndarray, output: Any, left: Any, right: Any,
              cache: Any = None) -> tuple[Grad, Grad]:
    """Gradients of ``left ** right`` (PyTorch's conventions at 0: exponent 0 and base 0)."""
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


def _split_ties(grad: np.ndarray, left: Any, right: Any,
                left_loses: np.ndarray, right_loses: np.ndarray) -> tuple[Grad, Grad]:
    """``grad`` to the winner of each element, half to each side of a tie (PyTorch)."""
    tie = np.equal(left, right)
    half = grad * 0.5
    dl = _grad(left, np.where(tie, half, np.where(left_loses, 0, grad))) if _wants(left) else None
    dr = (_grad(right, np.where(tie, half, np.where(right_loses, 0, grad)))
          if _wants(right) else None)
    return dl, dr


@vjp("minimum")
def minimum_vjp(grad: np.ndarray, output: Any, left: Any, right: Any,
                cache: Any = None) -> tuple[Grad, Grad]:
    """Gradients of ``minimum(left, right)``; ties split evenly."""
    return _split_ties(grad, left, right, np.greater(left, right), np.less(left, right))


@vjp("maximum")
def maximum_vjp(grad: np.ndarray, output: Any, left: Any, right: Any,
                cache: Any = None) -> tuple[Grad, Grad]:
    """Gradients of ``maximum(left, right)``; ties split evenly."""
    return _split_ties(grad, left, right, np.less(left, right), np.greater(left, right))


# ----------------------------------------------------------------------------------------------
# Unary elementwise
# ----------------------------------------------------------------------------------------------
@vjp("negate")
def negate_vjp(grad: np.ndarray, output: Any, input: np.ndarray,
               cache: Any = None) -> tuple[Grad]:
    """Gradient of ``-x``."""
    return (_grad(input, np.negative(grad)),)


@vjp("absolute")
def absolute_vjp(grad: np.ndarray, output: Any, input: np.ndarray,
                 cache: Any = None) -> tuple[Grad]:
    """Gradient of ``|x|`` (0 at 0)."""
    return (_grad(input, grad * np.sign(input)),)


@vjp("exp")
def exp_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray,
            cache: Any = None) -> tuple[Grad]:
    """Gradient of ``exp(x)``."""
    return (_grad(input, grad * output),)


@vjp("log")
def log_vjp(grad: np.ndarray, output: Any, input: np.ndarray,
            cache: Any = None) -> tuple[Grad]:
    """Gradient of ``log(x)``."""
    return (_grad(input, grad / input),)


@vjp("sqrt")
def sqrt_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray,
             cache: Any = None) -> tuple[Grad]:
    """Gradient of ``sqrt(x)``."""
    return (_grad(input, grad / (2 * output)),)


@vjp("sin")
def sin_vjp(grad: np.ndarray, output: Any, input: np.ndarray,
            cache: Any = None) -> tuple[Grad]:
    """Gradient of ``sin(x)``."""
    return (_grad(input, grad * np.cos(input)),)


@vjp("cos")
def cos_vjp(grad: np.ndarray, output: Any, input: np.ndarray,
            cache: Any = None) -> tuple[Grad]:
    """Gradient of ``cos(x)``."""
    return (_grad(input, -grad * np.sin(input)),)


@vjp("relu")
def relu_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray,
             cache: Any = None) -> tuple[Grad]:
    """Gradient of ``relu(x)`` (0 at 0)."""
    return (_grad(input, grad * (output > 0)),)


@vjp("sigmoid")
def sigmoid_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray,
                cache: Any = None) -> tuple[Grad]:
    """Gradient of ``sigmoid(x)``."""
    return (_grad(input, grad * output * (1 - output)),)


@vjp("tanh")
def tanh_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray,
             cache: Any = None) -> tuple[Grad]:
    """Gradient of ``tanh(x)``."""
    return (_grad(input, grad * (1 - np.square(output))),)


@vjp("softplus")
def softplus_vjp(grad: np.ndarray, output: Any, input: np.ndarray,
                 cache: Any = None) -> tuple[Grad]:
    """Gradient of ``softplus(x)``: ``sigmoid(x)``, 1 above the threshold 20 (one kernel
    instead of the decomposition's tape)."""
    return (_grad(input, grad * np.where(input > 20, 1.0, _k.sigmoid(input))),)


@vjp("gelu")
def gelu_vjp(grad: np.ndarray, output: Any, input: np.ndarray, approximate: bool = False,
             cache: Any = None) -> tuple[Grad, None]:
    """Gradient of GELU (exact or tanh form)."""
    x = input
    if approximate:
        t = np.tanh(_k._GELU_K * (x + _k._GELU_C * x * x * x))
        d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _k._GELU_K * (1 + 3 * _k._GELU_C * x * x)
    else:
        cdf = 0.5 * _k._erfc(x * -math.sqrt(0.5))
        d = cdf + x * np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
    return _grad(input, grad * d), None


@vjp("nan_to_num")
def nan_to_num_vjp(grad: np.ndarray, output: Any, input: np.ndarray, nan: float = 0.0,
                   posinf: float | None = None, neginf: float | None = None,
                   cache: Any = None) -> tuple[Grad, None, None, None]:
    """Gradient of ``nan_to_num``: zero where ``x`` was replaced."""
    return _grad(input, np.where(np.isfinite(input), grad, 0)), None, None, None


@vjp("softmax")
def softmax_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray, axis: int = -1,
                cache: Any = None) -> tuple[Grad, None]:
    """Gradient of ``softmax``: ``y * (g - sum(g * y))``."""
    inner = np.sum(grad * output, axis=axis, keepdims=True)
    return _grad(input, output * (grad - inner)), None


@vjp("log_softmax")
def log_softmax_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray, axis: int = -1,
                    cache: Any = None) -> tuple[Grad, None]:
    """Gradient of ``log_softmax``: ``g - softmax(x) * sum(g)``."""
    total = np.sum(grad, axis=axis, keepdims=True)
    return _grad(input, grad - np.exp(output) * total), None


@vjp("cast")
def cast_vjp(grad: np.ndarray, output: Any, input: Any, dtype: Any = None,
             cache: Any = None) -> tuple[Grad, None]:
    """Gradient of ``cast``: ``grad`` back in the input's dtype (None for non-float inputs)."""
    return _grad(input, grad), None


@vjp("where")
def where_vjp(grad: np.ndarray, output: Any, condition: np.ndarray, input1: Any, input2: Any,
              cache: Any = None) -> tuple[None, Grad, Grad]:
    """Gradients of ``where``: ``grad`` to the branch each element came from."""
    d1 = _grad(input1, np.where(condition, grad, 0)) if _wants(input1) else None
    d2 = _grad(input2, np.where(condition, 0, grad)) if _wants(input2) else None
    return None, d1, d2


# ----------------------------------------------------------------------------------------------
# Linear algebra
# ----------------------------------------------------------------------------------------------
@vjp("matmul")
def matmul_vjp(grad: np.ndarray, output: Any, left: np.ndarray, right: np.ndarray,
               cache: Any = None) -> tuple[Grad, Grad]:
    """Gradients of ``left @ right`` (NumPy's 1-D and batch-broadcasting rules)."""
    lm = left[None, :] if left.ndim == 1 else left
    rm = right[:, None] if right.ndim == 1 else right
    g = np.asarray(grad)
    if right.ndim == 1:
        g = np.expand_dims(g, -1)
    if left.ndim == 1:
        g = np.expand_dims(g, -2)
    dl = dr = None
    if _wants(left):
        dl = _grad(lm, np.matmul(g, np.swapaxes(rm, -1, -2))).reshape(left.shape)
    if _wants(right):
        if rm.ndim == 2 and lm.ndim > 2:  # one GEMM over the flattened batch
            d = np.matmul(lm.reshape(-1, lm.shape[-1]).T, g.reshape(-1, g.shape[-1]))
        else:
            d = np.matmul(np.swapaxes(lm, -1, -2), g)
        dr = _grad(rm, d).reshape(right.shape)
    return dl, dr


@vjp("linear")
def linear_vjp(grad: np.ndarray, output: Any, input: np.ndarray, weight: np.ndarray,
               bias: np.ndarray | None = None, cache: Any = None) -> tuple[Grad, Grad, Grad]:
    """Gradients of ``input @ weight.T + bias``."""
    g2 = np.reshape(grad, (-1, weight.shape[0]))
    x2 = np.reshape(input, (-1, weight.shape[1]))
    dx = _grad(input, np.matmul(g2, weight).reshape(input.shape)) if _wants(input) else None
    dw = _grad(weight, np.matmul(g2.T, x2))
    db = _grad(bias, np.sum(g2, axis=0)) if _wants(bias) else None
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# Reductions
# ----------------------------------------------------------------------------------------------
@vjp("sum")
def sum_vjp(grad: np.ndarray, output: Any, input: np.ndarray, axis: Any = None,
            keepdim: bool = False, cache: Any = None) -> tuple[Grad, None, None]:
    """Gradient of ``sum``: ``grad`` broadcast over the reduced axes."""
    g, _ = _expanded(grad, input, axis, keepdim)
    return _grad(input, _filled(input.shape, g)), None, None


def _extreme_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray, axis: Any,
                 keepdim: bool) -> tuple[Grad, None, None]:
    """Gradient of ``max``/``min``: split evenly among the elements equal to the result."""
    g, axes = _expanded(grad, input, axis, keepdim)
    out, _ = _expanded(output, input, axis, keepdim)
    hit = input == out
    count = np.sum(hit, axis=axes, keepdims=True).astype(input.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _grad(input, np.where(hit, g / count, 0)), None, None


@vjp("max")
def max_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray, axis: Any = None,
            keepdim: bool = False, cache: Any = None) -> tuple[Grad, None, None]:
    """Gradient of ``max`` (ties share the gradient evenly, as PyTorch's ``amax``)."""
    return _extreme_vjp(grad, output, input, axis, keepdim)


def _exclusive_products(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """For each element, the product of the others in its reduction group (zeros are fine)."""
    dest = tuple(range(x.ndim - len(axes), x.ndim))
    moved = np.moveaxis(x, axes, dest)
    keep = moved.shape[:moved.ndim - len(axes)]
    flat = moved.reshape(*keep, -1)
    ones = np.ones((*keep, 1), x.dtype)
    before = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    after = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    return np.moveaxis((before * after).reshape(moved.shape), dest, axes)


@vjp("prod")
def prod_vjp(grad: np.ndarray, output: Any, input: np.ndarray, axis: Any = None,
             keepdim: bool = False, cache: Any = None) -> tuple[Grad, None, None]:
    """Gradient of ``prod`` (exact with zeros: products of the other elements)."""
    g, axes = _expanded(grad, input, axis, keepdim)
    if not axes:
        return _grad(input, _filled(input.shape, g)), None, None
    return _grad(input, g * _exclusive_products(input, axes)), None, None


# ----------------------------------------------------------------------------------------------
# Shape manipulation
# ----------------------------------------------------------------------------------------------
@vjp("reshape")
def reshape_vjp(grad: np.ndarray, output: Any, input: np.ndarray, shape: Any = None,
                cache: Any = None) -> tuple[Grad, None]:
    """Gradient of ``reshape``."""
    return _grad(input, np.reshape(grad, input.shape)), None


@vjp("transpose")
def transpose_vjp(grad: np.ndarray, output: Any, input: np.ndarray, axes: Any = None,
                  cache: Any = None) -> tuple[Grad, None]:
    """Gradient of ``transpose``: the inverse permutation."""
    if axes is None:
        return _grad(input, np.transpose(grad)), None
    inverse = np.argsort([a % input.ndim for a in axes])
    return _grad(input, np.transpose(grad, tuple(int(i) for i in inverse))), None


@vjp("broadcast_to")
def broadcast_to_vjp(grad: np.ndarray, output: Any, input: np.ndarray, shape: Any = None,
                     cache: Any = None) -> tuple[Grad, None]:
    """Gradient of ``broadcast_to``: summed back to the input's shape."""
    return _grad(input, grad), None


@vjp("concat")
def concat_vjp(grad: np.ndarray, output: Any, *inputs: Any, axis: Any = _k._NO_AXIS,
               cache: Any = None) -> tuple[Grad, ...]:
    """Gradients of ``concat(x1, ..., xn, axis)``: slices of ``grad``.

    One entry per positional input (``None`` for a trailing positional ``axis``).
    """
    tensors, ax = _k._split_concat_args(inputs, axis)
    g = np.asarray(grad)
    if ax is None:
        g, ax = g.reshape(-1), 0
        sizes = [np.size(t) for t in tensors]
    else:
        sizes = [np.shape(t)[ax] for t in tensors]
    pieces = np.split(g, np.cumsum(sizes)[:-1], axis=ax)
    grads: list[Grad] = [_grad(t, np.reshape(piece, np.shape(t)))
                         for t, piece in zip(tensors, pieces, strict=True)]
    grads.extend([None] * (len(inputs) - len(tensors)))
    return tuple(grads)


@vjp("pad")
def pad_vjp(grad: np.ndarray, output: Any, input: np.ndarray, pad_width: Any = None,
            cache: Any = None) -> tuple[Grad, None]:
    """Gradient of ``pad``: the unpadded region of ``grad``."""
    pads = _k._pad_pairs(pad_width, input.ndim)
    return _grad(input, _k._crop_last(np.asarray(grad), pads, input.shape)), None


@vjp("indexer")
def indexer_vjp(grad: np.ndarray, output: Any, input: Any, index: Any,
                cache: Any = None) -> tuple[Grad, None]:
    """Gradient of ``input[index]``: ``grad`` scattered into zeros (added for repeats)."""
    if not _wants(input):
        return None, None
    dx = np.zeros(input.shape, input.dtype)
    if _k._is_advanced_index(index):
        np.add.at(dx, index, grad)
    else:
        dx[index] = grad
    return dx, None


# ----------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------
def _col2im(dcols: np.ndarray, plan: _nn._ConvPlan) -> np.ndarray:
    """Sum an im2col-shaped gradient back into the (cropped) image: one add per offset."""
    n, c, nd = plan.n, plan.c, len(plan.kernel)
    per_offset = dcols.reshape(c, math.prod(plan.kernel), n, *plan.rows)
    if plan.flat:
        hp, wp = plan.padded
        length = plan.out[0] * wp
        flat = np.zeros((n, c, hp * wp + plan.slack), dcols.dtype)
        (dh, dw), kw = plan.dilation, plan.kernel[1]
        for k in range(per_offset.shape[1]):
            start = (k // kw) * dh * wp + (k % kw) * dw
            part = per_offset[:, k].reshape(c, n, length)
            flat[:, :, start:start + length] += part.swapaxes(0, 1)
        image = _k._as_strided(flat, (n, c, hp, wp), (flat.strides[0], flat.strides[1],
                                                      wp * flat.itemsize, flat.itemsize))
    else:
        image = np.zeros((n, c, *plan.padded), dcols.dtype)
        slices = _k._offset_slices(plan.kernel, plan.stride, plan.dilation, plan.out)
        for k, sl in enumerate(slices):
            image[(slice(None), slice(None), *sl)] += per_offset[:, k].swapaxes(0, 1)
    return _k._crop_last(image, plan.pads, plan.sizes[-nd:])


def _conv_vjp(nd: int, grad: np.ndarray, input: np.ndarray, weight: np.ndarray,
              bias: np.ndarray | None, stride: Any, padding: Any, dilation: Any, groups: int,
              cols: np.ndarray | None) -> tuple[Grad, ...]:
    """Gradients of an ``nd``-d convolution through its im2col matrix (single GEMMs)."""
    unbatched = input.ndim == nd + 1
    x = input[None] if unbatched else input
    g = np.asarray(grad)[None] if unbatched else np.asarray(grad)
    plan = _nn._conv_plan(nd, x, weight, stride, padding, dilation, groups)
    if cols is None:
        cols = _nn._im2col(x, plan)
    if plan.flat:  # zero gradient for the dropped columns of each flat row
        g_rows = np.zeros((plan.o, plan.n, *plan.rows), g.dtype)
        g_rows[..., :plan.out[1]] = np.moveaxis(g, 1, 0)
    else:
        g_rows = np.ascontiguousarray(np.moveaxis(g, 1, 0))
    g_rows = g_rows.reshape(groups, plan.o // groups, -1)
    dw = np.matmul(g_rows, np.swapaxes(cols, -1, -2)).reshape(weight.shape)
    db = np.einsum("ncl->c", g.reshape(plan.n, plan.o, -1)) if _wants(bias) else None
    dx = None
    if _wants(input):
        w3 = weight.reshape(groups, plan.o // groups, -1)
        dx = _col2im(np.matmul(np.swapaxes(w3, -1, -2), g_rows), plan)
        dx = _grad(input, dx[0] if unbatched else dx)
    return dx, _grad(weight, dw), _grad(bias, db), None, None, None, None


@vjp("conv2d")
def conv2d_vjp(grad: np.ndarray, output: Any, input: np.ndarray, weight: np.ndarray,
               bias: np.ndarray | None = None, stride: Any = 1, padding: Any = 0,
               dilation: Any = 1, groups: int = 1, cache: Any = None) -> tuple[Grad, ...]:
    """Gradients of ``conv2d`` w.r.t. input, weight and bias (cache: ``conv2d_fwd``'s)."""
    return _conv_vjp(2, grad, input, weight, bias, stride, padding, dilation, groups, cache)


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------
def _unpool(g: np.ndarray, input: np.ndarray, nd: int, geometry: tuple[tuple[int, ...], ...],
            masks: Sequence[np.ndarray] | None) -> np.ndarray:
    """Spread each window's gradient back over the input and crop the padding off.

    With ``masks`` a window's gradient goes only to the offset whose mask holds it (max
    pooling), without to every offset (sum pooling). Non-overlapping windows are written once
    each (into an uninitialised array when they tile the input), overlapping ones accumulated.
    """
    k, s, p, d, out = geometry
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
    return _k._crop_last(dxp, p, spatial)


def _max_pool_vjp(nd: int, grad: np.ndarray, input: np.ndarray, kernel_size: Any, stride: Any,
                  padding: Any, dilation: Any, masks: Any) -> tuple[Grad, ...]:
    """Gradient of max pooling: each window's gradient to its first maximum (as PyTorch)."""
    if not _wants(input):
        return None, None, None, None, None
    if masks is None:
        masks = _nn._max_pool_fwd(input, nd, kernel_size, stride, padding, dilation)[1]
    geometry = _nn._pool_geometry(input, nd, kernel_size, stride, padding, dilation)
    g = np.asarray(grad, dtype=input.dtype)
    return (_grad(input, _unpool(g, input, nd, geometry, masks)), None, None, None, None)


@vjp("max_pool2d")
def max_pool2d_vjp(grad: np.ndarray, output: Any, input: np.ndarray, kernel_size: Any,
                   stride: Any = None, padding: Any = 0, dilation: Any = 1,
                   cache: Any = None) -> tuple[Grad, ...]:
    """Gradient of ``max_pool2d`` (cache: ``max_pool2d_fwd``'s argmax masks)."""
    return _max_pool_vjp(2, grad, input, kernel_size, stride, padding, dilation, cache)


@vjp("avg_pool2d")
def avg_pool2d_vjp(grad: np.ndarray, output: Any, input: np.ndarray, kernel_size: Any,
                   stride: Any = None, padding: Any = 0,
                   cache: Any = None) -> tuple[Grad, None, None, None]:
    """Gradient of ``avg_pool2d``: ``grad / (kh * kw)`` to every element of each window."""
    if not _wants(input):
        return None, None, None, None
    geometry = _nn._pool_geometry(input, 2, kernel_size, stride, padding, 1)
    g = np.asarray(grad) / math.prod(geometry[0])
    return _grad(input, _unpool(g, input, 2, geometry, None)), None, None, None


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------
def _norm_input_grad(dxhat: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray,
                     axes: tuple[int, ...]) -> np.ndarray:
    """``dL/dx`` of ``xhat = (x - mean) / std`` over ``axes`` given ``dL/dxhat``."""
    m1 = np.mean(dxhat, axis=axes, keepdims=True)
    m2 = np.mean(dxhat * xhat, axis=axes, keepdims=True)
    return inv_std * (dxhat - m1 - xhat * m2)


def _channel_sums(g: np.ndarray, xhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sum(g), sum(g * xhat))`` per channel (axis 1)."""
    n, c = g.shape[:2]
    g3, x3 = g.reshape(n, c, -1), xhat.reshape(n, c, -1)
    return np.einsum("ncl->c", g3), np.einsum("ncl,ncl->c", g3, x3)


@vjp("batch_norm")
def batch_norm_vjp(grad: tuple[Any, ...], output: Any, input: np.ndarray,
                   weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                   running_mean: Any = None, running_var: Any = None, momentum: float = 0.1,
                   eps: float = 1e-5, cache: Any = None) -> tuple[Grad, ...]:
    """Gradients of training ``batch_norm`` w.r.t. input, weight and bias.

    ``grad`` is ``(g_output, g_running_mean, g_running_var)``; only the first is used.
    """
    g = grad[0] if isinstance(grad, tuple | list) else grad
    if g is None:
        g = np.zeros(input.shape, input.dtype)
    if cache is None:
        xhat, inv_std = _nn.batch_norm_fwd(input, None, None, None, None, momentum, eps)[1]
    else:
        xhat, inv_std = cache
    n = input.size // input.shape[1]
    shape = _nn._channel_shape(input)
    db, dw = _channel_sums(g, xhat)
    scale = inv_std if weight is None else weight * inv_std  # (C,)
    # dx = scale * (g - db / n - xhat * dw / n), with per-channel coefficients folded first
    dx = g * scale.reshape(shape)
    dx -= xhat * (scale * dw / n).reshape(shape)
    dx -= (scale * db / n).reshape(shape)
    return (_grad(input, dx), _grad(weight, dw), _grad(bias, db), None, None, None, None)


@vjp("batch_norm_inference")
def batch_norm_inference_vjp(grad: tuple[Any, ...], output: Any, input: np.ndarray,
                             weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                             running_mean: Any = None, running_var: Any = None,
                             momentum: float = 0.1, eps: float = 1e-5,
                             cache: Any = None) -> tuple[Grad, ...]:
    """Gradients of ``batch_norm_inference`` (running statistics are constants)."""
    if running_mean is None or running_var is None:
        return batch_norm_vjp(grad, output, input, weight, bias, None, None, momentum, eps)
    g = grad[0] if isinstance(grad, tuple | list) else grad
    if g is None:
        g = np.zeros(input.shape, input.dtype)
    shape = _nn._channel_shape(input)
    inv_std = 1 / np.sqrt(running_var.reshape(shape) + eps)
    xhat = (input - running_mean.reshape(shape)) * inv_std
    db, dw = _channel_sums(g, xhat)
    scale = inv_std if weight is None else weight.reshape(shape) * inv_std
    return (_grad(input, g * scale), _grad(weight, dw), _grad(bias, db), None, None, None, None)


# ----------------------------------------------------------------------------------------------
# Embedding, attention, dropout
# ----------------------------------------------------------------------------------------------
@vjp("embedding")
def embedding_vjp(grad: np.ndarray, output: Any, input: np.ndarray, weight: np.ndarray,
                  cache: Any = None) -> tuple[None, Grad]:
    """Gradient of ``weight[input]`` w.r.t. ``weight`` (repeated indices add up)."""
    dw = np.zeros(weight.shape, weight.dtype)
    np.add.at(dw, np.ravel(input), np.reshape(grad, (-1, *weight.shape[1:])))
    return None, dw


@vjp("scaled_dot_product")
def scaled_dot_product_vjp(grad: np.ndarray, output: Any, query: np.ndarray, key: np.ndarray,
                           value: np.ndarray, attn_mask: Any = None, is_causal: bool = False,
                           scale: float | None = None, cache: Any = None) -> tuple[Grad, ...]:
    """Gradients of ``scaled_dot_product`` w.r.t. query, key and value."""
    probs = cache
    if probs is None:
        probs = _nn.scaled_dot_product_fwd(query, key, value, attn_mask, is_causal, scale)[1]
    s = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    d_value = np.matmul(np.swapaxes(probs, -1, -2), grad)
    d_probs = np.matmul(grad, np.swapaxes(value, -1, -2))
    d_scores = probs * (d_probs - np.sum(d_probs * probs, axis=-1, keepdims=True))
    d_query = np.matmul(d_scores, key) * s
    d_key = np.matmul(np.swapaxes(d_scores, -1, -2), query) * s
    return (_grad(query, d_query), _grad(key, d_key), _grad(value, d_value), None, None, None)


@vjp("dropout")
def dropout_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray, p: float = 0.5,
                *rng: Any, cache: Any = None) -> tuple[Grad, ...]:
    """Gradient of ``dropout``: ``grad`` times the scaled keep mask.

    Pass ``dropout_fwd``'s mask as ``cache``; without it the mask is read off ``output``
    (``output != 0``), which drops the gradient where a kept input was exactly zero.
    One entry per positional input (a trailing ``rng`` gets ``None`` too).
    """
    mask = cache
    if mask is None:
        mask = (np.asarray(output) != 0) * (1 / (1 - p)) if p else 1
    return (_grad(input, grad * mask), None, *(None,) * len(rng))


@vjp("dropout_inference")
def dropout_inference_vjp(grad: np.ndarray, output: Any, input: np.ndarray, p: float = 0.5,
                          *rng: Any, cache: Any = None) -> tuple[Grad, ...]:
    """Gradient of ``dropout_inference``: ``grad`` unchanged."""
    return (_grad(input, grad), None, *(None,) * len(rng))


# ----------------------------------------------------------------------------------------------
# Reference-catalogue additions
# ----------------------------------------------------------------------------------------------
def _mT(x: np.ndarray) -> np.ndarray:
    """Swap the last two axes (matrix transpose of a batch)."""
    return np.swapaxes(x, -1, -2)


@vjp("cholesky")
def cholesky_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray,
                 cache: Any = None) -> tuple[Grad]:
    """Gradient of ``L = cholesky(A)``: ``L^-T Φ(L^T Ḡ) L^-1`` with Φ(X) the symmetric matrix
    whose lower triangle is ``tril(X)`` with the diagonal halved (PyTorch's convention: a
    symmetric gradient, as for a perturbation of a symmetric ``A``)."""
    low = output
    p = np.tril(np.matmul(_mT(low), grad))
    p = 0.5 * (p + _mT(np.tril(p, -1)))
    x = np.linalg.solve(_mT(low), p)  # L^-T P
    s = _mT(np.linalg.solve(_mT(low), _mT(x)))  # (L^-T (L^-T P)^T)^T = L^-T P L^-1
    return (_grad(input, s),)


@vjp("eigvalsh")
def eigvalsh_vjp(grad: np.ndarray, output: np.ndarray, input: np.ndarray,
                 cache: Any = None) -> tuple[Grad]:
    """Gradient of the eigenvalues of a symmetric ``A``: ``V diag(Ḡ) V^T`` (pass
    ``eigvalsh_fwd``'s eigenvectors as ``cache`` to skip recomputing them)."""
    vectors = cache if cache is not None else np.linalg.eigh(input)[1]
    g = np.asarray(grad)
    return (_grad(input, np.matmul(vectors * g[..., None, :], _mT(vectors))),)


@vjp("polynomial_features")
def polynomial_features_vjp(grad: np.ndarray, output: Any, input: np.ndarray, degree: int,
                            cache: Any = None) -> tuple[Grad, None]:
    """Gradient of ``polynomial_features``: each monomial passes ``grad`` times the product of
    its other factors to each of its factors."""
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


