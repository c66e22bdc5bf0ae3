"""The PyTorch backend: kernels against NumPy float64 references, gradients against finite
differences (``torch.autograd.gradcheck`` and hand-written central differences), and the
``TorchBackend`` array, device, random, autodiff and JIT hooks."""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import mithril as ml
from mithril.backends.torch import TorchBackend
from mithril.backends.torch import kernels as kn
from mithril.errors import BackendUnavailableError
from mithril.framework.ops import tensor_ops
from mithril.framework.ops.base import SCALAR
from tests.backends.kernel_view import KernelView

kn = KernelView(kn, TorchBackend)  # type: ignore[assignment]

SHAPES = [(3,), (2, 5), (2, 3, 4)]
PAIR_SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((5, 1), (1, 6))]
EXTRA_KERNELS = ("batch_norm_inference", "dropout_inference", "split_rng")


def rnd(*shape: int, seed: int = 0, lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    """Uniform float64 samples in ``[lo, hi)``."""
    return np.random.default_rng(seed).uniform(lo, hi, shape)


def tt(a: Any) -> torch.Tensor:
    """A torch tensor with the same dtype and values as NumPy ``a``."""
    return torch.from_numpy(np.array(a))


def check(out: Any, ref: Any, atol: float = 1e-10, rtol: float = 1e-10) -> None:
    """``out`` (a tensor) equals the NumPy reference ``ref`` in shape and value."""
    got = out.detach().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64),
                               atol=atol, rtol=rtol)


# ----------------------------------------------------------------------------------------------
# Coverage and signatures
# ----------------------------------------------------------------------------------------------
def test_every_tensor_primitive_has_a_kernel() -> None:
    missing = [op.name for op in tensor_ops()
               if op.core and (op.name, "default") not in kn.registry.kernels]
    missing += [n for n in EXTRA_KERNELS if not callable(getattr(kn, n, None))]
    assert not missing


@pytest.mark.parametrize("op", [op for op in tensor_ops() if not op.variadic
                                and (op.name, "default") in kn.registry.kernels],
                         ids=lambda op: op.name)
def test_kernel_arguments_follow_catalogue_order(op: Any) -> None:
    kernel = kn.registry.kernels[(op.name, "default")]
    names = [*op.input_names, *(["rng"] if op.random else [])]
    if not (getattr(kernel, "__module__", None) or "").startswith("mithril."):  # torch.exp, ...
        try:
            signature = inspect.signature(kernel)
        except ValueError:  # a C builtin: call it with the catalogue's terminals, in order
            kernel(*[torch.eye(2, dtype=torch.float64) if t.kind != SCALAR else t.default
                     for t in op.inputs])
            return
        signature.bind(*names)  # takes the catalogue's terminals positionally, in order
        return
    params = [p.name for p in inspect.signature(kernel).parameters.values()
              if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert params == names
    if op.modal:
        inference = inspect.signature(getattr(kn, f"{op.name}_inference")).parameters
        assert list(inference)[: len(op.input_names)] == list(op.input_names)


# ----------------------------------------------------------------------------------------------
# Binary elementwise
# ----------------------------------------------------------------------------------------------
def _pos(a: np.ndarray) -> np.ndarray:
    return np.abs(a) + 0.5


ARITH: dict[str, tuple[Callable[..., Any], Callable[[np.ndarray], np.ndarray],
                       Callable[[np.ndarray], np.ndarray]]] = {
    # name: (reference, left transform, right transform)
    "add": (lambda a, b: a + b, lambda a: a, lambda b: b),
    "subtract": (lambda a, b: a - b, lambda a: a, lambda b: b),
    "multiply": (lambda a, b: a * b, lambda a: a, lambda b: b),
    "divide": (lambda a, b: a / b, lambda a: a, _pos),
    "floor_divide": (lambda a, b: np.floor(a / b), lambda a: a * 5, _pos),
    "power": (lambda a, b: np.exp(b * np.log(a)), _pos, lambda b: b),
    "minimum": (lambda a, b: np.where(a < b, a, b), lambda a: a, lambda b: b),
    "maximum": (lambda a, b: np.where(a > b, a, b), lambda a: a, lambda b: b),
    "greater": (lambda a, b: a > b, lambda a: a, lambda b: b),
    "less": (lambda a, b: a < b, lambda a: a, lambda b: b),
    "greater_equal": (lambda a, b: a >= b, lambda a: np.round(a), lambda b: np.round(b)),
    "less_equal": (lambda a, b: a <= b, lambda a: np.round(a), lambda b: np.round(b)),
    "equal": (lambda a, b: a == b, lambda a: np.round(a), lambda b: np.round(b)),
    "not_equal": (lambda a, b: a != b, lambda a: np.round(a), lambda b: np.round(b)),
}


@pytest.mark.parametrize("name", list(ARITH))
@pytest.mark.parametrize("shapes", PAIR_SHAPES)
def test_binary_arithmetic(name: str, shapes: tuple[tuple[int, ...], ...]) -> None:
    ref, fl, fr = ARITH[name]
    a, b = fl(rnd(*shapes[0], seed=1)), fr(rnd(*shapes[1], seed=2))
    check(getattr(kn, name)(tt(a), tt(b)), ref(a, b))


@pytest.mark.parametrize("name", list(ARITH))
def test_binary_with_python_numbers_on_either_side(name: str) -> None:
    ref, fl, fr = ARITH[name]
    a, b = fl(rnd(2, 3, seed=3)), fr(rnd(2, 3, seed=4))
    num_l, num_r = float(fl(np.array(1.5))), float(fr(np.array(1.5)))
    fn = getattr(kn, name)
    check(fn(tt(a), num_r), ref(a, num_r))
    check(fn(num_l, tt(b)), ref(num_l, b))
    # a Python float does not upcast a float32 tensor
    out = fn(tt(a).float(), num_r)
    assert out.dtype in (torch.float32, torch.bool)


def test_binary_on_two_python_numbers() -> None:
    assert kn.add(2, 3) == 5
    assert kn.minimum(2.0, 3) == 2.0
    assert kn.maximum(2.0, 3) == 3


def test_integer_division_semantics() -> None:
    a = np.array([-7, 7, -8, 9])
    b = np.array([2, -2, 3, 4])
    check(kn.floor_divide(tt(a), tt(b)), np.floor_divide(a, b))
    assert kn.divide(tt(a), tt(b)).is_floating_point()
    check(kn.divide(tt(a), tt(b)), a / b, rtol=1e-6)


@pytest.mark.parametrize("name,ref", [("logical_and", np.logical_and),
                                      ("logical_or", np.logical_or),
                                      ("logical_xor", np.logical_xor)])
def test_logical_binary(name: str, ref: Callable[..., Any]) -> None:
    gen = np.random.default_rng(5)
    a, b = gen.random((4, 5)) > 0.5, gen.random((5,)) > 0.5
    fn = getattr(kn, name)
    check(fn(tt(a), tt(b)), ref(a, b))
    check(fn(True, tt(b)), ref(True, b))
    check(fn(tt(a), False), ref(a, False))


@pytest.mark.parametrize("name,ref", [("shift_left", np.left_shift),
                                      ("shift_right", np.right_shift)])
def test_shifts(name: str, ref: Callable[..., Any]) -> None:
    a = np.array([[1, -8, 37], [5, 1024, -3]], dtype=np.int64)
    b = np.array([0, 1, 3], dtype=np.int64)
    fn = getattr(kn, name)
    check(fn(tt(a), tt(b)), ref(a, b))
    check(fn(tt(a), 2), ref(a, 2))
    check(fn(3, tt(b)), ref(3, b))


# ----------------------------------------------------------------------------------------------
# Unary elementwise
# ----------------------------------------------------------------------------------------------
_erf = np.vectorize(math.erf)

UNARY: dict[str, tuple[Callable[[np.ndarray], Any], Callable[[np.ndarray], np.ndarray]]] = {
    # name: (reference, input transform)
    "negate": (lambda x: -x, lambda x: x),
    "absolute": (np.abs, lambda x: x),
    "exp": (np.exp, lambda x: x),
    "log": (np.log, _pos),
    "sqrt": (np.sqrt, _pos),
    "square": (lambda x: x * x, lambda x: x),
    "sign": (np.sign, lambda x: np.where(np.abs(x) < 0.3, 0.0, x)),
    "sin": (np.sin, lambda x: x),
    "cos": (np.cos, lambda x: x),
    "floor": (np.floor, lambda x: x * 3),
    "reciprocal": (lambda x: 1 / x, _pos),
    "relu": (lambda x: np.where(x > 0, x, 0.0), lambda x: x),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda x: x),
    "tanh": (lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1), lambda x: x),
    "silu": (lambda x: x / (1 + np.exp(-x)), lambda x: x),
    "softplus": (lambda x: np.where(x > 20, x, np.log1p(np.exp(x))), lambda x: x * 15),
    "stop_gradient": (lambda x: x, lambda x: x),
    "isnan": (lambda x: x != x, lambda x: np.where(x > 1, np.nan, x)),
}


