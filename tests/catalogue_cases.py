"""Sample inputs for every primitive of the catalogue (used by the cross-backend walk).

Each case is ``(scalars, tensors)``: values of the primitive's scalar terminals (fixed when the
primitive is built) and NumPy float64 arrays for its tensor terminals (given at run time).
Inputs avoid points where a function is not differentiable (|x| away from 0 for abs, relu, ...)
so gradients compare cleanly.

Each walked primitive also has ``FORMULAS[name](scalars, tensors)``: its outputs (by terminal
name) written directly in PyTorch (float64) from the primitive's documented semantics (NumPy's /
PyTorch's), never with Mithril; gradients follow from ``torch.autograd`` on the same expressions
(``tests/test_catalogue_independent.py``). A new primitive adds one entry to each dict here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Case = tuple[dict[str, Any], dict[str, np.ndarray]]


def _away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.uniform(0.3, 2.0, shape)
    return x * rng.choice([-1.0, 1.0], shape)


def _pos(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape)


def _distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values far apart from each other (no ties for max/min/sort-like ops)."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) * 0.37 + rng.uniform(0, 0.1, shape)) - n * 0.15


def _spd(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Well-conditioned symmetric positive-definite matrices (batched)."""
    b = rng.standard_normal(shape)
    return b @ np.swapaxes(b, -1, -2) + shape[-1] * np.eye(shape[-1])


