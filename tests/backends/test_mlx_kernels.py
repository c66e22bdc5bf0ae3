"""MLX backend: every kernel against a PyTorch / NumPy float64 reference, gradients (``mx.vjp``)
against torch autograd in float64, float64 accuracy, other dtypes, ``vjp_fn``, ``wrap_jit``,
devices and the array creators."""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mithril as ml
from mithril.backends.mlx import MlxBackend
from mithril.backends.mlx import kernels as K
from mithril.errors import BackendUnavailableError
from mithril.framework.ops import CATALOGUE, tensor_ops
from tests.backends.kernel_view import KernelView

BACKEND = MlxBackend(dtype=ml.float64)
K = KernelView(K, MlxBackend)  # type: ignore[assignment]
GEN = np.random.default_rng(1234)
TOL = {mx.float64: 1e-10, mx.float32: 2e-5, mx.float16: 5e-3, mx.bfloat16: 4e-2}


# ---- inputs and conversions --------------------------------------------------------------------
def rn(*shape: int, scale: float = 1.0) -> np.ndarray:
    """Normal float64 samples."""
    return GEN.standard_normal(shape) * scale


def pos(*shape: int) -> np.ndarray:
    """Float64 samples in [0.5, 2)."""
    return GEN.uniform(0.5, 2.0, shape)


def ints(*shape: int, low: int = -9, high: int = 9) -> np.ndarray:
    """Int64 samples in [low, high)."""
    return GEN.integers(low, high, shape)


def bools(*shape: int) -> np.ndarray:
    """Random booleans."""
    return GEN.random(shape) < 0.5


def to_mx(a: np.ndarray, dtype: mx.Dtype = mx.float64) -> mx.array:
    """Float arrays in ``dtype``; ints and bools keep their dtype."""
    if a.dtype.kind == "f":
        return mx.array(a, dtype=mx.float64).astype(dtype)
    return mx.array(a, dtype=mx.int64 if a.dtype.kind in "iu" else mx.bool_)


def to_np(x: Any) -> np.ndarray:
    """An MLX array (any dtype) as NumPy; floats in float64."""
    if isinstance(x, mx.array):
        if mx.issubdtype(x.dtype, mx.floating):
            return np.array(x.astype(mx.float32) if x.dtype == mx.bfloat16 else x,
                            dtype=np.float64)
        return np.array(x)
    return np.asarray(x)


def to_torch(a: np.ndarray) -> torch.Tensor:
    """Float64 tensors that require grad; others as they are."""
    t = torch.tensor(a)
    if a.dtype.kind == "f":
        t.requires_grad_(True)
    return t


def assert_close(got: Any, want: Any, tol: float = 1e-10) -> None:
    """Relative-and-absolute closeness with NaN/inf equality and a shape check."""
    g, w = to_np(got), np.asarray(want.detach().numpy() if torch.is_tensor(want) else want)
    assert g.shape == w.shape, (g.shape, w.shape)
    np.testing.assert_allclose(g, w.astype(g.dtype) if w.dtype != g.dtype else w,
                               rtol=tol, atol=tol)


# ---- cases -------------------------------------------------------------------------------------
@dataclass
class Case:
    """``fn`` (on MLX arrays) against ``ref`` (on float64 torch tensors) for ``inputs``."""

    id: str
    fn: Callable[..., Any]
    ref: Callable[..., Any]
    inputs: tuple[np.ndarray, ...]
    grad: bool = True
    dtype: Any = mx.float64
    tol: float | None = None


CASES: list[Case] = []


def case(id: str, fn: Callable[..., Any], ref: Callable[..., Any], *inputs: np.ndarray,
         grad: bool = True, dtype: Any = mx.float64, tol: float | None = None) -> None:
    """Register a case."""
    CASES.append(Case(id, fn, ref, inputs, grad, dtype, tol))


