"""NumPy backend: every kernel against PyTorch float64 (or an explicit NumPy formula), every VJP
against PyTorch autograd in float64 and, for small inputs, central finite differences.

Each ``Case`` is one call of a kernel with catalogue-ordered arguments and a reference that
takes the same arguments with the arrays turned into float64 torch tensors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mithril as ml
from mithril.backends.numpy import NumpyBackend
from mithril.backends.numpy import kernels as K
from mithril.backends.numpy import vjps as V
from mithril.errors import BackendUnavailableError
from mithril.framework.ops import CATALOGUE, tensor_ops
from tests.backends.kernel_view import KernelView

K = KernelView(K, NumpyBackend)  # type: ignore[assignment]
V = KernelView(V, NumpyBackend)  # type: ignore[assignment]

RNG = np.random.default_rng(20240611)
FD_MAX_SIZE = 150  # finite differences only for inputs this small
FD_EPS = 1e-6


def rand(*shape: int, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Standard normal samples, or uniform in ``[low, high)``."""
    if low is not None:
        return RNG.uniform(low, high, shape)
    return RNG.standard_normal(shape)


def distinct(*shape: int) -> np.ndarray:
    """Values at least 0.01 apart (no ties), randomly placed."""
    n = int(np.prod(shape))
    return (RNG.permutation(n) * 0.01 - n * 0.005).reshape(shape) + 0.001


@dataclass
class Case:
    op: str
    args: tuple[Any, ...]
    ref: Callable[..., Any]
    grads: tuple[int, ...] = ()  # argument positions to differentiate
    name: str = ""

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}" if self.name else self.op


def to_torch(a: Any, requires_grad: bool = False) -> Any:
    if isinstance(a, np.ndarray):
        t = torch.from_numpy(a.copy())
        if requires_grad:
            t.requires_grad_(True)
        return t
    return a


