"""JAX backend: kernels against PyTorch / NumPy float64 references, gradients against torch
autograd, ``vjp_fn``, ``wrap_jit``, devices, creators and dtypes."""

from __future__ import annotations

import inspect
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mithril as ml
from mithril.backends.jax import JaxBackend
from mithril.backends.jax import kernels as K
from mithril.errors import BackendUnavailableError, InputError
from mithril.framework.ops import tensor_ops
from tests.backends.kernel_view import KernelView

BACKEND = JaxBackend(dtype=ml.float64)  # changes nothing process-wide (x64 only in its calls)
K = KernelView(K, JaxBackend)  # type: ignore[assignment]
GEN = np.random.default_rng(20240611)


@pytest.fixture(autouse=True)
def _jax_x64():
    """These tests call kernels directly on 64-bit arrays: x64 on, as a user calling JAX
    functions on float64 arrays turns it on (the backend's own calls need no switch)."""
    with jax.enable_x64(True):
        yield


# ---- inputs ------------------------------------------------------------------------------------
def rn(*shape: int) -> np.ndarray:
    """Standard normal float64 samples."""
    return GEN.standard_normal(shape)


def pos(*shape: int) -> np.ndarray:
    """Float64 samples in [0.5, 2]."""
    return GEN.uniform(0.5, 2.0, shape)


def ints(*shape: int, low: int = -20, high: int = 20) -> np.ndarray:
    """Int64 samples in [low, high)."""
    return GEN.integers(low, high, shape)


def bools(*shape: int) -> np.ndarray:
    """Random booleans."""
    return GEN.random(shape) < 0.5


# ---- cases -------------------------------------------------------------------------------------
@dataclass
class Case:
    """A kernel call (``jax_fn``) and its reference (``ref_fn`` on float64 torch tensors)."""

    id: str
    jax_fn: Callable[..., Any]
    ref_fn: Callable[..., Any]
    inputs: list[np.ndarray]
    grad: bool = True
    nograd: tuple[int, ...] = ()  # float inputs not differentiated (running statistics)
    tol: float = 1e-9
    extra: dict[str, Any] = field(default_factory=dict)


CASES: list[Case] = []


def case(id: str, jax_fn: Callable[..., Any], ref_fn: Callable[..., Any], *inputs: np.ndarray,
         grad: bool = True, nograd: tuple[int, ...] = (), tol: float = 1e-9) -> None:
    """Register one case."""
    CASES.append(Case(id, jax_fn, ref_fn, list(inputs), grad, nograd, tol))