def npref(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A NumPy float64 reference as a function of torch tensors."""
    return lambda *ts: torch.tensor(np.asarray(fn(*(t.detach().numpy() for t in ts))))


_PAIRS = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((5, 1), (1, 6))]
for _l, _r in _PAIRS:
    _id = f"{_l}x{_r}"
    case(f"add{_id}", K.add, torch.add, rn(*_l), rn(*_r))
    case(f"subtract{_id}", K.subtract, torch.sub, rn(*_l), rn(*_r))
    case(f"multiply{_id}", K.multiply, torch.mul, rn(*_l), rn(*_r))
    case(f"divide{_id}", K.divide, torch.div, rn(*_l), pos(*_r))
    case(f"power{_id}", K.power, torch.pow, pos(*_l), rn(*_r))
    case(f"minimum{_id}", K.minimum, torch.minimum, rn(*_l), rn(*_r))
    case(f"maximum{_id}", K.maximum, torch.maximum, rn(*_l), rn(*_r))
    case(f"floor_divide{_id}", K.floor_divide, torch.floor_divide, rn(*_l, scale=5), pos(*_r),
         grad=False)
    case(f"floor_divide_int{_id}", K.floor_divide, torch.floor_divide, ints(*_l),
         ints(*_r, low=1, high=5), grad=False)
    for _name, _ref in [("greater", torch.gt), ("less", torch.lt), ("greater_equal", torch.ge),
                        ("less_equal", torch.le), ("equal", torch.eq), ("not_equal", torch.ne)]:
        case(f"{_name}{_id}", getattr(K, _name), _ref, ints(*_l, low=-2, high=2),
             ints(*_r, low=-2, high=2), grad=False)
    for _name, _ref in [("logical_and", torch.logical_and), ("logical_or", torch.logical_or),
                        ("logical_xor", torch.logical_xor)]:
        case(f"{_name}{_id}", getattr(K, _name), _ref, bools(*_l), bools(*_r), grad=False)
    case(f"shift_left{_id}", K.shift_left, npref(np.left_shift), ints(*_l, low=0, high=99),
         ints(*_r, low=0, high=5), grad=False)
    case(f"shift_right{_id}", K.shift_right, npref(np.right_shift),
         ints(*_l, low=-99, high=99), ints(*_r, low=0, high=5), grad=False)

# Python numbers on either side of binary ops
case("add_num_right", lambda x: K.add(x, 2.5), lambda x: x + 2.5, rn(3, 4))
case("add_int_left", lambda x: K.add(3, x), lambda x: 3 + x, rn(4))
case("subtract_num_left", lambda x: K.subtract(2.5, x), lambda x: 2.5 - x, rn(2, 3))
case("multiply_num", lambda x: K.multiply(x, -3), lambda x: x * -3, rn(2, 3))
case("divide_num_left", lambda x: K.divide(1.5, x), lambda x: 1.5 / x, pos(2, 3))
case("power_num_right", lambda x: K.power(x, 2.0), lambda x: x ** 2.0, rn(2, 3))
case("power_num_left", lambda x: K.power(2.0, x), lambda x: 2.0 ** x, rn(2, 3))
case("minimum_num", lambda x: K.minimum(0.3, x), lambda x: torch.clamp(x, max=0.3), rn(3, 4))
case("maximum_num", lambda x: K.maximum(x, 0.3), lambda x: torch.clamp(x, min=0.3), rn(3, 4))
case("greater_num_left", lambda x: K.greater(0.0, x), lambda x: x < 0.0, rn(5), grad=False)
case("equal_num", lambda x: K.equal(x, 1), lambda x: x == 1, ints(6, low=0, high=3),
     grad=False)
case("logical_and_bool", lambda x: K.logical_and(True, x), lambda x: x & True, bools(5),
     grad=False)
case("logical_xor_bool", lambda x: K.logical_xor(x, True), lambda x: x ^ True, bools(5),
     grad=False)
case("shift_left_num_left", lambda x: K.shift_left(1, x), lambda x: 1 << x,
     ints(5, low=0, high=8), grad=False)
case("floor_divide_num", lambda x: K.floor_divide(x, 2), lambda x: torch.floor_divide(x, 2),
     ints(7, low=-9, high=9), grad=False)

# unary
for _shape in [(7,), (3, 4), (2, 3, 4)]:
    _id = str(_shape)
    case(f"negate{_id}", K.negate, torch.neg, rn(*_shape))
    case(f"absolute{_id}", K.absolute, torch.abs, rn(*_shape))
    case(f"exp{_id}", K.exp, torch.exp, rn(*_shape, scale=10))
    case(f"log{_id}", K.log, torch.log, pos(*_shape))
    case(f"sqrt{_id}", K.sqrt, torch.sqrt, pos(*_shape))
    case(f"square{_id}", K.square, torch.square, rn(*_shape))
    case(f"sin{_id}", K.sin, torch.sin, rn(*_shape, scale=5))
    case(f"cos{_id}", K.cos, torch.cos, rn(*_shape, scale=5))
    case(f"reciprocal{_id}", K.reciprocal, torch.reciprocal, pos(*_shape))
    case(f"relu{_id}", K.relu, torch.relu, rn(*_shape))
    case(f"sigmoid{_id}", K.sigmoid, torch.sigmoid, rn(*_shape, scale=15))
    case(f"tanh{_id}", K.tanh, torch.tanh, rn(*_shape, scale=2))
    case(f"silu{_id}", K.silu, F.silu, rn(*_shape, scale=5))
    case(f"softplus{_id}", K.softplus, F.softplus, rn(*_shape, scale=15))
    case(f"gelu{_id}", K.gelu, F.gelu, rn(*_shape, scale=3))
    case(f"gelu_tanh{_id}", lambda x: K.gelu(x, True), lambda x: F.gelu(x, approximate="tanh"),
         rn(*_shape, scale=3))
    case(f"leaky_relu{_id}", lambda x: K.leaky_relu(x, 0.2), lambda x: F.leaky_relu(x, 0.2),
         rn(*_shape))
    case(f"sign{_id}", K.sign, torch.sign, rn(*_shape), grad=False)
    case(f"floor{_id}", K.floor, torch.floor, rn(*_shape, scale=3), grad=False)
    case(f"isnan{_id}", K.isnan, torch.isnan, np.where(bools(*_shape), np.nan, rn(*_shape)),
         grad=False)
    case(f"logical_not{_id}", K.logical_not, torch.logical_not, bools(*_shape), grad=False)
case("one_hot", lambda t: K.one_hot(t, 5), lambda t: F.one_hot(t, 5).bool(),
     np.random.default_rng(0).integers(0, 5, (3, 4)), grad=False)
case("clamp_both", lambda x: K.clamp(x, -0.5, 0.7), lambda x: torch.clamp(x, -0.5, 0.7), rn(4, 5))
case("clamp_min", lambda x: K.clamp(x, -0.5, None), lambda x: torch.clamp(x, min=-0.5), rn(9))
case("clamp_max", lambda x: K.clamp(x, None, 0.2), lambda x: torch.clamp(x, max=0.2), rn(9))
case("clamp_none", lambda x: K.clamp(x), lambda x: x * 1, rn(2, 3))
case("softmax_last", K.softmax, lambda x: torch.softmax(x, -1), rn(3, 5, scale=5))
case("softmax_axis0", lambda x: K.softmax(x, 0), lambda x: torch.softmax(x, 0), rn(4, 3, 2))
case("softmax_tuple", lambda x: K.softmax(x, (0, 2)),
     lambda x: torch.exp(x) / torch.exp(x).sum(dim=(0, 2), keepdim=True), rn(2, 3, 4))
case("log_softmax_last", K.log_softmax, lambda x: torch.log_softmax(x, -1), rn(3, 5, scale=9))
case("log_softmax_axis1", lambda x: K.log_softmax(x, 1), lambda x: torch.log_softmax(x, 1),
     rn(2, 4, 3))
_special = np.array([np.nan, np.inf, -np.inf, 1.5, -2.0])
case("nan_to_num_default", K.nan_to_num, torch.nan_to_num, _special, grad=False)
case("nan_to_num_values", lambda x: K.nan_to_num(x, 1.0, 9.0, -9.0),
     lambda x: torch.nan_to_num(x, 1.0, 9.0, -9.0), _special, grad=False)
case("nan_to_num_f32", K.nan_to_num, lambda x: torch.nan_to_num(x.float()), _special,
     grad=False, dtype=mx.float32, tol=1e-6)
case("stop_gradient", K.stop_gradient, lambda x: x.detach() + 0 * x, rn(3, 2))
case("where", K.where, torch.where, bools(3, 4), rn(3, 4), rn(4))
case("where_numbers", lambda c, x: K.where(c, x, 0.5), lambda c, x: torch.where(c, x, 0.5),
     bools(2, 5), rn(2, 5))
case("where_left_number", lambda c, x: K.where(c, -1.0, x), lambda c, x: torch.where(c, -1.0, x),
     bools(2, 5), rn(1, 5))
case("cast_int64", lambda x: K.cast(x, ml.int64), lambda x: x.to(torch.int64),
     rn(3, 4, scale=5), grad=False)
case("cast_bool", lambda x: K.cast(x, ml.bool_), lambda x: x.to(torch.bool),
     np.array([0.0, 1.0, -2.5, 0.0]), grad=False)
case("cast_int_to_float", lambda x: K.cast(x, ml.float64), lambda x: x.to(torch.float64),
     ints(5), grad=False)

# linear algebra
for _l, _r in [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (2, 4, 3)), ((2, 1, 3, 4), (5, 4, 2)),
               ((6,), (6,)), ((2, 3, 4), (4,))]:
    case(f"matmul{_l}x{_r}", K.matmul, torch.matmul, rn(*_l), rn(*_r))
case("linear_bias", K.linear, F.linear, rn(2, 3, 4), rn(5, 4), rn(5))
case("linear_nobias", lambda x, w: K.linear(x, w, None), lambda x, w: F.linear(x, w), rn(6, 4),
     rn(3, 4))


# reductions
def _tdims(x: torch.Tensor, axis: Any) -> tuple[int, ...]:
    return tuple(range(x.ndim)) if axis is None else (axis,) if isinstance(axis, int) else axis


def _tprod(x: torch.Tensor, axis: Any, keep: bool) -> torch.Tensor:
    dims = sorted((d % x.ndim for d in _tdims(x, axis)), reverse=True)
    for d in dims:
        x = torch.prod(x, d, keepdim=True)
    return x if keep else x.reshape([s for i, s in enumerate(x.shape) if i not in dims])


for _axis, _keep in [(None, False), (1, False), ((0, 2), True), (-1, True), (None, True)]:
    _id = f"[{_axis},{_keep}]"
    _x = rn(2, 3, 4)
    case(f"sum{_id}", lambda x, a=_axis, k=_keep: K.sum(x, a, k),
         lambda x, a=_axis, k=_keep: torch.sum(x, _tdims(x, a), keepdim=k), _x)
    case(f"mean{_id}", lambda x, a=_axis, k=_keep: K.mean(x, a, k),
         lambda x, a=_axis, k=_keep: torch.mean(x, _tdims(x, a), keepdim=k), _x)
    case(f"max{_id}", lambda x, a=_axis, k=_keep: K.max(x, a, k),
         lambda x, a=_axis, k=_keep: torch.amax(x, _tdims(x, a), keepdim=k), _x)
    case(f"min{_id}", lambda x, a=_axis, k=_keep: K.min(x, a, k),
         lambda x, a=_axis, k=_keep: torch.amin(x, _tdims(x, a), keepdim=k), _x)
    case(f"prod{_id}", lambda x, a=_axis, k=_keep: K.prod(x, a, k),
         lambda x, a=_axis, k=_keep: _tprod(x, a, k), pos(2, 3, 4))
    for _corr in (0, 1):
        case(f"variance{_id}c{_corr}", lambda x, a=_axis, k=_keep, c=_corr: K.variance(x, a, k, c),
             lambda x, a=_axis, k=_keep, c=_corr: torch.var(x, _tdims(x, a), correction=c,
                                                            keepdim=k), _x)
    if not isinstance(_axis, tuple):
        case(f"argmax{_id}", lambda x, a=_axis, k=_keep: K.argmax(x, a, k),
             npref(lambda x, a=_axis, k=_keep: np.argmax(x, a, keepdims=k)), _x, grad=False)
        case(f"argmin{_id}", lambda x, a=_axis, k=_keep: K.argmin(x, a, k),
             npref(lambda x, a=_axis, k=_keep: np.argmin(x, a, keepdims=k)), _x, grad=False)

# shapes
case("reshape", lambda x: K.reshape(x, (6, -1)), lambda x: x.reshape(6, -1), rn(2, 3, 4))
case("transpose_none", lambda x: K.transpose(x, None), lambda x: x.permute(2, 1, 0), rn(2, 3, 4))
case("transpose_axes", lambda x: K.transpose(x, (1, -1, 0)), lambda x: x.permute(1, 2, 0),
     rn(2, 3, 4))
case("swap_axes", lambda x: K.swap_axes(x, 0, -1), lambda x: x.transpose(0, -1), rn(2, 3, 4))
case("flatten_all", K.flatten, torch.flatten, rn(2, 3, 4))
case("flatten_mid", lambda x: K.flatten(x, 1, 2), lambda x: torch.flatten(x, 1, 2),
     rn(2, 3, 4, 5))
case("flatten_scalar", K.flatten, lambda x: x.reshape(1), np.array(2.5))
case("squeeze_all", K.squeeze, torch.squeeze, rn(1, 3, 1, 2))
case("squeeze_axes", lambda x: K.squeeze(x, (0, -2)), lambda x: x.squeeze(-2).squeeze(0),
     rn(1, 3, 1, 2))
case("unsqueeze", lambda x: K.unsqueeze(x, -1), lambda x: x.unsqueeze(-1), rn(2, 3))
case("unsqueeze0", lambda x: K.unsqueeze(x, 0), lambda x: x.unsqueeze(0), rn(4))
case("broadcast_to", lambda x: K.broadcast_to(x, (2, 3, 4)), lambda x: x.expand(2, 3, 4),
     rn(3, 1))
case("concat0", lambda a, b: K.concat(a, b, 0), lambda a, b: torch.cat([a, b], 0), rn(2, 3),
     rn(4, 3))
case("concat_last", lambda a, b, c: K.concat(a, b, c, -1), lambda a, b, c: torch.cat([a, b, c], -1),
     rn(2, 3), rn(2, 1), rn(2, 2))
case("concat_none", lambda a, b: K.concat(a, b, None),
     lambda a, b: torch.cat([a.reshape(-1), b.reshape(-1)]), rn(2, 3), rn(4))
case("pad", lambda x: K.pad(x, ((1, 0), (0, 2), (2, 1))),
     lambda x: F.pad(x, (2, 1, 0, 2, 1, 0)), rn(2, 3, 4))
case("indexer_int", lambda x: K.indexer(x, 1), lambda x: x[1], rn(3, 4))
case("indexer_slices", lambda x: K.indexer(x, (slice(None), slice(1, 3))),
     lambda x: x[:, 1:3], rn(3, 4))
case("indexer_none_ellipsis", lambda x: K.indexer(x, (None, Ellipsis, -1)),
     lambda x: x[None, ..., -1], rn(2, 3, 4))
case("indexer_step", lambda x: K.indexer(x, (slice(None, None, 2), 0)), lambda x: x[::2, 0],
     rn(5, 3))
case("indexer_negative_step", lambda x: K.indexer(x, slice(None, None, -1)),
     lambda x: torch.flip(x, (0,)), rn(4, 2))

# embedding, normalisation, attention
case("embedding", lambda w: K.embedding(mx.array([[0, 2, 2], [3, 0, 1]]), w),
     lambda w: F.embedding(torch.tensor([[0, 2, 2], [3, 0, 1]]), w), rn(4, 5))
for _x in (rn(2, 3, 4), rn(3, 4)):
    case(f"layer_norm{_x.shape}", lambda x, w, b: K.layer_norm(x, w, b, (4,), 1e-5),
         lambda x, w, b: F.layer_norm(x, (4,), w, b, 1e-5), _x, rn(4), rn(4))
case("layer_norm_2d_noaffine", lambda x: K.layer_norm(x, None, None, (3, 4), 1e-3),
     lambda x: F.layer_norm(x, (3, 4), eps=1e-3), rn(2, 3, 4))
case("layer_norm_weight_only", lambda x, w: K.layer_norm(x, w, None, (3, 4), 1e-5),
     lambda x, w: F.layer_norm(x, (3, 4), w), rn(2, 3, 4), rn(3, 4))
case("group_norm", lambda x, w, b: K.group_norm(x, w, b, 3, 1e-5),
     lambda x, w, b: F.group_norm(x, 3, w, b, 1e-5), rn(2, 6, 4, 3), rn(6), rn(6))
case("group_norm_1d_noaffine", lambda x: K.group_norm(x, None, None, 2, 1e-4),
     lambda x: F.group_norm(x, 2, eps=1e-4), rn(3, 4, 5))
for _shape in [(4, 3), (4, 3, 5), (2, 3, 4, 5)]:
    case(f"batch_norm_out{_shape}",
         lambda x, w, b: K.batch_norm(x, w, b, None, None, 0.1, 1e-5)[0],
         lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5), rn(*_shape),
         rn(3), rn(3))
case("batch_norm_noaffine", lambda x: K.batch_norm(x, None, None, None, None, 0.1, 1e-3)[0],
     lambda x: F.batch_norm(x, None, None, training=True, eps=1e-3), rn(5, 2, 3))
_MEAN, _VAR = rn(3), pos(3)  # running statistics are state: constants, not differentiated
case("batch_norm_inference",
     lambda x, w, b: K.batch_norm_inference(x, w, b, to_mx(_MEAN), to_mx(_VAR), 0.1, 1e-5)[0],
     lambda x, w, b: F.batch_norm(x, torch.tensor(_MEAN), torch.tensor(_VAR), w, b, False, 0.1,
                                  1e-5), rn(4, 3, 2), rn(3), rn(3))
case("batch_norm_inference_no_stats",
     lambda x, w, b: K.batch_norm_inference(x, w, b, None, None, 0.1, 1e-5)[0],
     lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5), rn(4, 3), rn(3), rn(3))


def _sdpa_ref(q: Any, k: Any, v: Any, mask: Any = None, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)


_QKV = (rn(2, 3, 5, 4), rn(2, 3, 6, 4), rn(2, 3, 6, 7))
_BMASK = bools(5, 6)
_BMASK[:, 0] = True  # every query attends somewhere
_FMASK = rn(3, 5, 6)
_SDP = K.scaled_dot_product
case("scaled_dot_product_plain", lambda q, k, v: _SDP(q, k, v, None), _sdpa_ref, *_QKV)
case("scaled_dot_product_scale", lambda q, k, v: _SDP(q, k, v, None, False, 0.3),
     lambda q, k, v: _sdpa_ref(q, k, v, scale=0.3), *_QKV)
case("scaled_dot_product_bool_mask", lambda q, k, v: _SDP(q, k, v, mx.array(_BMASK)),
     lambda q, k, v: _sdpa_ref(q, k, v, torch.tensor(_BMASK)), *_QKV)
case("scaled_dot_product_float_mask", lambda q, k, v: _SDP(q, k, v, to_mx(_FMASK)),
     lambda q, k, v: _sdpa_ref(q, k, v, torch.tensor(_FMASK)), *_QKV)
case("scaled_dot_product_causal", lambda q, k, v: _SDP(q, k, v, None, True),
     lambda q, k, v: _sdpa_ref(q, k, v, causal=True), rn(2, 5, 4), rn(2, 5, 4), rn(2, 5, 3))


# convolution and pooling
def _conv_call(kernel: Callable[..., Any], stride: tuple, padding: tuple, dilation: tuple,
               groups: int, bias: bool) -> Callable[..., Any]:
    if bias:
        return lambda x, w, b: kernel(x, w, b, stride, padding, dilation, groups)
    return lambda x, w: kernel(x, w, None, stride, padding, dilation, groups)


def _conv_ref(nd: int, stride: tuple, padding: tuple, dilation: tuple, groups: int
              ) -> Callable[..., torch.Tensor]:
    flat = [p for pair in reversed(padding) for p in pair]
    conv = F.conv1d if nd == 1 else F.conv2d

    def ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return conv(F.pad(x, flat), w, b, stride, 0, dilation, groups)

    return ref


_CONV2D = [  # x shape, w shape, stride, padding, dilation, groups, bias
    ((2, 4, 7, 6), (6, 4, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, True),
    ((1, 4, 9, 8), (6, 2, 3, 2), (2, 1), ((1, 0), (0, 1)), (2, 1), 2, True),
    ((2, 6, 8, 8), (6, 1, 2, 3), (2, 3), ((0, 1), (2, 2)), (1, 2), 6, False),
    ((3, 7, 6), (4, 3, 3, 3), (1, 1), ((2, 1), (1, 1)), (1, 1), 1, True),  # unbatched
]
_CONV1D = [
    ((2, 3, 10), (5, 3, 3), (1,), ((1, 1),), (1,), 1, True),
    ((2, 4, 11), (6, 2, 2), (2,), ((1, 0),), (3,), 2, False),
    ((4, 9), (2, 4, 4), (1,), ((2, 1),), (1,), 1, True),  # unbatched, "same" with an even kernel
]
for _nd, _table in ((2, _CONV2D), (1, _CONV1D)):
    _kernel = K.conv2d if _nd == 2 else K.conv1d
    for _xs, _ws, _s, _p, _d, _g, _bias in _table:
        _ref = _conv_ref(_nd, _s, _p, _d, _g)
        _inputs = (rn(*_xs), rn(*_ws)) + ((rn(_ws[0]),) if _bias else ())
        for _dt in (mx.float64, mx.float32):  # float64 unfolds; float32 uses mx.conv_general
            case(f"conv{_nd}d{_xs}{_ws}s{_s}p{_p}d{_d}g{_g}-{_dt}",
                 _conv_call(_kernel, _s, _p, _d, _g, _bias), _ref, *_inputs, dtype=_dt,
                 tol=1e-10 if _dt == mx.float64 else 1e-4)

case("conv2d_int_args", lambda x, w: K.conv2d(x, w, None, 2, 1, 1, 1),
     lambda x, w: F.conv2d(x, w, None, 2, 1), rn(1, 2, 5, 5), rn(3, 2, 3, 3))
for _xs, _k, _s, _p, _d in [((2, 3, 9, 8), (3, 3), (2, 2), (1, 1), (1, 1)),
                            ((3, 10, 9), (2, 3), (1, 2), (1, 0), (2, 1)),
                            ((1, 2, 7, 7), (2, 2), None, (0, 0), (1, 1))]:
    case(f"max_pool2d{_xs}k{_k}s{_s}p{_p}d{_d}",
         lambda x, k=_k, s=_s, p=_p, d=_d: K.max_pool2d(x, k, s, p, d),
         lambda x, k=_k, s=_s, p=_p, d=_d: F.max_pool2d(x, k, s or k, p, d), rn(*_xs))
    case(f"avg_pool2d{_xs}k{_k}s{_s}p{_p}",
         lambda x, k=_k, s=_s, p=_p: K.avg_pool2d(x, k, s, p),
         lambda x, k=_k, s=_s, p=_p: F.avg_pool2d(x, k, s or k, p), rn(*_xs))
for _xs, _k, _s, _p, _d in [((2, 3, 11), (3,), (2,), (1,), (1,)),
                            ((4, 12), (2,), None, (1,), (3,)),
                            ((2, 2, 9), (4,), (3,), (2,), (1,))]:
    case(f"max_pool1d{_xs}k{_k}s{_s}p{_p}d{_d}",
         lambda x, k=_k, s=_s, p=_p, d=_d: K.max_pool1d(x, k, s, p, d),
         lambda x, k=_k, s=_s, p=_p, d=_d: F.max_pool1d(x, k, s or k, p, d), rn(*_xs))

# other precisions (reference still float64 torch)
for _dt in (mx.float32, mx.float16, mx.bfloat16):
    _n = str(_dt).split(".")[-1]
    case(f"add-{_n}", K.add, torch.add, rn(3, 4), rn(4), dtype=_dt)
    case(f"add_num-{_n}", lambda x: K.add(x, 0.5), lambda x: x + 0.5, rn(3, 4), dtype=_dt)
    case(f"exp-{_n}", K.exp, torch.exp, rn(3, 4), dtype=_dt)
    case(f"gelu-{_n}", K.gelu, F.gelu, rn(3, 4), dtype=_dt)
    case(f"softmax-{_n}", K.softmax, lambda x: torch.softmax(x, -1), rn(3, 4), dtype=_dt)
    case(f"matmul-{_n}", K.matmul, torch.matmul, rn(3, 4), rn(4, 2), dtype=_dt)
    case(f"layer_norm-{_n}", lambda x: K.layer_norm(x, None, None, (4,), 1e-5),
         lambda x: F.layer_norm(x, (4,)), rn(3, 4), dtype=_dt)
    case(f"max_pool2d-{_n}", lambda x: K.max_pool2d(x, (2, 2), None, (1, 1), (1, 1)),
         lambda x: F.max_pool2d(x, 2, 2, 1), rn(1, 2, 5, 5), dtype=_dt)
    case(f"conv2d-{_n}", lambda x, w: K.conv2d(x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 2),
         lambda x, w: F.conv2d(x, w, None, 1, 1, 1, 2), rn(1, 4, 5, 5), rn(4, 2, 3, 3),
         dtype=_dt, tol=TOL[_dt] * 4)
    case(f"scaled_dot_product-{_n}", lambda q, k, v: _SDP(q, k, v, None), _sdpa_ref,
         rn(2, 3, 4), rn(2, 5, 4), rn(2, 5, 3), dtype=_dt, tol=TOL[_dt] * 4)


# ---- the generic forward and gradient tests ----------------------------------------------------
def _run(c: Case) -> tuple[list[Any], Any, list[torch.Tensor], torch.Tensor]:
    mx_in = [to_mx(a, c.dtype) for a in c.inputs]
    t_in = [to_torch(a) for a in c.inputs]
    return mx_in, c.fn(*mx_in), t_in, c.ref(*t_in)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_forward(c: Case) -> None:
    _, got, _, want = _run(c)
    if c.dtype != mx.float64 and isinstance(got, mx.array) and mx.issubdtype(got.dtype,
                                                                              mx.floating):
        assert got.dtype == c.dtype  # Python numbers and kernels keep the precision
    assert_close(got, want, c.tol or TOL[c.dtype])


GRAD_CASES = [c for c in CASES if c.grad]


@pytest.mark.parametrize("c", GRAD_CASES, ids=[c.id for c in GRAD_CASES])
def test_gradient(c: Case) -> None:
    mx_in, _, t_in, want = _run(c)
    diff = [i for i, a in enumerate(c.inputs) if a.dtype.kind == "f"]
    cot = GEN.standard_normal(tuple(want.shape))

    def on_primals(*primals: mx.array) -> list[mx.array]:
        args = list(mx_in)
        for i, p in zip(diff, primals, strict=True):
            args[i] = p
        return [c.fn(*args)]

    _, grads = mx.vjp(on_primals, [mx_in[i] for i in diff], [to_mx(cot, c.dtype)])
    refs = torch.autograd.grad(want, [t_in[i] for i in diff], torch.tensor(cot),
                               allow_unused=True)
    for i, g, r in zip(diff, grads, refs, strict=True):
        assert_close(g, np.zeros(c.inputs[i].shape) if r is None else r, c.tol or TOL[c.dtype])


# ---- kernels with more than one output or special behaviour ------------------------------------
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 2)])
def test_batch_norm_running_statistics(shape: tuple[int, ...]) -> None:
    x, w, b, m, v = rn(*shape), rn(3), rn(3), rn(3), pos(3)
    out, new_m, new_v = K.batch_norm(to_mx(x), to_mx(w), to_mx(b), to_mx(m), to_mx(v), 0.2, 1e-4)
    tm, tv = torch.tensor(m), torch.tensor(v)
    want = F.batch_norm(torch.tensor(x), tm, tv, torch.tensor(w), torch.tensor(b), True, 0.2,
                        1e-4)
    assert_close(out, want)
    assert_close(new_m, tm)  # torch updated its running statistics in place
    assert_close(new_v, tv)
    out2, none_m, none_v = K.batch_norm(to_mx(x), None, None, None, None, 0.1, 1e-5)
    assert none_m is None and none_v is None
    assert_close(out2, F.batch_norm(torch.tensor(x), None, None, training=True))


def test_batch_norm_inference_returns_state_unchanged() -> None:
    m, v = to_mx(rn(3)), to_mx(pos(3))
    _, m2, v2 = K.batch_norm_inference(to_mx(rn(4, 3)), None, None, m, v, 0.1, 1e-5)
    assert m2 is m and v2 is v


def test_batch_norm_needs_two_values_per_channel() -> None:
    with pytest.raises(ValueError, match="more than one value"):
        K.batch_norm(to_mx(rn(1, 3)), None, None, None, None, 0.1, 1e-5)


def test_float64_transcendentals_are_accurate() -> None:
    """MLX's own float64 exp/sin/cos/erf/sigmoid are float32-accurate; the kernels are not."""
    x = np.array([-700.0, -100.0, -30.0, -1e-3, 0.0, 2.0, 50.0, 100.0, 700.0])
    assert_close(K.exp(to_mx(x)), np.exp(x), 1e-13)
    assert_close(K.sigmoid(to_mx(x)), torch.sigmoid(torch.tensor(x)), 1e-13)
    assert_close(K.softplus(to_mx(x)), F.softplus(torch.tensor(x)), 1e-13)
    y = np.linspace(-40, 40, 801)
    assert_close(K.sin(to_mx(y)), np.sin(y), 1e-14)
    assert_close(K.cos(to_mx(y)), np.cos(y), 1e-14)
    z = np.linspace(-7, 7, 281)
    assert_close(K.gelu(to_mx(z)), F.gelu(torch.tensor(z)), 1e-14)
    assert_close(K.softmax(to_mx(np.array([0.0, -100.0, -700.0]))),
                 torch.softmax(torch.tensor([0.0, -100.0, -700.0], dtype=torch.float64), 0),
                 1e-13)


@pytest.mark.parametrize("op", ["sin", "cos", "sigmoid", "gelu", "exp"])
def test_float64_gradients_by_central_differences(op: str) -> None:
    x = rn(50, scale=4)
    h = 1e-6
    kernel = getattr(K, op)
    _, (g,) = mx.vjp(lambda a: [kernel(a)], [to_mx(x)], [mx.ones(50, dtype=mx.float64)])
    numeric = (to_np(kernel(to_mx(x + h))) - to_np(kernel(to_mx(x - h)))) / (2 * h)
    np.testing.assert_allclose(to_np(g), numeric, rtol=1e-7, atol=1e-7)


def test_item_size_to_tensor() -> None:
    x = to_mx(rn(2, 3, 4))
    assert K.size(x) == 24 and K.size(x, 1) == 3 and K.size(x, -1) == 4
    assert isinstance(K.size(x), int)
    assert K.item(to_mx(np.array([2.5]))) == 2.5
    assert K.item(mx.array(7, dtype=mx.int64)) == 7
    t = K.to_tensor([[1.5, 2], [3, 4]], float_dtype=mx.float64)
    assert t.dtype == mx.float64 and to_np(t).tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert K.to_tensor(0.1, float_dtype=ml.float64).item() == 0.1
    assert K.to_tensor([1, 2], float_dtype=mx.float32).dtype == mx.int64
    assert K.to_tensor(True, float_dtype=mx.float32).dtype == mx.bool_
    assert K.to_tensor([[True], [False]], float_dtype=mx.float32).shape == (2, 1)


def test_indexer_on_python_values_and_argmax_dtype() -> None:
    assert K.indexer([4, 5, 6], 1) == 5
    assert K.indexer((1, 2, 3), slice(1, None)) == (2, 3)
    assert K.argmax(to_mx(rn(3, 4)), 1).dtype == mx.int64


def test_cast_to_low_precision_dtypes() -> None:
    x = to_mx(rn(3))
    for dt in (ml.float16, ml.bfloat16, ml.float32, ml.int32, ml.uint8, ml.int8):
        assert K.cast(x, dt).dtype == K.mx_dtype(dt)


def test_dropout() -> None:
    x = to_mx(pos(200, 50))
    key = mx.random.key(3)
    out = to_np(K.dropout(x, 0.3, key))
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(out[kept], to_np(x)[kept] / 0.7, rtol=1e-12)
    np.testing.assert_array_equal(to_np(K.dropout(x, 0.3, key)), out)  # same key, same mask
    assert not np.array_equal(to_np(K.dropout(x, 0.3, mx.random.key(4))), out)
    assert K.dropout(x, 0.0, key) is x
    assert K.dropout_inference(x, 0.3) is x
    _, (g,) = mx.vjp(lambda a: [K.dropout(a, 0.3, key)], [x], [mx.ones(x.shape, mx.float64)])
    np.testing.assert_allclose(to_np(g), kept / 0.7, rtol=1e-12)


def test_split_rng() -> None:
    keys = K.split_rng(mx.random.key(0), 3)
    assert len(keys) == 3
    draws = [to_np(mx.random.normal((4,), key=k)) for k in keys]
    assert not np.allclose(draws[0], draws[1]) and not np.allclose(draws[1], draws[2])


# ---- catalogue coverage ------------------------------------------------------------------------
@pytest.mark.parametrize("op", tensor_ops(), ids=lambda op: op.name)
def test_every_primitive_has_a_kernel_with_catalogue_arguments(op: Any) -> None:
    kernel = K.registry.kernels.get((op.name, "default"))
    if kernel is None:  # a derived primitive MLX runs from its decomposition
        assert not op.core, f"no MLX kernel for {op.name}"
        return
    if not inspect.isfunction(kernel):  # MLX's own function (or operator's): no signature
        return
    params = list(inspect.signature(kernel).parameters.values())
    if op.variadic:
        assert params[0].kind is inspect.Parameter.VAR_POSITIONAL
        return
    names = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    expected = list(op.input_names) + (["rng"] if op.random else [])
    assert names == expected
    if op.modal:
        inference = K.registry.kernels[(op.name, "inference")]
        assert [p for p in inspect.signature(inference).parameters] == list(op.input_names)


def test_every_primitive_has_a_reference_case() -> None:
    """Checked here, or against NumPy float64 by the cross-backend walk (catalogue_cases.py)."""
    from tests.catalogue_cases import CASES as WALKED
    from tests.catalogue_cases import NOT_WALKED

    separate = {"size", "item", "to_tensor", "dropout", *WALKED, *NOT_WALKED}
    missing = [op.name for op in tensor_ops() if op.name not in separate
               and not any(c.id.startswith(op.name) for c in CASES)]
    assert not missing


def test_exprs_match_kernels() -> None:
    a, b, m = to_mx(rn(3, 4)), to_mx(pos(3, 4)), to_mx(rn(4, 2))
    for name, template in MlxBackend.exprs.items():
        n_args = len(CATALOGUE[name].input_names)
        if name == "matmul":
            choices = [[a, m]]
        elif n_args == 1:
            choices = [[a]]
        else:
            choices = [[a, b][:n_args], [2.0, b][:n_args], [a, 3][:n_args]]
        for args in choices:
            env = {f"v{i}": v for i, v in enumerate(args)}
            got = eval(template.format(*env), {}, env)
            want = getattr(K, name)(*args)
            assert got.dtype == want.dtype
            assert_close(got, to_np(want), 0)


# ---- the backend class -------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "tpu"]
                         + ([] if mx.is_available(mx.gpu) else ["gpu", "mps"]))