def to_np(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        return t.detach().numpy()
    if isinstance(t, tuple | list):
        return type(t)(to_np(v) for v in t)
    return t


def first(x: Any) -> Any:
    return x[0] if isinstance(x, tuple) else x


# ----------------------------------------------------------------------------------------------
# References that need a little glue
# ----------------------------------------------------------------------------------------------
def t_prod(x: torch.Tensor, axis: Any, keepdim: bool) -> torch.Tensor:
    axes = tuple(range(x.ndim)) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    axes = tuple(sorted(a % x.ndim for a in axes))
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = x.permute(*rest, *axes).reshape(*[x.shape[a] for a in rest], -1)
    out = moved.prod(-1)
    if keepdim:
        for a in axes:
            out = out.unsqueeze(a)
    return out


def t_reduce(name: str) -> Callable[..., torch.Tensor]:
    def ref(x: torch.Tensor, axis: Any = None, keepdim: bool = False, *rest: Any) -> Any:
        dim = tuple(range(x.ndim)) if axis is None else axis
        if name == "sum":
            return torch.sum(x, dim=dim, keepdim=keepdim)
        if name == "mean":
            return torch.mean(x, dim=dim, keepdim=keepdim)
        if name == "max":
            return torch.amax(x, dim=dim, keepdim=keepdim)
        if name == "min":
            return torch.amin(x, dim=dim, keepdim=keepdim)
        if name == "variance":
            return torch.var(x, dim=dim, keepdim=keepdim, correction=rest[0])
        raise ValueError(name)

    return ref


def t_conv(nd: int) -> Callable[..., torch.Tensor]:
    def ref(x: torch.Tensor, w: torch.Tensor, b: Any, stride: Any, padding: Any, dilation: Any,
            groups: int) -> torch.Tensor:
        flat_pad: list[int] = []
        for lo, hi in reversed(padding):
            flat_pad += [lo, hi]
        conv = F.conv1d if nd == 1 else F.conv2d
        return conv(F.pad(x, flat_pad), w, b, stride, 0, dilation, groups)

    return ref


def t_pad(x: torch.Tensor, pad_width: Any) -> torch.Tensor:
    flat: list[int] = []
    for lo, hi in reversed(pad_width):
        flat += [lo, hi]
    return F.pad(x, flat)


def t_batch_norm(training: bool) -> Callable[..., Any]:
    def ref(x: torch.Tensor, w: Any, b: Any, rm: Any, rv: Any, momentum: float,
            eps: float) -> Any:
        rm2 = None if rm is None else rm.detach().clone()
        rv2 = None if rv is None else rv.detach().clone()
        out = F.batch_norm(x, rm2, rv2, w, b, training or rm is None, momentum, eps)
        return out, rm2, rv2

    return ref


def t_sdp(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, is_causal: bool,
          scale: Any) -> torch.Tensor:
    if is_causal:  # torch refuses is_causal together with a mask: fold it in by hand
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        if mask is None:
            mask = causal
        elif mask.dtype == torch.bool:
            mask = mask & causal
        else:
            mask = mask.masked_fill(~causal, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64,
                "int32": torch.int32, "bool": torch.bool}


# ----------------------------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------------------------
def binary_cases() -> list[Case]:
    refs: dict[str, Callable[..., Any]] = {
        "add": lambda a, b: a + b, "subtract": lambda a, b: a - b,
        "multiply": lambda a, b: a * b, "divide": lambda a, b: a / b,
        "power": lambda a, b: a ** b,
        "minimum": lambda a, b: torch.minimum(torch.as_tensor(a, dtype=torch.float64),
                                              torch.as_tensor(b, dtype=torch.float64)),
        "maximum": lambda a, b: torch.maximum(torch.as_tensor(a, dtype=torch.float64),
                                              torch.as_tensor(b, dtype=torch.float64)),
    }
    cases = []
    for op, ref in refs.items():
        def left(*s: int, op: str = op) -> np.ndarray:
            return rand(*s, low=0.5, high=2.0) if op == "power" else rand(*s)

        def right(*s: int, op: str = op) -> np.ndarray:
            if op == "divide":
                return rand(*s, low=0.5, high=2.0) * RNG.choice([-1, 1], s)
            return rand(*s, low=-1.5, high=1.5) if op == "power" else rand(*s)

        cases += [
            Case(op, (left(3, 4), right(3, 4)), ref, (0, 1), "same"),
            Case(op, (left(2, 3, 4), right(4)), ref, (0, 1), "bcast-rank"),
            Case(op, (left(3, 1), right(1, 4)), ref, (0, 1), "bcast-both"),
            Case(op, (left(2, 3), 1.5), ref, (0,), "number-right"),
            Case(op, (1.5 if op != "divide" else 0.7, right(2, 3)), ref, (1,), "number-left"),
        ]
    return cases


def comparison_cases() -> list[Case]:
    refs = {"greater": torch.gt, "less": torch.lt, "greater_equal": torch.ge,
            "less_equal": torch.le, "equal": torch.eq, "not_equal": torch.ne}
    cases = []
    for sa, sb in (((4, 5), (5,)), ((2, 3, 4), (2, 1, 4))):
        a, b = RNG.integers(-3, 3, sa), RNG.integers(-3, 3, sb)
        cases += [Case(op, (a, b), ref, name=f"int-{sa}") for op, ref in refs.items()]
        cases += [Case(op, (rand(*sa), 0.1), ref, name=f"float-number-{sa}")
                  for op, ref in refs.items()]
        p, q = RNG.random(sa) > 0.5, RNG.random(sb) > 0.5
        cases += [Case("logical_and", (p, q), torch.logical_and, name=str(sa)),
                  Case("logical_or", (p, q), torch.logical_or, name=str(sa)),
                  Case("logical_xor", (p, q), torch.logical_xor, name=str(sa)),
                  Case("logical_not", (p,), torch.logical_not, name=str(sa))]
        ints, shifts = RNG.integers(0, 100, sa), RNG.integers(0, 4, sb)
        cases += [Case("shift_left", (ints, shifts), torch.bitwise_left_shift, name=str(sa)),
                  Case("shift_right", (ints, shifts), torch.bitwise_right_shift, name=str(sa)),
                  Case("floor_divide", (rand(*sa) * 5, rand(*sb, low=0.5, high=2.0)),
                       torch.floor_divide, name=f"float-{sa}"),
                  Case("floor_divide", (RNG.integers(-9, 9, sa), 4), torch.floor_divide,
                       name=f"int-{sa}")]
    for shape in ((3, 4), (7,)):
        nans = rand(*shape)
        nans.flat[[0, 2]] = np.nan
        cases.append(Case("isnan", (nans,), torch.isnan, name=str(shape)))
    labels = RNG.integers(0, 5, (3, 4))
    cases.append(Case("one_hot", (labels, 5),
                      lambda t, n: torch.nn.functional.one_hot(t, n).bool(), name="3x4"))
    return cases


def unary_cases() -> list[Case]:
    table: list[tuple[str, Callable[..., Any], Callable[..., np.ndarray], bool]] = [
        ("negate", torch.neg, rand, True),
        ("absolute", torch.abs, rand, True),
        ("exp", torch.exp, rand, True),
        ("log", torch.log, lambda *s: rand(*s, low=0.2, high=3.0), True),
        ("sqrt", torch.sqrt, lambda *s: rand(*s, low=0.2, high=3.0), True),
        ("square", torch.square, rand, True),
        ("sin", torch.sin, rand, True),
        ("cos", torch.cos, rand, True),
        ("reciprocal", torch.reciprocal, lambda *s: rand(*s, low=0.3, high=2.0), True),
        ("relu", torch.relu, rand, True),
        ("sigmoid", torch.sigmoid, lambda *s: rand(*s) * 4, True),
        ("tanh", torch.tanh, rand, True),
        ("silu", F.silu, lambda *s: rand(*s) * 3, True),
        ("softplus", F.softplus, lambda *s: rand(*s) * 5, True),
        ("sign", torch.sign, rand, False),
        ("floor", torch.floor, lambda *s: rand(*s) * 3, False),
        ("stop_gradient", lambda x: x, rand, False),
    ]
    cases = []
    for op, ref, gen, diff in table:
        for shape in ((7,), (3, 4), (2, 3, 4)):
            cases.append(Case(op, (gen(*shape),), ref, (0,) if diff else (), str(shape)))
    for approx in (False, True):
        for shape in ((9,), (3, 5)):
            cases.append(Case("gelu", (rand(*shape) * 3, approx),
                              lambda x, a: F.gelu(x, approximate="tanh" if a else "none"),
                              (0,), f"{approx}-{shape}"))
    for slope in (0.01, 0.3):
        cases.append(Case("leaky_relu", (rand(3, 5), slope), F.leaky_relu, (0,), str(slope)))
    for lo, hi in ((-0.5, 0.7), (None, 0.2), (-0.1, None), (0.5, -0.5)):
        cases.append(Case("clamp", (rand(4, 5), lo, hi),
                          lambda x, a, b: torch.clamp(x, a, b), (0,), f"{lo}-{hi}"))
    bad = rand(3, 4)
    bad[0, 0], bad[1, 2], bad[2, 3] = np.nan, np.inf, -np.inf
    cases.append(Case("nan_to_num", (bad, 0.0, None, None),
                      lambda x, n, p, m: torch.nan_to_num(x, n, p, m), (0,), "default"))
    cases.append(Case("nan_to_num", (bad, 1.5, 9.0, -7.0),
                      lambda x, n, p, m: torch.nan_to_num(x, n, p, m), (0,), "values"))
    for op, ref in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
        for shape, axis in (((5,), -1), ((3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -1)):
            cases.append(Case(op, (rand(*shape) * 3, axis), lambda x, a, r=ref: r(x, a), (0,),
                              f"{shape}-{axis}"))
    for dt in (ml.float32, ml.int64, ml.bool_, ml.float64):
        cases.append(Case("cast", (rand(3, 4) * 3, dt),
                          lambda x, d: x.to(TORCH_DTYPES[d.name]),
                          (0,) if dt.kind == ml.float64.kind else (), dt.name))
    return cases


def where_cases() -> list[Case]:
    cond = RNG.random((3, 4)) > 0.5
    ref = torch.where
    return [
        Case("where", (cond, rand(3, 4), rand(3, 4)), ref, (1, 2), "arrays"),
        Case("where", (cond, rand(4), rand(3, 1)), ref, (1, 2), "bcast"),
        Case("where", (cond, rand(3, 4), -2.5), ref, (1,), "number"),
        Case("where", (cond, 1.0, rand(1, 4)), ref, (2,), "number-left"),
    ]


def linalg_cases() -> list[Case]:
    shapes = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)),
              ((4,), (4,)), ((2, 1, 3, 4), (3, 4, 2)), ((3, 4), (2, 4, 5))]
    cases = [Case("matmul", (rand(*a), rand(*b)), torch.matmul, (0, 1), f"{a}@{b}")
             for a, b in shapes]
    cases += [
        Case("linear", (rand(5, 4), rand(3, 4), rand(3)), F.linear, (0, 1, 2), "2d"),
        Case("linear", (rand(2, 5, 4), rand(3, 4), rand(3)), F.linear, (0, 1, 2), "3d"),
        Case("linear", (rand(5, 4), rand(3, 4), None), F.linear, (0, 1), "no-bias"),
        Case("linear", (rand(4), rand(3, 4), rand(3)), F.linear, (0, 1, 2), "1d"),
    ]
    return cases


