"""ONNX mappings of the layer-sized primitives: products, reductions, convolution, pooling,
normalisation, attention, embedding and the array creators.

Where ONNX has the operator (``Conv``, ``MaxPool``, ``BatchNormalization``,
``LayerNormalization``) it is used; group norm and attention are compositions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backends.kernel_args import monomial_indices
from ..framework.physical.graph import Node
from .builder import ONNX_TYPES
from .mapping import maps
from .ops_elementwise import operands, promote
from .walk import BOOL, FLOATS, INT64, Emitter, Lit, Unsupported


def _floats(ex: Emitter, name: str) -> str:
    return name if ex.type_of(name) in FLOATS else ex.b.cast(name, ex.b.float_type)


def _ntuple(value: Any, nd: int) -> list[int]:
    return [int(value)] * nd if isinstance(value, int) else [int(v) for v in value]


def _pads(value: Any, nd: int) -> list[int]:
    """Padding (an int, per-dim ints or ``(before, after)`` pairs) as ONNX ``pads``."""
    if isinstance(value, int):
        pairs = [(value, value)] * nd
    else:
        pairs = [(int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1]))
                 for p in value]
    return [a for a, _ in pairs] + [b for _, b in pairs]


# ---- products ----
@maps("matmul")
def _matmul(ex: Emitter, node: Node) -> str:
    names, _ = operands(ex, node)
    return ex.b.node("MatMul", names, ex.hint())


@maps("linear")
def _linear(ex: Emitter, node: Node) -> str:
    """``x @ W.T + b`` with ``W`` of shape ``(out, in)``: ``Gemm`` for a matrix input,
    ``MatMul`` (+ ``Add``) for a batch of them."""
    x, w = _floats(ex, ex.tensor(ex.arg("input"))), ex.tensor(ex.arg("weight"))
    bias = ex.arg("bias")
    absent = ex.is_lit(bias) and ex.lit(bias) is None
    if ex.dims(ex.arg("input")) is not None and len(ex.dims(ex.arg("input"))) == 2:
        inputs = [x, w] if absent else [x, w, ex.tensor(bias, ex.type_of(x))]
        return ex.b.node("Gemm", inputs, ex.hint(), transB=1)
    wt = ex.b.node("Transpose", [w], ex.hint("_wT"), perm=[1, 0])
    if absent:
        return ex.b.node("MatMul", [x, wt], ex.hint())
    y = ex.b.node("MatMul", [x, wt], ex.hint("_matmul"))
    return ex.b.node("Add", [y, ex.tensor(bias, ex.type_of(y))], ex.hint())


# ---- reductions ----
def _axes(axis: Any) -> list[int] | None:
    if axis is None:
        return None
    return [int(axis)] if isinstance(axis, int) else [int(a) for a in axis]


_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin",
           "prod": "ReduceProd"}


@maps(*_REDUCE)
def _reduce(ex: Emitter, node: Node) -> str:
    x = ex.tensor(node.inputs[0])
    if ex.type_of(x) == BOOL or (node.op.name == "mean" and ex.type_of(x) not in FLOATS):
        x = ex.b.cast(x, INT64 if node.op.name != "mean" else ex.b.float_type)
    return ex.b.reduce(_REDUCE[node.op.name], x, _axes(ex.value("axis")),
                       bool(ex.value("keepdim")), ex.hint())


@maps("variance")
def _variance(ex: Emitter, node: Node) -> str:
    """``sum((x - mean)^2) / (n - correction)`` over the axes."""
    x = _floats(ex, ex.tensor(node.inputs[0]))
    axes, keep = _axes(ex.value("axis")), bool(ex.value("keepdim"))
    b, t = ex.b, ex.type_of(x)
    mean = b.reduce("ReduceMean", x, axes, True, ex.hint("_mean"))
    xc = b.node("Sub", [x, mean], ex.hint("_xc"))
    ss = b.reduce("ReduceSum", b.node("Mul", [xc, xc], ex.hint("_sq")), axes, keep,
                  ex.hint("_ss"))
    dims = ex.dims(node.inputs[0])
    picked = None if dims is None else (dims if axes is None else [dims[a] for a in axes])
    if picked is not None and all(d is not None for d in picked):
        n = ex.const(float(math.prod(picked)) - float(ex.value("correction")), t)
    else:
        count = b.node("Div", [b.node("Size", [x], ex.hint("_n"), out_type=INT64),
                               b.node("Size", [mean], ex.hint("_m"), out_type=INT64)],
                       ex.hint("_count"))
        n = b.node("Sub", [b.cast(count, t), ex.const(float(ex.value("correction")), t)],
                   ex.hint("_dof"))
    return b.node("Div", [ss, n], ex.hint())


@maps("argmax", "argmin")
def _arg_reduce(ex: Emitter, node: Node) -> str:
    x = ex.tensor(node.inputs[0])
    op = "ArgMax" if node.op.name == "argmax" else "ArgMin"
    axis, keep = ex.value("axis"), bool(ex.value("keepdim"))
    if axis is not None:
        return ex.b.node(op, [x], ex.hint(), out_type=INT64, axis=int(axis), keepdims=int(keep))
    flat = ex.b.node("Reshape", [x, ex.b.ints([-1])], ex.hint("_flat"))
    out = ex.b.node(op, [flat], ex.hint("_arg"), out_type=INT64, axis=0, keepdims=0)
    if keep:
        out = ex.b.node("Reshape", [out, ex.b.ints([1] * ex.rank(node.inputs[0]))], ex.hint())
    return out


# ---- convolution and pooling ----
@maps("conv1d", "conv2d")
def _conv(ex: Emitter, node: Node) -> str:
    nd = 1 if node.op.name == "conv1d" else 2
    inputs = [_floats(ex, ex.tensor(ex.arg("input"))), ex.tensor(ex.arg("weight"))]
    bias = ex.arg("bias")
    if not (ex.is_lit(bias) and ex.lit(bias) is None):
        inputs.append(ex.tensor(bias))
    return ex.b.node("Conv", inputs, ex.hint(), strides=_ntuple(ex.value("stride"), nd),
                     pads=_pads(ex.value("padding"), nd),
                     dilations=_ntuple(ex.value("dilation"), nd), group=int(ex.value("groups")))


@maps("conv_transpose1d", "conv_transpose2d")
def _conv_transpose(ex: Emitter, node: Node) -> str:
    nd = 1 if node.op.name == "conv_transpose1d" else 2
    inputs = [_floats(ex, ex.tensor(ex.arg("input"))), ex.tensor(ex.arg("weight"))]
    bias = ex.arg("bias")
    has_bias = not (ex.is_lit(bias) and ex.lit(bias) is None)
    strides = _ntuple(ex.value("stride"), nd)
    extra = _ntuple(ex.value("output_padding"), nd)
    attrs = {"strides": strides, "pads": _pads(ex.value("padding"), nd),
             "dilations": _ntuple(ex.value("dilation"), nd), "group": int(ex.value("groups"))}
    if all(e < s for e, s in zip(extra, strides, strict=True)):
        if has_bias:
            inputs.append(ex.tensor(bias))
        return ex.b.node("ConvTranspose", inputs, ex.hint(), output_padding=extra, **attrs)
    # PyTorch allows output_padding < dilation, onnxruntime only < stride: the extra positions
    # get no contribution from the input, so they are zeros (plus the bias)
    out = ex.b.node("ConvTranspose", inputs, ex.hint("_core"), **attrs)
    rank = ex.rank(node.inputs[0])
    out = ex.b.node("Pad", [out, ex.b.ints([0] * rank + [0] * (rank - nd) + list(extra))],
                    ex.hint("" if not has_bias else "_padded"))
    if not has_bias:
        return out
    shaped = ex.b.node("Reshape", [ex.tensor(bias), ex.b.ints([-1] + [1] * nd)],
                       ex.hint("_bias"))
    return ex.b.node("Add", [out, shaped], ex.hint())


@maps("max_pool1d", "max_pool2d", "avg_pool2d")
def _pool(ex: Emitter, node: Node) -> str:
    nd = 1 if node.op.name == "max_pool1d" else 2
    k = _ntuple(ex.value("kernel_size"), nd)
    stride = ex.value("stride")
    attrs: dict[str, Any] = {"kernel_shape": k, "pads": _pads(ex.value("padding"), nd),
                             "strides": k if stride is None else _ntuple(stride, nd)}
    x = ex.tensor(ex.arg("input"))
    if node.op.name == "avg_pool2d":
        return ex.b.node("AveragePool", [_floats(ex, x)], ex.hint(), count_include_pad=1,
                         **attrs)
    return ex.b.node("MaxPool", [x], ex.hint(), dilations=_ntuple(ex.value("dilation"), nd),
                     **attrs)


# ---- normalisation ----
def _optional(ex: Emitter, name: str) -> str | None:
    v = ex.arg(name)
    if ex.is_lit(v) and ex.lit(v) is None:
        return None
    return ex.tensor(v)


def _standardise(ex: Emitter, x: str, axes: list[int], eps: float, tag: str) -> str:
    """``(x - mean) / sqrt(biased var + eps)`` over ``axes``."""
    b, t = ex.b, ex.type_of(x)
    xc = b.node("Sub", [x, b.reduce("ReduceMean", x, axes, True, ex.hint(f"_{tag}mean"))],
                ex.hint(f"_{tag}xc"))
    var = b.reduce("ReduceMean", b.node("Mul", [xc, xc], ex.hint(f"_{tag}sq")), axes, True,
                   ex.hint(f"_{tag}var"))
    std = b.node("Sqrt", [b.node("Add", [var, ex.const(eps, t)], ex.hint(f"_{tag}eps"))],
                 ex.hint(f"_{tag}std"))
    return b.node("Div", [xc, std], ex.hint(f"_{tag}xhat"))


def _channel_affine(ex: Emitter, xhat: str, rank: int, weight: str | None,
                    bias: str | None) -> str:
    shape = ex.b.ints([-1] + [1] * (rank - 2))
    out = xhat
    if weight is not None:
        w = ex.b.node("Reshape", [weight, shape], ex.hint("_w"))
        out = ex.b.node("Mul", [out, w], ex.hint("_scaled"))
    if bias is not None:
        bb = ex.b.node("Reshape", [bias, shape], ex.hint("_b"))
        out = ex.b.node("Add", [out, bb], ex.hint("_shifted"))
    return out if out != xhat else ex.b.node("Identity", [xhat], ex.hint())


@maps("batch_norm")
def _batch_norm(ex: Emitter, node: Node) -> list[Any]:
    """Inference batch norm: ``BatchNormalization`` with the running statistics (the batch's
    statistics when the layer keeps none, as our kernels)."""
    x = _floats(ex, ex.tensor(ex.arg("input")))
    t, rank, eps = ex.type_of(x), ex.rank(ex.arg("input")), float(ex.value("eps"))
    weight, bias = _optional(ex, "weight"), _optional(ex, "bias")
    mean, var = _optional(ex, "running_mean"), _optional(ex, "running_var")
    stats = [ex.ref(ex.arg("running_mean")), ex.ref(ex.arg("running_var"))]
    if mean is None or var is None:
        xhat = _standardise(ex, x, [0, *range(2, rank)], eps, "")
        return [_channel_affine(ex, xhat, rank, weight, bias), *stats]
    c = ex.dims(ex.arg("input"))[1] if ex.dims(ex.arg("input")) else None
    if (weight is None or bias is None) and c is None:
        raise Unsupported("the number of channels is not known")
    weight = weight or ex.const(np.ones(c), t)
    bias = bias or ex.const(np.zeros(c), t)
    out = ex.b.node("BatchNormalization", [x, weight, bias, mean, var], ex.hint(),
                    epsilon=eps)
    return [out, *stats]


@maps("layer_norm")
def _layer_norm(ex: Emitter, node: Node) -> str:
    """``LayerNormalization`` over the trailing ``normalized_shape`` dims."""
    x = _floats(ex, ex.tensor(ex.arg("input")))
    t, eps = ex.type_of(x), float(ex.value("eps"))
    shape = ex.value("normalized_shape")
    dims = ex.dims(ex.arg("input"))
    if shape is None:
        if dims is None or dims[-1] is None:
            raise Unsupported("the normalised size is not known")
        shape = (dims[-1],)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    weight, bias = _optional(ex, "weight"), _optional(ex, "bias")
    inputs = [x, weight or ex.const(np.ones(shape), t)]
    if bias is not None:
        inputs.append(bias)
    return ex.b.node("LayerNormalization", inputs, ex.hint(), axis=-len(shape), epsilon=eps)


@maps("group_norm")
def _group_norm(ex: Emitter, node: Node) -> str:
    """``GroupNormalization`` from opset 21 (per-channel scale and bias, as ours); before it,
    a composition (opset 18's operator scales per group)."""
    x = _floats(ex, ex.tensor(ex.arg("input")))
    rank, groups = ex.rank(ex.arg("input")), int(ex.value("num_groups"))
    c = (ex.dims(ex.arg("input")) or [None, None])[1]
    if ex.b.opset >= 21 and c is not None:
        t = ex.type_of(x)
        scale = _optional(ex, "weight") or ex.const(np.ones(c), t)
        bias = _optional(ex, "bias") or ex.const(np.zeros(c), t)
        return ex.b.node("GroupNormalization", [x, scale, bias], ex.hint(), num_groups=groups,
                         epsilon=float(ex.value("eps")))
    grouped = ex.b.node("Reshape", [x, ex.b.ints([0, groups, -1])], ex.hint("_grouped"))
    xhat = _standardise(ex, grouped, [2], float(ex.value("eps")), "")
    xhat = ex.b.node("Reshape", [xhat, ex.b.shape_of(x, ex.hint("_shape"))], ex.hint("_xhat"))
    return _channel_affine(ex, xhat, rank, _optional(ex, "weight"), _optional(ex, "bias"))


# ---- embedding, attention, encodings ----
@maps("embedding")
def _embedding(ex: Emitter, node: Node) -> str:
    idx = ex.b.cast(ex.tensor(ex.arg("input"), INT64), INT64)
    return ex.b.node("Gather", [ex.tensor(ex.arg("weight")), idx], ex.hint(), axis=0)


def _dim(ex: Emitter, x: str, axis: int, hint: str) -> str:
    """``x.shape[axis]`` at run time (a 0-d int64)."""
    return ex.b.node("Gather", [ex.b.shape_of(x, hint + "_shape"), ex.const(axis, INT64)],
                     hint, axis=0)


@maps("scaled_dot_product")
def _sdp(ex: Emitter, node: Node) -> str:
    """``softmax(q @ k^T * scale + mask) @ v``; a boolean mask (and ``is_causal``) hides
    scores with ``-inf``, a float mask is added. ONNX ``Attention`` from opset 23 (4-d
    inputs, not both a mask and ``is_causal``), a composition otherwise."""
    b = ex.b
    q = _floats(ex, ex.tensor(ex.arg("query")))
    k, v = ex.tensor(ex.arg("key")), ex.tensor(ex.arg("value"))
    t = ex.type_of(q)
    rank = ex.rank(ex.arg("key"))
    mask = _optional(ex, "attn_mask")
    causal, scale = bool(ex.value("is_causal")), ex.value("scale")
    if b.opset >= 23 and rank == 4 and ex.rank(ex.arg("query")) == 4 and \
            ex.rank(ex.arg("value")) == 4 and not (causal and mask is not None):
        inputs = [q, b.cast(k, t), b.cast(v, t)]
        if mask is not None:
            inputs.append(mask if ex.type_of(mask) == BOOL else b.cast(mask, t))
        return b.node("Attention", inputs, ex.hint(), is_causal=int(causal),
                      scale=None if scale is None else float(scale))
    perm = [*range(rank - 2), rank - 1, rank - 2]
    kt = b.node("Transpose", [k], ex.hint("_kT"), perm=perm)
    scores = b.node("MatMul", [q, kt], ex.hint("_qk"))
    e = (ex.dims(ex.arg("query")) or [None])[-1]
    if scale is None and e is None:
        s = b.node("Reciprocal", [b.node("Sqrt", [b.cast(_dim(ex, q, -1, ex.hint("_e")), t)],
                                         ex.hint("_sqrte"))], ex.hint("_scale"))
    else:
        s = ex.const(1 / math.sqrt(e) if scale is None else scale, t)
    scores = b.node("Mul", [scores, s], ex.hint("_scores"))
    ninf = ex.const(-np.inf, t)
    if causal:
        rows = b.node("Range", [ex.const(0, INT64), _dim(ex, scores, -2, ex.hint("_l")),
                                ex.const(1, INT64)], ex.hint("_rows"))
        cols = b.node("Range", [ex.const(0, INT64), _dim(ex, scores, -1, ex.hint("_s")),
                                ex.const(1, INT64)], ex.hint("_cols"))
        allowed = b.node("LessOrEqual", [b.node("Unsqueeze", [cols, b.ints([0])],
                                                ex.hint("_c")),
                                         b.node("Unsqueeze", [rows, b.ints([1])],
                                                ex.hint("_r"))], ex.hint("_causal"),
                         out_type=BOOL)
        scores = b.node("Where", [allowed, scores, ninf], ex.hint("_masked"))
    if mask is not None:
        if ex.type_of(mask) == BOOL:
            scores = b.node("Where", [mask, scores, ninf], ex.hint("_bmask"))
        else:
            scores = b.node("Add", [scores, b.cast(mask, t)], ex.hint("_fmask"))
    probs = b.node("Softmax", [scores], ex.hint("_probs"), axis=-1)
    return b.node("MatMul", [probs, b.cast(v, t)], ex.hint())


@maps("one_hot")
def _one_hot(ex: Emitter, node: Node) -> str:
    x = ex.b.cast(ex.tensor(ex.arg("input")), INT64)
    n = int(ex.value("num_classes"))
    classes = ex.b.const(np.arange(n, dtype=np.int64), INT64)
    expanded = ex.b.node("Unsqueeze", [x, ex.b.ints([-1])], ex.hint("_x"))
    return ex.b.node("Equal", [expanded, classes], ex.hint(), out_type=BOOL)


@maps("dropout")
def _dropout(ex: Emitter, node: Node) -> str:
    """Inference behaviour: the input unchanged."""
    return ex.b.node("Identity", [ex.tensor(ex.arg("input"))], ex.hint())


@maps("polynomial_features")
def _polynomial_features(ex: Emitter, node: Node) -> str:
    x = _floats(ex, ex.tensor(ex.arg("input")))
    b, t = ex.b, ex.type_of(x)
    dims = ex.dims(ex.arg("input"))
    if dims is None or dims[-1] is None:
        raise Unsupported("the number of features is not known")
    idx = monomial_indices(dims[-1], int(ex.value("degree")))
    ones_shape = b.node("Concat", [b.shape_of(x, ex.hint("_lead"), 0, len(dims) - 1),
                                   b.ints([1])], ex.hint("_ones_shape"), axis=0)
    ones = b.node("Expand", [ex.const(1.0, t), ones_shape], ex.hint("_ones"))
    xa = b.node("Concat", [x, ones], ex.hint("_xa"), axis=-1)
    out = None
    for j in range(idx.shape[1]):
        cols = b.node("Gather", [xa, b.ints(idx[:, j].tolist())], ex.hint(f"_col{j}"),
                      axis=-1)
        out = cols if out is None else b.node("Mul", [out, cols], ex.hint(f"_prod{j}"))
    return b.node("Identity", [out], ex.hint())


# ---- creators ----
def _dtype_type(ex: Emitter, dtype: Any, default: int) -> int:
    if dtype is None:
        return default
    name = getattr(dtype, "name", dtype)
    if name not in ONNX_TYPES:
        raise Unsupported(f"dtype {dtype!r}")
    return ONNX_TYPES[name]


@maps("arange")
def _arange(ex: Emitter, node: Node) -> str:
    refs = [ex.ref(ex.arg(n)) for n in ("start", "stop", "step")]
    t = _dtype_type(ex, ex.value("dtype"), promote(ex, refs))
    parts = [ex.b.cast(ex.tensor(ex.arg(n), t), t) for n in ("start", "stop", "step")]
    parts = [ex.b.node("Reshape", [p, ex.b.ints([])], ex.hint("_0d")) if isinstance(r, Lit)
             else p for p, r in zip(parts, refs, strict=True)]
    return ex.b.node("Range", parts, ex.hint())


def _static_shape(ex: Emitter) -> list[int]:
    shape = ex.value("shape")
    return [int(shape)] if isinstance(shape, int) else [int(s) for s in shape]


@maps("randn")
def _randn(ex: Emitter, node: Node) -> str:
    """Standard normal draws from ONNX's generator (not the same numbers as a backend's)."""
    t = _dtype_type(ex, ex.value("dtype"), ex.b.float_type)
    return ex.b.node("RandomNormal", [], ex.hint(), out_type=t, dtype=t,
                     shape=_static_shape(ex))


@maps("randint")
def _randint(ex: Emitter, node: Node) -> str:
    """Integers uniform in ``[low, high)``: ``floor(uniform(low, high))``."""
    t = _dtype_type(ex, ex.value("dtype"), INT64)
    u = ex.b.node("RandomUniform", [], ex.hint("_u"), out_type=ONNX_TYPES["float64"],
                  dtype=ONNX_TYPES["float64"], shape=_static_shape(ex),
                  low=float(ex.value("low")), high=float(ex.value("high")))
    return ex.b.cast(ex.b.node("Floor", [u], ex.hint("_floor")), t)


@maps("unique")
def _unique(ex: Emitter, node: Node) -> str:
    outs = ex.b.node("Unique", [ex.tensor(ex.arg("input"))], ex.hint(), n_out=4,
                     out_type=[ex.type_of(ex.tensor(ex.arg("input"))), INT64, INT64, INT64],
                     sorted=1)
    return outs[0]