@pytest.mark.parametrize("name", list(UNARY))
@pytest.mark.parametrize("shape", SHAPES)
def test_unary(name: str, shape: tuple[int, ...]) -> None:
    ref, transform = UNARY[name]
    x = transform(rnd(*shape, seed=6))
    check(getattr(kn, name)(tt(x)), ref(x))


def test_logical_not() -> None:
    x = np.random.default_rng(7).random((3, 4)) > 0.5
    check(kn.logical_not(tt(x)), ~x)


@pytest.mark.parametrize("shape", SHAPES)
def test_gelu_exact_and_tanh(shape: tuple[int, ...]) -> None:
    x = rnd(*shape, seed=8, lo=-4, hi=4)
    check(kn.gelu(tt(x)), 0.5 * x * (1 + _erf(x / math.sqrt(2))))
    inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    check(kn.gelu(tt(x), True), 0.5 * x * (1 + np.tanh(inner)))


@pytest.mark.parametrize("slope", [0.01, 0.2])
def test_leaky_relu(slope: float) -> None:
    x = rnd(3, 4, seed=9)
    check(kn.leaky_relu(tt(x), slope), np.where(x > 0, x, slope * x))


@pytest.mark.parametrize("lo,hi", [(-0.5, 0.7), (None, 0.3), (-0.2, None), (None, None)])
def test_clamp(lo: float | None, hi: float | None) -> None:
    x = rnd(2, 3, 4, seed=10)
    ref = x if lo is None else np.where(x < lo, lo, x)
    ref = ref if hi is None else np.where(ref > hi, hi, ref)
    check(kn.clamp(tt(x), lo, hi), ref)


@pytest.mark.parametrize("nan,posinf,neginf", [(0.0, None, None), (1.5, 7.0, -9.0)])
def test_nan_to_num(nan: float, posinf: float | None, neginf: float | None) -> None:
    x = np.array([[1.0, np.nan, np.inf], [-np.inf, -2.0, np.nan]])
    big = np.finfo(np.float64).max
    ref = np.array([[1.0, nan, big if posinf is None else posinf],
                    [-big if neginf is None else neginf, -2.0, nan]])
    check(kn.nan_to_num(tt(x), nan, posinf, neginf), ref)


def _np_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape,axis", [((5,), -1), ((3, 4), 0), ((2, 3, 4), 1)])
def test_softmax_and_log_softmax(shape: tuple[int, ...], axis: int) -> None:
    x = rnd(*shape, seed=11, lo=-5, hi=5)
    check(kn.softmax(tt(x), axis), _np_softmax(x, axis))
    check(kn.log_softmax(tt(x), axis), np.log(_np_softmax(x, axis)))


@pytest.mark.parametrize("dtype,np_dtype", [(ml.int64, np.int64), (ml.float32, np.float32),
                                            (ml.float16, np.float16), (ml.bool_, np.bool_),
                                            (ml.float64, np.float64)])
def test_cast(dtype: ml.Dtype, np_dtype: Any) -> None:
    x = rnd(3, 4, seed=12, lo=-3, hi=3)
    out = kn.cast(tt(x), dtype)
    assert out.dtype == kn.DTYPES[dtype.name]
    check(out, x.astype(np_dtype))


def test_cast_to_bfloat16() -> None:
    x = rnd(3, 4, seed=13)
    out = kn.cast(tt(x), ml.bfloat16)
    assert out.dtype == torch.bfloat16
    check(out.float(), x, atol=1e-2, rtol=1e-2)


def test_where() -> None:
    gen = np.random.default_rng(14)
    cond = gen.random((3, 4)) > 0.5
    a, b = rnd(3, 4, seed=15), rnd(4, seed=16)
    check(kn.where(tt(cond), tt(a), tt(b)), np.where(cond, a, b))
    check(kn.where(tt(cond), 2.5, tt(b)), np.where(cond, 2.5, b))
    check(kn.where(tt(cond), tt(a), -1.0), np.where(cond, a, -1.0))


# ----------------------------------------------------------------------------------------------
# Linear algebra and reductions
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ls,rs", [((3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 5)),
                                   ((3, 4), (4,)), ((4,), (4,))])
def test_matmul(ls: tuple[int, ...], rs: tuple[int, ...]) -> None:
    a, b = rnd(*ls, seed=17), rnd(*rs, seed=18)
    check(kn.matmul(tt(a), tt(b)), np.matmul(a, b))


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 3)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_linear(shape: tuple[int, ...], use_bias: bool) -> None:
    x, w, b = rnd(*shape, seed=19), rnd(6, 3, seed=20), rnd(6, seed=21)
    ref = np.einsum("...i,oi->...o", x, w) + (b if use_bias else 0)
    check(kn.linear(tt(x), tt(w), tt(b) if use_bias else None), ref)


REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}
AXES = [None, 0, -1, (0, 2), (-1, 1)]