def reduction_cases() -> list[Case]:
    cases = []
    variants = [((5,), None, False), ((3, 4), 1, False), ((3, 4), 0, True),
                ((2, 3, 4), (0, 2), False), ((2, 3, 4), -1, True), ((2, 3, 4), None, True)]
    for op in ("sum", "mean", "max", "min", "variance"):
        for shape, axis, keep in variants:
            extra = (1,) if op == "variance" else ()
            x = distinct(*shape) if op in ("max", "min") else rand(*shape)
            cases.append(Case(op, (x, axis, keep, *extra), t_reduce(op), (0,),
                              f"{shape}-{axis}-{keep}"))
        for shape, axis, keep in variants[:3]:
            if op == "variance":
                cases.append(Case(op, (rand(*shape), axis, keep, 0), t_reduce(op), (0,),
                                  f"biased-{shape}-{axis}"))
    for shape, axis, keep in variants:
        cases.append(Case("prod", (rand(*shape, low=0.5, high=1.5), axis, keep), t_prod, (0,),
                          f"{shape}-{axis}-{keep}"))
    with_zero = rand(3, 4)
    with_zero[1, 2] = 0.0
    with_zero[2, 0] = 0.0
    with_zero[2, 3] = 0.0
    cases.append(Case("prod", (with_zero, 1, False), t_prod, (0,), "zeros"))
    cases.append(Case("prod", (with_zero, None, False), t_prod, (0,), "zeros-all"))
    for op, ref in (("argmax", torch.argmax), ("argmin", torch.argmin)):
        for shape, axis, keep in (((5,), None, False), ((3, 4), 1, False), ((3, 4), 0, True),
                                  ((2, 3, 4), None, False)):
            cases.append(Case(op, (rand(*shape), axis, keep),
                              lambda x, a, k, r=ref: r(x, a, k), (), f"{shape}-{axis}-{keep}"))
    return cases


def shape_cases() -> list[Case]:
    return [
        Case("reshape", (rand(2, 3, 4), (6, 4)), torch.reshape, (0,), "plain"),
        Case("reshape", (rand(2, 3, 4), (4, -1)), torch.reshape, (0,), "minus-one"),
        Case("transpose", (rand(2, 3, 4), None), lambda x, a: x.permute(2, 1, 0), (0,), "none"),
        Case("transpose", (rand(2, 3, 4), (1, 2, 0)), lambda x, a: x.permute(*a), (0,), "perm"),
        Case("transpose", (rand(2, 3, 4), (-1, 0, 1)), lambda x, a: x.permute(*a), (0,),
             "negative"),
        Case("swap_axes", (rand(2, 3, 4), 0, 2), torch.transpose, (0,)),
        Case("swap_axes", (rand(2, 3, 4), -1, 1), torch.transpose, (0,), "negative"),
        Case("flatten", (rand(2, 3, 4), 0, -1), torch.flatten, (0,), "all"),
        Case("flatten", (rand(2, 3, 4, 2), 1, 2), torch.flatten, (0,), "middle"),
        Case("flatten", (rand(2, 3, 4), 1, -1), torch.flatten, (0,), "tail"),
        Case("squeeze", (rand(2, 1, 3, 1), None), lambda x, a: x.squeeze(), (0,), "all"),
        Case("squeeze", (rand(2, 1, 3, 1), 1), torch.squeeze, (0,), "axis"),
        Case("squeeze", (rand(2, 1, 3, 1), (1, -1)), torch.squeeze, (0,), "tuple"),
        Case("unsqueeze", (rand(2, 3), 0), torch.unsqueeze, (0,), "front"),
        Case("unsqueeze", (rand(2, 3), -1), torch.unsqueeze, (0,), "back"),
        Case("broadcast_to", (rand(3, 1), (2, 3, 4)), lambda x, s: x.expand(*s), (0,), "a"),
        Case("broadcast_to", (rand(4), (3, 4)), lambda x, s: x.expand(*s), (0,), "b"),
        Case("concat", (rand(2, 3), rand(4, 3), 0), lambda a, b, ax: torch.cat([a, b], ax),
             (0, 1), "axis0"),
        Case("concat", (rand(2, 3), rand(2, 1), rand(2, 2), -1),
             lambda a, b, c, ax: torch.cat([a, b, c], ax), (0, 1, 2), "axis-1"),
        Case("concat", (rand(2, 3), rand(4), None),
             lambda a, b, ax: torch.cat([a.reshape(-1), b.reshape(-1)]), (0, 1), "none"),
        Case("pad", (rand(2, 3), ((1, 2), (0, 1))), t_pad, (0,), "2d"),
        Case("pad", (rand(2, 3, 4), ((0, 0), (2, 0), (1, 1))), t_pad, (0,), "3d"),
    ]