def test_unavailable_devices_raise(device: str) -> None:
    with pytest.raises(BackendUnavailableError):
        MlxBackend(device=device)


def test_construction_errors() -> None:
    with pytest.raises(BackendUnavailableError, match="MlxBackend has no device meshes"):
        MlxBackend(device_mesh=(2,))
    with pytest.raises(ValueError, match="unknown device"):
        MlxBackend(device="xpu")
    with pytest.raises(TypeError):
        MlxBackend(dtype=ml.int64)
    b = MlxBackend(dtype=ml.float64, device="cpu")
    assert b.name == "mlx" and b.mx_device == mx.Device(mx.cpu) and b.device == "cpu"


@pytest.mark.parametrize("dtype", [ml.float16, ml.bfloat16, ml.float32, ml.float64])
def test_creators_follow_the_backend_dtype(dtype: ml.Dtype) -> None:
    b = MlxBackend(dtype=dtype)
    native = b.native_dtype(dtype)
    for arr in (b.ones(2, 3), b.zeros((2, 3)), b.randn(2, 3), b.rand(2, 3),
                b.array([[1.0, 2.0, 3.0], [4, 5, 6]])):
        assert isinstance(arr, mx.array) and arr.dtype == native and arr.shape == (2, 3)
    assert b.to_numpy(b.ones(2)).tolist() == [1.0, 1.0]
    assert b.arange(0.0, 1.0, 0.25).dtype == native
    assert b.to_numpy(b.array([0.5, -1.5])).tolist() == [0.5, -1.5]
    u = b.to_numpy(b.rand(1000))
    assert u.min() >= 0 and u.max() <= 1