@pytest.mark.parametrize("name", list(REDUCTIONS))
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdim", [False, True])
def test_reductions(name: str, axis: Any, keepdim: bool) -> None:
    x = rnd(2, 3, 4, seed=22)
    check(getattr(kn, name)(tt(x), axis, keepdim), REDUCTIONS[name](x, axis=axis, keepdims=keepdim))


@pytest.mark.parametrize("name", [*REDUCTIONS, "variance"])
def test_reduction_over_no_axes_is_elementwise(name: str) -> None:
    x = rnd(2, 3, seed=23)
    ref = np.var(x, axis=()) if name == "variance" else REDUCTIONS[name](x, axis=())
    check(getattr(kn, name)(tt(x), ()), ref)


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("correction", [0, 1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_variance(axis: Any, correction: int, keepdim: bool) -> None:
    x = rnd(3, 4, 5, seed=24)
    mean = x.mean(axis=axis, keepdims=True)
    n = x.size // mean.size
    ref = ((x - mean) ** 2).sum(axis=axis, keepdims=keepdim) / (n - correction)
    check(kn.variance(tt(x), axis, keepdim, correction), ref)


@pytest.mark.parametrize("name,ref", [("argmax", np.argmax), ("argmin", np.argmin)])
@pytest.mark.parametrize("axis", [None, 0, -1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_argmax_argmin(name: str, ref: Callable[..., Any], axis: Any, keepdim: bool) -> None:
    x = rnd(3, 4, 5, seed=25)
    out = getattr(kn, name)(tt(x), axis, keepdim)
    assert out.dtype == torch.int64
    check(out, ref(x, axis=axis, keepdims=keepdim))


def test_mean_and_variance_of_ints_are_float() -> None:
    x = np.arange(12).reshape(3, 4)
    out = kn.mean(tt(x), 1)
    assert out.is_floating_point()
    check(out, x.mean(axis=1), rtol=1e-6)
    check(kn.variance(tt(x), 0, False, 1), x.var(axis=0, ddof=1), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Shape manipulation, indexing, scalar plumbing
# ----------------------------------------------------------------------------------------------
def test_reshape_transpose_swap() -> None:
    x = rnd(2, 3, 4, seed=26)
    check(kn.reshape(tt(x), (4, -1)), x.reshape(4, -1))
    check(kn.reshape(tt(x), (24,)), x.reshape(24))
    check(kn.transpose(tt(x)), x.T)
    check(kn.transpose(tt(x), (1, 0, 2)), x.transpose(1, 0, 2))
    check(kn.transpose(tt(x), (-1, 0, 1)), x.transpose(-1, 0, 1))
    check(kn.swap_axes(tt(x), 0, -1), np.swapaxes(x, 0, -1))


@pytest.mark.parametrize("start,end", [(0, -1), (1, 2), (0, 1), (-2, -1), (1, 1)])
def test_flatten(start: int, end: int) -> None:
    x = rnd(2, 3, 4, seed=27)
    shape = x.shape
    s, e = start % 3, end % 3
    ref = x.reshape(*shape[:s], int(np.prod(shape[s:e + 1])), *shape[e + 1:])
    check(kn.flatten(tt(x), start, end), ref)


def test_flatten_scalar_gives_one_element() -> None:
    check(kn.flatten(tt(np.array(3.0))), np.array([3.0]))


@pytest.mark.parametrize("axis", [None, 0, 2, (0, 2), -1])
def test_squeeze(axis: Any) -> None:
    x = rnd(1, 3, 1, seed=28)
    ref = np.squeeze(x, axis=axis) if axis != -1 else np.squeeze(x, axis=2)
    check(kn.squeeze(tt(x), axis), ref)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_unsqueeze(axis: int) -> None:
    x = rnd(2, 3, seed=29)
    check(kn.unsqueeze(tt(x), axis), np.expand_dims(x, axis))


def test_broadcast_to() -> None:
    x = rnd(3, 1, seed=30)
    check(kn.broadcast_to(tt(x), (2, 3, 4)), np.broadcast_to(x, (2, 3, 4)))


@pytest.mark.parametrize("axis", [0, 1, -1, None])
def test_concat(axis: Any) -> None:
    a, b, c = rnd(2, 3, seed=31), rnd(2, 3, seed=32), rnd(2, 3, seed=33)
    ref = np.concatenate([a, b, c], axis=axis)
    check(kn.concat(tt(a), tt(b), tt(c), axis), ref)
    check(kn.concat(tt(a), tt(b), tt(c), axis=axis), ref)


def test_concat_default_axis() -> None:
    a, b = rnd(2, 3, seed=34), rnd(1, 3, seed=35)
    check(kn.concat(tt(a), tt(b)), np.concatenate([a, b]))


@pytest.mark.parametrize("pad_width", [((1, 2),), ((0, 1), (2, 0)), ((1, 1), (0, 0), (3, 2))])
def test_pad(pad_width: tuple[tuple[int, int], ...]) -> None:
    x = rnd(*[2, 3, 4][: len(pad_width)], seed=36)
    check(kn.pad(tt(x), pad_width), np.pad(x, pad_width))


INDICES = [1, -1, slice(1, None), slice(None, None, 2), None, Ellipsis, (0, slice(1, 3)),
           (Ellipsis, 1), (slice(None), None, -2), slice(None, None, -1),
           (slice(3, 0, -2), Ellipsis, slice(None, None, -3)), (None, slice(-1, None, -1), 2),
           (Ellipsis, slice(10, -10, -1)), slice(0, 2, -1)]


@pytest.mark.parametrize("index", INDICES, ids=repr)
def test_indexer(index: Any) -> None:
    x = rnd(4, 3, 5, seed=37)
    check(kn.indexer(tt(x), index), x[index])


def test_indexer_on_python_values() -> None:
    assert kn.indexer((3, 4, 5), 1) == 4
    assert kn.indexer([1, 2, 3], slice(1, None)) == [2, 3]


def test_size_item_to_tensor() -> None:
    x = tt(rnd(2, 3, 4, seed=38))
    assert kn.size(x) == 24 and type(kn.size(x)) is int
    assert kn.size(x, 1) == 3 and kn.size(x, -1) == 4 and type(kn.size(x, 1)) is int
    assert kn.item(tt(np.array([2.5]))) == 2.5
    assert kn.item(tt(np.array(7))) == 7
    f = kn.to_tensor([[1.0, 2], [3, 4]], float_dtype=torch.float64)
    assert f.dtype == torch.float64
    check(f, np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert kn.to_tensor(3, float_dtype=torch.float64).dtype == torch.int64
    assert kn.to_tensor([True, False], float_dtype=torch.float64).dtype == torch.bool
    assert kn.to_tensor(1.5, float_dtype=torch.float16).dtype == torch.float16
    assert kn.to_tensor([True, 2]).dtype == torch.int64
    assert kn.to_tensor([]).dtype == torch.int64


# ----------------------------------------------------------------------------------------------
# Convolution and pooling (loop references)
# ----------------------------------------------------------------------------------------------
def np_conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int],
              padding: tuple[tuple[int, int], ...], dilation: tuple[int, int],
              groups: int) -> np.ndarray:
    """Direct grouped 2-d cross-correlation, one output pixel at a time."""
    x = np.pad(x, ((0, 0), (0, 0), *padding))
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow))
    for g in range(groups):
        xs, ws = x[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og]
        for i in range(oh):
            for j in range(ow):
                patch = xs[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                           j * sw:j * sw + dw * (kw - 1) + 1:dw]
                out[:, g * og:(g + 1) * og, i, j] = np.einsum("nckl,ockl->no", patch, ws)
    return out if b is None else out + b[None, :, None, None]


CONV2D = [  # (x shape, w shape, stride, padding, dilation, groups, bias)
    ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), 1, True),
    ((1, 4, 8, 7), (6, 2, 2, 3), (2, 1), ((1, 1), (2, 2)), (1, 2), 2, False),
    ((2, 2, 6, 6), (3, 2, 2, 2), (1, 2), ((0, 1), (1, 0)), (2, 1), 1, True),
]


