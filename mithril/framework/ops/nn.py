"""Neural-network primitives: convolution, pooling, normalisation, embedding, attention, dropout."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .. import types as T
from ..logical.meta import SCALAR, TBD, TENSOR, Meta
from ..rules import (
    concat_frags,
    dv,
    ensure_rank,
    frag,
    out_kinds,
    same_shape,
    set_shape,
    split_last,
)
from ..shapes import Dim, ShapeConflict, set_dim, unify_dims, unify_frags
from .base import (
    CATALOGUE,
    OUT,
    OpDef,
    Term,
    derive,
    register,
)
from .linalg import split_or_impose


# ----------------------------------------------------------------------------------------------
# Convolution and pooling
# ----------------------------------------------------------------------------------------------
def _pairs(v: Any, nd: int, what: str) -> tuple[Any, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,) * nd
    if isinstance(v, tuple | list) and len(v) == nd and all(
            (isinstance(x, int) and not isinstance(x, bool)) or
            (isinstance(x, tuple) and what == "padding") for x in v):
        return tuple(v)
    raise ShapeConflict(f"{what} must be an int or a tuple of {nd}, got {v!r}")


def _pad_pairs(v: Any, nd: int) -> tuple[tuple[int, int], ...]:
    items = _pairs(v, nd, "padding")
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in items)


def _window_out(size: int | None, pad: tuple[int, int], k: int | None, s: int, d: int,
                ceil: bool = False) -> int | None:
    if size is None or k is None:
        return None
    span = size + pad[0] + pad[1] - d * (k - 1) - 1
    if span < 0:
        raise ShapeConflict(f"window of size {k} (dilation {d}) does not fit an input of {size} "
                            f"with padding {pad}")
    return (-(-span // s) if ceil else span // s) + 1


def _conv_rule(nd: int) -> Callable[..., bool]:
    def rule(inp: Meta, weight: Meta, bias: Meta, stride: Meta, padding: Meta, dilation: Meta,
             groups: Meta, out: Meta) -> bool:
        out_kinds(out, T.promote(inp.kinds, weight.kinds))
        w = ensure_rank(weight, nd + 2)
        if bias.kind == TENSOR:
            set_shape(bias, [w[0]])
        if not (stride.value is not TBD and padding.value is not TBD
                and dilation.value is not TBD and groups.value is not TBD):
            return False
        s = _pairs(stride.value, nd, "stride")
        d = _pairs(dilation.value, nd, "dilation")
        p = _pad_pairs(padding.value, nd)
        g = groups.value
        head = split_or_impose(inp, nd + 1)
        if head is None:
            return False
        c_in, *spatial = head[1]
        if head[0].var is None and len(head[0].prefix) > 1:
            raise ShapeConflict(f"convolution input {frag(inp)} has too many dims")
        if not isinstance(g, int) or isinstance(g, bool) or g < 1:
            raise ShapeConflict(f"groups must be a positive int, got {g!r}")
        if g == 1:
            unify_dims(c_in, w[1])
        elif dv(c_in) is not None and dv(w[1]) is None:
            if dv(c_in) % g:
                raise ShapeConflict(f"{dv(c_in)} input channels are not divisible by groups={g}")
            set_dim(w[1], dv(c_in) // g)
        elif dv(c_in) is None and dv(w[1]) is not None:
            set_dim(c_in, dv(w[1]) * g)
        elif dv(c_in) is not None and dv(c_in) != dv(w[1]) * g:
            raise ShapeConflict(f"input has {dv(c_in)} channels but the weight expects "
                                f"{dv(w[1]) * g} ({dv(w[1])} x groups={g})")
        if g > 1 and dv(w[0]) is not None and dv(w[0]) % g:
            raise ShapeConflict(f"{dv(w[0])} output channels are not divisible by groups={g}")
        # with groups > 1 the channels are related only once both are known
        channels_done = g == 1 or (dv(c_in) is not None and dv(w[0]) is not None)
        sizes = [_window_out(dv(x), p[i], dv(w[2 + i]), s[i], d[i])
                 for i, x in enumerate(spatial)]
        out_f = frag(out)
        tail_dims = (split_last(out_f, nd + 1) or (None, None))[1]
        tail: list[Any] = list(tail_dims) if tail_dims else [Dim() for _ in range(nd + 1)]
        unify_dims(tail[0], w[0])
        for t, size in zip(tail[1:], sizes, strict=True):
            if size is not None:
                set_dim(t, size)
        unify_frags(out.shape, concat_frags(head[0], tail))
        return None not in sizes and bias.kind is not None and channels_done

    return rule


_CONV_SCALARS = (Term("stride", SCALAR, T.INT, default=1),
                 Term("padding", SCALAR, T.INT, default=0),
                 Term("dilation", SCALAR, T.INT, default=1),
                 Term("groups", SCALAR, T.INT, default=1))
register(OpDef("conv1d", (Term("input"), Term("weight"), Term("bias", optional=True),
                          *_CONV_SCALARS), OUT, _conv_rule(1)))
register(OpDef("conv2d", (Term("input"), Term("weight"), Term("bias", optional=True),
                          *_CONV_SCALARS), OUT, _conv_rule(2)))


def _conv_transpose_rule(nd: int) -> Callable[..., bool]:
    def rule(inp: Meta, weight: Meta, bias: Meta, stride: Meta, padding: Meta,
             output_padding: Meta, dilation: Meta, groups: Meta, out: Meta) -> bool:
        out_kinds(out, T.promote(inp.kinds, weight.kinds))
        w = ensure_rank(weight, nd + 2)
        scalars = (stride, padding, output_padding, dilation, groups)
        if any(m.value is TBD for m in scalars):
            return False
        s, p, op, d = (_pairs(m.value, nd, what) for m, what in (
            (stride, "stride"), (padding, "padding"), (output_padding, "output_padding"),
            (dilation, "dilation")))
        g = groups.value
        if not isinstance(g, int) or isinstance(g, bool) or g < 1:
            raise ShapeConflict(f"groups must be a positive int, got {g!r}")
        for i in range(nd):
            if not isinstance(p[i], int) or p[i] < 0:
                raise ShapeConflict(f"padding must be non-negative ints, got {padding.value!r}")
            if op[i] < 0 or op[i] >= max(s[i], d[i]):
                raise ShapeConflict(f"output_padding {op[i]} must be smaller than stride {s[i]} "
                                    f"or dilation {d[i]}")
        head = split_or_impose(inp, nd + 1)
        if head is None:
            return False
        c_in, *spatial = head[1]
        unify_dims(c_in, w[0])
        if dv(c_in) is not None and dv(c_in) % g:
            raise ShapeConflict(f"{dv(c_in)} input channels are not divisible by groups={g}")
        out_f = frag(out)
        tail_dims = (split_last(out_f, nd + 1) or (None, None))[1]
        tail: list[Any] = list(tail_dims) if tail_dims else [Dim() for _ in range(nd + 1)]
        if dv(w[1]) is not None:
            set_dim(tail[0], dv(w[1]) * g)
        sizes: list[int | None] = []
        for i, x in enumerate(spatial):
            size, k = dv(x), dv(w[2 + i])
            n = None if size is None or k is None else (
                (size - 1) * s[i] - 2 * p[i] + d[i] * (k - 1) + op[i] + 1)
            if n is not None and n < 1:
                raise ShapeConflict(f"transposed convolution output size {n} is too small")
            sizes.append(n)
            if n is not None:
                set_dim(tail[1 + i], n)
        if bias.kind == TENSOR:
            set_shape(bias, [tail[0]])
        unify_frags(out.shape, concat_frags(head[0], tail))
        return None not in sizes and bias.kind is not None and dv(w[1]) is not None

    return rule


def _conv_transpose(nd: int) -> Callable[..., Any]:
    """Transposed convolution as a convolution: insert ``stride - 1`` zeros between input
    elements, pad by ``dilation * (k - 1) - padding`` (``+ output_padding`` after; cropping
    where negative) and correlate with the flipped kernel, input/output channels swapped per
    group."""
    def decompose(k: Any, input: Any, weight: Any, bias: Any, stride: Any, padding: Any,
                  output_padding: Any, dilation: Any, groups: int) -> Any:
        s, p, op, d = (_pairs(v, nd, "") for v in (stride, padding, output_padding, dilation))
        x, all_ = input, slice(None)
        n, c, *size = (int(v) for v in x.shape)
        if any(v > 1 for v in s):  # zeros between the elements: (.., L, 1) padded to (.., L, s)
            x = k.reshape(x, (n, c, *(v for L in size for v in (L, 1))))
            x = k.pad(x, ((0, 0), (0, 0), *(q for si in s for q in ((0, 0), (0, si - 1)))))
            x = k.reshape(x, (n, c, *(L * si for L, si in zip(size, s, strict=True))))
            x = k.indexer(x, (all_, all_, *(slice(0, (L - 1) * si + 1)
                                             for L, si in zip(size, s, strict=True))))
        c_in, c_out, *ks = (int(v) for v in weight.shape)
        lo = [d[i] * (ks[i] - 1) - p[i] for i in range(nd)]
        hi = [lo[i] + op[i] for i in range(nd)]
        if any(v > 0 for v in lo + hi):
            x = k.pad(x, ((0, 0), (0, 0), *((max(a, 0), max(b, 0))
                                            for a, b in zip(lo, hi, strict=True))))
        if any(v < 0 for v in lo + hi):
            x = k.indexer(x, (all_, all_, *(slice(max(-a, 0), b if b < 0 else None)
                                             for a, b in zip(lo, hi, strict=True))))
        w = k.reshape(weight, (groups, c_in // groups, c_out, *ks))
        w = k.transpose(w, (0, 2, 1, *range(3, nd + 3)))
        w = k.reshape(w, (groups * c_out, c_in // groups, *ks))
        w = k.indexer(w, (all_, all_, *(slice(None, None, -1),) * nd))
        conv = k.conv1d if nd == 1 else k.conv2d
        return conv(x, w, bias, (1,) * nd, ((0, 0),) * nd, tuple(d), groups)

    decompose.__qualname__ = f"conv_transpose{nd}d"
    return decompose


_CONV_T_SCALARS = (Term("stride", SCALAR, T.INT, default=1),
                   Term("padding", SCALAR, T.INT, default=0),
                   Term("output_padding", SCALAR, T.INT, default=0),
                   Term("dilation", SCALAR, T.INT, default=1),
                   Term("groups", SCALAR, T.INT, default=1))
for _nd in (1, 2):
    register(OpDef(
        f"conv_transpose{_nd}d",
        (Term("input"), Term("weight"), Term("bias", optional=True), *_CONV_T_SCALARS), OUT,
        _conv_transpose_rule(_nd), decompose=_conv_transpose(_nd),
        doc=f"torch.nn.functional.conv_transpose{_nd}d (weight: in, out / groups, *kernel)"))


def _pool_rule(nd: int, has_dilation: bool) -> Callable[..., bool]:
    def rule(inp: Meta, kernel_size: Meta, stride: Meta, padding: Meta, *rest: Meta) -> bool:
        out = rest[-1]
        extra = rest[:-1]
        out_kinds(out, inp.kinds)
        scalars = (kernel_size, stride, padding, *extra)
        if any(m.value is TBD for m in scalars):
            return False
        k = _pairs(kernel_size.value, nd, "kernel_size")
        s = _pairs(k if stride.value is None else stride.value, nd, "stride")
        p = _pad_pairs(padding.value, nd)
        if any(isinstance(x, tuple) for x in _pairs(padding.value, nd, "padding")):
            # the kernel contract: one int per spatial dim (PyTorch's kernels take no more);
            # the reference's per-side pairs are an explicit pad before the op (MaxPool2D)
            raise ShapeConflict(f"padding must be an int or a tuple of {nd} ints (one per "
                                f"spatial dim), got {padding.value!r}; pad unevenly with Pad "
                                "first, or use the reference's MaxPool1D/MaxPool2D/AvgPool2D")
        d = _pairs(extra[0].value, nd, "dilation") if has_dilation else (1,) * nd
        for i in range(nd):
            if 2 * max(p[i]) > k[i]:
                raise ShapeConflict(f"padding {p[i]} should be at most half of kernel size {k[i]}")
        head = split_or_impose(inp, nd)
        if head is None:
            return False
        sizes = [_window_out(dv(x), p[i], k[i], s[i], d[i]) for i, x in enumerate(head[1])]
        out_f = frag(out)
        tail_dims = (split_last(out_f, nd) or (None, None))[1]
        tail: list[Any] = list(tail_dims) if tail_dims else [Dim() for _ in range(nd)]
        for t, size in zip(tail, sizes, strict=True):
            if size is not None:
                set_dim(t, size)
        unify_frags(out.shape, concat_frags(head[0], tail))
        return None not in sizes

    return rule


_POOL = (Term("kernel_size", SCALAR, T.INT), Term("stride", SCALAR, T.INT, default=None),
         Term("padding", SCALAR, T.INT, default=0))
register(OpDef("max_pool1d", (Term("input"), *_POOL, Term("dilation", SCALAR, T.INT, default=1)),
               OUT, _pool_rule(1, True)))
register(OpDef("max_pool2d", (Term("input"), *_POOL, Term("dilation", SCALAR, T.INT, default=1)),
               OUT, _pool_rule(2, True)))
register(OpDef("avg_pool2d", (Term("input"), *_POOL), OUT, _pool_rule(2, False)))


# ----------------------------------------------------------------------------------------------
# Normalisation, embedding, attention
# ----------------------------------------------------------------------------------------------
def _batch_norm_rule(inp: Meta, weight: Meta, bias: Meta, rmean: Meta, rvar: Meta,
                     momentum: Meta, eps: Meta, out: Meta, new_mean: Meta, new_var: Meta) -> bool:
    out_kinds(out, T.FLOAT)
    same_shape(inp, out)
    f = frag(inp)
    if f.var is not None and len(f.prefix) < 2:
        return False
    dims = f.prefix
    if len(dims) < 2:
        raise ShapeConflict(f"batch norm needs an input of rank >= 2, got {f}")
    c = dims[1]
    for m in (weight, bias, rmean, rvar):
        if m.kind == TENSOR:
            set_shape(m, [c])
    set_shape(new_mean, [c])
    set_shape(new_var, [c])
    return all(m.kind is not None for m in (weight, bias, rmean, rvar))


register(OpDef(
    "batch_norm",
    (Term("input"), Term("weight", optional=True), Term("bias", optional=True),
     Term("running_mean", optional=True, differentiable=False),
     Term("running_var", optional=True, differentiable=False),
     Term("momentum", SCALAR, T.FLOAT, default=0.1), Term("eps", SCALAR, T.FLOAT, default=1e-5)),
    (Term("output"), Term("running_mean_out", differentiable=False),
     Term("running_var_out", differentiable=False)),
    _batch_norm_rule, state={"running_mean": "running_mean_out", "running_var": "running_var_out"},
    modal=True))


def _layer_norm_rule(inp: Meta, weight: Meta, bias: Meta, normalized: Meta, eps: Meta,
                     out: Meta) -> bool:
    out_kinds(out, T.FLOAT)
    same_shape(inp, out)
    if normalized.value is TBD:
        return False
    shape = tuple(normalized.value)
    head = split_last(frag(inp), len(shape))
    for m in (weight, bias):
        if m.kind == TENSOR:
            set_shape(m, list(shape))
    if head is None:
        return False
    for d, n in zip(head[1], shape, strict=True):
        set_dim(d, n) if isinstance(n, int) else unify_dims(d, n)
    return weight.kind is not None and bias.kind is not None


register(OpDef("layer_norm", (Term("input"), Term("weight", optional=True),
                              Term("bias", optional=True),
                              Term("normalized_shape", SCALAR, T.INT),
                              Term("eps", SCALAR, T.FLOAT, default=1e-5)), OUT, _layer_norm_rule))


def _group_norm_rule(inp: Meta, weight: Meta, bias: Meta, groups: Meta, eps: Meta,
                     out: Meta) -> bool:
    out_kinds(out, T.FLOAT)
    same_shape(inp, out)
    f = frag(inp)
    if len(f.prefix) < 2:
        return False
    c = f.prefix[1]
    for m in (weight, bias):
        if m.kind == TENSOR:
            set_shape(m, [c])
    if groups.value is not TBD and dv(c) is not None and dv(c) % groups.value:
        raise ShapeConflict(f"{dv(c)} channels are not divisible into {groups.value} groups")
    return weight.kind is not None and bias.kind is not None


register(OpDef("group_norm", (Term("input"), Term("weight", optional=True),
                              Term("bias", optional=True), Term("num_groups", SCALAR, T.INT),
                              Term("eps", SCALAR, T.FLOAT, default=1e-5)), OUT, _group_norm_rule))


def _embedding_rule(inp: Meta, weight: Meta, out: Meta) -> bool:
    out_kinds(out, weight.kinds)
    w = ensure_rank(weight, 2)
    unify_frags(out.shape, concat_frags(frag(inp), [w[1]]))
    return True


register(OpDef("embedding", (Term("input", TENSOR, T.INT, differentiable=False), Term("weight")),
               OUT, _embedding_rule))


def _sdp_rule(q: Meta, k: Meta, v: Meta, mask: Meta, is_causal: Meta, scale: Meta,
              out: Meta) -> bool:
    out_kinds(out, T.FLOAT)
    qs, ks, vs = split_last(frag(q), 2), split_last(frag(k), 2), split_last(frag(v), 2)
    if qs is None or ks is None or vs is None:
        return False
    unify_dims(qs[1][1], ks[1][1])  # embedding size of q and k
    unify_dims(ks[1][0], vs[1][0])  # sequence length of k and v
    unify_frags(out.shape, concat_frags(qs[0], [qs[1][0], vs[1][1]]))
    return True


register(OpDef("scaled_dot_product", (
    Term("query"), Term("key"), Term("value"),
    Term("attn_mask", kinds=T.ANY, optional=True, differentiable=False),
    Term("is_causal", SCALAR, T.BOOL, default=False), Term("scale", SCALAR, T.FLOAT, default=None)),
    OUT, _sdp_rule))


def _one_hot_rule(inp: Meta, classes: Meta, out: Meta) -> bool:
    out_kinds(out, T.BOOL)
    if classes.value is TBD:
        return False
    n = classes.value
    tail = [n if isinstance(n, Dim) else Dim(n)]
    unify_frags(out.shape, concat_frags(frag(inp), tail))
    return True


register(OpDef("one_hot", (Term("input", TENSOR, T.INT, differentiable=False),
                           Term("num_classes", SCALAR, T.INT)),
               (Term("output", kinds=T.ANY),), _one_hot_rule, differentiable=False))


def _dropout_rule(inp: Meta, p: Meta, out: Meta) -> bool:
    out_kinds(out, inp.kinds)
    if p.value is not TBD and not 0 <= p.value < 1:
        raise ShapeConflict(f"dropout probability must be in [0, 1), got {p.value!r}")
    return same_shape(inp, out)


register(OpDef("dropout", (Term("input"), Term("p", SCALAR, T.FLOAT, default=0.5)), OUT,
               _dropout_rule, modal=True, random=True))


# ---- derived: decompositions into core kernels ----------------------------------------------
def _conv1d(k: Any, x: Any, weight: Any, bias: Any, stride: Any = 1, padding: Any = 0,
            dilation: Any = 1, groups: int = 1) -> Any:
    """conv2d over a ``(N, C, 1, L)`` view (``(C, 1, L)`` unbatched)."""
    (p,) = _pad_pairs(padding, 1)
    out = k.conv2d(k.reshape(x, (*x.shape[:-1], 1, x.shape[-1])),
                   k.reshape(weight, (*weight.shape[:2], 1, weight.shape[2])), bias,
                   (1, *_pairs(stride, 1, "")), ((0, 0), p), (1, *_pairs(dilation, 1, "")),
                   groups)
    return k.reshape(out, (*out.shape[:-2], out.shape[-1]))


def _max_pool1d(k: Any, x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                dilation: Any = 1) -> Any:
    """max_pool2d over a ``(N, C, 1, L)`` view."""
    ks = _pairs(kernel_size, 1, "")
    out = k.max_pool2d(k.reshape(x, (*x.shape[:-1], 1, x.shape[-1])), (1, *ks),
                       (1, *_pairs(ks if stride is None else stride, 1, "")),
                       (0, *_pairs(padding, 1, "")), (1, *_pairs(dilation, 1, "")))
    return k.reshape(out, (*out.shape[:-2], out.shape[-1]))


def _normalized(k: Any, x: Any, axes: tuple[int, ...], eps: float) -> Any:
    n = 1
    for a in axes:
        n *= int(x.shape[a])
    mean = k.divide(k.sum(x, axes, True), n)
    d = k.subtract(x, mean)
    var = k.divide(k.sum(k.multiply(d, d), axes, True), n)
    return k.divide(d, k.sqrt(k.add(var, eps)))


def _layer_norm(k: Any, x: Any, weight: Any, bias: Any, normalized_shape: Any,
                eps: float = 1e-5) -> Any:
    n = len(normalized_shape) if isinstance(normalized_shape, tuple | list) else 1
    out = _normalized(k, x, tuple(range(len(x.shape) - n, len(x.shape))), eps)
    out = out if weight is None else k.multiply(out, weight)
    return out if bias is None else k.add(out, bias)


def _group_norm(k: Any, x: Any, weight: Any, bias: Any, num_groups: int,
                eps: float = 1e-5) -> Any:
    shape = tuple(int(v) for v in x.shape)
    y = _normalized(k, k.reshape(x, (shape[0], num_groups, -1)), (2,), eps)
    y = k.reshape(y, shape)
    channel = (shape[1],) + (1,) * (len(shape) - 2)
    y = y if weight is None else k.multiply(y, k.reshape(weight, channel))
    return y if bias is None else k.add(y, k.reshape(bias, channel))


def _affine(k: Any, y: Any, weight: Any, bias: Any, channel: tuple[int, ...]) -> Any:
    y = y if weight is None else k.multiply(y, k.reshape(weight, channel))
    return y if bias is None else k.add(y, k.reshape(bias, channel))


def _batch_norm(k: Any, x: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any,
                momentum: float = 0.1, eps: float = 1e-5) -> tuple[Any, Any, Any]:
    """Training: batch statistics over every axis but 1 (biased variance); the running
    statistics move towards the batch mean and the unbiased variance (PyTorch)."""
    shape = tuple(int(v) for v in x.shape)
    channel = (shape[1],) + (1,) * (len(shape) - 2)
    axes = (0, *range(2, len(shape)))
    n = math.prod(shape) // shape[1]
    mean = k.divide(k.sum(x, axes, True), n)
    d = k.subtract(x, mean)
    var = k.divide(k.sum(k.multiply(d, d), axes, True), n)
    out = _affine(k, k.divide(d, k.sqrt(k.add(var, eps))), weight, bias, channel)
    if running_mean is None or running_var is None:
        return out, running_mean, running_var
    unbiased = k.multiply(k.reshape(var, (shape[1],)), n / max(n - 1, 1))
    new_mean = k.add(k.multiply(running_mean, 1 - momentum),
                     k.multiply(k.reshape(mean, (shape[1],)), momentum))
    new_var = k.add(k.multiply(running_var, 1 - momentum), k.multiply(unbiased, momentum))
    return out, new_mean, new_var


def _batch_norm_inference(k: Any, x: Any, weight: Any, bias: Any, running_mean: Any,
                          running_var: Any, momentum: float = 0.1, eps: float = 1e-5
                          ) -> tuple[Any, Any, Any]:
    if running_mean is None or running_var is None:
        return _batch_norm(k, x, weight, bias, None, None, momentum, eps)
    channel = (int(x.shape[1]),) + (1,) * (len(x.shape) - 2)
    xhat = k.divide(k.subtract(x, k.reshape(running_mean, channel)),
                    k.sqrt(k.add(k.reshape(running_var, channel), eps)))
    return _affine(k, xhat, weight, bias, channel), running_mean, running_var


def _scaled_dot_product(k: Any, query: Any, key: Any, value: Any, attn_mask: Any = None,
                        is_causal: bool = False, scale: float | None = None) -> Any:
    """``softmax(q k^T * scale + mask) v``: a boolean mask is True where attending is allowed,
    a float mask is added, ``is_causal`` hides the keys after each query (PyTorch)."""
    n_q, n_k, e = int(query.shape[-2]), int(key.shape[-2]), int(query.shape[-1])
    scores = k.multiply(k.matmul(query, k.swap_axes(key, -1, -2)),
                        1 / math.sqrt(e) if scale is None else scale)
    if is_causal:
        rows = k.reshape(k.arange(0, n_q, 1, None), (n_q, 1))
        scores = k.where(k.greater(k.arange(0, n_k, 1, None), rows), -math.inf, scores)
    if attn_mask is not None:
        scores = (k.where(attn_mask, scores, -math.inf) if "bool" in str(attn_mask.dtype)
                  else k.add(scores, attn_mask))
    return k.matmul(k.softmax(scores, -1), value)


derive({"conv1d": _conv1d, "max_pool1d": _max_pool1d, "layer_norm": _layer_norm,
        "group_norm": _group_norm})
# Derived. Every backend keeps its own batch_norm (a fused framework call, measurably faster in
# the training benchmarks); PyTorch also keeps its fused SDPA / gather / one_hot calls. NumPy,
# JAX and MLX run scaled_dot_product, embedding and one_hot from these decompositions (the same
# framework calls, bitwise equal results).
derive({
    "batch_norm": _batch_norm,
    "embedding": lambda k, input, weight: k.indexer(weight, input),
    "scaled_dot_product": _scaled_dot_product,
    "one_hot": lambda k, input, num_classes: k.equal(
        k.unsqueeze(input, -1), k.arange(0, num_classes, 1, None)),
})
CATALOGUE["batch_norm"].decompose_inference = _batch_norm_inference