INDICES = [1, -1, slice(1, 3), (slice(None), 0), (Ellipsis, 1), (None, 1, slice(None, None, 2)),
           (0, Ellipsis, None), (slice(None), None, slice(0, 2), -2)]


def index_cases() -> list[Case]:
    cases = [Case("indexer", (rand(4, 3, 5), idx), lambda x, i: x[i], (0,), str(k))
             for k, idx in enumerate(INDICES)]
    # torch has no negative steps: the same selection through flip
    cases.append(Case("indexer", (rand(4, 3, 5), (slice(None, None, -1), 2, slice(1, None))),
                      lambda x, i: x.flip(0)[:, 2, 1:], (0,), "negative-step"))
    return cases


def conv_cases() -> list[Case]:
    cases = []
    conv2 = [  # (input, weight, stride, padding, dilation, groups)
        ((2, 3, 6, 5), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, "same"),
        ((2, 3, 7, 6), (4, 3, 3, 2), (2, 1), ((0, 0), (0, 0)), (1, 1), 1, "stride"),
        ((1, 4, 7, 7), (4, 2, 3, 3), (1, 2), ((1, 2), (0, 1)), (1, 1), 2, "groups-asym"),
        ((2, 2, 8, 7), (3, 2, 2, 3), (1, 1), ((2, 1), (1, 1)), (2, 2), 1, "dilation"),
        ((1, 4, 7, 8), (8, 1, 3, 3), (2, 2), ((1, 1), (1, 0)), (1, 2), 4, "depthwise"),
        ((3, 6, 5), (2, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, "unbatched"),
        ((1, 2, 4, 4), (3, 2, 1, 1), (1, 1), ((0, 0), (1, 1)), (1, 1), 1, "1x1-padded"),
    ]
    for xs, ws, s, p, d, g, name in conv2:
        cases.append(Case("conv2d", (rand(*xs), rand(*ws), rand(ws[0]), s, p, d, g), t_conv(2),
                          (0, 1, 2), name))
    xs, ws = (1, 2, 5, 5), (3, 2, 3, 3)
    cases.append(Case("conv2d", (rand(*xs), rand(*ws), None, (1, 1), ((1, 0), (0, 1)), (1, 1),
                                 1), t_conv(2), (0, 1), "no-bias"))
    conv1 = [
        ((2, 3, 9), (4, 3, 3), (1,), ((1, 1),), (1,), 1, "same"),
        ((2, 4, 10), (6, 2, 2), (3,), ((2, 1),), (2,), 2, "strided-groups"),
        ((3, 8), (2, 3, 4), (1,), ((2, 1),), (1,), 1, "unbatched-even-kernel"),
    ]
    for xs, ws, s, p, d, g, name in conv1:
        cases.append(Case("conv1d", (rand(*xs), rand(*ws), rand(ws[0]), s, p, d, g), t_conv(1),
                          (0, 1, 2), name))
    return cases


def pool_cases() -> list[Case]:
    def mp2(x: Any, k: Any, s: Any, p: Any, d: Any) -> Any:
        return F.max_pool2d(x, k, s, p, d)

    def mp1(x: Any, k: Any, s: Any, p: Any, d: Any) -> Any:
        return F.max_pool1d(x, k, s, p, d)

    def ap2(x: Any, k: Any, s: Any, p: Any) -> Any:
        return F.avg_pool2d(x, k, s, p, count_include_pad=True)

    cases = []
    for xs, k, s, p, d, name in [
        ((2, 3, 6, 6), (2, 2), None, (0, 0), (1, 1), "tiles"),
        ((2, 2, 7, 5), (2, 2), None, (0, 0), (1, 1), "tiles-cropped"),
        ((1, 2, 7, 7), (3, 3), (2, 2), (1, 1), (1, 1), "overlap-padded"),
        ((1, 2, 8, 7), (2, 3), (1, 2), (1, 1), (2, 1), "dilated"),
        ((3, 5, 6), (3, 2), (1, 3), (1, 0), (1, 1), "no-batch"),
    ]:
        cases.append(Case("max_pool2d", (distinct(*xs), k, s, p, d), mp2, (0,), name))
    for xs, k, s, p, d, name in [((2, 3, 8), (2,), None, (0,), (1,), "tiles"),
                                 ((2, 2, 9), (3,), (2,), (1,), (2,), "padded-dilated")]:
        cases.append(Case("max_pool1d", (distinct(*xs), k, s, p, d), mp1, (0,), name))
    for xs, k, s, p, name in [((2, 3, 6, 6), (2, 2), None, (0, 0), "tiles"),
                              ((1, 2, 7, 6), (3, 3), (2, 1), (1, 1), "overlap-padded"),
                              ((2, 2, 5, 7), (2, 3), (2, 3), (0, 1), "cropped")]:
        cases.append(Case("avg_pool2d", (rand(*xs), k, s, p), ap2, (0,), name))
    return cases


def norm_cases() -> list[Case]:
    cases = []
    for xs, name in (((4, 3, 5, 2), "4d"), ((6, 3), "2d"), ((3, 2, 5), "3d")):
        c = xs[1]
        w, b = rand(c) + 1.0, rand(c)
        rm, rv = rand(c), rand(c, low=0.5, high=2.0)
        cases.append(Case("batch_norm", (rand(*xs) * 2 + 1, w, b, rm, rv, 0.1, 1e-5),
                          t_batch_norm(True), (0, 1, 2), name))
        cases.append(Case("batch_norm_inference", (rand(*xs), w, b, rm, rv, 0.1, 1e-5),
                          t_batch_norm(False), (), name))
    x = rand(4, 3, 2)
    cases.append(Case("batch_norm", (x, None, None, None, None, 0.3, 1e-3), t_batch_norm(True),
                      (0,), "bare"))
    cases.append(Case("batch_norm", (x, rand(3), None, rand(3), rand(3, low=0.5, high=1.0),
                                     0.3, 1e-3), t_batch_norm(True), (0, 1), "weight-only"))
    cases.append(Case("batch_norm_inference", (x, None, rand(3), None, None, 0.1, 1e-5),
                      t_batch_norm(False), (), "no-stats"))

    def ln(x: Any, w: Any, b: Any, shape: Any, eps: float) -> Any:
        return F.layer_norm(x, shape, w, b, eps)

    for xs, ns, affine, name in (((3, 5), (5,), True, "1d"), ((2, 3, 4), (3, 4), True, "2d"),
                                 ((2, 3, 4), (4,), False, "plain")):
        w = rand(*ns) + 1 if affine else None
        b = rand(*ns) if affine else None
        cases.append(Case("layer_norm", (rand(*xs), w, b, ns, 1e-5), ln,
                          (0, 1, 2) if affine else (0,), name))

    def gn(x: Any, w: Any, b: Any, groups: int, eps: float) -> Any:
        return F.group_norm(x, groups, w, b, eps)

    for xs, groups, affine, name in (((2, 6, 3, 2), 3, True, "4d"), ((3, 4, 5), 2, True, "3d"),
                                     ((2, 4, 3), 4, False, "plain")):
        w = rand(xs[1]) + 1 if affine else None
        b = rand(xs[1]) if affine else None
        cases.append(Case("group_norm", (rand(*xs), w, b, groups, 1e-5), gn,
                          (0, 1, 2) if affine else (0,), name))
    return cases


def misc_cases() -> list[Case]:
    idx = np.array([[0, 2, 2], [4, 0, 2]])
    cases = [Case("embedding", (idx, rand(5, 3)), F.embedding, (1,), "repeats"),
             Case("embedding", (np.array([3, 1]), rand(4, 2)), F.embedding, (1,), "1d"),
             Case("embedding", (np.array(2), rand(4, 2)), F.embedding, (1,), "0d")]
    q, k, v = rand(2, 3, 4), rand(2, 5, 4), rand(2, 5, 3)
    bool_mask = RNG.random((3, 5)) > 0.3
    bool_mask[:, 0] = True
    cases += [
        Case("scaled_dot_product", (q, k, v, None, False, None), t_sdp, (0, 1, 2), "plain"),
        Case("scaled_dot_product", (q, k, v, bool_mask, False, None), t_sdp, (0, 1, 2), "bool"),
        Case("scaled_dot_product", (q, k, v, rand(2, 3, 5), False, 0.3), t_sdp, (0, 1, 2),
             "float-scale"),
        Case("scaled_dot_product", (rand(2, 2, 4, 3), rand(2, 1, 4, 3), rand(4, 2), None, True,
                                    None), t_sdp, (0, 1, 2), "causal-bcast"),
        Case("scaled_dot_product", (rand(3, 4), rand(5, 4), rand(5, 2), bool_mask, True, None),
             t_sdp, (0, 1, 2), "causal-mask"),
    ]
    return cases


CASES = (binary_cases() + comparison_cases() + unary_cases() + where_cases() + linalg_cases()
         + reduction_cases() + shape_cases() + index_cases() + conv_cases() + pool_cases()
         + norm_cases() + misc_cases())
GRAD_CASES = [c for c in CASES if c.grads]


# ----------------------------------------------------------------------------------------------
# Generic checks
# ----------------------------------------------------------------------------------------------
def run_ref(case: Case, requires: tuple[int, ...] = ()) -> tuple[Any, list[Any]]:
    targs = [to_torch(a, i in requires) for i, a in enumerate(case.args)]
    return case.ref(*targs), targs


def assert_close(actual: Any, expected: Any, rtol: float = 1e-9, atol: float = 1e-11) -> None:
    if isinstance(expected, tuple | list):
        assert isinstance(actual, tuple | list) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_close(a, e, rtol, atol)
        return
    if expected is None:
        assert actual is None
        return
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.dtype.kind in "biu":
        assert actual.dtype.kind == expected.dtype.kind, (actual.dtype, expected.dtype)
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_matches_torch(case: Case) -> None:
    out = getattr(K, case.op)(*case.args)
    expected, _ = run_ref(case)
    assert_close(out, to_np(expected), rtol=1e-9, atol=1e-11)
    fwd = getattr(K, f"{case.op}_fwd", None)
    if fwd is not None:
        assert_close(fwd(*case.args)[0], to_np(expected), rtol=1e-9, atol=1e-11)


def output_grad(out: Any) -> Any:
    """A random cotangent for the kernel output (first output only for tuples)."""
    if isinstance(out, tuple):
        return (output_grad(out[0]), None, None)
    g = rand(*np.shape(out))
    dtype = np.asarray(out).dtype
    return g.astype(dtype) if dtype.kind == "f" else g


def vjp_results(case: Case, g: Any) -> list[tuple[Any, ...]]:
    """The VJP without a cache and, when the kernel has a ``_fwd`` variant, with its cache."""
    kernel = getattr(K, case.op)
    vjp = getattr(V, f"{case.op}_vjp")
    out = kernel(*case.args)
    results = [vjp(g, out, *case.args)]
    fwd = getattr(K, f"{case.op}_fwd", None)
    if fwd is not None:
        out2, cache = fwd(*case.args)
        results.append(vjp(g, out2, *case.args, cache=cache))
    return results


def check_entries(case: Case, grads: tuple[Any, ...]) -> None:
    assert len(grads) == len(case.args)
    for i, (a, gr) in enumerate(zip(case.args, grads, strict=True)):
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
            assert gr is None, f"entry {i} should be None"
        elif i in case.grads:
            assert gr is not None and np.shape(gr) == a.shape and gr.dtype == a.dtype
            assert gr.flags.writeable, f"entry {i} is a read-only view"


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_vjp_matches_torch_autograd(case: Case) -> None:
    g = output_grad(getattr(K, case.op)(*case.args))
    out_t, targs = run_ref(case, case.grads)
    expected = torch.autograd.grad(first(out_t), [targs[i] for i in case.grads],
                                   torch.from_numpy(np.asarray(first(g)).copy()))
    for grads in vjp_results(case, g):
        check_entries(case, grads)
        for i, e in zip(case.grads, expected, strict=True):
            assert_close(grads[i], e.numpy(), rtol=1e-8, atol=1e-10)


def numeric_grad(case: Case, pos: int, g: np.ndarray) -> np.ndarray:
    kernel = getattr(K, case.op)
    args = list(case.args)
    x = args[pos].copy()
    args[pos] = x
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        orig = x[idx]
        x[idx] = orig + FD_EPS
        plus = np.sum(first(kernel(*args)) * g)
        x[idx] = orig - FD_EPS
        minus = np.sum(first(kernel(*args)) * g)
        x[idx] = orig
        out[idx] = (plus - minus) / (2 * FD_EPS)
    return out


FD_CASES = [c for c in GRAD_CASES
            if all(np.size(c.args[i]) <= FD_MAX_SIZE for i in c.grads)
            and c.op != "nan_to_num"  # not differentiable at the NaN / inf entries
            and c.id != "cast-float32"]  # rounding to float32 defeats finite differences


@pytest.mark.parametrize("case", FD_CASES, ids=lambda c: c.id)
def test_vjp_matches_finite_differences(case: Case) -> None:
    g = output_grad(getattr(K, case.op)(*case.args))
    for grads in vjp_results(case, g):
        for i in case.grads:
            assert_close(grads[i], numeric_grad(case, i, first(g)), rtol=1e-5, atol=1e-6)


def as_float32(a: Any) -> Any:
    return a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a


F32_CASES = [c for c in CASES if any(isinstance(a, np.ndarray) and a.dtype.kind == "f"
                                     for a in c.args) and c.op != "cast"]


@pytest.mark.parametrize("case", F32_CASES, ids=lambda c: c.id)
def test_float32_stays_float32(case: Case) -> None:
    args32 = tuple(as_float32(a) for a in case.args)
    out64 = getattr(K, case.op)(*case.args)
    out32 = getattr(K, case.op)(*args32)
    for o32, o64 in zip(*(v if isinstance(v, tuple) else (v,) for v in (out32, out64)),
                        strict=True):
        if o64 is None:
            continue
        if np.asarray(o64).dtype.kind == "f":
            assert np.asarray(o32).dtype == np.float32
        o32, o64 = np.asarray(o32, dtype=np.float64), np.asarray(o64, dtype=np.float64)
        in_range = np.abs(o64) < 1e38  # nan_to_num's default bounds differ by dtype
        scale = float(np.max(np.abs(o64[in_range]), initial=1.0))
        np.testing.assert_allclose(o32[in_range], o64[in_range], rtol=2e-4,
                                   atol=2e-5 * scale + 1e-6)
    if case.grads:
        g32 = output_grad(out32)
        g32 = tuple(as_float32(v) for v in g32) if isinstance(g32, tuple) else as_float32(g32)
        grads = getattr(V, f"{case.op}_vjp")(g32, out32, *args32)
        for i in case.grads:
            assert grads[i].dtype == np.float32, (i, grads[i].dtype)


# ----------------------------------------------------------------------------------------------
# Coverage of the catalogue and calling conventions
# ----------------------------------------------------------------------------------------------
def test_every_primitive_has_a_kernel_and_every_differentiable_one_a_vjp() -> None:
    for op in tensor_ops():
        kernel = K.registry.kernels.get((op.name, "default"))
        if kernel is None:  # a derived primitive NumPy runs from its decomposition
            assert not op.core, f"no kernel for {op.name}"
            continue
        n_args = len(op.inputs) + (1 if op.random else 0)
        if not op.variadic:
            inspect.signature(kernel).bind(*range(n_args))
        if op.modal:
            assert callable(K.registry.kernels.get((op.name, "inference"))), op.name
        if op.differentiable:
            vjp = K.registry.vjps.get(op.name)
            assert callable(vjp), f"no VJP for {op.name}"
            inspect.signature(vjp).bind(0, 0, *range(len(op.inputs)), cache=None)
    assert callable(K.split_rng)


def test_cases_cover_every_primitive() -> None:
    """Every primitive is checked here or by the cross-backend walk (tests/catalogue_cases.py,
    which compares these kernels and VJPs with three independent autodiff engines)."""
    from tests.catalogue_cases import CASES as WALKED
    from tests.catalogue_cases import NOT_WALKED

    covered = {c.op.removesuffix("_inference") for c in CASES} | {"dropout", "size", "item",
                                                                  "to_tensor"}
    covered |= set(WALKED) | set(NOT_WALKED)
    missing = {op.name for op in tensor_ops()} - covered
    assert not missing, missing


def test_kernel_table_holds_only_kernels() -> None:
    table = NumpyBackend().kernel_table()
    assert {op.name for op in tensor_ops()} <= set(table)
    assert all(not name[0].isupper() for name in table)


def test_thin_kernels_are_numpys_own_functions() -> None:
    """Generated code calls NumPy's function itself for these (no Python call in between)."""
    table = NumpyBackend().kernel_table()
    own = {"exp": np.exp, "tanh": np.tanh, "maximum": np.maximum, "where": np.where,
           "reshape": np.reshape, "divide": np.true_divide, "eigvalsh_fwd": np.linalg.eigh}
    assert {name: table[name] for name in own} == own


def test_loop_kernels_keep_the_catalogue_signature() -> None:
    for mode in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        names = list(CATALOGUE[mode].input_names)
        for fn in (K.registry.kernels[(mode, "default")], K.registry.kernels[(mode, "with_cache")]):
            assert list(inspect.signature(fn).parameters) == names, mode


# ----------------------------------------------------------------------------------------------
# Ops with special conventions
# ----------------------------------------------------------------------------------------------
def test_concat_takes_axis_last_or_as_keyword() -> None:
    a, b = rand(2, 3), rand(2, 3)
    np.testing.assert_array_equal(K.concat(a, b, 1), np.concatenate([a, b], 1))
    np.testing.assert_array_equal(K.concat(a, b, axis=1), np.concatenate([a, b], 1))
    np.testing.assert_array_equal(K.concat(a, b), np.concatenate([a, b], 0))
    g = rand(2, 6)
    da, db, daxis = V.concat_vjp(g, None, a, b, 1)
    np.testing.assert_array_equal(da, g[:, :3])
    np.testing.assert_array_equal(db, g[:, 3:])
    assert daxis is None


def test_size_item_to_tensor() -> None:
    x = rand(2, 3, 4)
    assert K.size(x) == 24 and K.size(x, 1) == 3 and K.size(x, -1) == 4
    assert isinstance(K.size(x, 0), int)
    v = K.item(np.array([[2.5]]))
    assert v == 2.5 and isinstance(v, float)
    assert K.item(np.array(3, np.int64)) == 3 and isinstance(K.item(np.array(3)), int)
    t = K.to_tensor([[1.0, 2], [3, 4]], float_dtype=np.float32)
    assert t.dtype == np.float32 and t.shape == (2, 2)
    assert K.to_tensor(3).dtype == np.int64
    assert K.to_tensor([True, False]).dtype == np.bool_
    table = NumpyBackend(dtype=ml.float64).kernel_table()
    assert table["to_tensor"](1.5).dtype == np.float64
    assert NumpyBackend().kernel_table()["to_tensor"]([0.5]).dtype == np.float32


def test_indexer_on_python_sequence_and_scalar_result() -> None:
    assert K.indexer((1, 2, 3), 1) == 2
    assert V.indexer_vjp(1.0, 2, (1, 2, 3), 1) == (None, None)
    out = K.indexer(rand(3), 1)
    assert isinstance(out, np.ndarray) and out.shape == ()


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "sigmoid", "softplus", "silu"])
def test_stable_for_huge_inputs(op: str) -> None:
    x = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out32 = getattr(K, op)(x.astype(np.float32))
        out64 = getattr(K, op)(x)
    ref_fn = {"softmax": lambda t: torch.softmax(t, -1),
              "log_softmax": lambda t: torch.log_softmax(t, -1), "sigmoid": torch.sigmoid,
              "softplus": F.softplus, "silu": F.silu}[op]
    ref = ref_fn(torch.from_numpy(x)).numpy()
    assert np.all(np.isfinite(out32)) and out32.dtype == np.float32
    np.testing.assert_allclose(out64, ref, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(out32, ref, rtol=1e-6, atol=1e-30)
    g = np.ones_like(x)
    grad = getattr(V, f"{op}_vjp")(g, out64, x)[0]
    assert np.all(np.isfinite(grad))


def test_softplus_threshold_matches_torch_exactly_in_float32() -> None:
    x = np.array([19.0, 20.0, 20.5, 25.0, 80.0], np.float32)
    np.testing.assert_array_equal(K.softplus(x), F.softplus(torch.from_numpy(x)).numpy())


def test_max_reduction_ties_split_evenly_like_amax() -> None:
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    g = np.array([1.0, 6.0])
    grad = V.max_vjp(g, K.max(x, 1), x, 1, False)[0]
    xt = torch.from_numpy(x).requires_grad_(True)
    torch.amax(xt, 1).backward(torch.from_numpy(g))
    np.testing.assert_allclose(grad, xt.grad.numpy())
    grad = V.min_vjp(np.ones(()), K.min(x), x)[0]
    np.testing.assert_allclose(grad, [[1, 0, 0], [0, 0, 0]])


def test_maximum_minimum_ties_split_half_like_torch() -> None:
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 5.0])
    g = np.ones(3)
    for op, tfn in (("maximum", torch.maximum), ("minimum", torch.minimum)):
        grads = getattr(V, f"{op}_vjp")(g, getattr(K, op)(a, b), a, b)
        at, bt = (torch.from_numpy(v).requires_grad_(True) for v in (a, b))
        tfn(at, bt).sum().backward()
        np.testing.assert_allclose(grads[0], at.grad.numpy())
        np.testing.assert_allclose(grads[1], bt.grad.numpy())