@pytest.mark.parametrize("case", CONV2D)
def test_conv2d(case: tuple[Any, ...]) -> None:
    xs, ws, stride, padding, dilation, groups, use_bias = case
    x, w, b = rnd(*xs, seed=39), rnd(*ws, seed=40), rnd(ws[0], seed=41)
    out = kn.conv2d(tt(x), tt(w), tt(b) if use_bias else None, stride, padding, dilation, groups)
    check(out, np_conv2d(x, w, b if use_bias else None, stride, padding, dilation, groups))


CONV1D = [((2, 3, 9), (4, 3, 3), (1,), ((0, 0),), (1,), 1, True),
          ((1, 4, 10), (2, 2, 2), (2,), ((1, 0),), (2,), 2, False),
          ((2, 2, 7), (3, 2, 4), (1,), ((2, 1),), (1,), 1, True)]


@pytest.mark.parametrize("case", CONV1D)
def test_conv1d(case: tuple[Any, ...]) -> None:
    xs, ws, stride, padding, dilation, groups, use_bias = case
    x, w, b = rnd(*xs, seed=42), rnd(*ws, seed=43), rnd(ws[0], seed=44)
    out = kn.conv1d(tt(x), tt(w), tt(b) if use_bias else None, stride, padding, dilation, groups)
    ref = np_conv2d(x[:, :, None], w[:, :, None], b if use_bias else None, (1, *stride),
                    ((0, 0), *padding), (1, *dilation), groups)[:, :, 0]
    check(out, ref)


