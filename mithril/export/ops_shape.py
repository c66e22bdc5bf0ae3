"""ONNX mappings of the shape primitives: reshaping, indexing, and the runtime scalars and
tuples that symbolic shapes need (``x.shape[0]`` at run time is ``Gather(Shape(x), 0)``).
"""

from __future__ import annotations

from typing import Any

from ..framework import types as T
from ..framework.logical.sequences import carries_tensors
from ..framework.physical.graph import Node, Value
from .builder import ONNX_TYPES
from .mapping import maps
from .ops_elementwise import promote
from .walk import FLOATS, INT64, Emitter, Lit, SliceRef, TensorsRef, TupleRef, Unsupported

BIG = 2**62  # an open slice end; ONNX clamps it to the dim


def shape_input(ex: Emitter, v: Value) -> str:
    """A shape terminal (tuple of ints, an int, or a runtime tuple) as a 1-d int64 tensor."""
    r = ex.ref(v)
    if isinstance(r, TupleRef):
        return r.name
    if isinstance(r, Lit):
        value = r.value
        items = (value,) if isinstance(value, int) else tuple(value)
        return ex.b.ints(items)
    if isinstance(r, str) and ex.type_of(r) == INT64:  # one runtime int
        return ex.b.node("Reshape", [r, ex.b.ints([1])], ex.hint("_shape"))
    raise Unsupported(f"cannot use {v.name!r} as a shape")


def as_vector(ex: Emitter, part: Any, hint: str) -> str:
    """A Python int or a runtime 0-d int64 tensor as a 1-element int64 vector."""
    if isinstance(part, Lit):
        part = part.value
    if isinstance(part, int):
        return ex.b.ints([part])
    if isinstance(part, str):
        part = ex.b.cast(part, INT64)
        return ex.b.node("Reshape", [part, ex.b.ints([1])], hint)
    raise Unsupported(f"cannot use {part!r} as an int")


@maps("reshape")
def _reshape(ex: Emitter, node: Node) -> str:
    shape_v = ex.arg("shape")
    zero = ex.is_lit(shape_v) and 0 in tuple(
        (ex.lit(shape_v),) if isinstance(ex.lit(shape_v), int) else ex.lit(shape_v))
    return ex.b.node("Reshape", [ex.tensor(node.inputs[0]), shape_input(ex, shape_v)],
                     ex.hint(), allowzero=1 if zero else None)


@maps("transpose")
def _transpose(ex: Emitter, node: Node) -> str:
    axes = ex.value("axes")
    if axes is None:
        axes = tuple(reversed(range(ex.rank(node.inputs[0]))))
    return ex.b.node("Transpose", [ex.tensor(node.inputs[0])], ex.hint(), perm=list(axes))


@maps("swap_axes")
def _swap_axes(ex: Emitter, node: Node) -> str:
    r = ex.rank(node.inputs[0])
    perm = list(range(r))
    a, b = ex.value("axis1") % r, ex.value("axis2") % r
    perm[a], perm[b] = perm[b], perm[a]
    return ex.b.node("Transpose", [ex.tensor(node.inputs[0])], ex.hint(), perm=perm)


@maps("flatten")
def _flatten(ex: Emitter, node: Node) -> str:
    x = ex.tensor(node.inputs[0])
    dims = ex.dims(node.inputs[0])
    if dims is None:
        raise Unsupported("the input's rank is not known; give shapes=")
    r = len(dims)
    if r == 0:
        return ex.b.node("Reshape", [x, ex.b.ints([1])], ex.hint())
    s, e = ex.value("start_dim") % r, ex.value("end_dim") % r
    tail = dims[e + 1:]
    if all(d is not None for d in tail):
        shape = ex.b.ints([0] * s + [-1] + tail)  # 0: copy the input's dim
    else:
        parts = [ex.b.shape_of(x, ex.hint("_lead"), 0, s)] if s else []
        parts += [ex.b.ints([-1]), ex.b.shape_of(x, ex.hint("_tail"), e + 1)]
        shape = ex.b.node("Concat", parts, ex.hint("_shape"), axis=0)
    return ex.b.node("Reshape", [x, shape], ex.hint())


@maps("squeeze")
def _squeeze(ex: Emitter, node: Node) -> str:
    axis = ex.value("axis")
    inputs = [ex.tensor(node.inputs[0])]
    if axis is not None:
        inputs.append(ex.b.ints((axis,) if isinstance(axis, int) else axis))
    return ex.b.node("Squeeze", inputs, ex.hint())


@maps("unsqueeze")
def _unsqueeze(ex: Emitter, node: Node) -> str:
    axis = ex.value("axis")
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return ex.b.node("Unsqueeze", [ex.tensor(node.inputs[0]), ex.b.ints(axes)], ex.hint())


