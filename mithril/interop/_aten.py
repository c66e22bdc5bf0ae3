"""ATen operators of an exported torch graph as Mithril primitives, one small function each.

Each converter takes the :class:`Builder`, the torch node (its ``meta["val"]`` holds the
output's shape and dtype), and the node's arguments already converted (``Ref``,
``Connection``, constants), and returns the node's value. ``CONVERTERS`` is keyed by the
operator's name without overload (``"aten.conv2d"``); an operator missing from it is reported
as unsupported by :func:`mithril.interop.from_torch`, with every other one.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._graph_builder import Builder, Ref, is_dynamic

Converter = Callable[[Builder, Any, tuple[Any, ...], dict[str, Any]], Any]
CONVERTERS: dict[str, Converter] = {}


class NotConvertible(Exception):
    """An operator's arguments that Mithril cannot express (the message says which)."""


def _register(*names: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for n in names:
            CONVERTERS[n] = fn
        return fn
    return deco


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _out_shape(node: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in node.meta["val"].shape)


def _in_shape(node: Any, i: int = 0) -> tuple[int, ...]:
    return tuple(int(d) for d in node.args[i].meta["val"].shape)


def _ints(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(x) for x in v)
    return v * n if len(v) == 1 else v


# ---- layers ----------------------------------------------------------------------------------
def _conv(nd: int) -> Converter:
    def convert(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        x, w = args[0], args[1]
        bias = _arg(args, kw, 2, "bias", None)
        stride = _ints(_arg(args, kw, 3, "stride", 1), nd)
        padding = _arg(args, kw, 4, "padding", 0)
        dilation = _ints(_arg(args, kw, 5, "dilation", 1), nd)
        groups = int(_arg(args, kw, 6, "groups", 1))
        if isinstance(padding, str):
            raise NotConvertible(f"padding={padding!r} (give the padding as numbers)")
        pads = tuple((p, p) for p in _ints(padding, nd))
        shape = list(node.args[1].meta["val"].shape)
        b.init(w, "kaiming_uniform", [int(d) for d in shape[1:]])
        b.init(bias, "kaiming_uniform", [int(d) for d in shape[1:]])
        return b.apply(f"conv{nd}d", input=x, weight=w, bias=bias, stride=stride,
                       padding=pads, dilation=dilation, groups=groups)
    return convert


_register("aten.conv2d")(_conv(2))
_register("aten.conv1d")(_conv(1))


def _conv_transpose(nd: int) -> Converter:
    def convert(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        x, w = args[0], args[1]
        bias = _arg(args, kw, 2, "bias", None)
        return _transposed(b, node, nd, x, w, bias, _arg(args, kw, 3, "stride", 1),
                           _arg(args, kw, 4, "padding", 0), _arg(args, kw, 5, "output_padding", 0),
                           _arg(args, kw, 6, "groups", 1), _arg(args, kw, 7, "dilation", 1))
    return convert


def _transposed(b: Builder, node: Any, nd: int, x: Any, w: Any, bias: Any, stride: Any,
                padding: Any, output_padding: Any, groups: Any, dilation: Any) -> Any:
    shape = [int(d) for d in node.args[1].meta["val"].shape]
    b.init(w, "kaiming_uniform", shape[1:])  # PyTorch: fan-in of weight.shape[1:]
    b.init(bias, "kaiming_uniform", shape[1:])
    return b.apply(f"conv_transpose{nd}d", input=x, weight=w, bias=bias,
                   stride=_ints(stride, nd), padding=_ints(padding, nd),
                   output_padding=_ints(output_padding, nd), dilation=_ints(dilation, nd),
                   groups=int(groups))


_register("aten.conv_transpose2d")(_conv_transpose(2))
_register("aten.conv_transpose1d")(_conv_transpose(1))


@_register("aten.convolution")
def _convolution(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    x, w, bias, stride, padding, dilation, transposed, output_padding, groups = args[:9]
    nd = len(node.args[1].meta["val"].shape) - 2
    if nd not in (1, 2):
        raise NotConvertible(f"{nd}-d convolution")
    if transposed:
        return _transposed(b, node, nd, x, w, bias, stride, padding, output_padding, groups,
                           dilation)
    shape = [int(d) for d in node.args[1].meta["val"].shape]
    b.init(w, "kaiming_uniform", shape[1:])
    b.init(bias, "kaiming_uniform", shape[1:])
    return b.apply(f"conv{nd}d", input=x, weight=w, bias=bias, stride=_ints(stride, nd),
                   padding=tuple((p, p) for p in _ints(padding, nd)),
                   dilation=_ints(dilation, nd), groups=int(groups))


def _upsample(mode: str, nd: int) -> Converter:
    """``upsample_*.vec(input, output_size, [align_corners,] scale_factors)`` and the
    overloads with per-axis scales: :class:`~mithril.models.Upsample` (interpolation matrices
    from primitives)."""
    def convert(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        from ..models.resize import Upsample

        rest = list(args[1:])
        size = rest.pop(0) if rest else kw.get("output_size")
        align = bool(rest.pop(0)) if mode != "nearest" and rest else None
        if str(node.target).endswith(".vec"):
            scales = rest[0] if rest else kw.get("scale_factors")
        else:  # scales_h, scales_w (or scales): given per axis, or all None
            scales = rest if rest and all(v is not None for v in rest) else None
            if scales is not None:
                size = None
        if scales is not None and size is not None:
            scales = None
        kind = {"nearest": "nearest", "linear": "linear" if nd == 1 else "bilinear"}[mode]
        layer = Upsample(size=None if size is None else tuple(int(v) for v in size),
                         scale_factor=None if scales is None else tuple(float(v) for v in scales),
                         mode=kind, align_corners=align if mode != "nearest" else None,
                         spatial_dims=nd)
        return b.apply_model(layer, input=args[0])
    return convert


_register("aten.upsample_nearest2d")(_upsample("nearest", 2))
_register("aten.upsample_nearest1d")(_upsample("nearest", 1))
_register("aten.upsample_bilinear2d")(_upsample("linear", 2))
_register("aten.upsample_linear1d")(_upsample("linear", 1))


@_register("aten.linear")
def _linear(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    w, bias = args[1], _arg(args, kw, 2, "bias", None)
    fan_in = [int(node.args[1].meta["val"].shape[1])]
    b.init(w, "kaiming_uniform", fan_in)
    b.init(bias, "kaiming_uniform", fan_in)
    return b.apply("linear", input=args[0], weight=w, bias=bias)


@_register("aten.batch_norm")
def _batch_norm(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    x, w, bias, mean, var = (_arg(args, kw, i, n, None) for i, n in enumerate(
        ("input", "weight", "bias", "running_mean", "running_var")))
    training = _arg(args, kw, 5, "training", True)
    momentum = _arg(args, kw, 6, "momentum", 0.1)
    eps = _arg(args, kw, 7, "eps", 1e-5)
    if momentum is None:
        raise NotConvertible("momentum=None (cumulative running averages)")
    if not training and mean is None:
        raise NotConvertible("evaluation without running statistics")
    b.init(w, "ones")
    b.init(bias, "zeros")
    b.init(mean, "zeros")
    b.init(var, "ones")
    return b.apply("batch_norm", input=x, weight=w, bias=bias, running_mean=mean,
                   running_var=var, momentum=float(momentum), eps=float(eps))


@_register("aten.layer_norm")
def _layer_norm(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    w, bias = _arg(args, kw, 2, "weight", None), _arg(args, kw, 3, "bias", None)
    b.init(w, "ones")
    b.init(bias, "zeros")
    return b.apply("layer_norm", input=args[0], weight=w, bias=bias,
                   normalized_shape=tuple(int(d) for d in args[1]),
                   eps=float(_arg(args, kw, 4, "eps", 1e-5)))


@_register("aten.group_norm")
def _group_norm(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    w, bias = _arg(args, kw, 2, "weight", None), _arg(args, kw, 3, "bias", None)
    b.init(w, "ones")
    b.init(bias, "zeros")
    return b.apply("group_norm", input=args[0], weight=w, bias=bias, num_groups=int(args[1]),
                   eps=float(_arg(args, kw, 4, "eps", 1e-5)))


@_register("aten.embedding")
def _embedding(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    w, idx = args[0], args[1]
    padding_idx = _arg(args, kw, 2, "padding_idx", -1)
    b.init(w, "normal")
    weight: Any = w
    if padding_idx is not None and padding_idx >= 0:
        # torch never updates the padding row: its gradient is zero, its value is used as is
        rows = int(node.args[0].meta["val"].shape[0])
        frozen = np.zeros((rows, 1), dtype=bool)
        frozen[padding_idx] = True
        weight = b.apply("where", condition=frozen, input1=b.apply("stop_gradient", input=w),
                         input2=w)
    return b.apply("embedding", input=idx, weight=weight)


@_register("aten.dropout", "aten.feature_dropout")
def _dropout(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    if "feature" in str(node.target):
        raise NotConvertible("channel-wise dropout (Dropout2d)")
    p, train = float(args[1]), bool(args[2])
    if not train or p == 0:
        return args[0]
    return b.apply("dropout", input=args[0], p=p)


@_register("aten.scaled_dot_product_attention")
def _sdpa(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    q, k, v = args[:3]
    mask = _arg(args, kw, 3, "attn_mask", None)
    p = float(_arg(args, kw, 4, "dropout_p", 0.0))
    causal = bool(_arg(args, kw, 5, "is_causal", False))
    scale = _arg(args, kw, 6, "scale", None)
    if kw.get("enable_gqa"):
        raise NotConvertible("enable_gqa=True")
    if p == 0:
        return b.apply("scaled_dot_product", query=q, key=k, value=v, attn_mask=mask,
                       is_causal=causal, scale=None if scale is None else float(scale))
    # attention dropout: the same computation written out, dropout on the probabilities
    qs, ks = _in_shape(node, 0), _in_shape(node, 1)
    s = 1 / math.sqrt(qs[-1]) if scale is None else float(scale)
    scores = b.apply("multiply", left=b.apply("matmul", left=q, right=b.apply(
        "swap_axes", input=k, axis1=-1, axis2=-2)), right=s)
    masks = []
    if causal:
        masks.append(np.tril(np.ones((qs[-2], ks[-2]), dtype=bool)))
    if mask is not None:
        masks.append(mask)
    for m in masks:
        if isinstance(m, np.ndarray | torch.Tensor) and (
                m.dtype == torch.bool if isinstance(m, torch.Tensor) else m.dtype == np.bool_):
            scores = b.apply("where", condition=m, input1=scores, input2=-math.inf)
        else:
            scores = b.apply("add", left=scores, right=m)
    probs = b.apply("dropout", input=b.apply("softmax", input=scores, axis=-1), p=p)
    return b.apply("matmul", left=probs, right=v)


# ---- activations and elementwise -------------------------------------------------------------
def _unary(op_name: str) -> Converter:
    def convert(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        return b.apply(op_name, input=args[0])
    return convert


for _aten, _op in {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh",
                   "sigmoid": "sigmoid", "silu": "silu", "silu_": "silu", "exp": "exp",
                   "log": "log", "sqrt": "sqrt", "neg": "negate", "abs": "absolute",
                   "sin": "sin", "cos": "cos", "floor": "floor", "reciprocal": "reciprocal",
                   "logical_not": "logical_not", "sign": "sign", "square": "square"}.items():
    _register(f"aten.{_aten}")(_unary(_op))


@_register("aten.rsqrt")
def _rsqrt(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return b.apply("reciprocal", input=b.apply("sqrt", input=args[0]))


@_register("aten.gelu", "aten.gelu_")
def _gelu(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    approximate = _arg(args, kw, 1, "approximate", "none")
    return b.apply("gelu", input=args[0], approximate=approximate == "tanh")


@_register("aten.leaky_relu", "aten.leaky_relu_")
def _leaky_relu(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return b.apply("leaky_relu", input=args[0], slope=float(_arg(args, kw, 1, "negative_slope",
                                                                   0.01)))


@_register("aten.hardtanh", "aten.hardtanh_", "aten.clamp", "aten.clamp_")
def _clamp(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    default = (-1.0, 1.0) if "hardtanh" in str(node.target) else (None, None)
    lo = _arg(args, kw, 1, "min_val" if default[0] is not None else "min", default[0])
    hi = _arg(args, kw, 2, "max_val" if default[1] is not None else "max", default[1])
    return b.apply("clamp", input=args[0], min=lo, max=hi)


@_register("aten.hardsigmoid", "aten.hardsigmoid_")
def _hardsigmoid(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    """``clamp(x / 6 + 1/2, 0, 1)``."""
    scaled = b.apply("add", left=b.apply("divide", left=args[0], right=6.0), right=0.5)
    return b.apply("clamp", input=scaled, min=0.0, max=1.0)


@_register("aten.hardswish", "aten.hardswish_")
def _hardswish(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    """``x * clamp(x + 3, 0, 6) / 6``."""
    gate = b.apply("clamp", input=b.apply("add", left=args[0], right=3.0), min=0.0, max=6.0)
    return b.apply("divide", left=b.apply("multiply", left=args[0], right=gate), right=6.0)


@_register("aten.softmax", "aten._softmax")
def _softmax(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return b.apply("softmax", input=args[0], axis=int(args[1]))


@_register("aten.log_softmax", "aten._log_softmax")
def _log_softmax(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return b.apply("log_softmax", input=args[0], axis=int(args[1]))


def _binary(op_name: str, swap: bool = False) -> Converter:
    def convert(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        left, right = args[0], args[1]
        alpha = kw.get("alpha", 1)
        if alpha != 1:
            right = b.apply("multiply", left=right, right=alpha)
        if swap:
            left, right = right, left
        return b.apply(op_name, left=left, right=right)
    return convert


for _aten, _op in {"add": "add", "add_": "add", "sub": "subtract", "sub_": "subtract",
                   "mul": "multiply", "mul_": "multiply", "pow": "power", "eq": "equal",
                   "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
                   "ge": "greater_equal", "maximum": "maximum", "minimum": "minimum",
                   "logical_and": "logical_and", "logical_or": "logical_or",
                   "__and__": "logical_and", "__or__": "logical_or", "bitwise_and": "logical_and",
                   "bitwise_or": "logical_or", "matmul": "matmul", "mm": "matmul",
                   "bmm": "matmul"}.items():
    _register(f"aten.{_aten}")(_binary(_op))
_register("aten.rsub")(_binary("subtract", swap=True))


@_register("aten.div", "aten.div_")
def _div(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    mode = kw.get("rounding_mode")
    if mode == "trunc":
        raise NotConvertible("rounding_mode='trunc'")
    return b.apply("floor_divide" if mode == "floor" else "divide", left=args[0],
                   right=args[1])


@_register("aten.addmm")
def _addmm(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    bias, x, w = args[:3]
    if kw.get("beta", 1) != 1 or kw.get("alpha", 1) != 1:
        raise NotConvertible("beta / alpha other than 1")
    b.init(w, "normal")
    b.init(bias, "zeros")
    return b.apply("add", left=b.apply("matmul", left=x, right=w), right=bias)


@_register("aten.where")
def _where(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return b.apply("where", condition=args[0], input1=args[1], input2=args[2])


@_register("aten.masked_fill", "aten.masked_fill_")
def _masked_fill(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return b.apply("where", condition=args[1], input1=args[2], input2=args[0])


def _reduce(op_name: str) -> Converter:
    def convert(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        dims = _arg(args, kw, 1, "dim", None)
        keep = bool(_arg(args, kw, 2, "keepdim", False))
        axis = None if dims is None or dims == [] else tuple(int(d) for d in dims) \
            if isinstance(dims, list | tuple) else int(dims)
        return b.apply(op_name, input=args[0], axis=axis, keepdim=keep)
    return convert


_register("aten.mean")(_reduce("mean"))
_register("aten.sum")(_reduce("sum"))
_register("aten.amax")(_reduce("max"))
_register("aten.amin")(_reduce("min"))


@_register("aten.var")
def _var(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    dims = _arg(args, kw, 1, "dim", None)
    correction = kw.get("correction", 1)
    return b.apply("variance", input=args[0], axis=None if dims is None else tuple(dims),
                   keepdim=bool(kw.get("keepdim", False)),
                   correction=1 if correction is None else correction)


# ---- pooling ---------------------------------------------------------------------------------
@_register("aten.max_pool2d", "aten.max_pool1d")
def _max_pool(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    nd = 1 if str(node.target).startswith("aten.max_pool1d") else 2
    k = _ints(args[1], nd)
    s = _ints(_arg(args, kw, 2, "stride", []) or k, nd)
    p = _ints(_arg(args, kw, 3, "padding", 0), nd)
    d = _ints(_arg(args, kw, 4, "dilation", 1), nd)
    ceil = bool(_arg(args, kw, 5, "ceil_mode", False))
    if ceil and not _floor_equals_ceil(_in_shape(node)[-nd:], k, s, p, d):
        from ..models.pooling import MaxPool1d, MaxPool2d

        cls = MaxPool1d if nd == 1 else MaxPool2d
        return b.apply_model(cls(k, s, p, d, ceil_mode=True), input=args[0])
    return b.apply(f"max_pool{nd}d", input=args[0], kernel_size=k, stride=s, padding=p,
                   dilation=d)


def _floor_equals_ceil(size: tuple[int, ...], k: tuple[int, ...], s: tuple[int, ...],
                       p: tuple[int, ...], d: tuple[int, ...]) -> bool:
    for n, ki, si, pi, di in zip(size, k, s, p, d, strict=True):
        span = n + 2 * pi - di * (ki - 1) - 1
        if span % si:
            return False
    return True


@_register("aten.avg_pool2d")
def _avg_pool2d(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    k = _ints(args[1], 2)
    s = _ints(_arg(args, kw, 2, "stride", []) or k, 2)
    p = _ints(_arg(args, kw, 3, "padding", 0), 2)
    ceil = bool(_arg(args, kw, 4, "ceil_mode", False))
    include = bool(_arg(args, kw, 5, "count_include_pad", True))
    divisor = _arg(args, kw, 6, "divisor_override", None)
    ceil = ceil and not _floor_equals_ceil(_in_shape(node)[-2:], k, s, p, (1, 1))
    if ceil or (not include and any(p)) or divisor is not None:
        from ..models.pooling import AvgPool2d

        return b.apply_model(AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=include,
                                       divisor_override=divisor), input=args[0])
    return b.apply("avg_pool2d", input=args[0], kernel_size=k, stride=s, padding=p)


@_register("aten.adaptive_avg_pool2d")
def _adaptive_avg_pool2d(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]
                         ) -> Any:
    h, w = _in_shape(node)[-2:]
    oh, ow = _out_shape(node)[-2:]
    if (oh, ow) == (1, 1):
        return b.apply("mean", input=args[0], axis=(-2, -1), keepdim=True)
    if h % oh or w % ow:
        raise NotConvertible(f"output size {(oh, ow)} that does not divide the input {(h, w)}")
    k = (h // oh, w // ow)
    return b.apply("avg_pool2d", input=args[0], kernel_size=k, stride=k, padding=(0, 0))


# ---- shapes and indexing ---------------------------------------------------------------------
@_register("aten.view", "aten.reshape", "aten._unsafe_view")
def _reshape(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return b.apply("reshape", input=args[0], shape=_out_shape(node))


@_register("aten.flatten")
def _flatten(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return b.apply("reshape", input=args[0], shape=_out_shape(node))


@_register("aten.expand", "aten.expand_as")
def _expand(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return b.apply("broadcast_to", input=args[0], shape=_out_shape(node))


@_register("aten.transpose", "aten.swapaxes")
def _transpose(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return b.apply("swap_axes", input=args[0], axis1=int(args[1]), axis2=int(args[2]))


@_register("aten.t")
def _t(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    if len(_in_shape(node)) < 2:
        return args[0]
    return b.apply("swap_axes", input=args[0], axis1=0, axis2=1)


@_register("aten.permute")
def _permute(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return b.apply("transpose", input=args[0], axes=tuple(int(d) for d in args[1]))


@_register("aten.unsqueeze", "aten.squeeze")
def _squeeze(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    if _out_shape(node) == _in_shape(node):
        return args[0]
    return b.apply("reshape", input=args[0], shape=_out_shape(node))


@_register("aten.contiguous", "aten.clone", "aten.alias", "aten.detach", "aten.lift_fresh_copy",
           "aten.dropout_", "aten.type_as")
def _identity(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    if "type_as" in str(node.target):
        return _cast(b, node, args, kw)
    return args[0]


@_register("aten.to", "aten._to_copy")
def _cast(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    src, dst = node.args[0].meta["val"].dtype, node.meta["val"].dtype
    if src == dst or (src.is_floating_point and dst.is_floating_point):
        return args[0]  # the float precision is the backend's
    from ..framework import types as ml_types

    name = {torch.bool: "bool_", torch.int64: "int64", torch.int32: "int32"}.get(dst)
    if name is None:
        name = "float64" if dst.is_floating_point else None
    if name is None:
        raise NotConvertible(f"a cast to {dst}")
    return b.apply("cast", input=args[0], dtype=getattr(ml_types, name))


@_register("aten.index")
def _index(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    """``x[i0, i1, ...]`` with integer index tensors that depend on no input (HF's attention
    masks index the mask with aranges): the indexed leading dims flattened into rows, the rows
    gathered with ``embedding``, the result reshaped."""
    from ..framework import types as ml_types

    indices = list(args[1])
    if any(i is None or is_dynamic(i) for i in indices):
        raise NotConvertible("indexing with None between the indices, or with indices "
                             "computed from the inputs")
    arrays = [i.detach().cpu().numpy() if isinstance(i, torch.Tensor) else np.asarray(i)
              for i in indices]
    if any(a.dtype == np.bool_ or a.dtype.kind not in "iu" for a in arrays):
        raise NotConvertible("boolean-mask or non-integer indices")
    shape = _in_shape(node)
    lead, rest = shape[:len(arrays)], shape[len(arrays):]
    wrapped = [np.where(a < 0, a + n, a) for a, n in zip(arrays, lead, strict=True)]
    rows = np.ravel_multi_index(tuple(np.broadcast_arrays(*wrapped)), lead).astype(np.int64)
    src = node.args[0].meta["val"].dtype
    table = b.apply("reshape", input=args[0], shape=(math.prod(lead), math.prod(rest)))
    if not src.is_floating_point:  # gather 0/1 and ints below 2 ** 24 exactly as floats
        table = b.apply("cast", input=table, dtype=ml_types.float32)
    out = b.apply("reshape", input=b.apply("embedding", input=rows, weight=table),
                  shape=_out_shape(node))
    if src == torch.bool:
        return b.apply("not_equal", left=out, right=0.0)
    if not src.is_floating_point:
        name = {torch.int64: "int64", torch.int32: "int32"}.get(src)
        if name is None:
            raise NotConvertible(f"indexing a {src} tensor")
        return b.apply("cast", input=out, dtype=getattr(ml_types, name))
    return out


@_register("aten.slice")
def _slice(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    dim = int(_arg(args, kw, 1, "dim", 0))
    size = _in_shape(node)[dim]
    start = _arg(args, kw, 2, "start", None)
    end = _arg(args, kw, 3, "end", None)
    step = int(_arg(args, kw, 4, "step", 1))
    start = None if start is None else min(int(start), size)
    end = None if end is None else min(int(end), size)
    if (start in (None, 0)) and (end is None or end == size) and step == 1:
        return args[0]
    index = (slice(None),) * (dim % len(_in_shape(node))) + (slice(start, end, step),)
    return b.apply("indexer", input=args[0], index=index)


@_register("aten.select")
def _select(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    dim = int(args[1]) % len(_in_shape(node))
    return b.apply("indexer", input=args[0], index=(slice(None),) * dim + (int(args[2]),))


def _chunks(b: Builder, node: Any, x: Any, sizes: list[int], dim: int) -> list[Any]:
    rank = len(_in_shape(node))
    dim %= rank
    out, start = [], 0
    for n in sizes:
        index = (slice(None),) * dim + (slice(start, start + n),)
        out.append(b.apply("indexer", input=x, index=index))
        start += n
    return out


@_register("aten.split", "aten.split_with_sizes", "aten.chunk")
def _split(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    dim = int(_arg(args, kw, 2, "dim", 0))
    sizes = [int(t.shape[dim]) for t in node.meta["val"]]
    return _chunks(b, node, args[0], sizes, dim)


@_register("aten.cat", "aten.concat")
def _cat(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    parts = list(args[0])
    dim = int(_arg(args, kw, 1, "dim", 0))
    if len(parts) == 1:
        return parts[0]
    return b.apply("concat", axis=dim, **{f"input{i + 1}": p for i, p in enumerate(parts)})


@_register("aten.stack")
def _stack(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    dim = int(_arg(args, kw, 1, "dim", 0))
    parts = [b.apply("unsqueeze", input=p, axis=dim) for p in args[0]]
    if len(parts) == 1:
        return parts[0]
    return b.apply("concat", axis=dim, **{f"input{i + 1}": p for i, p in enumerate(parts)})


@_register("_operator.getitem")
def _getitem(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return operator.getitem(args[0], args[1])


@_register("aten._assert_tensor_metadata", "aten._assert_scalar",
           "aten.sym_constrain_range_for_size")
def _nothing(b: Builder, node: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return None


# operators whose result depends on their tensor arguments' shapes and dtypes only
SHAPE_ONLY = {"aten.new_ones", "aten.new_zeros", "aten.new_full", "aten.new_empty",
              "aten.ones_like", "aten.zeros_like", "aten.full_like", "aten.empty_like"}


def ref_names(value: Any) -> list[str]:
    """Names of the terminals among a converter's arguments (for messages)."""
    if isinstance(value, Ref):
        return [value.name]
    if isinstance(value, list | tuple):
        return [n for v in value for n in ref_names(v)]
    return []