def test_creators_for_int_and_bool() -> None:
    b = BACKEND
    assert b.randint(0, 5, (3, 4)).dtype == mx.int64
    assert b.arange(5).dtype == mx.int64 and b.to_numpy(b.arange(5)).tolist() == [0, 1, 2, 3, 4]
    assert b.array([1, 2]).dtype == mx.int64 and b.array([True]).dtype == mx.bool_
    assert b.ones(2, dtype=ml.bool_).dtype == mx.bool_
    assert b.zeros(3, dtype=ml.int64).dtype == mx.int64
    assert b.array([2**40]).item() == 2**40
    assert b.to_numpy(b.array([True, False])).dtype == np.bool_
    x = np.random.default_rng(0).standard_normal(5)
    np.testing.assert_array_equal(b.to_numpy(b.array(x)), x)  # float64 kept exactly
    assert b.to_numpy(torch.ones(2, dtype=torch.float64)).tolist() == [1.0, 1.0]
    assert b.to_numpy(b.array(torch.tensor([1.5]))).tolist() == [1.5]
    assert b.to_numpy(MlxBackend(dtype=ml.bfloat16).ones(2)).dtype == np.float32
    assert b.array(mx.ones(2, dtype=mx.bfloat16)).dtype == mx.float64
    assert b.array(mx.ones(2, dtype=mx.int32), dtype=ml.int32).dtype == mx.int32
    assert b.native_dtype(ml.int64) == mx.int64 and b.native_dtype(ml.bool_) == mx.bool_