@maps("atleast_1d")
def _atleast_1d(ex: Emitter, node: Node) -> str:
    x = ex.tensor(node.inputs[0])
    if ex.rank(node.inputs[0]) == 0:
        return ex.b.node("Reshape", [x, ex.b.ints([1])], ex.hint())
    return ex.b.node("Identity", [x], ex.hint())


@maps("broadcast_to")
def _broadcast_to(ex: Emitter, node: Node) -> str:
    return ex.b.node("Expand", [ex.tensor(node.inputs[0]), shape_input(ex, ex.arg("shape"))],
                     ex.hint())


@maps("concat")
def _concat(ex: Emitter, node: Node) -> str:
    tensors = [v for v in node.inputs if v is not ex.arg("axis")]
    axis = ex.value("axis")
    t = promote(ex, [ex.ref(v) for v in tensors])
    names = [ex.b.cast(ex.tensor(v, t), t) for v in tensors]
    if axis is None:
        names = [ex.b.node("Reshape", [n, ex.b.ints([-1])], ex.hint("_flat")) for n in names]
        axis = 0
    return ex.b.node("Concat", names, ex.hint(), axis=int(axis))


@maps("pad")
def _pad(ex: Emitter, node: Node) -> str:
    x = ex.tensor(node.inputs[0])
    r = ex.rank(node.inputs[0])
    width = ex.value("pad_width")
    if isinstance(width, int):
        pairs = [(width, width)] * r
    else:
        pairs = [(p, p) if isinstance(p, int) else tuple(p) for p in width]
    pads = [int(p[0]) for p in pairs] + [int(p[1]) for p in pairs]
    return ex.b.node("Pad", [x, ex.b.ints(pads)], ex.hint(), mode="constant")


# ---- indexing ----
def _slice_bounds(s: slice) -> tuple[int, int, int]:
    step = 1 if s.step is None else int(s.step)
    if step > 0:
        start = 0 if s.start is None else int(s.start)
        stop = BIG if s.stop is None else int(s.stop)
    else:
        start = BIG if s.start is None else int(s.start)
        stop = -BIG if s.stop is None else int(s.stop)
    return start, stop, step


def index_tensor(ex: Emitter, x: str, rank: int, index: Any) -> str:
    """``x[index]`` for a basic index known at export time (ints, slices, None, ...)."""
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, list | tuple) or hasattr(i, "shape") for i in items):
        if len(items) == 1:  # one integer array: rows of x
            return ex.b.node("Gather", [x, ex.b.ints(list(items[0]))], ex.hint(), axis=0)
        raise Unsupported("advanced (array) indices beside other indices")
    used = sum(1 for i in items if i is not None and i is not Ellipsis)
    expanded: list[Any] = []
    for i in items:
        if i is Ellipsis:
            expanded += [slice(None)] * (rank - used)
        else:
            expanded.append(i)
    expanded += [slice(None)] * (rank - sum(1 for i in expanded if i is not None))
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    ax = out_ax = 0
    for i in expanded:
        if i is None:
            unsqueeze.append(out_ax)
            out_ax += 1
            continue
        if isinstance(i, slice):
            if i != slice(None):
                a, b, s = _slice_bounds(i)
                starts.append(a)
                ends.append(b)
                axes.append(ax)
                steps.append(s)
            out_ax += 1
        else:
            k = int(i)
            starts.append(k)
            ends.append(k + 1 if k != -1 else BIG)
            axes.append(ax)
            steps.append(1)
            squeeze.append(ax)
        ax += 1
    out = x
    if axes:
        out = ex.b.node("Slice", [out, ex.b.ints(starts), ex.b.ints(ends), ex.b.ints(axes),
                                  ex.b.ints(steps)], ex.hint("_slice"))
    if squeeze:
        out = ex.b.node("Squeeze", [out, ex.b.ints(squeeze)], ex.hint("_squeeze"))
    if unsqueeze:
        out = ex.b.node("Unsqueeze", [out, ex.b.ints(unsqueeze)], ex.hint("_unsqueeze"))
    return out if out != x else ex.b.node("Identity", [x], ex.hint())


def _runtime_slice(ex: Emitter, x: str, s: SliceRef, axis: int) -> str:
    defaults = (0, BIG, 1)
    step_lit = s.step.value if isinstance(s.step, Lit) else None
    if step_lit is not None and step_lit < 0:
        defaults = (BIG, -BIG, 1)
    parts = [as_vector(ex, Lit(d) if isinstance(p, Lit) and p.value is None else p,
                       ex.hint("_bound")) for p, d in zip((s.start, s.stop, s.step), defaults,
                                                           strict=True)]
    return ex.b.node("Slice", [x, parts[0], parts[1], ex.b.ints([axis]), parts[2]], ex.hint())


