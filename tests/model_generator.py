"""Random, valid Mithril models for property tests (hypothesis strategies and a builder).

A generated model is described by a *spec*: plain frozen dataclasses whose ``repr`` is valid
Python, so a failing example printed by hypothesis can be pasted into
``tests/regressions/`` as it is. :func:`build` turns a spec into a fresh ``Model`` (and what
the test expects of it: data keys and shapes, outputs and their shapes, all computed here from
the layers' documented PyTorch semantics, independently of Mithril's shape inference), and
:func:`check_against_reference` compiles it on a backend and compares outputs, gradients and
state with the NumPy float64 backend. :func:`check_finite_differences` compares the NumPy
backend's gradients with central finite differences.

Specs cover:

- chains of library layers and primitives with random hyper-parameters (``+=`` and ``|=``);
- branches merged by ``Add`` / ``Subtract`` / ``Multiply`` / ``Concat``, residuals with
  ``Add`` or with the connection algebra;
- nested composites (model depth up to 3), named and exposed intermediate terminals
  (``IOKey(..., expose=True)``, odd but valid names), extra data inputs inside nested models
  (their keys follow the model path), ``IOKey`` shape annotations at build time;
- symbolic batch sizes at compile time, the data input as a trainable key, inference mode.

Max-type operations (``MaxPool``) are only generated where their input has no ties (ties make
the gradient a convention that frameworks choose differently): after ``Relu`` / ``Clamp`` a
branch may hold exact zeros, so max-pooling is not drawn there.

A failure it finds is kept, shrunk, in ``tests/regressions/`` (a strict xfail until fixed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

import mithril as ml
from mithril import IOKey
from mithril.models import (
    MLP,
    Absolute,
    AdaptiveAvgPool2d,
    Add,
    AvgPool2d,
    BatchNorm2d,
    Buffer,
    Clamp,
    Concat,
    Conv1d,
    Conv2d,
    Cosine,
    Flatten,
    Gelu,
    GroupNorm,
    LayerNorm,
    LeakyRelu,
    Linear,
    LogSoftmax,
    MaxPool1d,
    MaxPool2d,
    Mean,
    Model,
    MultiheadAttention,
    Multiply,
    Negate,
    Relu,
    Reshape,
    Sigmoid,
    SiLU,
    Sine,
    Softmax,
    Softplus,
    Square,
    Subtract,
    Sum,
    Tanh,
)

Shape = tuple[int, ...]
HP = tuple[tuple[str, Any], ...]

BACKEND_CLASSES = {"numpy": "NumpyBackend", "torch": "TorchBackend", "jax": "JaxBackend",
                   "mlx": "MlxBackend"}


# ==============================================================================================
# Specs
# ==============================================================================================
@dataclass(frozen=True)
class Layer:
    """One library layer or primitive; ``how`` is ``"+="`` (chain) or ``"|="`` (named).

    ``out`` names the output connection (``|=`` only; ``None``: a fresh connection) and
    ``annotate`` adds ``IOKey(out, shape=...)`` with the expected shape.
    """

    kind: str
    hp: HP = ()
    how: str = "+="
    out: str | None = None
    annotate: bool = False


@dataclass(frozen=True)
class Algebra:
    """An expression of the connection algebra on the current value, named by a ``Buffer``."""

    kind: str
    out: str | None = None


@dataclass(frozen=True)
class Expose:
    """Keep the current value readable as an extra output named ``name``."""

    name: str


@dataclass(frozen=True)
class AuxInput:
    """Combine the current value with a new data input ``name`` of the same shape."""

    name: str
    op: str = "add"  # add | multiply
    with_shape: bool = False  # declare the input's shape with IOKey(shape=...)


@dataclass(frozen=True)
class Residual:
    """``body(x) + x``; ``merge`` is ``"add"`` (the ``Add`` primitive) or ``"algebra"``."""

    body: Block
    merge: str = "add"


@dataclass(frozen=True)
class Branch:
    """``merge(left(x), right(x))``; ``concat`` joins along ``axis``."""

    left: Block
    right: Block
    merge: str = "add"  # add | subtract | multiply | concat
    axis: int = 1


@dataclass(frozen=True)
class Block:
    """A sequence of nodes; ``nested`` builds it as a child ``Model`` (named ``name``) that is
    added with ``how``."""

    items: tuple[Any, ...]
    nested: bool = False
    name: str | None = None
    how: str = "|="
    declare: bool = False  # declare the nested model's input rank with IOKey(shape=...)


@dataclass(frozen=True)
class Spec:
    """A whole generated model and how to compile and run it."""

    input_shape: Shape
    body: Block
    input_name: str = "input"
    symbolic_batch: bool = False
    input_trainable: bool = False
    inference: bool = False
    seed: int = 0
    declare_input: bool = False  # declare the input's rank with IOKey(shape=...) at build time


# ==============================================================================================
# Shapes (PyTorch semantics, computed here independently of Mithril)
# ==============================================================================================
def hp_dict(hp: HP) -> dict[str, Any]:
    return dict(hp)


def _conv_out(size: int, k: int, s: int, pad: tuple[int, int], d: int) -> int:
    return (size + pad[0] + pad[1] - d * (k - 1) - 1) // s + 1


def _conv_pads(padding: Any, k: int, d: int) -> tuple[int, int]:
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        total = d * (k - 1)
        return (total // 2, total - total // 2)
    return (padding, padding)


ELEMENTWISE = ("relu", "tanh", "sigmoid", "silu", "gelu", "leaky_relu", "softplus", "sine",
               "cosine", "negate", "square", "clamp", "absolute")
MAKES_TIES = ("relu", "clamp")


def layer_shape(kind: str, hp: HP, shape: Shape) -> Shape:
    """The output shape of one layer (PyTorch's formulas)."""
    h = hp_dict(hp)
    rank = len(shape)
    if kind in ELEMENTWISE or kind in ("softmax", "log_softmax", "layer_norm", "batch_norm2d",
                                       "group_norm", "attention"):
        return shape
    if kind == "linear":
        return (*shape[:-1], h["dim"])
    if kind == "mlp":
        return (*shape[:-1], h["dims"][-1])
    if kind == "reduce":
        axis = h["axis"] % rank
        return tuple(1 if i == axis else s for i, s in enumerate(shape))
    if kind == "flatten":
        return (shape[0], math.prod(shape[1:]))
    if kind == "reshape":
        return (shape[0], *h["to"])
    if kind in ("conv2d", "conv1d"):
        nd = 2 if kind == "conv2d" else 1
        spatial = [_conv_out(shape[2 + i], h["k"], h["stride"],
                             _conv_pads(h["padding"], h["k"], h["dilation"]), h["dilation"])
                   for i in range(nd)]
        return (shape[0], h["out"], *spatial)
    if kind in ("max_pool2d", "max_pool1d", "avg_pool2d"):
        nd = 1 if kind == "max_pool1d" else 2
        s = h["stride"] if h["stride"] is not None else h["k"]
        d = h.get("dilation", 1)
        spatial = [_conv_out(shape[2 + i], h["k"], s, (h["padding"], h["padding"]), d)
                   for i in range(nd)]
        return (*shape[:2], *spatial)
    if kind == "adaptive_avg_pool2d":
        size = h["size"]
        pair = (size, size) if isinstance(size, int) else size
        return (*shape[:2], *(shape[2 + i] if p is None else p for i, p in enumerate(pair)))
    raise ValueError(f"unknown layer kind {kind!r}")


def algebra_shape(kind: str, shape: Shape) -> Shape:
    if kind == "slice":
        return (shape[0], shape[1] - 1, *shape[2:])
    if kind == "swap":
        return (*shape[:-2], shape[-1], shape[-2])
    if kind == "unsqueeze":
        return (shape[0], 1, *shape[1:])
    if kind == "flatten_by_shape":
        return (shape[0], math.prod(shape[1:]))
    return shape


ALGEBRA_PRESERVING = ("affine", "softsqrt", "logexp", "center", "normalize", "normalize_raw")


def algebra_ok(kind: str, shape: Shape) -> bool:
    rank = len(shape)
    if kind == "slice":
        return shape[1] >= 2
    if kind == "swap":
        return rank >= 3
    if kind == "unsqueeze":
        return rank <= 3
    if kind == "flatten_by_shape":
        return rank >= 3
    return True


# ==============================================================================================
# Building a model from a spec
# ==============================================================================================
def make_layer(kind: str, hp: HP, in_shape: Shape) -> tuple[Any, dict[str, Any]]:
    """A fresh model instance for ``kind`` and extra call-time arguments."""
    h = hp_dict(hp)
    call: dict[str, Any] = {}
    simple = {"relu": Relu, "tanh": Tanh, "sigmoid": Sigmoid, "silu": SiLU, "sine": Sine,
              "cosine": Cosine, "negate": Negate, "square": Square, "absolute": Absolute}
    if kind in simple:
        return simple[kind](), call
    if kind == "gelu":
        return Gelu(approximate=h["approximate"]), call
    if kind == "leaky_relu":
        return LeakyRelu(negative_slope=h["slope"]), call
    if kind == "softplus":
        return Softplus(beta=h["beta"], threshold=h["threshold"]), call
    if kind == "clamp":
        return Clamp(min=h["min"], max=h["max"]), call
    if kind == "softmax":
        return Softmax(dim=h["axis"]), call
    if kind == "log_softmax":
        return LogSoftmax(dim=h["axis"]), call
    if kind == "layer_norm":
        n = h["n"]
        normalized = None if n == 0 else tuple(in_shape[len(in_shape) - n:])
        return LayerNorm(normalized, eps=h["eps"], elementwise_affine=h["affine"],
                         bias=h["bias"]), call
    if kind == "reduce":
        cls = Mean if h["op"] == "mean" else Sum
        return cls(axis=h["axis"], keepdim=True), call
    if kind == "linear":
        where = h["in_at"]
        size = in_shape[-1]
        layer = Linear(h["dim"], h["bias"], input_size=size if where == "init" else None)
        if where == "call":
            call["input_size"] = size
        return layer, call
    if kind == "mlp":
        acts = {"relu": Relu, "tanh": Tanh, "none": None}
        activations = [None if acts[a] is None else acts[a]() for a in h["acts"]]
        return MLP(activations, list(h["dims"]),
                   input_size=in_shape[-1] if h["in_given"] else None), call
    if kind == "flatten":
        return Flatten(start_dim=1), call
    if kind == "reshape":
        return Reshape(shape=(-1, *h["to"])), call
    if kind in ("conv2d", "conv1d"):
        cls = Conv2d if kind == "conv2d" else Conv1d
        return cls(in_channels=in_shape[1] if h["in_given"] else None, out_channels=h["out"],
                   kernel_size=h["k"], stride=h["stride"], padding=h["padding"],
                   dilation=h["dilation"], groups=h["groups"], bias=h["bias"]), call
    if kind == "batch_norm2d":
        return BatchNorm2d(in_shape[1] if h["in_given"] else None, eps=h["eps"],
                           momentum=h["momentum"], affine=h["affine"],
                           track_running_stats=h["track"]), call
    if kind == "group_norm":
        return GroupNorm(h["groups"], in_shape[1] if h["in_given"] else None,
                         affine=h["affine"]), call
    if kind == "max_pool2d":
        return MaxPool2d(h["k"], stride=h["stride"], padding=h["padding"],
                         dilation=h["dilation"]), call
    if kind == "max_pool1d":
        return MaxPool1d(h["k"], stride=h["stride"], padding=h["padding"],
                         dilation=h["dilation"]), call
    if kind == "avg_pool2d":
        return AvgPool2d(h["k"], stride=h["stride"], padding=h["padding"]), call
    if kind == "adaptive_avg_pool2d":
        return AdaptiveAvgPool2d(h["size"]), call
    if kind == "attention":  # self-attention over (N, L, E)
        return MultiheadAttention(in_shape[-1], h["heads"], bias=h["bias"],
                                  is_causal=h["causal"]), call
    raise ValueError(f"unknown layer kind {kind!r}")


def algebra_expr(kind: str, x: Any) -> Any:
    """The connection-algebra expression ``kind`` of connection ``x``."""
    if kind == "affine":
        return x * 0.5 + 0.25
    if kind == "softsqrt":
        return (x * x + 1.0).sqrt()
    if kind == "logexp":
        return (x.tanh().exp() + 1.0).log()
    if kind == "center":
        return x - x.mean(axis=-1, keepdim=True)
    if kind == "normalize":  # of tanh(x); "normalize_raw" (of x) hit undecided-operand
        y = x.tanh()
        return y / ((y * y).sum(axis=-1, keepdim=True) + 1.0)
    if kind == "normalize_raw":
        return x / ((x * x).sum(axis=-1, keepdim=True) + 1.0)
    if kind == "slice":
        return x[:, 1:]
    if kind == "swap":
        return x.swapaxes(-1, -2)
    if kind == "unsqueeze":
        return x[:, None]
    if kind == "flatten_by_shape":
        return x.reshape((x.shape[0], -1))
    raise ValueError(f"unknown algebra kind {kind!r}")


@dataclass
class Built:
    """A built model and what the test expects of it."""

    model: Model
    data_shapes: dict[str, Shape]
    output_shapes: dict[str, Shape]


@dataclass
class _Scope:
    """One ``Model`` being built: its current value and the last canonical output."""

    model: Model
    path: tuple[str, ...]  # local names from the top model down to this one
    cur: Any = None  # a Connection, or a name (str) not yet created
    cur_shape: Shape = ()
    last_cout: Any = None
    data: dict[str, Shape] = field(default_factory=dict)  # key (as seen at top) -> shape
    exposed: dict[str, Shape] = field(default_factory=dict)  # exposed names in this model
    unnamed_children: int = 0


def _pending(cur: Any) -> bool:
    """Is ``cur`` a model input not created yet (a name, or an IOKey declaring its shape)?"""
    return isinstance(cur, str | IOKey)


def _conn(scope: _Scope) -> Any:
    """The current value as a Connection (materialised with a Buffer if not created yet)."""
    if not _pending(scope.cur):
        return scope.cur
    m = scope.model
    if isinstance(scope.cur, str) and scope.cur in m.named:
        return m.named[scope.cur]
    m |= Buffer()(input=scope.cur)
    scope.last_cout = scope.cur = m.cout
    return scope.cur


def _add(scope: _Scope, child: Any, how: str, out: Any, call: dict[str, Any],
         shape: Shape) -> None:
    m = scope.model
    terminals = dict(call)
    if out is not None:
        terminals["output"] = out
    chained = how == "+=" and (scope.cur is scope.last_cout or (
        not m.children and isinstance(scope.cur, str) and scope.cur == "input"))
    if chained:
        m += child(**terminals)
    else:
        terminals["input"] = scope.cur
        if how == "+=":
            m += child(**terminals)  # naming the input overrides the chaining
        else:
            m |= child(**terminals)
    scope.last_cout = scope.cur = m.cout
    scope.cur_shape = shape


def _build_items(scope: _Scope, items: tuple[Any, ...]) -> None:
    for node in items:
        _build_node(scope, node)


def _build_node(scope: _Scope, node: Any) -> None:
    m = scope.model
    shape = scope.cur_shape
    if isinstance(node, Layer):
        child, call = make_layer(node.kind, node.hp, shape)
        new_shape = layer_shape(node.kind, node.hp, shape)
        out: Any = None
        if node.how == "|=" and node.out is not None:
            # an internal name with its shape declared: a named IOKey is an output unless
            # expose=False (the reference's rule, docs/reference-api.md)
            out = (IOKey(node.out, shape=[None, *new_shape[1:]], expose=False)
                   if node.annotate else node.out)
        if node.kind == "attention":  # query, key and value are the current value
            x = _conn(scope)
            m |= child(query=x, key=x, value=x, **({} if out is None else {"output": out}))
            scope.last_cout = scope.cur = m.cout
            scope.cur_shape = new_shape
            return
        _add(scope, child, node.how, out, call, new_shape)
    elif isinstance(node, Algebra):
        expr = algebra_expr(node.kind, _conn(scope))
        m |= Buffer()(input=expr, output=node.out) if node.out else Buffer()(input=expr)
        scope.last_cout = scope.cur = m.cout
        scope.cur_shape = algebra_shape(node.kind, shape)
    elif isinstance(node, Expose):
        m |= Buffer()(input=scope.cur, output=IOKey(node.name, expose=True))
        scope.last_cout = scope.cur = m.cout
        scope.exposed[node.name] = shape
    elif isinstance(node, AuxInput):
        key = IOKey(node.name, shape=[None, *shape[1:]]) if node.with_shape else node.name
        cls = Add if node.op == "add" else Multiply
        m |= cls()(left=scope.cur, right=key)
        scope.last_cout = scope.cur = m.cout
        scope.data[".".join((*scope.path, node.name))] = shape
    elif isinstance(node, Residual):
        x = _conn(scope)
        _build_block(scope, node.body)
        if node.merge == "add":
            m |= Add()(left=scope.cur, right=x)
        else:
            m |= Buffer()(input=_conn(scope) + x)
        scope.last_cout = scope.cur = m.cout
    elif isinstance(node, Branch):
        x, x_shape = _conn(scope), shape
        _build_block(scope, node.left)
        left, left_shape = scope.cur, scope.cur_shape
        scope.cur, scope.cur_shape = x, x_shape
        _build_block(scope, node.right)
        right, right_shape = scope.cur, scope.cur_shape
        if node.merge == "concat":
            m |= Concat(n=2, axis=node.axis)(input1=left, input2=right)
            new = list(left_shape)
            new[node.axis] = left_shape[node.axis] + right_shape[node.axis]
            scope.cur_shape = tuple(new)
        else:
            cls = {"add": Add, "subtract": Subtract, "multiply": Multiply}[node.merge]
            m |= cls()(left=left, right=right)
            scope.cur_shape = left_shape
        scope.last_cout = scope.cur = m.cout
    elif isinstance(node, Block):
        _build_block(scope, node)
    else:
        raise TypeError(f"unknown spec node {node!r}")


def _build_block(scope: _Scope, block: Block) -> None:
    if not block.nested:
        _build_items(scope, block.items)
        return
    local = block.name
    if local is None:
        local = "model" if scope.unnamed_children == 0 else f"model_{scope.unnamed_children}"
        scope.unnamed_children += 1
    sub = Model(name=block.name)
    start: Any = IOKey("input", shape=[None] * len(scope.cur_shape)) if block.declare \
        else "input"
    inner = _Scope(sub, (*scope.path, local), cur=start, cur_shape=scope.cur_shape)
    _build_items(inner, block.items)
    if not sub.children:  # an empty nested block is the identity
        sub |= Buffer()(input=start)
    terminals: dict[str, Any] = {name: IOKey(name, expose=True) for name in inner.exposed}
    if block.how == "+=" and scope.cur is scope.last_cout and not _pending(scope.cur):
        scope.model += sub(**terminals)
    else:
        scope.model |= sub(input=scope.cur, **terminals)
    scope.last_cout = scope.cur = scope.model.cout
    scope.cur_shape = inner.cur_shape
    scope.data.update(inner.data)
    scope.exposed.update(inner.exposed)


def build(spec: Spec) -> Built:
    """A fresh model for ``spec`` with its expected data and output shapes."""
    top = Model()
    start: Any = spec.input_name
    if spec.declare_input:
        start = IOKey(spec.input_name, shape=[None] * len(spec.input_shape))
    scope = _Scope(top, (), cur=start, cur_shape=spec.input_shape)
    _build_items(scope, spec.body.items)
    if not top.children:
        top |= Buffer()(input=start)
        scope.cur = top.cout
    final = top._conn_name(scope.cur)
    outputs = dict(scope.exposed)
    outputs[final] = scope.cur_shape
    data = {spec.input_name: spec.input_shape, **scope.data}
    return Built(top, data, outputs)


# ==============================================================================================
# Strategies
# ==============================================================================================
NAME_PREFIXES = ("h", "feat", "x.y", "class", "out put", "ünï", "a-b", "_z")


@dataclass
class _Draw:
    """Mutable drawing state: counters for unique names and the remaining size budget."""

    draw: Any
    budget: int
    counter: int = 0
    symbolic_batch: bool = False

    def name(self, kind: str) -> str:
        self.counter += 1
        prefix = self.draw(st.sampled_from(NAME_PREFIXES)) if kind == "h" else kind
        return f"{prefix}{self.counter}"


@dataclass(frozen=True)
class Flow:
    """What the generator knows about the current value while drawing.

    ``ties``: it may hold exact ties (so no max-pooling).
    """

    shape: Shape
    ties: bool = False


def _small(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


def _axis(d: _Draw, rank: int) -> int:
    """A non-batch axis, written positive or negative."""
    axis = d.draw(st.integers(1, rank - 1))
    return axis - rank if d.draw(st.booleans()) else axis


def _layer_candidates(flow: Flow, mode: str) -> list[str]:
    """Layer kinds valid here; rank-specific ones repeated so they are drawn as often."""
    shape, ties = flow.shape, flow.ties
    rank = len(shape)
    out = ["relu", "tanh", "linear", "sigmoid", "silu", "gelu", "leaky_relu", "softplus",
           "sine", "cosine", "negate", "square", "clamp", "absolute", "softmax",
           "log_softmax", "layer_norm", "linear"]
    specific: list[str] = []
    if mode == "free":
        out += ["reduce", "mlp"]
        if rank == 2 and shape[1] >= 4:
            specific.append("reshape")
        if rank >= 3:
            specific.append("flatten")
    if rank == 4:
        specific += ["conv2d", "batch_norm2d", "conv2d", "batch_norm2d"]
        if mode == "free":
            specific += ["avg_pool2d", "adaptive_avg_pool2d"]
            if not ties:
                specific.append("max_pool2d")
    if rank == 3:
        specific += ["conv1d", "conv1d", "attention"]
        if mode == "free" and not ties:
            specific.append("max_pool1d")
    if rank >= 3:
        specific.append("group_norm")
    return out + specific * 4


def _factor(d: _Draw, n: int) -> tuple[int, ...]:
    """A reshape target for ``n`` features: (c, l) or (c, h, w) with spatial sizes >= 2."""
    options = []
    for c in range(1, n + 1):
        if n % c:
            continue
        rest = n // c
        if rest >= 2:
            options.append((c, rest))
        for h in range(2, rest + 1):
            if rest % h == 0 and rest // h >= 2:
                options.append((c, h, rest // h))
    return d.draw(st.sampled_from(options))


def _draw_conv(d: _Draw, shape: Shape, nd: int, mode: str) -> HP:
    c = shape[1]
    groups = d.draw(st.sampled_from([g for g in (1, 2) if c % g == 0]))
    if mode == "preserve":
        out = c
    else:
        out = d.draw(st.sampled_from([o for o in range(1, 5) if o % groups == 0]))
    k = d.draw(_small(1, 3))
    if mode == "free":
        padding = d.draw(st.sampled_from([0, 1, "same", "valid"]))
        dilation = d.draw(st.sampled_from([1, 1, 2]))
        stride = 1 if padding == "same" else d.draw(st.sampled_from([1, 1, 2]))
    else:
        padding, dilation, stride = "same", d.draw(st.sampled_from([1, 2])), 1
    hp = (("out", out), ("k", k), ("stride", stride), ("padding", padding),
          ("dilation", dilation), ("groups", groups), ("bias", d.draw(st.booleans())),
          ("in_given", d.draw(st.booleans())))
    if min(layer_shape(f"conv{nd}d", hp, shape)[2:]) < 1:  # too small: a 1x1 convolution
        hp = (("out", out), ("k", 1), ("stride", 1), ("padding", 0), ("dilation", 1),
              ("groups", groups), ("bias", True), ("in_given", True))
    return hp


def _draw_pool(d: _Draw, shape: Shape, kind: str) -> HP:
    small = min(shape[2:])
    k = d.draw(_small(1, max(1, min(3, small))))
    stride = d.draw(st.sampled_from([None, 1, 2]))
    padding = d.draw(_small(0, k // 2))
    hp: list[tuple[str, Any]] = [("k", k), ("stride", stride), ("padding", padding)]
    if kind != "avg_pool2d":
        dilation = d.draw(st.sampled_from([1, 1, 2]))
        if (k - 1) * dilation + 1 > small + 2 * padding:
            dilation = 1
        hp.append(("dilation", dilation))
    return tuple(hp)


def _ties_after(kind: str, hp: HP, shape: Shape, ties: bool) -> bool:
    """May the output of this layer hold exact ties (equal values in a pooling window)?

    ``Relu`` and ``Clamp`` make exact zeros / bounds; normalising or soft-maxing over a single
    element gives constants; ``Linear`` with a bias separates them again.
    """
    h = hp_dict(hp)
    if kind in MAKES_TIES:
        return True
    if kind == "linear":
        return ties and not h["bias"]
    if kind == "mlp":
        return h["acts"][-1] == "relu"
    if kind in ("softmax", "log_softmax"):
        return ties or shape[h["axis"]] == 1
    if kind == "layer_norm":
        n = h["n"] or 1
        return ties or math.prod(shape[len(shape) - n:]) == 1
    if kind == "group_norm":
        return ties or (shape[1] // h["groups"]) * math.prod(shape[2:]) == 1
    return ties


def _draw_hp(d: _Draw, kind: str, shape: Shape, mode: str) -> HP:
    rank = len(shape)
    draw = d.draw
    if kind == "gelu":
        return (("approximate", draw(st.sampled_from(["none", "tanh"]))),)
    if kind == "leaky_relu":
        return (("slope", draw(st.sampled_from([0.01, 0.2, 1.5]))),)
    if kind == "softplus":
        return (("beta", draw(st.sampled_from([1.0, 0.5, 2.0]))),
                ("threshold", draw(st.sampled_from([20.0, 1.0, 3.0]))))
    if kind == "clamp":
        lo = draw(st.sampled_from([-1.0, -0.5, None]))
        return (("min", lo), ("max", draw(st.sampled_from([0.75, 2.0] + ([None] if lo else [])))))
    if kind in ("softmax", "log_softmax"):
        return (("axis", _axis(d, rank)),)
    if kind == "layer_norm":
        n = draw(st.integers(0, min(2, rank - 1)))
        return (("n", n), ("eps", draw(st.sampled_from([1e-5, 1e-3]))),
                ("affine", draw(st.booleans())), ("bias", draw(st.booleans())))
    if kind == "reduce":
        return (("op", draw(st.sampled_from(["mean", "sum"]))), ("axis", _axis(d, rank)))
    if kind == "linear":
        keep = mode == "preserve" or (mode == "channel" and rank > 2)
        dim = shape[-1] if keep else draw(_small(1, 5))
        return (("dim", dim), ("bias", draw(st.booleans())),
                ("in_at", draw(st.sampled_from(["init", "call", None]))))
    if kind == "mlp":
        n = draw(st.integers(1, 3))
        dims = tuple(draw(_small(1, 5)) for _ in range(n))
        acts = tuple(draw(st.sampled_from(["relu", "tanh", "none"])) for _ in range(n))
        return (("dims", dims), ("acts", acts), ("in_given", draw(st.booleans())))
    if kind == "reshape":
        return (("to", _factor(d, shape[1])),)
    if kind in ("conv2d", "conv1d"):
        return _draw_conv(d, shape, 2 if kind == "conv2d" else 1, mode)
    if kind == "batch_norm2d":
        return (("eps", draw(st.sampled_from([1e-5, 1e-3]))),
                ("momentum", draw(st.sampled_from([0.1, 0.5]))),
                ("affine", draw(st.booleans())), ("track", draw(st.booleans())),
                ("in_given", draw(st.booleans())))
    if kind == "group_norm":
        c = shape[1]
        return (("groups", draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))),
                ("affine", draw(st.booleans())), ("in_given", draw(st.booleans())))
    if kind in ("max_pool2d", "max_pool1d", "avg_pool2d"):
        return _draw_pool(d, shape, kind)
    if kind == "attention":
        e = shape[-1]
        return (("heads", draw(st.sampled_from([n for n in (1, 2, 3) if e % n == 0]))),
                ("bias", draw(st.booleans())), ("causal", draw(st.booleans())))
    if kind == "adaptive_avg_pool2d":
        h, w = shape[2], shape[3]
        options: list[Any] = [1, (1, 1)]
        options += [(a, b) for a in (1, 2, 3, None) for b in (1, 2, 3, None)
                    if (a is None or h % a == 0) and (b is None or w % b == 0)]
        return (("size", draw(st.sampled_from(options))),)
    return ()


def _draw_layer(d: _Draw, flow: Flow, mode: str) -> tuple[Layer, Flow]:
    kind = d.draw(st.sampled_from(_layer_candidates(flow, mode)))
    hp = _draw_hp(d, kind, flow.shape, mode)
    how = d.draw(st.sampled_from(["+=", "|="]))
    out = None
    annotate = False
    if how == "|=" and d.draw(st.booleans()):
        out = d.name("h")
        annotate = d.draw(st.booleans())
    new = Flow(layer_shape(kind, hp, flow.shape), _ties_after(kind, hp, flow.shape, flow.ties))
    return Layer(kind, hp, how, out, annotate), new


def _draw_block(d: _Draw, flow: Flow, depth: int, mode: str, min_items: int,
                nested: bool, max_items: int = 4) -> tuple[Block, Flow]:
    declare = nested and d.draw(st.booleans())
    n = d.draw(st.integers(min_items, max_items))
    items: list[Any] = []
    for _ in range(n):
        if d.budget <= 0:
            break
        d.budget -= 1
        choices = ["layer"] * 8 + ["algebra", "aux", "expose"]
        if depth < 3 and d.budget > 2:
            choices += ["residual", "branch", "nest", "nest"]
        what = d.draw(st.sampled_from(choices))
        if what == "layer":
            node, flow = _draw_layer(d, flow, mode)
        elif what == "algebra":
            kinds = list(ALGEBRA_PRESERVING[:-1])
            if mode == "free":
                kinds += [k for k in ("slice", "swap", "unsqueeze", "flatten_by_shape")
                          if algebra_ok(k, flow.shape)]
            kinds.append("normalize_raw")
            kind = d.draw(st.sampled_from(kinds))
            out = d.name("h") if d.draw(st.booleans()) else None
            node = Algebra(kind, out)
            flow = Flow(algebra_shape(kind, flow.shape),
                        flow.ties or (kind == "center" and flow.shape[-1] == 1))
        elif what == "expose":
            node = Expose(d.name("e"))
        elif what == "aux":
            node = AuxInput(d.name("aux"), d.draw(st.sampled_from(["add", "multiply"])),
                            d.draw(st.booleans()))
        elif what == "residual":
            body, after = _draw_block(d, flow, depth + d.draw(st.integers(0, 1)), "preserve",
                                      1, d.draw(st.booleans()))
            node = Residual(body, d.draw(st.sampled_from(["add", "algebra"])))
            flow = Flow(flow.shape, flow.ties or after.ties)
        elif what == "branch":
            merges = ["add", "subtract", "multiply"] + (["concat"] if mode != "preserve" else [])
            merge = d.draw(st.sampled_from(merges))
            sub_mode = "channel" if merge == "concat" else "preserve"
            left, lf = _draw_block(d, flow, depth + 1, sub_mode, 1, d.draw(st.booleans()))
            right, rf = _draw_block(d, flow, depth + 1, sub_mode, 0, d.draw(st.booleans()))
            node = Branch(left, right, merge, 1)
            shape = flow.shape
            if merge == "concat":
                new = list(lf.shape)
                new[1] = lf.shape[1] + rf.shape[1]
                shape = tuple(new)
            flow = Flow(shape, lf.ties or rf.ties)
        else:  # nest
            node, flow = _draw_block(d, flow, depth + 1, mode, 1, True)
        items.append(node)
    name = None
    if nested and d.draw(st.booleans()):
        name = d.name("blk")
    how = d.draw(st.sampled_from(["|=", "+="]))
    return Block(tuple(items), nested, name, how, declare), flow


@st.composite
def specs(draw: Any, rank: int | None = None, max_nodes: int = 14, stateful: bool = False,
          inference: bool | None = None) -> Spec:
    """Random valid model specs with small shapes (at most ``max_nodes`` spec nodes) whose
    input has ``rank`` dims (2, 3 or 4; drawn when None).

    ``stateful`` (rank 4): the model starts with a ``BatchNorm2d`` that tracks running
    statistics (more may follow); ``inference``: the mode (drawn, 1 in 4 inference, when None).
    """
    if stateful:
        rank = 4
    d = _Draw(draw, budget=draw(st.integers(4, max_nodes)))
    batch = draw(st.integers(2, 3))
    if rank is None:
        rank = draw(st.sampled_from([2, 4, 3]))
    if rank == 2:
        shape: Shape = (batch, draw(_small(1, 6)))
    elif rank == 3:
        shape = (batch, draw(_small(1, 4)), draw(_small(2, 6)))
    else:
        shape = (batch, draw(_small(1, 3)), draw(_small(3, 6)), draw(_small(3, 6)))
    declare = draw(st.booleans())
    trainable = draw(st.booleans())
    # a trainable input is a parameter: its shape must be fully known
    d.symbolic_batch = not trainable and draw(st.sampled_from([True, True, False]))
    body, _ = _draw_block(d, Flow(shape), 1, "free", 2, False, max_items=7)
    if stateful:
        hp = dict(_draw_hp(d, "batch_norm2d", shape, "free"))
        hp["track"] = True
        first = Layer("batch_norm2d", tuple(hp.items()), draw(st.sampled_from(["+=", "|="])))
        body = Block((first, *body.items), body.nested, body.name, body.how, body.declare)
    if inference is None:
        inference = draw(st.sampled_from([False, False, False, True]))
    return Spec(input_shape=shape, body=body,
                input_name=draw(st.sampled_from(["input", "x", "data in"])),
                symbolic_batch=d.symbolic_batch,
                input_trainable=trainable,
                inference=inference,
                seed=draw(st.integers(0, 2**16)), declare_input=declare)


# ==============================================================================================
# Running and comparing
# ==============================================================================================
def make_backend(name: str, dtype: Any = None) -> Any:
    """A backend by short name (float64 unless ``dtype``)."""
    return getattr(ml, BACKEND_CLASSES[name])(dtype=ml.float64 if dtype is None else dtype)


@dataclass
class Inputs:
    """NumPy float64 values of everything a run takes."""

    params: dict[str, np.ndarray]
    data: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    output_gradients: dict[str, np.ndarray]


def compile_spec(spec: Spec, built: Built, backend: Any, **kw: Any) -> Any:
    """Compile a built spec as the spec says (symbolic batch, trainable input, inference)."""
    shapes = {k: ["N" if spec.symbolic_batch and i == 0 else s for i, s in enumerate(v)]
              for k, v in built.data_shapes.items()}
    trainable = {spec.input_name} if spec.input_trainable else None
    return ml.compile(built.model, backend, shapes=shapes, trainable_keys=trainable,
                      inference=spec.inference, jit=kw.pop("jit", False), **kw)


def make_inputs(spec: Spec, built: Built, reference: Any) -> Inputs:
    """Random inputs for ``spec`` from its seed, shaped as the reference model expects."""
    rng = np.random.default_rng(spec.seed)
    params = {k: np.asarray(v, dtype=np.float64) + 0.1 * rng.standard_normal(np.shape(v))
              for k, v in reference.randomize_params(seed=spec.seed).items()}
    data: dict[str, np.ndarray] = {}
    for key, shape in built.data_shapes.items():
        value = rng.standard_normal(shape)
        if key == spec.input_name and spec.input_trainable:
            params[key] = value
        else:
            data[key] = value
    state = {}
    for k, v in reference.initial_state_dict.items():
        base = np.asarray(v, dtype=np.float64)
        state[k] = base + (rng.uniform(0.5, 1.5, base.shape) - 1.0 if "var" in k else
                           0.2 * rng.standard_normal(base.shape))
    grads = {k: rng.standard_normal(s) for k, s in built.output_shapes.items()}
    return Inputs(params, data, state, grads)


def run(pm: Any, inputs: Inputs) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                          dict[str, np.ndarray]]:
    """Evaluate on ``pm``'s backend; NumPy copies of outputs, gradients and new state."""
    b = pm.backend
    params = {k: b.array(v) for k, v in inputs.params.items()}
    data = {k: b.array(v) for k, v in inputs.data.items()}
    state = {k: b.array(v) for k, v in inputs.state.items()}
    if pm.inference:
        outs, new_state = pm.evaluate(params, data, state=state)
        grads = {}
    else:
        og = {k: b.array(v) for k, v in inputs.output_gradients.items()}
        outs, grads, new_state = pm.evaluate(params, data, output_gradients=og, state=state)
    to_np = b.to_numpy
    return ({k: to_np(v) for k, v in outs.items()}, {k: to_np(v) for k, v in grads.items()},
            {k: to_np(v) for k, v in new_state.items()})


def _close(got: np.ndarray, want: np.ndarray, what: str, rtol: float = 1e-6) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-9 * max(1.0, scale),
                               err_msg=what)


def reference_run(spec: Spec) -> tuple[Built, Any, Inputs, tuple[Any, Any, Any]]:
    """Build, compile on NumPy float64, check structure against the spec, and run."""
    built = build(spec)
    ref_backend = make_backend("numpy")
    ref = compile_spec(spec, built, ref_backend)
    expected_data = set(built.data_shapes) - ({spec.input_name} if spec.input_trainable
                                              else set())
    assert ref.data_keys == expected_data, (ref.data_keys, expected_data)
    assert set(ref.output_keys) == set(built.output_shapes), (ref.output_keys,
                                                              built.output_shapes)
    inputs = make_inputs(spec, built, ref)
    result = run(ref, inputs)
    for k, shape in built.output_shapes.items():
        assert result[0][k].shape == shape, f"output {k!r}: {result[0][k].shape} != {shape}"
        assert np.all(np.isfinite(result[0][k])), f"output {k!r} is not finite"
    return built, ref, inputs, result


def check_against_reference(spec: Spec, backend_name: str, jit: bool = False) -> None:
    """Compile ``spec`` on ``backend_name`` (float64) and compare with NumPy float64."""
    _, ref, inputs, (ref_out, ref_grads, ref_state) = reference_run(spec)
    pm = compile_spec(spec, build(spec), make_backend(backend_name), jit=jit)
    assert pm.param_keys == ref.param_keys
    assert pm.state_keys == ref.state_keys
    out, grads, state = run(pm, inputs)
    assert set(out) == set(ref_out)
    for k in ref_out:
        _close(out[k], ref_out[k], f"output {k!r}")
    assert set(grads) == set(ref_grads)
    for k in ref_grads:
        _close(grads[k], ref_grads[k], f"gradient of {k!r}", rtol=1e-5)
    assert set(state) == set(ref_state)
    for k in ref_state:
        _close(state[k], ref_state[k], f"state {k!r}")


def check_finite_differences(spec: Spec, directions: int = 3) -> None:
    """NumPy float64 gradients against central differences along random directions.

    The objective is ``sum_k <output_gradient_k, output_k>``; its derivative along a random
    direction ``v`` of all trainable inputs is ``sum_p <grad_p, v_p>``. An inference model has
    no gradient code: its outputs' central differences are compared with the derivative of the
    same computation written in PyTorch (:mod:`tests.torch_functional_reference`).
    """
    built, ref, inputs, (_, grads, _) = reference_run(spec)
    if spec.inference:
        from tests.torch_functional_reference import evaluate_spec

        grads = evaluate_spec(spec, built, inputs, gradients=True)[1]
    b = ref.backend
    data = {k: b.array(v) for k, v in inputs.data.items()}

    def objective(params: dict[str, np.ndarray]) -> float:
        outs, _ = ref.evaluate(params, data, state=dict(inputs.state))
        return float(sum(np.sum(inputs.output_gradients[k] * outs[k]) for k in outs))

    rng = np.random.default_rng(spec.seed + 1)
    for _ in range(directions):
        v = {k: rng.standard_normal(p.shape) for k, p in inputs.params.items()}
        analytic = sum(float(np.sum(grads[k] * v[k])) for k in v)
        scale = sum(float(np.sum(np.abs(grads[k] * v[k]))) for k in v) + 1e-12
        errors = []
        for h in (1e-6, 1e-7):  # a smaller step when the first one crossed a kink
            plus = objective({k: p + h * v[k] for k, p in inputs.params.items()})
            minus = objective({k: p - h * v[k] for k, p in inputs.params.items()})
            fd = (plus - minus) / (2 * h)
            # truncation (h^2) and rounding (float64 eps |f| / h) errors, with a margin
            bound = 1e-5 * scale + 1e-12 * (abs(plus) + abs(minus)) / h
            errors.append((abs(fd - analytic), bound, fd))
            if abs(fd - analytic) <= bound:
                break
        else:
            raise AssertionError(f"directional derivative {analytic!r} != central "
                                 f"differences {[e[2] for e in errors]} (errors {errors})")