def _symmetric(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Symmetric matrices with well-separated eigenvalues (batched)."""
    q, _ = np.linalg.qr(rng.standard_normal(shape))
    values = np.arange(shape[-1]) * 1.5 - 2.0 + rng.uniform(0, 0.2, shape[:-1])
    return (q * values[..., None, :]) @ np.swapaxes(q, -1, -2)


SHAPES = [(3, 4), (2, 3, 5)]


def binary(fn: Callable[..., np.ndarray] = _away_from_zero) -> Callable[..., list[Case]]:
    def make(rng: np.random.Generator) -> list[Case]:
        return [({}, {"left": fn(rng, (3, 4)), "right": fn(rng, (3, 4))}),
                ({}, {"left": fn(rng, (2, 3, 4)), "right": fn(rng, (3, 1))}),
                ({}, {"left": fn(rng, (5,)), "right": fn(rng, (4, 5))})]
    return make


def unary(fn: Callable[..., np.ndarray] = _away_from_zero, **scalars: Any
          ) -> Callable[..., list[Case]]:
    def make(rng: np.random.Generator) -> list[Case]:
        return [(dict(scalars), {"input": fn(rng, s)}) for s in SHAPES]
    return make


def reduction(multi_axis: bool = True, **extra: Any) -> Callable[..., list[Case]]:
    def make(rng: np.random.Generator) -> list[Case]:
        cases = [({"axis": None, "keepdim": False, **extra}, {"input": _distinct(rng, (3, 4))}),
                 ({"axis": 1, "keepdim": True, **extra}, {"input": _distinct(rng, (3, 4))}),
                 ({"axis": -1, "keepdim": False, **extra}, {"input": _distinct(rng, (2, 5))})]
        if multi_axis:
            cases.append(({"axis": (0, 2), "keepdim": False, **extra},
                          {"input": _distinct(rng, (2, 3, 4))}))
        return cases
    return make


def _conv(nd: int) -> Callable[..., list[Case]]:
    def make(rng: np.random.Generator) -> list[Case]:
        cases = []
        for stride, pad, dil, groups, bias in [(1, 0, 1, 1, True), (2, 1, 1, 1, False),
                                                (1, 2, 2, 2, True), (2, 1, 1, 4, True)]:
            spatial = (9,) * nd
            k = (3,) * nd
            x = rng.standard_normal((2, 4, *spatial))
            w = rng.standard_normal((6 if groups != 4 else 8, 4 // groups, *k)) * 0.3
            tensors = {"input": x, "weight": w}
            if bias:
                tensors["bias"] = rng.standard_normal(w.shape[0])
            pads = tuple((pad, pad + (1 if i == 0 and stride == 1 else 0)) for i in range(nd))
            scalars = {"stride": (stride,) * nd, "padding": pads, "dilation": (dil,) * nd,
                       "groups": groups}
            if not bias:
                scalars["bias"] = None
            cases.append((scalars, tensors))
        return cases
    return make


def _conv_transpose(nd: int) -> Callable[..., list[Case]]:
    """Stride, padding (beyond the kernel: cropping), output_padding, dilation, groups."""
    def make(rng: np.random.Generator) -> list[Case]:
        cases = []
        for stride, pad, out_pad, dil, groups, k, bias in [
                (1, 0, 0, 1, 1, 3, True), (2, 1, 1, 1, 1, 3, False), (3, 2, 2, 2, 2, 2, True),
                (2, 3, 0, 1, 4, 2, True), ((2, 1) if nd == 2 else 2, 0, 0, 1, 1, 3, True)]:
            x = rng.standard_normal((2, 4, *(5, 4)[:nd]))
            w = rng.standard_normal((4, 2 if groups == 4 else 3, *(k,) * nd)) * 0.3
            tensors = {"input": x, "weight": w}
            if bias:
                tensors["bias"] = rng.standard_normal(w.shape[1] * groups)
            scalars: dict[str, Any] = {"stride": stride, "padding": pad,
                                       "output_padding": out_pad, "dilation": dil,
                                       "groups": groups}
            if not bias:
                scalars["bias"] = None
            cases.append((scalars, tensors))
        return cases
    return make


def _pool(nd: int, dilation: bool) -> Callable[..., list[Case]]:
    def make(rng: np.random.Generator) -> list[Case]:
        cases = []
        for k, s, p, d in [(2, None, 0, 1), (3, 2, 1, 1), (3, 1, 1, 2)]:
            if not dilation and d != 1:
                continue
            sc = {"kernel_size": (k,) * nd, "stride": None if s is None else (s,) * nd,
                  "padding": (p,) * nd}
            if dilation:
                sc["dilation"] = (d,) * nd
            cases.append((sc, {"input": _distinct(rng, (2, 3, *(8,) * nd))}))
        return cases
    return make


def _batch_norm(rng: np.random.Generator) -> list[Case]:
    x = rng.standard_normal((4, 3, 5, 5))
    return [({"momentum": 0.1, "eps": 1e-5},
             {"input": x, "weight": _pos(rng, (3,)), "bias": rng.standard_normal(3),
              "running_mean": rng.standard_normal(3), "running_var": _pos(rng, (3,))}),
            ({"momentum": 0.3, "eps": 1e-3, "weight": None, "bias": None, "running_mean": None,
              "running_var": None}, {"input": rng.standard_normal((6, 2))})]


def _layer_norm(rng: np.random.Generator) -> list[Case]:
    return [({"normalized_shape": (4,), "eps": 1e-5},
             {"input": rng.standard_normal((3, 4)), "weight": _pos(rng, (4,)),
              "bias": rng.standard_normal(4)}),
            ({"normalized_shape": (3, 4), "eps": 1e-5, "weight": None, "bias": None},
             {"input": rng.standard_normal((2, 3, 4))})]


def _group_norm(rng: np.random.Generator) -> list[Case]:
    return [({"num_groups": 2, "eps": 1e-5},
             {"input": rng.standard_normal((2, 4, 3, 3)), "weight": _pos(rng, (4,)),
              "bias": rng.standard_normal(4)})]


def _sdp(rng: np.random.Generator) -> list[Case]:
    q, k, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))
    return [({"is_causal": False, "scale": None, "attn_mask": None},
             {"query": q, "key": k, "value": v}),
            ({"is_causal": True, "scale": 0.3, "attn_mask": None},
             {"query": q, "key": k, "value": v})]


def _embedding(rng: np.random.Generator) -> list[Case]:
    return [({}, {"input": rng.integers(0, 6, (3, 4)), "weight": rng.standard_normal((6, 5))})]


def _matmul(rng: np.random.Generator) -> list[Case]:
    n = rng.standard_normal
    return [({}, {"left": n((3, 4)), "right": n((4, 5))}),
            ({}, {"left": n((2, 3, 4)), "right": n((4, 2))}),
            ({}, {"left": n((2, 1, 3, 4)), "right": n((5, 4, 2))}),
            ({}, {"left": n((4,)), "right": n((4, 3))})]


def _linear(rng: np.random.Generator) -> list[Case]:
    n = rng.standard_normal
    return [({}, {"input": n((3, 4)), "weight": n((5, 4)), "bias": n(5)}),
            ({"bias": None}, {"input": n((2, 3, 4)), "weight": n((5, 4))})]


def _where(rng: np.random.Generator) -> list[Case]:
    return [({}, {"condition": rng.random((3, 4)) > 0.5, "input1": rng.standard_normal((3, 4)),
                  "input2": rng.standard_normal((1, 4))})]


def _concat(rng: np.random.Generator) -> list[Case]:
    n = rng.standard_normal
    return [({"axis": 0, "n": 2}, {"input1": n((2, 3)), "input2": n((4, 3))}),
            ({"axis": -1, "n": 3}, {"input1": n((2, 1)), "input2": n((2, 3)), "input3": n((2, 2))})]


CASES: dict[str, Callable[[np.random.Generator], list[Case]]] = {
    "add": binary(), "subtract": binary(), "multiply": binary(), "divide": binary(),
    "floor_divide": binary(), "power": binary(_pos), "minimum": binary(_distinct),
    "maximum": binary(_distinct), "greater": binary(), "less": binary(),
    "greater_equal": binary(), "less_equal": binary(), "equal": binary(),
    "not_equal": binary(),
    "negate": unary(), "absolute": unary(), "exp": unary(), "log": unary(_pos),
    "sqrt": unary(_pos), "square": unary(), "sign": unary(), "sin": unary(), "cos": unary(),
    "floor": unary(), "reciprocal": unary(), "relu": unary(), "sigmoid": unary(),
    "tanh": unary(), "silu": unary(), "softplus": unary(), "stop_gradient": unary(),
    "isnan": unary(), "gelu": unary(approximate=False),
    "leaky_relu": unary(slope=0.2), "clamp": unary(min=-0.8, max=1.1),
    "softmax": unary(axis=-1), "log_softmax": unary(axis=0),
    "matmul": _matmul, "linear": _linear,
    "sum": reduction(), "mean": reduction(), "max": reduction(), "min": reduction(),
    "prod": reduction(), "variance": reduction(correction=1),
    "reshape": lambda rng: [({"shape": (4, 3)}, {"input": rng.standard_normal((3, 4))}),
                            ({"shape": (2, -1)}, {"input": rng.standard_normal((2, 3, 2))})],
    "transpose": lambda rng: [({"axes": None}, {"input": rng.standard_normal((3, 4))}),
                              ({"axes": (1, 2, 0)}, {"input": rng.standard_normal((2, 3, 4))})],
    "swap_axes": lambda rng: [({"axis1": 0, "axis2": 2},
                               {"input": rng.standard_normal((2, 3, 4))})],
    "flatten": lambda rng: [({"start_dim": 1, "end_dim": -1},
                             {"input": rng.standard_normal((2, 3, 4))}),
                            ({"start_dim": 0, "end_dim": 1},
                             {"input": rng.standard_normal((2, 3, 4))})],
    "squeeze": lambda rng: [({"axis": 1}, {"input": rng.standard_normal((3, 1, 4))}),
                            ({"axis": None}, {"input": rng.standard_normal((1, 3, 1))})],
    "unsqueeze": lambda rng: [({"axis": 1}, {"input": rng.standard_normal((3, 4))})],
    "broadcast_to": lambda rng: [({"shape": (2, 3, 4)}, {"input": rng.standard_normal((3, 1))})],
    "concat": _concat,
    "pad": lambda rng: [({"pad_width": ((1, 0), (0, 2))}, {"input": rng.standard_normal((3, 4))})],
    "indexer": lambda rng: [({"index": (slice(None), 1)}, {"input": rng.standard_normal((3, 4))}),
                            ({"index": (0, slice(1, None, 2))},
                             {"input": rng.standard_normal((3, 5))}),
                            ({"index": (None, Ellipsis, 2)},
                             {"input": rng.standard_normal((2, 3, 4))})],
    "where": _where,
    "cast": lambda rng: [({"dtype": "float"}, {"input": rng.standard_normal((3, 4))})],
    "conv1d": _conv(1), "conv2d": _conv(2),
    "conv_transpose1d": _conv_transpose(1), "conv_transpose2d": _conv_transpose(2),
    "max_pool1d": _pool(1, True), "max_pool2d": _pool(2, True), "avg_pool2d": _pool(2, False),
    "batch_norm": _batch_norm, "layer_norm": _layer_norm, "group_norm": _group_norm,
    "embedding": _embedding, "scaled_dot_product": _sdp,
    "nan_to_num": lambda rng: [({"nan": 0.5, "posinf": 9.0, "neginf": -9.0},
                                {"input": np.array([[1.0, np.nan], [np.inf, -np.inf]])})],
    "one_hot": lambda rng: [({"num_classes": 5}, {"input": rng.integers(0, 5, (3, 4))})],
    "argmax": reduction(multi_axis=False), "argmin": reduction(multi_axis=False),
    "arange": lambda rng: [({"start": 0, "stop": 5, "step": 1, "dtype": None}, {}),
                           ({"start": 0.5, "stop": 2.0, "step": 0.25, "dtype": "float"}, {}),
                           ({"start": 5, "stop": -3, "step": -2, "dtype": None}, {})],
    "split": lambda rng: [({"split_size": 2, "axis": 1}, {"input": rng.standard_normal((3, 4))}),
                          ({"split_size": 3, "axis": -1},
                           {"input": rng.standard_normal((2, 2, 6))}),
                          ({"split_size": 1, "axis": 0}, {"input": rng.standard_normal((2, 3))})],
    "unique": lambda rng: [({}, {"input": np.array([[1.5, -2.0, 1.5], [0.25, -2.0, 3.0]])})],
    "cholesky": lambda rng: [({}, {"input": _spd(rng, (4, 4))}),
                             ({}, {"input": _spd(rng, (2, 3, 3))})],
    "eigvalsh": lambda rng: [({}, {"input": _spd(rng, (4, 4))}),
                             ({}, {"input": _symmetric(rng, (2, 3, 3))})],
    "polynomial_features": lambda rng: [({"degree": 2}, {"input": rng.standard_normal((3, 4))}),
                                        ({"degree": 3},
                                         {"input": rng.standard_normal((2, 2, 3))}),
                                        ({"degree": 1}, {"input": rng.standard_normal((5, 2))})],
    "atleast_1d": lambda rng: [({}, {"input": np.array(1.5)}),
                               ({}, {"input": rng.standard_normal((3, 4))})],
}

#: primitives that the walk does not run through compile, with the reason
NOT_WALKED = {
    "logical_and": "boolean-only op; covered by each backend's kernel tests",
    "logical_or": "boolean-only op; covered by each backend's kernel tests",
    "logical_xor": "boolean-only op; covered by each backend's kernel tests",
    "logical_not": "boolean-only op; covered by each backend's kernel tests",
    "shift_left": "integer-only op; covered by each backend's kernel tests",
    "shift_right": "integer-only op; covered by each backend's kernel tests",
    "size": "returns a Python int; covered by each backend's kernel tests",
    "item": "returns a Python number; covered by each backend's kernel tests",
    "to_tensor": "takes a Python value; covered by each backend's kernel tests",
    "dropout": "random; covered statistically in test_dropout",
    "randn": "random; covered statistically in test_reference_models",
    "randint": "random; covered statistically in test_reference_models",
    "dtype_of": "returns an ml dtype; covered on every backend in test_reference_models",
    "to_slice": "returns a Python slice; covered on every backend in test_reference_models",
    "to_list": "returns a Python list; covered on every backend in test_reference_models",
    "tensor_to_list": "returns Python lists; covered on every backend in test_reference_models",
}


# ---- independent PyTorch formulas ----------------------------------------------------------
Tensor = torch.Tensor
Formula = Callable[[dict[str, Any], dict[str, Tensor]], dict[str, Any]]


def outputs_of(fn: Callable[..., Any]) -> Formula:
    """A one-output formula from ``fn(scalars, tensors)``."""
    return lambda s, t: {"output": fn(s, t)}


def _t_unary(fn: Callable[[Tensor], Tensor]) -> Formula:
    return outputs_of(lambda s, t: fn(t["input"]))


def _t_binary(fn: Callable[[Tensor, Tensor], Tensor]) -> Formula:
    return outputs_of(lambda s, t: fn(t["left"], t["right"]))


def _t_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))


def _t_reduce(fn: Callable[[Tensor, int], Tensor]) -> Formula:
    """A reduction over ``axis`` (None: all, an int or a tuple) applied one axis at a time."""
    def formula(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
        x = t["input"]
        axes = _t_axes(s.get("axis"), x.dim())
        for a in sorted(axes, reverse=True):
            x = fn(x, a).unsqueeze(a)
        if not s.get("keepdim", False):
            for a in sorted(axes, reverse=True):
                x = x.squeeze(a)
        return x
    return outputs_of(formula)


def _t_variance(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    x = t["input"]
    axes = _t_axes(s.get("axis"), x.dim())
    n = math.prod(x.shape[a] for a in axes)
    mean = x.mean(dim=axes, keepdim=True)
    out = ((x - mean) ** 2).sum(dim=axes, keepdim=True) / (n - s.get("correction", 0))
    return out if s.get("keepdim", False) else out.squeeze(axes) if axes else out


def _t_arg(fn: Callable[..., Tensor]) -> Formula:
    def formula(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
        x = t["input"]
        if s.get("axis") is None:
            return fn(x.reshape(-1), dim=0)
        return fn(x, dim=s["axis"], keepdim=s.get("keepdim", False))
    return outputs_of(formula)


def _t_pad_pairs(x: Tensor, pairs: Any) -> Tensor:
    """Zero padding given NumPy-style as ``((before, after), ...)`` for the trailing axes."""
    flat: list[int] = []
    for lo, hi in reversed(list(pairs)):
        flat += [lo, hi]
    return F.pad(x, flat)


def _t_conv(nd: int) -> Formula:
    def formula(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
        x = _t_pad_pairs(t["input"], s["padding"])
        fn = F.conv1d if nd == 1 else F.conv2d
        return fn(x, t["weight"], t.get("bias"), stride=s["stride"], dilation=s["dilation"],
                  groups=s["groups"])
    return outputs_of(formula)


def _t_conv_transpose(nd: int) -> Formula:
    def formula(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
        fn = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
        return fn(t["input"], t["weight"], t.get("bias"), stride=s["stride"],
                  padding=s["padding"], output_padding=s["output_padding"],
                  groups=s["groups"], dilation=s["dilation"])
    return outputs_of(formula)


def _t_max_pool(nd: int) -> Formula:
    def formula(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
        fn = F.max_pool1d if nd == 1 else F.max_pool2d
        stride = s["stride"] if s["stride"] is not None else s["kernel_size"]
        return fn(t["input"], s["kernel_size"], stride, s["padding"], s.get("dilation", 1))
    return outputs_of(formula)


def _t_avg_pool2d(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    stride = s["stride"] if s["stride"] is not None else s["kernel_size"]
    return F.avg_pool2d(t["input"], s["kernel_size"], stride, s["padding"],
                        count_include_pad=True)


def _t_batch_norm(s: dict[str, Any], t: dict[str, Tensor]) -> dict[str, Any]:
    """Training mode: batch statistics over every axis but 1; running statistics move by
    ``momentum`` towards the batch mean and the unbiased batch variance."""
    x = t["input"]
    axes = tuple(a for a in range(x.dim()) if a != 1)
    shape = [1] * x.dim()
    shape[1] = x.shape[1]
    mean = x.mean(dim=axes)
    var = ((x - mean.reshape(shape)) ** 2).mean(dim=axes)
    y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + s.get("eps", 1e-5))
    if t.get("weight") is not None:
        y = y * t["weight"].reshape(shape)
    if t.get("bias") is not None:
        y = y + t["bias"].reshape(shape)
    out: dict[str, Any] = {"output": y, "running_mean_out": None, "running_var_out": None}
    if t.get("running_mean") is not None:
        n = x.numel() // x.shape[1]
        m = s.get("momentum", 0.1)
        out["running_mean_out"] = (1 - m) * t["running_mean"] + m * mean.detach()
        out["running_var_out"] = (1 - m) * t["running_var"] + m * var.detach() * n / (n - 1)
    return out


def _t_layer_norm(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    x = t["input"]
    axes = tuple(range(x.dim() - len(s["normalized_shape"]), x.dim()))
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + s.get("eps", 1e-5))
    if t.get("weight") is not None:
        y = y * t["weight"]
    if t.get("bias") is not None:
        y = y + t["bias"]
    return y


def _t_group_norm(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    x = t["input"]
    n, c = x.shape[:2]
    g = x.reshape(n, s["num_groups"], -1)
    mean = g.mean(-1, keepdim=True)
    var = ((g - mean) ** 2).mean(-1, keepdim=True)
    y = ((g - mean) / torch.sqrt(var + s.get("eps", 1e-5))).reshape(x.shape)
    shape = (1, c) + (1,) * (x.dim() - 2)
    return y * t["weight"].reshape(shape) + t["bias"].reshape(shape)


def _t_sdp(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    q, k, v = t["query"], t["key"], t["value"]
    scale = s["scale"] if s.get("scale") is not None else 1 / math.sqrt(q.shape[-1])
    scores = q @ k.transpose(-1, -2) * scale
    if s.get("is_causal"):
        lq, lk = q.shape[-2], k.shape[-2]
        scores = scores.masked_fill(torch.ones(lq, lk, dtype=torch.bool).triu(1),
                                    float("-inf"))
    return torch.softmax(scores, -1) @ v


def _t_polynomial(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    """scikit-learn's ``PolynomialFeatures(degree, include_bias=False)`` column order."""
    x = t["input"]
    cols = []
    for deg in range(1, s["degree"] + 1):
        for combo in itertools.combinations_with_replacement(range(x.shape[-1]), deg):
            col = x[..., combo[0]]
            for i in combo[1:]:
                col = col * x[..., i]
            cols.append(col)
    return torch.stack(cols, -1)


def _t_arange(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    dtype = torch.float64 if s.get("dtype") is not None else None
    return torch.arange(s["start"], s["stop"], s["step"], dtype=dtype)


def _t_softplus(x: Tensor) -> Tensor:
    return torch.where(x > 20, x, torch.log1p(torch.exp(x)))


def _t_gelu(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    x = t["input"]
    if s.get("approximate"):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _t_concat(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    parts = [t[f"input{i}"] for i in range(1, len(t) + 1)]
    return torch.cat(parts, dim=s["axis"])


FORMULAS: dict[str, Formula] = {
    "add": _t_binary(torch.add), "subtract": _t_binary(torch.sub), "multiply": _t_binary(torch.mul),
    "divide": _t_binary(torch.div),
    "floor_divide": _t_binary(lambda a, b: torch.floor(a / b)),
    "power": _t_binary(torch.pow), "minimum": _t_binary(torch.minimum),
    "maximum": _t_binary(torch.maximum), "greater": _t_binary(torch.gt),
    "less": _t_binary(torch.lt),
    "greater_equal": _t_binary(torch.ge), "less_equal": _t_binary(torch.le),
    "equal": _t_binary(torch.eq), "not_equal": _t_binary(torch.ne),
    "negate": _t_unary(torch.neg), "absolute": _t_unary(torch.abs), "exp": _t_unary(torch.exp),
    "log": _t_unary(torch.log), "sqrt": _t_unary(torch.sqrt), "square": _t_unary(torch.square),
    "sign": _t_unary(torch.sign), "sin": _t_unary(torch.sin), "cos": _t_unary(torch.cos),
    "floor": _t_unary(torch.floor), "reciprocal": _t_unary(lambda x: 1 / x),
    "relu": _t_unary(lambda x: torch.where(x > 0, x, torch.zeros_like(x))),
    "sigmoid": _t_unary(lambda x: 1 / (1 + torch.exp(-x))), "tanh": _t_unary(torch.tanh),
    "silu": _t_unary(lambda x: x / (1 + torch.exp(-x))), "softplus": _t_unary(_t_softplus),
    "stop_gradient": _t_unary(lambda x: x.detach()), "isnan": _t_unary(torch.isnan),
    "gelu": outputs_of(_t_gelu),
    "leaky_relu": outputs_of(lambda s, t: torch.where(t["input"] >= 0, t["input"],
                                                s.get("slope", 0.01) * t["input"])),
    "clamp": outputs_of(lambda s, t: torch.clamp(t["input"], s.get("min"), s.get("max"))),
    "softmax": outputs_of(lambda s, t: torch.exp(t["input"]) / torch.exp(t["input"]).sum(
        s.get("axis", -1), keepdim=True)),
    "log_softmax": outputs_of(lambda s, t: t["input"] - torch.logsumexp(t["input"],
                                                                  s.get("axis", -1), True)),
    "matmul": _t_binary(torch.matmul),
    "linear": outputs_of(lambda s, t: t["input"] @ t["weight"].T + t.get("bias", 0)),
    "sum": _t_reduce(lambda x, a: x.sum(a)), "mean": _t_reduce(lambda x, a: x.mean(a)),
    "max": _t_reduce(lambda x, a: x.amax(a)), "min": _t_reduce(lambda x, a: x.amin(a)),
    "prod": _t_reduce(lambda x, a: x.prod(a)), "variance": outputs_of(_t_variance),
    "reshape": outputs_of(lambda s, t: t["input"].reshape(s["shape"])),
    "transpose": outputs_of(lambda s, t: t["input"].permute(
        s["axes"] if s["axes"] is not None else tuple(reversed(range(t["input"].dim()))))),
    "swap_axes": outputs_of(lambda s, t: t["input"].transpose(s["axis1"], s["axis2"])),
    "flatten": outputs_of(lambda s, t: t["input"].flatten(s["start_dim"], s["end_dim"])),
    "squeeze": outputs_of(lambda s, t: t["input"].squeeze() if s["axis"] is None
                    else t["input"].squeeze(s["axis"])),
    "unsqueeze": outputs_of(lambda s, t: t["input"].unsqueeze(s["axis"])),
    "broadcast_to": outputs_of(lambda s, t: t["input"].expand(s["shape"])),
    "concat": outputs_of(_t_concat),
    "pad": outputs_of(lambda s, t: _t_pad_pairs(t["input"], s["pad_width"])),
    "indexer": outputs_of(lambda s, t: t["input"][s["index"]]),
    "where": outputs_of(lambda s, t: torch.where(t["condition"], t["input1"], t["input2"])),
    "cast": _t_unary(lambda x: x.to(torch.float64)),
    "conv1d": _t_conv(1), "conv2d": _t_conv(2),
    "conv_transpose1d": _t_conv_transpose(1), "conv_transpose2d": _t_conv_transpose(2),
    "max_pool1d": _t_max_pool(1), "max_pool2d": _t_max_pool(2),
    "avg_pool2d": outputs_of(_t_avg_pool2d), "batch_norm": _t_batch_norm,
    "layer_norm": outputs_of(_t_layer_norm), "group_norm": outputs_of(_t_group_norm),
    "embedding": outputs_of(lambda s, t: t["weight"][t["input"]]),
    "scaled_dot_product": outputs_of(_t_sdp),
    "nan_to_num": outputs_of(lambda s, t: torch.nan_to_num(t["input"], s["nan"], s["posinf"],
                                                     s["neginf"])),
    "one_hot": outputs_of(lambda s, t: F.one_hot(t["input"], s["num_classes"]).bool()),
    "argmax": _t_arg(torch.argmax), "argmin": _t_arg(torch.argmin),
    "arange": outputs_of(_t_arange),
    "split": outputs_of(lambda s, t: torch.stack(torch.split(t["input"], s["split_size"],
                                                       s.get("axis", 0)))),
    "unique": _t_unary(lambda x: torch.unique(x.reshape(-1), sorted=True)),
    "cholesky": _t_unary(torch.linalg.cholesky), "eigvalsh": _t_unary(torch.linalg.eigvalsh),
    "polynomial_features": outputs_of(_t_polynomial),
    "atleast_1d": _t_unary(lambda x: x.reshape(1) if x.dim() == 0 else x),
}


# ----------------------------------------------------------------------------------------------
# Loop primitives (issue 15): one recurrent layer over a whole sequence
# ----------------------------------------------------------------------------------------------
_LOOP_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _loop(mode: str) -> Callable[[np.random.Generator], list[Case]]:
    def make(rng: np.random.Generator) -> list[Case]:
        n = rng.standard_normal
        hid, n_in, n_t, n_b = 3, 2, 4, 3
        g = _LOOP_GATES[mode] * hid
        plain = {"input": n((n_t, n_b, n_in)), "weight_ih": n((g, n_in)),
                 "weight_hh": n((g, hid)), "bias_ih": n((g,)), "bias_hh": n((g,))}
        # (LSTM's projection, which ONNX's LSTM lacks, is checked in tests/test_recurrent.py)
        full: dict[str, np.ndarray] = {"input": n((n_b, n_t, n_in))}
        for sfx in ("", "_reverse"):
            full |= {f"weight_ih{sfx}": n((g, n_in)), f"weight_hh{sfx}": n((g, hid))}
        full["h_0"] = n((2, n_b, hid))
        if mode == "lstm":
            full["c_0"] = n((2, n_b, hid))
        full["lengths"] = np.array([2, 4, 1], dtype=np.int64)
        return [({"batch_first": False, "bidirectional": False}, plain),
                ({"batch_first": True, "bidirectional": True}, full)]

    return make


def _t_loop(mode: str) -> Formula:
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (one layer) on the given weights, through a
    ``PackedSequence`` when ``lengths`` is given; outputs padded back to T with zeros."""

    def formula(s: dict[str, Any], t: dict[str, Tensor]) -> dict[str, Tensor]:
        w_hh = t["weight_hh"]
        hid = w_hh.shape[0] // _LOOP_GATES[mode]
        kw: dict[str, Any] = {"bias": "bias_ih" in t, "batch_first": s["batch_first"],
                              "bidirectional": s["bidirectional"]}
        if mode == "lstm":
            kw["proj_size"] = t["weight_hr"].shape[0] if "weight_hr" in t else 0
            module: torch.nn.Module = torch.nn.LSTM(t["input"].shape[-1], hid, **kw)
        elif mode == "gru":
            module = torch.nn.GRU(t["input"].shape[-1], hid, **kw)
        else:
            module = torch.nn.RNN(t["input"].shape[-1], hid, nonlinearity=mode[4:], **kw)
        params = {}
        for k, v in t.items():
            if k.startswith(("weight", "bias")):
                base = k.removesuffix("_reverse")
                params[f"{base}_l0{'_reverse' if k.endswith('_reverse') else ''}"] = v
        x: Any = t["input"]
        if "lengths" in t:
            x = torch.nn.utils.rnn.pack_padded_sequence(x, t["lengths"], s["batch_first"],
                                                        enforce_sorted=False)
        hx: Any = t.get("h_0")
        if mode == "lstm" and hx is not None:
            hx = (hx, t["c_0"])
        out, h_n = torch.func.functional_call(module.double(), params, (x, hx))
        if "lengths" in t:
            n_t = t["input"].shape[1 if s["batch_first"] else 0]
            out = torch.nn.utils.rnn.pad_packed_sequence(out, s["batch_first"],
                                                         total_length=n_t)[0]
        if mode == "lstm":
            return {"output": out, "h_n": h_n[0], "c_n": h_n[1]}
        return {"output": out, "h_n": h_n}

    return formula


CASES.update({m: _loop(m) for m in _LOOP_GATES})
FORMULAS.update({m: _t_loop(m) for m in _LOOP_GATES})