def test_seeds_and_rng() -> None:
    b = MlxBackend()
    b.set_seed(11)
    first = (b.to_numpy(b.randn(4)), b.to_numpy(b.next_rng()), b.to_numpy(b.next_rng()))
    assert not np.array_equal(first[1], first[2])  # a fresh key per call
    b.set_seed(11)
    again = (b.to_numpy(b.randn(4)), b.to_numpy(b.next_rng()), b.to_numpy(b.next_rng()))
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(TypeError):
        b.set_seed(1.5)  # type: ignore[arg-type]


def test_kernel_table_binds_to_tensor_dtype() -> None:
    table = BACKEND.kernel_table()
    assert table["to_tensor"](1.5).dtype == mx.float64
    assert table["to_tensor"]([1, 2]).dtype == mx.int64
    assert all(callable(table[op.name]) for op in tensor_ops())


# ---- vjp_fn and wrap_jit -----------------------------------------------------------------------
def _forward(params: dict, data: dict, state: dict, rng: Any) -> tuple[dict, dict]:
    hidden = K.linear(data["x"], params["w"], params["b"])
    out = K.tanh(hidden) * data.get("scale", 1.0)
    return ({"output": out, "total": K.sum(out * out), "n": K.size(out, 0)},
            {"count": state["count"] + 1})