@maps("indexer")
def _indexer(ex: Emitter, node: Node) -> Any:
    src, idx_v = node.inputs
    r, idx = ex.ref(src), ex.ref(idx_v)
    if isinstance(r, TensorsRef):  # an element of a tuple of tensors: that tensor
        if not isinstance(idx, Lit):
            raise Unsupported("a tuple of tensors indexed at run time")
        picked = r.items[idx.value]
        return TensorsRef(picked) if isinstance(idx.value, slice) else picked
    if isinstance(r, TupleRef):  # a runtime tuple of ints (a shape)
        if isinstance(idx, Lit) and isinstance(idx.value, slice):
            a, b, s = _slice_bounds(idx.value)
            return TupleRef(ex.b.node("Slice", [r.name, ex.b.ints([a]), ex.b.ints([b]),
                                                ex.b.ints([0]), ex.b.ints([s])], ex.hint()))
        index = ex.b.cast(ex.tensor(idx_v, INT64), INT64)
        return ex.b.node("Gather", [r.name, index], ex.hint(), axis=0)
    if not isinstance(r, str):
        raise Unsupported("indexing a value that is not a tensor")
    if isinstance(idx, SliceRef):
        return _runtime_slice(ex, r, idx, 0)
    if isinstance(idx, Lit):
        return index_tensor(ex, r, ex.rank(src), idx.value)
    if isinstance(idx, str) and ex.type_of(idx) == INT64:  # one runtime int
        return ex.b.node("Gather", [r, idx], ex.hint(), axis=0)
    raise Unsupported("an index known only at run time")


@maps("to_slice")
def _to_slice(ex: Emitter, node: Node) -> SliceRef:
    return SliceRef(*(ex.ref(v) for v in node.inputs))


# ---- runtime scalars and tuples ----
@maps("shape")
def _shape(ex: Emitter, node: Node) -> TupleRef:
    return TupleRef(ex.b.shape_of(ex.tensor(node.inputs[0]), ex.hint()))


@maps("size")
def _size(ex: Emitter, node: Node) -> str:
    x = ex.tensor(node.inputs[0])
    dim = ex.value("dim")
    if dim is None:
        return ex.b.node("Size", [x], ex.hint(), out_type=INT64)
    shape = ex.b.shape_of(x, ex.hint("_shape"))
    return ex.b.node("Gather", [shape, ex.const(int(dim), INT64)], ex.hint(), axis=0)


@maps("to_tuple", "to_list")
def _to_tuple(ex: Emitter, node: Node) -> Any:
    refs = [ex.ref(v) for v in node.inputs]
    if carries_tensors(node.outputs[0].root):  # a tuple of tensors, read only by indexing
        return TensorsRef(tuple(refs))
    if any(isinstance(r, TupleRef | SliceRef | TensorsRef) for r in refs):
        raise Unsupported("a nested tuple known only at run time")
    parts = [as_vector(ex, r, ex.hint("_item")) for r in refs]
    return TupleRef(ex.b.node("Concat", parts, ex.hint(), axis=0))


@maps("item")
def _item(ex: Emitter, node: Node) -> str:
    return ex.b.node("Reshape", [ex.tensor(node.inputs[0]), ex.b.ints([])], ex.hint())


@maps("to_tensor")
def _to_tensor(ex: Emitter, node: Node) -> str:
    r = ex.ref(node.inputs[0])
    if isinstance(r, Lit):
        return ex.b.node("Identity", [ex.const(r.value)], ex.hint())
    name = r.name if isinstance(r, TupleRef) else r
    if not isinstance(name, str):
        raise Unsupported("to_tensor of a slice")
    t = ex.type_of(name)
    if t in FLOATS and t != ex.b.float_type:
        name = ex.b.cast(name, ex.b.float_type)
    return ex.b.node("Identity", [name], ex.hint())


@maps("dtype_of")
def _dtype_of(ex: Emitter, node: Node) -> Lit:
    t = ex.type_of(ex.tensor(node.inputs[0]))
    name = next(k for k, v in ONNX_TYPES.items() if v == t)
    return Lit(T.DTYPES[name])


@maps("split")
def _split(ex: Emitter, node: Node) -> str:
    """Stacked chunks: reshape the axis into ``(chunks, size)`` and move ``chunks`` first."""
    x = ex.tensor(node.inputs[0])
    r = ex.rank(node.inputs[0])
    size, a = int(ex.value("split_size")), ex.value("axis") % r
    parts = [ex.b.shape_of(x, ex.hint("_lead"), 0, a)] if a else []
    parts.append(ex.b.ints([-1, size]))
    if a + 1 < r:
        parts.append(ex.b.shape_of(x, ex.hint("_tail"), a + 1))
    shape = ex.b.node("Concat", parts, ex.hint("_shape"), axis=0)
    split = ex.b.node("Reshape", [x, shape], ex.hint("_split"))
    perm = [a, *range(a), *range(a + 1, r + 1)]
    return ex.b.node("Transpose", [split], ex.hint(), perm=perm)