def np_pool2d(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int],
              d: tuple[int, int], reduce: Callable[..., Any], fill: float) -> np.ndarray:
    """Pooling over ``k`` windows of an input padded with ``fill``."""
    x = np.pad(x, ((0, 0),) * (x.ndim - 2) + ((p[0], p[0]), (p[1], p[1])), constant_values=fill)
    h, w = x.shape[-2:]
    oh, ow = (h - d[0] * (k[0] - 1) - 1) // s[0] + 1, (w - d[1] * (k[1] - 1) - 1) // s[1] + 1
    out = np.zeros((*x.shape[:-2], oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = x[..., i * s[0]:i * s[0] + d[0] * (k[0] - 1) + 1:d[0],
                      j * s[1]:j * s[1] + d[1] * (k[1] - 1) + 1:d[1]]
            out[..., i, j] = reduce(patch, axis=(-2, -1))
    return out


POOL2D = [((2, 3, 6, 7), (2, 2), None, (0, 0), (1, 1)),
          ((1, 2, 7, 7), (3, 2), (2, 1), (1, 1), (1, 2)),
          ((3, 5, 6), (3, 3), (1, 2), (1, 0), (2, 1))]


@pytest.mark.parametrize("case", POOL2D)
def test_max_pool2d(case: tuple[Any, ...]) -> None:
    xs, k, s, p, d = case
    x = rnd(*xs, seed=45)
    ref = np_pool2d(x, k, k if s is None else s, p, d, np.max, -np.inf)
    check(kn.max_pool2d(tt(x), k, s, p, d), ref)


@pytest.mark.parametrize("case", POOL2D)
def test_avg_pool2d(case: tuple[Any, ...]) -> None:
    xs, k, s, p, _ = case
    x = rnd(*xs, seed=46)
    ref = np_pool2d(x, k, k if s is None else s, p, (1, 1), np.mean, 0.0)
    check(kn.avg_pool2d(tt(x), k, s, p), ref)


@pytest.mark.parametrize("xs,k,s,p,d", [((2, 3, 9), (2,), None, (0,), (1,)),
                                        ((1, 2, 11), (3,), (2,), (1,), (2,)),
                                        ((4, 8), (4,), (3,), (2,), (1,))])
def test_max_pool1d(xs: tuple[int, ...], k: tuple[int], s: Any, p: tuple[int],
                    d: tuple[int]) -> None:
    x = rnd(*xs, seed=47)
    ref = np_pool2d(x[..., None, :], (1, *k), (1, *(k if s is None else s)), (0, *p), (1, *d),
                    np.max, -np.inf)[..., 0, :]
    check(kn.max_pool1d(tt(x), k, s, p, d), ref)


# ----------------------------------------------------------------------------------------------
# Normalisation, embedding, attention
# ----------------------------------------------------------------------------------------------
def _channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_training(shape: tuple[int, ...], affine: bool) -> None:
    x = rnd(*shape, seed=48)
    w, b = rnd(3, seed=49), rnd(3, seed=50)
    rm, rv = rnd(3, seed=51), rnd(3, seed=52, lo=0.5, hi=2)
    rm_t, rv_t = tt(rm), tt(rv)
    axes = tuple(i for i in range(len(shape)) if i != 1)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    ref = (x - _channel(mean, x.ndim)) / np.sqrt(_channel(var, x.ndim) + 1e-3)
    if affine:
        ref = ref * _channel(w, x.ndim) + _channel(b, x.ndim)
    n = x.size // 3
    out, new_mean, new_var = kn.batch_norm(tt(x), tt(w) if affine else None,
                                           tt(b) if affine else None, rm_t, rv_t, 0.2, 1e-3)
    check(out, ref)
    check(new_mean, 0.8 * rm + 0.2 * mean)
    check(new_var, 0.8 * rv + 0.2 * var * n / (n - 1))
    check(rm_t, rm)  # the inputs are not modified
    check(rv_t, rv)


def test_batch_norm_without_running_stats() -> None:
    x = rnd(5, 2, 3, seed=53)
    out, rm, rv = kn.batch_norm(tt(x), None, None, None, None, 0.1, 1e-5)
    mean, var = x.mean(axis=(0, 2), keepdims=True), x.var(axis=(0, 2), keepdims=True)
    check(out, (x - mean) / np.sqrt(var + 1e-5))
    assert rm is None and rv is None


def test_batch_norm_inference() -> None:
    x, w, b = rnd(4, 3, 5, seed=54), rnd(3, seed=55), rnd(3, seed=56)
    rm, rv = rnd(3, seed=57), rnd(3, seed=58, lo=0.5, hi=2)
    out, m, v = kn.batch_norm_inference(tt(x), tt(w), tt(b), tt(rm), tt(rv), 0.1, 1e-5)
    ref = (x - _channel(rm, 3)) / np.sqrt(_channel(rv, 3) + 1e-5) * _channel(w, 3) + _channel(b, 3)
    check(out, ref)
    check(m, rm)
    check(v, rv)
    out, m, v = kn.batch_norm_inference(tt(x), None, None, None, None, 0.1, 1e-5)
    mean, var = x.mean(axis=(0, 2), keepdims=True), x.var(axis=(0, 2), keepdims=True)
    check(out, (x - mean) / np.sqrt(var + 1e-5))
    assert m is None and v is None


@pytest.mark.parametrize("shape,normalized", [((4, 6), (6,)), ((2, 3, 4), (3, 4)),
                                              ((2, 3, 5), (5,))])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(shape: tuple[int, ...], normalized: tuple[int, ...], affine: bool) -> None:
    x, w, b = rnd(*shape, seed=59), rnd(*normalized, seed=60), rnd(*normalized, seed=61)
    axes = tuple(range(-len(normalized), 0))
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    ref = (x - mean) / np.sqrt(var + 1e-5)
    if affine:
        ref = ref * w + b
    out = kn.layer_norm(tt(x), tt(w) if affine else None, tt(b) if affine else None, normalized,
                        1e-5)
    check(out, ref)


@pytest.mark.parametrize("shape,groups", [((2, 6, 4), 3), ((3, 4, 2, 3), 2), ((2, 4), 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm(shape: tuple[int, ...], groups: int, affine: bool) -> None:
    x, w, b = rnd(*shape, seed=62), rnd(shape[1], seed=63), rnd(shape[1], seed=64)
    g = x.reshape(shape[0], groups, -1)
    ref = ((g - g.mean(axis=2, keepdims=True)) / np.sqrt(g.var(axis=2, keepdims=True) + 1e-4))
    ref = ref.reshape(shape)
    if affine:
        ref = ref * _channel(w, x.ndim) + _channel(b, x.ndim)
    out = kn.group_norm(tt(x), tt(w) if affine else None, tt(b) if affine else None, groups, 1e-4)
    check(out, ref)


@pytest.mark.parametrize("idx_shape", [(5,), (2, 3), (2, 2, 2)])
def test_embedding(idx_shape: tuple[int, ...]) -> None:
    idx = np.random.default_rng(65).integers(0, 7, idx_shape)
    w = rnd(7, 4, seed=66)
    check(kn.embedding(tt(idx), tt(w)), w[idx])


def np_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None,
                 causal: bool, scale: float | None) -> np.ndarray:
    """``softmax(q k^T * scale + bias) v`` with boolean or additive masks."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ np.swapaxes(k, -1, -2) * scale
    if causal:
        keep = np.tril(np.ones(scores.shape[-2:], dtype=bool))
        scores = np.where(keep, scores, -np.inf)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    return _np_softmax(scores, -1) @ v


ATTENTION = [  # (q, k, v shapes, mask kind, is_causal, scale)
    ((2, 5, 4), (2, 5, 4), (2, 5, 3), None, False, None),
    ((2, 2, 4, 8), (2, 2, 6, 8), (2, 2, 6, 5), "bool", False, 0.3),
    ((3, 4, 4), (3, 6, 4), (3, 6, 2), "float", False, None),
    ((2, 5, 4), (2, 5, 4), (2, 5, 4), None, True, None),
    ((1, 4, 3), (1, 6, 3), (1, 6, 3), None, True, 0.5),
    ((2, 5, 4), (2, 5, 4), (2, 5, 4), "bool", True, None),
    ((2, 5, 4), (2, 5, 4), (2, 5, 4), "float", True, None),
]


@pytest.mark.parametrize("case", ATTENTION)
def test_scaled_dot_product(case: tuple[Any, ...]) -> None:
    qs, ks, vs, mask_kind, causal, scale = case
    q, k, v = rnd(*qs, seed=67), rnd(*ks, seed=68), rnd(*vs, seed=69)
    mask = None
    if mask_kind == "bool":
        mask = np.random.default_rng(70).random((qs[-2], ks[-2])) > 0.4
        mask[:, 0] = True  # every row attends to something
    elif mask_kind == "float":
        mask = rnd(qs[-2], ks[-2], seed=71)
    out = kn.scaled_dot_product(tt(q), tt(k), tt(v), None if mask is None else tt(mask), causal,
                                scale)
    check(out, np_attention(q, k, v, mask, causal, scale), atol=1e-9, rtol=1e-9)


# ----------------------------------------------------------------------------------------------
# Dropout and random state
# ----------------------------------------------------------------------------------------------
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_dropout_zeroes_and_scales() -> None:
    x = tt(rnd(200, 100, seed=72, lo=1, hi=2))
    p = 0.3
    out = kn.dropout(x, p, _gen(0))
    kept = out != 0
    assert abs(kept.double().mean().item() - (1 - p)) < 0.02
    check(out[kept], x[kept].numpy() / (1 - p))


def test_dropout_uses_the_given_generator_only() -> None:
    x = tt(rnd(10, 10, seed=73))
    before = torch.get_rng_state()
    a = kn.dropout(x, 0.5, _gen(3))
    b = kn.dropout(x, 0.5, _gen(3))
    c = kn.dropout(x, 0.5, _gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), before)
    gen = _gen(5)
    assert not torch.equal(kn.dropout(x, 0.5, gen), kn.dropout(x, 0.5, gen))


def test_dropout_inference_and_zero_probability() -> None:
    x = tt(rnd(3, 4, seed=74))
    assert kn.dropout_inference(x, 0.5) is x
    check(kn.dropout(x, 0.0, _gen(0)), x.numpy())


def test_split_rng() -> None:
    gen = _gen(0)
    assert kn.split_rng(gen, 3) == [gen, gen, gen]


# ----------------------------------------------------------------------------------------------
# Gradients: torch.autograd.gradcheck (central finite differences) in float64
# ----------------------------------------------------------------------------------------------
def g(*shape: int, seed: int = 0, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """A small float64 leaf requiring gradients."""
    return tt(rnd(*shape, seed=seed, lo=lo, hi=hi)).requires_grad_(True)


def _fixed_dropout(x: torch.Tensor) -> torch.Tensor:
    return kn.dropout(x, 0.4, _gen(11))  # the same mask at every evaluation


GRAD_CASES: dict[str, list[tuple[Callable[..., Any], Callable[[], tuple[torch.Tensor, ...]]]]] = {
    "add": [(kn.add, lambda: (g(3, 4), g(4, seed=1))), (lambda x: kn.add(2.0, x), lambda: (g(3),))],
    "subtract": [(kn.subtract, lambda: (g(2, 3), g(2, 1, seed=1))),
                 (lambda x: kn.subtract(1.0, x), lambda: (g(3),))],
    "multiply": [(kn.multiply, lambda: (g(3, 4), g(3, 1, seed=1)))],
    "divide": [(kn.divide, lambda: (g(3, 4), g(4, seed=1, lo=0.5, hi=2))),
               (lambda x: kn.divide(2.0, x), lambda: (g(3, lo=0.5, hi=2),))],
    "power": [(kn.power, lambda: (g(3, 4, lo=0.5, hi=2), g(4, seed=1))),
              (lambda x: kn.power(x, 3), lambda: (g(5),))],
    "minimum": [(kn.minimum, lambda: (g(3, 4), g(4, seed=1))),
                (lambda x: kn.minimum(x, 0.1), lambda: (g(6),))],
    "maximum": [(kn.maximum, lambda: (g(3, 4), g(4, seed=1))),
                (lambda x: kn.maximum(0.1, x), lambda: (g(6),))],
    "negate": [(kn.negate, lambda: (g(3, 2),))],
    "absolute": [(kn.absolute, lambda: (g(3, 2),))],
    "exp": [(kn.exp, lambda: (g(3, 2),))],
    "log": [(kn.log, lambda: (g(3, 2, lo=0.5, hi=2),))],
    "sqrt": [(kn.sqrt, lambda: (g(3, 2, lo=0.5, hi=2),))],
    "square": [(kn.square, lambda: (g(3, 2),))],
    "sin": [(kn.sin, lambda: (g(3, 2),))],
    "cos": [(kn.cos, lambda: (g(3, 2),))],
    "reciprocal": [(kn.reciprocal, lambda: (g(3, 2, lo=0.5, hi=2),))],
    "relu": [(kn.relu, lambda: (g(3, 4),))],
    "sigmoid": [(kn.sigmoid, lambda: (g(3, 4),))],
    "tanh": [(kn.tanh, lambda: (g(3, 4),))],
    "silu": [(kn.silu, lambda: (g(3, 4),))],
    "softplus": [(kn.softplus, lambda: (g(3, 4, lo=-3, hi=3),))],
    "gelu": [(kn.gelu, lambda: (g(3, 4, lo=-3, hi=3),)),
             (lambda x: kn.gelu(x, True), lambda: (g(3, 4, lo=-3, hi=3),))],
    "leaky_relu": [(lambda x: kn.leaky_relu(x, 0.2), lambda: (g(3, 4),))],
    "clamp": [(lambda x: kn.clamp(x, -0.5, 0.5), lambda: (g(3, 4),)),
              (lambda x: kn.clamp(x, None, 0.2), lambda: (g(3, 4),))],
    "nan_to_num": [(kn.nan_to_num, lambda: (g(3, 4),))],
    "softmax": [(lambda x: kn.softmax(x, 0), lambda: (g(3, 4),))],
    "log_softmax": [(lambda x: kn.log_softmax(x, -1), lambda: (g(3, 4),))],
    "cast": [(lambda x: kn.cast(x, ml.float64), lambda: (g(3, 4),))],
    "where": [(lambda a, b: kn.where(tt(np.arange(4) % 2 == 0), a, b),
               lambda: (g(3, 4), g(4, seed=1))),
              (lambda a: kn.where(tt(np.arange(4) > 1), a, 0.5), lambda: (g(4),))],
    "matmul": [(kn.matmul, lambda: (g(2, 3, 4), g(4, 2, seed=1))),
               (kn.matmul, lambda: (g(4), g(2, 4, 3, seed=1)))],
    "linear": [(kn.linear, lambda: (g(2, 3), g(4, 3, seed=1), g(4, seed=2))),
               (lambda x, w: kn.linear(x, w, None), lambda: (g(2, 2, 3), g(4, 3, seed=1)))],
    "sum": [(lambda x: kn.sum(x, (0, 2), True), lambda: (g(2, 3, 4),)), (kn.sum, lambda: (g(3),))],
    "mean": [(lambda x: kn.mean(x, 1), lambda: (g(2, 3, 4),)), (kn.mean, lambda: (g(3, 2),))],
    "max": [(lambda x: kn.max(x, -1), lambda: (g(2, 3, 4),)), (kn.max, lambda: (g(3, 2),))],
    "min": [(lambda x: kn.min(x, (0, 1), True), lambda: (g(2, 3, 4),))],
    "prod": [(lambda x: kn.prod(x, (0, 2)), lambda: (g(2, 3, 4),)),
             (lambda x: kn.prod(x, None, True), lambda: (g(2, 3),))],
    "variance": [(lambda x: kn.variance(x, 1, False, 1), lambda: (g(2, 3, 4),)),
                 (kn.variance, lambda: (g(5),))],
    "reshape": [(lambda x: kn.reshape(x, (3, -1)), lambda: (g(2, 3, 2),))],
    "transpose": [(kn.transpose, lambda: (g(2, 3, 4),)),
                  (lambda x: kn.transpose(x, (1, 2, 0)), lambda: (g(2, 3, 4),))],
    "swap_axes": [(lambda x: kn.swap_axes(x, 0, 2), lambda: (g(2, 3, 4),))],
    "flatten": [(lambda x: kn.flatten(x, 1, 2), lambda: (g(2, 3, 4),))],
    "squeeze": [(lambda x: kn.squeeze(x, 1), lambda: (g(2, 1, 4),))],
    "unsqueeze": [(lambda x: kn.unsqueeze(x, 1), lambda: (g(2, 4),))],
    "broadcast_to": [(lambda x: kn.broadcast_to(x, (2, 3, 4)), lambda: (g(3, 1),))],
    "concat": [(lambda a, b: kn.concat(a, b, 1), lambda: (g(2, 3), g(2, 2, seed=1))),
               (lambda a, b: kn.concat(a, b, None), lambda: (g(2, 3), g(4, seed=1)))],
    "pad": [(lambda x: kn.pad(x, ((1, 0), (2, 3))), lambda: (g(2, 3),))],
    "indexer": [(lambda x: kn.indexer(x, (slice(None, None, -2), None, 1)), lambda: (g(5, 3),)),
                (lambda x: kn.indexer(x, (Ellipsis, slice(1, 3))), lambda: (g(2, 3, 4),))],
    "conv1d": [(lambda x, w, b: kn.conv1d(x, w, b, (2,), ((2, 1),), (1,), 1),
                lambda: (g(1, 2, 7), g(3, 2, 3, seed=1), g(3, seed=2)))],
    "conv2d": [(lambda x, w: kn.conv2d(x, w, None, (1, 2), ((0, 1), (1, 1)), (2, 1), 2),
                lambda: (g(1, 4, 5, 5), g(2, 2, 2, 2, seed=1))),
               (lambda x, w, b: kn.conv2d(x, w, b, (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
                lambda: (g(2, 2, 4, 4), g(3, 2, 3, 3, seed=1), g(3, seed=2)))],
    "max_pool1d": [(lambda x: kn.max_pool1d(x, (3,), (2,), (1,), (1,)),
                    lambda: (g(2, 2, 7),))],
    "max_pool2d": [(lambda x: kn.max_pool2d(x, (2, 2), None, (1, 0), (1, 1)),
                    lambda: (g(1, 2, 5, 4),))],
    "avg_pool2d": [(lambda x: kn.avg_pool2d(x, (3, 2), (2, 1), (1, 1)),
                    lambda: (g(1, 2, 5, 4),))],
    "batch_norm": [(lambda x, w, b: kn.batch_norm(x, w, b, tt(np.zeros(3)), tt(np.ones(3)),
                                                  0.1, 1e-5)[0],
                    lambda: (g(4, 3, 2), g(3, seed=1), g(3, seed=2))),
                   (lambda x: kn.batch_norm_inference(x, None, None, tt(np.full(3, 0.2)),
                                                      tt(np.full(3, 1.5)), 0.1, 1e-5)[0],
                    lambda: (g(4, 3),))],
    "layer_norm": [(lambda x, w, b: kn.layer_norm(x, w, b, (3, 2), 1e-5),
                    lambda: (g(2, 3, 2), g(3, 2, seed=1), g(3, 2, seed=2)))],
    "group_norm": [(lambda x, w, b: kn.group_norm(x, w, b, 2, 1e-5),
                    lambda: (g(2, 4, 3), g(4, seed=1), g(4, seed=2)))],
    "embedding": [(lambda w: kn.embedding(tt(np.array([[0, 2], [2, 3]])), w),
                   lambda: (g(4, 3),))],
    "scaled_dot_product": [
        (lambda q, k, v: kn.scaled_dot_product(q, k, v, None, True, None),
         lambda: (g(2, 3, 4), g(2, 3, 4, seed=1), g(2, 3, 2, seed=2))),
        (lambda q, k, v: kn.scaled_dot_product(q, k, v, tt(rnd(3, 5, seed=3)), False, 0.7),
         lambda: (g(1, 3, 4), g(1, 5, 4, seed=1), g(1, 5, 2, seed=2)))],
    "dropout": [(_fixed_dropout, lambda: (g(4, 5),))],
}


def test_every_differentiable_primitive_has_a_gradient_check() -> None:
    """Here by gradcheck, or by the cross-backend walk (tests/catalogue_cases.py)."""
    from tests.catalogue_cases import CASES as WALKED
    from tests.catalogue_cases import NOT_WALKED

    differentiable = {op.name for op in tensor_ops() if op.differentiable}
    assert differentiable - set(GRAD_CASES) - set(WALKED) - set(NOT_WALKED) == set()


@pytest.mark.parametrize("name,index", [(n, i) for n, cases in GRAD_CASES.items()
                                        for i in range(len(cases))])
def test_gradients_match_finite_differences(name: str, index: int) -> None:
    fn, make_inputs = GRAD_CASES[name][index]
    assert torch.autograd.gradcheck(fn, make_inputs(), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_stop_gradient_blocks_gradients() -> None:
    x = g(3)
    out = kn.add(kn.stop_gradient(x), kn.multiply(x, 2.0))
    (grad,) = torch.autograd.grad(out.sum(), x)
    check(grad, np.full(3, 2.0))


# ----------------------------------------------------------------------------------------------
# TorchBackend
# ----------------------------------------------------------------------------------------------
def _linear_forward(params: dict, data: dict, state: dict, rng: Any) -> tuple[dict, dict]:
    hidden = kn.linear(data["x"], params["w"], params["b"])
    out = {"output": kn.tanh(hidden), "other": kn.sum(kn.square(params["w"])),
           "count": params["steps"] + 1}
    return out, {"seen": kn.add(state["seen"], 1)}


def _np_loss(w: np.ndarray, b: np.ndarray, x: np.ndarray, seed: np.ndarray) -> float:
    return float((np.tanh(x @ w.T + b) * seed).sum())


def test_vjp_fn_matches_central_differences() -> None:
    backend = TorchBackend(dtype=ml.float64)
    w, b, x, seed = rnd(4, 3, seed=80), rnd(4, seed=81), rnd(5, 3, seed=82), rnd(5, 4, seed=83)
    params = {"w": tt(w), "b": tt(b), "unused": tt(rnd(2, seed=84)), "steps": tt(np.array(3))}
    state = {"seen": tt(np.array(0.0))}
    fn = backend.vjp_fn(_linear_forward)
    outputs, new_state, grads = fn(params, {"x": tt(x)}, state, backend.next_rng(),
                                   {"output": tt(seed)})
    check(outputs["output"], np.tanh(x @ w.T + b))
    assert not outputs["output"].requires_grad and not outputs["other"].requires_grad
    check(new_state["seen"], 1.0)
    assert set(grads) == set(params)
    check(grads["unused"], np.zeros(2))
    check(grads["steps"], 0)
    h = 1e-6
    for name, arr in (("w", w), ("b", b)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            up, down = arr.copy(), arr.copy()
            up[i] += h
            down[i] -= h
            args_up = (up, b) if name == "w" else (w, up)
            args_down = (down, b) if name == "w" else (w, down)
            num[i] = (_np_loss(*args_up, x, seed) - _np_loss(*args_down, x, seed)) / (2 * h)
        check(grads[name], num, atol=1e-7, rtol=1e-6)
    # the caller's tensors are untouched
    assert not any(p.requires_grad or p.grad is not None for p in params.values())


def test_vjp_fn_sums_several_output_gradients() -> None:
    backend = TorchBackend(dtype=ml.float64)
    w, b, x = rnd(2, 3, seed=85), rnd(2, seed=86), rnd(4, 3, seed=87)
    params = {"w": tt(w), "b": tt(b), "steps": tt(np.array(0))}
    fn = backend.vjp_fn(_linear_forward)
    _, _, grads = fn(params, {"x": tt(x)}, {"seen": tt(np.array(0.0))}, None,
                     {"output": None, "other": 3.0})
    check(grads["w"], 3.0 * 2 * w)
    check(grads["b"], np.zeros(2))


def test_vjp_fn_works_under_no_grad() -> None:
    backend = TorchBackend(dtype=ml.float64)
    params = {"w": tt(rnd(2, 3, seed=88)), "b": tt(rnd(2, seed=89)), "steps": tt(np.array(0))}
    fn = backend.vjp_fn(_linear_forward)
    with torch.no_grad():
        _, _, grads = fn(params, {"x": tt(rnd(4, 3, seed=90))}, {"seen": tt(np.array(0.0))},
                         None, {"other": tt(np.array(1.0))})
    check(grads["w"], 2 * params["w"].numpy())


def _compile_failing(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("no C++ compiler")
    return broken


def test_wrap_jit_falls_back_to_eager_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", _compile_failing)
    wrapped = TorchBackend().wrap_jit(lambda x: kn.multiply(x, 2.0))
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        out = wrapped(tt(np.array([1.0, 2.0])))
    check(out, np.array([2.0, 4.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(wrapped(tt(np.array([3.0]))), np.array([6.0]))


def test_wrap_jit_does_not_hide_errors_of_the_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", _compile_failing)

    def bad(x: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        TorchBackend().wrap_jit(bad)(tt(np.array([1.0])))


def test_wrap_jit_uses_the_compiled_function(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_compile(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
        def compiled(*args: Any) -> Any:
            calls.append(1)
            return fn(*args)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    wrapped = TorchBackend().wrap_jit(lambda x: kn.add(x, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(wrapped(tt(np.array([1.0]))), np.array([2.0]))
        check(wrapped(tt(np.array([2.0]))), np.array([3.0]))
    assert len(calls) == 2


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3", "mps", "tpu", "gpu"])
def test_unavailable_devices_raise(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"
    if device == "mps" and torch.backends.mps.is_available():
        device = "tpu"
    with pytest.raises(BackendUnavailableError, match="cannot use device"):
        TorchBackend(device=device)


def test_bad_device_names_and_mesh() -> None:
    with pytest.raises(ValueError, match="unknown device"):
        TorchBackend(device="cuda:x")
    with pytest.raises(TypeError):
        TorchBackend(device=0)  # type: ignore[arg-type]
    with pytest.raises(ml.BackendUnavailableError, match="torchrun --nproc-per-node 2"):
        TorchBackend(device_mesh=(2,))
    with pytest.raises(TypeError):
        TorchBackend(dtype=ml.int64)
    backend = TorchBackend(device="cpu")
    assert backend.device == torch.device("cpu") and backend.name == "torch"


def test_backend_is_exported_lazily() -> None:
    assert ml.TorchBackend is TorchBackend


@pytest.mark.parametrize("dtype", list(kn.DTYPES))
def test_native_dtype(dtype: str) -> None:
    backend = TorchBackend()
    assert backend.native_dtype(dtype) == getattr(torch, dtype)
    assert backend.native_dtype(getattr(ml, "bool_" if dtype == "bool" else dtype)) \
        == getattr(torch, dtype)


@pytest.mark.parametrize("dtype,torch_dtype", [(ml.float16, torch.float16),
                                               (ml.bfloat16, torch.bfloat16),
                                               (ml.float64, torch.float64),
                                               (ml.int64, torch.int64), (ml.bool_, torch.bool)])
def test_array_creation_in_each_dtype(dtype: ml.Dtype, torch_dtype: torch.dtype) -> None:
    backend = TorchBackend()
    data = [[0.0, 1.0, 2.0], [3.0, 0.0, 1.0]]
    ref = np.array(data).astype(np.bool_ if dtype is ml.bool_ else np.float64)
    for made in (backend.array(data, dtype=dtype), backend.ones(2, 3, dtype=dtype),
                 backend.zeros((2, 3), dtype=dtype)):
        assert made.dtype == torch_dtype and made.shape == (2, 3)
    check(backend.to_numpy(backend.array(data, dtype=dtype)), ref)
    check(backend.to_numpy(backend.ones(2, 3, dtype=dtype)), np.ones((2, 3)))
    check(backend.to_numpy(backend.zeros(2, 3, dtype=dtype)), np.zeros((2, 3)))
    if dtype is ml.bfloat16:
        assert backend.to_numpy(backend.ones(2, dtype=dtype)).dtype == np.float32


def test_array_defaults_and_copies() -> None:
    backend = TorchBackend(dtype=ml.float64)
    assert backend.array([1.5]).dtype == torch.float64
    assert backend.array([1, 2]).dtype == torch.int64
    assert backend.array([True]).dtype == torch.bool
    assert backend.array(torch.ones(2, dtype=torch.float32)).dtype == torch.float64
    source = np.ones(3)
    made = backend.array(source)
    source[0] = 5.0
    check(made, np.ones(3))
    assert TorchBackend().ones(2).dtype == torch.float32


def test_random_creators_and_seed() -> None:
    backend = TorchBackend()
    backend.set_seed(7)
    a, u, i = backend.randn(3, 4), backend.rand(50), backend.randint(2, 5, (40,))
    assert a.dtype == torch.float32 and a.shape == (3, 4)
    assert bool(((u >= 0) & (u < 1)).all())
    assert i.dtype == torch.int64 and int(i.min()) >= 2 and int(i.max()) < 5
    backend.set_seed(7)
    assert torch.equal(backend.randn(3, 4), a)
    assert backend.randn(2, dtype=ml.float64).dtype == torch.float64


def test_set_seed_seeds_its_own_generator_only() -> None:
    backend = TorchBackend()
    before = torch.get_rng_state()
    backend.set_seed(3)
    x = backend.ones(8, 8)
    first = kn.dropout(x, 0.5, backend.next_rng())
    backend.set_seed(3)
    assert torch.equal(kn.dropout(x, 0.5, backend.next_rng()), first)
    assert isinstance(backend.next_rng(), torch.Generator)
    assert torch.equal(torch.get_rng_state(), before)


def test_arange() -> None:
    backend = TorchBackend()
    check(backend.arange(5), np.arange(5))
    assert backend.arange(5).dtype == torch.int64
    check(backend.arange(1.0, 2.0, 0.25), np.arange(1.0, 2.0, 0.25))
    assert backend.arange(1.0, 2.0, 0.25).dtype == torch.float32
    assert backend.arange(3, dtype=ml.float64).dtype == torch.float64


def test_to_numpy_and_cast() -> None:
    backend = TorchBackend()
    x = backend.randn(3)
    y = x.clone().requires_grad_(True) * 2
    check(backend.to_numpy(y), 2 * x.numpy())
    assert backend.cast(x, ml.int64).dtype == torch.int64
    assert backend.to_numpy(3.0) == 3.0


def test_kernel_table_binds_dtype_and_device() -> None:
    table = TorchBackend(dtype=ml.float64).kernel_table()
    assert set(table) >= {op.name for op in tensor_ops()} | set(EXTRA_KERNELS)
    out = table["to_tensor"]([1.0, 2.0])
    assert out.dtype == torch.float64 and out.device == torch.device("cpu")
    assert table["to_tensor"](2).dtype == torch.int64
    assert TorchBackend(dtype=ml.float16).kernel_table()["to_tensor"](1.0).dtype == torch.float16


@pytest.mark.parametrize("name", list(TorchBackend.exprs))
def test_exprs_agree_with_kernels(name: str) -> None:
    template = TorchBackend.exprs[name]
    if name.startswith("shift"):
        a, b = tt(np.array([[1, 8], [-4, 3]])), tt(np.array([1, 2]))
    elif name == "matmul":
        a, b = tt(rnd(2, 3, seed=91)), tt(rnd(3, 4, seed=92))
    else:
        a, b = tt(rnd(2, 3, seed=91)), tt(rnd(3, seed=92, lo=0.5, hi=2))
    pairs = [(a, b)] if name == "matmul" else [(a, b), (a, 2), (3, b)]
    for left, right in pairs:
        got = eval(template.format("left", "right"), {}, {"left": left, "right": right})
        torch.testing.assert_close(got, getattr(kn, name)(left, right), rtol=0, atol=0,
                                   equal_nan=True)