def _torch_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, scale: float = 1.0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    out = torch.tanh(F.linear(torch.tensor(x), tw, tb)) * scale
    return out, (out * out).sum(), tw, tb


@pytest.mark.parametrize("jit", [False, True])
def test_vjp_fn_matches_torch_autograd(jit: bool) -> None:
    b = BACKEND
    fn = b.vjp_fn(_forward)
    fn = b.wrap_jit(fn) if jit else fn
    w, bias = rn(3, 4), rn(3)
    params = {"w": to_mx(w), "b": to_mx(bias), "unused": to_mx(rn(2, 2))}
    for rows in (5, 2):  # a new input shape recompiles
        x, cot = rn(rows, 4), rn(rows, 3)
        outs, state, grads = fn(params, {"x": to_mx(x)}, {"count": mx.array(1)}, None,
                                {"output": to_mx(cot)})
        out, total, tw, tb = _torch_forward(x, w, bias)
        gw, gb = torch.autograd.grad(out, [tw, tb], torch.tensor(cot))
        assert_close(outs["output"], out)
        assert_close(outs["total"], total)
        assert outs["n"] == rows and state["count"].item() == 2
        assert sorted(grads) == ["b", "unused", "w"]
        assert_close(grads["w"], gw)
        assert_close(grads["b"], gb)
        assert_close(grads["unused"], np.zeros((2, 2)))