def test_max_pool_ties_go_to_first_maximum_like_torch() -> None:
    x = np.zeros((1, 2, 4, 6))
    x[0, 1, 1:3, 2:5] = 1.0
    for args in (((2, 2), None, (0, 0), (1, 1)), ((3, 3), (1, 2), (1, 1), (1, 1))):
        out, cache = K.max_pool2d_fwd(x, *args)
        g = rand(*out.shape)
        grad = V.max_pool2d_vjp(g, out, x, *args, cache=cache)[0]
        xt = torch.from_numpy(x).requires_grad_(True)
        F.max_pool2d(xt, *args).backward(torch.from_numpy(g))
        np.testing.assert_allclose(grad, xt.grad.numpy())


def test_power_gradient_conventions_at_zero() -> None:
    x, y = np.array([0.0, 2.0, 0.0]), np.array([0.0, 0.0, 2.0])
    grads = V.power_vjp(np.ones(3), K.power(x, y), x, y)
    xt, yt = (torch.from_numpy(v).requires_grad_(True) for v in (x, y))
    (xt ** yt).sum().backward()
    np.testing.assert_allclose(grads[0], xt.grad.numpy())
    np.testing.assert_allclose(grads[1], yt.grad.numpy())


def test_batch_norm_running_statistics_use_unbiased_variance() -> None:
    x = rand(5, 3, 4)
    rm, rv = rand(3), rand(3, low=0.5, high=1.5)
    _, new_mean, new_var = K.batch_norm(x, None, None, rm, rv, 0.2, 1e-5)
    n = 5 * 4
    batch_mean = x.mean(axis=(0, 2))
    batch_var = x.var(axis=(0, 2)) * n / (n - 1)
    np.testing.assert_allclose(new_mean, 0.8 * rm + 0.2 * batch_mean, rtol=1e-12)
    np.testing.assert_allclose(new_var, 0.8 * rv + 0.2 * batch_var, rtol=1e-12)
    inf_out, m2, v2 = K.batch_norm_inference(x, None, None, rm, rv, 0.2, 1e-5)
    assert m2 is rm and v2 is rv
    np.testing.assert_allclose(inf_out, (x - rm[:, None]) / np.sqrt(rv[:, None] + 1e-5))