def npf(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A NumPy reference as a function of torch tensors."""
    return lambda *ts: fn(*(t.numpy() for t in ts))


# elementwise binary, differentiable
_SHAPES = [((2, 3, 4), (4,)), ((5, 1), (1, 6))]
_BIN = {
    "add": (torch.add, rn, rn),
    "subtract": (torch.subtract, rn, rn),
    "multiply": (torch.multiply, rn, rn),
    "divide": (torch.divide, rn, pos),
    "power": (torch.pow, pos, rn),
    "minimum": (torch.minimum, rn, rn),
    "maximum": (torch.maximum, rn, rn),
}
for _name, (_ref, _ga, _gb) in _BIN.items():
    for _sa, _sb in _SHAPES:
        case(f"{_name}-{_sa}-{_sb}", getattr(K, _name), _ref, _ga(*_sa), _gb(*_sb))
case("add-number", lambda x: K.add(x, 2.5), lambda x: x + 2.5, rn(3, 4))
case("subtract-number-left", lambda x: K.subtract(2.0, x), lambda x: 2.0 - x, rn(3, 4))
case("multiply-number-left", lambda x: K.multiply(3, x), lambda x: 3 * x, rn(3, 4))
case("divide-number", lambda x: K.divide(x, 4), lambda x: x / 4, rn(3, 4))
case("divide-number-left", lambda x: K.divide(1.5, x), lambda x: 1.5 / x, pos(3, 4))
case("power-int-exponent", lambda x: K.power(x, 3), lambda x: x**3, rn(3, 4))
case("power-number-base", lambda x: K.power(2.0, x), lambda x: torch.pow(2.0, x), rn(3, 4))
case("minimum-number", lambda x: K.minimum(x, 0.3), lambda x: torch.clamp(x, max=0.3), rn(3, 4))
case("maximum-number", lambda x: K.maximum(-0.2, x), lambda x: torch.clamp(x, min=-0.2),
     rn(3, 4))

# elementwise binary, not differentiable (NumPy references)
case("floor_divide-float", K.floor_divide, npf(np.floor_divide), rn(3, 4) * 5, pos(4),
     grad=False)
case("floor_divide-int", K.floor_divide, npf(np.floor_divide), ints(3, 4),
     ints(3, 4, low=1, high=6), grad=False)
case("floor_divide-number", lambda x: K.floor_divide(x, 3), npf(lambda x: x // 3), ints(5),
     grad=False)
for _name in ("greater", "less", "greater_equal", "less_equal", "equal", "not_equal"):
    _np = getattr(np, _name)
    case(f"{_name}-float", getattr(K, _name), npf(_np), ints(3, 4, low=0, high=3) * 1.0,
         ints(4, low=0, high=3) * 1.0, grad=False)
    _kern = getattr(K, _name)
    case(f"{_name}-int-number", lambda x, f=_kern: f(x, 1),
         npf(lambda x, f=_np: f(x, 1)), ints(2, 5, low=0, high=3), grad=False)
for _name in ("logical_and", "logical_or", "logical_xor"):
    case(f"{_name}", getattr(K, _name), npf(getattr(np, _name)), bools(3, 4), bools(3, 4),
         grad=False)
    case(f"{_name}-bcast", getattr(K, _name), npf(getattr(np, _name)), bools(2, 3, 4), bools(4),
         grad=False)
case("shift_left", K.shift_left, npf(np.left_shift), ints(3, 4), ints(3, 4, low=0, high=8),
     grad=False)
case("shift_right", K.shift_right, npf(np.right_shift), ints(3, 4, low=-100, high=100),
     ints(4, low=0, high=5), grad=False)
case("shift_left-number", lambda x: K.shift_left(x, 2), npf(lambda x: x << 2), ints(6),
     grad=False)


# elementwise unary
def _away_from_zero(*shape: int) -> np.ndarray:
    return pos(*shape) * np.where(bools(*shape), 1.0, -1.0)


_UNARY = {
    "negate": (torch.neg, rn),
    "absolute": (torch.abs, _away_from_zero),
    "exp": (torch.exp, rn),
    "log": (torch.log, pos),
    "sqrt": (torch.sqrt, pos),
    "square": (torch.square, rn),
    "sin": (torch.sin, rn),
    "cos": (torch.cos, rn),
    "reciprocal": (torch.reciprocal, _away_from_zero),
    "relu": (torch.relu, rn),
    "sigmoid": (torch.sigmoid, rn),
    "tanh": (torch.tanh, rn),
    "silu": (F.silu, rn),
    "softplus": (F.softplus, lambda *s: rn(*s) * 15),  # crosses PyTorch's threshold of 20
}
for _name, (_ref, _g) in _UNARY.items():
    for _s in ((7,), (2, 3, 4)):
        case(f"{_name}-{_s}", getattr(K, _name), _ref, _g(*_s))
for _name in ("exp", "sqrt", "sigmoid", "tanh", "reciprocal", "softplus"):
    case(f"{_name}-int-input", getattr(K, _name), lambda x, f=_UNARY[_name][0]: f(x.double()),
         ints(3, 4, low=1, high=5), grad=False)
for _s in ((7,), (3, 4)):
    case(f"sign-{_s}", K.sign, torch.sign, rn(*_s), grad=False)
    case(f"floor-{_s}", K.floor, torch.floor, rn(*_s) * 3, grad=False)
    case(f"logical_not-{_s}", K.logical_not, torch.logical_not, bools(*_s), grad=False)
    case(f"stop_gradient-{_s}", K.stop_gradient, lambda x: x, rn(*_s), grad=False)
case("floor-int", K.floor, lambda x: x, ints(3, 4), grad=False)
case("sign-int", K.sign, torch.sign, ints(3, 4), grad=False)
case("isnan", K.isnan, torch.isnan, np.array([[np.nan, 1.0, np.inf], [0.0, np.nan, -2.0]]),
     grad=False)
for _approx in (False, True):
    for _s in ((7,), (3, 4)):
        case(f"gelu-{_approx}-{_s}", lambda x, a=_approx: K.gelu(x, a),
             lambda x, a=_approx: F.gelu(x, approximate="tanh" if a else "none"), rn(*_s) * 2)
for _slope in (0.01, 0.2):
    case(f"leaky_relu-{_slope}", lambda x, s=_slope: K.leaky_relu(x, s),
         lambda x, s=_slope: F.leaky_relu(x, s), rn(3, 5))
for _lo, _hi in ((-0.5, 0.7), (None, 0.2), (-0.1, None), (None, None), (0.5, -0.5)):
    case(f"clamp-{_lo}-{_hi}", lambda x, lo=_lo, hi=_hi: K.clamp(x, lo, hi),
         lambda x, lo=_lo, hi=_hi: x if lo is None and hi is None else torch.clamp(x, lo, hi),
         rn(4, 5))
_WITH_NAN = np.array([[np.nan, 1.5, np.inf], [-np.inf, -0.25, 3.0]])
case("nan_to_num-defaults", lambda x: K.nan_to_num(x, 0.0, None, None), torch.nan_to_num,
     _WITH_NAN)
case("nan_to_num-values", lambda x: K.nan_to_num(x, 0.5, 9.0, -9.0),
     lambda x: torch.nan_to_num(x, 0.5, 9.0, -9.0), _WITH_NAN)
case("nan_to_num-finite", lambda x: K.nan_to_num(x, 0.0, None, None), torch.nan_to_num, rn(3, 4))
for _axis, _s in ((-1, (3, 5)), (0, (3, 5)), (1, (2, 4, 3))):
    case(f"softmax-{_axis}-{_s}", lambda x, a=_axis: K.softmax(x, a),
         lambda x, a=_axis: F.softmax(x, a), rn(*_s))
    case(f"log_softmax-{_axis}-{_s}", lambda x, a=_axis: K.log_softmax(x, a),
         lambda x, a=_axis: F.log_softmax(x, a), rn(*_s))

# cast and where
case("cast-float-int64", lambda x: K.cast(x, ml.int64), lambda x: x.to(torch.int64), rn(3, 4) * 5,
     grad=False)
case("cast-float-bool", lambda x: K.cast(x, ml.bool_), lambda x: x.to(torch.bool),
     ints(3, 4, low=-1, high=2) * 1.0, grad=False)
case("cast-int-float64", lambda x: K.cast(x, ml.float64), lambda x: x.to(torch.float64),
     ints(3, 4), grad=False)
case("cast-float-float32", lambda x: K.cast(x, ml.float32), lambda x: x.to(torch.float32),
     rn(3, 4), tol=1e-6)
case("cast-float-float64", lambda x: K.cast(x, ml.float64), lambda x: x, rn(3, 4))
case("where", K.where, torch.where, bools(3, 4), rn(3, 4), rn(3, 4))
case("where-bcast", K.where, torch.where, bools(3, 1), rn(4), rn(2, 3, 4))
case("where-numbers", lambda c, x: K.where(c, x, 0.5), lambda c, x: torch.where(c, x, 0.5),
     bools(3, 4), rn(3, 4))
case("where-number-left", lambda c, x: K.where(c, -1.0, x), lambda c, x: torch.where(c, -1.0, x),
     bools(4), rn(3, 4))

# linear algebra
for _sa, _sb in (((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                 ((4,), (2, 4, 3)),
                 ((2, 3, 4), (4,))):
    case(f"matmul-{_sa}-{_sb}", K.matmul, torch.matmul, rn(*_sa), rn(*_sb))
case("linear-bias", K.linear, F.linear, rn(5, 4), rn(3, 4), rn(3))
case("linear-3d", K.linear, F.linear, rn(2, 5, 4), rn(3, 4), rn(3))
case("linear-no-bias", lambda x, w: K.linear(x, w, None), lambda x, w: F.linear(x, w), rn(5, 4),
     rn(3, 4))


# reductions
def _dims(x: torch.Tensor, axis: Any) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(x.ndim))
    return (axis,) if isinstance(axis, int) else tuple(axis)


def _t_prod(x: torch.Tensor, axis: Any, keep: bool) -> torch.Tensor:
    for a in sorted((d % x.ndim for d in _dims(x, axis)), reverse=True):
        x = torch.prod(x, dim=a, keepdim=True)
    if not keep:
        x = x.reshape([s for i, s in enumerate(x.shape)
                       if i not in {d % x.ndim for d in _dims(x, axis)}])
    return x


_REDUCE = {
    "sum": lambda x, a, k: torch.sum(x, dim=_dims(x, a), keepdim=k),
    "mean": lambda x, a, k: torch.mean(x, dim=_dims(x, a), keepdim=k),
    "max": lambda x, a, k: torch.amax(x, dim=_dims(x, a), keepdim=k),
    "min": lambda x, a, k: torch.amin(x, dim=_dims(x, a), keepdim=k),
    "prod": _t_prod,
}
_AXES = [(None, False), (1, False), (-1, True), ((0, 2), False), ((0, -1), True)]
for _name, _ref in _REDUCE.items():
    _kern = getattr(K, _name)
    for _axis, _keep in _AXES:
        case(f"{_name}-{_axis}-{_keep}", lambda x, f=_kern, a=_axis, k=_keep: f(x, a, k),
             lambda x, f=_ref, a=_axis, k=_keep: f(x, a, k), pos(2, 3, 4))
case("sum-bool", lambda x: K.sum(x, None, False), lambda x: torch.sum(x), bools(3, 4), grad=False)
case("sum-int-axis", lambda x: K.sum(x, 0, False), lambda x: torch.sum(x, 0), ints(3, 4),
     grad=False)
for _axis, _keep in _AXES:
    for _corr in (0, 1):
        case(f"variance-{_axis}-{_keep}-{_corr}",
             lambda x, a=_axis, k=_keep, c=_corr: K.variance(x, a, k, c),
             lambda x, a=_axis, k=_keep, c=_corr: torch.var(x, dim=_dims(x, a), keepdim=k,
                                                             correction=c), rn(2, 3, 4))
for _name in ("argmax", "argmin"):
    _kern, _np = getattr(K, _name), getattr(np, _name)
    for _axis, _keep in ((None, False), (None, True), (1, False), (-1, True)):
        case(f"{_name}-{_axis}-{_keep}", lambda x, f=_kern, a=_axis, k=_keep: f(x, a, k),
             npf(lambda x, f=_np, a=_axis, k=_keep: f(x, axis=a, keepdims=k)),
             rn(3, 4, 5), grad=False)

# shape manipulation
for _shape in ((4, 6), (-1, 3), (2, -1, 2), (24,)):
    case(f"reshape-{_shape}", lambda x, s=_shape: K.reshape(x, s),
         lambda x, s=_shape: torch.reshape(x, s), rn(2, 3, 4))
for _axes in (None, (1, 0, 2), (2, 0, 1), (-1, 0, 1)):
    case(f"transpose-{_axes}", lambda x, a=_axes: K.transpose(x, a),
         lambda x, a=_axes: x.permute(*(reversed(range(x.ndim)) if a is None else a)), rn(2, 3, 4))
for _a1, _a2 in ((0, 2), (-1, 1), (1, 1)):
    case(f"swap_axes-{_a1}-{_a2}", lambda x, a=_a1, b=_a2: K.swap_axes(x, a, b),
         lambda x, a=_a1, b=_a2: torch.swapaxes(x, a, b), rn(2, 3, 4))
for _s, _e in ((0, -1), (1, -1), (0, 1), (1, 2), (-2, -1), (2, 2)):
    case(f"flatten-{_s}-{_e}", lambda x, s=_s, e=_e: K.flatten(x, s, e),
         lambda x, s=_s, e=_e: torch.flatten(x, s, e), rn(2, 3, 4, 2))
case("flatten-0d", lambda x: K.flatten(x, 0, -1), lambda x: torch.flatten(x), np.array(2.5))
for _axis in (None, 0, (0, 2), -1):
    case(f"squeeze-{_axis}", lambda x, a=_axis: K.squeeze(x, a),
         lambda x, a=_axis: torch.squeeze(x) if a is None else torch.squeeze(x, a), rn(1, 3, 1, 1))
for _axis in (0, 1, -1, -2):
    case(f"unsqueeze-{_axis}", lambda x, a=_axis: K.unsqueeze(x, a),
         lambda x, a=_axis: torch.unsqueeze(x, a), rn(3, 4))
for _src, _dst in (((3, 1), (2, 3, 4)), ((4,), (3, 4)), ((1, 1), (2, 2))):
    case(f"broadcast_to-{_src}-{_dst}", lambda x, s=_dst: K.broadcast_to(x, s),
         lambda x, s=_dst: torch.broadcast_to(x, s), rn(*_src))
case("concat-0", lambda a, b, c: K.concat(a, b, c, 0), lambda a, b, c: torch.cat([a, b, c], 0),
     rn(2, 3), rn(4, 3), rn(1, 3))
case("concat--1", lambda a, b: K.concat(a, b, -1), lambda a, b: torch.cat([a, b], -1),
     rn(2, 3, 2), rn(2, 3, 5))
case("concat-None", lambda a, b: K.concat(a, b, None),
     lambda a, b: torch.cat([a.flatten(), b.flatten()]), rn(2, 3), rn(4, 2))
case("concat-keyword", lambda a, b: K.concat(a, b, axis=1), lambda a, b: torch.cat([a, b], 1),
     rn(2, 3), rn(2, 1))
case("concat-one", lambda a: K.concat(a, 0), lambda a: a.clone(), rn(2, 3))


def _t_pad(x: torch.Tensor, pw: tuple[tuple[int, int], ...]) -> torch.Tensor:
    return F.pad(x, [v for pair in reversed(pw) for v in pair])


for _pw in (((1, 2), (0, 0)), ((0, 1), (3, 0)), ((1, 1), (0, 0), (2, 1))):
    case(f"pad-{_pw}", lambda x, p=_pw: K.pad(x, p), lambda x, p=_pw: _t_pad(x, p),
         rn(*(2, 3, 4)[:len(_pw)]))
for _index in (1, -1, slice(1, 3), slice(None, None, 2), (0, slice(1, None)), (None, Ellipsis, 1),
               (Ellipsis, None), (slice(None), None, -2, slice(0, 1)), (1, 2, 3)):
    case(f"indexer-{_index}", lambda x, i=_index: K.indexer(x, i), lambda x, i=_index: x[i],
         rn(3, 4, 5))


# convolution and pooling
def _t_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: tuple[int, ...],
            padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...],
            groups: int) -> torch.Tensor:
    nd = w.ndim - 2
    x = F.pad(x, [v for pair in reversed(padding) for v in pair])
    conv = F.conv1d if nd == 1 else F.conv2d
    return conv(x, w, b, stride, 0, dilation, groups)


_CONV1D = [  # input, weight, stride, padding, dilation, groups
    ((2, 3, 10), (4, 3, 3), (1,), ((1, 1),), (1,), 1),
    ((2, 3, 11), (4, 3, 4), (2,), ((2, 1),), (2,), 1),
    ((2, 6, 9), (6, 2, 3), (1,), ((0, 0),), (1,), 3),
    ((3, 10), (4, 3, 3), (3,), ((1, 2),), (1,), 1),  # unbatched
]
_CONV2D = [
    ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ((2, 4, 9, 8), (6, 2, 2, 3), (2, 1), ((0, 1), (2, 1)), (1, 2), 2),
    ((1, 4, 8, 8), (4, 1, 3, 3), (2, 2), ((1, 1), (0, 0)), (2, 1), 4),
    ((3, 7, 6), (2, 3, 3, 2), (1, 2), ((1, 0), (0, 1)), (1, 1), 1),  # unbatched
]
for _kind, _configs in (("conv1d", _CONV1D), ("conv2d", _CONV2D)):
    _kern = getattr(K, _kind)
    for _xs, _ws, _st, _pd, _dl, _gr in _configs:
        _cfg = (_st, _pd, _dl, _gr)
        case(f"{_kind}-{_xs}-{_ws}-{_cfg}",
             lambda x, w, b, f=_kern, c=_cfg: f(x, w, b, *c),
             lambda x, w, b, c=_cfg: _t_conv(x, w, b, *c), rn(*_xs), rn(*_ws), rn(_ws[0]))
    _xs, _ws, _st, _pd, _dl, _gr = _configs[1]
    case(f"{_kind}-no-bias", lambda x, w, f=_kern, c=(_st, _pd, _dl, _gr):
         f(x, w, None, *c), lambda x, w, c=(_st, _pd, _dl, _gr): _t_conv(x, w, None, *c),
         rn(*_xs), rn(*_ws))

for _xs, _k, _s, _p, _d in (((2, 3, 10), (2,), None, (0,), (1,)),
                            ((2, 3, 11), (3,), (2,), (1,), (2,)),
                            ((3, 9), (4,), (3,), (2,), (1,))):
    case(f"max_pool1d-{_xs}-{_k}-{_s}-{_p}-{_d}",
         lambda x, c=(_k, _s, _p, _d): K.max_pool1d(x, *c),
         lambda x, k=_k, s=_s, p=_p, d=_d: F.max_pool1d(x, k, s, p, d), rn(*_xs))
for _xs, _k, _s, _p, _d in (((2, 3, 8, 8), (2, 2), None, (0, 0), (1, 1)),
                            ((2, 2, 9, 7), (3, 2), (2, 1), (1, 1), (1, 2)),
                            ((3, 7, 8), (3, 3), (2, 3), (1, 0), (2, 1))):
    case(f"max_pool2d-{_xs}-{_k}-{_s}-{_p}-{_d}",
         lambda x, c=(_k, _s, _p, _d): K.max_pool2d(x, *c),
         lambda x, k=_k, s=_s, p=_p, d=_d: F.max_pool2d(x, k, s, p, d), rn(*_xs))
for _xs, _k, _s, _p in (((2, 3, 8, 8), (2, 2), None, (0, 0)),
                        ((2, 2, 9, 7), (3, 2), (2, 1), (1, 1)),
                        ((3, 7, 8), (3, 3), (2, 3), (1, 0))):
    case(f"avg_pool2d-{_xs}-{_k}-{_s}-{_p}", lambda x, c=(_k, _s, _p): K.avg_pool2d(x, *c),
         lambda x, k=_k, s=_s, p=_p: F.avg_pool2d(x, k, s, p), rn(*_xs))


# normalisation
def _t_bn(x: torch.Tensor, w: Any, b: Any, rm: Any, rv: Any, momentum: float, eps: float,
          training: bool) -> tuple[Any, Any, Any]:
    rm = None if rm is None else rm.detach().clone()
    rv = None if rv is None else rv.detach().clone()
    if not training and rm is None:  # inference without statistics normalises by the batch
        return F.batch_norm(x, None, None, w, b, True, momentum, eps), None, None
    out = F.batch_norm(x, rm, rv, w, b, training, momentum, eps)
    return out, rm, rv


for _train, _kern in ((True, K.batch_norm), (False, K.batch_norm_inference)):
    for _xs in ((6, 3), (2, 3, 4, 5)):
        _c = _xs[1]
        case(f"{_kern.__name__}-{_xs}",
             lambda x, w, b, rm, rv, f=_kern: f(x, w, b, rm, rv, 0.2, 1e-4),
             lambda x, w, b, rm, rv, t=_train: _t_bn(x, w, b, rm, rv, 0.2, 1e-4, t),
             rn(*_xs), rn(_c), rn(_c), rn(_c), pos(_c), nograd=(3, 4))
    case(f"{_kern.__name__}-no-stats", lambda x, w, b, f=_kern: f(x, w, b, None, None, 0.1, 1e-5),
         lambda x, w, b, t=_train: _t_bn(x, w, b, None, None, 0.1, 1e-5, t),
         rn(4, 3, 5), rn(3), rn(3))
    case(f"{_kern.__name__}-no-affine",
         lambda x, rm, rv, f=_kern: f(x, None, None, rm, rv, 0.1, 1e-5),
         lambda x, rm, rv, t=_train: _t_bn(x, None, None, rm, rv, 0.1, 1e-5, t),
         rn(5, 2, 3), rn(2), pos(2), nograd=(1, 2))
for _xs, _ns in (((2, 3, 4), (4,)), ((2, 3, 4), (3, 4)), ((5, 6), (6,))):
    case(f"layer_norm-{_xs}-{_ns}", lambda x, w, b, n=_ns: K.layer_norm(x, w, b, n, 1e-5),
         lambda x, w, b, n=_ns: F.layer_norm(x, n, w, b, 1e-5), rn(*_xs), rn(*_ns), rn(*_ns))
case("layer_norm-no-affine", lambda x: K.layer_norm(x, None, None, (4,), 1e-3),
     lambda x: F.layer_norm(x, (4,), None, None, 1e-3), rn(3, 4))
for _xs, _g in (((2, 6, 5), 3), ((2, 4, 3, 3), 2), ((3, 4), 4)):
    case(f"group_norm-{_xs}-{_g}", lambda x, w, b, g=_g: K.group_norm(x, w, b, g, 1e-5),
         lambda x, w, b, g=_g: F.group_norm(x, g, w, b, 1e-5), rn(*_xs), rn(_xs[1]), rn(_xs[1]))
case("group_norm-no-affine", lambda x: K.group_norm(x, None, None, 2, 1e-5),
     lambda x: F.group_norm(x, 2, None, None, 1e-5), rn(2, 4, 5))

# embedding and attention
case("embedding-2d", K.embedding, F.embedding, ints(2, 6, low=0, high=5), rn(5, 4))
case("embedding-1d", K.embedding, F.embedding, ints(7, low=0, high=3), rn(3, 2))


def _mask(*shape: int) -> np.ndarray:
    m = bools(*shape)
    m[..., 0] = True  # every query attends somewhere
    return m


_Q, _KV = (2, 3, 5, 8), (2, 3, 6, 8)
case("sdp-plain", lambda q, k, v: K.scaled_dot_product(q, k, v, None, False, None),
     F.scaled_dot_product_attention, rn(*_Q), rn(*_KV), rn(2, 3, 6, 7))
case("sdp-scale", lambda q, k, v: K.scaled_dot_product(q, k, v, None, False, 0.3),
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3), rn(4, 6), rn(5, 6),
     rn(5, 3))
case("sdp-causal", lambda q, k, v: K.scaled_dot_product(q, k, v, None, True, None),
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), rn(2, 5, 4),
     rn(2, 5, 4), rn(2, 5, 3))
case("sdp-causal-rect", lambda q, k, v: K.scaled_dot_product(q, k, v, None, True, None),
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), rn(2, 4, 4),
     rn(2, 6, 4), rn(2, 6, 3))
case("sdp-bool-mask", lambda q, k, v, m: K.scaled_dot_product(q, k, v, m, False, None),
     lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), rn(*_Q), rn(*_KV),
     rn(2, 3, 6, 7), _mask(5, 6))
case("sdp-float-mask", lambda q, k, v, m: K.scaled_dot_product(q, k, v, m, False, None),
     lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), rn(*_Q), rn(*_KV),
     rn(2, 3, 6, 7), rn(3, 5, 6), nograd=(3,))


# ---- the checks ----------------------------------------------------------------------------------
def _torch_in(a: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(a).requires_grad_(requires_grad)


def assert_close(got: Any, ref: Any, tol: float = 1e-9, what: str = "") -> None:
    """``got`` (JAX) equals ``ref`` (torch or NumPy), kind, shape and values."""
    if ref is None:
        assert got is None, what
        return
    if isinstance(ref, tuple | list):
        assert isinstance(got, tuple | list) and len(got) == len(ref), what
        for g, r in zip(got, ref, strict=True):
            assert_close(g, r, tol, what)
        return
    r = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    g = np.asarray(got)
    assert g.shape == r.shape, (what, g.shape, r.shape)
    assert g.dtype.kind == r.dtype.kind, (what, g.dtype, r.dtype)
    if r.dtype.kind == "f":
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol, err_msg=what)
    else:
        np.testing.assert_array_equal(g, r, err_msg=what)


def _cotangents(out: Any, t_out: Any, rng: np.random.Generator) -> tuple[Any, list[Any]]:
    """Random cotangents for the differentiable outputs (zeros for the others), JAX and torch."""
    outs, t_outs = (out, t_out) if isinstance(out, tuple) else ((out,), (t_out,))
    cot: list[Any] = []
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for o, t in zip(outs, t_outs, strict=True):
        if o is None:
            cot.append(None)
        elif t.requires_grad:
            g = rng.standard_normal(o.shape)
            cot.append(jnp.asarray(g, o.dtype))
            pairs.append((t, torch.tensor(g, dtype=t.dtype)))
        else:
            cot.append(jnp.zeros(o.shape, o.dtype))
    return (tuple(cot) if isinstance(out, tuple) else cot[0]), pairs


@dataclass
class _Prepared:
    """One case ready to run: the JAX function of (differentiated inputs, cotangent) and the
    torch reference with the matching cotangent."""

    case: Case
    run: Callable[[list[jax.Array], Any], tuple[Any, Any]]
    primals: list[jax.Array]
    cot: Any
    wrt: list[int]
    t_in: list[torch.Tensor]
    t_out: Any
    pairs: list[tuple[torch.Tensor, torch.Tensor]]


def _prepare(c: Case) -> _Prepared:
    """Build the jittable JAX side and evaluate the torch side of one case."""
    wrt = ([i for i, a in enumerate(c.inputs) if a.dtype.kind == "f" and i not in c.nograd]
           if c.grad else list(range(len(c.inputs))))

    def fn(*diff: jax.Array) -> Any:
        args: list[Any] = [jnp.asarray(a) for a in c.inputs]
        for i, d in zip(wrt, diff, strict=True):
            args[i] = d
        return c.jax_fn(*args)

    def run(primals: list[jax.Array], cot: Any) -> tuple[Any, Any]:
        if not c.grad:
            return fn(*primals), None
        out, back = jax.vjp(fn, *primals)
        return out, back(cot)

    primals = [jnp.asarray(c.inputs[i]) for i in wrt]
    t_in = [_torch_in(a, c.grad and i in wrt) for i, a in enumerate(c.inputs)]
    t_out = c.ref_fn(*t_in)
    cot, pairs = None, []
    if c.grad:
        cot, pairs = _cotangents(jax.eval_shape(fn, *primals), t_out,
                                 np.random.default_rng(zlib.crc32(c.id.encode())))
    return _Prepared(c, run, primals, cot, wrt, t_in, t_out, pairs)


GROUPS: dict[str, list[Case]] = {}
for _c in CASES:
    GROUPS.setdefault(_c.id.split("-")[0], []).append(_c)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_kernel(group: str) -> None:
    """Each case of the kernel, jitted with its scalars as constants, matches the float64
    reference; for differentiable kernels ``jax.vjp`` matches torch autograd.

    All cases of one kernel share a single ``jax.jit`` compilation to keep the test fast.
    """
    prepared = [_prepare(c) for c in GROUPS[group]]
    results = jax.jit(lambda inputs: [p.run(*args) for p, args in zip(
        prepared, inputs, strict=True)])([(p.primals, p.cot) for p in prepared])
    for p, (out, grads) in zip(prepared, results, strict=True):
        c = p.case
        assert_close(out, p.t_out, c.tol, c.id)
        if not c.grad:
            continue
        ref = torch.autograd.grad([t for t, _ in p.pairs], [p.t_in[i] for i in p.wrt],
                                  [g for _, g in p.pairs], allow_unused=True)
        for i, g, r in zip(p.wrt, grads, ref, strict=True):
            assert_close(g, torch.zeros_like(p.t_in[i]) if r is None else r, c.tol,
                         f"{c.id}: gradient of input {i}")


def test_stop_gradient_blocks_gradient() -> None:
    x = jnp.asarray(rn(3, 4))
    (grad,) = jax.vjp(lambda x: K.stop_gradient(x) * x, x)[1](jnp.ones((3, 4)))
    np.testing.assert_allclose(np.asarray(grad), np.asarray(x), rtol=1e-12)


def test_gradients_against_finite_differences() -> None:
    """Spot checks of a few kernels against central finite differences (independent of torch)."""
    x0 = rn(2, 3, 5, 5)
    w0 = rn(4, 3, 3, 3) * 0.3

    def loss(x: np.ndarray) -> float:
        y = K.conv2d(jnp.asarray(x), jnp.asarray(w0), None, (1, 2), ((1, 0), (1, 1)), (1, 1), 1)
        y = K.max_pool2d(K.tanh(y), (2, 2), None, (1, 1), (1, 1))
        return float(K.sum(K.softplus(y), None, False))

    grad = jax.grad(lambda x: K.sum(K.softplus(K.max_pool2d(K.tanh(K.conv2d(
        x, jnp.asarray(w0), None, (1, 2), ((1, 0), (1, 1)), (1, 1), 1)), (2, 2), None, (1, 1),
        (1, 1))), None, False))(jnp.asarray(x0))
    eps = 1e-6
    for idx in [(0, 0, 0, 0), (1, 2, 3, 4), (0, 1, 2, 2), (1, 0, 4, 1)]:
        xp, xm = x0.copy(), x0.copy()
        xp[idx] += eps
        xm[idx] -= eps
        fd = (loss(xp) - loss(xm)) / (2 * eps)
        assert abs(float(grad[idx]) - fd) < 1e-6


# ---- kernels with Python results, constants and randomness --------------------------------------
def test_float32_stays_float32_with_python_numbers() -> None:
    x = jnp.ones((2, 2), jnp.float32)
    for out in (K.add(x, 2.0), K.multiply(3, x), K.divide(x, 2), K.power(x, 2.0),
                K.clamp(x, 0.0, 0.5), K.leaky_relu(x, 0.1), K.where(x > 0, x, 0.0)):
        assert out.dtype == jnp.float32


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_low_precision_kernels_keep_their_dtype(dtype: Any) -> None:
    """Kernels run in half precisions, keep the dtype and stay close to float64."""
    x, w, b = rn(2, 3, 6, 6), rn(4, 3, 3, 3) * 0.3, rn(4)
    lw, lb = rn(6, 4), rn(6)

    def net(x: jax.Array, w: jax.Array, b: jax.Array, lw: jax.Array, lb: jax.Array) -> Any:
        y = K.conv2d(x, w, b, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
        y, _, _ = K.batch_norm(y, None, None, None, None, 0.1, 1e-5)
        y = K.max_pool2d(K.gelu(y, False), (2, 2), None, (0, 0), (1, 1))
        y = K.linear(K.swap_axes(K.flatten(y, 2, -1), 1, 2), lw, lb)
        return K.softmax(K.layer_norm(y, None, None, (6,), 1e-5), -1)

    args = [x, w, b, lw, lb]
    low = jax.jit(net)(*(jnp.asarray(a, dtype) for a in args))
    high = jax.jit(net)(*(jnp.asarray(a) for a in args))
    assert low.dtype == dtype
    np.testing.assert_allclose(np.asarray(low, np.float64), np.asarray(high), atol=3e-2)


def test_size_and_item_return_python_values() -> None:
    x = jnp.zeros((2, 3, 4))
    assert K.size(x, None) == 24 and isinstance(K.size(x, None), int)
    assert K.size(x, 1) == 3 and K.size(x, -1) == 4
    assert isinstance(K.size(x, 0), int)
    assert jax.jit(lambda x: x * K.size(x, -1))(x).shape == (2, 3, 4)  # static under jit
    value = K.item(jnp.asarray([[2.5]]))
    assert value == 2.5 and isinstance(value, float)
    assert K.item(jnp.asarray(7)) == 7 and isinstance(K.item(jnp.asarray(7)), int)


def test_indexer_on_python_sequences() -> None:
    assert K.indexer((4, 5, 6), 1) == 5
    assert K.indexer([4, 5, 6], slice(1, None)) == [5, 6]


@pytest.mark.parametrize("value, dtype, expected", [
    (2.5, jnp.float32, np.float32(2.5)),
    ([[1.0, 2.0], [3.0, 4.5]], jnp.float64, np.array([[1.0, 2.0], [3.0, 4.5]])),
    ([1, 2, 3], jnp.float32, np.array([1, 2, 3], np.int64)),
    (3, jnp.float32, np.int64(3)),
    ([True, False], jnp.float32, np.array([True, False])),
    ([1, 2.5], jnp.float16, np.array([1.0, 2.5], np.float16)),
    ([], jnp.float32, np.zeros(0, np.float32)),
])
def test_to_tensor(value: Any, dtype: Any, expected: np.ndarray) -> None:
    got = jax.jit(lambda: K.to_tensor(value, float_dtype=dtype))()
    assert np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_dropout_statistics_and_gradient() -> None:
    x = jnp.ones((300, 300))
    key = jax.random.key(3)
    out = np.asarray(jax.jit(lambda x, k: K.dropout(x, 0.3, k))(x, key))
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-12)
    np.testing.assert_array_equal(out, np.asarray(K.dropout(x, 0.3, key)))  # same key, same mask
    assert not np.array_equal(out, np.asarray(K.dropout(x, 0.3, jax.random.key(4))))
    (grad,) = jax.vjp(lambda x: K.dropout(x, 0.3, key), x)[1](jnp.ones_like(x))
    np.testing.assert_allclose(np.asarray(grad), out, rtol=1e-12)
    assert K.dropout(x, 0.0, None) is not None
    np.testing.assert_array_equal(np.asarray(K.dropout(x, 0.0, key)), np.asarray(x))


def test_dropout_keeps_dtype_and_inference_is_identity() -> None:
    x = jnp.asarray(rn(4, 5), jnp.float32)
    assert K.dropout(x, 0.5, jax.random.key(0)).dtype == jnp.float32
    assert K.dropout_inference(x, 0.5) is x
    assert K.dropout_inference(x, 0.5, jax.random.key(0)) is x


def test_split_rng() -> None:
    key = jax.random.key(0)
    keys = K.split_rng(key, 3)
    assert len(keys) == 3
    draws = [np.asarray(jax.random.normal(k, (4,))) for k in keys]
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[1], draws[2])
    a, b = jax.jit(lambda k: tuple(K.split_rng(k, 2)))(key)
    np.testing.assert_array_equal(np.asarray(jax.random.normal(a, (4,))), draws[0])
    assert b is not None


def test_batch_norm_training_needs_two_values_per_channel() -> None:
    x = jnp.ones((1, 3))
    with pytest.raises(ValueError, match="more than one value"):
        K.batch_norm(x, None, None, jnp.zeros(3), jnp.ones(3), 0.1, 1e-5)


# ---- the catalogue walk ------------------------------------------------------------------------
def test_every_primitive_has_a_kernel_with_the_catalogue_signature() -> None:
    for op in tensor_ops():
        kernel = K.registry.kernels.get((op.name, "default"))
        if kernel is None:  # a derived primitive JAX runs from its decomposition
            assert not op.core, f"no JAX kernel for {op.name}"
            continue
        if not getattr(kernel, "__module__", "").startswith("mithril."):  # jnp.exp, jnp.add, ...
            inspect.signature(kernel).bind(*op.input_names)  # takes the terminals positionally
            continue
        params = list(inspect.signature(kernel).parameters.values())
        if op.variadic:
            assert params[0].kind is inspect.Parameter.VAR_POSITIONAL, op.name
            continue
        names = [p.name for p in params[:len(op.inputs)]]
        assert names == list(op.input_names), (op.name, names, op.input_names)
        if op.random:
            assert params[len(op.inputs)].name == "rng", op.name
        if op.modal:
            assert callable(K.registry.kernels.get((op.name, "inference"))), op.name
    assert callable(K.split_rng)


def test_kernel_table_covers_catalogue_and_binds_to_tensor() -> None:
    backend = JaxBackend(dtype=ml.float32)
    table = backend.kernel_table()
    assert {op.name for op in tensor_ops()} <= set(table)
    assert table["to_tensor"](1.5).dtype == jnp.float32
    assert JaxBackend(dtype=ml.float64).kernel_table()["to_tensor"]([1.5]).dtype == jnp.float64
    assert table["to_tensor"]([1, 2]).dtype == jnp.int64


_EXPR_INPUTS: dict[str, tuple[Any, ...]] = {
    "logical_and": (bools(3, 4), bools(3, 4)),
    "logical_or": (bools(3, 4), bools(4)),
    "logical_xor": (bools(3, 4), True),
    "shift_left": (ints(3, 4), ints(3, 4, low=0, high=5)),
    "shift_right": (ints(3, 4), 2),
    "floor_divide": (rn(3, 4), pos(4)),
    "power": (pos(3, 4), rn(3, 4)),
    "divide": (3, pos(3, 4)),
    "negate": (rn(3, 4),),
    "matmul": (rn(2, 3, 4), rn(4, 5)),
    "indexer": (rn(3, 4), (slice(1, None), None, -1)),
}


@pytest.mark.parametrize("name", sorted(JaxBackend.exprs))
def test_exprs_match_kernels(name: str) -> None:
    """Operator templates compute exactly what the kernel computes."""
    args = _EXPR_INPUTS.get(name, (rn(3, 4), 0.5))
    values = [jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    if name == "indexer":
        got = eval(JaxBackend.exprs[name].format("a", "i"), {"a": values[0], "i": values[1]})
    else:
        names = {f"a{i}": v for i, v in enumerate(values)}
        got = eval(JaxBackend.exprs[name].format(*names), dict(names))
    expected = getattr(K, name)(*values)
    assert np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


# ---- vjp_fn and wrap_jit -----------------------------------------------------------------------
def _forward(params: dict[str, Any], data: dict[str, Any], state: dict[str, Any],
             rng: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    out = K.linear(data["x"], params["w"], params["b"])
    hidden = K.dropout(K.tanh(out), 0.25, rng)
    loss = K.sum(K.multiply(hidden, hidden), None, False)
    return ({"output": out, "loss": loss, "argmax": K.argmax(out, -1, False)},
            {"count": K.add(state["count"], 1)})


def _params(batch: int = 5) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    params = {"w": jnp.asarray(rn(3, 4)), "b": jnp.asarray(rn(3)), "unused": jnp.asarray(rn(2, 2)),
              "steps": jnp.asarray(np.arange(3))}
    data = {"x": jnp.asarray(rn(batch, 4))}
    state = {"count": jnp.asarray(0)}
    return params, data, state


def _torch_grads(params: dict[str, Any], data: dict[str, Any], grad_out: np.ndarray | None,
                 grad_loss: float | None, mask: np.ndarray) -> dict[str, np.ndarray]:
    w = torch.tensor(np.asarray(params["w"]), requires_grad=True)
    b = torch.tensor(np.asarray(params["b"]), requires_grad=True)
    out = F.linear(torch.tensor(np.asarray(data["x"])), w, b)
    total = torch.zeros((), dtype=torch.float64)
    if grad_out is not None:
        total = total + (out * torch.tensor(grad_out)).sum()
    if grad_loss is not None:
        hidden = torch.tanh(out) * torch.tensor(mask) / 0.75
        total = total + grad_loss * (hidden * hidden).sum()
    gw, gb = torch.autograd.grad(total, [w, b])
    return {"w": gw.numpy(), "b": gb.numpy()}


@pytest.mark.parametrize("jit", [False, True])
def test_vjp_fn_matches_torch(jit: bool) -> None:
    fn = BACKEND.vjp_fn(_forward)
    if jit:
        fn = BACKEND.wrap_jit(fn)
    params, data, state = _params()
    rng = jax.random.key(11)
    grad_out = rn(5, 3)
    outputs, new_state, grads = fn(params, data, state, rng, {"output": jnp.asarray(grad_out)})
    assert set(grads) == set(params)
    np.testing.assert_allclose(np.asarray(outputs["output"]), np.asarray(
        K.linear(data["x"], params["w"], params["b"])), rtol=1e-12)
    assert int(new_state["count"]) == 1
    mask = np.asarray(K.dropout(jnp.ones((5, 3)), 0.25, rng)) != 0
    ref = _torch_grads(params, data, grad_out, None, mask)
    for k in ("w", "b"):
        np.testing.assert_allclose(np.asarray(grads[k]), ref[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(grads["unused"]), np.zeros((2, 2)))
    np.testing.assert_array_equal(np.asarray(grads["steps"]), np.zeros(3))
    assert grads["steps"].dtype == params["steps"].dtype
    # two outputs at once, the scalar loss with a plain Python number as its gradient
    _, _, grads2 = fn(params, data, state, rng, {"output": jnp.asarray(grad_out), "loss": 2.0})
    ref2 = _torch_grads(params, data, grad_out, 2.0, mask)
    for k in ("w", "b"):
        np.testing.assert_allclose(np.asarray(grads2[k]), ref2[k], rtol=1e-10, atol=1e-12)


def test_vjp_fn_only_loss_and_int_outputs_ignored() -> None:
    fn = BACKEND.wrap_jit(BACKEND.vjp_fn(_forward))
    params, data, state = _params()
    rng = jax.random.key(5)
    outputs, _, grads = fn(params, data, state, rng, {"loss": jnp.asarray(1.0),
                                                        "argmax": jnp.zeros(5, jnp.int64)})
    mask = np.asarray(K.dropout(jnp.ones((5, 3)), 0.25, rng)) != 0
    ref = _torch_grads(params, data, None, 1.0, mask)
    for k in ("w", "b"):
        np.testing.assert_allclose(np.asarray(grads[k]), ref[k], rtol=1e-10, atol=1e-12)
    assert outputs["argmax"].shape == (5,)


def test_vjp_fn_jit_recompiles_for_new_shapes_and_rejects_unknown_outputs() -> None:
    fn = BACKEND.wrap_jit(BACKEND.vjp_fn(_forward))
    for batch in (2, 7):
        params, data, state = _params(batch)
        outputs, _, grads = fn(params, data, state, jax.random.key(0),
                               {"output": jnp.ones((batch, 3))})
        assert outputs["output"].shape == (batch, 3)
        np.testing.assert_allclose(np.asarray(grads["b"]), np.full(3, batch), rtol=1e-12)
    with pytest.raises(InputError, match="nope"):
        fn(params, data, state, jax.random.key(0), {"nope": jnp.ones(3)})


def test_wrap_jit_with_dicts_of_arrays() -> None:
    calls = []

    def fn(params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        return {"y": K.matmul(data["x"], params["w"]), "n": K.size(data["x"], 0)}

    jitted = BACKEND.wrap_jit(fn)
    w = BACKEND.randn(4, 2)
    for batch in (3, 3, 6):
        out = jitted({"w": w}, {"x": BACKEND.ones(batch, 4)})
        np.testing.assert_allclose(np.asarray(out["y"]),
                                   np.ones((batch, 4)) @ BACKEND.to_numpy(w), rtol=1e-12)
        assert int(out["n"]) == batch
    assert len(calls) == 2  # traced once per shape


# ---- the backend class -------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "gpu", "mps", "tpu", "cpu:5"])
def test_unavailable_devices_raise(device: str) -> None:
    with pytest.raises(BackendUnavailableError):
        JaxBackend(device=device)


def test_bad_device_names_and_meshes() -> None:
    with pytest.raises(ValueError):
        JaxBackend(device="quantum")
    with pytest.raises(ml.BackendUnavailableError, match="XLA_FLAGS"):
        JaxBackend(device_mesh=(2,))
    with pytest.raises(TypeError):
        JaxBackend(dtype=ml.int64)


def test_arrays_live_on_the_chosen_device() -> None:
    backend = JaxBackend(device="cpu:0")
    cpu = jax.devices("cpu")[0]
    assert backend.jax_device == cpu
    for x in (backend.ones(2), backend.array([1, 2]), backend.randn(3), backend.arange(4)):
        assert x.devices() == {cpu}


def test_x64_enabled_but_default_float_is_backend_dtype() -> None:
    backend = JaxBackend()  # float32 (x64 on by the fixture: ints are int64)
    assert jax.config.jax_enable_x64
    assert backend.name == "jax"
    assert backend.ones(2, 3).dtype == jnp.float32
    assert backend.array([1.5, 2.0]).dtype == jnp.float32
    assert backend.array(np.zeros(3)).dtype == jnp.float32
    assert backend.arange(0.0, 1.0, 0.25).dtype == jnp.float32
    assert backend.array([1, 2]).dtype == jnp.int64
    assert backend.arange(5).dtype == jnp.int64
    assert backend.randint(0, 5, (3,)).dtype == jnp.int64
    assert backend.array([True]).dtype == jnp.bool_
    assert JaxBackend(dtype=ml.float64).zeros(2).dtype == jnp.float64
    assert JaxBackend(dtype=ml.bfloat16).ones(2).dtype == jnp.bfloat16
    assert JaxBackend(dtype=ml.float16).rand(2).dtype == jnp.float16


@pytest.mark.parametrize("dtype, native", [
    (ml.float16, jnp.float16), (ml.bfloat16, jnp.bfloat16), (ml.float32, jnp.float32),
    (ml.float64, jnp.float64), (ml.int32, jnp.int32), (ml.int64, jnp.int64),
    (ml.uint8, jnp.uint8), (ml.bool_, jnp.bool_),
])
def test_dtypes(dtype: ml.Dtype, native: Any) -> None:
    backend = JaxBackend()
    assert backend.native_dtype(dtype) == native
    x = backend.ones(2, 3, dtype=dtype)
    assert x.dtype == native
    np.testing.assert_array_equal(backend.to_numpy(x), np.ones((2, 3)))
    y = backend.array([[0, 1], [1, 0]], dtype=dtype)
    assert y.dtype == native
    np.testing.assert_array_equal(backend.to_numpy(y), [[0, 1], [1, 0]])
    assert backend.cast(backend.zeros(3), dtype).dtype == native
    assert backend.zeros(4, dtype=dtype).dtype == native


def test_bfloat16_to_numpy_is_float32() -> None:
    backend = JaxBackend(dtype=ml.bfloat16)
    out = backend.to_numpy(backend.array([1.5, -2.0]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.5, -2.0])


def test_creators_follow_the_seed() -> None:
    backend = JaxBackend(dtype=ml.float64)
    backend.set_seed(42)
    ref = np.random.default_rng(42)
    np.testing.assert_allclose(backend.to_numpy(backend.randn(3, 2)), ref.standard_normal((3, 2)))
    np.testing.assert_allclose(backend.to_numpy(backend.rand(4)), ref.random(4))
    r = backend.to_numpy(backend.randint(-3, 3, (50,)))
    assert r.dtype == np.int64 and r.min() >= -3 and r.max() < 3
    backend.set_seed(42)
    np.testing.assert_allclose(backend.to_numpy(backend.randn(3, 2)),
                               np.random.default_rng(42).standard_normal((3, 2)))
    np.testing.assert_array_equal(backend.to_numpy(backend.arange(2, 8, 2)), [2, 4, 6])
    np.testing.assert_allclose(backend.to_numpy(backend.arange(0.0, 1.0, 0.5)), [0.0, 0.5])
    np.testing.assert_array_equal(backend.to_numpy(backend.zeros((2, 2))), np.zeros((2, 2)))
    t = torch.arange(3.0)
    np.testing.assert_array_equal(backend.to_numpy(backend.array(t)), [0.0, 1.0, 2.0])
    assert isinstance(backend.to_numpy(backend.ones(1)), np.ndarray)


def test_next_rng_gives_fresh_keys_reproducibly() -> None:
    backend = JaxBackend()
    backend.set_seed(7)
    first = [np.asarray(jax.random.uniform(backend.next_rng(), (3,))) for _ in range(3)]
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    backend.set_seed(7)
    again = [np.asarray(jax.random.uniform(backend.next_rng(), (3,))) for _ in range(3)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    backend.set_seed(8)
    assert not np.array_equal(np.asarray(jax.random.uniform(backend.next_rng(), (3,))), first[0])
    out = K.dropout(jnp.ones(100), 0.5, backend.next_rng())
    assert 0 < float(jnp.sum(out == 0)) < 100


def test_lazy_import_from_the_package() -> None:
    assert ml.JaxBackend is JaxBackend
    assert math.isclose(float(ml.JaxBackend().array(2.5)), 2.5)
    assert ml.JaxBackend().ones(()).shape == ()