@pytest.mark.parametrize("jit", [False, True])
def test_vjp_fn_with_several_and_no_output_gradients(jit: bool) -> None:
    b = BACKEND
    fn = b.vjp_fn(_forward)
    fn = b.wrap_jit(fn) if jit else fn
    x, w, bias, cot = rn(4, 4), rn(3, 4), rn(3), rn(4, 3)
    params = {"w": to_mx(w), "b": to_mx(bias)}
    data = {"x": to_mx(x), "scale": 0.5}
    _, _, grads = fn(params, data, {"count": mx.array(0)}, None,
                     {"output": to_mx(cot), "total": 2.0})
    out, total, tw, tb = _torch_forward(x, w, bias, 0.5)
    gw, gb = torch.autograd.grad([out, total], [tw, tb],
                                 [torch.tensor(cot), torch.tensor(2.0, dtype=torch.float64)],
                                 retain_graph=True)
    assert_close(grads["w"], gw)
    assert_close(grads["b"], gb)
    _, _, grads_one = fn(params, data, {"count": mx.array(0)}, None,
                         {"total": BACKEND.ones(1)})  # a (1,) cotangent for a () output
    gw1, = torch.autograd.grad(total, [tw])
    assert_close(grads_one["w"], gw1)
    outs, _, grads = fn(params, data, {"count": mx.array(0)}, None, {"output": None})
    assert_close(outs["output"], out)
    assert_close(grads["w"], np.zeros((3, 4)))