def test_embedding_gradient_scatter_adds_repeats() -> None:
    w = rand(4, 2)
    idx = np.array([1, 1, 3, 1])
    g = rand(4, 2)
    dw = V.embedding_vjp(g, K.embedding(idx, w), idx, w)[1]
    expected = np.zeros_like(w)
    for i, row in zip(idx, g, strict=True):
        expected[i] += row
    np.testing.assert_allclose(dw, expected)


def test_conv_matches_a_direct_loop_formula() -> None:
    """conv2d against a plain-Python definition of (strided, dilated, grouped) convolution."""
    x, w, b = rand(2, 4, 6, 5), rand(6, 2, 2, 3), rand(6)
    stride, pads, dil, groups = (2, 1), ((1, 0), (2, 1)), (2, 1), 2
    out = K.conv2d(x, w, b, stride, pads, dil, groups)
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    og, cg = 3, 2
    ho = (xp.shape[2] - dil[0] * 1 - 1) // stride[0] + 1
    wo = (xp.shape[3] - dil[1] * 2 - 1) // stride[1] + 1
    expected = np.zeros((2, 6, ho, wo))
    for n in range(2):
        for o in range(6):
            grp = o // og
            for i in range(ho):
                for j in range(wo):
                    acc = b[o]
                    for c in range(cg):
                        for a in range(2):
                            for e in range(3):
                                acc += (w[o, c, a, e] * xp[n, grp * cg + c,
                                                           i * stride[0] + a * dil[0],
                                                           j * stride[1] + e * dil[1]])
                    expected[n, o, i, j] = acc
    np.testing.assert_allclose(out, expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Dropout and random numbers
# ----------------------------------------------------------------------------------------------
def test_dropout_statistics_mask_and_gradient() -> None:
    backend = NumpyBackend()
    x = np.ones((200, 100), np.float32)
    out, mask = K.dropout_fwd(x, 0.3, backend.next_rng())
    assert out.dtype == np.float32 and mask.dtype == np.float32
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    g = rand(200, 100).astype(np.float32)
    grad = V.dropout_vjp(g, out, x, 0.3, cache=mask)
    assert len(grad) == 2 and grad[1] is None
    np.testing.assert_allclose(grad[0], g * kept / 0.7, rtol=1e-6)
    np.testing.assert_allclose(V.dropout_vjp(g, out, x, 0.3)[0], grad[0], rtol=1e-6)
    assert V.dropout_vjp(g, out, x, 0.3, backend.next_rng(), cache=mask)[2] is None


def test_dropout_rng_reproducible_and_advancing() -> None:
    backend = NumpyBackend()
    backend.set_seed(7)
    x = np.ones(1000)
    a = K.dropout(x, 0.5, backend.next_rng())
    b = K.dropout(x, 0.5, backend.next_rng())
    assert not np.array_equal(a, b)
    assert backend.next_rng() is backend.next_rng()
    backend.set_seed(7)
    np.testing.assert_array_equal(K.dropout(x, 0.5, backend.next_rng()), a)
    np.testing.assert_array_equal(K.dropout(x, 0.5, backend.next_rng()), b)
    assert K.split_rng(backend.next_rng(), 3) == [backend.next_rng()] * 3


def test_dropout_inference_and_zero_probability_are_identity() -> None:
    x = rand(3, 4)
    assert K.dropout_inference(x, 0.5) is x
    np.testing.assert_array_equal(K.dropout(x, 0.0, None), x)


# ----------------------------------------------------------------------------------------------
# The backend class
# ----------------------------------------------------------------------------------------------
def test_backend_basics() -> None:
    backend = NumpyBackend()
    assert backend.name == "numpy" and backend.manual_gradients
    assert backend.kernels is K.module and backend.vjps is V.module
    assert backend.native_dtype(ml.float64) == np.float64
    assert backend.native_dtype(ml.int32) == np.int32
    assert backend.ones(2, 3).dtype == np.float32
    assert NumpyBackend(dtype=ml.float64).randn(2).dtype == np.float64
    assert backend.array([1, 2]).dtype == np.int64
    src = np.arange(3.0)
    copy = backend.to_numpy(src)
    assert copy is not src and np.array_equal(copy, src)
    f = object()
    assert backend.wrap_jit(f) is f  # type: ignore[arg-type]
    assert backend.cast(backend.ones(2), ml.int64).dtype == np.int64


def test_backend_rejects_bfloat16_and_other_devices() -> None:
    with pytest.raises(TypeError, match="bfloat16"):
        NumpyBackend(dtype=ml.bfloat16)
    with pytest.raises(TypeError, match="bfloat16"):
        NumpyBackend().native_dtype(ml.bfloat16)
    with pytest.raises(TypeError, match="bfloat16"):
        K.cast(np.ones(2), ml.bfloat16)
    with pytest.raises(BackendUnavailableError):
        NumpyBackend(device="cuda")
    with pytest.raises(BackendUnavailableError):
        NumpyBackend(device="mps")
