"""Every walked primitive of the catalogue written directly in PyTorch (float64).

``FORMULAS[name](scalars, tensors)`` returns the primitive's outputs (by terminal name) for the
scalar and tensor values of a case of :mod:`tests.catalogue_cases`, computed with ``torch``
operations from each primitive's documented semantics (NumPy's / PyTorch's), never with
Mithril. Gradients follow from ``torch.autograd`` on the same expressions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Formula = Callable[[dict[str, Any], dict[str, Tensor]], dict[str, Any]]


def _out(fn: Callable[..., Any]) -> Formula:
    """A one-output formula from ``fn(scalars, tensors)``."""
    return lambda s, t: {"output": fn(s, t)}


def _unary(fn: Callable[[Tensor], Tensor]) -> Formula:
    return _out(lambda s, t: fn(t["input"]))


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> Formula:
    return _out(lambda s, t: fn(t["left"], t["right"]))


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))


def _reduce(fn: Callable[[Tensor, int], Tensor]) -> Formula:
    """A reduction over ``axis`` (None: all, an int or a tuple) applied one axis at a time."""
    def formula(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
        x = t["input"]
        axes = _axes(s.get("axis"), x.dim())
        for a in sorted(axes, reverse=True):
            x = fn(x, a).unsqueeze(a)
        if not s.get("keepdim", False):
            for a in sorted(axes, reverse=True):
                x = x.squeeze(a)
        return x
    return _out(formula)


def _variance(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    x = t["input"]
    axes = _axes(s.get("axis"), x.dim())
    n = math.prod(x.shape[a] for a in axes)
    mean = x.mean(dim=axes, keepdim=True)
    out = ((x - mean) ** 2).sum(dim=axes, keepdim=True) / (n - s.get("correction", 0))
    return out if s.get("keepdim", False) else out.squeeze(axes) if axes else out


def _arg(fn: Callable[..., Tensor]) -> Formula:
    def formula(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
        x = t["input"]
        if s.get("axis") is None:
            return fn(x.reshape(-1), dim=0)
        return fn(x, dim=s["axis"], keepdim=s.get("keepdim", False))
    return _out(formula)


def _pad_pairs(x: Tensor, pairs: Any) -> Tensor:
    """Zero padding given NumPy-style as ``((before, after), ...)`` for the trailing axes."""
    flat: list[int] = []
    for lo, hi in reversed(list(pairs)):
        flat += [lo, hi]
    return F.pad(x, flat)


def _conv(nd: int) -> Formula:
    def formula(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
        x = _pad_pairs(t["input"], s["padding"])
        fn = F.conv1d if nd == 1 else F.conv2d
        return fn(x, t["weight"], t.get("bias"), stride=s["stride"], dilation=s["dilation"],
                  groups=s["groups"])
    return _out(formula)


def _conv_transpose(nd: int) -> Formula:
    def formula(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
        fn = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
        return fn(t["input"], t["weight"], t.get("bias"), stride=s["stride"],
                  padding=s["padding"], output_padding=s["output_padding"],
                  groups=s["groups"], dilation=s["dilation"])
    return _out(formula)


def _max_pool(nd: int) -> Formula:
    def formula(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
        fn = F.max_pool1d if nd == 1 else F.max_pool2d
        stride = s["stride"] if s["stride"] is not None else s["kernel_size"]
        return fn(t["input"], s["kernel_size"], stride, s["padding"], s.get("dilation", 1))
    return _out(formula)


def _avg_pool2d(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    stride = s["stride"] if s["stride"] is not None else s["kernel_size"]
    return F.avg_pool2d(t["input"], s["kernel_size"], stride, s["padding"],
                        count_include_pad=True)


def _batch_norm(s: dict[str, Any], t: dict[str, Tensor]) -> dict[str, Any]:
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


def _layer_norm(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
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


def _group_norm(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    x = t["input"]
    n, c = x.shape[:2]
    g = x.reshape(n, s["num_groups"], -1)
    mean = g.mean(-1, keepdim=True)
    var = ((g - mean) ** 2).mean(-1, keepdim=True)
    y = ((g - mean) / torch.sqrt(var + s.get("eps", 1e-5))).reshape(x.shape)
    shape = (1, c) + (1,) * (x.dim() - 2)
    return y * t["weight"].reshape(shape) + t["bias"].reshape(shape)


def _sdp(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    q, k, v = t["query"], t["key"], t["value"]
    scale = s["scale"] if s.get("scale") is not None else 1 / math.sqrt(q.shape[-1])
    scores = q @ k.transpose(-1, -2) * scale
    if s.get("is_causal"):
        lq, lk = q.shape[-2], k.shape[-2]
        scores = scores.masked_fill(torch.ones(lq, lk, dtype=torch.bool).triu(1),
                                    float("-inf"))
    return torch.softmax(scores, -1) @ v


def _polynomial(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
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


def _arange(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    dtype = torch.float64 if s.get("dtype") is not None else None
    return torch.arange(s["start"], s["stop"], s["step"], dtype=dtype)


def _softplus(x: Tensor) -> Tensor:
    return torch.where(x > 20, x, torch.log1p(torch.exp(x)))


def _gelu(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    x = t["input"]
    if s.get("approximate"):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _concat(s: dict[str, Any], t: dict[str, Tensor]) -> Tensor:
    parts = [t[f"input{i}"] for i in range(1, len(t) + 1)]
    return torch.cat(parts, dim=s["axis"])


FORMULAS: dict[str, Formula] = {
    "add": _binary(torch.add), "subtract": _binary(torch.sub), "multiply": _binary(torch.mul),
    "divide": _binary(torch.div),
    "floor_divide": _binary(lambda a, b: torch.floor(a / b)),
    "power": _binary(torch.pow), "minimum": _binary(torch.minimum),
    "maximum": _binary(torch.maximum), "greater": _binary(torch.gt), "less": _binary(torch.lt),
    "greater_equal": _binary(torch.ge), "less_equal": _binary(torch.le),
    "equal": _binary(torch.eq), "not_equal": _binary(torch.ne),
    "negate": _unary(torch.neg), "absolute": _unary(torch.abs), "exp": _unary(torch.exp),
    "log": _unary(torch.log), "sqrt": _unary(torch.sqrt), "square": _unary(torch.square),
    "sign": _unary(torch.sign), "sin": _unary(torch.sin), "cos": _unary(torch.cos),
    "floor": _unary(torch.floor), "reciprocal": _unary(lambda x: 1 / x),
    "relu": _unary(lambda x: torch.where(x > 0, x, torch.zeros_like(x))),
    "sigmoid": _unary(lambda x: 1 / (1 + torch.exp(-x))), "tanh": _unary(torch.tanh),
    "silu": _unary(lambda x: x / (1 + torch.exp(-x))), "softplus": _unary(_softplus),
    "stop_gradient": _unary(lambda x: x.detach()), "isnan": _unary(torch.isnan),
    "gelu": _out(_gelu),
    "leaky_relu": _out(lambda s, t: torch.where(t["input"] >= 0, t["input"],
                                                s.get("slope", 0.01) * t["input"])),
    "clamp": _out(lambda s, t: torch.clamp(t["input"], s.get("min"), s.get("max"))),
    "softmax": _out(lambda s, t: torch.exp(t["input"]) / torch.exp(t["input"]).sum(
        s.get("axis", -1), keepdim=True)),
    "log_softmax": _out(lambda s, t: t["input"] - torch.logsumexp(t["input"],
                                                                  s.get("axis", -1), True)),
    "matmul": _binary(torch.matmul),
    "linear": _out(lambda s, t: t["input"] @ t["weight"].T + t.get("bias", 0)),
    "sum": _reduce(lambda x, a: x.sum(a)), "mean": _reduce(lambda x, a: x.mean(a)),
    "max": _reduce(lambda x, a: x.amax(a)), "min": _reduce(lambda x, a: x.amin(a)),
    "prod": _reduce(lambda x, a: x.prod(a)), "variance": _out(_variance),
    "reshape": _out(lambda s, t: t["input"].reshape(s["shape"])),
    "transpose": _out(lambda s, t: t["input"].permute(
        s["axes"] if s["axes"] is not None else tuple(reversed(range(t["input"].dim()))))),
    "swap_axes": _out(lambda s, t: t["input"].transpose(s["axis1"], s["axis2"])),
    "flatten": _out(lambda s, t: t["input"].flatten(s["start_dim"], s["end_dim"])),
    "squeeze": _out(lambda s, t: t["input"].squeeze() if s["axis"] is None
                    else t["input"].squeeze(s["axis"])),
    "unsqueeze": _out(lambda s, t: t["input"].unsqueeze(s["axis"])),
    "broadcast_to": _out(lambda s, t: t["input"].expand(s["shape"])),
    "concat": _out(_concat),
    "pad": _out(lambda s, t: _pad_pairs(t["input"], s["pad_width"])),
    "indexer": _out(lambda s, t: t["input"][s["index"]]),
    "where": _out(lambda s, t: torch.where(t["condition"], t["input1"], t["input2"])),
    "cast": _unary(lambda x: x.to(torch.float64)),
    "conv1d": _conv(1), "conv2d": _conv(2),
    "conv_transpose1d": _conv_transpose(1), "conv_transpose2d": _conv_transpose(2),
    "max_pool1d": _max_pool(1), "max_pool2d": _max_pool(2), "avg_pool2d": _out(_avg_pool2d),
    "batch_norm": _batch_norm, "layer_norm": _out(_layer_norm), "group_norm": _out(_group_norm),
    "embedding": _out(lambda s, t: t["weight"][t["input"]]),
    "scaled_dot_product": _out(_sdp),
    "nan_to_num": _out(lambda s, t: torch.nan_to_num(t["input"], s["nan"], s["posinf"],
                                                     s["neginf"])),
    "one_hot": _out(lambda s, t: F.one_hot(t["input"], s["num_classes"]).bool()),
    "argmax": _arg(torch.argmax), "argmin": _arg(torch.argmin),
    "arange": _out(_arange),
    "split": _out(lambda s, t: torch.stack(torch.split(t["input"], s["split_size"],
                                                       s.get("axis", 0)))),
    "unique": _unary(lambda x: torch.unique(x.reshape(-1), sorted=True)),
    "cholesky": _unary(torch.linalg.cholesky), "eigvalsh": _unary(torch.linalg.eigvalsh),
    "polynomial_features": _out(_polynomial),
    "atleast_1d": _unary(lambda x: x.reshape(1) if x.dim() == 0 else x),
}