def test_vjp_fn_with_rng_and_low_precision() -> None:
    b = MlxBackend(dtype=ml.float32)

    def forward(params: dict, data: dict, state: dict, rng: Any) -> tuple[dict, dict]:
        return {"output": K.dropout(data["x"] * params["w"], 0.5, rng)}, {}

    x = b.ones(8, 8)
    rng = b.next_rng()
    outs, _, grads = b.vjp_fn(forward)({"w": b.ones(8, 8)}, {"x": x}, {}, rng,
                                       {"output": b.ones(8, 8)})
    kept = b.to_numpy(outs["output"]) != 0
    np.testing.assert_allclose(b.to_numpy(grads["w"]), kept * 2.0)
    assert grads["w"].dtype == mx.float32


def test_wrap_jit_recompiles_for_shapes_and_python_constants() -> None:
    calls: list[tuple[int, ...]] = []

    def fn(data: dict, scale: float) -> dict:
        calls.append(data["x"].shape)
        return {"y": K.multiply(data["x"], scale), "rows": K.size(data["x"], 0)}

    jitted = BACKEND.wrap_jit(fn)
    for rows, scale in [(2, 2.0), (2, 2.0), (3, 2.0), (3, -1.0)]:
        out = jitted({"x": to_mx(np.ones((rows, 2)))}, scale)
        assert_close(out["y"], np.full((rows, 2), scale))
        assert out["rows"] == rows
    assert len(calls) == 3  # traced once per (shape, constant); the repeated call is cached


def test_wrap_jit_falls_back_to_eager_for_item() -> None:
    def fn(x: mx.array) -> mx.array:
        return x * K.item(K.sum(x))

    jitted = BACKEND.wrap_jit(fn)
    with pytest.warns(RuntimeWarning, match="eagerly"):
        assert_close(jitted(to_mx(np.ones(3))), np.full(3, 3.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_close(jitted(to_mx(np.ones(2))), np.full(2, 2.0))
    with pytest.raises(ValueError, match="broadcast"):
        BACKEND.wrap_jit(lambda a, b: a + b)(to_mx(rn(2)), to_mx(rn(3)))


def test_math_is_float64() -> None:  # the whole suite relies on this
    assert BACKEND.dtype == ml.float64 and K.exp(BACKEND.ones(2)).dtype == mx.float64
    assert math.isclose(K.exp(BACKEND.array([1.0])).item(), math.e, rel_tol=1e-15)
